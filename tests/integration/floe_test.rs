//! `floe test` as CI runs it: the example pipeline's unit tests pass; a wrong expectation fails
//! with a readable diff and exit code 1; `--update` rewrites it (on a copy of the folder),
//! keeping the rest of the file; broken test files are reported at their line, with exit code 2,
//! and do not disturb loading the pipelines folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::common::repo_path;

fn floe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(args)
        .env_remove("FLOE_PIPELINES")
        .output()
        .expect("run floe")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A copy of the repository's pipelines folder (pipelines, tests and fixtures).
fn copy_pipelines() -> (tempfile::TempDir, PathBuf) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read pipelines") {
            let path = entry.expect("entry").path();
            let target = to.join(path.file_name().expect("name"));
            if path.is_dir() {
                copy(&path, &target);
            } else {
                std::fs::copy(&path, &target).expect("copy");
            }
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pipelines = dir.path().join("pipelines");
    copy(&repo_path("pipelines"), &pipelines);
    (dir, pipelines)
}

/// `text` with `from` replaced by `to`, which must be there.
fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).expect("read");
    assert!(text.contains(from), "{from} is not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).expect("write");
}

#[test]
fn the_example_pipelines_tests_pass() {
    let pipelines = repo_path("pipelines");
    let output = floe(&["test", "--pipelines", pipelines.to_str().expect("utf-8")]);
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    for test in [
        "registrations_in_one_hour",
        "registrations_rolled_up_per_day",
        "daily_rollup_of_given_hourly_key_sets",
        "sales_per_category_from_hourly_purchases",
        "sales_per_category_from_a_csv_fixture",
        "weekly_top_cities_from_events",
        "weekly_top_cities_from_given_daily_sales",
        "distinct_users_merge_across_hours",
        "city_sales_in_cents_per_day",
        "order_value_quantiles_per_day",
    ] {
        assert!(
            stdout.contains(&format!("  ok    {test}  (")),
            "{test}: {stdout}"
        );
    }
    assert!(stdout.contains("10 tests: 10 passed, 0 failed"), "{stdout}");

    // A test file named on the command line, and a filter.
    let file = pipelines.join("shop.test.yaml");
    let output = floe(&["test", file.to_str().expect("utf-8"), "--filter", "weekly"]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("2 tests: 2 passed, 0 failed"), "{stdout}");
}

#[test]
fn a_wrong_expectation_fails_with_a_diff_and_update_rewrites_it() {
    let (_dir, pipelines) = copy_pipelines();
    let folder = pipelines.to_str().expect("utf-8");
    let file = pipelines.join("shop.test.yaml");
    let original = std::fs::read_to_string(&file).expect("read");
    edit(
        &file,
        "- {distinct_count: 4}   # users 1, 2, 3 and 5",
        "- {distinct_count: 6}   # the sum of the hourly counts: wrong",
    );
    edit(
        &file,
        "- {category: toys, sales: 10.0, orders: 2}    # 7.25 + 2.75",
        "- {category: toys, sales: 10.5, orders: 2}\n          - {category: pets, sales: 1.0, orders: 1}",
    );

    let output = floe(&["test", folder]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    for line in [
        "  FAIL  registrations_rolled_up_per_day  (",
        "        job `registered_users_daily`, daily partition 2024-01-03 [2024-01-03T00:00:00Z, \
         2024-01-04T00:00:00Z): 1 row expected, 1 row produced",
        "          ~ {distinct_count: 6 → 4}",
        "  FAIL  sales_per_category_from_hourly_purchases  (",
        "        job `sales_per_category_daily`, daily partition 2024-01-03 [2024-01-03T00:00:00Z, \
         2024-01-04T00:00:00Z): 4 rows expected, 3 rows produced",
        "          ~ {category: toys, sales: 10.5 → 10.0, orders: 2}",
        "          - {category: pets, sales: 1.0, orders: 1}",
        "        job `sales_per_city_daily`, daily partition 2024-01-03 [2024-01-03T00:00:00Z, \
         2024-01-04T00:00:00Z): ok",
        "10 tests: 8 passed, 2 failed",
    ] {
        assert!(stdout.contains(line), "{line}\nnot in:\n{stdout}");
    }
    assert!(stderr.contains("error: 2 of 10 tests failed"), "{stderr}");

    // Only the filtered test is rewritten; the other failure stays.
    let output = floe(&["test", folder, "--update", "--filter", "rolled_up"]);
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    assert!(
        stdout.contains(
            "  updated registrations_rolled_up_per_day: the expected rows of \
             `registered_users_daily` (1 row)"
        ),
        "{stdout}"
    );
    let updated = std::fs::read_to_string(&file).expect("read");
    assert!(updated.contains(
        "      registered_users_daily:\n        rows:\n          - {distinct_count: 4}\n"
    ));
    assert!(
        updated.contains("sales: 10.5, orders: 2}"),
        "the other test is not rewritten"
    );
    assert_eq!(floe(&["test", folder]).status.code(), Some(1));

    let output = floe(&["test", folder, "--update"]);
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    assert!(
        stdout.contains("10 tests: 9 passed, 1 updated, 0 failed"),
        "{stdout}"
    );
    let output = floe(&["test", folder]);
    assert!(output.status.success(), "{}", text(&output.stdout));

    // Everything outside the rewritten `rows:` blocks is as it was, comments included; inside,
    // the rows are what the original expected, without their comments.
    let updated = std::fs::read_to_string(&file).expect("read");
    let strip = |text: &str| -> Vec<String> {
        text.lines()
            .map(|line| match line.find("}  ") {
                Some(at) if line.trim_start().starts_with("- {") => line[..=at].to_owned(),
                _ => line.trim_end().to_owned(),
            })
            .collect()
    };
    assert_eq!(strip(&updated), strip(&original));
    assert!(updated.starts_with("# Unit tests of pipelines/shop.yaml"));
    assert!(updated.contains("user_id: 2, event: register}   # the window's start: in"));
}

#[test]
fn broken_test_files_are_reported_at_their_line_and_leave_the_pipelines_loadable() {
    let (_dir, pipelines) = copy_pipelines();
    let folder = pipelines.to_str().expect("utf-8");
    std::fs::write(
        pipelines.join("broken.test.yaml"),
        "version: 1\npipeline: shop\ntests:\n  t:\n    partition: 2024-01-03\n    expect:\n      \
         no_such_job:\n        rows: []\n",
    )
    .expect("write");
    let output = floe(&["test", folder]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "broken.test.yaml:7:7: test `t`, field `expect.no_such_job`: pipeline `shop` has no \
             job `no_such_job`"
        ),
        "{stderr}"
    );
    // The valid file's tests still ran.
    assert!(text(&output.stdout).contains("10 tests: 10 passed, 0 failed"));

    // Test files are not pipelines: validation and every loader of the folder skip them.
    let output = floe(&["validate", folder]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("pipeline `shop` is valid (1 sources, 7 jobs)"));

    // A file that is not a test file, and a folder without any.
    let output = floe(&["test", pipelines.join("shop.yaml").to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("not a test file"));
    let empty = tempfile::tempdir().expect("tempdir");
    let output = floe(&["test", empty.path().to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("no test files (*.test.yaml, *.test.yml)"));
}
