//! The execution timeouts of running jobs: one watcher thread holds every deadline in order and
//! calls back when the earliest passes.
//!
//! Why not a timer task per job: every job has a timeout (an hour by default), and a task
//! spawned and aborted per job costs two cross-thread wake-ups of the async runtime, measured
//! at a sixth of the job server's throughput for millisecond jobs. Here a deadline is an
//! ordered-map insert and remove under a short lock, and the watcher is woken only when a new
//! deadline comes before the time it sleeps until (jobs of one context share a timeout, so
//! their deadlines arrive in order and never wake it; with none pending it looks again every
//! [`IDLE_LOOK`], so one job after another does not wake it either).

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long the watcher sleeps when no deadline is pending.
pub const IDLE_LOOK: Duration = Duration::from_secs(1);

/// Identifies one deadline, to take it back with [`Deadlines::remove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeadlineKey {
    at: Instant,
    seq: u64,
}

/// Deadlines of items `T`, each handed to the callback given to [`Deadlines::start`] once it
/// passes, unless removed before. Dropping it stops the watcher thread.
pub struct Deadlines<T: Send + 'static> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
}

struct State<T> {
    queue: BTreeMap<DeadlineKey, T>,
    next_seq: u64,
    /// Until when the watcher sleeps, while it does; `None` while it is awake (it reads the
    /// queue again before it sleeps).
    watcher_wakes_at: Option<Instant>,
    stopped: bool,
}

impl<T> Shared<T> {
    fn state(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: Send + 'static> std::fmt::Debug for Deadlines<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadlines")
            .field("pending", &self.len())
            .finish()
    }
}

impl<T: Send + 'static> Deadlines<T> {
    /// Starts the watcher thread, named `name`, which calls `expired` with each item whose
    /// deadline passed (outside the lock, so `expired` may insert and remove deadlines).
    pub fn start(
        name: &str,
        expired: impl Fn(T) + Send + 'static,
    ) -> std::io::Result<Deadlines<T>> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: BTreeMap::new(),
                next_seq: 0,
                watcher_wakes_at: None,
                stopped: false,
            }),
            changed: Condvar::new(),
        });
        let watched = shared.clone();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || watch(&watched, expired))?;
        Ok(Deadlines { shared })
    }

    /// Hands `item` to the callback at `at`, unless removed before.
    pub fn insert(&self, at: Instant, item: T) -> DeadlineKey {
        let mut state = self.shared.state();
        let key = DeadlineKey {
            at,
            seq: state.next_seq,
        };
        state.next_seq += 1;
        let sooner = state.watcher_wakes_at.is_some_and(|wakes_at| at < wakes_at);
        state.queue.insert(key, item);
        drop(state);
        if sooner {
            self.shared.changed.notify_one();
        }
        key
    }

    /// Takes back a deadline that has not passed yet; `None` when it has (or was removed).
    pub fn remove(&self, key: DeadlineKey) -> Option<T> {
        // The watcher sleeps on as it was: waking early for nothing is all it costs.
        self.shared.state().queue.remove(&key)
    }

    /// Deadlines not passed yet.
    pub fn len(&self) -> usize {
        self.shared.state().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: Send + 'static> Drop for Deadlines<T> {
    fn drop(&mut self) {
        self.shared.state().stopped = true;
        self.shared.changed.notify_one();
    }
}

fn watch<T>(shared: &Shared<T>, expired: impl Fn(T)) {
    let mut state = shared.state();
    loop {
        if state.stopped {
            return;
        }
        let now = Instant::now();
        let wakes_at = match state.queue.first_key_value() {
            None => now + IDLE_LOOK,
            Some((first, _)) => first.at,
        };
        if wakes_at > now {
            state.watcher_wakes_at = Some(wakes_at);
            state = shared
                .changed
                .wait_timeout(state, wakes_at - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.watcher_wakes_at = None;
            continue;
        }
        if let Some((_, item)) = state.queue.pop_first() {
            drop(state);
            expired(item);
            state = shared.state();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    fn started() -> (
        Deadlines<&'static str>,
        mpsc::Receiver<(&'static str, Instant)>,
    ) {
        let (sender, receiver) = mpsc::channel();
        let deadlines = Deadlines::start("test-deadlines", move |item| {
            let _ = sender.send((item, Instant::now()));
        })
        .unwrap();
        (deadlines, receiver)
    }

    #[test]
    fn items_expire_in_deadline_order_not_insertion_order() {
        let (deadlines, expired) = started();
        let now = Instant::now();
        deadlines.insert(now + Duration::from_millis(120), "late");
        deadlines.insert(now + Duration::from_millis(40), "early");
        let (first, at) = expired.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(first, "early");
        assert!(at >= now + Duration::from_millis(40));
        let (second, at) = expired.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(second, "late");
        assert!(at >= now + Duration::from_millis(120));
        assert!(deadlines.is_empty());
    }

    #[test]
    fn a_sooner_deadline_wakes_a_watcher_asleep_on_a_later_one() {
        let (deadlines, expired) = started();
        let now = Instant::now();
        deadlines.insert(now + Duration::from_secs(3600), "an hour");
        std::thread::sleep(Duration::from_millis(20));
        deadlines.insert(Instant::now() + Duration::from_millis(10), "soon");
        let (item, _) = expired.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(item, "soon");
        assert_eq!(deadlines.len(), 1);
    }

    #[test]
    fn a_removed_deadline_never_expires() {
        let (deadlines, expired) = started();
        let now = Instant::now();
        let key = deadlines.insert(now + Duration::from_millis(30), "removed");
        deadlines.insert(now + Duration::from_millis(60), "kept");
        assert_eq!(deadlines.remove(key), Some("removed"));
        assert_eq!(deadlines.remove(key), None);
        let (item, _) = expired.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(item, "kept");
        assert!(expired.recv_timeout(Duration::from_millis(100)).is_err());
    }

    #[test]
    fn a_deadline_after_the_idle_look_is_kept_until_it_passes() {
        let (deadlines, expired) = started();
        let at = Instant::now() + IDLE_LOOK + Duration::from_millis(200);
        deadlines.insert(at, "after a look");
        let (item, when) = expired
            .recv_timeout(IDLE_LOOK * 2 + Duration::from_secs(5))
            .unwrap();
        assert_eq!(item, "after a look");
        assert!(when >= at);
    }

    #[test]
    fn dropping_stops_the_watcher() {
        let (deadlines, expired) = started();
        deadlines.insert(Instant::now() + Duration::from_secs(3600), "never");
        drop(deadlines);
        // The sender lives in the watcher's callback: the channel closes when it returns.
        assert_eq!(
            expired.recv_timeout(Duration::from_secs(5)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
