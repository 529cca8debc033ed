//! Proofs: bundle export and evidence search. Whoever asks, a bundle leaves through
//! [`bundle::export_audited`]: built, verified against the gateway's own keys, audited.

use super::{Gateway, GatewayError, PageSize, Paged};
use crate::accounts::{Role, User};
use crate::address::EmailAddress;
use crate::auth::Caller;
use crate::evidence::StoredEvidence;
use crate::evidence::bundle::{self, Exported};
use crate::evidence::query::{self, QueryError, Search};
use crate::store::accounts as accounts_repo;

/// Evidence search pages.
pub const SEARCH_PAGE: PageSize = PageSize {
    default: 100,
    max: 1000,
};

impl Gateway {
    /// The bundle of a copy the caller can see: its own recipient's chain, or for the
    /// sender's copy the chain of `recipient` (required when there are several).
    pub async fn copy_bundle(
        &self,
        caller: &Caller,
        copy_id: &str,
        recipient: Option<&EmailAddress>,
    ) -> Result<Exported, GatewayError> {
        let (message, recipient) = self
            .pipeline
            .bundle_subject(&caller.access, copy_id, recipient)
            .await?;
        self.export(caller, &message, recipient.as_ref()).await
    }

    /// A page of an evidence search (legal role), oldest first ([`SEARCH_PAGE`]).
    pub async fn search_evidence(
        &self,
        caller: &Caller,
        search: &Search,
    ) -> Result<Paged<StoredEvidence>, GatewayError> {
        let scope_user = self.scope_user(caller).await?;
        let limit = SEARCH_PAGE.of(search.limit)?;
        let search = Search {
            limit: Some(limit),
            scope_user,
            ..search.clone()
        };
        let mut conn = self.store.pool().acquire().await?;
        let items = query::search(&mut conn, &search).await?;
        Ok(Paged::of(items, limit, |e| e.log_index.to_string()))
    }

    /// Any message's bundle, by gateway id or Message-ID (legal role).
    pub async fn evidence_bundle(
        &self,
        caller: &Caller,
        message: &str,
        recipient: Option<&EmailAddress>,
    ) -> Result<Exported, GatewayError> {
        let Some(scope_user) = self.scope_user(caller).await? else {
            return self.export(caller, message, recipient).await;
        };
        // A scoped legal user: only chains whose sender or recipient is in scope; anything
        // else is "not found", exactly as a message that does not exist.
        let search = Search {
            message: Some(message.to_owned()),
            recipient: recipient.cloned(),
            limit: Some(SEARCH_PAGE.max),
            scope_user: Some(scope_user),
            ..Search::default()
        };
        let mut conn = self.store.pool().acquire().await?;
        let found = query::search(&mut conn, &search).await?;
        drop(conn);
        let mut recipients: Vec<EmailAddress> = Vec::new();
        for e in &found {
            if !recipients
                .iter()
                .any(|r| r.key() == e.record.recipient.key())
            {
                recipients.push(e.record.recipient.clone());
            }
        }
        let chosen = match (recipient, recipients.len()) {
            (_, 0) => {
                tracing::info!(caller = ?caller.access, "bundle outside the legal user's scope refused as not found");
                return Err(GatewayError::NotFound);
            }
            (Some(r), _) => r.clone(),
            (None, 1) => recipients.remove(0),
            (None, count) => {
                return Err(QueryError::AmbiguousRecipient {
                    message: message.to_owned(),
                    count,
                    list: recipients
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                }
                .into());
            }
        };
        // By the gateway id of the hit, not the name given: a Message-ID is unique per
        // sender only, and the export would otherwise take every message carrying it,
        // those outside the scope too.
        let mut ids = found
            .iter()
            .filter(|e| e.record.recipient.key() == chosen.key())
            .map(|e| e.record.message.gateway_id.as_str())
            .collect::<Vec<_>>();
        // Sorted first: the hits are in log order, where two messages' records interleave.
        ids.sort_unstable();
        ids.dedup();
        match ids.as_slice() {
            [one] => self.export(caller, one, Some(&chosen)).await,
            [] => Err(GatewayError::NotFound),
            _ => Err(QueryError::AmbiguousMessage {
                message: message.to_owned(),
                count: ids.len(),
            }
            .into()),
        }
    }

    /// The offices a legal user's evidence access is limited to (empty: not limited).
    pub async fn legal_scope(&self, caller: &Caller) -> Result<Vec<String>, GatewayError> {
        let user = self.require_legal(caller)?;
        let mut conn = self.store.pool().acquire().await?;
        Ok(accounts_repo::legal_scope(&mut conn, user.id).await?)
    }

    /// The legal caller's id when their access is limited to a scope; refuses other roles.
    async fn scope_user(&self, caller: &Caller) -> Result<Option<i64>, GatewayError> {
        let user = self.require_legal(caller)?;
        let mut conn = self.store.pool().acquire().await?;
        let scope = accounts_repo::legal_scope(&mut conn, user.id).await?;
        Ok((!scope.is_empty()).then_some(user.id))
    }

    fn require_legal<'c>(&self, caller: &'c Caller) -> Result<&'c User, GatewayError> {
        match caller.user() {
            Some(user) if user.role == Role::Legal => Ok(user),
            _ => {
                tracing::info!(caller = ?caller.access, "evidence access denied");
                Err(GatewayError::Forbidden(
                    "evidence search is for users with the legal role",
                ))
            }
        }
    }

    async fn export(
        &self,
        caller: &Caller,
        message: &str,
        recipient: Option<&EmailAddress>,
    ) -> Result<Exported, GatewayError> {
        let sources = bundle::Sources {
            store: &self.store,
            log: &self.log,
            keys: &self.keys,
            attestor: self.attestor.as_ref(),
        };
        Ok(bundle::export_audited(sources, &caller.actor(), message, recipient, None).await?)
    }
}
