//! `admit_now` and `admit_prepared_now` answer an `Admission` instead of a `Decision`. They
//! must make the same decision as `check_now` (the same outcome, retry_after and denying
//! limit), spend the same and count the same, on the one-operation path and on the general one.

mod common;
use common::capped_limiter;

use std::time::Duration;

use futures::FutureExt;
use tollgate::{
    Admission, Algorithm, AtCapacity, Cost, Decision, DenyReason, LimitKind, LimitSpec, Limiter,
    ManualClock, Outcome, Policy, Prepared, Rule, Subject, Timestamp, Window,
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

/// One requests limit per tenant in a sliding log, which the memory store's one-operation
/// path (GCRA only) declines.
fn one_log_limit() -> Policy {
    Policy::builder()
        .rule(Rule::builder("per-tenant").per("tenant").limit(
            LimitSpec::new(LimitKind::Requests, 2, Window::MINUTE).algorithm(Algorithm::SlidingLog),
        ))
        .build()
        .expect("a valid policy")
}

/// Runs the same calls through `check_now`, `admit_now` and `admit_prepared_now` on three
/// limiters sharing one clock, asserting at every step that the admissions are the decision's;
/// returns the admissions seen.
fn run(policy: fn() -> Policy, cap: usize, at_capacity: AtCapacity) -> Vec<Admission> {
    let clock = ManualClock::new(T0);
    let checking = capped_limiter(policy(), &clock, cap, at_capacity);
    let admitting = capped_limiter(policy(), &clock, cap, at_capacity);
    let by_prepared = capped_limiter(policy(), &clock, cap, at_capacity);
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
        assert_eq!(
            admission
                .denied_by()
                .map(|a| (a.rule, a.label, a.kind, a.quota)),
            decision
                .denied_by()
                .map(|d| (d.rule, d.label, d.kind, d.quota)),
        );
        seen.push(admission);
        clock.advance(Duration::from_millis((step * 131) % 9_000));
        if step == 300 {
            // The prepared subjects go stale: they are resolved again from their subjects.
            for l in [&checking, &admitting, &by_prepared] {
                l.set_policy(policy());
            }
        }
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
    // Four buckets per tenant: two tenants fit, the others meet the cap.
    let full = outcomes(&run(many_limits, 8, AtCapacity::Deny));
    assert!(full.contains(&Outcome::StoreFull));
    assert!(full.contains(&Outcome::Allowed));
}

#[test]
fn a_single_limit_the_one_operation_path_declines_is_admitted_alike() {
    let seen = outcomes(&run(one_log_limit, 1_000, AtCapacity::Deny));
    assert!(seen.contains(&Outcome::Allowed));
    assert!(seen.contains(&Outcome::Denied));
}

/// One in 64 synchronous decisions of a limiter on a thread has its latency measured, whichever call
/// makes it: the same number of samples for the same number of decisions.
#[test]
fn admissions_sample_latency_as_decisions_do() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    for policy in [one_limit as fn() -> Policy, one_log_limit, many_limits] {
        let mut samples = Vec::new();
        for call in 0..3 {
            let recorder = DebuggingRecorder::new();
            let snapshotter = recorder.snapshotter();
            let clock = ManualClock::new(T0);
            let l = capped_limiter(policy(), &clock, 1_000, AtCapacity::Deny);
            let who = Subject::new().tenant("acme");
            let p = l.prepare(&who);
            metrics::with_local_recorder(&recorder, || {
                for _ in 0..640 {
                    let allowed = match call {
                        0 => l.check_now(&who, Cost::ONE).unwrap().unwrap().is_allowed(),
                        1 => l.admit_now(&who, Cost::ONE).unwrap().unwrap().is_allowed(),
                        _ => l
                            .admit_prepared_now(&p, Cost::ONE)
                            .unwrap()
                            .unwrap()
                            .is_allowed(),
                    };
                    std::hint::black_box(allowed);
                }
            });
            let n: usize = snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .filter(|(k, ..)| k.key().name() == "tollgate_decision_seconds")
                .map(|(.., v)| match v {
                    DebugValue::Histogram(h) => h.len(),
                    _ => 0,
                })
                .sum();
            samples.push(n);
        }
        assert_eq!(
            samples,
            vec![10, 10, 10],
            "check_now, admit_now, admit_prepared_now"
        );
    }
}

/// A denial's retry_after is exact: the same call is denied a microsecond before it and
/// admitted at it.
#[test]
fn an_admissions_retry_after_is_exact() {
    let clock = ManualClock::new(T0);
    let l = capped_limiter(one_limit(), &clock, 100, AtCapacity::Deny);
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
    let l = capped_limiter(one_limit(), &clock, 100, AtCapacity::Deny);
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

/// Servers spawn decisions on multi-thread runtimes: every async call's future is `Send`, so
/// nothing a decision holds across its wait is tied to one thread.
#[test]
fn the_async_calls_are_send() {
    fn send<T: Send>(_: T) {}
    let l = Limiter::new();
    let who = Subject::new().tenant("acme");
    let p = l.prepare(&who);
    send(l.check(&who, Cost::ONE));
    send(l.peek(&who, Cost::ONE));
    send(l.admit(&who, Cost::ONE));
    send(l.check_prepared(&p, Cost::ONE));
    send(l.admit_prepared(&p, Cost::ONE));
    send(l.reserve(&who, Cost::ONE));
}
