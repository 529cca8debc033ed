//! The gateway's own keys at rest: the OpenPGP **evidence key** (signs evidence records and
//! bundle manifests), the OpenPGP **provider key** (signs every message the gateway accepts,
//! attesting sender, identity and authentication level) and the Ed25519 **log key** (signs
//! checkpoints as C2SP signed notes).
//!
//! All are stored in `keys.dir`, encrypted with the passphrase from `keys.passphrase_file`
//! or the variable named by `keys.passphrase_env`, as OpenPGP secret keys (S2K-protected),
//! so standard tools can inspect them. They are separate keys on purpose: a leaked log key
//! cannot forge evidence, a leaked provider key cannot forge evidence or checkpoints.
//!
//! | file | content |
//! |---|---|
//! | `provider.key.asc` | provider key, secret parts encrypted |
//! | `provider.cert.asc` | its public certificate (published via WKD as `provider@<domain>`) |
//! | `evidence.key.asc` | evidence key, secret parts encrypted |
//! | `evidence.cert.asc` | its public certificate (published at `/log/key` and via WKD) |
//! | `log.key.asc` | log key (Ed25519 seed as an OpenPGP secret key packet), encrypted |
//! | `log.vkey` | its signed-note verifier key `name+keyid+base64` |
//! | `witness.key.asc` | witness key (cosigns peers' checkpoints), as the log key |
//! | `witness.vkey` | its cosignature verifier key `name+keyid+base64(0x04 ‖ key)` |

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sequoia_openpgp as openpgp;

use openpgp::armor;
use openpgp::cert::{CertBuilder, CipherSuite};
use openpgp::crypto::Password;
use openpgp::packet::key::{Key4, PrimaryRole, SecretParts};
use openpgp::packet::signature::SignatureBuilder;
use openpgp::packet::{Key, Packet};
use openpgp::parse::Parse;
use openpgp::serialize::{Serialize as _, SerializeInto};
use openpgp::types::{KeyFlags, SignatureType};
use openpgp::{Cert, Profile};
use zeroize::Zeroizing;

use crate::config::Config;
use crate::crypto;
use crate::pki::write_file;

/// Why keys could not be created, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No passphrase configured or available.
    #[error(
        "key passphrase: keys.passphrase_file is not set and environment variable {0} is empty"
    )]
    NoPassphrase(String),
    /// The passphrase file is unreadable or empty.
    #[error("key passphrase: cannot use {path}: {reason}")]
    PassphraseFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A key file is missing.
    #[error("{0} does not exist: create the gateway keys with `bote keys generate`")]
    Missing(PathBuf),
    /// Keys exist already.
    #[error("{0} already exists: refusing to overwrite a gateway key")]
    Exists(PathBuf),
    /// A key file is unreadable or malformed.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Wrong passphrase.
    #[error("{0}: cannot decrypt with the configured passphrase")]
    WrongPassphrase(PathBuf),
    /// OpenPGP failure while generating or signing.
    #[error("OpenPGP: {0}")]
    OpenPgp(String),
    /// Writing a file failed.
    #[error(transparent)]
    Write(#[from] crate::pki::PkiError),
}

fn pgp_err(e: impl std::fmt::Display) -> KeyError {
    KeyError::OpenPgp(e.to_string())
}

/// The key passphrase, wiped from memory when dropped.
pub struct Passphrase(Zeroizing<String>);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(***)")
    }
}

impl Passphrase {
    /// Reads the passphrase as configured: the file if set, else the environment variable.
    pub fn load(config: &Config) -> Result<Self, KeyError> {
        if let Some(path) = config.keys.passphrase_file.get() {
            let text = std::fs::read_to_string(path).map_err(|e| KeyError::PassphraseFile {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
            let line = text.lines().next().unwrap_or_default().to_owned();
            if line.is_empty() {
                return Err(KeyError::PassphraseFile {
                    path: path.to_owned(),
                    reason: "it is empty".into(),
                });
            }
            return Ok(Self(Zeroizing::new(line)));
        }
        let var = &config.keys.passphrase_env;
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Self(Zeroizing::new(v))),
            _ => Err(KeyError::NoPassphrase(var.clone())),
        }
    }

    fn password(&self) -> Password {
        Password::from(self.0.as_str())
    }
}

