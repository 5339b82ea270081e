//! A [tower] layer that rate-limits HTTP services (axum, hyper, tonic) with a [`Limiter`].
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tollgate::tower::RateLimitLayer;
//! use tollgate::{Cost, LimitKind, LimitSpec, Limiter, ManualClock, Policy, Rule, Subject};
//! use tollgate::{Timestamp, Window};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let policy = Policy::builder()
//!     .rule(
//!         Rule::builder("per-tenant")
//!             .per("tenant")
//!             .limit(LimitSpec::new(LimitKind::Requests, 1, Window::MINUTE)),
//!     )
//!     .build()?;
//! let limiter = Limiter::with_clock(policy, ManualClock::new(Timestamp::from_secs(1_700_000_000)));
//!
//! // Who is calling, and what the call costs, from the request.
//! let layer = RateLimitLayer::new(limiter, |req: &Request<Full<Bytes>>| {
//!     let tenant = req
//!         .headers()
//!         .get("x-tenant")
//!         .and_then(|v| v.to_str().ok())
//!         .unwrap_or("anonymous")
//!         .to_owned();
//!     (Subject::new().tenant(tenant), Cost::ONE)
//! });
//! let service = layer.layer(service_fn(|_req: Request<Full<Bytes>>| async {
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
//! }));
//!
//! let request = || Request::builder().header("x-tenant", "acme").body(Full::default());
//! let first = service.clone().oneshot(request()?).await?;
//! assert_eq!(first.status(), StatusCode::OK);
//! assert_eq!(first.headers()["x-ratelimit-remaining-requests"], "0");
//!
//! let second = service.oneshot(request()?).await?;
//! assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(second.headers()["retry-after"], "60");
//! # Ok(()) }
//! ```
//!
//! # What the layer does with each request
//!
//! 1. The [`Classify`] function (any `Fn(&http::Request<B>) -> (Subject<'static>, Cost)`) names
//!    the subject and the estimated cost of the request.
//! 2. The limiter reserves that cost and a concurrency slot: [`Limiter::reserve`] when the
//!    layer's [`max_wait`](RateLimitLayer::max_wait) is zero (the default), otherwise
//!    [`Limiter::acquire`], which waits up to `max_wait` (on tokio's timer) for admission.
//! 3. The answer becomes a response:
//!
//! | outcome | response | the inner service |
//! | --- | --- | --- |
//! | [`Allowed`](Outcome::Allowed) | the inner service's, with the rate-limit headers added | called |
//! | [`Denied`](Outcome::Denied) | `429 Too Many Requests`, the headers, `Retry-After` and `retry-after-ms` | not called |
//! | [`TooLarge`](Outcome::TooLarge) | `413 Content Too Large` (see below), the headers and `x-should-retry: false`, no `Retry-After` | not called |
//! | [`StoreFull`](Outcome::StoreFull), [`Unavailable`](Outcome::Unavailable) (a failing store under a rule that fails closed) | `503 Service Unavailable`, the headers | not called |
//! | store error | `503 Service Unavailable`, or with [`fail_open`](RateLimitLayer::fail_open) the inner service's response without headers | not called, or called unlimited |
//!
//! A `TooLarge` cost (more tokens than a bucket can ever hold) answers **413** by default,
//! not 429, with `x-should-retry: false`: waiting never helps, clients and SDKs retry 429s,
//! and the OpenAI and Anthropic SDKs obey that header (tollgate's HTTP service answers the same). The estimate usually comes
//! from the request's content (prompt and `max_tokens`), so "content too large" is what the
//! client has to fix. [`too_large_status`](RateLimitLayer::too_large_status) changes it.
//!
//! Responses the layer makes itself have a small JSON body:
//! `{"error":{"type":"rate_limit_exceeded","reason":"tokens","code":"E4405","message":"…","retry_after_ms":1200}}`
//! (`type` is `request_too_large` for 413 and `service_unavailable` for 503; `retry_after_ms`
//! only when waiting helps). Every response of a limited request carries the [`Decision`] in
//! its extensions, and every response of a request the store failed on carries a
//! [`LimiterFailure`], so an outer layer (`tower::util::MapResponse`, axum's `map_response`)
//! can render its own body.
//!
//! A subject that no rule matches is unlimited: the request passes, with no headers; under a
//! policy with `unmatched = "deny"` it is refused with `403 Forbidden` (type `not_covered`).
//!
//! # Headers
//!
//! [`HeaderStyle::Both`] by default: OpenAI's `x-ratelimit-*` and the IETF `RateLimit-Policy` and
//! `RateLimit` fields, rendered by [`headers::headers`]. On success they replace headers of the
//! same name that the inner service set (a proxy's upstream limits are not the client's).
//! [`header_style(None)`](RateLimitLayer::header_style) adds none, except `Retry-After` and
//! `retry-after-ms` on denials and `x-should-retry: false` on a cost that can never fit.
//!
//! # The permit lives as long as the response
//!
//! The permit (and so its concurrency slot) is held while the inner service runs and then by the
//! response body, a [`RateLimitBody`]: the slot is released when the body has been read to its
//! end (or fails), or when the body is dropped, whichever comes first. A client that
//! disconnects mid-stream frees its slot at once. Streamed completions therefore count as in
//! flight for as long as they stream. A stream that outlives the concurrency limit's lease (five
//! minutes unless the limit sets one) loses its slot when the lease expires, unless the layer
//! renews it: see [`keep_alive`](RateLimitLayer::keep_alive).
//!
//! # Settling the actual cost
//!
//! By default the estimate stays spent (as when a [`Permit`] is dropped). To settle against the
//! actual usage, which for a model call is usually known only at the end of the stream:
//!
//! - the request reaches the inner service with an [`ActualCost`] handle in its extensions (and
//!   the granting [`Decision`]); [`ActualCost::set`] records the actual cost at any time, even
//!   from inside the response body's stream;
//! - or the inner service puts an [`ActualCost`] (for example [`ActualCost::from`] a [`Cost`]) in
//!   its response's extensions; when it holds a cost, it takes precedence over the request's.
//!
//! When the body ends, a recorded cost is committed with [`Permit::commit`] (the difference is
//! refunded or charged, and the slot released in the same store call); with no recorded cost
//! the permit is dropped. A body dropped before its end commits a recorded cost too: at once
//! when the store settles without waiting (the memory store), otherwise on a spawned tokio task.
//! Record the whole cost: [`Cost::tokens`] counts one request, like the usual estimate.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use ::tower::{Layer, Service};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;
use pin_project_lite::pin_project;

