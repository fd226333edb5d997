//! The data files of `floe serve`: raw files clients upload (`POST /data/{prefix}`, as
//! spark-jobserver has it) for ad-hoc jobs to read (`input { data = …, format = csv }`).
//!
//! They live in one directory of their own (`data_files.dir`, `data-files` beside the store by
//! default), never in a data root, so no pipeline source glob picks them up. The directory is
//! Floe's: every name in it that Floe reads or deletes is one Floe gives,
//! `<prefix>-<yyyymmdd>T<hhmmss>.<mmm>Z[-<n>].dat`, and every operation takes a name (or the
//! absolute path `GET /data` lists) and checks it before touching anything:
//!
//! - a prefix is a letter, then letters, digits, `.`, `_`, `-`, at most 64 characters, without
//!   `..`: no separator, no way out of the directory;
//! - a path must be absolute, have no `.` or `..` component, and lie directly in the
//!   directory; its last component must be a name Floe gives;
//! - the file must be a regular file, not a symbolic link (checked without following it) or
//!   anything else.
//!
//! A new file is written under a temporary name in the same directory, synced, then renamed to
//! a name no file has (a counter is added when another file took the millisecond), and the
//! directory synced: a listing never shows half a file, and an upload never replaces one.
//! Changes are serialised, so the quota (`data_files.max_files`, `data_files.max_total_bytes`)
//! holds exactly; one file is at most `max_upload_bytes`. Nothing here is async: callers on an
//! async runtime call it on a blocking thread.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, NaiveDateTime, Utc};

/// The longest prefix of a data file's name.
pub const MAX_PREFIX_CHARS: usize = 64;

/// The highest `data_files.max_files` a configuration may set.
pub const MAX_FILES_LIMIT: usize = 100_000;

/// How many names an upload tries for one prefix and millisecond before giving up.
const MAX_COUNTER: u32 = 999;

/// What a temporary upload's name starts with; left-overs of a crash are removed at start.
const TEMP_PREFIX: &str = ".floe-upload-";
const TEMP_SUFFIX: &str = ".tmp";

/// The suffix of every data file.
const SUFFIX: &str = ".dat";

/// The timestamp in a name: UTC, to the millisecond, 20 characters (`20240201T000000.000Z`).
const TIMESTAMP_FORMAT: &str = "%Y%m%dT%H%M%S%.3fZ";
const TIMESTAMP_CHARS: usize = 20;

/// How much of a client's text a message repeats.
const ECHO_BYTES: usize = 256;

/// How many names a reset deletes between two scans of the directory.
const RESET_BATCH: usize = 1_024;

/// The bounds of the data-files directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFileBounds {
    /// Files at once (`data_files.max_files`).
    pub max_files: usize,
    /// Bytes of every file together (`data_files.max_total_bytes`).
    pub max_total_bytes: u64,
    /// Bytes of one file (`max_upload_bytes`, the body limit of `POST /data/{prefix}`).
    pub max_file_bytes: u64,
}

/// Why a data file could not be stored, found, read or deleted.
#[derive(Debug, thiserror::Error)]
pub enum DataFileError {
    #[error(
        "prefix `{prefix}` is invalid: {problem} (a letter, then letters, digits, `.`, `_` or \
         `-`, at most {MAX_PREFIX_CHARS} characters, no `..`)"
    )]
    BadPrefix {
        prefix: String,
        problem: &'static str,
    },
    #[error(
        "the file has {size} bytes, above the limit of {max} bytes for one data file \
         (`max_upload_bytes`)"
    )]
    TooLarge { size: u64, max: u64 },
    #[error(
        "the data-files directory holds {count} files, its limit (`data_files.max_files`); \
         delete some first (DELETE /data/{{file}} or PUT /data?reset=reboot)"
    )]
    TooManyFiles { count: usize },
    #[error(
        "the data-files directory holds {total} bytes, and {size} more would pass its limit of \
         {max} bytes (`data_files.max_total_bytes`); delete some first (DELETE /data/{{file}} \
         or PUT /data?reset=reboot)"
    )]
    TooManyBytes { total: u64, size: u64, max: u64 },
    #[error("every name for `{base}` in this millisecond is taken; retry")]
    NamesTaken { base: String },
    #[error("`{given}` is not a data file Floe manages: {problem}")]
    NotManaged { given: String, problem: String },
    #[error("data file `{name}` not found (GET /data lists them)")]
    NotFound { name: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why the data-files directory cannot be used; checked at start-up.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create or open {}: {source}", path.display())]
    Unusable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error(
        "{} has a glob character (`*`, `?`, `[`, `]`, `{{`, `}}`) in its resolved path; polars \
         would expand it: choose another directory",
        path.display()
    )]
    GlobCharacter { path: PathBuf },
    #[error(
        "{} and the data root {} overlap: pipeline sources would read uploaded data files; \
         keep the data-files directory apart from every data root",
        path.display(),
        root.display()
    )]
    OverlapsDataRoot { path: PathBuf, root: PathBuf },
}

