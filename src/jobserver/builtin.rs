//! Running a built-in class job: its inputs (named objects, scans of sources and results,
//! cached as named objects on request, data files of `/data`) are resolved, then the engine
//! executes it.

use std::collections::BTreeMap;
use std::sync::Arc;

use polars::prelude::*;

use crate::catalog::App;
use crate::engine::{EngineError, PolarsEngine, ResolvedInput, ResolvedPlan, SourceError};
use crate::frames::arrow_size;
use crate::frames::selection::decode_strings;
use crate::frames::time_slice::{only_datetime_column, window_rows};
use crate::inputs::{Gaps, InputError};
use crate::job::{JobError, JobInput, JobOutput};
use crate::partition::{Grain, Window};
use crate::results::partitions_spanned;

use super::objects::{ObjectDefinition, ObjectError, ObjectOrigin, ObjectRows};
use super::plan::{self, BuiltinPlan, InputSpec, ObjectWindow, ScanTarget};
use super::{ADHOC_CONTEXT, ExecError, JobServer, LiveJob, context_label};

impl JobServer {
    pub(super) fn execute_builtin(
        &self,
        live: &LiveJob,
        plan: &BuiltinPlan,
    ) -> Result<DataFrame, ExecError> {
        let objects = &live.context.objects;
        let mut inputs = BTreeMap::new();
        for (name, spec) in &plan.inputs {
            Self::checkpoint(live)?;
            let input = match spec {
                InputSpec::Object {
                    name: object,
                    window,
                } => {
                    let found = objects.get(object).ok_or_else(|| {
                        let known: Vec<String> =
                            objects.summaries().into_iter().map(|s| s.name).collect();
                        ExecError::Failed {
                            message: format!(
                                "named object `{object}` not found in context {} (objects: {})",
                                context_label(&live.context),
                                if known.is_empty() {
                                    "none".to_owned()
                                } else {
                                    known.join(", ")
                                }
                            ),
                            class: "floe.NamedObjectNotFound",
                        }
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
                    ResolvedInput::rows(JobInput {
                        cached_rows: Some(Arc::new(ObjectRows {
                            object: found,
                            window,
                        })),
                        ..JobInput::of_frame(frame)
                    })
                }
                InputSpec::Scan {
                    app,
                    what,
                    from,
                    to,
                    cache_as,
                } => {
                    let window = Window {
                        start: *from,
                        end: *to,
                    };
                    match cache_as {
                        None => self.scan(app, what, &window)?,
                        Some(object) => objects
                            .get_or_create(
                                object,
                                &object_definition(app, what, &window),
                                self.clock.now(),
                                || {
                                    let frame = self
                                        .scan(app, what, &window)
                                        .and_then(|input| {
                                            PolarsEngine::frame(input).map_err(source_failed)
                                        })
                                        .map_err(|e| match e {
                                            ExecError::Failed { message, .. } => message,
                                            ExecError::Stopped => "stopped".to_owned(),
                                        })?;
                                    crate::frames::cancel::collect(frame).map_err(|e| {
                                        format!(
                                            "cannot build named object `{object}`: {}",
                                            crate::job::builtin::short_polars_error(&e)
                                        )
                                    })
                                },
                            )
                            .map(|object| {
                                ResolvedInput::rows(JobInput {
                                    frame: object.frame.as_ref().clone().lazy(),
                                    cached_rows: Some(Arc::new(ObjectRows {
                                        object,
                                        window: None,
                                    })),
                                    states: None,
                                    upstream_kind: None,
                                })
                            })
                            .map_err(|e| match e {
                                ObjectError::Conflict(message) => ExecError::Failed {
                                    message: format!(
                                        "context {}: {message}",
                                        context_label(&live.context)
                                    ),
                                    class: "floe.NamedObjectConflict",
                                },
                                e @ (ObjectError::Failed(_) | ObjectError::OverBudget { .. }) => {
                                    ExecError::Failed {
                                        message: e.to_string(),
                                        class: "floe.NamedObjectError",
                                    }
                                }
                            })?,
                    }
                }
                InputSpec::Data { file, format } => self
                    .materializer
                    .inputs()
                    .data_file(file, *format)
                    .map_err(|e| ExecError::Failed {
                        message: format!("input `{name}`: {e}"),
                        class: "floe.DataFileError",
                    })?,
            };
            inputs.insert(name.clone(), input);
        }
        Self::checkpoint(live)?;
        let resolved = ResolvedPlan {
            pipeline: ADHOC_CONTEXT,
            job: plan.class,
            kind: plan.job.as_ref(),
            // Built-in classes do not look at the grain; an ad-hoc run has none of its own.
            grain: Grain::Hourly,
            window: plan::input_span(&plan.inputs),
            inputs,
        };
        let failed = |e: JobError| ExecError::Failed {
            message: e.to_string(),
            class: "floe.JobFailed",
        };
        let output = self
            .materializer
            .engine()
            .execute(resolved)
            .map_err(|e| match e {
                EngineError::Source(e) => source_failed(e),
                EngineError::Job(e) => failed(e),
            })?;
        // Keys grouped from a selection's encoded columns come back as strings, as they were.
        let output = JobOutput {
            frame: decode_strings(output.frame).map_err(|e| failed(e.into()))?,
            state: output.state,
        };
        Self::checkpoint(live)?;
        if let Some(name) = &plan.publish {
            // A result too large to store fails the job: it must not publish it first.
            self.settings
                .limits
                .check_result_bytes(arrow_size(&output.frame) as u64)
                .map_err(ExecError::failed("floe.ResultTooLarge"))?;
            let origin = ObjectOrigin::Published {
                job_id: live.id.clone(),
            };
            objects
                .put(name, output.frame.clone(), self.clock.now(), origin)
                .map_err(ExecError::failed("floe.NamedObjectError"))?;
        }
        Ok(output.frame)
    }

    /// An ad-hoc job's scan of an app's source or of a job's results, resolved.
    fn scan<'a>(
        &self,
        app: &'a App,
        what: &ScanTarget,
        window: &Window,
    ) -> Result<ResolvedInput<'a>, ExecError> {
        let inputs = self.materializer.inputs();
        let resolved = match what {
            ScanTarget::Source(name) => inputs.source(&app.pipeline, name, window),
            ScanTarget::Results(job) => {
                self.settings
                    .limits
                    .check_result_partitions(
                        partitions_spanned(&app.pipeline, job, window.start, window.end),
                        &format!("input `results = {job}`"),
                    )
                    .map_err(ExecError::failed("floe.LimitExceeded"))?;
                inputs.results(&app.pipeline, job, window, Gaps::Refuse)
            }
        };
        resolved.map_err(|e| {
            let class = match &e {
                InputError::UnknownSource { .. } | InputError::Source(_) => "floe.SourceError",
                InputError::DataFile(_) | InputError::NoDataFiles => "floe.DataFileError",
                InputError::Stale { .. } => "floe.ResultsStale",
                InputError::Missing { .. } => "floe.ResultsMissing",
                InputError::UnknownJob { .. }
                | InputError::Results(_)
                | InputError::Combine { .. } => "floe.ResultsError",
            };
            ExecError::Failed {
                message: e.to_string(),
                class,
            }
        })
    }
}

/// A source (or a data file) that could not be read, as a job's failure.
fn source_failed(e: SourceError) -> ExecError {
    let class = match e {
        SourceError::File { .. } => "floe.DataFileError",
        _ => "floe.SourceError",
    };
    ExecError::Failed {
        message: e.to_string(),
        class,
    }
}

/// The rows of the named object `name` in `window` (a slice when its time column is sorted),
/// and the time column.
fn object_window_rows(
    frame: &DataFrame,
    name: &str,
    window: &ObjectWindow,
) -> Result<(LazyFrame, String), ExecError> {
    // `problem` reads on from the object's name: "has no datetime column", ": time column …".
    let failed = |problem: String| ExecError::Failed {
        message: format!("named object `{name}`{problem}"),
        class: "floe.NamedObjectWindow",
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

/// What a get-or-create input builds its named object from.
fn object_definition(app: &App, what: &ScanTarget, window: &Window) -> ObjectDefinition {
    let (kind, name) = match what {
        ScanTarget::Source(name) => ("source", name),
        ScanTarget::Results(name) => ("results", name),
    };
    ObjectDefinition {
        app: app.name().to_owned(),
        app_version: app.meta.version,
        kind,
        name: name.clone(),
        from: window.start,
        to: window.end,
    }
}
