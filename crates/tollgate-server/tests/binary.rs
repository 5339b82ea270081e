//! The `tollgate` binary: `serve` and the environment (`REDIS_URL`, `TOKEN_BUCKET_SIZE` /
//! `TOKEN_REFILL_RATE`), `--help` (which never shows an environment value), and the CLI's
//! answers (a reset that matches nothing exits non-zero).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tollgate_test::RedisServer;

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// A `tollgate serve` child, killed on drop.
struct Served {
    child: Child,
    http: String,
    /// The rest of the log: kept, so that the thread reading it keeps draining the pipe.
    log: mpsc::Receiver<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `tollgate` command with none of the variables these tests set inherited.
fn tollgate() -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "REDIS_URL",
        "TOKEN_BUCKET_SIZE",
        "TOKEN_REFILL_RATE",
        "TOLLGATE_REDIS",
        "TOLLGATE_REDIS_CLUSTER",
        "TOLLGATE_CONFIG",
        "TOLLGATE_URL",
        "TOLLGATE_TOKEN",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Starts `tollgate serve` on free ports with `env`, and returns once it listens.
// The child is waited for in `Served`'s `Drop`.
#[allow(clippy::zombie_processes)]
fn serve(env: &[(&str, &str)]) -> Served {
    let mut cmd = tollgate();
    cmd.args([
        "serve",
        "--http",
        "127.0.0.1:0",
        "--grpc",
        "off",
        "--log-format",
        "json",
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
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
            .unwrap_or_else(|_| panic!("tollgate serve did not report its address"));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "tollgate listening" {
            let http = format!("http://{}", v["http"].as_str().unwrap());
            return Served {
                child,
                http,
                log: rx,
            };
        }
    }
}

/// The body of `GET /readyz`, over a plain socket.
fn readyz(s: &Served) -> String {
    use std::io::{Read, Write};
    let addr = s.http.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "GET /readyz HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    answer
}

fn client(s: &Served, args: &[&str]) -> std::process::Output {
    tollgate()
        .args(args)
        .env("TOLLGATE_URL", &s.http)
        .output()
        .unwrap()
}

#[test]
fn help_does_not_print_secrets_from_the_environment() {
    for args in [
        &["serve", "--help"][..],
        &["check", "--help"],
        &["bench", "--help"],
    ] {
        let out = tollgate()
            .args(args)
            .env("TOLLGATE_REDIS", "redis://:hunter2-redis@10.0.0.5:6379/0")
            .env("TOLLGATE_TOKEN", "hunter2-token-0123456789")
            .env("TOLLGATE_URL", "http://user:hunter2-url@host:8080")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("TOLLGATE_"), "{help}");
        assert!(
            !help.contains("hunter2"),
            "{args:?} shows a secret:\n{help}"
        );
    }
}

#[test]
fn redis_url_puts_the_buckets_in_redis() {
    let redis = RedisServer::start().unwrap();
    let s = serve(&[("REDIS_URL", &redis.url())]);
    // The store connects in the background: wait until it answers (a decision made before
    // that would be the failure mode's, and leave nothing in Redis).
    let deadline = Instant::now() + Duration::from_secs(15);
    while !readyz(&s).contains("\"status\":\"ready\"") {
        assert!(Instant::now() < deadline, "Redis never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(readyz(&s).contains("\"store\":\"redis\""));
    // A busy host is not a failing Redis: the first decision is made on Redis.
    let out = client(&s, &["check", "--tenant", "acme", "--provider", "openai"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let keys = redis.cli(&["DBSIZE"]).unwrap();
    assert_ne!(keys.trim(), "0", "the decision left no bucket in Redis");
}

#[test]
fn the_token_bucket_variables_give_each_agent_a_bucket() {
    let s = serve(&[("TOKEN_BUCKET_SIZE", "100"), ("TOKEN_REFILL_RATE", "0.5")]);
    let out = client(&s, &["check", "--agent", "a1", "--tokens", "100"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = client(&s, &["check", "--agent", "a1", "--tokens", "1"]);
    assert_eq!(out.status.code(), Some(1), "the bucket is empty: {out:?}");
    // One token every two seconds.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("agent-token-bucket"), "{text}");
    let out = client(&s, &["check", "--agent", "a2", "--tokens", "100"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "agents have separate buckets: {out:?}"
    );
}

#[test]
fn bad_environment_values_stop_serve_naming_the_variable() {
    for (var, value, needle) in [
        (
            "TOKEN_BUCKET_SIZE",
            "lots",
            "TOKEN_BUCKET_SIZE: must be a whole number",
        ),
        ("REDIS_URL", "localhost:6379", "REDIS_URL: not a URL"),
    ] {
        let mut cmd = tollgate();
        cmd.args(["serve", "--http", "127.0.0.1:0", "--grpc", "off"])
            .env(var, value);
        if var == "TOKEN_BUCKET_SIZE" {
            cmd.env("TOKEN_REFILL_RATE", "1");
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "want {needle:?}: {err}");
    }
}

#[test]
fn a_reset_that_matches_nothing_exits_non_zero() {
    // The per-agent bucket of the environment: a tenant alone matches no rule.
    let s = serve(&[("TOKEN_BUCKET_SIZE", "10"), ("TOKEN_REFILL_RATE", "1")]);
    let out = client(&s, &["reset", "--tenant", "acme"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing matched"), "{err}");
    assert!(
        err.contains("needs agent"),
        "names the missing attribute: {err}"
    );

    let out = client(&s, &["reset", "--agent", "a1"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("reset: 1 buckets"),
        "{out:?}"
    );
}

#[test]
fn config_check_warns_about_rules_no_subject_can_match() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(
        &path,
        "[[rules]]\nname = \"typo\"\nmatch = { tenat = \"*\" }\nlimits = [{ kind = \"requests\", amount = 1, per = \"minute\" }]\n",
    )
    .unwrap();
    let out = tollgate()
        .args(["config", "check", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "a warning is not an error: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning: rule \"typo\""), "{err}");
    assert!(err.contains("\"tenat\""), "{err}");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/tollgate.toml");
    let out = tollgate()
        .args(["config", "check", example])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{out:?}"
    );
}

#[test]
fn check_takes_the_calls_own_limits() {
    let s = serve(&[]);
    let args = [
        "check",
        "--agent",
        "a",
        "--provider",
        "p",
        "--limit",
        "requests=1/minute",
    ];
    let out = client(&s, &args);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = client(&s, &args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the call's own 1 per minute: {out:?}"
    );
    let out = client(&s, &["check", "--agent", "a", "--provider", "p"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the policy's 60 per minute: {out:?}"
    );
    let out = client(&s, &["check", "--agent", "a", "--limit", "requests=one"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// Waits (at most 15 s) for a log line containing `what`, and returns it.
fn log_line(s: &Served, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let line = s
            .log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no log line containing {what:?}"));
        if line.contains(what) {
            return line;
        }
    }
}

#[test]
fn limits_set_and_clear_one_subject_and_are_audited() {
    let s = serve(&[]);
    let out = client(
        &s,
        &[
            "limits",
            "set",
            "--user",
            "vip",
            "--limit",
            "requests=2/minute,burst=2",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("default-user"), "{said}");
    assert!(
        said.contains("kept in memory: lost when the service stops"),
        "{said}"
    );
    let audit = log_line(&s, "subject limits set");
    let v: serde_json::Value = serde_json::from_str(&audit).unwrap();
    assert_eq!(v["target"], "tollgate_server::audit", "{audit}");
    assert!(audit.contains("vip"), "{audit}");

    for expected in [0, 0, 1] {
        let out = client(&s, &["check", "--user", "vip"]);
        assert_eq!(out.status.code(), Some(expected), "{out:?}");
    }
    let out = client(&s, &["limits", "list"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"vip\""),
        "{out:?}"
    );
    let out = client(&s, &["limits", "clear", "--user", "vip"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    log_line(&s, "subject limits removed");
    let out = client(
        &s,
        &["limits", "set", "--user", "vip", "--limit", "requests=two"],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn subjects_lists_who_has_live_buckets() {
    let s = serve(&[]);
    for agent in ["a1", "a2"] {
        let out = client(
            &s,
            &[
                "check",
                "--agent",
                agent,
                "--provider",
                "anthropic",
                "--requests",
                "30",
                "--tokens",
                "50000",
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
    let out = client(&s, &["subjects", "--rule", "default-agent", "--limit", "1"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    // The service runs on the system clock: the buckets refill while the test runs (half a
    // minute's worth was spent, so they are still in use).
    assert!(
        text.starts_with("agent=a1,provider=anthropic  requests "),
        "{text}"
    );
    assert!(text.contains("/60 per minute, tokens "), "{text}");
    assert!(text.contains("/100000 per minute"), "{text}");
    assert!(text.contains("more: --cursor"), "{text}");
    let out = client(
        &s,
        &[
            "subjects",
            "--rule",
            "default-agent",
            "--limit",
            "1",
            "--all",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("agent=a2"), "{text}");
}

#[test]
fn redis_url_with_a_password_and_a_database_is_honoured() {
    let redis = RedisServer::start().unwrap();
    redis
        .cli(&["CONFIG", "SET", "requirepass", "s3cret-pw"])
        .unwrap();
    let url = format!("redis://:s3cret-pw@127.0.0.1:{}/3", redis.port());
    let s = serve(&[("REDIS_URL", &url)]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !readyz(&s).contains("\"status\":\"ready\"") {
        assert!(
            Instant::now() < deadline,
            "Redis never became ready: {}",
            readyz(&s)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = client(&s, &["check", "--tenant", "acme", "--provider", "openai"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let in_db3 = redis
        .cli(&["-a", "s3cret-pw", "--no-auth-warning", "-n", "3", "DBSIZE"])
        .unwrap();
    assert_ne!(in_db3.trim(), "0", "the buckets are in database 3");
    let in_db0 = redis
        .cli(&["-a", "s3cret-pw", "--no-auth-warning", "DBSIZE"])
        .unwrap();
    assert_eq!(in_db0.trim(), "0");
    // The password never reaches the log.
    drop(s);
}

#[test]
fn tollgate_http_takes_a_port_alone() {
    let port = tollgate_test::free_port().unwrap();
    let mut child = tollgate()
        .args(["serve", "--grpc", "off", "--log-format", "json"])
        .env("TOLLGATE_HTTP", format!(":{port}"))
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
    let s = Served {
        child,
        http: format!("http://127.0.0.1:{port}"),
        log: rx,
    };
    let line = log_line(&s, "tollgate listening");
    assert!(line.contains(&format!("0.0.0.0:{port}")), "{line}");
    assert!(readyz(&s).contains("200 OK"));
}

#[test]
fn startup_errors_are_printed_once_and_without_colour() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    for (args, env, needle) in [
        (
            vec!["serve", "--config", missing.to_str().unwrap()],
            None,
            "missing.toml",
        ),
        (
            vec!["serve", "--grpc", "off"],
            Some(("REDIS_URL", "localhost:6379")),
            "REDIS_URL: not a URL",
        ),
        (
            vec!["serve", "--grpc", "off"],
            Some(("TOLLGATE_HTTP", "every-interface")),
            "not an address like",
        ),
    ] {
        let mut cmd = tollgate();
        cmd.args(&args);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.matches(needle).count(),
            1,
            "{args:?}: printed once:\n{err}"
        );
        assert!(
            !err.contains('\u{1b}'),
            "{args:?}: no ANSI codes in a pipe:\n{err:?}"
        );
    }
    // A running service's plain log, in a pipe: no colour codes either.
    let mut child = tollgate()
        .args(["serve", "--http", "127.0.0.1:0", "--grpc", "off"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.contains("INFO"), "{first}");
    assert!(!first.contains('\u{1b}'), "{first:?}");
}
