//! The polars side of Floe: reading a source window, encoding results for the store, the
//! in-memory cache of decoded upstream results, cutting time windows out of frames held in
//! memory, and the selections (filtered rows) kept beside them.
//!
//! Owns: the engine boundary ([`Engine`]: a job with resolved inputs in, its output out) and
//! the polars engine behind it; how files become a `LazyFrame` cut to a partition window (with
//! the time filter in a form polars can push down into the scan), the Arrow IPC encoding of results and the Arrow
//! size budgets charge, the cache, windows over in-memory frames, and selections with the memory
//! budget they are charged to; stopping computations (cancellation, the memory limit).
//! Does not own: which partitions run or when (the materialiser), where bytes live (the store).

pub mod cache;
pub mod cancel;
pub mod join_bound;
pub mod memory;
pub mod run;
pub mod selection;
pub mod source;
pub mod time_slice;

pub use crate::frames::{arrow_size, decode_ipc, encode_ipc};
pub use cache::ResultCache;
pub use run::{Engine, EngineError, PolarsEngine, ResolvedInput, ResolvedPlan};
pub use source::{FileIdentity, SourceError, resolve_source_files, scan_source_window};
