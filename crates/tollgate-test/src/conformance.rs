//! The conformance suite: the same scenarios, run against every store.
//!
//! A [`Harness`] makes a limiter for a policy over its store, reading a [`ManualClock`] (the
//! memory store's clock, or a Redis store's time override). Each scenario asserts what users
//! rely on: all-or-nothing admission, exact `retry_after`, distinct outcomes, settlement,
//! concurrency leases, usage and resets, idempotent request ids (only admissions replayed, each
//! id scoped to its subject and cost).
//!
//! ```no_run
//! # async fn run() {
//! use tollgate_test::conformance::{run_all, MemoryHarness};
//! run_all(&MemoryHarness).await;
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use tollgate::store::Store;
use tollgate::{
    Algorithm, Cost, DenyReason, LimitKind, LimitSpec, Limiter, ManualClock, MemoryStore, Outcome,
    Policy, Rule, Subject, Timestamp, Window,
};

/// The start of every scenario's clock: a Monday, midnight UTC (2023-11-13).
pub const T0: Timestamp = Timestamp::from_secs(1_699_833_600);

/// Makes limiters over one kind of store.
pub trait Harness {
    /// The store.
    type S: Store;
    /// A limiter for `policy` whose store reads `clock`. Each call must start from empty buckets.
    fn limiter(&self, policy: Policy, clock: ManualClock)
        -> impl Future<Output = Limiter<Self::S>>;
}

/// The memory store.
#[derive(Debug, Default)]
pub struct MemoryHarness;

impl Harness for MemoryHarness {
    type S = MemoryStore;
    async fn limiter(&self, policy: Policy, clock: ManualClock) -> Limiter<MemoryStore> {
        Limiter::with_store(policy, MemoryStore::with_clock(clock))
    }
}

/// Runs every scenario, panicking with the scenario's name on the first failure.
pub async fn run_all<H: Harness>(h: &H) {
    all_or_nothing(h).await;
    all_or_nothing_across_slots(h).await;
    retry_after_is_exact(h).await;
    a_cost_that_never_fits(h).await;
    peek_spends_nothing(h).await;
    partitions_and_overrides(h).await;
    settlement(h).await;
    deep_debt_stays_debt(h).await;
    concurrency_leases(h).await;
    usage_and_resets(h).await;
    every_algorithm(h).await;
    idempotent_requests(h).await;
    denied_request_ids_are_decided_again(h).await;
    request_ids_are_scoped_to_subject_and_cost(h).await;
}

fn policy(rules: Vec<tollgate::policy::RuleBuilder>) -> Policy {
    let mut b = Policy::builder();
    for r in rules {
        b = b.rule(r);
    }
    b.build().expect("a valid policy")
}

async fn setup<H: Harness>(
    h: &H,
    rules: Vec<tollgate::policy::RuleBuilder>,
) -> (Limiter<H::S>, ManualClock) {
    let clock = ManualClock::new(T0);
    (h.limiter(policy(rules), clock.clone()).await, clock)
}

fn gateway(rpm: u64, tpm: u64) -> tollgate::policy::RuleBuilder {
    Rule::builder("gateway")
        .per("tenant")
        .per("provider")
        .limit(LimitSpec::new(LimitKind::Requests, rpm, Window::MINUTE))
        .limit(LimitSpec::new(LimitKind::Tokens, tpm, Window::MINUTE))
}

fn acme() -> Subject<'static> {
    Subject::new().tenant("acme").provider("openai")
}

/// A denial spends from no limit.
pub async fn all_or_nothing<H: Harness>(h: &H) {
    let (l, _) = setup(h, vec![gateway(10, 1000)]).await;
    assert!(l
        .check(&acme(), Cost::tokens(900))
        .await
        .unwrap()
        .is_allowed());
    let d = l.check(&acme(), Cost::tokens(200)).await.unwrap();
    assert_eq!(d.reason(), Some(DenyReason::Tokens), "all_or_nothing");
    let u = l.usage(&acme()).await.unwrap();
    assert_eq!(
        (u[0].used, u[1].used),
        (1, 900),
        "all_or_nothing: nothing spent on denial"
    );
}

