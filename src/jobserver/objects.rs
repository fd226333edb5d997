//! Named objects: DataFrames a context keeps in memory under a name, so later jobs reuse them
//! instead of rescanning (spark-jobserver's `NamedObjects` / `NamedDataFrame`).
//!
//! `get_or_create` computes an object once even when several jobs ask for it at the same time:
//! each name has a slot whose lock is held while the object is built, so the other jobs wait
//! for it instead of building it again. A failed build leaves the slot empty for the next try.
//!
//! An object's datetime columns are checked once when it is kept: those in ascending order get
//! polars' sorted flag, so a job asking for a window of the object gets a zero-copy slice
//! found by binary search (`engine::time_slice`) instead of a scan of every row.
//!
//! Every object counts its Arrow size against the context's memory budget; an object that does
//! not fit is refused with a message saying how much is free, never silently evicted, because a
//! later job that expects it would otherwise fail far from the cause.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use polars::prelude::{DataFrame, DataType};
use polars::series::IsSorted;
use serde::Serialize;

use crate::engine::arrow_size;
use crate::engine::time_slice::mark_sorted_time_columns;

/// One cached frame.
#[derive(Debug, Clone)]
pub struct NamedObject {
    pub frame: Arc<DataFrame>,
    pub bytes: u64,
    pub created_at: DateTime<Utc>,
}

/// What `GET /contexts/{name}` shows of an object.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectSummary {
    pub name: String,
    pub rows: usize,
    pub bytes: u64,
    pub columns: Vec<String>,
    /// Datetime columns in ascending order: windows on them are slices, not scans.
    #[serde(rename = "sortedTimeColumns")]
    pub sorted_time_columns: Vec<String>,
    #[serde(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
}

type Slot = Arc<Mutex<Option<NamedObject>>>;

/// The named objects of one context.
#[derive(Debug)]
pub struct NamedObjects {
    budget: u64,
    state: Mutex<ObjectsState>,
}

#[derive(Debug, Default)]
struct ObjectsState {
    slots: BTreeMap<String, Slot>,
    used: u64,
}

