//! rustls configuration (ring provider, TLS 1.2 and 1.3 only) from the `[tls]` files, with a
//! certificate that can be reloaded from disk (SIGHUP) without dropping connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
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

/// The crypto provider every TLS endpoint of bote uses: ring's, with the AES-128-GCM
/// suites first.
///
/// Both GCM sizes are recommended (BSI TR-02102-2); the SHA-256 suites are cheaper per
/// handshake and per record, and on CPUs ring does not run its vectorised SHA-512 on (AMD
/// here) the SHA-384 transcript and key schedule cost ~2 % of a 1 KiB SMTP submission
/// (docs/decisions.md, tenth round). Servers choose by this order ([`server_config`]).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| !is_aes128_gcm(suite.suite()));
    Arc::new(provider)
}

fn is_aes128_gcm(suite: rustls::CipherSuite) -> bool {
    use rustls::CipherSuite as S;
    matches!(
        suite,
        S::TLS13_AES_128_GCM_SHA256
            | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    )
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

/// The TLS client configuration for bote's outgoing HTTPS (witnesses, time-stamping
/// authorities): the public web roots plus the peer CA (`tls.peer_ca`), under which
/// municipal gateways that witness each other hold their certificates.
pub fn client_config(peer_ca: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = peer_ca {
        for cert in load_certs("tls.peer_ca", path)? {
            roots.add(cert)?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The server certificate and key, re-read from their files on [`ServerCert::reload`].
#[derive(Debug)]
pub struct ServerCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCert {
    /// Loads `tls.cert` and `tls.key`; fails if they are missing, malformed or do not match.
    pub fn load(tls: &TlsConfig) -> Result<Self, TlsError> {
        let cert_path = tls
            .cert
            .get()
            .ok_or(TlsError::Unset("tls.cert"))?
            .to_owned();
        let key_path = tls.key.get().ok_or(TlsError::Unset("tls.key"))?.to_owned();
        let current = RwLock::new(Arc::new(read_certified_key(&cert_path, &key_path)?));
        Ok(Self {
            cert_path,
            key_path,
            current,
        })
    }

    /// Re-reads the files. On failure the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(read_certified_key(&self.cert_path, &self.key_path)?);
        match self.current.write() {
            Ok(mut guard) => *guard = fresh,
            // A panic while holding the lock cannot leave a half-written Arc: replace it.
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    fn get(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

fn read_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let certs = load_certs("tls.cert", cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Pem {
        key: "tls.key",
        path: key_path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(CertifiedKey::from_der(certs, key, &provider())?)
}

/// A server configuration for the HTTPS and SMTP listeners using `cert`, with the given ALPN
/// protocols.
pub fn server_config(cert: Arc<ServerCert>, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.ignore_client_order = true;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// As [`server_config`], and asks the client for a certificate without requiring one: the
/// SMTP listeners, where office software and office servers may prove who they are by a
/// certificate registered with bote ([`PinnedClientCerts`]).
pub fn server_config_with_client_certs(
    cert: Arc<ServerCert>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PinnedClientCerts {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// Client certificates that mean something only as a registered fingerprint: any
/// certificate is taken at the handshake (no CA stands behind office software's
/// self-made certificates), its holder must prove the private key (the handshake
/// signature is verified), and what it is worth is decided later by its SHA-256: a token
/// bound to it, an office server registered with it. A certificate nobody registered
/// gains nothing.
#[derive(Debug)]
pub struct PinnedClientCerts {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::server::danger::ClientCertVerifier for PinnedClientCerts {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::DomainName;
    use crate::config::OptionalPath;

    #[test]
    fn refuses_mismatched_key_and_keeps_old_cert_on_failed_reload() {
        let domain = DomainName::parse("lemgo.example").unwrap();
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let pki_a = crate::pki::write_dev_pki(a.path(), &domain).unwrap();
        let pki_b = crate::pki::write_dev_pki(b.path(), &domain).unwrap();
        let tls = |cert: &Path, key: &Path| TlsConfig {
            cert: OptionalPath(cert.to_owned()),
            key: OptionalPath(key.to_owned()),
            ..TlsConfig::default()
        };
        let mismatched = ServerCert::load(&tls(&pki_a.server_cert, &pki_b.server_key));
        assert!(matches!(mismatched, Err(TlsError::Rustls(_))));

        let cert = ServerCert::load(&tls(&pki_a.server_cert, &pki_a.server_key)).unwrap();
        let before = cert.get().cert[0].clone();
        std::fs::write(&pki_a.server_key, "garbage").unwrap();
        assert!(cert.reload().is_err());
        assert_eq!(
            cert.get().cert[0],
            before,
            "failed reload must keep the old certificate"
        );

        std::fs::copy(&pki_b.server_cert, &pki_a.server_cert).unwrap();
        std::fs::copy(&pki_b.server_key, &pki_a.server_key).unwrap();
        cert.reload().unwrap();
        assert_ne!(cert.get().cert[0], before);
    }

    /// The suite a handshake between `client` and `server` agrees on, in memory.
    fn negotiated(
        client: rustls::ClientConfig,
        server: Arc<ServerConfig>,
    ) -> Option<rustls::CipherSuite> {
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        let mut server = rustls::ServerConnection::new(server).unwrap();
        while client.is_handshaking() || server.is_handshaking() {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            wire.clear();
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets().unwrap();
        }
        assert_eq!(
            client.negotiated_cipher_suite().map(|s| s.suite()),
            server.negotiated_cipher_suite().map(|s| s.suite())
        );
        server.negotiated_cipher_suite().map(|s| s.suite())
    }

    #[test]
    fn servers_choose_aes_128_gcm_over_a_clients_preference() {
        let dir = tempfile::tempdir().unwrap();
        let pki =
            crate::pki::write_dev_pki(dir.path(), &DomainName::parse("lemgo.example").unwrap())
                .unwrap();
        let cert = Arc::new(
            ServerCert::load(&TlsConfig {
                cert: OptionalPath(pki.server_cert.clone()),
                key: OptionalPath(pki.server_key.clone()),
                ..TlsConfig::default()
            })
            .unwrap(),
        );
        // rustls' own client order, like OpenSSL's, puts AES-256-GCM-SHA384 first.
        let mut roots = rustls::RootCertStore::empty();
        for ca in load_certs("ca", &pki.ca_cert).unwrap() {
            roots.add(ca).unwrap();
        }
        let client = |versions: &[&'static rustls::SupportedProtocolVersion]| {
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth()
        };
        assert_eq!(
            client(&[&rustls::version::TLS13])
                .crypto_provider()
                .cipher_suites[0]
                .suite(),
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
        );
        let servers = [
            server_config(cert.clone(), &[]).unwrap(),
            server_config_with_client_certs(cert).unwrap(),
        ];
        for server in servers {
            assert_eq!(
                negotiated(client(&[&rustls::version::TLS13]), server.clone()),
                Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
            );
            assert_eq!(
                negotiated(client(&[&rustls::version::TLS12]), server),
                Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
            );
        }
    }
}
