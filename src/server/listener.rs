//! The network edge of `floe serve`: Floe's own accept loop in place of `axum::serve`.
//!
//! Owns everything between the listening socket and the router: the cap on open connections,
//! the optional TLS handshake (rustls, with a certificate that can be swapped while serving),
//! HTTP/1.1 on hyper, the clocks that close slow and idle connections, the peer address handed
//! to handlers as [`ConnectInfo`], and the drain of open connections at shutdown. It does not
//! own routing, CORS or body limits (the router in [`super`]), nor the jobs a shutdown waits for
//! ([`crate::jobserver::JobServer::shutdown`]).
//!
//! One task accepts; every connection then runs in a task of its own, which holds one of the
//! `max_connections` permits until the connection closes. When every permit is taken the loop
//! stops accepting until one is returned, so new connections wait in the kernel's listen
//! backlog (and are served once a slot frees) instead of being accepted and dropped.
//!
//! Within that, one client address holds at most `max_connections_per_client` connections
//! ([`ClientConnections`]): a connection beyond it is closed as soon as it is accepted (not
//! held, or one client could fill the backlog for everyone), and the refusal is logged at most
//! once a minute per address. Loopback is an address like any other.
//!
//! Only HTTP/1.1 is spoken (TLS advertises `http/1.1` by ALPN): every client of the job server
//! speaks it, and HTTP/2's multiplexing would need limits of its own (streams, pings, resets)
//! that this server has no use for.
//!
//! Timeouts, per connection (see [`ConnectionClock`]):
//! - a new connection must deliver its first request head within `header_read_timeout` of the
//!   accept (with TLS the handshake is bounded by the same duration, before that);
//! - between requests, the next head must start within `idle_timeout`, and once its first byte
//!   arrives it must be complete within `header_read_timeout`;
//! - while a request is being answered there is no connection deadline (handlers have their
//!   own: `sync_timeout`, job timeouts), but a client that stops sending the body a handler is
//!   reading, or stops reading the response, is cut off after `idle_timeout` without progress;
//! - a request body must be complete within `body_read_timeout` of the end of its head,
//!   however steadily it trickles in (see [`ClockedRequestBody`]): the handler reading it then
//!   gets an error, the request is answered 408 by the router (see [`BodyDeadline`]) and the
//!   connection is closed after that answer; if the answer cannot be written within
//!   [`BODY_TIMEOUT_ANSWER_GRACE`], the connection is closed without one.
//!
//! hyper's own `header_read_timeout` is not used: it also runs while a keep-alive connection
//! waits for its next request, so it cannot let an idle connection live longer than a slow head.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{debug, error, info, warn};

/// The first pause after an accept error that is not the peer's doing (such as EMFILE, too
/// many open files); it doubles on each further error, up to [`ACCEPT_BACKOFF_MAX`]. Retrying
/// at once would spin a core while the condition lasts.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(20);

/// The longest pause between accept attempts while they keep failing.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How often, at most, the refusal of one client's connections beyond
/// `max_connections_per_client` is logged: a client that keeps reconnecting must not flood the
/// log.
const CLIENT_REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// How long after `body_read_timeout` a connection whose body timed out may still take to
/// write its 408 before it is closed without one (the handler may not be reading the body, or
/// the client may not be reading the answer).
const BODY_TIMEOUT_ANSWER_GRACE: Duration = Duration::from_secs(1);

/// The limits of the edge, taken from [`super::ServerConfig`].
#[derive(Debug, Clone)]
pub(crate) struct EdgeSettings {
    /// Connections open at once; see the module documentation for what happens beyond.
    pub(crate) max_connections: usize,
    /// Connections open at once from one IP address; further ones are closed when accepted.
    pub(crate) max_connections_per_client: usize,
    /// How long a request head (and a TLS handshake) may take.
    pub(crate) header_read_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub(crate) idle_timeout: Duration,
    /// How long a request body may take to arrive in full, from the end of its head: progress
    /// alone (a byte now and then) does not keep a request alive past it.
    pub(crate) body_read_timeout: Duration,
    /// How long a shutdown lets open connections finish their requests before closing them.
    pub(crate) shutdown_grace: Duration,
}

/// A TLS certificate chain and private key read from PEM files, and the acceptor built from
/// them. Clones share the acceptor, so [`TlsCertificates::reload`] on any clone changes the
/// certificate new connections get, without touching the listener or open connections.
/// `floe serve` reloads on SIGHUP by calling that same function.
#[derive(Clone)]
pub struct TlsCertificates {
    inner: Arc<TlsInner>,
}

struct TlsInner {
    cert: PathBuf,
    key: PathBuf,
    /// Read once per handshake, written only by a successful reload.
    acceptor: RwLock<TlsAcceptor>,
}

