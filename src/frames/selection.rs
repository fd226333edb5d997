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

/// The namespace of the categories [`encode_repeated_strings`] makes, so that only those are
/// turned back into strings ([`decode_strings`]).
const CATEGORIES_NAMESPACE: &str = "floe.selection";

/// At most this many distinct values make a string column repeated enough to encode.
const MAX_ENCODED_VALUES: usize = 1024;

/// `frame` with its string columns of few distinct values (at most [`MAX_ENCODED_VALUES`],
/// each used 8 times on average) dictionary-encoded as polars categoricals: a group-by on one
/// hashes small integers instead of strings (half the time of a top 10 over 500,000 rows
/// here), and it takes 4 bytes a row instead of a 16-byte view. Categoricals sort by their
/// strings, so group-by keys sort as before; [`decode_strings`] turns them back into strings.
fn encode_repeated_strings(mut frame: DataFrame) -> DataFrame {
    let rows = frame.height();
    let encoded: Vec<Column> = frame
        .columns()
        .iter()
        .filter(|column| column.dtype() == &DataType::String)
        .filter_map(|column| {
            let distinct = column.n_unique().ok()?;
            if distinct > MAX_ENCODED_VALUES || distinct.saturating_mul(8) > rows {
                return None;
            }
            // 32-bit codes: polars is built without its 8- and 16-bit integer types.
            let categories =
                Categories::random(CATEGORIES_NAMESPACE.into(), CategoricalPhysical::U32);
            column.cast(&DataType::from_categories(categories)).ok()
        })
        .collect();
    for column in encoded {
        // Same name, same length: replacing the column cannot fail.
        let _ = frame.with_column(column);
    }
    frame
}

/// `frame` with the columns [`encode_repeated_strings`] encoded (and what a job derived from
/// them, such as group-by keys) turned back into strings; other columns as they are.
pub fn decode_strings(mut frame: DataFrame) -> PolarsResult<DataFrame> {
    let decoded: Vec<Column> = frame
        .columns()
        .iter()
        .filter(|column| is_encoded(column.dtype()))
        .map(|column| column.cast(&DataType::String))
        .collect::<PolarsResult<_>>()?;
    for column in decoded {
        frame.with_column(column)?;
    }
    Ok(frame)
}

fn is_encoded(dtype: &DataType) -> bool {
    matches!(dtype, DataType::Categorical(categories, _)
        if categories.namespace().as_str() == CATEGORIES_NAMESPACE)
}

/// `rows` with the encoded columns not in `keys` turned back into strings, lazily: a job
/// groups by its keys as integers, and sees every other column as it was.
pub fn decode_all_but(rows: LazyFrame, schema: &Schema, keys: &[String]) -> LazyFrame {
    let decoded: Vec<Expr> = schema
        .iter()
        .filter(|(name, dtype)| is_encoded(dtype) && !keys.iter().any(|key| key == name.as_str()))
        .map(|(name, _)| col(name.clone()).cast(DataType::String))
        .collect();
    if decoded.is_empty() {
        rows
    } else {
        rows.with_columns(decoded)
    }
}

/// One selection: the rows matching a filter, with the columns jobs asked of them so far.
#[derive(Debug)]
struct Entry {
    filter: Expr,
    /// Sorted.
    columns: Vec<String>,
    frame: DataFrame,
    bytes: u64,
    last_used: u64,
}

#[derive(Debug, Default)]
struct State {
    /// One per filter, told apart by comparing expression trees. A few per frame (the cap
    /// bounds them), so a scan finds one faster than hashing a tree would.
    entries: Vec<Entry>,
    /// Filters found not worth keeping (too many rows, too many bytes, no room in the
    /// budget), the most recent last: jobs filter their own rows for these, rather than
    /// every one of them filtering the whole frame again.
    refused: Vec<Expr>,
    bytes: u64,
    clock: u64,
}

/// How many refused filters a frame remembers.
const REFUSED_FILTERS: usize = 32;

impl State {
    fn position(&self, filter: &Expr) -> Option<usize> {
        self.entries
            .iter()
            .position(|entry| entry.filter == *filter)
    }

    fn refuse(&mut self, filter: &Expr) {
        if self.refused.len() == REFUSED_FILTERS {
            drop(self.refused.remove(0));
        }
        self.refused.push(filter.clone());
    }

