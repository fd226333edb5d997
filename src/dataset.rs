//! Writes generated sample events the way the example pipeline reads them: one Parquet file
//! per UTC hour under `date=YYYY-MM-DD/hour=HH/`, timestamps as UTC-aware datetimes.
//!
//! An hour without events still gets a file (with no rows), so "nothing happened" stays
//! distinguishable from "the data has not arrived".

use std::fs::File;
use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};
use polars::prelude::*;

use crate::sample::EventColumns;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteSummary {
    pub rows: usize,
    pub files: usize,
}

/// The sample events of rows `range` as a polars frame.
pub fn events_frame(
    events: &EventColumns,
    range: std::ops::Range<usize>,
) -> PolarsResult<DataFrame> {
    let height = range.len();
    let ts = Column::new("ts".into(), &events.ts_ms[range.clone()]).cast(&DataType::Datetime(
        TimeUnit::Milliseconds,
        Some(TimeZone::UTC),
    ))?;
    DataFrame::new(
        height,
        vec![
            ts,
            Column::new("user_id".into(), &events.user_id[range.clone()]),
            Column::new("event".into(), &events.event[range.clone()]),
            Column::new("city".into(), &events.city[range.clone()]),
            Column::new("category".into(), &events.category[range.clone()]),
            Column::new("product_id".into(), &events.product_id[range.clone()]),
            Column::new("amount".into(), &events.amount[range]),
        ],
    )
}

pub fn write_events_parquet(
    events: &EventColumns,
    dir: &Path,
    start: DateTime<Utc>,
    hours: u32,
) -> PolarsResult<WriteSummary> {
    let mut summary = WriteSummary { rows: 0, files: 0 };
    for (hour, range) in events.hour_ranges(start, hours).into_iter().enumerate() {
        let hour_start = start + TimeDelta::hours(hour as i64);
        let folder = dir
            .join(format!("date={}", hour_start.format("%Y-%m-%d")))
            .join(format!("hour={}", hour_start.format("%H")));
        std::fs::create_dir_all(&folder)?;
        summary.rows += range.len();
        let mut frame = events_frame(events, range)?;
        let file = File::create(folder.join("part-0.parquet"))?;
        ParquetWriter::new(file).finish(&mut frame)?;
        summary.files += 1;
    }
    Ok(summary)
}