/// File names inside `keys.dir`.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    /// Evidence key, encrypted.
    pub evidence_key: PathBuf,
    /// Evidence certificate.
    pub evidence_cert: PathBuf,
    /// Log key, encrypted.
    pub log_key: PathBuf,
    /// Log verifier key.
    pub log_vkey: PathBuf,
    /// Provider key, encrypted.
    pub provider_key: PathBuf,
    /// Provider certificate.
    pub provider_cert: PathBuf,
    /// Witness key, encrypted.
    pub witness_key: PathBuf,
    /// Witness verifier key.
    pub witness_vkey: PathBuf,
}

impl KeyFiles {
    /// The files in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            evidence_key: dir.join("evidence.key.asc"),
            evidence_cert: dir.join("evidence.cert.asc"),
            log_key: dir.join("log.key.asc"),
            log_vkey: dir.join("log.vkey"),
            provider_key: dir.join("provider.key.asc"),
            provider_cert: dir.join("provider.cert.asc"),
            witness_key: dir.join("witness.key.asc"),
            witness_vkey: dir.join("witness.vkey"),
        }
    }
}

/// The signed-note key name of the log: `<first domain>/log` (spec §4).
pub fn log_origin(config: &Config) -> String {
    format!("{}/log", config.primary_domain())
}

/// The cosignature key name of the witness: `<first domain>/witness`.
pub fn witness_name(config: &Config) -> String {
    format!("{}/witness", config.primary_domain())
}

/// Creates the evidence, provider, log and witness keys; refuses to overwrite any existing
/// key file. A key directory from an older bote (evidence and log keys) gets the keys it
/// lacks.
pub fn generate(config: &Config, passphrase: &Passphrase) -> Result<KeyFiles, KeyError> {
    let files = KeyFiles::in_dir(&config.keys.dir);
    let origin = log_origin(config);
    for name in [&origin, &witness_name(config)] {
        if !signed_note::is_key_name_valid(name) {
            return Err(KeyError::OpenPgp(format!(
                "`{name}` is not a valid signed-note key name"
            )));
        }
    }
    let older = [
        &files.evidence_key,
        &files.evidence_cert,
        &files.log_key,
        &files.log_vkey,
    ];
    let provider = [&files.provider_key, &files.provider_cert];
    let witness = [&files.witness_key, &files.witness_vkey];
    let upgrade = older.iter().all(|f| f.exists());
    let missing = |set: &[&PathBuf]| set.iter().all(|f| !f.exists());
    let add_provider = !upgrade || missing(&provider);
    let add_witness = !upgrade || missing(&witness);
    let mut must_not_exist: Vec<&PathBuf> = Vec::new();
    if !upgrade {
        must_not_exist.extend(older);
    }
    if add_provider {
        must_not_exist.extend(provider);
    }
    if add_witness {
        must_not_exist.extend(witness);
    }
    if let Some(f) = must_not_exist.into_iter().find(|f| f.exists()) {
        return Err(KeyError::Exists(f.clone()));
    }
    if upgrade && !add_provider && !add_witness {
        return Err(KeyError::Exists(files.provider_key.clone()));
    }
    std::fs::create_dir_all(&config.keys.dir).map_err(|e| KeyError::Malformed {
        path: config.keys.dir.clone(),
        reason: e.to_string(),
    })?;
    let domain = config.primary_domain();
    if add_provider {
        let (provider_tsk, provider_public) = new_signing_cert(
            &format!("bote provider ({domain}) <{PROVIDER_LOCAL}@{domain}>"),
            passphrase,
        )?;
        write_file(&files.provider_key, &provider_tsk, true)?;
        write_file(&files.provider_cert, &provider_public, false)?;
    }
    if add_witness {
        let (armored, seed) = new_seed_key(passphrase)?;
        let vkey = WitnessKey::from_seed(&witness_name(config), &seed).verifier_key();
        write_file(&files.witness_key, &armored, true)?;
        write_file(&files.witness_vkey, format!("{vkey}\n"), false)?;
    }
    if upgrade {
        return Ok(files);
    }
    let (tsk, public) = new_signing_cert(
        &format!("bote evidence ({domain}) <{EVIDENCE_LOCAL}@{domain}>"),
        passphrase,
    )?;
    let (log_armored, seed) = new_seed_key(passphrase)?;
    let vkey = LogKey::from_seed(&origin, &seed)?.verifier_key;
    write_file(&files.evidence_key, &tsk, true)?;
    write_file(&files.evidence_cert, &public, false)?;
    write_file(&files.log_key, &log_armored, true)?;
    write_file(&files.log_vkey, format!("{vkey}\n"), false)?;
    Ok(files)
}

