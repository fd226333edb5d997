//! Turns `POST /jobs`' `appName`, `classPath` and config into a checked plan, before the job
//! is accepted: every mistake is a 400 "VALIDATION FAILED" listing all problems, or a 404 for
//! an unknown app or class, never a job that fails later for a reason known up front.
//!
//! `classPath` is a job of the app's pipeline (materialise a partition or a range) or a
//! built-in class (`sql`, `count_distinct`, `top`, `group_by`, `select`) over named objects,
//! source windows, materialised results or data files uploaded to `/data`, with the same
//! parameters as in pipeline YAML.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};

use super::context::{SettingError, parse_job_timeout};
use crate::catalog::{App, Catalog};
use crate::engine::FileFormat;
use crate::job::Job;
use crate::job::builtin::{CountDistinct, GroupBy, Select, Sql, Top};
use crate::job::sketches::{ApproxCountDistinct, ApproxTop, Quantiles};
use crate::partition::{Window, parse_instant, window_containing};
use crate::pipeline::spec::{
    ApproxCountDistinctSpec, ApproxTopSpec, CountDistinctSpec, GroupBySpec, QuantilesSpec,
    SelectSpec, TopSpec,
};

/// What a job will do.
#[derive(Debug, Clone)]
pub enum JobPlan {
    Pipeline(PipelinePlan),
    Builtin(BuiltinPlan),
}

/// Materialise jobs of an app's pipeline over a range.
#[derive(Debug, Clone)]
pub struct PipelinePlan {
    pub app: Arc<App>,
    /// Jobs to bring up to date (with their upstream); `None` is every job.
    pub jobs: Option<Vec<String>>,
    /// The job whose rows are the result; `None` makes the result the list of runs.
    pub target: Option<String>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub force: bool,
}

/// A built-in class run once over its inputs.
#[derive(Debug, Clone)]
pub struct BuiltinPlan {
    pub class: &'static str,
    pub job: Arc<dyn Job>,
    /// The class's parameters `job` was built from (a worker process builds it again).
    pub params: Map<String, Value>,
    /// Input name (the SQL table name) → where its rows come from.
    pub inputs: Vec<(String, InputSpec)>,
    /// Keep the result as a named object of the context.
    pub publish: Option<String>,
}

/// Where a built-in job's input comes from.
#[derive(Debug, Clone)]
pub enum InputSpec {
    /// A named object that must exist in the context, whole or cut to a time window.
    Object {
        name: String,
        window: Option<ObjectWindow>,
    },
    /// A scan of a source or of materialised results, optionally kept as a named object
    /// (built once, then reused).
    Scan {
        app: Arc<App>,
        what: ScanTarget,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        cache_as: Option<String>,
    },
    /// A data file uploaded to `/data`, read whole: `file` as the client gave it (its name or
    /// its absolute path), resolved inside the data-files directory when the job is submitted
    /// and again when it runs.
    Data { file: String, format: FileFormat },
}

/// The rows of a named object whose time column lies in `from` ≤ t < `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectWindow {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// `None`: the object's only datetime column.
    pub time_column: Option<String>,
    /// How local times in the config and a naive time column's values are read.
    pub timezone: Tz,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanTarget {
    Source(String),
    Results(String),
}

/// Why a request cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// 404: the app or class does not exist.
    NotFound(String),
    /// 400: the config is wrong; every problem found.
    Invalid(Vec<String>),
}

/// The class used by `POST /pipelines/{p}/runs`.
pub const PIPELINE_RUN_CLASS: &str = "floe.PipelineRun";

/// Config keys every job may carry besides its class's parameters.
const COMMON_KEYS: &[&str] = &["job-timeout", "spark", "context-settings"];

/// The built-in classes, for messages.
const BUILTIN_CLASSES: &str =
    "sql, count_distinct, top, group_by, select, approx_count_distinct, approx_top, quantiles";

