//! spark-jobserver's `/data` routes over real HTTP: upload, list, an ad-hoc job reading the
//! uploaded file, delete, reset; hostile prefixes and paths refused without touching anything;
//! the quota; tokens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use floe::auth::{Role, TokenStore};
use floe::clock::ManualClock;
use floe::server::ServerConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::server::{Serving, test_config, text};
use crate::common::{repo_path, utc};

const CSV: &str = "city,amount\nBerlin,10\nParis,5\nBerlin,7\nOslo,1\n";

/// A server whose store, tokens file and data-files directory live in `dir`.
struct DataServer {
    serving: Serving,
    client: reqwest::Client,
    /// The data-files directory, as the server lists it.
    files: PathBuf,
}

impl DataServer {
    async fn start(dir: &Path, tweak: impl FnOnce(&mut ServerConfig)) -> DataServer {
        let mut config = test_config(
            &repo_path("pipelines"),
            &dir.join("data"),
            &dir.join("store"),
        );
        tweak(&mut config);
        let clock = Arc::new(ManualClock::new(utc(2024, 2, 1, 9)));
        let serving = Serving::start(config, clock, None).await;
        let files = std::fs::canonicalize(dir.join("data-files")).expect("created at start-up");
        DataServer {
            serving,
            client: reqwest::Client::new(),
            files,
        }
    }

    fn address(&self) -> SocketAddr {
        self.serving.address
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.serving.base()))
            // What `curl --data-binary @file` sends.
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn upload(&self, prefix: &str, body: &str) -> (StatusCode, Value) {
        self.call(Method::POST, &format!("/data/{prefix}"), None, body)
            .await
    }

    async fn upload_bytes(&self, prefix: &str, body: Vec<u8>) -> String {
        let response = self
            .client
            .post(format!("{}/data/{prefix}", self.serving.base()))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let stored: Value = response.json().await.unwrap();
        text(&stored["result"]["filename"]).to_owned()
    }

    async fn list(&self) -> Vec<String> {
        let (status, listed) = self.call(Method::GET, "/data", None, "").await;
        assert_eq!(status, StatusCode::OK, "{listed}");
        listed
            .as_array()
            .unwrap_or_else(|| panic!("not an array: {listed}"))
            .iter()
            .map(|path| text(path).to_owned())
            .collect()
    }

    /// The names in the data-files directory, whatever they are.
    fn on_disk(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.files)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    async fn job(&self, config: &str) -> (StatusCode, Value) {
        self.call(Method::POST, "/jobs?classPath=sql&sync=true", None, config)
            .await
    }

    async fn stop(self) {
        self.serving.stop().await;
    }
}

