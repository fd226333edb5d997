//! Scheduler benchmark (`cargo bench --bench scheduler`).
//!
//! Plans and dispatches a year of hourly partitions for a 50-job DAG of trivial jobs
//! (365 × 24 × 50 = 438,000 runs) through `Scheduler::backfill` on a real sled store, then
//! restarts on that history:
//!
//! 1. **Throughput**: runs scheduled per second end to end, from the `backfill` call (which
//!    persists and plans every run) until the backfill reports nothing remaining. The jobs
//!    return a 1-row frame without reading their inputs, so this is the scheduler's, the
//!    materialiser's and the store's own cost per run. Targets: ≥ 10,000 runs/s (Dagster
//!    launches ~1 backfill run/s, Airflow makes ~1,000 task decisions/s).
//! 2. **Memory**: peak RSS (`VmHWM`) of the process over the backfill, and the store's size
//!    on disk.
//! 3. **Restart**: with that history in the store, the time from `Store::open` to
//!    `Scheduler::start` returning (which recovers the queue): "ready". Target: < 1 s.
//!    Each restart is a fresh process (this binary re-run in restart mode, after the first
//!    process stopped the scheduler and dropped the store), so its peak RSS is its own; the
//!    OS page cache is warm, and a `sync` first lets the kernel finish writing the backfill
//!    back (restarts racing that writeback vary from 0.7 to 2.4 s). Median of
//!    `FLOE_BENCH_RESTARTS` (default 5).
//!
//! The DAG: `job_00` reads a source (one tiny Parquet file, the same for every window, with
//! `wait: 0s`); each `job_i` (i > 0) reads `job_{(i-1)/2}` and, for even i, also `job_{i-1}`,
//! so there are fan-outs and joins. All jobs are hourly.
//!
//! `FLOE_BENCH_ENGINE=worker` computes every run in worker processes (this binary serves as
//! one), as `floe serve` does: one run per process, inputs and outputs as Arrow IPC; the
//! default, `in-process`, computes them in the scheduler's threads, as `floe run` does.
//!
//! Knobs: `FLOE_BENCH_DAYS` (365), `FLOE_BENCH_JOBS` (50), `FLOE_BENCH_WORKERS` (2),
//! `FLOE_BENCH_RESTARTS` (5), `FLOE_BENCH_TIMEOUT_S` (3600), `FLOE_BENCH_CACHE_BYTES` (the
//! result cache budget, 512 MiB as in `floe serve`; `0` turns the cache off, which isolates the
//! scheduler and the store from `ResultCache::insert`, whose cost grows with the number of
//! cached results). The store lives in a temporary folder under `$TMPDIR`, deleted at the end
//! unless `FLOE_BENCH_KEEP` is set.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use floe::clock::{Clock, SystemClock};
use floe::job::{Job, JobContext, JobError, JobOutput, JobRegistry};
use floe::materialize::Materializer;
use floe::pipeline::Pipeline;
use floe::results::ResultCache;
use floe::scheduler::{BackfillRequest, Scheduler, SchedulerConfig};
use floe::store::Store;
use polars::prelude::*;

mod common;

use common::{CpuTicks, env_usize, median, proc_status_kib, steal_line, with_commas};

/// The result cache budget: `floe serve`'s default (`result_cache_bytes`, 512 MiB).
fn cache_bytes() -> usize {
    env_usize("FLOE_BENCH_CACHE_BYTES", 512 << 20)
}

/// A field of /proc/self/io (bytes).
fn proc_io(field: &str) -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines().find_map(|line| {
        line.strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .parse()
            .ok()
    })
}

/// A job that ignores its inputs and returns one row.
#[derive(Debug)]
struct Trivial;

impl Job for Trivial {
    fn kind(&self) -> &str {
        "trivial"
    }

    fn validate(&self, _input_names: &[String]) -> Result<(), Vec<String>> {
        Ok(())
    }

    fn run(&self, _ctx: &JobContext<'_>) -> Result<JobOutput, JobError> {
        let frame = DataFrame::new(1, vec![Column::new("one".into(), [1i64])])?;
        Ok(JobOutput::frame(frame))
    }
}

