//! Contexts in worker processes, over real HTTP against real `floe worker` processes: a job
//! over its context's memory limit, a killed long computation, a worker that crashes
//! mid-job (SIGABRT, SIGKILL) — each ends in the right state, only its own worker is replaced,
//! the server and a second context keep answering, and nothing stored is lost.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::common::SampleWorld;
use super::common::server::{TestServer, text};

fn world() -> SampleWorld {
    SampleWorld::new(2_000, 1)
}

/// Uploads a CSV of one column `x` = 0..rows to `/data` and answers its file name.
async fn numbers(server: &TestServer, rows: usize) -> String {
    let mut csv = String::from("x\n");
    for i in 0..rows {
        csv.push_str(&format!("{i}\n"));
    }
    let (status, answer) = server.post("/data/numbers", &csv).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    text(&answer["result"]["filename"]).to_owned()
}

/// A SQL job's config over the numbers file as tables `a` and `b`.
fn sql_over(file: &str, query: &str) -> String {
    format!(
        "query = \"{query}\"\ninputs {{ a = {{ data = \"{file}\", format = csv }}, \
         b = {{ data = \"{file}\", format = csv }} }}"
    )
}

/// A SQL job's config over the context's named object `nums` as tables `a` and `b` (in
/// memory, so the join limit counts its rows exactly).
fn sql_over_nums(query: &str) -> String {
    format!("query = \"{query}\"\ninputs {{ a = {{ object = nums }}, b = {{ object = nums }} }}")
}

/// Seconds of CPU in a debug build, in bounded memory: 49M pairs filtered as they are made.
const LONG_QUERY: &str = "SELECT count(*) AS n FROM a CROSS JOIN b WHERE (a.x * 7 + b.x) % 13 = 0";

/// 49M pairs kept whole: gigabytes.
const HUGE_QUERY: &str = "SELECT a.x, b.x AS y FROM a CROSS JOIN b";

async fn context(server: &TestServer, name: &str) -> Value {
    let (status, context) = server.get(&format!("/contexts/{name}")).await;
    assert_eq!(status, StatusCode::OK, "{context}");
    context
}

