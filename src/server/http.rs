//! Response building shared by every route: JSON answers, spark-jobserver's `{status, result}`
//! envelope for successes (errors are [`super::error::HttpError`]), result formats chosen by
//! `Accept` or `format=`, and streaming of large results off the async workers.
//!
//! Results are written by polars' own writers on a blocking thread into a channel that feeds
//! the response body, so a large CSV or Parquet download never sits whole in memory twice and
//! never blocks an async worker.

use std::io::Write;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use polars::prelude::*;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::error::{ErrorCode, HttpError};

/// A JSON response with `status`.
pub(super) fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

/// spark-jobserver's envelope: `{"status": label, "result": result}`.
pub(super) fn sjs(status: StatusCode, label: &str, result: impl Into<Value>) -> Response {
    json_response(status, &json!({ "status": label, "result": result.into() }))
}

/// Why no result format was chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum FormatError {
    /// `format=` names no format Floe writes: a bad parameter.
    #[error("{0}")]
    Unknown(String),
    /// `Accept` lists no media type Floe produces.
    #[error("{0}")]
    NotAcceptable(String),
}

impl From<FormatError> for HttpError {
    /// 400 for a bad `format=`, 406 for an `Accept` Floe cannot satisfy.
    fn from(error: FormatError) -> HttpError {
        let code = match error {
            FormatError::Unknown(_) => ErrorCode::BadRequest,
            FormatError::NotAcceptable(_) => ErrorCode::NotAcceptable,
        };
        HttpError::new(code, error.to_string())
    }
}

/// How a result is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ResultFormat {
    Json,
    Csv,
    Arrow,
    Parquet,
}

pub(super) const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
pub(super) const PARQUET: &str = "application/vnd.apache.parquet";

impl ResultFormat {
    fn from_name(name: &str) -> Option<ResultFormat> {
        match name.trim().to_ascii_lowercase().as_str() {
            "json" => Some(ResultFormat::Json),
            "csv" => Some(ResultFormat::Csv),
            "arrow" | "ipc" | "arrow-stream" => Some(ResultFormat::Arrow),
            "parquet" => Some(ResultFormat::Parquet),
            _ => None,
        }
    }

    fn from_media_type(media: &str) -> Option<ResultFormat> {
        match media.trim().to_ascii_lowercase().as_str() {
            "application/json" | "*/*" | "application/*" => Some(ResultFormat::Json),
            "text/csv" | "text/*" => Some(ResultFormat::Csv),
            ARROW_STREAM | "application/vnd.apache.arrow.file" => Some(ResultFormat::Arrow),
            PARQUET | "application/parquet" | "application/x-parquet" => {
                Some(ResultFormat::Parquet)
            }
            _ => None,
        }
    }

    /// `format=` wins; otherwise the first `Accept` entry Floe can produce (by q-value);
    /// no `Accept` means JSON.
    pub(super) fn negotiate(
        format: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<ResultFormat, FormatError> {
        if let Some(name) = format {
            return ResultFormat::from_name(name).ok_or_else(|| {
                FormatError::Unknown(format!(
                    "unknown format `{name}` (expected json, csv, arrow or parquet)"
                ))
            });
        }
        let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
            return Ok(ResultFormat::Json);
        };
        let mut choices: Vec<(f32, usize, &str)> = accept
            .split(',')
            .enumerate()
            .map(|(position, entry)| {
                let mut parts = entry.split(';');
                let media = parts.next().unwrap_or_default().trim();
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                (q, position, media)
            })
            .filter(|(q, _, _)| *q > 0.0)
            .collect();
        choices.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        choices
            .iter()
            .find_map(|(_, _, media)| ResultFormat::from_media_type(media))
            .ok_or_else(|| {
                FormatError::NotAcceptable(format!(
                    "cannot produce any of `{accept}` (available: application/json, text/csv, \
                     {ARROW_STREAM}, {PARQUET})"
                ))
            })
    }

    pub(super) fn content_type(self) -> &'static str {
        match self {
            ResultFormat::Json => "application/json",
            ResultFormat::Csv => "text/csv; charset=utf-8",
            ResultFormat::Arrow => ARROW_STREAM,
            ResultFormat::Parquet => PARQUET,
        }
    }
}

/// A 406 naming the columns of `frame` a JSON answer cannot carry, if it has any.
pub(super) fn check_json_columns(frame: &DataFrame) -> Result<(), HttpError> {
    let columns = crate::frames::json_unwritable_columns(frame);
    if columns.is_empty() {
        return Ok(());
    }
    Err(HttpError::new(
        ErrorCode::NotAcceptable,
        format!(
            "the result cannot be written as JSON: {} hold binary data or decimals, which JSON \
             answers do not carry; download it as Arrow or Parquet (`format` `arrow` or \
             `parquet`), or cast those columns in the job (to strings or floats)",
            columns.join(", ")
        ),
    ))
}

