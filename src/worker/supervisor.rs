//! The supervisor's side: a [`Worker`] is one supervised child process, started on demand,
//! watched, and started again on the next call after it died.
//!
//! Each running process has two threads here: a reader that routes replies to their callers
//! (and, when the pipe ends, fails every call still waiting with why the process ended), and a
//! watchdog that reads the process's resident memory every few milliseconds, kills it over its
//! memory limit, and health-checks it with pings. A kill is `SIGKILL`: the process's CPU and
//! memory are back at once, whatever polars was doing.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::lock;
use super::wire::{Frame, FrameKind, read_frame, write_frame};
use crate::frames::memory::{human_bytes, resident_bytes_of};

/// How often the watchdog reads a worker's resident memory.
const WATCH_INTERVAL: Duration = Duration::from_millis(10);

/// How often a waiting call asks whether it should stop.
const STOP_POLL: Duration = Duration::from_millis(10);

/// What starts a worker: the program (Floe's own binary) and its arguments.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Added to the worker's environment (which is otherwise the server's).
    pub env: Vec<(String, String)>,
}

/// How a worker is watched.
#[derive(Debug, Clone)]
pub struct Supervision {
    /// Resident memory past which the worker is killed; `None`: no limit.
    pub memory_limit: Option<u64>,
    /// How often an idle or busy worker is pinged.
    pub health_interval: Duration,
    /// How long a ping may go unanswered before the worker is killed as hung.
    pub health_timeout: Duration,
    /// How long a new worker may take to say it is ready.
    pub start_timeout: Duration,
    /// The largest reply accepted from it.
    pub max_reply_bytes: u64,
}

/// Why a call got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No process could be started: the message says why.
    #[error("cannot start the worker process: {0}")]
    Start(String),
    /// The process ended while the call ran: killed over its memory limit, by a kill, by a
    /// crash. The message says which.
    #[error("{0}")]
    Died(String),
    /// The worker answered that the call failed (its handler panicked, say).
    #[error("{0}")]
    Failed(String),
}

/// One supervised worker process at a time, restarted on demand.
pub struct Worker {
    label: String,
    command: WorkerCommand,
    supervision: Supervision,
    current: Mutex<Option<Arc<Process>>>,
    /// The process `current` holds, for reports: `current` is held while a process starts,
    /// this never for longer than a clone.
    shown: Mutex<Option<Arc<Process>>>,
    /// Processes started so far.
    starts: AtomicU64,
    /// The highest resident memory any of its processes reached.
    peak_rss: Arc<AtomicU64>,
    /// Why its last process ended, kept after a new one started.
    last_exit: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("label", &self.label)
            .field("starts", &self.starts.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What a worker is doing now, for reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    /// The running process, if any.
    pub pid: Option<u32>,
    pub resident_bytes: Option<u64>,
    pub peak_resident_bytes: u64,
    pub memory_limit: Option<u64>,
    /// Processes started so far (more than one: it was restarted).
    pub starts: u64,
    /// Why the last process ended, if one did.
    pub last_exit: Option<String>,
}

impl Worker {
    pub fn new(
        label: impl Into<String>,
        command: WorkerCommand,
        supervision: Supervision,
    ) -> Worker {
        Worker {
            label: label.into(),
            command,
            supervision,
            current: Mutex::new(None),
            shown: Mutex::new(None),
            starts: AtomicU64::new(0),
            peak_rss: Arc::new(AtomicU64::new(0)),
            last_exit: Arc::new(Mutex::new(None)),
        }
    }

    /// What it is, for logs: `context sales`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Starts a process unless one is running.
    pub fn start(&self) -> Result<(), CallError> {
        self.running().map(drop)
    }

