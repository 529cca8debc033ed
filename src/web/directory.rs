//! Key discovery: the JSON directory (`/api/v1/directory?address=`) and the Web Key
//! Directory (`/.well-known/openpgpkey/…`, advanced and direct layouts) serving every
//! mailbox certificate and the evidence certificate, so that GnuPG's `--locate-keys` finds
//! them. What is shown to whom is the gateway's policy (`gateway/directory.rs`); lookups are
//! by exact address only, never lists.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use sequoia_openpgp::Cert;
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::serialize::SerializeInto;
use serde::{Deserialize, Serialize};

use super::api::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::caller::{ClientIp, MaybeCaller};
use super::problem::Problem;
use crate::address::{DomainName, EmailAddress};
use crate::auth::Caller;
use crate::gateway::Gateway;
use crate::store::vault::Published;

/// `?address=`
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DirectoryQuery {
    /// The address to look up (case-insensitive).
    address: Option<String>,
}

/// One directory entry.
#[derive(Debug, Serialize, utoipa::ToSchema)]
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
    /// Whether anyone may look it up without logging in (offices always; citizens who
    /// chose it).
    pub public: bool,
}

fn invalid_address(detail: impl Into<String>) -> Response {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-address",
        "Invalid address",
    )
    .with_detail(detail)
    .into_response()
}

/// Looks up the certificate of one address: anyone may look up offices and citizens who
/// chose to be listed; a logged-in caller may look up any mailbox. Rate-limited per client.
#[utoipa::path(get, path = "/api/v1/directory", params(DirectoryQuery),
    security((), ("bearer" = [])),
    responses((status = 200, body = DirectoryEntry),
              (status = 400, body = crate::web::problem::Problem),
              (status = 404, body = crate::web::problem::Problem),
              (status = 429, body = crate::web::problem::Problem)))]
pub async fn lookup(
    State(gateway): State<Gateway>,
    MaybeCaller(caller): MaybeCaller,
    ClientIp(client): ClientIp,
    ApiQuery(q): ApiQuery<DirectoryQuery>,
) -> Response {
    let Some(raw) = q.address else {
        return invalid_address("the `address` query parameter is required");
    };
    let address = match EmailAddress::parse(&raw) {
        Ok(a) => a,
        Err(e) => return invalid_address(e.to_string()),
    };
    match gateway
        .directory_entry(caller.as_ref(), client, &address)
        .await
    {
        Ok(found) => match entry(&found) {
            Some(e) => Json(e).into_response(),
            None => ApiError::from(crate::error::Failure::internal(
                &"stored certificate does not parse",
            ))
            .into_response(),
        },
        Err(e) => ApiError::from(e).into_response(),
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
        public: p.public,
    })
}

/// `PUT /api/v1/mailboxes/{address}/directory`
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// Listed for anonymous lookups (directory, WKD) or not.
    published: bool,
}

/// A citizen lists (or unlists) their own mailbox in the public directory and WKD.
#[utoipa::path(put, path = "/api/v1/mailboxes/{address}/directory",
    params(("address" = String, Path, description = "The citizen's own mailbox")),
    request_body = PublishRequest, security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403, body = crate::web::problem::Problem),
              (status = 404, body = crate::web::problem::Problem)))]
pub async fn publish(
    State(gateway): State<Gateway>,
    caller: Caller,
    ApiPath(address): ApiPath<String>,
    ApiJson(req): ApiJson<PublishRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let address = EmailAddress::parse(&address).map_err(ApiError::bad_request)?;
    gateway
        .set_published(&caller, &address, req.published)
        .await?;
    Ok(Json(
        serde_json::json!({ "address": address.to_string(), "published": req.published }),
    ))
}

/// `?l=` (the local part, which WKD clients send alongside the hash).
#[derive(Debug, Deserialize)]
pub struct WkdQuery {
    l: Option<String>,
}

/// `GET /.well-known/openpgpkey/{domain}/hu/{hash}` (advanced layout).
pub async fn wkd_advanced(
    State(gateway): State<Gateway>,
    ClientIp(client): ClientIp,
    ApiPath((domain, hash)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<WkdQuery>,
) -> Response {
    wkd(&gateway, client, &domain, &hash, q.l.as_deref()).await
}

/// `GET /.well-known/openpgpkey/hu/{hash}` (direct layout: the domain is the host, from
/// the request's authority: HTTP/2 sends no `Host` header).
pub async fn wkd_direct(
    State(gateway): State<Gateway>,
    ClientIp(client): ClientIp,
    uri: Uri,
    headers: HeaderMap,
    ApiPath(hash): ApiPath<String>,
    ApiQuery(q): ApiQuery<WkdQuery>,
) -> Response {
    let host = uri
        .authority()
        .map(|a| a.host().to_owned())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name).to_owned())
        })
        .unwrap_or_default();
    wkd(&gateway, client, &host, &hash, q.l.as_deref()).await
}

/// `GET …/policy`: an empty policy file says this domain supports WKD.
pub async fn wkd_policy() -> Response {
    let mut r = "".into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

async fn wkd(
    gateway: &Gateway,
    client: Option<std::net::IpAddr>,
    domain: &str,
    hash: &str,
    local: Option<&str>,
) -> Response {
    let Ok(domain) = DomainName::parse(domain) else {
        return Problem::not_found().into_response();
    };
    if let Some(l) = local {
        // A client that names the local part must name the one that hashes to the path.
        let named = EmailAddress::parse(&format!("{l}@{domain}"));
        if named.map(|a| a.wkd_hash()).ok().as_deref() != Some(hash) {
            return Problem::not_found().into_response();
        }
    }
    let certs = match gateway.wkd_certificates(client, &domain, hash).await {
        Ok(c) => c,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if certs.is_empty() {
        return Problem::not_found().into_response();
    }
    let mut r = certs.concat().into_response();
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
