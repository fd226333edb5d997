//! Backfills and restatements: starting one (planning its runs, bounded by the active limit
//! and pruning old records), pausing, resuming and cancelling it, and its progress and ETA.
//! Part of the [`Scheduler`]; the run loop in `mod.rs` counts its runs as they end.

use super::*;

impl Scheduler {
    pub(super) fn count_backfill(
        &self,
        state: &mut State,
        id: &Arc<str>,
        count: impl FnOnce(&mut Progress),
    ) {
        let Some(live) = state.backfills.get_mut(id) else {
            return;
        };
        count(&mut live.progress);
        live.progress.last_done = Some(Instant::now());
        if !live.planning
            && live.progress.done() >= live.progress.total
            && live.record.state.is_live()
        {
            live.record.state = BackfillState::Finished;
            live.record.finished_at = Some(self.inner.clock.now());
            if let Err(error) = self.inner.store.put_backfill(&live.record) {
                warn!(backfill = %id, error = %error_chain(&error), "cannot record the end of a backfill");
            }
            info!(backfill = %id, succeeded = live.progress.succeeded, failed = live.progress.failed, "backfill finished");
        }
    }

    // ---- backfills and restatements --------------------------------------------------

    /// Starts a backfill: every partition of the chosen jobs (and their upstream jobs) in
    /// the range, skipping fresh ones unless forced. Returns its id. Held to the default
    /// [`BackfillLimits`]; `floe serve` gives its own with [`Scheduler::start_backfill_within`].
    pub fn backfill(&self, request: &BackfillRequest) -> Result<BackfillStatus, SchedulerError> {
        self.start_backfill(request, false, BackfillLimits::default())
    }

    /// Starts a backfill (or, with `restate`, a restatement) held to `limits`: refused while
    /// `limits.max_active` are not finished; finished records beyond `limits.history` are
    /// deleted first.
    pub fn start_backfill_within(
        &self,
        request: &BackfillRequest,
        restate: bool,
        limits: BackfillLimits,
    ) -> Result<BackfillStatus, SchedulerError> {
        self.start_backfill(request, restate, limits)
    }

    /// Starts a restatement: the chosen jobs' partitions in the range and, by cascade, every
    /// downstream partition that read them, recomputed whether fresh or not. Each partition's
    /// new result replaces the old one with one swap of its run record: a reader sees one or
    /// the other.
    pub fn restate(&self, request: &BackfillRequest) -> Result<BackfillStatus, SchedulerError> {
        self.start_backfill(request, true, BackfillLimits::default())
    }

    pub(super) fn start_backfill(
        &self,
        request: &BackfillRequest,
        restate: bool,
        limits: BackfillLimits,
    ) -> Result<BackfillStatus, SchedulerError> {
        let pipeline = self.pipeline(&request.pipeline)?;
        if request.from >= request.to {
            return Err(SchedulerError::EmptyRange {
                from: request.from,
                to: request.to,
            });
        }
        if let Some(jobs) = &request.jobs {
            for job in jobs {
                if pipeline.job(job).is_none() {
                    return Err(SchedulerError::UnknownJob {
                        pipeline: pipeline.name.clone(),
                        job: job.clone(),
                        known: pipeline.dag.topological_order().join(", "),
                    });
                }
            }
        }
        // A range typed wrong (a year 9999) must not plan runs until memory runs out. The
        // estimate counts hourly windows for every job, the most a range can hold.
        let jobs = request
            .jobs
            .as_ref()
            .map_or(pipeline.jobs.len(), Vec::len)
            .max(1);
        let from = request.from.max(pipeline.start);
        let hours = (request.to - from).num_hours().max(0).unsigned_abs() as usize;
        let estimate = hours.saturating_add(1).saturating_mul(jobs);
        if estimate > MAX_BACKFILL_RUNS {
            return Err(SchedulerError::TooLarge {
                estimate,
                limit: MAX_BACKFILL_RUNS,
            });
        }
        let now = self.inner.clock.now();
        let record = BackfillRecord {
            id: uuid::Uuid::now_v7().to_string(),
            pipeline: pipeline.name.clone(),
            jobs: request.jobs.clone(),
            from: request.from,
            to: request.to,
            force: request.force || restate,
            restate,
            state: BackfillState::Running,
            created_at: now,
            finished_at: None,
        };
        // Counted and registered under one lock, so concurrent requests cannot all take the
        // last place; `plan_backfill` registers it again with its runs.
        {
            let mut state = lock(&self.inner.state);
            let active = state
                .backfills
                .values()
                .filter(|live| live.record.state.is_live())
                .count();
            if active >= limits.max_active {
                return Err(SchedulerError::TooManyActiveBackfills { active });
            }
            state.backfills.insert(
                Arc::from(record.id.as_str()),
                LiveBackfill {
                    record: record.clone(),
                    progress: Progress::default(),
                    parked: Vec::new(),
                    planning: true,
                },
            );
        }
        // The request is durable before any of its runs is queued: after a crash it is
        // re-planned from this record.
        let stored = self
            .prune_backfill_history(limits.history)
            .and_then(|()| (self.inner.store.put_backfill(&record)).map_err(SchedulerError::from));
        if let Err(error) = stored {
            lock(&self.inner.state).backfills.remove(record.id.as_str());
            return Err(error);
        }
        info!(backfill = %record.id, pipeline = %record.pipeline, from = %record.from, to = %record.to, restate, "backfill started");
        let id = self.plan_backfill(&pipeline, record)?;
        self.wake();
        self.backfill_status(&id)
    }

