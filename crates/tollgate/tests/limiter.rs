//! The admission rules, end to end through `Limiter` and the memory store, on a manual clock.

use std::time::Duration;

use tollgate::{
    Algorithm, AtCapacity, Cost, DenyReason, LimitKind, LimitSpec, Limiter, ManualClock,
    MemoryStore, Outcome, Policy, Rule, Subject, Timestamp, Window,
};

const T0: Timestamp = Timestamp::from_secs(1_700_000_000);

fn limiter(rules: Vec<tollgate::policy::RuleBuilder>) -> (Limiter, ManualClock) {
    let clock = ManualClock::new(T0);
    let mut b = Policy::builder();
    for r in rules {
        b = b.rule(r);
    }
    (
        Limiter::with_clock(b.build().unwrap(), clock.clone()),
        clock,
    )
}

fn rpm_tpm(rpm: u64, tpm: u64) -> tollgate::policy::RuleBuilder {
    Rule::builder("gateway")
        .per("tenant")
        .per("provider")
        .limit(LimitSpec::new(LimitKind::Requests, rpm, Window::MINUTE))
        .limit(LimitSpec::new(LimitKind::Tokens, tpm, Window::MINUTE))
}

fn acme() -> Subject<'static> {
    Subject::new().tenant("acme").provider("openai")
}

#[tokio::test]
async fn a_denial_spends_from_no_limit() {
    let (l, _) = limiter(vec![rpm_tpm(10, 1000)]);
    assert!(l
        .check(&acme(), Cost::tokens(900))
        .await
        .unwrap()
        .is_allowed());
    let d = l.check(&acme(), Cost::tokens(200)).await.unwrap();
    assert_eq!(d.outcome(), Outcome::Denied);
    assert_eq!(d.reason(), Some(DenyReason::Tokens));
    assert_eq!(d.reason().unwrap().error_code(), "E4405");
    let usage = l.usage(&acme()).await.unwrap();
    // The requests limit admitted the denied call but was not charged for it.
    assert_eq!(usage[0].kind, LimitKind::Requests);
    assert_eq!(usage[0].used, 1);
    assert_eq!(usage[1].used, 900);
}

#[tokio::test]
async fn retry_after_is_exact() {
    let (l, clock) = limiter(vec![rpm_tpm(60, 100_000)]);
    for _ in 0..60 {
        assert!(l
            .check(&acme(), Cost::tokens(10))
            .await
            .unwrap()
            .is_allowed());
    }
    let d = l.check(&acme(), Cost::tokens(10)).await.unwrap();
    assert_eq!(d.reason(), Some(DenyReason::Requests));
    assert_eq!(d.reason().unwrap().error_code(), "E4404");
    let retry = d.retry_after().unwrap();
    assert_eq!(retry, Duration::from_secs(1));
    clock.advance(retry - Duration::from_millis(1));
    assert!(!l
        .check(&acme(), Cost::tokens(10))
        .await
        .unwrap()
        .is_allowed());
    clock.advance(Duration::from_micros(999));
    assert!(!l
        .peek(&acme(), Cost::tokens(10))
        .await
        .unwrap()
        .is_allowed());
    clock.advance(Duration::from_micros(1));
    assert!(l
        .check(&acme(), Cost::tokens(10))
        .await
        .unwrap()
        .is_allowed());
}

#[tokio::test]
async fn retry_after_waits_for_the_slowest_limit() {
    let (l, clock) = limiter(vec![rpm_tpm(1, 1000)]);
    assert!(l
        .check(&acme(), Cost::tokens(1000))
        .await
        .unwrap()
        .is_allowed());
    // Requests refill in 60 s; 1000 tokens also take 60 s; 500 take 30 s.
    let d = l.check(&acme(), Cost::tokens(500)).await.unwrap();
    assert_eq!(d.retry_after(), Some(Duration::from_secs(60)));
    assert_eq!(d.denied_by().unwrap().kind, LimitKind::Requests);
    clock.advance(Duration::from_secs(60));
    assert!(l
        .check(&acme(), Cost::tokens(500))
        .await
        .unwrap()
        .is_allowed());
}

