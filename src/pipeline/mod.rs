//! Pipelines: YAML files parsed, validated and turned into a [`Pipeline`] that cannot be
//! invalid: every input exists, grains nest, the job graph has no cycle, every SQL fragment
//! parses, every path template is well formed.
//!
//! Loading collects every problem it can find rather than stopping at the first, and each
//! [`Diagnostic`] names the file, the line and column where it can be located, the job and the
//! field. Nothing here touches data or the store.

pub mod dag;
pub mod data_roots;
pub mod diagnostic;
pub mod locate;
pub mod spec;
pub mod template;
pub mod trigger;
pub mod yaml_guard;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use sha2::{Digest, Sha256};

pub use dag::JobDag;
use data_roots::DataRoots;
pub use diagnostic::{Diagnostic, PipelineErrors};
use locate::locate;
use spec::{
    JobScheduleSpec, JobSpec, PipelineScheduleSpec, PipelineSpec, SPEC_VERSION, SourceFormat,
    SourceSpec,
};
pub use template::PathTemplate;

use self::trigger::{CatchUp, CronSchedule, PipelineSchedule, Trigger};
use crate::job::builtin::{CountDistinct, GroupBy, Select, Sql, Top};
use crate::job::{Job, JobRegistry};
use crate::partition::{Grain, parse_instant, parse_timezone};

/// Bumped when a built-in kind changes what it computes, so stored results made by an older
/// engine are recomputed instead of trusted.
pub const ENGINE_VERSION: u32 = 1;

/// Most retries a job may ask for; more is almost always a typo and would hide failures.
const MAX_RETRIES: u32 = 100;

/// How long a scheduled partition waits for its source files when the source does not say.
pub const DEFAULT_SOURCE_WAIT: Duration = Duration::from_secs(3600);

/// The first retry's wait when a job does not say.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(30);

/// The longest duration a setting may give (delays, waits, timeouts, backoffs): a year and a
/// day. Longer is a typo, and instants that far out leave chrono's range.
const MAX_SETTING_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Parses a duration field such as `90s`, `5m`, `1h`.
fn parse_duration_field(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim()).map_err(|err| {
        format!("cannot parse `{text}` as a duration ({err}); use e.g. `90s`, `5m`, `1h`")
    })?;
    if duration > MAX_SETTING_DURATION {
        return Err(format!(
            "`{text}` is longer than the 366 days a setting may give"
        ));
    }
    Ok(duration)
}

/// A job kind built from its YAML block, or the problems found in it.
type BuiltJob = Result<Arc<dyn Job>, Vec<String>>;

/// A validated pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub description: Option<String>,
    pub file: PathBuf,
    pub timezone: Tz,
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    pub sources: BTreeMap<String, Source>,
    /// Jobs by name; iterate [`JobDag::topological_order`] for dependency order.
    pub jobs: BTreeMap<String, JobDef>,
    pub dag: JobDag,
    pub schedule: PipelineSchedule,
    /// Where this pipeline may read source files, once [`Pipeline::confine`] has checked its
    /// paths against them; `None` reads within the materialiser's own roots.
    pub data_roots: Option<Arc<DataRoots>>,
}

impl Pipeline {
    /// Checks every source path against `roots` and, when all lie inside, confines the
    /// pipeline's reads to them. `text` is the pipeline's YAML, to place each problem.
    pub fn confine(
        mut self,
        roots: Arc<DataRoots>,
        text: &str,
    ) -> Result<Pipeline, PipelineErrors> {
        let problems: Vec<Diagnostic> = self
            .sources
            .values()
            .filter_map(|source| {
                let problem = roots.check_template(&source.path).err()?;
                Some(
                    Diagnostic::new(
                        &self.file,
                        format!("source `{}`, field `path`: {problem}", source.name),
                    )
                    .at(locate(text, &["sources", &source.name, "path"])),
                )
            })
            .collect();
        if !problems.is_empty() {
            return Err(PipelineErrors(problems));
        }
        self.data_roots = Some(roots);
        Ok(self)
    }

