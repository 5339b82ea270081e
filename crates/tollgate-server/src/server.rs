//! Running the service: the store chosen once, the listeners, reloads and shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tollgate::store::fallback::{FallbackConfig, FallbackStore};
use tollgate::store::redis::{redact, RedisConfig, RedisStore};
use tollgate::store::Store;
use tollgate::{Clock, MemoryStore, SystemClock};

use crate::app::App;
use crate::config::{Config, ConfigError, RedisOptions, StoreConfig};
use crate::conn::Connections;
use crate::reload::Reloader;
use crate::shutdown::stopped;
use crate::store::ServedStore;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The Redis setting is wrong in a way that waiting will not fix (a wrong password, a
    /// database that does not exist, a host name that does not resolve).
    #[error(
        "redis {target}: {reason}. This will not fix itself, so tollgate does not start \
         (a Redis that is only down lets it start degraded)"
    )]
    Misconfigured {
        /// The store, credentials redacted.
        target: String,
        /// What is wrong.
        reason: String,
    },
    /// The gateway could not be set up (an upstream's CA file or TLS).
    #[error("gateway: {0}")]
    Gateway(#[from] tollgate_gateway::ClientError),
    /// The store could not be reached.
    #[error("store {target}: {source}")]
    Store {
        /// The store, credentials redacted.
        target: String,
        /// Why.
        source: tollgate::StoreError,
    },
}

/// What the running service offers its owner, whatever its store.
trait Control: Send + Sync {
    fn reload(&self) -> Result<u64, ConfigError>;
    fn sweep(&self) -> usize;
    fn sweep_buckets(&self) -> usize;
    fn permits_held(&self) -> usize;
    fn reload_errors(&self) -> u64;
}

struct Controlled<S: Store> {
    app: Arc<App<S>>,
    path: Option<PathBuf>,
    overrides: Overrides,
}

impl<S: ServedStore> Control for Controlled<S> {
    fn reload(&self) -> Result<u64, ConfigError> {
        let Some(path) = &self.path else {
            return Err(ConfigError {
                location: None,
                rule: None,
                field: "file".into(),
                message: "the service runs without a configuration file".into(),
            });
        };
        match Config::load(path)
            .and_then(|c| crate::reload::admissible(&c, &self.app.runtime_ref().config).map(|()| c))
        {
            Ok(mut c) => {
                c.path = Some(path.clone());
                self.overrides.apply(&mut c);
                let generation = self.app.apply(c);
                tracing::info!(generation, file = %path.display(), "configuration reloaded");
                Ok(generation)
            }
            Err(e) => {
                self.app.reload_failed();
                tracing::error!(error = %e, "configuration refused; the previous one stays");
                Err(e)
            }
        }
    }
    fn sweep(&self) -> usize {
        self.app.sweep()
    }
    fn sweep_buckets(&self) -> usize {
        sweep_buckets(&self.app)
    }
    fn permits_held(&self) -> usize {
        self.app.permits_held()
    }
    fn reload_errors(&self) -> u64 {
        self.app.reload_errors()
    }
}

/// A running service.
pub struct Running {
    /// The HTTP address it listens on.
    pub http: SocketAddr,
    /// The gRPC address, if enabled.
    pub grpc: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    control: Arc<dyn Control>,
    grace: Duration,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("http", &self.http)
            .field("grpc", &self.grpc)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// Reloads the configuration file now (as SIGHUP does). An invalid file is refused and
    /// the running configuration kept.
    ///
    /// # Errors
    /// The configuration's error.
    pub fn reload(&self) -> Result<u64, ConfigError> {
        self.control.reload()
    }

    /// Releases permits whose time is up now (the service also does this every second).
    pub fn sweep_permits(&self) -> usize {
        self.control.sweep()
    }

    /// Drops the buckets that have refilled now (the service also does this every
    /// [`BUCKET_SWEEP`]); how many.
    pub fn sweep_buckets(&self) -> usize {
        self.control.sweep_buckets()
    }