use crate::decision::{Decision, Outcome};
use crate::error::Error;
use crate::headers::{self, HeaderStyle};
use crate::permit::{Permit, Reservation};
use crate::store::Store;
use crate::{Cost, Limiter, Subject};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Names the subject and the estimated cost of a request.
///
/// Implemented for every `Fn(&http::Request<B>) -> (Subject<'static>, Cost)`. Give a closure's
/// argument its type (`|req: &Request<Body>| …`), or implement the trait for a type of your
/// own to classify requests of any body type:
///
/// ```
/// use http::Request;
/// use tollgate::tower::Classify;
/// use tollgate::{Cost, Subject};
///
/// struct ByTenantHeader;
///
/// impl<B> Classify<B> for ByTenantHeader {
///     fn classify(&self, req: &Request<B>) -> (Subject<'static>, Cost) {
///         let tenant = req.headers().get("x-tenant").and_then(|v| v.to_str().ok());
///         let tokens = req
///             .headers()
///             .get("x-estimated-tokens")
///             .and_then(|v| v.to_str().ok()?.parse().ok())
///             .unwrap_or(0);
///         (
///             Subject::new().tenant(tenant.unwrap_or("anonymous").to_owned()),
///             Cost::tokens(tokens),
///         )
///     }
/// }
/// ```
pub trait Classify<B>: Send + Sync + 'static {
    /// The subject of `request` and the cost to reserve for it.
    fn classify(&self, request: &Request<B>) -> (Subject<'static>, Cost);
}

