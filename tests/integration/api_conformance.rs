//! Where schemathesis (`.ci/schemathesis`) found the server and `api/openapi.yaml` apart, and
//! the server was the one to change: each answer pinned over real HTTP with the status and
//! shape the document gives.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::SampleWorld;
use crate::common::server::{TestServer, text};

const HOUR: &str = r#"partition = "2024-01-01T05:00:00Z""#;
const RESULTS: &str = "/pipelines/shop/jobs/purchases_hourly/results?from=2024-01-01T05:00:00Z&to=2024-01-01T06:00:00Z";

async fn finished_job(server: &TestServer) -> String {
    let (status, report) = server
        .post(
            "/jobs?appName=shop&classPath=purchases_hourly&sync=true&timeout=60",
            HOUR,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["status"], "FINISHED", "{report}");
    text(&report["jobId"]).to_owned()
}

async fn get_accepting(server: &TestServer, path: &str, accept: &str) -> (StatusCode, Value) {
    let response = server
        .client
        .get(server.url(path))
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn pipelines_and_binaries_have_the_documented_fields() {
    let world = SampleWorld::new(2_000, 1);
    let server = TestServer::start(&world, |_| {}).await;

    // `app` was documented (OpenAPI and docs/jobserver.md) but not sent.
    let (status, list) = server.get("/pipelines").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let shop = list
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == "shop"))
        .unwrap_or_else(|| panic!("no shop in {list}"));
    assert_eq!(shop["app"], "shop", "{shop}");
    let (status, detail) = server.get("/pipelines/shop").await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["app"], "shop", "{detail}");
    assert_eq!(detail["name"], "shop", "{detail}");

    // The spark-jobserver list and the single binary, as the document now describes them.
    let (_, binaries) = server.get("/binaries").await;
    let entry = &binaries["shop"];
    for key in ["binary-type", "upload-time", "version", "jobs"] {
        assert!(entry.get(key).is_some(), "no `{key}` in {entry}");
    }
    let (_, binary) = server.get("/binaries/shop").await;
    for key in [
        "app-name",
        "binary-type",
        "upload-time",
        "version",
        "sha256",
        "size",
        "jobs",
        "versions",
    ] {
        assert!(binary.get(key).is_some(), "no `{key}` in {binary}");
    }

    // `limit=0` answered one run; the document says at least 1.
    finished_job(&server).await;
    let (status, error) = server.get("/pipelines/shop/runs?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"]["code"], "bad_request", "{error}");
    assert!(
        text(&error["error"]["message"]).contains("`limit` must be at least 1"),
        "{error}"
    );
    let (status, runs) = server.get("/pipelines/shop/runs?limit=1").await;
    assert_eq!(status, StatusCode::OK, "{runs}");
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_format_is_a_400_and_an_unmet_accept_a_406() {
    let world = SampleWorld::new(2_000, 1);
    let server = TestServer::start(&world, |_| {}).await;
    let id = finished_job(&server).await;
    let job = format!("/jobs/{id}");

    // `format=` is a parameter with a fixed set of values: a bad one is a bad request.
    let (status, answer) = server.get(&format!("{job}?format=xml")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["status"], "ERROR", "{answer}");
    assert!(
        text(&answer["result"]).contains("unknown format `xml`"),
        "{answer}"
    );
    let (status, answer) = server.get(&format!("{RESULTS}&format=xml")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["code"], "bad_request", "{answer}");
    let (status, answer) = server
        .post(
            "/query",
            &json!({ "sql": "SELECT 1 AS x", "format": "xml" }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["code"], "bad_request", "{answer}");

    // An `Accept` naming nothing Floe writes is what 406 is for, now documented.
    let (status, answer) = get_accepting(&server, &job, "image/png").await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE, "{answer}");
    assert_eq!(answer["status"], "ERROR", "{answer}");
    let (status, answer) = get_accepting(&server, RESULTS, "image/png").await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE, "{answer}");
    assert_eq!(answer["error"]["code"], "not_acceptable", "{answer}");
    let response = server
        .client
        .post(server.url("/query"))
        .header("accept", "image/png")
        .body(json!({ "sql": "SELECT 1 AS x" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);

    // Both still serve what they can.
    let (status, _) = get_accepting(&server, &job, "image/png, application/json;q=0.5").await;
    assert_eq!(status, StatusCode::OK);
    let (status, page) = server.get(&format!("{RESULTS}&format=json")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    server.stop().await;
}
