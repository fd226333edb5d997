//! `callbackUrl`: the POST spark-jobserver makes to a URL given with `POST /jobs` when the job
//! ends. This module owns the check of a callback URL against the server's allow-list (the only
//! way to make a [`CallbackUrl`]), the body posted, and its delivery: a bounded number of
//! pending deliveries, one dispatcher task on the server's runtime, retries and timeouts.
//!
//! It does not own when a job ends (`lifecycle`'s `finalize` hands over every job with a
//! callback that ends FINISHED or ERROR; KILLED jobs never come, as in spark-jobserver), the
//! parsing of the `callbacks:` configuration (`server::config`), or the 400 a refused URL gets
//! (`server::sjs`).
//!
//! ```text
//!  finalize ─ a place among `max_pending`? ── none: WARN, dropped
//!           └ the body (result rows up to `max_body_bytes`, else a placeholder)
//!               ─► channel ─► dispatcher ─► a POST (≤ MAX_IN_FLIGHT at once, each ≤ `timeout`)
//!                                            ├ 2xx: INFO delivered
//!                                            ├ 3xx: WARN given up (redirects are not followed)
//!                                            └ else: again after `retry_interval`, up to
//!                                              `attempts` in all; then WARN given up
//! ```
//!
//! Threads: [`Callbacks::job_ended`] runs on whichever thread finalises the job (a worker, the
//! timeout thread, the shutdown) and never waits: it builds the body and queues it. Only the
//! dispatcher task touches the network. Deliveries live in memory: those pending when the server
//! stops (after what is left of `shutdown_grace`) are dropped, and a callback URL is not stored
//! with its job, so a job a restart interrupts ends without a callback (spark-jobserver keeps
//! none either).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use polars::prelude::{DataFrame, JsonFormat, JsonWriter, SerWriter};
use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use url::Url;

use crate::error::error_chain;
use crate::store::JobFailure;

/// `callbacks:` of the server's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackSettings {
    /// The URLs a `callbackUrl` must fall under (see [`AllowedUrl`]). Empty, the default:
    /// every `callbackUrl` is refused, since a callback is a request the server makes wherever
    /// a client aims it.
    pub allowed_urls: Vec<AllowedUrl>,
    /// POSTs of one delivery at most, the first included (spark-jobserver's 5).
    pub attempts: u32,
    /// The wait after a failed POST before the next (spark-jobserver's 10 s).
    pub retry_interval: Duration,
    /// How long one POST may take, from connecting to the end of the answer.
    pub timeout: Duration,
    /// Deliveries between their job's end and their last POST, at most; a job ending beyond it
    /// has its callback dropped (logged at WARN). With `max_body_bytes`, this bounds the memory
    /// callbacks hold.
    pub max_pending: usize,
    /// JSON bytes of a FINISHED job's rows above which the body carries a placeholder instead
    /// (`"<result of N rows: GET /jobs/{id}>"`), as spark-jobserver does for a stream result.
    pub max_body_bytes: usize,
}

impl Default for CallbackSettings {
    fn default() -> Self {
        CallbackSettings {
            allowed_urls: Vec::new(),
            attempts: 5,
            retry_interval: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
            max_pending: 256,
            max_body_bytes: 256 << 10,
        }
    }
}