impl std::fmt::Debug for TlsCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCertificates")
            .field("cert", &self.inner.cert)
            .field("key", &self.inner.key)
            .finish_non_exhaustive()
    }
}

impl TlsCertificates {
    /// Reads the PEM certificate chain at `cert` and the PEM private key at `key`. Blocking
    /// (two small files).
    pub fn load(cert: &Path, key: &Path) -> Result<TlsCertificates, String> {
        let config = rustls_config(cert, key)?;
        Ok(TlsCertificates {
            inner: Arc::new(TlsInner {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                acceptor: RwLock::new(TlsAcceptor::from(Arc::new(config))),
            }),
        })
    }

    /// Reads both files again and, if they make a usable certificate, serves it to every new
    /// connection. On error the previous certificate stays in use. Blocking (two small files).
    pub fn reload(&self) -> Result<(), String> {
        let config = rustls_config(&self.inner.cert, &self.inner.key)?;
        let mut acceptor = self
            .inner
            .acceptor
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *acceptor = TlsAcceptor::from(Arc::new(config));
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        self.inner
            .acceptor
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A rustls server configuration (ring provider, TLS 1.2 and 1.3, ALPN `http/1.1`) from PEM
/// files; errors name the file at fault.
fn rustls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificate chain {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "cannot read certificate chain {}: no PEM certificate in it",
            cert.display()
        ));
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read private key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| {
            format!(
                "the certificate in {} and the key in {} are not usable together: {e}",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Reloads `tls` on every SIGHUP until the task is aborted; a failed reload keeps the previous
/// certificate and is logged.
#[cfg(unix)]
pub(crate) fn reload_on_sighup(
    tls: TlsCertificates,
) -> Result<tokio::task::JoinHandle<()>, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups =
        signal(SignalKind::hangup()).map_err(|e| format!("cannot listen for SIGHUP: {e}"))?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let certificates = tls.clone();
            match tokio::task::spawn_blocking(move || certificates.reload()).await {
                Ok(Ok(())) => info!(cert = %tls.inner.cert.display(), "tls certificate reloaded"),
                Ok(Err(reason)) => error!(
                    error = %reason,
                    "tls reload failed; the previous certificate stays in use"
                ),
                Err(e) => {
                    error!(error = %e, "tls reload failed; the previous certificate stays in use")
                }
            }
        }
    }))
}

/// Open connections by client address, for `max_connections_per_client`.
///
/// The map holds only addresses with an open connection, so it never outgrows
/// `max_connections` entries; the refusal log times hold only addresses refused within the last
/// [`CLIENT_REFUSAL_LOG_INTERVAL`], each of which holds `limit` connections, so they are
/// bounded too.
#[derive(Debug)]
struct ClientConnections {
    limit: usize,
    /// Short critical sections only (a map lookup), never held across an `.await`.
    state: Mutex<ClientState>,
}

#[derive(Debug, Default)]
struct ClientState {
    open: HashMap<IpAddr, usize>,
    /// When a refusal was last logged for each address.
    refusal_logged: HashMap<IpAddr, Instant>,
}

/// A connection's place in its client's count, given back when dropped.
#[derive(Debug)]
struct ClientSlot {
    clients: Arc<ClientConnections>,
    ip: IpAddr,
}