#[tokio::test]
async fn a_cost_that_can_never_fit_is_its_own_outcome() {
    let (l, _) = limiter(vec![rpm_tpm(10, 1000)]);
    let d = l.check(&acme(), Cost::tokens(1001)).await.unwrap();
    assert_eq!(d.outcome(), Outcome::TooLarge);
    assert_eq!(d.retry_after(), None);
    assert_eq!(d.reason(), Some(DenyReason::TooLarge));
    assert_eq!(d.denied_by().unwrap().kind, LimitKind::Tokens);
    // Waiting for it returns at once.
    let r = l
        .acquire(&acme(), Cost::tokens(1001), Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(r.decision().outcome(), Outcome::TooLarge);
}

#[tokio::test]
async fn peek_spends_nothing() {
    let (l, _) = limiter(vec![rpm_tpm(1, 1000)]);
    for _ in 0..5 {
        assert!(l.peek(&acme(), Cost::ONE).await.unwrap().is_allowed());
    }
    assert!(l.check(&acme(), Cost::ONE).await.unwrap().is_allowed());
    assert!(!l.peek(&acme(), Cost::ONE).await.unwrap().is_allowed());
}

#[tokio::test]
async fn partitions_overrides_tiers_and_globs() {
    let rule = Rule::builder("per-tenant")
        .per("tenant")
        .when("model", "gpt-4*")
        .limit(LimitSpec::new(LimitKind::Requests, 2, Window::MINUTE))
        .override_when(
            [("tenant", "premium")],
            [LimitSpec::new(LimitKind::Requests, 5, Window::MINUTE)],
        )
        .tier(
            "pro",
            [LimitSpec::new(LimitKind::Requests, 3, Window::MINUTE)],
        )
        .override_when(
            [("tenant", "premium"), ("tier", "pro")],
            [LimitSpec::new(LimitKind::Requests, 7, Window::MINUTE)],
        );
    let (l, _) = limiter(vec![rule]);
    async fn admitted(l: &Limiter, s: &Subject<'_>) -> usize {
        let mut n = 0;
        while l.check(s, Cost::ONE).await.unwrap().is_allowed() {
            n += 1;
        }
        n
    }
    // Models matching the glob share one bucket per tenant.
    let a = Subject::new().tenant("a").model("gpt-4o");
    assert_eq!(admitted(&l, &a).await, 2);
    assert!(!l
        .check(&Subject::new().tenant("a").model("gpt-4-turbo"), Cost::ONE)
        .await
        .unwrap()
        .is_allowed());
    // Another tenant has its own bucket; a non-matching model is not limited at all.
    assert_eq!(
        admitted(&l, &Subject::new().tenant("b").model("gpt-4")).await,
        2
    );
    let other = l
        .check(&Subject::new().tenant("a").model("claude-3"), Cost::ONE)
        .await
        .unwrap();
    assert!(other.is_allowed() && other.statuses().is_empty());
    // An attribute the rule does not name does not partition it.
    assert!(!l
        .check(
            &Subject::new().tenant("a").model("gpt-4o").user("u2"),
            Cost::ONE
        )
        .await
        .unwrap()
        .is_allowed());
    // Overrides: the most specific match wins.
    assert_eq!(
        admitted(&l, &Subject::new().tenant("premium").model("gpt-4")).await,
        5
    );
    assert_eq!(
        admitted(&l, &Subject::new().tenant("c").tier("pro").model("gpt-4")).await,
        3
    );
    assert_eq!(
        admitted(
            &l,
            &Subject::new().tenant("premium").tier("pro").model("gpt-4")
        )
        .await,
        7
    );
    // A subject without the partition attribute does not match the rule.
    assert!(l
        .check(&Subject::new().model("gpt-4"), Cost::ONE)
        .await
        .unwrap()
        .statuses()
        .is_empty());
}

#[tokio::test]
async fn every_matching_rule_applies() {
    let per_tenant = Rule::builder("tenant").per("tenant").limit(LimitSpec::new(
        LimitKind::Requests,
        3,
        Window::MINUTE,
    ));
    let per_provider = Rule::builder("provider")
        .per("provider")
        .limit(LimitSpec::new(LimitKind::Requests, 4, Window::MINUTE));
    let (l, _) = limiter(vec![per_tenant, per_provider]);
    for t in ["a", "a", "a", "b"] {
        let s = Subject::new().tenant(t).provider("openai");
        assert!(l.check(&s, Cost::ONE).await.unwrap().is_allowed());
    }
    let d = l
        .check(&Subject::new().tenant("c").provider("openai"), Cost::ONE)
        .await
        .unwrap();
    assert_eq!(d.denied_by().unwrap().rule, "provider");
    assert_eq!(d.statuses().len(), 2);
}

#[tokio::test]
async fn commit_refunds_or_charges_and_cancel_refunds_all() {
    let (l, clock) = limiter(vec![rpm_tpm(100, 10_000)]);
    let tokens_used = |l: &Limiter| {
        let l = l.clone();
        async move { l.usage(&acme()).await.unwrap()[1].used }
    };
    let mut p = l
        .reserve(&acme(), Cost::tokens(4000))
        .await
        .unwrap()
        .granted()
        .unwrap();
    assert_eq!(tokens_used(&l).await, 4000);
    p.commit(Cost::tokens(2500)).await.unwrap();
    assert_eq!(tokens_used(&l).await, 2500);
    // Settlement is idempotent.
    p.commit(Cost::tokens(100)).await.unwrap();
    p.cancel().await.unwrap();
    assert_eq!(tokens_used(&l).await, 2500);

    let mut p = l
        .reserve(&acme(), Cost::tokens(1000))
        .await
        .unwrap()
        .granted()
        .unwrap();
    p.cancel().await.unwrap();
    assert_eq!(tokens_used(&l).await, 2500);

    // A charge after the fact never fails: the bucket goes into debt.
    let mut p = l
        .reserve(&acme(), Cost::tokens(7000))
        .await
        .unwrap()
        .granted()
        .unwrap();
    p.commit(Cost::tokens(12_500)).await.unwrap();
    let u = l.usage(&acme()).await.unwrap();
    assert_eq!((u[1].used, u[1].available), (15_000, 0));
    let d = l.check(&acme(), Cost::tokens(1)).await.unwrap();
    // 5001 tokens of refill at 10,000 per minute.
    assert_eq!(d.retry_after(), Some(Duration::from_micros(30_006_000)));
    clock.advance(Duration::from_micros(30_006_000));
    assert!(l
        .check(&acme(), Cost::tokens(1))
        .await
        .unwrap()
        .is_allowed());
}

#[tokio::test]
async fn refunds_never_lift_a_bucket_above_its_burst() {
    let (l, clock) = limiter(vec![rpm_tpm(100, 1000)]);
    let mut p = l
        .reserve(&acme(), Cost::tokens(600))
        .await
        .unwrap()
        .granted()
        .unwrap();
    clock.advance(Duration::from_secs(60));
    p.cancel().await.unwrap();
    let u = l.usage(&acme()).await.unwrap();
    assert_eq!((u[1].used, u[1].available), (0, 1000));
    assert!(!l
        .check(&acme(), Cost::tokens(1001))
        .await
        .unwrap()
        .is_allowed());
}

fn with_slots(n: u64) -> tollgate::policy::RuleBuilder {
    Rule::builder("model")
        .per("model")
        .limit(LimitSpec::new(LimitKind::Requests, 1000, Window::MINUTE))
        .limit(LimitSpec::concurrency(n).lease(Duration::from_secs(30)))
}

#[tokio::test]
async fn permits_hold_slots_until_dropped_cancelled_or_committed() {
    let (l, _) = limiter(vec![with_slots(2)]);
    let s = Subject::new().model("gpt-4");
    let mut a = l.reserve(&s, Cost::ONE).await.unwrap().granted().unwrap();
    let b = l.reserve(&s, Cost::ONE).await.unwrap().granted().unwrap();
    let d = l.reserve(&s, Cost::ONE).await.unwrap();
    assert_eq!(d.decision().reason(), Some(DenyReason::Concurrency));
    // check() needs a free slot but does not hold one.
    assert!(!l.check(&s, Cost::ONE).await.unwrap().is_allowed());
    drop(b);
    assert!(l.check(&s, Cost::ONE).await.unwrap().is_allowed());
    let c = l.reserve(&s, Cost::ONE).await.unwrap().granted().unwrap();
    a.cancel().await.unwrap();
    let mut e = l.reserve(&s, Cost::ONE).await.unwrap().granted().unwrap();
    e.commit(Cost::ONE).await.unwrap();
    drop(c);
    assert_eq!(l.usage(&s).await.unwrap()[1].used, 0);
}

#[tokio::test]
async fn a_panicking_holder_releases_its_slot() {
    let (l, _) = limiter(vec![with_slots(1)]);
    let l2 = l.clone();
    let task = tokio::spawn(async move {
        let _p = l2
            .reserve(&Subject::new().model("m"), Cost::ONE)
            .await
            .unwrap()
            .granted()
            .unwrap();
        panic!("the model call failed");
    });
    assert!(task.await.unwrap_err().is_panic());
    assert!(l
        .reserve(&Subject::new().model("m"), Cost::ONE)
        .await
        .unwrap()
        .granted()
        .is_some());
}

#[tokio::test]
async fn a_leaked_permit_loses_its_slot_when_the_lease_expires() {
    let (l, clock) = limiter(vec![with_slots(1)]);
    let s = Subject::new().model("m");
    let p = l.reserve(&s, Cost::ONE).await.unwrap().granted().unwrap();
    std::mem::forget(p);
    let d = l.check(&s, Cost::ONE).await.unwrap();
    assert_eq!(d.retry_after(), Some(Duration::from_secs(30)));
    clock.advance(Duration::from_secs(30));
    assert!(l.reserve(&s, Cost::ONE).await.unwrap().granted().is_some());
}

#[tokio::test]
async fn renewing_a_permit_extends_its_lease() {
    let (l, clock) = limiter(vec![with_slots(1)]);
    let s = Subject::new().model("m");
    let p = l.reserve(&s, Cost::ONE).await.unwrap().granted().unwrap();
    clock.advance(Duration::from_secs(20));
    assert!(p.renew().await.unwrap());
    clock.advance(Duration::from_secs(20));
    assert!(!l.check(&s, Cost::ONE).await.unwrap().is_allowed());
    clock.advance(Duration::from_secs(10));
    assert!(!p.renew().await.unwrap());
}

#[test]
fn threads_and_tasks_on_one_bucket_admit_exactly_the_limit() {
    const LIMIT: u64 = 1000;
    let (l, _) = limiter(vec![Rule::builder("one")
        .per("tenant")
        .limit(LimitSpec::new(LimitKind::Requests, LIMIT, Window::HOUR))]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let admitted: u64 = rt.block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    for _ in 0..50 {
                        if l.check(&Subject::new().tenant("t"), Cost::ONE)
                            .await
                            .unwrap()
                            .is_allowed()
                        {
                            n += 1;
                        }
                        tokio::task::yield_now().await;
                    }
                    n
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    });
    assert_eq!(admitted, LIMIT);
    let std_threads: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let b = tollgate::BlockingLimiter::new(l.clone()).unwrap();
                    (0..500)
                        .filter(|_| {
                            b.check(&Subject::new().tenant("u"), Cost::ONE)
                                .unwrap()
                                .is_allowed()
                        })
                        .count() as u64
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(std_threads, LIMIT);
}

