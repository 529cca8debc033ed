//! The HTTPS surface: one axum [`Router`] for health, the log, WKD, the JSON API and the
//! web inbox.
//!
//! Architecture invariant: every response, errors and 404s included, leaves through
//! [`security_headers`], and every error body is an RFC 9457 [`problem::Problem`].

pub mod api;
pub mod caller;
pub mod directory;
pub mod inbox;
pub mod log;
pub mod problem;
pub mod witness;

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::gateway::Gateway;
use problem::Problem;

/// Header carrying the request id, set on the request and echoed on the response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The complete HTTPS application.
pub fn router(gateway: Gateway) -> Router {
    let max_body = usize::try_from(gateway.config().limits.http_max_body).unwrap_or(usize::MAX);
    let max_submission =
        usize::try_from(gateway.config().limits.message_size_submission).unwrap_or(usize::MAX);
    Router::new()
        .merge(api::routes(max_body))
        .merge(inbox::routes(max_submission))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/log/checkpoint", get(log::checkpoint))
        .route("/log/key", get(log::key))
        .route("/log/tile/{*rest}", get(log::tile))
        .route("/log/proof/inclusion", get(log::inclusion))
        .route("/log/proof/consistency", get(log::consistency))
        .route(
            "/witness/add-checkpoint",
            axum::routing::post(witness::add_checkpoint)
                .layer(axum::extract::DefaultBodyLimit::max(witness::MAX_REQUEST)),
        )
        .route("/api/v1/directory", get(directory::lookup))
        .route(
            "/api/v1/mailboxes/{address}/directory",
            axum::routing::put(directory::publish),
        )
        .route("/.well-known/openpgpkey/policy", get(directory::wkd_policy))
        .route("/.well-known/openpgpkey/hu/{hash}", get(directory::wkd_direct))
        .route("/.well-known/openpgpkey/{domain}/policy", get(directory::wkd_policy))
        .route("/.well-known/openpgpkey/{domain}/hu/{hash}", get(directory::wkd_advanced))
        .route_layer(middleware::from_fn(record_metrics))
        .fallback(|| async { Problem::not_found() })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            )
            .with_detail("this path does not take that method; see /api/v1/openapi.json")
        })
        .with_state(gateway)
        .layer(middleware::from_fn(security_headers))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            // The path only: query strings may carry tokens or addresses.
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Liveness: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the database answers and its schema is the one this binary expects.
async fn readyz(State(gateway): State<Gateway>) -> Response {
    let store = gateway.store();
    if let Err(e) = store.ping().await {
        tracing::warn!(error = %e, "readiness: database unreachable");
        return Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Not ready")
            .with_detail("database unreachable")
            .into_response();
    }
    match store.migration_status().await {
        Ok(status) if status.is_current() => Json(json!({
            "status": "ready",
            "database": store.backend().to_string(),
            "migrations": status.known,
        }))
        .into_response(),
        Ok(status) => Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Not ready")
            .with_detail(format!(
                "database schema not current: {} pending, {} unknown",
                status.pending,
                status.unknown.len()
            ))
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: cannot read migrations");
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Not ready")
                .with_detail("cannot read schema version")
                .into_response()
        }
    }
}

/// The response headers of spec §5, on every response.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
];

/// Headers a handler may set stricter for one response (the sandboxed frame of an HTML
/// mail has its own CSP, `default-src 'none'`, and may be framed by the inbox itself).
const HANDLER_MAY_SET: &[&str] = &["content-security-policy", "x-frame-options"];

async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        if HANDLER_MAY_SET.contains(name) && headers.contains_key(*name) {
            continue;
        }
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn record_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    // The route template, not the raw path: bounded label cardinality, no addresses.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("bote_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("bote_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
