use std::collections::BTreeMap;

use chrono::DateTime;

use super::*;
use crate::partition::{Grain, Window};

/// Runs `job` over `input`, named `events`.
fn run_on(job: &dyn Job, input: JobInput) -> Result<JobOutput, JobError> {
    let inputs: BTreeMap<String, JobInput> = [("events".to_owned(), input)].into_iter().collect();
    let ctx = JobContext {
        pipeline: "p",
        job: "j",
        grain: Grain::Daily,
        window: Window {
            start: DateTime::UNIX_EPOCH,
            end: DateTime::UNIX_EPOCH,
        },
        inputs: &inputs,
    };
    crate::job::run_job(job, &ctx)
}

fn run_rows(job: &dyn Job, frame: DataFrame) -> Result<JobOutput, JobError> {
    run_on(job, JobInput::of_frame(frame.lazy()))
}

/// Runs `job` as a roll-up of `parts`: the states of `upstream`'s runs over each, as the
/// materialiser hands a coarser job the partitions of a finer one of kind `kind`.
fn run_merged(job: &dyn Job, upstream: &dyn Job, parts: &[DataFrame]) -> JobOutput {
    let mut frames = Vec::new();
    let mut states = Vec::new();
    for part in parts {
        let output = run_rows(upstream, part.clone()).expect("upstream runs");
        frames.push(output.frame.lazy());
        states.push(output.state.expect("a sketch keeps a state"));
    }
    let input = JobInput {
        frame: concat(frames, UnionArgs::default()).unwrap(),
        states: Some(states),
        upstream_kind: Some(upstream.kind().to_owned()),
        cached_rows: None,
    };
    run_on(job, input).expect("roll-up runs")
}

fn f64_at(frame: &DataFrame, column: &str, row: usize) -> f64 {
    frame
        .column(column)
        .unwrap()
        .f64()
        .unwrap()
        .get(row)
        .expect("not null")
}

fn u64s(frame: &DataFrame, column: &str) -> Vec<u64> {
    frame
        .column(column)
        .unwrap()
        .u64()
        .unwrap()
        .iter()
        .map(|v| v.expect("not null"))
        .collect()
}

fn strings(frame: &DataFrame, column: &str) -> Vec<String> {
    frame
        .column(column)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|v| v.expect("not null").to_owned())
        .collect()
}

fn hll(spec: &str) -> ApproxCountDistinct {
    ApproxCountDistinct::from_spec(&serde_yaml::from_str(spec).unwrap()).unwrap()
}

fn top(spec: &str) -> ApproxTop {
    ApproxTop::from_spec(&serde_yaml::from_str(spec).unwrap()).unwrap()
}

fn quantiles(spec: &str) -> Quantiles {
    Quantiles::from_spec(&serde_yaml::from_str(spec).unwrap()).unwrap()
}

/// The sketch the Python package `datasketches` 5.2.0 serialises for
/// `s = hll_sketch(12, tgt_hll_type.HLL_4)` updated with "alice", "bob", "", "日本", 42, -7,
/// 2**40, 3.5 and -0.0 (`s.serialize_compact().hex()`; its estimate is 8: "" is skipped).
const PYTHON_HLL: &str =
    "0301070c050800010800000041f4570fc33b320bcbd7c204ae007907f16b95051abcd0057bf62106bf20641c";

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn values_hash_as_python_datasketches_hashes_them() {
    let mut sketch = HllSketch::new(12, HllType::Hll4).unwrap();
    let strings = Series::new(
        "s".into(),
        [Some("alice"), Some("bob"), Some(""), None, Some("日本")],
    );
    let longs = Series::new("i".into(), [42i64, -7, 1 << 40]);
    let doubles = Series::new("f".into(), [3.5f64, -0.0]);
    for values in [&strings, &longs, &doubles] {
        hll_update(&mut sketch, values).unwrap();
    }
    let python = HllSketch::deserialize(&unhex(PYTHON_HLL)).unwrap();
    assert_eq!(python.estimate().round(), 8.0);
    // The same coupons in the same order: the very bytes the Python library wrote.
    assert_eq!(sketch.serialize(), unhex(PYTHON_HLL));

    // The integer widths a frame may hold hash as the long of their value; 0.0 as -0.0.
    for values in [
        Series::new("i".into(), [42i32, -7]),
        Series::new("u".into(), [42u64]),
        Series::new("u".into(), [42u32]),
        Series::new("f".into(), [0.0f64, 3.5]),
        Series::new("f".into(), [3.5f32]),
    ] {
        let mut union = HllUnion::new(12).unwrap();
        union.update(&python);
        let mut same = HllSketch::new(12, HllType::Hll4).unwrap();
        hll_update(&mut same, &values).unwrap();
        union.update(&same);
        assert_eq!(
            union.estimate().round(),
            8.0,
            "{values:?} counts values Python already counted"
        );
    }
    // A value Python did not see counts once more.
    let mut union = HllUnion::new(12).unwrap();
    union.update(&python);
    let mut other = HllSketch::new(12, HllType::Hll4).unwrap();
    hll_update(&mut other, &Series::new("s".into(), ["carol"])).unwrap();
    union.update(&other);
    assert_eq!(union.estimate().round(), 9.0);

    let booleans = Series::new("b".into(), [true]);
    let refused = hll_update(&mut other, &booleans).unwrap_err().to_string();
    assert!(refused.contains("holds bool values"), "{refused}");
}

