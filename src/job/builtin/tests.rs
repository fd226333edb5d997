use std::collections::BTreeMap;

use chrono::DateTime;

use super::*;
use crate::job::JobInput;
use crate::partition::{Grain, Window};

fn run(job: &dyn Job, frame: DataFrame) -> JobOutput {
    try_run(job, frame).unwrap()
}

/// Runs `job` over `frame` as its input `events`.
fn try_run(job: &dyn Job, frame: DataFrame) -> Result<JobOutput, JobError> {
    let inputs: BTreeMap<String, JobInput> =
        [("events".to_owned(), JobInput::of_frame(frame.lazy()))]
            .into_iter()
            .collect();
    let ctx = JobContext {
        pipeline: "p",
        job: "j",
        grain: Grain::Hourly,
        window: Window {
            start: DateTime::UNIX_EPOCH,
            end: DateTime::UNIX_EPOCH,
        },
        inputs: &inputs,
    };
    crate::job::run_job(job, &ctx)
}

/// The deepest SQL the guard accepts plans and runs on a 2 MiB thread (the size of
/// tokio's and the context executors' threads), in every kind that takes SQL.
#[test]
fn the_deepest_accepted_sql_runs_on_a_small_stack() {
    let terms = |n: usize| vec!["x = 1"; n].join(" OR ");
    // n terms count 2n levels: n `=`, n - 1 `OR`, and the whole text.
    let deepest = crate::sql_guard::MAX_SQL_DEPTH / 2;
    assert!(crate::sql_guard::check_expression(&terms(deepest)).is_ok());
    assert!(crate::sql_guard::check_expression(&terms(deepest + 1)).is_err());
    let frame = df!("x" => [1i64, 2, 1]).unwrap();
    let thread = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let query = format!("SELECT x FROM events WHERE {}", terms(deepest));
            let sql = Sql::new(&query).unwrap();
            let counted = run(&sql, frame.clone()).frame;
            let filter = terms(deepest);
            let select = Select::new(None, Some(&filter)).unwrap();
            let selected = run(&select, frame).frame;
            (counted, selected.height())
        })
        .unwrap();
    let (counted, selected) = thread.join().expect("no stack overflow");
    assert_eq!(counted.height(), 2);
    assert_eq!(selected, 2);
}

#[test]
fn sql_sums_are_recognised_and_nothing_else() {
    let parsed = |sql: &str| parse_expression("m", sql).unwrap();
    assert_eq!(
        plain_sum_of(&parsed("sum(amount)")),
        Some(col("amount").sum())
    );
    assert_eq!(
        plain_sum_of(&parsed("SUM(amount * 2)")),
        Some((col("amount") * lit(2)).sum())
    );
    for other in ["sum(amount) / 2", "count(*)", "avg(amount)", "max(amount)"] {
        assert_eq!(plain_sum_of(&parsed(other)), None, "{other}");
    }
}

#[test]
fn plain_sums_keep_sql_answers_for_groups_of_nulls_and_zero_sums() {
    let frame = df!(
        "city" => ["a", "a", "b", "c", "c", "d"],
        "amount" => [Some(1.0f64), Some(2.0), None, Some(5.0), Some(-5.0), Some(4.0)],
    )
    .unwrap();
    let by_city = |aggregations: &[(&str, &str)]| {
        let aggregations: Vec<(String, String)> = aggregations
            .iter()
            .map(|(n, e)| ((*n).to_owned(), (*e).to_owned()))
            .collect();
        let job = GroupBy::new(&["city".to_owned()], &aggregations, None).unwrap();
        run(&job, frame.clone()).frame
    };
    // b is a group of nulls (NULL, not 0); c sums to a real 0.
    let out = by_city(&[("sales", "sum(amount)"), ("n", "count(amount)")]);
    let expected = df!(
        "city" => ["a", "b", "c", "d"],
        "sales" => [Some(3.0f64), None, Some(0.0), Some(4.0)],
        "n" => [2u32, 0, 2, 1],
    )
    .unwrap();
    assert!(out.equals_missing(&expected), "{out}");
    // Without such groups the fast path's answer stands.
    let positive = df!(
        "city" => ["a", "a", "d"],
        "amount" => [Some(1.0f64), Some(2.0), Some(4.0)],
    )
    .unwrap();
    let job = GroupBy::new(
        &["city".to_owned()],
        &[("sales".to_owned(), "sum(amount)".to_owned())],
        None,
    )
    .unwrap();
    let out = run(&job, positive).frame;
    let expected = df!("city" => ["a", "d"], "sales" => [3.0f64, 4.0]).unwrap();
    assert!(out.equals_missing(&expected), "{out}");
    // Top: the group of nulls sorts last as NULL.
    let top = Top::new("city", "sum(amount)", 4, Some("sales"), None).unwrap();
    let out = run(&top, frame.clone()).frame;
    let expected = df!(
        "city" => ["d", "a", "c", "b"],
        "sales" => [Some(4.0f64), Some(3.0), Some(0.0), None],
    )
    .unwrap();
    assert!(out.equals_missing(&expected), "{out}");
}

