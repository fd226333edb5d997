//! Static row bounds for the joins of a polars plan, so SQL whose joins could explode is
//! refused before polars runs it.
//!
//! Why static: one polars join kernel cannot be interrupted. A 5-way self cross join over a
//! 36-row result (60M rows) took the server to 13.7 GB inside a single kernel, and an equi
//! self-join on a low-cardinality column of a big table to 24 GB, past any cancellation
//! (`super::cancel` stops a query only between plan nodes). So before a query runs,
//! [`largest_join`] walks its *optimised* plan (what polars will execute) bottom-up and bounds
//! the rows every node can produce; `Sql::run` (`src/job/builtin.rs`) refuses the query when a
//! join's bound exceeds `sql_guard::max_join_rows()`.
//!
//! How joins are bounded:
//! - cross and inequality joins: left × right;
//! - semi and anti joins: the left side;
//! - equi joins whose two sides read plain key columns of in-memory frames (through filters,
//!   projections, renames, sorts, group-bys, caches): exactly Σₖ left(k) · right(k) (plus
//!   unmatched rows for outer joins), from polars group-by counts of the keys in the two
//!   frames (an upper bound when a filter sits between frame and join);
//! - equi joins with one such side: the other side's bound times that side's largest key
//!   multiplicity (×1 for a dimension table with unique keys);
//! - anything else: left × right.
//!
//! Every other node passes on at most its input's bound (a union the sum, a slice its
//! length; a group-by a join reads, its number of distinct keys when they are plain columns of
//! an in-memory frame), except row-growing ones: an explode is bounded when its lists can be
//! read before running (a literal array, a column of an in-memory frame) and unbounded
//! otherwise, as is a file scan without a row count. Arithmetic saturates.
//!
//! Cost: a plan without a join pays one walk of its unoptimised (DSL) tree and nothing else:
//! no optimisation, no counts. A plan with joins is optimised once more here (polars optimises
//! again when it runs it) and walked with no counts; against a limit
//! ([`largest_join_within`]) that is the end unless some join's product of input rows exceeds
//! the limit. Only then are keys and groups below such joins counted, smaller frame first and
//! only until the bound falls within the limit (each frame and key set once). Every walk keeps
//! its own stack: nothing here recurses on the depth of a plan or of an expression.
//!
//! Does not own: the limit (a setting in `crate::sql_guard`) or the decision to refuse
//! (`Sql::run`).

mod describe;
mod keys;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use polars::prelude::*;
use polars_plan::dsl::DslPlan;
use polars_plan::plans::expr_ir::ExprIR;
use polars_plan::plans::{AExpr, ArenaExprIter, FunctionIR, IR, IRPlan, LiteralValue};
use polars_plan::prelude::Node;

use describe::*;
use keys::*;

/// The largest join of a plan: how many rows it can produce and which join it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinEstimate {
    /// An upper bound on the rows the join produces (saturating); `None` when one of its
    /// inputs has no bound before running (an explode of lists computed at run time, a file
    /// scan without a row count).
    pub rows: Option<u128>,
    /// Whether `rows` is the exact number of rows the join produces, not just a bound.
    pub exact: bool,
    /// The join for a message: its kind, the tables on each side, its keys.
    pub describe: String,
}

impl JoinEstimate {
    /// The message refusing this join under `limit` rows, or `None` when it is within it.
    /// `u64::MAX` is no limit: even an unbounded join passes.
    pub fn refusal(&self, limit: u64) -> Option<String> {
        if limit == u64::MAX {
            return None;
        }
        match self.rows {
            Some(rows) if rows <= u128::from(limit) => None,
            Some(rows) => Some(format!(
                "the query's {} can produce {} {rows} rows; the limit is {limit} \
                 (limits.max_join_rows)",
                self.describe,
                if self.exact { "exactly" } else { "up to" },
            )),
            None => Some(format!(
                "the query's {} reads rows whose number cannot be known before running it (an \
                 UNNEST of computed lists, or a source without row counts), so it cannot be \
                 checked against the limit of {limit} rows (limits.max_join_rows)",
                self.describe
            )),
        }
    }
}

