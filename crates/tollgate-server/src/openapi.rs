//! The OpenAPI 3.1 document of the HTTP API, served at `/openapi.json`.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// Every path the router serves, with its methods (the document and the router are checked
/// against each other in tests).
pub const PATHS: [(&str, &str); 13] = [
    ("/v1/check", "post"),
    ("/v1/peek", "post"),
    ("/v1/reserve", "post"),
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
        "403": answer("The token may not act for this tenant", "Error"),
        "413": answer("The body is larger than the server accepts", "Error"),
        "503": answer("The store could not decide", "Error"),
    })
}

fn decision_op(summary: &str, deny: Option<&str>) -> Value {
    let mut responses = errors();
    responses["200"] = answer("The decision (allowed, or for peek either way)", "Decision");
    if let Some(d) = deny {
        responses["429"] = answer(d, "Decision");
    }
    json!({
        "summary": summary,
        "requestBody": { "required": true, "content": json_body("DecisionRequest")["content"] },
        "responses": responses,
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
                "DecisionRequest": {
                    "type": "object",
                    "required": ["subject"],
                    "additionalProperties": false,
                    "properties": {
                        "subject": r("Subject"),
                        "cost": r("Cost"),
                        "request_id": { "type": "string", "maxLength": 128, "description": "Idempotency key for check: a retried admission (same id, subject and cost) is answered again and spends nothing; a denial is decided again" },
                    },
                },
                "LimitStatus": {
                    "type": "object",
                    "properties": {
                        "rule": { "type": "string" }, "limit": { "type": "string" },
                        "kind": { "enum": ["requests", "tokens", "input_tokens", "output_tokens", "concurrency"] },
                        "amount": { "type": "integer" }, "window": { "type": "string" },
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
                        "outcome": { "enum": ["allowed", "denied", "too_large", "store_full"] },
                        "reason": { "enum": ["requests", "tokens", "concurrency", "quota", "too_large", "store_full"] },
                        "error_code": { "type": "string", "examples": ["E4404"] },
                        "retry_after_ms": { "type": "integer" },
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
            "/v1/check": { "post": decision_op("Decide and spend the cost if allowed", Some("Denied: Retry-After says when to come back")) },
            "/v1/peek": { "post": decision_op("Decide without spending", None) },
            "/v1/reserve": { "post": decision_op("Reserve the estimate and a concurrency slot; the answer holds a permit id", Some("Denied")) },
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
                "responses": { "200": { "description": "Reset" }, "403": answer("Not the admin token", "Error"), "404": answer("No such rule", "Error") },
            } },
            "/v1/forward-auth": { "get": {
                "summary": "Forward authentication (nginx auth_request, Traefik ForwardAuth, Envoy ext_authz; any method, any path below): the subject comes from the configured request headers",
                "responses": {
                    "200": { "description": "Allowed; the rate-limit headers are set" },
                    "429": { "description": "Denied; Retry-After and the rate-limit headers are set" },
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
        assert_eq!(paths.len(), super::PATHS.len());
        for (p, m) in super::PATHS {
            assert!(paths[p].get(m).is_some(), "{m} {p}");
        }
    }
}
