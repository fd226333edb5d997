//! Fuzzing on stable Rust (cargo-fuzz needs nightly): proptest mutates seed inputs with each
//! language's tokens, repeats, splices and stray characters, and feeds them to the three
//! parsers that read text from outside:
//!
//! - `pipeline`: [`floe::pipeline::parse_pipeline`] (pipeline files and uploaded bundles),
//!   seeded with `pipelines/shop.yaml` and the broken fixtures of `tests/fixtures/invalid/`;
//! - `hocon`: [`floe::server::hocon::parse`] (job and context configs posted over HTTP);
//! - `sql`: [`floe::sql_guard::check_expression`] and [`check_query`], and the built-in job
//!   constructors that parse SQL (`Sql`, `Select`, `GroupBy`, `Top`, `CountDistinct`).
//!
//! Each case must return without a panic, within a time proportional to its size (1 s per
//! 64 KiB started for each parser entry point the target calls; inputs are at most 64 KiB),
//! and any error must carry a non-empty message.
//!
//! - `FLOE_FUZZ_CASES`: cases per target (default 150, a few seconds each in the dev profile);
//!   `FLOE_FUZZ_CASES=100000` for a long run.
//! - `FLOE_FUZZ_SEED`: the RNG seed (default fixed, so CI is reproducible); `random` picks a
//!   fresh one, printed on failure.
//! - A failing case, shrunk, is written to `<target tmp>/fuzz-artifacts/<target>/<sha256>.txt`
//!   (`target/tmp/…`); copy it into `tests/fixtures/fuzz/<target>/` to keep it: every file
//!   there is replayed on every run, before the random cases.
//! - A stack overflow aborts the process before proptest can report it: the input in flight is
//!   in `<target tmp>/fuzz-artifacts/<target>/in-flight.txt`.

use std::fs;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use floe::JobRegistry;
use floe::job::builtin::{CountDistinct, GroupBy, Select, Sql, Top};
use floe::pipeline::parse_pipeline;
use floe::server::hocon;
use floe::sql_guard::{check_expression, check_query};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, RngSeed, TestError, TestRunner};
use sha2::{Digest, Sha256};

use crate::common::repo_path;

/// The largest input a case builds; longer texts are cut at a character boundary.
const MAX_INPUT: usize = 64 * 1024;

/// The stack of the thread each case runs on: that of tokio's blocking threads, where the
/// server parses uploads and configs.
const CASE_STACK: usize = 2 << 20;

/// A case still running after this is reported as a hang.
const HANG: Duration = Duration::from_secs(30);

const DEFAULT_CASES: u32 = 150;
const DEFAULT_SEED: u64 = 0x5eed_f10e;

/// One fuzz target: a name (its fixtures folder) and a check that runs the parser on a text
/// and returns what is wrong with the outcome, if anything.
#[derive(Clone, Copy)]
struct Target {
    name: &'static str,
    check: fn(&str) -> Result<(), String>,
    /// The parser entry points `check` calls, each given the time bound.
    entry_points: u32,
}

// ---- the checks ---------------------------------------------------------------------------

fn non_empty(what: &str, message: &str) -> Result<(), String> {
    if message.trim().is_empty() {
        Err(format!("{what} gave an empty error message"))
    } else {
        Ok(())
    }
}

fn check_pipeline(text: &str) -> Result<(), String> {
    let registry = JobRegistry::new();
    let Err(errors) = parse_pipeline(text, Path::new("fuzz.yaml"), &registry) else {
        return Ok(());
    };
    if errors.0.is_empty() {
        return Err("parse_pipeline failed without a diagnostic".to_owned());
    }
    for diagnostic in &errors.0 {
        non_empty("parse_pipeline", &diagnostic.message)?;
        let shown = diagnostic.to_string();
        if !shown.starts_with("fuzz.yaml") {
            return Err(format!("a diagnostic does not name the file: {shown}"));
        }
    }
    Ok(())
}

