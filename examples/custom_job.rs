//! A user-written job in Rust, registered under a class name and used from a YAML pipeline.
//!
//! Run it with `cargo run --example custom_job`. It generates a day of sample events in a
//! temporary folder, registers the `spend_bands` class, materialises a pipeline whose daily
//! job is that class, and prints the result.
//!
//! A job implements [`floe::Job`]: `validate` runs when the pipeline is loaded (so mistakes
//! surface before anything is scheduled) and `run` turns the inputs of one partition into a
//! result frame. The registry's factory receives the job's `config:` block from YAML.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use floe::clock::SystemClock;
use floe::dataset::write_events_parquet;
use floe::materialize::RunRequest;
use floe::results::ResultCache;
use floe::results::read_job_results;
use floe::sample::{SampleSpec, generate};
use floe::{Job, JobContext, JobError, JobOutput, JobRegistry, Materializer, Store};
use polars::prelude::*;

/// Purchases counted per spending band: below `low`, between, and at or above `high`.
#[derive(Debug)]
struct SpendBands {
    low: f64,
    high: f64,
}

impl Job for SpendBands {
    fn kind(&self) -> &str {
        "spend_bands"
    }

    fn validate(&self, input_names: &[String]) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if input_names.len() != 1 {
            problems.push("field `from`: spend_bands reads exactly one input".to_owned());
        }
        if self.low >= self.high {
            problems.push(format!(
                "field `rust.config`: low ({}) must be below high ({})",
                self.low, self.high
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    fn run(&self, ctx: &JobContext<'_>) -> Result<JobOutput, JobError> {
        let band = when(col("amount").lt(lit(self.low)))
            .then(lit("low"))
            .when(col("amount").lt(lit(self.high)))
            .then(lit("middle"))
            .otherwise(lit("high"));
        let frame = ctx
            .single_input()?
            .frame
            .clone()
            .filter(col("event").eq(lit("purchase")))
            .group_by([band.alias("band")])
            .agg([len().alias("purchases"), col("amount").sum().alias("sales")])
            .sort(["band"], SortMultipleOptions::default())
            .collect()?;
        Ok(JobOutput::frame(frame))
    }
}

const PIPELINE: &str = r#"
version: 1
name: bands
start: 2024-01-01T00:00:00Z
sources:
  events:
    format: parquet
    path: events/date={date}/hour={hour}/*.parquet
    time_column: ts
jobs:
  spend_bands_daily:
    grain: daily
    from: events
    rust:
      class: spend_bands
      config: { low: 20, high: 100 }
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut registry = JobRegistry::new();
    registry.register("spend_bands", |config| {
        let number = |key: &str| {
            config
                .get(key)
                .and_then(serde_yaml::Value::as_f64)
                .ok_or_else(|| format!("field `rust.config.{key}`: a number is required"))
        };
        Ok(Arc::new(SpendBands {
            low: number("low")?,
            high: number("high")?,
        }) as Arc<dyn Job>)
    });

    let workdir = tempfile::tempdir()?;
    let start = Utc
        .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .ok_or("bad start")?;
    let events = generate(&SampleSpec {
        seed: 1,
        start,
        hours: 24,
        rows: 50_000,
        users: 5_000,
    });
    write_events_parquet(&events, &workdir.path().join("events"), start, 24)?;

    let pipeline =
        floe::pipeline::parse_pipeline(PIPELINE, std::path::Path::new("bands.yaml"), &registry)?;
    let materializer = Materializer::new(
        Store::open(&workdir.path().join("store"))?,
        Arc::new(ResultCache::new(64 << 20)),
        workdir.path().to_path_buf(),
        Arc::new(SystemClock),
    );
    let end = start + chrono::TimeDelta::days(1);
    let request = RunRequest {
        jobs: None,
        from: start,
        to: end,
        force: false,
    };
    // As `floe run` does: a scheduler of its own records every run in the store.
    let report = floe::scheduler::run_alone(
        materializer.clone(),
        Arc::new(pipeline.clone()),
        &request,
        2,
        &mut |_| {},
    )?;
    println!("computed {} partition(s)", report.computed);
    let results = read_job_results(&materializer, &pipeline, "spend_bands_daily", start, end)?;
    println!("{}", results.frame);
    Ok(())
}
