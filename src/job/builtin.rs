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
use polars::sql::{SQLContext, sql_expr};

use super::spec::{CountDistinctSpec, GroupBySpec, SelectSpec, TopSpec};
use super::{Job, JobContext, JobError, JobOutput};
use crate::frames::cancel::collect;
use crate::frames::join_bound::largest_join_within;
use crate::frames::selection::columns_read;
use crate::sql_guard::{
    SqlRejection, check_expression, check_query, excerpt, max_join_rows, with_sql_stack,
};

/// The column a `count_distinct` result holds its count in.
pub const DISTINCT_COUNT_COLUMN: &str = "distinct_count";

/// Parses a SQL expression, naming the field in the error.
pub(crate) fn parse_expression(field: &str, sql: &str) -> Result<Expr, String> {
    if sql.trim().is_empty() {
        return Err(format!("field `{field}`: expression is empty"));
    }
    check_expression(sql)
        .map_err(|rejection| format!("field `{field}`: `{}` {rejection}", excerpt(sql)))?;
    with_sql_stack(|| sql_expr(sql)).map_err(|err| {
        format!(
            "field `{field}`: cannot parse `{}`: {}",
            excerpt(sql),
            short_polars_error(&err)
        )
    })
}

pub(super) fn parse_optional_filter(sql: Option<&str>) -> Result<Option<Expr>, String> {
    sql.map(|sql| parse_expression("filter", sql)).transpose()
}

pub use crate::error::short_polars_error;

/// The `keys` that none of `exprs` reads: used only to group by, so they may come
/// dictionary-encoded (`JobInput::rows_matching`).
fn keys_only_grouped<'a>(
    keys: impl IntoIterator<Item = &'a str>,
    exprs: impl IntoIterator<Item = &'a Expr>,
) -> Vec<String> {
    let read = columns_read(exprs).unwrap_or_default();
    keys.into_iter()
        .filter(|key| !read.iter().any(|name| name == key))
        .map(str::to_owned)
        .collect()
}

/// The columns a job reads besides its filter: `columns` plus those `exprs` read; `None`
/// when an expression may read any column.
pub(super) fn columns_read_by<'a>(
    columns: impl IntoIterator<Item = &'a str>,
    exprs: impl IntoIterator<Item = &'a Expr>,
) -> Option<Vec<String>> {
    let mut read: Vec<String> = columns.into_iter().map(str::to_owned).collect();
    for name in columns_read(exprs)? {
        if !read.contains(&name) {
            read.push(name);
        }
    }
    Some(read)
}

/// `sum(x)` when `expr` is SQL's `SUM(x)` as polars' SQL parser writes it:
/// `when(null_count(x) < len(x)).then(sum(x)).otherwise(NULL)`, the guard giving a group of
/// nulls NULL rather than polars' 0. `None` for anything else.
fn plain_sum_of(expr: &Expr) -> Option<Expr> {
    let Expr::Ternary {
        predicate,
        truthy,
        falsy,
    } = expr
    else {
        return None;
    };
    let Expr::Agg(AggExpr::Sum(summed)) = truthy.as_ref() else {
        return None;
    };
    let summed = summed.as_ref().clone();
    let guard = summed.clone().null_count().lt(summed.len());
    (**predicate == guard && **falsy == lit(LiteralValue::untyped_null()))
        .then(|| truthy.as_ref().clone())
}

/// Runs a group-by whose aggregations may hold SQL sums, on polars' grouped fast path.
///
/// SQL's guarded `sum(x)` costs a second aggregation per group (13% of a 10M-row group-by
/// here). A group whose plain sum is neither 0 nor NULL cannot be a group of nulls, so `build`
/// first gets the aggregations with each top-level SQL sum made plain; when every such column
/// of the answer holds no 0 and no NULL, the answer is exact. Otherwise (a real zero sum, or a
/// group of nulls) it runs again with the guarded sums. `build` makes the whole plan (group-by,
/// sort, limit) from the aggregations, so the check sees what is returned: a group of nulls
/// cut off by a limit would have been cut off as NULL too, since NULLs sort last.
fn group_by_with_plain_sums(
    aggregations: Vec<(String, Expr)>,
    build: impl Fn(Vec<Expr>) -> LazyFrame,
) -> PolarsResult<DataFrame> {
    let guarded = || {
        aggregations
            .iter()
            .map(|(name, expr)| expr.clone().alias(name.as_str()))
            .collect::<Vec<_>>()
    };
    let mut plain_columns = Vec::new();
    let plain: Vec<Expr> = aggregations
        .iter()
        .map(|(name, expr)| match plain_sum_of(expr) {
            Some(sum) => {
                plain_columns.push(name.as_str());
                sum.alias(name.as_str())
            }
            None => expr.clone().alias(name.as_str()),
        })
        .collect();
    if plain_columns.is_empty() {
        return collect(build(guarded()));
    }
    let answer = collect(build(plain))?;
    let exact = plain_columns.iter().all(|name| {
        answer.column(name).is_ok_and(|column| {
            column.null_count() == 0
                && column
                    .as_materialized_series()
                    .equal(0)
                    .is_ok_and(|zero| !zero.any())
        })
    });
    if exact {
        Ok(answer)
    } else {
        collect(build(guarded()))
    }
}

