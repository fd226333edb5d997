//! The built-in job kinds: `count_distinct`, `top`, `group_by`, `sql` and `select`.
//!
//! Each kind parses its SQL fragments (filters, aggregates) with polars' own SQL expression
//! parser when the pipeline is loaded, so a typo is a load-time error naming the field, and
//! builds a lazy polars plan per partition; polars pushes the filters and the column selection
//! down into the source scan.
//!
//! Roll-ups: `count_distinct` keeps the distinct keys as its partial state, so a daily job that
//! reads an hourly `count_distinct` merges 24 small key sets exactly instead of rescanning the
//! source. Additive roll-ups (sums, counts, min, max) are written by the user as a `group_by`
//! or `top` over an upstream `group_by`, which is exact for those aggregates.

use polars::prelude::*;
use polars::sql::{SQLContext, extract_table_identifiers, sql_expr};

use super::{Job, JobContext, JobError, JobOutput};
use crate::pipeline::spec::{CountDistinctSpec, GroupBySpec, SelectSpec, TopSpec};

/// The column a `count_distinct` result holds its count in.
pub const DISTINCT_COUNT_COLUMN: &str = "distinct_count";

/// Parses a SQL expression, naming the field in the error.
fn parse_expression(field: &str, sql: &str) -> Result<Expr, String> {
    if sql.trim().is_empty() {
        return Err(format!("field `{field}`: expression is empty"));
    }
    sql_expr(sql).map_err(|err| {
        format!(
            "field `{field}`: cannot parse `{sql}`: {}",
            short_polars_error(&err)
        )
    })
}

fn parse_optional_filter(sql: Option<&str>) -> Result<Option<Expr>, String> {
    sql.map(|sql| parse_expression("filter", sql)).transpose()
}

/// polars errors carry a multi-line backtrace hint; the first line is the message.
pub fn short_polars_error(err: &PolarsError) -> String {
    let text = err.to_string();
    text.lines().next().unwrap_or_default().trim().to_owned()
}

fn apply_filter(frame: LazyFrame, filter: &Option<Expr>) -> LazyFrame {
    match filter {
        Some(predicate) => frame.filter(predicate.clone()),
        None => frame,
    }
}

fn require_single_input(input_names: &[String], kind: &str) -> Result<(), String> {
    if input_names.len() == 1 {
        Ok(())
    } else {
        Err(format!(
            "field `from`: a `{kind}` job reads exactly one input, found {} ({})",
            input_names.len(),
            input_names.join(", ")
        ))
    }
}

