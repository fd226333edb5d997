//! Who may call which route of `floe serve`.
//!
//! Owns the HTTP side of authentication: the `auth:` block of the config file
//! ([`AuthConfig`]), the middleware that reads `Authorization` (Bearer, or Basic with the token
//! as the password so spark-jobserver clients work unchanged), checks it against the
//! [`Keyring`] and the role the route table gives the route, answers 401/403 in the route
//! family's envelope and writes the audit log; the admin routes under `/tokens`; and the
//! start-up rule that refuses to listen beyond loopback without authentication
//! ([`check_bind`]).
//!
//! Tokens, their file and the audit writer are [`crate::auth`]'s. Which role each route needs
//! is in the route table in `server/mod.rs`, the single list of routes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::config::{ConfigError, invalid};
use super::error::{Envelope, ErrorCode, HttpError};
use super::http::json_response;
use super::sjs::timestamp;
use super::{AppState, ServerConfig};
use crate::auth::tokens::{RELOAD_INTERVAL, check_name, expiry_after, parse_token};
use crate::auth::{
    AuditEntry, AuditLog, AuthError, Identity, Keyring, Refusal, Role, TokenInputError,
    TokenRecord, TokenStore,
};
use crate::clock::Clock;
use crate::error::error_chain;
use crate::jobserver::context::parse_bytes;

/// Routes anyone may read by default: probes, scrapes and the API description.
pub const DEFAULT_OPEN_ROUTES: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/openapi.json"];

/// The default of `auth.audit_log_max_bytes`: 64 MiB, so about 128 MiB of audit log at most.
pub const DEFAULT_AUDIT_LOG_MAX_BYTES: u64 = 64 << 20;

/// The smallest `auth.audit_log_max_bytes`: a few lines, so that rotating is not a rename per
/// line.
pub const MIN_AUDIT_LOG_MAX_BYTES: u64 = 4 << 10;

/// The challenge of every 401: both schemes Floe accepts.
pub(super) const CHALLENGE: &str = r#"Bearer realm="floe", Basic realm="floe""#;

/// Routes whose errors are spark-jobserver's `{"status": "ERROR", "result": …}`.
const SJS_PREFIXES: [&str; 4] = ["/binaries", "/contexts", "/jobs", "/data"];

/// `auth:` in the config file, plus the `--insecure-no-auth` flag.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Refuse requests without a token even while the tokens file holds none.
    pub required: bool,
    /// `None`: `tokens.json` beside the store folder (`.floe/tokens.json` by default), so the
    /// CLI and the server find the same file from the same `--store`.
    pub tokens_file: Option<PathBuf>,
    /// `None`: `audit.log` beside the store folder.
    pub audit_log: Option<PathBuf>,
    /// Size past which the audit log is renamed to `<file>.1` (replacing an older one) and a new
    /// file started: the log takes at most about twice this on disk.
    pub audit_log_max_bytes: u64,
    /// Paths whose `read` routes need no token. Routes needing `run` or `admin` always do.
    pub open_routes: Vec<String>,
    /// Start on a non-loopback address without authentication. A flag and an environment
    /// variable only, never a key of the file, so it is a deliberate choice at each start.
    pub insecure_no_auth: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            required: false,
            tokens_file: None,
            audit_log: None,
            audit_log_max_bytes: DEFAULT_AUDIT_LOG_MAX_BYTES,
            open_routes: DEFAULT_OPEN_ROUTES
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
            insecure_no_auth: false,
        }
    }
}

impl AuthConfig {
    /// The tokens file of a server whose store is `store`.
    pub fn tokens_file_for(&self, store: &Path) -> PathBuf {
        self.tokens_file
            .clone()
            .unwrap_or_else(|| beside(store, "tokens.json"))
    }

    /// The audit log of a server whose store is `store`.
    pub fn audit_log_for(&self, store: &Path) -> PathBuf {
        self.audit_log
            .clone()
            .unwrap_or_else(|| beside(store, "audit.log"))
    }
}

