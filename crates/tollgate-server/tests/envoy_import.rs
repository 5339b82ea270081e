//! `tollgate config import-envoy` on the configuration examples of envoyproxy/ratelimit's
//! README (tests/fixtures/envoy): each converts to a configuration that loads, or is refused
//! with the line of what cannot be carried; converted, the examples limit over real gRPC as
//! the README says they do.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tollgate_server::config::Config;
use tollgate_server::envoy_import::import;
use tonic::transport::Channel;

fn fixture(name: &str) -> (String, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/envoy")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    (name.to_owned(), text)
}

fn fixtures() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/envoy");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn every_readme_example_converts_or_is_refused_at_its_line() {
    let names = fixtures();
    assert_eq!(names.len(), 16, "{names:?}");
    for name in names {
        let got = import(&[fixture(&name)]);
        if name.starts_with("example11") {
            // share_threshold: true has no equivalent.
            let e = got.unwrap_err();
            let line = if name == "example11-1.yaml" { 7 } else { 6 };
            assert_eq!((e.file.as_str(), e.line), (name.as_str(), line), "{e}");
            assert!(e.message.contains("share_threshold"), "{e}");
            continue;
        }
        let toml = got.unwrap_or_else(|e| panic!("{e}"));
        let c = Config::from_toml(&toml, &name).unwrap_or_else(|e| panic!("{name}: {e}\n{toml}"));
        assert!(!c.policy.rules().is_empty(), "{name}");
        assert_eq!(c.grpc.domain_attribute.as_deref(), Some("domain"));
        assert_eq!(c.warnings(), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn what_cannot_be_carried_is_refused_with_its_line() {
    let refused = |yaml: &str, line: usize, says: &str| {
        let e = import(&[("t.yaml".to_owned(), yaml.to_owned())]).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("t.yaml", line), "{e}");
        assert!(e.message.contains(says), "{e}");
        assert!(
            e.to_string().starts_with(&format!("t.yaml:{line}: ")),
            "{e}"
        );
    };
    let base = "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: 1\n";
    refused(&format!("{base}    quota_mode: true\n"), 7, "quota_mode");
    refused(&format!("{base}    metadata:\n      a: b\n"), 8, "metadata");
    refused(
        &format!("{base}    colour: red\n"),
        7,
        "unknown field \"colour\"",
    );
    refused(
        &base.replace("second", "fortnight"),
        5,
        "invalid rate limit unit",
    );
    refused(&base.replace("key: k", "key: domain"), 3, "domain");
    refused(&base.replace("key: k", "key: \"a b\""), 3, "attribute name");
    refused(
        &base.replace("domain: d", "domain: \"\""),
        1,
        "empty domain",
    );
    refused(
        &base.replace("requests_per_unit: 1", "requests_per_unit: -1"),
        6,
        "whole number",
    );
    refused("domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unlimited: true\n      unit: second\n", 6, "unit");
    refused(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      replaces:\n        - name: nobody\n      unit: second\n      requests_per_unit: 1\n",
        6,
        "nobody",
    );
    refused("domain: &d x\ndescriptors: *d\n", 2, "alias");
    refused("domain: [x\n", 2, "");
    let e = import(&[fixture("example04-1.yaml"), fixture("example04-2.yaml")]).unwrap_err();
    assert!(e.message.contains("duplicate domain"), "{e}");
}

#[test]
fn a_replaces_naming_no_rule_is_a_config_error_with_its_line() {
    let e = Config::from_toml(
        "[[rules]]\nname = \"a\"\nmatch = { k = \"*\" }\nreplaces = [\"nope\"]\nlimits = [{ kind = \"requests\", amount = 1, per = \"second\" }]\n",
        "r.toml",
    )
    .unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.location.unwrap().line),
        ("replaces[0]", 4)
    );
}

