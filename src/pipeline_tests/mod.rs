//! `floe test`: unit tests of pipelines, run in memory.
//!
//! A test file (`<name>.test.yaml`, in the pipelines folder beside the pipeline it tests) gives
//! rows for sources and, optionally, for upstream jobs, an instant, and the rows jobs are
//! expected to produce in their partitions containing that instant. Running a test computes
//! every partition the expected jobs need from the given rows, through the same
//! [`crate::engine::Engine`] a partition run uses, with inputs built as a partition run builds
//! them: a source's rows cut to
//! the window by [`crate::engine::cut_to_window`] (the function a file scan goes
//! through), the upstream partitions that tile the window ([`crate::inputs::upstream_windows`])
//! combined by [`crate::inputs::upstream_input`], states and all, so a daily `count_distinct`
//! merges the key sets of its 24 hourly partitions (23 or 25 on DST days). Nothing touches the
//! store or reads a source file; nothing is written. Each expected job's produced rows are then
//! compared with the expected ones ([`compare`]) and a failing test says how they differ.
//!
//! Owns: the test file format ([`spec`]), loading and checking it with file:line positions
//! ([`load_test_file`]), typed rows from YAML and fixtures ([`rows`]), the in-memory runs
//! ([`run_test`]), the comparison and its diff ([`compare`]), and rewriting expectations from
//! produced rows (`floe test --update`, [`rewrite_expectations`]). Does not own: what a job
//! computes (the job kinds), how a source window is cut or which upstream partitions tile a
//! window (engine, inputs), pipeline files (pipeline; [`crate::pipeline::is_test_file`] tells
//! them apart), the command (cli).

pub mod compare;
mod load;
pub mod rows;
mod runner;
pub mod spec;
mod update;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use polars::prelude::DataFrame;

pub use load::{MAX_TEST_FILE_BYTES, load_test_file, parse_test_file};
pub use runner::{JobCheck, MAX_RUNS_PER_TEST, TestOutcome, run_test};
pub use update::{Rewrite, rewrite_expectations};

use crate::partition::Window;
use crate::pipeline::Pipeline;
use rows::ColumnType;

/// A test file, checked against its pipeline.
#[derive(Debug, Clone)]
pub struct TestFile {
    pub path: PathBuf,
    /// The file's text, which `--update` edits.
    pub text: String,
    pub pipeline: Arc<Pipeline>,
    /// In file order.
    pub tests: Vec<PipelineTest>,
}

/// One test: its given rows, its instant and its expectations.
#[derive(Debug, Clone)]
pub struct PipelineTest {
    pub name: String,
    pub description: Option<String>,
    /// Each expected job is checked on its window containing this instant.
    pub instant: DateTime<Utc>,
    /// Relative tolerance of float comparisons.
    pub tolerance: f64,
    /// Rows of sources, at any time: a run reads those inside its window.
    pub sources: BTreeMap<String, DataFrame>,
    /// Results of upstream jobs, which are then not computed.
    pub jobs: BTreeMap<String, GivenJob>,
    /// In file order.
    pub expect: Vec<Expectation>,
}

/// A given job's results, by the start of each partition's window; a partition not given
/// holds no rows (and no state).
#[derive(Debug, Clone, Default)]
pub struct GivenJob {
    pub partitions: BTreeMap<DateTime<Utc>, GivenPartition>,
}

/// A given job's result in one partition.
#[derive(Debug, Clone)]
pub struct GivenPartition {
    pub frame: DataFrame,
    /// Its mergeable state (a `count_distinct`'s distinct keys), when given.
    pub state: Option<DataFrame>,
}

/// The rows a job is expected to produce in one partition.
#[derive(Debug, Clone)]
pub struct Expectation {
    pub job: String,
    /// The job's window containing the test's instant.
    pub window: Window,
    pub rows: Vec<serde_yaml::Value>,
    /// The columns the rows name, in order of first appearance.
    pub columns: Vec<String>,
    pub ordered: bool,
    pub partial: bool,
    pub schema: Vec<(String, ColumnType)>,
}

#[cfg(test)]
mod tests;
