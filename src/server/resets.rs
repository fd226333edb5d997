//! Resets (`PUT /contexts?reset=reboot`, `PUT /data?reset=reboot`) one at a time: a flood of
//! them holds one blocking thread, not one each.
//!
//! A sync reset waits for its turn and answers with its outcome. An async one (`sync=false`)
//! is answered at once and queued, unless one is already queued and not started: that one
//! starts after this request and does all it asks, so at most one runs and one waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs one kind of reset one at a time.
#[derive(Debug, Default)]
pub struct Resets {
    turn: tokio::sync::Mutex<()>,
    /// An async reset is queued and has not started.
    queued: AtomicBool,
}

impl Resets {
    /// Runs `work` on a blocking thread once the resets before it are done.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        let _turn = self.turn.lock().await;
        tokio::task::spawn_blocking(work).await
    }

    /// Queues `work` after the resets before it, unless a queued one will start after this
    /// request anyway. Its outcome is for `work` to log.
    pub(super) fn request(self: &Arc<Self>, work: impl FnOnce() + Send + 'static) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let resets = self.clone();
        tokio::spawn(async move {
            let _turn = resets.turn.lock().await;
            // Started: a request from now on must queue another, which will see its state.
            resets.queued.store(false, Ordering::Release);
            let _ = tokio::task::spawn_blocking(work).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_async_resets_runs_one_and_queues_one() {
        let resets = Arc::new(Resets::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, held) = std::sync::mpsc::channel::<()>();
        // The first reset runs until released.
        let first = runs.clone();
        resets.request(move || {
            first.fetch_add(1, Ordering::SeqCst);
            let _ = held.recv();
        });
        while runs.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // A thousand more while it runs: one is queued, the rest join it.
        for _ in 0..1000 {
            let counted = runs.clone();
            resets.request(move || {
                counted.fetch_add(1, Ordering::SeqCst);
            });
        }
        release.send(()).unwrap();
        // The queued one runs once the first is done (when, the scheduler decides)...
        for _ in 0..5000 {
            if runs.load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // ...and no other: after a reset that waits for every earlier one, still two.
        let waited = resets.run(|| ()).await;
        assert!(waited.is_ok());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
}
