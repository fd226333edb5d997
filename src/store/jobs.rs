//! The job server's jobs: their records (whose status moves along `lifecycle`'s job table),
//! posted configs and results, in the `jobs`, `job_configs` and `job_results` trees.
//!
//! Job writes are ordered single-key writes (the record's a compare-and-swap that checks its
//! status move), not transactions: a sled transaction costs about
//! three times as much CPU as the inserts it holds (measured: 83 µs against 30 µs for a job's
//! four writes), which matters at thousands of jobs per second. Order gives the guarantees
//! instead: a job's config is written before its record, its result before its `FINISHED`
//! record, and deletes remove the record first. sled recovers a prefix of its log, so after a
//! crash a record never points at a config or result that is not there; the leftovers a crash
//! can leave (a config or result without a record) are invisible and harmless.
//! [`Store::job_result_exists`] lets start-up double-check finished jobs anyway.
//! Records are JSON (small, readable with any sled tool); results are Arrow IPC.
//!
//! A large result (over [`JOB_RESULT_FILE_BYTES`] of Arrow) goes to its own file,
//! `job-results/<id>.arrow` beside sled's files, written straight from the frame, and sled
//! holds a marker in its place. Encoding a 10M-row result into one buffer and handing it to
//! sled cost 17 s and a peak of 4.4× the data's size (sled copies the value into its log
//! buffers); the file costs one pass over the data and no copy. The file is written under a
//! temporary name, synced and renamed before the marker and the record, so the order above
//! still holds.
//!
//! [`Store::put_job_result`] measures what a result takes on disk (the encoded value, or the
//! file's length) before it commits it, and lets the caller refuse it then: the job server
//! holds job results to `limits.max_job_results_bytes` that way, and records the bytes in
//! [`JobRecord::result_bytes`] (a field older records lack; [`Store::job_result_bytes`]
//! measures theirs).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use polars::prelude::{DataFrame, IpcReader, IpcWriter, SerReader, SerWriter};

use super::lifecycle::JobStatus;
use super::{BoxedCause, Store, StoreError, decode_json, encode_json, sled_failed, tree};
use crate::frames::{arrow_size, decode_ipc, encode_ipc};

/// Results with more Arrow bytes than this are kept in their own file rather than in sled.
pub(crate) const JOB_RESULT_FILE_BYTES: usize = 8 << 20;

/// What sled holds for a result kept in its own file. An Arrow IPC file starts with
/// `ARROW1`, so the two cannot be confused.
const IN_FILE_MARKER: &[u8] = b"floe:job-result-file";

/// The folder, beside sled's files, of results kept in their own files.
const JOB_RESULTS_DIR: &str = "job-results";

/// Why a job ended in `ERROR` (or `KILLED`), in spark-jobserver's `{message, errorClass, stack}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFailure {
    pub message: String,
    #[serde(rename = "errorClass")]
    pub error_class: String,
    /// The error's cause chain, one cause per line (Floe has no JVM stack to show).
    pub stack: String,
}

/// The stored record of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub class_path: String,
    /// The app (binary) the job belongs to, with the version it ran against.
    pub app: Option<String>,
    pub app_version: Option<u32>,
    /// The context's name; empty for an ad-hoc context.
    pub context: String,
    pub context_id: String,
    pub status: JobStatus,
    pub start_time: DateTime<Utc>,
    pub end_time: Option<DateTime<Utc>>,
    pub failure: Option<JobFailure>,
    /// Rows of the stored result, once `FINISHED`.
    pub result_rows: Option<u64>,
    /// Bytes the stored result takes (its sled value, or its file under `job-results/`),
    /// counted against `limits.max_job_results_bytes`. `None` without a result, and in
    /// records written before Floe kept it: start-up then measures the stored result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_bytes: Option<u64>,
    /// Re-run after a restart instead of failing: materialisations are idempotent.
    pub rerun_on_restart: bool,
}

/// A job's stored record as a write starts from: not read yet, or read (and absent or these
/// bytes) and its transition checked.
enum Checked {
    Unread,
    Read(Option<sled::IVec>),
}

impl Store {
    /// Records a new job: its config first, so a visible job always has one. The record must
    /// be one a job may start with (`lifecycle`: STARTED or RUNNING), or one its stored record
    /// may become.
    pub fn insert_job(&self, record: &JobRecord, config: &[u8]) -> Result<(), StoreError> {
        let encoded = encode_json(tree::JOBS, &record.id, record)?;
        let seen = self.checked_job_record(record)?;
        self.job_configs
            .insert(record.id.as_bytes(), config)
            .map_err(sled_failed(format_args!(
                "store the config of job {}",
                record.id
            )))?;
        self.swap_job_record(record, encoded, Checked::Read(seen), "record")
    }

