//! Routing for a Redis Cluster: each command goes to the master that serves its key's slot.
//!
//! The store keeps the slot map and one multiplexed connection per node itself rather than
//! through redis-rs's cluster client. That client stops polling its in-flight requests while it
//! re-reads the slot map, and a request that was queued for the map's lock at that moment holds
//! the lock from the re-read for good: every later call of the process waits out its timeout.
//! Under `redis-cli --cluster reshard` that happened in about one run in ten of the exactness
//! test on a 2-core machine.
//!
//! What a reply leads to (all within the store's response timeout for the whole call):
//! - `MOVED slot node`: the command did not run. The slot's owner is updated at once, the whole
//!   map is re-read in the background, and the command goes to the new owner.
//! - `ASK slot node`: the command did not run; it goes to that node once, after `ASKING` on the
//!   same connection.
//! - `TRYAGAIN` (keys of one call split by a slot's migration), `CLUSTERDOWN`, `LOADING`,
//!   `MASTERDOWN`, `READONLY` (a master demoted by a failover): the command did not run; it is
//!   sent again after a short backoff, doubling from [`BACKOFF_MIN`] to [`BACKOFF_MAX`]
//!   (`READONLY` also re-reads the map).
//! - A node that cannot be connected to (refused, no answer within the connect timeout, no
//!   route): nothing was sent; the map is re-read and the command is sent again after the
//!   backoff. Other connect errors (credentials, TLS settings, a name that resolves to nothing)
//!   are returned at once.
//! - No reply within the timeout: returned as a timeout (the command may have run), and the map
//!   is re-read, since a master that stopped answering without closing its sockets may have
//!   been failed over; the connection is kept (a late reply does not break it).
//! - Any other error, or a connection that breaks: returned, never re-sent, since the command
//!   may have run. A broken connection is dropped and the next call to that node connects
//!   afresh. A connection the server closed while idle is only found broken by the next call on
//!   it, which fails (redis-rs tells that only to RESP3 connections): one failed call per
//!   connection, as the standalone store's connection manager has.
//!
//! Re-reads ask every known master and seed at once and take the first answer; they run in
//! the background, at most one every [`REFRESH_INTERVAL`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, RedisError, Value};
use tokio::sync::OnceCell;

use super::home::Home;
use super::keys;
use super::wire::{Line, Wire};

/// The number of hash slots in a Redis Cluster.
const SLOTS: usize = 16_384;
/// The first wait before a command that did not run is sent again.
const BACKOFF_MIN: Duration = Duration::from_millis(2);
/// The longest wait between two sends of a command that did not run.
const BACKOFF_MAX: Duration = Duration::from_millis(100);
/// The least time between two re-reads of the slot map, so that a failover's failing calls
/// re-read it at most this often.
const REFRESH_INTERVAL: Duration = Duration::from_millis(50);
/// Redirections followed back to back before the backoff applies to them too (a slot whose
/// owners disagree for a moment must not spin).
const FREE_REDIRECTS: u32 = 3;
/// No slot owner known.
const NO_OWNER: u16 = u16::MAX;

/// How to reach the cluster's nodes.
#[derive(Clone)]
pub(super) struct Settings {
    /// The seed URLs. The first one's scheme, credentials and settings (path, query, fragment)
    /// are used for every node.
    pub seeds: Vec<String>,
    /// A private CA for `rediss://` nodes.
    pub certs: Option<redis::TlsCertificates>,
    /// How long making one node's connection may take.
    pub connect_timeout: Duration,
    /// The bound on one whole call, redirections and retries included.
    pub response_timeout: Duration,
    /// Where each node's connection is timed (one line per node).
    pub wire: Arc<Wire>,
}

/// A connection to a Redis Cluster: cheap to clone, shared by all clones.
#[derive(Clone)]
pub(super) struct Cluster {
    inner: Arc<Inner>,
}

/// A node's connection, made on first use by whichever call needs it first.
type NodeCell = Arc<OnceCell<MultiplexedConnection>>;