/// A built-in class name in canonical form, from any of its spellings
/// (`CountDistinct`, `count_distinct`, `floe.CountDistinct`).
pub fn builtin_class(class_path: &str) -> Option<&'static str> {
    let bare = class_path
        .strip_prefix("floe.")
        .unwrap_or(class_path)
        .replace(['_', '-'], "")
        .to_ascii_lowercase();
    Some(match bare.as_str() {
        "sql" => "sql",
        "countdistinct" => "count_distinct",
        "top" => "top",
        "groupby" => "group_by",
        "select" => "select",
        "approxcountdistinct" => "approx_count_distinct",
        "approxtop" => "approx_top",
        "quantiles" => "quantiles",
        "pipelinerun" => PIPELINE_RUN_CLASS,
        _ => return None,
    })
}

/// The context settings a job's config carries, as spark-jobserver clients send them for the
/// context a job creates: `spark.context-settings { … }` (or `context-settings { … }`).
/// Empty when there are none; a block that is not an object, or both spellings, is refused.
pub fn context_settings(config: &Map<String, Value>) -> Result<Map<String, Value>, Vec<String>> {
    let nested = config
        .get("spark")
        .and_then(|spark| spark.get("context-settings"));
    let top = config.get("context-settings");
    match (nested, top) {
        (Some(_), Some(_)) => Err(vec![
            "give either `spark.context-settings` or `context-settings`, not both".to_owned(),
        ]),
        (None, None) => Ok(Map::new()),
        (Some(Value::Object(block)), None) | (None, Some(Value::Object(block))) => {
            Ok(block.clone())
        }
        (Some(other), None) => Err(vec![format!(
            "`spark.context-settings`: expected an object of settings, found {other}"
        )]),
        (None, Some(other)) => Err(vec![format!(
            "`context-settings`: expected an object of settings, found {other}"
        )]),
    }
}

/// The execution timeout a config asks for, if any (at most a week).
pub fn job_timeout(config: &Map<String, Value>) -> Result<Option<Duration>, SettingError> {
    match config.get("job-timeout") {
        None => Ok(None),
        Some(Value::Number(n)) => parse_job_timeout(&n.to_string())
            .map(Some)
            .map_err(SettingError::JobTimeout),
        Some(Value::String(s)) => parse_job_timeout(s)
            .map(Some)
            .map_err(SettingError::JobTimeout),
        Some(other) => Err(SettingError::JobTimeoutNotADuration(other.to_string())),
    }
}

/// The execution timeout a job runs under: its context's, which its own `job-timeout` may
/// shorten but not lengthen (the context's is the admin's bound); its own when the context
/// sets none.
pub fn effective_job_timeout(context: Option<Duration>, job: Option<Duration>) -> Option<Duration> {
    match (context, job) {
        (Some(context), Some(job)) => Some(context.min(job)),
        (context, job) => context.or(job),
    }
}

/// What separates a pipeline from a job in the name of a results table of `/query`
/// (`shop__sales_per_category_daily`); the `/query` handler splits table names on it
/// (`TABLE_SEPARATOR` in `server/floe.rs`). Named objects may not contain it, so a table
/// name with it always means results and an object can never shadow them.
pub const RESULTS_TABLE_SEPARATOR: &str = "__";

/// Refuses a named object's name that holds [`RESULTS_TABLE_SEPARATOR`]; `field` is the
/// config key that gave it.
fn check_object_name(field: &str, name: &str, errors: &mut Vec<String>) {
    if name.contains(RESULTS_TABLE_SEPARATOR) {
        errors.push(format!(
            "`{field}`: named object `{name}` contains `{RESULTS_TABLE_SEPARATOR}`, which is \
             reserved for pipeline results (`<pipeline>{RESULTS_TABLE_SEPARATOR}<job>` in \
             /query); choose a name without it"
        ));
    }
}

