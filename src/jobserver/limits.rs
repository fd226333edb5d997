//! Server-wide bounds on what clients can make the server hold: OS threads, contexts, queued
//! jobs, stored binaries, stored jobs and the bytes of their results, backfills, memory, query
//! time, and the partitions one request may read or run (`limits:` in the configuration file).
//!
//! Each bound is checked where the resource is taken, and a refusal names the limit's key
//! (`limits.max_contexts` …) so an operator knows what to raise. The configuration's own
//! contexts (`context_defaults`, `adhoc`, `contexts`) are held to the same bounds at start-up
//! ([`Limits::check_context_settings`]).

use super::context::ContextSettings;

/// The keys of the `limits:` block, as messages name them.
pub const MAX_THREADS_PER_CONTEXT: &str = "limits.max_threads_per_context";
pub const MAX_QUEUE_LENGTH: &str = "limits.max_queue_length";
pub const MAX_CONTEXTS: &str = "limits.max_contexts";
pub const MAX_WORKER_THREADS: &str = "limits.max_worker_threads";
pub const BINARY_VERSIONS: &str = "limits.binary_versions";
pub const MAX_STORED_JOBS: &str = "limits.max_stored_jobs";
pub const MEMORY: &str = "limits.memory";
pub const QUERY_TIMEOUT: &str = "limits.query_timeout";
pub const MAX_RESULT_PARTITIONS: &str = "limits.max_result_partitions";
pub const MAX_RUN_PARTITIONS: &str = "limits.max_run_partitions";
pub const MAX_JOIN_ROWS: &str = "limits.max_join_rows";
pub const MAX_RESULT_BYTES: &str = "limits.max_result_bytes";
pub const MAX_JOB_RESULTS_BYTES: &str = "limits.max_job_results_bytes";
/// Named where the scheduler, which enforces it, defines it.
pub use crate::scheduler::MAX_ACTIVE_BACKFILLS;
pub const BACKFILL_HISTORY: &str = "limits.backfill_history";
pub const MAX_CONCURRENT_QUERIES: &str = "limits.max_concurrent_queries";

/// The share of the machine's memory the server may hold by default.
const DEFAULT_MEMORY_SHARE: f64 = 0.8;

/// The bounds; every one has a default safe to expose to untrusted clients.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// `worker-threads` one context may have: each is an OS thread, started when the context
    /// is created.
    pub max_threads_per_context: usize,
    /// `queue-length` one context may have: queued jobs hold their plan and config in memory.
    pub max_queue_length: usize,
    /// Contexts at once, the predefined ones included (ad-hoc jobs do not count).
    pub max_contexts: usize,
    /// Worker threads over every context plus the ad-hoc executor, counting the threads of
    /// deleted contexts that are still finishing a computation.
    pub max_worker_threads: usize,
    /// Versions kept per app; an upload beyond it deletes the oldest version and its bytes.
    pub binary_versions: usize,
    /// Job records stored at once (running ones included) before `POST /jobs` answers 503;
    /// `None` means twice `job_history`. See [`Limits::max_stored_jobs`].
    pub max_stored_jobs: Option<usize>,
    /// Resident memory of the server, in bytes, over which the newest ad-hoc job or query is
    /// stopped (`crate::frames::memory`); `None` turns the watchdog off. Default: 80% of the
    /// machine's memory.
    pub memory: Option<u64>,
    /// How long a `/query` may compute before it is stopped and answered 408-style with 503.
    pub query_timeout: std::time::Duration,
    /// Partitions one results read (`GET …/results`, a `/query` table, an `input { results }`)
    /// may span; more is refused before anything is read.
    pub max_result_partitions: usize,
    /// Runs one request may plan (`floe.PipelineRun`, `POST /pipelines/{p}/runs`, a pipeline
    /// job, a backfill or a restatement), summed over its jobs.
    pub max_run_partitions: usize,
    /// Rows one join of a SQL query may produce (`crate::sql_guard::max_join_rows`).
    pub max_join_rows: u64,
    /// Arrow bytes (`crate::frames::arrow_size`) of one job's result: a larger result is not
    /// stored, and its job ends ERROR. `job_history` bounds how many results are kept, not
    /// their size: one `lpad(city, 2500, 'x')` wrote 503 MB.
    pub max_result_bytes: u64,
    /// Bytes of every stored job result together (sled values and `job-results/` files).
    /// A result that would take the total over it first makes the sweep delete finished
    /// jobs older than `job_retention`; if that is not enough its job ends ERROR.
    pub max_job_results_bytes: u64,
    /// Backfills and restatements not finished (running or paused) at once, server-wide:
    /// each holds its planned runs in the scheduler's memory.
    pub max_active_backfills: usize,
    /// Finished and cancelled backfill records kept (the newest); older ones are deleted
    /// when a backfill or restatement starts.
    pub backfill_history: usize,
    /// `/query` computations at once, a stopped one counting until polars lets go of it;
    /// beyond it `/query` answers 429.
    pub max_concurrent_queries: usize,
}

