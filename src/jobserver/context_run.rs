//! What runs inside a context: a built-in job over inputs the server resolved, its named
//! object inputs read from the context's objects, get-or-create inputs built once, the engine
//! run, and the result published as a named object when asked.
//!
//! One function, two homes: the server calls it with a context's objects when the context
//! runs in-process, and a worker process calls it with its own when the context runs there
//! ([`super::remote`]). The server side — the catalog, the store, the data roots — resolves
//! everything else before.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use polars::prelude::*;

use crate::engine::{Engine, EngineError, PolarsEngine, ResolvedInput, ResolvedPlan, SourceError};
use crate::frames::arrow_size;
use crate::frames::selection::decode_strings;
use crate::frames::time_slice::{only_datetime_column, window_rows};
use crate::job::{Job, JobError, JobInput, JobOutput};
use crate::partition::{Grain, Window};

use super::ADHOC_CONTEXT;
use super::limits::LimitError;
use super::objects::{NamedObjects, ObjectDefinition, ObjectError, ObjectOrigin, ObjectRows};
use super::plan::ObjectWindow;

/// A built-in job as its context runs it.
pub(crate) struct ContextJob<'a> {
    pub job_id: &'a str,
    /// The context's name, empty for the ad-hoc context.
    pub context: &'a str,
    pub class: &'a str,
    pub kind: &'a dyn Job,
    pub window: Window,
    pub inputs: Vec<(String, ContextInput<'a>)>,
    pub publish: Option<String>,
    /// The largest result that may be published (`limits.max_result_bytes`).
    pub max_result_bytes: u64,
    pub now: DateTime<Utc>,
}

/// One input as the context sees it.
pub(crate) enum ContextInput<'a> {
    /// A named object of the context, whole or cut to a window.
    Object {
        name: String,
        window: Option<ObjectWindow>,
    },
    /// Rows or files the server resolved.
    Resolved(ResolvedInput<'a>),
    /// The named object `object`, built from `build` unless it exists.
    Cached {
        object: String,
        definition: ObjectDefinition,
        build: Build<'a>,
    },
}

/// What a get-or-create input builds its object from.
pub(crate) enum Build<'a> {
    /// Resolved only when the object is missing (in-process).
    Lazy(Box<dyn FnOnce() -> Result<ResolvedInput<'a>, ContextError> + 'a>),
    /// Resolved already.
    Given(ResolvedInput<'a>),
    /// Not sent: when the object is missing the run ends with [`ContextError::NeedsBuild`],
    /// and the server sends the input (a worker's first try).
    Absent,
}

/// Why a context run gave no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContextError {
    Failed {
        message: String,
        class: &'static str,
    },
    /// The job was stopped (its cancel handle) at a safe point.
    Stopped,
    /// A get-or-create input's object is missing and its build input was not sent.
    NeedsBuild { object: String },
}

impl ContextError {
    pub(crate) fn failed(class: &'static str, message: impl Into<String>) -> ContextError {
        ContextError::Failed {
            message: message.into(),
            class,
        }
    }
}

/// The error classes a context run reports, by name (a worker's reply names one).
pub(crate) const CONTEXT_ERROR_CLASSES: &[&str] = &[
    "floe.NamedObjectNotFound",
    "floe.NamedObjectConflict",
    "floe.NamedObjectError",
    "floe.NamedObjectWindow",
    "floe.SourceError",
    "floe.DataFileError",
    "floe.JobFailed",
    "floe.ResultTooLarge",
    "floe.ResultsError",
    "floe.ResultsStale",
    "floe.ResultsMissing",
    "floe.LimitExceeded",
];

/// `class` as one of [`CONTEXT_ERROR_CLASSES`] (`floe.JobFailed` for any other).
pub(crate) fn context_error_class(class: &str) -> &'static str {
    CONTEXT_ERROR_CLASSES
        .iter()
        .find(|known| **known == class)
        .copied()
        .unwrap_or("floe.JobFailed")
}

/// How a context is named in messages.
fn label(context: &str) -> &str {
    if context.is_empty() {
        ADHOC_CONTEXT
    } else {
        context
    }
}

/// Runs `job` with the context's `objects`; `checkpoint` says whether to go on between
/// stages.
pub(crate) fn run_in_context(
    objects: &NamedObjects,
    job: ContextJob<'_>,
    checkpoint: &dyn Fn() -> Result<(), ContextError>,
) -> Result<DataFrame, ContextError> {
    let mut inputs = BTreeMap::new();
    for (name, input) in job.inputs {
        checkpoint()?;
        let resolved = match input {
            ContextInput::Object {
                name: object,
                window,
            } => object_input(objects, job.context, &object, window.as_ref())?,
            ContextInput::Resolved(input) => input,
            ContextInput::Cached {
                object,
                definition,
                build,
            } => cached_input(objects, job.context, &object, &definition, build, job.now)?,
        };
        inputs.insert(name, resolved);
    }
    checkpoint()?;
    let resolved = ResolvedPlan {
        pipeline: ADHOC_CONTEXT,
        job: job.class,
        kind: job.kind,
        // Built-in classes do not look at the grain; an ad-hoc run has none of its own.
        grain: Grain::Hourly,
        window: job.window,
        definition: None,
        stop: None,
        inputs,
    };
    let failed = |e: JobError| ContextError::failed("floe.JobFailed", e.to_string());
    let output = PolarsEngine.execute(resolved).map_err(|e| match e {
        EngineError::Source(e) => source_failed(e),
        EngineError::Job(e) => failed(e),
    })?;
    // Keys grouped from a selection's encoded columns come back as strings, as they were.
    let output = JobOutput {
        frame: decode_strings(output.frame).map_err(|e| failed(e.into()))?,
        state: output.state,
    };
    checkpoint()?;
    if let Some(name) = &job.publish {
        // A result too large to store fails the job: it must not publish it first.
        let bytes = arrow_size(&output.frame) as u64;
        if bytes > job.max_result_bytes {
            let over = LimitError::ResultBytes {
                bytes,
                limit: job.max_result_bytes,
            };
            return Err(ContextError::failed(
                "floe.ResultTooLarge",
                over.to_string(),
            ));
        }
        let origin = ObjectOrigin::Published {
            job_id: job.job_id.to_owned(),
        };
        objects
            .put(name, output.frame.clone(), job.now, origin)
            .map_err(|e| ContextError::failed("floe.NamedObjectError", e.to_string()))?;
    }
    Ok(output.frame)
}

