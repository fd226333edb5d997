//! A real `floe serve` on 127.0.0.1:0, for the HTTP tests: [`Serving`] starts and stops one
//! from a configuration; [`TestServer`] is one over a sample world with a manual clock.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use floe::clock::{Clock, ManualClock};
use floe::job::JobRegistry;
use floe::scheduler::Scheduler;
use floe::server::{
    AppState, ServerConfig, TlsCertificates, build_state, serve_on, serve_on_with_tls,
};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;

use super::{SampleWorld, repo_path, utc};

/// A test server's configuration: `pipelines`, and the data and the store in `dir`, with a
/// short shutdown grace and no recurring runs (they would materialise the pipelines behind the
/// tests' backs).
pub(crate) fn test_config(pipelines: &Path, data_dir: &Path, store: &Path) -> ServerConfig {
    let mut config = ServerConfig {
        pipelines: pipelines.to_path_buf(),
        data_dir: data_dir.to_path_buf(),
        store: store.to_path_buf(),
        ..ServerConfig::default()
    };
    config.shutdown_grace = Duration::from_millis(200);
    config.scheduler.recurring = false;
    // Contexts run in worker processes, as under `floe serve`: started from the `floe`
    // binary (this test binary is not one).
    config.core.workers.executable = Some(env!("CARGO_BIN_EXE_floe").into());
    config
}

/// A server started from a configuration on an ephemeral port, until [`Serving::stop`].
pub(crate) struct Serving {
    pub(crate) address: SocketAddr,
    pub(crate) state: AppState,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<Result<(), floe::server::ServeError>>>,
}

impl Serving {
    /// Builds the state on a blocking thread (it opens the store) and serves it, over HTTPS
    /// with `tls` when given (else as the configuration says, as `floe serve` does).
    pub(crate) async fn start(
        config: ServerConfig,
        clock: Arc<dyn Clock>,
        tls: Option<TlsCertificates>,
    ) -> Serving {
        Serving::start_with_registry(config, JobRegistry::new(), clock, tls).await
    }

    /// [`Serving::start`] with the Rust job classes of `registry`.
    pub(crate) async fn start_with_registry(
        config: ServerConfig,
        registry: JobRegistry,
        clock: Arc<dyn Clock>,
        tls: Option<TlsCertificates>,
    ) -> Serving {
        let runtime = tokio::runtime::Handle::current();
        let state: AppState =
            tokio::task::spawn_blocking(move || build_state(config, registry, clock, runtime))
                .await
                .unwrap()
                .expect("server state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = async {
            let _ = stopped.await;
        };
        let done = match tls {
            Some(tls) => tokio::spawn(serve_on_with_tls(
                listener,
                state.clone(),
                Some(tls),
                stopped,
            )),
            None => tokio::spawn(serve_on(listener, state.clone(), stopped)),
        };
        Serving {
            address,
            state,
            stop: Some(stop),
            done: Some(done),
        }
    }

    pub(crate) fn base(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Graceful shutdown; returns once the store is flushed and released.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            done.await.unwrap().unwrap();
        }
    }
}

/// A running server over a sample world, with a manual clock.
pub(crate) struct TestServer {
    pub(crate) base: String,
    serving: Serving,
    pub(crate) client: reqwest::Client,
    /// The server's clock: tests move time by hand, then wake the scheduler.
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) scheduler: Scheduler,
}

impl TestServer {
    pub(crate) async fn start(
        world: &SampleWorld,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        TestServer::start_at(world, utc(2024, 2, 1, 0), tweak).await
    }

    /// A server with the Rust job classes of `registry`.
    pub(crate) async fn start_with_registry(
        world: &SampleWorld,
        registry: JobRegistry,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        TestServer::start_inner(world, utc(2024, 2, 1, 0), registry, tweak).await
    }

    /// A server whose manual clock starts at `now`.
    pub(crate) async fn start_at(
        world: &SampleWorld,
        now: chrono::DateTime<chrono::Utc>,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        TestServer::start_inner(world, now, JobRegistry::new(), tweak).await
    }

    async fn start_inner(
        world: &SampleWorld,
        now: chrono::DateTime<chrono::Utc>,
        registry: JobRegistry,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let mut config = test_config(
            &repo_path("pipelines"),
            &world.data_dir(),
            &world.store_dir(),
        );
        tweak(&mut config);
        let clock = Arc::new(ManualClock::new(now));
        let serving = Serving::start_with_registry(config, registry, clock.clone(), None).await;
        TestServer {
            base: serving.base(),
            scheduler: serving.state.scheduler.clone(),
            serving,
            client: reqwest::Client::new(),
            clock,
        }
    }

    /// Graceful shutdown; returns once the store is flushed and released.
    pub(crate) async fn stop(self) {
        self.serving.stop().await;
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn post(&self, path: &str, body: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url(path))
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let response = self.client.delete(self.url(path)).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Moves the clock to `now`, lets the scheduler plan and dispatch what is due, and waits
    /// until every run it started has finished.
    pub(crate) async fn tick_until_idle(&self, now: chrono::DateTime<chrono::Utc>) {
        self.clock.set(now);
        let scheduler = self.scheduler.clone();
        let idle = tokio::task::spawn_blocking(move || {
            scheduler.tick(now);
            scheduler.wait_idle(Duration::from_secs(60))
        })
        .await
        .unwrap();
        assert!(idle, "the scheduler did not go idle");
    }

    /// Polls a backfill until it is finished or cancelled.
    pub(crate) async fn wait_backfill(&self, id: &str) -> Value {
        for _ in 0..3000 {
            let (status, backfill) = self.get(&format!("/backfills/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{backfill}");
            if ["finished", "cancelled"].contains(&text(&backfill["state"])) {
                return backfill;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("backfill {id} did not finish");
    }

    /// The runs of one job in [from, to), as the REST API lists them.
    pub(crate) async fn runs(&self, job: &str, from: &str, to: &str) -> Vec<Value> {
        let (status, runs) = self
            .get(&format!(
                "/pipelines/shop/runs?job={job}&from={from}&to={to}"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{runs}");
        runs.as_array().cloned().unwrap_or_default()
    }

    /// Uploads `yaml` as app `app` (`POST /binaries/{app}`, as YAML).
    pub(crate) async fn upload(&self, app: &str, yaml: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url(&format!("/binaries/{app}")))
            .header("content-type", "application/yaml")
            .body(yaml.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls a job until it is final.
    pub(crate) async fn wait_final(&self, id: &str) -> Value {
        for _ in 0..3000 {
            let (status, report) = self.get(&format!("/jobs/{id}?limit=1000")).await;
            assert_eq!(status, StatusCode::OK, "{report}");
            if ["FINISHED", "ERROR", "KILLED"].contains(&text(&report["status"])) {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("job {id} did not finish");
    }
}

/// A JSON string value, or a test failure naming what it was instead.
pub(crate) fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a JSON string, found {value}"))
}