    /// Deletes the oldest finished and cancelled backfill records beyond the `keep` newest,
    /// from the store and from memory.
    pub(super) fn prune_backfill_history(&self, keep: usize) -> Result<(), SchedulerError> {
        let records = self.inner.store.backfills()?;
        let done: Vec<String> = records
            .into_iter()
            .filter(|record| !record.state.is_live())
            .map(|record| record.id)
            .collect();
        let excess = done.len().saturating_sub(keep);
        if excess == 0 {
            return Ok(());
        }
        let pruned = &done[..excess];
        self.inner.store.delete_backfills(pruned)?;
        let mut state = lock(&self.inner.state);
        for id in pruned {
            if state
                .backfills
                .get(id.as_str())
                .is_some_and(|live| !live.record.state.is_live())
            {
                state.backfills.remove(id.as_str());
            }
        }
        info!(
            deleted = excess,
            kept = keep,
            "old backfill records deleted"
        );
        Ok(())
    }

    /// Enqueues a backfill's runs and registers its progress.
    pub(super) fn plan_backfill(
        &self,
        pipeline: &Arc<Pipeline>,
        record: BackfillRecord,
    ) -> Result<String, SchedulerError> {
        let now = self.inner.clock.now();
        let runs = self.backfill_runs(pipeline, &record)?;
        let id: Arc<str> = Arc::from(record.id.as_str());
        let mut state = lock(&self.inner.state);
        let force = record.force;
        let created_at = record.created_at;
        state.backfills.insert(
            id.clone(),
            LiveBackfill {
                record,
                progress: Progress {
                    since: Some((Instant::now(), 0)),
                    ..Progress::default()
                },
                parked: Vec::new(),
                planning: true,
            },
        );
        // Planned in chunks, dispatching and letting go of the lock between them, so workers
        // start on the first runs while the rest of a large backfill is still being planned.
        const CHUNK: usize = 4096;
        for (index, (job, window)) in runs.into_iter().enumerate() {
            if index > 0 && index % CHUNK == 0 {
                self.dispatch(&mut state);
                drop(state);
                state = lock(&self.inner.state);
                // Cancelled meanwhile: plan no more of it.
                if state
                    .backfills
                    .get(&id)
                    .is_none_or(|live| !live.record.state.is_live())
                {
                    break;
                }
            }
            let Some(def) = pipeline.job(&job) else {
                continue;
            };
            let origin = Origin {
                force,
                backfill: Some(&id),
                done_since: Some(created_at),
            };
            let queued = match self.enqueue(&mut state, pipeline, def, window, &origin, now) {
                Ok(queued) => queued,
                Err(error) => {
                    if let Some(live) = state.backfills.get_mut(&id) {
                        live.planning = false;
                    }
                    return Err(error);
                }
            };
            if !queued && let Some(live) = state.backfills.get_mut(&id) {
                // Nothing to do for it (fresh already): it counts as done.
                live.progress.total += 1;
                live.progress.succeeded += 1;
            }
        }
        if let Some(live) = state.backfills.get_mut(&id) {
            live.planning = false;
            live.progress.since = Some((Instant::now(), live.progress.done()));
            live.progress.last_done = None;
        }
        self.count_backfill(&mut state, &id, |_| {});
        self.dispatch(&mut state);
        Ok(id.to_string())
    }

