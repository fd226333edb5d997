//! The `runs` tree: one `RunRecord` per run and the state machine that moves
//! it. Transitions are read-modify-write loops ending in a compare-and-swap of
//! the record's bytes, so two writers racing on one run cannot both win.
//!
//! ```text
//!   (absent) ──mark_running──▶ Running ──commit_success──▶ Succeeded
//!   Pending  ──mark_running──▶ Running ──mark_failed─────▶ Failed
//!   Failed   ──mark_running──▶ Running ──requeue (crash)─▶ Pending
//!   Succeeded ─mark_running──▶ Running      (recompute after a fingerprint change)
//!   Pending  ──mark_failed───▶ Failed       (failed before starting, e.g. upstream)
//!   any but Running ─enqueue─▶ Pending      (the scheduler plans it: due, backfill, restate)
//!   Pending  ──mark_upstream_failed─▶ UpstreamFailed ─enqueue / upstream succeeds─▶ Pending
//!   Pending | Failed | UpstreamFailed ─mark_cancelled─▶ Cancelled
//! ```
//! Everything else is `InvalidTransition` (or `RunNotFound` when there is
//! no record to move): Running → Running, and finishing a run that is not
//! Running, mean two writers are working on the same run.

use std::fmt;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::keys::{self, RunKey, escape};
use super::{Store, StoreError, decode_json, encode_json, tree};

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Planned and waiting: for its upstream runs, a dispatch slot, a retry's backoff or its
    /// source files. Also what `requeue_interrupted` makes of a run a crash left Running.
    Pending,
    /// A worker has started it and not yet finished.
    Running,
    /// Finished; its result is in the result trees.
    Succeeded,
    /// Finished with an error; `RunRecord::error` says which. With `retry_at` set, the
    /// scheduler tries again then.
    Failed,
    /// Not attempted: an upstream run it reads failed. It runs by itself once that upstream
    /// run is retried and succeeds.
    UpstreamFailed,
    /// Taken out of the queue by a cancelled backfill before it ran.
    Cancelled,
}

impl RunState {
    /// The lowercase name, as stored in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::UpstreamFailed => "upstream_failed",
            RunState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stored state of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Current state.
    pub state: RunState,
    /// Exclusive end of the partition; the key holds only the start, and
    /// partitions of one job need not all have the same length.
    pub partition_end: DateTime<Utc>,
    /// How many times the run was started (retries and recomputes
    /// included), so retry limits survive restarts.
    pub attempts: u32,
    /// Fingerprint of the inputs and definition of the latest attempt;
    /// compared with the current one to decide whether a result is stale.
    pub fingerprint: Option<String>,
    /// When the run was last put back in the queue, so the UI can show how
    /// long it has waited.
    pub queued_at: Option<DateTime<Utc>>,
    /// When the latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the latest attempt finished; `None` while one is in flight.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why the latest attempt failed or was interrupted; cleared on start.
    pub error: Option<String>,
    /// When the scheduler tries a Failed run again (backoff), or re-checks a Pending run's
    /// source files; `None` when nothing is planned.
    #[serde(default)]
    pub retry_at: Option<DateTime<Utc>>,
    /// Failed attempts since the run was last enqueued; retries stop at the job's `retries`.
    #[serde(default)]
    pub failures: u32,
    /// When the run started waiting for its source files, for the bounded wait.
    #[serde(default)]
    pub waiting_since: Option<DateTime<Utc>>,
    /// How many results were committed for this run: 1 after its first success, +1 per
    /// recompute (restatement, changed inputs). The crash test checks it.
    #[serde(default)]
    pub commits: u32,
    /// Recompute even when the stored result is fresh (a restatement or forced backfill);
    /// cleared by the next commit.
    #[serde(default)]
    pub force: bool,
    /// The attempt whose result is the run's current one: results are stored under the run's
    /// key plus that attempt, written before the record points to them. `None` on a run with
    /// no result yet, or with a result stored by an older Floe under the bare run key.
    #[serde(default)]
    pub result_attempt: Option<u32>,
    /// While the run is active: the generation of its entry in the `active_runs` index
    /// (entries are keyed by run and generation), so the write that finishes the run removes
    /// exactly that entry and never one a later activation made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_generation: Option<u64>,
}

impl RunRecord {
    /// A record that has never been attempted.
    pub fn new_pending(partition_end: DateTime<Utc>, now: DateTime<Utc>) -> RunRecord {
        RunRecord {
            state: RunState::Pending,
            partition_end,
            attempts: 0,
            fingerprint: None,
            queued_at: Some(now),
            started_at: None,
            finished_at: None,
            error: None,
            retry_at: None,
            failures: 0,
            waiting_since: None,
            commits: 0,
            force: false,
            result_attempt: None,
            index_generation: None,
        }
    }

    /// Whether this Floe committed a result for the run. When not, the run has no result,
    /// unless an older Floe (which counted no commits) stored one under the bare run key.
    pub fn ever_committed(&self) -> bool {
        self.commits > 0 || self.result_attempt.is_some()
    }

    /// Whether the scheduler still has something to do with this run: it is not
    /// Succeeded, not Cancelled, and not a Failed run out of retries.
    pub fn is_active(&self) -> bool {
        match self.state {
            RunState::Pending | RunState::Running | RunState::UpstreamFailed => true,
            RunState::Failed => self.retry_at.is_some(),
            RunState::Succeeded | RunState::Cancelled => false,
        }
    }
}

/// A run's record as a writer last read or wrote it: the bytes its next compare-and-swap
/// expects, and their decoding. A writer that has just seen the record hands it on instead of
/// reading it again (`enqueue_run_seen`, `mark_running_seen`, `NewResult::seen`); a snapshot
/// gone stale only costs a retry, since the swap fails and the record is read afresh.
#[derive(Debug, Clone)]
pub struct SeenRun {
    raw: Option<sled::IVec>,
    record: Option<RunRecord>,
}