fn beside(store: &Path, name: &str) -> PathBuf {
    store
        .parent()
        .map_or_else(|| PathBuf::from(name), |dir| dir.join(name))
}

/// `auth:` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthFile {
    required: Option<bool>,
    tokens_file: Option<PathBuf>,
    audit_log: Option<PathBuf>,
    /// Bytes (`64MiB`, `1g`, a number).
    audit_log_max_bytes: Option<serde_json::Value>,
    open_routes: Option<Vec<String>>,
}

impl AuthFile {
    /// Overlays the block on `auth`; errors name `file`.
    pub(super) fn apply(self, auth: &mut AuthConfig, file: &Path) -> Result<(), ConfigError> {
        if let Some(required) = self.required {
            auth.required = required;
        }
        if let Some(path) = self.tokens_file {
            auth.tokens_file = Some(path);
        }
        if let Some(path) = self.audit_log {
            auth.audit_log = Some(path);
        }
        if let Some(value) = self.audit_log_max_bytes {
            let text = match &value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            let bytes = parse_bytes(&text)
                .map_err(|problem| invalid(file, "auth.audit_log_max_bytes", problem))?;
            if bytes < MIN_AUDIT_LOG_MAX_BYTES {
                return Err(ConfigError::AuditLogTooSmall {
                    path: file.to_path_buf(),
                    bytes,
                });
            }
            auth.audit_log_max_bytes = bytes;
        }
        if let Some(open) = self.open_routes {
            let routes = super::routes();
            if let Some(unknown) = open.iter().find(|p| !routes.iter().any(|(_, r)| r == p)) {
                return Err(ConfigError::UnknownOpenRoute {
                    path: file.to_path_buf(),
                    route: unknown.clone(),
                });
            }
            auth.open_routes = open;
        }
        Ok(())
    }
}

/// The server's authentication: tokens, the role of each route, the audit log.
#[allow(missing_debug_implementations)] // Holds the clock and the keyring; nothing to print.
pub struct AuthState {
    keyring: Keyring,
    store: TokenStore,
    audit: AuditLog,
    clock: Arc<dyn Clock>,
    /// Route template → (method, role needed, or `None` when open to anonymous callers).
    access: HashMap<&'static str, Vec<(Method, Option<Role>)>>,
}

impl AuthState {
    /// Loads the tokens file and opens the audit log of `config`. A tokens file that does not
    /// parse, or an audit log that cannot be opened, is an error naming the file.
    pub fn open(
        config: &ServerConfig,
        clock: Arc<dyn Clock>,
        audit_dropped: Arc<AtomicU64>,
    ) -> Result<AuthState, AuthError> {
        let auth = &config.auth;
        let now = clock.now();
        let tokens_file = auth.tokens_file_for(&config.store);
        let keyring = Keyring::open(&tokens_file, auth.required, RELOAD_INTERVAL, now)?;
        let audit = AuditLog::open(
            &auth.audit_log_for(&config.store),
            crate::auth::audit::QUEUE_CAPACITY,
            auth.audit_log_max_bytes.max(MIN_AUDIT_LOG_MAX_BYTES),
            audit_dropped,
        )?;
        let mut access: HashMap<&'static str, Vec<(Method, Option<Role>)>> = HashMap::new();
        for (method, path, role) in super::route_roles() {
            let open = (method == Method::GET && super::ui::OPEN_PATHS.contains(&path))
                || (role == Role::Read && auth.open_routes.iter().any(|p| p == path));
            access
                .entry(path)
                .or_default()
                .push((method, (!open).then_some(role)));
        }
        if keyring.enforcing() {
            info!(tokens_file = %tokens_file.display(), "authentication is on");
            if !keyring.has_usable_admin() {
                warn!(
                    tokens_file = %tokens_file.display(),
                    "authentication is on but no admin token exists: create one with \
                     `floe token create --role admin`"
                );
            }
        } else {
            info!(
                tokens_file = %tokens_file.display(),
                "authentication is off: the tokens file holds no token"
            );
        }
        Ok(AuthState {
            keyring,
            store: TokenStore::new(tokens_file),
            audit,
            clock,
            access,
        })
    }