impl CallbackSettings {
    /// A `callbackUrl` as a client gave it, checked: an http or https URL without user name or
    /// password, under one of `allowed_urls`.
    pub fn check(&self, text: &str) -> Result<CallbackUrl, CallbackUrlError> {
        if self.allowed_urls.is_empty() {
            return Err(CallbackUrlError::Off);
        }
        let url = Url::parse(text.trim()).map_err(|source| CallbackUrlError::NotAUrl {
            url: shorten(text),
            source,
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(CallbackUrlError::Scheme {
                scheme: shorten(url.scheme()),
            });
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(CallbackUrlError::UserInfo);
        }
        // The parser has resolved `.`, `..` and their encoded forms; an encoded separator it
        // leaves alone, and a receiver that decodes it could route the path elsewhere.
        let path = url.path().to_ascii_lowercase();
        if path.contains("%2f") || path.contains("%5c") {
            return Err(CallbackUrlError::EncodedSeparator);
        }
        // Path parameters (`/floe/..;/admin`): Java servers read `..;` as `..`, so a receiver
        // could route the path out of the allowed prefix the parser saw it in.
        if path.contains(';') || path.contains("%3b") {
            return Err(CallbackUrlError::PathParameter);
        }
        if !self.allowed_urls.iter().any(|allowed| allowed.admits(&url)) {
            return Err(CallbackUrlError::NotAllowed {
                url: shorten(url.as_str()),
            });
        }
        Ok(CallbackUrl(url))
    }
}

/// An entry of `callbacks.allowed_urls`: an http or https URL without user name, password,
/// query or fragment. A callback URL falls under it with the same scheme, host (compared
/// without case) and port (the scheme's default when not written), and a path that is the
/// entry's or continues it after a `/`: `https://hooks.example.com/floe` admits
/// `…/floe` and `…/floe/job-42`, not `…/floe-admin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedUrl(Url);

impl AllowedUrl {
    pub fn parse(text: &str) -> Result<AllowedUrl, AllowedUrlError> {
        let url = Url::parse(text.trim()).map_err(|source| AllowedUrlError::NotAUrl {
            text: text.to_owned(),
            source,
        })?;
        let problem = if !matches!(url.scheme(), "http" | "https") {
            Some("only http and https URLs can be allowed")
        } else if !url.username().is_empty() || url.password().is_some() {
            Some("an allowed URL has no user name or password")
        } else if url.query().is_some() || url.fragment().is_some() {
            Some("an allowed URL is a prefix of paths: it has no query or fragment")
        } else {
            None
        };
        match problem {
            Some(problem) => Err(AllowedUrlError::Refused {
                text: text.to_owned(),
                problem,
            }),
            None => Ok(AllowedUrl(url)),
        }
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Whether `url` falls under this entry.
    fn admits(&self, url: &Url) -> bool {
        let allowed = &self.0;
        allowed.scheme() == url.scheme()
            && allowed
                .host_str()
                .zip(url.host_str())
                .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b))
            && allowed.port_or_known_default() == url.port_or_known_default()
            && path_under(allowed.path(), url.path())
    }
}

/// `path` is `prefix` or continues it at a segment boundary.
fn path_under(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

/// Why an entry of `callbacks.allowed_urls` is refused.
#[derive(Debug, thiserror::Error)]
pub enum AllowedUrlError {
    #[error("`{text}` is not a URL ({source})")]
    NotAUrl {
        text: String,
        #[source]
        source: url::ParseError,
    },
    #[error("`{text}`: {problem}")]
    Refused { text: String, problem: &'static str },
}

/// A callback URL that passed [`CallbackSettings::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackUrl(Url);

impl CallbackUrl {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The URL without its query, which may hold the receiver's secret, for the log.
    fn for_log(&self) -> String {
        let mut url = self.0.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.to_string()
    }
}

/// Why a `callbackUrl` is refused; every message names the parameter.
#[derive(Debug, thiserror::Error)]
pub enum CallbackUrlError {
    #[error(
        "`callbackUrl` is refused: this server sends no callbacks (its configuration's \
         `callbacks.allowed_urls` is empty)"
    )]
    Off,
    #[error("`callbackUrl` is refused: this server cannot send callbacks now (see its log)")]
    Unavailable,
    #[error("`callbackUrl` `{url}` is not a URL: {source}")]
    NotAUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("`callbackUrl` must be an http or https URL, not `{scheme}:`")]
    Scheme { scheme: String },
    #[error("`callbackUrl` must not hold a user name or password")]
    UserInfo,
    #[error("`callbackUrl` must not hold an encoded `/` or `\\` in its path")]
    EncodedSeparator,
    #[error("`callbackUrl` must not hold `;` (path parameters) in its path")]
    PathParameter,
    #[error(
        "`callbackUrl` `{url}` is not allowed: no URL of the server's `callbacks.allowed_urls` \
         has its scheme, host and port and a path it falls under"
    )]
    NotAllowed { url: String },
}

