//! The job server's catalog trees: uploaded binaries (pipeline bundles) with their versions
//! and shared blobs, and context definitions. Jobs themselves are in `jobs`.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::{Store, StoreError, decode_json, encode_json, sled_failed, tree};

/// One uploaded version of a binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryMeta {
    pub app: String,
    pub version: u32,
    pub upload_time: DateTime<Utc>,
    /// Key of the bytes in `binary_blobs`; identical uploads share one blob.
    pub sha256: String,
    pub size: u64,
}

/// What the stored bundles take: distinct blobs (identical uploads share one) and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BinaryBlobUsage {
    pub blobs: usize,
    pub bytes: u64,
}

/// A context that outlives restarts: its name, id and settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextDefinition {
    pub name: String,
    pub id: String,
    pub start_time: DateTime<Utc>,
    /// The settings as given (already validated), re-applied at start-up.
    pub settings: BTreeMap<String, serde_json::Value>,
}

fn binary_key(app: &str, version: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(app.len() + 5);
    key.extend_from_slice(app.as_bytes());
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn binary_prefix(app: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(app.len() + 1);
    key.extend_from_slice(app.as_bytes());
    key.push(0);
    key
}

fn tx_error(
    action: String,
) -> impl FnOnce(sled::transaction::TransactionError<StoreError>) -> StoreError {
    move |e| match e {
        sled::transaction::TransactionError::Abort(e) => e,
        sled::transaction::TransactionError::Storage(source) => StoreError::Sled { action, source },
    }
}

impl Store {
    // ---- binaries ------------------------------------------------------------------------

    /// Stores `bytes` as the next version of `app` and returns its metadata. Only the last
    /// `keep_versions` versions (this one included; at least one) stay: older ones are deleted
    /// in the same transaction, with their blobs unless a kept version of any app shares them.
    pub fn put_binary(
        &self,
        app: &str,
        bytes: &[u8],
        sha256: &str,
        now: DateTime<Utc>,
        keep_versions: usize,
    ) -> Result<BinaryMeta, StoreError> {
        let _serialised = self
            .binary_writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let versions = self.binary_versions(app)?;
        let meta = BinaryMeta {
            app: app.to_owned(),
            version: versions.last().map_or(1, |m| m.version.saturating_add(1)),
            upload_time: now,
            sha256: sha256.to_owned(),
            size: bytes.len() as u64,
        };
        let older_kept = keep_versions.max(1) - 1;
        let pruned = &versions[..versions.len().saturating_sub(older_kept)];
        let pruned_keys: HashSet<Vec<u8>> = pruned
            .iter()
            .map(|old| binary_key(app, old.version))
            .collect();
        let mut still_used = self.blobs_in_use(|key| pruned_keys.contains(key))?;
        still_used.insert(meta.sha256.clone());
        let encoded = encode_json(tree::BINARIES, &app, &meta)?;
        (&self.binaries, &self.binary_blobs)
            .transaction(|(binaries, blobs)| {
                blobs.insert(sha256.as_bytes(), bytes)?;
                binaries.insert(binary_key(app, meta.version), encoded.as_slice())?;
                for old in pruned {
                    binaries.remove(binary_key(app, old.version))?;
                    if !still_used.contains(&old.sha256) {
                        blobs.remove(old.sha256.as_bytes())?;
                    }
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_error(format!("store binary {app}")))?;
        if let (Some(first), Some(last)) = (pruned.first(), pruned.last()) {
            tracing::info!(
                app,
                from = first.version,
                to = last.version,
                "old binary versions deleted"
            );
        }
        Ok(meta)
    }

    /// The blobs referenced by a version other than those whose key `dropping` accepts.
    fn blobs_in_use(
        &self,
        dropping: impl Fn(&[u8]) -> bool,
    ) -> Result<HashSet<String>, StoreError> {
        let mut in_use = HashSet::new();
        for entry in self.binaries.iter() {
            let (key, raw) = entry.map_err(sled_failed(format_args!("list binaries")))?;
            if !dropping(&key) {
                let meta: BinaryMeta = decode_json(tree::BINARIES, &"binaries", &raw)?;
                in_use.insert(meta.sha256);
            }
        }
        Ok(in_use)
    }

    /// How many bundle blobs are stored and their bytes (reads every blob).
    pub fn binary_blob_usage(&self) -> Result<BinaryBlobUsage, StoreError> {
        let mut usage = BinaryBlobUsage::default();
        for entry in self.binary_blobs.iter() {
            let (_, bytes) = entry.map_err(sled_failed(format_args!("list binary blobs")))?;
            usage.blobs += 1;
            usage.bytes += bytes.len() as u64;
        }
        Ok(usage)
    }

    /// Every version of `app`, oldest first.
    pub fn binary_versions(&self, app: &str) -> Result<Vec<BinaryMeta>, StoreError> {
        let mut versions = Vec::new();
        for entry in self.binaries.scan_prefix(binary_prefix(app)) {
            let (_, raw) = entry.map_err(sled_failed(format_args!("read binary {app}")))?;
            versions.push(decode_json(tree::BINARIES, &app, &raw)?);
        }
        Ok(versions)
    }

    /// The latest version of every app.
    pub fn binaries_latest(&self) -> Result<BTreeMap<String, BinaryMeta>, StoreError> {
        let mut latest = BTreeMap::new();
        for entry in self.binaries.iter() {
            let (_, raw) = entry.map_err(sled_failed(format_args!("list binaries")))?;
            let meta: BinaryMeta = decode_json(tree::BINARIES, &"binaries", &raw)?;
            // Keys sort by (app, version), so the last one seen per app is the latest.
            latest.insert(meta.app.clone(), meta);
        }
        Ok(latest)
    }

    pub fn binary_blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let raw = self
            .binary_blobs
            .get(sha256.as_bytes())
            .map_err(sled_failed(format_args!("read binary blob {sha256}")))?;
        Ok(raw.map(|raw| raw.to_vec()))
    }

    /// Deletes every version of `app`, and each blob no other app's version still uses.
    /// Returns how many versions were deleted.
    pub fn delete_binary(&self, app: &str) -> Result<usize, StoreError> {
        let _serialised = self
            .binary_writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let versions = self.binary_versions(app)?;
        let prefix = binary_prefix(app);
        let still_used = self.blobs_in_use(|key| key.starts_with(&prefix))?;
        (&self.binaries, &self.binary_blobs)
            .transaction(|(binaries, blobs)| {
                for meta in &versions {
                    binaries.remove(binary_key(app, meta.version))?;
                    if !still_used.contains(&meta.sha256) {
                        blobs.remove(meta.sha256.as_bytes())?;
                    }
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_error(format!("delete binary {app}")))?;
        Ok(versions.len())
    }

    // ---- contexts ------------------------------------------------------------------------

    pub fn put_context(&self, definition: &ContextDefinition) -> Result<(), StoreError> {
        let encoded = encode_json(tree::CONTEXTS, &definition.name, definition)?;
        self.contexts
            .insert(definition.name.as_bytes(), encoded)
            .map_err(sled_failed(format_args!(
                "store context {}",
                definition.name
            )))?;
        Ok(())
    }

    pub fn delete_context(&self, name: &str) -> Result<(), StoreError> {
        self.contexts
            .remove(name.as_bytes())
            .map_err(sled_failed(format_args!("delete context {name}")))?;
        Ok(())
    }

    pub fn context_definitions(&self) -> Result<Vec<ContextDefinition>, StoreError> {
        let mut definitions = Vec::new();
        for entry in self.contexts.iter() {
            let (_, raw) = entry.map_err(sled_failed(format_args!("list contexts")))?;
            definitions.push(decode_json(tree::CONTEXTS, &"contexts", &raw)?);
        }
        Ok(definitions)
    }

    // ---- the server's heartbeat ----------------------------------------------------------

    /// Records that the server was alive at `now`: after a crash, the last such instant is
    /// when jobs it left running stopped, give or take the heartbeat's period.
    pub fn mark_alive(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.db
            .open_tree(tree::META)
            .and_then(|meta| meta.insert(ALIVE_KEY, &now.timestamp_millis().to_be_bytes()))
            .map_err(sled_failed(format_args!("record the server's heartbeat")))?;
        Ok(())
    }

    /// The last instant [`Store::mark_alive`] recorded, if any.
    pub fn last_alive(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let raw = self
            .db
            .open_tree(tree::META)
            .and_then(|meta| meta.get(ALIVE_KEY))
            .map_err(sled_failed(format_args!("read the server's heartbeat")))?;
        Ok(raw
            .and_then(|raw| <[u8; 8]>::try_from(raw.as_ref()).ok())
            .and_then(|millis| DateTime::from_timestamp_millis(i64::from_be_bytes(millis))))
    }
}

/// The `meta` key of the server's last heartbeat (i64 milliseconds, big-endian).
const ALIVE_KEY: &[u8] = b"alive_at";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_are_versioned_and_blobs_shared_until_unused() {
        let store = Store::open_temporary().unwrap();
        let now = Utc::now();
        let v1 = store.put_binary("shop", b"one", "aa", now, 10).unwrap();
        let v2 = store.put_binary("shop", b"two", "bb", now, 10).unwrap();
        store.put_binary("copy", b"one", "aa", now, 10).unwrap();
        assert_eq!((v1.version, v2.version), (1, 2));
        assert_eq!(store.binaries_latest().unwrap()["shop"].version, 2);
        // `shop1` must not be mistaken for a version of `shop`.
        store.put_binary("shop1", b"x", "cc", now, 10).unwrap();
        assert_eq!(store.binary_versions("shop").unwrap().len(), 2);

        assert_eq!(store.delete_binary("shop").unwrap(), 2);
        assert!(store.binary_versions("shop").unwrap().is_empty());
        assert_eq!(
            store.binary_blob("aa").unwrap().as_deref(),
            Some(&b"one"[..])
        );
        assert_eq!(store.binary_blob("bb").unwrap(), None);
    }

    #[test]
    fn uploads_keep_the_last_versions_and_free_the_blobs_no_kept_version_uses() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let now = Utc::now();
        let bundle = |tag: u8| vec![tag; 64 << 10];
        let versions = |app: &str| -> Vec<(u32, String)> {
            store
                .binary_versions(app)
                .unwrap()
                .into_iter()
                .map(|m| (m.version, m.sha256))
                .collect()
        };
        // v1 and v3 share a blob; keep 3 versions.
        for (tag, sha) in [(1, "a"), (2, "b"), (1, "a")] {
            store.put_binary("shop", &bundle(tag), sha, now, 3).unwrap();
        }
        assert_eq!(store.binary_blob_usage().unwrap().blobs, 2);
        store.put_binary("shop", &bundle(3), "c", now, 3).unwrap();
        // v1 went, but its blob stays for v3.
        assert_eq!(
            versions("shop"),
            [
                (2, "b".to_owned()),
                (3, "a".to_owned()),
                (4, "c".to_owned())
            ]
        );
        assert_eq!(
            store.binary_blob("a").unwrap().as_deref(),
            Some(&bundle(1)[..])
        );
        assert_eq!(
            store.binary_blob_usage().unwrap(),
            BinaryBlobUsage {
                blobs: 3,
                bytes: 3 * (64 << 10)
            }
        );
        // Another app's kept version holds a blob as well.
        store.put_binary("copy", &bundle(2), "b", now, 3).unwrap();
        store.put_binary("shop", &bundle(4), "d", now, 3).unwrap();
        assert_eq!(
            versions("shop"),
            [
                (3, "a".to_owned()),
                (4, "c".to_owned()),
                (5, "d".to_owned())
            ]
        );
        assert!(store.binary_blob("b").unwrap().is_some());
        store.put_binary("shop", &bundle(5), "e", now, 3).unwrap();
        assert_eq!(store.binary_blob("a").unwrap(), None);
        assert_eq!(
            store.binary_blob_usage().unwrap(),
            BinaryBlobUsage {
                blobs: 4,
                bytes: 4 * (64 << 10)
            }
        );
        // Keeping one version keeps only the newest.
        store.put_binary("shop", &bundle(6), "f", now, 1).unwrap();
        assert_eq!(versions("shop"), [(7, "f".to_owned())]);
        assert_eq!(store.binary_blob_usage().unwrap().blobs, 2);

        // Deleting frees every blob no other app uses, and survives a reopen.
        assert_eq!(store.delete_binary("shop").unwrap(), 1);
        assert_eq!(store.delete_binary("copy").unwrap(), 1);
        assert_eq!(
            store.binary_blob_usage().unwrap(),
            BinaryBlobUsage::default()
        );
        store.flush().unwrap();
        drop(store);
        let store = Store::open(&dir.path().join("store")).unwrap();
        assert_eq!(
            store.binary_blob_usage().unwrap(),
            BinaryBlobUsage::default()
        );
        assert!(store.binaries_latest().unwrap().is_empty());
    }
}