/// `text` percent-encoded for one path segment.
fn encoded(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `method path` sent as written (no client normalises `..` or `%2e` away); the status and
/// the JSON body.
async fn raw(address: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: \
         application/x-www-form-urlencoded\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    let status = response
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {response}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_list_read_in_a_job_and_delete() {
    let dir = TempDir::new().unwrap();
    let server = DataServer::start(dir.path(), |_| {}).await;
    assert!(server.list().await.is_empty());

    // spark-jobserver's answer, whatever the content type (curl's form type here).
    let (status, stored) = server.upload("sales", CSV).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["status"], "SUCCESS", "{stored}");
    let path = text(&stored["result"]["filename"]).to_owned();
    assert_eq!(
        PathBuf::from(&path),
        server.files.join("sales-20240201T090000.000Z.dat")
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), CSV);
    assert_eq!(server.list().await, std::slice::from_ref(&path));

    // An ad-hoc SQL job reads it by the path GET /data lists, under its prefix as the table.
    let (status, report) = server
        .job(&format!(
            "input {{ data = \"{path}\", format = csv }}\nquery = \"SELECT city, sum(amount) AS \
             total FROM sales GROUP BY city ORDER BY city\""
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["status"], "FINISHED", "{report}");
    assert_eq!(
        report["result"],
        json!([
            {"city": "Berlin", "total": 17},
            {"city": "Oslo", "total": 1},
            {"city": "Paris", "total": 5},
        ])
    );
    // … and by its bare name, under a table name of its own.
    let name = "sales-20240201T090000.000Z.dat";
    let (status, report) = server
        .job(&format!(
            "inputs {{ t = {{ data = \"{name}\", format = csv }} }}\nquery = \"SELECT count(*) \
             AS n FROM t\""
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["result"], json!([{"n": 4}]), "{report}");

    // The wrong format fails the job, saying so; an unknown one, a missing file and a path
    // outside the directory are refused at submission.
    let (status, report) = server
        .job(&format!(
            "input {{ data = \"{name}\", format = parquet }}\nquery = \"SELECT * FROM sales\""
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["status"], "ERROR", "{report}");
    assert_eq!(report["result"]["errorClass"], "floe.DataFileError");
    let message = text(&report["result"]["message"]);
    assert!(
        message.contains(&format!("data file `{name}`: cannot read it as parquet")),
        "{message}"
    );
    for (input, expected) in [
        (
            format!("{{ data = \"{name}\", format = xml }}"),
            "`input.format`: `xml` is not a format Floe reads (csv, parquet, ndjson, ipc)"
                .to_owned(),
        ),
        (
            format!("{{ data = \"{name}\" }}"),
            "`input.format`: give the data file's format".to_owned(),
        ),
        (
            "{ data = \"sales-20240101T000000.000Z.dat\", format = csv }".to_owned(),
            "data file `sales-20240101T000000.000Z.dat` not found".to_owned(),
        ),
        (
            "{ data = \"/etc/passwd\", format = csv }".to_owned(),
            "`passwd` is not a name Floe gives data files".to_owned(),
        ),
        (
            "{ data = \"/etc/sales-20240201T090000.000Z.dat\", format = csv }".to_owned(),
            "is not directly inside the data-files directory".to_owned(),
        ),
        (
            format!("{{ data = \"{name}\", format = csv, from = \"2024-01-01\" }}"),
            "`input.from`: a data block takes only `data`".to_owned(),
        ),
    ] {
        let (status, report) = server
            .job(&format!("input {input}\nquery = \"SELECT * FROM sales\""))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{input}: {report}");
        assert_eq!(report["status"], "VALIDATION FAILED", "{report}");
        assert!(
            report.to_string().contains(&expected),
            "{input}: expected `{expected}` in {report}"
        );
    }

    // DELETE takes the url-encoded path GET /data lists; then the file is gone.
    let (status, deleted) = server
        .call(
            Method::DELETE,
            &format!("/data/{}", encoded(&path)),
            None,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["status"], "SUCCESS", "{deleted}");
    assert!(server.list().await.is_empty());
    assert!(server.on_disk().is_empty());
    let (status, gone) = server
        .call(
            Method::DELETE,
            &format!("/data/{}", encoded(&path)),
            None,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{gone}");
    assert_eq!(gone["status"], "ERROR", "{gone}");
    assert!(
        text(&gone["result"]).starts_with("Unable to delete data file: "),
        "{gone}"
    );
    // A job over a deleted file is refused, naming it.
    let (status, report) = server
        .job(&format!(
            "input {{ data = \"{name}\", format = csv }}\nquery = \"SELECT * FROM sales\""
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{report}");
    assert!(report.to_string().contains("not found"), "{report}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_is_read() {
    use polars::prelude::*;
    let dir = TempDir::new().unwrap();
    let server = DataServer::start(dir.path(), |_| {}).await;
    let mut frame =
        df!("city" => ["Berlin", "Paris", "Berlin"], "amount" => [10i64, 5, 7]).unwrap();
    let mut parquet = Vec::new();
    ParquetWriter::new(&mut parquet).finish(&mut frame).unwrap();
    let files = [
        (
            "csv",
            server
                .upload_bytes("c", b"city,amount\nBerlin,10\nParis,5\nBerlin,7\n".to_vec())
                .await,
        ),
        ("parquet", server.upload_bytes("p", parquet).await),
        (
            "ipc",
            server
                .upload_bytes("i", floe::frames::encode_ipc(&frame).unwrap())
                .await,
        ),
        (
            "ndjson",
            server
                .upload_bytes(
                    "n",
                    b"{\"city\":\"Berlin\",\"amount\":10}\n{\"city\":\"Paris\",\"amount\":5}\n\
                      {\"city\":\"Berlin\",\"amount\":7}\n"
                        .to_vec(),
                )
                .await,
        ),
    ];
    for (format, path) in files {
        let (status, report) = server
            .job(&format!(
                "inputs {{ t = {{ data = \"{path}\", format = {format} }} }}\nquery = \"SELECT \
                 city, sum(amount) AS total FROM t GROUP BY city ORDER BY city\""
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{format}: {report}");
        assert_eq!(
            report["result"],
            json!([{"city": "Berlin", "total": 17}, {"city": "Paris", "total": 5}]),
            "{format}: {report}"
        );
    }
    server.stop().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_prefixes_and_paths_touch_nothing() {
    let dir = TempDir::new().unwrap();
    let server = DataServer::start(dir.path(), |_| {}).await;
    let address = server.address();

    // Prefixes: each a 400 naming it, nothing stored anywhere.
    let long = "a".repeat(65);
    for prefix in [
        "..",
        "%2E%2E",
        "..%2Fescaped",
        "%2Fetc%2Fcron.d%2Fx",
        ".hidden",
        "1abc",
        "a..b",
        "a%2Fb",
        "a%5Cb",
        "a%00b",
        "a%20b",
        "%C3%A9t%C3%A9",
        long.as_str(),
    ] {
        let (status, answer) = raw(address, "POST", &format!("/data/{prefix}"), CSV).await;
        assert_eq!(status, 400, "{prefix}: {answer}");
        assert_eq!(answer["status"], "ERROR", "{prefix}: {answer}");
        let message = text(&answer["result"]);
        assert!(
            message.starts_with("Failed to store data file: prefix `"),
            "{prefix}: {message}"
        );
    }
    // `POST /data/` and `/data/../x` reach no upload route.
    for path in ["/data/", "/data/../x", "/data/a/b"] {
        let (status, answer) = raw(address, "POST", path, CSV).await;
        assert!(status == 404 || status == 405, "{path}: {status} {answer}");
    }
    assert!(server.on_disk().is_empty(), "{:?}", server.on_disk());
    assert!(!dir.path().join("escaped").exists());
    assert!(!dir.path().join("x").exists());

    // A file outside, a symlink planted in the directory pointing to it, a directory with a
    // data file's name, and a stored file.
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let secret = outside.join("x-20240201T090000.000Z.dat");
    std::fs::write(&secret, "secret").unwrap();
    let link = server.files.join("link-20240201T090000.000Z.dat");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    std::fs::create_dir(server.files.join("d-20240201T090000.000Z.dat")).unwrap();
    let (status, stored) = server.upload("kept", CSV).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    let kept = text(&stored["result"]["filename"]).to_owned();
    assert_eq!(
        server.list().await,
        std::slice::from_ref(&kept),
        "the link is not listed"
    );

    let in_other_dir = encoded(secret.to_str().unwrap());
    let through_parent = encoded(&format!(
        "{}/../outside/x-20240201T090000.000Z.dat",
        server.files.display()
    ));
    for path in [
        "..%2Fx".to_owned(),
        "%2E%2E%2Fx".to_owned(),
        "%2Fetc%2Fpasswd".to_owned(),
        "passwd".to_owned(),
        "link-20240201T090000.000Z.dat".to_owned(),
        encoded(link.to_str().unwrap()),
        "d-20240201T090000.000Z.dat".to_owned(),
        in_other_dir,
        through_parent,
        format!("{}%2F", encoded(&kept)),
        "kept-20240201T090000.000Z.dat%00".to_owned(),
    ] {
        let (status, answer) = raw(address, "DELETE", &format!("/data/{path}"), "").await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert_eq!(answer["status"], "ERROR", "{path}: {answer}");
        assert!(
            text(&answer["result"]).starts_with("Unable to delete data file: "),
            "{path}: {answer}"
        );
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "secret");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert!(server.files.join("d-20240201T090000.000Z.dat").is_dir());
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), CSV);

    // A job cannot read through the link either.
    let (status, report) = server
        .job(
            "input { data = \"link-20240201T090000.000Z.dat\", format = csv }\nquery = \"SELECT * \
             FROM link\"",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{report}");
    assert!(
        report.to_string().contains("it is a symbolic link"),
        "{report}"
    );

    // A reset deletes what Floe stored, nothing else.
    let (status, reset) = server
        .call(Method::PUT, "/data?reset=reboot", None, "")
        .await;
    assert_eq!(status, StatusCode::OK, "{reset}");
    assert_eq!(reset["result"], "1 data files deleted", "{reset}");
    assert_eq!(
        server.on_disk(),
        [
            "d-20240201T090000.000Z.dat",
            "link-20240201T090000.000Z.dat"
        ]
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "secret");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_refuses_with_507_and_stores_nothing() {
    let dir = TempDir::new().unwrap();
    let server = DataServer::start(dir.path(), |config| {
        config.max_upload_bytes = 64;
        config.data_files.max_files = 3;
        config.data_files.max_total_bytes = 100;
    })
    .await;

    // The same millisecond twice: a counter, never a replacement.
    let (status, first) = server.upload("a", "1").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, second) = server.upload("a", "2").await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert!(
        text(&second["result"]["filename"]).ends_with("/a-20240201T090000.000Z-1.dat"),
        "{second}"
    );
    assert_eq!(
        std::fs::read_to_string(text(&first["result"]["filename"])).unwrap(),
        "1"
    );
    let (status, third) = server.upload("b", &"x".repeat(60)).await;
    assert_eq!(status, StatusCode::OK, "{third}");

    // `data_files.max_files`.
    let (status, full) = server.upload("c", "x").await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{full}");
    assert_eq!(full["status"], "ERROR", "{full}");
    let message = text(&full["result"]);
    assert!(
        message.starts_with("Failed to store data file: the data-files directory holds 3 files")
            && message.contains("`data_files.max_files`"),
        "{message}"
    );
    assert_eq!(server.on_disk().len(), 3, "{:?}", server.on_disk());

    // `data_files.max_total_bytes`: 61 bytes stored once `a` is deleted, 40 more would pass
    // 100.
    let (status, _) = server
        .call(Method::DELETE, "/data/a-20240201T090000.000Z.dat", None, "")
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, full) = server.upload("c", &"x".repeat(40)).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{full}");
    assert!(
        text(&full["result"]).contains("`data_files.max_total_bytes`"),
        "{full}"
    );
    // One file above `max_upload_bytes`: 413.
    let (status, large) = server.upload("c", &"x".repeat(65)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{large}");
    assert_eq!(large["status"], "ERROR", "{large}");
    assert!(
        text(&large["result"]).contains("`max_upload_bytes`"),
        "{large}"
    );
    assert_eq!(server.on_disk().len(), 2, "{:?}", server.on_disk());
    // What fits still does.
    let (status, fits) = server.upload("c", &"x".repeat(30)).await;
    assert_eq!(status, StatusCode::OK, "{fits}");
    assert_eq!(server.list().await.len(), 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_reboot_deletes_every_file() {
    let dir = TempDir::new().unwrap();
    let server = DataServer::start(dir.path(), |_| {}).await;
    for prefix in ["a", "b", "c"] {
        let (status, answer) = server.upload(prefix, CSV).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    for query in ["", "?reset=all", "?reset=reboot&sync=maybe"] {
        let (status, answer) = server
            .call(Method::PUT, &format!("/data{query}"), None, "")
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {answer}");
        assert_eq!(answer["status"], "ERROR", "{answer}");
    }
    assert_eq!(server.list().await.len(), 3);
    let (status, answer) = server
        .call(Method::PUT, "/data?reset=reboot", None, "")
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer,
        json!({"status": "SUCCESS", "result": "3 data files deleted"})
    );
    assert!(server.list().await.is_empty());

    // `sync=false` answers at once; the files go right after. Through the method override,
    // as clients that cannot send PUT do.
    for prefix in ["d", "e"] {
        server.upload(prefix, CSV).await;
    }
    let (status, answer) = server
        .call(
            Method::POST,
            "/data?_method=PUT&reset=reboot&sync=false",
            None,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "SUCCESS", "{answer}");
    for _ in 0..500 {
        if server.on_disk().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(server.on_disk().is_empty(), "{:?}", server.on_disk());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_routes_need_tokens_when_auth_is_on() {
    let dir = TempDir::new().unwrap();
    let tokens = TokenStore::new(dir.path().join("tokens.json"));
    let token = |role, name| tokens.create(role, name, None, Utc::now()).unwrap().token;
    let (read, run, admin) = (
        token(Role::Read, "dashboard"),
        token(Role::Run, "ci"),
        token(Role::Admin, "ops"),
    );
    let server = DataServer::start(dir.path(), |_| {}).await;

    // Anonymous: 401 in spark-jobserver's envelope, on every route.
    for (method, path) in [
        (Method::GET, "/data"),
        (Method::POST, "/data/sales"),
        (Method::DELETE, "/data/sales-20240201T090000.000Z.dat"),
        (Method::PUT, "/data?reset=reboot"),
    ] {
        let (status, answer) = server.call(method.clone(), path, None, CSV).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(answer["status"], "ERROR", "{answer}");
    }
    // read lists; run and read change nothing.
    let (status, listed) = server.call(Method::GET, "/data", Some(&read), "").await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    for token in [&read, &run] {
        for (method, path) in [
            (Method::POST, "/data/sales"),
            (Method::PUT, "/data?reset=reboot"),
        ] {
            let (status, answer) = server.call(method.clone(), path, Some(token), CSV).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
            assert!(
                text(&answer["result"]).starts_with("this request needs the `admin` role"),
                "{answer}"
            );
        }
    }
    assert!(server.on_disk().is_empty());
    // admin: everything.
    let (status, stored) = server
        .call(Method::POST, "/data/sales", Some(&admin), CSV)
        .await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    let path = text(&stored["result"]["filename"]).to_owned();
    let (status, answer) = server
        .call(
            Method::DELETE,
            &format!("/data/{}", encoded(&path)),
            Some(&run),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let (status, answer) = server
        .call(
            Method::DELETE,
            &format!("/data/{}", encoded(&path)),
            Some(&admin),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = server
        .call(Method::PUT, "/data?reset=reboot", Some(&admin), "")
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    server.stop().await;
}
