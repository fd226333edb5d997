//! The materialiser: turns "these jobs over this time range" into the (job, partition) run
//! graph, skips every partition whose stored result is still fresh, and computes the rest on
//! polars in dependency order.
//!
//! Freshness is a fingerprint per run: the job's definition fingerprint, the window, the
//! identity (path, size, modification time) of every source file read, and the fingerprints of
//! every upstream partition read. Change any of them and the run's result is stale; change
//! none and it is never recomputed. A result and its `Succeeded` state are committed in one
//! store transaction, so a crash leaves either the old or the new result, never half of one.
//!
//! Downstream jobs read upstream partitions from the in-memory cache, falling back to the
//! store; they never rescan a source whose upstream result is fresh.
//!
//! Everything here is synchronous and CPU-bound (polars): async callers run it on a blocking
//! thread, never on the async workers.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::engine::{Engine, FileIdentity, PolarsEngine, ResolvedPlan, SourceError};
use crate::error::error_chain;
use crate::frames::encode_ipc;
use crate::inputs::{InputError, InputResolver, upstream_keys, upstream_windows};
use crate::job::JobOutput;
use crate::partition::{Window, windows_within};
use crate::pipeline::data_roots::DataRoots;
use crate::pipeline::{InputRef, JobDef, Pipeline};
use crate::results::cache::CachedResult;
use crate::results::{ResultCache, StoredResults};
use crate::store::{NewResult, RunKey, RunState, SeenRun, Store, StoreError};

/// Which partitions to bring up to date.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Jobs to materialise, plus whatever they depend on; `None` means every job.
    pub jobs: Option<Vec<String>>,
    /// Partitions whose window lies inside [from, to) are selected, per job grain.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Recompute even fresh partitions.
    pub force: bool,
}

/// One (job, partition) node of the run graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRun {
    pub job: String,
    pub window: Window,
    /// Indices into the plan of the upstream runs this one reads.
    pub upstream: Vec<usize>,
}

/// The run graph in an order where every run comes after the runs it reads.
#[derive(Debug, Clone, Default)]
pub struct RunPlan {
    pub runs: Vec<PlannedRun>,
}

/// Why one run of [`Materializer::run_until`] did not end fresh or computed.
enum OneRunError {
    /// It failed here (its sources, its computation, its commit): recorded as Failed.
    Failed(String),
    /// Another executor (the scheduler, a backfill) is computing it right now: its outcome
    /// stands, and this request records nothing over it.
    HeldElsewhere(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// The stored result was fresh; nothing was computed.
    Fresh,
    Computed {
        rows: u64,
    },
    Failed {
        error: String,
    },
    /// Not attempted because an upstream run failed.
    UpstreamFailed {
        upstream: String,
    },
}

/// What one scheduled attempt at a partition came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionAttempt {
    /// Fresh (its stored result still holds) or computed and committed.
    Done(RunOutcome),
    /// A source that waits for its files has none for the window yet.
    NotReady { source: String },
    /// The job failed; the run is still Running in the store for the caller to settle.
    Failed(String),
    /// Another writer holds the run, or this attempt was stopped or superseded: nothing was
    /// committed and the run's state belongs to someone else.
    Lost(String),
}

/// Why a run's source files cannot be read.
enum SourceProblem {
    /// The named source waits for its files and has none for the window yet.
    NotReady(String),
    Failed(String),
}

impl SourceProblem {
    fn into_message(self) -> String {
        match self {
            SourceProblem::NotReady(source) => format!("source `{source}` has no files yet"),
            SourceProblem::Failed(message) => message,
        }
    }
}

/// Why computing or committing a run did not end in a commit.
enum CommitError {
    Failed(String),
    Stopped,
    Lost(String),
}

impl CommitError {
    fn into_message(self) -> String {
        match self {
            CommitError::Failed(message) | CommitError::Lost(message) => message,
            CommitError::Stopped => "stopped".to_owned(),
        }
    }
}

