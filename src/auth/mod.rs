//! API tokens and the audit log, without HTTP.
//!
//! Owns what a token is and where it lives: roles ([`Role`]), the token format and the JSON
//! file of token hashes ([`tokens`]: [`TokenStore`] writes it for the CLI and the REST routes,
//! [`Keyring`] is the server's in-memory copy that every request is checked against), and the
//! append-only audit log written by a thread of its own ([`audit`]).
//!
//! It does not own the HTTP side (which route needs which role, the middleware, the 401/403
//! answers, the `/tokens` routes, the rule that refuses to expose a server without auth):
//! that is `server/auth.rs`. The CLI (`floe token …`) and the server share the file through
//! [`TokenStore`], whose writes are atomic and serialised by an advisory lock, so either can
//! write while the other runs.

pub mod audit;
pub mod tokens;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use audit::{AuditEntry, AuditLog};
pub use tokens::{IssuedToken, Keyring, Refusal, TokenFile, TokenRecord, TokenStore};

/// What a token may do. Each role includes the ones below it: `read` < `run` < `admin`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every GET (results, runs, jobs, configs, contexts, binaries, data files, pipelines,
    /// schedules) and `POST /query`.
    Read,
    /// `read`, plus starting and killing jobs, pipeline runs and backfills.
    Run,
    /// Everything: binaries, data files, contexts, pausing pipelines, restatements, tokens.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Read, Role::Run, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Run => "run",
            Role::Admin => "admin",
        }
    }

    /// Whether a token of this role may use a route that needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = TokenInputError;

    fn from_str(text: &str) -> Result<Role, TokenInputError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "read" => Ok(Role::Read),
            "run" => Ok(Role::Run),
            "admin" => Ok(Role::Admin),
            _ => Err(TokenInputError::UnknownRole {
                given: text.to_owned(),
            }),
        }
    }
}

/// Why a role, token name or token lifetime given by a user (on the command line or to the
/// `/tokens` routes) is refused. `given` is the text as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenInputError {
    #[error("unknown role `{given}` (expected read, run or admin)")]
    UnknownRole { given: String },
    #[error("a token name has at most {max} characters")]
    NameTooLong { max: usize },
    #[error("a token name cannot hold control characters")]
    NameHasControlCharacters,
    #[error("expected a lifetime such as `30d`, `12h` or `1w`, found `{given}`")]
    UnparsableLifetime { given: String },
    #[error("the lifetime `{given}` is too long")]
    LifetimeTooLong { given: String },
}

/// Who made a request: the token that authenticated it. The server puts an
/// `Arc<Identity>` in the request's extensions; handlers and the audit log read it from there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's public id (the part between `floe_` and the secret).
    pub token_id: String,
    pub name: String,
    pub role: Role,
}

/// Failures of the token file and the audit log. Messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: {action}")]
    Io {
        path: String,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("tokens file {path} is not valid: {message}")]
    Corrupt { path: String, message: String },
    #[error("no token with id `{0}`")]
    UnknownToken(String),
    #[error(transparent)]
    Invalid(#[from] TokenInputError),
    #[error("cannot draw random bytes for a token: {0}")]
    Random(String),
}

impl AuthError {
    fn io(path: &std::path::Path, action: &'static str, source: std::io::Error) -> AuthError {
        AuthError::Io {
            path: path.display().to_string(),
            action,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_the_ones_below() {
        assert!(Role::Admin.allows(Role::Run));
        assert!(Role::Admin.allows(Role::Read));
        assert!(Role::Run.allows(Role::Read));
        assert!(Role::Run.allows(Role::Run));
        assert!(!Role::Run.allows(Role::Admin));
        assert!(!Role::Read.allows(Role::Run));
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert_eq!(
            "root".parse::<Role>().unwrap_err().to_string(),
            "unknown role `root` (expected read, run or admin)"
        );
    }
}
