//! Job server benchmark (`cargo bench --bench jobserver`), recorded in docs/benchmarks.md.
//!
//! Q1–Q3 run first, the trivial-job load last (see `main`).
//!
//! 1. Round trip of a trivial sync job (`SELECT 1` through `POST /jobs?sync=true`) on a warm
//!    context over loopback, at 1, 16 and 64 concurrent keep-alive clients: p50, p99, jobs/s;
//!    against a server without tokens and, round by round in the same run, against a second
//!    server with authentication on (a `run` token sent as `Authorization: Bearer`), so the
//!    token check's cost is the median of the rounds' p50 differences.
//! 2. Q1–Q3 as sync jobs on a context holding the sample events as a named object, against the
//!    same queries written directly in polars on the same in-memory frame, in the same process:
//!    the ratio is Floe's whole overhead (HTTP, planning, queueing, result storage, JSON).
//!
//! Both run on two contexts of the same server, round by round: `bench` in the server's
//! process and `benchw` in a worker process of its own (the default of `floe serve`), so the
//! worker's cost (a call over its pipes, the result back as Arrow IPC) is measured against
//! in-process in the same run. This binary serves as the worker process too
//! (`floe::cli::run_as_worker_if_asked`).
//!
//! Each figure is the median of `FLOE_BENCH_REPEATS` (default 5) runs after a warm-up; the
//! Q ratio is the median of the rounds' ratios (each round times the sync job and polars back
//! to back), not a ratio of two medians. The
//! load generator runs in the same process as the server, on its own runtime: on a 2-core
//! machine client and server share the cores, so the throughput is a floor.
//! `FLOE_BENCH_ROWS` (default 10,000,000) sets the size of the cached data.

use std::sync::Arc;
use std::time::{Duration, Instant};

use floe::clock::{Clock, SystemClock};

use floe::job::builtin::{CountDistinct, GroupBy, Top};
use floe::job::{Job, JobRegistry};
use floe::server::{ServerConfig, build_state};
use polars::prelude::*;

mod common;

use common::{
    CpuTicks, env_usize, median, run_in_process, serve_in_process, steal_line, write_sample_week,
};

/// Whether two JSON results hold the same rows: floats as equal as two summations in another
/// order can be (polars sums in parallel), everything else exactly.
fn same_rows(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
                _ => x == y,
            },
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
            }
            _ => a == b,
        }
    }
    same(a, b)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// A benchmark query: name, Floe class, job config, the same query in direct polars, and the
/// Floe job kind called in-process (no server) to split the overhead between job and server.
type Query<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Box<dyn Fn() -> DataFrame + 'a>,
    Arc<dyn Job>,
);

struct LoadResult {
    p50_ms: f64,
    p99_ms: f64,
    jobs_per_s: f64,
}

