//! The scheduler: turns pipelines into recurring timestamped runs and keeps them moving.
//!
//! It owns
//! - **planning**: each job's trigger (`trigger`) says which windows are due at an instant;
//!   due windows since the job's persisted cursor become Pending runs, within the
//!   pipeline's catch-up policy and hard cap. Backfills and restatements enqueue ranges;
//!   manual runs (`floe run`, `POST /pipelines/{p}/runs`, pipeline jobs) enqueue a range and
//!   wait for each run's outcome, joining the runs already tracked (`manual.rs`). It is the
//!   one executor of partition runs, whoever asks.
//! - **readiness**: a run is ready when every upstream partition it reads has succeeded
//!   (a daily run waits for its 23, 24 or 25 hourly runs). Each tracked run counts its unmet
//!   upstream runs; a success decrements its dependents' counts, so finding ready work never
//!   scans the queue.
//! - **dispatch**: ready runs go, oldest partition first, to worker threads within the
//!   global, per-pipeline and per-job concurrency limits.
//! - **faults**: retries with exponential backoff and jitter, per-job timeouts, a bounded
//!   wait for source files, `upstream_failed` downstream of a run out of retries (they run by
//!   themselves once it is retried and succeeds), and recovery at start-up: runs a crash
//!   left Running are re-queued, live backfills resume.
//!
//! Exactly once: every state change is written to the store before it takes effect (Pending
//! before a run is queued, Running before it computes), and a run's result is stored before
//! one compare-and-swap moves its record to Succeeded, refused for an attempt that is no longer
//! current. A
//! partition is therefore never committed twice and never lost.
//!
//! Time comes from the injected [`Clock`]. [`Scheduler::tick`] does everything due at the
//! clock's instant and returns when it next has something to do; tests call it directly and
//! never sleep, `floe serve` runs it on a driver thread woken by tokio-cron-scheduler.

mod backfills;
mod manual;
#[cfg(test)]
mod manual_tests;
mod planning;
mod recovery;
mod run_loop;
#[cfg(test)]
mod tests;
mod triggers;

pub use self::manual::{ManualRunError, run_alone};
use self::run_loop::push_ready;
pub use self::triggers::start_triggers;

#[cfg(test)]
use self::backfills::eta_seconds;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::catalog::{CatalogChange, CatalogListener};
use crate::clock::Clock;
use crate::error::error_chain;
use crate::inputs::upstream_keys;
use crate::materialize::{
    Materializer, PartitionAttempt, RunEvent, RunOutcome, RunReport, RunRequest,
};
use crate::partition::{Window, window_containing, windows_within};
use crate::pipeline::{InputRef, JobDef, Pipeline};
use crate::store::{BackfillRecord, BackfillState, RunKey, RunState, Store, StoreError};

/// Scheduler settings (the `scheduler:` block of the server config).
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Plan recurring runs from each pipeline's triggers. Backfills work either way.
    pub recurring: bool,
    /// Worker threads: the most runs computing at once, across pipelines.
    pub workers: usize,
    /// At start, take up the runs and backfills a previous process left unfinished
    /// (`floe serve`, `floe backfill`). The scheduler of one `floe run` leaves them to the
    /// next of those; runs a crash left Running are put back in the queue either way.
    pub resume: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            recurring: true,
            workers: 2,
            resume: true,
        }
    }
}

/// The setting that bounds the backfills and restatements not finished at once.
pub const MAX_ACTIVE_BACKFILLS: &str = "limits.max_active_backfills";

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no pipeline `{0}` is loaded")]
    UnknownPipeline(String),
    #[error("pipeline `{pipeline}` has no job `{job}` (jobs: {known})")]
    UnknownJob {
        pipeline: String,
        job: String,
        known: String,
    },
    #[error("empty range: `from` ({from}) must be before `to` ({to})")]
    EmptyRange {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    #[error(
        "the range would plan up to {estimate} runs, more than the {limit} one backfill may \
         hold; split it into smaller ranges"
    )]
    TooLarge { estimate: usize, limit: usize },
    #[error("cannot start a scheduler worker thread")]
    Thread(#[source] std::io::Error),
    #[error("no backfill `{0}`")]
    UnknownBackfill(String),
    #[error("backfill {id} is {state}; it cannot be {action}")]
    BackfillState {
        id: String,
        state: &'static str,
        action: &'static str,
    },
    #[error(
        "{active} backfills and restatements are running or paused, the limit \
         (`{MAX_ACTIVE_BACKFILLS}`); wait for one to finish, or cancel one \
         (POST /backfills/{{id}}/cancel)"
    )]
    TooManyActiveBackfills { active: usize },
}

