//! Manual runs on a manual clock: the job's retries with backoff and the readiness rule hold
//! for them as for backfills, and each planned run is reported once, in the plan's order.

use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::tests::{FLAKY, HOURLY_DAILY, harness, utc};
use super::*;

/// Runs `request` on a thread of its own, as a caller waiting on the scheduler does.
fn run_in_background(
    scheduler: &Scheduler,
    pipeline: &str,
    request: RunRequest,
) -> JoinHandle<Result<RunReport, ManualRunError>> {
    let scheduler = scheduler.clone();
    let pipeline = pipeline.to_owned();
    std::thread::spawn(move || scheduler.run_to_end(&pipeline, &request, &|| false, &mut |_| {}))
}

/// Waits, at most 30 s of wall-clock time, until `done` holds.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The manual run's report, failing the test if it has not ended within 30 s.
fn report_of(manual: JoinHandle<Result<RunReport, ManualRunError>>) -> RunReport {
    wait_for("the manual run to end", || manual.is_finished());
    manual
        .join()
        .expect("the manual run's thread")
        .expect("the manual run ends")
}

/// `yaml` without recurring runs, so only the test's requests run.
fn without_recurring_runs(yaml: &str) -> String {
    yaml.replacen(
        "start: 2024-01-01T00:00:00Z\n",
        "start: 2024-01-01T00:00:00Z\nschedule:\n  enabled: false\n",
        1,
    )
}

#[test]
fn a_manual_run_retries_a_failed_attempt_after_the_jobs_backoff() {
    let h = harness(
        &without_recurring_runs(FLAKY),
        utc(2024, 1, 1, 1) + TimeDelta::minutes(30),
        1,
    );
    h.write_hour(utc(2024, 1, 1, 0), &["a"]);
    h.failing.store(true, Ordering::SeqCst);
    let manual = run_in_background(
        &h.scheduler,
        "flaky",
        RunRequest {
            jobs: Some(vec!["after_hourly".into()]),
            from: utc(2024, 1, 1, 0),
            to: utc(2024, 1, 1, 1),
            force: false,
        },
    );
    wait_for("the first failure", || {
        h.run("flaky_hourly", utc(2024, 1, 1, 0))
            .is_some_and(|run| run.failures == 1 && run.retry_at.is_some())
    });
    let first = h.run("flaky_hourly", utc(2024, 1, 1, 0)).unwrap();
    assert_eq!(first.state, RunState::Failed, "{first:?}");
    assert!(!manual.is_finished(), "the manual run waits for the retry");

    // The cause goes away; the retry is due after the backoff (10 s ± 20%), not before.
    h.failing.store(false, Ordering::SeqCst);
    let retry_at = first.retry_at.unwrap();
    h.advance_to(retry_at - TimeDelta::seconds(1));
    assert_eq!(h.attempts.load(Ordering::SeqCst), 1);
    h.advance_to(retry_at);
    let report = report_of(manual);
    assert_eq!(
        (report.planned, report.computed, report.failed.len()),
        (2, 2, 0),
        "{report:?}"
    );
    let jobs: Vec<&str> = report.runs.iter().map(|run| run.key.job.as_str()).collect();
    assert_eq!(
        jobs,
        ["flaky_hourly", "after_hourly"],
        "in the plan's order"
    );
    let retried = h.run("flaky_hourly", utc(2024, 1, 1, 0)).unwrap();
    assert_eq!(
        (retried.state, retried.attempts),
        (RunState::Succeeded, 2),
        "{retried:?}"
    );
    assert_eq!(h.attempts.load(Ordering::SeqCst), 2);
}

#[test]
fn a_manual_run_waits_for_files_due_soon_and_fails_at_once_for_long_past_ones() {
    let now = utc(2024, 1, 2, 0) + TimeDelta::minutes(30);
    let h = harness(&without_recurring_runs(HOURLY_DAILY), now, 2);
    for hour in (0..23).filter(|hour| *hour != 5) {
        h.write_hour(utc(2024, 1, 1, hour), &["a", "b"]);
    }
    let manual = run_in_background(
        &h.scheduler,
        "shop",
        RunRequest {
            jobs: Some(vec!["users_hourly".into()]),
            from: utc(2024, 1, 1, 0),
            to: utc(2024, 1, 2, 0),
            force: false,
        },
    );
    // Hour 05 ended a day ago, far beyond its hour of `wait`: it fails without waiting.
    // Hour 23 ended half an hour ago: its files may still come.
    wait_for("hour 05 to fail and hour 23 to wait", || {
        h.state("users_hourly", utc(2024, 1, 1, 5)) == Some(RunState::Failed)
            && h.run("users_hourly", utc(2024, 1, 1, 23))
                .is_some_and(|run| run.waiting_since.is_some())
    });
    assert!(!manual.is_finished(), "the manual run waits for hour 23");
    h.write_hour(utc(2024, 1, 1, 23), &["c"]);
    // The source is looked at again a twentieth of its wait later.
    h.advance_to(now + TimeDelta::minutes(3));
    let report = report_of(manual);
    assert_eq!(
        (report.planned, report.computed, report.failed.len()),
        (24, 23, 1),
        "{report:?}"
    );
    let (key, error) = &report.failed[0];
    assert_eq!(key.partition_start, utc(2024, 1, 1, 5));
    assert!(error.contains("has no files for"), "{error}");
    assert!(error.contains("they were due by"), "{error}");
    assert_eq!(
        h.state("users_hourly", utc(2024, 1, 1, 23)),
        Some(RunState::Succeeded)
    );
}

#[test]
fn a_manual_run_of_a_running_backfills_range_shares_its_runs() {
    let yaml = without_recurring_runs(FLAKY).replace(
        "rust: { class: controlled }",
        "rust: { class: controlled, config: { sleep_ms: 30 } }",
    );
    let h = harness(&yaml, utc(2024, 1, 2, 0), 1);
    for hour in 0..6 {
        h.write_hour(utc(2024, 1, 1, hour), &["a"]);
    }
    let jobs = Some(vec!["after_hourly".to_owned()]);
    let (from, to) = (utc(2024, 1, 1, 0), utc(2024, 1, 1, 6));
    let backfill = h
        .scheduler
        .backfill(&BackfillRequest {
            pipeline: "flaky".into(),
            jobs: jobs.clone(),
            from,
            to,
            force: false,
        })
        .unwrap();
    wait_for("the backfill's first attempt", || {
        h.attempts.load(Ordering::SeqCst) >= 1
    });
    let report = report_of(run_in_background(
        &h.scheduler,
        "flaky",
        RunRequest {
            jobs,
            from,
            to,
            force: false,
        },
    ));
    assert_eq!(
        (report.planned, report.failed.len(), report.upstream_failed),
        (12, 0, 0),
        "{report:?}"
    );
    assert_eq!(report.computed + report.fresh, 12, "{report:?}");
    assert_eq!(
        h.attempts.load(Ordering::SeqCst),
        6,
        "each partition is computed once, for both requests"
    );
    let done = h.scheduler.backfill_status(&backfill.id).unwrap();
    assert_eq!(
        (done.state, done.succeeded, done.failed),
        ("finished", 12, 0),
        "{done:?}"
    );
    for hour in 0..6 {
        let run = h.run("flaky_hourly", utc(2024, 1, 1, hour)).unwrap();
        assert_eq!(
            (run.state, run.attempts, run.failures, run.commits),
            (RunState::Succeeded, 1, 0, 1),
            "{run:?}"
        );
    }
}
