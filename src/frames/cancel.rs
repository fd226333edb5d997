//! Stopping work nobody waits for any more: a [`Cancel`] handle per ad-hoc job or query, and
//! [`collect`], through which the built-in job kinds run their plans.
//!
//! A cancelled handle stops its work at the next safe point: [`collect`] refuses to start a
//! plan, and discards a plan's result that raced the cancel (whoever cancelled has already
//! answered), and the job kinds and the pipeline executor check it between their stages and
//! partitions. A plan already running is not interrupted. polars (0.55, in-memory engine) has a
//! stop flag, but checks it only as it starts each plan node, and it starts them all, from the
//! root down, before the first kernel runs (a join's and a union's inputs in parallel): a flag set
//! once a plan computes is never seen. Reaching it would cost every query a hop to polars'
//! thread pool (`collect_concurrently`), measured at a sixth of the job server's throughput, for
//! nothing. What keeps a single plan from growing without end is static instead: the SQL join
//! limit, the nesting and range bounds; running contexts in worker processes that can be killed
//! is what makes a stop immediate.
//!
//! A job's handle is cancelled by a kill, its execution timeout, its context's deletion or the
//! server's shutdown; a `/query`'s by its time limit or the client hanging up; either by the
//! [`MemoryGuard`](super::memory::MemoryGuard) when the server is over its memory limit.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

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

    /// Stops the work at its next safe point. Returns whether this call cancelled it (false
    /// when it already was).
    pub fn cancel(&self, reason: impl Into<String>) -> bool {
        let _ = self.inner.reason.set(reason.into());
        !self.inner.cancelled.swap(true, Ordering::AcqRel)
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

/// Collects `frame`, refusing to start when the thread's [`Cancel`] is cancelled and discarding
/// a result that raced a cancel (whoever cancelled has already answered).
/// The plan runs on the engine [`super::streaming`] chose for this thread.
pub fn collect(frame: LazyFrame) -> PolarsResult<DataFrame> {
    let Some(cancel) = current() else {
        return super::streaming::collect(frame);
    };
    cancel.check()?;
    let result = super::streaming::collect(frame);
    cancel.check()?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_result_that_raced_a_cancel_is_discarded() {
        let cancel = Cancel::new();
        let frame = df!("x" => [1i64, 2, 3]).unwrap().lazy();
        // The cancel lands while the plan computes (in its map function).
        let racing = cancel.clone();
        let plan = frame.map(
            move |df| {
                racing.cancel("query time limit reached");
                Ok(df)
            },
            AllowedOptimizations::default(),
            None,
            None,
        );
        let err = cancel.scope(|| collect(plan)).unwrap_err();
        assert!(err.to_string().contains("time limit"), "{err}");
    }

    #[test]
    fn a_guard_cancels_unless_disarmed() {
        let cancel = Cancel::new();
        cancel.on_drop("unused").disarm();
        assert!(!cancel.is_cancelled());
        drop(cancel.on_drop("the client hung up"));
        assert_eq!(cancel.reason(), Some("the client hung up"));
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