/// The rows of `frame` as a JSON array of objects, ready to embed without re-parsing.
pub(super) fn rows_json(frame: &DataFrame) -> Result<Box<RawValue>, HttpError> {
    check_json_columns(frame)?;
    let mut frame = frame.clone();
    let mut buffer = Vec::with_capacity(64 + frame.height() * 32);
    JsonWriter::new(&mut buffer)
        .with_json_format(JsonFormat::Json)
        .finish(&mut frame)
        .map_err(|e| HttpError::internal(format!("cannot write the result as JSON: {e}")))?;
    if buffer.is_empty() {
        buffer.extend_from_slice(b"[]");
    }
    let text = String::from_utf8(buffer)
        .map_err(|e| HttpError::internal(format!("result JSON is not UTF-8: {e}")))?;
    RawValue::from_string(text)
        .map_err(|e| HttpError::internal(format!("result JSON is invalid: {e}")))
}

/// `fields` plus `key` → the already-encoded JSON `rows`, as one JSON object. Putting `rows`
/// into a `serde_json::Value` would parse them back into a tree of values only to write them
/// out again: a page of 100,000 rows took a second and hundreds of MiB that way.
pub(super) fn json_with_rows(
    status: StatusCode,
    fields: &Map<String, Value>,
    key: &str,
    rows: &RawValue,
) -> Response {
    struct WithRows<'a> {
        fields: &'a Map<String, Value>,
        key: &'a str,
        rows: &'a RawValue,
    }
    impl Serialize for WithRows<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(Some(self.fields.len() + 1))?;
            for (name, value) in self.fields {
                if name != self.key {
                    map.serialize_entry(name, value)?;
                }
            }
            map.serialize_entry(self.key, self.rows)?;
            map.end()
        }
    }
    json_response(status, &WithRows { fields, key, rows })
}

/// Up to this many rows, a JSON answer is written in one piece on the request's task; above
/// it, it is streamed from a blocking thread (the hop costs more than small answers take).
const STREAM_JSON_ABOVE_ROWS: usize = 1000;

/// `fields` plus `key` → every row of `frame`, as one JSON object: written at once when small,
/// streamed when large, so an answer of a million rows never sits whole in memory as JSON.
pub(super) fn json_with_frame(
    status: StatusCode,
    fields: Map<String, Value>,
    key: &'static str,
    frame: DataFrame,
) -> Result<Response, HttpError> {
    if frame.height() <= STREAM_JSON_ABOVE_ROWS {
        let rows = rows_json(&frame)?;
        return Ok(json_with_rows(status, &fields, key, &rows));
    }
    check_json_columns(&frame)?;
    let mut head = serde_json::to_vec(&fields)
        .map_err(|e| HttpError::internal(format!("cannot write the answer as JSON: {e}")))?;
    head.pop(); // the closing brace: the rows come before it
    if !fields.is_empty() {
        head.push(b',');
    }
    head.extend_from_slice(&serde_json::to_vec(key).unwrap_or_default());
    head.push(b':');
    let body = stream_written(move |writer| {
        writer.write_all(&head)?;
        let mut frame = frame;
        let before = writer.written;
        JsonWriter::new(&mut *writer)
            .with_json_format(JsonFormat::Json)
            .finish(&mut frame)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if writer.written == before {
            writer.write_all(b"[]")?;
        }
        writer.write_all(b"}")
    });
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Sends body chunks from a blocking writer to the response body.
struct ChannelWriter {
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
    /// Bytes written so far.
    written: usize,
}

const CHUNK: usize = 256 * 1024;

impl ChannelWriter {
    fn send_buffer(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        self.written += data.len();
        if self.buffer.len() >= CHUNK {
            self.send_buffer()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buffer()
    }
}

/// A response body of what `write` writes, on a blocking thread, as it writes it. A failure
/// part-way ends the body with an error: the client sees a broken transfer, not a short body
/// that looks complete.
fn stream_written(
    write: impl FnOnce(&mut ChannelWriter) -> std::io::Result<()> + Send + 'static,
) -> Body {
    let (sender, mut receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter {
            sender: sender.clone(),
            buffer: Vec::with_capacity(CHUNK),
            written: 0,
        };
        // A panic inside a writer must end the body with an error too, not cleanly.
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            write(&mut writer).and_then(|()| writer.flush())
        }))
        .unwrap_or_else(|panic| {
            let what = crate::error::panic_message(panic.as_ref());
            tracing::error!(panic = %what, "writing a streamed answer panicked");
            Err(std::io::Error::other(format!(
                "writing the answer failed: {what}"
            )))
        });
        if let Err(e) = written {
            let _ = sender.blocking_send(Err(e));
        }
    });
    Body::from_stream(futures_util::stream::poll_fn(move |cx| {
        receiver.poll_recv(cx)
    }))
}

