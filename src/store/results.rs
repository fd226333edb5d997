//! Materialised results of runs: the result frame, the optional mergeable
//! state frame (both Arrow IPC bytes, opaque here) and a small `ResultMeta`,
//! each in its own tree under the run's key. The meta is separate so that
//! freshness checks never load the frames.
//!
//! A result is only ever written by `commit_success`, in the same sled
//! transaction that moves its run to Succeeded and replaces (or removes) the
//! previous result's entries, so a reader using `Store::result` sees the old
//! result or the new one, never a mix, and never a result without its
//! Succeeded record.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::IVec;
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::keys::RunKey;
use super::runs::{RunRecord, RunState};
use super::{Store, StoreError, decode_json, encode_json, tree};

/// What a finished run hands to `commit_success`.
pub struct NewResult {
    /// Fingerprint the result was computed for; becomes the run's and the
    /// meta's fingerprint, which freshness checks compare against.
    pub fingerprint: String,
    /// Row count of the result frame, so callers can report it without
    /// decoding the frame.
    pub rows: u64,
    /// Arrow IPC bytes of the result frame.
    pub frame_ipc: Vec<u8>,
    /// Arrow IPC bytes of the mergeable partial (e.g. the distinct keys of a
    /// count-distinct), for jobs whose results combine across partitions.
    pub state_ipc: Option<Vec<u8>>,
    /// The attempt (`RunRecord::attempts` after `mark_running`) that computed it. When set,
    /// the commit is refused unless the run is still on that attempt: an attempt the
    /// scheduler gave up on (timed out) and retried must not commit over its successor.
    pub attempt: Option<u32>,
}

impl fmt::Debug for NewResult {
    // The frames can be megabytes; print their sizes, not their bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewResult")
            .field("fingerprint", &self.fingerprint)
            .field("rows", &self.rows)
            .field("frame_ipc_len", &self.frame_ipc.len())
            .field("state_ipc_len", &self.state_ipc.as_ref().map(Vec::len))
            .finish()
    }
}

/// Small facts about a stored result, readable without its frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultMeta {
    /// Fingerprint the result was computed for; a result is fresh when this
    /// equals the job's current fingerprint.
    pub fingerprint: String,
    /// Row count of the result frame.
    pub rows: u64,
    /// Stored size, frame plus state, for cache accounting.
    pub bytes: u64,
    /// When the result was committed.
    pub created_at: DateTime<Utc>,
}

/// One result read as a consistent snapshot.
#[derive(Clone, PartialEq)]
pub struct StoredResult {
    /// The result's meta.
    pub meta: ResultMeta,
    /// Arrow IPC bytes of the result frame.
    pub frame_ipc: IVec,
    /// Arrow IPC bytes of the state frame, if the result has one.
    pub state_ipc: Option<IVec>,
}

impl fmt::Debug for StoredResult {
    // Same reason as for `NewResult`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredResult")
            .field("meta", &self.meta)
            .field("frame_ipc_len", &self.frame_ipc.len())
            .field("state_ipc_len", &self.state_ipc.as_ref().map(|s| s.len()))
            .finish()
    }
}

