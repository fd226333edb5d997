//! The job server's core, without HTTP: apps, contexts, and jobs from submission to a final
//! state that survives restarts.
//!
//! A job's life:
//!
//! ```text
//!  submit ── plan (400/404 now, not later) ── reserve a place (429 when the queue is full)
//!         ── record RUNNING + config in sled ── queue on the context's executor
//!  worker ── run (safe points: before each input, before and after polars, before storing)
//!         ── result, then the FINISHED record     │ ERROR with {message, errorClass, stack}
//!  kill / timeout / context delete ── KILLED or ERROR at once; the worker drops its result
//!  final FINISHED or ERROR, with a `callbackUrl` ── its POST queued (`callback`)
//! ```
//!
//! Exactly one path finalises a job: the record is finalised under its lock, and whoever
//! finds it already final backs off. After a restart, jobs left RUNNING are resolved by
//! [`JobServer::recover`]: materialisations are re-run under the same id (they are
//! idempotent), anything else ends ERROR "server restarted before the job finished".
//!
//! This file holds the [`JobServer`] type, its construction and the pieces its parts share;
//! `lifecycle` takes a job from submission to its final state, `builtin` and `pipeline_job`
//! execute the two kinds of job, `history` bounds the stored jobs and their results,
//! `contexts` manages named contexts, `recovery` resolves what a restart left behind, and
//! `callback` posts a job's end to its `callbackUrl`. A built-in job runs in its context
//! (`context_run`): in this process, or in the context's worker process (`workers` starts
//! them, `remote` is what crosses to them).

pub mod callback;
pub mod context;
pub mod deadlines;
pub mod limits;
pub mod objects;
pub mod plan;

mod builtin;
mod context_run;
mod contexts;
mod history;
mod lifecycle;
mod pipeline_job;
pub mod recovery;
pub mod remote;
pub mod workers;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, Weak};
use std::time::Duration;

use polars::prelude::*;
use serde_json::{Map, Value};
use tokio::sync::watch;
use tracing::warn;

use crate::clock::Clock;
use crate::frames::cancel::Cancel;
use crate::frames::memory::MemoryGuard;
use crate::job::JobRegistry;
use crate::materialize::Materializer;
use crate::scheduler::Scheduler;
use crate::store::{JobFailure, JobRecord, Store, StoreError};

use self::callback::{CallbackSettings, CallbackUrl, CallbackUrlError, Callbacks};
use self::context::{Context, ContextSettings, Executor};
use self::deadlines::{DeadlineKey, Deadlines};
use self::history::FinishedJobs;
use self::limits::{Limits, MAX_STORED_JOBS};
use self::workers::WorkerSettings;
use crate::catalog::Catalog;
use crate::worker::WorkerPool;

/// The name spark-jobserver reports for an ad-hoc context.
pub const ADHOC_CONTEXT: &str = "<<ad-hoc>>";

/// Server-wide settings of the core.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    /// Defaults of every context created over REST.
    pub context_defaults: ContextSettings,
    /// Ad-hoc jobs share one executor with these settings; each gets its own named objects.
    pub adhoc: ContextSettings,
    /// Finished jobs kept; the oldest beyond this are deleted with their configs and results.
    pub job_history: usize,
    /// How long a finished job is kept at least, whatever `job_history` says, so a client
    /// polling for its result finds it.
    pub job_retention: Duration,
    /// Bounds on threads, contexts, queues, binary versions and stored jobs.
    pub limits: Limits,
    /// Folders besides the data dir every pipeline may read sources in, uploads included.
    pub data_roots: Vec<PathBuf>,
    /// Folders only pipelines from the server's own pipelines folder may also read.
    pub operator_data_roots: Vec<PathBuf>,
    /// Where `callbackUrl`s may point, and how they are delivered (`callbacks:`).
    pub callbacks: CallbackSettings,
    /// Whether contexts run in worker processes, and how those are started and watched
    /// (`workers:`).
    pub workers: WorkerSettings,
}

impl Default for CoreSettings {
    fn default() -> Self {
        CoreSettings {
            context_defaults: ContextSettings::default(),
            adhoc: ContextSettings {
                worker_threads: 4,
                queue_length: 256,
                ..ContextSettings::default()
            },
            job_history: 100_000,
            job_retention: Duration::from_secs(3600),
            limits: Limits::default(),
            data_roots: Vec::new(),
            operator_data_roots: Vec::new(),
            callbacks: CallbackSettings::default(),
            workers: WorkerSettings::default(),
        }
    }
}