impl ClientConnections {
    fn new(limit: usize) -> ClientConnections {
        ClientConnections {
            limit: limit.max(1),
            state: Mutex::new(ClientState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ClientState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for one more connection from `ip`, or `None` when it already holds `limit`
    /// (logged at most once per [`CLIENT_REFUSAL_LOG_INTERVAL`] per address).
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        // An IPv4 client of a dual-stack listener arrives as ::ffff:a.b.c.d; count it as a.b.c.d.
        let ip = ip.to_canonical();
        let now = Instant::now();
        let mut state = self.state();
        let open = state.open.entry(ip).or_insert(0);
        if *open < self.limit {
            *open += 1;
            return Some(ClientSlot {
                clients: self.clone(),
                ip,
            });
        }
        let log = match state.refusal_logged.get(&ip) {
            Some(at) => now.duration_since(*at) >= CLIENT_REFUSAL_LOG_INTERVAL,
            None => true,
        };
        if log {
            state
                .refusal_logged
                .retain(|_, at| now.duration_since(*at) < CLIENT_REFUSAL_LOG_INTERVAL);
            state.refusal_logged.insert(ip, now);
        }
        drop(state);
        if log {
            warn!(
                client = %ip,
                limit = self.limit,
                "closing new connections from a client that holds max_connections_per_client \
                 connections (logged at most once a minute per client)"
            );
        }
        None
    }

    /// Open connections from `ip` (for tests).
    #[cfg(test)]
    fn open(&self, ip: IpAddr) -> usize {
        self.state()
            .open
            .get(&ip.to_canonical())
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut state = self.clients.state();
        if let Some(open) = state.open.get_mut(&self.ip) {
            *open -= 1;
            if *open == 0 {
                state.open.remove(&self.ip);
            }
        }
    }
}

/// What every connection task shares.
struct Edge {
    settings: EdgeSettings,
    tls: Option<TlsCertificates>,
    /// The router as a hyper service; cloning it clones the router's `Arc`s.
    service: TowerToHyperService<Router>,
    http: http1::Builder,
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting (the listening
/// socket is closed), lets open connections finish the requests they are answering for up to
/// `shutdown_grace`, and closes whatever is left.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    settings: EdgeSettings,
    tls: Option<TlsCertificates>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let permits = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let clients = Arc::new(ClientConnections::new(settings.max_connections_per_client));
    let mut http = http1::Builder::new();
    // Floe keeps the header and idle clocks itself (see the module documentation), so hyper
    // gets no timer; its default header timeout is turned off, or it would warn on every
    // connection that it has no timer to run it on.
    http.keep_alive(true).header_read_timeout(None);
    let grace = settings.shutdown_grace;
    let edge = Arc::new(Edge {
        settings,
        tls,
        service: TowerToHyperService::new(app),
        http,
    });
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut backoff: Option<Duration> = None;
    tokio::pin!(shutdown);
    loop {
        // Finished connection tasks are collected here, so the set only holds live ones.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) if is_peer_error(&error) => {
                debug!(%error, "a connection closed before it was accepted");
                continue;
            }
            Err(error) => {
                let pause = match backoff {
                    None => {
                        error!(%error, "cannot accept connections; retrying with backoff");
                        ACCEPT_BACKOFF_MIN
                    }
                    Some(previous) => {
                        debug!(%error, "accepting still fails");
                        (previous * 2).min(ACCEPT_BACKOFF_MAX)
                    }
                };
                backoff = Some(pause);
                drop(permit);
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        if backoff.take().is_some() {
            info!("accepting connections again");
        }
        let Some(slot) = clients.admit(peer.ip()) else {
            // Closed at once, and its permit given back: held, it would take a slot (or a
            // place in the backlog) another client could use.
            drop(stream);
            drop(permit);
            continue;
        };
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%error, %peer, "cannot set TCP_NODELAY");
        }
        // The watcher is taken here, not in the task: a shutdown signalled between the two
        // would otherwise miss this connection.
        let watcher = graceful.watcher();
        connections.spawn(serve_connection(
            edge.clone(),
            stream,
            peer,
            watcher,
            (permit, slot),
        ));
    }
    drop(listener);
    let open = graceful.count();
    info!(
        connections = open,
        "stopped accepting; draining open connections"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            grace_seconds = grace.as_secs_f64(),
            "connections still open after the shutdown grace are closed"
        );
    }
    connections.shutdown().await;
}

/// Accept errors caused by one peer (it reset or gave up before the accept): the next accept
/// can follow at once.
fn is_peer_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One connection, from the TLS handshake (if any) to its close. Holds its global permit and
/// its client's slot throughout.
async fn serve_connection(
    edge: Arc<Edge>,
    stream: TcpStream,
    peer: SocketAddr,
    watcher: Watcher,
    _slots: (OwnedSemaphorePermit, ClientSlot),
) {
    let Some(tls) = &edge.tls else {
        serve_http(&edge, stream, peer, watcher).await;
        return;
    };
    let handshake = tls.acceptor().accept(stream);
    match tokio::time::timeout(edge.settings.header_read_timeout, handshake).await {
        Ok(Ok(stream)) => serve_http(&edge, stream, peer, watcher).await,
        Ok(Err(error)) => debug!(%error, %peer, "tls handshake failed"),
        Err(_) => debug!(%peer, "tls handshake timed out"),
    }
}

/// HTTP/1.1 over `io` until the client closes, a clock of [`ConnectionClock`] runs out, or a
/// shutdown closes the connection once its request is answered.
async fn serve_http<S>(edge: &Edge, io: S, peer: SocketAddr, watcher: Watcher)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let clock = Arc::new(ConnectionClock::new(edge.settings.clone()));
    let io = TokioIo::new(ClockedIo {
        inner: io,
        clock: clock.clone(),
    });
    let service = EdgeService {
        inner: edge.service.clone(),
        peer,
        clock: clock.clone(),
        body_read_timeout: edge.settings.body_read_timeout,
    };
    let connection = watcher.watch(edge.http.serve_connection(io, service));
    tokio::pin!(connection);
    tokio::select! {
        result = &mut connection => {
            if let Err(error) = result {
                debug!(%error, %peer, "connection ended with an error");
            }
        }
        reason = clock.expired() => {
            debug!(%peer, reason, "closing connection");
        }
    }
}