/// The upstream jobs of `job_i`.
fn parents(i: usize) -> Vec<usize> {
    if i == 0 {
        return Vec::new();
    }
    let mut parents = vec![(i - 1) / 2];
    if i % 2 == 0 && i - 1 != (i - 1) / 2 {
        parents.push(i - 1);
    }
    parents
}

fn pipeline_yaml(jobs: usize) -> String {
    let mut yaml = String::from(
        "version: 1\n\
         name: bench\n\
         timezone: UTC\n\
         start: 2024-01-01T00:00:00Z\n\
         schedule:\n  enabled: false\n\
         sources:\n  src:\n    format: parquet\n    path: tiny.parquet\n    time_column: ts\n    wait: 0s\n\
         jobs:\n",
    );
    for i in 0..jobs {
        let from: Vec<String> = if i == 0 {
            vec!["src".to_owned()]
        } else {
            parents(i).iter().map(|p| format!("job_{p:02}")).collect()
        };
        let _ = write!(
            yaml,
            "  job_{i:02}:\n    grain: hourly\n    from: [{}]\n    rust:\n      class: trivial\n",
            from.join(", ")
        );
    }
    yaml
}

/// The one source file every window of `job_00` resolves to: one row, outside any window.
fn write_tiny_parquet(path: &Path) {
    let ts = Column::new("ts".into(), [0i64])
        .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
        .expect("ts");
    let mut frame = DataFrame::new(1, vec![ts]).expect("frame");
    let file = std::fs::File::create(path).expect("create parquet");
    ParquetWriter::new(file)
        .finish(&mut frame)
        .expect("write parquet");
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "n/a".to_owned(), |k| format!("{:.0}", k as f64 / 1024.0))
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

struct Running {
    scheduler: Scheduler,
    driver: std::thread::JoinHandle<()>,
}

/// Opens the store and starts the scheduler (recovering whatever the store holds), with the
/// driver thread `floe serve` runs.
fn start(
    store_dir: &Path,
    data_dir: &Path,
    pipeline: &Arc<Pipeline>,
    workers: usize,
    clock: &Arc<dyn Clock>,
) -> Running {
    let store = Store::open(store_dir).expect("open store");
    let materializer = with_engine(
        Materializer::new(
            store.clone(),
            Arc::new(ResultCache::new(cache_bytes())),
            data_dir.to_path_buf(),
            clock.clone(),
        ),
        workers,
    );
    let scheduler = Scheduler::start(
        store,
        materializer,
        clock.clone(),
        SchedulerConfig {
            recurring: false,
            workers,
            resume: true,
        },
        vec![pipeline.clone()],
    )
    .expect("start scheduler");
    let driver = scheduler.spawn_driver().expect("driver thread");
    Running { scheduler, driver }
}

/// Stops everything and drops every store handle, so the directory can be opened again.
fn stop(running: Running) {
    let Running { scheduler, driver } = running;
    scheduler.shutdown(Duration::from_secs(30));
    scheduler.store().flush().expect("flush");
    driver.join().expect("driver thread");
    drop(scheduler);
}

/// `materializer`, computing in worker processes when `FLOE_BENCH_ENGINE=worker`.
fn with_engine(materializer: Materializer, workers: usize) -> Materializer {
    match std::env::var("FLOE_BENCH_ENGINE").as_deref() {
        Ok("worker") => {
            let settings = floe::jobserver::workers::WorkerSettings {
                enabled: true,
                ..Default::default()
            };
            let pool = floe::jobserver::workers::runs_pool(
                &settings,
                workers,
                &floe::jobserver::limits::Limits::default(),
            )
            .expect("worker pool");
            materializer.with_engine(Arc::new(floe::engine::worker::WorkerEngine::new(
                pool,
                settings.kill_grace,
            )))
        }
        Ok("in-process") | Err(_) => materializer,
        Ok(other) => panic!("FLOE_BENCH_ENGINE must be `in-process` or `worker`, not `{other}`"),
    }
}

const RESTART_DIR: &str = "FLOE_BENCH_RESTART_DIR";
const RESTART_ID: &str = "FLOE_BENCH_RESTART_ID";
const RESTART_RUNS: &str = "FLOE_BENCH_RESTART_RUNS";

fn registry() -> JobRegistry {
    let mut registry = JobRegistry::new();
    registry.register("trivial", |_| Ok(Arc::new(Trivial) as Arc<dyn Job>));
    registry
}