/// `1234 bytes`, or with a binary unit beyond a KiB: `268435456 bytes (256 MiB)`.
pub fn byte_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = None;
    for name in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = Some(name);
    }
    match unit {
        None => format!("{bytes} bytes"),
        Some(unit) if value.fract() == 0.0 => format!("{bytes} bytes ({value} {unit})"),
        Some(unit) => format!("{bytes} bytes ({value:.1} {unit})"),
    }
}

/// 80% of the machine's memory, or `None` where it cannot be read.
pub fn default_memory_limit() -> Option<u64> {
    crate::frames::memory::physical_bytes()
        .map(|bytes| (bytes as f64 * DEFAULT_MEMORY_SHARE) as u64)
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_threads_per_context: 64,
            max_queue_length: 10_000,
            max_contexts: 64,
            max_worker_threads: 256,
            binary_versions: 10,
            max_stored_jobs: None,
            memory: default_memory_limit(),
            query_timeout: std::time::Duration::from_secs(30),
            max_result_partitions: 10_000,
            max_run_partitions: 20_000,
            max_join_rows: crate::sql_guard::DEFAULT_MAX_JOIN_ROWS,
            max_result_bytes: 256 << 20,
            max_job_results_bytes: 8 << 30,
            max_active_backfills: 16,
            backfill_history: 1_000,
            max_concurrent_queries: 16,
        }
    }
}

/// A request over one of the per-request bounds, naming the bound's key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "{what} spans {partitions} partitions; the limit is {limit} per request (`{key}`): \
         narrow `from`/`to`",
        key = MAX_RESULT_PARTITIONS
    )]
    ResultPartitions {
        what: String,
        partitions: u64,
        limit: usize,
    },
    #[error(
        "{what} would plan {runs} runs; the limit is {limit} per request (`{key}`): narrow \
         `from`/`to` or the jobs, or split it",
        key = MAX_RUN_PARTITIONS
    )]
    RunPartitions {
        what: String,
        runs: u64,
        limit: usize,
    },
    #[error(
        "the job's result is {} of Arrow, above the limit of {} per job result (`{key}`); it \
         was not stored: ask for fewer rows or columns (a narrower range, a filter, an \
         aggregate, a `limit`)",
        byte_size(*.bytes),
        byte_size(*.limit),
        key = MAX_RESULT_BYTES
    )]
    ResultBytes { bytes: u64, limit: u64 },
}

/// Bounds that contradict themselves or the job history they must leave room for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundsError {
    #[error("`{0}` must be at least 1")]
    Zero(&'static str),
    #[error("`{key}` must be at least 1 byte", key = MAX_RESULT_BYTES)]
    ZeroResultBytes,
    #[error(
        "`{total_key}` ({total}) must be at least `{one_key}` ({one})",
        total_key = MAX_JOB_RESULTS_BYTES,
        one_key = MAX_RESULT_BYTES
    )]
    ResultsBelowOne { total: u64, one: u64 },
    #[error("`{key}` must be longer than 0s", key = QUERY_TIMEOUT)]
    ZeroQueryTimeout,
    #[error("`{key}` must be more than 0 bytes (or `off`)", key = MEMORY)]
    ZeroMemory,
    #[error(
        "`{key}` ({max_stored_jobs}) must be greater than `job_history` ({job_history})",
        key = MAX_STORED_JOBS
    )]
    StoredJobsWithinHistory {
        max_stored_jobs: usize,
        job_history: usize,
    },
}

