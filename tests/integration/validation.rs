//! Every class of pipeline error, pinned by a broken fixture and its exact expected message.
//!
//! `tests/fixtures/invalid/NAME.yaml` must fail with exactly `NAME.expected`. To regenerate
//! the goldens after an intended message change, run with `FLOE_BLESS=1` and review the diff.
//! A fixture that parses must fail its plan check ([`floe::plan_check`]) on the sample data:
//! its source paths resolve in a [`SampleWorld`]'s data dir.

use std::path::Path;
use std::sync::Arc;

use floe::pipeline::data_roots::DataRoots;
use floe::pipeline::{PipelineErrors, load_file};
use floe::{JobRegistry, Pipeline};

use super::common::SampleWorld;

/// The problems the plan check finds in `pipeline` (parsed from `file`) over `world`'s data.
fn plan_problems(pipeline: Pipeline, file: &Path, world: &SampleWorld) -> Option<PipelineErrors> {
    let text = std::fs::read_to_string(file).expect("fixture text");
    let roots = Arc::new(DataRoots::new(&world.data_dir(), &[]));
    match pipeline.confine(roots, &text) {
        Ok(pipeline) => floe::plan_check::check_pipeline(&pipeline, &text)
            .into_result()
            .err(),
        Err(errors) => Some(errors),
    }
}

