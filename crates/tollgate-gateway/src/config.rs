//! The gateway's configuration: `[[upstreams]]` and `[gateway]` in the service's TOML file.
//!
//! The rest of the file (rules, `[server]`, `[redis]`, ...) belongs to the service; this module
//! reads only its own two tables and ignores the others. Every error names the file, the line
//! and the field, as the rest of the configuration does:
//!
//! ```text
//! tollgate.toml:14:7: upstreams[1].kind: "azure" is not openai or anthropic
//! ```
//!
//! Secrets (an upstream's key, a managed client's key, the key-hash secret) are read from
//! environment variables named in the file, are never written anywhere, and print as `***`.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tollgate::{Location, PolicyError};
use toml::Spanned;

/// A configuration error: the same type as the rest of the service's configuration.
pub type ConfigError = PolicyError;

/// Which API an upstream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// OpenAI's API (and the many servers compatible with it).
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
}

impl ProviderKind {
    /// `openai` or `anthropic`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
        }
    }

    /// Parses `openai` or `anthropic`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "openai" => Some(ProviderKind::OpenAi),
            "anthropic" => Some(ProviderKind::Anthropic),
            _ => None,
        }
    }
}

/// A secret read from the environment. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How input tokens are counted for an upstream's models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerChoice {
    /// By model family: `o200k_base` or `cl100k_base` for OpenAI models tiktoken knows,
    /// characters per token for everything else (Anthropic, open models).
    Auto,
    /// Always `o200k_base`.
    O200kBase,
    /// Always `cl100k_base`.
    Cl100kBase,
    /// Always the configured characters-per-token ratio.
    Chars,
}

/// One model provider endpoint the gateway relays to.
#[derive(Clone, Debug, PartialEq)]
pub struct Upstream {
    /// Its name: the `provider` attribute of the calls routed to it.
    pub name: String,
    /// The API it speaks.
    pub kind: ProviderKind,
    /// The base URL as the provider's SDK takes it (`https://api.openai.com/v1`,
    /// `https://api.anthropic.com`), without a trailing slash.
    pub url: String,
    /// Managed keys: the upstream's own key (read from `key_env`).
    pub key: Option<Secret>,
    /// Model names routed here: exact names or globs (`gpt-4o*`).
    pub models: Vec<String>,
    /// Whether models no upstream names are routed here (one default per kind).
    pub default: bool,
    /// A PEM file of extra root certificates (a private CA) for an HTTPS upstream.
    pub ca_file: Option<PathBuf>,
    /// How input tokens are counted.
    pub tokenizer: TokenizerChoice,
    /// How long connecting may take (default 10 s).
    pub connect_timeout: Duration,
    /// How long the upstream may take to answer a call's headers (default 10 minutes).
    pub timeout: Duration,
    /// How long a streamed answer may stay silent (default 5 minutes).
    pub idle_timeout: Duration,
}

impl Upstream {
    /// An upstream of `kind` at `url` with every setting at its default: named after its
    /// kind, the default route of its kind, no key of its own.
    pub fn new(kind: ProviderKind, url: &str) -> Self {
        Upstream {
            name: kind.as_str().to_owned(),
            kind,
            url: url.trim_end_matches('/').to_owned(),
            key: None,
            models: Vec::new(),
            default: true,
            ca_file: None,
            tokenizer: TokenizerChoice::Auto,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Whose key authenticates a call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyMode {
    /// Clients send their own provider key; it is forwarded, and the caller is identified by
    /// a keyed hash of it (the tenant), never by the key itself.
    #[default]
    Passthrough,
    /// Clients send tollgate keys that map to a tenant and attributes; the upstream's key
    /// comes from the configuration and a client's key never reaches the upstream.
    Managed,
}

/// A managed client key.
#[derive(Clone, Debug, PartialEq)]
pub struct ManagedKey {
    /// A name for logs.
    pub name: String,
    /// The key the client presents (in the provider's own auth header).
    pub key: Secret,
    /// The tenant it spends for.
    pub tenant: String,
    /// Its tier, if any.
    pub tier: Option<String>,
    /// Any other attributes (`priority`, `team`, ...).
    pub attributes: BTreeMap<String, String>,
    /// How long its calls may wait for capacity instead of being refused (default: the
    /// gateway's `max_wait`).
    pub max_wait: Option<Duration>,
}

/// What a call that the upstream refused or failed costs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailedCost {
    /// Nothing: the reservation is cancelled.
    #[default]
    Refund,
    /// One request and no tokens.
    Request,
}

/// How calls are estimated before they are made.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EstimateConfig {
    /// The output reservation of a call that sets no output cap (default 4096).
    pub default_output_tokens: u64,
    /// The default output reservation is clamped to this fraction of the smallest token
    /// limit that applies to the call (default 0.25), so that a call without a cap is not
    /// refused as too large.
    pub output_fraction: f64,
    /// Characters per token for models without a public tokenizer (default 3.5).
    pub chars_per_token: f64,
    /// Tokens added per message for those models (the chat format's overhead; default 3).
    pub message_overhead: u64,
}

impl Default for EstimateConfig {
    fn default() -> Self {
        EstimateConfig {
            default_output_tokens: 4096,
            output_fraction: 0.25,
            chars_per_token: 3.5,
            message_overhead: 3,
        }
    }
}

/// How the upstreams' own rate-limit headers slow the gateway down (see `learned.rs`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LearnedConfig {
    /// On by default.
    pub enabled: bool,
    /// The share of an upstream's reported limit that the gateway's fleet spends at most
    /// (default 0.9).
    pub headroom: f64,
}

