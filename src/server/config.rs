//! `floe serve`'s configuration: one struct, filled from built-in defaults, then the YAML file
//! given with `--config` (or `FLOE_CONFIG`), then environment variables and flags (clap reads
//! both), each later source winning. Unknown keys in the file are errors naming the line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::jobserver::CoreSettings;
use crate::jobserver::callback::{AllowedUrl, CallbackSettings};
use crate::jobserver::context::{ContextSettings, parse_bytes, parse_duration};
use crate::jobserver::limits::{MAX_CONTEXTS, MAX_WORKER_THREADS};
use crate::jobserver::workers::{MIN_WORKER_MEMORY_LIMIT, WorkerSettings};

/// Why `floe serve`'s configuration file is refused. Every message starts with the file's
/// path (and the line, for YAML syntax), then names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// YAML that does not parse, or an unknown key; `message` is serde's without its position.
    #[error("{}:{line}:{column}: {message}", .path.display())]
    SyntaxAt {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: {message}", .path.display())]
    Syntax { path: PathBuf, message: String },
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A size, duration or context setting that does not parse; `problem` is the parser's.
    #[error("{}: `{key}`: {problem}", .path.display())]
    InvalidValue {
        path: PathBuf,
        key: String,
        problem: String,
    },
    #[error("{}: `limits.memory`: `{text}` is not a percentage", .path.display())]
    MemoryNotAPercentage { path: PathBuf, text: String },
    #[error("{}: `limits.memory`: {share}% must be between 1% and 100%", .path.display())]
    MemoryShareOutOfRange { path: PathBuf, share: f64 },
    #[error(
        "{}: `limits.memory`: the machine's memory cannot be read here; give bytes",
        .path.display()
    )]
    MachineMemoryUnknown { path: PathBuf },
    #[error("{}: `{key}` must be at least 1", .path.display())]
    Zero { path: PathBuf, key: &'static str },
    #[error(
        "{}: `max_connections_per_client` ({given}) must be between 1 and `max_connections` \
         ({max_connections})",
        .path.display()
    )]
    ConnectionsPerClient {
        path: PathBuf,
        given: usize,
        max_connections: usize,
    },
    #[error(
        "{}: `tls.{missing}` is missing (give both `tls.cert` and `tls.key`)",
        .path.display()
    )]
    HalfTls {
        path: PathBuf,
        missing: &'static str,
    },
    #[error("{}: `cors.allowed_origins`: {source}", .path.display())]
    CorsOrigins {
        path: PathBuf,
        #[source]
        source: CorsOriginError,
    },
    #[error(
        "{}: `auth.audit_log_max_bytes`: {bytes} bytes is below the minimum of 4KiB",
        .path.display()
    )]
    AuditLogTooSmall { path: PathBuf, bytes: u64 },
    #[error(
        "{}: `auth.open_routes`: `{route}` is not a route of floe serve (write the path as the \
         route table does, e.g. /healthz or /jobs/{{id}})",
        .path.display()
    )]
    UnknownOpenRoute { path: PathBuf, route: String },
    #[error("{}: {source}", .path.display())]
    Limits {
        path: PathBuf,
        #[source]
        source: LimitsError,
    },
}

/// A bind address (from the file, `--bind` or `FLOE_BIND`) that does not parse; `origin`
/// says where it was given.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: `{text}` is not an address such as 127.0.0.1:8090 ({source})")]
pub struct BindError {
    origin: String,
    text: String,
    #[source]
    source: std::net::AddrParseError,
}

/// An entry of `cors.allowed_origins` that a browser's `Origin` header could never equal.
#[derive(Debug, thiserror::Error)]
pub enum CorsOriginError {
    #[error("`*` allows every origin and must be the only entry")]
    StarNotAlone,
    #[error(
        "`{origin}` is not an origin such as https://app.example.com or http://localhost:3000 \
         (lowercase, no path or trailing slash)"
    )]
    NotAnOrigin { origin: String },
}

