//! The hostile client: inputs that once crashed the server, read host files or took unbounded
//! work, sent to every entry point that takes them. Each case must get a clear 4xx (or a job
//! in ERROR) and leave the server serving.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

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

async fn upload(server: &TestServer, app: &str, yaml: &str) -> (StatusCode, Value) {
    let response = server
        .client
        .post(server.url(&format!("/binaries/{app}")))
        .header("content-type", "application/yaml")
        .body(yaml.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
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
    let (status, answer) = upload(
        &server,
        "probe",
        &pipeline_yaml("events/*.csv", &or_chain(5_000)),
    )
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
        let (status, answer) = upload(&server, "probe", &pipeline_yaml(path, "v > 0")).await;
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
        let (status, answer) =
            upload(&server, "probe", &pipeline_yaml("leak/*.csv", "v > 0")).await;
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
    let (status, answer) = upload(&server, "deep", &nested).await;
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
    let results = "/pipelines/shop/jobs/purchases_hourly/results?from=2024-01-01T05:00:00Z&to=2024-01-01T06:00:00Z";
    let daily =
        "/pipelines/shop/jobs/sales_per_category_daily/results?from=2024-01-01&to=2024-01-02";
    let query = json!({
        "sql": "SELECT count(*) AS n FROM shop__purchases_hourly",
        "from": "2024-01-01T05:00:00Z", "to": "2024-01-01T06:00:00Z",
    })
    .to_string();

    // Another definition of `shop` computes the hour and the day built on it.
    assert_eq!(
        upload(&server, "shop", &replaced).await.0,
        StatusCode::CREATED
    );
    for (job, partition) in [
        ("purchases_hourly", hour),
        ("sales_per_category_daily", r#"partition = "2024-01-01""#),
    ] {
        let (status, report) = server
            .post(
                &format!("/jobs?appName=shop&classPath={job}&sync=true&timeout=60"),
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
        upload(&server, "shop", &original).await.0,
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
            r#"input { results = purchases_hourly, app = shop, from = "2024-01-01T05:00:00Z", to = "2024-01-01T06:00:00Z" }
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
            "/jobs?appName=shop&classPath=purchases_hourly&sync=true&timeout=60",
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