/// Plans a job. `app` is the request's `appName`, if any.
pub fn plan(
    catalog: &Catalog,
    app: Option<&str>,
    class_path: &str,
    config: &Map<String, Value>,
) -> Result<JobPlan, PlanError> {
    let app = match app {
        Some(name) => Some(
            catalog
                .get(name)
                .ok_or_else(|| PlanError::NotFound(format!("appName {name} not found")))?,
        ),
        None => None,
    };
    if let Some(app) = &app
        && app.pipeline.job(class_path).is_some()
    {
        return plan_pipeline_job(app.clone(), class_path, config).map(JobPlan::Pipeline);
    }
    match builtin_class(class_path) {
        Some(PIPELINE_RUN_CLASS) => {
            let app = app.ok_or_else(|| {
                PlanError::Invalid(vec![format!(
                    "classPath {PIPELINE_RUN_CLASS} needs an appName: the pipeline to run"
                )])
            })?;
            plan_pipeline_run(app, config).map(JobPlan::Pipeline)
        }
        Some(class) => plan_builtin(catalog, app.as_ref(), class, config).map(JobPlan::Builtin),
        None => {
            let hint = match &app {
                Some(app) => format!(
                    " (jobs of {}: {}; built-in classes: {BUILTIN_CLASSES})",
                    app.name(),
                    app.pipeline.dag.topological_order().join(", ")
                ),
                None => {
                    let owners: Vec<String> = catalog
                        .all()
                        .iter()
                        .filter(|a| a.pipeline.job(class_path).is_some())
                        .map(|a| a.name().to_owned())
                        .collect();
                    if owners.is_empty() {
                        format!(" (built-in classes: {BUILTIN_CLASSES})")
                    } else {
                        format!(" (a job of app {}: give appName)", owners.join(", "))
                    }
                }
            };
            Err(PlanError::NotFound(format!(
                "classPath {class_path} not found{hint}"
            )))
        }
    }
}

