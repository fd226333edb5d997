//! The web UI's pipeline page with a 10,000-partition grid (`cargo bench --bench ui`).
//!
//! Starts `floe serve`'s router in-process on 127.0.0.1:0 (as benches/jobserver.rs), uploads a
//! pipeline of `FLOE_BENCH_JOBS` (14) hourly jobs and measures, over `FLOE_BENCH_HOURS` (720)
//! hours, 14 × 720 = 10,080 partitions:
//!
//! 1. **The grid's JSON**: `GET /pipelines/{p}/grid` over loopback HTTP, answer read and
//!    parsed, median of 21 after a warm-up.
//! 2. **The page in a browser**: headless Chromium driven by `chromedriver` over WebDriver
//!    (Debian's `chromium` and `chromium-driver`), navigating to the pipeline's page
//!    (`/ui#/pipelines/{p}?from&to`) `FLOE_BENCH_LOADS` (11) times, each from `about:blank`. The
//!    page records, on the real clock: the grid's request until its answer is parsed
//!    (`fetch`), from there until the grid is laid out (`draw`), and the whole page, from
//!    navigation start to the grid laid out (`page`: the HTML, the script, the pipeline's
//!    request, its job graph, the grid's request and drawing). Medians. Without `chromedriver`
//!    the browser part is skipped with a note.
//!
//! The partitions have no runs (all `missing`): drawing a cell costs the same in any state, and
//! the store read is measured over a real history by benches/scheduler.rs.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use floe::JobRegistry;
use floe::clock::{Clock, SystemClock};
use floe::server::{ServerConfig, build_state};
use serde_json::{Value, json};

mod common;

use common::{
    CpuTicks, env_usize, median, serve_in_process, steal_line, with_commas, write_sample_week,
};

fn pipeline_yaml(jobs: usize) -> String {
    let mut yaml = String::from(
        "version: 1\nname: wide\nstart: 2024-01-01T00:00:00Z\nsources:\n  events:\n    \
         format: parquet\n    path: events/date={date}/hour={hour}/*.parquet\n    \
         time_column: ts\njobs:\n",
    );
    for job in 0..jobs {
        yaml.push_str(&format!(
            "  users_{job:02}:\n    grain: hourly\n    from: events\n    count_distinct:\n      \
             column: user_id\n"
        ));
    }
    yaml
}

/// `chromedriver` on a free port, and the WebDriver session it opened for headless Chromium.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: reqwest::Client,
}

