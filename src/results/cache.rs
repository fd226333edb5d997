//! A byte-bounded in-memory cache of decoded results, keyed by run and fingerprint.
//!
//! Downstream jobs read the same upstream partitions again and again (a weekly job reads seven
//! daily results that the daily jobs just wrote), so decoded frames are kept here. An entry
//! carries its fingerprint: a recomputed partition can never be served stale, and a run holds
//! at most one entry (its newest result). Eviction drops the least recently used entries once
//! the byte budget is exceeded; every operation is O(log n), so a store of hundreds of
//! thousands of tiny results costs no more per insert than a handful of large ones.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use polars::prelude::DataFrame;

use crate::frames::arrow_size;
use crate::store::RunKey;

/// What an entry costs beyond its frames' buffers: the key, the fingerprint, the frame and
/// series headers and the two index slots. Counted against the budget so that many tiny
/// results cannot grow the cache without bound while their buffers alone look free.
const ENTRY_OVERHEAD_BYTES: usize = 512;

#[derive(Debug, Clone)]
pub struct CachedResult {
    pub frame: DataFrame,
    pub state: Option<DataFrame>,
}

impl CachedResult {
    fn size(&self) -> usize {
        arrow_size(&self.frame) + self.state.as_ref().map_or(0, arrow_size)
    }
}

#[derive(Debug)]
pub struct ResultCache {
    budget_bytes: usize,
    // A std mutex: critical sections are a map operation, never held across an await.
    inner: Mutex<CacheInner>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    fingerprint: String,
    result: CachedResult,
    bytes: usize,
    last_used: u64,
}

#[derive(Debug, Default)]
struct CacheInner {
    entries: HashMap<RunKey, Entry>,
    /// Recency order: `last_used` tick → run. Ticks are unique, so this is a total order.
    by_use: BTreeMap<u64, RunKey>,
    bytes: usize,
    clock: u64,
}

impl CacheInner {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn remove(&mut self, key: &RunKey) {
        if let Some(old) = self.entries.remove(key) {
            self.by_use.remove(&old.last_used);
            self.bytes -= old.bytes;
        }
    }
}

impl ResultCache {
    pub fn new(budget_bytes: usize) -> Self {
        ResultCache {
            budget_bytes,
            inner: Mutex::new(CacheInner::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get(&self, key: &RunKey, fingerprint: &str) -> Option<CachedResult> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let now = inner.tick();
        let found = match inner.entries.get_mut(key) {
            Some(entry) if entry.fingerprint == fingerprint => {
                let previous = std::mem::replace(&mut entry.last_used, now);
                if let Some(run) = inner.by_use.remove(&previous) {
                    inner.by_use.insert(now, run);
                }
                Some(entry.result.clone())
            }
            _ => None,
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Keeps `result` as the run's newest result, replacing any older fingerprint of it.
    pub fn insert(&self, key: RunKey, fingerprint: String, result: CachedResult) {
        let bytes = result.size() + ENTRY_OVERHEAD_BYTES;
        let mut inner = self.lock();
        // Older fingerprints of the same run are dead weight once a newer one exists.
        inner.remove(&key);
        if bytes > self.budget_bytes {
            return;
        }
        let now = inner.tick();
        inner.bytes += bytes;
        inner.by_use.insert(now, key.clone());
        inner.entries.insert(
            key,
            Entry {
                fingerprint,
                result,
                bytes,
                last_used: now,
            },
        );
        while inner.bytes > self.budget_bytes {
            let Some((_, oldest)) = inner.by_use.pop_first() else {
                break;
            };
            if let Some(old) = inner.entries.remove(&oldest) {
                inner.bytes -= old.bytes;
            }
        }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Bytes held, per-entry overhead included.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Number of results held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone, Utc};
    use polars::prelude::*;

    use super::*;

    fn key(hour: i64) -> RunKey {
        let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        RunKey::new("p", "j", start + TimeDelta::hours(hour))
    }

    fn result(rows: i64) -> CachedResult {
        let frame = df!("x" => (0..rows).collect::<Vec<i64>>()).unwrap();
        CachedResult { frame, state: None }
    }

    #[test]
    fn serves_only_the_matching_fingerprint_and_replaces_older_ones() {
        let cache = ResultCache::new(1 << 20);
        cache.insert(key(0), "a".into(), result(10));
        assert!(cache.get(&key(0), "a").is_some());
        assert!(cache.get(&key(0), "b").is_none());
        cache.insert(key(0), "b".into(), result(20));
        assert!(cache.get(&key(0), "a").is_none());
        assert_eq!(cache.get(&key(0), "b").unwrap().frame.height(), 20);
        assert_eq!(cache.len(), 1);
        assert_eq!((cache.hits(), cache.misses()), (2, 2));
    }

    #[test]
    fn evicts_the_least_recently_used_and_keeps_the_byte_count_exact() {
        let one = result(1000).size() + ENTRY_OVERHEAD_BYTES;
        let cache = ResultCache::new(3 * one);
        for hour in 0..3 {
            cache.insert(key(hour), "f".into(), result(1000));
        }
        assert!(cache.get(&key(0), "f").is_some()); // 0 is now the most recent
        cache.insert(key(3), "f".into(), result(1000));
        assert!(
            cache.get(&key(1), "f").is_none(),
            "1 was least recently used"
        );
        for hour in [0, 2, 3] {
            assert!(cache.get(&key(hour), "f").is_some(), "{hour} kept");
        }
        assert_eq!(cache.bytes(), 3 * one);
        // A result larger than the whole budget is not kept, and drops its run's older one.
        cache.insert(key(0), "g".into(), result(1_000_000));
        assert!(cache.get(&key(0), "f").is_none());
        assert_eq!(cache.bytes(), 2 * one);
    }

    #[test]
    fn tiny_results_are_bounded_by_their_overhead() {
        let cache = ResultCache::new(100 * ENTRY_OVERHEAD_BYTES);
        for hour in 0..10_000 {
            cache.insert(key(hour), "f".into(), result(0));
        }
        assert!(cache.len() <= 100, "{} entries", cache.len());
        assert!(cache.bytes() <= 100 * ENTRY_OVERHEAD_BYTES);
    }
}