/// A fresh Ed25519 seed and its armoured, passphrase-encrypted OpenPGP secret key packet
/// (the at-rest form of the log and witness keys).
fn new_seed_key(passphrase: &Passphrase) -> Result<(String, Zeroizing<[u8; 32]>), KeyError> {
    let seed: Zeroizing<[u8; 32]> = Zeroizing::new(rand::random());
    let key = Key4::<SecretParts, PrimaryRole>::import_secret_ed25519(&seed[..], None)
        .map_err(pgp_err)?;
    let key: Key<SecretParts, PrimaryRole> = key.into();
    let key = key
        .encrypt_secret(&passphrase.password())
        .map_err(pgp_err)?;
    let mut armored = Vec::new();
    {
        let mut w = armor::Writer::new(&mut armored, armor::Kind::SecretKey).map_err(pgp_err)?;
        Packet::from(key).serialize(&mut w).map_err(pgp_err)?;
        w.finalize().map_err(pgp_err)?;
    }
    Ok((String::from_utf8(armored).map_err(pgp_err)?, seed))
}

/// Reads an Ed25519 seed from a passphrase-encrypted secret key packet file.
fn unlock_seed(path: &Path, passphrase: &Passphrase) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let bytes = read_key_file(path)?;
    let malformed = |reason: &str| KeyError::Malformed {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let key = match Packet::from_bytes(&bytes) {
        Ok(Packet::SecretKey(k)) => k,
        _ => return Err(malformed("not an OpenPGP secret key packet")),
    };
    let key = key
        .decrypt_secret(&passphrase.password())
        .map_err(|_| KeyError::WrongPassphrase(path.to_owned()))?;
    crypto::ed25519_seed(&key)
        .map(Zeroizing::new)
        .ok_or_else(|| malformed("not an Ed25519 key"))
}

/// The witness key: cosigns the checkpoints of peers' logs (C2SP tlog-cosignature).
pub struct WitnessKey {
    cosigner: crate::witness::Cosigner,
}

impl std::fmt::Debug for WitnessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WitnessKey({})", self.cosigner.verifier_key())
    }
}

impl WitnessKey {
    fn from_seed(name: &str, seed: &[u8; 32]) -> Self {
        Self {
            cosigner: crate::witness::Cosigner::new(
                name,
                ed25519_dalek::SigningKey::from_bytes(seed),
            ),
        }
    }

    /// A fresh key that lives only in memory (tests).
    pub fn ephemeral(name: &str) -> Self {
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(rand::random());
        Self::from_seed(name, &seed)
    }

    /// Unlocks the key file with the passphrase; `name` is the witness name.
    pub fn unlock(path: &Path, name: &str, passphrase: &Passphrase) -> Result<Self, KeyError> {
        let seed = unlock_seed(path, passphrase)?;
        Ok(Self::from_seed(name, &seed))
    }

    /// The cosignature verifier key.
    pub fn verifier_key(&self) -> String {
        self.cosigner.verifier_key()
    }

    /// The cosigner.
    pub fn cosigner(&self) -> &crate::witness::Cosigner {
        &self.cosigner
    }
}

/// The local part under which the evidence certificate is published (WKD).
pub const EVIDENCE_LOCAL: &str = "evidence";
/// The local part under which the provider certificate is published (WKD).
pub const PROVIDER_LOCAL: &str = "provider";

/// A new Ed25519 signing-only certificate: (armoured TSK, S2K-encrypted; armoured public).
fn new_signing_cert(userid: &str, passphrase: &Passphrase) -> Result<(String, String), KeyError> {
    // No expiry: evidence and attestations must verify for ten years and more; rotation
    // replaces keys.
    let (cert, _revocation) = CertBuilder::new()
        .set_profile(Profile::RFC4880)
        .map_err(pgp_err)?
        .set_cipher_suite(CipherSuite::Cv25519)
        .add_userid(userid)
        .set_primary_key_flags(KeyFlags::empty().set_certification().set_signing())
        .set_validity_period(None)
        .set_password(Some(passphrase.password()))
        .generate()
        .map_err(pgp_err)?;
    let tsk =
        String::from_utf8(cert.as_tsk().armored().to_vec().map_err(pgp_err)?).map_err(pgp_err)?;
    let public = String::from_utf8(cert.armored().to_vec().map_err(pgp_err)?).map_err(pgp_err)?;
    Ok((tsk, public))
}

