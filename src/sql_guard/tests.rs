use super::*;

fn chain(operator: &str, terms: usize) -> String {
    vec!["1=1"; terms].join(&format!(" {operator} "))
}

#[test]
fn nesting_bound_counts_chains_groups_and_parts() {
    assert_eq!(nesting_bound("1"), Some(1));
    // One `=`: a level, plus the group of the whole text.
    assert_eq!(nesting_bound("a = 1"), Some(2));
    assert_eq!(nesting_bound(&chain("OR", 3)), Some(1 + 5));
    // Comma-separated parts are separate trees: the deepest counts, not the sum.
    assert_eq!(nesting_bound("f(a + b, c + d + e)"), Some(1 + 1 + 2 + 1));
    assert_eq!(nesting_bound("((((a))))"), Some(9));
    // CASE branches are parts of the CASE group, and each WHEN a level: polars nests
    // every branch inside the previous one's otherwise.
    assert_eq!(
        nesting_bound("CASE WHEN a = 1 THEN b + 1 ELSE c END"),
        Some(1 + 1 + 1 + 1 + 1)
    );
    let branches = |n: usize| {
        format!(
            "CASE {} ELSE 0 END",
            vec!["WHEN amount = 0 THEN 0"; n].join(" ")
        )
    };
    assert!(check_expression(&branches(100)).is_ok());
    assert!(matches!(
        check_expression(&branches(3000)),
        Err(SqlRejection::TooDeep { .. })
    ));
    // Strings and names are not operators.
    assert_eq!(nesting_bound("'a OR b' || x.y"), Some(2));
    // Unclosed groups still count; untokenizable text is the parser's to refuse.
    assert_eq!(nesting_bound("(((a"), Some(7));
    assert_eq!(nesting_bound("'unterminated"), None);
}

#[test]
fn long_chains_are_refused_before_parsing_and_short_ones_pass() {
    let deep = format!("SELECT 1 AS x WHERE {}", chain("OR", 1_400));
    assert!(matches!(
        check_query(&deep),
        Err(SqlRejection::TooDeep { .. })
    ));
    let message = check_expression(&chain("AND", 5_000))
        .unwrap_err()
        .to_string();
    assert!(message.starts_with("is nested too deeply"), "{message}");
    assert!(message.contains("the limit is 256"), "{message}");
    assert!(check_expression(&chain("OR", 100)).is_ok());
    let unions = vec!["SELECT 1"; 300].join(" UNION ALL ");
    assert!(matches!(
        check_query(&unions),
        Err(SqlRejection::TooDeep { .. })
    ));
    // A million-item IN list is flat.
    let list: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
    assert!(check_expression(&format!("x IN ({})", list.join(","))).is_ok());
}

#[test]
fn parse_work_counts_the_rereading_of_keyword_calls() {
    // Plain calls, parentheses and long flat texts cost one pass.
    assert_eq!(parse_work_bound("f(g(h(x)))"), Some(0));
    assert_eq!(parse_work_bound("((((a))))"), Some(0));
    assert_eq!(parse_work_bound(&chain("OR", 10_000)), Some(0));
    // `CAST(` doubles what it encloses: `(`, `x`, `AS`, `INT`, `)` read twice.
    assert_eq!(parse_work_bound("CAST(x AS INT)"), Some(5));
    // Nested, the factors multiply; POSITION triples.
    assert_eq!(parse_work_bound("CAST(CAST(x"), Some(1 + 1 + 3 + 3));
    assert_eq!(parse_work_bound("POSITION(x"), Some(2 + 2));
    // Brackets after other keywords are read once.
    assert_eq!(
        parse_work_bound("x IN (1, 2) OR count(*) OVER (PARTITION BY y) > 1"),
        Some(0)
    );
    // Quoted names are not keywords; untokenizable text is the parser's to refuse.
    assert_eq!(parse_work_bound("\"cast\"(x)"), Some(0));
    assert_eq!(parse_work_bound("CAST('unterminated"), None);
}