#[tokio::test]
async fn usage_reset_and_reset_rule() {
    let (l, _) = limiter(vec![rpm_tpm(10, 1000)]);
    let other = Subject::new().tenant("other").provider("openai");
    l.check(&acme(), Cost::tokens(300)).await.unwrap();
    l.check(&other, Cost::tokens(300)).await.unwrap();
    let u = l.usage(&acme()).await.unwrap();
    assert_eq!((u[1].used, u[1].capacity, u[1].available), (300, 1000, 700));
    assert_eq!(u[1].reset_after, Duration::from_secs(18));
    l.reset(&acme()).await.unwrap();
    assert_eq!(l.usage(&acme()).await.unwrap()[1].used, 0);
    assert_eq!(l.usage(&other).await.unwrap()[1].used, 300);
    assert_eq!(l.reset_rule("gateway").await.unwrap(), 2);
    assert_eq!(l.usage(&other).await.unwrap()[1].used, 0);
    assert!(matches!(
        l.reset_rule("nope").await,
        Err(tollgate::Error::UnknownRule(_))
    ));
}

#[tokio::test]
async fn stats_count_decisions_and_buckets_per_rule() {
    let (l, _) = limiter(vec![rpm_tpm(1, 1000)]);
    l.check(&acme(), Cost::ONE).await.unwrap();
    l.check(&acme(), Cost::ONE).await.unwrap();
    l.check(&Subject::new().tenant("b").provider("x"), Cost::ONE)
        .await
        .unwrap();
    let s = l.stats();
    assert_eq!((s.allowed, s.denied), (2, 1));
    assert!((s.deny_rate - 1.0 / 3.0).abs() < 1e-9);
    // Two partitions, each with a requests bucket (token buckets spent nothing: still full).
    assert_eq!(s.active_buckets, Some(vec![("gateway", 2)]));
}

