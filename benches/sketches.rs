//! Exact key sets against HLL sketches (`cargo bench --bench sketches`): issue 19's
//! performance figure.
//!
//! A month (31 days, 744 hours) of sample events — `FLOE_BENCH_ROWS` (10,000,000) events of
//! `FLOE_BENCH_USERS` (1,000,000) users — and one pipeline with two chains over them, each
//! hourly → daily → monthly distinct users:
//!
//! - **exact**: `count_distinct` of `user_id`; every partition keeps its distinct keys as its
//!   state and the daily and monthly jobs merge the key sets;
//! - **hll**: `approx_count_distinct` of `user_id` (lg_k 12, hll_4, bounds at 2 standard
//!   deviations); every partition keeps its HLL sketch and the coarser jobs merge sketches.
//!
//! Everything runs through a real scheduler (`FLOE_BENCH_WORKERS`, 2), the materialiser and a
//! sled store in a temporary folder, with `floe serve`'s result cache (512 MiB). Measured in
//! one run, each chain against the other:
//!
//! 1. **Stored bytes per partition**: the store's `ResultMeta::bytes` (result plus state,
//!    Arrow IPC, as committed), medians per grain.
//! 2. **Rollup time**: a restatement of `<chain>_daily` over the month, which recomputes the
//!    31 daily partitions from the hourly states and, by cascade, the monthly one from the
//!    daily states (32 runs, no source read); and one of `<chain>_monthly` alone. The two
//!    chains alternate, `FLOE_BENCH_REPEATS` (5) times; medians.
//! 3. **A whole chain from the source**: a restatement of `<chain>_hourly` (744 + 31 + 1
//!    runs), alternating, `FLOE_BENCH_CHAIN_REPEATS` (3) times; medians.
//! 4. **Error**: each HLL estimate against the exact count of the same partition: median and
//!    largest relative error per grain, and how many exact counts lie within the bounds.
//!
//! The temporary folder is deleted at the end unless `FLOE_BENCH_KEEP` is set.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use floe::clock::{Clock, SystemClock};
use floe::dataset::write_events_parquet;
use floe::job::JobRegistry;
use floe::materialize::Materializer;
use floe::partition::{Grain, windows_within};
use floe::results::{ResultCache, read_job_results};
use floe::sample::{SampleSpec, generate};
use floe::scheduler::{BackfillRequest, Scheduler, SchedulerConfig};
use floe::store::{RunKey, Store};
use polars::prelude::*;

mod common;

use common::{CpuTicks, env_usize, median, steal_line, with_commas};

const CHAINS: [&str; 2] = ["exact", "hll"];
const GRAINS: [(&str, Grain); 3] = [
    ("hourly", Grain::Hourly),
    ("daily", Grain::Daily),
    ("monthly", Grain::Monthly),
];

fn pipeline_yaml() -> String {
    let mut yaml = String::from(
        "version: 1\n\
         name: bench\n\
         timezone: UTC\n\
         start: 2024-01-01T00:00:00Z\n\
         schedule:\n  enabled: false\n\
         sources:\n  events:\n    format: parquet\n    path: events/date={date}/hour={hour}/*.parquet\n    time_column: ts\n    wait: 0s\n\
         jobs:\n",
    );
    for chain in CHAINS {
        let kind = match chain {
            "exact" => "count_distinct:\n      column: user_id\n".to_owned(),
            _ => "approx_count_distinct:\n      column: user_id\n      lg_k: 12\n".to_owned(),
        };
        for (index, (grain, _)) in GRAINS.iter().enumerate() {
            let from = match index {
                0 => "events".to_owned(),
                _ => format!("{chain}_{}", GRAINS[index - 1].0),
            };
            let _ = write!(
                yaml,
                "  {chain}_{grain}:\n    grain: {grain}\n    from: {from}\n    {kind}"
            );
        }
    }
    yaml
}

