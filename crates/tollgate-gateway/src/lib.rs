//! tollgate's LLM gateway: an OpenAI- and Anthropic-compatible proxy that counts tokens
//! itself.
//!
//! A client changes only its `base_url`. For each call the gateway identifies the caller
//! (a keyed hash of its own provider key, or a managed tollgate key), builds the subject (the
//! key's tenant and attributes, the upstream as `provider`, the body's `model` and user,
//! configured headers), estimates the tokens (a real tokenizer for the input, the request's
//! output cap or a clamped default for the output), reserves requests, tokens, input and
//! output tokens and a concurrency slot in one all-or-nothing decision, relays the call (SSE
//! chunk by chunk), and settles the provider's actual usage on every exit path.
//!
//! The service (`tollgate serve --upstream openai=URL`) mounts [`Gateway::router`] next to its
//! own API. Embedding it:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tollgate::{Limiter, MemoryStore, SystemClock};
//! use tollgate_gateway::{config::GatewayConfig, Gateway};
//!
//! let mut config = GatewayConfig::default();
//! config.add_upstream_arg("openai=https://api.openai.com/v1")?;
//! // The built-in policy; the upstreams' learned limits kept in a store of their own.
//! let gateway = Gateway::new(config, Limiter::new(), MemoryStore::new(), Arc::new(SystemClock::new()))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, gateway.router()).await?;
//! # Ok(()) }
//! ```
//!
//! Modules: [`config`] (the TOML tables), [`provider`] (what the relay needs of an API) with
//! [`openai`] and [`anthropic`] (one file per provider), [`estimate`] (tokenizers and the
//! output reservation), [`keys`] (who is calling), [`route`] (model → upstream), [`relay`]
//! (reserve, relay, settle), [`settle`] (every exit path), [`learned`] (the upstreams' own
//! limits), [`sse`] (event framing), [`count`] (token estimation for callers not behind the
//! gateway), [`metrics`].

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod anthropic;
pub mod client;
pub mod config;
pub mod count;
pub mod estimate;
pub mod keys;
pub mod learned;
pub mod metrics;
pub mod openai;
pub mod provider;
pub mod providers;
pub mod relay;
pub mod route;
pub mod settle;
pub mod sse;

use std::sync::Arc;

use tollgate::store::Store;
use tollgate::{Clock, Limiter};

use crate::config::{GatewayConfig, ProviderKind, Upstream};
use crate::keys::Keys;
use crate::learned::Learned;
use crate::route::Routes;

pub use crate::client::ClientError;

/// An upstream with its client.
pub(crate) struct Live {
    pub(crate) config: Upstream,
    pub(crate) client: client::UpstreamClient,
}

/// The gateway over a limiter. Cloning shares it.
pub struct Gateway<S: Store> {
    pub(crate) inner: Arc<Inner<S>>,
}

impl<S: Store> Clone for Gateway<S> {
    fn clone(&self) -> Self {
        Gateway {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: Store> std::fmt::Debug for Gateway<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field(
                "upstreams",
                &self
                    .inner
                    .upstreams
                    .iter()
                    .map(|u| (&u.config.name, u.config.kind))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner<S: Store> {
    pub(crate) config: GatewayConfig,
    pub(crate) upstreams: Vec<Live>,
    pub(crate) routes: Routes,
    pub(crate) keys: Keys,
    pub(crate) limiter: Limiter<S>,
    pub(crate) learned: Learned<S>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl<S: Store> Gateway<S> {
    /// A gateway for `config`, deciding with `limiter` (whose policy it follows, reloads
    /// included). The upstreams' learned limits keep their buckets in `learned_store` (give
    /// a handle on the limiter's own store, so that a fleet on Redis shares them). `clock`
    /// dates the reset times in rate-limit headers.
    ///
    /// # Errors
    /// An upstream whose HTTP client cannot be built (its private CA file, TLS).
    pub fn new(
        config: GatewayConfig,
        limiter: Limiter<S>,
        learned_store: S,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ClientError> {
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                Ok(Live {
                    client: client::build(u)?,
                    config: u.clone(),
                })
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        let learned = Learned::new(learned_store, config.learned, config.key_mode);
        // The tokenizers' tables take a moment to load: not on the first call.
        if config.enabled() {
            std::thread::spawn(estimate::warm_up);
            metrics::start_at_zero(
                config.upstreams.iter().map(|u| u.name.as_str()),
                settle::Path::ALL.map(settle::Path::as_str),
            );
        }
        Ok(Gateway {
            inner: Arc::new(Inner {
                routes: Routes::new(&config.upstreams),
                keys: Keys::new(&config),
                config,
                upstreams,
                limiter,
                learned,
                clock,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    /// Whether an upstream of `kind` is configured.
    pub fn serves(&self, kind: ProviderKind) -> bool {
        self.inner.upstreams.iter().any(|u| u.config.kind == kind)
    }

    /// The routes: every provider path of the configured upstreams' kinds, and
    /// `POST /v1/estimate` (token estimation for callers not behind the gateway, always).
    pub fn router(&self) -> axum::Router {
        relay::router(self.clone())
    }
}
