//! The clocks of a connection: which phase it is in and how long it may stay silent, the
//! I/O and bodies that report progress to it, the deadline of a request body, and the service
//! that wires a request to them.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use super::*;

/// Where a connection is in its request cycle, which says how long it may stay silent.
#[derive(Debug, Clone, Copy)]
pub(super) enum Phase {
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
pub(super) struct ClockState {
    pub(super) phase: Phase,
    /// Since when a handler has been waiting for request body bytes the client does not send.
    pub(super) body_stalled_since: Option<Instant>,
    /// Since when the connection has been waiting to write to a client that does not read.
    pub(super) write_stalled_since: Option<Instant>,
    /// When the body of the request being read must be complete (`body_read_timeout` after
    /// its head); `None` once it is, or when the request has none.
    pub(super) body_deadline: Option<Instant>,
    /// When the watching task next looks, if it is waiting: a change that brings a deadline
    /// before it wakes the task, any other change waits for that look.
    pub(super) watcher_looks_at: Option<Instant>,
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
pub(super) struct ConnectionClock {
    pub(super) settings: EdgeSettings,
    /// Short critical sections only, never held across an `.await`.
    pub(super) state: Mutex<ClockState>,
    /// Set in `Idle` only, so the reads of a busy connection skip the lock.
    pub(super) idle: AtomicBool,
    /// Wakes the watching task when a deadline comes before its next look. Stalls do not
    /// notify (they start and end at every full buffer): a busy connection's watcher looks at
    /// them every `idle_timeout` instead.
    pub(super) changed: Notify,
}

impl ConnectionClock {
    pub(super) fn new(settings: EdgeSettings) -> ConnectionClock {
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
    pub(super) fn wake_watcher_before(
        &self,
        state: std::sync::MutexGuard<'_, ClockState>,
        deadline: Instant,
    ) {
        let sooner = state
            .watcher_looks_at
            .is_none_or(|looks_at| deadline < looks_at);
        drop(state);
        if sooner {
            self.changed.notify_one();
        }
    }

    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes came in: if the connection was idle, they start a request head.
    pub(super) fn bytes_read(&self) {
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
    pub(super) fn request_started(
        self: &Arc<Self>,
        body_deadline: Option<Instant>,
    ) -> RequestGuard {
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

    pub(super) fn request_finished(&self) {
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
    pub(super) fn body_stalled(&self, stalled: bool) {
        let mut state = self.state();
        state.body_stalled_since = match (stalled, state.body_stalled_since) {
            (true, None) => Some(Instant::now()),
            (true, since) => since,
            (false, _) => None,
        };
    }

    /// The request body is complete, missed its deadline, or is no longer read.
    pub(super) fn body_finished(&self) {
        self.state().body_deadline = None;
    }

    /// A write to the client could not proceed (`stalled`) or made progress.
    pub(super) fn write_stalled(&self, stalled: bool) {
        let mut state = self.state();
        state.write_stalled_since = match (stalled, state.write_stalled_since) {
            (true, None) => Some(Instant::now()),
            (true, since) => since,
            (false, _) => None,
        };
    }

    /// When to look again, and why the connection is closed if nothing has changed by then
    /// (`None`: it is only a look, to check a busy connection's stalls).
    pub(super) fn deadline(&self) -> (Instant, Option<&'static str>) {
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
    pub(super) async fn expired(&self) -> &'static str {
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
pub(super) struct RequestGuard {
    pub(super) clock: Arc<ConnectionClock>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.clock.request_finished();
    }
}

/// The connection's IO, telling its clock when bytes arrive.
pub(super) struct ClockedIo<S> {
    pub(super) inner: S,
    pub(super) clock: Arc<ConnectionClock>,
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
    pub(super) fn wrote<T>(&self, polled: Poll<T>) -> Poll<T> {
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
pub(super) struct EdgeService {
    pub(super) inner: TowerToHyperService<Router>,
    pub(super) peer: SocketAddr,
    pub(super) clock: Arc<ConnectionClock>,
    pub(super) body_read_timeout: Duration,
}

pub(super) type EdgeFuture =
    Pin<Box<dyn Future<Output = Result<Response<ClockedBody>, Infallible>> + Send>>;

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
    pub(super) at: Instant,
    pub(super) timeout: Duration,
    pub(super) missed: Arc<AtomicBool>,
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
pub(super) struct BodyTimedOut(Duration);

/// A request body that tells the connection's clock when the handler reading it waits for the
/// client, and that fails once `body_read_timeout` has passed without it being complete, so a
/// body trickling in a byte at a time cannot hold a connection (and its handler) for ever.
pub(super) struct ClockedRequestBody {
    pub(super) inner: Incoming,
    pub(super) clock: Arc<ConnectionClock>,
    /// Until the body is complete: the timer of its deadline, and the flag to set when it
    /// passes.
    pub(super) deadline: Option<(Pin<Box<Sleep>>, BodyDeadline)>,
    /// Set once the deadline has passed: every later read fails the same way.
    pub(super) missed: Option<BodyTimedOut>,
}

impl ClockedRequestBody {
    /// The body is complete (or broken, or no longer read): its deadline no longer applies.
    pub(super) fn finished(&mut self) {
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
pub(super) struct ClockedBody {
    pub(super) inner: Body,
    pub(super) _guard: RequestGuard,
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