    /// Permits held.
    pub fn permits_held(&self) -> usize {
        self.control.permits_held()
    }

    /// Reloads refused so far.
    pub fn reload_errors(&self) -> u64 {
        self.control.reload_errors()
    }

    /// The HTTP base URL, such as `http://127.0.0.1:8080`.
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace period), and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let grace = self.grace;
        let all = futures::future::join_all(self.tasks);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                ?grace,
                "in-flight requests did not finish within the grace period"
            );
        }
    }
}

/// How to start: a configuration and, for tests, a clock for the memory store and permits.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The configuration.
    pub config: Config,
    /// The clock of the memory store and of permit expiry (default: the system clock).
    pub clock: Option<Arc<dyn Clock>>,
    /// Watch the configuration file and reload when it changes (default on in `serve`).
    pub watch: bool,
    /// Command-line settings that win over the file's, at start and on every reload.
    pub overrides: Overrides,
}

/// Settings given on the command line (or in `TOLLGATE_*` variables), which win over the
/// configuration file's.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--http`.
    pub http: Option<SocketAddr>,
    /// `--grpc` (`Some(None)` for `off`).
    pub grpc: Option<Option<SocketAddr>>,
    /// `--redis` or `--redis-cluster`.
    pub store: Option<StoreConfig>,
    /// `--shadow`.
    pub shadow: bool,
    /// The store `REDIS_URL` names: used when neither the command line nor the file chose one.
    pub env_store: Option<StoreConfig>,
    /// The per-agent token bucket of `TOKEN_BUCKET_SIZE` / `TOKEN_REFILL_RATE`: the policy
    /// when the file gives no rules.
    pub env_policy: Option<tollgate::Policy>,
    /// `--upstream KIND=URL` (validated by the command line), added to the file's upstreams.
    pub upstreams: Vec<String>,
}

impl Overrides {
    /// Applies the overrides to `config`.
    pub fn apply(&self, config: &mut Config) {
        if let Some(h) = self.http {
            config.server.http = h;
        }
        if let Some(g) = self.grpc {
            config.server.grpc = g;
        }
        if let Some(s) = &self.store {
            // A URL from the command line keeps the file's Redis settings.
            let options = match &config.store {
                StoreConfig::Redis { options, .. } | StoreConfig::RedisCluster { options, .. } => {
                    Some(options.clone())
                }
                StoreConfig::Memory { .. } => None,
            };
            config.store = match (s.clone(), options) {
                (StoreConfig::Redis { url, .. }, Some(options)) => {
                    StoreConfig::Redis { url, options }
                }
                (StoreConfig::RedisCluster { nodes, .. }, Some(options)) => {
                    StoreConfig::RedisCluster { nodes, options }
                }
                (other, _) => other,
            };
        } else if let (false, Some(s)) = (config.store_given, &self.env_store) {
            config.store = s.clone();
        }
        if let (false, Some(p)) = (config.policy_given, &self.env_policy) {
            config.policy = p.clone().with_unmatched(config.policy.unmatched());
        }
        if self.shadow {
            config.server.shadow = true;
        }
        for u in &self.upstreams {
            if let Err(e) = config.gateway.add_upstream_arg(u) {
                tracing::error!("{e}");
            }
        }
    }
}

fn redis_config(o: &RedisOptions) -> RedisConfig {
    RedisConfig {
        prefix: o.prefix.clone(),
        connect_timeout: o.connect_timeout,
        response_timeout: o.response_timeout,
        ..RedisConfig::default()
    }
}

