//! The scheduler over REST: a pipeline's schedule, pausing it, backfills and restatements
//! with their progress, and the scheduler's queue. Errors are `{"error": {"code", "message"}}`
//! like Floe's other routes.

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::{ErrorCode, HttpError};
use super::floe::{app_or_404, json_body, params};
use super::http::json_response;
use crate::partition::parse_instant;
use crate::results::runs_spanned;
use crate::scheduler::{BackfillLimits, BackfillRequest, BackfillStatus, SchedulerError};

/// Backfills `GET /pipelines/{p}/backfills` lists without `limit`, and the most it lists.
const DEFAULT_BACKFILL_PAGE: usize = 100;
const MAX_BACKFILL_PAGE: usize = 1_000;

/// Seconds a client refused for too many active backfills is asked to wait: backfills run
/// for minutes, so sooner would only be refused again.
const BACKFILL_RETRY_AFTER: u64 = 60;

fn scheduler_error(e: SchedulerError) -> HttpError {
    match e {
        SchedulerError::UnknownPipeline(_)
        | SchedulerError::UnknownJob { .. }
        | SchedulerError::UnknownBackfill(_) => HttpError::not_found(e.to_string()),
        SchedulerError::EmptyRange { .. } | SchedulerError::TooLarge { .. } => {
            HttpError::bad_request(e.to_string())
        }
        SchedulerError::BackfillState { .. } => HttpError::new(ErrorCode::Conflict, e.to_string()),
        SchedulerError::TooManyActiveBackfills { .. } => {
            HttpError::new(ErrorCode::TooManyBackfills, e.to_string())
                .with_retry_after(BACKFILL_RETRY_AFTER)
        }
        SchedulerError::Store(e) => HttpError::internal_error(&e),
        SchedulerError::Thread(_) => HttpError::internal_error(&e),
    }
}

/// Runs blocking scheduler work (it touches the store) off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SchedulerError> + Send + 'static,
) -> Result<T, HttpError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| HttpError::internal(e.to_string()))?
        .map_err(scheduler_error)
}

fn status_json(status: &BackfillStatus) -> Value {
    serde_json::to_value(status).unwrap_or(Value::Null)
}

pub(super) async fn get_schedule(
    State(state): State<AppState>,
    Path(pipeline): Path<String>,
) -> Result<Response, HttpError> {
    let app = app_or_404(&state, &pipeline)?;
    let scheduler = state.scheduler.clone();
    let name = pipeline.clone();
    let jobs = blocking(move || scheduler.schedule_of(&name)).await?;
    let settings = &app.pipeline.schedule;
    let catch_up = match settings.catch_up {
        crate::pipeline::trigger::CatchUp::All => json!("all"),
        crate::pipeline::trigger::CatchUp::Latest(n) => json!(n),
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "pipeline": pipeline,
            "enabled": settings.enabled,
            "paused": state.scheduler.is_paused(&pipeline),
            "catchup": catch_up,
            "maxCatchup": settings.max_catch_up,
            "concurrency": settings.concurrency,
            "jobs": jobs,
        }),
    ))
}

async fn set_paused(
    state: AppState,
    pipeline: String,
    paused: bool,
) -> Result<Response, HttpError> {
    app_or_404(&state, &pipeline)?;
    state
        .scheduler
        .set_paused(&pipeline, paused)
        .map_err(scheduler_error)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "pipeline": pipeline, "paused": paused }),
    ))
}

pub(super) async fn pause_pipeline(
    State(state): State<AppState>,
    Path(pipeline): Path<String>,
) -> Result<Response, HttpError> {
    set_paused(state, pipeline, true).await
}

pub(super) async fn resume_pipeline(
    State(state): State<AppState>,
    Path(pipeline): Path<String>,
) -> Result<Response, HttpError> {
    set_paused(state, pipeline, false).await
}

