//! Results, jobs, the scheduler's records, and persistence across a reopen.

use chrono::Duration;
use polars::df;
use polars::prelude::DataFrame;

use super::super::{
    BackfillRecord, BackfillState, JobFailure, JobRecord, JobStatus, JobStore, NewResult,
    ResultStore, RunState, ScheduleStore, StoreBackend, StoreError,
};
use super::{Start, end_of, new_result, put_in, run_key, t0};

/// Results: none before a commit; meta, frame and state after; the current attempt's result
/// only; a recompute keeps the old result readable until it commits; large frames round-trip.
pub fn conformance_results<S: ResultStore>(make: impl Fn() -> S) {
    let store = make();
    let key = run_key("results", 0);
    let end = end_of(&key);
    assert_eq!(store.result(&key).unwrap(), None);
    assert_eq!(store.result_meta(&key).unwrap(), None);
    assert_eq!(store.result_fingerprint(&key).unwrap(), None);

    store.mark_running(&key, end, "fp1", t0()).unwrap();
    assert_eq!(
        store.result(&key).unwrap(),
        None,
        "nothing before the commit"
    );
    let done = store
        .commit_success(&key, new_result("fp1", b"FRAME1", Some(1)), t0())
        .unwrap();
    assert_eq!((done.result_attempt, done.commits), (Some(1), 1));
    assert_eq!(done.fingerprint.as_deref(), Some("fp1"));
    let stored = store.result(&key).unwrap().unwrap();
    assert_eq!(stored.frame_ipc, b"FRAME1".as_slice());
    assert_eq!(
        stored.state_ipc.as_deref(),
        Some(b"state of fp1".as_slice())
    );
    assert_eq!(
        (
            stored.meta.fingerprint.as_str(),
            stored.meta.rows,
            stored.meta.created_at
        ),
        ("fp1", 3, t0())
    );
    assert_eq!(stored.meta.definition.as_deref(), Some("definition of fp1"));
    assert_eq!(store.result_meta(&key).unwrap(), Some(stored.meta.clone()));
    assert_eq!(
        store.result_fingerprint(&key).unwrap().as_deref(),
        Some("fp1")
    );

    // A recompute: the old result stays readable while the new attempt runs.
    let running = store.mark_running(&key, end, "fp2", t0()).unwrap();
    assert_eq!(running.attempts, 2);
    assert_eq!(store.result(&key).unwrap(), Some(stored));
    assert_eq!(
        store.result_fingerprint(&key).unwrap().as_deref(),
        Some("fp1")
    );
    let large = vec![7_u8; 256 << 10];
    let result = NewResult {
        state_ipc: None,
        ..new_result("fp2", &large, Some(2))
    };
    let done = store.commit_success(&key, result, t0()).unwrap();
    assert_eq!((done.result_attempt, done.commits), (Some(2), 2));
    assert_eq!(store.result_frame(&key).unwrap().unwrap(), large.as_slice());
    assert_eq!(
        store.result_state(&key).unwrap(),
        None,
        "no state left from attempt 1"
    );
    assert_eq!(store.result_meta(&key).unwrap().unwrap().bytes, 256 << 10);
    assert_eq!(
        store
            .result_fingerprint_of(&key, Some(&done))
            .unwrap()
            .as_deref(),
        Some("fp2")
    );

    // A run found fresh takes the stored result's fingerprint.
    let fresh = run_key("fresh", 0);
    store
        .enqueue_run(&fresh, end_of(&fresh), false, t0())
        .unwrap();
    let record = store.mark_fresh(&fresh, "fp-fresh", t0()).unwrap();
    assert_eq!(record.fingerprint.as_deref(), Some("fp-fresh"));
}

fn job(id: &str, status: JobStatus) -> JobRecord {
    JobRecord {
        id: id.to_owned(),
        class_path: "sql".to_owned(),
        app: Some("shop".to_owned()),
        app_version: Some(1),
        context: String::new(),
        context_id: "ctx".to_owned(),
        status,
        start_time: t0(),
        end_time: None,
        failure: None,
        result_rows: None,
        result_bytes: None,
        rerun_on_restart: false,
    }
}

