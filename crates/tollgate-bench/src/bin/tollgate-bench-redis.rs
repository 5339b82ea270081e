//! `tollgate-bench-redis`: runs a command against a private Redis started for it, and stops
//! that Redis afterwards.
//!
//! ```text
//! tollgate-bench-redis [--cluster] [--] PROGRAM [ARGS...]
//! ```
//!
//! Starts one `redis-server` (or, with `--cluster`, a six-node Redis Cluster: three masters and
//! three replicas) on free loopback ports with persistence off, through `tollgate_test`, then
//! runs `PROGRAM ARGS...` with these variables set, waits for it, kills the servers and exits with
//! the program's status:
//!
//! - `TOLLGATE_BENCH_PORT`: the port of the server (of the first node for a cluster);
//! - `TOLLGATE_BENCH_URL`: its URL (`redis://127.0.0.1:PORT/`);
//! - `TOLLGATE_BENCH_REDIS_ARGS`: `--redis URL` for the server, or for every cluster node;
//! - `TOLLGATE_BENCH_PIDS`: the server process ids, separated by spaces.
//!
//! An argument `{redis}` is replaced by `--redis URL` for each node, so that
//! `tollgate-bench-redis --cluster tollgate-bench --cluster {redis}` needs no shell.

use std::process::{Command, ExitCode};

use tollgate_test::{RedisCluster, RedisServer};

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let cluster = args.first().is_some_and(|a| a == "--cluster");
    if cluster {
        args.remove(0);
    }
    if args.first().is_some_and(|a| a == "--") {
        args.remove(0);
    }
    if args.is_empty() || args[0] == "--help" || args[0] == "-h" {
        eprintln!("usage: tollgate-bench-redis [--cluster] [--] PROGRAM [ARGS...]");
        return ExitCode::from(2);
    }
    let (_server, _cluster, urls, pids) = if cluster {
        match RedisCluster::start() {
            Ok(c) => {
                let urls = c.urls();
                let pids = c
                    .nodes()
                    .iter()
                    .filter_map(RedisServer::pid)
                    .collect::<Vec<_>>();
                (None, Some(c), urls, pids)
            }
            Err(e) => {
                eprintln!("tollgate-bench-redis: cannot start a cluster: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        match RedisServer::start() {
            Ok(s) => {
                let urls = vec![s.url()];
                let pids = s.pid().into_iter().collect::<Vec<_>>();
                (Some(s), None, urls, pids)
            }
            Err(e) => {
                eprintln!("tollgate-bench-redis: cannot start redis-server: {e}");
                return ExitCode::from(1);
            }
        }
    };
    let port = urls
        .first()
        .and_then(|u| u.trim_end_matches('/').rsplit(':').next())
        .unwrap_or_default()
        .to_owned();
    let redis_args: Vec<String> = urls
        .iter()
        .flat_map(|u| ["--redis".to_owned(), u.clone()])
        .collect();
    let pids = pids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("tollgate-bench-redis: {} (pids {pids})", urls.join(" "));
    let argv: Vec<String> = args
        .iter()
        .flat_map(|a| {
            if a == "{redis}" {
                redis_args.clone()
            } else {
                vec![a.clone()]
            }
        })
        .collect();
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .env("TOLLGATE_BENCH_PORT", &port)
        .env(
            "TOLLGATE_BENCH_URL",
            urls.first().cloned().unwrap_or_default(),
        )
        .env("TOLLGATE_BENCH_REDIS_ARGS", redis_args.join(" "))
        .env("TOLLGATE_BENCH_PIDS", &pids)
        .status();
    match status {
        Ok(s) => ExitCode::from(u8::try_from(s.code().unwrap_or(1)).unwrap_or(1)),
        Err(e) => {
            eprintln!("tollgate-bench-redis: cannot run {}: {e}", argv[0]);
            ExitCode::from(1)
        }
    }
}