/// A configuration whose limits, or whose own contexts held to them, do not hold. Messages
/// name the key and the limit.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error("`max_connections` and `max_connections_per_client` must be at least 1")]
    NoConnections,
    #[error("`body_read_timeout` must be longer than 0s")]
    ZeroBodyReadTimeout,
    #[error(
        "`data_files.max_files` ({given}) must be between 1 and {}",
        crate::data_files::MAX_FILES_LIMIT
    )]
    DataFilesMaxFiles { given: usize },
    #[error("`data_files.max_total_bytes` must be at least 1 byte")]
    DataFilesNoBytes,
    /// The limits themselves are inconsistent.
    #[error(transparent)]
    Limits(#[from] crate::jobserver::limits::BoundsError),
    #[error("`{key}`: {}", .problems.join("; "))]
    ContextSettings { key: String, problems: Vec<String> },
    #[error(
        "`adhoc`: setting `worker-threads`: {threads} is above the limit of {max} worker \
         threads in all (`{MAX_WORKER_THREADS}`)"
    )]
    AdhocThreads { threads: usize, max: usize },
    #[error("`contexts`: {count} contexts are above the limit of {max} (`{MAX_CONTEXTS}`)")]
    TooManyContexts { count: usize, max: usize },
    #[error(
        "`contexts`: they and `adhoc` have {threads} worker threads, above the limit of {max} \
         (`{MAX_WORKER_THREADS}`)"
    )]
    TooManyWorkerThreads { threads: usize, max: usize },
}

/// Everything `floe serve` needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub pipelines: PathBuf,
    pub data_dir: PathBuf,
    pub store: PathBuf,
    pub max_upload_bytes: usize,
    pub max_request_bytes: usize,
    pub sync_timeout: Duration,
    /// The most rows one JSON answer carries whole: a sync `POST /jobs` answer, and
    /// `GET /jobs/{id}` without `offset`/`limit`. A larger result is never cut: the answer
    /// says so and points at pages and the streamed formats.
    pub max_json_result_rows: usize,
    pub shutdown_grace: Duration,
    pub result_cache_bytes: usize,
    pub core: CoreSettings,
    /// Contexts started at boot: name → settings.
    pub contexts: BTreeMap<String, BTreeMap<String, Value>>,
    pub scheduler: crate::scheduler::SchedulerConfig,
    /// Tokens, roles, the audit log and the bind rule (`auth:`; see `server/auth.rs`).
    pub auth: super::auth::AuthConfig,
    // The network edge (src/server/listener/).
    /// Connections open at once; beyond it new connections wait in the listen backlog until
    /// one closes.
    pub max_connections: usize,
    /// Connections open at once from one IP address (loopback included); beyond it new ones
    /// from that address are closed at once, so one client cannot take every slot. Counts as
    /// `max_connections` when above it (a value above it in the file is refused).
    pub max_connections_per_client: usize,
    /// How long a client may take to send a request head (and a TLS handshake).
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request, and a request body or
    /// a response may make no progress.
    pub idle_timeout: Duration,
    /// How long a request body may take to arrive in full, from the end of its head, however
    /// steadily it trickles in; then the request answers 408 and the connection is closed.
    pub body_read_timeout: Duration,
    /// HTTPS instead of HTTP when set.
    pub tls: Option<TlsFiles>,
    /// Cross-origin requests from browsers; none allowed by default.
    pub cors: CorsConfig,
    /// Where `POST /data/{prefix}` stores files, and how many (`data_files:`).
    pub data_files: DataFilesConfig,
}

/// `data_files:` of the configuration: the directory of the `/data` routes and its bounds. One
/// file is at most `max_upload_bytes` (the body limit of `POST /data/{prefix}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFilesConfig {
    /// `None`: `data-files` beside the store folder (`.floe/data-files`), Floe's own state,
    /// apart from the data roots so no pipeline source reads it. Created at start-up.
    pub dir: Option<PathBuf>,
    /// Files at once; an upload beyond answers 507 `data_files_full`. At most 100,000.
    pub max_files: usize,
    /// Bytes of every file together; an upload that would pass it answers 507
    /// `data_files_full`.
    pub max_total_bytes: u64,
}

