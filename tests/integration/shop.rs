//! The example pipeline end to end on generated data: Q1–Q3 checked against the plain-Rust
//! oracle, then cache reuse: a second run computes nothing, and a change recomputes exactly
//! the changed job and its downstream.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use floe::materialize::{RunOutcome, RunRequest};
use floe::results::read_job_results;
use floe::sample::{
    oracle_distinct_registered_users, oracle_sales_per_category, oracle_top_cities_by_sales,
};
use floe::store::RunStore;
use floe::{JobRegistry, Materializer, Pipeline};
use polars::prelude::*;

use super::common::{RunAlone, SampleWorld, shop_pipeline, utc};

fn week() -> RunRequest {
    RunRequest {
        jobs: None,
        from: utc(2024, 1, 1, 0),
        to: utc(2024, 1, 8, 0),
        force: false,
    }
}

/// Runs `request` and counts computed runs per job.
fn computed_per_job(
    materializer: &Materializer,
    pipeline: &Pipeline,
    request: &RunRequest,
) -> BTreeMap<String, usize> {
    let mut computed = BTreeMap::new();
    let report = materializer
        .run(pipeline, request, |event| {
            if let RunOutcome::Computed { .. } = event.outcome {
                *computed.entry(event.key.job.clone()).or_insert(0) += 1;
            }
            if let RunOutcome::Failed { error } = &event.outcome {
                panic!("{} failed: {error}", event.key);
            }
        })
        .expect("run");
    assert!(report.is_success(), "{report:?}");
    computed
}

/// Expected computed-run counts per job.
fn computed_counts(expected: &[(&str, usize)]) -> BTreeMap<String, usize> {
    expected
        .iter()
        .map(|(job, n)| ((*job).to_owned(), *n))
        .collect()
}

fn results(
    materializer: &Materializer,
    pipeline: &Pipeline,
    job: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> DataFrame {
    let results = read_job_results(materializer, pipeline, job, from, to).expect("results");
    assert!(
        results.missing.is_empty(),
        "{job}: missing partitions {:?}",
        results.missing
    );
    results.frame
}

fn strings(frame: &DataFrame, column: &str) -> Vec<String> {
    let column = frame
        .column(column)
        .expect("column")
        .as_materialized_series()
        .clone();
    column
        .str()
        .expect("string column")
        .iter()
        .map(|v| v.expect("not null").to_owned())
        .collect()
}

fn floats(frame: &DataFrame, column: &str) -> Vec<f64> {
    let column = frame
        .column(column)
        .expect("column")
        .as_materialized_series()
        .clone();
    column
        .f64()
        .expect("f64 column")
        .iter()
        .map(|v| v.expect("not null"))
        .collect()
}

fn integers(frame: &DataFrame, column: &str) -> Vec<u64> {
    let column = frame
        .column(column)
        .expect("column")
        .cast(&DataType::UInt64)
        .expect("cast");
    column
        .as_materialized_series()
        .u64()
        .expect("u64")
        .iter()
        .map(|v| v.expect("not null"))
        .collect()
}

fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= 1e-6 * expected.abs().max(1.0),
        "{what}: {actual} != {expected}"
    );
}