    /// Whether requests to protected routes must carry a token.
    pub fn enforcing(&self) -> bool {
        self.keyring.enforcing()
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    pub fn audit_log(&self) -> &AuditLog {
        &self.audit
    }

    /// The role a request needs, `None` when anyone may make it. Paths no route takes, and
    /// methods a path does not serve, need `read`: anonymous callers learn nothing of the
    /// routes.
    fn needed(&self, method: &Method, route: Option<&str>) -> Option<Role> {
        let Some(route) = route else {
            return Some(Role::Read);
        };
        // axum answers HEAD with the GET handler.
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.access
            .get(route)
            .and_then(|methods| methods.iter().find(|(m, _)| m == method))
            .map_or(Some(Role::Read), |(_, role)| *role)
    }
}

/// What the `Authorization` header carries.
enum Credential<'a> {
    Missing,
    Token(Cow<'a, str>),
    /// Present but neither `Bearer <token>` nor `Basic <base64 user:token>`.
    Malformed,
}

fn credential(headers: &HeaderMap) -> Credential<'_> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Credential::Missing;
    };
    let Some((scheme, rest)) = value.to_str().ok().and_then(|v| v.trim().split_once(' ')) else {
        return Credential::Malformed;
    };
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Credential::Token(Cow::Borrowed(rest));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Credential::Malformed;
    }
    let Some(pair) = BASE64
        .decode(rest)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
    else {
        return Credential::Malformed;
    };
    // The user name is ignored: `auth=(user, token)` works. `token:` (the token as the user,
    // no password, as `curl -u "$TOKEN:"` sends) works too.
    match pair.split_once(':') {
        Some((user, "")) => Credential::Token(Cow::Owned(user.to_owned())),
        Some((_, password)) => Credential::Token(Cow::Owned(password.to_owned())),
        None => Credential::Malformed,
    }
}

pub(super) fn is_sjs_route(path: &str) -> bool {
    SJS_PREFIXES.iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// A 401 (with its challenge) or 403 in the envelope of the route's family.
fn refusal_response(status: StatusCode, path: &str, message: String) -> Response {
    let code = if status == StatusCode::FORBIDDEN {
        ErrorCode::Forbidden
    } else {
        ErrorCode::Unauthorized
    };
    HttpError::new(code, message).render(Envelope::of_path(path))
}

/// The middleware: authenticates, authorises, and writes the audit line of mutating and
/// refused requests. Runs after routing, so the route template is known; inside the metrics
/// layer, so refusals are counted. Never logs the token or the `Authorization` header.
pub(super) async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let auth = &state.auth;
    let now = auth.clock.now();
    auth.keyring.refresh(now);
    let needed = auth.needed(
        request.method(),
        request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let credential = credential(request.headers());
    let verified = match &credential {
        Credential::Token(token) => Some(auth.keyring.verify(token, now)),
        Credential::Missing | Credential::Malformed => None,
    };
    let identity = match &verified {
        Some(Ok(identity)) => Some(identity.clone()),
        _ => None,
    };
    let refusal = match needed {
        Some(needed) if auth.keyring.enforcing() => refuse(&credential, &verified, needed),
        _ => None,
    };
    let claimed = match (&credential, &verified) {
        (Credential::Token(token), Some(Err(_))) => parse_token(token).map(|(id, _)| id.to_owned()),
        _ => None,
    };
    drop(credential);
    let method = request.method().clone();
    let mutating = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.to_string());
    // Anyone can send a 64 KiB path and be refused: the log keeps its first bytes only.
    let target = if mutating || refusal.is_some() {
        let uri = request.uri();
        let target = uri
            .path_and_query()
            .map_or_else(|| uri.path(), |target| target.as_str());
        crate::auth::audit::shorten(target, crate::auth::audit::MAX_LOGGED_TARGET).into_owned()
    } else {
        String::new()
    };
    let response = match refusal {
        Some((status, message)) => refusal_response(status, request.uri().path(), message),
        None => {
            if let Some(identity) = &identity {
                request.extensions_mut().insert(identity.clone());
            }
            next.run(request).await
        }
    };
    let status = response.status();
    if mutating || status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        auth.audit.record(&AuditEntry {
            time: timestamp(now),
            method: super::metrics::method_label(method.as_str()).to_owned(),
            path: target,
            status: status.as_u16(),
            token_id: identity
                .as_ref()
                .map_or_else(|| "anonymous".to_owned(), |i| i.token_id.clone()),
            token_name: identity.as_ref().map(|i| i.name.clone()),
            role: identity.as_ref().map(|i| i.role),
            claimed_token_id: claimed,
            client,
            duration_ms: started.elapsed().as_secs_f64() * 1e3,
        });
    }
    response
}

