//! The service's configuration file (TOML).
//!
//! One file holds the policy, in the same format as tollgate's policy files (`[[rules]]` with
//! `match`, `limits`, `overrides` and `tiers`, plus `shadow = true` per rule), and the
//! service's own sections: `[server]`, `[redis]`, `[memory]`, `[auth]`, `[forward_auth]` and
//! `[grpc]`. Every error names the file, the line and the field:
//!
//! ```text
//! tollgate.toml:4:8: server.http: "localhost" is not an address like 127.0.0.1:8080
//! tollgate.toml:12:53: rule "per-tenant": limits[0].burst: must be at least 1 unit
//! ```
//!
//! See `examples/tollgate.toml` at the repository root for every field.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tollgate::policy::PolicyFile;
use tollgate::{default_policy, HeaderStyle, Location, Policy, PolicyError};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// The most attributes one subject may have.
pub const MAX_ATTRIBUTES: usize = 32;
/// The longest attribute value in a request, in characters (a token in the file: in bytes).
pub const MAX_VALUE_BYTES: usize = 256;
/// The longest attribute name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// A configuration that cannot be used, naming the file, line, rule and field: the same error
/// as a policy's (the rules are policy, the other sections are read alongside them).
pub type ConfigError = PolicyError;

/// An error about `field`, placed at `span` of `source`.
fn at(source: &Source<'_>, span: Option<Range<usize>>, field: &str, msg: String) -> ConfigError {
    ConfigError {
        location: span.map(|s| source.locate(s.start)),
        rule: None,
        field: field.to_owned(),
        message: msg,
    }
}

/// How the service renders rate-limit headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Headers {
    /// No rate-limit headers (a denial still carries `Retry-After`).
    None,
    /// One of tollgate's styles.
    Style(HeaderStyle),
}

/// `[server]`: listeners and request handling.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The HTTP listener (default `127.0.0.1:8080`).
    pub http: SocketAddr,
    /// The gRPC listener (default `127.0.0.1:8081`); `None` when set to `"off"`.
    pub grpc: Option<SocketAddr>,
    /// The largest request body accepted (default 64 KiB); larger bodies get 413.
    pub max_body_bytes: usize,
    /// Which rate-limit headers decisions carry (default both styles).
    pub headers: Headers,
    /// Global shadow mode: evaluate and count denials, but admit every call.
    pub shadow: bool,
    /// Proxies whose `X-Forwarded-For` is believed, as addresses or CIDR blocks.
    pub trusted_proxies: Vec<Cidr>,
    /// How long a granted permit that is never settled is kept (default 10 minutes).
    pub permit_ttl: Duration,
    /// The most permits held at once (default 100,000); beyond it reservations get 503.
    pub max_permits: usize,
    /// How long shutdown waits for in-flight requests (default 10 s).
    pub shutdown_grace: Duration,
    /// Whether `/readyz` answers 200 while the rules' failure modes decide because Redis is
    /// down (default true: the service still decides; see the README). `false` answers 503.
    pub ready_when_degraded: bool,
    /// How long a client may take to send a request, head and body, from its first byte; a
    /// new connection must send its first byte (gRPC: the HTTP/2 preface) within the same
    /// time of connecting (default 10 s). Slower clients are disconnected.
    pub request_read_timeout: Duration,
    /// How long a connection with no request in flight stays open (default 120 s, longer
    /// than the idle timeouts of common client pools, so that clients close first).
    pub idle_timeout: Duration,
    /// The most connections open at once, HTTP and gRPC together (default 10,000). The
    /// service lowers it to what its file descriptor limit allows.
    pub max_connections: usize,
    /// Whether a file that defines no rules runs without rules. Without this setting such a
    /// file runs the embedded default policy at startup and is refused on reload (an emptied
    /// or truncated file must not replace the running rules).
    pub allow_empty_policy: bool,
    /// The longest `/v1/acquire` holds a request open (default 30 s); a longer `max_wait_ms`
    /// is cut to it.
    pub max_acquire_wait: Duration,
    /// The most `/v1/acquire` requests waiting at once (default 10,000); beyond it they get 503.
    pub max_waiters: usize,
    /// The most subjects per rule that `/v1/admin/subjects` can list (default 100,000): the
    /// service keeps an index of the partitions it decides for, bounded to this. 0 turns it
    /// off (a hash lookup per rule per decision saved).
    pub max_tracked_subjects: usize,
    /// Whether answers name the rules and limits (default true). `false` keeps the policy to
    /// the operator: `RateLimit-Policy` names become `kind[.window]`, and JSON bodies carry
    /// those names with an empty `rule` and a message without rule names.
    pub expose_rule_names: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc: Some(SocketAddr::from(([127, 0, 0, 1], 8081))),
            max_body_bytes: 64 * 1024,
            headers: Headers::Style(HeaderStyle::Both),
            shadow: false,
            trusted_proxies: Vec::new(),
            permit_ttl: Duration::from_secs(600),
            max_permits: 100_000,
            shutdown_grace: Duration::from_secs(10),
            ready_when_degraded: true,
            request_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: 10_000,
            allow_empty_policy: false,
            max_acquire_wait: Duration::from_secs(30),
            max_waiters: 10_000,
            max_tracked_subjects: 100_000,
            expose_rule_names: true,
        }
    }
}

/// Where the buckets live.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// In this process.
    Memory {
        /// The most buckets kept (default 10 million).
        max_buckets: Option<usize>,
    },
    /// One Redis server.
    Redis {
        /// `redis://` or `rediss://` URL (credentials allowed; redacted in logs).
        url: String,
        /// Settings.
        options: RedisOptions,
    },
    /// A Redis Cluster, through its seed nodes.
    RedisCluster {
        /// Seed node URLs.
        nodes: Vec<String>,
        /// Settings.
        options: RedisOptions,
    },
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreConfig::Memory { max_buckets } => f
                .debug_struct("Memory")
                .field("max_buckets", max_buckets)
                .finish(),
            StoreConfig::Redis { url, options } => f
                .debug_struct("Redis")
                .field("url", &tollgate::store::redis::redact(url))
                .field("options", options)
                .finish(),
            StoreConfig::RedisCluster { nodes, options } => f
                .debug_struct("RedisCluster")
                .field(
                    "nodes",
                    &nodes
                        .iter()
                        .map(|n| tollgate::store::redis::redact(n))
                        .collect::<Vec<_>>(),
                )
                .field("options", options)
                .finish(),
        }
    }
}

