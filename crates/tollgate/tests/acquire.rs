//! Waiting for admission, on tokio's paused clock: sleeps advance time instantly and exactly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tollgate::{
    Cost, LimitKind, LimitSpec, Limiter, MemoryStore, Outcome, Policy, Rule, Subject, Timestamp,
    TokioClock, Window,
};

fn limiter(rule: tollgate::policy::RuleBuilder) -> Limiter {
    let policy = Policy::builder().rule(rule).build().unwrap();
    let clock = TokioClock::starting_at(Timestamp::from_secs(1_700_000_000));
    Limiter::with_store(policy, MemoryStore::with_clock(clock))
}

fn one_per_second() -> tollgate::policy::RuleBuilder {
    Rule::builder("rps")
        .per("tenant")
        .limit(LimitSpec::new(LimitKind::Requests, 1, Window::SECOND))
}

fn t() -> Subject<'static> {
    Subject::new().tenant("t")
}

#[tokio::test(start_paused = true)]
async fn acquire_sleeps_exactly_until_retry_after() {
    let l = limiter(one_per_second());
    let start = Instant::now();
    assert!(l.check(&t(), Cost::ONE).await.unwrap().is_allowed());
    let r = l
        .acquire(&t(), Cost::ONE, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(r.decision().is_allowed());
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_arrival_order() {
    let l = limiter(one_per_second());
    assert!(l.check(&t(), Cost::ONE).await.unwrap().is_allowed());
    let start = Instant::now();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..5 {
        let (l, order) = (l.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let r = l
                .acquire(&t(), Cost::ONE, Duration::from_secs(60))
                .await
                .unwrap();
            assert!(r.decision().is_allowed());
            order.lock().unwrap().push((i, start.elapsed()));
        }));
        // Let task i queue before task i + 1 arrives.
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    let expected: Vec<(i32, Duration)> = (0..5)
        .map(|i| (i, Duration::from_secs(i as u64 + 1)))
        .collect();
    assert_eq!(order, expected);
}

#[tokio::test(start_paused = true)]
async fn a_released_slot_wakes_the_waiter_before_its_timer() {
    let l = limiter(
        Rule::builder("slots")
            .per("tenant")
            .limit(LimitSpec::concurrency(1).lease(Duration::from_secs(600))),
    );
    let holder = l.reserve(&t(), Cost::ONE).await.unwrap().granted().unwrap();
    let start = Instant::now();
    let waiter = {
        let l = l.clone();
        tokio::spawn(async move {
            let r = l
                .acquire(&t(), Cost::ONE, Duration::from_secs(60))
                .await
                .unwrap();
            (r.decision().is_allowed(), start.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop(holder);
    let (allowed, waited) = waiter.await.unwrap();
    assert!(allowed);
    assert_eq!(waited, Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_returns_the_denial_with_its_retry_after() {
    let l = limiter(Rule::builder("slow").per("tenant").limit(LimitSpec::new(
        LimitKind::Requests,
        1,
        Window::MINUTE,
    )));
    assert!(l.check(&t(), Cost::ONE).await.unwrap().is_allowed());
    let start = Instant::now();
    let r = l
        .acquire(&t(), Cost::ONE, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!(r.decision().outcome(), Outcome::Denied);
    assert_eq!(r.decision().retry_after(), Some(Duration::from_secs(50)));
}

#[tokio::test(start_paused = true)]
async fn refunds_wake_waiters_early() {
    let l = limiter(Rule::builder("tpm").per("tenant").limit(LimitSpec::new(
        LimitKind::Tokens,
        1000,
        Window::MINUTE,
    )));
    let mut big = l
        .reserve(&t(), Cost::tokens(1000))
        .await
        .unwrap()
        .granted()
        .unwrap();
    let start = Instant::now();
    let waiter = {
        let l = l.clone();
        tokio::spawn(async move {
            let r = l
                .acquire(&t(), Cost::tokens(500), Duration::from_secs(60))
                .await
                .unwrap();
            (r.decision().is_allowed(), start.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    big.commit(Cost::tokens(100)).await.unwrap();
    let (allowed, waited) = waiter.await.unwrap();
    assert!(allowed);
    assert_eq!(waited, Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn run_holds_the_slot_for_the_future() {
    let l = limiter(
        Rule::builder("slots")
            .per("tenant")
            .limit(LimitSpec::concurrency(1)),
    );
    let l2 = l.clone();
    let out = l
        .run(&t(), Cost::ONE, Duration::ZERO, async move {
            let inside = l2.check(&t(), Cost::ONE).await.unwrap();
            assert!(!inside.is_allowed());
            42
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, 42);
    assert!(l.check(&t(), Cost::ONE).await.unwrap().is_allowed());
}

#[test]
fn the_blocking_facade_waits_on_its_own_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let clock = rt.block_on(async { TokioClock::starting_at(Timestamp::from_secs(1_000)) });
    let policy = Policy::builder().rule(one_per_second()).build().unwrap();
    let l = tollgate::BlockingLimiter::with_runtime(
        Limiter::with_store(policy, MemoryStore::with_clock(clock)),
        rt,
    );
    for _ in 0..3 {
        let p = l
            .acquire(&t(), Cost::ONE, Duration::from_secs(10))
            .unwrap()
            .unwrap();
        p.commit(Cost::ONE).unwrap();
    }
    // The third call was admitted exactly two (paused) seconds in: the next is due in one.
    let denied = l.reserve(&t(), Cost::ONE).unwrap().unwrap_err();
    assert_eq!(denied.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(l.stats().allowed, 3);
}

#[tokio::test(start_paused = true)]
async fn a_kept_alive_permit_outlives_its_lease() {
    let l = limiter(
        Rule::builder("slots")
            .per("tenant")
            .limit(LimitSpec::concurrency(1).lease(Duration::from_secs(30))),
    );
    let mut streaming = l.reserve(&t(), Cost::ONE).await.unwrap().granted().unwrap();
    streaming.keep_alive(Duration::from_secs(10));
    // A long stream: ten leases' worth of time.
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert!(
        !l.check(&t(), Cost::ONE).await.unwrap().is_allowed(),
        "still held after 300 s"
    );
    drop(streaming);
    assert!(
        l.check(&t(), Cost::ONE).await.unwrap().is_allowed(),
        "released on drop"
    );

    // Without keep_alive the lease lapses.
    let forgotten = l.reserve(&t(), Cost::ONE).await.unwrap().granted().unwrap();
    std::mem::forget(forgotten);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        l.check(&t(), Cost::ONE).await.unwrap().is_allowed(),
        "an unrenewed lease expires"
    );
}
