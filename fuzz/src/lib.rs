//! What the fuzz targets share: the service in process (an [`App`] over the memory store with
//! forward-auth, gRPC descriptors and tokens configured), driven through its real HTTP router
//! and gRPC service without sockets, and the checks every answer must pass.
//!
//! The checks: no panic anywhere (a panic in a handler is the fuzzer's crash); no 5xx over the
//! memory store, which never fails (bad input is the caller's fault: 4xx with a message); every
//! error body is the API's JSON error shape with a message.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tollgate::MemoryStore;
use tollgate_core::SystemClock;
use tollgate_server::app::App;
use tollgate_server::config::Config;

/// The admin's token in [`CONFIG`].
pub const ADMIN_TOKEN: &str = "admin-token-0123456789";
/// The `acme` client's token in [`CONFIG`] (bound to tenant `acme`).
pub const CLIENT_TOKEN: &str = "acme-token-0123456789";

/// The service's configuration under fuzzing: every request-reading feature switched on, and
/// caps small enough that a long run stays within memory.
pub const CONFIG: &str = r#"
[server]
trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]
max_body_bytes = 65536
max_permits = 10000

[memory]
max_buckets = 100000

[auth]
admin_token = "admin-token-0123456789"

[[auth.clients]]
name = "acme"
token = "acme-token-0123456789"
tenant = "acme"

[forward_auth]
attributes = { tenant = "x-tenant-id", user = "x-user-id", model = "x-model" }
tokens_header = "x-estimated-tokens"
ip_attribute = "ip"

[grpc]
domain_attribute = "domain"
descriptors = { user_id = "user", remote_address = "ip" }
hits_addend = "tokens"

[[rules]]
name = "per-tenant"
match = { tenant = "*" }
limits = [
  { kind = "requests", amount = 100, per = "minute", burst = 10 },
  { kind = "tokens", amount = 100000, per = "minute" },
  { kind = "concurrency", amount = 5, lease = "1m" },
]

[[rules.overrides]]
match = { tenant = "premium" }
limits = [{ kind = "requests", amount = 1000, per = "minute" }]

[rules.tiers.pro]
limits = [{ kind = "requests", amount = 500, per = "hour", algorithm = "sliding_window" }]

[[rules]]
name = "per-user-model"
match = { user = "*", model = "gpt-4*" }
limits = [
  { kind = "input_tokens", amount = 5000, per = "hour", algorithm = "sliding_log" },
  { kind = "output_tokens", amount = 5000, per = "day", algorithm = "fixed_window" },
]

[[rules]]
name = "per-ip"
match = { ip = "*" }
limits = [{ kind = "requests", amount = 1000, per = "second" }]

[[rules]]
name = "per-domain"
match = { domain = "*", user = "*" }
limits = [{ kind = "tokens", amount = 50000, per = "month", algorithm = "fixed_window" }]
"#;

/// The service in process.
pub struct Service {
    rt: tokio::runtime::Runtime,
    app: Arc<App<MemoryStore>>,
    router: Router,
}

impl Service {
    /// The service with [`CONFIG`].
    pub fn new() -> Service {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let config = Config::from_toml(CONFIG, "fuzz.toml").expect("the fuzz configuration");
        let store = MemoryStore::builder().max_buckets(100_000).build();
        let app = {
            let _in = rt.enter();
            Arc::new(App::new(
                config,
                store,
                Arc::new(SystemClock::new()),
                "memory",
            ))
        };
        let router = tollgate_server::http::router(Arc::clone(&app), 65_536);
        Service { rt, app, router }
    }

    /// The app, for calls that bypass HTTP.
    pub fn app(&self) -> &Arc<App<MemoryStore>> {
        &self.app
    }

    /// Runs `fut` on the service's runtime.
    pub fn block_on<F: std::future::Future>(&self, fut: F) -> F::Output {
        self.rt.block_on(fut)
    }

    /// Sends `request` (from a trusted proxy's address) through the router and checks the
    /// answer. Returns the status and body.
    pub fn http(&self, mut request: Request<Body>) -> (StatusCode, Vec<u8>) {
        let peer: SocketAddr = ([10, 0, 0, 1], 40_000).into();
        request.extensions_mut().insert(ConnectInfo(peer));
        let router = self.router.clone();
        self.rt.block_on(async move {
            use tower::ServiceExt;
            let response = router.oneshot(request).await.expect("infallible");
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("a body")
                .to_bytes()
                .to_vec();
            check_answer(status, &body);
            (status, body)
        })
    }
}

impl Default for Service {
    fn default() -> Self {
        Service::new()
    }
}

/// The checks every HTTP answer passes.
pub fn check_answer(status: StatusCode, body: &[u8]) {
    assert!(
        !status.is_server_error(),
        "{status} over the memory store: {}",
        String::from_utf8_lossy(body)
    );
    if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!(
                "{status} without a JSON error ({e}): {}",
                String::from_utf8_lossy(body)
            )
        });
        // A refusal is either an error (`{"error": {"message", ...}}`) or a decision that
        // refuses (a cost that can never fit is 413, a rule that denies is 403): then it
        // names its outcome and says why.
        let message = match v["outcome"].as_str() {
            Some(outcome) => {
                assert_eq!(v["allowed"], false, "{status} with outcome {outcome}: {v}");
                v["message"].as_str().unwrap_or_default()
            }
            None => v["error"]["message"].as_str().unwrap_or_default(),
        };
        assert!(!message.is_empty(), "{status} without a message: {v}");
    }
}

/// Splits `data` at the first `sep`: before, after (empty if absent).
pub fn split_once(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == sep) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// A token chosen by `selector`: none, the client's, the admin's, or an unknown one.
pub fn token(selector: u8) -> Option<&'static str> {
    match selector % 4 {
        0 => None,
        1 => Some(CLIENT_TOKEN),
        2 => Some(ADMIN_TOKEN),
        _ => Some("unknown-token-0123456789"),
    }
}
