//! Where a context runs: in the server's process, or in a worker process of its own (the
//! default under `floe serve`). The server's `workers:` settings, the worker of a context
//! (how it is started and watched), and `floe worker`, the entry point of the worker process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::ADHOC_CONTEXT;
use super::context::ContextSettings;
use super::limits::Limits;
use super::remote::ContextWorker;
use crate::engine::worker::RunWorker;
use crate::frames::memory::human_bytes;
use crate::job::JobRegistry;
use crate::worker::WorkerPool;
use crate::worker::{Supervision, Worker, WorkerCommand};

/// The default resident memory limit of one worker process: 4 GiB.
pub const DEFAULT_WORKER_MEMORY_LIMIT: u64 = 4 << 30;

/// This process's own executable on Linux, there even when its file was replaced.
const SELF_EXE: &str = "/proc/self/exe";

/// Set in a worker's environment to its server's pid.
pub const WORKER_PARENT_ENV: &str = "FLOE_WORKER_PARENT";

/// The least `memory-limit` a context may set: a worker process takes tens of MiB before its
/// first job (an unoptimised build about 100 MiB).
pub const MIN_WORKER_MEMORY_LIMIT: u64 = 128 << 20;

/// The first argument after `worker` that says the process was started by a Floe server:
/// anything else that runs the binary with `worker` by hand is refused.
pub const WORKER_PROTOCOL: &str = "--protocol=floe-worker-1";

/// The server's `workers:` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSettings {
    /// Whether a context runs in a worker process unless its `process` setting says
    /// otherwise. The server's default; embedders of the library start in-process.
    pub enabled: bool,
    /// Whether a client may create a context with `process = in-process` (out of reach of
    /// the worker's memory limit and kills): the operator's choice, off by default.
    pub allow_in_process: bool,
    /// Whether the scheduler's partition runs compute in worker processes too (with
    /// `enabled`): isolation for each run, for about a third of a millisecond per run.
    pub runs: bool,
    /// The program a worker is started from: Floe's own binary. `None`: this executable.
    pub executable: Option<PathBuf>,
    /// The resident memory past which a worker process is killed; a context may set a lower
    /// `memory-limit`, never a higher one.
    pub memory_limit: u64,
    /// How long a stopped job's call may go on before its worker process is killed.
    pub kill_grace: Duration,
    /// How often a worker is health-checked, and how long it may take to answer.
    pub health_interval: Duration,
    pub health_timeout: Duration,
    /// How long a new worker may take to start.
    pub start_timeout: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            enabled: false,
            allow_in_process: false,
            runs: true,
            executable: None,
            memory_limit: DEFAULT_WORKER_MEMORY_LIMIT,
            kill_grace: Duration::from_millis(250),
            health_interval: Duration::from_secs(5),
            health_timeout: Duration::from_secs(10),
            start_timeout: Duration::from_secs(10),
        }
    }
}

/// Where a context's jobs and named objects live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessMode {
    /// In the server's process: no process boundary; a job that runs out of memory or aborts
    /// takes the server down.
    InProcess,
    /// In a worker process of its own, killed and replaced when a job goes over its memory
    /// limit, crashes or must be stopped at once.
    Worker,
}

impl ProcessMode {
    pub fn parse(text: &str) -> Option<ProcessMode> {
        match text.trim().to_ascii_lowercase().as_str() {
            "worker" => Some(ProcessMode::Worker),
            "in-process" => Some(ProcessMode::InProcess),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProcessMode::InProcess => "in-process",
            ProcessMode::Worker => "worker",
        }
    }
}

impl WorkerSettings {
    /// A worker (not started yet): of a context named `label` (threads: its worker threads;
    /// objects: its memory budget), or, for [`WorkerRole::Runs`], of partition runs.
    pub fn worker_for(
        &self,
        label: &str,
        role: WorkerRole,
        threads: usize,
        memory_budget: u64,
        memory_limit: u64,
        limits: &super::limits::Limits,
    ) -> Result<Worker, String> {
        let program = self.program()?;
        let mut args = vec![
            "worker".to_owned(),
            WORKER_PROTOCOL.to_owned(),
            // Its jobs, plus the `/query`s that may run against a context at once, plus a few
            // racing a kill.
            format!(
                "--max-calls={}",
                threads + limits.max_concurrent_queries + 4
            ),
            format!("--memory-budget={memory_budget}"),
            // Process-wide in the worker as in the server.
            format!("--max-join-rows={}", limits.max_join_rows),
        ];
        if role == WorkerRole::Runs {
            args.push("--runs".to_owned());
        }
        Ok(Worker::new(
            match role {
                WorkerRole::Context => format!("context {label}"),
                WorkerRole::Runs => label.to_owned(),
            },
            WorkerCommand {
                program,
                env: vec![(WORKER_PARENT_ENV.to_owned(), std::process::id().to_string())],
                args,
            },
            Supervision {
                memory_limit: Some(memory_limit),
                health_interval: self.health_interval,
                health_timeout: self.health_timeout,
                start_timeout: self.start_timeout,
                // A context's result over `limits.max_result_bytes` is refused in the worker; a
                // run's result has no such bound, but cannot be larger than the process holds.
                // The frame also carries its header and IPC framing.
                max_reply_bytes: match role {
                    WorkerRole::Context => limits.max_result_bytes,
                    WorkerRole::Runs => memory_limit,
                }
                .saturating_mul(2)
                .saturating_add(64 << 20),
            },
        ))
    }

