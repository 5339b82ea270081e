//! Concurrency leases in Redis: a holder killed with SIGKILL loses its slots when its lease
//! expires, and not before.
//!
//! The holder is this test binary run again with `TOLLGATE_LEASE_HOLDER` set; it takes two
//! slots, says so, and waits to be killed. Both processes use the same time override, so the
//! expiry is reached by moving the parent's clock, not by waiting.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use tollgate::store::redis::{RedisConfig, RedisStore};
use tollgate::{Cost, LimitSpec, Limiter, ManualClock, Policy, Rule, Subject, Timestamp};
use tollgate_test::RedisServer;

const HOLDER: &str = "TOLLGATE_LEASE_HOLDER";
const NOW: Timestamp = Timestamp::from_secs(1_700_000_000);
const LEASE: Duration = Duration::from_secs(45);

async fn limiter(url: &str, clock: ManualClock) -> Limiter<RedisStore> {
    let policy = Policy::builder()
        .rule(
            Rule::builder("slots")
                .per("model")
                .limit(LimitSpec::concurrency(2).lease(LEASE)),
        )
        .build()
        .unwrap();
    let config = RedisConfig {
        prefix: "leases".into(),
        ..RedisConfig::default()
    };
    let store = RedisStore::connect_with(url, config)
        .await
        .unwrap()
        .with_time_override(clock);
    Limiter::with_store(policy, store)
}

/// The holder process: takes both slots and waits to be killed.
#[test]
fn holder() {
    let Ok(url) = std::env::var(HOLDER) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let l = limiter(&url, ManualClock::new(NOW)).await;
        let s = Subject::new().model("m");
        let a = l
            .reserve(&s, Cost::ONE)
            .await
            .unwrap()
            .granted()
            .expect("slot 1");
        let b = l
            .reserve(&s, Cost::ONE)
            .await
            .unwrap()
            .granted()
            .expect("slot 2");
        println!("\nHELD");
        // Hold the permits until SIGKILL: no Drop will ever run.
        std::future::pending::<()>().await;
        drop((a, b));
    });
}

#[tokio::test]
async fn a_killed_holder_loses_its_slots_when_the_lease_expires() {
    if std::env::var(HOLDER).is_ok() {
        return;
    }
    let server = RedisServer::start().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "holder", "--nocapture"])
        .env(HOLDER, server.url())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let held = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("HELD"));
    assert!(held, "the holder took its slots");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let clock = ManualClock::new(NOW);
    let l = limiter(&server.url(), clock.clone()).await;
    let s = Subject::new().model("m");
    let d = l.reserve(&s, Cost::ONE).await.unwrap();
    assert_eq!(
        d.decision().retry_after(),
        Some(LEASE),
        "the dead holder's slots are still leased"
    );
    clock.advance(LEASE - Duration::from_micros(1));
    assert!(
        l.reserve(&s, Cost::ONE).await.unwrap().granted().is_none(),
        "not a microsecond early"
    );
    clock.advance(Duration::from_micros(1));
    let a = l.reserve(&s, Cost::ONE).await.unwrap().granted();
    let b = l.reserve(&s, Cost::ONE).await.unwrap().granted();
    assert!(
        a.is_some() && b.is_some(),
        "both slots are free once the lease expired"
    );
}
