//! Scheduler tests on a manual clock, a real sled store in a temp dir and real polars over
//! CSV files. Nothing here sleeps for wall-clock time except to let worker threads finish.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use polars::prelude::*;

use super::*;
use crate::clock::ManualClock;
use crate::job::{Job, JobContext, JobError, JobOutput, JobRegistry};
use crate::results::ResultCache;
use crate::store::RunRecord;
use crate::store::RunStore;

pub(super) fn utc(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

/// A job that fails while `failing` is set, counting its attempts, and sleeps `sleep` first.
#[derive(Debug)]
struct Controlled {
    failing: Arc<AtomicBool>,
    attempts: Arc<AtomicU32>,
    sleep: Duration,
}

impl Job for Controlled {
    fn kind(&self) -> &str {
        "controlled"
    }
    fn validate(&self, _inputs: &[String]) -> Result<(), Vec<String>> {
        Ok(())
    }
    fn run(&self, ctx: &JobContext<'_>) -> Result<JobOutput, JobError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(self.sleep);
        if self.failing.load(Ordering::SeqCst) {
            return Err(JobError::Failed("injected failure".into()));
        }
        let frame = df!("start" => [ctx.window.start.timestamp()])?;
        Ok(JobOutput::frame(frame))
    }
}

pub(super) struct Harness {
    _dir: tempfile::TempDir,
    data: PathBuf,
    pub(super) clock: Arc<ManualClock>,
    pub(super) scheduler: Scheduler,
    store: Store,
    pipeline: Arc<Pipeline>,
    pub(super) failing: Arc<AtomicBool>,
    pub(super) attempts: Arc<AtomicU32>,
}

fn registry(failing: &Arc<AtomicBool>, attempts: &Arc<AtomicU32>) -> JobRegistry {
    let mut registry = JobRegistry::new();
    let (f, a) = (failing.clone(), attempts.clone());
    registry.register("controlled", move |config| {
        let sleep_ms = config.get("sleep_ms").and_then(|v| v.as_u64()).unwrap_or(0);
        Ok(Arc::new(Controlled {
            failing: f.clone(),
            attempts: a.clone(),
            sleep: Duration::from_millis(sleep_ms),
        }) as Arc<dyn Job>)
    });
    registry
}

pub(super) fn harness(yaml: &str, now: DateTime<Utc>, workers: usize) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let store_path = dir.path().join("store");
    let failing = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU32::new(0));
    let pipeline = Arc::new(
        crate::pipeline::parse_pipeline(yaml, Path::new("t.yaml"), &registry(&failing, &attempts))
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let clock = Arc::new(ManualClock::new(now));
    let store = Store::open(&store_path).unwrap();
    let scheduler = start(&store, &data, &clock, workers, &pipeline);
    Harness {
        _dir: dir,
        data,
        clock,
        scheduler,
        store,
        pipeline,
        failing,
        attempts,
    }
}

fn start(
    store: &Store,
    data: &Path,
    clock: &Arc<ManualClock>,
    workers: usize,
    pipeline: &Arc<Pipeline>,
) -> Scheduler {
    let materializer = Materializer::new(
        store.clone(),
        Arc::new(ResultCache::new(64 << 20)),
        data.to_path_buf(),
        clock.clone(),
    );
    Scheduler::start(
        store.clone(),
        materializer,
        clock.clone(),
        SchedulerConfig {
            recurring: true,
            workers,
            resume: true,
        },
        vec![pipeline.clone()],
    )
    .unwrap()
}

impl Harness {
    /// Ticks at the clock's instant until nothing more happens at it.
    pub(super) fn settle(&self) -> Option<DateTime<Utc>> {
        loop {
            let next = self.scheduler.tick(self.clock.now());
            assert!(
                self.scheduler.wait_idle(Duration::from_secs(30)),
                "runs did not finish"
            );
            let again = self.scheduler.tick(self.clock.now());
            let summary = self.scheduler.summary();
            if summary.ready == 0 && summary.running == 0 && again == next {
                return next;
            }
        }
    }

    pub(super) fn advance_to(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.clock.set(at);
        self.settle()
    }

    pub(super) fn run(&self, job: &str, start: DateTime<Utc>) -> Option<RunRecord> {
        self.store
            .run(&RunKey::new(&self.pipeline.name, job, start))
            .unwrap()
    }

    pub(super) fn state(&self, job: &str, start: DateTime<Utc>) -> Option<RunState> {
        self.run(job, start).map(|r| r.state)
    }