/// A client's text as an error repeats it: at most 200 characters, then `…`.
fn shorten(text: &str) -> String {
    const KEEP: usize = 200;
    crate::error::first_chars(text, KEEP)
}

/// How a job with a callback ended.
#[derive(Debug)]
pub(super) enum JobEnd {
    Finished(DataFrame),
    Failed(JobFailure),
}

/// spark-jobserver's callback body: `{"jobId", "result": rows}` (with `"status": "FINISHED"`
/// too, as Floe's sync answer has it), or `{"jobId", "status": "ERROR", "result": {message,
/// errorClass, stack}}`.
fn body(job_id: &str, end: &JobEnd, max_body_bytes: usize) -> Vec<u8> {
    match end {
        JobEnd::Failed(failure) => {
            let body = json!({ "jobId": job_id, "status": "ERROR", "result": failure });
            body.to_string().into_bytes()
        }
        JobEnd::Finished(frame) => {
            let rows = rows_within(frame, max_body_bytes).unwrap_or_else(|| {
                let rows = frame.height();
                let noun = if rows == 1 { "row" } else { "rows" };
                json!(format!("<result of {rows} {noun}: GET /jobs/{job_id}>"))
                    .to_string()
                    .into_bytes()
            });
            let id = json!(job_id).to_string();
            let mut body = Vec::with_capacity(rows.len() + id.len() + 48);
            body.extend_from_slice(b"{\"jobId\":");
            body.extend_from_slice(id.as_bytes());
            body.extend_from_slice(b",\"status\":\"FINISHED\",\"result\":");
            body.extend_from_slice(&rows);
            body.push(b'}');
            body
        }
    }
}

/// Rows a batch holds while the body is built: what is written beyond `max_body_bytes` is at
/// most one batch.
const ROWS_PER_BATCH: usize = 256;

/// `frame`'s rows as a JSON array when it takes at most `max` bytes and JSON can carry every
/// column. A frame with more rows than could fit is refused without writing any; others are
/// written a batch at a time, and dropped as soon as they go over.
fn rows_within(frame: &DataFrame, max: usize) -> Option<Vec<u8>> {
    // Columns JSON cannot carry (polars' writer panics on them): the placeholder.
    if !crate::frames::json_unwritable_columns(frame).is_empty() {
        return None;
    }
    // The shortest a row can be written: `{"name":0,…}` and a comma.
    let shortest_row = 2 + frame
        .get_column_names()
        .iter()
        .map(|name| name.len() + 5)
        .sum::<usize>();
    if frame.height() > max / shortest_row + 1 {
        return None;
    }
    let mut json = Vec::with_capacity(max.min(64 << 10));
    json.push(b'[');
    let mut first = true;
    let mut offset = 0;
    while offset < frame.height() {
        let mut batch = frame.slice(offset as i64, ROWS_PER_BATCH);
        offset += batch.height().max(1);
        let mut lines = Vec::new();
        JsonWriter::new(&mut lines)
            .with_json_format(JsonFormat::JsonLines)
            .finish(&mut batch)
            .inspect_err(|e| debug!(error = %e, "a callback's rows cannot be written as JSON"))
            .ok()?;
        // One object a line: JSON strings escape their newlines.
        for line in lines.split(|b| *b == b'\n').filter(|line| !line.is_empty()) {
            if !first {
                json.push(b',');
            }
            first = false;
            json.extend_from_slice(line);
        }
        if json.len() + 1 > max {
            return None;
        }
    }
    json.push(b']');
    (json.len() <= max.max(2)).then_some(json)
}

