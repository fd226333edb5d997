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

mod clock;
#[cfg(test)]
mod tests;
mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

pub(crate) use clock::BodyDeadline;
use clock::*;
pub(crate) use tls::reload_on_sighup;
pub use tls::{TlsCertificates, TlsError};

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
