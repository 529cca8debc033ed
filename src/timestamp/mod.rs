//! Trusted time (RFC 3161): a time-stamping authority (TSA) signs that a checkpoint existed
//! at a time it vouches for, so that the time of the evidence does not rest on the
//! gateway's clock alone. The token travels in proof bundles as `checkpoint.tst`.
//!
//! The verification here is what docs/proof-bundle.md ("Time-stamp") specifies: a CMS
//! SignedData with one signer, a TSTInfo whose message imprint is SHA-256 of the checkpoint
//! body, signed attributes with the content type, the message digest and an ESS signing
//! certificate that names the TSA certificate inside the token, a signature by that
//! certificate's key (RSA PKCS #1 v1.5, ECDSA P-256/P-384 or Ed25519), a certificate for
//! time-stamping only (critical extended key usage) valid at the time stamped.

use cms::cert::x509::Certificate;
use cms::cert::x509::ext::pkix::ExtendedKeyUsage;
use cms::cert::x509::ext::pkix::SubjectKeyIdentifier;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use der::asn1::{Int, OctetString};
use der::oid::ObjectIdentifier;
use der::{Any, Decode, Encode, Sequence};
use sha2::{Digest, Sha256};
use x509_tsp::{MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

mod oid {
    use der::oid::ObjectIdentifier as Oid;
    pub const SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
    pub const TST_INFO: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.1.4");
    pub const CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
    pub const MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
    pub const SIGNING_CERTIFICATE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.12");
    pub const SIGNING_CERTIFICATE_V2: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.47");
    pub const SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
    pub const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
    pub const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
    pub const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");
    pub const RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
    pub const SHA256_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
    pub const SHA384_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
    pub const SHA512_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
    pub const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
    pub const P256: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
    pub const P384: Oid = Oid::new_unwrap("1.3.132.0.34");
    pub const ECDSA_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
    pub const ECDSA_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
    pub const ED25519: Oid = Oid::new_unwrap("1.3.101.112");
    pub const EXTENDED_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37");
    pub const TIME_STAMPING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.8");
    pub const SUBJECT_KEY_ID: Oid = Oid::new_unwrap("2.5.29.14");
}

/// Why a time-stamp was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimeStampError {
    /// Not DER of the expected structure.
    #[error("malformed time-stamp: {0}")]
    Malformed(String),
    /// The TSA did not grant the request.
    #[error("the time-stamping authority refused: status {0}")]
    NotGranted(String),
    /// The token is for other data.
    #[error("the time-stamp is for other data than the checkpoint")]
    Imprint,
    /// The response does not answer this request.
    #[error("the time-stamp answers another request (nonce)")]
    Nonce,
    /// The signed attributes or signature do not verify.
    #[error("the time-stamp's signature does not verify: {0}")]
    Signature(String),
    /// The TSA certificate is unusable.
    #[error("the time-stamping certificate is not acceptable: {0}")]
    Certificate(String),
    /// The TSA could not be reached or answered with an HTTP error.
    #[error("cannot get a time-stamp: {0}")]
    Unreachable(String),
    /// The TSA certificate is not the one required.
    #[error("time-stamped by certificate {found}, not by {expected}")]
    Untrusted {
        /// SHA-256 of the token's TSA certificate.
        found: String,
        /// What was required.
        expected: String,
    },
}

fn malformed(what: &str, e: impl std::fmt::Display) -> TimeStampError {
    TimeStampError::Malformed(format!("{what}: {e}"))
}

/// A verified time-stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeStamp {
    /// The time the TSA vouches for, seconds since the epoch.
    pub time: u64,
    /// The TSA certificate's subject.
    pub tsa: String,
    /// SHA-256 of the TSA certificate (DER), lower-case hex: what trust files pin.
    pub certificate_sha256: String,
    /// The token's serial number (hex).
    pub serial: String,
}

