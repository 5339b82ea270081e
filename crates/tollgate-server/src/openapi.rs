//! The OpenAPI 3.1 document of the HTTP API, served at `/openapi.json`.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// Every path the router serves, with its methods (the document and the router are checked
/// against each other in tests).
pub const PATHS: [(&str, &str); 25] = [
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
    ("/v1/forward-auth", "post"),
    ("/v1/forward-auth", "put"),
    ("/v1/forward-auth", "patch"),
    ("/v1/forward-auth", "delete"),
    ("/v1/forward-auth", "head"),
    ("/v1/forward-auth", "options"),
    ("/v1/forward-auth", "trace"),
    ("/metrics", "get"),
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/openapi.json", "get"),
];

fn r(schema: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{schema}") })
}

fn json_body(schema: &str, example: Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": r(schema), "example": example } } })
}

fn answer(description: &str, schema: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": r(schema) } } })
}

/// An answer that is a decision or an error, as `status` can be either.
fn either(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "oneOf": [r("Decision"), r("Error")] } } },
    })
}

fn error(description: &str) -> Value {
    answer(description, "Error")
}

const BAD_REQUEST: &str = "Invalid input: a typed error whose message names the field (such as `cost.tokens: invalid type: string \"x\", expected a whole number ...`)";
const UNAUTHORIZED: &str = "Missing or invalid bearer token; nothing was spent";
const BODY_TOO_LARGE: &str = "The body is larger than [server] max_body_bytes";

/// The headers of a denial that waiting cures.
fn retry_headers() -> Value {
    json!({
        "Retry-After": { "required": true, "description": "Seconds until the same call is admitted, rounded up", "schema": { "type": "integer", "minimum": 1 } },
        "retry-after-ms": { "required": true, "description": "Milliseconds until the same call is admitted, rounded up (the OpenAI and Anthropic SDKs prefer it)", "schema": { "type": "integer", "minimum": 0 } },
    })
}

/// A decision operation: `/v1/check` (`spends`), `/v1/reserve`, `/v1/acquire`, or `/v1/peek`
/// (which answers 200 whatever the decision, but 503 when the store cannot decide).
fn decision_op(summary: &str, request: &str, example: Value, spends: bool) -> Value {
    let mut responses = json!({
        "200": answer(if spends { "Admitted: the cost is spent" } else { "The decision, admitted or not; nothing spent" }, "Decision"),
        "400": error(BAD_REQUEST),
        "401": error(UNAUTHORIZED),
        "403": either("The token may not act for this tenant, or a call limit loosens the policy without the admin token (Error); or, when the call is refused as no rule covers it under unmatched = \"deny\", the decision (outcome unmatched, E4403)"),
        "413": either("The cost can never fit (more than a bucket holds): the decision, outcome too_large, header x-should-retry: false, no Retry-After; or a body larger than [server] max_body_bytes (Error)"),
        "503": either("A rule that fails closed while the shared store is down: the decision, outcome unavailable, E5030 (not a rate-limit denial; no Retry-After); or the service cannot take the request now (Error: too many permits or waiters, the store failed)"),
    });
    if spends {
        responses["429"] = json!({
            "description": "Denied: Retry-After and retry-after-ms say when the same call will be admitted",
            "headers": retry_headers(),
            "content": { "application/json": { "schema": r("Decision") } },
        });
    } else {
        responses["403"] = error("The token may not act for this tenant, or a call limit loosens the policy without the admin token");
        responses["413"] = error(BODY_TOO_LARGE);
    }
    json!({
        "summary": summary,
        "requestBody": json_body(request, example),
        "responses": responses,
    })
}

fn permit_op(summary: &str, body: Option<(&str, Value)>) -> Value {
    let mut op = json!({
        "summary": summary,
        "parameters": [{
            "name": "id", "in": "path", "required": true,
            "description": "The permit's id, as /v1/reserve or /v1/acquire gave it",
            "schema": { "type": "string", "pattern": "^[A-Za-z0-9_]{1,64}$" },
            "example": "p_0123456789abcdef0123456789abcdef",
        }],
        "responses": {
            "200": answer("Done (or already done: settlement is idempotent)", "Settlement"),
            "400": error(BAD_REQUEST),
            "401": error(UNAUTHORIZED),
            "403": error("The permit belongs to another client"),
            "404": error("No such permit"),
            "409": error("The permit is already settled or expired"),
            "503": error("The store could not settle it"),
        },
    });
    if let Some((schema, example)) = body {
        let mut b = json_body(schema, example);
        b["required"] = json!(false);
        op["requestBody"] = b;
        op["responses"]["413"] = error(BODY_TOO_LARGE);
    }
    op
}

