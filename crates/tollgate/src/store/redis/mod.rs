//! The Redis store: shared state for a fleet, on one Redis server or a Redis Cluster.
//!
//! - One `EVALSHA` per decision (per slot, in a cluster). The scripts in `lua/` implement
//!   tollgate-core's algorithms; they are sent once per server and re-sent with `EVAL` when a
//!   server answers `NOSCRIPT` (a call answered `NOSCRIPT` did not run, so that is safe). A call
//!   that timed out or whose outcome is unknown is never retried by this store.
//! - GCRA and concurrency decisions (with or without a request id) run standalone scripts
//!   that only read, decide and spend (`fast_check.lua` for one GCRA limit, `fast_decide.lua`
//!   otherwise); the verdicts are computed here with tollgate-core. Other algorithms run the
//!   general scripts (`decide.lua`, after the whole `algorithms.lua`).
//! - On a standalone server, script calls made concurrently are sent as one pipeline (one
//!   write), see `pipeline.rs`; settlements made while one is in flight share one call.
//! - Time is the Redis server's (`TIME` inside the script), so instances with skewed clocks
//!   agree. Tests may set a time override; production never does.
//! - Every key has a TTL: the time until its bucket is full again (a full bucket is deleted).
//! - Keys are `<prefix>:{<partition>}:<rule>:<limit>`: one rule partition shares a slot.
//! - In a cluster, the buckets of one decision that live in different slots are applied slot by
//!   slot in ascending slot order; if a later slot denies, the earlier slots' spends are
//!   refunded: never over-admission. Commands are routed to their slot's master by
//!   `cluster.rs`, which follows MOVED and ASK redirections and retries TRYAGAIN (the command
//!   did not run) and never sends a command twice otherwise.
//! - A request id's record (`<prefix>:{<partition>}:req:<id>:<fingerprint>`, in the slot of
//!   each group of its buckets) is written by the script that spends, and only when it spends:
//!   a retry of an admission is answered from it, a denial is decided again. The fingerprint
//!   (of the buckets, costs and mode) scopes the id to its request. A decision rolled back
//!   across slots deletes its records, so that a retry is decided afresh.
//! - Each connection's requests are timed (`wire.rs`), so that a fallback in front can tell a
//!   silent Redis from a busy host ([`Store::wire_health`]).

mod cluster;
mod home;
mod keys;
mod pipeline;
mod scripts;
mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Value};
use tollgate_core::algorithms::gcra::Gcra;
use tollgate_core::{Algorithm, Clock, LeaseId, Limit, Timestamp, Usage, Verdict, Window};

use super::health::WireHealth;
use super::idempotency::fingerprint;
use super::{Mode, Op, Route, Settlement, Store, StoreOutcome};
use crate::error::StoreError;
use crate::key::BucketName;
use home::Home;
pub use keys::MAX_VALUE_BYTES;
use scripts::Script;
use wire::{Line, Wire};

/// Integers that Lua's doubles hold exactly.
const EXACT: u128 = EXACT_U64 as u128;

/// Settings of a [`RedisStore`].
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// The first segment of every key (default `tollgate`).
    pub prefix: String,
    /// How long connecting may take (default 1 s).
    pub connect_timeout: Duration,
    /// How long one command may take before it fails as a timeout (default 1 s).
    pub response_timeout: Duration,
    /// How long an admission made with a request id is remembered (default 60 s).
    pub idempotency_window: Duration,
    /// A PEM file of the certificate authority that signed the server's certificate, for
    /// `rediss://` servers with a private CA (default: the system's roots).
    pub tls_ca_file: Option<std::path::PathBuf>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            prefix: "tollgate".to_owned(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            idempotency_window: Duration::from_secs(60),
            tls_ca_file: None,
        }
    }
}

#[derive(Clone)]
enum Conn {
    /// One server's connection, and what the store sees on it.
    Single(ConnectionManager, Arc<Line>),
    Cluster(cluster::Cluster),
}

impl Conn {
    async fn query(&self, cmd: &redis::Cmd) -> Result<Value, RedisError> {
        match self {
            Conn::Single(c, line) => {
                let on = line.begin();
                let r = cmd.query_async(&mut c.clone()).await;
                on.done(&r);
                r
            }
            Conn::Cluster(c) => c.query(cmd).await,
        }
    }
}

/// The key of a bucket in Redis, with its cluster slot and hash tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RedisKey {
    key: Arc<str>,
    tag: Arc<str>,
    slot: u16,
}

impl RedisKey {
    /// The full key.
    pub fn as_str(&self) -> &str {
        &self.key
    }
    /// The cluster slot.
    pub fn slot(&self) -> u16 {
        self.slot
    }
}

/// The Redis store. See the [module docs](self).
pub struct RedisStore {
    /// Empty until the first connection succeeds (see [`RedisStore::connect_lazy`]).
    conn: Arc<arc_swap::ArcSwapOption<Conn>>,
    cluster: bool,
    config: RedisConfig,
    time: Option<Arc<dyn Clock>>,
    /// Whether calls that allow it go through the standalone GCRA/concurrency scripts.
    fast: bool,
    /// Combines concurrent fast settlements into one script call (standalone only).
    batcher: SettleBatcher,
    /// Sends concurrent script calls as one pipeline (standalone only).
    pipeliner: pipeline::Pipeliner,
    /// What the store sees on its connections (for [`Store::wire_health`]).
    wire: Arc<Wire>,
    target: String,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.target)
            .field("cluster", &self.cluster)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// `url` with any password replaced by `***`, for logs and `Debug`.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let user = userinfo.split(':').next().unwrap_or_default();
    let shown = if userinfo.contains(':') {
        format!("{user}:***")
    } else {
        "***".to_owned()
    };
    format!("{}{shown}{}", &url[..scheme_end + 3], &rest[at..])
}

/// The private CA to trust, read from `config.tls_ca_file`.
fn tls_certificates(config: &RedisConfig) -> Result<Option<redis::TlsCertificates>, StoreError> {
    let Some(path) = &config.tls_ca_file else {
        return Ok(None);
    };
    let pem = std::fs::read(path)
        .map_err(|e| StoreError::Unavailable(format!("reading {}: {e}", path.display())))?;
    Ok(Some(redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    }))
}

