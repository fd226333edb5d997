//! Reading a run's result: the record names the attempt whose result is current, and a read
//! follows it, again if the record moved on meanwhile, so the meta of one result never comes
//! with the frame of another (see `results` for how results are written).

use serde::Deserialize;
use sled::IVec;

use super::keys::RunKey;
use super::lifecycle::RunState;
use super::results::{ResultMeta, StoredResult, decode_meta_value, result_key};
use super::runs::RunRecord;
use super::{Store, StoreError, decode_json, tree};

/// The one field of a `RunRecord` a result read needs: decoding only it skips parsing the
/// record's timestamps, which showed at the top of the scheduler's profile.
#[derive(Deserialize)]
struct ResultPointer {
    #[serde(default)]
    result_attempt: Option<u32>,
}

impl Store {
    /// The run's record as stored, and the attempt whose result it names (`None`: no record,
    /// or a result under the bare key).
    fn result_pointer(
        &self,
        key: &RunKey,
        key_bytes: &[u8],
    ) -> Result<(Option<IVec>, Option<u32>), StoreError> {
        let raw = self
            .runs
            .get(key_bytes)
            .map_err(Store::sled_error("read run", key))?;
        let attempt = match &raw {
            Some(raw) => decode_json::<ResultPointer>(tree::RUNS, key, raw)?.result_attempt,
            None => None,
        };
        Ok((raw, attempt))
    }

    /// Reads from where the run's record says its result is, again if the record moved to a
    /// newer result meanwhile (whose commit may have deleted what was read).
    fn read_current_result<T>(
        &self,
        key: &RunKey,
        read: impl Fn(&[u8]) -> Result<T, StoreError>,
    ) -> Result<(T, Option<u32>), StoreError> {
        let key_bytes = key.encode()?;
        loop {
            let (before, attempt) = self.result_pointer(key, &key_bytes)?;
            let value = read(&result_key(&key_bytes, attempt))?;
            // An unchanged record is the common case; it needs no second decode.
            let after = self
                .runs
                .get(&key_bytes)
                .map_err(Store::sled_error("read run", key))?;
            if after == before || self.result_pointer(key, &key_bytes)?.1 == attempt {
                return Ok((value, attempt));
            }
        }
    }

    /// The meta of a run's result, without loading the frames.
    pub fn result_meta(&self, key: &RunKey) -> Result<Option<ResultMeta>, StoreError> {
        let (raw, attempt) = self.read_current_result(key, |at| {
            self.result_meta
                .get(at)
                .map_err(Store::sled_error("read result meta of", key))
        })?;
        if raw.is_none() && attempt.is_some() {
            return Err(StoreError::Inconsistent {
                key: key.clone(),
                detail: "the run names a result whose meta is not stored",
            });
        }
        raw.map(|raw| decode_meta_value(key, &raw).map(|(meta, _)| meta))
            .transpose()
    }

    /// `result_fingerprint` given the run's record as just read.
    pub fn result_fingerprint_of(
        &self,
        key: &RunKey,
        record: Option<&RunRecord>,
    ) -> Result<Option<String>, StoreError> {
        let Some(record) = record else {
            return Ok(None);
        };
        if record.state == RunState::Succeeded
            && let Some(fingerprint) = &record.fingerprint
        {
            return Ok(Some(fingerprint.clone()));
        }
        if !record.ever_committed() {
            let raw = self
                .result_meta
                .get(key.encode()?)
                .map_err(Store::sled_error("read result meta of", key))?;
            return raw
                .map(|raw| decode_meta_value(key, &raw).map(|(meta, _)| meta.fingerprint))
                .transpose();
        }
        Ok(self.result_meta(key)?.map(|meta| meta.fingerprint))
    }