struct Inner {
    settings: Settings,
    /// The seeds as node URLs (the form the map uses), so a seed and a master share a connection.
    seeds: Vec<String>,
    /// Where connections and map re-reads run (see `home.rs`).
    home: Home,
    map: ArcSwap<SlotMap>,
    /// One connection per node URL.
    nodes: Mutex<HashMap<String, NodeCell>>,
    /// What the store sees on each node's connection, by node URL (kept across reconnects).
    lines: Mutex<HashMap<String, Arc<Line>>>,
    /// Whether a background re-read of the map is running (or waiting to run).
    refreshing: AtomicBool,
    /// When the last re-read began.
    last_refresh: Mutex<Option<tokio::time::Instant>>,
}

/// Which master serves each slot.
struct SlotMap {
    /// Per slot, an index into `masters`, or [`NO_OWNER`].
    owners: Vec<u16>,
    /// Master URLs, shared so that routing a call copies no string.
    masters: Vec<Arc<str>>,
}

impl SlotMap {
    fn empty() -> Self {
        SlotMap {
            owners: vec![NO_OWNER; SLOTS],
            masters: Vec::new(),
        }
    }

    fn owner(&self, slot: u16) -> Option<&str> {
        let i = *self.owners.get(usize::from(slot))?;
        self.masters.get(usize::from(i)).map(|m| &**m)
    }

    /// This map with `slot` served by `url`.
    fn with_owner(&self, slot: u16, url: &str) -> Option<SlotMap> {
        let mut masters = self.masters.clone();
        let i = match masters.iter().position(|m| **m == *url) {
            Some(i) => i,
            None => {
                masters.push(url.into());
                masters.len() - 1
            }
        };
        let mut owners = self.owners.clone();
        *owners.get_mut(usize::from(slot))? = u16::try_from(i).ok()?;
        Some(SlotMap { owners, masters })
    }
}

/// What the routing loop does after a reply.
enum Next {
    Done(Result<Value, RedisError>),
    /// Send to this node at once (`ASKING` first if `asking`).
    Redirect {
        url: Arc<str>,
        asking: bool,
    },
    /// Send again, to the slot's owner, after the backoff.
    Wait,
}

impl Cluster {
    /// Reads the slot map from the first seed that answers.
    pub(super) async fn connect(settings: Settings) -> Result<Cluster, RedisError> {
        let template = settings.seeds.first().cloned().unwrap_or_default();
        let mut seeds: Vec<String> = Vec::new();
        for seed in &settings.seeds {
            let url = node_url(&template, &with_port(url_authority(seed)), seed);
            if !seeds.contains(&url) {
                seeds.push(url);
            }
        }
        let cluster = Cluster {
            inner: Arc::new(Inner {
                settings,
                seeds,
                home: Home::here(),
                map: ArcSwap::from_pointee(SlotMap::empty()),
                nodes: Mutex::new(HashMap::new()),
                lines: Mutex::new(HashMap::new()),
                refreshing: AtomicBool::new(false),
                last_refresh: Mutex::new(None),
            }),
        };
        cluster.refresh().await?;
        Ok(cluster)
    }

    /// Runs `cmd` on the master that serves its first key (any master if it has none).
    pub(super) async fn query(&self, cmd: &Cmd) -> Result<Value, RedisError> {
        let timeout = self.inner.settings.response_timeout;
        match tokio::time::timeout(timeout, self.route(cmd)).await {
            Ok(reply) => reply,
            Err(_) => {
                // A master that stopped answering without closing its sockets (paused, or cut
                // off) may have been failed over: only a fresh map says so.
                self.refresh_soon();
                Err(timed_out(timeout))
            }
        }
    }

    /// The URLs of the masters in the current slot map.
    pub(super) fn masters(&self) -> Vec<Arc<str>> {
        self.inner.map.load().masters.clone()
    }

    /// A connection to `url`, made now if there is none.
    pub(super) async fn connection(&self, url: &str) -> Result<MultiplexedConnection, RedisError> {
        self.connection_and_cell(url).await.map(|(conn, _)| conn)
    }

    /// A connection to `url` and the cell that holds it (to drop just that one if it breaks).
    async fn connection_and_cell(
        &self,
        url: &str,
    ) -> Result<(MultiplexedConnection, NodeCell), RedisError> {
        let cell = self.cell(url);
        let conn = cell
            .get_or_try_init(|| self.connect_node(url.to_owned(), Arc::downgrade(&cell)))
            .await?
            .clone();
        Ok((conn, cell))
    }

