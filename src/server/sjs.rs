//! The spark-jobserver routes: `/binaries`, `/contexts`, `/jobs`, with its shapes and codes
//! (see `docs/jobserver.md`). Every answer, errors included, is a JSON object with a string
//! `status`, which is what spark-jobserver clients (python-sjsclient among them) parse.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::AppState;
use super::http::{
    Page, ResultFormat, json_response, json_with_rows, rows_json, sjs, sjs_error, stream_frame,
};
use crate::catalog::UploadError;
use crate::error::error_chain;
use crate::jobserver::context::Context;
use crate::jobserver::{
    ContextError, KillOutcome, LiveJob, Submission, SubmitError, record_context_label,
};
use crate::store::{JobFailure, JobRecord, JobStatus};

/// Query parameters as a map; a malformed query string is a 400 in the SJS envelope.
pub(super) fn query_params(uri: &Uri) -> Result<BTreeMap<String, String>, String> {
    match uri.query() {
        None => Ok(BTreeMap::new()),
        Some(query) => serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .map(|pairs| pairs.into_iter().collect())
            .map_err(|e| format!("bad query string: {e}")),
    }
}

pub(super) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A body that could not be read: too large (413) or broken (400).
pub(super) fn body_error(rejection: &BytesRejection) -> (StatusCode, String) {
    let status = rejection.status();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "request body is larger than the server's limit".to_owned()
    } else {
        format!("cannot read the request body: {rejection}")
    };
    (status, message)
}

/// A body that could not be read, in the SJS envelope.
fn rejected(rejection: &BytesRejection) -> Response {
    let (status, message) = body_error(rejection);
    sjs_error(status, message)
}

fn internal(e: &(dyn std::error::Error + 'static)) -> Response {
    sjs_error(StatusCode::INTERNAL_SERVER_ERROR, error_chain(e))
}

fn blocking_failed(e: tokio::task::JoinError) -> Response {
    sjs_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("internal task failed: {e}"),
    )
}

// ---- binaries ----------------------------------------------------------------------------

const BINARY_TYPE: &str = "Pipeline";

/// Content types an upload may carry: YAML and text, and spark-jobserver's binary types, which
/// its clients send whatever the content (the body is validated as a pipeline either way).
const UPLOAD_TYPES: &[&str] = &[
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/x-yaml",
    "text/plain",
    "application/json",
    "application/octet-stream",
    "application/java-archive",
    "application/python-archive",
    "python-archive",
    "application/python-egg",
    "application/python-wheel",
];

pub(super) async fn list_binaries(State(state): State<AppState>) -> Response {
    let mut apps = Map::new();
    for app in state.core.catalog.all() {
        apps.insert(
            app.name().to_owned(),
            json!({
                "binary-type": BINARY_TYPE,
                "upload-time": timestamp(app.meta.upload_time),
                "version": app.meta.version,
                "jobs": app.pipeline.dag.topological_order(),
            }),
        );
    }
    json_response(StatusCode::OK, &Value::Object(apps))
}

pub(super) async fn get_binary(State(state): State<AppState>, Path(app): Path<String>) -> Response {
    let Some(found) = state.core.catalog.get(&app) else {
        return sjs_error(
            StatusCode::NOT_FOUND,
            format!("Can't find binary with name {app}"),
        );
    };
    let store = state.core.store().clone();
    let name = app.clone();
    let versions = match tokio::task::spawn_blocking(move || store.binary_versions(&name)).await {
        Ok(Ok(versions)) => versions,
        Ok(Err(e)) => return internal(&e),
        Err(e) => return blocking_failed(e),
    };
    json_response(
        StatusCode::OK,
        &json!({
            "app-name": app,
            "binary-type": BINARY_TYPE,
            "upload-time": timestamp(found.meta.upload_time),
            "version": found.meta.version,
            "sha256": found.meta.sha256,
            "size": found.meta.size,
            "jobs": found.pipeline.dag.topological_order(),
            "versions": versions.iter().map(|v| json!({
                "version": v.version,
                "upload-time": timestamp(v.upload_time),
                "sha256": v.sha256,
                "size": v.size,
            })).collect::<Vec<_>>(),
        }),
    )
}

