//! The store the service runs on: chosen once at startup (the only place that knows every
//! kind), and shared between the limiters of the service.

use std::future::Future;
use std::sync::Arc;

use tollgate::key::BucketName;
use tollgate::store::{FailureMode, Mode, Op, Route, Settlement, Store, StoreOutcome};
use tollgate::StoreError;
use tollgate_core::{LeaseId, Timestamp, Usage};

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