/// Why a job should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum StopReason {
    None = 0,
    Killed = 1,
    TimedOut = 2,
    ContextDeleted = 3,
    Shutdown = 4,
}

impl StopReason {
    fn from_u8(value: u8) -> StopReason {
        match value {
            1 => StopReason::Killed,
            2 => StopReason::TimedOut,
            3 => StopReason::ContextDeleted,
            4 => StopReason::Shutdown,
            _ => StopReason::None,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A job that has not reached a final state yet (and, briefly, one that just did).
pub struct LiveJob {
    pub id: String,
    pub context: Arc<Context>,
    record: Mutex<JobRecord>,
    stop: AtomicU8,
    queued: AtomicBool,
    result: Mutex<Option<DataFrame>>,
    done: watch::Sender<bool>,
    /// The execution timeout, and its deadline in [`JobServer::timeouts`] once the job runs.
    timeout: Option<Duration>,
    deadline: Mutex<Option<DeadlineKey>>,
    /// Stops the job's polars work when it is killed, times out or goes over the server's
    /// memory limit (built-in classes; a materialisation stops at its safe points instead).
    cancel: Cancel,
    /// Where its end is posted when it ends FINISHED or ERROR (`callbackUrl`).
    callback: Option<CallbackUrl>,
}

impl fmt::Debug for LiveJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveJob")
            .field("id", &self.id)
            .field("status", &self.record().status)
            .finish_non_exhaustive()
    }
}

impl LiveJob {
    pub fn record(&self) -> JobRecord {
        lock(&self.record).clone()
    }

    /// Waiting for a worker thread.
    pub fn is_queued(&self) -> bool {
        self.queued.load(Ordering::Acquire)
    }

    /// The result of a finished job, kept in memory for the sync answer.
    pub fn result(&self) -> Option<DataFrame> {
        lock(&self.result).clone()
    }

    fn stop_reason(&self) -> StopReason {
        StopReason::from_u8(self.stop.load(Ordering::Acquire))
    }

