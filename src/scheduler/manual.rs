//! Manual runs: `floe run`, `POST /pipelines/{p}/runs` and pipeline jobs of `POST /jobs` ask
//! for the partitions of a range and wait for each one's outcome. Their runs take the same
//! path as backfills and recurring runs: recorded Pending, queued, dispatched within the
//! concurrency limits, retried with backoff, held to the readiness rule, committed once.
//!
//! A manual run plans the request (the chosen jobs and every upstream run they read), joins
//! the runs the scheduler tracks already (a backfill's, a recurring one, another manual
//! run's: their attempt is this request's attempt too, so nothing is computed twice and no
//! attempt is thrown away), tracks the others, and then waits: the run loop reports each
//! run's outcome to the manual runs waiting on it as it settles. Runs whose stored result is
//! Succeeded are queued without touching their record, so readers keep seeing that result; the
//! attempt leaves it be when it is still fresh and recomputes it otherwise. A stopped manual
//! run cancels the waiting runs that only it asked for; its runs computing finish.

use std::collections::HashSet;

use crossbeam_channel::RecvTimeoutError;

use super::*;

/// Why a manual run ended before every one of its runs had an outcome.
#[derive(Debug, thiserror::Error)]
pub enum ManualRunError {
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error("stopped before every planned run was done")]
    Stopped,
    #[error("the scheduler is shutting down; the runs not done yet stay queued for its next start")]
    ShuttingDown,
}

/// A manual run in progress, as the scheduler's state holds it.
pub(super) struct ManualRun {
    /// Where the run loop reports the outcome of each run it waits on.
    outcomes: Sender<RunEvent>,
    /// The runs it queued itself (not those it joined): stopping it cancels these.
    enqueued: HashSet<RunKey>,
}

/// How often a waiting manual run looks whether it was asked to stop.
const STOP_POLL: Duration = Duration::from_millis(20);

/// Runs queued under one hold of the scheduler's lock: a large request lets the workers start
/// and the run loop settle outcomes between chunks.
const ENQUEUE_CHUNK: usize = 4096;

/// Tells the manual runs waiting on `key` what it came to; they stop waiting on it.
pub(super) fn report_outcome(state: &mut State, key: &RunKey, outcome: RunOutcome) {
    let Some(tracked) = state.runs.get_mut(key) else {
        return;
    };
    if tracked.manual_runs.is_empty() {
        return;
    }
    let waiting = std::mem::take(&mut tracked.manual_runs);
    let elapsed_ms = match outcome {
        RunOutcome::Fresh | RunOutcome::Computed { .. } | RunOutcome::Failed { .. } => {
            tracked.last_attempt_ms
        }
        RunOutcome::UpstreamFailed { .. } => 0.0,
    };
    for id in waiting {
        if let Some(manual) = state.manual_runs.get(&id) {
            // A caller gone already needs nothing more.
            let _ = manual.outcomes.send(RunEvent {
                key: key.clone(),
                outcome: outcome.clone(),
                elapsed_ms,
            });
        }
    }
}

/// Runs `request` on a scheduler of its own over `materializer`'s store, as `floe run` does:
/// no recurring runs, nothing a previous process left unfinished is taken up (runs it left
/// Running are put back in the queue), at most `workers` runs at once. Every outcome is
/// recorded in the store as under `floe serve`. The scheduler stops once every run has one.
pub fn run_alone(
    materializer: Materializer,
    pipeline: Arc<Pipeline>,
    request: &RunRequest,
    workers: usize,
    on_event: &mut dyn FnMut(&RunEvent),
) -> Result<RunReport, ManualRunError> {
    let store = materializer.store().clone();
    let clock = materializer.clock().clone();
    let name = pipeline.name.clone();
    let config = SchedulerConfig {
        recurring: false,
        workers: workers.max(1),
        resume: false,
    };
    let scheduler = Scheduler::start(store, materializer, clock, config, vec![pipeline])?;
    let driver = scheduler.spawn_driver().map_err(SchedulerError::Thread)?;
    let report = scheduler.run_to_end(&name, request, &|| false, on_event);
    // Every run has its outcome: nothing is computing, so the workers end at once.
    scheduler.shutdown(Duration::from_secs(5));
    if driver.join().is_err() {
        warn!("the scheduler's driver thread panicked");
    }
    report
}

