//! A job's life from submission to its final state: planning, queueing, running on a
//! worker thread, stopping (kill, timeout, context deletion, shutdown) and finalising.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use polars::prelude::*;
use tokio::sync::watch;
use tracing::{info, info_span, warn};

use crate::error::error_chain;
use crate::frames::cancel::Cancel;
use crate::results::runs_spanned;
use crate::store::{JobFailure, JobRecord, JobStatus, StoreError};

use super::callback::JobEnd;
use super::context::{Context, Executor, QueueFull, is_spark_setting};
use super::history::finished_key;
use super::plan::{self, InputSpec, JobPlan, PIPELINE_RUN_CLASS, PlanError};
use super::{
    ExecError, JobServer, KillOutcome, LiveJob, Outcome, StopReason, Submission, SubmitError, lock,
    record_context_label,
};

impl JobServer {
    pub(super) fn live_jobs(&self) -> Vec<Arc<LiveJob>> {
        lock(&self.live).values().cloned().collect()
    }

    pub fn live_job(&self, id: &str) -> Option<Arc<LiveJob>> {
        lock(&self.live).get(id).cloned()
    }

    /// Jobs neither final nor finished: (running, queued), for metrics.
    pub fn live_counts(&self) -> (usize, usize) {
        let live = lock(&self.live);
        let queued = live.values().filter(|j| j.is_queued()).count();
        (live.len() - queued, queued)
    }

    /// Plans, records and queues a job.
    pub fn submit(&self, submission: Submission) -> Result<Arc<LiveJob>, SubmitError> {
        self.submit_as(submission, None)
    }