/// A named object input, whole or cut to its window, with its selections as cached rows.
fn object_input<'a>(
    objects: &NamedObjects,
    context: &str,
    object: &str,
    window: Option<&ObjectWindow>,
) -> Result<ResolvedInput<'a>, ContextError> {
    let found = objects.get(object).ok_or_else(|| {
        let known: Vec<String> = objects.summaries().into_iter().map(|s| s.name).collect();
        ContextError::failed(
            "floe.NamedObjectNotFound",
            format!(
                "named object `{object}` not found in context {} (objects: {})",
                label(context),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        )
    })?;
    let (frame, window) = match window {
        None => (found.frame.as_ref().clone().lazy(), None),
        Some(window) => {
            let (frame, column) = object_window_rows(&found.frame, object, window)?;
            let bounds = Window {
                start: window.from,
                end: window.to,
            };
            (frame, Some((column, bounds, window.timezone)))
        }
    };
    Ok(ResolvedInput::rows(JobInput {
        cached_rows: Some(Arc::new(ObjectRows {
            object: found,
            window,
        })),
        ..JobInput::of_frame(frame)
    }))
}

/// A get-or-create input: the object, built once from `build`.
fn cached_input<'a>(
    objects: &NamedObjects,
    context: &str,
    object: &str,
    definition: &ObjectDefinition,
    build: Build<'_>,
    now: DateTime<Utc>,
) -> Result<ResolvedInput<'a>, ContextError> {
    if matches!(build, Build::Absent) && objects.get(object).is_none() {
        return Err(ContextError::NeedsBuild {
            object: object.to_owned(),
        });
    }
    let built = objects.get_or_create(object, definition, now, || {
        let input = match build {
            Build::Lazy(resolve) => resolve().map_err(|e| match e {
                ContextError::Failed { message, .. } => message,
                ContextError::Stopped => "stopped".to_owned(),
                ContextError::NeedsBuild { object } => format!("`{object}` has no rows"),
            })?,
            Build::Given(input) => input,
            // Made between the check above and now by another job: not reached, the object
            // exists. Made and forgotten in between: say so.
            Build::Absent => return Err(format!("named object `{object}` was dropped")),
        };
        // On the in-memory engine whatever the files weigh: the object is held whole, so
        // streaming its build saves no memory (docs/benchmarks.md, "When to stream").
        let frame = PolarsEngine::frame(input).map_err(|e| e.to_string())?;
        crate::frames::cancel::collect(frame).map_err(|e| {
            format!(
                "cannot build named object `{object}`: {}",
                crate::job::builtin::short_polars_error(&e)
            )
        })
    });
    let object = built.map_err(|e| match e {
        ObjectError::Conflict(message) => ContextError::failed(
            "floe.NamedObjectConflict",
            format!("context {}: {message}", label(context)),
        ),
        e @ (ObjectError::Failed(_) | ObjectError::OverBudget { .. }) => {
            ContextError::failed("floe.NamedObjectError", e.to_string())
        }
    })?;
    Ok(ResolvedInput::rows(JobInput {
        frame: object.frame.as_ref().clone().lazy(),
        cached_rows: Some(Arc::new(ObjectRows {
            object,
            window: None,
        })),
        states: None,
        upstream_kind: None,
    }))
}

/// A source (or a data file) that could not be read, as a job's failure.
pub(crate) fn source_failed(e: SourceError) -> ContextError {
    let class = match e {
        SourceError::File { .. } => "floe.DataFileError",
        _ => "floe.SourceError",
    };
    ContextError::failed(class, e.to_string())
}

/// The rows of the named object `name` in `window` (a slice when its time column is sorted),
/// and the time column.
fn object_window_rows(
    frame: &DataFrame,
    name: &str,
    window: &ObjectWindow,
) -> Result<(LazyFrame, String), ContextError> {
    // `problem` reads on from the object's name: "has no datetime column", ": time column …".
    let failed = |problem: String| {
        ContextError::failed(
            "floe.NamedObjectWindow",
            format!("named object `{name}`{problem}"),
        )
    };
    let column = match &window.time_column {
        Some(column) => column.clone(),
        None => only_datetime_column(frame).map_err(|problem| failed(format!(" {problem}")))?,
    };
    let bounds = Window {
        start: window.from,
        end: window.to,
    };
    let rows = window_rows(frame, &column, &bounds, window.timezone)
        .map_err(|problem| failed(format!(": {problem}")))?;
    Ok((rows, column))
}
