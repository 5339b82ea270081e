//! The tower layer: real tower services, and axum served by hyper over loopback sockets. Time
//! is a `ManualClock` (or tokio's paused clock for waiting); no test sleeps for a window.
#![cfg(feature = "tower")]

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::SinkExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tollgate::key::BucketName;
use tollgate::store::{Mode, Op, Route, Settlement, Store, StoreOutcome};
use tollgate::tower::{ActualCost, LimiterFailure, RateLimitLayer};
use tollgate::{
    Cost, Decision, LimitKind, LimitSpec, Limiter, ManualClock, MemoryStore, Policy, Rule,
    StoreError, Subject, Timestamp, TokioClock, Window,
};
use tower::{service_fn, Layer, Service, ServiceExt};

const START: Timestamp = Timestamp::from_secs(1_700_000_000);

fn policy(rule: tollgate::policy::RuleBuilder) -> Policy {
    Policy::builder().rule(rule).build().unwrap()
}

fn manual(rule: tollgate::policy::RuleBuilder) -> (Limiter, ManualClock) {
    let clock = ManualClock::new(START);
    (Limiter::with_clock(policy(rule), clock.clone()), clock)
}

/// The tenant from `x-tenant`, the token estimate from `x-tokens`.
fn classify<B>(req: &Request<B>) -> (Subject<'static>, Cost) {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let tenant = header("x-tenant").unwrap_or("anonymous").to_owned();
    let tokens = header("x-tokens").and_then(|v| v.parse().ok()).unwrap_or(0);
    (Subject::new().tenant(tenant), Cost::tokens(tokens))
}

fn request(tenant: &str, tokens: u64) -> Request<Full<Bytes>> {
    Request::builder()
        .uri("/v1/chat/completions")
        .header("x-tenant", tenant)
        .header("x-tokens", tokens.to_string())
        .body(Full::default())
        .unwrap()
}

fn header<B>(res: &Response<B>, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn text<B>(body: B) -> String
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// An inner service that counts its calls and answers "ok".
fn counting(
    calls: &Arc<AtomicUsize>,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    let calls = Arc::clone(calls);
    service_fn(move |_req: Request<Full<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async {
            let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
            res.headers_mut()
                .insert("x-upstream", "yes".parse().unwrap());
            Ok::<_, Infallible>(res)
        }
    })
}

fn requests_per_minute(n: u64) -> tollgate::policy::RuleBuilder {
    Rule::builder("rpm")
        .per("tenant")
        .limit(LimitSpec::new(LimitKind::Requests, n, Window::MINUTE))
}