/// A request for a time-stamp over SHA-256(`data`), with the TSA's certificate included in
/// the answer; returns the DER and the nonce to expect back.
pub fn request(data: &[u8]) -> Result<(Vec<u8>, Vec<u8>), TimeStampError> {
    let mut nonce = rand::random::<[u8; 8]>();
    nonce[0] &= 0x7f; // A positive INTEGER without a leading zero byte.
    nonce[0] |= 0x01;
    let req = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: imprint(data)?,
        req_policy: None,
        nonce: Some(Int::new(&nonce).map_err(|e| malformed("nonce", e))?),
        cert_req: true,
        extensions: None,
    };
    let der = req.to_der().map_err(|e| malformed("request", e))?;
    Ok((der, nonce.to_vec()))
}

fn imprint(data: &[u8]) -> Result<MessageImprint, TimeStampError> {
    Ok(MessageImprint {
        hash_algorithm: spki::AlgorithmIdentifier {
            oid: oid::SHA256,
            parameters: Some(Any::from(der::asn1::AnyRef::NULL)),
        },
        hashed_message: OctetString::new(Sha256::digest(data).to_vec())
            .map_err(|e| malformed("imprint", e))?,
    })
}

/// Asks the TSA at `url` for a time-stamp over `data`: the token (DER) and what it says,
/// checked, and pinned to the certificates `pinned` (SHA-256, hex) unless that is empty.
pub async fn obtain(
    http: &crate::outbound::HttpClient,
    url: &str,
    data: &[u8],
    pinned: &[String],
) -> Result<(Vec<u8>, TimeStamp), TimeStampError> {
    let (query, nonce) = request(data)?;
    let (status, _, body) = http
        .post(url, "application/timestamp-query", query)
        .await
        .map_err(TimeStampError::Unreachable)?;
    if status != 200 {
        return Err(TimeStampError::Unreachable(format!(
            "{url} answered HTTP {status}"
        )));
    }
    let (token, stamp) = token_from_response(&body, data, &nonce)?;
    verify(&token, data, pinned)?;
    Ok((token, stamp))
}

/// The token in a TSA's response to [`request`], checked against `data` and `nonce`.
pub fn token_from_response(
    response: &[u8],
    data: &[u8],
    nonce: &[u8],
) -> Result<(Vec<u8>, TimeStamp), TimeStampError> {
    let resp = TimeStampResp::from_der(response).map_err(|e| malformed("response", e))?;
    let status = resp.status.status;
    if !matches!(
        status,
        cmpv2::status::PkiStatus::Accepted | cmpv2::status::PkiStatus::GrantedWithMods
    ) {
        return Err(TimeStampError::NotGranted(format!("{status:?}")));
    }
    let token = resp
        .time_stamp_token
        .ok_or_else(|| TimeStampError::Malformed("granted, but no token".into()))?
        .to_der()
        .map_err(|e| malformed("token", e))?;
    let (stamp, tst) = check(&token, data)?;
    if tst.nonce.as_ref().map(Int::as_bytes) != Some(nonce) {
        return Err(TimeStampError::Nonce);
    }
    Ok((token, stamp))
}

/// Verifies token `token` (a DER ContentInfo) over `data`; with `pinned`, the TSA
/// certificate's SHA-256 must be one of those.
pub fn verify(token: &[u8], data: &[u8], pinned: &[String]) -> Result<TimeStamp, TimeStampError> {
    let (stamp, _) = check(token, data)?;
    if !pinned.is_empty()
        && !pinned
            .iter()
            .any(|p| p.eq_ignore_ascii_case(&stamp.certificate_sha256))
    {
        return Err(TimeStampError::Untrusted {
            found: stamp.certificate_sha256,
            expected: pinned.join(" or "),
        });
    }
    Ok(stamp)
}