/// One data file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DataFile {
    /// The absolute path, as `GET /data` lists it.
    pub path: PathBuf,
    pub size: u64,
}

/// The data-files directory and its bounds.
#[derive(Debug)]
pub struct DataFiles {
    /// Absolute, symlinks resolved: what paths are compared with and listed under.
    dir: PathBuf,
    bounds: DataFileBounds,
    /// Held by every change, so a quota check and the write it allows are one step.
    changes: Mutex<()>,
}

/// `text`, cut to [`ECHO_BYTES`] with its length when longer.
fn echo(text: &str) -> String {
    if text.len() <= ECHO_BYTES {
        return text.to_owned();
    }
    let mut end = ECHO_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// Checks a prefix: the problem, if any.
pub fn check_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.is_empty() {
        return Err("it is empty");
    }
    if prefix.chars().count() > MAX_PREFIX_CHARS {
        return Err("it is too long");
    }
    if !prefix.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err("it must start with a letter");
    }
    if !prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("it holds a character other than letters, digits, `.`, `_` and `-`");
    }
    if prefix.contains("..") {
        return Err("it holds `..`");
    }
    Ok(())
}

/// The prefix of `name` when it is a name Floe gives data files
/// (`<prefix>-<yyyymmdd>T<hhmmss>.<mmm>Z[-<n>].dat`).
pub fn managed_prefix(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(SUFFIX)?;
    // An optional counter after the timestamp.
    let head = match stem.rsplit_once('-') {
        Some((head, counter))
            if head.ends_with('Z')
                && !counter.is_empty()
                && counter.len() <= 3
                && counter.bytes().all(|b| b.is_ascii_digit())
                && !counter.starts_with('0') =>
        {
            head
        }
        _ => stem,
    };
    let split = head.len().checked_sub(TIMESTAMP_CHARS + 1)?;
    if !head.is_char_boundary(split) || head.as_bytes()[split] != b'-' {
        return None;
    }
    let (prefix, timestamp) = (&head[..split], &head[split + 1..]);
    NaiveDateTime::parse_from_str(timestamp, TIMESTAMP_FORMAT).ok()?;
    check_prefix(prefix).ok()?;
    Some(prefix)
}

/// The file name a reference (a bare name, or a path whose last component is the name) ends
/// in, if it is a name Floe gives; checks the shape only, not where the path leads.
pub fn referenced_name(given: &str) -> Result<&str, String> {
    let name = given.rsplit('/').next().unwrap_or(given);
    if managed_prefix(name).is_some() {
        Ok(name)
    } else {
        Err(format!(
            "`{}` is not a name Floe gives data files \
             (`<prefix>-<yyyymmdd>T<hhmmss>.<mmm>Z.dat`, as GET /data lists them)",
            echo(name)
        ))
    }
}

