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

use std::sync::Arc;

use polars::prelude::*;
use polars_plan::dsl::{DslPlan, ScanSources};
use polars_plan::plans::expr_ir::ExprIR;
use polars_plan::plans::{AExpr, ArenaExprIter, FunctionIR, IR, IRPlan, LiteralValue};
use polars_plan::prelude::{JoinTypeOptionsIR, Node};

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

/// The key columns of an equi join when every key on both sides is a plain column.
fn plain_keys(
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
struct Trace {
    frame: Arc<DataFrame>,
    /// The key columns, as the frame names them.
    columns: Vec<PlSmallStr>,
    /// Whether the side holds exactly the frame's rows (or, when `unique`, exactly one row
    /// per key the frame holds): no filter, slice or distinct on the way.
    exact: bool,
    /// Whether the side holds at most one row per key (a group-by on exactly the keys, a
    /// distinct on a subset of them).
    unique: bool,
}

/// Follows a join side's key `columns` down through nodes whose rows are (a subset of, or one
/// per key of) their input's, to an in-memory frame.
fn trace_to_frame(walk: &Walk<'_>, mut node: Node, mut columns: Vec<PlSmallStr>) -> Option<Trace> {
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
struct KeyCounts {
    /// One row per distinct key: the key columns `k0`, `k1`, … and the count `n`.
    frame: DataFrame,
    /// The largest count.
    largest: u128,
}

impl KeyCounts {
    fn of(frame: &DataFrame, columns: &[PlSmallStr]) -> PolarsResult<Self> {
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
struct MatchedRows {
    pairs: u128,
    left_only: u128,
    right_only: u128,
}

/// Σₖ left(k) · right(k), and the rows of keys found on one side only, from the key counts
/// joined on their keys (a join of distinct keys: at most one row per key). A side marked
/// `unique` counts one row per key. `None` when the counts cannot be joined (key types polars
/// will not compare), so the caller falls back to a looser bound.
fn matched_rows(
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
fn exploded_len(series: &Series) -> Option<u128> {
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
struct ProjectionShape {
    /// An expression can make more rows than its input by an amount not known here (an
    /// explode, a range, a function that is neither length-preserving nor an aggregation).
    unbounded: bool,
    /// The longest literal series (1 when there is none).
    literal_rows: u128,
    /// Every expression maps each input row to one output row.
    elementwise: bool,
    /// Some expression reads a column (a projection of scalars alone has one row).
    reads_column: bool,
}

impl ProjectionShape {
    fn of(exprs: &[ExprIR], arena: &polars_plan::prelude::Arena<AExpr>) -> Self {
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
    fn grows(&self) -> bool {
        self.unbounded || self.literal_rows > 1
    }
}

/// The tables a SQL context registered, recognised in a plan by the frames and files they read.
#[derive(Debug, Default)]
struct TableNames {
    /// In-memory frames by address.
    frames: Vec<(usize, String)>,
    /// Scanned files by path.
    paths: Vec<(String, String)>,
}

impl TableNames {
    fn of(tables: &[(&str, &LazyFrame)]) -> Self {
        let mut names = TableNames::default();
        for (name, frame) in tables {
            for node in frame.logical_plan.into_iter().take(DSL_NODES_READ) {
                match node {
                    DslPlan::DataFrameScan { df, .. } => names
                        .frames
                        .push((Arc::as_ptr(df) as usize, (*name).to_owned())),
                    DslPlan::Scan {
                        sources: ScanSources::Paths(paths),
                        ..
                    } => {
                        for path in paths.iter() {
                            names.paths.push((path.to_string(), (*name).to_owned()));
                        }
                    }
                    _ => {}
                }
            }
        }
        names
    }

    /// How a leaf of the plan is named in a message.
    fn leaf(&self, ir: &IR) -> Option<String> {
        match ir {
            IR::DataFrameScan { df, .. } => {
                let address = Arc::as_ptr(df) as usize;
                Some(match self.frames.iter().find(|(a, _)| *a == address) {
                    Some((_, name)) => name.clone(),
                    None if df.width() == 0 => "values".to_owned(),
                    None => format!("a table of ({})", excerpt_names(df.get_column_names())),
                })
            }
            IR::Scan { sources, .. } => {
                let first = sources.first_path().map(|p| p.to_string());
                Some(
                    match first
                        .as_ref()
                        .and_then(|p| self.paths.iter().find(|(path, _)| path == p))
                    {
                        Some((_, name)) => name.clone(),
                        None => format!("`{}`", first.unwrap_or_else(|| "a scan".to_owned())),
                    },
                )
            }
            _ => None,
        }
    }
}

fn excerpt_names<'a>(names: impl IntoIterator<Item = &'a PlSmallStr>) -> String {
    const SHOWN: usize = 4;
    let names: Vec<&str> = names.into_iter().map(PlSmallStr::as_str).collect();
    let mut text = names
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(", …");
    }
    text
}

/// "inner join of events and users on user_id = id": the join's kind, the tables each side
/// reads, its keys.
fn describe_join(plan: &IRPlan, node: Node, names: &TableNames) -> String {
    let IR::Join {
        input_left,
        input_right,
        left_on,
        right_on,
        options,
        ..
    } = plan.lp_arena.get(node)
    else {
        return "join".to_owned();
    };
    let kind = match (&options.args.how, &options.options) {
        (JoinType::Cross, None) => "cross join",
        (JoinType::Cross, Some(JoinTypeOptionsIR::CrossAndFilter { .. })) => "filtered cross join",
        (JoinType::Inner, _) => "inner join",
        (JoinType::Left, _) => "left join",
        (JoinType::Right, _) => "right join",
        (JoinType::Full, _) => "full join",
        (JoinType::Semi, _) => "semi join",
        (JoinType::Anti, _) => "anti join",
        (JoinType::IEJoin | JoinType::Range, _) => "inequality join",
        _ => "join",
    };
    let mut text = format!(
        "{kind} of {} and {}",
        describe_side(plan, *input_left, names),
        describe_side(plan, *input_right, names)
    );
    let key = |e: &ExprIR| match plan.expr_arena.get(e.node()) {
        AExpr::Column(name) => name.to_string(),
        _ => e.display(&plan.expr_arena).to_string(),
    };
    let pairs: Vec<String> = left_on
        .iter()
        .zip(right_on)
        .map(|(l, r)| format!("{} = {}", key(l), key(r)))
        .collect();
    if !pairs.is_empty() && !matches!(options.args.how, JoinType::IEJoin | JoinType::Range) {
        text.push_str(" on ");
        text.push_str(&pairs.join(" and "));
    }
    text
}

/// The tables one side of a join reads, first found first, each once.
fn describe_side(plan: &IRPlan, side: Node, names: &TableNames) -> String {
    const SHOWN: usize = 3;
    let mut labels: Vec<String> = Vec::new();
    let mut seen = vec![false; plan.lp_arena.len()];
    let mut stack = vec![side];
    while let Some(node) = stack.pop() {
        if seen.get(node.0).copied().unwrap_or(true) {
            continue;
        }
        seen[node.0] = true;
        let ir = plan.lp_arena.get(node);
        if let Some(label) = names.leaf(ir)
            && !labels.contains(&label)
        {
            labels.push(label);
        }
        // Reversed, so the left-most input is described first.
        let inputs: Vec<Node> = ir.inputs().collect();
        stack.extend(inputs.into_iter().rev());
    }
    match labels.len() {
        0 => "a derived table".to_owned(),
        n if n <= SHOWN => labels.join(", "),
        n => format!("{} and {} more", labels[..SHOWN].join(", "), n - SHOWN),
    }
}

#[cfg(test)]
mod tests {
    use polars::sql::SQLContext;

    use super::*;
    use crate::sql_guard::DEFAULT_MAX_JOIN_ROWS;

    /// `query` planned over `tables`, and the tables as registered (for their names).
    fn plan<'t>(
        query: &str,
        tables: &[(&'t str, &DataFrame)],
    ) -> (LazyFrame, Vec<(&'t str, LazyFrame)>) {
        let registered: Vec<(&str, LazyFrame)> = tables
            .iter()
            .map(|(name, frame)| (*name, (*frame).clone().lazy()))
            .collect();
        let mut context = SQLContext::new();
        for (name, frame) in &registered {
            context.register(name, frame.clone());
        }
        (context.execute(query).unwrap(), registered)
    }

    fn estimate(query: &str, tables: &[(&str, &DataFrame)]) -> Option<JoinEstimate> {
        let (lf, registered) = plan(query, tables);
        let named: Vec<(&str, &LazyFrame)> = registered.iter().map(|(n, f)| (*n, f)).collect();
        largest_join_named(&lf, &named).unwrap()
    }

    fn bound(query: &str, tables: &[(&str, &DataFrame)]) -> (Option<u128>, bool) {
        let estimate = estimate(query, tables).expect("a join");
        (estimate.rows, estimate.exact)
    }

    /// The rows the whole plan produces, as the walk bounds them (joins or not).
    fn plan_rows(query: &str, tables: &[(&str, &DataFrame)]) -> Rows {
        let plan = plan(query, tables).0.to_alp_optimized().unwrap();
        let mut walk = Walk {
            plan: &plan,
            rows: vec![None; plan.lp_arena.len()],
            counts: Vec::new(),
            below_join: Vec::new(),
            threshold: None,
            counting: false,
        };
        walk.run().unwrap();
        walk.rows_of(plan.lp_top)
    }

    fn height(query: &str, tables: &[(&str, &DataFrame)]) -> u128 {
        u(plan(query, tables).0.collect().unwrap().height())
    }

    fn cross(ways: usize) -> String {
        let relations: Vec<String> = (0..ways).map(|i| format!("t AS t{i}")).collect();
        format!("SELECT * FROM {}", relations.join(", "))
    }

    /// A frame of `rows` rows whose `k` is 0 for the first `zeros` rows and 1 after, and whose
    /// `v` counts the rows.
    fn two_keys(rows: i64, zeros: i64) -> DataFrame {
        let k: Vec<i64> = (0..rows).map(|i| i64::from(i >= zeros)).collect();
        let v: Vec<i64> = (0..rows).collect();
        df!("k" => k, "v" => v).unwrap()
    }

    #[test]
    fn cross_joins_multiply_and_five_ways_over_36_rows_is_refused() {
        let t = df!("x" => (0..36i64).collect::<Vec<_>>()).unwrap();
        let four = estimate(&cross(4), &[("t", &t)]).unwrap();
        assert_eq!((four.rows, four.exact), (Some(1_679_616), true));
        assert_eq!(four.refusal(DEFAULT_MAX_JOIN_ROWS), None);
        let five = estimate(&cross(5), &[("t", &t)]).unwrap();
        assert_eq!((five.rows, five.exact), (Some(60_466_176), true));
        let message = five.refusal(DEFAULT_MAX_JOIN_ROWS).unwrap();
        assert_eq!(
            message,
            "the query's cross join of t and t can produce exactly 60466176 rows; the limit is \
             50000000 (limits.max_join_rows)"
        );
        // The same over a 36-row aggregate of a bigger table: its groups are counted.
        let big = df!("k" => (0..36_000i64).map(|i| i % 36).collect::<Vec<_>>()).unwrap();
        let query = "WITH r AS (SELECT k, count(*) AS n FROM big GROUP BY k) \
                     SELECT * FROM r a, r b, r c, r d, r e";
        assert_eq!(bound(query, &[("big", &big)]), (Some(60_466_176), true));
    }

    #[test]
    fn a_self_join_on_two_values_is_counted_exactly_on_both_sides_of_the_limit() {
        let query = "SELECT * FROM t a JOIN t b ON a.k = b.k";
        // 5,000² + 5,000²: exactly the limit, which passes.
        let at_limit = two_keys(10_000, 5_000);
        let estimate_at = estimate(query, &[("t", &at_limit)]).unwrap();
        assert_eq!(
            (estimate_at.rows, estimate_at.exact),
            (Some(50_000_000), true)
        );
        assert_eq!(estimate_at.refusal(DEFAULT_MAX_JOIN_ROWS), None);
        // 5,001² + 4,999² = 50,000,002: refused.
        let over = two_keys(10_000, 5_001);
        let message = estimate(query, &[("t", &over)])
            .unwrap()
            .refusal(DEFAULT_MAX_JOIN_ROWS)
            .unwrap();
        assert_eq!(
            message,
            "the query's inner join of t and t on k = k can produce exactly 50000002 rows; the \
             limit is 50000000 (limits.max_join_rows)"
        );
        // Checked against a real join of a smaller frame, for every join type.
        let small = two_keys(1_000, 300);
        let dim = df!("k" => [1i64, 7], "name" => ["one", "seven"]).unwrap();
        let tables = [("t", &small), ("d", &dim)];
        for how in ["INNER", "LEFT", "RIGHT", "FULL"] {
            let query = format!("SELECT * FROM t {how} JOIN d ON t.k = d.k");
            assert_eq!(
                bound(&query, &tables),
                (Some(height(&query, &tables)), true),
                "{how}"
            );
        }
    }

    #[test]
    fn a_fact_joined_to_a_dimension_is_bounded_by_the_fact() {
        let fact = df!(
            "k" => (0..100_000i64).map(|i| i % 40).collect::<Vec<_>>(),
            "amount" => (0..100_000i64).collect::<Vec<_>>(),
        )
        .unwrap();
        let dim = df!(
            "k" => (0..40i64).collect::<Vec<_>>(),
            "name" => (0..40).map(|i| format!("n{i}")).collect::<Vec<_>>(),
        )
        .unwrap();
        let tables = [("fact", &fact), ("dim", &dim)];
        let query = "SELECT f.amount, d.name FROM fact f JOIN dim d ON f.k = d.k";
        let estimate = estimate(query, &tables).unwrap();
        assert_eq!((estimate.rows, estimate.exact), (Some(100_000), true));
        assert_eq!(estimate.describe, "inner join of fact and dim on k = k");
        assert_eq!(height(query, &tables), 100_000);
        // A fact side that cannot be traced to a frame (a union) is bounded by its own rows:
        // each of them matches at most one dimension row.
        let union = "SELECT u.amount, d.name FROM \
                     (SELECT k, amount FROM fact UNION ALL SELECT k, amount FROM fact) u \
                     JOIN dim d ON u.k = d.k";
        assert_eq!(bound(union, &tables), (Some(200_000), false));
    }

    #[test]
    fn joins_of_subquery_results_trace_through_group_bys_and_filters() {
        let fact = df!(
            "k" => (0..20_000i64).map(|i| i % 40).collect::<Vec<_>>(),
            "g" => (0..20_000i64).map(|i| i % 7).collect::<Vec<_>>(),
            "v" => (0..20_000i64).collect::<Vec<_>>(),
        )
        .unwrap();
        let tables = [("f", &fact)];
        // One row per key on the left; the filter on the right makes the count a bound.
        let query = "SELECT * FROM (SELECT k, count(*) AS n FROM f GROUP BY k) a \
                     JOIN (SELECT k, v FROM f WHERE v > 15000) b ON a.k = b.k";
        let (rows, exact) = bound(query, &tables);
        assert_eq!((rows, exact), (Some(20_000), false));
        assert!(rows.unwrap() >= height(query, &tables));
        // Two aggregates crossed: their groups, not the rows they read.
        let query = "SELECT * FROM (SELECT k, count(*) AS n FROM f GROUP BY k) a \
                     CROSS JOIN (SELECT g, sum(v) AS s FROM f GROUP BY g) b";
        assert_eq!(bound(query, &tables), (Some(280), true));
        assert_eq!(height(query, &tables), 280);
    }

    #[test]
    fn against_a_limit_bounds_are_only_as_tight_as_the_decision_needs() {
        let within = |query: &str, tables: &[(&str, &DataFrame)], limit: u64| {
            let (lf, _) = plan(query, tables);
            let estimate = largest_join_within(&lf, &[], limit).unwrap().unwrap();
            (estimate.rows, estimate.exact)
        };
        let fact = df!("k" => (0..100_000i64).map(|i| i % 40).collect::<Vec<_>>()).unwrap();
        let dim = df!("k" => (0..40i64).collect::<Vec<_>>()).unwrap();
        let tables = [("fact", &fact), ("dim", &dim)];
        let query = "SELECT * FROM fact f JOIN dim d ON f.k = d.k";
        // 100,000 × 40 is within the default limit: nothing is counted.
        assert_eq!(
            within(query, &tables, DEFAULT_MAX_JOIN_ROWS),
            (Some(4_000_000), false)
        );
        // Under a lower limit the dimension's unique keys settle it.
        assert_eq!(within(query, &tables, 1_000_000), (Some(100_000), false));
        // At the limit, one side's largest key (5,000 rows) settles the self-join; just over,
        // both sides are counted and the exact answer refuses it.
        let self_join = "SELECT * FROM t a JOIN t b ON a.k = b.k";
        let at = two_keys(10_000, 5_000);
        assert_eq!(
            within(self_join, &[("t", &at)], DEFAULT_MAX_JOIN_ROWS),
            (Some(50_000_000), false)
        );
        let over = two_keys(10_000, 5_001);
        assert_eq!(
            within(self_join, &[("t", &over)], DEFAULT_MAX_JOIN_ROWS),
            (Some(50_000_002), true)
        );
    }

    #[test]
    fn a_filter_above_a_join_leaves_the_unfiltered_count_as_a_bound() {
        let t = two_keys(1_000, 500);
        let tables = [("t", &t)];
        let query = "SELECT * FROM t a JOIN t b ON a.k = b.k WHERE a.v < 10";
        let (rows, exact) = bound(query, &tables);
        assert_eq!((rows, exact), (Some(500_000), false));
        assert_eq!(height(query, &tables), 5_000);
    }

    #[test]
    fn inequality_joins_are_bounded_by_every_pair() {
        let t = two_keys(100, 50);
        let tables = [("t", &t)];
        for query in [
            "SELECT * FROM t a JOIN t b ON a.v < b.v",
            "SELECT * FROM t a JOIN t b ON a.k = b.k AND a.v < b.v",
        ] {
            let (rows, _) = bound(query, &tables);
            assert!(rows.unwrap() >= height(query, &tables), "{query}");
            assert!(rows.unwrap() <= 10_000, "{query}");
        }
        assert_eq!(
            bound("SELECT * FROM t a JOIN t b ON a.v < b.v", &tables),
            (Some(10_000), false)
        );
    }

    #[test]
    fn plans_without_joins_are_not_bounded_and_bound_their_rows() {
        let t = df!("k" => [1i64, 2, 1], "v" => [1i64, 2, 3]).unwrap();
        let tables = [("t", &t)];
        for query in [
            "SELECT 1",
            "SELECT * FROM t",
            "SELECT k, count(*) AS n FROM t GROUP BY k",
            "SELECT * FROM t WHERE v > 1",
            "SELECT * FROM t UNION ALL SELECT * FROM t",
            "SELECT UNNEST([1, 2, 3]) AS x",
            "SELECT * FROM t WHERE k IN (SELECT k FROM t WHERE v > 2)",
        ] {
            assert_eq!(estimate(query, &tables), None, "{query}");
            let rows = plan_rows(query, &tables);
            assert!(rows.bound.unwrap() >= height(query, &tables), "{query}");
        }
        assert_eq!(plan_rows("SELECT 1", &tables).bound, Some(1));
        assert_eq!(
            plan_rows("SELECT * FROM t UNION ALL SELECT * FROM t", &tables),
            Rows::exact(6)
        );
        assert_eq!(
            plan_rows("SELECT UNNEST([1, 2, 3]) AS x", &tables).bound,
            Some(3)
        );
    }

    #[test]
    fn explodes_are_bounded_when_their_lists_are_known_before_running() {
        let t = df!(
            "k" => [1i64, 2, 3],
            "s" => ["a,b", "c", "d,e,f"],
        )
        .unwrap();
        let lists = df!("l" => [
            Series::new("".into(), [1i64, 2]),
            Series::new("".into(), [3i64]),
            Series::new("".into(), Vec::<i64>::new()),
        ])
        .unwrap();
        let tables = [("t", &t), ("lists", &lists)];
        // A literal array: three rows.
        let literal = "SELECT * FROM t AS a CROSS JOIN UNNEST([1, 2, 3]) AS u(x)";
        assert_eq!(bound(literal, &tables), (Some(9), true));
        assert_eq!(height(literal, &tables), 9);
        // A list column of a table: one row per element, one for the empty list.
        let column = "SELECT * FROM (SELECT UNNEST(l) AS x FROM lists) e CROSS JOIN t";
        assert_eq!(bound(column, &tables).0, Some(12));
        assert_eq!(height(column, &tables), 12);
        // Lists computed while running: no bound, so the join is refused.
        let computed = "SELECT a.k, x.w FROM t a CROSS JOIN \
                        (SELECT UNNEST(STRING_TO_ARRAY(s, ',')) AS w FROM t) x";
        let estimate = estimate(computed, &tables).unwrap();
        assert_eq!(estimate.rows, None);
        let message = estimate.refusal(DEFAULT_MAX_JOIN_ROWS).unwrap();
        assert!(
            message.contains("cannot be known before running"),
            "{message}"
        );
        assert_eq!(estimate.refusal(u64::MAX), None);
    }

    #[test]
    fn bounds_saturate_and_zero_rows_stay_zero() {
        assert_eq!(mul(Some(u128::MAX), Some(2)), Some(u128::MAX));
        assert_eq!(mul(Some(0), None), Some(0));
        assert_eq!(mul(Some(3), None), None);
        assert_eq!(add(Some(u128::MAX), Some(1)), Some(u128::MAX));
        assert_eq!(min(None, Some(4)), Some(4));
        assert_eq!(max(None, Some(4)), None);
        let huge = JoinEstimate {
            rows: Some(u128::MAX),
            exact: false,
            describe: "cross join of t and t".to_owned(),
        };
        assert!(huge.refusal(u64::MAX - 1).is_some());
        assert_eq!(huge.refusal(u64::MAX), None);
    }
}
