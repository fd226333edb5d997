//! API tokens: their format, the JSON file of their hashes ([`TokenStore`]) and the server's
//! in-memory copy of it ([`Keyring`]).
//!
//! A token is `floe_<id>_<secret>`. The id is 12 random base32 characters (60 bits): public,
//! printed by `floe token list`, written to the audit log, used to find the token and to
//! revoke it. The secret is 32 random bytes from the operating system, written as 64 hex
//! characters; it is shown once, when the token is created, and never stored.
//!
//! The file keeps SHA-256 of the secret's bytes. A fast hash is the right one here, not a
//! password hash (argon2, bcrypt, scrypt): those are slow to make guessing a low-entropy
//! password expensive, but a 256-bit random secret cannot be guessed whatever the hash costs,
//! so a slow hash would only make every request pay milliseconds. Checking a request is a
//! `HashMap` lookup by id plus one SHA-256 of 32 bytes, compared in constant time.
//!
//! Writers (`floe token …` and the server's `/tokens` routes, possibly at the same time)
//! take an advisory lock on `<file>.lock`, read the file, change it and replace it
//! atomically (temporary file, fsync, rename, fsync of the folder), mode 0600 on unix.
//! Readers never lock: a rename is atomic, so they see the old file or the new one. The
//! server checks the file's identity (modification time, length, inode) at most once a
//! second and reloads it when it changed, so a revocation takes effect without a restart.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{error, info};

use super::{AuthError, Identity, Role, TokenInputError};

/// Every token starts with this.
pub const TOKEN_PREFIX: &str = "floe_";
/// Characters of a token id.
pub const ID_LEN: usize = 12;
/// Bytes of a token secret.
const SECRET_LEN: usize = 32;
/// RFC 4648 base32, lowercase: ids are case-sensitive and never contain `_`.
const ID_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// The file format this Floe writes and reads.
pub const FILE_VERSION: u32 = 1;
/// How often the server looks at the tokens file for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// Longest token name: names are shown in tables and written to the audit log.
const MAX_NAME_LEN: usize = 100;

/// One token in the file. Never holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub revoked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// SHA-256 of the secret's 32 bytes, hex.
    pub secret_sha256: String,
}

impl TokenRecord {
    /// Neither revoked nor expired at `now`.
    pub fn is_usable(&self, now: DateTime<Utc>) -> bool {
        !self.revoked && self.expires_at.is_none_or(|at| at > now)
    }
}

/// The tokens file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    pub version: u32,
    #[serde(default)]
    pub tokens: Vec<TokenRecord>,
}

impl Default for TokenFile {
    fn default() -> Self {
        TokenFile {
            version: FILE_VERSION,
            tokens: Vec::new(),
        }
    }
}

impl TokenFile {
    /// Parses and checks the file's bytes; errors name `path`.
    fn parse(bytes: &[u8], path: &Path) -> Result<TokenFile, AuthError> {
        let corrupt = |message: String| AuthError::Corrupt {
            path: path.display().to_string(),
            message,
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(TokenFile::default());
        }
        let file: TokenFile = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if file.version != FILE_VERSION {
            return Err(corrupt(format!(
                "version {} (this Floe reads version {FILE_VERSION})",
                file.version
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for token in &file.tokens {
            if !is_token_id(&token.id) {
                return Err(corrupt(format!("`{}` is not a token id", token.id)));
            }
            if !seen.insert(token.id.as_str()) {
                return Err(corrupt(format!("token id `{}` appears twice", token.id)));
            }
            if decode_hash(&token.secret_sha256).is_none() {
                return Err(corrupt(format!(
                    "token `{}`: `secret_sha256` is not 64 hex characters",
                    token.id
                )));
            }
        }
        Ok(file)
    }

    fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Whether a token can authenticate at `now`: what turns authentication on.
    pub fn has_usable(&self, now: DateTime<Utc>) -> bool {
        self.tokens.iter().any(|t| t.is_usable(now))
    }

    /// Whether an admin token can authenticate at `now`.
    pub fn has_usable_admin(&self, now: DateTime<Utc>) -> bool {
        self.tokens
            .iter()
            .any(|t| t.role == Role::Admin && t.is_usable(now))
    }
}

/// A token just created: the only time its full text exists. `Debug` hides the secret.
#[derive(Clone)]
pub struct IssuedToken {
    /// `floe_<id>_<secret>`: give it to the client, it cannot be shown again.
    pub token: String,
    pub record: TokenRecord,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &format_args!("{TOKEN_PREFIX}{}_…", self.record.id))
            .field("record", &self.record)
            .finish()
    }
}

/// Whether `id` is shaped like a token id.
pub fn is_token_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| ID_ALPHABET.contains(&b))
}

