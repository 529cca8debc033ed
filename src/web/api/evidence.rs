//! The `legal` role's evidence search and bundle export (spec §3.8), over the evidence
//! query layer. Legal staff see metadata and evidence, never bodies or subjects (the
//! records hold neither).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;

use super::ApiError;
use super::messages::{EvidenceOut, download};
use crate::accounts::{Actor, Role, User};
use crate::address::EmailAddress;
use crate::auth::Caller;
use crate::clock::{now_ms, parse_rfc3339_ms};
use crate::evidence::bundle;
use crate::evidence::query::{self, Search};
use crate::pipeline::BundleError;
use crate::store::audit;
use crate::web::AppState;

fn legal(caller: &Caller) -> Result<&User, ApiError> {
    match caller.user() {
        Some(user) if user.role == Role::Legal => Ok(user),
        _ => Err(ApiError::Forbidden(
            "evidence search is for users with the legal role".into(),
        )),
    }
}

async fn connection(state: &AppState) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, ApiError> {
    state
        .store
        .pool()
        .acquire()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))
}

fn bad(detail: String) -> ApiError {
    ApiError::BadRequest(StatusCode::BAD_REQUEST, detail)
}

fn address(field: &str, value: Option<&str>) -> Result<Option<EmailAddress>, ApiError> {
    value
        .map(EmailAddress::parse)
        .transpose()
        .map_err(|e| bad(format!("{field}: {e}")))
}

fn time(field: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            parse_rfc3339_ms(v).ok_or_else(|| {
                bad(format!("{field}: expected RFC 3339 UTC with milliseconds, e.g. 2026-11-24T10:00:00.000Z"))
            })
        })
        .transpose()
}

/// Search parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Gateway message id or RFC 5322 Message-ID.
    message: Option<String>,
    /// Sender address.
    sender: Option<String>,
    /// Recipient address.
    recipient: Option<String>,
    /// Event time at or after (RFC 3339).
    from: Option<String>,
    /// Event time before (RFC 3339).
    until: Option<String>,
    /// Most records (default 1000).
    limit: Option<i64>,
}

/// Searches evidence records (legal role), oldest first.
#[utoipa::path(get, path = "/api/v1/evidence", params(SearchQuery), security(("bearer" = [])),
    responses((status = 200, body = Vec<EvidenceOut>), (status = 403, body = crate::web::problem::Problem)))]
pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Vec<EvidenceOut>>, ApiError> {
    legal(&caller)?;
    let search = Search {
        message: q.message,
        sender: address("sender", q.sender.as_deref())?,
        recipient: address("recipient", q.recipient.as_deref())?,
        from: time("from", q.from.as_deref())?,
        until: time("until", q.until.as_deref())?,
        limit: Some(
            q.limit
                .unwrap_or(query::DEFAULT_LIMIT)
                .clamp(1, query::DEFAULT_LIMIT),
        ),
    };
    let mut conn = connection(&state).await?;
    let found = query::search(&mut conn, &search)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(found.iter().map(EvidenceOut::from_stored).collect()))
}

/// Export parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Gateway message id or RFC 5322 Message-ID.
    message: String,
    /// Whose chain (required when the message has several recipients).
    recipient: Option<String>,
}

/// Exports a proof bundle (legal role); every export is recorded in the audit trail.
#[utoipa::path(get, path = "/api/v1/evidence/bundle", params(ExportQuery), security(("bearer" = [])),
    responses((status = 200, content_type = "application/x-tar", body = Vec<u8>),
              (status = 403, body = crate::web::problem::Problem),
              (status = 404, body = crate::web::problem::Problem)))]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let user = legal(&caller)?;
    let recipient = address("recipient", q.recipient.as_deref())?;
    let mut conn = connection(&state).await?;
    let tar = bundle::export(
        &mut conn,
        &state.log,
        &state.keys,
        &q.message,
        recipient.as_ref(),
        None,
    )
    .await
    .map_err(|e| ApiError::Bundle(BundleError::Export(e)))?;
    let details = serde_json::json!({ "recipient": q.recipient, "bytes": tar.len() });
    audit::record(
        &mut conn,
        &Actor::User(user.email.clone()),
        "evidence.export",
        &q.message,
        details,
        now_ms(),
    )
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(download(tar, "application/x-tar", "bundle.tar"))
}
