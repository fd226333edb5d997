//! Time partitions: the hourly, daily, weekly and monthly windows that Floe jobs run over.
//!
//! This module owns the mapping between local calendars and UTC instants: which window of a
//! grain contains an instant, which window follows another, which windows fill a range, how a
//! coarse window splits into finer ones, how a window is labelled, and how user-given instants
//! and timezone names are parsed. Every function is pure: the current time is always a
//! parameter, never read from the clock.
//!
//! # DST policy
//!
//! Local wall-clock times are turned into UTC instants by [`resolve_local`]:
//!
//! - a local time that falls in a DST gap (the clocks jump over it) maps to the first valid
//!   instant after the gap, the instant the clocks jump to: 02:30 on New York's spring-forward
//!   day resolves to 03:00 EDT;
//! - a local time that happens twice (DST overlap) maps to the EARLIER of the two instants:
//!   01:30 on New York's fall-back day resolves to 01:30 EDT.
//!
//! Equivalently, a local time resolves to the first instant at which the wall clock reads that
//! time or later.
//!
//! # Windows
//!
//! A [`Window`] is a half-open range `[start, end)` of UTC instants. The windows of one grain
//! tile the time line in a given timezone: each ends where the next starts.
//!
//! - Daily: `[resolve(D 00:00), resolve(D+1 00:00))` for each local date `D`. A day whose
//!   midnight falls in a gap starts when the clocks jump (`America/Sao_Paulo` 2018-11-04 starts
//!   at 01:00 local). A local day that never happened (`Pacific/Apia` skipped 2011-12-30) has no
//!   window at all, because windows are never empty; [`window_containing`], [`next_window`]
//!   and [`windows_within`] step over it.
//! - Weekly: ISO weeks, from Monday 00:00 local to the next Monday 00:00 local.
//! - Monthly: from the 1st 00:00 local to the next month's 1st 00:00 local.
//! - Hourly: within each local day, a boundary at every instant where the wall clock reads
//!   `HH:00` for each hour `HH` of that day. An `HH:00` that falls in a gap maps to the instant
//!   the clocks jump to; an `HH:00` that happens twice contributes both instants; coinciding
//!   boundaries count once. So New York's spring-forward day has 23 hourly windows and its
//!   fall-back day 25, each exactly one hour; `Asia/Kolkata` (+05:30) hours start at :30 UTC; on
//!   `Australia/Lord_Howe`'s transition days (a 30-minute shift) one window lasts 30 or 90
//!   minutes. Hourly windows always tile the daily windows exactly.
//!
//! When every clock change moves by a multiple of 30 minutes, at most 2 hours, on the hour or
//! half hour, every hourly window lasts between 30 minutes and 2 hours (the tests check this
//! for each of their zones over 1990..2040). Other changes break those bounds, in historical
//! data only:
//!
//! - shorter: when New York left local mean time on 1883-11-18 its clocks went back 3 min
//!   58 s at noon; since an `HH:00` that happens twice contributes both instants, that day has
//!   an hourly window of 3 min 58 s;
//! - longer: when Alaska moved across the date line in 1867 its clocks went back a whole day
//!   mid-afternoon; the replayed hours of the previous date are no `HH:00` of the current local
//!   day, so they fold into one window of about ten hours.
//!
//! Instants within a few days of the ends of chrono's range (about ±262,000 years) get windows
//! clamped to [`DateTime::<Utc>::MIN_UTC`] / [`DateTime::<Utc>::MAX_UTC`]; these may not
//! contain the instant. Nowhere else can a window be empty.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Days, Months, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta,
    TimeZone, Utc,
};
use chrono_tz::Tz;

/// How long a partition window is, declared from finest to coarsest.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Grain {
    Hourly,
    Daily,
    Weekly,
    Monthly,
}

impl Grain {
    /// Every grain, finest first.
    pub const ALL: [Grain; 4] = [Grain::Hourly, Grain::Daily, Grain::Weekly, Grain::Monthly];