#[tokio::test]
async fn full_buckets_are_forgotten() {
    let (l, clock) = limiter(vec![rpm_tpm(10, 1000)]);
    for i in 0..500 {
        let t = format!("t{i}");
        l.check(&Subject::new().tenant(&t).provider("p"), Cost::tokens(5))
            .await
            .unwrap();
    }
    assert_eq!(l.store().len(), 1000);
    clock.advance(Duration::from_secs(61));
    assert_eq!(l.store().sweep(), 1000);
    assert!(l.store().is_empty());
    // Refunding everything (the request too) leaves no state behind either.
    let mut p = l
        .reserve(&acme(), Cost::tokens(5))
        .await
        .unwrap()
        .granted()
        .unwrap();
    assert_eq!(l.store().len(), 2);
    p.cancel().await.unwrap();
    assert!(l.store().is_empty());
}

#[tokio::test]
async fn the_bucket_cap_denies_new_buckets_or_admits_untracked() {
    let policy = Policy::builder()
        .rule(Rule::builder("r").per("tenant").limit(LimitSpec::new(
            LimitKind::Requests,
            1,
            Window::HOUR,
        )))
        .build()
        .unwrap();
    let clock = ManualClock::new(T0);
    let store = MemoryStore::builder()
        .clock(clock.clone())
        .shards(1)
        .max_buckets(3)
        .build();
    let l = Limiter::with_store(policy.clone(), store);
    for t in ["a", "b", "c"] {
        assert!(l
            .check(&Subject::new().tenant(t), Cost::ONE)
            .await
            .unwrap()
            .is_allowed());
    }
    let d = l
        .check(&Subject::new().tenant("d"), Cost::ONE)
        .await
        .unwrap();
    assert_eq!(d.outcome(), Outcome::StoreFull);
    assert_eq!(d.reason(), Some(DenyReason::StoreFull));
    // Existing buckets keep working; once some refill, new ones fit again.
    assert!(!l
        .check(&Subject::new().tenant("a"), Cost::ONE)
        .await
        .unwrap()
        .is_allowed());
    clock.advance(Duration::from_secs(3600));
    assert!(l
        .check(&Subject::new().tenant("d"), Cost::ONE)
        .await
        .unwrap()
        .is_allowed());

    let open = MemoryStore::builder()
        .clock(clock.clone())
        .shards(1)
        .max_buckets(1)
        .at_capacity(AtCapacity::Admit)
        .build();
    let l = Limiter::with_store(policy, open);
    assert!(l
        .check(&Subject::new().tenant("a"), Cost::ONE)
        .await
        .unwrap()
        .is_allowed());
    for _ in 0..3 {
        assert!(l
            .check(&Subject::new().tenant("b"), Cost::ONE)
            .await
            .unwrap()
            .is_allowed());
    }
    assert_eq!(l.store().len(), 1);
}

