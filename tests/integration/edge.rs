//! The network edge of `floe serve` over real sockets on 127.0.0.1:0: TLS and reloading its
//! certificate, the header-read, idle and body timeouts, the connection caps (in all and per
//! client), CORS, and what anonymous clients can make the server keep or repeat (metrics
//! labels, error messages).
//!
//! Timeouts are configured in hundreds of milliseconds and every wait is bounded, so a test
//! that regresses fails in seconds instead of hanging.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use floe::clock::ManualClock;
use floe::server::config::TlsFiles;
use floe::server::{ServerConfig, TlsCertificates};
use reqwest::StatusCode;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::common::server::{Serving, test_config};
use crate::common::utc;

/// A server without pipelines on an ephemeral port. With certificates it serves HTTPS with
/// them (the test keeps the handle to reload them); without, `serve_on` reads the
/// configuration, as `floe serve` does.
struct EdgeServer {
    address: SocketAddr,
    serving: Serving,
    _dir: TempDir,
}

impl EdgeServer {
    async fn start(
        tls: Option<TlsCertificates>,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> EdgeServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(
            &dir.path().join("pipelines"),
            &dir.path().join("data"),
            &dir.path().join("store"),
        );
        tweak(&mut config);
        let clock = Arc::new(ManualClock::new(utc(2024, 2, 1, 0)));
        let serving = Serving::start(config, clock, tls).await;
        EdgeServer {
            address: serving.address,
            serving,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.address).await.expect("connect")
    }

    /// Graceful shutdown, within a bound.
    async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(10), self.serving.stop())
            .await
            .expect("the server stops");
    }
}

/// Sends `GET path` on a keep-alive connection and returns the response's status line.
async fn get_on(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: floe\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), read_response(stream))
        .await
        .expect("a response within 5s")
}

/// Reads one response (head and `content-length` body) and returns its status line.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .unwrap_or_else(|| panic!("no content-length in {head}"));
            if bytes.len() >= end + 4 + length {
                return head.lines().next().unwrap_or_default().to_owned();
            }
        }
        let n = stream.read(&mut chunk).await.expect("read a response");
        assert!(n > 0, "connection closed before a whole response");
        bytes.extend_from_slice(&chunk[..n]);
    }
}

/// Waits at most `limit` for the server to close `stream` (without sending anything) and
/// returns how long that took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut chunk = [0u8; 1024];
    match tokio::time::timeout(limit, stream.read(&mut chunk)).await {
        Err(_) => panic!("the connection is still open after {limit:?}"),
        Ok(Ok(0) | Err(_)) => started.elapsed(),
        Ok(Ok(n)) => panic!(
            "expected a close, got {:?}",
            String::from_utf8_lossy(&chunk[..n])
        ),
    }
}