/// Job records: insert, read, update along the job table (illegal moves refused, nothing
/// written), results (admitted or refused, measured, large ones), lists and filters, delete.
pub fn conformance_jobs<S: JobStore>(make: impl Fn() -> S) {
    let store = make();
    assert_eq!(store.job("0001").unwrap(), None);
    let ids = ["0001", "0002", "0003", "0004"];
    for id in ids {
        store
            .insert_job(
                &job(id, JobStatus::Running),
                format!("{{\"id\":\"{id}\"}}").as_bytes(),
            )
            .unwrap();
    }
    assert_eq!(
        store.job("0002").unwrap(),
        Some(job("0002", JobStatus::Running))
    );
    assert_eq!(
        store.job_config("0002").unwrap().unwrap(),
        br#"{"id":"0002"}"#
    );

    let result = df!("x" => [1_i64, 2, 3]).unwrap();
    let finished = JobRecord {
        result_rows: Some(3),
        end_time: Some(t0()),
        ..job("0001", JobStatus::Finished)
    };
    store.update_job(&finished, Some(&result)).unwrap();
    assert_eq!(store.job("0001").unwrap(), Some(finished.clone()));
    assert_eq!(store.job_result("0001").unwrap(), Some(result.clone()));
    assert!(store.job_result_exists("0001").unwrap());
    assert!(store.job_result_bytes("0001").unwrap().unwrap() > 0);

    let killed = JobRecord {
        failure: Some(JobFailure {
            message: "killed".to_owned(),
            error_class: "floe.JobKilled".to_owned(),
            stack: String::new(),
        }),
        ..job("0002", JobStatus::Killed)
    };
    store.update_job(&killed, None).unwrap();
    store
        .update_job(&job("0003", JobStatus::Error), None)
        .unwrap();

    // Illegal moves: refused with the typed error, the record (and its result) untouched.
    let refusals: [(JobRecord, Option<&DataFrame>, Option<JobStatus>); 4] = [
        (
            job("0001", JobStatus::Running),
            None,
            Some(JobStatus::Finished),
        ),
        (
            job("0002", JobStatus::Finished),
            Some(&result),
            Some(JobStatus::Killed),
        ),
        (
            job("0003", JobStatus::Running),
            None,
            Some(JobStatus::Error),
        ),
        (job("absent", JobStatus::Finished), Some(&result), None),
    ];
    for (record, with_result, from) in refusals {
        let before = store.job(&record.id).unwrap();
        match store.update_job(&record, with_result) {
            Err(StoreError::InvalidJobTransition {
                id,
                from: refused,
                to,
            }) => {
                assert_eq!(
                    (id.as_str(), refused, to),
                    (record.id.as_str(), from, record.status)
                );
            }
            other => panic!("{} → {}: {other:?}", record.id, record.status),
        }
        assert_eq!(store.job(&record.id).unwrap(), before, "{}", record.id);
        if record.id != "0001" {
            assert_eq!(store.job_result(&record.id).unwrap(), None, "{}", record.id);
        }
    }
    let message = store
        .update_job(&job("0001", JobStatus::Running), None)
        .unwrap_err()
        .to_string();
    assert_eq!(message, "job 0001 cannot go from FINISHED to RUNNING");
    // Rewriting a record in its status amends it.
    store.update_job(&killed, None).unwrap();
    store.update_job(&finished, None).unwrap();

    // Results are stored only when admitted, and the bytes offered are the bytes stored.
    let mut offered = 0;
    let refused = store
        .put_job_result("0004", &result, &mut |bytes| {
            offered = bytes;
            false
        })
        .unwrap();
    assert_eq!(
        (refused, store.job_result_exists("0004").unwrap()),
        (None, false)
    );
    let stored = store
        .put_job_result("0004", &result, &mut |_| true)
        .unwrap();
    assert_eq!(stored, Some(offered));
    assert_eq!(store.job_result_bytes("0004").unwrap(), Some(offered));
    // A large result (more than 8 MiB of Arrow) round-trips and is measured.
    let rows = (9 << 20) / 8;
    let large = df!("x" => (0..rows as i64).collect::<Vec<_>>()).unwrap();
    let large_bytes = store.put_job_result("0004", &large, &mut |_| true).unwrap();
    assert!(large_bytes.unwrap() > 8 << 20);
    assert_eq!(store.job_result("0004").unwrap(), Some(large));

    // Lists: newest first (ids sort by creation), limited, filtered by status; oldest first.
    let newest = |limit, status: Option<JobStatus>| -> Vec<String> {
        store
            .jobs_newest(limit, &mut |record| {
                status.is_none_or(|s| record.status == s)
            })
            .unwrap()
            .into_iter()
            .map(|record| record.id)
            .collect()
    };
    assert_eq!(newest(10, None), ["0004", "0003", "0002", "0001"]);
    assert_eq!(newest(2, None), ["0004", "0003"]);
    assert_eq!(newest(10, Some(JobStatus::Killed)), ["0002"]);
    assert_eq!(newest(10, Some(JobStatus::Running)), ["0004"]);
    let oldest: Vec<String> = store
        .jobs_oldest_first()
        .map(|record| record.unwrap().id)
        .collect();
    assert_eq!(oldest, ids);

    // Delete takes the config and the result with the record.
    store.delete_job("0001").unwrap();
    assert_eq!(store.job("0001").unwrap(), None);
    assert_eq!(store.job_config("0001").unwrap(), None);
    assert_eq!(store.job_result("0001").unwrap(), None);
    assert!(!store.job_result_exists("0001").unwrap());
    store.delete_job("0004").unwrap();
    assert_eq!(store.job_result_bytes("0004").unwrap(), None);
    assert_eq!(newest(10, None), ["0003", "0002"]);
}