/// A plan the materialiser refuses is a request the scheduler refuses.
impl From<crate::materialize::MaterializeError> for SchedulerError {
    fn from(error: crate::materialize::MaterializeError) -> Self {
        use crate::materialize::MaterializeError;
        match error {
            MaterializeError::Store(error) => SchedulerError::Store(error),
            MaterializeError::UnknownJob {
                pipeline,
                job,
                known,
            } => SchedulerError::UnknownJob {
                pipeline,
                job,
                known,
            },
            MaterializeError::EmptyRange { from, to } => SchedulerError::EmptyRange { from, to },
        }
    }
}

/// Bounds on backfills and restatements (`limits.max_active_backfills`,
/// `limits.backfill_history`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackfillLimits {
    /// Backfills and restatements not finished (running or paused) at once, server-wide: each
    /// holds its planned runs in memory.
    pub max_active: usize,
    /// Finished and cancelled backfill records kept, the newest; older ones are deleted (from
    /// the store and from memory) when a backfill or restatement starts.
    pub history: usize,
}

impl Default for BackfillLimits {
    fn default() -> Self {
        BackfillLimits {
            max_active: 16,
            history: 1_000,
        }
    }
}

/// Most runs one backfill may plan (a year of hourly partitions of 500 jobs).
pub const MAX_BACKFILL_RUNS: usize = 5_000_000;

/// What a backfill or restatement asks for.
#[derive(Debug, Clone)]
pub struct BackfillRequest {
    pub pipeline: String,
    /// `None`: every job of the pipeline.
    pub jobs: Option<Vec<String>>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Recompute partitions whose stored result is fresh.
    pub force: bool,
}

/// A backfill's record and its progress, counted from its runs.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackfillStatus {
    pub id: String,
    pub pipeline: String,
    pub jobs: Option<Vec<String>>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub force: bool,
    pub restate: bool,
    pub state: &'static str,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Runs in the backfill.
    pub total: usize,
    /// Runs that succeeded (computed, or found fresh).
    pub succeeded: usize,
    /// Runs that failed for good (out of retries, or upstream failed).
    pub failed: usize,
    /// Runs cancelled before they ran.
    pub cancelled: usize,
    /// Runs still to do.
    pub remaining: usize,
    /// Estimated seconds to finish at the rate since the backfill (re)started.
    pub eta_seconds: Option<f64>,
}

/// Who asks for a run, which decides what an existing record means.
struct Origin<'a> {
    /// Recompute even a fresh result.
    force: bool,
    backfill: Option<&'a Arc<str>>,
    /// For explicit requests: a run that succeeded at or after this instant is done
    /// (recomputed by this request before a restart). `None`: recurring planning, which
    /// leaves any run with a record alone.
    done_since: Option<DateTime<Utc>>,
}

impl Origin<'_> {
    const RECURRING: Origin<'static> = Origin {
        force: false,
        backfill: None,
        done_since: None,
    };
}

/// One counter per pipeline or job, for the concurrency limits.
type Counts = HashMap<String, usize>;

/// Where a tracked run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for `unmet` upstream runs.
    Waiting,
    /// In a ready queue.
    Ready,
    /// Waiting for a retry's backoff or a source re-check, until the instant.
    Delayed(DateTime<Utc>),
    /// Handed to a worker; the token identifies the attempt.
    Running(u64),
    /// An upstream run failed for good; it waits for that run to be retried.
    UpstreamFailed,
    /// In a paused backfill's parking lot.
    Parked,
}

#[derive(Debug)]
struct Tracked {
    window: Window,
    phase: Phase,
    /// Upstream runs not yet succeeded.
    unmet: u32,
    /// Of those, the ones that failed for good (or are upstream_failed themselves): by key,
    /// since only one of these succeeding (re-run) clears its part of the block, not any
    /// upstream's success.
    failed_upstreams: Vec<RunKey>,
    force: bool,
    backfill: Option<Arc<str>>,
    /// Consecutive failed attempts since enqueued.
    failures: u32,
    /// When the run began waiting for source files.
    waiting_since: Option<DateTime<Utc>>,
    /// The manual runs waiting for this run's outcome (see `manual.rs`).
    manual_runs: Vec<Arc<str>>,
    /// How long its last attempt took, reported to manual runs with its outcome.
    last_attempt_ms: f64,
}