#[tokio::test]
async fn a_new_policy_keeps_the_state_of_unchanged_limits() {
    let (l, _) = limiter(vec![rpm_tpm(10, 1000)]);
    l.check(&acme(), Cost::tokens(400)).await.unwrap();
    l.set_policy(Policy::builder().rule(rpm_tpm(20, 1000)).build().unwrap());
    let u = l.usage(&acme()).await.unwrap();
    assert_eq!(u[0].used, 0, "the changed requests limit starts afresh");
    assert_eq!(u[1].used, 400, "the unchanged tokens limit keeps its state");
}

#[tokio::test]
async fn time_going_backwards_grants_nothing() {
    let (l, clock) = limiter(vec![rpm_tpm(2, 1000)]);
    l.check(&acme(), Cost::ONE).await.unwrap();
    l.check(&acme(), Cost::ONE).await.unwrap();
    clock.set(Timestamp::from_secs(1_600_000_000));
    assert!(!l.check(&acme(), Cost::ONE).await.unwrap().is_allowed());
}

#[tokio::test]
async fn every_algorithm_serves_a_rule() {
    for algorithm in [
        Algorithm::Gcra,
        Algorithm::SlidingWindow,
        Algorithm::SlidingLog,
        Algorithm::FixedWindow,
    ] {
        let (l, clock) = limiter(vec![Rule::builder("r").per("user").limit(
            LimitSpec::new(LimitKind::Requests, 3, Window::MINUTE).algorithm(algorithm),
        )]);
        let s = Subject::new().user("u");
        for _ in 0..3 {
            assert!(
                l.check(&s, Cost::ONE).await.unwrap().is_allowed(),
                "{algorithm}"
            );
        }
        let d = l.check(&s, Cost::ONE).await.unwrap();
        let retry = d.retry_after().unwrap();
        clock.advance(retry - Duration::from_micros(1));
        assert!(
            !l.check(&s, Cost::ONE).await.unwrap().is_allowed(),
            "{algorithm}"
        );
        clock.advance(Duration::from_micros(1));
        assert!(
            l.check(&s, Cost::ONE).await.unwrap().is_allowed(),
            "{algorithm}"
        );
    }
}

