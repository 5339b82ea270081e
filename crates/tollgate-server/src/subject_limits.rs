//! Limits of one subject set while the service runs (`PUT /v1/admin/subject-limits`,
//! `tollgate limits set`): a premium user's own requests per minute, hour and day.
//!
//! Each setting is an override on the rules it names (or on every rule that partitions by the
//! subject's attributes), laid over the configuration file's policy: it survives reloads of the
//! file, and replaces the earlier setting of the same subject and rule.
//!
//! Where they are kept:
//!
//! - **Redis store** (standalone or cluster): in the Redis hash `<prefix>:{admin}:subject-limits`,
//!   with a version counter beside it. Every instance of the fleet reads the version every
//!   second and applies a change within about a second; a restarted instance reads them all
//!   at start. A setting that cannot be written to Redis is refused (503), so instances do not
//!   disagree.
//! - **Memory store**: in this process only. They are lost when it stops; put limits that
//!   must last in the configuration file.
//!
//! Every change is written to the log under the target `tollgate_server::audit`: who, which
//! subject and rules, the limits (or their removal).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use redis::{ConnectionAddr, IntoConnectionInfo};
use serde::{Deserialize, Serialize};
use tollgate::{LimitSpec, Policy};

use crate::config::StoreConfig;
use crate::error::ApiError;

/// One limit as the admin API takes it: the policy file's fields.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct LimitBody {
    /// `requests`, `tokens`, `input_tokens`, `output_tokens` or `concurrency`.
    pub kind: String,
    /// Units per window (for concurrency: calls in flight).
    #[serde(deserialize_with = "crate::api::whole")]
    pub amount: u64,
    /// The window: `second`, `minute`, `hour`, `day`, `month` or a duration (not for
    /// concurrency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<String>,
    /// `gcra` (default), `sliding_window`, `sliding_log` or `fixed_window`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// GCRA only: the most that can be spent at once.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::api::whole_opt"
    )]
    pub burst: Option<u64>,
    /// Concurrency: how long a slot is held by a holder that never releases it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
}

crate::api::object_only!(
    LimitBody,
    "an object such as {\"kind\": \"requests\", \"amount\": 100, \"per\": \"minute\"}"
);

impl LimitBody {
    /// The limit, validated; errors name `field` (`limits[0]`).
    ///
    /// # Errors
    /// 400 naming the field at fault.
    pub fn to_spec(&self, field: &str) -> Result<LimitSpec, ApiError> {
        let bad = |f: &str, m: String| ApiError::bad_request(format!("{field}.{f}: {m}"));
        let kind: tollgate::LimitKind =
            self.kind.parse().map_err(|e| bad("kind", format!("{e}")))?;
        let window = match &self.per {
            Some(p) => p.parse().map_err(|e| bad("per", format!("{e}")))?,
            None if kind == tollgate::LimitKind::Concurrency => tollgate::Window::MINUTE,
            None => return Err(bad("per", "is required".into())),
        };
        let mut spec = LimitSpec::new(kind, self.amount, window);
        if let Some(a) = &self.algorithm {
            spec.algorithm = Some(a.parse().map_err(|e| bad("algorithm", format!("{e}")))?);
        }
        spec.burst = self.burst;
        if let Some(l) = &self.lease {
            spec.lease =
                Some(tollgate_core::parse_duration(l).ok_or_else(|| {
                    bad("lease", format!("{l:?} is not a duration like 30s or 5m"))
                })?);
        }
        spec.build().map_err(|e| bad(e.field(), e.to_string()))?;
        Ok(spec)
    }
}

/// One subject's limits, as set.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SubjectLimits {
    /// The subject: exact attribute values (`{"user": "premium_user"}`).
    pub subject: BTreeMap<String, String>,
    /// The rule, or (absent) every rule that partitions by all of the subject's attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The limits that replace the rules' own for this subject.
    pub limits: Vec<LimitBody>,
    /// Who set them (for the audit trail).
    #[serde(default)]
    pub set_by: String,
}

impl SubjectLimits {
    /// The identity of a setting: its rule and subject.
    pub fn key(&self) -> String {
        key_of(self.rule.as_deref(), &self.subject)
    }

    fn when(&self) -> Vec<(String, String)> {
        self.subject
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The limits as specs.
    ///
    /// # Errors
    /// 400 naming the field.
    pub fn specs(&self) -> Result<Vec<LimitSpec>, ApiError> {
        self.limits
            .iter()
            .enumerate()
            .map(|(i, l)| l.to_spec(&format!("limits[{i}]")))
            .collect()
    }

    /// The rules this setting goes to under `policy`.
    ///
    /// # Errors
    /// 404 for a rule that does not exist, 400 when no rule partitions by the subject.
    pub fn rules(&self, policy: &Policy) -> Result<Vec<&'static str>, ApiError> {
        policy
            .subject_rules(self.rule.as_deref(), &self.when())
            .map_err(|e| {
                if e.field == "rule" {
                    ApiError::not_found(e.to_string())
                } else {
                    ApiError::bad_request(e.to_string())
                }
            })
    }
}

