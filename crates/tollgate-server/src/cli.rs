//! The command line: `tollgate serve`, `tollgate config check`, the clients of a running
//! service (`check`, `peek`, `usage`, `reset`) and the load generator (`bench`). Every flag can
//! also be given as a `TOLLGATE_*` environment variable; `--help` never shows their values
//! (they may hold credentials).
//!
//! `serve` also reads the variables other rate limiters are run with (see [`tollgate::env`]):
//! `REDIS_URL` picks the Redis store when neither the command line nor the file picks a store,
//! and `TOKEN_BUCKET_SIZE` / `TOKEN_REFILL_RATE` give every agent a token bucket when the file
//! has no rules.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use tollgate::env::EnvConfig;

use crate::config::{Config, StoreConfig};

pub use crate::args::{
    ClearLimitsArgs, ClientOpts, DecisionArgs, LimitsCommand, ResetArgs, SetLimitsArgs,
    SubjectArgs, SubjectsArgs, UsageArgs,
};
use crate::server::{self, Options, Overrides};
use crate::telemetry::{init_logs, LogFormat};

/// tollgate: a rate limiter for AI inference traffic.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (HTTP JSON API and Envoy gRPC rate limit service).
    Serve(ServeArgs),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Ask a running service for a decision, spending the cost if allowed.
    Check(DecisionArgs),
    /// Ask a running service what it would decide, spending nothing.
    Peek(DecisionArgs),
    /// Show how much of each applicable limit is used.
    Usage(UsageArgs),
    /// Forget buckets (needs the admin token).
    Reset(ResetArgs),
    /// List the subjects of a rule with live buckets, with their usage (admin token).
    Subjects(SubjectsArgs),
    /// Set, remove or list one subject's own limits while the service runs (admin token).
    #[command(subcommand)]
    Limits(LimitsCommand),
    /// Generate load against a running service and report decisions/s and latency.
    Bench(crate::bench::BenchArgs),
}

/// `tollgate serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML). Without one: the default policy and the memory store.
    #[arg(long, short, env = "TOLLGATE_CONFIG", hide_env_values = true)]
    pub config: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:8080]; `:8080` listens on every interface.
    #[arg(long, env = "TOLLGATE_HTTP", hide_env_values = true, value_parser = listen_addr)]
    pub http: Option<SocketAddr>,
    /// gRPC listen address, or `off` [default: 127.0.0.1:8081].
    #[arg(long, env = "TOLLGATE_GRPC", hide_env_values = true)]
    pub grpc: Option<String>,
    /// Keep the buckets in this Redis server (redis:// or rediss:// URL). Wins over the
    /// configuration file's store, which wins over REDIS_URL.
    #[arg(
        long,
        env = "TOLLGATE_REDIS",
        hide_env_values = true,
        conflicts_with = "redis_cluster"
    )]
    pub redis: Option<String>,
    /// A Redis Cluster seed node (repeat, or comma-separate in the environment variable).
    #[arg(
        long = "redis-cluster",
        env = "TOLLGATE_REDIS_CLUSTER",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub redis_cluster: Vec<String>,
    /// Shadow mode for every rule: count denials, admit everything.
    #[arg(long, env = "TOLLGATE_SHADOW", hide_env_values = true)]
    pub shadow: bool,
    /// Do not reload when the configuration file changes (SIGHUP still reloads).
    #[arg(long, env = "TOLLGATE_NO_WATCH", hide_env_values = true)]
    pub no_watch: bool,
    /// Log format.
    #[arg(long, env = "TOLLGATE_LOG_FORMAT", hide_env_values = true, value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
    /// Log level or filter (`info`, `tollgate_server=debug`); RUST_LOG wins when set.
    #[arg(
        long,
        env = "TOLLGATE_LOG_LEVEL",
        hide_env_values = true,
        default_value = "info"
    )]
    pub log_level: String,
    /// Relay a model provider's API (the gateway): `openai=URL` or `anthropic=URL`, with the
    /// provider's base URL as its SDK takes it (repeatable; `NAME:KIND=URL` names it).
    #[arg(
        long = "upstream",
        env = "TOLLGATE_UPSTREAM",
        hide_env_values = true,
        value_delimiter = ',',
        value_name = "KIND=URL"
    )]
    pub upstreams: Vec<String>,
    /// Threads that answer requests [default: one per CPU core].
    #[arg(long, env = "TOLLGATE_WORKERS", hide_env_values = true, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
}

