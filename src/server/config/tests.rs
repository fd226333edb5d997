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

    let err = ServerConfig::from_yaml("bnd: x\n", path)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("floe-server.yaml:1:1: unknown field `bnd`, expected one of `bind`"),
        "{err}"
    );
    let err = ServerConfig::from_yaml("contexts:\n  c:\n    workers: 2\n", path)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "floe-server.yaml: `contexts.c`: unknown context setting `workers` (known: \
         worker-threads, queue-length, memory-budget, job-timeout, process, memory-limit)"
    );
    let err = ServerConfig::from_yaml("sync_timeout: soon\n", path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`sync_timeout`: expected a duration"), "{err}");
}

#[test]
fn limits_have_safe_defaults_and_hold_the_configured_contexts() {
    let path = Path::new("floe-server.yaml");
    let config = ServerConfig::from_yaml("", path).unwrap();
    let limits = &config.core.limits;
    assert_eq!(limits.max_threads_per_context, 64);
    assert_eq!(limits.max_queue_length, 10_000);
    assert_eq!(limits.max_contexts, 64);
    assert_eq!(limits.max_worker_threads, 256);
    assert_eq!(limits.binary_versions, 10);
    assert_eq!(limits.max_stored_jobs(config.core.job_history), 200_000);
    assert_eq!(config.core.job_retention, Duration::from_secs(3600));

    let config = ServerConfig::from_yaml(
        "job_history: 10\njob_retention: 5m\nlimits:\n  max_threads_per_context: 8\n  \
         max_queue_length: 300\n  max_contexts: 2\n  max_worker_threads: 20\n  \
         binary_versions: 3\n  max_stored_jobs: 15\n",
        path,
    )
    .unwrap();
    let limits = &config.core.limits;
    assert_eq!(
        (
            limits.max_threads_per_context,
            limits.max_queue_length,
            limits.max_contexts,
            limits.max_worker_threads,
            limits.binary_versions,
        ),
        (8, 300, 2, 20, 3)
    );
    assert_eq!(limits.max_stored_jobs(config.core.job_history), 15);
    assert_eq!(config.core.job_retention, Duration::from_secs(300));
    // Without `max_stored_jobs`, twice the history.
    let config = ServerConfig::from_yaml("job_history: 7\n", path).unwrap();
    assert_eq!(config.core.limits.max_stored_jobs(7), 14);

    let refused = |yaml: &str| ServerConfig::from_yaml(yaml, path).unwrap_err().to_string();
    assert_eq!(
        refused("limits:\n  max_threads_per_context: 8\ncontext_defaults:\n  worker-threads: 16\n"),
        "floe-server.yaml: `context_defaults`: setting `worker-threads`: 16 is above the \
         limit of 8 worker threads per context (`limits.max_threads_per_context`)"
    );
    assert_eq!(
        refused("adhoc:\n  queue-length: 20000\n"),
        "floe-server.yaml: `adhoc`: setting `queue-length`: 20000 is above the limit of \
         10000 queued jobs per context (`limits.max_queue_length`)"
    );
    assert_eq!(
        refused("contexts:\n  big:\n    num-cpu-cores: 1024\n"),
        "floe-server.yaml: `contexts.big`: setting `worker-threads`: 1024 is above the \
         limit of 64 worker threads per context (`limits.max_threads_per_context`)"
    );
    // The built-in defaults count too: 2 threads per context by default.
    assert_eq!(
        refused("limits:\n  max_threads_per_context: 1\n"),
        "floe-server.yaml: `context_defaults`: setting `worker-threads`: 2 is above the \
         limit of 1 worker threads per context (`limits.max_threads_per_context`)"
    );
    assert_eq!(
        refused("limits:\n  max_contexts: 1\ncontexts:\n  a: {}\n  b: {}\n"),
        "floe-server.yaml: `contexts`: 2 contexts are above the limit of 1 \
         (`limits.max_contexts`)"
    );
    // 4 ad-hoc threads plus 2 × 64.
    assert_eq!(
        refused(
            "limits:\n  max_worker_threads: 100\ncontexts:\n  a: {worker-threads: 64}\n  \
             b: {worker-threads: 64}\n"
        ),
        "floe-server.yaml: `contexts`: they and `adhoc` have 132 worker threads, above the \
         limit of 100 (`limits.max_worker_threads`)"
    );
    assert!(refused("limits:\n  max_worker_threads: 3\n").starts_with(
        "floe-server.yaml: `adhoc`: setting `worker-threads`: 4 is above the limit of 3"
    ));
    assert_eq!(
        refused("job_history: 10\nlimits:\n  max_stored_jobs: 10\n"),
        "floe-server.yaml: `limits.max_stored_jobs` (10) must be greater than \
         `job_history` (10)"
    );
    assert_eq!(
        refused("limits:\n  binary_versions: 0\n"),
        "floe-server.yaml: `limits.binary_versions` must be at least 1"
    );
    assert!(refused("limits:\n  max_threads: 8\n").contains("unknown field `max_threads`"),);
    assert!(refused("job_retention: never\n").contains("`job_retention`: expected a duration"));
}

