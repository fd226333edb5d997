//! The materialiser: turns "these jobs over this time range" into the (job, partition) run
//! graph ([`Materializer::plan`]), and makes one attempt at one partition
//! ([`Materializer::attempt_partition`]): skipped when its stored result is still fresh,
//! otherwise computed on polars and committed. The scheduler is the one executor that runs
//! plans: it records, queues, limits, retries and settles every run, whoever asked for it
//! (`floe run`, the job server, backfills, recurring runs), and calls this for each attempt.
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tracing::debug;

use crate::clock::Clock;
use crate::engine::{Engine, FileIdentity, PolarsEngine, ResolvedPlan, SourceError};
use crate::error::error_chain;
use crate::frames::encode_ipc;
use crate::inputs::{InputError, InputResolver, upstream_keys, upstream_windows};
use crate::job::JobOutput;
use crate::partition::{Window, window_containing, windows_within};
use crate::pipeline::checks::{
    CheckKind, Metric, Severity, anomaly_verdict, freshness_verdict, metric_value,
};
use crate::pipeline::data_roots::DataRoots;
use crate::pipeline::{InputRef, JobDef, Pipeline};
use crate::results::cache::CachedResult;
use crate::results::{ResultCache, StoredResults};
use crate::store::{CheckOutcome, NewResult, ResultStore, RunKey, SeenRun, Store, StoreError};

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
}

/// The run graph in an order where every run comes after the runs it reads.
#[derive(Debug, Clone, Default)]
pub struct RunPlan {
    pub runs: Vec<PlannedRun>,
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
    /// A source that waits for its files has none for the window yet; `detail` says where
    /// they were looked for.
    NotReady { source: String, detail: String },
    /// The job failed; the run is still Running in the store for the caller to settle.
    Failed(String),
    /// Another writer holds the run, or this attempt was stopped or superseded: nothing was
    /// committed and the run's state belongs to someone else.
    Lost(String),
}

/// Why a run's source files cannot be read.
pub(crate) enum SourceProblem {
    /// The named source waits for its files and has none for the window yet (the source,
    /// then where its files were looked for).
    NotReady(String, String),
    Failed(String),
}

/// Why computing or committing a run did not end in a commit.
enum CommitError {
    Failed(String),
    Stopped,
    Lost(String),
}