/// The largest number of rows any join in `lf`'s optimised plan can produce, with the join it
/// is; `None` when the plan has no join.
pub fn largest_join(lf: &LazyFrame) -> PolarsResult<Option<JoinEstimate>> {
    largest_join_named(lf, &[])
}

/// [`largest_join`], describing the join's sides by the names of the `tables` they read (the
/// frames registered with the SQL context); a side reading none of them is described by its
/// columns or files.
pub fn largest_join_named(
    lf: &LazyFrame,
    tables: &[(&str, &LazyFrame)],
) -> PolarsResult<Option<JoinEstimate>> {
    estimate(lf, tables, None)
}

/// [`largest_join_named`], with bounds made only as tight as comparing them with `limit`
/// needs: a join whose cheap bound (its inputs' rows multiplied) is within `limit` is not
/// counted, and a counted join stops at the first side whose counts bring it within. What
/// `Sql::run` calls; [`JoinEstimate::refusal`] then says whether the query may run.
pub fn largest_join_within(
    lf: &LazyFrame,
    tables: &[(&str, &LazyFrame)],
    limit: u64,
) -> PolarsResult<Option<JoinEstimate>> {
    estimate(lf, tables, Some(u128::from(limit)))
}

fn estimate(
    lf: &LazyFrame,
    tables: &[(&str, &LazyFrame)],
    threshold: Option<u128>,
) -> PolarsResult<Option<JoinEstimate>> {
    // Joins in the optimised plan come only from joins in the DSL: a plan without one is done.
    if !may_join(&lf.logical_plan) {
        return Ok(None);
    }
    let plan = lf.clone().to_alp_optimized()?;
    let Some((node, rows)) = largest_in_plan(&plan, threshold)? else {
        return Ok(None);
    };
    let names = TableNames::of(tables);
    Ok(Some(JoinEstimate {
        rows: rows.bound,
        exact: rows.exact && rows.bound.is_some(),
        describe: describe_join(&plan, node, &names),
    }))
}

/// The join of `plan` with the largest bound, in two passes. The first multiplies rows and
/// counts nothing; when every join's bound is then within `threshold`, that is the answer.
/// Otherwise the second pass counts keys and groups below the joins that were not.
fn largest_in_plan(plan: &IRPlan, threshold: Option<u128>) -> PolarsResult<Option<(Node, Rows)>> {
    let mut walk = Walk {
        plan,
        rows: vec![None; plan.lp_arena.len()],
        counts: Vec::new(),
        below_join: Vec::new(),
        threshold,
        counting: false,
    };
    let cheap = walk.run()?;
    if cheap.unsettled.is_empty() {
        return Ok(cheap.largest);
    }
    walk.rows = vec![None; plan.lp_arena.len()];
    walk.counting = true;
    walk.mark_below(&cheap.unsettled);
    Ok(walk.run()?.largest)
}

/// How many DSL nodes [`may_join`] reads before it assumes a join: a plan sharing subplans is a
/// DAG that polars' iterator walks as a tree, so a pathological one is cut short.
const DSL_NODES_READ: usize = 10_000;

/// Whether the DSL plan can hold a join: it has a join node, a node whose plan is only known
/// when it is converted, or more nodes than are worth reading. (An `IR` node, a plan polars
/// already converted, such as every SQL query's, is read through the DSL it was made from.)
fn may_join(plan: &DslPlan) -> bool {
    plan.into_iter().enumerate().any(|(read, node)| {
        read >= DSL_NODES_READ
            || matches!(node, DslPlan::Join { .. } | DslPlan::PipeWithSchema { .. })
    })
}

/// Rows a node can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rows {
    /// An upper bound (saturating); `None`: unbounded before running.
    bound: Option<u128>,
    /// Whether `bound` is the node's exact number of rows.
    exact: bool,
}

impl Rows {
    fn exact(rows: u128) -> Self {
        Rows {
            bound: Some(rows),
            exact: true,
        }
    }

    fn at_most(bound: Option<u128>) -> Self {
        Rows {
            bound,
            exact: false,
        }
    }

