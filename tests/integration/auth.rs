//! Authentication over real HTTP on 127.0.0.1:0: tokens and roles, Basic for spark-jobserver
//! clients, revocation through the file, the audit log, the `/tokens` routes, the rule that
//! refuses to expose a server without auth, and `floe token …`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use floe::auth::{Role, TokenStore};
use floe::clock::SystemClock;
use floe::server::ServerConfig;
use floe::server::auth::{Exposure, check_bind, check_startup};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::common::server::{Serving, test_config};
use crate::common::{SampleWorld, repo_path};

const CHALLENGE: &str = r#"Bearer realm="floe", Basic realm="floe""#;

/// A server on an ephemeral port whose store, tokens file and audit log live in `dir`.
struct AuthServer {
    base: String,
    dir: PathBuf,
    serving: Serving,
    client: reqwest::Client,
}

/// What a request answered.
struct Answer {
    status: StatusCode,
    challenge: Option<String>,
    body: Value,
}

impl AuthServer {
    async fn start(dir: &Path) -> AuthServer {
        AuthServer::start_with(dir, |_| {}).await
    }

    /// [`AuthServer::start`] with a configuration changed by `tweak`.
    async fn start_with(dir: &Path, tweak: impl FnOnce(&mut ServerConfig)) -> AuthServer {
        let mut config = test_config(
            &repo_path("pipelines"),
            &dir.join("data"),
            &dir.join("store"),
        );
        tweak(&mut config);
        let serving = Serving::start(config, Arc::new(SystemClock), None).await;
        AuthServer {
            base: serving.base(),
            dir: dir.to_owned(),
            serving,
            client: reqwest::Client::new(),
        }
    }

    async fn stop(self) {
        self.serving.stop().await;
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        let status = response.status();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            challenge,
            body,
        }
    }

    /// `method path` with `token` as a Bearer token (none: anonymous) and `body`.
    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: &str) -> Answer {
        let mut request = self.request(method, path).body(body.to_owned());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        self.send(request).await
    }

    fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("audit lines are JSON"))
            .collect()
    }

    /// The audit log once it holds at least `n` lines (the writer is a thread of its own).
    async fn wait_audit(&self, n: usize) -> Vec<Value> {
        for _ in 0..500 {
            let lines = self.audit_lines();
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "the audit log never held {n} lines: {:?}",
            self.audit_lines()
        );
    }
}

/// A token of `role` in the tokens file `floe serve` reads for a store in `dir`.
fn token(dir: &Path, role: Role, name: &str) -> (String, String) {
    let issued = TokenStore::new(dir.join("tokens.json"))
        .create(role, name, None, Utc::now())
        .unwrap();
    (issued.token, issued.record.id)
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a JSON string, found {value}"))
}

