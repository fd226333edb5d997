//! The server's named contexts: creating them within the limits, listing and deleting them.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};

use serde_json::Value;
use tracing::info;

use crate::store::ContextDefinition;

use super::context::{Context, ContextSettings};
use super::limits::{MAX_CONTEXTS, MAX_WORKER_THREADS};
use super::workers::WorkerRole;
use super::{ContextError, JobServer, StopReason, lock};

/// How long a reset waits at most for the threads of the contexts it stopped to exit before
/// it starts the configured ones again.
const RETIRE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl JobServer {
    /// Creates and persists a context.
    pub fn create_context(
        &self,
        name: &str,
        given: BTreeMap<String, Value>,
    ) -> Result<Arc<Context>, ContextError> {
        self.start_context(name, given, None)
    }

    pub(super) fn start_context(
        &self,
        name: &str,
        given: BTreeMap<String, Value>,
        stored: Option<ContextDefinition>,
    ) -> Result<Arc<Context>, ContextError> {
        let starts_with_letter = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
        if !starts_with_letter {
            return Err(ContextError::NotStartingWithLetter(name.to_owned()));
        }
        if let Err(e) = crate::pipeline::check_name(name) {
            return Err(ContextError::BadName(name.to_owned(), e));
        }
        let settings = ContextSettings::checked(
            &self.settings.context_defaults,
            &given,
            &self.settings.limits,
        )
        .map_err(ContextError::Settings)?;
        let mut contexts = self
            .contexts
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if contexts.contains_key(name) {
            return Err(ContextError::Exists(name.to_owned()));
        }
        // Under the write lock, so two creations cannot both take the last places.
        self.check_room_for_context(&contexts, name, &settings)?;
        let definition = stored.unwrap_or_else(|| ContextDefinition {
            name: name.to_owned(),
            id: uuid::Uuid::now_v7().to_string(),
            start_time: self.clock.now(),
            settings: given.clone(),
        });
        self.settings
            .workers
            .check_context(&settings)
            .map_err(|e| ContextError::Settings(vec![e]))?;
        let worker = if settings.runs_in_worker(&self.settings.workers) {
            let limit = settings.worker_memory_limit(&self.settings.workers);
            let worker = self
                .settings
                .workers
                .worker_for(
                    name,
                    WorkerRole::Context,
                    settings.worker_threads,
                    settings.memory_budget,
                    limit,
                    &self.settings.limits,
                )
                .map_err(|e| ContextError::Settings(vec![e]))?;
            Some(Arc::new(worker))
        } else {
            None
        };
        self.store.put_context(&definition)?;
        let context = Arc::new(Context::start(
            name,
            definition.id.clone(),
            definition.start_time,
            settings,
            given,
            worker.clone(),
        ));
        contexts.insert(name.to_owned(), context.clone());
        // Started now, off the request, so its first job does not wait for it (a job that
        // comes first waits for the start; a start that fails is retried by each job).
        if let Some(worker) = worker {
            let started = std::thread::Builder::new()
                .name("floe-worker-start".to_owned())
                .spawn(move || {
                    if let Err(e) = worker.start() {
                        tracing::warn!(worker = %worker.label(), error = %e, "worker process did not start");
                    }
                });
            if let Err(e) = started {
                tracing::warn!(error = %e, "cannot start a thread to start a worker process");
            }
        }
        info!(context = name, "context started");
        Ok(context)
    }

    /// Refuses a new context beyond `limits.max_contexts`, or one whose threads would take the
    /// server past `limits.max_worker_threads`.
    fn check_room_for_context(
        &self,
        contexts: &BTreeMap<String, Arc<Context>>,
        name: &str,
        settings: &ContextSettings,
    ) -> Result<(), ContextError> {
        let limits = &self.settings.limits;
        if contexts.len() >= limits.max_contexts {
            return Err(ContextError::Limit(format!(
                "cannot create context {name}: {} contexts exist, the limit (`{MAX_CONTEXTS}`); \
                 delete one first",
                contexts.len()
            )));
        }
        let retiring = {
            let mut retiring = lock(&self.retiring);
            retiring.retain(|executor| executor.live_threads() > 0);
            retiring
                .iter()
                .map(|executor| executor.live_threads())
                .sum::<usize>()
        };
        let taken = self.settings.adhoc.worker_threads
            + contexts
                .values()
                .map(|context| context.settings.worker_threads)
                .sum::<usize>()
            + retiring;
        if taken + settings.worker_threads > limits.max_worker_threads {
            let finishing = if retiring > 0 {
                format!(" ({retiring} of them by deleted contexts still finishing a job)")
            } else {
                String::new()
            };
            return Err(ContextError::Limit(format!(
                "cannot create context {name} with {} worker threads: {taken} of the server's \
                 {} are taken{finishing} (`{MAX_WORKER_THREADS}`)",
                settings.worker_threads, limits.max_worker_threads
            )));
        }
        Ok(())
    }

    pub fn context(&self, name: &str) -> Option<Arc<Context>> {
        self.contexts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    pub fn context_names(&self) -> Vec<String> {
        self.contexts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    pub fn contexts(&self) -> Vec<Arc<Context>> {
        self.contexts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// spark-jobserver's `PUT /contexts?reset=reboot`: stops every context (as
    /// [`JobServer::delete_context`] does), then starts the `predefined` ones of the
    /// configuration again. Contexts created over REST are gone afterwards. Returns the names
    /// stopped and started.
    pub fn reset_contexts(
        &self,
        predefined: &BTreeMap<String, BTreeMap<String, Value>>,
    ) -> Result<(Vec<String>, Vec<String>), ContextError> {
        let stopped = self.context_names();
        let mut retired = Vec::new();
        for name in &stopped {
            match self.stop_context(name) {
                Ok(context) => retired.push(context.executor.clone()),
                // Deleted meanwhile by another request: what a reset wants anyway.
                Err(ContextError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        // Their threads count against `limits.max_worker_threads` until they exit: idle ones
        // at once, one finishing a stopped job when the job notices. Starting the configured
        // contexts before then found their places taken by their own previous threads, failed,
        // and left the server without them.
        let deadline = std::time::Instant::now() + RETIRE_WAIT;
        while retired.iter().any(|executor| executor.live_threads() > 0)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut started = Vec::new();
        for (name, settings) in predefined {
            match self.start_context(name, settings.clone(), None) {
                // Created meanwhile, under the same name, by another request.
                Ok(_) | Err(ContextError::Exists(_)) => started.push(name.clone()),
                Err(e) => return Err(e),
            }
        }
        info!(
            stopped = stopped.len(),
            started = started.len(),
            "contexts reset"
        );
        Ok((stopped, started))
    }

    /// Stops a context: its jobs are killed, its named objects freed, its definition deleted.
    pub fn delete_context(&self, name: &str) -> Result<(), ContextError> {
        self.stop_context(name).map(drop)
    }

    /// [`JobServer::delete_context`], returning the context stopped.
    fn stop_context(&self, name: &str) -> Result<Arc<Context>, ContextError> {
        let context = self
            .contexts
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
            .ok_or_else(|| ContextError::NotFound(name.to_owned()))?;
        context.stop();
        // Its threads count against the limit until the last one has returned.
        lock(&self.retiring).push(context.executor.clone());
        let mut jobs_stopped = 0;
        for job in self.live_jobs() {
            if Arc::ptr_eq(&job.context, &context) {
                self.stop_job(&job, StopReason::ContextDeleted);
                jobs_stopped += 1;
            }
        }
        // After its jobs are stopped, so they end KILLED rather than failed by the process's end.
        if let Some(worker) = &context.worker {
            worker.stop(&format!("context {name} was deleted"));
        }
        self.store.delete_context(name)?;
        info!(context = name, jobs_stopped, "context stopped");
        Ok(context)
    }
}