/// Why a request that needs `needed` is refused, if it is.
fn refuse(
    credential: &Credential<'_>,
    verified: &Option<Result<Arc<Identity>, Refusal>>,
    needed: Role,
) -> Option<(StatusCode, String)> {
    let unauthorized = |message: String| Some((StatusCode::UNAUTHORIZED, message));
    match (credential, verified) {
        (Credential::Missing, _) => unauthorized(
            "authentication required: send `Authorization: Bearer <token>` (or HTTP Basic \
             with the token as the password)"
                .to_owned(),
        ),
        (Credential::Malformed, _) => unauthorized(
            "the Authorization header is neither `Bearer <token>` nor `Basic <base64 of \
             user:token>`"
                .to_owned(),
        ),
        (Credential::Token(token), Some(Err(refusal))) => match refusal {
            Refusal::Revoked | Refusal::Expired => {
                let id = parse_token(token).map_or("", |(id, _)| id);
                unauthorized(format!("{refusal} (token `{id}`)"))
            }
            Refusal::Malformed | Refusal::Unknown => unauthorized(refusal.to_string()),
        },
        (Credential::Token(_), Some(Ok(identity))) if !identity.role.allows(needed) => Some((
            StatusCode::FORBIDDEN,
            format!(
                "this request needs the `{needed}` role; token `{}`{} has the `{}` role",
                identity.token_id,
                if identity.name.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", identity.name)
                },
                identity.role
            ),
        )),
        (Credential::Token(_), _) => None,
    }
}

/// How `floe serve` may start given where it listens and whether requests need a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Loopback only: reachable from this machine.
    Loopback,
    /// Beyond loopback, with authentication on.
    Authenticated,
    /// Beyond loopback without authentication, because `--insecure-no-auth` said so.
    InsecureNoAuth,
}

/// Listening beyond loopback without authentication and without `--insecure-no-auth`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to listen on {bind} without authentication: anyone who can reach the port could \
     upload, run and delete pipelines and read every result. Create a token first (`floe token \
     create --role admin`), or pass --insecure-no-auth (FLOE_INSECURE_NO_AUTH=true) to start \
     anyway"
)]
pub struct ExposureError {
    pub bind: SocketAddr,
}

/// The start-up rule: listening beyond loopback needs authentication, or
/// `--insecure-no-auth`. The error says how to fix it.
pub fn check_bind(
    bind: SocketAddr,
    auth_on: bool,
    insecure_no_auth: bool,
) -> Result<Exposure, ExposureError> {
    if bind.ip().is_loopback() {
        Ok(Exposure::Loopback)
    } else if auth_on {
        Ok(Exposure::Authenticated)
    } else if insecure_no_auth {
        Ok(Exposure::InsecureNoAuth)
    } else {
        Err(ExposureError { bind })
    }
}

