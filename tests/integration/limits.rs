//! The server's bounds (`limits:`, `job_retention`) over real HTTP on 127.0.0.1:0 with a real
//! sled store: contexts and their threads, binary versions and their bytes, and the job
//! history a client may still be polling.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use floe::clock::{Clock, ManualClock};
use floe::job::JobRegistry;
use floe::server::{ServerConfig, build_state};
use floe::store::{BinaryBlobUsage, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::server::{TestServer, text};
use crate::common::{SampleWorld, repo_path, utc};

fn world() -> SampleWorld {
    SampleWorld::new(20_000, 7)
}

/// POSTs and returns the status, the `Retry-After` header and the JSON body.
async fn post_with_retry_after(
    server: &TestServer,
    path: &str,
    body: &str,
) -> (StatusCode, Option<String>, Value) {
    let response = server
        .client
        .post(server.url(path))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        retry_after,
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_beyond_the_thread_and_context_limits_are_refused_with_400() {
    let world = world();
    let server = TestServer::start(&world, |c| {
        c.core.limits.max_contexts = 3;
        c.core.limits.max_worker_threads = 20;
        // Predefined contexts count: 4 ad-hoc threads + 2 here = 6 taken.
        c.contexts.insert(
            "fixed".to_owned(),
            BTreeMap::from([("worker-threads".to_owned(), json!(2))]),
        );
    })
    .await;

    // Per context: 1024 threads or a huge queue is a 400 naming the setting and the limit,
    // whichever alias or place (query, body) it came from.
    let (status, body) = server.post("/contexts/huge?worker-threads=1024", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["status"], "ERROR");
    assert_eq!(
        body["result"],
        "invalid context settings: setting `worker-threads`: 1024 is above the limit of 64 \
         worker threads per context (`limits.max_threads_per_context`)"
    );
    let (status, body) = server
        .post("/contexts/huge", "context-settings { num-cpu-cores = 65 }")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        text(&body["result"]).contains("`limits.max_threads_per_context`"),
        "{body}"
    );
    let (status, body) = server.post("/contexts/deep?queue-length=10001", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        text(&body["result"]).contains(
            "10001 is above the limit of 10000 queued jobs per context (`limits.max_queue_length`)"
        ),
        "{body}"
    );

    // In all: 6 + 10 = 16 of 20 threads, then 5 more is too many, 4 fits.
    let (status, body) = server.post("/contexts/a?worker-threads=10", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server.post("/contexts/b?worker-threads=5", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["result"],
        "cannot create context b with 5 worker threads: 16 of the server's 20 are taken \
         (`limits.max_worker_threads`)"
    );
    let (status, body) = server.post("/contexts/b?worker-threads=4", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Three contexts, the predefined one included, is the limit.
    let (status, body) = server.post("/contexts/c?worker-threads=1", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["result"],
        "cannot create context c: 3 contexts exist, the limit (`limits.max_contexts`); delete \
         one first"
    );
    assert_eq!(server.get("/contexts").await.1, json!(["a", "b", "fixed"]));

    // Deleting gives the places back once the deleted context's threads have exited.
    assert_eq!(server.delete("/contexts/a").await.0, StatusCode::OK);
    let mut created = None;
    for _ in 0..500 {
        let (status, body) = server.post("/contexts/c?worker-threads=10", "").await;
        if status == StatusCode::OK {
            created = Some(body);
            break;
        }
        assert!(
            text(&body["result"]).contains("deleted contexts still finishing a job"),
            "{body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(created.is_some(), "context c was never created");
    assert_eq!(server.get("/contexts").await.1, json!(["b", "c", "fixed"]));
    assert_eq!(
        server.get("/contexts/c").await.1["settings"]["worker-threads"],
        10
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_beyond_the_limits_does_not_start() {
    let world = world();
    let start = |tweak: fn(&mut ServerConfig)| {
        let mut config = ServerConfig {
            pipelines: repo_path("pipelines"),
            data_dir: world.data_dir(),
            store: world.store_dir(),
            ..ServerConfig::default()
        };
        tweak(&mut config);
        let runtime = tokio::runtime::Handle::current();
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(utc(2024, 2, 1, 0)));
        tokio::task::spawn_blocking(move || {
            build_state(config, JobRegistry::new(), clock, runtime)
                .err()
                .expect("the server must not start")
        })
    };
    let error = start(|c| {
        c.contexts.insert(
            "greedy".to_owned(),
            BTreeMap::from([("worker-threads".to_owned(), json!(1024))]),
        );
    })
    .await
    .unwrap();
    assert_eq!(
        error,
        "configuration: `contexts.greedy`: setting `worker-threads`: 1024 is above the limit of \
         64 worker threads per context (`limits.max_threads_per_context`)"
    );
    let error = start(|c| c.core.adhoc.worker_threads = 300).await.unwrap();
    assert!(
        error.starts_with("configuration: `adhoc`: setting `worker-threads`: 300"),
        "{error}"
    );
    let error = start(|c| {
        c.core.job_history = 10;
        c.core.limits.max_stored_jobs = Some(5);
    })
    .await
    .unwrap();
    assert!(error.contains("`limits.max_stored_jobs` (5)"), "{error}");
}

/// shop.yaml as app `big`, made distinct by `tag` and padded by a comment to about 1 MiB.
fn big_bundle(tag: usize) -> String {
    let yaml = std::fs::read_to_string(repo_path("pipelines/shop.yaml")).unwrap();
    let padding = format!("# {}\n", "x".repeat(1021)).repeat(1024);
    format!("# upload {tag}\n{yaml}\n{padding}")
}

async fn upload(server: &TestServer, app: &str, body: String) -> u64 {
    let response = server
        .client
        .post(server.url(&format!("/binaries/{app}")))
        .header("content-type", "application/x-yaml")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let (_, info) = server.get(&format!("/binaries/{app}")).await;
    info["version"].as_u64().unwrap()
}

fn listed_versions(info: &Value) -> Vec<u64> {
    info["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect()
}

/// The store's bundle blobs, read once the server has released it.
fn blob_usage(world: &SampleWorld) -> BinaryBlobUsage {
    Store::open(&world.store_dir())
        .unwrap()
        .binary_blob_usage()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_keep_the_last_versions_and_delete_frees_their_bytes() {
    let world = world();
    let three_versions = |c: &mut ServerConfig| c.core.limits.binary_versions = 3;
    let server = TestServer::start(&world, three_versions).await;
    let shop_bytes = std::fs::metadata(repo_path("pipelines/shop.yaml"))
        .unwrap()
        .len();

    // A materialisation of version 1 is under way while its version is pruned.
    assert_eq!(upload(&server, "big", big_bundle(1)).await, 1);
    let (status, started) = server
        .post(
            "/jobs?appName=big&classPath=floe.PipelineRun",
            r#"from = "2024-01-01", to = "2024-01-08", force = true"#,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = text(&started["jobId"]).to_owned();
    for tag in 2..=5 {
        assert_eq!(upload(&server, "big", big_bundle(tag)).await, tag as u64);
    }
    let (_, info) = server.get("/binaries/big").await;
    assert_eq!(info["version"], 5);
    assert_eq!(listed_versions(&info), [3, 4, 5]);
    let (_, running) = server.get(&format!("/jobs/{id}")).await;
    assert_eq!(running["status"], "RUNNING", "{running}");
    let report = server.wait_final(&id).await;
    assert_eq!(report["status"], "FINISHED", "{report}");
    assert_eq!(report["appName"], "big");
    // Another app with the bytes of version 5: one blob for both.
    upload(&server, "copy", big_bundle(5)).await;
    server.stop().await;

    // shop (the pipelines folder) plus versions 3, 4 and 5 of big; copy shares 5's blob.
    let usage = blob_usage(&world);
    assert_eq!(usage.blobs, 4, "{usage:?}");
    assert!(usage.bytes > 3 * (1 << 20), "{usage:?}");
    assert!(usage.bytes < shop_bytes + 4 * (1 << 20), "{usage:?}");

    // After a restart: the same versions, and deleting frees every blob no other app uses.
    let server = TestServer::start(&world, three_versions).await;
    assert_eq!(
        listed_versions(&server.get("/binaries/big").await.1),
        [3, 4, 5]
    );
    assert_eq!(server.delete("/binaries/big").await.0, StatusCode::OK);
    assert_eq!(server.get("/binaries/big").await.0, StatusCode::NOT_FOUND);
    let (_, copy) = server.get("/binaries/copy").await;
    assert_eq!(listed_versions(&copy), [1]);
    server.stop().await;
    let usage = blob_usage(&world);
    assert_eq!(usage.blobs, 2, "{usage:?}");
    assert!(usage.bytes < shop_bytes + 2 * (1 << 20), "{usage:?}");
    let store = Store::open(&world.store_dir()).unwrap();
    assert!(store.binary_versions("big").unwrap().is_empty());
    drop(store);

    let server = TestServer::start(&world, three_versions).await;
    assert_eq!(server.delete("/binaries/copy").await.0, StatusCode::OK);
    server.stop().await;
    let usage = blob_usage(&world);
    assert_eq!(
        usage,
        BinaryBlobUsage {
            blobs: 1,
            bytes: shop_bytes
        }
    );
}

const QUICK_JOB: &str = "/jobs?classPath=sql&sync=true";
const QUICK_CONFIG: &str = r#"query = "SELECT 1 AS one""#;

async fn quick_job(server: &TestServer) -> String {
    let (status, body) = server.post(QUICK_JOB, QUICK_CONFIG).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "FINISHED", "{body}");
    text(&body["jobId"]).to_owned()
}

async fn job_status(server: &TestServer, id: &str) -> StatusCode {
    server.get(&format!("/jobs/{id}")).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn young_jobs_outlive_the_history_and_a_full_store_answers_503() {
    let world = world();
    let tight = |c: &mut ServerConfig| {
        c.core.job_history = 2;
        c.core.limits.max_stored_jobs = Some(4);
        // `job_retention` stays at its default, an hour.
    };
    let server = TestServer::start(&world, tight).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(quick_job(&server).await);
    }

    // Four stored, twice the history, and none an hour old: nothing may go, so no new job.
    let (status, retry_after, body) = post_with_retry_after(&server, QUICK_JOB, QUICK_CONFIG).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(retry_after.as_deref(), Some("3600"));
    assert_eq!(body["status"], "ERROR");
    assert_eq!(
        body["result"],
        "the server stores 4 jobs, its limit (`limits.max_stored_jobs`), and keeps each \
         finished one for `job_retention` (1h); retry in 3600s"
    );
    // A pipeline run is a job too, refused the same way in Floe's envelope.
    let (status, retry_after, body) = post_with_retry_after(
        &server,
        "/pipelines/shop/runs",
        r#"{"partition": "2024-01-03"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(retry_after.as_deref(), Some("3600"));
    assert_eq!(body["error"]["code"], "too_many_stored_jobs");
    assert!(
        text(&body["error"]["message"]).contains("`limits.max_stored_jobs`"),
        "{body}"
    );
    // Beyond `job_history`, every result is still there for whoever polls it.
    for id in &ids {
        let (status, report) = server.get(&format!("/jobs/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["result"], json!([{"one": 1}]));
    }

    server.clock.advance(TimeDelta::minutes(59));
    let (status, retry_after, _) = post_with_retry_after(&server, QUICK_JOB, QUICK_CONFIG).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after.as_deref(), Some("60"));

    // An hour after they ended, the oldest go, down to `job_history`, and the job is taken.
    server.clock.advance(TimeDelta::minutes(1));
    ids.push(quick_job(&server).await);
    for (id, kept) in ids.iter().zip([false, false, true, true, true]) {
        let expected = if kept {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(job_status(&server, id).await, expected, "job {id}");
    }
    server.stop().await;

    // A restart counts the stored jobs and their end times again: at 00:30, three are stored
    // (two that ended at 00:00, one at 01:00); one more fills the store, and the next waits
    // for the first to turn an hour old, at 01:00.
    let server =
        TestServer::start_at(&world, utc(2024, 2, 1, 0) + TimeDelta::minutes(30), tight).await;
    quick_job(&server).await;
    let (status, retry_after, body) = post_with_retry_after(&server, QUICK_JOB, QUICK_CONFIG).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1800"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_sweep_deletes_the_oldest_jobs_once_retention_has_passed() {
    let world = world();
    let server = TestServer::start(&world, |c| {
        c.core.job_history = 3;
        c.core.job_retention = Duration::from_secs(600);
        c.core.limits.max_stored_jobs = Some(100);
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(quick_job(&server).await);
    }
    // The sweep has run (6 is over 3 + 10%) and spared them all: none is 10 minutes old.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in &ids {
        assert_eq!(job_status(&server, id).await, StatusCode::OK, "job {id}");
    }
    // Ten minutes on, the next job's sweep deletes the oldest four, keeping three.
    server.clock.advance(TimeDelta::minutes(10));
    ids.push(quick_job(&server).await);
    for _ in 0..500 {
        if job_status(&server, &ids[3]).await == StatusCode::NOT_FOUND {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (index, id) in ids.iter().enumerate() {
        let expected = if index < 4 {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        assert_eq!(job_status(&server, id).await, expected, "job {index}");
    }
    server.stop().await;
}
