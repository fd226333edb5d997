//! The server's memory limit: a watchdog thread that reads the process's resident memory (the
//! part a limit charges: [`charged_bytes`]) and, when it is over the limit, cancels the newest
//! tracked computation (an ad-hoc job or a `/query`), so one request cannot take the host down
//! with every context and job in it. The worker supervisor charges its processes the same way.
//!
//! Why the newest: it is the likeliest cause of the growth, and the oldest work is the closest
//! to done. Why resident memory and not per-query accounting: polars allocates from its own
//! thread pool, so bytes cannot be attributed to the request that caused them in-process (the
//! worker processes of a later release can). The watchdog cancels one computation, then waits a
//! cool-down for its memory to be returned before it looks again. A computation is stopped at
//! its next safe point ([`super::cancel`]: between plans and stages, not inside one polars
//! plan); what one plan allocates is bounded statically instead (the SQL join limit).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use super::cancel::Cancel;

/// How often the watchdog reads the resident memory.
const INTERVAL: Duration = Duration::from_millis(50);

/// How long it waits after cancelling before it may cancel again.
const COOL_DOWN: Duration = Duration::from_millis(500);

/// The resident memory of this process that memory limits charge, in bytes (see
/// [`charged_bytes`]).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    charged_bytes(&status)
}

/// The same for process `pid` (a worker's, read by its supervisor).
pub fn resident_bytes_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    charged_bytes(&status)
}

/// What a limit charges of a process's memory, from its `/proc/<pid>/status`: its anonymous
/// and shared-memory resident pages and what it has in swap (`RssAnon` + `RssShmem` +
/// `VmSwap`), which the kernel cannot drop. Not its file-backed pages (`RssFile`): the binary's
/// code, and the files a scan reads through a memory map (polars maps the Parquet files it
/// reads), which are page cache the kernel drops under pressure; charged, a streaming scan over
/// files larger than the limit would be charged the size of the files it has touched. Where
/// the kernel does not split its resident memory (before Linux 4.5), all of `VmRSS` is
/// charged.
fn charged_bytes(status: &str) -> Option<u64> {
    let swapped = kilobytes_field(status, "VmSwap:").unwrap_or(0);
    let resident = match kilobytes_field(status, "RssAnon:") {
        Some(anonymous) => {
            anonymous.checked_add(kilobytes_field(status, "RssShmem:").unwrap_or(0))?
        }
        None => kilobytes_field(status, "VmRSS:")?,
    };
    resident.checked_add(swapped)
}

/// The machine's memory in bytes (Linux: `MemTotal` of `/proc/meminfo`).
pub fn physical_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    kilobytes_field(&info, "MemTotal:")
}

fn kilobytes_field(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(field))?;
    let kb: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// A limit on the process's resident memory, enforced by cancelling tracked work.
#[derive(Clone)]
pub struct MemoryGuard {
    inner: Arc<GuardInner>,
}

struct GuardInner {
    /// Bytes; `None` disables the watchdog (no limit, or no way to read the memory here).
    limit: Option<u64>,
    tracked: Mutex<Tracked>,
    /// Computations cancelled for memory so far.
    trips: AtomicU64,
    stop: AtomicBool,
}

#[derive(Default)]
struct Tracked {
    next: u64,
    /// Newest last.
    work: Vec<(u64, Cancel, String)>,
}

impl std::fmt::Debug for MemoryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryGuard")
            .field("limit", &self.inner.limit)
            .field("trips", &self.trips())
            .finish_non_exhaustive()
    }
}

impl Drop for GuardInner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Keeps a computation tracked until dropped.
#[derive(Debug)]
#[must_use = "the computation is tracked only while this lives"]
pub struct TrackedWork {
    guard: Weak<GuardInner>,
    id: u64,
}

impl Drop for TrackedWork {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.upgrade() {
            lock(&guard.tracked)
                .work
                .retain(|(id, _, _)| *id != self.id);
        }
    }
}

