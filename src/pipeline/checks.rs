//! Data checks of a job (`checks:` in its YAML): what each check asks, validated from the
//! spec, and the checks that need only the partition's result, evaluated on it.
//!
//! The checks that need more than the result — `freshness` (the source's rows of the window)
//! and `anomaly` (the results of the job's preceding partitions) — are evaluated by the
//! materialiser, which has those at hand, with the helpers here. Outcomes are stored with the
//! run (`store::CheckOutcome`).
//!
//! A check that cannot be evaluated (a column the result lacks, an expression polars refuses
//! on the result) fails, saying why: a check that silently passes would be worse than none.

use std::time::Duration;

use polars::prelude::*;

use super::spec::{CheckSpec, OneOrMany};
use crate::error::short_polars_error;
use crate::store::CheckOutcome;

/// Most checks one job may have: each is evaluated on every partition.
pub const MAX_CHECKS: usize = 64;

/// Most values an `accepted_values` check may list.
pub const MAX_ACCEPTED_VALUES: usize = 10_000;

/// Most preceding partitions an `anomaly` check may read.
pub const MAX_ANOMALY_HISTORY: u32 = 366;

/// What a failed check does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The run fails: its result is not committed, downstream waits, and it is retried as
    /// any failure.
    Error,
    /// The failure is recorded with the run, which succeeds.
    Warn,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warn => "warn",
        }
    }
}

/// One validated check.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub severity: Severity,
    pub kind: CheckKind,
}

/// What a check asks of a partition.
#[derive(Debug, Clone)]
pub enum CheckKind {
    RowCount {
        min: Option<u64>,
        max: Option<u64>,
    },
    NotNull(Vec<String>),
    Unique(Vec<String>),
    AcceptedValues {
        column: String,
        values: Vec<AcceptedValue>,
    },
    /// Every row satisfies `expr` (`text` as written, for messages).
    Expression {
        text: String,
        expr: Expr,
    },
    Freshness {
        source: String,
        max_lag: Duration,
    },
    Anomaly {
        metric: Metric,
        within: Tolerance,
        last: u32,
        min_history: u32,
    },
}

impl CheckKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            CheckKind::RowCount { .. } => "row_count",
            CheckKind::NotNull(_) => "not_null",
            CheckKind::Unique(_) => "unique",
            CheckKind::AcceptedValues { .. } => "accepted_values",
            CheckKind::Expression { .. } => "expression",
            CheckKind::Freshness { .. } => "freshness",
            CheckKind::Anomaly { .. } => "anomaly",
        }
    }
}

/// A value an `accepted_values` check accepts, compared as the column's type allows.
#[derive(Debug, Clone, PartialEq)]
pub enum AcceptedValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

/// What an `anomaly` check measures on a result.
#[derive(Debug, Clone)]
pub enum Metric {
    RowCount,
    /// A SQL aggregate over the result (`sum(sales)`), as written and parsed.
    Aggregate {
        text: String,
        expr: Expr,
    },
}

/// How far an `anomaly` metric may be from the median of the preceding partitions'.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    /// A fraction of the median (`30%` is 0.3).
    Relative(f64),
    Absolute(f64),
}

impl Tolerance {
    /// The widest distance from `median` this tolerance allows.
    pub fn allowed(self, median: f64) -> f64 {
        match self {
            Tolerance::Relative(share) => (median * share).abs(),
            Tolerance::Absolute(distance) => distance,
        }
    }

    fn describe(self) -> String {
        match self {
            Tolerance::Relative(share) => format!("{}%", share * 100.0),
            Tolerance::Absolute(distance) => distance.to_string(),
        }
    }
}

