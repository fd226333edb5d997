//! One catalog: an upload, a replacement and a deletion over HTTP take effect in the scheduler
//! before the request is answered.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::server::{TestServer, text};
use crate::common::{SampleWorld, repo_path, utc};

async fn upload(server: &TestServer, app: &str, yaml: &str) {
    let (status, answer) = server.upload(app, yaml).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
}

async fn start_backfill(server: &TestServer, pipeline: &str, body: Value) -> (StatusCode, Value) {
    server
        .post_json(&format!("/pipelines/{pipeline}/backfills"), &body)
        .await
}

#[tokio::test]
async fn a_deleted_pipeline_gets_no_new_runs_and_its_waiting_runs_are_cancelled() {
    let world = SampleWorld::new(2_000, 2);
    // At the pipelines' start no partition has ended: recurring planning has nothing to run
    // before the pause below (at 03:00 it could launch a catch-up run first, and a computing
    // run finishes rather than being cancelled).
    let server = TestServer::start_at(&world, utc(2024, 1, 1, 0), |c| {
        c.scheduler.recurring = true;
    })
    .await;
    let yaml = std::fs::read_to_string(repo_path("pipelines/shop.yaml")).unwrap();
    upload(&server, "shop2", &yaml).await;
    // The scheduler knows the upload at once, and holds its runs back while it is paused.
    assert_eq!(
        server.get("/pipelines/shop2/schedule").await.0,
        StatusCode::OK
    );
    assert_eq!(
        server.post("/pipelines/shop2/pause", "").await.0,
        StatusCode::OK
    );
    let (status, started) = start_backfill(
        &server,
        "shop2",
        json!({"jobs": ["sales_per_category_daily"], "from": "2024-01-01", "to": "2024-01-02"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = text(&started["id"]).to_owned();
    let (_, summary) = server.get("/scheduler").await;
    assert_eq!(summary["pausedPipelines"], json!(["shop2"]), "{summary}");

    let (status, deleted) = server.delete("/binaries/shop2").await;
    assert_eq!(status, StatusCode::OK, "{deleted}");

    // Its backfill ended with every run cancelled, and the scheduler forgot the pipeline.
    let backfill = server.wait_backfill(&id).await;
    assert_eq!(backfill["state"], "cancelled", "{backfill}");
    assert_eq!(backfill["cancelled"], backfill["total"], "{backfill}");
    assert_eq!(backfill["total"], 25, "{backfill}");
    assert_eq!(
        server.get("/pipelines/shop2/schedule").await.0,
        StatusCode::NOT_FOUND
    );
    let (_, summary) = server.get("/scheduler").await;
    assert_eq!(summary["pausedPipelines"], json!([]), "{summary}");
    let store = server.scheduler.store().clone();
    let runs = store.runs_of_pipeline("shop2").unwrap();
    assert!(!runs.is_empty());
    assert!(
        runs.iter()
            .all(|(_, run)| run.state.as_str() == "cancelled"),
        "{runs:?}"
    );

    // Hours later, `shop` has planned and run its recurring runs; `shop2` nothing more.
    server.tick_until_idle(utc(2024, 1, 1, 6)).await;
    assert!(!store.runs_of_pipeline("shop").unwrap().is_empty());
    assert_eq!(store.runs_of_pipeline("shop2").unwrap().len(), runs.len());
    server.stop().await;
}

#[tokio::test]
async fn a_replaced_pipeline_is_planned_with_its_new_version() {
    let world = SampleWorld::new(2_000, 2);
    let server = TestServer::start_at(&world, utc(2024, 1, 2, 1), |_| {}).await;
    let yaml = std::fs::read_to_string(repo_path("pipelines/shop.yaml")).unwrap();
    upload(&server, "shop2", &yaml).await;
    let body = json!({"jobs": ["sales_daily"], "from": "2024-01-01", "to": "2024-01-02"});
    let (status, refused) = start_backfill(&server, "shop2", body.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{refused}");

    // Version 2 renames the daily job: the scheduler plans the new name, not the old one.
    upload(
        &server,
        "shop2",
        &yaml.replace("sales_per_category_daily", "sales_daily"),
    )
    .await;
    let (status, started) = start_backfill(&server, "shop2", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let done = server.wait_backfill(text(&started["id"])).await;
    assert_eq!(done["state"], "finished", "{done}");
    let (status, refused) = start_backfill(
        &server,
        "shop2",
        json!({"jobs": ["sales_per_category_daily"], "from": "2024-01-01", "to": "2024-01-02"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{refused}");
    server.stop().await;
}
