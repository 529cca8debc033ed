//! Reading, for the caller's own mailboxes: listings, messages, attachments, timelines and
//! receipts. Authorisation lives in the pipeline's reading path (`pipeline::open`), which
//! answers "not found" for anything not the caller's.

use super::{Gateway, GatewayError};
use crate::accounts::Mailbox;
use crate::address::EmailAddress;
use crate::auth::Caller;
use crate::evidence::StoredEvidence;
use crate::message::Part;
use crate::pipeline::{OpenError, OpenedMessage, Receipt, Summary};

/// The folders every mailbox has.
pub const FOLDERS: [&str; 2] = ["inbox", "sent"];

impl Gateway {
    /// The mailboxes the caller can open.
    pub async fn mailboxes(&self, caller: &Caller) -> Result<Vec<Mailbox>, GatewayError> {
        Ok(self.pipeline.mailboxes(&caller.access).await?)
    }

    /// The newest `limit` messages of a folder (`inbox` or `sent`), subjects decrypted.
    pub async fn folder(
        &self,
        caller: &Caller,
        mailbox: &EmailAddress,
        folder: &str,
        limit: i64,
    ) -> Result<Vec<Summary>, GatewayError> {
        if !FOLDERS.contains(&folder) {
            return Err(OpenError::NotFound.into());
        }
        Ok(self
            .pipeline
            .list(&caller.access, mailbox, folder, limit)
            .await?)
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

    /// The evidence timeline of a copy: the caller's own chain for a received copy, every
    /// recipient's for the sender's copy.
    pub async fn timeline(
        &self,
        caller: &Caller,
        copy_id: &str,
    ) -> Result<Vec<StoredEvidence>, GatewayError> {
        let (_, records) = self.pipeline.timeline(&caller.access, copy_id).await?;
        Ok(records)
    }

    /// The receipts of the sender's copy of a message.
    pub async fn receipts(
        &self,
        caller: &Caller,
        copy_id: &str,
    ) -> Result<Vec<Receipt>, GatewayError> {
        Ok(self.pipeline.receipts(&caller.access, copy_id).await?)
    }
}
