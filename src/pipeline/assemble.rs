//! Assembling an accepted submission on the crypto pool: compose and parse the content,
//! sign it once with the provider key, encrypt the signed message per recipient copy (and
//! per external office as a PGP/MIME relay job), and sign the evidence records.

use std::sync::Arc;

use sequoia_openpgp::{Cert, KeyHandle};

use super::recipients::Recipient;
use super::{Refusal, SubmitError, Submitter, new_id};
use crate::accounts::{Mailbox, MailboxKind};
use crate::address::EmailAddress;
use crate::crypto::endtoend;
use crate::crypto::message::{self as pgp, Attestation};
use crate::evidence::record::{AttachmentList, ChainLink, Fact, Head, RecordOptions};
use crate::evidence::{
    self, Attachment, Details, Event, EvidenceError, EvidenceRecord, IdentityAssurance, MessageRef,
    ReasonCode, Sender, Sha256Digest, SignedRecord, Timestamp,
};
use crate::keys::KeyRing;
use crate::message::mime;
use crate::message::{Content, Options};
use crate::store::messages::{CopyRow, JobRow};

pub(super) fn evidence_sender(from: &Submitter) -> Sender {
    Sender {
        address: from.mailbox.address.clone(),
        identity: assurance(&from.mailbox),
        auth_level: from.auth_level,
    }
}

pub(super) fn attestation(from: &Submitter, options: Options) -> Attestation {
    Attestation {
        sender: from.mailbox.address.to_string(),
        identity: from.mailbox.identity.verification.as_ref().map_or_else(
            || "unverified".to_owned(),
            |v| format!("verified:{}", v.method),
        ),
        auth_level: from.auth_level.as_str().to_owned(),
        authoritative: options.authoritative,
    }
}

/// What the records of one submission share.
pub(super) fn head(
    keys: &KeyRing,
    issuer: &str,
    sender: &Sender,
    message: MessageRef,
    options: Options,
    now: i64,
) -> Head {
    Head {
        issuer: issuer.to_owned(),
        issuer_key: keys.evidence.fingerprint(),
        sender: sender.clone(),
        message,
        options: Some(record_options(options)),
        submission_time: Timestamp(now),
    }
}

/// The options as evidence records them.
pub(super) fn record_options(options: Options) -> RecordOptions {
    RecordOptions {
        authoritative: options.authoritative,
        personal: options.personal,
        retrieval_confirmation: options.retrieval_confirmation,
    }
}

/// A mailbox owner's identity assurance, as evidence records it.
pub(super) fn assurance(mailbox: &Mailbox) -> IdentityAssurance {
    let verification = mailbox.identity.verification.as_ref();
    IdentityAssurance {
        verified: verification.is_some(),
        method: verification.map(|v| v.method),
    }
}

/// The submitted bytes and what evidence needs from them.
pub(super) struct Prepared {
    pub(super) bytes: pgp::Digested,
    pub(super) size: u64,
    pub(super) sha256: Sha256Digest,
    pub(super) message_id: Option<String>,
    /// The gateway wrote the Message-ID (composed content), rather than the sender.
    pub(super) message_id_assigned: bool,
    pub(super) from: Option<String>,
    /// What records list of the attachments (bounded), and the summary of a long list.
    pub(super) attachments: (Vec<Attachment>, Option<AttachmentList>),
    pub(super) end_to_end: bool,
    /// For content the sender encrypted: the recipients its session keys name (`None`
    /// entries are anonymous).
    pub(super) encrypted_to: Option<Vec<Option<KeyHandle>>>,
    /// A limit the content breaks: size (then nothing was parsed) or MIME structure.
    pub(super) over_limit: Option<(Refusal, String)>,
}

impl Prepared {
    pub(super) fn message_ref(&self, gateway_id: &str) -> MessageRef {
        MessageRef {
            gateway_id: gateway_id.to_owned(),
            message_id: self.message_id.clone(),
            sha256: self.sha256,
            size: self.size,
            attachments: self.attachments.0.clone(),
            all_attachments: self.attachments.1.clone(),
        }
    }
}

/// The content limits a submission is held to (spec §2).
#[derive(Debug, Clone, Copy)]
pub(super) struct ContentLimits {
    pub(super) size: u64,
    pub(super) parts: usize,
    pub(super) depth: usize,
    pub(super) header_fields: usize,
}

impl ContentLimits {
    pub(super) fn of(limits: &crate::config::LimitsConfig) -> Self {
        let n = |v: u32| usize::try_from(v).unwrap_or(usize::MAX);
        Self {
            size: limits.message_size_submission,
            parts: n(limits.max_mime_parts),
            depth: n(limits.max_mime_depth),
            header_fields: n(limits.max_header_fields),
        }
    }

