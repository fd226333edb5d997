//! Floe's own routes: pipelines with their runs and results, SQL queries over results and named
//! objects, and the operations routes. Errors here are
//! [`HttpError`]s in Floe's envelope, `{"error": {"code", "message"}}`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use polars::prelude::*;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::{ErrorCode, HttpError};
use super::http::{Page, ResultFormat, json_response, json_with_rows, rows_json, stream_frame};
use super::metrics::{escape, family};
use super::sjs::{body_error, job_report, query_params, timestamp};
use crate::catalog::App;
use crate::engine::{ResolvedInput, ResolvedPlan};
use crate::frames::cancel::Cancel;
use crate::inputs::Gaps;
use crate::job::JobInput;
use crate::job::builtin::Sql;
use crate::jobserver::Submission;
use crate::jobserver::context::Context;
use crate::jobserver::plan::PIPELINE_RUN_CLASS;
use crate::jobserver::remote::QueryTable;
use crate::jobserver::{JobCounters, JobServer};
use crate::partition::{Grain, Window, parse_instant};
use crate::results::{partitions_spanned, read_job_results};
use crate::store::{JobStatus, RunState};

pub(super) fn app_or_404(state: &AppState, pipeline: &str) -> Result<Arc<App>, HttpError> {
    state.core.catalog.get(pipeline).ok_or_else(|| {
        HttpError::not_found(format!(
            "pipeline `{pipeline}` not found (pipelines: {})",
            state
                .core
                .catalog
                .all()
                .iter()
                .map(|a| a.name().to_owned())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

pub(super) fn params(uri: &Uri) -> Result<BTreeMap<String, String>, HttpError> {
    query_params(uri)
}

pub(super) fn instant_param(
    params: &BTreeMap<String, String>,
    key: &str,
    app: &App,
) -> Result<Option<DateTime<Utc>>, HttpError> {
    params
        .get(key)
        .map(|text| {
            parse_instant(text, app.pipeline.timezone)
                .map_err(|e| HttpError::bad_request(format!("`{key}`: {e}")))
        })
        .transpose()
}

/// A bound of a required range, `from` or `to`.
fn required_instant(
    params: &BTreeMap<String, String>,
    key: &str,
    app: &App,
) -> Result<DateTime<Utc>, HttpError> {
    instant_param(params, key, app)?.ok_or_else(|| {
        HttpError::bad_request(format!("`{key}` is missing (the range is from ≤ t < to)"))
    })
}

/// The job `job` names, when given: one of the pipeline's (a 404 otherwise).
fn job_param(params: &BTreeMap<String, String>, app: &App) -> Result<Option<String>, HttpError> {
    match params.get("job") {
        None => Ok(None),
        Some(job) if app.pipeline.job(job).is_some() => Ok(Some(job.clone())),
        Some(job) => Err(HttpError::not_found(format!(
            "pipeline `{}` has no job `{job}`",
            app.name()
        ))),
    }
}

fn usize_param(params: &BTreeMap<String, String>, key: &str) -> Result<Option<usize>, HttpError> {
    params
        .get(key)
        .map(|v| {
            v.parse::<usize>().map_err(|_| {
                HttpError::bad_request(format!("`{key}` must be a whole number, found `{v}`"))
            })
        })
        .transpose()
}

fn pipeline_summary(app: &App) -> Value {
    let p = &app.pipeline;
    json!({
        "name": app.name(),
        // The pipeline takes its app's name (see `crate::catalog`); both are given, as
        // the API documents both.
        "app": app.name(),
        "version": app.meta.version,
        "description": p.description,
        "timezone": p.timezone.name(),
        "start": timestamp(p.start),
        "end": p.end.map(timestamp),
        "jobs": p.dag.topological_order(),
    })
}

pub(super) async fn list_pipelines(State(state): State<AppState>) -> Response {
    let list: Vec<Value> = state
        .core
        .catalog
        .all()
        .iter()
        .map(|app| pipeline_summary(app))
        .collect();
    json_response(StatusCode::OK, &Value::Array(list))
}

pub(super) async fn get_pipeline(
    State(state): State<AppState>,
    Path(pipeline): Path<String>,
) -> Result<Response, HttpError> {
    let app = app_or_404(&state, &pipeline)?;
    let p = &app.pipeline;
    let mut body = pipeline_summary(&app);
    let jobs: Vec<Value> = p
        .jobs_in_order()
        .map(|def| {
            json!({
                "name": def.name,
                "kind": def.kind(),
                "grain": def.grain.as_str(),
                "inputs": def.inputs.iter().map(|i| i.name()).collect::<Vec<_>>(),
                "retries": def.retries,
                "timeout": def.timeout.map(|t| humantime::format_duration(t).to_string()),
                "definition": def.definition_text,
                "fingerprint": def.definition_fingerprint,
            })
        })
        .collect();
    let mut edges = Vec::new();
    for def in p.jobs_in_order() {
        for input in &def.inputs {
            if let crate::pipeline::InputRef::Job(upstream) = input {
                edges.push(json!({ "from": upstream, "to": def.name }));
            }
        }
    }
    let sources: Vec<Value> = p
        .sources
        .values()
        .map(|s| {
            json!({
                "name": s.name,
                "format": s.format.as_str(),
                "path": s.path.as_str(),
                "timeColumn": s.time_column,
                "timezone": s.timezone.name(),
            })
        })
        .collect();
    body["jobs"] = Value::Array(jobs);
    body["edges"] = Value::Array(edges);
    body["sources"] = Value::Array(sources);
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /pipelines/{p}/plan?from&to&job&force`: what a run of the range would compute and
/// why (`staleness`), without running anything.
pub(super) async fn plan(
    State(state): State<AppState>,
    Path(pipeline): Path<String>,
    uri: Uri,
) -> Result<Response, HttpError> {
    let app = app_or_404(&state, &pipeline)?;
    let params = params(&uri)?;
    let now = state.core.clock().now();
    let from = required_instant(&params, "from", &app)?;
    let to = required_instant(&params, "to", &app)?.min(now);
    if from >= to {
        return Err(HttpError::bad_request(format!(
            "`from` ({}) must be before `to` ({}, and partitions that have not ended yet are \
             not planned)",
            timestamp(from),
            timestamp(to)
        )));
    }
    let jobs = job_param(&params, &app)?.map(|job| vec![job]);
    let force = match params.get("force").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(HttpError::bad_request(format!(
                "`force` must be true or false, found `{other}`"
            )));
        }
    };
    state.core.limits().check_run_partitions(
        crate::results::runs_spanned(&app.pipeline, jobs.as_deref(), from, to),
        "the plan",
    )?;
    let core = state.core.clone();
    let request = crate::materialize::RunRequest {
        jobs,
        from,
        to,
        force,
    };
    let changes = tokio::task::spawn_blocking(move || {
        crate::staleness::explain(core.materializer(), &app.pipeline, &request)
    })
    .await?
    .map_err(|e| HttpError::bad_request(e.to_string()))?;
    let computing = changes.iter().filter(|c| c.staleness.computes()).count();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "pipeline": pipeline,
            "from": timestamp(from),
            "to": timestamp(to),
            "planned": changes.len(),
            "computing": computing,
            "runs": changes,
        }),
    ))
}

/// `GET /pipelines/{p}/grid?from&to&job`: every partition of the range, job by job, with the
/// state of its run (or `missing`, `not_due`): the web UI's partition grid.
pub(super) async fn grid(
    State(state): State<AppState>,
    Path(pipeline): Path<String>,
    uri: Uri,
) -> Result<Response, HttpError> {
    let app = app_or_404(&state, &pipeline)?;
    let params = params(&uri)?;
    let from = required_instant(&params, "from", &app)?;
    let to = required_instant(&params, "to", &app)?;
    if from >= to {
        return Err(HttpError::bad_request(format!(
            "`from` ({}) must be before `to` ({})",
            timestamp(from),
            timestamp(to)
        )));
    }
    let jobs: Vec<String> = match job_param(&params, &app)? {
        Some(job) => vec![job],
        None => app.pipeline.dag.topological_order().to_vec(),
    };
    let cells = jobs
        .iter()
        .map(|job| crate::results::partitions_spanned(&app.pipeline, job, from, to))
        .fold(0u64, u64::saturating_add);
    state
        .core
        .limits()
        .check_run_partitions(cells, "the grid")?;
    let now = state.core.clock().now();
    let store = state.core.store().clone();
    let timezone = app.pipeline.timezone.name();
    // Read and encoded off the runtime: 10,000 cells are a few MiB of JSON.
    let bytes = tokio::task::spawn_blocking(move || {
        let rows = crate::grid::partition_grid(&store, &app.pipeline, &jobs, from, to, now)?;
        let answer = GridAnswer {
            pipeline: &pipeline,
            timezone,
            from: timestamp(from),
            to: timestamp(to),
            now: timestamp(now),
            states: crate::grid::CellState::ALL.map(crate::grid::CellState::as_str),
            jobs: rows.iter().map(GridRowAnswer::of).collect(),
        };
        Ok::<_, crate::store::StoreError>(serde_json::to_vec(&answer))
    })
    .await
    .map_err(|e| HttpError::internal(e.to_string()))?
    .map_err(|e| HttpError::internal_error(&e))?
    .map_err(|e| HttpError::internal(e.to_string()))?;
    Ok((
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response())
}

/// The most characters of a run's error a grid cell carries.
const GRID_ERROR_CHARS: usize = 300;

/// `GET /pipelines/{p}/grid`'s answer (api/openapi.yaml `PartitionGrid`).
#[derive(serde::Serialize)]
struct GridAnswer<'a> {
    pipeline: &'a str,
    timezone: &'a str,
    from: String,
    to: String,
    now: String,
    states: [&'static str; 10],
    jobs: Vec<GridRowAnswer<'a>>,
}

#[derive(serde::Serialize)]
struct GridRowAnswer<'a> {
    job: &'a str,
    kind: &'a str,
    grain: &'static str,
    cells: Vec<GridCellAnswer<'a>>,
}

impl<'a> GridRowAnswer<'a> {
    fn of(row: &'a crate::grid::JobRow) -> GridRowAnswer<'a> {
        GridRowAnswer {
            job: &row.job,
            kind: &row.kind,
            grain: row.grain.as_str(),
            cells: row.cells.iter().map(GridCellAnswer::of).collect(),
        }
    }
}

/// A cell; what its run does not have is left out (most cells of a large grid have no error,
/// retry or wait).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct GridCellAnswer<'a> {
    start: String,
    end: String,
    label: &'a str,
    state: &'static str,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting_since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
}

impl<'a> GridCellAnswer<'a> {
    fn of(cell: &'a crate::grid::Cell) -> GridCellAnswer<'a> {
        GridCellAnswer {
            start: timestamp(cell.start),
            end: timestamp(cell.end),
            label: &cell.label,
            state: cell.state.as_str(),
            attempts: cell.attempts,
            error: cell.error.as_deref().map(|error| {
                // A cell's summary; the run's whole error is `…/runs`' (the UI fetches it on a
                // click), so 20,000 failed cells stay a bounded answer.
                match error.char_indices().nth(GRID_ERROR_CHARS) {
                    Some((cut, _)) => &error[..cut],
                    None => error,
                }
            }),
            retry_at: cell.retry_at.map(timestamp),
            waiting_since: cell.waiting_since.map(timestamp),
            started_at: cell.started_at.map(timestamp),
            finished_at: cell.finished_at.map(timestamp),
        }
    }
}

pub(super) async fn list_runs(
    State(state): State<AppState>,
    Path(pipeline): Path<String>,
    uri: Uri,
) -> Result<Response, HttpError> {
    let app = app_or_404(&state, &pipeline)?;
    let params = params(&uri)?;
    let from = instant_param(&params, "from", &app)?.unwrap_or(DateTime::UNIX_EPOCH);
    let to = instant_param(&params, "to", &app)?.unwrap_or(DateTime::<Utc>::MAX_UTC);
    let limit = usize_param(&params, "limit")?.unwrap_or(1000);
    if limit == 0 {
        return Err(HttpError::bad_request("`limit` must be at least 1"));
    }
    let job = job_param(&params, &app)?;
    let status = match params.get("status").map(|s| s.to_ascii_lowercase()) {
        None => None,
        Some(s) => Some(
            RunState::ALL
                .into_iter()
                .find(|state| state.as_str() == s)
                .ok_or_else(|| {
                    HttpError::bad_request(format!(
                        "unknown run status `{s}` (expected pending, running, succeeded, failed, \
                     upstream_failed or cancelled)"
                    ))
                })?,
        ),
    };
    let store = state.core.store().clone();
    let jobs: Vec<String> = match job {
        Some(job) => vec![job],
        None => app.pipeline.dag.topological_order().to_vec(),
    };
    let name = app.name().to_owned();
    let runs = tokio::task::spawn_blocking(move || {
        let mut runs = Vec::new();
        for job in &jobs {
            for (key, record) in store.runs_of_job(&name, job, from, to)? {
                if status.is_some_and(|s| s != record.state) {
                    continue;
                }
                let rows = store.result_meta(&key)?.map(|m| m.rows);
                runs.push(json!({
                    "job": key.job,
                    "partitionStart": timestamp(key.partition_start),
                    "partitionEnd": timestamp(record.partition_end),
                    "state": record.state.as_str(),
                    "attempts": record.attempts,
                    "failures": record.failures,
                    "commits": record.commits,
                    "retryAt": record.retry_at.map(timestamp),
                    "waitingSince": record.waiting_since.map(timestamp),
                    "updatedAt": record.finished_at.or(record.started_at).map(timestamp),
                    "rows": rows,
                    "error": record.error,
                    "checks": record.checks,
                }));
                if runs.len() >= limit {
                    return Ok(runs);
                }
            }
        }
        Ok::<_, crate::store::StoreError>(runs)
    })
    .await
    .map_err(|e| HttpError::internal(e.to_string()))?
    .map_err(|e| HttpError::internal_error(&e))?;
    Ok(json_response(StatusCode::OK, &Value::Array(runs)))
}

pub(super) fn json_body(
    body: Result<Bytes, BytesRejection>,
) -> Result<Map<String, Value>, HttpError> {
    let body = body.map_err(|rejection| body_error(&rejection))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(HttpError::bad_request("the body must be a JSON object")),
        Err(e) => Err(HttpError::bad_request(format!(
            "the body is not valid JSON: {e}"
        ))),
    }
}

pub(super) async fn start_run(
    State(state): State<AppState>,
    Path(pipeline): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    app_or_404(&state, &pipeline)?;
    let mut config = json_body(body)?;
    let context = match config.remove("context") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name),
        Some(other) => {
            return Err(HttpError::bad_request(format!(
                "`context`: expected a context name, found {other}"
            )));
        }
    };
    let submission = Submission {
        app: Some(pipeline),
        class_path: PIPELINE_RUN_CLASS.to_owned(),
        context,
        config,
        callback: None,
    };
    let live = state.core.submit(submission)?;
    let record = live.record();
    let mut response = json_response(
        StatusCode::ACCEPTED,
        &Value::Object(job_report(&record, live.is_queued(), JobStatus::Started)),
    );
    if let Ok(location) = HeaderValue::from_str(&format!("/jobs/{}", live.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// A frame answered as a JSON page or streamed in another format.
fn frame_response(
    frame: DataFrame,
    format: ResultFormat,
    page: Page,
    stem: &str,
    mut envelope: Map<String, Value>,
) -> Result<Response, HttpError> {
    if format != ResultFormat::Json {
        return Ok(stream_frame(frame, format, stem));
    }
    let total = frame.height();
    let rows = rows_json(&page.slice(&frame))?;
    envelope.insert("total".into(), json!(total));
    envelope.insert("offset".into(), json!(page.offset));
    envelope.insert("limit".into(), json!(page.limit));
    Ok(json_with_rows(StatusCode::OK, &envelope, "rows", &rows))
}

fn page_and_format(
    params: &BTreeMap<String, String>,
    headers: &HeaderMap,
) -> Result<(Page, ResultFormat), HttpError> {
    let format = ResultFormat::negotiate(params.get("format").map(String::as_str), headers)?;
    let page = Page::new(
        usize_param(params, "offset")?,
        usize_param(params, "limit")?,
    )?;
    Ok((page, format))
}

pub(super) async fn job_results(
    State(state): State<AppState>,
    Path((pipeline, job)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let app = app_or_404(&state, &pipeline)?;
    if app.pipeline.job(&job).is_none() {
        return Err(HttpError::not_found(format!(
            "pipeline `{pipeline}` has no job `{job}` (jobs: {})",
            app.pipeline.dag.topological_order().join(", ")
        )));
    }
    let params = params(&uri)?;
    let (page, format) = page_and_format(&params, &headers)?;
    let from = instant_param(&params, "from", &app)?.unwrap_or(app.pipeline.start);
    // Partitions that have not ended yet have no result: the range stops at now.
    let now = state.core.clock().now();
    let to = instant_param(&params, "to", &app)?.unwrap_or(now).min(now);
    if from >= to {
        let now_note = if to == now {
            " (now: a partition that has not ended has no result)"
        } else {
            ""
        };
        return Err(HttpError::bad_request(format!(
            "`from` ({}) must be before `to` ({}){now_note}",
            timestamp(from),
            timestamp(to)
        )));
    }
    state.core.limits().check_result_partitions(
        partitions_spanned(&app.pipeline, &job, from, to),
        "the range",
    )?;
    let core = state.core.clone();
    let job_name = job.clone();
    let results = tokio::task::spawn_blocking(move || {
        read_job_results(core.materializer(), &app.pipeline, &job_name, from, to)
    })
    .await
    .map_err(|e| HttpError::internal(e.to_string()))?
    .map_err(|e| HttpError::internal(e.to_string()))?;
    let mut envelope = Map::new();
    envelope.insert("pipeline".into(), json!(pipeline));
    envelope.insert("job".into(), json!(job));
    let instants =
        |list: &[DateTime<Utc>]| json!(list.iter().map(|m| timestamp(*m)).collect::<Vec<_>>());
    envelope.insert("missing".into(), instants(&results.missing));
    // Partitions whose stored result an earlier or replaced definition computed: left out.
    envelope.insert("stale".into(), instants(&results.stale));
    frame_response(
        results.frame,
        format,
        page,
        &format!("{pipeline}-{job}"),
        envelope,
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    sql: String,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    offset: Option<usize>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    format: Option<String>,
}

/// Separates pipeline and job in a results table name: `shop__sales_per_category_daily`.
pub(super) const TABLE_SEPARATOR: &str = "__";

pub(super) async fn query(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let body = json_body(body)?;
    let request: QueryRequest = serde_json::from_value(Value::Object(body))
        .map_err(|e| HttpError::bad_request(format!("query request: {e}")))?;
    let format = ResultFormat::negotiate(request.format.as_deref(), &headers)?;
    let page = Page::new(request.offset, request.limit)?;
    let sql = Sql::new(&request.sql).map_err(|e| HttpError::bad_request(e.join("; ")))?;
    let context = match &request.context {
        Some(name) => Some(
            state
                .core
                .context(name)
                .ok_or_else(|| HttpError::not_found(format!("context {name} not found")))?,
        ),
        None => None,
    };
    let core = state.core.clone();
    // The place is held by the computation, not the request: a query stopped for its time limit
    // or a hang-up keeps it until polars lets go.
    let place = core.query_place().ok_or_else(|| {
        HttpError::new(
            ErrorCode::TooManyQueries,
            format!(
                "{} queries are computing, the limit (limits.max_concurrent_queries); retry \
                 shortly",
                core.limits().max_concurrent_queries
            ),
        )
        .with_retry_after(1)
    })?;
    let now = core.clock().now();
    // The query stops when it runs too long, when the server is over its memory limit, or
    // when the client hangs up (axum drops this future, and the guard with it).
    let cancel = Cancel::new();
    let _tracked = core.memory().track(&cancel, "a /query");
    let hung_up = cancel.on_drop("the client went away before the query finished");
    let time_limit = core.limits().query_timeout;
    let scope = cancel.clone();
    let work = tokio::task::spawn_blocking(move || -> Result<DataFrame, HttpError> {
        /// Counts the query as running until dropped, a panic included.
        struct Running<'a>(&'a JobCounters, &'a Cancel);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.queries_running.fetch_sub(1, Ordering::Relaxed);
                if self.1.is_cancelled() {
                    self.0.queries_stopped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let _place = place;
        core.counters
            .queries_running
            .fetch_add(1, Ordering::Relaxed);
        let _running = Running(&core.counters, &scope);
        // A panic inside polars (it unwraps in places) is this query's failure, answered
        // without internals; the details go to the log.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            scope.scope(|| query_frame(&core, &sql, context.as_ref(), &request, now))
        }))
        .unwrap_or_else(|panic| {
            let what = crate::error::panic_message(panic.as_ref());
            tracing::error!(panic = %what, "a /query panicked inside polars");
            Err(HttpError::internal(
                "the query failed inside the SQL engine; the server log has the details",
            ))
        })
    });
    let joined = match tokio::time::timeout(time_limit, work).await {
        Ok(joined) => joined,
        Err(_) => {
            let message = format!(
                "the query ran past its time limit of {} and was stopped (limits.query_timeout)",
                humantime::format_duration(time_limit)
            );
            cancel.cancel(message.clone());
            hung_up.disarm();
            return Err(HttpError::new(ErrorCode::QueryTimeout, message));
        }
    };
    hung_up.disarm();
    let frame = joined.map_err(|e| HttpError::internal(e.to_string()))?;
    let frame = match frame {
        Err(_) if cancel.is_cancelled() => {
            return Err(HttpError::new(
                ErrorCode::MemoryLimit,
                cancel
                    .reason()
                    .unwrap_or("the query was stopped")
                    .to_owned(),
            ));
        }
        other => other?,
    };
    frame_response(frame, format, page, "query", Map::new())
}

/// Binds the tables `sql` reads (named objects of `context`, else pipeline results) and runs it.
fn query_frame(
    core: &JobServer,
    sql: &Sql,
    context: Option<&Arc<Context>>,
    request: &QueryRequest,
    now: DateTime<Utc>,
) -> Result<DataFrame, HttpError> {
    // A context in a worker process holds its named objects there: the query runs there.
    let remote = context.filter(|c| c.worker.is_some());
    let remote_objects: Vec<String> = remote
        .map(|c| c.object_summaries().into_iter().map(|o| o.name).collect())
        .unwrap_or_default();
    let mut inputs = BTreeMap::new();
    let mut remote_tables = Vec::new();
    for table in sql.tables() {
        if remote_objects.contains(table) {
            remote_tables.push((table.clone(), QueryTable::Object(table.clone())));
            continue;
        }
        let object = context.as_ref().and_then(|c| c.objects.get(table));
        let input = match object {
            Some(object) => {
                ResolvedInput::rows(JobInput::of_frame(object.frame.as_ref().clone().lazy()))
            }
            None => {
                let (pipeline, job) = table.split_once(TABLE_SEPARATOR).ok_or_else(|| {
                    HttpError::bad_request(format!(
                        "unknown table `{table}`: name a named object of the context, or a \
                             job's results as <pipeline>{TABLE_SEPARATOR}<job>"
                    ))
                })?;
                let app = core.catalog.get(pipeline).ok_or_else(|| {
                    HttpError::bad_request(format!(
                        "table `{table}`: pipeline `{pipeline}` not found"
                    ))
                })?;
                let tz = app.pipeline.timezone;
                let parse = |text: &Option<String>, key: &str| {
                    text.as_deref()
                        .map(|t| {
                            parse_instant(t, tz)
                                .map_err(|e| HttpError::bad_request(format!("`{key}`: {e}")))
                        })
                        .transpose()
                };
                let from = parse(&request.from, "from")?.unwrap_or(app.pipeline.start);
                let to = parse(&request.to, "to")?.unwrap_or(now).min(now);
                core.limits().check_result_partitions(
                    partitions_spanned(&app.pipeline, job, from, to),
                    &format!("table `{table}`"),
                )?;
                // The rows that are there: a query reads what is materialised and current.
                let window = Window {
                    start: from,
                    end: to,
                };
                core.materializer()
                    .inputs()
                    .results(&app.pipeline, job, &window, Gaps::Skip)
                    .map_err(|e| HttpError::bad_request(format!("table `{table}`: {e}")))?
            }
        };
        match remote {
            Some(_) => remote_tables.push((table.clone(), QueryTable::Rows(input))),
            None => {
                inputs.insert(table.clone(), input);
            }
        }
    }
    if let Some(context) = remote {
        let stop = || {
            crate::frames::cancel::current()
                .filter(Cancel::is_cancelled)
                .map(|cancel| {
                    cancel
                        .reason()
                        .unwrap_or("the query was stopped")
                        .to_owned()
                })
        };
        return core
            .query_in_worker(context, &request.sql, remote_tables, &stop)
            .map_err(|(message, class)| match class {
                "floe.MemoryLimit" => HttpError::new(ErrorCode::MemoryLimit, message),
                // As in this process: a panic's details go to the log, not to the client.
                "floe.JobPanicked" => {
                    tracing::error!(panic = %message, "a /query panicked in a worker process");
                    HttpError::internal(
                        "the query failed inside the SQL engine; the server log has the details",
                    )
                }
                "floe.JobKilled" => HttpError::new(ErrorCode::QueryTimeout, message),
                "floe.WorkerDied" | "floe.WorkerUnavailable" | "floe.WorkerFailed" => {
                    HttpError::new(ErrorCode::WorkerFailed, message)
                }
                _ => HttpError::bad_request(format!("query failed: {message}")),
            });
    }
    let plan = ResolvedPlan {
        pipeline: "query",
        job: "query",
        kind: sql,
        grain: Grain::Hourly,
        window: Window {
            start: DateTime::UNIX_EPOCH,
            end: now,
        },
        definition: None,
        stop: None,
        inputs,
    };
    core.materializer()
        .engine()
        .execute(plan)
        .map(|output| output.frame)
        .map_err(|e| HttpError::bad_request(format!("query failed: {e}")))
}

// ---- operations --------------------------------------------------------------------------

pub(super) async fn healthz() -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "status": "SUCCESS", "result": "alive" }),
    )
}

pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    if state.core.is_shutting_down() {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "status": "ERROR", "result": "shutting down" }),
        )
    } else {
        json_response(
            StatusCode::OK,
            &json!({ "status": "SUCCESS", "result": "ready" }),
        )
    }
}

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = String::with_capacity(8 * 1024);
    state.http_metrics.render(&mut out);
    let counters = &state.core.counters;
    let load =
        |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed) as f64;
    let (running, queued) = state.core.live_counts();
    family(
        &mut out,
        "floe_jobs_total",
        "counter",
        "Jobs by final status; `rejected` were refused with 429.",
        &[
            ("status=\"FINISHED\"".to_owned(), load(&counters.finished)),
            ("status=\"ERROR\"".to_owned(), load(&counters.error)),
            ("status=\"KILLED\"".to_owned(), load(&counters.killed)),
            ("status=\"rejected\"".to_owned(), load(&counters.rejected)),
        ],
    );
    family(
        &mut out,
        "floe_queries_running",
        "gauge",
        "/query computations running now.",
        &[(String::new(), load(&counters.queries_running))],
    );
    family(
        &mut out,
        "floe_queries_stopped_total",
        "counter",
        "/query computations stopped by their time limit, the memory limit or the client hanging up.",
        &[(String::new(), load(&counters.queries_stopped))],
    );
    family(
        &mut out,
        "floe_jobs_submitted_total",
        "counter",
        "Jobs accepted.",
        &[(String::new(), load(&counters.submitted))],
    );
    family(
        &mut out,
        "floe_jobs_live",
        "gauge",
        "Jobs not final yet, by state.",
        &[
            ("state=\"running\"".to_owned(), running as f64),
            ("state=\"queued\"".to_owned(), queued as f64),
        ],
    );
    let contexts = state.core.contexts();
    let per_context =
        |f: &dyn Fn(&crate::jobserver::context::Context) -> f64| -> Vec<(String, f64)> {
            contexts
                .iter()
                .map(|c| (format!("context=\"{}\"", escape(&c.name)), f(c)))
                .collect()
        };
    family(
        &mut out,
        "floe_context_queue_depth",
        "gauge",
        "Jobs waiting for a worker thread, per context.",
        &per_context(&|c| c.executor.queued() as f64),
    );
    family(
        &mut out,
        "floe_context_running_jobs",
        "gauge",
        "Jobs running, per context.",
        &per_context(&|c| c.executor.running() as f64),
    );
    family(
        &mut out,
        "floe_named_object_bytes",
        "gauge",
        "Bytes of named objects held, per context.",
        &per_context(&|c| c.objects_used() as f64),
    );
    // Per context in a worker process: its size now, and how often it was started (more
    // than once: replaced after a crash, its memory limit or a kill).
    let workers: Vec<_> = contexts
        .iter()
        .filter_map(|c| {
            let status = c.worker.as_ref()?.status();
            Some((format!("context=\"{}\"", escape(&c.name)), status))
        })
        .collect();
    family(
        &mut out,
        "floe_worker_resident_bytes",
        "gauge",
        "Memory a limit charges (anonymous, shared and swapped pages) of each context's worker process (0 while none runs).",
        &workers
            .iter()
            .map(|(label, s)| (label.clone(), s.resident_bytes.unwrap_or(0) as f64))
            .collect::<Vec<_>>(),
    );
    family(
        &mut out,
        "floe_worker_starts_total",
        "counter",
        "Worker processes started for each context.",
        &workers
            .iter()
            .map(|(label, s)| (label.clone(), s.starts as f64))
            .collect::<Vec<_>>(),
    );
    let cache = state.core.materializer().cache();
    family(
        &mut out,
        "floe_result_cache_hits_total",
        "counter",
        "Upstream partition reads served from memory.",
        &[(String::new(), cache.hits() as f64)],
    );
    family(
        &mut out,
        "floe_result_cache_misses_total",
        "counter",
        "Upstream partition reads that went to the store.",
        &[(String::new(), cache.misses() as f64)],
    );
    family(
        &mut out,
        "floe_result_cache_bytes",
        "gauge",
        "Bytes held by the result cache.",
        &[(String::new(), cache.bytes() as f64)],
    );
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        out,
    )
        .into_response()
}

pub(super) async fn openapi(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, &state.openapi)
}