    /// The (job, window) runs of a backfill in dependency order.
    pub(super) fn backfill_runs(
        &self,
        pipeline: &Arc<Pipeline>,
        record: &BackfillRecord,
    ) -> Result<Vec<(String, Window)>, SchedulerError> {
        let request = RunRequest {
            jobs: record.jobs.clone(),
            from: record.from,
            to: record.to,
            force: record.force,
        };
        let plan = self.inner.materializer.plan(pipeline, &request)?;
        if !record.restate {
            // A backfill of chosen jobs brings their upstream runs up to date too.
            return Ok(plan.runs.into_iter().map(|r| (r.job, r.window)).collect());
        }
        // A restatement recomputes only the chosen jobs' partitions, then cascades
        // downstream to every stored partition that read them.
        let chosen: HashSet<String> = match &record.jobs {
            Some(jobs) => jobs.iter().cloned().collect(),
            None => pipeline.jobs.keys().cloned().collect(),
        };
        let mut restated: HashSet<(String, DateTime<Utc>)> = HashSet::new();
        let mut order: Vec<(String, Window)> = Vec::new();
        for run in plan.runs {
            if chosen.contains(&run.job) && restated.insert((run.job.clone(), run.window.start)) {
                order.push((run.job, run.window));
            }
        }
        for def in pipeline.jobs_in_order() {
            if chosen.contains(&def.name) {
                continue;
            }
            let mut windows: BTreeMap<DateTime<Utc>, Window> = BTreeMap::new();
            for input in &def.inputs {
                let InputRef::Job(upstream) = input else {
                    continue;
                };
                for (job, window) in &order {
                    if job != upstream {
                        continue;
                    }
                    let down = window_containing(def.grain, pipeline.timezone, window.start);
                    windows.insert(down.start, down);
                }
            }
            for (start, window) in windows {
                let key = RunKey::new(&pipeline.name, &def.name, start);
                // Only partitions that exist were made from the old results.
                if self.inner.store.run(&key)?.is_some() {
                    order.push((def.name.clone(), window));
                }
            }
        }
        Ok(order)
    }

    pub fn pause_backfill(&self, id: &str) -> Result<BackfillStatus, SchedulerError> {
        self.change_backfill(id, "paused", |state| match state {
            BackfillState::Running | BackfillState::Paused => Some(BackfillState::Paused),
            _ => None,
        })
    }

    pub fn resume_backfill(&self, id: &str) -> Result<BackfillStatus, SchedulerError> {
        self.change_backfill(id, "resumed", |state| match state {
            BackfillState::Running | BackfillState::Paused => Some(BackfillState::Running),
            _ => None,
        })
    }

    /// Cancels the backfill's queued runs; runs already computing finish.
    pub fn cancel_backfill(&self, id: &str) -> Result<BackfillStatus, SchedulerError> {
        self.change_backfill(id, "cancelled", |state| match state {
            BackfillState::Running | BackfillState::Paused => Some(BackfillState::Cancelled),
            _ => None,
        })
    }

    pub(super) fn change_backfill(
        &self,
        id: &str,
        action: &'static str,
        next: impl Fn(BackfillState) -> Option<BackfillState>,
    ) -> Result<BackfillStatus, SchedulerError> {
        let now = self.inner.clock.now();
        {
            let mut state = lock(&self.inner.state);
            let Some((key, live)) = state.backfills.get_key_value(id) else {
                drop(state);
                let record = self
                    .inner
                    .store
                    .backfill(id)?
                    .ok_or_else(|| SchedulerError::UnknownBackfill(id.to_owned()))?;
                return Err(SchedulerError::BackfillState {
                    id: id.to_owned(),
                    state: record.state.as_str(),
                    action,
                });
            };
            let key = key.clone();
            let Some(new_state) = next(live.record.state) else {
                return Err(SchedulerError::BackfillState {
                    id: id.to_owned(),
                    state: live.record.state.as_str(),
                    action,
                });
            };
            let mut record = live.record.clone();
            record.state = new_state;
            if new_state == BackfillState::Cancelled {
                record.finished_at = Some(now);
            }
            // Persisted before it takes effect.
            self.inner.store.put_backfill(&record)?;
            let parked = match state.backfills.get_mut(&key) {
                Some(live) => {
                    live.record = record;
                    std::mem::take(&mut live.parked)
                }
                None => Vec::new(),
            };
            match new_state {
                BackfillState::Running => {
                    for run in parked {
                        if let Some(tracked) = state.runs.get_mut(&run)
                            && tracked.phase == Phase::Parked
                        {
                            tracked.phase = Phase::Ready;
                            push_ready(&mut state, run);
                        }
                    }
                }
                BackfillState::Paused => {
                    if let Some(live) = state.backfills.get_mut(&key) {
                        live.parked = parked;
                    }
                }
                BackfillState::Cancelled => {
                    // A run a manual run waits for stays queued for it: it only leaves the
                    // backfill, which counts it as cancelled.
                    let kept: Vec<RunKey> = state
                        .runs
                        .iter()
                        .filter(|(_, tracked)| {
                            tracked.backfill.as_ref() == Some(&key)
                                && !tracked.manual_runs.is_empty()
                                && !matches!(tracked.phase, Phase::Running(_))
                        })
                        .map(|(run, _)| run.clone())
                        .collect();
                    for run in &kept {
                        if let Some(tracked) = state.runs.get_mut(run) {
                            tracked.backfill = None;
                        }
                    }
                    if let Some(live) = state.backfills.get_mut(&key) {
                        live.progress.cancelled += kept.len();
                    }
                    self.cancel_waiting(
                        &mut state,
                        |_, tracked| tracked.backfill.as_ref() == Some(&key),
                        &format!("backfill {key} was cancelled"),
                        now,
                    );
                }
                BackfillState::Finished => {}
            }
            self.dispatch(&mut state);
        }
        self.wake();
        self.backfill_status(id)
    }