/// An operation the admin token may call.
fn admin_op(summary: &str, body: Option<(&str, Value)>, ok: Value) -> Value {
    let mut op = json!({
        "summary": summary,
        "responses": {
            "200": ok,
            "400": error(BAD_REQUEST),
            "401": error(UNAUTHORIZED),
            "403": error("Not the admin token"),
        },
    });
    if let Some((schema, example)) = body {
        op["requestBody"] = json_body(schema, example);
        op["responses"]["404"] = error("No such rule, or no rule partitions by the subject's attributes (or nothing was set for this subject)");
        op["responses"]["413"] = error(BODY_TOO_LARGE);
        op["responses"]["503"] = error("Redis did not take the setting; nothing changed");
    }
    op
}

/// The forward-auth operation, for one HTTP method (it answers every method).
fn forward_auth_op() -> Value {
    let header = |name: &str, what: &str, example: &str| {
        json!({
            "name": name, "in": "header", "required": false,
            "description": what,
            "schema": { "type": "string", "maxLength": 256, "pattern": "^[\\x20-\\x7e]*$" },
            "example": example,
        })
    };
    let text = |description: &str| json!({ "description": description, "content": { "text/plain": { "schema": { "type": "string" } } } });
    let mut denied = text("Denied (x-tollgate-outcome: denied): Retry-After, retry-after-ms and the rate-limit headers are set; the body says why");
    denied["headers"] = retry_headers();
    json!({
        "summary": "Forward authentication for proxies (nginx auth_request, Caddy forward_auth, Traefik ForwardAuth, Envoy ext_authz): decide on the request's headers, and spend when admitted",
        "description": "Any method, and any path below /v1/forward-auth/. The subject comes from the headers of [forward_auth] attributes (by default x-tenant-id, x-agent-id, x-user-id, x-provider, x-model), the estimated tokens from tokens_header (x-estimated-tokens). The tollgate token is read from [forward_auth] token_header (X-Tollgate-Token), never from the client's Authorization, which carries its key for the upstream. Every answer carries x-tollgate-outcome (allowed, denied, too_large, unmatched, unavailable, store_full). With [forward_auth] deny_status every refusal has that status instead (403 behind nginx, whose auth_request passes only 2xx, 401 and 403).",
        "security": [{ "tollgateToken": [] }],
        "parameters": [
            header("x-tenant-id", "The tenant attribute", "acme"),
            header("x-agent-id", "The agent attribute", "support-bot"),
            header("x-user-id", "The user attribute", "u-42"),
            header("x-provider", "The provider attribute", "openai"),
            header("x-model", "The model attribute", "gpt-4o"),
            {
                "name": "x-estimated-tokens", "in": "header", "required": false,
                "description": "The call's estimated tokens (a whole number)",
                "schema": { "type": "string", "pattern": "^[ \\t]*[0-9]{1,19}[ \\t]*$" },
                "example": "1500",
            },
        ],
        "responses": {
            "200": text("Admitted and spent (x-tollgate-outcome: allowed); the rate-limit headers are set; empty body"),
            "400": error("A header that is not visible ASCII, or a token count that is not a whole number"),
            "401": error("Missing or invalid tollgate token"),
            "403": text("No rule covers the call under unmatched = \"deny\" (x-tollgate-outcome: unmatched); or every refusal, with [forward_auth] deny_status = 403. (Error, as JSON: the token may not act for this tenant.)"),
            "413": text("The cost can never fit (x-tollgate-outcome: too_large): x-should-retry: false, no Retry-After"),
            "429": denied,
            "503": text("A rule that fails closed while the shared store is down (x-tollgate-outcome: unavailable)"),
        },
    })
}

