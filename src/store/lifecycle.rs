//! The state machines of the store's records, in one place: a run's [`RunState`] and a job's
//! [`JobStatus`], the transitions allowed between their states, and, for runs, what each
//! store operation does from each state ([`RunChange`]). Every write of a run record or a job
//! record goes through these tables; an illegal transition is a typed error
//! ([`StoreError::InvalidTransition`], [`StoreError::InvalidJobTransition`]) and the stored
//! record is left as it was.
//!
//! Runs (`✓`: allowed; the first column is a run the store has no record of yet):
//!
//! ```text
//!   from \ to        pending running succeeded failed upstream_failed cancelled
//!   (absent)            ✓       ✓                  ✓          ✓
//!   pending             ✓       ✓        ✓         ✓          ✓             ✓
//!   running             ✓                ✓         ✓
//!   succeeded           ✓       ✓
//!   failed              ✓       ✓                  ✓                        ✓
//!   upstream_failed     ✓       ✓                                           ✓
//!   cancelled           ✓       ✓
//! ```
//!
//! Running → Running is refused: it means two workers are on one run. Running → Pending is
//! only the requeue of a run a crash interrupted, never a plan (`enqueue_run` leaves a Running
//! run alone), and Running → Succeeded only a commit. Pending → Pending and Failed → Failed
//! rewrite a record in its state: a run planned again or waiting for files, a retry that
//! failed before it could start.
//!
//! Jobs:
//!
//! ```text
//!   from \ to   STARTED RUNNING FINISHED ERROR KILLED
//!   (absent)       ✓       ✓
//!   STARTED        ✓       ✓       ✓       ✓     ✓
//!   RUNNING                ✓       ✓       ✓     ✓
//!   FINISHED                       ✓       ✓
//!   ERROR                                  ✓
//!   KILLED                                       ✓
//! ```
//!
//! A job's record may be rewritten in its status to amend its facts (a resumed job stays
//! RUNNING; start-up records a FINISHED job's measured result size). FINISHED → ERROR is the
//! one way out of a final status: start-up found the stored result of a FINISHED job lost.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::keys::RunKey;
use super::runs::RunRecord;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// A status that moves along a table of allowed transitions: a run's or a job's.
pub trait Lifecycle: Copy + Sized {
    /// Whether a record in this status may be rewritten in status `to`.
    fn can_become(self, to: Self) -> bool;

    /// Whether a record that does not exist yet may be written in status `to`.
    fn can_be_created_as(to: Self) -> bool;

    /// [`Lifecycle::can_become`] for a record that may not exist yet (`from`: `None`).
    fn transition_allowed(from: Option<Self>, to: Self) -> bool {
        from.map_or_else(|| Self::can_be_created_as(to), |from| from.can_become(to))
    }
}

impl RunState {
    /// Every state, in declaration order.
    pub const ALL: [RunState; 6] = [
        RunState::Pending,
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::UpstreamFailed,
        RunState::Cancelled,
    ];

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

    /// `Ok` if the run `key` may go from `from` to `to`, else the typed refusal.
    pub(super) fn check_transition(
        key: &RunKey,
        from: Option<RunState>,
        to: RunState,
    ) -> Result<(), StoreError> {
        if RunState::transition_allowed(from, to) {
            Ok(())
        } else {
            Err(StoreError::InvalidTransition {
                key: key.clone(),
                from,
                to,
            })
        }
    }
}

impl Lifecycle for RunState {
    /// The run table in this module's documentation.
    fn can_become(self, to: RunState) -> bool {
        use RunState::{Cancelled, Failed, Pending, Running, Succeeded, UpstreamFailed};
        match self {
            Pending => true,
            Running => matches!(to, Pending | Succeeded | Failed),
            Succeeded | Cancelled => matches!(to, Pending | Running),
            Failed => matches!(to, Pending | Running | Failed | Cancelled),
            UpstreamFailed => matches!(to, Pending | Running | Cancelled),
        }
    }

