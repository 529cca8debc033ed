//! Witnesses (C2SP tlog-witness, tlog-cosignature): independent parties that cosign a
//! log's checkpoints only when each extends the last one they saw, so that a gateway cannot
//! show one history to a court and another to everyone else, nor fork its log after
//! restoring an old backup.
//!
//! Both sides live here: [`service`] is bote acting as a witness for its peers' logs
//! (`POST /witness/add-checkpoint`), [`client`] submits this gateway's checkpoints to the
//! witnesses it is configured with. This file holds the pure part: the cosignature/v1
//! format (Ed25519, signature type 0x04) and the add-checkpoint request body.
//!
//! Architecture invariant: a cosignature is only ever made inside the transaction that
//! moved the witness's recorded size forward (or found it equal with the same root), so no
//! two cosignatures of one witness can describe inconsistent trees.

pub mod client;
pub mod service;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use tlog_tiles::Hash;

/// Signed-note signature type of Ed25519 cosignature/v1.
const ALG_COSIGNATURE_V1: u8 = 0x04;
/// The most consistency-proof lines a request may carry (C2SP tlog-witness).
pub const MAX_PROOF_LINES: usize = 63;

/// The first four bytes of SHA-256(name ‖ "\n" ‖ 0x04 ‖ public key), as a number.
fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_COSIGNATURE_V1]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// The message a cosignature signs: a header line, a time line, then the note text.
fn signed_message(time: u64, text: &[u8]) -> Vec<u8> {
    let mut msg = format!("cosignature/v1\ntime {time}\n").into_bytes();
    msg.extend_from_slice(text);
    msg
}

/// A witness's signing key, as a signed-note [`signed_note::Signer`] that timestamps each
/// cosignature with the current time.
#[derive(Clone)]
pub struct Cosigner {
    name: String,
    id: u32,
    key: SigningKey,
}

impl std::fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cosigner({})", self.name)
    }
}

impl Cosigner {
    /// A cosigner named `name` (e.g. `lemgo.example/witness`) with `key`.
    pub fn new(name: &str, key: SigningKey) -> Self {
        Self {
            name: name.to_owned(),
            id: key_id(name, key.verifying_key().as_bytes()),
            key,
        }
    }

    /// The verifier key others configure to check this cosigner:
    /// `name+<8 hex key id>+base64(0x04 ‖ public key)`.
    pub fn verifier_key(&self) -> String {
        let mut public = vec![ALG_COSIGNATURE_V1];
        public.extend_from_slice(self.key.verifying_key().as_bytes());
        format!("{}+{:08x}+{}", self.name, self.id, B64.encode(public))
    }

    /// The cosignature line over the note text `text` (the checkpoint body) at `time`.
    pub fn cosign_at(&self, text: &[u8], time: u64) -> String {
        let sig = self.key.sign(&signed_message(time, text));
        let mut bytes = self.id.to_be_bytes().to_vec();
        bytes.extend_from_slice(&time.to_be_bytes());
        bytes.extend_from_slice(&sig.to_bytes());
        format!("\u{2014} {} {}\n", self.name, B64.encode(bytes))
    }

    /// The cosignature line over `text` now.
    pub fn cosign(&self, text: &[u8]) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.cosign_at(text, now)
    }
}

/// Why a witness verifier key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "`{key}` is not a cosignature/v1 verifier key (name+hexid+base64(0x04 ‖ 32-byte key)): {reason}"
)]
pub struct BadWitnessKey {
    /// The key as given.
    pub key: String,
    /// What is wrong.
    pub reason: &'static str,
}

/// A witness's public key: checks its cosignatures ([`signed_note::Verifier`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessKey {
    name: String,
    id: u32,
    key: VerifyingKey,
    text: String,
}

