//! Cutting a time window out of a frame held in memory.
//!
//! A context's named object is one frame, often a week or a month of events, and most queries
//! ask about an hour or a day of it. When the time column is sorted (the sample data and most
//! event logs are written in time order), the window's rows are found by two binary searches
//! on the column's physical values and taken as a zero-copy slice: an hour of 10M rows costs
//! microseconds, where a filter reads and compares all 10M timestamps. An unsorted column
//! falls back to a filter with bounds typed like the column.
//!
//! [`mark_sorted_time_columns`] runs once when a frame is kept (a named object): it checks
//! every datetime column in one pass and sets polars' sorted flag on those in ascending order
//! without nulls, which is what [`window_rows`] then looks at.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use polars::prelude::*;
use polars::series::IsSorted;

use crate::partition::Window;

/// Why a window cannot be cut out of a frame. The column-count messages start lower-case
/// without a subject: callers prefix the named object they are about.
#[derive(Debug, thiserror::Error)]
pub enum TimeSliceError {
    #[error("time column `{column}` not found (columns: {})", .columns.join(", "))]
    ColumnNotFound {
        column: String,
        columns: Vec<String>,
    },
    #[error("time column `{column}` has type {dtype}; a window needs a datetime column")]
    NotDatetime { column: String, dtype: DataType },
    #[error("has no datetime column to window on")]
    NoDatetimeColumn,
    #[error(
        "has {} datetime columns ({}): name one with `time_column`",
        .columns.len(),
        .columns.join(", ")
    )]
    SeveralDatetimeColumns { columns: Vec<String> },
}

/// `frame` with polars' sorted flag set on every datetime column whose values ascend
/// without nulls.
pub fn mark_sorted_time_columns(mut frame: DataFrame) -> DataFrame {
    let sorted: Vec<Column> = frame
        .columns()
        .iter()
        .filter(|column| matches!(column.dtype(), DataType::Datetime(..)))
        .filter(|column| column.is_sorted_flag() != IsSorted::Ascending && ascends(column))
        .map(|column| {
            let mut column = column.clone();
            column.set_sorted_flag(IsSorted::Ascending);
            column
        })
        .collect();
    for column in sorted {
        // Same name, same length: replacing the column cannot fail.
        let _ = frame.with_column(column);
    }
    frame
}

/// The physical chunks of a datetime column, or `None` for another dtype.
fn physical_chunks(column: &Column) -> Option<Vec<&[i64]>> {
    let Column::Series(series) = column else {
        return None;
    };
    let datetimes = series.datetime().ok()?;
    Some(
        datetimes
            .physical()
            .downcast_iter()
            .map(|array| array.values().as_slice())
            .collect(),
    )
}

/// Whether a datetime column ascends and has no nulls.
fn ascends(column: &Column) -> bool {
    if column.null_count() > 0 {
        return false;
    }
    let Some(chunks) = physical_chunks(column) else {
        return false;
    };
    let mut previous = i64::MIN;
    for chunk in chunks {
        if chunk.first().is_some_and(|&first| first < previous) {
            return false;
        }
        if !chunk.is_sorted() {
            return false;
        }
        if let Some(&last) = chunk.last() {
            previous = last;
        }
    }
    true
}

/// The first row whose value is at least `bound`, over chunks that ascend as a whole.
fn first_at_least(chunks: &[&[i64]], bound: i64) -> usize {
    let mut offset = 0;
    for chunk in chunks {
        if chunk.last().is_some_and(|&last| last >= bound) {
            return offset + chunk.partition_point(|&value| value < bound);
        }
        offset += chunk.len();
    }
    offset
}