#[test]
fn python_frequent_items_and_kll_sketches_read_and_merge() {
    // frequent_strings_sketch(3) updated with ("a", 3), "b", "a"; .serialize().hex()
    let python = "04010a03030000000200000000000000050000000000000000000000000000000100000000000000040000000000000001000000620100000061";
    let mut sketch = FrequentItemsSketch::<String>::deserialize(&unhex(python)).unwrap();
    assert_eq!((sketch.estimate("a"), sketch.estimate("b")), (4, 1));
    let mut ours = FrequentItemsSketch::<String>::new(8).unwrap();
    ours.update_ref("a");
    sketch.merge(&ours);
    assert_eq!(sketch.estimate("a"), 5);

    // kll_doubles_sketch(200) updated with 1.0, 2.0, 3.0 and NaN (left out).
    let python = "05010f00c80008000300000000000000c8000100c5000000000000000000f03f000000000000084000000000000008400000000000000040000000000000f03f";
    let sketch = KllSketch::<KllFloat<f64>>::deserialize(&unhex(python)).unwrap();
    assert_eq!(sketch.n(), 3);
    let median = sketch.quantile(0.5, SearchCriteria::Inclusive).unwrap();
    assert_eq!(median.map(KllFloat::into_inner), Some(2.0));
}

#[test]
fn approx_count_distinct_counts_rows_and_merges_partitions() {
    let job = hll("{column: user, lg_k: 12, std_devs: 3}");
    // 40 partitions of 500 users each, overlapping: 10,250 distinct users in all.
    let parts: Vec<DataFrame> = (0..40)
        .map(|part| {
            let users: Vec<i64> = (0..500).map(|i| part * 250 + i).collect();
            df!("user" => users).unwrap()
        })
        .collect();
    let output = run_merged(&job, &job, &parts);
    let frame = &output.frame;
    let (estimate, lower, upper) = (
        f64_at(frame, ESTIMATE_COLUMN, 0),
        f64_at(frame, LOWER_BOUND_COLUMN, 0),
        f64_at(frame, UPPER_BOUND_COLUMN, 0),
    );
    assert!(lower <= 10_250.0 && 10_250.0 <= upper, "{frame}");
    assert!(lower < estimate && estimate < upper, "{frame}");
    assert!((estimate - 10_250.0).abs() / 10_250.0 < 0.05, "{frame}");

    // The state is the column and the standard serialisation of the sketch.
    let sketch_of = |output: &JobOutput| {
        let state = output.state.as_ref().unwrap();
        assert_eq!(strings(state, "column"), ["user"]);
        let bytes = state.column(SKETCH_COLUMN).unwrap().binary().unwrap();
        HllSketch::deserialize(bytes.get(0).unwrap()).unwrap()
    };
    let merged = sketch_of(&output);
    assert_eq!(merged.estimate(), estimate);
    assert_eq!(merged.lg_config_k(), 12);

    // The merge holds the registers of a sketch of all the rows at once: the same composite
    // estimate (a merged sketch cannot use the in-order HIP estimator, so `estimate` differs).
    let all = concat(
        parts.iter().map(|p| p.clone().lazy()).collect::<Vec<_>>(),
        UnionArgs::default(),
    )
    .unwrap()
    .collect()
    .unwrap();
    let direct = sketch_of(&run_rows(&job, all).unwrap());
    assert_eq!(direct.composite_estimate(), merged.composite_estimate());
}

