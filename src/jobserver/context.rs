//! Contexts: long-lived executors with their own worker threads, a bounded job queue and a
//! registry of named objects.
//!
//! spark-jobserver rejects a job with a bare 503 as soon as its slots are taken. Here a
//! context admits `worker-threads` running jobs plus `queue-length` waiting ones; only past
//! that is a job refused (429 with `Retry-After` at the HTTP layer). Admission is one atomic
//! counter, so the check costs nothing on the hot path of a warm context.
//!
//! Worker threads are plain OS threads fed by a channel: jobs run polars, which blocks, so
//! they stay off tokio's async workers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use crossbeam_channel::{Receiver, Sender};
use serde_json::Value;

use super::limits::Limits;
use super::objects::{NamedObjects, ObjectSummary};
use super::remote::ObjectsView;
use super::workers::{ProcessMode, WorkerSettings};
use crate::worker::Worker;

/// The execution timeout of a job when its context does not set one (`job-timeout`).
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(3600);

/// The longest `job-timeout` a context or a job may set: a week. A job is not meant to hold
/// a worker thread for longer, and `99999999d` must not pass for "no timeout" (only an
/// admin's `job-timeout = off` on a context means that).
pub const MAX_JOB_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a duration or size setting's value was refused. The message reads on from the
/// setting's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("expected a positive duration, found `{0}`")]
    NotPositive(String),
    #[error("expected a duration such as `30s`, `5m` or `1h`, found `{0}`")]
    NotADuration(String),
    #[error(
        "`{0}` is longer than the longest execution timeout, {max} (7 days)",
        max = humantime::format_duration(MAX_JOB_TIMEOUT)
    )]
    TimeoutTooLong(String),
    #[error("expected a size such as `512m` or `2g`, found `{0}`")]
    NotASize(String),
    #[error("unknown size unit `{unit}` in `{text}` (use k, m, g or t)")]
    UnknownUnit { unit: String, text: String },
    #[error("size `{0}` is out of range")]
    SizeOutOfRange(String),
}

/// Why a context setting was refused, naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("setting `{key}`: expected a number or a string, found {found}")]
    NotNumberOrString { key: String, found: String },
    #[error("setting `{key}`: expected a whole number from {min}, found `{text}`")]
    NotWholeNumber { key: String, min: u8, text: String },
    #[error("setting `{key}`: {problem}")]
    Value { key: String, problem: ValueError },
    #[error(
        "unknown context setting `{0}` (known: worker-threads, queue-length, memory-budget, \
         job-timeout, process, memory-limit)"
    )]
    Unknown(String),
    #[error("setting `process`: expected `worker` or `in-process`, found `{0}`")]
    Process(String),
    /// A job's own `job-timeout` (in its config, not a context's settings).
    #[error("`job-timeout`: {0}")]
    JobTimeout(ValueError),
    #[error("`job-timeout`: expected a duration such as `30s`, found {0}")]
    JobTimeoutNotADuration(String),
}

/// A `job-timeout` value (`30s`, `5m`, `2h`, a number of seconds), at most [`MAX_JOB_TIMEOUT`].
pub fn parse_job_timeout(text: &str) -> Result<Duration, ValueError> {
    let timeout = parse_duration(text)?;
    if timeout > MAX_JOB_TIMEOUT {
        return Err(ValueError::TimeoutTooLong(text.trim().to_owned()));
    }
    Ok(timeout)
}

/// The settings a context is created with.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextSettings {
    /// Jobs running at once, one OS thread each.
    pub worker_threads: usize,
    /// Jobs waiting for a thread before new ones are refused.
    pub queue_length: usize,
    /// Bytes of named objects and their selections the context may hold.
    pub memory_budget: u64,
    /// Execution timeout of each job; a job's config may set a shorter one, never a longer
    /// one. `None` (`off`): jobs keep their own, if any.
    pub job_timeout: Option<Duration>,
    /// Where its jobs and named objects live (`process`); `None`: as the server's `workers`
    /// settings say.
    pub process: Option<ProcessMode>,
    /// Resident memory past which its worker process is killed (`memory-limit`); `None`:
    /// `workers.memory_limit`.
    pub memory_limit: Option<u64>,
}

