//! tollgate behind the proxies users run: Debian's real nginx (`auth_request`) and Caddy
//! (`forward_auth`), each running the configuration shipped in `examples/` on private
//! loopback ports, in front of the real `tollgate` binary and a fake model API.
//!
//! A missing proxy fails the test, naming the package to install (`.ci/run` installs them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tollgate_test::{free_port, FakeUpstream, Service};

/// The example file `name` under `examples/`.
fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The path of `tool`, or a failure that says how to install it.
fn need(tool: &str, package: &str) -> PathBuf {
    let dirs = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&dirs)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{tool} is not installed: apt-get install -y {package} (.ci/run installs it)")
        })
}

/// A proxy process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Proxy {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // SIGTERM lets nginx's master stop its workers, which SIGKILL would orphan.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// Waits until `port` accepts connections, or fails with the proxy's log.
    fn wait_listening(&mut self, port: u16) {
        let began = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the proxy exited ({status}): {}", self.log());
            }
            assert!(
                began.elapsed() < Duration::from_secs(30),
                "the proxy did not listen in 30 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The example's addresses replaced by the test's: the proxy's, tollgate's, the model API's.
fn localised(text: &str, proxy: u16, tollgate: &str, upstream: &str) -> String {
    text.replace("127.0.0.1:8000", &format!("127.0.0.1:{proxy}"))
        .replace(":8000 {", &format!(":{proxy} {{"))
        .replace("127.0.0.1:8080", tollgate)
        .replace("127.0.0.1:9000", upstream)
}

/// tollgate with the example's `[forward_auth]` and `[auth]`, and test rules: two requests
/// and 1,000 tokens an hour per tenant; calls without a tenant are denied as unmatched.
fn tollgate_for(example_toml: &str) -> Service {
    let sections = example_toml
        .split("[[rules]]")
        .next()
        .expect("the example has sections");
    let config = format!(
        "unmatched = \"deny\"\n{sections}\n[[rules]]\nname = \"per-tenant\"\nmatch = {{ tenant = \"*\" }}\nlimits = [\n  {{ kind = \"requests\", amount = 2, per = \"hour\" }},\n  {{ kind = \"tokens\", amount = 1000, per = \"hour\" }},\n]\n"
    );
    Service::start(&config, &[]).expect("tollgate serve starts")
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn call(port: u16, headers: &[(&str, &str)]) -> Reply {
    let http = reqwest::Client::new();
    let mut rb = http.get(format!("http://127.0.0.1:{port}/v1/models"));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.expect("the proxy answers");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.unwrap_or_default();
    Reply {
        status,
        headers,
        body,
    }
}

/// What every proxy must do with tollgate's answers: admitted calls reach the model API;
/// a denial is a 429 with Retry-After, retry-after-ms and the rate-limit headers; a call
/// that can never fit is a 413 with x-should-retry: false; the client's own Authorization
/// is not taken for a tollgate token. `headers_on_admitted`: whether an admitted call's answer
/// carries tollgate's rate-limit headers (nginx); otherwise the model API gets them on the
/// request (Caddy's copy_headers).
async fn check_answers(
    port: u16,
    upstream: &FakeUpstream,
    tollgate: &Service,
    headers_on_admitted: bool,
) {
    let client_key = ("authorization", "Bearer sk-the-clients-own-key");
    for remaining in ["1", "0"] {
        let ok = call(
            port,
            &[
                ("x-tenant-id", "acme"),
                ("x-estimated-tokens", "100"),
                client_key,
            ],
        )
        .await;
        assert_eq!(ok.status, 200, "{}", ok.body);
        assert!(
            ok.body.contains("\"object\""),
            "the model API answered: {}",
            ok.body
        );
        if headers_on_admitted {
            assert_eq!(ok.header("x-ratelimit-remaining-requests"), Some(remaining));
        } else {
            let seen = upstream.seen();
            let last = seen.last().expect("the model API was asked");
            assert_eq!(
                last.headers
                    .get("x-ratelimit-remaining-requests")
                    .map(String::as_str),
                Some(remaining)
            );
        }
    }
    assert_eq!(upstream.arrived(), 2);
    // The model API still got the client's key.
    assert_eq!(
        upstream.seen()[0]
            .headers
            .get("authorization")
            .map(String::as_str),
        Some("Bearer sk-the-clients-own-key")
    );

    let denied = call(port, &[("x-tenant-id", "acme"), client_key]).await;
    assert_eq!(denied.status, 429, "{}", denied.body);
    let retry: u64 = denied
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    let retry_ms: u64 = denied
        .header("retry-after-ms")
        .expect("retry-after-ms")
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 1800, "{retry}");
    assert!(
        retry_ms > (retry - 1) * 1000 && retry_ms <= retry * 1000,
        "{retry_ms} vs {retry}"
    );
    assert_eq!(denied.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(denied.header("x-ratelimit-limit-requests"), Some("2"));
    assert!(
        denied
            .header("ratelimit-policy")
            .is_some_and(|p| p.contains("\"per-tenant.requests\";q=2")),
        "{:?}",
        denied.headers
    );
    assert_eq!(
        upstream.arrived(),
        2,
        "a denied call does not reach the model API"
    );

    let too_large = call(
        port,
        &[("x-tenant-id", "globex"), ("x-estimated-tokens", "5000")],
    )
    .await;
    assert_eq!(too_large.status, 413, "{}", too_large.body);
    assert_eq!(too_large.header("x-should-retry"), Some("false"));
    assert_eq!(too_large.header("retry-after"), None);

    let unmatched = call(port, &[]).await;
    assert_eq!(unmatched.status, 403, "{}", unmatched.body);
    assert_eq!(upstream.arrived(), 2);
    // The proxy sent tollgate's token: without [auth]'s token tollgate would answer 401.
    let (status, _) = tollgate.get("/v1/forward-auth").expect("tollgate answers");
    assert_eq!(status, 401, "forward-auth needs the token the proxy adds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_answers_429_with_retry_after() {
    let nginx = need("nginx", "nginx-light");
    let tollgate = tollgate_for(&example("nginx/tollgate.toml"));
    let upstream = FakeUpstream::start().await.unwrap();
    let port = free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = localised(
        &example("nginx/nginx.conf"),
        port,
        &tollgate.addr(),
        upstream.url().trim_start_matches("http://"),
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let log = dir.path().join("nginx.log");
    let child = Command::new(nginx)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .args(["-e", "stderr", "-g"])
        .arg(format!(
            "daemon off; pid {};",
            dir.path().join("nginx.pid").display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("nginx starts");
    let mut proxy = Proxy {
        child,
        log,
        _dir: dir,
    };
    proxy.wait_listening(port);
    check_answers(port, &upstream, &tollgate, true).await;
    let denied = call(port, &[("x-tenant-id", "acme")]).await;
    assert_eq!(denied.header("x-tollgate-outcome"), Some("denied"));
    assert!(
        denied.body.contains("rate_limit_exceeded"),
        "{}",
        denied.body
    );
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_passes_the_denial_through() {
    let caddy = need("caddy", "caddy");
    let tollgate = tollgate_for(&example("caddy/tollgate.toml"));
    let upstream = FakeUpstream::start().await.unwrap();
    let port = free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = localised(
        &example("caddy/Caddyfile"),
        port,
        &tollgate.addr(),
        upstream.url().trim_start_matches("http://"),
    );
    let conf_path = dir.path().join("Caddyfile");
    std::fs::write(&conf_path, conf).unwrap();
    let log = dir.path().join("caddy.log");
    let child = Command::new(caddy)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&conf_path)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("caddy starts");
    let mut proxy = Proxy {
        child,
        log,
        _dir: dir,
    };
    proxy.wait_listening(port);
    check_answers(port, &upstream, &tollgate, false).await;
    drop(proxy);
}