    fn count(&self, job: &str, state: RunState) -> usize {
        self.store
            .runs_of_pipeline(&self.pipeline.name)
            .unwrap()
            .into_iter()
            .filter(|(k, r)| k.job == job && r.state == state)
            .count()
    }

    /// One CSV file per hour with `rows` events of that hour.
    pub(super) fn write_hour(&self, hour: DateTime<Utc>, users: &[&str]) {
        let dir = self
            .data
            .join(format!("events/date={}", hour.format("%Y-%m-%d")));
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = String::from("ts,user\n");
        for (i, user) in users.iter().enumerate() {
            text.push_str(&format!(
                "{},{user}\n",
                (hour + TimeDelta::minutes(i as i64)).format("%Y-%m-%d %H:%M:%S")
            ));
        }
        std::fs::write(dir.join(format!("{}.csv", hour.format("%H"))), text).unwrap();
    }

    fn result_value(&self, job: &str, start: DateTime<Utc>, column: &str) -> i64 {
        let key = RunKey::new(&self.pipeline.name, job, start);
        let frame = self
            .scheduler
            .inner
            .materializer
            .results()
            .load(&key)
            .unwrap()
            .frame;
        frame
            .column(column)
            .unwrap()
            .cast(&DataType::Int64)
            .unwrap()
            .i64()
            .unwrap()
            .get(0)
            .unwrap()
    }
}

pub(super) const HOURLY_DAILY: &str = "version: 1
name: shop
start: 2024-01-01T00:00:00Z
sources:
  events:
    format: csv
    path: events/date={date}/{hour}.csv
    time_column: ts
    wait: 1h
jobs:
  users_hourly:
    grain: hourly
    from: events
    count_distinct: { column: user }
  users_daily:
    grain: daily
    from: users_hourly
    count_distinct: { column: user }
";

#[test]
fn recurring_runs_follow_the_clock_and_a_daily_run_waits_for_its_hours() {
    let h = harness(HOURLY_DAILY, utc(2024, 1, 1, 0), 2);
    for hour in 0..24 {
        h.write_hour(
            utc(2024, 1, 1, hour),
            &["a", if hour % 2 == 0 { "b" } else { "c" }],
        );
    }
    // Nothing is due before the first hour closes; the scheduler says when it is.
    let next = h.advance_to(utc(2024, 1, 1, 0) + TimeDelta::minutes(30));
    assert_eq!(next, Some(utc(2024, 1, 1, 1)));
    assert_eq!(h.state("users_hourly", utc(2024, 1, 1, 0)), None);

    h.advance_to(utc(2024, 1, 1, 1));
    assert_eq!(
        h.state("users_hourly", utc(2024, 1, 1, 0)),
        Some(RunState::Succeeded)
    );
    assert_eq!(h.state("users_daily", utc(2024, 1, 1, 0)), None);

    h.advance_to(utc(2024, 1, 1, 23));
    assert_eq!(h.count("users_hourly", RunState::Succeeded), 23);
    assert_eq!(h.state("users_daily", utc(2024, 1, 1, 0)), None);

    let next = h.advance_to(utc(2024, 1, 2, 0));
    assert_eq!(h.count("users_hourly", RunState::Succeeded), 24);
    assert_eq!(
        h.state("users_daily", utc(2024, 1, 1, 0)),
        Some(RunState::Succeeded)
    );
    assert_eq!(
        h.result_value("users_daily", utc(2024, 1, 1, 0), "distinct_count"),
        3
    );
    // The hour of the new day is next; the day's first hour has no file yet and waits.
    assert_eq!(next, Some(utc(2024, 1, 2, 1)));
    for (key, record) in h.store.runs_of_pipeline("shop").unwrap() {
        if record.state == RunState::Succeeded {
            assert_eq!(record.commits, 1, "{key} committed once");
        }
    }
}

