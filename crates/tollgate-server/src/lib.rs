//! The tollgate service and CLI.
//!
//! `tollgate serve` runs a rate limiter as a service: an HTTP JSON API (check, peek,
//! reserve/commit/cancel/renew, usage, reset, forward-auth, `/metrics`, `/healthz`,
//! `/readyz`, `/openapi.json`) and Envoy's gRPC rate limit service, over the in-memory store or
//! Redis. With no configuration it runs tollgate's default policy (60 requests and 100,000
//! tokens per minute per caller and provider) on 127.0.0.1:8080 (HTTP) and 127.0.0.1:8081
//! (gRPC).
//!
//! The same program is the service's client: `tollgate check | peek | usage | reset` print a
//! decision, and `tollgate bench` measures a running service.
//!
//! Embedding the service (tests do this, with a manual clock):
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tollgate_server::{config::Config, server};
//! let mut config = Config::default();
//! config.server.http = "127.0.0.1:0".parse()?;
//! config.server.grpc = None;
//! let running = server::start(server::Options { config, ..Default::default() }).await?;
//! println!("listening on {}", running.url());
//! running.shutdown().await;
//! # Ok(()) }
//! ```

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![allow(clippy::result_large_err)]

pub mod acquire;
pub mod admin;
pub mod api;
pub mod app;
mod args;
pub mod bench;
pub mod cli;
pub mod client;
pub mod config;
mod conn;
mod descriptor_limit;
pub mod envoy_import;
mod envoy_yaml;
pub mod error;
mod forward_auth;
mod framing;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod grpc;
pub mod http;
mod judged;
pub mod openapi;
pub mod preflight;
mod reflection;
mod reload;
mod request;
mod respond;
pub mod server;
mod shutdown;
pub mod store;
pub mod subject_limits;
pub mod telemetry;

pub use cli::{run, Cli};