    /// Planned, started, or recorded as having ended without starting.
    fn can_be_created_as(to: RunState) -> bool {
        matches!(
            to,
            RunState::Pending | RunState::Running | RunState::Failed | RunState::UpstreamFailed
        )
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A store operation on a run's record, named after the method that performs it. Its
/// [`RunChange::decide`] is the single answer to "what does this operation do to a run in
/// this state": move it (along an allowed transition), leave it as it is, or refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RunChange {
    /// `mark_running`: a worker starts an attempt (creating the run if needed).
    Start,
    /// `mark_failed`: an attempt, or a run that could not start, failed.
    Fail,
    /// `enqueue_run`: the scheduler plans the run (due, backfill, restatement).
    Enqueue,
    /// Start-up recovery: a crash left the run Running.
    RequeueInterrupted,
    /// `record_unstarted`: an executor records a run that ended without starting, in this
    /// state (Failed or UpstreamFailed), unless the store already has a record of it.
    RecordUnstarted(RunState),
    /// `mark_upstream_failed`: an upstream run the queued run reads failed.
    BlockOnUpstream,
    /// `mark_fresh`: the queued run's stored result was found fresh.
    FoundFresh,
    /// `mark_unblocked`: the failed upstream run was retried and succeeded.
    Unblock,
    /// `mark_cancelled`: a cancelled backfill takes the run out of the queue.
    Cancel,
    /// `mark_waiting`: the queued run's source files are not there yet.
    Wait,
    /// `commit_success`, and start-up finishing a commit a crash cut short.
    Commit,
}

impl RunChange {
    /// What this operation does to the run `key` whose record is `old`: `Some(state)` moves
    /// it to that state, `None` leaves the record as it is. Refusals are errors:
    /// `RunNotFound` for an operation that needs a record, `InvalidTransition` for a move the
    /// operation or the transition table does not allow.
    pub(super) fn decide(
        self,
        key: &RunKey,
        old: Option<&RunRecord>,
    ) -> Result<Option<RunState>, StoreError> {
        use RunState::{Cancelled, Failed, Pending, Running, Succeeded, UpstreamFailed};
        let refuse = |to| StoreError::InvalidTransition {
            key: key.clone(),
            from: old.map(|old| old.state),
            to,
        };
        let Some(old) = old else {
            let to = match self {
                RunChange::Start => Running,
                RunChange::Enqueue => Pending,
                RunChange::RecordUnstarted(state @ (Failed | UpstreamFailed)) => state,
                RunChange::RecordUnstarted(state) => return Err(refuse(state)),
                _ => return Err(StoreError::RunNotFound { key: key.clone() }),
            };
            RunState::check_transition(key, None, to)?;
            return Ok(Some(to));
        };
        let from = old.state;
        let to = match (self, from) {
            (RunChange::Start, _) => Running,
            (RunChange::Fail, _) => Failed,
            // Someone is computing it already, and that outcome stands.
            (RunChange::Enqueue, Running) => return Err(refuse(Pending)),
            (RunChange::Enqueue, _) => Pending,
            (RunChange::RequeueInterrupted, Running) => Pending,
            // A worker finished the run since the scan: its outcome wins.
            (RunChange::RequeueInterrupted, _) => return Ok(None),
            // Another executor may own the record.
            (RunChange::RecordUnstarted(_), _) => return Ok(None),
            (RunChange::BlockOnUpstream, Pending) => UpstreamFailed,
            // Cancelled or started meanwhile.
            (RunChange::BlockOnUpstream, _) => return Ok(None),
            // Another writer committed it meanwhile: it is fresh already.
            (RunChange::FoundFresh, Succeeded) => return Ok(None),
            // A fresh result found for a run being computed means two writers on one run.
            (RunChange::FoundFresh, Running) => return Err(refuse(Succeeded)),
            (RunChange::FoundFresh, _) => Succeeded,
            (RunChange::Unblock, UpstreamFailed) => Pending,
            (RunChange::Unblock, _) => return Ok(None),
            // Queued: Pending, UpstreamFailed, or Failed awaiting a retry.
            (RunChange::Cancel, _) if old.is_active() && from != Running => Cancelled,
            (RunChange::Cancel, _) => return Ok(None),
            (RunChange::Wait, Pending) => Pending,
            (RunChange::Wait, _) => return Ok(None),
            (RunChange::Commit, Running) => Succeeded,
            // Only the attempt in flight commits; a fresh run is `FoundFresh`.
            (RunChange::Commit, _) => return Err(refuse(Succeeded)),
        };
        RunState::check_transition(key, Some(from), to)?;
        Ok(Some(to))
    }
}

/// A job's state, named as spark-jobserver names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobStatus {
    /// Accepted; only ever reported in the answer to an async `POST /jobs`.
    Started,
    /// Queued or computing.
    Running,
    /// Ended with a stored result.
    Finished,
    /// Ended with a failure (`JobRecord::failure`).
    Error,
    /// Stopped by `DELETE /jobs/{id}` or its timeout.
    Killed,
}