impl Limits {
    /// Refuses a read of `partitions` partitions over the limit, naming it.
    pub fn check_result_partitions(&self, partitions: u64, what: &str) -> Result<(), LimitError> {
        if partitions > self.max_result_partitions as u64 {
            return Err(LimitError::ResultPartitions {
                what: what.to_owned(),
                partitions,
                limit: self.max_result_partitions,
            });
        }
        Ok(())
    }

    /// Refuses a request planning `runs` runs over the limit, naming it.
    pub fn check_run_partitions(&self, runs: u64, what: &str) -> Result<(), LimitError> {
        if runs > self.max_run_partitions as u64 {
            return Err(LimitError::RunPartitions {
                what: what.to_owned(),
                runs,
                limit: self.max_run_partitions,
            });
        }
        Ok(())
    }

    /// Refuses a job result of `bytes` Arrow bytes over `limits.max_result_bytes`, naming both.
    pub fn check_result_bytes(&self, bytes: u64) -> Result<(), LimitError> {
        if bytes > self.max_result_bytes {
            return Err(LimitError::ResultBytes {
                bytes,
                limit: self.max_result_bytes,
            });
        }
        Ok(())
    }

    /// The stored-jobs bound for a history of `job_history` jobs.
    pub fn max_stored_jobs(&self, job_history: usize) -> usize {
        self.max_stored_jobs
            .unwrap_or_else(|| job_history.saturating_mul(2))
    }

    /// Every setting of `settings` above a per-context bound, each naming the setting and the
    /// limit's key.
    pub fn check_context_settings(&self, settings: &ContextSettings) -> Vec<String> {
        let mut problems = Vec::new();
        if settings.worker_threads > self.max_threads_per_context {
            problems.push(format!(
                "setting `worker-threads`: {} is above the limit of {} worker threads per \
                 context (`{MAX_THREADS_PER_CONTEXT}`)",
                settings.worker_threads, self.max_threads_per_context
            ));
        }
        if settings.queue_length > self.max_queue_length {
            problems.push(format!(
                "setting `queue-length`: {} is above the limit of {} queued jobs per context \
                 (`{MAX_QUEUE_LENGTH}`)",
                settings.queue_length, self.max_queue_length
            ));
        }
        problems
    }

