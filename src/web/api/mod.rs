//! The JSON API under `/api/v1` (spec §6): sessions, tokens, submission, folders, reading,
//! evidence. Its OpenAPI 3 document is generated from these handlers' annotations and
//! served at `/api/v1/openapi.json`.
//!
//! Architecture invariant: every error leaves through [`ApiError`], mapped to a problem
//! type exactly once here; callers never see internal causes (they are logged).

mod evidence;
mod messages;
mod session;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use utoipa::OpenApi;

use super::AppState;
use super::problem::Problem;
use crate::auth::{AuthError, Caller};
use crate::pipeline::{BundleError, OpenError, Refusal, SubmitError};

/// The API routes (mounted under the HTTPS router).
pub fn routes(max_body: usize) -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/session",
            post(session::login).delete(session::logout),
        )
        .route("/api/v1/session/totp", post(session::second_factor))
        .route("/api/v1/totp", post(session::enrol_totp))
        .route("/api/v1/tokens", post(session::create_read_token))
        .route("/api/v1/mailboxes", get(messages::mailboxes))
        .route(
            "/api/v1/mailboxes/{address}/{folder}",
            get(messages::folder),
        )
        .route("/api/v1/messages", post(messages::submit))
        .route("/api/v1/messages/{id}", get(messages::read))
        .route(
            "/api/v1/messages/{id}/attachments/{n}",
            get(messages::attachment),
        )
        .route("/api/v1/messages/{id}/timeline", get(messages::timeline))
        .route("/api/v1/messages/{id}/receipts", get(messages::receipts))
        .route("/api/v1/messages/{id}/bundle", get(messages::bundle))
        .route("/api/v1/evidence", get(evidence::search))
        .route("/api/v1/evidence/bundle", get(evidence::export))
        .route("/api/v1/openapi.json", get(openapi))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "bote API", description = "Secure, authenticated messaging gateway"),
    paths(
        session::login,
        session::logout,
        session::second_factor,
        session::enrol_totp,
        session::create_read_token,
        messages::mailboxes,
        messages::folder,
        messages::submit,
        messages::read,
        messages::attachment,
        messages::timeline,
        messages::receipts,
        messages::bundle,
        evidence::search,
        evidence::export,
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of this API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /api/v1/openapi.json`
async fn openapi() -> Response {
    Json(openapi_document()).into_response()
}

/// Every way an API request can fail, each with its own problem type.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Authentication.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Submission.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// Reading.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Bundles.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// Malformed request (JSON, parameters).
    #[error("{1}")]
    BadRequest(StatusCode, String),
    /// The caller's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// Internal.
    #[error("{0}")]
    Internal(String),
}

fn internal(cause: &dyn std::fmt::Display) -> Problem {
    tracing::error!(error = %cause, "API request failed");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
    )
    .with_detail("the request failed; nothing was changed. The operator's log has the cause")
}

fn auth_problem(e: &AuthError) -> Problem {
    let (status, kind, title) = match e {
        AuthError::BadCredentials => (StatusCode::UNAUTHORIZED, "bad-credentials", "Login failed"),
        AuthError::LockedOut => (
            StatusCode::TOO_MANY_REQUESTS,
            "locked-out",
            "Too many failed attempts",
        ),
        AuthError::Unauthenticated => (
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Authentication required",
        ),
        AuthError::NoSecondFactor => (
            StatusCode::CONFLICT,
            "no-second-factor",
            "No second factor enrolled",
        ),
        AuthError::BadCode => (StatusCode::UNAUTHORIZED, "bad-code", "Wrong one-time code"),
        AuthError::NeedsHigh(_) => (
            StatusCode::FORBIDDEN,
            "needs-high",
            "Authentication level high required",
        ),
        AuthError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
        AuthError::NotFound => return Problem::not_found(),
        AuthError::Internal(_) => return internal(e),
    };
    Problem::new(status, kind, title).with_detail(e.to_string())
}

fn submit_problem(e: &SubmitError) -> Problem {
    match e {
        SubmitError::Refused {
            refusal,
            detail,
            gateway_id,
        } => {
            let (status, kind, title) = match refusal {
                Refusal::TooLarge => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "message-too-large",
                    "Message too large",
                ),
                Refusal::TooManyRecipients => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "too-many-recipients",
                    "Too many recipients",
                ),
                Refusal::UnknownRecipient => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown-recipient",
                    "Unknown recipient",
                ),
                Refusal::OptionNotAllowed => (
                    StatusCode::FORBIDDEN,
                    "option-not-allowed",
                    "Option not allowed",
                ),
                Refusal::QuotaExceeded => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "quota-exceeded",
                    "Daily quota exceeded",
                ),
                Refusal::ForgedFrom => (
                    StatusCode::FORBIDDEN,
                    "sender-mismatch",
                    "From is not the sender",
                ),
            };
            Problem::new(status, kind, title)
                .with_detail(detail.clone())
                .with("gateway_id", gateway_id.clone())
        }
        SubmitError::Invalid(detail) => Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-message",
            "Invalid message",
        )
        .with_detail(detail.clone()),
        SubmitError::Internal(_) => internal(e),
    }
}

fn open_problem(e: &OpenError) -> Problem {
    let (status, kind, title) = match e {
        OpenError::NotFound => return Problem::not_found(),
        OpenError::SendOnly => (
            StatusCode::FORBIDDEN,
            "send-only-token",
            "This token cannot read",
        ),
        OpenError::PersonalNeedsHigh => (
            StatusCode::FORBIDDEN,
            "personal-needs-high",
            "Personal message",
        ),
        OpenError::Pending(_) => (StatusCode::FORBIDDEN, "access-pending", "Access pending"),
        OpenError::Internal(_) => return internal(e),
    };
    Problem::new(status, kind, title).with_detail(e.to_string())
}

impl ApiError {
    fn problem(&self) -> Problem {
        match self {
            Self::Auth(e) => auth_problem(e),
            Self::Submit(e) => submit_problem(e),
            Self::Open(e) => open_problem(e),
            Self::Bundle(BundleError::Open(e)) => open_problem(e),
            Self::Bundle(BundleError::Export(e)) => {
                use crate::evidence::bundle::ExportError;
                use crate::evidence::query::QueryError;
                match e {
                    ExportError::Query(QueryError::AmbiguousRecipient { .. })
                    | ExportError::Query(QueryError::UnknownRecipient { .. }) => Problem::new(
                        StatusCode::BAD_REQUEST,
                        "recipient-required",
                        "Choose a recipient",
                    )
                    .with_detail(e.to_string()),
                    ExportError::Query(QueryError::UnknownMessage(_)) => Problem::not_found(),
                    _ => internal(e),
                }
            }
            Self::BadRequest(status, detail) => {
                let kind = if *status == StatusCode::PAYLOAD_TOO_LARGE {
                    "request-too-large"
                } else {
                    "bad-request"
                };
                Problem::new(*status, kind, "Bad request").with_detail(detail.clone())
            }
            Self::Forbidden(detail) => {
                tracing::info!(detail = %detail, "API access denied");
                Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
                    .with_detail(detail.clone())
            }
            Self::Internal(_) => internal(self),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let unauthenticated = problem.status == 401;
        let mut response = problem.into_response();
        if unauthenticated {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// JSON bodies whose rejections (syntax, size, shape) are problem responses too.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    ApiError::BadRequest(rejection.status(), rejection.body_text())
}

/// The bearer credential of a request, resolved.
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or(AuthError::Unauthenticated)?;
        Ok(state.auth.resolve(token).await?)
    }
}

/// The token of an `Authorization: Bearer …` header.
fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}
