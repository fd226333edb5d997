//! What a store directory looks like on disk, and the read-only checks made
//! before sled is allowed to touch it.
//!
//! Why the checks exist: sled 0.34 has no read-only mode and its recovery
//! writes to the directory on open. Measured with 0.34.7:
//! - opening any store that was written since its last snapshot rewrites
//!   `db` (pads the last segment) and writes a new `snap.*` file;
//! - a `db` full of garbage, zeros, or with a damaged segment header is taken
//!   for a torn write, "recovered" as an empty database and overwritten,
//!   returning `Ok`;
//! - a `conf` of 8 bytes or fewer is silently replaced; `blobs/` is created
//!   before `conf` is verified.
//!
//! So anything that must leave the directory untouched (a newer schema, a
//! directory that is not ours, a damaged store) has to be decided here,
//! from files read but never written, before `sled::Config::open`:
//! - `floe-store.json` (the marker) is written by Floe before sled creates
//!   anything and mirrors the `meta` tree's schema version, so a newer store
//!   is refused without opening sled. A directory without the marker is never
//!   handed to sled, even if it holds a sled database (someone else's).
//! - sled's `conf` is parsed as sled would parse it, plus its checksum.
//! - sled's `db` must hold at least one intact segment header, and no intact
//!   header may carry an lsn that would trip an assertion in sled's recovery
//!   (e.g. `i64::MAX`). Damage inside a segment body is not detected here;
//!   sled treats it as a torn tail and drops it, which is its crash recovery.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::SCHEMA_VERSION;
use super::error::{BoxedCause, StoreError};

/// File name of the marker that says "this directory is a Floe store".
pub(crate) const MARKER_FILE: &str = "floe-store.json";
/// The marker is written here first and renamed, so it is never half-written;
/// a leftover one (crash during creation) does not make a directory foreign.
const MARKER_TMP: &str = "floe-store.json.tmp";
/// Value of the marker's `format` field; guards against an unrelated file
/// that happens to have the same name.
const MARKER_FORMAT: &str = "floe-store";

/// sled 0.34's file names inside its directory.
const SLED_CONF: &str = "conf";
const SLED_DB: &str = "db";
/// sled's default segment (io buffer) size, which `Store` never changes;
/// a different value in `conf` means another program's configuration.
const SLED_SEGMENT_SIZE: u64 = 512 * 1024;
/// Length of a sled 0.34 segment header: crc32, lsn, max stable lsn.
const SEG_HEADER_LEN: usize = 20;

/// The marker's content.
#[derive(Debug, Deserialize)]
struct Marker {
    /// Always `floe-store`; see `MARKER_FORMAT`.
    format: String,
    /// Mirrors `meta/schema_version`, readable without opening sled.
    schema_version: u32,
}

/// What `inspect` found at the store path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// Nothing, or an empty directory: a new store is to be created.
    Fresh,
    /// A Floe store whose marker version is supported and whose sled files
    /// (if any yet) passed the checks; sled may open it.
    Existing {
        /// The schema version recorded in the marker.
        marker_version: u32,
    },
}

/// Decides, without writing anything, whether `path` may be opened as a store.
pub(crate) fn inspect(path: &Path) -> Result<Found, StoreError> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Fresh),
        Err(e) => return Err(io_error(path, e)),
    };
    if !meta.is_dir() {
        return Err(not_a_store(path, "it is not a directory"));
    }

    let mut has_marker = false;
    let mut others = Vec::new();
    for entry in fs::read_dir(path).map_err(|e| io_error(path, e))? {
        let name = entry.map_err(|e| io_error(path, e))?.file_name();
        if name == OsStr::new(MARKER_FILE) {
            has_marker = true;
        } else if name != OsStr::new(MARKER_TMP) {
            others.push(name);
        }
    }
    if !has_marker {
        if others.is_empty() {
            return Ok(Found::Fresh);
        }
        let reason = if others.iter().any(|n| n == OsStr::new(SLED_DB)) {
            format!("it holds a sled database without a {MARKER_FILE} marker")
        } else {
            format!("the directory is not empty and has no {MARKER_FILE} marker")
        };
        return Err(not_a_store(path, &reason));
    }

    let marker_version = read_marker(path)?;
    if marker_version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found: marker_version,
            supported: SCHEMA_VERSION,
        });
    }

    let conf = sled_file(path, SLED_CONF)?;
    let db = sled_file(path, SLED_DB)?;
    match (conf, db) {
        // Created the marker, crashed before sled wrote anything.
        (None, None) => {}
        // Crashed between sled writing conf and creating db: nothing stored.
        (Some(conf), None) => {
            check_conf(&conf).map_err(|e| corrupt(path, e))?;
        }
        // sled would write a default conf that may not match how db was
        // written, and then misread it.
        (None, Some(_)) => {
            return Err(corrupt(
                path,
                "sled's conf file is missing next to its db file",
            ));
        }
        (Some(conf), Some(db)) => {
            let segment_size = check_conf(&conf).map_err(|e| corrupt(path, e))?;
            check_db(&db, segment_size).map_err(|e| corrupt(path, e))?;
        }
    }
    Ok(Found::Existing { marker_version })
}

