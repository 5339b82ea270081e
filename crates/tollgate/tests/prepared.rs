//! Prepared subjects decide exactly as the subjects they were prepared from, under every
//! policy the limiter has had, on a manual clock.

use std::time::Duration;

use tollgate::{
    Algorithm, Cost, LimitKind, LimitSpec, Limiter, ManualClock, Outcome, Policy, Reservation,
    Rule, Subject, Timestamp, Window,
};

const T0: Timestamp = Timestamp::from_secs(1_700_000_000);

/// Two rules: requests and tokens per tenant and provider, and a concurrency limit per
/// tenant with an override for one tenant.
fn policy(rpm: u64) -> Policy {
    Policy::builder()
        .rule(
            Rule::builder("gateway")
                .per("tenant")
                .per("provider")
                .limit(LimitSpec::new(LimitKind::Requests, rpm, Window::MINUTE))
                .limit(LimitSpec::new(LimitKind::Tokens, 10_000, Window::MINUTE)),
        )
        .rule(
            Rule::builder("in-flight")
                .per("tenant")
                .limit(LimitSpec::concurrency(2)),
        )
        // One GCRA limit alone: the one-operation path.
        .rule(
            Rule::builder("per-user")
                .per("user")
                .limit(LimitSpec::new(LimitKind::Tokens, 5_000, Window::MINUTE).burst(6_000)),
        )
        // One sliding-window limit alone: a single operation the store's one-operation path
        // declines.
        .rule(
            Rule::builder("per-agent").per("agent").limit(
                LimitSpec::new(LimitKind::Requests, 4, Window::MINUTE)
                    .algorithm(Algorithm::SlidingWindow),
            ),
        )
        .build()
        .expect("a valid policy")
}

fn limiter(p: Policy) -> (Limiter, ManualClock) {
    let clock = ManualClock::new(T0);
    (Limiter::with_clock(p, clock.clone()), clock)
}

fn subjects() -> Vec<Subject<'static>> {
    vec![
        Subject::new().tenant("acme").provider("openai"),
        Subject::new().tenant("acme").provider("anthropic"),
        Subject::new()
            .tenant("beta")
            .provider("openai")
            .model("gpt-4o"),
        // Only the tenant rule applies.
        Subject::new().tenant("gamma"),
        // Only the user rule applies: one GCRA limit.
        Subject::new().user("u1"),
        // Only the agent rule applies: one sliding-window limit.
        Subject::new().agent("a1"),
        // No rule applies.
        Subject::new().model("gpt-4o"),
    ]
}

/// The same sequence of calls on two limiters, one by subject and one by prepared subject:
/// every decision is equal, denials and their retry_after included.
#[test]
fn prepared_decisions_equal_subject_decisions() {
    let (by_subject, c1) = limiter(policy(5));
    let (by_prepared, c2) = limiter(policy(5));
    let subjects = subjects();
    let prepared: Vec<_> = subjects.iter().map(|s| by_prepared.prepare(s)).collect();
    let mut denied = 0;
    for step in 0..200u64 {
        let i = usize::try_from(step % 7).expect("small");
        let cost = Cost::tokens(300 + (step * 137) % 1_500);
        let a = by_subject
            .check_now(&subjects[i], cost)
            .expect("memory decides at once")
            .expect("memory does not fail");
        let b = by_prepared
            .check_prepared_now(&prepared[i], cost)
            .expect("memory decides at once")
            .expect("memory does not fail");
        assert_eq!(a, b, "step {step}, subject {}", subjects[i]);
        if !a.is_allowed() {
            denied += 1;
        }
        let dt = Duration::from_millis(50 + (step * 311) % 450);
        c1.advance(dt);
        c2.advance(dt);
    }
    assert!(
        denied > 10,
        "the sequence must exercise denials, saw {denied}"
    );
    // Both limiters counted the same decisions.
    assert_eq!(by_subject.stats(), by_prepared.stats());
}

