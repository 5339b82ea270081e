//! The JSON shapes of the HTTP API, their validation, and how decisions are rendered.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tollgate::{Cost, Decision, LimitStatus, Subject};

use crate::config::{truncate, valid_attribute_name, MAX_ATTRIBUTES, MAX_VALUE_BYTES};
use crate::error::ApiError;
use crate::judged::Judged;

/// A whole number of units from JSON: an integer, or a number without a fractional part
/// (`1000.0`, `1e3`), as JSON Schema (and so `/openapi.json`) counts both as integers.
/// Anything else — a fraction, a negative number, more than `u64::MAX`, a string — is refused
/// with a message that the field's path is put before.
///
/// # Errors
/// The deserializer's error saying what was expected.
pub fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct Whole;
    impl serde::de::Visitor<'_> for Whole {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number from 0 to 18446744073709551615")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<u64, E> {
            // 2^64 is the first float above u64::MAX.
            if v.is_finite() && v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v)
            {
                // Whole and in range: the conversion is exact.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Ok(v as u64)
            } else {
                Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
            }
        }
    }
    d.deserialize_any(Whole)
}

/// [`whole`] for an optional field: `null` is the same as leaving it out.
///
/// # Errors
/// As [`whole`].
pub fn whole_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Opt;
    impl<'de> serde::de::Visitor<'de> for Opt {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number, or null")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            whole(d).map(Some)
        }
    }
    d.deserialize_option(Opt)
}

/// Implements `Deserialize` (and `Serialize`) for a struct derived with
/// `#[serde(remote = "Self")]`, taking only a JSON object: serde's derived deserializer also
/// takes an array of the fields in order (`"cost": [1, 500]`), which `/openapi.json` does not
/// describe and which nobody means.
macro_rules! object_only {
    ($t:ty, $what:literal) => {
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Object;
                impl<'de> serde::de::Visitor<'de> for Object {
                    type Value = $t;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_map<M: serde::de::MapAccess<'de>>(
                        self,
                        m: M,
                    ) -> Result<Self::Value, M::Error> {
                        // The inherent function serde's `remote = "Self"` derived.
                        <$t>::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    }
                }
                d.deserialize_map(Object)
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                <$t>::serialize(self, s)
            }
        }
    };
}
pub(crate) use object_only;

/// What one call spends, as sent in requests. `requests` defaults to 1 (in a commit, every
/// field defaults to what was reserved); `tokens` defaults to `input_tokens + output_tokens`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct CostBody {
    /// Requests.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_opt"
    )]
    pub requests: Option<u64>,
    /// Total tokens.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_opt"
    )]
    pub tokens: Option<u64>,
    /// Input (prompt) tokens.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_opt"
    )]
    pub input_tokens: Option<u64>,
    /// Output (completion) tokens.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_opt"
    )]
    pub output_tokens: Option<u64>,
}

object_only!(CostBody, "an object such as {\"tokens\": 500}");

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

/// One limit a call asks for itself: `{"kind": "requests", "amount": 30, "per": "minute"}`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct CallLimitBody {
    /// `requests`, `tokens`, `input_tokens`, `output_tokens` or `concurrency`.
    pub kind: String,
    /// How much per window (for concurrency: calls in flight).
    #[serde(deserialize_with = "whole")]
    pub amount: u64,
    /// The window (default `minute`; ignored for concurrency). It must be the window of a
    /// limit that applies to the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<String>,
}

object_only!(
    CallLimitBody,
    "an object such as {\"kind\": \"requests\", \"amount\": 30}"
);