/// Where a connection is in its request cycle, which says how long it may stay silent.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Accepted, no request yet: the first head must be complete within `header_read_timeout`
    /// of `since`.
    New { since: Instant },
    /// Between requests: the next head must start within `idle_timeout` of `since`.
    Idle { since: Instant },
    /// The first bytes of a head arrived at `since` (after an idle spell): the rest must
    /// follow within `header_read_timeout`.
    ReadingHead { since: Instant },
    /// `requests` requests are being answered: no deadline but the stalls' and the request
    /// body's.
    Busy { requests: usize },
}

/// A connection's phase and stalls, under one lock.
#[derive(Debug, Clone, Copy)]
struct ClockState {
    phase: Phase,
    /// Since when a handler has been waiting for request body bytes the client does not send.
    body_stalled_since: Option<Instant>,
    /// Since when the connection has been waiting to write to a client that does not read.
    write_stalled_since: Option<Instant>,
    /// When the body of the request being read must be complete (`body_read_timeout` after
    /// its head); `None` once it is, or when the request has none.
    body_deadline: Option<Instant>,
    /// When the watching task next looks, if it is waiting: a change that brings a deadline
    /// before it wakes the task, any other change waits for that look.
    watcher_looks_at: Option<Instant>,
}

/// A connection's phase, moved by its reads and writes, its service calls, and its request
/// and response bodies, and watched by its task (see [`ConnectionClock::expired`]).
///
/// A request being answered has no deadline of its own (handlers have theirs), but a client
/// that stops sending the body a handler is reading, or stops reading the response, is cut off
/// after `idle_timeout` of no progress, as an idle connection would be.
///
/// The watching task sleeps until the earliest deadline (an idle connection: at most
/// `header_read_timeout`) and is woken only by a change that needs a look sooner than that
/// (mostly the first request of a connection): requests that start and end on a keep-alive
/// connection move its deadlines later, so they cost the watcher nothing.
#[derive(Debug)]
struct ConnectionClock {
    settings: EdgeSettings,
    /// Short critical sections only, never held across an `.await`.
    state: Mutex<ClockState>,
    /// Set in `Idle` only, so the reads of a busy connection skip the lock.
    idle: AtomicBool,
    /// Wakes the watching task when a deadline comes before its next look. Stalls do not
    /// notify (they start and end at every full buffer): a busy connection's watcher looks at
    /// them every `idle_timeout` instead.
    changed: Notify,
}

