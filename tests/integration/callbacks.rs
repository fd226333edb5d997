//! `callbackUrl` over real HTTP: a `floe serve` on 127.0.0.1:0 posts job ends to a small axum
//! receiver on 127.0.0.1:0 that records what it gets and answers as each test scripts it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus, Uri};
use floe::clock::ManualClock;
use floe::server::ServerConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::server::{Serving, test_config, text};
use crate::common::{SampleWorld, repo_path, utc};

/// A pipeline run over the sample week: long enough to kill or to time out.
const LONG_RUN: &str = r#"from = "2024-01-01", to = "2024-01-08", force = true"#;

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    content_type: String,
    body: Value,
    at: Instant,
}

#[derive(Clone, Default)]
struct Script {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Statuses to answer, in order; then `then`.
    answers: Arc<Mutex<VecDeque<u16>>>,
    then: u16,
}

/// The receiver: an axum server on 127.0.0.1:0 that records every request and answers from
/// its script.
struct Receiver {
    address: SocketAddr,
    script: Script,
    task: tokio::task::JoinHandle<()>,
}

async fn record(
    State(script): State<Script>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> AxumStatus {
    let seen = Seen {
        path: uri.path().to_owned(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        at: Instant::now(),
    };
    script.seen.lock().unwrap().push(seen);
    let status = script
        .answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(script.then);
    AxumStatus::from_u16(status).unwrap()
}

impl Receiver {
    async fn start(answers: &[u16], then: u16) -> Receiver {
        let script = Script {
            seen: Arc::default(),
            answers: Arc::new(Mutex::new(answers.iter().copied().collect())),
            then,
        };
        let app = axum::Router::new()
            .fallback(record)
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            address,
            script,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn seen(&self) -> Vec<Seen> {
        self.script.seen.lock().unwrap().clone()
    }

    /// The POSTs to `path`, once there are `n` of them.
    async fn wait_for(&self, path: &str, n: usize) -> Vec<Seen> {
        for _ in 0..2000 {
            let seen: Vec<Seen> = self.seen().into_iter().filter(|s| s.path == path).collect();
            if seen.len() >= n {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{path}: expected {n} callbacks, got {:?}", self.seen());
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A server over `world` with `callbacks` (YAML, as in the configuration file).
async fn serve(world: &SampleWorld, store: &Path, callbacks: &str) -> Serving {
    let mut config = test_config(&repo_path("pipelines"), &world.data_dir(), store);
    config.core.callbacks = ServerConfig::from_yaml(callbacks, Path::new("floe-server.yaml"))
        .expect("the callbacks configuration")
        .core
        .callbacks;
    Serving::start(config, Arc::new(ManualClock::new(utc(2024, 2, 1, 0))), None).await
}

/// `POST /jobs` with `query` (URL-encoded by reqwest) and a HOCON body.
async fn submit(serving: &Serving, query: &[(&str, &str)], body: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/jobs", serving.base()))
        .query(query)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until the server has no callback delivery left (each delivered or given up).
async fn until_no_callback_pending(serving: &Serving) {
    for _ in 0..2000 {
        if serving.state.core.pending_callbacks() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("callbacks still pending");
}

async fn wait_final(serving: &Serving, id: &str) -> Value {
    let client = reqwest::Client::new();
    for _ in 0..3000 {
        let report: Value = client
            .get(format!("{}/jobs/{id}", serving.base()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ["FINISHED", "ERROR", "KILLED"].contains(&text(&report["status"])) {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {id} did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_posts_its_end_to_its_callback_url_unless_killed() {
    let world = SampleWorld::new(2_000, 7);
    let hook = Receiver::start(&[], 200).await;
    let serving = serve(
        &world,
        &world.store_dir(),
        &format!(
            "callbacks:\n  allowed_urls: ['{}']\n  retry_interval: 50ms\n  timeout: 5s\n  \
             max_body_bytes: 64\n",
            hook.url("/hooks")
        ),
    )
    .await;

    // Async: spark-jobserver's body, with the status Floe's sync answer has too.
    let (status, report) = submit(
        &serving,
        &[
            ("classPath", "sql"),
            ("callbackUrl", &hook.url("/hooks/async")),
        ],
        r#"query = "SELECT 1 AS one""#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{report}");
    let id = text(&report["jobId"]).to_owned();
    let seen = hook.wait_for("/hooks/async", 1).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].content_type, "application/json");
    assert_eq!(
        seen[0].body,
        json!({"jobId": id, "status": "FINISHED", "result": [{"one": 1}]})
    );

    // Sync: the callback says what the answer said.
    let (status, answer) = submit(
        &serving,
        &[
            ("classPath", "sql"),
            ("sync", "true"),
            ("callbackUrl", &hook.url("/hooks/sync")),
        ],
        r#"query = "SELECT 2 AS two""#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let seen = hook.wait_for("/hooks/sync", 1).await;
    assert_eq!(seen[0].body, answer);
    assert_eq!(seen[0].body["result"], json!([{"two": 2}]));

    // A job that fails while running: the ERROR body, as the sync answer has it.
    let (status, answer) = submit(
        &serving,
        &[
            ("classPath", "CountDistinct"),
            ("sync", "true"),
            ("callbackUrl", &hook.url("/hooks/error")),
        ],
        "input = missing\ncolumn = user_id",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "ERROR", "{answer}");
    let seen = hook.wait_for("/hooks/error", 1).await;
    assert_eq!(seen[0].body, answer);
    assert_eq!(
        seen[0].body["result"]["errorClass"],
        "floe.NamedObjectNotFound"
    );
    for key in ["message", "errorClass", "stack"] {
        assert!(seen[0].body["result"][key].is_string(), "{key}: {answer}");
    }

    // Rows over `max_body_bytes`: a placeholder pointing at the result.
    let (status, answer) = submit(
        &serving,
        &[
            ("classPath", "sql"),
            ("sync", "true"),
            ("callbackUrl", &hook.url("/hooks/large")),
        ],
        r#"query = "SELECT 'far more than sixty-four bytes of JSON, once it is written out' AS s""#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let id = text(&answer["jobId"]).to_owned();
    let seen = hook.wait_for("/hooks/large", 1).await;
    assert_eq!(
        seen[0].body,
        json!({"jobId": id, "status": "FINISHED", "result": format!("<result of 1 row: GET /jobs/{id}>")})
    );

    // Stopped by its execution timeout: ERROR, so posted.
    let (status, report) = submit(
        &serving,
        &[
            ("appName", "shop"),
            ("classPath", "floe.PipelineRun"),
            ("callbackUrl", &hook.url("/hooks/timeout")),
        ],
        &format!("{LONG_RUN}\njob-timeout = 0.2s"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{report}");
    let id = text(&report["jobId"]).to_owned();
    let seen = hook.wait_for("/hooks/timeout", 1).await;
    assert_eq!(seen[0].body["jobId"], id.as_str());
    assert_eq!(seen[0].body["status"], "ERROR");
    assert_eq!(seen[0].body["result"]["errorClass"], "floe.JobTimeout");

    // Killed: no callback, as in spark-jobserver.
    let (status, report) = submit(
        &serving,
        &[
            ("appName", "shop"),
            ("classPath", "floe.PipelineRun"),
            ("callbackUrl", &hook.url("/hooks/killed")),
        ],
        LONG_RUN,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{report}");
    let id = text(&report["jobId"]).to_owned();
    let killed = reqwest::Client::new()
        .delete(format!("{}/jobs/{id}", serving.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(killed.status(), StatusCode::OK);
    assert_eq!(wait_final(&serving, &id).await["status"], "KILLED");
    // A callback would have been queued when the kill finalised the job.
    until_no_callback_pending(&serving).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        hook.seen().iter().all(|s| s.path != "/hooks/killed"),
        "{:?}",
        hook.seen()
    );
    // One POST per job ended.
    assert_eq!(hook.seen().len(), 5, "{:?}", hook.seen());
    serving.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_callback_is_posted_again_until_taken_or_given_up() {
    let world = SampleWorld::new(2_000, 1);
    let flaky = Receiver::start(&[500, 500], 200).await;
    let down = Receiver::start(&[], 503).await;
    let moved = Receiver::start(&[], 307).await;
    let interval = Duration::from_millis(100);
    let serving = serve(
        &world,
        &world.store_dir(),
        &format!(
            "callbacks:\n  allowed_urls: ['{}', '{}', '{}']\n  attempts: 4\n  \
             retry_interval: 100ms\n  timeout: 5s\n",
            flaky.url("/"),
            down.url("/"),
            moved.url("/"),
        ),
    )
    .await;
    for receiver in [&flaky, &down, &moved] {
        let (status, report) = submit(
            &serving,
            &[
                ("classPath", "sql"),
                ("callbackUrl", &receiver.url("/hook")),
            ],
            r#"query = "SELECT 1 AS one""#,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{report}");
    }
    // 500, 500, then taken: three POSTs of the same body, `retry_interval` apart, no fourth.
    let seen = flaky.wait_for("/hook", 3).await;
    assert!(seen.iter().all(|s| s.body == seen[0].body));
    assert_eq!(seen[0].body["result"], json!([{"one": 1}]));
    for pair in seen.windows(2) {
        assert!(pair[1].at - pair[0].at >= interval, "{pair:?}");
    }
    // Always 503: `attempts` POSTs, then given up.
    let seen = down.wait_for("/hook", 4).await;
    assert!(seen.iter().all(|s| s.body == seen[0].body));
    until_no_callback_pending(&serving).await;
    tokio::time::sleep(interval * 3).await;
    assert_eq!(flaky.seen().len(), 3, "{:?}", flaky.seen());
    assert_eq!(down.seen().len(), 4, "{:?}", down.seen());
    // A redirect is not followed, nor posted again.
    assert_eq!(moved.seen().len(), 1, "{:?}", moved.seen());
    serving.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_url_outside_the_allow_list_is_refused_with_400() {
    let world = SampleWorld::new(2_000, 1);
    let hook = Receiver::start(&[], 200).await;
    let port = hook.address.port();
    let serving = serve(
        &world,
        &world.store_dir(),
        &format!("callbacks:\n  allowed_urls: ['{}']\n", hook.url("/hooks")),
    )
    .await;
    let refused = [
        (format!("http://127.0.0.2:{port}/hooks"), "is not allowed"),
        (format!("http://localhost:{port}/hooks"), "is not allowed"),
        (
            format!("http://127.0.0.1:{}/hooks", port.wrapping_add(1)),
            "is not allowed",
        ),
        ("http://127.0.0.1/hooks".to_owned(), "is not allowed"),
        (format!("https://127.0.0.1:{port}/hooks"), "is not allowed"),
        (format!("http://127.0.0.1:{port}/hooksx"), "is not allowed"),
        (
            format!("http://127.0.0.1:{port}/hooks.evil"),
            "is not allowed",
        ),
        (
            format!("http://127.0.0.1:{port}/hooks/../admin"),
            "is not allowed",
        ),
        (
            format!("http://127.0.0.1:{port}/hooks/%2e%2e/admin"),
            "is not allowed",
        ),
        (
            format!("http://127.0.0.1:{port}/hooks/..%2fadmin"),
            "encoded `/`",
        ),
        (
            format!("http://user:secret@127.0.0.1:{port}/hooks"),
            "user name or password",
        ),
        (format!("ftp://127.0.0.1:{port}/hooks"), "http or https"),
        ("file:///etc/passwd".to_owned(), "http or https"),
        (
            "gopher://127.0.0.1:6379/_FLUSHALL".to_owned(),
            "http or https",
        ),
        ("//127.0.0.1/hooks".to_owned(), "is not a URL"),
        ("not a url".to_owned(), "is not a URL"),
    ];
    for (url, why) in &refused {
        for sync in ["false", "true"] {
            let (status, body) = submit(
                &serving,
                &[("classPath", "sql"), ("sync", sync), ("callbackUrl", url)],
                r#"query = "SELECT 1 AS one""#,
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
            assert_eq!(body["status"], "ERROR", "{url}: {body}");
            let message = text(&body["result"]);
            assert!(message.contains("`callbackUrl`"), "{url}: {message}");
            assert!(message.contains(why), "{url}: {message}");
        }
    }
    // The message the OpenAPI document shows.
    let (_, body) = submit(
        &serving,
        &[
            ("classPath", "sql"),
            ("callbackUrl", "http://10.0.0.5/admin"),
        ],
        r#"query = "SELECT 1 AS one""#,
    )
    .await;
    assert_eq!(
        body["result"],
        "`callbackUrl` `http://10.0.0.5/admin` is not allowed: no URL of the server's \
         `callbacks.allowed_urls` has its scheme, host and port and a path it falls under"
    );
    // Refused before the job exists.
    let jobs: Value = reqwest::get(format!("{}/jobs", serving.base()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jobs, json!([]));
    // Under the allowed URL: taken (the host's case and the default path forms do not matter).
    for url in [
        hook.url("/hooks"),
        hook.url("/hooks/"),
        hook.url("/hooks/job?token=t"),
        format!("HTTP://127.0.0.1:{port}/hooks/a/../b"),
    ] {
        let (status, body) = submit(
            &serving,
            &[("classPath", "sql"), ("callbackUrl", &url)],
            r#"query = "SELECT 1 AS one""#,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{url}: {body}");
    }
    // The four jobs finish in any order (each ad-hoc job has a worker process of its own):
    // each one's callback is waited for, then nothing more may come.
    for path in ["/hooks", "/hooks/", "/hooks/job", "/hooks/b"] {
        assert_eq!(hook.wait_for(path, 1).await.len(), 1, "{path}");
    }
    until_no_callback_pending(&serving).await;
    assert_eq!(hook.seen().len(), 4, "{:?}", hook.seen());
    serving.stop().await;

    // Without `callbacks.allowed_urls` (the default), every callback URL is refused, naming it.
    let store = tempfile::tempdir().unwrap();
    let serving = serve(&world, store.path(), "").await;
    let (status, body) = submit(
        &serving,
        &[("classPath", "sql"), ("callbackUrl", &hook.url("/hooks"))],
        r#"query = "SELECT 1 AS one""#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body,
        json!({
            "status": "ERROR",
            "result": "`callbackUrl` is refused: this server sends no callbacks (its \
                       configuration's `callbacks.allowed_urls` is empty)"
        })
    );
    // An empty `callbackUrl` is no callback, as other empty parameters are absent.
    let (status, body) = submit(
        &serving,
        &[("classPath", "sql"), ("callbackUrl", "")],
        r#"query = "SELECT 1 AS one""#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    serving.stop().await;
}
