//! Request ids, and what a client learns of an internal error.
//!
//! Every request gets an id: the client's `x-request-id` when it is a plausible one (1 to 64
//! letters, digits, `.`, `_`, `-`), else a new UUIDv7. The id names the request's log span (so
//! every line logged while answering it carries it) and comes back in the answer's
//! `x-request-id` header.
//!
//! A 500 (a store that fails, a task that died, a handler that panicked) is logged at ERROR
//! with the whole error chain, under the request's id; the client gets a short message naming
//! that id, never the chain, which can carry file paths and internals. Other 5xx answers (503:
//! shutting down, full, over the memory limit) say something the client can act on, and pass
//! as they are, logged at WARN.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::error::{Envelope, HttpError, RenderedError};
use crate::auth::audit::shorten;

/// The header a request id is read from and written to.
pub(super) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id taken from a client.
const MAX_CLIENT_ID: usize = 64;

/// Bytes of a 500's body kept for the log.
const LOGGED_DETAIL_BYTES: usize = 16 << 10;

/// Whether `id`, sent by a client, is used as the request's id.
fn acceptable(id: &str) -> bool {
    (1..=MAX_CLIENT_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The middleware: outermost, so even a panic's answer gets an id and loses its details.
pub(super) async fn request_ids(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| acceptable(id))
        .map_or_else(|| uuid::Uuid::now_v7().simple().to_string(), str::to_owned);
    let envelope = Envelope::of_path(request.uri().path());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %shorten(request.uri().path(), 256),
    );
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        let (parts, body) = response.into_parts();
        let detail = match parts.extensions.get::<RenderedError>() {
            Some(RenderedError(error)) => error.message().to_owned(),
            // A 500 made outside Floe's handlers (a layer, a library): its body is the detail.
            None => axum::body::to_bytes(body, LOGGED_DETAIL_BYTES)
                .await
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_else(|_| "(a body longer than the log keeps)".to_owned()),
        };
        // The id on the line itself: the span's fields are not kept when INFO is filtered out.
        span.in_scope(|| {
            tracing::error!(request_id = %id, status = status.as_u16(), %detail, "internal error")
        });
        response = HttpError::internal(format!(
            "internal error; the server's log has the details under request id {id}"
        ))
        .render(envelope);
        super::keep_headers(&parts.headers, &mut response);
    } else if status.is_server_error() {
        span.in_scope(|| tracing::warn!(status = status.as_u16(), "answered with a server error"));
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::routing::get;

    use super::*;

    /// A handler whose store failed, with a path in the error chain.
    async fn store_failed() -> HttpError {
        HttpError::internal("sled failed to read /srv/floe/store/secret: i/o error")
    }

    #[tokio::test]
    async fn answers_carry_an_id_and_a_500_hides_its_details() {
        let app = Router::new()
            .route("/ok", get(|| async { "fine" }))
            .route(
                "/broken",
                get(|| async {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "sled failed to read run /srv/floe/store/secret: i/o error",
                    )
                }),
            )
            .route(
                "/panics",
                get(|| async {
                    if std::hint::black_box(true) {
                        panic!("index out of bounds in /src/secret.rs");
                    }
                    "never"
                }),
            )
            .route("/store-failed", get(store_failed))
            .route("/jobs/{id}", get(store_failed))
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                super::super::panic_response,
            ))
            .layer(axum::middleware::from_fn(request_ids));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();

        let ok = client.get(format!("{base}/ok")).send().await.unwrap();
        let generated = ok.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(generated.len(), 32, "{generated}");
        let echoed = client
            .get(format!("{base}/ok"))
            .header("x-request-id", "dashboard-42")
            .send()
            .await
            .unwrap();
        assert_eq!(echoed.headers()["x-request-id"], "dashboard-42");
        let replaced = client
            .get(format!("{base}/ok"))
            .header("x-request-id", "not an id")
            .send()
            .await
            .unwrap();
        assert_ne!(replaced.headers()["x-request-id"], "not an id");

        for path in ["/broken", "/panics", "/store-failed"] {
            let answer = client.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(answer.status(), StatusCode::INTERNAL_SERVER_ERROR);
            let id = answer.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned();
            let body: serde_json::Value = answer.json().await.unwrap();
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(&id), "{body}");
            assert!(!message.contains("secret"), "{body}");
            assert_eq!(body["error"]["code"], "internal");
        }
        // On spark-jobserver's routes, in its envelope.
        let answer = client.get(format!("{base}/jobs/1")).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let id = answer.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(body["status"], "ERROR", "{body}");
        let message = body["result"].as_str().unwrap();
        assert!(
            message.contains(&id) && !message.contains("secret"),
            "{body}"
        );
    }

    #[test]
    fn only_plausible_client_ids_are_taken() {
        assert!(acceptable("abc-123_X.y"));
        assert!(acceptable(&"a".repeat(64)));
        assert!(!acceptable(""));
        assert!(!acceptable(&"a".repeat(65)));
        assert!(!acceptable("two words"));
        assert!(!acceptable("line\nbreak"));
        assert!(!acceptable("é"));
    }
}