    async fn route(&self, cmd: &Cmd) -> Result<Value, RedisError> {
        let slot = command_slot(cmd);
        let mut backoff = BACKOFF_MIN;
        let mut redirects = 0u32;
        let mut redirect: Option<(Arc<str>, bool)> = None;
        loop {
            let (url, asking) = match redirect.take() {
                Some(r) => r,
                None => match self.owner(slot) {
                    Some(url) => (url, false),
                    None => {
                        self.refresh_soon();
                        backoff = pause(backoff).await;
                        continue;
                    }
                },
            };
            let next = match self.connection_and_cell(&url).await {
                Ok((conn, cell)) => self.send(cmd, conn, &cell, &url, asking).await,
                // Nothing was sent. A node that cannot be reached may have been failed over;
                // refused credentials, TLS settings or names will not get better.
                Err(e) if unreachable(&e) => {
                    self.inner.settings.wire.error();
                    self.refresh_soon();
                    Next::Wait
                }
                Err(e) => Next::Done(Err(e)),
            };
            match next {
                Next::Done(reply) => return reply,
                Next::Redirect { url, asking } => {
                    redirects += 1;
                    if redirects > FREE_REDIRECTS {
                        backoff = pause(backoff).await;
                    }
                    redirect = Some((url, asking));
                }
                Next::Wait => backoff = pause(backoff).await,
            }
        }
    }

    /// Sends `cmd` to `url` once and says what to do with the reply.
    async fn send(
        &self,
        cmd: &Cmd,
        mut conn: MultiplexedConnection,
        cell: &NodeCell,
        url: &str,
        asking: bool,
    ) -> Next {
        let line = self.line(url);
        let on = line.begin();
        let reply = if asking {
            // Errors stay values, so that a MOVED or ASK after ASKING keeps its node.
            let mut pipe = redis::pipe();
            pipe.cmd("ASKING")
                .ignore()
                .add_command(cmd.clone())
                .ignore_errors();
            pipe.query_async::<Vec<Value>>(&mut conn)
                .await
                .and_then(|mut v| {
                    v.pop().ok_or_else(|| {
                        RedisError::from((
                            redis::ErrorKind::UnexpectedReturnType,
                            "no reply after ASKING",
                        ))
                    })
                })
                .and_then(Value::extract_error)
        } else {
            cmd.query_async::<Value>(&mut conn).await
        };
        on.done(&reply);
        let e = match reply {
            Ok(v) => return Next::Done(Ok(v)),
            Err(e) => e,
        };
        let template = self.template();
        match e.code() {
            Some("MOVED") => {
                let Some((node, slot)) = e.redirect_node() else {
                    return Next::Done(Err(e));
                };
                let to = node_url(template, node, url);
                self.set_owner(slot, &to);
                self.refresh_soon();
                Next::Redirect {
                    url: to.into(),
                    asking: false,
                }
            }
            Some("ASK") => match e.redirect_node() {
                Some((node, _)) => Next::Redirect {
                    url: node_url(template, node, url).into(),
                    asking: true,
                },
                None => Next::Done(Err(e)),
            },
            Some("TRYAGAIN" | "CLUSTERDOWN" | "LOADING" | "MASTERDOWN") => Next::Wait,
            Some("READONLY") => {
                self.refresh_soon();
                Next::Wait
            }
            _ => {
                if broken(&e) {
                    self.forget(url, cell);
                }
                if e.is_io_error() || e.is_unrecoverable_error() {
                    self.refresh_soon();
                }
                Next::Done(Err(e))
            }
        }
    }

    /// The first seed: node URLs take its scheme, credentials and settings.
    fn template(&self) -> &str {
        self.inner
            .settings
            .seeds
            .first()
            .map_or("redis://", String::as_str)
    }

    fn owner(&self, slot: Option<u16>) -> Option<Arc<str>> {
        let map = self.inner.map.load();
        let i = match slot {
            Some(slot) => usize::from(*map.owners.get(usize::from(slot))?),
            None => 0,
        };
        map.masters.get(i).cloned()
    }

    fn set_owner(&self, slot: u16, url: &str) {
        self.inner.map.rcu(|map| {
            if map.owner(slot) == Some(url) {
                return Arc::clone(map);
            }
            map.with_owner(slot, url)
                .map_or_else(|| Arc::clone(map), Arc::new)
        });
    }