#[test]
fn the_cli_prints_the_conversion_or_the_line() {
    let bin = env!("CARGO_BIN_EXE_tollgate");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/envoy");
    let out = Command::new(bin)
        .args(["config", "import-envoy"])
        .arg(dir.join("example01.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let toml = String::from_utf8(out.stdout).unwrap();
    assert!(
        toml.contains("name = \"mongo_cps.database_users\""),
        "{toml}"
    );
    let out = Command::new(bin)
        .args(["config", "import-envoy"])
        .arg(dir.join("example11-1.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("example11-1.yaml:7: share_threshold"), "{err}");
}

fn desc(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
        ..RateLimitDescriptor::default()
    }
}

async fn ask(
    c: &mut RateLimitServiceClient<Channel>,
    domain: &str,
    descriptors: Vec<RateLimitDescriptor>,
) -> RateLimitResponse {
    c.should_rate_limit(RateLimitRequest {
        domain: domain.into(),
        descriptors,
        hits_addend: 0,
    })
    .await
    .unwrap()
    .into_inner()
}

/// `(code, requests per unit, unit, remaining)` of each status.
fn seen(r: &RateLimitResponse) -> Vec<(i32, u32, i32, u32)> {
    r.statuses
        .iter()
        .map(|s| {
            let l = s.current_limit.clone().unwrap_or_default();
            (s.code, l.requests_per_unit, l.unit, s.limit_remaining)
        })
        .collect()
}

const OK: i32 = Code::Ok as i32;
const OVER: i32 = Code::OverLimit as i32;

#[tokio::test]
async fn converted_examples_limit_as_the_readme_says() {
    let files: Vec<(String, String)> = [
        "example02.yaml",
        "example03.yaml",
        "example04-2.yaml",
        "example05.yaml",
        "example06.yaml",
        "example07.yaml",
        "example08.yaml",
        "example09-1.yaml",
    ]
    .into_iter()
    .map(fixture)
    .collect();
    let toml = import(&files).unwrap();
    let s = start(&toml).await;
    let addr = s.running.grpc.unwrap();
    let mut c = RateLimitServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (sec, min, day) = (Unit::Second as i32, Unit::Minute as i32, Unit::Day as i32);

    // Example 2: marketing messages to one number 5 a day; any number 100 a day.
    let r = ask(
        &mut c,
        "messaging",
        vec![
            desc(&[("message_type", "marketing"), ("to_number", "2061111111")]),
            desc(&[("to_number", "2061111111")]),
        ],
    )
    .await;
    assert_eq!(seen(&r), [(OK, 5, day, 4), (OK, 100, day, 99)]);

    // Example 3: 10 a second per address, 50.0.0.5 none at all.
    let ip = |a: &str| vec![desc(&[("remote_address", a)])];
    assert_eq!(
        seen(&ask(&mut c, "edge_proxy_per_ip", ip("50.0.0.1")).await),
        [(OK, 10, sec, 9)]
    );
    let r = ask(&mut c, "edge_proxy_per_ip", ip("50.0.0.5")).await;
    assert_eq!((r.overall_code, r.statuses[0].code), (OVER, OVER));

    // Example 4: only a descriptor of the configuration's depth matches.
    let deep = vec![desc(&[("key", "value"), ("subkey", "subvalue")])];
    assert_eq!(
        seen(&ask(&mut c, "example4", deep).await),
        [(OK, 300, sec, 299)]
    );
    let shallow = vec![desc(&[("key", "value")])];
    assert_eq!(
        seen(&ask(&mut c, "example4", shallow).await),
        [(OK, 0, 0, 0)]
    );

    // Example 5: unlimited answers the largest remaining.
    let r = ask(&mut c, "internal", vec![desc(&[("ldap", "x")])]).await;
    assert_eq!(seen(&r), [(OK, 0, 0, u32::MAX)]);
    let r = ask(&mut c, "internal", vec![desc(&[("azure", "x")])]).await;
    assert_eq!(seen(&r), [(OK, 100, min, 99)]);

    // Example 6: user-a is in shadow mode (never limited, its limit still shown), user-b not.
    let user = |u: &str| vec![desc(&[("service", "auth-service"), ("user", u)])];
    for _ in 0..10 {
        ask(&mut c, "example6", user("user-a")).await;
    }
    assert_eq!(
        seen(&ask(&mut c, "example6", user("user-a")).await),
        [(OK, 10, sec, 0)]
    );
    assert_eq!(
        seen(&ask(&mut c, "example6", user("user-b")).await),
        [(OK, 20, sec, 19)]
    );

    // Example 7: with both descriptors the replacing limit alone applies.
    let both = vec![
        desc(&[("key_1", "value_1"), ("user", "bkthomps")]),
        desc(&[("key_2", "value_2"), ("user", "bkthomps")]),
    ];
    assert_eq!(
        seen(&ask(&mut c, "example7", both).await),
        [(OK, 0, 0, 0), (OK, 10, sec, 9)]
    );
    let alone = vec![desc(&[("key_1", "value_1"), ("user", "bkthomps")])];
    assert_eq!(
        seen(&ask(&mut c, "example7", alone).await),
        [(OK, 5, sec, 4)]
    );

    // Example 8: the value's own limit, not also the key's.
    let r = ask(&mut c, "example8", vec![desc(&[("key1", "value1")])]).await;
    assert_eq!(seen(&r), [(OK, 20, min, 19)]);
    let r = ask(&mut c, "example8", vec![desc(&[("key1", "other")])]).await;
    assert_eq!(seen(&r), [(OK, 10, min, 9)]);
    assert!(s
        .metrics()
        .await
        .contains("descriptor=\"example8.key1_other\""));

    // Example 9: a wildcard value, a limit per matching value.
    let key1 = |v: &str| vec![desc(&[("key1", v)])];
    assert_eq!(
        seen(&ask(&mut c, "example9", key1("value1")).await),
        [(OK, 20, min, 19)]
    );
    assert_eq!(
        seen(&ask(&mut c, "example9", key1("value2")).await),
        [(OK, 20, min, 19)]
    );
    s.stop().await;
}
