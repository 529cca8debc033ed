//! A member's view of the access requests to their mailboxes, and their confirmation
//! (`accounts::grants`): both need a member's logged-in session, whose unlocked user key
//! opens the mailbox's data key.

use crate::accounts::grants;
use crate::address::EmailAddress;
use crate::store::accounts::PendingGrant;

use super::{Access, Auth, AuthError, Caller};

/// What a user sees of access requests.
#[derive(Debug, Clone)]
pub struct Grants {
    /// The fingerprint of the user's own key.
    pub own_fingerprint: String,
    /// Whether the user made that key (changed their password); else an operator's
    /// command made it, and colleagues cannot give it an office's key.
    pub own_key_is_own: bool,
    /// When the key was made (unix ms): a user who did not change their password then
    /// learns that someone else did.
    pub own_key_made_at: Option<i64>,
    /// Members waiting for the key of a mailbox the user is active in.
    pub pending: Vec<PendingGrant>,
}

impl Auth {
    /// The caller's own key (what a colleague compares before confirming the caller's
    /// access) and the pending grants the caller may confirm.
    pub async fn grants(&self, caller: &Caller) -> Result<Grants, AuthError> {
        let Access::User { user, key, .. } = &caller.access else {
            return Err(AuthError::Forbidden(
                "access requests are for logged-in users",
            ));
        };
        let mut conn = self.store.pool().acquire().await?;
        Ok(Grants {
            own_fingerprint: key.fingerprint().to_hex(),
            own_key_is_own: user.own_key,
            own_key_made_at: crate::store::vault::user_key_made_at(&mut conn, user.id).await?,
            pending: grants::pending(&mut conn, user).await?,
        })
    }

    /// The caller confirms that `user`, whose key has `fingerprint`, may read `mailbox`.
    pub async fn confirm_grant(
        &self,
        caller: &Caller,
        mailbox: &EmailAddress,
        user: &EmailAddress,
        fingerprint: &str,
    ) -> Result<(), AuthError> {
        let (
            Access::User {
                user: member, key, ..
            },
            Some(_),
        ) = (&caller.access, caller.session)
        else {
            return Err(AuthError::Forbidden(
                "access is confirmed from a logged-in member's session",
            ));
        };
        let mut tx = self.store.begin().await?;
        grants::confirm(&mut tx, member, key.clone(), (mailbox, user, fingerprint)).await?;
        tx.commit().await?;
        Ok(())
    }
}
