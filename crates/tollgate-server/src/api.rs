//! The JSON shapes of the HTTP API, their validation, and how decisions are rendered.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tollgate::{Cost, LimitStatus, Subject};

use crate::app::Judged;
use crate::config::{truncate, valid_attribute_name, MAX_ATTRIBUTES, MAX_VALUE_BYTES};
use crate::error::ApiError;

/// What one call spends, as sent in requests. `requests` defaults to 1 (in a commit, every
/// field defaults to what was reserved); `tokens` defaults to `input_tokens + output_tokens`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CostBody {
    /// Requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// Total tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Input (prompt) tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    /// Output (completion) tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
}

impl CostBody {
    /// The cost, with defaults from `base`.
    pub fn to_cost_defaulting(self, base: Cost) -> Cost {
        let input = self.input_tokens.unwrap_or(base.input_token_count());
        let output = self.output_tokens.unwrap_or(base.output_token_count());
        let split_given = self.input_tokens.is_some() || self.output_tokens.is_some();
        let tokens = self.tokens.unwrap_or(if split_given {
            input.saturating_add(output)
        } else {
            base.token_count()
        });
        Cost::split(input, output)
            .with_tokens(tokens)
            .with_requests(self.requests.unwrap_or(base.request_count()))
    }

    /// The cost of a new call (one request unless said otherwise).
    pub fn to_cost(self) -> Cost {
        self.to_cost_defaulting(Cost::requests(1))
    }
}

/// The body of `/v1/check`, `/v1/peek` and `/v1/reserve`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// The subject's attributes: `tenant`, `agent`, `user`, `provider`, `model`, `tier` or
    /// any custom label.
    pub subject: BTreeMap<String, String>,
    /// The cost (default: one request).
    #[serde(default)]
    pub cost: CostBody,
    /// Makes a check idempotent: a retry with the same id answers the first decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The body of `/v1/permits/{id}/commit`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    /// The actual cost.
    #[serde(default)]
    pub cost: CostBody,
}

/// The body of `/v1/reset`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// Whose buckets: every applicable limit's, or only `rule`'s. Without a subject, `rule`
    /// names a rule whose buckets are all forgotten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<BTreeMap<String, String>>,
    /// A rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// Parses a JSON body; errors name the field at fault.
///
/// # Errors
/// 400 with the field path and what is wrong.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ApiError::bad_request(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::bad_request(format!("{path}: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

/// Checks attributes (at most 32; names of letters, digits, `_`, `-`, `.`; values of at most
/// 256 bytes) and builds a subject from them. `field` prefixes messages (`subject`).
///
/// # Errors
/// 400 naming the attribute.
pub fn subject_from<'a>(
    attrs: impl IntoIterator<Item = (&'a str, &'a str)>,
    field: &str,
) -> Result<Subject<'a>, ApiError> {
    let mut s = Subject::new();
    let mut n = 0usize;
    for (name, value) in attrs {
        n += 1;
        if n > MAX_ATTRIBUTES {
            return Err(ApiError::bad_request(format!(
                "{field}: at most {MAX_ATTRIBUTES} attributes"
            )));
        }
        valid_attribute_name(name).map_err(|m| ApiError::bad_request(format!("{field}: {m}")))?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(ApiError::bad_request(format!(
                "{field}.{name}: values have at most {MAX_VALUE_BYTES} bytes, this one has {}",
                value.len()
            )));
        }
        if value.chars().any(char::is_control) {
            return Err(ApiError::bad_request(format!(
                "{field}.{name}: control characters are not allowed ({:?})",
                truncate(value, 32)
            )));
        }
        s.set(name, value);
    }
    Ok(s)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

fn status_json(s: &LimitStatus) -> Value {
    json!({
        "rule": s.rule,
        "limit": s.label,
        "kind": s.kind.as_str(),
        "amount": s.amount,
        "window": s.window.to_string(),
        "capacity": s.capacity,
        "admitted": s.admitted,
        "remaining": s.remaining,
        "reset_after_ms": ms(s.reset_after),
        "retry_after_ms": ms(s.retry_after),
    })
}

