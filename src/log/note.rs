//! Checkpoints as C2SP signed notes: `<origin>\n<size>\n<base64 root>\n`, then a blank
//! line and `— <name> <base64(keyid ‖ signature)>` lines (C2SP tlog-checkpoint, signed-note).

use signed_note::{Note, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint, Hash};

use super::LogError;
use crate::keys::LogKey;

/// A checkpoint whose signature was made (or checked) with a known log key.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedCheckpoint {
    /// The log origin.
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
    /// The whole signed note, as served at `/log/checkpoint`.
    pub note: String,
}

fn err(e: impl std::fmt::Display) -> LogError {
    LogError::Checkpoint(e.to_string())
}

impl SignedCheckpoint {
    /// Signs a checkpoint for a tree of `size` entries with root `root`.
    pub fn sign(key: &LogKey, origin: &str, size: u64, root: Hash) -> Result<Self, LogError> {
        let body = Checkpoint::new(origin, size, root, "").map_err(err)?;
        let mut note = Note::new(&body.to_bytes(), &[]).map_err(err)?;
        note.add_sigs(&[key.signer()]).map_err(err)?;
        let note = String::from_utf8(note.to_bytes()).map_err(err)?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            note,
        })
    }

    /// Parses a signed note and checks that the verifier key `vkey` signed it and that its
    /// origin is the key's name.
    pub fn parse(text: &str, vkey: &str) -> Result<Self, LogError> {
        let verifier = StandardVerifier::new(vkey.trim())
            .map_err(|e| LogError::Checkpoint(format!("bad log verifier key: {e}")))?;
        let name = signed_note::Verifier::name(&verifier).to_owned();
        let note = Note::from_bytes(text.as_bytes())
            .map_err(|e| LogError::Checkpoint(format!("not a signed note: {e}")))?;
        note.verify(&VerifierList::new(vec![Box::new(verifier)]))
            .map_err(|e| LogError::Checkpoint(format!("not signed by log key {name}: {e}")))?;
        let body = Checkpoint::from_bytes(note.text())
            .map_err(|e| LogError::Checkpoint(format!("malformed checkpoint body: {e}")))?;
        if body.origin() != name {
            return Err(LogError::Checkpoint(format!(
                "origin `{}` is not the log key's name `{name}`",
                body.origin()
            )));
        }
        Ok(Self {
            origin: name,
            size: body.size(),
            root: *body.hash(),
            note: text.to_owned(),
        })
    }
}
