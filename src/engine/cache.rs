//! A byte-bounded in-memory cache of decoded results, keyed by run and fingerprint.
//!
//! Downstream jobs read the same upstream partitions again and again (a weekly job reads seven
//! daily results that the daily jobs just wrote), so decoded frames are kept here. The key
//! includes the fingerprint: a recomputed partition can never be served stale. Eviction drops
//! the least recently used entries once the byte budget is exceeded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use polars::prelude::DataFrame;

use crate::store::RunKey;

#[derive(Debug, Clone)]
pub struct CachedResult {
    pub frame: DataFrame,
    pub state: Option<DataFrame>,
}

impl CachedResult {
    fn size(&self) -> usize {
        self.frame.estimated_size() + self.state.as_ref().map_or(0, DataFrame::estimated_size)
    }
}

#[derive(Debug)]
pub struct ResultCache {
    budget_bytes: usize,
    // A std mutex: critical sections are a hash lookup, never held across an await.
    inner: Mutex<CacheInner>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug, Default)]
struct CacheInner {
    entries: HashMap<(RunKey, String), (CachedResult, u64)>,
    bytes: usize,
    clock: u64,
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

    pub fn get(&self, key: &RunKey, fingerprint: &str) -> Option<CachedResult> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.clock += 1;
        let now = inner.clock;
        let found = inner
            .entries
            .get_mut(&(key.clone(), fingerprint.to_owned()))
            .map(|(result, used)| {
                *used = now;
                result.clone()
            });
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn insert(&self, key: RunKey, fingerprint: String, result: CachedResult) {
        let size = result.size();
        if size > self.budget_bytes {
            return;
        }
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.clock += 1;
        let now = inner.clock;
        // Older fingerprints of the same run are dead weight once a newer one exists.
        let stale: Vec<(RunKey, String)> = inner
            .entries
            .keys()
            .filter(|(k, _)| *k == key)
            .cloned()
            .collect();
        for entry in stale {
            if let Some((old, _)) = inner.entries.remove(&entry) {
                inner.bytes -= old.size();
            }
        }
        inner.bytes += size;
        inner.entries.insert((key, fingerprint), (result, now));
        while inner.bytes > self.budget_bytes {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((old, _)) = inner.entries.remove(&oldest) {
                inner.bytes -= old.size();
            }
        }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .bytes
    }
}