/// Streams `frame` in a binary or CSV `format`, written on a blocking thread.
pub(super) fn stream_frame(frame: DataFrame, format: ResultFormat, file_stem: &str) -> Response {
    let body = stream_written(move |writer| {
        let mut frame = frame;
        let written = match format {
            ResultFormat::Csv => CsvWriter::new(&mut *writer)
                .include_header(true)
                .finish(&mut frame)
                .map(drop),
            ResultFormat::Arrow => IpcStreamWriter::new(&mut *writer)
                .finish(&mut frame)
                .map(drop),
            ResultFormat::Parquet => ParquetWriter::new(&mut *writer)
                .finish(&mut frame)
                .map(drop),
            ResultFormat::Json => JsonWriter::new(&mut *writer)
                .with_json_format(JsonFormat::Json)
                .finish(&mut frame)
                .map(drop),
        };
        written.map_err(|e| std::io::Error::other(e.to_string()))
    });
    let extension = match format {
        ResultFormat::Json => "json",
        ResultFormat::Csv => "csv",
        ResultFormat::Arrow => "arrows",
        ResultFormat::Parquet => "parquet",
    };
    let disposition = format!("attachment; filename=\"{file_stem}.{extension}\"");
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// `offset` and `limit` for JSON pages, with defaults and bounds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Page {
    pub(super) offset: usize,
    pub(super) limit: usize,
}

pub(super) const DEFAULT_PAGE: usize = 1000;
pub(super) const MAX_PAGE: usize = 100_000;

impl Page {
    pub(super) fn new(offset: Option<usize>, limit: Option<usize>) -> Result<Page, HttpError> {
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Err(HttpError::bad_request(format!(
                "`limit` must be between 1 and {MAX_PAGE} rows per page, found {limit}; \
                 download whole results as CSV, Arrow or Parquet"
            )));
        }
        Ok(Page {
            offset: offset.unwrap_or(0),
            limit,
        })
    }

    pub(super) fn slice(&self, frame: &DataFrame) -> DataFrame {
        let offset = self.offset.min(frame.height());
        frame.slice(offset as i64, self.limit)
    }

    pub(super) fn json(&self, total: usize) -> Value {
        json!({ "offset": self.offset, "limit": self.limit, "total": total })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn negotiation_prefers_format_then_accept_by_quality() {
        let none = HeaderMap::new();
        assert_eq!(ResultFormat::negotiate(None, &none), Ok(ResultFormat::Json));
        assert_eq!(
            ResultFormat::negotiate(Some("parquet"), &accept("text/csv")),
            Ok(ResultFormat::Parquet)
        );
        assert_eq!(
            ResultFormat::negotiate(
                None,
                &accept("text/csv;q=0.5, application/vnd.apache.arrow.stream")
            ),
            Ok(ResultFormat::Arrow)
        );
        assert_eq!(
            ResultFormat::negotiate(None, &accept("*/*")),
            Ok(ResultFormat::Json)
        );
        let refused = ResultFormat::negotiate(None, &accept("image/png")).unwrap_err();
        assert!(matches!(refused, FormatError::NotAcceptable(_)));
        assert!(
            refused
                .to_string()
                .starts_with("cannot produce any of `image/png`")
        );
        let unknown = ResultFormat::negotiate(Some("xml"), &none).unwrap_err();
        assert!(matches!(unknown, FormatError::Unknown(_)));
        assert!(unknown.to_string().starts_with("unknown format `xml`"));
    }

    #[test]
    fn rows_render_as_a_json_array_of_objects() {
        let frame = df!("a" => [1i64, 2], "b" => ["x", "y"]).unwrap();
        let json = rows_json(&frame).unwrap();
        let value: Value = serde_json::from_str(json.get()).unwrap();
        assert_eq!(value, json!([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]));
        let empty = frame.slice(0, 0);
        let value: Value = serde_json::from_str(rows_json(&empty).unwrap().get()).unwrap();
        assert_eq!(value, json!([]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_while_streaming_breaks_the_body_rather_than_ending_it() {
        let body = stream_written(|writer| {
            writer.write_all(b"{\"result\":[")?;
            panic!("a writer panicked");
        });
        assert!(axum::body::to_bytes(body, usize::MAX).await.is_err());
    }

    #[tokio::test]
    async fn rows_are_spliced_into_the_envelope_as_written() {
        let frame = df!("a" => [1i64, 2]).unwrap();
        let rows = rows_json(&frame).unwrap();
        let mut fields = Map::new();
        fields.insert("jobId".into(), json!("j1"));
        fields.insert("result".into(), json!("replaced"));
        let response = json_with_rows(StatusCode::OK, &fields, "result", &rows);
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            value,
            json!({"jobId": "j1", "result": [{"a": 1}, {"a": 2}]})
        );
    }
}
