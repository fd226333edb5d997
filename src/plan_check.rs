//! Plan checks: validation that runs each job's plan, not only the parser.
//!
//! A pipeline that parses can still fail every run: SQL polars parses but cannot plan
//! (`n * 1.0 / (SELECT sum(n) FROM t)`), an aggregation over a column the upstream job does not
//! produce. [`check_pipeline`] finds these before any partition runs, by calling every job's
//! real [`crate::job::Job::run`] on empty frames (0 rows) of the schemas its inputs will have:
//!
//! - a **source**'s schema is read from one of its files: the last file in name order (for a
//!   date-templated path, the newest partition) matching its path template with every variable
//!   as `*`, looked for inside the pipeline's data roots only (files resolved through links
//!   and checked like a run's). Only the schema is read, as a run's scan
//!   ([`crate::engine::scan_source`]) infers it: parquet's footer (at most
//!   [`MAX_PARQUET_FOOTER`] bytes), or the first [`PREFIX_BYTES`] of a CSV or NDJSON file (whole
//!   lines). The empty frame is then cut to a window exactly as a run cuts a scan
//!   ([`crate::engine::cut_to_window`]), so the time column has the type jobs see;
//! - an **upstream job**'s input is the empty output its own check produced, with its partial
//!   state as the input's `states` (a rolled-up `count_distinct` merges it), as the resolver
//!   hands a downstream job its upstream partitions ([`crate::inputs`]).
//!
//! One pipeline's check looks at most at [`MAX_ENTRIES`] directory entries, reads at most
//! [`MAX_BYTES`] and starts nothing after [`CHECK_TIME`]: whatever is left is not checked.
//!
//! Jobs run in topological order, with the SQL guard and stack of every run
//! ([`crate::job::run_job`]); a panic (in polars or in a `rust:` job) is caught. A job that fails is a
//! [`Diagnostic`] at its kind's line (`sql:`, `group_by:` …) with polars' message; a column
//! none of its inputs has names the input and its columns. A source without a file yet (or whose
//! file cannot be read within the bounds) leaves the jobs reading it, directly or through
//! upstream jobs, *not checked*: a note, not an error, since a new pipeline often comes before
//! its data.
//!
//! Owns: the search for a source's sample file, schema reads, the empty runs and what their
//! failures say. Does not own: parsing and static validation ([`crate::pipeline`]), which run
//! first and need no data; where it runs: `floe validate` and uploads (`POST /binaries/{app}`),
//! not when a server registers its folder or reloads stored versions, whose validity must not
//! change with the data.
//!
//! A top-level module rather than part of `pipeline/`: it reads files and runs jobs through
//! the engine, which sits above `pipeline` (`tests/integration/module_graph.rs`); `cli` and
//! `catalog` call it.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::panic::AssertUnwindSafe;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use polars::prelude::*;

use crate::engine::{cut_to_window, scan_source};
use crate::job::{JobContext, JobError, JobInput, JobOutput, run_job};
use crate::partition::window_containing;
use crate::pipeline::data_roots::DataRoots;
use crate::pipeline::locate::locate;
use crate::pipeline::spec::SourceFormat;
use crate::pipeline::{Diagnostic, InputRef, JobDef, Pipeline, PipelineErrors, Source};

/// Most bytes of a CSV or NDJSON file read to infer its schema (whole lines only).
pub const PREFIX_BYTES: usize = 1 << 20;
/// Largest parquet footer (the file's metadata, where its schema is) read.
pub const MAX_PARQUET_FOOTER: u64 = 16 << 20;
/// Most bytes of files one pipeline's check reads, every source together.
pub const MAX_BYTES: u64 = 64 << 20;
/// Most directory entries one pipeline's check looks at, every source's search together.
pub const MAX_ENTRIES: usize = 10_000;
/// Longest one pipeline's check goes on starting searches, reads and job runs; what is left
/// then is not checked. (A polars call already started is not interrupted, but on empty
/// frames each takes milliseconds.)
pub const CHECK_TIME: Duration = Duration::from_secs(10);
/// Deepest a `**` search descends.
const MAX_DEPTH: usize = 32;