impl<B, F> Classify<B> for F
where
    F: Fn(&Request<B>) -> (Subject<'static>, Cost) + Send + Sync + 'static,
{
    fn classify(&self, request: &Request<B>) -> (Subject<'static>, Cost) {
        self(request)
    }
}

/// What the layer does besides asking the limiter.
#[derive(Clone, Copy, Debug)]
struct Config {
    max_wait: Duration,
    keep_alive: Option<Duration>,
    style: Option<HeaderStyle>,
    fail_open: bool,
    too_large: StatusCode,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_wait: Duration::ZERO,
            keep_alive: None,
            style: Some(HeaderStyle::Both),
            fail_open: false,
            too_large: StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

/// A [`Layer`] that rate-limits HTTP services with a [`Limiter`]. See the
/// [module docs](self) for what it answers.
pub struct RateLimitLayer<S: Store, K> {
    limiter: Limiter<S>,
    classify: Arc<K>,
    config: Config,
}

impl<S: Store, K> Clone for RateLimitLayer<S, K> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            limiter: self.limiter.clone(),
            classify: Arc::clone(&self.classify),
            config: self.config,
        }
    }
}

impl<S: Store, K> fmt::Debug for RateLimitLayer<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: Store, K> RateLimitLayer<S, K> {
    /// A layer that limits each request by `limiter`, with the subject and cost that
    /// `classify` gives it. Reserves without waiting, renders [`HeaderStyle::Both`], answers
    /// 503 when the store fails and 413 for a cost that can never fit.
    pub fn new(limiter: Limiter<S>, classify: K) -> Self {
        RateLimitLayer {
            limiter,
            classify: Arc::new(classify),
            config: Config::default(),
        }
    }

    /// Waits up to `max_wait` for admission ([`Limiter::acquire`]) before answering 429. Zero,
    /// the default, reserves without waiting ([`Limiter::reserve`]). Waiting uses tokio's
    /// timer.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.config.max_wait = max_wait;
        self
    }

    /// Renews the permit's concurrency leases every `every` ([`Permit::keep_alive`]) for as
    /// long as the request and its response body are in flight, so that streams longer than a
    /// lease keep their slot. Off by default; a third of the lease is a good interval. Needs a
    /// tokio runtime (it spawns one task per admitted request with concurrency limits).
    pub fn keep_alive(mut self, every: Duration) -> Self {
        self.config.keep_alive = Some(every);
        self
    }

    /// Which rate-limit headers to add ([`HeaderStyle::Both`] by default). `None` adds none
    /// but `Retry-After` on denials.
    pub fn header_style(mut self, style: Option<HeaderStyle>) -> Self {
        self.config.style = style;
        self
    }

    /// When the store fails: `false` (the default) answers 503 without calling the inner
    /// service; `true` calls the inner service unlimited, and its response carries a
    /// [`LimiterFailure`] extension and no rate-limit headers.
    pub fn fail_open(mut self, fail_open: bool) -> Self {
        self.config.fail_open = fail_open;
        self
    }

    /// The status of a request whose cost can never fit ([`Outcome::TooLarge`]): 413 by
    /// default; 429 is the other usual choice.
    pub fn too_large_status(mut self, status: StatusCode) -> Self {
        self.config.too_large = status;
        self
    }

    /// The limiter.
    pub fn limiter(&self) -> &Limiter<S> {
        &self.limiter
    }
}

impl<Svc, S: Store, K> Layer<Svc> for RateLimitLayer<S, K> {
    type Service = RateLimit<Svc, S, K>;

    fn layer(&self, inner: Svc) -> Self::Service {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
            classify: Arc::clone(&self.classify),
            config: self.config,
        }
    }
}

/// The service [`RateLimitLayer`] wraps around an inner service.
pub struct RateLimit<Svc, S: Store, K> {
    inner: Svc,
    limiter: Limiter<S>,
    classify: Arc<K>,
    config: Config,
}

impl<Svc: Clone, S: Store, K> Clone for RateLimit<Svc, S, K> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            classify: Arc::clone(&self.classify),
            config: self.config,
        }
    }
}

