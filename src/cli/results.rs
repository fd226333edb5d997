//! `floe results`: a job's materialised results printed, with notes on partitions left out.

use std::io::Write;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use polars::prelude::*;

use crate::clock::Clock;
use crate::job::JobRegistry;
use crate::results::read_job_results;
use crate::store::{RunKey, Store};

use super::setup::{load_pipeline, open_materializer, selection_range};
use super::{CliError, OutputFormat, Paths, ResultsArgs, failed};

pub(super) fn results(
    paths: &Paths,
    args: ResultsArgs,
    registry: &JobRegistry,
    clock: Arc<dyn Clock>,
) -> Result<(), CliError> {
    let pipeline = load_pipeline(paths, &args.pipeline, registry)?;
    let (from, to) = selection_range(&pipeline, std::slice::from_ref(&args.job), &args.selection)?;
    let materializer = open_materializer(paths, clock)?;
    let results =
        read_job_results(&materializer, &pipeline, &args.job, from, to).map_err(failed)?;
    if !results.missing.is_empty() {
        eprintln!(
            "note: {} partitions of `{}` in the range are not materialised (first: {})",
            results.missing.len(),
            args.job,
            results.missing[0]
        );
        note_unsuccessful_runs(
            materializer.store(),
            &pipeline.name,
            &args.job,
            &results.missing,
        );
    }
    if let Some(first) = results.stale.first() {
        eprintln!(
            "note: {} partitions of `{}` in the range hold results of another definition and \
             are left out until run again (first: {first})",
            results.stale.len(),
            args.job,
        );
    }
    let mut frame = results.frame;
    print_frame(&mut frame, args.format)
}

/// Says what the runs of partitions without a result came to (failed, upstream_failed,
/// cancelled, still queued), as recorded by whichever process ran them.
fn note_unsuccessful_runs(store: &Store, pipeline: &str, job: &str, missing: &[DateTime<Utc>]) {
    let mut states: std::collections::BTreeMap<&'static str, usize> = Default::default();
    let mut first_error: Option<(RunKey, String)> = None;
    for start in missing {
        let key = RunKey::new(pipeline, job, *start);
        let Ok(Some(record)) = store.run(&key) else {
            continue;
        };
        *states.entry(record.state.as_str()).or_default() += 1;
        if first_error.is_none()
            && let Some(error) = record.error
        {
            first_error = Some((key, error));
        }
    }
    if states.is_empty() {
        return;
    }
    let counts: Vec<String> = states
        .iter()
        .map(|(state, count)| format!("{count} {state}"))
        .collect();
    let first = first_error
        .map(|(key, error)| format!(" (first: {key}: {error})"))
        .unwrap_or_default();
    eprintln!("note: their runs: {}{first}", counts.join(", "));
}

fn print_frame(frame: &mut DataFrame, format: OutputFormat) -> Result<(), CliError> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match format {
        OutputFormat::Table => writeln!(out, "{frame}").map_err(failed),
        OutputFormat::Csv => CsvWriter::new(&mut out).finish(frame).map_err(failed),
        OutputFormat::Json => {
            // polars' JSON writer panics on them; the user gets words instead.
            let unwritable = crate::frames::json_unwritable_columns(frame);
            if !unwritable.is_empty() {
                return Err(failed(format!(
                    "JSON cannot carry column(s) {} (binary or decimal): use --format csv or \
                     --format table",
                    unwritable.join(", ")
                )));
            }
            JsonWriter::new(&mut out)
                .with_json_format(JsonFormat::Json)
                .finish(frame)
                .map_err(failed)?;
            writeln!(out).map_err(failed)
        }
    }
}