/// What checking a pipeline's plans found.
#[derive(Debug, Default)]
pub struct PlanCheck {
    /// Jobs polars cannot run on their inputs' schemas, each at its kind's line.
    pub problems: Vec<Diagnostic>,
    /// Jobs not checked and why (`not checked: …`), each at its job's line.
    pub unchecked: Vec<Diagnostic>,
    /// Jobs run on empty inputs of their inputs' schemas without an error, in dependency
    /// order.
    pub checked: Vec<String>,
    /// The output columns of each checked job, as its runs will produce them.
    pub outputs: BTreeMap<String, SchemaRef>,
}

impl PlanCheck {
    /// The check, or its problems as the errors of an invalid pipeline.
    pub fn into_result(self) -> Result<PlanCheck, PipelineErrors> {
        if self.problems.is_empty() {
            Ok(self)
        } else {
            Err(PipelineErrors(self.problems))
        }
    }
}

/// A source's columns as a run will read them, or why they are unknown.
enum SourceSchema {
    /// The schema of `file` (as shown in messages).
    Read { schema: SchemaRef, file: String },
    /// Why the jobs reading the source are not checked.
    Unknown(String),
}

/// What one pipeline's check may still spend, whatever its number of sources and jobs.
#[derive(Debug)]
struct Budget {
    /// Directory entries looked at so far.
    entries: usize,
    /// Bytes of files read so far.
    bytes: u64,
    deadline: Instant,
}

impl Budget {
    fn new() -> Budget {
        Budget {
            entries: 0,
            bytes: 0,
            deadline: Instant::now() + CHECK_TIME,
        }
    }

    /// Why nothing more may start, if time is up.
    fn out_of_time(&self) -> Option<String> {
        (Instant::now() > self.deadline)
            .then(|| format!("the plan check ran out of its {}s", CHECK_TIME.as_secs()))
    }

    /// Counts `bytes` more read, or refuses them.
    fn read(&mut self, bytes: u64) -> Result<(), String> {
        if self.bytes + bytes > MAX_BYTES {
            return Err(format!(
                "the plan check has already read {} of the {MAX_BYTES} bytes it may read",
                self.bytes
            ));
        }
        self.bytes += bytes;
        Ok(())
    }
}

/// What the check of one job left for the jobs reading it.
enum Checked {
    /// Its output on empty inputs.
    Ran(JobOutput),
    /// It was not checked: a note says why.
    NotRun,
    /// It, or a job it reads, failed: a problem says why, and nothing downstream is checked
    /// until that is fixed.
    Failed,
}

/// Runs every job of `pipeline` (confined to its data roots) on empty inputs of its inputs'
/// schemas; `text` is the pipeline's YAML, to place each problem and note.
pub fn check_pipeline(pipeline: &Pipeline, text: &str) -> PlanCheck {
    let mut check = PlanCheck::default();
    let mut budget = Budget::new();
    let sources: BTreeMap<&str, SourceSchema> = pipeline
        .sources
        .values()
        .filter(|source| {
            pipeline
                .jobs
                .values()
                .any(|job| job.inputs.contains(&InputRef::Source(source.name.clone())))
        })
        .map(|source| {
            let schema = match pipeline.data_roots.as_deref() {
                Some(roots) => source_schema(source, roots, &mut budget),
                None => SourceSchema::Unknown(
                    "the pipeline is not confined to data roots, so no file is read".to_owned(),
                ),
            };
            (source.name.as_str(), schema)
        })
        .collect();
    let mut outputs: BTreeMap<&str, Checked> = BTreeMap::new();
    for def in pipeline.jobs_in_order() {
        let outcome = match budget.out_of_time() {
            Some(reason) => not_checked(pipeline, text, def, &mut check, reason),
            None => check_job(pipeline, text, def, &sources, &outputs, &mut check),
        };
        outputs.insert(def.name.as_str(), outcome);
    }
    let by_line = |d: &Diagnostic| (d.line.unwrap_or(usize::MAX), d.column.unwrap_or(usize::MAX));
    check.problems.sort_by_key(by_line);
    check.unchecked.sort_by_key(by_line);
    check
}

