//! What every bench binary shares: the allocator the `floe` binary runs with, env knobs,
//! medians, number formatting and running a job kind in-process.

// Each bench binary compiles this module and uses a subset of it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use floe::job::{Job, JobContext, JobInput};
use floe::partition::{Grain, Window};
use polars::prelude::{DataFrame, IntoLazy};

/// The allocator the `floe` binary runs with, so the figures match it (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A numeric knob from the environment, or its default.
pub(crate) fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of a non-empty sample (the upper one for an even count).
pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `1234567` as `1,234,567`.
pub(crate) fn with_commas(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Runs a built-in job kind over `frame` as its only input, `events`, without the server.
pub(crate) fn run_in_process(job: &dyn Job, frame: &DataFrame) -> DataFrame {
    let inputs: BTreeMap<String, JobInput> = [(
        "events".to_owned(),
        JobInput {
            frame: frame.clone().lazy(),
            states: None,
            upstream_kind: None,
        },
    )]
    .into_iter()
    .collect();
    let ctx = JobContext {
        pipeline: "bench",
        job: "bench",
        grain: Grain::Hourly,
        window: Window {
            start: chrono::DateTime::UNIX_EPOCH,
            end: chrono::DateTime::UNIX_EPOCH,
        },
        inputs: &inputs,
    };
    job.run(&ctx).expect("in-process job").frame
}

/// A field of `/proc/<process>/status` in KiB; `process` is a pid or `self`.
pub(crate) fn proc_status_kib(process: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}