    /// Writes a job's new record, after its result when it has one, so a `FINISHED` record
    /// always has its result. The stored status must be allowed to become the new one
    /// (`lifecycle`): otherwise the write is an `InvalidJobTransition` and nothing, the result
    /// included, is written.
    pub fn update_job(
        &self,
        record: &JobRecord,
        result: Option<&DataFrame>,
    ) -> Result<(), StoreError> {
        let encoded = encode_json(tree::JOBS, &record.id, record)?;
        let mut seen = Checked::Unread;
        if let Some(result) = result {
            // Checked before the result is written, so a refused update leaves no result
            // behind; the swap below checks again if the record changed meanwhile.
            seen = Checked::Read(self.checked_job_record(record)?);
            self.put_job_result(&record.id, result, |_| true)?;
        }
        self.swap_job_record(record, encoded, seen, "update")
    }

    /// The stored bytes of `record`'s job, if they may become `record` (`lifecycle`); the
    /// swap that writes `record` starts from them instead of reading them again.
    fn checked_job_record(&self, record: &JobRecord) -> Result<Option<sled::IVec>, StoreError> {
        let (raw, from) = self.stored_job_status(&record.id)?;
        JobStatus::check_transition(&record.id, from, record.status)?;
        Ok(raw)
    }

    /// The stored bytes of job `id`'s record and its status, decoding only the status.
    fn stored_job_status(
        &self,
        id: &str,
    ) -> Result<(Option<sled::IVec>, Option<JobStatus>), StoreError> {
        /// The one field of a `JobRecord` a transition check needs.
        #[derive(Deserialize)]
        struct StoredStatus {
            status: JobStatus,
        }
        let raw = self
            .jobs
            .get(id.as_bytes())
            .map_err(sled_failed(format_args!("read job {id}")))?;
        let status = match &raw {
            Some(raw) => Some(decode_json::<StoredStatus>(tree::JOBS, &id, raw)?.status),
            None => None,
        };
        Ok((raw, status))
    }

    /// Replaces job `record`'s stored record with `encoded` (its JSON) if the stored status
    /// may become `record.status`: a compare-and-swap, so the check holds for the very record
    /// replaced even if another writer got in between (the loop then checks again). `seen`:
    /// the stored bytes the caller has just checked, tried first without reading them again.
    fn swap_job_record(
        &self,
        record: &JobRecord,
        encoded: Vec<u8>,
        mut seen: Checked,
        action: &str,
    ) -> Result<(), StoreError> {
        let id = &record.id;
        let encoded = sled::IVec::from(encoded);
        loop {
            let raw = match std::mem::replace(&mut seen, Checked::Unread) {
                Checked::Read(raw) => raw,
                Checked::Unread => {
                    let (raw, from) = self.stored_job_status(id)?;
                    JobStatus::check_transition(id, from, record.status)?;
                    raw
                }
            };
            let swapped = self
                .jobs
                .compare_and_swap(id.as_bytes(), raw, Some(encoded.clone()))
                .map_err(sled_failed(format_args!("{action} job {id}")))?;
            if swapped.is_ok() {
                return Ok(());
            }
        }
    }

    /// Stores the result of job `id` (before its `FINISHED` record, which the caller writes
    /// next with [`Store::update_job`]), if `admit` accepts the bytes it takes: the encoded
    /// value sled would hold, or the length of the file, known once it is written under its
    /// temporary name. A refused result leaves nothing behind. Returns the bytes stored, or
    /// `None` when `admit` refused them.
    pub fn put_job_result(
        &self,
        id: &str,
        result: &DataFrame,
        admit: impl FnOnce(u64) -> bool,
    ) -> Result<Option<u64>, StoreError> {
        match self.job_result_path(id) {
            Some(path) if arrow_size(result) > JOB_RESULT_FILE_BYTES => {
                let (partial, bytes) = write_partial_result_file(id, &path, result)?;
                if !admit(bytes) {
                    remove_result_file(id, &partial);
                    return Ok(None);
                }
                std::fs::rename(&partial, &path).map_err(|e| {
                    remove_result_file(id, &partial);
                    StoreError::JobResultFile {
                        id: id.to_owned(),
                        action: "write",
                        path: path.clone(),
                        source: Box::new(e),
                    }
                })?;
                if let Err(e) = self.job_results.insert(id.as_bytes(), IN_FILE_MARKER) {
                    remove_result_file(id, &path);
                    return Err(sled_failed(format_args!("store the result of job {id}"))(e));
                }
                Ok(Some(bytes))
            }
            _ => {
                let encoded = encode_ipc(result).map_err(|e| StoreError::EncodeJobResult {
                    id: id.to_owned(),
                    source: Box::new(e),
                })?;
                let bytes = encoded.len() as u64;
                if !admit(bytes) {
                    return Ok(None);
                }
                self.job_results
                    .insert(id.as_bytes(), encoded)
                    .map_err(sled_failed(format_args!("store the result of job {id}")))?;
                Ok(Some(bytes))
            }
        }
    }