#[test]
fn nested_keyword_calls_are_refused_before_parsing() {
    // The fuzz find: 127 `substr(` before an unclosed parenthesis never returned.
    let text = format!("ev{}ent = 'purchase'", "substr(".repeat(127));
    assert!(matches!(
        check_expression(&text),
        Err(SqlRejection::TooCostly { .. })
    ));
    for call in [
        "substr(",
        "CAST(",
        "POSITION(",
        "CEIL(",
        "CURRENT_DATE(",
        "NOT (",
        "MAP(",
    ] {
        let text = format!("ev{}ent = 'purchase'", call.repeat(40));
        let started = std::time::Instant::now();
        let rejection = check_expression(&text).unwrap_err();
        assert!(
            matches!(rejection, SqlRejection::TooCostly { .. }),
            "{call}: {rejection}"
        );
        assert!(
            rejection.to_string().contains("the limit is 32768"),
            "{rejection}"
        );
        let query = format!("SELECT {text} FROM t");
        assert!(matches!(
            check_query(&query),
            Err(SqlRejection::TooCostly { .. })
        ));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
    // What real SQL nests passes.
    assert!(check_expression("CAST(SUBSTR(CAST(x AS VARCHAR), 1, CEIL(y)) AS INT) > 3").is_ok());
    assert!(
        check_query(
            "SELECT category, CAST(floor(sum(amount)) AS BIGINT) AS s FROM t GROUP BY category"
        )
        .is_ok()
    );
}

#[test]
fn intervals_polars_cannot_read_are_refused() {
    // polars-sql unwraps its interval parser: these panicked inside `sql_expr`.
    for (text, problem) in [
        ("INTERVAL 'SELECT 1 day'", "expected leading integer"),
        ("ts > now() - INTERVAL '1 fortnight'", "fortnight"),
        ("INTERVAL '3'", "expected a valid unit"),
        ("INTERVAL '99999999999 weeks'", "longer than 292 years"),
        // Past 64 bits inside polars' own arithmetic (a debug build panicked).
        ("INTERVAL '9999999 hours'", "too large"),
        ("INTERVAL '99999999999999999999 days'", "too large"),
        ("INTERVAL '9000000000 s 9000000000 s'", "too large"),
    ] {
        let rejection = check_expression(text).unwrap_err();
        assert!(
            matches!(&rejection, SqlRejection::Interval { problem: p, .. } if p.contains(problem)),
            "{text}: {rejection}"
        );
        let query = format!("SELECT {text} AS x FROM t");
        assert!(matches!(
            check_query(&query),
            Err(SqlRejection::Interval { .. })
        ));
    }
    // What polars reads, and what it refuses by itself, pass.
    for text in [
        "ts > now() - INTERVAL '2 days 3 hours'",
        "INTERVAL '1 year'",
        "INTERVAL '-1 day'",
        "INTERVAL '1' DAY",
    ] {
        assert_eq!(check_expression(text), Ok(()), "{text}");
    }
}

#[test]
fn deep_parses_have_the_stack_they_need() {
    // 12 nested `JOIN (` overflowed a 2 MiB thread in a debug build.
    let text = format!("SELECT 1 FROM {}t", "t JOIN (".repeat(40));
    let parsed = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || check_query(&text))
        .unwrap()
        .join()
        .unwrap();
    assert!(matches!(parsed, Err(SqlRejection::Syntax(_))), "{parsed:?}");
}

#[test]
fn table_functions_are_refused_whatever_the_tables_are_called() {
    for sql in [
        "SELECT * FROM read_csv('/etc/os-release')",
        "SELECT * FROM read_parquet('/etc/passwd') AS read_csv",
        "SELECT * FROM events JOIN read_ipc('x.arrow') r ON true",
        "SELECT * FROM (SELECT * FROM read_json('/etc/hosts')) t",
        "WITH read_csv AS (SELECT 1) SELECT * FROM read_csv('/etc/passwd')",
        "SELECT (SELECT count(*) FROM read_csv('/etc/passwd')) AS n",
    ] {
        let err = check_query(sql).unwrap_err();
        assert!(
            matches!(err, SqlRejection::TableFunction { .. }),
            "{sql}: {err}"
        );
    }
}

