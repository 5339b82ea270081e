//! The HTTP clients that call the upstreams: one per upstream (its own connect timeout and,
//! for HTTPS, the system's root certificates plus the private CA its configuration names),
//! hyper's pooled HTTP/1.1 client over rustls.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::config::Upstream;

/// The client of one upstream.
pub type UpstreamClient =
    hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why an upstream's client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The private CA file could not be read or holds no certificate.
    #[error("upstream {upstream:?}: ca_file {path}: {message}")]
    CaFile {
        /// The upstream.
        upstream: String,
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// TLS could not be set up.
    #[error("upstream {upstream:?}: TLS: {message}")]
    Tls {
        /// The upstream.
        upstream: String,
        /// What is wrong.
        message: String,
    },
}

/// The client for `upstream`.
///
/// # Errors
/// A private CA file that cannot be read, or TLS that cannot be set up.
pub fn build(upstream: &Upstream) -> Result<UpstreamClient, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &upstream.ca_file {
        let err = |message: String| ClientError::CaFile {
            upstream: upstream.name.clone(),
            path: path.display().to_string(),
            message,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| err(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("holds no PEM certificate".into()));
        }
        for c in certs {
            roots.add(c).map_err(|e| err(e.to_string()))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ClientError::Tls {
        upstream: upstream.name.clone(),
        message: e.to_string(),
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(upstream.connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .build(https),
    )
}