/// `clients` keep-alive connections, each posting the trivial job back to back for `window`,
/// with `token` as a bearer token when given.
async fn load(
    base: &str,
    context: &str,
    token: Option<&str>,
    clients: usize,
    window: Duration,
) -> LoadResult {
    let url = format!("{base}/jobs?classPath=sql&context={context}&sync=true");
    let authorization = token.map(|token| format!("Bearer {token}"));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let url = url.clone();
        let authorization = authorization.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            let mut latencies = Vec::new();
            while started.elapsed() < window {
                let sent = Instant::now();
                let mut request = client.post(&url).body(r#"query = "SELECT 1 AS one""#);
                if let Some(authorization) = &authorization {
                    request = request.header("authorization", authorization);
                }
                let response = request.send().await.expect("request");
                assert_eq!(response.status(), 200, "trivial job refused");
                let body = response.bytes().await.expect("body");
                assert!(body.ends_with(br#""result":[{"one":1}]}"#), "{body:?}");
                latencies.push(sent.elapsed().as_secs_f64() * 1e3);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client task"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    LoadResult {
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
        jobs_per_s: all.len() as f64 / elapsed,
    }
}

async fn sync_job(
    client: &reqwest::Client,
    base: &str,
    context: &str,
    class: &str,
    config: &str,
) -> serde_json::Value {
    let response = client
        .post(format!(
            "{base}/jobs?classPath={class}&context={context}&sync=true&timeout=600"
        ))
        .body(config.to_owned())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["status"], "FINISHED", "{body}");
    body
}

fn main() -> std::process::ExitCode {
    // The worker processes of the `benchw` context are this binary.
    if let Some(code) = floe::cli::run_as_worker_if_asked(&JobRegistry::new()) {
        return code;
    }
    let rows = env_usize("FLOE_BENCH_ROWS", 10_000_000);
    let repeats = env_usize("FLOE_BENCH_REPEATS", 5).max(1);
    let window = Duration::from_millis(env_usize("FLOE_BENCH_WINDOW_MS", 2000) as u64);
    let dir = tempfile::tempdir().expect("tempdir");
    let cpu_start = CpuTicks::now();
    eprintln!("generating {rows} rows …");
    write_sample_week(rows, &dir.path().join("data"));

    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("bench-server")
        .build()
        .expect("runtime");
    let mut config = ServerConfig {
        pipelines: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines"),
        data_dir: dir.path().join("data"),
        store: dir.path().join("store"),
        ..ServerConfig::default()
    };
    // The load posts far more jobs than `limits.max_stored_jobs` within the default hour of
    // `job_retention`: with none, the oldest beyond `job_history` are pruned as they would be
    // on a server with a shorter retention, and the bench measures that pruning too.
    config.core.job_retention = Duration::ZERO;
    // The `bench` context runs in-process beside `benchw` in its worker, for the comparison;
    // both may hold 8 GiB of named objects (a context's budget must fit its worker's limit).
    config.core.workers.allow_in_process = true;
    config.core.workers.memory_limit = 12 << 30;
    let handle = server_runtime.handle().clone();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state = build_state(config, JobRegistry::new(), clock, handle).expect("state");
    let core = state.core.clone();
    let base = serve_in_process(&server_runtime, state);

    // A second server, with authentication on: the trivial job's baseline without a token
    // check is the first server, measured round by round beside it.
    // Apart from the first server's files: its tokens file is `tokens.json` beside its store.
    let tokens_file = dir.path().join("auth/tokens.json");
    let tokens = floe::auth::tokens::TokenStore::new(&tokens_file);
    let issue = |role, name| {
        tokens
            .create(role, name, None, chrono::Utc::now())
            .expect("token")
            .token
    };
    let admin = issue(floe::auth::Role::Admin, "bench-admin");
    let token = issue(floe::auth::Role::Run, "bench");
    let mut auth_config = ServerConfig {
        pipelines: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines"),
        data_dir: dir.path().join("data"),
        store: dir.path().join("auth/store"),
        ..ServerConfig::default()
    };
    auth_config.auth.tokens_file = Some(tokens_file);
    auth_config.core.job_retention = Duration::ZERO;
    auth_config.core.workers.enabled = false;
    let auth_state = build_state(
        auth_config,
        JobRegistry::new(),
        Arc::new(SystemClock),
        server_runtime.handle().clone(),
    )
    .expect("state with auth");
    let auth_base = serve_in_process(&server_runtime, auth_state);

    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("bench-client")
        .build()
        .expect("runtime");
    client_runtime.block_on(async {
        let client = reqwest::Client::new();
        for (context, process) in [("bench", "in-process"), ("benchw", "worker")] {
            let created = client
                .post(format!(
                    "{base}/contexts/{context}?worker-threads=2&queue-length=256&memory-budget=8g&process={process}"
                ))
                .send()
                .await
                .expect("context");
            assert_eq!(created.status(), 200);
        }
        let create = |token: String| {
            client
                .post(format!("{auth_base}/contexts/bench?worker-threads=2&queue-length=256"))
                .header("authorization", format!("Bearer {token}"))
                .send()
        };
        // Contexts need `admin`; the trivial jobs then run with a `run` token.
        assert_eq!(create(token.clone()).await.expect("context").status(), 403);
        assert_eq!(create(admin).await.expect("context").status(), 200);

        // Load the whole week into the context once, as a named object.
        let loaded = Instant::now();
        // A one-row result: a `select` would store the whole table as the job's result, over
        // the default `limits.max_result_bytes`.
        for context in ["bench", "benchw"] {
            sync_job(
                &client,
                &base,
                context,
                "count_distinct",
                "input { object = events, source = events, app = shop, from = \"2024-01-01\", to = \"2024-01-08\" }\ncolumn = user_id",
            )
            .await;
        }
        eprintln!("named object `events` loaded in {:.1} s", loaded.elapsed().as_secs_f64());
        let context: serde_json::Value = client
            .get(format!("{base}/contexts/bench"))
            .send()
            .await
            .expect("context")
            .json()
            .await
            .expect("json");
        let object = &context["namedObjects"][0];
        println!();
        println!(
            "## Q1–Q3 on a context holding {} cached rows ({:.0} MiB), sync jobs vs direct polars",
            object["rows"],
            object["bytes"].as_f64().unwrap_or(0.0) / 1048576.0
        );

        // The very frame the context holds, for the direct polars baseline.
        let frame: DataFrame = core
            .context("bench")
            .and_then(|context| context.objects.get("events"))
            .expect("named object `events`")
            .frame
            .as_ref()
            .clone();
        let queries: [Query; 3] = [
            (
                "Q1 distinct users with a register click",
                "count_distinct",
                "input = events\ncolumn = user_id\nfilter = \"event = 'register'\"",
                Box::new(|| {
                    frame
                        .clone()
                        .lazy()
                        .filter(col("event").eq(lit("register")))
                        .select([col("user_id").drop_nulls().n_unique()])
                        .collect()
                        .expect("q1")
                }),
                Arc::new(
                    CountDistinct::new("user_id", Some("event = 'register'"))
                        .expect("q1 job")
                        .count_only(),
                ),
            ),
            (
                "Q2 top 10 cities by purchase amount",
                "top",
                "input = events\nkey = city\nmetric = \"sum(amount)\"\nn = 10\nfilter = \"event = 'purchase'\"",
                Box::new(|| {
                    frame
                        .clone()
                        .lazy()
                        .filter(col("event").eq(lit("purchase")))
                        .group_by([col("city")])
                        .agg([col("amount").sum().alias("metric")])
                        .sort(["metric"], SortMultipleOptions::default().with_order_descending(true))
                        .limit(10)
                        .collect()
                        .expect("q2")
                }),
                Arc::new(
                    Top::new("city", "sum(amount)", 10, None, Some("event = 'purchase'"))
                        .expect("q2 job"),
                ),
            ),
            (
                "Q3 purchase amount per category",
                "group_by",
                "input = events\nkeys = [category]\naggregations { sales = \"sum(amount)\" }\nfilter = \"event = 'purchase'\"",
                Box::new(|| {
                    frame
                        .clone()
                        .lazy()
                        .filter(col("event").eq(lit("purchase")))
                        .group_by([col("category")])
                        .agg([col("amount").sum().alias("sales")])
                        .collect()
                        .expect("q3")
                }),
                Arc::new(
                    GroupBy::new(
                        &["category".to_owned()],
                        &[("sales".to_owned(), "sum(amount)".to_owned())],
                        Some("event = 'purchase'"),
                    )
                    .expect("q3 job"),
                ),
            ),
        ];
        println!(
            "| query | Floe sync job ms | job kind in-process ms | direct polars ms | sync job / polars (median of the rounds' ratios) | worker context: sync job ms | worker / in-process (median of the rounds' ratios) |"
        );
        println!("|---|---|---|---|---|---|---|");
        for (name, class, config, direct, job) in &queries {
            sync_job(&client, &base, "bench", class, config).await; // warm-up
            sync_job(&client, &base, "benchw", class, config).await;
            direct();
            let (mut floe_ms, mut polars_ms, mut kind_ms) = (Vec::new(), Vec::new(), Vec::new());
            let (mut server_ms, mut thread_ms, mut worker_ms) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..repeats {
                let t = Instant::now();
                run_in_process(job.as_ref(), &frame);
                kind_ms.push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                let body = sync_job(&client, &base, "bench", class, config).await;
                floe_ms.push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                let in_worker = sync_job(&client, &base, "benchw", class, config).await;
                worker_ms.push(t.elapsed().as_secs_f64() * 1e3);
                assert!(
                    same_rows(&in_worker["result"], &body["result"]),
                    "{name}: worker and in-process disagree: {} against {}",
                    in_worker["result"],
                    body["result"]
                );
                let report: serde_json::Value = client
                    .get(format!("{base}/jobs/{}", body["jobId"].as_str().unwrap_or_default()))
                    .send()
                    .await
                    .expect("report")
                    .json()
                    .await
                    .expect("json");
                let secs: f64 = report["duration"]
                    .as_str()
                    .and_then(|d| d.strip_suffix(" secs"))
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(f64::NAN);
                server_ms.push(secs * 1e3);
                let t = Instant::now();
                let job = job.clone();
                let on_thread = frame.clone();
                std::thread::spawn(move || run_in_process(job.as_ref(), &on_thread))
                    .join()
                    .expect("thread");
                thread_ms.push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                let expected = direct();
                polars_ms.push(t.elapsed().as_secs_f64() * 1e3);
                let rows = body["result"].as_array().map_or(0, Vec::len);
                assert_eq!(rows, expected.height(), "{name}: Floe and polars disagree");
            }
            // The median of each round's ratio: both sides of a round ran back to back, so a
            // slow stretch of the machine hits them alike (before `median` sorts the times).
            let mut ratios: Vec<f64> = floe_ms.iter().zip(&polars_ms).map(|(f, p)| f / p).collect();
            let paired = median(&mut ratios);
            let mut worker_ratios: Vec<f64> =
                worker_ms.iter().zip(&floe_ms).map(|(w, f)| w / f).collect();
            let worker_paired = median(&mut worker_ratios);
            let (f, k, p, w) = (
                median(&mut floe_ms),
                median(&mut kind_ms),
                median(&mut polars_ms),
                median(&mut worker_ms),
            );
            println!("| {name} | {f:.1} | {k:.1} | {p:.1} | {paired:.2}× | {w:.1} | {worker_paired:.2}× |");
            eprintln!(
                "{name}: server-side duration {:.1} ms, job kind on a fresh thread {:.1} ms",
                median(&mut server_ms),
                median(&mut thread_ms)
            );
        }

        // Last, so the Q1–Q3 timings do not share the machine with the history sweep and
        // the store flushes that hundreds of thousands of trivial jobs leave behind.
        println!();
        println!("## Trivial sync job (SELECT 1), warm context, loopback");
        println!(
            "| clients | in-process: p50 ms | p99 ms | jobs/s | worker context: p50 ms | p99 ms | \
             jobs/s | worker − in-process, median of the rounds' p50 differences ms | with a \
             token: p50 ms | jobs/s | token check, median of the rounds' p50 differences ms |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        load(&base, "bench", None, 4, Duration::from_millis(500)).await; // warm-up
        load(&base, "benchw", None, 4, Duration::from_millis(500)).await;
        load(&auth_base, "bench", Some(&token), 4, Duration::from_millis(500)).await;
        let levels: &[usize] = if std::env::var_os("FLOE_BENCH_SKIP_TRIVIAL").is_some() {
            &[]
        } else {
            &[1, 16, 64]
        };
        for &clients in levels {
            let (mut p50, mut p99, mut rate) = (Vec::new(), Vec::new(), Vec::new());
            let (mut worker_p50, mut worker_p99, mut worker_rate) =
                (Vec::new(), Vec::new(), Vec::new());
            let (mut auth_p50, mut auth_rate) = (Vec::new(), Vec::new());
            let (mut worker_cost, mut differences) = (Vec::new(), Vec::new());
            for _ in 0..repeats {
                let open = load(&base, "bench", None, clients, window).await;
                let worker = load(&base, "benchw", None, clients, window).await;
                let checked = load(&auth_base, "bench", Some(&token), clients, window).await;
                differences.push(checked.p50_ms - open.p50_ms);
                worker_cost.push(worker.p50_ms - open.p50_ms);
                p50.push(open.p50_ms);
                p99.push(open.p99_ms);
                rate.push(open.jobs_per_s);
                worker_p50.push(worker.p50_ms);
                worker_p99.push(worker.p99_ms);
                worker_rate.push(worker.jobs_per_s);
                auth_p50.push(checked.p50_ms);
                auth_rate.push(checked.jobs_per_s);
            }
            println!(
                "| {clients} | {:.3} | {:.3} | {:.0} | {:.3} | {:.3} | {:.0} | {:+.3} | {:.3} | {:.0} | {:+.3} |",
                median(&mut p50),
                median(&mut p99),
                median(&mut rate),
                median(&mut worker_p50),
                median(&mut worker_p99),
                median(&mut worker_rate),
                median(&mut worker_cost),
                median(&mut auth_p50),
                median(&mut auth_rate),
                median(&mut differences)
            );
        }
    });
    println!();
    println!("{}", steal_line(cpu_start));
    std::process::ExitCode::SUCCESS
}
