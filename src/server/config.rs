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
use crate::jobserver::context::{ContextSettings, parse_bytes, parse_duration};

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
    pub shutdown_grace: Duration,
    pub result_cache_bytes: usize,
    pub core: CoreSettings,
    /// Contexts started at boot: name → settings.
    pub contexts: BTreeMap<String, BTreeMap<String, Value>>,
    pub scheduler: crate::scheduler::SchedulerConfig,
}

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
            shutdown_grace: Duration::from_secs(30),
            result_cache_bytes: 512 << 20,
            core: CoreSettings::default(),
            contexts: BTreeMap::new(),
            scheduler: crate::scheduler::SchedulerConfig::default(),
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
    shutdown_grace: Option<Value>,
    result_cache_bytes: Option<Value>,
    job_history: Option<usize>,
    adhoc: Option<BTreeMap<String, Value>>,
    context_defaults: Option<BTreeMap<String, Value>>,
    contexts: Option<BTreeMap<String, BTreeMap<String, Value>>>,
    scheduler: Option<SchedulerFile>,
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

fn size(file: &Path, key: &str, value: &Value) -> Result<usize, String> {
    parse_bytes(&value_text(value))
        .map(|b| b as usize)
        .map_err(|e| format!("{}: `{key}`: {e}", file.display()))
}

fn duration(file: &Path, key: &str, value: &Value) -> Result<Duration, String> {
    parse_duration(&value_text(value)).map_err(|e| format!("{}: `{key}`: {e}", file.display()))
}

fn settings(
    file: &Path,
    key: &str,
    base: &ContextSettings,
    given: &BTreeMap<String, Value>,
) -> Result<ContextSettings, String> {
    let mut settings = base.clone();
    settings
        .apply_all(given)
        .map_err(|errors| format!("{}: `{key}`: {}", file.display(), errors.join("; ")))?;
    Ok(settings)
}

/// Parses `text` as a bind address, naming `origin` in the error.
pub fn parse_bind(text: &str, origin: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|e| format!("{origin}: `{text}` is not an address such as 127.0.0.1:8090 ({e})"))
}

impl ServerConfig {
    /// Defaults overlaid with the YAML file at `path`.
    pub fn from_file(path: &Path) -> Result<ServerConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        ServerConfig::from_yaml(&text, path)
    }

    pub fn from_yaml(text: &str, path: &Path) -> Result<ServerConfig, String> {
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
                    Some(at) => format!(
                        "{}:{}:{}: {message}",
                        path.display(),
                        at.line(),
                        at.column()
                    ),
                    None => format!("{}: {message}", path.display()),
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
        if let Some(n) = file.job_history {
            if n == 0 {
                return Err(format!(
                    "{}: `job_history` must be at least 1",
                    path.display()
                ));
            }
            config.core.job_history = n;
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
                    return Err(format!(
                        "{}: `scheduler.workers` must be at least 1",
                        path.display()
                    ));
                }
                Some(n) => config.scheduler.workers = n,
                None => {}
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
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_names_mistakes() {
        let path = Path::new("floe-server.yaml");
        let config = ServerConfig::from_yaml(
            "bind: 0.0.0.0:9000\nsync_timeout: 2s\nmax_upload_bytes: 1m\n\
             context_defaults:\n  worker-threads: 3\ncontexts:\n  warm:\n    memory-budget: 1g\n",
            path,
        )
        .unwrap();
        assert_eq!(config.bind.port(), 9000);
        assert_eq!(config.sync_timeout, Duration::from_secs(2));
        assert_eq!(config.max_upload_bytes, 1 << 20);
        assert_eq!(config.core.context_defaults.worker_threads, 3);
        assert!(config.contexts.contains_key("warm"));

        let err = ServerConfig::from_yaml("bnd: x\n", path).unwrap_err();
        assert!(
            err.starts_with("floe-server.yaml:1:1: unknown field `bnd`, expected one of `bind`"),
            "{err}"
        );
        let err = ServerConfig::from_yaml("contexts:\n  c:\n    workers: 2\n", path).unwrap_err();
        assert_eq!(
            err,
            "floe-server.yaml: `contexts.c`: unknown context setting `workers` (known: \
             worker-threads, queue-length, memory-budget, job-timeout)"
        );
        let err = ServerConfig::from_yaml("sync_timeout: soon\n", path).unwrap_err();
        assert!(err.contains("`sync_timeout`: expected a duration"), "{err}");
    }
}