fn collect_errors(
    results: impl IntoIterator<Item = Result<(), String>>,
) -> Result<(), Vec<String>> {
    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Exact number of distinct non-null values of a column.
#[derive(Debug, Clone)]
pub struct CountDistinct {
    column: String,
    filter: Option<Expr>,
    /// Keep the distinct keys as the mergeable state. Pipeline partitions need them for
    /// roll-ups; a one-off count does not, and counting without materialising them is faster.
    keep_state: bool,
}

impl CountDistinct {
    pub fn new(column: &str, filter: Option<&str>) -> Result<Self, Vec<String>> {
        let filter = parse_optional_filter(filter).map_err(|err| vec![err])?;
        Ok(CountDistinct {
            column: column.to_owned(),
            filter,
            keep_state: true,
        })
    }

    /// The same count without the mergeable state, for results nothing rolls up.
    pub fn count_only(mut self) -> Self {
        self.keep_state = false;
        self
    }

    pub fn from_spec(spec: &CountDistinctSpec) -> Result<Self, Vec<String>> {
        Self::new(&spec.column, spec.filter.as_deref())
    }
}

impl Job for CountDistinct {
    fn kind(&self) -> &str {
        "count_distinct"
    }

    fn validate(&self, input_names: &[String]) -> Result<(), Vec<String>> {
        collect_errors([require_single_input(input_names, self.kind())])
    }

    fn run(&self, ctx: &JobContext<'_>) -> Result<JobOutput, JobError> {
        let input = ctx.single_input()?;
        let key = col(self.column.as_str());
        // Roll-up: merge the upstream partitions' distinct keys rather than their rows.
        let rows = match (&input.states, input.upstream_kind.as_deref()) {
            (Some(states), Some("count_distinct")) if !states.is_empty() => {
                let parts: Vec<LazyFrame> =
                    states.iter().map(|state| state.clone().lazy()).collect();
                concat(parts, UnionArgs::default())?
            }
            _ => input.frame.clone(),
        };
        if !self.keep_state {
            let frame = apply_filter(rows, &self.filter)
                .select([key
                    .drop_nulls()
                    .n_unique()
                    .cast(DataType::UInt64)
                    .alias(DISTINCT_COUNT_COLUMN)])
                .collect()?;
            return Ok(JobOutput::frame(frame));
        }
        let keys = apply_filter(rows, &self.filter)
            .select([key.clone()])
            .filter(key.is_not_null())
            .unique(None, UniqueKeepStrategy::Any)
            .collect()?;
        let count = keys.height() as u64;
        let frame = DataFrame::new(1, vec![Column::new(DISTINCT_COUNT_COLUMN.into(), [count])])?;
        Ok(JobOutput {
            frame,
            state: Some(keys),
        })
    }
}

/// The `n` keys with the largest metric, ties broken by key.
#[derive(Debug, Clone)]
pub struct Top {
    key: String,
    metric: Expr,
    metric_name: String,
    n: u32,
    filter: Option<Expr>,
}

impl Top {
    pub fn new(
        key: &str,
        metric: &str,
        n: u32,
        metric_name: Option<&str>,
        filter: Option<&str>,
    ) -> Result<Self, Vec<String>> {
        let metric_expr = parse_expression("metric", metric);
        let filter = parse_optional_filter(filter);
        let mut errors = Vec::new();
        if n == 0 {
            errors.push("field `n`: must be at least 1".to_owned());
        }
        let metric_name = metric_name.unwrap_or("value").to_owned();
        if metric_name == key {
            errors.push(format!(
                "field `metric_name`: `{metric_name}` is also the key column"
            ));
        }
        match (metric_expr, filter) {
            (Ok(metric), Ok(filter)) if errors.is_empty() => Ok(Top {
                key: key.to_owned(),
                metric,
                metric_name,
                n,
                filter,
            }),
            (metric, filter) => {
                errors.extend(metric.err());
                errors.extend(filter.err());
                Err(errors)
            }
        }
    }

    pub fn from_spec(spec: &TopSpec) -> Result<Self, Vec<String>> {
        Self::new(
            &spec.key,
            &spec.metric,
            spec.n,
            spec.metric_name.as_deref(),
            spec.filter.as_deref(),
        )
    }
}

impl Job for Top {
    fn kind(&self) -> &str {
        "top"
    }

    fn validate(&self, input_names: &[String]) -> Result<(), Vec<String>> {
        collect_errors([require_single_input(input_names, self.kind())])
    }

    fn run(&self, ctx: &JobContext<'_>) -> Result<JobOutput, JobError> {
        let input = ctx.single_input()?;
        let frame = apply_filter(input.frame.clone(), &self.filter)
            .group_by([col(self.key.as_str())])
            .agg([self.metric.clone().alias(self.metric_name.as_str())])
            .sort(
                [self.metric_name.as_str(), self.key.as_str()],
                SortMultipleOptions::default()
                    .with_order_descending_multi([true, false])
                    .with_nulls_last(true),
            )
            .limit(self.n as IdxSize)
            .collect()?;
        Ok(JobOutput::frame(frame))
    }
}

/// Named aggregations per key, sorted by the keys.
#[derive(Debug, Clone)]
pub struct GroupBy {
    keys: Vec<String>,
    aggregations: Vec<(String, Expr)>,
    filter: Option<Expr>,
}

impl GroupBy {
    pub fn new(
        keys: &[String],
        aggregations: &[(String, String)],
        filter: Option<&str>,
    ) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        if keys.is_empty() {
            errors.push("field `keys`: at least one key column is required".to_owned());
        }
        if aggregations.is_empty() {
            errors.push("field `aggregations`: at least one aggregation is required".to_owned());
        }
        let mut parsed = Vec::new();
        for (name, sql) in aggregations {
            if keys.contains(name) {
                errors.push(format!(
                    "field `aggregations.{name}`: `{name}` is also a key column"
                ));
            }
            match parse_expression(&format!("aggregations.{name}"), sql) {
                Ok(expr) => parsed.push((name.clone(), expr)),
                Err(err) => errors.push(err),
            }
        }
        let filter = parse_optional_filter(filter).unwrap_or_else(|err| {
            errors.push(err);
            None
        });
        if errors.is_empty() {
            Ok(GroupBy {
                keys: keys.to_vec(),
                aggregations: parsed,
                filter,
            })
        } else {
            Err(errors)
        }
    }

    pub fn from_spec(spec: &GroupBySpec) -> Result<Self, Vec<String>> {
        Self::new(&spec.keys, &spec.aggregations.0, spec.filter.as_deref())
    }
}

