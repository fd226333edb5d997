//! The store's error type. Every variant names the path or run key involved
//! so a message read in a log is actionable without the surrounding code.
//! Causes are returned from `source()`, not repeated in the message: print
//! the whole chain to show them.

use std::error::Error as StdError;
use std::path::PathBuf;

use super::keys::{KeyError, RunKey};
use super::lifecycle::{JobStatus, RunState};

/// A boxed cause, for failures that come from more than one library (sled,
/// serde_json, this module's own on-disk checks).
pub type BoxedCause = Box<dyn StdError + Send + Sync + 'static>;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store was written by a newer Floe; reading or writing it with this
    /// one could misinterpret or damage data, so nothing is touched.
    #[error(
        "store at {path} has schema version {found} but this floe supports up to {supported}; \
         upgrade floe to open it"
    )]
    NewerSchema {
        /// The store directory.
        path: PathBuf,
        /// The version recorded in the store.
        found: u32,
        /// `SCHEMA_VERSION` of this build.
        supported: u32,
    },

    /// The path holds something that Floe did not create; it is left as is.
    #[error("{path} is not a floe store ({reason}); choose an empty or new directory")]
    NotAStore {
        /// The path given to `Store::open`.
        path: PathBuf,
        /// What made it clear the path is not a store.
        reason: String,
    },

    /// The path is a Floe store but its files cannot be read safely. It is
    /// refused before sled's recovery could rewrite the damaged files.
    #[error("store at {path} is corrupt")]
    Corrupt {
        /// The store directory.
        path: PathBuf,
        /// What was found wrong (a sled error or one of the pre-open checks).
        #[source]
        source: BoxedCause,
    },

    /// Another process (a running `floe serve`, another `floe run`) holds the
    /// store; sled allows one at a time.
    #[error(
        "the store at {path} is in use by another Floe process (a running `floe serve`?): \
         stop it first, or give this command another store with `--store`"
    )]
    InUse {
        /// The store directory.
        path: PathBuf,
    },

    /// A filesystem operation on the store directory failed (permissions,
    /// disk full).
    #[error("i/o error on store at {path}")]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// sled failed during normal operation.
    #[error("sled failed to {action}")]
    Sled {
        /// What the store was doing, naming the key (e.g. `read run p/j@…`).
        action: String,
        /// The underlying error.
        #[source]
        source: sled::Error,
    },

    /// A stored value (or key) could not be decoded; the store never panics
    /// on bad bytes, it reports where they are.
    #[error("cannot decode {key} in tree {tree}")]
    Decode {
        /// The sled tree holding the bad entry.
        tree: &'static str,
        /// The run key, or the escaped raw key if the key itself is bad.
        key: String,
        /// What failed to parse.
        #[source]
        source: BoxedCause,
    },

    /// A value could not be serialised; only possible with a serde bug, but
    /// reported rather than unwrapped.
    #[error("cannot encode {key} for tree {tree}")]
    Encode {
        /// The sled tree the value was meant for.
        tree: &'static str,
        /// The run key.
        key: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// The caller passed a key that cannot be encoded.
    #[error("invalid run key")]
    Key(#[from] KeyError),

    /// The transition is not allowed from the run's current state; most
    /// often this means two writers are working on the same run.
    #[error("run {key} cannot go from {} to {to}", from.map_or("absent", RunState::as_str))]
    InvalidTransition {
        /// The run.
        key: RunKey,
        /// Its state when the transition was attempted (`None`: no record).
        from: Option<RunState>,
        /// The state that was asked for.
        to: RunState,
    },

    /// The job's record may not move from its stored status to this one (see `lifecycle`);
    /// the stored record is left as it was.
    #[error("job {id} cannot go from {} to {to}", from.map_or("absent", JobStatus::as_str))]
    InvalidJobTransition {
        /// The job.
        id: String,
        /// Its stored status when the write was attempted (`None`: no record).
        from: Option<JobStatus>,
        /// The status that was asked for.
        to: JobStatus,
    },

    /// A result computed by an attempt that is no longer the run's current one (it timed out
    /// and the run was retried); it is discarded.
    #[error("run {key} is on attempt {current}; the result of attempt {attempt} is discarded")]
    StaleAttempt {
        /// The run.
        key: RunKey,
        /// The attempt that computed the result.
        attempt: u32,
        /// The run's current attempt.
        current: u32,
    },

    /// The operation needs an existing run record (e.g. `mark_failed`,
    /// which has no `partition_end` to create one with).
    #[error("run {key} does not exist")]
    RunNotFound {
        /// The run.
        key: RunKey,
    },

    /// A job's result could not be encoded as Arrow IPC.
    #[error("cannot encode the result of job {id}")]
    EncodeJobResult {
        /// The job.
        id: String,
        /// The Arrow error.
        #[source]
        source: BoxedCause,
    },

    /// A job result kept in its own file could not be written or read.
    #[error("cannot {action} the result file of job {id} ({})", path.display())]
    JobResultFile {
        /// The job.
        id: String,
        /// `write` or `read`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O or Arrow error.
        #[source]
        source: BoxedCause,
    },

    /// Entries that are always written together disagree (e.g. result meta
    /// without its frame). Only possible if something outside this module
    /// wrote to the trees.
    #[error("stored result of run {key} is inconsistent: {detail}")]
    Inconsistent {
        /// The run.
        key: RunKey,
        /// Which entries disagree.
        detail: &'static str,
    },
}
