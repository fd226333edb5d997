//! Runs: creating, reading and listing them, compare-and-swap, racing writers, recovery.

use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::Duration;

use super::super::{NewResult, ResultStore, RunKey, RunRecord, RunState, StoreError};
use super::{STARTS, Start, end_of, new_result, put_in, run_key, t0};

/// Create, read and list runs: key order, half-open ranges, prefixes that must not match, the
/// active list.
pub fn conformance_runs_create_read_list<S: ResultStore>(make: impl Fn() -> S) {
    let store = make();
    let orders = |hour| run_key("orders", hour);
    assert_eq!(store.run(&orders(0)).unwrap(), None);
    assert!(store.seen_run(&orders(0)).unwrap().record().is_none());
    assert_eq!(store.run_count(), 0);
    assert!(store.runs_of_pipeline("shop").unwrap().is_empty());
    assert!(store.active_runs().unwrap().is_empty());

    for hour in [3, -2, 0, 1] {
        put_in(&store, &orders(hour), Start::Pending);
    }
    // Same-prefix traps: a job whose name extends this one, a pipeline extending this one.
    let traps = [
        run_key("orders2", 0),
        run_key("order", 0),
        RunKey::new("shop2", "orders", t0()),
    ];
    for trap in &traps {
        put_in(&store, trap, Start::Running);
    }
    assert_eq!(store.run_count(), 7);
    let read = store.run(&orders(0)).unwrap().unwrap();
    assert_eq!(
        (read.state, read.partition_end),
        (RunState::Pending, end_of(&orders(0)))
    );
    assert_eq!(store.seen_run(&orders(0)).unwrap().record(), Some(&read));

    let starts = |runs: Vec<(RunKey, RunRecord)>| -> Vec<i64> {
        runs.into_iter()
            .map(|(key, _)| (key.partition_start - t0()).num_hours())
            .collect()
    };
    let range = |from: i64, to: i64| {
        store
            .runs_of_job(
                "shop",
                "orders",
                t0() + Duration::hours(from),
                t0() + Duration::hours(to),
            )
            .unwrap()
    };
    assert_eq!(starts(range(-10, 10)), [-2, 0, 1, 3]);
    assert_eq!(starts(range(0, 3)), [0, 1], "from inclusive, to exclusive");
    assert!(range(3, 3).is_empty() && range(5, -5).is_empty());

    let pipeline: Vec<RunKey> = store
        .runs_of_pipeline("shop")
        .unwrap()
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    let mut expected: Vec<RunKey> = [-2, 0, 1, 3].map(orders).to_vec();
    expected.extend(traps[..2].iter().cloned());
    expected.sort();
    assert_eq!(pipeline, expected, "by job, then time");

    // Active: Pending, Running, UpstreamFailed, Failed awaiting a retry; not the others.
    let store = make();
    for (i, start) in STARTS.iter().enumerate() {
        put_in(&store, &run_key(&format!("s{i}"), 0), *start);
    }
    let active: Vec<String> = store
        .active_runs()
        .unwrap()
        .into_iter()
        .map(|(key, _)| key.job)
        .collect();
    assert_eq!(active, ["s1", "s2", "s4", "s6"]);
}

/// Compare-and-swap: a stale snapshot is read afresh instead of overwriting a newer record,
/// and the result of an attempt that is no longer current is refused.
pub fn conformance_compare_and_swap<S: ResultStore>(make: impl Fn() -> S) {
    let store = make();
    let key = run_key("cas", 0);
    let end = end_of(&key);
    store.enqueue_run(&key, end, false, t0()).unwrap();
    let stale = store.seen_run(&key).unwrap();
    assert_eq!(stale.record().unwrap().state, RunState::Pending);

    // Another writer starts the run after the snapshot: enqueueing from it leaves it Running.
    store.mark_running(&key, end, "fp", t0()).unwrap();
    let declined = store
        .enqueue_run_seen(&key, Some(stale.clone()), end, false, t0())
        .unwrap();
    assert_eq!(declined, None);
    assert_eq!(store.run(&key).unwrap().unwrap().state, RunState::Running);
    // Starting from the stale snapshot is Running → Running once the record is re-read.
    assert!(matches!(
        store.mark_running_seen(&key, Some(stale.clone()), end, "fp", t0()),
        Err(StoreError::InvalidTransition {
            from: Some(RunState::Running),
            to: RunState::Running,
            ..
        })
    ));

    // Attempt 1 times out and fails; attempt 2 starts from the stale snapshot.
    store.mark_failed(&key, "timed out", t0()).unwrap();
    let (second, seen) = store
        .mark_running_seen(&key, Some(stale), end, "fp", t0())
        .unwrap();
    assert_eq!(second.attempts, 2, "the stale snapshot was read afresh");
    assert_eq!(seen.record(), Some(&second));

    let late = NewResult {
        seen: Some(seen.clone()),
        ..new_result("fp", b"late", Some(1))
    };
    match store.commit_success(&key, late, t0()) {
        Err(StoreError::StaleAttempt {
            attempt: 1,
            current: 2,
            ..
        }) => {}
        other => panic!("a stale attempt committed: {other:?}"),
    }
    assert_eq!(
        store.result(&key).unwrap(),
        None,
        "a refused commit leaves no result"
    );
    assert_eq!(store.run(&key).unwrap().as_ref(), Some(&second));

    let on_time = NewResult {
        seen: Some(seen),
        ..new_result("fp", b"on time", Some(2))
    };
    let done = store.commit_success(&key, on_time, t0()).unwrap();
    assert_eq!(
        (done.state, done.result_attempt),
        (RunState::Succeeded, Some(2))
    );
    assert_eq!(
        store.result_frame(&key).unwrap().unwrap(),
        b"on time".as_slice()
    );
}

