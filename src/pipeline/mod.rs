//! The path every message takes (spec §2, §3): submission → checks → provider signature →
//! per-recipient encryption → one group commit of message, copies, relay jobs and evidence;
//! and back out: opening a copy, with ContentHandover where spec §2 says so.
//!
//! Architecture invariant: a submission is acknowledged only after [`Writer::commit`]
//! returned, i.e. the message, its copies and its SubmissionAcceptance are durable and
//! logged. Every refusal of an authenticated sender's complete submission is itself
//! committed as SubmissionRejection evidence before the caller hears about it.
//!
//! CPU work (composing, parsing, hashing, signing, encrypting, sealing evidence) runs on the
//! crypto pool, one job per submission, so the async threads only move bytes; a short
//! message for a few recipients is done in place, cheaper than the hand-off
//! ([`pool::run_costed`]).

mod assemble;
mod batcher;
mod budget;
mod open;
mod policy;
pub mod rate;
mod receipts;
mod recipients;
mod views;

use std::sync::Arc;

use sequoia_openpgp::Cert;

use crate::turns::Turns;
use assemble::{Assembly, ContentLimits, attestation, evidence_sender, prepare};
use batcher::{Batcher, Rows};
use budget::MemoryBudget;
pub use budget::{Busy, Reservation};
pub use open::{OpenError, OpenedMessage, Summary};
use policy::{CheckError, parse_recipients, quota_limited};
pub use receipts::Receipt;
pub use recipients::{Recipient, resolve};

use crate::accounts::{AuthLevel, Mailbox, MailboxKind};
use crate::address::AddressError;
use crate::clock::now_ms;
use crate::config::Config;
use crate::crypto::{CryptoError, pool};
use crate::error::{Classify, ErrorKind, Failure};
use crate::evidence::{Event, EvidenceError, EvidenceRecord, Writer, WriterError};
use crate::keys::KeyRing;
use crate::message::mime::MimeError;
use crate::message::{Content, Options};
use crate::store::messages::MessageRow;
use crate::store::vault as keystore;
use crate::store::{Store, StoreError};

/// How a submission reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The web inbox.
    Web,
    /// The JSON API.
    Api,
    /// SMTP submission.
    Smtp,
    /// SMTP from a registered office mail server (the MX listener): the message arrives
    /// from outside the registered-delivery system (ReceivedFromNonERDS).
    Mx,
}

impl Channel {
    /// The `messages.channel` value: the protocol (MX mail is SMTP too).
    fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Api => "api",
            Self::Smtp | Self::Mx => "smtp",
        }
    }

    /// The first event of every recipient's chain.
    fn first_event(self) -> Event {
        match self {
            Self::Mx => Event::ReceivedFromNonERDS,
            Self::Web | Self::Api | Self::Smtp => Event::SubmissionAcceptance,
        }
    }
}

/// The authenticated sender of a submission.
#[derive(Debug, Clone)]
pub struct Submitter {
    /// The mailbox it sends from (its address must be the message's From).
    pub mailbox: Mailbox,
    /// How strongly it was authenticated.
    pub auth_level: AuthLevel,
    /// Where it came in.
    pub channel: Channel,
}

/// A submission: recipients as given, content and options.
#[derive(Debug)]
pub struct Submission {
    /// Recipient addresses, as typed.
    pub recipients: Vec<String>,
    /// Recipients the front door resolved already (SMTP, at RCPT); the pipeline looks up
    /// only those not among them.
    pub resolved: Vec<Recipient>,
    /// The content.
    pub content: Content,
    /// De-Mail options.
    pub options: Options,
    /// Room in the memory budget that the front door reserved while the content arrived
    /// (SMTP DATA); the pipeline grows it to the whole submission's footprint.
    pub reserved: Vec<Reservation>,
}

/// An accepted submission.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The gateway message id.
    pub gateway_id: String,
    /// The RFC 5322 Message-ID.
    pub message_id: Option<String>,
    /// The SubmissionAcceptance records, one per recipient, as signed and logged.
    pub acceptances: Vec<(EvidenceRecord, u64)>,
}