    fn cell(&self, url: &str) -> NodeCell {
        let mut nodes = lock(&self.inner.nodes);
        match nodes.get(url) {
            Some(cell) => Arc::clone(cell),
            None => Arc::clone(nodes.entry(url.to_owned()).or_default()),
        }
    }

    /// The line that times the calls to `url`.
    fn line(&self, url: &str) -> Arc<Line> {
        let mut lines = lock(&self.inner.lines);
        match lines.get(url) {
            Some(line) => Arc::clone(line),
            None => {
                let line = self.inner.settings.wire.line();
                lines.insert(url.to_owned(), Arc::clone(&line));
                line
            }
        }
    }

    /// Drops `cell`, the connection to `url`, so that the next call connects afresh (unless
    /// another call has already replaced it).
    fn forget(&self, url: &str, cell: &NodeCell) {
        let mut nodes = lock(&self.inner.nodes);
        if nodes
            .get(url)
            .is_some_and(|current| Arc::ptr_eq(current, cell))
        {
            nodes.remove(url);
        }
    }

    /// Connects to `url` on the home runtime, where the connection's driver task then lives.
    /// The connection goes into `cell` even if the call that asked for it has given up (a map
    /// re-read that another node answered first), so it is not made again.
    async fn connect_node(
        &self,
        url: String,
        cell: std::sync::Weak<OnceCell<MultiplexedConnection>>,
    ) -> Result<MultiplexedConnection, RedisError> {
        let settings = self.inner.settings.clone();
        let connect = move || {
            let (settings, url, cell) = (settings.clone(), url.clone(), cell.clone());
            async move {
                let client = match settings.certs {
                    Some(certs) => redis::Client::build_with_tls(url.as_str(), certs)?,
                    None => redis::Client::open(url.as_str())?,
                };
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(settings.connect_timeout))
                    .set_response_timeout(Some(settings.response_timeout));
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                // Fails, harmlessly, while the asking call is still waiting: it fills the cell.
                if let Some(cell) = cell.upgrade() {
                    let _ = cell.set(conn.clone());
                }
                Ok(conn)
            }
        };
        match self.inner.home.run(connect).await {
            Some(result) => result,
            None => Err(RedisError::from((
                redis::ErrorKind::Io,
                "no tokio runtime to connect on",
            ))),
        }
    }

    /// Re-reads the slot map in the background unless a re-read is running or waiting; at most
    /// one every [`REFRESH_INTERVAL`].
    fn refresh_soon(&self) {
        if self.inner.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        // One guard clears the flag, however the re-read ends: it travels to the task, comes
        // back if no runtime takes the task, and is dropped with a task its runtime drops.
        let done = Refreshing(Arc::clone(&self.inner));
        let cluster = self.clone();
        let _ = self.inner.home.start(done, move |mut go| {
            let cluster = cluster.clone();
            async move {
                let Some(_done) = go.recv().await else {
                    return;
                };
                let last = *lock(&cluster.inner.last_refresh);
                if let Some(last) = last {
                    tokio::time::sleep_until(last + REFRESH_INTERVAL).await;
                }
                if let Err(e) = cluster.refresh().await {
                    tracing::warn!(error = %e, "tollgate: re-reading the cluster's slot map failed");
                }
            }
        });
    }

    /// Reads the slot map from the first node to answer, asking the known masters and the
    /// seeds all at once (a paused node must not hold up the others).
    async fn refresh(&self) -> Result<(), RedisError> {
        *lock(&self.inner.last_refresh) = Some(tokio::time::Instant::now());
        let mut candidates = self.masters();
        for seed in &self.inner.seeds {
            if !candidates.iter().any(|m| **m == **seed) {
                candidates.push(seed.as_str().into());
            }
        }
        if candidates.is_empty() {
            return Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "no seed nodes",
            )));
        }
        let asks = candidates.iter().map(|url| Box::pin(self.read_map(url)));
        let (map, _) = futures::future::select_ok(asks).await?;
        // Connections to nodes that left the map (and are not seeds) are closed.
        let seeds = &self.inner.seeds;
        let kept = |url: &String| map.masters.iter().any(|m| **m == **url) || seeds.contains(url);
        lock(&self.inner.nodes).retain(|url, _| kept(url));
        lock(&self.inner.lines).retain(|url, _| kept(url));
        self.inner.map.store(Arc::new(map));
        Ok(())
    }

    /// The slot map as node `url` sees it.
    async fn read_map(&self, url: &str) -> Result<SlotMap, RedisError> {
        let timeout = self.inner.settings.response_timeout;
        let ask = async {
            let (mut conn, cell) = self.connection_and_cell(url).await?;
            let reply: Value = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async(&mut conn)
                .await
                .inspect_err(|e| {
                    if broken(e) {
                        self.forget(url, &cell);
                    }
                })?;
            parse_slots(&reply, self.template(), url)
        };
        tokio::time::timeout(timeout, ask)
            .await
            .unwrap_or_else(|_| Err(timed_out(timeout)))
    }
}

