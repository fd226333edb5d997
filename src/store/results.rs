//! Materialised results of runs, and how they are written (`result_reads` reads them): the
//! result frame, the optional mergeable state frame (both Arrow IPC bytes, opaque here) and a
//! small `ResultMeta`, each in its own tree under the run's key. The meta is separate so that
//! freshness checks never load large frames; a frame up to `INLINE_FRAME_BYTES` follows the
//! meta's JSON in the meta's own entry instead (schema 3), which saves a sled write on most
//! commits.
//!
//! A result is only ever written by `commit_success`, under the run's key plus the attempt
//! that computed it (frame and state first, meta last), and then the run's record is moved to
//! Succeeded pointing at that attempt with one compare-and-swap. Entries of an attempt are never
//! changed once written, only deleted after the record points elsewhere, so a reader that
//! follows the record sees the old result or the new one, never a mix, and never a result its
//! record does not name. A crash between the write and the swap leaves a complete result
//! behind a Running record; start-up recovery (`recover_runs`) finishes that commit instead of
//! computing the run again.
//!
//! Why not one sled transaction over the four trees: each transaction takes sled's global write
//! lock and writes its IO buffer out, which halved the scheduler's throughput.

use std::cell::Cell;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::IVec;

use super::keys::RunKey;
use super::lifecycle::{RunChange, RunState};
use super::runs::{CheckOutcome, RunRecord, SeenRun};
use super::{Store, StoreError, encode_json, sled_failed, tree};