/// Turns the `limits` of a request into the call's own limits; `loosen` allows limits looser
/// than the policy's (the admin token).
///
/// # Errors
/// 400 naming the field at fault.
pub fn call_limits(
    limits: Option<&[CallLimitBody]>,
    loosen: bool,
) -> Result<tollgate::CallLimits, ApiError> {
    let mut call = tollgate::CallLimits::new().allow_loosening(loosen);
    for (i, l) in limits.unwrap_or_default().iter().enumerate() {
        let kind: tollgate::LimitKind = l
            .kind
            .parse()
            .map_err(|e| ApiError::bad_request(format!("limits[{i}].kind: {e}")))?;
        let window = match &l.per {
            None => tollgate::Window::MINUTE,
            Some(p) => p
                .parse()
                .map_err(|e| ApiError::bad_request(format!("limits[{i}].per: {e}")))?,
        };
        if l.amount == 0 {
            return Err(ApiError::bad_request(format!(
                "limits[{i}].amount: must be at least 1"
            )));
        }
        call = call.limit(kind, l.amount, window);
    }
    Ok(call)
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
    /// The call's own limits: tighter than the policy's (looser only with the admin token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Vec<CallLimitBody>>,
}

/// An attribute name or value as read from a request: borrowed from the body unless it had
/// to be unescaped.
#[derive(Debug)]
pub struct Str<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// A subject's attributes in the order given, borrowed from the body where possible.
#[derive(Debug, Default)]
pub struct Attrs<'a>(pub Vec<(Str<'a>, Str<'a>)>);

impl<'de: 'a, 'a> Deserialize<'de> for Attrs<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Attrs<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of attribute names to string values")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Self::Value, M::Error> {
                let mut v = Vec::with_capacity(m.size_hint().unwrap_or(4).min(MAX_ATTRIBUTES + 1));
                while let Some(entry) = m.next_entry::<Str<'a>, Str<'a>>()? {
                    v.push(entry);
                }
                Ok(Attrs(v))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

impl<'a> Attrs<'a> {
    /// The attributes as name/value pairs.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&*k.0, &*v.0))
    }
}

/// [`DecisionRequest`] borrowed from the body: what the hot path reads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequestRef<'a> {
    /// The subject's attributes.
    #[serde(borrow)]
    pub subject: Attrs<'a>,
    /// The cost (default: one request).
    #[serde(default)]
    pub cost: CostBody,
    /// Makes a check idempotent.
    #[serde(default, borrow)]
    pub request_id: Option<Str<'a>>,
    /// The call's own limits.
    #[serde(default)]
    pub limits: Option<Vec<CallLimitBody>>,
}

/// Parses a decision request without copying its strings. Errors are those of
/// [`parse_json`], naming the field at fault.
///
/// # Errors
/// 400 with the field path and what is wrong.
pub fn parse_decision(body: &[u8]) -> Result<DecisionRequestRef<'_>, ApiError> {
    an_object(body)?;
    match serde_json::from_slice::<DecisionRequestRef<'_>>(body) {
        Ok(r) => Ok(r),
        // The slow parser names the field; it fails the same way.
        Err(fast) => match parse_json::<DecisionRequest>(body) {
            Err(e) => Err(e),
            Ok(_) => Err(ApiError::bad_request(format!("invalid JSON body: {fast}"))),
        },
    }
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

/// Refuses a body that is not a JSON object (serde would take an array of a struct's fields).
fn an_object(body: &[u8]) -> Result<(), ApiError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        _ => Err(ApiError::bad_request("the body must be a JSON object")),
    }
}

