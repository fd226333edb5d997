//! `floe serve`: the HTTP face of the job server (axum on tokio).
//!
//! Owns the routes, their table (so a test can hold them against `api/openapi.yaml`), request
//! metrics, body limits, and start-up and graceful shutdown. The work itself is in
//! [`crate::jobserver`]; handlers parse, call it, and shape answers. Blocking work (polars,
//! reading large results) runs on blocking threads, never on the async workers.

pub mod config;
mod floe;
pub mod hocon;
mod http;
pub mod metrics;
mod schedule;
mod sjs;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter, on};
use serde_json::Value;
use tokio::net::TcpListener;
use tracing::info;

use crate::clock::{Clock, SystemClock};
use crate::engine::ResultCache;
use crate::error::error_chain;
use crate::job::JobRegistry;
use crate::jobserver::JobServer;
use crate::materialize::Materializer;
use crate::scheduler::{self, Scheduler};
use crate::store::Store;

pub use config::ServerConfig;

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
}

/// A route: method, path template, and whether it takes uploads (the larger body limit).
type RouteEntry = (Method, &'static str, MethodRouter<AppState>, bool);

/// One route; the method filter is derived from `method`, so the table cannot list one method
/// and route another.
fn route<H, T>(method: Method, path: &'static str, handler: H) -> RouteEntry
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone())
        .unwrap_or_else(|_| panic!("route table: no method filter for {method}"));
    (method, path, on(filter, handler), false)
}

fn route_table() -> Vec<RouteEntry> {
    let upload = |(method, path, handler, _): RouteEntry| (method, path, handler, true);
    vec![
        route(Method::GET, "/binaries", sjs::list_binaries),
        route(Method::GET, "/binaries/{app}", sjs::get_binary),
        upload(route(Method::POST, "/binaries/{app}", sjs::upload_binary)),
        route(Method::DELETE, "/binaries/{app}", sjs::delete_binary),
        route(Method::GET, "/contexts", sjs::list_contexts),
        route(Method::GET, "/contexts/{name}", sjs::get_context),
        route(Method::POST, "/contexts/{name}", sjs::create_context),
        route(Method::DELETE, "/contexts/{name}", sjs::delete_context),
        route(Method::GET, "/jobs", sjs::list_jobs),
        route(Method::POST, "/jobs", sjs::submit_job),
        route(Method::GET, "/jobs/{id}", sjs::get_job),
        route(Method::DELETE, "/jobs/{id}", sjs::kill_job),
        route(Method::GET, "/jobs/{id}/config", sjs::get_job_config),
        route(Method::GET, "/pipelines", floe::list_pipelines),
        route(Method::GET, "/pipelines/{pipeline}", floe::get_pipeline),
        route(Method::GET, "/pipelines/{pipeline}/runs", floe::list_runs),
        route(Method::POST, "/pipelines/{pipeline}/runs", floe::start_run),
        route(
            Method::GET,
            "/pipelines/{pipeline}/schedule",
            schedule::get_schedule,
        ),
        route(
            Method::POST,
            "/pipelines/{pipeline}/pause",
            schedule::pause_pipeline,
        ),
        route(
            Method::POST,
            "/pipelines/{pipeline}/resume",
            schedule::resume_pipeline,
        ),
        route(
            Method::GET,
            "/pipelines/{pipeline}/backfills",
            schedule::list_backfills,
        ),
        route(
            Method::POST,
            "/pipelines/{pipeline}/backfills",
            schedule::start_backfill,
        ),
        route(
            Method::POST,
            "/pipelines/{pipeline}/restatements",
            schedule::start_restatement,
        ),
        route(Method::GET, "/backfills/{id}", schedule::get_backfill),
        route(
            Method::POST,
            "/backfills/{id}/pause",
            schedule::pause_backfill,
        ),
        route(
            Method::POST,
            "/backfills/{id}/resume",
            schedule::resume_backfill,
        ),
        route(
            Method::POST,
            "/backfills/{id}/cancel",
            schedule::cancel_backfill,
        ),
        route(Method::GET, "/scheduler", schedule::scheduler_summary),
        route(
            Method::GET,
            "/pipelines/{pipeline}/jobs/{job}/results",
            floe::job_results,
        ),
        route(Method::POST, "/query", floe::query),
        route(Method::GET, "/healthz", floe::healthz),
        route(Method::GET, "/readyz", floe::readyz),
        route(Method::GET, "/metrics", floe::metrics),
        route(Method::GET, "/openapi.json", floe::openapi),
    ]
}

/// Every (method, path) the server answers, in the table's order.
pub fn routes() -> Vec<(Method, &'static str)> {
    route_table()
        .into_iter()
        .map(|(method, path, _, _)| (method, path))
        .collect()
}

