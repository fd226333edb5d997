//! The web UI's shell: `/` redirects to `/ui`, which serves one page and its script and style,
//! embedded in the binary (no build step, no external request: the page loads nothing but
//! these files and the API). The shell holds no data, so it is open even when the API needs a
//! token; the page asks for one when the API answers 401 and sends it with every call.
//!
//! Every answer carries a Content-Security-Policy that lets the page run only its own script,
//! load only its own style, and talk only to this server, and may not be framed.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::HttpError;

/// The page, its script and its style: (name under `/ui/`, content type, bytes).
const ASSETS: [(&str, &str, &str); 2] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("ui/style.css"),
    ),
];

const PAGE: &str = include_str!("ui/index.html");

/// What the page may do: its own script and style, calls to this server, nothing else.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The paths anyone may GET, token or not: they hold no data.
pub(super) const OPEN_PATHS: [&str; 3] = ["/", "/ui", "/ui/{asset}"];

fn asset_response(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The binary is the version: revalidate rather than run a stale script against a new API.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /`: to the UI.
pub(super) async fn root() -> Response {
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/ui"));
    response
}

/// `GET /ui`: the page.
pub(super) async fn page() -> Response {
    asset_response("text/html; charset=utf-8", PAGE)
}

/// `GET /ui/{asset}`: the page's script or style.
pub(super) async fn asset(Path(name): Path<String>) -> Result<Response, HttpError> {
    ASSETS
        .iter()
        .find(|(asset, _, _)| *asset == name)
        .map(|(_, content_type, body)| asset_response(content_type, body))
        .ok_or_else(|| {
            HttpError::not_found(format!(
                "the UI has no file `{}` (it has {})",
                name.chars().take(64).collect::<String>(),
                ASSETS.map(|(asset, _, _)| asset).join(", ")
            ))
        })
}
