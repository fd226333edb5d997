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
//! ```
//!
//! Exactly one path finalises a job: the record is finalised under its lock, and whoever
//! finds it already final backs off. After a restart, jobs left RUNNING are resolved by
//! [`JobServer::recover`]: materialisations are re-run under the same id (they are
//! idempotent), anything else ends ERROR "server restarted before the job finished".

pub mod context;
pub mod deadlines;
pub mod limits;
pub mod objects;
pub mod plan;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use polars::prelude::*;
use serde_json::{Map, Value};
use tokio::sync::watch;
use tracing::{info, info_span, warn};

use crate::clock::Clock;
use crate::engine::{EngineError, PolarsEngine, ResolvedInput, ResolvedPlan, SourceError};
use crate::error::error_chain;
use crate::frames::arrow_size;
use crate::frames::cancel::Cancel;
use crate::frames::memory::MemoryGuard;
use crate::frames::selection::decode_strings;
use crate::frames::time_slice::{only_datetime_column, window_rows};
use crate::inputs::{Gaps, InputError};
use crate::job::{JobError, JobInput, JobOutput, JobRegistry};
use crate::materialize::{Materializer, RunEvent, RunOutcome, RunRequest};
use crate::partition::{Grain, Window};
use crate::results::{partitions_spanned, read_job_results, runs_spanned};
use crate::scheduler::{ManualRunError, Scheduler};
use crate::store::{ContextDefinition, JobFailure, JobRecord, JobStatus, Store, StoreError};

