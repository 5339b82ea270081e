//! Test support for tollgate: private `redis-server` processes and Redis Clusters on loopback
//! ports, to test the Redis store against real servers, including their failures.
//!
//! Every server is a child process of the test, on a free `127.0.0.1` port, in a fresh temporary
//! directory, with persistence off (`--save "" --appendonly no`). It is killed and its directory
//! removed when its handle is dropped. A test can kill, pause (`SIGSTOP`), resume and restart
//! servers to exercise outages, stalls and lost script caches.
//!
//! ```
//! use tollgate_test::RedisServer;
//!
//! let mut server = RedisServer::start()?;
//! assert_eq!(server.cli(&["PING"])?.trim(), "PONG");
//! server.cli(&["SET", "greeting", "hello"])?;
//! assert_eq!(server.cli(&["GET", "greeting"])?.trim(), "hello");
//!
//! // A restart keeps the port and loses every key (nothing is persisted).
//! let url = server.url();
//! server.restart()?;
//! assert_eq!(server.url(), url);
//! assert_eq!(server.cli(&["DBSIZE"])?.trim(), "0");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! [`RedisCluster::start`] runs a six-node cluster (three masters, three replicas) and returns only
//! once it is fully healthy; [`RedisCluster::wait_healthy`] waits for the same again after a
//! failover or a [`reshard`](RedisCluster::reshard).
//!
//! [`FakeUpstream`] is a fake model provider (OpenAI's and Anthropic's APIs, streaming and
//! not) on a loopback port, for the gateway's end-to-end tests.
//!
//! The binaries are `redis-server` and `redis-cli` from the `PATH`, or the paths in
//! `TOLLGATE_REDIS_SERVER` and `TOLLGATE_REDIS_CLI`. Nothing here ever connects to a port it did
//! not start a server on.
//!
//! [`Service`] runs the `tollgate serve` binary itself (built by cargo for the test, see
//! [`tollgate_binary`]), [`CpuHogs`] keeps every core busy, and the `tollgate-load` binary of
//! this crate is a client process for load tests.

mod cluster;
pub mod conformance;
pub mod model;
mod resp;
mod server;
mod service;
mod slot;
pub mod strategies;
pub mod upstream;

pub use cluster::RedisCluster;
pub use server::{free_port, RedisServer};
pub use service::{tollgate_binary, CpuHogs, Service};
pub use slot::key_slot;
pub use upstream::FakeUpstream;