/// Why `floe serve` refuses to start before it opens anything.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The tokens file could not be read.
    #[error("{}", error_chain(.0))]
    Tokens(#[source] crate::auth::AuthError),
    #[error(transparent)]
    Exposure(#[from] ExposureError),
}

/// [`check_bind`] for `config`, reading its tokens file; logs a WARN when the server is
/// exposed without authentication. `floe serve` calls it before opening the store.
pub fn check_startup(config: &ServerConfig, now: DateTime<Utc>) -> Result<Exposure, StartupError> {
    let tokens_file = config.auth.tokens_file_for(&config.store);
    let tokens = TokenStore::new(&tokens_file)
        .load()
        .map_err(StartupError::Tokens)?;
    let auth_on = config.auth.required || tokens.has_usable(now);
    let exposure = check_bind(config.bind, auth_on, config.auth.insecure_no_auth)?;
    match exposure {
        Exposure::InsecureNoAuth => warn!(
            bind = %config.bind,
            "listening beyond loopback WITHOUT authentication (--insecure-no-auth): anyone who \
             can reach the port can upload, run and delete pipelines"
        ),
        _ if config.auth.insecure_no_auth && auth_on => info!(
            tokens_file = %tokens_file.display(),
            "--insecure-no-auth has no effect: the tokens file holds tokens, so requests need one"
        ),
        _ => {}
    }
    Ok(exposure)
}

fn token_json(record: &TokenRecord) -> Value {
    json!({
        "id": record.id,
        "name": record.name,
        "role": record.role,
        "createdAt": timestamp(record.created_at),
        "expiresAt": record.expires_at.map(timestamp),
        "revoked": record.revoked,
        "revokedAt": record.revoked_at.map(timestamp),
    })
}

fn store_error(e: AuthError) -> HttpError {
    match e {
        AuthError::UnknownToken(_) => HttpError::not_found(e.to_string()),
        AuthError::Invalid(_) => HttpError::bad_request(e.to_string()),
        _ => HttpError::internal_error(&e),
    }
}

/// Runs token file work (locks, reads, fsyncs) off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AuthError> + Send + 'static,
) -> Result<T, HttpError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| HttpError::internal(format!("token work failed: {e}")))?
        .map_err(store_error)
}

/// `GET /tokens`: every token, without secrets or hashes.
pub(super) async fn list_tokens(State(state): State<AppState>) -> Result<Response, HttpError> {
    let store = state.auth.store.clone();
    let file = blocking(move || store.load()).await?;
    Ok(json_response(
        StatusCode::OK,
        &Value::Array(file.tokens.iter().map(token_json).collect()),
    ))
}

/// `POST /tokens` `{"role", "name", "expires"}`: 201 with the token, shown this once.
pub(super) async fn create_token(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let body = super::floe::json_body(body)?;
    if let Some(key) = body
        .keys()
        .find(|k| !["role", "name", "expires"].contains(&k.as_str()))
    {
        return Err(HttpError::bad_request(format!(
            "unknown field `{key}` (expected role, name, expires)"
        )));
    }
    let text = |key: &str| match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(HttpError::bad_request(format!(
            "`{key}` must be a string, found {other}"
        ))),
    };
    let role: Role = text("role")?
        .ok_or_else(|| HttpError::bad_request("`role` is required (read, run or admin)"))?
        .parse()
        .map_err(|e: TokenInputError| HttpError::bad_request(e.to_string()))?;
    let name = text("name")?.unwrap_or_default();
    check_name(&name).map_err(|e| HttpError::bad_request(e.to_string()))?;
    let now = state.auth.clock.now();
    let expires_at = text("expires")?
        .map(|t| {
            expiry_after(&t, now).map_err(|e| HttpError::bad_request(format!("`expires`: {e}")))
        })
        .transpose()?;
    let auth = state.clone();
    let issued = blocking(move || {
        let issued = auth.auth.store.create(role, &name, expires_at, now)?;
        auth.auth.keyring.reload(now);
        Ok(issued)
    })
    .await?;
    info!(token_id = %issued.record.id, role = %role, "token created");
    let mut body = token_json(&issued.record);
    body["token"] = Value::String(issued.token);
    Ok(json_response(StatusCode::CREATED, &body))
}