/// Threads racing on one run key: in every round exactly one start wins, and the winner's
/// attempt commits whole while the losers are refused; no attempt is lost or counted twice.
pub fn conformance_concurrent_writers<S: ResultStore>(make: impl Fn() -> S) {
    const WRITERS: usize = 8;
    const ROUNDS: u32 = 4;
    let store = make();
    let key = run_key("raced", 0);
    let end = end_of(&key);
    for round in 1..=ROUNDS {
        let started = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for writer in 0..WRITERS {
                let (store, key, started) = (&store, &key, &started);
                scope.spawn(move || {
                    match store.mark_running_seen(key, None, end, "fp", t0()) {
                        Ok((record, seen)) => {
                            started.fetch_add(1, Ordering::SeqCst);
                            let frame = format!("round {round} writer {writer}");
                            let result = NewResult {
                                seen: Some(seen),
                                ..new_result("fp", frame.as_bytes(), Some(record.attempts))
                            };
                            store.commit_success(key, result, t0()).unwrap();
                        }
                        // Lost the race: the run is Running, or already Succeeded again
                        // when this writer read it after the winner's commit.
                        Err(StoreError::InvalidTransition {
                            from: Some(RunState::Running),
                            to: RunState::Running,
                            ..
                        }) => {}
                        Err(other) => panic!("a racing start failed otherwise: {other}"),
                    }
                });
            }
        });
        let record = store.run(&key).unwrap().unwrap();
        let won = started.load(Ordering::SeqCst);
        assert!(won >= 1, "round {round}: nobody started");
        // A writer that read the record after the round's winner committed may start the
        // next attempt; every start is one attempt and one commit, never two on one attempt.
        assert_eq!(record.state, RunState::Succeeded, "round {round}");
        assert_eq!(
            record.commits, record.attempts,
            "round {round}: one commit per attempt"
        );
        assert_eq!(
            record.result_attempt,
            Some(record.attempts),
            "round {round}"
        );
        let frame = store.result_frame(&key).unwrap().unwrap();
        assert!(frame.starts_with(format!("round {round} writer ").as_bytes()));
    }

    // Racing from one Pending record with the same snapshot: exactly one start wins.
    let key = run_key("raced_once", 0);
    store.enqueue_run(&key, end_of(&key), false, t0()).unwrap();
    let snapshot = store.seen_run(&key).unwrap();
    let started = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..WRITERS {
            let (store, key, started, snapshot) = (&store, &key, &started, &snapshot);
            scope.spawn(move || {
                let seen = Some(snapshot.clone());
                match store.mark_running_seen(key, seen, end_of(key), "fp", t0()) {
                    Ok(_) => drop(started.fetch_add(1, Ordering::SeqCst)),
                    Err(StoreError::InvalidTransition {
                        from: Some(RunState::Running),
                        ..
                    }) => {}
                    Err(other) => panic!("a racing start failed otherwise: {other}"),
                }
            });
        }
    });
    assert_eq!(started.load(Ordering::SeqCst), 1, "exactly one start wins");
    let record = store.run(&key).unwrap().unwrap();
    assert_eq!((record.state, record.attempts), (RunState::Running, 1));
}

/// Start-up recovery: runs a crash left Running are requeued (the others untouched), and the
/// active runs come back with them.
pub fn conformance_recovery<S: ResultStore>(make: impl Fn() -> S) {
    let store = make();
    for (i, start) in STARTS.iter().enumerate() {
        put_in(&store, &run_key(&format!("s{i}"), 0), *start);
    }
    let before: Vec<Option<RunRecord>> = (0..STARTS.len())
        .map(|i| store.run(&run_key(&format!("s{i}"), 0)).unwrap())
        .collect();
    let later = t0() + Duration::hours(3);
    let (requeued, active) = store.recover_runs(later).unwrap();
    assert_eq!(requeued, 1);
    let listed: Vec<(String, RunState)> = active
        .into_iter()
        .map(|(key, record)| (key.job, record.state))
        .collect();
    let expected = [
        ("s1", RunState::Pending),
        ("s2", RunState::Pending),
        ("s4", RunState::Failed),
        ("s6", RunState::UpstreamFailed),
    ]
    .map(|(job, state)| (job.to_owned(), state));
    assert_eq!(listed, expected);
    let requeued_run = store.run(&run_key("s2", 0)).unwrap().unwrap();
    assert_eq!(
        (requeued_run.queued_at, requeued_run.attempts),
        (Some(later), 1)
    );
    assert!(requeued_run.error.is_some(), "says it was interrupted");
    for (i, record) in before.into_iter().enumerate() {
        if i != 2 {
            assert_eq!(
                store.run(&run_key(&format!("s{i}"), 0)).unwrap(),
                record,
                "s{i}"
            );
        }
    }
    assert_eq!(store.requeue_interrupted(later).unwrap(), 0);
}