pub(super) async fn upload_binary(
    State(state): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return rejected(&rejection),
    };
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let media = content_type
            .to_str()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if !UPLOAD_TYPES.contains(&media.as_str()) {
            return sjs_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported content type `{media}`: upload the pipeline YAML as one of {}",
                    UPLOAD_TYPES.join(", ")
                ),
            );
        }
    }
    let core = state.core.clone();
    let name = app.clone();
    let uploaded = tokio::task::spawn_blocking(move || {
        core.catalog.upload(
            core.store(),
            core.registry(),
            &name,
            &body,
            core.clock().now(),
        )
    })
    .await;
    match uploaded {
        // The catalog has told the scheduler: the new version's triggers and settings take
        // over for recurring runs.
        Ok(Ok(uploaded)) => sjs(
            StatusCode::CREATED,
            "SUCCESS",
            format!("Binary {app} uploaded as version {}", uploaded.meta.version),
        ),
        Ok(Err(UploadError::Invalid(errors))) => json_response(
            StatusCode::BAD_REQUEST,
            &json!({
                "status": "ERROR",
                "result": format!("Binary is not of the right format: {}", errors.join("\n")),
                "errors": errors,
            }),
        ),
        Ok(Err(UploadError::BadName(message))) => sjs_error(StatusCode::BAD_REQUEST, message),
        Ok(Err(UploadError::Store(e))) => internal(&e),
        Err(e) => blocking_failed(e),
    }
}

pub(super) async fn delete_binary(
    State(state): State<AppState>,
    Path(app): Path<String>,
) -> Response {
    let users = state.core.jobs_using_app(&app);
    if !users.is_empty() {
        return sjs_error(
            StatusCode::FORBIDDEN,
            format!("Binary is in use by job(s): {}", users.join(", ")),
        );
    }
    let core = state.core.clone();
    let name = app.clone();
    match tokio::task::spawn_blocking(move || core.catalog.delete(core.store(), &name)).await {
        Ok(Ok(true)) => sjs(StatusCode::OK, "SUCCESS", format!("Binary {app} deleted")),
        Ok(Ok(false)) => sjs_error(
            StatusCode::NOT_FOUND,
            format!("Can't find binary with name {app}"),
        ),
        Ok(Err(e)) => internal(&e),
        Err(e) => blocking_failed(e),
    }
}

// ---- contexts ----------------------------------------------------------------------------

pub(super) async fn list_contexts(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, &json!(state.core.context_names()))
}

pub(super) fn context_json(context: &Context) -> Value {
    json!({
        "id": context.id,
        "name": context.name,
        "startTime": timestamp(context.start_time),
        "endTime": "Empty",
        "state": if context.is_stopping() { "STOPPING" } else { "RUNNING" },
        "settings": context.settings.to_json(),
        "jobs": { "running": context.executor.running(), "queued": context.executor.queued() },
        "namedObjects": context.objects.summaries(),
        "memory": { "budget": context.objects.budget(), "used": context.objects.used() },
    })
}

pub(super) async fn get_context(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Response {
    match state.core.context(&name) {
        Some(context) => json_response(StatusCode::OK, &context_json(&context)),
        None => sjs_error(
            StatusCode::NOT_FOUND,
            format!("can't find context with name {name}"),
        ),
    }
}

/// Parses a config body as HOCON (JSON included), whatever its content type: that is what
/// spark-jobserver does, and `curl -d` labels HOCON as a form.
/// A blank body is an empty config.
pub(super) fn parse_config(body: &[u8]) -> Result<Map<String, Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let text = std::str::from_utf8(body).map_err(|e| format!("the body is not UTF-8: {e}"))?;
    match super::hocon::parse(text).map_err(|e| e.to_string())? {
        Value::Object(map) => Ok(map),
        other => Err(format!(
            "expected an object of settings, found {}",
            match other {
                Value::Array(_) => "an array",
                _ => "a single value",
            }
        )),
    }
}

pub(super) async fn create_context(
    State(state): State<AppState>,
    Path(name): Path<String>,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let params = match query_params(&uri) {
        Ok(params) => params,
        Err(message) => return sjs_error(StatusCode::BAD_REQUEST, message),
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return rejected(&rejection),
    };
    let mut settings: BTreeMap<String, Value> = params
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let config = match parse_config(&body) {
        Ok(config) => config,
        Err(e) => {
            return sjs_error(
                StatusCode::BAD_REQUEST,
                format!("CONTEXT INIT ERROR: cannot parse config: {e}"),
            );
        }
    };
    // Settings may sit at the top level or under spark-jobserver's blocks.
    let nested = config
        .get("spark")
        .and_then(|s| s.get("context-settings"))
        .or_else(|| config.get("context-settings"))
        .and_then(Value::as_object)
        .cloned();
    settings.extend(nested.unwrap_or(config));
    let core = state.core.clone();
    let context_name = name.clone();
    match tokio::task::spawn_blocking(move || core.create_context(&context_name, settings)).await {
        Ok(Ok(_)) => sjs(StatusCode::OK, "SUCCESS", "Context initialized"),
        Ok(Err(ContextError::Store(e))) => internal(&e),
        Ok(Err(e)) => sjs_error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => blocking_failed(e),
    }
}

