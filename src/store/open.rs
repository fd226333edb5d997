//! Opening a store: judging a directory before sled may write to it (`layout`), creating a
//! new store, waiting out sled's file lock, reading the schema version and migrating older
//! layouts; and temporary stores for tests.

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use super::{
    SCHEMA_KEY, SCHEMA_VERSION, SLED_CACHE_BYTES, SLED_DEFAULT_TREE, Store, StoreError, layout,
    tree,
};

impl Store {
    /// Opens the store at `path`, creating it (and missing parent
    /// directories) if the path does not exist or is an empty directory.
    ///
    /// Refuses, leaving the directory byte-for-byte untouched: a path that
    /// is not a directory, a non-empty directory without Floe's marker
    /// (other programs' sled databases included), a store whose marker
    /// records a newer schema, and a store whose files fail the checks in
    /// `layout`. Two refusals can only be decided after sled has opened the
    /// database, which lets sled's recovery rewrite its own bookkeeping (a
    /// snapshot file, segment padding) but never changes data: a `meta` tree
    /// newer than the marker, and foreign data behind a Floe marker.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let found = layout::inspect(path)?;
        if found == layout::Found::Fresh {
            std::fs::create_dir_all(path).map_err(|e| layout::io_error(path, e))?;
            // Marker first: if we crash before sled writes, the directory is
            // still recognisably ours on the next open.
            layout::write_marker(path, SCHEMA_VERSION)?;
        }

        let config = sled::Config::new()
            .path(path)
            .cache_capacity(SLED_CACHE_BYTES);
        let db = open_sled(path, &config)?;
        let sled_err = |action: &str| {
            let action = format!("{action} in store at {}", path.display());
            move |source| StoreError::Sled { action, source }
        };

        let mut migrate_from = None;
        match read_schema_version(&db, path)? {
            Some(version) if version > SCHEMA_VERSION => {
                return Err(StoreError::NewerSchema {
                    path: path.to_path_buf(),
                    found: version,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(SCHEMA_VERSION) => {}
            Some(older @ (1 | 2)) => migrate_from = Some(older),
            Some(other) => {
                return Err(layout::corrupt(
                    path,
                    format!("meta tree records schema version {other}, which floe never wrote"),
                ));
            }
            None => {
                // Marker present but no version: either our creation crashed
                // before writing it (nothing else is stored yet), or the
                // database holds someone else's data.
                if let Some(tree) = tree_with_data(&db).map_err(sled_err("list trees"))? {
                    return Err(StoreError::NotAStore {
                        path: path.to_path_buf(),
                        reason: format!(
                            "sled tree {tree:?} holds data but there is no floe schema version"
                        ),
                    });
                }
                let meta = db
                    .open_tree(tree::META)
                    .map_err(sled_err("create the meta tree"))?;
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(sled_err("write the schema version"))?;
                db.flush().map_err(sled_err("flush the schema version"))?;
                tracing::info!(path = %path.display(), version = SCHEMA_VERSION, "created store");
            }
        }
        let store = Store::from_db(db, Some(path))?;
        if let Some(from) = migrate_from {
            // 1 → 2: index the active runs. The version is written only once the index is
            // whole, so a crash midway builds it again from the start.
            // 2 → 3: small result frames are stored inline in their meta's entry. Meta values
            // written before are plain JSON, which schema 3 reads as they are: nothing to
            // convert, but an older Floe must not open a store with inline frames.
            let indexed = if from < 2 {
                store.rebuild_active_index()?
            } else {
                0
            };
            let meta = store
                .db
                .open_tree(tree::META)
                .map_err(sled_err("open the meta tree"))?;
            meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                .map_err(sled_err("write the schema version"))?;
            store.flush()?;
            tracing::info!(path = %path.display(), from, to = SCHEMA_VERSION, indexed, "store migrated");
        }
        if let layout::Found::Existing { marker_version } = found {
            if marker_version != SCHEMA_VERSION {
                // The marker lags the meta tree (after a migration, or a crash during
                // one); bring it back in line.
                layout::write_marker(path, SCHEMA_VERSION)?;
            }
        }

        tracing::debug!(path = %path.display(), "opened store");
        Ok(store)
    }

    /// Opens a store that lives in memory-backed temporary files and is
    /// deleted when the last handle is dropped. For tests.
    pub fn open_temporary() -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|source| StoreError::Sled {
                action: "open a temporary store".to_owned(),
                source,
            })?;
        db.open_tree(tree::META)
            .and_then(|meta| meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes()))
            .map_err(|source| StoreError::Sled {
                action: "write the schema version of a temporary store".to_owned(),
                source,
            })?;
        Store::from_db(db, None)
    }
}

