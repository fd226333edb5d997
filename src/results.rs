//! The read side: materialised results of a job over a time range, as one frame.
//!
//! Each partition's result is prefixed with `partition_start` and `partition_end` (UTC-aware
//! datetimes) so a range read is self-describing. Only succeeded partitions computed by the
//! job's current definition are returned: the caller learns which partitions of the range are
//! missing from [`JobResults::missing`], and which hold a result another definition made (an
//! earlier or replaced version of the pipeline, or of a job upstream) from
//! [`JobResults::stale`]; those are never served as current.

use chrono::{DateTime, Utc};
use polars::prelude::*;

use crate::materialize::Materializer;
use crate::partition::windows_within;
use crate::pipeline::Pipeline;
use crate::store::{RunKey, RunState};

#[derive(Debug, Clone)]
pub struct JobResults {
    pub frame: DataFrame,
    /// Partitions of the range that are inside the pipeline's span but not materialised.
    pub missing: Vec<DateTime<Utc>>,
    /// Partitions whose stored result another definition computed: left out until a run
    /// recomputes them.
    pub stale: Vec<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("pipeline `{pipeline}` has no job `{job}`")]
    UnknownJob { pipeline: String, job: String },
    #[error("{0}")]
    Read(String),
}

pub const PARTITION_START: &str = "partition_start";
pub const PARTITION_END: &str = "partition_end";

/// Results of `job` for the partitions whose window lies inside [from, to).
pub fn read_job_results(
    materializer: &Materializer,
    pipeline: &Pipeline,
    job: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<JobResults, ResultsError> {
    let def = pipeline.job(job).ok_or_else(|| ResultsError::UnknownJob {
        pipeline: pipeline.name.clone(),
        job: job.to_owned(),
    })?;
    let from = from.max(pipeline.start);
    let to = pipeline.end.map_or(to, |end| to.min(end));
    let mut frames = Vec::new();
    let mut missing = Vec::new();
    let mut stale = Vec::new();
    let windows = if from < to {
        windows_within(def.grain, pipeline.timezone, from, to)
    } else {
        Vec::new()
    };
    let read_error = |e: PolarsError| ResultsError::Read(e.to_string());
    for window in windows {
        let key = RunKey {
            pipeline: pipeline.name.clone(),
            job: job.to_owned(),
            partition_start: window.start,
        };
        let succeeded = materializer
            .store()
            .run(&key)
            .map_err(|e| ResultsError::Read(crate::error::error_chain(&e)))?
            .is_some_and(|run| run.state == RunState::Succeeded);
        if !succeeded {
            missing.push(window.start);
            continue;
        }
        let Some(result) = materializer
            .load_current_result(&key, &def.lineage_fingerprint)
            .map_err(ResultsError::Read)?
        else {
            stale.push(window.start);
            continue;
        };
        let height = result.frame.height();
        let utc = DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC));
        let start = Column::new(
            PARTITION_START.into(),
            vec![window.start.timestamp_millis(); height],
        )
        .cast(&utc)
        .map_err(read_error)?;
        let end = Column::new(
            PARTITION_END.into(),
            vec![window.end.timestamp_millis(); height],
        )
        .cast(&utc)
        .map_err(read_error)?;
        let mut columns = vec![start, end];
        columns.extend(result.frame.columns().iter().cloned());
        frames.push(DataFrame::new(height, columns).map_err(read_error)?.lazy());
    }
    let frame = if frames.is_empty() {
        DataFrame::empty()
    } else {
        concat(frames, UnionArgs::default())
            .and_then(LazyFrame::collect)
            .map_err(read_error)?
    };
    Ok(JobResults {
        frame,
        missing,
        stale,
    })
}