#[tokio::test]
async fn a_half_sent_head_is_cut_off_after_header_read_timeout() {
    let server = EdgeServer::start(None, |c| {
        c.header_read_timeout = Duration::from_millis(300);
        c.idle_timeout = Duration::from_secs(30);
    })
    .await;

    // A new connection that never finishes its head.
    let mut slow = server.connect().await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut slow, Duration::from_secs(3)).await;
    assert!(took >= Duration::from_millis(150), "closed after {took:?}");

    // On a keep-alive connection, waiting longer than the header timeout between requests is
    // fine (that is the idle timeout's business)...
    let mut kept = server.connect().await;
    assert_eq!(get_on(&mut kept, "/healthz").await, "HTTP/1.1 200 OK");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(get_on(&mut kept, "/healthz").await, "HTTP/1.1 200 OK");
    // ...but a head, once started, must be complete within it.
    kept.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let took = closed_within(&mut kept, Duration::from_secs(3)).await;
    assert!(took >= Duration::from_millis(150), "closed after {took:?}");

    // A connection that sends nothing at all is closed too.
    let mut silent = server.connect().await;
    closed_within(&mut silent, Duration::from_secs(3)).await;
    server.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let server = EdgeServer::start(None, |c| {
        c.header_read_timeout = Duration::from_secs(30);
        c.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut idle = server.connect().await;
    assert_eq!(get_on(&mut idle, "/healthz").await, "HTTP/1.1 200 OK");
    let took = closed_within(&mut idle, Duration::from_secs(3)).await;
    assert!(took >= Duration::from_millis(150), "closed after {took:?}");

    // Requests within the idle timeout keep the connection.
    let mut busy = server.connect().await;
    for _ in 0..4 {
        assert_eq!(get_on(&mut busy, "/healthz").await, "HTTP/1.1 200 OK");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A request body that stops coming while the handler reads it is cut off the same way.
    let mut stalled = server.connect().await;
    stalled
        .write_all(
            b"POST /query HTTP/1.1\r\nHost: floe\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"sql\": ",
        )
        .await
        .unwrap();
    let took = closed_within(&mut stalled, Duration::from_secs(3)).await;
    assert!(took >= Duration::from_millis(150), "closed after {took:?}");
    server.stop().await;
}

#[tokio::test]
async fn the_connection_cap_holds_new_connections_until_one_closes() {
    let server = EdgeServer::start(None, |c| c.max_connections = 4).await;
    // Four connections, each served once and kept open: every slot is taken.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = server.connect().await;
        assert_eq!(get_on(&mut stream, "/healthz").await, "HTTP/1.1 200 OK");
        held.push(stream);
    }

    // A fifth connects (the kernel's backlog takes it) but is not served while they are held.
    let mut fifth = server.connect().await;
    fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: floe\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let waited = tokio::time::timeout(Duration::from_millis(500), fifth.read(&mut byte)).await;
    assert!(
        waited.is_err(),
        "the fifth connection was answered: {waited:?}"
    );

    // Once they close, the same request is served.
    drop(held);
    let status = tokio::time::timeout(Duration::from_secs(5), read_response(&mut fifth))
        .await
        .expect("served once the slots are free");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let response = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(fifth);
    server.stop().await;
}

/// Sends `GET path` and returns the status line, or `None` when the server closes the
/// connection instead of answering.
async fn try_get(stream: &mut TcpStream, path: &str) -> Option<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: floe\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 1024];
    while !bytes.windows(2).any(|w| w == b"\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("an answer or a close within 5s");
        match read {
            Ok(0) | Err(_) => return None,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    Some(text.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_body_trickling_in_is_cut_at_body_read_timeout() {
    // Progress keeps the idle clock happy (a byte every 100 ms, idle_timeout 30 s): only the
    // body's own deadline can end this.
    let server = EdgeServer::start(None, |c| {
        c.body_read_timeout = Duration::from_millis(600);
        c.idle_timeout = Duration::from_secs(30);
    })
    .await;
    let stream = server.connect().await;
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(
            b"POST /query HTTP/1.1\r\nHost: floe\r\ncontent-type: application/json\r\n\
              content-length: 4000000\r\n\r\n{",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut answer))
        .await
        .expect("the connection is cut within 5s, not kept alive by the trickle");
    let took = started.elapsed();
    trickle.abort();
    assert!(took >= Duration::from_millis(500), "cut after {took:?}");
    // The 408 is sent, then the connection closed (a reset may overtake the answer; then
    // there is none, but never another one).
    let answer = String::from_utf8_lossy(&answer);
    if read.is_ok() || !answer.is_empty() {
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("connection: close"), "{answer}");
        assert!(answer.contains("\"request_timeout\""), "{answer}");
        assert!(answer.contains("body_read_timeout"), "{answer}");
    }

    // spark-jobserver's routes answer it in their envelope.
    let mut slow = server.connect().await;
    slow.write_all(
        b"POST /jobs?appName=a&classPath=b HTTP/1.1\r\nHost: floe\r\n\
          content-length: 100\r\n\r\nx",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer))
        .await
        .expect("cut within 5s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"status\":\"ERROR\""), "{answer}");

    // A body that arrives in time is served as before.
    let response = reqwest::Client::new()
        .post(server.url("/query"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_ne!(body["error"]["code"], "request_timeout", "{body}");
    server.stop().await;
}

#[tokio::test]
async fn one_client_holds_at_most_max_connections_per_client() {
    let server = EdgeServer::start(None, |c| c.max_connections_per_client = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = server.connect().await;
        assert_eq!(get_on(&mut stream, "/healthz").await, "HTTP/1.1 200 OK");
        held.push(stream);
    }

    // A fourth from the same address (loopback is not exempt) is closed at once, not held.
    let mut fourth = server.connect().await;
    let started = Instant::now();
    assert_eq!(try_get(&mut fourth, "/healthz").await, None);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed after {:?}",
        started.elapsed()
    );
    // The three are still served.
    for stream in &mut held {
        assert_eq!(get_on(stream, "/healthz").await, "HTTP/1.1 200 OK");
    }

    // Once one closes (the server notices within moments), a new connection is served.
    drop(held.pop());
    let mut served = None;
    for _ in 0..100 {
        let mut stream = server.connect().await;
        served = try_get(&mut stream, "/healthz").await;
        if served.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served.as_deref(), Some("HTTP/1.1 200 OK"));
    drop(held);
    server.stop().await;
}

