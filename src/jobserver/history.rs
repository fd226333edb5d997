//! The stored job history: finished jobs' results within their byte limits, and the sweep that
//! deletes the oldest finished jobs past `job_history` once `job_retention` allows.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use polars::prelude::*;
use tracing::{info, warn};

use crate::error::error_chain;
use crate::frames::arrow_size;
use crate::store::{JobFailure, JobRecord, StoreError};

use super::limits::{MAX_JOB_RESULTS_BYTES, byte_size};
use super::{JobServer, SubmitError, lock};

impl JobServer {
    /// Stores a finished job's result within `limits.max_result_bytes` and
    /// `limits.max_job_results_bytes`; returns the bytes it takes, or the failure the job ends
    /// with instead (nothing stored).
    pub(super) fn store_result(&self, id: &str, result: &DataFrame) -> Result<u64, JobFailure> {
        let failure = |message: String, class: &str| JobFailure {
            message,
            error_class: class.to_owned(),
            stack: String::new(),
        };
        let limits = &self.settings.limits;
        limits
            .check_result_bytes(arrow_size(result) as u64)
            .map_err(|e| failure(e.to_string(), "floe.ResultTooLarge"))?;
        let mut reserved = None;
        let mut refused = None;
        let stored = self.store.put_job_result(id, result, |bytes| {
            if self.reserve_result_bytes(bytes) {
                reserved = Some(bytes);
                true
            } else {
                refused = Some(bytes);
                false
            }
        });
        match stored {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => {
                let bytes = refused.unwrap_or_default();
                Err(failure(
                    format!(
                        "the job's result takes {} but stored job results take {} of the {} \
                         allowed (`{MAX_JOB_RESULTS_BYTES}`), and no finished job that ended \
                         `job_retention` ({}) ago can make room; it was not stored: retry \
                         later, or ask for a smaller result",
                        byte_size(bytes),
                        byte_size(self.result_bytes.load(Ordering::Acquire)),
                        byte_size(limits.max_job_results_bytes),
                        humantime::format_duration(self.settings.job_retention)
                    ),
                    "floe.JobResultsFull",
                ))
            }
            Err(e) => {
                if let Some(bytes) = reserved {
                    self.result_bytes.fetch_sub(bytes, Ordering::AcqRel);
                }
                warn!(job_id = %id, error = %error_chain(&e), "cannot store the job's result");
                let error_class = match e {
                    StoreError::EncodeJobResult { .. } => "floe.ResultEncoding",
                    _ => "floe.StoreError",
                };
                Err(failure(
                    format!("cannot store the result: {}", error_chain(&e)),
                    error_class,
                ))
            }
        }
    }

