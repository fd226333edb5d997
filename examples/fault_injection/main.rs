//! A `floe` binary with two job classes that fail on purpose (`abort`, `panic`), for seeing
//! what worker processes isolate: `cargo run --example fault_injection -- serve`, upload a
//! pipeline with a `rust: { class: abort }` job and run it. The run fails and is retried; the
//! server, its contexts and the other runs go on.
//!
//! It is also how a binary ships its own Rust job classes to `floe serve`: `floe::cli::run`
//! gives the same registry to the server (which validates pipelines with it) and to its worker
//! processes (`floe worker`, started from this very binary, which run the jobs).

use std::process::ExitCode;

use clap::Parser;

mod jobs;

fn main() -> ExitCode {
    match floe::cli::run(floe::cli::Cli::parse(), &jobs::registry()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