/// An attempt handed to a worker.
struct Work {
    key: RunKey,
    token: u64,
    pipeline: Arc<Pipeline>,
    window: Window,
    force: bool,
    stop: Arc<AtomicBool>,
}

/// A run computing on a worker.
struct InFlight {
    key: RunKey,
    started: Instant,
    deadline: Option<DateTime<Utc>>,
    stop: Arc<AtomicBool>,
    /// Whether the scheduler already settled it (timed out); the worker's answer is ignored.
    abandoned: bool,
}

#[derive(Debug, Default)]
struct Progress {
    total: usize,
    succeeded: usize,
    failed: usize,
    cancelled: usize,
    /// When counting (re)started and how many were done then, for the ETA.
    since: Option<(Instant, usize)>,
    /// When the last run ended since then: the ETA's rate is taken up to it, so time spent
    /// only waiting (for retries, files) does not make the estimate climb.
    last_done: Option<Instant>,
}

impl Progress {
    fn done(&self) -> usize {
        self.succeeded + self.failed + self.cancelled
    }
}

struct LiveBackfill {
    record: BackfillRecord,
    progress: Progress,
    /// Ready runs held back while the backfill is paused.
    parked: Vec<RunKey>,
    /// Still enqueueing its runs: it cannot be finished yet, however many are done.
    planning: bool,
}

#[derive(Default)]
struct State {
    pipelines: BTreeMap<String, Arc<Pipeline>>,
    paused_pipelines: HashSet<String>,
    runs: HashMap<RunKey, Tracked>,
    /// Upstream run → the tracked runs waiting on it.
    dependents: HashMap<RunKey, Vec<RunKey>>,
    /// Ready runs per (pipeline, job), oldest first.
    ready: BTreeMap<(String, String), VecDeque<RunKey>>,
    delayed: std::collections::BTreeSet<(DateTime<Utc>, RunKey)>,
    in_flight: HashMap<u64, InFlight>,
    running_total: usize,
    running_pipeline: Counts,
    running_job: HashMap<(String, String), usize>,
    backfills: HashMap<Arc<str>, LiveBackfill>,
    /// Manual runs waiting for their runs' outcomes, by id.
    manual_runs: HashMap<Arc<str>, manual::ManualRun>,
    next_token: u64,
    stopping: bool,
    /// When the driver thread's current sleep ends (set by [`Scheduler::tick`]); `None` when
    /// no tick has run yet.
    driver_wakes_at: Option<DateTime<Utc>>,
    /// Something timed (a delayed run, a run's deadline) became due before
    /// `driver_wakes_at`: the driver must wake to sleep for less. Finishing a run wakes the
    /// driver only then, instead of after every run: a wake-up per run cost a context switch
    /// and a redundant tick on 2 cores.
    driver_wake_needed: bool,
    /// For retry jitter.
    rng: Jitter,
    /// Keeps a run of failures (a catch-up over months without files) from flooding the log.
    failure_log: FailureLog,
}

/// How many failures of one job are logged at WARN per minute; the rest are counted and
/// summed up in one line when the minute is over.
const LOUD_FAILURES_PER_MINUTE: u32 = 3;

/// Failures logged and held back per (pipeline, job), per minute of the scheduler's clock.
#[derive(Default)]
struct FailureLog {
    jobs: HashMap<(String, String), FailureMinute>,
}

struct FailureMinute {
    started: DateTime<Utc>,
    logged: u32,
    held_back: Option<HeldBack>,
}

/// The failures of one job held back from the log within a minute, summed up in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HeldBack {
    pipeline: String,
    job: String,
    count: u32,
    /// The earliest and latest partition among them (a catch-up fails in any order).
    first_partition: DateTime<Utc>,
    last_partition: DateTime<Utc>,
    /// The error of the first one held back: in a catch-up without files, the cause of all.
    first_error: String,
}

