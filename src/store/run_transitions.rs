//! The writers of the `runs` tree: each store operation that moves a run asks
//! `lifecycle::RunChange::decide` what to do from the record's current state (move it along an
//! allowed transition, leave it as it is, or refuse), then builds the new record and swaps it in
//! with `update_run`. The commit (Running → Succeeded with a result) is in `results`, the
//! requeue of runs a crash left Running in `active_runs`.
//!
//! ```text
//!   (absent) ──mark_running──▶ Running ──commit_success──▶ Succeeded
//!   Pending  ──mark_running──▶ Running ──mark_failed─────▶ Failed
//!   Failed   ──mark_running──▶ Running ──requeue (crash)─▶ Pending
//!   Succeeded ─mark_running──▶ Running      (recompute after a fingerprint change)
//!   Pending  ──mark_failed───▶ Failed       (failed before starting, e.g. upstream)
//!   any but Running ─enqueue─▶ Pending      (the scheduler plans it: due, backfill, restate)
//!   Pending  ──mark_upstream_failed─▶ UpstreamFailed ─enqueue / upstream succeeds─▶ Pending
//!   Pending | Failed awaiting a retry | UpstreamFailed ─mark_cancelled─▶ Cancelled
//!   Pending  ──mark_fresh────▶ Succeeded    (its stored result is fresh)
//! ```
//! Refusals are `InvalidTransition` (or `RunNotFound` when there is no record to move):
//! Running → Running, and finishing a run that is not Running, mean two writers are working on
//! the same run. Operations that only apply to some states (`mark_upstream_failed`,
//! `mark_unblocked`, `mark_cancelled`, `mark_waiting`, `record_unstarted`) leave the others as
//! they are: another writer got there first.

use chrono::{DateTime, Utc};

use super::keys::RunKey;
use super::lifecycle::{RunChange, RunState};
use super::runs::{RunRecord, SeenRun};
use super::{Store, StoreError};