pub(super) async fn delete_context(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Response {
    let core = state.core.clone();
    let context_name = name.clone();
    match tokio::task::spawn_blocking(move || core.delete_context(&context_name)).await {
        Ok(Ok(())) => sjs(StatusCode::OK, "SUCCESS", "Context stopped"),
        Ok(Err(ContextError::NotFound(_))) => {
            sjs_error(StatusCode::NOT_FOUND, format!("context {name} not found"))
        }
        Ok(Err(e)) => internal(&e),
        Err(e) => blocking_failed(e),
    }
}

// ---- jobs --------------------------------------------------------------------------------

fn failure_json(failure: Option<&JobFailure>) -> Value {
    match failure {
        Some(f) => json!({ "message": f.message, "errorClass": f.error_class, "stack": f.stack }),
        None => json!({ "message": "unknown error", "errorClass": "", "stack": "" }),
    }
}

/// spark-jobserver's job report.
pub(super) fn job_report(
    record: &JobRecord,
    queued: bool,
    status: JobStatus,
) -> Map<String, Value> {
    let duration = match record.end_time {
        Some(end) => format!(
            "{:.3} secs",
            (end - record.start_time).num_microseconds().unwrap_or(0) as f64 / 1e6
        ),
        None => "Job not done yet".to_owned(),
    };
    let mut report = Map::new();
    report.insert("jobId".into(), json!(record.id));
    report.insert("startTime".into(), json!(timestamp(record.start_time)));
    report.insert("classPath".into(), json!(record.class_path));
    report.insert("context".into(), json!(record_context_label(record)));
    report.insert("contextId".into(), json!(record.context_id));
    report.insert("duration".into(), json!(duration));
    report.insert("status".into(), json!(status.as_str()));
    if let Some(app) = &record.app {
        report.insert("appName".into(), json!(app));
    }
    if queued {
        report.insert("queued".into(), json!(true));
    }
    if matches!(status, JobStatus::Error | JobStatus::Killed) {
        report.insert("result".into(), failure_json(record.failure.as_ref()));
    }
    report
}

fn location(id: &str) -> [(header::HeaderName, HeaderValue); 1] {
    [(
        header::LOCATION,
        HeaderValue::from_str(&format!("/jobs/{id}")).unwrap_or(HeaderValue::from_static("/jobs")),
    )]
}

fn param_bool(params: &BTreeMap<String, String>, key: &str) -> Result<bool, String> {
    match params.get(key).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if v == "true" || v == "1" || v == "yes" => Ok(true),
        Some(v) if v == "false" || v == "0" || v == "no" || v.is_empty() => Ok(false),
        Some(v) => Err(format!("`{key}` must be true or false, found `{v}`")),
    }
}

fn submit_error(error: SubmitError) -> Response {
    match error {
        SubmitError::NotFound(message) => sjs_error(StatusCode::NOT_FOUND, message),
        SubmitError::Invalid(errors) => json_response(
            StatusCode::BAD_REQUEST,
            &json!({
                "status": "VALIDATION FAILED",
                "result": {
                    "message": errors.join("; "),
                    "errorClass": "floe.ValidationFailed",
                    "stack": "",
                    "errors": errors,
                }
            }),
        ),
        SubmitError::ContextNotFound(name) => {
            sjs_error(StatusCode::NOT_FOUND, format!("context {name} not found"))
        }
        SubmitError::ContextStopping => sjs_error(StatusCode::CONFLICT, "Context stop in progress"),
        e @ SubmitError::QueueFull { .. } => {
            let mut response = sjs(
                StatusCode::TOO_MANY_REQUESTS,
                "NO SLOTS AVAILABLE",
                e.to_string(),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        SubmitError::ShuttingDown => sjs_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        ),
        SubmitError::TooManyStoredJobs { retry_after, .. } => {
            let mut response = sjs_error(StatusCode::SERVICE_UNAVAILABLE, error.to_string());
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs()),
            );
            response
        }
        SubmitError::Store(e) => internal(&e),
    }
}

