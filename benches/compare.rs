//! Floe against polars, DuckDB and Spark, side by side: `cargo bench --bench compare`.
//!
//! Prints markdown to stdout (progress to stderr), ready for docs/benchmarks.md. For each data
//! size (`FLOE_BENCH_SIZES`, default `1000000,10000000` rows) it generates the e-commerce sample
//! events (`floe::sample`, seed 42, one week from 2024-01-01T00:00Z, 200,000 users), writes them
//! as the example pipeline reads them (`data/events/date=…/hour=…/part-0.parquet`) and answers
//! the queries of `benches/compare/engines.py` on the same files with every engine:
//!
//! - Q1 distinct non-null `user_id` of `event = 'register'` in 2024-01-01T10:00Z..11:00Z;
//!   Q2 the top 10 cities by `sum(amount)` of purchases in the weekend 2024-01-06..01-08;
//!   Q3 `sum(amount)` of purchases per category on 2024-01-02; Q1w–Q3w the same over the
//!   whole table. Windows are half-open, `[from, to)`.
//!
//! Engines:
//!
//! - **Floe REST**: `floe serve`'s router in-process on 127.0.0.1:0 (as benches/jobserver.rs,
//!   recurring scheduling off), a context `bench` holding the whole week as the named object
//!   `events` (loaded once by a sync job whose input creates it), and each query as a sync
//!   job (`count_distinct`, `top`, `group_by`) over it. A windowed query's input is
//!   `{ object = events, from, to }`: the object's `ts` is sorted, so the window is a
//!   zero-copy slice found by binary search (`floe::frames::time_slice`). The object keeps
//!   the rows each filter selects (`floe::frames::selection`), so after the warm-up a query
//!   reads its filter's selection, as a dashboard's repeated question does; the warm-up's
//!   time is reported as the first ask. Timed: the HTTP round trip, JSON answer parsed.
//! - **Floe materialise**: the example pipeline (pipelines/shop.yaml) brought up to date by
//!   `floe::Materializer::run` with `force` for the partitions answering the query, then the
//!   answer read from the result cache. `force` recomputes the partition *and every upstream
//!   partition it reads* from the Parquet files, each committed to sled, then the store is
//!   flushed: the cost of answering from scratch through the pipeline. Q1:
//!   `registered_users_hourly` for the hour; Q2: `sales_per_city_daily` for the two weekend
//!   days (48 `purchases_hourly` runs + 2 daily) and a top 10 over the two daily partials;
//!   Q3: `sales_per_category_daily` for the day (24 hourly + 1 daily); Q1w: the 7
//!   `registered_users_daily` partitions (over 168 hourly ones) and their merged key sets;
//!   Q2w: `top_cities_weekly` for the week (168 + 7 + 1 runs); Q3w: the 7
//!   `sales_per_category_daily` partitions summed per category.
//! - **polars**: the same queries written directly in polars over the very DataFrame the
//!   context holds, in this process: the floor.
//! - **DuckDB and Spark**: `bash benches/compare/setup.sh` (a venv with DuckDB and PySpark;
//!   needs the network the first time) then `engines.py --data <tmp>/data --repeats N --check`
//!   as a child process; its JSON report is parsed. Without the venv the Rust engines still
//!   run, with a note. `FLOE_BENCH_PYTHON_ENGINES` is passed as `--engines` (`none` skips).
//!
//! Every engine's answer must equal polars' (floats compared at 2 decimals: the amounts are
//! cents and engines.py rounds with Python's `round(x, 2)`); the bench panics with the rows
//! otherwise.
//!
//! Also measured, per size:
//!
//! - a **Floe ad-hoc job**: the Q1 sync job without a context (Floe makes an ad-hoc one),
//!   reading the hour's files from the `events` source, against Spark's session start and
//!   cold Q1 (a fresh process; from engines.py);
//! - the **gain from cached upstream results**: `sales_per_category_daily` for 2024-01-02
//!   recomputed alone (`Materializer::attempt_partition`, `force`) from its 24 cached
//!   `purchases_hourly` partitions (in-memory result cache; and from sled with an empty
//!   result cache), against the same daily group-by reading the `events` source (a variant
//!   pipeline written to the temp folder). Both commit their result to sled;
//! - the **memory of `floe serve`** (the real binary, a child process) holding the whole table
//!   in a context: VmHWM and VmRSS from /proc against the named object's Arrow size (every
//!   buffer, string views included: `floe::engine::arrow_size`), with the object loaded by a
//!   `count_distinct` sync job over the get-or-create input (the measure: a one-row result)
//!   and, to show what storing a whole-table job result costs, by a `select` job;
//! - where Floe REST's time goes: the same built-in job run in-process without the server on
//!   the same slice, and polars' query on that slice.
//!
//! Method: one warm-up, then the median of `FLOE_BENCH_REPEATS` (default 5) timed runs for
//! every engine and query; the in-memory Rust engines, which take milliseconds, get
//! `FLOE_BENCH_RUST_REPEATS` (default 21). Those engines of a query (Floe REST, the job
//! in-process, polars) run interleaved (one run of each per round), so load from elsewhere on
//! the machine hits them alike; Floe materialise runs in its own loop after them, because its
//! sled writes and flushes go on in the background and slowed the engine that followed it.
//! Ratios come from the same run; Floe/polars is the median of the rounds' ratios (each round
//! times both back to back), not a ratio of two medians. The load average is recorded at the
//! start and the end, and the CPU time the hypervisor stole for other guests over the run.
//!
//! A quick run: `FLOE_BENCH_SIZES=200000 FLOE_BENCH_REPEATS=1
//! FLOE_BENCH_PYTHON_ENGINES=duckdb_files,duckdb_memory cargo bench --bench compare`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use floe::clock::{Clock, SystemClock};
use floe::frames::time_slice::window_rows;
use floe::job::Job;
use floe::job::builtin::{CountDistinct, GroupBy, Top};
use floe::materialize::{PartitionAttempt, RunOutcome};
use floe::partition::Window;
use floe::results::ResultCache;
use floe::results::cache::CachedResult;
use floe::scheduler::SchedulerConfig;
use floe::server::{ServerConfig, build_state, serve_on};
use floe::{JobRegistry, Materializer, Pipeline, RunRequest, Store};
use polars::prelude::*;
use serde::Deserialize;
use serde_json::Value;

mod common;

use common::{
    CpuTicks, env_usize, median, proc_status_kib, python_venv, run_in_process, steal_line,
    with_commas, write_sample_week,
};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const CONTEXT: &str = "bench";
/// A query's answer, each cell as text: integers and strings as they are, floats at 2 decimals.
type Answer = Vec<Vec<String>>;

// ---------------------------------------------------------------------------------------
// Knobs, data, measuring

fn sizes() -> Vec<usize> {
    let text = std::env::var("FLOE_BENCH_SIZES").unwrap_or_else(|_| "1000000,10000000".into());
    text.split(',')
        .map(|size| size.trim().replace('_', ""))
        .filter(|size| !size.is_empty())
        .map(|size| size.parse().unwrap_or_else(|_| panic!("bad size `{size}`")))
        .collect()
}

fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("RFC 3339 instant")
        .to_utc()
}

fn window(from: &str, to: &str) -> Window {
    Window {
        start: instant(from),
        end: instant(to),
    }
}