impl DataFiles {
    /// The directory `dir` (created, with mode 0700 on Unix, if missing) with `bounds`.
    /// Removes what an upload interrupted by a crash left.
    pub fn open(dir: &Path, bounds: DataFileBounds) -> Result<DataFiles, DataDirError> {
        let unusable = |source| DataDirError::Unusable {
            path: dir.to_path_buf(),
            source,
        };
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(unusable)?;
        let resolved = std::fs::canonicalize(dir).map_err(unusable)?;
        if !resolved.is_dir() {
            return Err(DataDirError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        if resolved
            .to_string_lossy()
            .contains(['*', '?', '[', ']', '{', '}'])
        {
            return Err(DataDirError::GlobCharacter {
                path: dir.to_path_buf(),
            });
        }
        let files = DataFiles {
            dir: resolved,
            bounds,
            changes: Mutex::new(()),
        };
        files.remove_left_overs().map_err(|e| match e {
            DataFileError::Io { source, .. } => unusable(source),
            other => unusable(std::io::Error::other(other.to_string())),
        })?;
        Ok(files)
    }

    /// The directory, absolute with symlinks resolved.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn bounds(&self) -> DataFileBounds {
        self.bounds
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataFileError + '_ {
        move |source| DataFileError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Temporary files of uploads a crash interrupted.
    fn remove_left_overs(&self) -> Result<(), DataFileError> {
        let _changing = self.lock();
        for entry in std::fs::read_dir(&self.dir).map_err(Self::io(&self.dir))? {
            let entry = entry.map_err(Self::io(&self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TEMP_PREFIX)
                && name.ends_with(TEMP_SUFFIX)
                && entry.file_type().is_ok_and(|t| t.is_file())
            {
                std::fs::remove_file(entry.path()).map_err(Self::io(&entry.path()))?;
            }
        }
        Ok(())
    }

    /// Every managed file: how many, their bytes, and the first `keep` names in order.
    fn scan(&self, keep: usize) -> Result<(usize, u64, BTreeSet<DataFile>), DataFileError> {
        let (mut count, mut bytes, mut first) = (0, 0u64, BTreeSet::new());
        for entry in std::fs::read_dir(&self.dir).map_err(Self::io(&self.dir))? {
            let entry = entry.map_err(Self::io(&self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if managed_prefix(name).is_none() {
                continue;
            }
            // Not followed: a symlink is not a data file, whatever it points to.
            let Ok(metadata) = std::fs::symlink_metadata(entry.path()) else {
                continue; // Deleted meanwhile.
            };
            if !metadata.file_type().is_file() {
                continue;
            }
            count += 1;
            bytes = bytes.saturating_add(metadata.len());
            first.insert(DataFile {
                path: self.dir.join(name),
                size: metadata.len(),
            });
            if first.len() > keep {
                first.pop_last();
            }
        }
        Ok((count, bytes, first))
    }

    /// The data files in name order, at most `data_files.max_files` of them.
    pub fn list(&self) -> Result<Vec<DataFile>, DataFileError> {
        let (_, _, first) = self.scan(self.bounds.max_files)?;
        Ok(first.into_iter().collect())
    }

    /// Stores `bytes` as a new data file named after `prefix` and `now`; its absolute path.
    pub fn store(
        &self,
        prefix: &str,
        bytes: &[u8],
        now: DateTime<Utc>,
    ) -> Result<PathBuf, DataFileError> {
        check_prefix(prefix).map_err(|problem| DataFileError::BadPrefix {
            prefix: echo(prefix),
            problem,
        })?;
        let size = bytes.len() as u64;
        if size > self.bounds.max_file_bytes {
            return Err(DataFileError::TooLarge {
                size,
                max: self.bounds.max_file_bytes,
            });
        }
        let _changing = self.lock();
        let (count, total, _) = self.scan(0)?;
        if count >= self.bounds.max_files {
            return Err(DataFileError::TooManyFiles { count });
        }
        if total.saturating_add(size) > self.bounds.max_total_bytes {
            return Err(DataFileError::TooManyBytes {
                total,
                size,
                max: self.bounds.max_total_bytes,
            });
        }
        let temp = self.dir.join(format!(
            "{TEMP_PREFIX}{}{TEMP_SUFFIX}",
            uuid::Uuid::now_v7().simple()
        ));
        let written = (|| {
            let mut file = File::options().write(true).create_new(true).open(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()
        })();
        if let Err(source) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(DataFileError::Io { path: temp, source });
        }
        let base = format!("{prefix}-{}", now.format(TIMESTAMP_FORMAT));
        let published = self.publish(&temp, &base);
        if published.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        published
    }

    /// Renames `temp` to the first free name of `base`, then syncs the directory.
    fn publish(&self, temp: &Path, base: &str) -> Result<PathBuf, DataFileError> {
        for counter in 0..=MAX_COUNTER {
            let name = if counter == 0 {
                format!("{base}{SUFFIX}")
            } else {
                format!("{base}-{counter}{SUFFIX}")
            };
            let path = self.dir.join(&name);
            // Changes are serialised, so a free name stays free until the rename.
            match std::fs::symlink_metadata(&path) {
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(DataFileError::Io { path, source }),
            }
            std::fs::rename(temp, &path).map_err(Self::io(&path))?;
            self.sync_dir();
            return Ok(path);
        }
        Err(DataFileError::NamesTaken {
            base: base.to_owned(),
        })
    }

    /// Makes renames and deletions durable (where the platform can sync a directory).
    fn sync_dir(&self) {
        if let Err(e) = File::open(&self.dir).and_then(|dir| dir.sync_all()) {
            tracing::debug!(dir = %self.dir.display(), error = %e, "cannot sync the data-files directory");
        }
    }

    /// The managed file `given` names (its name, or its absolute path as [`DataFiles::list`]
    /// gives it), checked: inside the directory, a name Floe gives, a regular file.
    pub fn resolve(&self, given: &str) -> Result<PathBuf, DataFileError> {
        let not_managed = |problem: String| DataFileError::NotManaged {
            given: echo(given),
            problem,
        };
        if given.contains('\0') {
            return Err(not_managed("it holds a NUL byte".to_owned()));
        }
        let name = if given.contains('/') || given.contains('\\') {
            let path = Path::new(given);
            if !path.is_absolute() || given.contains('\\') {
                return Err(not_managed(
                    "give the file's name, or its absolute path as GET /data lists it".to_owned(),
                ));
            }
            if given.ends_with('/')
                || given
                    .split('/')
                    .any(|segment| segment == "." || segment == "..")
                || path
                    .components()
                    .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
            {
                return Err(not_managed(
                    "the path has a `.` or `..` component".to_owned(),
                ));
            }
            if path.parent() != Some(self.dir.as_path()) {
                return Err(not_managed(format!(
                    "it is not directly inside the data-files directory {}",
                    self.dir.display()
                )));
            }
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
        } else {
            given
        };
        if managed_prefix(name).is_none() {
            return Err(not_managed(referenced_name(name).err().unwrap_or_default()));
        }
        let path = self.dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(metadata) if metadata.file_type().is_file() => Ok(path),
            Ok(metadata) if metadata.file_type().is_symlink() => {
                Err(not_managed("it is a symbolic link".to_owned()))
            }
            Ok(_) => Err(not_managed("it is not a regular file".to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(DataFileError::NotFound {
                name: name.to_owned(),
            }),
            Err(source) => Err(DataFileError::Io { path, source }),
        }
    }

    /// Deletes the managed file `given` names (see [`DataFiles::resolve`]); its path.
    pub fn delete(&self, given: &str) -> Result<PathBuf, DataFileError> {
        let _changing = self.lock();
        let path = self.resolve(given)?;
        std::fs::remove_file(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                DataFileError::NotFound {
                    name: given.to_owned(),
                }
            } else {
                DataFileError::Io {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        self.sync_dir();
        Ok(path)
    }

    /// Deletes every managed file; how many.
    pub fn reset(&self) -> Result<usize, DataFileError> {
        let mut deleted = 0;
        loop {
            let _changing = self.lock();
            let (_, _, batch) = self.scan(RESET_BATCH)?;
            if batch.is_empty() {
                break;
            }
            let mut progressed = false;
            for file in batch {
                match std::fs::remove_file(&file.path) {
                    Ok(()) => {
                        deleted += 1;
                        progressed = true;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(DataFileError::Io {
                            path: file.path,
                            source,
                        });
                    }
                }
            }
            self.sync_dir();
            if !progressed {
                break;
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> DataFileBounds {
        DataFileBounds {
            max_files: 3,
            max_total_bytes: 100,
            max_file_bytes: 50,
        }
    }

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_706_745_600_000 + ms).unwrap()
    }

    #[test]
    fn prefixes_and_names_follow_the_rule() {
        for good in ["a", "sales", "Sales.v2_x-1", &"a".repeat(64)] {
            assert_eq!(check_prefix(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "-a",
            ".a",
            "a/b",
            "a\\b",
            "a..b",
            "a b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
        assert_eq!(
            managed_prefix("sales-20240201T000000.000Z.dat"),
            Some("sales")
        );
        assert_eq!(
            managed_prefix("a-b.c-20240201T000000.123Z-12.dat"),
            Some("a-b.c")
        );
        for bad in [
            "sales-20240201T000000.000Z",
            "sales-20240201T000000.000Z.dat.tmp",
            "-20240201T000000.000Z.dat",
            "sales_20240201T000000.000Z.dat",
            "sales-20241301T000000.000Z.dat",
            "sales-20240201T000000.000Z-0.dat",
            "sales-20240201T000000.000Z-1000.dat",
            "../x-20240201T000000.000Z.dat",
            "passwd",
            "é-20240201T000000.000Z.dat",
        ] {
            assert_eq!(managed_prefix(bad), None, "{bad}");
        }
    }

    #[test]
    fn store_list_delete_and_reset() {
        let dir = tempfile::tempdir().unwrap();
        let files = DataFiles::open(&dir.path().join("data-files"), bounds()).unwrap();
        let first = files.store("sales", b"a\n1\n", at(0)).unwrap();
        assert_eq!(
            first,
            files.dir().join("sales-20240201T000000.000Z.dat"),
            "{first:?}"
        );
        // The same millisecond: a counter, never a replacement.
        let second = files.store("sales", b"a\n2\n", at(0)).unwrap();
        assert_eq!(second, files.dir().join("sales-20240201T000000.000Z-1.dat"));
        assert_eq!(std::fs::read(&first).unwrap(), b"a\n1\n");
        // In name order (`-` sorts before `.`).
        let listed: Vec<PathBuf> = files.list().unwrap().into_iter().map(|f| f.path).collect();
        assert_eq!(listed, [second.clone(), first.clone()]);
        // Quota: a third fits, a fourth file does not; nor do bytes past the total.
        files.store("b", &[b'x'; 50], at(1)).unwrap();
        let err = files.store("c", b"x", at(2)).unwrap_err();
        assert!(
            matches!(err, DataFileError::TooManyFiles { count: 3 }),
            "{err}"
        );
        files
            .delete(first.file_name().unwrap().to_str().unwrap())
            .unwrap();
        let err = files.store("c", &[b'x'; 50], at(2)).unwrap_err();
        assert!(
            matches!(err, DataFileError::TooManyBytes { total: 54, .. }),
            "{err}"
        );
        let err = files.store("c", &[b'x'; 51], at(2)).unwrap_err();
        assert!(matches!(err, DataFileError::TooLarge { .. }), "{err}");
        assert_eq!(files.list().unwrap().len(), 2);
        // Deleting by the absolute path; then it is gone.
        files.delete(second.to_str().unwrap()).unwrap();
        let err = files.delete(second.to_str().unwrap()).unwrap_err();
        assert!(matches!(err, DataFileError::NotFound { .. }), "{err}");
        assert_eq!(files.reset().unwrap(), 1);
        assert!(files.list().unwrap().is_empty());
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(files.dir()).unwrap().count(), 0);
    }

    #[cfg(unix)]
    #[test]
    fn hostile_references_touch_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let secret = outside.join("x-20240201T000000.000Z.dat");
        std::fs::write(&secret, "secret").unwrap();
        let files = DataFiles::open(&dir.path().join("data-files"), bounds()).unwrap();
        let link = files.dir().join("link-20240201T000000.000Z.dat");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        std::fs::create_dir(files.dir().join("d-20240201T000000.000Z.dat")).unwrap();
        let inside = files.dir().join("x-20240201T000000.000Z.dat");
        let sneaky = format!(
            "{}/../outside/x-20240201T000000.000Z.dat",
            files.dir().display()
        );
        for given in [
            "../x",
            "/etc/passwd",
            "passwd",
            secret.to_str().unwrap(),
            "link-20240201T000000.000Z.dat",
            link.to_str().unwrap(),
            "d-20240201T000000.000Z.dat",
            &sneaky,
            "x-20240201T000000.000Z.dat/",
            "./x-20240201T000000.000Z.dat",
            "a\0b",
            "",
        ] {
            let err = files.delete(given).unwrap_err();
            assert!(
                matches!(err, DataFileError::NotManaged { .. }),
                "{given:?}: {err}"
            );
            assert!(files.resolve(given).is_err(), "{given:?}");
        }
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "secret");
        assert!(std::fs::symlink_metadata(&link).is_ok());
        // Listing and reset skip what Floe did not make.
        assert!(files.list().unwrap().is_empty());
        assert_eq!(files.reset().unwrap(), 0);
        assert!(std::fs::symlink_metadata(&link).is_ok());
        assert!(!inside.exists());
        assert!(matches!(
            files.resolve("x-20240201T000000.000Z.dat").unwrap_err(),
            DataFileError::NotFound { .. }
        ));
    }

    #[test]
    fn left_overs_of_a_crash_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data-files");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join(".floe-upload-abc.tmp"), "half").unwrap();
        std::fs::write(path.join("keep.txt"), "other").unwrap();
        DataFiles::open(&path, bounds()).unwrap();
        assert!(!path.join(".floe-upload-abc.tmp").exists());
        assert!(path.join("keep.txt").exists());
        std::fs::write(dir.path().join("file"), "").unwrap();
        assert!(DataFiles::open(&dir.path().join("file"), bounds()).is_err());
    }
}
