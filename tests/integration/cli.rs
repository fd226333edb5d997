//! The `floe` binary as a user runs it.

use std::process::Command;

use super::common::{SampleWorld, repo_path};

fn floe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_floe"))
}

/// `floe <args>` over the sample pipelines, `world`'s data and its store.
pub(crate) fn floe_on(world: &SampleWorld, args: &[&str]) -> Command {
    let mut command = floe();
    command
        .args(args)
        .arg("--pipelines")
        .arg(repo_path("pipelines"))
        .arg("--data-dir")
        .arg(world.data_dir())
        .arg("--store")
        .arg(world.store_dir());
    command
}

#[test]
fn validate_accepts_the_examples_and_names_the_problem_in_broken_files() {
    let output = floe()
        .arg("validate")
        .arg(repo_path("pipelines"))
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("pipeline `shop` is valid (1 sources, 7 jobs)"));
    assert!(stdout.contains("pipeline `sketches` is valid (1 sources, 11 jobs)"));

    let output = floe()
        .arg("validate")
        .arg(repo_path("tests/fixtures/invalid/cycle.yaml"))
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cycle.yaml:10:1: dependency cycle: a → b → c → a"),
        "{stderr}"
    );
}

#[test]
fn run_then_results_as_csv_and_json() {
    let world = SampleWorld::new(4_000, 1);
    let floe_on_world = |args: &[&str]| floe_on(&world, args).output().expect("run floe");
    let run = [
        "run",
        "--pipeline",
        "shop",
        "--job",
        "sales_per_category_daily",
        "--partition",
        "2024-01-01",
    ];
    let output = floe_on_world(&run);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("25 runs planned, 25 computed, 0 fresh"),
        "{stderr}"
    );

    let output = floe_on_world(&run);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("25 runs planned, 0 computed, 25 fresh"),
        "{stderr}"
    );

    let results = [
        "results",
        "--pipeline",
        "shop",
        "--job",
        "sales_per_category_daily",
    ];
    let output = floe_on_world(
        &[
            &results[..],
            &["--partition", "2024-01-01", "--format", "csv"],
        ]
        .concat(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("partition_start,partition_end,category,sales,orders\n"),
        "{stdout}"
    );

    let output = floe_on_world(
        &[
            &results[..],
            &[
                "--from",
                "2024-01-01",
                "--to",
                "2024-01-02",
                "--format",
                "json",
            ],
        ]
        .concat(),
    );
    let parsed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("valid json");
    assert!(
        parsed.as_array().is_some_and(|rows| !rows.is_empty()),
        "{parsed}"
    );
}

/// `floe run` of one hour of `purchases_hourly`, logging at info in `log_format`.
fn run_one_hour(world: &SampleWorld, log_format: &str) -> std::process::Output {
    floe_on(
        world,
        &[
            "run",
            "--pipeline",
            "shop",
            "--job",
            "purchases_hourly",
            "--partition",
            "2024-01-01T00:00",
        ],
    )
    .env("FLOE_LOG", "info")
    .env("FLOE_LOG_FORMAT", log_format)
    .output()
    .expect("run floe")
}

#[test]
fn logs_to_a_pipe_are_plain_and_a_store_in_use_is_named() {
    let world = SampleWorld::new(2_000, 1);
    let run = |world: &SampleWorld| run_one_hour(world, "text");
    let output = run(&world);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("INFO"), "info lines are logged: {stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour codes in a pipe: {stderr:?}"
    );

    // Another process (here: this test) holds the store.
    let _held = floe::store::Store::open(&world.store_dir()).expect("open the store");
    let output = run(&world);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("is in use by another Floe process") && !stderr.contains("WouldBlock"),
        "{stderr}"
    );
}

#[test]
fn json_logs_are_one_object_per_line_and_a_bad_format_is_refused() {
    let world = SampleWorld::new(2_000, 1);
    let run = |format: &str| run_one_hour(&world, format);
    let output = run("json");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // The command's own summary goes to stderr too; every log line is a JSON object.
    let (lines, other): (Vec<&str>, Vec<&str>) =
        stderr.lines().partition(|line| line.starts_with('{'));
    assert!(!lines.is_empty(), "info lines are logged: {stderr}");
    assert!(
        other.iter().all(|line| !line.contains(" INFO ")),
        "a text log line among JSON ones: {stderr}"
    );
    for line in &lines {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        assert!(
            event["level"].is_string() && event["fields"].is_object(),
            "{line}"
        );
    }
    assert!(
        lines.iter().any(|line| line.contains("\"INFO\"")),
        "{stderr}"
    );

    let output = run("xml");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("FLOE_LOG_FORMAT must be `text` or `json`, not `xml`"),
        "{stderr}"
    );
}

/// `floe runs` lists what the runs came to, data checks included.
#[test]
fn runs_lists_states_and_check_outcomes() {
    let world = SampleWorld::new(5_000, 2);
    let pipelines = world.dir.path().join("pipelines");
    std::fs::create_dir_all(&pipelines).unwrap();
    let yaml = std::fs::read_to_string(repo_path("pipelines/shop.yaml"))
        .unwrap()
        .replace(
            "        orders: count(*)\n",
            "        orders: count(*)\n    checks:\n      - not_null: category\n      - name: one_row\n        severity: warn\n        row_count: {max: 1}\n",
        );
    std::fs::write(pipelines.join("shop.yaml"), yaml).unwrap();
    let on_world = |args: &[&str]| {
        let output = floe()
            .args(args)
            .arg("--pipelines")
            .arg(&pipelines)
            .arg("--data-dir")
            .arg(world.data_dir())
            .arg("--store")
            .arg(world.store_dir())
            .output()
            .expect("run");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    on_world(&[
        "run",
        "--pipeline",
        "shop",
        "--job",
        "sales_per_category_daily",
        "--partition",
        "2024-01-01",
    ]);
    let listed = on_world(&[
        "runs",
        "--pipeline",
        "shop",
        "--job",
        "sales_per_category_daily",
        "--partition",
        "2024-01-01",
    ]);
    assert!(
        listed.starts_with("sales_per_category_daily  2024-01-01T00:00:00+00:00  succeeded  attempts 1  checks: 1 passed, failed (warn): one_row: "),
        "{listed}"
    );
}
