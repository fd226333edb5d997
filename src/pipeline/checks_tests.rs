use super::*;
use crate::pipeline::spec::{AcceptedValuesSpec, AnomalySpec, FreshnessSpec, RowCountSpec};

fn frame() -> DataFrame {
    df!(
        "category" => [Some("books"), Some("games"), None, Some("games")],
        "sales" => [10.0, -2.0, 3.5, 4.0],
        "orders" => [1i64, 2, 3, 4],
    )
    .unwrap()
}

fn check(spec: CheckSpec) -> Check {
    parse_check(&spec, &["events".to_owned()]).unwrap()
}

fn verdict(spec: CheckSpec) -> CheckOutcome {
    check(spec).evaluate_on(&frame()).unwrap()
}

#[test]
fn row_count_bounds_either_side() {
    let within = verdict(CheckSpec {
        row_count: Some(RowCountSpec {
            min: Some(1),
            max: Some(4),
        }),
        ..CheckSpec::default()
    });
    assert!(within.passed, "{within:?}");
    let few = verdict(CheckSpec {
        row_count: Some(RowCountSpec {
            min: Some(5),
            max: None,
        }),
        ..CheckSpec::default()
    });
    assert!(!few.passed);
    assert_eq!(few.detail.as_deref(), Some("4 rows, fewer than 5"));
    let many = verdict(CheckSpec {
        row_count: Some(RowCountSpec {
            min: None,
            max: Some(3),
        }),
        ..CheckSpec::default()
    });
    assert_eq!(many.detail.as_deref(), Some("4 rows, more than 3"));
}

#[test]
fn not_null_unique_and_accepted_values_name_what_they_found() {
    let nulls = verdict(CheckSpec {
        not_null: Some(OneOrMany::Many(vec!["category".into(), "sales".into()])),
        ..CheckSpec::default()
    });
    assert_eq!(nulls.name, "not_null(category, sales)");
    assert_eq!(nulls.detail.as_deref(), Some("`category` has 1 nulls"));

    let repeated = verdict(CheckSpec {
        unique: Some(OneOrMany::One("category".into())),
        ..CheckSpec::default()
    });
    assert!(!repeated.passed);
    let detail = repeated.detail.unwrap();
    assert!(
        detail.starts_with("1 values of (category) repeat"),
        "{detail}"
    );
    assert!(detail.contains("games"), "{detail}");
    assert!(
        verdict(CheckSpec {
            unique: Some(OneOrMany::One("orders".into())),
            ..CheckSpec::default()
        })
        .passed
    );

    let accepted = |values: Vec<serde_yaml::Value>, column: &str| {
        verdict(CheckSpec {
            accepted_values: Some(AcceptedValuesSpec {
                column: column.to_owned(),
                values,
            }),
            ..CheckSpec::default()
        })
    };
    let books_only = accepted(vec!["books".into()], "category");
    assert_eq!(
        books_only.detail.as_deref(),
        Some("`category` has 1 values not accepted: games")
    );
    assert!(accepted(vec!["books".into(), "games".into()], "category").passed);
    assert!(accepted((1..=4).map(serde_yaml::Value::from).collect(), "orders").passed);
    let three = accepted(vec![1.into(), 2.into(), 3.into()], "orders");
    assert_eq!(
        three.detail.as_deref(),
        Some("`orders` has 1 values not accepted: 4")
    );
}

#[test]
fn an_expression_must_hold_on_every_row() {
    let negative = verdict(CheckSpec {
        name: Some("no_negative_sales".into()),
        expression: Some("sales >= 0".into()),
        ..CheckSpec::default()
    });
    assert_eq!(negative.name, "no_negative_sales");
    let detail = negative.detail.unwrap();
    assert!(
        detail.starts_with("1 rows do not satisfy `sales >= 0`, e.g. "),
        "{detail}"
    );
    assert!(detail.contains("sales=-2"), "{detail}");
    // A row where the expression is null counts as failing: a check must not pass silently.
    let on_nulls = verdict(CheckSpec {
        expression: Some("category <> 'x'".into()),
        ..CheckSpec::default()
    });
    assert!(!on_nulls.passed, "{on_nulls:?}");
}

#[test]
fn a_check_that_cannot_be_evaluated_fails_saying_why() {
    let missing = verdict(CheckSpec {
        not_null: Some(OneOrMany::One("city".into())),
        severity: Some("warn".into()),
        ..CheckSpec::default()
    });
    assert!(!missing.passed);
    assert_eq!(missing.severity, "warn");
    let detail = missing.detail.unwrap();
    assert!(
        detail.starts_with("cannot evaluate: the result has no column `city`"),
        "{detail}"
    );
}