/// `tollgate config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file; every error names the file, line and field.
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Convert envoyproxy/ratelimit YAML configuration (one domain per file) to tollgate
    /// TOML on standard output; what cannot be carried is refused with its file and line.
    ImportEnvoy {
        /// The YAML files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    crate::config::parse_listen_addr(s).ok_or_else(|| crate::config::listen_addr_error(s))
}

/// Runs the command line. `main` only parses the arguments and calls this.
pub fn run(cli: Cli) -> ExitCode {
    if let Command::Config(ConfigCommand::Check { file }) = &cli.command {
        return config_check(file);
    }
    if let Command::Config(ConfigCommand::ImportEnvoy { files }) = &cli.command {
        return import_envoy(files);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    let workers = match &cli.command {
        Command::Serve(a) => a.workers,
        Command::Bench(a) => a.workers,
        _ => Some(1),
    };
    if let Some(n) = workers {
        builder.worker_threads(usize::from(n));
    }
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tollgate: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(a) => serve(a).await,
            Command::Config(_) => ExitCode::SUCCESS,
            Command::Check(a) => crate::client::decision(a, true).await,
            Command::Peek(a) => crate::client::decision(a, false).await,
            Command::Usage(a) => crate::client::usage(a).await,
            Command::Reset(a) => crate::client::reset(a).await,
            Command::Limits(c) => crate::client::limits(c).await,
            Command::Subjects(a) => crate::client::subjects(a).await,
            Command::Bench(a) => crate::bench::run(a).await,
        }
    })
}