/// Two rules partitioned by different attributes (so, in a cluster, in different slots): when
/// the rule in the later slot denies, the earlier slot's spend is rolled back.
pub async fn all_or_nothing_across_slots<H: Harness>(h: &H) {
    let provider = "openai";
    // A tenant whose bucket's slot comes before the provider's, so the provider is applied last.
    let tenant = (0..)
        .map(|i| format!("tenant-{i}"))
        .find(|t| crate::key_slot(t.as_bytes()) < crate::key_slot(provider.as_bytes()))
        .expect("some tenant hashes below the provider");
    let rules = vec![
        Rule::builder("per-tenant")
            .per("tenant")
            .limit(LimitSpec::new(LimitKind::Requests, 100, Window::MINUTE))
            .limit(LimitSpec::concurrency(5)),
        Rule::builder("per-provider")
            .per("provider")
            .limit(LimitSpec::new(LimitKind::Tokens, 1000, Window::MINUTE)),
    ];
    let (l, _) = setup(h, rules).await;
    let s = Subject::new().tenant(tenant.as_str()).provider(provider);
    let p = l.reserve(&s, Cost::tokens(1000)).await.unwrap();
    assert!(p.decision().is_allowed(), "across slots: first call");
    let d = l.reserve(&s, Cost::tokens(1)).await.unwrap();
    assert_eq!(
        d.decision().denied_by().map(|x| x.rule),
        Some("per-provider"),
        "across slots"
    );
    let u = l.usage(&s).await.unwrap();
    assert_eq!(
        (u[0].used, u[1].used, u[2].used),
        (1, 1, 1000),
        "across slots: the denied call was rolled back"
    );
    drop(p);
}

/// A denied call is admitted at `now + retry_after`, and not a microsecond earlier.
pub async fn retry_after_is_exact<H: Harness>(h: &H) {
    let (l, clock) = setup(h, vec![gateway(7, 100_000)]).await;
    for _ in 0..7 {
        assert!(l
            .check(&acme(), Cost::tokens(10))
            .await
            .unwrap()
            .is_allowed());
    }
    let d = l.check(&acme(), Cost::tokens(10)).await.unwrap();
    let retry = d.retry_after().expect("retry_after_is_exact: a denial");
    // 7 per minute: one every 8.571428... s, rounded up to the microsecond.
    assert_eq!(
        retry,
        Duration::from_micros(8_571_429),
        "retry_after_is_exact"
    );
    clock.advance(retry - Duration::from_micros(1));
    assert!(
        !l.check(&acme(), Cost::tokens(10))
            .await
            .unwrap()
            .is_allowed(),
        "retry_after_is_exact: 1us early"
    );
    clock.advance(Duration::from_micros(1));
    assert!(
        l.check(&acme(), Cost::tokens(10))
            .await
            .unwrap()
            .is_allowed(),
        "retry_after_is_exact: on time"
    );
}

/// A cost above a bucket's capacity is its own outcome.
pub async fn a_cost_that_never_fits<H: Harness>(h: &H) {
    let (l, _) = setup(h, vec![gateway(10, 1000)]).await;
    let d = l.check(&acme(), Cost::tokens(1001)).await.unwrap();
    assert_eq!(d.outcome(), Outcome::TooLarge, "a_cost_that_never_fits");
    assert_eq!(d.retry_after(), None, "a_cost_that_never_fits");
    assert_eq!(
        l.usage(&acme()).await.unwrap()[0].used,
        0,
        "a_cost_that_never_fits: nothing spent"
    );
}

/// Peeking spends nothing.
pub async fn peek_spends_nothing<H: Harness>(h: &H) {
    let (l, _) = setup(h, vec![gateway(1, 1000)]).await;
    for _ in 0..3 {
        assert!(
            l.peek(&acme(), Cost::ONE).await.unwrap().is_allowed(),
            "peek_spends_nothing"
        );
    }
    assert!(l.check(&acme(), Cost::ONE).await.unwrap().is_allowed());
    assert!(
        !l.peek(&acme(), Cost::ONE).await.unwrap().is_allowed(),
        "peek_spends_nothing: sees the spend"
    );
}