/// Restart mode (a child process): opens the store the backfill left, starts the scheduler,
/// checks the history is there and prints `open_ms ready_ms vmhwm_kib vmrss_kib`.
fn restart(dir: &Path) {
    let jobs = env_usize("FLOE_BENCH_JOBS", 50).clamp(1, 100);
    let workers = env_usize("FLOE_BENCH_WORKERS", 2).max(1);
    let id = std::env::var(RESTART_ID).expect("backfill id");
    let expected = env_usize(RESTART_RUNS, 0);
    let pipeline = Arc::new(
        floe::pipeline::parse_pipeline(&pipeline_yaml(jobs), Path::new("bench.yaml"), &registry())
            .expect("pipeline"),
    );
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);

    let t = Instant::now();
    let store = Store::open(&dir.join("store")).expect("reopen store");
    let opened = t.elapsed();
    let materializer = Materializer::new(
        store.clone(),
        Arc::new(ResultCache::new(cache_bytes())),
        dir.join("data"),
        clock.clone(),
    );
    let scheduler = Scheduler::start(
        store,
        materializer,
        clock,
        SchedulerConfig {
            recurring: false,
            workers,
            resume: true,
        },
        vec![pipeline],
    )
    .expect("restart scheduler");
    let ready = t.elapsed();
    let (peak, rss) = (
        proc_status_kib("self", "VmHWM"),
        proc_status_kib("self", "VmRSS"),
    );

    let summary = scheduler.summary();
    let runs_now = scheduler.store().run_count();
    assert_eq!(runs_now, expected, "history lost across a restart");
    let status = scheduler
        .backfill_status(&id)
        .expect("status after restart");
    eprintln!(
        "restart: store open {:.1} ms, ready {:.1} ms, peak RSS {} MiB, {} runs in the store, {} tracked, backfill {}",
        opened.as_secs_f64() * 1e3,
        ready.as_secs_f64() * 1e3,
        mib(peak),
        with_commas(runs_now),
        summary.waiting + summary.ready + summary.delayed + summary.running,
        status.state,
    );
    scheduler.shutdown(Duration::from_secs(10));
    println!(
        "{} {} {} {}",
        opened.as_secs_f64() * 1e3,
        ready.as_secs_f64() * 1e3,
        peak.unwrap_or(0),
        rss.unwrap_or(0)
    );
}