impl ConnectionClock {
    fn new(settings: EdgeSettings) -> ConnectionClock {
        ConnectionClock {
            settings,
            state: Mutex::new(ClockState {
                phase: Phase::New {
                    since: Instant::now(),
                },
                body_stalled_since: None,
                write_stalled_since: None,
                body_deadline: None,
                watcher_looks_at: None,
            }),
            idle: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    /// Wakes the watcher if `deadline` comes before its next look. (A watcher between two
    /// looks finds the permit `notify_one` leaves.)
    fn wake_watcher_before(&self, state: std::sync::MutexGuard<'_, ClockState>, deadline: Instant) {
        let sooner = state
            .watcher_looks_at
            .is_none_or(|looks_at| deadline < looks_at);
        drop(state);
        if sooner {
            self.changed.notify_one();
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes came in: if the connection was idle, they start a request head.
    fn bytes_read(&self) {
        if !self.idle.load(Ordering::Acquire) {
            return;
        }
        let mut state = self.state();
        if let Phase::Idle { .. } = state.phase {
            let since = Instant::now();
            state.phase = Phase::ReadingHead { since };
            self.idle.store(false, Ordering::Release);
            self.wake_watcher_before(state, since + self.settings.header_read_timeout);
        }
    }

    /// A request head is complete and handed to the router; the guard ends the request when
    /// the response body is dropped (written out, or abandoned). `body_deadline`: when its
    /// body must be complete, if it has one.
    fn request_started(self: &Arc<Self>, body_deadline: Option<Instant>) -> RequestGuard {
        let mut state = self.state();
        state.body_deadline = body_deadline;
        state.phase = match state.phase {
            Phase::Busy { requests } => Phase::Busy {
                requests: requests + 1,
            },
            Phase::New { .. } | Phase::Idle { .. } | Phase::ReadingHead { .. } => {
                Phase::Busy { requests: 1 }
            }
        };
        self.idle.store(false, Ordering::Release);
        // The head's deadline no longer applies, and the watcher must look at the stalls
        // within `idle_timeout`, or at the body's deadline if that is sooner. It usually
        // already does (it looks at least every `header_read_timeout` and `idle_timeout`
        // while idle); not on a new connection whose head deadline is further away.
        let now = Instant::now();
        let stall_look = now + self.settings.idle_timeout;
        let look = body_deadline.map_or(stall_look, |at| {
            stall_look.min(at + BODY_TIMEOUT_ANSWER_GRACE)
        });
        self.wake_watcher_before(state, look);
        RequestGuard {
            clock: self.clone(),
        }
    }

    fn request_finished(&self) {
        let mut state = self.state();
        match state.phase {
            Phase::Busy { requests } if requests > 1 => {
                state.phase = Phase::Busy {
                    requests: requests - 1,
                };
            }
            Phase::Busy { .. } => {
                let since = Instant::now();
                state.phase = Phase::Idle { since };
                self.idle.store(true, Ordering::Release);
                // Usually later than the watcher's next look (made at the end of the previous
                // request, or while busy), so it sleeps on; not after a first request answered
                // sooner than `header_read_timeout`, with a shorter `idle_timeout`.
                let look = self
                    .settings
                    .idle_timeout
                    .min(self.settings.header_read_timeout);
                self.wake_watcher_before(state, since + look);
            }
            Phase::New { .. } | Phase::Idle { .. } | Phase::ReadingHead { .. } => {
                debug_assert!(false, "a request finished on a connection without one");
            }
        }
    }

    /// A read of the request body found nothing (`stalled`) or made progress (or stopped).
    fn body_stalled(&self, stalled: bool) {
        let mut state = self.state();
        state.body_stalled_since = match (stalled, state.body_stalled_since) {
            (true, None) => Some(Instant::now()),
            (true, since) => since,
            (false, _) => None,
        };
    }

    /// The request body is complete, missed its deadline, or is no longer read.
    fn body_finished(&self) {
        self.state().body_deadline = None;
    }

    /// A write to the client could not proceed (`stalled`) or made progress.
    fn write_stalled(&self, stalled: bool) {
        let mut state = self.state();
        state.write_stalled_since = match (stalled, state.write_stalled_since) {
            (true, None) => Some(Instant::now()),
            (true, since) => since,
            (false, _) => None,
        };
    }

    /// When to look again, and why the connection is closed if nothing has changed by then
    /// (`None`: it is only a look, to check a busy connection's stalls).
    fn deadline(&self) -> (Instant, Option<&'static str>) {
        let settings = &self.settings;
        let state = *self.state();
        let phase = match state.phase {
            Phase::New { since } => Some((
                since + settings.header_read_timeout,
                "no complete request head within header_read_timeout",
            )),
            Phase::ReadingHead { since } => Some((
                since + settings.header_read_timeout,
                "request head not complete within header_read_timeout",
            )),
            Phase::Idle { since } => Some((since + settings.idle_timeout, "idle for idle_timeout")),
            Phase::Busy { .. } => None,
        };
        let body = state.body_stalled_since.map(|since| {
            (
                since + settings.idle_timeout,
                "request body stalled for idle_timeout",
            )
        });
        let write = state.write_stalled_since.map(|since| {
            (
                since + settings.idle_timeout,
                "client not reading for idle_timeout",
            )
        });
        // The request body's own timer answers 408 at the deadline; this closes the connection
        // if that answer is not out a little later.
        let body_deadline = state.body_deadline.map(|at| {
            (
                at + BODY_TIMEOUT_ANSWER_GRACE,
                "request body not complete within body_read_timeout",
            )
        });
        let now = Instant::now();
        let (at, reason) = match [phase, body, write, body_deadline]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
        {
            Some((at, reason)) => (at, Some(reason)),
            None => (now + settings.idle_timeout, None),
        };
        // An idle connection is looked at every `header_read_timeout`, so a head that starts
        // in the spell is held to its deadline without its first bytes waking the watcher.
        let look = now + settings.header_read_timeout;
        if matches!(state.phase, Phase::Idle { .. }) && look < at {
            return (look, None);
        }
        (at, reason)
    }

    /// Resolves when a deadline passes, with the reason.
    async fn expired(&self) -> &'static str {
        loop {
            let (at, reason) = self.deadline();
            if let Some(reason) = reason {
                if Instant::now() >= at {
                    return reason;
                }
            }
            // A change after `deadline` read the state either sees this look and wakes the
            // watcher if it needs to, or saw none and left a permit.
            self.state().watcher_looks_at = Some(at);
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = self.changed.notified() => {}
            }
            self.state().watcher_looks_at = None;
        }
    }
}

/// Ends one request on its connection's clock when dropped.
#[derive(Debug)]
struct RequestGuard {
    clock: Arc<ConnectionClock>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.clock.request_finished();
    }
}

/// The connection's IO, telling its clock when bytes arrive.
struct ClockedIo<S> {
    inner: S,
    clock: Arc<ConnectionClock>,
}

impl<S: AsyncRead + Unpin> AsyncRead for ClockedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if buf.filled().len() > before {
                this.clock.bytes_read();
            }
        }
        polled
    }
}

