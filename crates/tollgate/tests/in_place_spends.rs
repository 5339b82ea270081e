//! The memory store spends GCRA buckets in place during a decision of several limits and puts
//! them back when the decision spends nothing after all: a later limit denies, the bucket cap
//! refuses a new bucket of the same decision (`AtCapacity::Deny`), or the call only peeks.
//! These tests check, through the limiter's public API and a manual clock, that such a decision
//! leaves every bucket exactly as it was.

mod common;
use common::capped_limiter;

use std::time::Duration;

use futures::FutureExt;
use tollgate::{
    AtCapacity, Cost, Decision, DenyReason, LimitKind, LimitSpec, Limiter, ManualClock,
    MemoryStore, Outcome, Policy, Rule, Subject, Timestamp, Window,
};

const T0: Timestamp = Timestamp::from_secs(1_700_000_000);

/// What every limit that applies to `subject` has used, in plan order.
fn used(l: &Limiter, subject: &Subject<'_>) -> Vec<u64> {
    l.usage(subject)
        .now_or_never()
        .expect("the memory store answers at once")
        .expect("the memory store does not fail")
        .iter()
        .map(|u| u.used)
        .collect()
}

fn check(l: &Limiter, subject: &Subject<'_>, cost: Cost) -> Decision {
    l.check_now(subject, cost)
        .expect("the memory store decides at once")
        .expect("the memory store does not fail")
}

fn peek(l: &Limiter, subject: &Subject<'_>, cost: Cost) -> Decision {
    l.peek_now(subject, cost)
        .expect("the memory store decides at once")
        .expect("the memory store does not fail")
}

/// The remaining units of every limit of a decision, in plan order.
fn remaining(d: &Decision) -> Vec<u64> {
    d.statuses().iter().map(|s| s.remaining).collect()
}

/// (a) An early GCRA limit that admits is put back when a later one denies, whichever path the
/// decision takes (by subject, as an admission, by prepared subject) and whether or not the
/// two rules' buckets share a shard (the tenants land in many of the 128 shards; the provider
/// in one).
#[test]
fn a_later_denial_puts_back_the_earlier_buckets_on_every_path() {
    let policy = Policy::builder()
        .rule(
            Rule::builder("per-tenant")
                .per("tenant")
                .limit(LimitSpec::new(LimitKind::Requests, 5, Window::MINUTE)),
        )
        .rule(
            Rule::builder("per-provider")
                .per("provider")
                .limit(LimitSpec::new(LimitKind::Tokens, 100, Window::MINUTE)),
        )
        .build()
        .expect("a valid policy");
    let clock = ManualClock::new(T0);
    let store = MemoryStore::builder()
        .clock(clock.clone())
        .shards(128)
        .build();
    let l = Limiter::with_store(policy, store);
    let tenants: Vec<String> = (0..16).map(|i| format!("tenant-{i}")).collect();
    let subjects: Vec<Subject<'_>> = tenants
        .iter()
        .map(|t| Subject::new().tenant(t.as_str()).provider("openai"))
        .collect();
    // Every tenant's requests bucket exists, one request spent.
    for s in &subjects {
        assert!(check(&l, s, Cost::tokens(1)).is_allowed());
    }
    // Another tenant drains the provider's tokens.
    let drain = Subject::new().tenant("drain").provider("openai");
    assert!(check(&l, &drain, Cost::tokens(100 - 16)).is_allowed());
    let len = l.store().len();
    for s in &subjects {
        let prepared = l.prepare(s);
        for _ in 0..3 {
            let d = check(&l, s, Cost::tokens(1));
            assert_eq!(d.outcome(), Outcome::Denied, "{s}");
            assert_eq!(d.reason(), Some(DenyReason::Tokens), "{s}");
            assert_eq!(d.denied_by().map(|x| x.rule), Some("per-provider"), "{s}");
            let a = l
                .admit_now(s, Cost::tokens(1))
                .expect("at once")
                .expect("no failure");
            assert_eq!(a.outcome(), Outcome::Denied, "{s}: admission");
            let p = l
                .check_prepared_now(&prepared, Cost::tokens(1))
                .expect("at once")
                .expect("no failure");
            assert_eq!(p.outcome(), Outcome::Denied, "{s}: prepared");
        }
        assert_eq!(used(&l, s), vec![1, 100], "{s}: nothing spent on denial");
    }
    assert_eq!(l.store().len(), len, "no bucket created or dropped");
    // The four requests left to each tenant are all there: a call costing no tokens takes them.
    for s in &subjects {
        for left in (0..4).rev() {
            let d = check(&l, s, Cost::tokens(0));
            assert!(d.is_allowed(), "{s}");
            assert_eq!(d.statuses()[0].remaining, left, "{s}");
        }
        let d = check(&l, s, Cost::tokens(0));
        assert_eq!(d.denied_by().map(|x| x.rule), Some("per-tenant"), "{s}");
    }
}