impl Default for LearnedConfig {
    fn default() -> Self {
        LearnedConfig {
            enabled: true,
            headroom: 0.9,
        }
    }
}

/// The gateway's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayConfig {
    /// The upstreams, in order.
    pub upstreams: Vec<Upstream>,
    /// Passthrough (default) or managed keys.
    pub key_mode: KeyMode,
    /// Managed client keys.
    pub clients: Vec<ManagedKey>,
    /// The secret of the keyed hash that names passthrough callers. Instances that share a
    /// store must share it; without one a fixed built-in key is used (provider keys carry
    /// enough entropy that the hash still cannot be reversed).
    pub key_hash_secret: Option<Secret>,
    /// Subject attribute → request header it is read from (default `agent` ← `x-agent-id`).
    pub attributes: BTreeMap<String, String>,
    /// How long a call may wait for capacity before it is refused (default 0: refuse at once).
    pub max_wait: Duration,
    /// The largest request body accepted (default 8 MiB).
    pub max_body_bytes: usize,
    /// What a failed call costs.
    pub failed_requests: FailedCost,
    /// Estimation.
    pub estimate: EstimateConfig,
    /// Learned upstream limits.
    pub learned: LearnedConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            upstreams: Vec::new(),
            key_mode: KeyMode::Passthrough,
            clients: Vec::new(),
            key_hash_secret: None,
            attributes: [("agent".to_owned(), "x-agent-id".to_owned())]
                .into_iter()
                .collect(),
            max_wait: Duration::ZERO,
            max_body_bytes: 8 * 1024 * 1024,
            failed_requests: FailedCost::Refund,
            estimate: EstimateConfig::default(),
            learned: LearnedConfig::default(),
        }
    }
}

impl GatewayConfig {
    /// Whether any upstream is configured (the gateway serves provider paths only then).
    pub fn enabled(&self) -> bool {
        !self.upstreams.is_empty()
    }

    /// Adds an upstream given on the command line (`KIND=URL`): it replaces a configured
    /// upstream of the same name.
    ///
    /// # Errors
    /// A message naming what is wrong with the argument.
    pub fn add_upstream_arg(&mut self, arg: &str) -> Result<(), String> {
        let up = parse_upstream_arg(arg)?;
        match self.upstreams.iter_mut().find(|u| u.name == up.name) {
            Some(existing) => {
                existing.url = up.url;
            }
            None => {
                let default = !self
                    .upstreams
                    .iter()
                    .any(|u| u.kind == up.kind && u.default);
                self.upstreams.push(Upstream { default, ..up });
            }
        }
        Ok(())
    }

