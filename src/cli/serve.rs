//! `floe serve` and `floe token`: the job server started from its config, and the tokens
//! file it reads managed.

use chrono::{DateTime, Utc};

use crate::clock::{Clock, SystemClock};
use crate::job::JobRegistry;

use super::{CliError, PathArgs, ServeArgs, TokenAction, TokenArgs, failed, failed_with_causes};

/// `floe serve`: defaults, then the config file, then environment and flags.
pub(super) fn serve(
    paths: &PathArgs,
    args: &ServeArgs,
    registry: &JobRegistry,
) -> Result<(), CliError> {
    use crate::server::{ServerConfig, config::parse_bind};
    let mut config = match &args.config {
        Some(file) => ServerConfig::from_file(file).map_err(failed)?,
        None => ServerConfig::default(),
    };
    if let Some(bind) = &args.bind {
        config.bind = parse_bind(bind, "--bind / FLOE_BIND").map_err(failed)?;
    }
    if let Some(timeout) = &args.sync_timeout {
        config.sync_timeout = crate::jobserver::context::parse_duration(timeout)
            .map_err(|e| failed(format!("--sync-timeout / FLOE_SYNC_TIMEOUT: {e}")))?;
    }
    if let Some(p) = &paths.pipelines {
        config.pipelines = p.clone();
    }
    if let Some(p) = &paths.data_dir {
        config.data_dir = p.clone();
    }
    if let Some(p) = &paths.store {
        config.store = p.clone();
    }
    config
        .core
        .operator_data_roots
        .extend(paths.data_roots.iter().cloned());
    if let Some(file) = &args.tokens_file {
        config.auth.tokens_file = Some(file.clone());
    }
    config.auth.insecure_no_auth = args.insecure_no_auth;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all().thread_name("floe-http");
    if let Some(threads) = args.http_threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime
        .build()
        .map_err(|e| failed(format!("cannot start the async runtime: {e}")))?;
    runtime
        .block_on(crate::server::serve(config, registry.clone()))
        .map_err(failed)
}

/// `floe token …`: the tokens file `floe serve` would use, changed under its writers' lock.
pub(super) fn token(paths: &PathArgs, args: TokenArgs) -> Result<(), CliError> {
    use crate::auth::TokenStore;
    use crate::auth::tokens::expiry_after;
    use crate::server::ServerConfig;
    let file = match &args.tokens_file {
        Some(file) => file.clone(),
        None => {
            let mut config = match &args.config {
                Some(file) => ServerConfig::from_file(file).map_err(failed)?,
                None => ServerConfig::default(),
            };
            if let Some(store) = &paths.store {
                config.store = store.clone();
            }
            config.auth.tokens_file_for(&config.store)
        }
    };
    let store = TokenStore::new(&file);
    let now = SystemClock.now();
    let time = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    match args.action {
        TokenAction::Create {
            role,
            name,
            expires,
        } => {
            let expires_at = expires
                .map(|text| expiry_after(&text, now).map_err(|e| failed(format!("--expires: {e}"))))
                .transpose()?;
            let issued = store
                .create(role, &name, expires_at, now)
                .map_err(failed_with_causes)?;
            println!("{}", issued.token);
            eprintln!(
                "created token {} (role {role}{}{}) in {}; it is shown only this once",
                issued.record.id,
                if name.is_empty() {
                    String::new()
                } else {
                    format!(", name {name}")
                },
                expires_at.map_or_else(String::new, |at| format!(", expires {}", time(at))),
                file.display()
            );
        }
        TokenAction::List => {
            let tokens = store.load().map_err(failed_with_causes)?.tokens;
            let rows: Vec<[String; 6]> = tokens
                .iter()
                .map(|t| {
                    [
                        t.id.clone(),
                        if t.name.is_empty() {
                            "-".to_owned()
                        } else {
                            t.name.clone()
                        },
                        t.role.to_string(),
                        time(t.created_at),
                        t.expires_at.map_or_else(|| "never".to_owned(), time),
                        match (t.revoked, t.expires_at) {
                            (true, _) => t.revoked_at.map_or_else(|| "yes".to_owned(), time),
                            (false, Some(at)) if at <= now => "no (expired)".to_owned(),
                            _ => "no".to_owned(),
                        },
                    ]
                })
                .collect();
            let header = ["ID", "NAME", "ROLE", "CREATED", "EXPIRES", "REVOKED"].map(str::to_owned);
            let mut widths = header.clone().map(|h| h.chars().count());
            for row in &rows {
                for (width, cell) in widths.iter_mut().zip(row) {
                    *width = (*width).max(cell.chars().count());
                }
            }
            for row in std::iter::once(&header).chain(&rows) {
                let line: Vec<String> = row
                    .iter()
                    .zip(widths)
                    .map(|(cell, width)| format!("{cell:<width$}"))
                    .collect();
                println!("{}", line.join("  ").trim_end());
            }
            if rows.is_empty() {
                eprintln!("no tokens in {}", file.display());
            }
        }
        TokenAction::Revoke { id } => {
            let record = store.revoke(&id, now).map_err(failed_with_causes)?;
            eprintln!(
                "revoked token {} ({}); a running server refuses it within a second",
                record.id, record.role
            );
        }
    }
    Ok(())
}