#[test]
fn every_broken_fixture_fails_with_its_expected_message() {
    let dir = Path::new("tests/fixtures/invalid");
    let mut fixtures: Vec<_> =
        std::fs::read_dir(super::common::repo_path("tests/fixtures/invalid"))
            .expect("fixtures folder")
            .map(|entry| entry.expect("entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
            .collect();
    fixtures.sort();
    assert!(
        fixtures.len() >= 15,
        "expected the whole fixture corpus, found {}",
        fixtures.len()
    );
    let bless = std::env::var_os("FLOE_BLESS").is_some();
    let world = SampleWorld::new(2_000, 1);
    let mut mismatches = Vec::new();
    for fixture in fixtures {
        let name = fixture.file_name().expect("file name").to_owned();
        // Load through the relative path so messages are stable wherever the repo lives.
        let relative = dir.join(&name);
        let file = super::common::repo_path(&relative.to_string_lossy());
        let err = match load_file(&file, &JobRegistry::new()) {
            Ok(pipeline) => plan_problems(pipeline, &file, &world)
                .unwrap_or_else(|| panic!("{} validated but must fail", relative.display())),
            Err(err) => err,
        };
        let repo_root = format!("{}/", env!("CARGO_MANIFEST_DIR"));
        let actual = format!("{err}\n").replace(&repo_root, "");
        let expected_path = fixture.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &actual).expect("write golden");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("missing {}", expected_path.display()));
        if actual != expected {
            mismatches.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                relative.display()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn the_example_pipelines_are_valid() {
    let pipelines =
        floe::pipeline::load_dir(&super::common::repo_path("pipelines"), &JobRegistry::new())
            .unwrap_or_else(|err| panic!("{err}"));
    let shop = pipelines
        .iter()
        .find(|p| p.name == "shop")
        .expect("shop pipeline");
    assert_eq!(
        shop.dag.topological_order(),
        [
            "registered_users_hourly",
            "registered_users_daily",
            "purchases_hourly",
            "sales_per_category_daily",
            "sales_per_city_daily",
            "top_cities_weekly",
            "category_report_daily",
        ]
    );
    let sketches = pipelines
        .iter()
        .find(|p| p.name == "sketches")
        .expect("sketches pipeline");
    let kinds: Vec<(&str, &str)> = sketches
        .dag
        .topological_order()
        .iter()
        .map(|job| (job.as_str(), sketches.jobs[job].job.kind()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("users_hourly", "approx_count_distinct"),
            ("users_daily", "approx_count_distinct"),
            ("users_monthly", "approx_count_distinct"),
            ("city_sales_hourly", "approx_top"),
            ("city_sales_daily", "approx_top"),
            ("city_sales_monthly", "approx_top"),
            ("top_products_daily", "approx_top"),
            ("top_products_monthly", "approx_top"),
            ("order_value_hourly", "quantiles"),
            ("order_value_daily", "quantiles"),
            ("order_value_monthly", "quantiles"),
        ]
    );
}

/// A job crosses to a worker process as its definition: every example job is built again from
/// it as the same kind with the same settings, and `group_by`'s aggregations (written as pairs)
/// come back in their order.
#[test]
fn every_example_job_is_built_again_from_its_definition() {
    let registry = JobRegistry::new();
    let pipelines = floe::pipeline::load_dir(&super::common::repo_path("pipelines"), &registry)
        .unwrap_or_else(|err| panic!("{err}"));
    let mut rebuilt = 0;
    for pipeline in &pipelines {
        for def in pipeline.jobs.values() {
            let job = floe::pipeline::job_of_definition(&def.definition_text, &registry)
                .unwrap_or_else(|e| {
                    panic!(
                        "{}/{}: {e}\n{}",
                        pipeline.name, def.name, def.definition_text
                    )
                });
            assert_eq!(job.kind(), def.job.kind(), "{}/{}", pipeline.name, def.name);
            assert_eq!(
                format!("{job:?}"),
                format!("{:?}", def.job),
                "{}/{}",
                pipeline.name,
                def.name
            );
            rebuilt += 1;
        }
    }
    assert!(rebuilt >= 18, "{rebuilt} jobs");
    assert!(
        floe::pipeline::job_of_definition("group_by: {keys: [a], aggregations: [[x]]}", &registry)
            .unwrap_err()
            .contains("not pairs")
    );
}

#[test]
fn pipeline_names_must_be_unique_across_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(super::common::repo_path("pipelines/shop.yaml"))
        .expect("shop.yaml");
    std::fs::write(dir.path().join("a.yaml"), &text).expect("write");
    std::fs::write(dir.path().join("b.yaml"), &text).expect("write");
    let err =
        floe::pipeline::load_dir(dir.path(), &JobRegistry::new()).expect_err("duplicate names");
    let message = err.to_string();
    assert!(
        message.contains("b.yaml: pipeline name `shop` is already used by"),
        "{message}"
    );
}

#[test]
fn arbitrary_bytes_never_panic_the_loader() {
    let registry = JobRegistry::new();
    let inputs = [
        "",
        "\0\0\0",
        "- - -",
        "version: [",
        "jobs: 3",
        "version: 1\nname: x\nstart: 2024-01-01\njobs:\n  a: 5\n",
        "version: 99999999999999999999",
        "version: 1\nname: x\nstart: 2024-01-01\njobs:\n  a:\n    grain: daily\n    from: {}\n",
    ];
    for input in inputs {
        let result = floe::pipeline::parse_pipeline(input, Path::new("fuzz.yaml"), &registry);
        assert!(result.is_err(), "{input:?} must not validate");
    }
}

#[test]
fn hostile_sql_fragments_are_load_errors_not_panics() {
    let fragments = [
        "",
        "(",
        ")",
        "'",
        "\"",
        "sum(",
        "1 +",
        "SELECT",
        "amount >>> 3",
        "case when",
        "\u{0}",
        "🦀 = 1",
        "((((((((((((((((((((x))))))))))))))))))))",
        "a = 'unterminated",
        "count(distinct)",
        "x IN (",
        "--",
    ];
    let header = "version: 1\nname: hostile\nstart: 2024-01-01\nsources:\n  events:\n    format: parquet\n    path: e/*.parquet\n    time_column: ts\njobs:\n";
    for fragment in fragments {
        let quoted = serde_json::to_string(fragment).expect("json string is valid yaml");
        for job in [
            format!(
                "  j:\n    grain: daily\n    from: events\n    select:\n      filter: {quoted}\n"
            ),
            format!(
                "  j:\n    grain: daily\n    from: events\n    group_by:\n      keys: [a]\n      aggregations:\n        x: {quoted}\n"
            ),
            format!("  j:\n    grain: daily\n    from: events\n    sql: {quoted}\n"),
        ] {
            let text = format!("{header}{job}");
            let outcome = std::panic::catch_unwind(|| {
                floe::pipeline::parse_pipeline(
                    &text,
                    Path::new("hostile.yaml"),
                    &JobRegistry::new(),
                )
                .map(|_| ())
            });
            assert!(outcome.is_ok(), "loading panicked on {fragment:?}");
        }
    }
}

/// Adding the sketch kinds and `checks` to `JobSpec` leaves the serialised form of every other
/// job as it was: definition fingerprints, and so every stored result, stay valid.
#[test]
fn jobs_of_other_kinds_serialise_as_before() {
    let spec: floe::pipeline::spec::JobSpec =
        serde_yaml::from_str("{grain: hourly, from: events, count_distinct: {column: u}}").unwrap();
    let json = serde_json::to_string(&spec).unwrap();
    // Exactly what the JobSpec of 2ba76bf (before checks and sketches) wrote, field for field:
    // the hash input of every stored result's definition fingerprint.
    assert_eq!(
        json,
        r#"{"description":null,"grain":"hourly","from":"events","count_distinct":{"column":"u","filter":null},"top":null,"group_by":null,"sql":null,"select":null,"rust":null,"retries":null,"timeout":null,"retry_backoff":null,"concurrency":null,"schedule":null}"#
    );
    // A sketch job's unset settings are left out too, so a setting added later keeps them.
    let spec: floe::pipeline::spec::JobSpec =
        serde_yaml::from_str("{grain: hourly, from: events, approx_top: {key: k, n: 3}}").unwrap();
    let json = serde_json::to_string(&spec).unwrap();
    assert!(json.contains(r#""approx_top":{"key":"k","n":3}"#), "{json}");
}