/// Locks recover from poisoning: a panicking job (caught by its worker) must not take the
/// context's objects down with it, and every critical section here leaves the state valid.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl NamedObjects {
    pub fn new(budget: u64) -> Self {
        NamedObjects {
            budget,
            state: Mutex::new(ObjectsState::default()),
        }
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    pub fn used(&self) -> u64 {
        lock(&self.state).used
    }

    fn slot(&self, name: &str) -> Slot {
        lock(&self.state)
            .slots
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    pub fn get(&self, name: &str) -> Option<NamedObject> {
        let slot = lock(&self.state).slots.get(name).cloned()?;
        lock(&slot).clone()
    }

    /// The object `name`, building it with `build` if it does not exist yet. Concurrent
    /// callers for the same name wait for the first one's build.
    pub fn get_or_create(
        &self,
        name: &str,
        now: DateTime<Utc>,
        build: impl FnOnce() -> Result<DataFrame, String>,
    ) -> Result<NamedObject, String> {
        let slot = self.slot(name);
        let mut value = lock(&slot);
        if let Some(existing) = value.as_ref() {
            return Ok(existing.clone());
        }
        let frame = build()?;
        let object = self.admit(name, frame, now, 0)?;
        *value = Some(object.clone());
        Ok(object)
    }

    /// Stores `frame` as `name`, replacing any previous object of that name.
    pub fn put(
        &self,
        name: &str,
        frame: DataFrame,
        now: DateTime<Utc>,
    ) -> Result<NamedObject, String> {
        let slot = self.slot(name);
        let mut value = lock(&slot);
        let replaced = value.as_ref().map_or(0, |old| old.bytes);
        let object = self.admit(name, frame, now, replaced)?;
        *value = Some(object.clone());
        Ok(object)
    }

    /// Charges the object to the budget (crediting `replaced` bytes of the object it replaces).
    fn admit(
        &self,
        name: &str,
        frame: DataFrame,
        now: DateTime<Utc>,
        replaced: u64,
    ) -> Result<NamedObject, String> {
        let frame = mark_sorted_time_columns(frame);
        let bytes = arrow_size(&frame) as u64;
        let mut state = lock(&self.state);
        let used_after = state.used - replaced + bytes;
        if used_after > self.budget {
            let free = self.budget.saturating_sub(state.used - replaced);
            return Err(format!(
                "named object `{name}` needs {bytes} bytes but only {free} of the context's \
                 memory budget of {} bytes are free; forget an object or raise `memory-budget`",
                self.budget
            ));
        }
        state.used = used_after;
        Ok(NamedObject {
            frame: Arc::new(frame),
            bytes,
            created_at: now,
        })
    }

    /// Drops the object `name`; returns whether it existed.
    pub fn forget(&self, name: &str) -> bool {
        let mut state = lock(&self.state);
        let Some(slot) = state.slots.remove(name) else {
            return false;
        };
        // A build may be holding the slot; it finishes into a slot nobody can reach, and its
        // bytes were never charged, because `admit` runs only after the build and the slot
        // was removed from the map here under the same state lock.
        let freed = slot
            .try_lock()
            .ok()
            .and_then(|v| v.as_ref().map(|o| o.bytes));
        match freed {
            Some(bytes) => {
                state.used -= bytes;
                true
            }
            None => true,
        }
    }

    /// Drops everything (the context is going away).
    pub fn clear(&self) {
        let mut state = lock(&self.state);
        state.slots.clear();
        state.used = 0;
    }

    pub fn summaries(&self) -> Vec<ObjectSummary> {
        let slots: Vec<(String, Slot)> = lock(&self.state)
            .slots
            .iter()
            .map(|(name, slot)| (name.clone(), slot.clone()))
            .collect();
        slots
            .into_iter()
            // A slot being built is skipped rather than waited for.
            .filter_map(|(name, slot)| {
                let value = slot.try_lock().ok()?;
                let object = value.as_ref()?;
                Some(ObjectSummary {
                    name,
                    rows: object.frame.height(),
                    bytes: object.bytes,
                    columns: object
                        .frame
                        .get_column_names()
                        .iter()
                        .map(|c| c.to_string())
                        .collect(),
                    sorted_time_columns: object
                        .frame
                        .columns()
                        .iter()
                        .filter(|c| {
                            matches!(c.dtype(), DataType::Datetime(..))
                                && c.is_sorted_flag() == IsSorted::Ascending
                        })
                        .map(|c| c.name().to_string())
                        .collect(),
                    created_at: object.created_at,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;
    use std::time::Duration;

    use polars::prelude::*;

    use super::*;

    fn frame(n: i64) -> DataFrame {
        df!("x" => (0..n).collect::<Vec<i64>>()).unwrap()
    }

    #[test]
    fn concurrent_get_or_create_builds_once() {
        let objects = Arc::new(NamedObjects::new(1 << 30));
        let builds = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let objects = objects.clone();
                let builds = builds.clone();
                thread::spawn(move || {
                    objects
                        .get_or_create("events", Utc::now(), || {
                            builds.fetch_add(1, Ordering::SeqCst);
                            thread::sleep(Duration::from_millis(50));
                            Ok(frame(1000))
                        })
                        .unwrap()
                        .frame
                        .height()
                })
            })
            .collect();
        for handle in handles {
            assert_eq!(handle.join().unwrap(), 1000);
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn failed_build_leaves_the_slot_empty_for_the_next_try() {
        let objects = NamedObjects::new(1 << 30);
        let err = objects
            .get_or_create("x", Utc::now(), || Err("boom".to_owned()))
            .unwrap_err();
        assert_eq!(err, "boom");
        assert!(objects.get("x").is_none());
        objects
            .get_or_create("x", Utc::now(), || Ok(frame(3)))
            .unwrap();
        assert_eq!(objects.get("x").unwrap().frame.height(), 3);
    }

    #[test]
    fn budget_is_enforced_and_credited_on_replace_and_forget() {
        let size = arrow_size(&frame(1000)) as u64;
        let objects = NamedObjects::new(size * 2);
        objects.put("a", frame(1000), Utc::now()).unwrap();
        objects.put("b", frame(1000), Utc::now()).unwrap();
        let err = objects.put("c", frame(1000), Utc::now()).unwrap_err();
        assert!(err.contains("named object `c` needs"), "{err}");
        // Replacing `a` with an equal-sized frame fits: its old bytes are credited.
        objects.put("a", frame(1000), Utc::now()).unwrap();
        assert_eq!(objects.used(), size * 2);
        assert!(objects.forget("a"));
        assert_eq!(objects.used(), size);
        objects.put("c", frame(1000), Utc::now()).unwrap();
        let names: Vec<String> = objects.summaries().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["b", "c"]);
    }
}
