//! Sending: which mailbox a caller sends from, submitting, and resolving recipients.

use super::{Gateway, GatewayError};
use crate::accounts::Role;
use crate::address::EmailAddress;
use crate::auth::Caller;
use crate::pipeline::{Accepted, Channel, Recipient, Submission, Submitter, resolve};

impl Gateway {
    /// The mailbox `caller` sends from: `from` if named and theirs, else their only one.
    /// Legal staff and admins send nothing (spec §1).
    pub async fn submitter(
        &self,
        caller: &Caller,
        from: Option<&EmailAddress>,
        channel: Channel,
    ) -> Result<Submitter, GatewayError> {
        if let Some(user) = caller.user()
            && matches!(user.role, Role::Legal | Role::Admin)
        {
            tracing::info!(user = %user.email, role = %user.role, "sending refused for role");
            return Err(GatewayError::Forbidden("your role cannot send messages"));
        }
        let sendable = self.pipeline.mailboxes(&caller.access).await?;
        let mailbox = match from {
            Some(f) => sendable.into_iter().find(|m| m.address.key() == f.key()),
            None if sendable.len() > 1 => return Err(GatewayError::SenderRequired),
            None => sendable.into_iter().next(),
        }
        .ok_or(GatewayError::Forbidden("you cannot send from that mailbox"))?;
        Ok(Submitter {
            mailbox,
            auth_level: caller.access.level(),
            channel,
        })
    }

    /// Submits as `caller` from `from` (see [`Gateway::submitter`]); returns once the
    /// message and its SubmissionAcceptance are durable.
    pub async fn submit(
        &self,
        caller: &Caller,
        from: Option<&EmailAddress>,
        channel: Channel,
        submission: Submission,
    ) -> Result<Accepted, GatewayError> {
        let submitter = self.submitter(caller, from, channel).await?;
        Ok(self.pipeline.submit(&submitter, submission).await?)
    }

    /// Submits for an already chosen sender (a front door that resolved it earlier in its
    /// protocol, as SMTP does at MAIL FROM).
    pub async fn submit_as(
        &self,
        submitter: &Submitter,
        submission: Submission,
    ) -> Result<Accepted, GatewayError> {
        Ok(self.pipeline.submit(submitter, submission).await?)
    }

    /// The recipient at `address`, or `None` if nothing there can receive mail through
    /// this gateway: what SMTP asks at every RCPT TO, before a message exists.
    pub async fn resolve_recipient(
        &self,
        address: &EmailAddress,
    ) -> Result<Option<Recipient>, GatewayError> {
        Ok(resolve(&self.store, address).await?)
    }

    /// The id of the external office whose mail server presented `cert`, if one registered
    /// it (`bote mailbox server-cert`).
    pub async fn office_server(
        &self,
        cert: &crate::auth::ClientCert,
    ) -> Result<Option<i64>, GatewayError> {
        let mut conn = self.store.pool().acquire().await?;
        Ok(crate::store::accounts::office_of_server_cert(&mut conn, &hex::encode(cert.0)).await?)
    }

    /// Waits until a message of `size` bytes to `recipients` would fit the memory budget.
    pub async fn await_room(
        &self,
        size: u64,
        recipients: usize,
    ) -> Result<(), crate::pipeline::Busy> {
        self.pipeline.await_room(size, recipients).await
    }

    /// Grows the room `held` for a message still arriving from `client` to `bytes` in all.
    pub async fn grow_arriving(
        &self,
        client: std::net::IpAddr,
        held: Vec<crate::pipeline::Reservation>,
        bytes: u64,
    ) -> Result<Vec<crate::pipeline::Reservation>, crate::pipeline::Busy> {
        self.pipeline.grow_arriving(client, held, bytes).await
    }
}