impl Job for GroupBy {
    fn kind(&self) -> &str {
        "group_by"
    }

    fn validate(&self, input_names: &[String]) -> Result<(), Vec<String>> {
        collect_errors([require_single_input(input_names, self.kind())])
    }

    fn run(&self, ctx: &JobContext<'_>) -> Result<JobOutput, JobError> {
        let input = ctx.single_input()?;
        let keys: Vec<Expr> = self.keys.iter().map(|key| col(key.as_str())).collect();
        let aggregations: Vec<Expr> = self
            .aggregations
            .iter()
            .map(|(name, expr)| expr.clone().alias(name.as_str()))
            .collect();
        let frame = apply_filter(input.frame.clone(), &self.filter)
            .group_by(keys)
            .agg(aggregations)
            .sort(self.keys.clone(), SortMultipleOptions::default())
            .collect()?;
        Ok(JobOutput::frame(frame))
    }
}

/// A polars SQL query over the job's inputs, each registered as a table under its name.
#[derive(Debug, Clone)]
pub struct Sql {
    query: String,
    tables: Vec<String>,
}

impl Sql {
    pub fn new(query: &str) -> Result<Self, Vec<String>> {
        if query.trim().is_empty() {
            return Err(vec!["field `sql`: query is empty".to_owned()]);
        }
        let tables = extract_table_identifiers(query, false, true).map_err(|err| {
            vec![format!(
                "field `sql`: cannot parse query: {}",
                short_polars_error(&err)
            )]
        })?;
        Ok(Sql {
            query: query.to_owned(),
            tables,
        })
    }

    /// Tables the query reads.
    pub fn tables(&self) -> &[String] {
        &self.tables
    }
}

impl Job for Sql {
    fn kind(&self) -> &str {
        "sql"
    }

    fn validate(&self, input_names: &[String]) -> Result<(), Vec<String>> {
        collect_errors(self.tables.iter().map(|table| {
            if input_names.contains(table) {
                Ok(())
            } else {
                Err(format!(
                    "field `sql`: the query reads `{table}`, which is not among the job's inputs ({})",
                    input_names.join(", ")
                ))
            }
        }))
    }

    fn run(&self, ctx: &JobContext<'_>) -> Result<JobOutput, JobError> {
        let mut sql = SQLContext::new();
        for (name, input) in ctx.inputs {
            sql.register(name, input.frame.clone());
        }
        let frame = sql.execute(&self.query)?.collect()?;
        Ok(JobOutput::frame(frame))
    }
}

/// Stages a window: keeps some columns of the rows passing the filter.
#[derive(Debug, Clone)]
pub struct Select {
    columns: Option<Vec<String>>,
    filter: Option<Expr>,
}

impl Select {
    pub fn new(columns: Option<&[String]>, filter: Option<&str>) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        if columns.is_some_and(<[String]>::is_empty) {
            errors.push(
                "field `columns`: list is empty (leave it out to keep every column)".to_owned(),
            );
        }
        let filter = parse_optional_filter(filter).unwrap_or_else(|err| {
            errors.push(err);
            None
        });
        if errors.is_empty() {
            Ok(Select {
                columns: columns.map(<[String]>::to_vec),
                filter,
            })
        } else {
            Err(errors)
        }
    }

    pub fn from_spec(spec: &SelectSpec) -> Result<Self, Vec<String>> {
        Self::new(spec.columns.as_deref(), spec.filter.as_deref())
    }
}

impl Job for Select {
    fn kind(&self) -> &str {
        "select"
    }

    fn validate(&self, input_names: &[String]) -> Result<(), Vec<String>> {
        collect_errors([require_single_input(input_names, self.kind())])
    }

    fn run(&self, ctx: &JobContext<'_>) -> Result<JobOutput, JobError> {
        let input = ctx.single_input()?;
        let filtered = apply_filter(input.frame.clone(), &self.filter);
        let frame = match &self.columns {
            Some(columns) => {
                filtered.select(columns.iter().map(|c| col(c.as_str())).collect::<Vec<_>>())
            }
            None => filtered,
        }
        .collect()?;
        Ok(JobOutput::frame(frame))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::DateTime;

    use super::*;
    use crate::job::JobInput;
    use crate::partition::{Grain, Window};

    fn run(job: &dyn Job, frame: DataFrame) -> JobOutput {
        let inputs: BTreeMap<String, JobInput> = [(
            "events".to_owned(),
            JobInput {
                frame: frame.lazy(),
                states: None,
                upstream_kind: None,
            },
        )]
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
        job.run(&ctx).unwrap()
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
}
