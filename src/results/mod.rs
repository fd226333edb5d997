//! The read side: the in-memory cache of decoded results ([`ResultCache`]), stored results of
//! single partitions ([`StoredResults`], through the cache of
//! decoded results), and materialised results of a job over a time range, as one frame.
//!
//! Each partition's result is prefixed with `partition_start` and `partition_end` (UTC-aware
//! datetimes) so a range read is self-describing. Only succeeded partitions computed by the
//! job's current definition are returned: the caller learns which partitions of the range are
//! missing from [`JobResults::missing`], and which hold a result another definition made (an
//! earlier or replaced version of the pipeline, or of a job upstream) from
//! [`JobResults::stale`]; those are never served as current.

pub mod cache;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use polars::prelude::*;

use crate::frames::decode_ipc;
use crate::partition::{Grain, windows_within};
use crate::pipeline::Pipeline;
use crate::store::{ResultMeta, RunKey, RunState, Store, StoreError};
pub use cache::{CachedResult, ResultCache};

/// The stored results of partitions, read through the cache of decoded results.
#[derive(Debug, Clone)]
pub struct StoredResults {
    store: Store,
    cache: Arc<ResultCache>,
}

impl AsRef<StoredResults> for StoredResults {
    fn as_ref(&self) -> &StoredResults {
        self
    }
}

impl StoredResults {
    pub fn new(store: Store, cache: Arc<ResultCache>) -> StoredResults {
        StoredResults { store, cache }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn cache(&self) -> &Arc<ResultCache> {
        &self.cache
    }

    /// The stored result of `key`, from the cache when it holds the current fingerprint.
    pub fn load(&self, key: &RunKey) -> Result<CachedResult, ResultsError> {
        let meta = self
            .store
            .result_meta(key)?
            .ok_or_else(|| ResultsError::NoResult(key.clone()))?;
        self.load_of(key, &meta)
    }

    /// The stored result of `key`, from the cache when it holds `fingerprint`.
    pub fn load_fingerprinted(
        &self,
        key: &RunKey,
        fingerprint: Option<&str>,
    ) -> Result<CachedResult, ResultsError> {
        match fingerprint.and_then(|fingerprint| self.cache.get(key, fingerprint)) {
            Some(cached) => Ok(cached),
            None => self.load(key),
        }
    }

    /// The stored result of `key` if the definition `lineage` (a job's
    /// [`crate::pipeline::JobDef::lineage_fingerprint`]) computed it; `None` when another
    /// definition did, or one that Floe did not record: such a result is stale and must not be
    /// served as current.
    pub fn load_current(
        &self,
        key: &RunKey,
        lineage: &str,
    ) -> Result<Option<CachedResult>, ResultsError> {
        let meta = self
            .store
            .result_meta(key)?
            .ok_or_else(|| ResultsError::NoResult(key.clone()))?;
        if meta.definition.as_deref() != Some(lineage) {
            return Ok(None);
        }
        self.load_of(key, &meta).map(Some)
    }

    fn load_of(&self, key: &RunKey, meta: &ResultMeta) -> Result<CachedResult, ResultsError> {
        if let Some(cached) = self.cache.get(key, &meta.fingerprint) {
            return Ok(cached);
        }
        // One read transaction: the bytes and the fingerprint they are cached under must
        // belong to the same result even if the run is being recomputed meanwhile.
        let stored = self
            .store
            .result(key)?
            .ok_or_else(|| ResultsError::NoResult(key.clone()))?;
        let unreadable = |what: &'static str| {
            let key = key.clone();
            move |error| ResultsError::Unreadable { key, what, error }
        };
        let frame = decode_ipc(&stored.frame_ipc).map_err(unreadable("result"))?;
        let state = match &stored.state_ipc {
            Some(bytes) => Some(decode_ipc(bytes).map_err(unreadable("state"))?),
            None => None,
        };
        let result = CachedResult { frame, state };
        self.cache
            .insert(key.clone(), stored.meta.fingerprint, result.clone());
        Ok(result)
    }
}

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
    #[error("no stored result for {0}")]
    NoResult(RunKey),
    #[error("stored {what} of {key} is unreadable: {error}")]
    Unreadable {
        key: RunKey,
        what: &'static str,
        error: PolarsError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Polars(#[from] PolarsError),
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
    results: &impl AsRef<StoredResults>,
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
    let results = results.as_ref();
    for window in windows {
        let key = RunKey {
            pipeline: pipeline.name.clone(),
            job: job.to_owned(),
            partition_start: window.start,
        };
        let succeeded = results
            .store()
            .run(&key)?
            .is_some_and(|run| run.state == RunState::Succeeded);
        if !succeeded {
            missing.push(window.start);
            continue;
        }
        let Some(result) = results.load_current(&key, &def.lineage_fingerprint)? else {
            stale.push(window.start);
            continue;
        };
        let height = result.frame.height();
        let utc = DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC));
        let start = Column::new(
            PARTITION_START.into(),
            vec![window.start.timestamp_millis(); height],
        )
        .cast(&utc)?;
        let end = Column::new(
            PARTITION_END.into(),
            vec![window.end.timestamp_millis(); height],
        )
        .cast(&utc)?;
        let mut columns = vec![start, end];
        columns.extend(result.frame.columns().iter().cloned());
        frames.push(DataFrame::new(height, columns)?.lazy());
    }
    let frame = if frames.is_empty() {
        DataFrame::empty()
    } else {
        concat(frames, UnionArgs::default()).and_then(LazyFrame::collect)?
    };
    Ok(JobResults {
        frame,
        missing,
        stale,
    })
}