#[tokio::test]
async fn invented_methods_do_not_grow_the_metrics() {
    let server = EdgeServer::start(None, |_| {}).await;
    let client = reqwest::Client::new();
    for i in 0..100 {
        let name = format!("JUNK{i}{}", "X".repeat(2_000));
        let method = reqwest::Method::from_bytes(name.as_bytes()).unwrap();
        let response = client
            .request(method, server.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        // The answer repeats only the start of the method.
        assert!(response.text().await.unwrap().len() < 1_000);
    }
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.len() < 64 << 10,
        "/metrics is {} bytes",
        metrics.len()
    );
    assert!(!metrics.contains("JUNK"), "a method reached the labels");
    let other: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("floe_http_requests_total{method=\"other\""))
        .collect();
    assert_eq!(other.len(), 1, "{other:#?}");
    assert!(other[0].ends_with(",status=\"4xx\"} 100"), "{}", other[0]);
    server.stop().await;
}

#[tokio::test]
async fn path_parameters_that_do_not_decode_answer_in_the_family_envelope() {
    let server = EdgeServer::start(None, |_| {}).await;
    let client = reqwest::Client::new();
    let send = |method: reqwest::Method, path: &str| {
        let request = client.request(method, server.url(path));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let kind = response
                .headers()
                .get("content-type")
                .map(|value| value.to_str().unwrap().to_owned());
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            (status, kind, body)
        }
    };
    for (method, path) in [
        (reqwest::Method::GET, "/jobs/%FF"),
        (reqwest::Method::DELETE, "/jobs/%FF"),
        (reqwest::Method::GET, "/binaries/%C3"),
        (reqwest::Method::GET, "/contexts/%FF%FE"),
    ] {
        let (status, kind, body) = send(method.clone(), path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}");
        assert_eq!(kind.as_deref(), Some("application/json"), "{method} {path}");
        assert_eq!(body["status"], "ERROR", "{method} {path}: {body}");
        let message = body["result"].as_str().unwrap();
        assert!(message.contains("UTF-8"), "{message}");
    }
    for (method, path) in [
        (reqwest::Method::GET, "/pipelines/%FF"),
        (reqwest::Method::GET, "/pipelines/%FF/jobs/x/results"),
        (reqwest::Method::POST, "/backfills/%FF/pause"),
        (reqwest::Method::DELETE, "/tokens/%FF"),
    ] {
        let (status, kind, body) = send(method.clone(), path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}");
        assert_eq!(kind.as_deref(), Some("application/json"), "{method} {path}");
        assert_eq!(
            body["error"]["code"], "bad_request",
            "{method} {path}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("UTF-8"), "{message}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_huge_hocon_key_makes_a_short_error() {
    let server = EdgeServer::start(None, |_| {}).await;
    let key = "k".repeat(3 << 20);
    let response = reqwest::Client::new()
        .post(server.url("/jobs?appName=shop&classPath=q"))
        .body(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = response.text().await.unwrap();
    assert!(body.len() < 1_000, "{} bytes", body.len());
    assert!(body.contains("after key `kkkk"), "{body}");
    assert!(body.contains('…'), "{body}");
    server.stop().await;
}

/// `OPTIONS path` as a browser sends it before a cross-origin POST with a token.
async fn preflight(client: &reqwest::Client, url: &str, origin: &str) -> reqwest::Response {
    client
        .request(reqwest::Method::OPTIONS, url)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap())
}

fn cors_headers(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

#[tokio::test]
async fn cors_answers_allowed_origins_only_and_is_off_by_default() {
    let allowed = "https://app.example.com";
    let server = EdgeServer::start(None, |c| {
        c.cors.allowed_origins = vec![allowed.to_owned(), "http://localhost:3000".to_owned()];
    })
    .await;
    let client = reqwest::Client::new();

    // A preflight from an allowed origin, on a route, on a path with a parameter, and on no
    // route at all: all answered before routing.
    for path in ["/jobs", "/jobs/some-id", "/no/such/route"] {
        let response = preflight(&client, &server.url(path), allowed).await;
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            Some(allowed)
        );
        let methods = header(&response, "access-control-allow-methods").unwrap();
        for method in ["GET", "POST", "DELETE"] {
            assert!(methods.contains(method), "{methods}");
        }
        let headers = header(&response, "access-control-allow-headers").unwrap();
        for name in ["authorization", "content-type", "accept", "x-request-id"] {
            assert!(headers.contains(name), "{headers}");
        }
    }
    // Another origin gets no permission.
    let response = preflight(&client, &server.url("/jobs"), "https://evil.example").await;
    assert_eq!(header(&response, "access-control-allow-origin"), None);

    // Simple requests: the allowed origin is named, another is not, and the answer is the same.
    let response = client
        .get(server.url("/healthz"))
        .header("origin", allowed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(allowed)
    );
    let response = client
        .get(server.url("/healthz"))
        .header("origin", "https://app.example.com.evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    server.stop().await;

    // No origins configured (the default): no CORS header at all, and OPTIONS is the
    // method-not-allowed it always was.
    let server = EdgeServer::start(None, |_| {}).await;
    let response = preflight(&client, &server.url("/jobs"), allowed).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(cors_headers(&response), Vec::<String>::new());
    let response = client
        .get(server.url("/healthz"))
        .header("origin", allowed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(cors_headers(&response), Vec::<String>::new());
    server.stop().await;
}

/// A fresh self-signed certificate for `localhost`, written as PEM to `cert` and `key`;
/// returns the certificate's PEM for clients to trust.
fn write_self_signed(cert: &Path, key: &Path) -> String {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let cert_pem = generated.cert.pem();
    std::fs::write(cert, &cert_pem).unwrap();
    std::fs::write(key, generated.signing_key.serialize_pem()).unwrap();
    cert_pem
}

/// A client that trusts only `cert_pem` and reaches `localhost` at `address`. A new client has
/// no pooled connection, so each request here makes a handshake.
fn client_trusting(cert_pem: &str, address: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", address)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn https_status(cert_pem: &str, address: SocketAddr) -> Result<StatusCode, reqwest::Error> {
    let url = format!("https://localhost:{}/healthz", address.port());
    let response = client_trusting(cert_pem, address).get(url).send().await?;
    Ok(response.status())
}

#[tokio::test]
async fn tls_serves_https_and_reloads_its_certificate_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let cert: PathBuf = dir.path().join("chain.pem");
    let key: PathBuf = dir.path().join("key.pem");
    let first = write_self_signed(&cert, &key);
    let tls = TlsCertificates::load(&cert, &key).expect("load the certificate");
    let server = EdgeServer::start(Some(tls.clone()), |c| {
        c.header_read_timeout = Duration::from_millis(500);
    })
    .await;
    let address = server.address;
    assert_eq!(https_status(&first, address).await.unwrap(), StatusCode::OK);

    // Plain HTTP to the TLS port is not served.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(server.url("/healthz"))
        .send()
        .await;
    if let Ok(response) = plain {
        panic!("plain HTTP was answered with {}", response.status());
    }
    // A client that never starts its handshake is closed after header_read_timeout.
    let mut silent = server.connect().await;
    closed_within(&mut silent, Duration::from_secs(3)).await;

    // New files, then a reload (what SIGHUP does in `floe serve`; a test cannot signal its own
    // process without reaching every other test in it): new connections get the new
    // certificate, from the same listener.
    let second = write_self_signed(&cert, &key);
    tls.reload().expect("reload");
    assert_eq!(
        https_status(&second, address).await.unwrap(),
        StatusCode::OK
    );
    assert!(https_status(&first, address).await.is_err());

    // A failed reload names the file and keeps the certificate in use.
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nbroken\n").unwrap();
    let err = tls.reload().unwrap_err().to_string();
    assert!(err.contains("key.pem"), "{err}");
    assert_eq!(
        https_status(&second, address).await.unwrap(),
        StatusCode::OK
    );
    // So does a key that belongs to another certificate.
    let other_key = dir.path().join("other-key.pem");
    let _ = write_self_signed(&dir.path().join("other.pem"), &other_key);
    std::fs::copy(&other_key, &key).unwrap();
    let err = tls.reload().unwrap_err().to_string();
    assert!(err.contains("not usable together"), "{err}");
    assert_eq!(
        https_status(&second, address).await.unwrap(),
        StatusCode::OK
    );
    server.stop().await;
}

#[tokio::test]
async fn tls_from_the_configuration_and_its_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("chain.pem");
    let key = dir.path().join("key.pem");
    let pem = write_self_signed(&cert, &key);
    let files = TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
    };
    let server = EdgeServer::start(None, |c| c.tls = Some(files)).await;
    assert_eq!(
        https_status(&pem, server.address).await.unwrap(),
        StatusCode::OK
    );
    server.stop().await;

    // Missing files are named.
    let err = TlsCertificates::load(&dir.path().join("nope.pem"), &key)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.pem"), "{err}");
    let err = TlsCertificates::load(&cert, &dir.path().join("nokey.pem"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nokey.pem"), "{err}");
}