fn check(token: &[u8], data: &[u8]) -> Result<(TimeStamp, TstInfo), TimeStampError> {
    let info = ContentInfo::from_der(token).map_err(|e| malformed("token", e))?;
    if info.content_type != oid::SIGNED_DATA {
        return Err(TimeStampError::Malformed("not a CMS SignedData".into()));
    }
    let signed: SignedData = info
        .content
        .decode_as()
        .map_err(|e| malformed("SignedData", e))?;
    if signed.encap_content_info.econtent_type != oid::TST_INFO {
        return Err(TimeStampError::Malformed(
            "the content is not a TSTInfo".into(),
        ));
    }
    let econtent = signed
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| TimeStampError::Malformed("no TSTInfo in the token".into()))?;
    let econtent = OctetString::from_der(&econtent.to_der().map_err(|e| malformed("TSTInfo", e))?)
        .map_err(|e| malformed("TSTInfo", e))?;
    let tst = TstInfo::from_der(econtent.as_bytes()).map_err(|e| malformed("TSTInfo", e))?;
    if tst.message_imprint != imprint(data)? {
        return Err(TimeStampError::Imprint);
    }
    let signers: Vec<&SignerInfo> = signed.signer_infos.0.iter().collect();
    let [signer] = signers.as_slice() else {
        return Err(TimeStampError::Malformed(format!(
            "{} signers where there must be one",
            signers.len()
        )));
    };
    check_unsigned_fields(&signed, signer)?;
    let cert = signer_certificate(&signed, signer)?;
    let cert_der = cert.to_der().map_err(|e| malformed("certificate", e))?;
    check_signed_attributes(signer, econtent.as_bytes(), &cert_der)?;
    check_signature(signer, &cert)?;
    let time = tst.gen_time.to_unix_duration().as_secs();
    check_certificate(&cert, time)?;
    let stamp = TimeStamp {
        time,
        tsa: cert.tbs_certificate.subject.to_string(),
        certificate_sha256: hex::encode(Sha256::digest(&cert_der)),
        serial: hex::encode(tst.serial_number.as_bytes()),
    };
    Ok((stamp, tst))
}

/// The fields no signature covers must have their one valid value, so that a token has no
/// variants that verify alike: SignedData version 3, the signer's digest algorithm SHA-256,
/// -384 or -512 and the digest algorithm set holding it alone, the SignerInfo version
/// matching its identifier (1 issuer and serial, 3 key identifier).
fn check_unsigned_fields(signed: &SignedData, signer: &SignerInfo) -> Result<(), TimeStampError> {
    use cms::content_info::CmsVersion;
    let bad = |m: &str| TimeStampError::Malformed(m.to_owned());
    if signed.version != CmsVersion::V3 {
        return Err(bad("SignedData version must be 3"));
    }
    // RSA and ECDSA tie the digest to the signature algorithm (check_signature); Ed25519
    // does not, so a SHA-1 message digest would otherwise pass (docs/proof-bundle.md §12.3).
    let digest_alg = signer.digest_alg.oid;
    if ![oid::SHA256, oid::SHA384, oid::SHA512].contains(&digest_alg) {
        return Err(TimeStampError::Malformed(format!(
            "the signer's digest algorithm {digest_alg} is not SHA-256, SHA-384 or SHA-512"
        )));
    }
    let algs: Vec<_> = signed.digest_algorithms.iter().collect();
    if algs.len() != 1 || algs[0] != &signer.digest_alg {
        return Err(bad(
            "the digest algorithms must be exactly the signer's digest algorithm",
        ));
    }
    let expected = match signer.sid {
        SignerIdentifier::IssuerAndSerialNumber(_) => CmsVersion::V1,
        SignerIdentifier::SubjectKeyIdentifier(_) => CmsVersion::V3,
    };
    if signer.version != expected {
        return Err(bad("the SignerInfo version does not match its identifier"));
    }
    // RSA identifiers carry NULL parameters; ECDSA and Ed25519 none (RFC 4055, 5758, 8410).
    let params = signer.signature_algorithm.parameters.as_ref();
    let null_params =
        params.is_some_and(|p| der::Tagged::tag(p) == der::Tag::Null && p.value().is_empty());
    let params_ok = match signer.signature_algorithm.oid {
        oid::RSA | oid::SHA256_RSA | oid::SHA384_RSA | oid::SHA512_RSA => null_params,
        _ => params.is_none(),
    };
    if !params_ok {
        return Err(bad(
            "the signature algorithm's parameters are not the prescribed ones",
        ));
    }
    if signer.unsigned_attrs.is_some() {
        return Err(bad("unsigned attributes are not accepted"));
    }
    Ok(())
}