fn check_hocon(text: &str) -> Result<(), String> {
    match hocon::parse(text) {
        Ok(value) => serde_json::to_string(&value)
            .map(drop)
            .map_err(|e| format!("the parsed value does not serialise: {e}")),
        Err(error) => {
            non_empty("hocon::parse", &error.message)?;
            let lines = text.matches('\n').count() + 1;
            if error.line == 0 || error.column == 0 || error.line > lines {
                return Err(format!(
                    "error position {}:{} is outside the text ({lines} lines): {error}",
                    error.line, error.column
                ));
            }
            Ok(())
        }
    }
}

fn check_sql(text: &str) -> Result<(), String> {
    if let Err(rejection) = check_expression(text) {
        non_empty("check_expression", &rejection.to_string())?;
    }
    if let Err(rejection) = check_query(text) {
        non_empty("check_query", &rejection.to_string())?;
    }
    let constructors: [(&str, Result<(), Vec<String>>); 5] = [
        ("Sql::new", Sql::new(text).map(drop)),
        ("Select::new", Select::new(None, Some(text)).map(drop)),
        // The text as an aggregation and a metric; as a filter, Select and CountDistinct
        // read it the same way.
        (
            "GroupBy::new",
            GroupBy::new(
                &["category".to_owned()],
                &[("total".to_owned(), text.to_owned())],
                None,
            )
            .map(drop),
        ),
        ("Top::new", Top::new("city", text, 10, None, None).map(drop)),
        (
            "CountDistinct::new",
            CountDistinct::new("user_id", Some(text)).map(drop),
        ),
    ];
    for (what, outcome) in constructors {
        if let Err(errors) = outcome {
            if errors.is_empty() {
                return Err(format!("{what} failed with no error"));
            }
            for error in &errors {
                non_empty(what, error)?;
            }
        }
    }
    Ok(())
}

const PIPELINE: Target = Target {
    name: "pipeline",
    check: check_pipeline,
    entry_points: 1,
};
const HOCON: Target = Target {
    name: "hocon",
    check: check_hocon,
    entry_points: 1,
};
const SQL: Target = Target {
    name: "sql",
    check: check_sql,
    // check_expression, check_query and five job constructors.
    entry_points: 7,
};

// ---- running one case ---------------------------------------------------------------------

fn artifacts(target: Target) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz-artifacts")
        .join(target.name)
}

/// 1 s for each 64 KiB started.
fn time_bound(len: usize) -> Duration {
    let blocks = len.div_ceil(64 * 1024).max(1);
    Duration::from_secs(u64::try_from(blocks).unwrap_or(u64::MAX))
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".to_owned())
}

/// Runs `target` on `input` on a thread of its own; the time it took, or what went wrong.
fn run_once(target: Target, input: &str) -> Result<Duration, String> {
    let (sender, receiver) = mpsc::channel();
    let owned = input.to_owned();
    std::thread::Builder::new()
        .name(format!("fuzz-{}", target.name))
        .stack_size(CASE_STACK)
        .spawn(move || {
            let started = Instant::now();
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| (target.check)(&owned)));
            let _ = sender.send((started.elapsed(), outcome));
        })
        .map_err(|e| format!("cannot start a case thread: {e}"))?;
    match receiver.recv_timeout(HANG) {
        Ok((elapsed, Ok(Ok(())))) => Ok(elapsed),
        Ok((_, Ok(Err(problem)))) => Err(problem),
        Ok((_, Err(panic))) => Err(format!("panicked: {}", panic_text(panic.as_ref()))),
        Err(_) => Err(format!(
            "did not return within {HANG:?} ({} bytes)",
            input.len()
        )),
    }
}

/// Runs a case, checking the time bound; a slow run is retried twice (the test binary runs
/// other tests beside this one), so only a case slow every time fails.
fn run_case(target: Target, input: &str) -> Result<(), String> {
    let bound = time_bound(input.len()) * target.entry_points;
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        fastest = fastest.min(run_once(target, input)?);
        if fastest <= bound {
            return Ok(());
        }
    }
    Err(format!(
        "took {fastest:?} on {} bytes; the bound is {bound:?}",
        input.len()
    ))
}

/// The regression cases of `target`: every file of `tests/fixtures/fuzz/<target>/`.
fn regression_cases(target: Target) -> Vec<(PathBuf, String)> {
    let dir = repo_path(&format!("tests/fixtures/fuzz/{}", target.name));
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("read fuzz fixtures").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!("{}: fuzz fixtures are UTF-8 text: {e}", path.display())
            });
            (path, text)
        })
        .collect()
}