/// One job: its empty inputs, its run, and what that says.
fn check_job(
    pipeline: &Pipeline,
    text: &str,
    def: &JobDef,
    sources: &BTreeMap<&str, SourceSchema>,
    outputs: &BTreeMap<&str, Checked>,
    check: &mut PlanCheck,
) -> Checked {
    let window = window_containing(def.grain, pipeline.timezone, pipeline.start);
    let mut inputs = BTreeMap::new();
    // Each input's columns and what it is, for messages.
    let mut described: Vec<(String, Schema)> = Vec::new();
    let not_checked =
        |check: &mut PlanCheck, reason: String| not_checked(pipeline, text, def, check, reason);
    for input in &def.inputs {
        let (name, input) = match input {
            InputRef::Source(name) => {
                let Some(source) = pipeline.sources.get(name) else {
                    // A valid pipeline's inputs all exist.
                    return not_checked(check, format!("source `{name}` is not defined"));
                };
                match sources.get(name.as_str()) {
                    Some(SourceSchema::Read { schema, file }) => {
                        let empty = DataFrame::empty_with_schema(schema).lazy();
                        match cut_to_window(source, empty, &window) {
                            Ok(frame) => {
                                described.push((
                                    format!("source `{name}` (read from {file})"),
                                    (**schema).clone(),
                                ));
                                (name, JobInput::of_frame(frame))
                            }
                            Err(err) => {
                                return not_checked(check, format!("{err} (in {file})"));
                            }
                        }
                    }
                    Some(SourceSchema::Unknown(reason)) => {
                        return not_checked(check, reason.clone());
                    }
                    None => return not_checked(check, format!("source `{name}` was not read")),
                }
            }
            InputRef::Job(name) => match outputs.get(name.as_str()) {
                Some(Checked::Ran(output)) => {
                    let upstream_kind = pipeline.job(name).map(|up| up.kind().to_owned());
                    described.push((
                        format!("upstream job `{name}`"),
                        (**output.frame.schema()).clone(),
                    ));
                    (
                        name,
                        JobInput {
                            frame: output.frame.clone().lazy(),
                            // One upstream partition's partial state, as the resolver passes
                            // the states of the partitions tiling the window.
                            states: output.state.clone().map(|state| vec![state]),
                            upstream_kind,
                            cached_rows: None,
                        },
                    )
                }
                Some(Checked::Failed) => return Checked::Failed,
                Some(Checked::NotRun) | None => {
                    return not_checked(check, format!("reads `{name}`, which is not checked"));
                }
            },
        };
        inputs.insert(name.clone(), input);
    }
    let ctx = JobContext {
        pipeline: &pipeline.name,
        job: &def.name,
        grain: def.grain,
        window,
        inputs: &inputs,
    };
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run_job(def.job.as_ref(), &ctx)))
        .unwrap_or_else(|panic| {
            Err(JobError::Failed(format!(
                "it panicked: {}",
                crate::error::panic_message(panic.as_ref())
            )))
        });
    match outcome {
        Ok(output) => {
            check.checked.push(def.name.clone());
            check
                .outputs
                .insert(def.name.clone(), output.frame.schema().clone());
            check_data_checks(pipeline, text, def, &output.frame, check);
            Checked::Ran(output)
        }
        Err(err) => {
            let field = kind_field(def);
            check.problems.push(
                Diagnostic::new(&pipeline.file, failure_message(&err, &described))
                    .at(locate(text, &["jobs", &def.name, field]))
                    .job(&def.name)
                    .field(field),
            );
            Checked::Failed
        }
    }
}