#[test]
fn approx_count_distinct_filters_rows_but_not_sketches() {
    let frame = df!(
        "user" => ["a", "b", "c", "a", ""],
        "event" => ["register", "view", "register", "register", "register"],
    )
    .unwrap();
    let filtered = hll("{column: user, filter: \"event = 'register'\"}");
    let output = run_rows(&filtered, frame.clone()).unwrap();
    assert_eq!(f64_at(&output.frame, ESTIMATE_COLUMN, 0).round(), 2.0);

    let upstream = hll("{column: user}");
    let inputs = JobInput {
        frame: df!("estimate" => [1.0]).unwrap().lazy(),
        states: Some(vec![run_rows(&upstream, frame).unwrap().state.unwrap()]),
        upstream_kind: Some("approx_count_distinct".to_owned()),
        cached_rows: None,
    };
    let refused = run_on(&filtered, inputs.clone()).unwrap_err().to_string();
    assert!(
        refused.contains("field `filter`") && refused.contains("keep sketches, not rows"),
        "{refused}"
    );
    let other_column = hll("{column: session}");
    let refused = run_on(&other_column, inputs).unwrap_err().to_string();
    assert!(
        refused.contains("are of column `user`, this job asks for column `session`"),
        "{refused}"
    );
}

#[test]
fn a_coarser_job_with_a_smaller_lg_k_downsamples() {
    let fine = hll("{column: user, lg_k: 14, hll_type: hll_8}");
    let coarse = hll("{column: user, lg_k: 10}");
    let parts: Vec<DataFrame> = (0..4)
        .map(|part| {
            df!("user" => (0..5_000).map(|i| part * 5_000 + i).collect::<Vec<i64>>()).unwrap()
        })
        .collect();
    let output = run_merged(&coarse, &fine, &parts);
    let state = output.state.unwrap();
    let bytes = state.column(SKETCH_COLUMN).unwrap().binary().unwrap();
    let merged = HllSketch::deserialize(bytes.get(0).unwrap()).unwrap();
    assert_eq!(merged.lg_config_k(), 10);
    assert_eq!(merged.target_type(), HllType::Hll4);
    let estimate = f64_at(&output.frame, ESTIMATE_COLUMN, 0);
    assert!((estimate - 20_000.0).abs() / 20_000.0 < 0.1, "{estimate}");
}

#[test]
fn settings_out_of_range_are_refused_each_naming_its_field() {
    let errors = |spec: &str| {
        ApproxCountDistinct::from_spec(&serde_yaml::from_str(spec).unwrap()).unwrap_err()
    };
    let found = errors("{column: u, lg_k: 3, std_devs: 4, filter: 'a ='}");
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].starts_with("field `lg_k`: must be from 4 to 21"));
    assert!(found[1].starts_with("field `std_devs`"));
    assert!(found[2].starts_with("field `filter`"));
    let unknown: Result<ApproxCountDistinctSpec, _> =
        serde_yaml::from_str("{column: u, hll_type: hll_5}");
    assert!(unknown.is_err());

    let found =
        ApproxTop::from_spec(&serde_yaml::from_str("{key: k, n: 0, max_map_size: 100}").unwrap())
            .unwrap_err();
    assert_eq!(
        found,
        [
            "field `n`: must be at least 1",
            "field `max_map_size`: must be a power of two from 8 to 1048576, found 100"
        ]
    );

    let found = ApproxTop::from_spec(
        &serde_yaml::from_str("{key: k, n: 1, weight: 'sum(amount)'}").unwrap(),
    )
    .unwrap_err();
    assert_eq!(found.len(), 1);
    assert!(found[0].contains("`sum(amount)` aggregates"), "{found:?}");

    let found = Quantiles::from_spec(
        &serde_yaml::from_str("{column: x, ranks: [0.5, 1.5, 0.5], k: 4}").unwrap(),
    )
    .unwrap_err();
    assert_eq!(
        found,
        [
            "field `ranks`: 1.5 is not a rank from 0 to 1 (p99 is 0.99)",
            "field `ranks`: 0.5 is listed twice",
            "field `k`: must be from 8 to 65535, found 4",
        ]
    );
    let found =
        Quantiles::from_spec(&serde_yaml::from_str("{column: x, ranks: []}").unwrap()).unwrap_err();
    assert_eq!(found, ["field `ranks`: list at least one rank"]);
}

