//! Reading: who may open which copy, unlocking the mailbox key from the reader's own
//! secret, decrypting and checking the provider signature, and ContentHandover.
//!
//! Architecture invariant: every entry point first authorises the copy's mailbox for the
//! caller and answers [`OpenError::NotFound`] for anything the caller may not see, so a
//! stranger cannot tell a missing message from somebody else's.

use std::sync::Arc;

use sequoia_openpgp::Cert;
use sqlx::AnyConnection;

use super::Pipeline;
use super::views::{Prefer, View};
use crate::accounts::{AuthLevel, Mailbox, MailboxKind, MembershipState};
use crate::address::{AddressError, EmailAddress};
use crate::auth::Access;
use crate::clock::now_ms;
use crate::crypto::endtoend::{self, InnerSignature};
use crate::crypto::message::{self as pgp, Attestation};
use crate::crypto::{CryptoError, pool};
use crate::error::{Classify, ErrorKind, Failure};
use crate::evidence::query;
use crate::evidence::{self, Details, Event, EvidenceError, ReasonCode, Timestamp, WriterError};
use crate::message::mime::{self, MimeError};
use crate::message::{Options, Parsed, Part};
use crate::store::StoreError;
use crate::store::accounts as account_repo;
use crate::store::evidence as evidence_repo;
use crate::store::messages::{self as repo, StoredCopy};
use crate::store::vault::{self as keystore, Holder};
use crate::vault;

