//! The store interface: what Floe asks of the place it keeps runs, results, jobs and the
//! scheduler's bookkeeping, as traits a second backend can implement. The sled [`Store`]
//! implements all of them; callers may keep naming the concrete `Store` (its inherent methods
//! are the same operations), while anything that must work on any backend takes
//! `S: StoreBackend`. The contract every implementation must keep, transitions and
//! compare-and-swap included, is written down as a test suite in `conformance`.
//!
//! - [`RunStore`]: run records and their state machine (`lifecycle`), every write a
//!   compare-and-swap on the run's record, and start-up recovery.
//! - [`ResultStore`]: a run's materialised result, committed together with the run's move to
//!   Succeeded and read as one snapshot.
//! - [`JobStore`]: the job server's job records, configs and results.
//! - [`ScheduleStore`]: the scheduler's cursors and backfill requests.
//! - [`StoreBackend`]: all of them, plus making writes durable.
//!
//! Snapshots ([`SeenRun`]) and result frames carry `sled::IVec`, a cheap reference-counted
//! byte buffer any backend can build from a `Vec<u8>`.

use chrono::{DateTime, Utc};
use polars::prelude::DataFrame;
use sled::IVec;

use super::{
    BackfillRecord, JobRecord, NewResult, ResultMeta, RunKey, RunRecord, RunState, SeenRun, Store,
    StoreError, StoredResult,
};

/// A list of runs with their records, in key order (by pipeline, job, then time).
pub type RunList = Vec<(RunKey, RunRecord)>;

/// Run records and the transitions between their states. Every write is atomic on one run:
/// two writers racing on the same run cannot both win, and a refused transition leaves the
/// record as it was. Which transition each method may make is `lifecycle`'s table.
pub trait RunStore: Send + Sync {
    /// The record of one run, if it exists.
    fn run(&self, key: &RunKey) -> Result<Option<RunRecord>, StoreError>;

    /// The run's record as a snapshot to hand on to the next transition (`*_seen`), which
    /// then needs no read of its own; a stale snapshot only costs that transition a retry.
    fn seen_run(&self, key: &RunKey) -> Result<SeenRun, StoreError>;

