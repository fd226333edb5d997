//! `floe test`: runs the pipelines' unit tests (`*.test.yaml`) in memory and prints, for each
//! failing test, how the produced rows differ from the expected ones; `--update` writes the
//! produced rows as the expectations instead. Needs no store and no data.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::SecondsFormat;
use clap::Args;

use crate::engine::PolarsEngine;
use crate::job::JobRegistry;
use crate::partition::partition_label;
use crate::pipeline::{self, Diagnostic, Pipeline, PipelineErrors};
use crate::pipeline_tests::compare::{Expected, compare, frame_cells};
use crate::pipeline_tests::{
    JobCheck, PipelineTest, Rewrite, TestFile, load_test_file, parse_test_file,
    rewrite_expectations, run_test,
};

use super::{CliError, Paths, failed};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Test files (`*.test.yaml`) or folders holding them [default: the pipelines folder].
    pub paths: Vec<PathBuf>,
    /// Write what the jobs produce as the expected rows of the tests that differ.
    #[arg(long)]
    pub update: bool,
    /// Only the tests whose name contains this text.
    #[arg(long)]
    pub filter: Option<String>,
}

/// What the run of every test file came to.
#[derive(Default)]
struct Tally {
    run: usize,
    failed: usize,
    updated: usize,
    /// Test files or pipelines that do not load, and updates that could not be written.
    problems: Vec<Diagnostic>,
}