#[test]
fn catch_up_keeps_every_job_within_the_cap_upstream_runs_included() {
    let yaml = HOURLY_DAILY.replace("jobs:\n", "schedule:\n  catchup: 30\njobs:\n");
    let h = harness(&yaml, utc(2024, 1, 1, 0), 2);
    for day in 1..=4 {
        for hour in 0..24 {
            h.write_hour(utc(2024, 1, day, hour), &["a"]);
        }
    }
    // Down for four days: 96 hourly windows missed, 30 kept (from Jan 3, 18:00). The daily
    // job missed 4, within its cap, but its days before that point would bring in hourly
    // runs the hourly cap left out: only Jan 4 is planned, reading hourly runs already kept.
    h.advance_to(utc(2024, 1, 5, 0));
    assert_eq!(h.count("users_hourly", RunState::Succeeded), 30);
    assert_eq!(h.state("users_hourly", utc(2024, 1, 3, 17)), None);
    assert_eq!(
        h.state("users_hourly", utc(2024, 1, 3, 18)),
        Some(RunState::Succeeded)
    );
    assert_eq!(h.count("users_daily", RunState::Succeeded), 1);
    assert_eq!(
        h.state("users_daily", utc(2024, 1, 4, 0)),
        Some(RunState::Succeeded)
    );
    assert_eq!(h.state("users_daily", utc(2024, 1, 3, 0)), None);
    // Nothing else waits: the rest is for a backfill.
    assert_eq!(h.store.runs_of_pipeline("shop").unwrap().len(), 31);
}

#[test]
fn a_run_stays_upstream_failed_while_its_other_upstreams_succeed() {
    let h = harness(HOURLY_DAILY, utc(2024, 1, 1, 0), 2);
    for hour in 0..24 {
        h.write_hour(utc(2024, 1, 1, hour), &["a"]);
    }
    // Hour 05 is corrupt (no `user` column): its run fails for good (no retries).
    std::fs::write(
        h.data.join("events/date=2024-01-01/05.csv"),
        "ts,who\n2024-01-01 05:00:00,a\n",
    )
    .unwrap();
    h.advance_to(utc(2024, 1, 1, 23));
    assert_eq!(
        h.state("users_hourly", utc(2024, 1, 1, 5)),
        Some(RunState::Failed)
    );
    // The daily run is planned while hour 23 is still to run; that hour succeeding must not
    // unblock it: its failed upstream is hour 05.
    h.advance_to(utc(2024, 1, 2, 0));
    assert_eq!(
        h.state("users_hourly", utc(2024, 1, 1, 23)),
        Some(RunState::Succeeded)
    );
    let daily = h.run("users_daily", utc(2024, 1, 1, 0)).unwrap();
    assert_eq!(daily.state, RunState::UpstreamFailed, "{daily:?}");
    assert!(
        daily
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("users_hourly"),
        "{daily:?}"
    );
    assert_eq!(h.scheduler.summary().upstream_failed, 1);
    assert_eq!(h.scheduler.summary().waiting, 0);

    // Fixed and re-run: the daily run goes by itself.
    h.write_hour(utc(2024, 1, 1, 5), &["b"]);
    h.scheduler
        .backfill(&BackfillRequest {
            pipeline: "shop".into(),
            jobs: Some(vec!["users_hourly".into()]),
            from: utc(2024, 1, 1, 5),
            to: utc(2024, 1, 1, 6),
            force: false,
        })
        .unwrap();
    h.settle();
    assert_eq!(
        h.state("users_daily", utc(2024, 1, 1, 0)),
        Some(RunState::Succeeded)
    );
    assert_eq!(
        h.result_value("users_daily", utc(2024, 1, 1, 0), "distinct_count"),
        2
    );
}

pub(super) const FLAKY: &str = "version: 1
name: flaky
start: 2024-01-01T00:00:00Z
sources:
  events:
    format: csv
    path: events/date={date}/{hour}.csv
    time_column: ts
    wait: 0s
jobs:
  flaky_hourly:
    grain: hourly
    from: events
    rust: { class: controlled }
    retries: 2
    retry_backoff: 10s
  after_hourly:
    grain: hourly
    from: flaky_hourly
    select: {}
  after_daily:
    grain: daily
    from: after_hourly
    select: {}
";