fn reject_unknown_keys(config: &Map<String, Value>, known: &[&str], errors: &mut Vec<String>) {
    for key in config.keys() {
        if !known.contains(&key.as_str()) && !COMMON_KEYS.contains(&key.as_str()) {
            errors.push(format!(
                "unknown config key `{key}` (expected: {})",
                known
                    .iter()
                    .chain(COMMON_KEYS)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
}

fn string_field<'a>(
    config: &'a Map<String, Value>,
    key: &str,
    errors: &mut Vec<String>,
) -> Option<&'a str> {
    match config.get(key) {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            errors.push(format!("`{key}`: expected a string, found {other}"));
            None
        }
    }
}

fn instant_field(
    config: &Map<String, Value>,
    key: &str,
    timezone: Tz,
    errors: &mut Vec<String>,
) -> Option<DateTime<Utc>> {
    let text = string_field(config, key, errors)?;
    match parse_instant(text, timezone) {
        Ok(instant) => Some(instant),
        Err(e) => {
            errors.push(format!("`{key}`: {e}"));
            None
        }
    }
}

fn bool_field(config: &Map<String, Value>, key: &str, errors: &mut Vec<String>) -> bool {
    match config.get(key) {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s == "true" || s == "false" => s == "true",
        Some(other) => {
            errors.push(format!("`{key}`: expected true or false, found {other}"));
            false
        }
    }
}

/// `partition` (the window of `grain` containing it) or `from` + `to`.
/// Local times are read in `timezone`.
fn range(
    config: &Map<String, Value>,
    timezone: Tz,
    partition_grain: Option<crate::partition::Grain>,
    errors: &mut Vec<String>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let partition = instant_field(config, "partition", timezone, errors);
    let from = instant_field(config, "from", timezone, errors);
    let to = instant_field(config, "to", timezone, errors);
    let has_range = config.contains_key("from") || config.contains_key("to");
    if config.contains_key("partition") {
        if has_range {
            errors.push("give either `partition` or `from` and `to`, not both".to_owned());
            return None;
        }
        let Some(grain) = partition_grain else {
            errors.push("`partition` needs a job with a grain; give `from` and `to`".to_owned());
            return None;
        };
        let window = window_containing(grain, timezone, partition?);
        return Some((window.start, window.end));
    }
    match (from, to) {
        (Some(from), Some(to)) if from < to => Some((from, to)),
        (Some(from), Some(to)) => {
            errors.push(format!(
                "`from` ({}) must be before `to` ({})",
                from.to_rfc3339(),
                to.to_rfc3339()
            ));
            None
        }
        _ if has_range => {
            if !config.contains_key("from") {
                errors.push("`from` is missing (the range is `from` ≤ t < `to`)".to_owned());
            }
            if !config.contains_key("to") {
                errors.push("`to` is missing (the range is `from` ≤ t < `to`)".to_owned());
            }
            None
        }
        _ => {
            errors.push(
                "the config must name a `partition` (e.g. partition = \"2024-01-02\") or a range \
                 (`from` and `to`)"
                    .to_owned(),
            );
            None
        }
    }
}

fn finish<T>(value: Option<T>, errors: Vec<String>) -> Result<T, PlanError> {
    match value {
        Some(value) if errors.is_empty() => Ok(value),
        _ => Err(PlanError::Invalid(if errors.is_empty() {
            vec!["invalid config".to_owned()]
        } else {
            errors
        })),
    }
}

fn plan_pipeline_job(
    app: Arc<App>,
    job: &str,
    config: &Map<String, Value>,
) -> Result<PipelinePlan, PlanError> {
    let mut errors = Vec::new();
    reject_unknown_keys(config, &["partition", "from", "to", "force"], &mut errors);
    let grain = app.pipeline.job(job).map(|def| def.grain);
    let range = range(config, app.pipeline.timezone, grain, &mut errors);
    let force = bool_field(config, "force", &mut errors);
    let plan = range.map(|(from, to)| PipelinePlan {
        app: app.clone(),
        jobs: Some(vec![job.to_owned()]),
        target: Some(job.to_owned()),
        from,
        to,
        force,
    });
    finish(plan, errors)
}

/// `POST /pipelines/{p}/runs` and `classPath=floe.PipelineRun`: `jobs` (optional), a range.
pub fn plan_pipeline_run(
    app: Arc<App>,
    config: &Map<String, Value>,
) -> Result<PipelinePlan, PlanError> {
    let mut errors = Vec::new();
    reject_unknown_keys(
        config,
        &["jobs", "partition", "from", "to", "force"],
        &mut errors,
    );
    let jobs = match config.get("jobs") {
        None => None,
        Some(Value::Array(items)) => {
            let mut jobs = Vec::new();
            for item in items {
                match item.as_str() {
                    Some(job) if app.pipeline.job(job).is_some() => jobs.push(job.to_owned()),
                    Some(job) => errors.push(format!(
                        "`jobs`: pipeline {} has no job `{job}` (jobs: {})",
                        app.name(),
                        app.pipeline.dag.topological_order().join(", ")
                    )),
                    None => errors.push(format!("`jobs`: expected job names, found {item}")),
                }
            }
            Some(jobs)
        }
        Some(Value::String(job)) => Some(vec![job.clone()]),
        Some(other) => {
            errors.push(format!(
                "`jobs`: expected a list of job names, found {other}"
            ));
            None
        }
    };
    // `partition` of a whole-pipeline run means the day containing it, unless one job is named.
    let grain = match jobs.as_deref() {
        Some([job]) => app.pipeline.job(job).map(|def| def.grain),
        _ => Some(crate::partition::Grain::Daily),
    };
    let range = range(config, app.pipeline.timezone, grain, &mut errors);
    let force = bool_field(config, "force", &mut errors);
    let plan = range.map(|(from, to)| PipelinePlan {
        app: app.clone(),
        jobs,
        target: None,
        from,
        to,
        force,
    });
    finish(plan, errors)
}

const INPUT_KEYS: &[&str] = &["input", "inputs", "publish"];

fn plan_builtin(
    catalog: &Catalog,
    app: Option<&Arc<App>>,
    class: &'static str,
    config: &Map<String, Value>,
) -> Result<BuiltinPlan, PlanError> {
    let mut errors = Vec::new();
    let mut inputs = Vec::new();
    match (config.get("input"), config.get("inputs")) {
        (Some(_), Some(_)) => errors.push("give either `input` or `inputs`, not both".to_owned()),
        (Some(input), None) => {
            if let Some(spec) = input_spec(catalog, app, "input", input, &mut errors) {
                inputs.push((default_input_name(&spec), spec));
            }
        }
        (None, Some(Value::Object(named))) => {
            for (name, input) in named {
                if let Err(e) = crate::pipeline::check_identifier(name) {
                    errors.push(format!("`inputs.{name}`: {e}"));
                }
                if let Some(spec) =
                    input_spec(catalog, app, &format!("inputs.{name}"), input, &mut errors)
                {
                    inputs.push((name.clone(), spec));
                }
            }
        }
        (None, Some(other)) => errors.push(format!(
            "`inputs`: expected an object of table name → input, found {other}"
        )),
        (None, None) => {}
    }
    let publish = string_field(config, "publish", &mut errors).map(str::to_owned);
    if let Some(name) = &publish {
        if let Err(e) = crate::pipeline::check_identifier(name) {
            errors.push(format!("`publish`: {e}"));
        }
        check_object_name("publish", name, &mut errors);
    }

    let params: Map<String, Value> = config
        .iter()
        .filter(|(key, _)| {
            !INPUT_KEYS.contains(&key.as_str()) && !COMMON_KEYS.contains(&key.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let job = build_builtin(class, params.clone()).map_err(|e| {
        errors.extend(e.into_iter().map(|e| format!("class `{class}`: {e}")));
    });
    if let Ok(job) = &job {
        let names: Vec<String> = inputs.iter().map(|(name, _)| name.clone()).collect();
        if class != "sql" && names.is_empty() {
            errors.push(format!(
                "class `{class}` reads one input: give `input` (a named object, or a source or \
                 results block)"
            ));
        } else if let Err(problems) = job.validate(&names) {
            errors.extend(
                problems
                    .into_iter()
                    .map(|e| format!("class `{class}`: {e}")),
            );
        }
    }
    let plan = job.ok().map(|job| BuiltinPlan {
        class,
        job,
        params,
        inputs,
        publish,
    });
    finish(plan, errors)
}

pub(super) fn build_builtin(
    class: &str,
    params: Map<String, Value>,
) -> Result<Arc<dyn Job>, Vec<String>> {
    fn spec<T: serde::de::DeserializeOwned>(params: Map<String, Value>) -> Result<T, Vec<String>> {
        serde_json::from_value(Value::Object(params)).map_err(|e| vec![e.to_string()])
    }
    Ok(match class {
        // Nothing rolls up from an ad-hoc job (named objects hold frames, not partial
        // states), so it counts without materialising the distinct key set.
        "count_distinct" => {
            Arc::new(CountDistinct::from_spec(&spec::<CountDistinctSpec>(params)?)?.count_only())
        }
        "top" => Arc::new(Top::from_spec(&spec::<TopSpec>(params)?)?),
        "group_by" => Arc::new(GroupBy::from_spec(&spec::<GroupBySpec>(params)?)?),
        "select" => Arc::new(Select::from_spec(&spec::<SelectSpec>(params)?)?),
        // The sketch's state is made and dropped: only its estimate is answered.
        "approx_count_distinct" => Arc::new(ApproxCountDistinct::from_spec(&spec::<
            ApproxCountDistinctSpec,
        >(params)?)?),
        "approx_top" => Arc::new(ApproxTop::from_spec(&spec::<ApproxTopSpec>(params)?)?),
        "quantiles" => Arc::new(Quantiles::from_spec(&spec::<QuantilesSpec>(params)?)?),
        "sql" => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct SqlParams {
                query: String,
            }
            // The config key, not the pipeline field, is what the problems name.
            Arc::new(Sql::written_in("query", &spec::<SqlParams>(params)?.query)?)
        }
        other => return Err(vec![format!("unknown built-in class `{other}`")]),
    })
}

fn default_input_name(spec: &InputSpec) -> String {
    match spec {
        InputSpec::Object { name, .. } => name.clone(),
        InputSpec::Scan {
            cache_as: Some(name),
            ..
        } => name.clone(),
        InputSpec::Scan {
            what: ScanTarget::Source(name) | ScanTarget::Results(name),
            ..
        } => name.clone(),
        // The prefix it was uploaded under (`sales` of `sales-20240201T000000.000Z.dat`).
        InputSpec::Data { file, .. } => crate::data_files::referenced_name(file)
            .ok()
            .and_then(crate::data_files::managed_prefix)
            .unwrap_or("data")
            .to_owned(),
    }
}

/// A `{ data = "<file>", format = csv }` block: a data file of `/data`, read whole. Its name's
/// shape is checked here; where it leads, when the job is submitted.
fn data_input(
    field: &str,
    block: &Map<String, Value>,
    errors: &mut Vec<String>,
) -> Option<InputSpec> {
    let mut problems = Vec::new();
    for key in block.keys() {
        if !["data", "format"].contains(&key.as_str()) {
            problems.push(format!(
                "`{field}.{key}`: a data block takes only `data` (a file GET /data lists) and \
                 `format` ({})",
                FileFormat::NAMES
            ));
        }
    }
    let file = string_field(block, "data", &mut problems);
    if let Some(file) = file
        && let Err(problem) = crate::data_files::referenced_name(file)
    {
        problems.push(format!("`{field}.data`: {problem}"));
    }
    let format = match string_field(block, "format", &mut problems) {
        None if !block.contains_key("format") => {
            problems.push(format!(
                "`{field}.format`: give the data file's format: {}",
                FileFormat::NAMES
            ));
            None
        }
        None => None,
        Some(name) => {
            let format = FileFormat::from_name(name);
            if format.is_none() {
                problems.push(format!(
                    "`{field}.format`: `{}` is not a format Floe reads ({})",
                    name.chars().take(64).collect::<String>(),
                    FileFormat::NAMES
                ));
            }
            format
        }
    };
    let found = problems.is_empty();
    errors.extend(problems);
    match (file, format) {
        (Some(file), Some(format)) if found => Some(InputSpec::Data {
            file: file.to_owned(),
            format,
        }),
        _ => None,
    }
}

fn input_spec(
    catalog: &Catalog,
    request_app: Option<&Arc<App>>,
    field: &str,
    value: &Value,
    errors: &mut Vec<String>,
) -> Option<InputSpec> {
    let block = match value {
        Value::String(name) => {
            let mut problems = Vec::new();
            check_object_name(field, name, &mut problems);
            if !problems.is_empty() {
                errors.extend(problems);
                return None;
            }
            return Some(InputSpec::Object {
                name: name.clone(),
                window: None,
            });
        }
        Value::Object(block) if block.contains_key("data") => {
            return data_input(field, block, errors);
        }
        Value::Object(block) => block,
        other => {
            errors.push(format!(
                "`{field}`: expected a named object's name or a block \
                 {{ source | results | object, app, from, to }} or {{ data, format }}, found \
                 {other}"
            ));
            return None;
        }
    };
    let mut problems = Vec::new();
    for key in block.keys() {
        if ![
            "object",
            "source",
            "results",
            "app",
            "from",
            "to",
            "partition",
            "time_column",
        ]
        .contains(&key.as_str())
        {
            problems.push(format!(
                "`{field}.{key}`: unknown key (expected object, source, results, app, from, to, \
                 partition, time_column; or data and format for a data file)"
            ));
        }
    }
    let object = string_field(block, "object", &mut problems).map(str::to_owned);
    if let Some(name) = &object {
        check_object_name(&format!("{field}.object"), name, &mut problems);
    }
    let source = string_field(block, "source", &mut problems).map(str::to_owned);
    let results = string_field(block, "results", &mut problems).map(str::to_owned);
    let what = match (source, results) {
        (Some(_), Some(_)) => {
            problems.push(format!("`{field}`: give `source` or `results`, not both"));
            None
        }
        (Some(source), None) => Some(ScanTarget::Source(source)),
        (None, Some(job)) => Some(ScanTarget::Results(job)),
        (None, None) => {
            if object.is_none() {
                problems.push(format!(
                    "`{field}`: name an `object`, a `source` or `results`"
                ));
            }
            None
        }
    };
    let time_column = string_field(block, "time_column", &mut problems).map(str::to_owned);
    let Some(what) = what else {
        let window = object_window(
            catalog,
            request_app,
            field,
            block,
            time_column,
            &mut problems,
        );
        errors.extend(problems);
        return match object {
            Some(name) if errors.is_empty() => Some(InputSpec::Object { name, window }),
            _ => None,
        };
    };
    if time_column.is_some() {
        problems.push(format!(
            "`{field}.time_column`: only a window on a named object takes a time column; a \
             source or results block is cut by its own time column"
        ));
    }
    let app = match block_app(catalog, request_app, field, block, &mut problems) {
        Ok(Some(app)) => Some(app),
        Ok(None) => {
            problems.push(format!(
                "`{field}`: name the `app` whose source or results to read (or give appName)"
            ));
            None
        }
        Err(()) => None,
    };
    let Some(app) = app else {
        errors.extend(problems);
        return None;
    };
    let grain = match &what {
        ScanTarget::Source(name) => {
            if !app.pipeline.sources.contains_key(name) {
                problems.push(format!(
                    "`{field}.source`: app {} has no source `{name}` (sources: {})",
                    app.name(),
                    app.pipeline
                        .sources
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            None
        }
        ScanTarget::Results(job) => match app.pipeline.job(job) {
            Some(def) => Some(def.grain),
            None => {
                problems.push(format!(
                    "`{field}.results`: app {} has no job `{job}` (jobs: {})",
                    app.name(),
                    app.pipeline.dag.topological_order().join(", ")
                ));
                None
            }
        },
    };
    let mut range_problems = Vec::new();
    let range = range(block, app.pipeline.timezone, grain, &mut range_problems);
    problems.extend(
        range_problems
            .into_iter()
            .map(|p| format!("`{field}`: {p}")),
    );
    errors.extend(problems);
    let (from, to) = range?;
    Some(InputSpec::Scan {
        app,
        what,
        from,
        to,
        cache_as: object,
    })
}

/// The app an input block names with `app`, else the request's `appName`, if any. `Err` when
/// the named app does not exist; `problems` then says so.
fn block_app(
    catalog: &Catalog,
    request_app: Option<&Arc<App>>,
    field: &str,
    block: &Map<String, Value>,
    problems: &mut Vec<String>,
) -> Result<Option<Arc<App>>, ()> {
    match string_field(block, "app", problems) {
        Some(name) => match catalog.get(name) {
            Some(app) => Ok(Some(app)),
            None => {
                problems.push(format!("`{field}.app`: appName {name} not found"));
                Err(())
            }
        },
        None => Ok(request_app.cloned()),
    }
}

/// The window of an `{ object, from, to }` block, if it has one. A wrong window adds to
/// `problems`.
fn object_window(
    catalog: &Catalog,
    request_app: Option<&Arc<App>>,
    field: &str,
    block: &Map<String, Value>,
    time_column: Option<String>,
    problems: &mut Vec<String>,
) -> Option<ObjectWindow> {
    let windowed = ["from", "to", "partition"]
        .iter()
        .any(|key| block.contains_key(*key));
    // Local times are read in the timezone of the app the block or the request names.
    let timezone = match block_app(catalog, request_app, field, block, problems) {
        Ok(app) => app.map_or(Tz::UTC, |app| app.pipeline.timezone),
        Err(()) => return None,
    };
    if !windowed {
        if time_column.is_some() {
            problems.push(format!(
                "`{field}.time_column`: give the window too (`from` and `to`)"
            ));
        }
        return None;
    }
    let mut range_problems = Vec::new();
    let range = range(block, timezone, None, &mut range_problems);
    problems.extend(
        range_problems
            .into_iter()
            .map(|p| format!("`{field}`: {p}")),
    );
    let (from, to) = range?;
    Some(ObjectWindow {
        from,
        to,
        time_column,
        timezone,
    })
}

/// The window a built-in job's context reports: the span of its scanned inputs.
pub fn input_span(inputs: &[(String, InputSpec)]) -> Window {
    let windows = inputs.iter().filter_map(|(_, input)| match input {
        InputSpec::Scan { from, to, .. }
        | InputSpec::Object {
            window: Some(ObjectWindow { from, to, .. }),
            ..
        } => Some((*from, *to)),
        InputSpec::Object { window: None, .. } | InputSpec::Data { .. } => None,
    });
    windows
        .reduce(|(from, to), (next_from, next_to)| (from.min(next_from), to.max(next_to)))
        .map_or(
            Window {
                start: DateTime::UNIX_EPOCH,
                end: DateTime::UNIX_EPOCH,
            },
            |(start, end)| Window { start, end },
        )
}

#[cfg(test)]
mod tests;