/// How long `open` waits for sled's file lock. Dropping a `Db` releases the lock
/// only when sled's background flusher thread exits, a moment later; reopening
/// in the same process (a restart, a test) must not fail on that. Another
/// process that really holds the store still gets a clear error after this.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens sled, waiting briefly for a lock that is being released.
fn open_sled(path: &Path, config: &sled::Config) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match open_sled_once(path, config) {
            Err(StoreError::Io { ref source, .. })
                if source.to_string().contains("could not acquire lock") =>
            {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::InUse {
                        path: path.to_path_buf(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Opens sled, classifying its failures. Panics are caught as a last line of
/// defence only: `layout::inspect` already rejects the inputs known to make
/// sled 0.34 assert, so a panic here is a case nobody has seen yet.
fn open_sled_once(path: &Path, config: &sled::Config) -> Result<sled::Db, StoreError> {
    match panic::catch_unwind(AssertUnwindSafe(|| config.open())) {
        Ok(Ok(db)) => Ok(db),
        // Permissions, disk full, or the lock held by another process.
        Ok(Err(sled::Error::Io(source))) => Err(layout::io_error(path, source)),
        Ok(Err(other)) => Err(layout::corrupt(path, other)),
        Err(panic) => {
            let what = crate::error::panic_message(panic.as_ref());
            Err(layout::corrupt(
                path,
                format!("sled panicked while opening: {what}"),
            ))
        }
    }
}

/// Reads `meta/schema_version` without creating the `meta` tree, so a
/// foreign database is not written to while it is being judged.
fn read_schema_version(db: &sled::Db, path: &Path) -> Result<Option<u32>, StoreError> {
    let sled_err = |source| StoreError::Sled {
        action: format!("read the schema version of store at {}", path.display()),
        source,
    };
    if !db.tree_names().iter().any(|n| n == tree::META.as_bytes()) {
        return Ok(None);
    }
    let Some(raw) = db
        .open_tree(tree::META)
        .and_then(|m| m.get(SCHEMA_KEY))
        .map_err(sled_err)?
    else {
        return Ok(None);
    };
    let bytes: [u8; 4] = raw.as_ref().try_into().map_err(|_| StoreError::Decode {
        tree: tree::META,
        key: "schema_version".to_owned(),
        source: format!("expected 4 bytes, found {}", raw.len()).into(),
    })?;
    Ok(Some(u32::from_be_bytes(bytes)))
}

/// The name of some tree (other than an empty `meta`) that holds data.
fn tree_with_data(db: &sled::Db) -> Result<Option<String>, sled::Error> {
    for name in db.tree_names() {
        let non_empty = if name == SLED_DEFAULT_TREE {
            !db.is_empty()
        } else {
            // The name comes from tree_names, so this opens, never creates.
            !db.open_tree(&name)?.is_empty()
        };
        if non_empty {
            return Ok(Some(String::from_utf8_lossy(&name).into_owned()));
        }
    }
    Ok(None)
}

#[cfg(test)]
impl Store {
    /// Records `version` as the store's schema (meta tree and marker) and flushes, so that
    /// reopening it runs the migration from that version. For migration tests.
    pub(super) fn pretend_schema(&self, path: &Path, version: u32) {
        let meta = self.db.open_tree(tree::META).unwrap();
        meta.insert(SCHEMA_KEY, &version.to_be_bytes()).unwrap();
        layout::write_marker(path, version).unwrap();
        self.flush().unwrap();
    }

    /// The schema version the meta tree records.
    pub(super) fn recorded_schema(&self) -> u32 {
        let meta = self.db.open_tree(tree::META).unwrap();
        let raw = meta.get(SCHEMA_KEY).unwrap().unwrap();
        u32::from_be_bytes(raw.as_ref().try_into().unwrap())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::RunStore;
    use std::collections::BTreeMap;
    use std::fs;
    use std::path::PathBuf;

    use chrono::{DateTime, Duration, TimeZone, Utc};

    use super::super::RunKey;
    use super::*;

    /// Every file and directory under `dir` with its bytes, to prove a
    /// refused open left the directory exactly as it was.
    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
        fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let rel = path.strip_prefix(base).unwrap().to_path_buf();
                if path.is_dir() {
                    out.insert(rel, None);
                    walk(base, &path, out);
                } else {
                    out.insert(rel, Some(fs::read(&path).unwrap()));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(dir, dir, &mut out);
        out
    }

    /// Deterministic junk (xorshift), so failures reproduce.
    fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed.to_le_bytes()[0]
            })
            .collect()
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
    }

    fn key() -> RunKey {
        RunKey::new("shop", "orders_hourly", t0())
    }

    /// A closed store at `path` holding one run.
    fn make_store(path: &Path) {
        let store = Store::open(path).unwrap();
        store
            .mark_running(&key(), t0() + Duration::hours(1), "fp", t0())
            .unwrap();
        store.flush().unwrap();
    }

    fn copy_dir(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.path().is_dir() {
                copy_dir(&entry.path(), &to.join(entry.file_name()));
            } else {
                fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }

    fn schema_in_meta(store: &Store) -> Option<u32> {
        read_schema_version(&store.db, Path::new("test")).unwrap()
    }

    /// What a newer Floe would leave behind.
    fn bump_schema(store: &Store, version: u32, marker: bool) {
        let meta = store.db.open_tree(tree::META).unwrap();
        meta.insert(SCHEMA_KEY, &version.to_be_bytes()).unwrap();
        store.flush().unwrap();
        if marker {
            layout::write_marker(store.path().unwrap(), version).unwrap();
        }
    }

    #[test]
    fn create_then_reopen_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/store");
        {
            let store = Store::open(&path).unwrap();
            assert_eq!(store.path(), Some(path.as_path()));
            assert_eq!(schema_in_meta(&store), Some(SCHEMA_VERSION));
            store
                .mark_running(&key(), t0() + Duration::hours(1), "fp", t0())
                .unwrap();
            store.flush().unwrap();
        }
        assert!(path.join(layout::MARKER_FILE).is_file());
        let store = Store::open(&path).unwrap();
        assert_eq!(schema_in_meta(&store), Some(SCHEMA_VERSION));
        assert_eq!(
            store.run(&key()).unwrap().unwrap().fingerprint.as_deref(),
            Some("fp")
        );
        assert!(format!("{store:?}").contains("store"));
    }

    #[test]
    fn empty_directory_becomes_a_store() {
        let dir = tempfile::tempdir().unwrap();
        // A leftover temp marker from a crashed creation does not count.
        fs::write(dir.path().join("floe-store.json.tmp"), b"{").unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(schema_in_meta(&store), Some(SCHEMA_VERSION));
    }

    #[test]
    fn creation_interrupted_after_the_marker_resumes() {
        let dir = tempfile::tempdir().unwrap();
        layout::write_marker(dir.path(), SCHEMA_VERSION).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(schema_in_meta(&store), Some(SCHEMA_VERSION));
        drop(store);

        // Crash after sled created its files, before the schema was written.
        let dir = tempfile::tempdir().unwrap();
        drop(sled::open(dir.path()).unwrap());
        layout::write_marker(dir.path(), SCHEMA_VERSION).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(schema_in_meta(&store), Some(SCHEMA_VERSION));
    }

    #[test]
    fn temporary_store_works() {
        let store = Store::open_temporary().unwrap();
        assert_eq!(store.path(), None);
        assert_eq!(schema_in_meta(&store), Some(SCHEMA_VERSION));
        let r = store.mark_running(&key(), t0(), "fp", t0()).unwrap();
        assert_eq!(store.run(&key()).unwrap(), Some(r));
        store.flush().unwrap();
    }

    #[test]
    fn newer_schema_is_refused_and_the_store_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let store = Store::open(&path).unwrap();
            store
                .mark_running(&key(), t0() + Duration::hours(1), "fp", t0())
                .unwrap();
            bump_schema(&store, SCHEMA_VERSION + 1, true);
        }
        let before = snapshot(&path);
        let err = Store::open(&path).unwrap_err();
        assert!(
            matches!(&err, StoreError::NewerSchema { path: p, found, supported }
                if *p == path && *found == SCHEMA_VERSION + 1 && *supported == SCHEMA_VERSION),
            "{err}"
        );
        assert!(err.to_string().contains("upgrade floe"), "{err}");
        assert_eq!(snapshot(&path), before);
    }

    #[test]
    fn newer_schema_in_meta_alone_is_refused() {
        // The marker is the fast path; the meta tree stays authoritative.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let store = Store::open(&path).unwrap();
            bump_schema(&store, 9, false);
        }
        let err = Store::open(&path).unwrap_err();
        assert!(
            matches!(err, StoreError::NewerSchema { found: 9, .. }),
            "{err}"
        );
        let err = Store::open(&path).unwrap_err();
        assert!(
            matches!(err, StoreError::NewerSchema { found: 9, .. }),
            "{err}"
        );
    }

    #[test]
    fn regular_file_is_not_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        fs::write(&path, b"precious").unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(
            matches!(&err, StoreError::NotAStore { path: p, .. } if *p == path),
            "{err}"
        );
        assert!(err.to_string().contains("notes.txt"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"precious");
    }

    #[test]
    fn non_empty_directory_is_not_a_store_and_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("thesis.tex"), b"chapter 1").unwrap();
        fs::create_dir(dir.path().join("figures")).unwrap();
        fs::write(dir.path().join("figures/a.png"), garbage(100, 1)).unwrap();
        let before = snapshot(dir.path());
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
        assert_eq!(snapshot(dir.path()), before);
    }

    #[test]
    fn foreign_sled_database_is_not_a_store_and_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("users")
                .unwrap()
                .insert("alice", "admin")
                .unwrap();
            db.flush().unwrap();
        }
        let before = snapshot(dir.path());
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(&err, StoreError::NotAStore { reason, .. } if reason.contains("sled")),
            "{err}"
        );
        assert_eq!(snapshot(dir.path()), before);
    }

    #[test]
    fn sled_data_without_schema_version_is_not_a_store() {
        // Even with a marker (copied in by hand, say), foreign data in any
        // tree, the default one included, means the database is not ours.
        for tree_name in ["users", "__sled__default"] {
            let dir = tempfile::tempdir().unwrap();
            {
                let db = sled::open(dir.path()).unwrap();
                if tree_name == "users" {
                    db.open_tree(tree_name)
                        .unwrap()
                        .insert("alice", "admin")
                        .unwrap();
                } else {
                    db.insert("alice", "admin").unwrap();
                }
                db.flush().unwrap();
            }
            layout::write_marker(dir.path(), SCHEMA_VERSION).unwrap();
            let err = Store::open(dir.path()).unwrap_err();
            assert!(
                matches!(&err, StoreError::NotAStore { reason, .. } if reason.contains(tree_name)),
                "{err}"
            );
            // Data intact, and no Floe tree was created in it.
            let db = sled::open(dir.path()).unwrap();
            let value = if tree_name == "users" {
                db.open_tree(tree_name).unwrap().get("alice").unwrap()
            } else {
                db.get("alice").unwrap()
            };
            assert_eq!(value.unwrap(), b"admin");
            assert!(!db.tree_names().iter().any(|n| n == tree::META.as_bytes()));
        }
    }

    #[test]
    fn damaged_stores_are_corrupt_and_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        make_store(&good);
        let good_db = fs::read(good.join("db")).unwrap();
        let good_conf = fs::read(good.join("conf")).unwrap();
        let conf_with = |text: &str| {
            let mut bytes = text.as_bytes().to_vec();
            bytes.extend_from_slice(&layout::crc32(text.as_bytes()).to_le_bytes());
            bytes
        };
        // A header with a valid checksum and lsn i64::MAX: sled 0.34 fails
        // an assertion in its recovery thread on this, then panics on open.
        let lsn_max_header = {
            let mut header = [0_u8; 20];
            header[4..12].copy_from_slice(&(i64::MAX ^ i64::MAX).to_le_bytes());
            header[12..20].copy_from_slice(&i64::MAX.to_le_bytes());
            let crc = layout::crc32(&header[4..20]) ^ 0xFFFF_FFFF;
            header[..4].copy_from_slice(&crc.to_le_bytes());
            header
        };

        type Damage = Box<dyn Fn(&Path)>;
        let write = |name: &'static str, bytes: Vec<u8>| -> Damage {
            Box::new(move |p: &Path| fs::write(p.join(name), &bytes).unwrap())
        };
        let cases: Vec<(&str, Damage)> = vec![
            ("db random", write("db", garbage(100_000, 7))),
            ("db zeros", write("db", vec![0; 600_000])),
            ("db first header flipped", {
                let mut db = good_db.clone();
                db[0] ^= 0x5a;
                write("db", db)
            }),
            ("db impossible lsn", {
                let mut db = good_db.clone();
                db.resize(512 * 1024, 0);
                db.extend_from_slice(&lsn_max_header);
                db.resize(1024 * 1024, 0);
                write("db", db)
            }),
            ("conf random", write("conf", garbage(300, 9))),
            ("conf short", write("conf", good_conf[..6].to_vec())),
            ("conf bad checksum", {
                let mut conf = good_conf.clone();
                let last = conf.len() - 1;
                conf[last] ^= 1;
                write("conf", conf)
            }),
            (
                "conf other segment size",
                write(
                    "conf",
                    conf_with("segment_size: 1048576\nuse_compression: false\nversion: 0.34\n"),
                ),
            ),
            (
                "conf other sled version",
                write(
                    "conf",
                    conf_with("segment_size: 524288\nuse_compression: false\nversion: 0.33\n"),
                ),
            ),
            (
                "conf missing",
                Box::new(|p: &Path| fs::remove_file(p.join("conf")).unwrap()),
            ),
            ("conf is a directory", {
                Box::new(|p: &Path| {
                    fs::remove_file(p.join("conf")).unwrap();
                    fs::create_dir(p.join("conf")).unwrap();
                })
            }),
            ("marker random", write(layout::MARKER_FILE, garbage(50, 3))),
            (
                "marker other format",
                write(
                    layout::MARKER_FILE,
                    br#"{"format":"x","schema_version":1}"#.to_vec(),
                ),
            ),
            // Passes the pre-checks; sled itself reports the corruption.
            (
                "snapshot random",
                write("snap.0000000000000000", garbage(100, 5)),
            ),
        ];
        for (i, (name, damage)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("case{i}"));
            copy_dir(&good, &path);
            damage(&path);
            let before = snapshot(&path);
            let err = Store::open(&path).unwrap_err();
            assert!(
                matches!(&err, StoreError::Corrupt { path: p, .. } if *p == path),
                "{name}: {err} / {:?}",
                std::error::Error::source(&err)
            );
            assert_eq!(snapshot(&path), before, "{name}: directory changed");
        }
        // The source store itself is fine.
        assert!(Store::open(&good).unwrap().run(&key()).unwrap().is_some());
    }

    #[test]
    fn a_store_in_use_is_named_as_such_not_as_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::InUse { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("is in use by another Floe process") && message.contains("--store"),
            "{message}"
        );
    }

    #[test]
    fn bad_schema_bytes_are_a_decode_error() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .db
                .open_tree(tree::META)
                .unwrap()
                .insert(SCHEMA_KEY, b"xx".as_slice())
                .unwrap();
            store.flush().unwrap();
        }
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::Decode { tree: "meta", .. }),
            "{err}"
        );
    }
}
