//! Source path templates: `events/date={date}/hour={hour}/*.parquet`.
//!
//! A template is expanded for a partition window by stepping through the window at the finest
//! unit the template names (an hour for `{hour}`, a day for `{date}`/`{day}`, …) in the
//! source's timezone, so an hourly job reads one folder and a daily job reads 24. Rows are
//! still filtered on the time column afterwards: a folder per local day read by an hourly job
//! in another zone gives the right rows.

use chrono::{DateTime, Datelike, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;

use crate::partition::Window;

/// Why a source path template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("path is empty")]
    Empty,
    #[error("unmatched `}}` at byte {offset} of `{template}`")]
    UnmatchedClose { template: String, offset: usize },
    #[error("unclosed `{{` in `{template}`")]
    Unclosed { template: String },
    #[error(
        "unknown template variable `{{{name}}}` (known: {})",
        known_variables()
    )]
    UnknownVariable { name: String },
}

/// The variables a template may use, as written in one: `{year}, {month}, …`.
fn known_variables() -> String {
    VARIABLES.map(|v| format!("{{{v}}}")).join(", ")
}

/// The variables a template may use, finest last.
const VARIABLES: [&str; 5] = ["year", "month", "day", "date", "hour"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Year,
    Month,
    Day,
    Date,
    Hour,
}

/// The unit a template varies by, from which expansion steps are derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    None,
    Year,
    Month,
    Day,
    Hour,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    raw: String,
    pieces: Vec<Piece>,
    step: Step,
}

impl PathTemplate {
    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn parse(raw: &str) -> Result<Self, TemplateError> {
        if raw.trim().is_empty() {
            return Err(TemplateError::Empty);
        }
        let mut pieces = Vec::new();
        let mut step = Step::None;
        let mut rest = raw;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(TemplateError::UnmatchedClose {
                    template: raw.to_owned(),
                    offset: raw.len() - rest.len() + open,
                });
            }
            if open > 0 {
                pieces.push(Piece::Literal(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or_else(|| TemplateError::Unclosed {
                template: raw.to_owned(),
            })?;
            let name = &after[..close];
            let (piece, unit) = match name {
                "year" => (Piece::Year, Step::Year),
                "month" => (Piece::Month, Step::Month),
                "day" => (Piece::Day, Step::Day),
                "date" => (Piece::Date, Step::Day),
                "hour" => (Piece::Hour, Step::Hour),
                other => {
                    return Err(TemplateError::UnknownVariable {
                        name: other.to_owned(),
                    });
                }
            };
            step = step.max(unit);
            pieces.push(piece);
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_owned()));
        }
        Ok(PathTemplate {
            raw: raw.to_owned(),
            pieces,
            step,
        })
    }

    pub fn raw(&self) -> &str {
        &self.raw
    }

    pub fn is_templated(&self) -> bool {
        self.step != Step::None
    }

    /// The distinct paths covering `window`, in time order.
    pub fn expand(&self, window: &Window, tz: Tz) -> Vec<String> {
        if !self.is_templated() {
            return vec![self.raw.clone()];
        }
        let mut paths: Vec<String> = Vec::new();
        let mut instant = window.start;
        while instant < window.end {
            let path = self.render(instant, tz);
            if paths.last() != Some(&path) {
                paths.push(path);
            }
            instant = self.next_boundary(instant, tz);
        }
        paths
    }

    fn render(&self, instant: DateTime<Utc>, tz: Tz) -> String {
        let local = instant.with_timezone(&tz);
        let mut out = String::with_capacity(self.raw.len() + 8);
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Year => out.push_str(&format!("{:04}", local.year())),
                Piece::Month => out.push_str(&format!("{:02}", local.month())),
                Piece::Day => out.push_str(&format!("{:02}", local.day())),
                Piece::Date => out.push_str(&local.format("%Y-%m-%d").to_string()),
                Piece::Hour => out.push_str(&format!("{:02}", local.hour())),
            }
        }
        out
    }

    /// The first instant after `instant` at which the rendered path can change. Stepping by
    /// UTC hours is always safe (every zone's offsets are whole quarter hours, so each local
    /// hour or day starts inside some UTC hour); coarser steps only skip work.
    fn next_boundary(&self, instant: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        let next_hour = instant
            .with_minute(0)
            .and_then(|t| t.with_second(0))
            .and_then(|t| t.with_nanosecond(0))
            .unwrap_or(instant)
            + TimeDelta::hours(1);
        if self.step == Step::Hour {
            // A 30- or 45-minute zone renders a new hour in the middle of a UTC hour.
            let local_next = instant.with_timezone(&tz);
            let to_local_hour = TimeDelta::minutes(60 - i64::from(local_next.minute()))
                - TimeDelta::seconds(i64::from(local_next.second()));
            return (instant + to_local_hour)
                .min(next_hour)
                .max(instant + TimeDelta::minutes(1));
        }
        next_hour
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).single().unwrap()
    }

    #[test]
    fn expands_hourly_folders_for_a_day() {
        let template = PathTemplate::parse("events/date={date}/hour={hour}/*.parquet").unwrap();
        let window = Window {
            start: utc(2024, 1, 1, 0),
            end: utc(2024, 1, 2, 0),
        };
        let paths = template.expand(&window, Tz::UTC);
        assert_eq!(paths.len(), 24);
        assert_eq!(paths[0], "events/date=2024-01-01/hour=00/*.parquet");
        assert_eq!(paths[23], "events/date=2024-01-01/hour=23/*.parquet");
    }

    #[test]
    fn expands_daily_folders_in_the_source_timezone() {
        let template = PathTemplate::parse("logs/{year}/{month}/{day}.csv").unwrap();
        let window = Window {
            start: utc(2024, 1, 1, 0),
            end: utc(2024, 1, 2, 0),
        };
        let paths = template.expand(&window, chrono_tz::America::New_York);
        assert_eq!(paths, vec!["logs/2023/12/31.csv", "logs/2024/01/01.csv"]);
    }

    #[test]
    fn half_hour_zones_render_every_local_hour() {
        let template = PathTemplate::parse("h={hour}").unwrap();
        let window = Window {
            start: utc(2024, 1, 1, 0),
            end: utc(2024, 1, 1, 2),
        };
        let paths = template.expand(&window, chrono_tz::Asia::Kolkata);
        assert_eq!(paths, vec!["h=05", "h=06", "h=07"]);
    }

    #[test]
    fn rejects_bad_templates() {
        assert!(
            PathTemplate::parse("a/{minute}")
                .unwrap_err()
                .to_string()
                .contains("unknown template variable `{minute}`")
        );
        assert!(
            PathTemplate::parse("a/{date")
                .unwrap_err()
                .to_string()
                .contains("unclosed")
        );
        assert!(
            PathTemplate::parse("a/date}")
                .unwrap_err()
                .to_string()
                .contains("unmatched")
        );
        assert!(
            PathTemplate::parse(" ")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert!(!PathTemplate::parse("a/*.parquet").unwrap().is_templated());
    }
}
