//! Floe's persistent store: run states and materialised results in one sled
//! database, plus the rules for opening a directory safely.
//!
//! What a store must do is declared as traits in `interface` ([`RunStore`], [`ResultStore`],
//! [`JobStore`], [`ScheduleStore`], [`StoreBackend`]) and checked by the suite in
//! `conformance`; [`Store`] is the sled implementation. The states of runs and jobs and the
//! transitions allowed between them live in `lifecycle`, which every record write consults.
//! Runs are split by responsibility: `runs` (the record, reads, the compare-and-swap),
//! `run_transitions` (the writers), `active_runs` (the index of unfinished runs, recovery).
//! The job server's trees are in `jobs` (job records, configs, results) and `server`
//! (binaries, contexts); the scheduler's in `schedule`.
//! Opening a directory (creating, refusing, migrating) is `open`, with `layout`'s checks.
//!
//! Layout (schema version 3). Every tree has a fixed name; later schema
//! additions (jobs, contexts and binaries for the job server, schedules) are
//! new trees, so existing ones never change shape without a version bump.
//!
//! | tree           | key                      | value                             |
//! |----------------|--------------------------|-----------------------------------|
//! | `meta`         | `schema_version`         | u32, big-endian                   |
//! | `meta`         | `alive_at`               | i64 millis, big-endian: heartbeat |
//! | `runs`         | `RunKey` bytes (`keys`)  | `RunRecord`, JSON                 |
//! | `result_meta`  | `RunKey` bytes, attempt¹ | `ResultMeta`, JSON; then, for a   |
//! |                |                          | frame up to 16 KiB, `\n` and its  |
//! |                |                          | Arrow IPC (schema 3)              |
//! | `result_frame` | `RunKey` bytes, attempt¹ | Arrow IPC of a larger result frame |
//! | `result_state` | `RunKey` bytes, attempt¹ | Arrow IPC of the mergeable state  |
//! | `binaries`     | app, 0, version (u32 BE) | `BinaryMeta`, JSON                |
//! | `binary_blobs` | sha-256 (hex)            | the uploaded bundle's bytes       |
//! | `contexts`     | context name             | `ContextDefinition`, JSON         |
//! | `jobs`         | job id (UUIDv7 text)     | `JobRecord`, JSON                 |
//! | `definitions`  | definition fingerprint   | the job's YAML block, UTF-8       |
//! | `job_configs`  | job id                   | the posted config, JSON           |
//! | `job_results`  | job id                   | Arrow IPC of the job's result     |
//!
//! ¹ The attempt that computed the result, u32 big-endian, named by the run's
//! `RunRecord::result_attempt`; results stored before Floe kept attempts sit under the bare key.
//!
//! Job ids are UUIDv7: their text sorts by creation time, so "newest jobs first" is a reverse
//! scan of `jobs`.
//!
//! Next to sled's files, `floe-store.json` mirrors the schema version so a
//! store can be judged without letting sled write to it (see `layout`).
//!
//! Everything here is blocking; async callers wrap calls in
//! `spawn_blocking`. Writes are durable after sled's periodic flush (every
//! 500 ms by default) or `Store::flush`; a crash loses at most that window,
//! and the transactions keep what survives consistent.

mod active_runs;
/// The store interface's conformance suite, for every backend's tests (compiled for this
/// crate's tests, and for others with the `store-conformance` feature).
#[cfg(any(test, feature = "store-conformance"))]
pub mod conformance;
mod error;
mod interface;
mod jobs;
mod keys;
mod layout;
mod lifecycle;
mod open;
mod result_reads;
mod results;
mod run_transitions;
mod runs;
mod schedule;
mod server;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use error::{BoxedCause, StoreError};
pub use interface::{JobStore, ResultStore, RunList, RunStore, ScheduleStore, StoreBackend};
pub use jobs::{JobFailure, JobRecord};
pub use keys::{KeyError, RunKey};
pub use lifecycle::{JobStatus, Lifecycle, RunState};
pub use results::{NewResult, ResultMeta, StoredResult};
pub use runs::{CheckOutcome, RunRecord, SeenRun};
pub use schedule::{BackfillRecord, BackfillState};
pub use server::{BinaryBlobUsage, BinaryMeta, ContextDefinition};

/// Version of the layout above. Bump it (and add a migration in `Store::open`)
/// whenever an existing tree changes how it is keyed or encoded; adding a
/// tree does not need a bump unless older Floes must not write the store.
///
/// - 1: the first layout.
/// - 2: adds the `active_runs` index, which an older Floe would not keep up to date.
pub const SCHEMA_VERSION: u32 = 3;

/// sled's page cache budget. Its default (1 GiB) made a year of hourly runs for 50 jobs hold
/// 1.7 GiB; the hot part of the store (active runs, recent results) is far smaller, and the
/// OS page cache still holds the rest of the files.
const SLED_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// Tree names, in one place so a typo cannot create a stray tree.
mod tree {
    pub(super) const META: &str = "meta";
    pub(super) const RUNS: &str = "runs";
    pub(super) const ACTIVE_RUNS: &str = "active_runs";
    pub(super) const RESULT_META: &str = "result_meta";
    pub(super) const RESULT_FRAME: &str = "result_frame";
    pub(super) const RESULT_STATE: &str = "result_state";
    pub(super) const BINARIES: &str = "binaries";
    pub(super) const BINARY_BLOBS: &str = "binary_blobs";
    pub(super) const CONTEXTS: &str = "contexts";
    pub(super) const JOBS: &str = "jobs";
    pub(super) const JOB_CONFIGS: &str = "job_configs";
    pub(super) const JOB_RESULTS: &str = "job_results";
    pub(super) const SCHEDULE_CURSORS: &str = "schedule_cursors";
    pub(super) const BACKFILLS: &str = "backfills";
    pub(super) const DEFINITIONS: &str = "definitions";
}