impl WitnessKey {
    /// Parses `name+hexid+base64(0x04 ‖ key)`; the id must match the name and key.
    pub fn parse(vkey: &str) -> Result<Self, BadWitnessKey> {
        let vkey = vkey.trim();
        let bad = |reason| BadWitnessKey {
            key: vkey.to_owned(),
            reason,
        };
        // Names hold no `+`; base64 may.
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(hex_id), Some(b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected three parts joined by `+`"));
        };
        if !signed_note::is_key_name_valid(name) {
            return Err(bad("invalid key name"));
        }
        let bytes = B64.decode(b64).map_err(|_| bad("the key is not base64"))?;
        let Some((&ALG_COSIGNATURE_V1, raw)) = bytes.split_first() else {
            return Err(bad("not signature type 0x04 (cosignature/v1)"));
        };
        let raw: [u8; 32] = raw.try_into().map_err(|_| bad("not a 32-byte key"))?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| bad("not an Ed25519 key"))?;
        let id = key_id(name, &raw);
        if hex_id.len() != 8 || u32::from_str_radix(hex_id, 16).ok() != Some(id) {
            return Err(bad("the key id does not match the name and key"));
        }
        Ok(Self {
            name: name.to_owned(),
            id,
            key,
            text: vkey.to_owned(),
        })
    }

    /// The witness's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The time of a valid cosignature `sig` (key id stripped) over note text `text`.
    pub fn check(&self, text: &[u8], sig: &[u8]) -> Option<u64> {
        let (time, signature) = sig.split_at_checked(8)?;
        let time = u64::from_be_bytes(time.try_into().ok()?);
        if time > i64::MAX as u64 {
            return None;
        }
        let signature = ed25519_dalek::Signature::from_slice(signature).ok()?;
        self.key
            .verify_strict(&signed_message(time, text), &signature)
            .ok()?;
        Some(time)
    }
}

impl signed_note::Verifier for WitnessKey {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.id
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        self.check(msg, sig).is_some()
    }
}

/// One cosignature that verified: who, and when they made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosignature {
    /// The witness's name.
    pub witness: String,
    /// When it cosigned (seconds since the epoch).
    pub time: u64,
    /// The signature line, as it appears in the note.
    pub line: String,
}

/// The cosignatures in signed note `note` by any of `witnesses`, each verified; lines of
/// other keys are ignored (C2SP signed-note), a line by a known key that does not verify
/// is an error.
pub fn cosignatures(note: &str, witnesses: &[WitnessKey]) -> Result<Vec<Cosignature>, String> {
    let (text, lines) = note
        .split_once("\n\n")
        .ok_or("not a signed note: no blank line before the signatures")?;
    let text = format!("{text}\n");
    let mut found: Vec<Cosignature> = Vec::new();
    for line in lines.lines() {
        let Some((name, b64)) = line
            .strip_prefix("\u{2014} ")
            .and_then(|rest| rest.split_once(' '))
        else {
            return Err(format!("malformed signature line `{line}`"));
        };
        if !witnesses.iter().any(|w| w.name == name) {
            continue;
        }
        let Ok(bytes) = B64.decode(b64) else {
            return Err(format!("signature line of {name} is not base64"));
        };
        let Some((id, sig)) = bytes.split_at_checked(4) else {
            return Err(format!("signature line of {name} is too short"));
        };
        let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
        let Some(witness) = witnesses.iter().find(|w| w.name == name && w.id == id) else {
            continue;
        };
        let time = witness
            .check(text.as_bytes(), sig)
            .ok_or_else(|| format!("the cosignature of witness {name} does not verify"))?;
        if !found.iter().any(|c| c.witness == name) {
            found.push(Cosignature {
                witness: name.to_owned(),
                time,
                line: format!("{line}\n"),
            });
        }
    }
    Ok(found)
}

/// The body of an add-checkpoint request: the size the client believes the witness holds,
/// the consistency proof from it, and the checkpoint (a signed note).
#[derive(Debug, Clone, PartialEq)]
pub struct AddCheckpoint {
    /// The previous size.
    pub old: u64,
    /// RFC 6962 consistency proof from `old` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed note.
    pub checkpoint: String,
}

impl AddCheckpoint {
    /// The request body (C2SP tlog-witness).
    pub fn to_body(&self) -> String {
        let mut body = format!("old {}\n", self.old);
        for h in &self.proof {
            body.push_str(&B64.encode(h.0));
            body.push('\n');
        }
        body.push('\n');
        body.push_str(&self.checkpoint);
        body
    }

