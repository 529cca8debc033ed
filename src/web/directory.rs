//! Key discovery: the JSON directory (`/api/v1/directory?address=`) and the Web Key
//! Directory (`/.well-known/openpgpkey/…`, advanced and direct layouts) serving every
//! mailbox certificate and the evidence certificate, so that GnuPG's `--locate-keys` finds
//! them. Certificates are public by design; lookups are by exact address only, never lists.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sequoia_openpgp::Cert;
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::serialize::SerializeInto;
use serde::{Deserialize, Serialize};

use super::problem::Problem;
use crate::address::{DomainName, EmailAddress};
use crate::gateway::Gateway;
use crate::keys::{EVIDENCE_LOCAL, PROVIDER_LOCAL};
use crate::store::vault::{self as keystore, Published};

/// `?address=`
#[derive(Debug, Deserialize)]
pub struct DirectoryQuery {
    address: Option<String>,
}

/// One directory entry.
#[derive(Debug, Serialize)]
pub struct DirectoryEntry {
    /// Canonical address.
    pub address: String,
    /// `citizen`, `office` or `external`.
    pub kind: String,
    /// Certificate fingerprint.
    pub fingerprint: String,
    /// The certificate, ASCII-armoured.
    pub certificate: String,
    /// Whether the mailbox can receive `personal` messages (opened only at level `high`):
    /// not for external offices, whose own servers bote cannot hold to that.
    pub personal: bool,
}

fn unavailable(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "directory lookup failed");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "Directory unavailable",
    )
    .into_response()
}

/// `GET /api/v1/directory?address=`
pub async fn lookup(State(gateway): State<Gateway>, Query(q): Query<DirectoryQuery>) -> Response {
    let Some(raw) = q.address else {
        return Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-address",
            "Invalid address",
        )
        .with_detail("the `address` query parameter is required")
        .into_response();
    };
    let address = match EmailAddress::parse(&raw) {
        Ok(a) => a,
        Err(e) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-address",
                "Invalid address",
            )
            .with_detail(e.to_string())
            .into_response();
        }
    };
    let mut conn = match gateway.store().pool().acquire().await {
        Ok(c) => c,
        Err(e) => return unavailable(&e),
    };
    let found = match keystore::published_by_address(&mut conn, &address.key()).await {
        Ok(Some(p)) => p,
        Ok(None) => return Problem::not_found().into_response(),
        Err(e) => return unavailable(&e),
    };
    match entry(&found) {
        Some(e) => Json(e).into_response(),
        None => unavailable(&"stored certificate does not parse"),
    }
}

fn entry(p: &Published) -> Option<DirectoryEntry> {
    let cert = Cert::from_bytes(&p.cert).ok()?;
    let armored = String::from_utf8(cert.armored().to_vec().ok()?).ok()?;
    Some(DirectoryEntry {
        address: p.address.clone(),
        kind: p.kind.clone(),
        fingerprint: cert.fingerprint().to_hex(),
        certificate: armored,
        personal: p.kind != "external",
    })
}

/// `?l=` (the local part, which WKD clients send alongside the hash).
#[derive(Debug, Deserialize)]
pub struct WkdQuery {
    l: Option<String>,
}

/// `GET /.well-known/openpgpkey/{domain}/hu/{hash}` (advanced layout).
pub async fn wkd_advanced(
    State(gateway): State<Gateway>,
    Path((domain, hash)): Path<(String, String)>,
    Query(q): Query<WkdQuery>,
) -> Response {
    wkd(&gateway, &domain, &hash, q.l.as_deref()).await
}

/// `GET /.well-known/openpgpkey/hu/{hash}` (direct layout: the domain is the host).
pub async fn wkd_direct(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Path(hash): Path<String>,
    Query(q): Query<WkdQuery>,
) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name))
        .unwrap_or_default()
        .to_owned();
    wkd(&gateway, &host, &hash, q.l.as_deref()).await
}

/// `GET …/policy`: an empty policy file says this domain supports WKD.
pub async fn wkd_policy() -> Response {
    let mut r = "".into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

async fn wkd(gateway: &Gateway, domain: &str, hash: &str, local: Option<&str>) -> Response {
    let Ok(domain) = DomainName::parse(domain) else {
        return Problem::not_found().into_response();
    };
    if !gateway.config().gateway.domains.contains(&domain) {
        return Problem::not_found().into_response();
    }
    if let Some(l) = local {
        // A client that names the local part must name the one that hashes to the path.
        let named = EmailAddress::parse(&format!("{l}@{domain}"));
        if named.map(|a| a.wkd_hash()).ok().as_deref() != Some(hash) {
            return Problem::not_found().into_response();
        }
    }
    let mut body = Vec::new();
    for (local, key) in [
        (EVIDENCE_LOCAL, &gateway.keys().evidence),
        (PROVIDER_LOCAL, &gateway.keys().provider),
    ] {
        let gateway = EmailAddress::parse(&format!("{local}@{domain}"));
        if gateway.is_ok_and(|a| a.wkd_hash() == hash) {
            body.extend(key.cert().to_vec().unwrap_or_default());
        }
    }
    let mut conn = match gateway.store().pool().acquire().await {
        Ok(c) => c,
        Err(e) => return unavailable(&e),
    };
    match keystore::published_by_wkd(&mut conn, domain.as_str(), hash).await {
        Ok(found) => found.iter().for_each(|p| body.extend_from_slice(&p.cert)),
        Err(e) => return unavailable(&e),
    }
    if body.is_empty() {
        return Problem::not_found().into_response();
    }
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}
