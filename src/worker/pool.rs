//! Workers that each serve one call at a time: a call takes an idle worker (or a new one)
//! and gives it back, so a memory limit, a kill or a crash is that call's alone. Idle workers
//! keep their processes warm, at most `keep` of them; the caller's own admission bounds how
//! many run at once.

use std::sync::{Arc, Mutex};

use super::lock;
use super::supervisor::Worker;

/// Makes a worker (not started: its process starts with its first call).
pub type MakeWorker = Box<dyn Fn() -> Result<Worker, String> + Send + Sync>;

pub struct WorkerPool {
    idle: Mutex<Vec<Arc<Worker>>>,
    keep: usize,
    make: MakeWorker,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

impl WorkerPool {
    /// A pool keeping up to `keep` idle workers made by `make`; one is made now, so a
    /// misconfiguration shows at once.
    pub fn new(keep: usize, make: MakeWorker) -> Result<WorkerPool, String> {
        let pool = WorkerPool {
            idle: Mutex::new(Vec::new()),
            keep: keep.max(1),
            make,
        };
        let first = pool.take()?;
        pool.give_back(first);
        Ok(pool)
    }

    /// An idle worker, or a new one.
    pub fn take(&self) -> Result<Arc<Worker>, String> {
        if let Some(worker) = lock(&self.idle).pop() {
            return Ok(worker);
        }
        (self.make)().map(Arc::new)
    }

    /// Keeps `worker` for a later call, unless `keep` are idle already (then it is dropped,
    /// and its process killed with it).
    pub fn give_back(&self, worker: Arc<Worker>) {
        let mut idle = lock(&self.idle);
        if idle.len() < self.keep {
            idle.push(worker);
        }
    }

    /// Runs `call` on a worker of the pool.
    pub fn with_worker<T>(&self, call: impl FnOnce(&Worker) -> T) -> Result<T, String> {
        let worker = self.take()?;
        let result = call(&worker);
        self.give_back(worker);
        Ok(result)
    }
}