    /// Counts `bytes` of a new result against `limits.max_job_results_bytes`. Over it, first
    /// deletes finished jobs older than `job_retention` that free enough (oldest first);
    /// returns whether the bytes were counted.
    fn reserve_result_bytes(&self, bytes: u64) -> bool {
        let limit = self.settings.limits.max_job_results_bytes;
        let take = || {
            self.result_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |total| {
                    total.checked_add(bytes).filter(|after| *after <= limit)
                })
                .is_ok()
        };
        if take() {
            return true;
        }
        if let Err(e) = self.sweep_for_result_bytes(bytes) {
            warn!(error = %error_chain(&e), "job results sweep failed");
        }
        take()
    }

    /// Deletes finished jobs with a stored result, those that ended first first, but none that
    /// ended less than `job_retention` ago, until `needed` more bytes fit under
    /// `limits.max_job_results_bytes`. Deletes nothing when those jobs cannot free enough: a
    /// result that will be refused anyway must not cost the history. Returns how many it
    /// deleted.
    fn sweep_for_result_bytes(&self, needed: u64) -> Result<usize, StoreError> {
        let limit = self.settings.limits.max_job_results_bytes;
        let ended_before = self.retention_cutoff();
        let victims: Vec<(FinishedKey, u64)> = {
            // Choosing the victims and counting them gone happen under one lock, as in
            // `sweep`.
            let mut finished = lock(&self.finished);
            let total = self.result_bytes.load(Ordering::Acquire);
            let excess = total.saturating_add(needed).saturating_sub(limit);
            let mut freed = 0u64;
            let mut chosen = Vec::new();
            for ((ended, id), bytes) in finished.iter() {
                if freed >= excess || *ended > ended_before {
                    break;
                }
                if *bytes > 0 {
                    chosen.push((*ended, id.clone()));
                    freed += bytes;
                }
            }
            if freed < excess {
                return Ok(0);
            }
            let victims: Vec<_> = chosen
                .into_iter()
                .filter_map(|key| finished.remove_entry(&key))
                .collect();
            self.stored_jobs.fetch_sub(victims.len(), Ordering::AcqRel);
            self.result_bytes.fetch_sub(freed, Ordering::AcqRel);
            victims
        };
        let mut deleted = 0;
        let mut failed = None;
        for (key, bytes) in victims {
            if failed.is_some() {
                // Still stored: counted again, for a later sweep.
                self.stored_jobs.fetch_add(1, Ordering::AcqRel);
                self.result_bytes.fetch_add(bytes, Ordering::AcqRel);
                lock(&self.finished).insert(key, bytes);
                continue;
            }
            if let Err(e) = self.store.delete_job(&key.1) {
                self.stored_jobs.fetch_add(1, Ordering::AcqRel);
                self.result_bytes.fetch_add(bytes, Ordering::AcqRel);
                lock(&self.finished).insert(key, bytes);
                failed = Some(e);
                continue;
            }
            deleted += 1;
        }
        if deleted > 0 {
            info!(deleted, "jobs deleted to make room for a job result");
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(deleted),
        }
    }

    /// Finished jobs that ended at or before this instant may be deleted (`job_retention`).
    fn retention_cutoff(&self) -> DateTime<Utc> {
        let retention = TimeDelta::from_std(self.settings.job_retention).unwrap_or(TimeDelta::MAX);
        self.clock
            .now()
            .checked_sub_signed(retention)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// Trims the job history off the caller's thread once it is 10% over `job_history` (so
    /// the sweep runs in batches, not after every job).
    pub(super) fn maybe_sweep(&self) {
        let limit = self.settings.job_history;
        if self.stored_jobs.load(Ordering::Acquire) <= limit + limit / 10 + 1
            || self.sweeping.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let me = self.me.clone();
        self.runtime.spawn_blocking(move || {
            if let Some(server) = me.upgrade() {
                if let Err(e) = server.sweep(usize::MAX) {
                    warn!(error = %error_chain(&e), "job history sweep failed");
                }
                server.sweeping.store(false, Ordering::Release);
            }
        });
    }

    /// Deletes finished jobs, those that ended first first, while more than `job_history`
    /// are stored, but never one that ended less than `job_retention` ago: a client may still
    /// be polling for it. Deletes at most `batch`; returns how many it deleted.
    fn sweep(&self, batch: usize) -> Result<usize, StoreError> {
        let ended_before = self.retention_cutoff();
        let mut deleted = 0;
        while deleted < batch {
            // Choosing a victim and counting it gone happen under one lock, so two sweeps
            // never take the history below `job_history` together.
            let victim = {
                let mut finished = lock(&self.finished);
                if self.stored_jobs.load(Ordering::Acquire) <= self.settings.job_history {
                    break;
                }
                match finished.first_key_value() {
                    Some(((ended, _), _)) if *ended <= ended_before => finished.pop_first(),
                    _ => None,
                }
            };
            let Some((victim, bytes)) = victim else {
                break;
            };
            self.stored_jobs.fetch_sub(1, Ordering::AcqRel);
            self.result_bytes.fetch_sub(bytes, Ordering::AcqRel);
            if let Err(e) = self.store.delete_job(&victim.1) {
                // Still stored: a later sweep tries again.
                self.stored_jobs.fetch_add(1, Ordering::AcqRel);
                self.result_bytes.fetch_add(bytes, Ordering::AcqRel);
                lock(&self.finished).insert(victim, bytes);
                return Err(e);
            }
            deleted += 1;
        }
        if deleted > 0 {
            info!(deleted, "job history trimmed");
        }
        Ok(deleted)
    }

    /// Counts a new job record against `limits.max_stored_jobs`. At the limit, deletes what
    /// the history allows (a few jobs here, the rest in the background); when nothing may be
    /// deleted yet, refuses with the time until the oldest finished job may go.
    pub(super) fn take_stored_job_place(&self) -> Result<(), SubmitError> {
        /// Jobs a refused submission deletes itself before it asks again: enough to make room
        /// for the next submissions too, few enough to stay quick on the request's thread.
        const SWEEP_ON_SUBMIT: usize = 16;
        let limit = self
            .settings
            .limits
            .max_stored_jobs(self.settings.job_history);
        let take = || {
            self.stored_jobs
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |stored| {
                    (stored < limit).then_some(stored + 1)
                })
                .is_ok()
        };
        if take() {
            return Ok(());
        }
        if self.sweep(SWEEP_ON_SUBMIT)? > 0 {
            self.maybe_sweep();
            if take() {
                return Ok(());
            }
        }
        let retention = self.settings.job_retention;
        let oldest_end = lock(&self.finished)
            .first_key_value()
            .map(|((ended, _), _)| *ended);
        // With no finished job stored, every stored job is still running, and the first to
        // end is kept for the whole retention.
        let now = self.clock.now();
        let deletable_at = oldest_end
            .unwrap_or(now)
            .checked_add_signed(TimeDelta::from_std(retention).unwrap_or(TimeDelta::MAX))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let wait = (deletable_at - now).to_std().unwrap_or_default();
        let whole_seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Err(SubmitError::TooManyStoredJobs {
            limit,
            retention,
            retry_after: Duration::from_secs(whole_seconds.max(1)),
        })
    }
}

/// A finished job's place in the history sweep's order: (end time, id).
type FinishedKey = (DateTime<Utc>, Box<str>);

/// Every stored finished job by (end time, id), with the bytes of its stored result.
pub(super) type FinishedJobs = BTreeMap<FinishedKey, u64>;

/// A finished job's place in the history sweep's order.
pub(super) fn finished_key(record: &JobRecord) -> FinishedKey {
    (
        record.end_time.unwrap_or(record.start_time),
        record.id.as_str().into(),
    )
}