impl Scheduler {
    /// Runs the partitions `request` plans for `pipeline` (the chosen jobs, or all, and the
    /// upstream runs they read) through the scheduler and waits until each has an outcome,
    /// calling `on_event` as each one ends. Runs the scheduler tracks already are joined, not
    /// queued again. `stop` is asked while waiting: once it says so, the runs only this
    /// request queued and not computing yet are cancelled and [`ManualRunError::Stopped`] is
    /// returned.
    pub fn run_to_end(
        &self,
        pipeline: &str,
        request: &RunRequest,
        stop: &dyn Fn() -> bool,
        on_event: &mut dyn FnMut(&RunEvent),
    ) -> Result<RunReport, ManualRunError> {
        let pipeline = self.pipeline(pipeline)?;
        let plan = self
            .inner
            .materializer
            .plan(&pipeline, request)
            .map_err(SchedulerError::from)?;
        let position: HashMap<RunKey, usize> = plan
            .runs
            .iter()
            .enumerate()
            .map(|(index, run)| {
                (
                    RunKey::new(&pipeline.name, &run.job, run.window.start),
                    index,
                )
            })
            .collect();
        let id: Arc<str> = Arc::from(format!("manual-{}", uuid::Uuid::now_v7()).as_str());
        let (outcomes, reported) = crossbeam_channel::unbounded();
        self.enqueue_manual_run(&pipeline, &plan, request.force, &id, outcomes, stop)?;
        let mut events: Vec<Option<RunEvent>> = vec![None; plan.runs.len()];
        let mut remaining = plan.runs.len();
        while remaining > 0 {
            if stop() {
                return Err(self.abandon_manual_run(&id, ManualRunError::Stopped));
            }
            match reported.recv_timeout(STOP_POLL) {
                Ok(event) => {
                    let Some(slot) = position.get(&event.key).map(|&index| &mut events[index])
                    else {
                        continue;
                    };
                    if slot.is_none() {
                        on_event(&event);
                        *slot = Some(event);
                        remaining -= 1;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if lock(&self.inner.state).stopping {
                        return Err(self.abandon_manual_run(&id, ManualRunError::ShuttingDown));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.abandon_manual_run(&id, ManualRunError::ShuttingDown));
                }
            }
        }
        lock(&self.inner.state).manual_runs.remove(&id);
        self.inner.store.flush().map_err(SchedulerError::from)?;
        let mut report = RunReport {
            planned: plan.runs.len(),
            ..RunReport::default()
        };
        for event in events.into_iter().flatten() {
            match &event.outcome {
                RunOutcome::Fresh => report.fresh += 1,
                RunOutcome::Computed { .. } => report.computed += 1,
                RunOutcome::Failed { error } => {
                    report.failed.push((event.key.clone(), error.clone()));
                }
                RunOutcome::UpstreamFailed { .. } => report.upstream_failed += 1,
            }
            report.runs.push(event);
        }
        info!(
            pipeline = %pipeline.name,
            planned = report.planned,
            computed = report.computed,
            fresh = report.fresh,
            failed = report.failed.len(),
            upstream_failed = report.upstream_failed,
            "manual run finished"
        );
        Ok(report)
    }

    /// Registers the manual run `id` and queues or joins each run of `plan`.
    fn enqueue_manual_run(
        &self,
        pipeline: &Arc<Pipeline>,
        plan: &crate::materialize::RunPlan,
        force: bool,
        id: &Arc<str>,
        outcomes: Sender<RunEvent>,
        stop: &dyn Fn() -> bool,
    ) -> Result<(), ManualRunError> {
        let now = self.inner.clock.now();
        let mut state = lock(&self.inner.state);
        if state.stopping {
            return Err(ManualRunError::ShuttingDown);
        }
        state.manual_runs.insert(
            id.clone(),
            ManualRun {
                outcomes,
                enqueued: HashSet::new(),
            },
        );
        for (index, run) in plan.runs.iter().enumerate() {
            if index > 0 && index % ENQUEUE_CHUNK == 0 {
                self.dispatch(&mut state);
                drop(state);
                if stop() {
                    return Err(self.abandon_manual_run(id, ManualRunError::Stopped));
                }
                state = lock(&self.inner.state);
            }
            let queued = match pipeline.job(&run.job) {
                Some(def) => {
                    self.enqueue_manual(&mut state, pipeline, def, run.window, force, id, now)
                }
                // The plan was made from this very pipeline: its jobs are there.
                None => Err(SchedulerError::UnknownJob {
                    pipeline: pipeline.name.clone(),
                    job: run.job.clone(),
                    known: pipeline.dag.topological_order().join(", "),
                }),
            };
            if let Err(error) = queued {
                drop(state);
                return Err(self.abandon_manual_run(id, error.into()));
            }
        }
        self.dispatch(&mut state);
        drop(state);
        self.wake();
        Ok(())
    }

    /// Joins the run of `def` over `window` if the scheduler tracks it, else queues it; the
    /// manual run `id` then waits for its outcome.
    #[allow(clippy::too_many_arguments)]
    fn enqueue_manual(
        &self,
        state: &mut State,
        pipeline: &Arc<Pipeline>,
        def: &JobDef,
        window: Window,
        force: bool,
        id: &Arc<str>,
        now: DateTime<Utc>,
    ) -> Result<(), SchedulerError> {
        let key = RunKey::new(&pipeline.name, &def.name, window.start);
        if let Some(tracked) = state.runs.get_mut(&key) {
            // Queued or computing for someone else already: its outcome answers this request
            // too. A forced request recomputes it if it has not started yet.
            tracked.force |= force;
            if !tracked.manual_runs.contains(id) {
                tracked.manual_runs.push(id.clone());
            }
            if tracked.phase == Phase::Parked {
                // Held by a paused backfill: this request wants it now.
                tracked.phase = Phase::Ready;
                push_ready(state, key);
            }
            return Ok(());
        }
        let store = &self.inner.store;
        let seen = store.seen_run(&key)?;
        // A Succeeded run keeps its record until its attempt finds it fresh or commits a new
        // result: readers see its result throughout, and a crash leaves it as it was.
        let succeeded = seen
            .record()
            .is_some_and(|record| record.state == RunState::Succeeded);
        let held_elsewhere = !succeeded
            && store
                .enqueue_run_seen(&key, Some(seen), window.end, force, now)?
                .is_none();
        self.track(state, pipeline, def, key.clone(), window, force, None);
        if held_elsewhere {
            // Running under another writer: look again soon.
            Self::delay(state, &key, now + TimeDelta::seconds(5));
        }
        if let Some(tracked) = state.runs.get_mut(&key) {
            tracked.manual_runs.push(id.clone());
        }
        if let Some(manual) = state.manual_runs.get_mut(id) {
            manual.enqueued.insert(key);
        }
        Ok(())
    }

    /// Ends the manual run `id` before all its outcomes came in, and returns `why`. Stopped
    /// (or failed while queueing), it cancels the runs it queued that nobody else asked for
    /// or waits on; at shutdown those stay queued in the store for the next start.
    fn abandon_manual_run(&self, id: &Arc<str>, why: ManualRunError) -> ManualRunError {
        let now = self.inner.clock.now();
        let mut state = lock(&self.inner.state);
        let Some(manual) = state.manual_runs.remove(id) else {
            return why;
        };
        for tracked in state.runs.values_mut() {
            tracked.manual_runs.retain(|waiting| waiting != id);
        }
        if matches!(why, ManualRunError::ShuttingDown) {
            return why;
        }
        let own: HashSet<RunKey> = manual
            .enqueued
            .into_iter()
            .filter(|key| {
                state.runs.get(key).is_some_and(|tracked| {
                    tracked.backfill.is_none() && tracked.manual_runs.is_empty()
                })
            })
            .collect();
        // A run another tracked run waits on, directly or through others, stays queued.
        let needed = needed_by(&state, |key, _| !own.contains(key));
        let reason = match &why {
            ManualRunError::Stopped => "the manual run that asked for it was stopped".to_owned(),
            other => format!("the manual run that asked for it failed: {other}"),
        };
        let cancelled = self.cancel_waiting(
            &mut state,
            |key, _| own.contains(key) && !needed.contains(key),
            &reason,
            now,
        );
        self.dispatch(&mut state);
        info!(
            cancelled,
            "manual run ended early; the runs only it had queued are cancelled"
        );
        why
    }
}