    /// What is wrong with a structure, if anything.
    fn check(&self, s: mime::Structure) -> Option<String> {
        if s.parts > self.parts {
            Some(format!(
                "{} MIME parts: at most {} per message",
                s.parts, self.parts
            ))
        } else if s.depth > self.depth {
            Some(format!(
                "MIME parts nested {} deep: at most {}",
                s.depth, self.depth
            ))
        } else if s.header_fields > self.header_fields {
            Some(format!(
                "{} header fields: at most {} per message",
                s.header_fields, self.header_fields
            ))
        } else {
            None
        }
    }
}

/// Composes (if needed), marks the header as protected (`protect_headers`, see
/// [`mime::with_protected_headers`]), hashes and parses the content. CPU-bound.
pub(super) fn prepare(
    sender: &EmailAddress,
    recipients: &[EmailAddress],
    message_id: &str,
    content: Content,
    limits: ContentLimits,
    protect_headers: bool,
) -> Result<Prepared, SubmitError> {
    let message_id_assigned = matches!(content, Content::Composed { .. });
    let bytes = match content {
        Content::Rfc5322(bytes) => bytes,
        Content::Composed {
            subject,
            text,
            attachments,
        } => mime::compose(
            sender,
            recipients,
            message_id,
            &subject,
            &text,
            &attachments,
        )?,
    };
    let over_size = bytes.len() as u64 > limits.size;
    let bytes = if protect_headers && !over_size {
        mime::with_protected_headers(bytes)?
    } else {
        bytes
    };
    let bytes = pgp::Digested::new(bytes)?;
    let sha256 = Sha256Digest(bytes.sha256());
    let size = bytes.as_bytes().len() as u64;
    if over_size {
        let detail = format!(
            "the message is {size} bytes; at most {} bytes may be submitted",
            limits.size
        );
        return Ok(Prepared {
            size,
            bytes,
            sha256,
            message_id: None,
            message_id_assigned,
            from: None,
            attachments: (Vec::new(), None),
            end_to_end: false,
            encrypted_to: None,
            over_limit: Some((Refusal::TooLarge, detail)),
        });
    }
    let facts = mime::facts(bytes.as_bytes())?;
    if let Some(detail) = limits.check(facts.structure) {
        // The record of the refusal names the message by digest, not its thousands of parts.
        return Ok(Prepared {
            size,
            bytes,
            sha256,
            message_id: facts.message_id,
            message_id_assigned,
            from: Some(facts.from),
            attachments: (Vec::new(), None),
            end_to_end: facts.end_to_end,
            encrypted_to: None,
            over_limit: Some((Refusal::TooComplex, detail)),
        });
    }
    // Content that claims to be encrypted must name its recipients: else it is garbage.
    let encrypted_to = facts
        .encrypted_head
        .as_deref()
        .map(endtoend::pkesk_recipients)
        .transpose()
        .map_err(SubmitError::NotEncrypted)?;
    let attachments = facts
        .attachments
        .into_iter()
        .map(|a| Attachment {
            name: a.name,
            size: a.size,
            sha256: Sha256Digest(a.sha256),
        })
        .collect();
    Ok(Prepared {
        sha256,
        message_id: facts.message_id,
        message_id_assigned,
        from: Some(facts.from),
        attachments: AttachmentList::bounded(attachments).map_err(EvidenceError::from)?,
        end_to_end: facts.end_to_end,
        encrypted_to,
        over_limit: None,
        size,
        bytes,
    })
}

/// Everything the crypto pool needs to sign, encrypt and record one accepted submission.
pub(super) struct Assembly {
    pub(super) keys: KeyRing,
    pub(super) domain: String,
    pub(super) gateway_id: String,
    pub(super) sender: Sender,
    pub(super) options: Options,
    /// SubmissionAcceptance, or ReceivedFromNonERDS for mail from an office's server.
    pub(super) first_event: Event,
    pub(super) attestation: Attestation,
    pub(super) recipients: Vec<Recipient>,
    pub(super) sender_copy: Option<(Mailbox, Arc<Cert>)>,
    pub(super) prepared: Prepared,
    pub(super) now: i64,
}

/// What an [`Assembly`] produces: rows to write and evidence to log.
pub(super) struct Assembled {
    pub(super) message_id: Option<String>,
    pub(super) sha256: Sha256Digest,
    pub(super) size: u64,
    pub(super) end_to_end: bool,
    pub(super) copies: Vec<CopyRow>,
    pub(super) jobs: Vec<JobRow>,
    pub(super) evidence: Vec<SignedRecord>,
}

