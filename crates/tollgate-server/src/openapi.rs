//! The OpenAPI 3.1 document of the HTTP API, served at `/openapi.json`.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// Every path the router serves, with its methods (the document and the router are checked
/// against each other in tests).
pub const PATHS: [(&str, &str); 18] = [
    ("/v1/check", "post"),
    ("/v1/peek", "post"),
    ("/v1/reserve", "post"),
    ("/v1/acquire", "post"),
    ("/v1/admin/subject-limits", "get"),
    ("/v1/admin/subject-limits", "put"),
    ("/v1/admin/subject-limits", "delete"),
    ("/v1/admin/subjects", "get"),
    ("/v1/permits/{id}/commit", "post"),
    ("/v1/permits/{id}/cancel", "post"),
    ("/v1/permits/{id}/renew", "post"),
    ("/v1/usage", "get"),
    ("/v1/reset", "post"),
    ("/v1/forward-auth", "get"),
    ("/metrics", "get"),
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/openapi.json", "get"),
];

fn r(schema: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{schema}") })
}

fn json_body(schema: &str) -> Value {
    json!({ "content": { "application/json": { "schema": r(schema) } } })
}

fn answer(description: &str, schema: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": r(schema) } } })
}

fn errors() -> Value {
    json!({
        "400": answer("Invalid input; the message names the field", "Error"),
        "401": answer("Missing or invalid bearer token; nothing was spent", "Error"),
        "403": answer("The token may not act for this tenant, or a call limit loosens the policy without the admin token", "Error"),
        "413": answer("The body is larger than the server accepts", "Error"),
        "503": answer("The store could not decide", "Error"),
    })
}

fn decision_op(summary: &str, deny: Option<&str>, request: &str) -> Value {
    let mut responses = errors();
    responses["200"] = answer("The decision (allowed, or for peek either way)", "Decision");
    if let Some(d) = deny {
        responses["429"] = answer(d, "Decision");
        responses["413"] = json!({
            "description": "The cost can never fit (more than a bucket holds): outcome too_large, header x-should-retry: false, no Retry-After. (Also a body larger than the server accepts, with an Error.)",
            "content": { "application/json": { "schema": { "oneOf": [r("Decision"), r("Error")] } } },
        });
        responses["403"] = json!({
            "description": "No rule covers the call and the policy says unmatched = \"deny\" (outcome unmatched, E4403); or the token may not act for this tenant, or a call limit loosens the policy without the admin token",
            "content": { "application/json": { "schema": { "oneOf": [r("Decision"), r("Error")] } } },
        });
    }
    json!({
        "summary": summary,
        "requestBody": { "required": true, "content": json_body(request)["content"] },
        "responses": responses,
    })
}

fn admin_errors() -> Value {
    json!({
        "400": answer("Invalid input; the message names the field", "Error"),
        "401": answer("Missing or invalid bearer token", "Error"),
        "403": answer("Not the admin token", "Error"),
        "404": answer("No such rule (or nothing set for this subject)", "Error"),
        "503": answer("Redis did not take the setting; nothing changed", "Error"),
    })
}

fn permit_op(summary: &str, body: Option<&str>) -> Value {
    let mut op = json!({
        "summary": summary,
        "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
        "responses": {
            "200": answer("Done (or already done: settlement is idempotent)", "Settlement"),
            "404": answer("No such permit", "Error"),
            "403": answer("The permit belongs to another client", "Error"),
            "409": answer("The permit is already settled or expired", "Error"),
        },
    });
    if let Some(b) = body {
        op["requestBody"] = json!({ "required": false, "content": json_body(b)["content"] });
    }
    op
}