/// `DELETE /tokens/{id}`: revokes the token; it is refused from now on.
pub(super) async fn revoke_token(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, HttpError> {
    let now = state.auth.clock.now();
    let auth = state.clone();
    let record = blocking(move || {
        let record = auth.auth.store.revoke(&id, now)?;
        auth.auth.keyring.reload(now);
        Ok(record)
    })
    .await?;
    info!(token_id = %record.id, "token revoked");
    Ok(json_response(StatusCode::OK, &token_json(&record)))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn header(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn token_of(headers: &HeaderMap) -> Option<String> {
        match credential(headers) {
            Credential::Token(token) => Some(token.into_owned()),
            Credential::Missing | Credential::Malformed => None,
        }
    }

    #[test]
    fn bearer_and_basic_carry_the_token() {
        assert_eq!(
            token_of(&header("Bearer floe_x")).as_deref(),
            Some("floe_x")
        );
        assert_eq!(
            token_of(&header("bearer  floe_x ")).as_deref(),
            Some("floe_x")
        );
        let basic = |pair: &str| format!("Basic {}", BASE64.encode(pair));
        assert_eq!(
            token_of(&header(&basic("me:floe_x"))).as_deref(),
            Some("floe_x")
        );
        assert_eq!(
            token_of(&header(&basic("floe_x:"))).as_deref(),
            Some("floe_x")
        );
        assert!(matches!(credential(&HeaderMap::new()), Credential::Missing));
        for bad in ["Token floe_x", "Bearer", "Basic !!!", &basic("no-colon")] {
            assert!(
                matches!(credential(&header(bad)), Credential::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn spark_jobserver_routes_answer_in_their_envelope() {
        assert!(is_sjs_route("/jobs"));
        assert!(is_sjs_route("/jobs/abc/config"));
        assert!(is_sjs_route("/binaries/shop"));
        assert!(is_sjs_route("/data"));
        assert!(is_sjs_route("/data/sales"));
        assert!(!is_sjs_route("/database"));
        assert!(!is_sjs_route("/jobsx"));
        assert!(!is_sjs_route("/pipelines/shop/jobs/x/results"));
        assert!(!is_sjs_route("/tokens"));
    }

    #[test]
    fn every_route_has_a_role_and_mutations_need_run() {
        let roles = super::super::route_roles();
        let routes = super::super::routes();
        assert_eq!(roles.len(), routes.len());
        for ((method, path, role), (m, p)) in roles.iter().zip(&routes) {
            assert_eq!((method, path), (m, p));
            if *method != Method::GET {
                let read_only = *method == Method::POST && *path == "/query";
                assert!(
                    read_only || *role >= Role::Run,
                    "{method} {path} changes state but needs only `{role}`"
                );
            }
        }
        let role_of = |method: Method, path: &str| {
            roles
                .iter()
                .find(|(m, p, _)| *m == method && *p == path)
                .map(|(_, _, r)| *r)
                .unwrap_or_else(|| panic!("{method} {path} is not a route"))
        };
        for (method, path, role) in [
            (Method::GET, "/jobs/{id}", Role::Read),
            (Method::POST, "/query", Role::Read),
            (Method::POST, "/jobs", Role::Run),
            (Method::DELETE, "/jobs/{id}", Role::Run),
            (Method::POST, "/pipelines/{pipeline}/runs", Role::Run),
            (Method::POST, "/pipelines/{pipeline}/backfills", Role::Run),
            (Method::POST, "/backfills/{id}/cancel", Role::Run),
            (Method::POST, "/binaries/{app}", Role::Admin),
            (Method::GET, "/data", Role::Read),
            (Method::POST, "/data/{name}", Role::Admin),
            (Method::DELETE, "/data/{name}", Role::Admin),
            (Method::PUT, "/data", Role::Admin),
            (Method::DELETE, "/contexts/{name}", Role::Admin),
            (Method::PUT, "/contexts", Role::Admin),
            (Method::POST, "/pipelines/{pipeline}/pause", Role::Admin),
            (
                Method::POST,
                "/pipelines/{pipeline}/restatements",
                Role::Admin,
            ),
            (Method::GET, "/tokens", Role::Admin),
            (Method::POST, "/tokens", Role::Admin),
            (Method::DELETE, "/tokens/{id}", Role::Admin),
        ] {
            assert_eq!(role_of(method.clone(), path), role, "{method} {path}");
        }
        for path in DEFAULT_OPEN_ROUTES {
            assert_eq!(role_of(Method::GET, path), Role::Read);
        }
    }

    #[test]
    fn the_bind_rule_needs_auth_beyond_loopback() {
        let any: SocketAddr = "0.0.0.0:8090".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8090".parse().unwrap();
        let local6: SocketAddr = "[::1]:8090".parse().unwrap();
        assert_eq!(check_bind(local, false, false), Ok(Exposure::Loopback));
        assert_eq!(check_bind(local6, false, false), Ok(Exposure::Loopback));
        assert_eq!(check_bind(any, true, false), Ok(Exposure::Authenticated));
        assert_eq!(check_bind(any, false, true), Ok(Exposure::InsecureNoAuth));
        let err = check_bind(any, false, false).unwrap_err().to_string();
        assert!(err.contains("floe token create --role admin"), "{err}");
        assert!(err.contains("--insecure-no-auth"), "{err}");
    }

    #[test]
    fn the_auth_block_is_read_and_checked() {
        let file = Path::new("floe-server.yaml");
        let mut auth = AuthConfig::default();
        let block: AuthFile = serde_yaml::from_str(
            "required: true\ntokens_file: /etc/floe/tokens.json\nopen_routes: [/healthz]\n",
        )
        .unwrap();
        block.apply(&mut auth, file).unwrap();
        assert!(auth.required);
        assert_eq!(
            auth.tokens_file_for(Path::new("x/store")),
            PathBuf::from("/etc/floe/tokens.json")
        );
        assert_eq!(
            auth.audit_log_for(Path::new(".floe/store")),
            PathBuf::from(".floe/audit.log")
        );
        assert_eq!(auth.open_routes, ["/healthz"]);
        let block: AuthFile = serde_yaml::from_str("open_routes: [/health]\n").unwrap();
        let err = block.apply(&mut auth, file).unwrap_err().to_string();
        assert!(
            err.starts_with("floe-server.yaml: `auth.open_routes`: `/health` is not a route"),
            "{err}"
        );
        assert!(serde_yaml::from_str::<AuthFile>("insecure_no_auth: true\n").is_err());
        assert_eq!(auth.audit_log_max_bytes, 64 << 20);
        let block: AuthFile = serde_yaml::from_str("audit_log_max_bytes: 1MiB\n").unwrap();
        block.apply(&mut auth, file).unwrap();
        assert_eq!(auth.audit_log_max_bytes, 1 << 20);
        let block: AuthFile = serde_yaml::from_str("audit_log_max_bytes: 100\n").unwrap();
        let err = block.apply(&mut auth, file).unwrap_err().to_string();
        assert!(
            err.contains("`auth.audit_log_max_bytes`: 100 bytes is below the minimum of 4KiB"),
            "{err}"
        );
        let block: AuthFile = serde_yaml::from_str("audit_log_max_bytes: lots\n").unwrap();
        let err = block.apply(&mut auth, file).unwrap_err().to_string();
        assert!(err.contains("`auth.audit_log_max_bytes`"), "{err}");
        assert_eq!(
            AuthConfig::default().tokens_file_for(Path::new(".floe/store")),
            PathBuf::from(".floe/tokens.json")
        );
        assert_eq!(
            AuthConfig::default().tokens_file_for(Path::new("store")),
            PathBuf::from("tokens.json")
        );
    }
}