fn import_envoy(files: &[PathBuf]) -> ExitCode {
    let mut read = Vec::with_capacity(files.len());
    for f in files {
        match std::fs::read_to_string(f) {
            Ok(text) => read.push((f.display().to_string(), text)),
            Err(e) => {
                eprintln!("tollgate: cannot read {}: {e}", f.display());
                return ExitCode::from(2);
            }
        }
    }
    match crate::envoy_import::import(&read) {
        Ok(toml) => {
            // What is written must load: a failure here is tollgate's, not the input's.
            if let Err(e) = Config::from_toml(&toml, "(converted)") {
                eprintln!("tollgate: the converted configuration does not load: {e}");
                return ExitCode::from(2);
            }
            print!("{toml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

fn config_check(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(c) => {
            for w in c.warnings() {
                eprintln!("{}: warning: {w}", file.display());
            }
            let store = match &c.store {
                StoreConfig::Memory { .. } => "memory".to_owned(),
                StoreConfig::Redis { url, .. } => {
                    format!("redis {}", tollgate::store::redis::redact(url))
                }
                StoreConfig::RedisCluster { nodes, .. } => {
                    format!("redis cluster ({} seed nodes)", nodes.len())
                }
            };
            println!(
                "{}: ok: {} rules ({} in shadow mode), store {store}, http {}, grpc {}, auth {}",
                file.display(),
                c.policy.rules().len(),
                if c.server.shadow {
                    c.policy.rules().len()
                } else {
                    c.shadow_rules.len()
                },
                c.server.http,
                c.server
                    .grpc
                    .map_or_else(|| "off".to_owned(), |a| a.to_string()),
                if c.auth.enabled() {
                    format!(
                        "{} client tokens{}",
                        c.auth.clients.len(),
                        if c.auth.admin_token.is_some() {
                            " and an admin token"
                        } else {
                            ""
                        }
                    )
                } else {
                    "open".to_owned()
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The command line's settings, and the environment's (which lose to the file's).
fn overrides(a: &ServeArgs, env: &EnvConfig) -> Result<Overrides, String> {
    let grpc = match a.grpc.as_deref() {
        None => None,
        Some("off") => Some(None),
        Some(s) => Some(Some(crate::config::parse_listen_addr(s).ok_or_else(
            || format!("--grpc: {s:?} is not an address like 127.0.0.1:8081 or :8081, or off"),
        )?)),
    };
    let check = |u: &str, flag: &str| {
        if u.starts_with("redis://") || u.starts_with("rediss://") {
            Ok(u.to_owned())
        } else {
            Err(format!(
                "{flag}: {:?} is not a redis:// or rediss:// URL",
                tollgate::store::redis::redact(u)
            ))
        }
    };
    let store = if let Some(u) = &a.redis {
        Some(StoreConfig::Redis {
            url: check(u, "--redis")?,
            options: Default::default(),
        })
    } else if !a.redis_cluster.is_empty() {
        Some(StoreConfig::RedisCluster {
            nodes: a
                .redis_cluster
                .iter()
                .map(|u| check(u, "--redis-cluster"))
                .collect::<Result<_, _>>()?,
            options: Default::default(),
        })
    } else {
        None
    };
    let env_store = match &env.redis_url {
        Some(u) => Some(StoreConfig::Redis {
            url: check(u, tollgate::env::REDIS_URL)?,
            options: Default::default(),
        }),
        None => None,
    };
    let mut scratch = tollgate_gateway::config::GatewayConfig::default();
    for u in &a.upstreams {
        scratch.add_upstream_arg(u)?;
    }
    Ok(Overrides {
        upstreams: a.upstreams.clone(),
        http: a.http,
        grpc,
        store,
        shadow: a.shadow,
        env_store,
        env_policy: env.policy.clone(),
    })
}

/// Where the store and the policy come from, in order of precedence (the first that is set
/// wins): for the store, `--redis` / `--redis-cluster` (or `TOLLGATE_REDIS` /
/// `TOLLGATE_REDIS_CLUSTER`), the file's `[redis]` or `[memory]`, `REDIS_URL`, the memory
/// store; for the policy, the file's `[[rules]]`, `TOKEN_BUCKET_SIZE` / `TOKEN_REFILL_RATE`,
/// the built-in policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sources {
    /// What chose the store.
    pub store: &'static str,
    /// What chose the policy.
    pub policy: &'static str,
    /// Variables that are set but lose to a setting of higher precedence.
    pub ignored: [Option<&'static str>; 2],
}

/// Where `file`'s store and policy come from once `o` is applied (see [`Sources`]).
pub fn sources(file: &Config, o: &Overrides) -> Sources {
    let store = if o.store.is_some() {
        "the command line (--redis, --redis-cluster or TOLLGATE_REDIS*)"
    } else if file.store_given {
        "the configuration file"
    } else if o.env_store.is_some() {
        tollgate::env::REDIS_URL
    } else {
        "the default (memory)"
    };
    let policy = if file.policy_given {
        "the configuration file"
    } else if o.env_policy.is_some() {
        "TOKEN_BUCKET_SIZE and TOKEN_REFILL_RATE"
    } else {
        "the built-in policy"
    };
    Sources {
        store,
        policy,
        ignored: [
            (o.env_store.is_some() && store != tollgate::env::REDIS_URL)
                .then_some(tollgate::env::REDIS_URL),
            (o.env_policy.is_some() && file.policy_given)
                .then_some("TOKEN_BUCKET_SIZE and TOKEN_REFILL_RATE"),
        ],
    }
}

/// Reports why `serve` cannot start, once: in the log (plain or JSON, as configured), or on
/// stderr when the log filter hides errors.
fn startup_error(e: &dyn std::fmt::Display) {
    if tracing::enabled!(tracing::Level::ERROR) {
        tracing::error!("{e}");
    } else {
        eprintln!("tollgate: {e}");
    }
}

async fn serve(a: ServeArgs) -> ExitCode {
    init_logs(a.log_format, &a.log_level);
    let env = match EnvConfig::read() {
        Ok(env) => env,
        Err(e) => {
            startup_error(&e);
            return ExitCode::from(2);
        }
    };
    let overrides = match overrides(&a, &env) {
        Ok(o) => o,
        Err(e) => {
            startup_error(&e);
            return ExitCode::from(2);
        }
    };
    let config = match &a.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                startup_error(&e);
                return ExitCode::FAILURE;
            }
        },
        None => Config::default(),
    };
    let from = sources(&config, &overrides);
    tracing::info!(
        store = from.store,
        policy = from.policy,
        "configuration sources"
    );
    for var in from.ignored.into_iter().flatten() {
        tracing::warn!(
            "{var} is set but not used: the store comes from {}, the policy from {}",
            from.store,
            from.policy
        );
    }
    let running = match server::start(Options {
        config,
        clock: None,
        watch: !a.no_watch,
        overrides,
    })
    .await
    {
        Ok(r) => r,
        Err(e) => {
            startup_error(&format_args!("cannot start: {e}"));
            return ExitCode::FAILURE;
        }
    };
    server::terminated().await;
    running.shutdown().await;
    tracing::info!("tollgate stopped");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn env(pairs: &[(&str, &str)]) -> EnvConfig {
        EnvConfig::from_vars(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .unwrap()
    }

    fn serve_args(args: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from(["tollgate", "serve"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Serve(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn effective(file: &str, args: &[&str], vars: &[(&str, &str)]) -> (Config, Sources) {
        let file = Config::from_toml(file, "t.toml").unwrap();
        let o = overrides(&serve_args(args), &env(vars)).unwrap();
        let from = sources(&file, &o);
        let mut c = file;
        o.apply(&mut c);
        (c, from)
    }

    fn url(c: &Config) -> Option<&str> {
        match &c.store {
            StoreConfig::Redis { url, .. } => Some(url),
            _ => None,
        }
    }

    const BUCKET: [(&str, &str); 2] = [("TOKEN_BUCKET_SIZE", "1000"), ("TOKEN_REFILL_RATE", "10")];

    #[test]
    fn redis_url_chooses_the_store_only_when_nothing_else_does() {
        let r = ("REDIS_URL", "redis://env:6379/0");
        let (c, from) = effective("", &[], &[r]);
        assert_eq!(
            (url(&c), from.store),
            (Some("redis://env:6379/0"), "REDIS_URL")
        );
        assert_eq!(from.ignored, [None, None]);

        let (c, from) = effective("", &["--redis", "redis://flag:1"], &[r]);
        assert_eq!(url(&c), Some("redis://flag:1"));
        assert_eq!(from.ignored[0], Some("REDIS_URL"));

        let (c, from) = effective("[redis]\nurl = \"redis://file:2\"\n", &[], &[r]);
        assert_eq!(url(&c), Some("redis://file:2"));
        assert_eq!(from.store, "the configuration file");
        assert_eq!(from.ignored[0], Some("REDIS_URL"));

        let (c, _) = effective("[memory]\nmax_buckets = 10\n", &[], &[r]);
        assert_eq!(url(&c), None, "an explicit [memory] wins over REDIS_URL");

        let (c, from) = effective("", &[], &[]);
        assert_eq!((url(&c), from.store), (None, "the default (memory)"));

        let bad = overrides(&serve_args(&[]), &env(&[("REDIS_URL", "rediss://:pw@h")]));
        assert!(bad.is_ok());
    }

    #[test]
    fn the_token_bucket_variables_replace_only_the_built_in_policy() {
        let (c, from) = effective("", &[], &BUCKET);
        assert_eq!(c.policy.rules()[0].name(), tollgate::env::TOKEN_BUCKET_RULE);
        assert_eq!(from.policy, "TOKEN_BUCKET_SIZE and TOKEN_REFILL_RATE");

        let file = "[[rules]]\nname = \"mine\"\nmatch = { tenant = \"*\" }\nlimits = [{ kind = \"requests\", amount = 1, per = \"minute\" }]\n";
        let (c, from) = effective(file, &[], &BUCKET);
        assert_eq!(c.policy.rules()[0].name(), "mine");
        assert_eq!(
            from.ignored[1],
            Some("TOKEN_BUCKET_SIZE and TOKEN_REFILL_RATE")
        );

        let (c, from) = effective("", &[], &[]);
        assert_eq!(c.policy.rules()[0].name(), "default");
        assert_eq!(from.policy, "the built-in policy");
    }

    #[test]
    fn help_never_shows_an_environment_value() {
        fn walk(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                if arg.get_env().is_some() {
                    assert!(
                        arg.is_hide_env_values_set(),
                        "{path} --{}: its environment value would be shown in --help",
                        arg.get_id()
                    );
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        walk(&Cli::command(), "tollgate");
    }
}