/// The certificate in the token that the signer identifier names.
fn signer_certificate(
    signed: &SignedData,
    signer: &SignerInfo,
) -> Result<Certificate, TimeStampError> {
    let certs = signed.certificates.as_ref().ok_or_else(|| {
        TimeStampError::Certificate("the token carries no certificate (request certReq)".into())
    })?;
    for choice in certs.0.iter() {
        let cms::cert::CertificateChoices::Certificate(cert) = choice else {
            continue;
        };
        let matches = match &signer.sid {
            SignerIdentifier::IssuerAndSerialNumber(id) => {
                id.issuer == cert.tbs_certificate.issuer
                    && id.serial_number == cert.tbs_certificate.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => {
                subject_key_id(cert).as_ref() == Some(ski)
            }
        };
        if matches {
            return Ok(cert.clone());
        }
    }
    Err(TimeStampError::Certificate(
        "no certificate in the token matches its signer".into(),
    ))
}

fn subject_key_id(cert: &Certificate) -> Option<SubjectKeyIdentifier> {
    cert.tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == oid::SUBJECT_KEY_ID)
        .and_then(|e| SubjectKeyIdentifier::from_der(e.extn_value.as_bytes()).ok())
}

#[derive(Sequence)]
struct EssCertIdV2 {
    #[asn1(optional = "true")]
    hash_algorithm: Option<spki::AlgorithmIdentifierOwned>,
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<Any>,
}

#[derive(Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
    #[asn1(optional = "true")]
    policies: Option<Any>,
}

#[derive(Sequence)]
struct EssCertId {
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<Any>,
}

#[derive(Sequence)]
struct SigningCertificate {
    certs: Vec<EssCertId>,
    #[asn1(optional = "true")]
    policies: Option<Any>,
}

fn digest(alg: &ObjectIdentifier, data: &[u8]) -> Result<Vec<u8>, TimeStampError> {
    let alg = match *alg {
        oid::SHA256 => &ring::digest::SHA256,
        oid::SHA384 => &ring::digest::SHA384,
        oid::SHA512 => &ring::digest::SHA512,
        oid::SHA1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        other => {
            return Err(TimeStampError::Signature(format!(
                "unsupported digest algorithm {other}"
            )));
        }
    };
    Ok(ring::digest::digest(alg, data).as_ref().to_vec())
}

/// Content type, message digest of the TSTInfo, and an ESS signing certificate naming
/// `cert_der`.
fn check_signed_attributes(
    signer: &SignerInfo,
    econtent: &[u8],
    cert_der: &[u8],
) -> Result<(), TimeStampError> {
    let bad = |m: &str| TimeStampError::Signature(m.to_owned());
    let attrs = signer
        .signed_attrs
        .as_ref()
        .ok_or_else(|| bad("no signed attributes"))?;
    let single = |id: ObjectIdentifier| -> Option<&Any> {
        let found: Vec<_> = attrs.iter().filter(|a| a.oid == id).collect();
        match found.as_slice() {
            [a] if a.values.len() == 1 => a.values.iter().next(),
            _ => None,
        }
    };
    let content_type = single(oid::CONTENT_TYPE)
        .and_then(|v| v.decode_as::<ObjectIdentifier>().ok())
        .ok_or_else(|| bad("no single content-type attribute"))?;
    if content_type != oid::TST_INFO {
        return Err(bad("the content-type attribute is not TSTInfo"));
    }
    let message_digest = single(oid::MESSAGE_DIGEST)
        .and_then(|v| v.decode_as::<OctetString>().ok())
        .ok_or_else(|| bad("no single message-digest attribute"))?;
    if message_digest.as_bytes() != digest(&signer.digest_alg.oid, econtent)? {
        return Err(bad("the message digest is not the TSTInfo's"));
    }
    let names_cert = if let Some(v2) = single(oid::SIGNING_CERTIFICATE_V2) {
        let v2: SigningCertificateV2 = v2
            .decode_as()
            .map_err(|e| malformed("signingCertificateV2", e))?;
        let first = v2
            .certs
            .first()
            .ok_or_else(|| bad("empty signingCertificateV2"))?;
        let alg = first.hash_algorithm.as_ref().map_or(oid::SHA256, |a| a.oid);
        first.cert_hash.as_bytes() == digest(&alg, cert_der)?
    } else if let Some(v1) = single(oid::SIGNING_CERTIFICATE) {
        let v1: SigningCertificate = v1
            .decode_as()
            .map_err(|e| malformed("signingCertificate", e))?;
        let first = v1
            .certs
            .first()
            .ok_or_else(|| bad("empty signingCertificate"))?;
        first.cert_hash.as_bytes() == digest(&oid::SHA1, cert_der)?
    } else {
        return Err(bad("no ESS signing-certificate attribute"));
    };
    if !names_cert {
        return Err(bad(
            "the ESS signing-certificate attribute names another certificate",
        ));
    }
    Ok(())
}

