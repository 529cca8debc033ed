//! Key wrapping for zero access at rest (spec §5, DESIGN-NOTES §3).
//!
//! A mailbox's secret key is sealed under a random 256-bit **data key**; the data key is
//! wrapped once per way in: a member's **user key**, the mailbox **recovery code**, each
//! **read token**. A user key is itself wrapped under Argon2id(password) and under the user's
//! recovery code. Secrets with full entropy (recovery codes, tokens, session secrets) go
//! through HKDF-SHA256; passwords through Argon2id. Sealing is AES-256-GCM with a random
//! nonce, and the purpose and owner of every blob are bound as associated data, so a wrap
//! copied to another mailbox or purpose does not open.
//!
//! Wire form of a sealed blob: `0x01 ‖ nonce (12) ‖ ciphertext ‖ tag (16)`.

use argon2::{Algorithm, Argon2, Params, Version};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hmac;
use zeroize::Zeroizing;

use super::CryptoError;

const FORMAT: u8 = 1;
/// HKDF salt of every key derived from a high-entropy secret.
const HKDF_SALT: &[u8] = b"bote key derivation v1";
const NONCE: usize = 12;
const TAG: usize = 16;

/// A 256-bit symmetric key, wiped when dropped.
#[derive(Clone)]
pub struct Key32(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Key32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key32(***)")
    }
}

impl Key32 {
    /// A fresh random key.
    pub fn random() -> Self {
        Self(Zeroizing::new(rand::random()))
    }

    /// The key bytes (for sealing inside another wrap).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key from exactly 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CryptoError::Unwrap("wrapped key has the wrong length".into()))?;
        Ok(Self(Zeroizing::new(arr)))
    }

    /// Derives a key from a high-entropy secret (recovery code, token, session secret):
    /// HKDF-SHA256 (RFC 5869) with a fixed salt and the purpose as info. The output is one
    /// hash block, so expansion is the single HMAC `T(1) = HMAC(PRK, info ‖ 0x01)`, written
    /// out with HMAC so that no length check can fail and leave a default key behind.
    pub fn from_secret(secret: &[u8], purpose: &str) -> Self {
        let salt = hmac::Key::new(hmac::HMAC_SHA256, HKDF_SALT);
        let prk = hmac::sign(&salt, secret);
        let prk = hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref());
        let mut ctx = hmac::Context::with_key(&prk);
        ctx.update(purpose.as_bytes());
        ctx.update(&[1]);
        let mut out = Zeroizing::new([0u8; 32]);
        // HMAC-SHA256 tags are exactly 32 bytes.
        out.copy_from_slice(ctx.sign().as_ref());
        Self(out)
    }

    /// Derives a key from a password with Argon2id (19 MiB, t = 2, p = 1) and a 16-byte salt.
    /// CPU-heavy: run it on the crypto pool.
    pub fn from_password(password: &str, salt: &[u8; 16]) -> Result<Self, CryptoError> {
        let params = Params::new(19 * 1024, 2, 1, Some(32))
            .map_err(|e| CryptoError::Unwrap(e.to_string()))?;
        let mut out = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(password.as_bytes(), salt, &mut out[..])
            .map_err(|e| CryptoError::Unwrap(e.to_string()))?;
        Ok(Self(out))
    }
}

fn cipher(key: &Key32) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(&AES_256_GCM, &key.0[..])
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::Unwrap("bad key".into()))
}

/// Seals `plaintext` under `key`, bound to `context` (purpose and owner, e.g.
/// `mailbox-secret:bauamt@lemgo.example`).
pub fn seal(key: &Key32, plaintext: &[u8], context: &str) -> Result<Vec<u8>, CryptoError> {
    let nonce: [u8; NONCE] = rand::random();
    let mut buf = plaintext.to_vec();
    cipher(key)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.as_bytes()),
            &mut buf,
        )
        .map_err(|_| CryptoError::Unwrap("sealing failed".into()))?;
    let mut out = Vec::with_capacity(1 + NONCE + buf.len());
    out.push(FORMAT);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    Ok(out)
}