    const UNBOUNDED: Rows = Rows {
        bound: None,
        exact: false,
    };

    /// At most `len` of these rows (a slice, a `LIMIT`).
    fn limited(self, len: u128) -> Self {
        match self.bound {
            Some(rows) if rows <= len => self,
            _ => Rows::exact(len).inexact_unless(self.exact),
        }
    }

    fn inexact(self) -> Self {
        Rows {
            exact: false,
            ..self
        }
    }

    fn inexact_unless(self, exact: bool) -> Self {
        Rows {
            exact: self.exact && exact,
            ..self
        }
    }
}

/// A count, widened to the walk's integer (products of row counts overflow 64 bits).
fn u(n: usize) -> u128 {
    n as u128
}

/// `a × b`, saturating; zero times anything (even unbounded) is zero.
fn mul(a: Option<u128>, b: Option<u128>) -> Option<u128> {
    match (a, b) {
        (Some(0), _) | (_, Some(0)) => Some(0),
        (Some(a), Some(b)) => Some(a.saturating_mul(b)),
        _ => None,
    }
}

fn add(a: Option<u128>, b: Option<u128>) -> Option<u128> {
    Some(a?.saturating_add(b?))
}

/// The smaller bound; unbounded is the largest.
fn min(a: Option<u128>, b: Option<u128>) -> Option<u128> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The larger bound; unbounded is the largest.
fn max(a: Option<u128>, b: Option<u128>) -> Option<u128> {
    Some(a?.max(b?))
}

/// The bottom-up walk of one optimised plan.
struct Walk<'a> {
    plan: &'a IRPlan,
    /// Rows per arena node, once computed (the plan is a DAG: caches are shared).
    rows: Vec<Option<Rows>>,
    /// Key counts already computed, by frame and key columns (a self-join counts once).
    counts: Vec<(usize, Vec<PlSmallStr>, Arc<KeyCounts>)>,
    /// Per arena node: whether a join being refined reads it (set by `mark_below`).
    below_join: Vec<bool>,
    /// Bounds are refined only until they are within this many rows (`None`: as far as they
    /// go).
    threshold: Option<u128>,
    /// Whether bounds may be refined with group-by counts (the second pass).
    counting: bool,
}

/// What one pass of a [`Walk`] found.
#[derive(Debug, Default)]
struct Pass {
    /// The join with the largest bound.
    largest: Option<(Node, Rows)>,
    /// The joins whose bound is not within the threshold.
    unsettled: Vec<Node>,
}

