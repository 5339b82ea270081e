//! The gateway's metrics, through the `metrics` crate (the service exports them on
//! `/metrics`). No metric is labelled by tenant, key or user: models and providers only,
//! and the model label is capped ([`MAX_MODELS`]) so that clients cannot grow it without end.
//!
//! | metric | labels | what |
//! | --- | --- | --- |
//! | `tollgate_gateway_requests_total` | `provider`, `endpoint`, `status` | answers given |
//! | `tollgate_gateway_admitted_total` | `provider` | calls admitted (each is settled once, on one path) |
//! | `tollgate_gateway_tokens_total` | `provider`, `model`, `direction` (`input`, `output`) | tokens settled |
//! | `tollgate_gateway_estimate_error_tokens` | `provider` | histogram of actual − estimate (total tokens) |
//! | `tollgate_gateway_upstream_seconds` | `provider` | upstream latency, request to last byte |
//! | `tollgate_gateway_upstream_first_byte_seconds` | `provider` | upstream time to first byte |
//! | `tollgate_gateway_settlements_total` | `path` | settlements by exit path (see [`crate::settle::Path`]) |
//! | `tollgate_gateway_upstream_429_total` | `provider` | 429s the upstream answered |
//! | `tollgate_gateway_usage_missing_total` | `provider` | completed answers without usage (settled at the estimate) |
//! | `tollgate_gateway_learned_denials_total` | `provider` | calls held back by an upstream's learned limit |
//! | `tollgate_gateway_open_streams` | | streams being relayed |

use std::collections::HashSet;

use parking_lot::Mutex;

/// The most distinct model labels; later models are counted as `other`.
pub const MAX_MODELS: usize = 256;

/// The label for `model`: itself while fewer than [`MAX_MODELS`] were seen, else `other`.
pub fn model_label(model: &str) -> String {
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut seen = SEEN.lock();
    let set = seen.get_or_insert_with(HashSet::new);
    if set.contains(model) {
        return model.to_owned();
    }
    if set.len() < MAX_MODELS {
        set.insert(model.to_owned());
        return model.to_owned();
    }
    "other".to_owned()
}

/// Puts the gateway's counters at zero for each of `providers` and the settlements for each
/// of `paths` (the labels of every exit path, `settle::Path::ALL`), so that a dashboard or an
/// alert (`rate(...)`, `increase(...)`) sees each series from start-up rather than from its
/// first event, as with the service's own counters. The counters labelled by model, endpoint
/// or status appear with their first event.
pub fn start_at_zero<'a>(
    providers: impl IntoIterator<Item = &'a str>,
    paths: impl IntoIterator<Item = &'static str>,
) {
    for path in paths {
        metrics::counter!("tollgate_gateway_settlements_total", "path" => path).increment(0);
    }
    for provider in providers {
        for name in [
            "tollgate_gateway_admitted_total",
            "tollgate_gateway_upstream_429_total",
            "tollgate_gateway_usage_missing_total",
            "tollgate_gateway_learned_denials_total",
        ] {
            metrics::counter!(name, "provider" => provider.to_owned()).increment(0);
        }
    }
    metrics::gauge!("tollgate_gateway_open_streams").increment(0.0);
}

/// Counts an answer.
pub fn request(provider: &str, endpoint: &'static str, status: u16) {
    metrics::counter!(
        "tollgate_gateway_requests_total",
        "provider" => provider.to_owned(),
        "endpoint" => endpoint,
        "status" => status.to_string()
    )
    .increment(1);
}

/// Counts an upstream 429.
pub fn upstream_429(provider: &str) {
    metrics::counter!("tollgate_gateway_upstream_429_total", "provider" => provider.to_owned())
        .increment(1);
}

/// The open-streams gauge, moved by `delta`.
pub fn open_streams(delta: f64) {
    metrics::gauge!("tollgate_gateway_open_streams").increment(delta);
}