/// The signature over the DER of the signed attributes, by the certificate's key.
fn check_signature(signer: &SignerInfo, cert: &Certificate) -> Result<(), TimeStampError> {
    use ring::signature as sig;
    let bad = |m: String| TimeStampError::Signature(m);
    let signed = signer
        .signed_attrs
        .as_ref()
        .ok_or_else(|| bad("no signed attributes".into()))?
        .to_der()
        .map_err(|e| malformed("signed attributes", e))?;
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| bad("the public key is not whole bytes".into()))?;
    let digest_alg = signer.digest_alg.oid;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    let algorithm: &dyn sig::VerificationAlgorithm = match (
        spki.algorithm.oid,
        signer.signature_algorithm.oid,
        digest_alg,
    ) {
        (oid::RSA, oid::RSA | oid::SHA256_RSA, oid::SHA256) => &sig::RSA_PKCS1_2048_8192_SHA256,
        (oid::RSA, oid::RSA | oid::SHA384_RSA, oid::SHA384) => &sig::RSA_PKCS1_2048_8192_SHA384,
        (oid::RSA, oid::RSA | oid::SHA512_RSA, oid::SHA512) => &sig::RSA_PKCS1_2048_8192_SHA512,
        (oid::EC_PUBLIC_KEY, oid::ECDSA_SHA256, oid::SHA256) if curve == Some(oid::P256) => {
            &sig::ECDSA_P256_SHA256_ASN1
        }
        (oid::EC_PUBLIC_KEY, oid::ECDSA_SHA384, oid::SHA384) if curve == Some(oid::P384) => {
            &sig::ECDSA_P384_SHA384_ASN1
        }
        (oid::ED25519, oid::ED25519, _) => &sig::ED25519,
        (key_alg, sig_alg, digest) => {
            return Err(bad(format!(
                "unsupported combination: key {key_alg}, signature {sig_alg}, digest {digest}"
            )));
        }
    };
    sig::UnparsedPublicKey::new(algorithm, key)
        .verify(&signed, signer.signature.as_bytes())
        .map_err(|_| bad("not made by the time-stamping certificate's key".into()))
}

