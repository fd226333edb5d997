//! The `active_runs` index and start-up recovery. The index names every run whose record is
//! active (`RunRecord::is_active`), so a restart reads the few runs in flight instead of the
//! whole history; `update_run` keeps it in step with each write. Recovery turns runs a crash
//! left Running back into Pending, or finishes a commit the crash cut short.

use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};

use super::keys::{RunKey, escape};
use super::lifecycle::{RunChange, RunState};
use super::run_transitions::kept;
use super::runs::RunRecord;
use super::{Store, StoreError, tree};

/// An entry of the `active_runs` index: the run's key, then the generation of the activation
/// that wrote it.
fn active_index_key(run_key: &[u8], generation: u64) -> Vec<u8> {
    [run_key, &generation.to_be_bytes()].concat()
}

/// The run key and generation of an `active_runs` entry (`None` if it is too short to hold one).
pub(super) fn split_index_key(index_key: &[u8]) -> (&[u8], Option<u64>) {
    match index_key.len().checked_sub(8) {
        Some(at) => {
            let (run_key, generation) = index_key.split_at(at);
            (run_key, generation.try_into().ok().map(u64::from_be_bytes))
        }
        None => (index_key, None),
    }
}

// `state` is a record's first field, and serde_json writes fields in declaration order, so a
// scan can tell a record's state from its first bytes. A test pins this.
const STATE_FIELD: &[u8] = br#"{"state":""#;
const PENDING_PREFIX: &[u8] = br#"{"state":"pending""#;
const RUNNING_PREFIX: &[u8] = br#"{"state":"running""#;
const FAILED_PREFIX: &[u8] = br#"{"state":"failed""#;
const UPSTREAM_FAILED_PREFIX: &[u8] = br#"{"state":"upstream_failed""#;
/// The states [`RunRecord::is_active`] may hold for.
const ACTIVE_PREFIXES: &[&[u8]] = &[
    PENDING_PREFIX,
    RUNNING_PREFIX,
    FAILED_PREFIX,
    UPSTREAM_FAILED_PREFIX,
];

/// Error text left on a run that `requeue_interrupted` put back in the queue.
const INTERRUPTED: &str = "interrupted: floe stopped while this run was running";

impl Store {
    /// Runs left Running by a crash become Pending again (called at
    /// start-up, before any worker starts); returns how many. A run whose
    /// result was stored but not yet recorded is moved to Succeeded instead.
    pub fn requeue_interrupted(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut running = self.runs_whose_json_starts_with(&[RUNNING_PREFIX])?;
        self.requeue_running(&mut running, now)
    }

