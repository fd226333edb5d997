//! Selections: the rows of a kept frame that match a job's filter, computed once and reused.
//!
//! A dashboard asks a context's kept object the same filtered questions again and again
//! ("purchases", "registrations"), each over its own window. Filtering a week of 10M events
//! compares all 10M strings on every ask (20 ms on this project's 2-core machine) and then
//! gathers the few matching rows out of every column the job reads. A selection is that work
//! done once: the kept frame's rows matching one filter, holding the columns the job reads and
//! the time column. A later job with the same filter takes its window of the selection (a
//! slice: filtering keeps the rows' order, so a sorted time column stays sorted) and
//! aggregates only the matching rows.
//!
//! Only row-wise filters are selected ([`is_row_wise`]): whether a row matches depends on that
//! row alone, so filtering the whole frame and then cutting the window gives exactly the rows
//! that cutting and then filtering gives. A filter with an aggregate (`amount > avg(amount)`)
//! depends on which rows it sees, and jobs keep evaluating it on their own window.
//!
//! Memory: a selection is kept only when it holds at most a quarter of the frame's rows (a
//! filter that keeps most rows saves little), the selections of one frame take at most a
//! quarter of its size, and every selection is charged to the context's [`MemoryBudget`]. The
//! least recently used selection makes room for a new one; a kept object that needs room
//! drops the selections, which are a cache, before it is refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use polars::prelude::*;

use super::arrow_size;
use super::time_slice::mark_sorted_time_columns;

/// The bytes a context may keep in memory, shared by its named objects and their selections.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Self {
        MemoryBudget {
            limit,
            used: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Charges `bytes` while crediting `credit` (what the charge replaces), if the result fits
    /// the limit; otherwise charges nothing and returns how many bytes are free.
    pub fn try_replace(&self, credit: u64, bytes: u64) -> Result<(), u64> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let after = used.saturating_sub(credit).saturating_add(bytes);
                (after <= self.limit).then_some(after)
            })
            .map(drop)
            .map_err(|used| self.limit.saturating_sub(used.saturating_sub(credit)))
    }

    pub fn release(&self, bytes: u64) {
        // Saturating: a release never takes `used` below zero, whatever the order of events.
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }
}

/// Whether `filter` decides each row from that row alone: columns, scalar literals,
/// arithmetic, comparisons, boolean logic, casts, `CASE`, `IS [NOT] NULL` and `IN (list)`.
/// Anything else (aggregates, windows, sorts, functions not listed) is not.
pub fn is_row_wise(filter: &Expr) -> bool {
    match filter {
        Expr::Column(_) => true,
        Expr::Literal(value) => is_scalar_literal(value),
        Expr::Alias(inner, _) | Expr::Cast { expr: inner, .. } => is_row_wise(inner),
        Expr::BinaryExpr { left, right, .. } => is_row_wise(left) && is_row_wise(right),
        Expr::Ternary {
            predicate,
            truthy,
            falsy,
        } => is_row_wise(predicate) && is_row_wise(truthy) && is_row_wise(falsy),
        Expr::Function {
            input,
            function: FunctionExpr::Boolean(function),
        } => match function {
            BooleanFunction::IsNull | BooleanFunction::IsNotNull | BooleanFunction::Not => {
                input.iter().all(is_row_wise)
            }
            // The list is a constant; each row is looked up in it.
            BooleanFunction::IsIn { .. } => {
                matches!(input.as_slice(), [value, list] if is_row_wise(value) && is_constant(list))
            }
            _ => false,
        },
        _ => false,
    }
}

fn is_scalar_literal(value: &LiteralValue) -> bool {
    matches!(value, LiteralValue::Scalar(_) | LiteralValue::Dyn(_))
}

/// A value that does not depend on the rows: a literal, or one imploded or cast.
fn is_constant(expr: &Expr) -> bool {
    match expr {
        Expr::Literal(_) => true,
        Expr::Cast { expr: inner, .. } | Expr::Alias(inner, _) => is_constant(inner),
        Expr::Agg(AggExpr::Implode { input, .. }) => is_constant(input),
        _ => false,
    }
}

