//! Named objects: DataFrames a context keeps in memory under a name, so later jobs reuse them
//! instead of rescanning (spark-jobserver's `NamedObjects` / `NamedDataFrame`).
//!
//! `get_or_create` computes an object once even when several jobs ask for it at the same time:
//! each name has a slot whose lock is held while the object is built, so the other jobs wait
//! for it instead of building it again. A failed build leaves the slot empty for the next try.
//!
//! An object's datetime columns are checked once when it is kept: those in ascending order get
//! polars' sorted flag, so a job asking for a window of the object gets a zero-copy slice
//! found by binary search (`frames::time_slice`) instead of a scan of every row.
//!
//! An object built by `get_or_create` remembers its definition (the app and version, the source
//! or results, the range): a later `get_or_create` of the same name with another definition is
//! refused, naming both, instead of handing back rows that are not the ones it asked for (an
//! input naming app `evil` and one day must not get app `shop`'s week). `put` (a job's
//! `publish`) replaces whatever the name held, as it always did.
//!
//! Every object counts its Arrow size against the context's memory budget; an object that does
//! not fit is refused with a message saying how much is free, never silently evicted, because a
//! later job that expects it would otherwise fail far from the cause. Each object also keeps
//! the selections jobs made of it (`frames::selection`), charged to the same budget; those are
//! a cache, dropped to make room for an object before it is refused.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use polars::prelude::{DataFrame, DataType, Expr, IntoLazy, LazyFrame};
use polars::series::IsSorted;
use serde::{Deserialize, Serialize};

use crate::frames::arrow_size;
use crate::frames::selection::{MemoryBudget, Selections, decode_all_but};
use crate::frames::time_slice::{mark_sorted_time_columns, window_rows};
use crate::job::CachedRows;
use crate::partition::Window;

/// One cached frame.
#[derive(Debug, Clone)]
pub struct NamedObject {
    pub frame: Arc<DataFrame>,
    pub bytes: u64,
    pub created_at: DateTime<Utc>,
    /// Rows of `frame` that jobs' filters selected, kept for the next job asking the same.
    pub selections: Arc<Selections>,
    /// What made it: a later get-or-create must ask for the same definition.
    pub origin: ObjectOrigin,
}

/// What a get-or-create input builds an object from: `{ object, source | results, app, from,
/// to }`. Two inputs with equal definitions want the same rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDefinition {
    pub app: String,
    /// The app's version: another upload may read other files or compute other results.
    pub app_version: u32,
    /// `source` or `results`.
    pub kind: &'static str,
    /// The source's or the job's name.
    pub name: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl fmt::Display for ObjectDefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} `{}` of app {} (version {}) from {} to {}",
            self.kind,
            self.name,
            self.app,
            self.app_version,
            self.from.to_rfc3339(),
            self.to.to_rfc3339()
        )
    }
}

/// How a named object came to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectOrigin {
    /// Built by a get-or-create input.
    Built(ObjectDefinition),
    /// Kept by a job's `publish`.
    Published { job_id: String },
}

impl fmt::Display for ObjectOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectOrigin::Built(definition) => write!(f, "built from {definition}"),
            ObjectOrigin::Published { job_id } => write!(f, "published by job {job_id}"),
        }
    }
}

/// Why `get_or_create` gave no object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// The name holds an object of another definition.
    #[error("{0}")]
    Conflict(String),
    /// Building it failed: the cause's message.
    #[error("{0}")]
    Failed(String),
    /// It does not fit the context's memory budget.
    #[error(
        "named object `{name}` needs {bytes} bytes but only {free} of the context's memory \
         budget of {limit} bytes are free; forget an object or raise `memory-budget`"
    )]
    OverBudget {
        name: String,
        bytes: u64,
        free: u64,
        limit: u64,
    },
}

/// What `GET /contexts/{name}` shows of an object.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Filtered rows of the object kept for later jobs, and their Arrow bytes (charged to the
    /// context's memory budget besides `bytes`).
    pub selections: usize,
    #[serde(rename = "selectionBytes")]
    pub selection_bytes: u64,
}

