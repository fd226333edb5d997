//! The engine boundary: a job with its resolved inputs goes in ([`ResolvedPlan`]), the job's
//! output (Arrow-compatible frames) comes out. [`Engine`] is what every caller that computes a
//! job talks to — a partition run of the scheduler, an ad-hoc job of the job server, a `/query`
//! — so a second engine plugs in here without touching them.
//!
//! Inputs arrive resolved by [`crate::inputs`]: source files already listed for the window and
//! whole files checked where they lie (the data files of `/data`), which the engine reads, so
//! an engine on a cluster can read them where they are; and rows already in memory (upstream
//! partitions, named objects, results over a range), which an engine elsewhere would ship as
//! Arrow.
//!
//! [`PolarsEngine`] is the engine of this process: it scans files with polars, cut to the
//! window with a filter polars pushes into the scan, and runs the job's polars plan, on polars'
//! streaming engine when the job reads files of [`STREAMING_FROM_BYTES`] or more (see
//! [`crate::frames::streaming`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use polars::prelude::LazyFrame;

use super::source::{FileFormat, FileIdentity, SourceError, scan_file, scan_source_window};
use crate::job::{Job, JobContext, JobError, JobInput, JobOutput};
use crate::partition::{Grain, Window};
use crate::pipeline::Source;

/// One input of a job, resolved.
pub enum ResolvedInput<'a> {
    /// The rows of `source` in `window`, read from `files` (listed for that window; borrowed
    /// when the caller already holds the list, as a partition run does for its fingerprint;
    /// the source is owned where it was sent from elsewhere, as in a worker process).
    Files {
        source: Cow<'a, Source>,
        files: Cow<'a, [FileIdentity]>,
        window: Window,
    },
    /// Rows already in memory: upstream partitions (with their partial states), a named
    /// object or a window of it, materialised results over a range.
    Rows(Box<JobInput>),
    /// Every row of one file in `format` (a data file of `/data`), checked by the resolver;
    /// `name` names it in messages.
    File {
        name: String,
        path: PathBuf,
        format: FileFormat,
    },
}

impl ResolvedInput<'_> {
    /// Rows already in memory.
    pub fn rows(input: JobInput) -> Self {
        ResolvedInput::Rows(Box::new(input))
    }

    /// The bytes of the files this input reads (as listed or found on disk): what chooses the
    /// engine. Rows already in memory read none.
    pub fn file_bytes(&self) -> u64 {
        match self {
            ResolvedInput::Files { files, .. } => files.iter().map(|file| file.size).sum(),
            ResolvedInput::Rows(_) => 0,
            // Checked by the resolver; a file gone since fails when it is scanned.
            ResolvedInput::File { path, .. } => std::fs::metadata(path).map_or(0, |m| m.len()),
        }
    }
}

/// A job reading this many bytes of files or more (summed over its inputs) runs on polars'
/// streaming engine, which holds a batch of rows at a time rather than the whole input, so a
/// partition bigger than the memory a worker may use still completes. Below it the in-memory
/// engine answers sooner: at the sample data's hourly partitions (50 KiB of Parquet, 6,000
/// rows) the streaming engine costs 0.4–0.6 ms more a run; from about 0.5 MiB of Parquet on
/// the two take the same time (docs/benchmarks.md, "When to stream"). Named objects are built
/// in memory whatever their files weigh (they are held whole).
pub const STREAMING_FROM_BYTES: u64 = 1 << 20;

/// Runs `f`, which computes over inputs reading `file_bytes` bytes of files, on the engine
/// chosen for that size.
fn on_engine_for<R>(file_bytes: u64, f: impl FnOnce() -> R) -> R {
    if file_bytes >= STREAMING_FROM_BYTES {
        crate::frames::streaming::scope(f)
    } else {
        f()
    }
}

impl fmt::Debug for ResolvedInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolvedInput::Files { source, files, .. } => f
                .debug_struct("Files")
                .field("source", &source.name)
                .field("files", &files.len())
                .finish(),
            ResolvedInput::Rows(_) => f.write_str("Rows"),
            ResolvedInput::File { name, format, .. } => f
                .debug_struct("File")
                .field("name", name)
                .field("format", format)
                .finish(),
        }
    }
}

/// A job ready to run: what it is, where it sits, and its inputs by name.
pub struct ResolvedPlan<'a> {
    /// The pipeline (or `query`, or the ad-hoc context) the job belongs to, for messages.
    pub pipeline: &'a str,
    pub job: &'a str,
    pub kind: &'a dyn Job,
    pub grain: Grain,
    pub window: Window,
    /// The job's block as YAML, when it has one (a pipeline's job): what an engine in another
    /// process builds the job from. `None`: the job runs where `kind` is.
    pub definition: Option<&'a str>,
    /// Whether the run should stop (its timeout passed, the scheduler is stopping): polars
    /// cannot stop inside a plan, an engine in another process can.
    pub stop: Option<&'a dyn Fn() -> bool>,
    pub inputs: BTreeMap<String, ResolvedInput<'a>>,
}

impl fmt::Debug for ResolvedPlan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedPlan")
            .field("pipeline", &self.pipeline)
            .field("job", &self.job)
            .field("grain", &self.grain)
            .field("window", &self.window)
            .field("inputs", &self.inputs)
            .finish_non_exhaustive()
    }
}

/// Why an engine could not compute a job.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Job(#[from] JobError),
}

/// What computes jobs.
pub trait Engine: Send + Sync + fmt::Debug {
    /// The engine's name, as recorded with what it computed.
    fn name(&self) -> &'static str;

    /// Computes `plan`.
    fn execute(&self, plan: ResolvedPlan<'_>) -> Result<JobOutput, EngineError>;
}

/// The polars engine, in this process.
#[derive(Debug, Clone, Copy, Default)]
pub struct PolarsEngine;

impl PolarsEngine {
    /// `input` as a polars input: a source's files become a scan cut to the window, a whole
    /// file a scan of it.
    pub fn input(input: ResolvedInput<'_>) -> Result<JobInput, SourceError> {
        match input {
            ResolvedInput::Files {
                source,
                files,
                window,
            } => Ok(JobInput::of_frame(scan_source_window(
                &source, &files, &window,
            )?)),
            ResolvedInput::Rows(input) => Ok(*input),
            ResolvedInput::File { name, path, format } => {
                Ok(JobInput::of_frame(scan_file(&name, &path, format)?))
            }
        }
    }

    /// The rows of `input` as a lazy frame.
    pub fn frame(input: ResolvedInput<'_>) -> Result<LazyFrame, SourceError> {
        PolarsEngine::input(input).map(|input| input.frame)
    }
}

impl Engine for PolarsEngine {
    fn name(&self) -> &'static str {
        "polars"
    }

    fn execute(&self, plan: ResolvedPlan<'_>) -> Result<JobOutput, EngineError> {
        let file_bytes = plan.inputs.values().map(ResolvedInput::file_bytes).sum();
        let mut inputs = BTreeMap::new();
        for (name, input) in plan.inputs {
            inputs.insert(name, PolarsEngine::input(input)?);
        }
        let ctx = JobContext {
            pipeline: plan.pipeline,
            job: plan.job,
            grain: plan.grain,
            window: plan.window,
            inputs: &inputs,
        };
        Ok(on_engine_for(file_bytes, || {
            crate::job::run_job(plan.kind, &ctx)
        })?)
    }
}