/// One way of answering a query, for [`measure`].
type Engine<'a> = Box<dyn FnMut() -> Answer + 'a>;

/// Times several ways of answering one query: one untimed warm-up each, then `repeats` rounds
/// of one run each, interleaved so that a load spike from elsewhere on the machine hits them
/// alike. Per engine: the median in ms and the last run's answer.
fn measure<const N: usize>(repeats: usize, engines: [Engine<'_>; N]) -> [(f64, Answer); N] {
    let mut rounds = measure_rounds(repeats, engines);
    std::array::from_fn(|i| {
        let Rounds { times, answer, .. } = &mut rounds[i];
        (median(times), std::mem::take(answer))
    })
}

/// One engine's rounds: each round's time (ms, in round order), the untimed warm-up's time,
/// and the last answer.
#[derive(Default)]
struct Rounds {
    times: Vec<f64>,
    warm_up_ms: f64,
    answer: Answer,
}

/// Rounds for the in-memory Rust engines (Floe REST, the job in-process, polars): they take
/// milliseconds, and the same polars query's time moves by ±10% from round to round here, so
/// they get `FLOE_BENCH_RUST_REPEATS` rounds (default 21), never fewer than the others.
fn in_memory_rounds(repeats: usize) -> usize {
    env_usize("FLOE_BENCH_RUST_REPEATS", 21).max(repeats)
}

/// Each engine's rounds: a warm-up each, then `repeats` interleaved rounds.
fn measure_rounds<const N: usize>(repeats: usize, mut engines: [Engine<'_>; N]) -> [Rounds; N] {
    let mut rounds: [Rounds; N] = std::array::from_fn(|_| Rounds::default());
    for (run, engine) in engines.iter_mut().zip(&mut rounds) {
        let started = Instant::now();
        engine.answer = run();
        engine.warm_up_ms = started.elapsed().as_secs_f64() * 1e3;
    }
    for _ in 0..repeats {
        for (run, engine) in engines.iter_mut().zip(&mut rounds) {
            let started = Instant::now();
            engine.answer = run();
            engine.times.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    rounds
}

/// The median over rounds of `a / b`, each pair timed in the same round: a slow stretch of
/// the machine (a neighbour's load, writeback) hits both sides of a pair alike, where the
/// ratio of two medians taken from different rounds carries it.
fn paired_ratio(a: &[f64], b: &[f64]) -> f64 {
    let mut ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| a / b).collect();
    median(&mut ratios)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "n/a".into())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, usize::from)
}

fn mib(bytes: f64) -> f64 {
    bytes / 1048576.0
}

// ---------------------------------------------------------------------------------------
// Answers

fn cents(x: f64) -> String {
    format!("{x:.2}")
}

fn frame_cell(value: AnyValue<'_>) -> String {
    match value {
        AnyValue::Null => "null".into(),
        AnyValue::Float64(x) => cents(x),
        AnyValue::Float32(x) => cents(f64::from(x)),
        AnyValue::String(s) => s.to_owned(),
        AnyValue::StringOwned(s) => s.to_string(),
        other => other.to_string(),
    }
}

fn json_cell(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => cents(n.as_f64().unwrap_or(f64::NAN)),
        other => other.to_string(),
    }
}

fn frame_answer(frame: &DataFrame) -> Answer {
    (0..frame.height())
        .map(|row| {
            frame
                .columns()
                .iter()
                .map(|column| frame_cell(column.get(row).expect("cell")))
                .collect()
        })
        .collect()
}

/// A sync job's `result` rows (objects), cells in `columns` order.
fn rest_answer(body: &Value, columns: &[&str]) -> Answer {
    let rows = body["result"].as_array().expect("result rows");
    rows.iter()
        .map(|row| columns.iter().map(|c| json_cell(&row[*c])).collect())
        .collect()
}

/// engines.py's `rows`: arrays of cells.
fn python_answer(rows: &[Vec<Value>]) -> Answer {
    rows.iter()
        .map(|row| row.iter().map(json_cell).collect())
        .collect()
}

/// Every engine's answer to every query, checked against polars' at the end.
#[derive(Debug, Default)]
struct Answers {
    /// (query, engine) → answer.
    all: Vec<(String, String, Answer)>,
}

impl Answers {
    fn add(&mut self, query: &str, engine: &str, answer: Answer) {
        self.all.push((query.into(), engine.into(), answer));
    }

    /// Panics with the differing rows unless every engine agrees with `reference`.
    fn check(&self, reference: &str) -> usize {
        let mut problems = String::new();
        for (query, engine, answer) in &self.all {
            let expected = self
                .all
                .iter()
                .find(|(q, e, _)| q == query && e == reference)
                .map(|(_, _, a)| a)
                .unwrap_or_else(|| panic!("{query}: no {reference} answer"));
            if answer != expected {
                let _ = writeln!(
                    problems,
                    "{query}: {engine} disagrees with {reference}\n  {reference}: {expected:?}\n  {engine}: {answer:?}"
                );
            }
        }
        assert!(problems.is_empty(), "engines disagree:\n{problems}");
        self.all.len()
    }
}

// ---------------------------------------------------------------------------------------
// Queries

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Question {
    RegisteredUsers,
    TopCities,
    SalesPerCategory,
}

#[derive(Debug, Clone, Copy)]
struct Query {
    name: &'static str,
    question: Question,
    /// `None`: the whole table.
    window: Option<Window>,
}

/// What Floe materialises to answer a query: `job` over `window`, then `combine` over the
/// results of `job`'s partitions in time order.
#[derive(Debug, Clone, Copy)]
struct Materialisation {
    job: &'static str,
    window: Window,
    combine: fn(Vec<CachedResult>) -> PolarsResult<DataFrame>,
}

fn hour() -> Window {
    window("2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z")
}

fn weekend() -> Window {
    window("2024-01-06T00:00:00Z", "2024-01-08T00:00:00Z")
}

fn day() -> Window {
    window("2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z")
}

fn week() -> Window {
    window("2024-01-01T00:00:00Z", "2024-01-08T00:00:00Z")
}

fn queries() -> [Query; 6] {
    use Question::*;
    [
        ("Q1", RegisteredUsers, Some(hour())),
        ("Q2", TopCities, Some(weekend())),
        ("Q3", SalesPerCategory, Some(day())),
        ("Q1w", RegisteredUsers, None),
        ("Q2w", TopCities, None),
        ("Q3w", SalesPerCategory, None),
    ]
    .map(|(name, question, window)| Query {
        name,
        question,
        window,
    })
}

/// A time column value in `unit` since the epoch.
fn epoch_in(unit: TimeUnit, instant: DateTime<Utc>) -> i64 {
    match unit {
        TimeUnit::Milliseconds => instant.timestamp_millis(),
        TimeUnit::Microseconds => instant.timestamp_micros(),
        TimeUnit::Nanoseconds => instant.timestamp_nanos_opt().expect("in range"),
    }
}

fn ts_literal(unit: TimeUnit, instant: DateTime<Utc>) -> Expr {
    lit(epoch_in(unit, instant)).cast(DataType::Datetime(unit, Some(TimeZone::UTC)))
}

