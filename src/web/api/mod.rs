//! The JSON API under `/api/v1` (spec §6): sessions, tokens, submission, folders, reading,
//! evidence. Its OpenAPI 3 document is generated from these handlers' annotations and
//! served at `/api/v1/openapi.json`.
//!
//! Architecture invariant: every error leaves through [`ApiError`], mapped to a problem
//! type exactly once here; callers never see internal causes (they are logged).

mod evidence;
pub(crate) mod messages;
mod session;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use utoipa::OpenApi;

use super::problem::Problem;
use crate::error::{Classify, Failure};
use crate::gateway::{Gateway, Paged};

/// Largest body of the routes that take credentials (a login, a code, a token's name):
/// they answer anyone, before any authentication, so they must not read megabytes.
const CREDENTIALS_BODY: usize = 16 * 1024;

/// The API routes (mounted under the HTTPS router).
pub fn routes(max_body: usize) -> Router<Gateway> {
    let small = || axum::extract::DefaultBodyLimit::max(CREDENTIALS_BODY);
    Router::new()
        .route(
            "/api/v1/session",
            post(session::login).delete(session::logout).layer(small()),
        )
        .route(
            "/api/v1/session/totp",
            post(session::second_factor).layer(small()),
        )
        .route("/api/v1/totp", post(session::enrol_totp).layer(small()))
        .route(
            "/api/v1/tokens",
            post(session::create_read_token)
                .get(session::list_tokens)
                .layer(small()),
        )
        .route("/api/v1/tokens/{id}", delete(session::revoke_token))
        .route(
            "/api/v1/password",
            post(session::change_password).layer(small()),
        )
        .route(
            "/api/v1/grants",
            get(session::grants)
                .post(session::confirm_grant)
                .layer(small()),
        )
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
        session::list_tokens,
        session::revoke_token,
        session::grants,
        session::change_password,
        session::confirm_grant,
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
        crate::web::directory::lookup,
        crate::web::directory::publish,
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth, &DescribeResponses)
)]
struct ApiDoc;

/// OpenAPI requires a description on every response: the status's reason phrase, or
/// "Problem" (RFC 9457) for errors, where the handler names none.
struct DescribeResponses;

impl utoipa::Modify for DescribeResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for (status, response) in operation.responses.responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    if response.description.is_empty() {
                        let code = status.parse::<u16>().ok();
                        response.description = match code.and_then(|c| StatusCode::from_u16(c).ok())
                        {
                            Some(s) if s.is_success() => {
                                s.canonical_reason().unwrap_or("Success").to_owned()
                            }
                            Some(s) => format!(
                                "{}: an RFC 9457 problem",
                                s.canonical_reason().unwrap_or("Error")
                            ),
                            None => "Response".to_owned(),
                        };
                    }
                }
            }
        }
    }
}

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

/// An API failure: a classified domain failure, or an HTTP-level one (malformed request
/// bodies and parameters) that only this front door has.
#[derive(Debug)]
pub enum ApiError {
    /// A failure of the gateway core, classified once ([`crate::error`]).
    Failure(Box<Failure>),
    /// A problem of the HTTP request itself.
    Http(Box<Problem>),
}

impl<E: Classify> From<E> for ApiError {
    fn from(e: E) -> Self {
        Self::Failure(Box::new(e.failure()))
    }
}

impl ApiError {
    /// A malformed request (400, `bad-request`).
    pub fn bad_request(detail: impl std::fmt::Display) -> Self {
        Self::Http(Box::new(
            Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request")
                .with_detail(detail.to_string()),
        ))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Failure(f) => Problem::from_failure(&f).into_response(),
            Self::Http(p) => (*p).into_response(),
        }
    }
}

/// A page of a listing as a JSON array; when there may be more, a `Link: <…>; rel="next"`
/// header (RFC 8288) names the same request with `cursor` set to where the next page
/// starts.
pub fn paged<T, U: serde::Serialize>(
    page: Paged<T>,
    uri: &axum::http::Uri,
    cursor: &str,
    render: impl Fn(T) -> U,
) -> Response {
    let next = page.next.map(|at| next_link(uri, cursor, &at));
    let items: Vec<U> = page.items.into_iter().map(render).collect();
    let mut response = Json(items).into_response();
    if let Some(link) = next
        && let Ok(value) = axum::http::HeaderValue::from_str(&link)
    {
        response
            .headers_mut()
            .insert(axum::http::header::LINK, value);
    }
    response
}

/// `<path?…&cursor=at>; rel="next"`, the other parameters kept as they were.
fn next_link(uri: &axum::http::Uri, cursor: &str, at: &str) -> String {
    let kept = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty() && p.split('=').next() != Some(cursor));
    let query: Vec<String> = kept
        .map(str::to_owned)
        .chain(std::iter::once(format!("{cursor}={at}")))
        .collect();
    format!("<{}?{}>; rel=\"next\"", uri.path(), query.join("&"))
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
    let (kind, title) = match rejection {
        JsonRejection::JsonDataError(_) => ("invalid-body", "Request body has the wrong shape"),
        JsonRejection::JsonSyntaxError(_) => ("invalid-json", "Request body is not JSON"),
        JsonRejection::MissingJsonContentType(_) => (
            "unsupported-media-type",
            "Request body must be application/json",
        ),
        _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ("request-too-large", "Request body too large")
        }
        _ => ("bad-request", "Bad request"),
    };
    http_problem(rejection.status(), kind, title, rejection.body_text())
}

fn http_problem(status: StatusCode, kind: &str, title: &str, detail: String) -> ApiError {
    ApiError::Http(Box::new(
        Problem::new(status, kind, title).with_detail(detail),
    ))
}

/// Query strings whose rejections are problem responses (400 `invalid-query`).
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Self(v)),
            Err(r) => Err(http_problem(
                StatusCode::BAD_REQUEST,
                "invalid-query",
                "Invalid query parameters",
                r.body_text(),
            )),
        }
    }
}

/// Path parameters whose rejections are problem responses (404 `not-found` for a segment
/// of the wrong type: no such resource can exist).
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Self(v)),
            Err(r) => Err(http_problem(
                StatusCode::NOT_FOUND,
                "not-found",
                "Not found",
                r.body_text(),
            )),
        }
    }
}
