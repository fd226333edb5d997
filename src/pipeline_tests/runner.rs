//! Running a test in memory: every partition the expected jobs need, computed from the given
//! rows on an [`Engine`] with inputs built as a partition run builds them, then compared.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use polars::prelude::*;

use super::compare::{Comparison, Expected, compare};
use super::{PipelineTest, TestFile};
use crate::engine::{Engine, ResolvedInput, ResolvedPlan, cut_to_window};
use crate::inputs::{upstream_input, upstream_windows};
use crate::job::{JobInput, JobOutput};
use crate::partition::{Window, partition_label};
use crate::pipeline::{InputRef, JobDef, Pipeline};

/// The most partitions one test computes (a monthly job over hourly ones computes about 750).
pub const MAX_RUNS_PER_TEST: usize = 10_000;

/// One expected job of a test, checked.
#[derive(Debug, Clone)]
pub struct JobCheck {
    /// Index into the test's expectations.
    pub expectation: usize,
    /// What the job produced.
    pub produced: DataFrame,
    pub comparison: Comparison,
}

/// What running one test came to.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    pub test: String,
    /// Every expected job checked, or why the test could not run to the end (a job failed).
    pub result: Result<Vec<JobCheck>, String>,
    /// Partitions computed.
    pub runs: usize,
    pub elapsed: Duration,
}

impl TestOutcome {
    pub fn passed(&self) -> bool {
        self.result
            .as_ref()
            .is_ok_and(|checks| checks.iter().all(|check| check.comparison.passed))
    }
}

/// Runs `test` of `file` on `engine`.
pub fn run_test(file: &TestFile, test: &PipelineTest, engine: &dyn Engine) -> TestOutcome {
    let started = Instant::now();
    let mut runner = Runner {
        pipeline: &file.pipeline,
        test,
        engine,
        outputs: HashMap::new(),
        runs: 0,
    };
    let result = test
        .expect
        .iter()
        .enumerate()
        .map(|(index, expectation)| {
            let def = file.pipeline.job(&expectation.job).ok_or_else(|| {
                format!(
                    "pipeline `{}` has no job `{}`",
                    file.pipeline.name, expectation.job
                )
            })?;
            let output = runner.output(def, expectation.window)?;
            let expected = Expected {
                rows: &expectation.rows,
                columns: &expectation.columns,
                ordered: expectation.ordered,
                partial: expectation.partial,
                schema: &expectation.schema,
                tolerance: test.tolerance,
                timezone: file.pipeline.timezone,
            };
            Ok(JobCheck {
                expectation: index,
                comparison: compare(&expected, &output.frame),
                produced: output.frame,
            })
        })
        .collect();
    TestOutcome {
        test: test.name.clone(),
        result,
        runs: runner.runs,
        elapsed: started.elapsed(),
    }
}

struct Runner<'a> {
    pipeline: &'a Pipeline,
    test: &'a PipelineTest,
    engine: &'a dyn Engine,
    /// Partitions computed, by job and window start.
    outputs: HashMap<(String, DateTime<Utc>), JobOutput>,
    runs: usize,
}

impl Runner<'_> {
    /// The result of `def` over `window`: given, computed already, or computed now (after the
    /// upstream partitions it reads).
    fn output(&mut self, def: &JobDef, window: Window) -> Result<JobOutput, String> {
        if let Some(given) = self.test.jobs.get(&def.name) {
            return Ok(match given.partitions.get(&window.start) {
                Some(part) => JobOutput {
                    frame: part.frame.clone(),
                    state: part.state.clone(),
                },
                // Not given: no rows, with the columns of the given partitions.
                None => {
                    let first = given.partitions.values().next();
                    JobOutput {
                        frame: first.map(|part| part.frame.clear()).unwrap_or_default(),
                        state: first.and_then(|part| part.state.as_ref().map(DataFrame::clear)),
                    }
                }
            });
        }
        let key = (def.name.clone(), window.start);
        if let Some(output) = self.outputs.get(&key) {
            return Ok(output.clone());
        }
        self.runs += 1;
        if self.runs > MAX_RUNS_PER_TEST {
            return Err(format!(
                "the test needs more than {MAX_RUNS_PER_TEST} partitions computed; give the rows \
                 of upstream jobs instead of computing them"
            ));
        }
        let pipeline = self.pipeline;
        let place = || {
            format!(
                "job `{}`, {} partition {} [{}, {})",
                def.name,
                def.grain,
                partition_label(def.grain, pipeline.timezone, &window),
                window.start.to_rfc3339_opts(SecondsFormat::Secs, true),
                window.end.to_rfc3339_opts(SecondsFormat::Secs, true)
            )
        };
        let mut inputs = BTreeMap::new();
        for input in &def.inputs {
            let resolved = match input {
                InputRef::Source(name) => {
                    let (Some(source), Some(rows)) =
                        (pipeline.sources.get(name), self.test.sources.get(name))
                    else {
                        return Err(format!("{}: source `{name}` is not given", place()));
                    };
                    let frame = cut_to_window(source, rows.clone().lazy(), &window)
                        .map_err(|err| format!("{}: {err}", place()))?;
                    ResolvedInput::rows(JobInput::of_frame(frame))
                }
                InputRef::Job(name) => {
                    let Some(upstream) = pipeline.job(name) else {
                        return Err(format!("{}: no job `{name}`", place()));
                    };
                    let mut partitions = Vec::new();
                    for up_window in upstream_windows(pipeline, upstream, def, &window) {
                        let output = self.output(upstream, up_window)?;
                        partitions.push((output.frame, output.state));
                    }
                    ResolvedInput::rows(
                        upstream_input(upstream, partitions)
                            .map_err(|err| format!("{}: {err}", place()))?,
                    )
                }
            };
            inputs.insert(input.name().to_owned(), resolved);
        }
        let plan = ResolvedPlan {
            pipeline: &pipeline.name,
            job: &def.name,
            kind: def.job.as_ref(),
            grain: def.grain,
            window,
            definition: None,
            stop: None,
            inputs,
        };
        let output = self
            .engine
            .execute(plan)
            .map_err(|err| format!("{}: {err}", place()))?;
        self.outputs.insert(key, output.clone());
        Ok(output)
    }
}