/// Writes (or replaces) the marker atomically: temp file, fsync, rename.
pub(crate) fn write_marker(dir: &Path, schema_version: u32) -> Result<(), StoreError> {
    let tmp = dir.join(MARKER_TMP);
    let dest = dir.join(MARKER_FILE);
    let body = format!("{{\"format\":\"{MARKER_FORMAT}\",\"schema_version\":{schema_version}}}\n");
    let mut file = File::create(&tmp).map_err(|e| io_error(&tmp, e))?;
    file.write_all(body.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(&tmp, e))?;
    fs::rename(&tmp, &dest).map_err(|e| io_error(&dest, e))?;
    // Makes the rename durable on Linux; other platforms cannot open a
    // directory for syncing, and the marker is rewritten on the next open
    // if it went missing, so a failure here is only logged.
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(path = %dir.display(), error = %e, "could not fsync store directory");
    }
    Ok(())
}

fn read_marker(dir: &Path) -> Result<u32, StoreError> {
    let path = dir.join(MARKER_FILE);
    let bytes = fs::read(&path).map_err(|e| io_error(&path, e))?;
    let marker: Marker = serde_json::from_slice(&bytes).map_err(|e| {
        corrupt(
            dir,
            format!("{} is not a valid marker: {e}", path.display()),
        )
    })?;
    if marker.format != MARKER_FORMAT {
        return Err(corrupt(
            dir,
            format!(
                "{} has format {:?}, expected {MARKER_FORMAT:?}",
                path.display(),
                marker.format
            ),
        ));
    }
    Ok(marker.schema_version)
}

