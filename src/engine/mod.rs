//! The polars side of Floe: reading a source window, encoding results for the store, and the
//! in-memory cache of decoded upstream results.
//!
//! Owns: how files become a `LazyFrame` cut to a partition window (with the time filter in a
//! form polars can push down into the scan), the Arrow IPC encoding of results, and the cache.
//! Does not own: which partitions run or when (the materialiser), where bytes live (the store).

pub mod cache;
pub mod frames;
pub mod source;

pub use cache::ResultCache;
pub use frames::{decode_ipc, encode_ipc};
pub use source::{FileIdentity, SourceError, resolve_source_files, scan_source_window};