    /// Reads `[[upstreams]]` and `[gateway]` from the service's TOML file; `file` names it
    /// in errors. Other tables are left to the service.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, line and field.
    pub fn from_toml(text: &str, file: &str) -> Result<GatewayConfig, ConfigError> {
        let source = Source { text, file };
        let raw: RawRoot = toml::from_str(text).map_err(|e| ConfigError {
            location: e.span().map(|s| source.locate(s.start)),
            rule: None,
            field: "gateway".into(),
            message: e.message().trim().to_owned(),
        })?;
        let mut c = GatewayConfig::default();
        if let Some(g) = raw.gateway {
            c.apply_gateway(g.into_inner(), &source)?;
        }
        let mut explicit = Vec::new();
        for (i, u) in raw.upstreams.into_iter().enumerate() {
            let span = u.span();
            let u = u.into_inner();
            explicit.push(u.default.is_some());
            let up = upstream(u, i, span, &source)?;
            if c.upstreams.iter().any(|o| o.name == up.name) {
                return Err(at(
                    &source,
                    None,
                    &format!("upstreams[{i}].name"),
                    format!("{:?} names another upstream too", up.name),
                ));
            }
            c.upstreams.push(up);
        }
        c.settle_defaults(&explicit, &source)?;
        if c.key_mode == KeyMode::Managed {
            for (i, u) in c.upstreams.iter().enumerate() {
                if u.key.is_none() {
                    return Err(at(
                        &source,
                        None,
                        &format!("upstreams[{i}].key_env"),
                        "managed keys need each upstream's key (key_env)".into(),
                    ));
                }
            }
        }
        Ok(c)
    }

    /// One default per kind: the one marked `default = true`, else the first upstream of its
    /// kind that names no models, else none (unknown models are then refused).
    fn settle_defaults(
        &mut self,
        explicit: &[bool],
        source: &Source<'_>,
    ) -> Result<(), ConfigError> {
        for kind in [ProviderKind::OpenAi, ProviderKind::Anthropic] {
            let any_marked = (0..self.upstreams.len()).any(|i| {
                self.upstreams[i].kind == kind && explicit[i] && self.upstreams[i].default
            });
            if !any_marked {
                if let Some(u) = self
                    .upstreams
                    .iter_mut()
                    .enumerate()
                    .find(|(i, u)| u.kind == kind && u.models.is_empty() && !explicit[*i])
                {
                    u.1.default = true;
                }
            }
            let marked: Vec<usize> = (0..self.upstreams.len())
                .filter(|&i| self.upstreams[i].kind == kind && self.upstreams[i].default)
                .collect();
            if marked.len() > 1 {
                return Err(at(
                    source,
                    None,
                    &format!("upstreams[{}].default", marked[1]),
                    format!("only one {} upstream may be the default", kind.as_str()),
                ));
            }
        }
        Ok(())
    }