/// (b) At the cap, under `AtCapacity::Deny`, a decision that spent an existing bucket in place
/// and then needs a new bucket that does not fit is `StoreFull` and leaves the existing bucket
/// as it was, on every path, however often it is retried.
#[test]
fn at_the_cap_a_refused_new_bucket_puts_back_the_spent_ones() {
    let policy = Policy::builder()
        .rule(
            Rule::builder("per-tenant")
                .per("tenant")
                .limit(LimitSpec::new(LimitKind::Requests, 3, Window::MINUTE))
                .limit(LimitSpec::new(LimitKind::Tokens, 100, Window::MINUTE)),
        )
        .rule(Rule::builder("per-user").per("user").limit(LimitSpec::new(
            LimitKind::Requests,
            10,
            Window::MINUTE,
        )))
        .build()
        .expect("a valid policy");
    let clock = ManualClock::new(T0);
    let l = capped_limiter(policy, &clock, 3, AtCapacity::Deny);
    let first = Subject::new().tenant("acme").user("u1");
    let d = check(&l, &first, Cost::tokens(10));
    assert!(d.is_allowed());
    assert_eq!(remaining(&d), vec![2, 90, 9]);
    assert_eq!(l.store().len(), 3, "the store is at its cap");

    // The tenant's buckets exist (spent in place); the second user's does not fit.
    let second = Subject::new().tenant("acme").user("u2");
    let prepared = l.prepare(&second);
    for _ in 0..4 {
        let d = check(&l, &second, Cost::tokens(10));
        assert_eq!(d.outcome(), Outcome::StoreFull);
        assert_eq!(d.reason(), Some(DenyReason::StoreFull));
        let a = l
            .admit_now(&second, Cost::tokens(10))
            .expect("at once")
            .expect("no failure");
        assert_eq!(a.outcome(), Outcome::StoreFull);
        let p = l
            .check_prepared_now(&prepared, Cost::tokens(10))
            .expect("at once")
            .expect("no failure");
        assert_eq!(p.outcome(), Outcome::StoreFull);
    }
    assert_eq!(used(&l, &first), vec![1, 10, 1], "nothing spent at the cap");
    assert_eq!(used(&l, &second), vec![1, 10, 0]);
    assert_eq!(l.store().len(), 3);

    // The tenant's two requests left are all there.
    let d = check(&l, &first, Cost::tokens(10));
    assert!(d.is_allowed());
    assert_eq!(remaining(&d), vec![1, 80, 8]);
    let d = check(&l, &first, Cost::tokens(10));
    assert!(d.is_allowed());
    assert_eq!(remaining(&d), vec![0, 70, 7]);
    let d = check(&l, &first, Cost::tokens(10));
    assert_eq!(d.reason(), Some(DenyReason::Requests));
    assert_eq!(d.denied_by().map(|x| x.rule), Some("per-tenant"));
    assert_eq!(d.retry_after(), Some(Duration::from_secs(20)));
}

/// (b) The same with a concurrency slot as the new bucket: a reservation takes a slot (cost
/// one), and the slot's bucket of a second user does not fit.
#[tokio::test]
async fn at_the_cap_a_refused_slot_puts_back_the_spent_ones() {
    let policy = Policy::builder()
        .rule(
            Rule::builder("per-tenant")
                .per("tenant")
                .limit(LimitSpec::new(LimitKind::Requests, 3, Window::MINUTE)),
        )
        .rule(
            Rule::builder("per-user")
                .per("user")
                .limit(LimitSpec::concurrency(1)),
        )
        .build()
        .expect("a valid policy");
    let clock = ManualClock::new(T0);
    let l = capped_limiter(policy, &clock, 2, AtCapacity::Deny);
    let first = Subject::new().tenant("acme").user("u1");
    let held = l
        .reserve(&first, Cost::ONE)
        .await
        .expect("no failure")
        .granted()
        .expect("a free slot");
    assert_eq!(l.store().len(), 2, "the store is at its cap");

    let second = Subject::new().tenant("acme").user("u2");
    for _ in 0..4 {
        let r = l.reserve(&second, Cost::ONE).await.expect("no failure");
        assert_eq!(r.decision().outcome(), Outcome::StoreFull);
        assert!(r.granted().is_none());
    }
    assert_eq!(used(&l, &first), vec![1, 1], "nothing spent at the cap");
    assert_eq!(used(&l, &second), vec![1, 0]);
    assert_eq!(l.store().len(), 2);

    drop(held);
    assert_eq!(used(&l, &first), vec![1, 0], "the slot is released");
    // The tenant's two requests left are all there, now for the second user too.
    for left in [1, 0] {
        let p = l
            .reserve(&second, Cost::ONE)
            .await
            .expect("no failure")
            .granted()
            .expect("admitted");
        assert_eq!(p.decision().statuses()[0].remaining, left);
    }
    let d = check(&l, &first, Cost::ONE);
    assert_eq!(d.reason(), Some(DenyReason::Requests));
}

