//! Answers that must not mislead: resets count what they reset, concurrency denials claim no
//! window.

use std::time::Duration;

use tollgate::{Cost, DenyReason, LimitKind, LimitSpec, Limiter, ManualClock, Policy, Rule};
use tollgate::{Subject, Timestamp, Window};

fn limiter() -> Limiter {
    let policy = Policy::builder()
        .rule(
            Rule::builder("per-user-model")
                .per("user")
                .per("model")
                .limit(LimitSpec::new(LimitKind::Requests, 2, Window::HOUR))
                .limit(LimitSpec::new(LimitKind::Tokens, 100, Window::HOUR)),
        )
        .rule(
            Rule::builder("slots")
                .per("tenant")
                .limit(LimitSpec::concurrency(1).lease(Duration::from_secs(60))),
        )
        .build()
        .unwrap();
    Limiter::with_clock(
        policy,
        ManualClock::new(Timestamp::from_secs(1_700_000_000)),
    )
}

#[tokio::test]
async fn resets_count_the_buckets_they_reset() {
    let l = limiter();
    let alice = Subject::new().user("alice").model("gpt-4o");
    l.check(&alice, Cost::ONE).await.unwrap();
    // No rule applies to a user without a model: nothing is reset, and the count says so.
    assert_eq!(l.reset(&Subject::new().user("alice")).await.unwrap(), 0);
    assert_eq!(l.usage(&alice).await.unwrap()[0].used, 1);
    assert_eq!(l.reset_in("slots", &alice).await.unwrap(), 0);
    assert_eq!(l.usage(&alice).await.unwrap()[0].used, 1);
    // The whole subject: the rule's two limits.
    assert_eq!(l.reset(&alice).await.unwrap(), 2);
    assert_eq!(l.usage(&alice).await.unwrap()[0].used, 0);
    assert_eq!(l.reset_in("per-user-model", &alice).await.unwrap(), 2);
    assert!(l.reset_in("nope", &alice).await.is_err());
}

#[tokio::test]
async fn concurrency_denials_name_no_window() {
    let l = limiter();
    let acme = Subject::new().tenant("acme");
    let _held = l.reserve(&acme, Cost::ONE).await.unwrap();
    let denied = l.reserve(&acme, Cost::ONE).await.unwrap();
    let d = denied.decision();
    assert_eq!(d.reason(), Some(DenyReason::Concurrency));
    // What is known: the soonest lease expiry.
    assert_eq!(d.retry_after(), Some(Duration::from_secs(60)));
    let text = d.to_string();
    assert!(!text.contains(" per "), "{text}");
    assert!(text.contains("(at most 1 in flight)"), "{text}");
    assert!(text.contains("acquire"), "{text}");
}