/// Opens what [`seal`] produced with the same key and context; anything else fails.
pub fn open(key: &Key32, sealed: &[u8], context: &str) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let wrong = || CryptoError::Unwrap("wrong key, or the data was changed".into());
    if sealed.len() < 1 + NONCE + TAG || sealed[0] != FORMAT {
        return Err(CryptoError::Unwrap(
            "not a sealed blob of a known format".into(),
        ));
    }
    let nonce: [u8; NONCE] = sealed[1..=NONCE].try_into().map_err(|_| wrong())?;
    let mut buf = Zeroizing::new(sealed[1 + NONCE..].to_vec());
    let len = cipher(key)?
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.as_bytes()),
            &mut buf[..],
        )
        .map_err(|_| wrong())?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// A recovery code: 25 characters of Crockford base32 in five groups (125 bits), printed
/// once, typed back in on recovery (case and separators ignored).
pub fn recovery_code() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let bytes: [u8; 25] = rand::random();
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(b & 31)] as char)
        .collect();
    chars
        .chunks(5)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// The canonical form of a typed recovery code (upper-case, no separators, Crockford
/// look-alikes mapped), so that `abcd-…` and `ABCD…` derive the same key.
pub fn normalise_recovery_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_rfc_5869_hkdf_sha256() {
        // The reference: ring's HKDF with the same salt and info. Keys derived before the
        // HMAC formulation must stay the same, or stored wraps would no longer open.
        use ring::hkdf::{HKDF_SHA256, Salt};
        for (secret, purpose) in [
            (&b"token"[..], "session"),
            (b"", ""),
            (&[7u8; 100], "read-token"),
        ] {
            let prk = Salt::new(HKDF_SHA256, HKDF_SALT).extract(secret);
            let info = [purpose.as_bytes()];
            let mut expected = [0u8; 32];
            prk.expand(&info, HKDF_SHA256)
                .unwrap()
                .fill(&mut expected)
                .unwrap();
            assert_eq!(Key32::from_secret(secret, purpose).as_bytes(), &expected);
        }
        assert_ne!(
            Key32::from_secret(b"token", "session").as_bytes(),
            Key32::from_secret(b"token", "read-token").as_bytes()
        );
    }

    #[test]
    fn seal_open_and_bindings() {
        let data_key = Key32::random();
        let user_key = Key32::random();
        let wrapped = seal(
            &user_key,
            data_key.as_bytes(),
            "data-key:bauamt@lemgo.example",
        )
        .unwrap();
        let opened = open(&user_key, &wrapped, "data-key:bauamt@lemgo.example").unwrap();
        assert_eq!(&opened[..], &data_key.as_bytes()[..]);
        // Another mailbox's context, another key, or a flipped byte: nothing opens.
        assert!(open(&user_key, &wrapped, "data-key:ordnungsamt@lemgo.example").is_err());
        assert!(open(&Key32::random(), &wrapped, "data-key:bauamt@lemgo.example").is_err());
        for i in 0..wrapped.len() {
            let mut bad = wrapped.clone();
            bad[i] ^= 1;
            assert!(
                open(&user_key, &bad, "data-key:bauamt@lemgo.example").is_err(),
                "byte {i}"
            );
        }
        // Fresh nonce every time.
        assert_ne!(
            wrapped,
            seal(
                &user_key,
                data_key.as_bytes(),
                "data-key:bauamt@lemgo.example"
            )
            .unwrap()
        );
    }

    #[test]
    fn password_and_secret_derivation() {
        let salt = [7u8; 16];
        let a = Key32::from_password("correct horse battery", &salt).unwrap();
        let b = Key32::from_password("correct horse battery", &salt).unwrap();
        let c = Key32::from_password("correct horse batterz", &salt).unwrap();
        assert_eq!(a.as_bytes(), b.as_bytes());
        assert_ne!(a.as_bytes(), c.as_bytes());
        let code = recovery_code();
        assert_eq!(code.len(), 29);
        let k1 = Key32::from_secret(normalise_recovery_code(&code).as_bytes(), "recovery");
        let k2 = Key32::from_secret(
            normalise_recovery_code(&code.to_lowercase().replace('-', " ")).as_bytes(),
            "recovery",
        );
        assert_eq!(k1.as_bytes(), k2.as_bytes());
        assert_ne!(
            k1.as_bytes(),
            Key32::from_secret(code.as_bytes(), "token").as_bytes()
        );
    }
}
