//! Validation that plans each job on its inputs' schemas (`floe::plan_check`): through
//! `floe validate` and uploads, over the sample data or none yet.

use std::process::Command;
use std::sync::Arc;

use floe::materialize::RunRequest;
use floe::pipeline::data_roots::DataRoots;
use floe::results::{PARTITION_END, PARTITION_START, read_job_results};
use reqwest::StatusCode;
use serde_json::Value;

use super::common::server::{TestServer, text};
use super::common::{RunAlone, SampleWorld, repo_path, shop_pipeline, utc};

/// `floe validate <file>` with `data_dir` as the data dir: (exit code, stdout, stderr).
fn validate(file: &str, data_dir: &std::path::Path) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_floe"))
        .arg("validate")
        .arg(repo_path(file))
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("run floe");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_example_pipeline_plans_every_job_on_the_sample_data() {
    let world = SampleWorld::new(2_000, 1);
    let (code, stdout, stderr) = validate("pipelines/shop.yaml", &world.data_dir());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("pipeline `shop` is valid (1 sources, 7 jobs)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("shop.yaml: 7 of 7 jobs planned on their inputs' schemas"),
        "{stdout}"
    );
    assert!(!stdout.contains("not checked"), "{stdout}");
}

#[test]
fn without_source_files_yet_the_jobs_are_valid_but_not_checked() {
    let empty = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = validate("pipelines/shop.yaml", empty.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("shop.yaml: 0 of 7 jobs planned on their inputs' schemas"),
        "{stdout}"
    );
    let notes: Vec<&str> = stdout
        .lines()
        .filter(|line| line.contains("not checked"))
        .collect();
    assert_eq!(notes.len(), 7, "{stdout}");
    // The jobs reading the source say why, at their line; the others name their upstream.
    assert!(
        notes.iter().any(|note| note.ends_with(
            "shop.yaml:27:3: job `registered_users_hourly`: not checked: source `events` has no \
             file yet matching `events/date=*/hour=*/*.parquet` in the data roots"
        )),
        "{stdout}"
    );
    assert!(
        notes.iter().any(|note| note.ends_with(
            "job `registered_users_daily`: not checked: reads `registered_users_hourly`, which \
             is not checked"
        )),
        "{stdout}"
    );
}

#[test]
fn validate_refuses_sql_polars_cannot_plan_at_its_line() {
    let world = SampleWorld::new(2_000, 1);
    let (code, stdout, stderr) = validate(
        "tests/fixtures/invalid/plan_subquery_division.yaml",
        &world.data_dir(),
    );
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains(
            "plan_subquery_division.yaml:19:5: job `status_share`, field `sql`: fails when \
             planned on its inputs' columns: polars: subquery comparisons with '/' are not \
             supported"
        ),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_polars_cannot_plan_is_refused_naming_the_job_and_line() {
    let world = SampleWorld::new(2_000, 1);
    let server = TestServer::start(&world, |_| {}).await;
    for (fixture, expected) in [
        (
            "plan_subquery_division",
            "binary `share`:19:5: job `status_share`, field `sql`: fails when planned on its \
             inputs' columns: polars: subquery comparisons with '/' are not supported",
        ),
        (
            "plan_missing_column",
            "binary `share`:20:5: job `sales_per_category_daily`, field `group_by`: reads \
             column `amount`, which its input upstream job `purchases_hourly` does not have \
             (its columns: ts, user_id, city, category)",
        ),
    ] {
        let yaml =
            std::fs::read_to_string(repo_path(&format!("tests/fixtures/invalid/{fixture}.yaml")))
                .unwrap();
        let response = server
            .client
            .post(server.url("/binaries/share"))
            .header("content-type", "application/yaml")
            .body(yaml)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{fixture}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(text(&body["errors"][0]), expected, "{body}");
        assert!(
            text(&body["result"])
                .starts_with(&format!("Binary is not of the right format: {expected}")),
            "{body}"
        );
        // Nothing was stored.
        assert_eq!(server.get("/binaries/share").await.0, StatusCode::NOT_FOUND);
    }
    // The example pipeline still uploads: every job plans on the sample data.
    let shop = std::fs::read_to_string(repo_path("pipelines/shop.yaml")).unwrap();
    let (status, body) = server.post("/binaries/shop3", &shop).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    server.stop().await;
}

#[test]
fn the_checked_columns_are_those_runs_produce() {
    let world = SampleWorld::new(2_000, 7);
    let text = std::fs::read_to_string(repo_path("pipelines/shop.yaml")).unwrap();
    let pipeline = shop_pipeline()
        .confine(Arc::new(DataRoots::new(&world.data_dir(), &[])), &text)
        .expect("inside the data dir");
    let check = floe::plan_check::check_pipeline(&pipeline, &text);
    assert_eq!(check.checked.len(), 7, "{:?}", check.unchecked);
    let (from, to) = (utc(2024, 1, 1, 0), utc(2024, 1, 8, 0));
    let materializer = world.materializer();
    let request = RunRequest {
        jobs: None,
        from,
        to,
        force: false,
    };
    let report = materializer.run(&pipeline, &request, |_| {}).expect("run");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    for (job, planned) in &check.outputs {
        let mut stored = read_job_results(&materializer, &pipeline, job, from, to)
            .expect("results")
            .frame;
        let _ = stored.drop_in_place(PARTITION_START);
        let _ = stored.drop_in_place(PARTITION_END);
        assert_eq!(**stored.schema(), **planned, "job `{job}`");
    }
}