impl SeenRun {
    /// The record (`None`: the run had none).
    pub fn record(&self) -> Option<&RunRecord> {
        self.record.as_ref()
    }
}

/// What one `update_run_seen` wrote: the new record and its bytes.
pub(super) struct Swapped {
    pub new: RunRecord,
    pub raw: sled::IVec,
}

impl Swapped {
    /// The record as written, to hand on to the next transition.
    fn seen(&self) -> SeenRun {
        SeenRun {
            raw: Some(self.raw.clone()),
            record: Some(self.new.clone()),
        }
    }
}

/// An entry of the `active_runs` index: the run's key, then the generation of the activation
/// that wrote it.
fn active_index_key(run_key: &[u8], generation: u64) -> Vec<u8> {
    [run_key, &generation.to_be_bytes()].concat()
}

/// The run key and generation of an `active_runs` entry (`None` if it is too short to hold one).
fn split_index_key(index_key: &[u8]) -> (&[u8], Option<u64>) {
    match index_key.len().checked_sub(8) {
        Some(at) => {
            let (run_key, generation) = index_key.split_at(at);
            (run_key, generation.try_into().ok().map(u64::from_be_bytes))
        }
        None => (index_key, None),
    }
}

// `state` is a record's first field, and serde_json writes fields in declaration order, so a
// scan can tell a record's state from its first bytes. A test pins this.
const STATE_FIELD: &[u8] = br#"{"state":""#;
const PENDING_PREFIX: &[u8] = br#"{"state":"pending""#;
const RUNNING_PREFIX: &[u8] = br#"{"state":"running""#;
const FAILED_PREFIX: &[u8] = br#"{"state":"failed""#;
const UPSTREAM_FAILED_PREFIX: &[u8] = br#"{"state":"upstream_failed""#;
/// The states [`RunRecord::is_active`] may hold for.
const ACTIVE_PREFIXES: &[&[u8]] = &[
    PENDING_PREFIX,
    RUNNING_PREFIX,
    FAILED_PREFIX,
    UPSTREAM_FAILED_PREFIX,
];

/// Error text left on a run that `requeue_interrupted` put back in the queue.
const INTERRUPTED: &str = "interrupted: floe stopped while this run was running";

impl Store {
    /// The record of one run, if it exists.
    pub fn run(&self, key: &RunKey) -> Result<Option<RunRecord>, StoreError> {
        Ok(self.seen_run(key)?.record)
    }

    /// The run's record with the bytes it was read from, to hand on to the next transition.
    pub fn seen_run(&self, key: &RunKey) -> Result<SeenRun, StoreError> {
        let raw = self
            .runs
            .get(key.encode()?)
            .map_err(Store::sled_error("read run", key))?;
        let record = raw
            .as_ref()
            .map(|raw| decode_json(tree::RUNS, key, raw))
            .transpose()?;
        Ok(SeenRun { raw, record })
    }