impl<'a> Walk<'a> {
    fn ir(&self, node: Node) -> &'a IR {
        self.plan.lp_arena.get(node)
    }

    fn below_join(&self, node: Node) -> bool {
        self.below_join.get(node.0).copied().unwrap_or(false)
    }

    /// Whether a bound is within the threshold, so refining it further is not needed.
    fn settled(&self, bound: Option<u128>) -> bool {
        matches!((bound, self.threshold), (Some(rows), Some(threshold)) if rows <= threshold)
    }

    /// Marks the nodes the `joins` read (directly or not): only their bounds are worth a
    /// group-by count.
    fn mark_below(&mut self, joins: &[Node]) {
        self.below_join = vec![false; self.plan.lp_arena.len()];
        let mut stack: Vec<Node> = joins.iter().flat_map(|j| self.ir(*j).inputs()).collect();
        while let Some(node) = stack.pop() {
            match self.below_join.get_mut(node.0) {
                Some(marked) if !*marked => *marked = true,
                _ => continue,
            }
            stack.extend(self.ir(node).inputs());
        }
    }

    fn rows_of(&self, node: Node) -> Rows {
        self.rows
            .get(node.0)
            .copied()
            .flatten()
            .unwrap_or(Rows::UNBOUNDED)
    }

    /// Computes every node's rows, children first, with an explicit stack.
    fn run(&mut self) -> PolarsResult<Pass> {
        let mut pass = Pass::default();
        let mut stack = vec![(self.plan.lp_top, false)];
        while let Some((node, children_done)) = stack.pop() {
            if node.0 >= self.rows.len() {
                self.rows.resize(node.0 + 1, None);
            }
            if self.rows[node.0].is_some() {
                continue;
            }
            if !children_done {
                stack.push((node, true));
                for input in self.ir(node).inputs() {
                    stack.push((input, false));
                }
                continue;
            }
            let rows = self.node_rows(node)?;
            if matches!(self.ir(node), IR::Join { .. }) {
                if !self.settled(rows.bound) {
                    pass.unsettled.push(node);
                }
                let larger = match pass.largest {
                    None => true,
                    Some((_, seen)) => match (rows.bound, seen.bound) {
                        (None, Some(_)) => true,
                        (Some(now), Some(before)) => now > before,
                        _ => false,
                    },
                };
                if larger {
                    pass.largest = Some((node, rows));
                }
            }
            self.rows[node.0] = Some(rows);
        }
        Ok(pass)
    }

    /// A node's rows from its inputs' (already computed).
    fn node_rows(&mut self, node: Node) -> PolarsResult<Rows> {
        let rows = match self.ir(node) {
            IR::DataFrameScan { df, .. } => Rows::exact(u(df.height())),
            IR::Scan { file_info, .. } => match file_info.row_estimation {
                // The files' rows before any predicate pushed into the scan.
                (Some(known), _) => Rows::at_most(Some(u(known))),
                (None, usize::MAX) => Rows::UNBOUNDED,
                (None, estimated) => Rows::at_most(Some(u(estimated))),
            },
            IR::Slice { input, offset, len } => {
                let input = self.rows_of(*input);
                match input.bound {
                    Some(rows) if *offset >= 0 && input.exact => Rows::exact(
                        rows.saturating_sub(u128::from(offset.unsigned_abs()))
                            .min(u128::from(*len)),
                    ),
                    _ => input.limited(u128::from(*len)).inexact(),
                }
            }
            IR::Filter { input, .. } => self.rows_of(*input).inexact(),
            IR::SimpleProjection { input, .. }
            | IR::Cache { input, .. }
            | IR::ExtContext { input, .. }
            | IR::Sink { input, .. } => self.rows_of(*input),
            IR::Select { input, expr, .. } => self.projection_rows(*input, expr, false),
            IR::HStack { input, exprs, .. } => self.projection_rows(*input, exprs, true),
            IR::Sort { input, slice, .. } => {
                let input = self.rows_of(*input);
                match slice {
                    Some((_, len, _)) => input.limited(u(*len)).inexact(),
                    None => input,
                }
            }
            IR::GroupBy {
                input,
                keys,
                options,
                apply,
                ..
            } => {
                let grouped = if options.is_dynamic() || options.is_rolling() {
                    // Windows in time, not groups of keys: not bounded by the input here.
                    Rows::UNBOUNDED
                } else if keys.is_empty() {
                    Rows::exact(1)
                } else if self.counting && apply.is_none() && self.below_join(node) {
                    // A join's input: worth counting its groups (an aggregate has far fewer
                    // rows than the table it reads).
                    self.groups(*input, keys)?
                } else {
                    self.rows_of(*input).inexact()
                };
                match options.slice {
                    Some((_, len)) => grouped.limited(u(len)).inexact(),
                    None => grouped,
                }
            }
            IR::Distinct { input, options } => {
                let distinct = self.rows_of(*input).inexact();
                match options.slice {
                    Some((_, len)) => distinct.limited(u(len)),
                    None => distinct,
                }
            }
            IR::Gather { idxs, .. } => self.rows_of(*idxs),
            IR::MapFunction { input, function } => self.function_rows(*input, function),
            IR::Union { inputs, options } => {
                let summed = inputs.iter().fold(Rows::exact(0), |sum, input| {
                    let rows = self.rows_of(*input);
                    Rows {
                        bound: add(sum.bound, rows.bound),
                        exact: sum.exact && rows.exact,
                    }
                });
                match options.slice {
                    Some((_, len)) => summed.limited(u(len)).inexact(),
                    None => summed,
                }
            }
            IR::HConcat { inputs, .. } => inputs.iter().fold(Rows::exact(0), |widest, input| {
                let rows = self.rows_of(*input);
                Rows {
                    bound: max(widest.bound, rows.bound),
                    exact: widest.exact && rows.exact,
                }
            }),
            IR::SinkMultiple { inputs } => {
                Rows::at_most(inputs.iter().try_fold(0u128, |sum, input| {
                    Some(sum.saturating_add(self.rows_of(*input).bound?))
                }))
            }
            IR::Join { .. } => self.join_rows(node)?,
            _ => Rows::UNBOUNDED,
        };
        Ok(rows)
    }

    /// A `Select` (or, `with_columns`, an `HStack`): as many rows as its longest expression,
    /// which is at most its input's unless an expression grows rows (an explode, a literal
    /// series, a range).
    fn projection_rows(&self, input: Node, exprs: &[ExprIR], with_columns: bool) -> Rows {
        let input = self.rows_of(input);
        let shape = ProjectionShape::of(exprs, &self.plan.expr_arena);
        if shape.unbounded {
            return Rows::UNBOUNDED;
        }
        // A projection of scalars over no rows still has one row (`SELECT 1`).
        let bound = max(input.bound, Some(shape.literal_rows.max(1)));
        let exact = input.exact
            && shape.elementwise
            && (with_columns || shape.reads_column)
            && input
                .bound
                .is_some_and(|rows| rows >= shape.literal_rows.max(1));
        Rows { bound, exact }
    }

    /// The rows of a group-by by `keys` over `input`: its number of distinct keys when the
    /// keys are plain columns of an in-memory frame, otherwise at most its input's rows.
    fn groups(&mut self, input: Node, keys: &[ExprIR]) -> PolarsResult<Rows> {
        let rows = self.rows_of(input).inexact();
        let arena = &self.plan.expr_arena;
        let columns: Option<Vec<PlSmallStr>> = keys
            .iter()
            .map(|key| match arena.get(key.node()) {
                AExpr::Column(name) => Some(name.clone()),
                _ => None,
            })
            .collect();
        let Some(trace) = columns.and_then(|columns| trace_to_frame(self, input, columns)) else {
            return Ok(rows);
        };
        let distinct = u(self.key_counts(&trace)?.frame.height());
        Ok(Rows {
            bound: min(rows.bound, Some(distinct)),
            exact: trace.exact,
        })
    }

    fn function_rows(&self, input: Node, function: &FunctionIR) -> Rows {
        let rows = self.rows_of(input);
        // Other polars features add variants (unpivot, Python UDFs): all unbounded here.
        #[allow(clippy::match_wildcard_for_single_variants)]
        match function {
            // Struct unnest makes columns, not rows.
            FunctionIR::RowIndex { .. }
            | FunctionIR::Rechunk
            | FunctionIR::Hint(_)
            | FunctionIR::Unnest { .. } => rows,
            FunctionIR::FastCount { .. } => Rows::exact(1),
            FunctionIR::Explode { columns, .. } => match columns.first() {
                Some(column) => Rows::at_most(self.exploded_rows(input, column)),
                None => rows,
            },
            _ => Rows::UNBOUNDED,
        }
    }

    /// Rows an explode of `column` (as `input` produces it) can make: one a list element (and
    /// one for an empty or null list), when the lists can be read before running: a literal,
    /// or a column of an in-memory frame. Columns exploded together have equal lengths, so one
    /// column bounds them all.
    fn exploded_rows(&self, input: Node, column: &PlSmallStr) -> Option<u128> {
        let mut node = input;
        let mut name = column.clone();
        loop {
            match self.ir(node) {
                IR::DataFrameScan { df, .. } => {
                    return exploded_len(df.column(&name).ok()?.as_materialized_series());
                }
                IR::Cache { input, .. }
                | IR::SimpleProjection { input, .. }
                | IR::Sort { input, .. }
                | IR::Filter { input, .. }
                | IR::Slice { input, .. }
                | IR::Distinct { input, .. } => node = *input,
                IR::Select {
                    input, expr: exprs, ..
                }
                | IR::HStack { input, exprs, .. } => {
                    let with_columns = matches!(self.ir(node), IR::HStack { .. });
                    let produced = exprs
                        .iter()
                        .find(|e| e.output_name_inner().get() == Some(&name));
                    match produced.map(|e| self.plan.expr_arena.get(e.node())) {
                        Some(AExpr::Column(source)) => name = source.clone(),
                        Some(AExpr::Literal(literal)) => {
                            // A literal of one row is repeated for every input row.
                            let rows = max(self.rows_of(*input).bound, Some(1))?;
                            return match literal {
                                LiteralValue::Series(series) if series.len() == 1 => {
                                    mul(Some(rows), exploded_len(series))
                                }
                                LiteralValue::Series(series) => exploded_len(series),
                                LiteralValue::Scalar(scalar) => match scalar.value() {
                                    AnyValue::List(list) => {
                                        mul(Some(rows), Some(u(list.len().max(1))))
                                    }
                                    _ => Some(rows),
                                },
                                _ => None,
                            };
                        }
                        Some(_) => return None,
                        None if with_columns => {}
                        None => return None,
                    }
                    if ProjectionShape::of(exprs, &self.plan.expr_arena).grows() {
                        return None;
                    }
                    node = *input;
                }
                _ => return None,
            }
        }
    }

    /// The rows a join produces.
    fn join_rows(&mut self, node: Node) -> PolarsResult<Rows> {
        let IR::Join {
            input_left,
            input_right,
            left_on,
            right_on,
            options,
            ..
        } = self.ir(node)
        else {
            return Ok(Rows::UNBOUNDED);
        };
        let (left_input, right_input) = (*input_left, *input_right);
        let left = self.rows_of(left_input);
        let right = self.rows_of(right_input);
        let cross = Rows {
            bound: mul(left.bound, right.bound),
            exact: left.exact && right.exact,
        };
        let how = options.args.how.clone();
        let nulls_equal = options.args.nulls_equal;
        let slice = options.args.slice;
        let fused_filter = options.options.is_some();
        let keys = plain_keys(left_on, right_on, &self.plan.expr_arena);
        let rows = match how {
            JoinType::Cross if fused_filter => cross.inexact(),
            JoinType::Cross => cross,
            JoinType::Semi | JoinType::Anti => left.inexact(),
            JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => match keys {
                Some((left_keys, right_keys)) if !left_keys.is_empty() => {
                    let outer = Outer::of(&how);
                    self.equi_join_rows(
                        [
                            (left_input, left, left_keys),
                            (right_input, right, right_keys),
                        ],
                        outer,
                        nulls_equal,
                    )?
                }
                _ => Outer::of(&how).without_keys(left, right),
            },
            // Inequality joins (IEJoin, range) and anything newer: every pair.
            _ => cross.inexact(),
        };
        Ok(match slice {
            Some((_, len)) => rows.limited(u(len)).inexact(),
            None => rows,
        })
    }

    /// An equi join: its inputs' rows multiplied when that is within the threshold (or in the
    /// first pass); otherwise refined by key counts, the smaller traced frame first, until the
    /// bound is within the threshold: by one side's largest key multiplicity, then exactly
    /// from both sides' counts.
    fn equi_join_rows(
        &mut self,
        sides: [(Node, Rows, Vec<PlSmallStr>); 2],
        outer: Outer,
        nulls_equal: bool,
    ) -> PolarsResult<Rows> {
        let [
            (left_node, left, left_keys),
            (right_node, right, right_keys),
        ] = sides;
        let cheap = outer.without_keys(left, right);
        if !self.counting || self.settled(cheap.bound) {
            return Ok(cheap);
        }
        let traces = [
            trace_to_frame(self, left_node, left_keys),
            trace_to_frame(self, right_node, right_keys),
        ];
        // A dimension table's unique keys often settle the bound without counting the fact.
        let mut order: Vec<usize> = (0..2).filter(|side| traces[*side].is_some()).collect();
        order.sort_by_key(|side| traces[*side].as_ref().map(|t| t.frame.height()));
        let mut counts: [Option<Arc<KeyCounts>>; 2] = [None, None];
        let mut bound = cheap.bound;
        for side in order {
            if let Some(trace) = &traces[side] {
                counts[side] = Some(self.key_counts(trace)?);
            }
            // The most rows one key matches on each counted side.
            let [m_left, m_right] = [0, 1].map(|s| match (&traces[s], &counts[s]) {
                (Some(trace), Some(counts)) if trace.unique => Some(counts.largest.min(1)),
                (_, Some(counts)) => Some(counts.largest),
                _ => None,
            });
            bound = min(
                bound,
                outer.keyed_bound(left.bound, right.bound, m_left, m_right),
            );
            if self.settled(bound) {
                return Ok(Rows::at_most(bound));
            }
        }
        if let ([Some(lt), Some(rt)], [Some(lc), Some(rc)]) = (&traces, &counts)
            && let Some(pairs) = matched_rows(lc, lt.unique, rc, rt.unique, nulls_equal)
        {
            return Ok(Rows {
                bound: Some(outer.rows(pairs)),
                exact: lt.exact && rt.exact,
            });
        }
        Ok(Rows::at_most(bound))
    }

    /// The rows per key of a traced side, counted once per frame and key columns.
    fn key_counts(&mut self, trace: &Trace) -> PolarsResult<Arc<KeyCounts>> {
        let frame = Arc::as_ptr(&trace.frame) as usize;
        if let Some((_, _, counts)) = self
            .counts
            .iter()
            .find(|(f, columns, _)| *f == frame && *columns == trace.columns)
        {
            return Ok(counts.clone());
        }
        let counts = Arc::new(KeyCounts::of(&trace.frame, &trace.columns)?);
        self.counts
            .push((frame, trace.columns.clone(), counts.clone()));
        Ok(counts)
    }
}