/// The default of `data_files.max_files`.
pub const DEFAULT_DATA_FILES: usize = 100;

/// The default of `data_files.max_total_bytes`: 1 GiB.
pub const DEFAULT_DATA_FILES_BYTES: u64 = 1 << 30;

impl Default for DataFilesConfig {
    fn default() -> Self {
        DataFilesConfig {
            dir: None,
            max_files: DEFAULT_DATA_FILES,
            max_total_bytes: DEFAULT_DATA_FILES_BYTES,
        }
    }
}

impl DataFilesConfig {
    /// The directory of a server whose store is `store`.
    pub fn dir_for(&self, store: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| {
            store
                .parent()
                .map_or_else(|| PathBuf::from("data-files"), |dir| dir.join("data-files"))
        })
    }
}

/// `tls:` of the configuration: PEM files, read at start-up and again on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, the server's certificate first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `cors:` of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsConfig {
    /// Origins (`https://app.example.com`) whose pages may call the API, compared exactly; `*`
    /// alone allows every origin. Empty: no CORS headers are sent at all.
    pub allowed_origins: Vec<String>,
}

/// The default of `max_json_result_rows`: a million rows is some 100 MB of JSON, streamed;
/// past it, CSV, Arrow and Parquet carry results far better.
pub const DEFAULT_MAX_JSON_RESULT_ROWS: usize = 1_000_000;

/// The default of `max_connections_per_client`: well above the clients one host runs (the
/// benchmark's 64 on loopback, a proxy's pool), well below `max_connections`' 1,024.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 256;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8090)),
            pipelines: PathBuf::from("pipelines"),
            data_dir: PathBuf::from("data"),
            store: PathBuf::from(".floe/store"),
            max_upload_bytes: 30 << 20,
            max_request_bytes: 4 << 20,
            sync_timeout: Duration::from_secs(10),
            max_json_result_rows: DEFAULT_MAX_JSON_RESULT_ROWS,
            shutdown_grace: Duration::from_secs(30),
            result_cache_bytes: 512 << 20,
            // `floe serve` runs every context in a worker process of its own; the library's
            // own default (`CoreSettings`) is in-process.
            core: CoreSettings {
                workers: WorkerSettings {
                    enabled: true,
                    ..WorkerSettings::default()
                },
                ..CoreSettings::default()
            },
            contexts: BTreeMap::new(),
            scheduler: crate::scheduler::SchedulerConfig::default(),
            auth: super::auth::AuthConfig::default(),
            max_connections: 1024,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            tls: None,
            cors: CorsConfig::default(),
            data_files: DataFilesConfig::default(),
        }
    }
}

/// The YAML file's shape; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    bind: Option<String>,
    pipelines: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    store: Option<PathBuf>,
    max_upload_bytes: Option<Value>,
    max_request_bytes: Option<Value>,
    sync_timeout: Option<Value>,
    max_json_result_rows: Option<usize>,
    shutdown_grace: Option<Value>,
    result_cache_bytes: Option<Value>,
    job_history: Option<usize>,
    job_retention: Option<Value>,
    limits: Option<LimitsFile>,
    data_roots: Option<Vec<PathBuf>>,
    operator_data_roots: Option<Vec<PathBuf>>,
    adhoc: Option<BTreeMap<String, Value>>,
    context_defaults: Option<BTreeMap<String, Value>>,
    contexts: Option<BTreeMap<String, BTreeMap<String, Value>>>,
    scheduler: Option<SchedulerFile>,
    auth: Option<super::auth::AuthFile>,
    max_connections: Option<usize>,
    max_connections_per_client: Option<usize>,
    header_read_timeout: Option<Value>,
    idle_timeout: Option<Value>,
    body_read_timeout: Option<Value>,
    tls: Option<TlsFile>,
    cors: Option<CorsFile>,
    callbacks: Option<CallbacksFile>,
    data_files: Option<DataFilesFile>,
    workers: Option<WorkersFile>,
}

