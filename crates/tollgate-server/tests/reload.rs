//! Hot reload (on demand as SIGHUP does, and on file change) and shadow mode.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use serde_json::json;
use tollgate::{ManualClock, Timestamp};
use tollgate_server::config::Config;
use tollgate_server::server::{self, Options};

const V1: &str = r#"
[[rules]]
name = "steady"
match = { tenant = "*" }
limits = [{ kind = "requests", amount = 2, per = "hour" }]

[[rules]]
name = "changing"
match = { user = "*" }
limits = [{ kind = "requests", amount = 1, per = "hour" }]
"#;

async fn start_file(path: &Path, watch: bool) -> Service {
    let mut config = Config::load(path).unwrap();
    config.server.http = "127.0.0.1:0".parse().unwrap();
    config.server.grpc = None;
    let clock = ManualClock::new(Timestamp::from_secs(1_750_000_000));
    let running = server::start(Options {
        config,
        clock: Some(Arc::new(clock.clone())),
        watch,
        overrides: server::Overrides {
            http: Some("127.0.0.1:0".parse().unwrap()),
            grpc: Some(None),
            ..Default::default()
        },
    })
    .await
    .unwrap();
    let base = running.url();
    Service {
        running,
        clock,
        http: reqwest::Client::new(),
        base,
    }
}

async fn generation(s: &Service) -> u64 {
    s.get("/readyz", None).await.body["config_generation"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn reload_swaps_the_policy_and_unchanged_limits_keep_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, V1).unwrap();
    let s = start_file(&path, false).await;
    let who = json!({ "tenant": "a", "user": "u" });
    assert!(s.check(None, who.clone(), json!({})).await.allowed());
    // `changing` (1/hour) now denies.
    let d = s.check(None, who.clone(), json!({})).await;
    assert_eq!(d.body["denied_by"]["rule"], "changing");

    // Raise `changing` to 10/hour; `steady` is unchanged and keeps its one spent request.
    std::fs::write(&path, V1.replace("amount = 1,", "amount = 10,")).unwrap();
    assert_eq!(s.running.reload().unwrap(), 2);
    assert_eq!(generation(&s).await, 2);
    let a = s.check(None, who.clone(), json!({})).await;
    assert!(a.allowed(), "{}", a.body);
    // steady: 2 spent now, so the next call is denied by it.
    let d = s.check(None, who.clone(), json!({})).await;
    assert_eq!(d.body["denied_by"]["rule"], "steady", "{}", d.body);

    // An invalid file is refused, counted, and the running policy stays.
    std::fs::write(&path, V1.replace("amount = 2,", "amount = 0,")).unwrap();
    let e = s.running.reload().unwrap_err();
    assert_eq!(e.rule.as_deref(), Some("steady"));
    assert_eq!(e.location.as_ref().unwrap().line, 5, "{e}");
    assert_eq!(s.running.reload_errors(), 1);
    assert_eq!(generation(&s).await, 2);
    assert!(s
        .metrics()
        .await
        .lines()
        .any(|l| l.starts_with("tollgate_config_reloads_total{result=\"error\"}")));
    let d = s.check(None, json!({ "tenant": "b" }), json!({})).await;
    assert!(d.allowed());
    s.stop().await;
}

#[tokio::test]
async fn a_changed_file_is_reloaded_by_the_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("watched.toml");
    std::fs::write(&path, V1).unwrap();
    let s = start_file(&path, true).await;
    assert_eq!(generation(&s).await, 1);
    // Editors replace files: write a new file and rename it over the old one.
    let tmp = dir.path().join("watched.toml.tmp");
    std::fs::write(&tmp, V1.replace("amount = 1,", "amount = 3,")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    eventually("the watcher to reload", || async {
        generation(&s).await >= 2
    })
    .await;
    let who = json!({ "user": "w" });
    for _ in 0..3 {
        assert!(s.check(None, who.clone(), json!({})).await.allowed());
    }
    assert!(!s.check(None, who.clone(), json!({})).await.allowed());

    // A broken edit is refused by the watcher too.
    std::fs::write(&path, "[[rules]]\nname = 5\n").unwrap();
    eventually("the refused reload", || async {
        s.running.reload_errors() >= 1
    })
    .await;
    assert_eq!(generation(&s).await, 2);
    s.stop().await;
}

