//! Data checks over the real scheduler and store: outcomes kept with each run and served by
//! `GET /pipelines/{p}/runs`, an `error` check failing its run (and nothing committed), a
//! `warn` check recorded on a run that succeeds, freshness from the source's rows, anomalies
//! from the job's preceding partitions.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::server::{TestServer, text};
use crate::common::{SampleWorld, repo_path};

/// `shop` with checks on its daily sales per category, uploaded as `checked`.
fn checked_pipeline(checks: &str) -> String {
    let yaml = std::fs::read_to_string(repo_path("pipelines/shop.yaml")).unwrap();
    let job = "    group_by:\n      keys: [category]\n      aggregations:\n        sales: sum(amount)\n        orders: count(*)\n";
    assert!(yaml.contains(job));
    yaml.replace(job, &format!("{job}    checks:\n{checks}"))
}

async fn upload(server: &TestServer, yaml: &str) {
    let (status, answer) = server.upload("checked", yaml).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
}

async fn run_day(server: &TestServer, day: &str) -> Value {
    server
        .post(
            "/jobs?appName=checked&classPath=sales_per_category_daily&sync=true&timeout=60",
            &format!("partition = \"{day}\""),
        )
        .await
        .1
}

async fn run_record(server: &TestServer, day: &str) -> Value {
    let (status, runs) = server
        .get(&format!(
            "/pipelines/checked/runs?job=sales_per_category_daily&from={day}T00:00:00Z&to={day}T23:59:59Z"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{runs}");
    runs[0].clone()
}

fn outcome<'a>(record: &'a Value, name: &str) -> &'a Value {
    record["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no outcome `{name}` in {record}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_and_warning_checks_are_kept_with_the_run() {
    let world = SampleWorld::new(20_000, 7);
    let server = TestServer::start(&world, |_| {}).await;
    upload(
        &server,
        &checked_pipeline(
            "      - not_null: [category, sales]\n      - name: no_negative_sales\n        expression: sales >= 0 AND orders > 0\n      - row_count: {min: 1}\n      - unique: category\n      - name: at_most_one_category\n        severity: warn\n        row_count: {max: 1}\n",
        ),
    )
    .await;
    let report = run_day(&server, "2024-01-02").await;
    assert_eq!(report["status"], "FINISHED", "{report}");
    let record = run_record(&server, "2024-01-02").await;
    assert_eq!(record["state"], "succeeded", "{record}");
    for name in [
        "not_null(category, sales)",
        "no_negative_sales",
        "row_count",
        "unique(category)",
    ] {
        let check = outcome(&record, name);
        assert_eq!(check["passed"], true, "{check}");
        assert_eq!(check["severity"], "error");
    }
    let warned = outcome(&record, "at_most_one_category");
    assert_eq!(
        (&warned["passed"], &warned["severity"]),
        (&json!(false), &json!("warn"))
    );
    let rows = report["result"].as_array().unwrap().len();
    assert_eq!(
        warned["detail"],
        format!("{rows} rows, more than 1"),
        "{warned}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_error_check_fails_the_run_and_commits_nothing() {
    let world = SampleWorld::new(20_000, 7);
    let server = TestServer::start(&world, |_| {}).await;
    upload(
        &server,
        &checked_pipeline(
            "      - accepted_values: {column: category, values: [books]}\n      - not_null: category\n",
        ),
    )
    .await;
    let report = run_day(&server, "2024-01-02").await;
    assert_eq!(report["status"], "ERROR", "{report}");
    let message = text(&report["result"]["message"]);
    assert!(
        message.contains("data check failed: accepted_values(category): `category` has"),
        "{message}"
    );
    let record = run_record(&server, "2024-01-02").await;
    assert_eq!(record["state"], "failed", "{record}");
    assert!(
        text(&record["error"]).contains("data check failed"),
        "{record}"
    );
    assert_eq!(
        outcome(&record, "accepted_values(category)")["passed"],
        false
    );
    assert_eq!(outcome(&record, "not_null(category)")["passed"], true);
    // Nothing was committed: the results route serves no row of that day.
    let (_, results) = server
        .get("/pipelines/checked/jobs/sales_per_category_daily/results?from=2024-01-02&to=2024-01-03")
        .await;
    assert_eq!(results["total"], 0, "{results}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness_and_anomaly_checks_read_the_source_and_the_history() {
    let world = SampleWorld::new(20_000, 7);
    let server = TestServer::start(&world, |_| {}).await;
    // `purchases_hourly` reads the source; a second copy of shop's YAML gets its checks there.
    let yaml = std::fs::read_to_string(repo_path("pipelines/shop.yaml"))
        .unwrap()
        .replace(
            "    retries: 2\n",
            "    retries: 2\n    checks:\n      - freshness: {source: events, max_lag: 1h}\n      - name: within_a_millisecond\n        severity: warn\n        freshness: {source: events, max_lag: 1ms}\n",
        )
        .replace(
            "        orders: count(*)\n",
            "        orders: count(*)\n    checks:\n      - anomaly: {within: 0%, last: 5, min_history: 2}\n",
        );
    upload(&server, &yaml).await;
    let hour = server
        .post(
            "/jobs?appName=checked&classPath=purchases_hourly&sync=true&timeout=60",
            r#"partition = "2024-01-02T10:00:00Z""#,
        )
        .await
        .1;
    assert_eq!(hour["status"], "FINISHED", "{hour}");
    let (_, runs) = server
        .get("/pipelines/checked/runs?job=purchases_hourly&from=2024-01-02T10:00:00Z&to=2024-01-02T11:00:00Z")
        .await;
    let record = &runs[0];
    assert_eq!(
        outcome(record, "freshness(events)")["passed"],
        true,
        "{record}"
    );
    let strict = outcome(record, "within_a_millisecond");
    assert_eq!(strict["passed"], false, "{strict}");
    assert!(
        text(&strict["detail"]).starts_with("the newest event is at 2024-01-02T10:"),
        "{strict}"
    );

    // Every day has the same categories: a row count 0% from the median passes once there
    // is history, and before that passes saying why it did not compare.
    for day in ["2024-01-02", "2024-01-03", "2024-01-04"] {
        assert_eq!(run_day(&server, day).await["status"], "FINISHED");
    }
    let first = run_record(&server, "2024-01-02").await;
    let check = outcome(&first, "anomaly(row_count)");
    assert_eq!(check["passed"], true);
    assert!(
        text(&check["detail"]).contains("fewer than `min_history` (2)"),
        "{check}"
    );
    let third = run_record(&server, "2024-01-04").await;
    let check = outcome(&third, "anomaly(row_count)");
    assert_eq!(check["passed"], true, "{check}");
    assert!(check.get("detail").is_none(), "{check}");
    server.stop().await;
}
