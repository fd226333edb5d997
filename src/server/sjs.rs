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
use super::error::{ErrorCode, HttpError, HttpResult};
use super::http::{
    Page, ResultFormat, check_json_columns, json_response, json_with_frame, json_with_rows,
    rows_json, sjs, stream_frame,
};
use crate::catalog::{AppSource, Catalog, DeleteError, UploadError};
use crate::jobserver::context::Context;
use crate::jobserver::{ContextError, KillOutcome, LiveJob, Submission, record_context_label};
use crate::store::{JobFailure, JobRecord, JobStatus};

/// Query parameters as a map; a malformed query string is a 400.
pub(super) fn query_params(uri: &Uri) -> Result<BTreeMap<String, String>, HttpError> {
    match uri.query() {
        None => Ok(BTreeMap::new()),
        Some(query) => serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .map(|pairs| pairs.into_iter().collect())
            .map_err(|e| HttpError::bad_request(format!("bad query string: {e}"))),
    }
}

pub(super) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A body that could not be read: too large (413) or broken (400).
pub(super) fn body_error(rejection: &BytesRejection) -> HttpError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        HttpError::new(
            ErrorCode::PayloadTooLarge,
            "request body is larger than the server's limit",
        )
    } else {
        HttpError::new(
            ErrorCode::BadBody,
            format!("cannot read the request body: {rejection}"),
        )
    }
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
                "source": source_json(&app.source),
                "upload-time": timestamp(app.meta.upload_time),
                "version": app.meta.version,
                "jobs": app.pipeline.dag.topological_order(),
            }),
        );
    }
    json_response(StatusCode::OK, &Value::Object(apps))
}

/// Where the current version came from: `{"kind": "file", "file": "shop.yaml"}` (the server's
/// pipelines folder, which owns the name) or `{"kind": "upload"}`.
fn source_json(source: &AppSource) -> Value {
    match source {
        AppSource::File(file) => json!({ "kind": "file", "file": file.display().to_string() }),
        AppSource::Upload => json!({ "kind": "upload" }),
    }
}

fn no_such_binary(app: &str) -> HttpError {
    HttpError::not_found(format!("Can't find binary with name {app}"))
}

pub(super) async fn get_binary(
    State(state): State<AppState>,
    Path(app): Path<String>,
) -> HttpResult {
    let Some(found) = state.core.catalog.get(&app) else {
        return Err(no_such_binary(&app));
    };
    let store = state.core.store().clone();
    let name = app.clone();
    let versions = tokio::task::spawn_blocking(move || store.binary_versions(&name)).await??;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "app-name": app,
            "binary-type": BINARY_TYPE,
            "source": source_json(&found.source),
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
    ))
}

pub(super) async fn upload_binary(
    State(state): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> HttpResult {
    let body = body.map_err(|rejection| body_error(&rejection))?;
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
            return Err(HttpError::new(
                ErrorCode::UnsupportedMediaType,
                format!(
                    "unsupported content type `{media}`: upload the pipeline YAML as one of {}",
                    UPLOAD_TYPES.join(", ")
                ),
            ));
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
    .await?;
    match uploaded {
        // The catalog has told the scheduler: the new version's triggers and settings take
        // over for recurring runs.
        Ok(uploaded) => Ok(sjs(
            StatusCode::CREATED,
            "SUCCESS",
            format!("Binary {app} uploaded as version {}", uploaded.meta.version),
        )),
        Err(UploadError::Invalid(errors)) => Err(HttpError::new(
            ErrorCode::InvalidPipeline,
            format!("Binary is not of the right format: {}", errors.join("\n")),
        )
        .with_errors(errors)),
        Err(UploadError::BadName(message)) => Err(HttpError::bad_request(message)),
        Err(UploadError::DefinedByFile(e)) => Err(HttpError::conflict(e.to_string())),
        Err(UploadError::Store(e)) => Err(e.into()),
    }
}

pub(super) async fn delete_binary(
    State(state): State<AppState>,
    Path(app): Path<String>,
) -> HttpResult {
    let users = state.core.jobs_using_app(&app);
    if !users.is_empty() {
        return Err(HttpError::new(
            ErrorCode::InUse,
            format!("Binary is in use by job(s): {}", users.join(", ")),
        ));
    }
    let core = state.core.clone();
    let name = app.clone();
    let deleted = tokio::task::spawn_blocking(move || core.catalog.delete(core.store(), &name))
        .await?
        .map_err(|e| match e {
            DeleteError::DefinedByFile(e) => HttpError::conflict(e.to_string()),
            DeleteError::Store(e) => e.into(),
        })?;
    if deleted {
        Ok(sjs(
            StatusCode::OK,
            "SUCCESS",
            format!("Binary {app} deleted"),
        ))
    } else {
        Err(no_such_binary(&app))
    }
}

// ---- contexts ----------------------------------------------------------------------------

pub(super) async fn list_contexts(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, &json!(state.core.context_names()))
}

