//! `admit_now` and `admit_prepared_now` answer an `Admission` instead of a `Decision`. They
//! must make the same decision as `check_now` (the same outcome, retry_after and denying
//! limit), spend the same and count the same, on the one-operation path and on the general one.

use std::time::Duration;

use futures::FutureExt;
use tollgate::{
    Admission, Algorithm, AtCapacity, Cost, Decision, DenyReason, LimitKind, LimitSpec, Limiter,
    ManualClock, MemoryStore, Outcome, Policy, Prepared, Rule, Subject, Timestamp, Window,
};

const T0: Timestamp = Timestamp::from_secs(1_700_000_000);
const TENANTS: u64 = 5;

/// One tokens limit per tenant: every decision takes the one-operation path.
fn one_limit() -> Policy {
    Policy::builder()
        .rule(
            Rule::builder("per-tenant")
                .per("tenant")
                .limit(LimitSpec::new(LimitKind::Tokens, 1_000, Window::MINUTE).burst(1_500)),
        )
        .build()
        .expect("a valid policy")
}

/// Requests and tokens per minute, a daily token quota in a fixed window and a per-tenant
/// sliding-window cap: every decision takes the general path.
fn many_limits() -> Policy {
    Policy::builder()
        .rule(
            Rule::builder("per-tenant")
                .per("tenant")
                .limit(LimitSpec::new(LimitKind::Requests, 30, Window::MINUTE))
                .limit(LimitSpec::new(LimitKind::Tokens, 1_000, Window::MINUTE))
                .limit(
                    LimitSpec::new(LimitKind::Tokens, 20_000, Window::DAY)
                        .algorithm(Algorithm::FixedWindow),
                ),
        )
        .rule(Rule::builder("per-tenant-hour").per("tenant").limit(
            LimitSpec::new(LimitKind::Requests, 100, Window::HOUR).algorithm(Algorithm::SlidingLog),
        ))
        .build()
        .expect("a valid policy")
}

/// A limiter on `clock` whose store holds at most `cap` buckets.
fn limiter(policy: Policy, clock: &ManualClock, cap: usize, at_capacity: AtCapacity) -> Limiter {
    let store = MemoryStore::builder()
        .clock(clock.clone())
        .shards(1)
        .max_buckets(cap)
        .at_capacity(at_capacity)
        .build();
    Limiter::with_store(policy, store)
}

/// Runs the same calls through `check_now`, `admit_now` and `admit_prepared_now` on three
/// limiters sharing one clock, asserting at every step that the admissions are the decision's;
/// returns the admissions seen.
fn run(policy: fn() -> Policy, cap: usize, at_capacity: AtCapacity) -> Vec<Admission> {
    let clock = ManualClock::new(T0);
    let checking = limiter(policy(), &clock, cap, at_capacity);
    let admitting = limiter(policy(), &clock, cap, at_capacity);
    let by_prepared = limiter(policy(), &clock, cap, at_capacity);
    let tenants: Vec<String> = (0..TENANTS).map(|i| format!("t{i}")).collect();
    let prepared: Vec<Prepared> = tenants
        .iter()
        .map(|t| by_prepared.prepare(&Subject::new().tenant(t.as_str())))
        .collect();
    let mut seen = Vec::new();
    for step in 0..600u64 {
        let i = usize::try_from(step % TENANTS).expect("a small index");
        let who = Subject::new().tenant(tenants[i].as_str());
        // Mostly costs that fit, some above every burst (too large), some zero.
        let cost = Cost::tokens(match step % 13 {
            0 => 20_000,
            1 => 0,
            _ => (step * 97) % 900,
        });
        let decision: Decision = checking
            .check_now(&who, cost)
            .expect("memory decides at once")
            .expect("memory does not fail");
        let admission = admitting
            .admit_now(&who, cost)
            .expect("memory decides at once")
            .expect("memory does not fail");
        let prepared_admission = by_prepared
            .admit_prepared_now(&prepared[i], cost)
            .expect("memory decides at once")
            .expect("memory does not fail");
        let expected = Admission::from(&decision);
        assert_eq!(admission, expected, "step {step}: {who}, {cost:?}");
        assert_eq!(prepared_admission, expected, "step {step}: prepared {who}");
        assert_eq!(admission.retry_after(), decision.retry_after());
        assert_eq!(admission.reason(), decision.reason());
        if let (Some(a), Some(d)) = (admission.denied_by(), decision.denied_by()) {
            assert_eq!((a.rule, a.label, a.kind), (d.rule, d.label, d.kind));
        }
        seen.push(admission);
        clock.advance(Duration::from_millis((step * 131) % 9_000));
    }
    assert_eq!(checking.stats(), admitting.stats(), "counted alike");
    assert_eq!(checking.stats(), by_prepared.stats(), "counted alike");
    assert_eq!(checking.store().len(), admitting.store().len());
    assert_eq!(checking.store().len(), by_prepared.store().len());
    seen
}