/// An unlocked OpenPGP Ed25519 signing key of the gateway (evidence or provider).
pub struct SigningKey {
    cert: Cert,
    signer: crypto::Ed25519Signer,
    armored_cert: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.cert.fingerprint())
    }
}

/// The evidence key: signs evidence records and bundle manifests.
pub type EvidenceKey = SigningKey;
/// The provider key: signs accepted messages with the gateway's attestation.
pub type ProviderKey = SigningKey;

impl SigningKey {
    /// Unlocks the key from its TSK with the passphrase.
    pub fn unlock(path: &Path, passphrase: &Passphrase) -> Result<Self, KeyError> {
        let bytes = read_key_file(path)?;
        let malformed = |reason: String| KeyError::Malformed {
            path: path.to_owned(),
            reason,
        };
        let cert = Cert::from_bytes(&bytes).map_err(|e| malformed(e.to_string()))?;
        let key = cert
            .primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .map_err(|_| malformed("no secret key material".into()))?;
        let key = key
            .decrypt_secret(&passphrase.password())
            .map_err(|_| KeyError::WrongPassphrase(path.to_owned()))?;
        let signer = crypto::Ed25519Signer::new(&key)
            .ok_or_else(|| malformed("not an Ed25519 signing key".into()))?;
        let public = cert.clone().strip_secret_key_material();
        let armored_cert =
            String::from_utf8(public.armored().to_vec().map_err(pgp_err)?).map_err(pgp_err)?;
        Ok(Self {
            cert: public,
            signer,
            armored_cert,
        })
    }

    /// The public certificate.
    pub fn cert(&self) -> &Cert {
        &self.cert
    }

    /// The certificate, ASCII-armoured.
    pub fn armored_cert(&self) -> &str {
        &self.armored_cert
    }

    /// Upper-case hex fingerprint.
    pub fn fingerprint(&self) -> String {
        self.cert.fingerprint().to_hex()
    }

    /// A pseudonym for account `id` of kind `kind` (`u` user, `t` token): `kind-` and 16
    /// hex digits of HMAC-SHA-256 under a secret derived from this key, so only whoever
    /// holds the key can tell whom it names (by recomputing it for each candidate).
    pub fn pseudonym(&self, kind: &str, id: i64) -> String {
        let secret = self.signer.derived_secret(b"bote evidence pseudonym v1");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
        let tag = ring::hmac::sign(&key, format!("{kind}:{id}").as_bytes());
        format!("{kind}-{}", hex::encode(&tag.as_ref()[..8]))
    }

    /// A signer for sequoia's streaming API (cheap to clone).
    pub fn signer(&self) -> crypto::Ed25519Signer {
        self.signer.clone()
    }

    /// A detached binary-mode signature over `data` (binary packet; armour it for files).
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        sign_detached(&mut self.signer.clone(), data)
    }

    /// Detached signatures over several messages, sharing one unlocked key pair.
    pub fn sign_many<'a>(
        &self,
        data: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Vec<Vec<u8>>, KeyError> {
        let mut signer = self.signer.clone();
        data.into_iter()
            .map(|d| sign_detached(&mut signer, d))
            .collect()
    }
}

/// One detached binary-mode signature packet over `data`.
fn sign_detached(signer: &mut crypto::Ed25519Signer, data: &[u8]) -> Result<Vec<u8>, KeyError> {
    let sig =
        crypto::signature::detached(signer, SignatureBuilder::new(SignatureType::Binary), data)
            .map_err(pgp_err)?;
    Packet::from(sig).to_vec().map_err(pgp_err)
}

/// The log key, unlocked: signs checkpoints as C2SP signed notes.
pub struct LogKey {
    signer: signed_note::StandardSigner,
    verifier_key: String,
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogKey({})", self.verifier_key)
    }
}

impl LogKey {
    fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, KeyError> {
        let signing = ed25519_dalek::SigningKey::from_bytes(seed);
        let verifier_key = signed_note::new_ed25519_verifier_key(name, &signing.verifying_key());
        let mut public = vec![0x01];
        public.extend_from_slice(signing.verifying_key().as_bytes());
        let mut private = Zeroizing::new(vec![0x01]);
        private.extend_from_slice(seed);
        let skey = Zeroizing::new(format!(
            "PRIVATE+KEY+{name}+{:08x}+{}",
            signed_note::key_id(name, &public),
            B64.encode(&private[..])
        ));
        // Fails only for a name that is not a valid signed-note key name.
        let signer = signed_note::StandardSigner::new(&skey)
            .map_err(|e| KeyError::OpenPgp(format!("log key `{name}`: {e}")))?;
        Ok(Self {
            signer,
            verifier_key,
        })
    }