    /// The lowercase name used in configuration and labels: "hourly", "daily", ...
    pub fn as_str(self) -> &'static str {
        match self {
            Grain::Hourly => "hourly",
            Grain::Daily => "daily",
            Grain::Weekly => "weekly",
            Grain::Monthly => "monthly",
        }
    }

    /// True when every window of `self` lies inside exactly one window of `coarser`, in every
    /// timezone. A grain nests in itself; hourly nests in daily, weekly and monthly; daily nests
    /// in weekly and monthly. Weekly does NOT nest in monthly (a week can straddle two months),
    /// and a coarser grain never nests in a finer one.
    pub fn nests_in(self, coarser: Grain) -> bool {
        match (self, coarser) {
            (fine, coarse) if fine == coarse => true,
            (Grain::Hourly, Grain::Daily | Grain::Weekly | Grain::Monthly)
            | (Grain::Daily, Grain::Weekly | Grain::Monthly) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Grain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Grain {
    type Err = PartitionError;

    /// Accepts the lowercase names produced by [`Grain::as_str`].
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Grain::ALL
            .into_iter()
            .find(|grain| grain.as_str() == name)
            .ok_or_else(|| PartitionError::UnknownGrain(name.to_owned()))
    }
}

/// A half-open window `[start, end)` of UTC instants; never empty.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    /// True when `start <= t < end`.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }

    /// The elapsed time from `start` to `end`.
    pub fn duration(&self) -> TimeDelta {
        self.end - self.start
    }

    /// True when `other` lies entirely inside this window.
    pub fn contains_window(&self, other: &Window) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

/// What can go wrong turning user input into partitions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    #[error("unknown grain `{0}` (expected hourly, daily, weekly or monthly)")]
    UnknownGrain(String),
    #[error("unknown timezone `{0}` (expected an IANA name such as UTC or Europe/London)")]
    UnknownTimezone(String),
    #[error("bad instant `{input}`: {reason}")]
    BadInstant { input: String, reason: String },
}

/// Parses an IANA timezone name such as "UTC" or "Europe/London" (surrounding whitespace is
/// ignored, case is not).
///
/// # Errors
///
/// [`PartitionError::UnknownTimezone`] naming the input when it is not a known zone.
pub fn parse_timezone(name: &str) -> Result<Tz, PartitionError> {
    name.trim()
        .parse::<Tz>()
        .map_err(|_| PartitionError::UnknownTimezone(name.to_owned()))
}

/// Local wall time → UTC under the module's DST policy: a local time in a DST gap maps to the
/// first valid instant after the gap (the instant the clocks jump to); an ambiguous local time
/// (DST overlap) maps to the EARLIER instant.
///
/// A local time whose UTC instant chrono cannot represent saturates at
/// [`DateTime::<Utc>::MIN_UTC`] or [`DateTime::<Utc>::MAX_UTC`].
pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match instants_reading(tz, local) {
        Some((earliest, _)) => earliest,
        None if local.year() < 1970 => DateTime::<Utc>::MIN_UTC,
        None => DateTime::<Utc>::MAX_UTC,
    }
}

/// The window of `grain` containing `instant`.
pub fn window_containing(grain: Grain, tz: Tz, instant: DateTime<Utc>) -> Window {
    match grain {
        Grain::Hourly => {
            let (day, day_window) = calendar_window_containing(Grain::Daily, tz, instant);
            hours_of_day(tz, day, day_window)
                .into_iter()
                .find(|hour| hour.contains(instant))
                // Only reachable at the clamped ends of chrono's range.
                .unwrap_or(day_window)
        }
        Grain::Daily | Grain::Weekly | Grain::Monthly => {
            calendar_window_containing(grain, tz, instant).1
        }
    }
}