impl JobStatus {
    /// Every status, in declaration order.
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Started,
        JobStatus::Running,
        JobStatus::Finished,
        JobStatus::Error,
        JobStatus::Killed,
    ];

    /// The uppercase name, as stored and answered.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Started => "STARTED",
            JobStatus::Running => "RUNNING",
            JobStatus::Finished => "FINISHED",
            JobStatus::Error => "ERROR",
            JobStatus::Killed => "KILLED",
        }
    }

    /// Case-insensitive, as spark-jobserver's `status=` filter.
    pub fn parse(text: &str) -> Option<JobStatus> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(text))
    }

    /// Whether the job has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Finished | JobStatus::Error | JobStatus::Killed
        )
    }

    /// `Ok` if job `id` may go from `from` to `to`, else the typed refusal.
    pub(super) fn check_transition(
        id: &str,
        from: Option<JobStatus>,
        to: JobStatus,
    ) -> Result<(), StoreError> {
        if JobStatus::transition_allowed(from, to) {
            Ok(())
        } else {
            Err(StoreError::InvalidJobTransition {
                id: id.to_owned(),
                from,
                to,
            })
        }
    }
}

impl Lifecycle for JobStatus {
    /// The job table in this module's documentation.
    fn can_become(self, to: JobStatus) -> bool {
        match self {
            JobStatus::Started => true,
            JobStatus::Running => to != JobStatus::Started,
            JobStatus::Finished => matches!(to, JobStatus::Finished | JobStatus::Error),
            JobStatus::Error | JobStatus::Killed => to == self,
        }
    }

    fn can_be_created_as(to: JobStatus) -> bool {
        matches!(to, JobStatus::Started | JobStatus::Running)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};