use self::context::{Context, ContextSettings, Executor, QueueFull};
use self::deadlines::{DeadlineKey, Deadlines};
use self::limits::{
    Limits, MAX_CONTEXTS, MAX_JOB_RESULTS_BYTES, MAX_STORED_JOBS, MAX_WORKER_THREADS, byte_size,
};
use self::objects::{ObjectDefinition, ObjectError, ObjectOrigin, ObjectRows};
use self::plan::{
    BuiltinPlan, InputSpec, JobPlan, ObjectWindow, PIPELINE_RUN_CLASS, PipelinePlan, PlanError,
    ScanTarget,
};
use crate::catalog::{App, Catalog};

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
    fn failed(class: &'static str) -> impl FnOnce(String) -> ExecError {
        move |message| ExecError::Failed { message, class }
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
    #[error("context name {0:?} is invalid: {1}")]
    BadName(String, String),
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

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    // ---- start-up --------------------------------------------------------------------------

    /// Loads stored apps, registers the pipelines folder's files as apps, and recreates stored
    /// and predefined contexts. Jobs a previous process left RUNNING are resolved afterwards,
    /// by [`JobServer::resolve_interrupted_jobs`].
    pub fn recover(
        &self,
        folder: Vec<(crate::pipeline::Pipeline, String)>,
        predefined: &BTreeMap<String, BTreeMap<String, Value>>,
    ) -> Result<(), String> {
        let from_folder = folder
            .iter()
            .map(|(pipeline, _)| pipeline.name.clone())
            .collect();
        self.catalog
            .load_stored(&self.store, &self.registry, &from_folder)
            .map_err(|e| error_chain(&e))?;
        self.catalog
            .register_folder(&self.store, folder, self.clock.now())?;
        // The configuration's contexts first: the limits were checked against them, and
        // contexts created over REST by an earlier run must not take their places.
        for (name, settings) in predefined {
            self.start_context(name, settings.clone(), None)
                .map_err(|e| format!("predefined context {name}: {e}"))?;
        }
        let stored = self
            .store
            .context_definitions()
            .map_err(|e| error_chain(&e))?;
        for definition in stored {
            if predefined.contains_key(&definition.name) {
                continue;
            }
            let (name, settings) = (definition.name.clone(), definition.settings.clone());
            if let Err(e) = self.start_context(&name, settings, Some(definition)) {
                warn!(context = %name, error = %e, "stored context not restarted");
            }
        }
        Ok(())
    }

    /// Resolves every job a previous process left RUNNING: a materialisation runs again, any
    /// other job ends in ERROR. Call it only once the scheduler has requeued the runs that
    /// process left Running: that recovery takes every Running run for an interrupted one, so
    /// a re-run started before it would find its runs requeued under it.
    pub fn resolve_interrupted_jobs(&self) -> Result<(), String> {
        self.resolve_interrupted_jobs_in_store()
            .map_err(|e| error_chain(&e))
    }

    fn resolve_interrupted_jobs_in_store(&self) -> Result<(), StoreError> {
        let mut interrupted = Vec::new();
        let mut count = 0;
        let mut finished = FinishedJobs::new();
        let mut result_bytes = 0u64;
        for record in self.store.jobs_oldest_first() {
            let mut record = record?;
            count += 1;
            if !record.status.is_final() {
                interrupted.push(record);
                continue;
            }
            // Records written before Floe kept the size have their stored result measured
            // once (a sled value's length, a file's), and keep it from now on.
            let stored_bytes = if record.status != JobStatus::Finished {
                record.result_bytes
            } else if record.result_bytes.is_some() {
                if self.store.job_result_exists(&record.id)? {
                    record.result_bytes
                } else {
                    None
                }
            } else {
                let measured = self.store.job_result_bytes(&record.id)?;
                if measured.is_some() {
                    record.result_bytes = measured;
                    self.store.update_job(&record, None)?;
                }
                measured
            };
            let bytes = stored_bytes.unwrap_or(0);
            result_bytes = result_bytes.saturating_add(bytes);
            finished.insert(finished_key(&record), bytes);
            if record.status == JobStatus::Finished && stored_bytes.is_none() {
                // Writes are ordered so this cannot happen; if a damaged store says
                // otherwise, the job says so instead of answering "result missing" forever.
                record.status = JobStatus::Error;
                record.result_rows = None;
                record.result_bytes = None;
                record.failure = Some(JobFailure {
                    message: "the job's stored result was lost".to_owned(),
                    error_class: "floe.ResultLost".to_owned(),
                    stack: String::new(),
                });
                self.store.update_job(&record, None)?;
                warn!(job_id = %record.id, "finished job without a stored result marked ERROR");
            }
        }
        self.stored_jobs.store(count, Ordering::Release);
        self.result_bytes.store(result_bytes, Ordering::Release);
        lock(&self.finished).append(&mut finished);
        for mut record in interrupted {
            if record.rerun_on_restart && self.rerun(&record).is_ok() {
                info!(job_id = %record.id, "re-running a materialisation interrupted by a restart");
                continue;
            }
            record.status = JobStatus::Error;
            record.end_time = Some(self.clock.now());
            record.failure = Some(JobFailure {
                message: "server restarted before the job finished".to_owned(),
                error_class: "floe.ServerRestarted".to_owned(),
                stack: String::new(),
            });
            self.store.update_job(&record, None)?;
            lock(&self.finished).insert(finished_key(&record), 0);
            info!(job_id = %record.id, "job interrupted by a restart marked ERROR");
        }
        self.maybe_sweep();
        Ok(())
    }

    fn rerun(&self, record: &JobRecord) -> Result<(), String> {
        let config = self
            .store
            .job_config(&record.id)
            .map_err(|e| error_chain(&e))?
            .ok_or("no stored config")?;
        let config: Map<String, Value> =
            serde_json::from_slice(&config).map_err(|e| e.to_string())?;
        let submission = Submission {
            app: record.app.clone(),
            class_path: record.class_path.clone(),
            context: (!record.context.is_empty()).then(|| record.context.clone()),
            config,
        };
        let this = self.me.upgrade().ok_or("server gone")?;
        this.submit_as(submission, Some(record.clone()))
            .map(drop)
            .map_err(|e| e.to_string())
    }

    // ---- contexts --------------------------------------------------------------------------

    /// Creates and persists a context.
    pub fn create_context(
        &self,
        name: &str,
        given: BTreeMap<String, Value>,
    ) -> Result<Arc<Context>, ContextError> {
        self.start_context(name, given, None)
    }

    fn start_context(
        &self,
        name: &str,
        given: BTreeMap<String, Value>,
        stored: Option<ContextDefinition>,
    ) -> Result<Arc<Context>, ContextError> {
        let starts_with_letter = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
        if !starts_with_letter {
            return Err(ContextError::BadName(
                name.to_owned(),
                "context name must start with letters".to_owned(),
            ));
        }
        if let Err(e) = crate::pipeline::check_identifier(&name.replace('-', "_")) {
            return Err(ContextError::BadName(name.to_owned(), e));
        }
        let settings = ContextSettings::checked(
            &self.settings.context_defaults,
            &given,
            &self.settings.limits,
        )
        .map_err(ContextError::Settings)?;
        let mut contexts = self
            .contexts
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if contexts.contains_key(name) {
            return Err(ContextError::Exists(name.to_owned()));
        }
        // Under the write lock, so two creations cannot both take the last places.
        self.check_room_for_context(&contexts, name, &settings)?;
        let definition = stored.unwrap_or_else(|| ContextDefinition {
            name: name.to_owned(),
            id: uuid::Uuid::now_v7().to_string(),
            start_time: self.clock.now(),
            settings: given.clone(),
        });
        self.store.put_context(&definition)?;
        let context = Arc::new(Context::start(
            name,
            definition.id.clone(),
            definition.start_time,
            settings,
            given,
        ));
        contexts.insert(name.to_owned(), context.clone());
        info!(context = name, "context started");
        Ok(context)
    }

    /// Refuses a new context beyond `limits.max_contexts`, or one whose threads would take the
    /// server past `limits.max_worker_threads`.
    fn check_room_for_context(
        &self,
        contexts: &BTreeMap<String, Arc<Context>>,
        name: &str,
        settings: &ContextSettings,
    ) -> Result<(), ContextError> {
        let limits = &self.settings.limits;
        if contexts.len() >= limits.max_contexts {
            return Err(ContextError::Limit(format!(
                "cannot create context {name}: {} contexts exist, the limit (`{MAX_CONTEXTS}`); \
                 delete one first",
                contexts.len()
            )));
        }
        let retiring = {
            let mut retiring = lock(&self.retiring);
            retiring.retain(|executor| executor.live_threads() > 0);
            retiring
                .iter()
                .map(|executor| executor.live_threads())
                .sum::<usize>()
        };
        let taken = self.settings.adhoc.worker_threads
            + contexts
                .values()
                .map(|context| context.settings.worker_threads)
                .sum::<usize>()
            + retiring;
        if taken + settings.worker_threads > limits.max_worker_threads {
            let finishing = if retiring > 0 {
                format!(" ({retiring} of them by deleted contexts still finishing a job)")
            } else {
                String::new()
            };
            return Err(ContextError::Limit(format!(
                "cannot create context {name} with {} worker threads: {taken} of the server's \
                 {} are taken{finishing} (`{MAX_WORKER_THREADS}`)",
                settings.worker_threads, limits.max_worker_threads
            )));
        }
        Ok(())
    }

    pub fn context(&self, name: &str) -> Option<Arc<Context>> {
        self.contexts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    pub fn context_names(&self) -> Vec<String> {
        self.contexts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    pub fn contexts(&self) -> Vec<Arc<Context>> {
        self.contexts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Stops a context: its jobs are killed, its named objects freed, its definition deleted.
    pub fn delete_context(&self, name: &str) -> Result<(), ContextError> {
        let context = self
            .contexts
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
            .ok_or_else(|| ContextError::NotFound(name.to_owned()))?;
        context.stop();
        // Its threads count against the limit until the last one has returned.
        lock(&self.retiring).push(context.executor.clone());
        for job in self.live_jobs() {
            if Arc::ptr_eq(&job.context, &context) {
                self.stop_job(&job, StopReason::ContextDeleted);
            }
        }
        self.store.delete_context(name)?;
        info!(context = name, "context stopped");
        Ok(())
    }

    // ---- jobs ------------------------------------------------------------------------------

    fn live_jobs(&self) -> Vec<Arc<LiveJob>> {
        lock(&self.live).values().cloned().collect()
    }

    pub fn live_job(&self, id: &str) -> Option<Arc<LiveJob>> {
        lock(&self.live).get(id).cloned()
    }

    /// Jobs neither final nor finished: (running, queued), for metrics.
    pub fn live_counts(&self) -> (usize, usize) {
        let live = lock(&self.live);
        let queued = live.values().filter(|j| j.is_queued()).count();
        (live.len() - queued, queued)
    }

    /// Plans, records and queues a job.
    pub fn submit(&self, submission: Submission) -> Result<Arc<LiveJob>, SubmitError> {
        self.submit_as(submission, None)
    }

    /// `resume` re-runs a stored job under its own id (restart recovery).
    fn submit_as(
        &self,
        submission: Submission,
        resume: Option<JobRecord>,
    ) -> Result<Arc<LiveJob>, SubmitError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(SubmitError::ShuttingDown);
        }
        let plan = plan::plan(
            &self.catalog,
            submission.app.as_deref(),
            &submission.class_path,
            &submission.config,
        )
        .map_err(|e| match e {
            PlanError::NotFound(message) => SubmitError::NotFound(message),
            PlanError::Invalid(errors) => SubmitError::Invalid(errors),
        })?;
        let config_timeout =
            plan::job_timeout(&submission.config).map_err(|e| SubmitError::Invalid(vec![e]))?;
        let plan = self.bound_runs(plan)?;

        let now = self.clock.now();
        let id = resume
            .as_ref()
            .map_or_else(|| uuid::Uuid::now_v7().to_string(), |r| r.id.clone());
        let context = match &submission.context {
            Some(name) => {
                let context = self
                    .context(name)
                    .ok_or_else(|| SubmitError::ContextNotFound(name.clone()))?;
                if context.is_stopping() {
                    return Err(SubmitError::ContextStopping);
                }
                context
            }
            None => Arc::new(Context::adhoc(
                self.adhoc.clone(),
                &self.settings.adhoc,
                format!("{id}-{}", submission.class_path),
                now,
            )),
        };
        let reservation = context
            .executor
            .reserve()
            .map_err(|QueueFull { capacity }| {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                SubmitError::QueueFull {
                    context: if context.adhoc {
                        "ad-hoc".to_owned()
                    } else {
                        context.name.clone()
                    },
                    capacity,
                }
            })?;
        // A job may shorten its context's execution timeout, never lengthen it: the context's
        // is the admin's bound on how long a worker thread is held.
        let timeout = plan::effective_job_timeout(context.settings.job_timeout, config_timeout);
        let (app, app_version) = match &plan {
            JobPlan::Pipeline(p) => (Some(p.app.name().to_owned()), Some(p.app.meta.version)),
            JobPlan::Builtin(_) => (
                submission.app.clone(),
                submission
                    .app
                    .as_deref()
                    .and_then(|a| self.catalog.get(a))
                    .map(|a| a.meta.version),
            ),
        };
        let class_path = match &plan {
            JobPlan::Pipeline(p) if p.target.is_none() => PIPELINE_RUN_CLASS.to_owned(),
            _ => submission.class_path.clone(),
        };
        let record = JobRecord {
            id: id.clone(),
            class_path,
            app,
            app_version,
            context: context.name.clone(),
            context_id: context.id.clone(),
            status: JobStatus::Running,
            start_time: resume.as_ref().map_or(now, |r| r.start_time),
            end_time: None,
            failure: None,
            result_rows: None,
            result_bytes: None,
            rerun_on_restart: matches!(plan, JobPlan::Pipeline(_)),
        };
        if resume.is_some() {
            self.store.update_job(&record, None)?;
        } else {
            self.take_stored_job_place()?;
            let config = serde_json::to_vec(&submission.config).unwrap_or_else(|_| b"{}".to_vec());
            if let Err(e) = self.store.insert_job(&record, &config) {
                self.stored_jobs.fetch_sub(1, Ordering::AcqRel);
                return Err(e.into());
            }
        }
        let live = Arc::new(LiveJob {
            id: id.clone(),
            context,
            record: Mutex::new(record),
            stop: AtomicU8::new(StopReason::None as u8),
            queued: AtomicBool::new(true),
            result: Mutex::new(None),
            done: watch::Sender::new(false),
            timeout,
            deadline: Mutex::new(None),
            cancel: Cancel::new(),
        });
        lock(&self.live).insert(id, live.clone());
        self.counters.submitted.fetch_add(1, Ordering::Relaxed);
        let me = self.me.clone();
        let job = live.clone();
        reservation.submit(Box::new(move || {
            if let Some(server) = me.upgrade() {
                server.run_job(&job, plan);
            }
        }));
        Ok(live)
    }

    /// Runs on a worker thread.
    /// Holds a materialisation to what may run: partitions that have ended (the range stops
    /// at now), at most `limits.max_run_partitions` runs.
    fn bound_runs(&self, plan: JobPlan) -> Result<JobPlan, SubmitError> {
        let JobPlan::Pipeline(mut run) = plan else {
            return Ok(plan);
        };
        let now = self.clock.now();
        run.to = run.to.min(now);
        if run.from >= run.to {
            return Err(SubmitError::Invalid(vec![format!(
                "the range starts at {}, after now ({}): a partition runs once it has ended",
                run.from.to_rfc3339(),
                now.to_rfc3339()
            )]));
        }
        let runs = runs_spanned(&run.app.pipeline, run.jobs.as_deref(), run.from, run.to);
        self.settings
            .limits
            .check_run_partitions(runs, "the run")
            .map_err(|e| SubmitError::Invalid(vec![e]))?;
        Ok(JobPlan::Pipeline(run))
    }

    fn run_job(&self, live: &Arc<LiveJob>, plan: JobPlan) {
        live.queued.store(false, Ordering::Release);
        if live.stop_reason() != StopReason::None {
            return; // Killed while queued: already final.
        }
        let span = info_span!("job", job_id = %live.id, class = %lock(&live.record).class_path);
        let _entered = span.enter();
        if let (Some(timeout), Some(timeouts)) = (live.timeout, &self.timeouts) {
            let key = timeouts.insert(Instant::now() + timeout, Arc::downgrade(live));
            *lock(&live.deadline) = Some(key);
            // A stop that came first finalised the job without seeing the deadline.
            if live.stop_reason() != StopReason::None {
                timeouts.remove(key);
            }
        }
        // Built-in classes run cancellably and count against the memory limit; a
        // materialisation's runs stop at their own safe points and commit or fail as runs.
        let _tracked = matches!(plan, JobPlan::Builtin(_))
            .then(|| self.memory.track(&live.cancel, format!("job {}", live.id)));
        let execute = || match &plan {
            JobPlan::Builtin(_) => live.cancel.scope(|| self.execute(live, &plan)),
            JobPlan::Pipeline(_) => self.execute(live, &plan),
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(execute));
        let outcome = match result {
            Ok(Ok(frame)) => Outcome::Finished(frame),
            Ok(Err(ExecError::Stopped)) => return,
            // Cancelled without a stop request: the memory watchdog stopped it.
            Ok(Err(ExecError::Failed { .. }))
                if live.cancel.is_cancelled() && live.stop_reason() == StopReason::None =>
            {
                Outcome::Failed(JobFailure {
                    message: live.cancel.reason().unwrap_or("cancelled").to_owned(),
                    error_class: "floe.MemoryLimit".to_owned(),
                    stack: String::new(),
                })
            }
            Ok(Err(ExecError::Failed { message, class })) => Outcome::Failed(JobFailure {
                message,
                error_class: class.to_owned(),
                stack: String::new(),
            }),
            Err(panic) => {
                let what = crate::error::panic_message(panic.as_ref());
                Outcome::Failed(JobFailure {
                    message: format!("the job panicked: {what}"),
                    error_class: "floe.JobPanicked".to_owned(),
                    stack: String::new(),
                })
            }
        };
        self.finalize(live, outcome);
    }

    /// Requests a stop and finalises the job now; the worker discards whatever it computes.
    fn stop_job(&self, live: &LiveJob, reason: StopReason) {
        if live
            .stop
            .compare_exchange(
                StopReason::None as u8,
                reason as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return;
        }
        let outcome = match reason {
            StopReason::TimedOut => {
                let limit = live.timeout.unwrap_or_default();
                Outcome::Failed(JobFailure {
                    message: format!(
                        "job timed out after {} (its execution timeout)",
                        humantime::format_duration(limit)
                    ),
                    error_class: "floe.JobTimeout".to_owned(),
                    stack: String::new(),
                })
            }
            StopReason::ContextDeleted => {
                Outcome::Killed(format!("context {} was deleted", live.context.name))
            }
            StopReason::Shutdown => Outcome::Failed(JobFailure {
                message: "server shut down before the job finished".to_owned(),
                error_class: "floe.ServerShutdown".to_owned(),
                stack: String::new(),
            }),
            StopReason::Killed | StopReason::None => {
                Outcome::Killed("killed by request".to_owned())
            }
        };
        let why = match &outcome {
            Outcome::Failed(failure) => failure.message.clone(),
            Outcome::Killed(message) => message.clone(),
            Outcome::Finished(_) => String::new(),
        };
        // The worker's polars work stops at its next check; the job is final already.
        live.cancel.cancel(why);
        self.finalize(live, outcome);
    }

    /// Moves a job to its final state, once; later calls do nothing.
    fn finalize(&self, live: &LiveJob, outcome: Outcome) {
        let mut record = lock(&live.record);
        if record.status.is_final() {
            return;
        }
        record.end_time = Some(self.clock.now());
        let mut frame = None;
        // Bytes of the result stored for this job, counted in `result_bytes` from now on.
        let mut stored_bytes = 0;
        match outcome {
            Outcome::Finished(result) => match self.store_result(&live.id, &result) {
                Ok(bytes) => {
                    record.status = JobStatus::Finished;
                    record.result_rows = Some(result.height() as u64);
                    record.result_bytes = Some(bytes);
                    stored_bytes = bytes;
                    frame = Some(result);
                }
                Err(failure) => {
                    record.status = JobStatus::Error;
                    record.failure = Some(failure);
                }
            },
            Outcome::Failed(failure) => {
                record.status = JobStatus::Error;
                record.failure = Some(failure);
            }
            Outcome::Killed(message) => {
                record.status = JobStatus::Killed;
                record.failure = Some(JobFailure {
                    message,
                    error_class: "floe.JobKilled".to_owned(),
                    stack: String::new(),
                });
            }
        }
        if let Err(e) = self.store.update_job(&record, None) {
            warn!(job_id = %live.id, error = %error_chain(&e), "cannot store the job's final state");
            record.status = JobStatus::Error;
            record.result_rows = None;
            record.failure = Some(JobFailure {
                message: format!("cannot store the result: {}", error_chain(&e)),
                error_class: "floe.StoreError".to_owned(),
                stack: String::new(),
            });
            frame = None;
            // A result already stored stays counted (`result_bytes` of the record) until the
            // job is deleted with it.
            let _ = self.store.update_job(&record, None);
        }
        let status = record.status;
        lock(&self.finished).insert(finished_key(&record), stored_bytes);
        drop(record);
        *lock(&live.result) = frame;
        match status {
            JobStatus::Finished => &self.counters.finished,
            JobStatus::Killed => &self.counters.killed,
            _ => &self.counters.error,
        }
        .fetch_add(1, Ordering::Relaxed);
        if let (Some(key), Some(timeouts)) = (lock(&live.deadline).take(), &self.timeouts) {
            timeouts.remove(key);
        }
        if live.context.adhoc {
            live.context.objects.clear();
        }
        lock(&self.live).remove(&live.id);
        live.done.send_replace(true);
        self.maybe_sweep();
    }

    /// Stores a finished job's result within `limits.max_result_bytes` and
    /// `limits.max_job_results_bytes`; returns the bytes it takes, or the failure the job ends
    /// with instead (nothing stored).
    fn store_result(&self, id: &str, result: &DataFrame) -> Result<u64, JobFailure> {
        let failure = |message: String, class: &str| JobFailure {
            message,
            error_class: class.to_owned(),
            stack: String::new(),
        };
        let limits = &self.settings.limits;
        limits
            .check_result_bytes(arrow_size(result) as u64)
            .map_err(|message| failure(message, "floe.ResultTooLarge"))?;
        let mut reserved = None;
        let mut refused = None;
        let stored = self.store.put_job_result(id, result, |bytes| {
            if self.reserve_result_bytes(bytes) {
                reserved = Some(bytes);
                true
            } else {
                refused = Some(bytes);
                false
            }
        });
        match stored {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => {
                let bytes = refused.unwrap_or_default();
                Err(failure(
                    format!(
                        "the job's result takes {} but stored job results take {} of the {} \
                         allowed (`{MAX_JOB_RESULTS_BYTES}`), and no finished job that ended \
                         `job_retention` ({}) ago can make room; it was not stored: retry \
                         later, or ask for a smaller result",
                        byte_size(bytes),
                        byte_size(self.result_bytes.load(Ordering::Acquire)),
                        byte_size(limits.max_job_results_bytes),
                        humantime::format_duration(self.settings.job_retention)
                    ),
                    "floe.JobResultsFull",
                ))
            }
            Err(e) => {
                if let Some(bytes) = reserved {
                    self.result_bytes.fetch_sub(bytes, Ordering::AcqRel);
                }
                warn!(job_id = %id, error = %error_chain(&e), "cannot store the job's result");
                let error_class = match e {
                    StoreError::EncodeJobResult { .. } => "floe.ResultEncoding",
                    _ => "floe.StoreError",
                };
                Err(failure(
                    format!("cannot store the result: {}", error_chain(&e)),
                    error_class,
                ))
            }
        }
    }

    /// Counts `bytes` of a new result against `limits.max_job_results_bytes`. Over it, first
    /// deletes finished jobs older than `job_retention` that free enough (oldest first);
    /// returns whether the bytes were counted.
    fn reserve_result_bytes(&self, bytes: u64) -> bool {
        let limit = self.settings.limits.max_job_results_bytes;
        let take = || {
            self.result_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |total| {
                    total.checked_add(bytes).filter(|after| *after <= limit)
                })
                .is_ok()
        };
        if take() {
            return true;
        }
        if let Err(e) = self.sweep_for_result_bytes(bytes) {
            warn!(error = %error_chain(&e), "job results sweep failed");
        }
        take()
    }

    /// Deletes finished jobs with a stored result, those that ended first first, but none that
    /// ended less than `job_retention` ago, until `needed` more bytes fit under
    /// `limits.max_job_results_bytes`. Deletes nothing when those jobs cannot free enough: a
    /// result that will be refused anyway must not cost the history. Returns how many it
    /// deleted.
    fn sweep_for_result_bytes(&self, needed: u64) -> Result<usize, StoreError> {
        let limit = self.settings.limits.max_job_results_bytes;
        let ended_before = self.retention_cutoff();
        let victims: Vec<(FinishedKey, u64)> = {
            // Choosing the victims and counting them gone happen under one lock, as in
            // `sweep`.
            let mut finished = lock(&self.finished);
            let total = self.result_bytes.load(Ordering::Acquire);
            let excess = total.saturating_add(needed).saturating_sub(limit);
            let mut freed = 0u64;
            let mut chosen = Vec::new();
            for ((ended, id), bytes) in finished.iter() {
                if freed >= excess || *ended > ended_before {
                    break;
                }
                if *bytes > 0 {
                    chosen.push((*ended, id.clone()));
                    freed += bytes;
                }
            }
            if freed < excess {
                return Ok(0);
            }
            let victims: Vec<_> = chosen
                .into_iter()
                .filter_map(|key| finished.remove_entry(&key))
                .collect();
            self.stored_jobs.fetch_sub(victims.len(), Ordering::AcqRel);
            self.result_bytes.fetch_sub(freed, Ordering::AcqRel);
            victims
        };
        let mut deleted = 0;
        let mut failed = None;
        for (key, bytes) in victims {
            if failed.is_some() {
                // Still stored: counted again, for a later sweep.
                self.stored_jobs.fetch_add(1, Ordering::AcqRel);
                self.result_bytes.fetch_add(bytes, Ordering::AcqRel);
                lock(&self.finished).insert(key, bytes);
                continue;
            }
            if let Err(e) = self.store.delete_job(&key.1) {
                self.stored_jobs.fetch_add(1, Ordering::AcqRel);
                self.result_bytes.fetch_add(bytes, Ordering::AcqRel);
                lock(&self.finished).insert(key, bytes);
                failed = Some(e);
                continue;
            }
            deleted += 1;
        }
        if deleted > 0 {
            info!(deleted, "jobs deleted to make room for a job result");
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(deleted),
        }
    }

    /// Finished jobs that ended at or before this instant may be deleted (`job_retention`).
    fn retention_cutoff(&self) -> DateTime<Utc> {
        let retention = TimeDelta::from_std(self.settings.job_retention).unwrap_or(TimeDelta::MAX);
        self.clock
            .now()
            .checked_sub_signed(retention)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// Kills a job (`DELETE /jobs/{id}`).
    pub fn kill(&self, id: &str) -> Result<KillOutcome, StoreError> {
        if let Some(live) = self.live_job(id) {
            self.stop_job(&live, StopReason::Killed);
            let record = live.record();
            return Ok(match record.status {
                JobStatus::Killed => KillOutcome::Killed,
                JobStatus::Error => KillOutcome::AlreadyFailed(record.failure),
                _ => KillOutcome::NotRunning,
            });
        }
        Ok(match self.store.job(id)? {
            None => KillOutcome::NotFound,
            Some(record) if record.status == JobStatus::Error => {
                KillOutcome::AlreadyFailed(record.failure)
            }
            Some(_) => KillOutcome::NotRunning,
        })
    }

    /// Trims the job history off the caller's thread once it is 10% over `job_history` (so
    /// the sweep runs in batches, not after every job).
    fn maybe_sweep(&self) {
        let limit = self.settings.job_history;
        if self.stored_jobs.load(Ordering::Acquire) <= limit + limit / 10 + 1
            || self.sweeping.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let me = self.me.clone();
        self.runtime.spawn_blocking(move || {
            if let Some(server) = me.upgrade() {
                if let Err(e) = server.sweep(usize::MAX) {
                    warn!(error = %error_chain(&e), "job history sweep failed");
                }
                server.sweeping.store(false, Ordering::Release);
            }
        });
    }

    /// Deletes finished jobs, those that ended first first, while more than `job_history`
    /// are stored, but never one that ended less than `job_retention` ago: a client may still
    /// be polling for it. Deletes at most `batch`; returns how many it deleted.
    fn sweep(&self, batch: usize) -> Result<usize, StoreError> {
        let ended_before = self.retention_cutoff();
        let mut deleted = 0;
        while deleted < batch {
            // Choosing a victim and counting it gone happen under one lock, so two sweeps
            // never take the history below `job_history` together.
            let victim = {
                let mut finished = lock(&self.finished);
                if self.stored_jobs.load(Ordering::Acquire) <= self.settings.job_history {
                    break;
                }
                match finished.first_key_value() {
                    Some(((ended, _), _)) if *ended <= ended_before => finished.pop_first(),
                    _ => None,
                }
            };
            let Some((victim, bytes)) = victim else {
                break;
            };
            self.stored_jobs.fetch_sub(1, Ordering::AcqRel);
            self.result_bytes.fetch_sub(bytes, Ordering::AcqRel);
            if let Err(e) = self.store.delete_job(&victim.1) {
                // Still stored: a later sweep tries again.
                self.stored_jobs.fetch_add(1, Ordering::AcqRel);
                self.result_bytes.fetch_add(bytes, Ordering::AcqRel);
                lock(&self.finished).insert(victim, bytes);
                return Err(e);
            }
            deleted += 1;
        }
        if deleted > 0 {
            info!(deleted, "job history trimmed");
        }
        Ok(deleted)
    }

    /// Counts a new job record against `limits.max_stored_jobs`. At the limit, deletes what
    /// the history allows (a few jobs here, the rest in the background); when nothing may be
    /// deleted yet, refuses with the time until the oldest finished job may go.
    fn take_stored_job_place(&self) -> Result<(), SubmitError> {
        /// Jobs a refused submission deletes itself before it asks again: enough to make room
        /// for the next submissions too, few enough to stay quick on the request's thread.
        const SWEEP_ON_SUBMIT: usize = 16;
        let limit = self
            .settings
            .limits
            .max_stored_jobs(self.settings.job_history);
        let take = || {
            self.stored_jobs
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |stored| {
                    (stored < limit).then_some(stored + 1)
                })
                .is_ok()
        };
        if take() {
            return Ok(());
        }
        if self.sweep(SWEEP_ON_SUBMIT)? > 0 {
            self.maybe_sweep();
            if take() {
                return Ok(());
            }
        }
        let retention = self.settings.job_retention;
        let oldest_end = lock(&self.finished)
            .first_key_value()
            .map(|((ended, _), _)| *ended);
        // With no finished job stored, every stored job is still running, and the first to
        // end is kept for the whole retention.
        let now = self.clock.now();
        let deletable_at = oldest_end
            .unwrap_or(now)
            .checked_add_signed(TimeDelta::from_std(retention).unwrap_or(TimeDelta::MAX))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let wait = (deletable_at - now).to_std().unwrap_or_default();
        let whole_seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Err(SubmitError::TooManyStoredJobs {
            limit,
            retention,
            retry_after: Duration::from_secs(whole_seconds.max(1)),
        })
    }

    /// Refuses new jobs, waits up to `grace` for running ones, then records the rest as
    /// ERROR "server shut down" so none is left RUNNING, and flushes the store.
    pub fn shutdown(&self, grace: Duration) {
        self.shutting_down.store(true, Ordering::Release);
        let deadline = std::time::Instant::now() + grace;
        while !lock(&self.live).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for job in self.live_jobs() {
            self.stop_job(&job, StopReason::Shutdown);
        }
        // Every job is final now; wait out what is left of the grace for worker threads still
        // inside a polars computation, so their discarded work ends before the store flush.
        let executors: Vec<Arc<Executor>> = self
            .contexts()
            .iter()
            .map(|context| {
                context.stop();
                context.executor.clone()
            })
            .chain([self.adhoc.clone()])
            .collect();
        self.adhoc.stop();
        for executor in executors {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !executor.join(left) {
                warn!("a worker thread was still computing at shutdown; its result is discarded");
            }
        }
        if let Err(e) = self.store.flush() {
            warn!(error = %error_chain(&e), "cannot flush the store at shutdown");
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    // ---- execution -------------------------------------------------------------------------

    fn checkpoint(live: &LiveJob) -> Result<(), ExecError> {
        if live.stop_reason() == StopReason::None {
            Ok(())
        } else {
            Err(ExecError::Stopped)
        }
    }

    fn execute(&self, live: &LiveJob, plan: &JobPlan) -> Result<DataFrame, ExecError> {
        match plan {
            JobPlan::Pipeline(plan) => self.execute_pipeline(live, plan),
            JobPlan::Builtin(plan) => self.execute_builtin(live, plan),
        }
    }

    fn execute_pipeline(
        &self,
        live: &LiveJob,
        plan: &PipelinePlan,
    ) -> Result<DataFrame, ExecError> {
        Self::checkpoint(live)?;
        let scheduler = self.scheduler.get().ok_or_else(|| ExecError::Failed {
            message: "no scheduler runs pipeline runs in this process".to_owned(),
            class: "floe.MaterializeError",
        })?;
        let request = RunRequest {
            jobs: plan.jobs.clone(),
            from: plan.from,
            to: plan.to,
            force: plan.force,
        };
        // The scheduler runs them with every other run (a backfill's of the same partitions
        // included, which this job then shares): a stop cancels the runs only it queued.
        let report = scheduler
            .run_to_end(
                plan.app.name(),
                &request,
                &|| live.stop_reason() != StopReason::None,
                &mut |_| {},
            )
            .map_err(|e| match e {
                ManualRunError::Stopped => ExecError::Stopped,
                // The scheduler stops first at shutdown; the job ends as every job cut short
                // by it does.
                ManualRunError::ShuttingDown => ExecError::Failed {
                    message: "server shut down before the job finished".to_owned(),
                    class: "floe.ServerShutdown",
                },
                ManualRunError::Scheduler(e) => ExecError::Failed {
                    message: error_chain(&e),
                    class: "floe.MaterializeError",
                },
            })?;
        if !report.is_success() {
            let first = report
                .failed
                .first()
                .map(|(key, error)| format!("; first: {key}: {error}"))
                .unwrap_or_default();
            return Err(ExecError::Failed {
                message: format!(
                    "{} of {} runs failed, {} skipped because an upstream run failed{first}",
                    report.failed.len(),
                    report.planned,
                    report.upstream_failed
                ),
                class: "floe.RunFailed",
            });
        }
        Self::checkpoint(live)?;
        match &plan.target {
            Some(job) => read_job_results(
                &self.materializer,
                &plan.app.pipeline,
                job,
                plan.from,
                plan.to,
            )
            .map(|results| results.frame)
            .map_err(|e| ExecError::Failed {
                message: e.to_string(),
                class: "floe.ResultsError",
            }),
            None => events_frame(&report.runs).map_err(|e| ExecError::Failed {
                message: e.to_string(),
                class: "floe.ResultEncoding",
            }),
        }
    }

    fn execute_builtin(&self, live: &LiveJob, plan: &BuiltinPlan) -> Result<DataFrame, ExecError> {
        let objects = &live.context.objects;
        let mut inputs = BTreeMap::new();
        for (name, spec) in &plan.inputs {
            Self::checkpoint(live)?;
            let input = match spec {
                InputSpec::Object {
                    name: object,
                    window,
                } => {
                    let found = objects.get(object).ok_or_else(|| {
                        let known: Vec<String> =
                            objects.summaries().into_iter().map(|s| s.name).collect();
                        ExecError::Failed {
                            message: format!(
                                "named object `{object}` not found in context {} (objects: {})",
                                context_label(&live.context),
                                if known.is_empty() {
                                    "none".to_owned()
                                } else {
                                    known.join(", ")
                                }
                            ),
                            class: "floe.NamedObjectNotFound",
                        }
                    })?;
                    let (frame, window) = match window {
                        None => (found.frame.as_ref().clone().lazy(), None),
                        Some(window) => {
                            let (frame, column) = object_window_rows(&found.frame, object, window)?;
                            let bounds = Window {
                                start: window.from,
                                end: window.to,
                            };
                            (frame, Some((column, bounds, window.timezone)))
                        }
                    };
                    ResolvedInput::rows(JobInput {
                        cached_rows: Some(Arc::new(ObjectRows {
                            object: found,
                            window,
                        })),
                        ..JobInput::of_frame(frame)
                    })
                }
                InputSpec::Scan {
                    app,
                    what,
                    from,
                    to,
                    cache_as,
                } => {
                    let window = Window {
                        start: *from,
                        end: *to,
                    };
                    match cache_as {
                        None => self.scan(app, what, &window)?,
                        Some(object) => objects
                            .get_or_create(
                                object,
                                &object_definition(app, what, &window),
                                self.clock.now(),
                                || {
                                    let frame = self
                                        .scan(app, what, &window)
                                        .and_then(|input| {
                                            PolarsEngine::frame(input).map_err(source_failed)
                                        })
                                        .map_err(|e| match e {
                                            ExecError::Failed { message, .. } => message,
                                            ExecError::Stopped => "stopped".to_owned(),
                                        })?;
                                    crate::frames::cancel::collect(frame).map_err(|e| {
                                        format!(
                                            "cannot build named object `{object}`: {}",
                                            crate::job::builtin::short_polars_error(&e)
                                        )
                                    })
                                },
                            )
                            .map(|object| {
                                ResolvedInput::rows(JobInput {
                                    frame: object.frame.as_ref().clone().lazy(),
                                    cached_rows: Some(Arc::new(ObjectRows {
                                        object,
                                        window: None,
                                    })),
                                    states: None,
                                    upstream_kind: None,
                                })
                            })
                            .map_err(|e| match e {
                                ObjectError::Conflict(message) => ExecError::Failed {
                                    message: format!(
                                        "context {}: {message}",
                                        context_label(&live.context)
                                    ),
                                    class: "floe.NamedObjectConflict",
                                },
                                ObjectError::Failed(message) => ExecError::Failed {
                                    message,
                                    class: "floe.NamedObjectError",
                                },
                            })?,
                    }
                }
            };
            inputs.insert(name.clone(), input);
        }
        Self::checkpoint(live)?;
        let resolved = ResolvedPlan {
            pipeline: ADHOC_CONTEXT,
            job: plan.class,
            kind: plan.job.as_ref(),
            // Built-in classes do not look at the grain; an ad-hoc run has none of its own.
            grain: Grain::Hourly,
            window: plan::input_span(&plan.inputs),
            inputs,
        };
        let failed = |e: JobError| ExecError::Failed {
            message: e.to_string(),
            class: "floe.JobFailed",
        };
        let output = self
            .materializer
            .engine()
            .execute(resolved)
            .map_err(|e| match e {
                EngineError::Source(e) => source_failed(e),
                EngineError::Job(e) => failed(e),
            })?;
        // Keys grouped from a selection's encoded columns come back as strings, as they were.
        let output = JobOutput {
            frame: decode_strings(output.frame).map_err(|e| failed(e.into()))?,
            state: output.state,
        };
        Self::checkpoint(live)?;
        if let Some(name) = &plan.publish {
            // A result too large to store fails the job: it must not publish it first.
            self.settings
                .limits
                .check_result_bytes(arrow_size(&output.frame) as u64)
                .map_err(ExecError::failed("floe.ResultTooLarge"))?;
            let origin = ObjectOrigin::Published {
                job_id: live.id.clone(),
            };
            objects
                .put(name, output.frame.clone(), self.clock.now(), origin)
                .map_err(ExecError::failed("floe.NamedObjectError"))?;
        }
        Ok(output.frame)
    }

    /// An ad-hoc job's scan of an app's source or of a job's results, resolved.
    fn scan<'a>(
        &self,
        app: &'a App,
        what: &ScanTarget,
        window: &Window,
    ) -> Result<ResolvedInput<'a>, ExecError> {
        let inputs = self.materializer.inputs();
        let resolved = match what {
            ScanTarget::Source(name) => inputs.source(&app.pipeline, name, window),
            ScanTarget::Results(job) => {
                self.settings
                    .limits
                    .check_result_partitions(
                        partitions_spanned(&app.pipeline, job, window.start, window.end),
                        &format!("input `results = {job}`"),
                    )
                    .map_err(ExecError::failed("floe.LimitExceeded"))?;
                inputs.results(&app.pipeline, job, window, Gaps::Refuse)
            }
        };
        resolved.map_err(|e| {
            let class = match &e {
                InputError::UnknownSource { .. } | InputError::Source(_) => "floe.SourceError",
                InputError::Stale { .. } => "floe.ResultsStale",
                InputError::Missing { .. } => "floe.ResultsMissing",
                InputError::UnknownJob { .. }
                | InputError::Results(_)
                | InputError::Combine { .. } => "floe.ResultsError",
            };
            ExecError::Failed {
                message: e.to_string(),
                class,
            }
        })
    }
}

