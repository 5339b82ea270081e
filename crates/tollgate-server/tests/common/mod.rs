//! Shared helpers: start a service on ephemeral loopback ports with a manual clock.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tollgate::{ManualClock, Timestamp};
use tollgate_server::config::Config;
use tollgate_server::server::{self, Options, Running};

pub const ADMIN: &str = "admin-token-0123456789";
pub const ACME: &str = "acme-token-0123456789";
pub const GLOBEX: &str = "globex-token-0123456789";
pub const UNBOUND: &str = "unbound-token-0123456789";

pub const AUTH: &str = r#"
[auth]
admin_token = "admin-token-0123456789"

[[auth.clients]]
name = "acme"
token = "acme-token-0123456789"
tenant = "acme"

[[auth.clients]]
name = "globex"
token = "globex-token-0123456789"
tenant = "globex"

[[auth.clients]]
name = "gateway"
token = "unbound-token-0123456789"
"#;

pub struct Service {
    pub running: Running,
    pub clock: ManualClock,
    pub http: reqwest::Client,
    pub base: String,
}

/// A config from TOML with both listeners on ephemeral loopback ports.
pub fn config(toml: &str) -> Config {
    let mut c = Config::from_toml(toml, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    c.server.http = "127.0.0.1:0".parse().unwrap();
    c.server.grpc = Some("127.0.0.1:0".parse().unwrap());
    c
}

pub async fn start_config(config: Config) -> Service {
    let clock = ManualClock::new(Timestamp::from_secs(1_750_000_000));
    let running = server::start(Options {
        config,
        clock: Some(Arc::new(clock.clone())),
        ..Options::default()
    })
    .await
    .unwrap();
    let base = running.url();
    Service {
        running,
        clock,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        base,
    }
}

pub async fn start(toml: &str) -> Service {
    start_config(config(toml)).await
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn allowed(&self) -> bool {
        self.body["allowed"] == json!(true)
    }
}

impl Service {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn answer(resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        let mut rb = self.http.post(self.url(path)).json(&body);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        Self::answer(rb.send().await.unwrap()).await
    }

    pub async fn post_raw(&self, path: &str, token: Option<&str>, body: Vec<u8>) -> Answer {
        let mut rb = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        Self::answer(rb.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        let mut rb = self.http.get(self.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        Self::answer(rb.send().await.unwrap()).await
    }

    pub async fn check(&self, token: Option<&str>, subject: Value, cost: Value) -> Answer {
        self.post(
            "/v1/check",
            token,
            json!({ "subject": subject, "cost": cost }),
        )
        .await
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `used` of the first limit of `kind` in /v1/usage for `query`.
    pub async fn used(&self, token: Option<&str>, query: &str, kind: &str) -> u64 {
        let a = self.get(&format!("/v1/usage?{query}"), token).await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.body["limits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["kind"] == json!(kind))
            .map(|l| l["used"].as_u64().unwrap())
            .unwrap_or_else(|| panic!("no {kind} limit in {}", a.body))
    }

    pub async fn stop(self) {
        self.running.shutdown().await;
    }
}

impl Service {
    /// Waits until `/readyz` says the store answers: a Redis store behind the fallback
    /// connects in the background, and decides by the failure modes until then.
    pub async fn until_ready(&self) {
        eventually("the store to answer /readyz", || async {
            self.get("/readyz", None).await.body["status"] == "ready"
        })
        .await;
    }
}

/// Polls `f` until it is true, for at most 10 s (for events such as a file watch firing;
/// never used to wait for a rate window).
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}
