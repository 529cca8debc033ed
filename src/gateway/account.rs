//! A user's own account from a front door: recovering it with the recovery code.

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
}
