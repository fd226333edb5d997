//! Manual runs (`floe run`, `POST /pipelines/{p}/runs`) go through the scheduler like every
//! other run: their failures are in the store for any later process, a manual run of a range
//! a backfill is running shares that backfill's runs, and a killed pipeline job cancels the
//! runs it queued.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::cli::floe_on;
use super::common::SampleWorld;
use super::common::server::{TestServer, text};

/// The runs of every job of `shop` in [from, to), as the REST API lists them.
async fn all_runs(server: &TestServer, from: &str, to: &str) -> Vec<Value> {
    let (status, runs) = server
        .get(&format!(
            "/pipelines/shop/runs?from={from}&to={to}&limit=10000"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{runs}");
    runs.as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floe_run_records_its_failures_for_later_processes() {
    let world = SampleWorld::new(2_000, 1);
    for hour in ["00", "01", "02"] {
        std::fs::remove_dir_all(
            world
                .data_dir()
                .join(format!("events/date=2024-01-01/hour={hour}")),
        )
        .expect("remove an hour of events");
    }
    let output = floe_on(
        &world,
        &[
            "run",
            "--pipeline",
            "shop",
            "--job",
            "sales_per_category_daily",
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-02",
        ],
    )
    .env("FLOE_LOG", "warn")
    .output()
    .expect("run floe");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "25 runs planned, 21 computed, 0 fresh (skipped), 3 failed, 1 waiting on failed \
             upstream runs"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("4 runs failed"), "{stderr}");
    assert!(!stderr.contains("could not record"), "{stderr}");

    // `floe results`, a later process, says why the partitions have no result.
    let output = floe_on(
        &world,
        &[
            "results",
            "--pipeline",
            "shop",
            "--job",
            "purchases_hourly",
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-02",
            "--format",
            "csv",
        ],
    )
    .output()
    .expect("run floe");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("3 partitions of `purchases_hourly` in the range are not materialised"),
        "{stderr}"
    );
    assert!(stderr.contains("their runs: 3 failed"), "{stderr}");
    assert!(stderr.contains("date=2024-01-01/hour=00"), "{stderr}");

    // As over REST, a partition runs once its window has ended: none would wait for files.
    let output = floe_on(
        &world,
        &["run", "--pipeline", "shop", "--partition", "2999-01-01"],
    )
    .output()
    .expect("run floe");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("after now") && stderr.contains("a partition runs once it has ended"),
        "{stderr}"
    );

    // A server started later on the same store lists them.
    let server = TestServer::start(&world, |_| {}).await;
    let failed = server
        .runs("purchases_hourly", "2024-01-01", "2024-01-02")
        .await
        .into_iter()
        .filter(|run| run["state"] == "failed")
        .collect::<Vec<_>>();
    assert_eq!(failed.len(), 3, "{failed:?}");
    for run in &failed {
        assert!(text(&run["error"]).contains("no files match"), "{run}");
        assert_eq!(run["failures"], 1, "{run}");
    }
    let daily = server
        .runs("sales_per_category_daily", "2024-01-01", "2024-01-02")
        .await;
    assert_eq!(daily.len(), 1, "{daily:?}");
    assert_eq!(daily[0]["state"], "upstream_failed", "{daily:?}");
    // Named after whichever of the three failed hours settled first.
    let error = text(&daily[0]["error"]);
    assert!(
        ["00", "01", "02"]
            .iter()
            .any(|hour| error.contains(&format!("purchases_hourly@2024-01-01T{hour}:00:00"))),
        "{daily:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_run_racing_a_backfill_of_the_same_range_shares_its_runs() {
    let world = SampleWorld::new(5_000, 2);
    // One run at a time: the backfill is still running when the manual run arrives.
    let server = TestServer::start(&world, |config| config.scheduler.workers = 1).await;
    let range = json!({"from": "2024-01-01", "to": "2024-01-03"});
    let (status, backfill) = server.post_json("/pipelines/shop/backfills", &range).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{backfill}");
    let (status, job) = server.post_json("/pipelines/shop/runs", &range).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let (_, racing) = server
        .get(&format!("/backfills/{}", text(&backfill["id"])))
        .await;
    assert_eq!(racing["state"], "running", "no race: {racing}");

    let done = server.wait_final(text(&job["jobId"])).await;
    assert_eq!(done["status"], "FINISHED", "{done}");
    let backfill = server.wait_backfill(text(&backfill["id"])).await;
    assert_eq!(backfill["state"], "finished", "{backfill}");
    assert_eq!(backfill["failed"], 0, "{backfill}");
    // 2 × 48 hourly runs and 2 × 4 daily runs (no week ends inside the range).
    assert_eq!(backfill["total"], 104, "{backfill}");

    // The job reports every run, each computed once by whichever asked first.
    let outcomes: Vec<&str> = done["result"]
        .as_array()
        .expect("the job's runs")
        .iter()
        .map(|run| text(&run["outcome"]))
        .collect();
    assert_eq!(outcomes.len(), 104, "{done}");
    assert!(
        outcomes.iter().all(|o| ["computed", "fresh"].contains(o)),
        "{outcomes:?}"
    );
    let runs = all_runs(&server, "2024-01-01", "2024-01-03").await;
    assert_eq!(runs.len(), 104);
    for run in &runs {
        assert_eq!(run["state"], "succeeded", "{run}");
        assert_eq!(
            (&run["attempts"], &run["failures"], &run["commits"]),
            (&json!(1), &json!(0), &json!(1)),
            "no attempt failed or was thrown away: {run}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_pipeline_job_cancels_the_runs_it_queued() {
    let world = SampleWorld::new(5_000, 7);
    let server = TestServer::start(&world, |config| config.scheduler.workers = 1).await;
    let (status, job) = server
        .post_json(
            "/pipelines/shop/runs",
            &json!({"from": "2024-01-01", "to": "2024-01-08"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = text(&job["jobId"]).to_owned();
    // Once a run has succeeded, the job's runs are all queued.
    let mut started = false;
    for _ in 0..3000 {
        let (_, succeeded) = server
            .get("/pipelines/shop/runs?status=succeeded&limit=1")
            .await;
        if succeeded.as_array().is_some_and(|runs| !runs.is_empty()) {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(started, "no run of the job succeeded");
    let (status, killed) = server.delete(&format!("/jobs/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{killed}");
    let done = server.wait_final(&id).await;
    assert_eq!(done["status"], "KILLED", "{done}");

    let scheduler = server.scheduler.clone();
    let idle = tokio::task::spawn_blocking(move || scheduler.wait_idle(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(idle, "the scheduler did not go idle");
    let summary = server.scheduler.summary();
    assert_eq!(
        (
            summary.waiting,
            summary.ready,
            summary.delayed,
            summary.running
        ),
        (0, 0, 0, 0),
        "{summary:?}"
    );
    let runs = all_runs(&server, "2024-01-01", "2024-01-08").await;
    // 7 × 24 × 2 hourly, 7 × 4 daily, 1 weekly.
    assert_eq!(runs.len(), 365);
    let count = |state: &str| runs.iter().filter(|run| run["state"] == state).count();
    let (succeeded, cancelled) = (count("succeeded"), count("cancelled"));
    assert_eq!(succeeded + cancelled, 365, "{runs:?}");
    assert!(cancelled > 0, "the kill came too late to cancel anything");
    let cancelled_run = runs
        .iter()
        .find(|run| run["state"] == "cancelled")
        .expect("a cancelled run");
    assert!(
        text(&cancelled_run["error"]).contains("was stopped"),
        "{cancelled_run}"
    );
    server.stop().await;
}