/// `{"jobs": [...], "from": ..., "to": ..., "force": bool}`; instants in the pipeline's zone
/// when they carry no offset.
fn backfill_request(
    state: &AppState,
    pipeline: &str,
    mut body: Map<String, Value>,
    jobs_required: bool,
) -> Result<BackfillRequest, HttpError> {
    let app = app_or_404(state, pipeline)?;
    let tz = app.pipeline.timezone;
    let instant = |body: &mut Map<String, Value>, key: &str| match body.remove(key) {
        Some(Value::String(text)) => {
            parse_instant(&text, tz).map_err(|e| HttpError::bad_request(format!("`{key}`: {e}")))
        }
        Some(other) => Err(HttpError::bad_request(format!(
            "`{key}`: expected an instant such as 2024-01-01T00:00:00Z, found {other}"
        ))),
        None => Err(HttpError::bad_request(format!("`{key}` is required"))),
    };
    let from = instant(&mut body, "from")?;
    let to = instant(&mut body, "to")?;
    let jobs = match body.remove("jobs") {
        None | Some(Value::Null) if !jobs_required => None,
        None | Some(Value::Null) => {
            return Err(HttpError::bad_request(
                "`jobs` is required: name the jobs whose partitions are restated",
            ));
        }
        Some(Value::Array(items)) => Some(
            items
                .into_iter()
                .map(|item| match item {
                    Value::String(job) => Ok(job),
                    other => Err(HttpError::bad_request(format!(
                        "`jobs`: expected job names, found {other}"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(other) => {
            return Err(HttpError::bad_request(format!(
                "`jobs`: expected a list of job names, found {other}"
            )));
        }
    };
    let force = match body.remove("force") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(force)) => force,
        Some(other) => {
            return Err(HttpError::bad_request(format!(
                "`force`: expected true or false, found {other}"
            )));
        }
    };
    if let Some(unknown) = body.keys().next() {
        return Err(HttpError::bad_request(format!(
            "unknown field `{unknown}` (expected jobs, from, to, force)"
        )));
    }
    let what = if jobs_required {
        "the restatement"
    } else {
        "the backfill"
    };
    state
        .core
        .limits()
        .check_run_partitions(runs_spanned(&app.pipeline, jobs.as_deref(), from, to), what)?;
    Ok(BackfillRequest {
        pipeline: pipeline.to_owned(),
        jobs,
        from,
        to,
        force,
    })
}

fn accepted(status: &BackfillStatus) -> Response {
    let mut response = json_response(StatusCode::ACCEPTED, &status_json(status));
    if let Ok(location) = HeaderValue::from_str(&format!("/backfills/{}", status.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

pub(super) async fn start_backfill(
    State(state): State<AppState>,
    Path(pipeline): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let request = backfill_request(&state, &pipeline, json_body(body)?, false)?;
    let scheduler = state.scheduler.clone();
    let limits = backfill_limits(&state);
    let status = blocking(move || scheduler.start_backfill_within(&request, false, limits)).await?;
    Ok(accepted(&status))
}

pub(super) async fn start_restatement(
    State(state): State<AppState>,
    Path(pipeline): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let request = backfill_request(&state, &pipeline, json_body(body)?, true)?;
    let scheduler = state.scheduler.clone();
    let limits = backfill_limits(&state);
    let status = blocking(move || scheduler.start_backfill_within(&request, true, limits)).await?;
    Ok(accepted(&status))
}

/// `limits.max_active_backfills` and `limits.backfill_history`.
fn backfill_limits(state: &AppState) -> BackfillLimits {
    let limits = state.core.limits();
    BackfillLimits {
        max_active: limits.max_active_backfills,
        history: limits.backfill_history,
    }
}

/// `GET /pipelines/{p}/backfills?limit=`: the newest first, `limit` of them (100 by default,
/// at most 1,000).
pub(super) async fn list_backfills(
    State(state): State<AppState>,
    Path(pipeline): Path<String>,
    uri: Uri,
) -> Result<Response, HttpError> {
    app_or_404(&state, &pipeline)?;
    let params = params(&uri)?;
    let limit = match params.get("limit") {
        None => DEFAULT_BACKFILL_PAGE,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=MAX_BACKFILL_PAGE).contains(limit))
            .ok_or_else(|| {
                // A client's text is echoed only in part: the query string may be long.
                let mut shown: String = text.chars().take(24).collect();
                if shown.len() < text.len() {
                    shown.push('…');
                }
                HttpError::bad_request(format!(
                    "`limit` must be a whole number from 1 to {MAX_BACKFILL_PAGE}, found `{shown}`"
                ))
            })?,
    };
    let scheduler = state.scheduler.clone();
    let list = blocking(move || scheduler.backfills_newest(Some(&pipeline), limit)).await?;
    Ok(json_response(
        StatusCode::OK,
        &Value::Array(list.iter().map(status_json).collect()),
    ))
}

pub(super) async fn get_backfill(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let scheduler = state.scheduler.clone();
    let status = blocking(move || scheduler.backfill_status(&id)).await?;
    Ok(json_response(StatusCode::OK, &status_json(&status)))
}

pub(super) async fn pause_backfill(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let scheduler = state.scheduler.clone();
    let status = blocking(move || scheduler.pause_backfill(&id)).await?;
    Ok(json_response(StatusCode::OK, &status_json(&status)))
}

pub(super) async fn resume_backfill(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let scheduler = state.scheduler.clone();
    let status = blocking(move || scheduler.resume_backfill(&id)).await?;
    Ok(json_response(StatusCode::OK, &status_json(&status)))
}

pub(super) async fn cancel_backfill(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let scheduler = state.scheduler.clone();
    let status = blocking(move || scheduler.cancel_backfill(&id)).await?;
    Ok(json_response(StatusCode::OK, &status_json(&status)))
}

pub(super) async fn scheduler_summary(State(state): State<AppState>) -> Response {
    let summary = state.scheduler.summary();
    json_response(
        StatusCode::OK,
        &serde_json::to_value(summary).unwrap_or(Value::Null),
    )
}