    fn apply_gateway(&mut self, g: RawGateway, source: &Source<'_>) -> Result<(), ConfigError> {
        if let Some(k) = &g.keys {
            self.key_mode = match k.get_ref().as_str() {
                "passthrough" => KeyMode::Passthrough,
                "managed" => KeyMode::Managed,
                other => {
                    return Err(at(
                        source,
                        Some(k.span()),
                        "gateway.keys",
                        format!("{other:?} is not passthrough or managed"),
                    ))
                }
            };
        }
        if let Some(e) = &g.key_hash_secret_env {
            let v = from_env(source, e, "gateway.key_hash_secret_env")?;
            if v.len() < 16 {
                return Err(at(
                    source,
                    Some(e.span()),
                    "gateway.key_hash_secret_env",
                    "the secret needs at least 16 bytes".into(),
                ));
            }
            self.key_hash_secret = Some(Secret(v));
        }
        if let Some(a) = &g.attributes {
            self.attributes.clear();
            for (attr, header) in a.get_ref() {
                let field = format!("gateway.attributes.{attr}");
                valid_attribute(attr).map_err(|m| at(source, Some(header.span()), &field, m))?;
                let h = header.get_ref().to_ascii_lowercase();
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    return Err(at(
                        source,
                        Some(header.span()),
                        &field,
                        format!("{:?} is not a valid HTTP header name", header.get_ref()),
                    ));
                }
                self.attributes.insert(attr.clone(), h);
            }
        }
        if let Some(w) = &g.max_wait {
            self.max_wait = duration(source, w, "gateway.max_wait", true)?;
        }
        if let Some(v) = &g.max_body_bytes {
            if !(1024..=256 * 1024 * 1024).contains(v.get_ref()) {
                return Err(at(
                    source,
                    Some(v.span()),
                    "gateway.max_body_bytes",
                    "must be between 1024 and 268435456".into(),
                ));
            }
            self.max_body_bytes = usize::try_from(*v.get_ref()).unwrap_or(usize::MAX);
        }
        if let Some(f) = &g.failed_requests {
            self.failed_requests = match f.get_ref().as_str() {
                "refund" => FailedCost::Refund,
                "request" => FailedCost::Request,
                other => {
                    return Err(at(
                        source,
                        Some(f.span()),
                        "gateway.failed_requests",
                        format!("{other:?} is not refund or request"),
                    ))
                }
            };
        }
        if let Some(v) = &g.default_output_tokens {
            if *v.get_ref() == 0 {
                return Err(at(
                    source,
                    Some(v.span()),
                    "gateway.default_output_tokens",
                    "must be at least 1".into(),
                ));
            }
            self.estimate.default_output_tokens = *v.get_ref();
        }
        if let Some(v) = &g.output_fraction {
            let f = *v.get_ref();
            if !(f > 0.0 && f <= 1.0) {
                return Err(at(
                    source,
                    Some(v.span()),
                    "gateway.output_fraction",
                    "must be more than 0 and at most 1".into(),
                ));
            }
            self.estimate.output_fraction = f;
        }
        if let Some(v) = &g.chars_per_token {
            let f = *v.get_ref();
            if !(0.5..=100.0).contains(&f) {
                return Err(at(
                    source,
                    Some(v.span()),
                    "gateway.chars_per_token",
                    "must be between 0.5 and 100".into(),
                ));
            }
            self.estimate.chars_per_token = f;
        }
        if let Some(v) = &g.message_overhead {
            if *v.get_ref() > 1000 {
                return Err(at(
                    source,
                    Some(v.span()),
                    "gateway.message_overhead",
                    "must be at most 1000".into(),
                ));
            }
            self.estimate.message_overhead = *v.get_ref();
        }
        if let Some(v) = &g.learned_limits {
            self.learned.enabled = *v.get_ref();
        }
        if let Some(v) = &g.learned_headroom {
            let f = *v.get_ref();
            if !(f > 0.0 && f <= 1.0) {
                return Err(at(
                    source,
                    Some(v.span()),
                    "gateway.learned_headroom",
                    "must be more than 0 and at most 1".into(),
                ));
            }
            self.learned.headroom = f;
        }
        for (i, c) in g.clients.into_iter().enumerate() {
            let span = c.span();
            let c = c.into_inner();
            let field = |f: &str| format!("gateway.clients[{i}].{f}");
            let key = match (&c.key, &c.key_env) {
                (Some(_), Some(e)) => {
                    return Err(at(
                        source,
                        Some(e.span()),
                        &field("key_env"),
                        "give either key or key_env, not both".into(),
                    ))
                }
                (Some(k), None) => (k.get_ref().clone(), k.span(), field("key")),
                (None, Some(e)) => (
                    from_env(source, e, &field("key_env"))?,
                    e.span(),
                    field("key_env"),
                ),
                (None, None) => {
                    return Err(at(
                        source,
                        Some(span),
                        &field("key"),
                        "is required (key or key_env)".into(),
                    ))
                }
            };
            if key.0.len() < 16 || key.0.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(at(
                    source,
                    Some(key.1),
                    &key.2,
                    "keys have at least 16 bytes and no spaces".into(),
                ));
            }
            if self.clients.iter().any(|o| o.key.0 == key.0) {
                return Err(at(
                    source,
                    Some(key.1),
                    &key.2,
                    "duplicates another key".into(),
                ));
            }
            let tenant = c.tenant.ok_or_else(|| {
                at(
                    source,
                    Some(span.clone()),
                    &field("tenant"),
                    "is required".into(),
                )
            })?;
            value(source, &tenant, &field("tenant"))?;
            if let Some(t) = &c.tier {
                value(source, t, &field("tier"))?;
            }
            let mut attributes = BTreeMap::new();
            if let Some(a) = &c.attributes {
                for (k, v) in a.get_ref() {
                    let f = field(&format!("attributes.{k}"));
                    valid_attribute(k).map_err(|m| at(source, Some(v.span()), &f, m))?;
                    value(source, v, &f)?;
                    attributes.insert(k.clone(), v.get_ref().clone());
                }
            }
            let max_wait = match &c.max_wait {
                Some(w) => Some(duration(source, w, &field("max_wait"), true)?),
                None => None,
            };
            self.clients.push(ManagedKey {
                name: c
                    .name
                    .map_or_else(|| format!("client-{i}"), Spanned::into_inner),
                key: Secret(key.0),
                tenant: tenant.into_inner(),
                tier: c.tier.map(Spanned::into_inner),
                attributes,
                max_wait,
            });
        }
        Ok(())
    }
}