#[test]
fn calls_that_grow_rows_without_bound_are_refused() {
    for (sql, expected) in [
        (
            "rpad(city, 9223372036854775807, 'x')",
            "RPAD pads to 9223372036854775807",
        ),
        ("lpad(city, 4294967296, 'x')", "LPAD pads to 4294967296"),
        (
            "lpad(city, n, 'x')",
            "LPAD needs its length as a whole number",
        ),
    ] {
        let message = check_expression(sql).unwrap_err().to_string();
        assert!(message.contains(expected), "{sql}: {message}");
    }
    let replacement = format!("replace(city, 'a', '{}')", "x".repeat(300));
    let message = check_expression(&replacement).unwrap_err().to_string();
    assert!(
        message.contains("REPLACE with a replacement of 300 bytes"),
        "{message}"
    );
    let many = vec!["city"; 65].join(", ");
    assert!(check_expression(&format!("concat({many})")).is_err());
    let long = "x".repeat(MAX_STRING_LITERAL + 1);
    assert!(check_query(&format!("SELECT '{long}' || city FROM events")).is_err());
    for sql in [
        "lpad(code, 8, '0')",
        "replace(city, ' ', '_')",
        "concat(a, '-', b)",
    ] {
        assert_eq!(check_expression(sql), Ok(()), "{sql}");
    }
}

#[test]
fn columns_patterns_must_compile() {
    for pattern in ["(", "[", "a{99999999}"] {
        let sql = format!("SELECT columns('{pattern}') FROM events");
        assert!(
            matches!(check_query(&sql), Err(SqlRejection::Pattern { .. })),
            "{sql}"
        );
    }
    assert!(check_query("SELECT columns('^amount.*$') FROM events").is_ok());
    assert!(check_query("SELECT columns(*) FROM events").is_ok());
}

#[test]
fn only_one_select_is_a_query() {
    for (sql, kind) in [
        ("CREATE TABLE t AS SELECT 1", "CREATE"),
        ("DROP TABLE events", "DROP"),
        ("EXPLAIN SELECT 1", "EXPLAIN"),
        ("SHOW TABLES", "SHOW"),
        ("TRUNCATE events", "TRUNCATE"),
    ] {
        assert_eq!(
            check_query(sql),
            Err(SqlRejection::Statement { what: kind.into() }),
            "{sql}"
        );
    }
    assert_eq!(
        check_query("SELECT 1; SELECT 2"),
        Err(SqlRejection::Statements { count: 2 })
    );
}

#[test]
fn plain_queries_pass_with_their_tables() {
    let shape = check_query(
        "WITH daily AS (SELECT city, sum(amount) AS s FROM purchases GROUP BY city) \
         SELECT d.city, d.s, c.region FROM daily d JOIN cities c ON d.city = c.city \
         UNION ALL SELECT 'x', 0, r FROM regions, UNNEST([1, 2]) AS u(r)",
    )
    .unwrap();
    assert_eq!(shape.tables, vec!["purchases", "cities", "regions"]);
    assert_eq!(
        check_query("SELECT 1").unwrap().tables,
        Vec::<String>::new()
    );
    let many = (0..40)
        .map(|i| format!("t{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(
        check_query(&format!("SELECT 1 FROM {many}")),
        Err(SqlRejection::TooManyRelations { count: 33 })
    );
}

#[test]
fn fragments_hold_no_subquery() {
    for sql in [
        "user_id IN (SELECT column_1 FROM read_csv('/etc/passwd'))",
        "EXISTS (SELECT 1)",
        "amount > (SELECT max(amount) FROM events)",
    ] {
        assert_eq!(check_expression(sql), Err(SqlRejection::Subquery), "{sql}");
    }
    for sql in [
        "event = 'purchase'",
        "sum(amount)",
        "count(*)",
        "x IN (1, 2)",
    ] {
        assert_eq!(check_expression(sql), Ok(()), "{sql}");
    }
}
