//! Who is calling: the one extractor that turns a request's credential (an
//! `Authorization: Bearer …` header; the web inbox adds its session cookie here) into a
//! resolved [`Caller`]. Handlers that need a caller take it as an argument.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::api::ApiError;
use crate::accounts::credential::Credential;
use crate::auth::{AuthError, Caller};
use crate::gateway::Gateway;

/// The credential a request presents, parsed; `None` if it presents none or garbage.
pub fn credential(parts: &Parts) -> Option<Credential> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Credential::parse(token.trim())
}

impl FromRequestParts<Gateway> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Gateway) -> Result<Self, ApiError> {
        let credential = credential(parts).ok_or(AuthError::Unauthenticated)?;
        // The HTTPS listener requests no client certificate, so tokens bound to one (for
        // SMTP with mutual TLS) do not open here.
        Ok(gateway.auth().resolve(&credential, None).await?)
    }
}