impl<Svc: fmt::Debug, S: Store, K> fmt::Debug for RateLimit<Svc, S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<Svc, S: Store, K> RateLimit<Svc, S, K> {
    /// The inner service.
    pub fn get_ref(&self) -> &Svc {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut Svc {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> Svc {
        self.inner
    }
}

impl<Svc, S, K, ReqB, ResB> Service<Request<ReqB>> for RateLimit<Svc, S, K>
where
    Svc: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    S: Store,
    K: Classify<ReqB>,
{
    type Response = Response<RateLimitBody<ResB, S>>;
    type Error = Svc::Error;
    type Future = ResponseFuture<Svc, ReqB, S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let (subject, cost) = self.classify.classify(&request);
        // The service that was polled ready goes with this request; a clone stays behind.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let limiter = self.limiter.clone();
        let max_wait = self.config.max_wait;
        let decide: BoxFuture<Result<Reservation<S>, Error>> = Box::pin(async move {
            if max_wait.is_zero() {
                limiter.reserve(&subject, cost).await
            } else {
                limiter.acquire(&subject, cost, max_wait).await
            }
        });
        ResponseFuture {
            state: State::Deciding {
                decide,
                inner: Some(inner),
                request: Some(request),
            },
            config: self.config,
        }
    }
}

/// A handle on the actual cost of a request, to settle its permit with when the response body
/// ends. See [Settling the actual cost](self#settling-the-actual-cost).
///
/// Clones share the recorded cost.
#[derive(Clone, Debug, Default)]
pub struct ActualCost(Arc<Mutex<Option<Cost>>>);

impl ActualCost {
    /// A handle with no cost recorded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the actual cost, replacing any earlier one.
    pub fn set(&self, cost: Cost) {
        *self.0.lock() = Some(cost);
    }

    /// The cost recorded, if any.
    pub fn get(&self) -> Option<Cost> {
        *self.0.lock()
    }
}

impl From<Cost> for ActualCost {
    fn from(cost: Cost) -> Self {
        ActualCost(Arc::new(Mutex::new(Some(cost))))
    }
}

/// Why the limiter could not decide: in the extensions of the 503 response the layer made
/// because the limiter's store failed, or, with [`fail_open`](RateLimitLayer::fail_open), of
/// the request passed through unlimited and of its response.
#[derive(Clone, Debug)]
pub struct LimiterFailure(Arc<Error>);

impl LimiterFailure {
    /// The store's error.
    pub fn error(&self) -> &Error {
        &self.0
    }
}

impl fmt::Display for LimiterFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limiter unavailable: {}", self.0)
    }
}

pin_project! {
    /// The future of [`RateLimit`]'s responses.
    pub struct ResponseFuture<Svc, ReqB, S>
    where
        Svc: Service<Request<ReqB>>,
        S: Store,
    {
        #[pin]
        state: State<Svc::Future, Svc, ReqB, S>,
        config: Config,
    }
}

impl<Svc, ReqB, S> fmt::Debug for ResponseFuture<Svc, ReqB, S>
where
    Svc: Service<Request<ReqB>>,
    S: Store,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Deciding { .. } => "deciding",
            State::Calling { .. } => "calling",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, Svc, ReqB, S>
    where
        S: Store,
    {
        Deciding {
            decide: BoxFuture<Result<Reservation<S>, Error>>,
            inner: Option<Svc>,
            request: Option<Request<ReqB>>,
        },
        Calling {
            #[pin]
            future: F,
            guard: Option<Guard<S>>,
            decision: Option<Decision>,
            failure: Option<LimiterFailure>,
        },
        Done,
    }
}