    /// The sled value of job `id`'s result: the Arrow IPC bytes, or [`IN_FILE_MARKER`].
    fn stored_job_result(&self, id: &str) -> Result<Option<sled::IVec>, StoreError> {
        self.job_results
            .get(id.as_bytes())
            .map_err(sled_failed(format_args!("read the result of job {id}")))
    }

    pub fn job_result_exists(&self, id: &str) -> Result<bool, StoreError> {
        self.job_results
            .contains_key(id.as_bytes())
            .map_err(sled_failed(format_args!("read the result of job {id}")))
    }

    /// The bytes the stored result of job `id` takes: its sled value, or the length of its
    /// file (0 when the file is gone); `None` when there is no result. For records written
    /// before [`JobRecord::result_bytes`] existed.
    pub fn job_result_bytes(&self, id: &str) -> Result<Option<u64>, StoreError> {
        let Some(stored) = self.stored_job_result(id)? else {
            return Ok(None);
        };
        if stored.as_ref() != IN_FILE_MARKER {
            return Ok(Some(stored.len() as u64));
        }
        let bytes = self
            .job_result_path(id)
            .and_then(|path| std::fs::metadata(path).ok())
            .map_or(0, |metadata| metadata.len());
        Ok(Some(bytes))
    }

    pub fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let raw = self
            .jobs
            .get(id.as_bytes())
            .map_err(sled_failed(format_args!("read job {id}")))?;
        raw.map(|raw| decode_json(tree::JOBS, &id, &raw))
            .transpose()
    }

    pub fn job_config(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let raw = self
            .job_configs
            .get(id.as_bytes())
            .map_err(sled_failed(format_args!("read the config of job {id}")))?;
        Ok(raw.map(|raw| raw.to_vec()))
    }

    /// A finished job's stored result.
    pub fn job_result(&self, id: &str) -> Result<Option<DataFrame>, StoreError> {
        let Some(stored) = self.stored_job_result(id)? else {
            return Ok(None);
        };
        let unreadable = |path: PathBuf, source: BoxedCause| StoreError::JobResultFile {
            id: id.to_owned(),
            action: "read",
            path,
            source,
        };
        if stored.as_ref() == IN_FILE_MARKER {
            let path = self
                .job_result_path(id)
                .unwrap_or_else(|| PathBuf::from(JOB_RESULTS_DIR).join(format!("{id}.arrow")));
            let file = File::open(&path).map_err(|e| unreadable(path.clone(), Box::new(e)))?;
            return IpcReader::new(file)
                .finish()
                .map(Some)
                .map_err(|e| unreadable(path, Box::new(e)));
        }
        decode_ipc(&stored)
            .map(Some)
            .map_err(|e| StoreError::Decode {
                tree: tree::JOB_RESULTS,
                key: id.to_owned(),
                source: Box::new(e),
            })
    }

    /// Where the result of job `id` is kept when it is too large for sled; `None` for a
    /// store without a directory (temporary stores keep every result in sled).
    fn job_result_path(&self, id: &str) -> Option<PathBuf> {
        let dir = self.path()?;
        Some(dir.join(JOB_RESULTS_DIR).join(format!("{id}.arrow")))
    }

    /// Jobs newest first, keeping those `keep` accepts, at most `limit` of them.
    pub fn jobs_newest(
        &self,
        limit: usize,
        mut keep: impl FnMut(&JobRecord) -> bool,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let mut jobs = Vec::new();
        for entry in self.jobs.iter().rev() {
            if jobs.len() >= limit {
                break;
            }
            let (key, raw) = entry.map_err(sled_failed(format_args!("list jobs")))?;
            let record: JobRecord = decode_json(tree::JOBS, &String::from_utf8_lossy(&key), &raw)?;
            if keep(&record) {
                jobs.push(record);
            }
        }
        Ok(jobs)
    }

    /// Every job, oldest first (start-up recovery and retention).
    pub fn jobs_oldest_first(&self) -> impl Iterator<Item = Result<JobRecord, StoreError>> + '_ {
        self.jobs.iter().map(|entry| {
            let (key, raw) = entry.map_err(sled_failed(format_args!("list jobs")))?;
            decode_json(tree::JOBS, &String::from_utf8_lossy(&key), &raw)
        })
    }

    /// Deletes a job with its config and result; the record goes first, so a crash midway
    /// leaves only invisible leftovers.
    pub fn delete_job(&self, id: &str) -> Result<(), StoreError> {
        let key = id.as_bytes();
        self.jobs
            .remove(key)
            .map_err(sled_failed(format_args!("delete job {id}")))?;
        self.job_configs
            .remove(key)
            .map_err(sled_failed(format_args!("delete job {id}")))?;
        let removed = self
            .job_results
            .remove(key)
            .map_err(sled_failed(format_args!("delete job {id}")))?;
        if removed.is_some_and(|stored| stored.as_ref() == IN_FILE_MARKER)
            && let Some(path) = self.job_result_path(id)
        {
            // The record is gone; a file left behind by a failed removal is only disk space.
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(job_id = id, path = %path.display(), %error, "cannot remove a job's result file");
            }
        }
        Ok(())
    }
}