/// The columns `exprs` read, in first-use order without repeats; `None` when one of them
/// selects columns by pattern or type (it may read any column).
pub fn columns_read<'a>(exprs: impl IntoIterator<Item = &'a Expr>) -> Option<Vec<String>> {
    let mut columns: Vec<String> = Vec::new();
    for expr in exprs {
        for node in expr {
            match node {
                Expr::Column(name) if !columns.iter().any(|known| known == name.as_str()) => {
                    columns.push(name.to_string());
                }
                Expr::Selector(_) => return None,
                _ => {}
            }
        }
    }
    Some(columns)
}

/// One selection: the rows matching a filter, with the columns jobs asked of them so far.
#[derive(Debug)]
struct Entry {
    /// Sorted.
    columns: Vec<String>,
    frame: DataFrame,
    bytes: u64,
    last_used: u64,
}

#[derive(Debug, Default)]
struct State {
    /// By the filter's debug form (its expression tree, unambiguous).
    entries: HashMap<String, Entry>,
    bytes: u64,
    clock: u64,
}

/// The selections of one kept frame.
#[derive(Debug)]
pub struct Selections {
    budget: Arc<MemoryBudget>,
    /// At most this many bytes of selections for this frame.
    cap: u64,
    state: Mutex<State>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every critical section leaves the state valid; a panic elsewhere must not disable it.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Selections {
    /// Selections of a frame of `frame_bytes`, charged to `budget`.
    pub fn new(budget: Arc<MemoryBudget>, frame_bytes: u64) -> Self {
        Selections {
            budget,
            cap: frame_bytes / 4,
            state: Mutex::new(State::default()),
        }
    }

    /// The rows of `frame` matching `filter`, with `columns` (present in `frame`) and maybe
    /// more, in `frame`'s order: kept from an earlier call with the same filter, or computed
    /// now (and kept when selective and there is room). A filter keeps one selection: when a
    /// job reads a column it lacks, it is recomputed with the columns of both. `None` when
    /// `filter` is not row-wise or cannot run on `frame` (the caller filters as usual and
    /// reports the error).
    pub fn rows(&self, frame: &DataFrame, filter: &Expr, columns: &[String]) -> Option<DataFrame> {
        if !is_row_wise(filter) {
            return None;
        }
        if columns.iter().any(|name| frame.column(name).is_err()) {
            return None;
        }
        let key = format!("{filter:?}");
        let mut wanted = columns.to_vec();
        {
            let mut state = lock(&self.state);
            state.clock += 1;
            let now = state.clock;
            if let Some(entry) = state.entries.get_mut(&key) {
                if columns.iter().all(|name| entry.columns.contains(name)) {
                    entry.last_used = now;
                    return Some(entry.frame.clone());
                }
                wanted.extend(entry.columns.iter().cloned());
            }
        }
        wanted.sort();
        wanted.dedup();
        let selected = frame
            .clone()
            .lazy()
            .filter(filter.clone())
            .select(
                wanted
                    .iter()
                    .map(|name| col(name.as_str()))
                    .collect::<Vec<_>>(),
            )
            .collect()
            .ok()?;
        let selected = mark_sorted_time_columns(selected);
        if selected.height().saturating_mul(4) <= frame.height() {
            self.keep(key, wanted, &selected);
        }
        Some(selected)
    }

    /// Keeps `frame` as the selection of `filter` (replacing one with fewer columns) if it
    /// fits this frame's cap, evicting the least recently used, and the context's budget.
    fn keep(&self, filter: String, columns: Vec<String>, frame: &DataFrame) {
        let bytes = arrow_size(frame) as u64;
        if bytes > self.cap {
            return;
        }
        let mut state = lock(&self.state);
        match state.entries.get(&filter) {
            // Another job kept these columns or more meanwhile.
            Some(kept) if columns.iter().all(|name| kept.columns.contains(name)) => return,
            Some(_) => {
                if let Some(replaced) = state.entries.remove(&filter) {
                    state.bytes -= replaced.bytes;
                    self.budget.release(replaced.bytes);
                }
            }
            None => {}
        }
        while state.bytes + bytes > self.cap {
            let Some(oldest) = state
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            if let Some(evicted) = state.entries.remove(&oldest) {
                state.bytes -= evicted.bytes;
                self.budget.release(evicted.bytes);
            }
        }
        if self.budget.try_replace(0, bytes).is_err() {
            return;
        }
        state.clock += 1;
        let last_used = state.clock;
        state.bytes += bytes;
        state.entries.insert(
            filter,
            Entry {
                columns,
                frame: frame.clone(),
                bytes,
                last_used,
            },
        );
    }

    /// Drops every selection, returning their bytes to the budget.
    pub fn clear(&self) {
        let mut state = lock(&self.state);
        state.entries.clear();
        self.budget.release(std::mem::take(&mut state.bytes));
    }

    /// How many selections are kept, and their bytes.
    pub fn usage(&self) -> (usize, u64) {
        let state = lock(&self.state);
        (state.entries.len(), state.bytes)
    }
}

impl Drop for Selections {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use polars::sql::sql_expr;

