//! The job server over real HTTP on 127.0.0.1:0: every route, its error cases, queueing,
//! timeouts, cancellation, named objects, result formats, restarts, and the OpenAPI spec.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use floe::sample::{
    oracle_distinct_registered_users, oracle_sales_per_category, oracle_top_cities_by_sales,
};
use floe::server::routes;
use floe::store::{JobRecord, JobStatus, Store};
use polars::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::server::{TestServer, text};
use crate::common::{SampleWorld, repo_path, utc};

/// A pipeline run that recomputes every partition of the sample week: seconds of work with a
/// safe point before each of its hundreds of runs.
const LONG_RUN: &str = r#"from = "2024-01-01", to = "2024-01-08", force = true"#;

fn world() -> SampleWorld {
    SampleWorld::new(20_000, 7)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binaries_upload_validate_version_and_delete() {
    let world = world();
    let server = TestServer::start(&world, |c| c.max_upload_bytes = 64 << 10).await;
    let (status, list) = server.get("/binaries").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["shop"]["binary-type"], "Pipeline");
    assert_eq!(list["shop"]["version"], 1);

    let yaml = std::fs::read_to_string(repo_path("pipelines/shop.yaml")).unwrap();
    let upload = |body: String, content_type: &'static str| {
        server
            .client
            .post(server.url("/binaries/shop2"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let response = upload(yaml.clone(), "application/x-yaml").await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["result"], "Binary shop2 uploaded as version 1");
    let changed = yaml.replace("rolled up hourly", "rolled up every hour");
    let response = upload(changed, "application/java-archive").await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let (_, info) = server.get("/binaries/shop2").await;
    assert_eq!(info["version"], 2);
    assert_eq!(info["versions"].as_array().unwrap().len(), 2);

    // A broken bundle is refused with the exact problem, and the stored version survives.
    let broken = yaml.replace("grain: daily", "grain: dayly");
    let response = upload(broken, "text/yaml").await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    let errors = body["errors"].as_array().unwrap();
    // It names the binary the client sent, at its line and column, not a file it never saw.
    assert!(text(&errors[0]).starts_with("binary `shop2`:"), "{body}");
    assert!(text(&body["result"]).contains("dayly"), "{body}");
    assert_eq!(server.get("/binaries/shop2").await.1["version"], 2);
    // A real jar (a zip's bytes) is refused in words a spark-jobserver user understands.
    let jar = server
        .client
        .post(server.url("/binaries/shop2"))
        .header("content-type", "application/java-archive")
        .body(b"PK\x03\x04\x14\x00\x08\x00\x08\x00\xff\xd8\x9c".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(jar.status(), StatusCode::BAD_REQUEST);
    let body: Value = jar.json().await.unwrap();
    assert_eq!(
        text(&body["result"]),
        "Binary is not of the right format: binary `shop2` is not UTF-8 text (byte 10): \
         Floe's binaries are pipeline YAML, not jars, eggs or wheels",
        "{body}"
    );

    let response = upload(yaml.clone(), "image/png").await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let response = upload("#".repeat(100 << 10), "text/yaml").await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ERROR");

    assert_eq!(server.get("/binaries/nope").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        server.delete("/binaries/nope").await.0,
        StatusCode::NOT_FOUND
    );

    // In use by a running job: 403 naming the job.
    let (status, started) = server
        .post("/jobs?appName=shop2&classPath=floe.PipelineRun", LONG_RUN)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = text(&started["jobId"]);
    let (status, refused) = server.delete("/binaries/shop2").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        refused["result"],
        format!("Binary is in use by job(s): {id}")
    );
    assert_eq!(
        server.delete(&format!("/jobs/{id}")).await.0,
        StatusCode::OK
    );
    server.wait_final(id).await;
    let (status, _) = server.delete("/binaries/shop2").await;
    assert_eq!(status, StatusCode::OK);
    assert!(server.get("/binaries").await.1.get("shop2").is_none());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_create_list_describe_and_delete() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    let (status, body) = server
        .post(
            "/contexts/warm?worker-threads=3&spark.executor.memory=1g",
            "context-settings { memory-budget = 256m, queue-length = 5 }",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"status": "SUCCESS", "result": "Context initialized"})
    );
    let (status, body) = server.post("/contexts/warm", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["result"], "context warm exists");
    let (status, body) = server.post("/contexts/9lives", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text(&body["result"]).contains("must start with letters"));
    let (status, body) = server.post("/contexts/other?workers=2", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        text(&body["result"]).contains("unknown context setting `workers`"),
        "{body}"
    );
    let (status, body) = server.post("/contexts/other", "a = {").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        text(&body["result"]).starts_with("CONTEXT INIT ERROR: cannot parse config: line 1"),
        "{body}"
    );

    assert_eq!(server.get("/contexts").await.1, json!(["warm"]));
    let (status, info) = server.get("/contexts/warm").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["state"], "RUNNING");
    assert_eq!(info["settings"]["worker-threads"], 3);
    assert_eq!(info["settings"]["queue-length"], 5);
    assert_eq!(info["memory"]["budget"], 256 << 20);
    assert_eq!(server.get("/contexts/cold").await.0, StatusCode::NOT_FOUND);

    let (status, body) = server.delete("/contexts/warm").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"], "Context stopped");
    assert_eq!(
        server.delete("/contexts/warm").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(server.get("/contexts").await.1, json!([]));
    server.stop().await;
}