    /// Waits until the job is final or `timeout` passes; returns whether it is final.
    pub async fn wait(&self, timeout: Duration) -> bool {
        let mut done = self.done.subscribe();
        tokio::time::timeout(timeout, done.wait_for(|final_| *final_))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// How a job ended.
enum Outcome {
    Finished(DataFrame),
    Failed(JobFailure),
    Killed(String),
}

/// A failure while running, before it becomes an `Outcome`.
#[derive(Debug)]
enum ExecError {
    /// A stop was requested; whoever requested it finalises the job.
    Stopped,
    Failed {
        message: String,
        class: &'static str,
    },
}

impl ExecError {
    fn failed<E: std::fmt::Display>(class: &'static str) -> impl FnOnce(E) -> ExecError {
        move |error| ExecError::Failed {
            message: error.to_string(),
            class,
        }
    }
}

/// Why `submit` refused a job.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{0}")]
    NotFound(String),
    #[error("VALIDATION FAILED")]
    Invalid(Vec<String>),
    #[error("context {0} not found")]
    ContextNotFound(String),
    #[error("Context stop in progress")]
    ContextStopping,
    #[error("Too many jobs ({capacity} running and queued) for job context '{context}'")]
    QueueFull { context: String, capacity: usize },
    #[error("the server is shutting down")]
    ShuttingDown,
    /// Too many jobs are stored and none may be deleted yet: every finished one ended less
    /// than `job_retention` ago.
    #[error(
        "the server stores {limit} jobs, its limit (`{MAX_STORED_JOBS}`), and keeps each \
         finished one for `job_retention` ({}); retry in {}s",
        humantime::format_duration(*.retention),
        .retry_after.as_secs()
    )]
    TooManyStoredJobs {
        limit: usize,
        retention: Duration,
        /// When the oldest finished job may be deleted (at least a second).
        retry_after: Duration,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `kill` did.
#[derive(Debug)]
pub enum KillOutcome {
    Killed,
    /// The job had already failed; spark-jobserver answers with its error.
    AlreadyFailed(Option<JobFailure>),
    /// Finished or killed before: nothing running to kill.
    NotRunning,
    NotFound,
}

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// spark-jobserver's own words, which its clients show.
    #[error("context name {0:?} is invalid: context name must start with letters")]
    NotStartingWithLetter(String),
    #[error("context name {0:?} is invalid: {1}")]
    BadName(String, crate::pipeline::NameError),
    #[error("context {0} exists")]
    Exists(String),
    #[error("context {0} not found")]
    NotFound(String),
    #[error("invalid context settings: {}", .0.join("; "))]
    Settings(Vec<String>),
    /// Creating the context would exceed `limits.max_contexts` or `limits.max_worker_threads`.
    #[error("{0}")]
    Limit(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Jobs ended per status, for `/metrics`.
#[derive(Debug, Default)]
pub struct JobCounters {
    pub submitted: AtomicU64,
    pub rejected: AtomicU64,
    pub finished: AtomicU64,
    pub error: AtomicU64,
    pub killed: AtomicU64,
    /// `/query` computations running now (a stopped query leaves when polars notices).
    pub queries_running: AtomicU64,
    /// `/query`s stopped: by their time limit, the memory limit, or the client hanging up.
    pub queries_stopped: AtomicU64,
}

/// A job submission, as parsed from the request.
#[derive(Debug, Clone)]
pub struct Submission {
    pub app: Option<String>,
    pub class_path: String,
    pub context: Option<String>,
    /// The config, parsed; stored as JSON.
    pub config: Map<String, Value>,
    /// `callbackUrl`, checked by [`JobServer::callback_url`]; kept with the live job only (a
    /// job a restart interrupts ends without its callback).
    pub callback: Option<CallbackUrl>,
}

/// The job server's state.
pub struct JobServer {
    store: Store,
    materializer: Materializer,
    clock: Arc<dyn Clock>,
    registry: JobRegistry,
    pub catalog: Arc<Catalog>,
    contexts: RwLock<BTreeMap<String, Arc<Context>>>,
    adhoc: Arc<Executor>,
    /// The worker processes ad-hoc jobs run in, one job each, when they run in workers (an
    /// error: why they cannot, which each ad-hoc job then fails with).
    adhoc_workers: Option<Result<WorkerPool, String>>,
    settings: CoreSettings,
    live: Mutex<HashMap<String, Arc<LiveJob>>>,
    /// The one executor of pipeline runs, which materialisation jobs hand their runs to
    /// ([`JobServer::attach_scheduler`]).
    scheduler: OnceLock<Scheduler>,
    runtime: tokio::runtime::Handle,
    /// The memory limit ad-hoc jobs and queries are stopped by (`limits.memory`).
    memory: MemoryGuard,
    /// Places for `/query` computations (`limits.max_concurrent_queries`).
    queries: Arc<tokio::sync::Semaphore>,
    pub counters: JobCounters,
    /// Job records in the store, running ones included (`limits.max_stored_jobs`).
    stored_jobs: AtomicUsize,
    /// Every stored finished job by (end time, id), with the bytes its stored result takes
    /// (0 without one): the history sweep deletes from the front, and the front says at once
    /// whether anything may be deleted yet (`job_retention`), without reading the store.
    /// About 90 bytes a job.
    finished: Mutex<FinishedJobs>,
    /// Bytes of every stored job result (`limits.max_job_results_bytes`): the sum of the
    /// bytes in `finished`, plus results being stored right now.
    result_bytes: AtomicU64,
    sweeping: AtomicBool,
    /// Executors of deleted contexts, until their last thread has exited: their threads still
    /// count against `limits.max_worker_threads`.
    retiring: Mutex<Vec<Arc<Executor>>>,
    shutting_down: AtomicBool,
    /// The execution timeouts of running jobs; `None` when its thread could not start (jobs
    /// then run without one, and the start-up logged why).
    timeouts: Option<Deadlines<Weak<LiveJob>>>,
    /// Posts the end of jobs submitted with a `callbackUrl`.
    callbacks: Callbacks,
    me: Weak<JobServer>,
}

impl fmt::Debug for JobServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobServer")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl JobServer {
    /// Creates the core. Call [`JobServer::recover`] next, before serving requests.
    pub fn new(
        materializer: Materializer,
        registry: JobRegistry,
        clock: Arc<dyn Clock>,
        settings: CoreSettings,
        runtime: tokio::runtime::Handle,
    ) -> Arc<JobServer> {
        let settings_memory = settings.limits.memory;
        let query_places = settings.limits.max_concurrent_queries;
        let adhoc = Executor::start(
            "adhoc",
            settings.adhoc.worker_threads,
            settings.adhoc.queue_length,
        );
        let callbacks = Callbacks::start(settings.callbacks.clone(), &runtime);
        let adhoc_workers = settings.adhoc.runs_in_worker(&settings.workers).then(|| {
            workers::adhoc_pool(&settings.workers, &settings.adhoc, &settings.limits).inspect_err(
                |e| tracing::error!(error = %e, "ad-hoc jobs cannot run in worker processes"),
            )
        });
        Arc::new_cyclic(|me: &Weak<JobServer>| JobServer {
            store: materializer.store().clone(),
            clock,
            registry,
            catalog: Arc::new(Catalog::new(
                materializer.data_roots().clone(),
                Arc::new(
                    materializer
                        .data_roots()
                        .with_extra(&settings.operator_data_roots),
                ),
                settings.limits.binary_versions,
            )),
            contexts: RwLock::new(BTreeMap::new()),
            adhoc,
            adhoc_workers,
            settings,
            live: Mutex::new(HashMap::new()),
            scheduler: OnceLock::new(),
            materializer,
            runtime,
            queries: Arc::new(tokio::sync::Semaphore::new(query_places)),
            memory: match settings_memory {
                Some(limit) => MemoryGuard::start(limit),
                None => MemoryGuard::disabled(),
            },
            counters: JobCounters::default(),
            stored_jobs: AtomicUsize::new(0),
            finished: Mutex::new(FinishedJobs::new()),
            result_bytes: AtomicU64::new(0),
            sweeping: AtomicBool::new(false),
            retiring: Mutex::new(Vec::new()),
            shutting_down: AtomicBool::new(false),
            timeouts: {
                let me = me.clone();
                Deadlines::start("floe-job-timeouts", move |job: Weak<LiveJob>| {
                    if let (Some(server), Some(job)) = (me.upgrade(), job.upgrade()) {
                        server.stop_job(&job, StopReason::TimedOut);
                    }
                })
                .inspect_err(|e| {
                    tracing::error!(error = %e, "cannot start the job timeout thread; jobs run without execution timeouts")
                })
                .ok()
            },
            callbacks,
            me: me.clone(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn materializer(&self) -> &Materializer {
        &self.materializer
    }

    /// Gives materialisation jobs the scheduler that executes their runs. Once, at start-up,
    /// before interrupted jobs are resolved (a re-run needs it); later calls are ignored.
    pub fn attach_scheduler(&self, scheduler: Scheduler) {
        if self.scheduler.set(scheduler).is_err() {
            warn!("a scheduler was attached to the job server already; the first one stays");
        }
    }

    pub fn registry(&self) -> &JobRegistry {
        &self.registry
    }

    /// The server's memory limit, which `/query` tracks its computations with too.
    pub fn memory(&self) -> &MemoryGuard {
        &self.memory
    }

    /// A place for one `/query` computation, held until it ends; `None` when
    /// `limits.max_concurrent_queries` are taken.
    pub fn query_place(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.queries.clone().try_acquire_owned().ok()
    }

    /// The server-wide limits.
    pub fn limits(&self) -> &limits::Limits {
        &self.settings.limits
    }

    /// A `callbackUrl` checked against `callbacks.allowed_urls`, for a [`Submission`].
    pub fn callback_url(&self, text: &str) -> Result<CallbackUrl, CallbackUrlError> {
        self.callbacks.check(text)
    }

    /// Callback deliveries not ended yet (queued, being sent, or waiting to be sent again).
    pub fn pending_callbacks(&self) -> usize {
        self.callbacks.pending()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// A running job's safe point: it goes on only while no stop was requested.
    fn checkpoint(live: &LiveJob) -> Result<(), ExecError> {
        if live.stop_reason() == StopReason::None {
            Ok(())
        } else {
            Err(ExecError::Stopped)
        }
    }
}

/// How a context is named in messages.
pub fn context_label(context: &Context) -> &str {
    if context.adhoc {
        ADHOC_CONTEXT
    } else {
        &context.name
    }
}

/// The label of a record's context, as spark-jobserver reports it.
pub fn record_context_label(record: &JobRecord) -> &str {
    if record.context.is_empty() {
        ADHOC_CONTEXT
    } else {
        &record.context
    }
}
