//! The contract's transition table: every run operation from every starting state.

use chrono::Duration;

use super::super::{ResultStore, RunKey, RunRecord, RunState, StoreError};
use super::{STARTS, end_of, new_result, put_in, run_key, t0};

/// What an operation is expected to do to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Succeeds, and the record is in this state.
    Move(RunState),
    /// Succeeds and leaves the record as it was.
    Keep,
    /// `enqueue_run` on a Running run: `None`, and the record as it was.
    Declined,
    /// `InvalidTransition` naming the record's state and this one; the record as it was.
    Refused(RunState),
    /// `RunNotFound`, and still no record.
    NotFound,
}

/// The operations of [`RunStore`] and [`ResultStore`] that move a run, by name.
const OPERATIONS: [&str; 10] = [
    "mark_running",
    "mark_failed",
    "enqueue_run",
    "record_unstarted",
    "mark_upstream_failed",
    "mark_fresh",
    "mark_unblocked",
    "mark_cancelled",
    "mark_waiting",
    "commit_success",
];

/// The contract's transition table: what each operation does from each starting state
/// (columns in the order of [`STARTS`]).
fn expected(operation: &str) -> [Expect; 8] {
    use Expect::{Declined, Keep, Move, NotFound, Refused};
    use RunState::{Cancelled, Failed, Pending, Running, Succeeded, UpstreamFailed};
    match operation {
        "mark_running" => [
            Move(Running),
            Move(Running),
            Refused(Running),
            Move(Running),
            Move(Running),
            Move(Running),
            Move(Running),
            Move(Running),
        ],
        "mark_failed" => [
            NotFound,
            Move(Failed),
            Move(Failed),
            Refused(Failed),
            Move(Failed),
            Move(Failed),
            Refused(Failed),
            Refused(Failed),
        ],
        "enqueue_run" => [
            Move(Pending),
            Move(Pending),
            Declined,
            Move(Pending),
            Move(Pending),
            Move(Pending),
            Move(Pending),
            Move(Pending),
        ],
        "record_unstarted" => [Move(Failed), Keep, Keep, Keep, Keep, Keep, Keep, Keep],
        "mark_upstream_failed" => [
            NotFound,
            Move(UpstreamFailed),
            Keep,
            Keep,
            Keep,
            Keep,
            Keep,
            Keep,
        ],
        "mark_fresh" => [
            NotFound,
            Move(Succeeded),
            Refused(Succeeded),
            Keep,
            Refused(Succeeded),
            Refused(Succeeded),
            Refused(Succeeded),
            Refused(Succeeded),
        ],
        "mark_unblocked" => [NotFound, Keep, Keep, Keep, Keep, Keep, Move(Pending), Keep],
        "mark_cancelled" => [
            NotFound,
            Move(Cancelled),
            Keep,
            Keep,
            Move(Cancelled),
            Keep,
            Move(Cancelled),
            Keep,
        ],
        "mark_waiting" => [NotFound, Move(Pending), Keep, Keep, Keep, Keep, Keep, Keep],
        "commit_success" => [
            NotFound,
            Refused(Succeeded),
            Move(Succeeded),
            Refused(Succeeded),
            Refused(Succeeded),
            Refused(Succeeded),
            Refused(Succeeded),
            Refused(Succeeded),
        ],
        other => panic!("no expectations for {other}"),
    }
}

/// Applies `operation` to run `key`; `Ok(None)` only for a declined `enqueue_run`.
fn apply<S: ResultStore>(
    store: &S,
    operation: &str,
    key: &RunKey,
) -> Result<Option<RunRecord>, StoreError> {
    let (end, now) = (end_of(key), t0() + Duration::hours(1));
    match operation {
        "mark_running" => store.mark_running(key, end, "fp2", now).map(Some),
        "mark_failed" => store.mark_failed(key, "failed again", now).map(Some),
        "enqueue_run" => store.enqueue_run(key, end, false, now),
        "record_unstarted" => store
            .record_unstarted(key, end, RunState::Failed, "no sources", now)
            .map(Some),
        "mark_upstream_failed" => store
            .mark_upstream_failed(key, &run_key("upstream", 1), now)
            .map(Some),
        "mark_fresh" => store.mark_fresh(key, "fp", now).map(Some),
        "mark_unblocked" => store.mark_unblocked(key).map(Some),
        "mark_cancelled" => store.mark_cancelled(key, "cancelled", now).map(Some),
        "mark_waiting" => store
            .mark_waiting(key, "no file yet", now, now + Duration::minutes(1))
            .map(Some),
        "commit_success" => store
            .commit_success(key, new_result("fp2", b"new frame", None), now)
            .map(Some),
        other => panic!("unknown operation {other}"),
    }
}

