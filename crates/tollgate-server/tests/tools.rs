//! The real `tollgate` binary with the tools and clients users point at it: the official
//! `openai` SDK (its retries of `/v1/check`), `promtool check metrics` (Debian's
//! `prometheus` package) over `/metrics`, and schemathesis over `/openapi.json`. The Python
//! tools run from the repository's `.venv` (`scripts/venv`, from
//! `scripts/requirements-test.txt`; the tests run it when needed). A missing tool fails the
//! test, naming what to install.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;
use tollgate_test::Service;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The repository's Python with `modules` importable, made by `scripts/venv` when missing.
fn python(modules: &str) -> PathBuf {
    let py = repo().join(".venv/bin/python");
    let ready = || {
        Command::new(&py)
            .args(["-c", &format!("import {modules}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready() {
        let status = Command::new("bash")
            .arg(repo().join("scripts/venv"))
            .status()
            .expect("scripts/venv runs");
        assert!(status.success(), "scripts/venv failed");
        assert!(
            ready(),
            "{modules} not importable after scripts/venv: pin it in scripts/requirements-test.txt"
        );
    }
    py
}

const SDK_POLICY: &str = r#"
[[rules]]
name = "sdk"
match = { tenant = "*" }
limits = [
  { kind = "requests", amount = 1, per = "hour" },
  { kind = "tokens", amount = 1000, per = "minute" },
]
"#;

#[test]
fn the_openai_sdk_waits_retry_after_ms_and_does_not_retry_a_413() {
    let py = python("openai");
    // One call per 5 s: the second call comes well within the window even on a busy host.
    let policy = SDK_POLICY.replace("amount = 1, per = \"hour\"", "amount = 1, per = \"5s\"");
    let tollgate = Service::start(&policy, &[]).expect("tollgate serve starts");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/sdk_retry.py");
    let out = Command::new(py)
        .arg(script)
        .arg(format!("http://{}/v1", tollgate.addr()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sdk_retry.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(v["first"]["status"], 200, "{v}");

    // The second call: denied, then retried by the SDK once the named wait is over, and
    // admitted (the wait was long enough: tollgate's retry_after is exact).
    assert_eq!(v["second"]["status"], 200, "{v}");
    let seen = v["second_seen"].as_array().unwrap();
    let statuses: Vec<&Value> = seen
        .iter()
        .filter(|e| e["event"] == "response")
        .map(|e| &e["status"])
        .collect();
    assert_eq!(statuses, [429, 200], "{v}");
    let denial = &seen[1];
    let wait_ms: f64 = denial["retry_after_ms"]
        .as_str()
        .expect("retry-after-ms on the 429")
        .parse()
        .unwrap();
    assert!(denial["retry_after"].as_str().is_some(), "{v}");
    let waited = seen[2]["at"].as_f64().unwrap() - denial["at"].as_f64().unwrap();
    assert!(
        waited * 1000.0 >= wait_ms,
        "the SDK retried after {waited} s, before the {wait_ms} ms tollgate named"
    );

    // A call that can never fit: one request, a 413 the SDK does not retry.
    assert_eq!(v["too_large"]["status"], 413, "{v}");
    assert_eq!(v["too_large"]["answer"]["outcome"], "too_large", "{v}");
    let seen = v["too_large_seen"].as_array().unwrap();
    let requests = seen.iter().filter(|e| e["event"] == "request").count();
    assert_eq!(requests, 1, "the SDK retried a 413: {v}");
    assert_eq!(seen[1]["should_retry"], "false", "{v}");
}

/// The path of `tool`, or a failure that says how to install it.
fn need(tool: &str, package: &str) -> PathBuf {
    let dirs = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&dirs)
        .chain(["/usr/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{tool} is not installed: apt-get install -y {package} (.ci/run installs it)")
        })
}

/// `POST path` with a JSON body on a fresh connection: the status and the body.
fn post(tollgate: &Service, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = tollgate.addr();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `/metrics` after a few decisions of each kind.
fn scraped(tollgate: &Service) -> String {
    for tokens in [1, 1, 1, 1_000_000] {
        let body = format!("{{\"subject\":{{\"tenant\":\"m\"}},\"cost\":{{\"tokens\":{tokens}}}}}");
        post(tollgate, "/v1/check", &body);
    }
    let (status, body) = tollgate.get("/metrics").unwrap();
    assert_eq!(status, 200);
    body
}

#[test]
fn metrics_pass_promtool_check_metrics() {
    let promtool = need("promtool", "prometheus");
    let policy = format!(
        "{SDK_POLICY}\n[[rules]]\nname = \"trial\"\nmatch = {{ tenant = \"*\" }}\nshadow = true\nlimits = [{{ kind = \"requests\", amount = 5, per = \"minute\" }}]\n"
    );
    let tollgate = Service::start(&policy, &[]).expect("tollgate serve starts");
    // Before any decision: every counter is there, at zero.
    let (_, fresh) = tollgate.get("/metrics").unwrap();
    for series in [
        "tollgate_decisions_total{outcome=\"allowed\"} 0",
        "tollgate_server_decisions_total{api=\"check\",outcome=\"allowed\",rule=\"\",limit=\"\"} 0",
        "tollgate_auth_failures_total{why=\"invalid\"} 0",
        "tollgate_config_reloads_total{result=\"error\"} 0",
        "tollgate_store_errors_total 0",
        "tollgate_shadow_denials_total{rule=\"trial\",limit=\"requests/minute\"} 0",
        "tollgate_build_info{version=\"",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(fresh.contains(series), "{series} missing from\n{fresh}");
    }
    let body = scraped(&tollgate);
    // One vocabulary: the outcomes of the JSON answers, in both decision counters.
    for series in [
        "tollgate_decisions_total{outcome=\"too_large\",rule=\"sdk\",kind=\"tokens\",reason=\"too_large\"} 1",
        "tollgate_decisions_total{outcome=\"denied\",rule=\"sdk\",kind=\"requests\",reason=\"requests\"} 2",
        "tollgate_server_decisions_total{api=\"check\",outcome=\"too_large\",rule=\"sdk\",limit=\"tokens/minute\"} 1",
        "tollgate_server_decisions_total{api=\"check\",outcome=\"denied\",rule=\"sdk\",limit=\"requests/hour\"} 2",
    ] {
        assert!(body.contains(series), "{series} missing from\n{body}");
    }
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics:\n{}{}\n--- the metrics:\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_gateways_counters_start_at_zero_for_each_upstream() {
    // Nothing listens on the discard port: no call is made, only the counters are read.
    let tollgate = Service::start(
        SDK_POLICY,
        &[
            "--upstream",
            "openai=http://127.0.0.1:9/v1",
            "--upstream",
            "anthropic=http://127.0.0.1:9",
        ],
    )
    .expect("tollgate serve starts with two upstreams");
    let (_, fresh) = tollgate.get("/metrics").unwrap();
    for provider in ["openai", "anthropic"] {
        for name in [
            "tollgate_gateway_admitted_total",
            "tollgate_gateway_upstream_429_total",
            "tollgate_gateway_usage_missing_total",
            "tollgate_gateway_learned_denials_total",
        ] {
            let series = format!("{name}{{provider=\"{provider}\"}} 0");
            assert!(fresh.contains(&series), "{series} missing from\n{fresh}");
        }
    }
    for path in [
        "completed",
        "usage_missing",
        "upstream_error",
        "client_gone",
        "stream_broken",
    ] {
        let series = format!("tollgate_gateway_settlements_total{{path=\"{path}\"}} 0");
        assert!(fresh.contains(&series), "{series} missing from\n{fresh}");
    }
    assert!(fresh.contains("tollgate_gateway_open_streams 0"), "{fresh}");
}

#[test]
fn the_limit_label_survives_a_changed_amount() {
    let tollgate = Service::start(SDK_POLICY, &[]).expect("tollgate serve starts");
    let before = scraped(&tollgate);
    drop(tollgate);
    let tuned = SDK_POLICY.replace(
        "amount = 1000, per = \"minute\"",
        "amount = 2000, per = \"minute\"",
    );
    let tollgate = Service::start(&tuned, &[]).expect("tollgate serve starts");
    let after = scraped(&tollgate);
    let series = |m: &str| -> std::collections::BTreeSet<String> {
        m.lines()
            .filter(|l| {
                l.starts_with("tollgate_server_decisions_total{") && l.contains("rule=\"sdk\"")
            })
            .map(|l| l.rsplit_once(' ').unwrap().0.to_owned())
            .collect()
    };
    assert!(!series(&before).is_empty(), "{before}");
    assert_eq!(series(&before), series(&after));
}

/// The service schemathesis runs against: tokens on (so that it checks every operation's
/// authentication), acquire's waits cut short.
const SCHEMATHESIS_CONFIG: &str = r#"
[server]
max_acquire_wait = "100ms"

[auth]
admin_token = "admin-token-0123456789"

[[rules]]
name = "per-tenant"
match = { tenant = "*" }
limits = [
  { kind = "requests", amount = 100000, per = "second" },
  { kind = "tokens", amount = 1000, per = "minute" },
]
"#;

#[test]
fn schemathesis_finds_no_mismatch_with_openapi_json() {
    let py = python("schemathesis");
    let tollgate = Service::start(SCHEMATHESIS_CONFIG, &[]).expect("tollgate serve starts");
    let work = tempfile::tempdir().unwrap();
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    let out = Command::new(py)
        .current_dir(work.path())
        .args(["-m", "schemathesis.cli", "--no-color", "--config-file"])
        .arg(config)
        .arg("run")
        .arg(format!("http://{}/openapi.json", tollgate.addr()))
        .args(["--checks", "all", "--max-examples", "25", "--seed", "1"])
        .args(["--workers", "1", "--request-timeout", "10"])
        .args(["-H", "Authorization: Bearer admin-token-0123456789"])
        .args(["-H", "X-Tollgate-Token: admin-token-0123456789"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found mismatches:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("Tested: 24"), "every operation: {report}");
}

#[test]
fn bad_input_is_a_typed_400_naming_the_field() {
    let tollgate = Service::start(SDK_POLICY, &[]).expect("tollgate serve starts");
    for (body, status, needle) in [
        (
            r#"{"subject":{"tenant":"t"},"cost":[1,500]}"#,
            400,
            "cost: invalid type: sequence",
        ),
        (
            r#"{"subject":{"tenant":"t"},"cost":{"tokens":1.5}}"#,
            400,
            "cost.tokens: invalid value: floating point `1.5`, expected a whole number",
        ),
        (
            r#"{"subject":{"tenant":"t"},"cost":{"tokens":-1}}"#,
            400,
            "cost.tokens: invalid value: integer `-1`",
        ),
        (
            r#"{"subject":{"tenant":"t"},"cost":{"tokens":18446744073709551616}}"#,
            400,
            "cost.tokens",
        ),
        (
            r#"{"subject":{"tenant":"t"},"limits":[["requests",5]]}"#,
            400,
            "limits[0]: invalid type: sequence",
        ),
        (r#"[{"tenant":"t"}]"#, 400, "the body must be a JSON object"),
        (
            r#"{"subject":{"tenant":"t"},"cost":{"tokens":10.0}}"#,
            200,
            "\"allowed\":true",
        ),
        (
            r#"{"subject":{"tenant":"u"},"cost":{"tokens":null},"request_id":null}"#,
            200,
            "\"allowed\":true",
        ),
    ] {
        let (got, answer) = post(&tollgate, "/v1/check", body);
        assert_eq!(got, status, "{body}: {answer}");
        assert!(
            answer.contains(needle),
            "{body}: want {needle:?} in {answer}"
        );
    }
    let (got, answer) = post(&tollgate, "/v1/reset", r#"{"rule":null}"#);
    assert_eq!(got, 400, "{answer}");
    assert!(
        answer.contains("give a subject, a rule, or both"),
        "{answer}"
    );
}
