//! The fallback store's denial cache over a memory primary, on tokio's paused clock: exact
//! expiry, refunds that end a cached denial, and the calls it saves.

use std::time::Duration;

use tollgate::store::fallback::{FallbackConfig, FallbackStore};
use tollgate::{
    Cost, LimitKind, LimitSpec, Limiter, MemoryStore, Outcome, Policy, Rule, Subject, Timestamp,
    TokioClock, Window,
};

fn limiter() -> Limiter<FallbackStore<MemoryStore>> {
    let clock = TokioClock::starting_at(Timestamp::from_secs(1_700_000_000));
    let policy = Policy::builder()
        .rule(Rule::builder("tpm").per("tenant").limit(LimitSpec::new(
            LimitKind::Tokens,
            1000,
            Window::MINUTE,
        )))
        .build()
        .unwrap();
    let primary = MemoryStore::with_clock(clock.clone());
    Limiter::with_store(
        policy,
        FallbackStore::with_config(primary, FallbackConfig::default(), clock),
    )
}

fn t() -> Subject<'static> {
    Subject::new().tenant("t")
}

#[tokio::test(start_paused = true)]
async fn a_cached_denial_lasts_exactly_until_the_primary_would_admit() {
    let l = limiter();
    assert!(l
        .check(&t(), Cost::tokens(1000))
        .await
        .unwrap()
        .is_allowed());
    let first = l.check(&t(), Cost::tokens(500)).await.unwrap();
    assert_eq!(first.retry_after(), Some(Duration::from_secs(30)));
    for _ in 0..100 {
        // The same cost, and larger ones, are denied without asking the primary.
        for cost in [500, 800] {
            let d = l.check(&t(), Cost::tokens(cost)).await.unwrap();
            assert_eq!(d.outcome(), Outcome::Denied);
            assert!(!d.is_degraded(), "a cached denial is exact, not degraded");
        }
    }
    assert_eq!(l.store().stats().cached_denials, 200);
    tokio::time::advance(Duration::from_secs(10)).await;
    let d = l.check(&t(), Cost::tokens(500)).await.unwrap();
    assert_eq!(
        d.retry_after(),
        Some(Duration::from_secs(20)),
        "the cached retry counts down"
    );
    // A smaller cost is not covered by the cached denial: the primary answers it.
    let small = l.check(&t(), Cost::tokens(100)).await.unwrap();
    assert!(small.is_allowed());
    tokio::time::advance(Duration::from_secs(20) - Duration::from_micros(1)).await;
    assert!(!l.check(&t(), Cost::tokens(500)).await.unwrap().is_allowed());
    tokio::time::advance(Duration::from_micros(1)).await;
    // 100 tokens were spent 20 s ago, 10 s of refill (166 tokens) since is not enough for 500 +
    // 100: the primary decides again, exactly.
    let d = l.check(&t(), Cost::tokens(500)).await.unwrap();
    assert_eq!(d.retry_after(), Some(Duration::from_secs(6)));
}

#[tokio::test(start_paused = true)]
async fn a_refund_ends_a_cached_denial() {
    let l = limiter();
    let mut p = l
        .reserve(&t(), Cost::tokens(1000))
        .await
        .unwrap()
        .granted()
        .unwrap();
    assert!(!l.check(&t(), Cost::tokens(400)).await.unwrap().is_allowed());
    assert!(!l.check(&t(), Cost::tokens(400)).await.unwrap().is_allowed());
    assert_eq!(l.store().stats().cached_denials, 1);
    p.commit(Cost::tokens(100)).await.unwrap();
    assert!(
        l.check(&t(), Cost::tokens(400)).await.unwrap().is_allowed(),
        "the refund is seen at once"
    );
}
