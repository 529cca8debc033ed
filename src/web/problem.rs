//! RFC 9457 problem details: the one error shape of every HTTP response bote sends.
//!
//! The `type` is a stable URN per kind of problem, so clients branch on it, never on the
//! human-readable `title`/`detail`. Internal causes are logged, never put in `detail`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{ErrorKind, Failure};

/// Content type of problem responses.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// A problem response.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable identifier, `urn:bote:problem:<kind>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What happened in this instance, safe to show to the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Extension members (RFC 9457 §3.2), e.g. the `gateway_id` of a refused submission.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    /// A problem of kind `urn:bote:problem:{kind}`.
    pub fn new(status: StatusCode, kind: &str, title: &str) -> Self {
        Self {
            kind: format!("urn:bote:problem:{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: None,
            extensions: serde_json::Map::new(),
        }
    }

    /// Adds the instance detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    /// 404 for any path or object the caller may not know about.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found")
    }

    /// The problem of a classified failure: its code becomes the type, its kind the status.
    /// Logs the cause of internal and temporary failures (never shown).
    pub fn from_failure(failure: &Failure) -> Self {
        failure.log_cause("https");
        let mut problem = Self::new(status(failure.kind), failure.code, failure.title);
        problem.detail = failure.detail.clone();
        if let Some(id) = &failure.evidence {
            problem = problem.with("gateway_id", id.clone());
        }
        if let Some(seconds) = failure.retry_after {
            problem = problem.with("retry_after", seconds);
        }
        problem
    }
}

/// The HTTP status of each kind of failure.
pub fn status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self
            .extensions
            .get("retry_after")
            .and_then(serde_json::Value::as_u64);
        let unauthenticated = status == StatusCode::UNAUTHORIZED;
        let mut response = (status, Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if unauthenticated {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