    pub fn job(&self, name: &str) -> Option<&JobDef> {
        self.jobs.get(name)
    }

    /// Jobs in dependency order.
    pub fn jobs_in_order(&self) -> impl Iterator<Item = &JobDef> {
        self.dag
            .topological_order()
            .iter()
            .filter_map(|name| self.jobs.get(name))
    }
}

#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub format: SourceFormat,
    pub path: PathTemplate,
    pub time_column: String,
    pub timezone: Tz,
    /// How long a scheduled partition waits for its files; zero fails at once without them.
    pub wait: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputRef {
    Source(String),
    Job(String),
}

impl InputRef {
    pub fn name(&self) -> &str {
        match self {
            InputRef::Source(name) | InputRef::Job(name) => name,
        }
    }
}

#[derive(Debug, Clone)]
pub struct JobDef {
    pub name: String,
    pub description: Option<String>,
    pub grain: Grain,
    pub inputs: Vec<InputRef>,
    pub job: Arc<dyn Job>,
    pub retries: u32,
    pub timeout: Option<Duration>,
    /// Wait before the first retry; doubled for each further one.
    pub retry_backoff: Duration,
    /// Most runs of this job at once.
    pub concurrency: Option<u32>,
    pub trigger: Trigger,
    /// Hash of everything that defines what this job computes: its YAML block, the sources it
    /// reads and the engine version. A stored result made under another hash is stale.
    pub definition_fingerprint: String,
    /// Hash of this job's definition and, transitively, of every upstream job's: what a
    /// stored result is stamped with, so the read side can tell a result of this definition
    /// (with these upstream definitions) from one an earlier or replaced version made.
    pub lineage_fingerprint: String,
}

impl JobDef {
    pub fn kind(&self) -> &str {
        self.job.kind()
    }
}

/// Loads every `*.yaml`/`*.yml` file of a folder, in file-name order. Pipeline names must be
/// unique across the folder.
pub fn load_dir(dir: &Path, registry: &JobRegistry) -> Result<Vec<Pipeline>, PipelineErrors> {
    Ok(load_dir_with_texts(dir, registry)?
        .into_iter()
        .map(|(pipeline, _)| pipeline)
        .collect())
}

