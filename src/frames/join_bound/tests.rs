use polars::sql::SQLContext;

use super::*;
use crate::sql_guard::DEFAULT_MAX_JOIN_ROWS;

/// `query` planned over `tables`, and the tables as registered (for their names).
fn plan<'t>(
    query: &str,
    tables: &[(&'t str, &DataFrame)],
) -> (LazyFrame, Vec<(&'t str, LazyFrame)>) {
    let registered: Vec<(&str, LazyFrame)> = tables
        .iter()
        .map(|(name, frame)| (*name, (*frame).clone().lazy()))
        .collect();
    let mut context = SQLContext::new();
    for (name, frame) in &registered {
        context.register(name, frame.clone());
    }
    (context.execute(query).unwrap(), registered)
}

fn estimate(query: &str, tables: &[(&str, &DataFrame)]) -> Option<JoinEstimate> {
    let (lf, registered) = plan(query, tables);
    let named: Vec<(&str, &LazyFrame)> = registered.iter().map(|(n, f)| (*n, f)).collect();
    largest_join_named(&lf, &named).unwrap()
}

fn bound(query: &str, tables: &[(&str, &DataFrame)]) -> (Option<u128>, bool) {
    let estimate = estimate(query, tables).expect("a join");
    (estimate.rows, estimate.exact)
}

/// The rows the whole plan produces, as the walk bounds them (joins or not).
fn plan_rows(query: &str, tables: &[(&str, &DataFrame)]) -> Rows {
    let plan = plan(query, tables).0.to_alp_optimized().unwrap();
    let mut walk = Walk {
        plan: &plan,
        rows: vec![None; plan.lp_arena.len()],
        counts: Vec::new(),
        below_join: Vec::new(),
        threshold: None,
        counting: false,
    };
    walk.run().unwrap();
    walk.rows_of(plan.lp_top)
}

fn height(query: &str, tables: &[(&str, &DataFrame)]) -> u128 {
    u(plan(query, tables).0.collect().unwrap().height())
}

fn cross(ways: usize) -> String {
    let relations: Vec<String> = (0..ways).map(|i| format!("t AS t{i}")).collect();
    format!("SELECT * FROM {}", relations.join(", "))
}

/// A frame of `rows` rows whose `k` is 0 for the first `zeros` rows and 1 after, and whose
/// `v` counts the rows.
fn two_keys(rows: i64, zeros: i64) -> DataFrame {
    let k: Vec<i64> = (0..rows).map(|i| i64::from(i >= zeros)).collect();
    let v: Vec<i64> = (0..rows).collect();
    df!("k" => k, "v" => v).unwrap()
}

#[test]
fn cross_joins_multiply_and_five_ways_over_36_rows_is_refused() {
    let t = df!("x" => (0..36i64).collect::<Vec<_>>()).unwrap();
    let four = estimate(&cross(4), &[("t", &t)]).unwrap();
    assert_eq!((four.rows, four.exact), (Some(1_679_616), true));
    assert_eq!(four.refusal(DEFAULT_MAX_JOIN_ROWS), None);
    let five = estimate(&cross(5), &[("t", &t)]).unwrap();
    assert_eq!((five.rows, five.exact), (Some(60_466_176), true));
    let message = five.refusal(DEFAULT_MAX_JOIN_ROWS).unwrap();
    assert_eq!(
        message,
        "the query's cross join of t and t can produce exactly 60466176 rows; the limit is \
         50000000 (limits.max_join_rows)"
    );
    // The same over a 36-row aggregate of a bigger table: its groups are counted.
    let big = df!("k" => (0..36_000i64).map(|i| i % 36).collect::<Vec<_>>()).unwrap();
    let query = "WITH r AS (SELECT k, count(*) AS n FROM big GROUP BY k) \
                 SELECT * FROM r a, r b, r c, r d, r e";
    assert_eq!(bound(query, &[("big", &big)]), (Some(60_466_176), true));
}

#[test]
fn a_self_join_on_two_values_is_counted_exactly_on_both_sides_of_the_limit() {
    let query = "SELECT * FROM t a JOIN t b ON a.k = b.k";
    // 5,000² + 5,000²: exactly the limit, which passes.
    let at_limit = two_keys(10_000, 5_000);
    let estimate_at = estimate(query, &[("t", &at_limit)]).unwrap();
    assert_eq!(
        (estimate_at.rows, estimate_at.exact),
        (Some(50_000_000), true)
    );
    assert_eq!(estimate_at.refusal(DEFAULT_MAX_JOIN_ROWS), None);
    // 5,001² + 4,999² = 50,000,002: refused.
    let over = two_keys(10_000, 5_001);
    let message = estimate(query, &[("t", &over)])
        .unwrap()
        .refusal(DEFAULT_MAX_JOIN_ROWS)
        .unwrap();
    assert_eq!(
        message,
        "the query's inner join of t and t on k = k can produce exactly 50000002 rows; the \
         limit is 50000000 (limits.max_join_rows)"
    );
    // Checked against a real join of a smaller frame, for every join type.
    let small = two_keys(1_000, 300);
    let dim = df!("k" => [1i64, 7], "name" => ["one", "seven"]).unwrap();
    let tables = [("t", &small), ("d", &dim)];
    for how in ["INNER", "LEFT", "RIGHT", "FULL"] {
        let query = format!("SELECT * FROM t {how} JOIN d ON t.k = d.k");
        assert_eq!(
            bound(&query, &tables),
            (Some(height(&query, &tables)), true),
            "{how}"
        );
    }
}

#[test]
fn a_fact_joined_to_a_dimension_is_bounded_by_the_fact() {
    let fact = df!(
        "k" => (0..100_000i64).map(|i| i % 40).collect::<Vec<_>>(),
        "amount" => (0..100_000i64).collect::<Vec<_>>(),
    )
    .unwrap();
    let dim = df!(
        "k" => (0..40i64).collect::<Vec<_>>(),
        "name" => (0..40).map(|i| format!("n{i}")).collect::<Vec<_>>(),
    )
    .unwrap();
    let tables = [("fact", &fact), ("dim", &dim)];
    let query = "SELECT f.amount, d.name FROM fact f JOIN dim d ON f.k = d.k";
    let estimate = estimate(query, &tables).unwrap();
    assert_eq!((estimate.rows, estimate.exact), (Some(100_000), true));
    assert_eq!(estimate.describe, "inner join of fact and dim on k = k");
    assert_eq!(height(query, &tables), 100_000);
    // A fact side that cannot be traced to a frame (a union) is bounded by its own rows:
    // each of them matches at most one dimension row.
    let union = "SELECT u.amount, d.name FROM \
                 (SELECT k, amount FROM fact UNION ALL SELECT k, amount FROM fact) u \
                 JOIN dim d ON u.k = d.k";
    assert_eq!(bound(union, &tables), (Some(200_000), false));
}

#[test]
fn joins_of_subquery_results_trace_through_group_bys_and_filters() {
    let fact = df!(
        "k" => (0..20_000i64).map(|i| i % 40).collect::<Vec<_>>(),
        "g" => (0..20_000i64).map(|i| i % 7).collect::<Vec<_>>(),
        "v" => (0..20_000i64).collect::<Vec<_>>(),
    )
    .unwrap();
    let tables = [("f", &fact)];
    // One row per key on the left; the filter on the right makes the count a bound.
    let query = "SELECT * FROM (SELECT k, count(*) AS n FROM f GROUP BY k) a \
                 JOIN (SELECT k, v FROM f WHERE v > 15000) b ON a.k = b.k";
    let (rows, exact) = bound(query, &tables);
    assert_eq!((rows, exact), (Some(20_000), false));
    assert!(rows.unwrap() >= height(query, &tables));
    // Two aggregates crossed: their groups, not the rows they read.
    let query = "SELECT * FROM (SELECT k, count(*) AS n FROM f GROUP BY k) a \
                 CROSS JOIN (SELECT g, sum(v) AS s FROM f GROUP BY g) b";
    assert_eq!(bound(query, &tables), (Some(280), true));
    assert_eq!(height(query, &tables), 280);
}

#[test]
fn against_a_limit_bounds_are_only_as_tight_as_the_decision_needs() {
    let within = |query: &str, tables: &[(&str, &DataFrame)], limit: u64| {
        let (lf, _) = plan(query, tables);
        let estimate = largest_join_within(&lf, &[], limit).unwrap().unwrap();
        (estimate.rows, estimate.exact)
    };
    let fact = df!("k" => (0..100_000i64).map(|i| i % 40).collect::<Vec<_>>()).unwrap();
    let dim = df!("k" => (0..40i64).collect::<Vec<_>>()).unwrap();
    let tables = [("fact", &fact), ("dim", &dim)];
    let query = "SELECT * FROM fact f JOIN dim d ON f.k = d.k";
    // 100,000 × 40 is within the default limit: nothing is counted.
    assert_eq!(
        within(query, &tables, DEFAULT_MAX_JOIN_ROWS),
        (Some(4_000_000), false)
    );
    // Under a lower limit the dimension's unique keys settle it.
    assert_eq!(within(query, &tables, 1_000_000), (Some(100_000), false));
    // At the limit, one side's largest key (5,000 rows) settles the self-join; just over,
    // both sides are counted and the exact answer refuses it.
    let self_join = "SELECT * FROM t a JOIN t b ON a.k = b.k";
    let at = two_keys(10_000, 5_000);
    assert_eq!(
        within(self_join, &[("t", &at)], DEFAULT_MAX_JOIN_ROWS),
        (Some(50_000_000), false)
    );
    let over = two_keys(10_000, 5_001);
    assert_eq!(
        within(self_join, &[("t", &over)], DEFAULT_MAX_JOIN_ROWS),
        (Some(50_000_002), true)
    );
}

#[test]
fn a_filter_above_a_join_leaves_the_unfiltered_count_as_a_bound() {
    let t = two_keys(1_000, 500);
    let tables = [("t", &t)];
    let query = "SELECT * FROM t a JOIN t b ON a.k = b.k WHERE a.v < 10";
    let (rows, exact) = bound(query, &tables);
    assert_eq!((rows, exact), (Some(500_000), false));
    assert_eq!(height(query, &tables), 5_000);
}

#[test]
fn inequality_joins_are_bounded_by_every_pair() {
    let t = two_keys(100, 50);
    let tables = [("t", &t)];
    for query in [
        "SELECT * FROM t a JOIN t b ON a.v < b.v",
        "SELECT * FROM t a JOIN t b ON a.k = b.k AND a.v < b.v",
    ] {
        let (rows, _) = bound(query, &tables);
        assert!(rows.unwrap() >= height(query, &tables), "{query}");
        assert!(rows.unwrap() <= 10_000, "{query}");
    }
    assert_eq!(
        bound("SELECT * FROM t a JOIN t b ON a.v < b.v", &tables),
        (Some(10_000), false)
    );
}

#[test]
fn plans_without_joins_are_not_bounded_and_bound_their_rows() {
    let t = df!("k" => [1i64, 2, 1], "v" => [1i64, 2, 3]).unwrap();
    let tables = [("t", &t)];
    for query in [
        "SELECT 1",
        "SELECT * FROM t",
        "SELECT k, count(*) AS n FROM t GROUP BY k",
        "SELECT * FROM t WHERE v > 1",
        "SELECT * FROM t UNION ALL SELECT * FROM t",
        "SELECT UNNEST([1, 2, 3]) AS x",
        "SELECT * FROM t WHERE k IN (SELECT k FROM t WHERE v > 2)",
    ] {
        assert_eq!(estimate(query, &tables), None, "{query}");
        let rows = plan_rows(query, &tables);
        assert!(rows.bound.unwrap() >= height(query, &tables), "{query}");
    }
    assert_eq!(plan_rows("SELECT 1", &tables).bound, Some(1));
    assert_eq!(
        plan_rows("SELECT * FROM t UNION ALL SELECT * FROM t", &tables),
        Rows::exact(6)
    );
    assert_eq!(
        plan_rows("SELECT UNNEST([1, 2, 3]) AS x", &tables).bound,
        Some(3)
    );
}

#[test]
fn explodes_are_bounded_when_their_lists_are_known_before_running() {
    let t = df!(
        "k" => [1i64, 2, 3],
        "s" => ["a,b", "c", "d,e,f"],
    )
    .unwrap();
    let lists = df!("l" => [
        Series::new("".into(), [1i64, 2]),
        Series::new("".into(), [3i64]),
        Series::new("".into(), Vec::<i64>::new()),
    ])
    .unwrap();
    let tables = [("t", &t), ("lists", &lists)];
    // A literal array: three rows.
    let literal = "SELECT * FROM t AS a CROSS JOIN UNNEST([1, 2, 3]) AS u(x)";
    assert_eq!(bound(literal, &tables), (Some(9), true));
    assert_eq!(height(literal, &tables), 9);
    // A list column of a table: one row per element, one for the empty list.
    let column = "SELECT * FROM (SELECT UNNEST(l) AS x FROM lists) e CROSS JOIN t";
    assert_eq!(bound(column, &tables).0, Some(12));
    assert_eq!(height(column, &tables), 12);
    // Lists computed while running: no bound, so the join is refused.
    let computed = "SELECT a.k, x.w FROM t a CROSS JOIN \
                    (SELECT UNNEST(STRING_TO_ARRAY(s, ',')) AS w FROM t) x";
    let estimate = estimate(computed, &tables).unwrap();
    assert_eq!(estimate.rows, None);
    let message = estimate.refusal(DEFAULT_MAX_JOIN_ROWS).unwrap();
    assert!(
        message.contains("cannot be known before running"),
        "{message}"
    );
    assert_eq!(estimate.refusal(u64::MAX), None);
}

#[test]
fn bounds_saturate_and_zero_rows_stay_zero() {
    assert_eq!(mul(Some(u128::MAX), Some(2)), Some(u128::MAX));
    assert_eq!(mul(Some(0), None), Some(0));
    assert_eq!(mul(Some(3), None), None);
    assert_eq!(add(Some(u128::MAX), Some(1)), Some(u128::MAX));
    assert_eq!(min(None, Some(4)), Some(4));
    assert_eq!(max(None, Some(4)), None);
    let huge = JoinEstimate {
        rows: Some(u128::MAX),
        exact: false,
        describe: "cross join of t and t".to_owned(),
    };
    assert!(huge.refusal(u64::MAX - 1).is_some());
    assert_eq!(huge.refusal(u64::MAX), None);
}