impl<S> ClockedIo<S> {
    /// Tells the clock whether a write (or flush) could proceed.
    fn wrote<T>(&self, polled: Poll<T>) -> Poll<T> {
        self.clock.write_stalled(polled.is_pending());
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClockedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.wrote(polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The router as one connection sees it: the peer address goes into each request's
/// extensions as `ConnectInfo<SocketAddr>`, a request with a body gets its [`BodyDeadline`],
/// and each request holds the connection's clock busy until its response body is dropped.
#[derive(Clone)]
struct EdgeService {
    inner: TowerToHyperService<Router>,
    peer: SocketAddr,
    clock: Arc<ConnectionClock>,
    body_read_timeout: Duration,
}

type EdgeFuture = Pin<Box<dyn Future<Output = Result<Response<ClockedBody>, Infallible>> + Send>>;

impl Service<Request<Incoming>> for EdgeService {
    type Response = Response<ClockedBody>;
    type Error = Infallible;
    type Future = EdgeFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        // The head is complete: the body's clock starts now.
        let deadline = (!http_body::Body::is_end_stream(request.body())).then(|| BodyDeadline {
            at: Instant::now() + self.body_read_timeout,
            timeout: self.body_read_timeout,
            missed: Arc::default(),
        });
        let guard = self
            .clock
            .request_started(deadline.as_ref().map(|deadline| deadline.at));
        let clock = self.clock.clone();
        let timer = deadline
            .clone()
            .map(|deadline| (Box::pin(tokio::time::sleep_until(deadline.at)), deadline));
        let mut request = request.map(|body| ClockedRequestBody {
            inner: body,
            clock,
            deadline: timer,
            missed: None,
        });
        request.extensions_mut().insert(ConnectInfo(self.peer));
        if let Some(deadline) = deadline {
            request.extensions_mut().insert(deadline);
        }
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| ClockedBody {
                inner: body,
                _guard: guard,
            }))
        })
    }
}

/// The `body_read_timeout` of a request with a body, in its extensions. The router answers 408
/// when [`BodyDeadline::missed`] says the body did not arrive in time (the handler reading it
/// got an error), whatever the handler answered to that error.
#[derive(Debug, Clone)]
pub(crate) struct BodyDeadline {
    at: Instant,
    timeout: Duration,
    missed: Arc<AtomicBool>,
}

impl BodyDeadline {
    /// The body was not complete by its deadline.
    pub(crate) fn missed(&self) -> bool {
        self.missed.load(Ordering::Acquire)
    }

