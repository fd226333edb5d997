//! The `Job` trait: what every unit of work implements, built-in or user-written.
//!
//! This plays the part of spark-jobserver's `SparkJob` (`validate` then `runJob`). A job sees
//! its inputs as polars frames already cut to its partition window, plus the mergeable partial
//! state of upstream jobs that keep one (so coarser grains roll up instead of rescanning).
//! The built-in kinds live in [`builtin`], the sketches that merge across grains in
//! [`sketches`]; user crates register their own kinds in a
//! [`JobRegistry`] under a class name and refer to them from YAML with `rust: { class: … }`.
//!
//! Owns: the trait, the run-time context handed to a job, job errors, the registry, and the
//! cache of jobs built from their definitions ([`cache`]).
//! Does not own: where inputs come from (the materialiser) or where results go (the store).

pub mod builtin;
pub mod cache;
pub mod sketches;
pub mod spec;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use polars::prelude::*;

use crate::partition::{Grain, Window};

/// A unit of work that turns its inputs for one partition into a result frame.
pub trait Job: Send + Sync + fmt::Debug {
    /// Short kind name (`count_distinct`, `sql`, or a registered class), for listings and logs.
    fn kind(&self) -> &str;

    /// Checks that need no data, given the names the job reads. Runs when a pipeline is loaded,
    /// so mistakes surface before any partition is scheduled. Each problem is one message.
    fn validate(&self, input_names: &[String]) -> Result<(), Vec<String>>;

    /// Computes the result of one partition.
    fn run(&self, ctx: &JobContext<'_>) -> Result<JobOutput, JobError>;
}

/// Runs `job` on `ctx`: the one way Floe calls [`Job::run`], on a stack deep enough for the
/// deepest SQL the guard lets through (see [`crate::sql_guard::with_sql_stack`]).
pub fn run_job(job: &dyn Job, ctx: &JobContext<'_>) -> Result<JobOutput, JobError> {
    crate::sql_guard::with_sql_stack(|| job.run(ctx))
}

/// What a job gets to work with for one partition.
#[derive(Debug)]
pub struct JobContext<'a> {
    pub pipeline: &'a str,
    pub job: &'a str,
    pub grain: Grain,
    pub window: Window,
    /// Input name → its data for this window, in the order the job declared them.
    pub inputs: &'a BTreeMap<String, JobInput>,
}

impl JobContext<'_> {
    pub fn input(&self, name: &str) -> Result<&JobInput, JobError> {
        self.inputs.get(name).ok_or_else(|| JobError::UnknownInput {
            name: name.to_owned(),
            known: self.inputs.keys().cloned().collect(),
        })
    }

    /// The only input of a single-input job.
    pub fn single_input(&self) -> Result<&JobInput, JobError> {
        let mut inputs = self.inputs.values();
        match (inputs.next(), inputs.next()) {
            (Some(input), None) => Ok(input),
            _ => Err(JobError::Invalid(format!(
                "expected exactly one input, found {}",
                self.inputs.len()
            ))),
        }
    }
}

/// One input of a job for the partition being computed.
#[derive(Clone)]
pub struct JobInput {
    /// The rows: a source scan filtered to the window, or the union of upstream partitions.
    pub frame: LazyFrame,
    /// Upstream partial states (one per upstream partition) when the input is an upstream job
    /// that keeps one, e.g. the distinct keys behind a count. `None` for sources.
    pub states: Option<Vec<DataFrame>>,
    /// The kind of the upstream job, `None` for a source.
    pub upstream_kind: Option<String>,
    /// Where the input's filtered rows may already be kept: a window of a context's named
    /// object. `None` for scans and upstream results.
    pub cached_rows: Option<Arc<dyn CachedRows>>,
}

impl JobInput {
    /// An input of `frame` alone: no upstream states, no cached rows.
    pub fn of_frame(frame: LazyFrame) -> Self {
        JobInput {
            frame,
            states: None,
            upstream_kind: None,
            cached_rows: None,
        }
    }

    /// The input's rows matching `filter` (all of them when `None`), for a job that reads
    /// only the columns `reads` names (`None`: it may read any), of which it uses `group_keys`
    /// only as group-by keys. Taken from the input's cached rows when they hold them;
    /// otherwise `frame` filtered.
    pub fn rows_matching(
        &self,
        filter: Option<&Expr>,
        reads: Option<&[String]>,
        group_keys: &[String],
    ) -> LazyFrame {
        let Some(filter) = filter else {
            return self.frame.clone();
        };
        if let (Some(cached), Some(columns)) = (&self.cached_rows, reads)
            && let Some(rows) = cached.rows_matching(filter, columns, group_keys)
        {
            return rows;
        }
        self.frame.clone().filter(filter.clone())
    }
}

/// An input whose filtered rows can be kept between jobs (`frames::selection`).
pub trait CachedRows: Send + Sync + fmt::Debug {
    /// The input's rows matching `filter` with at least `columns`, the same rows `frame`
    /// filtered by it would hold; `None` when this filter's rows cannot come from here.
    /// Columns among `group_keys` may come dictionary-encoded (a polars categorical, which
    /// groups and sorts as the strings do); the job's result then goes through
    /// `frames::selection::decode_strings`.
    fn rows_matching(
        &self,
        filter: &Expr,
        columns: &[String],
        group_keys: &[String],
    ) -> Option<LazyFrame>;
}

impl fmt::Debug for JobInput {
    // LazyFrame has no Debug; its plan can be large, so only its shape is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobInput")
            .field("states", &self.states.as_ref().map(Vec::len))
            .field("upstream_kind", &self.upstream_kind)
            .field("cached_rows", &self.cached_rows)
            .finish_non_exhaustive()
    }
}

/// The result of one partition.
#[derive(Debug, Clone)]
pub struct JobOutput {
    pub frame: DataFrame,
    /// A mergeable partial that a coarser downstream job of the same kind can roll up.
    pub state: Option<DataFrame>,
}

impl JobOutput {
    pub fn frame(frame: DataFrame) -> Self {
        JobOutput { frame, state: None }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("polars: {0}")]
    Polars(#[from] PolarsError),
    #[error("unknown input `{name}` (inputs: {})", known.join(", "))]
    UnknownInput { name: String, known: Vec<String> },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
}

/// Builds a job from the `config` block of a `rust:` job.
pub type JobFactory = Arc<dyn Fn(&serde_yaml::Value) -> Result<Arc<dyn Job>, String> + Send + Sync>;

/// Job classes available to `rust:` jobs, by name.
#[derive(Clone, Default)]
pub struct JobRegistry {
    factories: BTreeMap<String, JobFactory>,
}

impl fmt::Debug for JobRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobRegistry")
            .field("classes", &self.factories.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl JobRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `class`; a later registration under the same name replaces the earlier one.
    pub fn register<F>(&mut self, class: &str, factory: F) -> &mut Self
    where
        F: Fn(&serde_yaml::Value) -> Result<Arc<dyn Job>, String> + Send + Sync + 'static,
    {
        self.factories.insert(class.to_owned(), Arc::new(factory));
        self
    }

    pub fn classes(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }

    pub fn create(&self, class: &str, config: &serde_yaml::Value) -> Result<Arc<dyn Job>, String> {
        match self.factories.get(class) {
            Some(factory) => factory(config),
            None => {
                let known: Vec<&str> = self.classes().collect();
                Err(if known.is_empty() {
                    format!("unknown job class `{class}`: no Rust job classes are registered")
                } else {
                    format!(
                        "unknown job class `{class}` (registered: {})",
                        known.join(", ")
                    )
                })
            }
        }
    }
}
