//! Routing in a Redis Cluster while a slot migrates: a decision whose keys a migration has split
//! between two nodes (answered `TRYAGAIN`) keeps being retried, promptly, and goes through
//! exactly once when its keys have moved (answered `ASK`); a decision sent to the slot's old
//! owner after the migration follows `MOVED`.
//!
//! The migration is driven by hand with `CLUSTER SETSLOT` and `MIGRATE`, so the test holds the
//! slot half-moved for as long as it needs.

use std::time::{Duration, Instant};

use tollgate::store::redis::{RedisConfig, RedisStore};
use tollgate::{
    Cost, LimitKind, LimitSpec, Limiter, ManualClock, Policy, Rule, Subject, Timestamp, Window,
};
use tollgate_test::{key_slot, RedisCluster};

const NOW: Timestamp = Timestamp::from_secs(1_700_000_000);

/// One rule with two limits: a decision touches two keys in one slot.
fn policy() -> Policy {
    Policy::builder()
        .rule(
            Rule::builder("mig")
                .per("tenant")
                .limit(LimitSpec::new(LimitKind::Requests, 10, Window::MINUTE))
                .limit(LimitSpec::new(LimitKind::Tokens, 1000, Window::MINUTE)),
        )
        .build()
        .unwrap()
}

/// A limiter on `cluster` with keys under `prefix`, time fixed at [`NOW`], and
/// `response_timeout` for each call.
async fn limiter_on(
    cluster: &RedisCluster,
    prefix: &str,
    response_timeout: Duration,
) -> Limiter<RedisStore> {
    let config = RedisConfig {
        prefix: prefix.into(),
        response_timeout,
        ..RedisConfig::default()
    };
    let store = RedisStore::connect_cluster(&cluster.urls(), config)
        .await
        .unwrap()
        .with_time_override(ManualClock::new(NOW));
    Limiter::with_store(policy(), store)
}

/// Asserts that tenant `t`'s decision of one request and 10 tokens is admitted.
async fn admits(limiter: &Limiter<RedisStore>) {
    let decision = limiter
        .check(&Subject::new().tenant("t"), Cost::tokens(10))
        .await
        .unwrap();
    assert!(decision.is_allowed());
}

/// The number after `field` (such as `errorstat_TRYAGAIN:count=`) in node `i`'s `INFO all`,
/// 0 if it is not there.
fn stat(cluster: &RedisCluster, i: usize, field: &str) -> u64 {
    let info = cluster.nodes()[i].cli(&["INFO", "all"]).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(field))
        .map_or(0, |rest| {
            let n = rest.split(|c: char| !c.is_ascii_digit()).next().unwrap();
            n.parse().unwrap()
        })
}

/// The keys matching `pattern` on the nodes `masters`.
fn keys_on(cluster: &RedisCluster, masters: &[usize], pattern: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for &m in masters {
        let found = cluster.nodes()[m]
            .cli(&["--scan", "--pattern", pattern])
            .unwrap();
        keys.extend(found.lines().filter(|k| !k.is_empty()).map(str::to_owned));
    }
    keys
}

