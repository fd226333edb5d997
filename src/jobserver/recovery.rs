//! Start-up: stored apps, the pipelines folder and contexts are loaded again, and jobs a
//! previous process left RUNNING are re-run or ended.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::catalog::FolderError;
use crate::error::error_chain;
use crate::store::{JobFailure, JobRecord, JobStatus, StoreError};

use super::history::{FinishedJobs, finished_key};
use super::{ContextError, JobServer, Submission, SubmitError, lock};

/// How often a running server records that it is alive (see
/// [`JobServer::resolve_interrupted_jobs`]): the error in an interrupted job's end time.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the job server could not come back up.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("stored apps: {}", error_chain(.0))]
    StoredApps(#[source] StoreError),
    #[error(transparent)]
    Folder(#[from] FolderError),
    #[error("predefined context {name}: {source}")]
    Context {
        name: String,
        #[source]
        source: ContextError,
    },
    #[error("{}", error_chain(.0))]
    Store(#[from] StoreError),
}

/// Why an interrupted job could not be run again (it then ends in ERROR).
#[derive(Debug, thiserror::Error)]
enum RerunError {
    #[error("no stored config")]
    NoConfig,
    #[error("stored config is unreadable: {0}")]
    Config(#[from] serde_json::Error),
    #[error("server gone")]
    ServerGone,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
}

impl JobServer {
    /// Loads stored apps, registers the pipelines folder's files as apps, and recreates stored
    /// and predefined contexts. Jobs a previous process left RUNNING are resolved afterwards,
    /// by [`JobServer::resolve_interrupted_jobs`].
    pub fn recover(
        &self,
        folder: Vec<(crate::pipeline::Pipeline, String)>,
        predefined: &BTreeMap<String, BTreeMap<String, Value>>,
    ) -> Result<(), RecoveryError> {
        let from_folder = folder
            .iter()
            .map(|(pipeline, _)| pipeline.name.clone())
            .collect();
        self.catalog
            .load_stored(&self.store, &self.registry, &from_folder)
            .map_err(RecoveryError::StoredApps)?;
        self.catalog
            .register_folder(&self.store, folder, self.clock.now())?;
        // The configuration's contexts first: the limits were checked against them, and
        // contexts created over REST by an earlier run must not take their places.
        for (name, settings) in predefined {
            self.start_context(name, settings.clone(), None)
                .map_err(|source| RecoveryError::Context {
                    name: name.clone(),
                    source,
                })?;
        }
        let stored = self.store.context_definitions()?;
        for definition in stored {
            if predefined.contains_key(&definition.name) {
                continue;
            }
            let (name, settings) = (definition.name.clone(), definition.settings.clone());
            if let Err(e) = self.start_context(&name, settings, Some(definition)) {
                warn!(context = %name, error = %e, "stored context not restarted");
            }
        }
        Ok(())
    }

    /// Resolves every job a previous process left RUNNING: a materialisation runs again, any
    /// other job ends in ERROR. Call it only once the scheduler has requeued the runs that
    /// process left Running: that recovery takes every Running run for an interrupted one, so
    /// a re-run started before it would find its runs requeued under it.
    ///
    /// Then the heartbeat starts: every [`HEARTBEAT`] the store records that the server is
    /// alive, so that after a crash a job it left running is reported as ending when the
    /// server stopped, not when it came back (its `duration` would hold the downtime).
    pub fn resolve_interrupted_jobs(&self) -> Result<(), RecoveryError> {
        self.resolve_interrupted_jobs_in_store()?;
        self.start_heartbeat();
        Ok(())
    }

    fn start_heartbeat(&self) {
        let me = self.me.clone();
        self.runtime.spawn(async move {
            let mut ticks = tokio::time::interval(HEARTBEAT);
            loop {
                ticks.tick().await;
                let Some(server) = me.upgrade() else { return };
                let beat = tokio::task::spawn_blocking(move || {
                    server.store.mark_alive(server.clock.now())
                });
                if let Ok(Err(e)) = beat.await {
                    warn!(error = %e, "cannot record the server's heartbeat");
                }
            }
        });
    }

    fn resolve_interrupted_jobs_in_store(&self) -> Result<(), StoreError> {
        // When the previous process was last known alive: its running jobs stopped then.
        let stopped_at = self.store.last_alive()?;
        let mut interrupted = Vec::new();
        let mut count = 0;
        let mut finished = FinishedJobs::new();
        let mut result_bytes = 0u64;
        for record in self.store.jobs_oldest_first() {
            let mut record = record?;
            count += 1;
            if !record.status.is_final() {
                interrupted.push(record);
                continue;
            }
            // Records written before Floe kept the size have their stored result measured
            // once (a sled value's length, a file's), and keep it from now on.
            let stored_bytes = if record.status != JobStatus::Finished {
                record.result_bytes
            } else if record.result_bytes.is_some() {
                if self.store.job_result_exists(&record.id)? {
                    record.result_bytes
                } else {
                    None
                }
            } else {
                let measured = self.store.job_result_bytes(&record.id)?;
                if measured.is_some() {
                    record.result_bytes = measured;
                    self.store.update_job(&record, None)?;
                }
                measured
            };
            let bytes = stored_bytes.unwrap_or(0);
            result_bytes = result_bytes.saturating_add(bytes);
            finished.insert(finished_key(&record), bytes);
            if record.status == JobStatus::Finished && stored_bytes.is_none() {
                // Writes are ordered so this cannot happen; if a damaged store says
                // otherwise, the job says so instead of answering "result missing" forever.
                record.status = JobStatus::Error;
                record.result_rows = None;
                record.result_bytes = None;
                record.failure = Some(JobFailure {
                    message: "the job's stored result was lost".to_owned(),
                    error_class: "floe.ResultLost".to_owned(),
                    stack: String::new(),
                });
                self.store.update_job(&record, None)?;
                warn!(job_id = %record.id, "finished job without a stored result marked ERROR");
            }
        }
        self.stored_jobs.store(count, Ordering::Release);
        self.result_bytes.store(result_bytes, Ordering::Release);
        lock(&self.finished).append(&mut finished);
        for mut record in interrupted {
            if record.rerun_on_restart && self.rerun(&record).is_ok() {
                info!(job_id = %record.id, "re-running a materialisation interrupted by a restart");
                continue;
            }
            record.status = JobStatus::Error;
            let now = self.clock.now();
            // Never before the job started (`clamp` would panic on a clock gone backwards).
            let end = stopped_at
                .map_or(now, |at| at.min(now))
                .max(record.start_time);
            record.end_time = Some(end);
            record.failure = Some(JobFailure {
                message: "server restarted before the job finished".to_owned(),
                error_class: "floe.ServerRestarted".to_owned(),
                stack: String::new(),
            });
            self.store.update_job(&record, None)?;
            lock(&self.finished).insert(finished_key(&record), 0);
            info!(job_id = %record.id, "job interrupted by a restart marked ERROR");
        }
        self.maybe_sweep();
        Ok(())
    }

    fn rerun(&self, record: &JobRecord) -> Result<(), RerunError> {
        let config = self
            .store
            .job_config(&record.id)?
            .ok_or(RerunError::NoConfig)?;
        let config: Map<String, Value> = serde_json::from_slice(&config)?;
        let submission = Submission {
            app: record.app.clone(),
            class_path: record.class_path.clone(),
            context: (!record.context.is_empty()).then(|| record.context.clone()),
            config,
            // Not stored with the job: a re-run after a restart posts no callback.
            callback: None,
        };
        let this = self.me.upgrade().ok_or(RerunError::ServerGone)?;
        this.submit_as(submission, Some(record.clone()))?;
        Ok(())
    }
}
