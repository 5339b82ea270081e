//! Rate-limit response headers rendered from a decision: OpenAI's `x-ratelimit-*`, the IETF
//! `RateLimit-Policy` and `RateLimit` fields, and `Retry-After`.

use std::fmt::Write;
use std::time::Duration;

use tollgate_core::LimitKind;

use crate::decision::{Decision, LimitStatus};

/// Which headers to render.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HeaderStyle {
    /// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`.
    OpenAi,
    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
    Ietf,
    /// Both.
    #[default]
    Both,
}

/// The headers for `decision`, as `(name, value)` pairs. `Retry-After` is added to every
/// denial that waiting can cure.
pub fn headers(decision: &Decision, style: HeaderStyle) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if matches!(style, HeaderStyle::OpenAi | HeaderStyle::Both) {
        openai(decision, &mut out);
    }
    if matches!(style, HeaderStyle::Ietf | HeaderStyle::Both) {
        ietf(decision, &mut out);
    }
    if let Some(retry) = retry_after_header(decision) {
        out.push(("retry-after", retry));
    }
    out
}

/// `Retry-After` in whole seconds, rounded up so that a client never retries too early.
pub fn retry_after_header(decision: &Decision) -> Option<String> {
    decision
        .retry_after()
        .map(|d| ceil_secs(d).max(1).to_string())
}

fn openai(decision: &Decision, out: &mut Vec<(&'static str, String)>) {
    let pairs = [
        (
            LimitKind::Requests,
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
        ),
        (
            LimitKind::Tokens,
            [
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],
        ),
    ];
    for (kind, [limit, remaining, reset]) in pairs {
        if let Some(s) = decision.tightest(kind) {
            out.push((limit, s.amount.to_string()));
            out.push((remaining, s.remaining.to_string()));
            out.push((reset, go_duration(s.reset_after)));
        }
    }
}

fn policy_name(s: &LimitStatus) -> String {
    let mut name = String::with_capacity(s.rule.len() + 12);
    for c in s.rule.chars() {
        // sf-string: printable ASCII without '"' and '\'.
        name.push(
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            },
        );
    }
    let _ = write!(name, ".{}", s.kind);
    name
}

fn ietf(decision: &Decision, out: &mut Vec<(&'static str, String)>) {
    if decision.statuses().is_empty() {
        return;
    }
    let mut policy = String::new();
    let mut current = String::new();
    for (i, s) in decision.statuses().iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let name = policy_name(s);
        let _ = write!(policy, "{sep}\"{name}\";q={}", s.amount);
        match s.kind {
            LimitKind::Requests => policy.push_str(";qu=\"requests\""),
            LimitKind::Concurrency => policy.push_str(";qu=\"concurrent-requests\""),
            _ => {}
        }
        if s.kind != LimitKind::Concurrency {
            let _ = write!(policy, ";w={}", ceil_secs(s.window.nominal()));
        }
        let _ = write!(
            current,
            "{sep}\"{name}\";r={};t={}",
            s.remaining,
            ceil_secs(s.reset_after)
        );
    }
    out.push(("ratelimit-policy", policy));
    out.push(("ratelimit", current));
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// A duration as OpenAI writes resets: `20ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`, rounded up
/// to the millisecond.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let total_secs = ms / 1000;
    let frac_ms = ms % 1000;
    let (h, m, s) = (total_secs / 3600, (total_secs % 3600) / 60, total_secs % 60);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if h > 0 || m > 0 {
        let _ = write!(out, "{m}m");
    }
    if frac_ms == 0 {
        let _ = write!(out, "{s}s");
    } else {
        let frac = format!("{frac_ms:03}");
        let _ = write!(out, "{s}.{}s", frac.trim_end_matches('0'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_micros(19_001)), "20ms");
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(go_duration(Duration::from_secs(3723)), "1h2m3s");
        assert_eq!(go_duration(Duration::ZERO), "0ms");
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(ceil_secs(Duration::from_millis(1001)), 2);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
    }
}
