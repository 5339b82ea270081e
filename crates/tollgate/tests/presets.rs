//! The provider presets shipped in `examples/presets/`: each parses, holds the numbers it
//! promises, and keys one bucket per caller on its provider.

use std::path::PathBuf;

use tollgate::{Cost, LimitKind, Limiter, Policy, Subject, Window};

fn preset(name: &str) -> Policy {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "..",
        "examples",
        "presets",
        name,
    ]
    .iter()
    .collect();
    Policy::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `(kind, amount, window, capacity)` of every default limit of the preset's one rule.
fn limits(p: &Policy) -> Vec<(LimitKind, u64, Window, u64)> {
    assert_eq!(p.rules().len(), 1);
    p.rules()[0]
        .limit_sets()
        .next()
        .unwrap()
        .limits()
        .iter()
        .map(|l| {
            let l = l.limit();
            (l.kind(), l.amount(), l.window(), l.capacity())
        })
        .collect()
}

#[test]
fn every_preset_file_is_tested_here() {
    let dir: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "..",
        "examples",
        "presets",
    ]
    .iter()
    .collect();
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "anthropic.toml",
            "claude.toml",
            "conservative.toml",
            "deepinfra.toml",
            "deepseek.toml",
            "glm.toml",
            "openai-windows.toml",
            "openai.toml"
        ]
    );
}

#[test]
fn rpm_and_tpm_presets() {
    use LimitKind::{Requests, Tokens};
    let m = Window::MINUTE;
    for (file, rpm, tpm) in [
        ("anthropic.toml", 60, 100_000),
        ("openai.toml", 500, 90_000),
        ("conservative.toml", 30, 50_000),
    ] {
        assert_eq!(
            limits(&preset(file)),
            [(Requests, rpm, m, rpm), (Tokens, tpm, m, tpm)],
            "{file}"
        );
    }
}

#[test]
fn request_window_presets() {
    use LimitKind::Requests;
    for (file, minute, burst, hour, day) in [
        ("glm.toml", 60, 20, 3_000, 50_000),
        ("deepseek.toml", 50, 15, 2_000, 40_000),
        ("claude.toml", 50, 10, 2_000, 30_000),
        ("openai-windows.toml", 60, 20, 3_500, 100_000),
        ("deepinfra.toml", 30, 10, 1_000, 20_000),
    ] {
        assert_eq!(
            limits(&preset(file)),
            [
                (Requests, minute, Window::MINUTE, burst),
                (Requests, hour, Window::HOUR, hour),
                (Requests, day, Window::DAY, day),
            ],
            "{file}"
        );
    }
}

#[tokio::test]
async fn presets_key_one_bucket_per_caller_on_their_provider() {
    let l = Limiter::with_policy(preset("anthropic.toml"));
    let agent = |a| Subject::new().agent(a).provider("anthropic");
    for _ in 0..60 {
        assert!(l.check(&agent("a1"), Cost::ONE).await.unwrap().is_allowed());
    }
    assert!(!l.check(&agent("a1"), Cost::ONE).await.unwrap().is_allowed());
    assert!(l.check(&agent("a2"), Cost::ONE).await.unwrap().is_allowed());
    // A call with no caller attribute at all is limited too (one shared bucket).
    let anon = Subject::new().provider("anthropic");
    assert_eq!(l.check(&anon, Cost::ONE).await.unwrap().statuses().len(), 2);
    // Other providers are not this preset's.
    let other = Subject::new().agent("a1").provider("openai");
    assert!(l
        .check(&other, Cost::ONE)
        .await
        .unwrap()
        .statuses()
        .is_empty());
}