impl FailureLog {
    /// Whether this failure of `key`'s job is logged at WARN (the others go to DEBUG, and are
    /// summed up when their minute is over).
    fn should_log(&mut self, key: &RunKey, error: &str, now: DateTime<Utc>) -> bool {
        self.summarise(now);
        let minute = self
            .jobs
            .entry((key.pipeline.clone(), key.job.clone()))
            .or_insert(FailureMinute {
                started: now,
                logged: 0,
                held_back: None,
            });
        if minute.logged < LOUD_FAILURES_PER_MINUTE {
            minute.logged += 1;
            return true;
        }
        let partition = key.partition_start;
        match &mut minute.held_back {
            Some(held) => {
                held.count += 1;
                held.first_partition = held.first_partition.min(partition);
                held.last_partition = held.last_partition.max(partition);
            }
            None => {
                minute.held_back = Some(HeldBack {
                    pipeline: key.pipeline.clone(),
                    job: key.job.clone(),
                    count: 1,
                    first_partition: partition,
                    last_partition: partition,
                    first_error: error.to_owned(),
                });
            }
        }
        false
    }

    /// Ends the minutes that are over, with one WARN line for each that held failures back
    /// (how many, the first and last partition, the first error); returns those summaries.
    fn summarise(&mut self, now: DateTime<Utc>) -> Vec<HeldBack> {
        let mut summaries = Vec::new();
        self.jobs.retain(|_, minute| {
            if now - minute.started < TimeDelta::minutes(1) {
                return true;
            }
            if let Some(held) = minute.held_back.take() {
                warn!(
                    pipeline = %held.pipeline,
                    job = %held.job,
                    failures = held.count,
                    first_partition = %held.first_partition,
                    last_partition = %held.last_partition,
                    first_error = %held.first_error,
                    "more runs of the job failed in the last minute (each at debug level)"
                );
                summaries.push(held);
            }
            false
        });
        summaries
    }
}

impl State {
    /// Asks for a driver wake-up if `at` comes before its current sleep ends.
    fn need_driver_by(&mut self, at: DateTime<Utc>) {
        if self.driver_wakes_at.is_none_or(|wakes_at| at < wakes_at) {
            self.driver_wake_needed = true;
        }
    }
}

/// When the driver, ticking at `now` with `next` due, wakes next: at `next`, and at least
/// every minute, since a wall clock can jump.
fn driver_wake_instant(now: DateTime<Utc>, next: Option<DateTime<Utc>>) -> DateTime<Utc> {
    let latest = now + TimeDelta::seconds(60);
    next.map_or(latest, |next| next.min(latest))
}

/// A small random source for retry jitter, seeded from the wall clock.
struct Jitter(rand_chacha::ChaCha8Rng);

impl Default for Jitter {
    fn default() -> Self {
        use rand::SeedableRng;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Jitter(rand_chacha::ChaCha8Rng::seed_from_u64(seed))
    }
}

