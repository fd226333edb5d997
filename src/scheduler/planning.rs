//! Planning: recurring runs from each job's trigger since its cursor, within the catch-up
//! policy and its horizon, and the enqueueing every planned run goes through (Pending in the
//! store first, then tracked with its unmet upstream runs). Part of the [`Scheduler`].

use super::*;

impl Scheduler {
    /// Enqueues the due windows of each job since its cursor, within the catch-up policy;
    /// returns when the next window becomes due.
    pub(super) fn plan_recurring(
        &self,
        pipeline: &Arc<Pipeline>,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, SchedulerError> {
        let store = &self.inner.store;
        let mut next: Option<DateTime<Utc>> = None;
        // Each job's missed windows, oldest first, and how many of the latest the catch-up
        // policy keeps.
        let mut missed: Vec<(&JobDef, Vec<Window>, usize)> = Vec::new();
        for def in pipeline.jobs_in_order() {
            let trigger = &def.trigger;
            // No wake-up for windows that close after the pipeline's end.
            if let Some(at) = trigger.next_due_after(def.grain, pipeline.timezone, now)
                && pipeline.end.is_none_or(|end| at - trigger.delay <= end)
            {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
            let mut through = trigger.due_through(pipeline.timezone, now);
            if let Some(end) = pipeline.end {
                through = through.min(end);
            }
            let cursor = store.schedule_cursor(&pipeline.name, &def.name)?;
            let from = cursor.unwrap_or(pipeline.start).max(pipeline.start);
            if from >= through {
                continue;
            }
            let windows = windows_within(def.grain, pipeline.timezone, from, through);
            if windows.is_empty() {
                continue;
            }
            let keep = pipeline
                .schedule
                .catch_up
                .keep(windows.len(), pipeline.schedule.max_catch_up);
            missed.push((def, windows, keep));
        }
        let horizon = catch_up_horizon(&missed);
        for (def, windows, keep) in &missed {
            let kept = &windows[windows.len() - keep..];
            let planned: Vec<Window> = kept
                .iter()
                .filter(|window| horizon.is_none_or(|horizon| window.start >= horizon))
                .copied()
                .collect();
            if planned.len() < windows.len() {
                info!(
                    pipeline = %pipeline.name,
                    job = %def.name,
                    missed = windows.len(),
                    planned = planned.len(),
                    horizon = %horizon.map(|h| h.to_rfc3339()).unwrap_or_default(),
                    "catch-up: only the latest missed partitions are planned; backfill the rest"
                );
            }
            {
                let mut state = lock(&self.inner.state);
                for window in &planned {
                    self.enqueue(&mut state, pipeline, def, *window, &Origin::RECURRING, now)?;
                }
                self.dispatch(&mut state);
            }
            // After the runs: a crash in between re-plans them, and planning is idempotent.
            let last = windows[windows.len() - 1];
            store.set_schedule_cursor(&pipeline.name, &def.name, last.end)?;
        }
        Ok(next)
    }

    /// Puts one run in the queue (persisting Pending first) and counts its unmet upstream
    /// runs. Returns whether the run is now queued for this origin (`false`: nothing to do).
    pub(super) fn enqueue(
        &self,
        state: &mut State,
        pipeline: &Arc<Pipeline>,
        def: &JobDef,
        window: Window,
        origin: &Origin<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, SchedulerError> {
        let key = RunKey::new(&pipeline.name, &def.name, window.start);
        if let Some(tracked) = state.runs.get_mut(&key) {
            tracked.force |= origin.force;
            let Some(id) = origin.backfill else {
                return Ok(false);
            };
            if tracked.backfill.is_some() {
                return Ok(false);
            }
            tracked.backfill = Some(id.clone());
            if let Some(live) = state.backfills.get_mut(id) {
                live.progress.total += 1;
            }
            return Ok(true);
        }
        let store = &self.inner.store;
        // Read once: the same snapshot is what `enqueue_run_seen` swaps from.
        let seen = store.seen_run(&key)?;
        if let Some(record) = seen.record() {
            let Some(done_since) = origin.done_since else {
                // Recurring planning: the run exists already (done, failed for good, or
                // queued by a backfill that tracks it).
                return Ok(false);
            };
            let done = record.state == RunState::Succeeded
                && (!origin.force || record.finished_at.is_some_and(|at| at > done_since));
            if done {
                // Fresh, or already recomputed by this very request before a restart.
                return Ok(false);
            }
        }
        // Upstream runs that were never planned (a catch-up that kept fewer hourly than daily
        // partitions) are planned first, so this run does not wait on nothing.
        for (up_key, up_window) in upstream_keys(pipeline, def, &window) {
            if state.runs.contains_key(&up_key) || store.run(&up_key)?.is_some() {
                continue;
            }
            if let Some(up_def) = pipeline.job(&up_key.job) {
                let up_origin = Origin {
                    force: false,
                    backfill: origin.backfill,
                    done_since: origin.done_since,
                };
                self.enqueue(state, pipeline, up_def, up_window, &up_origin, now)?;
            }
        }
        if store
            .enqueue_run_seen(&key, Some(seen), window.end, origin.force, now)?
            .is_none()
        {
            // Running under another writer (a job-server materialisation): look again soon.
            self.track(
                state,
                pipeline,
                def,
                key.clone(),
                window,
                origin.force,
                origin.backfill,
            );
            Self::delay(state, &key, now + TimeDelta::seconds(5));
            return Ok(true);
        }
        self.track(
            state,
            pipeline,
            def,
            key,
            window,
            origin.force,
            origin.backfill,
        );
        Ok(true)
    }

    /// Starts tracking a Pending run: counts its unmet upstream runs and queues it when
    /// there are none.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn track(
        &self,
        state: &mut State,
        pipeline: &Arc<Pipeline>,
        def: &JobDef,
        key: RunKey,
        window: Window,
        force: bool,
        backfill: Option<&Arc<str>>,
    ) {
        let mut unmet = 0;
        let mut failed_upstreams = Vec::new();
        for (up_key, _) in upstream_keys(pipeline, def, &window) {
            let waiting = match state.runs.get(&up_key) {
                Some(up) => {
                    if up.phase == Phase::UpstreamFailed {
                        failed_upstreams.push(up_key.clone());
                    }
                    true
                }
                None => match self.inner.store.run(&up_key) {
                    Ok(Some(record)) if record.state == RunState::Succeeded => false,
                    Ok(Some(record)) => {
                        if matches!(record.state, RunState::Failed | RunState::Cancelled)
                            && !record.is_active()
                        {
                            failed_upstreams.push(up_key.clone());
                        }
                        true
                    }
                    Ok(None) => true,
                    Err(error) => {
                        warn!(run = %up_key, error = %error_chain(&error), "cannot read upstream run");
                        true
                    }
                },
            };
            if waiting {
                unmet += 1;
                state
                    .dependents
                    .entry(up_key)
                    .or_default()
                    .push(key.clone());
            }
        }
        let failed_name = failed_upstreams.first().cloned();
        let phase = if !failed_upstreams.is_empty() {
            Phase::UpstreamFailed
        } else if unmet == 0 {
            Phase::Ready
        } else {
            Phase::Waiting
        };
        if let Some(id) = backfill
            && let Some(live) = state.backfills.get_mut(id)
        {
            live.progress.total += 1;
        }
        state.runs.insert(
            key.clone(),
            Tracked {
                window,
                phase,
                unmet,
                failed_upstreams,
                force,
                backfill: backfill.cloned(),
                failures: 0,
                waiting_since: None,
                manual_runs: Vec::new(),
                last_attempt_ms: 0.0,
            },
        );
        match phase {
            Phase::Ready => push_ready(state, key),
            Phase::UpstreamFailed => {
                if let Some(upstream) = failed_name
                    && let Err(error) = self.inner.store.mark_upstream_failed(
                        &key,
                        &upstream,
                        self.inner.clock.now(),
                    )
                {
                    warn!(run = %key, error = %error_chain(&error), "cannot record upstream failure");
                }
            }
            _ => {}
        }
    }
}

/// The earliest instant a catch-up plans from, when the policy cut some job's missed windows:
/// the latest of the cut jobs' first kept window starts. Every job's catch-up (its own runs
/// and the upstream runs they read, which lie in the same span) then stays within each cut
/// job's cap: a daily or weekly job behind by months does not bring in thousands of hourly
/// runs the hourly job's cap left out. `None` when the policy cut nothing.
fn catch_up_horizon(missed: &[(&JobDef, Vec<Window>, usize)]) -> Option<DateTime<Utc>> {
    missed
        .iter()
        .filter(|(_, windows, keep)| *keep < windows.len())
        .map(|(_, windows, keep)| {
            windows
                .get(windows.len() - keep)
                // Keeping none: nothing of that job's span is caught up.
                .map_or(DateTime::<Utc>::MAX_UTC, |first_kept| first_kept.start)
        })
        .max()
}
