//! Proofs: bundle export and evidence search. Whoever asks, a bundle leaves through
//! [`bundle::export_audited`]: built, verified against the gateway's own keys, audited.

use super::{Gateway, GatewayError, PageSize, Paged};
use crate::accounts::Role;
use crate::address::EmailAddress;
use crate::auth::Caller;
use crate::evidence::StoredEvidence;
use crate::evidence::bundle::{self, Exported};
use crate::evidence::query::{self, Search};

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
        self.require_legal(caller)?;
        let limit = SEARCH_PAGE.of(search.limit)?;
        let search = Search {
            limit: Some(limit),
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
        self.require_legal(caller)?;
        self.export(caller, message, recipient).await
    }

    /// The offices a legal user's evidence access is limited to (empty: not limited).
    pub async fn legal_scope(&self, caller: &Caller) -> Result<Vec<String>, GatewayError> {
        self.require_legal(caller)?;
        Ok(Vec::new())
    }

    fn require_legal(&self, caller: &Caller) -> Result<(), GatewayError> {
        match caller.user() {
            Some(user) if user.role == Role::Legal => Ok(()),
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
