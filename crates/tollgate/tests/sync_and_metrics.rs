//! The synchronous decision path (`check_now`, `peek_now`) agrees with the async one, and every
//! decision is counted through the `metrics` facade with the labels operators rely on.

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use tollgate::{
    Algorithm, Cost, Decision, LimitKind, LimitSpec, Limiter, ManualClock, Policy, Rule, Subject,
    Timestamp, Window,
};

const T0: Timestamp = Timestamp::from_secs(1_700_000_000);

fn policy() -> Policy {
    Policy::builder()
        .rule(
            Rule::builder("gateway")
                .per("tenant")
                .limit(LimitSpec::new(LimitKind::Requests, 5, Window::MINUTE))
                .limit(LimitSpec::new(LimitKind::Tokens, 1_000, Window::MINUTE))
                .limit(LimitSpec::concurrency(2)),
        )
        .rule(Rule::builder("daily").per("user").limit(
            LimitSpec::new(LimitKind::Requests, 3, Window::DAY).algorithm(Algorithm::FixedWindow),
        ))
        .build()
        .unwrap()
}

/// A mix of calls: admitted, denied by tokens, by requests, by a daily quota, too large, and
/// subjects that span two rules (two shards of the store).
fn script(i: u64) -> (Subject<'static>, Cost) {
    let tenant = if i % 3 == 0 { "acme" } else { "globex" };
    let mut s = Subject::new().tenant(tenant);
    if i % 2 == 0 {
        s = s.user(format!("u{}", i % 4));
    }
    let cost = match i % 5 {
        0 => Cost::tokens(400),
        1 => Cost::tokens(5_000),
        _ => Cost::tokens(30),
    };
    (s, cost)
}

#[tokio::test]
async fn check_now_and_peek_now_agree_with_check_and_peek() {
    let clock_a = ManualClock::new(T0);
    let clock_b = ManualClock::new(T0);
    let sync = Limiter::with_clock(policy(), clock_a.clone());
    let not_sync = Limiter::with_clock(policy(), clock_b.clone());
    let mut denied = 0;
    for i in 0..200u64 {
        let (s, cost) = script(i);
        let peeked: Decision = sync
            .peek_now(&s, cost)
            .expect("memory decides at once")
            .unwrap();
        assert_eq!(peeked, not_sync.peek(&s, cost).await.unwrap(), "peek {i}");
        let a = sync
            .check_now(&s, cost)
            .expect("memory decides at once")
            .unwrap();
        let b = not_sync.check(&s, cost).await.unwrap();
        assert_eq!(a, b, "call {i}");
        // What peek said is what check did.
        assert_eq!(peeked.outcome(), a.outcome(), "call {i}");
        if !a.is_allowed() {
            denied += 1;
        }
        clock_a.advance(Duration::from_millis(1_700));
        clock_b.advance(Duration::from_millis(1_700));
    }
    assert!(denied > 20, "the script exercises denials ({denied})");
    assert_eq!(sync.stats(), not_sync.stats());
}

/// A counter's name, labels and value.
type Counted = (String, Vec<(String, String)>, u64);

fn counter(snapshot: &[Counted], labels: &[(&str, &str)]) -> u64 {
    snapshot
        .iter()
        .filter(|(name, l, _)| {
            name == "tollgate_decisions_total"
                && l.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, n)| *n)
        .sum()
}

#[test]
fn decisions_are_counted_by_outcome_rule_kind_and_reason() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let limiter = Limiter::with_clock(policy(), ManualClock::new(T0));
    let acme = Subject::new().tenant("acme");
    metrics::with_local_recorder(&recorder, || {
        for _ in 0..5 {
            assert!(limiter
                .check_now(&acme, Cost::ONE)
                .unwrap()
                .unwrap()
                .is_allowed());
        }
        // Denied by the requests limit twice, and too large once.
        for _ in 0..2 {
            assert!(!limiter
                .check_now(&acme, Cost::ONE)
                .unwrap()
                .unwrap()
                .is_allowed());
        }
        let big = limiter
            .check_now(&Subject::new().tenant("other"), Cost::tokens(2_000))
            .unwrap()
            .unwrap();
        assert_eq!(big.outcome(), tollgate::Outcome::TooLarge);
        // A peek is not a decision that counts.
        limiter.peek_now(&acme, Cost::ONE).unwrap().unwrap();
    });
    let snapshot: Vec<Counted> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match (key.kind(), value) {
            (MetricKind::Counter, DebugValue::Counter(n)) => {
                let k = key.key();
                let labels = k
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                Some((k.name().to_owned(), labels, n))
            }
            _ => None,
        })
        .collect();
    assert_eq!(counter(&snapshot, &[("outcome", "allowed")]), 5);
    // The outcome is the decision's, as the service names it (denied, too_large, ...).
    let by = |reason: &str, kind: &str| {
        counter(
            &snapshot,
            &[
                (
                    "outcome",
                    if reason == "too_large" {
                        "too_large"
                    } else {
                        "denied"
                    },
                ),
                ("rule", "gateway"),
                ("kind", kind),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(by("requests", "requests"), 2);
    assert_eq!(by("too_large", "tokens"), 1);
    let stats = limiter.stats();
    assert_eq!((stats.allowed, stats.denied), (5, 3));
}
