//! `floe plan` and `GET /pipelines/{p}/plan`: what a run would compute and why — missing,
//! fresh, a changed definition with its diff, changed source files, and what follows
//! upstream — over a real store, against what running then does.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::server::{TestServer, text};
use crate::common::{SampleWorld, repo_path};

async fn upload(server: &TestServer, yaml: &str) {
    let (status, answer) = server.upload("copy", yaml).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
}

/// Runs of `plan` by job, as (job, reason) pairs in plan order.
fn reasons(plan: &Value) -> Vec<(String, String)> {
    plan["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| {
            (
                text(&run["job"]).to_owned(),
                text(&run["reason"]).to_owned(),
            )
        })
        .collect()
}

fn count(plan: &Value, job: &str, reason: &str) -> usize {
    reasons(plan)
        .iter()
        .filter(|(j, r)| j == job && r == reason)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_says_what_changed_and_what_follows() {
    let world = SampleWorld::new(5_000, 2);
    let server = TestServer::start(&world, |_| {}).await;
    let yaml = std::fs::read_to_string(repo_path("pipelines/shop.yaml")).unwrap();
    upload(&server, &yaml).await;
    let day = "/pipelines/copy/plan?from=2024-01-02&to=2024-01-03&job=sales_per_city_daily";

    // Nothing computed yet: the day and the 24 hours it reads are missing.
    let (status, plan) = server.get(day).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(
        (plan["planned"].as_u64(), plan["computing"].as_u64()),
        (Some(25), Some(25))
    );
    assert_eq!(count(&plan, "purchases_hourly", "missing"), 24);
    assert_eq!(count(&plan, "sales_per_city_daily", "missing"), 1);

    let (_, ran) = server
        .post(
            "/jobs?appName=copy&classPath=sales_per_city_daily&sync=true&timeout=60",
            r#"partition = "2024-01-02""#,
        )
        .await;
    assert_eq!(ran["status"], "FINISHED", "{ran}");
    let (_, plan) = server.get(day).await;
    assert_eq!(plan["computing"], 0, "{plan}");
    assert_eq!(count(&plan, "purchases_hourly", "fresh"), 24);

    // A source file rewritten: its hour, then the day it feeds.
    let file = world
        .data_dir()
        .join("events/date=2024-01-02/hour=10/part-0.parquet");
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    let (_, plan) = server.get(day).await;
    assert_eq!(plan["computing"], 2, "{plan}");
    let runs = plan["runs"].as_array().unwrap();
    let hour = runs
        .iter()
        .find(|run| run["reason"] == "sources")
        .unwrap_or_else(|| panic!("{plan}"));
    assert_eq!(hour["partitionStart"], "2024-01-02T10:00:00Z");
    assert!(
        text(&hour["files"][0]).ends_with("events/date=2024-01-02/hour=10/part-0.parquet"),
        "{hour}"
    );
    let daily = runs
        .iter()
        .find(|run| run["job"] == "sales_per_city_daily")
        .unwrap();
    assert_eq!(daily["reason"], "upstream", "{daily}");
    assert_eq!(daily["run"], "copy/purchases_hourly@2024-01-02T10:00:00Z");

    // A changed definition: the diff of its block; nothing upstream of it changes.
    upload(
        &server,
        &yaml.replace(
            "    group_by:\n      keys: [city]\n      aggregations:\n        sales: sum(amount)\n",
            "    group_by:\n      keys: [city]\n      aggregations:\n        sales: sum(amount)\n        orders: count(*)\n",
        ),
    )
    .await;
    let (_, plan) = server
        .get("/pipelines/copy/plan?from=2024-01-02&to=2024-01-03&job=sales_per_city_daily&force=false")
        .await;
    let daily = plan["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|run| run["job"] == "sales_per_city_daily")
        .unwrap();
    // The rewritten hour still comes first; the daily job's own change is named once it is
    // the reason: run the hour, then ask again.
    assert_eq!(daily["reason"], "upstream", "{plan}");
    let (_, ran) = server
        .post(
            "/jobs?appName=copy&classPath=purchases_hourly&sync=true&timeout=60",
            r#"partition = "2024-01-02T10:00:00Z""#,
        )
        .await;
    assert_eq!(ran["status"], "FINISHED", "{ran}");
    let (_, plan) = server.get(day).await;
    let daily = plan["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|run| run["job"] == "sales_per_city_daily")
        .unwrap()
        .clone();
    assert_eq!(daily["reason"], "definition", "{plan}");
    let diff = text(&daily["diff"]);
    // Aggregations are kept in order, as (name, expression) pairs.
    assert!(diff.contains("+   - - orders\n+     - count(*)"), "{diff}");
    assert!(diff.contains("\n    - - sales\n"), "{diff}");
    assert_eq!(plan["computing"], 1, "{plan}");

    // Bad requests name the problem.
    let (status, _) = server.get("/pipelines/copy/plan?from=2024-01-02").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = server
        .get("/pipelines/copy/plan?from=2024-01-02&to=2024-01-03&job=nope")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

/// `floe plan` prints the same, and `--yes` runs it.
#[test]
fn floe_plan_prints_the_reasons_and_yes_runs_them() {
    let world = SampleWorld::new(5_000, 2);
    let floe = |args: &[&str]| {
        let output = crate::cli::floe_on(&world, args)
            .output()
            .expect("run floe");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let range = [
        "--pipeline",
        "shop",
        "--job",
        "sales_per_category_daily",
        "--partition",
        "2024-01-02",
    ];
    let before = floe(&[&["plan"][..], &range].concat());
    assert!(before.contains("purchases_hourly: 24 missing"), "{before}");
    assert!(
        before.contains("sales_per_category_daily: 1 missing"),
        "{before}"
    );
    assert!(
        before
            .trim_end()
            .ends_with("25 runs planned, 25 would compute, 0 fresh"),
        "{before}"
    );
    floe(&[&["plan"][..], &range, &["--yes"]].concat());
    let after = floe(&[&["plan"][..], &range].concat());
    assert!(
        after
            .trim_end()
            .ends_with("25 runs planned, 0 would compute, 25 fresh"),
        "{after}"
    );
}