#[test]
fn result_bytes_and_backfill_limits_are_read_and_checked() {
    let path = Path::new("floe-server.yaml");
    let config = ServerConfig::from_yaml(
        "limits:\n  max_result_bytes: 64m\n  max_job_results_bytes: 1g\n  \
         max_active_backfills: 4\n  backfill_history: 50\n",
        path,
    )
    .unwrap();
    let limits = &config.core.limits;
    assert_eq!(limits.max_result_bytes, 64 << 20);
    assert_eq!(limits.max_job_results_bytes, 1 << 30);
    assert_eq!(
        (limits.max_active_backfills, limits.backfill_history),
        (4, 50)
    );
    let refused = |yaml: &str| ServerConfig::from_yaml(yaml, path).unwrap_err().to_string();
    assert_eq!(
        refused("limits:\n  max_result_bytes: 2g\n  max_job_results_bytes: 1g\n"),
        "floe-server.yaml: `limits.max_job_results_bytes` (1073741824) must be at least \
         `limits.max_result_bytes` (2147483648)"
    );
    assert!(
        refused("limits:\n  max_result_bytes: lots\n")
            .starts_with("floe-server.yaml: `limits.max_result_bytes`: "),
    );
    assert_eq!(
        refused("limits:\n  max_active_backfills: 0\n"),
        "floe-server.yaml: `limits.max_active_backfills` must be at least 1"
    );
    assert!(
        refused("context_defaults:\n  job-timeout: 30d\n")
            .contains("setting `job-timeout`: `30d` is longer than the longest execution"),
    );
}

