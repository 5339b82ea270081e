//! Exactness under load, on real processes: two `tollgate serve` instances (the real binary,
//! behind the default fallback) on one private Redis, standalone and then a cluster, loaded by
//! four `tollgate-load` client processes of 64 connections each, on a quiet host and on one
//! kept busy by a busy-loop process on every core. A healthy Redis must decide (nearly)
//! everything: at most 0.1 % of decisions degraded, and no limit admits more than its amount
//! plus what it refilled while the test ran. Each run prints its figures (`--nocapture`).

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tollgate_test::{CpuHogs, RedisCluster, RedisServer, Service};

/// The load runs one at a time: they measure what a busy host does to the service.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const CLIENTS: usize = 4;
const CONNECTIONS: usize = 64;
/// The clients send for at least this long, and until each connection on a hot tenant has
/// been denied [`DENIALS`] times (its limit was reached), but never longer than [`MAX`].
const MIN: Duration = Duration::from_secs(2);
const DENIALS: u64 = 3;
const MAX: Duration = Duration::from_secs(60);
/// The requests limit, per hour and tenant.
const REQUESTS: u64 = 1_000;
/// The tokens limit, per hour and tenant, and what one call of the tokens tenant costs.
const TOKENS: u64 = 100_000;
const TOKENS_PER_CALL: u64 = 500;
/// What a background tenant's call costs in tokens.
const BACKGROUND_TOKENS: u64 = 10;

const POLICY: &str = r#"
[[rules]]
name = "requests"
match = { tenant = "*" }
limits = [{ kind = "requests", amount = 1000, per = "hour" }]

[[rules]]
name = "tokens"
match = { tenant = "*" }
limits = [{ kind = "tokens", amount = 100000, per = "hour" }]
"#;

/// Who a connection speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Load {
    /// The tenant whose requests limit is hit: one request per call.
    Requests,
    /// The tenant whose tokens limit is hit: 500 tokens per call.
    Tokens,
    /// One of many tenants that stay within their limits: every call reaches Redis.
    Background,
}

/// Connection `i` of client `c`: a quarter each on the two hot tenants, the rest spread over
/// background tenants of two connections each.
fn connection(c: usize, i: usize) -> (Load, String) {
    match i % 4 {
        0 => (
            Load::Requests,
            r#"{"subject":{"tenant":"hot-requests"},"cost":{"requests":1}}"#.to_owned(),
        ),
        1 => (
            Load::Tokens,
            format!(
                r#"{{"subject":{{"tenant":"hot-tokens"}},"cost":{{"tokens":{TOKENS_PER_CALL}}}}}"#
            ),
        ),
        _ => (
            Load::Background,
            format!(
                r#"{{"subject":{{"tenant":"bg-{c}-{}"}},"cost":{{"tokens":{BACKGROUND_TOKENS}}}}}"#,
                i / 4
            ),
        ),
    }
}

/// What the clients saw for one kind of load.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    sent: u64,
    allowed: u64,
    denied: u64,
    unavailable: u64,
    degraded: u64,
    other: u64,
    errors: u64,
    max_ms: u64,
}

impl Seen {
    fn add(&mut self, line: &str) {
        let field = |name: &str| -> u64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        };
        self.sent += field("sent");
        self.allowed += field("allowed");
        self.denied += field("denied");
        self.unavailable += field("unavailable");
        self.degraded += field("degraded");
        self.other += field("other");
        self.errors += field("errors");
        self.max_ms = self.max_ms.max(field("max_ms"));
    }

    fn answered(&self) -> u64 {
        self.allowed + self.denied + self.unavailable + self.other
    }
}

/// The most a GCRA limit of `amount` per hour admits over `elapsed` from a full bucket: the
/// bucket, plus one unit per emission interval (3600 s / amount) that passed, rounded up.
fn gcra_bound(amount: u64, elapsed: Duration) -> u64 {
    let refilled = (elapsed.as_secs_f64() * amount as f64 / 3600.0).ceil() as u64;
    amount + refilled
}

/// The value of `name` (summed over its series) in a Prometheus text page.
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