/// Which policy refused a submission (each has its own stable error type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Larger than the submission limit.
    TooLarge,
    /// More MIME parts, deeper nesting or more header fields than allowed.
    TooComplex,
    /// More recipients than allowed.
    TooManyRecipients,
    /// A recipient that is not a registered, enabled mailbox.
    UnknownRecipient,
    /// An option the sender may not use, or a recipient cannot honour.
    OptionNotAllowed,
    /// The sender's daily quota is used up.
    QuotaExceeded,
    /// An office mailbox's hourly send rate is used up.
    RateLimited,
    /// The From header is not the sender's address.
    ForgedFrom,
    /// A Message-ID in the gateway's own domains that the gateway did not assign.
    ReservedMessageId,
    /// The sender used this Message-ID before.
    DuplicateMessageId,
    /// End-to-end encrypted content that a recipient's keys cannot open.
    UnreadableByRecipient,
}

/// Why a submission was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Refused for policy or content; SubmissionRejection evidence was recorded under
    /// `gateway_id`.
    #[error("{detail}")]
    Refused {
        /// Which policy.
        refusal: Refusal,
        /// What to tell the sender.
        detail: String,
        /// The message id under which the rejection evidence is kept.
        gateway_id: String,
        /// Seconds after which the same submission may succeed (a quota's window).
        retry_after: Option<u64>,
    },
    /// No recipient at all (garbage: no evidence, spec §3.1).
    #[error("at least one recipient is required")]
    NoRecipients,
    /// Far more recipients than any message may have: refused before any work.
    #[error("{count} recipients: at most {max} per message")]
    RecipientFlood {
        /// How many were named.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A recipient that is not an address.
    #[error("recipient `{given}`: {reason}")]
    Recipient {
        /// As given.
        given: String,
        /// Why it does not parse.
        reason: AddressError,
    },
    /// Content that does not parse as a message.
    #[error(transparent)]
    Mime(#[from] MimeError),
    /// A PGP/MIME message whose payload is not an OpenPGP message to any certificate.
    #[error("the encrypted part is not an OpenPGP message to a certificate: {0}")]
    NotEncrypted(CryptoError),
    /// A stored certificate is unusable (a broken mailbox key or relay certificate).
    #[error("stored certificate: {0}")]
    StoredCertificate(CryptoError),
    /// Signing or encrypting failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// Signing the evidence failed.
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    /// The commit failed; nothing was stored.
    #[error(transparent)]
    Writer(#[from] WriterError),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Messages in flight fill the memory budget.
    #[error(transparent)]
    Busy(#[from] Busy),
}

impl From<sqlx::Error> for SubmitError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Query(e))
    }
}

impl Refusal {
    fn failure(self) -> Failure {
        let (kind, code, title) = match self {
            Self::TooLarge => (
                ErrorKind::TooLarge,
                "message-too-large",
                "Message too large",
            ),
            Self::TooComplex => (
                ErrorKind::Unprocessable,
                "message-too-complex",
                "Message structure too complex",
            ),
            Self::TooManyRecipients => (
                ErrorKind::Unprocessable,
                "too-many-recipients",
                "Too many recipients",
            ),
            Self::UnknownRecipient => (
                ErrorKind::Unprocessable,
                "unknown-recipient",
                "Unknown recipient",
            ),
            Self::OptionNotAllowed => (
                ErrorKind::Forbidden,
                "option-not-allowed",
                "Option not allowed",
            ),
            Self::QuotaExceeded => (
                ErrorKind::RateLimited,
                "quota-exceeded",
                "Daily quota exceeded",
            ),
            Self::RateLimited => (
                ErrorKind::RateLimited,
                "send-rate-exceeded",
                "Office send rate exceeded",
            ),
            Self::ForgedFrom => (
                ErrorKind::Forbidden,
                "sender-mismatch",
                "From is not the sender",
            ),
            Self::ReservedMessageId => (
                ErrorKind::Unprocessable,
                "message-id-reserved",
                "Message-ID reserved",
            ),
            Self::DuplicateMessageId => (
                ErrorKind::Conflict,
                "duplicate-message-id",
                "Message-ID used before",
            ),
            Self::UnreadableByRecipient => (
                ErrorKind::Unprocessable,
                "not-encrypted-to-recipient",
                "Not readable by the recipient",
            ),
        };
        Failure::new(kind, code, title)
    }
}

