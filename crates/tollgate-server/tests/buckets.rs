//! `tollgate_active_buckets` follows what the memory store holds: down to 0 once every bucket
//! has refilled and been swept, and from there up again (not from a stale count).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const POLICY: &str = r#"
[[rules]]
name = "gauged"
match = { tenant = "*" }
limits = [{ kind = "requests", amount = 10, per = "hour" }]
"#;

async fn gauge(s: &Service) -> Option<u64> {
    let m = s.metrics().await;
    m.lines()
        .find(|l| l.starts_with("tollgate_active_buckets{rule=\"gauged\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn the_active_buckets_gauge_reads_what_the_store_holds_after_a_sweep() {
    let s = start(POLICY).await;
    for i in 0..50 {
        let a = s
            .check(None, json!({ "tenant": format!("t{i}") }), json!({}))
            .await;
        assert!(a.allowed());
    }
    assert_eq!(gauge(&s).await, Some(50));

    // Every bucket refills; a sweep (the service's own, or this one) drops them all.
    s.clock.advance(Duration::from_secs(3_600));
    s.running.sweep_buckets();
    assert_eq!(gauge(&s).await, Some(0));

    let a = s.check(None, json!({ "tenant": "again" }), json!({})).await;
    assert!(a.allowed());
    assert_eq!(gauge(&s).await, Some(1));
    s.stop().await;
}