#[test]
fn failures_retry_with_backoff_then_mark_downstream_upstream_failed_until_retried() {
    let h = harness(FLAKY, utc(2024, 1, 1, 0), 1);
    h.write_hour(utc(2024, 1, 1, 0), &["a"]);
    h.failing.store(true, Ordering::SeqCst);
    let t0 = utc(2024, 1, 1, 1);
    h.advance_to(t0);
    let first = h.run("flaky_hourly", utc(2024, 1, 1, 0)).unwrap();
    assert_eq!(first.state, RunState::Failed);
    let retry_at = first.retry_at.expect("a retry is planned");
    // 10 s ± 20% jitter.
    let wait = (retry_at - t0).num_milliseconds();
    assert!((8_000..=12_000).contains(&wait), "first backoff {wait} ms");
    assert_eq!(
        h.state("after_hourly", utc(2024, 1, 1, 0)),
        Some(RunState::Pending)
    );

    h.advance_to(retry_at);
    let second = h.run("flaky_hourly", utc(2024, 1, 1, 0)).unwrap();
    assert_eq!(
        (second.state, second.failures),
        (RunState::Failed, 2),
        "{second:?}"
    );
    let wait = (second.retry_at.unwrap() - retry_at).num_milliseconds();
    assert!(
        (16_000..=24_000).contains(&wait),
        "second backoff doubles: {wait} ms"
    );

    h.advance_to(second.retry_at.unwrap());
    let last = h.run("flaky_hourly", utc(2024, 1, 1, 0)).unwrap();
    assert_eq!(
        (last.state, last.retry_at, last.attempts),
        (RunState::Failed, None, 3)
    );
    let after = h.run("after_hourly", utc(2024, 1, 1, 0)).unwrap();
    assert_eq!(after.state, RunState::UpstreamFailed);
    assert!(after.error.unwrap().contains("flaky_hourly"));

    // The cause is fixed and the failed partition retried by a backfill: the downstream runs
    // go by themselves.
    h.failing.store(false, Ordering::SeqCst);
    let status = h
        .scheduler
        .backfill(&BackfillRequest {
            pipeline: "flaky".into(),
            jobs: Some(vec!["flaky_hourly".into()]),
            from: utc(2024, 1, 1, 0),
            to: utc(2024, 1, 1, 1),
            force: false,
        })
        .unwrap();
    h.settle();
    assert_eq!(
        h.state("flaky_hourly", utc(2024, 1, 1, 0)),
        Some(RunState::Succeeded)
    );
    assert_eq!(
        h.state("after_hourly", utc(2024, 1, 1, 0)),
        Some(RunState::Succeeded)
    );
    let done = h.scheduler.backfill_status(&status.id).unwrap();
    assert_eq!(
        (done.state, done.succeeded, done.remaining),
        ("finished", 1, 0)
    );
}

#[test]
fn a_partition_waits_for_its_source_files_within_a_bound() {
    let h = harness(HOURLY_DAILY, utc(2024, 1, 1, 0), 1);
    h.advance_to(utc(2024, 1, 1, 1));
    let waiting = h.run("users_hourly", utc(2024, 1, 1, 0)).unwrap();
    assert_eq!(waiting.state, RunState::Pending, "{waiting:?}");
    assert!(
        waiting
            .error
            .unwrap()
            .contains("waiting for files of source `events`")
    );
    // The files arrive; the next look (a twentieth of the hour later) finds them.
    h.write_hour(utc(2024, 1, 1, 0), &["a", "b"]);
    h.advance_to(utc(2024, 1, 1, 1) + TimeDelta::minutes(3));
    assert_eq!(
        h.state("users_hourly", utc(2024, 1, 1, 0)),
        Some(RunState::Succeeded)
    );
    assert_eq!(
        h.result_value("users_hourly", utc(2024, 1, 1, 0), "distinct_count"),
        2
    );

    // The next hour's files never come: after the hour's wait it fails, naming the source.
    let mut at = utc(2024, 1, 1, 2);
    while at <= utc(2024, 1, 1, 3) + TimeDelta::minutes(1) {
        h.advance_to(at);
        at += TimeDelta::minutes(3);
    }
    let failed = h.run("users_hourly", utc(2024, 1, 1, 1)).unwrap();
    assert_eq!(failed.state, RunState::Failed);
    assert!(
        failed.error.unwrap().contains("has no files"),
        "empty results are never written"
    );
    assert_eq!(
        h.store
            .result_meta(&RunKey::new("shop", "users_hourly", utc(2024, 1, 1, 1)))
            .unwrap(),
        None
    );
}

