//! Open connections, HTTP and gRPC alike: how many may be open, how long a client may take to
//! send a request or leave a connection idle, and accepting through a shortage of file
//! descriptors.
//!
//! The rules, so that slow or idle clients cannot hold the service's descriptors:
//!
//! - A request (head and body) must arrive within `request_read_timeout` of its first byte;
//!   a new HTTP connection must send its first byte, and a new gRPC connection the HTTP/2
//!   preface, within the same time of connecting.
//! - A connection with no request in flight is closed after `idle_timeout` (gracefully:
//!   HTTP/1 closes, HTTP/2 sends `GOAWAY`), and so is one whose client has not read the
//!   answers waiting for it for that long.
//! - At most `max_connections` are open (fewer when the process's descriptor limit would not
//!   allow as many). At the cap, a new connection closes the oldest one that has no request in
//!   flight, first among those that never completed a request (a slow client's), then the
//!   idle ones; if every connection is answering, new ones wait in the listen backlog.
//! - A connection is never cut while a request it carries is being decided: a timeout or an
//!   eviction then closes it once the answer is written. (The one exception is a request whose
//!   own body is late: nothing was decided for it yet.)
//! - When `accept` fails for want of descriptors, the oldest quiet connection is closed to
//!   free one and accepting backs off (5 ms, doubling to 500 ms) instead of spinning or
//!   stopping; it resumes as soon as a descriptor is free.
//!
//! Each connection's task [`drive`]s its hyper connection and enforces these rules between
//! polls of it, so that what it sees of the connection (reads, writes, requests in flight)
//! cannot change under it; the listener only asks a connection to close.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::ServerConfig;
use crate::framing::Framing;

/// The bytes of the HTTP/2 connection preface.
const H2_PREFACE: u64 = 24;
/// How long a connection asked to close gracefully is given to close by itself once it has
/// nothing in flight (HTTP/2's `GOAWAY` handshake).
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// The first and the longest pause after a failed `accept`.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// How often a listener whose every connection is busy looks for room again.
const ROOM_POLL: Duration = Duration::from_millis(20);

/// The connection settings of `[server]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    read_timeout: Duration,
    idle_timeout: Duration,
}

/// Which listener a connection came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// The HTTP JSON API (HTTP/1.1).
    Http1,
    /// Envoy's rate limit service (HTTP/2).
    Grpc,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::Http1 => "http",
            Protocol::Grpc => "grpc",
        }
    }
}

/// Why the service closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// A request (or a new connection's first bytes) took longer than `request_read_timeout`.
    ReadTimeout,
    /// No request for `idle_timeout`.
    IdleTimeout,
    /// The client did not read its answers for `idle_timeout`.
    WriteTimeout,
    /// Closed to make room at the connection cap or when descriptors ran out.
    Evicted,
    /// The service is stopping.
    Shutdown,
}

impl Why {
    fn label(self) -> &'static str {
        match self {
            Why::ReadTimeout => "read_timeout",
            Why::IdleTimeout => "idle_timeout",
            Why::WriteTimeout => "write_timeout",
            Why::Evicted => "evicted",
            Why::Shutdown => "shutdown",
        }
    }
}

const ASK_NONE: u8 = 0;
const ASK_EVICT: u8 = 1;
const ASK_SHUTDOWN: u8 = 2;

/// One open connection, as its task and the listener see it. Times are milliseconds since
/// the registry's epoch, plus one (0 means "not set").
pub(crate) struct Conn {
    protocol: Protocol,
    epoch: Instant,
    accepted: u64,
    /// HTTP/1 requests whose first byte arrived, and those read whole (from [`Framing`]).
    started: AtomicU64,
    complete: AtomicU64,
    /// When the request being read started.
    reading_since: AtomicU64,
    /// The request (counting from 1) that had both `Content-Length` and `Transfer-Encoding`.
    conflict: AtomicU64,
    /// Requests handed to the service, and those whose answer is written.
    begun: AtomicU64,
    done: AtomicU64,
    /// When the last answer was written (or the connection accepted).
    idle_since: AtomicU64,
    /// Since when writes have been waiting for the client to read (0: they are not).
    blocked_since: AtomicU64,
    bytes_read: AtomicU64,
    /// What the listener asks of it (`ASK_*`).
    ask: AtomicU8,
    /// Whether it counts against the cap (not once it has been asked to close).
    counted: AtomicBool,
    /// Its task, woken when asked to close or when a request's answer is done.
    waker: AtomicWaker,
}

