//! What the bounds read from in-memory frames: the plain key columns of an equi join, a join
//! side traced down to the frame it reads, the rows per key on each side and the rows they
//! match, the lengths of lists an explode makes, and what a projection does to the row count.

use std::sync::Arc;

use polars::prelude::*;
use polars_plan::plans::expr_ir::ExprIR;
use polars_plan::plans::{AExpr, IR};
use polars_plan::prelude::Node;

use super::*;

/// The key columns of an equi join when every key on both sides is a plain column.
pub(super) fn plain_keys(
    left_on: &[ExprIR],
    right_on: &[ExprIR],
    arena: &polars_plan::prelude::Arena<AExpr>,
) -> Option<(Vec<PlSmallStr>, Vec<PlSmallStr>)> {
    if left_on.len() != right_on.len() {
        return None;
    }
    let column = |e: &ExprIR| match arena.get(e.node()) {
        AExpr::Column(name) => Some(name.clone()),
        _ => None,
    };
    Some((
        left_on.iter().map(column).collect::<Option<_>>()?,
        right_on.iter().map(column).collect::<Option<_>>()?,
    ))
}

/// What the rows of a join side are, traced down to an in-memory frame.
#[derive(Debug)]
pub(super) struct Trace {
    pub(super) frame: Arc<DataFrame>,
    /// The key columns, as the frame names them.
    pub(super) columns: Vec<PlSmallStr>,
    /// Whether the side holds exactly the frame's rows (or, when `unique`, exactly one row
    /// per key the frame holds): no filter, slice or distinct on the way.
    pub(super) exact: bool,
    /// Whether the side holds at most one row per key (a group-by on exactly the keys, a
    /// distinct on a subset of them).
    pub(super) unique: bool,
}

/// Follows a join side's key `columns` down through nodes whose rows are (a subset of, or one
/// per key of) their input's, to an in-memory frame.
pub(super) fn trace_to_frame(
    walk: &Walk<'_>,
    mut node: Node,
    mut columns: Vec<PlSmallStr>,
) -> Option<Trace> {
    let mut exact = true;
    let mut unique = false;
    loop {
        match walk.ir(node) {
            IR::DataFrameScan { df, .. } => {
                if columns.iter().any(|c| df.column(c).is_err()) {
                    return None;
                }
                return Some(Trace {
                    frame: df.clone(),
                    columns,
                    exact,
                    unique,
                });
            }
            IR::Cache { input, .. } | IR::SimpleProjection { input, .. } => node = *input,
            IR::Sort { input, slice, .. } => {
                exact &= slice.is_none();
                node = *input;
            }
            IR::Filter { input, .. } | IR::Slice { input, .. } => {
                exact = false;
                node = *input;
            }
            IR::Distinct { input, options } => {
                exact = false;
                if let Some(subset) = &options.subset {
                    unique |= subset.iter().all(|c| columns.contains(c));
                }
                node = *input;
            }
            IR::Select {
                input, expr: exprs, ..
            }
            | IR::HStack { input, exprs, .. } => {
                let with_columns = matches!(walk.ir(node), IR::HStack { .. });
                // A literal series could stretch a column of the input to more rows.
                if ProjectionShape::of(exprs, &walk.plan.expr_arena).grows() {
                    return None;
                }
                for column in &mut columns {
                    let produced = exprs
                        .iter()
                        .find(|e| e.output_name_inner().get() == Some(&*column));
                    match produced.map(|e| walk.plan.expr_arena.get(e.node())) {
                        Some(AExpr::Column(source)) => *column = source.clone(),
                        Some(_) => return None,
                        None if with_columns => {}
                        None => return None,
                    }
                }
                node = *input;
            }
            IR::GroupBy {
                input,
                keys,
                options,
                apply,
                ..
            } => {
                if apply.is_some() || options.is_dynamic() || options.is_rolling() {
                    return None;
                }
                let mut sources = Vec::with_capacity(columns.len());
                for column in &columns {
                    let key = keys
                        .iter()
                        .find(|k| k.output_name_inner().get() == Some(column))?;
                    match walk.plan.expr_arena.get(key.node()) {
                        AExpr::Column(source) => sources.push(source.clone()),
                        _ => return None,
                    }
                }
                // One row per key when the group-by keys are exactly the join keys; otherwise
                // at most the input's rows per key.
                let all_keys_joined = keys.iter().all(|k| {
                    k.output_name_inner()
                        .get()
                        .is_some_and(|name| columns.contains(name))
                });
                if all_keys_joined {
                    unique = true;
                } else {
                    exact = false;
                }
                exact &= options.slice.is_none();
                columns = sources;
                node = *input;
            }
            _ => return None,
        }
    }
}

/// How many rows of a frame hold each key.
#[derive(Debug)]
pub(super) struct KeyCounts {
    /// One row per distinct key: the key columns `k0`, `k1`, … and the count `n`.
    pub(super) frame: DataFrame,
    /// The largest count.
    pub(super) largest: u128,
}

impl KeyCounts {
    pub(super) fn of(frame: &DataFrame, columns: &[PlSmallStr]) -> PolarsResult<Self> {
        let keys: Vec<Expr> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| col(c.clone()).alias(format!("k{i}")))
            .collect();
        let counts = frame
            .clone()
            .lazy()
            .group_by(keys)
            .agg([len().alias("n")])
            .collect()?;
        let largest = counts
            .column("n")?
            .as_materialized_series()
            .max::<u64>()?
            .map_or(0, u128::from);
        Ok(KeyCounts {
            frame: counts,
            largest,
        })
    }
}