#[tokio::test]
async fn a_blank_file_or_one_without_rules_is_refused_unless_an_empty_policy_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, V1).unwrap();
    let s = start_file(&path, false).await;
    let who = json!({ "user": "e" });
    assert!(s.check(None, who.clone(), json!({})).await.allowed());
    assert!(!s.check(None, who.clone(), json!({})).await.allowed());

    // Truncated (`: > tollgate.toml`), only comments, no rules, an empty list of rules: each
    // is refused, counted, and the running rules stay.
    let refused = [
        ("", "file"),
        ("# being rewritten\n", "file"),
        ("[server]\nshadow = false\n", "rules"),
        ("rules = []\n", "rules"),
    ];
    for (n, (text, field)) in refused.into_iter().enumerate() {
        std::fs::write(&path, text).unwrap();
        let e = s.running.reload().unwrap_err();
        assert_eq!(e.field, field, "{text:?}: {e}");
        assert!(e.to_string().contains("tollgate.toml:1:1"), "{e}");
        assert_eq!(s.running.reload_errors(), n as u64 + 1);
        assert_eq!(generation(&s).await, 1);
        assert!(!s.check(None, who.clone(), json!({})).await.allowed());
    }
    assert!(s
        .metrics()
        .await
        .lines()
        .any(|l| l.starts_with("tollgate_config_reloads_total{result=\"error\"}")));

    // Saying so runs without rules: every call is admitted.
    std::fs::write(&path, "[server]\nallow_empty_policy = true\n").unwrap();
    assert_eq!(s.running.reload().unwrap(), 2);
    let a = s.check(None, who.clone(), json!({})).await;
    assert!(a.allowed(), "{}", a.body);
    assert!(
        a.body["limits"].as_array().unwrap().is_empty(),
        "{}",
        a.body
    );
    s.stop().await;
}

/// A Kubernetes ConfigMap volume: `tollgate.toml` links to `..data/tollgate.toml`, `..data`
/// links to a timestamped directory, and an update writes a new directory, points
/// `..data_tmp` at it, renames `..data_tmp` over `..data` and removes the old directory.
struct ConfigMap {
    dir: tempfile::TempDir,
    version: u32,
}

impl ConfigMap {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut m = ConfigMap { dir, version: 0 };
        m.update(text);
        std::os::unix::fs::symlink("..data/tollgate.toml", m.path()).unwrap();
        m
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("tollgate.toml")
    }

    fn version_dir(&self, v: u32) -> std::path::PathBuf {
        self.dir
            .path()
            .join(format!("..2026_01_01_00_00_00.{v:09}"))
    }

    fn update(&mut self, text: &str) {
        self.version += 1;
        let new = self.version_dir(self.version);
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("tollgate.toml"), text).unwrap();
        let tmp = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(new.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("..data")).unwrap();
        if self.version > 1 {
            std::fs::remove_dir_all(self.version_dir(self.version - 1)).unwrap();
        }
    }
}