/// The document.
pub fn document() -> Value {
    let subject = json!({
        "type": "object",
        "description": "Attributes of the call: tenant, agent, user, provider, model, tier, or any label. At most 32; values of at most 256 bytes.",
        "maxProperties": 32,
        "additionalProperties": { "type": "string", "maxLength": 256 },
        "propertyNames": { "pattern": "^[A-Za-z0-9_.-]{1,64}$" },
    });
    let mut acquire = decision_op(
        "Wait for admission, then spend (or hold a permit)",
        Some("The wait ran out: the last denial"),
        "AcquireRequest",
    );
    acquire["description"] = json!("Held open until the call is admitted or max_wait_ms runs out (cut to [server] max_acquire_wait); waiters on a bucket are served in arrival order. A client that disconnects leaves the queue and spends nothing. 503 when max_waiters requests already wait.");
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "tollgate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Rate limiting for AI inference traffic. Every decision response carries the rate-limit headers (x-ratelimit-*, RateLimit-Policy/RateLimit) and Retry-After on denials.",
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Subject": subject,
                "Cost": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "requests": { "type": "integer", "minimum": 0, "default": 1 },
                        "tokens": { "type": "integer", "minimum": 0 },
                        "input_tokens": { "type": "integer", "minimum": 0 },
                        "output_tokens": { "type": "integer", "minimum": 0 },
                    },
                },
                "CallLimit": {
                    "type": "object",
                    "required": ["kind", "amount"],
                    "additionalProperties": false,
                    "description": "A limit of the call's own. Tighter than the policy's limit of that kind and window: applied on top of it (a bucket per rule partition and amount). Looser: replaces it, with the admin token only.",
                    "properties": {
                        "kind": { "enum": ["requests", "tokens", "input_tokens", "output_tokens", "concurrency"] },
                        "amount": { "type": "integer", "minimum": 1 },
                        "per": { "type": "string", "default": "minute", "description": "The window of the policy's limit it changes (ignored for concurrency)" },
                    },
                },
                "DecisionRequest": {
                    "type": "object",
                    "required": ["subject"],
                    "additionalProperties": false,
                    "properties": {
                        "subject": r("Subject"),
                        "cost": r("Cost"),
                        "request_id": { "type": "string", "maxLength": 128, "description": "Idempotency key for check (not with limits): a retried admission (same id, subject and cost) is answered again and spends nothing; a denial is decided again" },
                        "limits": { "type": "array", "items": r("CallLimit"), "description": "The call's own limits (seed-style rpm_limit / tpm_limit)" },
                    },
                },
                "AcquireRequest": {
                    "type": "object",
                    "required": ["subject"],
                    "additionalProperties": false,
                    "properties": {
                        "subject": r("Subject"),
                        "cost": r("Cost"),
                        "max_wait_ms": { "type": "integer", "minimum": 0, "default": 0, "description": "How long to hold the request open for admission; cut to the server's max_acquire_wait (30 s by default)" },
                        "permit": { "type": "boolean", "default": false, "description": "Keep the admission as a permit (commit, cancel, renew) instead of releasing it at once" },
                    },
                },
                "Limit": {
                    "type": "object",
                    "required": ["kind", "amount"],
                    "additionalProperties": false,
                    "properties": {
                        "kind": { "enum": ["requests", "tokens", "input_tokens", "output_tokens", "concurrency"] },
                        "amount": { "type": "integer", "minimum": 1 },
                        "per": { "type": "string", "examples": ["minute", "hour", "day", "month", "90m"] },
                        "algorithm": { "enum": ["gcra", "sliding_window", "sliding_log", "fixed_window"] },
                        "burst": { "type": "integer", "minimum": 1 },
                        "lease": { "type": "string", "examples": ["5m"] },
                    },
                },
                "SubjectLimits": {
                    "type": "object",
                    "required": ["subject", "limits"],
                    "additionalProperties": false,
                    "properties": {
                        "subject": { "type": "object", "additionalProperties": { "type": "string" }, "description": "Exact attribute values, such as {\"user\": \"premium_user\"}" },
                        "rule": { "type": "string", "description": "The rule; absent: every rule that partitions by all of the subject's attributes" },
                        "limits": { "type": "array", "items": r("Limit"), "minItems": 1, "description": "Replace the rule's limits for this subject" },
                        "set_by": { "type": "string", "readOnly": true },
                    },
                },
                "LimitStatus": {
                    "type": "object",
                    "properties": {
                        "rule": { "type": "string" }, "limit": { "type": "string" },
                        "kind": { "enum": ["requests", "tokens", "input_tokens", "output_tokens", "concurrency"] },
                        "amount": { "type": "integer" },
                        "window": { "type": "string", "description": "Absent for concurrency: slots are not spent per window" },
                        "capacity": { "type": "integer" }, "admitted": { "type": "boolean" },
                        "remaining": { "type": "integer" },
                        "reset_after_ms": { "type": "integer" }, "retry_after_ms": { "type": "integer" },
                    },
                },
                "Decision": {
                    "type": "object",
                    "required": ["allowed", "degraded", "outcome", "limits"],
                    "properties": {
                        "allowed": { "type": "boolean" },
                        "degraded": { "type": "boolean", "description": "Made without the shared store, by the rules' failure modes (also the x-tollgate-degraded: true header)" },
                        "outcome": { "enum": ["allowed", "denied", "too_large", "store_full", "unavailable", "unmatched"] },
                        "reason": { "enum": ["requests", "tokens", "concurrency", "quota", "too_large", "store_full", "unavailable", "unmatched"] },
                        "error_code": { "type": "string", "examples": ["E4404"] },
                        "retry_after_ms": { "type": "integer", "description": "When the same call would be admitted. For a concurrency denial: when the soonest lease expires, at the latest (a slot frees earlier when a call ends; /v1/acquire waits for it)" },
                        "waited_ms": { "type": "integer", "description": "/v1/acquire only: how long the request waited" },
                        "denied_by": { "type": "object" },
                        "message": { "type": "string" },
                        "limits": { "type": "array", "items": r("LimitStatus") },
                        "shadow": { "type": "object", "description": "Present when rules in shadow mode would have denied the call" },
                        "permit": {
                            "type": "object",
                            "properties": { "id": { "type": "string" }, "expires_in_ms": { "type": "integer" } },
                        },
                    },
                },
                "Settlement": {
                    "type": "object",
                    "properties": {
                        "id": { "type": "string" },
                        "settled": { "enum": ["committed", "cancelled", "expired"] },
                        "already": { "type": "boolean" },
                        "slots_held": { "type": "boolean" },
                        "expires_in_ms": { "type": "integer" },
                    },
                },
                "Commit": {
                    "type": "object",
                    "properties": { "cost": r("Cost") },
                    "description": "The actual cost; fields left out default to the reservation's",
                },
                "Usage": {
                    "type": "object",
                    "properties": {
                        "subject": r("Subject"),
                        "limits": { "type": "array", "items": { "type": "object", "properties": {
                            "rule": { "type": "string" }, "limit": { "type": "string" }, "kind": { "type": "string" },
                            "amount": { "type": "integer" }, "window": { "type": "string" },
                            "used": { "type": "integer" }, "capacity": { "type": "integer" },
                            "available": { "type": "integer" }, "reset_after_ms": { "type": "integer" },
                        } } },
                    },
                },
                "Reset": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": { "subject": r("Subject"), "rule": { "type": "string" } },
                },
                "ResetAnswer": {
                    "type": "object",
                    "properties": {
                        "reset": { "type": "boolean", "description": "false when nothing matched" },
                        "buckets": { "type": "integer", "description": "How many buckets were reset" },
                        "message": { "type": "string", "description": "When nothing matched: why, with the attributes each rule needs" },
                        "subject": r("Subject"), "rule": { "type": "string" },
                    },
                },
                "SubjectPage": {
                    "type": "object",
                    "properties": {
                        "rule": { "type": "string" },
                        "subjects": { "type": "array", "items": { "type": "object", "properties": {
                            "subject": { "type": "object", "additionalProperties": { "type": "string" } },
                            "limits": { "type": "array", "items": { "type": "object" }, "description": "The usage of each limit in use (as /v1/usage)" },
                        } } },
                        "next": { "type": ["string", "null"], "description": "The cursor of the next page" },
                        "tracked": { "type": "integer", "description": "Partitions of the rule in the index" },
                    },
                },
                "Error": {
                    "type": "object",
                    "properties": { "error": { "type": "object", "properties": {
                        "code": { "type": "string" }, "message": { "type": "string" },
                    } } },
                },
            },
        },
        "security": [{ "bearer": [] }],
        "paths": {
            "/v1/check": { "post": decision_op("Decide and spend the cost if allowed", Some("Denied: Retry-After and retry-after-ms say when to come back"), "DecisionRequest") },
            "/v1/peek": { "post": decision_op("Decide without spending", None, "DecisionRequest") },
            "/v1/reserve": { "post": decision_op("Reserve the estimate and a concurrency slot; the answer holds a permit id", Some("Denied"), "DecisionRequest") },
            "/v1/acquire": { "post": acquire },
            "/v1/admin/subject-limits": {
                "get": {
                    "summary": "The subject limits set at run time, and where they are kept (redis: for the fleet; memory: this process, until it stops)",
                    "responses": { "200": { "description": "kept_in and settings (SubjectLimits)" }, "403": answer("Not the admin token", "Error") },
                },
                "put": {
                    "summary": "Set one subject's limits (admin token), replacing its earlier ones; laid over the file's policy, so they survive reloads; audited in the log",
                    "requestBody": { "required": true, "content": json_body("SubjectLimits")["content"] },
                    "responses": { "200": { "description": "rules it went to, replaced, kept_in" }, "400": admin_errors()["400"], "403": admin_errors()["403"], "404": admin_errors()["404"], "503": admin_errors()["503"] },
                },
                "delete": {
                    "summary": "Remove one subject's limits set at run time (admin token)",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["subject"], "properties": { "subject": { "type": "object" }, "rule": { "type": "string" } } } } } },
                    "responses": { "200": { "description": "Removed" }, "403": admin_errors()["403"], "404": admin_errors()["404"], "503": admin_errors()["503"] },
                },
            },
            "/v1/admin/subjects": { "get": {
                "summary": "The subjects of a rule with buckets in use, with their usage, a page at a time (admin token)",
                "parameters": [
                    { "name": "rule", "in": "query", "required": true, "schema": { "type": "string" } },
                    { "name": "cursor", "in": "query", "schema": { "type": "string" }, "description": "The next of the previous page" },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } },
                ],
                "responses": { "200": answer("A page", "SubjectPage"), "400": admin_errors()["400"], "403": admin_errors()["403"], "404": answer("No such rule, or subjects are not tracked", "Error") },
            } },
            "/v1/permits/{id}/commit": { "post": permit_op("Settle against the actual cost (refund or charge the difference)", Some("Commit")) },
            "/v1/permits/{id}/cancel": { "post": permit_op("Refund the whole reservation", None) },
            "/v1/permits/{id}/renew": { "post": permit_op("Extend the permit's leases and expiry", None) },
            "/v1/usage": { "get": {
                "summary": "Used, capacity, available and reset of every applicable limit; query parameters are the subject's attributes",
                "parameters": [{ "name": "attributes", "in": "query", "style": "form", "explode": true, "schema": r("Subject") }],
                "responses": { "200": answer("Usage", "Usage"), "400": answer("Invalid attributes", "Error"), "401": answer("Unauthenticated", "Error") },
            } },
            "/v1/reset": { "post": {
                "summary": "Forget buckets (admin token): a subject's, a subject's in one rule, or a whole rule's",
                "requestBody": { "required": true, "content": json_body("Reset")["content"] },
                "responses": { "200": answer("How many buckets were reset; reset false (with a message) when nothing matched", "ResetAnswer"), "403": answer("Not the admin token", "Error"), "404": answer("No such rule", "Error") },
            } },
            "/v1/forward-auth": { "get": {
                "summary": "Forward authentication (nginx auth_request, Traefik ForwardAuth, Envoy ext_authz; any method, any path below): the subject comes from the configured request headers",
                "responses": {
                    "200": { "description": "Allowed; the rate-limit headers are set" },
                    "429": { "description": "Denied; Retry-After and the rate-limit headers are set" },
                    "413": { "description": "The cost can never fit; x-should-retry: false" },
                    "401": answer("Missing or invalid token (X-Tollgate-Token or Authorization)", "Error"),
                },
            } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "security": [], "responses": { "200": { "description": "Prometheus text format" } } } },
            "/healthz": { "get": { "summary": "Liveness", "security": [], "responses": { "200": { "description": "Alive" } } } },
            "/readyz": { "get": { "summary": "Readiness: the service can decide", "description": "status is ready, degraded (Redis down or the breaker not closed: the rules' failure modes decide) or unavailable. Degraded answers 200 unless [server] ready_when_degraded = false.", "security": [], "responses": { "200": { "description": "Ready, or degraded" }, "503": { "description": "The store cannot decide (or degraded with ready_when_degraded = false)" } } } },
            "/openapi.json": { "get": { "summary": "This document", "security": [], "responses": { "200": { "description": "OpenAPI 3.1" } } } },
        },
    })
}

/// The handler.
pub(crate) async fn openapi() -> Response {
    Json(document()).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_path_is_documented() {
        let doc = super::document();
        let paths = doc["paths"].as_object().unwrap();
        let methods: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(methods, super::PATHS.len());
        for (p, m) in super::PATHS {
            assert!(paths[p].get(m).is_some(), "{m} {p}");
        }
    }
}