/// Validates one entry of `checks:`. Problems come as (field, message); `sources` are the
/// sources the job reads, which a `freshness` check must name.
pub fn parse_check(spec: &CheckSpec, sources: &[String]) -> Result<Check, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let severity = match spec.severity.as_deref() {
        None | Some("error") => Severity::Error,
        Some("warn") => Severity::Warn,
        Some(other) => {
            problems.push((
                "severity".to_owned(),
                format!("unknown severity `{other}` (expected error or warn)"),
            ));
            Severity::Error
        }
    };
    let set = [
        spec.row_count.is_some(),
        spec.not_null.is_some(),
        spec.unique.is_some(),
        spec.accepted_values.is_some(),
        spec.expression.is_some(),
        spec.freshness.is_some(),
        spec.anomaly.is_some(),
    ]
    .iter()
    .filter(|set| **set)
    .count();
    if set != 1 {
        problems.push((
            "kind".to_owned(),
            format!(
                "a check has exactly one kind of row_count, not_null, unique, accepted_values, \
                 expression, freshness or anomaly; found {set}"
            ),
        ));
        return Err(problems);
    }
    let kind = match check_kind(spec, sources) {
        Ok(kind) => kind,
        Err(problem) => {
            problems.push(problem);
            return Err(problems);
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let name = match &spec.name {
        Some(name) => name.clone(),
        None => default_name(&kind),
    };
    Ok(Check {
        name,
        severity,
        kind,
    })
}

fn default_name(kind: &CheckKind) -> String {
    match kind {
        CheckKind::RowCount { .. } => "row_count".to_owned(),
        CheckKind::NotNull(columns) => format!("not_null({})", columns.join(", ")),
        CheckKind::Unique(columns) => format!("unique({})", columns.join(", ")),
        CheckKind::AcceptedValues { column, .. } => format!("accepted_values({column})"),
        CheckKind::Expression { text, .. } => format!("expression({text})"),
        CheckKind::Freshness { source, .. } => format!("freshness({source})"),
        CheckKind::Anomaly { metric, .. } => match metric {
            Metric::RowCount => "anomaly(row_count)".to_owned(),
            Metric::Aggregate { text, .. } => format!("anomaly({text})"),
        },
    }
}

fn columns(field: &str, given: &OneOrMany) -> Result<Vec<String>, (String, String)> {
    let columns = given.names();
    if columns.is_empty() || columns.iter().any(|c| c.trim().is_empty()) {
        return Err((field.to_owned(), "name one or more columns".to_owned()));
    }
    Ok(columns)
}

fn check_kind(spec: &CheckSpec, sources: &[String]) -> Result<CheckKind, (String, String)> {
    if let Some(range) = &spec.row_count {
        if let (Some(min), Some(max)) = (range.min, range.max)
            && min > max
        {
            return Err((
                "row_count".to_owned(),
                format!("`min` ({min}) is above `max` ({max})"),
            ));
        }
        if range.min.is_none() && range.max.is_none() {
            return Err((
                "row_count".to_owned(),
                "give `min`, `max` or both".to_owned(),
            ));
        }
        return Ok(CheckKind::RowCount {
            min: range.min,
            max: range.max,
        });
    }
    if let Some(given) = &spec.not_null {
        return Ok(CheckKind::NotNull(columns("not_null", given)?));
    }
    if let Some(given) = &spec.unique {
        return Ok(CheckKind::Unique(columns("unique", given)?));
    }
    if let Some(accepted) = &spec.accepted_values {
        if accepted.values.len() > MAX_ACCEPTED_VALUES {
            return Err((
                "accepted_values".to_owned(),
                format!(
                    "{} values, at most {MAX_ACCEPTED_VALUES}",
                    accepted.values.len()
                ),
            ));
        }
        let mut values = Vec::with_capacity(accepted.values.len());
        for value in &accepted.values {
            values.push(match value {
                serde_yaml::Value::String(text) => AcceptedValue::Text(text.clone()),
                serde_yaml::Value::Bool(b) => AcceptedValue::Bool(*b),
                serde_yaml::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                    (Some(i), _) => AcceptedValue::Integer(i),
                    (None, Some(f)) => AcceptedValue::Float(f),
                    _ => {
                        return Err((
                            "accepted_values".to_owned(),
                            format!("`{n}` is out of range"),
                        ));
                    }
                },
                _ => {
                    return Err((
                        "accepted_values".to_owned(),
                        "values are strings, numbers or booleans".to_owned(),
                    ));
                }
            });
        }
        return Ok(CheckKind::AcceptedValues {
            column: accepted.column.clone(),
            values,
        });
    }
    if let Some(text) = &spec.expression {
        let expr = crate::job::builtin::parse_expression("expression", text)
            .map_err(|e| ("expression".to_owned(), strip_field(&e, "expression")))?;
        return Ok(CheckKind::Expression {
            text: text.clone(),
            expr,
        });
    }
    if let Some(freshness) = &spec.freshness {
        if !sources.contains(&freshness.source) {
            return Err((
                "freshness".to_owned(),
                format!(
                    "`{}` is not a source this job reads (sources: {})",
                    freshness.source,
                    if sources.is_empty() {
                        "none".to_owned()
                    } else {
                        sources.join(", ")
                    }
                ),
            ));
        }
        let max_lag = humantime::parse_duration(freshness.max_lag.trim()).map_err(|_| {
            (
                "freshness".to_owned(),
                format!(
                    "`max_lag`: cannot parse `{}` as a duration; use e.g. `15m`",
                    freshness.max_lag
                ),
            )
        })?;
        return Ok(CheckKind::Freshness {
            source: freshness.source.clone(),
            max_lag,
        });
    }
    if let Some(anomaly) = &spec.anomaly {
        let metric = match anomaly.metric.as_deref().map(str::trim) {
            None | Some("row_count") => Metric::RowCount,
            Some(text) => Metric::Aggregate {
                text: text.to_owned(),
                expr: crate::job::builtin::parse_expression("metric", text)
                    .map_err(|e| ("anomaly".to_owned(), strip_field(&e, "metric")))?,
            },
        };
        let within = tolerance(&anomaly.within).ok_or_else(|| {
            (
                "anomaly".to_owned(),
                "`within`: expected a share such as `30%` or a number".to_owned(),
            )
        })?;
        let last = anomaly.last.unwrap_or(7);
        let min_history = anomaly.min_history.unwrap_or(3);
        if last == 0 || last > MAX_ANOMALY_HISTORY {
            return Err((
                "anomaly".to_owned(),
                format!("`last` must be between 1 and {MAX_ANOMALY_HISTORY}, found {last}"),
            ));
        }
        if min_history == 0 || min_history > last {
            return Err((
                "anomaly".to_owned(),
                format!("`min_history` must be between 1 and `last` ({last}), found {min_history}"),
            ));
        }
        return Ok(CheckKind::Anomaly {
            metric,
            within,
            last,
            min_history,
        });
    }
    Err(("kind".to_owned(), "no kind given".to_owned()))
}

