//! Test files loaded against a pipeline and run in memory: DST days, given upstream rows,
//! failures and the problems a broken test file is reported with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::engine::PolarsEngine;
use crate::job::JobRegistry;

/// A pipeline in New York time: hourly distinct users, rolled up per day.
const PIPELINE: &str = "\
version: 1
name: ny
timezone: America/New_York
start: 2024-01-01
sources:
  events:
    format: parquet
    path: events/*.parquet
    time_column: ts
    timezone: America/New_York
jobs:
  users_hourly:
    grain: hourly
    from: events
    count_distinct: {column: user_id}
  users_daily:
    grain: daily
    from: users_hourly
    count_distinct: {column: user_id}
  purchases_daily:
    grain: daily
    from: events
    group_by:
      keys: [city]
      aggregations: {sales: sum(amount)}
";

struct Folder {
    dir: tempfile::TempDir,
}

impl Folder {
    fn new() -> Folder {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ny.yaml"), PIPELINE).unwrap();
        Folder { dir }
    }

    fn pipelines(&self) -> Vec<Arc<Pipeline>> {
        crate::pipeline::load_dir(self.dir.path(), &JobRegistry::new())
            .unwrap()
            .into_iter()
            .map(Arc::new)
            .collect()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load(&self, text: &str) -> Result<TestFile, String> {
        let path = self.write("ny.test.yaml", text);
        load_test_file(&path, &self.pipelines()).map_err(|errors| {
            // Messages without the temporary folder, as `file:line:column: …`.
            errors
                .to_string()
                .replace(&format!("{}/", self.dir.path().display()), "")
        })
    }
}

fn run_all(file: &TestFile) -> Vec<TestOutcome> {
    file.tests
        .iter()
        .map(|test| run_test(file, test, &PolarsEngine))
        .collect()
}

fn report(outcome: &TestOutcome) -> String {
    match &outcome.result {
        Ok(checks) => checks
            .iter()
            .flat_map(|check| check.comparison.diff_lines(""))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(error) => error.clone(),
    }
}

#[test]
fn the_pipeline_folder_loader_leaves_test_files_alone() {
    let folder = Folder::new();
    folder.write("ny.test.yaml", "not: a pipeline\n");
    assert_eq!(folder.pipelines().len(), 1);
    assert!(crate::pipeline::is_test_file(Path::new("a/shop.test.yml")));
    assert!(!crate::pipeline::is_pipeline_file(Path::new(
        "shop.test.yaml"
    )));
    assert!(crate::pipeline::is_pipeline_file(Path::new("shop.yaml")));
}

#[test]
fn daily_roll_ups_merge_23_hours_on_spring_forward_and_25_on_fall_back() {
    let folder = Folder::new();
    let file = folder
        .load(
            r#"
version: 1
pipeline: ny
tests:
  spring_forward:
    partition: 2024-03-10T03:30     # local time, after the clocks jumped from 02:00 to 03:00
    given:
      events:
        rows:                        # naive: wall-clock times in the source's timezone
          - {ts: "2024-03-09T23:59:59", user_id: 7}    # the day before
          - {ts: "2024-03-10T00:00", user_id: 1}       # the day's first instant
          - {ts: "2024-03-10T01:59:59", user_id: 2}
          - {ts: "2024-03-10T03:00", user_id: 3}       # the hour after the jump
          - {ts: "2024-03-10T03:45", user_id: 4}
          - {ts: "2024-03-10T23:59:59", user_id: 5}
          - {ts: "2024-03-11T00:00", user_id: 6}       # the day's end: the next day
    expect:
      users_hourly:
        rows: [{distinct_count: 2}]
      users_daily:
        rows: [{distinct_count: 5}]
  fall_back:
    partition: 2024-11-03T06:45:00Z  # 01:45 EST, the second 01:00 hour
    given:
      events:
        rows:
          - {ts: "2024-11-03T04:00:00Z", user_id: 1}   # 00:00 EDT
          - {ts: "2024-11-03T05:30:00Z", user_id: 2}   # 01:30 EDT
          - {ts: "2024-11-03T06:30:00Z", user_id: 3}   # 01:30 EST
          - {ts: "2024-11-04T04:59:59Z", user_id: 4}   # 23:59:59 EST
          - {ts: "2024-11-04T05:00:00Z", user_id: 5}   # the next day
    expect:
      users_hourly:
        rows: [{distinct_count: 1}]
      users_daily:
        rows: [{distinct_count: 4}]
"#,
        )
        .unwrap();
    let outcomes = run_all(&file);
    for outcome in &outcomes {
        assert!(outcome.passed(), "{}: {}", outcome.test, report(outcome));
    }
    // The day's hourly partitions, the tested hour among them, plus the day.
    assert_eq!(outcomes[0].runs, 23 + 1);
    assert_eq!(outcomes[1].runs, 25 + 1);
    let spring = &file.tests[0];
    assert_eq!(
        spring.expect[0].window.start.to_rfc3339(),
        "2024-03-10T07:00:00+00:00"
    );
    assert_eq!(spring.expect[1].window.duration().num_hours(), 23);
}

#[test]
fn a_wrong_expectation_fails_with_its_diff_and_a_failing_job_with_its_error() {
    let folder = Folder::new();
    let file = folder
        .load(
            r#"
version: 1
pipeline: ny
tests:
  sums:
    partition: 2024-02-01
    given:
      events:
        rows:
          - {ts: "2024-02-01T10:00", user_id: 1, city: Paris, amount: 2.5}
          - {ts: "2024-02-01T11:00", user_id: 2, city: Paris, amount: 1.0}
          - {ts: "2024-02-01T12:00", user_id: 3, city: Lyon, amount: 4.0}
    expect:
      purchases_daily:
        rows:
          - {city: Paris, sales: 3.5}
          - {city: Lyon, sales: 5.0}
          - {city: Nice, sales: 1.0}
  no_amount:
    partition: 2024-02-01
    given:
      events:
        rows: [{ts: "2024-02-01T10:00", city: Paris}]
    expect:
      purchases_daily:
        rows: []
"#,
        )
        .unwrap();
    let outcomes = run_all(&file);
    assert!(!outcomes[0].passed());
    assert_eq!(
        report(&outcomes[0]),
        "~ {city: Lyon, sales: 5.0 → 4.0}\n- {city: Nice, sales: 1.0}"
    );
    assert!(!outcomes[1].passed());
    let error = report(&outcomes[1]);
    assert!(
        error.starts_with(
            "job `purchases_daily`, daily partition 2024-02-01 [2024-02-01T05:00:00Z, \
             2024-02-02T05:00:00Z): "
        ),
        "{error}"
    );
    assert!(error.contains("amount"), "{error}");
}

#[test]
fn given_upstream_partitions_replace_the_jobs_that_made_them() {
    let folder = Folder::new();
    let file = folder
        .load(
            r#"
version: 1
pipeline: ny
tests:
  from_hours:
    partition: 2024-02-01
    given:
      users_hourly:
        partitions:
          2024-02-01T08:00: {state: [{user_id: 1}, {user_id: 2}]}
          2024-02-01T09:15: {state: [{user_id: 2}]}
          2024-02-02T00:00: {state: [{user_id: 3}]}    # the next day: not read
    expect:
      users_daily:
        rows: [{distinct_count: 2}]
"#,
        )
        .unwrap();
    let outcomes = run_all(&file);
    assert!(outcomes[0].passed(), "{}", report(&outcomes[0]));
    assert_eq!(outcomes[0].runs, 1, "the hourly job is given, not computed");
}

#[test]
fn problems_are_reported_at_their_line() {
    let folder = Folder::new();
    std::fs::write(folder.dir.path().join("..").join("outside.csv"), "ts\n").ok();
    let err = folder
        .load(
            r#"version: 1
pipeline: ny
tests:
  broken:
    partition: 2024-02-30
    given:
      events:
        rows:
          - {ts: "2024-02-01T10:00", user_id: 1}
          - {ts: soon, user_id: 2}
      nothing:
        rows: []
    expect:
      events:
        rows: []
  missing_source:
    partition: 2024-02-01
    expect:
      users_daily:
        rows:
          - {distinct_count: 1}
          - {count: 2}
  fixtures:
    partition: 2024-02-01
    given:
      events:
        csv: ../outside.csv
      users_daily:
        rows: []
    expect:
      users_hourly:
        rows: []
"#,
        )
        .unwrap_err();
    let expected = [
        "ny.test.yaml:5:5: test `broken`, field `partition`: bad instant `2024-02-30`: no such \
         date or time",
        "ny.test.yaml:10:11: test `broken`, field `given.events.rows`: row 2, column `ts`: a \
         string `soon` is not a date-time",
        "ny.test.yaml:11:7: test `broken`, field `given.nothing`: pipeline `ny` has no source \
         or job `nothing` (known: events, users_hourly, users_daily, purchases_daily)",
        "ny.test.yaml:21:11: test `missing_source`, field `expect.users_daily.rows`: row 1 has \
         no `count`, which other rows name",
        "ny.test.yaml:27:9: test `fixtures`, field `given.events.csv`: `../outside.csv` must be \
         a path relative to the test file's folder, without `..`",
        "ny.test.yaml:28:7: test `fixtures`, field `given.users_daily`: job `users_daily` is a \
         count_distinct: give its distinct keys as `state:`",
    ];
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{err}");
    for (line, expected) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(expected),
            "{line}\n  expected: {expected}…"
        );
    }

    let head = "version: 1\npipeline: ny\ntests:\n  t:\n    partition: 2024-02-01\n    expect:\n";
    let err = folder
        .load(&format!("{head}      events:\n        rows: []\n"))
        .unwrap_err();
    assert!(
        err.starts_with("ny.test.yaml:7:7: test `t`, field `expect.events`: `events` is a source"),
        "{err}"
    );
    // Checked once the test has no other problem.
    let err = folder
        .load(&format!("{head}      users_daily:\n        rows: []\n"))
        .unwrap_err();
    assert!(
        err.starts_with(
            "ny.test.yaml:7:7: test `t`, field `expect.users_daily`: job `users_daily` reads \
             source `events`, which the test does not give"
        ),
        "{err}"
    );

    let err = folder
        .load("version: 1\npipeline: ny\ntests:\n  t:\n    partition: 2024-02-01\n    rowz: 1\n")
        .unwrap_err();
    assert!(
        err.starts_with("ny.test.yaml:6:5: tests.t: unknown field `rowz`"),
        "{err}"
    );
    let err = folder
        .load("version: 1\npipeline: shop\ntests: {}\n")
        .unwrap_err();
    assert!(
        err.starts_with("ny.test.yaml:2:1: no pipeline `shop` in"),
        "{err}"
    );
    let deep = format!(
        "version: 1\npipeline: ny\ntests: {}{}\n",
        "[".repeat(100),
        "]".repeat(100)
    );
    assert!(
        folder
            .load(&deep)
            .unwrap_err()
            .contains("nested about 100 deep")
    );
}

#[test]
fn update_rewrites_what_differs_and_the_result_passes() {
    let folder = Folder::new();
    let text = r#"version: 1
pipeline: ny
tests:
  sums:
    partition: 2024-02-01
    given:
      events:
        rows:
          - {ts: "2024-02-01T10:00", user_id: 1, city: "New York", amount: 2.5}
          - {ts: "2024-02-01T11:00", user_id: 2, city: "true", amount: 1.25}
    expect:
      purchases_daily:   # to be filled in
        rows: []
"#;
    let file = folder.load(text).unwrap();
    let outcome = run_test(&file, &file.tests[0], &PolarsEngine);
    let check = &outcome.result.as_ref().unwrap()[0];
    assert!(!check.comparison.passed);
    let columns = vec!["city".to_owned(), "sales".to_owned()];
    let rewritten = rewrite_expectations(
        &file.text,
        &[Rewrite {
            test: "sums".to_owned(),
            job: "purchases_daily".to_owned(),
            rows: compare::frame_cells(&check.produced, &columns),
            columns,
        }],
    )
    .unwrap();
    assert!(rewritten.ends_with(
        "      purchases_daily:   # to be filled in\n        rows:\n          - {city: New York, \
         sales: 2.5}\n          - {city: \"true\", sales: 1.25}\n"
    ));
    let reloaded = folder.load(&rewritten).unwrap();
    let outcomes = run_all(&reloaded);
    assert!(outcomes[0].passed(), "{}", report(&outcomes[0]));
}
