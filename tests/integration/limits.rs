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
                .to_string()
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
    // The pipelines folder's apps (shop, sketches): one blob each.
    let (folder_blobs, folder_bytes) = std::fs::read_dir(repo_path("pipelines"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
                && !floe::pipeline::is_test_file(path)
        })
        .fold((0, 0), |(blobs, bytes), path| {
            (blobs + 1, bytes + std::fs::metadata(path).unwrap().len())
        });

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

    // The pipelines folder plus versions 3, 4 and 5 of big; copy shares 5's blob.
    let usage = blob_usage(&world);
    assert_eq!(usage.blobs, folder_blobs + 3, "{usage:?}");
    assert!(usage.bytes > 3 * (1 << 20), "{usage:?}");
    assert!(usage.bytes < folder_bytes + 4 * (1 << 20), "{usage:?}");

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
    assert_eq!(usage.blobs, folder_blobs + 1, "{usage:?}");
    assert!(usage.bytes < folder_bytes + 2 * (1 << 20), "{usage:?}");
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
            blobs: folder_blobs,
            bytes: folder_bytes
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

/// The Arrow result files of the store (results over 8 MiB), ignoring nothing: a partial
/// file left behind would show here.
fn result_files(world: &SampleWorld) -> Vec<String> {
    match std::fs::read_dir(world.store_dir().join("job-results")) {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
        Err(_) => Vec::new(),
    }
}