/// The top 10 cities by `sum(amount)`, sales descending then city, as engines.py orders them.
fn top_cities(rows: LazyFrame, amount: &str) -> LazyFrame {
    rows.group_by([col("city")])
        .agg([col(amount).sum().alias("sales")])
        .sort(
            ["sales", "city"],
            SortMultipleOptions::default()
                .with_order_descending_multi([true, false])
                .with_nulls_last(true),
        )
        .limit(10)
}

fn sales_per_category(rows: LazyFrame, amount: &str) -> LazyFrame {
    rows.group_by([col("category")])
        .agg([col(amount).sum().alias("sales")])
        .sort(["category"], SortMultipleOptions::default())
}

fn concat_frames(results: &[CachedResult]) -> PolarsResult<LazyFrame> {
    concat(
        results
            .iter()
            .map(|r| r.frame.clone().lazy())
            .collect::<Vec<_>>(),
        UnionArgs::default(),
    )
}

impl Query {
    fn label(&self) -> String {
        let what = match self.question {
            Question::RegisteredUsers => "distinct registering users",
            Question::TopCities => "top 10 cities by sales",
            Question::SalesPerCategory => "sales per category",
        };
        let span = match (self.question, self.window) {
            (_, None) => "whole week",
            (Question::RegisteredUsers, _) => "1 hour",
            (Question::TopCities, _) => "weekend",
            (Question::SalesPerCategory, _) => "1 day",
        };
        format!("{} {what}, {span}", self.name)
    }

    fn event(&self) -> &'static str {
        match self.question {
            Question::RegisteredUsers => "register",
            Question::TopCities | Question::SalesPerCategory => "purchase",
        }
    }

    /// The Floe job's `filter`: the event (the window is the input's).
    fn floe_filter(&self) -> String {
        format!("event = '{}'", self.event())
    }

    /// The built-in class and HOCON config of the sync job over the named object `events`.
    fn rest_job(&self) -> (&'static str, String) {
        let filter = self.floe_filter();
        let input = match self.window {
            None => "input = events".to_owned(),
            Some(window) => format!(
                "input {{ object = events, from = \"{}\", to = \"{}\" }}",
                window.start.to_rfc3339(),
                window.end.to_rfc3339()
            ),
        };
        match self.question {
            Question::RegisteredUsers => (
                "count_distinct",
                format!("{input}\ncolumn = user_id\nfilter = \"{filter}\""),
            ),
            Question::TopCities => (
                "top",
                format!(
                    "{input}\nkey = city\nmetric = \"sum(amount)\"\nmetric_name = sales\nn = 10\nfilter = \"{filter}\""
                ),
            ),
            Question::SalesPerCategory => (
                "group_by",
                format!(
                    "{input}\nkeys = [category]\naggregations {{ sales = \"sum(amount)\" }}\nfilter = \"{filter}\""
                ),
            ),
        }
    }

    /// The rows the REST job's input holds: the window's slice of the context's frame.
    fn floe_input(&self, frame: &DataFrame) -> DataFrame {
        match self.window {
            None => frame.clone(),
            Some(window) => window_rows(frame, "ts", &window, chrono_tz::Tz::UTC)
                .map_err(|e| e.to_string())
                .and_then(|rows| rows.collect().map_err(|e| e.to_string()))
                .expect("window of the named object"),
        }
    }

    /// The columns of the Floe job's result, in engines.py's order.
    fn floe_columns(&self) -> &'static [&'static str] {
        match self.question {
            Question::RegisteredUsers => &["distinct_count"],
            Question::TopCities => &["city", "sales"],
            Question::SalesPerCategory => &["category", "sales"],
        }
    }

    /// The query written directly in polars over `frame`, the window as typed literals.
    fn polars(&self, frame: &DataFrame, unit: TimeUnit) -> DataFrame {
        let mut predicate = col("event").eq(lit(self.event()));
        if let Some(window) = self.window {
            predicate = predicate
                .and(col("ts").gt_eq(ts_literal(unit, window.start)))
                .and(col("ts").lt(ts_literal(unit, window.end)));
        }
        self.polars_with(frame, predicate)
    }

    /// The query in polars over the rows Floe's job reads (the window's slice).
    fn polars_on_slice(&self, slice: &DataFrame) -> DataFrame {
        self.polars_with(slice, col("event").eq(lit(self.event())))
    }

    fn polars_with(&self, frame: &DataFrame, predicate: Expr) -> DataFrame {
        let rows = frame.clone().lazy().filter(predicate);
        match self.question {
            Question::RegisteredUsers => rows.select([col("user_id").drop_nulls().n_unique()]),
            Question::TopCities => top_cities(rows, "amount"),
            Question::SalesPerCategory => sales_per_category(rows, "amount"),
        }
        .collect()
        .expect("polars query")
    }

    /// The built-in job the REST request runs, built in-process.
    fn floe_job(&self) -> Arc<dyn Job> {
        let filter = self.floe_filter();
        let job: Arc<dyn Job> = match self.question {
            Question::RegisteredUsers => Arc::new(
                CountDistinct::new("user_id", Some(&filter))
                    .expect("count_distinct")
                    .count_only(),
            ),
            Question::TopCities => Arc::new(
                Top::new("city", "sum(amount)", 10, Some("sales"), Some(&filter)).expect("top"),
            ),
            Question::SalesPerCategory => Arc::new(
                GroupBy::new(
                    &["category".to_owned()],
                    &[("sales".to_owned(), "sum(amount)".to_owned())],
                    Some(&filter),
                )
                .expect("group_by"),
            ),
        };
        job
    }

    fn materialisation(&self) -> Materialisation {
        let (job, window, combine): (_, _, fn(Vec<CachedResult>) -> _) =
            match (self.question, self.window) {
                (Question::RegisteredUsers, Some(window)) => {
                    ("registered_users_hourly", window, |results| {
                        concat_frames(&results)?.collect()
                    })
                }
                (Question::RegisteredUsers, None) => {
                    ("registered_users_daily", week(), |results| {
                        // The daily partitions' distinct key sets, merged exactly.
                        let keys: Vec<LazyFrame> = results
                            .into_iter()
                            .filter_map(|r| r.state.map(DataFrame::lazy))
                            .collect();
                        concat(keys, UnionArgs::default())?
                            .select([col("user_id").drop_nulls().n_unique()])
                            .collect()
                    })
                }
                (Question::TopCities, Some(window)) => {
                    ("sales_per_city_daily", window, |results| {
                        top_cities(concat_frames(&results)?, "sales").collect()
                    })
                }
                (Question::TopCities, None) => ("top_cities_weekly", week(), |results| {
                    concat_frames(&results)?
                        .select([col("city"), col("sales")])
                        .collect()
                }),
                (Question::SalesPerCategory, window) => (
                    "sales_per_category_daily",
                    window.unwrap_or_else(week),
                    |results| sales_per_category(concat_frames(&results)?, "sales").collect(),
                ),
            };
        Materialisation {
            job,
            window,
            combine,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Floe over REST, in-process

/// `floe serve`'s router on 127.0.0.1:0 in this process, and a client runtime to call it.
struct InProcessServer {
    server: tokio::runtime::Runtime,
    client: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
    core: Arc<floe::jobserver::JobServer>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<Result<(), floe::server::ServeError>>>,
}

fn runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name(name)
        .build()
        .expect("runtime")
}

impl InProcessServer {
    fn start(dir: &Path) -> Self {
        let server = runtime("compare-server");
        let config = ServerConfig {
            pipelines: Path::new(REPO).join("pipelines"),
            data_dir: dir.join("data"),
            store: dir.join("server-store"),
            scheduler: SchedulerConfig {
                recurring: false,
                ..SchedulerConfig::default()
            },
            ..ServerConfig::default()
        };
        // The `select` loader stores the whole table as its job's result, on purpose: above
        // the default per-result limit.
        let mut config = config;
        config.core.limits.max_result_bytes = LARGE_RESULTS.0;
        config.core.limits.max_job_results_bytes = LARGE_RESULTS.1;
        // Contexts in the server's process, as when the figures of docs/benchmarks.md were
        // taken; the worker processes' cost is measured by benches/jobserver.rs.
        config.core.workers.enabled = false;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let state = build_state(config, JobRegistry::new(), clock, server.handle().clone())
            .expect("server state");
        let listener = server
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let core = state.core.clone();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let served = server.spawn(serve_on(listener, state, async {
            let _ = stop.await;
        }));
        InProcessServer {
            server,
            client: runtime("compare-client"),
            http: reqwest::Client::new(),
            base,
            core,
            shutdown: Some(shutdown),
            served: Some(served),
        }
    }

    fn post(&self, path: &str, body: &str) -> (u16, Value) {
        self.client.block_on(async {
            let response = self
                .http
                .post(format!("{}{path}", self.base))
                .body(body.to_owned())
                .send()
                .await
                .expect("request");
            let status = response.status().as_u16();
            (status, response.json().await.expect("json body"))
        })
    }

    fn get(&self, path: &str) -> Value {
        self.client.block_on(async {
            let response = self.http.get(format!("{}{path}", self.base)).send().await;
            response.expect("request").json().await.expect("json body")
        })
    }

    /// A sync job in `context` (`None`: an ad-hoc context); panics unless it finished.
    fn sync_job(&self, class: &str, context: Option<&str>, config: &str) -> Value {
        let context = context.map_or_else(String::new, |name| format!("&context={name}"));
        let path = format!("/jobs?classPath={class}{context}&sync=true&timeout=600");
        let (status, body) = self.post(&path, config);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "FINISHED", "{body}");
        body
    }

    /// The DataFrame a context holds as a named object.
    fn named_object(&self, context: &str, name: &str) -> DataFrame {
        self.core
            .context(context)
            .and_then(|context| context.objects.get(name))
            .expect("named object")
            .frame
            .as_ref()
            .clone()
    }

    fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(served) = self.served.take() {
            let _ = self.server.block_on(served);
        }
    }
}

