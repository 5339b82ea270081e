//! The `tollgate` binary itself: config check, serve (SIGHUP reload, SIGTERM shutdown), the
//! client subcommands and bench.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

const CONFIG: &str = r#"
[server]
http = "127.0.0.1:0"
grpc = "127.0.0.1:0"

[[rules]]
name = "cli-two-per-hour"
match = { tenant = "*" }
limits = [{ kind = "requests", amount = 2, per = "hour" }]
"#;

fn tollgate(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("TOLLGATE_URL")
        .env_remove("TOLLGATE_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn config_check_accepts_good_files_and_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, CONFIG).unwrap();
    let out = tollgate(&["config", "check", good.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: 1 rules"));

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/tollgate.toml");
    let out = tollgate(&["config", "check", example]);
    assert!(out.status.success(), "{out:?}");

    let cases = [
        (
            CONFIG.replace("amount = 2,", "amount = 0,"),
            "bad.toml:9:",
            "limits[0].amount",
        ),
        (
            CONFIG.replace("127.0.0.1:0\"\ngrpc", "nowhere\"\ngrpc"),
            "bad.toml:3:",
            "server.http",
        ),
        (
            format!("{CONFIG}\n[redis]\nurl = \"http://x\"\n"),
            "bad.toml:12:",
            "redis.url",
        ),
        (
            CONFIG.replace("[server]", "[sever]"),
            "bad.toml:2:",
            "sever",
        ),
    ];
    for (text, place, field) in cases {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, &text).unwrap();
        let out = Command::new(BIN)
            .current_dir(dir.path())
            .args(["config", "check", "bad.toml"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with(place), "want {place}: {err}");
        assert!(err.contains(field), "want {field}: {err}");
    }
    let out = tollgate(&["config", "check", "/nonexistent/tollgate.toml"]);
    assert_eq!(out.status.code(), Some(1));
}

struct Served {
    child: Child,
    http: String,
    grpc: String,
    lines: mpsc::Receiver<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tollgate serve` with JSON logs and reads the bound addresses from them.
fn serve(config: &Path, env: &[(&str, &str)]) -> Served {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--log-format",
        "json",
    ])
    .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    spawn_served(cmd).0
}

/// Runs `cmd` (a `tollgate serve` logging JSON to stderr) until it logs that it listens, and
/// returns it with that log line. Every line before it must be JSON.
// The child is waited for in `Served`'s `Drop`.
#[allow(clippy::zombie_processes)]
fn spawn_served(mut cmd: Command) -> (Served, serde_json::Value) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("tollgate serve did not report its addresses"));
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        if v["message"] == "tollgate listening" {
            let http = v["http"].as_str().unwrap().to_owned();
            let grpc = v["grpc"].as_str().unwrap().to_owned();
            let served = Served {
                child,
                http: format!("http://{http}"),
                grpc: format!("http://{grpc}"),
                lines: rx,
            };
            return (served, v);
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn wait_for_log(s: &Served, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let line = s
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no log line containing {what:?}"));
        if line.contains(what) {
            return;
        }
    }
}

fn client(s: &Served, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("TOLLGATE_URL", &s.http)
        .env_remove("TOLLGATE_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn serve_answers_the_cli_clients_reloads_on_sighup_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let mut s = serve(&path, &[("TOLLGATE_NO_WATCH", "true")]);

    // check: exit 0 allowed, 1 denied; peek spends nothing.
    for _ in 0..2 {
        let out = client(&s, &["check", "--tenant", "cli", "--tokens", "10"]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("allowed"));
    }
    let out = client(&s, &["check", "--tenant", "cli"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("denied by rule \"cli-two-per-hour\""),
        "{text}"
    );
    assert!(
        text.contains("[E4404]: retry after 29m") || text.contains("[E4404]: retry after 30m"),
        "{text}"
    );
    let out = client(&s, &["peek", "--tenant", "other", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["allowed"], true);

    // usage and reset.
    let out = client(&s, &["usage", "--tenant", "cli"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 used of 2"),
        "{out:?}"
    );
    let out = client(&s, &["reset", "--tenant", "cli"]);
    assert!(out.status.success(), "{out:?}");
    let out = client(&s, &["check", "--tenant", "cli"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = client(&s, &["reset", "--rule", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // SIGHUP reloads the edited file: raise the limit to 5.
    std::fs::write(&path, CONFIG.replace("amount = 2,", "amount = 5,")).unwrap();
    signal(&s.child, "-HUP");
    wait_for_log(&s, "configuration reloaded");
    for _ in 0..4 {
        let out = client(&s, &["check", "--tenant", "cli"]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
    // A broken edit is refused and logged; the service keeps running.
    std::fs::write(&path, "[[rules]]\nname = \"x\"\n").unwrap();
    signal(&s.child, "-HUP");
    wait_for_log(&s, "configuration refused");
    assert_eq!(
        client(&s, &["peek", "--tenant", "cli2"]).status.code(),
        Some(0)
    );

    // bench, over HTTP and gRPC, for a bounded time.
    let out = client(
        &s,
        &[
            "bench",
            "--duration",
            "1s",
            "--concurrency",
            "4",
            "--tenants",
            "50",
            "--quiet",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("decisions:") && text.contains("p99"),
        "{text}"
    );
    let out = Command::new(BIN)
        .args(["bench", "--protocol", "grpc", "--grpc-url", &s.grpc])
        .args(["-d", "1s", "-c", "4", "--quiet", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["decisions"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["errors"], 0, "{v}");

    // SIGTERM: a graceful stop, exit 0.
    signal(&s.child, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "tollgate did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    wait_for_log(&s, "tollgate stopped");
    // Nothing listens any more.
    let out = client(&s, &["peek", "--tenant", "x"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn serve_without_a_config_uses_the_defaults_and_env_flags() {
    // No config file: the default policy and the memory store; addresses from TOLLGATE_*.
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--log-format", "json"])
        .env("TOLLGATE_HTTP", "127.0.0.1:0")
        .env("TOLLGATE_GRPC", "off")
        .env_remove("TOLLGATE_CONFIG")
        .env_remove("TOLLGATE_REDIS");
    let (served, listening) = spawn_served(cmd);
    assert_eq!(listening["grpc"], "off", "{listening}");
    assert_eq!(listening["store"], "memory", "{listening}");
    let http = served.http.clone();
    let out = Command::new(BIN)
        .args([
            "check",
            "--url",
            &http,
            "--tenant",
            "a",
            "--provider",
            "openai",
            "--json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["limits"][0]["amount"], 60, "{v}");
    assert_eq!(v["limits"][1]["amount"], 100_000, "{v}");
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_refuses_new_connections_and_exits_0() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let mut s = serve(&path, &[("TOLLGATE_NO_WATCH", "true")]);
    let addr = s.http.trim_start_matches("http://").to_owned();

    // A slow client: the head and half the body are sent, the rest only after SIGTERM.
    let body = br#"{"subject":{"tenant":"in-flight"},"cost":{"tokens":5}}"#;
    let (first, rest) = body.split_at(body.len() / 2);
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        slow,
        "POST /v1/check HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    slow.write_all(first).unwrap();
    slow.flush().unwrap();
    // The service has the request: an answered peek on another connection proves it is up,
    // and the slow request's head was written before it.
    assert_eq!(
        client(&s, &["peek", "--tenant", "x"]).status.code(),
        Some(0)
    );

    signal(&s.child, "-TERM");
    wait_for_log(&s, "SIGTERM: shutting down");
    // New connections are refused once the listener is closed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting connections after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );

    // The request in flight completes, and the connection is closed after it (read to EOF).
    slow.write_all(rest).unwrap();
    slow.flush().unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"allowed\":true"), "{answer}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "tollgate did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
    wait_for_log(&s, "tollgate stopped");
}

/// The body of `GET /readyz` at `addr`, over a plain HTTP/1.1 connection.
fn readyz(addr: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(
        conn,
        "GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    answer
}

#[test]
fn every_serve_flag_can_be_an_environment_variable() {
    let redis = tollgate_test::RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .env("TOLLGATE_CONFIG", &path)
        .env("TOLLGATE_HTTP", "127.0.0.1:0")
        .env("TOLLGATE_GRPC", "off")
        .env("TOLLGATE_REDIS", redis.url())
        .env("TOLLGATE_SHADOW", "true")
        .env("TOLLGATE_NO_WATCH", "true")
        .env("TOLLGATE_LOG_FORMAT", "json")
        .env("TOLLGATE_LOG_LEVEL", "info")
        .env("TOLLGATE_WORKERS", "1")
        .env_remove("RUST_LOG")
        .env_remove("TOLLGATE_REDIS_CLUSTER");
    let (served, listening) = spawn_served(cmd);
    assert_eq!(listening["grpc"], "off", "{listening}");
    assert_eq!(listening["store"], "redis", "{listening}");
    let addr = listening["http"].as_str().unwrap().to_owned();
    // The store connects to Redis in the background (the fallback decides until then): wait
    // until /readyz says it is on Redis.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !readyz(&addr).contains("\"status\":\"ready\"") {
        assert!(Instant::now() < deadline, "never ready: {}", readyz(&addr));
        std::thread::sleep(Duration::from_millis(20));
    }
    let http = &served.http;
    // Shadow mode from the environment: the 2-per-hour rule admits a third call, and says it
    // would have denied it (which also proves the decision came from Redis: a fail-open
    // decision before the connection would deny nothing).
    for i in 0..3 {
        let out = Command::new(BIN)
            .args(["check", "--tenant", "env", "--json"])
            .env("TOLLGATE_URL", http)
            .env_remove("TOLLGATE_TOKEN")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"));
        let would_deny = v["shadow"]["would_deny"] == true;
        assert_eq!(would_deny, i == 2, "call {i}: {v}");
    }
    drop(served);

    // A bad value in a variable is refused, naming the flag.
    let out = Command::new(BIN)
        .arg("serve")
        .env("TOLLGATE_WORKERS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--workers"),
        "{out:?}"
    );
}
