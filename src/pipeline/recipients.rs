//! Recipient resolution: an address is a recipient if it is a registered, enabled mailbox
//! with a certificate to encrypt to (its own key, or an external office's certificate).
//! Front doors call [`resolve`] per recipient before a message exists (SMTP per RCPT TO);
//! the pipeline calls it again inside its checks.

use std::sync::Arc;

use sequoia_openpgp::Cert;

use super::SubmitError;
use crate::accounts::Mailbox;
use crate::address::EmailAddress;
use crate::store::Store;
use crate::store::accounts as account_repo;

/// A recipient resolved to its mailbox and the certificate its copy is encrypted to.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// The mailbox.
    pub mailbox: Mailbox,
    /// The certificate copies for it are encrypted to.
    pub cert: Arc<Cert>,
}

/// The recipient at `address`, or `None` if nothing there can receive mail.
pub async fn resolve(
    store: &Store,
    address: &EmailAddress,
) -> Result<Option<Recipient>, SubmitError> {
    let Some((mailbox, key_cert)) = account_repo::lookup_recipient(store, address).await? else {
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

/// A stored certificate, parsed (cached by content).
pub(super) fn parse_cert(bytes: &[u8]) -> Result<Arc<Cert>, SubmitError> {
    crate::crypto::stored_cert(bytes).map_err(SubmitError::StoredCertificate)
}