/// The identity of the setting of `subject` in `rule`.
pub fn key_of(rule: Option<&str>, subject: &BTreeMap<String, String>) -> String {
    let attrs: Vec<String> = subject.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}|{}", rule.unwrap_or("*"), attrs.join(","))
}

/// `base` with every setting laid over it. A setting that no longer fits (its rule was
/// removed from the file) is skipped and logged.
pub fn apply(base: &Policy, settings: &BTreeMap<String, SubjectLimits>) -> Policy {
    let mut policy = base.clone();
    for s in settings.values() {
        let laid = s.rules(&policy).and_then(|rules| {
            let specs = s.specs()?;
            policy
                .with_subject_limits(&rules, &s.when(), &specs)
                .map_err(|e| ApiError::bad_request(e.to_string()))
        });
        match laid {
            Ok(p) => policy = p,
            Err(e) => {
                tracing::warn!(setting = %s.key(), error = %e.message, "subject limits skipped")
            }
        }
    }
    policy
}

/// Where the settings are kept.
pub enum Keeper {
    /// In this process.
    Memory,
    /// In Redis, for the fleet.
    Redis(RedisKeeper),
}

impl Keeper {
    /// The keeper for `store`.
    pub fn for_store(store: &StoreConfig) -> Keeper {
        match store {
            StoreConfig::Memory { .. } => Keeper::Memory,
            StoreConfig::Redis { url, options } => Keeper::Redis(RedisKeeper::new(
                vec![url.clone()],
                &options.prefix,
                options.response_timeout,
            )),
            StoreConfig::RedisCluster { nodes, options } => Keeper::Redis(RedisKeeper::new(
                nodes.clone(),
                &options.prefix,
                options.response_timeout,
            )),
        }
    }

    /// `memory` or `redis`: where a setting is kept, as answers say.
    pub fn name(&self) -> &'static str {
        match self {
            Keeper::Memory => "memory",
            Keeper::Redis(_) => "redis",
        }
    }
}

/// The settings in Redis: a hash of JSON settings and a version counter, in one slot.
pub struct RedisKeeper {
    nodes: Vec<String>,
    hash: String,
    version: String,
    timeout: Duration,
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

/// Redirections followed for one command (a cluster moving the slot).
const MAX_REDIRECTS: usize = 3;

impl RedisKeeper {
    fn new(nodes: Vec<String>, prefix: &str, timeout: Duration) -> Self {
        RedisKeeper {
            nodes,
            hash: format!("{prefix}:{{admin}}:subject-limits"),
            version: format!("{prefix}:{{admin}}:subject-limits:version"),
            timeout,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    async fn connect(
        &self,
        info: redis::ConnectionInfo,
    ) -> Result<redis::aio::MultiplexedConnection, String> {
        let client = redis::Client::open(info).map_err(|e| e.to_string())?;
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|e| e.to_string())
    }

    /// Runs `pipe`, connecting (to the first seed that answers) when needed and following a
    /// cluster's redirection to the slot's owner.
    async fn run<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, String> {
        let mut conn = self.conn.lock().await;
        let mut last = String::from("no Redis node configured");
        if conn.is_none() {
            for node in &self.nodes {
                let info = node
                    .as_str()
                    .into_connection_info()
                    .map_err(|e| e.to_string())?;
                match self.connect(info).await {
                    Ok(c) => {
                        *conn = Some(c);
                        break;
                    }
                    Err(e) => last = e,
                }
            }
        }
        for _ in 0..=MAX_REDIRECTS {
            let Some(c) = conn.as_mut() else {
                return Err(last);
            };
            match pipe.query_async::<T>(c).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if let Some((host, port)) = e.redirect_node() {
                        let seed = self.nodes.first().map_or("", String::as_str);
                        let info = seed.into_connection_info().map_err(|e| e.to_string())?;
                        let addr = match info.addr() {
                            ConnectionAddr::TcpTls {
                                insecure,
                                tls_params,
                                ..
                            } => ConnectionAddr::TcpTls {
                                host: host.to_owned(),
                                port,
                                insecure: *insecure,
                                tls_params: tls_params.clone(),
                            },
                            _ => ConnectionAddr::Tcp(host.to_owned(), port),
                        };
                        *conn = Some(self.connect(info.set_addr(addr)).await?);
                        continue;
                    }
                    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                        *conn = None;
                    }
                    return Err(e.to_string());
                }
            }
        }
        Err("too many redirections".into())
    }

    /// Writes (or, without limits, removes) one setting and bumps the version.
    async fn store(&self, key: &str, setting: Option<&SubjectLimits>) -> Result<u64, String> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        match setting {
            Some(s) => {
                let json = serde_json::to_string(s).map_err(|e| e.to_string())?;
                pipe.hset(&self.hash, key, json).ignore();
            }
            None => {
                pipe.hdel(&self.hash, key).ignore();
            }
        }
        pipe.incr(&self.version, 1u64);
        let (version,): (u64,) = self.run(&pipe).await?;
        Ok(version)
    }

    /// The version now.
    async fn version(&self) -> Result<u64, String> {
        let mut pipe = redis::pipe();
        pipe.get(&self.version);
        let (v,): (Option<u64>,) = self.run(&pipe).await?;
        Ok(v.unwrap_or(0))
    }

    /// Every setting, with the version they are at.
    async fn load(&self) -> Result<(u64, BTreeMap<String, SubjectLimits>), String> {
        let mut pipe = redis::pipe();
        pipe.atomic().get(&self.version).hgetall(&self.hash);
        let (v, all): (Option<u64>, BTreeMap<String, String>) = self.run(&pipe).await?;
        let mut out = BTreeMap::new();
        for (k, json) in all {
            match serde_json::from_str::<SubjectLimits>(&json) {
                Ok(s) => {
                    out.insert(k, s);
                }
                Err(e) => {
                    tracing::warn!(setting = %k, error = %e, "unreadable subject limits in Redis skipped")
                }
            }
        }
        Ok((v.unwrap_or(0), out))
    }
}