/// Parses `--upstream KIND=URL` (or `NAME:KIND=URL`).
fn parse_upstream_arg(arg: &str) -> Result<Upstream, String> {
    let (who, url) = arg.split_once('=').ok_or_else(|| {
        format!("--upstream: {arg:?} is not KIND=URL (such as openai=https://api.openai.com/v1)")
    })?;
    let (name, kind) = match who.split_once(':') {
        Some((n, k)) => (n.trim(), k.trim()),
        None => (who.trim(), who.trim()),
    };
    let kind = ProviderKind::parse(kind)
        .ok_or_else(|| format!("--upstream: {kind:?} is not openai or anthropic"))?;
    valid_attribute(name).map_err(|m| format!("--upstream: {m}"))?;
    check_url(url.trim()).map_err(|m| format!("--upstream: {m}"))?;
    Ok(Upstream {
        name: name.to_owned(),
        ..Upstream::new(kind, url.trim())
    })
}

fn check_url(u: &str) -> Result<(), String> {
    let parsed: http::Uri = u.parse().map_err(|e| format!("{u:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
        return Err(format!("{u:?} is not an http:// or https:// URL"));
    }
    if parsed.query().is_some() || u.contains('#') {
        return Err(format!("{u:?}: a base URL has no query or fragment"));
    }
    Ok(())
}

fn upstream(
    u: RawUpstream,
    i: usize,
    span: Range<usize>,
    source: &Source<'_>,
) -> Result<Upstream, ConfigError> {
    let field = |f: &str| format!("upstreams[{i}].{f}");
    let kind_v = u.kind.as_ref().ok_or_else(|| {
        at(
            source,
            Some(span.clone()),
            &field("kind"),
            "is required (openai or anthropic)".into(),
        )
    })?;
    let kind = ProviderKind::parse(kind_v.get_ref()).ok_or_else(|| {
        at(
            source,
            Some(kind_v.span()),
            &field("kind"),
            format!("{:?} is not openai or anthropic", kind_v.get_ref()),
        )
    })?;
    let url = u.url.as_ref().ok_or_else(|| {
        at(
            source,
            Some(span.clone()),
            &field("url"),
            "is required".into(),
        )
    })?;
    check_url(url.get_ref().trim()).map_err(|m| at(source, Some(url.span()), &field("url"), m))?;
    let mut up = Upstream::new(kind, url.get_ref().trim());
    up.default = false;
    if let Some(n) = &u.name {
        valid_attribute(n.get_ref()).map_err(|m| at(source, Some(n.span()), &field("name"), m))?;
        up.name = n.get_ref().clone();
    }
    if let Some(e) = &u.key_env {
        let v = from_env(source, e, &field("key_env"))?;
        if v.is_empty() || v.chars().any(|c| c.is_control()) {
            return Err(at(
                source,
                Some(e.span()),
                &field("key_env"),
                "the key is empty or holds control characters".into(),
            ));
        }
        up.key = Some(Secret(v));
    }
    if let Some(m) = &u.models {
        for (j, pat) in m.get_ref().iter().enumerate() {
            let p = pat.get_ref();
            if p.is_empty() || globset::Glob::new(p).is_err() {
                return Err(at(
                    source,
                    Some(pat.span()),
                    &field(&format!("models[{j}]")),
                    format!("{p:?} is not a model name or glob"),
                ));
            }
            up.models.push(p.clone());
        }
    }
    if let Some(d) = &u.default {
        up.default = *d.get_ref();
    }
    if let Some(c) = &u.ca_file {
        let p = PathBuf::from(c.get_ref());
        if let Err(e) = std::fs::metadata(&p) {
            return Err(at(
                source,
                Some(c.span()),
                &field("ca_file"),
                format!("cannot read {}: {e}", p.display()),
            ));
        }
        up.ca_file = Some(p);
    }
    if let Some(t) = &u.tokenizer {
        up.tokenizer = match t.get_ref().as_str() {
            "auto" => TokenizerChoice::Auto,
            "o200k_base" => TokenizerChoice::O200kBase,
            "cl100k_base" => TokenizerChoice::Cl100kBase,
            "chars" => TokenizerChoice::Chars,
            other => {
                return Err(at(
                    source,
                    Some(t.span()),
                    &field("tokenizer"),
                    format!("{other:?} is not auto, o200k_base, cl100k_base or chars"),
                ))
            }
        };
    }
    if let Some(v) = &u.connect_timeout {
        up.connect_timeout = duration(source, v, &field("connect_timeout"), false)?;
    }
    if let Some(v) = &u.timeout {
        up.timeout = duration(source, v, &field("timeout"), false)?;
    }
    if let Some(v) = &u.idle_timeout {
        up.idle_timeout = duration(source, v, &field("idle_timeout"), false)?;
    }
    Ok(up)
}

#[derive(Debug, Default, Deserialize)]
struct RawRoot {
    #[serde(default)]
    upstreams: Vec<Spanned<RawUpstream>>,
    #[serde(default)]
    gateway: Option<Spanned<RawGateway>>,
}

type S<T> = Option<Spanned<T>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: S<String>,
    kind: S<String>,
    url: S<String>,
    key_env: S<String>,
    models: S<Vec<Spanned<String>>>,
    default: S<bool>,
    ca_file: S<String>,
    tokenizer: S<String>,
    connect_timeout: S<String>,
    timeout: S<String>,
    idle_timeout: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    keys: S<String>,
    key_hash_secret_env: S<String>,
    attributes: S<BTreeMap<String, Spanned<String>>>,
    max_wait: S<String>,
    max_body_bytes: S<u64>,
    failed_requests: S<String>,
    default_output_tokens: S<u64>,
    output_fraction: S<f64>,
    chars_per_token: S<f64>,
    message_overhead: S<u64>,
    learned_limits: S<bool>,
    learned_headroom: S<f64>,
    #[serde(default)]
    clients: Vec<Spanned<RawClient>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    name: S<String>,
    key: S<String>,
    key_env: S<String>,
    tenant: S<String>,
    tier: S<String>,
    attributes: S<BTreeMap<String, Spanned<String>>>,
    max_wait: S<String>,
}