/// Opens the configured store and starts the service on it. This is the one place that
/// knows every kind of store.
///
/// # Errors
/// A store that cannot be reached, or a listener that cannot be bound.
pub async fn start(mut opts: Options) -> Result<Running, StartError> {
    opts.overrides.apply(&mut opts.config);
    let clock: Arc<dyn Clock> = opts
        .clock
        .clone()
        .unwrap_or_else(|| Arc::new(SystemClock::new()));
    match opts.config.store.clone() {
        StoreConfig::Memory { max_buckets } => {
            let mut b = MemoryStore::builder().shared_clock(Arc::clone(&clock));
            if let Some(n) = max_buckets {
                b = b.max_buckets(n);
            }
            start_with(opts, b.build(), clock, "memory").await
        }
        StoreConfig::Redis { url, options } => {
            open_redis(opts, clock, vec![url], false, options).await
        }
        StoreConfig::RedisCluster { nodes, options } => {
            open_redis(opts, clock, nodes, true, options).await
        }
    }
}

async fn open_redis(
    opts: Options,
    clock: Arc<dyn Clock>,
    nodes: Vec<String>,
    cluster: bool,
    options: RedisOptions,
) -> Result<Running, StartError> {
    let kind = if cluster { "redis-cluster" } else { "redis" };
    let mut config = redis_config(&options);
    for node in &nodes {
        match crate::preflight::check(node, options.connect_timeout).await {
            crate::preflight::Preflight::Misconfigured(reason) => {
                return Err(StartError::Misconfigured {
                    target: redact(node),
                    reason,
                })
            }
            crate::preflight::Preflight::Down(why) => {
                tracing::warn!(redis = %redact(node), error = %why, "Redis does not answer yet");
            }
            crate::preflight::Preflight::Ready => {}
        }
    }
    if options.fallback {
        let fallback = FallbackConfig {
            deadline: options.deadline,
            max_wait: options.max_wait,
            expected_instances: options.instances,
            ..FallbackConfig::default()
        };
        // The fallback finds a Redis that stops answering by its silence; a slow answer from a
        // Redis that keeps answering (a busy host) is waited for, up to the fallback's bound.
        config.response_timeout = config.response_timeout.max(fallback.max_wait);
        // Connects in the background: the service starts while Redis is down, and the
        // rules' failure modes decide until it answers.
        let primary = RedisStore::connect_lazy(&nodes, cluster, config);
        let store = FallbackStore::with_config(primary, fallback, Arc::clone(&clock));
        return start_with(opts, store, clock, kind).await;
    }
    let target = nodes
        .iter()
        .map(|n| redact(n))
        .collect::<Vec<_>>()
        .join(",");
    let store = if cluster {
        RedisStore::connect_cluster(&nodes, config).await
    } else {
        RedisStore::connect_with(nodes.first().map_or("", String::as_str), config).await
    }
    .map_err(|source| StartError::Store { target, source })?;
    start_with(opts, store, clock, kind).await
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Starts the service over `store`.
///
/// # Errors
/// A listener that cannot be bound.
pub async fn start_with<S: ServedStore>(
    opts: Options,
    store: S,
    clock: Arc<dyn Clock>,
    kind: &'static str,
) -> Result<Running, StartError> {
    // Metrics first: tollgate records from its first decision.
    let _ = crate::telemetry::prometheus();
    let config = opts.config;
    let overrides = opts.overrides;
    let path = config.path.clone();
    let server = config.server.clone();
    if !config.auth.enabled() {
        tracing::warn!("no tokens configured: the API is open to every caller (reset included)");
    }
    let gateway = config.gateway.clone();
    let app = Arc::new(App::new(config, store, Arc::clone(&clock), kind));
    let (tx, rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let http_listener = bind(server.http).await?;
    let http = http_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: server.http,
            source,
        })?;
    let router = crate::http::router(Arc::clone(&app), server.max_body_bytes);
    // One connection cap for both listeners: they share the process's descriptors.
    let conns = Arc::new(Connections::new(&server));
    // The gateway's provider paths and /v1/estimate, with their own body limit.
    let router = router.merge(
        tollgate_gateway::Gateway::new(
            gateway,
            app.limiter().clone(),
            app.limiter().store().clone(),
            clock,
        )?
        .router(),
    );
    let stop = stopped(rx.clone());
    tasks.push(tokio::spawn(crate::http::serve(
        http_listener,
        router,
        Arc::clone(&conns),
        stop,
    )));

    let grpc = match server.grpc {
        None => None,
        Some(addr) => {
            let listener = bind(addr).await?;
            let local = listener
                .local_addr()
                .map_err(|source| StartError::Bind { addr, source })?;
            tasks.push(crate::grpc::spawn(
                Arc::clone(&app),
                listener,
                Arc::clone(&conns),
                rx.clone(),
            ));
            Some(local)
        }
    };

    let control: Arc<dyn Control> = Arc::new(Controlled {
        app: Arc::clone(&app),
        path: path.clone(),
        overrides,
    });

    // Subject limits set at run time: in step with Redis (other instances' settings).
    {
        let relayer = Arc::clone(&app);
        crate::subject_limits::spawn_refresh(
            Arc::clone(app.settings()),
            move || relayer.relayer(),
            stopped(rx.clone()),
        );
    }

    // Expire abandoned permits.
    {
        let app = Arc::clone(&app);
        let stop = stopped(rx.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = tick.tick() => { app.sweep(); }
                    () = &mut stop => break,
                }
            }
        });
    }

    // Drop refilled buckets, off the runtime's threads (a walk over every bucket).
    {
        let app = Arc::clone(&app);
        let stop = stopped(rx.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(BUCKET_SWEEP);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let app = Arc::clone(&app);
                        let _ = tokio::task::spawn_blocking(move || sweep_buckets(&app)).await;
                    }
                    () = &mut stop => break,
                }
            }
        });
    }

    // Reload on SIGHUP, and on file changes when watching.
    if path.is_some() {
        crate::reload::spawn(
            Arc::clone(&control_reloader(&control)),
            path,
            opts.watch,
            rx,
        );
    }

    let grpc_shown = grpc.map_or_else(|| "off".to_owned(), |a| a.to_string());
    tracing::info!(
        %http,
        grpc = %grpc_shown,
        store = kind,
        max_connections = conns.cap(),
        "tollgate listening"
    );
    Ok(Running {
        http,
        grpc,
        shutdown: tx,
        tasks,
        control,
        grace: server.shutdown_grace,
    })
}