    /// The program workers start from; an error when this process may not start workers.
    pub fn program(&self) -> Result<PathBuf, String> {
        // A process that is itself a worker never starts workers: a binary that embeds the
        // server and does not answer `worker` would otherwise start itself again and again.
        if std::env::var_os(WORKER_PARENT_ENV).is_some() {
            return Err(format!(
                "this process was started as a worker process ({WORKER_PARENT_ENV} is set) and \
                 starts none of its own: `workers.executable` must be Floe's binary, or a binary \
                 that calls `floe::cli::run_as_worker_if_asked` first"
            ));
        }
        match &self.executable {
            Some(path) => Ok(path.clone()),
            // The very binary the server runs, even once an upgrade replaced its file: its
            // workers speak its protocol.
            None if std::path::Path::new(SELF_EXE).exists() => Ok(PathBuf::from(SELF_EXE)),
            None => std::env::current_exe()
                .map_err(|e| format!("cannot find Floe's own executable to start workers: {e}")),
        }
    }

    /// Refuses settings of a context that this server's policy does not allow: `process =
    /// in-process` unless `allow_in_process`, `process = worker` with workers off, a
    /// `memory-limit` for a context that does not run in a worker. Each names its setting.
    pub fn check_context(&self, settings: &ContextSettings) -> Result<(), String> {
        match settings.process {
            Some(ProcessMode::InProcess) if self.enabled && !self.allow_in_process => {
                return Err(
                    "setting `process`: `in-process` is not allowed on this server: \
                            contexts run in worker processes (`workers.allow_in_process`)"
                        .to_owned(),
                );
            }
            Some(ProcessMode::Worker) if !self.enabled => {
                return Err(
                    "setting `process`: worker processes are off on this server \
                            (`workers.enabled`)"
                        .to_owned(),
                );
            }
            _ => {}
        }
        if settings.runs_in_worker(self) {
            let limit = settings.worker_memory_limit(self);
            self.check_memory_limit(limit)?;
            if settings.memory_budget > limit {
                return Err(format!(
                    "setting `memory-budget`: {} is above the context's `memory-limit` of {}: \
                     its named objects could never fit; lower `memory-budget` too",
                    human_bytes(settings.memory_budget),
                    human_bytes(limit)
                ));
            }
        }
        if settings.memory_limit.is_some() && !settings.runs_in_worker(self) {
            return Err(
                "setting `memory-limit` applies to a context in a worker process \
                        (`process = worker`)"
                    .to_owned(),
            );
        }
        Ok(())
    }

    /// Refuses a context `memory-limit` above the server's, or below what a worker process
    /// needs to start ([`MIN_WORKER_MEMORY_LIMIT`]).
    pub fn check_memory_limit(&self, asked: u64) -> Result<(), String> {
        if asked < MIN_WORKER_MEMORY_LIMIT {
            return Err(format!(
                "setting `memory-limit`: {} is below the {} a worker process needs to start",
                human_bytes(asked),
                human_bytes(MIN_WORKER_MEMORY_LIMIT)
            ));
        }
        if asked > self.memory_limit {
            Err(format!(
                "setting `memory-limit`: {} is above the server's limit of {} per worker \
                 process (`workers.memory_limit`)",
                human_bytes(asked),
                human_bytes(self.memory_limit)
            ))
        } else {
            Ok(())
        }
    }
}

/// What a worker process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerRole {
    /// A context's jobs and `/query`s, over its named objects.
    Context,
    /// Partition runs of the scheduler, one at a time, their jobs built with the registry.
    Runs,
}