fn lock(tracked: &Mutex<Tracked>) -> MutexGuard<'_, Tracked> {
    tracked.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryGuard {
    /// A guard that never cancels anything.
    pub fn disabled() -> MemoryGuard {
        MemoryGuard {
            inner: Arc::new(GuardInner {
                limit: None,
                tracked: Mutex::new(Tracked::default()),
                trips: AtomicU64::new(0),
                stop: AtomicBool::new(true),
            }),
        }
    }

    /// Starts the watchdog for `limit` bytes of resident memory. Where the resident memory
    /// cannot be read (not Linux), the guard is disabled and says so in the log.
    pub fn start(limit: u64) -> MemoryGuard {
        if resident_bytes().is_none() {
            tracing::warn!("cannot read this process's resident memory; the memory limit is off");
            return MemoryGuard::disabled();
        }
        let guard = MemoryGuard {
            inner: Arc::new(GuardInner {
                limit: Some(limit),
                tracked: Mutex::new(Tracked::default()),
                trips: AtomicU64::new(0),
                stop: AtomicBool::new(false),
            }),
        };
        let watched = Arc::downgrade(&guard.inner);
        let spawned = std::thread::Builder::new()
            .name("floe-memory".to_owned())
            .spawn(move || watch(&watched, limit));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the memory watchdog; the memory limit is off");
            return MemoryGuard::disabled();
        }
        guard
    }

    /// The limit in bytes, when the watchdog runs.
    pub fn limit(&self) -> Option<u64> {
        self.inner.limit
    }

    /// Computations cancelled for memory since start.
    pub fn trips(&self) -> u64 {
        self.inner.trips.load(Ordering::Relaxed)
    }

    /// Tracks `cancel`'s work, described by `what` in the log, until the result is dropped.
    pub fn track(&self, cancel: &Cancel, what: impl Into<String>) -> TrackedWork {
        let mut tracked = lock(&self.inner.tracked);
        tracked.next += 1;
        let id = tracked.next;
        tracked.work.push((id, cancel.clone(), what.into()));
        TrackedWork {
            guard: Arc::downgrade(&self.inner),
            id,
        }
    }

    /// One look: cancels the newest tracked work still running when `resident` is over the
    /// limit. Returns what it cancelled.
    fn enforce(&self, resident: u64) -> Option<String> {
        let limit = self.inner.limit?;
        if resident <= limit {
            return None;
        }
        let tracked = lock(&self.inner.tracked);
        let (_, cancel, what) = tracked
            .work
            .iter()
            .rev()
            .find(|(_, cancel, _)| !cancel.is_cancelled())?;
        let reason = format!(
            "the server's memory limit of {} was exceeded ({} resident); the newest query was \
             stopped (limits.memory)",
            human_bytes(limit),
            human_bytes(resident)
        );
        cancel.cancel(reason);
        self.inner.trips.fetch_add(1, Ordering::Relaxed);
        Some(what.clone())
    }
}

fn watch(guard: &Weak<GuardInner>, limit: u64) {
    loop {
        std::thread::sleep(INTERVAL);
        let Some(inner) = guard.upgrade() else { return };
        if inner.stop.load(Ordering::Acquire) {
            return;
        }
        let Some(resident) = resident_bytes() else {
            continue;
        };
        let guard_now = MemoryGuard { inner };
        if let Some(what) = guard_now.enforce(resident) {
            tracing::warn!(
                resident = resident,
                limit = limit,
                stopped = %what,
                "over the memory limit: stopped the newest query"
            );
            drop(guard_now);
            std::thread::sleep(COOL_DOWN);
        }
    }
}

/// `1.5 GiB`, for messages.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_it_needs() {
        assert_eq!(
            kilobytes_field("Name: x\nVmRSS:\t  2048 kB\n", "VmRSS:"),
            Some(2 << 20)
        );
        assert_eq!(kilobytes_field("VmRSS: lots\n", "VmRSS:"), None);
        // File-backed pages (code, mapped files) are not charged; anonymous, shared and
        // swapped ones are.
        let status = "VmRSS:\t 7168 kB\nRssAnon:\t 2048 kB\nRssFile:\t 4096 kB\n\
                      RssShmem:\t 1024 kB\nVmSwap:\t 1024 kB\n";
        assert_eq!(charged_bytes(status), Some(4 << 20));
        // A kernel without the split: all of VmRSS.
        assert_eq!(
            charged_bytes("VmRSS:\t 7168 kB\nVmSwap:\t 0 kB\n"),
            Some(7 << 20)
        );
        assert_eq!(charged_bytes("Name: x\n"), None);
        if cfg!(target_os = "linux") {
            assert!(resident_bytes().unwrap() > 0);
            assert!(physical_bytes().unwrap() > resident_bytes().unwrap());
        }
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }

    #[test]
    fn over_the_limit_the_newest_running_work_is_cancelled_first() {
        let guard = MemoryGuard {
            inner: Arc::new(GuardInner {
                limit: Some(1000),
                tracked: Mutex::new(Tracked::default()),
                trips: AtomicU64::new(0),
                stop: AtomicBool::new(true),
            }),
        };
        let (old, new) = (Cancel::new(), Cancel::new());
        let _old = guard.track(&old, "old query");
        let tracked_new = guard.track(&new, "new query");
        assert_eq!(guard.enforce(999), None);
        assert_eq!(guard.enforce(5000).as_deref(), Some("new query"));
        assert!(new.is_cancelled() && !old.is_cancelled());
        assert!(new.reason().unwrap().contains("memory limit of 1000 B"));
        // The cancelled one is skipped; once it is gone, the older one is next.
        drop(tracked_new);
        assert_eq!(guard.enforce(5000).as_deref(), Some("old query"));
        assert_eq!(guard.enforce(5000), None);
        assert_eq!(guard.trips(), 2);
    }

    #[test]
    fn the_watchdog_cancels_tracked_work_over_a_tiny_limit() {
        let guard = MemoryGuard::start(1);
        if guard.limit().is_none() {
            return; // No resident memory to read on this platform.
        }
        let cancel = Cancel::new();
        let _tracked = guard.track(&cancel, "test");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !cancel.is_cancelled() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(cancel.is_cancelled(), "the watchdog did not act");
    }
}