    /// Checks the bounds themselves against the job history they must leave room for.
    pub fn check(&self, job_history: usize) -> Result<(), BoundsError> {
        if self.max_threads_per_context == 0 {
            return Err(BoundsError::Zero(MAX_THREADS_PER_CONTEXT));
        }
        if self.max_worker_threads == 0 {
            return Err(BoundsError::Zero(MAX_WORKER_THREADS));
        }
        if self.binary_versions == 0 {
            return Err(BoundsError::Zero(BINARY_VERSIONS));
        }
        for (value, key) in [
            (self.max_result_partitions, MAX_RESULT_PARTITIONS),
            (self.max_run_partitions, MAX_RUN_PARTITIONS),
            (self.max_concurrent_queries, MAX_CONCURRENT_QUERIES),
        ] {
            if value == 0 {
                return Err(BoundsError::Zero(key));
            }
        }
        if self.max_join_rows == 0 {
            return Err(BoundsError::Zero(MAX_JOIN_ROWS));
        }
        if self.max_active_backfills == 0 {
            return Err(BoundsError::Zero(MAX_ACTIVE_BACKFILLS));
        }
        if self.max_result_bytes == 0 {
            return Err(BoundsError::ZeroResultBytes);
        }
        if self.max_job_results_bytes < self.max_result_bytes {
            // One result of the largest size allowed must fit in the total.
            return Err(BoundsError::ResultsBelowOne {
                total: self.max_job_results_bytes,
                one: self.max_result_bytes,
            });
        }
        if self.query_timeout.is_zero() {
            return Err(BoundsError::ZeroQueryTimeout);
        }
        if self.memory == Some(0) {
            return Err(BoundsError::ZeroMemory);
        }
        let max_stored_jobs = self.max_stored_jobs(job_history);
        if max_stored_jobs <= job_history {
            // The sweep keeps `job_history` jobs: a bound at or below it would refuse every
            // job for good once reached.
            return Err(BoundsError::StoredJobsWithinHistory {
                max_stored_jobs,
                job_history,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_context_bounds_name_the_setting_and_the_limit() {
        let limits = Limits::default();
        assert!(
            limits
                .check_context_settings(&ContextSettings::default())
                .is_empty()
        );
        let greedy = ContextSettings {
            worker_threads: 1024,
            queue_length: 10_001,
            ..ContextSettings::default()
        };
        assert_eq!(
            limits.check_context_settings(&greedy),
            [
                "setting `worker-threads`: 1024 is above the limit of 64 worker threads per \
                 context (`limits.max_threads_per_context`)",
                "setting `queue-length`: 10001 is above the limit of 10000 queued jobs per \
                 context (`limits.max_queue_length`)",
            ]
        );
        let at_the_bounds = ContextSettings {
            worker_threads: 64,
            queue_length: 10_000,
            ..ContextSettings::default()
        };
        assert!(limits.check_context_settings(&at_the_bounds).is_empty());
    }

    #[test]
    fn result_bytes_and_backfills_have_safe_defaults_and_are_checked() {
        let limits = Limits::default();
        assert_eq!(limits.max_result_bytes, 256 << 20);
        assert_eq!(limits.max_job_results_bytes, 8 << 30);
        assert_eq!(limits.max_active_backfills, 16);
        assert_eq!(limits.backfill_history, 1_000);
        assert!(limits.check_result_bytes(256 << 20).is_ok());
        assert_eq!(
            limits
                .check_result_bytes(503_200_000)
                .unwrap_err()
                .to_string(),
            "the job's result is 503200000 bytes (479.9 MiB) of Arrow, above the limit of \
             268435456 bytes (256 MiB) per job result (`limits.max_result_bytes`); it was not \
             stored: ask for fewer rows or columns (a narrower range, a filter, an aggregate, \
             a `limit`)"
        );
        assert_eq!(byte_size(1023), "1023 bytes");
        assert_eq!(byte_size(8 << 30), "8589934592 bytes (8 GiB)");
        let refused = |limits: Limits| limits.check(10).unwrap_err().to_string();
        assert_eq!(
            refused(Limits {
                max_result_bytes: 2 << 30,
                max_job_results_bytes: 1 << 30,
                ..Limits::default()
            }),
            "`limits.max_job_results_bytes` (1073741824) must be at least \
             `limits.max_result_bytes` (2147483648)"
        );
        assert_eq!(
            refused(Limits {
                max_active_backfills: 0,
                ..Limits::default()
            }),
            "`limits.max_active_backfills` must be at least 1"
        );
        assert_eq!(
            refused(Limits {
                max_result_bytes: 0,
                ..Limits::default()
            }),
            "`limits.max_result_bytes` must be at least 1 byte"
        );
        // Keeping no finished backfill record is a choice, not a mistake.
        assert!(
            Limits {
                backfill_history: 0,
                ..Limits::default()
            }
            .check(10)
            .is_ok()
        );
    }

    #[test]
    fn stored_jobs_default_to_twice_the_history_and_must_exceed_it() {
        let limits = Limits::default();
        assert_eq!(limits.max_stored_jobs(100_000), 200_000);
        assert!(limits.check(100_000).is_ok());
        let tight = Limits {
            max_stored_jobs: Some(10),
            ..Limits::default()
        };
        assert_eq!(tight.max_stored_jobs(5), 10);
        assert_eq!(
            tight.check(10).unwrap_err().to_string(),
            "`limits.max_stored_jobs` (10) must be greater than `job_history` (10)"
        );
        let none_kept = Limits {
            binary_versions: 0,
            ..Limits::default()
        };
        assert_eq!(
            none_kept.check(10).unwrap_err().to_string(),
            "`limits.binary_versions` must be at least 1"
        );
    }
}