/// Settings of the Redis store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisOptions {
    /// The first segment of every key (default `tollgate`).
    pub prefix: String,
    /// How long connecting may take (default 1 s).
    pub connect_timeout: Duration,
    /// How long one command may take (default 1 s; behind the fallback, at least its 5 s
    /// bound on a decision).
    pub response_timeout: Duration,
    /// Put tollgate's fallback store in front of Redis (default on): a circuit breaker that
    /// judges Redis by its own silence and errors, and each rule's `failure_mode` (local,
    /// open, closed) while Redis fails; the service then starts even while Redis is down.
    pub fallback: bool,
    /// The fallback's deadline (default 25 ms): the least silence of Redis that counts as a
    /// failure (see `FallbackConfig::deadline`); a slow answer from a Redis that keeps
    /// answering is waited for.
    pub deadline: Duration,
    /// The longest a decision waits on Redis, whatever the reason (default 5 s; at least
    /// `deadline`; see `FallbackConfig::max_wait`): a call still unanswered then, from a
    /// Redis that is not failing (the host is too busy to get the answer through), follows
    /// the rule's failure mode and counts as overloaded.
    pub max_wait: Duration,
    /// How many instances share the limits (a `local` rule enforces its share; default 1).
    pub instances: u32,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            prefix: "tollgate".to_owned(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            fallback: true,
            deadline: Duration::from_millis(25),
            max_wait: Duration::from_secs(5),
            instances: 1,
        }
    }
}

/// A secret token. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// One API client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// A name for logs.
    pub name: String,
    /// Its bearer token.
    pub token: Token,
    /// The only tenant whose quota it may spend, if bound.
    pub tenant: Option<String>,
}

/// `[auth]`: who may call the service. Without any token the service is open (every caller
/// may decide and reset); give tokens before listening beyond loopback.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// The admin token: may reset buckets, and act for any tenant.
    pub admin_token: Option<Token>,
    /// API clients.
    pub clients: Vec<Client>,
}

impl AuthConfig {
    /// Whether any token is configured (and so every call needs one).
    pub fn enabled(&self) -> bool {
        self.admin_token.is_some() || !self.clients.is_empty()
    }
}

/// `[forward_auth]`: how the forward-auth endpoint builds a subject from request headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardAuthConfig {
    /// Subject attribute → request header it is read from.
    pub attributes: BTreeMap<String, String>,
    /// A header holding the estimated token cost of the call.
    pub tokens_header: Option<String>,
    /// An attribute that receives the client's IP address (from `X-Forwarded-For` through
    /// trusted proxies, else the peer address).
    pub ip_attribute: Option<String>,
    /// The header the proxy puts tollgate's client token in (default `x-tollgate-token`).
    /// `authorization` reads `Authorization: Bearer`; otherwise that header is left alone,
    /// as it carries the client's own key for the upstream (an OpenAI key, say).
    pub token_header: String,
    /// The status of every refusal (default: none, each refusal has its own: 429 denied, 413
    /// too large, 403 unmatched, 503 unavailable). nginx's `auth_request` passes only 2xx, 401
    /// and 403 through, so behind nginx this is 403 and nginx turns it back into the right
    /// status by the `x-tollgate-outcome` header (see `examples/nginx/`).
    pub deny_status: Option<u16>,
}

impl Default for ForwardAuthConfig {
    fn default() -> Self {
        ForwardAuthConfig {
            attributes: [
                ("tenant", "x-tenant-id"),
                ("agent", "x-agent-id"),
                ("user", "x-user-id"),
                ("provider", "x-provider"),
                ("model", "x-model"),
            ]
            .into_iter()
            .map(|(a, h)| (a.to_owned(), h.to_owned()))
            .collect(),
            tokens_header: Some("x-estimated-tokens".to_owned()),
            ip_attribute: None,
            token_header: "x-tollgate-token".to_owned(),
            deny_status: None,
        }
    }
}

/// What Envoy's `hits_addend` counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HitsAddend {
    /// Tokens (one request of `hits_addend` tokens): the AI gateways' use.
    Tokens,
    /// Requests (the default, as envoyproxy/ratelimit counts hits).
    #[default]
    Requests,
}

/// `[grpc]`: how Envoy rate limit requests map to subjects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrpcConfig {
    /// The attribute that receives the request's `domain`; the domain is ignored if unset.
    pub domain_attribute: Option<String>,
    /// Descriptor entry key → subject attribute. Keys not listed keep their own name.
    pub descriptors: BTreeMap<String, String>,
    /// What `hits_addend` counts (default requests, as envoyproxy/ratelimit counts hits;
    /// `tokens` for AI gateways that send the token count). Zero means one.
    pub hits_addend: HitsAddend,
}

/// A network: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: u128,
    prefix: u8,
}

fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_ipv6_mapped().to_bits(),
            None => v6.to_bits(),
        },
    }
}