    use super::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
    }

    fn key() -> RunKey {
        RunKey::new("shop", "orders", t0())
    }

    #[test]
    fn run_transitions_are_exactly_the_table() {
        use RunState::{Cancelled, Failed, Pending, Running, Succeeded, UpstreamFailed};
        let allowed: [(Option<RunState>, &[RunState]); 7] = [
            (None, &[Pending, Running, Failed, UpstreamFailed]),
            (
                Some(Pending),
                &[
                    Pending,
                    Running,
                    Succeeded,
                    Failed,
                    UpstreamFailed,
                    Cancelled,
                ],
            ),
            (Some(Running), &[Pending, Succeeded, Failed]),
            (Some(Succeeded), &[Pending, Running]),
            (Some(Failed), &[Pending, Running, Failed, Cancelled]),
            (Some(UpstreamFailed), &[Pending, Running, Cancelled]),
            (Some(Cancelled), &[Pending, Running]),
        ];
        let mut pairs = 0;
        for (from, targets) in allowed {
            for to in RunState::ALL {
                pairs += 1;
                assert_eq!(
                    RunState::transition_allowed(from, to),
                    targets.contains(&to),
                    "{from:?} → {to}"
                );
                let checked = RunState::check_transition(&key(), from, to);
                match checked {
                    Ok(()) => assert!(targets.contains(&to)),
                    Err(StoreError::InvalidTransition {
                        from: refused_from,
                        to: refused_to,
                        ..
                    }) => {
                        assert!(!targets.contains(&to));
                        assert_eq!((refused_from, refused_to), (from, to));
                    }
                    Err(other) => panic!("{other}"),
                }
            }
        }
        assert_eq!(pairs, 7 * 6, "every (from, to) pair, absent included");
    }

    /// What an operation did: moved the run, kept it, or refused with one of two errors.
    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Move(RunState),
        Keep,
        Refused,
        NotFound,
    }

    #[test]
    fn each_operation_does_what_its_method_promises_from_each_state() {
        use RunState::{Cancelled, Failed, Pending, Running, Succeeded, UpstreamFailed};
        use Seen::{Keep, Move, NotFound, Refused};
        let record = |state, retry: bool| RunRecord {
            state,
            retry_at: retry.then(t0),
            ..RunRecord::new_pending(t0(), t0())
        };
        // Columns: absent, then Pending, Running, Succeeded, Failed (retry due),
        // Failed (for good), UpstreamFailed, Cancelled.
        let table: [(RunChange, [Seen; 8]); 12] = [
            (
                RunChange::Start,
                [
                    Move(Running),
                    Move(Running),
                    Refused,
                    Move(Running),
                    Move(Running),
                    Move(Running),
                    Move(Running),
                    Move(Running),
                ],
            ),
            (
                RunChange::Fail,
                [
                    NotFound,
                    Move(Failed),
                    Move(Failed),
                    Refused,
                    Move(Failed),
                    Move(Failed),
                    Refused,
                    Refused,
                ],
            ),
            (
                RunChange::Enqueue,
                [
                    Move(Pending),
                    Move(Pending),
                    Refused,
                    Move(Pending),
                    Move(Pending),
                    Move(Pending),
                    Move(Pending),
                    Move(Pending),
                ],
            ),
            (
                RunChange::RequeueInterrupted,
                [NotFound, Keep, Move(Pending), Keep, Keep, Keep, Keep, Keep],
            ),
            (
                RunChange::RecordUnstarted(Failed),
                [Move(Failed), Keep, Keep, Keep, Keep, Keep, Keep, Keep],
            ),
            (
                RunChange::RecordUnstarted(UpstreamFailed),
                [
                    Move(UpstreamFailed),
                    Keep,
                    Keep,
                    Keep,
                    Keep,
                    Keep,
                    Keep,
                    Keep,
                ],
            ),
            (
                RunChange::BlockOnUpstream,
                [
                    NotFound,
                    Move(UpstreamFailed),
                    Keep,
                    Keep,
                    Keep,
                    Keep,
                    Keep,
                    Keep,
                ],
            ),
            (
                RunChange::FoundFresh,
                [
                    NotFound,
                    Move(Succeeded),
                    Refused,
                    Keep,
                    Refused,
                    Refused,
                    Refused,
                    Refused,
                ],
            ),
            (
                RunChange::Unblock,
                [NotFound, Keep, Keep, Keep, Keep, Keep, Move(Pending), Keep],
            ),
            (
                RunChange::Cancel,
                [
                    NotFound,
                    Move(Cancelled),
                    Keep,
                    Keep,
                    Move(Cancelled),
                    Keep,
                    Move(Cancelled),
                    Keep,
                ],
            ),
            (
                RunChange::Wait,
                [NotFound, Move(Pending), Keep, Keep, Keep, Keep, Keep, Keep],
            ),
            (
                RunChange::Commit,
                [
                    NotFound,
                    Refused,
                    Move(Succeeded),
                    Refused,
                    Refused,
                    Refused,
                    Refused,
                    Refused,
                ],
            ),
        ];
        let olds = [
            None,
            Some(record(Pending, false)),
            Some(record(Running, false)),
            Some(record(Succeeded, false)),
            Some(record(Failed, true)),
            Some(record(Failed, false)),
            Some(record(UpstreamFailed, false)),
            Some(record(Cancelled, false)),
        ];
        for (change, expected) in table {
            for (old, expected) in olds.iter().zip(expected) {
                let seen = match change.decide(&key(), old.as_ref()) {
                    Ok(Some(to)) => {
                        let from = old.as_ref().map(|old| old.state);
                        assert!(RunState::transition_allowed(from, to), "{change:?}");
                        Move(to)
                    }
                    Ok(None) => Keep,
                    Err(StoreError::InvalidTransition { from, .. }) => {
                        assert_eq!(from, old.as_ref().map(|old| old.state));
                        Refused
                    }
                    Err(StoreError::RunNotFound { .. }) => NotFound,
                    Err(other) => panic!("{change:?}: {other}"),
                };
                assert_eq!(
                    seen,
                    expected,
                    "{change:?} from {:?}",
                    old.as_ref().map(|old| (old.state, old.retry_at.is_some()))
                );
            }
        }
        // Recording an unstarted run in a state that is not an end without a start is refused.
        for state in [Pending, Running, Succeeded, Cancelled] {
            assert!(matches!(
                RunChange::RecordUnstarted(state).decide(&key(), None),
                Err(StoreError::InvalidTransition { from: None, .. })
            ));
        }
    }

    #[test]
    fn job_transitions_are_exactly_the_table() {
        use JobStatus::{Error, Finished, Killed, Running, Started};
        let allowed: [(Option<JobStatus>, &[JobStatus]); 6] = [
            (None, &[Started, Running]),
            (Some(Started), &[Started, Running, Finished, Error, Killed]),
            (Some(Running), &[Running, Finished, Error, Killed]),
            (Some(Finished), &[Finished, Error]),
            (Some(Error), &[Error]),
            (Some(Killed), &[Killed]),
        ];
        let mut pairs = 0;
        for (from, targets) in allowed {
            for to in JobStatus::ALL {
                pairs += 1;
                assert_eq!(
                    JobStatus::transition_allowed(from, to),
                    targets.contains(&to),
                    "{from:?} → {to}"
                );
                match JobStatus::check_transition("j1", from, to) {
                    Ok(()) => assert!(targets.contains(&to)),
                    Err(err @ StoreError::InvalidJobTransition { .. }) => {
                        assert!(!targets.contains(&to));
                        let from = from.map_or("absent", JobStatus::as_str);
                        assert_eq!(
                            err.to_string(),
                            format!("job j1 cannot go from {from} to {to}")
                        );
                    }
                    Err(other) => panic!("{other}"),
                }
            }
        }
        assert_eq!(pairs, 6 * 5, "every (from, to) pair, absent included");
    }

    #[test]
    fn job_status_parses_case_insensitively() {
        assert_eq!(JobStatus::parse("running"), Some(JobStatus::Running));
        assert_eq!(JobStatus::parse("KILLED"), Some(JobStatus::Killed));
        assert_eq!(JobStatus::parse("done"), None);
    }
}