/// The window that starts where `window` ends. For a `window` that is not a window of `grain`,
/// the first window of `grain` starting at or after `window.end`.
pub fn next_window(grain: Grain, tz: Tz, window: &Window) -> Window {
    let containing_end = window_containing(grain, tz, window.end);
    if containing_end.start >= window.end {
        containing_end
    } else {
        window_containing(grain, tz, containing_end.end)
    }
}

/// Windows of `grain` lying entirely inside `[from, to)`, ascending. Empty when none fits.
pub fn windows_within(grain: Grain, tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Window> {
    let mut windows = Vec::new();
    if from >= to {
        return windows;
    }
    let inside =
        |window: &Window| from <= window.start && window.end <= to && window.start < window.end;
    // Walk calendar periods (days for hourly) rather than chaining `next_window`, so each local
    // day's hour boundaries are computed once.
    let period_grain = if grain == Grain::Hourly {
        Grain::Daily
    } else {
        grain
    };
    let (mut period, mut period_window) = calendar_window_containing(period_grain, tz, from);
    loop {
        if grain == Grain::Hourly {
            windows.extend(
                hours_of_day(tz, period, period_window)
                    .into_iter()
                    .filter(|hour| inside(hour)),
            );
        } else if inside(&period_window) {
            windows.push(period_window);
        }
        if period_window.end >= to {
            break;
        }
        let Some(following) = following_period(period_grain, period) else {
            break;
        };
        period = following;
        period_window = calendar_window(period_grain, tz, period);
    }
    windows
}

/// The windows of the finer grain `fine` that exactly tile `coarse` (a window of a grain `fine`
/// nests in), ascending. When `fine` does not nest in the grain of `coarse`, the windows of
/// `fine` lying entirely inside `coarse`, which then need not cover it.
pub fn subwindows(fine: Grain, tz: Tz, coarse: &Window) -> Vec<Window> {
    windows_within(fine, tz, coarse.start, coarse.end)
}

/// Human label of a window in its timezone: hourly "2024-03-10T01:00-05:00" (local start with
/// offset), daily "2024-03-10", weekly "2024-W10" (ISO week of the local start), monthly
/// "2024-03".
pub fn partition_label(grain: Grain, tz: Tz, window: &Window) -> String {
    let local_start = wall_clock(tz, window.start).date();
    match grain {
        Grain::Hourly => window
            .start
            .with_timezone(&tz)
            .format("%Y-%m-%dT%H:%M%:z")
            .to_string(),
        Grain::Daily => local_start.format("%Y-%m-%d").to_string(),
        Grain::Weekly => {
            let week = local_start.iso_week();
            format!("{:04}-W{:02}", week.year(), week.week())
        }
        Grain::Monthly => local_start.format("%Y-%m").to_string(),
    }
}

/// Parses a user-given instant: RFC 3339 with an offset ("2024-03-10T05:00:00Z",
/// "2024-03-10T06:00:00+01:00"), or a local date "2024-03-10" (local midnight) or local
/// date-time "2024-03-10T01:00" / "2024-03-10 01:00:00" in `tz`, resolved by [`resolve_local`].
///
/// # Errors
///
/// [`PartitionError::BadInstant`] naming the input when it matches none of these forms, names
/// a date or time that does not exist ("2024-02-30"), or lies beyond chrono's range.
pub fn parse_instant(input: &str, tz: Tz) -> Result<DateTime<Utc>, PartitionError> {
    let bad = |reason: &str| PartitionError::BadInstant {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    let text = input.trim();
    if text.is_empty() {
        return Err(bad("empty input"));
    }
    let mut errors = Vec::new();
    match DateTime::parse_from_rfc3339(text) {
        Ok(instant) => return Ok(instant.to_utc()),
        Err(error) => errors.push(error),
    }
    let mut local = None;
    for format in LOCAL_DATE_TIME_FORMATS {
        match NaiveDateTime::parse_from_str(text, format) {
            Ok(parsed) => {
                local = Some(parsed);
                break;
            }
            Err(error) => errors.push(error),
        }
    }
    if local.is_none() {
        match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            Ok(date) => local = Some(date.and_time(NaiveTime::MIN)),
            Err(error) => errors.push(error),
        }
    }
    let Some(local) = local else {
        // A format that matched the shape but not the values ("2024-02-30") says more than
        // "no format matched".
        let value_error = errors.iter().find(|error| {
            matches!(
                error.kind(),
                chrono::format::ParseErrorKind::OutOfRange
                    | chrono::format::ParseErrorKind::Impossible
            )
        });
        return Err(match value_error {
            Some(error) => bad(&format!("no such date or time ({error})")),
            None => bad(EXPECTED_INSTANT_FORMS),
        });
    };
    instants_reading(tz, local)
        .map(|(earliest, _)| earliest)
        .ok_or_else(|| bad("outside the representable range"))
}

const LOCAL_DATE_TIME_FORMATS: [&str; 4] = [
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
];

const EXPECTED_INSTANT_FORMS: &str = "expected RFC 3339 with an offset (2024-03-10T05:00:00Z), \
     a local date (2024-03-10) or a local date-time (2024-03-10T01:00)";

/// No UTC offset reaches 24 hours, so within this distance of a local time read as UTC lies
/// every instant whose wall clock can read it.
const GAP_SEARCH_RADIUS_SECS: i64 = 25 * 3600;

/// Aligning a period with an instant takes a step or two at most in any real timezone; the
/// bound only guarantees termination at the clamped ends of chrono's range.
const MAX_ALIGNMENT_STEPS: usize = 8;

/// The wall-clock reading of `instant` in `tz`, saturating at chrono's range ends (where
/// `DateTime::naive_local` would panic).
fn wall_clock(tz: Tz, instant: DateTime<Utc>) -> NaiveDateTime {
    let utc = instant.naive_utc();
    let offset = tz.offset_from_utc_datetime(&utc).fix();
    utc.checked_add_offset(offset)
        .unwrap_or(if offset.local_minus_utc() > 0 {
            NaiveDateTime::MAX
        } else {
            NaiveDateTime::MIN
        })
}

/// The instants at which the wall clock of `tz` reads `local`: the earliest, and the later one
/// when the reading happens twice. A reading inside a gap yields the instant the clocks jump
/// to. `None` only when the instant lies beyond chrono's range.
fn instants_reading(
    tz: Tz,
    local: NaiveDateTime,
) -> Option<(DateTime<Utc>, Option<DateTime<Utc>>)> {
    match tz.from_local_datetime(&local) {
        chrono::LocalResult::Single(instant) => Some((instant.to_utc(), None)),
        chrono::LocalResult::Ambiguous(first, second) => {
            let (first, second) = (first.to_utc(), second.to_utc());
            Some((first.min(second), Some(first.max(second))))
        }
        chrono::LocalResult::None => {
            first_instant_reading_at_least(tz, local).map(|instant| (instant, None))
        }
    }
}

/// The first whole-second instant at which the wall clock of `tz` reads `local` or later, found
/// by bisection: chrono-tz does not expose its transitions, and DST transitions fall on whole
/// seconds.
fn first_instant_reading_at_least(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let reads_at_least = |secs: i64| {
        DateTime::from_timestamp(secs, 0).is_some_and(|instant| wall_clock(tz, instant) >= local)
    };
    let centre = local.and_utc().timestamp();
    let mut below = centre
        .saturating_sub(GAP_SEARCH_RADIUS_SECS)
        .max(DateTime::<Utc>::MIN_UTC.timestamp());
    let mut above = centre
        .saturating_add(GAP_SEARCH_RADIUS_SECS)
        .min(DateTime::<Utc>::MAX_UTC.timestamp());
    if reads_at_least(below) {
        return DateTime::from_timestamp(below, 0);
    }
    if !reads_at_least(above) {
        return None;
    }
    while above - below > 1 {
        let middle = below + (above - below) / 2;
        if reads_at_least(middle) {
            above = middle;
        } else {
            below = middle;
        }
    }
    DateTime::from_timestamp(above, 0)
}

/// The first local date of the period of `grain` containing `date` (hourly periods are days).
fn period_start(grain: Grain, date: NaiveDate) -> NaiveDate {
    match grain {
        Grain::Hourly | Grain::Daily => date,
        Grain::Weekly => date
            .checked_sub_days(Days::new(u64::from(date.weekday().num_days_from_monday())))
            .unwrap_or(date),
        Grain::Monthly => date.with_day(1).unwrap_or(date),
    }
}

fn following_period(grain: Grain, start: NaiveDate) -> Option<NaiveDate> {
    match grain {
        Grain::Hourly | Grain::Daily => start.succ_opt(),
        Grain::Weekly => start.checked_add_days(Days::new(7)),
        Grain::Monthly => start.checked_add_months(Months::new(1)),
    }
}

fn preceding_period(grain: Grain, start: NaiveDate) -> Option<NaiveDate> {
    match grain {
        Grain::Hourly | Grain::Daily => start.pred_opt(),
        Grain::Weekly => start.checked_sub_days(Days::new(7)),
        Grain::Monthly => start.checked_sub_months(Months::new(1)),
    }
}

fn local_midnight(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    resolve_local(tz, date.and_time(NaiveTime::MIN))
}

/// The window of the calendar period starting on local date `start`; empty for a period that
/// never happened (a skipped day).
fn calendar_window(grain: Grain, tz: Tz, start: NaiveDate) -> Window {
    Window {
        start: local_midnight(tz, start),
        end: following_period(grain, start).map_or(DateTime::<Utc>::MAX_UTC, |following| {
            local_midnight(tz, following)
        }),
    }
}

/// The calendar period (by its first local date) whose window contains `instant`, and that
/// window.
fn calendar_window_containing(grain: Grain, tz: Tz, instant: DateTime<Utc>) -> (NaiveDate, Window) {
    let mut period = period_start(grain, wall_clock(tz, instant).date());
    let mut window = calendar_window(grain, tz, period);
    // The instant's local date usually names its period. It does not when the clocks fall back
    // across midnight (the repeated late hours of day D come after day D+1 began); then step to
    // the neighbour, and past any skipped day's empty window. Windows are contiguous, so the
    // steps never oscillate.
    for _ in 0..MAX_ALIGNMENT_STEPS {
        let step = if window.start > instant {
            preceding_period(grain, period)
        } else if window.end <= instant {
            following_period(grain, period)
        } else {
            None
        };
        let Some(neighbour) = step else {
            break;
        };
        period = neighbour;
        window = calendar_window(grain, tz, period);
    }
    (period, window)
}

/// The hourly windows tiling the local day `day`, whose daily window is `day_window`.
fn hours_of_day(tz: Tz, day: NaiveDate, day_window: Window) -> Vec<Window> {
    let mut starts = Vec::with_capacity(26);
    starts.push(day_window.start);
    for local in (0..24).filter_map(|hour| day.and_hms_opt(hour, 0, 0)) {
        if let Some((earliest, later)) = instants_reading(tz, local) {
            starts.push(earliest);
            starts.extend(later);
        }
    }
    // An HH:00 that happens twice can have one reading outside this day when the clocks fall
    // back across midnight; the daily window decides which day owns it.
    starts.retain(|start| day_window.contains(*start));
    starts.sort_unstable();
    starts.dedup();
    let ends = starts
        .iter()
        .skip(1)
        .copied()
        .chain(std::iter::once(day_window.end));
    starts
        .iter()
        .zip(ends)
        .map(|(&start, end)| Window { start, end })
        .collect()
}

#[cfg(test)]
mod tests;