impl Conn {
    fn now(&self) -> u64 {
        ms_since(self.epoch, Instant::now())
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms.saturating_sub(1))
    }

    /// A request handed to the service; the guard marks its answer done when dropped (with
    /// the response body, or with the request if it never answers).
    pub(crate) fn begin(self: &Arc<Self>) -> InService {
        let index = self.begun.fetch_add(1, Ordering::AcqRel) + 1;
        InService {
            conn: Arc::clone(self),
            index,
        }
    }

    /// Whether request `index` (counting from 1) carried both `Content-Length` and
    /// `Transfer-Encoding`.
    pub(crate) fn smuggled(&self, index: u64) -> bool {
        self.conflict.load(Ordering::Relaxed) == index
    }

    fn on_read(&self, bytes: &[u8], framing: Option<&mut Framing>) {
        self.bytes_read
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let Some(f) = framing else { return };
        let started = f.started;
        f.feed(bytes);
        if f.started != started {
            self.reading_since.store(self.now(), Ordering::Relaxed);
            self.started.store(f.started, Ordering::Relaxed);
        }
        self.complete.store(f.complete, Ordering::Relaxed);
        if let Some(i) = f.conflict {
            self.conflict.store(i, Ordering::Relaxed);
        }
    }

    fn on_write(&self, pending: bool) {
        if !pending {
            self.blocked_since.store(0, Ordering::Relaxed);
        } else if self.blocked_since.load(Ordering::Relaxed) == 0 {
            self.blocked_since.store(self.now(), Ordering::Relaxed);
        }
    }

    /// Asks the connection to close (keeping the strongest request made).
    fn ask(&self, what: u8) {
        self.ask.fetch_max(what, Ordering::AcqRel);
        self.waker.wake();
    }

    /// Stops counting against the cap; true if it did count.
    fn uncount(&self) -> bool {
        self.counted.swap(false, Ordering::AcqRel)
    }

    /// Whether it may be asked to make room: nothing decided is in flight and no answer
    /// waits for the client (a guess, from another task; the connection decides).
    fn evictable(&self) -> bool {
        let begun = self.begun.load(Ordering::Acquire);
        let done = self.done.load(Ordering::Acquire);
        let complete = self.complete.load(Ordering::Relaxed);
        let reading = self.started.load(Ordering::Relaxed) > complete;
        self.blocked_since.load(Ordering::Relaxed) == 0
            && (begun == done || (begun == done + 1 && begun == complete + 1 && reading))
    }

    /// What to do now, given that the connection is `closing` (asked to close gracefully,
    /// for that reason, at that time) or not.
    fn assess(&self, now: Instant, limits: &Limits, closing: Option<(Why, Instant)>) -> Next {
        let begun = self.begun.load(Ordering::Acquire);
        let done = self.done.load(Ordering::Acquire);
        let in_flight = begun.saturating_sub(done);
        let started = self.started.load(Ordering::Relaxed);
        let complete = self.complete.load(Ordering::Relaxed);
        let blocked = self.blocked_since.load(Ordering::Relaxed);

        let reading = (started > complete)
            .then(|| self.at(self.reading_since.load(Ordering::Relaxed)) + limits.read_timeout);
        let read_late = reading.is_some_and(|due| now >= due);
        let stalled = (blocked != 0).then(|| self.at(blocked) + limits.idle_timeout);
        let write_late = stalled.is_some_and(|due| now >= due);
        let quiet = in_flight == 0 && blocked == 0;
        // The request in flight is the one being read: nothing is decided for it yet.
        let own_body_pending =
            reading.is_some() && in_flight == 1 && begun == complete + 1 && blocked == 0;
        // Whether cutting now loses no answer the service decided (or one the client does
        // not read). A stop lets a request whose head has arrived finish, unless its body
        // is late.
        let cuttable = |why: Why| match why {
            Why::Shutdown => quiet || write_late || (own_body_pending && read_late),
            _ => quiet || own_body_pending || write_late,
        };

        // Quiet: the first request's bytes, or the next request, are awaited.
        let waiting = quiet.then(|| {
            let fresh = begun == 0
                && match self.protocol {
                    Protocol::Http1 => started == 0,
                    Protocol::Grpc => self.bytes_read.load(Ordering::Relaxed) < H2_PREFACE,
                };
            if fresh {
                (
                    self.at(self.accepted) + limits.read_timeout,
                    Why::ReadTimeout,
                )
            } else {
                let idle = self.idle_since.load(Ordering::Relaxed);
                (self.at(idle) + limits.idle_timeout, Why::IdleTimeout)
            }
        });
        let earliest = |extra: Option<Instant>| {
            [reading, stalled, extra]
                .into_iter()
                .flatten()
                .filter(|&d| d > now)
                .min()
        };

        if let Some((why, since)) = closing {
            // Asked to close gracefully: let it, and cut it once that loses nothing (a quiet
            // one after a moment to close by itself).
            let grace = since + CLOSE_GRACE;
            if cuttable(why) && (!quiet || now >= grace) {
                return Next::Cut;
            }
            return Next::Wait(earliest(quiet.then_some(grace)));
        }

        let why = match self.ask.load(Ordering::Acquire) {
            ASK_SHUTDOWN => Some(Why::Shutdown),
            ASK_EVICT => Some(Why::Evicted),
            _ if read_late => Some(Why::ReadTimeout),
            _ if write_late => Some(Why::WriteTimeout),
            _ => waiting.filter(|(due, _)| now >= *due).map(|(_, why)| why),
        };
        match why {
            // An idle connection is closed gracefully first (HTTP/2 says GOAWAY).
            Some(Why::IdleTimeout) => Next::Close(Why::IdleTimeout),
            Some(why) if cuttable(why) => Next::CutNow(why),
            Some(why) => Next::Close(why),
            None => Next::Wait(earliest(waiting.map(|(due, _)| due))),
        }
    }
}

