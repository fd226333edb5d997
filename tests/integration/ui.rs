//! The web UI over real HTTP, and in a real browser: the shell's routes, its security headers
//! and its openness when the API needs a token; the pipelines page and a pipeline's page drawn
//! by headless Chromium against a real `floe serve`, its grid showing the states the scheduler
//! left, with no console message. Without Chromium the browser test says so and skips.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use floe::auth::{Role, TokenStore};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION};

use super::common::SampleWorld;
use super::common::server::TestServer;

#[tokio::test]
async fn the_shell_is_served_with_a_strict_policy_and_is_open_when_the_api_needs_a_token() {
    let world = SampleWorld::new(1_000, 1);
    // A token in the tokens file beside the store turns authentication on.
    let issued = TokenStore::new(world.dir.path().join("tokens.json"))
        .create(Role::Read, "reader", None, Utc::now())
        .unwrap();
    let server = TestServer::start(&world, |_| {}).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str| client.get(format!("{}{path}", server.base)).send();

    let root = get("/").await.unwrap();
    assert_eq!(root.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(root.headers()[LOCATION], "/ui");

    for (path, content_type, marker) in [
        (
            "/ui",
            "text/html; charset=utf-8",
            "<script type=\"module\" src=\"/ui/app.js\">",
        ),
        (
            "/ui/app.js",
            "text/javascript; charset=utf-8",
            "async function api(",
        ),
        ("/ui/style.css", "text/css; charset=utf-8", ".grid"),
    ] {
        let response = get(path).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers[CONTENT_TYPE], content_type, "{path}");
        let policy = headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(policy.contains(directive), "{path}: {policy}");
        }
        assert!(!policy.contains("unsafe"), "{path}: {policy}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        let body = response.text().await.unwrap();
        assert!(body.contains(marker), "{path}");
        // Nothing is fetched from elsewhere.
        assert!(!body.contains("http://") || path == "/ui/app.js", "{path}");
        assert!(!body.contains("https://"), "{path}");
    }
    // The script names only the SVG namespace as an absolute URL.
    let script = get("/ui/app.js").await.unwrap().text().await.unwrap();
    let absolute: Vec<&str> = script
        .match_indices("http://")
        .map(|(at, _)| &script[at..at + 30])
        .collect();
    assert!(
        absolute
            .iter()
            .all(|url| url.starts_with("http://www.w3.org/2000/svg")),
        "{absolute:?}"
    );

    // Only the embedded files: an encoded traversal is a name the UI does not have.
    let missing = get("/ui/..%2F..%2Fetc%2Fpasswd").await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    // Normalised by the client, it is a path no route takes: anonymous callers learn nothing.
    let elsewhere = get("/ui/../../etc/passwd").await.unwrap();
    assert_eq!(elsewhere.status(), StatusCode::UNAUTHORIZED);
    let missing = get("/ui/secrets.js").await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert!(body.to_string().contains("app.js, style.css"), "{body}");

    // Only GET is open: another method on the shell's paths needs a token like any route.
    let posted = client
        .post(format!("{}/ui", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), StatusCode::UNAUTHORIZED);

    // The data behind the page needs the token; the page asks for it on a 401.
    let anonymous = get("/pipelines").await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let with_token = client
        .get(format!("{}/pipelines", server.base))
        .bearer_auth(&issued.token)
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), StatusCode::OK);
    server.stop().await;
}

/// Debian's Chromium, if this machine has it.
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            let output = Command::new("which").arg(name).output().ok()?;
            output
                .status
                .success()
                .then(|| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
        })
}