/// POSTs in flight at once: enough that a slow receiver does not hold up the others, few enough
/// that a burst of job ends does not open hundreds of connections.
const MAX_IN_FLIGHT: usize = 8;

/// Bytes of a failed POST's answer kept for the log; the rest is not read.
const ANSWER_BYTES: usize = 256;

/// One job's callback, from its end to its last POST.
struct Delivery {
    job_id: String,
    url: CallbackUrl,
    body: Bytes,
    /// POSTs made so far.
    attempts: u32,
    /// Its place among `max_pending`, given back when the delivery ends, either way.
    _place: OwnedSemaphorePermit,
}

/// What one POST came to.
enum Attempt {
    Delivered(StatusCode),
    Redirected(StatusCode),
    Failed(String),
}

/// The job server's side of callbacks: the allow-list check and the queue to the dispatcher.
pub(super) struct Callbacks {
    settings: CallbackSettings,
    /// To the dispatcher; `None` when no URL is allowed (no dispatcher runs) or the HTTP client
    /// could not be built (logged at start).
    queue: Option<mpsc::UnboundedSender<Delivery>>,
    /// `max_pending` places: a delivery takes one before it is queued, so the channel (unbounded
    /// itself) and the retries waiting in the dispatcher hold at most that many.
    places: Arc<Semaphore>,
    max_pending: usize,
}

impl std::fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callbacks")
            .field("settings", &self.settings)
            .field("running", &self.queue.is_some())
            .finish_non_exhaustive()
    }
}

impl Callbacks {
    /// Starts the dispatcher on `runtime` when `settings` allow any URL.
    pub(super) fn start(settings: CallbackSettings, runtime: &tokio::runtime::Handle) -> Callbacks {
        let max_pending = settings.max_pending.min(Semaphore::MAX_PERMITS);
        let queue = if settings.allowed_urls.is_empty() {
            None
        } else {
            let _entered = runtime.enter();
            match client(settings.timeout) {
                Ok(client) => {
                    let (sender, receiver) = mpsc::unbounded_channel();
                    let dispatcher = Dispatcher {
                        client,
                        attempts: settings.attempts.max(1),
                        retry_interval: settings.retry_interval,
                        timeout: settings.timeout,
                    };
                    runtime.spawn(dispatcher.run(receiver));
                    Some(sender)
                }
                Err(e) => {
                    tracing::error!(error = %error_chain(&e), "cannot build the HTTP client of callbacks; every `callbackUrl` is refused");
                    None
                }
            }
        };
        Callbacks {
            settings,
            queue,
            places: Arc::new(Semaphore::new(max_pending)),
            max_pending,
        }
    }

    /// See [`CallbackSettings::check`]; refused too while no dispatcher runs.
    pub(super) fn check(&self, text: &str) -> Result<CallbackUrl, CallbackUrlError> {
        let url = self.settings.check(text)?;
        if self.queue.is_none() {
            return Err(CallbackUrlError::Unavailable);
        }
        Ok(url)
    }

    /// Queues the callback of a job that ended FINISHED or ERROR; never waits.
    pub(super) fn job_ended(&self, job_id: &str, url: &CallbackUrl, end: &JobEnd) {
        let Some(queue) = &self.queue else {
            return;
        };
        let Ok(place) = self.places.clone().try_acquire_owned() else {
            warn!(
                job_id = %job_id,
                max_pending = self.max_pending,
                "callback dropped: `callbacks.max_pending` deliveries are pending already"
            );
            return;
        };
        let delivery = Delivery {
            job_id: job_id.to_owned(),
            url: url.clone(),
            body: Bytes::from(body(job_id, end, self.settings.max_body_bytes)),
            attempts: 0,
            _place: place,
        };
        if queue.send(delivery).is_err() {
            warn!(job_id = %job_id, "callback dropped: the dispatcher has stopped");
        }
    }

    /// Deliveries not ended yet.
    pub(super) fn pending(&self) -> usize {
        self.max_pending - self.places.available_permits()
    }