/// The pid of `name`'s worker process once it runs.
async fn worker_pid(server: &TestServer, name: &str) -> u32 {
    for _ in 0..1000 {
        if let Some(pid) = context(server, name).await["worker"]["pid"].as_u64() {
            return pid as u32;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("context {name} has no worker process");
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Submits `config` to `context` without waiting, and waits until it runs.
async fn start_job(server: &TestServer, context: &str, config: &str) -> String {
    let (status, job) = server
        .post(&format!("/jobs?classPath=sql&context={context}"), config)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = text(&job["jobId"]).to_owned();
    for _ in 0..1000 {
        let (_, context) = server.get(&format!("/contexts/{context}")).await;
        if context["jobs"]["running"].as_u64() == Some(1) {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {id} did not start");
}

/// The numbers of `file` published in `name` as the named object `nums`, and a sync job over
/// it that answers.
async fn publish_and_read(server: &TestServer, name: &str, file: &str) {
    let config = format!(
        "query = \"SELECT x FROM a\"\ninputs {{ a = {{ data = \"{file}\", format = csv }} }}\n\
         publish = nums"
    );
    let (status, report) = server
        .post(
            &format!("/jobs?classPath=sql&context={name}&sync=true&timeout=60"),
            &config,
        )
        .await;
    assert_eq!(
        (status, &report["status"]),
        (StatusCode::OK, &json!("FINISHED")),
        "{report}"
    );
    still_answers(server, name).await;
}

/// `name` answers a sync job over its named object `nums`.
async fn still_answers(server: &TestServer, name: &str) {
    let (status, report) = server
        .post(
            &format!("/jobs?classPath=sql&context={name}&sync=true&timeout=60"),
            "query = \"SELECT count(*) AS n FROM nums\"\ninputs { nums = { object = nums } }",
        )
        .await;
    assert_eq!(
        (status, &report["status"]),
        (StatusCode::OK, &json!("FINISHED")),
        "{report}"
    );
    assert_eq!(report["result"][0]["n"], 7_000, "{report}");
}

#[tokio::test]
async fn a_job_over_its_memory_limit_ends_error_and_only_its_worker_is_replaced() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    let file = numbers(&server, 7_000).await;
    for (name, limit) in [("small", "256m"), ("other", "1g")] {
        let (status, answer) = server
            .post(
                &format!("/contexts/{name}?memory-limit={limit}&memory-budget=128m"),
                "",
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    publish_and_read(&server, "other", &file).await;
    publish_and_read(&server, "small", &file).await;
    let other_pid = worker_pid(&server, "other").await;
    let small_pid = worker_pid(&server, "small").await;

    let (status, report) = server
        .post(
            "/jobs?classPath=sql&context=small&sync=true&timeout=120",
            &sql_over_nums(HUGE_QUERY),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["status"], "ERROR", "{report}");
    assert_eq!(
        report["result"]["errorClass"], "floe.MemoryLimit",
        "{report}"
    );
    let message = text(&report["result"]["message"]);
    assert!(
        message.starts_with("memory limit of 256.0 MiB exceeded"),
        "{message}"
    );
    assert!(message.contains("context small"), "{message}");

    // Its worker was replaced; the other context's was not, and still holds its object.
    assert!(!alive(small_pid));
    let small = context(&server, "small").await;
    assert_eq!(small["worker"]["starts"], 1, "{small}");
    assert!(
        text(&small["worker"]["lastExit"]).starts_with("memory limit of 256.0 MiB exceeded"),
        "{small}"
    );
    assert!(
        small["worker"]["peakResidentBytes"].as_u64().unwrap() > 256 << 20,
        "{small}"
    );
    assert_eq!(worker_pid(&server, "other").await, other_pid);
    still_answers(&server, "other").await;
    // The small context runs its next job in a new worker.
    let (status, report) = server
        .post(
            "/jobs?classPath=sql&context=small&sync=true&timeout=60",
            &sql_over(&file, "SELECT count(*) AS n FROM a"),
        )
        .await;
    assert_eq!(
        (status, &report["status"]),
        (StatusCode::OK, &json!("FINISHED")),
        "{report}"
    );
    assert_eq!(context(&server, "small").await["worker"]["starts"], 2);
    assert_ne!(worker_pid(&server, "small").await, small_pid);
    // Operators see it in the metrics.
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("floe_worker_starts_total{context=\"small\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("floe_worker_resident_bytes{context=\"other\"} "));
    // The failed job is in the history with its reason.
    let (_, jobs) = server.get("/jobs?status=ERROR").await;
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");
    server.stop().await;
}

#[tokio::test]
async fn a_killed_long_computation_stops_within_a_second_and_the_next_job_starts() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    let file = numbers(&server, 7_000).await;
    let (status, answer) = server
        .post("/contexts/busy?worker-threads=1&memory-limit=2g", "")
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    publish_and_read(&server, "busy", &file).await;
    let pid = worker_pid(&server, "busy").await;
    let long = start_job(&server, "busy", &sql_over_nums(LONG_QUERY)).await;
    // Queued behind it on the context's one thread.
    let (status, queued) = server
        .post(
            "/jobs?classPath=sql&context=busy",
            &sql_over(&file, "SELECT count(*) AS n FROM a"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    let queued = text(&queued["jobId"]).to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let killed_at = Instant::now();
    let (status, answer) = server.delete(&format!("/jobs/{long}")).await;
    assert_eq!(
        (status, &answer["status"]),
        (StatusCode::OK, &json!("KILLED")),
        "{answer}"
    );
    // polars does not stop inside a plan: the process is killed after the grace (250 ms).
    while alive(pid) {
        assert!(
            killed_at.elapsed() < Duration::from_secs(1),
            "the worker still runs a second after the kill"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let report = server.wait_final(&queued).await;
    assert_eq!(report["status"], "FINISHED", "{report}");
    assert_eq!(report["result"][0]["n"], 7_000, "{report}");
    let report = server.wait_final(&long).await;
    assert_eq!(report["status"], "KILLED", "{report}");
    let busy = context(&server, "busy").await;
    assert_eq!(busy["worker"]["starts"], 2, "{busy}");
    // Its named objects went with the process, as the docs say.
    assert_eq!(busy["namedObjects"], json!([]), "{busy}");
    server.stop().await;
}

#[tokio::test]
async fn a_worker_that_crashes_mid_job_fails_its_job_with_the_reason() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    let file = numbers(&server, 7_000).await;
    for name in ["crashy", "steady"] {
        let (status, answer) = server.post(&format!("/contexts/{name}"), "").await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    publish_and_read(&server, "steady", &file).await;
    // An idle worker that dies takes its objects with it, and the context says so at once.
    publish_and_read(&server, "crashy", &file).await;
    let idle = worker_pid(&server, "crashy").await;
    let sent = std::process::Command::new("kill")
        .args(["-KILL", &idle.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    while alive(idle) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..100 {
        if context(&server, "crashy").await["namedObjects"] == json!([]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let crashy = context(&server, "crashy").await;
    assert_eq!(crashy["namedObjects"], json!([]), "{crashy}");
    assert_eq!(crashy["memory"]["used"], 0, "{crashy}");
    for (signal, name) in [
        ("ABRT", "signal 6 (SIGABRT)"),
        ("KILL", "signal 9 (SIGKILL)"),
    ] {
        publish_and_read(&server, "crashy", &file).await;
        let pid = worker_pid(&server, "crashy").await;
        let job = start_job(&server, "crashy", &sql_over_nums(LONG_QUERY)).await;
        let sent = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(sent.success());
        let report = server.wait_final(&job).await;
        assert_eq!(report["status"], "ERROR", "{report}");
        assert_eq!(
            report["result"]["errorClass"], "floe.WorkerDied",
            "{report}"
        );
        let message = text(&report["result"]["message"]);
        assert!(
            message.contains("the worker process of context crashy ended while this ran")
                && message.contains(name)
                && message.contains("its named objects were lost"),
            "{message}"
        );
        // The other context never noticed; this one starts again on its next job.
        still_answers(&server, "steady").await;
        assert_eq!(context(&server, "crashy").await["namedObjects"], json!([]));
    }
    assert_eq!(context(&server, "crashy").await["worker"]["starts"], 3);
    // Nothing stored was lost: every job is listed, with its final state.
    let (_, jobs) = server.get("/jobs?limit=100").await;
    let statuses: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|job| text(&job["status"]))
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "ERROR").count(),
        2,
        "{jobs}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == "FINISHED").count(),
        10,
        "{jobs}"
    );
    server.stop().await;
}

#[tokio::test]
async fn queries_and_ad_hoc_jobs_run_in_worker_processes_with_their_own_limits() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    let file = numbers(&server, 7_000).await;
    let (status, answer) = server.post("/contexts/warm", "").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    publish_and_read(&server, "warm", &file).await;
    let warm = context(&server, "warm").await;
    assert_eq!(warm["settings"]["process"], "worker", "{warm}");
    assert_eq!(warm["settings"]["memory-limit"], 4u64 << 30, "{warm}");
    assert_eq!(warm["namedObjects"][0]["name"], "nums", "{warm}");

    // A `/query` over the context's named object runs where the object is.
    let (status, answer) = server
        .post_json(
            "/query",
            &json!({ "sql": "SELECT count(*) * 2 AS twice FROM nums", "context": "warm" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["rows"][0]["twice"], 14_000, "{answer}");

    // An ad-hoc job with a memory limit of its own runs in a worker of its own: over it, it
    // fails alone; the shared ad-hoc worker and the contexts go on.
    // 3,000 numbers: their file is small enough for the join limit's estimate, their 9M
    // pairs are not for 200 MiB.
    let few = numbers(&server, 3_000).await;
    let huge = format!(
        "{}\nspark.context-settings {{ memory-limit = 200m }}",
        sql_over(&few, HUGE_QUERY)
    );
    let (status, report) = server
        .post("/jobs?classPath=sql&sync=true&timeout=120", &huge)
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        report["result"]["errorClass"], "floe.MemoryLimit",
        "{report}"
    );
    assert!(
        text(&report["result"]["message"]).starts_with("memory limit of 200.0 MiB exceeded"),
        "{report}"
    );
    let (status, report) = server
        .post(
            "/jobs?classPath=sql&sync=true&timeout=60",
            &sql_over(&file, "SELECT max(x) AS top FROM a"),
        )
        .await;
    assert_eq!(
        (status, &report["status"]),
        (StatusCode::OK, &json!("FINISHED")),
        "{report}"
    );
    assert_eq!(report["result"][0]["top"], 6_999, "{report}");
    still_answers(&server, "warm").await;

    // Limits are the admin's: above the server's, below what a worker needs, or a process
    // mode for one ad-hoc job are refused, each naming its setting.
    for (query, problem) in [
        (
            "/contexts/big?memory-limit=64g",
            "above the server's limit of 4.0 GiB",
        ),
        (
            "/contexts/tiny?memory-limit=1m",
            "below the 128.0 MiB a worker process needs",
        ),
        (
            "/contexts/odd?process=fork",
            "expected `worker` or `in-process`, found `fork`",
        ),
        (
            "/contexts/cramped?memory-limit=1g",
            "`memory-budget`: 2.0 GiB is above the context's `memory-limit` of 1.0 GiB",
        ),
    ] {
        let (status, answer) = server.post(query, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {answer}");
        assert!(
            text(&answer["result"]).contains(problem),
            "{query}: {answer}"
        );
    }
    let (status, answer) = server
        .post(
            "/jobs?classPath=sql",
            &format!(
                "{}\nspark.context-settings {{ process = in-process }}",
                sql_over(&file, "SELECT 1 AS one FROM a")
            ),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer
            .to_string()
            .contains("setting `process` cannot be set for one ad-hoc job")
    );

    // Out of the worker only where the operator allows it.
    let (status, answer) = server.post("/contexts/inside?process=in-process", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        text(&answer["result"]).contains("`workers.allow_in_process`"),
        "{answer}"
    );
    server.stop().await;
    let server = TestServer::start(&world, |c| c.core.workers.allow_in_process = true).await;
    let file = numbers(&server, 7_000).await;
    let (status, answer) = server.post("/contexts/inside?process=in-process", "").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    publish_and_read(&server, "inside", &file).await;
    let inside = context(&server, "inside").await;
    assert_eq!(inside["settings"]["process"], "in-process", "{inside}");
    assert_eq!(inside["worker"], Value::Null, "{inside}");
    let (status, answer) = server
        .post("/contexts/both?process=in-process&memory-limit=1g", "")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        text(&answer["result"]).contains("applies to a context in a worker"),
        "{answer}"
    );
    server.stop().await;
}

/// A pipeline over the sample events with an hourly copy of their amounts, `amounts`; the
/// tests add their daily jobs over it.
fn pipeline_over_amounts(name: &str, daily_jobs: &str) -> String {
    format!(
        "version: 1\nname: {name}\nstart: 2024-01-01T00:00:00Z\nsources:\n  events:\n    \
         format: parquet\n    path: events/date={{date}}/hour={{hour}}/*.parquet\n    \
         time_column: ts\njobs:\n  amounts:\n    grain: hourly\n    from: events\n    \
         sql: \"SELECT amount FROM events\"\n{daily_jobs}"
    )
}

/// Two daily jobs over the amounts: `pairs` computes for seconds in bounded memory, `blowup`
/// keeps 49M pairs (gigabytes). Both retry once.
const HEAVY_JOBS: &str = r#"  pairs:
    grain: daily
    from: amounts
    retries: 1
    retry_backoff: 1s
    sql: "SELECT count(*) AS n FROM amounts a CROSS JOIN amounts b WHERE a.amount * b.amount > 1000000000000.0"
  blowup:
    grain: daily
    from: amounts
    retries: 1
    retry_backoff: 1s
    sql: "SELECT a.amount AS x, b.amount AS y FROM amounts a CROSS JOIN amounts b"
"#;

/// The run of `job` of the heavy pipeline on 2024-01-01.
async fn heavy_run(server: &TestServer, job: &str) -> Value {
    let (status, runs) = server
        .get(&format!(
            "/pipelines/heavy/runs?job={job}&from=2024-01-01&to=2024-01-02"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{runs}");
    runs[0].clone()
}

/// Waits until the run of `job` is in `state`.
async fn wait_run(server: &TestServer, job: &str, state: &str) -> Value {
    for _ in 0..3000 {
        let run = heavy_run(server, job).await;
        if run["state"] == state {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "run of {job} never {state}: {}",
        heavy_run(server, job).await
    );
}

/// The worker processes of partition runs started from `program`.
fn run_workers(program: &std::path::Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.first() == Some(&program.as_os_str().as_encoded_bytes())
            && args.contains(&&b"--runs"[..])
        {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test]
async fn partition_runs_in_workers_that_die_are_retried_exactly_once_more() {
    let world = SampleWorld::new(7_000, 1);
    // Workers started through a link of this test's own, so its processes are told apart
    // from other tests' by their command line.
    let links = tempfile::tempdir().unwrap();
    let program = links.path().join("floe-under-test");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_floe"), &program).unwrap();
    let server = TestServer::start(&world, |c| {
        c.core.workers.executable = Some(program.clone());
        c.core.workers.memory_limit = 256 << 20;
    })
    .await;
    let (status, answer) = server
        .upload("heavy", &pipeline_over_amounts("heavy", HEAVY_JOBS))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");

    // `pairs` is killed (kill -9) while it computes: the run fails and is retried once, in a
    // new worker process, and succeeds.
    let (status, job) = server
        .post(
            "/jobs?appName=heavy&classPath=pairs",
            r#"partition = "2024-01-01""#,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let job = text(&job["jobId"]).to_owned();
    wait_run(&server, "pairs", "running").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = run_workers(&program);
    assert!(!killed.is_empty());
    for pid in &killed {
        let sent = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }
    // Failed, with its retry due after the backoff.
    let failed_once = wait_run(&server, "pairs", "failed").await;
    assert_eq!(failed_once["attempts"], 1, "{failed_once}");
    assert!(failed_once["retryAt"].is_string(), "{failed_once}");
    let error = text(&failed_once["error"]);
    assert!(
        error.contains("the run's worker process ended")
            && error.contains("killed by signal 9 (SIGKILL)"),
        "{error}"
    );
    // The retry is due after its backoff on the server's clock.
    server
        .tick_until_idle(super::common::utc(2024, 2, 1, 1))
        .await;
    let report = server.wait_final(&job).await;
    assert_eq!(report["status"], "FINISHED", "{report}");
    let run = heavy_run(&server, "pairs").await;
    assert_eq!(
        (&run["state"], &run["attempts"]),
        (&json!("succeeded"), &json!(2)),
        "{run}"
    );
    assert!(
        run_workers(&program)
            .iter()
            .all(|pid| !killed.contains(pid))
    );

    // `blowup` goes over the workers' memory limit on each of its two attempts: the run fails
    // for good, saying why, and the server and the other results are untouched.
    let (status, report) = server
        .post(
            "/jobs?appName=heavy&classPath=blowup",
            r#"partition = "2024-01-01""#,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{report}");
    let job = text(&report["jobId"]).to_owned();
    let failed_once = wait_run(&server, "blowup", "failed").await;
    assert!(failed_once["retryAt"].is_string(), "{failed_once}");
    server
        .tick_until_idle(super::common::utc(2024, 2, 1, 2))
        .await;
    let report = server.wait_final(&job).await;
    assert_eq!(report["status"], "ERROR", "{report}");
    let run = heavy_run(&server, "blowup").await;
    assert_eq!(
        (&run["state"], &run["attempts"]),
        (&json!("failed"), &json!(2)),
        "{run}"
    );
    assert!(
        text(&run["error"]).contains("memory limit of 256.0 MiB exceeded"),
        "{run}"
    );
    assert_eq!(heavy_run(&server, "pairs").await["state"], "succeeded");
    let (status, results) = server
        .get("/pipelines/heavy/jobs/pairs/results?from=2024-01-01&to=2024-01-02")
        .await;
    assert_eq!(status, StatusCode::OK, "{results}");
    assert_eq!(
        results["rows"].as_array().map(Vec::len),
        Some(1),
        "{results}"
    );
    server.stop().await;
}

/// The job classes of `examples/fault_injection`, which the server validates pipelines with;
/// its binary, which `cargo test` builds, runs them in the worker processes.
#[path = "../../examples/fault_injection/jobs.rs"]
mod fault_jobs;

/// `examples/fault_injection`'s binary, built beside `floe`.
fn fault_injection_binary() -> std::path::PathBuf {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_floe"))
        .parent()
        .expect("target dir")
        .join("examples/fault_injection");
    assert!(
        binary.is_file(),
        "{} is missing: `cargo test` builds the examples (or `cargo build --example \
         fault_injection`)",
        binary.display()
    );
    binary
}

/// Daily jobs of the `fault_injection` classes, and one that works.
const FAULT_JOBS: &str = r#"  aborts:
    grain: daily
    from: amounts
    retries: 1
    retry_backoff: 1s
    rust: { class: abort }
  panics:
    grain: daily
    from: amounts
    rust: { class: panic }
  total:
    grain: daily
    from: amounts
    sql: "SELECT count(*) AS n FROM amounts"
"#;

#[tokio::test]
async fn a_run_that_aborts_or_panics_fails_alone_and_the_server_goes_on() {
    let world = world();
    let server = TestServer::start_with_registry(&world, fault_jobs::registry(), |c| {
        c.core.workers.executable = Some(fault_injection_binary());
    })
    .await;
    let (status, answer) = server
        .upload("faults", &pipeline_over_amounts("faults", FAULT_JOBS))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (status, answer) = server.post("/contexts/steady", "").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let file = numbers(&server, 7_000).await;
    publish_and_read(&server, "steady", &file).await;

    // The aborting run takes its worker process down, twice (it retries once): the run fails
    // for good with the signal, and nothing else notices.
    let (status, job) = server
        .post(
            "/jobs?appName=faults&classPath=aborts",
            r#"partition = "2024-01-01""#,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let job = text(&job["jobId"]).to_owned();
    let run = wait_faults_run(&server, "aborts", |run| run["retryAt"].is_string()).await;
    assert!(
        text(&run["error"]).contains("killed by signal 6 (SIGABRT)"),
        "{run}"
    );
    server
        .tick_until_idle(super::common::utc(2024, 2, 1, 1))
        .await;
    let report = server.wait_final(&job).await;
    assert_eq!(report["status"], "ERROR", "{report}");
    let run = wait_faults_run(&server, "aborts", |run| run["attempts"] == 2).await;
    assert_eq!(run["state"], "failed", "{run}");
    still_answers(&server, "steady").await;

    // A panicking run fails with the panic's message; its neighbours succeed.
    let (status, report) = server
        .post(
            "/jobs?appName=faults&classPath=floe.PipelineRun&sync=true&timeout=60",
            r#"partition = "2024-01-01", jobs = [panics, total]"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let run = wait_faults_run(&server, "panics", |run| run["state"] == "failed").await;
    assert!(
        text(&run["error"]).contains("the job panicked: this job panics on purpose"),
        "{run}"
    );
    let run = wait_faults_run(&server, "total", |run| run["state"] == "succeeded").await;
    assert_eq!(run["rows"], 1, "{run}");
    let (status, health) = server.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    server.stop().await;
}

/// The run of `job` of the faults pipeline on 2024-01-01, once `ready` holds.
async fn wait_faults_run(server: &TestServer, job: &str, ready: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..3000 {
        let (status, runs) = server
            .get(&format!(
                "/pipelines/faults/runs?job={job}&from=2024-01-01&to=2024-01-02"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{runs}");
        if runs[0].is_object() && ready(&runs[0]) {
            return runs[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the run of {job} never got there");
}

/// A process started as a worker never starts workers of its own: `floe serve` under
/// `FLOE_WORKER_PARENT` refuses to start, before it creates anything, and `floe worker` by
/// hand refuses without its protocol argument.
#[test]
fn a_worker_never_starts_workers_and_floe_worker_is_not_for_hands() {
    let dir = tempfile::tempdir().unwrap();
    let serve = std::process::Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("FLOE_WORKER_PARENT", "1")
        .output()
        .unwrap();
    assert!(!serve.status.success());
    let stderr = String::from_utf8_lossy(&serve.stderr);
    assert!(
        stderr.contains("was started as a worker process (FLOE_WORKER_PARENT is set)"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let worker = std::process::Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(["worker", "--threads=2"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!worker.status.success());
    let stderr = String::from_utf8_lossy(&worker.stderr);
    assert!(stderr.contains("is started by `floe serve`"), "{stderr}");
}

/// Rows a day of [`write_wide_day`] has per hour: 24 × 12,500 payloads of 1 KiB, about
/// 300 MiB as Arrow.
const WIDE_ROWS_PER_HOUR: usize = 12_500;

/// A day of wide events under `data/wide/date=2024-01-01/hour=HH/part-0.parquet`: `ts`, a
/// `category` of three and a `payload` of 1 KiB, no two alike; uncompressed, in row groups of
/// 1,024 rows. Answers the day's size in memory as Arrow.
fn write_wide_day(data_dir: &std::path::Path) -> usize {
    use polars::prelude::*;
    let mut arrow_bytes = 0;
    for hour in 0..24u32 {
        let start = super::common::utc(2024, 1, 1, hour).timestamp_millis();
        let rows = WIDE_ROWS_PER_HOUR;
        let ts: Vec<i64> = (0..rows as i64).map(|i| start + i * 100).collect();
        let category: Vec<&str> = (0..rows).map(|i| ["a", "b", "c"][i % 3]).collect();
        let filler = "x".repeat(1014);
        let payload: Vec<String> = (0..rows)
            .map(|i| format!("{hour:02}{i:08}{filler}"))
            .collect();
        let mut frame = df!("ts" => ts, "category" => category, "payload" => payload)
            .unwrap()
            .lazy()
            .with_column(col("ts").cast(DataType::Datetime(
                TimeUnit::Milliseconds,
                Some(TimeZone::UTC),
            )))
            .collect()
            .unwrap();
        arrow_bytes += floe::frames::arrow_size(&frame);
        let folder = data_dir
            .join("wide/date=2024-01-01")
            .join(format!("hour={hour:02}"));
        std::fs::create_dir_all(&folder).unwrap();
        let file = std::fs::File::create(folder.join("part-0.parquet")).unwrap();
        ParquetWriter::new(file)
            .with_compression(ParquetCompression::Uncompressed)
            .with_row_group_size(Some(1_024))
            .finish(&mut frame)
            .unwrap();
    }
    arrow_bytes
}

/// The (category, events, bytes) of each row of a wide-day answer, sorted.
fn per_category(rows: &Value) -> Vec<(String, u64, u64)> {
    let mut rows: Vec<(String, u64, u64)> = rows
        .as_array()
        .unwrap_or_else(|| panic!("{rows}"))
        .iter()
        .map(|row| {
            (
                text(&row["category"]).to_owned(),
                row["events"].as_u64().unwrap(),
                row["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    rows.sort();
    rows
}

#[tokio::test]
async fn a_partition_bigger_than_its_workers_memory_limit_completes_on_the_streaming_engine() {
    let world = SampleWorld::new(1_000, 1);
    // polars' writer blocks on its own runtime: not on the test's.
    let data_dir = world.data_dir();
    let arrow_bytes = tokio::task::spawn_blocking(move || write_wide_day(&data_dir))
        .await
        .unwrap();
    let limit: u64 = 256 << 20;
    assert!(
        arrow_bytes as u64 > limit + (limit / 8),
        "the day ({arrow_bytes} bytes as Arrow) must not fit the limit"
    );
    let server = TestServer::start(&world, |c| c.core.workers.memory_limit = limit).await;
    let pipeline = "version: 1\nname: wide\nstart: 2024-01-01T00:00:00Z\nsources:\n  wide:\n    \
        format: parquet\n    path: wide/date={date}/hour={hour}/*.parquet\n    \
        time_column: ts\njobs:\n  payload_per_category_daily:\n    grain: daily\n    \
        from: wide\n    group_by:\n      keys: [category]\n      aggregations:\n        \
        events: count(*)\n        bytes: sum(octet_length(payload))\n";
    let (status, answer) = server.upload("wide", pipeline).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (status, job) = server
        .post(
            "/jobs?appName=wide&classPath=payload_per_category_daily",
            r#"partition = "2024-01-01""#,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let report = server.wait_final(text(&job["jobId"])).await;
    assert_eq!(report["status"], "FINISHED", "{report}");

    let (status, results) = server
        .get(
            "/pipelines/wide/jobs/payload_per_category_daily/results?from=2024-01-01&to=2024-01-02",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{results}");
    let rows = per_category(&results["rows"]);
    let expected: Vec<(String, u64, u64)> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(index, category)| {
            let events = 24 * (0..WIDE_ROWS_PER_HOUR).filter(|i| i % 3 == index).count() as u64;
            ((*category).to_owned(), events, events * 1024)
        })
        .collect();
    assert_eq!(rows, expected);

    // An ad-hoc job over the same day's files, reading the payloads too, in a worker of the
    // ad-hoc pool (the same limit): the same answer.
    let (status, answer) = server
        .post(
            "/jobs?classPath=group_by&sync=true&timeout=120",
            "input { source = wide, app = wide, from = \"2024-01-01\", to = \"2024-01-02\" }\n\
             keys = [category]\n\
             aggregations { events = \"count(*)\", bytes = \"sum(octet_length(payload))\" }",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(per_category(&answer["result"]), expected);
    server.stop().await;
}