fn cases() -> u32 {
    match std::env::var("FLOE_FUZZ_CASES") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("FLOE_FUZZ_CASES must be a number, found `{text}`")),
        Err(_) => DEFAULT_CASES,
    }
}

fn seed() -> u64 {
    match std::env::var("FLOE_FUZZ_SEED").as_deref() {
        Err(_) => DEFAULT_SEED,
        Ok("random") => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            (nanos as u64) ^ u64::from(std::process::id())
        }
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("FLOE_FUZZ_SEED must be a number or `random`")),
    }
}

/// Replays the regression cases of `target`, then runs `strategy`'s cases; a failure is
/// shrunk, written out as an artifact and reported.
fn fuzz(target: Target, strategy: impl Strategy<Value = String>) {
    for (path, text) in regression_cases(target) {
        if let Err(problem) = run_case(target, &text) {
            panic!("fuzz regression {}: {problem}", path.display());
        }
    }
    let dir = artifacts(target);
    fs::create_dir_all(&dir).expect("create the fuzz artifacts folder");
    let in_flight = dir.join("in-flight.txt");
    let seed = seed();
    let config = Config {
        cases: cases(),
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_time: 120_000,
        max_shrink_iters: 10_000,
        ..Config::default()
    };
    let started = Instant::now();
    let mut runner = TestRunner::new(config);
    let outcome = runner.run(&strategy, |input| {
        // Kept until the case returns: a stack overflow aborts the process.
        let _ = fs::write(&in_flight, &input);
        run_case(target, &input).map_err(TestCaseError::fail)
    });
    let _ = fs::remove_file(&in_flight);
    match outcome {
        Ok(()) => eprintln!(
            "fuzz {}: {} cases in {:.1?} (seed {seed})",
            target.name,
            cases(),
            started.elapsed()
        ),
        Err(TestError::Fail(reason, input)) => {
            let name = hex::encode(&Sha256::digest(input.as_bytes())[..8]);
            let artifact = dir.join(format!("{name}.txt"));
            let _ = fs::write(&artifact, &input);
            panic!(
                "fuzz {}: {reason} (seed {seed}); the input ({} bytes) is in {}: copy it into \
                 tests/fixtures/fuzz/{}/ to keep it as a regression case; input: {input:?}",
                target.name,
                input.len(),
                artifact.display(),
                target.name
            );
        }
        Err(TestError::Abort(reason)) => panic!("fuzz {}: aborted: {reason}", target.name),
    }
}

// ---- inputs -------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Edit {
    /// Insert a token of the language.
    Insert(usize, &'static str),
    /// Insert a token repeated: deep nesting, long chains, huge scalars.
    Repeat(usize, &'static str, usize),
    /// Insert a character, any: NUL, BOM, control characters, non-ASCII.
    Char(usize, char),
    /// Remove up to that many bytes.
    Delete(usize, usize),
    /// Copy a stretch of the text somewhere else (duplicate keys, misplaced blocks).
    Splice(usize, usize, usize),
    /// Repeat a stretch of the text in place.
    Duplicate(usize, usize, usize),
}

/// The largest char boundary of `text` at or below `at`.
fn boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// A place in `text` from a raw number: positions shrink towards the start.
fn position(text: &str, at: usize) -> usize {
    boundary(text, at % (text.len() + 1))
}

fn apply(mut text: String, edits: &[Edit]) -> String {
    for edit in edits {
        match edit {
            Edit::Insert(at, token) => {
                let at = position(&text, *at);
                text.insert_str(at, token);
            }
            Edit::Repeat(at, token, times) => {
                let at = position(&text, *at);
                let room = MAX_INPUT.saturating_sub(text.len()) / token.len().max(1);
                text.insert_str(at, &token.repeat((*times).min(room + 1)));
            }
            Edit::Char(at, c) => {
                let at = position(&text, *at);
                text.insert(at, *c);
            }
            Edit::Delete(at, len) => {
                let start = position(&text, *at);
                let end = boundary(&text, start + len);
                text.replace_range(start..end, "");
            }
            Edit::Splice(from, len, to) => {
                let start = position(&text, *from);
                let end = boundary(&text, start + len);
                let piece = text[start..end].to_owned();
                let at = position(&text, *to);
                text.insert_str(at, &piece);
            }
            Edit::Duplicate(at, len, times) => {
                let start = position(&text, *at);
                let end = boundary(&text, start + len);
                let piece = text[start..end].repeat(*times);
                text.insert_str(end, &piece);
            }
        }
        if text.len() > MAX_INPUT {
            let end = boundary(&text, MAX_INPUT);
            text.truncate(end);
        }
    }
    text
}

/// Repeat counts: mostly small, sometimes past every nesting limit, now and then huge.
fn times() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 1..=8usize, 2 => 9..=300usize, 1 => 301..=8_000usize]
}

