//! gRPC server reflection on the gRPC port (`grpc.reflection.v1` and `v1alpha`): the rate
//! limit service, the health service and reflection itself, so that grpcurl and other
//! reflection clients can call `ShouldRateLimit` without Envoy's protos at hand.
//!
//! The rate limit service's descriptors (`proto/rls_descriptors.bin`: rls.proto and every
//! file it imports) are generated from Envoy's published protos by
//! `scripts/gen-rls-descriptors.py`; a test checks that they are current.

use tonic_reflection::server::v1::{ServerReflection, ServerReflectionServer};
use tonic_reflection::server::v1alpha::{
    ServerReflection as ServerReflectionAlpha,
    ServerReflectionServer as ServerReflectionServerAlpha,
};
use tonic_reflection::server::Builder;

/// The FileDescriptorSet of `envoy/service/ratelimit/v3/rls.proto` and its imports.
pub(crate) const RLS_DESCRIPTORS: &[u8] = include_bytes!("../proto/rls_descriptors.bin");

fn builder(with_rls: bool) -> Builder<'static> {
    let b = Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    if with_rls {
        b.register_encoded_file_descriptor_set(RLS_DESCRIPTORS)
    } else {
        b
    }
}

/// Tells why the rate limit service's descriptors could not be served (a corrupt
/// `rls_descriptors.bin`; the tests catch it before a release).
fn without_rls(e: &tonic_reflection::server::Error) {
    tracing::error!(error = %e, "server reflection serves no rate limit service descriptors");
}

/// `grpc.reflection.v1.ServerReflection`.
pub(crate) fn v1() -> ServerReflectionServer<impl ServerReflection> {
    match builder(true).build_v1() {
        Ok(s) => s,
        Err(e) => {
            without_rls(&e);
            match builder(false).build_v1() {
                Ok(s) => s,
                Err(e) => unreachable!("tonic's own descriptors are valid: {e}"),
            }
        }
    }
}

/// `grpc.reflection.v1alpha.ServerReflection` (what older clients, grpcurl among them, ask).
pub(crate) fn v1alpha() -> ServerReflectionServerAlpha<impl ServerReflectionAlpha> {
    match builder(true).build_v1alpha() {
        Ok(s) => s,
        Err(e) => {
            without_rls(&e);
            match builder(false).build_v1alpha() {
                Ok(s) => s,
                Err(e) => unreachable!("tonic's own descriptors are valid: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_rate_limit_descriptors_build() {
        assert!(super::builder(true).build_v1().is_ok());
        assert!(super::builder(true).build_v1alpha().is_ok());
    }
}