#[tokio::test]
async fn quotas_have_their_own_reason() {
    let (l, _) = limiter(vec![Rule::builder("budget").per("tenant").limit(
        LimitSpec::new(LimitKind::Tokens, 1000, Window::Month).algorithm(Algorithm::FixedWindow),
    )]);
    let s = Subject::new().tenant("t");
    assert!(l.check(&s, Cost::tokens(1000)).await.unwrap().is_allowed());
    let d = l.check(&s, Cost::tokens(1)).await.unwrap();
    assert_eq!(d.reason(), Some(DenyReason::Quota));
    assert_eq!(d.reason().unwrap().error_code(), "E4407");
}

#[tokio::test]
async fn rules_change_at_run_time_and_resets_can_be_scoped() {
    let per_user = Rule::builder("user").per("user").limit(LimitSpec::new(
        LimitKind::Requests,
        1,
        Window::MINUTE,
    ));
    let per_model = Rule::builder("model").per("model").limit(LimitSpec::new(
        LimitKind::Requests,
        10,
        Window::MINUTE,
    ));
    let (l, _) = limiter(vec![per_user, per_model]);
    let alice = Subject::new().user("alice").model("m");
    assert!(l.check(&alice, Cost::ONE).await.unwrap().is_allowed());
    // Give alice more at run time, starting from the loaded rule.
    let policy = l.policy();
    let rule = policy
        .rule("user")
        .unwrap()
        .to_builder()
        .override_when(
            [("user", "alice")],
            [LimitSpec::new(LimitKind::Requests, 3, Window::MINUTE)],
        )
        .build()
        .unwrap();
    l.set_policy(policy.with_rule(rule));
    assert!(l.check(&alice, Cost::ONE).await.unwrap().is_allowed());
    assert_eq!(l.usage(&alice).await.unwrap()[1].used, 2);
    l.reset_in("user", &alice).await.unwrap();
    let u = l.usage(&alice).await.unwrap();
    assert_eq!(
        (u[0].used, u[1].used),
        (0, 2),
        "the shared model bucket keeps its state"
    );
    // A denial travels as an error.
    let d = l
        .check(&Subject::new().user("bob"), Cost::requests(5))
        .await
        .unwrap();
    let e: Box<dyn std::error::Error> = Box::new(d);
    assert!(e.to_string().contains("cost exceeds"), "{e}");
}