    /// Waits until no delivery is pending or `deadline` passes; returns how many are left.
    /// Blocking.
    pub(super) fn wait_idle(&self, deadline: std::time::Instant) -> usize {
        while self.pending() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.pending()
    }
}

/// The HTTP client of callbacks: no redirects followed, no proxy from the environment (the
/// allow-list names where requests go), a connect timeout.
fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(timeout)
        .user_agent(concat!("floe/", env!("CARGO_PKG_VERSION"), " (callback)"))
        .build()
}

/// The one task that sends callbacks.
struct Dispatcher {
    client: reqwest::Client,
    attempts: u32,
    retry_interval: Duration,
    timeout: Duration,
}

impl Dispatcher {
    /// Runs until the job server is gone (the channel closes) and every delivery has ended.
    async fn run(self, mut queue: mpsc::UnboundedReceiver<Delivery>) {
        let mut ready: VecDeque<Delivery> = VecDeque::new();
        // Deliveries waiting for their next POST, by when it is due: every wait is
        // `retry_interval`, so the order they failed in is the order they fall due.
        let mut waiting: VecDeque<(Instant, Delivery)> = VecDeque::new();
        let mut in_flight: JoinSet<(Delivery, Attempt)> = JoinSet::new();
        let mut open = true;
        loop {
            while in_flight.len() < MAX_IN_FLIGHT {
                let Some(delivery) = ready.pop_front() else {
                    break;
                };
                in_flight.spawn(attempt(self.client.clone(), self.timeout, delivery));
            }
            if !open && ready.is_empty() && waiting.is_empty() && in_flight.is_empty() {
                return;
            }
            let due = waiting.front().map(|(at, _)| *at);
            tokio::select! {
                received = queue.recv(), if open => match received {
                    Some(delivery) => ready.push_back(delivery),
                    None => open = false,
                },
                Some(joined) = in_flight.join_next() => match joined {
                    Ok((delivery, outcome)) => self.settle(delivery, outcome, &mut waiting),
                    Err(e) => warn!(error = %e, "a callback POST panicked; its delivery is dropped"),
                },
                () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    let now = Instant::now();
                    while waiting.front().is_some_and(|(at, _)| *at <= now) {
                        if let Some((_, delivery)) = waiting.pop_front() {
                            ready.push_back(delivery);
                        }
                    }
                }
                // Every branch off: the queue is closed and nothing is left (checked above).
                else => return,
            }
        }
    }

    /// Logs a delivery's end, or sets it to wait for its next POST.
    fn settle(
        &self,
        delivery: Delivery,
        outcome: Attempt,
        waiting: &mut VecDeque<(Instant, Delivery)>,
    ) {
        let job_id = delivery.job_id.as_str();
        let url = delivery.url.for_log();
        let attempts = delivery.attempts;
        match outcome {
            Attempt::Delivered(status) => {
                info!(job_id = %job_id, url = %url, attempts, status = status.as_u16(), "callback delivered");
            }
            Attempt::Redirected(status) => {
                warn!(job_id = %job_id, url = %url, attempts, status = status.as_u16(), "callback given up: the receiver answered a redirect, and callbacks follow none");
            }
            Attempt::Failed(error) if attempts < self.attempts => {
                debug!(job_id = %job_id, url = %url, attempts, error = %error, "callback POST failed; trying again later");
                waiting.push_back((Instant::now() + self.retry_interval, delivery));
            }
            Attempt::Failed(error) => {
                warn!(job_id = %job_id, url = %url, attempts, error = %error, "callback given up");
            }
        }
    }
}