/// Whether `e` leaves its connection unusable (the node closed it, or was killed), so that the
/// next call must connect afresh. A late reply (a paused node) does not: the connection
/// skips it when it comes.
fn broken(e: &RedisError) -> bool {
    (e.is_io_error() || e.is_unrecoverable_error()) && !e.is_timeout()
}

/// Whether a connect error says the node is not there now (refused, no answer, no route), as
/// opposed to a setting that it refused (credentials, TLS, a name that resolves to nothing).
fn unreachable(e: &RedisError) -> bool {
    use std::io::ErrorKind::{AddrNotAvailable, HostUnreachable, NetworkDown, NetworkUnreachable};
    // redis-rs keeps an io error behind an `Arc<dyn Error>`, which is what `source` gives.
    type Shared = Arc<dyn std::error::Error + Send + Sync>;
    let io_kind = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<Shared>())
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    e.is_connection_refusal()
        || e.is_timeout()
        || e.is_connection_dropped()
        || matches!(
            io_kind,
            Some(HostUnreachable | NetworkUnreachable | NetworkDown | AddrNotAvailable)
        )
}

/// The error of a call that got no reply within `timeout` (a timeout, for `store_error`).
fn timed_out(timeout: Duration) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no reply from the cluster within {timeout:?}"),
    ))
}

/// Clears the re-read flag when the re-read ends, however it ends.
struct Refreshing(Arc<Inner>);

impl Drop for Refreshing {
    fn drop(&mut self) {
        self.0.refreshing.store(false, Ordering::Release);
    }
}

/// Locks `m`; a panic elsewhere while it was held leaves nothing half-done in these maps.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits `backoff` and answers the next one.
async fn pause(backoff: Duration) -> Duration {
    tokio::time::sleep(backoff).await;
    (backoff * 2).min(BACKOFF_MAX)
}

/// The slot of `cmd`'s first key: `EVAL`/`EVALSHA`'s first key, or any other command's first
/// argument. `None` for commands without keys (`CLUSTER`, `SCRIPT`, scripts with no keys).
fn command_slot(cmd: &Cmd) -> Option<u16> {
    let mut args = cmd.args_iter().map(|a| match a {
        redis::Arg::Simple(bytes) => bytes,
        _ => &[][..],
    });
    let name = args.next()?;
    let is = |names: &[&[u8]]| names.iter().any(|n| name.eq_ignore_ascii_case(n));
    let key = if is(&[b"EVAL", b"EVALSHA"]) {
        let _script = args.next()?;
        let nkeys: u64 = std::str::from_utf8(args.next()?).ok()?.parse().ok()?;
        if nkeys == 0 {
            return None;
        }
        args.next()?
    } else if is(&[b"CLUSTER", b"SCRIPT", b"PING", b"INFO", b"TIME"]) {
        return None;
    } else {
        args.next()?
    };
    Some(keys::key_slot(key))
}