impl Default for ContextSettings {
    fn default() -> Self {
        ContextSettings {
            worker_threads: 2,
            queue_length: 64,
            memory_budget: 2 << 30,
            // Every job stops by default: a forgotten job must not hold a worker forever.
            job_timeout: Some(DEFAULT_JOB_TIMEOUT),
            process: None,
            memory_limit: None,
        }
    }
}

/// Settings spark-jobserver clients send that mean nothing to Floe; accepted and ignored so
/// their scripts keep working.
pub(super) fn is_spark_setting(key: &str) -> bool {
    key.starts_with("spark.")
        || key.starts_with("launcher.")
        || matches!(
            key,
            "spark"
                | "launcher"
                | "context-factory"
                | "dependent-jar-uris"
                | "stop-context-on-job-error"
                | "context-init-timeout"
                | "forked-jvm-init-timeout"
                | "passthrough"
                | "hadoop"
                | "python"
        )
}

impl ContextSettings {
    /// Applies one `key = value` setting; spark's own settings are ignored.
    pub fn apply(&mut self, key: &str, value: &Value) -> Result<(), SettingError> {
        let text = match value {
            Value::String(s) => s.trim().to_owned(),
            Value::Number(n) => n.to_string(),
            other => {
                if is_spark_setting(key) {
                    return Ok(());
                }
                return Err(SettingError::NotNumberOrString {
                    key: key.to_owned(),
                    found: other.to_string(),
                });
            }
        };
        let whole = |min: u8| SettingError::NotWholeNumber {
            key: key.to_owned(),
            min,
            text: text.clone(),
        };
        let value_error = |problem| SettingError::Value {
            key: key.to_owned(),
            problem,
        };
        // Upper bounds are the server's `limits`, checked on the settings as a whole
        // (`ContextSettings::checked`).
        match key {
            "worker-threads" | "max-jobs" | "max-jobs-per-context" | "num-cpu-cores" => {
                self.worker_threads = text
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| whole(1))?;
            }
            "queue-length" => {
                self.queue_length = text.parse::<usize>().map_err(|_| whole(0))?;
            }
            "memory-budget" | "memory-per-node" => {
                self.memory_budget = parse_bytes(&text).map_err(value_error)?;
            }
            "process" => {
                self.process = Some(
                    ProcessMode::parse(&text).ok_or_else(|| SettingError::Process(text.clone()))?,
                );
            }
            "memory-limit" => {
                self.memory_limit = Some(parse_bytes(&text).map_err(value_error)?);
            }
            "job-timeout" => {
                self.job_timeout = if text.trim().eq_ignore_ascii_case("off") {
                    None
                } else {
                    Some(parse_job_timeout(&text).map_err(value_error)?)
                };
            }
            _ if is_spark_setting(key) => {}
            _ => return Err(SettingError::Unknown(key.to_owned())),
        }
        Ok(())
    }

    /// Applies every setting of `settings`, collecting all problems. Upper bounds are not
    /// checked here: see [`ContextSettings::checked`].
    pub fn apply_all(&mut self, settings: &BTreeMap<String, Value>) -> Result<(), Vec<String>> {
        let errors: Vec<String> = settings
            .iter()
            .filter_map(|(key, value)| self.apply(key, value).err())
            .map(|error| error.to_string())
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// `base` with `given` applied, held to the per-context bounds of `limits`: every
    /// problem, each naming its setting (and the limit's key).
    pub fn checked(
        base: &ContextSettings,
        given: &BTreeMap<String, Value>,
        limits: &Limits,
    ) -> Result<ContextSettings, Vec<String>> {
        let mut settings = base.clone();
        settings.apply_all(given)?;
        let problems = limits.check_context_settings(&settings);
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(problems)
        }
    }

    /// The settings of one ad-hoc job whose config carries `spark.context-settings` (`given`),
    /// over the server's ad-hoc settings (`self`). Keys are read as `POST /contexts` reads
    /// them (unknown ones refused, spark's own ignored). A job may lower the ad-hoc
    /// `job-timeout` and `memory-budget`, never raise them: they are the admin's bounds. The
    /// thread and queue settings cannot apply to one job, since ad-hoc jobs share one pool:
    /// asking for them is refused rather than ignored.
    pub fn for_adhoc_job(&self, given: &BTreeMap<String, Value>) -> Result<Self, Vec<String>> {
        let mut asked = self.clone();
        let mut errors = Vec::new();
        for (key, value) in given {
            if matches!(
                key.as_str(),
                "worker-threads"
                    | "max-jobs"
                    | "max-jobs-per-context"
                    | "num-cpu-cores"
                    | "queue-length"
                    | "process"
            ) {
                errors.push(format!(
                    "setting `{key}` cannot be set for one ad-hoc job: ad-hoc jobs share the \
                     server's ad-hoc pool (`adhoc` in the server config); create a context \
                     with it (POST /contexts/{{name}}) and run the job there"
                ));
            } else if let Err(e) = asked.apply(key, value) {
                errors.push(e.to_string());
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ContextSettings {
            memory_budget: asked.memory_budget.min(self.memory_budget),
            job_timeout: super::plan::effective_job_timeout(self.job_timeout, asked.job_timeout),
            // Lowered only; checked against `workers.memory_limit` by the caller.
            memory_limit: match (self.memory_limit, given.contains_key("memory-limit")) {
                (Some(own), true) => asked.memory_limit.map(|asked| asked.min(own)),
                (None, true) => asked.memory_limit,
                (own, false) => own,
            },
            ..self.clone()
        })
    }

    /// The settings as a JSON object, for reports.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "worker-threads": self.worker_threads,
            "queue-length": self.queue_length,
            "memory-budget": self.memory_budget,
            "job-timeout": self.job_timeout.map(|t| humantime::format_duration(t).to_string()),
            "process": self.process.map(ProcessMode::as_str),
            "memory-limit": self.memory_limit,
        })
    }

    /// Whether a context with these settings runs in a worker process.
    pub fn runs_in_worker(&self, workers: &WorkerSettings) -> bool {
        match self.process {
            Some(mode) => mode == ProcessMode::Worker,
            None => workers.enabled,
        }
    }

    /// The memory limit of its worker process.
    pub fn worker_memory_limit(&self, workers: &WorkerSettings) -> u64 {
        self.memory_limit.unwrap_or(workers.memory_limit)
    }
}