/// A job's input read from a named object: its selections answer the job's filter.
#[derive(Debug)]
pub struct ObjectRows {
    pub object: NamedObject,
    /// The time column and window the job reads, read as wall-clock time in the zone when
    /// the column is naive; `None` for the whole object.
    pub window: Option<(String, Window, Tz)>,
}

impl CachedRows for ObjectRows {
    fn rows_matching(
        &self,
        filter: &Expr,
        columns: &[String],
        group_keys: &[String],
    ) -> Option<LazyFrame> {
        let mut columns = columns.to_vec();
        if let Some((time, ..)) = &self.window
            && !columns.contains(time)
        {
            columns.push(time.clone());
        }
        let rows = self
            .object
            .selections
            .rows(&self.object.frame, filter, &columns)?;
        let schema = rows.schema().clone();
        let rows = match &self.window {
            None => rows.lazy(),
            Some((time, window, timezone)) => window_rows(&rows, time, window, *timezone).ok()?,
        };
        Some(decode_all_but(rows, &schema, group_keys))
    }
}

type Slot = Arc<Mutex<Option<NamedObject>>>;

/// The named objects of one context.
#[derive(Debug)]
pub struct NamedObjects {
    budget: Arc<MemoryBudget>,
    state: Mutex<ObjectsState>,
}

#[derive(Debug, Default)]
struct ObjectsState {
    slots: BTreeMap<String, Slot>,
}