/// The id and secret of a token, or `None` when `text` is not shaped like one.
pub fn parse_token(text: &str) -> Option<(&str, [u8; SECRET_LEN])> {
    let (id, secret_hex) = text.strip_prefix(TOKEN_PREFIX)?.split_once('_')?;
    if !is_token_id(id) || secret_hex.len() != 2 * SECRET_LEN {
        return None;
    }
    let mut secret = [0u8; SECRET_LEN];
    hex::decode_to_slice(secret_hex, &mut secret).ok()?;
    Some((id, secret))
}

/// What the file stores for a secret.
fn secret_hash(secret: &[u8; SECRET_LEN]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

fn decode_hash(text: &str) -> Option<[u8; 32]> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(text, &mut hash).ok()?;
    Some(hash)
}

/// Equality of two hashes in time independent of where they differ, so response times do
/// not tell an attacker how much of a guessed secret's hash was right.
fn hashes_match(a: &[u8; 32], b: &[u8; 32]) -> bool {
    bool::from(a[..].ct_eq(&b[..]))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(bytes)
}

fn new_id() -> Result<String, AuthError> {
    let bits = u64::from_le_bytes(random_bytes::<8>()?);
    Ok((0..ID_LEN)
        .map(|i| char::from(ID_ALPHABET[((bits >> (5 * i)) & 31) as usize]))
        .collect())
}

/// Checks a token name: at most 100 characters, no control characters.
pub fn check_name(name: &str) -> Result<(), TokenInputError> {
    if name.chars().count() > MAX_NAME_LEN {
        return Err(TokenInputError::NameTooLong { max: MAX_NAME_LEN });
    }
    if name.chars().any(char::is_control) {
        return Err(TokenInputError::NameHasControlCharacters);
    }
    Ok(())
}

/// `30d`, `12h`, `1w`: when a token created at `now` with that lifetime expires.
pub fn expiry_after(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, TokenInputError> {
    // The duration parser's own message is dropped: it speaks of job timeouts.
    let lifetime = crate::jobserver::context::parse_duration(text).map_err(|_| {
        TokenInputError::UnparsableLifetime {
            given: text.to_owned(),
        }
    })?;
    TimeDelta::from_std(lifetime)
        .ok()
        .and_then(|delta| now.checked_add_signed(delta))
        .ok_or_else(|| TokenInputError::LifetimeTooLong {
            given: text.to_owned(),
        })
}

/// The tokens file, for writers: `floe token …` and the server's `/tokens` routes. Cheap to
/// create; every call reads the file afresh, so two handles (two processes) never disagree.
#[derive(Debug, Clone)]
pub struct TokenStore {
    path: PathBuf,
}

impl TokenStore {
    pub fn new(path: impl Into<PathBuf>) -> TokenStore {
        TokenStore { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's tokens; a missing file holds none.
    pub fn load(&self) -> Result<TokenFile, AuthError> {
        Ok(read_file(&self.path)?.unwrap_or_default())
    }

    /// Creates a token and returns it with its secret, which is not kept anywhere.
    pub fn create(
        &self,
        role: Role,
        name: &str,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, AuthError> {
        check_name(name)?;
        self.update(|file| {
            let mut id = new_id()?;
            while file.tokens.iter().any(|t| t.id == id) {
                id = new_id()?;
            }
            let secret = random_bytes::<SECRET_LEN>()?;
            let record = TokenRecord {
                id: id.clone(),
                name: name.to_owned(),
                role,
                created_at: now,
                expires_at,
                revoked: false,
                revoked_at: None,
                secret_sha256: hex::encode(secret_hash(&secret)),
            };
            file.tokens.push(record.clone());
            Ok(IssuedToken {
                token: format!("{TOKEN_PREFIX}{id}_{}", hex::encode(secret)),
                record,
            })
        })
    }

    /// Revokes the token `id` (again is fine: the first revocation time is kept).
    pub fn revoke(&self, id: &str, now: DateTime<Utc>) -> Result<TokenRecord, AuthError> {
        self.update(|file| {
            let token = file
                .tokens
                .iter_mut()
                .find(|t| t.id == id)
                .ok_or_else(|| AuthError::UnknownToken(id.to_owned()))?;
            if !token.revoked {
                token.revoked = true;
                token.revoked_at = Some(now);
            }
            Ok(token.clone())
        })
    }

    /// Read, change and replace the file under the writers' lock.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut TokenFile) -> Result<T, AuthError>,
    ) -> Result<T, AuthError> {
        let _lock = self.lock()?;
        let mut file = self.load()?;
        let out = change(&mut file)?;
        write_atomically(&self.path, &file.to_json())?;
        Ok(out)
    }

    /// Blocks until this handle is the only writer; the lock goes with the returned file.
    /// The lock is on `<file>.lock`, not on the file itself, which renames replace.
    fn lock(&self) -> Result<File, AuthError> {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        create_parent(&path)?;
        let file = private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| AuthError::io(&path, "cannot open the lock file", e))?;
        fs4::FileExt::lock(&file).map_err(|e| AuthError::io(&path, "cannot lock", e))?;
        Ok(file)
    }
}

/// The file's tokens, `None` when it does not exist.
fn read_file(path: &Path) -> Result<Option<TokenFile>, AuthError> {
    match fs::read(path) {
        Ok(bytes) => TokenFile::parse(&bytes, path).map(Some),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AuthError::io(path, "cannot read the tokens file", e)),
    }
}

/// Options that create files readable and writable by their owner only (on unix).
pub(crate) fn private_options() -> OpenOptions {
    #[allow(unused_mut)] // Only unix adds a mode.
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

pub(crate) fn create_parent(path: &Path) -> Result<(), AuthError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            fs::create_dir_all(dir).map_err(|e| AuthError::io(dir, "cannot create the folder", e))
        }
        _ => Ok(()),
    }
}

