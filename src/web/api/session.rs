//! Sessions, second factors and read tokens.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiJson, ApiPath};
use crate::address::EmailAddress;
use crate::auth::Caller;
use crate::gateway::Gateway;
use crate::web::caller::ClientIp;

/// `POST /api/v1/session`
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Login address.
    email: String,
    /// Password.
    password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoginRequest({}, password ***)", self.email)
    }
}

/// A session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionResponse {
    /// Bearer token for `Authorization: Bearer …`; shown once.
    token: String,
    /// The user's login.
    email: String,
    /// The user's role.
    role: String,
    /// `normal`; `POST /api/v1/session/totp` raises it to `high`.
    auth_level: String,
    /// Whether a second factor is enrolled.
    second_factor: bool,
    /// Access requests to the user's mailboxes waiting for their confirmation
    /// (`GET /api/v1/grants`).
    grants_waiting: usize,
}

/// Logs in with a password; the session starts at level `normal`.
#[utoipa::path(post, path = "/api/v1/session", request_body = LoginRequest,
    responses((status = 201, body = SessionResponse),
              (status = 401, body = crate::web::problem::Problem),
              (status = 429, body = crate::web::problem::Problem)))]
pub async fn login(
    State(gateway): State<Gateway>,
    ClientIp(client): ClientIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let session = gateway
        .auth()
        .login(&req.email, &req.password, client)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(SessionResponse {
            token: session.credential.expose().to_owned(),
            email: session.user.email.to_string(),
            role: session.user.role.to_string(),
            auth_level: session.level.to_string(),
            second_factor: session.second_factor,
            grants_waiting: session.grants_waiting,
        }),
    ))
}

/// Ends the session.
#[utoipa::path(delete, path = "/api/v1/session", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = crate::web::problem::Problem)))]
pub async fn logout(
    State(gateway): State<Gateway>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    gateway.auth().logout(&caller).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/session/totp`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    /// The current six-digit TOTP code.
    code: String,
}

/// The level of a session.
#[derive(Debug, Serialize, ToSchema)]
pub struct LevelResponse {
    /// `high`.
    auth_level: String,
}

/// Raises the session to level `high` with a TOTP code (RFC 6238).
#[utoipa::path(post, path = "/api/v1/session/totp", request_body = CodeRequest,
    security(("bearer" = [])),
    responses((status = 200, body = LevelResponse), (status = 401, body = crate::web::problem::Problem)))]
pub async fn second_factor(
    State(gateway): State<Gateway>,
    caller: Caller,
    ClientIp(client): ClientIp,
    ApiJson(req): ApiJson<CodeRequest>,
) -> Result<Json<LevelResponse>, ApiError> {
    gateway
        .auth()
        .second_factor(&caller, &req.code, client)
        .await?;
    Ok(Json(LevelResponse {
        auth_level: "high".into(),
    }))
}

/// A new TOTP secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpResponse {
    /// `otpauth://totp/…` for an authenticator app; confirmed by the first valid code.
    otpauth: String,
}

/// `POST /api/v1/totp`
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    /// The user's recovery code: required for the first factor, so that a password alone
    /// never leads to level `high`.
    #[serde(default)]
    recovery_code: Option<String>,
}

impl std::fmt::Debug for EnrolRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnrolRequest(***)")
    }
}

/// Enrols a TOTP second factor (the first needs the recovery code; replacing one needs a
/// `high` session).
#[utoipa::path(post, path = "/api/v1/totp", request_body = EnrolRequest, security(("bearer" = [])),
    responses((status = 201, body = TotpResponse), (status = 403, body = crate::web::problem::Problem)))]
pub async fn enrol_totp(
    State(gateway): State<Gateway>,
    caller: Caller,
    ApiJson(req): ApiJson<EnrolRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let otpauth = gateway
        .auth()
        .enrol_totp(&caller, req.recovery_code.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(TotpResponse { otpauth })))
}

/// `POST /api/v1/tokens`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The office mailbox the token may read and send for.
    mailbox: String,
}

/// A new credential.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// Bearer token (shown once).
    token: String,
    /// `read` (reads and sends).
    scope: String,
}

/// Creates a read token for an office mailbox from a member's session.
#[utoipa::path(post, path = "/api/v1/tokens", request_body = TokenRequest,
    security(("bearer" = [])),
    responses((status = 201, body = TokenResponse), (status = 404, body = crate::web::problem::Problem)))]
pub async fn create_read_token(
    State(gateway): State<Gateway>,
    caller: Caller,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let mailbox = EmailAddress::parse(&req.mailbox).map_err(ApiError::bad_request)?;
    let token = gateway.auth().create_read_token(&caller, &mailbox).await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenResponse {
            token: token.expose().to_owned(),
            scope: "read".into(),
        }),
    ))
}

/// A token the caller created (never the token itself).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenOut {
    /// Id (for `DELETE /api/v1/tokens/{id}`).
    id: i64,
    /// The mailbox it reads and sends for.
    mailbox: String,
    /// `read`.
    scope: String,
    /// Created, RFC 3339.
    created_at: String,
    /// Revoked, RFC 3339, if it was.
    revoked_at: Option<String>,
}

/// Lists the tokens the caller created from their sessions.
#[utoipa::path(get, path = "/api/v1/tokens", security(("bearer" = [])),
    responses((status = 200, body = Vec<TokenOut>), (status = 403, body = crate::web::problem::Problem)))]