/// Matched pairs and unmatched rows of an equi join, from both sides' key counts.
#[derive(Debug, Clone, Copy)]
pub(super) struct MatchedRows {
    pub(super) pairs: u128,
    pub(super) left_only: u128,
    pub(super) right_only: u128,
}

/// Σₖ left(k) · right(k), and the rows of keys found on one side only, from the key counts
/// joined on their keys (a join of distinct keys: at most one row per key). A side marked
/// `unique` counts one row per key. `None` when the counts cannot be joined (key types polars
/// will not compare), so the caller falls back to a looser bound.
pub(super) fn matched_rows(
    left: &KeyCounts,
    left_unique: bool,
    right: &KeyCounts,
    right_unique: bool,
    nulls_equal: bool,
) -> Option<MatchedRows> {
    let width = left.frame.width() - 1;
    let keys: Vec<Expr> = (0..width).map(|i| col(format!("k{i}"))).collect();
    let mut args = JoinArgs::new(JoinType::Full);
    args.nulls_equal = nulls_equal;
    let joined = left
        .frame
        .clone()
        .lazy()
        .rename(["n"], ["l"], true)
        .join(
            right.frame.clone().lazy().rename(["n"], ["r"], true),
            keys.clone(),
            keys,
            args,
        )
        .select([
            col("l").cast(DataType::UInt64),
            col("r").cast(DataType::UInt64),
        ])
        .collect()
        .ok()?;
    let counts = |name: &str| -> Option<Vec<Option<u64>>> {
        Some(joined.column(name).ok()?.u64().ok()?.iter().collect())
    };
    let (lefts, rights) = (counts("l")?, counts("r")?);
    let clip = |n: u64, unique: bool| u128::from(if unique { n.min(1) } else { n });
    let mut rows = MatchedRows {
        pairs: 0,
        left_only: 0,
        right_only: 0,
    };
    for (l, r) in lefts.into_iter().zip(rights) {
        match (l, r) {
            (Some(l), Some(r)) => {
                rows.pairs = rows
                    .pairs
                    .saturating_add(clip(l, left_unique).saturating_mul(clip(r, right_unique)));
            }
            (Some(l), None) => rows.left_only = rows.left_only.saturating_add(clip(l, left_unique)),
            (None, Some(r)) => {
                rows.right_only = rows.right_only.saturating_add(clip(r, right_unique));
            }
            (None, None) => {}
        }
    }
    Some(rows)
}

/// The rows an explode of `series` makes: one per list element, one per empty or null list.
pub(super) fn exploded_len(series: &Series) -> Option<u128> {
    match series.dtype() {
        DataType::List(_) => {
            let lists = series.list().ok()?;
            let mut rows = 0u128;
            for array in lists.downcast_iter() {
                for len in array.offsets().lengths() {
                    rows = rows.saturating_add(u(len.max(1)));
                }
            }
            Some(rows)
        }
        DataType::Array(_, width) => mul(Some(u(series.len())), Some(u((*width).max(1)))),
        _ => Some(u(series.len())),
    }
}

/// What a projection's expressions do to the number of rows, read without recursion.
#[derive(Debug)]
pub(super) struct ProjectionShape {
    /// An expression can make more rows than its input by an amount not known here (an
    /// explode, a range, a function that is neither length-preserving nor an aggregation).
    pub(super) unbounded: bool,
    /// The longest literal series (1 when there is none).
    pub(super) literal_rows: u128,
    /// Every expression maps each input row to one output row.
    pub(super) elementwise: bool,
    /// Some expression reads a column (a projection of scalars alone has one row).
    pub(super) reads_column: bool,
}

impl ProjectionShape {
    pub(super) fn of(exprs: &[ExprIR], arena: &polars_plan::prelude::Arena<AExpr>) -> Self {
        let mut shape = ProjectionShape {
            unbounded: false,
            literal_rows: 1,
            elementwise: true,
            reads_column: false,
        };
        for expr in exprs {
            for (_, ae) in arena.iter(expr.node()) {
                match ae {
                    AExpr::Explode { .. } | AExpr::Literal(LiteralValue::Range(_)) => {
                        shape.unbounded = true;
                    }
                    AExpr::Literal(LiteralValue::Series(series)) => {
                        shape.literal_rows = shape.literal_rows.max(u(series.len()));
                        shape.elementwise = false;
                    }
                    AExpr::Column(_) => shape.reads_column = true,
                    AExpr::Literal(_)
                    | AExpr::BinaryExpr { .. }
                    | AExpr::Cast { .. }
                    | AExpr::Ternary { .. }
                    | AExpr::Element => {}
                    AExpr::Function { options, .. } | AExpr::AnonymousFunction { options, .. } => {
                        if options.is_length_preserving() {
                        } else if options.returns_scalar() {
                            shape.elementwise = false;
                        } else {
                            shape.unbounded = true;
                        }
                    }
                    _ => shape.elementwise = false,
                }
            }
        }
        shape
    }

    /// Whether the projection can have more rows than its input.
    pub(super) fn grows(&self) -> bool {
        self.unbounded || self.literal_rows > 1
    }
}