impl<Svc, ReqB, ResB, S> Future for ResponseFuture<Svc, ReqB, S>
where
    Svc: Service<Request<ReqB>, Response = Response<ResB>>,
    S: Store,
{
    type Output = Result<Response<RateLimitBody<ResB, S>>, Svc::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let this = self.as_mut().project();
            let config = *this.config;
            match this.state.project() {
                StateProj::Deciding {
                    decide,
                    inner,
                    request,
                } => {
                    let answer = ready!(decide.as_mut().poll(cx));
                    let (Some(mut inner), Some(mut request)) = (inner.take(), request.take())
                    else {
                        panic!("ResponseFuture polled after completion");
                    };
                    let next = match answer {
                        Ok(Reservation::Granted(mut permit)) => {
                            if let Some(every) = config.keep_alive {
                                permit.keep_alive(every);
                            }
                            let decision = permit.decision().clone();
                            let actual = ActualCost::new();
                            request.extensions_mut().insert(decision.clone());
                            request.extensions_mut().insert(actual.clone());
                            State::Calling {
                                future: inner.call(request),
                                guard: Some(Guard::new(Some(permit), Some(actual))),
                                decision: Some(decision),
                                failure: None,
                            }
                        }
                        Ok(Reservation::Denied(decision)) => {
                            self.as_mut().project().state.set(State::Done);
                            return Poll::Ready(Ok(refusal(&decision, config)));
                        }
                        Err(error) => {
                            let failure = LimiterFailure(Arc::new(error));
                            if !config.fail_open {
                                self.as_mut().project().state.set(State::Done);
                                return Poll::Ready(Ok(unavailable(failure)));
                            }
                            request.extensions_mut().insert(failure.clone());
                            State::Calling {
                                future: inner.call(request),
                                guard: Some(Guard::new(None, None)),
                                decision: None,
                                failure: Some(failure),
                            }
                        }
                    };
                    self.as_mut().project().state.set(next);
                }
                StateProj::Calling {
                    future,
                    guard,
                    decision,
                    failure,
                } => {
                    let result = ready!(future.poll(cx));
                    let guard = guard.take();
                    let decision = decision.take();
                    let failure = failure.take();
                    self.as_mut().project().state.set(State::Done);
                    // An error drops the guard, and with it the permit: the slot is released.
                    let response = result?;
                    let Some(mut guard) = guard else {
                        panic!("ResponseFuture polled after completion");
                    };
                    let (mut parts, body) = response.into_parts();
                    if let Some(decision) = decision {
                        add_headers(&mut parts.headers, &decision, config.style);
                        parts.extensions.insert(decision);
                    }
                    if let Some(failure) = failure {
                        parts.extensions.insert(failure);
                    }
                    guard.from_response = parts.extensions.get::<ActualCost>().cloned();
                    return Poll::Ready(Ok(Response::from_parts(
                        parts,
                        RateLimitBody {
                            kind: Kind::Inner { body },
                            guard,
                        },
                    )));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

/// Holds a permit until the response body ends or is dropped.
struct Guard<S: Store> {
    permit: Option<Permit<S>>,
    from_request: Option<ActualCost>,
    from_response: Option<ActualCost>,
    /// A commit under way. In a mutex only so that the body stays `Sync`: it is only ever
    /// reached through `&mut`.
    settling: Option<Mutex<BoxFuture<()>>>,
}

impl<S: Store> Guard<S> {
    fn new(permit: Option<Permit<S>>, from_request: Option<ActualCost>) -> Self {
        Guard {
            permit,
            from_request,
            from_response: None,
            settling: None,
        }
    }

    fn actual(&self) -> Option<Cost> {
        let get = |h: &Option<ActualCost>| h.as_ref().and_then(ActualCost::get);
        get(&self.from_response).or_else(|| get(&self.from_request))
    }

    /// Settles the permit: commits a recorded actual cost, or drops the permit. Ready once the
    /// store has applied it.
    fn finish(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(permit) = self.permit.take() {
            match self.actual() {
                Some(actual) => self.settling = Some(Mutex::new(commit(permit, actual))),
                None => drop(permit),
            }
        }
        if let Some(settling) = &mut self.settling {
            ready!(settling.get_mut().as_mut().poll(cx));
            self.settling = None;
        }
        Poll::Ready(())
    }
}

fn commit<S: Store>(mut permit: Permit<S>, actual: Cost) -> BoxFuture<()> {
    Box::pin(async move {
        // A failed commit still counts as settled; its slot expires with the lease.
        let _ = permit.commit(actual).await;
    })
}

impl<S: Store> Drop for Guard<S> {
    fn drop(&mut self) {
        if self.permit.is_none() && self.settling.is_none() {
            return;
        }
        // Stores that settle without waiting (memory) finish here, in one poll.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if self.finish(&mut cx).is_ready() {
            return;
        }
        if let Some(settling) = self.settling.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(settling.into_inner());
            }
            // With no runtime the commit is abandoned: its slots expire with their lease.
        }
    }
}

pin_project! {
    /// The body of [`RateLimit`]'s responses: the inner service's body holding the request's
    /// permit until it ends or is dropped, or the small JSON body of a response the layer made.
    pub struct RateLimitBody<B, S>
    where
        S: Store,
    {
        #[pin]
        kind: Kind<B>,
        guard: Guard<S>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { data: Option<Bytes> },
    }
}

impl<B, S: Store> RateLimitBody<B, S> {
    fn full(data: Bytes) -> Self {
        RateLimitBody {
            kind: Kind::Full { data: Some(data) },
            guard: Guard::new(None, None),
        }
    }