/// One POST of `delivery`.
async fn attempt(
    client: reqwest::Client,
    timeout: Duration,
    mut delivery: Delivery,
) -> (Delivery, Attempt) {
    delivery.attempts += 1;
    let sent = client
        .post(delivery.url.0.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .timeout(timeout)
        .body(delivery.body.clone())
        .send()
        .await;
    let outcome = match sent {
        Ok(answer) if answer.status().is_success() => Attempt::Delivered(answer.status()),
        Ok(answer) if answer.status().is_redirection() => Attempt::Redirected(answer.status()),
        Ok(mut answer) => {
            let status = answer.status();
            let mut start = Vec::new();
            while start.len() < ANSWER_BYTES {
                match answer.chunk().await {
                    Ok(Some(chunk)) => start.extend_from_slice(&chunk),
                    Ok(None) | Err(_) => break,
                }
            }
            start.truncate(ANSWER_BYTES);
            let text = String::from_utf8_lossy(&start);
            let text = text.trim();
            Attempt::Failed(if text.is_empty() {
                format!("the receiver answered {status}")
            } else {
                format!("the receiver answered {status}: {text}")
            })
        }
        // Without the URL, whose query may hold the receiver's secret.
        Err(e) => Attempt::Failed(error_chain(&e.without_url())),
    };
    (delivery, outcome)
}

#[cfg(test)]
mod tests {
    use polars::prelude::*;

    use super::*;

    fn settings(allowed: &[&str]) -> CallbackSettings {
        CallbackSettings {
            allowed_urls: allowed
                .iter()
                .map(|text| AllowedUrl::parse(text).expect("an allowed URL"))
                .collect(),
            ..CallbackSettings::default()
        }
    }

    #[test]
    fn callback_urls_fall_under_an_allowed_one_by_scheme_host_port_and_path_segments() {
        let allowed = settings(&[
            "http://Hooks.Example.com:8080/floe",
            "https://ops.example.com/",
        ]);
        for admitted in [
            "http://hooks.example.com:8080/floe",
            "http://HOOKS.example.com:8080/floe/",
            "http://hooks.example.com:8080/floe/job/42?token=abc",
            "https://ops.example.com",
            "https://ops.example.com:443/anything",
            "http://hooks.example.com:8080/floe/a/../b",
        ] {
            assert!(allowed.check(admitted).is_ok(), "{admitted} refused");
        }
        for (refused, why) in [
            ("http://hooks.example.com:8081/floe", "another port"),
            ("http://hooks.example.com/floe", "the default port"),
            ("https://hooks.example.com:8080/floe", "another scheme"),
            ("http://other.example.com:8080/floe", "another host"),
            (
                "http://hooks.example.com.evil.com:8080/floe",
                "a longer host",
            ),
            ("http://hooks.example.com:8080/floe-admin", "not at a /"),
            ("http://hooks.example.com:8080/flo", "a shorter path"),
            ("http://hooks.example.com:8080/floe/../admin", "dots out"),
            (
                "http://hooks.example.com:8080/floe/%2e%2e/admin",
                "encoded dots",
            ),
            (
                "http://hooks.example.com:8080/floe/..%2Fadmin",
                "an encoded /",
            ),
            (
                "http://hooks.example.com:8080/floe/..%5cadmin",
                "an encoded \\",
            ),
            (
                "http://hooks.example.com:8080/floe/..;/admin",
                "a path parameter Java reads as ..",
            ),
            (
                "http://hooks.example.com:8080/floe/x%3Bjsessionid=1",
                "an encoded ;",
            ),
            ("http://user:pw@hooks.example.com:8080/floe", "credentials"),
            ("http://user@hooks.example.com:8080/floe", "a user name"),
            ("http://ops.example.com/", "http for https"),
            ("ftp://hooks.example.com:8080/floe", "ftp"),
            ("file:///etc/passwd", "file"),
            ("hooks.example.com:8080/floe", "no scheme"),
            ("not a url", "not a URL"),
        ] {
            let error = allowed
                .check(refused)
                .expect_err(&format!("{refused} ({why}) admitted"));
            assert!(error.to_string().contains("`callbackUrl`"), "{error}");
        }
    }

    #[test]
    fn without_allowed_urls_every_callback_is_refused_naming_the_setting() {
        let error = CallbackSettings::default()
            .check("http://127.0.0.1/x")
            .unwrap_err();
        assert!(matches!(error, CallbackUrlError::Off));
        assert!(
            error.to_string().contains("`callbacks.allowed_urls`"),
            "{error}"
        );
    }

    #[test]
    fn allowed_urls_are_http_prefixes_without_credentials_query_or_fragment() {
        for good in ["http://127.0.0.1:9000", "https://h.example.com/a/b/"] {
            assert!(AllowedUrl::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "ftp://h.example.com/",
            "file:///tmp",
            "http://u:p@h.example.com/",
            "http://h.example.com/?a=1",
            "http://h.example.com/#x",
            "h.example.com",
            "http://",
        ] {
            let error = AllowedUrl::parse(bad).expect_err(bad);
            assert!(error.to_string().contains(bad), "{error}");
        }
    }

    #[test]
    fn a_long_refused_url_is_repeated_shortened() {
        let long = format!("http://127.0.0.1/{}", "a".repeat(5_000));
        let error = settings(&["http://127.0.0.1/hooks"])
            .check(&long)
            .unwrap_err();
        assert!(error.to_string().len() < 500, "{error}");
    }

    fn parse(body: &[u8]) -> serde_json::Value {
        serde_json::from_slice(body).expect("the body is JSON")
    }

    #[test]
    fn bodies_are_spark_jobservers_and_a_large_result_is_a_placeholder() {
        let frame = df!("city" => ["Oslo", "Lima"], "sales" => [3i64, 4]).unwrap();
        let finished = parse(&body("j1", &JobEnd::Finished(frame.clone()), 1 << 10));
        assert_eq!(
            finished,
            json!({"jobId": "j1", "status": "FINISHED", "result": [
                {"city": "Oslo", "sales": 3}, {"city": "Lima", "sales": 4}
            ]})
        );
        let small = parse(&body("j1", &JobEnd::Finished(frame.clone()), 40));
        assert_eq!(small["result"], "<result of 2 rows: GET /jobs/j1>");
        let one = frame.head(Some(1));
        let tiny = parse(&body("j1", &JobEnd::Finished(one), 5));
        assert_eq!(tiny["result"], "<result of 1 row: GET /jobs/j1>");
        // Binary data has no JSON form (polars' writer panicked on it, on the thread finalising
        // the job): the placeholder.
        let binary = frame
            .clone()
            .lazy()
            .with_column(col("city").cast(DataType::Binary))
            .collect()
            .unwrap();
        let placeholder = parse(&body("j1", &JobEnd::Finished(binary), 1 << 10));
        assert_eq!(placeholder["result"], "<result of 2 rows: GET /jobs/j1>");
        let empty = frame.head(Some(0));
        assert_eq!(
            parse(&body("j1", &JobEnd::Finished(empty), 0))["result"],
            json!([])
        );

        let failure = JobFailure {
            message: "boom".to_owned(),
            error_class: "floe.X".to_owned(),
            stack: String::new(),
        };
        assert_eq!(
            parse(&body("j2", &JobEnd::Failed(failure), 0)),
            json!({"jobId": "j2", "status": "ERROR",
                   "result": {"message": "boom", "errorClass": "floe.X", "stack": ""}})
        );
    }

    #[test]
    fn rows_are_written_in_batches_up_to_the_limit() {
        let n = 10 * ROWS_PER_BATCH + 7;
        let frame = df!("v" => (0..n as i64).collect::<Vec<_>>()).unwrap();
        let rows = rows_within(&frame, 1 << 20).expect("fits");
        let parsed: Vec<serde_json::Value> = serde_json::from_slice(&rows).unwrap();
        assert_eq!(parsed.len(), n);
        assert_eq!(parsed[n - 1], json!({"v": n - 1}));
        assert!(rows_within(&frame, rows.len()).is_some());
        assert!(rows_within(&frame, rows.len() - 1).is_none());
        // Far more rows than could fit: refused without writing.
        assert!(rows_within(&frame, 100).is_none());
    }
}