    use super::*;

    /// `n` events in time order: every 20th a purchase, the rest views; ts one second apart.
    fn events(n: i64) -> DataFrame {
        let ts = Column::new("ts".into(), (0..n).map(|i| i * 1_000).collect::<Vec<_>>())
            .cast(&DataType::Datetime(
                TimeUnit::Milliseconds,
                Some(TimeZone::UTC),
            ))
            .unwrap();
        DataFrame::new_infer_height(vec![
            ts,
            Column::new(
                "event".into(),
                (0..n)
                    .map(|i| if i % 20 == 0 { "purchase" } else { "view" })
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "amount".into(),
                (0..n).map(|i| i as f64).collect::<Vec<_>>(),
            ),
            Column::new(
                "city".into(),
                (0..n)
                    .map(|i| ["Paris", "Rome"][(i % 2) as usize])
                    .collect::<Vec<_>>(),
            ),
        ])
        .unwrap()
    }

    fn filter(sql: &str) -> Expr {
        sql_expr(sql).unwrap()
    }

    fn names(columns: &[&str]) -> Vec<String> {
        columns.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn row_wise_filters_are_told_from_the_others() {
        for sql in [
            "event = 'purchase'",
            "event = 'purchase' AND amount > 10",
            "NOT (event = 'view') OR amount IS NULL",
            "event IN ('purchase', 'register')",
            "amount * 2 + 1 >= 7",
            "city IS NOT NULL",
            "CASE WHEN amount > 5 THEN true ELSE false END",
        ] {
            assert!(is_row_wise(&filter(sql)), "{sql}: {:?}", filter(sql));
        }
        for sql in [
            "amount > avg(amount)",
            "amount = max(amount)",
            "amount - min(amount) OVER (PARTITION BY city) > 0",
        ] {
            assert!(!is_row_wise(&filter(sql)), "{sql}: {:?}", filter(sql));
        }
    }

    #[test]
    fn columns_read_lists_each_column_once() {
        let exprs = [filter("sum(amount)"), filter("city"), filter("amount + 1")];
        assert_eq!(columns_read(&exprs), Some(names(&["amount", "city"])));
        assert_eq!(columns_read([&all().as_expr()]), None);
    }

    #[test]
    fn a_selection_is_kept_and_reused_and_matches_a_filter() {
        let frame = events(1_000);
        let budget = Arc::new(MemoryBudget::new(1 << 30));
        let selections = Selections::new(budget.clone(), arrow_size(&frame) as u64);
        let purchases = filter("event = 'purchase'");
        let columns = names(&["amount", "ts"]);
        let first = selections.rows(&frame, &purchases, &columns).unwrap();
        let expected = frame
            .clone()
            .lazy()
            .filter(purchases.clone())
            .select([col("amount"), col("ts")])
            .collect()
            .unwrap();
        assert!(first.equals(&expected));
        assert_eq!(first.height(), 50);
        // The time column stays sorted, so a window of the selection is a slice.
        assert_eq!(
            first.column("ts").unwrap().is_sorted_flag(),
            polars::series::IsSorted::Ascending
        );
        let (count, bytes) = selections.usage();
        assert_eq!((count, bytes), (1, arrow_size(&first) as u64));
        assert_eq!(budget.used(), bytes);
        // The same filter and columns, in another order, or fewer: the kept selection.
        let again = selections
            .rows(&frame, &purchases, &names(&["ts", "amount", "ts"]))
            .unwrap();
        assert!(again.equals(&first));
        assert!(
            selections
                .rows(&frame, &purchases, &names(&["ts"]))
                .unwrap()
                .equals(&first)
        );
        assert_eq!(selections.usage().0, 1);
        // A column it lacks: one selection with the columns of both replaces it.
        let wider = selections
            .rows(&frame, &purchases, &names(&["city", "ts"]))
            .unwrap();
        assert_eq!(wider.get_column_names(), ["amount", "city", "ts"]);
        assert_eq!(wider.height(), 50);
        let (count, bytes) = selections.usage();
        assert_eq!((count, bytes), (1, arrow_size(&wider) as u64));
        assert_eq!(budget.used(), bytes);
        drop(selections);
        assert_eq!(
            budget.used(),
            0,
            "dropping the selections returns their bytes"
        );
    }

    #[test]
    fn unselective_non_row_wise_and_failing_filters_are_not_kept() {
        let frame = events(1_000);
        let budget = Arc::new(MemoryBudget::new(1 << 30));
        let selections = Selections::new(budget.clone(), arrow_size(&frame) as u64);
        let views = selections
            .rows(&frame, &filter("event = 'view'"), &names(&["amount"]))
            .unwrap();
        assert_eq!(
            views.height(),
            950,
            "answered, but 95% of the rows are not kept"
        );
        assert!(
            selections
                .rows(&frame, &filter("amount > avg(amount)"), &names(&["amount"]))
                .is_none()
        );
        assert!(
            selections
                .rows(&frame, &filter("missing = 1"), &names(&["amount"]))
                .is_none()
        );
        assert!(
            selections
                .rows(&frame, &filter("event = 'view'"), &names(&["nope"]))
                .is_none()
        );
        assert_eq!(selections.usage(), (0, 0));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn the_least_recently_used_selection_makes_room_and_the_budget_is_respected() {
        let frame = events(10_000);
        let frame_bytes = arrow_size(&frame) as u64;
        let budget = Arc::new(MemoryBudget::new(1 << 30));
        let selections = Selections::new(budget.clone(), frame_bytes);
        let columns = names(&["amount", "city", "event", "ts"]);
        // Each selection is about a tenth of the frame; the cap is a quarter.
        let tenth = |k: i64| {
            filter(&format!(
                "amount >= {} AND amount < {}",
                k * 1000,
                (k + 1) * 1000
            ))
        };
        for k in 0..2 {
            selections.rows(&frame, &tenth(k), &columns).unwrap();
        }
        assert_eq!(selections.usage().0, 2);
        // Touch the first, then add a third: the second (least recently used) goes.
        selections.rows(&frame, &tenth(0), &columns).unwrap();
        selections.rows(&frame, &tenth(2), &columns).unwrap();
        let (count, bytes) = selections.usage();
        assert_eq!(count, 2);
        assert!(bytes <= frame_bytes / 4);
        assert_eq!(budget.used(), bytes);

        // A budget with no room keeps nothing, and the answer is still right.
        let full = Arc::new(MemoryBudget::new(0));
        let starved = Selections::new(full.clone(), frame_bytes);
        assert_eq!(
            starved.rows(&frame, &tenth(1), &columns).unwrap().height(),
            1000
        );
        assert_eq!(starved.usage(), (0, 0));
        assert_eq!(full.used(), 0);
    }

    #[test]
    fn the_budget_charges_credits_and_refuses() {
        let budget = MemoryBudget::new(100);
        budget.try_replace(0, 60).unwrap();
        assert_eq!(budget.try_replace(0, 50), Err(40));
        budget.try_replace(60, 90).unwrap();
        assert_eq!(budget.used(), 90);
        budget.release(200);
        assert_eq!(budget.used(), 0);
    }
}