/// The JSON of one decision.
pub fn decision_json(j: &Judged) -> Value {
    let d = &j.decision;
    let mut v = json!({
        "allowed": d.is_allowed(),
        "outcome": d.outcome().as_str(),
        "limits": d.statuses().iter().map(status_json).collect::<Vec<_>>(),
    });
    if let Some(reason) = d.reason() {
        v["reason"] = json!(reason.code());
        v["error_code"] = json!(reason.error_code());
    }
    if let Some(retry) = d.retry_after() {
        v["retry_after_ms"] = json!(ms(retry));
    }
    if let Some(by) = d.denied_by() {
        v["denied_by"] = json!({ "rule": by.rule, "limit": by.label, "kind": by.kind.as_str() });
    }
    if !d.is_allowed() {
        v["message"] = json!(d.to_string());
    }
    if let Some(shadow) = &j.shadow {
        let mut s = json!({
            "would_deny": true,
            "outcome": shadow.outcome().as_str(),
            "rules": shadow
                .statuses()
                .iter()
                .filter(|s| !s.admitted)
                .map(|s| json!({ "rule": s.rule, "limit": s.label, "kind": s.kind.as_str() }))
                .collect::<Vec<_>>(),
        });
        if let Some(r) = shadow.retry_after() {
            s["retry_after_ms"] = json!(ms(r));
        }
        v["shadow"] = s;
    }
    v
}

/// The JSON of one limit's usage.
pub fn usage_json(u: &tollgate::LimitUsage) -> Value {
    json!({
        "rule": u.rule,
        "limit": u.label,
        "kind": u.kind.as_str(),
        "amount": u.amount,
        "window": u.window.to_string(),
        "used": u.used,
        "capacity": u.capacity,
        "available": u.available,
        "reset_after_ms": ms(u.reset_after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_default_sensibly() {
        let c = CostBody::default().to_cost();
        assert_eq!((c.request_count(), c.token_count()), (1, 0));
        let c = CostBody {
            input_tokens: Some(10),
            output_tokens: Some(5),
            ..CostBody::default()
        }
        .to_cost();
        assert_eq!(c.token_count(), 15);
        let reserved = Cost::tokens(100);
        let c = CostBody {
            tokens: Some(60),
            ..CostBody::default()
        }
        .to_cost_defaulting(reserved);
        assert_eq!((c.request_count(), c.token_count()), (1, 60));
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<DecisionRequest>(br#"{"subject":{"tenant":5}}"#).unwrap_err();
        assert!(e.message.starts_with("subject.tenant:"), "{}", e.message);
        let e =
            parse_json::<DecisionRequest>(br#"{"subject":{},"cost":{"tokens":"x"}}"#).unwrap_err();
        assert!(e.message.starts_with("cost.tokens:"), "{}", e.message);
        let e = parse_json::<DecisionRequest>(br#"{"subject":{"#).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        let e = parse_json::<DecisionRequest>(br#"{}"#).unwrap_err();
        assert!(e.message.contains("subject"), "{}", e.message);
    }

    #[test]
    fn subjects_are_bounded() {
        let long = "x".repeat(257);
        let e = subject_from([("tenant", long.as_str())], "subject").unwrap_err();
        assert!(e.message.contains("256"), "{}", e.message);
        let names: Vec<String> = (0..33).map(|i| format!("a{i}")).collect();
        let e = subject_from(names.iter().map(|n| (n.as_str(), "v")), "subject").unwrap_err();
        assert!(e.message.contains("32"), "{}", e.message);
        assert!(subject_from([("bad name", "v")], "subject").is_err());
        let s = subject_from([("tenant", "acme"), ("region", "eu")], "subject").unwrap();
        assert_eq!(s.len(), 2);
    }
}
