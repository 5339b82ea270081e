//! `POST /v1/acquire`: held open until admitted or the wait runs out, bounded by the server,
//! and abandoned (spending nothing) when the client goes away. One test, run in sequence,
//! because it reads the process-wide `tollgate_acquire_waiting` gauge.

mod common;

use std::io::Write;

use common::*;
use serde_json::json;

/// The server's bound (60 s) is far beyond how long the test waits for anything, so a request
/// still waiting after its client left would show.
const SLOTS: &str = r#"
[server]
max_acquire_wait = "60s"

[[rules]]
name = "one-slot"
match = { tenant = "*" }
limits = [{ kind = "concurrency", amount = 1, lease = "5m" }]
"#;

/// The `tollgate_acquire_waiting` gauge.
async fn waiting(s: &Service) -> u64 {
    let m = s.metrics().await;
    m.lines()
        .find_map(|l| l.strip_prefix("tollgate_acquire_waiting "))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap_or(0.0) as u64)
}

async fn hold_the_slot(s: &Service) -> String {
    let r = s
        .post("/v1/reserve", None, json!({ "subject": { "tenant": "t" } }))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["permit"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_waits_is_bounded_and_is_cancelled_when_the_client_leaves() {
    let s = start(SLOTS).await;
    let acquire = |max_wait_ms: u64, permit: bool| json!({ "subject": { "tenant": "t" }, "max_wait_ms": max_wait_ms, "permit": permit });

    // Free: admitted at once, holding nothing (the slot is released as /v1/check would).
    let a = s.post("/v1/acquire", None, acquire(1_000, false)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.get("permit").is_none());
    assert!(a.body["waited_ms"].as_u64().unwrap() < 1_000);

    // Held open until a slot is released.
    let id = hold_the_slot(&s).await;
    let waiter = {
        let (http, url) = (s.http.clone(), s.url("/v1/acquire"));
        let body = acquire(10_000, true);
        tokio::spawn(async move { http.post(url).json(&body).send().await.unwrap() })
    };
    eventually("the acquire to wait", || async { waiting(&s).await == 1 }).await;
    let c = s
        .post(&format!("/v1/permits/{id}/cancel"), None, json!({}))
        .await;
    assert_eq!(c.status, 200, "{}", c.body);
    let r = waiter.await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["allowed"], true, "{body}");
    let held = body["permit"]["id"].as_str().unwrap().to_owned();
    assert_eq!(waiting(&s).await, 0);

    // The wait runs out: the last denial, with how long it waited.
    let a = s.post("/v1/acquire", None, acquire(150, false)).await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(a.body["waited_ms"].as_u64().unwrap() >= 150, "{}", a.body);
    assert!(a.header("retry-after").is_some());

    // A client that goes away: its request leaves the queue, and is never admitted.
    let addr = s.base.trim_start_matches("http://").to_owned();
    let raw = acquire(60_000, false).to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "POST /v1/acquire HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{raw}",
        raw.len()
    )
    .unwrap();
    eventually("the raw acquire to wait", || async {
        waiting(&s).await == 1
    })
    .await;
    drop(conn);
    eventually("the abandoned acquire to leave", || async {
        waiting(&s).await == 0
    })
    .await;
    // Releasing the slot now admits a new caller: the abandoned request took nothing.
    let c = s
        .post(&format!("/v1/permits/{held}/cancel"), None, json!({}))
        .await;
    assert_eq!(c.status, 200);
    let a = s.post("/v1/acquire", None, acquire(0, true)).await;
    assert_eq!(a.status, 200, "{}", a.body);

    // Bounded by the server: a longer max_wait_ms is cut to max_acquire_wait (2 s here), and
    // beyond max_waiters requests get 503.
    s.stop().await;
    let s = start(&SLOTS.replace("\"60s\"", "\"2s\"\nmax_waiters = 1")).await;
    let _slot = hold_the_slot(&s).await;
    let a = s.post("/v1/acquire", None, acquire(600_000, false)).await;
    assert_eq!(a.status, 429, "{}", a.body);
    let waited = a.body["waited_ms"].as_u64().unwrap();
    assert!(
        (2_000..60_000).contains(&waited),
        "cut to the server's bound: {waited} ms"
    );
    let first = {
        let (http, url) = (s.http.clone(), s.url("/v1/acquire"));
        let body = acquire(2_000, false);
        tokio::spawn(async move { http.post(url).json(&body).send().await.unwrap() })
    };
    eventually("the first to wait", || async { waiting(&s).await == 1 }).await;
    let a = s.post("/v1/acquire", None, acquire(2_000, false)).await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(first.await.unwrap().status().as_u16(), 429);
    s.stop().await;
}
