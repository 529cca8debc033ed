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
//! crypto pool, one job per submission, so the async threads only move bytes.

mod batcher;
mod open;
mod receipts;

use std::sync::Arc;

use batcher::{Batcher, Rows};

use sequoia_openpgp::Cert;
use sqlx::AnyConnection;

pub use open::{Access, BundleError, OpenError, OpenedMessage, Summary, complete_pending_grants};
pub use receipts::Receipt;

use crate::accounts::{AuthLevel, Mailbox, MailboxKind};
use crate::address::EmailAddress;
use crate::clock::now_ms;
use crate::config::Config;
use crate::crypto::message::{self as pgp, Attestation};
use crate::crypto::{CryptoError, pool};
use crate::evidence::{
    self, Attachment, Details, Event, EvidenceError, EvidenceRecord, IdentityAssurance, MessageRef,
    ReasonCode, Sealed, Sender, Sha256Digest, Timestamp, Writer, WriterError,
};
use crate::keys::KeyRing;
use crate::log::Log;
use crate::message::mime::{self, MimeError};
use crate::message::{Content, Options};
use crate::store::accounts as account_repo;
use crate::store::messages::{self as repo, CopyRow, JobRow, MessageRow};
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
}

impl Channel {
    fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Api => "api",
            Self::Smtp => "smtp",
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
#[derive(Debug, Clone)]
pub struct Submission {
    /// Recipient addresses, as typed.
    pub recipients: Vec<String>,
    /// The content.
    pub content: Content,
    /// De-Mail options.
    pub options: Options,
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
    /// More recipients than allowed.
    TooManyRecipients,
    /// A recipient that is not a registered, enabled mailbox.
    UnknownRecipient,
    /// An option the sender may not use, or a recipient cannot honour.
    OptionNotAllowed,
    /// The sender's daily quota is used up.
    QuotaExceeded,
    /// The From header is not the sender's address.
    ForgedFrom,
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
    },
    /// Malformed input (no evidence: spec §3.1 "garbage").
    #[error("{0}")]
    Invalid(String),
    /// The gateway failed; nothing was stored.
    #[error("submission failed: {0}")]
    Internal(String),
}

