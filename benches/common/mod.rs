//! What every bench binary shares: the allocator the `floe` binary runs with, env knobs,
//! medians, number formatting and running a job kind in-process.

// Each bench binary compiles this module and uses a subset of it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use floe::dataset::write_events_parquet;
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
/// The benches' sample week: `rows` events (seed 42, 200,000 users) from 2024-01-01T00:00Z,
/// written under `data_dir/events` as the example pipeline reads them.
pub(crate) fn write_sample_week(rows: usize, data_dir: &std::path::Path) {
    let start = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
        .expect("start")
        .to_utc();
    let hours = 7 * 24;
    let events = floe::sample::generate(&floe::sample::SampleSpec {
        seed: 42,
        start,
        hours,
        rows,
        users: 200_000,
    });
    write_events_parquet(&events, &data_dir.join("events"), start, hours).expect("write events");
}

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