pub(super) fn run_tests(
    paths: &Paths,
    args: TestArgs,
    registry: &JobRegistry,
) -> Result<(), CliError> {
    let targets = if args.paths.is_empty() {
        vec![paths.pipelines.clone()]
    } else {
        args.paths.clone()
    };
    let mut tally = Tally::default();
    let files = test_files(&targets, &mut tally.problems)?;
    if files.is_empty() && tally.problems.is_empty() {
        return Err(failed(format!(
            "no test files (*.test.yaml, *.test.yml) in {}",
            targets
                .iter()
                .map(|target| target.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    // The pipelines of each folder, loaded once for all its test files.
    let mut folders: BTreeMap<PathBuf, Option<Vec<Arc<Pipeline>>>> = BTreeMap::new();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for file in &files {
        let folder = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let pipelines = folders.entry(folder.clone()).or_insert_with(|| {
            let dir = if folder.as_os_str().is_empty() {
                Path::new(".")
            } else {
                &folder
            };
            match pipeline::load_dir(dir, registry) {
                Ok(pipelines) => Some(pipelines.into_iter().map(Arc::new).collect()),
                Err(PipelineErrors(problems)) => {
                    tally.problems.extend(problems);
                    None
                }
            }
        });
        let Some(pipelines) = pipelines.as_deref() else {
            continue;
        };
        match load_test_file(file, pipelines) {
            Ok(test_file) => run_file(&test_file, pipelines, &args, &mut tally, &mut out)
                .map_err(|err| failed(format!("cannot write the report: {err}")))?,
            Err(PipelineErrors(problems)) => tally.problems.extend(problems),
        }
    }
    if args.filter.is_some() && tally.run == 0 && tally.problems.is_empty() {
        return Err(failed(format!(
            "no test's name contains `{}`",
            args.filter.as_deref().unwrap_or_default()
        )));
    }
    let summary = if args.update {
        format!(
            "{}: {} passed, {} updated, {} failed",
            count(tally.run, "test", "tests"),
            tally.run - tally.failed - tally.updated,
            tally.updated,
            tally.failed
        )
    } else {
        format!(
            "{}: {} passed, {} failed",
            count(tally.run, "test", "tests"),
            tally.run - tally.failed,
            tally.failed
        )
    };
    let _ = writeln!(out, "\n{summary}");
    drop(out);
    if !tally.problems.is_empty() {
        return Err(CliError::Invalid(PipelineErrors(tally.problems)));
    }
    if tally.failed > 0 {
        return Err(failed(format!(
            "{} of {} tests failed",
            tally.failed, tally.run
        )));
    }
    Ok(())
}

/// The test files `targets` name: files as given, folders' `*.test.yaml` and `*.test.yml`.
fn test_files(
    targets: &[PathBuf],
    problems: &mut Vec<Diagnostic>,
) -> Result<Vec<PathBuf>, CliError> {
    let mut files = Vec::new();
    for target in targets {
        if target.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(target)
                .map_err(|err| failed(format!("{}: {err}", target.display())))?
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.is_file() && pipeline::is_test_file(path))
                .collect();
            found.sort();
            files.extend(found);
        } else if pipeline::is_test_file(target) {
            files.push(target.clone());
        } else {
            problems.push(Diagnostic::new(
                target,
                "not a test file: `floe test` reads files named *.test.yaml or *.test.yml",
            ));
        }
    }
    Ok(files)
}

/// Runs the tests of one file (those `--filter` keeps), prints them, and with `--update`
/// rewrites the expectations that differ.
fn run_file(
    file: &TestFile,
    pipelines: &[Arc<Pipeline>],
    args: &TestArgs,
    tally: &mut Tally,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let selected: Vec<_> = file
        .tests
        .iter()
        .filter(|test| {
            args.filter
                .as_deref()
                .is_none_or(|filter| test.name.contains(filter))
        })
        .collect();
    if selected.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "{} (pipeline `{}`)",
        file.path.display(),
        file.pipeline.name
    )?;
    let mut rewrites: Vec<(Rewrite, JobCheck)> = Vec::new();
    for test in selected {
        tally.run += 1;
        let outcome = run_test(file, test, &PolarsEngine);
        let timing = format!(
            "{}, {} computed, {} ms",
            count(test.expect.len(), "job checked", "jobs checked"),
            count(outcome.runs, "partition", "partitions"),
            outcome.elapsed.as_millis()
        );
        if outcome.passed() {
            writeln!(out, "  ok    {}  ({timing})", test.name)?;
            continue;
        }
        let checks = match &outcome.result {
            Ok(checks) if args.update => {
                tally.updated += 1;
                writeln!(out, "  UPDATE {}  ({timing})", test.name)?;
                print_failures(file, test, checks, out)?;
                for check in checks.iter().filter(|check| !check.comparison.passed) {
                    rewrites.push((rewrite_of(test, check), check.clone()));
                }
                continue;
            }
            Ok(checks) => checks,
            Err(error) => {
                tally.failed += 1;
                writeln!(out, "  FAIL  {}  ({timing})", test.name)?;
                writeln!(out, "        {error}")?;
                continue;
            }
        };
        tally.failed += 1;
        writeln!(out, "  FAIL  {}  ({timing})", test.name)?;
        print_failures(file, test, checks, out)?;
    }
    if !rewrites.is_empty() {
        match update_file(file, pipelines, &rewrites) {
            Ok(()) => {
                for (rewrite, _) in &rewrites {
                    writeln!(
                        out,
                        "  updated {}: the expected rows of `{}` ({})",
                        rewrite.test,
                        rewrite.job,
                        count(rewrite.rows.len(), "row", "rows")
                    )?;
                }
            }
            Err(problem) => {
                let tests: std::collections::BTreeSet<&str> =
                    rewrites.iter().map(|(r, _)| r.test.as_str()).collect();
                tally.updated -= tests.len();
                tally.failed += tests.len();
                tally.problems.push(Diagnostic::new(
                    &file.path,
                    format!("--update: {problem}; the file is left as it was"),
                ));
            }
        }
    }
    Ok(())
}

fn print_failures(
    file: &TestFile,
    test: &PipelineTest,
    checks: &[JobCheck],
    out: &mut impl Write,
) -> std::io::Result<()> {
    let timezone = file.pipeline.timezone;
    for check in checks {
        let expectation = &test.expect[check.expectation];
        let grain = file
            .pipeline
            .job(&expectation.job)
            .map(|def| def.grain)
            .unwrap_or(crate::partition::Grain::Hourly);
        let window = expectation.window;
        let header = format!(
            "job `{}`, {grain} partition {} [{}, {})",
            expectation.job,
            partition_label(grain, timezone, &window),
            window.start.to_rfc3339_opts(SecondsFormat::Secs, true),
            window.end.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        let comparison = &check.comparison;
        if comparison.passed {
            writeln!(out, "        {header}: ok")?;
            continue;
        }
        writeln!(
            out,
            "        {header}: {} expected, {} produced",
            count(comparison.expected_rows, "row", "rows"),
            count(comparison.produced_rows, "row", "rows")
        )?;
        for line in comparison.diff_lines("          ") {
            writeln!(out, "{line}")?;
        }
    }
    writeln!(
        out,
        "        (- expected, not produced; + produced, not expected; ~ expected → produced)"
    )
}

fn count(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// The rows to write for a failing check: the produced rows, in the columns the expectation
/// compares when it is partial and names some, else every produced column.
fn rewrite_of(test: &PipelineTest, check: &JobCheck) -> Rewrite {
    let expectation = &test.expect[check.expectation];
    let produced: Vec<String> = check
        .produced
        .get_column_names()
        .iter()
        .map(|name| name.to_string())
        .collect();
    let columns = if expectation.partial && !expectation.columns.is_empty() {
        expectation
            .columns
            .iter()
            .filter(|name| produced.contains(name))
            .cloned()
            .collect()
    } else {
        produced
    };
    Rewrite {
        test: test.name.clone(),
        job: expectation.job.clone(),
        rows: frame_cells(&check.produced, &columns),
        columns,
    }
}

/// Rewrites the file's expectations, checks that the new file loads and that each rewritten
/// expectation now matches what its job produced, then replaces the file.
fn update_file(
    file: &TestFile,
    pipelines: &[Arc<Pipeline>],
    rewrites: &[(Rewrite, JobCheck)],
) -> Result<(), String> {
    let plain: Vec<Rewrite> = rewrites
        .iter()
        .map(|(rewrite, _)| rewrite.clone())
        .collect();
    let text = rewrite_expectations(&file.text, &plain)?;
    let reloaded = parse_test_file(&text, &file.path, pipelines)
        .map_err(|errors| format!("the rewritten file does not load: {errors}"))?;
    for (rewrite, check) in rewrites {
        let test = reloaded
            .tests
            .iter()
            .find(|test| test.name == rewrite.test)
            .ok_or_else(|| format!("test `{}` is gone from the rewritten file", rewrite.test))?;
        let expectation = test
            .expect
            .iter()
            .find(|expectation| expectation.job == rewrite.job)
            .ok_or_else(|| format!("job `{}` is gone from test `{}`", rewrite.job, rewrite.test))?;
        let expected = Expected {
            rows: &expectation.rows,
            columns: &expectation.columns,
            ordered: expectation.ordered,
            partial: expectation.partial,
            schema: &expectation.schema,
            tolerance: test.tolerance,
            timezone: reloaded.pipeline.timezone,
        };
        let comparison = compare(&expected, &check.produced);
        if !comparison.passed {
            return Err(format!(
                "test `{}`, job `{}` would still differ after the update (its `schema`?):\n{}",
                rewrite.test,
                rewrite.job,
                comparison.diff_lines("  ").join("\n")
            ));
        }
    }
    let name = file
        .path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = file.path.with_file_name(format!(".{name}.floe-update"));
    std::fs::write(&temporary, text.as_bytes())
        .and_then(|()| std::fs::rename(&temporary, &file.path))
        .map_err(|err| {
            let _ = std::fs::remove_file(&temporary);
            format!("cannot write {}: {err}", file.path.display())
        })
}