/// The fingerprint of one run: the job's definition, its window, the identity of every
/// source file it reads and the fingerprints of the upstream results it reads.
fn run_fingerprint(
    def: &JobDef,
    window: &Window,
    source_files: &BTreeMap<String, Vec<FileIdentity>>,
    upstream_fingerprints: &[&str],
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(def.definition_fingerprint.as_bytes());
    hasher.update(window.start.timestamp_millis().to_be_bytes());
    hasher.update(window.end.timestamp_millis().to_be_bytes());
    for (name, files) in source_files {
        hasher.update(name.as_bytes());
        for file in files {
            hasher.update(file.path.to_string_lossy().as_bytes());
            hasher.update(file.size.to_be_bytes());
            hasher.update(file.modified_ns.to_be_bytes());
        }
    }
    for upstream in upstream_fingerprints {
        hasher.update(upstream.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// What happened to one planned run, reported as it happens.
#[derive(Debug, Clone)]
pub struct RunEvent {
    pub key: RunKey,
    pub outcome: RunOutcome,
    pub elapsed_ms: f64,
}

#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub planned: usize,
    pub fresh: usize,
    pub computed: usize,
    pub failed: Vec<(RunKey, String)>,
    pub upstream_failed: usize,
}

impl RunReport {
    pub fn is_success(&self) -> bool {
        self.failed.is_empty() && self.upstream_failed == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MaterializeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("pipeline `{pipeline}` has no job `{job}` (jobs: {known})")]
    UnknownJob {
        pipeline: String,
        job: String,
        known: String,
    },
    #[error("stopped before every planned run was done")]
    Stopped,
    #[error("empty range: `from` ({from}) must be before `to` ({to})")]
    EmptyRange {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
}

/// Runs jobs of pipelines against a store.
#[derive(Debug, Clone)]
pub struct Materializer {
    store: Store,
    cache: Arc<ResultCache>,
    /// What each run reads (sources within the data roots, upstream partitions).
    inputs: InputResolver,
    /// What computes each run.
    engine: Arc<dyn Engine>,
    clock: Arc<dyn Clock>,
}

impl AsRef<StoredResults> for Materializer {
    fn as_ref(&self) -> &StoredResults {
        self.inputs.stored_results()
    }
}

impl Materializer {
    pub fn new(
        store: Store,
        cache: Arc<ResultCache>,
        data_dir: PathBuf,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let inputs = InputResolver::new(
            StoredResults::new(store.clone(), cache.clone()),
            Arc::new(DataRoots::new(&data_dir, &[])),
        );
        Materializer {
            store,
            cache,
            inputs,
            engine: Arc::new(PolarsEngine),
            clock,
        }
    }

    /// The same materialiser, reading within `roots` (which carry the data dir).
    pub fn with_data_roots(mut self, roots: Arc<DataRoots>) -> Self {
        self.inputs = self.inputs.with_data_roots(roots);
        self
    }

    /// The same materialiser, computing runs on `engine`.
    pub fn with_engine(mut self, engine: Arc<dyn Engine>) -> Self {
        self.engine = engine;
        self
    }

    /// The roots pipelines without their own read within.
    pub fn data_roots(&self) -> &Arc<DataRoots> {
        self.inputs.data_roots()
    }

    /// The resolver of job inputs this materialiser reads through.
    pub fn inputs(&self) -> &InputResolver {
        &self.inputs
    }

    /// The engine that computes runs.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// Stored results, read through the cache.
    pub fn results(&self) -> &StoredResults {
        self.inputs.stored_results()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn cache(&self) -> &Arc<ResultCache> {
        &self.cache
    }

    /// The folder relative source paths resolve against.
    pub fn data_dir(&self) -> &std::path::Path {
        self.inputs.data_roots().base()
    }

    /// The run graph for `request`, without running anything.
    pub fn plan(
        &self,
        pipeline: &Pipeline,
        request: &RunRequest,
    ) -> Result<RunPlan, MaterializeError> {
        if request.from >= request.to {
            return Err(MaterializeError::EmptyRange {
                from: request.from,
                to: request.to,
            });
        }
        let targets: Vec<String> = match &request.jobs {
            Some(jobs) => {
                for job in jobs {
                    if pipeline.job(job).is_none() {
                        return Err(MaterializeError::UnknownJob {
                            pipeline: pipeline.name.clone(),
                            job: job.clone(),
                            known: pipeline.dag.topological_order().join(", "),
                        });
                    }
                }
                jobs.clone()
            }
            None => pipeline.dag.topological_order().to_vec(),
        };
        let from = request.from.max(pipeline.start);
        let to = pipeline.end.map_or(request.to, |end| request.to.min(end));

        let mut planner = Planner {
            pipeline,
            index: HashMap::new(),
            runs: Vec::new(),
        };
        if from < to {
            for job in &targets {
                if let Some(def) = pipeline.job(job) {
                    for window in windows_within(def.grain, pipeline.timezone, from, to) {
                        planner.add(def, window);
                    }
                }
            }
        }
        // Dependencies always point to a job earlier in topological order, so sorting by
        // (job position, window start) is a valid execution order.
        let position: HashMap<&str, usize> = pipeline
            .dag
            .topological_order()
            .iter()
            .enumerate()
            .map(|(i, name)| (name.as_str(), i))
            .collect();
        let mut order: Vec<usize> = (0..planner.runs.len()).collect();
        order.sort_by_key(|&i| {
            (
                position.get(planner.runs[i].job.as_str()).copied(),
                planner.runs[i].window.start,
            )
        });
        let mut new_index = vec![0; order.len()];
        for (new, &old) in order.iter().enumerate() {
            new_index[old] = new;
        }
        let runs = order
            .iter()
            .map(|&old| {
                let mut run = planner.runs[old].clone();
                run.upstream = run.upstream.iter().map(|&u| new_index[u]).collect();
                run
            })
            .collect();
        Ok(RunPlan { runs })
    }

    /// Plans and executes `request`, calling `on_event` after each run.
    pub fn run(
        &self,
        pipeline: &Pipeline,
        request: &RunRequest,
        on_event: impl FnMut(&RunEvent),
    ) -> Result<RunReport, MaterializeError> {
        self.run_until(pipeline, request, &|| false, on_event)
    }

    /// [`Materializer::run`] that checks `stop` before each run and returns
    /// [`MaterializeError::Stopped`] once it says so. Runs already committed stay committed;
    /// the one in progress when `stop` turns true finishes first (a polars computation cannot
    /// be interrupted), so a partition is never left half-written.
    pub fn run_until(
        &self,
        pipeline: &Pipeline,
        request: &RunRequest,
        stop: &dyn Fn() -> bool,
        mut on_event: impl FnMut(&RunEvent),
    ) -> Result<RunReport, MaterializeError> {
        let plan = self.plan(pipeline, request)?;
        let mut report = RunReport {
            planned: plan.runs.len(),
            ..RunReport::default()
        };
        // Fingerprint of each planned run once it is fresh or computed; None when it failed.
        let mut fingerprints: Vec<Option<String>> = Vec::with_capacity(plan.runs.len());
        for run in &plan.runs {
            if stop() {
                self.store.flush()?;
                return Err(MaterializeError::Stopped);
            }
            let started = Instant::now();
            let key = RunKey {
                pipeline: pipeline.name.clone(),
                job: run.job.clone(),
                partition_start: run.window.start,
            };
            let failed_upstream = run.upstream.iter().find(|&&u| fingerprints[u].is_none());
            let (outcome, fingerprint) = match (failed_upstream, pipeline.job(&run.job)) {
                (Some(&upstream), _) => {
                    let upstream = &plan.runs[upstream];
                    let name = format!("{}@{}", upstream.job, upstream.window.start.to_rfc3339());
                    self.record_unstarted(
                        &key,
                        run.window.end,
                        RunState::UpstreamFailed,
                        &format!("upstream run {name} failed"),
                    );
                    (RunOutcome::UpstreamFailed { upstream: name }, None)
                }
                (None, Some(def)) => {
                    let upstream_fingerprints: Vec<&str> = run
                        .upstream
                        .iter()
                        .filter_map(|&u| fingerprints[u].as_deref())
                        .collect();
                    match self.materialize_one(
                        pipeline,
                        def,
                        run,
                        &key,
                        &upstream_fingerprints,
                        request.force,
                    ) {
                        Ok((outcome, fingerprint)) => (outcome, Some(fingerprint)),
                        Err(OneRunError::Failed(error)) => {
                            warn!(pipeline = %key.pipeline, job = %key.job, partition = %key.partition_start, %error, "run failed");
                            match self.store.mark_failed(&key, &error, self.clock.now()) {
                                Err(StoreError::RunNotFound { .. }) => self.record_unstarted(
                                    &key,
                                    run.window.end,
                                    RunState::Failed,
                                    &error,
                                ),
                                Err(store_error) => {
                                    warn!(run = %key, error = %error_chain(&store_error), "could not record the failure");
                                }
                                Ok(_) => {}
                            }
                            (RunOutcome::Failed { error }, None)
                        }
                        Err(OneRunError::HeldElsewhere(error)) => {
                            info!(run = %key, "computed by another executor now; left to it");
                            (RunOutcome::Failed { error }, None)
                        }
                    }
                }
                (None, None) => (
                    RunOutcome::Failed {
                        error: format!("unknown job `{}`", run.job),
                    },
                    None,
                ),
            };
            match &outcome {
                RunOutcome::Fresh => report.fresh += 1,
                RunOutcome::Computed { .. } => report.computed += 1,
                RunOutcome::Failed { error } => report.failed.push((key.clone(), error.clone())),
                RunOutcome::UpstreamFailed { .. } => report.upstream_failed += 1,
            }
            fingerprints.push(fingerprint);
            on_event(&RunEvent {
                key,
                outcome,
                elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
            });
        }
        self.store.flush()?;
        info!(
            pipeline = %pipeline.name,
            planned = report.planned,
            computed = report.computed,
            fresh = report.fresh,
            failed = report.failed.len(),
            "materialisation finished"
        );
        Ok(report)
    }

    /// [`Store::record_unstarted`], logging a store that refuses.
    fn record_unstarted(
        &self,
        key: &RunKey,
        partition_end: DateTime<Utc>,
        state: RunState,
        error: &str,
    ) {
        if let Err(store_error) =
            self.store
                .record_unstarted(key, partition_end, state, error, self.clock.now())
        {
            warn!(run = %key, error = %error_chain(&store_error), "could not record the run's outcome");
        }
    }

    /// Brings one run up to date; returns its outcome and fingerprint, or why not.
    fn materialize_one(
        &self,
        pipeline: &Pipeline,
        def: &JobDef,
        run: &PlannedRun,
        key: &RunKey,
        upstream_fingerprints: &[&str],
        force: bool,
    ) -> Result<(RunOutcome, String), OneRunError> {
        // Source files are resolved first: their identities are part of the fingerprint.
        let source_files = self
            .source_files(pipeline, def, &run.window, false)
            .map_err(|problem| OneRunError::Failed(problem.into_message()))?;
        let fingerprint = run_fingerprint(def, &run.window, &source_files, upstream_fingerprints);
        if !force
            && self
                .is_fresh(key, &fingerprint)
                .map_err(|e| OneRunError::Failed(error_chain(&e)))?
        {
            debug!(pipeline = %key.pipeline, job = %key.job, partition = %key.partition_start, "fresh, skipped");
            return Ok((RunOutcome::Fresh, fingerprint));
        }
        let now = self.clock.now();
        self.store
            .mark_running(key, run.window.end, &fingerprint, now)
            .map_err(|e| match e {
                StoreError::InvalidTransition {
                    from: Some(RunState::Running),
                    ..
                } => OneRunError::HeldElsewhere(format!(
                    "run {key} is being computed by another executor (the scheduler or a \
                     backfill); its outcome stands"
                )),
                e => OneRunError::Failed(error_chain(&e)),
            })?;
        let rows = self
            .compute(pipeline, def, &run.window, &source_files, &HashMap::new())
            .and_then(|output| self.commit(key, def, &fingerprint, output, None))
            .map_err(|e| OneRunError::Failed(e.into_message()))?;
        Ok((RunOutcome::Computed { rows }, fingerprint))
    }

    /// One scheduled attempt at a partition the scheduler has enqueued (Pending): checks its
    /// sources are there, that its upstream results exist, skips it when its stored result
    /// is still fresh (unless `force`), and otherwise computes and commits it. `stop` is
    /// asked before the commit: an attempt the scheduler gave up on commits nothing.
    pub fn attempt_partition(
        &self,
        pipeline: &Pipeline,
        def: &JobDef,
        window: &Window,
        force: bool,
        stop: &dyn Fn() -> bool,
    ) -> PartitionAttempt {
        let key = RunKey {
            pipeline: pipeline.name.clone(),
            job: def.name.clone(),
            partition_start: window.start,
        };
        let source_files = match self.source_files(pipeline, def, window, true) {
            Ok(files) => files,
            Err(SourceProblem::NotReady(source)) => return PartitionAttempt::NotReady { source },
            Err(SourceProblem::Failed(error)) => return PartitionAttempt::Failed(error),
        };
        let mut upstream_fingerprints = Vec::new();
        let mut known_upstream = HashMap::new();
        for (up_key, _) in upstream_keys(pipeline, def, window) {
            match self.store.result_fingerprint(&up_key) {
                Ok(Some(fingerprint)) => {
                    known_upstream.insert(up_key, fingerprint.clone());
                    upstream_fingerprints.push(fingerprint);
                }
                Ok(None) => {
                    return PartitionAttempt::Failed(format!(
                        "upstream run {up_key} has no result"
                    ));
                }
                Err(e) => return PartitionAttempt::Failed(error_chain(&e)),
            }
        }
        let upstream: Vec<&str> = upstream_fingerprints.iter().map(String::as_str).collect();
        let fingerprint = run_fingerprint(def, window, &source_files, &upstream);
        // The run's record, read once and handed on to `mark_running` and the commit.
        let seen = match self.store.seen_run(&key) {
            Ok(seen) => seen,
            Err(e) => return PartitionAttempt::Failed(error_chain(&e)),
        };
        if !force {
            match self.store.result_fingerprint_of(&key, seen.record()) {
                Ok(Some(stored)) if stored == fingerprint => {
                    return match self.store.mark_fresh(&key, &fingerprint, self.clock.now()) {
                        Ok(_) => PartitionAttempt::Done(RunOutcome::Fresh),
                        Err(e) => PartitionAttempt::Lost(error_chain(&e)),
                    };
                }
                Ok(_) => {}
                Err(e) => return PartitionAttempt::Failed(error_chain(&e)),
            }
        }
        let (record, seen) = match self.store.mark_running_seen(
            &key,
            Some(seen),
            window.end,
            &fingerprint,
            self.clock.now(),
        ) {
            Ok(marked) => marked,
            Err(e) => return PartitionAttempt::Lost(error_chain(&e)),
        };
        if stop() {
            return PartitionAttempt::Lost("stopped before computing".to_owned());
        }
        let outcome = self
            .compute(pipeline, def, window, &source_files, &known_upstream)
            .and_then(|output| {
                if stop() {
                    return Err(CommitError::Stopped);
                }
                self.commit(
                    &key,
                    def,
                    &fingerprint,
                    output,
                    Some((record.attempts, seen)),
                )
            });
        match outcome {
            Ok(rows) => PartitionAttempt::Done(RunOutcome::Computed { rows }),
            Err(CommitError::Failed(error)) => PartitionAttempt::Failed(error),
            Err(CommitError::Stopped) => {
                PartitionAttempt::Lost("stopped before committing".to_owned())
            }
            Err(CommitError::Lost(error)) => PartitionAttempt::Lost(error),
        }
    }

    /// The files of each source the job reads, for its window. With `wait_for_files`, a
    /// source that waits (`wait` above zero) and has no files yet is `NotReady`.
    fn source_files(
        &self,
        pipeline: &Pipeline,
        def: &JobDef,
        window: &Window,
        wait_for_files: bool,
    ) -> Result<BTreeMap<String, Vec<FileIdentity>>, SourceProblem> {
        let mut source_files = BTreeMap::new();
        for input in &def.inputs {
            let InputRef::Source(name) = input else {
                continue;
            };
            match self.inputs.source_files(pipeline, name, window) {
                Ok(files) => {
                    source_files.insert(name.clone(), files);
                }
                Err(InputError::Source(SourceError::NoFiles { .. }))
                    if wait_for_files
                        && pipeline
                            .sources
                            .get(name)
                            .is_some_and(|source| !source.wait.is_zero()) =>
                {
                    return Err(SourceProblem::NotReady(name.clone()));
                }
                Err(error) => return Err(SourceProblem::Failed(error.to_string())),
            }
        }
        Ok(source_files)
    }

    /// Runs the job. `known_upstream` holds the result fingerprints of upstream runs the
    /// caller has just read, so their results come from the cache without reading their
    /// records again.
    fn compute(
        &self,
        pipeline: &Pipeline,
        def: &JobDef,
        window: &Window,
        source_files: &BTreeMap<String, Vec<FileIdentity>>,
        known_upstream: &HashMap<RunKey, String>,
    ) -> Result<JobOutput, CommitError> {
        let inputs = self
            .inputs
            .partition_inputs(pipeline, def, window, source_files, known_upstream)
            .map_err(|e| CommitError::Failed(e.to_string()))?;
        let plan = ResolvedPlan {
            pipeline: &pipeline.name,
            job: &def.name,
            kind: def.job.as_ref(),
            grain: def.grain,
            window: *window,
            inputs,
        };
        self.engine
            .execute(plan)
            .map_err(|e| CommitError::Failed(e.to_string()))
    }

    /// Encodes and commits a computed result of `def`, then caches it.
    fn commit(
        &self,
        key: &RunKey,
        def: &JobDef,
        fingerprint: &str,
        output: JobOutput,
        attempt: Option<(u32, SeenRun)>,
    ) -> Result<u64, CommitError> {
        let frame_ipc = encode_ipc(&output.frame)
            .map_err(|e| CommitError::Failed(format!("cannot encode result: {e}")))?;
        let state_ipc = output
            .state
            .as_ref()
            .map(encode_ipc)
            .transpose()
            .map_err(|e| CommitError::Failed(format!("cannot encode state: {e}")))?;
        let rows = output.frame.height() as u64;
        let committed = self.store.commit_success(
            key,
            NewResult {
                fingerprint: fingerprint.to_owned(),
                definition: Some(def.lineage_fingerprint.clone()),
                rows,
                frame_ipc,
                state_ipc,
                attempt: attempt.as_ref().map(|(attempt, _)| *attempt),
                seen: attempt.map(|(_, seen)| seen),
            },
            self.clock.now(),
        );
        match committed {
            Ok(_) => {}
            Err(e @ (StoreError::StaleAttempt { .. } | StoreError::InvalidTransition { .. })) => {
                return Err(CommitError::Lost(error_chain(&e)));
            }
            Err(e) => return Err(CommitError::Failed(error_chain(&e))),
        }
        self.cache.insert(
            key.clone(),
            fingerprint.to_owned(),
            CachedResult {
                frame: output.frame,
                state: output.state,
            },
        );
        debug!(pipeline = %key.pipeline, job = %key.job, partition = %key.partition_start, rows, "computed");
        Ok(rows)
    }

    fn is_fresh(&self, key: &RunKey, fingerprint: &str) -> Result<bool, StoreError> {
        let Some(record) = self.store.run(key)? else {
            return Ok(false);
        };
        if record.state != RunState::Succeeded || record.fingerprint.as_deref() != Some(fingerprint)
        {
            return Ok(false);
        }
        Ok(self
            .store
            .result_meta(key)?
            .is_some_and(|meta| meta.fingerprint == fingerprint))
    }
}

/// Builds the run graph by walking from target runs to the upstream runs they read.
struct Planner<'a> {
    pipeline: &'a Pipeline,
    index: HashMap<(String, DateTime<Utc>), usize>,
    runs: Vec<PlannedRun>,
}

impl Planner<'_> {
    fn add(&mut self, def: &JobDef, window: Window) -> usize {
        if let Some(&existing) = self.index.get(&(def.name.clone(), window.start)) {
            return existing;
        }
        let mut upstream = Vec::new();
        for input in &def.inputs {
            if let InputRef::Job(name) = input
                && let Some(up) = self.pipeline.job(name)
            {
                let windows = upstream_windows(self.pipeline, up, def, &window);
                for up_window in windows {
                    upstream.push(self.add(up, up_window));
                }
            }
        }
        let position = self.runs.len();
        self.runs.push(PlannedRun {
            job: def.name.clone(),
            window,
            upstream,
        });
        self.index
            .insert((def.name.clone(), window.start), position);
        position
    }
}