fn store_error(e: &RedisError, timeout: Duration) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout(timeout)
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
        StoreError::Unavailable(e.to_string())
    } else {
        match e.code() {
            Some("CLUSTERDOWN" | "TRYAGAIN" | "MASTERDOWN" | "LOADING" | "READONLY") => {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Protocol(e.to_string()),
        }
    }
}

/// The nodes' URLs, redacted, for logs and errors.
fn targets(nodes: &[String]) -> String {
    nodes
        .iter()
        .map(|n| redact(n))
        .collect::<Vec<_>>()
        .join(",")
}

/// A connection to one server, timed on a new line of `wire`.
async fn connect_single(
    url: &str,
    config: &RedisConfig,
    wire: &Arc<Wire>,
) -> Result<Conn, StoreError> {
    let target = redact(url);
    let client = match tls_certificates(config)? {
        Some(certs) => redis::Client::build_with_tls(url, certs),
        None => redis::Client::open(url),
    }
    .map_err(|e| StoreError::Unavailable(format!("{target}: {e}")))?;
    let cm = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.response_timeout))
        .set_number_of_retries(1);
    let conn = client
        .get_connection_manager_with_config(cm)
        .await
        .map_err(|e| StoreError::Unavailable(format!("{target}: {e}")))?;
    Ok(Conn::Single(conn, wire.line()))
}

/// A connection to a cluster, each node's connection timed on its own line of `wire`.
async fn connect_cluster(
    nodes: &[String],
    config: &RedisConfig,
    wire: &Arc<Wire>,
) -> Result<Conn, StoreError> {
    let conn = cluster::Cluster::connect(cluster::Settings {
        seeds: nodes.to_vec(),
        certs: tls_certificates(config)?,
        connect_timeout: config.connect_timeout,
        response_timeout: config.response_timeout,
        wire: Arc::clone(wire),
    })
    .await
    .map_err(|e| StoreError::Unavailable(format!("{}: {e}", targets(nodes))))?;
    Ok(Conn::Cluster(conn))
}