impl Classify for SubmitError {
    fn failure(&self) -> Failure {
        match self {
            Self::Refused {
                refusal,
                detail,
                gateway_id,
                retry_after,
            } => {
                let failure = refusal
                    .failure()
                    .detail(detail)
                    .evidence(gateway_id.clone());
                match retry_after {
                    Some(seconds) => failure.retry_after(*seconds),
                    None => failure,
                }
            }
            Self::NoRecipients
            | Self::RecipientFlood { .. }
            | Self::Recipient { .. }
            | Self::Mime(_)
            | Self::NotEncrypted(_) => {
                Failure::new(ErrorKind::Invalid, "invalid-message", "Invalid message").detail(self)
            }
            Self::Busy(_) => Failure::new(ErrorKind::Unavailable, "busy", "Busy")
                .detail(self)
                .retry_after(5),
            Self::Writer(e) => e.failure(),
            Self::Store(e) => e.failure(),
            Self::Evidence(e) => e.failure(),
            Self::StoredCertificate(_) | Self::Crypto(_) => Failure::internal(self),
        }
    }
}

/// The message core: submit and open. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Pipeline {
    store: Store,
    config: Arc<Config>,
    keys: KeyRing,
    writer: Writer,
    batcher: Batcher,
    budget: MemoryBudget,
    turns: Arc<Turns>,
    rates: Arc<rate::OfficeRates>,
    domain: String,
}

/// A fresh identifier, 32 lower-case hex digits: a UUIDv7 (48-bit millisecond time, 74
/// random bits). Time-ordered so that message and copy rows append at the right edge of
/// their B-trees: random keys made every commit rewrite a random page per index (measured:
/// about 115 MB/s of WAL writes at 1,200 messages/s). The time it reveals is the
/// submission time, which the Date header and the evidence show anyway.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

impl Pipeline {
    /// The pipeline of a running gateway.
    pub fn new(store: Store, config: Arc<Config>, keys: KeyRing, writer: Writer) -> Self {
        let domain = config.primary_domain().to_owned();
        let budget = MemoryBudget::new(config.limits.memory_budget);
        Self {
            store,
            config,
            keys,
            batcher: Batcher::spawn(writer.clone()),
            budget,
            turns: Arc::default(),
            rates: Arc::default(),
            writer,
            domain,
        }
    }

    /// Bytes of the memory budget held by messages in flight now.
    pub fn memory_in_use(&self) -> u64 {
        self.budget.in_use()
    }

    /// Waits until a message of `size` bytes to `recipients` would fit the memory budget,
    /// reserving nothing (SMTP: the answer to a declared SIZE before the 354).
    pub async fn await_room(&self, size: u64, recipients: usize) -> Result<(), Busy> {
        self.budget
            .await_room(budget::footprint(size, recipients))
            .await
    }

    /// Reserves `bytes` of the memory budget (clamped to the whole budget), waiting a little
    /// for room: the relay worker's hold on a message it sends, counted with the messages
    /// in flight so that intake and relay together stay within `limits.memory_budget`.
    pub async fn reserve(&self, bytes: u64) -> Result<Vec<Reservation>, Busy> {
        self.budget.grow(Vec::new(), bytes).await
    }

    /// Grows the room `held` for content still arriving from `client` (SMTP DATA) to
    /// `bytes`, within the client's share; pass it on in [`Submission::reserved`], which the
    /// submission grows to its footprint.
    pub async fn grow_arriving(
        &self,
        client: std::net::IpAddr,
        held: Vec<Reservation>,
        bytes: u64,
    ) -> Result<Vec<Reservation>, Busy> {
        self.budget.grow_arriving(client, held, bytes).await
    }