/// Replaces `path` with `bytes`: a reader sees the old file or the new one, never a part,
/// and after a crash the file is one of the two.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    create_parent(path)?;
    let name = path
        .file_name()
        .map_or_else(|| "tokens".into(), |n| n.to_string_lossy().into_owned());
    // Writers hold the lock, so the process id makes the name unique.
    let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&temp); // A leftover of a crash, with whatever mode it had.
    let written = (|| {
        let mut file = private_options()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| AuthError::io(&temp, "cannot create", e))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| AuthError::io(&temp, "cannot write", e))?;
        drop(file);
        fs::rename(&temp, path).map_err(|e| AuthError::io(path, "cannot replace", e))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    sync_folder(path);
    Ok(())
}

/// Makes the rename durable: the folder entry is data too.
#[cfg(unix)]
fn sync_folder(path: &Path) {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

#[cfg(not(unix))]
fn sync_folder(_path: &Path) {}

/// Why a presented token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not shaped like `floe_<id>_<secret>`.
    Malformed,
    /// No token with that id, or the secret does not match (not told apart on purpose).
    Unknown,
    Revoked,
    Expired,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Malformed => "the token is not a Floe token (floe_<id>_<secret>)",
            Refusal::Unknown => "invalid token",
            Refusal::Revoked => "the token has been revoked",
            Refusal::Expired => "the token has expired",
        })
    }
}

/// What identifies a version of the file: a writer's rename gives it a new inode, and
/// modification time and length catch an edit in place.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
}

impl FileStamp {
    /// `None` when the file does not exist (or cannot be looked at; reading it says why).
    fn of(path: &Path) -> Option<FileStamp> {
        let meta = fs::metadata(path).ok()?;
        Some(FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&meta),
        })
    }
}

#[derive(Debug)]
struct KeyEntry {
    hash: [u8; 32],
    expires_at: Option<DateTime<Utc>>,
    revoked: bool,
    identity: Arc<Identity>,
}

/// One version of the file, as the server checks requests against it.
#[derive(Debug, Default)]
struct Snapshot {
    stamp: Option<FileStamp>,
    tokens: HashMap<String, KeyEntry>,
    usable_admin: bool,
}

impl Snapshot {
    fn of(file: &TokenFile, stamp: Option<FileStamp>, now: DateTime<Utc>) -> Snapshot {
        let tokens = file
            .tokens
            .iter()
            .filter_map(|t| {
                let entry = KeyEntry {
                    hash: decode_hash(&t.secret_sha256)?,
                    expires_at: t.expires_at,
                    revoked: t.revoked,
                    identity: Arc::new(Identity {
                        token_id: t.id.clone(),
                        name: t.name.clone(),
                        role: t.role,
                    }),
                };
                Some((t.id.clone(), entry))
            })
            .collect();
        Snapshot {
            stamp,
            tokens,
            usable_admin: file.has_usable_admin(now),
        }
    }
}

