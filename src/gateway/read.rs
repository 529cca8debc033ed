//! Reading, for the caller's own mailboxes: listings, messages, attachments, timelines and
//! receipts. Authorisation lives in the pipeline's reading path (`pipeline::open`), which
//! answers "not found" for anything not the caller's.

use super::{Gateway, GatewayError, PageSize, Paged};
use crate::accounts::Mailbox;
use crate::address::EmailAddress;
use crate::auth::Caller;
use crate::evidence::StoredEvidence;
use crate::message::Part;
use crate::pipeline::{OpenError, OpenedMessage, Receipt, Summary};

/// The folders every mailbox has.
pub const FOLDERS: [&str; 2] = ["inbox", "sent"];
/// Folder listings.
pub const FOLDER_PAGE: PageSize = PageSize {
    default: 50,
    max: 200,
};
/// Timelines and receipts.
pub const TIMELINE_PAGE: PageSize = PageSize {
    default: 100,
    max: 1000,
};

impl Gateway {
    /// The mailboxes the caller can open.
    pub async fn mailboxes(&self, caller: &Caller) -> Result<Vec<Mailbox>, GatewayError> {
        Ok(self.pipeline.mailboxes(&caller.access).await?)
    }

    /// A page of a folder (`inbox` or `sent`), newest first, older than the copy `before`,
    /// subjects decrypted.
    pub async fn folder(
        &self,
        caller: &Caller,
        mailbox: &EmailAddress,
        folder: &str,
        before: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Paged<Summary>, GatewayError> {
        if !FOLDERS.contains(&folder) {
            return Err(OpenError::NotFound.into());
        }
        let limit = FOLDER_PAGE.of(limit)?;
        let items = self
            .pipeline
            .list(&caller.access, mailbox, folder, before, limit)
            .await?;
        Ok(Paged::of(items, limit, |s| s.id.clone()))
    }

    /// Opens one copy; records ContentHandover where spec §2 says so.
    pub async fn open(
        &self,
        caller: &Caller,
        copy_id: &str,
    ) -> Result<OpenedMessage, GatewayError> {
        Ok(self.pipeline.open(&caller.access, copy_id).await?)
    }

    /// Attachment `n` of a copy (opening it, as reading does).
    pub async fn attachment(
        &self,
        caller: &Caller,
        copy_id: &str,
        n: usize,
    ) -> Result<Part, GatewayError> {
        let opened = self.open(caller, copy_id).await?;
        Ok(opened
            .attachments
            .into_iter()
            .nth(n)
            .ok_or(OpenError::NotFound)?)
    }

    /// A page of the evidence timeline of a copy: the caller's own chain for a received
    /// copy, every recipient's for the sender's copy; after the record at log index `after`.
    pub async fn timeline(
        &self,
        caller: &Caller,
        copy_id: &str,
        after: Option<u64>,
        limit: Option<i64>,
    ) -> Result<Paged<StoredEvidence>, GatewayError> {
        let limit = TIMELINE_PAGE.of(limit)?;
        let items = self
            .pipeline
            .timeline(&caller.access, copy_id, after, limit)
            .await?;
        Ok(Paged::of(items, limit, |e| e.log_index.to_string()))
    }

    /// A page of the receipts of the sender's copy of a message.
    pub async fn receipts(
        &self,
        caller: &Caller,
        copy_id: &str,
        after: Option<u64>,
        limit: Option<i64>,
    ) -> Result<Paged<Receipt>, GatewayError> {
        let limit = TIMELINE_PAGE.of(limit)?;
        let items = self
            .pipeline
            .receipts(&caller.access, copy_id, after, limit)
            .await?;
        Ok(Paged::of(items, limit, |r| r.log_index.to_string()))
    }
}