    /// A backfill's state and progress.
    pub fn backfill_status(&self, id: &str) -> Result<BackfillStatus, SchedulerError> {
        {
            let state = lock(&self.inner.state);
            if let Some(live) = state.backfills.get(id) {
                return Ok(status_of(&live.record, &live.progress));
            }
        }
        let record = self
            .inner
            .store
            .backfill(id)?
            .ok_or_else(|| SchedulerError::UnknownBackfill(id.to_owned()))?;
        Ok(self.finished_status(record))
    }

    /// The newest backfills of a pipeline (or all), newest first, at most `limit`.
    pub fn backfills_newest(
        &self,
        pipeline: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BackfillStatus>, SchedulerError> {
        let records = self.inner.store.backfills_newest(limit, |record| {
            pipeline.is_none_or(|p| record.pipeline == p)
        })?;
        Ok(records
            .into_iter()
            .map(|record| {
                let live = lock(&self.inner.state)
                    .backfills
                    .get(record.id.as_str())
                    .map(|live| status_of(&live.record, &live.progress));
                live.unwrap_or_else(|| self.finished_status(record))
            })
            .collect())
    }

    /// Every backfill of a pipeline (or all), oldest first.
    pub fn backfills(&self, pipeline: Option<&str>) -> Result<Vec<BackfillStatus>, SchedulerError> {
        let records = self.inner.store.backfills()?;
        let mut statuses = Vec::new();
        for record in records {
            if pipeline.is_some_and(|p| record.pipeline != p) {
                continue;
            }
            let live = lock(&self.inner.state)
                .backfills
                .get(record.id.as_str())
                .map(|live| status_of(&live.record, &live.progress));
            // A backfill no longer tracked is counted from its runs, as `backfill_status` does.
            statuses.push(live.unwrap_or_else(|| self.finished_status(record)));
        }
        Ok(statuses)
    }

    /// The status of a backfill no longer tracked in memory, counted from its runs.
    pub(super) fn finished_status(&self, record: BackfillRecord) -> BackfillStatus {
        let mut progress = Progress::default();
        if let Ok(pipeline) = self.pipeline(&record.pipeline)
            && let Ok(runs) = self.backfill_runs(&pipeline, &record)
        {
            for (job, window) in runs {
                progress.total += 1;
                match self
                    .inner
                    .store
                    .run(&RunKey::new(&record.pipeline, &job, window.start))
                {
                    Ok(Some(run)) if run.state == RunState::Succeeded => progress.succeeded += 1,
                    Ok(Some(run)) if run.state == RunState::Cancelled => progress.cancelled += 1,
                    Ok(Some(run)) if !run.is_active() || run.state == RunState::UpstreamFailed => {
                        progress.failed += 1
                    }
                    _ => {}
                }
            }
        }
        status_of(&record, &progress)
    }
}

/// Seconds until a running backfill's `remaining` runs are done, at the rate its runs ended
/// since it (re)started, measured up to the last that ended: the estimate changes when runs
/// end, not while the backfill only waits (for retries, for files).
pub(super) fn eta_seconds(progress: &Progress, remaining: usize) -> Option<f64> {
    let (since, done_then) = progress.since?;
    let done = progress.done().saturating_sub(done_then);
    let last = progress.last_done.filter(|last| *last >= since)?;
    (done > 0).then(|| remaining as f64 * (last - since).as_secs_f64() / done as f64)
}

pub(super) fn status_of(record: &BackfillRecord, progress: &Progress) -> BackfillStatus {
    let remaining = progress.total.saturating_sub(progress.done());
    let eta_seconds = (record.state == BackfillState::Running)
        .then(|| eta_seconds(progress, remaining))
        .flatten();
    BackfillStatus {
        id: record.id.clone(),
        pipeline: record.pipeline.clone(),
        jobs: record.jobs.clone(),
        from: record.from,
        to: record.to,
        force: record.force,
        restate: record.restate,
        state: record.state.as_str(),
        created_at: record.created_at,
        finished_at: record.finished_at,
        total: progress.total,
        succeeded: progress.succeeded,
        failed: progress.failed,
        cancelled: progress.cancelled,
        remaining,
        eta_seconds,
    }
}
