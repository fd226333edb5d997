//! CSV and NDJSON sources with naive timestamps in a non-UTC source timezone: the path
//! template renders in that zone, rows are windowed by instant, results come out UTC-aware.

use floe::materialize::RunRequest;
use floe::results::read_job_results;
use floe::{JobRegistry, Materializer};
use polars::prelude::*;

use super::common::{RunAlone, utc};

const PIPELINE: &str = "version: 1
name: formats
start: 2023-12-31T00:00:00Z
sources:
  csv_logs:
    format: csv
    path: logs/{date}.csv
    time_column: ts
    timezone: Europe/Paris
  json_logs:
    format: ndjson
    path: json/{date}.ndjson
    time_column: ts
    timezone: Europe/Paris
jobs:
  csv_hourly:
    grain: hourly
    from: csv_logs
    select: {}
  json_hourly:
    grain: hourly
    from: json_logs
    select: {}
";

#[test]
fn naive_local_timestamps_are_windowed_by_instant_and_written_as_utc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("logs")).expect("mkdir");
    std::fs::create_dir_all(data.join("json")).expect("mkdir");
    // Paris is UTC+1 in January: 00:10 and 00:50 local fall in the UTC hour 23:00 of Dec 31.
    std::fs::write(
        data.join("logs/2024-01-01.csv"),
        "ts,user,amount\n2024-01-01 00:10:00,a,1.5\n2024-01-01 00:50:00,b,2.0\n2024-01-01 01:05:00,a,4.0\n",
    )
    .expect("write csv");
    std::fs::write(
        data.join("json/2024-01-01.ndjson"),
        "{\"ts\":\"2024-01-01T00:10:00\",\"user\":\"a\"}\n{\"ts\":\"2024-01-01T00:50:00\",\"user\":\"b\"}\n{\"ts\":\"2024-01-01T01:05:00\",\"user\":\"a\"}\n",
    )
    .expect("write ndjson");

    let pipeline = floe::pipeline::parse_pipeline(
        PIPELINE,
        std::path::Path::new("formats.yaml"),
        &JobRegistry::new(),
    )
    .unwrap_or_else(|err| panic!("{err}"));
    let store = floe::Store::open(&dir.path().join("store")).expect("store");
    let materializer = Materializer::new(
        store,
        std::sync::Arc::new(floe::results::ResultCache::new(16 << 20)),
        data,
        std::sync::Arc::new(floe::clock::ManualClock::new(utc(2024, 2, 1, 0))),
    );
    let (from, to) = (utc(2023, 12, 31, 23), utc(2024, 1, 1, 1));
    let request = RunRequest {
        jobs: None,
        from,
        to,
        force: false,
    };
    let report = materializer.run(&pipeline, &request, |_| {}).expect("run");
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.computed, 4);

    for job in ["csv_hourly", "json_hourly"] {
        let frame = read_job_results(&materializer, &pipeline, job, from, to)
            .expect("results")
            .frame;
        let ts = frame.column("ts").expect("ts column");
        assert_eq!(
            ts.dtype(),
            &DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)),
            "{job}"
        );
        let starts: Vec<i64> = frame
            .column("partition_start")
            .expect("partition_start")
            .cast(&DataType::Int64)
            .expect("cast")
            .as_materialized_series()
            .i64()
            .expect("i64")
            .iter()
            .flatten()
            .collect();
        let (first_hour, second_hour) = (
            utc(2023, 12, 31, 23).timestamp_millis(),
            utc(2024, 1, 1, 0).timestamp_millis(),
        );
        assert_eq!(starts, vec![first_hour, first_hour, second_hour], "{job}");
        let first_ts = ts
            .cast(&DataType::Int64)
            .expect("cast")
            .as_materialized_series()
            .i64()
            .expect("i64")
            .get(0);
        assert_eq!(
            first_ts,
            Some((utc(2023, 12, 31, 23).timestamp() + 600) * 1_000_000),
            "{job}: 00:10 Paris is 23:10 UTC"
        );
    }
}