/// `field `x`: message` → `message`: the check's own field names the place.
fn strip_field(message: &str, field: &str) -> String {
    message
        .strip_prefix(&format!("field `{field}`: "))
        .unwrap_or(message)
        .to_owned()
}

fn tolerance(value: &serde_yaml::Value) -> Option<Tolerance> {
    match value {
        serde_yaml::Value::Number(n) => n
            .as_f64()
            .filter(|d| d.is_finite() && *d >= 0.0)
            .map(Tolerance::Absolute),
        serde_yaml::Value::String(text) => {
            let share = text.trim().strip_suffix('%')?.trim().parse::<f64>().ok()?;
            (share.is_finite() && share >= 0.0).then_some(Tolerance::Relative(share / 100.0))
        }
        _ => None,
    }
}

impl Check {
    /// The outcome of a check that needs only the partition's `result`; `None` for the kinds
    /// the materialiser evaluates (`freshness`, `anomaly`).
    pub fn evaluate_on(&self, result: &DataFrame) -> Option<CheckOutcome> {
        self.verdict_on(result).map(|verdict| self.outcome(verdict))
    }

    /// The verdict behind [`Check::evaluate_on`]: `Ok(None)` passed, `Ok(Some(why))` failed,
    /// `Err(why)` cannot be evaluated on this result (what the plan check reports).
    pub fn verdict_on(&self, result: &DataFrame) -> Option<Result<Option<String>, String>> {
        Some(match &self.kind {
            CheckKind::RowCount { min, max } => Ok(row_count(result.height() as u64, *min, *max)),
            CheckKind::NotNull(columns) => not_null(result, columns),
            CheckKind::Unique(columns) => unique(result, columns),
            CheckKind::AcceptedValues { column, values } => accepted_values(result, column, values),
            CheckKind::Expression { text, expr } => expression(result, text, expr),
            CheckKind::Freshness { .. } | CheckKind::Anomaly { .. } => return None,
        })
    }