impl Jitter {
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f64 {
        use rand::RngCore;
        let unit = (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit * 2.0 - 1.0
    }
}

struct Inner {
    store: Store,
    materializer: Materializer,
    clock: Arc<dyn Clock>,
    config: SchedulerConfig,
    state: Mutex<State>,
    /// Taken at shutdown, which closes the channel and ends the workers.
    work: Mutex<Option<Sender<Work>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Wakes the driver thread: a trigger fired, a run finished, a request arrived.
    wake: (Mutex<bool>, Condvar),
}

/// A handle to the scheduler; clones share it.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn to_delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

/// Backoff before retry number `failures` (1-based): base × 2^(failures-1), capped at an
/// hour, with ±20% jitter so a burst of failures does not retry in lockstep.
pub fn retry_delay(base: Duration, failures: u32, jitter: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    let raw = base.as_secs_f64() * f64::from(1u32 << exponent);
    let capped = raw.min(3600.0);
    Duration::from_secs_f64((capped * 0.2f64.mul_add(jitter.clamp(-1.0, 1.0), 1.0)).max(0.0))
}

/// The scheduler follows the catalog: a new version of a pipeline is planned with from now
/// on, a deleted one is forgotten ([`Scheduler::remove_pipeline`]).
impl CatalogListener for Scheduler {
    fn catalog_changed(&self, change: &CatalogChange) {
        match change {
            CatalogChange::Put(app) => self.set_pipeline(app.pipeline.clone()),
            CatalogChange::Removed(name) => {
                self.remove_pipeline(name);
            }
        }
    }
}

impl Scheduler {
    /// A scheduler over `pipelines`, recovering whatever a previous process left in the
    /// store: runs left Running are re-queued, active runs are tracked again and live
    /// backfills resume. Worker threads start now; recurring planning starts with the first
    /// [`Scheduler::tick`].
    pub fn start(
        store: Store,
        materializer: Materializer,
        clock: Arc<dyn Clock>,
        config: SchedulerConfig,
        pipelines: Vec<Arc<Pipeline>>,
    ) -> Result<Scheduler, SchedulerError> {
        let (work_tx, work_rx) = crossbeam_channel::unbounded();
        let scheduler = Scheduler {
            inner: Arc::new(Inner {
                store,
                materializer,
                clock,
                config,
                state: Mutex::new(State::default()),
                work: Mutex::new(Some(work_tx)),
                workers: Mutex::new(Vec::new()),
                wake: (Mutex::new(false), Condvar::new()),
            }),
        };
        {
            let mut state = lock(&scheduler.inner.state);
            for pipeline in pipelines {
                state.pipelines.insert(pipeline.name.clone(), pipeline);
            }
        }
        scheduler.recover()?;
        let workers = scheduler.inner.config.workers.max(1);
        let mut handles = lock(&scheduler.inner.workers);
        for index in 0..workers {
            let rx: Receiver<Work> = work_rx.clone();
            let weak = Arc::downgrade(&scheduler.inner);
            let handle = std::thread::Builder::new()
                .name(format!("floe-sched-{index}"))
                .spawn(move || {
                    while let Ok(work) = rx.recv() {
                        let Some(inner) = weak.upgrade() else { break };
                        Scheduler { inner }.run_work(work);
                    }
                })
                .map_err(SchedulerError::Thread)?;
            handles.push(handle);
        }
        drop(handles);
        Ok(scheduler)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Adds or replaces a pipeline (a new app version). Runs already tracked keep going
    /// with the definition they were planned under until they finish. A version with
    /// `schedule.enabled: false` also cancels the recurring runs still waiting (a backfill's
    /// runs, and the runs they wait on, stay: they were asked for explicitly).
    pub fn set_pipeline(&self, pipeline: Arc<Pipeline>) {
        let now = self.inner.clock.now();
        let name = pipeline.name.clone();
        let enabled = pipeline.schedule.enabled;
        let mut state = lock(&self.inner.state);
        state.pipelines.insert(name.clone(), pipeline);
        if !enabled {
            let needed = needed_by_explicit_requests(&state);
            let cancelled = self.cancel_waiting(
                &mut state,
                |key, tracked| {
                    key.pipeline == name
                        && tracked.backfill.is_none()
                        && tracked.manual_runs.is_empty()
                        && !needed.contains(key)
                },
                &format!("pipeline {name} was disabled"),
                now,
            );
            if cancelled > 0 {
                info!(pipeline = %name, cancelled, "pipeline disabled: its waiting recurring runs are cancelled");
            }
        }
        drop(state);
        self.wake();
    }

    /// Forgets a deleted pipeline: no new runs are planned for it, its waiting runs (queued,
    /// delayed, waiting for files or upstreams, its backfills' included) are cancelled in the
    /// store, and its running or paused backfills end `cancelled`. A run computing now
    /// finishes and commits as usual; stored results stay until the runs' records are
    /// deleted. Returns how many waiting runs it cancelled.
    pub fn remove_pipeline(&self, name: &str) -> usize {
        let now = self.inner.clock.now();
        let reason = format!("pipeline {name} was deleted");
        let mut state = lock(&self.inner.state);
        if state.pipelines.remove(name).is_none() {
            return 0;
        }
        state.paused_pipelines.remove(name);
        let backfills: Vec<Arc<str>> = state
            .backfills
            .iter()
            .filter(|(_, live)| {
                live.record.pipeline == name
                    && matches!(
                        live.record.state,
                        BackfillState::Running | BackfillState::Paused
                    )
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in backfills {
            let Some(live) = state.backfills.get_mut(&id) else {
                continue;
            };
            let mut record = live.record.clone();
            record.state = BackfillState::Cancelled;
            record.finished_at = Some(now);
            if let Err(error) = self.inner.store.put_backfill(&record) {
                warn!(backfill = %id, error = %error_chain(&error), "cannot record the backfill as cancelled");
            }
            live.record = record;
            live.parked.clear();
        }
        let cancelled =
            self.cancel_waiting(&mut state, |key, _| key.pipeline == name, &reason, now);
        drop(state);
        info!(
            pipeline = name,
            cancelled, "pipeline removed from the scheduler"
        );
        self.wake();
        cancelled
    }

    /// Cancels the tracked runs `which` selects that are not computing: each is marked
    /// cancelled in the store with `reason` and forgotten here (also when the store has no
    /// record to mark, so nothing waits for a run that will never be dispatched), and counted
    /// in its backfill's progress. Returns how many it cancelled.
    fn cancel_waiting(
        &self,
        state: &mut State,
        which: impl Fn(&RunKey, &Tracked) -> bool,
        reason: &str,
        now: DateTime<Utc>,
    ) -> usize {
        let waiting: Vec<RunKey> = state
            .runs
            .iter()
            .filter(|(key, tracked)| {
                !matches!(tracked.phase, Phase::Running(_)) && which(key, tracked)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for run in &waiting {
            if let Err(error) = self.inner.store.mark_cancelled(run, reason, now) {
                debug!(run = %run, error = %error_chain(&error), "no waiting run record to cancel");
            }
            manual::report_outcome(
                state,
                run,
                RunOutcome::Failed {
                    error: format!("cancelled: {reason}"),
                },
            );
            if let Some(tracked) = state.runs.remove(run)
                && let Some(id) = tracked.backfill
                && let Some(live) = state.backfills.get_mut(&id)
            {
                live.progress.cancelled += 1;
            }
        }
        waiting.len()
    }

    /// Stops or restarts a pipeline's recurring runs and the dispatch of its queued runs.
    pub fn set_paused(&self, pipeline: &str, paused: bool) -> Result<(), SchedulerError> {
        let mut state = lock(&self.inner.state);
        if !state.pipelines.contains_key(pipeline) {
            return Err(SchedulerError::UnknownPipeline(pipeline.to_owned()));
        }
        if paused {
            state.paused_pipelines.insert(pipeline.to_owned());
        } else {
            state.paused_pipelines.remove(pipeline);
        }
        drop(state);
        self.wake();
        Ok(())
    }

    pub fn is_paused(&self, pipeline: &str) -> bool {
        lock(&self.inner.state).paused_pipelines.contains(pipeline)
    }

    /// Wakes the driver thread so it ticks now.
    pub fn wake(&self) {
        let (flag, condvar) = &self.inner.wake;
        *lock(flag) = true;
        condvar.notify_all();
    }

    fn pipeline(&self, name: &str) -> Result<Arc<Pipeline>, SchedulerError> {
        lock(&self.inner.state)
            .pipelines
            .get(name)
            .cloned()
            .ok_or_else(|| SchedulerError::UnknownPipeline(name.to_owned()))
    }
}

/// The tracked runs a backfill or a manual run asked for, and those they wait on, directly
/// or through others: cancelling one would leave the request waiting for ever.
fn needed_by_explicit_requests(state: &State) -> HashSet<RunKey> {
    needed_by(state, |_, tracked| {
        tracked.backfill.is_some() || !tracked.manual_runs.is_empty()
    })
}

/// The tracked runs `wanted` selects, and every tracked run they wait on, directly or through
/// others.
fn needed_by(state: &State, wanted: impl Fn(&RunKey, &Tracked) -> bool) -> HashSet<RunKey> {
    let mut needed: HashSet<RunKey> = state
        .runs
        .iter()
        .filter(|(key, tracked)| wanted(key, tracked))
        .map(|(key, _)| key.clone())
        .collect();
    loop {
        let before = needed.len();
        for (upstream, dependents) in &state.dependents {
            if !needed.contains(upstream) && dependents.iter().any(|d| needed.contains(d)) {
                needed.insert(upstream.clone());
            }
        }
        if needed.len() == before {
            return needed;
        }
    }
}

/// Counts of tracked runs by phase.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerSummary {
    pub recurring: bool,
    pub workers: usize,
    pub waiting: usize,
    pub ready: usize,
    /// Ready runs of paused backfills.
    pub parked: usize,
    pub delayed: usize,
    pub running: usize,
    pub upstream_failed: usize,
    pub paused_pipelines: Vec<String>,
}

/// One job's schedule, for `GET /pipelines/{p}/schedule`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSchedule {
    pub job: String,
    pub grain: &'static str,
    pub cron: Option<String>,
    pub delay_seconds: i64,
    pub planned_through: Option<DateTime<Utc>>,
    pub next_due: Option<DateTime<Utc>>,
    pub retries: u32,
    pub timeout_seconds: Option<f64>,
    pub concurrency: Option<u32>,
}
