//! Validation: turns a parsed [`spec::PipelineSpec`] into a [`Pipeline`] whose invariants
//! (known inputs, no cycles, parsable SQL, valid grains, timezones and schedules) hold by
//! construction, collecting every problem with the place it was found rather than stopping at
//! the first; and the fingerprints of each job's definition that decide staleness.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use sha2::{Digest, Sha256};

use crate::job::builtin::{CountDistinct, GroupBy, Select, Sql, Top};
use crate::job::sketches::{ApproxCountDistinct, ApproxTop, Quantiles};
use crate::job::{Job, JobRegistry};
use crate::partition::{Grain, parse_instant, parse_timezone};

use super::*;

/// Most retries a job may ask for; more is almost always a typo and would hide failures.
const MAX_RETRIES: u32 = 100;

/// How long a scheduled partition waits for its source files when the source does not say.
pub(super) const DEFAULT_SOURCE_WAIT: Duration = Duration::from_secs(3600);

/// The first retry's wait when a job does not say.
pub(super) const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(30);

/// The longest duration a setting may give (delays, waits, timeouts, backoffs): a year and a
/// day. Longer is a typo, and instants that far out leave chrono's range.
const MAX_SETTING_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Why a duration field (a delay, wait, timeout or backoff) is refused.
#[derive(Debug, thiserror::Error)]
enum DurationFieldError {
    #[error("cannot parse `{text}` as a duration ({source}); use e.g. `90s`, `5m`, `1h`")]
    Unparsable {
        text: String,
        #[source]
        source: humantime::DurationError,
    },
    #[error("`{text}` is longer than the 366 days a setting may give")]
    TooLong { text: String },
}

/// Parses a duration field such as `90s`, `5m`, `1h`.
fn parse_duration_field(text: &str) -> Result<Duration, DurationFieldError> {
    let duration = humantime::parse_duration(text.trim()).map_err(|source| {
        DurationFieldError::Unparsable {
            text: text.to_owned(),
            source,
        }
    })?;
    if duration > MAX_SETTING_DURATION {
        return Err(DurationFieldError::TooLong {
            text: text.to_owned(),
        });
    }
    Ok(duration)
}

/// A job kind built from its YAML block, or the problems found in it.
type BuiltJob = Result<Arc<dyn Job>, Vec<String>>;