/// (c) Peeking at several limits, admitted or denied by the last, spends from none of them and
/// creates no bucket.
#[test]
fn peeking_at_several_limits_spends_nothing() {
    let policy = Policy::builder()
        .rule(
            Rule::builder("gateway")
                .per("tenant")
                .limit(LimitSpec::new(LimitKind::Requests, 3, Window::MINUTE))
                .limit(LimitSpec::new(LimitKind::Tokens, 100, Window::MINUTE))
                .limit(LimitSpec::concurrency(2)),
        )
        .rule(
            Rule::builder("per-provider")
                .per("provider")
                .limit(LimitSpec::new(LimitKind::Tokens, 50, Window::MINUTE)),
        )
        .build()
        .expect("a valid policy");
    let clock = ManualClock::new(T0);
    let l = capped_limiter(policy, &clock, 1_000, AtCapacity::Deny);
    let acme = Subject::new().tenant("acme").provider("openai");

    // No bucket yet: peeking creates none.
    for _ in 0..5 {
        let d = peek(&l, &acme, Cost::tokens(10));
        assert!(d.is_allowed());
        assert_eq!(remaining(&d), vec![2, 90, 2, 40]);
    }
    assert!(l.store().is_empty(), "a peek creates no bucket");

    // Every bucket that spends exists.
    let d = check(&l, &acme, Cost::tokens(10));
    assert!(d.is_allowed());
    assert_eq!(remaining(&d), vec![2, 90, 2, 40]);
    let len = l.store().len();
    let before = used(&l, &acme);
    assert_eq!(before, vec![1, 10, 0, 10]);

    for _ in 0..5 {
        // All admit: what a spend would leave, nothing spent.
        let d = peek(&l, &acme, Cost::tokens(10));
        assert!(d.is_allowed());
        assert_eq!(remaining(&d), vec![1, 80, 2, 30]);
        // The last limit denies after the others admit.
        let d = peek(&l, &acme, Cost::tokens(45));
        assert_eq!(d.outcome(), Outcome::Denied);
        assert_eq!(d.denied_by().map(|x| x.rule), Some("per-provider"));
        // The first denies.
        let d = peek(&l, &acme, Cost::tokens(101));
        assert_eq!(d.outcome(), Outcome::TooLarge);
    }
    assert_eq!(used(&l, &acme), before, "peeks spend nothing");
    assert_eq!(l.store().len(), len);

    // What is left is all there: two more requests.
    let d = check(&l, &acme, Cost::tokens(10));
    assert_eq!(remaining(&d), vec![1, 80, 2, 30]);
    let d = check(&l, &acme, Cost::tokens(10));
    assert_eq!(remaining(&d), vec![0, 70, 2, 20]);
    let d = check(&l, &acme, Cost::tokens(10));
    assert_eq!(d.reason(), Some(DenyReason::Requests));
    clock.advance(Duration::from_secs(20));
    assert!(check(&l, &acme, Cost::tokens(10)).is_allowed());
}

/// Two limits of one rule that differ only in a field their label leaves out (the lease of a
/// requests limit) would share one bucket, so every decision would name it twice: the policy
/// refuses them, naming the second limit.
#[test]
fn two_limits_of_one_bucket_are_refused() {
    let refused = Policy::builder()
        .rule(
            Rule::builder("dup")
                .per("tenant")
                .limit(LimitSpec::new(LimitKind::Requests, 10, Window::MINUTE))
                .limit(
                    LimitSpec::new(LimitKind::Requests, 10, Window::MINUTE)
                        .lease(Duration::from_secs(5)),
                )
                .limit(LimitSpec::new(LimitKind::Tokens, 100, Window::MINUTE)),
        )
        .build()
        .expect_err("two limits of one bucket");
    let message = refused.to_string();
    assert!(message.contains("dup"), "{message}");
    assert!(message.contains("limits[1]"), "{message}");
    assert!(message.contains("duplicates limits[0]"), "{message}");
}

/// A limit that a call spends nothing from (a requests-and-tokens rule, a call of requests
/// only) creates no bucket, so it does not count against the cap: one request fits a cap of
/// one bucket, as it does with a single limit.
#[test]
fn a_limit_spent_nothing_from_needs_no_room_at_the_cap() {
    let policy = Policy::builder()
        .rule(
            Rule::builder("rpm-tpm")
                .per("tenant")
                .limit(LimitSpec::new(LimitKind::Requests, 10, Window::MINUTE))
                .limit(LimitSpec::new(LimitKind::Tokens, 100, Window::MINUTE)),
        )
        .build()
        .expect("a valid policy");
    let clock = ManualClock::new(T0);
    let l = capped_limiter(policy, &clock, 1, AtCapacity::Deny);
    let acme = Subject::new().tenant("acme");
    let d = check(&l, &acme, Cost::ONE);
    assert_eq!(d.outcome(), Outcome::Allowed);
    assert_eq!(l.store().len(), 1);
    assert_eq!(used(&l, &acme), vec![1, 0]);
    // Tokens would need a second bucket: refused at the cap, and nothing spent.
    assert_eq!(
        check(&l, &acme, Cost::tokens(5)).outcome(),
        Outcome::StoreFull
    );
    assert_eq!(used(&l, &acme), vec![1, 0]);
}
