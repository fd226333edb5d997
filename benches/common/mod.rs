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

/// The machine's CPU time so far from `/proc/stat` (clock ticks): all of it, and the part the
/// hypervisor gave to other guests ("steal"). On a shared VM a busy neighbour slows every
/// engine alike, and steal is the one figure that shows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuTicks {
    total: u64,
    steal: u64,
}

impl CpuTicks {
    pub(crate) fn now() -> Option<CpuTicks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        Some(CpuTicks {
            total: fields.iter().take(8).sum(),
            steal: *fields.get(7)?,
        })
    }

    /// The share of the CPU time since `self` that went to other guests, as "12.3%".
    pub(crate) fn steal_since(self) -> String {
        match CpuTicks::now() {
            Some(now) if now.total > self.total => format!(
                "{:.1}%",
                100.0 * (now.steal - self.steal) as f64 / (now.total - self.total) as f64
            ),
            _ => "n/a".to_owned(),
        }
    }
}

/// "CPU stolen by other guests: 12.3%" since `start`, or nothing when it is not known.
pub(crate) fn steal_line(start: Option<CpuTicks>) -> String {
    start.map_or_else(
        || "CPU steal: n/a".to_owned(),
        |start| {
            format!(
                "CPU stolen by the hypervisor for other guests during the run: {}",
                start.steal_since()
            )
        },
    )
}

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
        JobInput::of_frame(frame.clone().lazy()),
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

/// The python of the venv `benches/compare/setup.sh` makes (DuckDB, PySpark), or why there is
/// none. setup.sh's progress goes to this process's stderr.
pub(crate) fn python_venv() -> Result<String, String> {
    let output = std::process::Command::new("bash")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/compare/setup.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run setup.sh: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.lines().rev().find(|line| !line.trim().is_empty()) {
        Some(python) if output.status.success() => Ok(python.trim().to_owned()),
        _ => Err(format!("setup.sh failed ({})", output.status)),
    }
}

/// Serves `state` (`floe serve`'s router) on 127.0.0.1:0 in `runtime` until the process ends;
/// answers its base URL.
pub(crate) fn serve_in_process(
    runtime: &tokio::runtime::Runtime,
    state: floe::server::AppState,
) -> String {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    runtime.spawn(floe::server::serve_on(
        listener,
        state,
        std::future::pending(),
    ));
    base
}
