//! Loading a test file: its YAML parsed (bounded like a pipeline file's), then every test
//! checked against its pipeline, collecting every problem with its file:line:column as
//! pipeline validation does ([`Diagnostic`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use polars::prelude::DataFrame;
use serde_yaml::Value;

use super::compare::DEFAULT_TOLERANCE;
use super::rows::{
    ColumnType, FixtureFormat, RowsError, Typing, frame_from_rows, read_fixture, row_columns,
};
use super::spec::{
    ExpectSpec, GivenPartitionSpec, GivenSpec, TEST_SPEC_VERSION, TestFileSpec, TestSpec,
};
use super::{Expectation, GivenJob, GivenPartition, PipelineTest, TestFile};
use crate::job::spec::UniqueMap;
use crate::partition::{parse_instant, partition_label, window_containing};
use crate::pipeline::locate::locate;
use crate::pipeline::{
    Diagnostic, InputRef, Pipeline, PipelineErrors, check_identifier, yaml_guard,
};

/// The largest test file read.
pub const MAX_TEST_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Reads and checks the test file `path` against `pipelines`, the pipelines of its folder.
pub fn load_test_file(
    path: &Path,
    pipelines: &[Arc<Pipeline>],
) -> Result<TestFile, PipelineErrors> {
    let cannot_read = |problem: String| {
        PipelineErrors(vec![Diagnostic::new(
            path,
            format!("cannot read test file: {problem}"),
        )])
    };
    let metadata = std::fs::metadata(path).map_err(|err| cannot_read(err.to_string()))?;
    if !metadata.is_file() {
        return Err(cannot_read("not a regular file".to_owned()));
    }
    if metadata.len() > MAX_TEST_FILE_BYTES {
        return Err(cannot_read(format!(
            "it is {} bytes; a test file is at most {MAX_TEST_FILE_BYTES} (put large inputs in \
             Parquet fixtures)",
            metadata.len()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|err| cannot_read(err.to_string()))?;
    parse_test_file(&text, path, pipelines)
}

/// Parses and checks a test file's `text`; `path` places messages and fixtures (relative to
/// its folder).
pub fn parse_test_file(
    text: &str,
    path: &Path,
    pipelines: &[Arc<Pipeline>],
) -> Result<TestFile, PipelineErrors> {
    let depth = yaml_guard::flow_depth_bound(text);
    if depth > yaml_guard::MAX_YAML_FLOW_DEPTH {
        return Err(PipelineErrors(vec![Diagnostic::new(
            path,
            format!(
                "flow collections (`[…]`, `{{…}}`) are nested about {depth} deep; the limit is {}",
                yaml_guard::MAX_YAML_FLOW_DEPTH
            ),
        )]));
    }
    let spec: TestFileSpec = serde_yaml::from_str(text).map_err(|err| {
        let message = crate::pipeline::strip_location_suffix(&err.to_string());
        let position = crate::pipeline::locate_duplicate(text, &message)
            .or_else(|| err.location().map(|loc| (loc.line(), loc.column())));
        PipelineErrors(vec![Diagnostic::new(path, message).at(position)])
    })?;
    let mut checker = Checker {
        text,
        file: path,
        folder: path
            .parent()
            .filter(|folder| !folder.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
        problems: Vec::new(),
    };
    if spec.version != TEST_SPEC_VERSION {
        checker.report(
            &["version"],
            None,
            format!(
                "test file format version {} is not the one this Floe reads ({TEST_SPEC_VERSION})",
                spec.version
            ),
        );
        return Err(PipelineErrors(checker.problems));
    }
    let Some(pipeline) = pipelines.iter().find(|p| p.name == spec.pipeline) else {
        let known: Vec<&str> = pipelines.iter().map(|p| p.name.as_str()).collect();
        checker.report(
            &["pipeline"],
            None,
            format!(
                "no pipeline `{}` in {} (pipelines there: {}); a test file sits beside the \
                 pipeline it tests",
                spec.pipeline,
                checker.folder.display(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        );
        return Err(PipelineErrors(checker.problems));
    };
    if spec.tests.is_empty() {
        checker.report(&["tests"], None, "a test file needs at least one test");
    }
    let tests: Vec<PipelineTest> = spec
        .tests
        .iter()
        .filter_map(|(name, test)| checker.test(name, test, pipeline))
        .collect();
    if !checker.problems.is_empty() {
        checker
            .problems
            .sort_by_key(|d| (d.line.unwrap_or(usize::MAX), d.column.unwrap_or(usize::MAX)));
        return Err(PipelineErrors(checker.problems));
    }
    Ok(TestFile {
        path: path.to_path_buf(),
        text: text.to_owned(),
        pipeline: pipeline.clone(),
        tests,
    })
}

/// A problem was found and reported.
struct Reported;

struct Checker<'a> {
    text: &'a str,
    file: &'a Path,
    folder: &'a Path,
    problems: Vec<Diagnostic>,
}

/// 1-based (line, column) of item `index` of the block sequence under the key at `key`.
fn locate_item(text: &str, key: (usize, usize), index: usize) -> Option<(usize, usize)> {
    let key_indent = key.1.saturating_sub(1);
    let mut item_indent = None;
    let mut count = 0;
    for (at, line) in text.lines().enumerate().skip(key.0) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let item = trimmed == "-" || trimmed.starts_with("- ");
        if indent < key_indent || (indent == key_indent && !item) {
            break;
        }
        if !item || *item_indent.get_or_insert(indent) != indent {
            continue;
        }
        if count == index {
            return Some((at + 1, indent + 1));
        }
        count += 1;
    }
    None
}

impl Checker<'_> {
    /// A problem at the key `path` (or the row `row` of the sequence there).
    fn report(&mut self, path: &[&str], row: Option<usize>, message: impl Into<String>) {
        let key = locate(self.text, path);
        let position = match (key, row) {
            (Some(key), Some(row)) => locate_item(self.text, key, row).or(Some(key)),
            (key, _) => key,
        };
        self.problems
            .push(Diagnostic::new(self.file, message).at(position));
    }

    /// A problem of test `test`, field `field` (a path below the test).
    fn report_test(&mut self, test: &str, field: &[&str], row: Option<usize>, message: &str) {
        let path: Vec<&str> = ["tests", test]
            .into_iter()
            .chain(field.iter().copied())
            .collect();
        let message = if field.is_empty() {
            format!("test `{test}`: {message}")
        } else {
            format!("test `{test}`, field `{}`: {message}", field.join("."))
        };
        self.report(&path, row, message);
    }

    fn report_rows(&mut self, test: &str, field: &[&str], err: RowsError) {
        let message = match (err.row, &err.column) {
            (Some(row), Some(column)) => {
                format!("row {}, column `{column}`: {}", row + 1, err.message)
            }
            (Some(row), None) => format!("row {}: {}", row + 1, err.message),
            (None, Some(column)) => format!("column `{column}`: {}", err.message),
            (None, None) => err.message,
        };
        self.report_test(test, field, err.row, &message);
    }

    fn test(&mut self, name: &str, spec: &TestSpec, pipeline: &Pipeline) -> Option<PipelineTest> {
        let before = self.problems.len();
        if let Err(err) = check_identifier(name) {
            self.report_test(name, &[], None, &format!("test {err}"));
        }
        let instant = match parse_instant(&spec.partition, pipeline.timezone) {
            Ok(instant) => Some(instant),
            Err(err) => {
                self.report_test(name, &["partition"], None, &err.to_string());
                None
            }
        };
        let tolerance = spec.tolerance.unwrap_or(DEFAULT_TOLERANCE);
        if !(tolerance.is_finite() && tolerance >= 0.0) {
            self.report_test(
                name,
                &["tolerance"],
                None,
                "must be a number at least 0 (a relative tolerance, e.g. 1e-9)",
            );
        }
        if spec.expect.is_empty() {
            self.report_test(
                name,
                &["expect"],
                None,
                "a test expects the rows of at least one job",
            );
        }
        let mut sources = BTreeMap::new();
        let mut jobs = BTreeMap::new();
        for (input, given) in spec.given.iter() {
            if let Some(source) = pipeline.sources.get(input) {
                if let Some(frame) = self.given_source(name, input, given, &source.time_column) {
                    sources.insert(input.clone(), frame);
                }
            } else if pipeline.job(input).is_some() {
                // A job's partitions are placed by the test's instant.
                let Some(instant) = instant else { continue };
                if spec.expect.get(input).is_some() {
                    self.report_test(
                        name,
                        &["given", input],
                        None,
                        &format!(
                            "`{input}` is both given and expected: a given job is not computed"
                        ),
                    );
                } else if let Some(job) = self.given_job(name, input, given, pipeline, instant) {
                    jobs.insert(input.clone(), job);
                }
            } else {
                self.report_test(
                    name,
                    &["given", input],
                    None,
                    &format!(
                        "pipeline `{}` has no source or job `{input}` ({})",
                        pipeline.name,
                        known_inputs(pipeline)
                    ),
                );
            }
        }
        let instant = instant?;
        let mut expect = Vec::new();
        for (job, expected) in spec.expect.iter() {
            if let Some(expectation) = self.expectation(name, job, expected, pipeline, instant) {
                expect.push(expectation);
            }
        }
        if self.problems.len() == before {
            self.check_inputs(name, spec, pipeline, &sources, &jobs, &expect);
        }
        (self.problems.len() == before).then(|| PipelineTest {
            name: name.to_owned(),
            description: spec.description.clone(),
            instant,
            tolerance,
            sources,
            jobs,
            expect,
        })
    }

    /// Every source the expected jobs read (through jobs that are not given) is given, and
    /// every given source or job is read.
    fn check_inputs(
        &mut self,
        test: &str,
        spec: &TestSpec,
        pipeline: &Pipeline,
        sources: &BTreeMap<String, DataFrame>,
        jobs: &BTreeMap<String, GivenJob>,
        expect: &[Expectation],
    ) {
        let mut read = BTreeSet::new();
        for expectation in expect {
            let mut stack = vec![expectation.job.clone()];
            let mut seen = BTreeSet::new();
            let mut missing = BTreeSet::new();
            while let Some(job) = stack.pop() {
                if !seen.insert(job.clone()) {
                    continue;
                }
                let Some(def) = pipeline.job(&job) else {
                    continue;
                };
                for input in &def.inputs {
                    read.insert(input.name().to_owned());
                    match input {
                        InputRef::Source(source) if !sources.contains_key(source) => {
                            missing.insert(source.clone());
                        }
                        InputRef::Source(_) => {}
                        InputRef::Job(upstream) if jobs.contains_key(upstream) => {}
                        InputRef::Job(upstream) => stack.push(upstream.clone()),
                    }
                }
            }
            for source in missing {
                self.report_test(
                    test,
                    &["expect", &expectation.job],
                    None,
                    &format!(
                        "job `{}` reads source `{source}`, which the test does not give: add \
                         `{source}` under `given` (its rows), or give the rows of the jobs \
                         between them",
                        expectation.job
                    ),
                );
            }
        }
        for (input, _) in spec.given.iter() {
            if !read.contains(input) {
                self.report_test(
                    test,
                    &["given", input],
                    None,
                    &format!(
                        "no expected job reads `{input}` (an upstream job the test gives is \
                         not computed, so what it reads is not read)"
                    ),
                );
            }
        }
    }

    /// Declared column types of `schema` at `field`.
    fn schema(
        &mut self,
        test: &str,
        field: &[&str],
        schema: Option<&UniqueMap<String>>,
    ) -> Option<Vec<(String, ColumnType)>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (column, name) in schema.map(|s| s.0.as_slice()).unwrap_or_default() {
            match ColumnType::parse(name) {
                Some(ty) => out.push((column.clone(), ty)),
                None => {
                    ok = false;
                    let path: Vec<&str> = field.iter().copied().chain(["schema"]).collect();
                    self.report_test(
                        test,
                        &path,
                        None,
                        &format!(
                            "column `{column}`: unknown type `{name}` (types: {})",
                            ColumnType::NAMES
                        ),
                    );
                }
            }
        }
        ok.then_some(out)
    }

    /// The frame of `rows`, `csv` or `parquet` (exactly one) at `field`; `None` when none is
    /// given and `optional`; `Err` once a problem is reported.
    #[allow(clippy::too_many_arguments)]
    fn frame(
        &mut self,
        test: &str,
        field: &[&str],
        rows: Option<&Vec<Value>>,
        csv: Option<&String>,
        parquet: Option<&String>,
        typing: Typing<'_>,
        optional: bool,
    ) -> Result<Option<DataFrame>, Reported> {
        let given = usize::from(rows.is_some())
            + usize::from(csv.is_some())
            + usize::from(parquet.is_some());
        if given > 1 || (given == 0 && !optional) {
            self.report_test(
                test,
                field,
                None,
                "give the rows one way: `rows:` (inline), `csv:` or `parquet:` (a fixture file)",
            );
            return Err(Reported);
        }
        let result = if let Some(rows) = rows {
            let path: Vec<&str> = field.iter().copied().chain(["rows"]).collect();
            match frame_from_rows(rows, typing) {
                Ok(frame) => Ok(frame),
                Err(err) => Err((path, err)),
            }
        } else if let Some((file, format, key)) = csv
            .map(|file| (file, FixtureFormat::Csv, "csv"))
            .or_else(|| parquet.map(|file| (file, FixtureFormat::Parquet, "parquet")))
        {
            let path: Vec<&str> = field.iter().copied().chain([key]).collect();
            match read_fixture(self.folder, file, format, typing) {
                Ok(frame) => Ok(frame),
                Err(err) => Err((path, err)),
            }
        } else {
            return Ok(None);
        };
        match result {
            Ok(frame) => Ok(Some(frame)),
            Err((path, err)) => {
                self.report_rows(test, &path, err);
                Err(Reported)
            }
        }
    }

    fn given_source(
        &mut self,
        test: &str,
        source: &str,
        given: &GivenSpec,
        time_column: &str,
    ) -> Option<DataFrame> {
        let field = ["given", source];
        if given.state.is_some() || given.partitions.is_some() {
            self.report_test(
                test,
                &field,
                None,
                "`state` and `partitions` are for jobs; a source's rows are given at any time \
                 and each run reads those inside its window",
            );
            return None;
        }
        let schema = self.schema(test, &field, given.schema.as_ref())?;
        let typing = Typing {
            schema: &schema,
            time_column: Some(time_column),
        };
        let frame = self
            .frame(
                test,
                &field,
                given.rows.as_ref(),
                given.csv.as_ref(),
                given.parquet.as_ref(),
                typing,
                false,
            )
            .ok()
            .flatten()?;
        if frame.column(time_column).is_err() {
            self.report_test(
                test,
                &field,
                None,
                &format!(
                    "the rows of source `{source}` need its time column `{time_column}` (with \
                     no rows, declare it: `schema: {{{time_column}: datetime}}`)"
                ),
            );
            return None;
        }
        Some(frame)
    }

    fn given_job(
        &mut self,
        test: &str,
        job: &str,
        given: &GivenSpec,
        pipeline: &Pipeline,
        instant: DateTime<Utc>,
    ) -> Option<GivenJob> {
        let def = pipeline.job(job)?;
        let field = ["given", job];
        let schema = self.schema(test, &field, given.schema.as_ref())?;
        let direct = given.rows.is_some()
            || given.csv.is_some()
            || given.parquet.is_some()
            || given.state.is_some();
        let mut parts: Vec<(Vec<&str>, DateTime<Utc>, GivenPartitionSpec)> = Vec::new();
        match (&given.partitions, direct) {
            (Some(_), true) => {
                self.report_test(
                    test,
                    &field,
                    None,
                    "give either the rows of the test's partition (`rows`, `csv`, `parquet`, \
                     `state`) or `partitions`, not both",
                );
                return None;
            }
            (None, false) => {
                self.report_test(
                    test,
                    &field,
                    None,
                    "give the job's rows (`rows`, `csv` or `parquet`; `state` for its mergeable \
                     state) or its rows per partition (`partitions`)",
                );
                return None;
            }
            (None, true) => parts.push((
                field.to_vec(),
                instant,
                GivenPartitionSpec {
                    rows: given.rows.clone(),
                    csv: given.csv.clone(),
                    parquet: given.parquet.clone(),
                    state: given.state.clone(),
                },
            )),
            (Some(partitions), false) => {
                for (at, part) in partitions.iter() {
                    let path = vec!["given", job, "partitions", at.as_str()];
                    match parse_instant(at, pipeline.timezone) {
                        Ok(instant) => parts.push((path, instant, part.clone())),
                        Err(err) => self.report_test(test, &path, None, &err.to_string()),
                    }
                }
            }
        }
        let typing = Typing {
            schema: &schema,
            time_column: None,
        };
        let keeps_state = def.kind() == "count_distinct";
        let mut out = GivenJob::default();
        let mut ok = true;
        for (path, instant, part) in parts {
            let window = window_containing(def.grain, pipeline.timezone, instant);
            if keeps_state && part.state.is_none() {
                ok = false;
                self.report_test(
                    test,
                    &path,
                    None,
                    &format!(
                        "job `{job}` is a count_distinct: give its distinct keys as `state:` \
                         (rows of the counted column), which a count_distinct reading it merges"
                    ),
                );
                continue;
            }
            let Ok(frame) = self.frame(
                test,
                &path,
                part.rows.as_ref(),
                part.csv.as_ref(),
                part.parquet.as_ref(),
                typing,
                part.state.is_some(),
            ) else {
                ok = false;
                continue;
            };
            let state = match &part.state {
                Some(rows) => {
                    let untyped = Typing {
                        schema: &[],
                        time_column: None,
                    };
                    match frame_from_rows(rows, untyped) {
                        Ok(state) => Some(state),
                        Err(err) => {
                            ok = false;
                            let state_path: Vec<&str> =
                                path.iter().copied().chain(["state"]).collect();
                            self.report_rows(test, &state_path, err);
                            continue;
                        }
                    }
                }
                None => None,
            };
            let frame = frame.unwrap_or_default();
            if out
                .partitions
                .insert(window.start, GivenPartition { frame, state })
                .is_some()
            {
                ok = false;
                self.report_test(
                    test,
                    &path,
                    None,
                    &format!(
                        "partition {} of `{job}` is given twice",
                        partition_label(def.grain, pipeline.timezone, &window)
                    ),
                );
            }
        }
        // A partition a run reads but the test does not give holds no rows, with the columns
        // of the given ones.
        ok.then_some(out)
    }

    fn expectation(
        &mut self,
        test: &str,
        job: &str,
        spec: &ExpectSpec,
        pipeline: &Pipeline,
        instant: DateTime<Utc>,
    ) -> Option<Expectation> {
        let field = ["expect", job];
        let Some(def) = pipeline.job(job) else {
            let what = if pipeline.sources.contains_key(job) {
                format!("`{job}` is a source; a test expects the rows of jobs")
            } else {
                format!(
                    "pipeline `{}` has no job `{job}` (jobs: {})",
                    pipeline.name,
                    pipeline.dag.topological_order().join(", ")
                )
            };
            self.report_test(test, &field, None, &what);
            return None;
        };
        let window = window_containing(def.grain, pipeline.timezone, instant);
        let label = partition_label(def.grain, pipeline.timezone, &window);
        if window.start < pipeline.start {
            self.report_test(
                test,
                &field,
                None,
                &format!(
                    "the {} partition {label} containing the test's instant starts before the \
                     pipeline's start ({}): no run computes it",
                    def.grain,
                    pipeline.start.to_rfc3339()
                ),
            );
            return None;
        }
        if let Some(end) = pipeline.end
            && window.end > end
        {
            self.report_test(
                test,
                &field,
                None,
                &format!(
                    "the {} partition {label} containing the test's instant ends after the \
                     pipeline's end ({}): no run computes it",
                    def.grain,
                    end.to_rfc3339()
                ),
            );
            return None;
        }
        let rows_field = ["expect", job, "rows"];
        let columns = match row_columns(&spec.rows) {
            Ok(columns) => columns,
            Err(err) => {
                self.report_rows(test, &rows_field, err);
                return None;
            }
        };
        for (index, row) in spec.rows.iter().enumerate() {
            if let Some(column) = columns.iter().find(
                |column| matches!(row, Value::Mapping(map) if !map.contains_key(column.as_str())),
            ) {
                self.report_test(
                    test,
                    &rows_field,
                    Some(index),
                    &format!(
                        "row {} has no `{column}`, which other rows name: write `{column}: null` \
                         for a null",
                        index + 1
                    ),
                );
                return None;
            }
        }
        let schema = self.schema(test, &field, spec.schema.as_ref())?;
        Some(Expectation {
            job: job.to_owned(),
            window,
            rows: spec.rows.clone(),
            columns,
            ordered: spec.ordered,
            partial: spec.partial,
            schema,
        })
    }
}

fn known_inputs(pipeline: &Pipeline) -> String {
    let sources = pipeline.sources.keys().map(String::as_str);
    let jobs = pipeline.dag.topological_order().iter().map(String::as_str);
    format!(
        "known: {}",
        sources.chain(jobs).collect::<Vec<_>>().join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::locate_item;

    #[test]
    fn finds_the_items_of_a_block_sequence() {
        let text = "a:\n  rows:\n    - {x: 1}\n    # note\n    - {x: 2}\n    -   y: 3\n        z: 4\n  b: 1\n";
        assert_eq!(locate_item(text, (2, 3), 0), Some((3, 5)));
        assert_eq!(locate_item(text, (2, 3), 1), Some((5, 5)));
        assert_eq!(locate_item(text, (2, 3), 2), Some((6, 5)));
        assert_eq!(locate_item(text, (2, 3), 3), None);
        assert_eq!(
            locate_item("rows:\n- a\n- b\nnext: 1\n", (1, 1), 1),
            Some((3, 1))
        );
    }
}
