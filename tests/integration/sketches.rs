//! The sketches example pipeline (`pipelines/sketches.yaml`) end to end on generated data,
//! through the scheduler, the materialiser and the store: a month of hourly sketches rolled up
//! daily and monthly, every estimate held against the exact answer; then the same sketches
//! read, made and merged by Apache DataSketches for Python.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use floe::materialize::{RunOutcome, RunRequest};
use floe::results::read_job_results;
use floe::sample::EventColumns;
use floe::store::RunKey;
use floe::{Materializer, Pipeline};
use polars::prelude::*;

use super::common::{RunAlone, SampleWorld, python_venv, repo_path, sketches_pipeline, utc};

/// `lg_k: 12`'s relative standard error for a merged sketch (no HIP estimator): 1.04 / √4096.
const RSE: f64 = 1.04 / 64.0;

fn run(
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
        "{job}: missing {:?}",
        results.missing
    );
    results.frame
}

fn floats(frame: &DataFrame, column: &str) -> Vec<f64> {
    let column = frame
        .column(column)
        .expect("column")
        .cast(&DataType::Float64)
        .unwrap();
    column
        .f64()
        .unwrap()
        .iter()
        .map(|v| v.expect("not null"))
        .collect()
}

fn integers(frame: &DataFrame, column: &str) -> Vec<u64> {
    let column = frame
        .column(column)
        .expect("column")
        .cast(&DataType::UInt64)
        .unwrap();
    column
        .u64()
        .unwrap()
        .iter()
        .map(|v| v.expect("not null"))
        .collect()
}

fn strings(frame: &DataFrame, column: &str) -> Vec<String> {
    let column = frame.column(column).expect("column");
    column
        .str()
        .unwrap()
        .iter()
        .map(|v| v.expect("not null").to_owned())
        .collect()
}

/// The serialised sketch of a stored partition's state.
fn stored_sketch(materializer: &Materializer, job: &str, start: DateTime<Utc>) -> Vec<u8> {
    let result = materializer
        .results()
        .load(&RunKey::new("sketches", job, start))
        .expect("stored result");
    let state = result.state.expect("a sketch job keeps a state");
    let sketch = state.column("sketch").unwrap().binary().unwrap();
    sketch.get(0).expect("one sketch").to_vec()
}

