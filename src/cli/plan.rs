//! `floe plan`: what `floe run` over the same range would do, and why, before doing it; with
//! `--yes`, it then does it.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use crate::clock::Clock;
use crate::job::JobRegistry;
use crate::materialize::RunRequest;
use crate::staleness::{Staleness, explain};

use super::run::run_pipeline;
use super::setup::{load_pipeline, open_materializer, selection_range};
use super::{CliError, Paths, PlanArgs, failed};

pub(super) fn plan(
    paths: &Paths,
    args: PlanArgs,
    registry: &JobRegistry,
    clock: Arc<dyn Clock>,
) -> Result<(), CliError> {
    let pipeline = load_pipeline(paths, &args.run.pipeline, registry)?;
    let (from, to) = selection_range(&pipeline, &args.run.jobs, &args.run.selection)?;
    // As `floe run`: only partitions whose window has ended.
    let to = to.min(clock.now());
    let materializer = open_materializer(paths, clock.clone())?;
    let request = RunRequest {
        jobs: (!args.run.jobs.is_empty()).then(|| args.run.jobs.clone()),
        from,
        to: to.max(from),
        force: args.run.force,
    };
    let changes = if from < to {
        explain(&materializer, &pipeline, &request).map_err(failed)?
    } else {
        Vec::new()
    };
    drop(materializer);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // Per job: how many runs of each reason, in the plan's order.
    let mut counts: Vec<(String, BTreeMap<&'static str, usize>)> = Vec::new();
    for change in &changes {
        if counts.last().is_none_or(|(job, _)| *job != change.job) {
            counts.push((change.job.clone(), BTreeMap::new()));
        }
        if let Some((_, by_reason)) = counts.last_mut() {
            *by_reason.entry(reason(&change.staleness)).or_default() += 1;
        }
    }
    for (job, by_reason) in &counts {
        let summary: Vec<String> = by_reason.iter().map(|(r, n)| format!("{n} {r}")).collect();
        writeln!(out, "{job}: {}", summary.join(", ")).map_err(failed)?;
    }
    let mut diffs_shown = std::collections::BTreeSet::new();
    for change in changes.iter().filter(|c| c.staleness.computes()) {
        let at = change.partition_start.to_rfc3339();
        let line = match &change.staleness {
            Staleness::Definition { diff } => {
                let mut line = format!("  {} {at}: the job's definition changed", change.job);
                if let Some(diff) = diff
                    && diffs_shown.insert(change.job.clone())
                {
                    line.push('\n');
                    for diff_line in diff.lines() {
                        line.push_str(&format!("      {diff_line}\n"));
                    }
                    line.pop();
                }
                line
            }
            Staleness::Sources { files } if files.is_empty() => format!(
                "  {} {at}: source files were removed or replaced",
                change.job
            ),
            Staleness::Sources { files } => format!(
                "  {} {at}: source files changed: {}",
                change.job,
                files.join(", ")
            ),
            Staleness::Upstream { run } => {
                format!("  {} {at}: follows {run}", change.job)
            }
            Staleness::Missing => format!("  {} {at}: missing", change.job),
            Staleness::Forced => format!("  {} {at}: forced", change.job),
            Staleness::Fresh | Staleness::Blocked { .. } => continue,
        };
        writeln!(out, "{line}").map_err(failed)?;
    }
    for change in &changes {
        if let Staleness::Blocked { error } = &change.staleness {
            writeln!(
                out,
                "  {} {}: cannot run now: {error}",
                change.job,
                change.partition_start.to_rfc3339()
            )
            .map_err(failed)?;
        }
    }
    let computing = changes.iter().filter(|c| c.staleness.computes()).count();
    writeln!(
        out,
        "{} runs planned, {computing} would compute, {} fresh",
        changes.len(),
        changes
            .iter()
            .filter(|c| c.staleness == Staleness::Fresh)
            .count()
    )
    .map_err(failed)?;
    drop(out);
    if args.yes && computing > 0 {
        run_pipeline(paths, args.run, registry, clock)?;
    }
    Ok(())
}

fn reason(staleness: &Staleness) -> &'static str {
    match staleness {
        Staleness::Fresh => "fresh",
        Staleness::Missing => "missing",
        Staleness::Forced => "forced",
        Staleness::Definition { .. } => "definition changed",
        Staleness::Sources { .. } => "sources changed",
        Staleness::Upstream { .. } => "upstream changed",
        Staleness::Blocked { .. } => "blocked",
    }
}
