//! Bigger-than-memory partitions (`cargo bench --bench streaming`): one day of generated
//! events, 100M rows by default, computed by two daily jobs that read the source directly —
//! a `group_by` (events and sales per category) and a `count_distinct` (distinct users, whose
//! partial state is the day's distinct user ids) — in a worker process limited to a fraction
//! of the data's in-memory size, as `floe serve` runs partitions. Printed as markdown for
//! docs/benchmarks.md.
//!
//! Each round measures, per job:
//!
//! - **Floe worker**: `Materializer::attempt_partition` (`force`) with the `WorkerEngine`,
//!   its workers limited to `FLOE_BENCH_LIMIT_MIB` (2048): the day's files are listed, the
//!   run crosses to a fresh worker process (this binary), runs there on polars' streaming
//!   engine (the files are well over `floe::engine::STREAMING_FROM_BYTES`), and its output
//!   comes back as Arrow IPC and is committed to sled. Wall time of the whole attempt; peak
//!   RSS is the worker's `VmHWM`; "charged" the peak its supervisor read of what the limit
//!   charges (`floe::frames::memory`: anonymous, shared and swapped pages, every 10 ms).
//! - **Floe in memory**: the same job on the same files on polars' in-memory engine, in a
//!   child process of its own without a limit (this binary again): what the worker would need
//!   without streaming. Wall time of the job's computation; peak RSS is the child's `VmHWM`,
//!   and "charged" what a limit would charge it, sampled as a supervisor does.
//! - **DuckDB**: the same query on the same files (`benches/streaming/duckdb_run.py`, the
//!   venv of `benches/compare/setup.sh`) in a fresh process with `SET memory_limit` to the
//!   same limit, `SET threads` to the machine's cores and a spill folder. Wall time from
//!   importing DuckDB to the answer; peak RSS is the process's `ru_maxrss`.
//!
//! Every answer is checked against the others (counts exactly, sums to the cent). Figures
//! are medians over `FLOE_BENCH_ROUNDS` (3). "Within the limit" compares the charged peak
//! (DuckDB's whole peak, which its own limit bounds) with the limit.
//!
//! The data (`FLOE_BENCH_ROWS`, `FLOE_BENCH_USERS` = 5,000,000) is generated once into
//! `FLOE_BENCH_DATA` (default `target/bench-data/streaming-<rows>-<users>`) as the example
//! pipeline's layout, `events/date=2024-01-01/hour=HH/part-0.parquet`, each hour `rows / 24`
//! events of `floe::sample` (seed 42 + hour); a stamp file written last says it is complete,
//! with the data's size on disk and its Arrow size in memory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, TimeDelta};
use floe::clock::SystemClock;
use floe::engine::worker::WorkerEngine;
use floe::engine::{resolve_source_files, scan_source_window};
use floe::job::{JobContext, JobInput};
use floe::materialize::{PartitionAttempt, RunOutcome};
use floe::partition::{Grain, Window};
use floe::pipeline::data_roots::DataRoots;
use floe::results::ResultCache;
use floe::store::RunKey;
use floe::{JobRegistry, Materializer, Pipeline, Store};
use polars::prelude::*;
use serde_json::Value;

mod common;

use common::{CpuTicks, env_usize, median, proc_status_kib, python_venv, steal_line, with_commas};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const DAY: &str = "2024-01-01";
const STAMP: &str = "complete.json";
/// Set in the child that runs a job on the in-memory engine: the job's name.
const IN_MEMORY_CHILD: &str = "FLOE_BENCH_IN_MEMORY_JOB";
const CHILD_DATA: &str = "FLOE_BENCH_CHILD_DATA";
const CHILD_PIPELINE: &str = "FLOE_BENCH_CHILD_PIPELINE";