/// A source that could not be read, as a job's failure.
fn source_failed(e: SourceError) -> ExecError {
    ExecError::Failed {
        message: e.to_string(),
        class: "floe.SourceError",
    }
}

/// The rows of the named object `name` in `window` (a slice when its time column is sorted),
/// and the time column.
fn object_window_rows(
    frame: &DataFrame,
    name: &str,
    window: &ObjectWindow,
) -> Result<(LazyFrame, String), ExecError> {
    // `problem` reads on from the object's name: "has no datetime column", ": time column …".
    let failed = |problem: String| ExecError::Failed {
        message: format!("named object `{name}`{problem}"),
        class: "floe.NamedObjectWindow",
    };
    let column = match &window.time_column {
        Some(column) => column.clone(),
        None => only_datetime_column(frame).map_err(|problem| failed(format!(" {problem}")))?,
    };
    let bounds = Window {
        start: window.from,
        end: window.to,
    };
    let rows = window_rows(frame, &column, &bounds, window.timezone)
        .map_err(|problem| failed(format!(": {problem}")))?;
    Ok((rows, column))
}

/// What a get-or-create input builds its named object from.
fn object_definition(app: &App, what: &ScanTarget, window: &Window) -> ObjectDefinition {
    let (kind, name) = match what {
        ScanTarget::Source(name) => ("source", name),
        ScanTarget::Results(name) => ("results", name),
    };
    ObjectDefinition {
        app: app.name().to_owned(),
        app_version: app.meta.version,
        kind,
        name: name.clone(),
        from: window.start,
        to: window.end,
    }
}