/// `30s`, `5m`, `1h 30m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, ValueError> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return if seconds.is_finite() && seconds > 0.0 && seconds < 1e9 {
            Ok(Duration::from_secs_f64(seconds))
        } else {
            Err(ValueError::NotPositive(text.to_owned()))
        };
    }
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(ValueError::NotADuration(text.to_owned())),
    }
}

/// `512m`, `2g`, `1GiB`, `1048576`: sizes as spark and humans write them (powers of 1024).
pub fn parse_bytes(text: &str) -> Result<u64, ValueError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| ValueError::NotASize(text.to_owned()))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(ValueError::UnknownUnit {
                unit: other.to_owned(),
                text: text.to_owned(),
            });
        }
    };
    let bytes = number * multiplier as f64;
    if bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64 {
        Ok(bytes as u64)
    } else {
        Err(ValueError::SizeOutOfRange(text.to_owned()))
    }
}

/// A unit of work for a worker thread.
pub type Task = Box<dyn FnOnce() + Send + 'static>;

enum Message {
    Run(Task),
    Stop,
}

/// Refused: the executor's threads and queue are all taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull {
    pub capacity: usize,
}

/// Worker threads fed by a channel, with admission control.
#[derive(Debug)]
pub struct Executor {
    sender: Sender<Message>,
    threads: usize,
    capacity: usize,
    /// Jobs admitted and not yet done: running plus queued.
    admitted: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Executor {
    pub fn start(name: &str, threads: usize, queue_length: usize) -> Arc<Executor> {
        let (sender, receiver) = crossbeam_channel::unbounded::<Message>();
        let admitted = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let workers = (0..threads)
            .filter_map(|index| {
                let receiver: Receiver<Message> = receiver.clone();
                let admitted = admitted.clone();
                let running = running.clone();
                std::thread::Builder::new()
                    .name(format!("floe-{name}-{index}"))
                    .spawn(move || worker_loop(&receiver, &admitted, &running))
                    .map_err(|e| tracing::error!(context = name, error = %e, "cannot start a worker thread"))
                    .ok()
            })
            .collect();
        Arc::new(Executor {
            sender,
            threads,
            capacity: threads + queue_length,
            admitted,
            running,
            workers: Mutex::new(workers),
        })
    }

    /// Takes a place for one job, or refuses when every thread is busy and the queue is
    /// full. The place is given back if the reservation is dropped unused, so a caller can
    /// reserve, then record the job, then submit, and never record a job it must refuse.
    pub fn reserve(self: &Arc<Self>) -> Result<Reservation, QueueFull> {
        let before = self.admitted.fetch_add(1, Ordering::AcqRel);
        if before >= self.capacity {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(QueueFull {
                capacity: self.capacity,
            });
        }
        Ok(Reservation {
            executor: Some(self.clone()),
        })
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Worker threads that have not exited yet: all of them while the executor runs, and
    /// after [`Executor::stop`] those still finishing a job.
    pub fn live_threads(&self) -> usize {
        self.workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|worker| !worker.is_finished())
            .count()
    }

    pub fn queued(&self) -> usize {
        self.admitted
            .load(Ordering::Acquire)
            .saturating_sub(self.running())
    }

    /// Asks the threads to exit once the jobs already queued are done (cancelled jobs finish
    /// at once). Does not wait.
    pub fn stop(&self) {
        for _ in 0..self.threads {
            let _ = self.sender.send(Message::Stop);
        }
    }

    /// Waits up to `grace` for the worker threads to exit; returns whether they all did.
    pub fn join(&self, grace: Duration) -> bool {
        let deadline = std::time::Instant::now() + grace;
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        while workers.iter().any(|w| !w.is_finished()) {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for worker in workers.drain(..) {
            let _ = worker.join();
        }
        true
    }
}

fn worker_loop(receiver: &Receiver<Message>, admitted: &AtomicUsize, running: &AtomicUsize) {
    while let Ok(message) = receiver.recv() {
        match message {
            Message::Run(task) => {
                running.fetch_add(1, Ordering::AcqRel);
                // A panic in a job must not kill the thread (the job itself records it).
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task));
                running.fetch_sub(1, Ordering::AcqRel);
                admitted.fetch_sub(1, Ordering::AcqRel);
            }
            Message::Stop => break,
        }
    }
}