/// Writes `frame` as an Arrow IPC file under a temporary name beside `path`, synced; returns
/// that name and the file's length. Renaming it to `path` then makes the final name only ever
/// hold a whole result.
fn write_partial_result_file(
    id: &str,
    path: &Path,
    frame: &DataFrame,
) -> Result<(PathBuf, u64), StoreError> {
    let failed = |source: BoxedCause| StoreError::JobResultFile {
        id: id.to_owned(),
        action: "write",
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| failed(Box::new(e)))?;
    }
    let partial = path.with_extension("arrow.partial");
    let written = (|| {
        let file = File::create(&partial).map_err(|e| failed(Box::new(e)))?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        IpcWriter::new(&mut writer)
            .finish(&mut frame.clone())
            .map_err(|e| failed(Box::new(e)))?;
        writer.flush().map_err(|e| failed(Box::new(e)))?;
        let file = writer
            .into_inner()
            .map_err(|e| failed(Box::new(e.into_error())))?;
        file.sync_all().map_err(|e| failed(Box::new(e)))?;
        file.metadata()
            .map(|metadata| metadata.len())
            .map_err(|e| failed(Box::new(e)))
    })();
    match written {
        Ok(bytes) => Ok((partial, bytes)),
        Err(e) => {
            // A half-written file (a full disk, say) must not stay behind unaccounted.
            remove_result_file(id, &partial);
            Err(e)
        }
    }
}

/// Removes a result file that is not (or no longer) referenced; failing only costs disk space.
fn remove_result_file(id: &str, path: &Path) {
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(job_id = id, path = %path.display(), %error, "cannot remove a job's result file");
    }
}

#[cfg(test)]
mod tests {
    use polars::df;

    use super::*;
    use crate::error_chain;

    fn record(id: &str, status: JobStatus) -> JobRecord {
        JobRecord {
            id: id.to_owned(),
            class_path: "sql".to_owned(),
            app: None,
            app_version: None,
            context: String::new(),
            context_id: "c".to_owned(),
            status,
            start_time: Utc::now(),
            end_time: None,
            failure: None,
            result_rows: None,
            result_bytes: None,
            rerun_on_restart: false,
        }
    }