impl RedisStore {
    /// Connects to one Redis server by URL (`redis://`, `rediss://`, credentials in the URL).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, RedisConfig::default()).await
    }

    /// Connects to one Redis server with settings.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the server cannot be reached.
    pub async fn connect_with(url: &str, config: RedisConfig) -> Result<Self, StoreError> {
        let wire = Wire::new();
        let conn = connect_single(url, &config, &wire).await?;
        Ok(Self::over(
            arc_swap::ArcSwapOption::from_pointee(conn),
            false,
            config,
            wire,
            redact(url),
        ))
    }

    /// Connects to a Redis Cluster through its seed nodes.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if no seed node can be reached.
    pub async fn connect_cluster(
        nodes: &[String],
        config: RedisConfig,
    ) -> Result<Self, StoreError> {
        let wire = Wire::new();
        let conn = connect_cluster(nodes, &config, &wire).await?;
        Ok(Self::over(
            arc_swap::ArcSwapOption::from_pointee(conn),
            true,
            config,
            wire,
            targets(nodes),
        ))
    }

    /// A store over `conn` (a connection, or the empty slot a lazy store fills later).
    fn over(
        conn: arc_swap::ArcSwapOption<Conn>,
        cluster: bool,
        config: RedisConfig,
        wire: Arc<Wire>,
        target: String,
    ) -> Self {
        let home = Home::here();
        RedisStore {
            conn: Arc::new(conn),
            cluster,
            config,
            time: None,
            fast: true,
            batcher: SettleBatcher::new(home.clone()),
            pipeliner: pipeline::Pipeliner::new(home, Arc::clone(&wire)),
            wire,
            target,
        }
    }

    /// A store that connects in the background: it answers at once, failing every call with
    /// [`StoreError::Unavailable`] until Redis (or, with `cluster`, a seed node of the cluster)
    /// answers, retrying with backoff. So a service starts while Redis is down, and a
    /// [`FallbackStore`](super::fallback::FallbackStore) in front of it serves the rules' failure
    /// modes until then. Needs a tokio runtime.
    pub fn connect_lazy(nodes: &[String], cluster: bool, config: RedisConfig) -> Self {
        let wire = Wire::new();
        let store = Self::over(
            arc_swap::ArcSwapOption::empty(),
            cluster,
            config.clone(),
            Arc::clone(&wire),
            targets(nodes),
        );
        let slot = Arc::clone(&store.conn);
        let seeds = nodes.to_vec();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            loop {
                let attempt = if cluster {
                    connect_cluster(&seeds, &config, &wire).await
                } else {
                    match seeds.first() {
                        Some(url) => connect_single(url, &config, &wire).await,
                        None => return,
                    }
                };
                match attempt {
                    Ok(conn) => {
                        slot.store(Some(Arc::new(conn)));
                        tracing::info!("tollgate: connected to Redis");
                        return;
                    }
                    Err(e) => {
                        wire.error();
                        tracing::warn!(error = %e, "tollgate: Redis not reachable yet");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
        });
        store
    }

    /// Whether a connection has been made.
    pub fn is_connected(&self) -> bool {
        self.conn.load().is_some()
    }

    /// The connection, or [`StoreError::Unavailable`] while a lazy store has none yet.
    fn connection(&self) -> Result<Arc<Conn>, StoreError> {
        self.conn
            .load_full()
            .ok_or_else(|| StoreError::Unavailable(format!("{}: not connected yet", self.target)))
    }

    async fn query(&self, cmd: &redis::Cmd) -> Result<Value, StoreError> {
        self.connection()?
            .query(cmd)
            .await
            .map_err(|e| store_error(&e, self.config.response_timeout))
    }

    /// Uses `clock` instead of the server's `TIME`. For tests only: instances with different
    /// clocks would disagree.
    pub fn with_time_override(mut self, clock: impl Clock + 'static) -> Self {
        self.time = Some(Arc::new(clock));
        self
    }

    /// Runs every call through the general scripts (`decide.lua`, `settle.lua`), even those
    /// that the standalone GCRA/concurrency scripts (`fast_decide.lua`, `fast_settle.lua`)
    /// would serve. Both give the same results; tests use this to check the general scripts.
    pub fn with_general_scripts(mut self) -> Self {
        self.fast = false;
        self
    }

    /// The settings.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    fn now_arg(&self) -> String {
        self.time
            .as_ref()
            .map(|c| c.now().as_micros().to_string())
            .unwrap_or_default()
    }

    /// Runs `script` with EVALSHA, or EVAL if the server does not have it.
    async fn eval(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[String],
    ) -> Result<Value, StoreError> {
        self.eval_with(script, keys.len(), |cmd| {
            cmd.arg(keys).arg(args);
        })
        .await
    }

    /// Runs `script` with EVALSHA, or EVAL if the server does not have it, with its `nkeys`
    /// keys and then its arguments appended by `args` (called again for the EVAL).
    async fn eval_with(
        &self,
        script: &Script,
        nkeys: usize,
        args: impl Fn(&mut redis::Cmd),
    ) -> Result<Value, StoreError> {
        if !self.cluster {
            let cmd = script_cmd("EVALSHA", &script.sha, nkeys, &args);
            match self.pipeliner.query(&self.conn, cmd).await {
                Some(Ok(v)) => return Ok(v),
                // That call did not run: `eval_on` sends it again, with the source if needed.
                Some(Err(e)) if e.code() == Some("NOSCRIPT") => {}
                Some(Err(e)) => return Err(store_error(&e, self.config.response_timeout)),
                None => {}
            }
        }
        eval_on(
            self.conn.load_full(),
            &self.target,
            self.config.response_timeout,
            script,
            nkeys,
            args,
        )
        .await
    }

    /// Indices of `keys` grouped by slot, in ascending slot order (one group when standalone).
    fn groups<'a>(&self, keys: impl Iterator<Item = &'a RedisKey>) -> Vec<(u16, Vec<usize>)> {
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for (i, k) in keys.enumerate() {
            let slot = if self.cluster { k.slot } else { 0 };
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, g)) => g.push(i),
                None => groups.push((slot, vec![i])),
            }
        }
        groups.sort_by_key(|(s, _)| *s);
        groups
    }

    async fn decide_group(
        &self,
        ops: &[&Op<RedisKey>],
        mode: Mode,
        lease: LeaseId,
        request: Option<&str>,
    ) -> Result<(Timestamp, bool, Vec<Verdict>), StoreError> {
        if self.fast && ops.iter().all(|o| FastOp::serves(o.limit.algorithm())) {
            return self.decide_fast(ops, mode, lease, request).await;
        }
        let mut keys: Vec<&str> = ops.iter().map(|o| o.key.as_str()).collect();
        let req_key = request.map(|id| keys::request_key(&self.config.prefix, &ops[0].key.tag, id));
        if let Some(k) = &req_key {
            keys.push(k);
        }
        let mut args = Vec::with_capacity(6 + ops.len() * 5);
        args.push(if mode == Mode::Spend { "spend" } else { "peek" }.to_owned());
        args.push(lease.to_string());
        args.push(self.now_arg());
        args.push(request.unwrap_or_default().to_owned());
        args.push(self.idempotency_ms().to_string());
        args.push(ops.len().to_string());
        for op in ops {
            let (alg, p) = params(&op.limit)?;
            args.push(alg.to_string());
            args.extend(p.iter().map(i64::to_string));
            args.push(op.cost.min(EXACT_U64).to_string());
        }
        match self.eval(&scripts::DECIDE, &keys, &args).await? {
            // A request decided before by fast_decide.lua.
            Value::BulkString(record) => replayed(ops, &record),
            reply => general_verdicts(ints(reply)?, ops.len()),
        }
    }

    /// How long a decision's idempotency record lives, in milliseconds.
    fn idempotency_ms(&self) -> u128 {
        self.config.idempotency_window.as_millis().max(1)
    }

    /// `decide_group` through `fast_decide.lua` (or, for one GCRA limit spent without a request
    /// id, `fast_check.lua`): the script reads the buckets, decides and spends; the verdicts
    /// are computed here from the state it returns, with tollgate-core.
    async fn decide_fast(
        &self,
        ops: &[&Op<RedisKey>],
        mode: Mode,
        lease: LeaseId,
        request: Option<&str>,
    ) -> Result<(Timestamp, bool, Vec<Verdict>), StoreError> {
        let fast = ops
            .iter()
            .map(|o| FastOp::of(o))
            .collect::<Result<smallvec::SmallVec<[FastOp; 3]>, _>>()?;
        let spend = mode == Mode::Spend;
        if let ([op], [FastOp::Gcra { scale: 1, inc, tau }], true, None) =
            (ops, &fast[..], spend, request)
        {
            return self.check_fast(op, *inc, *tau).await;
        }
        let mut sig: smallvec::SmallVec<[u8; 8]> = smallvec::SmallVec::new();
        let letter = match (spend, request.is_some()) {
            (true, false) => b's',
            (false, false) => b'p',
            (true, true) => b'i',
            (false, true) => b'j',
        };
        sig.push(if self.time.is_some() {
            letter.to_ascii_uppercase()
        } else {
            letter
        });
        let mut takes = false;
        for f in &fast {
            sig.push(match *f {
                FastOp::Gcra { scale: 1, .. } => b'g',
                FastOp::Gcra { .. } => b'G',
                FastOp::Concurrency { take: true, .. } => {
                    takes = true;
                    b'c'
                }
                FastOp::Concurrency { take: false, .. } => b'k',
            });
        }
        let req_key = request.map(|id| keys::request_key(&self.config.prefix, &ops[0].key.tag, id));
        let nkeys = ops.len() + usize::from(req_key.is_some());
        let reply = self
            .eval_with(&scripts::FAST_DECIDE, nkeys, |cmd| {
                for op in ops {
                    cmd.arg(op.key.as_str());
                }
                if let Some(k) = &req_key {
                    cmd.arg(k.as_str());
                }
                cmd.arg(&sig[..]);
                for f in &fast {
                    match *f {
                        FastOp::Gcra { scale, inc, tau } => {
                            if scale != 1 {
                                cmd.arg(scale);
                            }
                            cmd.arg(inc).arg(tau);
                        }
                        FastOp::Concurrency {
                            amount,
                            lease_us,
                            take,
                        } => {
                            cmd.arg(amount);
                            if take {
                                cmd.arg(lease_us);
                            }
                        }
                    }
                }
                if takes {
                    cmd.arg(lease);
                }
                if req_key.is_some() {
                    cmd.arg(self.idempotency_ms());
                }
                if let Some(c) = &self.time {
                    cmd.arg(c.now().as_micros());
                }
            })
            .await?;
        match reply {
            Value::Array(items) => fast_verdicts(
                ops,
                &fast,
                items.iter().map(|v| match v {
                    Value::Int(n) => u64::try_from(*n).ok(),
                    _ => None,
                }),
            ),
            // A request id seen before: its record.
            Value::BulkString(record) => replayed(ops, &record),
            other => Err(StoreError::Protocol(format!(
                "fast_decide.lua answered {other:?}"
            ))),
        }
    }

    /// One GCRA limit with scale 1, spent if it admits, through `fast_check.lua`.
    async fn check_fast(
        &self,
        op: &Op<RedisKey>,
        inc: u64,
        tau: u64,
    ) -> Result<(Timestamp, bool, Vec<Verdict>), StoreError> {
        let reply = self
            .eval_with(&scripts::FAST_CHECK, 1, |cmd| {
                cmd.arg(op.key.as_str()).arg(inc).arg(tau);
                if let Some(c) = &self.time {
                    cmd.arg(c.now().as_micros());
                }
            })
            .await?;
        let malformed = || StoreError::Protocol(format!("fast_check.lua answered {reply:?}"));
        // "now x"
        let Value::BulkString(text) = &reply else {
            return Err(malformed());
        };
        let (now_us, x) = std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.split_once(' '))
            .and_then(|(now, x)| Some((now.parse::<u64>().ok()?, x.parse::<i64>().ok()?)))
            .ok_or_else(malformed)?;
        // x = d when admitted and spent, -1 - d when denied.
        let (spent, d) = if x >= 0 {
            (true, x.unsigned_abs())
        } else {
            (false, (-1 - x).unsigned_abs())
        };
        let now = Timestamp::from_micros(now_us);
        let tat = u128::from(now_us).saturating_add(u128::from(d));
        let verdict = Gcra { tat }.evaluate(&op.limit, now, op.cost);
        Ok((now, spent, vec![verdict]))
    }

    /// `settle_group` through `fast_settle.lua`, if every item allows it. Standalone, the
    /// items go through the [`SettleBatcher`].
    async fn settle_fast(
        &self,
        items: &[&Settlement<RedisKey>],
    ) -> Option<Result<usize, StoreError>> {
        let mut sent: FastItems = smallvec::SmallVec::new();
        for item in items {
            let f = match item {
                Settlement::Refund { limit, cost, .. } | Settlement::Charge { limit, cost, .. } => {
                    if limit.algorithm() != Algorithm::Gcra {
                        return None;
                    }
                    let g = limit.gcra();
                    let amount = u128::from(*cost)
                        .saturating_mul(u128::from(g.step))
                        .min(EXACT);
                    let amount = u64::try_from(amount).unwrap_or(EXACT_U64);
                    if matches!(item, Settlement::Refund { .. }) {
                        FastItem::Refund(g.scale, amount)
                    } else {
                        FastItem::Charge(g.scale, amount)
                    }
                }
                // Releases and renewals only concern concurrency buckets.
                Settlement::Release { limit, lease, .. } => {
                    if limit.algorithm() != Algorithm::Concurrency {
                        continue;
                    }
                    FastItem::Release(*lease)
                }
                Settlement::Renew { limit, lease, .. } => {
                    if limit.algorithm() != Algorithm::Concurrency {
                        continue;
                    }
                    FastItem::Renew(*lease, limit.lease_micros())
                }
            };
            sent.push((Arc::clone(&item.key().key), f));
        }
        if sent.is_empty() {
            return Some(Ok(0));
        }
        if !self.cluster {
            if let Some(r) = self.batcher.settle(sent.clone(), self).await {
                return Some(r);
            }
        }
        Some(
            fast_settle(
                self.conn.load_full(),
                &self.target,
                self.config.response_timeout,
                self.time.as_deref(),
                sent.iter().map(|(k, f)| (&**k, *f)),
            )
            .await
            .map(|found| found.iter().filter(|f| **f).count()),
        )
    }

    async fn settle_group(
        &self,
        items: &[&Settlement<RedisKey>],
        rolled_back: Option<(&str, &str)>,
    ) -> Result<usize, StoreError> {
        if self.fast && rolled_back.is_none() {
            if let Some(r) = self.settle_fast(items).await {
                return r;
            }
        }
        let mut keys: Vec<&str> = items.iter().map(|s| s.key().as_str()).collect();
        let req_key = rolled_back.map(|(tag, id)| keys::request_key(&self.config.prefix, tag, id));
        if let Some(k) = &req_key {
            keys.push(k);
        }
        let mut args = Vec::with_capacity(3 + items.len() * 7);
        args.push(self.now_arg());
        args.push(items.len().to_string());
        args.push(rolled_back.map(|(_, id)| id.to_owned()).unwrap_or_default());
        for item in items {
            let (kind, limit, at, value) = match item {
                Settlement::Refund {
                    limit,
                    spent_at,
                    cost,
                    ..
                } => ("refund", limit, spent_at.as_micros(), cost.to_string()),
                Settlement::Charge {
                    limit,
                    spent_at,
                    cost,
                    ..
                } => (
                    "charge",
                    limit,
                    spent_at.as_micros(),
                    cost.min(&EXACT_U64).to_string(),
                ),
                Settlement::Release { limit, lease, .. } => {
                    ("release", limit, 0, lease.to_string())
                }
                Settlement::Renew { limit, lease, .. } => ("renew", limit, 0, lease.to_string()),
            };
            let (alg, p) = params(limit)?;
            args.push(kind.to_owned());
            args.push(alg.to_string());
            args.extend(p.iter().map(i64::to_string));
            args.push(at.to_string());
            args.push(value);
        }
        let v = self.eval(&scripts::SETTLE, &keys, &args).await?;
        match v {
            Value::Int(n) => Ok(usize::try_from(n).unwrap_or(0)),
            other => Err(StoreError::Protocol(format!(
                "settle.lua answered {other:?}"
            ))),
        }
    }

    /// Refunds what `ops` spent at `at` in one slot, and deletes the request's record there.
    async fn roll_back(
        &self,
        ops: &[&Op<RedisKey>],
        at: Timestamp,
        lease: LeaseId,
        request: Option<&str>,
    ) -> Result<(), StoreError> {
        let items: Vec<Settlement<RedisKey>> = ops
            .iter()
            .filter_map(|op| {
                if op.limit.algorithm() == Algorithm::Concurrency {
                    (op.cost > 0).then(|| Settlement::Release {
                        key: op.key.clone(),
                        limit: op.limit,
                        lease,
                    })
                } else {
                    (op.cost > 0).then(|| Settlement::Refund {
                        key: op.key.clone(),
                        limit: op.limit,
                        spent_at: at,
                        cost: op.cost,
                    })
                }
            })
            .collect();
        if items.is_empty() && request.is_none() {
            return Ok(());
        }
        let refs: Vec<&Settlement<RedisKey>> = items.iter().collect();
        let tag = ops
            .first()
            .map(|o| o.key.tag.clone())
            .unwrap_or_else(|| Arc::from("_"));
        self.settle_group(&refs, request.map(|id| (&*tag, id)))
            .await?;
        metrics::counter!("tollgate_redis_rollbacks_total").increment(1);
        Ok(())
    }

    /// Deletes the keys matching `pattern` on every master, through the store's own
    /// connections (so with its TLS settings); answers how many it deleted.
    async fn delete_matching(&self, pattern: &str) -> Result<u64, StoreError> {
        let conn = self.connection()?;
        let timeout = self.config.response_timeout;
        let fail = |e: RedisError| store_error(&e, timeout);
        match &*conn {
            Conn::Single(c, _) => delete_matching_on(&mut c.clone(), pattern)
                .await
                .map_err(fail),
            Conn::Cluster(c) => {
                let mut removed = 0u64;
                // Connecting runs on the store's home runtime: bounded here as well.
                let connecting = self.config.connect_timeout + timeout;
                for url in c.masters() {
                    let mut node = tokio::time::timeout(connecting, c.connection(&url))
                        .await
                        .map_err(|_| StoreError::Timeout(connecting))?
                        .map_err(fail)?;
                    let n = delete_matching_on(&mut node, pattern).await.map_err(fail)?;
                    removed = removed.saturating_add(n);
                }
                Ok(removed)
            }
        }
    }
}

