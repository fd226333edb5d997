//! Contexts in worker processes: what a job's call to its context's worker carries, the
//! server's side of it (inputs resolved here, sent as file lists or Arrow IPC, the reply read
//! back), and the worker's side (`floe worker`: the context's named objects, and
//! [`run_in_context`] over them).
//!
//! A context that runs in a worker keeps its named objects there; the server keeps a view of
//! them (names, sizes) from the last reply, for `GET /contexts/{name}` and `/query`. When the
//! worker dies — over its memory limit, killed to stop a job at once, crashed — its calls fail
//! with the reason, its objects are gone, and the next job starts a new worker. Nothing in the
//! store depends on a worker: it never opens the store.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::context::Context;
use super::context_run::{
    Build, ContextError, ContextInput, ContextJob, context_error_class, run_in_context,
};
use super::limits::LimitError;
use super::objects::{NamedObjects, ObjectDefinition, ObjectSummary};
use super::plan::{BuiltinPlan, InputSpec, ObjectWindow, build_builtin};
use super::{ExecError, JobServer, LiveJob, StopReason, context_label, lock};
use crate::engine::ResolvedInput;
use crate::engine::wire::{WireError, WireInput as ResolvedWire, resolved_input, timezone};
use crate::frames::cancel::Cancel;
use crate::frames::memory::human_bytes;
use crate::frames::{decode_ipc, encode_ipc};
use crate::job::Job;
use crate::job::builtin::Sql;
use crate::job::cache::KindCache;
use crate::partition::Window;
use crate::worker::child::Handler;
use crate::worker::{CallError, Worker};

/// A call to a context's worker: run a built-in class, or a `/query`'s SQL.
#[derive(Debug, Serialize, Deserialize)]
struct RunCall {
    /// The job's id (a `/query`'s: `query`).
    job_id: String,
    /// The context's name, empty for the ad-hoc context.
    context: String,
    kind: WireKind,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    inputs: Vec<(String, WireInput)>,
    publish: Option<String>,
    max_result_bytes: u64,
    now: DateTime<Utc>,
    /// An ad-hoc job's named objects are its own: a fresh set with this budget, dropped with
    /// the call. `None`: the context's.
    own_objects: Option<u64>,
}

/// What runs: a built-in class with its parameters, or a `/query`'s SQL.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum WireKind {
    Builtin {
        class: String,
        params: Map<String, Value>,
    },
    Query {
        sql: String,
    },
}

/// An input on the wire: a reference to an object in the worker, or what the server resolved.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
enum WireInput {
    Object {
        name: String,
        window: Option<WireWindow>,
    },
    /// Get-or-create: the object, built from `build` when missing; without `build` a
    /// missing object is answered `needs_build`.
    Cached {
        object: String,
        definition: WireDefinition,
        build: Option<ResolvedWire>,
    },
    /// Rows or files the server resolved.
    Resolved { resolved: ResolvedWire },
}

