//! The run loop: the driver thread and its tick (recurring planning, released delays,
//! timeouts), dispatch of ready runs to the workers within the concurrency limits, one
//! attempt per worker through [`Materializer::attempt_partition`], and the settling of its
//! outcome (success, retry with backoff, failure for good and its upstream_failed cascade,
//! waiting for source files). Part of the [`Scheduler`].

use super::*;

impl Scheduler {
    /// Runs the driver on its own thread until [`Scheduler::shutdown`]: tick, then sleep
    /// until the next due instant or a wake-up, whichever is first.
    pub fn spawn_driver(&self) -> std::io::Result<JoinHandle<()>> {
        let scheduler = self.clone();
        std::thread::Builder::new()
            .name("floe-scheduler".to_owned())
            .spawn(move || {
                loop {
                    if lock(&scheduler.inner.state).stopping {
                        break;
                    }
                    let now = scheduler.inner.clock.now();
                    let next = scheduler.tick(now);
                    let wait = (driver_wake_instant(now, next) - now)
                        .to_std()
                        .unwrap_or_default();
                    let (flag, condvar) = &scheduler.inner.wake;
                    let mut woken = lock(flag);
                    if !*woken {
                        woken = condvar
                            .wait_timeout(woken, wait)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                    *woken = false;
                }
            })
    }

    /// Stops dispatching, lets runs in flight finish within `grace`, and stops the workers.
    /// Runs that outlive the grace stay Running in the store and are re-queued at the next
    /// start.
    pub fn shutdown(&self, grace: Duration) {
        lock(&self.inner.state).stopping = true;
        self.wake();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && lock(&self.inner.state).running_total > 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Closing the channel ends each worker after its current run.
        lock(&self.inner.work).take();
        let handles = std::mem::take(&mut *lock(&self.inner.workers));
        for handle in handles {
            if Instant::now() >= deadline {
                break; // left running; the process exit ends it
            }
            let _ = handle.join();
        }
    }

    /// Does everything due at `now`: plans recurring runs, releases delayed runs, settles
    /// timed-out runs, dispatches ready runs. Returns when it next has something to do.
    pub fn tick(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut next: Option<DateTime<Utc>> = None;
        let mut earliest = |at: DateTime<Utc>| {
            next = Some(next.map_or(at, |n: DateTime<Utc>| n.min(at)));
        };
        if self.inner.config.recurring {
            let pipelines: Vec<Arc<Pipeline>> = {
                let state = lock(&self.inner.state);
                state
                    .pipelines
                    .values()
                    .filter(|p| p.schedule.enabled && !state.paused_pipelines.contains(&p.name))
                    .cloned()
                    .collect()
            };
            for pipeline in pipelines {
                match self.plan_recurring(&pipeline, now) {
                    Ok(Some(at)) => earliest(at),
                    Ok(None) => {}
                    Err(error) => {
                        warn!(pipeline = %pipeline.name, error = %error_chain(&error), "cannot plan recurring runs");
                    }
                }
            }
        }
        let mut state = lock(&self.inner.state);
        state.failure_log.summarise(now);
        self.settle_timeouts(&mut state, now);
        Self::release_delayed(&mut state, now);
        self.dispatch(&mut state);
        if let Some(&(at, _)) = state.delayed.first() {
            earliest(at);
        }
        for flight in state.in_flight.values() {
            if let Some(deadline) = flight.deadline
                && !flight.abandoned
            {
                earliest(deadline);
            }
        }
        // Under the same lock as the scan above, so nothing timed added after it is missed.
        state.driver_wakes_at = Some(driver_wake_instant(now, next));
        state.driver_wake_needed = false;
        next
    }

    pub(super) fn delay(state: &mut State, key: &RunKey, until: DateTime<Utc>) {
        if let Some(tracked) = state.runs.get_mut(key) {
            tracked.phase = Phase::Delayed(until);
            state.delayed.insert((until, key.clone()));
            state.need_driver_by(until);
        }
    }

    pub(super) fn release_delayed(state: &mut State, now: DateTime<Utc>) {
        while let Some(first) = state.delayed.first().cloned() {
            if first.0 > now {
                break;
            }
            state.delayed.remove(&first);
            let (at, key) = first;
            let Some(tracked) = state.runs.get_mut(&key) else {
                continue;
            };
            if tracked.phase != Phase::Delayed(at) {
                continue; // superseded
            }
            tracked.phase = if tracked.unmet == 0 {
                Phase::Ready
            } else {
                Phase::Waiting
            };
            if tracked.phase == Phase::Ready {
                push_ready(state, key);
            }
        }
    }

    // ---- dispatch --------------------------------------------------------------------

    /// Hands ready runs to the workers, oldest partition first, within the limits.
    pub(super) fn dispatch(&self, state: &mut State) {
        if state.stopping {
            return;
        }
        let workers = self.inner.config.workers.max(1);
        while state.running_total < workers {
            // The ready queue whose oldest run is oldest, among those with room.
            let mut best: Option<((String, String), DateTime<Utc>)> = None;
            let mut empty = Vec::new();
            for ((pipeline, job), queue) in &state.ready {
                // Drop entries that are no longer ready (cancelled, re-planned).
                let front = queue.iter().find(|key| {
                    state
                        .runs
                        .get(*key)
                        .is_some_and(|t| t.phase == Phase::Ready)
                });
                let Some(front) = front else {
                    empty.push((pipeline.clone(), job.clone()));
                    continue;
                };
                if state.paused_pipelines.contains(pipeline) {
                    continue;
                }
                let Some(def_pipeline) = state.pipelines.get(pipeline) else {
                    continue;
                };
                if let Some(limit) = def_pipeline.schedule.concurrency
                    && state.running_pipeline.get(pipeline).copied().unwrap_or(0) >= limit as usize
                {
                    continue;
                }
                if let Some(limit) = def_pipeline.job(job).and_then(|def| def.concurrency)
                    && state
                        .running_job
                        .get(&(pipeline.clone(), job.clone()))
                        .copied()
                        .unwrap_or(0)
                        >= limit as usize
                {
                    continue;
                }
                if best
                    .as_ref()
                    .is_none_or(|(_, start)| front.partition_start < *start)
                {
                    best = Some(((pipeline.clone(), job.clone()), front.partition_start));
                }
            }
            for queue in empty {
                if state.ready.get(&queue).is_some_and(|q| {
                    q.iter()
                        .all(|k| state.runs.get(k).is_none_or(|t| t.phase != Phase::Ready))
                }) {
                    state.ready.remove(&queue);
                }
            }
            let Some((queue_key, _)) = best else {
                return;
            };
            let Some(queue) = state.ready.get_mut(&queue_key) else {
                return;
            };
            let mut picked = None;
            while let Some(key) = queue.pop_front() {
                if state
                    .runs
                    .get(&key)
                    .is_some_and(|t| t.phase == Phase::Ready)
                {
                    picked = Some(key);
                    break;
                }
            }
            let Some(key) = picked else { continue };
            self.launch(state, key);
        }
    }

    pub(super) fn launch(&self, state: &mut State, key: RunKey) {
        let Some(pipeline) = state.pipelines.get(&key.pipeline).cloned() else {
            return;
        };
        let Some(tracked) = state.runs.get_mut(&key) else {
            return;
        };
        // A paused backfill keeps its ready runs aside until resumed, unless a manual run
        // waits for one: that request was made since, and explicitly.
        if tracked.manual_runs.is_empty()
            && let Some(id) = tracked.backfill.clone()
            && let Some(live) = state.backfills.get_mut(&id)
            && live.record.state == BackfillState::Paused
        {
            tracked.phase = Phase::Parked;
            live.parked.push(key);
            return;
        }
        state.next_token += 1;
        let token = state.next_token;
        tracked.phase = Phase::Running(token);
        let window = tracked.window;
        let force = tracked.force;
        let now = self.inner.clock.now();
        let deadline = pipeline
            .job(&key.job)
            .and_then(|def| def.timeout)
            .map(|timeout| now + to_delta(timeout));
        if let Some(deadline) = deadline {
            state.need_driver_by(deadline);
        }
        let stop = Arc::new(AtomicBool::new(false));
        state.running_total += 1;
        *state
            .running_pipeline
            .entry(key.pipeline.clone())
            .or_default() += 1;
        *state
            .running_job
            .entry((key.pipeline.clone(), key.job.clone()))
            .or_default() += 1;
        state.in_flight.insert(
            token,
            InFlight {
                key: key.clone(),
                started: Instant::now(),
                deadline,
                stop: stop.clone(),
                abandoned: false,
            },
        );
        let work = Work {
            key,
            token,
            pipeline,
            window,
            force,
            stop,
        };
        let sent = match &*lock(&self.inner.work) {
            Some(sender) => sender.send(work).map_err(|e| e.0),
            None => Err(work),
        };
        if let Err(work) = sent {
            warn!(run = %work.key, "scheduler is shutting down; run left queued");
        }
    }

    /// Runs on a worker thread: one attempt, then settles its outcome.
    pub(super) fn run_work(&self, work: Work) {
        let outcome = match work.pipeline.job(&work.key.job) {
            Some(def) => {
                let stop = work.stop.clone();
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.inner.materializer.attempt_partition(
                        &work.pipeline,
                        def,
                        &work.window,
                        work.force,
                        &|| stop.load(Ordering::Acquire),
                    )
                }))
                .unwrap_or_else(|panic| {
                    PartitionAttempt::Failed(format!(
                        "the job panicked: {}",
                        crate::error::panic_message(panic.as_ref())
                    ))
                })
            }
            None => PartitionAttempt::Failed(format!(
                "pipeline `{}` no longer has job `{}`",
                work.pipeline.name, work.key.job
            )),
        };
        self.finish(work.token, outcome);
    }

    /// Settles an attempt's outcome and dispatches what it made ready.
    pub(super) fn finish(&self, token: u64, outcome: PartitionAttempt) {
        let now = self.inner.clock.now();
        let mut state = lock(&self.inner.state);
        let Some(flight) = state.in_flight.remove(&token) else {
            return;
        };
        state.running_total = state.running_total.saturating_sub(1);
        if let Some(count) = state.running_pipeline.get_mut(&flight.key.pipeline) {
            *count = count.saturating_sub(1);
        }
        if let Some(count) = state
            .running_job
            .get_mut(&(flight.key.pipeline.clone(), flight.key.job.clone()))
        {
            *count = count.saturating_sub(1);
        }
        let key = flight.key;
        let elapsed_ms = flight.started.elapsed().as_secs_f64() * 1e3;
        let current = state
            .runs
            .get(&key)
            .is_some_and(|t| t.phase == Phase::Running(token));
        if flight.abandoned || !current {
            self.dispatch(&mut state);
            return;
        }
        if let Some(tracked) = state.runs.get_mut(&key) {
            tracked.last_attempt_ms = elapsed_ms;
        }
        match outcome {
            PartitionAttempt::Done(outcome) => {
                match outcome {
                    RunOutcome::Computed { rows } => info!(run = %key, rows, "run succeeded"),
                    _ => debug!(run = %key, "run fresh: its stored result stands"),
                }
                self.succeeded(&mut state, &key, outcome);
            }
            PartitionAttempt::Failed(error) => {
                self.failed(&mut state, &key, &error, true, now);
            }
            PartitionAttempt::NotReady { source, detail } => {
                self.not_ready(&mut state, &key, &source, &detail, now);
            }
            PartitionAttempt::Lost(reason) => {
                // Someone else holds the run; look again shortly.
                debug!(run = %key, %reason, "run held elsewhere; re-checking");
                Self::delay(&mut state, &key, now + TimeDelta::seconds(5));
            }
        }
        self.dispatch(&mut state);
        let wake = std::mem::take(&mut state.driver_wake_needed);
        drop(state);
        if wake {
            self.wake();
        }
    }

    /// A run fresh or computed: counted, reported, and its dependents unblocked.
    pub(super) fn succeeded(&self, state: &mut State, key: &RunKey, outcome: RunOutcome) {
        manual::report_outcome(state, key, outcome);
        let Some(tracked) = state.runs.remove(key) else {
            return;
        };
        if let Some(id) = &tracked.backfill {
            self.count_backfill(state, id, |p| p.succeeded += 1);
        }
        let Some(waiting) = state.dependents.remove(key) else {
            return;
        };
        for dependent in waiting {
            let Some(down) = state.runs.get_mut(&dependent) else {
                continue;
            };
            down.unmet = down.unmet.saturating_sub(1);
            let was_failed = down.failed_upstreams.len();
            down.failed_upstreams.retain(|failed| failed != key);
            // Unblocked only when the last of its failed upstreams has now succeeded.
            if down.phase == Phase::UpstreamFailed
                && down.failed_upstreams.len() < was_failed
                && down.failed_upstreams.is_empty()
            {
                if let Err(error) = self.inner.store.mark_unblocked(&dependent) {
                    warn!(run = %dependent, error = %error_chain(&error), "cannot unblock run");
                }
                down.phase = Phase::Waiting;
            }
            if down.phase == Phase::Waiting && down.unmet == 0 {
                down.phase = Phase::Ready;
                push_ready(state, dependent);
            }
        }
    }

    /// A failed attempt: retried after a backoff while retries remain, otherwise failed for
    /// good with its downstream runs marked upstream_failed.
    pub(super) fn failed(
        &self,
        state: &mut State,
        key: &RunKey,
        error: &str,
        retryable: bool,
        now: DateTime<Utc>,
    ) {
        let (retries, backoff) = state
            .pipelines
            .get(&key.pipeline)
            .and_then(|p| p.job(&key.job))
            .map_or((0, Duration::from_secs(30)), |def| {
                (def.retries, def.retry_backoff)
            });
        let jitter = state.rng.next();
        let Some(tracked) = state.runs.get_mut(key) else {
            return;
        };
        tracked.failures += 1;
        tracked.waiting_since = None;
        let failures = tracked.failures;
        let retry_at = (retryable && failures <= retries)
            .then(|| now + to_delta(retry_delay(backoff, failures, jitter)));
        if let Err(store_error) = self
            .inner
            .store
            .mark_failed_until(key, error, now, retry_at)
        {
            warn!(run = %key, error = %error_chain(&store_error), "cannot record the failure");
        }
        let loud = state.failure_log.should_log(key, error, now);
        match retry_at {
            Some(at) => {
                if loud {
                    warn!(run = %key, %error, retry_at = %at, "run failed; will retry");
                } else {
                    debug!(run = %key, %error, retry_at = %at, "run failed; will retry");
                }
                Self::delay(state, key, at);
            }
            None => {
                if loud {
                    warn!(run = %key, %error, "run failed for good");
                } else {
                    debug!(run = %key, %error, "run failed for good");
                }
                manual::report_outcome(
                    state,
                    key,
                    RunOutcome::Failed {
                        error: error.to_owned(),
                    },
                );
                let tracked = state.runs.remove(key);
                if let Some(id) = tracked.and_then(|t| t.backfill) {
                    self.count_backfill(state, &id, |p| p.failed += 1);
                }
                self.cascade_upstream_failed(state, key, now);
            }
        }
    }

    /// Marks every run waiting (transitively) on `failed` as upstream_failed.
    pub(super) fn cascade_upstream_failed(
        &self,
        state: &mut State,
        failed: &RunKey,
        now: DateTime<Utc>,
    ) {
        let mut stack = vec![failed.clone()];
        while let Some(upstream) = stack.pop() {
            let Some(waiting) = state.dependents.get(&upstream).cloned() else {
                continue;
            };
            for dependent in waiting {
                let Some(down) = state.runs.get_mut(&dependent) else {
                    continue;
                };
                if !down.failed_upstreams.contains(&upstream) {
                    down.failed_upstreams.push(upstream.clone());
                }
                if matches!(down.phase, Phase::Running(_)) {
                    continue;
                }
                // Blocked already (by another failed upstream): only manual runs that joined
                // it since still wait to hear, and so may its own dependents' ones.
                let newly_blocked = down.phase != Phase::UpstreamFailed;
                if !newly_blocked && down.manual_runs.is_empty() {
                    continue;
                }
                if newly_blocked {
                    down.phase = Phase::UpstreamFailed;
                    let backfill = down.backfill.clone();
                    if let Err(error) = self
                        .inner
                        .store
                        .mark_upstream_failed(&dependent, &upstream, now)
                    {
                        warn!(run = %dependent, error = %error_chain(&error), "cannot record upstream failure");
                    }
                    if let Some(id) = backfill {
                        self.count_backfill(state, &id, |p| p.failed += 1);
                    }
                }
                manual::report_outcome(
                    state,
                    &dependent,
                    RunOutcome::UpstreamFailed {
                        upstream: format!(
                            "{}@{}",
                            upstream.job,
                            upstream.partition_start.to_rfc3339()
                        ),
                    },
                );
                stack.push(dependent);
            }
        }
    }

    pub(super) fn not_ready(
        &self,
        state: &mut State,
        key: &RunKey,
        source: &str,
        detail: &str,
        now: DateTime<Utc>,
    ) {
        let wait = state
            .pipelines
            .get(&key.pipeline)
            .and_then(|p| p.sources.get(source))
            .map_or(Duration::ZERO, |s| s.wait);
        let delay = state
            .pipelines
            .get(&key.pipeline)
            .and_then(|p| p.job(&key.job))
            .map_or(TimeDelta::zero(), |def| {
                def.trigger.delay.max(TimeDelta::zero())
            });
        let Some(tracked) = state.runs.get_mut(key) else {
            return;
        };
        let first_look = tracked.waiting_since.is_none();
        let since = *tracked.waiting_since.get_or_insert(now);
        let window = tracked.window;
        // A window's files are due within `wait` of its end (plus the job's delay): a run
        // that looks later (a backfill of the past, a catch-up, a busy queue) and finds none
        // fails at once, since none will come by waiting.
        let deadline = window.end + delay + to_delta(wait);
        if now >= deadline {
            let error = format!(
                "source `{source}` has no files for [{}, {}); they were due by {} ({} after \
                 the window's end{}): {detail}",
                window.start.to_rfc3339(),
                window.end.to_rfc3339(),
                deadline.to_rfc3339(),
                humantime::format_duration(wait),
                if delay > TimeDelta::zero() {
                    " and the job's delay"
                } else {
                    ""
                }
            );
            // Waiting again would only repeat the wait; a backfill re-tries it on demand.
            self.failed(state, key, &error, false, now);
            return;
        }
        if first_look {
            info!(run = %key, source, until = %deadline.to_rfc3339(), "waiting for source files");
        }
        // Look again at a twentieth of the wait, between 5 seconds and 5 minutes.
        let step = (wait / 20).clamp(Duration::from_secs(5), Duration::from_secs(300));
        let recheck = (now + to_delta(step)).min(deadline);
        let reason = format!("waiting for files of source `{source}`");
        if let Err(error) = self.inner.store.mark_waiting(key, &reason, since, recheck) {
            warn!(run = %key, error = %error_chain(&error), "cannot record the wait");
        }
        Self::delay(state, key, recheck.max(now + TimeDelta::milliseconds(1)));
    }

    pub(super) fn settle_timeouts(&self, state: &mut State, now: DateTime<Utc>) {
        let expired: Vec<(u64, RunKey)> = state
            .in_flight
            .iter()
            .filter(|(_, f)| !f.abandoned && f.deadline.is_some_and(|d| d <= now))
            .map(|(token, f)| (*token, f.key.clone()))
            .collect();
        for (token, key) in expired {
            let timeout = state
                .pipelines
                .get(&key.pipeline)
                .and_then(|p| p.job(&key.job))
                .and_then(|def| def.timeout)
                .unwrap_or_default();
            if let Some(flight) = state.in_flight.get_mut(&token) {
                flight.abandoned = true;
                flight.stop.store(true, Ordering::Release);
            }
            // The worker's commit is refused from now on (the attempt is no longer
            // current); its slot stays taken until the computation returns.
            let error = format!(
                "timed out after {} (the job's timeout)",
                humantime::format_duration(timeout)
            );
            if let Some(tracked) = state.runs.get_mut(&key) {
                tracked.phase = Phase::Waiting;
            }
            self.failed(state, &key, &error, true, now);
        }
    }
}

pub(super) fn push_ready(state: &mut State, key: RunKey) {
    state
        .ready
        .entry((key.pipeline.clone(), key.job.clone()))
        .or_default()
        .push_back(key);
}