/// `*` partitions, globs share, overrides pick the most specific limits.
pub async fn partitions_and_overrides<H: Harness>(h: &H) {
    let rule = Rule::builder("models")
        .per("tenant")
        .when("model", "gpt-4*")
        .limit(LimitSpec::new(LimitKind::Requests, 2, Window::MINUTE))
        .override_when(
            [("tenant", "premium")],
            [LimitSpec::new(LimitKind::Requests, 4, Window::MINUTE)],
        )
        .tier(
            "pro",
            [LimitSpec::new(LimitKind::Requests, 3, Window::MINUTE)],
        );
    let (l, _) = setup(h, vec![rule]).await;
    let admitted = |s: Subject<'static>| {
        let l = l.clone();
        async move {
            let mut n = 0;
            while l.check(&s, Cost::ONE).await.unwrap().is_allowed() {
                n += 1;
                assert!(n < 100, "partitions_and_overrides: runaway");
            }
            n
        }
    };
    assert_eq!(
        admitted(Subject::new().tenant("a").model("gpt-4o")).await,
        2,
        "partitions: default"
    );
    assert_eq!(
        admitted(Subject::new().tenant("a").model("gpt-4-mini")).await,
        0,
        "partitions: glob shares"
    );
    assert_eq!(
        admitted(Subject::new().tenant("b").model("gpt-4")).await,
        2,
        "partitions: per tenant"
    );
    assert_eq!(
        admitted(Subject::new().tenant("premium").model("gpt-4")).await,
        4,
        "partitions: override"
    );
    assert_eq!(
        admitted(Subject::new().tenant("c").tier("pro").model("gpt-4")).await,
        3,
        "partitions: tier"
    );
    let free = l
        .check(&Subject::new().tenant("a").model("claude"), Cost::ONE)
        .await
        .unwrap();
    assert!(
        free.is_allowed() && free.statuses().is_empty(),
        "partitions: no match"
    );
}

/// Commit refunds or charges (into debt); cancel refunds; settlement is idempotent.
pub async fn settlement<H: Harness>(h: &H) {
    let (l, clock) = setup(h, vec![gateway(100, 10_000)]).await;
    let tokens = || {
        let l = l.clone();
        async move { l.usage(&acme()).await.unwrap()[1].used }
    };
    let mut p = l
        .reserve(&acme(), Cost::tokens(4000))
        .await
        .unwrap()
        .granted()
        .expect("settlement: granted");
    p.commit(Cost::tokens(2500)).await.unwrap();
    p.commit(Cost::tokens(1)).await.unwrap();
    assert_eq!(
        tokens().await,
        2500,
        "settlement: refund of the unused estimate, once"
    );
    let mut p = l
        .reserve(&acme(), Cost::tokens(1000))
        .await
        .unwrap()
        .granted()
        .expect("settlement: granted");
    p.cancel().await.unwrap();
    assert_eq!(tokens().await, 2500, "settlement: cancel refunds all");
    let mut p = l
        .reserve(&acme(), Cost::tokens(7000))
        .await
        .unwrap()
        .granted()
        .expect("settlement: granted");
    p.commit(Cost::tokens(12_500)).await.unwrap();
    assert_eq!(
        tokens().await,
        15_000,
        "settlement: a charge goes into debt"
    );
    let d = l.check(&acme(), Cost::tokens(1)).await.unwrap();
    assert_eq!(
        d.retry_after(),
        Some(Duration::from_micros(30_006_000)),
        "settlement: debt delays"
    );
    clock.advance(Duration::from_micros(30_006_000));
    assert!(
        l.check(&acme(), Cost::tokens(1))
            .await
            .unwrap()
            .is_allowed(),
        "settlement: debt repaid"
    );
}