/// Which unmatched rows a join keeps besides its matched pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outer {
    Inner,
    Left,
    Right,
    Full,
}

impl Outer {
    fn of(how: &JoinType) -> Self {
        match how {
            JoinType::Left => Outer::Left,
            JoinType::Right => Outer::Right,
            JoinType::Full => Outer::Full,
            _ => Outer::Inner,
        }
    }

    /// Exact rows from exact matched, left-only and right-only counts.
    fn rows(self, pairs: MatchedRows) -> u128 {
        let MatchedRows {
            pairs,
            left_only,
            right_only,
        } = pairs;
        match self {
            Outer::Inner => pairs,
            Outer::Left => pairs.saturating_add(left_only),
            Outer::Right => pairs.saturating_add(right_only),
            Outer::Full => pairs.saturating_add(left_only).saturating_add(right_only),
        }
    }

    /// A bound from a bound on matched pairs: each side's unmatched rows are at most the side.
    fn with_unmatched(
        self,
        pairs: Option<u128>,
        left: Option<u128>,
        right: Option<u128>,
    ) -> Option<u128> {
        match self {
            Outer::Inner => pairs,
            Outer::Left => add(pairs, left),
            Outer::Right => add(pairs, right),
            Outer::Full => add(add(pairs, left), right),
        }
    }

    /// A bound from each side's rows and, where counted, the most rows one key matches on it:
    /// each row of one side meets at most that many rows of the other.
    fn keyed_bound(
        self,
        left: Option<u128>,
        right: Option<u128>,
        m_left: Option<u128>,
        m_right: Option<u128>,
    ) -> Option<u128> {
        let mut pairs = mul(left, right);
        if let Some(m) = m_right {
            pairs = min(pairs, mul(left, Some(m)));
        }
        if let Some(m) = m_left {
            pairs = min(pairs, mul(right, Some(m)));
        }
        let mut bound = self.with_unmatched(pairs, left, right);
        // A left row yields max(1, its matches) rows; a right row likewise.
        if self == Outer::Left
            && let Some(m) = m_right
        {
            bound = min(bound, mul(left, Some(m.max(1))));
        }
        if self == Outer::Right
            && let Some(m) = m_left
        {
            bound = min(bound, mul(right, Some(m.max(1))));
        }
        bound
    }

    fn without_keys(self, left: Rows, right: Rows) -> Rows {
        Rows::at_most(self.with_unmatched(mul(left.bound, right.bound), left.bound, right.bound))
    }
}
