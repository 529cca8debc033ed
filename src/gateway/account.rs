//! A user's own account from a front door: recovering it with the recovery code, and
//! changing its password, which makes the user a key only they hold.

use std::net::IpAddr;

use super::{Gateway, GatewayError};
use crate::accounts::service::Accounts;

impl Gateway {
    /// Sets a new password for `email` with the user's recovery code (spec §5: the user
    /// keeps their key and so their mail); throttled like logins, every session ended.
    pub async fn recover_account(
        &self,
        email: &str,
        recovery_code: &str,
        new_password: &str,
        client: Option<IpAddr>,
    ) -> Result<(), GatewayError> {
        let accounts = Accounts::new(self.store.clone(), self.config.gateway.domains.clone());
        Ok(self
            .auth
            .recover(&accounts, email, recovery_code, new_password, client)
            .await?)
    }

    /// The caller changes their password and gets a new key and recovery code that only
    /// they know (their mail stays readable: every mailbox key they hold is wrapped anew);
    /// throttled like logins, every session ended.
    pub async fn renew_own_key(
        &self,
        caller: &crate::auth::Caller,
        current: &str,
        new_password: &str,
        client: Option<IpAddr>,
    ) -> Result<crate::accounts::service::NewOwnKey, GatewayError> {
        let accounts = Accounts::new(self.store.clone(), self.config.gateway.domains.clone());
        Ok(self
            .auth
            .renew_own_key(&accounts, caller, current, new_password, client)
            .await?)
    }
}
