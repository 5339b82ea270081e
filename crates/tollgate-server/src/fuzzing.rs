//! Entry points for the fuzz targets in `fuzz/`, which drive the service's request handling
//! in process, without sockets. Built only with the `fuzzing` feature; not a stable API.
//!
//! The HTTP API needs nothing here: [`crate::http::router`] over an [`App`] is public. What
//! is private is the gRPC service, which this module exposes.

use std::sync::Arc;

use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tollgate::store::Store;

use crate::app::App;

/// Envoy's `ShouldRateLimit` for one request, as the gRPC listener would answer it, with
/// `token` as the `authorization: Bearer` metadata when given.
///
/// # Errors
/// The gRPC status the service answers with.
pub async fn grpc_should_rate_limit<S: Store>(
    app: Arc<App<S>>,
    request: RateLimitRequest,
    token: Option<&str>,
) -> Result<RateLimitResponse, tonic::Status> {
    let mut request = tonic::Request::new(request);
    if let Some(t) = token {
        let value = format!("Bearer {t}")
            .parse()
            .map_err(|_| tonic::Status::invalid_argument("token: not valid metadata"))?;
        request.metadata_mut().insert("authorization", value);
    }
    crate::grpc::answer(app, request)
        .await
        .map(tonic::Response::into_inner)
}