    /// Meta, frame and state of the run's current result, read as one snapshot: the entries
    /// of one attempt never change, and the read is repeated if the record moved on while it
    /// ran, so the meta of one result never comes with the frame of another.
    pub fn result(&self, key: &RunKey) -> Result<Option<StoredResult>, StoreError> {
        let (read, _) = self.read_current_result(key, |at| {
            let get = |tree: &sled::Tree| {
                tree.get(at)
                    .map_err(Store::sled_error("read result of", key))
            };
            let meta = get(&self.result_meta)?
                .map(|raw| decode_meta_value(key, &raw))
                .transpose()?;
            let (meta, frame) = match meta {
                Some((meta, Some(inline))) => (Some(meta), Some(inline)),
                Some((meta, None)) => (Some(meta), get(&self.result_frame)?),
                None => (None, get(&self.result_frame)?),
            };
            Ok((meta, frame, get(&self.result_state)?))
        })?;
        match read {
            (None, None, None) => Ok(None),
            (Some(meta), Some(frame_ipc), state_ipc) => Ok(Some(StoredResult {
                meta,
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
    use crate::store::{ResultStore, RunStore};
    use chrono::Duration;

    use super::super::results::NewResult;
    use super::super::results::testing::{key, new_result, store, t0, write_raw_result};
    use super::*;

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
                checks: Vec::new(),
                job_definition: None,
                definition: None,
                rows: u64::from(generation),
                frame_ipc: fp.as_bytes().repeat(5000),
                state_ipc: state,
                fingerprint: fp,
                attempt: None,
                seen: None,
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
    fn a_result_under_the_bare_key_is_read_and_then_replaced() {
        let (_dir, store) = store();
        let k = key();
        let bare = k.encode().unwrap();
        // As an older Floe stored it: the record names no attempt.
        store
            .mark_running(&k, t0() + Duration::hours(1), "fp", t0())
            .unwrap();
        let meta = write_raw_result(&store, &bare, b"OLD");
        assert_eq!(store.result_meta(&k).unwrap(), Some(meta));
        store
            .commit_success(&k, new_result("fp2", b"NEW", None), t0())
            .unwrap();
        assert_eq!(store.result_frame(&k).unwrap().unwrap(), b"NEW");
        assert!(
            !store.result_frame.contains_key(&bare).unwrap(),
            "old entries removed"
        );
    }

    #[test]
    fn result_fingerprint_names_the_stored_result_not_the_attempt_in_flight() {
        let (_dir, store) = store();
        let k = key();
        let end = t0() + Duration::hours(1);
        assert_eq!(store.result_fingerprint(&k).unwrap(), None, "no record");
        store.enqueue_run(&k, end, false, t0()).unwrap();
        assert_eq!(store.result_fingerprint(&k).unwrap(), None, "never run");

        store.mark_running(&k, end, "fp1", t0()).unwrap();
        store
            .commit_success(&k, new_result("fp1", b"ONE", None), t0())
            .unwrap();
        assert_eq!(
            store.result_fingerprint(&k).unwrap().as_deref(),
            Some("fp1")
        );

        // A recompute in flight: the record names the new attempt's fingerprint, the stored
        // result is still the old one.
        store.enqueue_run(&k, end, true, t0()).unwrap();
        store.mark_running(&k, end, "fp2", t0()).unwrap();
        assert_eq!(
            store.result_fingerprint(&k).unwrap().as_deref(),
            Some("fp1")
        );
        store.mark_failed(&k, "boom", t0()).unwrap();
        assert_eq!(
            store.result_fingerprint(&k).unwrap().as_deref(),
            Some("fp1")
        );

        // Found fresh again: the record takes the result's fingerprint back.
        store.enqueue_run(&k, end, false, t0()).unwrap();
        let fresh = store.mark_fresh(&k, "fp1", t0()).unwrap();
        assert_eq!(fresh.fingerprint.as_deref(), Some("fp1"));
        assert_eq!(
            store.result_fingerprint(&k).unwrap().as_deref(),
            Some("fp1")
        );
    }

    #[test]
    fn result_fingerprint_finds_a_result_an_older_floe_stored_under_the_bare_key() {
        let (_dir, store) = store();
        let k = key();
        store
            .mark_running(&k, t0() + Duration::hours(1), "new", t0())
            .unwrap();
        write_raw_result(&store, &k.encode().unwrap(), b"OLD");
        assert_eq!(store.result_fingerprint(&k).unwrap().as_deref(), Some("fp"));
    }

    #[test]
    fn a_meta_followed_by_anything_but_an_inline_frame_is_a_decode_error() {
        let store = Store::open_temporary().unwrap();
        let k = key();
        store.mark_running(&k, t0(), "fp", t0()).unwrap();
        let meta = serde_json::to_vec(&ResultMeta {
            job_definition: None,
            fingerprint: "fp".to_owned(),
            rows: 1,
            bytes: 1,
            created_at: t0(),
            definition: None,
        })
        .unwrap();
        store
            .result_meta
            .insert(k.encode().unwrap(), [meta.as_slice(), b"garbage"].concat())
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
        let chain = crate::error::error_chain(&err);
        assert!(chain.contains("not an inline frame"), "{chain}");
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
