//! Connections and bad clients, over real sockets: the read and idle timeouts, the connection
//! cap, request framing (`Content-Length` with `Transfer-Encoding`), query strings that are
//! not UTF-8, and gRPC messages that do not decode.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const POLICY: &str = r#"
[[rules]]
name = "per-tenant"
match = { tenant = "*" }
limits = [{ kind = "requests", amount = 1000, per = "hour" }]
"#;

/// Reads until the peer closes the connection (EOF or reset), for at most 10 s; the bytes read.
async fn until_closed(c: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .expect("the service kept the connection open");
    got
}

/// Reads `n` whole HTTP responses (each with a `content-length`) from `c`.
async fn responses(c: &mut TcpStream, n: usize) -> Vec<String> {
    let mut raw = Vec::new();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < n {
        let k = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("no answer")
            .unwrap();
        assert!(k > 0, "closed after {} answers: {out:?}", out.len());
        raw.extend_from_slice(&buf[..k]);
        loop {
            let text = String::from_utf8_lossy(&raw).into_owned();
            let Some(head_end) = text.find("\r\n\r\n") else {
                break;
            };
            let len: usize = text[..head_end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("a content-length");
            if raw.len() < head_end + 4 + len {
                break;
            }
            out.push(text[..head_end + 4 + len].to_owned());
            raw.drain(..head_end + 4 + len);
        }
    }
    out
}

fn check_request(tenant: &str, framing: &str, body: &str) -> String {
    let body = body.replace("{tenant}", tenant);
    let body = if framing.contains("chunked") {
        format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
    } else {
        body
    };
    format!("POST /v1/check HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n{framing}\r\n\r\n{body}")
}

const BODY: &str = r#"{"subject":{"tenant":"{tenant}"}}"#;

#[tokio::test]
async fn length_with_chunked_encoding_is_refused_and_honest_framing_is_served() {
    let s = start(POLICY).await;
    let addr = s.running.http;
    let body = BODY.replace("{tenant}", "framing");
    let length = format!("content-length: {}", body.len());

    // Chunked alone, and pipelined requests of both framings on one connection, are served.
    let mut c = TcpStream::connect(addr).await.unwrap();
    let two = format!(
        "{}{}",
        check_request("framing", &length, BODY),
        check_request("framing", "transfer-encoding: chunked", BODY)
    );
    c.write_all(two.as_bytes()).await.unwrap();
    for r in responses(&mut c, 2).await {
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }

    // Both headers, in either order, after a good request on the same connection: 400, and
    // the connection is closed.
    for both in [
        format!("{length}\r\ntransfer-encoding: chunked"),
        format!("transfer-encoding: chunked\r\n{length}"),
    ] {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let text = format!(
            "{}{}",
            check_request("framing", &length, BODY),
            check_request("framing", &both, BODY)
        );
        c.write_all(text.as_bytes()).await.unwrap();
        let got = String::from_utf8_lossy(&until_closed(&mut c).await).into_owned();
        let (first, second) = got.split_at(got.find("HTTP/1.1 400").expect(&got));
        assert!(first.starts_with("HTTP/1.1 200"), "{got}");
        assert!(
            second.contains("Content-Length and Transfer-Encoding"),
            "{got}"
        );
        assert!(
            second.to_ascii_lowercase().contains("connection: close"),
            "{got}"
        );
    }
    // Only the honest requests spent: 2 + 2 × 1.
    assert_eq!(s.used(None, "tenant=framing", "requests").await, 4);
    s.stop().await;
}

#[tokio::test]
async fn bodies_larger_than_a_head_still_stream_in() {
    // hyper's buffer is bounded by the largest head (64 KiB); a body may be larger.
    let s = start(&format!("[server]\nmax_body_bytes = 1048576\n{POLICY}")).await;
    let id = "x".repeat(300 * 1024);
    let a = s
        .post(
            "/v1/check",
            None,
            json!({ "subject": { "tenant": "big" }, "request_id": id }),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("request_id"),
        "{}",
        a.body
    );
    s.stop().await;
}

#[tokio::test]
async fn a_query_value_that_is_not_utf8_is_refused_naming_the_field() {
    let s = start(POLICY).await;
    for q in ["tenant=%FF", "tenant=%FE", "tenant=a&tenant=b", "tenant=%F"] {
        let a = s.get(&format!("/v1/usage?{q}"), None).await;
        assert_eq!(a.status, 400, "{q}: {}", a.body);
        let msg = a.body["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with("query.tenant: "), "{q}: {msg}");
    }
    // Valid escapes still decode (`%C3%A9` is é).
    let a = s.check(None, json!({ "tenant": "café" }), json!({})).await;
    assert!(a.allowed());
    assert_eq!(s.used(None, "tenant=caf%C3%A9", "requests").await, 1);
    s.stop().await;
}

const TIMEOUTS: &str = r#"
[server]
request_read_timeout = "300ms"
idle_timeout = "600ms"
"#;

/// How long after `since` the service closed `c`.
async fn closed_after(c: &mut TcpStream, since: Instant) -> Duration {
    until_closed(c).await;
    since.elapsed()
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed() {
    let s = start(&format!("{TIMEOUTS}{POLICY}")).await;
    let addr = s.running.http;
    // Lower bounds are taken from before each client's first byte, so that a slow test
    // process cannot make them fail.
    let read = Duration::from_millis(290);
    let t0 = Instant::now();
    // Connects and sends nothing.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // Sends half a head.
    let mut slow_head = TcpStream::connect(addr).await.unwrap();
    slow_head
        .write_all(b"POST /v1/check HTTP/1.1\r\nhost: t\r\n")
        .await
        .unwrap();
    // Sends a whole head and half its body.
    let mut slow_body = TcpStream::connect(addr).await.unwrap();
    slow_body
        .write_all(b"POST /v1/check HTTP/1.1\r\nhost: t\r\ncontent-length: 40\r\n\r\n{\"subject\"")
        .await
        .unwrap();
    // Asks once, then keeps the connection idle.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let t_idle = Instant::now();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    assert!(responses(&mut idle, 1).await[0].starts_with("HTTP/1.1 200"));

    let (a, b, c, d) = tokio::join!(
        closed_after(&mut silent, t0),
        closed_after(&mut slow_head, t0),
        closed_after(&mut slow_body, t0),
        closed_after(&mut idle, t_idle),
    );
    for (what, took) in [("silent", a), ("slow head", b), ("slow body", c)] {
        assert!(took >= read, "{what} closed after {took:?}");
    }
    assert!(d >= Duration::from_millis(590), "idle closed after {d:?}");

    // A gRPC connection that never sends the HTTP/2 preface is closed as well.
    let t = Instant::now();
    let mut grpc = TcpStream::connect(s.running.grpc.unwrap()).await.unwrap();
    assert!(closed_after(&mut grpc, t).await >= read);

    let m = s.metrics().await;
    for (listener, reason) in [
        ("http", "read_timeout"),
        ("http", "idle_timeout"),
        ("grpc", "read_timeout"),
    ] {
        assert!(
            m.lines()
                .any(|l| l.starts_with("tollgate_connections_closed_total{")
                    && l.contains(&format!("listener=\"{listener}\""))
                    && l.contains(&format!("reason=\"{reason}\""))),
            "{listener} {reason}: {m}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn at_the_cap_a_new_client_is_answered_and_the_oldest_slow_one_is_closed() {
    let s = start(&format!("[server]\nmax_connections = 4\n{POLICY}")).await;
    let addr = s.running.http;
    // Four slow clients fill the cap (the read timeout, 10 s, does not end them here).
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"POST /v1/check HTTP/1.1\r\n").await.unwrap();
        slow.push(c);
    }
    // Each new client is answered; each closes the oldest slow client.
    for i in 0..2 {
        let t = Instant::now();
        let a = s
            .check(None, json!({ "tenant": format!("capped-{i}") }), json!({}))
            .await;
        assert!(a.allowed(), "{}", a.body);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }
    let mut oldest = slow.remove(0);
    until_closed(&mut oldest).await;
    let m = s.metrics().await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("tollgate_connections_closed_total{")
                && l.contains("reason=\"evicted\"")),
        "{m}"
    );
    s.stop().await;
}

/// A codec that sends bytes as they are, to put a malformed message on the wire.
#[derive(Clone, Copy, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(buf);
        Ok(Some(bytes::Buf::copy_to_bytes(buf, n).to_vec()))
    }
}

#[tokio::test]
async fn a_grpc_message_that_does_not_decode_is_invalid_argument() {
    let s = start(POLICY).await;
    let url = format!("http://{}", s.running.grpc.unwrap());
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
    );
    // Field 1 (domain), length-delimited, whose length is a varint that never ends; then a
    // field number 0; then a string that is not UTF-8.
    for bad in [
        vec![0x0a, 0xff, 0xff, 0xff],
        vec![0x00, 0x01],
        vec![0x0a, 0x02, 0xff, 0xfe],
    ] {
        grpc.ready().await.unwrap();
        let e = grpc
            .unary(tonic::Request::new(bad.clone()), path.clone(), Raw)
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}: {e:?}");
        assert!(e.message().contains("decode"), "{e:?}");
    }
    // An empty message decodes (every field at its default) and is refused by the handler:
    // its domain is empty (checked first, as envoyproxy/ratelimit does).
    grpc.ready().await.unwrap();
    let e = grpc
        .unary(tonic::Request::new(Vec::new()), path, Raw)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("domain"), "{e:?}");
    s.stop().await;
}