/// Reports each data check of `def` that cannot be evaluated on its `output` (0 rows, its
/// runs' columns): a column it lacks, an expression polars refuses on it — every run would
/// fail that check. Checks that read more than the result (freshness, anomaly) are judged
/// on their metric only.
fn check_data_checks(
    pipeline: &Pipeline,
    text: &str,
    def: &JobDef,
    output: &polars::prelude::DataFrame,
    check: &mut PlanCheck,
) {
    use crate::pipeline::checks::{CheckKind, metric_value};
    for (index, data_check) in def.checks.iter().enumerate() {
        let problem = match &data_check.kind {
            // An aggregate of no rows may well be null (`avg`); real partitions have rows.
            CheckKind::Anomaly { metric, .. } => metric_value(metric, output).err(),
            CheckKind::Freshness { .. } => None,
            _ => data_check.verdict_on(output).and_then(Result::err),
        };
        if let Some(problem) = problem {
            check.problems.push(
                Diagnostic::new(
                    &pipeline.file,
                    format!(
                        "job `{}`, check {} (`{}`): {problem}",
                        def.name,
                        index + 1,
                        data_check.name
                    ),
                )
                .at(crate::pipeline::locate::locate_item(
                    text,
                    &["jobs", &def.name, "checks"],
                    index,
                )),
            );
        }
    }
}

/// Notes that `def` is not checked, and why.
fn not_checked(
    pipeline: &Pipeline,
    text: &str,
    def: &JobDef,
    check: &mut PlanCheck,
    reason: String,
) -> Checked {
    check.unchecked.push(
        Diagnostic::new(&pipeline.file, format!("not checked: {reason}"))
            .at(locate(text, &["jobs", &def.name]))
            .job(&def.name),
    );
    Checked::NotRun
}

/// The YAML key of a job's kind block: the built-in kind's name, else `rust`.
fn kind_field(def: &JobDef) -> &'static str {
    const BUILT_IN: [&str; 5] = ["count_distinct", "top", "group_by", "sql", "select"];
    BUILT_IN
        .into_iter()
        .find(|kind| *kind == def.kind())
        .unwrap_or("rust")
}

