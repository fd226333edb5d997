//! spark-jobserver's `/data` routes: upload, list and delete the data files ad-hoc jobs read
//! (`input { data = "<file>", format = csv }`), in spark-jobserver's shapes and envelope.
//!
//! | route | answer |
//! |---|---|
//! | `GET /data` | the absolute paths, sorted, at most `data_files.max_files` |
//! | `POST /data/{prefix}` | the raw body stored as `<prefix>-<timestamp>.dat`: `{"status": "SUCCESS", "result": {"filename": "/abs/path"}}` |
//! | `DELETE /data/{file}` | the file (its name, or its url-encoded absolute path) deleted |
//! | `PUT /data?reset=reboot[&sync=false]` | every data file deleted (`sync=false`: answered at once) |
//!
//! The directory, the checks on every name and path, the atomic writes and the quota are
//! [`crate::data_files`]'s; this file parses, calls it on a blocking thread and shapes the
//! answers. Errors start with spark-jobserver's words ("Failed to store data file", "Unable to
//! delete data file") and go on with the reason.

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use serde_json::json;

use super::AppState;
use super::error::{ErrorCode, HttpError, HttpResult};
use super::http::{json_response, sjs};
use super::sjs::{body_error, query_params};
use crate::data_files::DataFileError;

/// `error` as an answer; `what` is spark-jobserver's opening ("Failed to store data file").
fn refused(what: &str, error: DataFileError) -> HttpError {
    let message = format!("{what}: {error}");
    match error {
        DataFileError::BadPrefix { .. } | DataFileError::NotManaged { .. } => {
            HttpError::bad_request(message)
        }
        DataFileError::TooLarge { .. } => HttpError::new(ErrorCode::PayloadTooLarge, message),
        DataFileError::TooManyFiles { .. }
        | DataFileError::TooManyBytes { .. }
        | DataFileError::NamesTaken { .. } => HttpError::new(ErrorCode::DataFilesFull, message),
        DataFileError::NotFound { .. } => HttpError::not_found(message),
        DataFileError::Io { .. } => HttpError::internal_error(&error),
    }
}

/// `GET /data`: the absolute paths of the data files, sorted.
pub(super) async fn list_files(State(state): State<AppState>) -> HttpResult {
    let files = state.data_files.clone();
    let listed = tokio::task::spawn_blocking(move || files.list())
        .await?
        .map_err(|e| refused("Unable to list data files", e))?;
    let paths: Vec<String> = listed
        .into_iter()
        .map(|file| file.path.to_string_lossy().into_owned())
        .collect();
    Ok(json_response(StatusCode::OK, &paths))
}

/// `POST /data/{prefix}`: the raw body, whatever its content type (`curl --data-binary`
/// labels it a form), stored as a new data file.
pub(super) async fn upload_file(
    State(state): State<AppState>,
    Path(prefix): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> HttpResult {
    const WHAT: &str = "Failed to store data file";
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "{WHAT}: the body is larger than {} bytes, the limit for one data file \
                     (`max_upload_bytes`)",
                    state.config.max_upload_bytes
                ),
            )
        } else {
            HttpError::new(
                ErrorCode::BadBody,
                format!("{WHAT}: {}", body_error(&rejection).message()),
            )
        }
    })?;
    let files = state.data_files.clone();
    let now = state.core.clock().now();
    let path = tokio::task::spawn_blocking(move || files.store(&prefix, &body, now))
        .await?
        .map_err(|e| refused(WHAT, e))?;
    tracing::info!(file = %path.display(), "data file stored");
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "status": "SUCCESS",
            "result": { "filename": path.to_string_lossy() },
        }),
    ))
}

/// `DELETE /data/{file}`: the file's name, or its absolute path as `GET /data` lists it.
pub(super) async fn delete_file(
    State(state): State<AppState>,
    Path(file): Path<String>,
) -> HttpResult {
    let files = state.data_files.clone();
    let path = tokio::task::spawn_blocking(move || files.delete(&file))
        .await?
        .map_err(|e| refused("Unable to delete data file", e))?;
    tracing::info!(file = %path.display(), "data file deleted");
    Ok(sjs(
        StatusCode::OK,
        "SUCCESS",
        format!("Data file {} deleted", path.display()),
    ))
}

/// `PUT /data?reset=reboot[&sync=false]`: deletes every data file; with `sync=false` the
/// answer comes at once and the files go on a blocking thread.
pub(super) async fn reset_files(State(state): State<AppState>, uri: Uri) -> HttpResult<Response> {
    const WHAT: &str = "Unable to reset data files";
    let params = query_params(&uri)?;
    match params.get("reset").map(String::as_str) {
        Some("reboot") => {}
        Some(other) => {
            return Err(HttpError::bad_request(format!(
                "{WHAT}: `reset` must be `reboot`, found `{}`",
                crate::auth::audit::shorten(other, 64)
            )));
        }
        None => {
            return Err(HttpError::bad_request(format!(
                "{WHAT}: give `reset=reboot`"
            )));
        }
    }
    let sync = match params.get("sync").map(|v| v.trim().to_ascii_lowercase()) {
        None => true,
        Some(v) if v == "true" || v == "1" || v == "yes" => true,
        Some(v) if v == "false" || v == "0" || v == "no" => false,
        Some(other) => {
            return Err(HttpError::bad_request(format!(
                "{WHAT}: `sync` must be `true` or `false`, found `{}`",
                crate::auth::audit::shorten(&other, 64)
            )));
        }
    };
    let files = state.data_files.clone();
    let reset = move || {
        let deleted = files.reset();
        match &deleted {
            Ok(count) => tracing::info!(deleted = count, "data files reset"),
            Err(e) => {
                tracing::error!(error = %crate::error::error_chain(e), "data files reset failed")
            }
        }
        deleted
    };
    if !sync {
        state.data_resets.request(move || drop(reset()));
        return Ok(sjs(
            StatusCode::OK,
            "SUCCESS",
            "Data files are being deleted",
        ));
    }
    let deleted = state
        .data_resets
        .run(reset)
        .await?
        .map_err(|e| refused(WHAT, e))?;
    Ok(sjs(
        StatusCode::OK,
        "SUCCESS",
        format!("{deleted} data files deleted"),
    ))
}
