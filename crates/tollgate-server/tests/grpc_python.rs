//! Envoy's rate limit service called by Python's `grpcio` through Envoy's published protos
//! (the `xds-protos` package), as an Envoy user's own tooling calls it: the route pattern of
//! nested descriptors, a descriptor's own limit, an empty domain refused, the standard health
//! check and server reflection. Python runs from the repository's `.venv` (made by
//! `scripts/venv` from `scripts/requirements-test.txt`; the test runs it if needed).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::{json, Value};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The repository's Python with grpcio and Envoy's protos, made by `scripts/venv` if missing.
fn python() -> PathBuf {
    let py = repo().join(".venv/bin/python");
    let ready = || {
        Command::new(&py)
            .args([
                "-c",
                "import grpc, grpc_health, grpc_reflection, envoy.service.ratelimit.v3.rls_pb2",
            ])
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
            "grpcio and xds-protos are not importable after scripts/venv"
        );
    }
    py
}

const NESTED: &str = r#"
[[rules]]
name = "tenant"
match = { tenant = "*" }
limits = [{ kind = "requests", amount = 3, per = "hour" }]

[[rules]]
name = "tenant-model"
match = { tenant = "*", model = "*" }
limits = [{ kind = "requests", amount = 2, per = "hour" }]
"#;

#[tokio::test]
async fn grpcio_on_envoys_protos_limits_nested_descriptors_and_checks_health() {
    let py = python();
    let s = start(NESTED).await;
    let addr = s.running.grpc.unwrap().to_string();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/envoy_rls_client.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py).arg(script).arg(addr).output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "envoy_rls_client.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));

    let route = |i: usize| {
        let r = &seen["route"][i];
        let st = r["statuses"].as_array().unwrap();
        (
            r["overall"].as_str().unwrap().to_owned(),
            st.iter()
                .map(|s| s["code"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>(),
            st.iter()
                .map(|s| s["remaining"].as_u64().unwrap())
                .collect::<Vec<_>>(),
        )
    };
    // The tenant's limit is spent once per request; the third is over the model's limit and
    // spends nothing, the tenant's descriptor showing its remaining unspent.
    assert_eq!(
        route(0),
        ("OK".into(), vec!["OK".into(), "OK".into()], vec![2, 1])
    );
    assert_eq!(
        route(1),
        ("OK".into(), vec!["OK".into(), "OK".into()], vec![1, 0])
    );
    assert_eq!(
        route(2),
        (
            "OVER_LIMIT".into(),
            vec!["OK".into(), "OVER_LIMIT".into()],
            vec![1, 0]
        )
    );
    assert_eq!(seen["route"][0]["statuses"][1]["unit"], "HOUR");
    // A descriptor's own limit: one per week.
    assert_eq!(seen["own"][0][0]["code"], "OK");
    assert_eq!(seen["own"][0][0]["per_unit"], 1);
    assert_eq!(seen["own"][0][0]["unit"], "WEEK");
    assert_eq!(seen["own"][1][0]["code"], "OVER_LIMIT");
    assert_eq!(seen["empty_domain"], "INVALID_ARGUMENT");
    assert_eq!(
        seen["health"],
        json!({"(server)": "SERVING", "envoy.service.ratelimit.v3.RateLimitService": "SERVING"})
    );
    let services = seen["services"].as_array().unwrap();
    for name in [
        "envoy.service.ratelimit.v3.RateLimitService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(services.iter().any(|s| s == name), "{name} in {services:?}");
    }
    assert!(seen["rls_file_descriptors"].as_u64().unwrap() >= 1);
    s.stop().await;
}

/// The descriptors server reflection serves are those of the pinned Envoy protos.
#[test]
fn the_reflection_descriptors_are_current() {
    let out = Command::new(python())
        .arg(repo().join("scripts/gen-rls-descriptors.py"))
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
