//! Stopping polars work nobody waits for any more: a [`Cancel`] handle per ad-hoc job or query,
//! and [`collect`], through which the built-in job kinds run their plans.
//!
//! polars (0.55, in-memory engine) checks a query's stop flag when it starts executing a node,
//! before the node's inputs; so a cancelled query ends, with an error and freeing what it held,
//! before the next branch it has not started: the second side of a join, the next input of a
//! union, the next stage of a group-by. Work already under way in a chain of nodes, and one
//! kernel (a join, a sort), runs on to that point: static bounds such as the SQL join limit keep
//! a single kernel from growing without end, and the answer to the client does not wait for the
//! computation to notice. The flag belongs to the query's execution state, which only
//! `LazyFrame::collect_concurrently` exposes: [`collect`] uses it when the calling thread is
//! inside [`Cancel::scope`], and is a plain `collect` anywhere else, so pipeline runs and tests
//! pay nothing.
//!
//! A job's handle is cancelled by a kill, its execution timeout, its context's deletion or the
//! server's shutdown; a `/query`'s by its time limit or the client hanging up; either by the
//! [`MemoryGuard`](super::memory::MemoryGuard) when the server is over its memory limit.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use polars::prelude::*;

/// A handle that stops the polars work started inside its [`Cancel::scope`]. Clones share
/// the same state.
#[derive(Clone, Default)]
pub struct Cancel {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    /// Why: the first reason given wins.
    reason: OnceLock<String>,
    /// The queries running now, by a number of their own.
    running: Mutex<Running>,
}

#[derive(Default)]
struct Running {
    next: u64,
    queries: Vec<(u64, InProcessQuery)>,
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancel")
            .field("cancelled", &self.is_cancelled())
            .field("reason", &self.reason())
            .finish()
    }
}

thread_local! {
    /// The handle of the work this thread is doing, inside [`Cancel::scope`].
    static CURRENT: RefCell<Option<Cancel>> = const { RefCell::new(None) };
}

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    fn running(&self) -> MutexGuard<'_, Running> {
        self.inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the work: running queries at their next node boundary, later ones before they
    /// start. Returns whether this call cancelled it (false when it already was).
    pub fn cancel(&self, reason: impl Into<String>) -> bool {
        let _ = self.inner.reason.set(reason.into());
        let first = !self.inner.cancelled.swap(true, Ordering::AcqRel);
        for (_, query) in &self.running().queries {
            query.cancel();
        }
        first
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
    }

    /// Why the work was cancelled.
    pub fn reason(&self) -> Option<&str> {
        self.inner.reason.get().map(String::as_str)
    }

    /// Whether two handles are the same.
    pub fn same(&self, other: &Cancel) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Runs `f` with this handle current on the thread, so [`collect`] inside it can be
    /// cancelled. Scopes nest: the previous handle is current again afterwards.
    pub fn scope<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Cancel>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                CURRENT.with(|current| *current.borrow_mut() = previous);
            }
        }
        let previous = CURRENT.with(|current| current.borrow_mut().replace(self.clone()));
        let _restore = Restore(previous);
        f()
    }

    /// A guard that cancels this handle with `reason` when dropped, unless disarmed: for work
    /// whose requester may go away (a client hanging up drops the request's future).
    pub fn on_drop(&self, reason: &'static str) -> CancelOnDrop {
        CancelOnDrop {
            cancel: Some(self.clone()),
            reason,
        }
    }

    /// The error a cancelled computation ends with.
    fn error(&self) -> PolarsError {
        PolarsError::ComputeError(
            self.reason()
                .unwrap_or("the computation was cancelled")
                .to_owned()
                .into(),
        )
    }

    fn check(&self) -> PolarsResult<()> {
        if self.is_cancelled() {
            Err(self.error())
        } else {
            Ok(())
        }
    }
}

/// Cancels its handle when dropped (see [`Cancel::on_drop`]).
#[derive(Debug)]
#[must_use = "the handle is cancelled when this guard is dropped"]
pub struct CancelOnDrop {
    cancel: Option<Cancel>,
    reason: &'static str,
}