    /// Runs of one job with `partition_start` in `[from, to)`, ascending.
    fn runs_of_job(
        &self,
        pipeline: &str,
        job: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<RunList, StoreError>;

    /// All runs of a pipeline, by job then time.
    fn runs_of_pipeline(&self, pipeline: &str) -> Result<RunList, StoreError>;

    /// How many runs the store holds, of any state.
    fn run_count(&self) -> usize;

    /// Every run the scheduler still has work for (`RunRecord::is_active`), in key order.
    fn active_runs(&self) -> Result<RunList, StoreError>;

    /// Runs a crash left Running become Pending again (or Succeeded, when their result was
    /// stored but the commit cut short); returns how many were requeued.
    fn requeue_interrupted(&self, now: DateTime<Utc>) -> Result<usize, StoreError>;

    /// `requeue_interrupted`, then `active_runs`: start-up in one pass.
    fn recover_runs(&self, now: DateTime<Utc>) -> Result<(usize, RunList), StoreError>;

    /// Any state but Running (or no record) → Running: attempts + 1, the new fingerprint,
    /// started now. Returns the record and its snapshot for the attempt's commit.
    fn mark_running_seen(
        &self,
        key: &RunKey,
        seen: Option<SeenRun>,
        partition_end: DateTime<Utc>,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<(RunRecord, SeenRun), StoreError>;

    /// `mark_running_seen` from a fresh read.
    fn mark_running(
        &self,
        key: &RunKey,
        partition_end: DateTime<Utc>,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError> {
        self.mark_running_seen(key, None, partition_end, fingerprint, now)
            .map(|(record, _)| record)
    }

    /// Running, Pending or Failed → Failed with `error`, failures + 1, retried at `retry_at`
    /// (`None`: failed for good).
    fn mark_failed_until(
        &self,
        key: &RunKey,
        error: &str,
        now: DateTime<Utc>,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<RunRecord, StoreError>;

    /// `mark_failed_until` without a retry.
    fn mark_failed(
        &self,
        key: &RunKey,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError> {
        self.mark_failed_until(key, error, now, None)
    }

    /// Any state but Running (or no record) → Pending, its retry budget and wait cleared;
    /// `None` (and nothing written) when the run is Running.
    fn enqueue_run_seen(
        &self,
        key: &RunKey,
        seen: Option<SeenRun>,
        partition_end: DateTime<Utc>,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<RunRecord>, StoreError>;

    /// `enqueue_run_seen` from a fresh read.
    fn enqueue_run(
        &self,
        key: &RunKey,
        partition_end: DateTime<Utc>,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<RunRecord>, StoreError> {
        self.enqueue_run_seen(key, None, partition_end, force, now)
    }

    /// Records a run that ended without starting (Failed or UpstreamFailed) when there is no
    /// record of it yet; an existing record is returned as it is.
    fn record_unstarted(
        &self,
        key: &RunKey,
        partition_end: DateTime<Utc>,
        state: RunState,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError>;

    /// Pending → UpstreamFailed, naming `upstream`; other states are left as they are.
    fn mark_upstream_failed(
        &self,
        key: &RunKey,
        upstream: &RunKey,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError>;

    /// Pending → Succeeded because its stored result (computed for `fingerprint`) is fresh;
    /// Succeeded stays as it is.
    fn mark_fresh(
        &self,
        key: &RunKey,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError>;

    /// UpstreamFailed → Pending; other states are left as they are.
    fn mark_unblocked(&self, key: &RunKey) -> Result<RunRecord, StoreError>;

    /// A queued run (Pending, UpstreamFailed, Failed awaiting a retry) → Cancelled; other
    /// runs are left as they are.
    fn mark_cancelled(
        &self,
        key: &RunKey,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError>;

    /// A Pending run waits for its source files: since when, and when to look again.
    fn mark_waiting(
        &self,
        key: &RunKey,
        reason: &str,
        now: DateTime<Utc>,
        recheck_at: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError>;
}

/// Materialised results of runs. A result belongs to the attempt that computed it and is
/// committed with the run's move Running → Succeeded; readers see a run's old result or its
/// new one, never a mix.
pub trait ResultStore: RunStore {
    /// Stores the result of the run's current attempt and moves the run to Succeeded. A run
    /// that is not Running is an `InvalidTransition`, one on another attempt than
    /// `result.attempt` a `StaleAttempt`; either way nothing changes.
    fn commit_success(
        &self,
        key: &RunKey,
        result: NewResult,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError>;

    /// Meta, frame and state of the run's current result, as one snapshot.
    fn result(&self, key: &RunKey) -> Result<Option<StoredResult>, StoreError>;

    /// The meta of the run's current result, without its frames.
    fn result_meta(&self, key: &RunKey) -> Result<Option<ResultMeta>, StoreError>;

    /// The fingerprint of the run's stored result, given its record as just read.
    fn result_fingerprint_of(
        &self,
        key: &RunKey,
        record: Option<&RunRecord>,
    ) -> Result<Option<String>, StoreError>;

    /// The fingerprint of the run's stored result (`None`: it has none).
    fn result_fingerprint(&self, key: &RunKey) -> Result<Option<String>, StoreError> {
        self.result_fingerprint_of(key, self.run(key)?.as_ref())
    }

    /// The current result's frame (Arrow IPC).
    fn result_frame(&self, key: &RunKey) -> Result<Option<IVec>, StoreError> {
        Ok(self.result(key)?.map(|result| result.frame_ipc))
    }

    /// The current result's mergeable state (Arrow IPC), if it has one.
    fn result_state(&self, key: &RunKey) -> Result<Option<IVec>, StoreError> {
        Ok(self.result(key)?.and_then(|result| result.state_ipc))
    }
}

/// The job server's jobs: records (whose status moves along `lifecycle`'s job table),
/// posted configs and results.
pub trait JobStore: Send + Sync {
    /// Records a new job with its posted config.
    fn insert_job(&self, record: &JobRecord, config: &[u8]) -> Result<(), StoreError>;

    /// Writes a job's new record, after its result when it has one. An illegal status change
    /// is an `InvalidJobTransition`, and nothing is written.
    fn update_job(&self, record: &JobRecord, result: Option<&DataFrame>) -> Result<(), StoreError>;

    /// Stores job `id`'s result if `admit` accepts the bytes it takes; returns them, or
    /// `None` when refused (then nothing is stored).
    fn put_job_result(
        &self,
        id: &str,
        result: &DataFrame,
        admit: &mut dyn FnMut(u64) -> bool,
    ) -> Result<Option<u64>, StoreError>;

    /// The job's record.
    fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError>;

    /// The job's posted config, as posted.
    fn job_config(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// The job's stored result.
    fn job_result(&self, id: &str) -> Result<Option<DataFrame>, StoreError>;

    /// Whether the job has a stored result.
    fn job_result_exists(&self, id: &str) -> Result<bool, StoreError>;

    /// The bytes the job's stored result takes (`None`: it has none).
    fn job_result_bytes(&self, id: &str) -> Result<Option<u64>, StoreError>;

    /// Jobs newest first, those `keep` accepts, at most `limit`.
    fn jobs_newest(
        &self,
        limit: usize,
        keep: &mut dyn FnMut(&JobRecord) -> bool,
    ) -> Result<Vec<JobRecord>, StoreError>;

    /// Every job, oldest first.
    fn jobs_oldest_first(&self) -> Box<dyn Iterator<Item = Result<JobRecord, StoreError>> + '_>;

    /// Deletes a job with its config and result.
    fn delete_job(&self, id: &str) -> Result<(), StoreError>;
}

/// The scheduler's own records: how far each job's recurring runs are planned, and
/// backfill requests.
pub trait ScheduleStore: Send + Sync {
    /// The end of the last window planned for a job's recurring runs.
    fn schedule_cursor(
        &self,
        pipeline: &str,
        job: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Records how far a job's recurring runs are planned.
    fn set_schedule_cursor(
        &self,
        pipeline: &str,
        job: &str,
        planned_through: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Stores a backfill's record durably before returning.
    fn put_backfill(&self, record: &BackfillRecord) -> Result<(), StoreError>;

    /// One backfill's record.
    fn backfill(&self, id: &str) -> Result<Option<BackfillRecord>, StoreError>;

    /// The newest backfills first, at most `limit` of those `keep` accepts.
    fn backfills_newest(
        &self,
        limit: usize,
        keep: &mut dyn FnMut(&BackfillRecord) -> bool,
    ) -> Result<Vec<BackfillRecord>, StoreError>;

    /// Deletes the records of backfills `ids`.
    fn delete_backfills(&self, ids: &[String]) -> Result<(), StoreError>;

    /// Every backfill, oldest first.
    fn backfills(&self) -> Result<Vec<BackfillRecord>, StoreError>;
}

/// Everything Floe's core keeps in a store.
pub trait StoreBackend: ResultStore + JobStore + ScheduleStore {
    /// Makes every write so far durable.
    fn flush(&self) -> Result<(), StoreError>;
}

impl RunStore for Store {
    fn run(&self, key: &RunKey) -> Result<Option<RunRecord>, StoreError> {
        Store::run(self, key)
    }

    fn seen_run(&self, key: &RunKey) -> Result<SeenRun, StoreError> {
        Store::seen_run(self, key)
    }

    fn runs_of_job(
        &self,
        pipeline: &str,
        job: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<RunList, StoreError> {
        Store::runs_of_job(self, pipeline, job, from, to)
    }

    fn runs_of_pipeline(&self, pipeline: &str) -> Result<RunList, StoreError> {
        Store::runs_of_pipeline(self, pipeline)
    }

    fn run_count(&self) -> usize {
        Store::run_count(self)
    }

    fn active_runs(&self) -> Result<RunList, StoreError> {
        Store::active_runs(self)
    }

    fn requeue_interrupted(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        Store::requeue_interrupted(self, now)
    }

    fn recover_runs(&self, now: DateTime<Utc>) -> Result<(usize, RunList), StoreError> {
        Store::recover_runs(self, now)
    }

    fn mark_running_seen(
        &self,
        key: &RunKey,
        seen: Option<SeenRun>,
        partition_end: DateTime<Utc>,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<(RunRecord, SeenRun), StoreError> {
        Store::mark_running_seen(self, key, seen, partition_end, fingerprint, now)
    }

    fn mark_failed_until(
        &self,
        key: &RunKey,
        error: &str,
        now: DateTime<Utc>,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<RunRecord, StoreError> {
        Store::mark_failed_until(self, key, error, now, retry_at)
    }

    fn enqueue_run_seen(
        &self,
        key: &RunKey,
        seen: Option<SeenRun>,
        partition_end: DateTime<Utc>,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<RunRecord>, StoreError> {
        Store::enqueue_run_seen(self, key, seen, partition_end, force, now)
    }

    fn record_unstarted(
        &self,
        key: &RunKey,
        partition_end: DateTime<Utc>,
        state: RunState,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError> {
        Store::record_unstarted(self, key, partition_end, state, error, now)
    }

    fn mark_upstream_failed(
        &self,
        key: &RunKey,
        upstream: &RunKey,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError> {
        Store::mark_upstream_failed(self, key, upstream, now)
    }

    fn mark_fresh(
        &self,
        key: &RunKey,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError> {
        Store::mark_fresh(self, key, fingerprint, now)
    }

    fn mark_unblocked(&self, key: &RunKey) -> Result<RunRecord, StoreError> {
        Store::mark_unblocked(self, key)
    }

    fn mark_cancelled(
        &self,
        key: &RunKey,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError> {
        Store::mark_cancelled(self, key, reason, now)
    }

    fn mark_waiting(
        &self,
        key: &RunKey,
        reason: &str,
        now: DateTime<Utc>,
        recheck_at: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError> {
        Store::mark_waiting(self, key, reason, now, recheck_at)
    }
}

impl ResultStore for Store {
    fn commit_success(
        &self,
        key: &RunKey,
        result: NewResult,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError> {
        Store::commit_success(self, key, result, now)
    }

    fn result(&self, key: &RunKey) -> Result<Option<StoredResult>, StoreError> {
        Store::result(self, key)
    }

    fn result_meta(&self, key: &RunKey) -> Result<Option<ResultMeta>, StoreError> {
        Store::result_meta(self, key)
    }

    fn result_fingerprint_of(
        &self,
        key: &RunKey,
        record: Option<&RunRecord>,
    ) -> Result<Option<String>, StoreError> {
        Store::result_fingerprint_of(self, key, record)
    }
}

impl JobStore for Store {
    fn insert_job(&self, record: &JobRecord, config: &[u8]) -> Result<(), StoreError> {
        Store::insert_job(self, record, config)
    }

    fn update_job(&self, record: &JobRecord, result: Option<&DataFrame>) -> Result<(), StoreError> {
        Store::update_job(self, record, result)
    }

    fn put_job_result(
        &self,
        id: &str,
        result: &DataFrame,
        admit: &mut dyn FnMut(u64) -> bool,
    ) -> Result<Option<u64>, StoreError> {
        Store::put_job_result(self, id, result, admit)
    }

    fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        Store::job(self, id)
    }

    fn job_config(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Store::job_config(self, id)
    }

    fn job_result(&self, id: &str) -> Result<Option<DataFrame>, StoreError> {
        Store::job_result(self, id)
    }

    fn job_result_exists(&self, id: &str) -> Result<bool, StoreError> {
        Store::job_result_exists(self, id)
    }

    fn job_result_bytes(&self, id: &str) -> Result<Option<u64>, StoreError> {
        Store::job_result_bytes(self, id)
    }

    fn jobs_newest(
        &self,
        limit: usize,
        keep: &mut dyn FnMut(&JobRecord) -> bool,
    ) -> Result<Vec<JobRecord>, StoreError> {
        Store::jobs_newest(self, limit, keep)
    }

    fn jobs_oldest_first(&self) -> Box<dyn Iterator<Item = Result<JobRecord, StoreError>> + '_> {
        Box::new(Store::jobs_oldest_first(self))
    }

    fn delete_job(&self, id: &str) -> Result<(), StoreError> {
        Store::delete_job(self, id)
    }
}

impl ScheduleStore for Store {
    fn schedule_cursor(
        &self,
        pipeline: &str,
        job: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        Store::schedule_cursor(self, pipeline, job)
    }

    fn set_schedule_cursor(
        &self,
        pipeline: &str,
        job: &str,
        planned_through: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        Store::set_schedule_cursor(self, pipeline, job, planned_through)
    }

    fn put_backfill(&self, record: &BackfillRecord) -> Result<(), StoreError> {
        Store::put_backfill(self, record)
    }

    fn backfill(&self, id: &str) -> Result<Option<BackfillRecord>, StoreError> {
        Store::backfill(self, id)
    }

    fn backfills_newest(
        &self,
        limit: usize,
        keep: &mut dyn FnMut(&BackfillRecord) -> bool,
    ) -> Result<Vec<BackfillRecord>, StoreError> {
        Store::backfills_newest(self, limit, keep)
    }

    fn delete_backfills(&self, ids: &[String]) -> Result<(), StoreError> {
        Store::delete_backfills(self, ids)
    }

    fn backfills(&self) -> Result<Vec<BackfillRecord>, StoreError> {
        Store::backfills(self)
    }
}

impl StoreBackend for Store {
    fn flush(&self) -> Result<(), StoreError> {
        Store::flush(self)
    }
}
