//! The input resolver: the one place that turns what a job reads into
//! [`ResolvedInput`]s for an [`crate::engine::Engine`] — source files listed for a window,
//! the upstream partitions that tile a window, and materialised results over a range.
//!
//! Every caller that computes a job resolves through here: a partition run of the scheduler
//! ([`InputResolver::partition_inputs`]), an ad-hoc job of the job server and a `/query`
//! ([`InputResolver::source`], [`InputResolver::results`], [`InputResolver::data_file`]: a
//! file uploaded to `/data`, checked to be one of the data-files directory's). Named objects
//! live in a job-server context and are sliced there (`jobserver::objects`); they reach the
//! engine as [`ResolvedInput::Rows`] like any rows in memory.
//!
//! Which files a source has for a window, and which upstream windows a run reads, are decided
//! here and nowhere else: the run's fingerprint is made of the same lists the engine reads.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use polars::prelude::*;

use crate::data_files::{DataFileError, DataFiles};
use crate::engine::{FileFormat, FileIdentity, ResolvedInput, SourceError, resolve_source_files};
use crate::job::JobInput;
use crate::partition::{Window, subwindows};
use crate::pipeline::data_roots::DataRoots;
use crate::pipeline::{InputRef, JobDef, Pipeline, Source};
use crate::results::{ResultsError, StoredResults, read_job_results};
use crate::store::RunKey;

/// Why a job's inputs could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("pipeline `{pipeline}` has no source `{source_name}`")]
    UnknownSource {
        pipeline: String,
        source_name: String,
    },
    #[error("pipeline `{pipeline}` has no job `{job}`")]
    UnknownJob { pipeline: String, job: String },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Results(#[from] ResultsError),
    /// A data file (`input { data }`) that is not one of the data-files directory's.
    #[error(transparent)]
    DataFile(#[from] DataFileError),
    #[error("this process has no data-files directory: data files are `floe serve`'s (`/data`)")]
    NoDataFiles,
    #[error("cannot combine `{job}` partitions: {error}")]
    Combine { job: String, error: PolarsError },
    #[error(
        "{count} partitions of {pipeline}/{job} in the range hold results of another definition \
         of the pipeline (first: {}); run them again (POST /pipelines/{pipeline}/runs)",
        first.to_rfc3339()
    )]
    Stale {
        pipeline: String,
        job: String,
        count: usize,
        first: DateTime<Utc>,
    },
    #[error(
        "{count} partitions of {pipeline}/{job} in the range are not materialised (first: {}); \
         run them first (POST /pipelines/{pipeline}/runs)",
        first.to_rfc3339()
    )]
    Missing {
        pipeline: String,
        job: String,
        count: usize,
        first: DateTime<Utc>,
    },
}

/// What a read of results over a range does with partitions it cannot serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gaps {
    /// Leave them out (a `/query`: the rows that are there).
    Skip,
    /// Refuse the read, naming the first (a job's input: it must see the whole range).
    Refuse,
}

/// Resolves job inputs against the data roots and the stored results.
#[derive(Debug, Clone)]
pub struct InputResolver {
    results: StoredResults,
    /// Where pipelines without roots of their own read: the data dir and, from the CLI, the
    /// operator's `--data-root`s.
    data_roots: Arc<DataRoots>,
    /// The files of `/data` ad-hoc jobs may read; `floe serve`'s only.
    data_files: Option<Arc<DataFiles>>,
}

impl InputResolver {
    pub fn new(results: StoredResults, data_roots: Arc<DataRoots>) -> InputResolver {
        InputResolver {
            results,
            data_roots,
            data_files: None,
        }
    }

    /// The same resolver, reading data files (`input { data }`) in `files`.
    pub fn with_data_files(self, files: Arc<DataFiles>) -> InputResolver {
        InputResolver {
            data_files: Some(files),
            ..self
        }
    }

    /// The same resolver, reading within `roots`.
    pub fn with_data_roots(self, data_roots: Arc<DataRoots>) -> InputResolver {
        InputResolver { data_roots, ..self }
    }

    pub fn stored_results(&self) -> &StoredResults {
        &self.results
    }

    /// The roots pipelines without their own read within.
    pub fn data_roots(&self) -> &Arc<DataRoots> {
        &self.data_roots
    }

    /// The roots `pipeline`'s sources are read within.
    fn roots_of<'a>(&'a self, pipeline: &'a Pipeline) -> &'a DataRoots {
        pipeline.data_roots.as_deref().unwrap_or(&self.data_roots)
    }

