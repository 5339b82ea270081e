//! A decision of a single GCRA limit takes the store's one-operation path
//! (`Store::decide_one_sync`); the same call with a request id takes the general path (the
//! store's vector of verdicts, turned into a decision limit by limit). Both must give the same
//! decision for every outcome: admitted, denied with its retry_after, too large, and at the
//! store's cap in either of its modes.

use std::time::Duration;

use futures::FutureExt;
use tollgate::{
    AtCapacity, Cost, Decision, LimitKind, LimitSpec, Limiter, ManualClock, MemoryStore, Outcome,
    Policy, Rule, Subject, Timestamp, Window,
};

const T0: Timestamp = Timestamp::from_secs(1_700_000_000);

fn policy() -> Policy {
    Policy::builder()
        .rule(
            Rule::builder("per-tenant")
                .per("tenant")
                .limit(LimitSpec::new(LimitKind::Tokens, 1_000, Window::MINUTE).burst(1_500)),
        )
        .build()
        .expect("a valid policy")
}

/// A limiter whose store holds at most three buckets.
fn limiter(clock: &ManualClock, at_capacity: AtCapacity) -> Limiter {
    let store = MemoryStore::builder()
        .clock(clock.clone())
        .shards(1)
        .max_buckets(3)
        .at_capacity(at_capacity)
        .build();
    Limiter::with_store(policy(), store)
}

/// The outcomes of the sequence, each asserted equal on both paths; the limiters' stats and
/// bucket counts are asserted equal at the end.
fn run(at_capacity: AtCapacity) -> Vec<Outcome> {
    let clock = ManualClock::new(T0);
    let one_path = limiter(&clock, at_capacity);
    let general = limiter(&clock, at_capacity);
    let mut seen = Vec::new();
    for step in 0..400u64 {
        let tenant = format!("t{}", step % 5);
        let who = Subject::new().tenant(tenant.as_str());
        // Mostly costs that fit, some above the burst (too large), some zero.
        let cost = Cost::tokens(match step % 11 {
            0 => 2_000,
            1 => 0,
            _ => (step * 97) % 900,
        });
        let a: Decision = one_path
            .check_now(&who, cost)
            .expect("memory decides at once")
            .expect("memory does not fail");
        let b: Decision = general
            .check_idempotent(&who, cost, &format!("request-{step}"))
            .now_or_never()
            .expect("memory decides at once")
            .expect("memory does not fail");
        assert_eq!(a, b, "step {step}: {who}, {cost:?}");
        seen.push(a.outcome());
        clock.advance(Duration::from_millis((step * 131) % 9_000));
    }
    assert_eq!(one_path.stats(), general.stats(), "both counted alike");
    assert_eq!(one_path.store().len(), general.store().len());
    seen
}

#[test]
fn both_paths_decide_alike_when_the_cap_denies() {
    let seen = run(AtCapacity::Deny);
    for outcome in [
        Outcome::Allowed,
        Outcome::Denied,
        Outcome::TooLarge,
        Outcome::StoreFull,
    ] {
        assert!(seen.contains(&outcome), "{outcome:?} never happened");
    }
}

#[test]
fn both_paths_decide_alike_when_the_cap_admits_untracked() {
    let seen = run(AtCapacity::Admit);
    for outcome in [Outcome::Allowed, Outcome::Denied, Outcome::TooLarge] {
        assert!(seen.contains(&outcome), "{outcome:?} never happened");
    }
    assert!(!seen.contains(&Outcome::StoreFull));
}

/// At the cap with `Admit`, a new tenant is admitted on both paths and tracked on neither.
#[test]
fn at_the_cap_both_paths_admit_untracked() {
    let clock = ManualClock::new(T0);
    let one_path = limiter(&clock, AtCapacity::Admit);
    let general = limiter(&clock, AtCapacity::Admit);
    for i in 0..5 {
        let tenant = format!("t{i}");
        let who = Subject::new().tenant(tenant.as_str());
        let a = one_path.check_now(&who, Cost::tokens(10)).unwrap().unwrap();
        let b = general
            .check_idempotent(&who, Cost::tokens(10), &format!("r{i}"))
            .now_or_never()
            .unwrap()
            .unwrap();
        assert!(a.is_allowed());
        assert_eq!(a, b);
    }
    assert_eq!(one_path.store().len(), 3, "the cap");
    assert_eq!(general.store().len(), 3, "the cap");
}