#[tokio::test]
async fn configmap_updates_are_picked_up_without_sighup() {
    let mut map = ConfigMap::new(V1);
    let s = start_file(&map.path(), true).await;
    assert_eq!(generation(&s).await, 1);
    let who = json!({ "user": "k8s" });
    assert!(s.check(None, who.clone(), json!({})).await.allowed());
    assert!(!s.check(None, who.clone(), json!({})).await.allowed());

    // An update: `changing` goes to 3 per hour.
    map.update(&V1.replace("amount = 1,", "amount = 3,"));
    eventually("the ConfigMap update", || async {
        generation(&s).await == 2
    })
    .await;
    assert!(s.check(None, who.clone(), json!({})).await.allowed());

    // A later update, and then an edit of the file the link resolves to.
    map.update(&V1.replace("amount = 1,", "amount = 4,"));
    eventually("the second update", || async { generation(&s).await == 3 }).await;
    assert!(s.check(None, who.clone(), json!({})).await.allowed());
    std::fs::write(
        map.version_dir(map.version).join("tollgate.toml"),
        V1.replace("amount = 1,", "amount = 5,"),
    )
    .unwrap();
    eventually("the edit in place", || async { generation(&s).await == 4 }).await;
    // A changed limit starts a new bucket: 5 calls, then a denial.
    for _ in 0..5 {
        assert!(s.check(None, who.clone(), json!({})).await.allowed());
    }
    assert!(!s.check(None, who.clone(), json!({})).await.allowed());

    // An update that empties the file is refused; the rules stay.
    map.update("");
    eventually("the refused update", || async {
        s.running.reload_errors() == 1
    })
    .await;
    assert_eq!(generation(&s).await, 4);
    assert!(!s.check(None, who.clone(), json!({})).await.allowed());
    s.stop().await;
}

const SHADOW: &str = r#"
[[rules]]
name = "shadow-trial"
match = { tenant = "*" }
shadow = true
limits = [{ kind = "requests", amount = 1, per = "hour" }]

[[rules]]
name = "enforced-cap"
match = { tenant = "*" }
limits = [{ kind = "requests", amount = 3, per = "hour" }]
"#;

#[tokio::test]
async fn shadow_rules_count_denials_and_admit() {
    let s = start(SHADOW).await;
    let who = json!({ "tenant": "sh" });
    assert!(s.check(None, who.clone(), json!({})).await.allowed());
    // The shadow rule would deny; the call is admitted and the would-be denial reported.
    let a = s.check(None, who.clone(), json!({})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.allowed());
    assert_eq!(a.body["shadow"]["would_deny"], true);
    assert_eq!(a.body["shadow"]["rules"][0]["rule"], "shadow-trial");
    // The enforced rule was spent by the shadow-admitted call.
    assert!(s.check(None, who.clone(), json!({})).await.allowed());
    assert_eq!(s.used(None, "tenant=sh", "requests").await, 1);
    let usage = s.get("/v1/usage?tenant=sh", None).await;
    let enforced = usage.body["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["rule"] == "enforced-cap")
        .unwrap()
        .clone();
    assert_eq!(enforced["used"], 3);
    // The enforced rule denies for real.
    let d = s.check(None, who.clone(), json!({})).await;
    assert_eq!(d.status, 429, "{}", d.body);
    assert_eq!(d.body["denied_by"]["rule"], "enforced-cap");
    let m = s.metrics().await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("tollgate_shadow_denials_total{")
                && l.contains("rule=\"shadow-trial\"")
                && l.ends_with(" 2")),
        "{m}"
    );
    // The admitted calls count as allowed (one outcome vocabulary across the counters); the
    // shadow rule's would-be denials are tollgate_shadow_denials_total's.
    assert!(!m.contains("shadow_allowed"), "{m}");
    assert!(m
        .lines()
        .any(|l| l.starts_with("tollgate_server_decisions_total{")
            && l.contains("outcome=\"allowed\"")
            && !l.ends_with(" 0")));
    s.stop().await;
}

#[tokio::test]
async fn global_shadow_mode_admits_everything() {
    let policy = SHADOW
        .replace("shadow-trial", "g-trial")
        .replace("enforced-cap", "g-cap");
    let s = start(&format!("[server]\nshadow = true\n{policy}")).await;
    let who = json!({ "tenant": "gs" });
    for i in 0..6 {
        let a = s.check(None, who.clone(), json!({})).await;
        assert_eq!(a.status, 200, "call {i}: {}", a.body);
        assert_eq!(
            a.body.get("shadow").is_some(),
            i >= 1,
            "call {i}: {}",
            a.body
        );
    }
    // Reserve follows shadow mode too.
    let r = s.post("/v1/reserve", None, json!({ "subject": who })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["permit"]["id"].is_string());
    s.stop().await;
}