/// The fingerprint of one run: the job's definition, its window, the identity of every
/// source file it reads and the fingerprints of the upstream results it reads.
pub(crate) fn run_fingerprint(
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

/// What a request's runs came to, counted from their outcomes.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub planned: usize,
    pub fresh: usize,
    pub computed: usize,
    pub failed: Vec<(RunKey, String)>,
    pub upstream_failed: usize,
    /// Every planned run's outcome, in the plan's order (every run after those it reads).
    pub runs: Vec<RunEvent>,
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
    #[error("empty range: `from` ({from}) must be before `to` ({to})")]
    EmptyRange {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
}

/// Runs jobs of pipelines against a store.
#[derive(Debug, Clone)]
pub struct Materializer {
    /// What each run reads (sources within the data roots, upstream partitions), and the
    /// store and cache its results go to.
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
            StoredResults::new(store, cache),
            Arc::new(DataRoots::new(&data_dir, &[])),
        );
        Materializer {
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

    /// The same materialiser, its resolver reading the data files of `/data` in `files`.
    pub fn with_data_files(mut self, files: Arc<crate::data_files::DataFiles>) -> Self {
        self.inputs = self.inputs.with_data_files(files);
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
        self.results().store()
    }

    /// The clock runs and results are stamped with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn cache(&self) -> &Arc<ResultCache> {
        self.results().cache()
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
            planned: HashSet::new(),
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
        let mut runs = planner.runs;
        runs.sort_by_key(|run| (position.get(run.job.as_str()).copied(), run.window.start));
        Ok(RunPlan { runs })
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
        let source_files = match self.source_files(pipeline, def, window) {
            Ok(files) => files,
            Err(SourceProblem::NotReady(source, detail)) => {
                return PartitionAttempt::NotReady { source, detail };
            }
            Err(SourceProblem::Failed(error)) => return PartitionAttempt::Failed(error),
        };
        let mut upstream_fingerprints = Vec::new();
        let mut known_upstream = HashMap::new();
        for (up_key, _) in upstream_keys(pipeline, def, window) {
            match self.store().result_fingerprint(&up_key) {
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
        let seen = match self.store().seen_run(&key) {
            Ok(seen) => seen,
            Err(e) => return PartitionAttempt::Failed(error_chain(&e)),
        };
        if !force {
            match self.store().result_fingerprint_of(&key, seen.record()) {
                Ok(Some(stored)) if stored == fingerprint => {
                    return match self
                        .store()
                        .mark_fresh(&key, &fingerprint, self.clock.now())
                    {
                        Ok(_) => PartitionAttempt::Done(RunOutcome::Fresh),
                        Err(e) => PartitionAttempt::Lost(error_chain(&e)),
                    };
                }
                Ok(_) => {}
                Err(e) => return PartitionAttempt::Failed(error_chain(&e)),
            }
        }
        let (record, seen) = match self.store().mark_running_seen(
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
            .compute(pipeline, def, window, &source_files, &known_upstream, stop)
            .and_then(|output| {
                if stop() {
                    return Err(CommitError::Stopped);
                }
                let checks = self.evaluate_checks(pipeline, def, window, &source_files, &output);
                let failed: Vec<String> = checks
                    .iter()
                    .filter(|c| !c.passed && c.severity == Severity::Error.as_str())
                    .map(|c| format!("{}: {}", c.name, c.detail.as_deref().unwrap_or("failed")))
                    .collect();
                if !failed.is_empty() {
                    // The outcomes go with the failure; the result is not committed.
                    if let Err(e) = self.store().record_failed_checks(&key, &checks) {
                        return Err(CommitError::Lost(error_chain(&e)));
                    }
                    return Err(CommitError::Failed(format!(
                        "data check failed: {}",
                        failed.join("; ")
                    )));
                }
                self.commit(
                    &key,
                    def,
                    &fingerprint,
                    output,
                    Some((record.attempts, seen)),
                    checks,
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

    /// The files of each source the job reads, for its window. A source that waits for its
    /// files (`wait` above zero) and has none yet is `NotReady`.
    pub(crate) fn source_files(
        &self,
        pipeline: &Pipeline,
        def: &JobDef,
        window: &Window,
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
                Err(InputError::Source(error @ SourceError::NoFiles { .. }))
                    if pipeline
                        .sources
                        .get(name)
                        .is_some_and(|source| !source.wait.is_zero()) =>
                {
                    return Err(SourceProblem::NotReady(name.clone(), error.to_string()));
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
        stop: &dyn Fn() -> bool,
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
            definition: Some(&def.run_definition),
            stop: Some(stop),
            inputs,
        };
        self.engine
            .execute(plan)
            .map_err(|e| CommitError::Failed(e.to_string()))
    }

    /// The outcomes of `def`'s data checks on `output`, the result of its run over `window`.
    fn evaluate_checks(
        &self,
        pipeline: &Pipeline,
        def: &JobDef,
        window: &Window,
        source_files: &BTreeMap<String, Vec<FileIdentity>>,
        output: &JobOutput,
    ) -> Vec<CheckOutcome> {
        let mut outcomes = Vec::with_capacity(def.checks.len());
        for check in &def.checks {
            let outcome = match &check.kind {
                CheckKind::Freshness { source, max_lag } => check.outcome(
                    newest_event(pipeline, source, window, source_files)
                        .map(|newest| freshness_verdict(newest, window.end, *max_lag)),
                ),
                CheckKind::Anomaly { metric, last, .. } => {
                    match metric_value(metric, &output.frame) {
                        Ok(Some(value)) => {
                            let history = self.metric_history(pipeline, def, window, metric, *last);
                            anomaly_verdict(check, value, &history)
                        }
                        Ok(None) => check.outcome(Err("the metric is null".to_owned())),
                        Err(why) => check.outcome(Err(why)),
                    }
                }
                _ => match check.evaluate_on(&output.frame) {
                    Some(outcome) => outcome,
                    None => check.outcome(Err("not a check of the result".to_owned())),
                },
            };
            outcomes.push(outcome);
        }
        outcomes
    }

    /// `metric` on the results of `def`'s `last` partitions before `window` that have one,
    /// newest first.
    fn metric_history(
        &self,
        pipeline: &Pipeline,
        def: &JobDef,
        window: &Window,
        metric: &Metric,
        last: u32,
    ) -> Vec<f64> {
        let mut values = Vec::new();
        let mut before = *window;
        for _ in 0..last {
            if before.start <= pipeline.start {
                break;
            }
            before = window_containing(
                def.grain,
                pipeline.timezone,
                before.start - chrono::Duration::milliseconds(1),
            );
            let key = RunKey::new(&pipeline.name, &def.name, before.start);
            let value = match metric {
                Metric::RowCount => self
                    .store()
                    .result_meta(&key)
                    .ok()
                    .flatten()
                    .map(|meta| meta.rows as f64),
                Metric::Aggregate { .. } => self
                    .results()
                    .load(&key)
                    .ok()
                    .and_then(|result| metric_value(metric, &result.frame).ok().flatten()),
            };
            values.extend(value);
        }
        values
    }

    /// Encodes and commits a computed result of `def`, then caches it.
    fn commit(
        &self,
        key: &RunKey,
        def: &JobDef,
        fingerprint: &str,
        output: JobOutput,
        attempt: Option<(u32, SeenRun)>,
        checks: Vec<CheckOutcome>,
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
        let committed = self.store().commit_success(
            key,
            NewResult {
                fingerprint: fingerprint.to_owned(),
                definition: Some(def.lineage_fingerprint.clone()),
                rows,
                frame_ipc,
                state_ipc,
                attempt: attempt.as_ref().map(|(attempt, _)| *attempt),
                seen: attempt.map(|(_, seen)| seen),
                checks,
                job_definition: Some((
                    def.definition_fingerprint.clone(),
                    def.definition_text.clone(),
                )),
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
        self.cache().insert(
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
}

/// The newest event time of `source` in `window` (`None`: no row), read from the files
/// the run read.
fn newest_event(
    pipeline: &Pipeline,
    source: &str,
    window: &Window,
    source_files: &BTreeMap<String, Vec<FileIdentity>>,
) -> Result<Option<DateTime<Utc>>, String> {
    let def = pipeline
        .sources
        .get(source)
        .ok_or_else(|| format!("no source `{source}`"))?;
    let files = source_files.get(source).map_or(&[][..], Vec::as_slice);
    let frame = crate::engine::scan_source_window(def, files, window).map_err(|e| e.to_string())?;
    let newest = frame
        .select([polars::prelude::col(def.time_column.as_str())
            .max()
            .dt()
            .timestamp(polars::prelude::TimeUnit::Milliseconds)
            .alias("newest")])
        .collect()
        .map_err(|e| crate::error::short_polars_error(&e))?;
    let millis = newest
        .column("newest")
        .ok()
        .and_then(|c| c.i64().ok().and_then(|c| c.get(0)));
    Ok(millis.and_then(DateTime::<Utc>::from_timestamp_millis))
}

/// Collects the runs of the plan by walking from target runs to the upstream runs they read.
struct Planner<'a> {
    pipeline: &'a Pipeline,
    planned: HashSet<(String, DateTime<Utc>)>,
    runs: Vec<PlannedRun>,
}

impl Planner<'_> {
    fn add(&mut self, def: &JobDef, window: Window) {
        if !self.planned.insert((def.name.clone(), window.start)) {
            return;
        }
        for input in &def.inputs {
            if let InputRef::Job(name) = input
                && let Some(up) = self.pipeline.job(name)
            {
                for up_window in upstream_windows(self.pipeline, up, def, &window) {
                    self.add(up, up_window);
                }
            }
        }
        self.runs.push(PlannedRun {
            job: def.name.clone(),
            window,
        });
    }
}