impl From<StoreError> for SubmitError {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<sqlx::Error> for SubmitError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<WriterError> for SubmitError {
    fn from(e: WriterError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<EvidenceError> for SubmitError {
    fn from(e: EvidenceError) -> Self {
        Self::Internal(e.to_string())
    }
}

/// A recipient resolved to its mailbox and the certificate its copy is encrypted to.
#[derive(Debug, Clone)]
struct Recipient {
    mailbox: Mailbox,
    cert: Arc<Cert>,
}

/// The message core: submit and open. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Pipeline {
    store: Store,
    config: Arc<Config>,
    keys: KeyRing,
    writer: Writer,
    batcher: Batcher,
    quota: Arc<QuotaTurns>,
    log: Arc<Log>,
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
    pub fn new(
        store: Store,
        config: Arc<Config>,
        keys: KeyRing,
        log: Arc<Log>,
        writer: Writer,
    ) -> Self {
        let domain = config
            .gateway
            .domains
            .first()
            .map_or_else(|| "localhost".to_owned(), |d| d.as_str().to_owned());
        Self {
            store,
            config,
            keys,
            batcher: Batcher::spawn(writer.clone()),
            quota: Arc::default(),
            writer,
            log,
            domain,
        }
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
        let sender_address = from.mailbox.address.clone();
        let message_id = format!("<{gateway_id}@{}>", self.domain);
        let limit = self.config.limits.message_size_submission;
        let content = submission.content;
        let prepared = pool::run({
            let recipients = recipients.clone();
            move || prepare(&sender_address, &recipients, &message_id, content, limit)
        })
        .await?;
        let sender = evidence_sender(from);
        // A quota-limited sender's submissions run one at a time from the quota check to
        // the commit, or parallel submissions would all pass the same check.
        let _quota_turn = if quota_limited(from) {
            Some(self.quota.turn(&from.mailbox.address.key()).await)
        } else {
            None
        };
        let checked = match self
            .check(from, &recipients, &prepared, submission.options, now)
            .await
        {
            Ok(checked) => checked,
            Err(CheckError::Rejected(r)) => {
                return Err(self
                    .reject(&gateway_id, &sender, &recipients, &prepared, r, now)
                    .await);
            }
            Err(CheckError::Failed(e)) => return Err(e),
        };

        let keep_sender_copy =
            from.channel != Channel::Smtp || from.mailbox.kind == MailboxKind::Citizen;
        let sender_cert = if keep_sender_copy {
            self.mailbox_cert(&from.mailbox).await?
        } else {
            None
        };
        let job = SealJob {
            keys: self.keys.clone(),
            domain: self.domain.clone(),
            gateway_id: gateway_id.clone(),
            sender,
            attestation: attestation(from, submission.options),
            recipients: checked,
            sender_copy: sender_cert.map(|cert| (from.mailbox.clone(), cert)),
            prepared,
            now,
        };
        let sealed = pool::run(move || job.run()).await?;
        let message_row = MessageRow {
            gateway_id: gateway_id.clone(),
            message_id: sealed.message_id.clone(),
            sender: from.mailbox.address.to_string(),
            sender_key: from.mailbox.address.key(),
            channel: from.channel.as_str(),
            auth_level: from.auth_level.as_str().to_owned(),
            authoritative: submission.options.authoritative,
            personal: submission.options.personal,
            retrieval_confirmation: submission.options.retrieval_confirmation,
            end_to_end: sealed.end_to_end,
            size: i64::try_from(sealed.size).unwrap_or(i64::MAX),
            sha256: sealed.sha256.to_string(),
            recipients: i64::try_from(recipients.len()).unwrap_or(i64::MAX),
            created_at: now,
        };
        let records: Vec<EvidenceRecord> =
            sealed.evidence.iter().map(|s| s.record.clone()).collect();
        let rows = Rows {
            message: message_row,
            copies: sealed.copies,
            jobs: sealed.jobs,
        };
        let log_indexes = self.batcher.commit(rows, sealed.evidence).await?;
        metrics::counter!("bote_messages_accepted_total").increment(1);
        let acceptances = records
            .into_iter()
            .zip(log_indexes)
            .filter(|(r, _)| r.event == Event::SubmissionAcceptance)
            .collect();
        Ok(Accepted {
            gateway_id,
            message_id: sealed.message_id,
            acceptances,
        })
    }

    /// The certificate of a mailbox that can hold copies (its own key), if any.
    async fn mailbox_cert(&self, mailbox: &Mailbox) -> Result<Option<Arc<Cert>>, SubmitError> {
        let mut conn = self.store.pool().acquire().await?;
        let row = keystore::mailbox_key(&mut conn, mailbox.id).await?;
        row.map(|r| parse_cert(&r.cert)).transpose()
    }

    /// Policy checks in spec order; resolves recipients.
    async fn check(
        &self,
        from: &Submitter,
        recipients: &[EmailAddress],
        prepared: &Prepared,
        options: Options,
        now: i64,
    ) -> Result<Vec<Recipient>, CheckError> {
        let limits = &self.config.limits;
        if let Some(detail) = &prepared.too_large {
            return Err(rejected(
                Refusal::TooLarge,
                ReasonCode::Policy,
                detail.clone(),
            ));
        }
        let mut conn = self.store.pool().acquire().await.map_err(fail)?;
        if recipients.len() > limits.max_recipients as usize {
            return Err(rejected(
                Refusal::TooManyRecipients,
                ReasonCode::Policy,
                format!(
                    "{} recipients: at most {} per message",
                    recipients.len(),
                    limits.max_recipients
                ),
            ));
        }
        if let Some(parsed_from) = &prepared.from
            && !parsed_from.eq_ignore_ascii_case(&from.mailbox.address.to_string())
        {
            return Err(rejected(
                Refusal::ForgedFrom,
                ReasonCode::Policy,
                format!(
                    "the From address {parsed_from} is not the sender's address {}",
                    from.mailbox.address
                ),
            ));
        }
        let mut resolved = Vec::with_capacity(recipients.len());
        for address in recipients {
            match resolve(&mut conn, address)
                .await
                .map_err(CheckError::Failed)?
            {
                Some(r) => resolved.push(r),
                None => {
                    return Err(rejected(
                        Refusal::UnknownRecipient,
                        ReasonCode::UnknownRecipient,
                        format!("{address} is not a mailbox reachable through this gateway"),
                    ));
                }
            }
        }
        check_options(from, &resolved, options)?;
        if quota_limited(from) {
            let day_ago = now - 24 * 60 * 60 * 1000;
            let (messages, addressed) =
                repo::sent_since(&mut conn, &from.mailbox.address.key(), day_ago)
                    .await
                    .map_err(fail)?;
            let wanted = i64::try_from(recipients.len()).unwrap_or(i64::MAX);
            if messages >= i64::from(limits.citizen_daily_messages)
                || addressed + wanted > i64::from(limits.citizen_daily_recipients)
            {
                return Err(rejected(
                    Refusal::QuotaExceeded,
                    ReasonCode::QuotaExceeded,
                    format!(
                        "daily limit reached: at most {} messages and {} recipients per 24 hours \
                         at authentication level normal (log in with a second factor to lift it)",
                        limits.citizen_daily_messages, limits.citizen_daily_recipients
                    ),
                ));
            }
        }
        Ok(resolved)
    }

    /// Records SubmissionRejection for every named recipient, then returns the refusal.
    async fn reject(
        &self,
        gateway_id: &str,
        sender: &Sender,
        recipients: &[EmailAddress],
        prepared: &Prepared,
        rejection: Rejection,
        now: i64,
    ) -> SubmitError {
        let message = prepared.message_ref(gateway_id);
        // A submission naming thousands of recipients gets a bounded number of records.
        let cap = self.config.limits.max_recipients as usize + 1;
        let records: Vec<EvidenceRecord> = recipients
            .iter()
            .take(cap)
            .map(|r| {
                record(
                    &self.domain,
                    Event::SubmissionRejection,
                    rejection.reason,
                    sender,
                    r,
                    &message,
                    Details {
                        reply: Some(rejection.detail.clone()),
                        ..Details::default()
                    },
                    now,
                )
            })
            .collect();
        metrics::counter!("bote_messages_rejected_total").increment(1);
        let sealed = match evidence::seal_off_thread(self.keys.evidence.clone(), records).await {
            Ok(s) => s,
            Err(e) => return SubmitError::Internal(e.to_string()),
        };
        if let Err(e) = self.writer.commit(sealed, None).await {
            return SubmitError::Internal(e.to_string());
        }
        SubmitError::Refused {
            refusal: rejection.refusal,
            detail: rejection.detail,
            gateway_id: gateway_id.to_owned(),
        }
    }
}

/// Citizens at level `normal` have a daily quota (spec §2).
fn quota_limited(from: &Submitter) -> bool {
    from.mailbox.kind == MailboxKind::Citizen && from.auth_level != AuthLevel::High
}

/// One lock per quota-limited sender, held from the quota check to the commit. Entries
/// live only while someone holds or waits for them.
#[derive(Debug, Default)]
struct QuotaTurns {
    locks: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A held turn; dropping it lets the sender's next submission through.
struct QuotaTurn<'a> {
    turns: &'a QuotaTurns,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl QuotaTurns {
    async fn turn(&self, key: &str) -> QuotaTurn<'_> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.to_owned())
            .or_default()
            .clone();
        QuotaTurn {
            turns: self,
            key: key.to_owned(),
            guard: Some(lock.lock_owned().await),
        }
    }
}

impl Drop for QuotaTurn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self
            .turns
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Nobody else holds or waits for it: the map's own reference is the last one.
        if locks
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

struct Rejection {
    refusal: Refusal,
    reason: ReasonCode,
    detail: String,
}

enum CheckError {
    Rejected(Rejection),
    Failed(SubmitError),
}

fn rejected(refusal: Refusal, reason: ReasonCode, detail: String) -> CheckError {
    CheckError::Rejected(Rejection {
        refusal,
        reason,
        detail,
    })
}

fn fail(e: impl Into<SubmitError>) -> CheckError {
    CheckError::Failed(e.into())
}

fn check_options(
    from: &Submitter,
    recipients: &[Recipient],
    options: Options,
) -> Result<(), CheckError> {
    let refuse = |detail: &str| {
        Err(rejected(
            Refusal::OptionNotAllowed,
            ReasonCode::Policy,
            detail.to_owned(),
        ))
    };
    if options.authoritative {
        if from.auth_level != AuthLevel::High {
            return refuse(
                "authoritative needs authentication level high (log in with a second factor)",
            );
        }
        if from.mailbox.identity.verification.is_none() {
            return refuse("authoritative needs a verified sender identity");
        }
    }
    if options.retrieval_confirmation && from.mailbox.kind == MailboxKind::Citizen {
        return refuse("retrieval_confirmation can only be requested by offices");
    }
    if options.personal
        && let Some(r) = recipients
            .iter()
            .find(|r| r.mailbox.kind == MailboxKind::External)
    {
        return Err(rejected(
            Refusal::OptionNotAllowed,
            ReasonCode::Policy,
            format!(
                "{} is relayed to an external mail server and cannot receive personal messages",
                r.mailbox.address
            ),
        ));
    }
    Ok(())
}

/// Parses and de-duplicates recipients. Far more than `max` recipients is not a message
/// but an attack on the parser: refused before any work, without evidence (up to ten
/// times `max` gets the regular refusal with evidence in the checks).
fn parse_recipients(raw: &[String], max: usize) -> Result<Vec<EmailAddress>, SubmitError> {
    if raw.is_empty() {
        return Err(SubmitError::Invalid(
            "at least one recipient is required".into(),
        ));
    }
    if raw.len() > max.saturating_mul(10) {
        return Err(SubmitError::Invalid(format!(
            "{} recipients: at most {max} per message",
            raw.len()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(raw.len());
    let mut out: Vec<EmailAddress> = Vec::with_capacity(raw.len());
    for r in raw {
        let address = EmailAddress::parse(r)
            .map_err(|e| SubmitError::Invalid(format!("recipient `{r}`: {e}")))?;
        if seen.insert(address.key()) {
            out.push(address);
        }
    }
    Ok(out)
}

async fn resolve(
    conn: &mut AnyConnection,
    address: &EmailAddress,
) -> Result<Option<Recipient>, SubmitError> {
    let Some((mailbox, key_cert)) = account_repo::find_mailbox_with_key_cert(conn, address).await?
    else {
        return Ok(None);
    };
    if mailbox.disabled {
        return Ok(None);
    }
    let cert = match (&mailbox.relay, key_cert) {
        (Some(relay), _) => parse_cert(&relay.cert)?,
        (None, Some(cert)) => parse_cert(&cert)?,
        (None, None) => return Ok(None),
    };
    Ok(Some(Recipient { mailbox, cert }))
}

fn parse_cert(bytes: &[u8]) -> Result<Arc<Cert>, SubmitError> {
    crate::crypto::stored_cert(bytes)
        .map_err(|e| SubmitError::Internal(format!("stored certificate: {e}")))
}

fn evidence_sender(from: &Submitter) -> Sender {
    let verification = from.mailbox.identity.verification.as_ref();
    Sender {
        address: from.mailbox.address.clone(),
        identity: IdentityAssurance {
            verified: verification.is_some(),
            method: verification.map(|v| v.method),
        },
        auth_level: from.auth_level,
    }
}

fn attestation(from: &Submitter, options: Options) -> Attestation {
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

#[allow(clippy::too_many_arguments)]
fn record(
    issuer: &str,
    event: Event,
    reason: ReasonCode,
    sender: &Sender,
    recipient: &EmailAddress,
    message: &MessageRef,
    details: Details,
    now: i64,
) -> EvidenceRecord {
    EvidenceRecord {
        version: evidence::record::FORMAT_VERSION,
        evidence_id: evidence::EvidenceId::random(),
        event,
        reason,
        time: Timestamp(now),
        issuer: issuer.to_owned(),
        sender: sender.clone(),
        recipient: recipient.clone(),
        message: message.clone(),
        details,
    }
}

/// The submitted bytes and what evidence needs from them.
struct Prepared {
    bytes: Vec<u8>,
    size: u64,
    sha256: Sha256Digest,
    message_id: Option<String>,
    from: Option<String>,
    attachments: Vec<Attachment>,
    end_to_end: bool,
    /// Set when the bytes exceed the limit (then nothing else was parsed).
    too_large: Option<String>,
}

impl Prepared {
    fn message_ref(&self, gateway_id: &str) -> MessageRef {
        MessageRef {
            gateway_id: gateway_id.to_owned(),
            message_id: self.message_id.clone(),
            sha256: self.sha256,
            size: self.size,
            attachments: self.attachments.clone(),
        }
    }
}

impl From<MimeError> for SubmitError {
    fn from(e: MimeError) -> Self {
        Self::Invalid(e.to_string())
    }
}

/// Composes (if needed), hashes and parses the content. CPU-bound.
fn prepare(
    sender: &EmailAddress,
    recipients: &[EmailAddress],
    message_id: &str,
    content: Content,
    limit: u64,
) -> Result<Prepared, SubmitError> {
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
    let sha256 = Sha256Digest::of(&bytes);
    if bytes.len() as u64 > limit {
        let detail = format!(
            "the message is {} bytes; at most {limit} bytes may be submitted",
            bytes.len()
        );
        return Ok(Prepared {
            size: bytes.len() as u64,
            bytes,
            sha256,
            message_id: None,
            from: None,
            attachments: Vec::new(),
            end_to_end: false,
            too_large: Some(detail),
        });
    }
    let facts = mime::facts(&bytes)?;
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
        from: Some(facts.from),
        attachments,
        end_to_end: facts.end_to_end,
        too_large: None,
        size: bytes.len() as u64,
        bytes,
    })
}

/// Everything the crypto pool needs to sign, encrypt and seal one accepted submission.
struct SealJob {
    keys: KeyRing,
    domain: String,
    gateway_id: String,
    sender: Sender,
    attestation: Attestation,
    recipients: Vec<Recipient>,
    sender_copy: Option<(Mailbox, Arc<Cert>)>,
    prepared: Prepared,
    now: i64,
}

/// What a [`SealJob`] produces: rows to write and evidence to log.
struct SealedSubmission {
    message_id: Option<String>,
    sha256: Sha256Digest,
    size: u64,
    end_to_end: bool,
    copies: Vec<CopyRow>,
    jobs: Vec<JobRow>,
    evidence: Vec<Sealed>,
}

impl From<CryptoError> for SubmitError {
    fn from(e: CryptoError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl SealJob {
    fn run(mut self) -> Result<SealedSubmission, SubmitError> {
        let signed = pgp::sign(
            self.keys.provider.signer(),
            &self.domain,
            &self.attestation,
            &self.prepared.bytes,
        )?;
        // The signed message contains the content; holding both would double the peak
        // memory of a large message.
        drop(std::mem::take(&mut self.prepared.bytes));
        let message = self.prepared.message_ref(&self.gateway_id);
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
            records.push(self.record(Event::SubmissionAcceptance, address, &message, accepted));
            if local {
                copies.push(CopyRow {
                    id: new_id(),
                    gateway_id: self.gateway_id.clone(),
                    mailbox_id: r.mailbox.id,
                    folder: "inbox",
                    recipient: address.to_string(),
                    body: pgp::encrypt_signed(&r.cert, &signed, false)?,
                    created_at: self.now,
                });
                let consigned = Details {
                    note: scanned_note.clone(),
                    ..Details::default()
                };
                records.push(self.record(Event::ContentConsignment, address, &message, consigned));
            } else {
                let armored = pgp::encrypt_signed(&r.cert, &signed, true)?;
                let armored =
                    String::from_utf8(armored).map_err(|e| SubmitError::Internal(e.to_string()))?;
                let outer_id = self
                    .prepared
                    .message_id
                    .clone()
                    .unwrap_or_else(|| format!("<{}@{}>", self.gateway_id, self.domain));
                jobs.push(JobRow {
                    gateway_id: self.gateway_id.clone(),
                    mailbox_id: r.mailbox.id,
                    recipient: address.to_string(),
                    payload: mime::pgp_mime(&self.sender.address, address, &outer_id, armored)?,
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
                body: pgp::encrypt_signed(cert, &signed, false)?,
                created_at: self.now,
            });
        }
        drop(signed);
        let evidence = evidence::seal(&self.keys.evidence, records)?;
        Ok(SealedSubmission {
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
        event: Event,
        recipient: &EmailAddress,
        message: &MessageRef,
        details: Details,
    ) -> EvidenceRecord {
        record(
            &self.domain,
            event,
            ReasonCode::Accepted,
            &self.sender,
            recipient,
            message,
            details,
            self.now,
        )
    }
}