#[test]
fn specs_are_checked_with_the_field_at_fault() {
    let problems = |spec: CheckSpec| parse_check(&spec, &["events".to_owned()]).unwrap_err();
    assert_eq!(problems(CheckSpec::default())[0].0, "kind");
    let two = problems(CheckSpec {
        not_null: Some(OneOrMany::One("a".into())),
        unique: Some(OneOrMany::One("a".into())),
        ..CheckSpec::default()
    });
    assert!(two[0].1.ends_with("found 2"), "{two:?}");
    let severity = problems(CheckSpec {
        severity: Some("fatal".into()),
        not_null: Some(OneOrMany::One("a".into())),
        ..CheckSpec::default()
    });
    assert_eq!(severity[0].0, "severity");
    let bounds = problems(CheckSpec {
        row_count: Some(RowCountSpec {
            min: Some(5),
            max: Some(1),
        }),
        ..CheckSpec::default()
    });
    assert_eq!(bounds[0].1, "`min` (5) is above `max` (1)");
    let source = problems(CheckSpec {
        freshness: Some(FreshnessSpec {
            source: "clicks".into(),
            max_lag: "10m".into(),
        }),
        ..CheckSpec::default()
    });
    assert_eq!(
        source[0].1,
        "`clicks` is not a source this job reads (sources: events)"
    );
    let sql = problems(CheckSpec {
        expression: Some("sales >= (SELECT 1)".into()),
        ..CheckSpec::default()
    });
    assert_eq!(sql[0].0, "expression");
    let within = problems(CheckSpec {
        anomaly: Some(AnomalySpec {
            metric: None,
            within: "a lot".into(),
            last: None,
            min_history: None,
        }),
        ..CheckSpec::default()
    });
    assert!(within[0].1.starts_with("`within`"), "{within:?}");
}

#[test]
fn freshness_compares_the_newest_event_with_the_partition_end() {
    let end = chrono::DateTime::parse_from_rfc3339("2024-01-01T01:00:00Z")
        .unwrap()
        .to_utc();
    let lag = Duration::from_secs(600);
    assert_eq!(
        freshness_verdict(Some(end - chrono::Duration::minutes(5)), end, lag),
        None
    );
    let late = freshness_verdict(Some(end - chrono::Duration::minutes(25)), end, lag).unwrap();
    assert_eq!(
        late,
        "the newest event is at 2024-01-01T00:35:00+00:00, 25m before the partition's end \
         (at most 10m)"
    );
    assert_eq!(
        freshness_verdict(None, end, lag).as_deref(),
        Some("the source has no rows in the partition")
    );
}

#[test]
fn anomalies_are_measured_from_the_median_of_the_history() {
    let anomaly = |within: serde_yaml::Value, metric: Option<&str>| {
        check(CheckSpec {
            anomaly: Some(AnomalySpec {
                metric: metric.map(str::to_owned),
                within,
                last: Some(5),
                min_history: Some(3),
            }),
            ..CheckSpec::default()
        })
    };
    let relative = anomaly("30%".into(), None);
    // Median of 90, 100, 110, 1000 is 105: 130 is within 31.5 of it, 140 is not.
    let history = [90.0, 1000.0, 110.0, 100.0];
    assert!(anomaly_verdict(&relative, 130.0, &history).passed);
    let off = anomaly_verdict(&relative, 140.0, &history);
    assert_eq!(
        off.detail.as_deref(),
        Some("140 is 35 from the median 105 of the last 4 partitions (within 30%)")
    );
    let absolute = anomaly(5.into(), None);
    assert!(!anomaly_verdict(&absolute, 111.0, &history).passed);
    let young = anomaly_verdict(&relative, 1e9, &[1.0, 2.0]);
    assert!(young.passed);
    assert!(
        young
            .detail
            .unwrap()
            .contains("fewer than `min_history` (3)")
    );

    let summed = anomaly("10%".into(), Some("sum(sales)"));
    let CheckKind::Anomaly { metric, .. } = &summed.kind else {
        unreachable!("an anomaly check")
    };
    assert_eq!(metric_value(metric, &frame()).unwrap(), Some(15.5));
    let not_an_aggregate = anomaly("10%".into(), Some("sales"));
    let CheckKind::Anomaly { metric, .. } = &not_an_aggregate.kind else {
        unreachable!("an anomaly check")
    };
    assert!(
        metric_value(metric, &frame())
            .unwrap_err()
            .contains("gives 4 values, not one")
    );
}