/// Parses a JSON body; errors name the field at fault.
///
/// # Errors
/// 400 with the field path and what is wrong.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    an_object(body)?;
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
        // Counted in characters, as JSON Schema's maxLength (and so /openapi.json) counts
        // them; the byte length is bounded too (4 bytes a character at most).
        if value.len() > MAX_VALUE_BYTES && value.chars().count() > MAX_VALUE_BYTES {
            return Err(ApiError::bad_request(format!(
                "{field}.{name}: values have at most {MAX_VALUE_BYTES} characters, this one has {}",
                value.chars().count()
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

/// A value rendered through its `Display`, straight into the output (no `String`).
struct Shown<T>(T);

impl<T: std::fmt::Display> Serialize for Shown<T> {
    fn serialize<Z: serde::Serializer>(&self, z: Z) -> Result<Z::Ok, Z::Error> {
        z.collect_str(&self.0)
    }
}

/// One limit's status. Fields in alphabetical order, as the JSON has always had them.
#[derive(Serialize)]
struct StatusOut<'a> {
    admitted: bool,
    amount: u64,
    capacity: u64,
    kind: &'static str,
    limit: &'static str,
    remaining: u64,
    reset_after_ms: u64,
    retry_after_ms: u64,
    rule: &'static str,
    /// Absent for concurrency: slots are not spent per window.
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<Shown<&'a tollgate::Window>>,
}

impl<'a> StatusOut<'a> {
    fn of(s: &'a LimitStatus) -> Self {
        StatusOut {
            admitted: s.admitted,
            amount: s.amount,
            capacity: s.capacity,
            kind: s.kind.as_str(),
            limit: s.label,
            remaining: s.remaining,
            reset_after_ms: ms(s.reset_after),
            retry_after_ms: ms(s.retry_after),
            rule: s.rule,
            window: (s.kind != tollgate::LimitKind::Concurrency).then_some(Shown(&s.window)),
        }
    }
}

/// The statuses of a decision, serialised as an array without collecting them.
struct Statuses<'a>(&'a [LimitStatus]);

impl Serialize for Statuses<'_> {
    fn serialize<Z: serde::Serializer>(&self, z: Z) -> Result<Z::Ok, Z::Error> {
        z.collect_seq(self.0.iter().map(StatusOut::of))
    }
}

/// The limits a shadow decision would have denied on.
struct ShadowRules<'a>(&'a [LimitStatus]);

impl Serialize for ShadowRules<'_> {
    fn serialize<Z: serde::Serializer>(&self, z: Z) -> Result<Z::Ok, Z::Error> {
        z.collect_seq(self.0.iter().filter(|s| !s.admitted).map(LimitRef::of))
    }
}

#[derive(Serialize)]
struct LimitRef {
    kind: &'static str,
    limit: &'static str,
    rule: &'static str,
}

impl LimitRef {
    fn of(s: &LimitStatus) -> Self {
        LimitRef {
            kind: s.kind.as_str(),
            limit: s.label,
            rule: s.rule,
        }
    }
}

#[derive(Serialize)]
struct ShadowOut<'a> {
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    rules: ShadowRules<'a>,
    would_deny: bool,
}

/// A granted permit, in the answer to `/v1/reserve`.
#[derive(Clone, Debug, Serialize)]
pub struct PermitOut<'a> {
    /// Time to expiry, in milliseconds.
    pub expires_in_ms: u64,
    /// The permit's id.
    pub id: &'a str,
}

/// The JSON of one decision, borrowing from it. Fields in alphabetical order.
#[derive(Serialize)]
struct DecisionOut<'a> {
    allowed: bool,
    degraded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    denied_by: Option<LimitRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'static str>,
    limits: Statuses<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<Shown<&'a Decision>>,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    permit: Option<PermitOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow: Option<ShadowOut<'a>>,
}

impl<'a> DecisionOut<'a> {
    fn of(j: &'a Judged, permit: Option<PermitOut<'a>>) -> Self {
        let d = &j.decision;
        DecisionOut {
            allowed: d.is_allowed(),
            degraded: d.is_degraded(),
            denied_by: d.denied_by().map(LimitRef::of),
            error_code: d.reason().map(|r| r.error_code()),
            limits: Statuses(d.statuses()),
            message: (!d.is_allowed()).then_some(Shown(d)),
            outcome: d.outcome().as_str(),
            permit,
            reason: d.reason().map(|r| r.code()),
            retry_after_ms: d.retry_after().map(ms),
            shadow: j.shadow.as_ref().map(|s| ShadowOut {
                outcome: s.outcome().as_str(),
                retry_after_ms: s.retry_after().map(ms),
                rules: ShadowRules(s.statuses()),
                would_deny: true,
            }),
        }
    }
}