fn edit(tokens: &'static [&'static str]) -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), select(tokens)).prop_map(|(at, t)| Edit::Insert(at, t)),
        2 => (any::<usize>(), select(tokens), times()).prop_map(|(at, t, n)| Edit::Repeat(at, t, n)),
        2 => (any::<usize>(), any::<char>()).prop_map(|(at, c)| Edit::Char(at, c)),
        2 => (any::<usize>(), 1..64usize).prop_map(|(at, len)| Edit::Delete(at, len)),
        1 => (any::<usize>(), 1..256usize, any::<usize>())
            .prop_map(|(from, len, to)| Edit::Splice(from, len, to)),
        1 => (any::<usize>(), 1..256usize, times())
            .prop_map(|(at, len, n)| Edit::Duplicate(at, len, n)),
    ]
}

/// A seed with a few edits (most cases), or a soup of tokens.
fn inputs(seeds: Vec<String>, tokens: &'static [&'static str]) -> impl Strategy<Value = String> {
    let mutated =
        (select(seeds), vec(edit(tokens), 1..8)).prop_map(|(seed, edits)| apply(seed, &edits));
    let soup = vec(select(tokens), 0..200).prop_map(|parts| {
        let text = parts.concat();
        let end = boundary(&text, MAX_INPUT);
        text[..end].to_owned()
    });
    prop_oneof![4 => mutated, 1 => soup]
}

const YAML_TOKENS: &[&str] = &[
    "\n",
    "  ",
    "    ",
    "\t",
    ": ",
    ":",
    "- ",
    "-",
    "[",
    "]",
    "{",
    "}",
    ", ",
    "? ",
    "&a ",
    "*a",
    "&b [*a, *a, *a, *a, *a, *a, *a, *a, *a]",
    "<<: *a\n",
    "!!str ",
    "!!binary ",
    "!!map ",
    "!custom ",
    "|\n",
    ">-\n",
    "'",
    "\"",
    "\\",
    "# c\n",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "%TAG ! tag:x:\n",
    "~",
    "null",
    "true",
    "no",
    "0x1F",
    "0o17",
    "1e309",
    "-.inf",
    ".nan",
    "99999999999999999999999",
    "-1",
    "0",
    "2024-02-30T25:61:00Z",
    "2024-01-01T00:00:00Z",
    "\u{0}",
    "\u{feff}",
    "\u{202e}",
    "\u{85}",
    "é",
    "😀",
    "\r\n",
    "\r",
    "version: 1\n",
    "version: 2\n",
    "name: x\n",
    "timezone: ",
    "Mars/Phobos",
    "Europe/Paris",
    "start: ",
    "end: ",
    "grain: ",
    "hourly",
    "weekly",
    "monthly",
    "from: ",
    "events",
    "filter: ",
    "event = 'purchase'",
    "sum(",
    ")",
    "(",
    "count(*)",
    " OR 1=1",
    "x = ",
    "SELECT * FROM read_csv('/etc/passwd')",
    "{date}",
    "{hour}",
    "{nope}",
    "../",
    "/etc/",
    "*.parquet",
    "**",
    "jobs:\n",
    "sources:\n",
    "keys: [",
    "aggregations: {",
    "rust: { class: x }\n",
    "schedule:\n",
    "cron: ",
    "* * * * *",
    "0 0 31 2 *",
    "delay: ",
    "1h",
    "-5m",
    "999999999999h",
    "timeout: ",
    "retries: ",
    "wait: ",
    "format: ",
    "csv",
    "path: ",
    "time_column: ",
    "count_distinct:\n",
    "top:\n",
    "group_by:\n",
    "select:\n",
    "sql: ",
    "column: ",
    "metric: ",
    "n: ",
    "depends_on: [",
    "description: ",
];

