//! The public log under `/log/`: the latest checkpoint, the keys, and C2SP tlog-tiles
//! (hash tiles and entry bundles). Everything here is public by design: entries are
//! commitments without personal data.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::problem::Problem;
use crate::gateway::Gateway;
use crate::log::LogError;
use crate::log::tiles::TileRequest;

const TEXT: &str = "text/plain; charset=utf-8";

fn with_headers(
    body: impl IntoResponse,
    content_type: &'static str,
    cache: &'static str,
) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    // Verifiers and witnesses fetch from anywhere.
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

fn unavailable(e: &LogError) -> Response {
    tracing::error!(error = %e, "log read failed");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "log-unavailable",
        "Log unavailable",
    )
    .into_response()
}

/// `GET /log/checkpoint`
pub async fn checkpoint(State(gateway): State<Gateway>) -> Response {
    let mut conn = match gateway.store().pool().acquire().await {
        Ok(c) => c,
        Err(e) => return unavailable(&LogError::from(e)),
    };
    match gateway.log().latest_checkpoint(&mut conn).await {
        Ok(Some(cp)) => with_headers(cp.note, TEXT, "no-cache"),
        Ok(None) => Problem::not_found().into_response(),
        Err(e) => unavailable(&e),
    }
}

/// `GET /log/key`: the log verifier key, a blank line, the evidence certificate.
pub async fn key(State(gateway): State<Gateway>) -> Response {
    with_headers(gateway.keys().published_keys(), TEXT, "public, max-age=300")
}

/// `GET /log/tile/…`
pub async fn tile(State(gateway): State<Gateway>, Path(rest): Path<String>) -> Response {
    let Some(request) = TileRequest::parse(&format!("tile/{rest}")) else {
        return Problem::not_found().into_response();
    };
    let mut conn = match gateway.store().pool().acquire().await {
        Ok(c) => c,
        Err(e) => return unavailable(&LogError::from(e)),
    };
    let size = match gateway.log().size(&mut conn).await {
        Ok(s) => s,
        Err(e) => return unavailable(&e),
    };
    match gateway.log().tile(&mut conn, request, size).await {
        Ok(Some(data)) => {
            let cache = if request.is_full() {
                "public, max-age=31536000, immutable"
            } else {
                "public, max-age=1"
            };
            with_headers(data, "application/octet-stream", cache)
        }
        Ok(None) => Problem::not_found().into_response(),
        Err(e) => unavailable(&e),
    }
}