#[test]
fn q1_q2_q3_match_the_oracle_and_reruns_reuse_the_cache() {
    let world = SampleWorld::new(60_000, 7);
    let pipeline = shop_pipeline();
    let materializer = world.materializer();
    let ms = |t: DateTime<Utc>| t.timestamp_millis();

    let computed = computed_per_job(&materializer, &pipeline, &week());
    let expected_counts = computed_counts(&[
        ("registered_users_hourly", 168),
        ("purchases_hourly", 168),
        ("registered_users_daily", 7),
        ("sales_per_category_daily", 7),
        ("sales_per_city_daily", 7),
        ("category_report_daily", 7),
        ("top_cities_weekly", 1),
    ]);
    assert_eq!(computed, expected_counts);

    // Q1 per hour, every hour of the week.
    let hourly = results(
        &materializer,
        &pipeline,
        "registered_users_hourly",
        world.start,
        utc(2024, 1, 8, 0),
    );
    let counts = integers(&hourly, "distinct_count");
    assert_eq!(counts.len(), 168);
    for (hour, count) in counts.iter().enumerate() {
        let from = world.start + Duration::hours(hour as i64);
        let expected = oracle_distinct_registered_users(
            &world.events,
            ms(from),
            ms(from + Duration::hours(1)),
        );
        assert_eq!(*count, expected, "Q1 hour {hour}");
    }
    assert!(
        counts.iter().sum::<u64>() > 0,
        "the sample must contain registrations"
    );

    // Q1 rolled up per day from the hourly key sets: exact, not a sum of hourly counts.
    let daily = results(
        &materializer,
        &pipeline,
        "registered_users_daily",
        world.start,
        utc(2024, 1, 8, 0),
    );
    for (day, count) in integers(&daily, "distinct_count").iter().enumerate() {
        let from = world.start + Duration::days(day as i64);
        let expected =
            oracle_distinct_registered_users(&world.events, ms(from), ms(from + Duration::days(1)));
        assert_eq!(*count, expected, "Q1 daily roll-up, day {day}");
    }

    // Q2: the week's top 10 cities, computed from the cached daily partials.
    let top = results(
        &materializer,
        &pipeline,
        "top_cities_weekly",
        world.start,
        utc(2024, 1, 8, 0),
    );
    let expected =
        oracle_top_cities_by_sales(&world.events, ms(world.start), ms(utc(2024, 1, 8, 0)), 10);
    assert_eq!(
        strings(&top, "city"),
        expected.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>()
    );
    for (actual, (city, sales)) in floats(&top, "sales").iter().zip(&expected) {
        assert_close(*actual, *sales, city);
    }

    // Q3: sales and orders per category for each day.
    for day in 0..7 {
        let from = world.start + Duration::days(day);
        let to = from + Duration::days(1);
        let frame = results(
            &materializer,
            &pipeline,
            "sales_per_category_daily",
            from,
            to,
        );
        let expected = oracle_sales_per_category(&world.events, ms(from), ms(to));
        assert_eq!(
            strings(&frame, "category"),
            expected
                .iter()
                .map(|(c, _, _)| c.clone())
                .collect::<Vec<_>>()
        );
        for ((sales, orders), (category, want_sales, want_orders)) in floats(&frame, "sales")
            .iter()
            .zip(integers(&frame, "orders"))
            .zip(&expected)
        {
            assert_close(*sales, *want_sales, category);
            assert_eq!(orders, *want_orders, "{category} orders");
        }
    }

    // A second run finds every partition fresh.
    let report = materializer.run(&pipeline, &week(), |_| {}).expect("rerun");
    assert_eq!(
        (report.computed, report.fresh, report.planned),
        (0, 365, 365)
    );

    // A changed job recomputes itself and its downstream only.
    let text = std::fs::read_to_string(super::common::repo_path("pipelines/shop.yaml"))
        .expect("shop.yaml");
    let changed = text.replace(
        "        sales: sum(amount)\n\n  top_cities_weekly",
        "        sales: sum(amount)\n        orders: count(*)\n\n  top_cities_weekly",
    );
    assert_ne!(changed, text, "the edit must apply");
    let changed = floe::pipeline::parse_pipeline(
        &changed,
        std::path::Path::new("shop.yaml"),
        &JobRegistry::new(),
    )
    .expect("valid");
    let computed = computed_per_job(&materializer, &changed, &week());
    let expected = computed_counts(&[("sales_per_city_daily", 7), ("top_cities_weekly", 1)]);
    assert_eq!(computed, expected);

    // A rewritten source file recomputes that hour and everything built on it.
    let file = world
        .data_dir()
        .join("events/date=2024-01-03/hour=10/part-0.parquet");
    let bytes = std::fs::read(&file).expect("read");
    std::fs::write(&file, bytes).expect("rewrite with the same bytes");
    let modified = std::fs::File::options()
        .write(true)
        .open(&file)
        .expect("open");
    modified
        .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .expect("touch");
    let computed = computed_per_job(&materializer, &changed, &week());
    let expected = computed_counts(&[
        ("registered_users_hourly", 1),
        ("purchases_hourly", 1),
        ("registered_users_daily", 1),
        ("sales_per_category_daily", 1),
        ("sales_per_city_daily", 1),
        ("category_report_daily", 1),
        ("top_cities_weekly", 1),
    ]);
    assert_eq!(computed, expected);
}