#[tokio::test]
async fn a_rule_may_have_only_tiers() {
    let (l, _) = limiter(vec![Rule::builder("tiers").per("tenant").tier(
        "free",
        [LimitSpec::new(LimitKind::Requests, 1, Window::MINUTE)],
    )]);
    let free = Subject::new().tenant("a").tier("free");
    assert!(l.check(&free, Cost::ONE).await.unwrap().is_allowed());
    assert!(!l.check(&free, Cost::ONE).await.unwrap().is_allowed());
    let none = l
        .check(&Subject::new().tenant("a"), Cost::ONE)
        .await
        .unwrap();
    assert!(none.is_allowed() && none.statuses().is_empty());
}

#[tokio::test]
async fn headers_render_from_a_denial() {
    use tollgate::headers::{headers, HeaderStyle};
    let (l, _) = limiter(vec![rpm_tpm(2, 1000)]);
    l.check(&acme(), Cost::tokens(100)).await.unwrap();
    l.check(&acme(), Cost::tokens(100)).await.unwrap();
    let d = l.check(&acme(), Cost::tokens(100)).await.unwrap();
    assert_eq!(d.retry_after(), Some(Duration::from_secs(30)));
    let h: std::collections::HashMap<&str, String> =
        headers(&d, HeaderStyle::Both).into_iter().collect();
    assert_eq!(h["x-ratelimit-limit-requests"], "2");
    assert_eq!(h["x-ratelimit-remaining-requests"], "0");
    assert_eq!(h["x-ratelimit-reset-requests"], "1m0s");
    assert_eq!(h["x-ratelimit-limit-tokens"], "1000");
    // Nothing was spent: the tokens limit still has 800 (its reset, known issue, is reported as
    // if the call had been spent, so it is not asserted here).
    assert_eq!(h["x-ratelimit-remaining-tokens"], "800");
    assert_eq!(h["retry-after"], "30");
    assert_eq!(
        h["ratelimit-policy"],
        "\"gateway.requests\";q=2;qu=\"requests\";w=60, \"gateway.tokens\";q=1000;w=60"
    );
    assert!(
        h["ratelimit"].starts_with("\"gateway.requests\";r=0;t=60, \"gateway.tokens\";r=800;t="),
        "{}",
        h["ratelimit"]
    );
    // An allowed decision has no Retry-After; Retry-After never rounds a wait down.
    let (l, clock) = limiter(vec![rpm_tpm(7, 1000)]);
    for _ in 0..7 {
        l.check(&acme(), Cost::ONE).await.unwrap();
    }
    let ok_headers = headers(
        &l.peek(&Subject::new().tenant("x").provider("y"), Cost::ONE)
            .await
            .unwrap(),
        HeaderStyle::OpenAi,
    );
    assert!(ok_headers.iter().all(|(n, _)| *n != "retry-after"));
    clock.advance(Duration::from_millis(100));
    let d = l.check(&acme(), Cost::ONE).await.unwrap();
    // 8.571429 s - 0.1 s = 8.471429 s: Retry-After says 9.
    assert_eq!(
        tollgate::headers::retry_after_header(&d).as_deref(),
        Some("9")
    );
}

#[tokio::test]
async fn a_check_reports_the_free_slots_it_does_not_take() {
    let (l, _) = limiter(vec![with_slots(3)]);
    let s = Subject::new().model("m");
    let _held = l.reserve(&s, Cost::ONE).await.unwrap().granted().unwrap();
    let d = l.check(&s, Cost::ONE).await.unwrap();
    let slots = d.tightest(LimitKind::Concurrency).unwrap();
    assert_eq!(
        slots.remaining, 2,
        "check() holds no slot: two of three are free"
    );
    let r = l.reserve(&s, Cost::ONE).await.unwrap();
    assert_eq!(
        r.decision()
            .tightest(LimitKind::Concurrency)
            .unwrap()
            .remaining,
        1
    );
}