/// Runs the load against two instances over the Redis of `redis` (a `[redis]` table's
/// `url = ...` or `cluster = [...]` line), checks the bounds and prints the figures.
fn run(name: &str, redis: &str, prefix: &str, hog: bool) {
    let config = format!("{POLICY}\n[redis]\n{redis}\nprefix = \"{prefix}\"\ninstances = 2\n");
    let services = [
        Service::start(&config, &[]).expect("the first instance starts"),
        Service::start(&config, &[]).expect("the second instance starts"),
    ];
    let targets: Vec<String> = services.iter().map(Service::addr).collect();
    let hogs = hog.then(|| CpuHogs::one_per_core().expect("the CPU hogs start"));
    let began = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate-load"));
            cmd.args(["--denials", &DENIALS.to_string()])
                .args(["--min-ms", &MIN.as_millis().to_string()])
                .args(["--max-ms", &MAX.as_millis().to_string()]);
            for t in &targets {
                cmd.args(["--target", t]);
            }
            for i in 0..CONNECTIONS {
                let (load, body) = connection(c, i);
                let flag = if load == Load::Background {
                    "--body"
                } else {
                    "--hot-body"
                };
                cmd.args([flag, &body]);
            }
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("a client starts")
        })
        .collect();
    let mut seen = [Seen::default(); 3];
    for (c, client) in clients.into_iter().enumerate() {
        let out = client.wait_with_output().expect("a client ends");
        assert!(out.status.success(), "client {c}: {:?}", out.status);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let i: usize = line
                .split_whitespace()
                .next()
                .and_then(|b| b.strip_prefix("body="))
                .and_then(|b| b.parse().ok())
                .unwrap_or_else(|| panic!("client {c} printed {line:?}"));
            let slot = match connection(c, i).0 {
                Load::Requests => 0,
                Load::Tokens => 1,
                Load::Background => 2,
            };
            seen[slot].add(line);
        }
    }
    // Every decision was made within this span, from full buckets.
    let elapsed = began.elapsed();
    drop(hogs);
    let pages: Vec<String> = services
        .iter()
        .map(|s| s.get("/metrics").expect("/metrics answers").1)
        .collect();
    let sum = |name: &str| {
        pages
            .iter()
            .map(|p| metric(p, name))
            .fold(0.0, |a, b| a + b)
    };
    let [requests, tokens, background] = seen;
    let decisions: u64 = seen.iter().map(Seen::answered).sum();
    let degraded: u64 = seen.iter().map(|s| s.degraded).sum();
    let request_bound = gcra_bound(REQUESTS, elapsed);
    let token_bound = gcra_bound(TOKENS, elapsed);
    println!(
        "{name}: {decisions} decisions in {elapsed:.2?}, {degraded} degraded \
         (server counts: degraded {}, Redis failures {}, overloaded {}); slowest answer {} ms\n  \
         requests tenant: {} sent, {} admitted (bound {request_bound}), {} denied\n  \
         tokens tenant: {} sent, {} admitted = {} tokens (bound {token_bound}), {} denied\n  \
         background: {} sent, {} admitted, {} denied",
        sum("tollgate_degraded_decisions_total"),
        sum("tollgate_store_errors_total"),
        sum("tollgate_store_overloaded_total"),
        seen.iter().map(|s| s.max_ms).max().unwrap_or(0),
        requests.sent,
        requests.allowed,
        requests.denied,
        tokens.sent,
        tokens.allowed,
        tokens.allowed * TOKENS_PER_CALL,
        tokens.denied,
        background.sent,
        background.allowed,
        background.denied,
    );
    for (what, s) in [
        ("requests", requests),
        ("tokens", tokens),
        ("background", background),
    ] {
        assert_eq!(
            (s.errors, s.other, s.unavailable),
            (0, 0, 0),
            "{name}, {what}: every call answered 200 or 429: {s:?}"
        );
    }
    assert!(
        degraded * 1000 <= decisions,
        "{name}: {degraded} of {decisions} decisions degraded, more than 0.1 %; the services' logs end with:\n{}\n{}",
        services[0].log_tail(),
        services[1].log_tail()
    );
    // The hot tenants reached their limits (every hot connection was denied).
    assert!(
        requests.denied >= DENIALS && tokens.denied >= DENIALS,
        "{name}: a hot tenant was never denied in {MAX:?}"
    );
    assert!(
        requests.allowed <= request_bound,
        "{name}: the requests limit admitted {} (bound {request_bound})",
        requests.allowed
    );
    assert!(
        requests.allowed + degraded >= REQUESTS,
        "{name}: the requests limit admitted only {}",
        requests.allowed
    );
    assert!(
        tokens.allowed * TOKENS_PER_CALL <= token_bound,
        "{name}: the tokens limit admitted {} tokens (bound {token_bound})",
        tokens.allowed * TOKENS_PER_CALL
    );
    assert!(
        (tokens.allowed + degraded) * TOKENS_PER_CALL >= TOKENS,
        "{name}: the tokens limit admitted only {} tokens",
        tokens.allowed * TOKENS_PER_CALL
    );
    // No background tenant came near its limits: all admitted (but for degraded ones).
    assert!(
        background.allowed + degraded >= background.answered(),
        "{name}: {background:?}"
    );
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn standalone_redis_under_load_quiet_and_busy_host() {
    let _serial = serial();
    let server = RedisServer::start().expect("redis-server starts");
    let redis = format!("url = \"{}\"", server.url());
    run("standalone, quiet host", &redis, "load-quiet", false);
    run("standalone, a CPU hog per core", &redis, "load-busy", true);
}

#[test]
fn redis_cluster_under_load_quiet_and_busy_host() {
    let _serial = serial();
    let cluster = RedisCluster::start().expect("the cluster starts");
    let nodes: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let redis = format!("cluster = [{}]", nodes.join(", "));
    run("cluster, quiet host", &redis, "load-quiet", false);
    run("cluster, a CPU hog per core", &redis, "load-busy", true);
}