impl Cidr {
    /// Whether `ip` is inside the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(self.prefix))
        };
        ip_bits(ip) & mask == self.addr & mask
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    /// `10.0.0.0/8`, `::1`, `192.168.1.7`, `fd00::/8`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not an address or a CIDR block like 10.0.0.0/8");
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let ip: IpAddr = ip.trim().parse().map_err(|_| bad())?;
        let v4 = matches!(ip, IpAddr::V4(_));
        let max = if v4 { 32 } else { 128 };
        let len: u8 = match len {
            Some(l) => l.trim().parse().map_err(|_| bad())?,
            None => max,
        };
        if len > max {
            return Err(bad());
        }
        Ok(Cidr {
            addr: ip_bits(ip),
            prefix: if v4 { len + 96 } else { len },
        })
    }
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from, if any.
    pub path: Option<PathBuf>,
    /// The rules (when the file defines none: the embedded default policy, or no rules with
    /// `[server] allow_empty_policy`).
    pub policy: Policy,
    /// Whether the file defines at least one rule.
    pub defines_rules: bool,
    /// Whether the file holds nothing (only whitespace and comments), as a file being
    /// rewritten may for a moment.
    pub blank: bool,
    /// Rules in shadow mode: their denials are counted, and the call admitted.
    pub shadow_rules: BTreeSet<String>,
    /// Rules with `detailed_metric = true`: the Envoy service counts their descriptors by
    /// every value (`tollgate_grpc_descriptor_decisions_total`).
    pub detailed_rules: BTreeSet<String>,
    /// Rule → the rules it replaces (`replaces = [...]`): in one Envoy request, a descriptor
    /// whose every rule is replaced by a rule of another descriptor is not limited.
    pub replaces: BTreeMap<String, Vec<String>>,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[redis]` or `[memory]`.
    pub store: StoreConfig,
    /// `[auth]`.
    pub auth: AuthConfig,
    /// `[forward_auth]`.
    pub forward_auth: ForwardAuthConfig,
    /// `[grpc]`.
    pub grpc: GrpcConfig,
    /// Whether the file gave rules (`false`: [`policy`](Self::policy) is the built-in
    /// default, which `TOKEN_BUCKET_SIZE` / `TOKEN_REFILL_RATE` may replace).
    pub policy_given: bool,
    /// Whether the file gave `[redis]` or `[memory]` (`false`: the memory store, which
    /// `REDIS_URL` may replace).
    pub store_given: bool,
    /// `[[upstreams]]` and `[gateway]`: the LLM gateway (off without upstreams).
    pub gateway: tollgate_gateway::config::GatewayConfig,
}

impl Default for Config {
    /// The embedded default: tollgate's default policy, the memory store, open access, HTTP on
    /// 127.0.0.1:8080 and gRPC on 127.0.0.1:8081.
    fn default() -> Self {
        Config {
            path: None,
            policy: default_policy(),
            defines_rules: false,
            blank: false,
            shadow_rules: BTreeSet::new(),
            detailed_rules: BTreeSet::new(),
            replaces: BTreeMap::new(),
            server: ServerConfig::default(),
            store: StoreConfig::Memory { max_buckets: None },
            auth: AuthConfig::default(),
            forward_auth: ForwardAuthConfig::default(),
            grpc: GrpcConfig::default(),
            policy_given: false,
            store_given: false,
            gateway: Default::default(),
        }
    }
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: Option<Spanned<RawServer>>,
    #[serde(default)]
    redis: Option<Spanned<RawRedis>>,
    #[serde(default)]
    memory: Option<Spanned<RawMemory>>,
    #[serde(default)]
    auth: Option<Spanned<RawAuth>>,
    #[serde(default)]
    forward_auth: Option<Spanned<RawForwardAuth>>,
    #[serde(default)]
    grpc: Option<Spanned<RawGrpc>>,
}

type S<T> = Option<Spanned<T>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    http: S<String>,
    grpc: S<String>,
    max_body_bytes: S<u64>,
    headers: S<String>,
    shadow: S<bool>,
    trusted_proxies: S<Vec<Spanned<String>>>,
    permit_ttl: S<String>,
    max_permits: S<u64>,
    shutdown_grace: S<String>,
    ready_when_degraded: S<bool>,
    request_read_timeout: S<String>,
    idle_timeout: S<String>,
    max_connections: S<u64>,
    allow_empty_policy: S<bool>,
    max_acquire_wait: S<String>,
    max_waiters: S<u64>,
    max_tracked_subjects: S<u64>,
    expose_rule_names: S<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    url: S<String>,
    cluster: S<Vec<Spanned<String>>>,
    prefix: S<String>,
    connect_timeout: S<String>,
    response_timeout: S<String>,
    fallback: S<bool>,
    deadline: S<String>,
    max_wait: S<String>,
    instances: S<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMemory {
    max_buckets: S<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    admin_token: S<String>,
    admin_token_env: S<String>,
    #[serde(default)]
    clients: Vec<Spanned<RawClient>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    name: S<String>,
    token: S<String>,
    token_env: S<String>,
    tenant: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForwardAuth {
    attributes: S<BTreeMap<String, Spanned<String>>>,
    tokens_header: S<String>,
    ip_attribute: S<String>,
    token_header: S<String>,
    deny_status: S<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrpc {
    domain_attribute: S<String>,
    descriptors: S<BTreeMap<String, Spanned<String>>>,
    hits_addend: S<String>,
}

/// The shortest token accepted.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Checks an attribute name: 1 to 64 bytes of letters, digits, `_`, `-` and `.`.
pub fn valid_attribute_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "attribute names have 1 to {MAX_NAME_BYTES} bytes, {:?} has {}",
            truncate(name, 32),
            name.len()
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(format!(
            "attribute name {:?} may only hold letters, digits, '_', '-' and '.'",
            truncate(name, 32)
        ));
    }
    Ok(())
}

/// The first `n` characters of `s`, for messages.
pub fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn valid_header_name(name: &str) -> Result<String, String> {
    let lower = name.to_ascii_lowercase();
    axum::http::HeaderName::from_bytes(lower.as_bytes())
        .map(|h| h.as_str().to_owned())
        .map_err(|_| format!("{name:?} is not a valid HTTP header name"))
}

fn duration(
    source: &Source<'_>,
    v: &Spanned<String>,
    field: &str,
) -> Result<Duration, ConfigError> {
    tollgate_core::parse_duration(v.get_ref())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            at(
                source,
                Some(v.span()),
                field,
                format!("{:?} is not a duration like 500ms, 30s or 5m", v.get_ref()),
            )
        })
}

/// A listen address as servers are usually given one: `127.0.0.1:8080`, `[::1]:8080`,
/// `localhost:8080` (the IPv4 loopback), or `:8080` (every IPv4 interface, as Go programs
/// read it).
pub fn parse_listen_addr(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    if let Ok(a) = s.parse() {
        return Some(a);
    }
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    match host {
        "" | "0.0.0.0" | "*" => Some(SocketAddr::from(([0, 0, 0, 0], port))),
        h if h.eq_ignore_ascii_case("localhost") => Some(SocketAddr::from(([127, 0, 0, 1], port))),
        _ => None,
    }
}

/// The message for an address [`parse_listen_addr`] does not take.
pub fn listen_addr_error(s: &str) -> String {
    format!("{s:?} is not an address like 127.0.0.1:8080, [::1]:8080, localhost:8080 or :8080")
}

fn socket_addr(
    source: &Source<'_>,
    v: &Spanned<String>,
    field: &str,
) -> Result<SocketAddr, ConfigError> {
    parse_listen_addr(v.get_ref()).ok_or_else(|| {
        at(
            source,
            Some(v.span()),
            field,
            listen_addr_error(v.get_ref()),
        )
    })
}

fn redis_url(source: &Source<'_>, v: &Spanned<String>, field: &str) -> Result<String, ConfigError> {
    let u = v.get_ref().trim();
    if u.starts_with("redis://") || u.starts_with("rediss://") {
        Ok(u.to_owned())
    } else {
        Err(at(
            source,
            Some(v.span()),
            field,
            format!(
                "{:?} is not a redis:// or rediss:// URL",
                tollgate::store::redis::redact(u)
            ),
        ))
    }
}

/// Parses a header style: `openai`, `ietf`, `both` or `none`.
pub fn parse_headers(s: &str) -> Option<Headers> {
    match s {
        "openai" => Some(Headers::Style(HeaderStyle::OpenAi)),
        "ietf" => Some(Headers::Style(HeaderStyle::Ietf)),
        "both" => Some(Headers::Style(HeaderStyle::Both)),
        "none" => Some(Headers::None),
        _ => None,
    }
}

/// Reads an environment variable named by the config (for secrets kept out of the file).
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

fn token(
    source: &Source<'_>,
    plain: &S<String>,
    env: &S<String>,
    field: &str,
    whole: Range<usize>,
) -> Result<Option<Token>, ConfigError> {
    let (value, span, name) = match (plain, env) {
        (Some(_), Some(e)) => {
            return Err(at(
                source,
                Some(e.span()),
                &format!("{field}_env"),
                format!("give either {field} or {field}_env, not both"),
            ))
        }
        (Some(t), None) => (t.get_ref().clone(), t.span(), field.to_owned()),
        (None, Some(e)) => {
            let name = format!("{field}_env");
            (from_env(source, e, &name)?, e.span(), name)
        }
        (None, None) => {
            let _ = whole;
            return Ok(None);
        }
    };
    if value.len() < MIN_TOKEN_BYTES || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(at(
            source,
            Some(span),
            &name,
            format!("tokens have at least {MIN_TOKEN_BYTES} bytes and no spaces"),
        ));
    }
    Ok(Some(Token(value)))
}

/// The settings of a rule that are the service's, not the policy's: read and taken out of the
/// rule before the policy reads it.
#[derive(Default)]
struct ServiceFlags {
    /// `shadow = true`.
    shadow: bool,
    /// `detailed_metric = true`.
    detailed_metric: bool,
    /// `replaces = ["rule", ...]`, with where it is.
    replaces: Option<(Vec<String>, Range<usize>)>,
}

impl ServiceFlags {
    fn is_empty(&self) -> bool {
        !self.shadow && !self.detailed_metric && self.replaces.is_none()
    }
}

/// Takes `shadow`, `detailed_metric` and `replaces` out of one rule's table.
fn take_service_flags(
    t: &mut DeTable<'_>,
    source: &Source<'_>,
) -> Result<ServiceFlags, ConfigError> {
    let mut flags = ServiceFlags::default();
    for (field, slot) in [
        ("shadow", &mut flags.shadow),
        ("detailed_metric", &mut flags.detailed_metric),
    ] {
        if let Some(flag) = t.remove(field) {
            *slot = flag.get_ref().as_bool().ok_or_else(|| {
                at(
                    source,
                    Some(flag.span()),
                    field,
                    format!("must be true or false, not a {}", flag.get_ref().type_str()),
                )
            })?;
        }
    }
    if let Some(list) = t.remove("replaces") {
        let bad = || {
            at(
                source,
                Some(list.span()),
                "replaces",
                "must be a list of rule names".into(),
            )
        };
        let DeValue::Array(items) = list.get_ref() else {
            return Err(bad());
        };
        let names = items
            .iter()
            .map(|v| v.get_ref().as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad)?;
        flags.replaces = Some((names, list.span()));
    }
    Ok(flags)
}

/// The attributes tollgate itself names; any other is a custom label.
const KNOWN_ATTRIBUTES: [&str; 6] = ["tenant", "agent", "user", "provider", "model", "tier"];

impl Config {
    /// What `tollgate config check` can tell is probably wrong without being an error: rules
    /// and overrides that no subject the service sees can match.
    ///
    /// - A rule (or override) that selects an attribute that is neither one of tollgate's
    ///   (`tenant`, `agent`, `user`, `provider`, `model`, `tier`) nor produced by
    ///   `[forward_auth]` or `[grpc]`: only a client that sends that exact name matches it, so
    ///   it is often a typo.
    ///   A rule that selects `[grpc] domain_attribute` is for Envoy descriptors, whose keys
    ///   are any names: it is not warned about.
    /// - An override that the rule's own selectors exclude (see
    ///   [`tollgate::Rule::unreachable_overrides`]).
    pub fn warnings(&self) -> Vec<String> {
        let mut produced: BTreeSet<&str> = KNOWN_ATTRIBUTES.into_iter().collect();
        produced.extend(self.forward_auth.attributes.keys().map(String::as_str));
        produced.extend(self.forward_auth.ip_attribute.as_deref());
        produced.extend(self.grpc.descriptors.values().map(String::as_str));
        produced.extend(self.grpc.domain_attribute.as_deref());
        let mut out = Vec::new();
        for rule in self.policy.rules() {
            // A rule on the Envoy domain is for descriptors, whose keys are any names.
            let envoy = self
                .grpc
                .domain_attribute
                .as_deref()
                .is_some_and(|d| rule.selectors().iter().any(|(a, _)| a.name() == d));
            let mut named: Vec<(String, String)> = rule
                .selectors()
                .iter()
                .map(|(a, _)| ("match".to_owned(), a.to_string()))
                .collect();
            named.extend(
                rule.absent()
                    .iter()
                    .map(|a| ("absent".to_owned(), a.to_string())),
            );
            for (sel, set) in rule.overrides() {
                named.extend(
                    sel.iter()
                        .map(|(a, _)| (format!("override {}", set.name()), a.to_string())),
                );
            }
            for (place, attr) in named {
                if !envoy && !produced.contains(attr.as_str()) {
                    out.push(format!(
                        "rule {:?} ({place}) names attribute {attr:?}, which is not one of tollgate's \
                         ({}) nor produced by [forward_auth] or [grpc]: only callers that send \
                         {attr:?} themselves can match it (a typo?)",
                        rule.name(),
                        KNOWN_ATTRIBUTES.join(", ")
                    ));
                }
            }
            for (set, why) in rule.unreachable_overrides() {
                out.push(format!(
                    "rule {:?}: override {set} can never apply: {why}",
                    rule.name()
                ));
            }
        }
        out
    }

    /// Reads and validates a configuration file.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, line and field (or the file, if it cannot be read).
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            location: None,
            rule: None,
            field: "file".to_owned(),
            message: format!("cannot read {name}: {e}"),
        })?;
        let mut c = Config::from_toml(&text, &name)?;
        c.path = Some(path.to_owned());
        Ok(c)
    }

    /// Reads and validates a configuration from TOML source; `file` names it in errors.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, line and field.
    pub fn from_toml(text: &str, file: &str) -> Result<Config, ConfigError> {
        let source = Source { text, file };
        let toml_err = |e: toml::de::Error, field: &str| ConfigError {
            location: e.span().map(|s| source.locate(s.start)),
            rule: None,
            field: field.to_owned(),
            message: e.message().trim().to_owned(),
        };
        let doc = DeTable::parse(text).map_err(|e| toml_err(e, "toml"))?;
        let doc_span = doc.span();
        let mut root = doc.into_inner();
        let blank = root.is_empty();

        // The policy part: `rules`, without the service's own `shadow` flags.
        let mut shadow_rules = BTreeSet::new();
        let mut detailed_rules = BTreeSet::new();
        let mut replaces = BTreeMap::new();
        let mut replaces_at = Vec::new();
        let unmatched = match root.remove("unmatched") {
            None => tollgate::Unmatched::Allow,
            Some(u) => u
                .get_ref()
                .as_str()
                .ok_or_else(|| "must be \"allow\" or \"deny\"".to_owned())
                .and_then(str::parse)
                .map_err(|m| at(&source, Some(u.span()), "unmatched", m))?,
        };
        let rules = root.remove("rules");
        let rules_given = rules.is_some();
        let policy = match rules {
            None => None,
            Some(mut rules) => {
                let rules_span = rules.span();
                if let DeValue::Array(items) = rules.get_mut() {
                    for (i, item) in items.iter_mut().enumerate() {
                        let item_span = item.span();
                        let DeValue::Table(t) = item.get_mut() else {
                            continue;
                        };
                        let name = t
                            .get("name")
                            .and_then(|n| n.get_ref().as_str())
                            .map(str::to_owned);
                        let flags = take_service_flags(t, &source).map_err(|e| ConfigError {
                            rule: name.clone(),
                            ..e
                        })?;
                        if flags.is_empty() {
                            continue;
                        }
                        let Some(name) = name else {
                            return Err(at(
                                &source,
                                Some(item_span),
                                &format!("rules[{i}].name"),
                                "is required".into(),
                            ));
                        };
                        if flags.shadow {
                            shadow_rules.insert(name.clone());
                        }
                        if flags.detailed_metric {
                            detailed_rules.insert(name.clone());
                        }
                        if let Some((names, span)) = flags.replaces {
                            replaces_at.push((name.clone(), span));
                            replaces.insert(name, names);
                        }
                    }
                }
                let mut only = DeTable::new();
                only.insert(Spanned::new(rules_span.clone(), "rules".into()), rules);
                let de = toml::de::Deserializer::from(Spanned::new(doc_span.clone(), only));
                let pf = PolicyFile::deserialize(de).map_err(|e| toml_err(e, "rules"))?;
                Some(pf.into_policy(text, file)?).filter(|p| !p.rules().is_empty())
            }
        };

        // The gateway reads its own tables.
        root.remove("upstreams");
        root.remove("gateway");
        let gateway = tollgate_gateway::config::GatewayConfig::from_toml(text, file)?;
        let de = toml::de::Deserializer::from(Spanned::new(doc_span, root));
        let raw = RawConfig::deserialize(de).map_err(|e| toml_err(e, "toml"))?;
        let mut config = Config {
            defines_rules: policy.is_some(),
            blank,
            policy_given: rules_given,
            shadow_rules,
            detailed_rules,
            replaces,
            gateway,
            ..Config::default()
        };
        config.apply(raw, &source)?;
        config.policy = match policy {
            Some(p) => p,
            None if config.server.allow_empty_policy => Policy::new(Vec::new())?,
            None => default_policy(),
        }
        .with_unmatched(unmatched);
        for (rule, span) in replaces_at {
            let names = config
                .replaces
                .get(&rule)
                .map(Vec::as_slice)
                .unwrap_or_default();
            for (j, other) in names.iter().enumerate() {
                let why = if *other == rule {
                    Some("a rule cannot replace itself")
                } else if config.policy.rule(other).is_none() {
                    Some("names no rule")
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(ConfigError {
                        rule: Some(rule.clone()),
                        ..at(
                            &source,
                            Some(span.clone()),
                            &format!("replaces[{j}]"),
                            format!("{other:?}: {why}"),
                        )
                    });
                }
            }
        }
        for r in &config.shadow_rules {
            // Every name came from a rule that built; this cannot fail, but stay honest.
            if config.policy.rule(r).is_none() {
                return Err(ConfigError {
                    location: None,
                    rule: Some(r.clone()),
                    field: "shadow".into(),
                    message: "names no rule".into(),
                });
            }
        }
        Ok(config)
    }

    fn apply(&mut self, raw: RawConfig, source: &Source<'_>) -> Result<(), ConfigError> {
        if let Some(s) = raw.server {
            let s = s.into_inner();
            let srv = &mut self.server;
            if let Some(v) = &s.http {
                srv.http = socket_addr(source, v, "server.http")?;
            }
            if let Some(v) = &s.grpc {
                srv.grpc = if v.get_ref() == "off" {
                    None
                } else {
                    Some(socket_addr(source, v, "server.grpc")?)
                };
            }
            if let Some(v) = &s.max_body_bytes {
                if !(64..=16 * 1024 * 1024).contains(v.get_ref()) {
                    return Err(at(
                        source,
                        Some(v.span()),
                        "server.max_body_bytes",
                        "must be between 64 and 16777216".into(),
                    ));
                }
                srv.max_body_bytes = usize::try_from(*v.get_ref()).unwrap_or(usize::MAX);
            }
            if let Some(v) = &s.headers {
                srv.headers = parse_headers(v.get_ref()).ok_or_else(|| {
                    at(
                        source,
                        Some(v.span()),
                        "server.headers",
                        format!("{:?} is not one of openai, ietf, both, none", v.get_ref()),
                    )
                })?;
            }
            if let Some(v) = &s.shadow {
                srv.shadow = *v.get_ref();
            }
            if let Some(v) = &s.expose_rule_names {
                srv.expose_rule_names = *v.get_ref();
            }
            if let Some(v) = &s.trusted_proxies {
                srv.trusted_proxies = v
                    .get_ref()
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        p.get_ref().parse::<Cidr>().map_err(|m| {
                            at(
                                source,
                                Some(p.span()),
                                &format!("server.trusted_proxies[{i}]"),
                                m,
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?;
            }
            if let Some(v) = &s.permit_ttl {
                srv.permit_ttl = duration(source, v, "server.permit_ttl")?;
            }
            if let Some(v) = &s.max_permits {
                if *v.get_ref() == 0 {
                    return Err(at(
                        source,
                        Some(v.span()),
                        "server.max_permits",
                        "must be at least 1".into(),
                    ));
                }
                srv.max_permits = usize::try_from(*v.get_ref()).unwrap_or(usize::MAX);
            }
            if let Some(v) = &s.shutdown_grace {
                srv.shutdown_grace = duration(source, v, "server.shutdown_grace")?;
            }
            if let Some(v) = &s.ready_when_degraded {
                srv.ready_when_degraded = *v.get_ref();
            }
            if let Some(v) = &s.request_read_timeout {
                srv.request_read_timeout = duration(source, v, "server.request_read_timeout")?;
            }
            if let Some(v) = &s.idle_timeout {
                srv.idle_timeout = duration(source, v, "server.idle_timeout")?;
            }
            if let Some(v) = &s.max_connections {
                if *v.get_ref() == 0 {
                    return Err(at(
                        source,
                        Some(v.span()),
                        "server.max_connections",
                        "must be at least 1".into(),
                    ));
                }
                srv.max_connections = usize::try_from(*v.get_ref()).unwrap_or(usize::MAX);
            }
            if let Some(v) = &s.allow_empty_policy {
                srv.allow_empty_policy = *v.get_ref();
            }
            if let Some(v) = &s.max_acquire_wait {
                srv.max_acquire_wait = duration(source, v, "server.max_acquire_wait")?;
            }
            if let Some(v) = &s.max_waiters {
                if *v.get_ref() == 0 {
                    return Err(at(
                        source,
                        Some(v.span()),
                        "server.max_waiters",
                        "must be at least 1".into(),
                    ));
                }
                srv.max_waiters = usize::try_from(*v.get_ref()).unwrap_or(usize::MAX);
            }
            if let Some(v) = &s.max_tracked_subjects {
                srv.max_tracked_subjects = usize::try_from(*v.get_ref()).unwrap_or(usize::MAX);
            }
        }

        if let (Some(r), Some(m)) = (&raw.redis, &raw.memory) {
            let _ = r;
            return Err(at(
                source,
                Some(m.span()),
                "memory",
                "give [redis] or [memory], not both".into(),
            ));
        }
        if let Some(m) = raw.memory {
            let m = m.into_inner();
            let mut max_buckets = None;
            if let Some(v) = &m.max_buckets {
                if *v.get_ref() == 0 {
                    return Err(at(
                        source,
                        Some(v.span()),
                        "memory.max_buckets",
                        "must be at least 1".into(),
                    ));
                }
                max_buckets = Some(usize::try_from(*v.get_ref()).unwrap_or(usize::MAX));
            }
            self.store = StoreConfig::Memory { max_buckets };
            self.store_given = true;
        }
        if let Some(r) = raw.redis {
            let span = r.span();
            let r = r.into_inner();
            let mut options = RedisOptions::default();
            if let Some(p) = &r.prefix {
                if p.get_ref().is_empty() || p.get_ref().contains(['{', '}', ' ']) {
                    return Err(at(
                        source,
                        Some(p.span()),
                        "redis.prefix",
                        "must be non-empty, without braces or spaces".into(),
                    ));
                }
                options.prefix = p.get_ref().clone();
            }
            if let Some(v) = &r.connect_timeout {
                options.connect_timeout = duration(source, v, "redis.connect_timeout")?;
            }
            if let Some(v) = &r.response_timeout {
                options.response_timeout = duration(source, v, "redis.response_timeout")?;
            }
            if let Some(v) = &r.fallback {
                options.fallback = *v.get_ref();
            }
            if let Some(v) = &r.deadline {
                options.deadline = duration(source, v, "redis.deadline")?;
            }
            if let Some(v) = &r.max_wait {
                options.max_wait = duration(source, v, "redis.max_wait")?;
                if options.max_wait < options.deadline {
                    return Err(at(
                        source,
                        Some(v.span()),
                        "redis.max_wait",
                        format!("must be at least redis.deadline ({:?})", options.deadline),
                    ));
                }
            }
            if let Some(v) = &r.instances {
                options.instances = u32::try_from(*v.get_ref())
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        at(
                            source,
                            Some(v.span()),
                            "redis.instances",
                            "must be between 1 and 4294967295".into(),
                        )
                    })?;
            }
            self.store = match (&r.url, &r.cluster) {
                (Some(_), Some(c)) => {
                    return Err(at(
                        source,
                        Some(c.span()),
                        "redis.cluster",
                        "give redis.url or redis.cluster, not both".into(),
                    ))
                }
                (Some(u), None) => StoreConfig::Redis {
                    url: redis_url(source, u, "redis.url")?,
                    options,
                },
                (None, Some(c)) => {
                    if c.get_ref().is_empty() {
                        return Err(at(
                            source,
                            Some(c.span()),
                            "redis.cluster",
                            "needs at least one seed node".into(),
                        ));
                    }
                    let nodes = c
                        .get_ref()
                        .iter()
                        .enumerate()
                        .map(|(i, n)| redis_url(source, n, &format!("redis.cluster[{i}]")))
                        .collect::<Result<_, _>>()?;
                    StoreConfig::RedisCluster { nodes, options }
                }
                (None, None) => {
                    return Err(at(
                        source,
                        Some(span),
                        "redis.url",
                        "is required in [redis] (or redis.cluster)".into(),
                    ))
                }
            };
            self.store_given = true;
        }

        if let Some(a) = raw.auth {
            let span = a.span();
            let a = a.into_inner();
            let mut auth = AuthConfig {
                admin_token: token(
                    source,
                    &a.admin_token,
                    &a.admin_token_env,
                    "auth.admin_token",
                    span,
                )?,
                clients: Vec::new(),
            };
            for (i, c) in a.clients.into_iter().enumerate() {
                let cspan = c.span();
                let c = c.into_inner();
                let field = format!("auth.clients[{i}].token");
                let tok = token(source, &c.token, &c.token_env, &field, cspan.clone())?
                    .ok_or_else(|| {
                        at(
                            source,
                            Some(cspan.clone()),
                            &field,
                            "is required (token or token_env)".into(),
                        )
                    })?;
                let dup = auth.clients.iter().any(|o| o.token == tok)
                    || auth.admin_token.as_ref() == Some(&tok);
                if dup {
                    let span = c.token.as_ref().or(c.token_env.as_ref()).map(Spanned::span);
                    return Err(at(source, span, &field, "duplicates another token".into()));
                }
                if let Some(t) = &c.tenant {
                    if t.get_ref().is_empty() || t.get_ref().len() > MAX_VALUE_BYTES {
                        return Err(at(
                            source,
                            Some(t.span()),
                            &format!("auth.clients[{i}].tenant"),
                            format!("must have 1 to {MAX_VALUE_BYTES} bytes"),
                        ));
                    }
                }
                auth.clients.push(Client {
                    name: c
                        .name
                        .map(Spanned::into_inner)
                        .unwrap_or_else(|| format!("client-{i}")),
                    token: tok,
                    tenant: c.tenant.map(Spanned::into_inner),
                });
            }
            self.auth = auth;
        }

        if let Some(f) = raw.forward_auth {
            let f = f.into_inner();
            let fa = &mut self.forward_auth;
            if let Some(attrs) = &f.attributes {
                fa.attributes.clear();
                for (attr, header) in attrs.get_ref() {
                    let field = format!("forward_auth.attributes.{attr}");
                    valid_attribute_name(attr)
                        .map_err(|m| at(source, Some(header.span()), &field, m))?;
                    let h = valid_header_name(header.get_ref())
                        .map_err(|m| at(source, Some(header.span()), &field, m))?;
                    fa.attributes.insert(attr.clone(), h);
                }
            }
            if let Some(h) = &f.tokens_header {
                fa.tokens_header =
                    if h.get_ref().is_empty() {
                        None
                    } else {
                        Some(valid_header_name(h.get_ref()).map_err(|m| {
                            at(source, Some(h.span()), "forward_auth.tokens_header", m)
                        })?)
                    };
            }
            if let Some(a) = &f.ip_attribute {
                valid_attribute_name(a.get_ref())
                    .map_err(|m| at(source, Some(a.span()), "forward_auth.ip_attribute", m))?;
                fa.ip_attribute = Some(a.get_ref().clone());
            }
            if let Some(h) = &f.token_header {
                fa.token_header = valid_header_name(h.get_ref())
                    .map_err(|m| at(source, Some(h.span()), "forward_auth.token_header", m))?;
            }
            if let Some(d) = &f.deny_status {
                let code = *d.get_ref();
                if !(400..=599).contains(&code) {
                    return Err(at(
                        source,
                        Some(d.span()),
                        "forward_auth.deny_status",
                        format!("{code} is not a 4xx or 5xx status (behind nginx: 403)"),
                    ));
                }
                fa.deny_status = u16::try_from(code).ok();
            }
        }

        if let Some(g) = raw.grpc {
            let g = g.into_inner();
            if let Some(a) = &g.domain_attribute {
                valid_attribute_name(a.get_ref())
                    .map_err(|m| at(source, Some(a.span()), "grpc.domain_attribute", m))?;
                self.grpc.domain_attribute = Some(a.get_ref().clone());
            }
            if let Some(d) = &g.descriptors {
                for (key, attr) in d.get_ref() {
                    valid_attribute_name(attr.get_ref()).map_err(|m| {
                        at(
                            source,
                            Some(attr.span()),
                            &format!("grpc.descriptors.{key}"),
                            m,
                        )
                    })?;
                    self.grpc
                        .descriptors
                        .insert(key.clone(), attr.get_ref().clone());
                }
            }
            if let Some(h) = &g.hits_addend {
                self.grpc.hits_addend = match h.get_ref().as_str() {
                    "tokens" => HitsAddend::Tokens,
                    "requests" => HitsAddend::Requests,
                    other => {
                        return Err(at(
                            source,
                            Some(h.span()),
                            "grpc.hits_addend",
                            format!("{other:?} is not tokens or requests"),
                        ))
                    }
                };
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
http = "127.0.0.1:9090"
grpc = "off"
headers = "openai"
trusted_proxies = ["10.0.0.0/8", "::1"]

[auth]
admin_token = "admin-token-0123456789"

[[auth.clients]]
name = "acme"
token = "acme-token-0123456789"
tenant = "acme"

[[rules]]
name = "per-tenant"
match = { tenant = "*" }
shadow = true
limits = [{ kind = "requests", amount = 2, per = "hour" }]
"#;

    #[test]
    fn a_good_file_loads() {
        let c = Config::from_toml(GOOD, "t.toml").unwrap();
        assert_eq!(c.server.http.port(), 9090);
        assert_eq!(c.server.grpc, None);
        assert_eq!(c.server.headers, Headers::Style(HeaderStyle::OpenAi));
        assert!(c.shadow_rules.contains("per-tenant"));
        assert_eq!(c.auth.clients[0].tenant.as_deref(), Some("acme"));
        assert!(c.server.trusted_proxies[0].contains("10.1.2.3".parse().unwrap()));
        assert!(!c.server.trusted_proxies[0].contains("11.1.2.3".parse().unwrap()));
        assert!(c.server.trusted_proxies[1].contains("::1".parse().unwrap()));
        assert!(format!("{:?}", c.auth).contains("***"));
        assert!(!format!("{:?}", c.auth).contains("acme-token"));
    }

    fn err(src: &str) -> ConfigError {
        Config::from_toml(src, "bad.toml").unwrap_err()
    }

    #[test]
    fn the_fallbacks_max_wait_is_set_and_never_below_the_deadline() {
        let c = Config::from_toml(
            "[redis]\nurl = \"redis://a:1\"\nmax_wait = \"2s\"\n",
            "t.toml",
        )
        .unwrap();
        let StoreConfig::Redis { options, .. } = &c.store else {
            panic!("{:?}", c.store)
        };
        assert_eq!(options.max_wait, Duration::from_secs(2));
        assert_eq!(RedisOptions::default().max_wait, Duration::from_secs(5));
        let e = err("[redis]\nurl = \"redis://a:1\"\ndeadline = \"1s\"\nmax_wait = \"10ms\"\n");
        assert_eq!(e.field, "redis.max_wait");
        assert_eq!(e.location.as_ref().unwrap().line, 4);
        assert!(e.to_string().contains("at least redis.deadline"), "{e}");
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = err(&GOOD.replace("127.0.0.1:9090", "localhost"));
        assert_eq!(e.field, "server.http");
        assert_eq!(e.location.as_ref().unwrap().line, 3);
        assert!(e.to_string().starts_with("bad.toml:3:"), "{e}");

        let e = err(&GOOD.replace("headers = ", "hedaers = "));
        assert_eq!(e.location.as_ref().unwrap().line, 5, "{e}");
        assert!(e.message.contains("hedaers"), "{e}");

        let e = err(&GOOD.replace("amount = 2,", "amount = 0,"));
        assert_eq!(e.rule.as_deref(), Some("per-tenant"));
        assert_eq!(e.field, "limits[0].amount");
        assert_eq!(e.location.as_ref().unwrap().line, 20, "{e}");

        let e = err(&GOOD.replace("shadow = true", "shadow = 1"));
        assert_eq!(e.field, "shadow");
        assert_eq!(e.location.as_ref().unwrap().line, 19, "{e}");

        let e = err(&GOOD.replace("acme-token-0123456789", "short"));
        assert_eq!(e.field, "auth.clients[0].token");
        assert_eq!(e.location.as_ref().unwrap().line, 13, "{e}");

        let e = err(&GOOD.replace("\"10.0.0.0/8\"", "\"10.0.0.0/33\""));
        assert_eq!(e.field, "server.trusted_proxies[0]");

        let e = err(&format!("{GOOD}\n[redis]\nurl = \"http://x\"\n"));
        assert_eq!(e.field, "redis.url");
        assert_eq!(e.location.as_ref().unwrap().line, 23, "{e}");

        let e = err("[server\n");
        assert_eq!(e.location.as_ref().unwrap().line, 1, "{e}");
    }

    #[test]
    fn the_example_config_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/tollgate.toml");
        let c = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = c.policy.rules().iter().map(|r| r.name()).collect();
        assert_eq!(
            names,
            ["glm", "deepseek", "claude", "openai", "deepinfra", "tiers"]
        );
        assert_eq!(
            c.grpc.descriptors.get("user_id").map(String::as_str),
            Some("user")
        );
    }

    #[test]
    fn warnings_name_rules_no_subject_can_match() {
        let c = Config::from_toml(
            r#"
[forward_auth]
attributes = { tenant = "x-tenant-id", region = "x-region" }

[[rules]]
name = "typo"
match = { tenat = "*", region = "*" }
limits = [{ kind = "requests", amount = 1, per = "minute" }]

[[rules]]
name = "openai"
match = { provider = "openai", tenant = "*" }
limits = [{ kind = "requests", amount = 1, per = "minute" }]

[[rules.overrides]]
match = { provider = "anthropic" }
limits = [{ kind = "requests", amount = 5, per = "minute" }]

[[rules.overrides]]
match = { provider = "openai", tenant = "vip" }
limits = [{ kind = "requests", amount = 5, per = "minute" }]
"#,
            "w.toml",
        )
        .unwrap();
        let w = c.warnings();
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(
            w[0].contains("\"typo\"") && w[0].contains("\"tenat\""),
            "{}",
            w[0]
        );
        assert!(
            !w.iter().any(|x| x.contains("\"region\"")),
            "mapped by forward_auth"
        );
        assert!(
            w[1].contains("provider=anthropic can never apply"),
            "{}",
            w[1]
        );
        assert!(Config::default().warnings().is_empty());
    }

    #[test]
    fn no_rules_means_the_default_policy_unless_an_empty_one_is_allowed() {
        let c = Config::from_toml("", "empty.toml").unwrap();
        assert_eq!(c.policy.rules().len(), 4);
        assert_eq!(c.policy.unmatched(), tollgate::Unmatched::Allow);
        assert_eq!(c.store, StoreConfig::Memory { max_buckets: None });
        assert!(c.blank && !c.defines_rules);
        let c = Config::from_toml("unmatched = \"deny\"\n", "deny.toml").unwrap();
        assert_eq!(c.policy.unmatched(), tollgate::Unmatched::Deny);
        let e = Config::from_toml("\nunmatched = \"no\"\n", "bad.toml").unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.location.unwrap().line),
            ("unmatched", 2)
        );
        assert!(
            !c.blank && !c.defines_rules,
            "a file with a setting is not blank"
        );
        let c = Config::from_toml("# only a comment\n\n", "c.toml").unwrap();
        assert!(c.blank);
        for (text, allowed) in [
            (
                "[server]\nshadow = false\n",
                "[server]\nallow_empty_policy = true\n",
            ),
            (
                "rules = []\n",
                "rules = []\n[server]\nallow_empty_policy = true\n",
            ),
        ] {
            let c = Config::from_toml(text, "t.toml").unwrap();
            assert!(!c.blank && !c.defines_rules, "{text}");
            assert_eq!(
                c.policy.rules().len(),
                default_policy().rules().len(),
                "{text}"
            );
            let c = Config::from_toml(allowed, "t.toml").unwrap_or_else(|e| panic!("{e}"));
            assert!(c.policy.rules().is_empty(), "{allowed}");
        }
        let c = Config::from_toml(GOOD, "t.toml").unwrap();
        assert!(c.defines_rules && !c.blank);
    }

    #[test]
    fn connection_settings_are_read_and_checked() {
        let c = Config::from_toml(
            "[server]\nrequest_read_timeout = \"3s\"\nidle_timeout = \"1m\"\nmax_connections = 50\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.server.request_read_timeout, Duration::from_secs(3));
        assert_eq!(c.server.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.server.max_connections, 50);
        let d = ServerConfig::default();
        assert_eq!(
            (d.request_read_timeout, d.idle_timeout, d.max_connections),
            (Duration::from_secs(10), Duration::from_secs(120), 10_000)
        );
        let e = err("[server]\nmax_connections = 0\n");
        assert_eq!(
            (e.field.as_str(), e.location.unwrap().line),
            ("server.max_connections", 2)
        );
        let e = err("[server]\nidle_timeout = \"soon\"\n");
        assert_eq!(e.field, "server.idle_timeout");
    }
}
