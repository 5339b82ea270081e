//! The store the service runs on: chosen once at startup (the only place that knows every
//! kind), and shared between the limiters of the service.

use std::future::Future;
use std::sync::Arc;

use tollgate::key::BucketName;
use tollgate::store::fallback::{BreakerState, FallbackStore};
use tollgate::store::redis::RedisStore;
use tollgate::store::{
    Applied, FailureMode, Mode, OneOutcome, Op, Ops, Route, Settlement, Store, StoreOutcome,
    VerdictSink,
};
use tollgate::{MemoryStore, StoreError};
use tollgate_core::{LeaseId, Limit, Timestamp, Usage};

/// A store shared by several limiters (the service keeps one limiter for the whole policy and
/// one for the enforced rules only, over the same buckets).
#[derive(Debug)]
pub struct Shared<S>(pub Arc<S>);

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<S: Store> Store for Shared<S> {
    type Key = S::Key;

    fn bucket_key(&self, name: &BucketName<'_>) -> Self::Key {
        self.0.bucket_key(name)
    }

    fn decide(
        &self,
        ops: &[Op<Self::Key>],
        mode: Mode,
        lease: LeaseId,
        request_id: Option<&str>,
    ) -> impl Future<Output = Result<StoreOutcome, StoreError>> + Send {
        self.0.decide(ops, mode, lease, request_id)
    }

    fn decide_one_sync(
        &self,
        key: &Self::Key,
        limit: &Limit,
        cost: u64,
        mode: Mode,
        lease: LeaseId,
        brief: bool,
    ) -> Option<OneOutcome> {
        self.0.decide_one_sync(key, limit, cost, mode, lease, brief)
    }

    fn decide_ops_sync<O: Ops<Self::Key> + ?Sized, V: VerdictSink + ?Sized>(
        &self,
        ops: &O,
        mode: Mode,
        lease: LeaseId,
        verdicts: &mut V,
    ) -> Option<Applied> {
        self.0.decide_ops_sync(ops, mode, lease, verdicts)
    }

    fn decide_sync(
        &self,
        ops: &[Op<Self::Key>],
        mode: Mode,
        lease: LeaseId,
        request_id: Option<&str>,
    ) -> Option<Result<StoreOutcome, StoreError>> {
        self.0.decide_sync(ops, mode, lease, request_id)
    }

    fn settle(
        &self,
        items: &[Settlement<Self::Key>],
        route: Route,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send {
        self.0.settle(items, route)
    }

    fn settle_now(
        &self,
        items: &[Settlement<Self::Key>],
        route: Route,
    ) -> Option<Result<usize, StoreError>> {
        self.0.settle_now(items, route)
    }

    fn usage(
        &self,
        ops: &[Op<Self::Key>],
    ) -> impl Future<Output = Result<(Timestamp, Vec<Usage>), StoreError>> + Send {
        self.0.usage(ops)
    }

    fn reset(&self, keys: &[Self::Key]) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.0.reset(keys)
    }

    fn reset_rule(
        &self,
        rule: &'static str,
        rule_id: u32,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        self.0.reset_rule(rule, rule_id)
    }

    fn active_buckets(&self) -> Option<Vec<(u32, u64)>> {
        self.0.active_buckets()
    }
}

/// Asks the store about a probe bucket (spending nothing): whether it answers.
///
/// # Errors
/// The store's failure.
pub async fn probe<S: Store>(store: &S) -> Result<(), StoreError> {
    let limit =
        tollgate::LimitSpec::new(tollgate::LimitKind::Requests, 1, tollgate::Window::SECOND)
            .build()
            .map_err(|e| StoreError::Unsupported(e.to_string()))?;
    let name = BucketName {
        rule: "tollgate-readyz",
        rule_id: u32::MAX,
        limit: "probe",
        partition: &[],
        partition_hash: 0,
        limit_salt: 0,
    };
    let op = Op {
        key: store.bucket_key(&name),
        limit,
        cost: 0,
        failure: FailureMode::default(),
    };
    store.usage(&[op]).await.map(drop)
}

/// How the store is doing, as `/readyz` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Whether decisions can be made now: by the store, or (behind the fallback) by the
    /// rules' failure modes.
    pub can_decide: bool,
    /// Whether the rules' failure modes decide instead of the shared store: its breaker is
    /// not closed, or it did not answer the probe.
    pub degraded: bool,
    /// The fallback's circuit breaker, when there is one.
    pub breaker: Option<BreakerState>,
    /// Why the shared store did not answer the probe.
    pub error: Option<String>,
}

/// The stores the service runs on, with what `/readyz` needs to know about each.
pub trait ServedStore: Store {
    /// Probes the store (spending nothing) and reports whether it can decide.
    fn health(&self) -> impl Future<Output = Health> + Send;

    /// Drops the buckets that have refilled (the service does this every few seconds, so
    /// that memory and `tollgate_active_buckets` follow the traffic); how many. Stores whose
    /// buckets expire by themselves (Redis) have nothing to do.
    fn sweep_idle(&self) -> usize {
        0
    }
}

fn probed(result: Result<(), StoreError>) -> Health {
    match result {
        Ok(()) => Health {
            can_decide: true,
            degraded: false,
            breaker: None,
            error: None,
        },
        Err(e) => Health {
            can_decide: false,
            degraded: false,
            breaker: None,
            error: Some(e.to_string()),
        },
    }
}

impl ServedStore for MemoryStore {
    async fn health(&self) -> Health {
        probed(probe(self).await)
    }

    fn sweep_idle(&self) -> usize {
        self.sweep()
    }
}

impl ServedStore for RedisStore {
    async fn health(&self) -> Health {
        probed(probe(self).await)
    }
}

impl ServedStore for FallbackStore<RedisStore> {
    /// Always able to decide: while Redis is down the rules' failure modes do. The probe goes
    /// to Redis directly (within its response timeout), so that it does not move the breaker.
    async fn health(&self) -> Health {
        // At most 1 s, however long the fallback lets a slow call wait.
        let deadline = self
            .primary()
            .config()
            .response_timeout
            .min(std::time::Duration::from_secs(1));
        let primary = match tokio::time::timeout(deadline, probe(self.primary())).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(deadline)),
        };
        let breaker = self.breaker_state();
        Health {
            can_decide: true,
            degraded: primary.is_err() || breaker != BreakerState::Closed,
            breaker: Some(breaker),
            error: primary.err().map(|e| e.to_string()),
        }
    }
}

impl<S: ServedStore> ServedStore for Shared<S> {
    fn health(&self) -> impl Future<Output = Health> + Send {
        self.0.health()
    }

    fn sweep_idle(&self) -> usize {
        self.0.sweep_idle()
    }
}