/// What a finished run hands to `commit_success`.
pub struct NewResult {
    /// Fingerprint the result was computed for; becomes the run's and the
    /// meta's fingerprint, which freshness checks compare against.
    pub fingerprint: String,
    /// The definition (with its upstream definitions) that computed it, which readers compare
    /// with the current one; opaque here.
    pub definition: Option<String>,
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
    /// The run's record as the attempt's `mark_running_seen` left it, so the commit need not
    /// read it again (`None`: read it).
    pub seen: Option<SeenRun>,
    /// The outcomes of the job's data checks on this result, kept with the run.
    pub checks: Vec<CheckOutcome>,
    /// The job's own definition (`JobDef::definition_fingerprint`) and its YAML block: the
    /// fingerprint is kept in the meta, the block once per fingerprint, so a later plan can
    /// say what changed.
    pub job_definition: Option<(String, String)>,
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
    /// The definition that computed it (`NewResult::definition`). Results written before Floe
    /// recorded it have none, and count as made by an unknown definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    /// The job's own definition fingerprint, without its upstream's (results written before
    /// Floe kept it have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_definition: Option<String>,
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

/// Result frames up to this size are stored inline in their meta's entry, after the meta's
/// JSON and a newline, instead of in `result_frame`: one sled write less per commit, which is
/// most commits (aggregates are small). Larger frames keep their own entry, so freshness
/// checks that read the meta never load them.
const INLINE_FRAME_BYTES: usize = 16 * 1024;

/// The `result_meta` value: the meta's JSON, then, for an inline frame, a newline and the
/// frame's IPC bytes.
fn meta_value(meta_json: Vec<u8>, inline_frame: Option<&[u8]>) -> Vec<u8> {
    match inline_frame {
        None => meta_json,
        Some(frame) => {
            let mut value = meta_json;
            value.reserve(frame.len() + 1);
            value.push(b'\n');
            value.extend_from_slice(frame);
            value
        }
    }
}

/// Decodes a `result_meta` value: the meta, and the frame when it is stored inline.
pub(super) fn decode_meta_value(
    key: &RunKey,
    raw: &IVec,
) -> Result<(ResultMeta, Option<IVec>), StoreError> {
    let decode_error = |source| StoreError::Decode {
        tree: tree::RESULT_META,
        key: key.to_string(),
        source: Box::new(source),
    };
    let mut values = serde_json::Deserializer::from_slice(raw).into_iter::<ResultMeta>();
    let meta = match values.next() {
        Some(meta) => meta.map_err(decode_error)?,
        None => return Err(decode_error(serde::de::Error::custom("empty value"))),
    };
    let end = values.byte_offset();
    match raw.get(end..) {
        None | Some([]) => Ok((meta, None)),
        Some([b'\n', ..]) => Ok((meta, Some(raw.subslice(end + 1, raw.len() - end - 1)))),
        Some(_) => Err(decode_error(serde::de::Error::custom(
            "trailing bytes after the meta that are not an inline frame",
        ))),
    }
}

/// Where a result is stored: the run's key bytes, then the attempt (big-endian) for results
/// committed by attempt; the bare key for results an older Floe committed.
pub(super) fn result_key(run_key: &[u8], attempt: Option<u32>) -> Vec<u8> {
    let mut out = run_key.to_vec();
    if let Some(attempt) = attempt {
        out.extend_from_slice(&attempt.to_be_bytes());
    }
    out
}

/// The attempt a Running record may commit for: its current one, and it must match the
/// attempt that computed the result when that is known. Any other record refuses the commit
/// (`RunChange::Commit`).
fn committable_attempt(
    key: &RunKey,
    record: &RunRecord,
    attempt: Option<u32>,
) -> Result<u32, StoreError> {
    RunChange::Commit.decide(key, Some(record))?;
    match attempt {
        Some(attempt) if attempt != record.attempts => Err(StoreError::StaleAttempt {
            key: key.clone(),
            attempt,
            current: record.attempts,
        }),
        _ => Ok(record.attempts),
    }
}

/// The record of a run whose `attempt` committed its result, computed for `fingerprint`.
fn committed(
    old: RunRecord,
    fingerprint: &str,
    at: DateTime<Utc>,
    attempt: u32,
    checks: &[CheckOutcome],
) -> RunRecord {
    RunRecord {
        checks: checks.to_vec(),
        state: RunState::Succeeded,
        fingerprint: Some(fingerprint.to_owned()),
        finished_at: Some(at),
        error: None,
        retry_at: None,
        waiting_since: None,
        commits: old.commits.saturating_add(1),
        force: false,
        result_attempt: Some(attempt),
        ..old
    }
}

impl Store {
    /// Keeps the YAML `block` of the job definition `fingerprint`, once.
    fn put_definition(&self, fingerprint: &str, block: &str) -> Result<(), StoreError> {
        let kept = self
            .definitions
            .contains_key(fingerprint.as_bytes())
            .map_err(sled_failed(format_args!("read definition {fingerprint}")))?;
        if !kept {
            self.definitions
                .insert(fingerprint.as_bytes(), block.as_bytes())
                .map_err(sled_failed(format_args!("keep definition {fingerprint}")))?;
        }
        Ok(())
    }

    /// The YAML block of the job definition `fingerprint`, if a result of it was committed.
    pub fn definition_text(&self, fingerprint: &str) -> Result<Option<String>, StoreError> {
        let raw = self
            .definitions
            .get(fingerprint.as_bytes())
            .map_err(sled_failed(format_args!("read definition {fingerprint}")))?;
        Ok(raw.map(|raw| String::from_utf8_lossy(&raw).into_owned()))
    }

    /// Stores the result of the run's current attempt and moves the run to Succeeded
    /// (fingerprint, finished_at, commits + 1), replacing any previous result of the run. The
    /// run must be Running (on `result.attempt`, when given): anything else means another
    /// writer got there first, and the run and its previous result are left as they were.
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
            definition: result.definition,
            job_definition: result.job_definition.as_ref().map(|(fp, _)| fp.clone()),
        };
        if let Some((fingerprint, block)) = &result.job_definition {
            self.put_definition(fingerprint, block)?;
        }
        let meta_json = encode_json(tree::RESULT_META, key, &meta)?;
        let seen = match result.seen {
            Some(seen) => seen,
            None => self.seen_run(key)?,
        };
        let current = seen
            .record()
            .ok_or_else(|| StoreError::RunNotFound { key: key.clone() })?;
        let attempt = committable_attempt(key, current, result.attempt)?;
        // The result the record pointed to when the swap below succeeded: only that one may
        // be removed after it (the snapshot may be stale, and the swap then reads afresh).
        let previous = Cell::new((current.ever_committed(), current.result_attempt));