pub(super) struct Validator<'a> {
    pub(super) text: &'a str,
    pub(super) file: &'a Path,
    pub(super) registry: &'a JobRegistry,
    pub(super) problems: Vec<Diagnostic>,
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

    pub(super) fn validate(mut self, spec: PipelineSpec) -> Result<Pipeline, PipelineErrors> {
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
        if let Err(err) = check_name(&spec.name) {
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
                    self.report(&["schedule", "catchup"], err.to_string()).field =
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
                    Diagnostic::new(self.file, err.to_string())
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
                        Diagnostic::new(self.file, err.to_string())
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
            let path = PathTemplate::parse(&source.path)
                .map_err(|err| problem(self, "path", err.to_string()));
            if source.time_column.trim().is_empty() {
                problem(self, "time_column", "is empty".to_owned());
            }
            let timezone = parse_timezone(source.timezone.as_deref().unwrap_or("UTC"))
                .map_err(|err| problem(self, "timezone", err.to_string()));
            let wait = match source.wait.as_deref() {
                None => Ok(DEFAULT_SOURCE_WAIT),
                Some(text) => {
                    parse_duration_field(text).map_err(|err| problem(self, "wait", err.to_string()))
                }
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
            let checks = self.checks(name, job_spec, &inputs);
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
                        definition_text: definition_text(job_spec),
                        run_definition: serde_yaml::to_string(&what_defines_the_result(job_spec))
                            .unwrap_or_default(),
                        definition_fingerprint,
                        // Filled in once the job graph is known.
                        lineage_fingerprint: String::new(),
                        checks,
                    },
                ));
            }
        }
        jobs
    }

    /// The job's `checks:`, each problem at its entry.
    fn checks(
        &mut self,
        name: &str,
        job_spec: &JobSpec,
        inputs: &[InputRef],
    ) -> Vec<super::checks::Check> {
        let Some(specs) = &job_spec.checks else {
            return Vec::new();
        };
        if specs.len() > super::checks::MAX_CHECKS {
            self.report_job(
                name,
                "checks",
                format!(
                    "{} checks, at most {}",
                    specs.len(),
                    super::checks::MAX_CHECKS
                ),
            );
            return Vec::new();
        }
        let sources: Vec<String> = inputs
            .iter()
            .filter_map(|input| match input {
                InputRef::Source(source) => Some(source.clone()),
                InputRef::Job(_) => None,
            })
            .collect();
        let mut checks = Vec::new();
        let mut names = BTreeSet::new();
        for (index, spec) in specs.iter().enumerate() {
            match super::checks::parse_check(spec, &sources) {
                Ok(check) => {
                    if !names.insert(check.name.clone()) {
                        self.report_check(
                            name,
                            index,
                            "name",
                            format!("two checks are named `{}`; give one a `name`", check.name),
                        );
                    }
                    checks.push(check);
                }
                Err(problems) => {
                    for (field, message) in problems {
                        self.report_check(name, index, &field, message);
                    }
                }
            }
        }
        checks
    }

    /// A problem of entry `index` of job `name`'s `checks:`, at its line.
    fn report_check(&mut self, name: &str, index: usize, field: &str, message: String) {
        let place = super::locate::locate_item(self.text, &["jobs", name, "checks"], index);
        let diagnostic = Diagnostic::new(
            self.file,
            format!("job `{name}`, check {}: `{field}`: {message}", index + 1),
        )
        .at(place);
        self.problems.push(diagnostic);
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
        let mut kinds = kinds_of(job_spec, self.registry);
        match kinds.len() {
            0 => {
                self.report_job(
                    name,
                    "kind",
                    "no job kind given: add exactly one of count_distinct, top, group_by, sql, select, rust, approx_count_distinct, approx_top, quantiles",
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

/// Each kind block a job gives, built (a valid job gives exactly one).
fn kinds_of(job_spec: &JobSpec, registry: &JobRegistry) -> Vec<(&'static str, BuiltJob)> {
    let mut kinds: Vec<(&'static str, BuiltJob)> = Vec::new();
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
            registry
                .create(&spec.class, &spec.config)
                .map_err(|err| vec![err]),
        ));
    }
    if let Some(spec) = &job_spec.approx_count_distinct {
        kinds.push((
            "approx_count_distinct",
            ApproxCountDistinct::from_spec(spec).map(|j| Arc::new(j) as Arc<dyn Job>),
        ));
    }
    if let Some(spec) = &job_spec.approx_top {
        kinds.push((
            "approx_top",
            ApproxTop::from_spec(spec).map(|j| Arc::new(j) as Arc<dyn Job>),
        ));
    }
    if let Some(spec) = &job_spec.quantiles {
        kinds.push((
            "quantiles",
            Quantiles::from_spec(spec).map(|j| Arc::new(j) as Arc<dyn Job>),
        ));
    }
    kinds
}

/// The job a definition ([`JobDef::run_definition`]) describes, built again with
/// `registry` (the kind of a job that runs in a worker process).
pub fn job_of_definition(text: &str, registry: &JobRegistry) -> Result<Arc<dyn Job>, String> {
    let unreadable = |e: serde_yaml::Error| format!("a job definition Floe cannot read: {e}");
    let mut value: serde_yaml::Value = serde_yaml::from_str(text).map_err(unreadable)?;
    // `group_by.aggregations` is written as a list of `[name, definition]` pairs (its
    // serialised form is part of the definition fingerprint, so it stays), and read back as
    // the mapping the file format has.
    if let Some(aggregations) = value
        .get_mut("group_by")
        .and_then(|group_by| group_by.get_mut("aggregations"))
        && let serde_yaml::Value::Sequence(pairs) = aggregations
    {
        let mut mapping = serde_yaml::Mapping::new();
        for pair in pairs.iter() {
            match pair.as_sequence().map(Vec::as_slice) {
                Some([name, definition]) => {
                    mapping.insert(name.clone(), definition.clone());
                }
                _ => return Err("a job definition's aggregations are not pairs".to_owned()),
            }
        }
        *aggregations = serde_yaml::Value::Mapping(mapping);
    }
    let spec: JobSpec = serde_yaml::from_value(value).map_err(unreadable)?;
    let mut kinds = kinds_of(&spec, registry);
    if kinds.len() != 1 {
        return Err(format!(
            "a job definition has exactly one kind, found {}",
            kinds.len()
        ));
    }
    let (kind, built) = kinds.remove(0);
    built.map_err(|problems| format!("{kind}: {}", problems.join("; ")))
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
    } else if job_spec.approx_count_distinct.is_some() {
        "approx_count_distinct"
    } else if job_spec.approx_top.is_some() {
        "approx_top"
    } else if job_spec.quantiles.is_some() {
        "quantiles"
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
    // the same.
    hasher.update(serde_json::to_vec(&what_defines_the_result(job)).unwrap_or_default());
    for input in inputs {
        if let InputRef::Source(source) = input
            && let Some(source_spec) = spec.sources.get(source)
        {
            hasher.update(source_fingerprint_bytes(source_spec, sources.get(source)));
        }
    }
    hex::encode(hasher.finalize())
}

/// The part of a job's block that decides its result. Descriptions do not change it;
/// operational settings (retries, timeouts, schedule) change when a result is computed, not
/// what it is; checks judge a result without changing it: changing them must not make stored
/// results stale.
fn what_defines_the_result(job: &JobSpec) -> JobSpec {
    let mut job = job.clone();
    job.description = None;
    job.retries = None;
    job.timeout = None;
    job.retry_backoff = None;
    job.concurrency = None;
    job.schedule = None;
    job.checks = None;
    job
}

/// The job's block as `floe plan` shows it when it changes: what defines the result, as YAML
/// without the fields left unset.
fn definition_text(job: &JobSpec) -> String {
    fn without_nulls(value: serde_yaml::Value) -> serde_yaml::Value {
        match value {
            serde_yaml::Value::Mapping(map) => serde_yaml::Value::Mapping(
                map.into_iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k, without_nulls(v)))
                    .collect(),
            ),
            serde_yaml::Value::Sequence(items) => {
                serde_yaml::Value::Sequence(items.into_iter().map(without_nulls).collect())
            }
            other => other,
        }
    }
    serde_yaml::to_value(what_defines_the_result(job))
        .map(without_nulls)
        .and_then(|value| serde_yaml::to_string(&value))
        .unwrap_or_default()
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
