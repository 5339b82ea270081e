//! The HTTP clients that call the upstreams: one per upstream (its own timeouts and, for
//! HTTPS, the system's root certificates plus the private CA its configuration names), over
//! rustls.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::config::Upstream;

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
pub fn build(upstream: &Upstream) -> Result<reqwest::Client, ClientError> {
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
    let tls_err = |message: String| ClientError::Tls {
        upstream: upstream.name.clone(),
        message,
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_err(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(upstream.connect_timeout)
        .read_timeout(upstream.idle_timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| tls_err(e.to_string()))
}