pub(super) fn context_json(context: &Context) -> Value {
    let worker = context.worker.as_ref().map(|worker| worker.status());
    let mut settings = context.settings.to_json();
    // Where it runs as resolved at its start, whatever the settings left to the server.
    settings["process"] = json!(if worker.is_some() {
        "worker"
    } else {
        "in-process"
    });
    settings["memory-limit"] = json!(worker.as_ref().and_then(|w| w.memory_limit));
    json!({
        "id": context.id,
        "name": context.name,
        "startTime": timestamp(context.start_time),
        "endTime": "Empty",
        "state": if context.is_stopping() { "STOPPING" } else { "RUNNING" },
        "settings": settings,
        "jobs": { "running": context.executor.running(), "queued": context.executor.queued() },
        "namedObjects": context.object_summaries(),
        "memory": { "budget": context.objects.budget(), "used": context.objects_used() },
        "worker": worker,
    })
}

pub(super) async fn get_context(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> HttpResult {
    match state.core.context(&name) {
        Some(context) => Ok(json_response(StatusCode::OK, &context_json(&context))),
        None => Err(HttpError::not_found(format!(
            "can't find context with name {name}"
        ))),
    }
}

/// Parses a config body as HOCON (JSON included), whatever its content type: that is what
/// spark-jobserver does, and `curl -d` labels HOCON as a form.
/// A blank body is an empty config.
pub(super) fn parse_config(body: &[u8]) -> Result<Map<String, Value>, ConfigBodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let text = std::str::from_utf8(body).map_err(ConfigBodyError::NotUtf8)?;
    match super::hocon::parse(text)? {
        Value::Object(map) => Ok(map),
        Value::Array(_) => Err(ConfigBodyError::NotAnObject("an array")),
        _ => Err(ConfigBodyError::NotAnObject("a single value")),
    }
}