pub(super) async fn submit_job(
    State(state): State<AppState>,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let params = match query_params(&uri) {
        Ok(params) => params,
        Err(message) => return sjs_error(StatusCode::BAD_REQUEST, message),
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return rejected(&rejection),
    };
    let config = match parse_config(&body) {
        Ok(config) => config,
        Err(e) => return sjs_error(StatusCode::BAD_REQUEST, format!("Cannot parse config: {e}")),
    };
    let string_in = |keys: &[&str]| -> Option<String> {
        keys.iter()
            .find_map(|k| params.get(*k).filter(|v| !v.is_empty()).cloned())
    };
    let app = string_in(&["appName", "cp"]);
    let Some(class_path) = string_in(&["classPath", "mainClass"]) else {
        return sjs_error(
            StatusCode::BAD_REQUEST,
            "Cannot parse config: classPath is missing: give `classPath` (a job of the app's \
             pipeline, or a built-in class such as sql) and, for pipeline jobs, `appName`",
        );
    };
    let sync = match param_bool(&params, "sync") {
        Ok(sync) => sync,
        Err(e) => return sjs_error(StatusCode::BAD_REQUEST, e),
    };
    let wait = match params.get("timeout") {
        None => state.config.sync_timeout,
        Some(text) => match text.trim().parse::<f64>() {
            Ok(secs) if (0.0..=86_400.0).contains(&secs) => Duration::from_secs_f64(secs),
            _ => {
                return sjs_error(
                    StatusCode::BAD_REQUEST,
                    format!("`timeout` must be a number of seconds up to 86400, found `{text}`"),
                );
            }
        },
    };
    let submission = Submission {
        app,
        class_path,
        context: params.get("context").filter(|c| !c.is_empty()).cloned(),
        config,
    };
    let live = match state.core.submit(submission) {
        Ok(live) => live,
        Err(e) => return submit_error(e),
    };
    if !sync {
        let record = live.record();
        return (
            StatusCode::ACCEPTED,
            location(&live.id),
            json_response(
                StatusCode::ACCEPTED,
                &Value::Object(job_report(&record, live.is_queued(), JobStatus::Started)),
            ),
        )
            .into_response();
    }
    if !live.wait(wait).await {
        let record = live.record();
        return (
            StatusCode::ACCEPTED,
            location(&live.id),
            json_response(
                StatusCode::ACCEPTED,
                &Value::Object(job_report(&record, live.is_queued(), record.status)),
            ),
        )
            .into_response();
    }
    sync_answer(&live)
}

/// The answer of a sync job that has finished.
fn sync_answer(live: &LiveJob) -> Response {
    let record = live.record();
    match (record.status, live.result()) {
        (JobStatus::Finished, Some(frame)) => {
            let page = Page {
                offset: 0,
                limit: super::http::MAX_PAGE,
            };
            let total = frame.height();
            let rows = match rows_json(&page.slice(&frame)) {
                Ok(rows) => rows,
                Err(e) => return sjs_error(StatusCode::INTERNAL_SERVER_ERROR, e),
            };
            let mut body = Map::new();
            body.insert("jobId".into(), json!(record.id));
            body.insert("status".into(), json!("FINISHED"));
            if total > page.limit {
                body.insert("resultPage".into(), page.json(total));
            }
            json_with_rows(StatusCode::OK, &body, "result", &rows)
        }
        (status, _) => json_response(
            StatusCode::OK,
            &json!({
                "jobId": record.id,
                "status": status.as_str(),
                "result": failure_json(record.failure.as_ref()),
            }),
        ),
    }
}

pub(super) async fn list_jobs(State(state): State<AppState>, uri: Uri) -> Response {
    let params = match query_params(&uri) {
        Ok(params) => params,
        Err(message) => return sjs_error(StatusCode::BAD_REQUEST, message),
    };
    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None => 50,
        Some(Ok(n)) if n > 0 => n.min(10_000),
        Some(_) => {
            return sjs_error(
                StatusCode::BAD_REQUEST,
                "`limit` must be a positive whole number",
            );
        }
    };
    let status = match params.get("status") {
        None => None,
        Some(text) => match JobStatus::parse(text) {
            Some(status) => Some(status),
            None => {
                return sjs_error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown status `{text}` (expected RUNNING, FINISHED, ERROR or KILLED)"
                    ),
                );
            }
        },
    };
    let core = state.core.clone();
    let listed = tokio::task::spawn_blocking(move || {
        core.store()
            .jobs_newest(limit, |record| status.is_none_or(|s| record.status == s))
            .map(|records| {
                records
                    .iter()
                    .map(|record| {
                        let queued = core.live_job(&record.id).is_some_and(|l| l.is_queued());
                        Value::Object(job_report(record, queued, record.status))
                    })
                    .collect::<Vec<_>>()
            })
    })
    .await;
    match listed {
        Ok(Ok(reports)) => json_response(StatusCode::OK, &Value::Array(reports)),
        Ok(Err(e)) => internal(&e),
        Err(e) => blocking_failed(e),
    }
}