    /// Sends a call and waits for its reply. While it waits, `stop` is asked every few
    /// milliseconds whether the call should stop: once it gives a reason, the worker is asked
    /// to stop the call at its next safe point, and, with `kill_after`, if no reply came
    /// within it the process is killed (and every call in it fails with that reason): polars
    /// does not stop inside a plan, a killed process does. Without it the call waits for the
    /// worker to let go, as a computation in the server's own process would.
    pub fn call(
        &self,
        header: Vec<u8>,
        blobs: Vec<Vec<u8>>,
        stop: &dyn Fn() -> Option<String>,
        kill_after: Option<Duration>,
    ) -> Result<Frame, CallError> {
        let frame = Frame {
            kind: FrameKind::Call,
            id: 0,
            header,
            blobs,
        };
        // Refused before the pipe is touched: a frame the wire cannot carry fails this call
        // alone.
        frame.check_writable().map_err(CallError::Failed)?;
        let process = self.running()?;
        let id = process.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, replied) = crossbeam_channel::bounded(1);
        lock(&process.pending).insert(id, reply);
        // The reader drains `pending` once after it marks the process dead: a call that
        // registered after the drain must not wait for an answer that will never come.
        if process.dead.load(Ordering::Acquire) && lock(&process.pending).remove(&id).is_some() {
            return Err(CallError::Died(process.death()));
        }
        process.send(&Frame { id, ..frame });
        let mut stopping: Option<(Instant, String)> = None;
        let mut killed = false;
        loop {
            // The reader answers every pending call: with its reply, or with why the process
            // ended (a failed write ends it too).
            match replied.recv_timeout(STOP_POLL) {
                Ok(answer) => return answer,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(CallError::Died(process.death()));
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    match (&stopping, kill_after) {
                        (None, _) => {
                            if let Some(reason) = stop() {
                                process.send(&Frame::control(FrameKind::Cancel, id));
                                stopping = Some((Instant::now(), reason));
                            }
                        }
                        (Some((since, reason)), Some(grace))
                            if !killed && since.elapsed() >= grace =>
                        {
                            tracing::warn!(worker = %process.label, reason = %reason, "killing a worker process: a call did not stop within its grace");
                            process.kill(reason.clone());
                            killed = true;
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Kills the running process, if any (the context is being deleted or reset).
    pub fn stop(&self, reason: &str) {
        if let Some(process) = lock(&self.current).take() {
            process.kill(reason.to_owned());
        }
        lock(&self.shown).take();
    }

    /// The running process's id, if one runs.
    pub fn pid(&self) -> Option<u32> {
        lock(&self.shown)
            .as_ref()
            .filter(|p| p.is_live())
            .map(|p| p.pid)
    }

    /// What the worker is doing. Never waits for a start in progress (it reports the
    /// process before), so a report cannot hang on a slow or crashing worker.
    pub fn status(&self) -> WorkerStatus {
        let current = lock(&self.shown).clone();
        let live = current.as_ref().filter(|p| p.is_live());
        WorkerStatus {
            pid: live.map(|p| p.pid),
            resident_bytes: live.and_then(|p| resident_bytes_of(p.pid)),
            peak_resident_bytes: self.peak_rss.load(Ordering::Relaxed),
            memory_limit: self.supervision.memory_limit,
            starts: self.starts.load(Ordering::Relaxed),
            last_exit: lock(&self.last_exit).clone(),
        }
    }

    /// The running process, started if there is none or it died (or is being killed: its
    /// calls fail with their own reason, a new call goes to a new process).
    fn running(&self) -> Result<Arc<Process>, CallError> {
        let mut current = lock(&self.current);
        if let Some(process) = current.as_ref()
            && process.is_live()
        {
            return Ok(process.clone());
        }
        let process = self.spawn()?;
        *current = Some(process.clone());
        *lock(&self.shown) = Some(process.clone());
        Ok(process)
    }

    fn spawn(&self) -> Result<Arc<Process>, CallError> {
        let start = |e: std::io::Error| {
            CallError::Start(format!("{}: {e}", self.command.program.display()))
        };
        let mut child = Command::new(&self.command.program)
            .args(&self.command.args)
            .envs(self.command.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(start)?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(CallError::Start("its pipes could not be opened".to_owned()));
        };
        let generation = self.starts.fetch_add(1, Ordering::Relaxed) + 1;
        let process = Arc::new(Process {
            pid: child.id(),
            label: format!("{} (pid {})", self.label, child.id()),
            child: Mutex::new(child),
            stdin: Mutex::new(BufWriter::new(stdin)),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            death: OnceLock::new(),
            dead: AtomicBool::new(false),
            ping_sent: Mutex::new(None),
            last_exit: self.last_exit.clone(),
        });
        let (ready, is_ready) = crossbeam_channel::bounded::<()>(1);
        let reader = {
            let process = process.clone();
            let max = self.supervision.max_reply_bytes;
            std::thread::Builder::new()
                .name(format!("floe-worker-read-{generation}"))
                .spawn(move || process.read_replies(stdout, max, &ready))
        };
        if let Err(e) = reader {
            process.kill(format!("cannot start its reader thread: {e}"));
            // Nobody else reaps it.
            let _ = lock(&process.child).wait();
            return Err(CallError::Start(format!(
                "cannot start a reader thread: {e}"
            )));
        }
        let watchdog = {
            let process = Arc::downgrade(&process);
            let supervision = self.supervision.clone();
            let peak = self.peak_rss.clone();
            std::thread::Builder::new()
                .name(format!("floe-worker-watch-{generation}"))
                .spawn(move || watch(&process, &supervision, &peak))
        };
        if let Err(e) = watchdog {
            process.kill(format!("cannot start its watchdog thread: {e}"));
            return Err(CallError::Start(format!(
                "cannot start a watchdog thread: {e}"
            )));
        }
        match is_ready.recv_timeout(self.supervision.start_timeout) {
            Ok(()) => {
                tracing::info!(worker = %process.label, "worker process started");
                Ok(process)
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                let reason = format!(
                    "it did not say it was ready within {}",
                    humantime::format_duration(self.supervision.start_timeout)
                );
                process.kill(reason.clone());
                Err(CallError::Start(reason))
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                Err(CallError::Start(process.wait_death()))
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop("its context was dropped");
    }
}

struct Process {
    pid: u32,
    /// The worker's label and pid, for logs.
    label: String,
    child: Mutex<Child>,
    stdin: Mutex<BufWriter<ChildStdin>>,
    /// Calls waiting for their reply.
    pending: Mutex<HashMap<u64, Sender<Result<Frame, CallError>>>>,
    next_id: AtomicU64,
    /// Why the process ended: set by whoever killed it, else from its exit status.
    death: OnceLock<String>,
    dead: AtomicBool,
    /// When the health check's ping still unanswered was sent.
    ping_sent: Mutex<Option<Instant>>,
    /// Its worker's record of why its last process ended.
    last_exit: Arc<Mutex<Option<String>>>,
}

impl Process {
    /// Neither ended nor being killed.
    fn is_live(&self) -> bool {
        !self.dead.load(Ordering::Acquire) && self.death.get().is_none()
    }

    /// Writes `frame`; a failed write kills the process (its reader then fails every call).
    fn send(&self, frame: &Frame) {
        let written = {
            let mut stdin = lock(&self.stdin);
            write_frame(&mut *stdin, frame).and_then(|()| stdin.flush())
        };
        if let Err(e) = written {
            self.kill(format!("its pipe broke: {e}"));
        }
    }

    /// `SIGKILL`s the process; `reason` is what its calls fail with (the first reason wins).
    fn kill(&self, reason: String) {
        let _ = self.death.set(reason);
        let _ = lock(&self.child).kill();
    }

    fn death(&self) -> String {
        self.death
            .get()
            .cloned()
            .unwrap_or_else(|| "the worker process ended".to_owned())
    }

    /// Waits for the process to end and says why it did.
    fn wait_death(&self) -> String {
        let status = lock(&self.child).wait();
        if self.death.get().is_none() {
            let _ = self.death.set(match status {
                Ok(status) => format!("the worker process {}", describe_exit(status)),
                Err(e) => format!("the worker process ended (its status is unknown: {e})"),
            });
        }
        self.death()
    }

    /// The reader thread: routes replies until the pipe ends, then fails what still waits.
    fn read_replies(&self, stdout: std::process::ChildStdout, max_bytes: u64, ready: &Sender<()>) {
        let mut stdout = BufReader::new(stdout);
        loop {
            let frame = match read_frame(&mut stdout, max_bytes) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    self.kill(format!("the worker process sent a bad reply: {e}"));
                    break;
                }
            };
            match frame.kind {
                FrameKind::Reply | FrameKind::Failed => {
                    let waiting = lock(&self.pending).remove(&frame.id);
                    if let Some(waiting) = waiting {
                        let answer = if frame.kind == FrameKind::Reply {
                            Ok(frame)
                        } else {
                            Err(CallError::Failed(
                                String::from_utf8_lossy(&frame.header).into_owned(),
                            ))
                        };
                        let _ = waiting.send(answer);
                    }
                }
                FrameKind::Pong => *lock(&self.ping_sent) = None,
                FrameKind::Ready => {
                    let _ = ready.try_send(());
                }
                other => {
                    self.kill(format!("the worker process sent a {other:?} frame"));
                    break;
                }
            }
        }
        // Make sure it is gone (a protocol error leaves it running), then say why it ended.
        let _ = lock(&self.child).kill();
        let reason = self.wait_death();
        *lock(&self.last_exit) = Some(reason.clone());
        self.dead.store(true, Ordering::Release);
        let waiting: Vec<_> = lock(&self.pending).drain().collect();
        if waiting.is_empty() {
            tracing::info!(worker = %self.label, reason = %reason, "worker process ended");
        } else {
            tracing::warn!(
                worker = %self.label, reason = %reason, calls = waiting.len(),
                "worker process ended with calls running"
            );
        }
        for (_, call) in waiting {
            let _ = call.send(Err(CallError::Died(reason.clone())));
        }
    }
}

/// The watchdog of one process: its memory limit and its health checks.
fn watch(process: &Weak<Process>, supervision: &Supervision, peak: &AtomicU64) {
    let mut next_ping = Instant::now() + supervision.health_interval;
    let mut ping_id = 0u64;
    loop {
        std::thread::sleep(WATCH_INTERVAL);
        let Some(process) = process.upgrade() else {
            return;
        };
        if process.dead.load(Ordering::Acquire) || process.death.get().is_some() {
            return;
        }
        if let Some(rss) = resident_bytes_of(process.pid) {
            peak.fetch_max(rss, Ordering::Relaxed);
            if let Some(limit) = supervision.memory_limit
                && rss > limit
            {
                process.kill(format!(
                    "memory limit of {} exceeded (the worker process reached {})",
                    human_bytes(limit),
                    human_bytes(rss)
                ));
                return;
            }
        }
        let now = Instant::now();
        // Hung: a ping it was sent went unanswered for the timeout (a ping goes out only
        // when no call is being written, so a long write does not count against it).
        let unanswered = *lock(&process.ping_sent);
        if let Some(sent) = unanswered {
            if now.saturating_duration_since(sent) > supervision.health_timeout {
                process.kill(format!(
                    "the worker process did not answer its health check within {}",
                    humantime::format_duration(supervision.health_timeout)
                ));
                return;
            }
        } else if now >= next_ping {
            ping_id += 1;
            // A call being written holds the pipe; the next tick pings instead.
            if let Ok(mut stdin) = process.stdin.try_lock() {
                next_ping = now + supervision.health_interval;
                *lock(&process.ping_sent) = Some(now);
                let sent = write_frame(&mut *stdin, &Frame::control(FrameKind::Ping, ping_id))
                    .and_then(|()| stdin.flush());
                drop(stdin);
                if let Err(e) = sent {
                    process.kill(format!("its pipe broke: {e}"));
                    return;
                }
            }
        }
    }
}

/// `exited with status 3`, `was killed by signal 6 (SIGABRT)`.
fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(signal) => {
            let name = match signal {
                6 => " (SIGABRT)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                7 => " (SIGBUS)",
                4 => " (SIGILL)",
                15 => " (SIGTERM)",
                _ => "",
            };
            let core = if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            };
            format!("was killed by signal {signal}{name}{core}")
        }
        None => "ended".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_described_by_status_or_signal() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            describe_exit(ExitStatus::from_raw(3 << 8)),
            "exited with status 3"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(6)),
            "was killed by signal 6 (SIGABRT)"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(9)),
            "was killed by signal 9 (SIGKILL)"
        );
    }

    fn supervision() -> Supervision {
        Supervision {
            memory_limit: None,
            health_interval: Duration::from_secs(5),
            health_timeout: Duration::from_secs(5),
            start_timeout: Duration::from_secs(5),
            max_reply_bytes: 1 << 20,
        }
    }

    #[test]
    fn a_program_that_is_not_a_worker_fails_to_start_with_the_reason() {
        // `true` exits at once without saying it is ready.
        let worker = Worker::new(
            "test",
            WorkerCommand {
                program: "true".into(),
                args: Vec::new(),
                env: Vec::new(),
            },
            supervision(),
        );
        let error = worker
            .call(b"{}".to_vec(), Vec::new(), &|| None, None)
            .unwrap_err();
        assert_eq!(
            error,
            CallError::Start("the worker process exited with status 0".to_owned())
        );
        let missing = Worker::new(
            "test",
            WorkerCommand {
                program: "/nonexistent/floe".into(),
                args: Vec::new(),
                env: Vec::new(),
            },
            supervision(),
        );
        let error = missing.start().unwrap_err().to_string();
        assert!(
            error.starts_with("cannot start the worker process: /nonexistent/floe: "),
            "{error}"
        );
    }
}