const PIPELINE: &str = "\
version: 1
name: big
timezone: UTC
start: 2024-01-01T00:00:00Z
sources:
  events:
    format: parquet
    path: events/date={date}/hour={hour}/*.parquet
    time_column: ts
jobs:
  events_per_category_daily:
    grain: daily
    from: events
    group_by:
      keys: [category]
      aggregations:
        events: count(*)
        sales: sum(amount)
  users_daily:
    grain: daily
    from: events
    count_distinct:
      column: user_id
";

/// The bench's jobs: the Floe job and the DuckDB query answering the same question.
const JOBS: [(&str, &str); 2] = [
    ("events_per_category_daily", "events_per_category"),
    ("users_daily", "distinct_users"),
];

fn day_window() -> Window {
    let start = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
        .expect("day")
        .to_utc();
    Window {
        start,
        end: start + TimeDelta::days(1),
    }
}

/// What the stamp says of the generated data.
struct DataSize {
    rows: u64,
    file_bytes: u64,
    arrow_bytes: u64,
}

/// Generates the day's events into `dir` unless the stamp says they are there.
fn ensure_data(dir: &Path, rows: usize, users: u32) -> DataSize {
    let stamp = dir.join(STAMP);
    if let Ok(text) = std::fs::read_to_string(&stamp) {
        let value: Value = serde_json::from_str(&text).expect("stamp");
        let field = |name: &str| value[name].as_u64().expect("stamp field");
        eprintln!("streaming: data in {} (stamp found)", dir.display());
        return DataSize {
            rows: field("rows"),
            file_bytes: field("file_bytes"),
            arrow_bytes: field("arrow_bytes"),
        };
    }
    let _ = std::fs::remove_dir_all(dir);
    let started = Instant::now();
    let window = day_window();
    let mut size = DataSize {
        rows: 0,
        file_bytes: 0,
        arrow_bytes: 0,
    };
    for hour in 0..24u32 {
        let start = window.start + TimeDelta::hours(i64::from(hour));
        let hour_rows = rows / 24 + usize::from((hour as usize) < rows % 24);
        let events = floe::sample::generate(&floe::sample::SampleSpec {
            seed: 42 + u64::from(hour),
            start,
            hours: 1,
            rows: hour_rows,
            users,
        });
        floe::dataset::write_events_parquet(&events, &dir.join("events"), start, 1)
            .expect("write events");
        let file = dir
            .join("events")
            .join(format!("date={DAY}"))
            .join(format!("hour={hour:02}"))
            .join("part-0.parquet");
        size.file_bytes += std::fs::metadata(&file).expect("file").len();
        let frame = LazyFrame::scan_parquet(
            PlRefPath::new(file.to_string_lossy().into_owned()),
            ScanArgsParquet::default(),
        )
        .and_then(LazyFrame::collect)
        .expect("read back");
        size.rows += frame.height() as u64;
        size.arrow_bytes += floe::frames::arrow_size(&frame) as u64;
        eprintln!(
            "streaming: hour {hour:02}: {} rows ({:.0} s)",
            with_commas(frame.height()),
            started.elapsed().as_secs_f64()
        );
    }
    let stamp_text = serde_json::json!({
        "rows": size.rows,
        "file_bytes": size.file_bytes,
        "arrow_bytes": size.arrow_bytes,
    });
    std::fs::write(&stamp, stamp_text.to_string()).expect("stamp");
    size
}

fn load_pipeline(dir: &Path) -> Pipeline {
    let path = dir.join("big.yaml");
    std::fs::write(&path, PIPELINE).expect("pipeline");
    floe::pipeline::load_file(&path, &JobRegistry::new())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One engine's figures for one job in one round.
struct Measure {
    wall_ms: f64,
    peak_rss_kib: u64,
    /// The peak a memory limit charged (anonymous, shared and swapped memory, sampled every
    /// 10 ms: by the worker's supervisor, by the in-memory child itself); not for DuckDB.
    charged_kib: Option<u64>,
    answer: Vec<String>,
}

/// A result's rows as text, floats to the cent, sorted: what the engines must agree on.
fn answer_of(frame: &DataFrame) -> Vec<String> {
    let mut rows = Vec::with_capacity(frame.height());
    for row in 0..frame.height() {
        let cells: Vec<String> = frame
            .columns()
            .iter()
            .map(|column| match column.get(row).expect("cell") {
                AnyValue::Float64(x) => format!("{x:.2}"),
                AnyValue::String(s) => s.to_owned(),
                AnyValue::StringOwned(s) => s.to_string(),
                other => other.to_string(),
            })
            .collect();
        rows.push(cells.join("|"));
    }
    rows.sort();
    rows
}

/// The job as `floe serve` runs a partition: in a fresh worker process limited to `limit`.
fn floe_worker(pipeline: &Pipeline, job: &str, data: &Path, limit: u64) -> Measure {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("store")).expect("store");
    let settings = floe::jobserver::workers::WorkerSettings {
        enabled: true,
        memory_limit: limit,
        ..Default::default()
    };
    let pool = floe::jobserver::workers::runs_pool(
        &settings,
        1,
        &floe::jobserver::limits::Limits::default(),
    )
    .expect("worker pool");
    let engine = Arc::new(WorkerEngine::new(pool, settings.kill_grace));
    let materializer = Materializer::new(
        store,
        Arc::new(ResultCache::new(512 << 20)),
        data.to_path_buf(),
        Arc::new(SystemClock),
    )
    .with_engine(Arc::clone(&engine) as Arc<dyn floe::engine::Engine>);
    let def = pipeline.job(job).expect("job");
    let window = day_window();
    let started = Instant::now();
    match materializer.attempt_partition(pipeline, def, &window, true, &|| false) {
        PartitionAttempt::Done(RunOutcome::Computed { .. }) => {}
        other => panic!("{job} in a worker limited to {limit} bytes: {other:?}"),
    }
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (pid, charged) = engine
        .pool()
        .with_worker(|worker| (worker.pid(), worker.status().peak_resident_bytes))
        .expect("worker");
    let pid = pid.expect("the worker is running");
    let peak_rss_kib = proc_status_kib(&pid.to_string(), "VmHWM").expect("VmHWM");
    let key = RunKey {
        pipeline: pipeline.name.clone(),
        job: job.to_owned(),
        partition_start: window.start,
    };
    let frame = materializer.results().load(&key).expect("result").frame;
    Measure {
        wall_ms,
        peak_rss_kib,
        charged_kib: Some(charged / 1024),
        answer: answer_of(&frame),
    }
}

/// The child's side of [`floe_in_memory`]: the job over the day's files on polars' in-memory
/// engine (no streaming scope), timed; prints a JSON line.
fn in_memory_child(job: &str) {
    let data = PathBuf::from(std::env::var_os(CHILD_DATA).expect("data"));
    let dir = PathBuf::from(std::env::var_os(CHILD_PIPELINE).expect("pipeline dir"));
    let pipeline = load_pipeline(&dir);
    let def = pipeline.job(job).expect("job");
    let source = &pipeline.sources["events"];
    let window = day_window();
    let started = Instant::now();
    let files = resolve_source_files(source, &DataRoots::new(&data, &[]), &window).expect("files");
    let frame = scan_source_window(source, &files, &window).expect("scan");
    let inputs: BTreeMap<String, JobInput> = [("events".to_owned(), JobInput::of_frame(frame))]
        .into_iter()
        .collect();
    let ctx = JobContext {
        pipeline: &pipeline.name,
        job,
        grain: Grain::Daily,
        window,
        inputs: &inputs,
    };
    assert!(!floe::frames::streaming::active());
    // The memory a limit would charge, read as a worker's supervisor reads it: every 10 ms.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(floe::frames::memory::resident_bytes().unwrap_or(0));
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            peak
        })
    };
    let output = floe::job::run_job(def.job.as_ref(), &ctx).expect("in-memory run");
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let charged = sampler.join().expect("sampler");
    let peak_rss_kib = proc_status_kib("self", "VmHWM").expect("VmHWM");
    println!(
        "{}",
        serde_json::json!({
            "wall_ms": wall_ms,
            "peak_rss_kib": peak_rss_kib,
            "charged_kib": charged / 1024,
            "answer": answer_of(&output.frame),
        })
    );
}

/// Runs `command` to its end and reads the JSON line it printed last; `who` names it.
fn run_child(command: &mut Command, who: &str) -> Value {
    let output = command.output().unwrap_or_else(|e| panic!("{who}: {e}"));
    assert!(
        output.status.success(),
        "{who}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("{who} printed no JSON line: {text}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{who}: {e}: {line}"))
}

fn floe_in_memory(job: &str, data: &Path, pipeline_dir: &Path) -> Measure {
    let value = run_child(
        Command::new(std::env::current_exe().expect("exe"))
            .env(IN_MEMORY_CHILD, job)
            .env(CHILD_DATA, data)
            .env(CHILD_PIPELINE, pipeline_dir),
        "the in-memory child",
    );
    Measure {
        wall_ms: value["wall_ms"].as_f64().expect("wall_ms"),
        peak_rss_kib: value["peak_rss_kib"].as_u64().expect("peak"),
        charged_kib: value["charged_kib"].as_u64(),
        answer: value["answer"]
            .as_array()
            .expect("answer")
            .iter()
            .map(|cell| cell.as_str().expect("row").to_owned())
            .collect(),
    }
}

fn duckdb(python: &str, query: &str, data: &Path, limit_mib: u64, spill: &Path) -> Measure {
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let value = run_child(
        Command::new(python)
            .arg(Path::new(REPO).join("benches/streaming/duckdb_run.py"))
            .args(["--data", &data.to_string_lossy(), "--day", DAY])
            .args(["--query", query])
            .args(["--memory-limit-mib", &limit_mib.to_string()])
            .args(["--threads", &threads.to_string()])
            .args(["--temp", &spill.to_string_lossy()]),
        "duckdb_run.py",
    );
    let answer = value["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .map(|cell| match cell {
                    Value::String(s) => s.clone(),
                    Value::Number(n) if n.is_f64() => format!("{:.2}", n.as_f64().expect("f64")),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect::<Vec<_>>();
    let mut answer = answer;
    answer.sort();
    Measure {
        wall_ms: value["wall_ms"].as_f64().expect("wall_ms"),
        peak_rss_kib: value["peak_rss_kib"].as_u64().expect("peak"),
        charged_kib: None,
        answer,
    }
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn main() -> ExitCode {
    // The worker processes are this binary.
    if let Some(code) = floe::cli::run_as_worker_if_asked(&JobRegistry::new()) {
        return code;
    }
    if let Ok(job) = std::env::var(IN_MEMORY_CHILD) {
        in_memory_child(&job);
        return ExitCode::SUCCESS;
    }
    let rows = env_usize("FLOE_BENCH_ROWS", 100_000_000).max(24);
    let users = u32::try_from(env_usize("FLOE_BENCH_USERS", 5_000_000).max(1)).expect("users");
    let limit_mib = env_usize("FLOE_BENCH_LIMIT_MIB", 2048).max(128) as u64;
    let rounds = env_usize("FLOE_BENCH_ROUNDS", 3).max(1);
    let data = std::env::var_os("FLOE_BENCH_DATA").map_or_else(
        || {
            Path::new(REPO)
                .join("target/bench-data")
                .join(format!("streaming-{rows}-{users}"))
        },
        PathBuf::from,
    );
    let cpu_start = CpuTicks::now();
    let size = ensure_data(&data, rows, users);
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = load_pipeline(dir.path());
    let spill = dir.path().join("duckdb-spill");
    std::fs::create_dir_all(&spill).expect("spill dir");
    let python = python_venv();
    if let Err(why) = &python {
        eprintln!("streaming: no DuckDB ({why}); measuring Floe alone");
    }

    // engine → job → measures over the rounds
    let mut measures: BTreeMap<(&str, &str), Vec<Measure>> = BTreeMap::new();
    for round in 1..=rounds {
        for (job, query) in JOBS {
            eprintln!("streaming: round {round}/{rounds}: {job}");
            let worker = floe_worker(&pipeline, job, &data, limit_mib << 20);
            let in_memory = floe_in_memory(job, &data, dir.path());
            assert_eq!(
                worker.answer, in_memory.answer,
                "{job}: worker vs in memory"
            );
            measures
                .entry(("Floe worker (streaming)", job))
                .or_default()
                .push(worker);
            if let Ok(python) = &python {
                let duck = duckdb(python, query, &data, limit_mib, &spill);
                assert_eq!(duck.answer, in_memory.answer, "{job}: DuckDB vs Floe");
                measures.entry(("DuckDB", job)).or_default().push(duck);
            }
            measures
                .entry(("Floe in memory", job))
                .or_default()
                .push(in_memory);
        }
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} rows in one day ({} users drawn), {} Parquet files totalling {:.0} MiB on disk, \
         {:.0} MiB in memory as Arrow; worker and DuckDB memory limit {limit_mib} MiB \
         ({:.0}% of the data's in-memory size); medians of {rounds} rounds.\n",
        with_commas(size.rows as usize),
        with_commas(users as usize),
        24,
        size.file_bytes as f64 / f64::from(1 << 20),
        size.arrow_bytes as f64 / f64::from(1 << 20),
        100.0 * (limit_mib << 20) as f64 / size.arrow_bytes as f64,
    );
    let _ = writeln!(
        out,
        "| job | engine | wall time | peak RSS (VmHWM) | peak charged by the limit | within the limit |\n\
         |---|---|---:|---:|---:|---|"
    );
    for (job, _) in JOBS {
        for engine in ["Floe worker (streaming)", "DuckDB", "Floe in memory"] {
            let Some(samples) = measures.get_mut(&(engine, job)) else {
                continue;
            };
            let mut walls: Vec<f64> = samples.iter().map(|m| m.wall_ms).collect();
            let mut peaks: Vec<f64> = samples.iter().map(|m| m.peak_rss_kib as f64).collect();
            let peak = median(&mut peaks) as u64;
            let mut charged: Vec<f64> = samples
                .iter()
                .filter_map(|m| m.charged_kib.map(|kib| kib as f64))
                .collect();
            // Where nothing is charged apart, the limit is held against the whole peak.
            let charged = (!charged.is_empty()).then(|| median(&mut charged) as u64);
            let held = charged.unwrap_or(peak);
            let _ = writeln!(
                out,
                "| {job} | {engine} | {:.2} s | {} | {} | {} |",
                median(&mut walls) / 1000.0,
                mib(peak),
                charged.map_or_else(|| "–".to_owned(), mib),
                if held <= limit_mib * 1024 {
                    "yes"
                } else {
                    "no"
                },
            );
        }
    }
    let _ = writeln!(out, "\n{}", steal_line(cpu_start));
    print!("{out}");
    ExitCode::SUCCESS
}