/// How often the service drops the buckets that have refilled.
pub const BUCKET_SWEEP: Duration = Duration::from_secs(10);

/// Drops the store's refilled buckets, counting them as the memory store's own sweeps do.
fn sweep_buckets<S: ServedStore>(app: &App<S>) -> usize {
    let n = app.limiter().store().sweep_idle();
    if n > 0 {
        metrics::counter!("tollgate_memory_evicted_total")
            .increment(u64::try_from(n).unwrap_or(u64::MAX));
    }
    n
}

fn control_reloader(control: &Arc<dyn Control>) -> Reloader {
    let c = Arc::clone(control);
    Arc::new(move || c.reload())
}

/// Waits for SIGTERM or ctrl-c.
pub async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("ctrl-c: shutting down"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("ctrl-c: shutting down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_url_from_the_command_line_keeps_the_files_settings() {
        let mut c = Config::from_toml(
            "[redis]\nurl = \"redis://a:1\"\nprefix = \"p\"\ndeadline = \"2s\"\n",
            "t.toml",
        )
        .unwrap();
        let o = Overrides {
            store: Some(StoreConfig::Redis {
                url: "redis://b:2".into(),
                options: RedisOptions::default(),
            }),
            shadow: true,
            ..Overrides::default()
        };
        o.apply(&mut c);
        let StoreConfig::Redis { url, options } = &c.store else {
            panic!("{:?}", c.store)
        };
        assert_eq!(
            (url.as_str(), options.prefix.as_str()),
            ("redis://b:2", "p")
        );
        assert_eq!(options.deadline, Duration::from_secs(2));
        assert!(c.server.shadow);
    }
}