/// Charges never fail, however large: a bucket charged far beyond any time a clock can reach
/// (more than 2^63 microseconds of debt, in charges of the largest size) stays in debt, rather
/// than wrapping round to a bucket that looks full.
pub async fn deep_debt_stays_debt<H: Harness>(h: &H) {
    let rule = Rule::builder("debt").per("tenant").limit(LimitSpec::new(
        LimitKind::Tokens,
        1_000_000,
        Window::MINUTE,
    ));
    let (l, _clock) = setup(h, vec![rule]).await;
    let who = Subject::new().tenant("spender");
    let mut permits = Vec::new();
    for _ in 0..1100 {
        let p = l
            .reserve(&who, Cost::tokens(1))
            .await
            .unwrap()
            .granted()
            .expect("deep debt: granted before any charge");
        permits.push(p);
    }
    // After every charge, not only the last: a debt that wrapped would be rebuilt by the
    // charges after it.
    for (i, p) in permits.iter_mut().enumerate() {
        p.commit(Cost::tokens(u64::MAX)).await.unwrap();
        let d = l.check(&who, Cost::tokens(1)).await.unwrap();
        assert_eq!(
            d.outcome(),
            Outcome::Denied,
            "deep debt: still in debt after {} of the largest charges",
            i + 1
        );
    }
}