    /// The outcome of this check from a verdict: `Ok(None)` passed, `Ok(Some(why))` failed,
    /// `Err(why)` could not be evaluated (which fails too).
    pub fn outcome(&self, verdict: Result<Option<String>, String>) -> CheckOutcome {
        let (passed, detail) = match verdict {
            Ok(None) => (true, None),
            Ok(Some(why)) => (false, Some(why)),
            Err(why) => (false, Some(format!("cannot evaluate: {why}"))),
        };
        CheckOutcome {
            name: self.name.clone(),
            kind: self.kind.as_str().to_owned(),
            severity: self.severity.as_str().to_owned(),
            passed,
            detail,
        }
    }

    /// A passed check with something to say (an anomaly check without enough history).
    pub fn passed_with(&self, note: String) -> CheckOutcome {
        CheckOutcome {
            passed: true,
            detail: Some(note),
            ..self.outcome(Ok(None))
        }
    }
}

fn row_count(rows: u64, min: Option<u64>, max: Option<u64>) -> Option<String> {
    match (min, max) {
        (Some(min), _) if rows < min => Some(format!("{rows} rows, fewer than {min}")),
        (_, Some(max)) if rows > max => Some(format!("{rows} rows, more than {max}")),
        _ => None,
    }
}

fn column<'a>(result: &'a DataFrame, name: &str) -> Result<&'a Column, String> {
    result.column(name).map_err(|_| {
        format!(
            "the result has no column `{name}` (columns: {})",
            result
                .get_column_names()
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

fn not_null(result: &DataFrame, columns: &[String]) -> Result<Option<String>, String> {
    let mut failures = Vec::new();
    for name in columns {
        let nulls = column(result, name)?.null_count();
        if nulls > 0 {
            failures.push(format!("`{name}` has {nulls} nulls"));
        }
    }
    Ok((!failures.is_empty()).then(|| failures.join("; ")))
}

fn unique(result: &DataFrame, columns: &[String]) -> Result<Option<String>, String> {
    for name in columns {
        column(result, name)?;
    }
    let keys: Vec<Expr> = columns.iter().map(|c| col(c.as_str())).collect();
    let repeated = result
        .clone()
        .lazy()
        .group_by(keys)
        .agg([len().alias("__floe_rows")])
        .filter(col("__floe_rows").gt(lit(1)))
        .collect()
        .map_err(|e| short_polars_error(&e))?;
    if repeated.height() == 0 {
        return Ok(None);
    }
    let example = repeated
        .select(columns.iter().map(String::as_str))
        .ok()
        .map(|keys| first_row(&keys))
        .unwrap_or_default();
    Ok(Some(format!(
        "{} values of ({}) repeat, e.g. {example}",
        repeated.height(),
        columns.join(", ")
    )))
}

/// The first row of `frame` as `a=1, b=x`, short.
fn first_row(frame: &DataFrame) -> String {
    let mut parts = Vec::new();
    for column in frame.columns() {
        let value = column
            .get(0)
            .map(|v| shown(&v))
            .unwrap_or_else(|_| "?".to_owned());
        parts.push(format!("{}={value}", column.name()));
    }
    parts.join(", ")
}

/// A value as a message shows it: text without quotes, cut short.
fn shown(value: &AnyValue) -> String {
    let text = match value.get_str() {
        Some(text) => text.to_owned(),
        None => value.to_string(),
    };
    crate::sql_guard::excerpt(&text)
}

fn accepted_values(
    result: &DataFrame,
    name: &str,
    values: &[AcceptedValue],
) -> Result<Option<String>, String> {
    let series = column(result, name)?.as_materialized_series();
    let dtype = series.dtype().clone();
    if !(dtype == DataType::String || dtype == DataType::Boolean || dtype.is_primitive_numeric()) {
        return Err(format!(
            "`{name}` is {dtype}; accepted_values compares strings, numbers and booleans"
        ));
    }
    let distinct = series.unique().map_err(|e| short_polars_error(&e))?;
    let accepted = |value: &AnyValue| -> bool {
        if let Some(text) = value.get_str() {
            return values
                .iter()
                .any(|v| matches!(v, AcceptedValue::Text(t) if t == text));
        }
        if let AnyValue::Boolean(b) = value {
            return values.contains(&AcceptedValue::Bool(*b));
        }
        if dtype.is_integer()
            && let Some(i) = value.extract::<i64>()
        {
            return values.iter().any(|v| match v {
                AcceptedValue::Integer(a) => *a == i,
                AcceptedValue::Float(f) => *f == i as f64,
                _ => false,
            });
        }
        let Some(f) = value.extract::<f64>() else {
            return false;
        };
        values.iter().any(|v| match v {
            AcceptedValue::Integer(a) => *a as f64 == f,
            AcceptedValue::Float(a) => *a == f,
            _ => false,
        })
    };
    let mut unexpected = Vec::new();
    for value in distinct.iter() {
        if !value.is_null() && !accepted(&value) {
            unexpected.push(shown(&value));
        }
    }
    if unexpected.is_empty() {
        return Ok(None);
    }
    let count = unexpected.len();
    unexpected.sort();
    unexpected.truncate(5);
    Ok(Some(format!(
        "`{name}` has {count} values not accepted: {}{}",
        unexpected.join(", "),
        if count > unexpected.len() {
            ", …"
        } else {
            ""
        }
    )))
}

fn expression(result: &DataFrame, text: &str, expr: &Expr) -> Result<Option<String>, String> {
    let failing = result
        .clone()
        .lazy()
        .filter(expr.clone().not().fill_null(lit(true)))
        .collect()
        .map_err(|e| short_polars_error(&e))?;
    if failing.height() == 0 {
        return Ok(None);
    }
    Ok(Some(format!(
        "{} rows do not satisfy `{}`, e.g. {}",
        failing.height(),
        crate::sql_guard::excerpt(text),
        first_row(&failing)
    )))
}

/// The `freshness` verdict from the newest event time of the source in the window.
pub fn freshness_verdict(
    newest: Option<chrono::DateTime<chrono::Utc>>,
    window_end: chrono::DateTime<chrono::Utc>,
    max_lag: Duration,
) -> Option<String> {
    let Some(newest) = newest else {
        return Some("the source has no rows in the partition".to_owned());
    };
    let lag = (window_end - newest).to_std().unwrap_or_default();
    (lag > max_lag).then(|| {
        format!(
            "the newest event is at {}, {} before the partition's end (at most {})",
            newest.to_rfc3339(),
            humantime::format_duration(Duration::from_secs(lag.as_secs())),
            humantime::format_duration(max_lag)
        )
    })
}

/// The `anomaly` verdict of `value` against the `history` of preceding partitions' values.
pub fn anomaly_verdict(check: &Check, value: f64, history: &[f64]) -> CheckOutcome {
    let CheckKind::Anomaly {
        within,
        last,
        min_history,
        ..
    } = &check.kind
    else {
        return check.outcome(Err("not an anomaly check".to_owned()));
    };
    if history.len() < *min_history as usize {
        return check.passed_with(format!(
            "{} of the last {last} partitions have a result, fewer than `min_history` ({min_history}): not compared",
            history.len()
        ));
    }
    let mut sorted = history.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    };
    let allowed = within.allowed(median);
    if (value - median).abs() <= allowed {
        check.outcome(Ok(None))
    } else {
        check.outcome(Ok(Some(format!(
            "{value} is {} from the median {median} of the last {} partitions (within {})",
            (value - median).abs(),
            history.len(),
            within.describe()
        ))))
    }
}

/// The value of an `anomaly` metric on a result; `None` when the aggregate is null (as `avg`
/// of no rows is).
pub fn metric_value(metric: &Metric, result: &DataFrame) -> Result<Option<f64>, String> {
    match metric {
        Metric::RowCount => Ok(Some(result.height() as f64)),
        Metric::Aggregate { expr, .. } => {
            let value = result
                .clone()
                .lazy()
                .select([expr.clone().cast(DataType::Float64).alias("metric")])
                .collect()
                .map_err(|e| short_polars_error(&e))?;
            if value.height() != 1 {
                return Err(format!(
                    "the metric gives {} values, not one: use an aggregate such as sum(x)",
                    value.height()
                ));
            }
            Ok(value
                .column("metric")
                .map_err(|e| short_polars_error(&e))?
                .f64()
                .map_err(|e| short_polars_error(&e))?
                .get(0))
        }
    }
}

#[cfg(test)]
#[path = "checks_tests.rs"]
mod tests;
