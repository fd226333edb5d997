//! Reading one partition window of a source.
//!
//! The path template is expanded for the window, globs are matched, and the files are scanned
//! lazily with a filter `start <= time < end` written in the column's own dtype: polars refuses
//! to compare a timezone-aware column with a naive literal, and a filter on a cast column would
//! not reach parquet's row-group statistics. Naive timestamps are read in the source's
//! timezone. After the filter, the time column is normalised to UTC-aware so every result Floe
//! writes carries unambiguous instants.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use polars::prelude::*;

use crate::frames::time_slice::physical_bound;
use crate::partition::Window;
use crate::pipeline::Source;
use crate::pipeline::data_roots::DataRoots;
use crate::pipeline::spec::SourceFormat;

/// The identity of an input file as far as freshness goes: a changed size or modification
/// time means the file changed and results computed from it are stale.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileIdentity {
    /// The path as the source's glob matched it: what fingerprints hash.
    pub path: PathBuf,
    /// The same file with symlinks resolved, checked to lie inside the data roots: what is read,
    /// so a link swapped after the check cannot redirect the read.
    pub resolved: PathBuf,
    pub size: u64,
    pub modified_ns: i128,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source `{source_name}`: no files match {patterns} for partition [{start}, {end})")]
    NoFiles {
        source_name: String,
        patterns: String,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    #[error("source `{source_name}`: bad glob `{pattern}`: {message}")]
    BadGlob {
        source_name: String,
        pattern: String,
        message: String,
    },
    #[error("source `{source_name}`: cannot read {}: {message}", path.display())]
    Io {
        source_name: String,
        path: PathBuf,
        message: String,
    },
    #[error("source `{source_name}`: time column `{column}` not found (columns: {columns})")]
    MissingTimeColumn {
        source_name: String,
        column: String,
        columns: String,
    },
    #[error(
        "source `{source_name}`: time column `{column}` has type {dtype}; expected a datetime or an ISO-8601 string"
    )]
    TimeColumnType {
        source_name: String,
        column: String,
        dtype: String,
    },
    #[error("source `{source_name}`: {source}")]
    OutsideRoots {
        source_name: String,
        source: crate::pipeline::data_roots::DataRootError,
    },
    #[error("source `{source_name}`: {message}")]
    Polars {
        source_name: String,
        message: String,
    },
    /// A whole file (a data file of `/data`) that polars cannot read in the format given.
    #[error("data file `{file}`: cannot read it as {format}: {message}")]
    File {
        file: String,
        format: &'static str,
        message: String,
    },
}

/// The format of a whole file a job reads (a data file of `/data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    Parquet,
    Ndjson,
    /// Arrow IPC (the file format, also called Feather v2).
    Ipc,
}

impl FileFormat {
    /// Every format, for messages.
    pub const NAMES: &'static str = "csv, parquet, ndjson, ipc";

    /// The format named `name` (`csv`, `parquet`, `ndjson`, `ipc`).
    pub fn from_name(name: &str) -> Option<FileFormat> {
        Some(match name {
            "csv" => FileFormat::Csv,
            "parquet" => FileFormat::Parquet,
            "ndjson" => FileFormat::Ndjson,
            "ipc" => FileFormat::Ipc,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Parquet => "parquet",
            FileFormat::Ndjson => "ndjson",
            FileFormat::Ipc => "ipc",
        }
    }
}

/// A lazy scan of the whole file `path` in `format`; `file` names it in errors. Its schema is
/// read here, so a file that is not in `format` fails now, with a message saying so.
pub fn scan_file(file: &str, path: &Path, format: FileFormat) -> Result<LazyFrame, SourceError> {
    let failed = |err: PolarsError| SourceError::File {
        file: file.to_owned(),
        format: format.as_str(),
        message: crate::error::short_polars_error(&err),
    };
    let path = PlRefPath::new(path.to_string_lossy().into_owned());
    // The path is one file, already checked: polars must not glob it.
    let mut frame = match format {
        FileFormat::Csv => LazyCsvReader::new(path)
            .with_glob(false)
            .with_try_parse_dates(true)
            .finish(),
        FileFormat::Parquet => LazyFrame::scan_parquet(
            path,
            ScanArgsParquet {
                glob: false,
                ..ScanArgsParquet::default()
            },
        ),
        FileFormat::Ndjson => LazyJsonLineReader::new(path).finish(),
        FileFormat::Ipc => LazyFrame::scan_ipc(
            path,
            IpcScanOptions::default(),
            UnifiedScanArgs {
                glob: false,
                ..UnifiedScanArgs::default()
            },
        ),
    }
    .map_err(failed)?;
    frame.collect_schema().map_err(failed)?;
    Ok(frame)
}

/// The files holding `window` of `source`, sorted, with their identities.
pub fn resolve_source_files(
    source: &Source,
    roots: &DataRoots,
    window: &Window,
) -> Result<Vec<FileIdentity>, SourceError> {
    let patterns = source.path.expand(window, source.timezone);
    let mut files = Vec::new();
    for pattern in &patterns {
        let full = roots.resolve_pattern(pattern);
        let full_text = full.to_string_lossy().into_owned();
        let matches = glob::glob(&full_text).map_err(|err| SourceError::BadGlob {
            source_name: source.name.clone(),
            pattern: full_text.clone(),
            message: err.to_string(),
        })?;
        for entry in matches {
            let path = entry.map_err(|err| SourceError::Io {
                source_name: source.name.clone(),
                path: err.path().to_path_buf(),
                message: err.error().to_string(),
            })?;
            let metadata = std::fs::metadata(&path).map_err(|err| SourceError::Io {
                source_name: source.name.clone(),
                path: path.clone(),
                message: err.to_string(),
            })?;
            if !metadata.is_file() {
                continue;
            }
            let resolved = roots
                .check_file(&path)
                .map_err(|err| SourceError::OutsideRoots {
                    source_name: source.name.clone(),
                    source: err,
                })?;
            let modified_ns = metadata
                .modified()
                .ok()
                .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |duration| duration.as_nanos() as i128);
            files.push(FileIdentity {
                path,
                resolved,
                size: metadata.len(),
                modified_ns,
            });
        }
    }
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Err(SourceError::NoFiles {
            source_name: source.name.clone(),
            patterns: patterns
                .iter()
                .take(3)
                .map(|p| format!("`{p}`"))
                .chain((patterns.len() > 3).then(|| format!("… ({} paths)", patterns.len())))
                .collect::<Vec<_>>()
                .join(", "),
            start: window.start,
            end: window.end,
        });
    }
    Ok(files)
}