/// The rows of `events` in `[from, to)`.
fn rows_in(
    events: &EventColumns,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> std::ops::Range<usize> {
    let (from, to) = (from.timestamp_millis(), to.timestamp_millis());
    events.ts_ms.partition_point(|t| *t < from)..events.ts_ms.partition_point(|t| *t < to)
}

fn distinct_users(events: &EventColumns, from: DateTime<Utc>, to: DateTime<Utc>) -> BTreeSet<u64> {
    events.user_id[rows_in(events, from, to)]
        .iter()
        .copied()
        .collect()
}

fn purchases(events: &EventColumns, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<usize> {
    rows_in(events, from, to)
        .filter(|&i| events.event[i] == "purchase")
        .collect()
}

/// The inclusive quantile of `sorted` at `rank`, as DataSketches defines it.
fn quantile(sorted: &[f64], rank: f64) -> f64 {
    sorted[((rank * sorted.len() as f64).ceil() as usize).max(1) - 1]
}

#[test]
fn a_month_of_sketches_rolls_up_hourly_to_monthly_within_the_stated_error() {
    // 40,000 users: about 300 distinct users an hour, 6,000 a day, 30,000 in the month, so the
    // hourly sketches are in their exact (coupon) modes and the daily and monthly ones are
    // HyperLogLog estimates.
    let world = SampleWorld::with_users(240_000, 31, 40_000);
    let events = &world.events;
    let pipeline = sketches_pipeline();
    let materializer = world.materializer();
    let (start, end) = (utc(2024, 1, 1, 0), utc(2024, 2, 1, 0));
    let month = RunRequest {
        jobs: None,
        from: start,
        to: end,
        force: false,
    };
    let computed = run(&materializer, &pipeline, &month);
    let expected: BTreeMap<String, usize> = [
        ("users_hourly", 744),
        ("users_daily", 31),
        ("users_monthly", 1),
        ("city_sales_hourly", 744),
        ("city_sales_daily", 31),
        ("city_sales_monthly", 1),
        ("top_products_daily", 31),
        ("top_products_monthly", 1),
        ("order_value_hourly", 744),
        ("order_value_daily", 31),
        ("order_value_monthly", 1),
    ]
    .into_iter()
    .map(|(job, n)| (job.to_owned(), n))
    .collect();
    assert_eq!(computed, expected);

    // Distinct users: every partition's exact count within its 3-standard-deviation bounds.
    let hours: Vec<DateTime<Utc>> = (0..744).map(|h| start + Duration::hours(h)).collect();
    let days: Vec<DateTime<Utc>> = (0..31).map(|d| start + Duration::days(d)).collect();
    let mut worst = BTreeMap::new();
    for (job, windows, length) in [
        ("users_hourly", &hours, Duration::hours(1)),
        ("users_daily", &days, Duration::days(1)),
        ("users_monthly", &vec![start], end - start),
    ] {
        let frame = results(&materializer, &pipeline, job, start, end);
        let (estimates, lower, upper) = (
            floats(&frame, "estimate"),
            floats(&frame, "lower_bound"),
            floats(&frame, "upper_bound"),
        );
        assert_eq!(estimates.len(), windows.len(), "{job}");
        let mut largest: f64 = 0.0;
        for (i, from) in windows.iter().enumerate() {
            let exact = distinct_users(events, *from, *from + length).len() as f64;
            assert!(
                lower[i] <= exact && exact <= upper[i],
                "{job} {from}: exact {exact} outside [{}, {}] (estimate {})",
                lower[i],
                upper[i],
                estimates[i]
            );
            largest = largest.max((estimates[i] - exact).abs() / exact.max(1.0));
        }
        assert!(
            largest <= 3.0 * RSE,
            "{job}: relative error {largest} past 3 RSE"
        );
        worst.insert(job, largest);
    }
    let monthly_users = distinct_users(events, start, end).len();
    assert!(
        monthly_users > 20_000,
        "{monthly_users}: the month must be past the exact modes"
    );
    assert!(
        worst["users_monthly"] > 0.0,
        "a month of users is an estimate, not a count"
    );
    eprintln!("distinct users, largest relative error per grain: {worst:?}");

    // What a monthly partition stores: a sketch of about 2 KiB, not 30,000 keys.
    let meta = materializer
        .store()
        .result_meta(&RunKey::new("sketches", "users_monthly", start))
        .unwrap()
        .expect("stored");
    assert!(meta.bytes < 6 * 1024, "{} bytes stored", meta.bytes);
    assert!(stored_sketch(&materializer, "users_monthly", start).len() < 2_200);

    // Top cities by sales in cents: 40 cities fit the sketch's map, so the month's merged
    // counts are exact (bounds equal) and the ranking is the true one.
    let mut cents: BTreeMap<&str, u64> = BTreeMap::new();
    for i in purchases(events, start, end) {
        let amount = events.amount[i].expect("a purchase has an amount");
        *cents.entry(events.city[i]).or_default() += (amount * 100.0).round() as u64;
    }
    let mut ranking: Vec<(&str, u64)> = cents.into_iter().collect();
    ranking.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranking.truncate(10);
    let top = results(&materializer, &pipeline, "city_sales_monthly", start, end);
    assert_eq!(
        strings(&top, "city"),
        ranking
            .iter()
            .map(|(city, _)| city.to_string())
            .collect::<Vec<_>>()
    );
    let exact: Vec<u64> = ranking.iter().map(|(_, cents)| *cents).collect();
    assert_eq!(integers(&top, "estimate"), exact);
    assert_eq!(integers(&top, "lower_bound"), exact);
    assert_eq!(integers(&top, "upper_bound"), exact);

    // Most purchased products: more products than the 64-entry map holds, so the counts are
    // approximate; every true count is within its bounds, and no product truly above the
    // last listed upper bound is missing.
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    for i in purchases(events, start, end) {
        *counts.entry(events.product_id[i]).or_default() += 1;
    }
    let top = results(&materializer, &pipeline, "top_products_monthly", start, end);
    let products = integers(&top, "product_id");
    let (lower, upper) = (integers(&top, "lower_bound"), integers(&top, "upper_bound"));
    assert_eq!(products.len(), 10);
    for (row, product) in products.iter().enumerate() {
        let exact = counts[&(*product as u32)];
        assert!(
            lower[row] <= exact && exact <= upper[row],
            "product {product}: {exact} outside [{}, {}]",
            lower[row],
            upper[row]
        );
    }
    assert!(
        lower.iter().zip(&upper).any(|(l, u)| l < u),
        "the sketch purged"
    );
    for (product, exact) in &counts {
        if *exact > upper[9] {
            assert!(
                products.contains(&u64::from(*product)),
                "{product} ({exact}) missing"
            );
        }
    }

    // Order values: an hour's sketch is exact; a day's and the month's hold the true quantile
    // within their bounds.
    let ranks = [0.5, 0.9, 0.99];
    for (job, windows, length) in [
        ("order_value_hourly", &hours, Duration::hours(1)),
        ("order_value_daily", &days, Duration::days(1)),
        ("order_value_monthly", &vec![start], end - start),
    ] {
        let frame = results(&materializer, &pipeline, job, start, end);
        let optional = |column: &str| frame.column(column).unwrap().f64().unwrap().clone();
        let (estimates, lower, upper) = (
            optional("estimate"),
            optional("lower_bound"),
            optional("upper_bound"),
        );
        let n = integers(&frame, "n");
        let (mut row, mut empty) = (0, 0);
        for from in windows.iter() {
            let mut amounts: Vec<f64> = purchases(events, *from, *from + length)
                .into_iter()
                .map(|i| events.amount[i].unwrap())
                .collect();
            amounts.sort_by(f64::total_cmp);
            for rank in ranks {
                assert_eq!(n[row], amounts.len() as u64, "{job} {from}");
                if amounts.is_empty() {
                    let nothing = [estimates.get(row), lower.get(row), upper.get(row)];
                    assert_eq!(nothing, [None; 3], "{job} {from}: no purchase, no quantile");
                    empty += 1;
                } else {
                    let truth = quantile(&amounts, rank);
                    let (lower, upper) = (lower.get(row).unwrap(), upper.get(row).unwrap());
                    assert!(
                        lower <= truth && truth <= upper,
                        "{job} {from} p{rank}: {truth} outside [{lower}, {upper}]"
                    );
                    if job == "order_value_hourly" {
                        assert_eq!(estimates.get(row), Some(truth), "{job} {from} p{rank}");
                    }
                }
                row += 1;
            }
        }
        assert_eq!(row, frame.height(), "{job}");
        assert!(
            empty * 10 <= row,
            "{job}: {empty} of {row} rows without a purchase"
        );
    }

    // Nothing is computed twice.
    let report = materializer.run(&pipeline, &month, |_| {}).expect("rerun");
    assert_eq!((report.computed, report.fresh), (0, 2_360));
}

/// Whether pip's failure says PyPI could not be reached.
fn pypi_unreachable(problem: &str) -> bool {
    [
        "NewConnectionError",
        "Temporary failure in name resolution",
        "Network is unreachable",
        "Connection refused",
        "Max retries exceeded",
        "ProxyError",
        "No matching distribution found",
    ]
    .iter()
    .any(|sign| problem.contains(sign))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn sketches_from_python_datasketches_merge_with_floes() {
    let python = match python_venv("datasketches-venv", "datasketches==5.2.0") {
        Ok(python) => python,
        Err(problem) if pypi_unreachable(&problem) => {
            eprintln!(
                "skipped: PyPI is unreachable, so the Python datasketches package cannot be installed:\n{problem}"
            );
            return;
        }
        Err(problem) => panic!("{problem}"),
    };
    let world = SampleWorld::with_users(20_000, 1, 40_000);
    let pipeline = sketches_pipeline();
    let materializer = world.materializer();
    let day = utc(2024, 1, 1, 0);
    run(
        &materializer,
        &pipeline,
        &RunRequest {
            jobs: Some(vec![
                "users_daily".to_owned(),
                "city_sales_daily".to_owned(),
                "order_value_daily".to_owned(),
            ]),
            from: day,
            to: day + Duration::days(1),
            force: false,
        },
    );
    let floe_users = distinct_users(&world.events, day, day + Duration::days(1));
    // Python sketches half of Floe's users and 2,000 it alone has.
    let shared: Vec<u64> = floe_users.iter().copied().step_by(2).collect();
    let only_python: Vec<u64> = (10_000_000..10_002_000).collect();
    let ints: Vec<u64> = shared.iter().chain(&only_python).copied().collect();
    let union_exact = (floe_users.len() + only_python.len()) as f64;

    let floe_hll = stored_sketch(&materializer, "users_daily", day);
    let given = serde_json::json!({
        "floe_hll": hex(&floe_hll),
        "ints": ints,
        "floe_top": hex(&stored_sketch(&materializer, "city_sales_daily", day)),
        "floe_kll": hex(&stored_sketch(&materializer, "order_value_daily", day)),
        "ranks": [0.5, 0.9, 0.99],
    });
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("given.json");
    std::fs::write(&input, given.to_string()).unwrap();
    let output = std::process::Command::new(&python)
        .arg(repo_path("tests/python/datasketches_interop.py"))
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "datasketches_interop.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    // Python reads Floe's HLL sketch as Floe does.
    let daily = results(
        &materializer,
        &pipeline,
        "users_daily",
        day,
        day + Duration::days(1),
    );
    let floe_estimate = floats(&daily, "estimate")[0];
    assert_eq!(answer["floe_hll_estimate"].as_f64().unwrap(), floe_estimate);

    // Floe reads Python's sketch and merges it with its own: the shared users count once.
    // Shared users hashed differently in Python would count twice: about 9,000 more.
    let python_hll = unhex(answer["python_hll"].as_str().unwrap());
    let merged = floe::job::sketches::merge_hll(&[&floe_hll, &python_hll], 12).unwrap();
    let counted_twice = union_exact + shared.len() as f64;
    for (who, estimate) in [
        ("Floe", merged.estimate),
        ("Python", answer["python_union"].as_f64().unwrap()),
    ] {
        assert!(
            (estimate - union_exact).abs() <= 3.0 * RSE * union_exact,
            "{who}'s union: {estimate}, exact {union_exact} (counting shared users twice: {counted_twice})"
        );
    }
    assert!(merged.lower_bound <= union_exact && union_exact <= merged.upper_bound);

    // Python reads Floe's frequent items and KLL sketches with Floe's estimates.
    let top = results(
        &materializer,
        &pipeline,
        "city_sales_daily",
        day,
        day + Duration::days(1),
    );
    for (row, city) in strings(&top, "city").iter().enumerate() {
        let seen = &answer["top"][city];
        assert_eq!(
            seen[0].as_u64(),
            Some(integers(&top, "estimate")[row]),
            "{city}: {seen}"
        );
        assert_eq!(
            seen[1].as_u64(),
            Some(integers(&top, "lower_bound")[row]),
            "{city}"
        );
    }
    let quantiles = results(
        &materializer,
        &pipeline,
        "order_value_daily",
        day,
        day + Duration::days(1),
    );
    assert_eq!(answer["kll_n"].as_u64(), Some(integers(&quantiles, "n")[0]));
    let python_quantiles: Vec<f64> = answer["kll_quantiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q.as_f64().unwrap())
        .collect();
    assert_eq!(python_quantiles, floats(&quantiles, "estimate"));
}

/// The three kinds as ad-hoc job server classes, over a source window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sketch_kinds_run_as_ad_hoc_classes() {
    let world = SampleWorld::new(20_000, 1);
    let server = super::common::server::TestServer::start(&world, |_| {}).await;
    let day = utc(2024, 1, 1, 0);
    let input =
        r#"input { source = events, app = sketches, from = "2024-01-01", to = "2024-01-02" }"#;
    let job = |class: &str, config: &str| {
        let (path, body) = (
            format!("/jobs?classPath={class}&sync=true&timeout=60"),
            format!("{input}\n{config}"),
        );
        let server = &server;
        async move {
            let (status, body) = server.post(&path, &body).await;
            assert_eq!(status, reqwest::StatusCode::OK, "{body}");
            assert_eq!(body["status"], "FINISHED", "{body}");
            body["result"].as_array().unwrap().clone()
        }
    };

    let rows = job("ApproxCountDistinct", "column = user_id\nstd_devs = 3").await;
    let exact = distinct_users(&world.events, day, day + Duration::days(1)).len() as f64;
    let (lower, upper) = (
        rows[0]["lower_bound"].as_f64().unwrap(),
        rows[0]["upper_bound"].as_f64().unwrap(),
    );
    assert!(lower <= exact && exact <= upper, "{exact}: {rows:?}");

    let rows = job(
        "approx_top",
        "key = city\nn = 3\nweight = \"CAST(round(amount * 100) AS BIGINT)\"\nfilter = \"event = 'purchase'\"",
    )
    .await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    let mut cents: BTreeMap<&str, u64> = BTreeMap::new();
    for i in purchases(&world.events, day, day + Duration::days(1)) {
        *cents.entry(world.events.city[i]).or_default() +=
            (world.events.amount[i].unwrap() * 100.0).round() as u64;
    }
    for row in &rows {
        let city = row["city"].as_str().unwrap();
        assert_eq!(row["estimate"].as_u64(), Some(cents[city]), "{row}");
    }

    let rows = job(
        "floe.Quantiles",
        "column = amount\nranks = [0.5, 1.0]\nfilter = \"event = 'purchase'\"",
    )
    .await;
    let mut amounts: Vec<f64> = purchases(&world.events, day, day + Duration::days(1))
        .into_iter()
        .map(|i| world.events.amount[i].unwrap())
        .collect();
    amounts.sort_by(f64::total_cmp);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        rows[1]["estimate"].as_f64(),
        amounts.last().copied(),
        "the maximum is exact"
    );

    let (status, body) = server
        .post(
            "/jobs?classPath=quantiles&sync=true",
            &format!("{input}\ncolumn = amount\nk = 2"),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.to_string()
            .contains("field `k`: must be from 8 to 65535"),
        "{body}"
    );
    server.stop().await;
}