/// Deletes the keys matching `pattern` on the server behind `conn` (SCAN, then DEL each).
async fn delete_matching_on(
    conn: &mut impl redis::aio::ConnectionLike,
    pattern: &str,
) -> Result<u64, RedisError> {
    let mut removed = 0u64;
    let mut cursor: u64 = 0;
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        for key in found {
            let n: u64 = redis::cmd("DEL").arg(&key).query_async(conn).await?;
            removed = removed.saturating_add(n);
        }
        cursor = next;
        if cursor == 0 {
            return Ok(removed);
        }
    }
}

const EXACT_U64: u64 = 1 << 53;

fn nonneg(v: Option<&i64>) -> Result<u64, StoreError> {
    v.and_then(|v| u64::try_from(*v).ok())
        .ok_or_else(|| StoreError::Protocol("a script answered a negative or missing time".into()))
}

fn as_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn ints(v: Value) -> Result<Vec<i64>, StoreError> {
    match v {
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::Int(n) => Ok(n),
                other => Err(StoreError::Protocol(format!(
                    "expected integers, got {other:?}"
                ))),
            })
            .collect(),
        other => Err(StoreError::Protocol(format!(
            "expected an array, got {other:?}"
        ))),
    }
}

/// The verdicts of a `decide.lua` reply (or record): now, spent, then six numbers per op.
fn general_verdicts(
    reply: Vec<i64>,
    n: usize,
) -> Result<(Timestamp, bool, Vec<Verdict>), StoreError> {
    let now = Timestamp::from_micros(nonneg(reply.first())?);
    let spent = reply.get(1).copied() == Some(1);
    let verdicts = reply
        .get(2..)
        .unwrap_or_default()
        .chunks_exact(6)
        .map(|c| Verdict {
            admitted: c[0] == 1,
            never_fits: c[1] == 1,
            capacity: as_u64(c[2]),
            remaining: as_u64(c[3]),
            reset_after_us: as_u64(c[4]),
            retry_after_us: as_u64(c[5]),
        })
        .collect::<Vec<_>>();
    if verdicts.len() != n {
        return Err(StoreError::Protocol(format!(
            "decide.lua answered {} verdicts for {n} buckets",
            verdicts.len()
        )));
    }
    Ok((now, spent, verdicts))
}