/// Locks recover from poisoning: a panicking job (caught by its worker) must not take the
/// context's objects down with it, and every critical section here leaves the state valid.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl NamedObjects {
    pub fn new(budget: u64) -> Self {
        NamedObjects {
            budget: Arc::new(MemoryBudget::new(budget)),
            state: Mutex::new(ObjectsState::default()),
        }
    }

    pub fn budget(&self) -> u64 {
        self.budget.limit()
    }

    /// Bytes held: the objects and their selections.
    pub fn used(&self) -> u64 {
        self.budget.used()
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

    /// The object `name` built from `definition`, building it with `build` if it does not
    /// exist yet. Concurrent callers for the same name wait for the first one's build. An
    /// object of that name with another origin is a [`ObjectError::Conflict`] naming both.
    pub fn get_or_create(
        &self,
        name: &str,
        definition: &ObjectDefinition,
        now: DateTime<Utc>,
        build: impl FnOnce() -> Result<DataFrame, String>,
    ) -> Result<NamedObject, ObjectError> {
        let slot = self.slot(name);
        let value = lock(&slot);
        if let Some(existing) = value.as_ref() {
            return match &existing.origin {
                ObjectOrigin::Built(built) if built == definition => Ok(existing.clone()),
                other => Err(ObjectError::Conflict(format!(
                    "named object `{name}` holds other rows than this input asks for: it was \
                     {other}, and this input asks for {definition}; give this input another \
                     `object` name, or drop `{name}` by deleting the context and creating it \
                     again"
                ))),
            };
        }
        let frame = build().map_err(ObjectError::Failed)?;
        let origin = ObjectOrigin::Built(definition.clone());
        self.admit(name, frame, now, origin, &slot, value)
    }

    /// Stores `frame` as `name`, replacing any previous object of that name.
    pub fn put(
        &self,
        name: &str,
        frame: DataFrame,
        now: DateTime<Utc>,
        origin: ObjectOrigin,
    ) -> Result<NamedObject, ObjectError> {
        let slot = self.slot(name);
        let value = lock(&slot);
        self.admit(name, frame, now, origin, &slot, value)
    }

    /// Stores `frame` in `slot` (whose lock `value` is) and charges it to the budget,
    /// crediting the object it replaces. When it does not fit, every selection is dropped
    /// before the object is refused. An object whose name was forgotten while it was built is
    /// handed back without being stored or charged: nobody else can reach it.
    fn admit(
        &self,
        name: &str,
        frame: DataFrame,
        now: DateTime<Utc>,
        origin: ObjectOrigin,
        slot: &Slot,
        mut value: MutexGuard<'_, Option<NamedObject>>,
    ) -> Result<NamedObject, ObjectError> {
        let frame = mark_sorted_time_columns(frame);
        let bytes = arrow_size(&frame) as u64;
        let object = NamedObject {
            selections: Arc::new(Selections::new(self.budget.clone(), bytes)),
            frame: Arc::new(frame),
            bytes,
            created_at: now,
            origin,
        };
        // Under the state lock, so `forget` runs wholly before (the slot is gone) or after.
        let state = lock(&self.state);
        if !state
            .slots
            .get(name)
            .is_some_and(|current| Arc::ptr_eq(current, slot))
        {
            return Ok(object);
        }
        let credit = value.as_ref().map_or(0, |old| old.bytes);
        let charged = self.budget.try_replace(credit, bytes).or_else(|_| {
            // Selections are a cache: they make room for an object before it is refused.
            if let Some(old) = value.as_ref() {
                old.selections.clear();
            }
            for other in state.slots.values() {
                // Our own slot is held here (skipped); others being built have none yet.
                if let Ok(other) = other.try_lock()
                    && let Some(object) = other.as_ref()
                {
                    object.selections.clear();
                }
            }
            self.budget.try_replace(credit, bytes)
        });
        if let Err(free) = charged {
            return Err(ObjectError::OverBudget {
                name: name.to_owned(),
                bytes,
                free,
                limit: self.budget.limit(),
            });
        }
        *value = Some(object.clone());
        // The slot before the state: a `forget` waiting for the state then finds it free.
        drop(value);
        drop(state);
        Ok(object)
    }

    /// Drops the object `name`; returns whether it existed.
    pub fn forget(&self, name: &str) -> bool {
        let mut state = lock(&self.state);
        let Some(slot) = state.slots.remove(name) else {
            return false;
        };
        // A build holding the slot finds it gone when it is stored (`admit`, under the same
        // state lock) and charges nothing.
        if let Ok(value) = slot.try_lock()
            && let Some(object) = value.as_ref()
        {
            self.budget.release(object.bytes);
            object.selections.clear();
        }
        true
    }

    /// Drops everything (the context is going away).
    pub fn clear(&self) {
        let names: Vec<String> = lock(&self.state).slots.keys().cloned().collect();
        for name in names {
            self.forget(&name);
        }
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
                let (selections, selection_bytes) = object.selections.usage();
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
                    selections,
                    selection_bytes,
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

    fn definition(source: &str) -> ObjectDefinition {
        ObjectDefinition {
            app: "shop".to_owned(),
            app_version: 1,
            kind: "source",
            name: source.to_owned(),
            from: "2024-01-01T00:00:00Z".parse().unwrap(),
            to: "2024-01-08T00:00:00Z".parse().unwrap(),
        }
    }

    fn published() -> ObjectOrigin {
        ObjectOrigin::Published {
            job_id: "j1".to_owned(),
        }
    }

    #[test]
    fn get_or_create_refuses_another_definition_of_the_same_name() {
        let objects = NamedObjects::new(1 << 30);
        let week = definition("events");
        objects
            .get_or_create("events", &week, Utc::now(), || Ok(frame(7)))
            .unwrap();
        // The same definition gets the object without building it again.
        let again = objects
            .get_or_create("events", &week, Utc::now(), || panic!("built twice"))
            .unwrap();
        assert_eq!(again.frame.height(), 7);
        // Another app, another range, another version: each is refused, naming both.
        let others = [
            ObjectDefinition {
                app: "evil".to_owned(),
                to: "2024-01-02T00:00:00Z".parse().unwrap(),
                ..week.clone()
            },
            ObjectDefinition {
                app_version: 2,
                ..week.clone()
            },
            ObjectDefinition {
                kind: "results",
                ..week.clone()
            },
        ];
        for other in others {
            let err = objects
                .get_or_create("events", &other, Utc::now(), || panic!("must not build"))
                .unwrap_err();
            let ObjectError::Conflict(message) = err else {
                panic!("expected a conflict, got {err:?}");
            };
            assert!(message.contains(&format!("built from {week}")), "{message}");
            assert!(message.contains(&format!("asks for {other}")), "{message}");
            assert!(message.contains("another `object` name"), "{message}");
        }
        assert_eq!(
            definition("events").to_string(),
            "source `events` of app shop (version 1) from 2024-01-01T00:00:00+00:00 to \
             2024-01-08T00:00:00+00:00"
        );
        // A published object is not a built one: a get-or-create of its name is refused too,
        // and a publish replaces whatever the name held, as before.
        objects
            .put("events", frame(3), Utc::now(), published())
            .unwrap();
        let err = objects
            .get_or_create("events", &week, Utc::now(), || panic!("must not build"))
            .unwrap_err();
        assert!(
            err.to_string().contains("it was published by job j1"),
            "{err}"
        );
        assert_eq!(objects.get("events").unwrap().frame.height(), 3);
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
                        .get_or_create("events", &definition("events"), Utc::now(), || {
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
            .get_or_create("x", &definition("x"), Utc::now(), || Err("boom".to_owned()))
            .unwrap_err();
        assert_eq!(err, ObjectError::Failed("boom".to_owned()));
        assert!(objects.get("x").is_none());
        objects
            .get_or_create("x", &definition("x"), Utc::now(), || Ok(frame(3)))
            .unwrap();
        assert_eq!(objects.get("x").unwrap().frame.height(), 3);
    }

    #[test]
    fn budget_is_enforced_and_credited_on_replace_and_forget() {
        let size = arrow_size(&frame(1000)) as u64;
        let objects = NamedObjects::new(size * 2);
        objects
            .put("a", frame(1000), Utc::now(), published())
            .unwrap();
        objects
            .put("b", frame(1000), Utc::now(), published())
            .unwrap();
        let err = objects
            .put("c", frame(1000), Utc::now(), published())
            .unwrap_err()
            .to_string();
        assert!(err.contains("named object `c` needs"), "{err}");
        // Replacing `a` with an equal-sized frame fits: its old bytes are credited.
        objects
            .put("a", frame(1000), Utc::now(), published())
            .unwrap();
        assert_eq!(objects.used(), size * 2);
        assert!(objects.forget("a"));
        assert_eq!(objects.used(), size);
        objects
            .put("c", frame(1000), Utc::now(), published())
            .unwrap();
        let names: Vec<String> = objects.summaries().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["b", "c"]);
    }

    #[test]
    fn an_object_forgotten_while_built_is_handed_back_uncharged() {
        let objects = Arc::new(NamedObjects::new(1 << 30));
        let (started, release) = (
            Arc::new(std::sync::Barrier::new(2)),
            Arc::new(std::sync::Barrier::new(2)),
        );
        let builder = {
            let (objects, started, release) = (objects.clone(), started.clone(), release.clone());
            thread::spawn(move || {
                objects
                    .get_or_create("x", &definition("x"), Utc::now(), || {
                        started.wait();
                        release.wait();
                        Ok(frame(1000))
                    })
                    .unwrap()
                    .frame
                    .height()
            })
        };
        started.wait();
        assert!(objects.forget("x"));
        release.wait();
        assert_eq!(
            builder.join().unwrap(),
            1000,
            "the job still gets its frame"
        );
        assert!(objects.get("x").is_none());
        assert_eq!(objects.used(), 0);
    }

    #[test]
    fn selections_are_charged_and_make_room_for_an_object() {
        let big = |n: i64| {
            df!(
                "x" => (0..n).collect::<Vec<i64>>(),
                "even" => (0..n).map(|i| i % 10 == 0).collect::<Vec<bool>>(),
            )
            .unwrap()
        };
        let size = arrow_size(&big(1000)) as u64;
        let objects = NamedObjects::new(size * 2);
        let a = objects
            .put("a", big(1000), Utc::now(), published())
            .unwrap();
        let filter = col("even");
        a.selections
            .rows(&a.frame, &filter, &["x".to_owned()])
            .unwrap();
        let (count, selected) = a.selections.usage();
        assert_eq!(count, 1);
        assert_eq!(objects.used(), size + selected);
        let summary = &objects.summaries()[0];
        assert_eq!((summary.selections, summary.selection_bytes), (1, selected));
        // `b` fits only without the selection: it is dropped, and `b` is kept.
        objects
            .put("b", big(1000), Utc::now(), published())
            .unwrap();
        assert_eq!(a.selections.usage(), (0, 0));
        assert_eq!(objects.used(), size * 2);
        assert!(objects.forget("a"));
        assert!(objects.forget("b"));
        assert_eq!(objects.used(), 0);
    }
}