/// The JSON of one decision, with the permit of a granted reservation, as bytes: written
/// straight from the decision, byte for byte what serialising [`decision_json`]'s value
/// gives (the same fields in the same order), without going through serde.
pub fn decision_body(j: &Judged, permit: Option<PermitOut<'_>>) -> Vec<u8> {
    let d = &j.decision;
    let mut w = JsonOut(Vec::with_capacity(192 + 256 * d.statuses().len()));
    w.raw(if d.is_allowed() {
        "{\"allowed\":true"
    } else {
        "{\"allowed\":false"
    });
    // Made without the shared store (its failure modes decided): always present.
    w.raw(if d.is_degraded() {
        ",\"degraded\":true"
    } else {
        ",\"degraded\":false"
    });
    if let Some(by) = d.denied_by() {
        w.raw(",\"denied_by\":");
        w.limit_ref(by);
    }
    if let Some(r) = d.reason() {
        w.raw(",\"error_code\":");
        w.str(r.error_code());
    }
    w.raw(",\"limits\":[");
    for (i, s) in d.statuses().iter().enumerate() {
        if i > 0 {
            w.raw(",");
        }
        w.status(s);
    }
    w.raw("]");
    if !d.is_allowed() {
        w.raw(",\"message\":");
        w.display(d);
    }
    w.raw(",\"outcome\":");
    w.str(d.outcome().as_str());
    if let Some(p) = permit {
        w.raw(",\"permit\":{\"expires_in_ms\":");
        w.u64(p.expires_in_ms);
        w.raw(",\"id\":");
        w.str(p.id);
        w.raw("}");
    }
    if let Some(r) = d.reason() {
        w.raw(",\"reason\":");
        w.str(r.code());
    }
    if let Some(r) = d.retry_after() {
        w.raw(",\"retry_after_ms\":");
        w.u64(ms(r));
    }
    if let Some(shadow) = &j.shadow {
        w.raw(",\"shadow\":{\"outcome\":");
        w.str(shadow.outcome().as_str());
        if let Some(r) = shadow.retry_after() {
            w.raw(",\"retry_after_ms\":");
            w.u64(ms(r));
        }
        w.raw(",\"rules\":[");
        for (i, s) in shadow.statuses().iter().filter(|s| !s.admitted).enumerate() {
            if i > 0 {
                w.raw(",");
            }
            w.limit_ref(s);
        }
        w.raw("],\"would_deny\":true}");
    }
    w.raw("}");
    w.0
}

/// A JSON writer for [`decision_body`]: keys and punctuation are written as given; strings
/// are escaped as `serde_json` escapes them.
struct JsonOut(Vec<u8>);

impl JsonOut {
    fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    fn str(&mut self, s: &str) {
        self.0.push(b'"');
        escape_into(&mut self.0, s);
        self.0.push(b'"');
    }

    /// A value's `Display`, as a JSON string.
    fn display(&mut self, v: impl std::fmt::Display) {
        struct Escaping<'a>(&'a mut Vec<u8>);
        impl std::fmt::Write for Escaping<'_> {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                escape_into(self.0, s);
                Ok(())
            }
        }
        self.0.push(b'"');
        // Writing into a Vec cannot fail.
        let _ = std::fmt::write(&mut Escaping(&mut self.0), format_args!("{v}"));
        self.0.push(b'"');
    }

    fn bool(&mut self, b: bool) {
        self.raw(if b { "true" } else { "false" });
    }

    fn u64(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            // Below 10: the cast cannot truncate.
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.0.extend_from_slice(&digits[i..]);
    }

    fn limit_ref(&mut self, s: &LimitStatus) {
        self.raw("{\"kind\":");
        self.str(s.kind.as_str());
        self.raw(",\"limit\":");
        self.str(s.label);
        self.raw(",\"rule\":");
        self.str(s.rule);
        self.raw("}");
    }

    fn status(&mut self, s: &LimitStatus) {
        self.raw("{\"admitted\":");
        self.bool(s.admitted);
        self.raw(",\"amount\":");
        self.u64(s.amount);
        self.raw(",\"capacity\":");
        self.u64(s.capacity);
        self.raw(",\"kind\":");
        self.str(s.kind.as_str());
        self.raw(",\"limit\":");
        self.str(s.label);
        self.raw(",\"remaining\":");
        self.u64(s.remaining);
        self.raw(",\"reset_after_ms\":");
        self.u64(ms(s.reset_after));
        self.raw(",\"retry_after_ms\":");
        self.u64(ms(s.retry_after));
        self.raw(",\"rule\":");
        self.str(s.rule);
        if s.kind != tollgate::LimitKind::Concurrency {
            self.raw(",\"window\":");
            self.display(s.window);
        }
        self.raw("}");
    }
}

