//! The audit log: one JSON line per mutating request and per refused one (401, 403),
//! appended to a file (mode 0600 on unix) by a thread of its own.
//!
//! A request never waits on the disk: it serialises its line and hands it to a bounded queue
//! ([`QUEUE_CAPACITY`] lines). When the queue is full (the disk is stalled, or requests come
//! faster than it writes) the line is dropped and counted, never queued without bound; the
//! count is in `/metrics` (`floe_audit_dropped_total`) and logged at WARN. The writer takes
//! every queued line, writes them through one buffer and flushes once, then rests for
//! [`WRITE_PAUSE`] while lines gather, so a line reaches the file within about that long and
//! a busy server wakes the writer a few times a second rather than once a request. Lines go to
//! the operating system, not to the disk platter: a power cut can lose the last ones (an fsync
//! per request would cost more than the request).
//!
//! The log is bounded on disk, since anyone who can reach the port can make a 401 line: each
//! line holds at most [`MAX_LOGGED_TARGET`] bytes of the path and query (the rest is cut and
//! its length noted, see [`shorten`]), and when a line would take the file past its
//! `max_bytes` the writer renames it to `<file>.1` (replacing an older `.1`) and starts a new
//! one, so the log takes at most about twice `max_bytes`. A rotation that fails drops the
//! lines (counted) rather than let the file grow.

use std::borrow::Cow;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use serde::Serialize;
use tracing::{error, warn};

use super::tokens::{create_parent, private_options};
use super::{AuthError, Role};

/// Lines waiting for the writer before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 8192;

/// How long the writer rests after writing, while lines gather in the queue: a line reaches
/// the file at most about this late, and [`QUEUE_CAPACITY`] lines in this time (164,000 a
/// second) is more than the server answers.
pub const WRITE_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Bytes of a request's path and query an audit line keeps.
pub const MAX_LOGGED_TARGET: usize = 512;

/// `text` if it has at most `max_bytes` bytes; else its first `max_bytes` (at a character
/// boundary), `…`, and the original length: `/jobs/aaaa… (65536 bytes)`. For whatever a client
/// sent that is written back, to a log or in an answer.
pub fn shorten(text: &str, max_bytes: usize) -> Cow<'_, str> {
    if text.len() <= max_bytes {
        return Cow::Borrowed(text);
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}… ({} bytes)", &text[..end], text.len()))
}

/// The file the log is renamed to when it rotates: `<file>.1`.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".1");
    PathBuf::from(name)
}

/// One line of the audit log. Holds no secret: tokens appear by id only.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// RFC 3339, milliseconds, UTC.
    pub time: String,
    /// `GET`, `POST`, … or `other` for a method outside the usual set (see
    /// `server::metrics::method_label`).
    pub method: String,
    /// Path and query string as requested (Floe's query strings carry no secrets), cut to
    /// [`MAX_LOGGED_TARGET`] bytes by [`shorten`].
    pub path: String,
    pub status: u16,
    /// The id of the token that authenticated the request, or `anonymous`.
    pub token_id: String,
    pub token_name: Option<String>,
    pub role: Option<Role>,
    /// On a 401, the id of a well-formed token that was refused (ids are public).
    pub claimed_token_id: Option<String>,
    /// The peer's address, when the server knows it.
    pub client: Option<String>,
    pub duration_ms: f64,
}

/// The audit log's writer. Dropping it writes out what is queued and stops its thread.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    sender: Option<SyncSender<Vec<u8>>>,
    writer: Option<JoinHandle<()>>,
    /// Lines dropped because the queue was full or the file refused them; shared with
    /// `/metrics`.
    dropped: Arc<AtomicU64>,
}