/// Permits hold slots until released; a lost holder's slot frees when its lease expires; a
/// renewed lease lives on.
pub async fn concurrency_leases<H: Harness>(h: &H) {
    let rule = Rule::builder("slots")
        .per("model")
        .limit(LimitSpec::concurrency(2).lease(Duration::from_secs(30)));
    let (l, clock) = setup(h, vec![rule]).await;
    let s = Subject::new().model("m");
    let mut a = l
        .reserve(&s, Cost::ONE)
        .await
        .unwrap()
        .granted()
        .expect("leases: first");
    let b = l
        .reserve(&s, Cost::ONE)
        .await
        .unwrap()
        .granted()
        .expect("leases: second");
    let d = l.reserve(&s, Cost::ONE).await.unwrap();
    assert_eq!(
        d.decision().reason(),
        Some(DenyReason::Concurrency),
        "leases: full"
    );
    assert_eq!(
        d.decision().retry_after(),
        Some(Duration::from_secs(30)),
        "leases: frees at expiry"
    );
    a.cancel().await.unwrap();
    let c = l
        .reserve(&s, Cost::ONE)
        .await
        .unwrap()
        .granted()
        .expect("leases: after cancel");
    std::mem::forget(c);
    clock.advance(Duration::from_secs(20));
    assert!(b.renew().await.unwrap(), "leases: renew");
    clock.advance(Duration::from_secs(10));
    // The forgotten permit's lease has expired; the renewed one has not.
    let e = l
        .reserve(&s, Cost::ONE)
        .await
        .unwrap()
        .granted()
        .expect("leases: expired slot reused");
    assert!(
        l.reserve(&s, Cost::ONE).await.unwrap().granted().is_none(),
        "leases: renewed slot held"
    );
    drop(e);
    // Dropping releases (possibly on a task): acquire is woken by the release.
    let again = l
        .acquire(&s, Cost::ONE, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(again.decision().is_allowed(), "leases: drop releases");
    drop(b);
}

/// Usage reports every limit; reset forgets one subject's buckets, reset_rule a whole rule.
pub async fn usage_and_resets<H: Harness>(h: &H) {
    let (l, _) = setup(h, vec![gateway(10, 1000)]).await;
    let other = Subject::new().tenant("other").provider("openai");
    l.check(&acme(), Cost::tokens(300)).await.unwrap();
    l.check(&other, Cost::tokens(300)).await.unwrap();
    let u = l.usage(&acme()).await.unwrap();
    assert_eq!(
        (u[1].used, u[1].capacity, u[1].available),
        (300, 1000, 700),
        "usage"
    );
    assert_eq!(u[1].reset_after, Duration::from_secs(18), "usage: reset");
    l.reset(&acme()).await.unwrap();
    assert_eq!(l.usage(&acme()).await.unwrap()[1].used, 0, "reset");
    assert_eq!(
        l.usage(&other).await.unwrap()[1].used,
        300,
        "reset: others untouched"
    );
    l.reset_rule("gateway").await.unwrap();
    assert_eq!(l.usage(&other).await.unwrap()[1].used, 0, "reset_rule");
}

/// Every algorithm serves a rule, with exact `retry_after`.
pub async fn every_algorithm<H: Harness>(h: &H) {
    for algorithm in [
        Algorithm::Gcra,
        Algorithm::SlidingWindow,
        Algorithm::SlidingLog,
        Algorithm::FixedWindow,
    ] {
        let rule = Rule::builder("alg")
            .per("user")
            .limit(LimitSpec::new(LimitKind::Requests, 3, Window::MINUTE).algorithm(algorithm));
        let (l, clock) = setup(h, vec![rule]).await;
        clock.advance(Duration::from_secs(17));
        let s = Subject::new().user("u");
        for _ in 0..3 {
            assert!(
                l.check(&s, Cost::ONE).await.unwrap().is_allowed(),
                "{algorithm}"
            );
        }
        let retry = l
            .check(&s, Cost::ONE)
            .await
            .unwrap()
            .retry_after()
            .expect("a denial");
        clock.advance(retry - Duration::from_micros(1));
        assert!(
            !l.check(&s, Cost::ONE).await.unwrap().is_allowed(),
            "{algorithm}: early"
        );
        clock.advance(Duration::from_micros(1));
        assert!(
            l.check(&s, Cost::ONE).await.unwrap().is_allowed(),
            "{algorithm}: on time"
        );
    }
    let rule = Rule::builder("monthly").per("tenant").limit(
        LimitSpec::new(LimitKind::Tokens, 1000, Window::Month).algorithm(Algorithm::FixedWindow),
    );
    let (l, clock) = setup(h, vec![rule]).await;
    let s = Subject::new().tenant("t");
    assert!(l.check(&s, Cost::tokens(1000)).await.unwrap().is_allowed());
    let d = l.check(&s, Cost::tokens(1)).await.unwrap();
    assert_eq!(d.reason(), Some(DenyReason::Quota), "monthly quota");
    // 2023-11-13 to 2023-12-01: 18 days.
    assert_eq!(
        d.retry_after(),
        Some(Duration::from_secs(18 * 86_400)),
        "monthly quota resets on the 1st"
    );
    clock.advance(Duration::from_secs(18 * 86_400));
    assert!(
        l.check(&s, Cost::tokens(1000)).await.unwrap().is_allowed(),
        "monthly quota reset"
    );
}

/// A retried check with the same request id is answered again and spends nothing.
pub async fn idempotent_requests<H: Harness>(h: &H) {
    let (l, _) = setup(h, vec![gateway(2, 1000)]).await;
    let first = l
        .check_idempotent(&acme(), Cost::tokens(100), "req-1")
        .await
        .unwrap();
    let again = l
        .check_idempotent(&acme(), Cost::tokens(100), "req-1")
        .await
        .unwrap();
    assert!(first.is_allowed() && again.is_allowed(), "idempotent");
    assert_eq!(
        first.statuses(),
        again.statuses(),
        "idempotent: the same decision"
    );
    assert_eq!(
        l.usage(&acme()).await.unwrap()[1].used,
        100,
        "idempotent: spent once"
    );
    assert!(l
        .check_idempotent(&acme(), Cost::tokens(100), "req-2")
        .await
        .unwrap()
        .is_allowed());
    assert!(!l
        .check_idempotent(&acme(), Cost::tokens(100), "req-3")
        .await
        .unwrap()
        .is_allowed());
    assert!(
        l.check_idempotent(&acme(), Cost::tokens(100), "req-2")
            .await
            .unwrap()
            .is_allowed(),
        "idempotent: replay of an admission"
    );
}

/// A request id whose first attempt was denied is decided again when retried: still denied
/// (with the time left) while the limit is spent, admitted once capacity is back; only then is
/// it replayed.
pub async fn denied_request_ids_are_decided_again<H: Harness>(h: &H) {
    let (l, clock) = setup(h, vec![gateway(2, 1000)]).await;
    for id in ["a", "b"] {
        assert!(l
            .check_idempotent(&acme(), Cost::tokens(10), id)
            .await
            .unwrap()
            .is_allowed());
    }
    let denied = l
        .check_idempotent(&acme(), Cost::tokens(10), "c")
        .await
        .unwrap();
    assert_eq!(denied.outcome(), Outcome::Denied, "denied ids: the limit");
    let wait = denied.retry_after().expect("a denial says when");
    clock.advance(wait / 2);
    let again = l
        .check_idempotent(&acme(), Cost::tokens(10), "c")
        .await
        .unwrap();
    assert_eq!(
        (again.outcome(), again.retry_after()),
        (Outcome::Denied, Some(wait - wait / 2)),
        "denied ids: decided again, not the stale first denial"
    );
    clock.advance(wait - wait / 2);
    let admitted = l
        .check_idempotent(&acme(), Cost::tokens(10), "c")
        .await
        .unwrap();
    assert!(
        admitted.is_allowed(),
        "denied ids: admitted once capacity is back: {admitted:?}"
    );
    let used = l.usage(&acme()).await.unwrap()[1].used;
    let replay = l
        .check_idempotent(&acme(), Cost::tokens(10), "c")
        .await
        .unwrap();
    assert!(replay.is_allowed(), "denied ids: the admission is replayed");
    assert_eq!(
        l.usage(&acme()).await.unwrap()[1].used,
        used,
        "denied ids: the replay spent nothing"
    );
}

/// What `subject` has used of `rule`'s limit of `kind`.
async fn used<S: tollgate::store::Store>(
    l: &Limiter<S>,
    subject: &Subject<'_>,
    rule: &str,
    kind: LimitKind,
) -> u64 {
    l.usage(subject)
        .await
        .unwrap()
        .iter()
        .find(|u| u.rule == rule && u.kind == kind)
        .map_or_else(|| panic!("no {rule} {kind} limit applies"), |u| u.used)
}

/// A request id is scoped to its subject and cost: another tenant, or another cost, sending
/// the same id is a new decision, charged on its own, even where the two share every bucket;
/// never someone else's answer.
pub async fn request_ids_are_scoped_to_subject_and_cost<H: Harness>(h: &H) {
    let global =
        Rule::builder("global").limit(LimitSpec::new(LimitKind::Requests, 100, Window::MINUTE));
    let (l, _) = setup(h, vec![gateway(10, 10_000), global]).await;
    let t1 = Subject::new().tenant("t1").provider("openai");
    let t2 = Subject::new().tenant("t2").provider("openai");
    let tokens = LimitKind::Tokens;
    assert!(l
        .check_idempotent(&t1, Cost::tokens(100), "shared-id")
        .await
        .unwrap()
        .is_allowed());
    assert!(l
        .check_idempotent(&t2, Cost::tokens(100), "shared-id")
        .await
        .unwrap()
        .is_allowed());
    assert_eq!(
        used(&l, &t2, "gateway", tokens).await,
        100,
        "scoped ids: another tenant's same id is its own decision, charged to it"
    );
    assert_eq!(used(&l, &t1, "gateway", tokens).await, 100);
    assert!(l
        .check_idempotent(&t1, Cost::tokens(300), "shared-id")
        .await
        .unwrap()
        .is_allowed());
    assert_eq!(
        used(&l, &t1, "gateway", tokens).await,
        400,
        "scoped ids: the same id with another cost is another request"
    );
    assert!(l
        .check_idempotent(&t1, Cost::tokens(100), "shared-id")
        .await
        .unwrap()
        .is_allowed());
    assert_eq!(
        used(&l, &t1, "gateway", tokens).await,
        400,
        "scoped ids: the first request again is replayed"
    );
    // Two subjects that share every bucket (only the global rule applies to them).
    let a = Subject::new().user("a");
    let b = Subject::new().user("b");
    for s in [&a, &b] {
        assert!(l
            .check_idempotent(s, Cost::ONE, "same")
            .await
            .unwrap()
            .is_allowed());
    }
    assert_eq!(
        used(&l, &a, "global", LimitKind::Requests).await,
        5,
        "scoped ids: subjects sharing every bucket still make two requests"
    );
}
