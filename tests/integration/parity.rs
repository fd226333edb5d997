//! spark-jobserver parity over real HTTP: what its users rely on, as they send it — whole
//! sync results, `PUT /contexts?reset=reboot`, method overrides, dotted names, `cp` lists,
//! `spark.context-settings` in a job's body, and which of an upload and a pipelines-folder
//! file owns an app's name.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::server::{TestServer, text};
use crate::common::{SampleWorld, repo_path};

fn world() -> SampleWorld {
    SampleWorld::new(8_000, 2)
}

/// Every event of the sample's first day, as a SQL job of the ad-hoc context.
const ALL_EVENTS: &str = r#"input { source = events, app = shop, from = "2024-01-01", to = "2024-01-02" }
query = "SELECT * FROM events""#;

async fn put(server: &TestServer, path: &str) -> (StatusCode, Value) {
    let response = server.client.put(server.url(path)).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_results_are_whole_or_say_why_not() {
    let world = world();
    let server = TestServer::start(&world, |c| c.max_json_result_rows = 2_500).await;
    let (_, counted) = server
        .post(
            "/jobs?classPath=sql&sync=true&timeout=60",
            &ALL_EVENTS.replace("SELECT *", "SELECT count(*) AS n"),
        )
        .await;
    let events = counted["result"][0]["n"].as_u64().unwrap() as usize;
    assert!(events > 2_500, "{counted}");

    // Up to the limit: every row, in one answer (streamed: more than a thousand rows).
    let (status, some) = server
        .post(
            "/jobs?classPath=sql&sync=true&timeout=60",
            &ALL_EVENTS.replace("FROM events", "FROM events LIMIT 2500"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{some}");
    assert_eq!(some["status"], "FINISHED");
    assert_eq!(some["result"].as_array().unwrap().len(), 2_500);
    assert!(some.get("resultPage").is_none(), "not a page: the whole");
    // Asked again without a page, the same whole result.
    let (_, again) = server.get(&format!("/jobs/{}", text(&some["jobId"]))).await;
    assert_eq!(again["result"], some["result"]);

    // Over it: not a part passed off as the whole, but the async form saying why.
    let response = server
        .client
        .post(server.url("/jobs?classPath=sql&sync=true&timeout=60"))
        .body(ALL_EVENTS)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let big: Value = response.json().await.unwrap();
    assert_eq!(big["status"], "FINISHED", "{big}");
    assert!(big.get("result").is_none(), "{big}");
    assert_eq!(big["resultTooLarge"]["rows"], events);
    assert_eq!(big["resultTooLarge"]["maxJsonResultRows"], 2_500);
    assert!(
        text(&big["resultTooLarge"]["message"]).contains("format=csv|arrow|parquet"),
        "{big}"
    );
    assert_eq!(location, format!("/jobs/{}", text(&big["jobId"])));
    let (_, whole) = server.get(&location).await;
    assert!(whole.get("result").is_none(), "{whole}");
    assert_eq!(whole["resultTooLarge"]["rows"], events);
    // Pages and the streamed formats carry it all.
    let (_, page) = server
        .get(&format!("{location}?offset=2000&limit=5000"))
        .await;
    assert_eq!(page["result"].as_array().unwrap().len(), events - 2_000);
    assert_eq!(page["resultPage"]["total"], events);
    let csv = server
        .client
        .get(server.url(&format!("{location}?format=csv")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv.lines().count(), events + 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_json_cannot_carry_are_refused_whole_never_cut_or_panicking() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    // Binary data has no JSON form in polars' writer (it panicked on it): a handful of rows
    // (written at once: a 500) and thousands (streamed: a 200 with an empty body) alike.
    for (query, what) in [
        (
            "SELECT CAST(city AS BLOB) AS b FROM events LIMIT 3",
            "`b` (binary)",
        ),
        (
            "SELECT city, CAST(city AS BLOB) AS b FROM events",
            "`b` (binary)",
        ),
    ] {
        let response = server
            .client
            .post(server.url("/jobs?classPath=sql&sync=true&timeout=60"))
            .body(ALL_EVENTS.replace("SELECT * FROM events", query))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.bytes().await.expect("a whole answer");
        let answer: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{query}: {status}, not JSON ({e}): {body:?}"));
        assert_eq!(status, StatusCode::NOT_ACCEPTABLE, "{query}: {answer}");
        let message = text(&answer["result"]);
        assert!(message.contains(what), "{query}: {message}");
        assert!(message.contains("FINISHED"), "{query}: {message}");
        assert!(message.contains("`arrow`"), "{query}: {message}");
        // The job did finish: asked again, the same refusal, and the result in Arrow.
        let id = message
            .strip_prefix("job ")
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("no job id in {message}"));
        let (status, again) = server.get(&format!("/jobs/{id}")).await;
        assert_eq!(status, StatusCode::NOT_ACCEPTABLE, "{again}");
        assert!(text(&again["result"]).contains(what), "{again}");
        let (status, page) = server.get(&format!("/jobs/{id}?limit=2")).await;
        assert_eq!(status, StatusCode::NOT_ACCEPTABLE, "{page}");
        let arrow = server
            .client
            .get(server.url(&format!("/jobs/{id}?format=arrow")))
            .send()
            .await
            .unwrap();
        assert_eq!(arrow.status(), StatusCode::OK);
        assert!(!arrow.bytes().await.unwrap().is_empty());
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_reboot_restarts_the_configured_contexts_only() {
    let world = world();
    let server = TestServer::start(&world, |c| {
        c.contexts.insert(
            "configured".to_owned(),
            [("worker-threads".to_owned(), json!("1"))].into(),
        );
    })
    .await;
    let (_, before) = server.get("/contexts/configured").await;
    assert_eq!(server.post("/contexts/made", "").await.0, StatusCode::OK);
    assert_eq!(
        server.get("/contexts").await.1,
        json!(["configured", "made"])
    );

    assert_eq!(put(&server, "/contexts").await.0, StatusCode::BAD_REQUEST);
    let (status, refused) = put(&server, "/contexts?reset=restart").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text(&refused["result"]).contains("`reset` must be `reboot`"));

    let (status, reset) = put(&server, "/contexts?reset=reboot").await;
    assert_eq!(status, StatusCode::OK, "{reset}");
    assert_eq!(
        reset,
        json!({"status": "SUCCESS", "result": "Context reset"})
    );
    assert_eq!(server.get("/contexts").await.1, json!(["configured"]));
    let (_, after) = server.get("/contexts/configured").await;
    assert_ne!(
        after["id"], before["id"],
        "a new context, not the old one kept"
    );
    assert_eq!(after["settings"]["worker-threads"], 1);

    // For clients that cannot send PUT, and without waiting.
    server.post("/contexts/made", "").await;
    let (status, requested) = server
        .post("/contexts?_method=PUT&reset=reboot&sync=false", "")
        .await;
    assert_eq!(status, StatusCode::OK, "{requested}");
    assert_eq!(requested["result"], "Context reset requested");
    let mut names = Value::Null;
    for _ in 0..100 {
        names = server.get("/contexts").await.1;
        if names == json!(["configured"]) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(names, json!(["configured"]));

    // And a context deleted by a POST with `_method=DELETE`.
    let (status, stopped) = server.post("/contexts/configured?_method=DELETE", "").await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert_eq!(stopped["result"], "Context stopped");
    assert_eq!(server.get("/contexts").await.1, json!([]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_reboot_restarts_configured_contexts_that_fill_the_thread_limit() {
    let world = world();
    // The ad-hoc pool's 4 and `big`'s 8 of 16 threads: the stopped `big`'s 8 threads, until
    // they exit, leave no room for the new one. Resets failed with a 500 and left no `big`.
    let server = TestServer::start(&world, |c| {
        c.core.limits.max_worker_threads = 16;
        c.contexts.insert(
            "big".to_owned(),
            [("worker-threads".to_owned(), json!("8"))].into(),
        );
    })
    .await;
    for _ in 0..10 {
        let (status, reset) = put(&server, "/contexts?reset=reboot").await;
        assert_eq!(status, StatusCode::OK, "{reset}");
        assert_eq!(server.get("/contexts").await.1, json!(["big"]));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_submitted_while_its_context_is_reset_still_ends() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    // Jobs submitted to a context while a reset stops it: each is stopped with the context or
    // runs, never left RUNNING with its task queued behind the stopped threads.
    let mut accepted = Vec::new();
    for round in 0..60u64 {
        let (status, made) = server.post("/contexts/c", "worker-threads = 1").await;
        assert_eq!(status, StatusCode::OK, "{made}");
        let submissions: Vec<_> = (0..8)
            .map(|_| {
                let client = server.client.clone();
                let url = server.url("/jobs?classPath=sql&context=c");
                tokio::spawn(async move {
                    let response = client
                        .post(url)
                        .body(r#"query = "SELECT 1 AS one""#)
                        .send()
                        .await
                        .unwrap();
                    (response.status(), response.json::<Value>().await.unwrap())
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_micros(100 * (round % 10))).await;
        let (status, reset) = put(&server, "/contexts?reset=reboot").await;
        assert_eq!(status, StatusCode::OK, "{reset}");
        for submission in submissions {
            let (status, report) = submission.await.unwrap();
            if status == StatusCode::ACCEPTED {
                accepted.push(text(&report["jobId"]).to_owned());
            }
        }
    }
    for id in accepted {
        let mut report = Value::Null;
        for _ in 0..500 {
            report = server.get(&format!("/jobs/{id}")).await.1;
            if ["FINISHED", "KILLED"].contains(&text(&report["status"])) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(
            ["FINISHED", "KILLED"].contains(&text(&report["status"])),
            "{report}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_may_have_dots_as_in_spark_jobserver() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    for name in ["my.ctx", "wordcount-1.0"] {
        let (status, made) = server.post(&format!("/contexts/{name}"), "").await;
        assert_eq!(status, StatusCode::OK, "{name}: {made}");
        let (status, context) = server.get(&format!("/contexts/{name}")).await;
        assert_eq!((status, &context["name"]), (StatusCode::OK, &json!(name)));
    }
    let (status, report) = server
        .post(
            "/jobs?classPath=sql&context=my.ctx&sync=true",
            r#"query = "SELECT 1 AS one""#,
        )
        .await;
    assert_eq!(
        (status, &report["result"]),
        (StatusCode::OK, &json!([{"one": 1}]))
    );

    let yaml = std::fs::read_to_string(repo_path("pipelines/shop.yaml")).unwrap();
    assert_eq!(
        server.upload("shop-1.0", &yaml).await.0,
        StatusCode::CREATED
    );
    let (_, binary) = server.get("/binaries/shop-1.0").await;
    assert_eq!(binary["app-name"], "shop-1.0");
    let (status, report) = server
        .post(
            "/jobs?appName=shop-1.0&classPath=sales_per_category_daily&sync=true&timeout=60",
            r#"partition = "2024-01-01""#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["status"], "FINISHED", "{report}");
    // Its results are a table of /query, quoted as SQL quotes such names.
    let (status, queried) = server
        .post_json(
            "/query",
            &json!({
                "sql": "SELECT count(*) AS n FROM \"shop-1.0__sales_per_category_daily\"",
                "from": "2024-01-01", "to": "2024-01-02",
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{queried}");
    assert!(queried["rows"][0]["n"].as_u64().unwrap() > 0, "{queried}");

    // Still refused: no leading letter, `..`, characters outside the set.
    for name in ["1ctx", "a..b", "a%2Fb", "a%20b", "a__b"] {
        let (status, refused) = server.post(&format!("/contexts/{name}"), "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {refused}");
        assert_eq!(
            server.upload(name, &yaml).await.0,
            StatusCode::BAD_REQUEST,
            "{name}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_path_lists_pick_the_first_binary_with_the_class() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    let yaml = std::fs::read_to_string(repo_path("pipelines/shop.yaml")).unwrap();
    server.upload("copy", &yaml).await;
    let partition = r#"partition = "2024-01-01""#;

    let (status, report) = server
        .post(
            "/jobs?cp=copy,shop&mainClass=sales_per_category_daily&sync=true&timeout=60",
            partition,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let (_, job) = server
        .get(&format!("/jobs/{}", text(&report["jobId"])))
        .await;
    assert_eq!(job["appName"], "copy", "{job}");

    // The same in the body, as spark-jobserver also reads them.
    let (status, report) = server
        .post(
            "/jobs?sync=true&timeout=60",
            r#"cp = ["shop", "copy"], mainClass = sales_per_category_daily, partition = "2024-01-01""#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let (_, job) = server
        .get(&format!("/jobs/{}", text(&report["jobId"])))
        .await;
    assert_eq!(job["appName"], "shop", "{job}");

    let (status, missing) = server
        .post(
            "/jobs?cp=copy,nope&mainClass=sales_per_category_daily",
            partition,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["result"], "appName nope not found");
    for cp in [
        "http://evil.example/x.jar",
        "file:/etc/passwd",
        "local:/x.jar",
    ] {
        let (status, refused) = server
            .post(
                &format!("/jobs?cp=shop,{cp}&mainClass=sales_per_category_daily"),
                partition,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{cp}: {refused}");
        assert!(
            text(&refused["result"]).contains("never loads code"),
            "{refused}"
        );
    }
    let (status, two) = server
        .post(
            "/jobs?cp=shop&classPath=sales_per_category_daily",
            r#"mainClass = top, partition = "2024-01-01""#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text(&two["result"]).contains("two classes"), "{two}");

    // A list past the bound is refused as it is read: 200,000 names took minutes of an async
    // worker's time, each compared with every one kept, before the bound was checked.
    for names in [65, 200_000] {
        let list: Vec<String> = (0..names).map(|i| format!("b{i}")).collect();
        let body = format!("cp = \"{}\"\nquery = \"SELECT 1 AS one\"", list.join(","));
        let started = std::time::Instant::now();
        let (status, refused) = server.post("/jobs?classPath=sql", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
        assert!(
            text(&refused["result"]).contains("`cp` names more than 64 binaries"),
            "{refused}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    // A parameter Floe does not read is refused, not ignored.
    for (query, expected) in [
        (
            "classPath=sql&sycn=true",
            "unknown parameter `sycn` of POST /jobs",
        ),
        (
            "classPath=sql&spark.proxy.user=bob",
            "`spark.proxy.user` is not supported",
        ),
    ] {
        let (status, refused) = server
            .post(&format!("/jobs?{query}"), r#"query = "SELECT 1""#)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {refused}");
        assert!(text(&refused["result"]).contains(expected), "{refused}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_settings_in_a_job_body_apply_or_are_refused() {
    let world = SampleWorld::new(20_000, 7);
    let server = TestServer::start(&world, |_| {}).await;
    // A week recomputed takes seconds; the job's own ad-hoc context stops it at 300 ms.
    let (status, report) = server
        .post(
            "/jobs?appName=shop&classPath=floe.PipelineRun&sync=true&timeout=60",
            r#"from = "2024-01-01", to = "2024-01-08", force = true
               spark.context-settings { job-timeout = 300ms, spark.executor.memory = 4g }"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["status"], "ERROR", "{report}");
    assert!(
        text(&report["result"]["message"]).contains("timed out"),
        "{report}"
    );

    // Unknown keys are refused as POST /contexts refuses them, and so are those one job
    // cannot have.
    for (settings, expected) in [
        ("nonsense = 1", "unknown context setting `nonsense`"),
        (
            "num-cpu-cores = 4",
            "ad-hoc jobs share the server's ad-hoc pool",
        ),
        ("job-timeout = forever", "setting `job-timeout`"),
    ] {
        let (status, refused) = server
            .post(
                "/jobs?classPath=sql",
                &format!("query = \"SELECT 1\"\nspark.context-settings {{ {settings} }}"),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{settings}: {refused}");
        assert!(
            refused.to_string().contains(expected),
            "{settings}: {refused}"
        );
    }
    // A named context has its settings already.
    server.post("/contexts/warm", "").await;
    let (status, refused) = server
        .post(
            "/jobs?classPath=sql&context=warm",
            "query = \"SELECT 1\"\nspark.context-settings { job-timeout = 1s }",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert!(
        refused
            .to_string()
            .contains("context warm has its own settings"),
        "{refused}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelines_folder_file_owns_its_app_name() {
    let world = world();
    let server = TestServer::start(&world, |_| {}).await;
    let yaml = std::fs::read_to_string(repo_path("pipelines/shop.yaml")).unwrap();
    let (_, shop) = server.get("/binaries/shop").await;
    assert_eq!(shop["source"], json!({"kind": "file", "file": "shop.yaml"}));

    let (status, refused) = server
        .upload("shop", &yaml.replace("rolled up", "summed"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        text(&refused["result"]).contains("defined by the file shop.yaml"),
        "{refused}"
    );
    let (status, refused) = server.delete("/binaries/shop").await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(
        server.get("/binaries/shop").await.1["version"],
        shop["version"]
    );

    assert_eq!(server.upload("copy", &yaml).await.0, StatusCode::CREATED);
    let (_, copy) = server.get("/binaries/copy").await;
    assert_eq!(copy["source"], json!({"kind": "upload"}));
    let (_, all) = server.get("/binaries").await;
    assert_eq!(all["shop"]["source"]["kind"], "file");
    assert_eq!(all["copy"]["source"]["kind"], "upload");
    server.stop().await;
}

/// The example an operation of `api/openapi.yaml` gives for a status: its `example`, or the
/// one of its `examples` named `name`.
fn openapi_example(
    spec: &serde_yaml::Value,
    path: &str,
    method: &str,
    status: &str,
    name: Option<&str>,
) -> Value {
    let response = &spec["paths"][path][method]["responses"][status];
    let response = match response.get("$ref").and_then(|r| r.as_str()) {
        Some(reference) => {
            let component = reference.trim_start_matches("#/components/responses/");
            &spec["components"]["responses"][component]
        }
        None => response,
    };
    let content = &response["content"]["application/json"];
    let example = match name {
        Some(name) => &content["examples"][name]["value"],
        None => &content["example"],
    };
    assert!(
        !example.is_null(),
        "{method} {path} {status} {name:?}: no example"
    );
    serde_json::to_value(example).unwrap()
}

/// The answers the spec shows are the answers the server gives, word for word: a client
/// written from the examples handles what it will really get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_examples_are_what_the_server_answers() {
    let world = SampleWorld::new(20_000, 7);
    let server = TestServer::start(&world, |_| {}).await;
    let spec: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo_path("api/openapi.yaml")).unwrap())
            .unwrap();
    let yaml = std::fs::read_to_string(repo_path("pipelines/shop.yaml")).unwrap();
    let send = |method: reqwest::Method, path: &str, body: &str| {
        let request = server
            .client
            .request(method, server.url(path))
            .body(body.to_owned());
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16().to_string();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    use reqwest::Method;
    /// An example of the spec (path, method, status, example name) and the request (method,
    /// URL, body) the server answers it to.
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        Method,
        String,
        String,
    );
    let cases: Vec<Case> = vec![
        (
            "/binaries/{app}",
            "get",
            "404",
            None,
            Method::GET,
            "/binaries/nope".into(),
            String::new(),
        ),
        (
            "/binaries/{app}",
            "post",
            "409",
            None,
            Method::POST,
            "/binaries/shop".into(),
            yaml.clone(),
        ),
        (
            "/contexts/{name}",
            "post",
            "200",
            None,
            Method::POST,
            "/contexts/shop-ctx".into(),
            String::new(),
        ),
        (
            "/contexts/{name}",
            "post",
            "400",
            Some("exists"),
            Method::POST,
            "/contexts/shop-ctx".into(),
            String::new(),
        ),
        (
            "/contexts/{name}",
            "post",
            "400",
            Some("over-a-limit"),
            Method::POST,
            "/contexts/big?worker-threads=1024".into(),
            String::new(),
        ),
        (
            "/contexts/{name}",
            "post",
            "400",
            Some("unknown-setting"),
            Method::POST,
            "/contexts/typo?worker-thread=2".into(),
            String::new(),
        ),
        (
            "/contexts/{name}",
            "delete",
            "200",
            None,
            Method::DELETE,
            "/contexts/shop-ctx".into(),
            String::new(),
        ),
        (
            "/contexts",
            "put",
            "400",
            None,
            Method::PUT,
            "/contexts?reset=restart".into(),
            String::new(),
        ),
        (
            "/contexts",
            "put",
            "200",
            None,
            Method::PUT,
            "/contexts?reset=reboot".into(),
            String::new(),
        ),
        (
            "/jobs",
            "post",
            "400",
            Some("unparsable"),
            Method::POST,
            "/jobs?appName=shop".into(),
            String::new(),
        ),
        (
            "/jobs",
            "post",
            "404",
            None,
            Method::POST,
            "/jobs?appName=nope&classPath=sql".into(),
            String::new(),
        ),
        (
            "/jobs/{id}",
            "get",
            "404",
            None,
            Method::GET,
            "/jobs/6f1c2c0e-2d7e-4c51-9a43-8a0f0a0d6a11".into(),
            String::new(),
        ),
        (
            "/data",
            "put",
            "400",
            None,
            Method::PUT,
            "/data?reset=all".into(),
            String::new(),
        ),
        (
            "/healthz",
            "get",
            "200",
            None,
            Method::GET,
            "/healthz".into(),
            String::new(),
        ),
        (
            "/readyz",
            "get",
            "200",
            None,
            Method::GET,
            "/readyz".into(),
            String::new(),
        ),
    ];
    for (path, method, status, name, verb, url, body) in cases {
        let expected = openapi_example(&spec, path, method, status, name);
        let (got_status, got) = send(verb, &url, &body).await;
        assert_eq!(
            (got_status.as_str(), &got),
            (status, &expected),
            "{method} {path} {status} {name:?}"
        );
    }

    // A full queue: the example's counts are its own context's; the words are the same.
    server
        .post("/contexts/shop-ctx?worker-threads=1&queue-length=0", "")
        .await;
    let long = r#"from = "2024-01-01", to = "2024-01-08", force = true"#;
    let (_, running) = server
        .post(
            "/jobs?appName=shop&classPath=floe.PipelineRun&context=shop-ctx",
            long,
        )
        .await;
    let (status, full) = server
        .post(
            "/jobs?appName=shop&classPath=floe.PipelineRun&context=shop-ctx",
            long,
        )
        .await;
    // Every number as `N`.
    let words = |value: &Value| -> String {
        let mut out = String::new();
        for c in value.to_string().chars() {
            if !c.is_ascii_digit() {
                out.push(c);
            } else if !out.ends_with('N') {
                out.push('N');
            }
        }
        out
    };
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{full}");
    assert_eq!(
        words(&full),
        words(&openapi_example(&spec, "/jobs", "post", "429", None))
    );
    server
        .delete(&format!("/jobs/{}", text(&running["jobId"])))
        .await;
    server.stop().await;
}

/// Kills and context deletions are logged: a shared server's operators see who stopped what.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_and_context_deletions_are_logged() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let world = SampleWorld::new(20_000, 7);
    let config = world.dir.path().join("floe-server.yaml");
    std::fs::write(&config, "scheduler:\n  recurring: false\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_floe"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .args(["--bind", "127.0.0.1:0", "--pipelines"])
        .arg(repo_path("pipelines"))
        .arg("--data-dir")
        .arg(world.data_dir())
        .arg("--store")
        .arg(world.store_dir())
        .env("FLOE_LOG", "info")
        .env_remove("FLOE_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start floe serve");
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let wait_for = |needle: &dyn Fn(&str) -> bool| -> String {
        loop {
            let line = lines
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("the log line within 60 s");
            if needle(&line) {
                return line;
            }
        }
    };
    let listening = wait_for(&|l| l.starts_with("floe serve: listening on "));
    // It prints its URL (`http://127.0.0.1:PORT`).
    let base = listening
        .trim_start_matches("floe serve: listening on ")
        .to_owned();
    let client = reqwest::Client::new();
    let post = |path: String, body: &'static str| {
        let request = client.post(format!("{base}{path}")).body(body);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    post("/contexts/logged".into(), "").await;
    let job = post(
        "/jobs?appName=shop&classPath=floe.PipelineRun&context=logged".into(),
        r#"from = "2024-01-01", to = "2024-01-08", force = true"#,
    )
    .await;
    let id = text(&job["jobId"]).to_owned();
    let killed = client
        .delete(format!("{base}/jobs/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(killed.status(), StatusCode::OK);
    let line = wait_for(&|l| l.contains("job killed"));
    assert!(line.contains(&id) && line.contains("logged"), "{line}");

    let stopped = client
        .delete(format!("{base}/contexts/logged"))
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status(), StatusCode::OK);
    let line = wait_for(&|l| l.contains("context stopped"));
    assert!(line.contains("logged"), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Uploaded data files are never a pipeline source: a data-files directory inside a data root
/// (or holding one) stops the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_files_directory_overlapping_a_data_root_is_refused() {
    let world = world();
    for dir in [
        world.data_dir().join("uploads"),
        world.dir.path().to_path_buf(),
    ] {
        let mut config = crate::common::server::test_config(
            &repo_path("pipelines"),
            &world.data_dir(),
            &world.store_dir(),
        );
        config.data_files.dir = Some(dir.clone());
        let runtime = tokio::runtime::Handle::current();
        let started = tokio::task::spawn_blocking(move || {
            floe::server::build_state(
                config,
                floe::job::JobRegistry::new(),
                std::sync::Arc::new(floe::clock::ManualClock::new(crate::common::utc(
                    2024, 2, 1, 0,
                ))),
                runtime,
            )
            .map(drop)
        })
        .await
        .unwrap();
        let error = started
            .expect_err("overlapping directories accepted")
            .to_string();
        assert!(error.contains("overlap"), "{}: {error}", dir.display());
    }
}