impl Store {
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
            let Some(to) = RunChange::Start.decide(key, old.as_ref())? else {
                return kept(key, old);
            };
            let base = old.unwrap_or_else(|| RunRecord {
                queued_at: None,
                ..RunRecord::new_pending(partition_end, now)
            });
            Ok(RunRecord {
                state: to,
                partition_end,
                attempts: base.attempts.saturating_add(1),
                fingerprint: Some(fingerprint.to_owned()),
                started_at: Some(now),
                finished_at: None,
                error: None,
                retry_at: None,
                // The outcomes are the next commit's (or failure's) to give.
                checks: Vec::new(),
                ..base
            })
        })?;
        tracing::debug!(run = %key, attempts = swapped.new.attempts, "run marked running");
        let seen = swapped.seen();
        Ok((swapped.new, seen))
    }

    /// Keeps the outcomes of the data checks that failed a Running run's attempt, for the
    /// failure that follows to carry (a run in another state is left alone: the attempt is no
    /// longer its current one).
    pub fn record_failed_checks(
        &self,
        key: &RunKey,
        checks: &[super::runs::CheckOutcome],
    ) -> Result<(), StoreError> {
        self.update_run(key, |old| match old {
            Some(old) if old.state == RunState::Running => Ok(RunRecord {
                checks: checks.to_vec(),
                ..old
            }),
            old => kept(key, old),
        })?;
        Ok(())
    }

    /// A failed attempt (`RunStore::mark_failed` is this without a retry): counts the failure
    /// and records when the scheduler retries it (`None`: no retry left). Failed → Failed is a
    /// retry that failed before it could start (e.g. its sources).
    pub fn mark_failed_until(
        &self,
        key: &RunKey,
        error: &str,
        now: DateTime<Utc>,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<RunRecord, StoreError> {
        let record = self.update_run(key, |old| {
            match (RunChange::Fail.decide(key, old.as_ref())?, old) {
                (Some(to), Some(old)) => Ok(RunRecord {
                    state: to,
                    finished_at: Some(now),
                    error: Some(error.to_owned()),
                    retry_at,
                    failures: old.failures.saturating_add(1),
                    waiting_since: None,
                    ..old
                }),
                (_, old) => kept(key, old),
            }
        })?;
        tracing::debug!(run = %key, error, "run marked failed");
        Ok(record)
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
        let outcome = self.update_run_seen(key, seen, |old| {
            match (RunChange::Enqueue.decide(key, old.as_ref())?, old) {
                (Some(to), None) => Ok(RunRecord {
                    state: to,
                    force,
                    ..RunRecord::new_pending(partition_end, now)
                }),
                (Some(to), Some(old)) => Ok(RunRecord {
                    state: to,
                    partition_end,
                    queued_at: Some(now),
                    retry_at: None,
                    failures: 0,
                    waiting_since: None,
                    force: force || old.force,
                    ..old
                }),
                (None, old) => kept(key, old),
            }
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
    /// Any other `state` is an `InvalidTransition`: a run cannot end in it without starting.
    pub fn record_unstarted(
        &self,
        key: &RunKey,
        partition_end: DateTime<Utc>,
        state: RunState,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError> {
        debug_assert!(matches!(state, RunState::Failed | RunState::UpstreamFailed));
        self.update_run(key, |old| {
            match (
                RunChange::RecordUnstarted(state).decide(key, old.as_ref())?,
                old,
            ) {
                (Some(to), None) => Ok(RunRecord {
                    state: to,
                    finished_at: Some(now),
                    error: Some(error.to_owned()),
                    failures: u32::from(to == RunState::Failed),
                    ..RunRecord::new_pending(partition_end, now)
                }),
                (_, old) => kept(key, old),
            }
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
        self.update_run(key, |old| {
            match (RunChange::BlockOnUpstream.decide(key, old.as_ref())?, old) {
                (Some(to), Some(old)) => Ok(RunRecord {
                    state: to,
                    finished_at: Some(now),
                    error: Some(message.clone()),
                    ..old
                }),
                (_, old) => kept(key, old),
            }
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
        self.update_run(key, |old| {
            match (RunChange::FoundFresh.decide(key, old.as_ref())?, old) {
                (Some(to), Some(old)) => Ok(RunRecord {
                    state: to,
                    fingerprint: Some(fingerprint.to_owned()),
                    finished_at: Some(now),
                    error: None,
                    retry_at: None,
                    waiting_since: None,
                    ..old
                }),
                (_, old) => kept(key, old),
            }
        })
    }

    /// UpstreamFailed → Pending once the failed upstream run has been retried and succeeded.
    /// Other states are left as they are.
    pub fn mark_unblocked(&self, key: &RunKey) -> Result<RunRecord, StoreError> {
        self.update_run(key, |old| {
            match (RunChange::Unblock.decide(key, old.as_ref())?, old) {
                (Some(to), Some(old)) => Ok(RunRecord {
                    state: to,
                    finished_at: None,
                    error: None,
                    ..old
                }),
                (_, old) => kept(key, old),
            }
        })
    }

    /// A queued run (Pending, UpstreamFailed, or Failed awaiting a retry) → Cancelled. Other
    /// runs are left as they are.
    pub fn mark_cancelled(
        &self,
        key: &RunKey,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError> {
        self.update_run(key, |old| {
            match (RunChange::Cancel.decide(key, old.as_ref())?, old) {
                (Some(to), Some(old)) => Ok(RunRecord {
                    state: to,
                    finished_at: Some(now),
                    retry_at: None,
                    error: Some(reason.to_owned()),
                    ..old
                }),
                (_, old) => kept(key, old),
            }
        })
    }

    /// A Pending run whose source files are not there yet: records since when it waits and
    /// when the scheduler looks again. Other states are left as they are.
    pub fn mark_waiting(
        &self,
        key: &RunKey,
        reason: &str,
        now: DateTime<Utc>,
        recheck_at: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError> {
        self.update_run(key, |old| {
            match (RunChange::Wait.decide(key, old.as_ref())?, old) {
                (Some(to), Some(old)) => Ok(RunRecord {
                    state: to,
                    waiting_since: old.waiting_since.or(Some(now)),
                    retry_at: Some(recheck_at),
                    error: Some(reason.to_owned()),
                    ..old
                }),
                (_, old) => kept(key, old),
            }
        })
    }
}

/// The record an operation leaves as it is (`RunChange::decide` answered `None`), written back
/// unchanged. `decide` only leaves existing records, so a missing one is the operation's
/// `RunNotFound`.
pub(super) fn kept(key: &RunKey, old: Option<RunRecord>) -> Result<RunRecord, StoreError> {
    old.ok_or_else(|| StoreError::RunNotFound { key: key.clone() })
}

#[cfg(test)]
mod tests {
    use crate::store::{ResultStore, RunStore};
    use chrono::Duration;

    use super::super::runs::testing::{indexed, key, store, t0};
    use super::*;

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
            checks: Vec::new(),
            job_definition: None,
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
            checks: Vec::new(),
            job_definition: None,
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
}
