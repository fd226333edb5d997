//! Where jobs are computed: the engine boundary ([`Engine`]: a job with resolved inputs in, its
//! output out), the polars engine behind it, and how a source's files become a `LazyFrame` cut
//! to a partition window (with the time filter in a form polars can push down into the scan).
//!
//! Above the job kinds and the pipeline definitions, which it runs and reads; below the
//! resolver of inputs ([`crate::inputs`]) and everything that computes (materialiser, job
//! server, `/query`). Does not own: which partitions run or when (the scheduler), what a job
//! reads (the resolver), where bytes live (the store), the polars helpers every layer shares
//! ([`crate::frames`]).

pub mod run;
pub mod source;
pub mod wire;
pub mod worker;

pub use run::{
    Engine, EngineError, PolarsEngine, ResolvedInput, ResolvedPlan, STREAMING_FROM_BYTES,
};
pub use source::{
    FileFormat, FileIdentity, SourceError, cut_to_window, resolve_source_files, scan_file,
    scan_source, scan_source_window,
};
