//! The HTTP layer's one error type, [`HttpError`], and its stable [`ErrorCode`]s.
//!
//! Every handler and middleware that refuses a request returns an `HttpError`; none builds an
//! error body by hand. An `HttpError` renders itself in Floe's envelope,
//! `{"error": {"code", "message", "errors"?}}`, and keeps a copy of itself in the response's
//! extensions, so [`super::uniform_errors`], which knows the route family, renders it again in
//! spark-jobserver's `{"status": "ERROR", "result": …}` on `/binaries`, `/contexts`, `/jobs`
//! and `/data` (with spark-jobserver's own labels where it has them: `VALIDATION FAILED`,
//! `NO SLOTS AVAILABLE`). The envelope follows the route, never the handler.
//!
//! Each code has one HTTP status, and the table of codes in `docs/errors.md` and the `code`
//! enum of `FloeError` in `api/openapi.yaml` are checked against [`ErrorCode::ALL`] by a test,
//! so a code cannot be added, renamed or moved to another status without the documents
//! following.
//!
//! A 500's message is the internal error chain, for the log only: the request-id middleware
//! logs it under the request's id and answers a short message naming that id instead.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::http::json_response;

/// What went wrong, as a client can match on it. The names are part of the API: never rename
/// one; add a new code instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum ErrorCode {
    /// A parameter, query string or body field is malformed or out of range.
    BadRequest,
    /// The body could not be read, or is not the JSON object the route takes.
    BadBody,
    /// A job's config fails validation; `errors` lists every problem.
    ValidationFailed,
    /// An uploaded pipeline is not valid YAML or not a valid pipeline; `errors` lists every
    /// problem with its line.
    InvalidPipeline,
    /// A `/query` ran past `limits.query_timeout` and was stopped.
    QueryTimeout,
    /// A `/query` was stopped because the server (or its context's worker process) went over
    /// its memory limit.
    MemoryLimit,
    /// No token, or a token that is unknown, revoked or expired.
    Unauthorized,
    /// The token's role is too small for the operation.
    Forbidden,
    /// The binary is used by running or queued jobs and cannot be deleted.
    InUse,
    /// No such binary, context, job, data file, pipeline, run, backfill, token or route.
    NotFound,
    /// The path exists but not with this method.
    MethodNotAllowed,
    /// `Accept` names no format Floe writes, or JSON was asked for a result with binary or
    /// decimal columns, which JSON does not carry.
    NotAcceptable,
    /// The body did not arrive in full within `body_read_timeout`.
    RequestTimeout,
    /// The thing is not in a state that allows the operation (a backfill already finished,
    /// a result of a job that has not finished).
    Conflict,
    /// The context is being stopped and takes no new jobs.
    ContextStopping,
    /// The body is larger than `max_request_bytes` (`max_upload_bytes` for uploads).
    PayloadTooLarge,
    /// The body's content type is not one the route reads.
    UnsupportedMediaType,
    /// The body is well-formed but its content cannot be used.
    Unprocessable,
    /// The context's job queue is full; retry after `Retry-After`.
    QueueFull,
    /// `limits.max_concurrent_queries` queries are computing; retry after `Retry-After`.
    TooManyQueries,
    /// `limits.max_active_backfills` backfills are active; retry after `Retry-After`.
    TooManyBackfills,
    /// The server failed; the message names the request id its log has the details under.
    Internal,
    /// The job history is full of unfinished jobs; retry after `Retry-After`.
    TooManyStoredJobs,
    /// The server is shutting down and takes no new work.
    ShuttingDown,
    /// The worker process of the query's context ended while it computed (crashed or was
    /// killed); its named objects were lost with it, and the next request starts a new one.
    WorkerFailed,
    /// The data-files directory holds `data_files.max_files` files, or the upload would take
    /// it past `data_files.max_total_bytes`.
    DataFilesFull,
}