    /// Parses a request body; the error says what is malformed (a 400).
    pub fn parse(body: &str) -> Result<Self, String> {
        let (head, checkpoint) = body
            .split_once("\n\n")
            .ok_or("expected the old size line, proof lines, a blank line, then the checkpoint")?;
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .filter(|n| *n == "0" || !n.starts_with('0'))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or("the first line must be `old <size>` in decimal without leading zeros")?;
        let mut proof = Vec::new();
        for line in lines {
            let hash: [u8; 32] = B64
                .decode(line)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| format!("`{line}` is not a base64 SHA-256 hash"))?;
            proof.push(Hash(hash));
        }
        if proof.len() > MAX_PROOF_LINES {
            return Err(format!("more than {MAX_PROOF_LINES} proof lines"));
        }
        Ok(Self {
            old,
            proof,
            checkpoint: checkpoint.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosigner() -> Cosigner {
        Cosigner::new("witness.example/w1", SigningKey::from_bytes(&[7; 32]))
    }

    const TEXT: &str = "example.com/log\n5\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

    #[test]
    fn cosignatures_verify_with_the_published_key_and_only_for_their_text() {
        let c = cosigner();
        let vkey = WitnessKey::parse(&c.verifier_key()).unwrap();
        let line = c.cosign_at(TEXT.as_bytes(), 1_700_000_000);
        let note = format!("{TEXT}\n\u{2014} example.com/log AAAA\n{line}");
        let found = cosignatures(&note, std::slice::from_ref(&vkey)).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].time, 1_700_000_000);
        assert_eq!(found[0].witness, "witness.example/w1");
        // Another text: the known key's line no longer verifies.
        let other = note.replacen("\n5\n", "\n6\n", 1);
        assert!(cosignatures(&other, std::slice::from_ref(&vkey)).is_err());
        // An unknown witness is ignored, not an error.
        let stranger = Cosigner::new("witness.example/w2", SigningKey::from_bytes(&[9; 32]));
        let stranger = WitnessKey::parse(&stranger.verifier_key()).unwrap();
        assert!(cosignatures(&note, &[stranger]).unwrap().is_empty());
    }

    #[test]
    fn verifier_keys_are_checked() {
        let good = cosigner().verifier_key();
        assert!(WitnessKey::parse(&good).is_ok());
        let b64 = good.splitn(3, '+').nth(2).unwrap();
        let wrong_id = format!("witness.example/w1+00000000+{b64}");
        assert!(WitnessKey::parse(&wrong_id).is_err());
        // A log key (type 0x01) is not a witness key.
        let log = signed_note::new_ed25519_verifier_key(
            "example.com/log",
            &SigningKey::from_bytes(&[3; 32]).verifying_key(),
        );
        assert!(WitnessKey::parse(&log).is_err());
    }

    #[test]
    fn add_checkpoint_bodies_round_trip_and_refuse_malformed_ones() {
        let req = AddCheckpoint {
            old: 3,
            proof: vec![Hash([1; 32]), Hash([2; 32])],
            checkpoint: format!("{TEXT}\n\u{2014} example.com/log AAAA\n"),
        };
        assert_eq!(AddCheckpoint::parse(&req.to_body()).unwrap(), req);
        let empty = AddCheckpoint {
            old: 0,
            proof: vec![],
            checkpoint: req.checkpoint.clone(),
        };
        assert!(empty.to_body().starts_with("old 0\n\n"));
        assert_eq!(AddCheckpoint::parse(&empty.to_body()).unwrap(), empty);
        for bad in [
            "old 03\n\nx",
            "old -1\n\nx",
            "olde 3\n\nx",
            "old 3\nnot-base64\n\nx",
            "old 3\n",
        ] {
            assert!(AddCheckpoint::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!(
            "old 1\n{}\n{TEXT}",
            "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n".repeat(64)
        );
        assert!(AddCheckpoint::parse(&long).is_err());
    }
}