const HOCON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "=",
    ":",
    "+=",
    ",",
    "\n",
    " ",
    "\t",
    "\"",
    "\"\"\"",
    "${a}",
    "${?a}",
    "${",
    "include \"x\"",
    "include required(file(\"/etc/passwd\"))",
    "# c\n",
    "// c\n",
    ".",
    "a.b.c",
    "\"a.b\"",
    "a",
    "input",
    "inputs",
    "source",
    "partition",
    "from",
    "to",
    "1",
    "-",
    "-0",
    "1e999",
    "1e-999",
    "0.5",
    "0x10",
    "9223372036854775808",
    "true",
    "null",
    "\\",
    "\\u0000",
    "\\ud800",
    "\\u",
    "\\x",
    "\u{0}",
    "\u{feff}",
    "é",
    "😀",
    "\r\n",
    "\r",
    "`",
    "$",
    "?",
    "10 secs",
    "spark.context-settings",
    "context-settings",
    "worker-threads = 4",
];

const SQL_TOKENS: &[&str] = &[
    "SELECT ",
    "FROM ",
    "WHERE ",
    "GROUP BY ",
    "ORDER BY ",
    "HAVING ",
    "LIMIT ",
    "OFFSET ",
    "JOIN ",
    "LEFT JOIN ",
    "CROSS JOIN ",
    "ON ",
    "USING (",
    "UNION ",
    "UNION ALL ",
    "EXCEPT ",
    "INTERSECT ",
    "WITH ",
    "AS ",
    "DISTINCT ",
    "CASE ",
    "WHEN ",
    "THEN ",
    "ELSE ",
    "END ",
    "AND ",
    "OR ",
    "NOT ",
    "IN (",
    "BETWEEN ",
    "LIKE ",
    "ILIKE ",
    "IS NULL ",
    "IS NOT NULL ",
    "EXISTS (",
    "CAST(",
    " AS INT)",
    "::",
    "*",
    "+",
    "-",
    "/",
    "%",
    "||",
    "=",
    "<>",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "(",
    ")",
    ",",
    ";",
    ".",
    "'",
    "''",
    "\"",
    "`",
    "[",
    "]",
    "$1",
    "?",
    "@",
    "--",
    "/*",
    "*/",
    "\n",
    " ",
    "\t",
    "0",
    "1",
    "-1",
    "1.5",
    "1e309",
    "9223372036854775808",
    "'x'",
    "'2024-01-01'",
    "NULL",
    "TRUE",
    "amount",
    "category",
    "city",
    "user_id",
    "ts",
    "event",
    "sales",
    "orders",
    "sum(",
    "count(*)",
    "count(",
    "avg(",
    "min(",
    "max(",
    "abs(",
    "coalesce(",
    "concat(",
    "substr(",
    "date_trunc('day', ",
    "read_csv('/etc/passwd')",
    "read_parquet(",
    "UNNEST(",
    "OVER (",
    "PARTITION BY ",
    "ROWS BETWEEN ",
    "INTERVAL '1 day'",
    "shop__purchases_hourly",
    "events",
    "DROP TABLE x",
    "CREATE TABLE x AS ",
    "SHOW TABLES",
    "EXPLAIN ",
    "COPY ",
    "\u{0}",
    "\u{feff}",
    "é",
    "😀",
    // Keywords sqlparser reads in a form of their own, then again as a call (src/sql_guard.rs).
    "CAST(",
    "TRY_CAST(",
    "SUBSTR(",
    "SUBSTRING(",
    "POSITION(",
    "CEIL(",
    "FLOOR(",
    "OVERLAY(",
    "CONVERT(",
    "EXTRACT(",
    "NOT (",
    "CASE (",
    "ARRAY[",
    "ARRAY(",
    "MAP(",
    "TUPLE(",
    "NULLABLE(",
    "LowCardinality(",
    "Nested(",
    "STRUCT(",
    "CURRENT_DATE(",
    "t JOIN (",
    " FROM x)",
    " AS INT)",
    " IN y)",
    " FOR 2)",
];