/// The verdicts of a `fast_decide.lua` reply (or record): now, spent, then the state of each
/// op (GCRA: d; concurrency: held, latest expiry, n-th expiry), computed with tollgate-core.
fn fast_verdicts(
    ops: &[&Op<RedisKey>],
    fast: &[FastOp],
    mut items: impl Iterator<Item = Option<u64>>,
) -> Result<(Timestamp, bool, Vec<Verdict>), StoreError> {
    let mut next = || {
        items.next().flatten().ok_or_else(|| {
            StoreError::Protocol("fast_decide.lua answered a malformed reply".into())
        })
    };
    let now_us = next()?;
    let now = Timestamp::from_micros(now_us);
    let spent = next()? == 1;
    let mut verdicts = Vec::with_capacity(ops.len());
    for (op, f) in ops.iter().zip(fast) {
        let v = match *f {
            FastOp::Gcra { .. } => {
                let d = next()?;
                let tat = u128::from(now_us)
                    .saturating_mul(u128::from(op.limit.gcra().scale))
                    .saturating_add(u128::from(d));
                Gcra { tat }.evaluate(&op.limit, now, op.cost)
            }
            FastOp::Concurrency {
                amount, lease_us, ..
            } => {
                let (held, last, nth) = (next()?, next()?, next()?);
                if held < amount {
                    Verdict {
                        admitted: true,
                        never_fits: false,
                        capacity: amount,
                        remaining: amount.saturating_sub(held).saturating_sub(1),
                        reset_after_us: last.saturating_sub(now_us).max(lease_us),
                        retry_after_us: 0,
                    }
                } else {
                    Verdict {
                        admitted: false,
                        never_fits: false,
                        capacity: amount,
                        remaining: 0,
                        reset_after_us: last.saturating_sub(now_us),
                        retry_after_us: nth.saturating_sub(now_us),
                    }
                }
            }
        };
        verdicts.push(v);
    }
    Ok((now, spent, verdicts))
}