/// A lazy scan of `files` cut to `window`, time column normalised to UTC.
pub fn scan_source_window(
    source: &Source,
    files: &[FileIdentity],
    window: &Window,
) -> Result<LazyFrame, SourceError> {
    let polars_error = |err: PolarsError| SourceError::Polars {
        source_name: source.name.clone(),
        message: crate::error::short_polars_error(&err),
    };
    let paths: Vec<PlRefPath> = files
        .iter()
        .map(|file| PlRefPath::new(file.resolved.to_string_lossy().into_owned()))
        .collect();
    // `Vec<T>: Into<Buffer<T>>`; polars does not re-export its buffer type.
    let frame = match source.format {
        // The paths are files already matched and checked: polars must not glob them again.
        SourceFormat::Parquet => LazyFrame::scan_parquet_files(
            paths.into(),
            ScanArgsParquet {
                glob: false,
                ..ScanArgsParquet::default()
            },
        ),
        SourceFormat::Csv => LazyCsvReader::new_paths(paths.into())
            .with_glob(false)
            .with_try_parse_dates(true)
            .finish(),
        SourceFormat::Ndjson => LazyJsonLineReader::new_paths(paths.into()).finish(),
    }
    .map_err(polars_error)?;
    source_rows_in_window(source, frame, window)
}

/// The rows of `frame`, rows of `source`, whose time column lies in `window`, the column
/// normalised to UTC: what a scan of the source's files goes through, and the rows a
/// `floe test` gives for the source. The filter is written in the column's own dtype.
pub fn source_rows_in_window(
    source: &Source,
    mut frame: LazyFrame,
    window: &Window,
) -> Result<LazyFrame, SourceError> {
    let polars_error = |err: PolarsError| SourceError::Polars {
        source_name: source.name.clone(),
        message: crate::error::short_polars_error(&err),
    };
    let schema = frame.collect_schema().map_err(polars_error)?;
    let column = source.time_column.as_str();
    let Some(dtype) = schema.get(column) else {
        return Err(SourceError::MissingTimeColumn {
            source_name: source.name.clone(),
            column: column.to_owned(),
            columns: schema
                .iter_names()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let (time, unit, zone) = match dtype {
        DataType::Datetime(unit, zone) => (col(column), *unit, zone.clone()),
        // ISO-8601 text (ndjson has no datetime type): parse it as naive local time.
        DataType::String => (
            col(column).cast(DataType::Datetime(TimeUnit::Microseconds, None)),
            TimeUnit::Microseconds,
            None,
        ),
        other => {
            return Err(SourceError::TimeColumnType {
                source_name: source.name.clone(),
                column: column.to_owned(),
                dtype: other.to_string(),
            });
        }
    };
    let (start, end) = (
        bound_literal(window.start, unit, zone.as_ref(), source.timezone),
        bound_literal(window.end, unit, zone.as_ref(), source.timezone),
    );
    let normalised = match &zone {
        Some(zone) if *zone == TimeZone::UTC => time.clone(),
        Some(_) => time.clone().dt().convert_time_zone(TimeZone::UTC),
        None => time
            .clone()
            .dt()
            .replace_time_zone(
                Some(TimeZone::from_chrono(&source.timezone)),
                lit("earliest"),
                NonExistent::Null,
            )
            .dt()
            .convert_time_zone(TimeZone::UTC),
    };
    Ok(frame
        .filter(time.clone().gt_eq(start).and(time.lt(end)))
        .with_column(normalised.alias(column)))
}

/// A window bound as a literal of the time column's dtype.
fn bound_literal(
    instant: DateTime<Utc>,
    unit: TimeUnit,
    zone: Option<&TimeZone>,
    source_tz: Tz,
) -> Expr {
    lit(physical_bound(instant, unit, zone, source_tz))
        .cast(DataType::Datetime(unit, zone.cloned()))
}