/// `workers:` in the config file: whether contexts run in worker processes and how those are
/// started and watched (see `jobserver::workers::WorkerSettings`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkersFile {
    enabled: Option<bool>,
    allow_in_process: Option<bool>,
    runs: Option<bool>,
    executable: Option<PathBuf>,
    /// Bytes (`4g`).
    memory_limit: Option<Value>,
    kill_grace: Option<Value>,
    health_interval: Option<Value>,
    health_timeout: Option<Value>,
    start_timeout: Option<Value>,
}

impl WorkersFile {
    /// Overlays the keys given on `workers`, each checked; a problem names its key.
    fn apply(self, file: &Path, workers: &mut WorkerSettings) -> Result<(), ConfigError> {
        let WorkersFile {
            enabled,
            allow_in_process,
            runs,
            executable,
            memory_limit,
            kill_grace,
            health_interval,
            health_timeout,
            start_timeout,
        } = self;
        if let Some(enabled) = enabled {
            workers.enabled = enabled;
        }
        if let Some(allow) = allow_in_process {
            workers.allow_in_process = allow;
        }
        if let Some(runs) = runs {
            workers.runs = runs;
        }
        if let Some(executable) = executable {
            workers.executable = Some(executable);
        }
        if let Some(value) = &memory_limit {
            let limit = size(file, "workers.memory_limit", value)? as u64;
            if limit < MIN_WORKER_MEMORY_LIMIT {
                return Err(invalid(
                    file,
                    "workers.memory_limit",
                    format!(
                        "{limit} bytes is below the {MIN_WORKER_MEMORY_LIMIT} a worker process \
                         needs to start"
                    ),
                ));
            }
            workers.memory_limit = limit;
        }
        if let Some(value) = &kill_grace {
            workers.kill_grace = duration(file, "workers.kill_grace", value)?;
        }
        if let Some(value) = &health_interval {
            workers.health_interval = duration(file, "workers.health_interval", value)?;
        }
        if let Some(value) = &health_timeout {
            workers.health_timeout = duration(file, "workers.health_timeout", value)?;
        }
        if let Some(value) = &start_timeout {
            workers.start_timeout = duration(file, "workers.start_timeout", value)?;
        }
        Ok(())
    }
}

/// `data_files:` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataFilesFile {
    dir: Option<PathBuf>,
    max_files: Option<usize>,
    /// Bytes (`1GiB`).
    max_total_bytes: Option<Value>,
}

/// `tls:` in the config file; both keys or neither.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// `cors:` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CorsFile {
    allowed_origins: Option<Vec<String>>,
}

/// `callbacks:` in the config file: where a `callbackUrl` may point and how its POST is made
/// (see `jobserver::callback::CallbackSettings`, where each is documented). Every key is
/// optional; without `allowed_urls` every `callbackUrl` is refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallbacksFile {
    allowed_urls: Option<Vec<String>>,
    attempts: Option<u32>,
    retry_interval: Option<Value>,
    timeout: Option<Value>,
    max_pending: Option<usize>,
    /// Bytes (`256k`) of a FINISHED job's rows in the body.
    max_body_bytes: Option<Value>,
}

impl CallbacksFile {
    /// Overlays the keys given on `callbacks`, each checked; a problem names its key.
    fn apply(self, file: &Path, callbacks: &mut CallbackSettings) -> Result<(), ConfigError> {
        let CallbacksFile {
            allowed_urls,
            attempts,
            retry_interval,
            timeout,
            max_pending,
            max_body_bytes,
        } = self;
        if let Some(urls) = allowed_urls {
            callbacks.allowed_urls = urls
                .iter()
                .map(|url| AllowedUrl::parse(url))
                .collect::<Result<_, _>>()
                .map_err(|problem| invalid(file, "callbacks.allowed_urls", problem))?;
        }
        let at_least_one = |value: usize, key: &'static str| {
            if value == 0 {
                Err(ConfigError::Zero {
                    path: file.to_path_buf(),
                    key,
                })
            } else {
                Ok(value)
            }
        };
        if let Some(n) = attempts {
            at_least_one(n as usize, "callbacks.attempts")?;
            callbacks.attempts = n;
        }
        if let Some(n) = max_pending {
            callbacks.max_pending = at_least_one(n, "callbacks.max_pending")?;
        }
        if let Some(value) = &retry_interval {
            callbacks.retry_interval = duration(file, "callbacks.retry_interval", value)?;
        }
        if let Some(value) = &timeout {
            callbacks.timeout = duration(file, "callbacks.timeout", value)?;
        }
        if let Some(value) = &max_body_bytes {
            callbacks.max_body_bytes = size(file, "callbacks.max_body_bytes", value)?;
        }
        Ok(())
    }
}