/// Why a message or mailbox cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No such message or mailbox, or not the caller's.
    #[error("not found")]
    NotFound,
    /// A send-only token tried to read.
    #[error("this token can only send; create a read token from a logged-in session to read")]
    SendOnly,
    /// A `personal` message opened below level `high`.
    #[error("this message is personal: open it from a session with a second factor (level high)")]
    PersonalNeedsHigh,
    /// The caller's membership is pending: the mailbox key was not shared with them yet.
    #[error(
        "your access to {0} is pending: a member of it confirms it (after comparing your key's \
         fingerprint, shown under Settings, with you), or an operator with the mailbox \
         recovery code"
    )]
    Pending(EmailAddress),
    /// The sender's end-to-end layer cannot be opened with this mailbox's key.
    #[error(
        "this message is encrypted end to end, and its content cannot be opened with this \
         mailbox's key: {0}"
    )]
    Undecryptable(String),
    /// A stored message that does not parse after decryption.
    #[error("stored message does not parse: {0}")]
    Corrupt(#[from] MimeError),
    /// A stored address that does not parse.
    #[error("stored address: {0}")]
    StoredAddress(#[from] AddressError),
    /// A copy without the SubmissionAcceptance its handover must follow.
    #[error("no SubmissionAcceptance for copy {0}")]
    NoAcceptance(String),
    /// Decryption or key unwrapping.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// Reading evidence.
    #[error(transparent)]
    Query(#[from] query::QueryError),
    /// Signing the handover evidence.
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    /// Committing the handover.
    #[error(transparent)]
    Writer(#[from] WriterError),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for OpenError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Query(e))
    }
}

impl Classify for OpenError {
    fn failure(&self) -> Failure {
        let (kind, code, title) = match self {
            Self::NotFound => return Failure::not_found(),
            Self::SendOnly => (
                ErrorKind::Forbidden,
                "send-only-token",
                "This token cannot read",
            ),
            Self::PersonalNeedsHigh => (
                ErrorKind::Forbidden,
                "personal-needs-high",
                "Personal message",
            ),
            Self::Pending(_) => (ErrorKind::Forbidden, "access-pending", "Access pending"),
            Self::Undecryptable(_) => (
                ErrorKind::Unprocessable,
                "undecryptable",
                "Content cannot be decrypted",
            ),
            Self::Query(e) => return e.failure(),
            Self::Writer(e) => return e.failure(),
            Self::Store(e) => return e.failure(),
            Self::Evidence(e) => return e.failure(),
            Self::Corrupt(_) | Self::StoredAddress(_) | Self::NoAcceptance(_) | Self::Crypto(_) => {
                return Failure::internal(self);
            }
        };
        Failure::new(kind, code, title).detail(self)
    }
}

/// One line of a folder listing.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Copy id.
    pub id: String,
    /// Gateway message id.
    pub gateway_id: String,
    /// RFC 5322 Message-ID.
    pub message_id: Option<String>,
    /// `inbox` or `sent`.
    pub folder: String,
    /// The mailbox holding the copy.
    pub mailbox: String,
    /// Sender address.
    pub from: String,
    /// The recipient of this copy (the sender for `sent`).
    pub recipient: String,
    /// Subject, decrypted for the reader.
    pub subject: Option<String>,
    /// Arrival (unix ms).
    pub received_at: i64,
    /// Size in bytes.
    pub size: i64,
    /// Options.
    pub options: Options,
    /// Sender's authentication level.
    pub sender_auth_level: String,
    /// When handover was recorded, if it was.
    pub handed_over_at: Option<i64>,
    /// For the sender's copy: every recipient and how far delivery got, from the evidence.
    pub recipients: Vec<(String, DeliveryStatus)>,
}

named_enum!(
    /// How far delivery to one recipient got, as its latest evidence says.
    DeliveryStatus, "delivery status", {
        /// SubmissionAcceptance: accepted, not yet delivered.
        Accepted => "accepted",
        /// ContentConsignment: in the recipient's mailbox.
        Consigned => "consigned",
        /// Accepted, but relaying has been failing for half the relay expiry: the sender's
        /// warning (a notice, not evidence). The gateway keeps trying until the expiry.
        Delayed => "delayed",
        /// RelayToNonERDS or RelayAcceptance: handed to the recipient's server or gateway.
        Relayed => "relayed",
        /// ContentHandover: picked up.
        PickedUp => "picked-up",
        /// A failure or rejection event.
        Failed => "failed",
    }
);

impl DeliveryStatus {
    /// The status an event leaves a recipient in.
    pub fn after(event: Event) -> Self {
        match event {
            Event::SubmissionAcceptance | Event::ReceivedFromNonERDS => Self::Accepted,
            Event::ContentConsignment => Self::Consigned,
            Event::RelayToNonERDS | Event::RelayAcceptance => Self::Relayed,
            Event::ContentHandover => Self::PickedUp,
            Event::SubmissionRejection
            | Event::RelayRejection
            | Event::RelayFailure
            | Event::RelayToNonERDSFailure
            | Event::ContentConsignmentFailure
            | Event::ContentHandoverFailure => Self::Failed,
        }
    }
}

/// A message opened for its reader.
#[derive(Debug, Clone)]
pub struct OpenedMessage {
    /// The listing fields.
    pub summary: Summary,
    /// Plain-text body.
    pub text: Option<String>,
    /// HTML body, unsanitised.
    pub html: Option<String>,
    /// Attachments.
    pub attachments: Vec<Part>,
    /// The provider's attestation, if its signature verified.
    pub attestation: Option<Attestation>,
    /// Signatures the sender made inside end-to-end content, as checked.
    pub signatures: Vec<InnerSignature>,
    /// The content was end-to-end encrypted by the sender (and decrypted for the reader).
    pub end_to_end: bool,
    /// This opening recorded ContentHandover.
    pub handover_recorded: bool,
}

fn summary(stored: &StoredCopy, mailbox: &Mailbox, subject: Option<String>) -> Summary {
    let m = &stored.message;
    Summary {
        id: stored.copy.id.clone(),
        gateway_id: m.gateway_id.clone(),
        message_id: m.message_id.clone(),
        folder: stored.copy.folder.to_owned(),
        mailbox: mailbox.address.to_string(),
        from: m.sender.clone(),
        recipient: stored.copy.recipient.clone(),
        subject,
        received_at: stored.copy.created_at,
        size: m.size,
        options: Options {
            authoritative: m.authoritative,
            personal: m.personal,
            retrieval_confirmation: m.retrieval_confirmation,
        },
        sender_auth_level: m.auth_level.clone(),
        handed_over_at: stored.opened_at,
        recipients: Vec::new(),
    }
}

/// What opening a stored body found.
struct Decrypted {
    parsed: Parsed,
    attestation: Option<Attestation>,
    inner: Inner,
}

/// The sender's own end-to-end layer, if the content has one.
enum Inner {
    /// The content was not encrypted by the sender.
    None,
    /// Opened with this mailbox's key; the signatures found inside.
    Opened(Vec<InnerSignature>),
    /// It cannot be opened with this mailbox's key (or is larger than bote decrypts).
    Unreadable(String),
}

/// How much of a sender's end-to-end layer to open.
enum Depth<'a> {
    /// All of it, checking its signatures against these certificates (reading).
    Whole(&'a [Cert]),
    /// Its header section only (listing: the subject).
    Head,
}

/// Plaintext read of an end-to-end layer for its header fields.
const INNER_HEAD: u64 = 64 * 1024;

/// Decrypts, verifies and parses one body with an unlocked mailbox key, and the sender's
/// end-to-end layer inside it (to `depth`). CPU-bound.
fn decrypt(
    secret: &Cert,
    provider: &[Cert],
    depth: Depth<'_>,
    domain: &str,
    body: &[u8],
) -> Result<Decrypted, OpenError> {
    let opened = pgp::open(secret, provider, domain, body)?;
    let mut parsed = mime::parse_entity(&opened.content)?;
    let inner_plaintext = |payload: &[u8]| match depth {
        Depth::Whole(signers) => endtoend::open(secret, payload, signers),
        Depth::Head => {
            endtoend::open_head(secret, payload, INNER_HEAD).map(|head| (head, Vec::new()))
        }
    };
    let inner = match parsed.end_to_end.take() {
        None => Inner::None,
        Some(payload) => match inner_plaintext(&payload) {
            Err(e) => Inner::Unreadable(e.to_string()),
            Ok((plaintext, signatures)) => match mime::parse_entity(&plaintext) {
                Err(e) => Inner::Unreadable(format!("the decrypted content does not parse: {e}")),
                Ok(entity) => {
                    parsed = Parsed {
                        message_id: parsed.message_id,
                        from: parsed.from,
                        subject: entity.subject.or(parsed.subject),
                        end_to_end: Some(Vec::new()),
                        ..entity
                    };
                    Inner::Opened(signatures)
                }
            },
        },
    };
    Ok(Decrypted {
        parsed,
        attestation: opened.attestation,
        inner,
    })
}

/// The mailbox with `id`, if `access` may see it (its owner, an active member, or a token
/// for it).
pub(super) async fn may_see(
    conn: &mut AnyConnection,
    access: &Access,
    mailbox_id: i64,
) -> Result<Option<Mailbox>, OpenError> {
    let Some(mailbox) = account_repo::mailbox_by_id(conn, mailbox_id).await? else {
        return Ok(None);
    };
    let allowed = match access {
        Access::User { user, .. } => {
            mailbox.owner_user_id == Some(user.id)
                || account_repo::membership_state(conn, mailbox.id, user.id).await?
                    == Some(MembershipState::Active)
        }
        Access::Token { mailbox: own, .. } => own.id == mailbox.id,
    };
    Ok(allowed.then_some(mailbox))
}

impl Pipeline {
    /// The mailboxes `access` can open, with their kind.
    pub async fn mailboxes(&self, access: &Access) -> Result<Vec<Mailbox>, OpenError> {
        match access {
            Access::User { user, .. } => {
                let mut conn = self.store.pool().acquire().await?;
                Ok(account_repo::mailboxes_of_user(&mut conn, user.id).await?)
            }
            Access::Token { mailbox, .. } => Ok(vec![Mailbox::clone(mailbox)]),
        }
    }

    /// The mailbox with `id`, if `access` may see it; otherwise [`OpenError::NotFound`].
    pub(super) async fn authorize(
        &self,
        conn: &mut AnyConnection,
        access: &Access,
        mailbox_id: i64,
    ) -> Result<Mailbox, OpenError> {
        match may_see(conn, access, mailbox_id).await? {
            Some(mailbox) => Ok(mailbox),
            None => {
                tracing::info!(?access, mailbox = mailbox_id, "access denied");
                Err(OpenError::NotFound)
            }
        }
    }

    /// The copy `id` names for `access` (a copy id, or a gateway id: then the caller's
    /// received copy, else their sent one), without decrypting it.
    pub async fn copy_for(
        &self,
        access: &Access,
        id: &str,
    ) -> Result<(StoredCopy, Mailbox), OpenError> {
        match self.view(access, id, Prefer::Received).await? {
            View::Recipient { copy, mailbox } => Ok((copy, mailbox)),
            View::Sender {
                copy: Some((copy, mailbox)),
                ..
            } => Ok((copy, mailbox)),
            View::Sender { copy: None, .. } => Err(OpenError::NotFound),
        }
    }

    /// The mailbox secret key, unlocked with the reader's own secret.
    async fn mailbox_secret(&self, access: &Access, mailbox: &Mailbox) -> Result<Cert, OpenError> {
        let mut conn = self.store.pool().acquire().await?;
        let row = keystore::mailbox_key(&mut conn, mailbox.id)
            .await?
            .ok_or(OpenError::NotFound)?;
        let address = mailbox.address.to_string();
        match access {
            Access::User { user, key, .. } => {
                let wrap = keystore::wrap(&mut conn, mailbox.id, Holder::User(user.id))
                    .await?
                    .ok_or_else(|| OpenError::Pending(mailbox.address.clone()))?;
                let key = key.clone();
                pool::run(move || {
                    let data_key = vault::unwrap_for_user(&wrap, &key)?;
                    Ok(vault::open_mailbox_key(&row, &data_key, &address)?)
                })
                .await
            }
            Access::Token { data_key, .. } => {
                let data_key = data_key.clone().ok_or(OpenError::SendOnly)?;
                pool::run(move || Ok(vault::open_mailbox_key(&row, &data_key, &address)?)).await
            }
        }
    }

    /// The newest messages of one folder of a mailbox, older than the copy `before`,
    /// subjects decrypted (not those of `personal` messages for a reader below level
    /// `high`).
    pub async fn list(
        &self,
        access: &Access,
        address: &EmailAddress,
        folder: &str,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Summary>, OpenError> {
        let mut conn = self.store.pool().acquire().await?;
        let (found, _) = account_repo::find_mailbox(&mut conn, address)
            .await?
            .ok_or(OpenError::NotFound)?;
        let mailbox = self.authorize(&mut conn, access, found.id).await?;
        if access.is_send_only() {
            return Err(OpenError::SendOnly);
        }
        let copies = repo::list_copies(&mut conn, mailbox.id, folder, before, limit).await?;
        if copies.is_empty() {
            return Ok(Vec::new());
        }
        let (statuses, delayed) = if folder == "sent" {
            let ids: Vec<String> = copies
                .iter()
                .map(|c| c.message.gateway_id.clone())
                .collect();
            (
                evidence_repo::latest_events(&mut conn, &ids).await?,
                crate::store::queue::delayed(&mut conn, &ids).await?,
            )
        } else {
            (Vec::new(), Vec::new())
        };
        drop(conn);
        let secret = Arc::new(self.mailbox_secret(access, &mailbox).await?);
        let mut out = Vec::with_capacity(copies.len());
        for stored in copies {
            let hidden = stored.copy.folder == "inbox"
                && stored.message.personal
                && access.level() != AuthLevel::High;
            let subject = if hidden {
                None
            } else {
                self.subject(&secret, &stored.copy.id).await?
            };
            let mut line = summary(&stored, &mailbox, subject);
            line.recipients = statuses
                .iter()
                .filter(|(gid, _, _)| *gid == stored.message.gateway_id)
                .map(|(gid, recipient, event)| {
                    let waiting = delayed
                        .iter()
                        .any(|(g, r)| g == gid && r.eq_ignore_ascii_case(recipient));
                    let status = match DeliveryStatus::after(*event) {
                        DeliveryStatus::Accepted if waiting => DeliveryStatus::Delayed,
                        other => other,
                    };
                    (recipient.clone(), status)
                })
                .collect();
            out.push(line);
        }
        Ok(out)
    }

    /// The subject of one copy, decrypted; `None` if it has none or does not decrypt.
    async fn subject(
        &self,
        secret: &Arc<Cert>,
        copy_id: &str,
    ) -> Result<Option<String>, OpenError> {
        let mut conn = self.store.pool().acquire().await?;
        let Some(body) = repo::body(&mut conn, copy_id).await? else {
            return Ok(None);
        };
        drop(conn);
        let secret = secret.clone();
        let provider = vec![self.keys.provider.cert().clone()];
        let domain = self.domain.clone();
        Ok(pool::run(move || {
            decrypt(&secret, &provider, Depth::Head, &domain, &body)
                .ok()
                .and_then(|d| d.parsed.subject)
        })
        .await)
    }

    /// Opens one copy for its reader; records ContentHandover where spec §2 says so.
    pub async fn open(&self, access: &Access, copy_id: &str) -> Result<OpenedMessage, OpenError> {
        let (stored, mailbox) = self.copy_for(access, copy_id).await?;
        self.open_copy(access, stored, mailbox).await
    }

    /// Opens a copy already authorised for `access`.
    pub(super) async fn open_copy(
        &self,
        access: &Access,
        stored: StoredCopy,
        mailbox: Mailbox,
    ) -> Result<OpenedMessage, OpenError> {
        let inbox = stored.copy.folder == "inbox";
        if inbox && stored.message.personal && access.level() != AuthLevel::High {
            return Err(OpenError::PersonalNeedsHigh);
        }
        let secret = self.mailbox_secret(access, &mailbox).await?;
        let provider = vec![self.keys.provider.cert().clone()];
        let signers = if stored.message.end_to_end {
            self.certificates_of(&stored.message.sender).await?
        } else {
            Vec::new()
        };
        let domain = self.domain.clone();
        let body = stored.copy.body.clone();
        let Decrypted {
            parsed,
            attestation,
            inner,
        } = pool::run(move || decrypt(&secret, &provider, Depth::Whole(&signers), &domain, &body))
            .await?;
        let signatures = match inner {
            Inner::None => Vec::new(),
            Inner::Opened(signatures) => signatures,
            // Never a handover of content nobody here can read.
            Inner::Unreadable(reason) => {
                tracing::warn!(copy = %stored.copy.id, %reason, "end-to-end layer cannot be opened");
                return Err(OpenError::Undecryptable(reason));
            }
        };
        let hands_over = inbox
            && stored.opened_at.is_none()
            && match mailbox.kind {
                MailboxKind::Office => true,
                MailboxKind::Citizen => {
                    stored.message.retrieval_confirmation && access.level() == AuthLevel::High
                }
                MailboxKind::External => false,
            };
        let mut handover_recorded = false;
        let mut handed_over_at = stored.opened_at;
        if hands_over {
            let now = now_ms();
            // Who of an office took it, pseudonymously; a citizen's mailbox is one person.
            let taker = (mailbox.kind == MailboxKind::Office).then(|| self.taker(access));
            handover_recorded = self.hand_over(&stored, access, taker, now).await?;
            if handover_recorded {
                handed_over_at = Some(now);
            }
        }
        let mut summary = summary(&stored, &mailbox, parsed.subject.clone());
        summary.handed_over_at = handed_over_at;
        Ok(OpenedMessage {
            summary,
            end_to_end: parsed.end_to_end.is_some() || stored.message.end_to_end,
            text: parsed.text,
            html: parsed.html,
            attachments: parsed.attachments,
            attestation,
            signatures,
            handover_recorded,
        })
    }

    /// The certificates the gateway holds for a sender address (its mailbox key, or an
    /// external office's registered certificate), to check signatures inside end-to-end
    /// content with.
    async fn certificates_of(&self, sender: &str) -> Result<Vec<Cert>, OpenError> {
        let mut conn = self.store.pool().acquire().await?;
        let found = keystore::published_by_address(&mut conn, &sender.to_ascii_lowercase()).await?;
        Ok(found
            .and_then(|p| crate::crypto::stored_cert(&p.cert).ok())
            .map(|cert| vec![cert.as_ref().clone()])
            .unwrap_or_default())
    }

    /// The pseudonym of who opens an office message: stable per member (or token) and
    /// evidence key, resolvable only by the operator, who holds that key.
    fn taker(&self, access: &Access) -> String {
        match access {
            Access::User { user, .. } => self.keys.evidence.pseudonym("u", user.id),
            Access::Token { credential_id, .. } => {
                self.keys.evidence.pseudonym("t", *credential_id)
            }
        }
    }

    /// Records ContentHandover for a copy unless someone else's opening did first.
    async fn hand_over(
        &self,
        stored: &StoredCopy,
        access: &Access,
        taker: Option<String>,
        now: i64,
    ) -> Result<bool, OpenError> {
        let level = access.level();
        let recipient = EmailAddress::parse(&stored.copy.recipient)?;
        let mut conn = self.store.pool().acquire().await?;
        let chain = query::chain(&mut conn, &stored.message.gateway_id, Some(&recipient)).await?;
        drop(conn);
        if !chain.iter().any(|e| {
            matches!(
                e.record.event,
                Event::SubmissionAcceptance | Event::ReceivedFromNonERDS
            )
        }) {
            return Err(OpenError::NoAcceptance(stored.copy.id.clone()));
        }
        let details = Details {
            recipient_auth_level: Some(level),
            member: taker,
            ..Details::default()
        };
        let record = evidence::EvidenceRecord::successor(
            &chain,
            &self.keys.evidence.fingerprint(),
            Event::ContentHandover,
            ReasonCode::Accepted,
            details,
            Timestamp(now),
        )
        .ok_or_else(|| OpenError::NoAcceptance(stored.copy.id.clone()))?;
        let signed = evidence::sign_async(self.keys.evidence.clone(), vec![record]).await?;
        let copy_id = stored.copy.id.clone();
        let work: evidence::Work = Box::new(move |conn: &mut AnyConnection| {
            let copy_id = copy_id.clone();
            Box::pin(async move {
                if repo::mark_opened(conn, &copy_id, now).await? {
                    Ok(())
                } else {
                    Err(StoreError::Conflict("handed over already"))
                }
            })
        });
        match self.writer.commit(signed, Some(work)).await {
            Ok(_) => Ok(true),
            Err(WriterError::Work(e)) => {
                // Another member's opening won the race (theirs is the handover) — or the
                // write failed, and the reader must not see the message without it.
                let mut conn = self.store.pool().acquire().await?;
                if repo::is_opened(&mut conn, &stored.copy.id).await? {
                    Ok(false)
                } else {
                    Err(WriterError::Work(e).into())
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}
