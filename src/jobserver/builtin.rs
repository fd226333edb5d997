//! Running a built-in class job: the server resolves its inputs (scans of sources and
//! results, data files of `/data`; named objects and get-or-create inputs are the context's)
//! and the context runs it ([`super::context_run`]), in this process or in its worker
//! process ([`super::remote`]).

use polars::prelude::*;

use crate::catalog::App;
use crate::engine::ResolvedInput;
use crate::inputs::{Gaps, InputError};
use crate::partition::Window;
use crate::results::partitions_spanned;

use super::context_run::{Build, ContextError, ContextInput, ContextJob, run_in_context};
use super::objects::ObjectDefinition;
use super::plan::{self, BuiltinPlan, InputSpec, ScanTarget};
use super::{ExecError, JobServer, LiveJob};

impl JobServer {
    /// Whether a built-in job of `context` runs in a worker process.
    pub(super) fn runs_remotely(&self, context: &super::context::Context) -> bool {
        context.worker.is_some() || (context.adhoc && self.adhoc_workers.is_some())
    }

    pub(super) fn execute_builtin(
        &self,
        live: &LiveJob,
        plan: &BuiltinPlan,
    ) -> Result<DataFrame, ExecError> {
        if let Some(worker) = &live.context.worker {
            return self.execute_remote(live, plan, worker);
        }
        if live.context.adhoc
            && let Some(pool) = &self.adhoc_workers
        {
            let unavailable = |message: String| ExecError::Failed {
                message: format!("ad-hoc jobs cannot run: {message}"),
                class: "floe.WorkerUnavailable",
            };
            let pool = pool.as_ref().map_err(|e| unavailable(e.clone()))?;
            return pool
                .with_worker(|worker| self.execute_remote(live, plan, worker))
                .map_err(unavailable)?;
        }
        let mut inputs = Vec::new();
        for (name, spec) in &plan.inputs {
            Self::checkpoint(live)?;
            inputs.push((name.clone(), self.context_input(name, spec, true)?));
        }
        let job = ContextJob {
            job_id: &live.id,
            context: &live.context.name,
            class: plan.class,
            kind: plan.job.as_ref(),
            window: plan::input_span(&plan.inputs),
            inputs,
            publish: plan.publish.clone(),
            max_result_bytes: self.settings.limits.max_result_bytes,
            now: self.clock.now(),
        };
        run_in_context(&live.context.objects, job, &|| {
            Self::checkpoint(live).map_err(|_| ContextError::Stopped)
        })
        .map_err(|e| match e {
            ContextError::Failed { message, class } => ExecError::Failed { message, class },
            ContextError::Stopped => ExecError::Stopped,
            ContextError::NeedsBuild { object } => ExecError::Failed {
                message: format!("named object `{object}` has nothing to be built from"),
                class: "floe.NamedObjectError",
            },
        })
    }

    /// What input `name` (`spec`) is to the context that runs the job: server-side reads
    /// (scans, results, data files) resolved here; a get-or-create input's rows resolved only
    /// when its object turns out missing, and only when `lazy_builds` (in-process: the
    /// context asks; a worker process says so in its reply instead).
    pub(super) fn context_input<'a>(
        &'a self,
        name: &str,
        spec: &'a InputSpec,
        lazy_builds: bool,
    ) -> Result<ContextInput<'a>, ExecError> {
        Ok(match spec {
            InputSpec::Object {
                name: object,
                window,
            } => ContextInput::Object {
                name: object.clone(),
                window: window.clone(),
            },
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
                    None => ContextInput::Resolved(self.scan(app, what, &window)?),
                    Some(object) => ContextInput::Cached {
                        object: object.clone(),
                        definition: object_definition(app, what, &window),
                        build: if lazy_builds {
                            Build::Lazy(Box::new(move || {
                                self.scan(app, what, &window).map_err(|e| match e {
                                    ExecError::Failed { message, class } => {
                                        ContextError::Failed { message, class }
                                    }
                                    ExecError::Stopped => ContextError::Stopped,
                                })
                            }))
                        } else {
                            Build::Absent
                        },
                    },
                }
            }
            InputSpec::Data { file, format } => ContextInput::Resolved(
                self.materializer
                    .inputs()
                    .data_file(file, *format)
                    .map_err(|e| ExecError::Failed {
                        message: format!("input `{name}`: {e}"),
                        class: "floe.DataFileError",
                    })?,
            ),
        })
    }

    /// An ad-hoc job's scan of an app's source or of a job's results, resolved.
    pub(super) fn scan<'a>(
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