/// The document.
pub fn document() -> Value {
    let value = json!({
        "type": "string",
        "maxLength": 256,
        "pattern": "^[^\\u0000-\\u001F\\u007F-\\u009F]*$",
        "description": "At most 256 characters, none of them a control character",
    });
    let subject = json!({
        "type": "object",
        "description": "Attributes of the call: tenant, agent, user, provider, model, tier, or any label. At most 32.",
        "maxProperties": 32,
        "additionalProperties": value,
        "propertyNames": { "pattern": "^[A-Za-z0-9_.-]{1,64}$" },
        "example": { "tenant": "acme", "provider": "openai", "model": "gpt-4o" },
    });
    let whole = |description: &str| json!({ "type": ["integer", "null"], "minimum": 0, "maximum": 18_446_744_073_709_551_615_u64, "description": description });
    let kind =
        json!({ "enum": ["requests", "tokens", "input_tokens", "output_tokens", "concurrency"] });
    let decision_example = json!({ "subject": { "tenant": "acme", "provider": "openai", "model": "gpt-4o" }, "cost": { "tokens": 1500 } });
    let acquire = {
        let mut op = decision_op(
            "Wait for admission, then spend (or hold a permit)",
            "AcquireRequest",
            json!({ "subject": { "tenant": "acme", "provider": "openai" }, "cost": { "tokens": 1500 }, "max_wait_ms": 50 }),
            true,
        );
        op["description"] = json!("Held open until the call is admitted or max_wait_ms runs out (cut to [server] max_acquire_wait); waiters on a bucket are served in arrival order. A client that disconnects leaves the queue and spends nothing. 503 when max_waiters requests already wait. 429: the wait ran out; the last denial.");
        op
    };
    let forward_auth = forward_auth_op();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "tollgate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Rate limiting for AI inference traffic. Every decision response carries the rate-limit headers (x-ratelimit-*, RateLimit-Policy/RateLimit); a denial that waiting cures carries Retry-After and retry-after-ms; a cost that can never fit is a 413 with x-should-retry: false. Numbers of units are whole numbers (1000 and 1000.0 alike); optional fields may be null, meaning left out.",
        },
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "A client token of [auth] clients, or the admin token" },
                "tollgateToken": { "type": "apiKey", "in": "header", "name": "X-Tollgate-Token", "description": "The tollgate token a proxy adds to forward-auth requests ([forward_auth] token_header)" },
            },
            "schemas": {
                "Subject": subject,
                "Cost": {
                    "type": "object",
                    "additionalProperties": false,
                    "description": "What the call spends; requests defaults to 1, tokens to input_tokens + output_tokens",
                    "properties": {
                        "requests": whole("Requests (default 1)"),
                        "tokens": whole("Total tokens"),
                        "input_tokens": whole("Input (prompt) tokens"),
                        "output_tokens": whole("Output (completion) tokens"),
                    },
                    "example": { "tokens": 1500 },
                },
                "CallLimit": {
                    "type": "object",
                    "required": ["kind", "amount"],
                    "additionalProperties": false,
                    "description": "A limit of the call's own. Tighter than the policy's limit of that kind and window: applied on top of it (a bucket per rule partition and amount). Looser: replaces it, with the admin token only. A limit whose kind and window no applicable limit has is a 400.",
                    "properties": {
                        "kind": kind,
                        "amount": { "type": "integer", "minimum": 1, "maximum": 18_446_744_073_709_551_615_u64 },
                        "per": { "type": ["string", "null"], "default": "minute", "examples": ["minute", "hour", "90m"], "description": "The window of the policy's limit it changes (ignored for concurrency)" },
                    },
                    "example": { "kind": "requests", "amount": 30, "per": "minute" },
                },
                "DecisionRequest": {
                    "type": "object",
                    "required": ["subject"],
                    "additionalProperties": false,
                    "properties": {
                        "subject": r("Subject"),
                        "cost": r("Cost"),
                        "request_id": { "type": ["string", "null"], "minLength": 1, "maxLength": 128, "description": "Idempotency key for check (not with limits): a retried admission (same id, subject and cost) is answered again and spends nothing; a denial is decided again" },
                        "limits": { "type": ["array", "null"], "items": r("CallLimit"), "description": "The call's own limits (seed-style rpm_limit / tpm_limit); not with a request_id" },
                    },
                    "not": {
                        "required": ["request_id", "limits"],
                        "properties": { "request_id": { "type": "string" }, "limits": { "type": "array" } },
                    },
                    "example": { "subject": { "tenant": "acme", "provider": "openai" }, "cost": { "tokens": 1500 }, "limits": [{ "kind": "requests", "amount": 30, "per": "minute" }] },
                },
                "AcquireRequest": {
                    "type": "object",
                    "required": ["subject"],
                    "additionalProperties": false,
                    "properties": {
                        "subject": r("Subject"),
                        "cost": r("Cost"),
                        "max_wait_ms": { "type": "integer", "minimum": 0, "maximum": 18_446_744_073_709_551_615_u64, "default": 0, "description": "How long to hold the request open for admission; cut to the server's max_acquire_wait (30 s by default)" },
                        "permit": { "type": "boolean", "default": false, "description": "Keep the admission as a permit (commit, cancel, renew) instead of releasing it at once" },
                    },
                },
                "Limit": {
                    "type": "object",
                    "required": ["kind", "amount"],
                    "additionalProperties": false,
                    "properties": {
                        "kind": kind,
                        "amount": { "type": "integer", "minimum": 1, "maximum": 18_446_744_073_709_551_615_u64 },
                        "per": { "type": ["string", "null"], "examples": ["minute", "hour", "day", "month", "90m"] },
                        "algorithm": { "enum": ["gcra", "sliding_window", "sliding_log", "fixed_window", null] },
                        "burst": { "type": ["integer", "null"], "minimum": 1, "maximum": 18_446_744_073_709_551_615_u64 },
                        "lease": { "type": ["string", "null"], "examples": ["5m"] },
                    },
                },
                "SubjectLimits": {
                    "type": "object",
                    "required": ["subject", "limits"],
                    "additionalProperties": false,
                    "properties": {
                        "subject": { "allOf": [r("Subject")], "minProperties": 1, "description": "Exact attribute values, such as {\"user\": \"premium_user\"}" },
                        "rule": { "type": ["string", "null"], "description": "The rule; absent: every rule that partitions by all of the subject's attributes" },
                        "limits": { "type": "array", "items": r("Limit"), "minItems": 1, "description": "Replace the rule's limits for this subject" },
                        "set_by": { "type": "string", "readOnly": true },
                    },
                },
                "RemoveSubjectLimits": {
                    "type": "object",
                    "required": ["subject"],
                    "additionalProperties": false,
                    "properties": {
                        "subject": { "allOf": [r("Subject")], "minProperties": 1 },
                        "rule": { "type": ["string", "null"] },
                    },
                },
                "LimitStatus": {
                    "type": "object",
                    "required": ["rule", "limit", "kind", "amount", "capacity", "admitted", "remaining", "reset_after_ms", "retry_after_ms"],
                    "properties": {
                        "rule": { "type": "string", "description": "Empty with [server] expose_rule_names = false" },
                        "limit": { "type": "string" },
                        "kind": kind,
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
                        "outcome": { "enum": ["allowed", "denied", "too_large", "store_full", "unavailable", "unmatched"], "description": "denied: 429 (peek: 200); too_large: 413; unmatched: 403; unavailable: 503 (a rule that fails closed while Redis is down); store_full: 429" },
                        "reason": { "enum": ["requests", "tokens", "concurrency", "quota", "too_large", "store_full", "unavailable", "unmatched"] },
                        "error_code": { "type": "string", "examples": ["E4404", "E4413", "E4403", "E5030"] },
                        "retry_after_ms": { "type": "integer", "description": "When the same call would be admitted. For a concurrency denial: when the soonest lease expires, at the latest (a slot frees earlier when a call ends; /v1/acquire waits for it)" },
                        "waited_ms": { "type": "integer", "description": "/v1/acquire only: how long the request waited" },
                        "denied_by": { "type": "object", "properties": { "rule": { "type": "string" }, "limit": { "type": "string" }, "kind": kind } },
                        "message": { "type": "string" },
                        "limits": { "type": "array", "items": r("LimitStatus") },
                        "shadow": { "type": "object", "description": "Present when rules in shadow mode would have denied the call" },
                        "permit": {
                            "type": "object",
                            "required": ["id", "expires_in_ms"],
                            "properties": { "id": { "type": "string" }, "expires_in_ms": { "type": "integer" } },
                        },
                    },
                    "example": { "allowed": false, "degraded": false, "outcome": "denied", "reason": "requests", "error_code": "E4404", "retry_after_ms": 1200, "limits": [] },
                },
                "Settlement": {
                    "type": "object",
                    "required": ["id"],
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
                    "additionalProperties": false,
                    "properties": { "cost": r("Cost") },
                    "description": "The actual cost; fields left out default to the reservation's",
                },
                "Usage": {
                    "type": "object",
                    "required": ["subject", "limits"],
                    "properties": {
                        "subject": { "type": "object", "additionalProperties": { "type": "string" } },
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
                    "description": "A subject, a rule, or both (a rule alone resets all its buckets)",
                    "anyOf": [
                        { "required": ["subject"], "properties": { "subject": r("Subject") } },
                        { "required": ["rule"], "properties": { "rule": { "type": "string" } } },
                    ],
                    "properties": {
                        "subject": { "anyOf": [r("Subject"), { "type": "null" }] },
                        "rule": { "type": ["string", "null"] },
                    },
                },
                "ResetAnswer": {
                    "type": "object",
                    "required": ["reset", "buckets"],
                    "properties": {
                        "reset": { "type": "boolean", "description": "false when nothing matched" },
                        "buckets": { "type": "integer", "description": "How many buckets were reset" },
                        "message": { "type": "string", "description": "When nothing matched: why, with the attributes each rule needs" },
                        "subject": { "type": ["object", "null"] }, "rule": { "type": ["string", "null"] },
                    },
                },
                "SubjectPage": {
                    "type": "object",
                    "required": ["rule", "subjects"],
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
                "Readiness": {
                    "type": "object",
                    "required": ["status", "store", "config_generation"],
                    "properties": {
                        "status": { "enum": ["ready", "degraded", "unavailable"] },
                        "store": { "type": "string" },
                        "config_generation": { "type": "integer" },
                        "breaker": { "enum": ["closed", "open", "half_open"] },
                        "error": { "type": "string" },
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": { "enum": ["bad_request", "unauthorized", "forbidden", "not_found", "conflict", "too_large", "unavailable"] },
                            "message": { "type": "string" },
                        },
                    } },
                    "example": { "error": { "code": "bad_request", "message": "cost.tokens: invalid type: string \"x\", expected a whole number from 0 to 18446744073709551615" } },
                },
            },
        },
        "security": [{ "bearer": [] }],
        "paths": {
            "/v1/check": { "post": decision_op("Decide and spend the cost if allowed", "DecisionRequest", decision_example.clone(), true) },
            "/v1/peek": { "post": decision_op("Decide without spending", "DecisionRequest", decision_example.clone(), false) },
            "/v1/reserve": { "post": decision_op("Reserve the estimate and a concurrency slot; the answer holds a permit id", "DecisionRequest", decision_example, true) },
            "/v1/acquire": { "post": acquire },
            "/v1/admin/subject-limits": {
                "get": admin_op(
                    "The subject limits set at run time, and where they are kept (redis: for the fleet; memory: this process, until it stops)",
                    None,
                    json!({ "description": "kept_in and settings", "content": { "application/json": { "schema": { "type": "object", "required": ["kept_in", "settings"], "properties": { "kept_in": { "enum": ["redis", "memory"] }, "settings": { "type": "array", "items": r("SubjectLimits") } } } } } }),
                ),
                "put": admin_op(
                    "Set one subject's limits (admin token), replacing its earlier ones; laid over the file's policy, so they survive reloads; audited in the log",
                    Some(("SubjectLimits", json!({ "subject": { "user": "premium_user" }, "limits": [{ "kind": "requests", "amount": 100, "per": "minute", "burst": 30 }] }))),
                    json!({ "description": "The rules it went to, whether it replaced a setting, where it is kept", "content": { "application/json": { "schema": { "type": "object" } } } }),
                ),
                "delete": admin_op(
                    "Remove one subject's limits set at run time (admin token)",
                    Some(("RemoveSubjectLimits", json!({ "subject": { "user": "premium_user" } }))),
                    json!({ "description": "Removed", "content": { "application/json": { "schema": { "type": "object" } } } }),
                ),
            },
            "/v1/admin/subjects": { "get": {
                "summary": "The subjects of a rule with buckets in use, with their usage, a page at a time (admin token)",
                "parameters": [
                    { "name": "rule", "in": "query", "required": true, "schema": { "type": "string" }, "example": "default-agent" },
                    { "name": "cursor", "in": "query", "schema": { "type": "string" }, "description": "The next of the previous page" },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 }, "example": 100 },
                ],
                "responses": {
                    "200": answer("A page", "SubjectPage"),
                    "400": error(BAD_REQUEST),
                    "401": error(UNAUTHORIZED),
                    "403": error("Not the admin token"),
                    "404": error("No such rule, or subjects are not tracked"),
                },
            } },
            "/v1/permits/{id}/commit": { "post": permit_op("Settle against the actual cost (refund or charge the difference)", Some(("Commit", json!({ "cost": { "tokens": 1320 } })))) },
            "/v1/permits/{id}/cancel": { "post": permit_op("Refund the whole reservation", None) },
            "/v1/permits/{id}/renew": { "post": permit_op("Extend the permit's leases and expiry", None) },
            "/v1/usage": { "get": {
                "summary": "Used, capacity, available and reset of every applicable limit; query parameters are the subject's attributes",
                "parameters": [{ "name": "attributes", "in": "query", "style": "form", "explode": true, "schema": r("Subject"), "example": { "tenant": "acme", "provider": "openai" } }],
                "responses": {
                    "200": answer("Usage", "Usage"),
                    "400": error(BAD_REQUEST),
                    "401": error(UNAUTHORIZED),
                    "403": error("The token may not act for this tenant"),
                    "503": error("The store could not answer"),
                },
            } },
            "/v1/reset": { "post": {
                "summary": "Forget buckets (admin token): a subject's, a subject's in one rule, or a whole rule's",
                "requestBody": json_body("Reset", json!({ "subject": { "tenant": "acme" }, "rule": "per-tenant" })),
                "responses": {
                    "200": answer("How many buckets were reset; reset false (with a message) when nothing matched", "ResetAnswer"),
                    "400": error(BAD_REQUEST),
                    "401": error(UNAUTHORIZED),
                    "403": error("Not the admin token"),
                    "404": error("No such rule"),
                    "413": error(BODY_TOO_LARGE),
                    "503": error("The store could not reset"),
                },
            } },
            "/v1/forward-auth": {
                "get": forward_auth, "post": forward_auth, "put": forward_auth, "patch": forward_auth,
                "delete": forward_auth, "head": forward_auth, "options": forward_auth, "trace": forward_auth,
            },
            "/metrics": { "get": { "summary": "Prometheus metrics", "security": [], "responses": { "200": { "description": "Prometheus text format", "content": { "text/plain": { "schema": { "type": "string" } } } } } } },
            "/healthz": { "get": { "summary": "Liveness", "security": [], "responses": { "200": { "description": "Alive", "content": { "application/json": { "schema": { "type": "object", "required": ["status"], "properties": { "status": { "const": "ok" } } } } } } } } },
            "/readyz": { "get": {
                "summary": "Readiness: the service can decide",
                "description": "status is ready, degraded (Redis down or the breaker not closed: the rules' failure modes decide) or unavailable. Degraded answers 200 unless [server] ready_when_degraded = false.",
                "security": [],
                "responses": {
                    "200": { "description": "Ready, or degraded", "content": { "application/json": { "schema": r("Readiness") } } },
                    "503": { "description": "The store cannot decide (or degraded with ready_when_degraded = false)", "content": { "application/json": { "schema": r("Readiness") } } },
                },
            } },
            "/openapi.json": { "get": { "summary": "This document", "security": [], "responses": { "200": { "description": "OpenAPI 3.1", "content": { "application/json": { "schema": { "type": "object" } } } } } } },
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
