//! Key discovery policy (spec §5, the enumeration finding): what the directory and WKD
//! show to whom, and how fast. Offices are public bodies: their certificates are listed
//! for anyone. A citizen's certificate is listed for unauthenticated callers only if the
//! citizen opted in; authenticated callers (who may write to them anyway) see it. Lookups
//! are rate-limited per client address, so nobody can sweep the address space.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sequoia_openpgp::serialize::SerializeInto;

use super::{Gateway, GatewayError};
use crate::accounts::MailboxKind;
use crate::address::{DomainName, EmailAddress};
use crate::auth::{Access, Caller};
use crate::crypto::CryptoError;
use crate::keys::{EVIDENCE_LOCAL, PROVIDER_LOCAL};
use crate::store::accounts as account_repo;
use crate::store::vault::{self as keystore, Published};

/// Lookups one client address may make per minute, after a burst of the same size.
const LOOKUPS_PER_MINUTE: u32 = 60;
/// Client addresses tracked before idle ones are forgotten.
const TRACKED: usize = 100_000;

/// Per-client limits on directory and WKD lookups; cheap to clone.
#[derive(Clone)]
pub struct LookupLimiter {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

impl std::fmt::Debug for LookupLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LookupLimiter")
    }
}

impl Default for LookupLimiter {
    fn default() -> Self {
        let per_minute = NonZeroU32::new(LOOKUPS_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute))),
        }
    }
}

impl LookupLimiter {
    /// Counts one lookup by `client` (IPv6 by its /64); the seconds to wait if over.
    fn check(&self, client: Option<IpAddr>) -> Result<(), u64> {
        if self.limiter.len() > TRACKED {
            self.limiter.retain_recent();
        }
        let key = client.map_or(IpAddr::from([0, 0, 0, 0]), crate::client::network);
        self.limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            wait.as_secs().max(1)
        })
    }
}

impl Gateway {
    fn count_lookup(&self, client: Option<IpAddr>) -> Result<(), GatewayError> {
        self.lookups
            .check(client)
            .map_err(|retry_after| GatewayError::RateLimited { retry_after })
    }

    /// The directory entry of one address, for `caller` (anonymous: `None`) at `client`.
    pub async fn directory_entry(
        &self,
        caller: Option<&Caller>,
        client: Option<IpAddr>,
        address: &EmailAddress,
    ) -> Result<Published, GatewayError> {
        self.count_lookup(client)?;
        let mut conn = self.store.pool().acquire().await?;
        keystore::published_by_address(&mut conn, &address.key())
            .await?
            .filter(|p| p.public || caller.is_some())
            .ok_or(GatewayError::NotFound)
    }

    /// The certificates WKD serves for a hashed local part in one of our domains: the
    /// gateway's own evidence and provider certificates, and published mailboxes.
    pub async fn wkd_certificates(
        &self,
        client: Option<IpAddr>,
        domain: &DomainName,
        hash: &str,
    ) -> Result<Vec<Vec<u8>>, GatewayError> {
        self.count_lookup(client)?;
        if !self.config.gateway.domains.contains(domain) {
            return Ok(Vec::new());
        }
        let mut found = Vec::new();
        for (local, key) in [
            (EVIDENCE_LOCAL, &self.keys.evidence),
            (PROVIDER_LOCAL, &self.keys.provider),
        ] {
            let gateway = EmailAddress::parse(&format!("{local}@{domain}"));
            if gateway.is_ok_and(|a| a.wkd_hash() == hash) {
                let binary = key
                    .cert()
                    .to_vec()
                    .map_err(|e| CryptoError::NotACert(e.to_string()))?;
                found.push(binary);
            }
        }
        let mut conn = self.store.pool().acquire().await?;
        let published = keystore::published_by_wkd(&mut conn, domain.as_str(), hash).await?;
        found.extend(published.into_iter().filter(|p| p.public).map(|p| p.cert));
        Ok(found)
    }

    /// Lists (or unlists) the caller's own citizen mailbox in the public directory and
    /// WKD. Office certificates are always listed.
    pub async fn set_published(
        &self,
        caller: &Caller,
        address: &EmailAddress,
        published: bool,
    ) -> Result<(), GatewayError> {
        let Access::User { user, .. } = &caller.access else {
            return Err(GatewayError::Forbidden(
                "a citizen chooses this from a logged-in session",
            ));
        };
        let mut conn = self.store.pool().acquire().await?;
        let (mailbox, _) = account_repo::find_mailbox(&mut conn, address)
            .await?
            .ok_or(GatewayError::NotFound)?;
        if mailbox.kind != MailboxKind::Citizen {
            return Err(GatewayError::Forbidden(
                "office certificates are always listed: offices are public bodies",
            ));
        }
        if mailbox.owner_user_id != Some(user.id) {
            return Err(GatewayError::NotFound);
        }
        account_repo::set_published(&mut conn, mailbox.id, published).await?;
        Ok(())
    }
}
