//! Running a materialisation job: its runs go through the scheduler, and its result is the
//! target job's results or the runs' outcomes.

use polars::prelude::*;

use crate::error::error_chain;
use crate::materialize::{RunEvent, RunOutcome, RunRequest};
use crate::results::read_job_results;
use crate::scheduler::ManualRunError;

use super::plan::PipelinePlan;
use super::{ExecError, JobServer, LiveJob, StopReason};

impl JobServer {
    pub(super) fn execute_pipeline(
        &self,
        live: &LiveJob,
        plan: &PipelinePlan,
    ) -> Result<DataFrame, ExecError> {
        Self::checkpoint(live)?;
        let scheduler = self.scheduler.get().ok_or_else(|| ExecError::Failed {
            message: "no scheduler runs pipeline runs in this process".to_owned(),
            class: "floe.MaterializeError",
        })?;
        let request = RunRequest {
            jobs: plan.jobs.clone(),
            from: plan.from,
            to: plan.to,
            force: plan.force,
        };
        // The scheduler runs them with every other run (a backfill's of the same partitions
        // included, which this job then shares): a stop cancels the runs only it queued.
        let report = scheduler
            .run_to_end(
                plan.app.name(),
                &request,
                &|| live.stop_reason() != StopReason::None,
                &mut |_| {},
            )
            .map_err(|e| match e {
                ManualRunError::Stopped => ExecError::Stopped,
                // The scheduler stops first at shutdown; the job ends as every job cut short
                // by it does.
                ManualRunError::ShuttingDown => ExecError::Failed {
                    message: "server shut down before the job finished".to_owned(),
                    class: "floe.ServerShutdown",
                },
                ManualRunError::Scheduler(e) => ExecError::Failed {
                    message: error_chain(&e),
                    class: "floe.MaterializeError",
                },
            })?;
        if !report.is_success() {
            let first = report
                .failed
                .first()
                .map(|(key, error)| format!("; first: {key}: {error}"))
                .unwrap_or_default();
            return Err(ExecError::Failed {
                message: format!(
                    "{} of {} runs failed, {} skipped because an upstream run failed{first}",
                    report.failed.len(),
                    report.planned,
                    report.upstream_failed
                ),
                class: "floe.RunFailed",
            });
        }
        Self::checkpoint(live)?;
        match &plan.target {
            Some(job) => read_job_results(
                &self.materializer,
                &plan.app.pipeline,
                job,
                plan.from,
                plan.to,
            )
            .map(|results| results.frame)
            .map_err(|e| ExecError::Failed {
                message: e.to_string(),
                class: "floe.ResultsError",
            }),
            None => events_frame(&report.runs).map_err(|e| ExecError::Failed {
                message: e.to_string(),
                class: "floe.ResultEncoding",
            }),
        }
    }
}

/// The runs of a pipeline run as a frame: job, partition, outcome, rows, error, milliseconds.
fn events_frame(events: &[RunEvent]) -> PolarsResult<DataFrame> {
    let mut jobs = Vec::with_capacity(events.len());
    let mut partitions = Vec::with_capacity(events.len());
    let mut outcomes = Vec::with_capacity(events.len());
    let mut rows: Vec<Option<u64>> = Vec::with_capacity(events.len());
    let mut errors: Vec<Option<String>> = Vec::with_capacity(events.len());
    let mut millis = Vec::with_capacity(events.len());
    for event in events {
        jobs.push(event.key.job.clone());
        partitions.push(event.key.partition_start.to_rfc3339());
        let (outcome, row_count, error) = match &event.outcome {
            RunOutcome::Fresh => ("fresh", None, None),
            RunOutcome::Computed { rows } => ("computed", Some(*rows), None),
            RunOutcome::Failed { error } => ("failed", None, Some(error.clone())),
            RunOutcome::UpstreamFailed { upstream } => (
                "upstream_failed",
                None,
                Some(format!("upstream {upstream} failed")),
            ),
        };
        outcomes.push(outcome);
        rows.push(row_count);
        errors.push(error);
        millis.push(event.elapsed_ms);
    }
    df!(
        "job" => jobs,
        "partition_start" => partitions,
        "outcome" => outcomes,
        "rows" => rows,
        "error" => errors,
        "elapsed_ms" => millis,
    )
}