impl ErrorCode {
    /// Every code, in the order of the documented table.
    pub(super) const ALL: [ErrorCode; 26] = [
        ErrorCode::BadRequest,
        ErrorCode::BadBody,
        ErrorCode::ValidationFailed,
        ErrorCode::InvalidPipeline,
        ErrorCode::QueryTimeout,
        ErrorCode::MemoryLimit,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::InUse,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::NotAcceptable,
        ErrorCode::RequestTimeout,
        ErrorCode::Conflict,
        ErrorCode::ContextStopping,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::Unprocessable,
        ErrorCode::QueueFull,
        ErrorCode::TooManyQueries,
        ErrorCode::TooManyBackfills,
        ErrorCode::Internal,
        ErrorCode::TooManyStoredJobs,
        ErrorCode::ShuttingDown,
        ErrorCode::WorkerFailed,
        ErrorCode::DataFilesFull,
    ];

    /// The code as clients see it.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadBody => "bad_body",
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::InvalidPipeline => "invalid_pipeline",
            ErrorCode::QueryTimeout => "query_timeout",
            ErrorCode::MemoryLimit => "memory_limit",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InUse => "in_use",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::NotAcceptable => "not_acceptable",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::Conflict => "conflict",
            ErrorCode::ContextStopping => "context_stopping",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Unprocessable => "unprocessable",
            ErrorCode::QueueFull => "queue_full",
            ErrorCode::TooManyQueries => "too_many_queries",
            ErrorCode::TooManyBackfills => "too_many_backfills",
            ErrorCode::Internal => "internal",
            ErrorCode::WorkerFailed => "worker_failed",
            ErrorCode::TooManyStoredJobs => "too_many_stored_jobs",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::DataFilesFull => "data_files_full",
        }
    }

    /// The one HTTP status a code answers with.
    pub(super) fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::BadBody
            | ErrorCode::ValidationFailed
            | ErrorCode::InvalidPipeline
            | ErrorCode::QueryTimeout
            | ErrorCode::MemoryLimit => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden | ErrorCode::InUse => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Conflict | ErrorCode::ContextStopping => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::QueueFull | ErrorCode::TooManyQueries | ErrorCode::TooManyBackfills => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::TooManyStoredJobs | ErrorCode::ShuttingDown | ErrorCode::WorkerFailed => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorCode::DataFilesFull => StatusCode::INSUFFICIENT_STORAGE,
        }
    }

    /// The code of an error the HTTP layer made itself (axum's rejections, the router's
    /// fallbacks), from its status.
    pub(super) fn of_status(status: StatusCode) -> ErrorCode {
        ErrorCode::ALL
            .into_iter()
            // The first code of a status is its generic one (`bad_request` before `bad_body`).
            .find(|code| code.status() == status)
            .unwrap_or(if status.is_server_error() {
                ErrorCode::Internal
            } else {
                ErrorCode::BadRequest
            })
    }

    /// spark-jobserver's `status` label for this error on its routes.
    fn sjs_label(self) -> &'static str {
        match self {
            ErrorCode::ValidationFailed => "VALIDATION FAILED",
            ErrorCode::QueueFull => "NO SLOTS AVAILABLE",
            _ => "ERROR",
        }
    }
}

/// Which JSON shape an error takes: decided by the route's family, not by the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Envelope {
    /// `{"error": {"code", "message", "errors"?}}`: Floe's own routes.
    Floe,
    /// `{"status": label, "result": message, "errors"?}`: `/binaries`, `/contexts`, `/jobs`,
    /// `/data`.
    SparkJobServer,
}

impl Envelope {
    /// The envelope of the route family `path` belongs to.
    pub(super) fn of_path(path: &str) -> Envelope {
        if super::auth::is_sjs_route(path) {
            Envelope::SparkJobServer
        } else {
            Envelope::Floe
        }
    }
}

/// A refused or failed request: a code, a message for a person, and what a client needs to
/// act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HttpError {
    code: ErrorCode,
    /// Only ever differs from `code.status()` for a 4xx the HTTP layer made itself with a
    /// status no code has (see [`HttpError::from_status`]).
    status: StatusCode,
    message: String,
    /// Every problem, one per item, for errors that list them (validation).
    errors: Vec<String>,
    /// Seconds for `Retry-After`, on refusals that pass (429, 503).
    retry_after: Option<u64>,
    /// Close the connection after the answer (a body that never arrived in full).
    close: bool,
}

impl HttpError {
    pub(super) fn new(code: ErrorCode, message: impl Into<String>) -> HttpError {
        HttpError {
            code,
            status: code.status(),
            message: message.into(),
            errors: Vec::new(),
            retry_after: None,
            close: false,
        }
    }