impl Assembly {
    /// What [`Assembly::run`] costs: one provider signature; per local recipient an
    /// encryption (its X25519 agreement over the signed message) and two evidence
    /// signatures, per external one an encryption and one signature, for the sender's copy
    /// an encryption.
    pub(super) fn cost(&self) -> crate::crypto::pool::Cost {
        let per_recipient: usize = self
            .recipients
            .iter()
            .map(|r| {
                if r.mailbox.kind == MailboxKind::External {
                    2
                } else {
                    3
                }
            })
            .sum();
        let sender_copy = usize::from(self.sender_copy.is_some());
        let copies = self.recipients.len() + sender_copy;
        let copies_u64 = u64::try_from(copies).unwrap_or(u64::MAX);
        crate::crypto::pool::Cost::of(
            1 + per_recipient + sender_copy,
            self.prepared.size.saturating_mul(copies_u64 + 1),
        )
    }

    pub(super) fn run(mut self) -> Result<Assembled, SubmitError> {
        let signed = pgp::sign(
            self.keys.provider.signer(),
            &self.domain,
            &self.attestation,
            &self.prepared.bytes,
        )?;
        // The signed message contains the content; holding both would double the peak
        // memory of a large message.
        self.prepared.bytes.clear();
        let head = head(
            &self.keys,
            &self.domain,
            &self.sender,
            self.prepared.message_ref(&self.gateway_id),
            self.options,
            self.now,
        );
        let mut copies = Vec::with_capacity(self.recipients.len() + 1);
        let mut jobs = Vec::new();
        let mut records = Vec::with_capacity(self.recipients.len() * 2);
        let scanned_note = self
            .prepared
            .end_to_end
            .then(|| "content end-to-end encrypted by the sender; not scanned".to_owned());
        for r in &self.recipients {
            let address = &r.mailbox.address;
            let local = r.mailbox.kind != MailboxKind::External;
            let accepted = Details {
                note: scanned_note.clone(),
                ..Details::default()
            };
            let identity = local.then(|| assurance(&r.mailbox));
            let acceptance = self.record(
                &head,
                self.first_event,
                r,
                identity.clone(),
                accepted,
                ChainLink::first(),
            );
            let next = acceptance.link_next(1).map_err(EvidenceError::from)?;
            records.push(acceptance);
            if local {
                copies.push(CopyRow {
                    id: new_id(),
                    gateway_id: self.gateway_id.clone(),
                    mailbox_id: r.mailbox.id,
                    folder: "inbox",
                    recipient: address.to_string(),
                    body: pgp::encrypt_signed(&r.cert, &signed)?,
                    created_at: self.now,
                });
                let consigned = Details {
                    note: scanned_note.clone(),
                    ..Details::default()
                };
                records.push(self.record(
                    &head,
                    Event::ContentConsignment,
                    r,
                    identity,
                    consigned,
                    next,
                ));
            } else {
                // Stored unarmoured; armoured as it is sent (`mime::pgp_mime_stored`).
                let binary = pgp::encrypt_signed(&r.cert, &signed)?;
                let outer_id = self
                    .prepared
                    .message_id
                    .clone()
                    .unwrap_or_else(|| format!("<{}@{}>", self.gateway_id, self.domain));
                jobs.push(JobRow {
                    gateway_id: self.gateway_id.clone(),
                    mailbox_id: r.mailbox.id,
                    recipient: address.to_string(),
                    payload: mime::pgp_mime_stored(
                        &self.sender.address,
                        address,
                        &outer_id,
                        &binary,
                    )?,
                    due_at: self.now,
                });
            }
        }
        if let Some((mailbox, cert)) = &self.sender_copy {
            copies.push(CopyRow {
                id: new_id(),
                gateway_id: self.gateway_id.clone(),
                mailbox_id: mailbox.id,
                folder: "sent",
                recipient: mailbox.address.to_string(),
                body: pgp::encrypt_signed(cert, &signed)?,
                created_at: self.now,
            });
        }
        drop(signed);
        let evidence = evidence::sign(&self.keys.evidence, records)?;
        Ok(Assembled {
            message_id: self.prepared.message_id.clone(),
            sha256: self.prepared.sha256,
            size: self.prepared.size,
            end_to_end: self.prepared.end_to_end,
            copies,
            jobs,
            evidence,
        })
    }

    fn record(
        &self,
        head: &Head,
        event: Event,
        recipient: &Recipient,
        recipient_identity: Option<IdentityAssurance>,
        details: Details,
        chain: ChainLink,
    ) -> EvidenceRecord {
        let fact = Fact {
            event,
            reason: ReasonCode::Accepted,
            recipient: recipient.mailbox.address.clone(),
            recipient_identity,
            details,
            time: Timestamp(self.now),
        };
        head.record(fact, chain)
    }
}