#[tokio::test]
async fn denial_answers_429_with_headers_and_retry_after_without_calling_inner() {
    let (limiter, clock) = manual(requests_per_minute(2));
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = RateLimitLayer::new(limiter, classify::<Full<Bytes>>).layer(counting(&calls));

    for _ in 0..2 {
        let res = svc.clone().oneshot(request("acme", 0)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = svc.clone().oneshot(request("acme", 0)).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the inner service is not called"
    );
    // Two per minute: the next one frees up 30 s after the first.
    assert_eq!(header(&res, "retry-after").as_deref(), Some("30"));
    assert_eq!(
        header(&res, "x-ratelimit-limit-requests").as_deref(),
        Some("2")
    );
    assert_eq!(
        header(&res, "x-ratelimit-remaining-requests").as_deref(),
        Some("0")
    );
    assert_eq!(
        header(&res, "x-ratelimit-reset-requests").as_deref(),
        Some("1m0s")
    );
    assert_eq!(
        header(&res, "ratelimit-policy").as_deref(),
        Some(r#""rpm.requests";q=2;qu="requests";w=60"#)
    );
    assert_eq!(
        header(&res, "ratelimit").as_deref(),
        Some(r#""rpm.requests";r=0;t=60"#)
    );
    assert_eq!(
        header(&res, "content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(header(&res, "x-upstream"), None);
    let decision = res.extensions().get::<Decision>().unwrap().clone();
    assert_eq!(decision.retry_after(), Some(Duration::from_secs(30)));
    let body = text(res.into_body()).await;
    assert!(
        body.starts_with(
            r#"{"error":{"type":"rate_limit_exceeded","reason":"requests","code":"E4404","message":"denied by rule \"rpm\""#
        ),
        "{body}"
    );
    assert!(body.ends_with(r#","retry_after_ms":30000}}"#), "{body}");

    // Another tenant has its own bucket.
    let res = svc.clone().oneshot(request("other", 0)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // Retry-After is exact: a second early is still refused, on time is admitted.
    clock.advance(Duration::from_secs(29));
    let res = svc.clone().oneshot(request("acme", 0)).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "retry-after").as_deref(), Some("1"));
    clock.advance(Duration::from_secs(1));
    let res = svc.clone().oneshot(request("acme", 0)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn success_adds_headers_to_the_inner_response() {
    let (limiter, _clock) = manual(
        Rule::builder("per-tenant")
            .per("tenant")
            .limit(LimitSpec::new(LimitKind::Requests, 10, Window::MINUTE))
            .limit(LimitSpec::new(LimitKind::Tokens, 1_000, Window::MINUTE)),
    );
    // The inner service sees the granting decision and a handle for the actual cost.
    let svc = RateLimitLayer::new(limiter, classify::<Full<Bytes>>).layer(service_fn(
        |req: Request<Full<Bytes>>| async move {
            let d = req.extensions().get::<Decision>().unwrap();
            assert!(d.is_allowed());
            assert!(req.extensions().get::<ActualCost>().is_some());
            let mut res = Response::new(Full::new(Bytes::from_static(b"hello")));
            res.headers_mut()
                .insert("x-ratelimit-remaining-tokens", "999999".parse().unwrap());
            res.headers_mut()
                .insert("x-upstream", "yes".parse().unwrap());
            Ok::<_, Infallible>(res)
        },
    ));

    let res = svc.oneshot(request("acme", 300)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "x-upstream").as_deref(), Some("yes"));
    assert_eq!(
        header(&res, "x-ratelimit-limit-requests").as_deref(),
        Some("10")
    );
    assert_eq!(
        header(&res, "x-ratelimit-remaining-requests").as_deref(),
        Some("9")
    );
    assert_eq!(
        header(&res, "x-ratelimit-limit-tokens").as_deref(),
        Some("1000")
    );
    // The layer's headers replace the inner service's.
    assert_eq!(
        header(&res, "x-ratelimit-remaining-tokens").as_deref(),
        Some("700")
    );
    assert_eq!(
        header(&res, "x-ratelimit-reset-tokens").as_deref(),
        Some("18s")
    );
    assert_eq!(
        header(&res, "ratelimit").as_deref(),
        Some(r#""per-tenant.requests";r=9;t=6, "per-tenant.tokens";r=700;t=18"#)
    );
    assert_eq!(header(&res, "retry-after"), None);
    assert!(res.extensions().get::<Decision>().unwrap().is_allowed());
    assert_eq!(text(res.into_body()).await, "hello");
}

#[tokio::test]
async fn header_style_none_keeps_only_retry_after() {
    let (limiter, _clock) = manual(requests_per_minute(1));
    let svc = RateLimitLayer::new(limiter, classify::<Full<Bytes>>)
        .header_style(None)
        .layer(counting(&Arc::new(AtomicUsize::new(0))));
    let ok = svc.clone().oneshot(request("a", 0)).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(!ok
        .headers()
        .keys()
        .any(|k| k.as_str().contains("ratelimit")));
    let denied = svc.oneshot(request("a", 0)).await.unwrap();
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&denied, "retry-after").as_deref(), Some("60"));
    assert_eq!(header(&denied, "retry-after-ms").as_deref(), Some("60000"));
    assert!(!denied
        .headers()
        .keys()
        .any(|k| k.as_str().contains("ratelimit")));
}

#[tokio::test]
async fn too_large_answers_413_by_default_or_429_without_retry_after() {
    let rule = || {
        Rule::builder("tpm").per("tenant").limit(LimitSpec::new(
            LimitKind::Tokens,
            1_000,
            Window::MINUTE,
        ))
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let (limiter, _clock) = manual(rule());
    let svc = RateLimitLayer::new(limiter, classify::<Full<Bytes>>).layer(counting(&calls));
    let res = svc.oneshot(request("a", 5_000)).await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(header(&res, "retry-after"), None);
    assert_eq!(header(&res, "x-should-retry").as_deref(), Some("false"));
    assert_eq!(
        header(&res, "x-ratelimit-limit-tokens").as_deref(),
        Some("1000")
    );
    let body = text(res.into_body()).await;
    assert!(
        body.starts_with(
            r#"{"error":{"type":"request_too_large","reason":"too_large","code":"E4413""#
        ),
        "{body}"
    );
    assert!(!body.contains("retry_after_ms"), "{body}");

    let (limiter, _clock) = manual(rule());
    let svc = RateLimitLayer::new(limiter, classify::<Full<Bytes>>)
        .too_large_status(StatusCode::TOO_MANY_REQUESTS)
        .layer(counting(&calls));
    let res = svc.oneshot(request("a", 5_000)).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "retry-after"), None);
    assert_eq!(header(&res, "x-should-retry").as_deref(), Some("false"));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unmatched_subjects_pass_unlimited_without_headers() {
    let (limiter, _clock) = manual(requests_per_minute(1).when("tier", "free"));
    let svc = RateLimitLayer::new(limiter, classify::<Full<Bytes>>)
        .layer(counting(&Arc::new(AtomicUsize::new(0))));
    for _ in 0..3 {
        let res = svc.clone().oneshot(request("a", 0)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(!res
            .headers()
            .keys()
            .any(|k| k.as_str().contains("ratelimit")));
    }
}

#[tokio::test(start_paused = true)]
async fn max_wait_waits_for_admission_on_tokio_time() {
    let clock = TokioClock::starting_at(START);
    let limiter = Limiter::with_store(
        policy(Rule::builder("rps").per("tenant").limit(LimitSpec::new(
            LimitKind::Requests,
            1,
            Window::SECOND,
        ))),
        MemoryStore::with_clock(clock),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = RateLimitLayer::new(limiter, classify::<Full<Bytes>>);
    let waiting = layer
        .clone()
        .max_wait(Duration::from_secs(2))
        .layer(counting(&calls));
    let impatient = layer.layer(counting(&calls));

    let start = tokio::time::Instant::now();
    assert_eq!(
        waiting
            .clone()
            .oneshot(request("a", 0))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        impatient.oneshot(request("a", 0)).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(
        waiting.oneshot(request("a", 0)).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

type Chunks = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;
type Streamed = StreamBody<mpsc::Receiver<Result<Frame<Bytes>, Infallible>>>;

type StreamingService =
    tower::util::BoxCloneService<Request<Full<Bytes>>, Response<Streamed>, Infallible>;

/// An inner service whose responses stream the chunks the test sends through the channel it
/// hands out, one channel per call.
fn streaming() -> (
    StreamingService,
    mpsc::UnboundedReceiver<(Chunks, ActualCost)>,
) {
    let (streams_tx, streams_rx) = mpsc::unbounded();
    let svc = service_fn(move |req: Request<Full<Bytes>>| {
        let (tx, rx) = mpsc::channel(8);
        let actual = req.extensions().get::<ActualCost>().cloned().unwrap();
        streams_tx.unbounded_send((tx, actual)).unwrap();
        async move { Ok::<_, Infallible>(Response::new(StreamBody::new(rx))) }
    });
    let svc = StreamingService::new(svc);
    (svc, streams_rx)
}

fn one_in_flight() -> tollgate::policy::RuleBuilder {
    Rule::builder("inflight")
        .per("tenant")
        .limit(LimitSpec::new(LimitKind::Tokens, 1_000, Window::MINUTE))
        .limit(LimitSpec::concurrency(1))
}

async fn in_flight(limiter: &Limiter) -> u64 {
    let usage = limiter.usage(&Subject::new().tenant("a")).await.unwrap();
    usage
        .iter()
        .find(|u| u.kind == LimitKind::Concurrency)
        .unwrap()
        .used
}

async fn tokens_used(limiter: &Limiter) -> u64 {
    let usage = limiter.usage(&Subject::new().tenant("a")).await.unwrap();
    usage
        .iter()
        .find(|u| u.kind == LimitKind::Tokens)
        .unwrap()
        .used
}

#[tokio::test]
async fn concurrency_slot_is_held_by_the_streamed_body_until_it_ends() {
    let (limiter, _clock) = manual(one_in_flight());
    let (inner, mut streams) = streaming();
    let svc = RateLimitLayer::new(limiter.clone(), classify::<Full<Bytes>>).layer(inner);

    let res = svc.clone().oneshot(request("a", 10)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (mut tx, _actual) = futures::StreamExt::next(&mut streams).await.unwrap();
    let mut body = res.into_body();
    assert!(body.holds_permit());
    tx.send(Ok(Frame::data(Bytes::from_static(b"chunk 1"))))
        .await
        .unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "chunk 1");

    // The response head is out, the body is still streaming: the slot is still taken.
    assert_eq!(in_flight(&limiter).await, 1);
    let denied = svc.clone().oneshot(request("a", 10)).await.unwrap();
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(text(denied.into_body())
        .await
        .contains(r#""reason":"concurrency""#));

    tx.send(Ok(Frame::data(Bytes::from_static(b"chunk 2"))))
        .await
        .unwrap();
    drop(tx);
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "chunk 2");
    assert!(body.frame().await.is_none());
    // Released at the end of the stream, before the body itself is dropped.
    assert!(!body.holds_permit());
    assert_eq!(in_flight(&limiter).await, 0);
    let res = svc.oneshot(request("a", 10)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    drop(body);
}

#[tokio::test]
async fn concurrency_slot_is_released_when_the_body_is_dropped_early() {
    let (limiter, _clock) = manual(one_in_flight());
    let (inner, mut streams) = streaming();
    let svc = RateLimitLayer::new(limiter.clone(), classify::<Full<Bytes>>).layer(inner);

    let res = svc.clone().oneshot(request("a", 10)).await.unwrap();
    let (mut tx, _actual) = futures::StreamExt::next(&mut streams).await.unwrap();
    tx.send(Ok(Frame::data(Bytes::from_static(b"chunk 1"))))
        .await
        .unwrap();
    let mut body = res.into_body();
    body.frame().await.unwrap().unwrap();
    assert_eq!(in_flight(&limiter).await, 1);

    // The client goes away mid-stream.
    drop(body);
    assert_eq!(in_flight(&limiter).await, 0);
    assert!(tx.is_closed());
    let res = svc.oneshot(request("a", 10)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn keep_alive_renews_the_lease_of_a_long_stream() {
    let limiter = || {
        Limiter::with_store(
            policy(
                Rule::builder("inflight")
                    .per("tenant")
                    .limit(LimitSpec::concurrency(1).lease(Duration::from_secs(3))),
            ),
            MemoryStore::with_clock(TokioClock::starting_at(START)),
        )
    };

    // Without renewal, a stream longer than the lease loses its slot.
    let (inner, mut streams) = streaming();
    let plain = RateLimitLayer::new(limiter(), classify::<Full<Bytes>>).layer(inner);
    let held = plain.clone().oneshot(request("a", 0)).await.unwrap();
    let _stream = futures::StreamExt::next(&mut streams).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let res = plain.oneshot(request("a", 0)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "the lease expired");
    drop((held, res));

    // With renewal every second, it keeps it until the body ends.
    let (inner, mut streams) = streaming();
    let limiter = limiter();
    let renewing = RateLimitLayer::new(limiter.clone(), classify::<Full<Bytes>>)
        .keep_alive(Duration::from_secs(1))
        .layer(inner);
    let held = renewing.clone().oneshot(request("a", 0)).await.unwrap();
    let (tx, _actual) = futures::StreamExt::next(&mut streams).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(in_flight(&limiter).await, 1);
    let res = renewing.clone().oneshot(request("a", 0)).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    drop(tx);
    assert!(held.into_body().collect().await.is_ok());
    assert_eq!(in_flight(&limiter).await, 0);
    let res = renewing.oneshot(request("a", 0)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn slot_is_released_when_the_inner_service_fails() {
    let (limiter, _clock) = manual(one_in_flight());
    let svc = RateLimitLayer::new(limiter.clone(), classify::<Full<Bytes>>).layer(service_fn(
        |_req: Request<Full<Bytes>>| async { Err::<Response<Full<Bytes>>, _>("upstream down") },
    ));
    assert_eq!(
        svc.clone().oneshot(request("a", 10)).await.unwrap_err(),
        "upstream down"
    );
    assert_eq!(in_flight(&limiter).await, 0);
    assert_eq!(
        svc.oneshot(request("a", 10)).await.unwrap_err(),
        "upstream down"
    );
}

#[tokio::test]
async fn actual_cost_recorded_during_the_stream_settles_at_its_end() {
    let (limiter, _clock) = manual(one_in_flight());
    let (inner, mut streams) = streaming();
    let svc = RateLimitLayer::new(limiter.clone(), classify::<Full<Bytes>>).layer(inner);

    let res = svc.clone().oneshot(request("a", 500)).await.unwrap();
    let (mut tx, actual) = futures::StreamExt::next(&mut streams).await.unwrap();
    assert_eq!(tokens_used(&limiter).await, 500);
    tx.send(Ok(Frame::data(Bytes::from_static(b"data: ..."))))
        .await
        .unwrap();
    // The upstream's last chunk reports the usage.
    actual.set(Cost::tokens(120));
    drop(tx);
    assert_eq!(text(res.into_body()).await, "data: ...");
    assert_eq!(tokens_used(&limiter).await, 120);
    assert_eq!(in_flight(&limiter).await, 0);

    // Recorded, then dropped early: settled all the same.
    let res = svc.clone().oneshot(request("a", 500)).await.unwrap();
    let (_tx, actual) = futures::StreamExt::next(&mut streams).await.unwrap();
    assert_eq!(tokens_used(&limiter).await, 620);
    actual.set(Cost::tokens(30));
    drop(res);
    assert_eq!(tokens_used(&limiter).await, 150);
    assert_eq!(in_flight(&limiter).await, 0);

    // Not recorded: the estimate stays spent.
    let res = svc.oneshot(request("a", 100)).await.unwrap();
    drop(res);
    assert_eq!(tokens_used(&limiter).await, 250);
}

#[tokio::test]
async fn actual_cost_in_the_response_extensions_settles_too() {
    let (limiter, _clock) = manual(one_in_flight());
    let svc = RateLimitLayer::new(limiter.clone(), classify::<Full<Bytes>>).layer(service_fn(
        |_req: Request<Full<Bytes>>| async {
            let mut res = Response::new(Full::new(Bytes::from_static(b"{}")));
            res.extensions_mut()
                .insert(ActualCost::from(Cost::tokens(40)));
            Ok::<_, Infallible>(res)
        },
    ));
    let res = svc.oneshot(request("a", 400)).await.unwrap();
    assert_eq!(tokens_used(&limiter).await, 400);
    assert_eq!(text(res.into_body()).await, "{}");
    assert_eq!(tokens_used(&limiter).await, 40);
}

/// A memory store that fails every decision while `failing` is set.
#[derive(Debug)]
struct Flaky {
    inner: MemoryStore,
    failing: Arc<AtomicBool>,
}

impl Store for Flaky {
    type Key = <MemoryStore as Store>::Key;

    fn bucket_key(&self, name: &BucketName<'_>) -> Self::Key {
        self.inner.bucket_key(name)
    }

    async fn decide(
        &self,
        ops: &[Op<Self::Key>],
        mode: Mode,
        lease: tollgate_core::LeaseId,
        request_id: Option<&str>,
    ) -> Result<StoreOutcome, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "redis://10.0.0.7:6379 refused".into(),
            ));
        }
        self.inner.decide(ops, mode, lease, request_id).await
    }

    async fn settle(
        &self,
        items: &[Settlement<Self::Key>],
        route: Route,
    ) -> Result<usize, StoreError> {
        self.inner.settle(items, route).await
    }

    fn settle_now(
        &self,
        items: &[Settlement<Self::Key>],
        route: Route,
    ) -> Option<Result<usize, StoreError>> {
        self.inner.settle_now(items, route)
    }

    async fn usage(
        &self,
        ops: &[Op<Self::Key>],
    ) -> Result<(Timestamp, Vec<tollgate_core::Usage>), StoreError> {
        self.inner.usage(ops).await
    }

    async fn reset(&self, keys: &[Self::Key]) -> Result<(), StoreError> {
        self.inner.reset(keys).await
    }

    async fn reset_rule(&self, rule: &'static str, rule_id: u32) -> Result<u64, StoreError> {
        self.inner.reset_rule(rule, rule_id).await
    }
}

#[tokio::test]
async fn store_errors_answer_503_or_fail_open() {
    let failing = Arc::new(AtomicBool::new(true));
    let store = Flaky {
        inner: MemoryStore::with_clock(ManualClock::new(START)),
        failing: Arc::clone(&failing),
    };
    let limiter = Limiter::with_store(policy(requests_per_minute(1)), store);
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = RateLimitLayer::new(limiter, classify::<Full<Bytes>>);

    let closed = layer.clone().layer(counting(&calls));
    let res = closed.clone().oneshot(request("a", 0)).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(header(&res, "retry-after"), None);
    let failure = res.extensions().get::<LimiterFailure>().unwrap().clone();
    assert!(failure.error().is_transient());
    let body = text(res.into_body()).await;
    assert_eq!(
        body,
        r#"{"error":{"type":"service_unavailable","reason":"store_unavailable","message":"the rate limiter is unavailable"}}"#
    );
    assert!(
        !body.contains("10.0.0.7"),
        "the store's address stays private"
    );

    let open = layer.fail_open(true).layer(counting(&calls));
    for _ in 0..3 {
        let res = open.clone().oneshot(request("a", 0)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.extensions().get::<LimiterFailure>().is_some());
        assert!(!res
            .headers()
            .keys()
            .any(|k| k.as_str().contains("ratelimit")));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // The store recovers: limits apply again.
    failing.store(false, Ordering::SeqCst);
    assert_eq!(
        open.clone()
            .oneshot(request("a", 0))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        open.oneshot(request("a", 0)).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

mod over_sockets {
    //! axum served by hyper on 127.0.0.1, a hyper client on the other end.

    use super::*;
    use axum::body::Body;
    use axum::extract::Extension;
    use axum::routing::get;
    use axum::Router;
    use tokio::net::{TcpListener, TcpStream};

    type Client = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

    async fn serve(router: Router) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    }

    /// A client connection; aborting the returned task closes the socket.
    async fn connect(addr: std::net::SocketAddr) -> (Client, tokio::task::JoinHandle<()>) {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (client, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        (client, task)
    }

    async fn send(addr: std::net::SocketAddr, tenant: &str) -> Response<hyper::body::Incoming> {
        let (mut client, _conn) = connect(addr).await;
        client.send_request(request(tenant, 10)).await.unwrap()
    }

    fn axum_classify(req: &Request<Body>) -> (Subject<'static>, Cost) {
        classify(req)
    }

    #[tokio::test]
    async fn axum_router_429_over_a_real_socket() {
        let (limiter, clock) = manual(requests_per_minute(1));
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let router = Router::new()
            .route(
                "/v1/chat/completions",
                get(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async { "completion" }
                }),
            )
            .layer(RateLimitLayer::new(limiter, axum_classify));
        let addr = serve(router).await;

        let res = send(addr, "acme").await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            header(&res, "x-ratelimit-remaining-requests").as_deref(),
            Some("0")
        );
        assert_eq!(text(res.into_body()).await, "completion");

        let res = send(addr, "acme").await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&res, "retry-after").as_deref(), Some("60"));
        assert_eq!(
            header(&res, "ratelimit").as_deref(),
            Some(r#""rpm.requests";r=0;t=60"#)
        );
        let body = text(res.into_body()).await;
        assert!(body.contains(r#""retry_after_ms":60000"#), "{body}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        clock.advance(Duration::from_secs(60));
        assert_eq!(send(addr, "acme").await.status(), StatusCode::OK);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// A route that streams what the test sends it, and records the actual cost it is told.
    fn streaming_router(
        limiter: Limiter,
    ) -> (
        Router,
        mpsc::UnboundedReceiver<(mpsc::Sender<Bytes>, ActualCost)>,
    ) {
        let (streams_tx, streams_rx) = mpsc::unbounded();
        let router = Router::new()
            .route(
                "/v1/chat/completions",
                get(move |Extension(actual): Extension<ActualCost>| {
                    let (tx, rx) = mpsc::channel::<Bytes>(8);
                    streams_tx.unbounded_send((tx, actual)).unwrap();
                    let stream = futures::StreamExt::map(rx, Ok::<_, Infallible>);
                    async move { Body::from_stream(stream) }
                }),
            )
            .layer(RateLimitLayer::new(limiter, axum_classify));
        (router, streams_rx)
    }

    #[tokio::test]
    async fn streamed_body_holds_the_slot_until_it_ends() {
        let (limiter, _clock) = manual(one_in_flight());
        let (router, mut streams) = streaming_router(limiter.clone());
        let addr = serve(router).await;

        let res = send(addr, "a").await;
        assert_eq!(res.status(), StatusCode::OK);
        let (mut tx, actual) = futures::StreamExt::next(&mut streams).await.unwrap();
        let mut body = res.into_body();
        tx.send(Bytes::from_static(b"data: 1\n\n")).await.unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "data: 1\n\n");

        let denied = send(addr, "a").await;
        assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(text(denied.into_body())
            .await
            .contains(r#""reason":"concurrency""#));

        tx.send(Bytes::from_static(b"data: [DONE]\n\n"))
            .await
            .unwrap();
        actual.set(Cost::tokens(3));
        drop(tx);
        // The server releases the slot before it writes the end of the chunked body.
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(rest, "data: [DONE]\n\n");
        assert_eq!(in_flight(&limiter).await, 0);
        assert_eq!(tokens_used(&limiter).await, 3);
        assert_eq!(send(addr, "a").await.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn client_gone_mid_stream_releases_the_slot() {
        let (limiter, _clock) = manual(one_in_flight());
        let (router, mut streams) = streaming_router(limiter.clone());
        let addr = serve(router).await;

        let (mut client, conn) = connect(addr).await;
        let res = client.send_request(request("a", 10)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let (mut tx, _actual) = futures::StreamExt::next(&mut streams).await.unwrap();
        tx.send(Bytes::from_static(b"data: 1\n\n")).await.unwrap();
        let mut body = res.into_body();
        body.frame().await.unwrap().unwrap();
        assert_eq!(in_flight(&limiter).await, 1);

        // The client disconnects. The server finds out when its next writes fail, and drops
        // the body: the stream's sender sees its receiver gone. Bounded in time, not a window.
        drop(body);
        drop(client);
        conn.abort();
        let gone = tokio::time::timeout(Duration::from_secs(10), async {
            while tx.send(Bytes::from_static(b"data: more\n\n")).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(gone.is_ok(), "the server never dropped the body");
        // Same thread: the body (and its permit) were dropped in one step.
        assert_eq!(in_flight(&limiter).await, 0);
        assert_eq!(send(addr, "a").await.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn fallback_store_failing_closed_answers_503_and_open_passes_degraded() {
    use tollgate::store::fallback::{FallbackConfig, FallbackStore};
    use tollgate::store::FailureMode;

    let limiter = |mode: FailureMode| {
        let clock = ManualClock::new(START);
        let primary = Flaky {
            inner: MemoryStore::with_clock(clock.clone()),
            failing: Arc::new(AtomicBool::new(true)),
        };
        Limiter::with_store(
            policy(requests_per_minute(10).failure_mode(mode)),
            FallbackStore::with_config(primary, FallbackConfig::default(), clock),
        )
    };
    let calls = Arc::new(AtomicUsize::new(0));

    let closed = RateLimitLayer::new(limiter(FailureMode::Closed), classify::<Full<Bytes>>)
        .layer(counting(&calls));
    let res = closed.oneshot(request("a", 0)).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(header(&res, "retry-after"), None);
    assert!(res.extensions().get::<Decision>().unwrap().is_degraded());
    let body = text(res.into_body()).await;
    assert!(
        body.starts_with(
            r#"{"error":{"type":"service_unavailable","reason":"unavailable","code":"E4503""#
        ),
        "{body}"
    );

    let open = RateLimitLayer::new(limiter(FailureMode::Open), classify::<Full<Bytes>>)
        .layer(counting(&calls));
    let res = open.oneshot(request("a", 0)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(res.extensions().get::<Decision>().unwrap().is_degraded());
}