/// `limits:` in the config file: bounds on what clients can make the server hold (see
/// `jobserver::limits::Limits`, where each is documented). Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    max_threads_per_context: Option<usize>,
    max_queue_length: Option<usize>,
    max_contexts: Option<usize>,
    max_worker_threads: Option<usize>,
    binary_versions: Option<usize>,
    max_stored_jobs: Option<usize>,
    /// Bytes (`16g`), a share of the machine's memory (`75%`), or `off`.
    memory: Option<Value>,
    query_timeout: Option<Value>,
    max_result_partitions: Option<usize>,
    max_run_partitions: Option<usize>,
    max_join_rows: Option<u64>,
    max_concurrent_queries: Option<usize>,
    /// Bytes (`256m`) of one job's result.
    max_result_bytes: Option<Value>,
    /// Bytes (`8g`) of every stored job result.
    max_job_results_bytes: Option<Value>,
    max_active_backfills: Option<usize>,
    backfill_history: Option<usize>,
}

/// `limits.memory`: bytes, a percentage of the machine's memory, or `off`.
fn memory_limit(file: &Path, value: &Value) -> Result<Option<u64>, ConfigError> {
    let text = value_text(value);
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    if let Some(share) = text.strip_suffix('%') {
        let share: f64 = share
            .trim()
            .parse()
            .map_err(|_| ConfigError::MemoryNotAPercentage {
                path: file.to_path_buf(),
                text: text.to_owned(),
            })?;
        if !(1.0..=100.0).contains(&share) {
            return Err(ConfigError::MemoryShareOutOfRange {
                path: file.to_path_buf(),
                share,
            });
        }
        let physical = crate::frames::memory::physical_bytes().ok_or_else(|| {
            ConfigError::MachineMemoryUnknown {
                path: file.to_path_buf(),
            }
        })?;
        return Ok(Some((physical as f64 * share / 100.0) as u64));
    }
    parse_bytes(text)
        .map(Some)
        .map_err(|problem| invalid(file, "limits.memory", problem))
}

impl LimitsFile {
    /// Overlays the keys given on `limits`; their values are checked with the whole
    /// configuration, by [`ServerConfig::check_limits`].
    fn apply(
        self,
        file: &Path,
        limits: &mut crate::jobserver::limits::Limits,
    ) -> Result<(), ConfigError> {
        let LimitsFile {
            max_threads_per_context,
            max_queue_length,
            max_contexts,
            max_worker_threads,
            binary_versions,
            max_stored_jobs,
            memory,
            query_timeout,
            max_result_partitions,
            max_run_partitions,
            max_join_rows,
            max_concurrent_queries,
            max_result_bytes,
            max_job_results_bytes,
            max_active_backfills,
            backfill_history,
        } = self;
        if let Some(value) = &max_result_bytes {
            limits.max_result_bytes = size(file, "limits.max_result_bytes", value)? as u64;
        }
        if let Some(value) = &max_job_results_bytes {
            limits.max_job_results_bytes =
                size(file, "limits.max_job_results_bytes", value)? as u64;
        }
        if let Some(value) = &memory {
            limits.memory = memory_limit(file, value)?;
        }
        if let Some(value) = &query_timeout {
            limits.query_timeout = duration(file, "limits.query_timeout", value)?;
        }
        if let Some(rows) = max_join_rows {
            limits.max_join_rows = rows;
        }
        let overlay = |value: Option<usize>, field: &mut usize| {
            if let Some(value) = value {
                *field = value;
            }
        };
        overlay(max_threads_per_context, &mut limits.max_threads_per_context);
        overlay(max_queue_length, &mut limits.max_queue_length);
        overlay(max_contexts, &mut limits.max_contexts);
        overlay(max_worker_threads, &mut limits.max_worker_threads);
        overlay(binary_versions, &mut limits.binary_versions);
        overlay(max_result_partitions, &mut limits.max_result_partitions);
        overlay(max_run_partitions, &mut limits.max_run_partitions);
        overlay(max_concurrent_queries, &mut limits.max_concurrent_queries);
        overlay(max_active_backfills, &mut limits.max_active_backfills);
        overlay(backfill_history, &mut limits.backfill_history);
        if max_stored_jobs.is_some() {
            limits.max_stored_jobs = max_stored_jobs;
        }
        Ok(())
    }
}

