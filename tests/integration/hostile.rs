//! The hostile client: inputs that once crashed the server, read host files or took unbounded
//! work, sent to every entry point that takes them. Each case must get a clear 4xx (or a job
//! in ERROR) and leave the server serving.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::common::server::{TestServer, text};
use crate::common::{SampleWorld, repo_path};

fn world() -> SampleWorld {
    SampleWorld::new(2_000, 1)
}

/// `n` terms joined by OR: the shape that overflowed the stack at about 1,400.
fn or_chain(n: usize) -> String {
    vec!["1=1"; n].join(" OR ")
}

/// A minimal pipeline whose one source is `path` and whose one job filters with `filter`.
fn pipeline_yaml(path: &str, filter: &str) -> String {
    format!(
        "version: 1\nname: probe\ntimezone: UTC\nstart: 2024-01-01T00:00:00Z\nsources:\n  \
         events:\n    format: csv\n    path: \"{path}\"\n    time_column: ts\njobs:\n  rows:\n    \
         grain: hourly\n    from: events\n    select: {{ filter: \"{filter}\" }}\n"
    )
}

async fn still_serving(server: &TestServer) {
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "the server stopped answering");
}

#[tokio::test]
async fn deep_sql_is_refused_everywhere_without_crashing() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;

    // /query: the 10 KB request that aborted the process.
    for n in [1_400, 20_000] {
        let body = json!({ "sql": format!("SELECT 1 AS x WHERE {}", or_chain(n)) });
        let (status, answer) = server.post("/query", &body.to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        let message = text(&answer["error"]["message"]);
        assert!(message.contains("nested too deeply"), "{message}");
        assert!(message.contains("the limit is 256"), "{message}");
        assert!(
            message.len() < 600,
            "the error echoes the whole query: {message}"
        );
    }
    // A sql job, and a filter of a built-in job.
    let sql = format!("query = \"SELECT 1 AS x WHERE {}\"", or_chain(1_400));
    let (status, answer) = server.post("/jobs?classPath=sql&sync=true", &sql).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.to_string().contains("nested too deeply"), "{answer}");
    let filter = format!(
        "input {{ source = events, app = shop, from = \"2024-01-01\", to = \"2024-01-01T01:00:00Z\" }}\n\
         column = user_id\nfilter = \"{}\"",
        or_chain(5_000)
    );
    let (status, answer) = server
        .post("/jobs?classPath=count_distinct&sync=true", &filter)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.to_string().contains("nested too deeply"), "{answer}");
    // An uploaded pipeline's filter.
    let (status, answer) = server
        .upload("probe", &pipeline_yaml("events/*.csv", &or_chain(5_000)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        text(&answer["result"]).contains("field `select.filter`"),
        "{answer}"
    );
    assert!(
        text(&answer["result"]).contains("nested too deeply"),
        "{answer}"
    );
    // What stays under the limit still runs.
    let body = json!({ "sql": format!("SELECT 1 AS x WHERE {}", or_chain(100)) });
    let (status, answer) = server.post("/query", &body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["rows"], json!([{"x": 1}]));
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn sql_reads_only_the_tables_floe_binds() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    for sql in [
        "SELECT * FROM read_csv('/etc/os-release')",
        "SELECT * FROM read_parquet('/etc/passwd')",
        "SELECT * FROM read_ipc('/etc/hostname')",
        "SELECT * FROM read_json('/etc/hosts')",
    ] {
        let (status, answer) = server
            .post("/query", &json!({ "sql": sql }).to_string())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{sql}: {answer}");
        let message = text(&answer["error"]["message"]);
        assert!(message.contains("table function"), "{message}");
        assert!(!message.contains("PRETTY_NAME"), "{message}");
    }
    // Naming an input `read_csv` no longer passes the inputs check.
    let config = r#"
        inputs { read_csv { source = events, app = shop, from = "2024-01-01", to = "2024-01-01T01:00:00Z" } }
        query = "SELECT * FROM read_csv('/etc/os-release')"
    "#;
    let (status, answer) = server.post("/jobs?classPath=sql&sync=true", config).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.to_string().contains("table function"), "{answer}");
    // A subquery in a filter would run in a fresh SQL context, table functions included.
    let config = r#"
        input { source = events, app = shop, from = "2024-01-01", to = "2024-01-01T01:00:00Z" }
        filter = "user_id IN (SELECT column_1 FROM read_csv('/etc/passwd'))"
    "#;
    let (status, answer) = server
        .post("/jobs?classPath=select&sync=true", config)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.to_string().contains("subquery"), "{answer}");
    // Statements other than one SELECT.
    for sql in [
        "DROP TABLE shop__purchases_hourly",
        "SELECT 1; SELECT 2",
        "SHOW TABLES",
    ] {
        let (status, answer) = server
            .post("/query", &json!({ "sql": sql }).to_string())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{sql}: {answer}");
    }
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn uploaded_pipelines_read_only_inside_the_data_roots() {
    let world = world();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("secret.csv"),
        "ts,v\n2024-01-01T00:30:00,42\n",
    )
    .unwrap();
    let server = TestServer::start(&world, |_| {}).await;

    let secret = outside.path().join("secret.csv").display().to_string();
    for path in [
        secret.as_str(),
        "../../../../etc/os-release",
        "/etc/os-release",
    ] {
        let (status, answer) = server.upload("probe", &pipeline_yaml(path, "v > 0")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
        let message = text(&answer["result"]);
        assert!(
            message.contains("source `events`, field `path`"),
            "{message}"
        );
        assert!(message.contains(path), "{message}");
        assert!(
            message.contains("outside the data roots") || message.contains("`..` component"),
            "{message}"
        );
    }
    assert_eq!(server.get("/binaries/probe").await.0, StatusCode::NOT_FOUND);

    // A symlink planted inside the data dir is followed only as far as the roots allow.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(outside.path(), world.data_dir().join("leak")).unwrap();
        let (status, answer) = server
            .upload("probe", &pipeline_yaml("leak/*.csv", "v > 0"))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        let (status, report) = server
            .post(
                "/jobs?appName=probe&classPath=rows&sync=true",
                r#"partition = "2024-01-01T00:00:00Z""#,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["status"], "ERROR", "{report}");
        let message = report["result"]["message"].to_string();
        assert!(message.contains("outside the data roots"), "{message}");
        assert!(!message.contains("42"), "{message}");
        let target = outside.path().display().to_string();
        assert!(
            !message.contains(&target),
            "names where the link leads: {message}"
        );

        // A file named `*` beside a link: polars globs the paths it is given again, so the
        // matched `*` would read the link's target too.
        let evil = world.data_dir().join("evil");
        std::fs::create_dir_all(&evil).unwrap();
        std::fs::write(evil.join("*"), "ts,v\n2024-01-01T00:10:00,1\n").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.csv"), evil.join("leak")).unwrap();
        let (status, answer) = server
            .upload("probe", &pipeline_yaml("evil/[*]", "v > 0"))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        let (_, report) = server
            .post(
                "/jobs?appName=probe&classPath=rows&sync=true",
                r#"partition = "2024-01-01T00:00:00Z""#,
            )
            .await;
        assert_eq!(report["status"], "ERROR", "{report}");
        assert!(report.to_string().contains("glob character"), "{report}");
        // The answer, not the job's id (a v7 UUID may hold "42"), must not show the secret.
        assert!(!report["result"].to_string().contains("42"), "{report}");
    }
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn deep_yaml_is_refused_at_once() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    let nested = format!(
        "version: 1\nname: x\nsources: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let started = Instant::now();
    let (status, answer) = server.upload("deep", &nested).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        text(&answer["result"]).contains("nested about 100000 deep; the limit is 64"),
        "{answer}"
    );
    // libyaml took 49 s on this in a debug build; the check reads it once.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    still_serving(&server).await;
    server.stop().await;
}