#[test]
fn approx_top_counts_and_weighs_exactly_below_its_map_capacity() {
    let frame = df!(
        "city" => [Some("Paris"), Some("London"), Some("Paris"), None, Some("Oslo"), Some("London"), Some("Paris")],
        "amount" => [Some(1.5), Some(10.0), Some(2.25), Some(9.0), Some(0.5), None, Some(1.0)],
    )
    .unwrap();
    let counted = run_rows(&top("{key: city, n: 2}"), frame.clone())
        .unwrap()
        .frame;
    assert_eq!(strings(&counted, "city"), ["Paris", "London"]);
    assert_eq!(u64s(&counted, ESTIMATE_COLUMN), [3, 2]);
    assert_eq!(u64s(&counted, LOWER_BOUND_COLUMN), [3, 2]);
    assert_eq!(u64s(&counted, UPPER_BOUND_COLUMN), [3, 2]);

    // Cents: London's null amount leaves its row out.
    let weighed = top("{key: city, n: 5, weight: 'CAST(round(amount * 100) AS BIGINT)'}");
    let output = run_rows(&weighed, frame.clone()).unwrap();
    assert_eq!(strings(&output.frame, "city"), ["London", "Paris", "Oslo"]);
    assert_eq!(u64s(&output.frame, ESTIMATE_COLUMN), [1000, 475, 50]);
    let state = output.state.unwrap();
    assert_eq!(
        strings(&state, "weight"),
        ["CAST(round(amount * 100) AS BIGINT)"]
    );
    assert_eq!(strings(&state, "items"), ["string"]);

    let float = run_rows(&top("{key: city, n: 5, weight: amount}"), frame.clone())
        .unwrap_err()
        .to_string();
    assert!(
        float.contains("weights are non-negative integers"),
        "{float}"
    );
    let negative = run_rows(
        &top("{key: city, n: 5, weight: 'CAST(amount AS BIGINT) - 5'}"),
        frame,
    )
    .unwrap_err()
    .to_string();
    assert!(negative.contains("a negative weight (-4)"), "{negative}");
}

#[test]
fn approx_top_merges_partitions_within_its_bounds() {
    // Product ids (integers) with a skewed popularity, over 30 partitions: more distinct
    // products than a 64-entry map holds, so the sketch purges and its bounds widen.
    let parts: Vec<DataFrame> = (0..30i64)
        .map(|part| {
            let products: Vec<i64> = (0..2_000i64)
                .map(|i| {
                    let r = (i * 7919 + part * 104_729) % 1_000;
                    if r < 300 { r % 5 } else { r }
                })
                .collect();
            df!("product" => products).unwrap()
        })
        .collect();
    let mut exact: BTreeMap<i64, u64> = BTreeMap::new();
    for part in &parts {
        for product in part
            .column("product")
            .unwrap()
            .i64()
            .unwrap()
            .iter()
            .flatten()
        {
            *exact.entry(product).or_default() += 1;
        }
    }
    let job = top("{key: product, n: 5, max_map_size: 64}");
    let output = run_merged(&job, &job, &parts);
    let frame = &output.frame;
    let products: Vec<i64> = frame
        .column("product")
        .unwrap()
        .i64()
        .unwrap()
        .iter()
        .flatten()
        .collect();
    assert_eq!(products, [0, 1, 2, 3, 4], "{frame}");
    let (lower, upper) = (
        u64s(frame, LOWER_BOUND_COLUMN),
        u64s(frame, UPPER_BOUND_COLUMN),
    );
    for (row, product) in products.iter().enumerate() {
        let truth = exact[product];
        assert!(
            lower[row] <= truth && truth <= upper[row],
            "{product}: {truth} outside [{}, {}]",
            lower[row],
            upper[row]
        );
    }
    // Some estimate is approximate: the sketch did purge.
    assert!(lower.iter().zip(&upper).any(|(l, u)| l < u), "{frame}");

    // A daily job that sums what the hourly one counted is refused.
    let weighed = top("{key: product, n: 5, weight: product}");
    let input = JobInput {
        frame: frame.clone().lazy(),
        states: Some(vec![output.state.unwrap()]),
        upstream_kind: Some("approx_top".to_owned()),
        cached_rows: None,
    };
    let refused = run_on(&weighed, input).unwrap_err().to_string();
    assert!(
        refused.contains("are of row counts, this job asks for sums of `product`"),
        "{refused}"
    );
}