impl CancelOnDrop {
    /// The work is done: dropping the guard no longer cancels it.
    pub fn disarm(mut self) {
        self.cancel = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            cancel.cancel(self.reason);
        }
    }
}

/// The handle current on this thread, if any.
pub fn current() -> Option<Cancel> {
    CURRENT.with(|current| current.borrow().clone())
}

/// Collects `frame`, cancellably when the thread is inside a [`Cancel::scope`].
pub fn collect(frame: LazyFrame) -> PolarsResult<DataFrame> {
    let Some(cancel) = current() else {
        return frame.collect();
    };
    cancel.check()?;
    let query = frame.collect_concurrently()?;
    let id = {
        let mut running = cancel.running();
        running.next += 1;
        let id = running.next;
        running.queries.push((id, query.clone()));
        id
    };
    // A cancel between the check above and the registration saw no query to stop.
    if cancel.is_cancelled() {
        query.cancel();
    }
    let result = query.fetch_blocking();
    // Dropping the registered clone flags the (finished) query as stopped, which is harmless.
    cancel.running().queries.retain(|(known, _)| *known != id);
    // A result that raced a cancel is not used: whoever cancelled has already answered.
    cancel.check()?;
    result
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A plan of many branches run one after the other, each slow enough that a cancel lands
    /// between two of them (polars checks the flag before it starts a node).
    fn slow_plan() -> LazyFrame {
        let rows = df!("x" => (0..100_000i64).collect::<Vec<_>>()).unwrap();
        let branches: Vec<LazyFrame> = (0..24)
            .map(|round| {
                rows.clone()
                    .lazy()
                    .select([((col("x") * lit(7) + lit(round)) % lit(1_000_003i64)).alias("x")])
                    .sort(["x"], SortMultipleOptions::default())
                    .group_by([col("x")])
                    .agg([len()])
            })
            .collect();
        let args = UnionArgs {
            parallel: false,
            ..UnionArgs::default()
        };
        concat(branches, args).unwrap().select([col("x").sum()])
    }

    #[test]
    fn outside_a_scope_collect_is_plain() {
        let frame = df!("x" => [1i64, 2]).unwrap();
        assert_eq!(collect(frame.clone().lazy()).unwrap(), frame);
        assert!(current().is_none());
    }

    #[test]
    fn a_cancelled_scope_refuses_to_start_and_says_why() {
        let cancel = Cancel::new();
        assert!(cancel.cancel("job killed by request"));
        assert!(!cancel.cancel("a second reason"));
        let err = cancel
            .scope(|| collect(df!("x" => [1i64]).unwrap().lazy()))
            .unwrap_err();
        assert!(err.to_string().contains("job killed by request"), "{err}");
    }

    #[test]
    fn a_cancel_stops_a_running_plan_between_nodes() {
        let started = Instant::now();
        Cancel::new().scope(|| collect(slow_plan())).unwrap();
        let whole = started.elapsed();
        let cancel = Cancel::new();
        let worker = {
            let cancel = cancel.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let result = cancel.scope(|| collect(slow_plan()));
                (result, started.elapsed())
            })
        };
        std::thread::sleep(whole / 4);
        cancel.cancel("query time limit reached");
        let cancelled_at = Instant::now();
        let (result, _) = worker.join().unwrap();
        let err = result.unwrap_err();
        assert!(err.to_string().contains("time limit"), "{err}");
        // It stopped between two branches, well before the last one.
        assert!(
            cancelled_at.elapsed() < whole / 2,
            "stopped {:?} after the cancel; the whole plan takes {whole:?}",
            cancelled_at.elapsed()
        );
    }

    #[test]
    fn scopes_nest_and_restore() {
        let outer = Cancel::new();
        let inner = Cancel::new();
        outer.scope(|| {
            assert!(current().unwrap().same(&outer));
            inner.scope(|| assert!(current().unwrap().same(&inner)));
            assert!(current().unwrap().same(&outer));
        });
        assert!(current().is_none());
    }
}