#[test]
fn count_only_counts_like_the_stateful_count_without_keeping_keys() {
    let frame = df!(
        "user_id" => [Some(1i64), Some(2), Some(2), None, Some(3), Some(4)],
        "event" => ["register", "register", "register", "register", "click", "register"],
    )
    .unwrap();
    let stateful = CountDistinct::new("user_id", Some("event = 'register'")).unwrap();
    let with_state = run(&stateful, frame.clone());
    let without = run(&stateful.clone().count_only(), frame);
    // Nulls are not a value; the click is filtered out: {1, 2, 4}.
    assert_eq!(
        with_state.frame,
        df!(DISTINCT_COUNT_COLUMN => [3u64]).unwrap()
    );
    assert_eq!(without.frame, with_state.frame);
    assert_eq!(with_state.state.map(|s| s.height()), Some(3));
    assert!(without.state.is_none());
}

/// The message of a SQL job refused before running.
fn refusal(query: &str, frame: DataFrame) -> String {
    match try_run(&Sql::new(query).unwrap(), frame) {
        Err(JobError::Invalid(message)) => message,
        other => panic!("{query}: not refused: {other:?}"),
    }
}

#[test]
fn sql_joins_that_could_explode_are_refused_before_running() {
    assert_eq!(
        crate::sql_guard::max_join_rows(),
        crate::sql_guard::DEFAULT_MAX_JOIN_ROWS
    );
    // The hostile query: a 5-way self cross join of 36 rows is 60,466,176 rows.
    let small = df!("x" => (0..36i64).collect::<Vec<_>>()).unwrap();
    let ways = |n: usize| {
        let relations: Vec<String> = (0..n).map(|i| format!("events e{i}")).collect();
        relations.join(", ")
    };
    let message = refusal(&format!("SELECT * FROM {}", ways(5)), small.clone());
    assert_eq!(
        message,
        "the query's cross join of events and events can produce exactly 60466176 rows; \
         the limit is 50000000 (limits.max_join_rows)"
    );
    // Four ways (1,679,616 rows) run.
    let four = Sql::new(&format!("SELECT count(*) AS n FROM {}", ways(4))).unwrap();
    let counted = run(&four, small).frame;
    assert_eq!(
        counted.column("n").unwrap().u32().unwrap().get(0),
        Some(1_679_616)
    );
    // An equi self-join on a column with two values: 5,001² + 4,999² rows is just over.
    let keys: Vec<i64> = (0..10_000).map(|i| i64::from(i >= 5_001)).collect();
    let message = refusal(
        "SELECT a.k FROM events a JOIN events b ON a.k = b.k",
        df!("k" => keys).unwrap(),
    );
    assert_eq!(
        message,
        "the query's inner join of events and events on k = k can produce exactly \
         50000002 rows; the limit is 50000000 (limits.max_join_rows)"
    );
}

/// The join bound walks plans and expressions with its own stacks: the deepest SQL the
/// guard accepts, with a join, is bounded and runs on a 2 MiB thread.
#[test]
fn the_deepest_accepted_sql_with_a_join_is_bounded_on_a_small_stack() {
    let terms = |n: usize| vec!["a.x = 1"; n].join(" OR ");
    let query = move |n: usize| {
        format!(
            "SELECT a.x FROM events a JOIN events b ON a.x = b.x WHERE {}",
            terms(n)
        )
    };
    let deepest = (1..=crate::sql_guard::MAX_SQL_DEPTH)
        .rev()
        .find(|n| Sql::new(&query(*n)).is_ok())
        .unwrap();
    assert!(
        deepest > crate::sql_guard::MAX_SQL_DEPTH / 2 - 4,
        "{deepest}"
    );
    let frame = df!("x" => [1i64, 2, 1]).unwrap();
    let thread = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            run(&Sql::new(&query(deepest)).unwrap(), frame)
                .frame
                .height()
        })
        .unwrap();
    assert_eq!(thread.join().expect("no stack overflow"), 4);
}

#[test]
fn sql_without_joins_runs_unchecked() {
    let frame = df!("k" => [1i64, 2, 1], "v" => [1i64, 2, 3]).unwrap();
    for (query, rows) in [
        ("SELECT 1 AS one", 1),
        ("SELECT * FROM events", 3),
        ("SELECT k, sum(v) AS s FROM events GROUP BY k", 2),
        (
            "SELECT * FROM events WHERE v > 1 UNION ALL SELECT * FROM events",
            5,
        ),
        ("SELECT UNNEST([1, 2, 3]) AS x", 3),
    ] {
        let sql = Sql::new(query).unwrap();
        assert_eq!(run(&sql, frame.clone()).frame.height(), rows, "{query}");
    }
}