    /// The `body_read_timeout` it was held to.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// The error a request body yields at its deadline.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the request body did not arrive in full within body_read_timeout ({} s)", .0.as_secs_f64())]
struct BodyTimedOut(Duration);

/// A request body that tells the connection's clock when the handler reading it waits for the
/// client, and that fails once `body_read_timeout` has passed without it being complete, so a
/// body trickling in a byte at a time cannot hold a connection (and its handler) for ever.
struct ClockedRequestBody {
    inner: Incoming,
    clock: Arc<ConnectionClock>,
    /// Until the body is complete: the timer of its deadline, and the flag to set when it
    /// passes.
    deadline: Option<(Pin<Box<Sleep>>, BodyDeadline)>,
    /// Set once the deadline has passed: every later read fails the same way.
    missed: Option<BodyTimedOut>,
}

impl ClockedRequestBody {
    /// The body is complete (or broken, or no longer read): its deadline no longer applies.
    fn finished(&mut self) {
        if self.deadline.take().is_some() {
            self.clock.body_finished();
        }
    }
}

impl http_body::Body for ClockedRequestBody {
    type Data = <Incoming as http_body::Body>::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(missed) = &this.missed {
            return Poll::Ready(Some(Err(missed.clone().into())));
        }
        if let Some((timer, deadline)) = &mut this.deadline {
            if timer.as_mut().poll(cx).is_ready() {
                deadline.missed.store(true, Ordering::Release);
                let missed = BodyTimedOut(deadline.timeout);
                this.missed = Some(missed.clone());
                this.clock.body_stalled(false);
                this.finished();
                return Poll::Ready(Some(Err(missed.into())));
            }
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        this.clock.body_stalled(polled.is_pending());
        let complete = match &polled {
            Poll::Pending => false,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Ready(None | Some(Err(_))) => true,
        };
        if complete {
            this.finished();
        }
        polled.map(|frame| frame.map(|result| result.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.missed.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ClockedRequestBody {
    fn drop(&mut self) {
        // A handler that stops reading leaves neither a stall nor a deadline behind (hyper
        // closes the connection after the answer rather than read the rest).
        self.clock.body_stalled(false);
        self.finished();
    }
}

/// A response body that ends its request on the connection's clock when dropped.
struct ClockedBody {
    inner: Body,
    _guard: RequestGuard,
}

impl http_body::Body for ClockedBody {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(header_read_timeout: Duration, idle_timeout: Duration) -> EdgeSettings {
        EdgeSettings {
            max_connections: 1,
            max_connections_per_client: 1,
            header_read_timeout,
            idle_timeout,
            body_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(1),
        }
    }

    /// The deadline, which must lie between `before + timeout` and now + `timeout`.
    fn assert_deadline(clock: &ConnectionClock, before: Instant, timeout: Duration, reason: &str) {
        let (at, why) = clock.deadline();
        assert!(at >= before + timeout && at <= Instant::now() + timeout);
        assert_eq!(why, Some(reason));
    }

    #[test]
    fn the_clock_tells_a_slow_head_from_an_idle_connection() {
        let settings = settings(Duration::from_secs(10), Duration::from_secs(60));
        let before = Instant::now();
        let clock = Arc::new(ConnectionClock::new(settings.clone()));
        let first_head = "no complete request head within header_read_timeout";
        assert_deadline(&clock, before, Duration::from_secs(10), first_head);
        // Bytes of the first head do not move the deadline set at the accept.
        clock.bytes_read();
        assert_deadline(&clock, before, Duration::from_secs(10), first_head);

        // A request being answered has no deadline, and its body bytes change nothing.
        let guard = clock.request_started(None);
        assert_eq!(clock.deadline().1, None);
        clock.bytes_read();
        assert_eq!(clock.deadline().1, None);

        // Two at once (pipelining): busy until both are done.
        let second = clock.request_started(None);
        drop(guard);
        assert_eq!(clock.deadline().1, None);

        // Answered: idle, for idle_timeout, looked at every header_read_timeout meanwhile.
        let before = Instant::now();
        drop(second);
        let (at, why) = clock.deadline();
        assert!(
            at >= before + Duration::from_secs(10)
                && at <= Instant::now() + Duration::from_secs(10)
        );
        assert_eq!(why, None);
        let short_idle = Arc::new(ConnectionClock::new(self::settings(
            Duration::from_secs(10),
            Duration::from_secs(5),
        )));
        drop(short_idle.request_started(None));
        assert_eq!(short_idle.deadline().1, Some("idle for idle_timeout"));

        // The first byte of the next head starts the header clock.
        let before = Instant::now();
        clock.bytes_read();
        let slow = "request head not complete within header_read_timeout";
        assert_deadline(&clock, before, Duration::from_secs(10), slow);
    }

    #[test]
    fn a_stalled_body_or_write_gets_idle_timeout() {
        let settings = settings(Duration::from_secs(10), Duration::from_secs(60));
        let clock = Arc::new(ConnectionClock::new(settings.clone()));
        let _request = clock.request_started(None);
        // Progress clears a stall; a stall keeps its start however often it is seen.
        clock.body_stalled(true);
        clock.body_stalled(false);
        assert_eq!(clock.deadline().1, None);
        let before = Instant::now();
        clock.body_stalled(true);
        let body = "request body stalled for idle_timeout";
        assert_deadline(&clock, before, Duration::from_secs(60), body);
        std::thread::sleep(Duration::from_millis(5));
        clock.body_stalled(true);
        assert_deadline(&clock, before, Duration::from_secs(60), body);
        // The earlier of two stalls counts.
        clock.write_stalled(true);
        assert_deadline(&clock, before, Duration::from_secs(60), body);
        clock.body_stalled(false);
        let write = "client not reading for idle_timeout";
        assert_eq!(clock.deadline().1, Some(write));
        clock.write_stalled(false);
        assert_eq!(clock.deadline().1, None);
    }

    #[test]
    fn a_body_has_a_deadline_until_it_is_complete() {
        let short_idle = settings(Duration::from_secs(10), Duration::from_secs(5));
        let settings = settings(Duration::from_secs(10), Duration::from_secs(60));
        let clock = Arc::new(ConnectionClock::new(settings.clone()));
        let before = Instant::now();
        let _request = clock.request_started(Some(before + Duration::from_secs(30)));
        // Before the idle stall's look, and whatever bytes arrive.
        clock.body_stalled(true);
        clock.body_stalled(false);
        let (at, why) = clock.deadline();
        assert_eq!(
            at,
            before + Duration::from_secs(30) + BODY_TIMEOUT_ANSWER_GRACE
        );
        assert_eq!(
            why,
            Some("request body not complete within body_read_timeout")
        );
        // A stall that would end sooner comes first.
        let short_idle_clock = Arc::new(ConnectionClock::new(short_idle));
        let _short_request =
            short_idle_clock.request_started(Some(before + Duration::from_secs(30)));
        short_idle_clock.body_stalled(true);
        assert_eq!(
            short_idle_clock.deadline().1,
            Some("request body stalled for idle_timeout")
        );
        clock.body_stalled(true);
        clock.body_stalled(false);
        clock.body_finished();
        assert_eq!(clock.deadline().1, None);
    }

    #[test]
    fn one_client_holds_at_most_its_share_of_connections() {
        let clients = Arc::new(ClientConnections::new(2));
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.7".parse().unwrap();
        let first = clients.admit(loopback).expect("first");
        let second = clients
            .admit(mapped)
            .expect("second, the same client over IPv6");
        assert!(clients.admit(loopback).is_none(), "a third is refused");
        assert!(clients.admit(mapped).is_none(), "and again (logged once)");
        let elsewhere = clients
            .admit(other)
            .expect("another client is not affected");
        assert_eq!(clients.open(loopback), 2);
        drop(first);
        assert_eq!(clients.open(loopback), 1);
        let third = clients.admit(loopback).expect("a slot is free again");
        drop((second, third, elsewhere));
        assert_eq!(clients.open(loopback), 0);
        assert!(
            clients.state().open.is_empty(),
            "no entry outlives its connections"
        );
        assert_eq!(clients.state().refusal_logged.len(), 1);
    }

    #[tokio::test]
    async fn the_watcher_sleeps_through_a_request_and_wakes_when_it_ends() {
        let settings = settings(Duration::from_secs(10), Duration::from_millis(50));
        let clock = Arc::new(ConnectionClock::new(settings.clone()));
        let guard = clock.request_started(None);
        let watcher = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.expired().await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!watcher.is_finished(), "no deadline while a request runs");
        drop(guard);
        let reason = tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .expect("the idle deadline passes")
            .unwrap();
        assert_eq!(reason, "idle for idle_timeout");
    }

    #[tokio::test]
    async fn a_stall_in_the_first_request_is_seen_before_the_head_deadline() {
        // The watcher of a new connection sleeps until the head's deadline, an hour away.
        let settings = settings(Duration::from_secs(3600), Duration::from_millis(50));
        let clock = Arc::new(ConnectionClock::new(settings));
        let watcher = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.expired().await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _request = clock.request_started(None);
        clock.body_stalled(true);
        let reason = tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .expect("the stall is looked at within idle_timeout")
            .unwrap();
        assert_eq!(reason, "request body stalled for idle_timeout");
    }

    #[tokio::test]
    async fn a_head_started_while_idle_is_held_to_header_read_timeout() {
        // The idle deadline is an hour away; the head's is 50 ms after its first byte.
        let settings = settings(Duration::from_millis(50), Duration::from_secs(3600));
        let clock = Arc::new(ConnectionClock::new(settings));
        drop(clock.request_started(None));
        let watcher = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.expired().await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!watcher.is_finished(), "idle, with an hour to go");
        clock.bytes_read();
        let reason = tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .expect("the watcher sees the head's deadline")
            .unwrap();
        assert_eq!(
            reason,
            "request head not complete within header_read_timeout"
        );
    }

    #[tokio::test]
    async fn handlers_see_the_peer_address_and_shutdown_closes_the_port() {
        use axum::routing::get;
        let app = Router::new().route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            app,
            settings(Duration::from_secs(5), Duration::from_secs(5)),
            None,
            async {
                let _ = stopped.await;
            },
        ));
        let mut stream = TcpStream::connect(address).await.unwrap();
        let client = stream.local_addr().unwrap();
        tokio::io::AsyncWriteExt::write_all(
            &mut stream,
            b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut response = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut response)
            .await
            .unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with(&client.to_string()), "{response}");

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stops")
            .unwrap();
        assert!(TcpStream::connect(address).await.is_err());
    }

    #[test]
    fn tls_files_that_do_not_parse_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let err = TlsCertificates::load(&cert, &key).unwrap_err();
        assert!(err.starts_with("cannot read certificate chain"), "{err}");
        assert!(err.contains("cert.pem"), "{err}");
        std::fs::write(&cert, "not pem\n").unwrap();
        let err = TlsCertificates::load(&cert, &key).unwrap_err();
        assert!(err.contains("no PEM certificate"), "{err}");
    }
}