/// spark-jobserver's `?_method=DELETE` on a POST, for clients and proxies that cannot send
/// DELETE: the POST is routed (and authorised) as the DELETE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_with_method_delete_deletes() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    let (status, body) = server.post("/contexts/overridden", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server.post("/contexts/overridden?_method=DELETE", "").await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"status": "SUCCESS", "result": "Context stopped"})
        )
    );
    assert_eq!(
        server.get("/contexts/overridden").await.0,
        StatusCode::NOT_FOUND
    );
    // Any case; and an unknown job is the DELETE's 404, not the POST's.
    let (status, body) = server.post("/jobs/nope?_method=delete", "").await;
    assert_eq!(
        (status, body["result"].clone()),
        (StatusCode::NOT_FOUND, json!("No such job ID nope"))
    );
    // Another method leaves the POST a POST.
    let (status, _) = server.post("/contexts/again?_method=GET", "").await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_async_sync_config_listing_and_every_refusal() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    server.post("/contexts/ctx", "").await;

    // Async: 202, STARTED, a Location to poll, then FINISHED with the rows.
    let response = server
        .client
        .post(server.url("/jobs?appName=shop&classPath=sales_per_category_daily&context=ctx"))
        .body(r#"partition = "2024-01-02""#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let started: Value = response.json().await.unwrap();
    assert_eq!(started["status"], "STARTED");
    assert_eq!(started["context"], "ctx");
    assert_eq!(started["classPath"], "sales_per_category_daily");
    let id = text(&started["jobId"]).to_owned();
    assert_eq!(location, format!("/jobs/{id}"));
    let done = server.wait_final(&id).await;
    assert_eq!(done["status"], "FINISHED", "{done}");
    assert!(text(&done["duration"]).ends_with(" secs"));
    let rows = done["result"].as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|r| r["partition_start"] == "2024-01-02T00:00:00+00:00")
    );
    let ms = |t: chrono::DateTime<chrono::Utc>| t.timestamp_millis();
    let day: f64 = oracle_sales_per_category(
        &world.events,
        ms(utc(2024, 1, 2, 0)),
        ms(utc(2024, 1, 3, 0)),
    )
    .iter()
    .map(|(_, sales, _)| sales)
    .sum();
    let total: f64 = rows.iter().map(|r| r["sales"].as_f64().unwrap()).sum();
    assert!(
        (total - day).abs() < 1e-6 * day.max(1.0),
        "{total} vs {day}"
    );

    let (status, config) = server.get(&format!("/jobs/{id}/config")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config, json!({"partition": "2024-01-02"}));

    // Sync, ad-hoc: 200 with the result.
    let (status, body) = server
        .post(
            "/jobs?classPath=sql&sync=true",
            r#"query = "SELECT 1 AS one""#,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"], json!([{"one": 1}]));
    let (_, report) = server.get(&format!("/jobs/{}", text(&body["jobId"]))).await;
    assert_eq!(report["context"], "<<ad-hoc>>");

    // A job that fails while running: sync answers 200 with status ERROR.
    let (status, body) = server
        .post(
            "/jobs?classPath=CountDistinct&sync=true&context=ctx",
            "input = missing\ncolumn = user_id",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ERROR");
    assert_eq!(body["result"]["errorClass"], "floe.NamedObjectNotFound");
    let failed_id = text(&body["jobId"]).to_owned();

    let (status, body) = server
        .post(
            "/jobs?appName=shop&classPath=sales_per_category_daily",
            r#"partition = "yesterday""#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["status"], "VALIDATION FAILED");
    assert!(
        text(&body["result"]["message"]).starts_with("`partition`: "),
        "{body}"
    );
    let (status, body) = server
        .post("/jobs?classPath=top&sync=true", "input = x\nkey = city")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        text(&body["result"]["message"]).contains("missing field `metric`"),
        "{body}"
    );
    let (status, body) = server.post("/jobs?appName=nope&classPath=x", "").await;
    assert_eq!(
        (status, body["result"].clone()),
        (StatusCode::NOT_FOUND, json!("appName nope not found"))
    );
    let (status, body) = server.post("/jobs?appName=shop&classPath=nojob", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(text(&body["result"]).starts_with("classPath nojob not found"));
    let (status, body) = server
        .post(
            "/jobs?classPath=sql&context=nowhere",
            r#"query = "SELECT 1""#,
        )
        .await;
    assert_eq!(
        (status, body["result"].clone()),
        (StatusCode::NOT_FOUND, json!("context nowhere not found"))
    );
    let (status, body) = server.post("/jobs?classPath=sql", "query = {").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        text(&body["result"]).starts_with("Cannot parse config: line 1"),
        "{body}"
    );
    // An ad-hoc query's problems name its config key, `query` (a pipeline's is `sql`).
    let (status, body) = server
        .post("/jobs?classPath=sql", r#"query = "SELEC 1""#)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["status"], "VALIDATION FAILED", "{body}");
    let message = text(&body["result"]["message"]);
    assert!(
        message.contains("field `query`: cannot parse query") && !message.contains("field `sql`"),
        "{body}"
    );
    let (status, body) = server.post("/jobs?appName=shop", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text(&body["result"]).contains("classPath is missing"));
    let (status, _) = server.post("/jobs?classPath=sql&sync=maybe", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Listing: newest first, status filter case-insensitive, limit.
    let (_, all) = server.get("/jobs").await;
    assert_eq!(all.as_array().unwrap().len(), 3);
    assert_eq!(all[0]["jobId"], failed_id.as_str());
    let (_, finished) = server.get("/jobs?status=finished&limit=1").await;
    assert_eq!(finished.as_array().unwrap().len(), 1);
    assert_eq!(finished[0]["status"], "FINISHED");
    assert_eq!(
        server.get("/jobs?status=done").await.0,
        StatusCode::BAD_REQUEST
    );

    // Kill: unknown → 404, finished → 404 "No running job", failed → 200 with its error.
    assert_eq!(
        server.delete("/jobs/nope").await.1["result"],
        "No such job ID nope"
    );
    let (status, body) = server.delete(&format!("/jobs/{id}")).await;
    assert_eq!(
        (status, body["result"].clone()),
        (
            StatusCode::NOT_FOUND,
            json!(format!("No running job with ID {id}"))
        )
    );
    let (status, body) = server.delete(&format!("/jobs/{failed_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ERROR");
    assert_eq!(body["ERROR"]["errorClass"], "floe.NamedObjectNotFound");
    assert_eq!(server.get("/jobs/nope").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        server.get("/jobs/nope/config").await.0,
        StatusCode::NOT_FOUND
    );
    server.stop().await;
}

/// HOCON substitutions in config bodies resolve within the document, as spark-jobserver's do;
/// environment lookups are refused, and an exponential expansion is a 400, not an outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_bodies_resolve_substitutions_but_never_read_the_environment() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;

    // A job whose query extends its earlier value (`sql` takes no other keys).
    let config = r#"
        query = "SELECT 41"
        query = ${query}" + 1 AS n"
    "#;
    let (status, body) = server.post("/jobs?classPath=sql&sync=true", config).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], json!([{"n": 42}]), "{body}");
    let (_, stored) = server
        .get(&format!("/jobs/{}/config", text(&body["jobId"])))
        .await;
    assert_eq!(stored, json!({"query": "SELECT 41 + 1 AS n"}));

    // A context whose setting names another key, keeping its type.
    let (status, body) = server
        .post(
            "/contexts/substituted",
            "threads = 2\nspark.context-settings { worker-threads = ${threads} }",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, info) = server.get("/contexts/substituted").await;
    assert_eq!(info["settings"]["worker-threads"], 2, "{info}");

    // `${?HOME}` would read the server's environment: refused, naming it.
    let (status, body) = server
        .post(
            "/jobs?classPath=sql&sync=true",
            "query = \"SELECT 1\"\nhome = ${?HOME}",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = text(&body["result"]);
    assert!(
        message.starts_with("Cannot parse config: line 2, column 8: `${?HOME}`")
            && message.contains("environment lookups are not supported"),
        "{body}"
    );
    let (status, body) = server
        .post("/contexts/env", "worker-threads = ${?THREADS}")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(text(&body["result"]).contains("`${?THREADS}`"), "{body}");
    // Nor does a plain substitution fall back to it, as Typesafe Config would.
    let (status, body) = server
        .post("/jobs?classPath=sql&sync=true", "query = ${HOME}")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        text(&body["result"]).contains("`${HOME}` names nothing in this document"),
        "{body}"
    );

    // "Billion laughs": 2^60 values asked for in 60 lines; refused quickly.
    let mut laughs = String::from("query = \"SELECT 1\"\nl0 = [lol, lol]\n");
    for i in 1..60 {
        laughs.push_str(&format!("l{i} = [${{l{}}}, ${{l{}}}]\n", i - 1, i - 1));
    }
    let start = std::time::Instant::now();
    let (status, body) = server.post("/jobs?classPath=sql&sync=true", &laughs).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        text(&body["result"]).contains("substitutions expand the document by more than"),
        "{body}"
    );
    assert!(start.elapsed() < Duration::from_secs(30));
    let (status, _) = server
        .post("/jobs?classPath=sql&sync=true", r#"query = "SELECT 1""#)
        .await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_gives_429_kill_stops_running_and_queued_jobs() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    server
        .post("/contexts/tight?worker-threads=1&queue-length=1", "")
        .await;
    let submit = || {
        server.post(
            "/jobs?appName=shop&classPath=floe.PipelineRun&context=tight",
            LONG_RUN,
        )
    };
    let (first_status, first) = submit().await;
    let (second_status, second) = submit().await;
    assert_eq!(
        (first_status, second_status),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED)
    );
    let response = server
        .client
        .post(server.url("/jobs?appName=shop&classPath=floe.PipelineRun&context=tight"))
        .body(LONG_RUN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "NO SLOTS AVAILABLE");

    // Once the worker has taken the first job, the second waits in the queue.
    let mut context = Value::Null;
    for _ in 0..500 {
        context = server.get("/contexts/tight").await.1;
        if context["jobs"]["running"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(context["jobs"]["queued"], 1, "{context}");
    let (_, queued) = server
        .get(&format!("/jobs/{}", text(&second["jobId"])))
        .await;
    assert_eq!(queued["queued"], true);

    for job in [&second, &first] {
        let id = text(&job["jobId"]);
        let (status, body) = server.delete(&format!("/jobs/{id}")).await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, json!({"status": "KILLED"}))
        );
        let report = server.wait_final(id).await;
        assert_eq!(report["status"], "KILLED");
        assert_eq!(report["result"]["errorClass"], "floe.JobKilled");
    }
    // The killed run stopped at a safe point: far fewer than all 365 runs are materialised
    // (the runs it had queued are cancelled).
    let materialised = server
        .get("/pipelines/shop/runs?status=succeeded&limit=100000")
        .await
        .1;
    assert!(
        materialised.as_array().unwrap().len() < 365,
        "{}",
        materialised.as_array().unwrap().len()
    );
    // The slot is free again once the worker returns.
    for _ in 0..500 {
        if server.get("/contexts/tight").await.1["jobs"]["running"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, body) = server
        .post(
            "/jobs?classPath=sql&sync=true&context=tight",
            r#"query = "SELECT 2 AS two""#,
        )
        .await;
    assert_eq!(
        (status, body["result"].clone()),
        (StatusCode::OK, json!([{"two": 2}]))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_timeout_answers_202_and_execution_timeout_ends_in_error() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    let response = server
        .client
        .post(server.url("/jobs?appName=shop&classPath=floe.PipelineRun&sync=true&timeout=0.05"))
        .body(format!("{LONG_RUN}\njob-timeout = 0.5s"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["status"], "RUNNING");
    assert_eq!(location, format!("/jobs/{}", text(&report["jobId"])));
    let done = server.wait_final(text(&report["jobId"])).await;
    assert_eq!(done["status"], "ERROR", "{done}");
    assert_eq!(done["result"]["errorClass"], "floe.JobTimeout");
    assert_eq!(
        done["result"]["message"],
        "job timed out after 500ms (its execution timeout)"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_objects_are_shared_and_answers_match_the_pipeline() {
    let world = world();
    let server = Arc::new(TestServer::start(&world, |_| {}).await);
    server.post("/contexts/warm?worker-threads=4", "").await;
    let day = r#"input { object = events, source = events, app = shop, from = "2024-01-03", to = "2024-01-04" }"#;
    // Four concurrent jobs need the same object; each gets it, built once.
    let mut handles = Vec::new();
    for _ in 0..4 {
        let server = server.clone();
        let config = format!("{day}\ncolumn = user_id\nfilter = \"event = 'register'\"");
        handles.push(tokio::spawn(async move {
            server
                .post(
                    "/jobs?classPath=count_distinct&context=warm&sync=true",
                    &config,
                )
                .await
        }));
    }
    let mut answers = BTreeSet::new();
    for handle in handles {
        let (status, body) = handle.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        answers.insert(body["result"][0]["distinct_count"].as_u64().unwrap());
    }
    assert_eq!(answers.len(), 1);
    let expected = oracle_distinct_registered_users(
        &world.events,
        utc(2024, 1, 3, 0).timestamp_millis(),
        utc(2024, 1, 4, 0).timestamp_millis(),
    );
    assert_eq!(answers.into_iter().next().unwrap(), expected);

    let (_, context) = server.get("/contexts/warm").await;
    let objects = context["namedObjects"].as_array().unwrap();
    assert_eq!(objects.len(), 1, "{context}");
    assert_eq!(objects[0]["name"], "events");
    assert!(objects[0]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(objects[0]["sortedTimeColumns"], json!(["ts"]));

    // An hour of the object: its rows are a slice of the sorted `ts`, the answer the hour's.
    let hour =
        r#"input { object = events, from = "2024-01-03T10:00:00Z", to = "2024-01-03T11:00:00Z" }"#;
    let (status, body) = server
        .post(
            "/jobs?classPath=count_distinct&context=warm&sync=true",
            &format!("{hour}\ncolumn = user_id\nfilter = \"event = 'register'\""),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expected = oracle_distinct_registered_users(
        &world.events,
        utc(2024, 1, 3, 10).timestamp_millis(),
        utc(2024, 1, 3, 11).timestamp_millis(),
    );
    assert!(expected > 0);
    assert_eq!(body["result"][0]["distinct_count"], expected, "{body}");
    // The object kept the registrations it selected (one selection, with the columns of the
    // jobs so far); asking again, or over another hour, reads them instead of the whole
    // object, and the answers stay exact.
    let (_, context) = server.get("/contexts/warm").await;
    let kept = &context["namedObjects"][0];
    assert_eq!(kept["selections"], 1, "{context}");
    assert!(kept["selectionBytes"].as_u64().unwrap() > 0, "{context}");
    assert_eq!(
        context["memory"]["used"].as_u64().unwrap(),
        kept["bytes"].as_u64().unwrap() + kept["selectionBytes"].as_u64().unwrap(),
        "{context}"
    );
    let at = |hour: u32| utc(2024, 1, 3, 0) + chrono::TimeDelta::hours(i64::from(hour));
    let window_ms = |from: u32, to: u32| (at(from).timestamp_millis(), at(to).timestamp_millis());
    for (from, to) in [(10, 11), (0, 24), (23, 24)] {
        let input = format!(
            "input {{ object = events, from = \"2024-01-03T{from:02}:00:00Z\", to = \"{}\" }}",
            (utc(2024, 1, 3, 0) + chrono::TimeDelta::hours(i64::from(to)))
                .format("%Y-%m-%dT%H:%M:%SZ"),
        );
        let (from_ms, to_ms) = window_ms(from, to);
        let (_, body) = server
            .post(
                "/jobs?classPath=count_distinct&context=warm&sync=true",
                &format!("{input}\ncolumn = user_id\nfilter = \"event = 'register'\""),
            )
            .await;
        assert_eq!(
            body["result"][0]["distinct_count"],
            oracle_distinct_registered_users(&world.events, from_ms, to_ms),
            "{from}-{to}: {body}"
        );
        let (_, body) = server
            .post(
                "/jobs?classPath=top&context=warm&sync=true",
                &format!(
                    "{input}\nkey = city\nmetric = \"sum(amount)\"\nmetric_name = sales\nn = 5\nfilter = \"event = 'purchase'\""
                ),
            )
            .await;
        let cities: Vec<&str> = body["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| text(&row["city"]))
            .collect();
        let expected: Vec<String> = oracle_top_cities_by_sales(&world.events, from_ms, to_ms, 5)
            .into_iter()
            .map(|(city, _)| city)
            .collect();
        assert_eq!(cities, expected, "{from}-{to}: {body}");
        let (_, body) = server
            .post(
                "/jobs?classPath=group_by&context=warm&sync=true",
                &format!(
                    "{input}\nkeys = [category]\naggregations {{ n = \"count(amount)\" }}\nfilter = \"event = 'purchase'\""
                ),
            )
            .await;
        let counts: Vec<(String, u64)> = body["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                (
                    text(&row["category"]).to_owned(),
                    row["n"].as_u64().unwrap(),
                )
            })
            .collect();
        let expected: Vec<(String, u64)> = oracle_sales_per_category(&world.events, from_ms, to_ms)
            .into_iter()
            .map(|(category, _, n)| (category, n))
            .collect();
        assert_eq!(counts, expected, "{from}-{to}: {body}");
    }
    // A filter that depends on the rows it sees (an aggregate) is evaluated on the window.
    let (from_ms, to_ms) = window_ms(10, 11);
    let amounts: Vec<(u64, f64)> = (0..world.events.len())
        .filter(|&i| (from_ms..to_ms).contains(&world.events.ts_ms[i]))
        .filter_map(|i| Some((world.events.user_id[i], world.events.amount[i]?)))
        .collect();
    let mean = amounts.iter().map(|(_, a)| a).sum::<f64>() / amounts.len() as f64;
    let above: BTreeSet<u64> = amounts
        .iter()
        .filter(|(_, amount)| *amount > mean)
        .map(|(user, _)| *user)
        .collect();
    let (_, body) = server
        .post(
            "/jobs?classPath=count_distinct&context=warm&sync=true",
            &format!("{hour}\ncolumn = user_id\nfilter = \"amount > avg(amount)\""),
        )
        .await;
    assert_eq!(body["result"][0]["distinct_count"], above.len(), "{body}");
    // Local times are read in the named app's timezone; a half-open window ends before `to`.
    let (status, body) = server
        .post(
            "/jobs?classPath=sql&context=warm&sync=true",
            r#"inputs { e { object = events, app = shop, from = "2024-01-03T10:00", to = "2024-01-03T11:00", time_column = ts } }
               query = "SELECT COUNT(*) AS n FROM e""#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let hour_rows = world
        .events
        .ts_ms
        .iter()
        .filter(|&&ms| {
            (utc(2024, 1, 3, 10).timestamp_millis()..utc(2024, 1, 3, 11).timestamp_millis())
                .contains(&ms)
        })
        .count();
    assert_eq!(body["result"][0]["n"], hour_rows, "{body}");
    // A window without its end is refused up front; a window on a non-time column fails.
    let (status, body) = server
        .post(
            "/jobs?classPath=count_distinct&context=warm&sync=true",
            r#"input { object = events, from = "2024-01-03T10:00:00Z" }
               column = user_id"#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["result"]
            .to_string()
            .contains("`input`: `to` is missing"),
        "{body}"
    );
    let (status, body) = server
        .post(
            "/jobs?classPath=count_distinct&context=warm&sync=true",
            r#"input { object = events, from = "2024-01-03", to = "2024-01-04", time_column = user_id }
               column = user_id"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ERROR");
    assert_eq!(body["result"]["errorClass"], "floe.NamedObjectWindow");
    assert_eq!(
        body["result"]["message"],
        "named object `events`: time column `user_id` has type u64; a window needs a datetime column"
    );

    // Publish a result and reuse it by name, in SQL over two inputs.
    let (status, body) = server
        .post(
            "/jobs?classPath=group_by&context=warm&sync=true",
            "input = events\nkeys = [category]\naggregations { sales = \"sum(amount)\" }\nfilter = \"event = 'purchase'\"\npublish = sales_by_category",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .post(
            "/jobs?classPath=sql&context=warm&sync=true",
            "inputs { s = sales_by_category }\nquery = \"SELECT COUNT(*) AS n FROM s\"",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"][0]["n"], 12);

    // Deleting the context frees its objects.
    server.delete("/contexts/warm").await;
    assert_eq!(server.get("/contexts/warm").await.0, StatusCode::NOT_FOUND);
    Arc::try_unwrap(server).ok().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_page_and_download_in_every_format() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    let (status, body) = server
        .post(
            "/jobs?appName=shop&classPath=purchases_hourly&sync=true",
            r#"from = "2024-01-01", to = "2024-01-02""#,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let id = text(&body["jobId"]).to_owned();
    let total = body["result"].as_array().unwrap().len();
    assert!(total > 20, "{total}");

    let (_, page) = server.get(&format!("/jobs/{id}?offset=5&limit=7")).await;
    assert_eq!(page["result"].as_array().unwrap().len(), 7);
    assert_eq!(
        page["resultPage"],
        json!({"offset": 5, "limit": 7, "total": total})
    );
    assert_eq!(page["result"][0], body["result"][5]);
    assert_eq!(
        server.get(&format!("/jobs/{id}?limit=0")).await.0,
        StatusCode::BAD_REQUEST
    );

    let download = |accept: &'static str, path: String| {
        let request = server
            .client
            .get(server.url(&path))
            .header("accept", accept);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let content_type = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            (content_type, response.bytes().await.unwrap())
        }
    };
    let (kind, csv) = download("text/csv", format!("/jobs/{id}")).await;
    assert!(kind.starts_with("text/csv"));
    let csv_text = String::from_utf8(csv.to_vec()).unwrap();
    assert!(
        csv_text.starts_with("partition_start,partition_end,ts,user_id"),
        "{csv_text}"
    );
    assert_eq!(csv_text.lines().count(), total + 1);
    let (kind, arrow) =
        download("application/vnd.apache.arrow.stream", format!("/jobs/{id}")).await;
    assert_eq!(kind, "application/vnd.apache.arrow.stream");
    let frame = IpcStreamReader::new(std::io::Cursor::new(arrow.to_vec()))
        .finish()
        .unwrap();
    assert_eq!(frame.height(), total);
    let (kind, parquet) = download("application/vnd.apache.parquet", format!("/jobs/{id}")).await;
    assert_eq!(kind, "application/vnd.apache.parquet");
    let frame = ParquetReader::new(std::io::Cursor::new(parquet.to_vec()))
        .finish()
        .unwrap();
    assert_eq!(frame.height(), total);
    let response = server
        .client
        .get(server.url(&format!("/jobs/{id}")))
        .header("accept", "image/png")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);

    // The pipeline results route and /query read the same materialised partitions.
    let (status, results) = server
        .get("/pipelines/shop/jobs/purchases_hourly/results?from=2024-01-01&to=2024-01-02&limit=3")
        .await;
    assert_eq!(status, StatusCode::OK, "{results}");
    assert_eq!(results["total"], total);
    assert_eq!(results["rows"].as_array().unwrap().len(), 3);
    assert_eq!(results["missing"], json!([]));
    let (_, csv) = download(
        "text/csv",
        "/pipelines/shop/jobs/purchases_hourly/results?from=2024-01-01&to=2024-01-02".to_owned(),
    )
    .await;
    assert_eq!(
        String::from_utf8(csv.to_vec()).unwrap().lines().count(),
        total + 1
    );
    let (status, query) = server
        .post(
            "/query",
            &json!({
                "sql": "SELECT COUNT(*) AS n FROM shop__purchases_hourly",
                "from": "2024-01-01", "to": "2024-01-02"
            })
            .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{query}");
    assert_eq!(query["rows"], json!([{"n": total}]));
    let (status, error) = server
        .post(
            "/query",
            &json!({"sql": "SELECT * FROM nowhere"}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        text(&error["error"]["message"]).starts_with("unknown table `nowhere`"),
        "{error}"
    );
    let (status, _) = server
        .post(
            "/query",
            &json!({"sql": "SELECT * FROM read_parquet('/etc/passwd')"}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = server.post("/query", "{\"sql\": 1}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_describe_run_and_list_runs() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    let (_, list) = server.get("/pipelines").await;
    assert_eq!(list[0]["name"], "shop");
    let (status, shop) = server.get("/pipelines/shop").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shop["jobs"].as_array().unwrap().len(), 7);
    // Each job with its block as Floe reads it and the fingerprint its results are judged by.
    let category = shop["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["name"] == "sales_per_category_daily")
        .unwrap();
    let definition = text(&category["definition"]);
    assert!(
        definition.contains("group_by") && definition.contains("sum(amount)"),
        "{definition}"
    );
    let fingerprint = text(&category["fingerprint"]);
    assert!(
        fingerprint.len() >= 16 && fingerprint.chars().all(|c| c.is_ascii_hexdigit()),
        "{fingerprint}"
    );
    assert!(
        shop["edges"]
            .as_array()
            .unwrap()
            .contains(&json!({"from": "purchases_hourly", "to": "sales_per_category_daily"}))
    );
    assert_eq!(
        shop["sources"][0]["path"],
        "events/date={date}/hour={hour}/*.parquet"
    );
    assert_eq!(server.get("/pipelines/nope").await.0, StatusCode::NOT_FOUND);

    let response = server
        .client
        .post(server.url("/pipelines/shop/runs"))
        .json(&json!({"jobs": ["sales_per_category_daily"], "from": "2024-01-01", "to": "2024-01-03"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let started: Value = response.json().await.unwrap();
    assert_eq!(started["classPath"], "floe.PipelineRun");
    let done = server.wait_final(text(&started["jobId"])).await;
    assert_eq!(done["status"], "FINISHED", "{done}");
    // 48 hourly staging runs and 2 daily runs, all computed.
    let outcomes: Vec<&str> = done["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| text(&r["outcome"]))
        .collect();
    assert_eq!(outcomes.len(), 50);
    assert!(outcomes.iter().all(|o| *o == "computed"));

    let (_, runs) = server
        .get("/pipelines/shop/runs?job=sales_per_category_daily&status=succeeded")
        .await;
    assert_eq!(runs.as_array().unwrap().len(), 2);
    assert_eq!(runs[0]["partitionStart"], "2024-01-01T00:00:00.000Z");
    assert_eq!(runs[0]["state"], "succeeded");
    assert!(runs[0]["rows"].as_u64().unwrap() > 0);
    assert_eq!(
        server.get("/pipelines/shop/runs?job=nope").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.get("/pipelines/shop/runs?status=meh").await.0,
        StatusCode::BAD_REQUEST
    );
    let (status, error) = server
        .post(
            "/pipelines/shop/runs",
            "{\"jobs\": [\"nope\"], \"partition\": \"2024-01-01\"}",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        text(&error["error"]["message"]).contains("has no job `nope`"),
        "{error}"
    );
    assert_eq!(
        server.post("/pipelines/shop/runs", "[1]").await.0,
        StatusCode::BAD_REQUEST
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resolves_interrupted_jobs_and_keeps_history() {
    let world = world();
    // A previous process left two jobs RUNNING: an ad-hoc SQL job and a materialisation.
    {
        let store = Store::open(&world.store_dir()).unwrap();
        let record = |id: &str, class: &str, app: Option<&str>, rerun: bool| JobRecord {
            id: id.to_owned(),
            class_path: class.to_owned(),
            app: app.map(str::to_owned),
            app_version: None,
            context: String::new(),
            context_id: "gone".to_owned(),
            status: JobStatus::Running,
            start_time: utc(2024, 1, 31, 0),
            end_time: None,
            failure: None,
            result_rows: None,
            result_bytes: None,
            rerun_on_restart: rerun,
        };
        store
            .insert_job(
                &record("00000000-0000-7000-8000-000000000001", "sql", None, false),
                br#"{"query":"SELECT 1"}"#,
            )
            .unwrap();
        store
            .insert_job(
                &record(
                    "00000000-0000-7000-8000-000000000002",
                    "sales_per_category_daily",
                    Some("shop"),
                    true,
                ),
                br#"{"partition":"2024-01-02"}"#,
            )
            .unwrap();
        // That process was last alive 3.5 s after the jobs started, and went down.
        store
            .mark_alive(utc(2024, 1, 31, 0) + chrono::Duration::milliseconds(3500))
            .unwrap();
        store.flush().unwrap();
    }
    let server = TestServer::start(&world, |_| {}).await;
    let (_, lost) = server
        .get("/jobs/00000000-0000-7000-8000-000000000001")
        .await;
    assert_eq!(lost["status"], "ERROR");
    assert_eq!(
        lost["result"]["message"],
        "server restarted before the job finished"
    );
    // It ended when that process stopped, not when this one started.
    assert_eq!(lost["duration"], "3.500 secs", "{lost}");
    let rerun = server
        .wait_final("00000000-0000-7000-8000-000000000002")
        .await;
    assert_eq!(rerun["status"], "FINISHED", "{rerun}");
    assert_eq!(rerun["result"].as_array().unwrap().len(), 12);

    server.post("/contexts/kept?worker-threads=1", "").await;
    let (_, sync) = server
        .post(
            "/jobs?classPath=sql&sync=true",
            r#"query = "SELECT 40 + 2 AS answer""#,
        )
        .await;
    let id = text(&sync["jobId"]).to_owned();
    server.stop().await;

    // After a clean restart: contexts, jobs, configs and results are all still there.
    let server = TestServer::start(&world, |_| {}).await;
    assert_eq!(server.get("/contexts").await.1, json!(["kept"]));
    assert_eq!(
        server.get("/contexts/kept").await.1["settings"]["worker-threads"],
        1
    );
    let (_, report) = server.get(&format!("/jobs/{id}")).await;
    assert_eq!(report["status"], "FINISHED");
    assert_eq!(report["result"], json!([{"answer": 42}]));
    assert_eq!(
        server.get(&format!("/jobs/{id}/config")).await.1,
        json!({"query": "SELECT 40 + 2 AS answer"})
    );
    let (_, jobs) = server.get("/jobs").await;
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .all(|j| j["status"] != "RUNNING"),
        "{jobs}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_records_jobs_still_running() {
    let world = world();
    let server = TestServer::start(&world, |c| c.shutdown_grace = Duration::from_millis(1)).await;
    let (_, started) = server
        .post("/jobs?appName=shop&classPath=floe.PipelineRun", LONG_RUN)
        .await;
    let id = text(&started["jobId"]).to_owned();
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.stop().await;
    let server = TestServer::start(&world, |_| {}).await;
    let (_, report) = server.get(&format!("/jobs/{id}")).await;
    // Either it was recorded as cut short, or (a materialisation) re-run after the restart.
    let report = if report["status"] == "RUNNING" {
        server.wait_final(&id).await
    } else {
        report
    };
    assert!(
        report["status"] == "ERROR" || report["status"] == "FINISHED",
        "{report}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_routes_and_json_errors_for_unknown_routes() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    assert_eq!(
        server.get("/healthz").await,
        (
            StatusCode::OK,
            json!({"status": "SUCCESS", "result": "alive"})
        )
    );
    assert_eq!(server.get("/readyz").await.0, StatusCode::OK);
    server
        .post(
            "/jobs?classPath=sql&sync=true",
            r#"query = "SELECT 1 AS one""#,
        )
        .await;
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text().await.unwrap();
    for expected in [
        "floe_http_requests_total{method=\"POST\",route=\"/jobs\",status=\"2xx\"} 1",
        "floe_jobs_total{status=\"FINISHED\"} 1",
        "# TYPE floe_http_request_duration_seconds histogram",
        "# TYPE floe_context_queue_depth gauge",
        "floe_result_cache_hits_total",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    let (status, spec) = server.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(spec["openapi"], "3.1.0");
    // A path no route takes answers in its family's envelope: Floe's outside the job server's.
    let (status, body) = server.get("/nowhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    let (status, body) = server.get("/jobs/a/b/c").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["status"], "ERROR", "{body}");
    let response = server.client.put(server.url("/jobs")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ERROR");
    server.stop().await;
}

#[test]
fn openapi_spec_and_routes_agree() {
    let spec: Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo_path("api/openapi.yaml")).unwrap())
            .unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                documented.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    let served: BTreeSet<String> = routes()
        .into_iter()
        .map(|(method, path)| format!("{method} {path}"))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not in api/openapi.yaml: {undocumented:?}; documented but not served: {unserved:?}"
    );
}

/// The spark-jobserver flow through the real python-sjsclient from PyPI. The client lives in a
/// virtualenv under `target/`, created on first use (it needs PyPI once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sjsclient_drives_contexts_jobs_and_results() {
    let python = tokio::task::spawn_blocking(sjsclient_python).await.unwrap();
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    let base = server.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(repo_path("tests/python/sjs_flow.py"))
            .arg(base)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "sjs_flow.py failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("PASS spark-jobserver flow with python-sjsclient"),
        "{stdout}"
    );
    server.stop().await;
}

/// The python with python-sjsclient installed, creating `target/sjsclient-venv` if needed.
pub(crate) fn sjsclient_python() -> std::path::PathBuf {
    super::common::python_venv("sjsclient-venv", "python-sjsclient==0.10.0")
        .unwrap_or_else(|problem| panic!("{problem}"))
}

/// Recurring runs, pause and resume, a backfill and a restatement, all over HTTP, with the
/// server's clock moved by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_routes_drive_recurring_runs_backfills_and_restatements() {
    let world = SampleWorld::new(4_000, 2);
    let server = TestServer::start_at(&world, utc(2024, 1, 1, 3), |c| {
        c.scheduler.recurring = true;
    })
    .await;

    // 03:00: the first three hourly windows are due and run by themselves.
    server.tick_until_idle(utc(2024, 1, 1, 3)).await;
    let hourly = server
        .runs("registered_users_hourly", "2024-01-01", "2024-01-02")
        .await;
    assert_eq!(hourly.len(), 3, "{hourly:?}");
    assert!(
        hourly
            .iter()
            .all(|r| r["state"] == "succeeded" && r["commits"] == 1)
    );
    let (status, schedule) = server.get("/pipelines/shop/schedule").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(schedule["paused"], false);
    assert_eq!(schedule["catchup"], "all");
    let job = schedule["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "registered_users_hourly")
        .expect("job in the schedule")
        .clone();
    assert!(
        text(&job["plannedThrough"]).starts_with("2024-01-01T03:00:00"),
        "{job}"
    );
    assert!(
        text(&job["nextDue"]).starts_with("2024-01-01T04:00:00"),
        "{job}"
    );

    // Just after midnight: the rest of the day's hours, then the daily jobs on top of them.
    server.tick_until_idle(utc(2024, 1, 2, 0)).await;
    server.tick_until_idle(utc(2024, 1, 2, 0)).await;
    let daily = server
        .runs("registered_users_daily", "2024-01-01", "2024-01-02")
        .await;
    assert_eq!(daily.len(), 1);
    assert_eq!(daily[0]["state"], "succeeded", "{daily:?}");

    // Paused: nothing new is planned, however late it gets; resumed: it catches up.
    assert_eq!(
        server.post("/pipelines/shop/pause", "").await.0,
        StatusCode::OK
    );
    let (_, summary) = server.get("/scheduler").await;
    assert_eq!(summary["pausedPipelines"], json!(["shop"]), "{summary}");
    server.tick_until_idle(utc(2024, 1, 2, 2)).await;
    assert!(
        server
            .runs("registered_users_hourly", "2024-01-02", "2024-01-03")
            .await
            .is_empty()
    );
    assert_eq!(
        server.post("/pipelines/shop/resume", "").await.0,
        StatusCode::OK
    );
    server.tick_until_idle(utc(2024, 1, 2, 2)).await;
    assert_eq!(
        server
            .runs("registered_users_hourly", "2024-01-02", "2024-01-03")
            .await
            .len(),
        2
    );

    // A forced backfill of one daily job recomputes it and the hourly runs it reads.
    let response = server
        .client
        .post(server.url("/pipelines/shop/backfills"))
        .json(&json!({"jobs": ["sales_per_category_daily"], "from": "2024-01-01", "to": "2024-01-02", "force": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let started: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/backfills/{}", text(&started["id"])));
    let done = server.wait_backfill(text(&started["id"])).await;
    assert_eq!(done["state"], "finished", "{done}");
    assert_eq!(
        done["total"], 25,
        "24 hourly purchases and the daily job: {done}"
    );
    assert_eq!(done["succeeded"], 25, "{done}");
    assert_eq!(done["remaining"], 0, "{done}");

    // Restating one hour recomputes it and, by cascade, the daily partitions that read it.
    let before = server
        .runs(
            "purchases_hourly",
            "2024-01-01T05:00:00Z",
            "2024-01-01T06:00:00Z",
        )
        .await;
    let city_before = server
        .runs("sales_per_city_daily", "2024-01-01", "2024-01-02")
        .await;
    let (status, restated) = server
        .post(
            "/pipelines/shop/restatements",
            r#"{"jobs": ["purchases_hourly"], "from": "2024-01-01T05:00:00Z", "to": "2024-01-01T06:00:00Z"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{restated}");
    let restated = server.wait_backfill(text(&restated["id"])).await;
    assert_eq!(restated["restate"], true);
    assert_eq!(restated["succeeded"], restated["total"], "{restated}");
    let after = server
        .runs(
            "purchases_hourly",
            "2024-01-01T05:00:00Z",
            "2024-01-01T06:00:00Z",
        )
        .await;
    assert_eq!(
        after[0]["commits"].as_u64(),
        before[0]["commits"].as_u64().map(|c| c + 1)
    );
    let city_after = server
        .runs("sales_per_city_daily", "2024-01-01", "2024-01-02")
        .await;
    assert_eq!(
        city_after[0]["commits"].as_u64(),
        city_before[0]["commits"].as_u64().map(|c| c + 1),
        "the cascade recomputed the daily partition"
    );
    let (_, listed) = server.get("/pipelines/shop/backfills").await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    // Refusals name the problem.
    let finished = format!("/backfills/{}/pause", text(&started["id"]));
    assert_eq!(server.post(&finished, "").await.0, StatusCode::CONFLICT);
    assert_eq!(server.get("/backfills/nope").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        server.post("/pipelines/nope/pause", "").await.0,
        StatusCode::NOT_FOUND
    );
    for (path, body, message) in [
        (
            "/pipelines/shop/backfills",
            r#"{"from": "2024-01-02", "to": "2024-01-01"}"#,
            "empty range",
        ),
        (
            "/pipelines/shop/restatements",
            r#"{"from": "2024-01-01", "to": "2024-01-02"}"#,
            "`jobs` is required",
        ),
        (
            "/pipelines/shop/backfills",
            r#"{"from": "2024-01-01", "to": "2024-01-02", "when": 1}"#,
            "unknown field `when`",
        ),
    ] {
        let (status, error) = server.post(path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}");
        assert!(
            text(&error["error"]["message"]).contains(message),
            "{error}"
        );
    }
    server.stop().await;
}