/// `scheduler:` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchedulerFile {
    /// Plan recurring runs from the pipelines' triggers (default true).
    recurring: Option<bool>,
    /// Runs computing at once across pipelines (default 2).
    workers: Option<usize>,
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `key` of `file` holds a value its parser refused with `problem`.
pub(super) fn invalid(file: &Path, key: &str, problem: impl ToString) -> ConfigError {
    ConfigError::InvalidValue {
        path: file.to_path_buf(),
        key: key.to_owned(),
        problem: problem.to_string(),
    }
}

fn size(file: &Path, key: &str, value: &Value) -> Result<usize, ConfigError> {
    parse_bytes(&value_text(value))
        .map(|b| b as usize)
        .map_err(|problem| invalid(file, key, problem))
}

fn duration(file: &Path, key: &str, value: &Value) -> Result<Duration, ConfigError> {
    parse_duration(&value_text(value)).map_err(|problem| invalid(file, key, problem))
}

fn settings(
    file: &Path,
    key: &str,
    base: &ContextSettings,
    given: &BTreeMap<String, Value>,
) -> Result<ContextSettings, ConfigError> {
    let mut settings = base.clone();
    settings
        .apply_all(given)
        .map_err(|errors| invalid(file, key, errors.join("; ")))?;
    Ok(settings)
}

/// Checks the allowed origins of `cors.allowed_origins`: `*` alone, or origins as browsers send
/// them in `Origin` (`scheme://host[:port]`, lowercase, no path), since they are compared
/// exactly.
pub fn check_cors_origins(origins: &[String]) -> Result<(), CorsOriginError> {
    if origins.iter().any(|origin| origin == "*") {
        return if origins.len() == 1 {
            Ok(())
        } else {
            Err(CorsOriginError::StarNotAlone)
        };
    }
    for origin in origins {
        let host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .unwrap_or_default();
        let well_formed = !host.is_empty()
            && !host.contains(['/', '?', '#', '*', '@'])
            && !host.contains(char::is_whitespace)
            && origin.to_ascii_lowercase() == *origin;
        if !well_formed {
            return Err(CorsOriginError::NotAnOrigin {
                origin: origin.clone(),
            });
        }
    }
    Ok(())
}

/// Parses `text` as a bind address, naming `origin` in the error.
pub fn parse_bind(text: &str, origin: &str) -> Result<SocketAddr, BindError> {
    text.trim().parse().map_err(|source| BindError {
        origin: origin.to_owned(),
        text: text.to_owned(),
        source,
    })
}

impl ServerConfig {
    /// Defaults overlaid with the YAML file at `path`.
    pub fn from_file(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        ServerConfig::from_yaml(&text, path)
    }