/// The source text and its name, to place errors.
struct Source<'a> {
    text: &'a str,
    file: &'a str,
}

impl Source<'_> {
    fn locate(&self, offset: usize) -> Location {
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line = before.matches('\n').count().saturating_add(1);
        let line_start = before.rfind('\n').map_or(0, |i| i.saturating_add(1));
        Location {
            file: self.file.to_owned(),
            line,
            column: before
                .get(line_start..)
                .unwrap_or_default()
                .chars()
                .count()
                .saturating_add(1),
        }
    }
}

fn at(
    source: &Source<'_>,
    span: Option<Range<usize>>,
    field: &str,
    message: String,
) -> ConfigError {
    ConfigError {
        location: span.map(|s| source.locate(s.start)),
        rule: None,
        field: field.to_owned(),
        message,
    }
}

fn from_env(source: &Source<'_>, v: &Spanned<String>, field: &str) -> Result<String, ConfigError> {
    std::env::var(v.get_ref()).map_err(|_| {
        at(
            source,
            Some(v.span()),
            field,
            format!("environment variable {:?} is not set", v.get_ref()),
        )
    })
}

fn duration(
    source: &Source<'_>,
    v: &Spanned<String>,
    field: &str,
    zero_ok: bool,
) -> Result<Duration, ConfigError> {
    tollgate_core::parse_duration(v.get_ref())
        .filter(|d| zero_ok || !d.is_zero())
        .ok_or_else(|| {
            at(
                source,
                Some(v.span()),
                field,
                format!("{:?} is not a duration like 500ms, 30s or 5m", v.get_ref()),
            )
        })
}

fn value(source: &Source<'_>, v: &Spanned<String>, field: &str) -> Result<(), ConfigError> {
    let s = v.get_ref();
    if s.is_empty() || s.len() > 256 {
        return Err(at(
            source,
            Some(v.span()),
            field,
            "must have 1 to 256 bytes".into(),
        ));
    }
    Ok(())
}