/// `floe worker`: serves calls on stdin and stdout until stdin closes. `args` are what
/// [`WorkerSettings::worker_for`] passed; `registry` holds the binary's Rust job classes,
/// which partition runs may use.
pub fn run_worker(args: &[String], registry: &JobRegistry) -> Result<(), String> {
    let mut args = args.iter();
    if args.next().map(String::as_str) != Some(WORKER_PROTOCOL) {
        return Err(format!(
            "`floe worker` is started by `floe serve` for its contexts, not by hand (its first \
             argument must be `{WORKER_PROTOCOL}`)"
        ));
    }
    let mut max_calls = 1;
    let mut memory_budget = 2 << 30;
    let mut role = WorkerRole::Context;
    for arg in args {
        let number = |prefix: &str| -> Result<Option<u64>, String> {
            arg.strip_prefix(prefix)
                .map(|n| n.parse().map_err(|_| format!("bad argument `{arg}`")))
                .transpose()
        };
        if arg == "--runs" {
            role = WorkerRole::Runs;
        } else if let Some(n) = number("--max-calls=")? {
            max_calls = usize::try_from(n).map_err(|_| format!("bad argument `{arg}`"))?;
        } else if let Some(n) = number("--memory-budget=")? {
            memory_budget = n;
        } else if let Some(n) = number("--max-join-rows=")? {
            crate::sql_guard::set_max_join_rows(n);
        } else {
            return Err(format!("unknown argument `{arg}`"));
        }
    }
    let handler: Arc<dyn crate::worker::child::Handler> = match role {
        WorkerRole::Context => Arc::new(ContextWorker::new(memory_budget)),
        WorkerRole::Runs => Arc::new(RunWorker::new(registry.clone())),
    };
    crate::worker::child::serve(handler, max_calls)
        .map_err(|e| format!("the worker's pipe to its server failed: {e}"))
}

/// The pool ad-hoc jobs run in: one job per process at a time, so a job's memory limit, its
/// kill or its crash is its own and no other client's; at most one idle process per ad-hoc
/// thread is kept warm (the ad-hoc executor's admission bounds how many run at once).
pub fn adhoc_pool(
    settings: &WorkerSettings,
    adhoc: &ContextSettings,
    limits: &Limits,
) -> Result<WorkerPool, String> {
    let memory_limit = adhoc.worker_memory_limit(settings);
    settings.check_memory_limit(memory_limit)?;
    let (settings, limits, budget) = (settings.clone(), limits.clone(), adhoc.memory_budget);
    WorkerPool::new(
        adhoc.worker_threads,
        Box::new(move || {
            settings.worker_for(
                ADHOC_CONTEXT,
                WorkerRole::Context,
                1,
                budget,
                memory_limit,
                &limits,
            )
        }),
    )
}

/// The pool partition runs compute in: one run per process at a time (a run over
/// `workers.memory_limit`, or one that crashes, fails alone and is retried as any failure);
/// at most `keep` idle processes (the scheduler's workers) are kept warm.
pub fn runs_pool(
    settings: &WorkerSettings,
    keep: usize,
    limits: &Limits,
) -> Result<WorkerPool, String> {
    let (settings, limits) = (settings.clone(), limits.clone());
    WorkerPool::new(
        keep,
        Box::new(move || {
            settings.worker_for(
                "partition runs",
                WorkerRole::Runs,
                1,
                0,
                settings.memory_limit,
                &limits,
            )
        }),
    )
}

impl super::JobServer {
    /// The worker process of its own an ad-hoc job runs in when it sets its own
    /// `memory-limit` (`spark.context-settings`), limited to it; `None` for the others, which
    /// run in the ad-hoc pool ([`AdhocWorkers`]) or in-process. A limit above
    /// `workers.memory_limit`, or one for a server whose ad-hoc jobs run in-process, is
    /// refused, naming the setting.
    pub(super) fn adhoc_worker_for(
        &self,
        job_id: &str,
        settings: &ContextSettings,
        given: &std::collections::BTreeMap<String, serde_json::Value>,
    ) -> Result<Option<Arc<Worker>>, String> {
        if !given.contains_key("memory-limit") {
            return Ok(None);
        }
        if !settings.runs_in_worker(&self.settings.workers) {
            return Err(
                "setting `memory-limit` applies to a job in a worker process; ad-hoc jobs \
                 run in the server's process here (`workers.enabled`)"
                    .to_owned(),
            );
        }
        let limit = settings.worker_memory_limit(&self.settings.workers);
        self.settings.workers.check_memory_limit(limit)?;
        self.settings
            .workers
            .worker_for(
                &format!("of ad-hoc job {job_id}"),
                WorkerRole::Context,
                1,
                // Its objects live for the job: they fit its limit or nothing does.
                settings.memory_budget.min(limit),
                limit,
                &self.settings.limits,
            )
            .map(|worker| Some(Arc::new(worker)))
    }
}