/// The settings of one service: what is applied, and where it is kept.
pub struct Settings {
    keeper: Keeper,
    /// The Redis version the settings were last read at (`None`: never read), and the
    /// settings.
    state: parking_lot::Mutex<(Option<u64>, BTreeMap<String, SubjectLimits>)>,
}

impl Settings {
    /// No settings yet, kept by `keeper`.
    pub fn new(keeper: Keeper) -> Self {
        Settings {
            keeper,
            state: parking_lot::Mutex::new((None, BTreeMap::new())),
        }
    }

    /// Where settings are kept: `memory` or `redis`.
    pub fn kept_in(&self) -> &'static str {
        self.keeper.name()
    }

    /// The settings applied now.
    pub fn all(&self) -> BTreeMap<String, SubjectLimits> {
        self.state.lock().1.clone()
    }

    /// Sets (or, with no limits, removes) one setting: kept first (so that a setting Redis
    /// did not take is not applied here alone), then applied here at once (the other
    /// instances read it within a second). Returns whether a setting was there before.
    ///
    /// # Errors
    /// 503 if Redis did not take it.
    pub async fn put(&self, setting: SubjectLimits) -> Result<bool, ApiError> {
        let key = setting.key();
        let remove = setting.limits.is_empty();
        if let Keeper::Redis(r) = &self.keeper {
            r.store(&key, (!remove).then_some(&setting))
                .await
                .map_err(|e| {
                    ApiError::unavailable(format!(
                        "Redis did not take the setting, so nothing changed: {e}"
                    ))
                })?;
        }
        let mut state = self.state.lock();
        Ok(if remove {
            state.1.remove(&key).is_some()
        } else {
            state.1.insert(key, setting).is_some()
        })
    }

    /// Reads Redis's settings if their version moved since the last read; returns whether
    /// the settings changed.
    ///
    /// # Errors
    /// Redis's error.
    pub async fn refresh(&self) -> Result<bool, String> {
        let Keeper::Redis(r) = &self.keeper else {
            return Ok(false);
        };
        let seen = self.state.lock().0;
        if seen.is_some() && Some(r.version().await?) == seen {
            return Ok(false);
        }
        let (version, all) = r.load().await?;
        let mut state = self.state.lock();
        let changed = all != state.1;
        *state = (Some(version), all);
        Ok(changed)
    }
}

/// Keeps the service's settings in step with Redis: every second, reads the version and, when
/// it moved, applies the settings (`on_change`). Stops with `stop`.
pub fn spawn_refresh(
    settings: Arc<Settings>,
    on_change: impl Fn() + Send + Sync + 'static,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    if matches!(settings.keeper, Keeper::Memory) {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = &mut stop => break,
            }
            match settings.refresh().await {
                Ok(true) => {
                    tracing::info!(target: "tollgate_server::audit", "subject limits changed in Redis; applied");
                    on_change();
                    failing = false;
                }
                Ok(false) => failing = false,
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "cannot read subject limits from Redis; keeping the last ones");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    });
}
