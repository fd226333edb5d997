//! The partition grid (`GET /pipelines/{p}/grid`) over real HTTP against a real scheduler and
//! store: each state a partition can be in, DST days of 23 and 25 hours, and the bounds.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::common::SampleWorld;
use super::common::server::{TestServer, text};

/// Jobs over the sample events (`counted`), over a source with no files that fails at once
/// (`broken`, its files due an hour after the window by default) and one that waits 1,000 hours for its files (past the server's clock) (`waits`), and a job reading `broken`.
pub(crate) const PIPELINE: &str = "\
version: 1
name: grid
start: 2024-01-01T00:00:00Z
sources:
  events:
    format: parquet
    path: events/date={date}/hour={hour}/*.parquet
    time_column: ts
  absent:
    format: parquet
    path: absent/date={date}/*.parquet
    time_column: ts
  late:
    format: parquet
    path: late/date={date}/*.parquet
    time_column: ts
    wait: 1000h
jobs:
  counted:
    grain: daily
    from: events
    count_distinct:
      column: user_id
  broken:
    grain: daily
    from: absent
    count_distinct:
      column: user_id
  after_broken:
    grain: daily
    from: broken
    count_distinct:
      column: user_id
  waits:
    grain: daily
    from: late
    count_distinct:
      column: user_id
";

/// The (label, state) of each cell of each job, by job.
fn states(grid: &Value) -> Vec<(String, Vec<(String, String)>)> {
    grid["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("{grid}"))
        .iter()
        .map(|row| {
            let cells = row["cells"]
                .as_array()
                .unwrap()
                .iter()
                .map(|cell| {
                    (
                        text(&cell["label"]).to_owned(),
                        text(&cell["state"]).to_owned(),
                    )
                })
                .collect();
            (text(&row["job"]).to_owned(), cells)
        })
        .collect()
}

fn cells(label_states: &[(&str, &str)]) -> Vec<(String, String)> {
    label_states
        .iter()
        .map(|(label, state)| ((*label).to_owned(), (*state).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grid_shows_each_partition_with_its_runs_state() {
    let world = SampleWorld::new(2_000, 2);
    let server = TestServer::start(&world, |_| {}).await;
    let (status, answer) = server.upload("grid", PIPELINE).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    // Nothing has run: every ended partition is missing; the server's clock is 2024-02-01, so
    // the partitions from then on are not due.
    let (status, grid) = server
        .get("/pipelines/grid/grid?from=2024-01-31&to=2024-02-03&job=counted")
        .await;
    assert_eq!(status, StatusCode::OK, "{grid}");
    assert_eq!(
        states(&grid),
        [(
            "counted".to_owned(),
            cells(&[
                ("2024-01-31", "missing"),
                ("2024-02-01", "not_due"),
                ("2024-02-02", "not_due")
            ])
        )]
    );
    assert_eq!(grid["now"], "2024-02-01T00:00:00.000Z");
    assert_eq!(grid["timezone"], "UTC");
    assert_eq!(grid["states"].as_array().map(Vec::len), Some(10));

    let grid = backfill_the_first_day(&server).await;
    let broken = &grid["jobs"][1]["cells"][0];
    // Failed on its source's readiness, before any attempt.
    assert_eq!(broken["attempts"], 0, "{broken}");
    assert_eq!(grid["jobs"][0]["cells"][0]["attempts"], 1, "{grid}");
    assert!(
        text(&broken["error"]).contains("no files match"),
        "{broken}"
    );
    assert_eq!(broken["start"], "2024-01-01T00:00:00.000Z");
    assert_eq!(broken["end"], "2024-01-02T00:00:00.000Z");
    let late = &grid["jobs"][3]["cells"][0];
    assert!(late["waitingSince"].is_string(), "{late}");
    assert!(
        grid["jobs"][0]["cells"][0]["finishedAt"].is_string(),
        "{grid}"
    );
    assert_eq!(grid["jobs"][0]["kind"], "count_distinct");
    assert_eq!(grid["jobs"][0]["grain"], "daily");

    // `counted` becomes weekly: its day run of Monday 2024-01-01 is not the week's, which has
    // none yet.
    let weekly = PIPELINE.replacen(
        "  counted:\n    grain: daily",
        "  counted:\n    grain: weekly",
        1,
    );
    let (status, answer) = server.upload("grid", &weekly).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (status, grid) = server
        .get("/pipelines/grid/grid?from=2024-01-01&to=2024-01-08&job=counted")
        .await;
    assert_eq!(status, StatusCode::OK, "{grid}");
    assert_eq!(
        states(&grid),
        [("counted".to_owned(), cells(&[("2024-W01", "missing")]))]
    );
    server.stop().await;
}

#[tokio::test]
async fn daily_partitions_on_dst_days_are_23_and_25_hours_and_the_range_is_bounded() {
    let world = SampleWorld::new(1_000, 1);
    let server = TestServer::start(&world, |c| c.core.limits.max_run_partitions = 100).await;
    let pipeline = PIPELINE
        .replace("name: grid", "name: berlin\ntimezone: Europe/Berlin")
        .replace(
            "start: 2024-01-01T00:00:00Z",
            "start: 2024-01-01T00:00:00+01:00",
        );
    let (status, answer) = server.upload("berlin", &pipeline).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let hours = |grid: &Value| -> Vec<(String, i64)> {
        grid["jobs"][0]["cells"]
            .as_array()
            .unwrap_or_else(|| panic!("{grid}"))
            .iter()
            .map(|cell| {
                let at =
                    |field: &str| chrono::DateTime::parse_from_rfc3339(text(&cell[field])).unwrap();
                (
                    text(&cell["label"]).to_owned(),
                    (at("end") - at("start")).num_hours(),
                )
            })
            .collect()
    };
    // Local dates: the range is Berlin's days.
    let (status, spring) = server
        .get("/pipelines/berlin/grid?from=2024-03-30&to=2024-04-01&job=counted")
        .await;
    assert_eq!(status, StatusCode::OK, "{spring}");
    assert_eq!(
        hours(&spring),
        [("2024-03-30".to_owned(), 24), ("2024-03-31".to_owned(), 23)]
    );
    assert_eq!(
        spring["jobs"][0]["cells"][0]["start"],
        "2024-03-29T23:00:00.000Z"
    );
    let (_, autumn) = server
        .get("/pipelines/berlin/grid?from=2024-10-27&to=2024-10-28&job=counted")
        .await;
    assert_eq!(hours(&autumn), [("2024-10-27".to_owned(), 25)]);

    // Bounds: more partitions than `limits.max_run_partitions`, a range backwards, an unknown
    // job or pipeline.
    let (status, answer) = server
        .get("/pipelines/berlin/grid?from=2024-01-01&to=2024-06-01")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer.to_string().contains("max_run_partitions"),
        "{answer}"
    );
    let (status, answer) = server
        .get("/pipelines/berlin/grid?from=2024-02-01&to=2024-01-01")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, answer) = server.get("/pipelines/berlin/grid?from=2024-01-01").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.to_string().contains("`to` is missing"), "{answer}");
    let (status, _) = server
        .get("/pipelines/berlin/grid?from=2024-01-01&to=2024-01-02&job=nope")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .get("/pipelines/nope/grid?from=2024-01-01&to=2024-01-02")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

/// Backfills 2024-01-01 of the `grid` pipeline (uploaded) and answers its grid over
/// 2024-01-01..03 once every run has settled: `counted` succeeded, `broken` failed,
/// `after_broken` upstream-failed, `waits` waiting; the 2nd missing.
pub(crate) async fn backfill_the_first_day(server: &TestServer) -> Value {
    // A backfill of the first day: `counted` succeeds, `broken` fails, `after_broken` is
    // skipped for it, `waits` waits for its files.
    let (status, backfill) = server
        .post_json(
            "/pipelines/grid/backfills",
            &json!({"from": "2024-01-01", "to": "2024-01-02"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{backfill}");
    let expected = vec![
        (
            "counted".to_owned(),
            cells(&[("2024-01-01", "succeeded"), ("2024-01-02", "missing")]),
        ),
        (
            "broken".to_owned(),
            cells(&[("2024-01-01", "failed"), ("2024-01-02", "missing")]),
        ),
        (
            "after_broken".to_owned(),
            cells(&[("2024-01-01", "upstream_failed"), ("2024-01-02", "missing")]),
        ),
        (
            "waits".to_owned(),
            cells(&[("2024-01-01", "waiting"), ("2024-01-02", "missing")]),
        ),
    ];
    let mut grid = Value::Null;
    for _ in 0..1000 {
        let (status, answer) = server
            .get("/pipelines/grid/grid?from=2024-01-01&to=2024-01-03")
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        grid = answer;
        if states(&grid) == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(states(&grid), expected, "{grid}");
    grid
}