impl AuditLog {
    /// Opens `path` for appending (creating it, and its folder, if needed) and starts the
    /// writer thread, which rotates the file past `max_bytes`. Errors name the file.
    pub fn open(
        path: &Path,
        capacity: usize,
        max_bytes: u64,
        dropped: Arc<AtomicU64>,
    ) -> Result<AuditLog, AuthError> {
        create_parent(path)?;
        let file = RotatingFile::open(path, max_bytes)
            .map_err(|e| AuthError::io(path, "cannot open the audit log", e))?;
        let (sender, receiver) = sync_channel(capacity);
        let thread_dropped = dropped.clone();
        let thread_path = path.to_owned();
        let writer = std::thread::Builder::new()
            .name("floe-audit".to_owned())
            .spawn(move || write_lines(file, &receiver, &thread_dropped, &thread_path))
            .map_err(|e| AuthError::io(path, "cannot start the audit log writer", e))?;
        Ok(AuditLog {
            path: path.to_owned(),
            sender: Some(sender),
            writer: Some(writer),
            dropped,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues `entry`; never blocks. A full queue drops it and counts it.
    pub fn record(&self, entry: &AuditEntry) {
        let Ok(mut line) = serde_json::to_vec(entry) else {
            return;
        };
        line.push(b'\n');
        let queued = self.sender.as_ref().map(|sender| sender.try_send(line));
        if let Some(Ok(())) = queued {
            return;
        }
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if dropped == 1 || dropped % 1000 == 0 {
            let reason = match queued {
                Some(Err(TrySendError::Full(_))) => "the queue is full",
                _ => "the writer has stopped",
            };
            warn!(file = %self.path.display(), dropped, reason, "audit log entries dropped");
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The log file as the writer sees it: appended to, and renamed to `<file>.1` when a line
/// would take it past `max_bytes`.
struct RotatingFile {
    path: PathBuf,
    out: BufWriter<File>,
    /// The file's length: as found at open, plus what this writer has written since.
    len: u64,
    max_bytes: u64,
}

impl RotatingFile {
    fn open(path: &Path, max_bytes: u64) -> io::Result<RotatingFile> {
        let file = private_options().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_owned(),
            out: BufWriter::with_capacity(64 << 10, file),
            len,
            max_bytes,
        })
    }

    /// Appends `line`, rotating first if it would take a non-empty file past `max_bytes` (a
    /// line longer than `max_bytes` gets a file of its own).
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        if self.len > 0 && self.len.saturating_add(len) > self.max_bytes {
            self.rotate()?;
        }
        self.out.write_all(line)?;
        self.len += len;
        Ok(())
    }

    /// `<file>` → `<file>.1`, and a new, empty `<file>`. A file gone from its place (moved by
    /// an operator's tool) is simply started again.
    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        match std::fs::rename(&self.path, rotated_path(&self.path)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let file = private_options()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.out = BufWriter::with_capacity(64 << 10, file);
        self.len = 0;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The writer thread: waits for a line, takes every queued one, writes and flushes.
fn write_lines(
    mut out: RotatingFile,
    receiver: &Receiver<Vec<u8>>,
    dropped: &AtomicU64,
    path: &Path,
) {
    let mut failures = 0u64;
    while let Ok(line) = receiver.recv() {
        let mut lines = 1u64;
        let mut written = out.write_line(&line);
        while let Ok(line) = receiver.try_recv() {
            lines += 1;
            if written.is_ok() {
                written = out.write_line(&line);
            }
        }
        if let Err(e) = written.and_then(|()| out.flush()) {
            dropped.fetch_add(lines, Ordering::Relaxed);
            failures += 1;
            if failures == 1 || failures % 1000 == 0 {
                error!(file = %path.display(), error = %e, "cannot write the audit log");
            }
        }
        std::thread::sleep(WRITE_PAUSE);
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: u16) -> AuditEntry {
        AuditEntry {
            time: "2025-03-01T12:00:00.000Z".to_owned(),
            method: "POST".to_owned(),
            path: "/jobs?sync=true".to_owned(),
            status,
            token_id: "abcdefghijkl".to_owned(),
            token_name: Some("ci".to_owned()),
            role: Some(Role::Run),
            claimed_token_id: None,
            client: None,
            duration_ms: 1.5,
        }
    }

    #[test]
    fn lines_are_appended_as_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/audit.log");
        for round in 0..2 {
            let log = AuditLog::open(&path, 16, 1 << 20, Arc::default()).unwrap();
            log.record(&entry(200 + round));
            drop(log);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["status"], 200);
        assert_eq!(lines[1]["status"], 201);
        assert_eq!(lines[0]["token_id"], "abcdefghijkl");
        assert_eq!(lines[0]["role"], "run");
        assert_eq!(lines[0]["client"], serde_json::Value::Null);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn long_targets_are_cut_at_a_character_boundary() {
        assert_eq!(shorten("/jobs?x=1", 512), "/jobs?x=1");
        let long = format!("/jobs/{}", "a".repeat(70_000));
        let cut = shorten(&long, MAX_LOGGED_TARGET);
        assert!(cut.starts_with("/jobs/aaaa"), "{cut}");
        assert!(cut.ends_with("… (70006 bytes)"), "{cut}");
        assert!(cut.len() < MAX_LOGGED_TARGET + 32, "{}", cut.len());
        // `é` is two bytes: a cut in its middle moves back before it.
        assert_eq!(shorten("aé", 2), "a… (3 bytes)");
    }

    #[test]
    fn the_log_rotates_past_its_size_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        // An older generation, replaced by the first rotation.
        std::fs::write(rotated_path(&path), "old\n").unwrap();
        let line_len = serde_json::to_vec(&entry(200)).unwrap().len() as u64 + 1;
        let max = 10 * line_len + line_len / 2;
        let log = AuditLog::open(&path, 1024, max, Arc::default()).unwrap();
        for _ in 0..95 {
            log.record(&entry(200));
        }
        drop(log);
        let current = std::fs::read_to_string(&path).unwrap();
        let previous = std::fs::read_to_string(rotated_path(&path)).unwrap();
        // 95 lines, 10 a file: 9 full generations went by, the last full one is `.1`.
        assert_eq!(previous.lines().count(), 10, "{previous}");
        assert_eq!(current.lines().count(), 5, "{current}");
        for text in [&current, &previous] {
            assert!(text.len() as u64 <= max);
            for line in text.lines() {
                serde_json::from_str::<serde_json::Value>(line).expect("whole JSON lines");
            }
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A file already past the size at open rotates at the first line.
        let log = AuditLog::open(&path, 16, line_len, Arc::default()).unwrap();
        log.record(&entry(201));
        drop(log);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        assert_eq!(
            std::fs::read_to_string(rotated_path(&path)).unwrap(),
            current
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        // A queue nobody reads: the third line finds it full.
        let (sender, receiver) = sync_channel(2);
        let log = AuditLog {
            path: PathBuf::from("audit.log"),
            sender: Some(sender),
            writer: None,
            dropped: Arc::default(),
        };
        for _ in 0..5 {
            log.record(&entry(200));
        }
        assert_eq!(log.dropped(), 3);
        assert_eq!(receiver.try_iter().count(), 2);
    }
}