/// A sync `sql` job in context `warm` padding each event's city to 250 bytes in `columns`
/// columns: `rows` rows of 266 bytes of Arrow a column (all 20,000 of the week without
/// `rows`).
async fn padded_job(server: &TestServer, rows: Option<usize>, columns: usize) -> Value {
    let limit = rows.map_or(String::new(), |rows| format!(" limit {rows}"));
    let padded: Vec<String> = (0..columns)
        .map(|c| format!("lpad(city, 250, 'x') as p{c}"))
        .collect();
    let (status, body) = server
        .post(
            "/jobs?classPath=sql&context=warm&sync=true&timeout=60",
            &format!(
                "input {{ source = events, app = shop, from = \"2024-01-01\", to = \"2024-01-08\" }}\n\
                 query = \"select {} from events{limit}\"",
                padded.join(", ")
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The error class and message of a sync answer (which must be an error).
fn error_of(body: &Value) -> (&str, &str) {
    assert_eq!(
        body["status"], "ERROR",
        "job {} did not fail",
        body["jobId"]
    );
    (
        text(&body["result"]["errorClass"]),
        text(&body["result"]["message"]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_results_are_bounded_in_bytes_each_and_in_all() {
    let world = world();
    // 5,000 rows of 10 padded columns are about 12.7 MiB of Arrow, stored as a file: two fit
    // in 30 MiB.
    let bounded = |c: &mut ServerConfig| {
        c.core.limits.max_result_bytes = 16 << 20;
        c.core.limits.max_job_results_bytes = 30 << 20;
    };
    let server = TestServer::start(&world, bounded).await;
    assert_eq!(server.post("/contexts/warm", "").await.0, StatusCode::OK);

    // The whole week in 4 columns, 20 MiB: not stored, and the job says why, naming the limit.
    let body = padded_job(&server, None, 4).await;
    let (class, message) = error_of(&body);
    assert_eq!(class, "floe.ResultTooLarge");
    assert!(
        message.contains(
            "above the limit of 16777216 bytes (16 MiB) per job result (`limits.max_result_bytes`)"
        ),
        "{message}"
    );
    assert!(
        message.starts_with("the job's result is 2128") && message.contains("(20.3 MiB) of Arrow"),
        "{message}"
    );
    let too_large = text(&body["jobId"]).to_owned();
    assert!(
        result_files(&world).is_empty(),
        "{:?}",
        result_files(&world)
    );

    // Two results fit in the total; the third would take it over, with nothing old enough
    // to delete: its job ends ERROR naming the limit, and no file is left behind.
    let first = padded_job(&server, Some(5_000), 10).await;
    assert_eq!(
        first["status"], "FINISHED",
        "{}",
        first["result"]["message"]
    );
    let first = text(&first["jobId"]).to_owned();
    let second = padded_job(&server, Some(5_000), 10).await;
    assert_eq!(
        second["status"], "FINISHED",
        "{}",
        second["result"]["message"]
    );
    let second = text(&second["jobId"]).to_owned();
    assert_eq!(result_files(&world).len(), 2, "{:?}", result_files(&world));
    let body = padded_job(&server, Some(5_000), 10).await;
    let (class, message) = error_of(&body);
    assert_eq!(class, "floe.JobResultsFull");
    assert!(
        message.contains("of the 31457280 bytes (30 MiB) allowed (`limits.max_job_results_bytes`)")
            && message.contains("`job_retention` (1h)"),
        "{message}"
    );
    assert_eq!(result_files(&world).len(), 2, "{:?}", result_files(&world));
    // Small results still fit.
    quick_job(&server).await;

    // An hour on, the oldest result goes to make room (a job without a result is kept).
    server.clock.advance(TimeDelta::hours(1));
    let third = padded_job(&server, Some(5_000), 10).await;
    assert_eq!(
        third["status"], "FINISHED",
        "{}",
        third["result"]["message"]
    );
    let third = text(&third["jobId"]).to_owned();
    assert_eq!(job_status(&server, &first).await, StatusCode::NOT_FOUND);
    assert_eq!(job_status(&server, &second).await, StatusCode::OK);
    assert_eq!(job_status(&server, &too_large).await, StatusCode::OK);
    assert_eq!(result_files(&world).len(), 2, "{:?}", result_files(&world));
    server.stop().await;

    // Records written before Floe kept the size: start-up measures their results instead.
    {
        let store = Store::open(&world.store_dir()).unwrap();
        let mut forgotten = 0;
        for record in store.jobs_newest(100, |_| true).unwrap() {
            if record.result_bytes.is_some() {
                let mut old = record.clone();
                old.result_bytes = None;
                store.update_job(&old, None).unwrap();
                forgotten += 1;
            }
        }
        assert!(forgotten >= 2, "{forgotten}");
        store.flush().unwrap();
    }
    // After a restart the stored results are counted again: the next result needs the
    // oldest one (an hour old by now) deleted, or it would not fit. (Context `warm` is
    // recreated from the store.)
    let server = TestServer::start_at(&world, utc(2024, 2, 1, 1), bounded).await;
    let body = padded_job(&server, Some(5_000), 10).await;
    assert_eq!(body["status"], "FINISHED", "{}", body["result"]["message"]);
    assert_eq!(job_status(&server, &second).await, StatusCode::NOT_FOUND);
    assert_eq!(job_status(&server, &third).await, StatusCode::OK);
    server.stop().await;
    let store = Store::open(&world.store_dir()).unwrap();
    let third = store.job(&third).unwrap().unwrap();
    let file = world
        .store_dir()
        .join("job-results")
        .join(format!("{}.arrow", third.id));
    assert_eq!(
        third.result_bytes,
        Some(std::fs::metadata(file).unwrap().len()),
        "start-up records the measured size"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_may_shorten_its_contexts_timeout_but_never_lengthen_it() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    let (status, body) = server.post("/contexts/strict?job-timeout=0.5s", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The job asks for an hour; the admin's half second wins.
    let (status, started) = server
        .post(
            "/jobs?appName=shop&classPath=floe.PipelineRun&context=strict",
            &format!("{LONG_RUN}\njob-timeout = 1h"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let done = server.wait_final(text(&started["jobId"])).await;
    assert_eq!(done["status"], "ERROR", "{done}");
    assert_eq!(done["result"]["errorClass"], "floe.JobTimeout");
    assert_eq!(
        done["result"]["message"],
        "job timed out after 500ms (its execution timeout)"
    );

    // No timeout beyond a week, in a job or a context.
    let (status, body) = server
        .post(
            QUICK_JOB,
            &format!("{QUICK_CONFIG}\njob-timeout = \"99999999d\""),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["status"], "VALIDATION FAILED");
    assert_eq!(
        body["result"]["errors"],
        json!([
            "`job-timeout`: `99999999d` is longer than the longest execution timeout, 7days \
             (7 days)"
        ])
    );
    let (status, body) = server.post("/contexts/lax?job-timeout=8d", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        text(&body["result"])
            .contains("setting `job-timeout`: `8d` is longer than the longest execution timeout"),
        "{body}"
    );
    // A week is allowed, and so is a shorter timeout than the context's.
    let (status, body) = server
        .post(QUICK_JOB, &format!("{QUICK_CONFIG}\njob-timeout = 7d"))
        .await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &json!("FINISHED")),
        "{body}"
    );
    server.stop().await;
}

const LONG_RUN: &str = r#"from = "2024-01-01", to = "2024-01-08", force = true"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_object_is_never_another_definitions_and_never_shadows_results() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    assert_eq!(server.post("/contexts/warm", "").await.0, StatusCode::OK);
    let shop = std::fs::read_to_string(repo_path("pipelines/shop.yaml")).unwrap();
    let response = server
        .client
        .post(server.url("/binaries/evil"))
        .header("content-type", "application/x-yaml")
        .body(shop)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    let count =
        |input: &str| format!("inputs {{ t = {input} }}\nquery = \"select count(*) as n from t\"");
    let week = r#"{ object = events, source = events, app = shop, from = "2024-01-01", to = "2024-01-08" }"#;
    let (status, body) = server
        .post("/jobs?classPath=sql&context=warm&sync=true", &count(week))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], json!([{"n": 20_000}]), "{body}");

    // Another app's day under the same name: refused, naming both definitions.
    let evil = r#"{ object = events, source = events, app = evil, from = "2024-01-01", to = "2024-01-02" }"#;
    let (status, body) = server
        .post("/jobs?classPath=sql&context=warm&sync=true", &count(evil))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (class, message) = error_of(&body);
    assert_eq!(class, "floe.NamedObjectConflict");
    assert!(
        message.starts_with(
            "context warm: named object `events` holds other rows than this input asks for"
        ),
        "{message}"
    );
    assert!(
        message.contains(
            "it was built from source `events` of app shop (version 1) from \
             2024-01-01T00:00:00+00:00 to 2024-01-08T00:00:00+00:00"
        ) && message.contains(
            "this input asks for source `events` of app evil (version 1) from \
             2024-01-01T00:00:00+00:00 to 2024-01-02T00:00:00+00:00"
        ) && message.contains("another `object` name"),
        "{message}"
    );
    // The same definition still gets the object; another name gets its own rows.
    let (_, body) = server
        .post("/jobs?classPath=sql&context=warm&sync=true", &count(week))
        .await;
    assert_eq!(body["result"], json!([{"n": 20_000}]), "{body}");
    let evil_day = evil.replace("object = events", "object = evil_events");
    let (_, body) = server
        .post(
            "/jobs?classPath=sql&context=warm&sync=true",
            &count(&evil_day),
        )
        .await;
    assert_eq!(body["status"], "FINISHED", "{body}");
    let day_rows = body["result"][0]["n"].as_u64().unwrap();
    assert!(day_rows > 0 && day_rows < 20_000, "{body}");

    // Names with `__` are results' in /query: no object may take one.
    for config in [
        format!("{}\npublish = shop__sales_per_category_daily", count(week)),
        count(
            r#"{ object = shop__events, source = events, app = shop, from = "2024-01-01", to = "2024-01-02" }"#,
        ),
        count("shop__sales_per_category_daily"),
    ] {
        let (status, body) = server
            .post("/jobs?classPath=sql&context=warm&sync=true", &config)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["status"], "VALIDATION FAILED");
        let errors = body["result"]["errors"].to_string();
        assert!(
            errors.contains("contains `__`, which is reserved for pipeline results"),
            "{body}"
        );
    }
    let (_, context) = server.get("/contexts/warm").await;
    let names: Vec<&str> = context["namedObjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| text(&o["name"]))
        .collect();
    assert_eq!(names, ["events", "evil_events"], "{context}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_backfills_are_bounded_and_their_history_is_pruned_and_paged() {
    let world = world();
    let server = TestServer::start(&world, |c| {
        c.core.limits.max_active_backfills = 2;
        c.core.limits.backfill_history = 3;
    })
    .await;
    // Paused, the pipeline dispatches nothing: every backfill stays running until cancelled.
    assert_eq!(
        server.post("/pipelines/shop/pause", "").await.0,
        StatusCode::OK
    );
    let day = |d: u32| {
        format!(
            r#"{{"from": "2024-01-{d:02}", "to": "2024-01-{:02}", "force": true}}"#,
            d + 1
        )
    };
    let start = |d: u32| {
        let server = &server;
        let body = day(d);
        async move { server.post("/pipelines/shop/backfills", &body).await }
    };
    let (status, first) = start(1).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (status, second) = start(2).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{second}");
    let expected = "2 backfills and restatements are running or paused, the limit \
                    (`limits.max_active_backfills`); wait for one to finish, or cancel one \
                    (POST /backfills/{id}/cancel)";
    let (status, retry_after, body) =
        post_with_retry_after(&server, "/pipelines/shop/backfills", &day(3)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(retry_after.as_deref(), Some("60"));
    assert_eq!(body["error"]["code"], "too_many_backfills");
    assert_eq!(body["error"]["message"], expected);
    let restatement = r#"{"jobs": ["purchases_hourly"], "from": "2024-01-03", "to": "2024-01-04"}"#;
    let (status, body) = server
        .post("/pipelines/shop/restatements", restatement)
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["message"], expected);

    // Cancelling one makes room; each start keeps the 3 newest ended records.
    let cancel = |id: String| {
        let server = &server;
        async move {
            let (status, body) = server.post(&format!("/backfills/{id}/cancel"), "").await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    };
    cancel(text(&first["id"]).to_owned()).await;
    let mut ended = vec![text(&first["id"]).to_owned()];
    for d in 3..=7 {
        let (status, body) = start(d).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let id = text(&body["id"]).to_owned();
        cancel(id.clone()).await;
        ended.push(id);
    }
    // Six ended: the last start deleted all but the three newest before it, then ended too.
    for gone in &ended[..2] {
        assert_eq!(
            server.get(&format!("/backfills/{gone}")).await.0,
            StatusCode::NOT_FOUND,
            "{gone}"
        );
    }
    let (status, listed) = server.get("/pipelines/shop/backfills").await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let ids = |listed: &Value| -> Vec<String> {
        listed
            .as_array()
            .unwrap()
            .iter()
            .map(|b| text(&b["id"]).to_owned())
            .collect()
    };
    let mut newest_first: Vec<String> = ended[2..].iter().rev().cloned().collect();
    newest_first.push(text(&second["id"]).to_owned());
    assert_eq!(ids(&listed), newest_first);
    let (status, page) = server.get("/pipelines/shop/backfills?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(ids(&page), newest_first[..2]);
    for bad in ["0", "1001", "many"] {
        let (status, body) = server
            .get(&format!("/pipelines/shop/backfills?limit={bad}"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            body["error"]["message"],
            format!("`limit` must be a whole number from 1 to 1000, found `{bad}`")
        );
    }
    server.stop().await;
}