/// Appends `s` escaped for a JSON string, as `serde_json` does: `"`, `\\` and the control
/// characters below U+0020 (`\n`, `\t` and the like by name, the others as `\u00XX`).
fn escape_into(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let needs = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    // Most strings need nothing: one pass without an early exit, which the compiler
    // vectorises, then a copy.
    if !bytes.iter().fold(false, |any, &b| any | needs(b)) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !needs(b) {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// The message of a refusal without rule names (`[server] expose_rule_names = false`): what
/// limits and how, as the rule-named message says, with the limit's anonymous name.
pub fn anonymous_message(d: &Decision) -> String {
    let name = |s: &LimitStatus| {
        let names = tollgate::headers::policy_names(d, tollgate::headers::PolicyNames::Hidden);
        d.statuses()
            .iter()
            .position(|o| std::ptr::eq(o, s))
            .and_then(|i| names.into_iter().nth(i))
            .unwrap_or_default()
    };
    match (d.outcome(), d.denied_by()) {
        (tollgate::Outcome::Denied, Some(s)) if s.kind == tollgate::LimitKind::Concurrency => {
            format!(
                "denied by limit {:?} (at most {} in flight): no slot is free; retry after {:?} at the latest",
                name(s),
                s.amount,
                d.retry_after().unwrap_or_default()
            )
        }
        (tollgate::Outcome::Denied, Some(s)) => format!(
            "denied by limit {:?} ({} {} per {}): retry after {:?}",
            name(s),
            s.amount,
            s.kind,
            s.window,
            d.retry_after().unwrap_or_default()
        ),
        (tollgate::Outcome::TooLarge, Some(s)) => format!(
            "cost exceeds what limit {:?} ({} {}) can ever admit",
            name(s),
            s.capacity,
            s.kind
        ),
        // The other messages name no rule.
        _ => d.to_string(),
    }
}

/// [`decision_body`] without rule names (`[server] expose_rule_names = false`): each limit's
/// `rule` is empty and its `limit` is the name `RateLimit-Policy` gives it; the message names
/// no rule.
pub fn anonymous_body(j: &Judged, permit: Option<PermitOut<'_>>) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&decision_body(j, permit)).unwrap_or(Value::Null);
    let d = &j.decision;
    let names = tollgate::headers::policy_names(d, tollgate::headers::PolicyNames::Hidden);
    let anonymise = |limit: &mut Value, name: &str| {
        limit["rule"] = json!("");
        limit["limit"] = json!(name);
    };
    if let Some(limits) = v["limits"].as_array_mut() {
        for (l, n) in limits.iter_mut().zip(&names) {
            anonymise(l, n);
        }
    }
    if let Some(by) = d.denied_by() {
        if let Some(i) = d.statuses().iter().position(|o| std::ptr::eq(o, by)) {
            anonymise(&mut v["denied_by"], &names[i]);
        }
    }
    if v.get("message").is_some() {
        v["message"] = json!(anonymous_message(d));
    }
    if let Some(shadow) = &j.shadow {
        let shadow_names =
            tollgate::headers::policy_names(shadow, tollgate::headers::PolicyNames::Hidden);
        let denied = shadow
            .statuses()
            .iter()
            .zip(&shadow_names)
            .filter(|(s, _)| !s.admitted)
            .map(|(_, n)| n);
        if let Some(rules) = v["shadow"]["rules"].as_array_mut() {
            for (r, n) in rules.iter_mut().zip(denied) {
                anonymise(r, n);
            }
        }
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The JSON of one decision.
pub fn decision_json(j: &Judged) -> Value {
    serde_json::to_value(DecisionOut::of(j, None)).unwrap_or(Value::Null)
}

/// The JSON of one limit's usage (without `window` for concurrency: slots are not spent per
/// window).
pub fn usage_json(u: &tollgate::LimitUsage) -> Value {
    let mut v = json!({
        "rule": u.rule,
        "limit": u.label,
        "kind": u.kind.as_str(),
        "amount": u.amount,
        "used": u.used,
        "capacity": u.capacity,
        "available": u.available,
        "reset_after_ms": ms(u.reset_after),
    });
    if u.kind != tollgate::LimitKind::Concurrency {
        v["window"] = json!(u.window.to_string());
    }
    v
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
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut all: Vec<String> = (0u32..0x80)
            .filter_map(char::from_u32)
            .map(|c| format!("a{c}b"))
            .collect();
        all.extend(["", "plain", "é\u{2028}😀\"\\", "\u{7f}\u{1f}\u{0}"].map(String::from));
        for s in all {
            let mut w = JsonOut(Vec::new());
            w.str(&s);
            assert_eq!(w.0, serde_json::to_vec(&s).unwrap(), "{s:?}");
        }
    }

    #[tokio::test]
    async fn decision_bodies_are_what_serde_writes() {
        use tollgate::{LimitKind, LimitSpec, Limiter, ManualClock, MemoryStore, Policy, Rule};
        use tollgate::{Timestamp, Window};
        let policy = Policy::builder()
            .rule(
                Rule::builder("odd \"rule\"\n")
                    .per("tenant")
                    .limit(LimitSpec::new(LimitKind::Requests, 2, Window::MINUTE))
                    .limit(LimitSpec::new(LimitKind::Tokens, 1000, Window::HOUR)),
            )
            .rule(
                Rule::builder("slots")
                    .per("tenant")
                    .limit(LimitSpec::concurrency(1)),
            )
            .build()
            .unwrap();
        let clock = ManualClock::new(Timestamp::from_secs(1_700_000_000));
        let store = MemoryStore::builder().clock(clock.clone()).build();
        let l = Limiter::with_store(policy, store);
        let who = Subject::new().tenant("a");
        let mut decisions = Vec::new();
        for tokens in [10, 10, 10, 2_000] {
            decisions.push(l.check(&who, Cost::tokens(tokens)).await.unwrap());
            clock.advance(Duration::from_millis(1_234));
        }
        let held = l.reserve(&who, Cost::ONE).await.unwrap();
        decisions.push(held.decision().clone());
        decisions.push(l.reserve(&who, Cost::ONE).await.unwrap().decision().clone());
        decisions.push(l.check(&Subject::new().user("x"), Cost::ONE).await.unwrap());
        assert!(decisions.iter().any(|d| d.is_allowed()));
        assert!(decisions.iter().any(|d| !d.is_allowed()));
        let denied = decisions.iter().find(|d| !d.is_allowed()).unwrap().clone();
        let mut judged: Vec<Judged> = decisions
            .iter()
            .map(|d| Judged {
                decision: d.clone(),
                shadow: None,
            })
            .collect();
        judged.push(Judged {
            decision: decisions[0].clone(),
            shadow: Some(denied),
        });
        for j in &judged {
            for permit in [
                None,
                Some(PermitOut {
                    expires_in_ms: 30_000,
                    id: "p_0123",
                }),
            ] {
                let reference = serde_json::to_vec(&DecisionOut::of(j, permit.clone())).unwrap();
                let body = decision_body(j, permit);
                assert_eq!(
                    String::from_utf8(body).unwrap(),
                    String::from_utf8(reference).unwrap()
                );
            }
        }
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