    /// A fresh key that lives only in memory (tests, benchmarks, throwaway logs).
    pub fn ephemeral(name: &str) -> Result<Self, KeyError> {
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(rand::random());
        Self::from_seed(name, &seed)
    }

    /// Unlocks the key file with the passphrase; `name` is the log origin.
    pub fn unlock(path: &Path, name: &str, passphrase: &Passphrase) -> Result<Self, KeyError> {
        let seed = unlock_seed(path, passphrase)?;
        if !signed_note::is_key_name_valid(name) {
            return Err(KeyError::Malformed {
                path: path.to_owned(),
                reason: "the log origin is not a valid signed-note key name".into(),
            });
        }
        Self::from_seed(name, &seed)
    }

    /// `name+keyid+base64(0x01‖pubkey)`.
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// The signer for signed notes.
    pub fn signer(&self) -> &signed_note::StandardSigner {
        &self.signer
    }
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    if !path.exists() {
        return Err(KeyError::Missing(path.to_owned()));
    }
    std::fs::read(path).map_err(|e| KeyError::Malformed {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The public halves, readable without the passphrase (for verification and publishing).
#[derive(Debug, Clone)]
pub struct PublicKeys {
    /// Evidence certificate.
    pub evidence: Cert,
    /// Provider certificate (verifies the gateway's signature on messages).
    pub provider: Cert,
    /// Log verifier key.
    pub log_vkey: String,
    /// Log origin.
    pub origin: String,
}

impl PublicKeys {
    /// Reads `evidence.cert.asc`, `provider.cert.asc` and `log.vkey`.
    pub fn load(config: &Config) -> Result<Self, KeyError> {
        let files = KeyFiles::in_dir(&config.keys.dir);
        let read_cert = |path: &Path| {
            Cert::from_bytes(&read_key_file(path)?).map_err(|e| KeyError::Malformed {
                path: path.to_owned(),
                reason: e.to_string(),
            })
        };
        let evidence = read_cert(&files.evidence_cert)?;
        let provider = read_cert(&files.provider_cert)?;
        let vkey = String::from_utf8(read_key_file(&files.log_vkey)?).map_err(|e| {
            KeyError::Malformed {
                path: files.log_vkey.clone(),
                reason: e.to_string(),
            }
        })?;
        Ok(Self {
            evidence,
            provider,
            log_vkey: vkey.trim().to_owned(),
            origin: log_origin(config),
        })
    }
}

/// The unlocked keys of a running gateway.
#[derive(Debug, Clone)]
pub struct KeyRing {
    /// Evidence key.
    pub evidence: Arc<EvidenceKey>,
    /// Provider key.
    pub provider: Arc<ProviderKey>,
    /// Log key.
    pub log: Arc<LogKey>,
    /// Log origin (`<domain>/log`).
    pub origin: String,
    /// Witness key, where the key directory has one (`bote keys generate` adds it).
    pub witness: Option<Arc<WitnessKey>>,
}

impl KeyRing {
    /// Loads and unlocks every key named by the configuration.
    pub fn load(config: &Config) -> Result<Self, KeyError> {
        let passphrase = Passphrase::load(config)?;
        let files = KeyFiles::in_dir(&config.keys.dir);
        let origin = log_origin(config);
        Ok(Self {
            evidence: Arc::new(EvidenceKey::unlock(&files.evidence_key, &passphrase)?),
            provider: Arc::new(ProviderKey::unlock(&files.provider_key, &passphrase)?),
            log: Arc::new(LogKey::unlock(&files.log_key, &origin, &passphrase)?),
            origin,
            witness: match files.witness_key.exists() {
                true => Some(Arc::new(WitnessKey::unlock(
                    &files.witness_key,
                    &witness_name(config),
                    &passphrase,
                )?)),
                false => None,
            },
        })
    }

    /// The text served at `/log/key`: the log verifier key alone on one line, a blank
    /// line, then the evidence certificate (spec §4).
    pub fn published_keys(&self) -> String {
        format!(
            "{}\n\n{}",
            self.log.verifier_key(),
            self.evidence.armored_cert()
        )
    }
}