#[test]
fn the_cli_reports_deep_and_escaping_pipelines_instead_of_aborting() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("deep.yaml");
    std::fs::write(&deep, pipeline_yaml("events/*.csv", &or_chain(5_000))).unwrap();
    let escaping = dir.path().join("escaping.yaml");
    std::fs::write(&escaping, pipeline_yaml("/etc/os-release", "v > 0")).unwrap();
    for (file, expected) in [
        (&deep, "nested too deeply"),
        (&escaping, "outside the data roots"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_floe"))
            .arg("validate")
            .arg(file)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .expect("run floe");
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
    // The operator may allow more roots.
    let output = Command::new(env!("CARGO_BIN_EXE_floe"))
        .arg("validate")
        .arg(&escaping)
        .arg("--data-root")
        .arg("/etc")
        .output()
        .expect("run floe");
    assert!(output.status.success(), "{output:?}");
}

#[tokio::test]
async fn results_are_served_only_for_the_definition_that_made_them() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    let original = std::fs::read_to_string(repo_path("pipelines/shop.yaml")).unwrap();
    let replaced = original.replace("filter: event = 'purchase'", "filter: event = 'click'");
    assert_ne!(original, replaced);
    let hour = r#"partition = "2024-01-01T05:00:00Z""#;
    let results = "/pipelines/copy/jobs/purchases_hourly/results?from=2024-01-01T05:00:00Z&to=2024-01-01T06:00:00Z";
    let daily =
        "/pipelines/copy/jobs/sales_per_category_daily/results?from=2024-01-01&to=2024-01-02";
    let query = json!({
        "sql": "SELECT count(*) AS n FROM copy__purchases_hourly",
        "from": "2024-01-01T05:00:00Z", "to": "2024-01-01T06:00:00Z",
    })
    .to_string();

    // An uploaded app (the folder's `shop` is its file's alone), then another definition
    // of it computes the hour and the day built on it.
    assert_eq!(
        server.upload("copy", &original).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        server.upload("copy", &replaced).await.0,
        StatusCode::CREATED
    );
    for (job, partition) in [
        ("purchases_hourly", hour),
        ("sales_per_category_daily", r#"partition = "2024-01-01""#),
    ] {
        let (status, report) = server
            .post(
                &format!("/jobs?appName=copy&classPath={job}&sync=true&timeout=60"),
                partition,
            )
            .await;
        assert_eq!(
            (status, &report["status"]),
            (StatusCode::OK, &json!("FINISHED")),
            "{report}"
        );
    }
    let (_, clicks) = server.get(results).await;
    assert!(clicks["total"].as_u64().unwrap() > 0, "{clicks}");
    assert_eq!(clicks["stale"], json!([]));

    // The original definition is back: the other definition's rows are stale, not served,
    // downstream included.
    assert_eq!(
        server.upload("copy", &original).await.0,
        StatusCode::CREATED
    );
    let (status, page) = server.get(results).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 0, "{page}");
    assert_eq!(page["stale"], json!(["2024-01-01T05:00:00.000Z"]), "{page}");
    let (_, day) = server.get(daily).await;
    assert_eq!(day["total"], 0, "{day}");
    assert_eq!(day["stale"], json!(["2024-01-01T00:00:00.000Z"]), "{day}");
    let (status, counted) = server.post("/query", &query).await;
    assert_eq!(status, StatusCode::OK, "{counted}");
    assert_eq!(counted["rows"], json!([{"n": 0}]), "{counted}");
    let (status, report) = server
        .post(
            "/jobs?classPath=count_distinct&sync=true",
            r#"input { results = purchases_hourly, app = copy, from = "2024-01-01T05:00:00Z", to = "2024-01-01T06:00:00Z" }
               column = user_id"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["status"], "ERROR", "{report}");
    assert!(
        report.to_string().contains("another definition"),
        "{report}"
    );

    // A run computes the hour again under the current definition, and it is served.
    let (_, report) = server
        .post(
            "/jobs?appName=copy&classPath=purchases_hourly&sync=true&timeout=60",
            hour,
        )
        .await;
    assert_eq!(report["status"], "FINISHED", "{report}");
    let (_, purchases) = server.get(results).await;
    assert_eq!(purchases["stale"], json!([]), "{purchases}");
    assert!(purchases["total"].as_u64().unwrap() > 0, "{purchases}");
    assert_ne!(purchases["rows"], clicks["rows"]);
    server.stop().await;
}

/// A server whose context `warm` holds the sample week as the named object `events`.
async fn server_with_events(
    world: &SampleWorld,
    tweak: impl FnOnce(&mut floe::server::ServerConfig),
) -> TestServer {
    let server = TestServer::start(world, tweak).await;
    server.post("/contexts/warm", "").await;
    let (status, report) = server
        .post(
            "/jobs?classPath=count_distinct&context=warm&sync=true&timeout=60",
            r#"input { object = events, source = events, app = shop, from = "2024-01-01", to = "2024-01-08" }
               column = user_id"#,
        )
        .await;
    assert_eq!(
        (status, &report["status"]),
        (StatusCode::OK, &json!("FINISHED")),
        "{report}"
    );
    server
}

/// A query of `branches` group-bys run one after another: seconds of work in a debug build,
/// with a point between branches where polars notices a stop.
fn slow_query(branches: usize) -> String {
    let branch = |i: usize| {
        format!(
            "SELECT CAST(user_id % {m} AS BIGINT) AS k, CAST(count(*) AS BIGINT) AS n, \
             sum(amount) AS s, max(ts) AS t FROM events GROUP BY user_id % {m}",
            m = 97 + i
        )
    };
    let sql = (0..branches)
        .map(branch)
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    json!({ "sql": format!("SELECT sum(n) AS rows FROM ({sql}) t"), "context": "warm" }).to_string()
}

async fn metric(server: &TestServer, name: &str) -> f64 {
    let text = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in {text}"))
}

async fn wait_for_no_running_query(server: &TestServer) -> Duration {
    let started = Instant::now();
    while metric(server, "floe_queries_running").await > 0.0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the query never stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn a_query_stops_at_its_time_limit_and_when_its_client_hangs_up() {
    let world = SampleWorld::new(200_000, 7);
    let server = server_with_events(&world, |c| {
        c.core.limits.query_timeout = Duration::from_millis(300);
    })
    .await;
    // The time limit: a 400 naming it, and the computation gone soon after.
    let started = Instant::now();
    let (status, answer) = server.post("/query", &slow_query(30)).await;
    let answered = started.elapsed();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["code"], "query_timeout", "{answer}");
    let message = text(&answer["error"]["message"]);
    assert!(message.contains("time limit of 300ms"), "{message}");
    assert!(message.contains("limits.query_timeout"), "{message}");
    assert!(answered < Duration::from_secs(5), "{answered:?}");
    wait_for_no_running_query(&server).await;
    assert_eq!(metric(&server, "floe_queries_stopped_total").await, 1.0);
    server.stop().await;

    // Hanging up cancels the query. (polars notices at its next check, between plan branches
    // that run one after the other; this query's union runs its branches at once, so it ends
    // with its last branch, and its answer is dropped.)
    let server = server_with_events(&world, |_| {}).await;
    let body = slow_query(30);
    let request = format!(
        "POST /query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let address = server.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .unwrap();
    while metric(&server, "floe_queries_running").await < 1.0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(stream);
    wait_for_no_running_query(&server).await;
    assert_eq!(metric(&server, "floe_queries_stopped_total").await, 1.0);
    server.stop().await;
}

#[tokio::test]
async fn over_the_memory_limit_the_newest_query_or_job_is_stopped() {
    let world = SampleWorld::new(40_000, 2);
    // A limit the server is always over: whatever is tracked (ad-hoc jobs, queries) is stopped
    // at the watchdog's next look, and the server goes on serving. Materialisations are not
    // tracked, so the results the queries read are made first.
    // Jobs in the server's process: in a worker process a job counts against its worker's
    // own limit (tests/integration/workers.rs).
    let server = TestServer::start(&world, |c| {
        c.core.limits.memory = Some(1);
        c.core.workers.enabled = false;
    })
    .await;
    let (status, report) = server
        .post(
            "/jobs?appName=shop&classPath=purchases_hourly&sync=true&timeout=60",
            r#"from = "2024-01-01", to = "2024-01-03""#,
        )
        .await;
    assert_eq!(
        (status, &report["status"]),
        (StatusCode::OK, &json!("FINISHED")),
        "{report}"
    );
    // Seconds of work in a debug build: a cross join of the purchases with 3,000 of them.
    let sql = "SELECT count(*) AS n FROM shop__purchases_hourly a, \
               (SELECT amount FROM shop__purchases_hourly LIMIT 3000) b WHERE a.amount < b.amount";
    let query = json!({ "sql": sql, "from": "2024-01-01", "to": "2024-01-03" }).to_string();
    let (status, answer) = server.post("/query", &query).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["code"], "memory_limit", "{answer}");
    assert!(
        text(&answer["error"]["message"]).contains("memory limit of 1 B was exceeded"),
        "{answer}"
    );
    // The watchdog waits half a second after a stop before it looks again.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let config = format!(
        "inputs {{ shop__purchases_hourly {{ results = purchases_hourly, app = shop, \
         from = \"2024-01-01\", to = \"2024-01-03\" }} }}\nquery = \"{sql}\""
    );
    let (status, report) = server
        .post("/jobs?classPath=sql&sync=true&timeout=60", &config)
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["status"], "ERROR", "{report}");
    assert_eq!(
        report["result"]["errorClass"], "floe.MemoryLimit",
        "{report}"
    );
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn ranges_are_capped_and_stop_at_now() {
    let world = world();
    let server = TestServer::start(&world, |c| {
        c.core.limits.max_result_partitions = 100;
        c.core.limits.max_run_partitions = 500;
    })
    .await;
    // A century of hourly results: refused before anything is read.
    let (status, answer) = server
        .get("/pipelines/shop/jobs/purchases_hourly/results?from=2024-01-01&to=2124-01-01")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let message = text(&answer["error"]["message"]);
    assert!(
        message.contains("limits.max_result_partitions"),
        "{message}"
    );
    // A daily job over the same century stops at now (the clock is 2024-02-01): 31 days.
    let (status, answer) = server
        .get("/pipelines/shop/jobs/sales_per_category_daily/results?from=2024-01-01&to=2124-01-01")
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["missing"].as_array().unwrap().len(), 31, "{answer}");
    // Ten future years of runs: refused, and nothing is recorded.
    let (status, answer) = server
        .post(
            "/jobs?appName=shop&classPath=floe.PipelineRun",
            r#"from = "2030-01-01", to = "2040-01-01""#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.to_string().contains("after now"), "{answer}");
    let (_, runs) = server.get("/pipelines/shop/runs?from=2029-01-01").await;
    assert_eq!(runs, json!([]));
    // A month of every job plans more than 500 runs; a week of one daily job does not.
    let (status, answer) = server
        .post(
            "/pipelines/shop/runs",
            r#"{"from": "2024-01-01", "to": "2024-02-01"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer.to_string().contains("limits.max_run_partitions"),
        "{answer}"
    );
    for route in ["/pipelines/shop/backfills", "/pipelines/shop/restatements"] {
        let (status, answer) = server
            .post(
                route,
                r#"{"jobs": ["purchases_hourly"], "from": "2024-01-01", "to": "2124-01-01"}"#,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{route}: {answer}");
        assert!(
            answer.to_string().contains("limits.max_run_partitions"),
            "{answer}"
        );
    }
    let (status, answer) = server
        .post(
            "/pipelines/shop/runs",
            r#"{"jobs": ["sales_per_category_daily"], "from": "2024-01-01", "to": "2024-01-08"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    server.stop().await;
}

/// Found by `fuzz.rs`: nested keyword calls sqlparser reads twice per level when they fail
/// (`substr(` × 127 before an unclosed parenthesis never finished parsing), nested `JOIN (`
/// that overflowed a 2 MiB stack in a debug build, and interval strings polars-sql panics on
/// (a 500). Refused at once everywhere SQL enters; the server keeps serving.
#[tokio::test]
async fn sql_that_hung_overflowed_or_panicked_the_parsers_is_refused_at_once() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    let reread = format!("ev{}ent = 'purchase'", "substr(".repeat(127));
    let started = Instant::now();
    let body = json!({ "sql": format!("SELECT {reread} FROM shop__purchases_hourly") });
    let (status, answer) = server.post("/query", &body.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let message = text(&answer["error"]["message"]);
    assert!(message.contains("nests keyword calls"), "{message}");
    assert!(message.contains("the limit is 32768"), "{message}");
    // A filter of a built-in job, and an uploaded pipeline's filter.
    let filter = format!(
        "input {{ source = events, app = shop, from = \"2024-01-01\", to = \"2024-01-01T01:00:00Z\" }}\n\
         column = user_id\nfilter = \"{reread}\""
    );
    let (status, answer) = server
        .post("/jobs?classPath=count_distinct&sync=true", &filter)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer.to_string().contains("nests keyword calls"),
        "{answer}"
    );
    let (status, answer) = server
        .upload(
            "probe",
            &pipeline_yaml("events/*.csv", &reread.replace('\'', "''")),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        text(&answer["result"]).contains("nests keyword calls"),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Deep `JOIN (` on the handler's own thread: a syntax error, not an abort.
    let joins = format!("SELECT 1 FROM {}t", "t JOIN (".repeat(40));
    let (status, answer) = server
        .post("/query", &json!({ "sql": joins }).to_string())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    // `INTERVAL 'SELECT 1 day'` panicked inside polars-sql: a 500 from /query.
    let body = json!({ "sql": "SELECT INTERVAL 'SELECT 1 day' AS x" });
    let (status, answer) = server.post("/query", &body.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let message = text(&answer["error"]["message"]);
    assert!(message.contains("cannot be read"), "{message}");
    let (status, answer) = server
        .upload(
            "probe",
            &pipeline_yaml("events/*.csv", "ts > now() - INTERVAL ''1 fortnight''"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(text(&answer["result"]).contains("fortnight"), "{answer}");
    // Nesting real SQL uses still runs.
    let body = json!({
        "sql": "SELECT CAST(floor(CEIL(2.5) + SUBSTR('12345', 2, 3)::INT) AS BIGINT) AS s",
    });
    let (status, answer) = server.post("/query", &body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["rows"], json!([{ "s": 237 }]), "{answer}");
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn sql_that_would_pin_a_core_or_grow_without_bound_is_refused() {
    let world = SampleWorld::new(20_000, 1);
    let server = server_with_events(&world, |c| c.core.limits.max_concurrent_queries = 1).await;
    let query = |sql: String| json!({ "sql": sql, "context": "warm" }).to_string();
    let branches = vec!["WHEN amount = 0 THEN 0"; 3000].join(" ");
    for (sql, expected) in [
        // Planning a 3,000-branch CASE took a minute and 3.8 GB.
        (
            format!("SELECT CASE {branches} ELSE 0 END AS c FROM events LIMIT 5"),
            "nested too deeply",
        ),
        // Padding to 2^63 characters grew the server 200 MB a second.
        (
            "SELECT rpad(city, 9223372036854775807, 'x') AS x FROM events LIMIT 1".to_owned(),
            "RPAD pads to",
        ),
        // polars unwraps the regex: the request's thread panicked (a 500 with internals).
        (
            "SELECT columns('(') FROM events".to_owned(),
            "not a valid regular expression",
        ),
    ] {
        let (status, answer) = server.post("/query", &query(sql)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        let message = text(&answer["error"]["message"]);
        assert!(message.contains(expected), "{message}");
    }
    // One query computing at a time: a second is refused with 429, not queued behind it.
    let slow = slow_query(30);
    let first = {
        let client = server.client.clone();
        let url = server.url("/query");
        tokio::spawn(async move { client.post(url).body(slow).send().await.unwrap().status() })
    };
    while metric(&server, "floe_queries_running").await < 1.0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, answer) = server
        .post("/query", &query("SELECT 1 AS one".to_owned()))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert!(
        answer.to_string().contains("limits.max_concurrent_queries"),
        "{answer}"
    );
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    let (status, answer) = server
        .post("/query", &query("SELECT 1 AS one".to_owned()))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    server.stop().await;
}