/// A node's URL: `template`'s scheme, credentials and settings (the path, query and fragment,
/// such as `#insecure`) with `node`'s host and port. `node` is `host:port`; an empty or unknown
/// (`?`) host means the host of `asked`, the node that named it.
fn node_url(template: &str, node: &str, asked: &str) -> String {
    let (host, port) = node.rsplit_once(':').unwrap_or((node, ""));
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() || host == "?" {
        url_host(asked)
    } else {
        host
    };
    let scheme_end = template.find("://").map_or(0, |i| i + 3);
    let rest = &template[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let creds = rest[..authority_end]
        .rfind('@')
        .map_or("", |at| &rest[..=at]);
    let settings = match &rest[authority_end..] {
        "" => "/",
        s => s,
    };
    let scheme = &template[..scheme_end];
    if host.contains(':') {
        format!("{scheme}{creds}[{host}]:{port}{settings}")
    } else {
        format!("{scheme}{creds}{host}:{port}{settings}")
    }
}

/// The `host:port` of a `redis://[user:pass@]host:port[/db][?query][#fragment]` URL.
fn url_authority(url: &str) -> &str {
    let rest = url.find("://").map_or(url, |i| &url[i + 3..]);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    authority
        .rfind('@')
        .map_or(authority, |at| &authority[at + 1..])
}

/// `authority` (`host[:port]`) with Redis's default port if it has none.
fn with_port(authority: &str) -> String {
    if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:6379")
    } else {
        authority.to_owned()
    }
}

