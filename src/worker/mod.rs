//! Worker processes: children of `floe serve` (the same binary, `floe worker …`) that do the
//! computing, so that a job that runs out of memory, aborts or must be stopped at once takes
//! down its own process and nothing else.
//!
//! This module is the process layer and knows nothing of jobs: [`wire`] is the framing of
//! calls and replies over the child's stdin and stdout (a JSON header and Arrow IPC blobs),
//! [`supervisor`] starts, watches (memory limit, health checks) and restarts a worker and
//! routes its replies, [`pool`] hands out workers that serve one call at a time, [`child`] is
//! the worker's own loop. What a call means is its caller's:
//! the job server's contexts ([`crate::jobserver`]) define their calls on top.

pub mod child;
pub mod pool;
pub mod supervisor;
pub mod wire;

pub use pool::WorkerPool;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks recover from poisoning: a panicking call (caught by its thread) must not take the
/// worker's bookkeeping down with it, and every critical section here leaves it valid.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
pub use supervisor::{CallError, Supervision, Worker, WorkerCommand, WorkerStatus};