/// A place in an executor's threads or queue; see [`Executor::reserve`].
#[derive(Debug)]
pub struct Reservation {
    executor: Option<Arc<Executor>>,
}

impl Reservation {
    /// Queues `task` in the reserved place.
    pub fn submit(mut self, task: Task) {
        if let Some(executor) = self.executor.take()
            && let Err(crossbeam_channel::SendError(Message::Run(task))) =
                executor.sender.send(Message::Run(task))
        {
            // The threads were stopped (context deleted meanwhile): run the task here so
            // the job still reaches a final state, which it does at once when cancelled.
            executor.admitted.fetch_sub(1, Ordering::AcqRel);
            task();
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(executor) = self.executor.take() {
            executor.admitted.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A context: an executor and named objects, under a name.
#[derive(Debug)]
pub struct Context {
    pub name: String,
    pub id: String,
    pub start_time: DateTime<Utc>,
    pub settings: ContextSettings,
    /// The settings as given, kept for the store and for reports.
    pub given: BTreeMap<String, Value>,
    pub executor: Arc<Executor>,
    /// Its named objects when it runs in this process (empty when it runs in a worker).
    pub objects: Arc<NamedObjects>,
    /// Its worker process, when it runs in one ([`ContextSettings::runs_in_worker`]).
    pub worker: Option<Arc<Worker>>,
    /// Its named objects in its worker process, as the last reply said.
    pub remote_objects: Mutex<ObjectsView>,
    /// Ad-hoc contexts share one executor and live for one job.
    pub adhoc: bool,
    stopping: AtomicBool,
}

impl Context {
    pub fn start(
        name: &str,
        id: String,
        start_time: DateTime<Utc>,
        settings: ContextSettings,
        given: BTreeMap<String, Value>,
        worker: Option<Arc<Worker>>,
    ) -> Context {
        let executor = Executor::start(name, settings.worker_threads, settings.queue_length);
        Context {
            name: name.to_owned(),
            id,
            start_time,
            objects: Arc::new(NamedObjects::new(settings.memory_budget)),
            settings,
            given,
            executor,
            worker,
            remote_objects: Mutex::new(ObjectsView::default()),
            adhoc: false,
            stopping: AtomicBool::new(false),
        }
    }

    /// A one-job context on the shared ad-hoc executor, with its own empty named objects;
    /// `worker`: the job's own worker process (it set its own `memory-limit`). Without one,
    /// the job runs in a process of the ad-hoc pool, or in this one.
    pub fn adhoc(
        executor: Arc<Executor>,
        settings: &ContextSettings,
        id: String,
        start_time: DateTime<Utc>,
        worker: Option<Arc<Worker>>,
    ) -> Context {
        Context {
            name: String::new(),
            id,
            start_time,
            settings: settings.clone(),
            given: BTreeMap::new(),
            executor,
            objects: Arc::new(NamedObjects::new(settings.memory_budget)),
            worker,
            remote_objects: Mutex::new(ObjectsView::default()),
            adhoc: true,
            stopping: AtomicBool::new(false),
        }
    }

    /// Its named objects, wherever they live (none once the worker process they were in has
    /// ended).
    pub fn object_summaries(&self) -> Vec<ObjectSummary> {
        match &self.worker {
            Some(worker) => self
                .live_view(worker, |view| view.summaries.clone())
                .unwrap_or_default(),
            None => self.objects.summaries(),
        }
    }

    /// Bytes its named objects take, wherever they live.
    pub fn objects_used(&self) -> u64 {
        match &self.worker {
            Some(worker) => self.live_view(worker, |view| view.used).unwrap_or(0),
            None => self.objects.used(),
        }
    }

    /// `read` of the view of its worker's objects, if the view is of the process running now.
    fn live_view<T>(&self, worker: &Worker, read: impl FnOnce(&ObjectsView) -> T) -> Option<T> {
        let view = self
            .remote_objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (view.pid.is_some() && view.pid == worker.pid()).then(|| read(&view))
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Marks the context stopping and asks its threads to exit; named objects are freed.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        if !self.adhoc {
            self.executor.stop();
        }
        self.objects.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn sizes_and_durations_parse_like_spark_settings() {
        assert_eq!(parse_bytes("512m").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("2g").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert_eq!(
            parse_bytes("12q").unwrap_err().to_string(),
            "unknown size unit `q` in `12q` (use k, m, g or t)"
        );
        assert!(parse_bytes("m").is_err());
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2500));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn job_timeouts_are_at_most_a_week() {
        assert_eq!(parse_job_timeout("7d").unwrap(), MAX_JOB_TIMEOUT);
        assert_eq!(parse_job_timeout("604800").unwrap(), MAX_JOB_TIMEOUT);
        assert_eq!(
            parse_job_timeout("99999999d").unwrap_err().to_string(),
            "`99999999d` is longer than the longest execution timeout, 7days (7 days)"
        );
        assert!(parse_job_timeout("604801").is_err());
        let mut settings = ContextSettings::default();
        assert_eq!(
            settings
                .apply("job-timeout", &Value::from("8d"))
                .unwrap_err()
                .to_string(),
            "setting `job-timeout`: `8d` is longer than the longest execution timeout, 7days \
             (7 days)"
        );
        settings.apply("job-timeout", &Value::from("off")).unwrap();
        assert_eq!(settings.job_timeout, None);
        settings.apply("job-timeout", &Value::from("2s")).unwrap();
        assert_eq!(settings.job_timeout, Some(Duration::from_secs(2)));
    }

    #[test]
    fn settings_accept_aliases_ignore_spark_keys_and_name_unknown_ones() {
        let mut settings = ContextSettings::default();
        let given: BTreeMap<String, Value> = [
            ("num-cpu-cores", Value::from(4)),
            ("memory-per-node", Value::from("512m")),
            ("spark.executor.memory", Value::from("1g")),
            ("context-factory", Value::from("x.Y")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        settings.apply_all(&given).unwrap();
        assert_eq!(settings.worker_threads, 4);
        assert_eq!(settings.memory_budget, 512 << 20);
        let errors = settings
            .apply_all(
                &[
                    ("workers".to_owned(), Value::from(2)),
                    ("queue-length".to_owned(), Value::from("-1")),
                ]
                .into_iter()
                .collect(),
            )
            .unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(
            errors[0].contains("expected a whole number from 0"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("unknown context setting `workers`"),
            "{errors:?}"
        );
    }

    #[test]
    fn checked_settings_are_held_to_the_limits() {
        let limits = Limits {
            max_threads_per_context: 8,
            max_queue_length: 100,
            ..Limits::default()
        };
        let given = |pairs: &[(&str, &str)]| -> BTreeMap<String, Value> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
                .collect()
        };
        let base = ContextSettings::default();
        let settings = ContextSettings::checked(
            &base,
            &given(&[("num-cpu-cores", "8"), ("queue-length", "100")]),
            &limits,
        )
        .unwrap();
        assert_eq!((settings.worker_threads, settings.queue_length), (8, 100));
        let errors = ContextSettings::checked(
            &base,
            &given(&[("max-jobs", "1024"), ("queue-length", "1000000000")]),
            &limits,
        )
        .unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].contains("1024 is above the limit of 8")
                && errors[0].contains("`limits.max_threads_per_context`"),
            "{errors:?}"
        );
        assert!(
            errors[1].contains("`limits.max_queue_length`"),
            "{errors:?}"
        );
        // Parse errors come first and alone: there is nothing to bound yet.
        let errors = ContextSettings::checked(&base, &given(&[("worker-threads", "0")]), &limits)
            .unwrap_err();
        assert_eq!(
            errors,
            ["setting `worker-threads`: expected a whole number from 1, found `0`"]
        );
    }

    #[test]
    fn a_stopped_executor_counts_the_threads_still_finishing_a_job() {
        let executor = Executor::start("retiring", 2, 0);
        assert_eq!(executor.live_threads(), 2);
        let (started_tx, started_rx) = mpsc::channel::<()>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        executor.reserve().unwrap().submit(Box::new(move || {
            let _ = started_tx.send(());
            let _ = release_rx.recv();
        }));
        started_rx.recv().unwrap();
        executor.stop();
        // The idle thread exits at once; the busy one only once its job returns.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while executor.live_threads() > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(executor.live_threads(), 1);
        release_tx.send(()).unwrap();
        assert!(executor.join(Duration::from_secs(5)));
        assert_eq!(executor.live_threads(), 0);
    }

    #[test]
    fn executor_admits_threads_plus_queue_then_refuses() {
        let executor = Executor::start("test", 1, 2);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let (done_tx, done_rx) = mpsc::channel::<usize>();
        for i in 0..3 {
            let release_rx = release_rx.clone();
            let done_tx = done_tx.clone();
            executor.reserve().unwrap().submit(Box::new(move || {
                let _ = release_rx.lock().unwrap().recv();
                let _ = done_tx.send(i);
            }));
        }
        assert_eq!(executor.reserve().unwrap_err(), QueueFull { capacity: 3 });
        // The refusal gave its place back: still three admitted.
        assert_eq!(executor.queued() + executor.running(), 3);
        for _ in 0..3 {
            release_tx.send(()).unwrap();
        }
        let mut done: Vec<usize> = (0..3).map(|_| done_rx.recv().unwrap()).collect();
        done.sort();
        assert_eq!(done, [0, 1, 2]);
        executor.stop();
        assert!(executor.join(Duration::from_secs(5)));
        assert_eq!(executor.queued(), 0);
    }
}