/// [`load_dir`], each pipeline with the text it was parsed from (what the server's catalog
/// stores, so it never reads or parses a file twice).
pub fn load_dir_with_texts(
    dir: &Path,
    registry: &JobRegistry,
) -> Result<Vec<(Pipeline, String)>, PipelineErrors> {
    let entries = std::fs::read_dir(dir).map_err(|err| {
        PipelineErrors(vec![Diagnostic::new(
            dir,
            format!("cannot read pipeline folder: {err}"),
        )])
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.is_file()
                && path
                    .extension()
                    .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    load_files_with_texts(&files, registry)
}

/// Loads several pipeline files; reports the problems of all of them together.
pub fn load_files(
    files: &[PathBuf],
    registry: &JobRegistry,
) -> Result<Vec<Pipeline>, PipelineErrors> {
    Ok(load_files_with_texts(files, registry)?
        .into_iter()
        .map(|(pipeline, _)| pipeline)
        .collect())
}

fn load_files_with_texts(
    files: &[PathBuf],
    registry: &JobRegistry,
) -> Result<Vec<(Pipeline, String)>, PipelineErrors> {
    let mut pipelines: Vec<(Pipeline, String)> = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        match read_pipeline_file(file)
            .and_then(|text| parse_pipeline(&text, file, registry).map(|p| (p, text)))
        {
            Ok((pipeline, text)) => {
                if let Some((other, _)) = pipelines.iter().find(|(p, _)| p.name == pipeline.name) {
                    problems.push(Diagnostic::new(
                        file,
                        format!(
                            "pipeline name `{}` is already used by {}",
                            pipeline.name,
                            other.file.display()
                        ),
                    ));
                } else {
                    pipelines.push((pipeline, text));
                }
            }
            Err(PipelineErrors(found)) => problems.extend(found),
        }
    }
    if problems.is_empty() {
        Ok(pipelines)
    } else {
        Err(PipelineErrors(problems))
    }
}

pub fn load_file(file: &Path, registry: &JobRegistry) -> Result<Pipeline, PipelineErrors> {
    let text = read_pipeline_file(file)?;
    parse_pipeline(&text, file, registry)
}

/// The text of a pipeline file: regular files only.
fn read_pipeline_file(file: &Path) -> Result<String, PipelineErrors> {
    let cannot_read = |problem: String| {
        PipelineErrors(vec![Diagnostic::new(
            file,
            format!("cannot read file: {problem}"),
        )])
    };
    // A FIFO would block the read forever and a device (`x.yaml -> /dev/zero`) never end it:
    // only regular files are read (a directory fails the read itself, naming it).
    let metadata = std::fs::metadata(file).map_err(|err| cannot_read(err.to_string()))?;
    if !metadata.is_file() && !metadata.is_dir() {
        return Err(cannot_read(
            "not a regular file (a FIFO, socket or device)".to_owned(),
        ));
    }
    std::fs::read_to_string(file).map_err(|err| cannot_read(err.to_string()))
}

/// Parses and validates one pipeline from its text; `file` is only used in messages.
pub fn parse_pipeline(
    text: &str,
    file: &Path,
    registry: &JobRegistry,
) -> Result<Pipeline, PipelineErrors> {
    let flow_depth = yaml_guard::flow_depth_bound(text);
    if flow_depth > yaml_guard::MAX_YAML_FLOW_DEPTH {
        return Err(PipelineErrors(vec![Diagnostic::new(
            file,
            format!(
                "flow collections (`[…]`, `{{…}}`) are nested about {flow_depth} deep; the limit \
                 is {}",
                yaml_guard::MAX_YAML_FLOW_DEPTH
            ),
        )]));
    }
    let spec: PipelineSpec = serde_yaml::from_str(text).map_err(|err| {
        let message = strip_location_suffix(&err.to_string());
        let position = locate_duplicate(text, &message)
            .or_else(|| err.location().map(|loc| (loc.line(), loc.column())));
        PipelineErrors(vec![Diagnostic::new(file, message).at(position)])
    })?;
    Validator {
        text,
        file,
        registry,
        problems: Vec::new(),
    }
    .validate(spec)
}

/// serde_yaml embeds " at line L column C" (sometimes twice); the diagnostic prints the
/// position itself, so every such phrase is removed.
fn strip_location_suffix(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(index) = rest.find(" at line ") {
        out.push_str(&rest[..index]);
        let after = &rest[index + " at line ".len()..];
        let skip_number = |text: &str| text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let after_line = &after[after.len() - skip_number(after)..];
        match after_line.strip_prefix(" column ") {
            Some(column) => rest = &column[column.len() - skip_number(column)..],
            None => {
                out.push_str(" at line ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// serde_yaml places a duplicate-key error at the start of the enclosing mapping; point at
/// the second occurrence of the key instead.
fn locate_duplicate(text: &str, message: &str) -> Option<(usize, usize)> {
    let name = message
        .split("duplicate name `")
        .nth(1)?
        .split('`')
        .next()?;
    text.lines()
        .enumerate()
        .filter_map(|(index, line)| {
            let trimmed = line.trim_start();
            let key = trimmed.strip_prefix(name)?;
            key.starts_with(':')
                .then_some((index + 1, line.len() - trimmed.len() + 1))
        })
        .nth(1)
}

/// Names used in store keys, URLs and SQL: a letter, then letters, digits, `_` or `-`.
pub fn check_identifier(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if name.len() > 64 {
        return Err(format!("name `{name}` is longer than 64 characters"));
    }
    if !starts_with_letter || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!(
            "name `{name}` must start with a letter and contain only letters, digits, `_` and `-`"
        ));
    }
    Ok(())
}

struct Validator<'a> {
    text: &'a str,
    file: &'a Path,
    registry: &'a JobRegistry,
    problems: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn report(&mut self, path: &[&str], message: impl Into<String>) -> &mut Diagnostic {
        let diagnostic = Diagnostic::new(self.file, message).at(locate(self.text, path));
        self.problems.push(diagnostic);
        let last = self.problems.len() - 1;
        &mut self.problems[last]
    }

    fn report_job(&mut self, job: &str, field: &str, message: impl Into<String>) {
        let position = locate(self.text, &["jobs", job, field]);
        let diagnostic = Diagnostic::new(self.file, message)
            .at(position)
            .job(job)
            .field(field);
        self.problems.push(diagnostic);
    }

    fn validate(mut self, spec: PipelineSpec) -> Result<Pipeline, PipelineErrors> {
        if spec.version != SPEC_VERSION {
            let message = if spec.version > SPEC_VERSION {
                format!(
                    "pipeline format version {} is newer than this Floe reads ({SPEC_VERSION}); upgrade Floe",
                    spec.version
                )
            } else {
                format!(
                    "unknown pipeline format version {} (supported: {SPEC_VERSION})",
                    spec.version
                )
            };
            self.report(&["version"], message);
            return Err(PipelineErrors(self.problems));
        }
        if let Err(err) = check_identifier(&spec.name) {
            self.report(&["name"], format!("pipeline {err}")).field = Some("name".into());
        }
        let timezone = match parse_timezone(spec.timezone.as_deref().unwrap_or("UTC")) {
            Ok(tz) => tz,
            Err(err) => {
                self.report(&["timezone"], err.to_string()).field = Some("timezone".into());
                Tz::UTC
            }
        };
        let start = self.instant(&spec.start, "start", timezone);
        let end = spec
            .end
            .as_deref()
            .and_then(|end| self.instant(end, "end", timezone));
        if let (Some(start), Some(end)) = (start, end)
            && end <= start
        {
            self.report(&["end"], format!("end {end} is not after start {start}"))
                .field = Some("end".into());
        }

        let sources = self.sources(&spec);
        let jobs = self.jobs(&spec, &sources);
        let schedule = self.pipeline_schedule(spec.schedule.as_ref());

        let graph_input: Vec<(String, Vec<String>)> = jobs
            .iter()
            .map(|(name, def)| {
                let upstream = def
                    .inputs
                    .iter()
                    .filter_map(|input| match input {
                        InputRef::Job(name) => Some(name.clone()),
                        InputRef::Source(_) => None,
                    })
                    .collect();
                (name.clone(), upstream)
            })
            .collect();
        let dag = match JobDag::build(&graph_input) {
            Ok(dag) => Some(dag),
            Err(cycles) => {
                for cycle in cycles {
                    self.report(&["jobs"], cycle);
                }
                None
            }
        };
        if spec.jobs.is_empty() {
            self.report(&["jobs"], "a pipeline needs at least one job")
                .field = Some("jobs".into());
        }

        // Read top to bottom, like the file.
        self.problems
            .sort_by_key(|d| (d.line.unwrap_or(usize::MAX), d.column.unwrap_or(usize::MAX)));
        let mut jobs: BTreeMap<String, JobDef> = jobs.into_iter().collect();
        if let Some(dag) = &dag {
            for name in dag.topological_order() {
                let Some(def) = jobs.get(name) else { continue };
                let mut hasher = Sha256::new();
                hasher.update(def.definition_fingerprint.as_bytes());
                for input in &def.inputs {
                    if let InputRef::Job(upstream) = input
                        && let Some(upstream) = jobs.get(upstream)
                    {
                        hasher.update(upstream.lineage_fingerprint.as_bytes());
                    }
                }
                let lineage = hex::encode(hasher.finalize());
                if let Some(def) = jobs.get_mut(name) {
                    def.lineage_fingerprint = lineage;
                }
            }
        }
        match (self.problems.is_empty(), start, dag) {
            (true, Some(start), Some(dag)) => Ok(Pipeline {
                name: spec.name,
                description: spec.description,
                file: self.file.to_path_buf(),
                timezone,
                start,
                end,
                sources,
                jobs,
                dag,
                schedule,
                data_roots: None,
            }),
            _ => Err(PipelineErrors(self.problems)),
        }
    }

    fn pipeline_schedule(&mut self, spec: Option<&PipelineScheduleSpec>) -> PipelineSchedule {
        let mut schedule = PipelineSchedule::default();
        let Some(spec) = spec else {
            return schedule;
        };
        schedule.enabled = spec.enabled.unwrap_or(true);
        if let Some(value) = &spec.catchup {
            let text = match value {
                serde_yaml::Value::Number(n) => Some(n.to_string()),
                serde_yaml::Value::String(word) => Some(word.clone()),
                _ => None,
            };
            match text.as_deref().map(CatchUp::parse) {
                Some(Ok(policy)) => schedule.catch_up = policy,
                Some(Err(err)) => {
                    self.report(&["schedule", "catchup"], err).field =
                        Some("schedule.catchup".into())
                }
                None => {
                    self.report(
                        &["schedule", "catchup"],
                        "catchup must be `all`, `latest` or a number of partitions",
                    )
                    .field = Some("schedule.catchup".into())
                }
            }
        }
        match spec.max_catchup {
            Some(0) => {
                self.report(
                    &["schedule", "max_catchup"],
                    "max_catchup must be at least 1",
                )
                .field = Some("schedule.max_catchup".into());
            }
            Some(cap) => schedule.max_catch_up = cap,
            None => {}
        }
        match spec.concurrency {
            Some(0) => {
                self.report(
                    &["schedule", "concurrency"],
                    "concurrency must be at least 1",
                )
                .field = Some("schedule.concurrency".into());
            }
            other => schedule.concurrency = other,
        }
        schedule
    }

    /// A job's duration field, reported at its place when it does not parse.
    fn job_duration(&mut self, job: &str, path: &[&str], text: Option<&str>) -> Option<Duration> {
        let text = text?;
        match parse_duration_field(text) {
            Ok(duration) => Some(duration),
            Err(err) => {
                let position = locate(self.text, &[&["jobs", job][..], path].concat());
                let field = path.join(".");
                self.problems.push(
                    Diagnostic::new(self.file, err)
                        .at(position)
                        .job(job)
                        .field(field.as_str()),
                );
                None
            }
        }
    }

    fn trigger(&mut self, job: &str, spec: Option<&JobScheduleSpec>) -> Trigger {
        let Some(spec) = spec else {
            return Trigger::default();
        };
        let cron = spec
            .cron
            .as_deref()
            .and_then(|text| match CronSchedule::parse(text) {
                Ok(cron) => Some(cron),
                Err(err) => {
                    let position = locate(self.text, &["jobs", job, "schedule", "cron"]);
                    self.problems.push(
                        Diagnostic::new(self.file, err)
                            .at(position)
                            .job(job)
                            .field("schedule.cron"),
                    );
                    None
                }
            });
        let delay = self
            .job_duration(job, &["schedule", "delay"], spec.delay.as_deref())
            .and_then(|delay| chrono::TimeDelta::from_std(delay).ok())
            .unwrap_or_default();
        Trigger { cron, delay }
    }

    fn instant(&mut self, input: &str, field: &str, tz: Tz) -> Option<DateTime<Utc>> {
        match parse_instant(input, tz) {
            Ok(instant) => Some(instant),
            Err(err) => {
                self.report(&[field], err.to_string()).field = Some(field.into());
                None
            }
        }
    }

    fn sources(&mut self, spec: &PipelineSpec) -> BTreeMap<String, Source> {
        let mut sources = BTreeMap::new();
        for (name, source) in spec.sources.iter() {
            let mut ok = true;
            let mut problem = |this: &mut Self, field: &str, message: String| {
                ok = false;
                let diagnostic = Diagnostic::new(
                    this.file,
                    format!("source `{name}`, field `{field}`: {message}"),
                )
                .at(locate(this.text, &["sources", name, field]));
                this.problems.push(diagnostic);
            };
            if let Err(err) = check_identifier(name) {
                problem(self, "name", format!("source {err}"));
            }
            let path = PathTemplate::parse(&source.path).map_err(|err| problem(self, "path", err));
            if source.time_column.trim().is_empty() {
                problem(self, "time_column", "is empty".to_owned());
            }
            let timezone = parse_timezone(source.timezone.as_deref().unwrap_or("UTC"))
                .map_err(|err| problem(self, "timezone", err.to_string()));
            let wait = match source.wait.as_deref() {
                None => Ok(DEFAULT_SOURCE_WAIT),
                Some(text) => parse_duration_field(text).map_err(|err| problem(self, "wait", err)),
            };
            if let (true, Ok(path), Ok(timezone), Ok(wait)) = (ok, path, timezone, wait) {
                sources.insert(
                    name.clone(),
                    Source {
                        name: name.clone(),
                        format: source.format,
                        path,
                        time_column: source.time_column.clone(),
                        timezone,
                        wait,
                    },
                );
            }
        }
        sources
    }

    fn jobs(
        &mut self,
        spec: &PipelineSpec,
        sources: &BTreeMap<String, Source>,
    ) -> Vec<(String, JobDef)> {
        let declared_grains: BTreeMap<&str, Option<Grain>> = spec
            .jobs
            .iter()
            .map(|(name, job)| (name.as_str(), job.grain.parse::<Grain>().ok()))
            .collect();
        let source_names: BTreeSet<&str> =
            spec.sources.iter().map(|(name, _)| name.as_str()).collect();
        let mut jobs = Vec::new();
        for (name, job_spec) in spec.jobs.iter() {
            let before = self.problems.len();
            if let Err(err) = check_identifier(name) {
                self.report_job(name, "name", format!("job {err}"));
            }
            if source_names.contains(name.as_str()) {
                self.report_job(
                    name,
                    "name",
                    format!("`{name}` is already the name of a source"),
                );
            }
            let grain = match job_spec.grain.parse::<Grain>() {
                Ok(grain) => Some(grain),
                Err(_) => {
                    self.report_job(
                        name,
                        "grain",
                        format!(
                            "unknown grain `{}` (expected hourly, daily, weekly or monthly)",
                            job_spec.grain
                        ),
                    );
                    None
                }
            };
            let problems_before_inputs = self.problems.len();
            let inputs = self.inputs(name, job_spec, grain, &source_names, &declared_grains);
            let inputs_ok = self.problems.len() == problems_before_inputs;
            let job = self.job_kind(name, job_spec);
            // With a bad input list, the kind's input checks would only repeat the problem.
            if let (Some(job), true) = (&job, inputs_ok) {
                let input_names: Vec<String> = inputs.iter().map(|i| i.name().to_owned()).collect();
                if let Err(messages) = job.validate(&input_names) {
                    for message in messages {
                        self.report_kind_problem(name, job_spec, &message);
                    }
                }
            }
            if job_spec
                .retries
                .is_some_and(|retries| retries > MAX_RETRIES)
            {
                self.report_job(
                    name,
                    "retries",
                    format!("at most {MAX_RETRIES} retries are allowed"),
                );
            }
            let timeout = self
                .job_duration(name, &["timeout"], job_spec.timeout.as_deref())
                .filter(|timeout| {
                    if timeout.is_zero() {
                        self.report_job(name, "timeout", "timeout must be longer than zero");
                    }
                    !timeout.is_zero()
                });
            let retry_backoff = self
                .job_duration(name, &["retry_backoff"], job_spec.retry_backoff.as_deref())
                .unwrap_or(DEFAULT_RETRY_BACKOFF);
            if job_spec.concurrency == Some(0) {
                self.report_job(name, "concurrency", "concurrency must be at least 1");
            }
            let trigger = self.trigger(name, job_spec.schedule.as_ref());
            if let (true, Some(grain), Some(job)) = (self.problems.len() == before, grain, job) {
                let definition_fingerprint =
                    definition_fingerprint(name, job_spec, &inputs, spec, sources);
                jobs.push((
                    name.clone(),
                    JobDef {
                        name: name.clone(),
                        description: job_spec.description.clone(),
                        grain,
                        inputs,
                        job,
                        retries: job_spec.retries.unwrap_or(0),
                        timeout,
                        retry_backoff,
                        concurrency: job_spec.concurrency,
                        trigger,
                        definition_fingerprint,
                        // Filled in once the job graph is known.
                        lineage_fingerprint: String::new(),
                    },
                ));
            }
        }
        jobs
    }

    fn inputs(
        &mut self,
        name: &str,
        job_spec: &JobSpec,
        grain: Option<Grain>,
        sources: &BTreeSet<&str>,
        jobs: &BTreeMap<&str, Option<Grain>>,
    ) -> Vec<InputRef> {
        let names = job_spec.from.names();
        if names.is_empty() {
            self.report_job(name, "from", "a job needs at least one input");
        }
        let mut inputs = Vec::new();
        let mut seen = BTreeSet::new();
        for input in names {
            if !seen.insert(input.clone()) {
                self.report_job(name, "from", format!("input `{input}` is listed twice"));
            } else if sources.contains(input.as_str()) {
                inputs.push(InputRef::Source(input));
            } else if let Some(upstream_grain) = jobs.get(input.as_str()) {
                if let (Some(upstream_grain), Some(grain)) = (upstream_grain, grain)
                    && !upstream_grain.nests_in(grain)
                {
                    self.report_job(
                        name,
                        "from",
                        format!(
                            "job `{name}` ({grain}) cannot read `{input}` ({upstream_grain}): a job reads upstream jobs of its own grain or of a finer grain that nests in it (hourly → daily, weekly, monthly; daily → weekly, monthly)"
                        ),
                    );
                }
                inputs.push(InputRef::Job(input));
            } else {
                let mut known: Vec<&str> = sources
                    .iter()
                    .copied()
                    .chain(jobs.keys().copied())
                    .collect();
                known.retain(|k| *k != name);
                let known = if known.is_empty() {
                    "the pipeline defines no sources or other jobs".to_owned()
                } else {
                    format!("known: {}", known.join(", "))
                };
                self.report_job(
                    name,
                    "from",
                    format!("unknown input `{input}`: no source or job has that name ({known})"),
                );
            }
        }
        inputs
    }

    fn job_kind(&mut self, name: &str, job_spec: &JobSpec) -> Option<Arc<dyn Job>> {
        let mut kinds: Vec<(&str, BuiltJob)> = Vec::new();
        if let Some(spec) = &job_spec.count_distinct {
            kinds.push((
                "count_distinct",
                CountDistinct::from_spec(spec).map(|j| Arc::new(j) as Arc<dyn Job>),
            ));
        }
        if let Some(spec) = &job_spec.top {
            kinds.push((
                "top",
                Top::from_spec(spec).map(|j| Arc::new(j) as Arc<dyn Job>),
            ));
        }
        if let Some(spec) = &job_spec.group_by {
            kinds.push((
                "group_by",
                GroupBy::from_spec(spec).map(|j| Arc::new(j) as Arc<dyn Job>),
            ));
        }
        if let Some(spec) = &job_spec.sql {
            kinds.push((
                "sql",
                Sql::new(spec.query()).map(|j| Arc::new(j) as Arc<dyn Job>),
            ));
        }
        if let Some(spec) = &job_spec.select {
            kinds.push((
                "select",
                Select::from_spec(spec).map(|j| Arc::new(j) as Arc<dyn Job>),
            ));
        }
        if let Some(spec) = &job_spec.rust {
            kinds.push((
                "rust",
                self.registry
                    .create(&spec.class, &spec.config)
                    .map_err(|err| vec![err]),
            ));
        }
        match kinds.len() {
            0 => {
                self.report_job(
                    name,
                    "kind",
                    "no job kind given: add exactly one of count_distinct, top, group_by, sql, select, rust",
                );
                None
            }
            1 => {
                let (kind, built) = kinds.remove(0);
                match built {
                    Ok(job) => Some(job),
                    Err(messages) => {
                        for message in messages {
                            self.report_job_nested(name, kind, &message);
                        }
                        None
                    }
                }
            }
            _ => {
                let found: Vec<&str> = kinds.iter().map(|(kind, _)| *kind).collect();
                self.report_job(
                    name,
                    found[1],
                    format!("a job has exactly one kind, found {}", found.join(" and ")),
                );
                None
            }
        }
    }

    /// A message from a kind reads `field \`x\`: …`; point at that field inside the kind block.
    fn report_job_nested(&mut self, job: &str, kind: &str, message: &str) {
        let (field, detail) = split_field_message(message);
        // A kind whose whole block is one value (`sql: SELECT …`) names itself as the field.
        let field = field.filter(|f| *f != kind);
        let field_path = field
            .map(|f| format!("{kind}.{f}"))
            .unwrap_or_else(|| kind.to_owned());
        let first = field.map(|f| f.split('.').next().unwrap_or(f));
        let position = match first {
            Some(f) => locate(self.text, &["jobs", job, kind, f]),
            None => locate(self.text, &["jobs", job, kind]),
        };
        let diagnostic = Diagnostic::new(self.file, detail)
            .at(position)
            .job(job)
            .field(&field_path);
        self.problems.push(diagnostic);
    }

    fn report_kind_problem(&mut self, job: &str, job_spec: &JobSpec, message: &str) {
        let (field, detail) = split_field_message(message);
        match field {
            Some("from") => self.report_job(job, "from", detail),
            _ => {
                let kind = kind_name(job_spec);
                self.report_job_nested(job, kind, message);
            }
        }
    }
}

fn kind_name(job_spec: &JobSpec) -> &'static str {
    if job_spec.count_distinct.is_some() {
        "count_distinct"
    } else if job_spec.top.is_some() {
        "top"
    } else if job_spec.group_by.is_some() {
        "group_by"
    } else if job_spec.sql.is_some() {
        "sql"
    } else if job_spec.select.is_some() {
        "select"
    } else {
        "rust"
    }
}

/// Splits "field `x`: detail" into (Some("x"), "detail").
fn split_field_message(message: &str) -> (Option<&str>, &str) {
    message
        .strip_prefix("field `")
        .and_then(|rest| rest.split_once("`: "))
        .map_or((None, message), |(field, detail)| (Some(field), detail))
}

fn definition_fingerprint(
    name: &str,
    job: &JobSpec,
    inputs: &[InputRef],
    spec: &PipelineSpec,
    sources: &BTreeMap<String, Source>,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(ENGINE_VERSION.to_le_bytes());
    hasher.update(name.as_bytes());
    // serde_json renders struct fields in declaration order, so the same YAML always hashes
    // the same; descriptions are left out because they do not change the result.
    // Operational settings (retries, timeouts, schedule) change when a result is computed,
    // not what it is, so changing them must not make stored results stale.
    let mut job = job.clone();
    job.description = None;
    job.retries = None;
    job.timeout = None;
    job.retry_backoff = None;
    job.concurrency = None;
    job.schedule = None;
    hasher.update(serde_json::to_vec(&job).unwrap_or_default());
    for input in inputs {
        if let InputRef::Source(source) = input
            && let Some(source_spec) = spec.sources.get(source)
        {
            hasher.update(source_fingerprint_bytes(source_spec, sources.get(source)));
        }
    }
    hex::encode(hasher.finalize())
}

fn source_fingerprint_bytes(spec: &SourceSpec, source: Option<&Source>) -> Vec<u8> {
    let mut spec = spec.clone();
    spec.wait = None; // when to read, not what is read
    let mut bytes = serde_json::to_vec(&spec).unwrap_or_default();
    if let Some(source) = source {
        bytes.extend_from_slice(source.timezone.name().as_bytes());
    }
    bytes
}