    /// An error the HTTP layer made itself with `status` (an axum rejection, a fallback).
    pub(super) fn from_status(status: StatusCode, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            ..HttpError::new(ErrorCode::of_status(status), message)
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError::new(ErrorCode::BadRequest, message)
    }

    pub(super) fn not_found(message: impl Into<String>) -> HttpError {
        HttpError::new(ErrorCode::NotFound, message)
    }

    pub(super) fn conflict(message: impl Into<String>) -> HttpError {
        HttpError::new(ErrorCode::Conflict, message)
    }

    /// A failure of the server; `detail` goes to the log, never to the client.
    pub(super) fn internal(detail: impl Into<String>) -> HttpError {
        HttpError::new(ErrorCode::Internal, detail)
    }

    /// A failure of the server with its cause chain, for the log.
    pub(super) fn internal_error(error: &(dyn std::error::Error + 'static)) -> HttpError {
        HttpError::internal(crate::error::error_chain(error))
    }

    /// The same error listing every problem in `errors`.
    pub(super) fn with_errors(self, errors: Vec<String>) -> HttpError {
        HttpError { errors, ..self }
    }

    /// The same error with a `Retry-After` of `seconds`.
    pub(super) fn with_retry_after(self, seconds: u64) -> HttpError {
        HttpError {
            retry_after: Some(seconds),
            ..self
        }
    }

    /// The same error, answered with `Connection: close`.
    pub(super) fn closing(self) -> HttpError {
        HttpError {
            close: true,
            ..self
        }
    }

    pub(super) fn message(&self) -> &str {
        &self.message
    }

    /// The answer in `envelope`.
    pub(super) fn render(&self, envelope: Envelope) -> Response {
        let body = match envelope {
            Envelope::Floe => {
                let mut error = json!({ "code": self.code.as_str(), "message": self.message });
                if !self.errors.is_empty() {
                    error["errors"] = json!(self.errors);
                }
                json!({ "error": error })
            }
            // spark-jobserver answers a failed validation with a `JobError`-shaped result.
            Envelope::SparkJobServer if self.code == ErrorCode::ValidationFailed => json!({
                "status": self.code.sjs_label(),
                "result": {
                    "message": self.message,
                    "errorClass": "floe.ValidationFailed",
                    "stack": "",
                    "errors": self.errors,
                }
            }),
            Envelope::SparkJobServer => {
                let mut body = json!({ "status": self.code.sjs_label(), "result": self.message });
                if !self.errors.is_empty() {
                    body["errors"] = json!(self.errors);
                }
                body
            }
        };
        let mut response = json_response(self.status, &body);
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.code == ErrorCode::Unauthorized {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(super::auth::CHALLENGE),
            );
        }
        response
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for HttpError {}

/// The error an answer was rendered from, kept in its extensions for the middleware that
/// re-renders it in the route family's envelope and for the log of a 500.
#[derive(Debug, Clone)]
pub(super) struct RenderedError(pub Arc<HttpError>);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut response = self.render(Envelope::Floe);
        response
            .extensions_mut()
            .insert(RenderedError(Arc::new(self)));
        response
    }
}

impl From<tokio::task::JoinError> for HttpError {
    fn from(error: tokio::task::JoinError) -> HttpError {
        HttpError::internal(format!("internal task failed: {error}"))
    }
}

impl From<crate::store::StoreError> for HttpError {
    fn from(error: crate::store::StoreError) -> HttpError {
        HttpError::internal_error(&error)
    }
}

impl From<crate::jobserver::limits::LimitError> for HttpError {
    fn from(error: crate::jobserver::limits::LimitError) -> HttpError {
        HttpError::bad_request(error.to_string())
    }
}