/// The decision recorded for a request id seen before: `fast_decide.lua`'s record ("F", then
/// its reply's numbers) or `decide.lua`'s (its reply's numbers), joined by commas.
fn replayed(
    ops: &[&Op<RedisKey>],
    record: &[u8],
) -> Result<(Timestamp, bool, Vec<Verdict>), StoreError> {
    let malformed = || {
        StoreError::Protocol(format!(
            "malformed idempotency record {:?}",
            String::from_utf8_lossy(record)
        ))
    };
    let text = std::str::from_utf8(record).map_err(|_| malformed())?;
    if let Some(fast) = text.strip_prefix('F') {
        // Only fast_decide.lua writes these, for ops it serves.
        if !ops.iter().all(|o| FastOp::serves(o.limit.algorithm())) {
            return Err(malformed());
        }
        let kinds = ops
            .iter()
            .map(|o| FastOp::of(o))
            .collect::<Result<smallvec::SmallVec<[FastOp; 3]>, _>>()?;
        fast_verdicts(ops, &kinds, fast.split(',').map(|v| v.parse::<u64>().ok()))
    } else {
        let reply = text
            .split(',')
            .map(|v| v.parse::<i64>().map_err(|_| malformed()))
            .collect::<Result<Vec<_>, _>>()?;
        general_verdicts(reply, ops.len())
    }
}

/// The algorithm code and parameters of `limit` for the scripts, refusing limits whose
/// arithmetic would leave the range Lua's doubles hold exactly.
fn params(limit: &Limit) -> Result<(u8, [i64; 3]), StoreError> {
    let too_big = |what: &str| {
        StoreError::Unsupported(format!(
            "the limit {limit} needs {what} beyond 2^53, which the Redis scripts cannot compute exactly"
        ))
    };
    let i = |v: u64| i64::try_from(v).map_err(|_| too_big("a parameter"));
    let w = limit.window_micros();
    let a = limit.amount();
    match limit.algorithm() {
        Algorithm::Gcra => {
            let g = limit.gcra();
            if g.tolerance.saturating_add(u128::from(g.step)) >= EXACT
                || u128::from(g.scale) >= EXACT
            {
                return Err(too_big("burst x window"));
            }
            Ok((1, [i(g.scale)?, i(g.step)?, i(limit.burst())?]))
        }
        Algorithm::SlidingWindow => {
            if u128::from(a)
                .saturating_mul(u128::from(w))
                .saturating_mul(2)
                >= EXACT
            {
                return Err(too_big("amount x window"));
            }
            Ok((2, [i(w)?, i(a)?, 0]))
        }
        Algorithm::SlidingLog => {
            if u128::from(a) >= EXACT || u128::from(w) >= EXACT {
                return Err(too_big("amount"));
            }
            Ok((3, [i(w)?, i(a)?, 0]))
        }
        Algorithm::FixedWindow => {
            let wp = if limit.window() == Window::Month {
                0
            } else {
                w
            };
            if u128::from(a) >= EXACT {
                return Err(too_big("amount"));
            }
            Ok((4, [i(wp)?, i(a)?, i64::from(limit.utc_offset().seconds())]))
        }
        Algorithm::Concurrency => Ok((5, [i(a)?, i(limit.lease_micros())?, 0])),
    }
}

/// Runs `script` on `conn` with EVALSHA, or EVAL if the server does not have it (a call
/// answered NOSCRIPT did not run, so sending it again cannot spend twice). Never retries
/// anything else.
async fn eval_on(
    conn: Option<Arc<Conn>>,
    target: &str,
    timeout: Duration,
    script: &Script,
    nkeys: usize,
    args: impl Fn(&mut redis::Cmd),
) -> Result<Value, StoreError> {
    let Some(conn) = conn else {
        return Err(StoreError::Unavailable(format!(
            "{target}: not connected yet"
        )));
    };
    match conn
        .query(&script_cmd("EVALSHA", &script.sha, nkeys, &args))
        .await
    {
        Ok(v) => Ok(v),
        Err(e) if e.code() == Some("NOSCRIPT") => {
            metrics::counter!("tollgate_redis_script_loads_total").increment(1);
            conn.query(&script_cmd("EVAL", &script.source, nkeys, &args))
                .await
                .map_err(|e| store_error(&e, timeout))
        }
        Err(e) => Err(store_error(&e, timeout)),
    }
}

/// `EVALSHA sha nkeys ...` or `EVAL source nkeys ...`, with the keys and arguments `args`
/// appends.
fn script_cmd(
    command: &str,
    script: &str,
    nkeys: usize,
    args: &impl Fn(&mut redis::Cmd),
) -> redis::Cmd {
    let mut cmd = redis::cmd(command);
    cmd.arg(script).arg(nkeys);
    args(&mut cmd);
    cmd
}

/// The items of one fast settlement: each bucket's key and what to do there.
type FastItems = smallvec::SmallVec<[(Arc<str>, FastItem); 3]>;

/// Runs `items` in one `fast_settle.lua` call; answers, per item, whether a release or renewal
/// found its lease.
async fn fast_settle<'a>(
    conn: Option<Arc<Conn>>,
    target: &str,
    timeout: Duration,
    time: Option<&dyn Clock>,
    items: impl Iterator<Item = (&'a str, FastItem)> + Clone,
) -> Result<Vec<bool>, StoreError> {
    let mut sig = Vec::with_capacity(8);
    sig.push(if time.is_some() { b't' } else { b'-' });
    let mut n = 0usize;
    for (_, f) in items.clone() {
        n = n.saturating_add(1);
        sig.push(match f {
            FastItem::Refund(..) => b'r',
            FastItem::Charge(..) => b'a',
            FastItem::Release(_) => b'x',
            FastItem::Renew(..) => b'w',
        });
    }
    let now = time.map(|c| c.now().as_micros());
    let reply = eval_on(conn, target, timeout, &scripts::FAST_SETTLE, n, |cmd| {
        for (key, _) in items.clone() {
            cmd.arg(key);
        }
        cmd.arg(&sig[..]);
        for (_, f) in items.clone() {
            match f {
                FastItem::Refund(scale, amount) | FastItem::Charge(scale, amount) => {
                    cmd.arg(scale).arg(amount)
                }
                FastItem::Release(lease) => cmd.arg(lease),
                FastItem::Renew(lease, lease_us) => cmd.arg(lease).arg(lease_us),
            };
        }
        if let Some(now) = now {
            cmd.arg(now);
        }
    })
    .await?;
    let found = match reply {
        Value::Array(v) => v
            .iter()
            .map(|x| matches!(x, Value::Int(1)))
            .collect::<Vec<_>>(),
        other => {
            return Err(StoreError::Protocol(format!(
                "fast_settle.lua answered {other:?}"
            )))
        }
    };
    if found.len() != n {
        return Err(StoreError::Protocol(format!(
            "fast_settle.lua answered {} results for {n} items",
            found.len()
        )));
    }
    Ok(found)
}