fn no_such_job(id: &str) -> Response {
    sjs_error(StatusCode::NOT_FOUND, format!("No such job ID {id}"))
}

pub(super) async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let params = match query_params(&uri) {
        Ok(params) => params,
        Err(message) => return sjs_error(StatusCode::BAD_REQUEST, message),
    };
    let format = match ResultFormat::negotiate(params.get("format").map(String::as_str), &headers) {
        Ok(format) => format,
        Err(e) => return sjs_error(e.status(), e.to_string()),
    };
    let number = |key: &str| -> Result<Option<usize>, String> {
        params
            .get(key)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| format!("`{key}` must be a whole number, found `{v}`"))
            })
            .transpose()
    };
    let page = match number("offset")
        .and_then(|offset| Ok((offset, number("limit")?)))
        .and_then(|(offset, limit)| Page::new(offset, limit))
    {
        Ok(page) => page,
        Err(e) => return sjs_error(StatusCode::BAD_REQUEST, e),
    };
    let (record, queued, in_memory) = match state.core.live_job(&id) {
        Some(live) => (live.record(), live.is_queued(), live.result()),
        None => match state.core.store().job(&id) {
            Ok(Some(record)) => (record, false, None),
            Ok(None) => return no_such_job(&id),
            Err(e) => return internal(&e),
        },
    };
    if record.status != JobStatus::Finished {
        if format != ResultFormat::Json {
            return sjs_error(
                StatusCode::CONFLICT,
                format!(
                    "job {id} is {}; only a FINISHED job has a result to download",
                    record.status
                ),
            );
        }
        return json_response(
            StatusCode::OK,
            &Value::Object(job_report(&record, queued, record.status)),
        );
    }
    let frame = match in_memory {
        Some(frame) => frame,
        None => {
            let store = state.core.store().clone();
            let job_id = id.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                store
                    .job_result(&job_id)
                    .map_err(|e| format!("the stored result is unreadable: {}", error_chain(&e)))?
                    .ok_or_else(|| format!("job {job_id} is FINISHED but its result is missing"))
            })
            .await;
            match loaded {
                Ok(Ok(frame)) => frame,
                Ok(Err(e)) => return sjs_error(StatusCode::INTERNAL_SERVER_ERROR, e),
                Err(e) => return blocking_failed(e),
            }
        }
    };
    if format != ResultFormat::Json {
        return stream_frame(frame, format, &format!("job-{id}"));
    }
    let total = frame.height();
    let rows = match rows_json(&page.slice(&frame)) {
        Ok(rows) => rows,
        Err(e) => return sjs_error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let mut report = job_report(&record, false, record.status);
    report.insert("resultPage".into(), page.json(total));
    json_with_rows(StatusCode::OK, &report, "result", &rows)
}

pub(super) async fn get_job_config(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Response {
    match state.core.store().job_config(&id) {
        Ok(Some(bytes)) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(config) => json_response(StatusCode::OK, &config),
            Err(e) => sjs_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("stored config of job {id} is unreadable: {e}"),
            ),
        },
        Ok(None) => no_such_job(&id),
        Err(e) => internal(&e),
    }
}

pub(super) async fn kill_job(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.core.kill(&id) {
        Ok(KillOutcome::Killed) => json_response(StatusCode::OK, &json!({ "status": "KILLED" })),
        Ok(KillOutcome::AlreadyFailed(failure)) => json_response(
            StatusCode::OK,
            &json!({ "status": "ERROR", "ERROR": failure_json(failure.as_ref()) }),
        ),
        Ok(KillOutcome::NotRunning) => sjs_error(
            StatusCode::NOT_FOUND,
            format!("No running job with ID {id}"),
        ),
        Ok(KillOutcome::NotFound) => no_such_job(&id),
        Err(e) => internal(&e),
    }
}