fn outcomes(seen: &[Admission]) -> Vec<Outcome> {
    seen.iter().map(Admission::outcome).collect()
}

#[test]
fn one_limit_admissions_are_the_decisions() {
    let seen = outcomes(&run(one_limit, 3, AtCapacity::Deny));
    for outcome in [
        Outcome::Allowed,
        Outcome::Denied,
        Outcome::TooLarge,
        Outcome::StoreFull,
    ] {
        assert!(seen.contains(&outcome), "{outcome:?} never happened");
    }
    let untracked = outcomes(&run(one_limit, 3, AtCapacity::Admit));
    assert!(!untracked.contains(&Outcome::StoreFull));
    assert!(untracked.contains(&Outcome::Denied));
}

#[test]
fn many_limit_admissions_are_the_decisions() {
    let seen = run(many_limits, 1_000, AtCapacity::Deny);
    let reasons: Vec<Option<DenyReason>> = seen.iter().map(Admission::reason).collect();
    for reason in [
        None,
        Some(DenyReason::Tokens),
        Some(DenyReason::Quota),
        Some(DenyReason::TooLarge),
    ] {
        assert!(reasons.contains(&reason), "{reason:?} never happened");
    }
    let full = outcomes(&run(many_limits, 3, AtCapacity::Deny));
    assert!(full.contains(&Outcome::StoreFull));
}

/// A denial's retry_after is exact: the same call is denied a microsecond before it and
/// admitted at it.
#[test]
fn an_admissions_retry_after_is_exact() {
    let clock = ManualClock::new(T0);
    let l = limiter(one_limit(), &clock, 100, AtCapacity::Deny);
    let who = Subject::new().tenant("acme");
    let spend = |c: u64| l.admit_now(&who, Cost::tokens(c)).unwrap().unwrap();
    assert!(spend(1_500).is_allowed());
    let denied = spend(700);
    assert_eq!(denied.outcome(), Outcome::Denied);
    let denier = denied.denied_by().expect("a denying limit");
    assert_eq!(
        (denier.rule, denier.kind),
        ("per-tenant", LimitKind::Tokens)
    );
    assert!(!denier.quota);
    let wait = denied.retry_after().expect("a denial waits");
    assert_eq!(
        wait,
        Duration::from_secs(42),
        "700 tokens at 1,000 a minute"
    );
    clock.advance(wait - Duration::from_micros(1));
    assert!(!spend(700).is_allowed());
    clock.advance(Duration::from_micros(1));
    assert!(spend(700).is_allowed());
}

/// The async `admit` and `admit_prepared` answer what the synchronous ones do.
#[test]
fn the_async_admissions_answer_the_same() {
    let clock = ManualClock::new(T0);
    let l = limiter(one_limit(), &clock, 100, AtCapacity::Deny);
    let who = Subject::new().tenant("acme");
    let p = l.prepare(&who);
    let a = l.admit(&who, Cost::tokens(1_000)).now_or_never().unwrap();
    assert!(a.unwrap().is_allowed());
    let b = l
        .admit_prepared(&p, Cost::tokens(1_000))
        .now_or_never()
        .unwrap()
        .unwrap();
    assert_eq!(b.outcome(), Outcome::Denied);
    assert_eq!(b.retry_after(), Some(Duration::from_secs(30)));
}