#[test]
fn a_partition_long_past_its_wait_fails_at_once_when_its_files_are_missing() {
    // A month after the window: the files were due within the source's hour of wait.
    let h = harness(HOURLY_DAILY, utc(2024, 2, 1, 0), 1);
    h.scheduler
        .backfill(&BackfillRequest {
            pipeline: "shop".into(),
            jobs: Some(vec!["users_hourly".into()]),
            from: utc(2024, 1, 1, 0),
            to: utc(2024, 1, 1, 1),
            force: false,
        })
        .unwrap();
    h.settle();
    let failed = h.run("users_hourly", utc(2024, 1, 1, 0)).unwrap();
    assert_eq!(failed.state, RunState::Failed, "{failed:?}");
    let error = failed.error.unwrap();
    assert!(
        error.contains("has no files") && error.contains("due by 2024-01-01T02:00:00+00:00"),
        "{error}"
    );
    assert_eq!(h.clock.now(), utc(2024, 2, 1, 0), "nothing waited");
}

#[test]
fn failures_of_one_job_are_logged_a_few_a_minute() {
    let mut log = FailureLog::default();
    let key = |job: &str, hour: u32| RunKey::new("p", job, utc(2024, 1, 1, hour));
    let t0 = utc(2024, 1, 2, 0);
    let error = |hour: u32| format!("no files for hour {hour}");
    let loud: Vec<bool> = [5, 3, 4, 9, 1, 7]
        .into_iter()
        .map(|hour| log.should_log(&key("a", hour), &error(hour), t0))
        .collect();
    assert_eq!(loud, [true, true, true, false, false, false]);
    // Another job has its own budget; a new minute starts a new one.
    assert!(log.should_log(&key("b", 0), "x", t0));
    assert!(!log.should_log(&key("a", 2), &error(2), t0 + TimeDelta::seconds(59)));
    // The minute is over: the held-back failures are summed up in one line.
    let summaries = log.summarise(t0 + TimeDelta::seconds(60));
    assert_eq!(
        summaries,
        [HeldBack {
            pipeline: "p".into(),
            job: "a".into(),
            count: 4,
            first_partition: utc(2024, 1, 1, 1),
            last_partition: utc(2024, 1, 1, 9),
            first_error: error(9),
        }]
    );
    assert!(log.should_log(&key("a", 8), &error(8), t0 + TimeDelta::seconds(60)));
    assert!(log.summarise(t0 + TimeDelta::minutes(3)).is_empty());
    assert!(log.jobs.is_empty());
}

#[test]
fn disabling_a_pipeline_cancels_its_waiting_recurring_runs() {
    let h = harness(HOURLY_DAILY, utc(2024, 1, 1, 0), 1);
    // No files: hour 00 waits for them.
    h.advance_to(utc(2024, 1, 1, 1));
    assert_eq!(
        h.state("users_hourly", utc(2024, 1, 1, 0)),
        Some(RunState::Pending)
    );
    let disabled = HOURLY_DAILY.replace("jobs:\n", "schedule:\n  enabled: false\njobs:\n");
    let pipeline = crate::pipeline::parse_pipeline(
        &disabled,
        Path::new("t.yaml"),
        &registry(&h.failing, &h.attempts),
    )
    .unwrap();
    h.scheduler.set_pipeline(Arc::new(pipeline));
    let cancelled = h.run("users_hourly", utc(2024, 1, 1, 0)).unwrap();
    assert_eq!(cancelled.state, RunState::Cancelled, "{cancelled:?}");
    assert!(cancelled.error.unwrap().contains("was disabled"));
    // And nothing new is planned.
    h.advance_to(utc(2024, 1, 1, 5));
    assert_eq!(h.state("users_hourly", utc(2024, 1, 1, 3)), None);
    assert_eq!(
        h.scheduler.summary().waiting + h.scheduler.summary().delayed,
        0
    );
}

#[test]
fn the_runs_a_backfill_waits_on_are_found_through_recurring_ones() {
    let key = |job: &str| RunKey::new("p", job, utc(2024, 1, 1, 0));
    let tracked = |backfill: Option<&str>| Tracked {
        window: crate::partition::Window {
            start: utc(2024, 1, 1, 0),
            end: utc(2024, 1, 1, 1),
        },
        phase: Phase::Waiting,
        unmet: 1,
        failed_upstreams: Vec::new(),
        force: false,
        backfill: backfill.map(Arc::from),
        failures: 0,
        waiting_since: None,
        manual_runs: Vec::new(),
        last_attempt_ms: 0.0,
    };
    let mut state = State::default();
    // a ← b ← c (c a backfill's run, a and b recurring), and d on its own.
    state.runs.insert(key("a"), tracked(None));
    state.runs.insert(key("b"), tracked(None));
    state.runs.insert(key("c"), tracked(Some("bf")));
    state.runs.insert(key("d"), tracked(None));
    state.dependents.insert(key("a"), vec![key("b")]);
    state.dependents.insert(key("b"), vec![key("c")]);
    let needed = needed_by_explicit_requests(&state);
    let mut names: Vec<&str> = needed.iter().map(|k| k.job.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["a", "b", "c"]);
}