    fn source_def<'p>(pipeline: &'p Pipeline, name: &str) -> Result<&'p Source, InputError> {
        pipeline
            .sources
            .get(name)
            .ok_or_else(|| InputError::UnknownSource {
                pipeline: pipeline.name.clone(),
                source_name: name.to_owned(),
            })
    }

    /// The files of `pipeline`'s source `name` for `window`.
    pub fn source_files(
        &self,
        pipeline: &Pipeline,
        name: &str,
        window: &Window,
    ) -> Result<Vec<FileIdentity>, InputError> {
        let source = Self::source_def(pipeline, name)?;
        Ok(resolve_source_files(
            source,
            self.roots_of(pipeline),
            window,
        )?)
    }

    /// `pipeline`'s source `name` over `window`, its files listed now.
    pub fn source<'p>(
        &self,
        pipeline: &'p Pipeline,
        name: &str,
        window: &Window,
    ) -> Result<ResolvedInput<'p>, InputError> {
        let source = Self::source_def(pipeline, name)?;
        let files = resolve_source_files(source, self.roots_of(pipeline), window)?;
        Ok(ResolvedInput::Files {
            source: Cow::Borrowed(source),
            files: Cow::Owned(files),
            window: *window,
        })
    }

    /// The data file `given` names (its name, or its absolute path as `GET /data` lists it),
    /// checked to be a regular file of the data-files directory, read whole as `format`.
    pub fn data_file(
        &self,
        given: &str,
        format: FileFormat,
    ) -> Result<ResolvedInput<'static>, InputError> {
        let files = self.data_files.as_ref().ok_or(InputError::NoDataFiles)?;
        let path = files.resolve(given)?;
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(ResolvedInput::File { name, path, format })
    }

    /// The inputs of a run of `def` over `window`: its sources read from `source_files` (the
    /// lists the run's fingerprint was made of), its upstream jobs' partitions that tile the
    /// window, from the cache when `known_upstream` holds the fingerprint the caller has just
    /// read, else from the store.
    pub fn partition_inputs<'p>(
        &self,
        pipeline: &'p Pipeline,
        def: &JobDef,
        window: &Window,
        source_files: &'p BTreeMap<String, Vec<FileIdentity>>,
        known_upstream: &HashMap<RunKey, String>,
    ) -> Result<BTreeMap<String, ResolvedInput<'p>>, InputError> {
        let mut inputs = BTreeMap::new();
        for input in &def.inputs {
            let resolved = match input {
                InputRef::Source(name) => ResolvedInput::Files {
                    source: Cow::Borrowed(Self::source_def(pipeline, name)?),
                    files: Cow::Borrowed(source_files.get(name).map_or(&[], Vec::as_slice)),
                    window: *window,
                },
                InputRef::Job(name) => {
                    let upstream = pipeline.job(name).ok_or_else(|| InputError::UnknownJob {
                        pipeline: pipeline.name.clone(),
                        job: name.clone(),
                    })?;
                    let windows = upstream_windows(pipeline, upstream, def, window);
                    let mut partitions = Vec::with_capacity(windows.len());
                    for window in windows {
                        let key = RunKey::new(&pipeline.name, name, window.start);
                        let fingerprint = known_upstream.get(&key).map(String::as_str);
                        let result = self.results.load_fingerprinted(&key, fingerprint)?;
                        partitions.push((result.frame, result.state));
                    }
                    ResolvedInput::rows(upstream_input(upstream, partitions)?)
                }
            };
            inputs.insert(input.name().to_owned(), resolved);
        }
        Ok(inputs)
    }

    /// The materialised results of `pipeline`'s `job` for the partitions inside `window`,
    /// each row with its `partition_start` and `partition_end`. Partitions without a current
    /// result are left out or refuse the read, as `gaps` says.
    pub fn results(
        &self,
        pipeline: &Pipeline,
        job: &str,
        window: &Window,
        gaps: Gaps,
    ) -> Result<ResolvedInput<'static>, InputError> {
        let results = read_job_results(&self.results, pipeline, job, window.start, window.end)?;
        if gaps == Gaps::Refuse {
            let (pipeline, job) = (pipeline.name.clone(), job.to_owned());
            if let Some(&first) = results.stale.first() {
                let count = results.stale.len();
                return Err(InputError::Stale {
                    pipeline,
                    job,
                    count,
                    first,
                });
            }
            if let Some(&first) = results.missing.first() {
                let count = results.missing.len();
                return Err(InputError::Missing {
                    pipeline,
                    job,
                    count,
                    first,
                });
            }
        }
        Ok(ResolvedInput::rows(JobInput::of_frame(
            results.frame.lazy(),
        )))
    }
}

/// What a run reads from the upstream job `upstream`: the rows of the upstream partitions that
/// tile its window ([`upstream_windows`]), in order, as one frame, with their mergeable states
/// (the roll-up of a `count_distinct`) and the upstream's kind. A partition run passes stored
/// results; `floe test` passes partitions it computed in memory or was given.
pub fn upstream_input(
    upstream: &JobDef,
    partitions: impl IntoIterator<Item = (DataFrame, Option<DataFrame>)>,
) -> Result<JobInput, InputError> {
    let mut frames = Vec::new();
    let mut states = Vec::new();
    for (frame, state) in partitions {
        frames.push(frame.lazy());
        states.extend(state);
    }
    let frame = concat(frames, UnionArgs::default()).map_err(|error| InputError::Combine {
        job: upstream.name.clone(),
        error,
    })?;
    Ok(JobInput {
        frame,
        states: (!states.is_empty()).then_some(states),
        upstream_kind: Some(upstream.kind().to_owned()),
        cached_rows: None,
    })
}

/// The partitions of `upstream` that a run of `def` over `window` reads: the same window for
/// the same grain, otherwise the finer windows that tile it (validation guarantees nesting).
pub fn upstream_windows(
    pipeline: &Pipeline,
    upstream: &JobDef,
    def: &JobDef,
    window: &Window,
) -> Vec<Window> {
    if upstream.grain == def.grain {
        vec![*window]
    } else {
        subwindows(upstream.grain, pipeline.timezone, window)
    }
}

/// Every upstream run a run of `def` over `window` reads, with its window.
pub fn upstream_keys(pipeline: &Pipeline, def: &JobDef, window: &Window) -> Vec<(RunKey, Window)> {
    let mut keys = Vec::new();
    for input in &def.inputs {
        if let InputRef::Job(name) = input
            && let Some(upstream) = pipeline.job(name)
        {
            for up in upstream_windows(pipeline, upstream, def, window) {
                keys.push((RunKey::new(&pipeline.name, name, up.start), up));
            }
        }
    }
    keys
}