    /// Start-up in one scan of the `runs` tree: [`Store::requeue_interrupted`], then every run
    /// the scheduler still has work for ([`Store::active_runs`]). Returns how many runs were
    /// requeued, and the active runs.
    pub fn recover_runs(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(usize, Vec<(RunKey, RunRecord)>), StoreError> {
        let mut runs = self.indexed_active_runs()?;
        let requeued = self.requeue_running(&mut runs, now)?;
        runs.retain(|(_, record)| record.is_active());
        Ok((requeued, runs))
    }

    /// The runs the `active_runs` index names whose records are active, in key order.
    /// Entries whose record is no longer active (a transition that was cut short before it
    /// could drop its entry) are removed on the way.
    fn indexed_active_runs(&self) -> Result<Vec<(RunKey, RunRecord)>, StoreError> {
        let mut active = Vec::new();
        for entry in self.active_runs.iter().keys() {
            let index_key = entry.map_err(|source| StoreError::Sled {
                action: format!("scan active runs in {}", self.describe()),
                source,
            })?;
            let (raw_key, generation) = split_index_key(&index_key);
            let key = RunKey::decode(raw_key).map_err(|e| StoreError::Decode {
                tree: tree::ACTIVE_RUNS,
                key: escape(&index_key),
                source: Box::new(e),
            })?;
            let current = match self.run(&key)? {
                // A record written before it carried its generation (a store migrated from
                // schema 1) matches any entry.
                Some(record)
                    if record.is_active()
                        && record
                            .index_generation
                            .is_none_or(|g| Some(g) == generation) =>
                {
                    Some(record)
                }
                _ => None,
            };
            match current {
                Some(record) => {
                    if active
                        .last()
                        .is_none_or(|(last, _): &(RunKey, RunRecord)| *last != key)
                    {
                        active.push((key, record));
                    }
                }
                // Stale (a transition cut short, or an older activation): its key names this
                // activation alone, so removing it cannot touch a live entry.
                None => {
                    self.active_runs
                        .remove(&index_key)
                        .map_err(Store::sled_error("unindex run", &key))?;
                }
            }
        }
        Ok(active)
    }

    /// Builds the `active_runs` index from the whole `runs` tree (opening a store written
    /// before the index existed); returns how many runs it indexed.
    pub(super) fn rebuild_active_index(&self) -> Result<usize, StoreError> {
        let active = self.runs_whose_json_starts_with(ACTIVE_PREFIXES)?;
        let mut indexed = 0;
        for (key, record) in active {
            if !record.is_active() {
                continue;
            }
            let key_bytes = key.encode()?;
            match record.index_generation {
                // The generation its record names, so the entry matches it.
                Some(generation) => self
                    .active_runs
                    .insert(active_index_key(&key_bytes, generation), &[])
                    .map(drop)
                    .map_err(Store::sled_error("index run", &key))?,
                // Records without one (schema 1) match any entry of theirs.
                None => drop(self.index_active(&key_bytes, &key)?),
            }
            indexed += 1;
        }
        Ok(indexed)
    }

    /// Requeues (or finishes the commit of) the Running runs among `runs`, updating their
    /// records in place; returns how many were requeued.
    fn requeue_running(
        &self,
        runs: &mut [(RunKey, RunRecord)],
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let (mut requeued, mut finished) = (0, 0);
        for (key, record) in runs.iter_mut() {
            if record.state != RunState::Running {
                continue;
            }
            // Stopped after storing its result but before recording the success: finish it.
            if let Some(done) = self.finish_interrupted_commit(key, record)? {
                *record = done;
                finished += 1;
                continue;
            }
            // Re-checked in the compare-and-swap: a worker may have finished the run since
            // the scan, and that outcome must win.
            let outcome = self.update_run(key, |old| {
                match (
                    RunChange::RequeueInterrupted.decide(key, old.as_ref())?,
                    old,
                ) {
                    (Some(to), Some(old)) => Ok(RunRecord {
                        state: to,
                        queued_at: Some(now),
                        error: Some(INTERRUPTED.to_owned()),
                        ..old
                    }),
                    (_, old) => kept(key, old),
                }
            });
            match outcome {
                Ok(updated) => {
                    if updated.state == RunState::Pending {
                        requeued += 1;
                    }
                    *record = updated;
                }
                // Deleted since the scan: nothing to requeue.
                Err(StoreError::RunNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if requeued > 0 {
            tracing::warn!(
                count = requeued,
                "requeued runs interrupted by a previous stop"
            );
        }
        if finished > 0 {
            tracing::info!(
                count = finished,
                "finished commits interrupted by a previous stop"
            );
        }
        Ok(requeued)
    }

    /// Every run the scheduler still has work for ([`RunRecord::is_active`]), in key order,
    /// read through the `active_runs` index: a restart reads the few runs in flight, not the
    /// hundreds of thousands of finished ones.
    pub fn active_runs(&self) -> Result<Vec<(RunKey, RunRecord)>, StoreError> {
        self.indexed_active_runs()
    }

    /// The runs whose stored JSON starts with one of `prefixes`, decoded; the others are
    /// skipped without decoding. Records that are not JSON objects opening with `state`
    /// (corrupt ones) are decoded too, so they surface as errors instead of vanishing.
    fn runs_whose_json_starts_with(
        &self,
        prefixes: &[&[u8]],
    ) -> Result<Vec<(RunKey, RunRecord)>, StoreError> {
        let candidates = self.runs.iter().filter(|entry| {
            entry.as_ref().map_or(true, |(_, raw)| {
                !raw.starts_with(STATE_FIELD) || prefixes.iter().any(|p| raw.starts_with(p))
            })
        });
        self.collect_runs(candidates)
    }

    /// Adds an entry for the run (its key's bytes) to the `active_runs` index under a fresh
    /// generation, which it returns.
    pub(super) fn index_active(&self, key_bytes: &[u8], key: &RunKey) -> Result<u64, StoreError> {
        let generation = self.index_generation.fetch_add(1, Ordering::Relaxed);
        self.active_runs
            .insert(active_index_key(key_bytes, generation), &[])
            .map_err(Store::sled_error("index run", key))?;
        Ok(generation)
    }

    /// Removes the run's index entry of `generation`.
    pub(super) fn unindex(
        &self,
        key_bytes: &[u8],
        generation: u64,
        key: &RunKey,
    ) -> Result<(), StoreError> {
        self.active_runs
            .remove(active_index_key(key_bytes, generation))
            .map(drop)
            .map_err(Store::sled_error("unindex run", key))
    }
}

#[cfg(test)]
mod tests {
    use crate::store::RunStore;
    use chrono::Duration;

    use super::super::runs::testing::{indexed, key, store, t0};
    use super::*;

    #[test]
    fn a_records_state_is_readable_from_its_first_bytes() {
        let (_dir, store) = store();
        let states = [
            (RunState::Pending, Some(PENDING_PREFIX)),
            (RunState::Running, Some(RUNNING_PREFIX)),
            (RunState::Failed, Some(FAILED_PREFIX)),
            (RunState::UpstreamFailed, Some(UPSTREAM_FAILED_PREFIX)),
            (RunState::Succeeded, None),
            (RunState::Cancelled, None),
        ];
        for (state, prefix) in states {
            let record = RunRecord {
                state,
                ..RunRecord::new_pending(t0(), t0())
            };
            let json = serde_json::to_vec(&record).unwrap();
            assert!(json.starts_with(STATE_FIELD), "{state}");
            if let Some(prefix) = prefix {
                assert!(json.starts_with(prefix), "{state}");
            }
            let others = [
                PENDING_PREFIX,
                RUNNING_PREFIX,
                FAILED_PREFIX,
                UPSTREAM_FAILED_PREFIX,
            ];
            let matching = others.iter().filter(|p| json.starts_with(p)).count();
            assert_eq!(matching, usize::from(prefix.is_some()), "{state}");
        }
        // The scan sees the active states and skips the finished ones.
        for (i, state) in [RunState::Pending, RunState::Succeeded, RunState::Cancelled]
            .into_iter()
            .enumerate()
        {
            let k = key("j", t0() + Duration::hours(i as i64));
            store.enqueue_run(&k, t0(), false, t0()).unwrap();
            if state == RunState::Succeeded {
                store.mark_fresh(&k, "f", t0()).unwrap();
            } else if state == RunState::Cancelled {
                store.mark_cancelled(&k, "stop", t0()).unwrap();
            }
        }
        let active = store.active_runs().unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].1.state, RunState::Pending);
    }

    #[test]
    fn recover_runs_requeues_and_lists_the_active_runs_in_one_scan() {
        let (_dir, store) = store();
        let end = t0() + Duration::hours(1);
        for job in ["a", "b", "c"] {
            store
                .mark_running(&key(job, t0()), end, "fp", t0())
                .unwrap();
        }
        store
            .mark_failed(&key("c", t0()), "for good", t0())
            .unwrap();
        store
            .enqueue_run(&key("d", t0()), end, false, t0())
            .unwrap();
        let later = t0() + Duration::hours(2);
        let (requeued, active) = store.recover_runs(later).unwrap();
        assert_eq!(requeued, 2);
        let listed: Vec<(&str, RunState)> = active
            .iter()
            .map(|(k, r)| (k.job.as_str(), r.state))
            .collect();
        assert_eq!(
            listed,
            [
                ("a", RunState::Pending),
                ("b", RunState::Pending),
                ("d", RunState::Pending)
            ]
        );
        assert_eq!(
            active[0].1.queued_at,
            Some(later),
            "the list holds the updated records"
        );
    }

    #[test]
    fn the_active_index_follows_every_transition() {
        let (_dir, store) = store();
        let end = t0() + Duration::hours(1);
        store
            .enqueue_run(&key("queued", t0()), end, false, t0())
            .unwrap();
        store
            .mark_running(&key("done", t0()), end, "fp", t0())
            .unwrap();
        store
            .mark_running(&key("retrying", t0()), end, "fp", t0())
            .unwrap();
        store
            .mark_running(&key("failed", t0()), end, "fp", t0())
            .unwrap();
        store
            .enqueue_run(&key("cancelled", t0()), end, false, t0())
            .unwrap();
        assert_eq!(
            indexed(&store),
            ["cancelled", "done", "failed", "queued", "retrying"]
        );
        store
            .commit_success(
                &key("done", t0()),
                super::super::NewResult {
                    checks: Vec::new(),
                    job_definition: None,
                    definition: None,
                    fingerprint: "fp".to_owned(),
                    rows: 1,
                    frame_ipc: b"frame".to_vec(),
                    state_ipc: None,
                    attempt: Some(1),
                    seen: None,
                },
                t0(),
            )
            .unwrap();
        store
            .mark_failed_until(&key("retrying", t0()), "later", t0(), Some(end))
            .unwrap();
        store
            .mark_failed(&key("failed", t0()), "for good", t0())
            .unwrap();
        store
            .mark_cancelled(&key("cancelled", t0()), "backfill cancelled", t0())
            .unwrap();
        // Pending and Failed-with-a-retry stay; done, failed for good and cancelled leave.
        assert_eq!(indexed(&store), ["queued", "retrying"]);
        let active: Vec<String> = store
            .active_runs()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k.job)
            .collect();
        assert_eq!(active, ["queued", "retrying"]);
    }

    #[test]
    fn stale_index_entries_are_dropped_and_removals_touch_only_their_own() {
        let (_dir, store) = store();
        let end = t0() + Duration::hours(1);
        let run = key("a", t0());
        store.mark_running(&run, end, "fp", t0()).unwrap();
        store.mark_failed(&run, "for good", t0()).unwrap();
        assert!(indexed(&store).is_empty());
        // A crash between indexing and the record's swap leaves an entry for an inactive run.
        store.index_active(&run.encode().unwrap(), &run).unwrap();
        assert!(store.active_runs().unwrap().is_empty());
        assert!(indexed(&store).is_empty(), "the stale entry is dropped");

        // Finishing an activation removes its own entry, not one a later activation made.
        store.enqueue_run(&run, end, false, t0()).unwrap();
        let earlier = store.run(&run).unwrap().unwrap().index_generation.unwrap();
        let later = store.index_active(&run.encode().unwrap(), &run).unwrap();
        assert_ne!(earlier, later);
        store
            .unindex(&run.encode().unwrap(), earlier, &run)
            .unwrap();
        let left: Vec<Option<u64>> = store
            .active_runs
            .iter()
            .keys()
            .map(|k| split_index_key(&k.unwrap()).1)
            .collect();
        assert_eq!(left, [Some(later)]);
        assert_eq!(indexed(&store), ["a"]);
    }

    #[test]
    fn opening_a_schema_1_store_indexes_its_active_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let end = t0() + Duration::hours(1);
        {
            let store = Store::open(&path).unwrap();
            store
                .enqueue_run(&key("pending", t0()), end, false, t0())
                .unwrap();
            store
                .mark_running(&key("running", t0()), end, "fp", t0())
                .unwrap();
            store
                .mark_running(&key("failed", t0()), end, "fp", t0())
                .unwrap();
            store
                .mark_failed(&key("failed", t0()), "for good", t0())
                .unwrap();
            // What a store written by schema 1 looks like: no index.
            store.active_runs.clear().unwrap();
            store.pretend_schema(&path, 1);
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(indexed(&store), ["pending", "running"]);
        let (requeued, active) = store.recover_runs(t0()).unwrap();
        assert_eq!(requeued, 1);
        assert_eq!(active.len(), 2);
        assert_eq!(store.recorded_schema(), super::super::SCHEMA_VERSION);
    }

    #[test]
    fn requeue_interrupted_only_touches_running_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let end = t0() + Duration::hours(1);
        let later = t0() + Duration::hours(5);
        {
            let store = Store::open(&path).unwrap();
            store
                .mark_running(&key("a", t0()), end, "fp", t0())
                .unwrap();
            store
                .mark_running(&key("b", t0()), end, "fp", t0())
                .unwrap();
            store
                .mark_running(&key("c", t0()), end, "fp", t0())
                .unwrap();
            store.mark_failed(&key("c", t0()), "bad", t0()).unwrap();
            store.flush().unwrap();
        }
        // As after a crash: reopen, then requeue.
        let store = Store::open(&path).unwrap();
        let failed_before = store.run(&key("c", t0())).unwrap();
        assert_eq!(store.requeue_interrupted(later).unwrap(), 2);
        for job in ["a", "b"] {
            let r = store.run(&key(job, t0())).unwrap().unwrap();
            assert_eq!(r.state, RunState::Pending);
            assert_eq!(r.queued_at, Some(later));
            assert_eq!(r.attempts, 1);
            assert_eq!(r.error.as_deref(), Some(INTERRUPTED));
        }
        assert_eq!(store.run(&key("c", t0())).unwrap(), failed_before);
        assert_eq!(store.requeue_interrupted(later).unwrap(), 0);

        // A requeued run can start again.
        let r = store
            .mark_running(&key("a", t0()), end, "fp", later)
            .unwrap();
        assert_eq!((r.state, r.attempts, r.error), (RunState::Running, 2, None));
        // Pending may also fail without starting (e.g. its upstream failed).
        let r = store
            .mark_failed(&key("b", t0()), "upstream failed", later)
            .unwrap();
        assert_eq!(r.state, RunState::Failed);
    }
}