/// What a job's failure on empty inputs says: the column it reads that no input has, naming
/// the inputs and their columns, or polars' (first line of) message.
fn failure_message(err: &JobError, inputs: &[(String, Schema)]) -> String {
    if let JobError::Polars(polars) = err
        && let PolarsError::ColumnNotFound(message) = innermost(polars)
        && let Some(column) = quoted_name(message)
        && !inputs.is_empty()
        && inputs
            .iter()
            .all(|(_, schema)| schema.get(column).is_none())
    {
        let columns = |schema: &Schema| {
            schema
                .iter_names()
                .map(|name| name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return match inputs {
            [(input, schema)] => format!(
                "reads column `{column}`, which its input {input} does not have (its columns: {})",
                columns(schema)
            ),
            _ => format!(
                "reads column `{column}`, which none of its inputs has ({})",
                inputs
                    .iter()
                    .map(|(input, schema)| format!("{input}: {}", columns(schema)))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        };
    }
    let detail = match err {
        JobError::Polars(err) => format!("polars: {}", crate::error::short_polars_error(err)),
        other => other.to_string(),
    };
    format!("fails when planned on its inputs' columns: {detail}")
}

/// The error a polars error wraps in its context, if any.
fn innermost(mut err: &PolarsError) -> &PolarsError {
    while let PolarsError::Context { error, .. } | PolarsError::ExprContext { error, .. } = err {
        err = error;
    }
    err
}

/// The first `"…"`-quoted name of a polars message (`unable to find column "amount"; …`).
fn quoted_name(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once('"')?;
    let (name, _) = rest.split_once('"')?;
    Some(name)
}

/// The schema of one file of `source` inside `roots`, or why there is none.
fn source_schema(source: &Source, roots: &DataRoots, budget: &mut Budget) -> SourceSchema {
    if let Some(reason) = budget.out_of_time() {
        return SourceSchema::Unknown(reason);
    }
    let pattern = any_partition(source.path.raw());
    let full = roots.resolve_pattern(&pattern);
    let mut search = Search { roots, budget };
    let shown = |path: &Path| {
        path.strip_prefix(roots.base())
            .unwrap_or(path)
            .display()
            .to_string()
    };
    let (path, resolved) = match search.first_file(&full) {
        Ok(Some(found)) => found,
        Ok(None) => {
            return SourceSchema::Unknown(format!(
                "source `{}` has no file yet matching `{pattern}` in the data roots",
                source.name
            ));
        }
        Err(reason) => {
            return SourceSchema::Unknown(format!(
                "no file of source `{}` was found: {reason}",
                source.name
            ));
        }
    };
    let file = shown(&path);
    match read_schema(source, &resolved, search.budget) {
        Ok(schema) => SourceSchema::Read { schema, file },
        Err(reason) => SourceSchema::Unknown(format!(
            "cannot read the columns of source `{}` from {file}: {reason}",
            source.name
        )),
    }
}

/// `template` with each variable (`{date}`, `{hour}` …) as `*`: every partition's files.
fn any_partition(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        // `{year}{month}` is one wildcard, not `**` (which glob reads as any folders).
        if !out.ends_with('*') {
            out.push('*');
        }
        rest = rest[open..].split_once('}').map_or("", |(_, after)| after);
    }
    out.push_str(rest);
    out
}

/// The columns of `path` read as `source` reads its files, within the byte bounds.
fn read_schema(source: &Source, path: &Path, budget: &mut Budget) -> Result<SchemaRef, String> {
    let sources = match source.format {
        SourceFormat::Parquet => {
            budget.read(parquet_footer_bytes(path)?)?;
            let paths: Vec<PlRefPath> = vec![PlRefPath::new(path.to_string_lossy().into_owned())];
            ScanSources::Paths(paths.into())
        }
        SourceFormat::Csv | SourceFormat::Ndjson => {
            // Room for a whole prefix, so every file is inferred from as many lines; what
            // was read is what counts.
            budget.read(PREFIX_BYTES as u64)?;
            let prefix = whole_lines_prefix(path);
            budget.bytes -= PREFIX_BYTES as u64 - prefix.as_ref().map_or(0, Vec::len) as u64;
            ScanSources::Buffers(Arc::from([prefix?.into()]))
        }
    };
    let mut frame = scan_source(source, sources).map_err(|err| err.to_string())?;
    frame
        .collect_schema()
        .map_err(|err| crate::error::short_polars_error(&err))
}

/// The bytes polars reads for a parquet file's schema (its footer and the 8 bytes after);
/// refuses a footer larger than [`MAX_PARQUET_FOOTER`]. Anything else (not parquet at all)
/// is for polars to say.
fn parquet_footer_bytes(path: &Path) -> Result<u64, String> {
    let mut file = std::fs::File::open(path).map_err(|err| err.to_string())?;
    let length = file.metadata().map_err(|err| err.to_string())?.len();
    if length < 8 {
        return Ok(length);
    }
    let mut tail = [0u8; 8];
    file.seek(SeekFrom::End(-8))
        .and_then(|_| file.read_exact(&mut tail))
        .map_err(|err| err.to_string())?;
    let footer = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if &tail[4..] == b"PAR1" && footer > MAX_PARQUET_FOOTER {
        return Err(format!(
            "its footer is {footer} bytes, more than the {MAX_PARQUET_FOOTER} a check reads"
        ));
    }
    Ok(footer.min(length) + 8)
}

/// The first [`PREFIX_BYTES`] of `path`, cut after its last line break unless that is the
/// whole file.
fn whole_lines_prefix(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|err| err.to_string())?;
    let mut bytes = Vec::with_capacity(64 << 10);
    file.take(PREFIX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| err.to_string())?;
    if bytes.len() > PREFIX_BYTES {
        bytes.truncate(PREFIX_BYTES);
        let Some(end) = bytes.iter().rposition(|&byte| byte == b'\n') else {
            return Err(format!(
                "its first {PREFIX_BYTES} bytes hold no line break, more than a check reads"
            ));
        };
        bytes.truncate(end + 1);
    }
    Ok(bytes)
}

/// A search for one file matching a glob pattern, inside the data roots, within the budget.
struct Search<'a> {
    roots: &'a DataRoots,
    budget: &'a mut Budget,
}