pub(super) fn require_single_input(input_names: &[String], kind: &str) -> Result<(), String> {
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

pub(super) fn collect_errors(
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
                let merged = concat(parts, UnionArgs::default())?;
                match &self.filter {
                    Some(filter) => merged.filter(filter.clone()),
                    None => merged,
                }
            }
            _ => input.rows_matching(
                self.filter.as_ref(),
                Some(std::slice::from_ref(&self.column)),
                &[],
            ),
        };
        if !self.keep_state {
            let frame = collect(
                rows.select([key
                    .drop_nulls()
                    .n_unique()
                    .cast(DataType::UInt64)
                    .alias(DISTINCT_COUNT_COLUMN)]),
            )?;
            return Ok(JobOutput::frame(frame));
        }
        let keys = collect(
            rows.select([key.clone()])
                .filter(key.is_not_null())
                .unique(None, UniqueKeepStrategy::Any),
        )?;
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
    /// The columns the key and metric read, and the key unless the metric reads it (for
    /// `JobInput::rows_matching`).
    reads: Option<Vec<String>>,
    group_keys: Vec<String>,
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
                reads: columns_read_by([key], [&metric]),
                group_keys: keys_only_grouped([key], [&metric]),
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
        let frame = group_by_with_plain_sums(
            vec![(self.metric_name.clone(), self.metric.clone())],
            |metric| {
                input
                    .rows_matching(
                        self.filter.as_ref(),
                        self.reads.as_deref(),
                        &self.group_keys,
                    )
                    .group_by([col(self.key.as_str())])
                    .agg(metric)
                    .sort(
                        [self.metric_name.as_str(), self.key.as_str()],
                        SortMultipleOptions::default()
                            .with_order_descending_multi([true, false])
                            .with_nulls_last(true),
                    )
                    .limit(self.n as IdxSize)
            },
        )?;
        Ok(JobOutput::frame(frame))
    }
}

/// Named aggregations per key, sorted by the keys.
#[derive(Debug, Clone)]
pub struct GroupBy {
    keys: Vec<String>,
    /// The columns the keys and aggregations read, and the keys no aggregation reads (for
    /// `JobInput::rows_matching`).
    reads: Option<Vec<String>>,
    group_keys: Vec<String>,
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
                reads: columns_read_by(
                    keys.iter().map(String::as_str),
                    parsed.iter().map(|(_, expr)| expr),
                ),
                group_keys: keys_only_grouped(
                    keys.iter().map(String::as_str),
                    parsed.iter().map(|(_, expr)| expr),
                ),
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
        let frame = group_by_with_plain_sums(self.aggregations.clone(), |aggregations| {
            input
                .rows_matching(
                    self.filter.as_ref(),
                    self.reads.as_deref(),
                    &self.group_keys,
                )
                .group_by(keys.clone())
                .agg(aggregations)
                .sort(self.keys.clone(), SortMultipleOptions::default())
        })?;
        Ok(JobOutput::frame(frame))
    }
}

/// A polars SQL query over the job's inputs, each registered as a table under its name.
#[derive(Debug, Clone)]
pub struct Sql {
    query: String,
    tables: Vec<String>,
    /// Where the query was written, for messages: `sql` in a pipeline file (and a `/query`
    /// body), `query` in an ad-hoc job's config.
    field: &'static str,
}

impl Sql {
    /// A pipeline's `sql:` job.
    pub fn new(query: &str) -> Result<Self, Vec<String>> {
        Sql::written_in("sql", query)
    }

    /// A query written in the field `field`, which every problem names.
    pub fn written_in(field: &'static str, query: &str) -> Result<Self, Vec<String>> {
        if query.trim().is_empty() {
            return Err(vec![format!("field `{field}`: query is empty")]);
        }
        let shape = check_query(query).map_err(|rejection| match rejection {
            SqlRejection::Syntax(message) => {
                vec![format!("field `{field}`: cannot parse query: {message}")]
            }
            other => vec![format!("field `{field}`: the query {other}")],
        })?;
        Ok(Sql {
            query: query.to_owned(),
            tables: shape.tables,
            field,
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
                    "field `{}`: the query reads `{table}`, which is not among the job's inputs ({})",
                    self.field,
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
        let plan = sql.execute(&self.query)?;
        // One polars join kernel cannot be interrupted: bound every join before running.
        let limit = max_join_rows();
        if limit != u64::MAX {
            let tables: Vec<(&str, &LazyFrame)> = ctx
                .inputs
                .iter()
                .map(|(name, input)| (name.as_str(), &input.frame))
                .collect();
            if let Some(refusal) = largest_join_within(&plan, &tables, limit)?
                .and_then(|estimate| estimate.refusal(limit))
            {
                return Err(JobError::Invalid(refusal));
            }
        }
        let frame = collect(plan)?;
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
        let filtered = input.rows_matching(self.filter.as_ref(), self.columns.as_deref(), &[]);
        let frame = collect(match &self.columns {
            Some(columns) => {
                filtered.select(columns.iter().map(|c| col(c.as_str())).collect::<Vec<_>>())
            }
            None => filtered,
        })?;
        Ok(JobOutput::frame(frame))
    }
}

#[cfg(test)]
mod tests;