/// The rows of `frame` whose `column` lies in `window` (start inclusive, end exclusive). A
/// naive datetime column is read as wall-clock time in `naive_tz`.
pub fn window_rows(
    frame: &DataFrame,
    column: &str,
    window: &Window,
    naive_tz: Tz,
) -> Result<LazyFrame, TimeSliceError> {
    let time = frame
        .column(column)
        .map_err(|_| TimeSliceError::ColumnNotFound {
            column: column.to_owned(),
            columns: frame
                .get_column_names()
                .iter()
                .map(|name| name.to_string())
                .collect(),
        })?;
    let DataType::Datetime(unit, zone) = time.dtype() else {
        return Err(TimeSliceError::NotDatetime {
            column: column.to_owned(),
            dtype: time.dtype().clone(),
        });
    };
    let (unit, zone) = (*unit, zone.clone());
    let start = physical_bound(window.start, unit, zone.as_ref(), naive_tz);
    let end = physical_bound(window.end, unit, zone.as_ref(), naive_tz);
    if time.is_sorted_flag() == IsSorted::Ascending
        && time.null_count() == 0
        && let Some(chunks) = physical_chunks(time)
    {
        let first = first_at_least(&chunks, start);
        let last = first_at_least(&chunks, end).max(first);
        return Ok(frame.slice(first as i64, last - first).lazy());
    }
    let dtype = DataType::Datetime(unit, zone);
    let (start, end) = (lit(start).cast(dtype.clone()), lit(end).cast(dtype));
    Ok(frame
        .clone()
        .lazy()
        .filter(col(column).gt_eq(start).and(col(column).lt(end))))
}

/// The one datetime column of `frame`, the default time column of a window.
pub fn only_datetime_column(frame: &DataFrame) -> Result<String, TimeSliceError> {
    let datetimes: Vec<&str> = frame
        .columns()
        .iter()
        .filter(|column| matches!(column.dtype(), DataType::Datetime(..)))
        .map(|column| column.name().as_str())
        .collect();
    match datetimes.as_slice() {
        [only] => Ok((*only).to_owned()),
        [] => Err(TimeSliceError::NoDatetimeColumn),
        several => Err(TimeSliceError::SeveralDatetimeColumns {
            columns: several.iter().map(|name| (*name).to_owned()).collect(),
        }),
    }
}

