//! The partition grid of a pipeline: for each job, every partition of a range — windows of the
//! job's grain in the pipeline's calendar, so a daily partition on a DST day is 23 or 25 hours —
//! with the state of its run, or why it has none. What `GET /pipelines/{p}/grid` serves for the
//! web UI's grid, from one store lookup per partition.
//!
//! Above the store, the pipeline definitions and the partition calendar, which it reads; below
//! the server. It computes no fingerprints: whether a succeeded partition is stale is
//! `staleness`' question (`GET /pipelines/{p}/plan`), asked per range on demand.

use crate::partition::{Grain, Window, partition_label, windows_within};
use crate::pipeline::Pipeline;
use crate::store::{RunKey, RunRecord, RunState, Store, StoreError};
use chrono::{DateTime, Utc};

/// What a cell of the grid shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellState {
    /// Computed; its result is stored.
    Succeeded,
    /// Failed for good (no retry planned).
    Failed,
    /// Failed, with a retry due at `retry_at`.
    Retrying,
    Running,
    /// Planned, waiting for its upstream runs or a dispatch slot.
    Queued,
    /// Planned, waiting for its source files (since `waiting_since`).
    Waiting,
    /// Not attempted: an upstream run it reads failed.
    UpstreamFailed,
    Cancelled,
    /// Its window has ended and no run of it was ever planned.
    Missing,
    /// Its window has not ended yet.
    NotDue,
}

impl CellState {
    /// Every state, in the order a legend lists them.
    pub const ALL: [CellState; 10] = [
        CellState::Succeeded,
        CellState::Failed,
        CellState::Retrying,
        CellState::Running,
        CellState::Queued,
        CellState::Waiting,
        CellState::UpstreamFailed,
        CellState::Cancelled,
        CellState::Missing,
        CellState::NotDue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CellState::Succeeded => "succeeded",
            CellState::Failed => "failed",
            CellState::Retrying => "retrying",
            CellState::Running => "running",
            CellState::Queued => "queued",
            CellState::Waiting => "waiting",
            CellState::UpstreamFailed => "upstream_failed",
            CellState::Cancelled => "cancelled",
            CellState::Missing => "missing",
            CellState::NotDue => "not_due",
        }
    }

    /// The state of a partition whose run is `record`.
    fn of_run(record: &RunRecord) -> CellState {
        match record.state {
            RunState::Succeeded => CellState::Succeeded,
            RunState::Failed if record.retry_at.is_some() => CellState::Retrying,
            RunState::Failed => CellState::Failed,
            RunState::Running => CellState::Running,
            RunState::Pending if record.waiting_since.is_some() => CellState::Waiting,
            RunState::Pending => CellState::Queued,
            RunState::UpstreamFailed => CellState::UpstreamFailed,
            RunState::Cancelled => CellState::Cancelled,
        }
    }
}

/// One partition of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The partition as people name it, in the pipeline's timezone ("2024-03-10").
    pub label: String,
    pub state: CellState,
    /// Attempts of its run so far (0 without one).
    pub attempts: u32,
    /// Why its run failed, when it did.
    pub error: Option<String>,
    pub retry_at: Option<DateTime<Utc>>,
    pub waiting_since: Option<DateTime<Utc>>,
    /// When its run last started, and when it finished.
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A job's row of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub job: String,
    pub kind: String,
    pub grain: Grain,
    pub cells: Vec<Cell>,
}

/// The grid of `jobs` of `pipeline` over `[from, to)` (each job's partitions lying inside it,
/// within the pipeline's start and end), as the store holds their runs at `now`.
pub fn partition_grid(
    store: &Store,
    pipeline: &Pipeline,
    jobs: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<JobRow>, StoreError> {
    let from = from.max(pipeline.start);
    let to = pipeline.end.map_or(to, |end| to.min(end));
    let mut rows = Vec::with_capacity(jobs.len());
    for job in jobs {
        let Some(def) = pipeline.job(job) else {
            continue;
        };
        let windows = windows_within(def.grain, pipeline.timezone, from, to);
        let mut cells = Vec::with_capacity(windows.len());
        for window in windows {
            // One lookup per window, so the work is the cells', whatever history lies between
            // them. A run is this window's only if it ends where the window does: after a
            // change of grain, the run of an old hour starting at midnight is not the day's.
            let key = RunKey {
                pipeline: pipeline.name.clone(),
                job: job.clone(),
                partition_start: window.start,
            };
            let run = store
                .run(&key)?
                .filter(|record| record.partition_end == window.end);
            cells.push(cell(pipeline, def.grain, window, run.as_ref(), now));
        }
        rows.push(JobRow {
            job: job.clone(),
            kind: def.kind().to_owned(),
            grain: def.grain,
            cells,
        });
    }
    Ok(rows)
}

fn cell(
    pipeline: &Pipeline,
    grain: Grain,
    window: Window,
    run: Option<&RunRecord>,
    now: DateTime<Utc>,
) -> Cell {
    let label = partition_label(grain, pipeline.timezone, &window);
    let state = match run {
        Some(record) => CellState::of_run(record),
        None if window.end <= now => CellState::Missing,
        None => CellState::NotDue,
    };
    Cell {
        start: window.start,
        end: window.end,
        label,
        state,
        attempts: run.map_or(0, |r| r.attempts),
        error: run.and_then(|r| r.error.clone()),
        retry_at: run.and_then(|r| r.retry_at),
        waiting_since: run.and_then(|r| r.waiting_since),
        started_at: run.and_then(|r| r.started_at),
        finished_at: run.and_then(|r| r.finished_at),
    }
}
