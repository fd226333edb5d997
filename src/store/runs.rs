//! The `runs` tree: one `RunRecord` per run, how runs are read and listed, and the one way a
//! record is written: a read-modify-write loop ending in a compare-and-swap of the record's
//! bytes (`update_run`), so two writers racing on one run cannot both win. What each write may
//! do is decided by the state machine in `lifecycle`; the writers themselves are in
//! `run_transitions`, the `active_runs` index and start-up recovery in `active_runs`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::keys::{self, RunKey, escape};
use super::lifecycle::RunState;
use super::{Store, StoreError, decode_json, encode_json, tree};

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
    /// The outcomes of the job's data checks on the latest attempt that computed a result
    /// (a failed `error` check fails the run, and is named in `error`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckOutcome>,
}

/// The outcome of one data check on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOutcome {
    /// The check's name (its `name:`, else its kind and columns).
    pub name: String,
    /// `row_count`, `not_null`, `unique`, `accepted_values`, `expression`, `freshness` or
    /// `anomaly`.
    pub kind: String,
    /// `error` or `warn`.
    pub severity: String,
    pub passed: bool,
    /// Why it failed, or a note on a pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
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
            checks: Vec::new(),
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
    pub(super) fn seen(&self) -> SeenRun {
        SeenRun {
            raw: Some(self.raw.clone()),
            record: Some(self.new.clone()),
        }
    }
}

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

    /// Decodes a scan of the `runs` tree, reporting the first bad entry.
    pub(super) fn collect_runs(
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
pub(super) mod testing {
    //! What the run tests share: a fixed instant, keys in one pipeline, a store on disk.

    use chrono::{DateTime, TimeZone, Utc};

    use super::super::{RunKey, Store};

    pub(in crate::store) fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
    }

    pub(in crate::store) fn key(job: &str, start: DateTime<Utc>) -> RunKey {
        RunKey::new("shop", job, start)
    }

    /// A store in a temporary directory (kept alive by the returned guard).
    pub(in crate::store) fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        (dir, store)
    }

    /// The jobs of the runs the `active_runs` index names, in index order.
    pub(in crate::store) fn indexed(store: &Store) -> Vec<String> {
        store
            .active_runs
            .iter()
            .keys()
            .map(|k| {
                let index_key = k.unwrap();
                RunKey::decode(super::super::active_runs::split_index_key(&index_key).0)
                    .unwrap()
                    .job
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::store::RunStore;
    use chrono::Duration;

    use super::testing::{key, store, t0};
    use super::*;

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
