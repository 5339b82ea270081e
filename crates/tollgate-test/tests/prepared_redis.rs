//! Prepared subjects on the Redis store, whose decisions are awaited: the same decisions and
//! reservations as by subject, before and after the policy changes.

use tollgate::store::redis::{RedisConfig, RedisStore};
use tollgate::{Cost, LimitKind, LimitSpec, Limiter, Outcome, Policy, Rule, Subject, Window};
use tollgate_test::RedisServer;

fn policy(rpm: u64) -> Policy {
    Policy::builder()
        .rule(
            Rule::builder("per-tenant")
                .per("tenant")
                .limit(LimitSpec::new(LimitKind::Requests, rpm, Window::HOUR))
                .limit(LimitSpec::concurrency(1)),
        )
        .rule(Rule::builder("per-user").per("user").limit(LimitSpec::new(
            LimitKind::Tokens,
            1_000,
            Window::HOUR,
        )))
        .build()
        .expect("a valid policy")
}

async fn limiter(url: &str, prefix: &str) -> Limiter<RedisStore> {
    let config = RedisConfig {
        prefix: prefix.into(),
        ..RedisConfig::default()
    };
    let store = RedisStore::connect_with(url, config)
        .await
        .expect("connects");
    Limiter::with_store(policy(2), store)
}

#[tokio::test]
async fn prepared_subjects_decide_as_subjects_on_redis() {
    let server = RedisServer::start().expect("redis-server starts");
    let by_subject = limiter(&server.url(), "s").await;
    let by_prepared = limiter(&server.url(), "p").await;
    let tenant = Subject::new().tenant("acme");
    let user = Subject::new().user("u1");
    let mut pt = by_prepared.prepare(&tenant);
    let pu = by_prepared.prepare(&user);
    assert!(
        by_prepared.check_prepared_now(&pt, Cost::ONE).is_none(),
        "Redis is awaited"
    );

    // One GCRA limit (tokens): 1,000 per hour, spent 400 at a time.
    for _ in 0..3 {
        let a = by_subject.check(&user, Cost::tokens(400)).await.unwrap();
        let b = by_prepared
            .check_prepared(&pu, Cost::tokens(400))
            .await
            .unwrap();
        assert_eq!(a.outcome(), b.outcome());
        assert_eq!(a.statuses()[0].remaining, b.statuses()[0].remaining);
    }
    let denied = by_prepared
        .check_prepared(&pu, Cost::tokens(400))
        .await
        .unwrap();
    assert_eq!(denied.outcome(), Outcome::Denied);

    // A reservation holds the one slot until it is given back.
    let mut held = by_prepared
        .reserve_prepared(&pt, Cost::ONE)
        .await
        .unwrap()
        .granted()
        .expect("the free slot");
    let busy = by_prepared
        .reserve_prepared(&pt, Cost::ONE)
        .await
        .unwrap()
        .into_result()
        .map(|_| ())
        .expect_err("the slot is held");
    assert_eq!(busy.outcome(), Outcome::Denied);
    assert_eq!(
        busy.denied_by().map(|s| s.kind),
        Some(LimitKind::Concurrency)
    );
    held.cancel().await.unwrap();
    let usage = by_prepared.usage(&tenant).await.unwrap();
    assert_eq!(
        usage[0].used, 0,
        "the cancelled reservation refunded its request"
    );
    assert_eq!(usage[1].used, 0, "and gave its slot back");

    // The policy changes: the stale prepared subject decides under the new one (a new
    // requests amount starts a full bucket), and refresh makes it current again.
    by_prepared.set_policy(policy(5));
    let d = by_prepared.check_prepared(&pt, Cost::ONE).await.unwrap();
    assert!(d.is_allowed());
    assert_eq!(d.statuses()[0].amount, 5);
    let r = by_prepared.reserve_prepared(&pt, Cost::ONE).await.unwrap();
    assert!(
        r.granted().is_some(),
        "a stale prepared subject reserves too"
    );
    by_prepared.refresh(&mut pt);
    let d = by_prepared.check_prepared(&pt, Cost::ONE).await.unwrap();
    assert!(d.is_allowed());
    assert_eq!(d.statuses()[0].remaining, 2);
}

/// Admissions on Redis are awaited (`admit_now` and `admit_prepared_now` answer `None`) and
/// come out as the decisions do, by subject and prepared, on the one-limit rule and the
/// two-limit one.
#[tokio::test]
async fn admissions_on_redis_are_the_decisions() {
    let server = RedisServer::start().expect("redis-server starts");
    let checking = limiter(&server.url(), "c").await;
    let admitting = limiter(&server.url(), "a").await;
    let by_prepared = limiter(&server.url(), "ap").await;
    for who in [Subject::new().user("u1"), Subject::new().tenant("acme")] {
        let p = by_prepared.prepare(&who);
        assert!(
            admitting.admit_now(&who, Cost::ONE).is_none(),
            "Redis is awaited"
        );
        assert!(by_prepared.admit_prepared_now(&p, Cost::ONE).is_none());
        let mut outcomes = Vec::new();
        for _ in 0..4 {
            let d = checking.check(&who, Cost::tokens(400)).await.unwrap();
            let a = admitting.admit(&who, Cost::tokens(400)).await.unwrap();
            let b = by_prepared
                .admit_prepared(&p, Cost::tokens(400))
                .await
                .unwrap();
            for x in [a, b] {
                assert_eq!(x.outcome(), d.outcome(), "{who}");
                assert_eq!(x.reason(), d.reason(), "{who}");
                assert_eq!(
                    x.denied_by().map(|l| (l.rule, l.label)),
                    d.denied_by().map(|s| (s.rule, s.label)),
                );
                // The limiters decide a few milliseconds apart on the wall clock.
                let gap = match (x.retry_after(), d.retry_after()) {
                    (Some(x), Some(d)) => x.abs_diff(d),
                    (None, None) => std::time::Duration::ZERO,
                    other => panic!("{who}: retry_after differs: {other:?}"),
                };
                assert!(gap < std::time::Duration::from_secs(1), "{who}: {gap:?}");
            }
            outcomes.push(d.outcome());
        }
        assert!(outcomes.contains(&Outcome::Allowed), "{who}: {outcomes:?}");
        assert!(outcomes.contains(&Outcome::Denied), "{who}: {outcomes:?}");
    }
}
