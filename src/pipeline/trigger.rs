//! When partitions become due: a job's trigger (its grain's window close plus a late-data
//! delay, or an explicit cron) and a pipeline's catch-up policy. Pure functions of an
//! instant, so schedules are tested on any clock, across DST changes and month ends.

use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use crate::partition::{Grain, window_containing};

/// Why a schedule setting (a cron expression or a catch-up policy) is refused.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("invalid cron expression `{expression}`: {source}")]
    InvalidCron {
        expression: String,
        #[source]
        source: croner::errors::CronError,
    },
    #[error(
        "unknown catch-up policy `{policy}` (expected `all`, `latest`, or a number N of latest \
         partitions, at least 1)"
    )]
    UnknownCatchUp { policy: String },
}

/// A parsed cron expression (5 fields, or 6 with seconds first), evaluated in the
/// pipeline's timezone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    pub expression: String,
    cron: croner::Cron,
}

impl CronSchedule {
    pub fn parse(expression: &str) -> Result<CronSchedule, TriggerError> {
        croner::Cron::from_str(expression)
            .map(|cron| CronSchedule {
                expression: expression.to_owned(),
                cron,
            })
            .map_err(|source| TriggerError::InvalidCron {
                expression: expression.to_owned(),
                source,
            })
    }

    /// The latest fire instant at or before `now`.
    pub fn previous(&self, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&now.with_timezone(&tz), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The first fire instant strictly after `now`.
    pub fn next(&self, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&now.with_timezone(&tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// When a job's partitions become due.
#[derive(Debug, Clone, Default)]
pub struct Trigger {
    /// An explicit cron; without one a partition is due when its window closes.
    pub cron: Option<CronSchedule>,
    /// Grace for late data: a window is due this long after it closes (or after the cron
    /// fire that follows its close).
    pub delay: TimeDelta,
}

impl Trigger {
    /// Windows whose end is at or before the returned instant are due at `now`.
    pub fn due_through(&self, tz: Tz, now: DateTime<Utc>) -> DateTime<Utc> {
        let base = match &self.cron {
            None => Some(now),
            Some(cron) => cron.previous(tz, now),
        };
        base.map_or(DateTime::<Utc>::MIN_UTC, |base| base - self.delay)
    }

    /// The first instant after `now` at which more of a `grain` job's windows become due;
    /// the scheduler sleeps until then.
    pub fn next_due_after(
        &self,
        grain: Grain,
        tz: Tz,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        match &self.cron {
            None => {
                let through = now - self.delay;
                Some(window_containing(grain, tz, through).end + self.delay)
            }
            Some(cron) => cron.next(tz, now),
        }
    }

    /// The cron expression tokio-cron-scheduler fires for this trigger (6 fields, seconds
    /// first): the explicit cron, or the grain's window boundaries shifted by the delay.
    pub fn cron_expression(&self, grain: Grain) -> String {
        if let Some(cron) = &self.cron {
            return match cron.expression.split_whitespace().count() {
                5 => format!("0 {}", cron.expression),
                _ => cron.expression.clone(),
            };
        }
        // The fire time is the window boundary shifted by the delay (modulo a day). Weekly
        // and monthly windows close at a local midnight, so they are woken daily; a wake-up
        // with nothing due costs one look at the clock.
        let delay = self.delay.num_seconds().max(0);
        let (seconds, minutes, hours) = (delay % 60, (delay / 60) % 60, (delay / 3600) % 24);
        match grain {
            Grain::Hourly => format!("{seconds} {minutes} * * * *"),
            Grain::Daily | Grain::Weekly | Grain::Monthly => {
                format!("{seconds} {minutes} {hours} * * *")
            }
        }
    }
}

/// How many missed partitions a pipeline plans after downtime, per job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Every missed partition (up to the hard cap).
    All,
    /// Only the latest N missed partitions; older ones are left for a backfill.
    Latest(u32),
}

impl CatchUp {
    pub fn parse(text: &str) -> Result<CatchUp, TriggerError> {
        match text.trim() {
            "all" => Ok(CatchUp::All),
            "latest" => Ok(CatchUp::Latest(1)),
            other => match other.parse::<u32>() {
                Ok(0) | Err(_) => Err(TriggerError::UnknownCatchUp {
                    policy: other.to_owned(),
                }),
                Ok(n) => Ok(CatchUp::Latest(n)),
            },
        }
    }

    /// How many of `missed` partitions to plan under this policy and the hard `cap`.
    pub fn keep(self, missed: usize, cap: u32) -> usize {
        let cap = cap as usize;
        match self {
            CatchUp::All => missed.min(cap),
            CatchUp::Latest(n) => missed.min(n as usize).min(cap),
        }
    }
}

/// A pipeline's scheduling settings (`schedule:` in its YAML).
#[derive(Debug, Clone)]
pub struct PipelineSchedule {
    /// `false`: no recurring runs, only backfills and manual runs.
    pub enabled: bool,
    pub catch_up: CatchUp,
    /// Most partitions planned per job in one catch-up, whatever the policy says.
    pub max_catch_up: u32,
    /// Most runs of this pipeline at once.
    pub concurrency: Option<u32>,
}

/// The hard cap on a catch-up when the pipeline sets none.
pub const DEFAULT_MAX_CATCH_UP: u32 = 1000;

impl Default for PipelineSchedule {
    fn default() -> Self {
        PipelineSchedule {
            enabled: true,
            catch_up: CatchUp::All,
            max_catch_up: DEFAULT_MAX_CATCH_UP,
            concurrency: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    #[test]
    fn grain_trigger_is_due_when_the_window_closes_plus_delay() {
        let trigger = Trigger {
            cron: None,
            delay: TimeDelta::minutes(10),
        };
        let now = utc(2024, 3, 1, 5, 5);
        assert_eq!(trigger.due_through(Tz::UTC, now), utc(2024, 3, 1, 4, 55));
        // [04:00, 05:00) becomes due at 05:10.
        assert_eq!(
            trigger.next_due_after(Grain::Hourly, Tz::UTC, now),
            Some(utc(2024, 3, 1, 5, 10))
        );
        let at = utc(2024, 3, 1, 5, 10);
        assert_eq!(trigger.due_through(Tz::UTC, at), utc(2024, 3, 1, 5, 0));
        assert_eq!(
            trigger.next_due_after(Grain::Hourly, Tz::UTC, at),
            Some(utc(2024, 3, 1, 6, 10))
        );
    }

    #[test]
    fn daily_windows_close_at_local_midnight_across_dst() {
        let trigger = Trigger::default();
        let ny: Tz = "America/New_York".parse().unwrap();
        // 2024-03-10 is 23 hours long in New York: it closes at 04:00Z on the 11th.
        let now = utc(2024, 3, 10, 12, 0);
        assert_eq!(
            trigger.next_due_after(Grain::Daily, ny, now),
            Some(utc(2024, 3, 11, 4, 0))
        );
        // 2024-11-03 is 25 hours long: it opens at 04:00Z and closes at 05:00Z next day.
        let now = utc(2024, 11, 3, 12, 0);
        assert_eq!(
            trigger.next_due_after(Grain::Daily, ny, now),
            Some(utc(2024, 11, 4, 5, 0))
        );
        // Lord Howe shifts by half an hour: its day of 2024-04-07 is 24.5 hours long.
        let lord_howe: Tz = "Australia/Lord_Howe".parse().unwrap();
        let start = utc(2024, 4, 6, 13, 0); // local midnight, +11:00
        let next = trigger
            .next_due_after(Grain::Daily, lord_howe, start)
            .unwrap();
        assert_eq!(next - start, TimeDelta::minutes(24 * 60 + 30));
    }

    #[test]
    fn monthly_windows_close_at_month_ends_and_leap_days() {
        let trigger = Trigger::default();
        let london: Tz = "Europe/London".parse().unwrap();
        let now = utc(2024, 2, 15, 0, 0);
        // February 2024 has 29 days; London is on GMT then.
        assert_eq!(
            trigger.next_due_after(Grain::Monthly, london, now),
            Some(utc(2024, 3, 1, 0, 0))
        );
        // March closes at local midnight of April 1st, which is BST (+01:00).
        let now = utc(2024, 3, 31, 23, 30);
        // At 23:30Z London is already in April (00:30 BST): March closed at 23:00Z and
        // April closes at its local midnight, 2024-04-30T23:00Z.
        assert_eq!(
            trigger.next_due_after(Grain::Monthly, london, now),
            Some(utc(2024, 4, 30, 23, 0))
        );
    }

    #[test]
    fn cron_trigger_fires_in_the_pipeline_timezone() {
        let trigger = Trigger {
            cron: Some(CronSchedule::parse("30 2 * * *").unwrap()),
            delay: TimeDelta::zero(),
        };
        let london: Tz = "Europe/London".parse().unwrap();
        // 02:30 London on 2024-06-01 is 01:30Z (BST).
        let now = utc(2024, 6, 1, 12, 0);
        assert_eq!(trigger.due_through(london, now), utc(2024, 6, 1, 1, 30));
        assert_eq!(
            trigger.next_due_after(Grain::Daily, london, now),
            Some(utc(2024, 6, 2, 1, 30))
        );
        assert_eq!(trigger.cron_expression(Grain::Daily), "0 30 2 * * *");
        assert!(CronSchedule::parse("61 * * * *").is_err());
    }

    #[test]
    fn catch_up_policies_keep_the_latest_within_the_cap() {
        assert_eq!(CatchUp::parse("all").unwrap().keep(5000, 1000), 1000);
        assert_eq!(CatchUp::parse("latest").unwrap().keep(50, 1000), 1);
        assert_eq!(CatchUp::parse("24").unwrap().keep(50, 1000), 24);
        assert_eq!(CatchUp::parse("24").unwrap().keep(3, 1000), 3);
        assert!(CatchUp::parse("0").is_err());
        assert!(
            CatchUp::parse("some")
                .unwrap_err()
                .to_string()
                .contains("`some`")
        );
    }
}
