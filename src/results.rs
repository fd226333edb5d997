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
use crate::partition::{Grain, windows_within};
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

/// At most how many partitions of `job` a read of [from, to) covers (clipped to the
/// pipeline's span), without listing them: what a request is held to before anything is read.
/// Counts the shortest window of the grain (23 hours, 28 days), so it never under-counts.
pub fn partitions_spanned(
    pipeline: &Pipeline,
    job: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> u64 {
    let Some(def) = pipeline.job(job) else {
        return 0;
    };
    let from = from.max(pipeline.start);
    let to = pipeline.end.map_or(to, |end| to.min(end));
    if from >= to {
        return 0;
    }
    let shortest_hours: i64 = match def.grain {
        Grain::Hourly => 1,
        Grain::Daily => 23,
        Grain::Weekly => 7 * 24 - 1,
        Grain::Monthly => 28 * 24 - 1,
    };
    let hours = (to - from).num_hours().max(0);
    u64::try_from(hours / shortest_hours + 2).unwrap_or(u64::MAX)
}

/// At most how many runs a request over [from, to) plans: the partitions of `jobs` (every job
/// when `None`) and of the jobs upstream of them, which a run computes first.
pub fn runs_spanned(
    pipeline: &Pipeline,
    jobs: Option<&[String]>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> u64 {
    let planned: Vec<String> = match jobs {
        Some(jobs) => pipeline.dag.with_ancestors(jobs).into_iter().collect(),
        None => pipeline.dag.topological_order().to_vec(),
    };
    planned
        .iter()
        .map(|job| partitions_spanned(pipeline, job, from, to))
        .fold(0u64, u64::saturating_add)
}

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
