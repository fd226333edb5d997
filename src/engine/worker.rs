//! Partition runs in worker processes: [`WorkerEngine`] sends a run (its job's definition,
//! its window, its inputs as file paths or Arrow IPC) to a worker of a pool that serves one run
//! at a time and reads the output back as Arrow IPC; [`RunWorker`] is the worker's side, which
//! builds the job again from its definition and runs it on the polars engine.
//!
//! A run over the workers' memory limit, one that crashes its process (a Rust job that
//! aborts), or one whose process is killed fails as a run: the scheduler retries it like any
//! failure, and the other runs, in their own processes, go on.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::run::{Engine, EngineError, PolarsEngine, ResolvedPlan};
use super::wire::{WireInput, resolved_input, wire_input};
use crate::frames::cancel::Cancel;
use crate::frames::{decode_ipc, encode_ipc};
use crate::job::cache::KindCache;
use crate::job::{JobError, JobOutput, JobRegistry};
use crate::partition::{Grain, Window};
use crate::worker::child::Handler;
use crate::worker::{CallError, WorkerPool};

/// A partition run as sent to a worker.
#[derive(Debug, Serialize, Deserialize)]
struct RunCall {
    pipeline: String,
    job: String,
    grain: Grain,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    /// The job's block as YAML (`JobDef::definition_text`), which the worker builds it from.
    definition: String,
    inputs: Vec<(String, WireInput)>,
}

/// A worker's answer: the result is blob 0, the partial state (when there is one) blob 1.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum RunReply {
    Finished { state: bool },
    Failed { message: String },
}

/// Computes partition runs in worker processes, one run per process at a time.
#[derive(Debug)]
pub struct WorkerEngine {
    pool: WorkerPool,
    /// How long a run told to stop may go on before its process is killed.
    kill_grace: Duration,
}

impl WorkerEngine {
    pub fn new(pool: WorkerPool, kill_grace: Duration) -> WorkerEngine {
        WorkerEngine { pool, kill_grace }
    }

    /// The workers runs are sent to.
    pub fn pool(&self) -> &WorkerPool {
        &self.pool
    }
}

impl Engine for WorkerEngine {
    /// The same engine in another process: what it computes is what polars computes here, so
    /// results (and their fingerprints) are the polars engine's.
    fn name(&self) -> &'static str {
        "polars"
    }

    fn execute(&self, plan: ResolvedPlan<'_>) -> Result<JobOutput, EngineError> {
        // Only a job that can be built again elsewhere crosses; the others (a test's, a
        // plan check's) run here.
        let Some(definition) = plan.definition else {
            return PolarsEngine.execute(plan);
        };
        let failed = |message: String| EngineError::Job(JobError::Failed(message));
        let mut blobs = Vec::new();
        let mut inputs = Vec::with_capacity(plan.inputs.len());
        for (name, input) in plan.inputs {
            let input = wire_input(input, &mut blobs)
                .map_err(|e| failed(format!("input `{name}`: {e}")))?;
            inputs.push((name, input));
        }
        let call = RunCall {
            pipeline: plan.pipeline.to_owned(),
            job: plan.job.to_owned(),
            grain: plan.grain,
            from: plan.window.start,
            to: plan.window.end,
            definition: definition.to_owned(),
            inputs,
        };
        let header = serde_json::to_vec(&call).map_err(|e| failed(e.to_string()))?;
        // A run told to stop (its timeout passed, the scheduler stopping) is killed with its
        // process after the grace; so is one whose scope was cancelled.
        let run_stop = plan.stop;
        let stop = || {
            if run_stop.is_some_and(|stop| stop()) {
                return Some(
                    "the run was stopped (its timeout, or the scheduler stopping)".to_owned(),
                );
            }
            crate::frames::cancel::current()
                .filter(Cancel::is_cancelled)
                .map(|cancel| cancel.reason().unwrap_or("stopped").to_owned())
        };
        let answer = self
            .pool
            .with_worker(|worker| worker.call(header, blobs, &stop, Some(self.kill_grace)))
            .map_err(|e| failed(format!("cannot start a worker process: {e}")))?;
        let frame = answer.map_err(|e| {
            failed(match e {
                e @ CallError::Start(_) => e.to_string(),
                CallError::Died(reason) => format!("the run's worker process ended: {reason}"),
                CallError::Failed(message) => match message.strip_prefix("panicked: ") {
                    Some(what) => format!("the job panicked: {what}"),
                    None => message,
                },
            })
        })?;
        let reply: RunReply = serde_json::from_slice(&frame.header).map_err(|e| {
            failed(format!(
                "the worker process answered what Floe cannot read: {e}"
            ))
        })?;
        match reply {
            RunReply::Failed { message } => Err(failed(message)),
            RunReply::Finished { state } => {
                let decode = |index: usize| {
                    frame
                        .blobs
                        .get(index)
                        .ok_or_else(|| {
                            failed("the worker process answered without the result".to_owned())
                        })
                        .and_then(|bytes| decode_ipc(bytes).map_err(|e| failed(e.to_string())))
                };
                Ok(JobOutput {
                    frame: decode(0)?,
                    state: if state { Some(decode(1)?) } else { None },
                })
            }
        }
    }
}

/// The worker's side of partition runs: jobs built from their definitions with `registry`.
#[derive(Debug)]
pub struct RunWorker {
    registry: JobRegistry,
    kinds: KindCache,
}

impl RunWorker {
    pub fn new(registry: JobRegistry) -> RunWorker {
        RunWorker {
            registry,
            kinds: KindCache::default(),
        }
    }

    fn run(&self, call: RunCall, blobs: &[Vec<u8>]) -> Result<JobOutput, String> {
        let kind = self.kinds.get_or_build(&call.definition, || {
            crate::pipeline::job_of_definition(&call.definition, &self.registry)
        })?;
        let mut inputs = std::collections::BTreeMap::new();
        for (name, input) in call.inputs {
            inputs.insert(name, resolved_input(input, blobs)?);
        }
        let plan = ResolvedPlan {
            pipeline: &call.pipeline,
            job: &call.job,
            kind: kind.as_ref(),
            grain: call.grain,
            window: Window {
                start: call.from,
                end: call.to,
            },
            definition: None,
            stop: None,
            inputs,
        };
        PolarsEngine.execute(plan).map_err(|e| e.to_string())
    }
}

impl Handler for RunWorker {
    fn call(
        &self,
        header: &[u8],
        blobs: Vec<Vec<u8>>,
        cancel: &Cancel,
    ) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
        let call: RunCall =
            serde_json::from_slice(header).map_err(|e| format!("a run Floe cannot read: {e}"))?;
        let (reply, blobs) = match cancel.scope(|| self.run(call, &blobs)) {
            Ok(output) => {
                let mut out = vec![encode_ipc(&output.frame).map_err(|e| e.to_string())?];
                if let Some(state) = &output.state {
                    out.push(encode_ipc(state).map_err(|e| e.to_string())?);
                }
                (
                    RunReply::Finished {
                        state: output.state.is_some(),
                    },
                    out,
                )
            }
            Err(message) => (RunReply::Failed { message }, Vec::new()),
        };
        Ok((
            serde_json::to_vec(&reply).map_err(|e| e.to_string())?,
            blobs,
        ))
    }
}
