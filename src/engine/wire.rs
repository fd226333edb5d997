//! Resolved inputs on the wire to a worker process: a source's files as the checked paths the
//! worker reads, a whole file as its path, rows in memory as Arrow IPC blobs (partial states
//! too). Both callers of worker processes send inputs this way: a context's jobs
//! (`jobserver::remote`) and partition runs ([`super::worker`]).

use std::borrow::Cow;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::run::ResolvedInput;
use super::source::{FileFormat, FileIdentity};
use crate::frames::{decode_ipc, encode_ipc};
use crate::job::JobInput;
use crate::partition::Window;
use crate::pipeline::Source;
use crate::pipeline::spec::SourceFormat;
use crate::pipeline::template::PathTemplate;

/// A resolved input as sent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireInput {
    /// Rows in memory: blob `frame` (Arrow IPC), partial states in `states`.
    Rows {
        frame: usize,
        states: Vec<usize>,
        upstream_kind: Option<String>,
    },
    /// A source's files (checked inside the data roots, symlinks resolved) for a window.
    Files {
        source: WireSource,
        /// Each file where it lies, and its size as listed (which chooses the engine).
        files: Vec<(PathBuf, u64)>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    /// A whole file (a data file of `/data`).
    File {
        name: String,
        path: PathBuf,
        format: String,
    },
}

/// What a scan needs of a source.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireSource {
    name: String,
    format: SourceFormat,
    path: String,
    time_column: String,
    timezone: String,
}

/// Why an input could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Its rows could not be computed (a results read that failed in polars).
    #[error("{0}")]
    Rows(String),
    #[error("cannot encode an input as Arrow IPC: {0}")]
    Encode(String),
}

/// `input` as sent; its rows are appended to `blobs`.
pub fn wire_input(
    input: ResolvedInput<'_>,
    blobs: &mut Vec<Vec<u8>>,
) -> Result<WireInput, WireError> {
    let encode = |frame: &DataFrame, blobs: &mut Vec<Vec<u8>>| -> Result<usize, WireError> {
        let bytes = encode_ipc(frame).map_err(|e| WireError::Encode(e.to_string()))?;
        blobs.push(bytes);
        Ok(blobs.len() - 1)
    };
    Ok(match input {
        ResolvedInput::Files {
            source,
            files,
            window,
        } => WireInput::Files {
            source: WireSource {
                name: source.name.clone(),
                format: source.format,
                path: source.path.as_str().to_owned(),
                time_column: source.time_column.clone(),
                timezone: source.timezone.name().to_owned(),
            },
            files: files
                .iter()
                .map(|file| (file.resolved.clone(), file.size))
                .collect(),
            from: window.start,
            to: window.end,
        },
        ResolvedInput::File { name, path, format } => WireInput::File {
            name,
            path,
            format: format.as_str().to_owned(),
        },
        ResolvedInput::Rows(input) => {
            let frame = crate::frames::cancel::collect(input.frame)
                .map_err(|e| WireError::Rows(crate::error::short_polars_error(&e)))?;
            let frame = encode(&frame, blobs)?;
            let mut states = Vec::new();
            for state in input.states.iter().flatten() {
                states.push(encode(state, blobs)?);
            }
            WireInput::Rows {
                frame,
                states,
                upstream_kind: input.upstream_kind,
            }
        }
    })
}

/// A received input, its blobs decoded.
pub fn resolved_input<'a>(
    input: WireInput,
    blobs: &[Vec<u8>],
) -> Result<ResolvedInput<'a>, String> {
    let frame = |index: usize| -> Result<DataFrame, String> {
        let bytes = blobs
            .get(index)
            .ok_or_else(|| format!("the call has no blob {index}"))?;
        decode_ipc(bytes).map_err(|e| e.to_string())
    };
    Ok(match input {
        WireInput::Rows {
            frame: rows,
            states,
            upstream_kind,
        } => {
            let states = if states.is_empty() {
                None
            } else {
                Some(
                    states
                        .into_iter()
                        .map(frame)
                        .collect::<Result<Vec<_>, _>>()?,
                )
            };
            ResolvedInput::rows(JobInput {
                states,
                upstream_kind,
                ..JobInput::of_frame(frame(rows)?.lazy())
            })
        }
        WireInput::Files {
            source,
            files,
            from,
            to,
        } => ResolvedInput::Files {
            source: Cow::Owned(Source {
                path: PathTemplate::parse(&source.path).map_err(|e| e.to_string())?,
                timezone: timezone(&source.timezone)?,
                name: source.name,
                format: source.format,
                time_column: source.time_column,
                wait: std::time::Duration::ZERO,
            }),
            // Only `resolved` is read, and `size` weighed; the identity was fingerprinted where
            // it was listed.
            files: files
                .into_iter()
                .map(|(path, size)| FileIdentity {
                    path: path.clone(),
                    resolved: path,
                    size,
                    modified_ns: 0,
                })
                .collect::<Vec<_>>()
                .into(),
            window: Window {
                start: from,
                end: to,
            },
        },
        WireInput::File { name, path, format } => ResolvedInput::File {
            format: FileFormat::from_name(&format)
                .ok_or_else(|| format!("unknown file format `{format}`"))?,
            name,
            path,
        },
    })
}

/// A time zone by its IANA name.
pub fn timezone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>()
        .map_err(|_| format!("unknown time zone `{name}`"))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn a_source_input_crosses_with_its_files_sizes_so_the_worker_chooses_the_same_engine() {
        let source = Source {
            name: "events".to_owned(),
            format: SourceFormat::Parquet,
            path: PathTemplate::parse("events/{date}/*.parquet").unwrap(),
            time_column: "ts".to_owned(),
            timezone: chrono_tz::UTC,
            wait: std::time::Duration::ZERO,
        };
        let files: Vec<FileIdentity> = [(3u64 << 20, "a"), (5 << 10, "b")]
            .into_iter()
            .map(|(size, name)| FileIdentity {
                path: PathBuf::from(format!("events/{name}.parquet")),
                resolved: PathBuf::from(format!("/data/events/{name}.parquet")),
                size,
                modified_ns: 1,
            })
            .collect();
        let window = Window {
            start: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
            end: Utc.with_ymd_and_hms(2024, 1, 2, 0, 0, 0).unwrap(),
        };
        let input = ResolvedInput::Files {
            source: Cow::Borrowed(&source),
            files: Cow::Borrowed(&files),
            window,
        };
        let sent_bytes = input.file_bytes();
        let mut blobs = Vec::new();
        let wire = wire_input(input, &mut blobs).unwrap();
        let wire: WireInput = serde_json::from_slice(&serde_json::to_vec(&wire).unwrap()).unwrap();
        let received = resolved_input(wire, &blobs).unwrap();
        assert_eq!(received.file_bytes(), sent_bytes);
        assert_eq!(sent_bytes, (3 << 20) + (5 << 10));
        let ResolvedInput::Files { files, .. } = received else {
            panic!("not files: {received:?}");
        };
        let read: Vec<&PathBuf> = files.iter().map(|file| &file.resolved).collect();
        assert_eq!(
            read,
            [
                &PathBuf::from("/data/events/a.parquet"),
                &PathBuf::from("/data/events/b.parquet")
            ]
        );
    }
}