    /// Whether the body still holds a permit (a concurrency slot, or a settlement under way).
    pub fn holds_permit(&self) -> bool {
        self.guard.permit.is_some() || self.guard.settling.is_some()
    }
}

impl<B, S: Store> fmt::Debug for RateLimitBody<B, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitBody")
            .field("made_by_layer", &matches!(self.kind, Kind::Full { .. }))
            .field("holds_permit", &self.holds_permit())
            .finish()
    }
}

impl<B, S> Body for RateLimitBody<B, S>
where
    B: Body,
    B::Data: From<Bytes>,
    S: Store,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d.into())))),
            KindProj::Inner { mut body } => match ready!(body.as_mut().poll_frame(cx)) {
                None => {
                    ready!(this.guard.finish(cx));
                    Poll::Ready(None)
                }
                Some(Err(e)) => {
                    // A failed stream is over; a commit still pending finishes when the body
                    // is dropped.
                    let _ = this.guard.finish(cx);
                    Poll::Ready(Some(Err(e)))
                }
                Some(Ok(frame)) => {
                    if body.is_end_stream() {
                        // Release now: the caller may never poll again after the last frame.
                        let _ = this.guard.finish(cx);
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// Adds the rate-limit headers of `decision`, replacing headers of the same name.
fn add_headers(map: &mut HeaderMap, decision: &Decision, style: Option<HeaderStyle>) {
    let pairs = match style {
        Some(style) => headers::headers(decision, style),
        None => headers::retry_headers(decision),
    };
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::try_from(value),
        ) {
            map.insert(name, value);
        }
    }
}

/// The response to a request the limiter did not admit.
fn refusal<B, S: Store>(decision: &Decision, config: Config) -> Response<RateLimitBody<B, S>> {
    let (status, kind) = match decision.outcome() {
        // `Allowed` never comes here.
        Outcome::Denied | Outcome::Allowed => {
            (StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded")
        }
        Outcome::TooLarge => (config.too_large, "request_too_large"),
        // No rule covers the request and the policy denies such requests.
        Outcome::Unmatched => (StatusCode::FORBIDDEN, "not_covered"),
        // The store is full, or failing under a rule that fails closed: not the caller's doing.
        Outcome::StoreFull | Outcome::Unavailable => {
            (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable")
        }
    };
    let mut body = format!("{{\"error\":{{\"type\":\"{kind}\"");
    if let Some(reason) = decision.reason() {
        body.push_str(&format!(
            ",\"reason\":\"{}\",\"code\":\"{}\"",
            reason.code(),
            reason.error_code()
        ));
    }
    body.push_str(",\"message\":");
    json_string(&mut body, &decision.to_string());
    if let Some(retry) = decision.retry_after() {
        body.push_str(&format!(",\"retry_after_ms\":{}", retry.as_millis()));
    }
    body.push_str("}}");
    let mut response = json_response(status, body);
    add_headers(response.headers_mut(), decision, config.style);
    response.extensions_mut().insert(decision.clone());
    response
}

/// The response to a request the store failed on (when not failing open).
fn unavailable<B, S: Store>(failure: LimiterFailure) -> Response<RateLimitBody<B, S>> {
    // The store's error is not shown to clients: it may name internal addresses.
    let body = "{\"error\":{\"type\":\"service_unavailable\",\"reason\":\"store_unavailable\",\
                \"message\":\"the rate limiter is unavailable\"}}";
    let mut response = json_response(StatusCode::SERVICE_UNAVAILABLE, body.to_owned());
    response.extensions_mut().insert(failure);
    response
}

fn json_response<B, S: Store>(status: StatusCode, body: String) -> Response<RateLimitBody<B, S>> {
    let mut response = Response::new(RateLimitBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Appends `s` as a JSON string literal.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        json_string(&mut s, "rule \"a\\b\"\n\u{1}é");
        assert_eq!(s, r#""rule \"a\\b\"\n\u0001é""#);
    }

    #[test]
    fn actual_cost_handles_share_the_value() {
        let a = ActualCost::new();
        let b = a.clone();
        assert_eq!(a.get(), None);
        b.set(Cost::tokens(7));
        assert_eq!(a.get(), Some(Cost::tokens(7)));
        assert_eq!(ActualCost::from(Cost::ONE).get(), Some(Cost::ONE));
    }
}