fn main() -> std::process::ExitCode {
    // The worker processes of `FLOE_BENCH_ENGINE=worker` are this binary.
    if let Some(code) = floe::cli::run_as_worker_if_asked(&registry()) {
        return code;
    }
    if let Some(dir) = std::env::var_os(RESTART_DIR) {
        restart(Path::new(&dir));
        return std::process::ExitCode::SUCCESS;
    }
    let days = env_usize("FLOE_BENCH_DAYS", 365).max(1);
    let jobs = env_usize("FLOE_BENCH_JOBS", 50).clamp(1, 100);
    let workers = env_usize("FLOE_BENCH_WORKERS", 2).max(1);
    let restarts = env_usize("FLOE_BENCH_RESTARTS", 5).max(1);
    let timeout = Duration::from_secs(env_usize("FLOE_BENCH_TIMEOUT_S", 3600) as u64);
    let expected_runs = days * 24 * jobs;
    let cpu_start = CpuTicks::now();

    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let store_dir = dir.path().join("store");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    write_tiny_parquet(&data_dir.join("tiny.parquet"));

    let yaml = pipeline_yaml(jobs);
    let pipeline = Arc::new(
        floe::pipeline::parse_pipeline(&yaml, Path::new("bench.yaml"), &registry())
            .unwrap_or_else(|e| panic!("pipeline: {e}\n{yaml}")),
    );
    let edges: usize = (0..jobs).map(|i| parents(i).len()).sum();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let from: DateTime<Utc> = pipeline.start;
    let to = from + TimeDelta::days(days as i64);

    eprintln!(
        "backfilling {} runs ({days} days × 24 h × {jobs} jobs, {edges} job edges) with {workers} workers in {}",
        with_commas(expected_runs),
        dir.path().display()
    );
    let rss_before = proc_status_kib("self", "VmRSS");
    let wchar_before = proc_io("wchar");
    let running = start(&store_dir, &data_dir, &pipeline, workers, &clock);

    // ---- throughput ------------------------------------------------------------------
    let started = Instant::now();
    let status = running
        .scheduler
        .backfill(&BackfillRequest {
            pipeline: pipeline.name.clone(),
            jobs: None,
            from,
            to,
            force: false,
        })
        .expect("backfill");
    let planned_in = started.elapsed();
    let id = status.id.clone();
    assert_eq!(
        status.total, expected_runs,
        "backfill planned an unexpected run count"
    );
    eprintln!(
        "planned {} runs in {:.2} s; running …",
        with_commas(status.total),
        planned_in.as_secs_f64()
    );
    let mut last_report = Instant::now();
    let mut last_done = 0;
    let status = loop {
        let status = running.scheduler.backfill_status(&id).expect("status");
        if status.remaining == 0 {
            break status;
        }
        if started.elapsed() > timeout {
            panic!("backfill not done after {timeout:?}: {status:?}");
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            let done = status.total - status.remaining;
            eprintln!(
                "  {:>6.0} s: {} / {} done, {:.0} runs/s so far, {:.0} runs/s in the last {:.0} s, RSS {} MiB",
                started.elapsed().as_secs_f64(),
                with_commas(done),
                with_commas(status.total),
                done as f64 / started.elapsed().as_secs_f64(),
                (done - last_done) as f64 / last_report.elapsed().as_secs_f64(),
                last_report.elapsed().as_secs_f64(),
                mib(proc_status_kib("self", "VmRSS"))
            );
            last_report = Instant::now();
            last_done = done;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let finished_in = started.elapsed();
    assert!(
        running.scheduler.wait_idle(Duration::from_secs(60)),
        "scheduler not idle after the backfill finished"
    );
    let idle_in = started.elapsed();
    assert_eq!(status.failed, 0, "runs failed: {status:?}");
    assert_eq!(status.succeeded, expected_runs, "{status:?}");
    let peak_rss = proc_status_kib("self", "VmHWM");
    let rss_after = proc_status_kib("self", "VmRSS");
    let flush_started = Instant::now();
    running.scheduler.store().flush().expect("flush");
    let flushed_in = flush_started.elapsed();
    let stored_runs = running.scheduler.store().run_count();

    // ---- the partition grid over that history ----------------------------------------
    // About 10,000 cells: every job over the first hours (what `GET /pipelines/{p}/grid`
    // reads and builds before its JSON).
    let grid_to = from + TimeDelta::hours(((10_000 / jobs).max(1) as i64).min(days as i64 * 24));
    let grid_jobs = pipeline.dag.topological_order().to_vec();
    let mut grid_ms = Vec::new();
    let mut grid_cells = 0;
    for _ in 0..21 {
        let started = Instant::now();
        let rows = floe::grid::partition_grid(
            running.scheduler.store(),
            &pipeline,
            &grid_jobs,
            from,
            grid_to,
            to,
        )
        .expect("grid");
        grid_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        grid_cells = rows.iter().map(|row| row.cells.len()).sum::<usize>();
    }
    let grid_median = median(&mut grid_ms);
    stop(running);
    let written = |after: Option<u64>, before: Option<u64>| {
        after.zip(before).map_or_else(
            || "n/a".to_owned(),
            |(a, b)| {
                let bytes = a.saturating_sub(b);
                format!(
                    "{:.0} MiB ({:.0} B/run)",
                    bytes as f64 / 1048576.0,
                    bytes as f64 / expected_runs as f64
                )
            },
        )
    };
    let wchar = written(proc_io("wchar"), wchar_before);
    let store_bytes = dir_size(&store_dir);

    // ---- restart ---------------------------------------------------------------------
    // Each restart is a fresh process (this binary again, in restart mode): a real restart
    // starts from an empty heap, and its peak RSS is then the restart's own. The kernel is
    // still writing back the gigabyte the backfill wrote, and restarts that race that
    // writeback took 0.7–2.4 s instead of 0.6–0.7 s, so `sync` settles it first (timed).
    let sync_started = Instant::now();
    let synced = std::process::Command::new("sync").status();
    let sync_s = sync_started.elapsed().as_secs_f64();
    eprintln!("sync before the restarts: {synced:?} in {sync_s:.2} s");
    let exe = std::env::current_exe().expect("current exe");
    let mut ready_ms = Vec::new();
    let mut open_ms = Vec::new();
    let mut restart_peak = Vec::new();
    let mut restart_rss = Vec::new();
    for round in 0..restarts {
        let output = std::process::Command::new(&exe)
            .arg("--bench")
            .env(RESTART_DIR, dir.path())
            .env(RESTART_ID, &id)
            .env(RESTART_RUNS, stored_runs.to_string())
            .env("FLOE_BENCH_JOBS", jobs.to_string())
            .env("FLOE_BENCH_WORKERS", workers.to_string())
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("restart process");
        assert!(
            output.status.success(),
            "restart {} failed: {:?}",
            round + 1,
            output.status
        );
        let line = String::from_utf8_lossy(&output.stdout);
        let fields: Vec<f64> = line
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let [opened, ready, peak, rss] = fields[..] else {
            panic!("restart {} printed {line:?}", round + 1);
        };
        open_ms.push(opened);
        ready_ms.push(ready);
        restart_peak.push(peak);
        restart_rss.push(rss);
    }
    let (ready_min, ready_max) = (
        ready_ms.iter().copied().fold(f64::INFINITY, f64::min),
        ready_ms.iter().copied().fold(0.0, f64::max),
    );

    if std::env::var_os("FLOE_BENCH_KEEP").is_some() {
        let kept = dir.keep();
        eprintln!(
            "kept {}; restart alone: {RESTART_DIR}={} {RESTART_ID}={id} {RESTART_RUNS}={stored_runs} {} --bench",
            kept.display(),
            kept.display(),
            exe.display()
        );
    }
    let total = finished_in.as_secs_f64();
    let execute = (finished_in - planned_in).as_secs_f64();
    println!();
    println!(
        "## Scheduler backfill: {days} days × 24 hourly partitions × {jobs} trivial jobs ({edges} job edges), {workers} workers"
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!("| runs | {} |", with_commas(expected_runs));
    println!(
        "| plan: `backfill()` call (persist + track every run) | {:.2} s ({:.0} runs/s) |",
        planned_in.as_secs_f64(),
        expected_runs as f64 / planned_in.as_secs_f64()
    );
    println!(
        "| dispatch + execute until `remaining == 0` | {execute:.2} s ({:.0} runs/s) |",
        expected_runs as f64 / execute
    );
    println!(
        "| **end to end** (backfill call → finished) | **{total:.2} s, {:.0} runs/s** |",
        expected_runs as f64 / total
    );
    println!(
        "| until `wait_idle` returned | {:.2} s |",
        idle_in.as_secs_f64()
    );
    println!("| final store flush | {:.2} s |", flushed_in.as_secs_f64());
    println!(
        "| partition grid of {} cells over that history (`floe::grid::partition_grid`, median of 21) | {grid_median:.1} ms |",
        with_commas(grid_cells)
    );
    println!(
        "| peak RSS (VmHWM), whole process | {} MiB (RSS {} MiB before start, {} MiB after the backfill) |",
        mib(peak_rss),
        mib(rss_before),
        mib(rss_after)
    );
    println!("| written by the process: `write()` calls (wchar) | {wchar} |");
    println!(
        "| store on disk | {:.0} MiB ({} runs, {:.0} B/run) |",
        store_bytes as f64 / 1048576.0,
        with_commas(stored_runs),
        store_bytes as f64 / stored_runs.max(1) as f64
    );
    println!("| restart: `sync` of the backfill's writes first | {sync_s:.2} s |");
    println!(
        "| restart: `Store::open` (median of {restarts}) | {:.0} ms |",
        median(&mut open_ms)
    );
    println!(
        "| **restart: ready** (`Store::open` + `Scheduler::start`, median of {restarts}) | **{:.0} ms** (min {ready_min:.0}, max {ready_max:.0}) |",
        median(&mut ready_ms)
    );
    println!(
        "| restart: peak RSS of the restarted process (VmHWM once ready, median) | {:.0} MiB (RSS {:.0} MiB) |",
        median(&mut restart_peak) / 1024.0,
        median(&mut restart_rss) / 1024.0
    );
    println!();
    println!("{}", steal_line(cpu_start));
    std::process::ExitCode::SUCCESS
}