    /// `resume` re-runs a stored job under its own id (restart recovery).
    pub(super) fn submit_as(
        &self,
        submission: Submission,
        resume: Option<JobRecord>,
    ) -> Result<Arc<LiveJob>, SubmitError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(SubmitError::ShuttingDown);
        }
        let plan = plan::plan(
            &self.catalog,
            submission.app.as_deref(),
            &submission.class_path,
            &submission.config,
        )
        .map_err(|e| match e {
            PlanError::NotFound(message) => SubmitError::NotFound(message),
            PlanError::Invalid(errors) => SubmitError::Invalid(errors),
        })?;
        let config_timeout = plan::job_timeout(&submission.config)
            .map_err(|e| SubmitError::Invalid(vec![e.to_string()]))?;
        let context_settings: std::collections::BTreeMap<String, serde_json::Value> =
            plan::context_settings(&submission.config)
                .map_err(SubmitError::Invalid)?
                .into_iter()
                .collect();
        let plan = self.bound_runs(plan)?;
        self.check_data_files(&plan)?;

        let now = self.clock.now();
        let id = resume
            .as_ref()
            .map_or_else(|| uuid::Uuid::now_v7().to_string(), |r| r.id.clone());
        let context = match &submission.context {
            Some(name) => {
                let context = self
                    .context(name)
                    .ok_or_else(|| SubmitError::ContextNotFound(name.clone()))?;
                // Settings belong to the context, made when it was created: a job's own
                // are refused rather than ignored (spark's are ignored, as everywhere).
                let settable: Vec<&String> = context_settings
                    .keys()
                    .filter(|key| !is_spark_setting(key))
                    .collect();
                if !settable.is_empty() {
                    return Err(SubmitError::Invalid(vec![format!(
                        "`spark.context-settings` ({}) apply to the ad-hoc context a job \
                         creates; context {name} has its own settings, given when it was \
                         created: drop them from the job or run it without `context`",
                        settable
                            .iter()
                            .map(|key| format!("`{key}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )]));
                }
                if context.is_stopping() {
                    return Err(SubmitError::ContextStopping);
                }
                context
            }
            None => {
                let settings = self
                    .settings
                    .adhoc
                    .for_adhoc_job(&context_settings)
                    .map_err(SubmitError::Invalid)?;
                let worker = self
                    .adhoc_worker_for(&id, &settings, &context_settings)
                    .map_err(|e| SubmitError::Invalid(vec![e]))?;
                Arc::new(Context::adhoc(
                    self.adhoc.clone(),
                    &settings,
                    format!("{id}-{}", submission.class_path),
                    now,
                    worker,
                ))
            }
        };
        let reservation = context
            .executor
            .reserve()
            .map_err(|QueueFull { capacity }| {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                SubmitError::QueueFull {
                    context: if context.adhoc {
                        "ad-hoc".to_owned()
                    } else {
                        context.name.clone()
                    },
                    capacity,
                }
            })?;
        // A job may shorten its context's execution timeout, never lengthen it: the context's
        // is the admin's bound on how long a worker thread is held.
        let timeout = plan::effective_job_timeout(context.settings.job_timeout, config_timeout);
        let (app, app_version) = match &plan {
            JobPlan::Pipeline(p) => (Some(p.app.name().to_owned()), Some(p.app.meta.version)),
            JobPlan::Builtin(_) => (
                submission.app.clone(),
                submission
                    .app
                    .as_deref()
                    .and_then(|a| self.catalog.get(a))
                    .map(|a| a.meta.version),
            ),
        };
        let class_path = match &plan {
            JobPlan::Pipeline(p) if p.target.is_none() => PIPELINE_RUN_CLASS.to_owned(),
            _ => submission.class_path.clone(),
        };
        let record = JobRecord {
            id: id.clone(),
            class_path,
            app,
            app_version,
            context: context.name.clone(),
            context_id: context.id.clone(),
            status: JobStatus::Running,
            // A re-run after a restart starts now: its duration is this run's, not the
            // downtime's.
            start_time: now,
            end_time: None,
            failure: None,
            result_rows: None,
            result_bytes: None,
            rerun_on_restart: matches!(plan, JobPlan::Pipeline(_)),
        };
        if resume.is_some() {
            self.store.update_job(&record, None)?;
        } else {
            self.take_stored_job_place()?;
            let config = serde_json::to_vec(&submission.config).unwrap_or_else(|_| b"{}".to_vec());
            if let Err(e) = self.store.insert_job(&record, &config) {
                self.stored_jobs.fetch_sub(1, Ordering::AcqRel);
                return Err(e.into());
            }
        }
        let live = Arc::new(LiveJob {
            id: id.clone(),
            context,
            record: Mutex::new(record),
            stop: AtomicU8::new(StopReason::None as u8),
            queued: AtomicBool::new(true),
            result: Mutex::new(None),
            done: watch::Sender::new(false),
            timeout,
            deadline: Mutex::new(None),
            cancel: Cancel::new(),
            callback: submission.callback.clone(),
        });
        lock(&self.live).insert(id, live.clone());
        // A deletion (or reset) of the context since the check above stopped its threads and
        // looked for its jobs before this one was live: its task, queued behind the threads'
        // stop, would never run, and the job would stay RUNNING. It is stopped with the
        // context instead. (The deletion marks the context stopping before it looks, so one of
        // the two always sees the other.)
        if live.context.is_stopping() {
            self.stop_job(&live, StopReason::ContextDeleted);
        }
        self.counters.submitted.fetch_add(1, Ordering::Relaxed);
        let me = self.me.clone();
        let job = live.clone();
        reservation.submit(Box::new(move || {
            if let Some(server) = me.upgrade() {
                server.run_job(&job, plan);
            }
        }));
        Ok(live)
    }

    /// Holds a materialisation to what may run: partitions that have ended (the range stops
    /// at now), at most `limits.max_run_partitions` runs.
    fn bound_runs(&self, plan: JobPlan) -> Result<JobPlan, SubmitError> {
        let JobPlan::Pipeline(mut run) = plan else {
            return Ok(plan);
        };
        let now = self.clock.now();
        run.to = run.to.min(now);
        if run.from >= run.to {
            return Err(SubmitError::Invalid(vec![format!(
                "the range starts at {}, after now ({}): a partition runs once it has ended",
                run.from.to_rfc3339(),
                now.to_rfc3339()
            )]));
        }
        let runs = runs_spanned(&run.app.pipeline, run.jobs.as_deref(), run.from, run.to);
        self.settings
            .limits
            .check_run_partitions(runs, "the run")
            .map_err(|e| SubmitError::Invalid(vec![e.to_string()]))?;
        Ok(JobPlan::Pipeline(run))
    }

    /// Refuses a built-in job whose data file inputs (`input { data }`) are not files of the
    /// data-files directory now, naming each; they are resolved again when the job runs.
    fn check_data_files(&self, plan: &JobPlan) -> Result<(), SubmitError> {
        let JobPlan::Builtin(plan) = plan else {
            return Ok(());
        };
        let problems: Vec<String> = plan
            .inputs
            .iter()
            .filter_map(|(name, spec)| match spec {
                InputSpec::Data { file, format } => self
                    .materializer
                    .inputs()
                    .data_file(file, *format)
                    .err()
                    .map(|e| format!("input `{name}`: {e}")),
                _ => None,
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SubmitError::Invalid(problems))
        }
    }

    /// Runs on a worker thread.
    fn run_job(&self, live: &Arc<LiveJob>, plan: JobPlan) {
        live.queued.store(false, Ordering::Release);
        if live.stop_reason() != StopReason::None {
            return; // Killed while queued: already final.
        }
        let span = info_span!("job", job_id = %live.id, class = %lock(&live.record).class_path);
        let _entered = span.enter();
        if let (Some(timeout), Some(timeouts)) = (live.timeout, &self.timeouts) {
            let key = timeouts.insert(Instant::now() + timeout, Arc::downgrade(live));
            *lock(&live.deadline) = Some(key);
            // A stop that came first finalised the job without seeing the deadline.
            if live.stop_reason() != StopReason::None {
                timeouts.remove(key);
            }
        }
        // Built-in classes run cancellably and, in this process, count against the server's
        // memory limit (one in a worker process counts only while the server reads its
        // inputs: `execute_remote`; its worker's own limit watches the rest); a
        // materialisation's runs stop at their own safe points and commit or fail as runs.
        let _tracked = (matches!(plan, JobPlan::Builtin(_)) && !self.runs_remotely(&live.context))
            .then(|| self.memory.track(&live.cancel, format!("job {}", live.id)));
        let execute = || match &plan {
            JobPlan::Builtin(_) => live.cancel.scope(|| self.execute(live, &plan)),
            JobPlan::Pipeline(_) => self.execute(live, &plan),
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(execute));
        let outcome = match result {
            Ok(Ok(frame)) => Outcome::Finished(frame),
            // Whoever asked for the stop finalises the job.
            Ok(Err(ExecError::Stopped)) if live.stop_reason() != StopReason::None => return,
            // A stop nobody asked for (the memory watchdog's cancel seen at a safe point) must
            // still end the job, never leave it RUNNING.
            Ok(Err(ExecError::Stopped)) => Outcome::Failed(JobFailure {
                message: live.cancel.reason().unwrap_or("stopped").to_owned(),
                error_class: "floe.MemoryLimit".to_owned(),
                stack: String::new(),
            }),
            // Cancelled without a stop request: the memory watchdog stopped it.
            Ok(Err(ExecError::Failed { .. }))
                if live.cancel.is_cancelled() && live.stop_reason() == StopReason::None =>
            {
                Outcome::Failed(JobFailure {
                    message: live.cancel.reason().unwrap_or("cancelled").to_owned(),
                    error_class: "floe.MemoryLimit".to_owned(),
                    stack: String::new(),
                })
            }
            Ok(Err(ExecError::Failed { message, class })) => Outcome::Failed(JobFailure {
                message,
                error_class: class.to_owned(),
                stack: String::new(),
            }),
            Err(panic) => {
                let what = crate::error::panic_message(panic.as_ref());
                Outcome::Failed(JobFailure {
                    message: format!("the job panicked: {what}"),
                    error_class: "floe.JobPanicked".to_owned(),
                    stack: String::new(),
                })
            }
        };
        self.finalize(live, outcome);
    }

    /// Requests a stop and finalises the job now; the worker discards whatever it computes.
    pub(super) fn stop_job(&self, live: &LiveJob, reason: StopReason) {
        if live
            .stop
            .compare_exchange(
                StopReason::None as u8,
                reason as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return;
        }
        let outcome = match reason {
            StopReason::TimedOut => {
                let limit = live.timeout.unwrap_or_default();
                Outcome::Failed(JobFailure {
                    message: format!(
                        "job timed out after {} (its execution timeout)",
                        humantime::format_duration(limit)
                    ),
                    error_class: "floe.JobTimeout".to_owned(),
                    stack: String::new(),
                })
            }
            StopReason::ContextDeleted => {
                Outcome::Killed(format!("context {} was deleted", live.context.name))
            }
            StopReason::Shutdown => Outcome::Failed(JobFailure {
                message: "server shut down before the job finished".to_owned(),
                error_class: "floe.ServerShutdown".to_owned(),
                stack: String::new(),
            }),
            StopReason::Killed | StopReason::None => {
                Outcome::Killed("killed by request".to_owned())
            }
        };
        let why = match &outcome {
            Outcome::Failed(failure) => failure.message.clone(),
            Outcome::Killed(message) => message.clone(),
            Outcome::Finished(_) => String::new(),
        };
        // The worker's polars work stops at its next check; the job is final already.
        live.cancel.cancel(why);
        // A job in a worker process: its waiting thread sees the cancel, stops the call there
        // and kills the process if the computation goes on past `workers.kill_grace`.
        self.finalize(live, outcome);
    }

    /// Moves a job to its final state, once; later calls do nothing.
    fn finalize(&self, live: &LiveJob, outcome: Outcome) {
        let mut record = lock(&live.record);
        if record.status.is_final() {
            return;
        }
        record.end_time = Some(self.clock.now());
        let mut frame = None;
        // Bytes of the result stored for this job, counted in `result_bytes` from now on.
        let mut stored_bytes = 0;
        match outcome {
            Outcome::Finished(result) => match self.store_result(&live.id, &result) {
                Ok(bytes) => {
                    record.status = JobStatus::Finished;
                    record.result_rows = Some(result.height() as u64);
                    record.result_bytes = Some(bytes);
                    stored_bytes = bytes;
                    frame = Some(result);
                }
                Err(failure) => {
                    record.status = JobStatus::Error;
                    record.failure = Some(failure);
                }
            },
            Outcome::Failed(failure) => {
                record.status = JobStatus::Error;
                record.failure = Some(failure);
            }
            Outcome::Killed(message) => {
                record.status = JobStatus::Killed;
                record.failure = Some(JobFailure {
                    message,
                    error_class: "floe.JobKilled".to_owned(),
                    stack: String::new(),
                });
            }
        }
        if let Err(e) = self.store.update_job(&record, None) {
            warn!(job_id = %live.id, error = %error_chain(&e), "cannot store the job's final state");
            record.status = JobStatus::Error;
            record.result_rows = None;
            record.failure = Some(JobFailure {
                message: format!("cannot store the result: {}", error_chain(&e)),
                error_class: "floe.StoreError".to_owned(),
                stack: String::new(),
            });
            frame = None;
            // A result already stored stays counted (`result_bytes` of the record) until the
            // job is deleted with it.
            let _ = self.store.update_job(&record, None);
        }
        let status = record.status;
        lock(&self.finished).insert(finished_key(&record), stored_bytes);
        // What the callback posts; a KILLED job posts nothing (spark-jobserver posts nothing
        // for a kill or a context deletion either).
        let callback_end = match (&live.callback, status, &frame) {
            (Some(_), JobStatus::Finished, Some(frame)) => Some(JobEnd::Finished(frame.clone())),
            (Some(_), JobStatus::Error, _) => record.failure.clone().map(JobEnd::Failed),
            _ => None,
        };
        drop(record);
        *lock(&live.result) = frame;
        match status {
            JobStatus::Finished => &self.counters.finished,
            JobStatus::Killed => &self.counters.killed,
            _ => &self.counters.error,
        }
        .fetch_add(1, Ordering::Relaxed);
        if let (Some(key), Some(timeouts)) = (lock(&live.deadline).take(), &self.timeouts) {
            timeouts.remove(key);
        }
        if live.context.adhoc {
            live.context.objects.clear();
        }
        lock(&self.live).remove(&live.id);
        live.done.send_replace(true);
        // After the sync answer is released: the body is built here, on the finalising thread.
        if let (Some(url), Some(end)) = (&live.callback, &callback_end) {
            self.callbacks.job_ended(&live.id, url, end);
        }
        self.maybe_sweep();
    }

    /// Kills a job (`DELETE /jobs/{id}`).
    pub fn kill(&self, id: &str) -> Result<KillOutcome, StoreError> {
        if let Some(live) = self.live_job(id) {
            self.stop_job(&live, StopReason::Killed);
            let record = live.record();
            return Ok(match record.status {
                JobStatus::Killed => {
                    info!(job_id = %id, context = %record_context_label(&record), "job killed");
                    KillOutcome::Killed
                }
                JobStatus::Error => KillOutcome::AlreadyFailed(record.failure),
                _ => KillOutcome::NotRunning,
            });
        }
        Ok(match self.store.job(id)? {
            None => KillOutcome::NotFound,
            Some(record) if record.status == JobStatus::Error => {
                KillOutcome::AlreadyFailed(record.failure)
            }
            Some(_) => KillOutcome::NotRunning,
        })
    }

    /// Refuses new jobs, waits up to `grace` for running ones, then records the rest as
    /// ERROR "server shut down" so none is left RUNNING, and flushes the store.
    pub fn shutdown(&self, grace: Duration) {
        self.shutting_down.store(true, Ordering::Release);
        let deadline = std::time::Instant::now() + grace;
        while !lock(&self.live).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for job in self.live_jobs() {
            self.stop_job(&job, StopReason::Shutdown);
        }
        // Every job is final now; wait out what is left of the grace for worker threads still
        // inside a polars computation, so their discarded work ends before the store flush.
        let executors: Vec<Arc<Executor>> = self
            .contexts()
            .iter()
            .map(|context| {
                context.stop();
                context.executor.clone()
            })
            .chain([self.adhoc.clone()])
            .collect();
        self.adhoc.stop();
        for executor in executors {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !executor.join(left) {
                warn!("a worker thread was still computing at shutdown; its result is discarded");
            }
        }
        if let Err(e) = self.store.flush() {
            warn!(error = %error_chain(&e), "cannot flush the store at shutdown");
        }
        // Callbacks of the jobs that ended (the shutdown's ERRORs included) get what is left of
        // the grace; deliveries live in memory only.
        let left = self.callbacks.wait_idle(deadline);
        if left > 0 {
            warn!(
                pending = left,
                "callback deliveries still pending at shutdown are dropped"
            );
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    fn execute(&self, live: &LiveJob, plan: &JobPlan) -> Result<DataFrame, ExecError> {
        match plan {
            JobPlan::Pipeline(plan) => self.execute_pipeline(live, plan),
            JobPlan::Builtin(plan) => self.execute_builtin(live, plan),
        }
    }

    /// Ids of jobs not yet final that run against `app` (what blocks deleting it).
    pub fn jobs_using_app(&self, app: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .live_jobs()
            .iter()
            .filter(|job| job.record().app.as_deref() == Some(app))
            .map(|job| job.id.clone())
            .collect();
        ids.sort();
        ids
    }
}