fn ms_since(epoch: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch).as_millis())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

/// What a connection's task does next.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Keep serving; look again at this time, if any.
    Wait(Option<Instant>),
    /// Ask the connection to close gracefully.
    Close(Why),
    /// Cut it now (nothing in flight is lost).
    CutNow(Why),
    /// Cut it now, after a graceful close was asked.
    Cut,
}

/// A request in flight on a connection.
pub(crate) struct InService {
    conn: Arc<Conn>,
    index: u64,
}

impl InService {
    /// The request's number on its connection, counting from 1.
    pub(crate) fn index(&self) -> u64 {
        self.index
    }
}

impl Drop for InService {
    fn drop(&mut self) {
        let c = &self.conn;
        c.idle_since.store(c.now(), Ordering::Relaxed);
        c.done.fetch_add(1, Ordering::AcqRel);
        // Its task may have to start an idle timer (an HTTP/2 stream ends in a task of its own).
        c.waker.wake();
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in flight until it is dropped.
    pub(crate) struct Answered<B> {
        #[pin]
        body: B,
        request: InService,
    }
}

impl<B> Answered<B> {
    pub(crate) fn new(body: B, request: InService) -> Self {
        Answered { body, request }
    }
}

impl<B: http_body::Body> http_body::Body for Answered<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A TCP connection whose reads and writes tell its [`Conn`] what happens on it.
pub(crate) struct Tracked {
    io: TcpStream,
    conn: Arc<Conn>,
    framing: Option<Framing>,
}

impl Tracked {
    /// Wraps an accepted connection; HTTP/1 connections follow their request framing.
    pub(crate) fn new(io: TcpStream, conn: &Arc<Conn>) -> Self {
        let framing = (conn.protocol == Protocol::Http1).then(Framing::default);
        Tracked {
            io,
            conn: Arc::clone(conn),
            framing,
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            this.conn.on_read(read, this.framing.as_mut());
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.conn.on_write(r.is_pending());
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.conn.on_write(r.is_pending());
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// How a connection's task ended.
pub(crate) enum Ended<T> {
    /// The connection finished (the client closed it, or hyper did: by itself, or when asked
    /// to close gracefully for a reason), with hyper's result.
    Finished(T, Option<Why>),
    /// The service cut it.
    Cut(Why),
}

/// Serves `conn` (a hyper connection over a [`Tracked`] stream) under the rules of this
/// module; `graceful` asks it to close gracefully.
pub(crate) async fn drive<C: Future>(
    mut conn: Pin<&mut C>,
    track: &Conn,
    limits: Limits,
    mut graceful: impl FnMut(Pin<&mut C>),
) -> Ended<C::Output> {
    let mut timer = Box::pin(tokio::time::sleep(Duration::ZERO));
    let mut armed: Option<Instant> = None;
    let mut closing: Option<(Why, Instant)> = None;
    std::future::poll_fn(move |cx| loop {
        if let Poll::Ready(out) = conn.as_mut().poll(cx) {
            return Poll::Ready(Ended::Finished(out, closing.map(|(why, _)| why)));
        }
        track.waker.register(cx.waker());
        let now = Instant::now();
        match track.assess(now, &limits, closing) {
            Next::Wait(None) => return Poll::Pending,
            Next::Wait(Some(due)) => {
                if armed != Some(due) {
                    timer.as_mut().reset(due);
                    armed = Some(due);
                }
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                armed = None;
            }
            Next::Close(why) => {
                track.uncount();
                closing = Some((why, now));
                graceful(conn.as_mut());
            }
            Next::CutNow(why) => {
                track.uncount();
                return Poll::Ready(Ended::Cut(why));
            }
            Next::Cut => {
                let why = closing.map_or(Why::Shutdown, |(why, _)| why);
                return Poll::Ready(Ended::Cut(why));
            }
        }
    })
    .await
}

/// The open connections of both listeners.
pub(crate) struct Connections {
    limits: Limits,
    cap: usize,
    epoch: Instant,
    open: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    /// Connections counting against the cap.
    live: AtomicUsize,
    stopping: AtomicBool,
    /// Notified when a connection ends.
    ended: Notify,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("limits", &self.limits)
            .field("cap", &self.cap)
            .field("live", &self.live.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The connection cap under a descriptor limit of `fds` (`None`: unlimited): an eighth of the
/// descriptors (at least 32) is left for everything else (the store's connections, the
/// configuration file, logs).
pub(crate) fn cap_under(configured: usize, fds: Option<u64>) -> usize {
    let Some(fds) = fds else { return configured };
    let room = fds.saturating_sub((fds / 8).max(32));
    configured
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

impl Connections {
    /// The registry for `[server]`'s settings. The cap is lowered to what the process's
    /// descriptor limit allows (with a warning).
    pub(crate) fn new(server: &ServerConfig) -> Self {
        let fds = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        let cap = cap_under(server.max_connections, fds);
        if cap < server.max_connections {
            tracing::warn!(
                max_connections = server.max_connections,
                descriptor_limit = fds,
                cap,
                "the descriptor limit allows fewer connections than configured; raise it (ulimit -n) for more"
            );
        }
        Connections {
            limits: Limits {
                read_timeout: server.request_read_timeout,
                idle_timeout: server.idle_timeout,
            },
            cap,
            epoch: Instant::now(),
            open: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            ended: Notify::new(),
        }
    }

    /// The connection cap in force.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    fn register(self: &Arc<Self>, protocol: Protocol) -> Registration {
        let now = ms_since(self.epoch, Instant::now());
        let conn = Arc::new(Conn {
            protocol,
            epoch: self.epoch,
            accepted: now,
            started: AtomicU64::new(0),
            complete: AtomicU64::new(0),
            reading_since: AtomicU64::new(now),
            conflict: AtomicU64::new(0),
            begun: AtomicU64::new(0),
            done: AtomicU64::new(0),
            idle_since: AtomicU64::new(now),
            blocked_since: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            ask: AtomicU8::new(ASK_NONE),
            counted: AtomicBool::new(true),
            waker: AtomicWaker::new(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.live.fetch_add(1, Ordering::AcqRel);
        self.open.lock().insert(id, Arc::clone(&conn));
        if self.stopping.load(Ordering::Acquire) {
            conn.ask(ASK_SHUTDOWN);
        }
        metrics::gauge!("tollgate_connections", "listener" => protocol.label()).increment(1.0);
        Registration {
            conns: Arc::clone(self),
            conn,
            id,
        }
    }

    fn at_cap(&self) -> bool {
        self.live.load(Ordering::Acquire) >= self.cap
    }

    /// The connection to close to make room: the oldest quiet one, preferring those that
    /// never completed a request. None if every connection is answering a request.
    fn victim(&self) -> Option<Arc<Conn>> {
        let open = self.open.lock();
        let candidates = || {
            open.values()
                .filter(|c| c.counted.load(Ordering::Acquire) && c.evictable())
        };
        candidates()
            .find(|c| c.done.load(Ordering::Acquire) == 0)
            .or_else(|| candidates().next())
            .cloned()
    }

    /// Asks the [`victim`](Self::victim) to close. False if there is none.
    fn evict_one(&self) -> bool {
        let Some(c) = self.victim() else { return false };
        if c.uncount() {
            self.live.fetch_sub(1, Ordering::AcqRel);
        }
        c.ask(ASK_EVICT);
        true
    }

    /// Asks every connection of `protocol` to close (those answering a request finish first)
    /// and waits until they have.
    pub(crate) async fn shut_down(&self, protocol: Protocol) {
        self.stopping.store(true, Ordering::Release);
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let left: Vec<Arc<Conn>> = self
                .open
                .lock()
                .values()
                .filter(|c| c.protocol == protocol)
                .cloned()
                .collect();
            if left.is_empty() {
                return;
            }
            for c in &left {
                c.ask(ASK_SHUTDOWN);
            }
            drop(left);
            ended.await;
        }
    }
}

/// An accepted connection's place in the registry, released when its task ends.
pub(crate) struct Registration {
    conns: Arc<Connections>,
    conn: Arc<Conn>,
    id: u64,
}

impl Registration {
    /// The connection's state.
    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// Serves `conn` under the rules of this module (see [`drive`]), counting what the
    /// service closed.
    pub(crate) async fn serve<C: Future>(
        &self,
        conn: Pin<&mut C>,
        graceful: impl FnMut(Pin<&mut C>),
    ) -> Option<C::Output> {
        let (out, why) = match drive(conn, &self.conn, self.conns.limits, graceful).await {
            Ended::Finished(out, why) => (Some(out), why),
            Ended::Cut(why) => (None, Some(why)),
        };
        if let Some(why) = why {
            metrics::counter!(
                "tollgate_connections_closed_total",
                "listener" => self.conn.protocol.label(),
                "reason" => why.label()
            )
            .increment(1);
        }
        out
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.conn.uncount() {
            self.conns.live.fetch_sub(1, Ordering::AcqRel);
        }
        self.conns.open.lock().remove(&self.id);
        metrics::gauge!("tollgate_connections", "listener" => self.conn.protocol.label())
            .decrement(1.0);
        self.conns.ended.notify_waiters();
    }
}

/// A listener that accepts under the connection cap and through descriptor shortages.
pub(crate) struct Acceptor {
    listener: TcpListener,
    conns: Arc<Connections>,
    protocol: Protocol,
    backoff: Duration,
}

impl Acceptor {
    pub(crate) fn new(listener: TcpListener, conns: Arc<Connections>, protocol: Protocol) -> Self {
        Acceptor {
            listener,
            conns,
            protocol,
            backoff: Duration::ZERO,
        }
    }

    /// The next connection (with `TCP_NODELAY`: small requests and answers). At the cap, a
    /// quiet connection is asked to close for it; when every connection is answering, new
    /// ones wait in the listen backlog.
    pub(crate) async fn accept(&mut self) -> (TcpStream, SocketAddr, Registration) {
        loop {
            if self.conns.at_cap() && self.conns.victim().is_none() {
                // Every connection is answering: wait for one to end or go quiet.
                let _ = tokio::time::timeout(ROOM_POLL, self.conns.ended.notified()).await;
                continue;
            }
            match self.listener.accept().await {
                Ok((tcp, peer)) => {
                    if !self.backoff.is_zero() {
                        tracing::info!(listener = self.protocol.label(), "accepting again");
                        self.backoff = Duration::ZERO;
                    }
                    if self.conns.at_cap() {
                        self.conns.evict_one();
                    }
                    let _ = tcp.set_nodelay(true);
                    return (tcp, peer, self.conns.register(self.protocol));
                }
                Err(e) => self.failed(e).await,
            }
        }
    }

    /// After a failed `accept`: a connection that went away before it was accepted is
    /// nothing; a shortage of descriptors (or of kernel memory) closes a quiet connection to
    /// free one; accepting then pauses, longer each time while it keeps failing.
    async fn failed(&mut self, e: io::Error) {
        use rustix::io::Errno;
        if matches!(
            e.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
        ) {
            return;
        }
        let errno = Errno::from_io_error(&e);
        let shortage = matches!(
            errno,
            Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)
        );
        let freed = shortage && self.conns.evict_one();
        metrics::counter!("tollgate_accept_errors_total", "listener" => self.protocol.label())
            .increment(1);
        if self.backoff.is_zero() {
            tracing::warn!(
                listener = self.protocol.label(),
                error = %e,
                closed_a_quiet_connection = freed,
                "accept failed; retrying with backoff"
            );
        }
        self.backoff = (self.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
        tokio::time::sleep(self.backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conns(max: usize) -> Arc<Connections> {
        let server = ServerConfig {
            max_connections: max,
            request_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            ..ServerConfig::default()
        };
        Arc::new(Connections::new(&server))
    }

    #[test]
    fn the_cap_leaves_descriptors_for_everything_else() {
        assert_eq!(cap_under(10_000, Some(1_024)), 896);
        assert_eq!(cap_under(10_000, Some(100)), 68);
        assert_eq!(cap_under(10_000, Some(1_048_576)), 10_000);
        assert_eq!(cap_under(10_000, None), 10_000);
        assert_eq!(cap_under(10_000, Some(0)), 1);
    }

    #[test]
    fn timeouts_follow_what_the_connection_is_doing() {
        let c = conns(10);
        let reg = c.register(Protocol::Http1);
        let conn = Arc::clone(reg.conn());
        let limits = c.limits;
        // Times in seconds after the connection was accepted.
        let base = conn.accepted;
        let at = |s: u64| conn.at(base + s * 1_000);
        let set = |field: &AtomicU64, s: u64| field.store(base + s * 1_000, Ordering::Relaxed);
        // A new connection must send its first byte within the read timeout.
        assert_eq!(conn.assess(at(0), &limits, None), Next::Wait(Some(at(10))));
        assert_eq!(
            conn.assess(at(10), &limits, None),
            Next::CutNow(Why::ReadTimeout)
        );
        // A head that starts at 5 s must be whole by 15 s.
        let mut f = Framing::default();
        conn.on_read(
            b"POST /v1/check HTTP/1.1\r\ncontent-length: 4\r\n",
            Some(&mut f),
        );
        set(&conn.reading_since, 5);
        assert_eq!(conn.assess(at(5), &limits, None), Next::Wait(Some(at(15))));
        // Its head is whole: the service has it, and waits for the body.
        conn.on_read(b"\r\nab", Some(&mut f));
        let request = conn.begin();
        assert_eq!(request.index(), 1);
        assert_eq!(conn.assess(at(6), &limits, None), Next::Wait(Some(at(15))));
        assert!(
            conn.evictable(),
            "nothing is decided before the body is whole"
        );
        // The late body is cut: nothing was decided for it.
        assert_eq!(
            conn.assess(at(15), &limits, None),
            Next::CutNow(Why::ReadTimeout)
        );
        // Once the body is whole, nothing is timed while the service answers.
        conn.on_read(b"cd", Some(&mut f));
        assert_eq!(conn.assess(at(100), &limits, None), Next::Wait(None));
        assert!(!conn.evictable());
        // Not even a stop cuts the request in flight: it is asked to close after it.
        conn.ask(ASK_SHUTDOWN);
        assert_eq!(
            conn.assess(at(100), &limits, None),
            Next::Close(Why::Shutdown)
        );
        conn.ask.store(ASK_NONE, Ordering::Relaxed);
        // Answered at 20 s: idle until 140 s, then closed gracefully.
        drop(request);
        set(&conn.idle_since, 20);
        assert_eq!(
            conn.assess(at(20), &limits, None),
            Next::Wait(Some(at(140)))
        );
        assert_eq!(
            conn.assess(at(140), &limits, None),
            Next::Close(Why::IdleTimeout)
        );
        // Asked to close gracefully, a quiet connection has a second to do so by itself.
        let closing = Some((Why::IdleTimeout, at(140)));
        assert_eq!(
            conn.assess(at(140), &limits, closing),
            Next::Wait(Some(at(141)))
        );
        assert_eq!(conn.assess(at(141), &limits, closing), Next::Cut);
        // A client that does not read its answers is cut after the idle timeout.
        let request = conn.begin();
        conn.on_write(true);
        set(&conn.blocked_since, 150);
        assert_eq!(
            conn.assess(at(150), &limits, None),
            Next::Wait(Some(at(270)))
        );
        assert_eq!(
            conn.assess(at(270), &limits, None),
            Next::CutNow(Why::WriteTimeout)
        );
        conn.on_write(false);
        drop(request);
    }

    #[tokio::test]
    async fn running_out_of_descriptors_frees_one_and_backs_off() {
        let c = conns(10);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut a = Acceptor::new(listener, Arc::clone(&c), Protocol::Http1);
        let busy = c.register(Protocol::Http1);
        let _answering = busy.conn().begin();
        let slow = c.register(Protocol::Http1);
        let emfile = || io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
        // A quiet connection is closed to free a descriptor; accepting pauses, longer each
        // time it fails again.
        a.failed(emfile()).await;
        assert_eq!(slow.conn().ask.load(Ordering::Relaxed), ASK_EVICT);
        assert_eq!(busy.conn().ask.load(Ordering::Relaxed), ASK_NONE);
        assert_eq!(a.backoff, BACKOFF_MIN);
        a.failed(emfile()).await;
        a.failed(emfile()).await;
        assert_eq!(a.backoff, BACKOFF_MIN * 4);
        // A client that left before it was accepted changes nothing.
        a.failed(io::ErrorKind::ConnectionAborted.into()).await;
        assert_eq!(a.backoff, BACKOFF_MIN * 4);
        // The next accepted connection resets the backoff.
        let _client = TcpStream::connect(addr).await.unwrap();
        let (_tcp, _peer, accepted) = a.accept().await;
        assert_eq!(a.backoff, Duration::ZERO);
        assert_eq!(c.open.lock().len(), 3);
        drop((accepted, slow));
    }

    #[test]
    fn at_the_cap_the_oldest_quiet_connection_goes_first() {
        let c = conns(3);
        let served = c.register(Protocol::Http1);
        let busy = c.register(Protocol::Grpc);
        let slow = c.register(Protocol::Http1);
        // `served` answered a request and is idle; `busy` is answering; `slow` never finished one.
        drop(served.conn().begin());
        let _in_flight = busy.conn().begin();
        assert!(c.at_cap());
        assert!(c.evict_one(), "asks one to close");
        assert_eq!(slow.conn().ask.load(Ordering::Relaxed), ASK_EVICT);
        assert_eq!(c.live.load(Ordering::Relaxed), 2);
        let extra = c.register(Protocol::Http1);
        let _extra_request = extra.conn().begin();
        // Then the idle one; never the one answering.
        assert!(c.evict_one());
        assert_eq!(served.conn().ask.load(Ordering::Relaxed), ASK_EVICT);
        let _more = c.register(Protocol::Http1);
        let _answering = _more.conn().begin();
        assert!(c.at_cap());
        assert!(!c.evict_one(), "every connection left is answering");
        assert_eq!(busy.conn().ask.load(Ordering::Relaxed), ASK_NONE);
        drop((served, slow));
        assert_eq!(c.open.lock().len(), 3);
    }
}