#[derive(Debug, Serialize, Deserialize)]
struct WireWindow {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    time_column: Option<String>,
    timezone: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireDefinition {
    app: String,
    app_version: u32,
    kind: String,
    name: String,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

/// A worker's answer to a run: the outcome (the result frame is blob 0), and its context's
/// named objects as they are after it.
#[derive(Debug, Serialize, Deserialize)]
struct RunReply {
    outcome: WireOutcome,
    objects: Vec<ObjectSummary>,
    used: u64,
    /// Orders the views of the objects: replies of concurrent calls can arrive in another
    /// order than their snapshots were taken.
    snapshot: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum WireOutcome {
    Finished,
    Failed { message: String, class: String },
    Stopped,
    NeedsBuild { object: String },
}

/// The server's view of a worker context's named objects, from its last reply.
#[derive(Debug, Default)]
pub struct ObjectsView {
    pub summaries: Vec<ObjectSummary>,
    pub used: u64,
    /// The worker's snapshot the view is (see `RunReply::snapshot`); 0 when none.
    pub snapshot: u64,
    /// The worker process the view is of: a new process starts its snapshots again.
    pub pid: Option<u32>,
}

/// A `/query` table as its context sees it.
#[derive(Debug)]
pub enum QueryTable<'a> {
    /// A named object of the context.
    Object(String),
    /// Results the server read.
    Rows(ResolvedInput<'a>),
}

impl JobServer {
    /// Runs a built-in job in its context's worker process.
    pub(super) fn execute_remote(
        &self,
        live: &LiveJob,
        plan: &BuiltinPlan,
        worker: &Worker,
    ) -> Result<DataFrame, ExecError> {
        // Get-or-create inputs whose rows are sent: none at first (the object may exist in
        // the worker), then each one the worker says is missing.
        let mut builds = BTreeSet::new();
        loop {
            // What the server reads for the job counts against its memory limit.
            let tracked = self.memory.track(&live.cancel, format!("job {}", live.id));
            let mut blobs = Vec::new();
            let mut inputs = Vec::new();
            for (name, spec) in &plan.inputs {
                Self::checkpoint(live)?;
                let input = match self.context_input(name, spec, false)? {
                    ContextInput::Object { name, window } => WireInput::Object {
                        name,
                        window: window.as_ref().map(wire_window),
                    },
                    ContextInput::Resolved(input) => WireInput::Resolved {
                        resolved: wire_input(input, &mut blobs)?,
                    },
                    ContextInput::Cached {
                        object, definition, ..
                    } => {
                        let build = match spec {
                            InputSpec::Scan {
                                app,
                                what,
                                from,
                                to,
                                ..
                            } if builds.contains(&object) => {
                                let window = Window {
                                    start: *from,
                                    end: *to,
                                };
                                let rows = self.scan(app, what, &window)?;
                                Some(wire_input(rows, &mut blobs)?)
                            }
                            _ => None,
                        };
                        WireInput::Cached {
                            object,
                            definition: wire_definition(&definition),
                            build,
                        }
                    }
                };
                inputs.push((name.clone(), input));
            }
            Self::checkpoint(live)?;
            drop(tracked);
            let window = super::plan::input_span(&plan.inputs);
            let call = RunCall {
                job_id: live.id.clone(),
                context: live.context.name.clone(),
                kind: WireKind::Builtin {
                    class: plan.class.to_owned(),
                    params: plan.params.clone(),
                },
                from: window.start,
                to: window.end,
                inputs,
                publish: plan.publish.clone(),
                max_result_bytes: self.settings.limits.max_result_bytes,
                now: self.clock.now(),
                own_objects: live
                    .context
                    .adhoc
                    .then_some(live.context.settings.memory_budget),
            };
            // A kill, a timeout or the context's deletion stops the job at once, its process
            // with it; the server's memory watchdog does not (the job holds no server memory
            // now).
            let stop = || {
                (live.stop_reason() != StopReason::None)
                    .then(|| format!("job {} was stopped while it ran", live.id))
            };
            // A job that must stop stops at once: its process is killed after the grace.
            let kill_after = Some(self.settings.workers.kill_grace);
            match call_worker(&live.context, worker, &call, blobs, &stop, kill_after) {
                Err(RemoteError::NeedsBuild(object)) => {
                    // Each object is sent at most once: a second miss means it was built and
                    // dropped again (over the budget) before this job could read it.
                    if !builds.insert(object.clone()) {
                        return Err(ExecError::Failed {
                            message: format!(
                                "named object `{object}` could not be kept in context {}",
                                context_label(&live.context)
                            ),
                            class: "floe.NamedObjectError",
                        });
                    }
                }
                // A job stopped while it ran was finalised by whoever stopped it.
                Err(RemoteError::Failed { .. }) if live.stop_reason() != StopReason::None => {
                    return Err(ExecError::Stopped);
                }
                Err(RemoteError::Failed { message, class }) => {
                    return Err(ExecError::Failed { message, class });
                }
                // Stopped at a safe point: by whoever asked for a stop (they finalise the job),
                // or by the server's memory watchdog, which asks for none (the job fails).
                Err(RemoteError::Stopped) if live.stop_reason() != StopReason::None => {
                    return Err(ExecError::Stopped);
                }
                Err(RemoteError::Stopped) => {
                    return Err(ExecError::Failed {
                        message: live.cancel.reason().unwrap_or("stopped").to_owned(),
                        class: "floe.MemoryLimit",
                    });
                }
                Ok(frame) => return Ok(frame),
            }
        }
    }

    /// Runs a `/query`'s SQL in `context`'s worker process over `tables`; `stop` says when to
    /// stop it (its time limit, a hang-up). Errors are the message and its class.
    pub fn query_in_worker(
        &self,
        context: &Context,
        sql: &str,
        tables: Vec<(String, QueryTable<'_>)>,
        stop: &dyn Fn() -> Option<String>,
    ) -> Result<DataFrame, (String, &'static str)> {
        let Some(worker) = &context.worker else {
            return Err((
                "the context runs in the server's process".to_owned(),
                "floe.JobFailed",
            ));
        };
        let mut blobs = Vec::new();
        let mut inputs = Vec::new();
        for (name, table) in tables {
            let input = match table {
                QueryTable::Object(object) => WireInput::Object {
                    name: object,
                    window: None,
                },
                QueryTable::Rows(rows) => WireInput::Resolved {
                    resolved: wire_input(rows, &mut blobs).map_err(|e| match e {
                        ExecError::Failed { message, class } => (message, class),
                        ExecError::Stopped => ("stopped".to_owned(), "floe.JobKilled"),
                    })?,
                },
            };
            inputs.push((name, input));
        }
        let now = self.clock.now();
        let call = RunCall {
            job_id: "query".to_owned(),
            context: context.name.clone(),
            kind: WireKind::Query {
                sql: sql.to_owned(),
            },
            from: DateTime::UNIX_EPOCH,
            to: now,
            inputs,
            publish: None,
            max_result_bytes: self.settings.limits.max_result_bytes,
            now,
            own_objects: None,
        };
        // A query that must stop (its time limit, a hang-up) is asked to, and its place is
        // held until the worker lets go, as in the server's process: a query never kills its
        // context's worker and the named objects in it.
        match call_worker(context, worker, &call, blobs, stop, None) {
            Ok(frame) => Ok(frame),
            Err(RemoteError::Failed { message, class }) => Err((message, class)),
            Err(RemoteError::Stopped) => Err((
                stop().unwrap_or_else(|| "the query was stopped".to_owned()),
                "floe.JobKilled",
            )),
            Err(RemoteError::NeedsBuild(object)) => Err((
                format!("named object `{object}` is missing"),
                "floe.NamedObjectNotFound",
            )),
        }
    }
}

/// Sends `call` to `worker` and reads its reply, keeping the context's view of its named
/// objects up to date.
fn call_worker(
    context: &Context,
    worker: &Worker,
    call: &RunCall,
    blobs: Vec<Vec<u8>>,
    stop: &dyn Fn() -> Option<String>,
    kill_after: Option<std::time::Duration>,
) -> Result<DataFrame, RemoteError> {
    let header = serde_json::to_vec(call).map_err(|e| RemoteError::Failed {
        message: e.to_string(),
        class: "floe.JobFailed",
    })?;
    let answer = worker.call(header, blobs, stop, kill_after);
    let frame = answer.map_err(|error| {
        // The process is gone, and its named objects with it.
        if !context.adhoc && matches!(error, CallError::Died(_) | CallError::Start(_)) {
            *lock(&context.remote_objects) = ObjectsView::default();
        }
        worker_failed(context, error)
    })?;
    let unreadable = |what: String| RemoteError::Failed {
        message: format!("the worker process answered what Floe cannot read: {what}"),
        class: "floe.WorkerFailed",
    };
    let reply: RunReply =
        serde_json::from_slice(&frame.header).map_err(|e| unreadable(e.to_string()))?;
    if !context.adhoc {
        let mut view = lock(&context.remote_objects);
        // A reply of another process, or a later snapshot of this one, replaces the view.
        let pid = worker.pid();
        if view.pid != pid || reply.snapshot > view.snapshot {
            *view = ObjectsView {
                summaries: reply.objects,
                used: reply.used,
                snapshot: reply.snapshot,
                pid,
            };
        }
    }
    match reply.outcome {
        WireOutcome::Finished => {
            let bytes = frame
                .blobs
                .first()
                .ok_or_else(|| unreadable("no result".to_owned()))?;
            decode_ipc(bytes).map_err(|e| unreadable(e.to_string()))
        }
        WireOutcome::Failed { message, class } => Err(RemoteError::Failed {
            message,
            class: context_error_class(&class),
        }),
        WireOutcome::Stopped => Err(RemoteError::Stopped),
        WireOutcome::NeedsBuild { object } => Err(RemoteError::NeedsBuild(object)),
    }
}

/// Why a call to a context's worker gave no rows.
#[derive(Debug)]
enum RemoteError {
    Failed {
        message: String,
        class: &'static str,
    },
    Stopped,
    NeedsBuild(String),
}

/// A call that got no reply, as its failure.
fn worker_failed(context: &Context, error: CallError) -> RemoteError {
    let adhoc = context.adhoc;
    let context = context_label(context);
    let (message, class) = match error {
        CallError::Start(message) => (
            format!("context {context}: {message}"),
            "floe.WorkerUnavailable",
        ),
        CallError::Died(reason) if reason.starts_with("memory limit") && adhoc => (
            format!("{reason}: the job's worker process was stopped"),
            "floe.MemoryLimit",
        ),
        CallError::Died(reason) if adhoc => (
            format!("the job's worker process ended while it ran ({reason})"),
            "floe.WorkerDied",
        ),
        CallError::Died(reason) if reason.starts_with("memory limit") => (
            format!(
                "{reason}: the worker process of context {context} was stopped, and its named \
                 objects with it"
            ),
            "floe.MemoryLimit",
        ),
        CallError::Died(reason) => (
            format!(
                "the worker process of context {context} ended while this ran ({reason}); its \
                 named objects were lost with it"
            ),
            "floe.WorkerDied",
        ),
        CallError::Failed(message) => match message.strip_prefix("panicked: ") {
            Some(what) => (format!("the job panicked: {what}"), "floe.JobPanicked"),
            None => (message, "floe.WorkerFailed"),
        },
    };
    RemoteError::Failed { message, class }
}

fn wire_window(window: &ObjectWindow) -> WireWindow {
    WireWindow {
        from: window.from,
        to: window.to,
        time_column: window.time_column.clone(),
        timezone: window.timezone.name().to_owned(),
    }
}

fn wire_definition(definition: &ObjectDefinition) -> WireDefinition {
    WireDefinition {
        app: definition.app.clone(),
        app_version: definition.app_version,
        kind: definition.kind.to_owned(),
        name: definition.name.clone(),
        from: definition.from,
        to: definition.to,
    }
}

/// `input` as sent: files as their checked paths, rows as Arrow IPC blobs.
fn wire_input(
    input: ResolvedInput<'_>,
    blobs: &mut Vec<Vec<u8>>,
) -> Result<ResolvedWire, ExecError> {
    crate::engine::wire::wire_input(input, blobs).map_err(|e| ExecError::Failed {
        message: e.to_string(),
        class: match e {
            WireError::Rows(_) => "floe.ResultsError",
            WireError::Encode(_) => "floe.JobFailed",
        },
    })
}

/// The worker's side: a context's named objects, and the calls that run against them.
#[derive(Debug)]
pub struct ContextWorker {
    objects: NamedObjects,
    kinds: KindCache,
    /// The last snapshot of the objects sent.
    snapshot: Mutex<u64>,
}

impl ContextWorker {
    /// A worker whose named objects may take `memory_budget` bytes.
    pub fn new(memory_budget: u64) -> ContextWorker {
        ContextWorker {
            objects: NamedObjects::new(memory_budget),
            kinds: KindCache::default(),
            snapshot: Mutex::new(0),
        }
    }

    fn run(
        &self,
        run: RunCall,
        blobs: Vec<Vec<u8>>,
        cancel: &Cancel,
    ) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
        let max_result_bytes = run.max_result_bytes;
        let is_query = matches!(run.kind, WireKind::Query { .. });
        let outcome = cancel.scope(|| self.run_job(run, blobs, cancel));
        let (outcome, blobs) = match outcome.and_then(|frame| {
            // What the server would refuse to store is refused here, before it crosses,
            // measured as the server measures it.
            let size = crate::frames::arrow_size(&frame) as u64;
            if size > max_result_bytes {
                let message = if is_query {
                    // A query's rows cross back whole before they are paged.
                    format!(
                        "the query's result is {} of Arrow, above the {} a query over a context \
                         in a worker process answers (`limits.max_result_bytes`): add a `LIMIT` \
                         or aggregate",
                        human_bytes(size),
                        human_bytes(max_result_bytes)
                    )
                } else {
                    LimitError::ResultBytes {
                        bytes: size,
                        limit: max_result_bytes,
                    }
                    .to_string()
                };
                return Err(ContextError::failed("floe.ResultTooLarge", message));
            }
            let bytes = encode_ipc(&frame)
                .map_err(|e| ContextError::failed("floe.JobFailed", e.to_string()))?;
            Ok(bytes)
        }) {
            Ok(bytes) => (WireOutcome::Finished, vec![bytes]),
            Err(ContextError::Failed { message, class }) => (
                WireOutcome::Failed {
                    message,
                    class: class.to_owned(),
                },
                Vec::new(),
            ),
            Err(ContextError::Stopped) => (WireOutcome::Stopped, Vec::new()),
            Err(ContextError::NeedsBuild { object }) => {
                (WireOutcome::NeedsBuild { object }, Vec::new())
            }
        };
        // Numbered under one lock with the objects read, so a higher number is a later view.
        let (snapshot, objects, used) = {
            let mut last = lock(&self.snapshot);
            *last += 1;
            (*last, self.objects.summaries(), self.objects.used())
        };
        let reply = RunReply {
            outcome,
            objects,
            used,
            snapshot,
        };
        Ok((
            serde_json::to_vec(&reply).map_err(|e| e.to_string())?,
            blobs,
        ))
    }

    fn run_job(
        &self,
        run: RunCall,
        blobs: Vec<Vec<u8>>,
        cancel: &Cancel,
    ) -> Result<DataFrame, ContextError> {
        let bad = |message: String| ContextError::failed("floe.JobFailed", message);
        let definition = serde_json::to_string(&run.kind).map_err(|e| bad(e.to_string()))?;
        let (class, kind): (String, Arc<dyn Job>) = match run.kind {
            WireKind::Builtin { class, params } => {
                let kind = self.kinds.get_or_build(&definition, || {
                    build_builtin(&class, params).map_err(|problems| {
                        bad(format!("class `{class}`: {}", problems.join("; ")))
                    })
                })?;
                (class, kind)
            }
            WireKind::Query { sql } => (
                "sql".to_owned(),
                self.kinds.get_or_build(&definition, || {
                    Sql::new(&sql)
                        .map(|sql| Arc::new(sql) as Arc<dyn Job>)
                        .map_err(|problems| bad(problems.join("; ")))
                })?,
            ),
        };
        let mut inputs = Vec::new();
        for (name, input) in run.inputs {
            inputs.push((name, context_input(input, &blobs).map_err(bad)?));
        }
        let own;
        let objects = match run.own_objects {
            Some(budget) => {
                own = NamedObjects::new(budget);
                &own
            }
            None => &self.objects,
        };
        let job = ContextJob {
            job_id: &run.job_id,
            context: &run.context,
            class: &class,
            kind: kind.as_ref(),
            window: Window {
                start: run.from,
                end: run.to,
            },
            inputs,
            publish: run.publish,
            max_result_bytes: run.max_result_bytes,
            now: run.now,
        };
        run_in_context(objects, job, &|| {
            if cancel.is_cancelled() {
                Err(ContextError::Stopped)
            } else {
                Ok(())
            }
        })
    }
}

impl Handler for ContextWorker {
    fn call(
        &self,
        header: &[u8],
        blobs: Vec<Vec<u8>>,
        cancel: &Cancel,
    ) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
        let run: RunCall =
            serde_json::from_slice(header).map_err(|e| format!("a call Floe cannot read: {e}"))?;
        self.run(run, blobs, cancel)
    }
}

/// A wire input as the context sees it, its blobs decoded.
fn context_input<'a>(input: WireInput, blobs: &[Vec<u8>]) -> Result<ContextInput<'a>, String> {
    Ok(match input {
        WireInput::Object { name, window } => ContextInput::Object {
            name,
            window: window.map(object_window).transpose()?,
        },
        WireInput::Cached {
            object,
            definition,
            build,
        } => ContextInput::Cached {
            object,
            definition: object_definition(definition)?,
            build: match build {
                Some(input) => Build::Given(resolved_input(input, blobs)?),
                None => Build::Absent,
            },
        },
        WireInput::Resolved { resolved } => {
            ContextInput::Resolved(resolved_input(resolved, blobs)?)
        }
    })
}

fn object_window(window: WireWindow) -> Result<ObjectWindow, String> {
    Ok(ObjectWindow {
        from: window.from,
        to: window.to,
        time_column: window.time_column,
        timezone: timezone(&window.timezone)?,
    })
}

fn object_definition(definition: WireDefinition) -> Result<ObjectDefinition, String> {
    let kind = match definition.kind.as_str() {
        "source" => "source",
        "results" => "results",
        other => return Err(format!("unknown object kind `{other}`")),
    };
    Ok(ObjectDefinition {
        app: definition.app,
        app_version: definition.app_version,
        kind,
        name: definition.name,
        from: definition.from,
        to: definition.to,
    })
}
