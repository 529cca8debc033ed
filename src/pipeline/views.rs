//! One message as its sender or a recipient sees it: which of its copies and evidence a
//! caller may reach by the id they hold — a copy id, or the gateway id a submission
//! returned — and the evidence views built on that: timelines, receipts, bundles.
//!
//! Architecture invariant: as in `open.rs`, anything the caller may not see is
//! [`OpenError::NotFound`], whichever kind of id they gave. A send-only token of the
//! sending mailbox sees the sender's side (evidence, never bodies).

use sqlx::AnyConnection;

use super::Pipeline;
use super::open::{OpenError, may_see};
use crate::accounts::Mailbox;
use crate::address::EmailAddress;
use crate::auth::Access;
use crate::evidence::StoredEvidence;
use crate::evidence::query;
use crate::store::accounts as account_repo;
use crate::store::messages::{self as repo, StoredCopy};

/// Which side wins when the caller is on both (they wrote to a mailbox they also read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Prefer {
    /// The copy they received (reading a message).
    Received,
    /// The sender's side (evidence of every recipient).
    Sent,
}

/// What a caller may see of one message.
pub(super) enum View {
    /// The sending mailbox: every recipient's evidence; its sent copy, if one was kept.
    Sender {
        gateway_id: String,
        copy: Option<(StoredCopy, Mailbox)>,
    },
    /// One recipient's mailbox: that copy and that recipient's evidence.
    Recipient { copy: StoredCopy, mailbox: Mailbox },
}

impl View {
    fn gateway_id(&self) -> &str {
        match self {
            Self::Sender { gateway_id, .. } => gateway_id,
            Self::Recipient { copy, .. } => &copy.message.gateway_id,
        }
    }

    /// Whose chain the caller sees: one recipient's, or (`None`) every recipient's.
    fn own_recipient(&self) -> Result<Option<EmailAddress>, OpenError> {
        match self {
            Self::Sender { .. } => Ok(None),
            Self::Recipient { copy, .. } => Ok(Some(EmailAddress::parse(&copy.copy.recipient)?)),
        }
    }
}

/// A send-only token: it sees the sender's side of what its mailbox sent, never what the
/// mailbox received (not even the evidence of it: the sender, attachment names, digests).
fn send_only(access: &Access) -> bool {
    matches!(access, Access::Token { data_key: None, .. })
}

impl Pipeline {
    /// The message `id` names, as `access` may see it.
    pub(super) async fn view(
        &self,
        access: &Access,
        id: &str,
        prefer: Prefer,
    ) -> Result<View, OpenError> {
        let mut conn = self.store.pool().acquire().await?;
        if let Some(copy) = repo::copy(&mut conn, id).await? {
            let mailbox = self
                .authorize(&mut conn, access, copy.copy.mailbox_id)
                .await?;
            return if copy.copy.folder == "sent" {
                Ok(View::Sender {
                    gateway_id: copy.message.gateway_id.clone(),
                    copy: Some((copy, mailbox)),
                })
            } else if send_only(access) {
                tracing::info!(
                    ?access,
                    message = id,
                    "a send-only token asked for a received message"
                );
                Err(OpenError::NotFound)
            } else {
                Ok(View::Recipient { copy, mailbox })
            };
        }
        let view = self
            .view_by_gateway_id(&mut conn, access, id, prefer)
            .await?;
        view.ok_or_else(|| {
            tracing::info!(?access, message = id, "access denied or no such message");
            OpenError::NotFound
        })
    }

