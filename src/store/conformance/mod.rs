//! The store interface's conformance suite: the contract of [`RunStore`], [`ResultStore`],
//! [`JobStore`], [`ScheduleStore`] and [`StoreBackend`] written as tests against the traits,
//! so every backend is checked by the same code. The sled `Store` runs it below (`sled_store`);
//! a new backend calls each `conformance_*` function from its own tests with a factory for
//! empty stores, or [`check_backend`] for all of them. Outside this crate's tests the module
//! is compiled with the `store-conformance` feature.
//!
//! The functions panic on the first broken promise, naming it. Expectations are spelled out
//! here rather than derived from `lifecycle`, so a backend that implements transitions its
//! own way is still held to the same table.

mod records;
mod runs;
mod transitions;

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::{NewResult, ResultStore, RunKey, RunState, StoreBackend};

pub use records::{
    conformance_jobs, conformance_persistence, conformance_results, conformance_schedule,
};
pub use runs::{
    conformance_compare_and_swap, conformance_concurrent_writers, conformance_recovery,
    conformance_runs_create_read_list,
};
pub use transitions::conformance_run_transitions;

/// The instant every conformance run is planned around.
pub(super) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
}

/// A run of job `job` in pipeline `shop`, `hour` hours after [`t0`].
pub(super) fn run_key(job: &str, hour: i64) -> RunKey {
    RunKey::new("shop", job, t0() + Duration::hours(hour))
}

/// The exclusive end of the hourly partition that starts at `key`.
pub(super) fn end_of(key: &RunKey) -> DateTime<Utc> {
    key.partition_start + Duration::hours(1)
}

/// A result whose bytes name its fingerprint, computed by `attempt` (`None`: any).
pub(super) fn new_result(fingerprint: &str, frame: &[u8], attempt: Option<u32>) -> NewResult {
    NewResult {
        checks: Vec::new(),
        job_definition: None,
        fingerprint: fingerprint.to_owned(),
        definition: Some(format!("definition of {fingerprint}")),
        rows: 3,
        frame_ipc: frame.to_vec(),
        state_ipc: Some(format!("state of {fingerprint}").into_bytes()),
        attempt,
        seen: None,
    }
}

/// The states a run can be put in for the transition table, with how to reach them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    Absent,
    Pending,
    Running,
    Succeeded,
    FailedWithRetry,
    FailedForGood,
    UpstreamFailed,
    Cancelled,
}

pub(super) const STARTS: [Start; 8] = [
    Start::Absent,
    Start::Pending,
    Start::Running,
    Start::Succeeded,
    Start::FailedWithRetry,
    Start::FailedForGood,
    Start::UpstreamFailed,
    Start::Cancelled,
];

/// Puts run `key` (which must have no record) in state `start` through the trait.
pub(super) fn put_in<S: ResultStore>(store: &S, key: &RunKey, start: Start) {
    let end = end_of(key);
    let now = t0();
    match start {
        Start::Absent => {}
        Start::Pending => drop(store.enqueue_run(key, end, false, now).unwrap()),
        Start::Running => drop(store.mark_running(key, end, "fp", now).unwrap()),
        Start::Succeeded => {
            store.mark_running(key, end, "fp", now).unwrap();
            store
                .commit_success(key, new_result("fp", b"frame", None), now)
                .unwrap();
        }
        Start::FailedWithRetry | Start::FailedForGood => {
            store.mark_running(key, end, "fp", now).unwrap();
            let retry = (start == Start::FailedWithRetry).then(|| now + Duration::minutes(5));
            store.mark_failed_until(key, "boom", now, retry).unwrap();
        }
        Start::UpstreamFailed => {
            store.enqueue_run(key, end, false, now).unwrap();
            store
                .mark_upstream_failed(key, &run_key("upstream", 0), now)
                .unwrap();
        }
        Start::Cancelled => {
            store.enqueue_run(key, end, false, now).unwrap();
            store
                .mark_cancelled(key, "backfill cancelled", now)
                .unwrap();
        }
    }
    let state = store.run(key).unwrap().map(|record| record.state);
    let expected = match start {
        Start::Absent => None,
        Start::Pending => Some(RunState::Pending),
        Start::Running => Some(RunState::Running),
        Start::Succeeded => Some(RunState::Succeeded),
        Start::FailedWithRetry | Start::FailedForGood => Some(RunState::Failed),
        Start::UpstreamFailed => Some(RunState::UpstreamFailed),
        Start::Cancelled => Some(RunState::Cancelled),
    };
    assert_eq!(state, expected, "setting up {start:?}");
}

/// The whole suite: `make` gives a new, empty store each call; `open` opens one and the same
/// persistent store each call.
pub fn check_backend<S: StoreBackend>(make: impl Fn() -> S, open: impl Fn() -> S) {
    conformance_runs_create_read_list(&make);
    conformance_run_transitions(&make);
    conformance_compare_and_swap(&make);
    conformance_concurrent_writers(&make);
    conformance_results(&make);
    conformance_recovery(&make);
    conformance_jobs(&make);
    conformance_schedule(&make);
    conformance_persistence(open);
}

#[cfg(test)]
mod sled_store {
    //! The sled `Store` against the suite, each store in its own directory under a temporary
    //! one (real sled files, so large job results go to their own files as in production).

    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::super::super::Store;
    use super::*;

    /// A factory of empty stores under one temporary directory, kept for the test's length.
    struct Stores {
        dir: tempfile::TempDir,
        made: AtomicUsize,
    }

    impl Stores {
        fn new() -> Stores {
            Stores {
                dir: tempfile::tempdir().unwrap(),
                made: AtomicUsize::new(0),
            }
        }

        fn make(&self) -> Store {
            let n = self.made.fetch_add(1, Ordering::SeqCst);
            Store::open(&self.dir.path().join(format!("store{n}"))).unwrap()
        }

        fn persistent(&self) -> PathBuf {
            self.dir.path().join("persistent")
        }
    }

    #[test]
    fn runs_create_read_list() {
        let stores = Stores::new();
        conformance_runs_create_read_list(|| stores.make());
    }

    #[test]
    fn run_transitions() {
        let stores = Stores::new();
        conformance_run_transitions(|| stores.make());
    }

    #[test]
    fn compare_and_swap() {
        let stores = Stores::new();
        conformance_compare_and_swap(|| stores.make());
    }

    #[test]
    fn concurrent_writers() {
        let stores = Stores::new();
        conformance_concurrent_writers(|| stores.make());
    }

    #[test]
    fn results() {
        let stores = Stores::new();
        conformance_results(|| stores.make());
    }

    #[test]
    fn recovery() {
        let stores = Stores::new();
        conformance_recovery(|| stores.make());
    }

    #[test]
    fn jobs() {
        let stores = Stores::new();
        conformance_jobs(|| stores.make());
    }

    #[test]
    fn schedule() {
        let stores = Stores::new();
        conformance_schedule(|| stores.make());
    }

    #[test]
    fn persistence() {
        let stores = Stores::new();
        let path = stores.persistent();
        conformance_persistence(|| Store::open(&path).unwrap());
    }

    #[test]
    fn the_suite_runs_on_temporary_stores_too() {
        // `open_temporary` keeps everything in sled (no directory for result files); only
        // persistence needs a real directory.
        let stores = Stores::new();
        let path = stores.persistent();
        check_backend(
            || Store::open_temporary().unwrap(),
            || Store::open(&path).unwrap(),
        );
    }
}