impl Search<'_> {
    /// The last file in name order matching `pattern` (as the file system names it, and
    /// resolved inside the roots); `Err` when the search ran out of its bounds.
    fn first_file(&mut self, pattern: &Path) -> Result<Option<(PathBuf, PathBuf)>, String> {
        let parts: Vec<Component<'_>> = pattern.components().collect();
        let literal = parts.iter().take_while(|part| !is_glob(part)).count();
        let start: PathBuf = parts[..literal].iter().collect();
        self.walk(&start, &parts[literal..], 0)
    }

    fn walk(
        &mut self,
        path: &Path,
        rest: &[Component<'_>],
        depth: usize,
    ) -> Result<Option<(PathBuf, PathBuf)>, String> {
        let Some((part, after)) = rest.split_first() else {
            // A candidate: a regular file (links followed) that resolves inside the roots,
            // checked as a run checks the files it reads.
            let is_file = std::fs::metadata(path).is_ok_and(|meta| meta.is_file());
            return Ok(match (is_file, self.roots.check_file(path)) {
                (true, Ok(resolved)) => Some((path.to_path_buf(), resolved)),
                _ => None,
            });
        };
        let Some(text) = part.as_os_str().to_str().filter(|_| is_glob(part)) else {
            return self.walk(&path.join(part), after, depth);
        };
        if depth > MAX_DEPTH {
            return Ok(None);
        }
        let names = self.list(path)?;
        if text == "**" {
            // Any number of folders, none included.
            if let Some(found) = self.walk(path, after, depth + 1)? {
                return Ok(Some(found));
            }
            for name in names {
                let child = path.join(&name);
                if child.is_dir()
                    && let Some(found) = self.walk(&child, rest, depth + 1)?
                {
                    return Ok(Some(found));
                }
            }
            return Ok(None);
        }
        let pattern =
            glob::Pattern::new(text).map_err(|err| format!("bad glob `{text}`: {err}"))?;
        for name in names.iter().filter(|name| pattern.matches(name)) {
            if let Some(found) = self.walk(&path.join(name), after, depth + 1)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The names in folder `path`, last first; none when it is not a readable folder.
    fn list(&mut self, path: &Path) -> Result<Vec<String>, String> {
        let Ok(entries) = std::fs::read_dir(path) else {
            return Ok(Vec::new());
        };
        let mut names = Vec::new();
        for entry in entries {
            self.budget.entries += 1;
            if self.budget.entries > MAX_ENTRIES {
                return Err(format!(
                    "the plan check stopped searching after {MAX_ENTRIES} directory entries"
                ));
            }
            if self.budget.entries % 256 == 0
                && let Some(reason) = self.budget.out_of_time()
            {
                return Err(reason);
            }
            if let Ok(entry) = entry
                && let Ok(name) = entry.file_name().into_string()
            {
                names.push(name);
            }
        }
        names.sort_unstable_by(|a, b| b.cmp(a));
        Ok(names)
    }
}

/// Whether a path component is a glob pattern rather than a name.
fn is_glob(part: &Component<'_>) -> bool {
    matches!(part, Component::Normal(name)
        if name.to_str().is_some_and(|name| name.contains(['*', '?', '['])))
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::TimeZone;

    use crate::job::JobRegistry;
    use crate::pipeline::parse_pipeline;

    const HEADER: &str = "version: 1
name: t
start: 2024-01-01T00:00:00Z
sources:
  events:
    format: parquet
    path: events/date={date}/hour={hour}/*.parquet
    time_column: ts
jobs:
";

    /// Two hours of sample events under `dir/data`.
    fn sample_data(dir: &Path) -> PathBuf {
        let start = chrono::Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let spec = crate::sample::SampleSpec {
            seed: 1,
            start,
            hours: 2,
            rows: 200,
            users: 50,
        };
        let data = dir.join("data");
        crate::dataset::write_events_parquet(
            &crate::sample::generate(&spec),
            &data.join("events"),
            start,
            2,
        )
        .unwrap();
        data
    }

    fn check(data: &Path, text: &str) -> PlanCheck {
        let pipeline = parse_pipeline(text, Path::new("t.yaml"), &JobRegistry::new())
            .unwrap_or_else(|err| panic!("{err}"))
            .confine(Arc::new(DataRoots::new(data, &[])), text)
            .unwrap();
        check_pipeline(&pipeline, text)
    }

    fn messages(found: &[Diagnostic]) -> Vec<String> {
        found.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn sql_polars_cannot_plan_is_a_problem_at_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let data = sample_data(dir.path());
        let text = format!(
            "{HEADER}  status_monthly:
    grain: monthly
    from: events
    sql: SELECT event AS status, count(*) AS n FROM events GROUP BY event
  share:
    grain: monthly
    from: status_monthly
    sql: \"SELECT status, n, n * 1.0 / (SELECT sum(n) FROM status_monthly) AS share FROM status_monthly\"
"
        );
        let found = check(&data, &text);
        assert_eq!(found.checked, ["status_monthly"]);
        assert_eq!(
            messages(&found.problems),
            [
                "t.yaml:17:5: job `share`, field `sql`: fails when planned on its inputs' columns: \
              polars: subquery comparisons with '/' are not supported"
            ]
        );
    }

    #[test]
    fn a_column_the_upstream_does_not_produce_names_the_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let data = sample_data(dir.path());
        let text = format!(
            "{HEADER}  staged:
    grain: hourly
    from: events
    select: {{ columns: [ts, city, category] }}
  sales:
    grain: daily
    from: staged
    group_by:
      keys: [category]
      aggregations: {{ sales: sum(amount) }}
"
        );
        let found = check(&data, &text);
        assert_eq!(
            messages(&found.problems),
            [
                "t.yaml:17:5: job `sales`, field `group_by`: reads column `amount`, which its \
              input upstream job `staged` does not have (its columns: ts, city, category)"
            ]
        );
    }

    #[test]
    fn rollups_and_the_example_kinds_plan() {
        let dir = tempfile::tempdir().unwrap();
        let data = sample_data(dir.path());
        let shop = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/shop.yaml"),
        )
        .unwrap();
        let found = check(&data, &shop);
        assert!(found.problems.is_empty(), "{:?}", messages(&found.problems));
        assert!(
            found.unchecked.is_empty(),
            "{:?}",
            messages(&found.unchecked)
        );
        assert_eq!(found.checked.len(), 7);
    }

    #[test]
    fn jobs_over_a_source_without_files_are_not_checked() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let text = format!(
            "{HEADER}  hourly:
    grain: hourly
    from: events
    count_distinct: {{ column: user_id }}
  daily:
    grain: daily
    from: hourly
    count_distinct: {{ column: user_id }}
"
        );
        let found = check(&data, &text);
        assert!(found.problems.is_empty());
        assert!(found.checked.is_empty());
        assert_eq!(
            messages(&found.unchecked),
            [
                "t.yaml:10:3: job `hourly`: not checked: source `events` has no file yet \
                 matching `events/date=*/hour=*/*.parquet` in the data roots",
                "t.yaml:14:3: job `daily`: not checked: reads `hourly`, which is not checked",
            ]
        );
    }

    #[test]
    fn csv_sources_are_read_from_a_prefix_of_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("logs")).unwrap();
        let mut csv = String::from("ts,level,bytes\n");
        for i in 0..200 {
            csv.push_str(&format!("2024-01-01T00:{:02}:00,info,{i}\n", i % 60));
        }
        std::fs::write(data.join("logs/2024-01-01.csv"), csv).unwrap();
        let text = "version: 1
name: t
start: 2024-01-01T00:00:00Z
sources:
  logs:
    format: csv
    path: logs/{date}.csv
    time_column: ts
jobs:
  volume:
    grain: daily
    from: logs
    group_by:
      keys: [level]
      aggregations: { total: sum(bytes), worst: max(latency) }
";
        let found = check(&data, text);
        assert_eq!(
            messages(&found.problems),
            [
                "t.yaml:13:5: job `volume`, field `group_by`: reads column `latency`, which its \
              input source `logs` (read from logs/2024-01-01.csv) does not have (its columns: \
              ts, level, bytes)"
            ]
        );
    }

    /// A `rust:` job that panics when it runs.
    #[derive(Debug)]
    struct Panics;

    impl crate::job::Job for Panics {
        fn kind(&self) -> &str {
            "panics"
        }
        fn validate(&self, _: &[String]) -> Result<(), Vec<String>> {
            Ok(())
        }
        fn run(&self, _: &JobContext<'_>) -> Result<JobOutput, JobError> {
            panic!("no rows to look at")
        }
    }

    #[test]
    fn a_panic_is_a_problem_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let data = sample_data(dir.path());
        let mut registry = JobRegistry::new();
        registry.register("panics", |_| {
            Ok(Arc::new(Panics) as Arc<dyn crate::job::Job>)
        });
        let text = format!(
            "{HEADER}  j:\n    grain: daily\n    from: events\n    rust: {{ class: panics }}\n"
        );
        let pipeline = parse_pipeline(&text, Path::new("t.yaml"), &registry)
            .unwrap()
            .confine(Arc::new(DataRoots::new(&data, &[])), &text)
            .unwrap();
        assert_eq!(
            messages(&check_pipeline(&pipeline, &text).problems),
            [
                "t.yaml:13:5: job `j`, field `rust`: fails when planned on its inputs' columns: it \
              panicked: no rows to look at"
            ]
        );
    }

    #[test]
    fn a_source_file_without_its_time_column_leaves_its_jobs_unchecked() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("logs")).unwrap();
        std::fs::write(
            data.join("logs/a.csv"),
            "when,level\n2024-01-01T00:00:00,info\n",
        )
        .unwrap();
        let text = "version: 1\nname: t\nstart: 2024-01-01T00:00:00Z\nsources:\n  logs:\n    \
                    format: csv\n    path: logs/*.csv\n    time_column: ts\njobs:\n  j:\n    \
                    grain: daily\n    from: logs\n    select: {}\n";
        let found = check(&data, text);
        assert!(found.problems.is_empty());
        assert_eq!(
            messages(&found.unchecked),
            [
                "t.yaml:10:3: job `j`: not checked: source `logs`: time column `ts` not found \
              (columns: when, level) (in logs/a.csv)"
            ]
        );
    }

    #[cfg(unix)]
    #[test]
    fn files_are_looked_for_and_read_inside_the_roots_only() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("logs")).unwrap();
        let outside = dir.path().join("secret.csv");
        std::fs::write(&outside, "ts,password\n2024-01-01T00:00:00,hunter2\n").unwrap();
        // A link in the data dir to a file outside it, named to sort last.
        std::os::unix::fs::symlink(&outside, data.join("logs/z.csv")).unwrap();
        std::fs::write(
            data.join("logs/a.csv"),
            "ts,level\n2024-01-01T00:00:00,info\n",
        )
        .unwrap();
        let text = "version: 1\nname: t\nstart: 2024-01-01T00:00:00Z\nsources:\n  logs:\n    \
                    format: csv\n    path: logs/*.csv\n    time_column: ts\njobs:\n  j:\n    \
                    grain: daily\n    from: logs\n    select: { columns: [password] }\n";
        let found = check(&data, text);
        assert_eq!(
            messages(&found.problems),
            [
                "t.yaml:13:5: job `j`, field `select`: reads column `password`, which its input \
              source `logs` (read from logs/a.csv) does not have (its columns: ts, level)"
            ]
        );
    }

    #[test]
    fn the_budget_bounds_the_search() {
        let dir = tempfile::tempdir().unwrap();
        let roots = DataRoots::new(dir.path(), &[]);
        let mut budget = Budget::new();
        budget.entries = MAX_ENTRIES;
        std::fs::write(dir.path().join("a.csv"), "x\n").unwrap();
        let mut search = Search {
            roots: &roots,
            budget: &mut budget,
        };
        let err = search.first_file(&dir.path().join("*.csv")).unwrap_err();
        assert!(err.contains("stopped searching after 10000"), "{err}");
        let mut budget = Budget::new();
        budget.bytes = MAX_BYTES;
        assert!(budget.read(1).is_err());
    }

    #[test]
    fn templates_become_patterns_of_every_partition() {
        assert_eq!(
            any_partition("events/date={date}/hour={hour}/*.parquet"),
            "events/date=*/hour=*/*.parquet"
        );
        assert_eq!(any_partition("logs/{year}{month}/x.csv"), "logs/*/x.csv");
        assert_eq!(any_partition("plain.csv"), "plain.csv");
    }

    #[test]
    fn quoted_names_come_from_polars_messages() {
        assert_eq!(
            quoted_name("unable to find column \"amount\"; valid columns: [\"a\"]"),
            Some("amount")
        );
        assert_eq!(quoted_name("no quotes"), None);
    }
}