impl From<crate::jobserver::SubmitError> for HttpError {
    fn from(error: crate::jobserver::SubmitError) -> HttpError {
        use crate::jobserver::SubmitError;
        match error {
            SubmitError::NotFound(message) => HttpError::not_found(message),
            SubmitError::Invalid(errors) => {
                HttpError::new(ErrorCode::ValidationFailed, errors.join("; ")).with_errors(errors)
            }
            SubmitError::ContextNotFound(name) => {
                HttpError::not_found(format!("context {name} not found"))
            }
            SubmitError::ContextStopping => {
                HttpError::new(ErrorCode::ContextStopping, "Context stop in progress")
            }
            e @ SubmitError::QueueFull { .. } => {
                HttpError::new(ErrorCode::QueueFull, e.to_string()).with_retry_after(1)
            }
            e @ SubmitError::TooManyStoredJobs { retry_after, .. } => {
                HttpError::new(ErrorCode::TooManyStoredJobs, e.to_string())
                    .with_retry_after(retry_after.as_secs())
            }
            SubmitError::ShuttingDown => {
                HttpError::new(ErrorCode::ShuttingDown, "the server is shutting down")
            }
            SubmitError::Store(e) => HttpError::from(e),
        }
    }
}

/// The result of a handler: its answer, or the error it refuses with.
pub(super) type HttpResult<T = Response> = Result<T, HttpError>;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use super::*;

    fn manifest_file(path: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn documented() -> BTreeMap<String, u16> {
        ErrorCode::ALL
            .into_iter()
            .map(|code| (code.as_str().to_owned(), code.status().as_u16()))
            .collect()
    }

    #[test]
    fn codes_are_unique_and_the_docs_table_lists_each_with_its_status() {
        assert_eq!(
            documented().len(),
            ErrorCode::ALL.len(),
            "a code is repeated"
        );
        // Rows of the table in docs/errors.md: | `code` | status | meaning |
        let doc = manifest_file("docs/errors.md");
        let table: BTreeMap<String, u16> = doc
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let code = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                let status = cells.get(2)?.parse().ok()?;
                Some((code.to_owned(), status))
            })
            .collect();
        assert_eq!(
            table,
            documented(),
            "docs/errors.md is out of step with ErrorCode"
        );
    }

    #[test]
    fn the_openapi_document_enumerates_every_code() {
        let spec: serde_yaml::Value =
            serde_yaml::from_str(&manifest_file("api/openapi.yaml")).expect("valid YAML");
        let listed: Vec<&str> =
            spec["components"]["schemas"]["FloeError"]["properties"]["error"]["properties"]["code"]
                ["enum"]
                .as_sequence()
                .expect("FloeError.error.code has an enum")
                .iter()
                .map(|code| code.as_str().expect("codes are strings"))
                .collect();
        let codes: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
        assert_eq!(
            listed, codes,
            "api/openapi.yaml is out of step with ErrorCode"
        );
    }

    #[test]
    fn a_status_without_a_code_keeps_its_status() {
        assert_eq!(
            ErrorCode::of_status(StatusCode::BAD_REQUEST),
            ErrorCode::BadRequest
        );
        assert_eq!(
            ErrorCode::of_status(StatusCode::FORBIDDEN),
            ErrorCode::Forbidden
        );
        let gone = HttpError::from_status(StatusCode::GONE, "gone");
        assert_eq!(gone.status, StatusCode::GONE);
        assert_eq!(gone.code, ErrorCode::BadRequest);
    }

    async fn body_of(response: Response) -> Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    #[tokio::test]
    async fn one_error_renders_in_either_envelope() {
        let error = HttpError::new(ErrorCode::ValidationFailed, "a; b")
            .with_errors(vec!["a".into(), "b".into()]);
        let floe = body_of(error.render(Envelope::Floe)).await;
        assert_eq!(
            floe,
            json!({ "error": { "code": "validation_failed", "message": "a; b", "errors": ["a", "b"] } })
        );
        let sjs = body_of(error.render(Envelope::SparkJobServer)).await;
        assert_eq!(sjs["status"], "VALIDATION FAILED");
        assert_eq!(sjs["result"]["errors"], json!(["a", "b"]));

        let full = HttpError::new(ErrorCode::QueueFull, "full").with_retry_after(1);
        let response = full.render(Envelope::SparkJobServer);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            body_of(response).await,
            json!({ "status": "NO SLOTS AVAILABLE", "result": "full" })
        );

        let response = HttpError::not_found("no such job").into_response();
        assert!(response.extensions().get::<RenderedError>().is_some());
        assert_eq!(
            body_of(response).await,
            json!({ "error": { "code": "not_found", "message": "no such job" } })
        );
    }
}