/// Every operation from every state: the moves the table allows happen, and every other
/// attempt is refused (typed) or left alone, the stored record and result unchanged.
pub fn conformance_run_transitions<S: ResultStore>(make: impl Fn() -> S) {
    let store = make();
    let mut checked = 0;
    for (row, operation) in OPERATIONS.iter().enumerate() {
        for (column, (start, expect)) in STARTS.iter().zip(expected(operation)).enumerate() {
            let key = run_key(&format!("op{row}_from{column}"), 0);
            put_in(&store, &key, *start);
            let before = store.run(&key).unwrap();
            let result_before = store.result(&key).unwrap();
            let what = format!("{operation} from {start:?}");
            let outcome = apply(&store, operation, &key);
            let after = store.run(&key).unwrap();
            match (expect, outcome) {
                (Expect::Move(state), Ok(Some(record))) => {
                    assert_eq!(record.state, state, "{what}");
                    assert_eq!(after.as_ref(), Some(&record), "{what}: returned as stored");
                }
                (Expect::Keep, Ok(Some(record))) => {
                    assert_eq!(Some(&record), before.as_ref(), "{what}: returned as it was");
                    assert_eq!(after, before, "{what}: left as it was");
                }
                (Expect::Declined, Ok(None)) => assert_eq!(after, before, "{what}"),
                (
                    Expect::Refused(to),
                    Err(StoreError::InvalidTransition {
                        from, to: asked, ..
                    }),
                ) => {
                    assert_eq!(
                        (from, asked),
                        (before.as_ref().map(|record| record.state), to),
                        "{what}"
                    );
                    assert_eq!(after, before, "{what}: a refusal changes nothing");
                    assert_eq!(store.result(&key).unwrap(), result_before, "{what}");
                }
                (Expect::NotFound, Err(StoreError::RunNotFound { key: missing })) => {
                    assert_eq!(missing, key, "{what}");
                    assert_eq!(after, None, "{what}: nothing created");
                }
                (expect, outcome) => panic!("{what}: expected {expect:?}, got {outcome:?}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, OPERATIONS.len() * STARTS.len());

    // The effects the scheduler counts on, beyond the state.
    let key = run_key("effects", 0);
    let end = end_of(&key);
    let first = store.mark_running(&key, end, "fp1", t0()).unwrap();
    assert_eq!((first.attempts, first.started_at), (1, Some(t0())));
    assert_eq!(
        (first.fingerprint.as_deref(), first.partition_end),
        (Some("fp1"), end)
    );
    let retry_at = t0() + Duration::minutes(10);
    let failed = store
        .mark_failed_until(&key, "boom", t0(), Some(retry_at))
        .unwrap();
    assert_eq!(
        (failed.failures, failed.retry_at, failed.error.as_deref()),
        (1, Some(retry_at), Some("boom"))
    );
    let again = store.mark_running(&key, end, "fp1", t0()).unwrap();
    assert_eq!(
        (again.attempts, again.error, again.finished_at),
        (2, None, None)
    );
    store.mark_failed(&key, "boom", t0()).unwrap();
    let queued = store.enqueue_run(&key, end, true, t0()).unwrap().unwrap();
    assert_eq!(
        (queued.failures, queued.retry_at, queued.force),
        (0, None, true)
    );
    let waiting = store.mark_waiting(&key, "no file", t0(), retry_at).unwrap();
    assert_eq!(
        (waiting.waiting_since, waiting.retry_at),
        (Some(t0()), Some(retry_at))
    );
    let unstarted = store
        .record_unstarted(
            &run_key("unstarted", 0),
            end,
            RunState::UpstreamFailed,
            "up",
            t0(),
        )
        .unwrap();
    assert_eq!(
        (unstarted.state, unstarted.attempts),
        (RunState::UpstreamFailed, 0)
    );
}