/// An instant as the physical value of a datetime column of `unit` and `zone`. A naive column
/// holds wall-clock time in `naive_tz`, so the bound is the same instant's wall-clock reading
/// there.
pub fn physical_bound(
    instant: DateTime<Utc>,
    unit: TimeUnit,
    zone: Option<&TimeZone>,
    naive_tz: Tz,
) -> i64 {
    let epoch_units = |wall: i64, nanos: i64| match unit {
        TimeUnit::Milliseconds => wall * 1_000 + nanos / 1_000_000,
        TimeUnit::Microseconds => wall * 1_000_000 + nanos / 1_000,
        TimeUnit::Nanoseconds => wall * 1_000_000_000 + nanos,
    };
    let wall = match zone {
        Some(_) => instant.naive_utc().and_utc(),
        None => instant.with_timezone(&naive_tz).naive_local().and_utc(),
    };
    epoch_units(wall.timestamp(), i64::from(wall.timestamp_subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, Utc};

    use super::*;

    fn instant(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    /// Events every 10 minutes from 2024-01-01T00:00Z, in `chunks` chunks, `ts` in ms UTC.
    fn events(rows: i64, chunks: usize, shuffle: bool) -> DataFrame {
        let base = instant("2024-01-01T00:00:00Z").timestamp_millis();
        let mut millis: Vec<i64> = (0..rows).map(|i| base + i * 600_000).collect();
        if shuffle {
            millis.reverse();
        }
        let per_chunk = (rows as usize).div_ceil(chunks);
        let parts: Vec<DataFrame> = millis
            .chunks(per_chunk)
            .map(|part| {
                let ts = Column::new("ts".into(), part)
                    .cast(&DataType::Datetime(
                        TimeUnit::Milliseconds,
                        Some(TimeZone::UTC),
                    ))
                    .unwrap();
                let ids = Column::new(
                    "id".into(),
                    part.iter()
                        .map(|m| (m - base) / 600_000)
                        .collect::<Vec<_>>(),
                );
                DataFrame::new_infer_height(vec![ts, ids]).unwrap()
            })
            .collect();
        let mut frame = parts[0].clone();
        for part in &parts[1..] {
            frame.vstack_mut(part).unwrap();
        }
        frame
    }

    fn ids(frame: LazyFrame) -> Vec<i64> {
        let frame = frame.collect().unwrap();
        let mut ids: Vec<i64> = frame
            .column("id")
            .unwrap()
            .i64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn a_sorted_column_is_marked_and_sliced_across_chunks() {
        let frame = mark_sorted_time_columns(events(1_000, 7, false));
        assert_eq!(
            frame.column("ts").unwrap().is_sorted_flag(),
            IsSorted::Ascending
        );
        assert!(frame.first_col_n_chunks() > 1);
        // 01:00 ≤ ts < 03:00 is rows 6..18; a bound between rows rounds up.
        let start = instant("2024-01-01T01:00:00Z");
        let window = Window {
            start,
            end: start + Duration::hours(2),
        };
        assert_eq!(
            ids(window_rows(&frame, "ts", &window, Tz::UTC).unwrap()),
            (6..18).collect::<Vec<_>>()
        );
        let window = Window {
            start: start + Duration::minutes(1),
            end: start + Duration::minutes(21),
        };
        assert_eq!(
            ids(window_rows(&frame, "ts", &window, Tz::UTC).unwrap()),
            vec![7, 8]
        );
        // Before the first and after the last row: empty, not an error.
        let window = Window {
            start: instant("2023-01-01T00:00:00Z"),
            end: instant("2023-01-02T00:00:00Z"),
        };
        assert!(ids(window_rows(&frame, "ts", &window, Tz::UTC).unwrap()).is_empty());
        let window = Window {
            start: instant("2030-01-01T00:00:00Z"),
            end: instant("2030-01-02T00:00:00Z"),
        };
        assert!(ids(window_rows(&frame, "ts", &window, Tz::UTC).unwrap()).is_empty());
    }

    #[test]
    fn an_unsorted_column_is_filtered_to_the_same_rows() {
        let frame = mark_sorted_time_columns(events(1_000, 3, true));
        assert_ne!(
            frame.column("ts").unwrap().is_sorted_flag(),
            IsSorted::Ascending
        );
        let start = instant("2024-01-02T05:00:00Z");
        let window = Window {
            start,
            end: start + Duration::hours(1),
        };
        assert_eq!(
            ids(window_rows(&frame, "ts", &window, Tz::UTC).unwrap()),
            (174..180).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_naive_column_is_read_in_the_given_timezone() {
        let frame = events(100, 1, false);
        let naive = frame
            .column("ts")
            .unwrap()
            .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))
            .unwrap();
        let mut frame = frame.clone();
        frame.with_column(naive).unwrap();
        let frame = mark_sorted_time_columns(frame);
        // 01:00 wall-clock in Paris (UTC+1 in January) is 00:00Z.
        let window = Window {
            start: instant("2024-01-01T00:00:00Z"),
            end: instant("2024-01-01T00:30:00Z"),
        };
        let paris: Tz = "Europe/Paris".parse().unwrap();
        assert_eq!(
            ids(window_rows(&frame, "ts", &window, paris).unwrap()),
            vec![6, 7, 8]
        );
    }

    #[test]
    fn a_bad_time_column_is_named() {
        let frame = events(10, 1, false);
        let window = Window {
            start: instant("2024-01-01T00:00:00Z"),
            end: instant("2024-01-02T00:00:00Z"),
        };
        let Err(err) = window_rows(&frame, "when", &window, Tz::UTC) else {
            panic!("a missing column is an error");
        };
        assert!(
            err.to_string()
                .contains("time column `when` not found (columns: ts, id)"),
            "{err}"
        );
        let Err(err) = window_rows(&frame, "id", &window, Tz::UTC) else {
            panic!("an integer column is an error");
        };
        assert!(err.to_string().contains("has type i64"), "{err}");
        assert_eq!(only_datetime_column(&frame).unwrap(), "ts");
    }
}
