//! Confirming pending grants (zero access, docs/key-hierarchy.md): an operator can only
//! record that a user should become a member; the mailbox data key reaches the new member
//! when an active member, whose own key is unlocked in their session, confirms that this
//! user (and this user key, by its fingerprint) should have it, and wraps it for them.
//!
//! Grants used to complete at the next login of any member, unasked: an operator who
//! added a staff user with a password of their own choosing (or reset a member with
//! `--new-key`) then held the office's key as soon as anyone logged in. A member's
//! confirmation of the fingerprint is what keeps the operator out.

use std::sync::Arc;

use sequoia_openpgp::Cert;

use super::User;
use super::service::AccountError;
use crate::address::EmailAddress;
use crate::clock::now_ms;
use crate::crypto::pool;
use crate::store::accounts::{self as account_repo, PendingGrant};
use crate::store::vault::{self as keystore, Holder};
use crate::store::{Tx, audit};
use crate::vault;

/// The pending grants `member` may confirm: pending members of the mailboxes in which
/// `member` is active.
pub async fn pending(
    conn: &mut sqlx::AnyConnection,
    member: &User,
) -> Result<Vec<PendingGrant>, AccountError> {
    let mut grants = account_repo::pending_grants_for(conn, member.id).await?;
    for grant in &mut grants {
        // Staff learn that the operator asked, not the operator's account on the host.
        if grant.requested_by.starts_with("operator:") {
            "operator".clone_into(&mut grant.requested_by);
        }
    }
    Ok(grants)
}

/// `member` (active in `mailbox`, their key unlocked) confirms the pending grant of `user`
/// whose user key has `fingerprint`, and wraps the mailbox's data key for it, inside the
/// caller's transaction (audited). A fingerprint other than the user's key's now is
/// refused: the key may have been replaced since the member compared it.
pub async fn confirm(
    tx: &mut Tx,
    member: &User,
    member_key: Arc<Cert>,
    (mailbox, user, fingerprint): (&EmailAddress, &EmailAddress, &str),
) -> Result<(), AccountError> {
    let no_grant = || AccountError::NoPendingGrant {
        user: user.clone(),
        mailbox: mailbox.clone(),
    };
    let grant = pending(tx, member)
        .await?
        .into_iter()
        .find(|g| same_address(&g.mailbox, mailbox) && same_address(&g.user, user))
        .ok_or_else(no_grant)?;
    if !grant
        .fingerprint
        .eq_ignore_ascii_case(&normalised(fingerprint))
    {
        return Err(AccountError::GrantKeyChanged {
            user: user.clone(),
            fingerprint: grant.fingerprint,
        });
    }
    // Serialised with a renewal of the newcomer's key, which takes the same row first.
    account_repo::lock_user(tx, grant.user_id).await?;
    let (Some(wrap), Some(user_key)) = (
        keystore::wrap(tx, grant.mailbox_id, Holder::User(member.id)).await?,
        keystore::user_key(tx, grant.user_id).await?,
    ) else {
        return Err(no_grant());
    };
    // The key wrapped to is the one compared: its own fingerprint, not the stored column,
    // and read after the list (on PostgreSQL each statement sees the latest commit).
    let wrapped_to = crate::crypto::stored_cert(&user_key.cert)?
        .fingerprint()
        .to_hex();
    if wrapped_to != grant.fingerprint {
        return Err(AccountError::GrantKeyChanged {
            user: user.clone(),
            fingerprint: wrapped_to,
        });
    }
    let wrapped = pool::run(move || {
        let data_key = vault::unwrap_for_user(&wrap, &member_key)?;
        vault::wrap_for_user(&data_key, &user_key.cert)
    })
    .await?;
    let activated =
        account_repo::activate_pending(tx, grant.mailbox_id, grant.user_id, &wrapped_to).await?;
    if !activated {
        return Err(no_grant());
    }
    let now = now_ms();
    keystore::put_wrap(
        tx,
        grant.mailbox_id,
        Holder::User(grant.user_id),
        &wrapped,
        now,
    )
    .await?;
    audit::record(
        tx,
        &super::Actor::User(member.email.clone()),
        "mailbox.grant",
        &grant.mailbox,
        serde_json::json!({ "user": grant.user, "fingerprint": grant.fingerprint }),
        now,
    )
    .await?;
    Ok(())
}

/// Whether a stored address and a given one are the same mailbox.
fn same_address(stored: &str, given: &EmailAddress) -> bool {
    EmailAddress::parse(stored).is_ok_and(|a| a.key() == given.key())
}

/// A fingerprint as people copy it: spaces and colons dropped.
fn normalised(fingerprint: &str) -> String {
    fingerprint
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect()
}