/// At most this many items go into one batched `fast_settle.lua` call.
const MAX_BATCH_ITEMS: usize = 256;

/// One settlement waiting for the batch task.
struct SettleJob {
    items: FastItems,
    reply: tokio::sync::oneshot::Sender<Result<usize, StoreError>>,
}

/// Combines fast settlements (token refunds and charges, releases, renewals) that are made
/// while another is in flight into one `fast_settle.lua` call. A settlement made when none is
/// in flight is sent at once, so batching adds no wait when the store is idle; under load,
/// each released permit costs Redis its two commands rather than a whole script call. Every
/// settlement still gets its own answer; a failed batch fails each of its settlements (none
/// is retried). A background task on the store's home runtime ([`Home`]) does the calls.
struct SettleBatcher {
    tx: parking_lot::Mutex<Option<tokio::sync::mpsc::UnboundedSender<SettleJob>>>,
    home: Home,
}

impl SettleBatcher {
    fn new(home: Home) -> Self {
        SettleBatcher {
            tx: parking_lot::Mutex::new(None),
            home,
        }
    }

    /// Settles `items` through the batch task, or `None` if the task is not running (no
    /// runtime, or its runtime has ended): the caller then sends them itself.
    async fn settle(
        &self,
        items: FastItems,
        store: &RedisStore,
    ) -> Option<Result<usize, StoreError>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = SettleJob { items, reply };
        let sent = {
            let mut tx = self.tx.lock();
            let job = match tx.as_ref() {
                Some(t) => t.send(job).err().map(|e| e.0),
                None => Some(job),
            };
            match job {
                None => true,
                Some(job) => {
                    // Start (or restart, if its runtime has ended) the task.
                    let started = self.home.start(job, |rx| {
                        run_batches(
                            rx,
                            Arc::clone(&store.conn),
                            store.target.clone(),
                            store.config.response_timeout,
                            store.time.clone(),
                        )
                    });
                    match started {
                        Ok(t) => {
                            *tx = Some(t);
                            true
                        }
                        Err(_) => false,
                    }
                }
            }
        };
        if !sent {
            return None;
        }
        Some(answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the settlement task ended; the outcome is unknown".into(),
            ))
        }))
    }
}

