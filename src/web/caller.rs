//! Who is calling: the one extractor that turns a request's credential (an
//! `Authorization: Bearer …` header; the web inbox adds its session cookie here) into a
//! resolved [`Caller`]. Handlers that need a caller take it as an argument.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
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

/// A caller if the request presents a credential, nobody if it presents none; a credential
/// that does not resolve is refused (401), not ignored.
#[derive(Debug)]
pub struct MaybeCaller(pub Option<Caller>);

impl FromRequestParts<Gateway> for MaybeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Gateway) -> Result<Self, ApiError> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Ok(Self(None));
        }
        Caller::from_request_parts(parts, gateway)
            .await
            .map(|c| Self(Some(c)))
    }
}

/// The client's address as the listener accepted it (absent for in-process requests).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_canonical()),
        ))
    }
}