#[test]
fn a_backfill_eta_holds_while_it_only_waits() {
    let since = Instant::now();
    let progress = Progress {
        total: 10,
        succeeded: 3,
        failed: 1,
        cancelled: 0,
        since: Some((since, 0)),
        last_done: Some(since + Duration::from_secs(8)),
    };
    // 4 runs ended in 8 s: 6 more take 12 s, however long it has waited since.
    assert_eq!(eta_seconds(&progress, 6), Some(12.0));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(eta_seconds(&progress, 6), Some(12.0));
    let nothing_yet = Progress {
        since: Some((since, 0)),
        ..Progress::default()
    };
    assert_eq!(eta_seconds(&nothing_yet, 10), None);
}

#[test]
fn a_run_past_its_timeout_fails_and_its_late_result_is_discarded() {
    let yaml = FLAKY
        .replace(
            "rust: { class: controlled }",
            "rust: { class: controlled, config: { sleep_ms: 400 } }",
        )
        .replace("retries: 2", "retries: 0\n    timeout: 1s");
    let h = harness(&yaml, utc(2024, 1, 1, 0), 1);
    h.write_hour(utc(2024, 1, 1, 0), &["a"]);
    h.clock.set(utc(2024, 1, 1, 1));
    h.scheduler.tick(h.clock.now());
    // The attempt is computing (it sleeps 400 ms of real time); the clock passes its timeout.
    std::thread::sleep(Duration::from_millis(50));
    h.clock.set(utc(2024, 1, 1, 1) + TimeDelta::seconds(2));
    h.scheduler.tick(h.clock.now());
    assert!(h.scheduler.wait_idle(Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(500));
    let run = h.run("flaky_hourly", utc(2024, 1, 1, 0)).unwrap();
    assert_eq!(run.state, RunState::Failed);
    assert!(run.error.unwrap().contains("timed out after 1s"));
    assert_eq!(
        run.commits, 0,
        "the attempt finished after its timeout and committed nothing"
    );
    assert_eq!(h.attempts.load(Ordering::SeqCst), 1);
}

#[test]
fn backfills_pause_resume_and_cancel_and_restatements_cascade() {
    let yaml = HOURLY_DAILY.replace("wait: 1h", "wait: 0s");
    let h = harness(&yaml, utc(2024, 1, 1, 0), 1);
    for day in 1..=3 {
        for hour in 0..24 {
            h.write_hour(utc(2024, 1, day, hour), &["a", "b"]);
        }
    }
    // No recurring runs at 2024-01-01T00:00, so everything here is the backfill's.
    let request = BackfillRequest {
        pipeline: "shop".into(),
        jobs: Some(vec!["users_daily".into()]),
        from: utc(2024, 1, 1, 0),
        to: utc(2024, 1, 3, 0),
        force: false,
    };
    let started = h.scheduler.backfill(&request).unwrap();
    assert_eq!(started.total, 50, "2 daily runs and their 48 hourly runs");
    let paused = h.scheduler.pause_backfill(&started.id).unwrap();
    assert_eq!(paused.state, "paused");
    h.settle();
    let held = h.scheduler.backfill_status(&started.id).unwrap();
    assert!(
        held.remaining > 0,
        "a paused backfill holds its queued runs: {held:?}"
    );
    h.scheduler.resume_backfill(&started.id).unwrap();
    h.settle();
    let done = h.scheduler.backfill_status(&started.id).unwrap();
    assert_eq!(
        (done.state, done.succeeded, done.failed),
        ("finished", 50, 0)
    );

    // A range typed wrong is refused before anything is planned.
    let huge = h.scheduler.backfill(&BackfillRequest {
        to: utc(9999, 1, 1, 0),
        ..request.clone()
    });
    assert!(
        matches!(huge, Err(SchedulerError::TooLarge { .. })),
        "{huge:?}"
    );

    // Backfilling again finds everything fresh.
    let again = h.scheduler.backfill(&request).unwrap();
    assert_eq!(
        (again.state, again.total, again.remaining),
        ("finished", 50, 0)
    );

    // New data for one hour; restating that hour recomputes it and its day, nothing else.
    h.write_hour(utc(2024, 1, 1, 5), &["a", "b", "z"]);
    let restated = h
        .scheduler
        .restate(&BackfillRequest {
            pipeline: "shop".into(),
            jobs: Some(vec!["users_hourly".into()]),
            from: utc(2024, 1, 1, 5),
            to: utc(2024, 1, 1, 6),
            force: true,
        })
        .unwrap();
    assert_eq!(restated.total, 2);
    h.settle();
    assert_eq!(
        h.run("users_hourly", utc(2024, 1, 1, 5)).unwrap().commits,
        2
    );
    assert_eq!(
        h.run("users_hourly", utc(2024, 1, 1, 6)).unwrap().commits,
        1
    );
    assert_eq!(h.run("users_daily", utc(2024, 1, 1, 0)).unwrap().commits, 2);
    assert_eq!(h.run("users_daily", utc(2024, 1, 2, 0)).unwrap().commits, 1);
    assert_eq!(
        h.result_value("users_daily", utc(2024, 1, 1, 0), "distinct_count"),
        3
    );

    // A cancelled backfill leaves its queued runs cancelled, not pending.
    let day3 = h
        .scheduler
        .backfill(&BackfillRequest {
            from: utc(2024, 1, 3, 0),
            to: utc(2024, 1, 4, 0),
            ..request
        })
        .unwrap();
    h.scheduler.pause_backfill(&day3.id).unwrap();
    h.settle();
    let cancelled = h.scheduler.cancel_backfill(&day3.id).unwrap();
    assert_eq!(cancelled.state, "cancelled");
    assert_eq!(cancelled.remaining, 0, "{cancelled:?}");
    assert!(
        h.count("users_hourly", RunState::Cancelled) + h.count("users_daily", RunState::Cancelled)
            > 0
    );
    assert!(h.scheduler.resume_backfill(&day3.id).is_err());
}

#[test]
fn a_restart_requeues_interrupted_runs_and_resumes_backfills() {
    let yaml = HOURLY_DAILY.replace("wait: 1h", "wait: 0s");
    let h = harness(&yaml, utc(2024, 1, 1, 0), 1);
    for hour in 0..24 {
        h.write_hour(utc(2024, 1, 1, hour), &["a"]);
    }
    let status = h
        .scheduler
        .backfill(&BackfillRequest {
            pipeline: "shop".into(),
            jobs: None,
            from: utc(2024, 1, 1, 0),
            to: utc(2024, 1, 2, 0),
            force: false,
        })
        .unwrap();
    h.scheduler.pause_backfill(&status.id).unwrap();
    h.scheduler.shutdown(Duration::from_secs(5));
    // A crash in the middle of a run: its record says Running.
    let interrupted = RunKey::new("shop", "users_hourly", utc(2024, 1, 1, 7));
    h.store
        .mark_running(&interrupted, utc(2024, 1, 1, 8), "fp", h.clock.now())
        .unwrap();
    let Harness {
        store,
        data,
        clock,
        pipeline,
        ..
    } = &h;
    let restarted = start(store, data, clock, 2, pipeline);
    restarted.resume_backfill(&status.id).unwrap();
    loop {
        restarted.tick(clock.now());
        assert!(restarted.wait_idle(Duration::from_secs(30)));
        if restarted.backfill_status(&status.id).unwrap().remaining == 0 {
            break;
        }
    }
    let done = restarted.backfill_status(&status.id).unwrap();
    assert_eq!((done.state, done.succeeded), ("finished", 25));
    for (key, record) in store.runs_of_pipeline("shop").unwrap() {
        assert_eq!(
            (record.state, record.commits),
            (RunState::Succeeded, 1),
            "{key}"
        );
    }
}

#[test]
fn a_daily_run_on_a_dst_day_waits_for_its_23_hours() {
    let yaml = HOURLY_DAILY
        .replace(
            "start: 2024-01-01T00:00:00Z",
            "timezone: America/New_York\nstart: 2024-03-09T00:00:00",
        )
        .replace("wait: 1h", "wait: 0s");
    let h = harness(&yaml, utc(2024, 3, 10, 5), 2);
    let day_start = utc(2024, 3, 10, 5); // local midnight, EST
    let day_end = utc(2024, 3, 11, 4); // local midnight, EDT: 23 hours later
    let mut hour = day_start;
    while hour < day_end {
        h.write_hour(hour, &["a"]);
        hour += TimeDelta::hours(1);
    }
    h.scheduler
        .backfill(&BackfillRequest {
            pipeline: "shop".into(),
            jobs: Some(vec!["users_daily".into()]),
            from: day_start,
            to: day_end,
            force: false,
        })
        .unwrap();
    h.settle();
    assert_eq!(h.count("users_hourly", RunState::Succeeded), 23);
    assert_eq!(h.state("users_daily", day_start), Some(RunState::Succeeded));
}

#[test]
fn retry_delays_double_cap_and_jitter() {
    let base = Duration::from_secs(10);
    assert_eq!(retry_delay(base, 1, 0.0), Duration::from_secs(10));
    assert_eq!(retry_delay(base, 3, 0.0), Duration::from_secs(40));
    assert_eq!(retry_delay(base, 30, 0.0), Duration::from_secs(3600));
    assert_eq!(retry_delay(base, 1, 1.0), Duration::from_secs(12));
    assert_eq!(retry_delay(base, 1, -1.0), Duration::from_secs(8));
}

#[test]
fn active_backfills_are_bounded_and_old_records_are_pruned_and_listed_newest_first() {
    // No source files, and files due for two months after each window: every backfill
    // stays running until cancelled.
    let yaml = HOURLY_DAILY.replace("wait: 1h", "wait: 60d");
    let h = harness(&yaml, utc(2024, 2, 1, 0), 1);
    let limits = BackfillLimits {
        max_active: 2,
        history: 2,
    };
    let request = |day: u32| BackfillRequest {
        pipeline: "shop".into(),
        jobs: Some(vec!["users_hourly".into()]),
        from: utc(2024, 1, day, 0),
        to: utc(2024, 1, day, 1),
        force: false,
    };
    let start = |day: u32| {
        h.scheduler
            .start_backfill_within(&request(day), false, limits)
    };
    let first = start(1).unwrap();
    // A restatement counts as well.
    let restatement = h
        .scheduler
        .start_backfill_within(&request(2), true, limits)
        .unwrap();
    let refused = start(3).unwrap_err();
    assert!(
        matches!(
            refused,
            SchedulerError::TooManyActiveBackfills { active: 2 }
        ),
        "{refused:?}"
    );
    assert!(
        refused
            .to_string()
            .starts_with("2 backfills and restatements are running or paused, the limit (`limits.max_active_backfills`)"),
        "{refused}"
    );
    // A paused one is not finished: still refused. A cancelled one makes room.
    h.scheduler.pause_backfill(&first.id).unwrap();
    assert!(start(3).is_err());
    h.scheduler.cancel_backfill(&first.id).unwrap();
    let mut ended = vec![first.id.clone()];
    for day in 3..=6 {
        let started = start(day).unwrap();
        h.scheduler.cancel_backfill(&started.id).unwrap();
        ended.push(started.id);
    }
    // Each start kept the 2 newest ended records: the two oldest are gone from the store and
    // from memory; the running restatement is kept whatever its age.
    for gone in &ended[..2] {
        assert!(
            matches!(
                h.scheduler.backfill_status(gone),
                Err(SchedulerError::UnknownBackfill(_))
            ),
            "{gone}"
        );
        assert!(h.store.backfill(gone).unwrap().is_none());
    }
    let ids = |statuses: Vec<BackfillStatus>| -> Vec<String> {
        statuses.into_iter().map(|s| s.id).collect()
    };
    let mut stored: Vec<String> = ids(h.scheduler.backfills(None).unwrap());
    stored.sort();
    let mut expected = vec![
        restatement.id.clone(),
        ended[2].clone(),
        ended[3].clone(),
        ended[4].clone(),
    ];
    expected.sort();
    assert_eq!(stored, expected);
    assert_eq!(lock(&h.scheduler.inner.state).backfills.len(), 4);
    // Listed newest first, bounded.
    assert_eq!(
        ids(h.scheduler.backfills_newest(Some("shop"), 2).unwrap()),
        [ended[4].clone(), ended[3].clone()]
    );
    assert_eq!(
        ids(h.scheduler.backfills_newest(Some("shop"), 10).unwrap()),
        [
            ended[4].clone(),
            ended[3].clone(),
            ended[2].clone(),
            restatement.id.clone()
        ]
    );
    assert!(
        h.scheduler
            .backfills_newest(Some("other"), 10)
            .unwrap()
            .is_empty()
    );
    h.scheduler.cancel_backfill(&restatement.id).unwrap();
}