/// The DOM of `url` once its scripts have run (headless Chromium, up to 10 s of virtual time),
/// and the console messages the page logged.
fn rendered(browser: &PathBuf, url: &str) -> (String, Vec<String>) {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let console = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| line.contains("CONSOLE"))
        .map(str::to_owned)
        .collect();
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        console,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_draws_the_pipelines_and_the_grid_of_a_pipeline() {
    let Some(browser) = chromium() else {
        eprintln!(
            "SKIPPED a_real_browser_draws_the_pipelines_and_the_grid_of_a_pipeline: no chromium \
             on PATH (.ci/run installs Debian's `chromium`)"
        );
        return;
    };
    let world = SampleWorld::new(2_000, 2);
    let server = TestServer::start(&world, |_| {}).await;
    let (status, answer) = server.upload("grid", super::grid::PIPELINE).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    super::grid::backfill_the_first_day(&server).await;

    let base = server.base.clone();
    let (pipelines, console) = tokio::task::spawn_blocking({
        let browser = browser.clone();
        let base = base.clone();
        move || rendered(&browser, &format!("{base}/ui#/"))
    })
    .await
    .unwrap();
    assert!(console.is_empty(), "console: {console:?}");
    assert!(
        pipelines.contains(r##"<a href="#/pipelines/grid">grid</a>"##),
        "{pipelines}"
    );
    assert!(
        pipelines.contains(r##"<a href="#/pipelines/shop">shop</a>"##),
        "{pipelines}"
    );
    // The scheduler's health shows on every page.
    assert!(pipelines.contains("scheduler: "), "{pipelines}");

    let (browser_again, base_again) = (browser.clone(), base.clone());
    let (page, console) = tokio::task::spawn_blocking(move || {
        rendered(
            &browser,
            &format!("{base}/ui#/pipelines/grid?from=2024-01-01&to=2024-01-03"),
        )
    })
    .await
    .unwrap();
    assert!(console.is_empty(), "console: {console:?}");
    // The DAG: the three sources and four jobs.
    for node in [
        "events",
        "absent",
        "late",
        "counted",
        "broken",
        "after_broken",
        "waits",
    ] {
        assert!(
            page.contains(&format!(r#"data-node="{node}""#)),
            "{node}: {page}"
        );
    }
    // The grid: each job's row holds its two days, in the states the scheduler left.
    for (job, first) in [
        ("counted", "succeeded"),
        ("broken", "failed"),
        ("after_broken", "upstream_failed"),
        ("waits", "waiting"),
    ] {
        let row_at = page
            .find(&format!(r#"data-job="{job}""#))
            .unwrap_or_else(|| panic!("no row for {job}: {page}"));
        let row = &page[row_at
            ..page[row_at..]
                .find("</div>")
                .map_or(page.len(), |end| row_at + end)];
        let states: Vec<&str> = row
            .match_indices(r#"data-state=""#)
            .map(|(at, m)| {
                let rest = &row[at + m.len()..];
                &rest[..rest.find('"').unwrap()]
            })
            .collect();
        assert_eq!(states, [first, "missing"], "{job}: {row}");
        assert!(row.contains(r#"data-label="2024-01-01""#), "{row}");
        assert!(row.contains(r#"data-hours="24""#), "{row}");
    }
    assert!(
        page.contains("8 partitions from 2024-01-01T00:00:00.000Z"),
        "{page}"
    );

    // A pipeline that does not exist, and a malformed address: said on the page, nothing thrown.
    for (hash, said) in [
        ("#/pipelines/nope", "pipeline `nope` not found"),
        ("#/pipelines/%E0", "URI malformed"),
    ] {
        let (browser, base) = (browser_again.clone(), base_again.clone());
        let (page, console) =
            tokio::task::spawn_blocking(move || rendered(&browser, &format!("{base}/ui{hash}")))
                .await
                .unwrap();
        assert!(console.is_empty(), "{hash}: console: {console:?}");
        assert!(
            page.contains(r#"class="error""#) && page.contains(said),
            "{hash}: {page}"
        );
    }
    // A server on the test's clock: its answers are not stale.
    tokio::time::sleep(Duration::from_millis(1)).await;
    server.stop().await;
}
