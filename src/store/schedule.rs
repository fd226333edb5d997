//! The scheduler's own trees: `schedule_cursors` (per job, how far recurring runs have been
//! planned) and `backfills` (backfill and restatement requests with their state).
//!
//! Both are small. The runs themselves, with their states, live in the `runs` tree; a
//! backfill's progress is counted from them rather than stored, so it cannot drift from the
//! truth after a crash.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, decode_json, encode_json, sled_failed, tree};

/// Where a backfill is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackfillState {
    /// Its runs are queued and dispatched within the limits.
    Running,
    /// Its queued runs wait; runs already started finish.
    Paused,
    /// Its queued runs were cancelled; runs already started finished.
    Cancelled,
    /// Every run has succeeded or failed for good.
    Finished,
}

impl BackfillState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackfillState::Running => "running",
            BackfillState::Paused => "paused",
            BackfillState::Cancelled => "cancelled",
            BackfillState::Finished => "finished",
        }
    }

    /// Whether the scheduler still works on it.
    pub fn is_live(self) -> bool {
        matches!(self, BackfillState::Running | BackfillState::Paused)
    }
}

/// A backfill or restatement request, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackfillRecord {
    pub id: String,
    pub pipeline: String,
    /// The jobs asked for; `None` means every job. Their upstream runs are included.
    pub jobs: Option<Vec<String>>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Recompute partitions whose stored result is fresh.
    pub force: bool,
    /// A restatement: the jobs' partitions and, by cascade, every downstream partition that
    /// read them are recomputed.
    #[serde(default)]
    pub restate: bool,
    pub state: BackfillState,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

fn cursor_key(pipeline: &str, job: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(pipeline.len() + job.len() + 1);
    key.extend_from_slice(pipeline.as_bytes());
    key.push(0);
    key.extend_from_slice(job.as_bytes());
    key
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    planned_through: DateTime<Utc>,
}

impl Store {
    /// The end of the last window the scheduler planned for a job's recurring runs.
    pub fn schedule_cursor(
        &self,
        pipeline: &str,
        job: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let key = cursor_key(pipeline, job);
        let label = format!("{pipeline}/{job}");
        let raw = self
            .schedule_cursors
            .get(&key)
            .map_err(sled_failed(format_args!("read schedule cursor {label}")))?;
        raw.map(|raw| decode_json::<Cursor>(tree::SCHEDULE_CURSORS, &label, &raw))
            .transpose()
            .map(|cursor| cursor.map(|c| c.planned_through))
    }

    pub fn set_schedule_cursor(
        &self,
        pipeline: &str,
        job: &str,
        planned_through: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let label = format!("{pipeline}/{job}");
        let value = encode_json(tree::SCHEDULE_CURSORS, &label, &Cursor { planned_through })?;
        self.schedule_cursors
            .insert(cursor_key(pipeline, job), value)
            .map_err(sled_failed(format_args!("write schedule cursor {label}")))?;
        Ok(())
    }

    /// Stores a backfill's record and flushes it to disk before returning: a backfill is
    /// acknowledged to its caller (202 over REST) only once a crash can no longer lose it.
    /// sled otherwise keeps recent writes in memory for up to half a second.
    pub fn put_backfill(&self, record: &BackfillRecord) -> Result<(), StoreError> {
        let value = encode_json(tree::BACKFILLS, &record.id, record)?;
        self.backfills
            .insert(record.id.as_bytes(), value)
            .map_err(sled_failed(format_args!("write backfill {}", record.id)))?;
        self.flush()
    }

    pub fn backfill(&self, id: &str) -> Result<Option<BackfillRecord>, StoreError> {
        let raw = self
            .backfills
            .get(id.as_bytes())
            .map_err(sled_failed(format_args!("read backfill {id}")))?;
        raw.map(|raw| decode_json(tree::BACKFILLS, &id, &raw))
            .transpose()
    }

    /// The newest backfills first, at most `limit` of those `keep` accepts.
    pub fn backfills_newest(
        &self,
        limit: usize,
        mut keep: impl FnMut(&BackfillRecord) -> bool,
    ) -> Result<Vec<BackfillRecord>, StoreError> {
        let mut records = Vec::new();
        for entry in self.backfills.iter().rev() {
            if records.len() >= limit {
                break;
            }
            let (key, raw) = entry.map_err(sled_failed(format_args!("list backfills")))?;
            let id = String::from_utf8_lossy(&key).into_owned();
            let record: BackfillRecord = decode_json(tree::BACKFILLS, &id, &raw)?;
            if keep(&record) {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// Deletes the records of backfills `ids` (finished ones the history no longer keeps).
    pub fn delete_backfills(&self, ids: &[String]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for id in ids {
            batch.remove(id.as_bytes());
        }
        self.backfills
            .apply_batch(batch)
            .map_err(sled_failed(format_args!("delete {} backfills", ids.len())))
    }

    /// Every backfill, oldest first (ids are time-ordered UUIDv7s).
    pub fn backfills(&self) -> Result<Vec<BackfillRecord>, StoreError> {
        let mut records = Vec::new();
        for entry in self.backfills.iter() {
            let (key, raw) = entry.map_err(sled_failed(format_args!("list backfills")))?;
            let id = String::from_utf8_lossy(&key).into_owned();
            records.push(decode_json(tree::BACKFILLS, &id, &raw)?);
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn cursors_and_backfills_round_trip() {
        let store = Store::open_temporary().unwrap();
        let t = Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap();
        assert_eq!(store.schedule_cursor("shop", "a").unwrap(), None);
        store.set_schedule_cursor("shop", "a", t).unwrap();
        store
            .set_schedule_cursor("shop", "ab", t + chrono::Duration::hours(1))
            .unwrap();
        assert_eq!(store.schedule_cursor("shop", "a").unwrap(), Some(t));
        let record = BackfillRecord {
            id: "b1".into(),
            pipeline: "shop".into(),
            jobs: Some(vec!["a".into()]),
            from: t,
            to: t + chrono::Duration::days(1),
            force: false,
            restate: false,
            state: BackfillState::Running,
            created_at: t,
            finished_at: None,
        };
        store.put_backfill(&record).unwrap();
        assert_eq!(store.backfill("b1").unwrap(), Some(record.clone()));
        assert_eq!(store.backfills().unwrap(), vec![record.clone()]);

        // Newest first, filtered and bounded; deleted records are gone.
        for (id, pipeline) in [("b2", "other"), ("b3", "shop"), ("b4", "shop")] {
            store
                .put_backfill(&BackfillRecord {
                    id: id.into(),
                    pipeline: pipeline.into(),
                    ..record.clone()
                })
                .unwrap();
        }
        let ids = |records: Vec<BackfillRecord>| -> Vec<String> {
            records.into_iter().map(|r| r.id).collect()
        };
        assert_eq!(
            ids(store.backfills_newest(2, |r| r.pipeline == "shop").unwrap()),
            ["b4", "b3"]
        );
        assert_eq!(
            ids(store.backfills_newest(10, |_| true).unwrap()),
            ["b4", "b3", "b2", "b1"]
        );
        store
            .delete_backfills(&["b1".to_owned(), "b3".to_owned()])
            .unwrap();
        assert_eq!(ids(store.backfills().unwrap()), ["b2", "b4"]);
        assert_eq!(store.backfill("b3").unwrap(), None);
    }
}