/// Checks an attribute name: 1 to 64 bytes of letters, digits, `_`, `-` and `.`.
pub(crate) fn valid_attribute(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(format!(
            "{name:?} is not a name of 1 to 64 letters, digits, '_', '-' or '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
http = "127.0.0.1:0"

[gateway]
keys = "managed"
max_wait = "2s"
attributes = { agent = "X-Agent-Id", team = "x-team" }

[[gateway.clients]]
name = "acme"
key = "tg-acme-0123456789abcdef"
tenant = "acme"
tier = "pro"
attributes = { priority = "high" }

[[upstreams]]
name = "openai"
kind = "openai"
url = "https://api.openai.com/v1/"
key_env = "TOLLGATE_GATEWAY_TEST_KEY"
models = ["gpt-4o*", "o3"]
default = true

[[upstreams]]
name = "claude"
kind = "anthropic"
url = "https://api.anthropic.com"
key_env = "TOLLGATE_GATEWAY_TEST_KEY"
"#;

    fn load(src: &str) -> Result<GatewayConfig, ConfigError> {
        std::env::set_var("TOLLGATE_GATEWAY_TEST_KEY", "sk-test-upstream-key");
        GatewayConfig::from_toml(src, "g.toml")
    }

    #[test]
    fn a_good_file_loads() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.key_mode, KeyMode::Managed);
        assert_eq!(c.max_wait, Duration::from_secs(2));
        assert_eq!(c.attributes["agent"], "x-agent-id");
        assert_eq!(c.upstreams[0].url, "https://api.openai.com/v1");
        assert!(c.upstreams[0].default && c.upstreams[1].default);
        assert_eq!(c.clients[0].attributes["priority"], "high");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("sk-test-upstream-key") && !shown.contains("tg-acme"),
            "{shown}"
        );
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = load(&GOOD.replace("kind = \"anthropic\"", "kind = \"azure\"")).unwrap_err();
        assert_eq!(e.field, "upstreams[1].kind");
        assert_eq!(e.location.as_ref().unwrap().line, 27, "{e}");
        assert!(e.to_string().starts_with("g.toml:27:"), "{e}");

        let e = load(&GOOD.replace("max_wait = \"2s\"", "max_wait = \"soon\"")).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.location.unwrap().line),
            ("gateway.max_wait", 7)
        );

        let e = load(&GOOD.replace("tenant = \"acme\"\n", "")).unwrap_err();
        assert_eq!(e.field, "gateway.clients[0].tenant");

        let e = load(&GOOD.replace("url = \"https://api.anthropic.com\"", "url = \"ftp://x\""))
            .unwrap_err();
        assert_eq!(e.field, "upstreams[1].url");

        let without_key = GOOD.rsplit_once("key_env").unwrap().0;
        let e = load(without_key).unwrap_err();
        assert_eq!(e.field, "upstreams[1].key_env", "{e}");

        let e = load(&GOOD.replace("default = true", "default = true\ntimeout = 3")).unwrap_err();
        assert_eq!(e.location.unwrap().line, 24);

        let e = load(&GOOD.replace(
            "[[upstreams]]\nname = \"claude\"\nkind = \"anthropic\"",
            "[[upstreams]]\nname = \"openai\"\nkind = \"openai\"",
        ))
        .unwrap_err();
        assert_eq!(e.field, "upstreams[1].name", "{e}");
    }

    #[test]
    fn command_line_upstreams() {
        let mut c = GatewayConfig::default();
        c.add_upstream_arg("openai=http://127.0.0.1:9/v1").unwrap();
        c.add_upstream_arg("local:openai=http://127.0.0.1:10/v1")
            .unwrap();
        assert_eq!(c.upstreams.len(), 2);
        assert!(c.upstreams[0].default && !c.upstreams[1].default);
        assert!(c
            .add_upstream_arg("azure=http://x")
            .unwrap_err()
            .contains("azure"));
        assert!(c.add_upstream_arg("openai").is_err());
        assert!(c.add_upstream_arg("openai=localhost:9").is_err());
    }

    #[test]
    fn no_tables_means_no_gateway() {
        let c = GatewayConfig::from_toml("[server]\nhttp = \"127.0.0.1:1\"\n", "x.toml").unwrap();
        assert!(!c.enabled());
    }
}