/// Every subject of the policy alone, until it is denied: the single-limit subjects (GCRA
/// and sliding window) are denied alike too, with the same retry_after.
#[test]
fn each_subject_alone_is_denied_alike() {
    for who in subjects() {
        let (by_subject, _) = limiter(policy(3));
        let (by_prepared, _) = limiter(policy(3));
        let p = by_prepared.prepare(&who);
        let mut denied = false;
        for _ in 0..10 {
            let a = by_subject
                .check_now(&who, Cost::tokens(2_500))
                .unwrap()
                .unwrap();
            let b = by_prepared
                .check_prepared_now(&p, Cost::tokens(2_500))
                .unwrap()
                .unwrap();
            assert_eq!(a, b, "{who}");
            denied |= !a.is_allowed();
        }
        // Only the concurrency limit applies to "gamma", and a check takes no slot.
        let limited = p.limits() > 0 && who.get(&tollgate::Attr::Tenant) != Some("gamma");
        assert_eq!(
            denied,
            limited,
            "{who}: denied {denied}, limits {}",
            p.limits()
        );
    }
}

#[tokio::test]
async fn the_async_check_answers_the_same() {
    let (l, _) = limiter(policy(2));
    let who = Subject::new().tenant("acme").provider("openai");
    let p = l.prepare(&who);
    assert_eq!(p.limits(), 3);
    assert!(l.check_prepared(&p, Cost::ONE).await.unwrap().is_allowed());
    assert!(l.check(&who, Cost::ONE).await.unwrap().is_allowed());
    let third = l.check_prepared(&p, Cost::ONE).await.unwrap();
    assert_eq!(third.outcome(), Outcome::Denied);
    assert_eq!(third, l.check(&who, Cost::ONE).await.unwrap());
}

/// After the policy changes, a prepared subject decides under the new policy at once (it
/// resolves its subject again), and `refresh` makes it current.
#[test]
fn a_policy_change_is_seen_before_and_after_refresh() {
    let (l, _) = limiter(policy(1));
    let who = Subject::new().tenant("acme").provider("openai");
    let mut p = l.prepare(&who);
    assert!(l
        .check_prepared_now(&p, Cost::ONE)
        .unwrap()
        .unwrap()
        .is_allowed());
    assert!(!l
        .check_prepared_now(&p, Cost::ONE)
        .unwrap()
        .unwrap()
        .is_allowed());

    // A new limit amount: the bucket of the changed limit starts full, and the prepared
    // subject sees the new amount without being refreshed.
    l.set_policy(policy(3));
    let d = l.check_prepared_now(&p, Cost::ONE).unwrap().unwrap();
    assert!(d.is_allowed());
    assert_eq!(d.statuses()[0].amount, 3);

    l.refresh(&mut p);
    let d = l.check_prepared_now(&p, Cost::ONE).unwrap().unwrap();
    assert!(d.is_allowed());
    assert_eq!(d.statuses()[0].remaining, 1);
    // The subject itself sees the same bucket: a peek of one more leaves nothing.
    let peek = l.peek_now(&who, Cost::ONE).unwrap().unwrap();
    assert_eq!(peek.statuses()[0].remaining, 0);

    // A prepared subject from another limiter is never taken as current there.
    let (other, _) = limiter(policy(1));
    assert!(other
        .check_prepared_now(&p, Cost::ONE)
        .unwrap()
        .unwrap()
        .is_allowed());
    assert!(!other
        .check_prepared_now(&p, Cost::ONE)
        .unwrap()
        .unwrap()
        .is_allowed());
}

#[tokio::test]
async fn a_prepared_reservation_holds_and_releases_its_slot() {
    let (l, _) = limiter(policy(100));
    let p = l.prepare(&Subject::new().tenant("acme").provider("openai"));
    let first = l.reserve_prepared(&p, Cost::tokens(10)).await.unwrap();
    let second = l.reserve_prepared(&p, Cost::tokens(10)).await.unwrap();
    assert!(matches!(first, Reservation::Granted(_)));
    assert!(matches!(second, Reservation::Granted(_)));
    let Reservation::Denied(third) = l.reserve_prepared(&p, Cost::tokens(10)).await.unwrap() else {
        panic!("a third slot of two was granted");
    };
    assert_eq!(third.statuses()[2].kind, LimitKind::Concurrency);
    drop(first);
    assert!(matches!(
        l.reserve_prepared(&p, Cost::tokens(10)).await.unwrap(),
        Reservation::Granted(_)
    ));
    drop(second);
}
