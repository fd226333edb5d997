//! Pipelines: YAML files parsed, validated and turned into a [`Pipeline`] that cannot be
//! invalid: every input exists, grains nest, the job graph has no cycle, every SQL fragment
//! parses, every path template is well formed.
//!
//! Loading collects every problem it can find rather than stopping at the first, and each
//! [`Diagnostic`] names the file, the line and column where it can be located, the job and the
//! field. Nothing here touches data or the store.

pub mod checks;
pub mod dag;
pub mod data_roots;
pub mod diagnostic;
pub mod locate;
pub mod spec;
pub mod template;
pub mod trigger;
mod validate;
pub use validate::job_of_definition;
pub mod yaml_guard;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

pub use dag::JobDag;
use data_roots::DataRoots;
pub use diagnostic::{Diagnostic, PipelineErrors};
use locate::locate;
use spec::{
    JobScheduleSpec, JobSpec, PipelineScheduleSpec, PipelineSpec, SPEC_VERSION, SourceFormat,
    SourceSpec,
};
pub use template::PathTemplate;
use validate::Validator;

use self::trigger::{CatchUp, CronSchedule, PipelineSchedule, Trigger};
use crate::job::{Job, JobRegistry};
use crate::partition::Grain;

/// Bumped when a built-in kind changes what it computes, so stored results made by an older
/// engine are recomputed instead of trusted.
pub const ENGINE_VERSION: u32 = 1;

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
    /// What [`JobDef::definition_fingerprint`] hashes of the job's own block, as YAML (null
    /// fields included): kept with results so a later plan can show how a definition changed.
    pub definition_text: String,
    /// What defines the result, as YAML with every field (nulls kept, unlike
    /// [`JobDef::definition_text`], so a `rust:` job's config comes back as written): what a
    /// worker process builds the job again from ([`job_of_definition`]).
    pub run_definition: String,
    /// Hash of this job's definition and, transitively, of every upstream job's: what a
    /// stored result is stamped with, so the read side can tell a result of this definition
    /// (with these upstream definitions) from one an earlier or replaced version made.
    pub lineage_fingerprint: String,
    /// Data checks evaluated on every partition's result before it is committed.
    pub checks: Vec<checks::Check>,
}

impl JobDef {
    pub fn kind(&self) -> &str {
        self.job.kind()
    }
}

/// Whether a file of a pipelines folder holds a pipeline: `*.yaml` or `*.yml`, except the test
/// files beside the pipelines ([`is_test_file`]).
pub fn is_pipeline_file(path: &Path) -> bool {
    path.extension()
        .is_some_and(|ext| ext == "yaml" || ext == "yml")
        && !is_test_file(path)
}

/// Whether a file is a pipeline test file (`*.test.yaml`, `*.test.yml`), which `floe test`
/// reads and the pipeline loaders leave alone.
pub fn is_test_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.ends_with(".test.yaml") || name.ends_with(".test.yml"))
}

/// Loads every pipeline file of a folder ([`is_pipeline_file`]: `*.yaml`/`*.yml`, not the
/// `*.test.yaml` test files), in file-name order. Pipeline names must be unique across the
/// folder.
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
        .filter(|path| path.is_file() && is_pipeline_file(path))
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
pub(crate) fn strip_location_suffix(message: &str) -> String {
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
pub(crate) fn locate_duplicate(text: &str, message: &str) -> Option<(usize, usize)> {
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

/// Why a name cannot be used; the message reads on from what is named (`job`, `source` …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    #[error("name `{0}` is longer than 64 characters")]
    TooLong(String),
    #[error("name `{0}` must start with a letter and contain only letters, digits, `_` and `-`")]
    BadCharacters(String),
}

/// Why an app (pipeline) or context name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name `{0}` is longer than 64 characters")]
    TooLong(String),
    #[error(
        "name `{0}` must start with a letter and contain only letters, digits, `_`, `-` and `.` \
         (no `..`)"
    )]
    BadCharacters(String),
    #[error(
        "name `{0}` contains `__`, which separates a pipeline from a job in `/query`'s table \
         names (`<pipeline>__<job>`)"
    )]
    Separator(String),
}

/// Names of apps (pipelines) and contexts: what spark-jobserver accepts for them (a leading
/// letter; `wordcount-1.0`, `my.ctx`), kept to characters that are safe in store keys, URL
/// path segments and file names: letters, digits, `_`, `-` and `.`, never `..`. Such a name
/// is quoted in SQL (`"wordcount-1.0__counts"` in `/query`).
pub fn check_name(name: &str) -> Result<(), NameError> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if name.len() > 64 {
        return Err(NameError::TooLong(name.to_owned()));
    }
    let allowed = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !starts_with_letter || !allowed || name.contains("..") {
        return Err(NameError::BadCharacters(name.to_owned()));
    }
    // `/query` names results `<pipeline>__<job>` and splits at the first `__`: a pipeline
    // named with it could not be read, or would read another's results.
    if name.contains("__") {
        return Err(NameError::Separator(name.to_owned()));
    }
    Ok(())
}

/// Names used in store keys, URLs and SQL: a letter, then letters, digits, `_` or `-`.
pub fn check_identifier(name: &str) -> Result<(), IdentifierError> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if name.len() > 64 {
        return Err(IdentifierError::TooLong(name.to_owned()));
    }
    if !starts_with_letter || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(IdentifierError::BadCharacters(name.to_owned()));
    }
    Ok(())
}
