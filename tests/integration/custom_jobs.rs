//! A job written in Rust, registered under a class name and used from YAML.

use std::sync::Arc;

use floe::materialize::RunRequest;
use floe::results::read_job_results;
use floe::{Job, JobContext, JobError, JobOutput, JobRegistry};
use polars::prelude::*;

use super::common::{RunAlone, SampleWorld, utc};

/// Rows whose amount is at least `threshold`, counted per event type.
#[derive(Debug)]
struct BigSpenders {
    threshold: f64,
}

impl Job for BigSpenders {
    fn kind(&self) -> &str {
        "big_spenders"
    }

    fn validate(&self, input_names: &[String]) -> Result<(), Vec<String>> {
        if input_names.len() == 1 {
            Ok(())
        } else {
            Err(vec!["field `from`: needs exactly one input".to_owned()])
        }
    }

    fn run(&self, ctx: &JobContext<'_>) -> Result<JobOutput, JobError> {
        let frame = ctx
            .single_input()?
            .frame
            .clone()
            .filter(col("amount").gt_eq(lit(self.threshold)))
            .group_by([col("event")])
            .agg([len().alias("rows")])
            .sort(["event"], SortMultipleOptions::default())
            .collect()?;
        Ok(JobOutput::frame(frame))
    }
}

fn registry() -> JobRegistry {
    let mut registry = JobRegistry::new();
    registry.register("big_spenders", |config| {
        let threshold = config
            .get("threshold")
            .and_then(serde_yaml::Value::as_f64)
            .ok_or_else(|| "field `config.threshold`: a number is required".to_owned())?;
        Ok(Arc::new(BigSpenders { threshold }) as Arc<dyn Job>)
    });
    registry
}

const PIPELINE: &str = "version: 1
name: custom
start: 2024-01-01T00:00:00Z
sources:
  events:
    format: parquet
    path: events/date={date}/hour={hour}/*.parquet
    time_column: ts
jobs:
  big:
    grain: daily
    from: events
    rust:
      class: big_spenders
      config:
        threshold: 100
";

#[test]
fn a_registered_rust_job_runs_like_a_built_in_one() {
    let world = SampleWorld::new(5_000, 1);
    let pipeline =
        floe::pipeline::parse_pipeline(PIPELINE, std::path::Path::new("custom.yaml"), &registry())
            .expect("valid");
    let materializer = world.materializer();
    let request = RunRequest {
        jobs: None,
        from: utc(2024, 1, 1, 0),
        to: utc(2024, 1, 2, 0),
        force: false,
    };
    let report = materializer.run(&pipeline, &request, |_| {}).expect("run");
    assert_eq!(report.computed, 1, "{report:?}");
    let frame = read_job_results(
        &materializer,
        &pipeline,
        "big",
        utc(2024, 1, 1, 0),
        utc(2024, 1, 2, 0),
    )
    .expect("results")
    .frame;
    let expected = (0..world.events.len())
        .filter(|&i| world.events.amount[i].is_some_and(|amount| amount >= 100.0))
        .count() as u64;
    let rows = frame
        .column("rows")
        .expect("rows")
        .cast(&DataType::UInt64)
        .expect("cast");
    let total: u64 = rows
        .as_materialized_series()
        .u64()
        .expect("u64")
        .iter()
        .flatten()
        .sum();
    assert_eq!(total, expected);
}

#[test]
fn an_unknown_class_or_bad_config_is_a_validation_error() {
    let unknown = PIPELINE.replace("class: big_spenders", "class: big_spender");
    let err =
        floe::pipeline::parse_pipeline(&unknown, std::path::Path::new("custom.yaml"), &registry())
            .expect_err("unknown class");
    assert_eq!(
        err.to_string(),
        "custom.yaml:13:5: job `big`, field `rust`: unknown job class `big_spender` (registered: big_spenders)"
    );
    let bad = PIPELINE.replace("threshold: 100", "limit: 100");
    let err =
        floe::pipeline::parse_pipeline(&bad, std::path::Path::new("custom.yaml"), &registry())
            .expect_err("bad config");
    assert_eq!(
        err.to_string(),
        "custom.yaml:15:7: job `big`, field `rust.config.threshold`: a number is required"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_parses_each_pipeline_file_once_at_start() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let world = SampleWorld::new(1_000, 1);
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("custom.yaml"), PIPELINE).unwrap();
    // The class is built once per parse of the pipeline.
    let built = Arc::new(AtomicUsize::new(0));
    let mut registry = JobRegistry::new();
    let counter = built.clone();
    registry.register("big_spenders", move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::new(BigSpenders { threshold: 100.0 }) as Arc<dyn Job>)
    });
    let mut config = floe::server::ServerConfig {
        pipelines: folder.path().to_path_buf(),
        data_dir: world.data_dir(),
        store: world.store_dir(),
        ..floe::server::ServerConfig::default()
    };
    config.scheduler.recurring = false;
    let runtime = tokio::runtime::Handle::current();
    let clock = Arc::new(floe::clock::ManualClock::new(utc(2024, 2, 1, 0)));
    let state = tokio::task::spawn_blocking(move || {
        floe::server::build_state(config, registry, clock, runtime)
    })
    .await
    .unwrap()
    .expect("the server starts");
    assert_eq!(
        built.load(Ordering::SeqCst),
        1,
        "custom.yaml was parsed once"
    );
    assert!(state.core.catalog.get("custom").is_some());
}