const TRIVIAL_JOB: &str = r#"query = "SELECT 1 AS one""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_routes_need_a_token_and_open_routes_do_not() {
    let dir = TempDir::new().unwrap();
    let (admin, _) = token(dir.path(), Role::Admin, "ops");
    let server = AuthServer::start(dir.path()).await;

    // spark-jobserver's routes refuse in spark-jobserver's envelope, Floe's in Floe's.
    let answer = server.call(Method::GET, "/jobs", None, "").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.challenge.as_deref(), Some(CHALLENGE));
    assert_eq!(answer.body["status"], "ERROR");
    assert!(text(&answer.body["result"]).starts_with("authentication required"));
    let answer = server.call(Method::GET, "/pipelines", None, "").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.challenge.as_deref(), Some(CHALLENGE));
    assert_eq!(answer.body["error"]["code"], "unauthorized");
    // Unknown paths need a token too, so anonymous callers cannot map the routes.
    let answer = server.call(Method::GET, "/nowhere", None, "").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        server
            .call(Method::GET, "/nowhere", Some(&admin), "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    for open in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let answer = server.call(Method::GET, open, None, "").await;
        assert_eq!(answer.status, StatusCode::OK, "{open}");
    }
    let metrics = server
        .request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("floe_audit_dropped_total 0"), "{metrics}");

    let malformed = server
        .call(Method::GET, "/jobs", Some("not-a-token"), "")
        .await;
    assert_eq!(malformed.status, StatusCode::UNAUTHORIZED);
    assert!(text(&malformed.body["result"]).contains("not a Floe token"));
    let mut forged = admin.clone();
    forged.pop();
    forged.push(if admin.ends_with('0') { '1' } else { '0' });
    let answer = server.call(Method::GET, "/jobs", Some(&forged), "").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body["result"], "invalid token");
    let answer = server
        .send(
            server
                .request(Method::GET, "/jobs")
                .header("authorization", format!("Token {admin}")),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.challenge.as_deref(), Some(CHALLENGE));

    let answer = server.call(Method::GET, "/jobs", Some(&admin), "").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_what_a_token_may_do() {
    let dir = TempDir::new().unwrap();
    let (read, read_id) = token(dir.path(), Role::Read, "dashboard");
    let (run, _) = token(dir.path(), Role::Run, "ci");
    let (admin, _) = token(dir.path(), Role::Admin, "ops");
    let server = AuthServer::start(dir.path()).await;
    let yaml = std::fs::read_to_string(repo_path("pipelines/shop.yaml")).unwrap();

    // read: every GET, nothing that changes state.
    for path in [
        "/binaries",
        "/contexts",
        "/jobs",
        "/pipelines",
        "/scheduler",
    ] {
        let answer = server.call(Method::GET, path, Some(&read), "").await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
    }
    let answer = server
        .call(Method::POST, "/binaries/shop2", Some(&read), &yaml)
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.challenge, None);
    assert_eq!(answer.body["status"], "ERROR");
    assert_eq!(
        answer.body["result"],
        format!(
            "this request needs the `admin` role; token `{read_id}` (dashboard) has the `read` role"
        )
    );
    let answer = server
        .call(
            Method::POST,
            "/jobs?classPath=sql&sync=true",
            Some(&read),
            TRIVIAL_JOB,
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let answer = server.call(Method::GET, "/tokens", Some(&read), "").await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.body["error"]["code"], "forbidden");

    // run: jobs, not contexts.
    let answer = server
        .call(
            Method::POST,
            "/jobs?classPath=sql&sync=true",
            Some(&run),
            TRIVIAL_JOB,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["result"], json!([{"one": 1}]));
    for (method, path) in [
        (Method::POST, "/contexts/warm"),
        (Method::DELETE, "/contexts/warm"),
        (Method::POST, "/pipelines/shop/pause"),
    ] {
        let answer = server.call(method.clone(), path, Some(&run), "").await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {path}");
    }

    // admin: everything.
    let answer = server
        .call(Method::POST, "/contexts/warm", Some(&admin), "")
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer = server
        .call(Method::POST, "/binaries/shop2", Some(&admin), &yaml)
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let answer = server
        .call(
            Method::POST,
            "/jobs?classPath=sql&context=warm&sync=true",
            Some(&admin),
            TRIVIAL_JOB,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer = server
        .call(Method::DELETE, "/contexts/warm", Some(&admin), "")
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer = server
        .call(Method::DELETE, "/binaries/shop2", Some(&admin), "")
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    // The token routes: listed without secrets, created and revoked at once.
    let answer = server.call(Method::GET, "/tokens", Some(&admin), "").await;
    assert_eq!(answer.status, StatusCode::OK);
    let listed = answer.body.to_string();
    assert_eq!(answer.body.as_array().unwrap().len(), 3);
    for secret in [&read, &run, &admin] {
        assert!(!listed.contains(&secret[18..]), "{listed}");
    }
    assert!(!listed.contains("sha256"), "{listed}");
    let answer = server
        .call(
            Method::POST,
            "/tokens",
            Some(&admin),
            r#"{"role": "run", "name": "deploy", "expires": "30d"}"#,
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let created = text(&answer.body["token"]).to_owned();
    let created_id = text(&answer.body["id"]).to_owned();
    assert_eq!(answer.body["role"], "run");
    assert_eq!(answer.body["name"], "deploy");
    assert!(answer.body["expiresAt"].is_string());
    let answer = server
        .call(
            Method::POST,
            "/jobs?classPath=sql&sync=true",
            Some(&created),
            TRIVIAL_JOB,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "a new token works at once");
    let answer = server
        .call(
            Method::DELETE,
            &format!("/tokens/{created_id}"),
            Some(&admin),
            "",
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["revoked"], true);
    let answer = server.call(Method::GET, "/jobs", Some(&created), "").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "revoked at once");
    assert_eq!(
        answer.body["result"],
        format!("the token has been revoked (token `{created_id}`)")
    );
    for (body, problem) in [
        (r#"{"role": "root"}"#, "unknown role `root`"),
        (r#"{"name": "x"}"#, "`role` is required"),
        (r#"{"role": "read", "expires": "soon"}"#, "`expires`"),
        (
            r#"{"role": "read", "secret": "x"}"#,
            "unknown field `secret`",
        ),
    ] {
        let answer = server
            .call(Method::POST, "/tokens", Some(&admin), body)
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            text(&answer.body["error"]["message"]).contains(problem),
            "{}",
            answer.body
        );
    }
    let answer = server
        .call(Method::DELETE, "/tokens/aaaaaaaaaaaa", Some(&admin), "")
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_takes_the_token_as_the_password() {
    let dir = TempDir::new().unwrap();
    let (run, _) = token(dir.path(), Role::Run, "sjs");
    let server = AuthServer::start(dir.path()).await;
    // python-sjsclient's `auth=(user, token)`.
    let answer = server
        .send(
            server
                .request(Method::GET, "/contexts")
                .basic_auth("spark", Some(&run)),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer = server
        .send(
            server
                .request(Method::POST, "/jobs?classPath=sql&sync=true")
                .basic_auth("anyone", Some(&run))
                .body(TRIVIAL_JOB),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    // `curl -u "$TOKEN:"`: the token as the user, no password.
    let answer = server
        .send(
            server
                .request(Method::GET, "/contexts")
                .basic_auth(&run, Some("")),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = server
        .send(
            server
                .request(Method::GET, "/contexts")
                .basic_auth("spark", Some("secret")),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.challenge.as_deref(), Some(CHALLENGE));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_in_the_file_is_refused_within_the_reload_interval() {
    let dir = TempDir::new().unwrap();
    let (read, read_id) = token(dir.path(), Role::Read, "soon revoked");
    let server = AuthServer::start(dir.path()).await;
    assert_eq!(
        server
            .call(Method::GET, "/jobs", Some(&read), "")
            .await
            .status,
        StatusCode::OK
    );
    // A second handle on the file, as `floe token revoke` in another process has.
    TokenStore::new(dir.path().join("tokens.json"))
        .revoke(&read_id, Utc::now())
        .unwrap();
    let revoked = Instant::now();
    loop {
        let answer = server.call(Method::GET, "/jobs", Some(&read), "").await;
        if answer.status == StatusCode::UNAUTHORIZED {
            assert!(text(&answer.body["result"]).contains("revoked"));
            break;
        }
        assert_eq!(answer.status, StatusCode::OK);
        assert!(
            revoked.elapsed() < Duration::from_secs(3),
            "still accepted {:?} after the revocation",
            revoked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_and_refused_requests_are_audited_without_secrets() {
    let dir = TempDir::new().unwrap();
    let (run, run_id) = token(dir.path(), Role::Run, "ci");
    let (read, read_id) = token(dir.path(), Role::Read, "");
    let server = AuthServer::start(dir.path()).await;
    let answer = server
        .call(
            Method::POST,
            "/jobs?classPath=sql&sync=true",
            Some(&run),
            TRIVIAL_JOB,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    // Reads are not audited; refusals are.
    assert_eq!(
        server
            .call(Method::GET, "/jobs", Some(&run), "")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        server.call(Method::GET, "/jobs", None, "").await.status,
        StatusCode::UNAUTHORIZED
    );
    let mut forged = read.clone();
    forged.truncate(forged.len() - 4);
    forged.push_str(if read.ends_with("abcd") {
        "dcba"
    } else {
        "abcd"
    });
    assert_eq!(
        server
            .call(Method::GET, "/jobs", Some(&forged), "")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server
            .call(Method::DELETE, "/contexts/x", Some(&read), "")
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    let lines = server.wait_audit(4).await;
    assert_eq!(lines.len(), 4, "{lines:?}");
    let job = &lines[0];
    assert_eq!(job["method"], "POST");
    assert_eq!(job["path"], "/jobs?classPath=sql&sync=true");
    assert_eq!(job["status"], 200);
    assert_eq!(job["token_id"], run_id.as_str());
    assert_eq!(job["token_name"], "ci");
    assert_eq!(job["role"], "run");
    assert!(job["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(job["time"].is_string());
    assert!(
        job.get("client").is_some(),
        "client is present, null when unknown"
    );
    assert_eq!(lines[1]["token_id"], "anonymous");
    assert_eq!(lines[1]["status"], 401);
    assert_eq!(lines[2]["status"], 401);
    assert_eq!(lines[2]["token_id"], "anonymous");
    assert_eq!(lines[2]["claimed_token_id"], read_id.as_str());
    assert_eq!(lines[3]["status"], 403);
    assert_eq!(lines[3]["token_id"], read_id.as_str());

    let log = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    for token in [&run, &read, &forged] {
        assert!(
            !log.contains(&token[18..]),
            "a secret reached the audit log"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in ["audit.log", "tokens.json"] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_refusals_cannot_fill_the_disk_through_the_audit_log() {
    let dir = TempDir::new().unwrap();
    let _ = token(dir.path(), Role::Admin, "ops");
    let max: u64 = 8 << 10;
    let server = AuthServer::start_with(dir.path(), |c| c.auth.audit_log_max_bytes = max).await;

    // A 60 KB path and query is refused; its line keeps the first 512 bytes and the length.
    let long = format!("/jobs/{}?q={}", "a".repeat(30_000), "b".repeat(30_000));
    let answer = server.call(Method::GET, &long, None, "").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    // An invented method is logged as `other`.
    let junk = Method::from_bytes("JUNK".repeat(500).as_bytes()).unwrap();
    let answer = server.call(junk, "/jobs", None, "").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let lines = server.wait_audit(2).await;
    let path = text(&lines[0]["path"]);
    assert!(path.starts_with("/jobs/aaaa"), "{path}");
    assert!(
        path.ends_with(&format!("… ({} bytes)", long.len())),
        "{path}"
    );
    assert!(path.len() < 600, "{} bytes", path.len());
    assert_eq!(lines[1]["method"], "other");
    assert_eq!(lines[1]["path"], "/jobs");

    // Many more: the log rotates to audit.log.1 and both stay under the size.
    for _ in 0..60 {
        let answer = server.call(Method::DELETE, &long, None, "").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    let answer = server.call(Method::GET, "/jobs/last", None, "").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    // Lines are written in order: once the last is in, so are the others.
    let log = dir.path().join("audit.log");
    let rotated = dir.path().join("audit.log.1");
    let mut found = false;
    for _ in 0..500 {
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("\"/jobs/last\"")
        {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(found, "the last line never reached the audit log");
    let mut lines = 0;
    for file in [&log, &rotated] {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            text.len() as u64 <= max,
            "{} is {} bytes",
            file.display(),
            text.len()
        );
        for line in text.lines() {
            let line: Value = serde_json::from_str(line).expect("whole JSON lines");
            assert_eq!(line["status"], 401);
            lines += 1;
        }
    }
    assert!(lines >= 10, "{lines} lines kept");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&log).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_auth_is_off_until_the_first_token() {
    let dir = TempDir::new().unwrap();
    let server = AuthServer::start(dir.path()).await;
    assert_eq!(
        server.call(Method::GET, "/jobs", None, "").await.status,
        StatusCode::OK
    );
    let answer = server
        .call(
            Method::POST,
            "/tokens",
            None,
            r#"{"role": "admin", "name": "first"}"#,
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let admin = text(&answer.body["token"]).to_owned();
    // The first token turns authentication on, for good.
    assert_eq!(
        server.call(Method::GET, "/jobs", None, "").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server
            .call(Method::GET, "/jobs", Some(&admin), "")
            .await
            .status,
        StatusCode::OK
    );
    let lines = server.wait_audit(2).await;
    assert_eq!(lines[0]["path"], "/tokens");
    assert_eq!(lines[0]["token_id"], "anonymous");
    assert!(!lines[0].to_string().contains(&admin[18..]));
    server.stop().await;
}

/// python-sjsclient's own `auth=(user, token)` (HTTP Basic) through the whole spark-jobserver
/// flow, against a server where every route needs a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sjsclient_authenticates_with_basic() {
    let python = tokio::task::spawn_blocking(crate::server::sjsclient_python)
        .await
        .unwrap();
    let world = SampleWorld::new(20_000, 7);
    let (admin, _) = token(world.dir.path(), Role::Admin, "sjsclient");
    let server = AuthServer::start(world.dir.path()).await;
    let base = server.base.clone();
    let flow = |token: Option<String>| {
        let python = python.clone();
        let base = base.clone();
        tokio::task::spawn_blocking(move || {
            let mut command = Command::new(python);
            command
                .arg(repo_path("tests/python/sjs_flow.py"))
                .arg(base)
                .env("SJS_FLOW_SERVER_WAIT", "2");
            match token {
                Some(token) => command.env("SJS_FLOW_TOKEN", token),
                None => command.env_remove("SJS_FLOW_TOKEN"),
            };
            command.output().unwrap()
        })
    };
    let output = flow(Some(admin)).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "sjs_flow.py failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("PASS spark-jobserver flow with python-sjsclient"));
    // Without the token the client gets spark-jobserver's envelope with a 401.
    let output = flow(None).await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    server.stop().await;
}

#[test]
fn serve_refuses_to_listen_beyond_loopback_without_auth() {
    let dir = TempDir::new().unwrap();
    let any = "0.0.0.0:0".parse().unwrap();
    let mut config = ServerConfig {
        bind: any,
        store: dir.path().join("store"),
        ..ServerConfig::default()
    };
    let err = check_startup(&config, Utc::now()).unwrap_err().to_string();
    assert!(
        err.starts_with("refusing to listen on 0.0.0.0:0 without authentication"),
        "{err}"
    );
    assert!(err.contains("floe token create --role admin"), "{err}");
    config.auth.insecure_no_auth = true;
    assert_eq!(
        check_startup(&config, Utc::now()).unwrap(),
        Exposure::InsecureNoAuth
    );
    config.auth.insecure_no_auth = false;
    token(dir.path(), Role::Read, "");
    assert_eq!(
        check_startup(&config, Utc::now()).unwrap(),
        Exposure::Authenticated
    );
    config.bind = "127.0.0.1:0".parse().unwrap();
    assert_eq!(
        check_startup(&config, Utc::now()).unwrap(),
        Exposure::Loopback
    );
    assert!(check_bind(any, false, false).is_err());

    let store = dir.path().join("empty/store");
    let serve = |extra: &[&str]| {
        let mut command = floe();
        command
            .current_dir(dir.path())
            .args([
                "serve",
                "--bind",
                "0.0.0.0:0",
                "--pipelines",
                "none",
                "--store",
            ])
            .arg(&store)
            .args(extra)
            .env("FLOE_LOG", "warn");
        command
    };
    let output = serve(&[]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error: refusing to listen on 0.0.0.0:0 without authentication"),
        "{stderr}"
    );
    assert!(!store.exists(), "refused before the store was opened");

    let mut child = serve(&["--insecure-no-auth"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !seen
        .iter()
        .any(|l: &String| l.contains("listening on http://0.0.0.0:"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let seen = seen.join("\n");
    assert!(seen.contains("listening on http://0.0.0.0:"), "{seen}");
    assert!(
        seen.contains("WARN") && seen.contains("WITHOUT authentication"),
        "{seen}"
    );
}

fn floe() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_floe"));
    for var in [
        "FLOE_CONFIG",
        "FLOE_BIND",
        "FLOE_STORE",
        "FLOE_PIPELINES",
        "FLOE_DATA_DIR",
        "FLOE_TOKENS_FILE",
        "FLOE_INSECURE_NO_AUTH",
    ] {
        command.env_remove(var);
    }
    command
}

#[test]
fn token_cli_creates_lists_and_revokes() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("secrets/tokens.json");
    let run = |args: &[&str]| {
        let output = floe()
            .arg("token")
            .args(args)
            .arg("--tokens-file")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "floe token {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        (
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };
    let (stdout, stderr) = run(&[
        "create",
        "--role",
        "run",
        "--name",
        "ci",
        "--expires",
        "30d",
    ]);
    let token = stdout.trim().to_owned();
    assert_eq!(
        stdout.lines().count(),
        1,
        "only the token on stdout: {stdout}"
    );
    let identity = TokenStore::new(&file).load().unwrap().tokens.remove(0);
    assert!(token.starts_with(&format!("floe_{}_", identity.id)));
    assert!(
        stderr.contains(&identity.id) && stderr.contains("shown only this once"),
        "{stderr}"
    );
    assert_eq!(identity.role, Role::Run);
    assert!(identity.expires_at.is_some());

    let (list, _) = run(&["list"]);
    assert!(list.starts_with("ID "), "{list}");
    let row = list.lines().nth(1).unwrap();
    assert!(
        row.starts_with(&identity.id) && row.contains(" ci ") && row.contains(" run "),
        "{list}"
    );
    assert!(row.trim_end().ends_with("no"), "{list}");
    assert!(!list.contains(&token[18..]) && !list.contains(&identity.secret_sha256));

    let (_, stderr) = run(&["revoke", &identity.id]);
    assert!(
        stderr.contains(&format!("revoked token {}", identity.id)),
        "{stderr}"
    );
    let (list, _) = run(&["list"]);
    assert!(
        !list.lines().nth(1).unwrap().trim_end().ends_with("no"),
        "{list}"
    );
    assert!(TokenStore::new(&file).load().unwrap().tokens[0].revoked);

    let output = floe()
        .args(["token", "revoke", "aaaaaaaaaaaa", "--tokens-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no token with id `aaaaaaaaaaaa`"));

    // Without --tokens-file: beside the store, as `floe serve` looks for it.
    let output = floe()
        .args(["--store"])
        .arg(dir.path().join("state/store"))
        .args(["token", "create", "--role", "admin"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tokens = TokenStore::new(dir.path().join("state/tokens.json"))
        .load()
        .unwrap();
    assert_eq!(tokens.tokens.len(), 1);
    assert_eq!(tokens.tokens[0].role, Role::Admin);
    // And FLOE_TOKENS_FILE.
    let output = floe()
        .env("FLOE_TOKENS_FILE", &file)
        .args(["token", "list"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains(&identity.id));
}