    /// The store this pipeline writes to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Checks, signs, encrypts and commits a submission; returns only once it is durable.
    pub async fn submit(
        &self,
        from: &Submitter,
        submission: Submission,
    ) -> Result<Accepted, SubmitError> {
        let now = now_ms();
        let gateway_id = new_id();
        let recipients = parse_recipients(
            &submission.recipients,
            self.config.limits.max_recipients as usize,
        )?;
        // Held until the commit returns: the copies live in memory until then.
        let _room = self
            .budget
            .grow(
                submission.reserved,
                budget::footprint(submission.content.approx_size(), recipients.len()),
            )
            .await?;
        let sender_address = from.mailbox.address.clone();
        let message_id = format!("<{gateway_id}@{}>", self.domain);
        let mut limits = ContentLimits::of(&self.config.limits);
        // An office's server delivers over MX under the gateway limit its EHLO announced.
        if from.channel == Channel::Mx {
            limits.size = self.config.limits.message_size_gateway;
        }
        let content = submission.content;
        let content_cost = pool::Cost::of(0, content.approx_size());
        // What the gateway signs carries its header inside the encryption too, so readers of
        // a relayed PGP/MIME (whose outer Subject is a placeholder) show the real one. Mail
        // from an office's server stays byte for byte as that server sent it.
        let protect_headers = from.channel != Channel::Mx;
        let prepared = pool::run_costed(content_cost, {
            let recipients = recipients.clone();
            move || {
                prepare(
                    &sender_address,
                    &recipients,
                    &message_id,
                    content,
                    limits,
                    protect_headers,
                )
            }
        })
        .await?;
        let sender = evidence_sender(from);
        // Checks that count what was committed before (the citizen quota, a sender's
        // Message-IDs) hold a turn from the check to the commit, or parallel submissions
        // would all pass the same check. Always in this order: no two wait on each other.
        let sender_key = from.mailbox.address.key();
        let _quota_turn = if quota_limited(from) {
            Some(self.turns.turn(format!("quota:{sender_key}")).await)
        } else {
            None
        };
        let _message_id_turn = match &prepared.message_id {
            Some(id) if !prepared.message_id_assigned => Some(
                self.turns
                    .turn(format!("message-id:{sender_key}:{id}"))
                    .await,
            ),
            _ => None,
        };
        let checked = match self
            .check(
                from,
                (&recipients, &submission.resolved),
                &prepared,
                submission.options,
                now,
            )
            .await
        {
            Ok(checked) => checked,
            Err(CheckError::Rejected(r)) => {
                let head = assemble::head(
                    &self.keys,
                    &self.domain,
                    &sender,
                    prepared.message_ref(&gateway_id),
                    submission.options,
                    now,
                );
                return Err(self.reject(head, &recipients, r).await);
            }
            Err(CheckError::Failed(e)) => return Err(e),
        };

        // Office software and office servers keep their own copy (spec §3.2).
        let keep_sender_copy = match from.channel {
            Channel::Web | Channel::Api => true,
            Channel::Smtp => from.mailbox.kind == MailboxKind::Citizen,
            Channel::Mx => false,
        };
        let sender_cert = if keep_sender_copy {
            self.mailbox_cert(&from.mailbox).await?
        } else {
            None
        };
        let job = Assembly {
            keys: self.keys.clone(),
            domain: self.domain.clone(),
            gateway_id: gateway_id.clone(),
            sender,
            options: submission.options,
            first_event: from.channel.first_event(),
            attestation: attestation(from, submission.options),
            recipients: checked,
            sender_copy: sender_cert.map(|cert| (from.mailbox.clone(), cert)),
            prepared,
            now,
        };
        let assembled = pool::run_costed(job.cost(), move || job.run()).await?;
        let message_row = MessageRow {
            gateway_id: gateway_id.clone(),
            message_id: assembled.message_id.clone(),
            sender: from.mailbox.address.to_string(),
            sender_key: from.mailbox.address.key(),
            channel: from.channel.as_str(),
            auth_level: from.auth_level.as_str().to_owned(),
            authoritative: submission.options.authoritative,
            personal: submission.options.personal,
            retrieval_confirmation: submission.options.retrieval_confirmation,
            end_to_end: assembled.end_to_end,
            size: i64::try_from(assembled.size).unwrap_or(i64::MAX),
            sha256: assembled.sha256.to_string(),
            recipients: i64::try_from(recipients.len()).unwrap_or(i64::MAX),
            created_at: now,
        };
        let records: Vec<EvidenceRecord> = assembled
            .evidence
            .iter()
            .map(|s| s.record.clone())
            .collect();
        let rows = Rows {
            message: message_row,
            copies: assembled.copies,
            jobs: assembled.jobs,
        };
        let log_indexes = self.batcher.commit(rows, assembled.evidence).await?;
        metrics::counter!("bote_messages_accepted_total").increment(1);
        let acceptances = records
            .into_iter()
            .zip(log_indexes)
            .filter(|(r, _)| r.event == from.channel.first_event())
            .collect();
        Ok(Accepted {
            gateway_id,
            message_id: assembled.message_id,
            acceptances,
        })
    }

    /// The certificate of a mailbox that can hold copies (its own key), if any.
    async fn mailbox_cert(&self, mailbox: &Mailbox) -> Result<Option<Arc<Cert>>, SubmitError> {
        let mut conn = self.store.pool().acquire().await?;
        let row = keystore::mailbox_key(&mut conn, mailbox.id).await?;
        row.map(|r| recipients::parse_cert(&r.cert)).transpose()
    }
}
