//! The `legal` role's evidence search and bundle export (spec §3.8), over the evidence
//! query layer. Legal staff see metadata and evidence, never bodies or subjects (the
//! records hold neither).

use axum::extract::{OriginalUri, State};
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;

use super::messages::{EvidenceOut, download};
use super::{ApiError, ApiQuery, paged};
use crate::address::EmailAddress;
use crate::auth::Caller;
use crate::clock::{INSTANT_FORMS, parse_instant};
use crate::evidence::query::Search;
use crate::gateway::Gateway;

fn bad(detail: String) -> ApiError {
    ApiError::bad_request(detail)
}

fn address(field: &str, value: Option<&str>) -> Result<Option<EmailAddress>, ApiError> {
    value
        .map(EmailAddress::parse)
        .transpose()
        .map_err(|e| bad(format!("{field}: {e}")))
}

fn time(field: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| parse_instant(v).ok_or_else(|| bad(format!("{field}: expected {INSTANT_FORMS}"))))
        .transpose()
}

/// Search parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Gateway message id or RFC 5322 Message-ID.
    message: Option<String>,
    /// Sender address.
    sender: Option<String>,
    /// Recipient address.
    recipient: Option<String>,
    /// Event time at or after (RFC 3339, or a date for midnight UTC).
    from: Option<String>,
    /// Event time before (RFC 3339, or a date for midnight UTC).
    until: Option<String>,
    /// Records after the one at this log index (from the previous page's `Link`).
    after: Option<u64>,
    /// Most records (default 100, at most 1000).
    limit: Option<i64>,
}

/// Searches evidence records (legal role), oldest first.
#[utoipa::path(get, path = "/api/v1/evidence", params(SearchQuery), security(("bearer" = [])),
    responses((status = 200, body = Vec<EvidenceOut>), (status = 403, body = crate::web::problem::Problem)))]
pub async fn search(
    State(gateway): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> Result<Response, ApiError> {
    let search = Search {
        message: q.message,
        sender: address("sender", q.sender.as_deref())?,
        recipient: address("recipient", q.recipient.as_deref())?,
        from: time("from", q.from.as_deref())?,
        until: time("until", q.until.as_deref())?,
        after: q.after,
        limit: q.limit,
        // The gateway sets the caller's scope.
        scope_user: None,
    };
    let found = gateway.search_evidence(&caller, &search).await?;
    Ok(paged(found, &uri, "after", |e| {
        EvidenceOut::from_stored(&e)
    }))
}

/// Export parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
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
    State(gateway): State<Gateway>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let recipient = address("recipient", q.recipient.as_deref())?;
    let exported = gateway
        .evidence_bundle(&caller, &q.message, recipient.as_ref())
        .await?;
    Ok(download(exported.bytes, "application/x-tar", "bundle.tar"))
}
