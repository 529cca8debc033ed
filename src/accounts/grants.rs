//! Completing pending grants (zero access, docs/key-hierarchy.md): an operator can only
//! record that a user should become a member; the mailbox data key reaches the new member
//! when an active member, whose own key is unlocked at login, wraps it for them.

use std::sync::Arc;

use sequoia_openpgp::Cert;

use super::service::AccountError;
use super::{Actor, MembershipState, User};
use crate::clock::now_ms;
use crate::crypto::pool;
use crate::store::accounts as account_repo;
use crate::store::vault::{self as keystore, Holder};
use crate::store::{Tx, audit};
use crate::vault;

/// `member` (active, with their key unlocked) wraps each mailbox data key they hold for
/// every pending member of that mailbox, inside the caller's transaction. Returns how many
/// grants were completed.
pub async fn complete_pending(
    tx: &mut Tx,
    member: &User,
    member_key: Arc<Cert>,
) -> Result<usize, AccountError> {
    let pending = account_repo::pending_grants_for(tx, member.id).await?;
    let mut done = 0;
    for (mailbox_id, user_id) in pending {
        let (Some(wrap), Some(user_key), Some(mailbox)) = (
            keystore::wrap(tx, mailbox_id, Holder::User(member.id)).await?,
            keystore::user_key(tx, user_id).await?,
            account_repo::mailbox_by_id(tx, mailbox_id).await?,
        ) else {
            continue;
        };
        let key = member_key.clone();
        let grant = pool::run(move || {
            let data_key = vault::unwrap_for_user(&wrap, &key)?;
            vault::wrap_for_user(&data_key, &user_key.cert)
        })
        .await?;
        let now = now_ms();
        keystore::put_wrap(tx, mailbox_id, Holder::User(user_id), &grant, now).await?;
        account_repo::set_membership_state(tx, mailbox_id, user_id, MembershipState::Active)
            .await?;
        audit::record(
            tx,
            &Actor::User(member.email.clone()),
            "mailbox.grant",
            &mailbox.address.to_string(),
            serde_json::json!({ "user_id": user_id }),
            now,
        )
        .await?;
        done += 1;
    }
    Ok(done)
}