    #[test]
    fn jobs_list_newest_first_and_delete_with_config_and_result() {
        let store = Store::open_temporary().unwrap();
        for (id, status) in [
            ("0001", JobStatus::Finished),
            ("0002", JobStatus::Error),
            ("0003", JobStatus::Finished),
        ] {
            store
                .insert_job(&record(id, JobStatus::Running), b"{}")
                .unwrap();
            let result = df!("id" => [id]).unwrap();
            store
                .update_job(&record(id, status), Some(&result))
                .unwrap();
        }
        let ids = |jobs: Vec<JobRecord>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.jobs_newest(2, |_| true).unwrap()),
            ["0003", "0002"]
        );
        assert_eq!(
            ids(store
                .jobs_newest(10, |j| j.status == JobStatus::Finished)
                .unwrap()),
            ["0003", "0001"]
        );
        store.delete_job("0003").unwrap();
        assert_eq!(store.job("0003").unwrap(), None);
        assert_eq!(store.job_config("0003").unwrap(), None);
        assert_eq!(store.job_result("0003").unwrap(), None);
        assert_eq!(
            store.job_config("0001").unwrap().as_deref(),
            Some(&b"{}"[..])
        );
        assert_eq!(
            store.job_result("0001").unwrap().unwrap(),
            df!("id" => ["0001"]).unwrap()
        );
    }

    #[test]
    fn a_large_result_lives_in_its_own_file_until_its_job_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let rows = JOB_RESULT_FILE_BYTES / 8 + 1000;
        let large = df!("x" => (0..rows as i64).collect::<Vec<_>>()).unwrap();
        let small = df!("x" => [1i64, 2, 3]).unwrap();
        for (id, result) in [("big", &large), ("small", &small)] {
            store
                .insert_job(&record(id, JobStatus::Running), b"{}")
                .unwrap();
            store
                .update_job(&record(id, JobStatus::Finished), Some(result))
                .unwrap();
        }
        let file = dir
            .path()
            .join("store")
            .join(JOB_RESULTS_DIR)
            .join("big.arrow");
        assert!(file.is_file(), "{} missing", file.display());
        assert!(!file.with_file_name("small.arrow").exists());
        assert!(store.job_result_exists("big").unwrap());
        assert_eq!(store.job_result("big").unwrap().unwrap(), large);
        assert_eq!(store.job_result("small").unwrap().unwrap(), small);

        // A lost file is an error naming it, not a panic or an empty result.
        let moved = file.with_extension("moved");
        std::fs::rename(&file, &moved).unwrap();
        let err = store.job_result("big").unwrap_err();
        assert!(
            error_chain(&err).contains("cannot read the result file of job big"),
            "{}",
            error_chain(&err)
        );
        std::fs::rename(&moved, &file).unwrap();

        store.delete_job("big").unwrap();
        assert!(!file.exists());
        assert_eq!(store.job_result("big").unwrap(), None);
    }

    #[test]
    fn a_result_is_stored_only_when_its_bytes_are_admitted_and_they_are_measured() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let store = Store::open(&root).unwrap();
        let rows = JOB_RESULT_FILE_BYTES / 8 + 1000;
        let large = df!("x" => (0..rows as i64).collect::<Vec<_>>()).unwrap();
        let small = df!("x" => [1i64, 2, 3]).unwrap();
        let files = || -> Vec<String> {
            match std::fs::read_dir(root.join(JOB_RESULTS_DIR)) {
                Ok(entries) => entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect(),
                Err(_) => Vec::new(),
            }
        };
        for (id, result) in [("big", &large), ("small", &small)] {
            store
                .insert_job(&record(id, JobStatus::Running), b"{}")
                .unwrap();
            // Refused: nothing is stored, not even a partial file.
            let mut offered = 0;
            let stored = store
                .put_job_result(id, result, |bytes| {
                    offered = bytes;
                    false
                })
                .unwrap();
            assert_eq!(stored, None);
            assert!(offered > 0);
            assert!(!store.job_result_exists(id).unwrap());
            assert_eq!(store.job_result_bytes(id).unwrap(), None);
            assert!(
                !files().iter().any(|file| file.starts_with(id)),
                "{:?}",
                files()
            );
            // Admitted: the bytes offered are the bytes stored, and measured again the same.
            let stored = store.put_job_result(id, result, |_| true).unwrap();
            assert_eq!(stored, Some(offered));
            assert_eq!(store.job_result_bytes(id).unwrap(), Some(offered));
            assert_eq!(&store.job_result(id).unwrap().unwrap(), result);
        }
        let file_len = std::fs::metadata(root.join(JOB_RESULTS_DIR).join("big.arrow"))
            .unwrap()
            .len();
        assert_eq!(store.job_result_bytes("big").unwrap(), Some(file_len));
        assert!(file_len > JOB_RESULT_FILE_BYTES as u64);
        assert_eq!(files(), ["big.arrow"]);

        // `result_bytes` round-trips, and a record written before it existed still reads.
        let mut finished = record("small", JobStatus::Finished);
        finished.result_bytes = Some(42);
        store.update_job(&finished, None).unwrap();
        assert_eq!(store.job("small").unwrap().unwrap().result_bytes, Some(42));
        let mut old = serde_json::to_value(record("old", JobStatus::Finished)).unwrap();
        old.as_object_mut().unwrap().remove("result_bytes");
        let old: JobRecord = serde_json::from_value(old).unwrap();
        assert_eq!(old.result_bytes, None);
    }
}
