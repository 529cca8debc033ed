//! Development PKI: a private CA, a server certificate and a peer client certificate.
//!
//! For `bote init` and tests only; production uses certificates from the operator's CA or
//! ACME (see certs/README.md). The CA and the leaves are separate certificates because
//! rustls rightly refuses a CA certificate used as a server certificate.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::address::DomainName;

/// Why the development PKI could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Certificate generation failed.
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing a file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The files written by [`write_dev_pki`].
#[derive(Debug, Clone)]
pub struct DevPki {
    /// CA certificate (trust anchor for clients: `curl --cacert`).
    pub ca_cert: PathBuf,
    /// Server certificate chain (leaf + CA).
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    /// Peer-gateway client certificate for mutual TLS tests.
    pub peer_cert: PathBuf,
    /// Its key.
    pub peer_key: PathBuf,
}

/// Writes a CA, a server certificate for `domain`, `localhost` and `127.0.0.1`, and a peer
/// client certificate into `dir`. Keys are written readable by the owner only.
pub fn write_dev_pki(dir: &Path, domain: &DomainName) -> Result<DevPki, PkiError> {
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = name(&format!("bote development CA ({domain})"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - Duration::days(1);
    ca.not_after = now + Duration::days(3650);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);

    let server_names = vec![
        domain.as_str().to_owned(),
        format!("mail.{domain}"),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let (server_cert, server_key) = leaf(
        server_names,
        domain.as_str(),
        ExtendedKeyUsagePurpose::ServerAuth,
        &issuer,
        now,
    )?;
    let peer_name = format!("peer.{domain}");
    let (peer_cert, peer_key) = leaf(
        vec![peer_name.clone()],
        &peer_name,
        ExtendedKeyUsagePurpose::ClientAuth,
        &issuer,
        now,
    )?;

    let out = DevPki {
        ca_cert: dir.join("ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        peer_cert: dir.join("peer.crt"),
        peer_key: dir.join("peer.key"),
    };
    fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_owned(),
        source,
    })?;
    write_file(&out.ca_cert, ca_cert.pem(), false)?;
    write_file(&dir.join("ca.key"), ca_key.serialize_pem(), true)?;
    write_file(
        &out.server_cert,
        format!("{server_cert}{}", ca_cert.pem()),
        false,
    )?;
    write_file(&out.server_key, &server_key, true)?;
    write_file(
        &out.peer_cert,
        format!("{peer_cert}{}", ca_cert.pem()),
        false,
    )?;
    write_file(&out.peer_key, &peer_key, true)?;
    Ok(out)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "bote development");
    dn
}

fn leaf(
    names: Vec<String>,
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, &KeyPair>,
    now: OffsetDateTime,
) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name = name(common_name);
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // 397 days in all, a day of clock skew included: within the 398 days browsers allow
    // for public certificates and far inside the 825 days clients enforce for private CAs.
    params.not_before = now - Duration::days(1);
    params.not_after = params.not_before + Duration::days(LEAF_DAYS);
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Total validity of development leaf certificates, in days.
pub const LEAF_DAYS: i64 = 397;

/// Writes a file; secret files get mode 0600 from creation on, never a wider one.
pub fn write_file(path: &Path, contents: impl AsRef<[u8]>, secret: bool) -> Result<(), PkiError> {
    let err = |source| PkiError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(err)?;
    file.write_all(contents.as_ref()).map_err(err)?;
    file.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_ca_leaves_and_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let pki = write_dev_pki(dir.path(), &DomainName::parse("lemgo.example").unwrap()).unwrap();
        let chain = fs::read_to_string(&pki.server_cert).unwrap();
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&pki.server_key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
