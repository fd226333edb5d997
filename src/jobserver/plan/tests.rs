use std::path::Path;

use super::*;
use crate::pipeline::data_roots::DataRoots;

fn config(hocon_like: &[(&str, Value)]) -> Map<String, Value> {
    hocon_like
        .iter()
        .map(|(key, value)| ((*key).to_owned(), value.clone()))
        .collect()
}

fn invalid(catalog: &Catalog, config: &Map<String, Value>) -> Vec<String> {
    match plan(catalog, None, "sql", config) {
        Err(PlanError::Invalid(errors)) => errors,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn a_job_may_shorten_its_contexts_timeout_but_not_lengthen_it() {
    let secs = Duration::from_secs;
    assert_eq!(
        effective_job_timeout(Some(secs(2)), Some(secs(3600))),
        Some(secs(2))
    );
    assert_eq!(
        effective_job_timeout(Some(secs(3600)), Some(secs(2))),
        Some(secs(2))
    );
    assert_eq!(effective_job_timeout(Some(secs(2)), None), Some(secs(2)));
    assert_eq!(effective_job_timeout(None, Some(secs(5))), Some(secs(5)));
    assert_eq!(effective_job_timeout(None, None), None);
    let asked = |value: Value| job_timeout(&config(&[("job-timeout", value)]));
    assert_eq!(asked(Value::from("1h")).unwrap(), Some(secs(3600)));
    assert_eq!(
        asked(Value::from("99999999d")).unwrap_err().to_string(),
        "`job-timeout`: `99999999d` is longer than the longest execution timeout, 7days \
         (7 days)"
    );
    assert!(asked(Value::from(999_999_999)).is_err());
}

#[test]
fn names_with_the_results_separator_are_reserved_for_results() {
    let roots = Arc::new(DataRoots::new(Path::new("data"), &[]));
    let catalog = Catalog::new(roots.clone(), roots, 1);
    let query = ("query", Value::from("select * from t"));
    let errors = invalid(
        &catalog,
        &config(&[
            query.clone(),
            ("input", Value::from("t")),
            ("publish", Value::from("shop__sales_per_category_daily")),
        ]),
    );
    assert_eq!(
        errors,
        [
            "`publish`: named object `shop__sales_per_category_daily` contains `__`, which is \
          reserved for pipeline results (`<pipeline>__<job>` in /query); choose a name \
          without it"
        ]
    );
    let errors = invalid(
        &catalog,
        &config(&[
            query.clone(),
            (
                "inputs",
                serde_json::json!({"t": "shop__x", "u": {"object": "a__b"}}),
            ),
        ]),
    );
    // (and the query's `t` is then not among the inputs)
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[0].starts_with("`inputs.t`: named object `shop__x` contains `__`"),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("`inputs.u.object`: named object `a__b` contains `__`"),
        "{errors:?}"
    );
    // One underscore, or a table name of the job's own, is fine.
    let planned = plan(
        &catalog,
        None,
        "sql",
        &config(&[
            query,
            ("inputs", serde_json::json!({"t": "top_cities"})),
            ("publish", Value::from("shop_sales")),
        ]),
    );
    assert!(planned.is_ok(), "{planned:?}");
}