impl Store {
    /// One transaction: run → Succeeded (fingerprint, finished_at) + result
    /// bytes + result meta, replacing any previous result of the run. The
    /// run must be Running: anything else means another writer got there
    /// first, and nothing is written.
    pub fn commit_success(
        &self,
        key: &RunKey,
        result: NewResult,
        now: DateTime<Utc>,
    ) -> Result<RunRecord, StoreError> {
        let key_bytes = key.encode()?;
        let stored_len = result.frame_ipc.len() + result.state_ipc.as_ref().map_or(0, Vec::len);
        let meta = ResultMeta {
            fingerprint: result.fingerprint,
            rows: result.rows,
            bytes: u64::try_from(stored_len).unwrap_or(u64::MAX),
            created_at: now,
        };
        let meta_json = encode_json(tree::RESULT_META, key, &meta)?;
        // Converted once: the closure may be retried, and cloning an IVec is
        // a reference-count bump rather than a copy of the frame.
        let frame = IVec::from(result.frame_ipc);
        let state = result.state_ipc.map(IVec::from);

        let trees = (
            &self.runs,
            &self.result_meta,
            &self.result_frame,
            &self.result_state,
        );
        let outcome = trees.transaction(|(runs, metas, frames, states)| {
            let abort = ConflictableTransactionError::Abort;
            let old: Option<RunRecord> = runs
                .get(&key_bytes)?
                .map(|raw| decode_json(tree::RUNS, key, &raw))
                .transpose()
                .map_err(abort)?;
            let old = match old {
                Some(old) if old.state == RunState::Running => {
                    if let Some(attempt) = result.attempt
                        && attempt != old.attempts
                    {
                        return Err(abort(StoreError::StaleAttempt {
                            key: key.clone(),
                            attempt,
                            current: old.attempts,
                        }));
                    }
                    old
                }
                Some(old) => {
                    return Err(abort(StoreError::InvalidTransition {
                        key: key.clone(),
                        from: Some(old.state),
                        to: RunState::Succeeded,
                    }));
                }
                None => return Err(abort(StoreError::RunNotFound { key: key.clone() })),
            };
            let record = RunRecord {
                state: RunState::Succeeded,
                fingerprint: Some(meta.fingerprint.clone()),
                finished_at: Some(now),
                error: None,
                retry_at: None,
                waiting_since: None,
                commits: old.commits.saturating_add(1),
                force: false,
                ..old
            };
            let record_json = encode_json(tree::RUNS, key, &record).map_err(abort)?;
            runs.insert(key_bytes.as_slice(), record_json)?;
            metas.insert(key_bytes.as_slice(), meta_json.as_slice())?;
            frames.insert(key_bytes.as_slice(), frame.clone())?;
            // A previous result's state must not outlive it.
            match &state {
                Some(state) => {
                    states.insert(key_bytes.as_slice(), state.clone())?;
                }
                // Looked up first: removing an absent key would still write to the log.
                None if states.get(key_bytes.as_slice())?.is_some() => {
                    states.remove(key_bytes.as_slice())?;
                }
                None => {}
            }
            Ok(record)
        });
        let record = Store::tx_result(outcome, "commit result of run", key)?;
        tracing::debug!(run = %key, rows = meta.rows, bytes = meta.bytes, "result committed");
        Ok(record)
    }

    /// The meta of a run's result, without loading the frames.
    pub fn result_meta(&self, key: &RunKey) -> Result<Option<ResultMeta>, StoreError> {
        self.result_meta
            .get(key.encode()?)
            .map_err(Store::sled_error("read result meta of", key))?
            .map(|raw| decode_json(tree::RESULT_META, key, &raw))
            .transpose()
    }

    /// The result frame's IPC bytes.
    pub fn result_frame(&self, key: &RunKey) -> Result<Option<IVec>, StoreError> {
        self.result_frame
            .get(key.encode()?)
            .map_err(Store::sled_error("read result frame of", key))
    }

    /// The state frame's IPC bytes, if the result has one.
    pub fn result_state(&self, key: &RunKey) -> Result<Option<IVec>, StoreError> {
        self.result_state
            .get(key.encode()?)
            .map_err(Store::sled_error("read result state of", key))
    }