/// `limits.max_result_bytes` and `limits.max_job_results_bytes` for the servers here: a
/// `select` of the whole table (840 MiB of Arrow at 10M rows) is stored as a job result.
const LARGE_RESULTS: (u64, u64) = (4 << 30, 16 << 30);

/// The whole week of the `events` source as the named object `events` of the context.
const EVENTS_OBJECT: &str = r#"input { object = events, source = events, app = shop, from = "2024-01-01", to = "2024-01-08" }"#;

/// How the named object gets into the context: a sync job whose input creates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loader {
    /// `select`: the job's result is the whole table, stored as every job result is.
    Select,
    /// `count_distinct` of `user_id`: the same object, a one-row result.
    Count,
}

impl Loader {
    fn job(self) -> (&'static str, String) {
        match self {
            Loader::Select => ("select", EVENTS_OBJECT.to_owned()),
            Loader::Count => (
                "count_distinct",
                format!("{EVENTS_OBJECT}\ncolumn = user_id"),
            ),
        }
    }
}

/// Creates a context and loads the events into it: the load's ms, rows and Arrow bytes.
fn load_context(
    loader: Loader,
    post: impl Fn(&str, &str) -> (u16, Value),
    get: impl Fn(&str) -> Value,
) -> (f64, u64, u64) {
    let path = format!("/contexts/{CONTEXT}?worker-threads=2&queue-length=256&memory-budget=16g");
    let (status, body) = post(&path, "");
    assert_eq!(status, 200, "context: {body}");
    let (class, config) = loader.job();
    let started = Instant::now();
    let (status, body) = post(
        &format!("/jobs?classPath={class}&context={CONTEXT}&sync=true&timeout=600"),
        &config,
    );
    assert!(
        status == 200 && body["status"] == "FINISHED",
        "load: {body}"
    );
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let context = get(&format!("/contexts/{CONTEXT}"));
    let object = &context["namedObjects"][0];
    let rows = object["rows"].as_u64().expect("rows");
    let bytes = object["bytes"].as_u64().expect("bytes");
    (load_ms, rows, bytes)
}

// ---------------------------------------------------------------------------------------
// Floe materialising the pipeline

