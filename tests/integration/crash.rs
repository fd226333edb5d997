//! Crash injection: `floe serve` runs as a child process and is killed with SIGKILL at random
//! moments during a backfill, then restarted on the same store, again and again. At the end
//! every partition of the range is materialised exactly once (`commits == 1`), none is missing
//! or left running, and every result equals the one an uninterrupted run computes.
//!
//! Scale: `FLOE_CRASH_DAYS` (default 2 days of hourly data, about 110 runs) and
//! `FLOE_CRASH_KILLS` (default 4; the kills stop early once the backfill has finished). The larger run: `FLOE_CRASH_DAYS=14 FLOE_CRASH_KILLS=25
//! cargo test --test integration crash -- --nocapture`. `FLOE_CRASH_SEED` replays the kill
//! moments of a failed run (the seed is printed).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use floe::Materializer;
use floe::clock::{Clock, ManualClock};
use floe::materialize::RunRequest;
use floe::results::ResultCache;
use floe::results::read_job_results;
use floe::store::{RunKey, RunState, Store};
use polars::prelude::*;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::common::{RunAlone, SampleWorld, repo_path, shop_pipeline, utc};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `floe serve` child process and the address it listens on.
struct ServerProcess {
    child: Child,
    base: String,
}

impl ServerProcess {
    fn start(world: &SampleWorld, config: &Path) -> ServerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_floe"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--bind")
            .arg("127.0.0.1:0")
            .arg("--pipelines")
            .arg(repo_path("pipelines"))
            .arg("--data-dir")
            .arg(world.data_dir())
            .arg("--store")
            .arg(world.store_dir())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start floe serve");
        // The server prints its address once it listens; the rest of stderr is drained so the
        // child never blocks on a full pipe.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(address) = line.strip_prefix("floe serve: listening on ") {
                    let _ = tx.send(address.to_owned());
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("floe serve did not start listening within 60 s");
        ServerProcess { child, base }
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL"); // SIGKILL on Unix: no shutdown code runs
        self.child.wait().expect("reap");
    }

    /// SIGTERM, then wait for the graceful shutdown (which flushes the store).
    fn terminate(mut self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "floe serve exited with {status}");
    }
}

