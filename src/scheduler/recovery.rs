//! Recovery at start-up (runs a crash left Running re-queued, active runs tracked again,
//! live backfills resumed) and introspection (the summary, each job's schedule, idleness).
//! Part of the [`Scheduler`].

use super::*;

impl Scheduler {
    // ---- recovery and introspection --------------------------------------------------

    /// Re-queues runs a crash left Running, then (when the configuration says `resume`)
    /// tracks every active run again and resumes live backfills.
    pub(super) fn recover(&self) -> Result<(), SchedulerError> {
        let store = &self.inner.store;
        let now = self.inner.clock.now();
        let (requeued, mut active) = store.recover_runs(now)?;
        if !self.inner.config.resume {
            // Left Pending in the store for the next scheduler that resumes; this one's
            // requests re-queue the runs they need.
            return Ok(());
        }
        let mut state = lock(&self.inner.state);
        // Upstream runs first, so dependents find them tracked.
        let position = |state: &State, key: &RunKey| {
            state
                .pipelines
                .get(&key.pipeline)
                .and_then(|p| p.dag.topological_order().iter().position(|j| *j == key.job))
                .unwrap_or(usize::MAX)
        };
        active.sort_by_cached_key(|(key, _)| {
            (
                key.pipeline.clone(),
                position(&state, key),
                key.partition_start,
            )
        });
        let mut tracked = 0;
        for (key, record) in active {
            let Some(pipeline) = state.pipelines.get(&key.pipeline).cloned() else {
                continue;
            };
            let Some(def) = pipeline.job(&key.job) else {
                continue;
            };
            let window = Window {
                start: key.partition_start,
                end: record.partition_end,
            };
            self.track(
                &mut state,
                &pipeline,
                def,
                key.clone(),
                window,
                record.force,
                None,
            );
            if let Some(t) = state.runs.get_mut(&key) {
                t.failures = record.failures;
                t.waiting_since = record.waiting_since;
            }
            if let Some(at) = record.retry_at
                && state
                    .runs
                    .get(&key)
                    .is_some_and(|t| t.phase != Phase::UpstreamFailed)
            {
                Self::delay(&mut state, &key, at);
            }
            tracked += 1;
        }
        drop(state);
        for record in store.backfills()? {
            if !record.state.is_live() {
                continue;
            }
            let Ok(pipeline) = self.pipeline(&record.pipeline) else {
                continue;
            };
            self.plan_backfill(&pipeline, record)?;
        }
        if requeued > 0 || tracked > 0 {
            info!(requeued, tracked, "scheduler recovered its queue");
        }
        Ok(())
    }

    /// A summary of what the scheduler is doing, for `/scheduler` and metrics.
    pub fn summary(&self) -> SchedulerSummary {
        let state = lock(&self.inner.state);
        let mut summary = SchedulerSummary {
            workers: self.inner.config.workers,
            recurring: self.inner.config.recurring,
            ..SchedulerSummary::default()
        };
        for tracked in state.runs.values() {
            match tracked.phase {
                Phase::Waiting => summary.waiting += 1,
                Phase::Ready => summary.ready += 1,
                Phase::Parked => summary.parked += 1,
                Phase::Delayed(_) => summary.delayed += 1,
                Phase::Running(_) => summary.running += 1,
                Phase::UpstreamFailed => summary.upstream_failed += 1,
            }
        }
        summary.paused_pipelines = state.paused_pipelines.iter().cloned().collect();
        summary.paused_pipelines.sort();
        summary
    }

    /// Per job of a pipeline: the cursor of recurring runs and when the next window is due.
    pub fn schedule_of(&self, pipeline: &str) -> Result<Vec<JobSchedule>, SchedulerError> {
        let pipeline = self.pipeline(pipeline)?;
        let now = self.inner.clock.now();
        let mut jobs = Vec::new();
        for def in pipeline.jobs_in_order() {
            jobs.push(JobSchedule {
                job: def.name.clone(),
                grain: def.grain.as_str(),
                cron: def.trigger.cron.as_ref().map(|c| c.expression.clone()),
                delay_seconds: def.trigger.delay.num_seconds(),
                planned_through: self
                    .inner
                    .store
                    .schedule_cursor(&pipeline.name, &def.name)?,
                next_due: def
                    .trigger
                    .next_due_after(def.grain, pipeline.timezone, now),
                retries: def.retries,
                timeout_seconds: def.timeout.map(|t| t.as_secs_f64()),
                concurrency: def.concurrency,
            });
        }
        Ok(jobs)
    }

    /// Waits (for tests and benchmarks) until nothing is queued, delayed or running, or
    /// `timeout` passes; returns whether it went idle.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let state = lock(&self.inner.state);
                let busy = state.running_total > 0
                    || state
                        .runs
                        .values()
                        .any(|t| matches!(t.phase, Phase::Ready | Phase::Running(_)));
                if !busy {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