/// Key of the schema version in the `meta` tree.
const SCHEMA_KEY: &[u8] = b"schema_version";
/// sled's always-present default tree; Floe keeps nothing in it.
const SLED_DEFAULT_TREE: &[u8] = b"__sled__default";

/// A handle to an open store. Cloning is cheap (sled handles are `Arc`s) and
/// clones share the same database.
#[derive(Clone)]
pub struct Store {
    /// Owns the database; needed for flushing and listing trees.
    db: sled::Db,
    /// Where the store lives, for messages; `None` for temporary stores.
    path: Option<Arc<Path>>,
    /// `RunKey` → `RunRecord`.
    runs: sled::Tree,
    /// `RunKey` → nothing: every run whose record is active (`RunRecord::is_active`), and
    /// possibly a few that no longer are. Start-up reads this instead of the whole history.
    /// Each entry's value is a generation number unique to the write that made it, so an
    /// entry is removed only if nobody re-inserted it since it was read (see `update_run`).
    active_runs: sled::Tree,
    index_generation: Arc<std::sync::atomic::AtomicU64>,
    /// `RunKey` → `ResultMeta`; separate so freshness checks read a few
    /// bytes instead of the frame.
    result_meta: sled::Tree,
    /// `RunKey` → result frame IPC.
    result_frame: sled::Tree,
    /// `RunKey` → state frame IPC, only for results that have one.
    result_state: sled::Tree,
    /// Job server trees; see `server`.
    binaries: sled::Tree,
    binary_blobs: sled::Tree,
    /// Serialises writes to `binaries` and `binary_blobs`: whether a blob is still used is
    /// read outside the transaction that deletes it, so no other binary write may run between.
    binary_writes: Arc<std::sync::Mutex<()>>,
    contexts: sled::Tree,
    jobs: sled::Tree,
    job_configs: sled::Tree,
    job_results: sled::Tree,
    /// Scheduler trees; see `schedule`.
    schedule_cursors: sled::Tree,
    backfills: sled::Tree,
    /// A job's definition fingerprint → the YAML block it was made from, for `floe plan`'s
    /// diffs; see `results`.
    definitions: sled::Tree,
}

impl fmt::Debug for Store {
    // sled's own Debug walks every tree node; print only what identifies us.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The store directory; `None` for a temporary store.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Forces everything written so far to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map(drop)
            .map_err(|source| StoreError::Sled {
                action: format!("flush {}", self.describe()),
                source,
            })
    }

    fn from_db(db: sled::Db, path: Option<&Path>) -> Result<Store, StoreError> {
        let open = |name: &str| {
            db.open_tree(name).map_err(|source| StoreError::Sled {
                action: format!(
                    "open tree {name} in {}",
                    path.map_or_else(
                        || "a temporary store".to_owned(),
                        |p| p.display().to_string()
                    )
                ),
                source,
            })
        };
        Ok(Store {
            runs: open(tree::RUNS)?,
            active_runs: open(tree::ACTIVE_RUNS)?,
            // Unique among the writers that can race (they share this process, which holds
            // sled's lock); seeded from the clock so a restart does not reuse a generation
            // an earlier process left in the index.
            index_generation: Arc::new(std::sync::atomic::AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| since.as_nanos() as u64),
            )),
            result_meta: open(tree::RESULT_META)?,
            result_frame: open(tree::RESULT_FRAME)?,
            result_state: open(tree::RESULT_STATE)?,
            binaries: open(tree::BINARIES)?,
            binary_blobs: open(tree::BINARY_BLOBS)?,
            binary_writes: Arc::default(),
            contexts: open(tree::CONTEXTS)?,
            jobs: open(tree::JOBS)?,
            job_configs: open(tree::JOB_CONFIGS)?,
            job_results: open(tree::JOB_RESULTS)?,
            schedule_cursors: open(tree::SCHEDULE_CURSORS)?,
            backfills: open(tree::BACKFILLS)?,
            definitions: open(tree::DEFINITIONS)?,
            path: path.map(Arc::from),
            db,
        })
    }

    /// "store at /x" or "a temporary store", for messages.
    fn describe(&self) -> String {
        match &self.path {
            Some(p) => format!("store at {}", p.display()),
            None => "a temporary store".to_owned(),
        }
    }

    /// Builds the `StoreError::Sled` for a failed operation on a run. The message is only
    /// formatted when there is an error: this runs on every store call, and formatting the run
    /// key each time cost 3% of the scheduler's throughput.
    fn sled_error<'a>(
        action: &'a str,
        key: &'a RunKey,
    ) -> impl FnOnce(sled::Error) -> StoreError + 'a {
        move |source| StoreError::Sled {
            action: format!("{action} {key}"),
            source,
        }
    }
}

/// Builds the `StoreError::Sled` for a failed operation described by `action`, formatted only
/// when there is an error.
fn sled_failed(action: fmt::Arguments<'_>) -> impl FnOnce(sled::Error) -> StoreError + '_ {
    move |source| StoreError::Sled {
        action: action.to_string(),
        source,
    }
}

/// Decodes a JSON value, naming the tree and key if it is bad.
fn decode_json<T: DeserializeOwned>(
    tree: &'static str,
    key: &dyn fmt::Display,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        tree,
        key: key.to_string(),
        source: Box::new(source),
    })
}

/// Encodes a JSON value, naming the tree and key should serde fail.
fn encode_json<T: Serialize>(
    tree: &'static str,
    key: &dyn fmt::Display,
    value: &T,
) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode {
        tree,
        key: key.to_string(),
        source,
    })
}