    /// Removes entry `index`, returning its bytes to `budget`.
    fn remove(&mut self, index: usize, budget: &MemoryBudget) {
        let removed = self.entries.swap_remove(index);
        self.bytes -= removed.bytes;
        budget.release(removed.bytes);
    }
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
        let mut wanted = columns.to_vec();
        {
            let mut state = lock(&self.state);
            if state.refused.contains(filter) {
                return None;
            }
            state.clock += 1;
            let now = state.clock;
            if let Some(index) = state.position(filter) {
                let entry = &mut state.entries[index];
                if columns.iter().all(|name| entry.columns.contains(name)) {
                    entry.last_used = now;
                    return Some(entry.frame.clone());
                }
                wanted.extend(entry.columns.iter().cloned());
            }
        }
        wanted.sort();
        wanted.dedup();
        let plan = frame.clone().lazy().filter(filter.clone()).select(
            wanted
                .iter()
                .map(|name| col(name.as_str()))
                .collect::<Vec<_>>(),
        );
        let mut selected = super::cancel::collect(plan).ok()?;
        // One chunk: the kept frame is often one chunk per source file, and the filter keeps
        // those few-thousand-row chunks, which slow every later group-by.
        selected.rechunk_mut_par();
        let selected = encode_repeated_strings(selected);
        let selected = mark_sorted_time_columns(selected);
        self.keep(filter, wanted, &selected, frame.height());
        Some(selected)
    }

    /// Keeps `selected` as the selection of `filter` (replacing one with fewer columns) if it
    /// holds at most a quarter of the `rows` it was selected from, fits this frame's cap
    /// (evicting the least recently used) and the context's budget; otherwise remembers the
    /// filter as refused.
    fn keep(&self, filter: &Expr, columns: Vec<String>, selected: &DataFrame, rows: usize) {
        let bytes = arrow_size(selected) as u64;
        let mut state = lock(&self.state);
        if selected.height().saturating_mul(4) > rows || bytes > self.cap {
            state.refuse(filter);
            return;
        }
        if let Some(index) = state.position(filter) {
            if columns
                .iter()
                .all(|name| state.entries[index].columns.contains(name))
            {
                // Another job kept these columns or more meanwhile.
                return;
            }
            state.remove(index, &self.budget);
        }
        while state.bytes + bytes > self.cap {
            let Some(oldest) = (0..state.entries.len()).min_by_key(|&i| state.entries[i].last_used)
            else {
                break;
            };
            state.remove(oldest, &self.budget);
        }
        if self.budget.try_replace(0, bytes).is_err() {
            state.refuse(filter);
            return;
        }
        state.clock += 1;
        let last_used = state.clock;
        state.bytes += bytes;
        state.entries.push(Entry {
            filter: filter.clone(),
            columns,
            frame: selected.clone(),
            bytes,
            last_used,
        });
    }

    /// Drops every selection, returning their bytes to the budget, and forgets the refusals
    /// (the room they lacked may be free now).
    pub fn clear(&self) {
        let mut state = lock(&self.state);
        state.entries.clear();
        state.refused.clear();
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

    /// `n` events in time order: every 20th a purchase, the rest views; ts one second apart;
    /// 40 cities, taking turns among the purchases.
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
                    .map(|i| format!("city {}", (i / 20) % 40))
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
    fn repeated_strings_are_encoded_group_and_sort_as_strings_and_decode_back() {
        // 500 purchases in 40 cities: repeated enough to encode.
        let frame = events(10_000);
        let budget = Arc::new(MemoryBudget::new(1 << 30));
        let selections = Selections::new(budget, arrow_size(&frame) as u64);
        let purchases = filter("event = 'purchase'");
        let selected = selections
            .rows(&frame, &purchases, &names(&["amount", "city", "ts"]))
            .unwrap();
        assert!(is_encoded(selected.column("city").unwrap().dtype()));
        let plain = frame
            .clone()
            .lazy()
            .filter(purchases)
            .select([col("amount"), col("city"), col("ts")])
            .collect()
            .unwrap();
        assert!(decode_strings(selected.clone()).unwrap().equals(&plain));
        // A group-by on the encoded key, decoded, is the group-by on the strings, in order.
        // Sorted and cut as `top` does: by the sum, then the key (a top-k over two columns
        // row-encodes the key's codes).
        let per_city = |rows: LazyFrame| {
            rows.group_by([col("city")])
                .agg([col("amount").sum()])
                .sort(
                    ["amount", "city"],
                    SortMultipleOptions::default().with_order_descending_multi([true, false]),
                )
                .limit(10)
                .collect()
                .unwrap()
        };
        let encoded = decode_strings(per_city(selected.clone().lazy())).unwrap();
        assert!(encoded.equals(&per_city(plain.clone().lazy())), "{encoded}");
        // A job that reads `city` other than as a key sees strings.
        let schema = selected.schema().clone();
        let seen = decode_all_but(selected.clone().lazy(), &schema, &[])
            .collect()
            .unwrap();
        assert_eq!(seen.column("city").unwrap().dtype(), &DataType::String);
        let keyed = decode_all_but(selected.lazy(), &schema, &names(&["city"]))
            .collect()
            .unwrap();
        assert!(is_encoded(keyed.column("city").unwrap().dtype()));
        // A column of mostly distinct strings stays as it is.
        let unique =
            df!("id" => (0..100).map(|i| format!("user-{i}")).collect::<Vec<_>>()).unwrap();
        let kept = encode_repeated_strings(unique.clone());
        assert!(kept.equals(&unique));
        assert_eq!(kept.column("id").unwrap().dtype(), &DataType::String);
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
        // Numbers only, so a selection's bytes are its share of the rows.
        let frame = events(10_000).select(["amount", "ts"]).unwrap();
        let frame_bytes = arrow_size(&frame) as u64;
        let budget = Arc::new(MemoryBudget::new(1 << 30));
        let selections = Selections::new(budget.clone(), frame_bytes);
        let columns = names(&["amount", "ts"]);
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