/// A finished job's place in the history sweep's order: (end time, id).
type FinishedKey = (DateTime<Utc>, Box<str>);

/// Every stored finished job by (end time, id), with the bytes of its stored result.
type FinishedJobs = BTreeMap<FinishedKey, u64>;

/// A finished job's place in the history sweep's order.
fn finished_key(record: &JobRecord) -> FinishedKey {
    (
        record.end_time.unwrap_or(record.start_time),
        record.id.as_str().into(),
    )
}

/// How a context is named in messages.
pub fn context_label(context: &Context) -> &str {
    if context.adhoc {
        ADHOC_CONTEXT
    } else {
        &context.name
    }
}

/// The runs of a pipeline run as a frame: job, partition, outcome, rows, error, milliseconds.
fn events_frame(events: &[RunEvent]) -> PolarsResult<DataFrame> {
    let mut jobs = Vec::with_capacity(events.len());
    let mut partitions = Vec::with_capacity(events.len());
    let mut outcomes = Vec::with_capacity(events.len());
    let mut rows: Vec<Option<u64>> = Vec::with_capacity(events.len());
    let mut errors: Vec<Option<String>> = Vec::with_capacity(events.len());
    let mut millis = Vec::with_capacity(events.len());
    for event in events {
        jobs.push(event.key.job.clone());
        partitions.push(event.key.partition_start.to_rfc3339());
        let (outcome, row_count, error) = match &event.outcome {
            RunOutcome::Fresh => ("fresh", None, None),
            RunOutcome::Computed { rows } => ("computed", Some(*rows), None),
            RunOutcome::Failed { error } => ("failed", None, Some(error.clone())),
            RunOutcome::UpstreamFailed { upstream } => (
                "upstream_failed",
                None,
                Some(format!("upstream {upstream} failed")),
            ),
        };
        outcomes.push(outcome);
        rows.push(row_count);
        errors.push(error);
        millis.push(event.elapsed_ms);
    }
    df!(
        "job" => jobs,
        "partition_start" => partitions,
        "outcome" => outcomes,
        "rows" => rows,
        "error" => errors,
        "elapsed_ms" => millis,
    )
}

/// The label of a record's context, as spark-jobserver reports it.
pub fn record_context_label(record: &JobRecord) -> &str {
    if record.context.is_empty() {
        ADHOC_CONTEXT
    } else {
        &record.context
    }
}

impl JobServer {
    /// Ids of jobs not yet final that run against `app` (what blocks deleting it).
    pub fn jobs_using_app(&self, app: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .live_jobs()
            .iter()
            .filter(|job| job.record().app.as_deref() == Some(app))
            .map(|job| job.id.clone())
            .collect();
        ids.sort();
        ids
    }
}