fn load_pipeline(path: &Path) -> Pipeline {
    floe::pipeline::load_file(path, &JobRegistry::new())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn materializer(store: &Store, cache_bytes: usize, data_dir: &Path) -> Materializer {
    Materializer::new(
        store.clone(),
        Arc::new(ResultCache::new(cache_bytes)),
        data_dir.to_path_buf(),
        Arc::new(SystemClock),
    )
}

/// Runs `request` as `floe run` does (a scheduler of its own, one run at a time, as the
/// figures were measured).
fn run_alone(
    materializer: &Materializer,
    pipeline: &Pipeline,
    request: &RunRequest,
) -> Result<floe::materialize::RunReport, floe::scheduler::ManualRunError> {
    floe::scheduler::run_alone(
        materializer.clone(),
        Arc::new(pipeline.clone()),
        request,
        1,
        &mut |_| {},
    )
}

/// Recomputes `plan.job` over `plan.window` and everything it reads (`force`), then combines
/// the job's partitions into the answer.
fn materialise(
    materializer: &Materializer,
    pipeline: &Pipeline,
    plan: &Materialisation,
) -> DataFrame {
    let request = RunRequest {
        jobs: Some(vec![plan.job.to_owned()]),
        from: plan.window.start,
        to: plan.window.end,
        force: true,
    };
    let report = run_alone(materializer, pipeline, &request).expect("materialise");
    assert!(report.is_success() && report.fresh == 0, "{report:?}");
    let results = report
        .runs
        .iter()
        .filter(|run| run.key.job == plan.job)
        .map(|run| materializer.results().load(&run.key).expect("result"))
        .collect();
    (plan.combine)(results).expect("combine")
}

/// Recomputes one partition of `job` alone (`force`), reading upstream results as they are.
fn recompute_partition(
    materializer: &Materializer,
    pipeline: &Pipeline,
    job: &str,
    window: &Window,
) -> DataFrame {
    let def = pipeline.job(job).expect("job");
    match materializer.attempt_partition(pipeline, def, window, true, &|| false) {
        PartitionAttempt::Done(RunOutcome::Computed { .. }) => {}
        other => panic!("{job}: {other:?}"),
    }
    let key = floe::store::RunKey {
        pipeline: pipeline.name.clone(),
        job: job.to_owned(),
        partition_start: window.start,
    };
    materializer.results().load(&key).expect("result").frame
}

/// `sales_per_category_daily` read straight from the `events` source, as a one-job pipeline.
const DIRECT_PIPELINE: &str = "\
version: 1
name: shop_direct
timezone: UTC
start: 2024-01-01T00:00:00Z
schedule:
  enabled: false
sources:
  events:
    format: parquet
    path: events/date={date}/hour={hour}/*.parquet
    time_column: ts
jobs:
  sales_per_category_daily:
    grain: daily
    from: events
    group_by:
      keys: [category]
      filter: event = 'purchase'
      aggregations:
        sales: sum(amount)
        orders: count(*)
";

#[derive(Debug, Clone, Copy)]
struct CacheGain {
    /// From the 24 hourly results in the in-memory result cache.
    cached_ms: f64,
    /// From the 24 hourly results in sled (empty result cache: IPC decoded each run).
    sled_ms: f64,
    /// From the source's 24 Parquet files.
    source_ms: f64,
}

fn cache_gain(dir: &Path, shop: &Pipeline, store: &Store, repeats: usize) -> CacheGain {
    let data_dir = dir.join("data");
    let direct_path = dir.join("shop_direct.yaml");
    std::fs::write(&direct_path, DIRECT_PIPELINE).expect("write variant pipeline");
    let direct = load_pipeline(&direct_path);
    let job = "sales_per_category_daily";
    let day = day();
    let warm = materializer(store, 512 << 20, &data_dir);
    // The hourly partitions, fresh and cached, before anything is timed.
    let request = RunRequest {
        jobs: Some(vec![job.to_owned()]),
        from: day.start,
        to: day.end,
        force: false,
    };
    assert!(
        run_alone(&warm, shop, &request)
            .expect("hourly")
            .is_success()
    );
    let [
        (cached_ms, from_cache),
        (sled_ms, from_sled),
        (source_ms, from_source),
    ] = measure(
        repeats,
        [
            Box::new(|| frame_answer(&recompute_partition(&warm, shop, job, &day))),
            Box::new(|| {
                let empty_cache = materializer(store, 0, &data_dir);
                frame_answer(&recompute_partition(&empty_cache, shop, job, &day))
            }),
            Box::new(|| frame_answer(&recompute_partition(&warm, &direct, job, &day))),
        ],
    );
    assert_eq!(from_cache, from_source, "cached vs source");
    assert_eq!(from_sled, from_source, "sled vs source");
    CacheGain {
        cached_ms,
        sled_ms,
        source_ms,
    }
}

// ---------------------------------------------------------------------------------------
// The Rust engines of one size

#[derive(Debug, Clone, Copy, Default)]
struct RustTimes {
    rest_ms: f64,
    /// Floe REST's warm-up: the first time the query is asked, when the object may have no
    /// selection for its filter yet (`floe::frames::selection`).
    rest_first_ms: f64,
    materialise_ms: f64,
    polars_ms: f64,
    /// Where the REST time goes: the job kind without the server on the window's slice (slicing
    /// included, no selections kept), and polars' query on that slice.
    job_in_process_ms: f64,
    polars_slice_ms: f64,
    /// Floe REST / polars: the median of the ratios of the rounds (`paired_ratio`).
    rest_vs_polars: f64,
}

#[derive(Debug)]
struct RustRun {
    rows: u64,
    arrow_bytes: u64,
    context_load_ms: f64,
    times: BTreeMap<&'static str, RustTimes>,
    adhoc_ms: f64,
    cache_gain: CacheGain,
}

/// Q1 as a sync job without a context: Floe creates an ad-hoc one and reads the hour's files.
const ADHOC_Q1: &str = "input { source = events, app = shop, from = \"2024-01-01T10:00:00Z\", to = \"2024-01-01T11:00:00Z\" }\ncolumn = user_id\nfilter = \"event = 'register'\"";

fn time_unit(frame: &DataFrame) -> TimeUnit {
    match frame.column("ts").expect("ts column").dtype() {
        DataType::Datetime(unit, _) => *unit,
        other => panic!("ts is {other}, not a datetime"),
    }
}

fn run_rust_engines(dir: &Path, repeats: usize, answers: &mut Answers) -> RustRun {
    let server = InProcessServer::start(dir);
    eprintln!("floe: loading the week into context `{CONTEXT}` …");
    let (context_load_ms, rows, arrow_bytes) = load_context(
        Loader::Count,
        |path, body| server.post(path, body),
        |path| server.get(path),
    );
    let frame = server.named_object(CONTEXT, "events");
    let unit = time_unit(&frame);

    let shop = load_pipeline(&Path::new(REPO).join("pipelines/shop.yaml"));
    let store = Store::open(&dir.join("store")).expect("store");
    let pipeline_runs = materializer(&store, 512 << 20, &dir.join("data"));

    let mut times = BTreeMap::new();
    for query in queries() {
        let (class, config) = query.rest_job();
        let job = query.floe_job();
        let plan = query.materialisation();
        let slice = query.floe_input(&frame);
        // Materialising writes to sled and leaves its flush and the kernel's writeback running
        // after it returns, so it is timed in its own loop: interleaved, it slowed whichever
        // engine ran next (the REST job) by up to 20 ms.
        let [mut rest, mut polars, mut in_process, mut on_slice] = measure_rounds(
            in_memory_rounds(repeats),
            [
                Box::new(|| {
                    let body = server.sync_job(class, Some(CONTEXT), &config);
                    rest_answer(&body, query.floe_columns())
                }),
                Box::new(|| frame_answer(&query.polars(&frame, unit))),
                Box::new(|| {
                    let input = query.floe_input(&frame);
                    frame_answer(&run_in_process(job.as_ref(), &input))
                }),
                Box::new(|| frame_answer(&query.polars_on_slice(&slice))),
            ],
        );
        let [materialised] = measure(
            repeats,
            [Box::new(|| {
                frame_answer(&materialise(&pipeline_runs, &shop, &plan))
            })],
        );
        // Before `median` sorts the rounds' times in place.
        let rest_vs_polars = paired_ratio(&rest.times, &polars.times);
        let measured = RustTimes {
            rest_vs_polars,
            rest_ms: median(&mut rest.times),
            rest_first_ms: rest.warm_up_ms,
            polars_ms: median(&mut polars.times),
            job_in_process_ms: median(&mut in_process.times),
            polars_slice_ms: median(&mut on_slice.times),
            materialise_ms: materialised.0,
        };
        eprintln!("floe: {:4} {measured:?}", query.name);
        times.insert(query.name, measured);
        for (engine, answer) in [
            ("floe_rest", rest.answer),
            ("polars", polars.answer),
            ("floe_job_in_process", in_process.answer),
            ("polars_on_slice", on_slice.answer),
            ("floe_materialise", materialised.1),
        ] {
            answers.add(query.name, engine, answer);
        }
    }

    let [(adhoc_ms, adhoc_answer)] = measure(
        repeats,
        [Box::new(|| {
            let body = server.sync_job("count_distinct", None, ADHOC_Q1);
            rest_answer(&body, &["distinct_count"])
        })],
    );
    answers.add("Q1", "floe_adhoc", adhoc_answer);
    eprintln!("floe: ad-hoc Q1 job {adhoc_ms:.1} ms");
    let cache_gain = cache_gain(dir, &shop, &store, repeats);
    eprintln!("floe: cache gain {cache_gain:?}");
    drop(frame);
    server.stop();
    RustRun {
        rows,
        arrow_bytes,
        context_load_ms,
        times,
        adhoc_ms,
        cache_gain,
    }
}

// ---------------------------------------------------------------------------------------
// DuckDB and Spark: benches/compare/engines.py

#[derive(Debug, Deserialize)]
struct PythonReport {
    versions: BTreeMap<String, Value>,
    load: BTreeMap<String, Vec<f64>>,
    setup_ms: BTreeMap<String, f64>,
    results: Vec<PythonResult>,
    spark_session_start_ms: Option<f64>,
    spark_cold_q1_ms: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct PythonResult {
    engine: String,
    query: String,
    median_ms: f64,
    rows: Vec<Vec<Value>>,
}

impl PythonReport {
    fn median_ms(&self, engine: &str, query: &str) -> Option<f64> {
        self.results
            .iter()
            .find(|r| r.engine == engine && r.query == query)
            .map(|r| r.median_ms)
    }
}

fn run_engines_py(
    python: &str,
    data_dir: &Path,
    repeats: usize,
    engines: &str,
) -> Result<PythonReport, String> {
    let mut command = Command::new(python);
    command
        .arg(Path::new(REPO).join("benches/compare/engines.py"))
        .arg("--data")
        .arg(data_dir)
        .args(["--repeats", &repeats.to_string(), "--check"])
        .stderr(Stdio::inherit());
    if !engines.is_empty() {
        command.args(["--engines", engines]);
    }
    let output = command
        .output()
        .map_err(|e| format!("cannot run engines.py: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().rev().find(|line| !line.trim().is_empty());
    match last.map(serde_json::from_str::<PythonReport>) {
        Some(Ok(report)) => Ok(report),
        Some(Err(e)) => Err(format!(
            "engines.py printed no report ({e}; {})",
            output.status
        )),
        None => Err(format!("engines.py printed nothing ({})", output.status)),
    }
}

/// DuckDB and Spark over `data_dir`: the report, or a note saying why not.
fn python_engines(data_dir: &Path, repeats: usize) -> Result<PythonReport, String> {
    let engines = std::env::var("FLOE_BENCH_PYTHON_ENGINES").unwrap_or_default();
    if engines == "none" {
        return Err("skipped (FLOE_BENCH_PYTHON_ENGINES=none)".into());
    }
    let python = python_venv()?;
    eprintln!("engines.py: DuckDB and Spark over {} …", data_dir.display());
    match run_engines_py(&python, data_dir, repeats, &engines) {
        Ok(report) => Ok(report),
        Err(full) if engines.is_empty() => {
            eprintln!("engines.py: {full}; retrying with DuckDB only");
            run_engines_py(&python, data_dir, repeats, "duckdb_files,duckdb_memory")
                .map_err(|e| format!("{full}; DuckDB only: {e}"))
        }
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------
// The real `floe serve`, for its memory

/// `floe serve` as a child process; killed if dropped while running.
struct ServeChild {
    child: Child,
    base: String,
}

impl ServeChild {
    fn start(dir: &Path, store: &Path) -> Self {
        // As in the in-process server: the `select` loader's result is the whole table.
        let config = dir.join("serve-limits.yaml");
        std::fs::write(
            &config,
            format!(
                "limits:\n  max_result_bytes: {}\n  max_job_results_bytes: {}\n",
                LARGE_RESULTS.0, LARGE_RESULTS.1
            ),
        )
        .expect("write the server's config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_floe"))
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--bind", "127.0.0.1:0", "--pipelines"])
            .arg(Path::new(REPO).join("pipelines"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--store")
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn floe serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let base = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| {
                line.split_once("listening on ")
                    .map(|(_, url)| url.trim().to_owned())
            })
            .expect("floe serve did not say where it listens");
        // Keep draining its logs so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("[floe serve] {line}");
            }
        });
        ServeChild { child, base }
    }

    /// A field of /proc/<pid>/status, in KiB.
    fn status_kib(&self, field: &str) -> u64 {
        proc_status_kib(&self.child.id().to_string(), field)
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let status = self.child.wait().expect("wait for floe serve");
        eprintln!("floe serve: exited with {status}");
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Memory {
    arrow_bytes: u64,
    idle_rss_kib: u64,
    peak_kib: u64,
    rss_kib: u64,
    /// VmRSS split after the load: anonymous memory (data) and file pages (the binary).
    rss_anon_kib: u64,
    rss_file_kib: u64,
    load_ms: f64,
}

fn serve_memory(dir: &Path, loader: Loader) -> Memory {
    let store = dir.join(format!("serve-store-{loader:?}"));
    let serve = ServeChild::start(dir, &store);
    let http = reqwest::Client::new();
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let post = |path: &str, body: &str| {
        client.block_on(async {
            let response = http
                .post(format!("{}{path}", serve.base))
                .body(body.to_owned())
                .send()
                .await
                .expect("request");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json"))
        })
    };
    let get = |path: &str| {
        client.block_on(async {
            let response = http.get(format!("{}{path}", serve.base)).send().await;
            response
                .expect("request")
                .json::<Value>()
                .await
                .expect("json")
        })
    };
    // Let start-up settle before reading the idle figure.
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss_kib = serve.status_kib("VmRSS");
    let (load_ms, _, arrow_bytes) = load_context(loader, post, get);
    let memory = Memory {
        arrow_bytes,
        idle_rss_kib,
        peak_kib: serve.status_kib("VmHWM"),
        rss_kib: serve.status_kib("VmRSS"),
        rss_anon_kib: serve.status_kib("RssAnon"),
        rss_file_kib: serve.status_kib("RssFile"),
        load_ms,
    };
    serve.terminate();
    memory
}

impl Memory {
    fn ratio(&self) -> f64 {
        self.peak_kib as f64 * 1024.0 / self.arrow_bytes as f64
    }

    fn describe(&self) -> String {
        format!(
            "loaded in {:.0} ms; VmHWM {:.0} MiB, VmRSS {:.0} MiB (anonymous {:.0}, file-backed \
             {:.0}; idle before the load {:.0} MiB): peak/Arrow **{:.2}×**",
            self.load_ms,
            kib_to_mib(self.peak_kib),
            kib_to_mib(self.rss_kib),
            kib_to_mib(self.rss_anon_kib),
            kib_to_mib(self.rss_file_kib),
            kib_to_mib(self.idle_rss_kib),
            self.ratio()
        )
    }
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------
// Report

#[derive(Debug)]
struct SizeReport {
    rust: RustRun,
    python: Result<PythonReport, String>,
    /// `floe serve` with the object loaded by a job with a one-row result (the measure), and
    /// by a `select` job (what storing a whole-table job result costs).
    memory: Memory,
    memory_select_load: Memory,
    load_start: String,
    load_end: String,
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "—".into(), |v| format!("{v:.1}"))
}

fn ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "—".into(), |v| format!("{v:.2}×"))
}

fn min_of(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl SizeReport {
    fn python_ms(&self, engine: &str, query: &str) -> Option<f64> {
        self.python.as_ref().ok()?.median_ms(engine, query)
    }

    fn duckdb_best(&self, query: &str) -> Option<f64> {
        min_of(
            self.python_ms("duckdb_files", query),
            self.python_ms("duckdb_memory", query),
        )
    }

    fn spark_warm_best(&self, query: &str) -> Option<f64> {
        min_of(
            self.python_ms("spark_warm_files", query),
            self.python_ms("spark_warm_cached", query),
        )
    }

    fn floe_ms(&self, query: &str) -> RustTimes {
        self.rust.times.get(query).copied().unwrap_or_default()
    }

    fn session_start_ms(&self) -> Option<f64> {
        self.python.as_ref().ok()?.spark_session_start_ms
    }

    fn cache_ratio(&self) -> f64 {
        self.rust.cache_gain.source_ms / self.rust.cache_gain.cached_ms
    }

    fn memory_ratio(&self) -> f64 {
        self.memory.ratio()
    }

    fn write(&self, out: &mut String, repeats: usize) {
        let rows = with_commas(self.rust.rows as usize);
        let _ = writeln!(
            out,
            "\n## {rows} rows ({:.0} MiB of Arrow), medians of {repeats} after a warm-up ({} for Floe REST, the job in-process and polars)\n",
            mib(self.rust.arrow_bytes as f64),
            in_memory_rounds(repeats)
        );
        let _ = writeln!(
            out,
            "Load average (1/5/15 min): {} at the start of this size, {} at its end.\n",
            self.load_start, self.load_end
        );
        self.write_table(out);
        self.write_breakdown(out);
        self.write_setup(out);
        self.write_adhoc(out);
        let gain = self.rust.cache_gain;
        let _ = writeln!(
            out,
            "- **Cache gain**: `sales_per_category_daily` for 2024-01-02 recomputed from its 24 \
             cached `purchases_hourly` partitions in {:.1} ms (from sled with an empty result \
             cache: {:.1} ms), from the `events` source's 24 Parquet files in {:.1} ms: \
             source/cached **{:.1}×** (from sled: {:.1}×; target ≥ 5×).",
            gain.cached_ms,
            gain.sled_ms,
            gain.source_ms,
            self.cache_ratio(),
            gain.source_ms / gain.sled_ms
        );
        let _ = writeln!(
            out,
            "- **Memory** of `floe serve` holding the {rows} rows ({:.0} MiB of Arrow, string \
             views included) in a context, loaded by a `count_distinct` job whose input creates \
             the named object (a one-row result): {} (target ≤ 1.5×). Loaded instead by a \
             `select` job, whose result (the whole table) is stored as every job's is (above \
             8 MiB, in its own Arrow file beside sled): {}.",
            mib(self.memory.arrow_bytes as f64),
            self.memory.describe(),
            self.memory_select_load.describe()
        );
    }

    fn write_table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "| query | Floe REST ms | Floe materialise ms | polars ms | DuckDB files ms | DuckDB memory ms | Spark warm (files) ms | Spark warm (cached) ms | Floe/polars | Floe/DuckDB best | Spark warm/Floe |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
        for query in queries() {
            let floe = self.floe_ms(query.name);
            let duckdb = self.duckdb_best(query.name);
            let spark = self.spark_warm_best(query.name);
            let _ = writeln!(
                out,
                "| {} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
                query.label(),
                floe.rest_ms,
                floe.materialise_ms,
                floe.polars_ms,
                ms(self.python_ms("duckdb_files", query.name)),
                ms(self.python_ms("duckdb_memory", query.name)),
                ms(self.python_ms("spark_warm_files", query.name)),
                ms(self.python_ms("spark_warm_cached", query.name)),
                ratio(Some(floe.rest_vs_polars)),
                ratio(duckdb.map(|d| floe.rest_ms / d)),
                spark.map_or_else(|| "—".into(), |s| format!("{:.0}×", s / floe.rest_ms)),
            );
        }
        out.push('\n');
    }

    /// Floe REST's time split: the job kind without the server, and polars on the same slice.
    fn write_breakdown(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "Where Floe REST's time goes: its first ask (the warm-up, which may build the \
             object's selection for the query's filter), the same built-in job run in-process \
             without the server and without selections (cutting the window's slice included), \
             and polars' query on that slice.\n"
        );
        let _ = writeln!(
            out,
            "| query | Floe REST ms | Floe REST first ask ms | job in-process, no selection ms | polars on the slice ms | polars ms |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for query in queries() {
            let t = self.floe_ms(query.name);
            let _ = writeln!(
                out,
                "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                query.name,
                t.rest_ms,
                t.rest_first_ms,
                t.job_in_process_ms,
                t.polars_slice_ms,
                t.polars_ms,
            );
        }
        out.push('\n');
    }

    fn write_setup(&self, out: &mut String) {
        let setup = |key: &str| {
            ms(self
                .python
                .as_ref()
                .ok()
                .and_then(|p| p.setup_ms.get(key).copied()))
        };
        let _ = writeln!(
            out,
            "- Loading the whole table into memory (untimed above): Floe context {:.0} ms, \
             DuckDB table {} ms, Spark cache {} ms.",
            self.rust.context_load_ms,
            setup("duckdb_memory_load"),
            setup("spark_cache_load")
        );
        if let Err(note) = &self.python {
            let _ = writeln!(out, "- **DuckDB and Spark did not run**: {note}.");
        }
    }

    fn write_adhoc(&self, out: &mut String) {
        let cold = self.python.as_ref().ok().and_then(|p| p.spark_cold_q1_ms);
        let start = self.session_start_ms();
        let _ = writeln!(
            out,
            "- **Ad-hoc job**: Floe Q1 as a sync job without a context (an ad-hoc context reading \
             the hour's files) {:.1} ms; Spark session start {} ms and cold Q1 (a fresh process: \
             python, pyspark, JVM, session, query) {} ms: session start / Floe ad-hoc **{}** \
             (target ≥ 100×), cold Q1 / Floe ad-hoc {}.",
            self.rust.adhoc_ms,
            ms(start),
            ms(cold),
            start.map_or_else(|| "—".into(), |s| format!("{:.0}×", s / self.rust.adhoc_ms)),
            cold.map_or_else(|| "—".into(), |c| format!("{:.0}×", c / self.rust.adhoc_ms)),
        );
    }

    /// One bar chart per windowed query: ms per engine.
    fn write_charts(&self, out: &mut String) {
        let rows = with_commas(self.rust.rows as usize);
        let _ = writeln!(
            out,
            "\n## Chart: Q1–Q3 at {rows} rows (ms, lower is better)\n"
        );
        for query in queries().into_iter().filter(|q| q.window.is_some()) {
            let floe = self.floe_ms(query.name);
            let bars: Vec<(&str, Option<f64>)> = vec![
                ("Floe REST", Some(floe.rest_ms)),
                ("Floe materialise", Some(floe.materialise_ms)),
                ("polars", Some(floe.polars_ms)),
                ("DuckDB files", self.python_ms("duckdb_files", query.name)),
                ("DuckDB memory", self.python_ms("duckdb_memory", query.name)),
                (
                    "Spark files",
                    self.python_ms("spark_warm_files", query.name),
                ),
                (
                    "Spark cached",
                    self.python_ms("spark_warm_cached", query.name),
                ),
            ];
            let (names, values): (Vec<String>, Vec<String>) = bars
                .into_iter()
                .filter_map(|(name, value)| Some((format!("\"{name}\""), format!("{:.1}", value?))))
                .unzip();
            let _ = writeln!(
                out,
                "```mermaid\nxychart-beta\n    title \"{}, {rows} rows\"\n    x-axis [{}]\n    y-axis \"ms\"\n    bar [{}]\n```\n",
                query.label(),
                names.join(", "),
                values.join(", ")
            );
        }
    }

    /// The targets, judged on this size.
    fn write_targets(&self, out: &mut String) {
        let rows = with_commas(self.rust.rows as usize);
        let verdict = |met: Option<bool>| match met {
            Some(true) => "**met**",
            Some(false) => "**not met**",
            None => "not measured",
        };
        let per_query = |f: &dyn Fn(&Query) -> Option<f64>| -> String {
            queries()
                .iter()
                .map(|q| {
                    format!(
                        "{} {}",
                        q.name,
                        f(q).map_or_else(|| "—".into(), |v| format!("{v:.2}×"))
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let all = |f: &dyn Fn(&Query) -> Option<f64>, ok: &dyn Fn(f64) -> bool| {
            let values: Option<Vec<f64>> = queries().iter().map(f).collect();
            values.map(|v| v.into_iter().all(ok))
        };
        let vs_polars = |q: &Query| Some(self.floe_ms(q.name).rest_vs_polars);
        let vs_duckdb = |q: &Query| {
            self.duckdb_best(q.name)
                .map(|d| self.floe_ms(q.name).rest_ms / d)
        };
        let spark_gain = |q: &Query| {
            self.spark_warm_best(q.name)
                .map(|s| s / self.floe_ms(q.name).rest_ms)
        };
        let adhoc = self.session_start_ms().map(|s| s / self.rust.adhoc_ms);
        let _ = writeln!(out, "\n## Targets at {rows} rows\n");
        let _ = writeln!(
            out,
            "- Floe REST within 1.1× of polars: {} ({}).",
            verdict(all(&vs_polars, &|r| r <= 1.1)),
            per_query(&vs_polars)
        );
        let _ = writeln!(
            out,
            "- Floe REST no slower than DuckDB's best mode: {} ({}).",
            verdict(all(&vs_duckdb, &|r| r <= 1.0)),
            per_query(&vs_duckdb)
        );
        let _ = writeln!(
            out,
            "- Floe REST ≥ 50× faster than Spark warm (its best mode): {} ({}).",
            verdict(all(&spark_gain, &|r| r >= 50.0)),
            per_query(&spark_gain)
        );
        let _ = writeln!(
            out,
            "- Floe ad-hoc job < 1/100 of Spark's session start: {} ({}).",
            verdict(adhoc.map(|r| r >= 100.0)),
            adhoc.map_or_else(|| "—".into(), |r| format!("{r:.0}×"))
        );
        let _ = writeln!(
            out,
            "- Cache gain ≥ 5×: {} ({:.1}×).",
            verdict(Some(self.cache_ratio() >= 5.0)),
            self.cache_ratio()
        );
        let _ = writeln!(
            out,
            "- `floe serve` peak memory ≤ 1.5× the Arrow size: {} ({:.2}×).",
            verdict(Some(self.memory_ratio() <= 1.5)),
            self.memory_ratio()
        );
    }
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "n/a".into())
}

/// The polars version Cargo.lock pins.
fn polars_version() -> String {
    let lock = std::fs::read_to_string(Path::new(REPO).join("Cargo.lock")).unwrap_or_default();
    lock.split("[[package]]")
        .find(|package| package.contains("\nname = \"polars\"\n"))
        .and_then(|package| package.lines().find_map(|l| l.strip_prefix("version = ")))
        .map_or_else(|| "n/a".into(), |v| v.trim_matches('"').to_owned())
}

fn versions_line(python: Option<&PythonReport>) -> String {
    let mut line = format!(
        "floe {}, polars {}, {}",
        env!("CARGO_PKG_VERSION"),
        polars_version(),
        command_line("rustc", &["--version"])
    );
    if let Some(report) = python {
        for key in ["duckdb", "pyspark", "java", "python"] {
            let value = report
                .versions
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or("n/a");
            let _ = write!(line, ", {key} {value}");
        }
    }
    line
}

fn run_size(rows: usize, repeats: usize, answers: &mut Answers) -> SizeReport {
    let load_start = load_average();
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    eprintln!(
        "== {} rows: generating into {} …",
        with_commas(rows),
        data_dir.display()
    );
    write_sample_week(rows, &data_dir);
    let rust = run_rust_engines(dir.path(), repeats, answers);
    let python = python_engines(&data_dir, repeats);
    match &python {
        Ok(report) => {
            for result in &report.results {
                answers.add(&result.query, &result.engine, python_answer(&result.rows));
            }
            eprintln!("engines.py: load average {:?}", report.load);
        }
        Err(note) => eprintln!("engines.py: NOT RUN: {note}"),
    }
    eprintln!("floe serve: measuring memory …");
    let memory = serve_memory(dir.path(), Loader::Count);
    let memory_select_load = serve_memory(dir.path(), Loader::Select);
    eprintln!("floe serve: {memory:?}, loaded by a select: {memory_select_load:?}");
    let checked = answers.check("polars");
    eprintln!(
        "== {} rows: {checked} answers agree with polars",
        with_commas(rows)
    );
    *answers = Answers::default();
    SizeReport {
        rust,
        python,
        memory,
        memory_select_load,
        load_start,
        load_end: load_average(),
    }
}

fn main() {
    let sizes = sizes();
    let repeats = env_usize("FLOE_BENCH_REPEATS", 5).max(1);
    let load_start = load_average();
    let cpu_start = CpuTicks::now();
    let started = chrono::Utc::now();
    let mut reports = Vec::new();
    let mut answers = Answers::default();
    for &rows in &sizes {
        reports.push(run_size(rows, repeats, &mut answers));
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Floe against polars, DuckDB and Spark (`cargo bench --bench compare`)\n"
    );
    let _ = writeln!(
        out,
        "Run {} on {} cores; load average (1/5/15 min) {} at the start, {} at the end; {}. {}.",
        started.format("%Y-%m-%d %H:%M UTC"),
        cores(),
        load_start,
        load_average(),
        steal_line(cpu_start),
        versions_line(reports.iter().find_map(|r| r.python.as_ref().ok()))
    );
    let _ = writeln!(
        out,
        "\nFloe REST: sync job over loopback HTTP on a warm context holding the week (after the \
         warm-up, the object keeps the rows the query's filter selects: a repeated question); Floe \
         materialise: the pipeline partitions answering the query recomputed from the files \
         (`force`, upstream included) and committed; polars: the same query on the context's \
         DataFrame in-process; DuckDB files/memory and Spark warm files/cached: \
         benches/compare/engines.py. Ratios use Floe REST; Floe/polars is the median of the \
         rounds' ratios (each round times both back to back). Every engine's answers were \
         checked equal to polars'."
    );
    for report in &reports {
        report.write(&mut out, repeats);
    }
    if let Some(largest) = reports.iter().max_by_key(|r| r.rust.rows) {
        largest.write_charts(&mut out);
        largest.write_targets(&mut out);
    }
    print!("{out}");
}