pub async fn list_tokens(
    State(gateway): State<Gateway>,
    caller: Caller,
) -> Result<Json<Vec<TokenOut>>, ApiError> {
    let tokens = gateway.auth().own_tokens(&caller).await?;
    Ok(Json(
        tokens
            .into_iter()
            .map(|t| TokenOut {
                id: t.id,
                mailbox: t.mailbox,
                scope: t.scope,
                created_at: crate::clock::rfc3339_ms(t.created_at),
                revoked_at: t.revoked_at.map(crate::clock::rfc3339_ms),
            })
            .collect(),
    ))
}

/// Revokes a token the caller created; it opens nothing from then on.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", params(("id" = i64, Path, description = "Token id")),
    security(("bearer" = [])),
    responses((status = 204), (status = 404, body = crate::web::problem::Problem)))]
pub async fn revoke_token(
    State(gateway): State<Gateway>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    gateway.auth().revoke_own_token(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A member waiting for the key of a mailbox the caller is active in.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingGrantOut {
    /// The office mailbox.
    mailbox: String,
    /// The waiting user.
    user: String,
    /// Their name.
    name: String,
    /// Their user key's fingerprint: compare it with them (they see it as `own_key`)
    /// before confirming.
    fingerprint: String,
    /// Who asked for the membership.
    requested_by: String,
    /// When, RFC 3339.
    requested_at: String,
}

/// `GET /api/v1/grants`
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantsResponse {
    /// The fingerprint of the caller's own key, for a colleague to compare.
    own_key: String,
    /// `user` once the caller made that key (`POST /api/v1/password`); `operator` while
    /// it is the one an operator's command made, which no colleague can give access to.
    own_key_origin: String,
    /// When that key was made, RFC 3339: a user who did not change their password then
    /// learns that someone else did.
    own_key_made_at: Option<String>,
    /// Access requests the caller may confirm.
    pending: Vec<PendingGrantOut>,
}

/// The caller's own key and the access requests to their mailboxes that wait for a
/// member's confirmation (an operator cannot grant access alone).
#[utoipa::path(get, path = "/api/v1/grants", security(("bearer" = [])),
    responses((status = 200, body = GrantsResponse), (status = 403, body = crate::web::problem::Problem)))]
pub async fn grants(
    State(gateway): State<Gateway>,
    caller: Caller,
) -> Result<Json<GrantsResponse>, ApiError> {
    let grants = gateway.auth().grants(&caller).await?;
    Ok(Json(GrantsResponse {
        own_key: grants.own_fingerprint,
        own_key_origin: if grants.own_key_is_own {
            "user"
        } else {
            "operator"
        }
        .into(),
        own_key_made_at: grants.own_key_made_at.map(crate::clock::rfc3339_ms),
        pending: grants
            .pending
            .into_iter()
            .map(|g| PendingGrantOut {
                mailbox: g.mailbox,
                user: g.user,
                name: g.name,
                fingerprint: g.fingerprint,
                requested_by: g.requested_by,
                requested_at: crate::clock::rfc3339_ms(g.requested_at),
            })
            .collect(),
    }))
}

/// `POST /api/v1/grants`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmGrant {
    /// The office mailbox.
    mailbox: String,
    /// The waiting user.
    user: String,
    /// Their key's fingerprint as compared with them (spaces and colons allowed).
    fingerprint: String,
}

/// Confirms an access request: the mailbox's key is shared with the user's key, if its
/// fingerprint is still the one given (409 `grant-key-changed` if not).
#[utoipa::path(post, path = "/api/v1/grants", request_body = ConfirmGrant,
    security(("bearer" = [])),
    responses((status = 204), (status = 404, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem)))]
pub async fn confirm_grant(
    State(gateway): State<Gateway>,
    caller: Caller,
    ApiJson(req): ApiJson<ConfirmGrant>,
) -> Result<StatusCode, ApiError> {
    let mailbox = EmailAddress::parse(&req.mailbox).map_err(ApiError::bad_request)?;
    let user = EmailAddress::parse(&req.user).map_err(ApiError::bad_request)?;
    gateway
        .auth()
        .confirm_grant(&caller, &mailbox, &user, &req.fingerprint)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/password`
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The current password.
    password: String,
    /// The new one.
    new_password: String,
}

impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordChange(***)")
    }
}

/// The user's new key.
#[derive(Serialize, ToSchema)]
pub struct NewKeyResponse {
    /// The new key's fingerprint (colleagues compare it before giving access to an office).
    own_key: String,
    /// The new recovery code, shown once: keep it offline.
    recovery_code: String,
}

impl std::fmt::Debug for NewKeyResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NewKeyResponse({}, recovery code ***)", self.own_key)
    }
}

/// Changes the caller's password; bote makes them a new key and recovery code that only
/// they know (a key made by an operator's command is one the operator could open). Every
/// session ends, this one too: log in again with the new password.
#[utoipa::path(post, path = "/api/v1/password", request_body = PasswordChange,
    security(("bearer" = [])),
    responses((status = 200, body = NewKeyResponse), (status = 401, body = crate::web::problem::Problem),
        (status = 422, body = crate::web::problem::Problem)))]
pub async fn change_password(
    State(gateway): State<Gateway>,
    caller: Caller,
    ClientIp(client): ClientIp,
    ApiJson(req): ApiJson<PasswordChange>,
) -> Result<Json<NewKeyResponse>, ApiError> {
    let renewed = gateway
        .renew_own_key(&caller, &req.password, &req.new_password, client)
        .await?;
    Ok(Json(NewKeyResponse {
        own_key: renewed.fingerprint,
        recovery_code: renewed.recovery_code.to_string(),
    }))
}