#[test]
fn quantiles_are_exact_on_few_values_and_bounded_when_merged() {
    let job = quantiles("{column: latency}");
    let frame = df!("latency" => (1..=100).map(|v| Some(f64::from(v))).chain([None, Some(f64::NAN)]).collect::<Vec<_>>()).unwrap();
    let output = run_rows(&job, frame).unwrap().frame;
    let ranks: Vec<f64> = output
        .column("rank")
        .unwrap()
        .f64()
        .unwrap()
        .iter()
        .flatten()
        .collect();
    assert_eq!(ranks, DEFAULT_RANKS);
    let estimates: Vec<f64> = (0..3)
        .map(|row| f64_at(&output, ESTIMATE_COLUMN, row))
        .collect();
    assert_eq!(estimates, [50.0, 90.0, 99.0]);
    assert_eq!(f64_at(&output, LOWER_BOUND_COLUMN, 0), 50.0);
    assert_eq!(u64s(&output, "n"), [100, 100, 100]);

    // 24 partitions of 5,000 integer values each: the sketch compacts; every quantile's true
    // rank is within the rank error, and the bounds hold the true quantile.
    let parts: Vec<DataFrame> = (0..24i64)
        .map(|part| {
            let values: Vec<i64> = (0..5_000i64)
                .map(|i| (i * 7_919 + part * 31) % 120_000)
                .collect();
            df!("latency" => values).unwrap()
        })
        .collect();
    let mut all: Vec<f64> = parts
        .iter()
        .flat_map(|part| {
            part.column("latency")
                .unwrap()
                .i64()
                .unwrap()
                .iter()
                .flatten()
                .map(|v| v as f64)
                .collect::<Vec<_>>()
        })
        .collect();
    all.sort_by(f64::total_cmp);
    let n = all.len() as f64;
    let merged = run_merged(&job, &job, &parts).frame;
    let error = KllSketch::<KllFloat<f64>>::new(200)
        .unwrap()
        .normalized_rank_error();
    for (row, rank) in DEFAULT_RANKS.iter().enumerate() {
        let estimate = f64_at(&merged, ESTIMATE_COLUMN, row);
        let true_rank = all.partition_point(|v| *v <= estimate) as f64 / n;
        assert!(
            (true_rank - rank).abs() <= error,
            "p{rank}: {estimate} has rank {true_rank}"
        );
        let truth = all[((rank * n).ceil() as usize).saturating_sub(1)];
        let (lower, upper) = (
            f64_at(&merged, LOWER_BOUND_COLUMN, row),
            f64_at(&merged, UPPER_BOUND_COLUMN, row),
        );
        assert!(
            lower <= truth && truth <= upper,
            "p{rank}: {truth} outside [{lower}, {upper}]"
        );
        assert!(
            lower < upper,
            "p{rank}: a compacted sketch gives an interval"
        );
    }
    assert_eq!(u64s(&merged, "n")[0], 120_000);

    let strings = run_rows(&job, df!("latency" => ["slow"]).unwrap())
        .unwrap_err()
        .to_string();
    assert!(strings.contains("quantiles are of numbers"), "{strings}");
}