fn pipeline_seeds() -> Vec<String> {
    let mut seeds =
        vec![fs::read_to_string(repo_path("pipelines/shop.yaml")).expect("read shop.yaml")];
    let invalid = repo_path("tests/fixtures/invalid");
    let mut files: Vec<PathBuf> = fs::read_dir(&invalid)
        .expect("read tests/fixtures/invalid")
        .map(|entry| entry.expect("read fixture").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    seeds.extend(
        files
            .iter()
            .map(|path| fs::read_to_string(path).expect("read fixture")),
    );
    seeds
}

fn hocon_seeds() -> Vec<String> {
    [
        "partition = \"2024-01-03\"",
        "from = \"2024-01-01\"\nto = \"2024-01-08\"\nforce = true",
        "input { source = events, app = shop, from = \"2024-01-01\", to = \"2024-01-02\" }\n\
         key = city\nmetric = \"sum(amount)\"\nn = 10\npublish = top_cities\n",
        "inputs { a { object = events, from = \"2024-01-01\", to = \"2024-01-02\" } }\n\
         query = \"\"\"SELECT count(*) AS n FROM a\"\"\"",
        "spark.context-settings {\n  worker-threads = 4\n  queue-length = 128\n  \
         memory-budget = 4g\n  job-timeout = 5m\n}\n",
        "{\"input\": {\"source\": \"events\", \"app\": \"shop\"}, \"column\": \"user_id\", \
         \"keys\": [\"a\", \"b\"], \"n\": 3, \"x\": null, \"y\": 1.5e3}",
        "a.b.c = 1\na.b.d += 2\na { b { e = [1, 2, 3,] } }\n# comment\n// comment\n",
        "job-timeout = 10 secs\nkeys = [category, city]\naggregations { s = \"sum(x)\" }",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn sql_seeds() -> Vec<String> {
    [
        "event = 'purchase'",
        "sum(amount)",
        "count(*)",
        "amount > 10 AND city IN ('Paris', 'Lyon') OR category IS NULL",
        "CASE WHEN amount > 100 THEN 'big' ELSE 'small' END",
        "SELECT category, sales, orders, sales / orders AS avg_order_value\n\
         FROM sales_per_category_daily\nORDER BY sales DESC",
        "SELECT city, sum(sales) AS sales FROM shop__sales_per_city_daily GROUP BY city \
         ORDER BY sales DESC LIMIT 10",
        "WITH t AS (SELECT * FROM a) SELECT t.x, b.y FROM t JOIN b ON t.k = b.k WHERE t.x > 1",
        "SELECT count(DISTINCT user_id) AS n FROM events WHERE ts >= '2024-01-01'",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

// ---- the tests ----------------------------------------------------------------------------

#[test]
fn fuzz_pipeline_loader() {
    fuzz(PIPELINE, inputs(pipeline_seeds(), YAML_TOKENS));
}

#[test]
fn fuzz_hocon_parser() {
    fuzz(HOCON, inputs(hocon_seeds(), HOCON_TOKENS));
}

#[test]
fn fuzz_sql_checks_and_job_constructors() {
    fuzz(SQL, inputs(sql_seeds(), SQL_TOKENS));
}

#[test]
fn the_time_bound_grows_with_the_input() {
    assert_eq!(time_bound(0), Duration::from_secs(1));
    assert_eq!(time_bound(64 * 1024), Duration::from_secs(1));
    assert_eq!(time_bound(64 * 1024 + 1), Duration::from_secs(2));
    // Edits keep inputs within the bound's size and on character boundaries.
    let text = apply(
        "é".repeat(10),
        &[
            Edit::Repeat(0, "😀", 100_000),
            Edit::Delete(usize::MAX / 2, 3),
        ],
    );
    assert!(text.len() <= MAX_INPUT);
}