#[test]
fn edge_keys_have_safe_defaults_and_are_checked() {
    let path = Path::new("floe-server.yaml");
    let config = ServerConfig::from_yaml("", path).unwrap();
    assert_eq!(config.max_connections, 1024);
    assert_eq!(config.max_connections_per_client, 256);
    assert_eq!(config.header_read_timeout, Duration::from_secs(10));
    assert_eq!(config.idle_timeout, Duration::from_secs(60));
    assert_eq!(config.body_read_timeout, Duration::from_secs(30));
    assert_eq!(config.tls, None);
    assert!(config.cors.allowed_origins.is_empty());

    let config = ServerConfig::from_yaml(
        "max_connections: 8\nmax_connections_per_client: 3\nheader_read_timeout: 2s\n\
         idle_timeout: 5m\nbody_read_timeout: 45s\n\
         tls: {cert: certs/chain.pem, key: certs/key.pem}\n\
         cors: {allowed_origins: [https://app.example.com, http://localhost:3000]}\n",
        path,
    )
    .unwrap();
    assert_eq!(config.max_connections, 8);
    assert_eq!(config.max_connections_per_client, 3);
    assert_eq!(config.effective_max_connections_per_client(), 3);
    assert_eq!(config.header_read_timeout, Duration::from_secs(2));
    assert_eq!(config.idle_timeout, Duration::from_secs(300));
    assert_eq!(config.body_read_timeout, Duration::from_secs(45));
    // The default follows a smaller `max_connections`; a value above it is refused.
    let smaller = ServerConfig::from_yaml("max_connections: 100\n", path).unwrap();
    assert_eq!(smaller.effective_max_connections_per_client(), 100);
    for yaml in [
        "max_connections: 100\nmax_connections_per_client: 101\n",
        "max_connections_per_client: 2000\n",
        "max_connections_per_client: 0\n",
    ] {
        let err = ServerConfig::from_yaml(yaml, path).unwrap_err().to_string();
        assert!(
            err.contains("`max_connections_per_client`") && err.contains("must be between 1"),
            "{yaml}: {err}"
        );
    }
    let err = ServerConfig::from_yaml("body_read_timeout: 0s\n", path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`body_read_timeout`"), "{err}");
    assert_eq!(
        config.tls,
        Some(TlsFiles {
            cert: PathBuf::from("certs/chain.pem"),
            key: PathBuf::from("certs/key.pem"),
        })
    );
    assert_eq!(config.cors.allowed_origins.len(), 2);

    let err = ServerConfig::from_yaml("tls: {cert: chain.pem}\n", path)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "floe-server.yaml: `tls.key` is missing (give both `tls.cert` and `tls.key`)"
    );
    let err = ServerConfig::from_yaml("tls: {key: key.pem}\n", path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`tls.cert` is missing"), "{err}");
    let err = ServerConfig::from_yaml("tls: {cert: a, chain: b}\n", path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `chain`"), "{err}");
    let err = ServerConfig::from_yaml("max_connections: 0\n", path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`max_connections` must be at least 1"),
        "{err}"
    );
    let err = ServerConfig::from_yaml("idle_timeout: 0s\n", path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`idle_timeout`"), "{err}");
    let err = ServerConfig::from_yaml(
        "cors: {allowed_origins: ['*', 'https://a.example']}\n",
        path,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`cors.allowed_origins`: `*`"), "{err}");
    for bad in [
        "https://app.example.com/",
        "app.example.com",
        "https://App.example.com",
    ] {
        let err = ServerConfig::from_yaml(&format!("cors: {{allowed_origins: ['{bad}']}}\n"), path)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("`{bad}` is not an origin")), "{err}");
    }
    assert!(ServerConfig::from_yaml("cors: {allowed_origins: ['*']}\n", path).is_ok());
}

#[test]
fn callbacks_are_off_by_default_and_their_keys_are_read_and_checked() {
    let path = Path::new("floe-server.yaml");
    let config = ServerConfig::from_yaml("", path).unwrap();
    let callbacks = &config.core.callbacks;
    assert!(callbacks.allowed_urls.is_empty());
    assert_eq!(callbacks.attempts, 5);
    assert_eq!(callbacks.retry_interval, Duration::from_secs(10));
    assert_eq!(callbacks.timeout, Duration::from_secs(10));
    assert_eq!(callbacks.max_pending, 256);
    assert_eq!(callbacks.max_body_bytes, 256 << 10);

    let config = ServerConfig::from_yaml(
        "callbacks:\n  allowed_urls: [https://hooks.example.com/floe, 'http://10.0.0.7:8080']\n  \
         attempts: 3\n  retry_interval: 250ms\n  timeout: 2s\n  max_pending: 10\n  \
         max_body_bytes: 1m\n",
        path,
    )
    .unwrap();
    let callbacks = &config.core.callbacks;
    let allowed: Vec<&str> = callbacks
        .allowed_urls
        .iter()
        .map(|url| url.as_str())
        .collect();
    assert_eq!(
        allowed,
        ["https://hooks.example.com/floe", "http://10.0.0.7:8080/"]
    );
    assert_eq!(callbacks.attempts, 3);
    assert_eq!(callbacks.retry_interval, Duration::from_millis(250));
    assert_eq!(callbacks.timeout, Duration::from_secs(2));
    assert_eq!(callbacks.max_pending, 10);
    assert_eq!(callbacks.max_body_bytes, 1 << 20);
    assert!(callbacks.check("https://hooks.example.com/floe/x").is_ok());

    for (yaml, expected) in [
        (
            "callbacks: {allowed_urls: ['ftp://h.example.com/']}\n",
            "floe-server.yaml: `callbacks.allowed_urls`: `ftp://h.example.com/`: only http and \
             https URLs can be allowed",
        ),
        (
            "callbacks: {allowed_urls: ['http://u:p@h.example.com/']}\n",
            "floe-server.yaml: `callbacks.allowed_urls`: `http://u:p@h.example.com/`: an allowed \
             URL has no user name or password",
        ),
        (
            "callbacks: {allowed_urls: ['http://h.example.com/?k=v']}\n",
            "floe-server.yaml: `callbacks.allowed_urls`: `http://h.example.com/?k=v`: an allowed \
             URL is a prefix of paths: it has no query or fragment",
        ),
        (
            "callbacks: {attempts: 0}\n",
            "floe-server.yaml: `callbacks.attempts` must be at least 1",
        ),
        (
            "callbacks: {max_pending: 0}\n",
            "floe-server.yaml: `callbacks.max_pending` must be at least 1",
        ),
    ] {
        let err = ServerConfig::from_yaml(yaml, path).unwrap_err().to_string();
        assert_eq!(err, expected, "{yaml}");
    }
    for (yaml, key) in [
        (
            "callbacks: {allowed_urls: ['h.example.com']}\n",
            "`callbacks.allowed_urls`: `h.example.com` is not a URL",
        ),
        (
            "callbacks: {retry_interval: 0s}\n",
            "`callbacks.retry_interval`",
        ),
        ("callbacks: {timeout: soon}\n", "`callbacks.timeout`"),
        (
            "callbacks: {max_body_bytes: lots}\n",
            "`callbacks.max_body_bytes`",
        ),
        ("callbacks: {attempts: -1}\n", "callbacks.attempts"),
        ("callbacks: {allowed: []}\n", "unknown field `allowed`"),
    ] {
        let err = ServerConfig::from_yaml(yaml, path).unwrap_err().to_string();
        assert!(err.contains(key), "{yaml}: {err}");
    }
}

#[test]
fn the_data_files_block_has_safe_defaults_and_names_its_keys() {
    let path = Path::new("floe-server.yaml");
    let config = ServerConfig::from_yaml("store: /var/lib/floe/store\n", path).unwrap();
    assert_eq!(config.data_files, DataFilesConfig::default());
    assert_eq!(config.data_files.max_files, 100);
    assert_eq!(config.data_files.max_total_bytes, 1 << 30);
    assert_eq!(
        config.data_files.dir_for(&config.store),
        PathBuf::from("/var/lib/floe/data-files")
    );
    assert_eq!(
        DataFilesConfig::default().dir_for(Path::new("store")),
        PathBuf::from("data-files")
    );
    let config = ServerConfig::from_yaml(
        "data_files:\n  dir: /srv/uploads\n  max_files: 5\n  max_total_bytes: 10MiB\n",
        path,
    )
    .unwrap();
    assert_eq!(
        config.data_files,
        DataFilesConfig {
            dir: Some(PathBuf::from("/srv/uploads")),
            max_files: 5,
            max_total_bytes: 10 << 20,
        }
    );
    let refused = |yaml: &str| ServerConfig::from_yaml(yaml, path).unwrap_err().to_string();
    assert_eq!(
        refused("data_files:\n  max_files: 0\n"),
        "floe-server.yaml: `data_files.max_files` must be at least 1"
    );
    assert!(
        refused("data_files:\n  max_total_bytes: 0\n")
            .starts_with("floe-server.yaml: `data_files.max_total_bytes`: "),
    );
    assert!(
        refused("data_files:\n  max_files: 100001\n")
            .contains("`data_files.max_files` (100001) must be between 1 and 100000"),
    );
    assert!(
        refused("data_files:\n  max_total_bytes: lots\n").contains("`data_files.max_total_bytes`"),
    );
    let err = refused("data_files:\n  root: /tmp\n");
    assert!(err.contains("unknown field `root`"), "{err}");
}
