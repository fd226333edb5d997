//! `floe runs`: the recorded runs of a pipeline's jobs — state, attempts, rows, error and the
//! outcomes of their data checks — as `GET /pipelines/{p}/runs` serves them.

use std::io::Write;

use crate::job::JobRegistry;
use crate::store::{CheckOutcome, Store};

use super::setup::{load_pipeline, selection_range};
use super::{CliError, Paths, RunsArgs, failed, failed_with_causes};

pub(super) fn runs(paths: &Paths, args: RunsArgs, registry: &JobRegistry) -> Result<(), CliError> {
    let pipeline = load_pipeline(paths, &args.pipeline, registry)?;
    let jobs: Vec<String> = if args.jobs.is_empty() {
        pipeline.dag.topological_order().to_vec()
    } else {
        for job in &args.jobs {
            if pipeline.job(job).is_none() {
                return Err(failed(format!(
                    "pipeline {} has no job `{job}` (jobs: {})",
                    pipeline.name,
                    pipeline.dag.topological_order().join(", ")
                )));
            }
        }
        args.jobs.clone()
    };
    let (from, to) = selection_range(&pipeline, &jobs, &args.selection)?;
    let store = Store::open(&paths.store).map_err(failed_with_causes)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut listed = 0;
    for job in &jobs {
        for (key, record) in store
            .runs_of_job(&pipeline.name, job, from, to)
            .map_err(failed_with_causes)?
        {
            listed += 1;
            let mut line = format!(
                "{job}  {}  {}  attempts {}",
                key.partition_start.to_rfc3339(),
                record.state.as_str(),
                record.attempts
            );
            if let Some(error) = &record.error {
                line.push_str(&format!("  error: {error}"));
            }
            if !record.checks.is_empty() {
                line.push_str(&format!("  checks: {}", checks_summary(&record.checks)));
            }
            writeln!(out, "{line}").map_err(failed)?;
        }
    }
    if listed == 0 {
        eprintln!("note: no recorded runs of {} in the range", jobs.join(", "));
    }
    Ok(())
}

/// `3 passed, 1 failed (warn): name: why`.
fn checks_summary(checks: &[CheckOutcome]) -> String {
    let passed = checks.iter().filter(|c| c.passed).count();
    let mut summary = format!("{passed} passed");
    for check in checks.iter().filter(|c| !c.passed) {
        summary.push_str(&format!(
            ", failed ({}): {}: {}",
            check.severity,
            check.name,
            check.detail.as_deref().unwrap_or("")
        ));
    }
    summary
}