/// The spec as JSON, for `/openapi.json`.
pub fn openapi_json() -> Result<Value, String> {
    serde_yaml::from_str(OPENAPI_YAML).map_err(|e| format!("api/openapi.yaml: {e}"))
}

async fn record_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state.http_metrics.record(
        method.as_str(),
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The JSON answer for a request no route takes.
fn unrouted(status: StatusCode, request: &Request, problem: &str) -> Response {
    http::sjs_error(
        status,
        format!(
            "{} {} {problem} (see /openapi.json)",
            request.method(),
            request.uri().path()
        ),
    )
}

async fn not_found(request: Request) -> Response {
    unrouted(StatusCode::NOT_FOUND, &request, "has no route")
}

async fn method_not_allowed(request: Request) -> Response {
    unrouted(
        StatusCode::METHOD_NOT_ALLOWED,
        &request,
        "is not allowed on this path",
    )
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = crate::error::panic_message(panic.as_ref());
    tracing::error!(panic = %what, "a request handler panicked");
    http::sjs_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("internal error: {what}"),
    )
}

/// The router over `state`.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for (_, path, handler, upload) in route_table() {
        let limit = if upload {
            state.config.max_upload_bytes
        } else {
            state.config.max_request_bytes
        };
        router = router.route(path, handler.layer(DefaultBodyLimit::max(limit)));
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .with_state(state)
}

/// Opens the store, loads the pipelines folder and builds the state. Blocking.
pub fn build_state(
    config: ServerConfig,
    registry: JobRegistry,
    clock: Arc<dyn Clock>,
    runtime: tokio::runtime::Handle,
) -> Result<AppState, String> {
    let store = Store::open(&config.store).map_err(|e| error_chain(&e))?;
    let materializer = Materializer::new(
        store,
        Arc::new(ResultCache::new(config.result_cache_bytes)),
        config.data_dir.clone(),
        clock.clone(),
    );
    let pipelines = if config.pipelines.is_dir() {
        crate::pipeline::load_dir(&config.pipelines, &registry).map_err(|e| e.to_string())?
    } else {
        tracing::warn!(folder = %config.pipelines.display(), "pipeline folder not found; starting without pipelines");
        Vec::new()
    };
    let mut files = Vec::new();
    for pipeline in pipelines {
        let bytes = std::fs::read(&pipeline.file)
            .map_err(|e| format!("cannot read {}: {e}", pipeline.file.display()))?;
        files.push((pipeline.name.clone(), bytes));
    }
    let store = materializer.store().clone();
    let core = JobServer::new(
        materializer.clone(),
        registry,
        clock.clone(),
        config.core.clone(),
        runtime,
    );
    core.recover(&files, &config.contexts)?;
    let pipelines = core
        .apps
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
    .map_err(|e| error_chain(&e))?;
    // Only now: the scheduler's recovery has requeued the runs left Running by the previous
    // process, so the runs these re-runs mark Running are not mistaken for interrupted ones.
    core.resolve_interrupted_jobs()?;
    let openapi = openapi_json()?;
    Ok(AppState {
        core,
        scheduler,
        config: Arc::new(config),
        http_metrics: Arc::new(metrics::HttpMetrics::default()),
        openapi: Arc::new(openapi),
    })
}

/// Serves `state` on `listener` until `shutdown` resolves, then finishes or records the
/// in-flight jobs (see [`JobServer::shutdown`]).
pub async fn serve_on(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let core = state.core.clone();
    let scheduler = state.scheduler.clone();
    let grace = state.config.shutdown_grace;
    let driver = scheduler
        .spawn_driver()
        .map_err(|e| format!("cannot start the scheduler: {e}"))?;
    let triggers = scheduler::start_triggers(&scheduler).await;
    let app = router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| format!("server error: {e}"))?;
    if let Some(mut triggers) = triggers {
        let _ = triggers.shutdown().await;
    }
    tokio::task::spawn_blocking(move || {
        scheduler.shutdown(grace);
        let _ = driver.join();
        core.shutdown(grace);
    })
    .await
    .map_err(|e| format!("shutdown failed: {e}"))?;
    info!("server stopped");
    Ok(())
}

/// `floe serve`: binds, serves until Ctrl-C or SIGTERM.
pub async fn serve(config: ServerConfig, registry: JobRegistry) -> Result<(), String> {
    let bind = config.bind;
    let runtime = tokio::runtime::Handle::current();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state = tokio::task::spawn_blocking(move || build_state(config, registry, clock, runtime))
        .await
        .map_err(|e| format!("start-up failed: {e}"))??;
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|e| format!("cannot listen on {bind}: {e}"))?;
    let local: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    info!(address = %local, "floe job server listening");
    eprintln!("floe serve: listening on http://{local}");
    serve_on(listener, state, shutdown_signal()).await
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