impl Browser {
    async fn start(client: reqwest::Client) -> Result<Browser, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start chromedriver: {e}"))?;
        let base = format!("http://127.0.0.1:{port}");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions",
            ]},
        }}});
        let mut last = String::new();
        for _ in 0..100 {
            match client
                .post(format!("{base}/session"))
                .json(&capabilities)
                .send()
                .await
            {
                Ok(response) => {
                    let body: Value = response.json().await.map_err(|e| e.to_string())?;
                    let session = body["value"]["sessionId"]
                        .as_str()
                        .ok_or_else(|| format!("no session: {body}"))?
                        .to_owned();
                    return Ok(Browser {
                        driver,
                        base,
                        session,
                        client,
                    });
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("chromedriver did not answer: {last}"))
    }

    async fn command(&self, path: &str, body: Value) -> Value {
        let response = self
            .client
            .post(format!("{}/session/{}/{path}", self.base, self.session))
            .json(&body)
            .send()
            .await
            .expect("webdriver");
        let answer: Value = response.json().await.expect("webdriver JSON");
        answer["value"].clone()
    }

    async fn navigate(&self, url: &str) {
        self.command("url", json!({ "url": url })).await;
    }

    /// The page's figures once the grid is drawn: (fetch, draw, page) in ms.
    async fn grid_timings(&self) -> (f64, f64, f64) {
        let script = "const g = document.getElementById('grid'); \
                      return g && g.dataset.pageMs ? \
                      [g.dataset.fetchMs, g.dataset.drawMs, g.dataset.pageMs, \
                       document.querySelectorAll('.cell').length, \
                       document.querySelector('.error')?.textContent ?? null] : null;";
        for _ in 0..600 {
            let value = self
                .command("execute/sync", json!({"script": script, "args": []}))
                .await;
            if let Some(values) = value.as_array() {
                if let Some(error) = values[4].as_str() {
                    panic!("the page shows an error: {error}");
                }
                let number = |i: usize| {
                    values[i]
                        .as_str()
                        .and_then(|v| v.parse().ok())
                        .expect("timing")
                };
                assert!(values[3].as_u64().unwrap_or(0) >= 10_000, "{value}");
                return (number(0), number(1), number(2));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the grid was never drawn");
    }

    async fn quit(mut self) {
        let _ = self
            .client
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn main() {
    let jobs = env_usize("FLOE_BENCH_JOBS", 14).max(1);
    let hours = env_usize("FLOE_BENCH_HOURS", 720).max(1);
    let loads = env_usize("FLOE_BENCH_LOADS", 11).max(1);
    let cpu_start = CpuTicks::now();
    let dir = tempfile::tempdir().expect("tempdir");
    write_sample_week(20_000, &dir.path().join("data"));

    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("bench-server")
        .build()
        .expect("runtime");
    let config = ServerConfig {
        pipelines: Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines"),
        data_dir: dir.path().join("data"),
        store: dir.path().join("store"),
        ..ServerConfig::default()
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state = build_state(
        config,
        JobRegistry::new(),
        clock,
        server_runtime.handle().clone(),
    )
    .expect("state");
    let base = serve_in_process(&server_runtime, state);

    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    client_runtime.block_on(async {
        let client = reqwest::Client::new();
        let uploaded = client
            .post(format!("{base}/binaries/wide"))
            .body(pipeline_yaml(jobs))
            .send()
            .await
            .expect("upload");
        assert!(uploaded.status().is_success(), "{:?}", uploaded.text().await);
        let from: DateTime<Utc> = "2024-01-01T00:00:00Z".parse().expect("from");
        let to = from + TimeDelta::hours(hours as i64);
        let range = format!(
            "from={}&to={}",
            from.format("%Y-%m-%dT%H:%M:%SZ"),
            to.format("%Y-%m-%dT%H:%M:%SZ")
        );

        // 1. The JSON behind the grid.
        let url = format!("{base}/pipelines/wide/grid?{range}");
        let mut json_ms = Vec::new();
        let mut cells = 0;
        let mut bytes = 0;
        for round in 0..22 {
            let started = Instant::now();
            let response = client.get(&url).send().await.expect("grid");
            let body = response.bytes().await.expect("body");
            let grid: Value = serde_json::from_slice(&body).expect("grid JSON");
            if round > 0 {
                json_ms.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            cells = grid["jobs"]
                .as_array()
                .expect("jobs")
                .iter()
                .map(|job| job["cells"].as_array().map_or(0, Vec::len))
                .sum::<usize>();
            bytes = body.len();
        }
        println!(
            "\n## The web UI's pipeline page (`cargo bench --bench ui`): {} partitions ({jobs} hourly jobs × {hours} h)\n",
            with_commas(cells)
        );
        println!("| measure | median |\n|---|---:|");
        println!(
            "| `GET /pipelines/wide/grid`: {} cells, {:.1} MiB of JSON, loopback HTTP, parsed (of 21) | {:.1} ms |",
            with_commas(cells),
            bytes as f64 / f64::from(1 << 20),
            median(&mut json_ms)
        );

        // 2. The page in headless Chromium.
        match Browser::start(client.clone()).await {
            Err(why) => println!("| the page in headless Chromium | skipped: {why} |"),
            Ok(browser) => {
                let page = format!("{base}/ui#/pipelines/wide?{range}");
                let (mut fetch, mut draw, mut whole) = (Vec::new(), Vec::new(), Vec::new());
                for round in 0..=loads {
                    browser.navigate("about:blank").await;
                    browser.navigate(&page).await;
                    let (f, d, p) = browser.grid_timings().await;
                    if round > 0 {
                        fetch.push(f);
                        draw.push(d);
                        whole.push(p);
                    }
                }
                browser.quit().await;
                println!(
                    "| the grid's request in the page, answer parsed (of {loads}) | {:.1} ms |",
                    median(&mut fetch)
                );
                println!(
                    "| drawing the grid, laid out (of {loads}) | {:.1} ms |",
                    median(&mut draw)
                );
                println!(
                    "| **the page**: navigation start to the grid laid out (of {loads}) | **{:.1} ms** |",
                    median(&mut whole)
                );
            }
        }
    });
    println!("\n{}", steal_line(cpu_start));
}