fn backfill(id: &str, state: BackfillState) -> BackfillRecord {
    BackfillRecord {
        id: id.to_owned(),
        pipeline: "shop".to_owned(),
        jobs: Some(vec!["orders".to_owned()]),
        from: t0(),
        to: t0() + Duration::days(1),
        force: false,
        restate: false,
        state,
        created_at: t0(),
        finished_at: None,
    }
}

/// The scheduler's records: cursors per job, backfills put, read, listed and deleted.
pub fn conformance_schedule<S: ScheduleStore>(make: impl Fn() -> S) {
    let store = make();
    assert_eq!(store.schedule_cursor("shop", "orders").unwrap(), None);
    store.set_schedule_cursor("shop", "orders", t0()).unwrap();
    store
        .set_schedule_cursor("shop", "orders", t0() + Duration::hours(2))
        .unwrap();
    assert_eq!(
        store.schedule_cursor("shop", "orders").unwrap(),
        Some(t0() + Duration::hours(2))
    );
    assert_eq!(store.schedule_cursor("shop", "orders2").unwrap(), None);

    for (id, state) in [
        ("b1", BackfillState::Finished),
        ("b2", BackfillState::Running),
        ("b3", BackfillState::Paused),
    ] {
        store.put_backfill(&backfill(id, state)).unwrap();
    }
    assert_eq!(
        store.backfill("b2").unwrap(),
        Some(backfill("b2", BackfillState::Running))
    );
    assert_eq!(store.backfill("nope").unwrap(), None);
    let ids = |records: Vec<BackfillRecord>| -> Vec<String> {
        records.into_iter().map(|record| record.id).collect()
    };
    assert_eq!(ids(store.backfills().unwrap()), ["b1", "b2", "b3"]);
    assert_eq!(
        ids(store.backfills_newest(2, &mut |_| true).unwrap()),
        ["b3", "b2"]
    );
    assert_eq!(
        ids(store
            .backfills_newest(10, &mut |record| record.state.is_live())
            .unwrap()),
        ["b3", "b2"]
    );
    store
        .put_backfill(&backfill("b2", BackfillState::Cancelled))
        .unwrap();
    store.delete_backfills(&["b1".to_owned()]).unwrap();
    assert_eq!(ids(store.backfills().unwrap()), ["b2", "b3"]);
    assert_eq!(
        store.backfill("b2").unwrap().unwrap().state,
        BackfillState::Cancelled
    );
}

/// What was written and flushed is there after the store is closed and opened again.
/// `open` must open the same store each time it is called.
pub fn conformance_persistence<S: StoreBackend>(open: impl Fn() -> S) {
    let done = run_key("persisted", 0);
    let interrupted = run_key("interrupted", 0);
    let result = df!("x" => [4_i64, 5]).unwrap();
    {
        let store = open();
        put_in(&store, &done, Start::Succeeded);
        put_in(&store, &interrupted, Start::Running);
        store
            .insert_job(&job("0001", JobStatus::Running), b"{}")
            .unwrap();
        store
            .update_job(&job("0001", JobStatus::Finished), Some(&result))
            .unwrap();
        store.set_schedule_cursor("shop", "orders", t0()).unwrap();
        store
            .put_backfill(&backfill("b1", BackfillState::Running))
            .unwrap();
        store.flush().unwrap();
    }
    let store = open();
    assert_eq!(
        store.run(&done).unwrap().unwrap().state,
        RunState::Succeeded
    );
    assert_eq!(
        store.result_frame(&done).unwrap().unwrap(),
        b"frame".as_slice()
    );
    assert_eq!(
        store.job("0001").unwrap().unwrap().status,
        JobStatus::Finished
    );
    assert_eq!(store.job_result("0001").unwrap(), Some(result));
    assert_eq!(store.schedule_cursor("shop", "orders").unwrap(), Some(t0()));
    assert_eq!(
        store.backfill("b1").unwrap().unwrap().state,
        BackfillState::Running
    );
    // The run left Running by the "crash" is requeued on recovery.
    let (requeued, active) = store.recover_runs(t0()).unwrap();
    assert_eq!(requeued, 1);
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].0, interrupted);
}