/// The server's copy of the tokens file: what every request is checked against, with no file
/// I/O on the way (at most one `stat` a second, and a read when the file changed).
///
/// Authentication is on when the file held a usable token at start-up or `auth.required` is
/// set, and it only ever turns on while the server runs: a token created later turns it on,
/// revoking every token refuses everyone, and a file that stops being readable refuses
/// everyone (it is never trusted, and never taken as "no tokens").
#[derive(Debug)]
pub struct Keyring {
    path: PathBuf,
    snapshot: RwLock<Arc<Snapshot>>,
    enforcing: AtomicBool,
    /// Start of the clock `last_check_ms` counts on.
    epoch: Instant,
    /// When the file was last looked at, in ms since `epoch`; the request that moves it
    /// does the check, the others go on.
    last_check_ms: AtomicU64,
    interval: Duration,
}

impl Keyring {
    /// Loads `path` (a missing file holds no token); a file that does not parse is an error
    /// naming it.
    pub fn open(
        path: &Path,
        required: bool,
        interval: Duration,
        now: DateTime<Utc>,
    ) -> Result<Keyring, AuthError> {
        let stamp = FileStamp::of(path);
        let file = read_file(path)?.unwrap_or_default();
        let snapshot = Snapshot::of(&file, stamp, now);
        Ok(Keyring {
            path: path.to_owned(),
            snapshot: RwLock::new(Arc::new(snapshot)),
            enforcing: AtomicBool::new(required || file.has_usable(now)),
            epoch: Instant::now(),
            last_check_ms: AtomicU64::new(0),
            interval,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether requests must carry a token.
    pub fn enforcing(&self) -> bool {
        self.enforcing.load(Ordering::Relaxed)
    }

    /// Whether an admin token can authenticate (as of the last reload).
    pub fn has_usable_admin(&self) -> bool {
        self.current().usable_admin
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reloads the file if it changed and the last look is at least the interval old. Cheap
    /// when there is nothing to do: one atomic load.
    pub fn refresh(&self, now: DateTime<Utc>) {
        let elapsed = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_check_ms.load(Ordering::Relaxed);
        if elapsed.saturating_sub(last) < self.interval.as_millis() as u64 {
            return;
        }
        if self
            .last_check_ms
            .compare_exchange(last, elapsed, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.reload_if_changed(now, false);
        }
    }

    /// Reloads the file now, changed or not (after this process wrote it).
    pub fn reload(&self, now: DateTime<Utc>) {
        self.reload_if_changed(now, true);
    }

    fn reload_if_changed(&self, now: DateTime<Utc>, force: bool) {
        let stamp = FileStamp::of(&self.path);
        if !force && self.current().stamp == stamp {
            return;
        }
        let snapshot = match read_file(&self.path) {
            Ok(file) => {
                let file = file.unwrap_or_default();
                if file.has_usable(now) && !self.enforcing.swap(true, Ordering::Relaxed) {
                    info!(
                        file = %self.path.display(),
                        "authentication is now on: the tokens file holds a token"
                    );
                }
                info!(
                    file = %self.path.display(),
                    tokens = file.tokens.len(),
                    "tokens file reloaded"
                );
                Snapshot::of(&file, stamp, now)
            }
            Err(e) => {
                error!(
                    error = %crate::error::error_chain(&e),
                    "tokens file unreadable: every token is refused until it is fixed"
                );
                self.enforcing.store(true, Ordering::Relaxed);
                Snapshot {
                    stamp,
                    ..Snapshot::default()
                }
            }
        };
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
    }

    /// The identity of `token` at `now`, or why it is refused.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Arc<Identity>, Refusal> {
        let (id, secret) = parse_token(token).ok_or(Refusal::Malformed)?;
        let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        let entry = snapshot.tokens.get(id).ok_or(Refusal::Unknown)?;
        if !hashes_match(&secret_hash(&secret), &entry.hash) {
            return Err(Refusal::Unknown);
        }
        if entry.revoked {
            return Err(Refusal::Revoked);
        }
        if entry.expires_at.is_some_and(|at| at <= now) {
            return Err(Refusal::Expired);
        }
        Ok(entry.identity.clone())
    }
}

#[cfg(test)]
mod tests;
