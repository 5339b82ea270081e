//! Request ids against a real Redis that stops answering: a call that Redis may have run but
//! whose answer was lost (it timed out while Redis was paused with `SIGSTOP`) is not counted
//! twice when the client retries it with the same id, with the fallback store or without it.

use std::time::{Duration, Instant};

use tollgate::store::fallback::{BreakerState, FallbackConfig, FallbackStore};
use tollgate::store::redis::{RedisConfig, RedisStore};
use tollgate::store::FailureMode;
use tollgate::{
    Cost, Error, LimitKind, LimitSpec, Limiter, Outcome, Policy, Rule, Subject, SystemClock, Window,
};
use tollgate_test::RedisServer;

/// Three requests per hour and tenant, in the default failure mode.
fn policy() -> Policy {
    Policy::builder()
        .rule(Rule::builder("hourly").per("tenant").limit(LimitSpec::new(
            LimitKind::Requests,
            3,
            Window::HOUR,
        )))
        .build()
        .unwrap()
}

fn config(prefix: &str) -> RedisConfig {
    RedisConfig {
        prefix: prefix.into(),
        response_timeout: Duration::from_millis(300),
        ..RedisConfig::default()
    }
}

/// What Redis has counted for `tenant`, read by a limiter of its own.
async fn used_in_redis(server: &RedisServer, prefix: &str, tenant: &str) -> u64 {
    let direct = RedisStore::connect_with(&server.url(), config(prefix))
        .await
        .unwrap();
    let l = Limiter::with_store(policy(), direct);
    l.usage(&Subject::new().tenant(tenant)).await.unwrap()[0].used
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_timeout_is_not_counted_twice_without_the_fallback() {
    let server = RedisServer::start().unwrap();
    let redis = RedisStore::connect_with(&server.url(), config("plain"))
        .await
        .unwrap();
    let l = Limiter::with_store(policy(), redis);
    let t = Subject::new().tenant("t");
    // Redis loads the script first (a call with an id uses its own), on another tenant.
    l.check_idempotent(&Subject::new().tenant("warm"), Cost::ONE, "warm")
        .await
        .unwrap();

    server.pause();
    let lost = l.check_idempotent(&t, Cost::ONE, "r1").await;
    assert!(
        matches!(&lost, Err(e) if e.is_transient()),
        "the answer is lost: {lost:?}"
    );
    server.resume();
    assert_eq!(
        used_in_redis(&server, "plain", "t").await,
        1,
        "Redis ran the call whose answer was lost"
    );
    let retry = l.check_idempotent(&t, Cost::ONE, "r1").await.unwrap();
    assert!(retry.is_allowed(), "{retry:?}");
    assert_eq!(
        used_in_redis(&server, "plain", "t").await,
        1,
        "the call and its retry were counted once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_timeout_is_not_counted_twice_behind_the_fallback() {
    let server = RedisServer::start().unwrap();
    let redis = RedisStore::connect_with(&server.url(), config("fallback"))
        .await
        .unwrap();
    let fallback = FallbackConfig {
        // The first failure opens the breaker, so that no later call reaches Redis while it
        // is paused (each would be run when it resumes).
        consecutive_failures: 1,
        open_for: Duration::from_millis(500),
        ..FallbackConfig::default()
    };
    let l = Limiter::with_store(
        policy(),
        FallbackStore::with_config(redis, fallback, SystemClock::new()),
    );
    assert_eq!(
        l.policy().rules()[0].failure_mode(),
        FailureMode::Local,
        "the default failure mode"
    );
    let t = Subject::new().tenant("t");
    let probe = Subject::new().tenant("probe");
    // Redis loads the script first (a call with an id uses its own).
    l.check_idempotent(&probe, Cost::ONE, "warm").await.unwrap();

    server.pause();
    let first = l.check_idempotent(&t, Cost::ONE, "r1").await.unwrap();
    assert!(first.is_degraded() && first.is_allowed(), "{first:?}");
    assert_eq!(l.store().breaker_state(), BreakerState::Open);
    // While degraded, the retry is answered by the local share, which remembers the id: it
    // spends nothing there either. The share (3) then has room for exactly two more.
    let again = l.check_idempotent(&t, Cost::ONE, "r1").await.unwrap();
    assert!(again.is_degraded() && again.is_allowed(), "{again:?}");
    for _ in 0..2 {
        assert!(l.check(&t, Cost::ONE).await.unwrap().is_allowed());
    }
    let full = l.check(&t, Cost::ONE).await.unwrap();
    assert_eq!(
        (full.outcome(), full.is_degraded()),
        (Outcome::Denied, true),
        "the local share counted the retry once"
    );
    // The usage of the shared state cannot be read meanwhile, and says so.
    let usage = l.usage(&t).await;
    assert!(
        matches!(&usage, Err(Error::Store(e)) if e.to_string().contains("could not be read")),
        "{usage:?}"
    );

    server.resume();
    let began = Instant::now();
    while l
        .check(&probe, Cost::requests(0))
        .await
        .unwrap()
        .is_degraded()
    {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "Redis never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        used_in_redis(&server, "fallback", "t").await,
        1,
        "Redis ran the first attempt when it resumed"
    );
    // The retry is answered from Redis's record of it.
    let retry = l.check_idempotent(&t, Cost::ONE, "r1").await.unwrap();
    assert!(retry.is_allowed() && !retry.is_degraded(), "{retry:?}");
    assert_eq!(
        used_in_redis(&server, "fallback", "t").await,
        1,
        "Redis counted the call and its retries once"
    );
}

/// Behind the fallback store, with its denial cache on: a request id whose first attempt was
/// denied is decided again when retried, and neither its retry nor anything else re-arms the
/// cache with that stale denial (which would refuse calls without an id while Redis has room).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_denial_is_decided_again_and_rearms_no_cached_denial() {
    let server = RedisServer::start().unwrap();
    let redis = RedisStore::connect_with(&server.url(), config("cache"))
        .await
        .unwrap();
    let policy = Policy::builder()
        .rule(Rule::builder("hourly").per("tenant").limit(LimitSpec::new(
            LimitKind::Requests,
            2,
            Window::HOUR,
        )))
        .build()
        .unwrap();
    let l = Limiter::with_store(policy, FallbackStore::new(redis));
    let t = Subject::new().tenant("t");
    for id in ["r1", "r2"] {
        assert!(l
            .check_idempotent(&t, Cost::ONE, id)
            .await
            .unwrap()
            .is_allowed());
    }
    let denied = l.check_idempotent(&t, Cost::ONE, "r3").await.unwrap();
    assert_eq!(denied.outcome(), Outcome::Denied);
    // Capacity comes back (a reset through this instance also forgets the cached denial).
    l.reset(&t).await.unwrap();
    let retry = l.check_idempotent(&t, Cost::ONE, "r3").await.unwrap();
    assert!(retry.is_allowed(), "decided again: {retry:?}");
    let plain = l.check(&t, Cost::ONE).await.unwrap();
    assert!(
        plain.is_allowed(),
        "no stale denial was cached for calls without an id: {plain:?}"
    );
    assert_eq!(l.usage(&t).await.unwrap()[0].used, 2);
    assert_eq!(
        l.store().stats().cached_denials,
        0,
        "no call was answered by the cache"
    );
}
