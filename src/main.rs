//! The `floe` binary: sets up logging, parses the command line and hands over to
//! [`floe::cli`].

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// The allocator `floe serve` runs with; see the note on `mimalloc` in Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How log lines are written, from `FLOE_LOG_FORMAT`.
enum LogFormat {
    /// One human-readable line per event; colours only when stderr is a terminal.
    Text,
    /// One JSON object per line (timestamp, level, target, fields, spans), for log shippers.
    Json,
}

impl LogFormat {
    fn from_env() -> Result<LogFormat, String> {
        match std::env::var("FLOE_LOG_FORMAT") {
            Err(std::env::VarError::NotPresent) => Ok(LogFormat::Text),
            Ok(value) if value.eq_ignore_ascii_case("text") || value.is_empty() => {
                Ok(LogFormat::Text)
            }
            Ok(value) if value.eq_ignore_ascii_case("json") => Ok(LogFormat::Json),
            Ok(value) => Err(format!(
                "FLOE_LOG_FORMAT must be `text` or `json`, not `{}`",
                value.escape_debug()
            )),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err("FLOE_LOG_FORMAT must be `text` or `json`, not a non-UTF-8 value".to_owned())
            }
        }
    }
}

fn main() -> ExitCode {
    let format = match LogFormat::from_env() {
        Ok(format) => format,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FLOE_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr);
    match format {
        // Colours for a person at a terminal only: a log file or a pipe gets plain text.
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    let cli = floe::cli::Cli::parse();
    match floe::cli::run(cli, &floe::JobRegistry::new()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