/// For time-stamping only (critical extended key usage), valid at `time`.
fn check_certificate(cert: &Certificate, time: u64) -> Result<(), TimeStampError> {
    let bad = |m: String| TimeStampError::Certificate(m);
    let validity = &cert.tbs_certificate.validity;
    let from = validity.not_before.to_unix_duration().as_secs();
    let until = validity.not_after.to_unix_duration().as_secs();
    if time < from || time > until {
        return Err(bad(format!(
            "not valid at the time stamped ({time}; valid {from} to {until})"
        )));
    }
    let eku = cert
        .tbs_certificate
        .extensions
        .as_ref()
        .and_then(|exts| exts.iter().find(|e| e.extn_id == oid::EXTENDED_KEY_USAGE))
        .ok_or_else(|| bad("no extended key usage".into()))?;
    let usages = ExtendedKeyUsage::from_der(eku.extn_value.as_bytes())
        .map_err(|e| malformed("extended key usage", e))?;
    if !eku.critical || usages.0 != [oid::TIME_STAMPING] {
        return Err(bad(
            "the extended key usage must be critical and time-stamping only (RFC 3161 §2.3)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cms::cert::x509::attr::Attribute;
    use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
    use cms::content_info::CmsVersion;
    use cms::signed_data::{CertificateSet, EncapsulatedContentInfo, SignerInfos};
    use der::asn1::{GeneralizedTime, SetOfVec};
    use rcgen::SigningKey;

    const DATA: &[u8] = b"lemgo.example/log\n8\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

    /// A self-signed Ed25519 TSA certificate (critical EKU, time-stamping only) and its key.
    fn ed25519_tsa() -> (Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "bote test TSA");
        let eku = ExtendedKeyUsage(vec![oid::TIME_STAMPING]).to_der().unwrap();
        let mut ext = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 37], eku);
        ext.set_criticality(true);
        params.custom_extensions.push(ext);
        let cert = params.self_signed(&key).unwrap();
        (Certificate::from_der(cert.der()).unwrap(), key)
    }

    /// A token over [`DATA`], signed with Ed25519 (which fixes no digest of its own), whose
    /// signer names `digest_alg` and digests the TSTInfo with it.
    fn ed25519_token(digest_alg: ObjectIdentifier) -> Vec<u8> {
        let (cert, key) = ed25519_tsa();
        let tst = TstInfo {
            version: TspVersion::V1,
            policy: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.1"),
            message_imprint: imprint(DATA).unwrap(),
            serial_number: Int::new(&[0x2a]).unwrap(),
            gen_time: GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(
                1_795_000_000,
            ))
            .unwrap(),
            accuracy: None,
            ordering: false,
            nonce: None,
            tsa: None,
            extensions: None,
        }
        .to_der()
        .unwrap();
        let alg = |oid| spki::AlgorithmIdentifierOwned {
            oid,
            parameters: None,
        };
        let attr = |oid, value: Any| Attribute {
            oid,
            values: SetOfVec::try_from(vec![value]).unwrap(),
        };
        let ess = SigningCertificateV2 {
            certs: vec![EssCertIdV2 {
                hash_algorithm: None,
                cert_hash: OctetString::new(Sha256::digest(cert.to_der().unwrap()).to_vec())
                    .unwrap(),
                issuer_serial: None,
            }],
            policies: None,
        };
        let message_digest = OctetString::new(digest(&digest_alg, &tst).unwrap()).unwrap();
        let signed_attrs = SetOfVec::try_from(vec![
            attr(oid::CONTENT_TYPE, Any::encode_from(&oid::TST_INFO).unwrap()),
            attr(
                oid::MESSAGE_DIGEST,
                Any::encode_from(&message_digest).unwrap(),
            ),
            attr(oid::SIGNING_CERTIFICATE_V2, Any::encode_from(&ess).unwrap()),
        ])
        .unwrap();
        let signature = key.sign(&signed_attrs.to_der().unwrap()).unwrap();
        let signer = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: cert.tbs_certificate.issuer.clone(),
                serial_number: cert.tbs_certificate.serial_number.clone(),
            }),
            digest_alg: alg(digest_alg),
            signed_attrs: Some(signed_attrs),
            signature_algorithm: alg(oid::ED25519),
            signature: OctetString::new(signature).unwrap(),
            unsigned_attrs: None,
        };
        let signed = SignedData {
            version: CmsVersion::V3,
            digest_algorithms: SetOfVec::try_from(vec![alg(digest_alg)]).unwrap(),
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: oid::TST_INFO,
                econtent: Some(Any::encode_from(&OctetString::new(tst).unwrap()).unwrap()),
            },
            certificates: Some(CertificateSet(
                SetOfVec::try_from(vec![CertificateChoices::Certificate(cert)]).unwrap(),
            )),
            crls: None,
            signer_infos: SignerInfos(SetOfVec::try_from(vec![signer]).unwrap()),
        };
        ContentInfo {
            content_type: oid::SIGNED_DATA,
            content: Any::encode_from(&signed).unwrap(),
        }
        .to_der()
        .unwrap()
    }

    #[test]
    fn the_signers_digest_algorithm_is_sha2_only() {
        for alg in [oid::SHA256, oid::SHA384, oid::SHA512] {
            let stamp = verify(&ed25519_token(alg), DATA, &[]).unwrap();
            assert_eq!(stamp.time, 1_795_000_000);
        }
        // SHA-1 (or anything else) as the signer's digest: docs/proof-bundle.md §12.3.
        let e = verify(&ed25519_token(oid::SHA1), DATA, &[]).unwrap_err();
        assert!(
            matches!(&e, TimeStampError::Malformed(why) if why.contains("digest algorithm")),
            "{e}"
        );
    }
}
