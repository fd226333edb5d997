//! The audit log: one JSON line per mutating request and per refused one (401, 403),
//! appended to a file (mode 0600 on unix) by a thread of its own.
//!
//! A request never waits on the disk: it serialises its line and hands it to a bounded queue
//! ([`QUEUE_CAPACITY`] lines). When the queue is full (the disk is stalled, or requests come
//! faster than it writes) the line is dropped and counted, never queued without bound; the
//! count is in `/metrics` (`floe_audit_dropped_total`) and logged at WARN. The writer takes
//! every queued line, writes them through one buffer and flushes once, so the file is
//! current whenever the queue is empty. Lines go to the operating system, not to the disk
//! platter: a power cut can lose the last ones (an fsync per request would cost more than
//! the request).

use std::fs::File;
use std::io::{BufWriter, Write};
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

/// One line of the audit log. Holds no secret: tokens appear by id only.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// RFC 3339, milliseconds, UTC.
    pub time: String,
    pub method: String,
    /// Path and query string as requested (Floe's query strings carry no secrets).
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
    /// writer thread. Errors name the file.
    pub fn open(
        path: &Path,
        capacity: usize,
        dropped: Arc<AtomicU64>,
    ) -> Result<AuditLog, AuthError> {
        create_parent(path)?;
        let file = private_options()
            .create(true)
            .append(true)
            .open(path)
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

/// The writer thread: waits for a line, takes every queued one, writes and flushes.
fn write_lines(file: File, receiver: &Receiver<Vec<u8>>, dropped: &AtomicU64, path: &Path) {
    let mut out = BufWriter::with_capacity(64 << 10, file);
    let mut failures = 0u64;
    while let Ok(line) = receiver.recv() {
        let mut lines = 1u64;
        let mut written = out.write_all(&line);
        while let Ok(line) = receiver.try_recv() {
            lines += 1;
            if written.is_ok() {
                written = out.write_all(&line);
            }
        }
        if let Err(e) = written.and_then(|()| out.flush()) {
            dropped.fetch_add(lines, Ordering::Relaxed);
            failures += 1;
            if failures == 1 || failures % 1000 == 0 {
                error!(file = %path.display(), error = %e, "cannot write the audit log");
            }
        }
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
            let log = AuditLog::open(&path, 16, Arc::default()).unwrap();
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