    /// Meta, frame and state read in one transaction, so a concurrent
    /// `commit_success` cannot hand back the meta of one result with the
    /// frame of another (which three separate reads could).
    pub fn result(&self, key: &RunKey) -> Result<Option<StoredResult>, StoreError> {
        let key_bytes = key.encode()?;
        let trees = (&self.result_meta, &self.result_frame, &self.result_state);
        let outcome = trees.transaction(|(metas, frames, states)| {
            let read: (Option<IVec>, Option<IVec>, Option<IVec>) = (
                metas.get(&key_bytes)?,
                frames.get(&key_bytes)?,
                states.get(&key_bytes)?,
            );
            Ok::<_, ConflictableTransactionError<StoreError>>(read)
        });
        match Store::tx_result(outcome, "read result of run", key)? {
            (None, None, None) => Ok(None),
            (Some(meta), Some(frame_ipc), state_ipc) => Ok(Some(StoredResult {
                meta: decode_json(tree::RESULT_META, key, &meta)?,
                frame_ipc,
                state_ipc,
            })),
            (Some(_), None, _) => Err(StoreError::Inconsistent {
                key: key.clone(),
                detail: "result meta without a result frame",
            }),
            (None, _, _) => Err(StoreError::Inconsistent {
                key: key.clone(),
                detail: "result frame or state without result meta",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
    }

    fn key() -> RunKey {
        RunKey::new("shop", "orders_hourly", t0())
    }

    fn new_result(fp: &str, frame: &[u8], state: Option<&[u8]>) -> NewResult {
        NewResult {
            fingerprint: fp.to_owned(),
            rows: 3,
            frame_ipc: frame.to_vec(),
            state_ipc: state.map(<[u8]>::to_vec),
            attempt: None,
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        (dir, store)
    }

    #[test]
    fn commit_writes_run_and_result_together() {
        let (_dir, store) = store();
        let k = key();
        let end = t0() + Duration::hours(1);
        store.mark_running(&k, end, "fp1", t0()).unwrap();
        assert_eq!(store.result(&k).unwrap(), None);

        let done = t0() + Duration::minutes(3);
        let record = store
            .commit_success(&k, new_result("fp1", b"FRAME", Some(b"STATE")), done)
            .unwrap();
        assert_eq!(record.state, RunState::Succeeded);
        assert_eq!(record.finished_at, Some(done));
        assert_eq!(record.fingerprint.as_deref(), Some("fp1"));
        assert_eq!(store.run(&k).unwrap(), Some(record));

        let meta = ResultMeta {
            fingerprint: "fp1".to_owned(),
            rows: 3,
            bytes: 10,
            created_at: done,
        };
        assert_eq!(store.result_meta(&k).unwrap(), Some(meta.clone()));
        assert_eq!(store.result_frame(&k).unwrap().unwrap(), b"FRAME");
        assert_eq!(store.result_state(&k).unwrap().unwrap(), b"STATE");
        let whole = store.result(&k).unwrap().unwrap();
        assert_eq!(whole.meta, meta);
        assert_eq!(whole.frame_ipc, b"FRAME");
        assert_eq!(whole.state_ipc.as_deref(), Some(b"STATE".as_slice()));
    }

    #[test]
    fn failed_commit_leaves_run_and_result_unchanged() {
        let (_dir, store) = store();
        let k = key();
        let end = t0() + Duration::hours(1);

        // No run at all: nothing may be written.
        let err = store
            .commit_success(&k, new_result("fp", b"F", None), t0())
            .unwrap_err();
        assert!(matches!(err, StoreError::RunNotFound { .. }), "{err}");
        assert_eq!(store.run(&k).unwrap(), None);
        assert_eq!(store.result(&k).unwrap(), None);
        assert!(store.result_frame.is_empty() && store.result_meta.is_empty());

        // A committed result, then a second commit without mark_running (a
        // second writer): refused, the first result and record stay.
        store.mark_running(&k, end, "fp1", t0()).unwrap();
        store
            .commit_success(&k, new_result("fp1", b"OLD", Some(b"OLDSTATE")), t0())
            .unwrap();
        let record = store.run(&k).unwrap();
        let result = store.result(&k).unwrap();
        let err = store
            .commit_success(
                &k,
                new_result("fp2", b"NEW", None),
                t0() + Duration::hours(1),
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::InvalidTransition {
                    from: Some(RunState::Succeeded),
                    to: RunState::Succeeded,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(store.run(&k).unwrap(), record);
        assert_eq!(store.result(&k).unwrap(), result);

        // Failed runs cannot commit either.
        store.mark_running(&k, end, "fp2", t0()).unwrap();
        store.mark_failed(&k, "boom", t0()).unwrap();
        let before = store.run(&k).unwrap();
        let err = store
            .commit_success(&k, new_result("fp2", b"NEW", None), t0())
            .unwrap_err();
        assert!(matches!(
            err,
            StoreError::InvalidTransition {
                from: Some(RunState::Failed),
                ..
            }
        ));
        assert_eq!(store.run(&k).unwrap(), before);
        assert_eq!(store.result(&k).unwrap(), result);
    }

    #[test]
    fn recompute_replaces_the_result_and_drops_stale_state() {
        let (_dir, store) = store();
        let k = key();
        let end = t0() + Duration::hours(1);
        store.mark_running(&k, end, "fp1", t0()).unwrap();
        store
            .commit_success(&k, new_result("fp1", b"OLD", Some(b"S")), t0())
            .unwrap();

        // Fingerprint changed: recompute. The old result stays readable
        // while the new one is being computed.
        let running = store
            .mark_running(&k, end, "fp2", t0() + Duration::hours(2))
            .unwrap();
        assert_eq!((running.state, running.attempts), (RunState::Running, 2));
        assert_eq!(store.result_meta(&k).unwrap().unwrap().fingerprint, "fp1");

        let big = vec![7_u8; 3 << 20]; // larger than a sled segment: stored as a blob
        store
            .commit_success(&k, new_result("fp2", &big, None), t0() + Duration::hours(3))
            .unwrap();
        let meta = store.result_meta(&k).unwrap().unwrap();
        assert_eq!(meta.fingerprint, "fp2");
        assert_eq!(meta.bytes, 3 << 20);
        assert_eq!(store.result_frame(&k).unwrap().unwrap(), big.as_slice());
        assert_eq!(store.result_state(&k).unwrap(), None);
        assert_eq!(
            store.run(&k).unwrap().unwrap().fingerprint.as_deref(),
            Some("fp2")
        );
    }

    #[test]
    fn results_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let k = key();
        {
            let store = Store::open(&path).unwrap();
            store
                .mark_running(&k, t0() + Duration::hours(1), "fp", t0())
                .unwrap();
            store
                .commit_success(&k, new_result("fp", b"FRAME", Some(b"S")), t0())
                .unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.run(&k).unwrap().unwrap().state, RunState::Succeeded);
        let got = store.result(&k).unwrap().unwrap();
        assert_eq!(
            (got.frame_ipc.as_ref(), got.meta.rows),
            (b"FRAME".as_slice(), 3)
        );
    }

    #[test]
    fn readers_see_old_or_new_result_never_a_mix() {
        let store = Store::open_temporary().unwrap();
        let k = key();
        let end = t0() + Duration::hours(1);
        // Every generation's frame and state spell out its fingerprint, so
        // a mixed read shows up as a mismatch. Odd generations have no state.
        let result_of = |generation: u32| {
            let fp = format!("fp{generation}");
            let state = (generation % 2 == 0).then(|| fp.as_bytes().repeat(1000));
            NewResult {
                rows: u64::from(generation),
                frame_ipc: fp.as_bytes().repeat(5000),
                state_ipc: state,
                fingerprint: fp,
                attempt: None,
            }
        };
        store.mark_running(&k, end, "fp0", t0()).unwrap();
        store.commit_success(&k, result_of(0), t0()).unwrap();

        let writer = {
            let store = store.clone();
            let k = k.clone();
            std::thread::spawn(move || {
                for generation in 1..=150 {
                    let fp = format!("fp{generation}");
                    store.mark_running(&k, end, &fp, t0()).unwrap();
                    store
                        .commit_success(&k, result_of(generation), t0())
                        .unwrap();
                }
            })
        };
        let mut reads = 0;
        while !writer.is_finished() || reads == 0 {
            let got = store.result(&k).unwrap().unwrap();
            let fp = got.meta.fingerprint.as_bytes();
            let generation: u32 = got.meta.fingerprint[2..].parse().unwrap();
            assert_eq!(got.meta.rows, u64::from(generation));
            assert_eq!(got.frame_ipc, fp.repeat(5000));
            assert_eq!(
                got.state_ipc.map(|s| s.to_vec()),
                (generation % 2 == 0).then(|| fp.repeat(1000))
            );
            reads += 1;
        }
        writer.join().unwrap();
        assert_eq!(store.result_meta(&k).unwrap().unwrap().fingerprint, "fp150");
    }

    #[test]
    fn inconsistent_trees_are_reported() {
        let store = Store::open_temporary().unwrap();
        let k = key();
        store
            .result_frame
            .insert(k.encode().unwrap(), b"orphan".as_slice())
            .unwrap();
        assert!(matches!(
            store.result(&k),
            Err(StoreError::Inconsistent { .. })
        ));
        store
            .result_meta
            .insert(k.encode().unwrap(), b"garbage".as_slice())
            .unwrap();
        let err = store.result_meta(&k).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Decode {
                    tree: "result_meta",
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(store.result(&k), Err(StoreError::Decode { .. })));
    }
}