/// Moves `keys` from node `from` to node `to` with `MIGRATE`.
fn migrate(cluster: &RedisCluster, from: usize, to: usize, keys: &[&str]) {
    let port = cluster.nodes()[to].port().to_string();
    let mut args = vec![
        "MIGRATE",
        "127.0.0.1",
        port.as_str(),
        "",
        "0",
        "5000",
        "KEYS",
    ];
    args.extend_from_slice(keys);
    let out = cluster.nodes()[from].cli(&args).unwrap();
    assert_eq!(out.trim(), "OK", "MIGRATE {keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_on_a_slot_in_migration_retries_until_the_slot_has_moved() {
    let cluster = RedisCluster::start().unwrap();
    // A timeout long enough that only a call that stops retrying can fail.
    let limiter = limiter_on(&cluster, "mig", Duration::from_secs(5)).await;
    let tenant = Subject::new().tenant("t");
    admits(&limiter).await;

    // The decision's two buckets, their slot, and who serves it.
    let masters = cluster.masters().unwrap();
    let keys = keys_on(&cluster, &masters, "mig:*");
    assert_eq!(keys.len(), 2, "one bucket per limit: {keys:?}");
    let slot = key_slot(keys[0].as_bytes());
    assert_eq!(slot, key_slot(keys[1].as_bytes()), "one rule shares a slot");
    let source = cluster.slot_owner(slot).unwrap();
    let target = *masters.iter().find(|&&m| m != source).unwrap();
    let (source_id, target_id) = (
        cluster.node_id(source).unwrap(),
        cluster.node_id(target).unwrap(),
    );
    let slot_arg = slot.to_string();
    let setslot = |node: usize, how: &[&str]| {
        let mut args = vec!["CLUSTER", "SETSLOT", slot_arg.as_str()];
        args.extend_from_slice(how);
        let out = cluster.nodes()[node].cli(&args).unwrap();
        assert_eq!(
            out.trim(),
            "OK",
            "CLUSTER SETSLOT {slot} {how:?} on node {node}"
        );
    };

    // Half-way through a migration: one bucket has moved, the other has not. The source answers
    // TRYAGAIN (it holds one of the keys, not both).
    setslot(target, &["IMPORTING", source_id.as_str()]);
    setslot(source, &["MIGRATING", target_id.as_str()]);
    migrate(&cluster, source, target, &[keys[0].as_str()]);
    let before = stat(&cluster, source, "errorstat_TRYAGAIN:count=");
    let pending = tokio::spawn({
        let limiter = limiter.clone();
        async move {
            limiter
                .check(&Subject::new().tenant("t"), Cost::tokens(10))
                .await
        }
    });
    // The call keeps retrying while the slot stays split, and is still pending after ten
    // TRYAGAINs: with a backoff capped at 100 ms they come well within the call's 5 s timeout,
    // while a client that waits seconds between retries (or gives up) ends the call first,
    // which fails the assertion below.
    while stat(&cluster, source, "errorstat_TRYAGAIN:count=") < before + 10 {
        assert!(
            !pending.is_finished(),
            "the call ended after {} TRYAGAINs, with the slot still split: {:?}",
            stat(&cluster, source, "errorstat_TRYAGAIN:count=") - before,
            pending.await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!pending.is_finished(), "still waiting for the slot");

    // The other bucket moves too. The source now answers ASK, and the target serves the call
    // after ASKING, before the migration is declared done.
    let asked = stat(&cluster, target, "cmdstat_asking:calls=");
    migrate(&cluster, source, target, &[keys[1].as_str()]);
    let decision = pending.await.unwrap().expect("the call goes through");
    assert!(decision.is_allowed());
    assert!(
        stat(&cluster, target, "cmdstat_asking:calls=") > asked,
        "the target served it after ASKING"
    );

    // The migration ends: every master learns the new owner.
    for &m in &masters {
        setslot(m, &["NODE", target_id.as_str()]);
    }

    // A client that reads the map now decides on the new owner; the first one still sends the
    // slot to the old owner and follows its MOVED. The buckets hold exactly what the four
    // decisions spent.
    let other = limiter_on(&cluster, "mig", RedisConfig::default().response_timeout).await;
    admits(&other).await;
    let moved = stat(&cluster, source, "errorstat_MOVED:count=");
    admits(&limiter).await;
    assert_eq!(
        stat(&cluster, source, "errorstat_MOVED:count="),
        moved + 1,
        "the first client was sent on by the old owner"
    );
    let used: Vec<u64> = limiter
        .usage(&tenant)
        .await
        .unwrap()
        .iter()
        .map(|u| u.used)
        .collect();
    assert_eq!(
        used,
        vec![4, 40],
        "four decisions of 1 request and 10 tokens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_come_back_after_a_paused_master_is_failed_over() {
    let cluster = RedisCluster::start().unwrap();
    let limiter = limiter_on(&cluster, "paused", RedisConfig::default().response_timeout).await;
    let tenant = Subject::new().tenant("t");
    admits(&limiter).await;
    let masters = cluster.masters().unwrap();
    let keys = keys_on(&cluster, &masters, "paused:*");
    let slot = key_slot(keys[0].as_bytes());
    let master = cluster.slot_owner(slot).unwrap();
    let witness = *masters.iter().find(|&&m| m != master).unwrap();

    // The master stops answering without closing its sockets; its replica takes over.
    cluster.nodes()[master].pause();
    let waiting = Instant::now();
    loop {
        if cluster.slot_owner_seen_by(witness, slot).unwrap() != master {
            break;
        }
        // A bound on the wait, not a timing under test: a failover takes 2 to 4 s here.
        assert!(
            waiting.elapsed() < Duration::from_secs(30),
            "no failover of slot {slot}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The store, still holding the old map, finds the new master: a call that times out on the
    // paused one has the map re-read. The calls made before the re-read has an answer time out
    // (1 s each; one or two); with no re-read they would time out for good.
    let mut failed = 0;
    loop {
        match limiter.check(&tenant, Cost::tokens(10)).await {
            Ok(d) => {
                assert!(d.is_allowed());
                break;
            }
            Err(e) => {
                assert!(
                    matches!(e, tollgate::Error::Store(tollgate::StoreError::Timeout(_))),
                    "a call to the paused master times out: {e}"
                );
                failed += 1;
                assert!(failed <= 5, "call {failed} after the failover failed: {e}");
            }
        }
    }
    // Calls keep going to the new master.
    for _ in 0..3 {
        admits(&limiter).await;
    }
    cluster.nodes()[master].resume();
}