/// The path of one of sled's files, if it exists as a regular file.
fn sled_file(dir: &Path, name: &str) -> Result<Option<PathBuf>, StoreError> {
    let path = dir.join(name);
    match fs::metadata(&path) {
        Ok(meta) if meta.is_file() => Ok(Some(path)),
        Ok(_) => Err(corrupt(
            dir,
            format!("{} is not a regular file", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(&path, e)),
    }
}

/// What the read-only checks found wrong with sled's `conf` or `db` file; the cause of a
/// [`StoreError::Corrupt`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum SledFileError {
    #[error("cannot read sled's conf file: {0}")]
    ConfUnreadable(#[source] io::Error),
    #[error("sled's conf file is truncated ({len} bytes)")]
    ConfTruncated { len: usize },
    #[error("sled's conf file fails its checksum")]
    ConfChecksum,
    #[error("sled's conf file is not utf-8")]
    ConfNotUtf8,
    #[error("sled's conf file has a malformed line {line:?}")]
    ConfMalformedLine { line: String },
    #[error("sled's conf file has no valid segment_size")]
    ConfNoSegmentSize,
    #[error("sled's conf file has segment_size {segment_size}, expected {SLED_SEGMENT_SIZE}")]
    ConfSegmentSize { segment_size: u64 },
    #[error("sled's conf file has use_compression {compression:?}, expected \"false\"")]
    ConfCompression { compression: Option<String> },
    #[error("sled's conf file was written by sled {version:?}, expected \"0.34\"")]
    ConfVersion { version: Option<String> },
    #[error("cannot open sled's db file: {0}")]
    DbUnopenable(#[source] io::Error),
    #[error("cannot stat sled's db file: {0}")]
    DbUnstattable(#[source] io::Error),
    #[error("cannot read sled's db file at offset {offset}: {source}")]
    DbUnreadable {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("sled's db file has an impossible segment lsn {lsn} at offset {offset}")]
    DbImpossibleLsn { lsn: i64, offset: u64 },
    #[error("sled's db file ({len} bytes) has no intact segment header")]
    DbNoIntactSegment { len: u64 },
}

/// Parses sled's `conf` the way sled 0.34 does and returns the segment size.
/// Stricter than sled on purpose: sled overwrites a short conf and only
/// warns on a checksum mismatch; here both mean "not what sled wrote".
fn check_conf(path: &Path) -> Result<u64, SledFileError> {
    let bytes = fs::read(path).map_err(SledFileError::ConfUnreadable)?;
    if bytes.len() <= 4 + 4 {
        return Err(SledFileError::ConfTruncated { len: bytes.len() });
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let mut stored = [0_u8; 4];
    stored.copy_from_slice(crc);
    if crc32(body) != u32::from_le_bytes(stored) {
        return Err(SledFileError::ConfChecksum);
    }
    let text = std::str::from_utf8(body).map_err(|_| SledFileError::ConfNotUtf8)?;
    let mut segment_size = None;
    let mut compression = None;
    let mut version = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(": ") else {
            return Err(SledFileError::ConfMalformedLine {
                line: line.to_owned(),
            });
        };
        match key {
            "segment_size" => segment_size = Some(value),
            "use_compression" => compression = Some(value),
            "version" => version = Some(value),
            _ => {}
        }
    }
    let segment_size: u64 = segment_size
        .and_then(|v| v.parse().ok())
        .ok_or(SledFileError::ConfNoSegmentSize)?;
    if segment_size != SLED_SEGMENT_SIZE {
        return Err(SledFileError::ConfSegmentSize { segment_size });
    }
    if compression != Some("false") {
        return Err(SledFileError::ConfCompression {
            compression: compression.map(str::to_owned),
        });
    }
    if version != Some("0.34") {
        return Err(SledFileError::ConfVersion {
            version: version.map(str::to_owned),
        });
    }
    Ok(segment_size)
}

/// Reads every segment header of sled's `db` log and requires at least one
/// intact one; see the module doc for why.
fn check_db(path: &Path, segment_size: u64) -> Result<(), SledFileError> {
    let file = File::open(path).map_err(SledFileError::DbUnopenable)?;
    let len = file.metadata().map_err(SledFileError::DbUnstattable)?.len();
    let header_len = SEG_HEADER_LEN as u64;
    // Shorter than one header: sled never completed a write, nothing is lost.
    if len < header_len {
        return Ok(());
    }
    // Same count as sled's startup scan: a trailing partial segment counts
    // if it has room for a header.
    let segments = len / segment_size + u64::from(len % segment_size >= header_len);
    // `&File` implements Read and Seek, so no mutable binding of the file.
    let mut reader = &file;
    let mut intact = 0_u64;
    for index in 0..segments {
        let offset = index * segment_size;
        let mut header = [0_u8; SEG_HEADER_LEN];
        reader
            .seek(SeekFrom::Start(offset))
            .and_then(|_| reader.read_exact(&mut header))
            .map_err(|source| SledFileError::DbUnreadable { offset, source })?;
        let Some(lsn) = segment_lsn(&header) else {
            // Free or torn segments legitimately fail their checksum.
            continue;
        };
        let plausible =
            lsn >= 0 && lsn != i64::MAX && u64::try_from(lsn).is_ok_and(|l| l % segment_size == 0);
        if !plausible {
            return Err(SledFileError::DbImpossibleLsn { lsn, offset });
        }
        intact += 1;
    }
    if intact == 0 {
        return Err(SledFileError::DbNoIntactSegment { len });
    }
    Ok(())
}

/// The lsn of a sled 0.34 segment header, if its checksum holds. Layout:
/// `crc32(bytes 4..20) ^ 0xFFFF_FFFF` (LE), `lsn ^ i64::MAX` (LE),
/// `max_stable_lsn ^ i64::MAX` (LE).
fn segment_lsn(header: &[u8; SEG_HEADER_LEN]) -> Option<i64> {
    let (crc, rest) = header.split_at(4);
    let mut stored = [0_u8; 4];
    stored.copy_from_slice(crc);
    if crc32(rest) ^ 0xFFFF_FFFF != u32::from_le_bytes(stored) {
        return None;
    }
    let mut lsn = [0_u8; 8];
    lsn.copy_from_slice(&rest[..8]);
    Some(i64::from_le_bytes(lsn) ^ i64::MAX)
}

/// CRC-32 (IEEE, reflected), as `crc32fast` computes it for sled. Bitwise
/// because it only ever sees a conf file and 16-byte headers.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFF_u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

fn not_a_store(path: &Path, reason: &str) -> StoreError {
    StoreError::NotAStore {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    }
}

pub(crate) fn corrupt(path: &Path, cause: impl Into<BoxedCause>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        source: cause.into(),
    }
}

pub(crate) fn io_error(path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        path: PathBuf::from(path),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_ieee_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn marker_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        write_marker(dir.path(), 7).unwrap();
        assert_eq!(read_marker(dir.path()).unwrap(), 7);
        assert!(!dir.path().join(MARKER_TMP).exists());
    }
}
