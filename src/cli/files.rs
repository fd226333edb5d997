//! The commands that need no store: `floe validate` checks pipeline files (and plans each job
//! on its inputs' schemas), `floe generate` writes the sample dataset.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::dataset::write_events_parquet;
use crate::job::JobRegistry;
use crate::partition::parse_instant;
use crate::pipeline;
use crate::plan_check;
use crate::sample::{SampleSpec, generate};

use super::setup::confine;
use super::{CliError, GenerateArgs, Paths, ValidateArgs, failed};

pub(super) fn validate(
    paths: &Paths,
    args: ValidateArgs,
    registry: &JobRegistry,
) -> Result<(), CliError> {
    let targets = if args.paths.is_empty() {
        vec![paths.pipelines.clone()]
    } else {
        args.paths
    };
    let mut files = Vec::new();
    // A folder without pipeline files validates nothing: a problem, not a silent success.
    let mut empty_folders = Vec::new();
    for target in &targets {
        if target.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(target)
                .map_err(|e| failed(format!("{}: {e}", target.display())))?
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|p| pipeline::is_pipeline_file(p))
                .collect();
            if found.is_empty() {
                empty_folders.push(pipeline::Diagnostic::new(
                    target,
                    "the folder holds no pipeline files (*.yaml, *.yml)",
                ));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(target.clone());
        }
    }
    let loaded = pipeline::load_files(&files, registry);
    if !empty_folders.is_empty() {
        let mut problems = empty_folders;
        if let Err(errors) = loaded {
            problems.extend(errors.0);
        }
        return Err(CliError::Invalid(pipeline::PipelineErrors(problems)));
    }
    let pipelines = confine(loaded?, &paths.roots())?;
    // Each job run on empty frames of its inputs' schemas (read from one file per source).
    let mut checks = Vec::with_capacity(pipelines.len());
    let mut problems = Vec::new();
    for pipeline in &pipelines {
        let text = std::fs::read_to_string(&pipeline.file).unwrap_or_default();
        match plan_check::check_pipeline(pipeline, &text).into_result() {
            Ok(check) => checks.push(check),
            Err(pipeline::PipelineErrors(found)) => problems.extend(found),
        }
    }
    if !problems.is_empty() {
        return Err(CliError::Invalid(pipeline::PipelineErrors(problems)));
    }
    for (pipeline, check) in pipelines.iter().zip(checks) {
        let file = pipeline.file.display();
        println!(
            "{file}: pipeline `{}` is valid ({} sources, {} jobs)",
            pipeline.name,
            pipeline.sources.len(),
            pipeline.jobs.len()
        );
        println!(
            "{file}: {} of {} jobs planned on their inputs' schemas",
            check.checked.len(),
            pipeline.jobs.len()
        );
        for note in &check.unchecked {
            println!("{note}");
        }
    }
    Ok(())
}

pub(super) fn generate_data(out: &Path, args: &GenerateArgs) -> Result<(), CliError> {
    let start = parse_instant(&args.start, chrono_tz::UTC).map_err(failed)?;
    let spec = SampleSpec {
        seed: args.seed,
        start,
        hours: args.days * 24,
        rows: args.rows,
        users: args.users,
    };
    let started = Instant::now();
    let events = generate(&spec);
    let summary =
        write_events_parquet(&events, &out.join("events"), start, spec.hours).map_err(failed)?;
    eprintln!(
        "wrote {} events in {} hourly Parquet files under {} in {:.2}s",
        summary.rows,
        summary.files,
        out.join("events").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