/// Restates `job` over `[from, to)` and waits for it: the seconds it took and its runs.
fn restate(
    scheduler: &Scheduler,
    job: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> (f64, usize) {
    let started = Instant::now();
    let status = scheduler
        .restate(&BackfillRequest {
            pipeline: "bench".to_owned(),
            jobs: Some(vec![job.to_owned()]),
            from,
            to,
            force: false,
        })
        .expect("restate");
    wait(scheduler, &status.id, started)
}

fn wait(scheduler: &Scheduler, id: &str, started: Instant) -> (f64, usize) {
    loop {
        let status = scheduler.backfill_status(id).expect("status");
        if status.remaining == 0 {
            assert_eq!(status.failed, 0, "{status:?}");
            return (started.elapsed().as_secs_f64(), status.total);
        }
        if started.elapsed() > Duration::from_secs(3600) {
            panic!("not done after an hour: {status:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn floats(frame: &DataFrame, column: &str) -> Vec<f64> {
    let column = frame
        .column(column)
        .expect("column")
        .cast(&DataType::Float64)
        .unwrap();
    column
        .f64()
        .unwrap()
        .iter()
        .map(|v| v.expect("not null"))
        .collect()
}

fn kib(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", bytes / 1024.0 / 1024.0)
    } else {
        format!("{:.1} KiB", bytes / 1024.0)
    }
}

fn main() {
    let rows = env_usize("FLOE_BENCH_ROWS", 10_000_000);
    let users = env_usize("FLOE_BENCH_USERS", 1_000_000) as u32;
    let repeats = env_usize("FLOE_BENCH_REPEATS", 5).max(1);
    let chain_repeats = env_usize("FLOE_BENCH_CHAIN_REPEATS", 3).max(1);
    let workers = env_usize("FLOE_BENCH_WORKERS", 2).max(1);
    let cpu = CpuTicks::now();

    let dir = tempfile::Builder::new()
        .prefix("floe-sketch-bench")
        .tempdir()
        .expect("tempdir");
    let data_dir = dir.path().join("data");
    let start: DateTime<Utc> = "2024-01-01T00:00:00Z".parse().unwrap();
    let end = start + TimeDelta::days(31);
    let generated = Instant::now();
    let events = generate(&SampleSpec {
        seed: 42,
        start,
        hours: 744,
        rows,
        users,
    });
    write_events_parquet(&events, &data_dir.join("events"), start, 744).expect("write events");
    drop(events);
    eprintln!(
        "{} events of {} users over 31 days written in {:.1} s to {}",
        with_commas(rows),
        with_commas(users as usize),
        generated.elapsed().as_secs_f64(),
        data_dir.display()
    );

    let pipeline = Arc::new(
        floe::pipeline::parse_pipeline(
            &pipeline_yaml(),
            Path::new("bench.yaml"),
            &JobRegistry::new(),
        )
        .unwrap_or_else(|e| panic!("pipeline: {e}")),
    );
    let store = Store::open(&dir.path().join("store")).expect("open store");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let materializer = Materializer::new(
        store.clone(),
        Arc::new(ResultCache::new(512 << 20)),
        data_dir.clone(),
        clock.clone(),
    );
    let scheduler = Scheduler::start(
        store.clone(),
        materializer.clone(),
        clock,
        SchedulerConfig {
            recurring: false,
            workers,
            resume: true,
        },
        vec![pipeline.clone()],
    )
    .expect("start scheduler");
    let driver = scheduler.spawn_driver().expect("driver thread");

    // ---- everything once ------------------------------------------------------------------
    let started = Instant::now();
    let status = scheduler
        .backfill(&BackfillRequest {
            pipeline: "bench".to_owned(),
            jobs: None,
            from: start,
            to: end,
            force: false,
        })
        .expect("backfill");
    let (first, runs) = wait(&scheduler, &status.id, started);
    eprintln!(
        "both chains computed: {} runs in {first:.1} s",
        with_commas(runs)
    );

    // ---- rollup time and whole chains, alternating ----------------------------------------
    let mut rollup: [Vec<f64>; 2] = Default::default();
    let mut monthly: [Vec<f64>; 2] = Default::default();
    let mut whole: [Vec<f64>; 2] = Default::default();
    for repeat in 0..repeats {
        // Alternate which chain goes first.
        let order = if repeat % 2 == 0 { [0, 1] } else { [1, 0] };
        for chain in order {
            let (seconds, runs) =
                restate(&scheduler, &format!("{}_daily", CHAINS[chain]), start, end);
            assert_eq!(runs, 32);
            rollup[chain].push(seconds);
            let (seconds, runs) = restate(
                &scheduler,
                &format!("{}_monthly", CHAINS[chain]),
                start,
                end,
            );
            assert_eq!(runs, 1);
            monthly[chain].push(seconds);
        }
        eprintln!(
            "  rollup {}: exact {:.3} s + {:.3} s, hll {:.3} s + {:.3} s",
            repeat + 1,
            rollup[0][repeat],
            monthly[0][repeat],
            rollup[1][repeat],
            monthly[1][repeat]
        );
    }
    for repeat in 0..chain_repeats {
        let order = if repeat % 2 == 0 { [0, 1] } else { [1, 0] };
        for chain in order {
            let (seconds, runs) =
                restate(&scheduler, &format!("{}_hourly", CHAINS[chain]), start, end);
            assert_eq!(runs, 776);
            whole[chain].push(seconds);
        }
        eprintln!(
            "  whole chain {}: exact {:.2} s, hll {:.2} s",
            repeat + 1,
            whole[0][repeat],
            whole[1][repeat]
        );
    }

    // ---- stored bytes and error -----------------------------------------------------------
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| grain (partitions) | exact: stored per partition | HLL: stored per partition (the sketch alone) | exact / HLL | HLL error: median, largest | exact count within HLL bounds (2σ) |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|");
    for (grain_name, grain) in GRAINS {
        let windows = windows_within(grain, pipeline.timezone, start, end);
        let mut stored: [Vec<f64>; 2] = Default::default();
        for (chain, sizes) in CHAINS.iter().zip(stored.iter_mut()) {
            for window in &windows {
                let key = RunKey::new("bench", format!("{chain}_{grain_name}"), window.start);
                let meta = store.result_meta(&key).expect("meta").expect("stored");
                sizes.push(meta.bytes as f64);
            }
        }
        // The serialised sketch inside the HLL chain's state, without the IPC framing.
        let mut sketch_sizes: Vec<f64> = windows
            .iter()
            .map(|window| {
                let key = RunKey::new("bench", format!("hll_{grain_name}"), window.start);
                let state = materializer.results().load(&key).expect("load").state;
                let state = state.expect("a sketch keeps a state");
                let sketch = state.column("sketch").unwrap().binary().unwrap().get(0);
                sketch.expect("one sketch").len() as f64
            })
            .collect();
        let exact = read_job_results(
            &materializer,
            &pipeline,
            &format!("exact_{grain_name}"),
            start,
            end,
        )
        .expect("exact results")
        .frame;
        let hll = read_job_results(
            &materializer,
            &pipeline,
            &format!("hll_{grain_name}"),
            start,
            end,
        )
        .expect("hll results")
        .frame;
        let counts = floats(&exact, "distinct_count");
        let (estimates, lower, upper) = (
            floats(&hll, "estimate"),
            floats(&hll, "lower_bound"),
            floats(&hll, "upper_bound"),
        );
        assert_eq!(counts.len(), windows.len());
        let mut errors: Vec<f64> = counts
            .iter()
            .zip(&estimates)
            .map(|(exact, estimate)| (estimate - exact).abs() / exact.max(1.0))
            .collect();
        let within = (0..counts.len())
            .filter(|&i| lower[i] <= counts[i] && counts[i] <= upper[i])
            .count();
        let largest = errors.iter().copied().fold(0.0, f64::max);
        let (exact_size, hll_size) = (median(&mut stored[0]), median(&mut stored[1]));
        let mean_count = counts.iter().sum::<f64>() / counts.len() as f64;
        let _ = writeln!(
            table,
            "| {grain_name} ({}; {} distinct users on average) | {} | {} ({}) | {:.1}× | {:.2}%, {:.2}% | {within} of {} |",
            windows.len(),
            with_commas(mean_count.round() as usize),
            kib(exact_size),
            kib(hll_size),
            kib(median(&mut sketch_sizes)),
            exact_size / hll_size,
            100.0 * median(&mut errors),
            100.0 * largest,
            counts.len(),
        );
    }
    let ratio = |a: f64, b: f64| {
        if a >= b {
            format!("{:.1}× slower", a / b)
        } else {
            format!("{:.1}× faster", b / a)
        }
    };
    let (exact_rollup, hll_rollup) = (median(&mut rollup[0]), median(&mut rollup[1]));
    let (exact_monthly, hll_monthly) = (median(&mut monthly[0]), median(&mut monthly[1]));
    let (exact_whole, hll_whole) = (median(&mut whole[0]), median(&mut whole[1]));
    let _ = writeln!(table);
    let _ = writeln!(table, "| time (median) | exact | HLL | HLL against exact |");
    let _ = writeln!(table, "|---|---|---|---|");
    let _ = writeln!(
        table,
        "| rollup: 31 daily runs from hourly states + the monthly run from daily states (of {repeats}) | {:.3} s | {:.3} s | {} |",
        exact_rollup,
        hll_rollup,
        ratio(hll_rollup, exact_rollup)
    );
    let _ = writeln!(
        table,
        "| the monthly run alone, from 31 daily states (of {repeats}) | {:.3} s | {:.3} s | {} |",
        exact_monthly,
        hll_monthly,
        ratio(hll_monthly, exact_monthly)
    );
    let _ = writeln!(
        table,
        "| the whole chain from the source: 744 + 31 + 1 runs (of {chain_repeats}) | {:.2} s | {:.2} s | {} |",
        exact_whole,
        hll_whole,
        ratio(hll_whole, exact_whole)
    );
    println!(
        "\n{} events, {} users, 31 days; {workers} workers; lg_k 12, hll_4\n\n{table}\n{}",
        with_commas(rows),
        with_commas(users as usize),
        steal_line(cpu)
    );

    scheduler.shutdown(Duration::from_secs(30));
    driver.join().expect("driver thread");
    if std::env::var_os("FLOE_BENCH_KEEP").is_some() {
        eprintln!("kept {}", dir.keep().display());
    }
}