#[test]
fn one_job_with_its_dependencies_and_nothing_else() {
    let world = SampleWorld::new(5_000, 2);
    let pipeline = shop_pipeline();
    let materializer = world.materializer();
    let request = RunRequest {
        jobs: Some(vec!["sales_per_category_daily".to_owned()]),
        from: utc(2024, 1, 2, 0),
        to: utc(2024, 1, 3, 0),
        force: false,
    };
    let computed = computed_per_job(&materializer, &pipeline, &request);
    let expected = computed_counts(&[("purchases_hourly", 24), ("sales_per_category_daily", 1)]);
    assert_eq!(computed, expected);
}

#[test]
fn a_missing_source_partition_fails_that_run_and_blocks_its_downstream() {
    let world = SampleWorld::new(5_000, 1);
    std::fs::remove_dir_all(world.data_dir().join("events/date=2024-01-01/hour=05"))
        .expect("remove hour");
    let pipeline = shop_pipeline();
    let materializer = world.materializer();
    let request = RunRequest {
        jobs: Some(vec!["sales_per_category_daily".to_owned()]),
        from: utc(2024, 1, 1, 0),
        to: utc(2024, 1, 2, 0),
        force: false,
    };
    let report = materializer.run(&pipeline, &request, |_| {}).expect("run");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let (key, error) = &report.failed[0];
    assert_eq!(key.job, "purchases_hourly");
    assert!(error.contains("source `events`: no files match"), "{error}");
    assert!(error.contains("date=2024-01-01/hour=05"), "{error}");
    assert_eq!(report.upstream_failed, 1);
    assert_eq!(report.computed, 23);
}

#[test]
fn every_outcome_of_a_manual_run_is_recorded_and_a_run_a_crash_left_running_is_requeued() {
    use floe::store::{RunKey, RunState};
    let world = SampleWorld::new(2_000, 1);
    // Hour 00 has no file: its run fails before it starts, and the daily run cannot run.
    std::fs::remove_dir_all(world.data_dir().join("events/date=2024-01-01/hour=00")).unwrap();
    let materializer = world.materializer();
    let pipeline = shop_pipeline();
    let request = RunRequest {
        jobs: Some(vec!["sales_per_category_daily".into()]),
        from: utc(2024, 1, 1, 0),
        to: utc(2024, 1, 2, 0),
        force: false,
    };
    let report = materializer.run(&pipeline, &request, |_| {}).unwrap();
    assert_eq!(
        (report.failed.len(), report.upstream_failed, report.computed),
        (1, 1, 23)
    );
    let store = materializer.store();
    let hour = |h| RunKey::new("shop", "purchases_hourly", utc(2024, 1, 1, h));
    let first = store
        .run(&hour(0))
        .unwrap()
        .expect("the failure is recorded");
    assert_eq!(first.state, RunState::Failed, "{first:?}");
    assert!(first.error.is_some_and(|e| !e.is_empty()));
    let daily = store
        .run(&RunKey::new(
            "shop",
            "sales_per_category_daily",
            utc(2024, 1, 1, 0),
        ))
        .unwrap()
        .expect("the blocked run is recorded");
    assert_eq!(daily.state, RunState::UpstreamFailed, "{daily:?}");
    assert!(
        daily
            .error
            .is_some_and(|e| e.contains("purchases_hourly@2024-01-01T00:00:00")),
    );

    // A process that died while computing hour 05 left it Running: the next manual run's
    // scheduler puts it back in the queue and computes it, one attempt more.
    let interrupted = store
        .mark_running(
            &hour(5),
            utc(2024, 1, 1, 6),
            "interrupted",
            utc(2024, 2, 1, 0),
        )
        .unwrap();
    let report = materializer
        .run(
            &pipeline,
            &RunRequest {
                jobs: Some(vec!["purchases_hourly".into()]),
                from: utc(2024, 1, 1, 5),
                to: utc(2024, 1, 1, 6),
                force: true,
            },
            |_| {},
        )
        .unwrap();
    assert_eq!((report.computed, report.failed.len()), (1, 0), "{report:?}");
    let recomputed = store.run(&hour(5)).unwrap().unwrap();
    assert_eq!(recomputed.state, RunState::Succeeded, "{recomputed:?}");
    assert_eq!(recomputed.attempts, interrupted.attempts + 1);
    assert_ne!(recomputed.fingerprint.as_deref(), Some("interrupted"));
}
