//! One Redis store used from two runtimes. Its background tasks (the pipeline that sends
//! concurrent script calls together, and the batches of settlements) run on the runtime the
//! store connected on, so a call made on that runtime never waits for another runtime that
//! made the first call and runs nothing since (a current-thread runtime runs its tasks only
//! while it is blocked on).

use std::time::Duration;

use tollgate::store::redis::RedisStore;
use tollgate::{
    BlockingLimiter, Cost, LimitKind, LimitSpec, Limiter, Policy, Rule, Subject, Window,
};
use tollgate_test::RedisServer;

/// Far longer than a call takes on loopback; a stalled call takes forever.
const PATIENCE: Duration = Duration::from_secs(10);

fn policy() -> Policy {
    Policy::builder()
        .rule(
            Rule::builder("per-tenant")
                .per("tenant")
                .limit(LimitSpec::new(LimitKind::Requests, 1_000, Window::MINUTE))
                .limit(LimitSpec::concurrency(4)),
        )
        .build()
        .expect("a valid policy")
}

#[test]
fn calls_from_the_home_runtime_never_wait_for_an_idle_one() {
    let server = RedisServer::start().expect("redis-server starts");
    let home = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let idle = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let store = home
        .block_on(RedisStore::connect(&server.url()))
        .expect("connects");
    let limiter = Limiter::with_store(policy(), store);
    let who = Subject::new().tenant("acme");

    // The first decision and the first settlement are made on the current-thread runtime,
    // which runs nothing once `block_on` returns.
    assert!(idle
        .block_on(limiter.check(&who, Cost::ONE))
        .expect("decides")
        .is_allowed());
    let mut first = idle
        .block_on(limiter.reserve(&who, Cost::ONE))
        .expect("reserves")
        .granted()
        .expect("a free slot");
    idle.block_on(first.cancel()).expect("cancels");

    // Now the same from the home runtime: each call answers.
    home.block_on(async {
        let decided = tokio::time::timeout(PATIENCE, limiter.check(&who, Cost::ONE))
            .await
            .expect("a check from the home runtime does not wait for the idle one")
            .expect("decides");
        assert!(decided.is_allowed());
        let mut permit = tokio::time::timeout(PATIENCE, limiter.reserve(&who, Cost::ONE))
            .await
            .expect("a reservation does not wait for the idle runtime")
            .expect("reserves")
            .granted()
            .expect("a free slot");
        tokio::time::timeout(PATIENCE, permit.cancel())
            .await
            .expect("a settlement does not wait for the idle runtime")
            .expect("cancels");
        let usage = tokio::time::timeout(PATIENCE, limiter.usage(&who))
            .await
            .expect("usage answers")
            .expect("reads usage");
        let slots = usage
            .iter()
            .find(|u| u.kind == LimitKind::Concurrency)
            .expect("the concurrency limit");
        assert_eq!(slots.used, 0, "both slots were given back");
    });
}

/// A blocking facade over a store that connected on the facade's own current-thread runtime,
/// which runs only inside its blocking calls: a permit dropped between two calls gives its
/// slot back before the drop returns. The calls run on a thread of their own, so that a
/// regression fails the test (the drop would wait forever) instead of hanging it.
#[test]
fn a_dropped_blocking_permit_gives_its_slot_back() {
    let server = RedisServer::start().expect("redis-server starts");
    let url = server.url();
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let store = rt.block_on(RedisStore::connect(&url)).expect("connects");
        let policy = Policy::builder()
            .rule(
                Rule::builder("one-at-a-time")
                    .per("tenant")
                    .limit(LimitSpec::concurrency(1)),
            )
            .build()
            .expect("a valid policy");
        let blocking = BlockingLimiter::with_runtime(Limiter::with_store(policy, store), rt);
        let who = Subject::new().tenant("acme");
        let first = blocking
            .reserve(&who, Cost::ONE)
            .expect("reserves")
            .expect("the free slot");
        drop(first);
        let second = blocking.reserve(&who, Cost::ONE).expect("reserves");
        let _ = done.send(second.is_ok());
    });
    assert_eq!(
        outcome.recv_timeout(PATIENCE * 2),
        Ok(true),
        "the dropped permit's slot was given back"
    );
}

/// Decisions awaited on a multi-thread runtime resume on whichever worker is free; each is
/// counted by the thread that finishes it, so the stats add up exactly however the tasks move.
#[test]
fn awaited_decisions_on_many_workers_are_all_counted() {
    const TASKS: u64 = 64;
    const CALLS: u64 = 625;
    let server = RedisServer::start().expect("redis-server starts");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let stats = rt.block_on(async {
        let store = RedisStore::connect(&server.url()).await.expect("connects");
        let limiter = Limiter::with_store(policy(), store);
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    let tenant = format!("t{t}");
                    let who = Subject::new().tenant(tenant.as_str());
                    for i in 0..CALLS {
                        if i % 2 == 0 {
                            limiter.check(&who, Cost::ONE).await.expect("Redis answers");
                        } else {
                            limiter.admit(&who, Cost::ONE).await.expect("Redis answers");
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            tokio::time::timeout(PATIENCE * 6, task)
                .await
                .expect("the calls finish")
                .expect("no task panicked");
        }
        limiter.stats()
    });
    assert_eq!(stats.allowed + stats.denied, TASKS * CALLS);
    assert_eq!(
        stats.allowed,
        TASKS * CALLS,
        "1,000 a minute per tenant admits every call"
    );
}