    async fn view_by_gateway_id(
        &self,
        conn: &mut AnyConnection,
        access: &Access,
        gateway_id: &str,
        prefer: Prefer,
    ) -> Result<Option<View>, OpenError> {
        let Some(sender) = repo::sender_of(conn, gateway_id).await? else {
            return Ok(None);
        };
        let mut received = None;
        let mut sent = None;
        for copy in repo::copies_of(conn, gateway_id).await? {
            let Some(mailbox) = may_see(conn, access, copy.copy.mailbox_id).await? else {
                continue;
            };
            if copy.copy.folder == "sent" {
                sent = Some((copy, mailbox));
            } else if received.is_none() && !send_only(access) {
                received = Some(View::Recipient { copy, mailbox });
            }
        }
        let sender_side = match &sent {
            Some(_) => true,
            // No sent copy (SMTP office submissions keep none): the sending mailbox itself.
            None => match EmailAddress::parse(&sender) {
                Ok(address) => match account_repo::find_mailbox(conn, &address).await? {
                    Some((mailbox, _)) => may_see(conn, access, mailbox.id).await?.is_some(),
                    None => false,
                },
                Err(_) => false,
            },
        };
        let as_sender = sender_side.then(|| View::Sender {
            gateway_id: gateway_id.to_owned(),
            copy: sent,
        });
        let chosen = match prefer {
            Prefer::Received => received.or(as_sender),
            Prefer::Sent => as_sender.or(received),
        };
        // The listing left the bodies out; fetch the one chosen copy whole.
        Ok(match chosen {
            Some(View::Recipient { copy, mailbox }) => repo::copy(conn, &copy.copy.id)
                .await?
                .map(|copy| View::Recipient { copy, mailbox }),
            Some(View::Sender {
                gateway_id,
                copy: Some((copy, mailbox)),
            }) => Some(View::Sender {
                gateway_id,
                copy: repo::copy(conn, &copy.copy.id).await?.map(|c| (c, mailbox)),
            }),
            other => other,
        })
    }

    /// A page of the evidence timeline of a message: the reader's own chain for a received
    /// copy (no other recipient shows, spec §3.4), every recipient's for the sender.
    pub async fn timeline(
        &self,
        access: &Access,
        id: &str,
        after: Option<u64>,
        limit: i64,
    ) -> Result<Vec<StoredEvidence>, OpenError> {
        let view = self.view(access, id, Prefer::Sent).await?;
        self.evidence_of(&view, after, limit).await
    }

    /// A page of the receipts of a sent message (a recipient has none: 404, decided before
    /// anything is opened, so asking can never count as a handover). The subject comes from
    /// the sender's copy where the caller can open it; a send-only token gets the
    /// Message-ID instead.
    pub async fn receipts(
        &self,
        access: &Access,
        id: &str,
        after: Option<u64>,
        limit: i64,
    ) -> Result<Vec<super::Receipt>, OpenError> {
        let view = self.view(access, id, Prefer::Sent).await?;
        let View::Sender { copy, .. } = &view else {
            return Err(OpenError::NotFound);
        };
        let records = self.evidence_of(&view, after, limit).await?;
        let Some(first) = records.first() else {
            return Ok(Vec::new());
        };
        let sender = first.record.sender.address.clone();
        let subject = match copy {
            Some((stored, mailbox)) if !access.is_send_only() => self
                .open_copy(access, stored.clone(), mailbox.clone())
                .await?
                .summary
                .subject
                .unwrap_or_default(),
            _ => first
                .record
                .message
                .message_id
                .clone()
                .unwrap_or_else(|| view.gateway_id().to_owned()),
        };
        Ok(super::receipts::render_receipts(
            &self.domain,
            &sender,
            &subject,
            &records,
        ))
    }

    /// A page of the evidence the caller may see of a message.
    async fn evidence_of(
        &self,
        view: &View,
        after: Option<u64>,
        limit: i64,
    ) -> Result<Vec<StoredEvidence>, OpenError> {
        let search = query::Search {
            message: Some(view.gateway_id().to_owned()),
            recipient: view.own_recipient()?,
            after,
            limit: Some(limit),
            ..query::Search::default()
        };
        let mut conn = self.store.pool().acquire().await?;
        Ok(query::search(&mut conn, &search).await?)
    }

    /// What a bundle of this message proves, if `access` may see it: the message and the
    /// recipient whose chain it is (their own for a recipient; for the sender, `recipient`,
    /// which is needed when there are several).
    pub async fn bundle_subject(
        &self,
        access: &Access,
        id: &str,
        recipient: Option<&EmailAddress>,
    ) -> Result<(String, Option<EmailAddress>), OpenError> {
        let view = self.view(access, id, Prefer::Sent).await?;
        let recipient = match view.own_recipient()? {
            Some(own) => Some(own),
            None => recipient.cloned(),
        };
        Ok((view.gateway_id().to_owned(), recipient))
    }
}