/// The host of a `redis://` URL (without brackets).
fn url_host(url: &str) -> &str {
    let authority = url_authority(url);
    if let Some(bracketed) = authority.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or(bracketed);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// The slot map in a `CLUSTER SLOTS` reply from `asked`; node URLs are made from `template`.
fn parse_slots(reply: &Value, template: &str, asked: &str) -> Result<SlotMap, RedisError> {
    let bad = |what: &str| {
        RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "unexpected CLUSTER SLOTS reply",
            what.to_owned(),
        ))
    };
    let Value::Array(ranges) = reply else {
        return Err(bad("not an array"));
    };
    let mut map = SlotMap::empty();
    for range in ranges {
        let Value::Array(parts) = range else {
            return Err(bad("a range is not an array"));
        };
        let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(master))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            return Err(bad("a range lacks its slots or master"));
        };
        // A nil host is an unknown endpoint: the node that answered.
        let host = match master.first() {
            Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
            Some(Value::SimpleString(h)) => h.clone(),
            Some(Value::Nil) => String::new(),
            _ => return Err(bad("a master has no host")),
        };
        let Some(Value::Int(port)) = master.get(1) else {
            return Err(bad("a master has no port"));
        };
        let url = node_url(template, &format!("{host}:{port}"), asked);
        let index = match map.masters.iter().position(|m| **m == *url) {
            Some(i) => i,
            None => {
                map.masters.push(url.into());
                map.masters.len() - 1
            }
        };
        let index = u16::try_from(index).map_err(|_| bad("too many masters"))?;
        let (Ok(first), Ok(last)) = (usize::try_from(*first), usize::try_from(*last)) else {
            return Err(bad("a negative slot"));
        };
        if first > last || last >= SLOTS {
            return Err(bad("a slot out of range"));
        }
        for owner in &mut map.owners[first..=last] {
            *owner = index;
        }
    }
    if map.masters.is_empty() {
        return Err(bad("no slots are served"));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "rediss://user:pw@10.0.0.1:7000";

    #[test]
    fn node_urls_keep_the_seeds_scheme_credentials_and_settings() {
        let asked = "rediss://user:pw@10.0.0.1:7000";
        // An unknown endpoint (`:port`, `?:port`) is on the host that named it.
        for (node, url) in [
            ("10.0.0.2:7001", "rediss://user:pw@10.0.0.2:7001/"),
            (":7002", "rediss://user:pw@10.0.0.1:7002/"),
            ("?:7002", "rediss://user:pw@10.0.0.1:7002/"),
            ("::1:7003", "rediss://user:pw@[::1]:7003/"),
        ] {
            assert_eq!(node_url(TEMPLATE, node, asked), url, "{node}");
        }
        // The seed's settings (TLS mode, protocol) hold for every node.
        assert_eq!(
            node_url(
                "rediss://h:7000/?protocol=resp3#insecure",
                "10.0.0.5:7005",
                asked
            ),
            "rediss://10.0.0.5:7005/?protocol=resp3#insecure"
        );
        assert_eq!(
            node_url("redis://:p@h:7000#insecure", "h2:1", asked),
            "redis://:p@h2:1#insecure"
        );
        assert_eq!(url_host("redis://[::1]:7000/0"), "::1");
        assert_eq!(url_host("redis://u:p@h:7000"), "h");
        assert_eq!(url_authority("redis://u:p@h:7000/0?x=1"), "h:7000");
        assert_eq!(with_port("h"), "h:6379");
        assert_eq!(with_port("[::1]"), "[::1]:6379");
        assert_eq!(with_port("[::1]:7000"), "[::1]:7000");
        // A seed and a master read from the map are one URL, so they share a connection.
        let seed = "redis://127.0.0.1:7000";
        assert_eq!(
            node_url(seed, url_authority(seed), seed),
            node_url(seed, "127.0.0.1:7000", "redis://10.9.9.9:1/")
        );
    }

    #[test]
    fn only_an_absent_node_is_retried() {
        let io = |kind| RedisError::from(std::io::Error::from(kind));
        assert!(unreachable(&io(std::io::ErrorKind::ConnectionRefused)));
        assert!(unreachable(&io(std::io::ErrorKind::TimedOut)));
        assert!(unreachable(&io(std::io::ErrorKind::HostUnreachable)));
        // A TLS handshake that fails (rustls reports InvalidData) or a wrong password does not.
        assert!(!unreachable(&io(std::io::ErrorKind::InvalidData)));
        let auth = RedisError::from((redis::ErrorKind::AuthenticationFailed, "WRONGPASS"));
        assert!(!unreachable(&auth));
    }

    #[test]
    fn commands_route_by_their_first_key() {
        let eval = redis::cmd("evalsha")
            .arg("abc")
            .arg(2)
            .arg("p:{t}:a")
            .arg("p:{t}:b")
            .to_owned();
        assert_eq!(command_slot(&eval), Some(keys::key_slot(b"t")));
        let no_keys = redis::cmd("EVAL").arg("return 1").arg(0).to_owned();
        assert_eq!(command_slot(&no_keys), None);
        let del = redis::cmd("DEL").arg("k").to_owned();
        assert_eq!(command_slot(&del), Some(keys::key_slot(b"k")));
        let slots = redis::cmd("CLUSTER").arg("SLOTS").to_owned();
        assert_eq!(command_slot(&slots), None);
    }

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn cluster_slots_replies_become_a_slot_map() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(99),
                node("10.0.0.1", 7000),
                node("10.0.0.4", 7003),
            ]),
            Value::Array(vec![Value::Int(100), Value::Int(8_000), node("", 7001)]),
            Value::Array(vec![
                Value::Int(8_001),
                Value::Int(16_383),
                Value::Array(vec![Value::Nil, Value::Int(7002)]),
            ]),
        ]);
        let map = parse_slots(&reply, TEMPLATE, "rediss://user:pw@10.0.0.9:7000/").unwrap();
        assert_eq!(map.owner(0), Some("rediss://user:pw@10.0.0.1:7000/"));
        assert_eq!(map.owner(99), Some("rediss://user:pw@10.0.0.1:7000/"));
        assert_eq!(map.owner(100), Some("rediss://user:pw@10.0.0.9:7001/"));
        assert_eq!(map.owner(8_000), Some("rediss://user:pw@10.0.0.9:7001/"));
        // A nil host (an unknown endpoint) is the node that answered.
        assert_eq!(map.owner(16_383), Some("rediss://user:pw@10.0.0.9:7002/"));
        assert_eq!(map.masters.len(), 3, "replicas are not masters");
        let moved = map
            .with_owner(5, "rediss://user:pw@10.0.0.9:7001/")
            .unwrap();
        assert_eq!(moved.owner(5), Some("rediss://user:pw@10.0.0.9:7001/"));
        assert_eq!(moved.owner(4), Some("rediss://user:pw@10.0.0.1:7000/"));
    }

    #[test]
    fn malformed_cluster_slots_replies_are_errors() {
        let out_of_range = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(16_384),
            node("h", 1),
        ])]);
        assert!(parse_slots(&out_of_range, TEMPLATE, "redis://h:1").is_err());
        assert!(parse_slots(&Value::Int(3), TEMPLATE, "redis://h:1").is_err());
        assert!(parse_slots(&Value::Array(vec![]), TEMPLATE, "redis://h:1").is_err());
    }
}
