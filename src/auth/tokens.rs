//! Mailbox tokens for office software: resolving a presented token (with its optional
//! client-certificate binding), and creating read tokens from a member's session, which
//! seal the mailbox data key under the new token so that the token alone can read.

use std::sync::Arc;

use super::{Access, Auth, AuthError, Caller, ClientCert};
use crate::accounts::credential::{Credential, Kind};
use crate::accounts::service;
use crate::accounts::{AuthLevel, MailboxKind, MembershipState};
use crate::address::EmailAddress;
use crate::clock::now_ms;
use crate::crypto::keywrap::{self, Key32};
use crate::crypto::pool;
use crate::store::accounts::{self as account_repo, CredentialRow, Credentials};
use crate::store::audit;
use crate::store::vault::{self as keystore, Holder};
use crate::vault;

/// Key-derivation purpose of read-token secrets.
const PURPOSE_READ_TOKEN: &str = "read-token";

/// Associated data binding a sealed data key to its token.
fn token_context(credential_id: i64) -> String {
    format!("read-token-data-key:{credential_id}")
}

impl Auth {
    pub(super) async fn resolve_token(
        &self,
        credential: &Credential,
        client_cert: Option<ClientCert>,
    ) -> Result<Caller, AuthError> {
        let digest = credential.digest();
        let found = account_repo::lookup_credential(&self.store, &digest)
            .await?
            .ok_or(AuthError::Unauthenticated)?;
        // A token bound to a client certificate opens only over a connection that presented
        // that certificate, and then counts as two factors (spec §2).
        let level = match &found.client_cert_sha256 {
            None => AuthLevel::Normal,
            Some(bound) => match client_cert {
                Some(ClientCert(presented)) if hex::encode(presented) == *bound => AuthLevel::High,
                _ => return Err(AuthError::Unauthenticated),
            },
        };
        let data_key = if found.scope == "read" {
            let mut conn = self.store.reader().await?;
            let wrap = keystore::wrap(&mut conn, found.mailbox.id, Holder::Token(found.id))
                .await?
                .ok_or(AuthError::Unauthenticated)?;
            conn.release();
            let key = Key32::from_secret(credential.expose().as_bytes(), PURPOSE_READ_TOKEN);
            let bytes = keywrap::open(&key, &wrap, &token_context(found.id))
                .map_err(|_| AuthError::Unauthenticated)?;
            Some(Arc::new(Key32::from_bytes(&bytes)?))
        } else {
            None
        };
        Ok(Caller {
            access: Access::Token {
                credential_id: found.id,
                mailbox: Arc::new(found.mailbox),
                data_key,
                level,
            },
            session: None,
        })
    }

    /// Creates a read token for an office mailbox the logged-in member can open: the
    /// mailbox data key is sealed under the new token, so the token alone can read.
    pub async fn create_read_token(
        &self,
        caller: &Caller,
        mailbox: &EmailAddress,
    ) -> Result<Credential, AuthError> {
        let Access::User { user, key, .. } = &caller.access else {
            return Err(AuthError::Forbidden(
                "read tokens are created from a logged-in member's session",
            ));
        };
        let mut conn = self.store.pool().acquire().await?;
        let (mb, _) = account_repo::find_mailbox(&mut conn, mailbox)
            .await?
            .ok_or(AuthError::NotFound)?;
        let active = account_repo::membership_state(&mut conn, mb.id, user.id).await?
            == Some(MembershipState::Active);
        if !active || mb.kind != MailboxKind::Office {
            return Err(AuthError::NotFound);
        }
        let wrap = keystore::wrap(&mut conn, mb.id, Holder::User(user.id))
            .await?
            .ok_or(AuthError::NotFound)?;
        drop(conn);
        let key = key.clone();
        let data_key = pool::run(move || vault::unwrap_for_user(&wrap, &key)).await?;
        let token = Credential::generate(Kind::MailboxToken);
        let now = now_ms();
        let actor = caller.actor();
        let actor_name = actor.to_string();
        let mut tx = self.store.begin().await?;
        let id = account_repo::insert_credential(
            &mut tx,
            &account_repo::NewCredential {
                mailbox_id: mb.id,
                scope: "read",
                token_hash: token.digest(),
                client_cert_sha256: None,
                created_by: &actor_name,
                creator_user_id: Some(user.id),
                now,
            },
        )
        .await?;
        let sealing = Key32::from_secret(token.expose().as_bytes(), PURPOSE_READ_TOKEN);
        let sealed = keywrap::seal(&sealing, data_key.as_bytes(), &token_context(id))?;
        keystore::put_wrap(&mut tx, mb.id, Holder::Token(id), &sealed, now).await?;
        let details = serde_json::json!({ "credential": id, "scope": "read" });
        audit::record(
            &mut tx,
            &actor,
            "token.create",
            &mailbox.to_string(),
            details,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(token)
    }
}

impl Auth {
    /// The tokens the caller created from their sessions (read tokens), oldest first.
    pub async fn own_tokens(&self, caller: &Caller) -> Result<Vec<CredentialRow>, AuthError> {
        let user = caller.user().ok_or(AuthError::Forbidden(
            "tokens are listed from a logged-in session",
        ))?;
        let mut conn = self.store.pool().acquire().await?;
        let which = Credentials::CreatedBy {
            user_id: user.id,
            mailbox_id: None,
        };
        Ok(account_repo::list_credentials(&mut conn, which).await?)
    }

    /// Revokes a token the caller created; anyone else's is "not found".
    pub async fn revoke_own_token(&self, caller: &Caller, id: i64) -> Result<(), AuthError> {
        let user = caller.user().ok_or(AuthError::Forbidden(
            "tokens are revoked from a logged-in session",
        ))?;
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let row = account_repo::list_credentials(&mut tx, Credentials::Id(id))
            .await?
            .into_iter()
            .find(|r| r.creator_user_id == Some(user.id) && r.revoked_at.is_none())
            .ok_or(AuthError::NotFound)?;
        service::revoke(
            &mut tx,
            &caller.actor(),
            Credentials::Id(id),
            &row.mailbox,
            "revoked by its creator",
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
