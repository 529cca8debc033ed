//! rustls configuration (ring provider, TLS 1.2 and 1.3 only) from the `[tls]` files.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A required file is not configured.
    #[error("`{0}` is not set")]
    Unset(&'static str),
    /// A PEM file is unreadable or holds nothing usable.
    #[error("`{key}` ({path}): {message}")]
    Pem {
        /// Config key.
        key: &'static str,
        /// File.
        path: String,
        /// Why.
        message: String,
    },
    /// rustls refused the certificate/key pair.
    #[error("tls.cert/tls.key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider every TLS endpoint of bote uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a PEM certificate chain.
pub fn load_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |message: String| TlsError::Pem {
        key,
        path: path.display().to_string(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// The server configuration for the HTTPS and SMTP listeners, with the given ALPN list.
pub fn server_config(tls: &TlsConfig, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_path = tls.cert.get().ok_or(TlsError::Unset("tls.cert"))?;
    let key_path = tls.key.get().ok_or(TlsError::Unset("tls.key"))?;
    let certs = load_certs("tls.cert", cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Pem {
        key: "tls.key",
        path: key_path.display().to_string(),
        message: e.to_string(),
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