    /// Moves the run to Running (creating it if absent), attempts += 1,
    /// started_at = now, error cleared. A Succeeded run may be re-marked
    /// (recompute); its old result stays readable until the new one commits.
    pub fn mark_running(
        &self,
        key: &RunKey,
        partition_end: DateTime<Utc>,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError> {
        self.mark_running_seen(key, None, partition_end, fingerprint, now)
            .map(|(record, _)| record)
    }

    /// `mark_running` from the record as `seen` (read afresh when `None`); also returns the
    /// Running record as written, for the attempt's commit (`NewResult::seen`).
    pub fn mark_running_seen(
        &self,
        key: &RunKey,
        seen: Option<SeenRun>,
        partition_end: DateTime<Utc>,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<(RunRecord, SeenRun), StoreError> {
        let swapped = self.update_run_seen(key, seen, |old| {
            let base = match old {
                None => RunRecord {
                    queued_at: None,
                    ..RunRecord::new_pending(partition_end, now)
                },
                Some(old) if old.state == RunState::Running => {
                    return Err(StoreError::InvalidTransition {
                        key: key.clone(),
                        from: Some(RunState::Running),
                        to: RunState::Running,
                    });
                }
                Some(old) => old,
            };
            Ok(RunRecord {
                state: RunState::Running,
                partition_end,
                attempts: base.attempts.saturating_add(1),
                fingerprint: Some(fingerprint.to_owned()),
                started_at: Some(now),
                finished_at: None,
                error: None,
                retry_at: None,
                ..base
            })
        })?;
        tracing::debug!(run = %key, attempts = swapped.new.attempts, "run marked running");
        let seen = swapped.seen();
        Ok((swapped.new, seen))
    }

    /// Moves a Running, Pending or Failed run to Failed with `error`.
    pub fn mark_failed(
        &self,
        key: &RunKey,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError> {
        self.mark_failed_until(key, error, now, None)
    }

    /// [`Store::mark_failed`] that also counts the failure and records when the scheduler
    /// retries it (`None`: no retry left).
    pub fn mark_failed_until(
        &self,
        key: &RunKey,
        error: &str,
        now: DateTime<Utc>,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<RunRecord, StoreError> {
        let record = self.update_run(key, |old| {
            let Some(old) = old else {
                return Err(StoreError::RunNotFound { key: key.clone() });
            };
            // Failed → Failed: a retry that failed before it could start (e.g. its sources).
            if !matches!(
                old.state,
                RunState::Running | RunState::Pending | RunState::Failed
            ) {
                return Err(StoreError::InvalidTransition {
                    key: key.clone(),
                    from: Some(old.state),
                    to: RunState::Failed,
                });
            }
            Ok(RunRecord {
                state: RunState::Failed,
                finished_at: Some(now),
                error: Some(error.to_owned()),
                retry_at,
                failures: old.failures.saturating_add(1),
                waiting_since: None,
                ..old
            })
        })?;
        tracing::debug!(run = %key, error, "run marked failed");
        Ok(record)
    }

    /// Runs of one job with partition_start in [from, to), ascending.
    /// Bounds may have sub-millisecond precision (e.g. `Utc::now()`).
    pub fn runs_of_job(
        &self,
        pipeline: &str,
        job: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(RunKey, RunRecord)>, StoreError> {
        let prefix = keys::job_prefix(pipeline, job)?;
        if from >= to {
            return Ok(Vec::new());
        }
        let start = [prefix.as_slice(), &keys::encode_bound(from)].concat();
        let end = [prefix.as_slice(), &keys::encode_bound(to)].concat();
        self.collect_runs(self.runs.range(start..end))
    }

    /// All runs of a pipeline (any job), in key order: by job, then time.
    pub fn runs_of_pipeline(&self, pipeline: &str) -> Result<Vec<(RunKey, RunRecord)>, StoreError> {
        let prefix = keys::pipeline_prefix(pipeline)?;
        self.collect_runs(self.runs.scan_prefix(prefix))
    }

    /// Runs left Running by a crash become Pending again (called at
    /// start-up, before any worker starts); returns how many. A run whose
    /// result was stored but not yet recorded is moved to Succeeded instead.
    pub fn requeue_interrupted(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut running = self.runs_whose_json_starts_with(&[RUNNING_PREFIX])?;
        self.requeue_running(&mut running, now)
    }

    /// Start-up in one scan of the `runs` tree: [`Store::requeue_interrupted`], then every run
    /// the scheduler still has work for ([`Store::active_runs`]). Returns how many runs were
    /// requeued, and the active runs.
    pub fn recover_runs(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(usize, Vec<(RunKey, RunRecord)>), StoreError> {
        let mut runs = self.indexed_active_runs()?;
        let requeued = self.requeue_running(&mut runs, now)?;
        runs.retain(|(_, record)| record.is_active());
        Ok((requeued, runs))
    }

    /// The runs the `active_runs` index names whose records are active, in key order.
    /// Entries whose record is no longer active (a transition that was cut short before it
    /// could drop its entry) are removed on the way.
    fn indexed_active_runs(&self) -> Result<Vec<(RunKey, RunRecord)>, StoreError> {
        let mut active = Vec::new();
        for entry in self.active_runs.iter().keys() {
            let index_key = entry.map_err(|source| StoreError::Sled {
                action: format!("scan active runs in {}", self.describe()),
                source,
            })?;
            let (raw_key, generation) = split_index_key(&index_key);
            let key = RunKey::decode(raw_key).map_err(|e| StoreError::Decode {
                tree: tree::ACTIVE_RUNS,
                key: escape(&index_key),
                source: Box::new(e),
            })?;
            let current = match self.run(&key)? {
                // A record written before it carried its generation (a store migrated from
                // schema 1) matches any entry.
                Some(record)
                    if record.is_active()
                        && record
                            .index_generation
                            .is_none_or(|g| Some(g) == generation) =>
                {
                    Some(record)
                }
                _ => None,
            };
            match current {
                Some(record) => {
                    if active
                        .last()
                        .is_none_or(|(last, _): &(RunKey, RunRecord)| *last != key)
                    {
                        active.push((key, record));
                    }
                }
                // Stale (a transition cut short, or an older activation): its key names this
                // activation alone, so removing it cannot touch a live entry.
                None => {
                    self.active_runs
                        .remove(&index_key)
                        .map_err(Store::sled_error("unindex run", &key))?;
                }
            }
        }
        Ok(active)
    }

    /// Builds the `active_runs` index from the whole `runs` tree (opening a store written
    /// before the index existed); returns how many runs it indexed.
    pub(super) fn rebuild_active_index(&self) -> Result<usize, StoreError> {
        let active = self.runs_whose_json_starts_with(ACTIVE_PREFIXES)?;
        let mut indexed = 0;
        for (key, record) in active {
            if !record.is_active() {
                continue;
            }
            let key_bytes = key.encode()?;
            match record.index_generation {
                // The generation its record names, so the entry matches it.
                Some(generation) => self
                    .active_runs
                    .insert(active_index_key(&key_bytes, generation), &[])
                    .map(drop)
                    .map_err(Store::sled_error("index run", &key))?,
                // Records without one (schema 1) match any entry of theirs.
                None => drop(self.index_active(&key_bytes, &key)?),
            }
            indexed += 1;
        }
        Ok(indexed)
    }

    /// Requeues (or finishes the commit of) the Running runs among `runs`, updating their
    /// records in place; returns how many were requeued.
    fn requeue_running(
        &self,
        runs: &mut [(RunKey, RunRecord)],
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let (mut requeued, mut finished) = (0, 0);
        for (key, record) in runs.iter_mut() {
            if record.state != RunState::Running {
                continue;
            }
            // Stopped after storing its result but before recording the success: finish it.
            if let Some(done) = self.finish_interrupted_commit(key, record)? {
                *record = done;
                finished += 1;
                continue;
            }
            // Re-checked in the compare-and-swap: a worker may have finished the run since
            // the scan, and that outcome must win.
            let outcome = self.update_run(key, |old| match old {
                Some(old) if old.state == RunState::Running => Ok(RunRecord {
                    state: RunState::Pending,
                    queued_at: Some(now),
                    error: Some(INTERRUPTED.to_owned()),
                    ..old
                }),
                Some(old) => Ok(old),
                None => Err(StoreError::RunNotFound { key: key.clone() }),
            });
            match outcome {
                Ok(updated) => {
                    if updated.state == RunState::Pending {
                        requeued += 1;
                    }
                    *record = updated;
                }
                // Deleted since the scan: nothing to requeue.
                Err(StoreError::RunNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if requeued > 0 {
            tracing::warn!(
                count = requeued,
                "requeued runs interrupted by a previous stop"
            );
        }
        if finished > 0 {
            tracing::info!(
                count = finished,
                "finished commits interrupted by a previous stop"
            );
        }
        Ok(requeued)
    }

    /// Puts a run (back) in the queue as Pending: creates it, or moves it from any state but
    /// Running, clearing its retry budget and wait. A Succeeded run keeps its result readable
    /// until a new one commits (restatement). Returns `None` when the run is Running: someone
    /// is computing it already, and that outcome stands.
    pub fn enqueue_run(
        &self,
        key: &RunKey,
        partition_end: DateTime<Utc>,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<RunRecord>, StoreError> {
        self.enqueue_run_seen(key, None, partition_end, force, now)
    }

    /// `enqueue_run` from the record as `seen` (read afresh when `None`).
    pub fn enqueue_run_seen(
        &self,
        key: &RunKey,
        seen: Option<SeenRun>,
        partition_end: DateTime<Utc>,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<RunRecord>, StoreError> {
        let outcome = self.update_run_seen(key, seen, |old| match old {
            None => Ok(RunRecord {
                force,
                ..RunRecord::new_pending(partition_end, now)
            }),
            Some(old) if old.state == RunState::Running => Err(StoreError::InvalidTransition {
                key: key.clone(),
                from: Some(RunState::Running),
                to: RunState::Pending,
            }),
            Some(old) => Ok(RunRecord {
                state: RunState::Pending,
                partition_end,
                queued_at: Some(now),
                retry_at: None,
                failures: 0,
                waiting_since: None,
                force: force || old.force,
                ..old
            }),
        });
        match outcome {
            Ok(swapped) => Ok(Some(swapped.new)),
            Err(StoreError::InvalidTransition {
                from: Some(RunState::Running),
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Records a run that ended without starting here (`Failed`: its sources could not be
    /// read; `UpstreamFailed`: an upstream run failed) when the store has no record of it
    /// yet, so `floe run` leaves every outcome in the store as the scheduler does. An existing
    /// record is left as it is: another executor may own it. Returns the record as stored.
    pub fn record_unstarted(
        &self,
        key: &RunKey,
        partition_end: DateTime<Utc>,
        state: RunState,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError> {
        debug_assert!(matches!(state, RunState::Failed | RunState::UpstreamFailed));
        self.update_run(key, |old| match old {
            Some(old) => Ok(old),
            None => Ok(RunRecord {
                state,
                finished_at: Some(now),
                error: Some(error.to_owned()),
                failures: u32::from(state == RunState::Failed),
                ..RunRecord::new_pending(partition_end, now)
            }),
        })
    }

    /// Pending → UpstreamFailed, naming the upstream run that failed. Other states are left
    /// as they are (the run may have been cancelled or started meanwhile).
    pub fn mark_upstream_failed(
        &self,
        key: &RunKey,
        upstream: &RunKey,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError> {
        let message = format!("upstream run {upstream} failed");
        self.update_run(key, |old| match old {
            Some(old) if old.state == RunState::Pending => Ok(RunRecord {
                state: RunState::UpstreamFailed,
                finished_at: Some(now),
                error: Some(message.clone()),
                ..old
            }),
            Some(old) => Ok(old),
            None => Err(StoreError::RunNotFound { key: key.clone() }),
        })
    }

    /// Pending → Succeeded without a new result: its stored result was found fresh. A run
    /// already Succeeded stays as it is. The record takes the stored result's `fingerprint`,
    /// so a Succeeded record always names the fingerprint of the result it points to
    /// (`Store::result_fingerprint` relies on it).
    pub fn mark_fresh(
        &self,
        key: &RunKey,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError> {
        self.update_run(key, |old| match old {
            Some(old) if old.state == RunState::Pending => Ok(RunRecord {
                state: RunState::Succeeded,
                fingerprint: Some(fingerprint.to_owned()),
                finished_at: Some(now),
                error: None,
                retry_at: None,
                waiting_since: None,
                ..old
            }),
            // Another writer committed it meanwhile: it is fresh already.
            Some(old) if old.state == RunState::Succeeded => Ok(old),
            Some(old) => Err(StoreError::InvalidTransition {
                key: key.clone(),
                from: Some(old.state),
                to: RunState::Succeeded,
            }),
            None => Err(StoreError::RunNotFound { key: key.clone() }),
        })
    }

    /// UpstreamFailed → Pending once the failed upstream run has been retried and succeeded.
    pub fn mark_unblocked(&self, key: &RunKey) -> Result<RunRecord, StoreError> {
        self.update_run(key, |old| match old {
            Some(old) if old.state == RunState::UpstreamFailed => Ok(RunRecord {
                state: RunState::Pending,
                finished_at: None,
                error: None,
                ..old
            }),
            Some(old) => Ok(old),
            None => Err(StoreError::RunNotFound { key: key.clone() }),
        })
    }

    /// A queued run (Pending, UpstreamFailed, or Failed awaiting a retry) → Cancelled.
    pub fn mark_cancelled(
        &self,
        key: &RunKey,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError> {
        self.update_run(key, |old| match old {
            Some(old) if old.is_active() && old.state != RunState::Running => Ok(RunRecord {
                state: RunState::Cancelled,
                finished_at: Some(now),
                retry_at: None,
                error: Some(reason.to_owned()),
                ..old
            }),
            Some(old) => Ok(old),
            None => Err(StoreError::RunNotFound { key: key.clone() }),
        })
    }

    /// A Pending run whose source files are not there yet: records since when it waits and
    /// when the scheduler looks again.
    pub fn mark_waiting(
        &self,
        key: &RunKey,
        reason: &str,
        now: DateTime<Utc>,
        recheck_at: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError> {
        self.update_run(key, |old| match old {
            Some(old) if old.state == RunState::Pending => Ok(RunRecord {
                waiting_since: old.waiting_since.or(Some(now)),
                retry_at: Some(recheck_at),
                error: Some(reason.to_owned()),
                ..old
            }),
            Some(old) => Ok(old),
            None => Err(StoreError::RunNotFound { key: key.clone() }),
        })
    }

    /// Every run the scheduler still has work for ([`RunRecord::is_active`]), in key order,
    /// read through the `active_runs` index: a restart reads the few runs in flight, not the
    /// hundreds of thousands of finished ones.
    pub fn active_runs(&self) -> Result<Vec<(RunKey, RunRecord)>, StoreError> {
        self.indexed_active_runs()
    }

    /// The runs whose stored JSON starts with one of `prefixes`, decoded; the others are
    /// skipped without decoding. Records that are not JSON objects opening with `state`
    /// (corrupt ones) are decoded too, so they surface as errors instead of vanishing.
    fn runs_whose_json_starts_with(
        &self,
        prefixes: &[&[u8]],
    ) -> Result<Vec<(RunKey, RunRecord)>, StoreError> {
        let candidates = self.runs.iter().filter(|entry| {
            entry.as_ref().map_or(true, |(_, raw)| {
                !raw.starts_with(STATE_FIELD) || prefixes.iter().any(|p| raw.starts_with(p))
            })
        });
        self.collect_runs(candidates)
    }

    /// How many runs the store holds, of any state.
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// Atomically replaces a run's record with `f(old)`: a compare-and-swap loop, so `f` may
    /// run more than once when another writer changed the record meanwhile (hence `Fn`).
    ///
    /// Why not a sled transaction: each one takes sled's global write lock and rolls its IO
    /// buffer to disk, which made every state change a disk write of its own. A CAS on one
    /// key is just as atomic for one record; multi-tree commits (`commit_success`) still use
    /// a transaction, and sled orders those against CAS writes with the same lock.
    pub(super) fn update_run<F>(&self, key: &RunKey, f: F) -> Result<RunRecord, StoreError>
    where
        F: Fn(Option<RunRecord>) -> Result<RunRecord, StoreError>,
    {
        self.update_run_seen(key, None, f)
            .map(|swapped| swapped.new)
    }

    /// `update_run` starting from the record as `seen` instead of reading it (a stale
    /// snapshot fails the swap, and the loop reads the record afresh).
    pub(super) fn update_run_seen<F>(
        &self,
        key: &RunKey,
        seen: Option<SeenRun>,
        f: F,
    ) -> Result<Swapped, StoreError>
    where
        F: Fn(Option<RunRecord>) -> Result<RunRecord, StoreError>,
    {
        let key_bytes = key.encode()?;
        let mut seen = seen;
        loop {
            let SeenRun {
                raw: old_raw,
                record: old,
            } = match seen.take() {
                Some(seen) => seen,
                None => self.seen_run(key)?,
            };
            let was_active = old.as_ref().is_some_and(RunRecord::is_active);
            let old_generation = old.as_ref().and_then(|record| record.index_generation);
            let mut new = f(old)?;
            let is_active = new.is_active();
            // The index entry goes in before the record turns active and out after it stops
            // being active: sled keeps the order of writes across a crash, so an active
            // record always has its entry, and a stale entry is only extra reading.
            if is_active && !was_active {
                new.index_generation = Some(self.index_active(&key_bytes, key)?);
            } else if !is_active {
                new.index_generation = None;
            }
            let value = sled::IVec::from(encode_json(tree::RUNS, key, &new)?);
            let swapped = self
                .runs
                .compare_and_swap(&key_bytes, old_raw.as_ref(), Some(value.clone()))
                .map_err(Store::sled_error("update run", key))?;
            if swapped.is_ok() {
                // Entries are keyed by generation, so this removes this activation's entry
                // and never one a writer that has activated the run since made.
                if was_active
                    && !is_active
                    && let Some(generation) = old_generation
                {
                    self.unindex(&key_bytes, generation, key)?;
                }
                return Ok(Swapped { new, raw: value });
            }
        }
    }

    /// Adds an entry for the run (its key's bytes) to the `active_runs` index under a fresh
    /// generation, which it returns.
    fn index_active(&self, key_bytes: &[u8], key: &RunKey) -> Result<u64, StoreError> {
        let generation = self.index_generation.fetch_add(1, Ordering::Relaxed);
        self.active_runs
            .insert(active_index_key(key_bytes, generation), &[])
            .map_err(Store::sled_error("index run", key))?;
        Ok(generation)
    }

    /// Removes the run's index entry of `generation`.
    fn unindex(&self, key_bytes: &[u8], generation: u64, key: &RunKey) -> Result<(), StoreError> {
        self.active_runs
            .remove(active_index_key(key_bytes, generation))
            .map(drop)
            .map_err(Store::sled_error("unindex run", key))
    }

    /// Decodes a scan of the `runs` tree, reporting the first bad entry.
    fn collect_runs(
        &self,
        iter: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    ) -> Result<Vec<(RunKey, RunRecord)>, StoreError> {
        iter.map(|entry| {
            let (raw_key, raw_value) = entry.map_err(|source| StoreError::Sled {
                action: format!("scan runs in {}", self.describe()),
                source,
            })?;
            let key = RunKey::decode(&raw_key).map_err(|e| StoreError::Decode {
                tree: tree::RUNS,
                key: escape(&raw_key),
                source: Box::new(e),
            })?;
            let record = decode_json(tree::RUNS, &key, &raw_value)?;
            Ok((key, record))
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
    }

    fn key(job: &str, start: DateTime<Utc>) -> RunKey {
        RunKey::new("shop", job, start)
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        (dir, store)
    }

    #[test]
    fn mark_running_creates_then_counts_attempts() {
        let (_dir, store) = store();
        let k = key("orders", t0());
        let end = t0() + Duration::hours(1);
        assert_eq!(store.run(&k).unwrap(), None);

        let r = store.mark_running(&k, end, "fp1", t0()).unwrap();
        assert_eq!(r.state, RunState::Running);
        assert_eq!(r.attempts, 1);
        assert_eq!(r.fingerprint.as_deref(), Some("fp1"));
        assert_eq!(r.started_at, Some(t0()));
        assert_eq!(r.partition_end, end);
        assert_eq!(store.run(&k).unwrap(), Some(r));

        let failed = store
            .mark_failed(&k, "boom", t0() + Duration::minutes(1))
            .unwrap();
        assert_eq!(failed.state, RunState::Failed);
        assert_eq!(failed.error.as_deref(), Some("boom"));
        assert_eq!(failed.finished_at, Some(t0() + Duration::minutes(1)));

        let retry = store
            .mark_running(&k, end, "fp1", t0() + Duration::minutes(2))
            .unwrap();
        assert_eq!(retry.attempts, 2);
        assert_eq!(retry.error, None);
        assert_eq!(retry.finished_at, None);
        assert_eq!(retry.started_at, Some(t0() + Duration::minutes(2)));
    }

    #[test]
    fn invalid_transitions_are_refused_and_change_nothing() {
        let (_dir, store) = store();
        let k = key("orders", t0());
        let end = t0() + Duration::hours(1);

        let err = store.mark_failed(&k, "x", t0()).unwrap_err();
        assert!(matches!(err, StoreError::RunNotFound { .. }), "{err}");
        assert_eq!(store.run(&k).unwrap(), None);

        let running = store.mark_running(&k, end, "fp", t0()).unwrap();
        let err = store.mark_running(&k, end, "fp", t0()).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::InvalidTransition {
                    from: Some(RunState::Running),
                    to: RunState::Running,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "run shop/orders@2024-01-01T00:00:00Z cannot go from running to running"
        );
        assert_eq!(store.run(&k).unwrap(), Some(running));

        let failed = store.mark_failed(&k, "x", t0()).unwrap();
        // A retry that fails before it can start fails again from Failed, counted.
        let again = store.mark_failed(&k, "y", t0()).unwrap();
        assert_eq!(
            (again.failures, again.error.as_deref()),
            (failed.failures + 1, Some("y"))
        );
    }

    #[test]
    fn bad_names_are_key_errors() {
        let (_dir, store) = store();
        let err = store.run(&RunKey::new("a\0b", "j", t0())).unwrap_err();
        assert!(matches!(
            err,
            StoreError::Key(keys::KeyError::NulInName { .. })
        ));
        let err = store.runs_of_pipeline("").unwrap_err();
        assert!(matches!(
            err,
            StoreError::Key(keys::KeyError::EmptyName { .. })
        ));
    }

    #[test]
    fn runs_of_job_is_a_half_open_range_in_time_order() {
        let (_dir, store) = store();
        let epoch = DateTime::<Utc>::UNIX_EPOCH;
        let ms = Duration::milliseconds;
        let starts = [
            ms(-7_200_000),
            ms(-1),
            ms(0),
            ms(1),
            ms(7_200_000),
            ms(-3_600_000),
        ];
        // Same prefix traps: another job whose name extends this one, and
        // another pipeline whose name extends this pipeline.
        let noise = [
            RunKey::new("shop", "orders2", epoch),
            RunKey::new("shop", "order", epoch),
            RunKey::new("shop2", "orders", epoch),
        ];
        for d in starts {
            store
                .mark_running(&key("orders", epoch + d), epoch + d + ms(1), "fp", t0())
                .unwrap();
        }
        for k in &noise {
            store.mark_running(k, epoch + ms(1), "fp", t0()).unwrap();
        }

        let got = |from: Duration, to: Duration| -> Vec<i64> {
            store
                .runs_of_job("shop", "orders", epoch + from, epoch + to)
                .unwrap()
                .into_iter()
                .map(|(k, _)| {
                    assert_eq!((k.pipeline.as_str(), k.job.as_str()), ("shop", "orders"));
                    k.partition_start.timestamp_millis()
                })
                .collect()
        };
        assert_eq!(
            got(ms(-10_000_000), ms(10_000_000)),
            vec![-7_200_000, -3_600_000, -1, 0, 1, 7_200_000]
        );
        // from inclusive, to exclusive.
        assert_eq!(got(ms(-1), ms(1)), vec![-1, 0]);
        assert_eq!(got(ms(-3_600_000), ms(0)), vec![-3_600_000, -1]);
        // Sub-millisecond bounds round up to the next whole millisecond.
        let ns = Duration::nanoseconds;
        assert_eq!(got(ms(-2) + ns(1), ms(1) + ns(1)), vec![-1, 0, 1]);
        assert_eq!(got(ms(0), ms(0)), Vec::<i64>::new());
        assert_eq!(got(ms(5), ms(-5)), Vec::<i64>::new());

        let pipeline: Vec<RunKey> = store
            .runs_of_pipeline("shop")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let mut expected: Vec<RunKey> = starts.iter().map(|d| key("orders", epoch + *d)).collect();
        expected.push(noise[0].clone());
        expected.push(noise[1].clone());
        expected.sort();
        assert_eq!(pipeline, expected);
    }

    #[test]
    fn a_records_state_is_readable_from_its_first_bytes() {
        let (_dir, store) = store();
        let states = [
            (RunState::Pending, Some(PENDING_PREFIX)),
            (RunState::Running, Some(RUNNING_PREFIX)),
            (RunState::Failed, Some(FAILED_PREFIX)),
            (RunState::UpstreamFailed, Some(UPSTREAM_FAILED_PREFIX)),
            (RunState::Succeeded, None),
            (RunState::Cancelled, None),
        ];
        for (state, prefix) in states {
            let record = RunRecord {
                state,
                ..RunRecord::new_pending(t0(), t0())
            };
            let json = serde_json::to_vec(&record).unwrap();
            assert!(json.starts_with(STATE_FIELD), "{state}");
            if let Some(prefix) = prefix {
                assert!(json.starts_with(prefix), "{state}");
            }
            let others = [
                PENDING_PREFIX,
                RUNNING_PREFIX,
                FAILED_PREFIX,
                UPSTREAM_FAILED_PREFIX,
            ];
            let matching = others.iter().filter(|p| json.starts_with(p)).count();
            assert_eq!(matching, usize::from(prefix.is_some()), "{state}");
        }
        // The scan sees the active states and skips the finished ones.
        for (i, state) in [RunState::Pending, RunState::Succeeded, RunState::Cancelled]
            .into_iter()
            .enumerate()
        {
            let k = key("j", t0() + Duration::hours(i as i64));
            store.enqueue_run(&k, t0(), false, t0()).unwrap();
            if state == RunState::Succeeded {
                store.mark_fresh(&k, "f", t0()).unwrap();
            } else if state == RunState::Cancelled {
                store.mark_cancelled(&k, "stop", t0()).unwrap();
            }
        }
        let active = store.active_runs().unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].1.state, RunState::Pending);
    }

    #[test]
    fn a_stale_snapshot_only_costs_a_retry() {
        let (_dir, store) = store();
        let k = key("j", t0());
        let end = t0() + Duration::hours(1);
        store.enqueue_run(&k, end, false, t0()).unwrap();

        // Another writer starts the run after this one read it: enqueueing from the stale
        // snapshot sees the Running record and leaves it alone.
        let stale = store.seen_run(&k).unwrap();
        assert_eq!(stale.record().unwrap().state, RunState::Pending);
        store.mark_running(&k, end, "fp", t0()).unwrap();
        assert!(
            store
                .enqueue_run_seen(&k, Some(stale.clone()), end, false, t0())
                .unwrap()
                .is_none()
        );
        assert_eq!(store.run(&k).unwrap().unwrap().state, RunState::Running);

        // An attempt whose snapshot went stale (timed out, failed, retried as attempt 2)
        // cannot commit over its successor, and leaves no result behind.
        store.mark_failed(&k, "timed out", t0()).unwrap();
        let (second, seen) = store
            .mark_running_seen(&k, Some(stale), end, "fp", t0())
            .unwrap();
        assert_eq!(second.attempts, 2, "the stale snapshot was re-read");
        let late = super::super::NewResult {
            definition: None,
            fingerprint: "fp".to_owned(),
            rows: 1,
            frame_ipc: b"LATE".to_vec(),
            state_ipc: None,
            attempt: Some(1),
            seen: Some(seen.clone()),
        };
        assert!(matches!(
            store.commit_success(&k, late, t0()),
            Err(StoreError::StaleAttempt { .. })
        ));
        assert_eq!(store.result_meta(&k).unwrap(), None);

        // The current attempt commits from its own snapshot.
        let on_time = super::super::NewResult {
            definition: None,
            fingerprint: "fp".to_owned(),
            rows: 1,
            frame_ipc: b"ON TIME".to_vec(),
            state_ipc: None,
            attempt: Some(2),
            seen: Some(seen),
        };
        let done = store.commit_success(&k, on_time, t0()).unwrap();
        assert_eq!(
            (done.state, done.result_attempt),
            (RunState::Succeeded, Some(2))
        );
        assert_eq!(store.result_frame(&k).unwrap().unwrap(), b"ON TIME");
        assert!(indexed(&store).is_empty(), "finished: no index entry");
    }

    #[test]
    fn recover_runs_requeues_and_lists_the_active_runs_in_one_scan() {
        let (_dir, store) = store();
        let end = t0() + Duration::hours(1);
        for job in ["a", "b", "c"] {
            store
                .mark_running(&key(job, t0()), end, "fp", t0())
                .unwrap();
        }
        store
            .mark_failed(&key("c", t0()), "for good", t0())
            .unwrap();
        store
            .enqueue_run(&key("d", t0()), end, false, t0())
            .unwrap();
        let later = t0() + Duration::hours(2);
        let (requeued, active) = store.recover_runs(later).unwrap();
        assert_eq!(requeued, 2);
        let listed: Vec<(&str, RunState)> = active
            .iter()
            .map(|(k, r)| (k.job.as_str(), r.state))
            .collect();
        assert_eq!(
            listed,
            [
                ("a", RunState::Pending),
                ("b", RunState::Pending),
                ("d", RunState::Pending)
            ]
        );
        assert_eq!(
            active[0].1.queued_at,
            Some(later),
            "the list holds the updated records"
        );
    }

    fn indexed(store: &Store) -> Vec<String> {
        store
            .active_runs
            .iter()
            .keys()
            .map(|k| RunKey::decode(split_index_key(&k.unwrap()).0).unwrap().job)
            .collect()
    }

    #[test]
    fn the_active_index_follows_every_transition() {
        let (_dir, store) = store();
        let end = t0() + Duration::hours(1);
        store
            .enqueue_run(&key("queued", t0()), end, false, t0())
            .unwrap();
        store
            .mark_running(&key("done", t0()), end, "fp", t0())
            .unwrap();
        store
            .mark_running(&key("retrying", t0()), end, "fp", t0())
            .unwrap();
        store
            .mark_running(&key("failed", t0()), end, "fp", t0())
            .unwrap();
        store
            .enqueue_run(&key("cancelled", t0()), end, false, t0())
            .unwrap();
        assert_eq!(
            indexed(&store),
            ["cancelled", "done", "failed", "queued", "retrying"]
        );
        store
            .commit_success(
                &key("done", t0()),
                super::super::NewResult {
                    definition: None,
                    fingerprint: "fp".to_owned(),
                    rows: 1,
                    frame_ipc: b"frame".to_vec(),
                    state_ipc: None,
                    attempt: Some(1),
                    seen: None,
                },
                t0(),
            )
            .unwrap();
        store
            .mark_failed_until(&key("retrying", t0()), "later", t0(), Some(end))
            .unwrap();
        store
            .mark_failed(&key("failed", t0()), "for good", t0())
            .unwrap();
        store
            .mark_cancelled(&key("cancelled", t0()), "backfill cancelled", t0())
            .unwrap();
        // Pending and Failed-with-a-retry stay; done, failed for good and cancelled leave.
        assert_eq!(indexed(&store), ["queued", "retrying"]);
        let active: Vec<String> = store
            .active_runs()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k.job)
            .collect();
        assert_eq!(active, ["queued", "retrying"]);
    }

    #[test]
    fn stale_index_entries_are_dropped_and_removals_touch_only_their_own() {
        let (_dir, store) = store();
        let end = t0() + Duration::hours(1);
        let run = key("a", t0());
        store.mark_running(&run, end, "fp", t0()).unwrap();
        store.mark_failed(&run, "for good", t0()).unwrap();
        assert!(indexed(&store).is_empty());
        // A crash between indexing and the record's swap leaves an entry for an inactive run.
        store.index_active(&run.encode().unwrap(), &run).unwrap();
        assert!(store.active_runs().unwrap().is_empty());
        assert!(indexed(&store).is_empty(), "the stale entry is dropped");

        // Finishing an activation removes its own entry, not one a later activation made.
        store.enqueue_run(&run, end, false, t0()).unwrap();
        let earlier = store.run(&run).unwrap().unwrap().index_generation.unwrap();
        let later = store.index_active(&run.encode().unwrap(), &run).unwrap();
        assert_ne!(earlier, later);
        store
            .unindex(&run.encode().unwrap(), earlier, &run)
            .unwrap();
        let left: Vec<Option<u64>> = store
            .active_runs
            .iter()
            .keys()
            .map(|k| split_index_key(&k.unwrap()).1)
            .collect();
        assert_eq!(left, [Some(later)]);
        assert_eq!(indexed(&store), ["a"]);
    }

    #[test]
    fn opening_a_schema_1_store_indexes_its_active_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let end = t0() + Duration::hours(1);
        {
            let store = Store::open(&path).unwrap();
            store
                .enqueue_run(&key("pending", t0()), end, false, t0())
                .unwrap();
            store
                .mark_running(&key("running", t0()), end, "fp", t0())
                .unwrap();
            store
                .mark_running(&key("failed", t0()), end, "fp", t0())
                .unwrap();
            store
                .mark_failed(&key("failed", t0()), "for good", t0())
                .unwrap();
            // What a store written by schema 1 looks like: no index.
            store.active_runs.clear().unwrap();
            store.pretend_schema(&path, 1);
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(indexed(&store), ["pending", "running"]);
        let (requeued, active) = store.recover_runs(t0()).unwrap();
        assert_eq!(requeued, 1);
        assert_eq!(active.len(), 2);
        assert_eq!(store.recorded_schema(), super::super::SCHEMA_VERSION);
    }

    #[test]
    fn requeue_interrupted_only_touches_running_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let end = t0() + Duration::hours(1);
        let later = t0() + Duration::hours(5);
        {
            let store = Store::open(&path).unwrap();
            store
                .mark_running(&key("a", t0()), end, "fp", t0())
                .unwrap();
            store
                .mark_running(&key("b", t0()), end, "fp", t0())
                .unwrap();
            store
                .mark_running(&key("c", t0()), end, "fp", t0())
                .unwrap();
            store.mark_failed(&key("c", t0()), "bad", t0()).unwrap();
            store.flush().unwrap();
        }
        // As after a crash: reopen, then requeue.
        let store = Store::open(&path).unwrap();
        let failed_before = store.run(&key("c", t0())).unwrap();
        assert_eq!(store.requeue_interrupted(later).unwrap(), 2);
        for job in ["a", "b"] {
            let r = store.run(&key(job, t0())).unwrap().unwrap();
            assert_eq!(r.state, RunState::Pending);
            assert_eq!(r.queued_at, Some(later));
            assert_eq!(r.attempts, 1);
            assert_eq!(r.error.as_deref(), Some(INTERRUPTED));
        }
        assert_eq!(store.run(&key("c", t0())).unwrap(), failed_before);
        assert_eq!(store.requeue_interrupted(later).unwrap(), 0);

        // A requeued run can start again.
        let r = store
            .mark_running(&key("a", t0()), end, "fp", later)
            .unwrap();
        assert_eq!((r.state, r.attempts, r.error), (RunState::Running, 2, None));
        // Pending may also fail without starting (e.g. its upstream failed).
        let r = store
            .mark_failed(&key("b", t0()), "upstream failed", later)
            .unwrap();
        assert_eq!(r.state, RunState::Failed);
    }

    #[test]
    fn undecodable_records_are_errors_not_panics() {
        let (_dir, store) = store();
        let k = key("orders", t0());
        store
            .runs
            .insert(k.encode().unwrap(), b"{not json".as_slice())
            .unwrap();
        let err = store.run(&k).unwrap_err();
        assert!(
            matches!(&err, StoreError::Decode { tree: "runs", key, .. } if key == "shop/orders@2024-01-01T00:00:00Z"),
            "{err}"
        );
        assert!(matches!(
            store.runs_of_pipeline("shop"),
            Err(StoreError::Decode { .. })
        ));
        assert!(matches!(
            store.requeue_interrupted(t0()),
            Err(StoreError::Decode { .. })
        ));
        assert!(matches!(
            store.mark_running(&k, t0(), "fp", t0()),
            Err(StoreError::Decode { .. })
        ));
        // A key that is not a RunKey encoding.
        store.runs.clear().unwrap();
        store.runs.insert(b"shop\0junk", b"{}".as_slice()).unwrap();
        let err = store.runs_of_pipeline("shop").unwrap_err();
        assert!(
            matches!(&err, StoreError::Decode { tree: "runs", key, .. } if key == "shop\\x00junk"),
            "{err}"
        );
    }
}