    pub fn from_yaml(text: &str, path: &Path) -> Result<ServerConfig, ConfigError> {
        let file: ConfigFile = if text.trim().is_empty() {
            ConfigFile::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| {
                let message = e.to_string();
                let message = message
                    .split(" at line ")
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                match e.location() {
                    Some(at) => ConfigError::SyntaxAt {
                        path: path.to_path_buf(),
                        line: at.line(),
                        column: at.column(),
                        message,
                    },
                    None => ConfigError::Syntax {
                        path: path.to_path_buf(),
                        message,
                    },
                }
            })?
        };
        let mut config = ServerConfig::default();
        if let Some(bind) = &file.bind {
            config.bind = parse_bind(bind, &format!("{}: `bind`", path.display()))?;
        }
        if let Some(p) = file.pipelines {
            config.pipelines = p;
        }
        if let Some(p) = file.data_dir {
            config.data_dir = p;
        }
        if let Some(p) = file.store {
            config.store = p;
        }
        if let Some(v) = &file.max_upload_bytes {
            config.max_upload_bytes = size(path, "max_upload_bytes", v)?;
        }
        if let Some(v) = &file.max_request_bytes {
            config.max_request_bytes = size(path, "max_request_bytes", v)?;
        }
        if let Some(v) = &file.result_cache_bytes {
            config.result_cache_bytes = size(path, "result_cache_bytes", v)?;
        }
        if let Some(v) = &file.sync_timeout {
            config.sync_timeout = duration(path, "sync_timeout", v)?;
        }
        if let Some(v) = &file.shutdown_grace {
            config.shutdown_grace = duration(path, "shutdown_grace", v)?;
        }
        if let Some(n) = file.max_json_result_rows {
            if n == 0 {
                return Err(ConfigError::Zero {
                    path: path.to_path_buf(),
                    key: "max_json_result_rows",
                });
            }
            config.max_json_result_rows = n;
        }
        if let Some(n) = file.job_history {
            if n == 0 {
                return Err(ConfigError::Zero {
                    path: path.to_path_buf(),
                    key: "job_history",
                });
            }
            config.core.job_history = n;
        }
        if let Some(v) = &file.job_retention {
            config.core.job_retention = duration(path, "job_retention", v)?;
        }
        if let Some(limits) = file.limits {
            limits.apply(path, &mut config.core.limits)?;
        }
        if let Some(roots) = file.data_roots {
            config.core.data_roots = roots;
        }
        if let Some(roots) = file.operator_data_roots {
            config.core.operator_data_roots = roots;
        }
        if let Some(given) = &file.context_defaults {
            config.core.context_defaults = settings(
                path,
                "context_defaults",
                &config.core.context_defaults,
                given,
            )?;
        }
        if let Some(given) = &file.adhoc {
            config.core.adhoc = settings(path, "adhoc", &config.core.adhoc, given)?;
        }
        if let Some(scheduler) = &file.scheduler {
            if let Some(recurring) = scheduler.recurring {
                config.scheduler.recurring = recurring;
            }
            match scheduler.workers {
                Some(0) => {
                    return Err(ConfigError::Zero {
                        path: path.to_path_buf(),
                        key: "scheduler.workers",
                    });
                }
                Some(n) => config.scheduler.workers = n,
                None => {}
            }
        }
        if let Some(n) = file.max_connections {
            if n == 0 {
                return Err(ConfigError::Zero {
                    path: path.to_path_buf(),
                    key: "max_connections",
                });
            }
            config.max_connections = n;
        }
        if let Some(n) = file.max_connections_per_client {
            if n == 0 || n > config.max_connections {
                return Err(ConfigError::ConnectionsPerClient {
                    path: path.to_path_buf(),
                    given: n,
                    max_connections: config.max_connections,
                });
            }
            config.max_connections_per_client = n;
        }
        if let Some(v) = &file.header_read_timeout {
            config.header_read_timeout = duration(path, "header_read_timeout", v)?;
        }
        if let Some(v) = &file.idle_timeout {
            config.idle_timeout = duration(path, "idle_timeout", v)?;
        }
        if let Some(v) = &file.body_read_timeout {
            config.body_read_timeout = duration(path, "body_read_timeout", v)?;
        }
        if let Some(tls) = file.tls {
            config.tls = match (tls.cert, tls.key) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                (cert, _) => {
                    let missing = if cert.is_none() { "cert" } else { "key" };
                    return Err(ConfigError::HalfTls {
                        path: path.to_path_buf(),
                        missing,
                    });
                }
            };
        }
        if let Some(origins) = file.cors.and_then(|cors| cors.allowed_origins) {
            check_cors_origins(&origins).map_err(|source| ConfigError::CorsOrigins {
                path: path.to_path_buf(),
                source,
            })?;
            config.cors.allowed_origins = origins;
        }
        if let Some(auth) = file.auth {
            auth.apply(&mut config.auth, path)?;
        }
        if let Some(callbacks) = file.callbacks {
            callbacks.apply(path, &mut config.core.callbacks)?;
        }
        if let Some(workers) = file.workers {
            workers.apply(path, &mut config.core.workers)?;
        }
        if let Some(data_files) = file.data_files {
            if let Some(dir) = data_files.dir {
                config.data_files.dir = Some(dir);
            }
            if let Some(n) = data_files.max_files {
                if n == 0 {
                    return Err(ConfigError::Zero {
                        path: path.to_path_buf(),
                        key: "data_files.max_files",
                    });
                }
                config.data_files.max_files = n;
            }
            if let Some(v) = &data_files.max_total_bytes {
                // `parse_bytes` refuses 0.
                config.data_files.max_total_bytes =
                    size(path, "data_files.max_total_bytes", v)? as u64;
            }
        }
        if let Some(contexts) = file.contexts {
            for (name, given) in &contexts {
                settings(
                    path,
                    &format!("contexts.{name}"),
                    &config.core.context_defaults,
                    given,
                )?;
            }
            config.contexts = contexts;
        }
        config
            .check_limits()
            .map_err(|source| ConfigError::Limits {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(config)
    }

    /// `max_connections_per_client` as the edge applies it: never above `max_connections` (so
    /// the default follows a smaller `max_connections`).
    pub fn effective_max_connections_per_client(&self) -> usize {
        self.max_connections_per_client.min(self.max_connections)
    }

    /// Checks `limits` and holds the configuration's own contexts to them: `context_defaults`,
    /// `adhoc` and each of `contexts` to the per-context bounds, and all of them together to
    /// the number of contexts and of worker threads. A problem names its key and the limit.
    pub fn check_limits(&self) -> Result<(), LimitsError> {
        if self.max_connections == 0 || self.max_connections_per_client == 0 {
            return Err(LimitsError::NoConnections);
        }
        if self.body_read_timeout.is_zero() {
            return Err(LimitsError::ZeroBodyReadTimeout);
        }
        let max_files = self.data_files.max_files;
        if max_files == 0 || max_files > crate::data_files::MAX_FILES_LIMIT {
            return Err(LimitsError::DataFilesMaxFiles { given: max_files });
        }
        if self.data_files.max_total_bytes == 0 {
            return Err(LimitsError::DataFilesNoBytes);
        }
        let core = &self.core;
        let limits = &core.limits;
        limits
            .check(core.job_history)
            .map_err(LimitsError::Limits)?;
        let per_context = |key: &str, settings: &ContextSettings| {
            let problems = limits.check_context_settings(settings);
            if problems.is_empty() {
                Ok(())
            } else {
                Err(LimitsError::ContextSettings {
                    key: key.to_owned(),
                    problems,
                })
            }
        };
        per_context("context_defaults", &core.context_defaults)?;
        per_context("adhoc", &core.adhoc)?;
        if core.adhoc.worker_threads > limits.max_worker_threads {
            return Err(LimitsError::AdhocThreads {
                threads: core.adhoc.worker_threads,
                max: limits.max_worker_threads,
            });
        }
        let mut threads = core.adhoc.worker_threads;
        for (name, given) in &self.contexts {
            let settings = ContextSettings::checked(&core.context_defaults, given, limits)
                .map_err(|problems| LimitsError::ContextSettings {
                    key: format!("contexts.{name}"),
                    problems,
                })?;
            threads += settings.worker_threads;
        }
        if self.contexts.len() > limits.max_contexts {
            return Err(LimitsError::TooManyContexts {
                count: self.contexts.len(),
                max: limits.max_contexts,
            });
        }
        if threads > limits.max_worker_threads {
            return Err(LimitsError::TooManyWorkerThreads {
                threads,
                max: limits.max_worker_threads,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
