//! `floe serve`: the HTTP face of the job server (axum on tokio).
//!
//! Owns the routes, their table (so a test can hold them against `api/openapi.yaml`), request
//! metrics, body limits, CORS, and start-up and graceful shutdown; the connections themselves
//! (accept loop, TLS, timeouts, the connection cap) are [`listener`]'s. The work itself is in
//! [`crate::jobserver`]; handlers parse, call it, and shape answers. Blocking work (polars,
//! reading large results) runs on blocking threads, never on the async workers.

pub mod auth;
pub mod config;
mod data;
mod error;
mod floe;
pub mod hocon;
mod http;
mod listener;
pub mod metrics;
mod request_id;
mod resets;
mod schedule;
mod sjs;
mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use serde_json::Value;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::info;

use crate::auth::Role;
use crate::clock::{Clock, SystemClock};
use crate::data_files::{DataFileBounds, DataFiles};
use crate::error::error_chain;
use crate::job::JobRegistry;
use crate::jobserver::JobServer;
use crate::materialize::Materializer;
use crate::pipeline::data_roots::DataRoots;
use crate::results::ResultCache;
use crate::scheduler::{self, Scheduler};
use crate::store::Store;

pub use config::ServerConfig;

/// Why `floe serve` could not start, or stopped with an error. Messages are what the operator
/// sees on stderr.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A configuration built in code breaks the limits (a file's are checked when read).
    #[error("configuration: {0}")]
    Limits(#[source] config::LimitsError),
    /// Listening beyond loopback without authentication, or an unreadable tokens file.
    #[error(transparent)]
    Exposure(#[from] auth::StartupError),
    /// The tokens file or the audit log could not be opened.
    #[error("{}", error_chain(.0))]
    Auth(#[source] crate::auth::AuthError),
    #[error("{}", error_chain(.0))]
    Store(#[source] crate::store::StoreError),
    /// The data-files directory cannot be created or used.
    #[error("`data_files.dir`: {0}")]
    DataFiles(#[source] crate::data_files::DataDirError),
    #[error("{0}")]
    Pipelines(#[source] crate::pipeline::PipelineErrors),
    /// The job server could not recover its apps, contexts or interrupted jobs.
    #[error(transparent)]
    Recovery(#[from] crate::jobserver::recovery::RecoveryError),
    #[error("{}", error_chain(.0))]
    Scheduler(#[source] crate::scheduler::SchedulerError),
    #[error("api/openapi.yaml: {0}")]
    OpenApi(#[source] serde_yaml::Error),
    /// Worker processes are on, but cannot be started from here.
    #[error("`workers`: {0}")]
    Workers(String),
    #[error("`cors.allowed_origins`: {0}")]
    CorsOrigins(#[source] config::CorsOriginError),
    #[error("`cors.allowed_origins`: `{origin}`: {source}")]
    CorsHeader {
        origin: String,
        #[source]
        source: axum::http::header::InvalidHeaderValue,
    },
    /// The certificate or key could not be loaded.
    #[error(transparent)]
    Tls(TlsError),
    #[error(transparent)]
    Sighup(TlsError),
    #[error("start-up failed: {0}")]
    StartupPanicked(#[source] tokio::task::JoinError),
    #[error("cannot listen on {bind}: {source}")]
    Listen {
        bind: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    LocalAddress(#[source] std::io::Error),
    #[error("cannot start the scheduler: {0}")]
    SchedulerThread(#[source] std::io::Error),
    /// The graceful shutdown failed.
    #[error("shutdown failed: {0}")]
    Shutdown(#[source] tokio::task::JoinError),
}
use error::{Envelope, ErrorCode, HttpError, RenderedError};
#[cfg(unix)]
use listener::reload_on_sighup;
use listener::{BodyDeadline, EdgeSettings, serve as serve_edge};
pub use listener::{TlsCertificates, TlsError};

/// The OpenAPI spec, embedded so the binary serves the spec it was built with.
pub const OPENAPI_YAML: &str = include_str!("../../api/openapi.yaml");

/// What every handler can reach.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // Holds the whole server; nothing useful to print.
pub struct AppState {
    pub core: Arc<JobServer>,
    pub scheduler: Scheduler,
    pub config: Arc<ServerConfig>,
    pub http_metrics: Arc<metrics::HttpMetrics>,
    pub openapi: Arc<Value>,
    /// Tokens, the role each route needs, the audit log.
    pub auth: Arc<auth::AuthState>,
    /// The files of the `/data` routes, which ad-hoc jobs read too.
    pub data_files: Arc<DataFiles>,
    /// `PUT /contexts?reset=reboot`, one at a time.
    pub context_resets: Arc<resets::Resets>,
    /// `PUT /data?reset=reboot`, one at a time.
    pub data_resets: Arc<resets::Resets>,
}

/// A route of the table.
struct RouteEntry {
    method: Method,
    path: &'static str,
    /// The role a token needs for it (when authentication is on; see [`auth`]).
    role: Role,
    handler: MethodRouter<AppState>,
    /// Takes uploads: the larger body limit.
    upload: bool,
}

/// One route; the method filter is derived from `method`, so the table cannot list one method
/// and route another, and the role is an argument, so no route lacks one.
fn route<H, T>(method: Method, path: &'static str, role: Role, handler: H) -> RouteEntry
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone())
        .unwrap_or_else(|_| panic!("route table: no method filter for {method}"));
    RouteEntry {
        method,
        path,
        role,
        handler: on(filter, handler),
        upload: false,
    }
}

fn route_table() -> Vec<RouteEntry> {
    let upload = |entry: RouteEntry| RouteEntry {
        upload: true,
        ..entry
    };
    vec![
        route(Method::GET, "/binaries", Role::Read, sjs::list_binaries),
        route(Method::GET, "/binaries/{app}", Role::Read, sjs::get_binary),
        upload(route(
            Method::POST,
            "/binaries/{app}",
            Role::Admin,
            sjs::upload_binary,
        )),
        route(
            Method::DELETE,
            "/binaries/{app}",
            Role::Admin,
            sjs::delete_binary,
        ),
        route(Method::GET, "/data", Role::Read, data::list_files),
        upload(route(
            Method::POST,
            "/data/{name}",
            Role::Admin,
            data::upload_file,
        )),
        route(
            Method::DELETE,
            "/data/{name}",
            Role::Admin,
            data::delete_file,
        ),
        route(Method::PUT, "/data", Role::Admin, data::reset_files),
        route(Method::GET, "/contexts", Role::Read, sjs::list_contexts),
        route(Method::PUT, "/contexts", Role::Admin, sjs::reset_contexts),
        route(
            Method::GET,
            "/contexts/{name}",
            Role::Read,
            sjs::get_context,
        ),
        route(
            Method::POST,
            "/contexts/{name}",
            Role::Admin,
            sjs::create_context,
        ),
        route(
            Method::DELETE,
            "/contexts/{name}",
            Role::Admin,
            sjs::delete_context,
        ),
        route(Method::GET, "/jobs", Role::Read, sjs::list_jobs),
        route(Method::POST, "/jobs", Role::Run, sjs::submit_job),
        route(Method::GET, "/jobs/{id}", Role::Read, sjs::get_job),
        route(Method::DELETE, "/jobs/{id}", Role::Run, sjs::kill_job),
        route(
            Method::GET,
            "/jobs/{id}/config",
            Role::Read,
            sjs::get_job_config,
        ),
        route(Method::GET, "/pipelines", Role::Read, floe::list_pipelines),
        route(
            Method::GET,
            "/pipelines/{pipeline}/grid",
            Role::Read,
            floe::grid,
        ),
        route(
            Method::GET,
            "/pipelines/{pipeline}",
            Role::Read,
            floe::get_pipeline,
        ),
        route(
            Method::GET,
            "/pipelines/{pipeline}/runs",
            Role::Read,
            floe::list_runs,
        ),
        route(
            Method::GET,
            "/pipelines/{pipeline}/plan",
            Role::Read,
            floe::plan,
        ),
        route(
            Method::POST,
            "/pipelines/{pipeline}/runs",
            Role::Run,
            floe::start_run,
        ),
        route(
            Method::GET,
            "/pipelines/{pipeline}/schedule",
            Role::Read,
            schedule::get_schedule,
        ),
        route(
            Method::POST,
            "/pipelines/{pipeline}/pause",
            Role::Admin,
            schedule::pause_pipeline,
        ),
        route(
            Method::POST,
            "/pipelines/{pipeline}/resume",
            Role::Admin,
            schedule::resume_pipeline,
        ),
        route(
            Method::GET,
            "/pipelines/{pipeline}/backfills",
            Role::Read,
            schedule::list_backfills,
        ),
        route(
            Method::POST,
            "/pipelines/{pipeline}/backfills",
            Role::Run,
            schedule::start_backfill,
        ),
        route(
            Method::POST,
            "/pipelines/{pipeline}/restatements",
            Role::Admin,
            schedule::start_restatement,
        ),
        route(
            Method::GET,
            "/backfills/{id}",
            Role::Read,
            schedule::get_backfill,
        ),
        route(
            Method::POST,
            "/backfills/{id}/pause",
            Role::Run,
            schedule::pause_backfill,
        ),
        route(
            Method::POST,
            "/backfills/{id}/resume",
            Role::Run,
            schedule::resume_backfill,
        ),
        route(
            Method::POST,
            "/backfills/{id}/cancel",
            Role::Run,
            schedule::cancel_backfill,
        ),
        route(
            Method::GET,
            "/scheduler",
            Role::Read,
            schedule::scheduler_summary,
        ),
        route(
            Method::GET,
            "/pipelines/{pipeline}/jobs/{job}/results",
            Role::Read,
            floe::job_results,
        ),
        route(Method::POST, "/query", Role::Read, floe::query),
        route(Method::GET, "/healthz", Role::Read, floe::healthz),
        route(Method::GET, "/readyz", Role::Read, floe::readyz),
        route(Method::GET, "/metrics", Role::Read, floe::metrics),
        route(Method::GET, "/openapi.json", Role::Read, floe::openapi),
        // The web UI's shell: open whatever the token settings (`ui::OPEN_PATHS`).
        route(Method::GET, "/", Role::Read, ui::root),
        route(Method::GET, "/ui", Role::Read, ui::page),
        route(Method::GET, "/ui/{asset}", Role::Read, ui::asset),
        route(Method::GET, "/tokens", Role::Admin, auth::list_tokens),
        route(Method::POST, "/tokens", Role::Admin, auth::create_token),
        route(
            Method::DELETE,
            "/tokens/{id}",
            Role::Admin,
            auth::revoke_token,
        ),
    ]
}

/// Every (method, path) the server answers, in the table's order.
pub fn routes() -> Vec<(Method, &'static str)> {
    route_table()
        .into_iter()
        .map(|entry| (entry.method, entry.path))
        .collect()
}

/// Every (method, path) with the role a token needs for it, in the table's order.
pub fn route_roles() -> Vec<(Method, &'static str, Role)> {
    route_table()
        .into_iter()
        .map(|entry| (entry.method, entry.path, entry.role))
        .collect()
}

/// The spec as JSON, for `/openapi.json`.
pub fn openapi_json() -> Result<Value, ServeError> {
    serde_yaml::from_str(OPENAPI_YAML).map_err(ServeError::OpenApi)
}

/// Counts the request under labels anyone can send but no one can multiply: the method from a
/// fixed set (else `other`), the route's template (else `unmatched`), the status class.
async fn record_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = metrics::method_label(request.method().as_str());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state.http_metrics.record(
        method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// How much of a client's method or path an error message repeats.
const ECHO_BYTES: usize = 512;

/// Errors the router makes itself, in the route family's JSON envelope like every other
/// answer: axum's extractor rejections (a path parameter that is not UTF-8 once decoded, …),
/// which it answers in plain text, and the 408 of a body that missed `body_read_timeout`
/// ([`listener::BodyDeadline`]), whatever the handler made of its failed read. Innermost, so
/// the metrics and the audit log see the status sent.
async fn uniform_errors(request: Request, next: Next) -> Response {
    let body_deadline = request.extensions().get::<BodyDeadline>().cloned();
    let envelope = Envelope::of_path(request.uri().path());
    let response = next.run(request).await;
    if let Some(deadline) = body_deadline.filter(BodyDeadline::missed) {
        return HttpError::new(
            ErrorCode::RequestTimeout,
            format!(
                "the request body did not arrive in full within {} s (`body_read_timeout`); \
                 the connection is closed",
                deadline.timeout().as_secs_f64()
            ),
        )
        .closing()
        .render(envelope);
    }
    if let Some(RenderedError(error)) = response.extensions().get::<RenderedError>() {
        // Rendered in Floe's envelope by the handler; spark-jobserver's routes answer in theirs.
        if envelope == Envelope::Floe {
            return response;
        }
        let mut answer = error.render(envelope);
        answer
            .extensions_mut()
            .insert(RenderedError(Arc::clone(error)));
        keep_headers(response.headers(), &mut answer);
        return answer;
    }
    let plain_text = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/plain"));
    if !(response.status().is_client_error() && plain_text) {
        return response;
    }
    let (parts, body) = response.into_parts();
    // A rejection's text is a line; a longer body is not buffered (the reason phrase stands in).
    let text = axum::body::to_bytes(body, 16 << 10)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_else(|_| {
            parts
                .status
                .canonical_reason()
                .unwrap_or("bad request")
                .to_owned()
        });
    let mut answer = HttpError::from_status(
        parts.status,
        crate::auth::audit::shorten(text.trim(), ECHO_BYTES),
    )
    .render(envelope);
    keep_headers(&parts.headers, &mut answer);
    answer
}

/// Copies the headers of an answer being replaced (`Retry-After`, `Connection`, …) onto its
/// replacement, except those that describe the old body.
fn keep_headers(from: &axum::http::HeaderMap, to: &mut Response) {
    for (name, value) in from {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            to.headers_mut().insert(name.clone(), value.clone());
        }
    }
}

/// The JSON answer for a request no route takes. Echoes at most [`ECHO_BYTES`] of the
/// method and of the path.
fn unrouted(code: ErrorCode, request: &Request, problem: &str) -> HttpError {
    use crate::auth::audit::shorten;
    HttpError::new(
        code,
        format!(
            "{} {} {problem} (see /openapi.json)",
            shorten(request.method().as_str(), ECHO_BYTES),
            shorten(request.uri().path(), ECHO_BYTES)
        ),
    )
}

async fn not_found(request: Request) -> HttpError {
    unrouted(ErrorCode::NotFound, &request, "has no route")
}

async fn method_not_allowed(request: Request) -> HttpError {
    unrouted(
        ErrorCode::MethodNotAllowed,
        &request,
        "is not allowed on this path",
    )
}

/// A handler's panic: a 500 whose details the request-id middleware logs and hides.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = crate::error::panic_message(panic.as_ref());
    tracing::error!(panic = %what, "a request handler panicked");
    HttpError::internal(format!("a request handler panicked: {what}")).into_response()
}

/// The router over `state`.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for RouteEntry {
        path,
        handler,
        upload,
        ..
    } in route_table()
    {
        let limit = if upload {
            state.config.max_upload_bytes
        } else {
            state.config.max_request_bytes
        };
        router = router.route(path, handler.layer(DefaultBodyLimit::max(limit)));
    }
    let routed = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(uniform_errors))
        // Inside the metrics layer, so refusals are counted; after routing, so the route's
        // template (and with it the role it needs) is known.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        // Outermost: every answer gets an id, a panic's included, and no 500 shows internals.
        .layer(middleware::from_fn(request_id::request_ids))
        .with_state(state);
    // Before routing, so the overridden method picks the route (and the role it needs).
    Router::new()
        .fallback_service(routed)
        .layer(middleware::from_fn(method_override))
}

/// spark-jobserver's method override, for proxies and clients that cannot send DELETE or PUT:
/// a POST whose query has `_method=DELETE` or `_method=PUT` (any case) is routed, authorised
/// and answered as that method. Any other `_method` leaves the POST as it is. `_method` is
/// the override's alone: it is taken out of the query the handlers read (a context's query
/// parameters are its settings).
async fn method_override(mut request: Request, next: Next) -> Response {
    let pairs = (request.method() == Method::POST)
        .then(|| request.uri().query())
        .flatten()
        .filter(|query| query.contains("_method="))
        .and_then(|query| serde_urlencoded::from_str::<Vec<(String, String)>>(query).ok());
    if let Some(pairs) = pairs {
        let (overrides, rest): (Vec<_>, Vec<_>) =
            pairs.into_iter().partition(|(key, _)| key == "_method");
        let method =
            overrides
                .iter()
                .find_map(|(_, value)| match value.to_ascii_uppercase().as_str() {
                    "DELETE" => Some(Method::DELETE),
                    "PUT" => Some(Method::PUT),
                    _ => None,
                });
        let query = serde_urlencoded::to_string(&rest).unwrap_or_default();
        let path = request.uri().path();
        let path_and_query = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        };
        let mut parts = request.uri().clone().into_parts();
        if let Ok(path_and_query) = path_and_query.parse() {
            parts.path_and_query = Some(path_and_query);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
        if let Some(method) = method {
            *request.method_mut() = method;
        }
    }
    next.run(request).await
}

/// Opens the store, loads the pipelines folder, recovers the job server and the scheduler, and
/// builds the state. Blocking.
pub fn build_state(
    config: ServerConfig,
    registry: JobRegistry,
    clock: Arc<dyn Clock>,
    runtime: tokio::runtime::Handle,
) -> Result<AppState, ServeError> {
    // A configuration built in code has not been through `ServerConfig::from_yaml`'s checks.
    config.check_limits().map_err(ServeError::Limits)?;
    // The join limit is read where SQL runs, deep in the job kinds: one setting per process.
    crate::sql_guard::set_max_join_rows(config.core.limits.max_join_rows);
    // Workers that cannot start stop the start before anything is opened or created.
    if config.core.workers.enabled {
        config.core.workers.program().map_err(ServeError::Workers)?;
    }
    // First: a tokens file that does not parse stops the start before the store opens.
    let http_metrics = Arc::new(metrics::HttpMetrics::default());
    let auth = auth::AuthState::open(&config, clock.clone(), http_metrics.audit_dropped.clone())
        .map_err(ServeError::Auth)?;
    let store = Store::open(&config.store).map_err(ServeError::Store)?;
    let data_files = Arc::new(
        DataFiles::open(
            &config.data_files.dir_for(&config.store),
            DataFileBounds {
                max_files: config.data_files.max_files,
                max_total_bytes: config.data_files.max_total_bytes,
                max_file_bytes: config.max_upload_bytes as u64,
            },
        )
        .map_err(ServeError::DataFiles)?,
    );
    // Uploaded data files are for the jobs that name them, never for a source's glob.
    for root in std::iter::once(&config.data_dir)
        .chain(&config.core.data_roots)
        .chain(&config.core.operator_data_roots)
    {
        let Ok(root) = std::fs::canonicalize(root) else {
            continue; // a root that does not exist holds nothing
        };
        let dir = data_files.dir();
        if dir.starts_with(&root) || root.starts_with(dir) {
            return Err(ServeError::DataFiles(
                crate::data_files::DataDirError::OverlapsDataRoot {
                    path: dir.to_path_buf(),
                    root,
                },
            ));
        }
    }
    let materializer = Materializer::new(
        store,
        Arc::new(ResultCache::new(config.result_cache_bytes)),
        config.data_dir.clone(),
        clock.clone(),
    )
    .with_data_roots(Arc::new(DataRoots::new(
        &config.data_dir,
        &config.core.data_roots,
    )))
    .with_data_files(data_files.clone());
    // Partition runs compute in worker processes, one run each, when contexts do.
    let materializer = if config.core.workers.enabled && config.core.workers.runs {
        let pool = crate::jobserver::workers::runs_pool(
            &config.core.workers,
            config.scheduler.workers,
            &config.core.limits,
        )
        .map_err(ServeError::Workers)?;
        materializer.with_engine(Arc::new(crate::engine::worker::WorkerEngine::new(
            pool,
            config.core.workers.kill_grace,
        )))
    } else {
        materializer
    };
    // Each file read and parsed once, here; the catalog stores the text it was parsed from.
    let folder = if config.pipelines.is_dir() {
        crate::pipeline::load_dir_with_texts(&config.pipelines, &registry)
            .map_err(ServeError::Pipelines)?
    } else {
        tracing::warn!(folder = %config.pipelines.display(), "pipeline folder not found; starting without pipelines");
        Vec::new()
    };
    let store = materializer.store().clone();
    let core = JobServer::new(
        materializer.clone(),
        registry,
        clock.clone(),
        config.core.clone(),
        runtime,
    );
    core.recover(folder, &config.contexts)
        .map_err(ServeError::Recovery)?;
    let pipelines = core
        .catalog
        .all()
        .into_iter()
        .map(|app| app.pipeline.clone())
        .collect();
    let scheduler = Scheduler::start(
        store,
        materializer,
        clock,
        config.scheduler.clone(),
        pipelines,
    )
    .map_err(ServeError::Scheduler)?;
    // From now on every upload, replacement and deletion reaches the scheduler.
    core.catalog.subscribe(Arc::new(scheduler.clone()));
    // Pipeline jobs run their partitions through it, as every other run.
    core.attach_scheduler(scheduler.clone());
    // Only now: the scheduler's recovery has requeued the runs left Running by the previous
    // process, so the runs these re-runs mark Running are not mistaken for interrupted ones.
    core.resolve_interrupted_jobs()
        .map_err(ServeError::Recovery)?;
    let openapi = openapi_json()?;
    Ok(AppState {
        core,
        scheduler,
        config: Arc::new(config),
        http_metrics,
        openapi: Arc::new(openapi),
        auth: Arc::new(auth),
        data_files,
        context_resets: Arc::default(),
        data_resets: Arc::default(),
    })
}

/// The CORS layer of `config`, allowing the methods of the route table and the headers
/// clients send; `None` when no origin is allowed, so no CORS header is ever sent.
fn cors_layer(config: &config::CorsConfig) -> Result<Option<CorsLayer>, ServeError> {
    let origins = &config.allowed_origins;
    if origins.is_empty() {
        return Ok(None);
    }
    config::check_cors_origins(origins).map_err(ServeError::CorsOrigins)?;
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|origin| {
                HeaderValue::from_str(origin).map_err(|source| ServeError::CorsHeader {
                    origin: origin.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(values)
    };
    let mut methods: Vec<Method> = Vec::new();
    for (method, _) in routes() {
        if !methods.contains(&method) {
            methods.push(method);
        }
    }
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods(methods)
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                request_id::REQUEST_ID,
            ])
            .expose_headers([request_id::REQUEST_ID]),
    ))
}

/// Serves `state` on `listener` until `shutdown` resolves, then finishes or records the
/// in-flight jobs (see [`JobServer::shutdown`]). With `tls` in the configuration it serves
/// HTTPS, its certificate read once here (see [`serve_on_with_tls`] to keep a handle).
pub async fn serve_on(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let tls = match &state.config.tls {
        Some(files) => {
            Some(TlsCertificates::load(&files.cert, &files.key).map_err(ServeError::Tls)?)
        }
        None => None,
    };
    serve_on_with_tls(listener, state, tls, shutdown).await
}

/// [`serve_on`] with TLS certificates the caller loaded, and keeps to reload them
/// ([`TlsCertificates::reload`]); `None` serves plain HTTP.
pub async fn serve_on_with_tls(
    listener: TcpListener,
    state: AppState,
    tls: Option<TlsCertificates>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let core = state.core.clone();
    let scheduler = state.scheduler.clone();
    let grace = state.config.shutdown_grace;
    let edge = EdgeSettings {
        max_connections: state.config.max_connections,
        max_connections_per_client: state.config.effective_max_connections_per_client(),
        header_read_timeout: state.config.header_read_timeout,
        idle_timeout: state.config.idle_timeout,
        body_read_timeout: state.config.body_read_timeout,
        shutdown_grace: grace,
    };
    let cors = cors_layer(&state.config.cors)?;
    let mut app = router(state);
    if let Some(cors) = cors {
        // Around the whole router, not inside it: a preflight is answered before routing
        // (and before the method-not-allowed fallback) looks at it.
        app = Router::new().fallback_service(app).layer(cors);
    }
    let driver = scheduler
        .spawn_driver()
        .map_err(ServeError::SchedulerThread)?;
    let triggers = scheduler::start_triggers(&scheduler).await;
    serve_edge(listener, app, edge, tls, shutdown).await;
    if let Some(mut triggers) = triggers {
        let _ = triggers.shutdown().await;
    }
    tokio::task::spawn_blocking(move || {
        scheduler.shutdown(grace);
        let _ = driver.join();
        core.shutdown(grace);
    })
    .await
    .map_err(ServeError::Shutdown)?;
    info!("server stopped");
    Ok(())
}

/// `floe serve`: binds, serves until Ctrl-C or SIGTERM.
pub async fn serve(config: ServerConfig, registry: JobRegistry) -> Result<(), ServeError> {
    // Before anything opens: never expose a server without authentication by mistake.
    auth::check_startup(&config, SystemClock.now())?;
    let bind = config.bind;
    let tls = match &config.tls {
        Some(files) => {
            Some(TlsCertificates::load(&files.cert, &files.key).map_err(ServeError::Tls)?)
        }
        None => None,
    };
    let runtime = tokio::runtime::Handle::current();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state = tokio::task::spawn_blocking(move || build_state(config, registry, clock, runtime))
        .await
        .map_err(ServeError::StartupPanicked)??;
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|source| ServeError::Listen { bind, source })?;
    let local: SocketAddr = listener.local_addr().map_err(ServeError::LocalAddress)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(address = %local, scheme, "floe job server listening");
    eprintln!("floe serve: listening on {scheme}://{local}");
    // SIGHUP reloads the certificate (the same `reload` the tests call); without TLS, SIGHUP
    // keeps its default action.
    #[cfg(unix)]
    let reloader = match &tls {
        Some(tls) => Some(reload_on_sighup(tls.clone()).map_err(ServeError::Sighup)?),
        None => None,
    };
    let served = serve_on_with_tls(listener, state, tls, shutdown_signal()).await;
    #[cfg(unix)]
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    served
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    info!("shutdown requested");
}