        // The result under its attempt, meta last: a stored meta marks a complete result.
        let stored_at = result_key(&key_bytes, Some(attempt));
        let inline = result.frame_ipc.len() <= INLINE_FRAME_BYTES;
        let write = || -> Result<(), sled::Error> {
            if !inline {
                self.result_frame
                    .insert(stored_at.as_slice(), result.frame_ipc.as_slice())?;
            }
            if let Some(state) = result.state_ipc {
                self.result_state.insert(stored_at.as_slice(), state)?;
            }
            let inline_frame = inline.then_some(result.frame_ipc.as_slice());
            self.result_meta
                .insert(stored_at.as_slice(), meta_value(meta_json, inline_frame))?;
            Ok(())
        };
        write().map_err(Store::sled_error("write result of run", key))?;

        let fingerprint = meta.fingerprint.clone();
        let flipped = self.update_run_seen(key, Some(seen), |old| {
            let old = old.ok_or_else(|| StoreError::RunNotFound { key: key.clone() })?;
            committable_attempt(key, &old, Some(attempt))?;
            previous.set((old.ever_committed(), old.result_attempt));
            Ok(committed(old, &fingerprint, now, attempt, &result.checks))
        });
        match flipped {
            Ok(swapped) => {
                // Only now may the previous result go: readers follow the record. A run that
                // never committed has one only if an older Floe stored it under the bare key,
                // which its meta tells in one read instead of three.
                let (ever_committed, previous_attempt) = previous.get();
                let had_result = ever_committed
                    || self
                        .result_meta
                        .contains_key(&key_bytes)
                        .map_err(Store::sled_error("read result meta of", key))?;
                if had_result {
                    self.remove_result(key, &key_bytes, previous_attempt)?;
                }
                let record = swapped.new;
                tracing::debug!(run = %key, rows = meta.rows, bytes = meta.bytes, "result committed");
                Ok(record)
            }
            Err(e) => {
                self.remove_result(key, &key_bytes, Some(attempt))?;
                Err(e)
            }
        }
    }

    /// Finishes a commit a crash interrupted: a Running run whose current attempt's result is
    /// stored completely is moved to Succeeded as `commit_success` would have. Returns the
    /// record when it did, `None` when there was nothing to finish.
    pub(super) fn finish_interrupted_commit(
        &self,
        key: &RunKey,
        record: &RunRecord,
    ) -> Result<Option<RunRecord>, StoreError> {
        let key_bytes = key.encode()?;
        let attempt = record.attempts;
        let Some(raw) = self
            .result_meta
            .get(result_key(&key_bytes, Some(attempt)))
            .map_err(Store::sled_error("read result meta of", key))?
        else {
            return Ok(None);
        };
        let (meta, _) = decode_meta_value(key, &raw)?;
        let finished = self.update_run(key, |old| {
            let old = old.ok_or_else(|| StoreError::RunNotFound { key: key.clone() })?;
            committable_attempt(key, &old, Some(attempt))?;
            // The checks of an attempt a crash cut short were not stored: none to keep.
            Ok(committed(
                old,
                &meta.fingerprint,
                meta.created_at,
                attempt,
                &[],
            ))
        });
        match finished {
            Ok(done) => {
                self.remove_result(key, &key_bytes, record.result_attempt)?;
                Ok(Some(done))
            }
            // The run moved on since the scan: its own outcome stands.
            Err(StoreError::InvalidTransition { .. } | StoreError::StaleAttempt { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes the entries of one stored result (meta first, so a half-deleted result never
    /// looks complete). Absent entries are looked up first: removing a missing key would still
    /// write to sled's log.
    fn remove_result(
        &self,
        key: &RunKey,
        key_bytes: &[u8],
        attempt: Option<u32>,
    ) -> Result<(), StoreError> {
        let stored_at = result_key(key_bytes, attempt);
        let remove = || -> Result<(), sled::Error> {
            for tree in [&self.result_meta, &self.result_frame, &self.result_state] {
                if tree.contains_key(&stored_at)? {
                    tree.remove(&stored_at)?;
                }
            }
            Ok(())
        };
        remove().map_err(Store::sled_error("remove old result of run", key))
    }
}

#[cfg(test)]
pub(super) mod testing {
    //! What the result tests share.

    use chrono::{DateTime, TimeZone, Utc};

    use super::super::{NewResult, ResultMeta, RunKey, Store};

    pub(in crate::store) fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
    }

    pub(in crate::store) fn key() -> RunKey {
        RunKey::new("shop", "orders_hourly", t0())
    }

    pub(in crate::store) fn new_result(fp: &str, frame: &[u8], state: Option<&[u8]>) -> NewResult {
        NewResult {
            checks: Vec::new(),
            job_definition: None,
            definition: None,
            fingerprint: fp.to_owned(),
            rows: 3,
            frame_ipc: frame.to_vec(),
            state_ipc: state.map(<[u8]>::to_vec),
            attempt: None,
            seen: None,
        }
    }

    pub(in crate::store) fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        (dir, store)
    }

    /// Writes a result's frame, then its meta (fingerprint `fp`), under `at` directly, as a
    /// crashed commit or an older Floe left it.
    pub(in crate::store) fn write_raw_result(store: &Store, at: &[u8], frame: &[u8]) -> ResultMeta {
        let meta = ResultMeta {
            job_definition: None,
            fingerprint: "fp".to_owned(),
            rows: 3,
            bytes: frame.len() as u64,
            created_at: t0(),
            definition: None,
        };
        store.result_frame.insert(at, frame).unwrap();
        let json = serde_json::to_vec(&meta).unwrap();
        store.result_meta.insert(at, json).unwrap();
        meta
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{ResultStore, RunStore};
    use chrono::Duration;

    use super::testing::{key, new_result, store, t0, write_raw_result};
    use super::*;

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
            job_definition: None,
            fingerprint: "fp1".to_owned(),
            rows: 3,
            bytes: 10,
            created_at: done,
            definition: None,
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
    fn a_stale_attempt_writes_nothing_that_stays() {
        let (_dir, store) = store();
        let k = key();
        let end = t0() + Duration::hours(1);
        store.mark_running(&k, end, "fp", t0()).unwrap();
        store
            .commit_success(&k, new_result("fp", b"FIRST", None), t0())
            .unwrap();
        // Attempt 2 times out and attempt 3 starts; attempt 2's result arrives late.
        store.mark_running(&k, end, "fp", t0()).unwrap();
        store.mark_failed(&k, "timed out", t0()).unwrap();
        store.mark_running(&k, end, "fp", t0()).unwrap();
        let late = NewResult {
            checks: Vec::new(),
            job_definition: None,
            definition: None,
            attempt: Some(2),
            seen: None,
            ..new_result("fp", b"LATE", None)
        };
        let err = store.commit_success(&k, late, t0()).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::StaleAttempt {
                    attempt: 2,
                    current: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(store.result_frame(&k).unwrap().unwrap(), b"FIRST");
        // Only attempt 1's entry is stored (its small frame inline in the meta's).
        assert_eq!((store.result_meta.len(), store.result_frame.len()), (1, 0));
        let on_time = NewResult {
            checks: Vec::new(),
            job_definition: None,
            definition: None,
            attempt: Some(3),
            seen: None,
            ..new_result("fp", b"THIRD", None)
        };
        let record = store.commit_success(&k, on_time, t0()).unwrap();
        assert_eq!((record.commits, record.result_attempt), (2, Some(3)));
        assert_eq!(store.result_frame(&k).unwrap().unwrap(), b"THIRD");
        assert_eq!((store.result_meta.len(), store.result_frame.len()), (1, 0));
    }

    #[test]
    fn a_commit_stopped_between_result_and_record_is_finished_at_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let k = key();
        {
            let store = Store::open(&path).unwrap();
            store
                .mark_running(&k, t0() + Duration::hours(1), "fp", t0())
                .unwrap();
            // What `commit_success` writes before it moves the record, and no more.
            write_raw_result(&store, &result_key(&k.encode().unwrap(), Some(1)), b"FRAME");
            assert_eq!(
                store.result(&k).unwrap(),
                None,
                "not visible before the record"
            );
            store.flush().unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.requeue_interrupted(t0()).unwrap(), 0);
        let record = store.run(&k).unwrap().unwrap();
        assert_eq!(record.state, RunState::Succeeded);
        assert_eq!((record.commits, record.result_attempt), (1, Some(1)));
        assert_eq!(store.result_frame(&k).unwrap().unwrap(), b"FRAME");
    }

    #[test]
    fn small_frames_are_stored_inline_and_large_ones_in_their_own_tree() {
        let (_dir, store) = store();
        let end = t0() + Duration::hours(1);
        let small = vec![7u8; INLINE_FRAME_BYTES];
        let large = vec![9u8; INLINE_FRAME_BYTES + 1];
        for (hour, frame) in [(0, &small), (1, &large)] {
            let k = RunKey::new("shop", "orders_hourly", t0() + Duration::hours(hour));
            store.mark_running(&k, end, "fp", t0()).unwrap();
            store
                .commit_success(&k, new_result("fp", frame, Some(b"STATE")), t0())
                .unwrap();
            let read = store.result(&k).unwrap().unwrap();
            assert_eq!(read.frame_ipc, frame.as_slice());
            assert_eq!(read.state_ipc.unwrap(), b"STATE");
            assert_eq!(read.meta.fingerprint, "fp");
            assert_eq!(store.result_meta(&k).unwrap().unwrap(), read.meta);
            assert_eq!(store.result_fingerprint(&k).unwrap().as_deref(), Some("fp"));
        }
        assert_eq!((store.result_meta.len(), store.result_frame.len()), (2, 1));

        // Recomputing the large one as small replaces its frame entry with an inline one.
        let k = RunKey::new("shop", "orders_hourly", t0() + Duration::hours(1));
        store.enqueue_run(&k, end, true, t0()).unwrap();
        store.mark_running(&k, end, "fp2", t0()).unwrap();
        store
            .commit_success(&k, new_result("fp2", b"SMALL", None), t0())
            .unwrap();
        assert_eq!(store.result_frame(&k).unwrap().unwrap(), b"SMALL");
        assert_eq!((store.result_meta.len(), store.result_frame.len()), (2, 0));
    }

    #[test]
    fn a_schema_2_store_keeps_its_results_readable_and_is_marked_schema_3() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let k = key();
        {
            let store = Store::open(&path).unwrap();
            store.mark_running(&k, t0(), "fp", t0()).unwrap();
            // As schema 2 stored a result: meta and frame each in their tree, bare JSON meta.
            let at = result_key(&k.encode().unwrap(), Some(1));
            write_raw_result(&store, &at, b"FRAME");
            store
                .update_run(&k, |old| Ok(committed(old.unwrap(), "fp", t0(), 1, &[])))
                .unwrap();
            store.pretend_schema(&path, 2);
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.result_frame(&k).unwrap().unwrap(), b"FRAME");
        assert_eq!(store.result_fingerprint(&k).unwrap().as_deref(), Some("fp"));
        assert_eq!(store.recorded_schema(), 3);
    }
}