/// The batch task: one `fast_settle.lua` call at a time, holding every settlement queued
/// meanwhile. Ends when the store is dropped.
async fn run_batches(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<SettleJob>,
    conn: Arc<arc_swap::ArcSwapOption<Conn>>,
    target: String,
    timeout: Duration,
    time: Option<Arc<dyn Clock>>,
) {
    while let Some(first) = rx.recv().await {
        let mut n = first.items.len();
        let mut jobs = vec![first];
        while n < MAX_BATCH_ITEMS {
            match rx.try_recv() {
                Ok(job) => {
                    n = n.saturating_add(job.items.len());
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let mut items: Vec<(&str, FastItem)> = Vec::with_capacity(n);
        for job in &jobs {
            for (k, f) in &job.items {
                items.push((k, *f));
            }
        }
        let result = fast_settle(
            conn.load_full(),
            &target,
            timeout,
            time.as_deref(),
            items.iter().copied(),
        )
        .await;
        drop(items);
        let mut at = 0usize;
        for job in jobs {
            let len = job.items.len();
            let answer = match &result {
                Ok(found) => Ok(found
                    .get(at..at.saturating_add(len))
                    .unwrap_or_default()
                    .iter()
                    .filter(|f| **f)
                    .count()),
                Err(e) => Err(e.clone()),
            };
            at = at.saturating_add(len);
            let _ = job.reply.send(answer);
        }
    }
}

/// One op of `fast_decide.lua`, with its parameters checked and precomputed.
#[derive(Clone, Copy, Debug)]
enum FastOp {
    /// Scaled units per microsecond, what the cost adds (`tau + 1` when it never fits), and
    /// the tolerance.
    Gcra { scale: u64, inc: u64, tau: u64 },
    /// Slots, lease length, and whether the op takes a slot.
    Concurrency {
        amount: u64,
        lease_us: u64,
        take: bool,
    },
}

impl FastOp {
    /// Whether `fast_decide.lua` serves ops of this algorithm.
    fn serves(alg: Algorithm) -> bool {
        matches!(alg, Algorithm::Gcra | Algorithm::Concurrency)
    }

    fn of(op: &Op<RedisKey>) -> Result<FastOp, StoreError> {
        // The same bounds as the general scripts: every value below 2^53.
        let (_, p) = params(&op.limit)?;
        let [a, b, c] = p.map(|v| u64::try_from(v).unwrap_or(0));
        match op.limit.algorithm() {
            Algorithm::Gcra => {
                let (scale, step, burst) = (a, b, c);
                let too_big = || {
                    StoreError::Unsupported(format!(
                        "the limit {} needs burst x window beyond 2^53",
                        op.limit
                    ))
                };
                let tau = burst.checked_mul(step).ok_or_else(too_big)?;
                let inc = if op.cost > burst {
                    tau.checked_add(1).ok_or_else(too_big)?
                } else {
                    op.cost.checked_mul(step).ok_or_else(too_big)?
                };
                Ok(FastOp::Gcra { scale, inc, tau })
            }
            _ => Ok(FastOp::Concurrency {
                amount: a,
                lease_us: b,
                take: op.cost > 0,
            }),
        }
    }
}

/// One item of `fast_settle.lua`.
#[derive(Clone, Copy, Debug)]
enum FastItem {
    /// GCRA: scale, scaled units given back.
    Refund(u64, u64),
    /// GCRA: scale, scaled units charged.
    Charge(u64, u64),
    /// Concurrency: the lease.
    Release(LeaseId),
    /// Concurrency: the lease and the lease length.
    Renew(LeaseId, u64),
}

impl Store for RedisStore {
    type Key = RedisKey;

    fn bucket_key(&self, name: &BucketName<'_>) -> RedisKey {
        let tag = keys::partition_tag(name.partition);
        let key = keys::bucket_key(&self.config.prefix, &tag, name.rule, name.limit);
        RedisKey {
            key: key.into(),
            slot: keys::slot_of(&tag),
            tag: tag.into(),
        }
    }

    async fn decide(
        &self,
        ops: &[Op<RedisKey>],
        mode: Mode,
        lease: LeaseId,
        request: Option<&str>,
    ) -> Result<StoreOutcome, StoreError> {
        // An id names one request: these buckets, costs and mode. Its record's key carries
        // their fingerprint, so the same id with another subject or cost is another request.
        let scoped = request.map(|id| {
            let fp = fingerprint(ops, mode, |k: &RedisKey, h| {
                std::hash::Hasher::write(h, k.as_str().as_bytes());
                std::hash::Hasher::write_u8(h, 0xff);
            });
            format!("{id}:{fp:016x}")
        });
        let request = scoped.as_deref();
        if !self.cluster && !ops.is_empty() {
            // One server: one script call for the whole decision, nothing to roll back.
            let group: smallvec::SmallVec<[&Op<RedisKey>; 4]> = ops.iter().collect();
            let (now, spent, verdicts) = self.decide_group(&group, mode, lease, request).await?;
            return Ok(StoreOutcome {
                now,
                verdicts: verdicts.into_iter().collect(),
                spent: spent && mode == Mode::Spend,
                store_full: false,
                route: Route::PRIMARY,
                degraded: None,
            });
        }
        let groups = self.groups(ops.iter().map(|o| &o.key));
        let mut verdicts: Vec<Option<Verdict>> = vec![None; ops.len()];
        let mut now = None;
        let mut spent_groups: Vec<(Vec<&Op<RedisKey>>, Timestamp)> = Vec::new();
        let mut mode_now = mode;
        let mut all = true;
        for (_, idx) in &groups {
            let group: Vec<&Op<RedisKey>> = idx.iter().filter_map(|&i| ops.get(i)).collect();
            let result = self.decide_group(&group, mode_now, lease, request).await;
            let (t, spent, vs) = match result {
                Ok(r) => r,
                Err(e) => {
                    // What earlier slots spent must not stay spent for a decision that failed.
                    for (g, at) in &spent_groups {
                        let _ = self.roll_back(g, *at, lease, request).await;
                    }
                    return Err(e);
                }
            };
            now.get_or_insert(t);
            if spent {
                spent_groups.push((group, t));
            }
            if vs.iter().any(|v| !v.admitted) {
                all = false;
                // Later slots are only evaluated, so the decision reports every limit.
                mode_now = Mode::Peek;
            }
            for (&i, v) in idx.iter().zip(vs) {
                if let Some(slot) = verdicts.get_mut(i) {
                    *slot = Some(v);
                }
            }
        }
        if !all {
            for (g, at) in &spent_groups {
                self.roll_back(g, *at, lease, request).await?;
            }
        }
        Ok(StoreOutcome {
            now: now.unwrap_or(Timestamp::EPOCH),
            verdicts: verdicts
                .into_iter()
                .map(|v| {
                    // Every op is in exactly one group, so every verdict is set; a missing one
                    // would deny.
                    v.unwrap_or(Verdict {
                        admitted: false,
                        never_fits: false,
                        capacity: 0,
                        remaining: 0,
                        reset_after_us: 0,
                        retry_after_us: 0,
                    })
                })
                .collect(),
            spent: all && mode == Mode::Spend && !spent_groups.is_empty(),
            store_full: false,
            route: Route::PRIMARY,
            degraded: None,
        })
    }

    async fn settle(
        &self,
        items: &[Settlement<RedisKey>],
        _route: Route,
    ) -> Result<usize, StoreError> {
        let groups = self.groups(items.iter().map(Settlement::key));
        let mut found = 0usize;
        for (_, idx) in groups {
            let group: Vec<&Settlement<RedisKey>> =
                idx.iter().filter_map(|&i| items.get(i)).collect();
            found = found.saturating_add(self.settle_group(&group, None).await?);
        }
        Ok(found)
    }

    async fn usage(&self, ops: &[Op<RedisKey>]) -> Result<(Timestamp, Vec<Usage>), StoreError> {
        let groups = self.groups(ops.iter().map(|o| &o.key));
        let mut out: Vec<Usage> = vec![Usage::default(); ops.len()];
        let mut now = None;
        for (_, idx) in groups {
            let keys: Vec<&str> = idx
                .iter()
                .filter_map(|&i| ops.get(i))
                .map(|o| o.key.as_str())
                .collect();
            let mut args = vec![self.now_arg(), idx.len().to_string()];
            for &i in &idx {
                let Some(op) = ops.get(i) else { continue };
                let (alg, p) = params(&op.limit)?;
                args.push(alg.to_string());
                args.extend(p.iter().map(i64::to_string));
            }
            let reply = ints(self.eval(&scripts::USAGE, &keys, &args).await?)?;
            now.get_or_insert(Timestamp::from_micros(nonneg(reply.first())?));
            for (&i, c) in idx
                .iter()
                .zip(reply.get(1..).unwrap_or_default().chunks_exact(4))
            {
                if let Some(u) = out.get_mut(i) {
                    *u = Usage {
                        used: as_u64(c[0]),
                        capacity: as_u64(c[1]),
                        available: as_u64(c[2]),
                        reset_after_us: as_u64(c[3]),
                    };
                }
            }
        }
        Ok((now.unwrap_or(Timestamp::EPOCH), out))
    }

    async fn reset(&self, keys: &[RedisKey]) -> Result<(), StoreError> {
        for (_, idx) in self.groups(keys.iter()) {
            let mut cmd = redis::cmd("DEL");
            for &i in &idx {
                if let Some(k) = keys.get(i) {
                    cmd.arg(k.as_str());
                }
            }
            self.query(&cmd).await?;
        }
        Ok(())
    }

    async fn reset_rule(&self, rule: &'static str, _rule_id: u32) -> Result<u64, StoreError> {
        let pattern = keys::rule_pattern(&self.config.prefix, rule);
        self.delete_matching(&pattern).await
    }

    fn wire_health(&self) -> Option<WireHealth> {
        Some(self.wire.health())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://user:secret@h:6379/0"),
            "redis://user:***@h:6379/0"
        );
        assert_eq!(redact("rediss://:secret@h:6380"), "rediss://:***@h:6380");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }
}
