//! Which of polars' engines a plan runs on: the in-memory engine, or the streaming engine,
//! which reads its files in batches and keeps only what its operators need (a group-by's hash
//! table, a distinct's keys, a top-k's heap), so a partition whose files are bigger than the
//! memory it may use still completes.
//!
//! The engine is chosen per job, by whoever knows its inputs ([`crate::engine`]): plans
//! collected inside [`scope`] run on the streaming engine. The in-memory engine stays the
//! default because it answers small plans sooner (0.4–0.6 ms less a run over the sample
//! data's hourly files: docs/benchmarks.md, "When to stream"), and a plan over rows already in
//! memory, or whose result is held whole, gains nothing from streaming.
//!
//! Where an operator has no streaming form (a `median` or `quantile` aggregate, an ordered
//! `implode`, a window function over a partition), polars runs that operator on its input
//! gathered in memory and streams the rest; where the streaming engine has no form at all for
//! a plan (it stops at a `todo!`), [`collect`] runs the plan on the in-memory engine instead,
//! with a warning.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use polars::prelude::*;

thread_local! {
    /// Whether plans collected on this thread run on the streaming engine.
    static STREAMING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the plans it collects (through [`collect`]) on the streaming engine.
/// Scopes nest; the previous choice is restored afterwards, panics included.
pub fn scope<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            STREAMING.with(|streaming| streaming.set(self.0));
        }
    }
    let _restore = Restore(STREAMING.with(|streaming| streaming.replace(true)));
    f()
}

/// Whether plans collected on this thread now run on the streaming engine.
pub fn active() -> bool {
    STREAMING.with(Cell::get)
}

/// Collects `frame` on the engine chosen for this thread.
pub fn collect(frame: LazyFrame) -> PolarsResult<DataFrame> {
    if !active() {
        return frame.collect();
    }
    match catch_unwind(AssertUnwindSafe(|| {
        frame.clone().collect_with_engine(Engine::Streaming)
    })) {
        // A plan of one frame has one answer (several come only from `collect_all`'s
        // plans of several sinks), as polars' own `collect` assumes.
        Ok(result) => result.map(|answer| answer.unwrap_single()),
        // polars marks the plans its streaming engine cannot run yet with `todo!` and
        // `unimplemented!`; any other panic is the plan's own and goes on up.
        Err(panic) if unimplemented_panic(&*panic) => {
            tracing::warn!(
                "polars' streaming engine cannot run this plan ({}); running it in memory",
                crate::error::panic_message(&*panic)
            );
            frame.collect()
        }
        Err(panic) => resume_unwind(panic),
    }
}

fn unimplemented_panic(panic: &(dyn std::any::Any + Send)) -> bool {
    let text = crate::error::panic_message(panic);
    text.starts_with("not yet implemented") || text.starts_with("not implemented")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(rows: i64) -> LazyFrame {
        df!(
            "user" => (0..rows).map(|i| i % 1_000).collect::<Vec<_>>(),
            "category" => (0..rows).map(|i| if i % 3 == 0 { "a" } else { "b" }).collect::<Vec<_>>(),
            "amount" => (0..rows).map(|i| (i % 7) as f64).collect::<Vec<_>>(),
        )
        .unwrap()
        .lazy()
    }

    fn sorted(frame: DataFrame, by: &str) -> DataFrame {
        frame.sort([by], SortMultipleOptions::default()).unwrap()
    }

    #[test]
    fn the_scope_chooses_the_engine_and_restores_the_previous_choice() {
        assert!(!active());
        scope(|| {
            assert!(active());
            scope(|| assert!(active()));
            assert!(active());
        });
        assert!(!active());
        let _ = catch_unwind(|| scope(|| panic!("a job's panic")));
        assert!(!active(), "a panic inside the scope restores the choice");
    }

    #[test]
    fn both_engines_give_the_same_answers() {
        let plans: Vec<(&str, LazyFrame)> = vec![
            (
                "category",
                events(100_000)
                    .filter(col("amount").gt(lit(1.0)))
                    .group_by([col("category")])
                    .agg([len().alias("n"), col("amount").sum().alias("total")]),
            ),
            (
                "user",
                events(100_000)
                    .select([col("user")])
                    .unique(None, UniqueKeepStrategy::Any),
            ),
            (
                "category",
                events(100_000)
                    .group_by([col("category")])
                    .agg([col("amount").median().alias("median")]),
            ),
        ];
        for (key, plan) in plans {
            let in_memory = sorted(collect(plan.clone()).unwrap(), key);
            let streamed = sorted(scope(|| collect(plan)).unwrap(), key);
            assert_eq!(in_memory, streamed);
        }
    }

    #[test]
    fn only_polars_gaps_fall_back_to_memory() {
        let payload = |f: fn()| catch_unwind(f).unwrap_err();
        // What the `todo!` and `unimplemented!` polars marks its gaps with expand to: a `&str`
        // payload without a message, a `String` with one.
        assert!(unimplemented_panic(&*payload(|| panic!(
            "not yet implemented"
        ))));
        assert!(unimplemented_panic(&*payload(|| {
            panic!("not yet implemented: {}", "ExtContext")
        })));
        assert!(unimplemented_panic(&*payload(|| panic!("not implemented"))));
        assert!(unimplemented_panic(&*payload(|| panic!(
            "not implemented: {}",
            1
        ))));
        assert!(!unimplemented_panic(&*payload(|| panic!(
            "a job's own panic"
        ))));
        assert!(!unimplemented_panic(&*payload(|| panic!(
            "{} went wrong",
            1
        ))));
    }

    #[test]
    fn a_plan_error_is_an_error_on_the_streaming_engine_too() {
        let plan = events(10).select([col("missing")]);
        let err = scope(|| collect(plan)).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