/// The backfill's status; a backfill the server no longer knows fails the test at once.
async fn backfill_state(client: &reqwest::Client, base: &str, id: &str) -> Value {
    let response = client
        .get(format!("{base}/backfills/{id}"))
        .send()
        .await
        .expect("GET backfill");
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert!(status.is_success(), "backfill {id} lost: {status} {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_backfill_never_loses_or_repeats_a_partition() {
    let days = env_number("FLOE_CRASH_DAYS", 2).clamp(1, 28) as u32;
    let kills = env_number("FLOE_CRASH_KILLS", 4);
    let clock_seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos().into());
    let seed = env_number("FLOE_CRASH_SEED", clock_seed);
    eprintln!("crash test: {days} days, {kills} kills, FLOE_CRASH_SEED={seed}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);

    let world = SampleWorld::new(10_000 * days as usize, days);
    let config = world.dir.path().join("floe.yaml");
    std::fs::write(&config, "scheduler:\n  recurring: false\n  workers: 2\n").expect("config");
    let (from, to) = (
        world.start,
        world.start + chrono::TimeDelta::days(days.into()),
    );
    let client = reqwest::Client::new();

    let server = ServerProcess::start(&world, &config);
    let started: Value = client
        .post(format!("{}/pipelines/shop/backfills", server.base))
        .body(json!({"from": from, "to": to}).to_string())
        .header("content-type", "application/json")
        .send()
        .await
        .expect("POST backfill")
        .json()
        .await
        .expect("json");
    let id = started["id"].as_str().expect("backfill id").to_owned();
    let total = started["total"].as_u64().expect("total");
    assert!(total > 0, "{started}");

    // Kill at random moments while the backfill runs; each restart resumes it.
    let mut server = server;
    let mut killed_mid_backfill = 0;
    for round in 0..kills {
        let pause = Duration::from_millis(rng.random_range(50..400));
        tokio::time::sleep(pause).await;
        let status = backfill_state(&client, &server.base, &id).await;
        if status["state"] == "finished" {
            eprintln!("round {round}: the backfill finished; no more kills");
            break;
        } else {
            killed_mid_backfill += 1;
            eprintln!(
                "round {round}: SIGKILL after {pause:?} at {}/{total} done",
                total - status["remaining"].as_u64().unwrap_or(0)
            );
        }
        server.kill();
        server = ServerProcess::start(&world, &config);
    }

    // The last life: the backfill resumes and finishes.
    let deadline = Instant::now() + Duration::from_secs(300);
    let last = loop {
        let status = backfill_state(&client, &server.base, &id).await;
        if status["state"] == "finished" {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "backfill never finished: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    server.terminate();
    assert!(
        kills == 0 || killed_mid_backfill > 0,
        "every kill landed after the backfill finished; the test proved nothing"
    );
    assert_eq!(last["failed"], 0, "{last}");
    assert_eq!(last["cancelled"], 0, "{last}");
    assert_eq!(last["succeeded"].as_u64(), Some(total), "{last}");

    // Every planned partition exists, succeeded, and was committed exactly once.
    let pipeline = shop_pipeline();
    let store = Store::open(&world.store_dir()).expect("reopen the store");
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(utc(2024, 2, 1, 0)));
    let crashed = Materializer::new(
        store.clone(),
        Arc::new(ResultCache::new(64 << 20)),
        world.data_dir(),
        clock.clone(),
    );
    let request = RunRequest {
        jobs: None,
        from,
        to,
        force: false,
    };
    let planned: BTreeSet<RunKey> = crashed
        .plan(&pipeline, &request)
        .expect("plan")
        .runs
        .into_iter()
        .map(|run| RunKey::new("shop", run.job, run.window.start))
        .collect();
    assert_eq!(planned.len() as u64, total);
    let stored = store.runs_of_pipeline("shop").expect("runs");
    let stored_keys: BTreeSet<RunKey> = stored.iter().map(|(key, _)| key.clone()).collect();
    assert_eq!(stored_keys, planned, "missing or extra runs");
    for (key, record) in &stored {
        assert_eq!(record.state, RunState::Succeeded, "{key}: {record:?}");
        assert_eq!(
            record.commits, 1,
            "{key} was materialised {} times",
            record.commits
        );
    }

    // And every result is the one an uninterrupted run computes.
    let reference_dir = tempfile::tempdir().expect("tempdir");
    let reference = Materializer::new(
        Store::open(reference_dir.path()).expect("reference store"),
        Arc::new(ResultCache::new(64 << 20)),
        world.data_dir(),
        clock,
    );
    let report = reference
        .run(&pipeline, &request, |_| {})
        .expect("reference run");
    assert!(report.is_success());
    for job in pipeline.dag.topological_order() {
        let got = read_job_results(&crashed, &pipeline, job, from, to).expect("results");
        let want = read_job_results(&reference, &pipeline, job, from, to).expect("reference");
        assert!(got.missing.is_empty(), "{job}: missing {:?}", got.missing);
        assert_same_rows(job, &got.frame, &want.frame);
    }
}

/// Same rows in any order; floats within a relative 1e-9 (sums may add in another order).
fn assert_same_rows(job: &str, got: &DataFrame, want: &DataFrame) {
    assert_eq!(got.schema(), want.schema(), "{job}: schemas differ");
    assert_eq!(got.height(), want.height(), "{job}: row counts differ");
    let columns: Vec<PlSmallStr> = got.get_column_names_owned();
    let sort = |frame: &DataFrame| {
        frame
            .sort(columns.clone(), SortMultipleOptions::default())
            .expect("sort")
    };
    let (got, want) = (sort(got), sort(want));
    for name in &columns {
        let (a, b) = (got.column(name).unwrap(), want.column(name).unwrap());
        if a.dtype().is_float() {
            let a = a.cast(&DataType::Float64).unwrap();
            let b = b.cast(&DataType::Float64).unwrap();
            for (x, y) in a.f64().unwrap().iter().zip(b.f64().unwrap().iter()) {
                let (x, y) = (x.unwrap_or(f64::NAN), y.unwrap_or(f64::NAN));
                let close = (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0);
                assert!(
                    close || (x.is_nan() && y.is_nan()),
                    "{job}.{name}: {x} ≠ {y}"
                );
            }
        } else {
            assert!(
                a.as_materialized_series()
                    .equals_missing(b.as_materialized_series()),
                "{job}.{name} differs"
            );
        }
    }
}