/// Why a config body was refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConfigBodyError {
    #[error("the body is not UTF-8: {0}")]
    NotUtf8(std::str::Utf8Error),
    #[error(transparent)]
    Hocon(#[from] super::hocon::HoconError),
    #[error("expected an object of settings, found {0}")]
    NotAnObject(&'static str),
}

pub(super) async fn create_context(
    State(state): State<AppState>,
    Path(name): Path<String>,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> HttpResult {
    let params = query_params(&uri)?;
    let body = body.map_err(|rejection| body_error(&rejection))?;
    let mut settings: BTreeMap<String, Value> = params
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let config = parse_config(&body).map_err(|e| {
        HttpError::bad_request(format!("CONTEXT INIT ERROR: cannot parse config: {e}"))
    })?;
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
    match tokio::task::spawn_blocking(move || core.create_context(&context_name, settings)).await? {
        Ok(_) => Ok(sjs(StatusCode::OK, "SUCCESS", "Context initialized")),
        Err(ContextError::Store(e)) => Err(e.into()),
        Err(e) => Err(HttpError::bad_request(e.to_string())),
    }
}

/// `PUT /contexts?reset=reboot[&sync=false]`: stops every context and starts the configured
/// ones again; `sync=false` answers before the work is done.
pub(super) async fn reset_contexts(State(state): State<AppState>, uri: Uri) -> HttpResult {
    let params = query_params(&uri)?;
    match params.get("reset").map(String::as_str) {
        Some("reboot") => {}
        Some(other) => {
            return Err(HttpError::bad_request(format!(
                "`reset` must be `reboot`, found `{other}`"
            )));
        }
        None => {
            return Err(HttpError::bad_request(
                "PUT /contexts needs `reset=reboot` (stop every context, then start the \
                 configured ones again)",
            ));
        }
    }
    let wait = !params.contains_key("sync") || param_bool(&params, "sync")?;
    let core = state.core.clone();
    let config = state.config.clone();
    let reset = move || core.reset_contexts(&config.contexts);
    if !wait {
        // The reset goes on; its outcome is logged.
        state.context_resets.request(move || {
            if let Err(e) = reset() {
                tracing::warn!(error = %e, "context reset failed");
            }
        });
        return Ok(sjs(StatusCode::OK, "SUCCESS", "Context reset requested"));
    }
    match state.context_resets.run(reset).await? {
        Ok(_) => Ok(sjs(StatusCode::OK, "SUCCESS", "Context reset")),
        Err(ContextError::Store(e)) => Err(e.into()),
        // Threads of a stopped context still finishing a job: the admin's to know, not a 500.
        Err(e @ ContextError::Limit(_)) => Err(HttpError::conflict(format!(
            "the contexts were stopped, but a configured one cannot start again yet: {e}"
        ))),
        Err(e) => Err(HttpError::internal_error(&e)),
    }
}

pub(super) async fn delete_context(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> HttpResult {
    let core = state.core.clone();
    let context_name = name.clone();
    match tokio::task::spawn_blocking(move || core.delete_context(&context_name)).await? {
        Ok(()) => Ok(sjs(StatusCode::OK, "SUCCESS", "Context stopped")),
        Err(ContextError::NotFound(_)) => {
            Err(HttpError::not_found(format!("context {name} not found")))
        }
        Err(e) => Err(HttpError::internal_error(&e)),
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

/// Which app and class a `POST /jobs` names, in any of spark-jobserver's spellings: the query's
/// `appName` + `classPath`, or `cp` + `mainClass`, or the same keys in the config body (which
/// are taken out of it). `cp` is a comma list of binaries (`cp=a,b`).
#[derive(Debug, Default)]
struct JobTarget {
    apps: Vec<String>,
    class_path: Option<String>,
}

impl JobTarget {
    fn read(
        params: &BTreeMap<String, String>,
        config: &mut Map<String, Value>,
    ) -> Result<JobTarget, HttpError> {
        let mut target = JobTarget::default();
        for (key, value) in [
            ("appName", params.get("appName").cloned().map(Value::String)),
            ("cp", params.get("cp").cloned().map(Value::String)),
            ("appName", config.remove("appName")),
            ("cp", config.remove("cp")),
        ] {
            let entries = match value {
                None => continue,
                Some(Value::String(list)) => list
                    .split(',')
                    .map(str::trim)
                    .filter(|entry| !entry.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| {
                        item.as_str().map(str::to_owned).ok_or_else(|| {
                            HttpError::bad_request(format!(
                                "Cannot parse config: `{key}`: expected binary names, found \
                                 {item}"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                Some(other) => {
                    return Err(HttpError::bad_request(format!(
                        "Cannot parse config: `{key}`: expected binary names, found {other}"
                    )));
                }
            };
            for entry in entries {
                if entry.contains(':') || entry.contains('/') {
                    return Err(HttpError::bad_request(format!(
                        "Cannot parse config: `{key}` entry `{entry}` is a URI or a path: Floe \
                         never loads code from a location; upload the pipeline with \
                         POST /binaries/{{app}} and give its name"
                    )));
                }
                if !target.apps.contains(&entry) {
                    // Checked as the list grows: each entry is compared with those kept, so a
                    // list of a million names must stop here, not after a trillion comparisons.
                    if target.apps.len() == MAX_CLASS_PATH_APPS {
                        return Err(HttpError::bad_request(format!(
                            "Cannot parse config: `cp` names more than {MAX_CLASS_PATH_APPS} \
                             binaries, at most {MAX_CLASS_PATH_APPS}"
                        )));
                    }
                    target.apps.push(entry);
                }
            }
        }
        let mut classes = Vec::new();
        for key in ["classPath", "mainClass"] {
            if let Some(class) = params.get(key).filter(|c| !c.is_empty()) {
                classes.push(class.clone());
            }
            match config.remove(key) {
                None => {}
                Some(Value::String(class)) if !class.is_empty() => classes.push(class),
                Some(other) => {
                    return Err(HttpError::bad_request(format!(
                        "Cannot parse config: `{key}`: expected a class name, found {other}"
                    )));
                }
            }
        }
        classes.sort();
        classes.dedup();
        if classes.len() > 1 {
            return Err(HttpError::bad_request(format!(
                "Cannot parse config: the request names two classes ({}): give one `classPath` \
                 or `mainClass`",
                classes.join(", ")
            )));
        }
        target.class_path = classes.pop();
        Ok(target)
    }

    /// The app a job of `class_path` runs in: of the listed binaries, the first whose pipeline
    /// has that job, as a classpath resolves a class; for a built-in class, the first. Every
    /// binary listed must exist.
    fn app_for(&self, catalog: &Catalog, class_path: &str) -> Result<Option<String>, HttpError> {
        let mut apps = Vec::with_capacity(self.apps.len());
        for name in &self.apps {
            apps.push(
                catalog
                    .get(name)
                    .ok_or_else(|| HttpError::not_found(format!("appName {name} not found")))?,
            );
        }
        Ok(apps
            .iter()
            .find(|app| app.pipeline.job(class_path).is_some())
            .or(apps.first())
            .map(|app| app.name().to_owned()))
    }
}

/// Binaries one `cp` may list.
const MAX_CLASS_PATH_APPS: usize = 64;

fn param_bool(params: &BTreeMap<String, String>, key: &str) -> Result<bool, HttpError> {
    match params.get(key).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if v == "true" || v == "1" || v == "yes" => Ok(true),
        Some(v) if v == "false" || v == "0" || v == "no" || v.is_empty() => Ok(false),
        Some(v) => Err(HttpError::bad_request(format!(
            "`{key}` must be true or false, found `{v}`"
        ))),
    }
}

/// The query parameters `POST /jobs` reads; any other is a 400 rather than ignored.
const JOB_PARAMS: &[&str] = &[
    "appName",
    "classPath",
    "cp",
    "mainClass",
    "context",
    "sync",
    "timeout",
    "callbackUrl",
];

fn check_job_params(params: &BTreeMap<String, String>) -> Result<(), HttpError> {
    for key in params.keys() {
        if key == "spark.proxy.user" {
            return Err(HttpError::bad_request(
                "`spark.proxy.user` is not supported: Floe runs no Spark and impersonates no \
                 one; a job runs with the rights of the request's token",
            ));
        }
        if !JOB_PARAMS.contains(&key.as_str()) {
            return Err(HttpError::bad_request(format!(
                "unknown parameter `{}` of POST /jobs (known: {}); a job's settings go in its \
                 config body",
                key.chars().take(80).collect::<String>(),
                JOB_PARAMS.join(", ")
            )));
        }
    }
    Ok(())
}

pub(super) async fn submit_job(
    State(state): State<AppState>,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> HttpResult {
    let params = query_params(&uri)?;
    check_job_params(&params)?;
    let body = body.map_err(|rejection| body_error(&rejection))?;
    let mut config = parse_config(&body)
        .map_err(|e| HttpError::bad_request(format!("Cannot parse config: {e}")))?;
    let target = JobTarget::read(&params, &mut config)?;
    let Some(class_path) = target.class_path.clone() else {
        return Err(HttpError::bad_request(
            "Cannot parse config: classPath is missing: give `classPath` (a job of the app's \
             pipeline, or a built-in class such as sql) and, for pipeline jobs, `appName`",
        ));
    };
    let app = target.app_for(&state.core.catalog, &class_path)?;
    let sync = param_bool(&params, "sync")?;
    let wait = match params.get("timeout") {
        None => state.config.sync_timeout,
        Some(text) => match text.trim().parse::<f64>() {
            Ok(secs) if (0.0..=86_400.0).contains(&secs) => Duration::from_secs_f64(secs),
            _ => {
                return Err(HttpError::bad_request(format!(
                    "`timeout` must be a number of seconds up to 86400, found `{text}`"
                )));
            }
        },
    };
    // Checked against `callbacks.allowed_urls` before the job exists: a refused URL is a 400.
    let callback = params
        .get("callbackUrl")
        .filter(|url| !url.is_empty())
        .map(|url| state.core.callback_url(url))
        .transpose()
        .map_err(|e| HttpError::bad_request(e.to_string()))?;
    let submission = Submission {
        app,
        class_path,
        context: params.get("context").filter(|c| !c.is_empty()).cloned(),
        config,
        callback,
    };
    let live = state.core.submit(submission)?;
    if !sync {
        let record = live.record();
        return Ok((
            StatusCode::ACCEPTED,
            location(&live.id),
            json_response(
                StatusCode::ACCEPTED,
                &Value::Object(job_report(&record, live.is_queued(), JobStatus::Started)),
            ),
        )
            .into_response());
    }
    if !live.wait(wait).await {
        let record = live.record();
        return Ok((
            StatusCode::ACCEPTED,
            location(&live.id),
            json_response(
                StatusCode::ACCEPTED,
                &Value::Object(job_report(&record, live.is_queued(), record.status)),
            ),
        )
            .into_response());
    }
    sync_answer(&live, state.config.max_json_result_rows)
}

/// The answer of a sync job that has finished: its whole result, or, when that is more than
/// one JSON answer carries (`max_json_result_rows`), the async form (202, `Location`) saying
/// so, never a part of it passed off as the whole.
fn sync_answer(live: &LiveJob, max_rows: usize) -> HttpResult {
    let record = live.record();
    match (record.status, live.result()) {
        (JobStatus::Finished, Some(frame)) if frame.height() > max_rows => {
            let mut report = job_report(&record, false, record.status);
            too_many_rows_for_json(&mut report, &record.id, frame.height(), max_rows);
            Ok((
                StatusCode::ACCEPTED,
                location(&record.id),
                json_response(StatusCode::ACCEPTED, &Value::Object(report)),
            )
                .into_response())
        }
        (JobStatus::Finished, Some(frame)) => {
            check_json_columns(&frame).map_err(|e| {
                HttpError::new(
                    ErrorCode::NotAcceptable,
                    format!("job {} FINISHED, but {}", record.id, e.message()),
                )
            })?;
            let mut body = Map::new();
            body.insert("jobId".into(), json!(record.id));
            body.insert("status".into(), json!("FINISHED"));
            json_with_frame(StatusCode::OK, body, "result", frame)
        }
        (status, _) => Ok(json_response(
            StatusCode::OK,
            &json!({
                "jobId": record.id,
                "status": status.as_str(),
                "result": failure_json(record.failure.as_ref()),
            }),
        )),
    }
}

pub(super) async fn list_jobs(State(state): State<AppState>, uri: Uri) -> HttpResult {
    let params = query_params(&uri)?;
    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None => 50,
        Some(Ok(n)) if n > 0 => n.min(10_000),
        Some(_) => {
            return Err(HttpError::bad_request(
                "`limit` must be a positive whole number",
            ));
        }
    };
    let status = match params.get("status") {
        None => None,
        Some(text) => match JobStatus::parse(text) {
            Some(status) => Some(status),
            None => {
                return Err(HttpError::bad_request(format!(
                    "unknown status `{text}` (expected RUNNING, FINISHED, ERROR or KILLED)"
                )));
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
    .await??;
    Ok(json_response(StatusCode::OK, &Value::Array(listed)))
}

fn no_such_job(id: &str) -> HttpError {
    HttpError::not_found(format!("No such job ID {id}"))
}

pub(super) async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> HttpResult {
    let params = query_params(&uri)?;
    let format = ResultFormat::negotiate(params.get("format").map(String::as_str), &headers)?;
    let number = |key: &str| -> Result<Option<usize>, HttpError> {
        params
            .get(key)
            .map(|v| {
                v.parse::<usize>().map_err(|_| {
                    HttpError::bad_request(format!("`{key}` must be a whole number, found `{v}`"))
                })
            })
            .transpose()
    };
    let (offset, limit) = (number("offset")?, number("limit")?);
    let page = if offset.is_none() && limit.is_none() {
        None
    } else {
        Some(Page::new(offset, limit)?)
    };
    let (record, queued, in_memory) = match state.core.live_job(&id) {
        Some(live) => (live.record(), live.is_queued(), live.result()),
        None => match state.core.store().job(&id)? {
            Some(record) => (record, false, None),
            None => return Err(no_such_job(&id)),
        },
    };
    if record.status != JobStatus::Finished {
        if format != ResultFormat::Json {
            return Err(HttpError::conflict(format!(
                "job {id} is {}; only a FINISHED job has a result to download",
                record.status
            )));
        }
        return Ok(json_response(
            StatusCode::OK,
            &Value::Object(job_report(&record, queued, record.status)),
        ));
    }
    let frame = match in_memory {
        Some(frame) => frame,
        None => {
            let store = state.core.store().clone();
            let job_id = id.clone();
            tokio::task::spawn_blocking(move || {
                store.job_result(&job_id)?.ok_or_else(|| {
                    HttpError::internal(format!(
                        "job {job_id} is FINISHED but its result is missing"
                    ))
                })
            })
            .await??
        }
    };
    if format != ResultFormat::Json {
        return Ok(stream_frame(frame, format, &format!("job-{id}")));
    }
    let total = frame.height();
    let mut report = job_report(&record, false, record.status);
    let Some(page) = page else {
        // No page asked for: the whole result, as spark-jobserver answers, or none of it.
        let max_rows = state.config.max_json_result_rows;
        if total > max_rows {
            too_many_rows_for_json(&mut report, &id, total, max_rows);
            return Ok(json_response(StatusCode::OK, &Value::Object(report)));
        }
        return json_with_frame(StatusCode::OK, report, "result", frame);
    };
    let rows = rows_json(&page.slice(&frame))?;
    report.insert("resultPage".into(), page.json(total));
    Ok(json_with_rows(StatusCode::OK, &report, "result", &rows))
}

/// Says in a report without `result` why the rows are not there and where they are.
fn too_many_rows_for_json(report: &mut Map<String, Value>, id: &str, rows: usize, max: usize) {
    report.insert(
        "resultTooLarge".into(),
        json!({
            "rows": rows,
            "maxJsonResultRows": max,
            "message": format!(
                "the result has {rows} rows, more than one JSON answer carries \
                 (max_json_result_rows = {max}): page through it with \
                 GET /jobs/{id}?offset=0&limit={} or download it whole, streamed, with \
                 GET /jobs/{id}?format=csv|arrow|parquet",
                super::http::MAX_PAGE.min(max)
            ),
        }),
    );
}

pub(super) async fn get_job_config(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> HttpResult {
    let bytes = state
        .core
        .store()
        .job_config(&id)?
        .ok_or_else(|| no_such_job(&id))?;
    let config = serde_json::from_slice::<Value>(&bytes).map_err(|e| {
        HttpError::internal(format!("stored config of job {id} is unreadable: {e}"))
    })?;
    Ok(json_response(StatusCode::OK, &config))
}

pub(super) async fn kill_job(State(state): State<AppState>, Path(id): Path<String>) -> HttpResult {
    match state.core.kill(&id)? {
        KillOutcome::Killed => Ok(json_response(
            StatusCode::OK,
            &json!({ "status": "KILLED" }),
        )),
        KillOutcome::AlreadyFailed(failure) => Ok(json_response(
            StatusCode::OK,
            &json!({ "status": "ERROR", "ERROR": failure_json(failure.as_ref()) }),
        )),
        KillOutcome::NotRunning => {
            Err(HttpError::not_found(format!("No running job with ID {id}")))
        }
        KillOutcome::NotFound => Err(no_such_job(&id)),
    }
}
