//! Cron triggers: tokio-cron-scheduler wakes the driver when a job's trigger fires.

use super::*;

/// Registers one tokio-cron-scheduler job per (pipeline, job) trigger, each waking the
/// driver when it fires. The driver recomputes what is due from the clock, so a trigger is
/// only a wake-up: tokio-cron-scheduler fixes a timezone's UTC offset when a job is created,
/// and the due instants themselves come from [`trigger`], which follows DST. Returns `None`
/// (and the driver's own sleep carries on alone) if the cron scheduler cannot start.
pub async fn start_triggers(scheduler: &Scheduler) -> Option<tokio_cron_scheduler::JobScheduler> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    let pipelines: Vec<Arc<Pipeline>> = lock(&scheduler.inner.state)
        .pipelines
        .values()
        .cloned()
        .collect();
    if !scheduler.inner.config.recurring {
        return None;
    }
    let cron = match JobScheduler::new().await {
        Ok(cron) => cron,
        Err(error) => {
            warn!(%error, "cron triggers unavailable; the scheduler wakes by its own timer");
            return None;
        }
    };
    let mut expressions: HashSet<(String, chrono_tz::Tz)> = HashSet::new();
    for pipeline in &pipelines {
        for def in pipeline.jobs.values() {
            expressions.insert((def.trigger.cron_expression(def.grain), pipeline.timezone));
        }
    }
    for (expression, tz) in expressions {
        let waker = scheduler.clone();
        let job = Job::new_async_tz(expression.as_str(), tz, move |_, _| {
            let waker = waker.clone();
            Box::pin(async move { waker.wake() })
        });
        match job {
            Ok(job) => {
                if let Err(error) = cron.add(job).await {
                    warn!(%error, %expression, "cannot register cron trigger");
                }
            }
            Err(error) => warn!(%error, %expression, "cannot parse cron trigger"),
        }
    }
    if let Err(error) = cron.start().await {
        warn!(%error, "cannot start cron triggers");
        return None;
    }
    Some(cron)
}
