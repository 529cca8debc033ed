//! The public log under `/log/`: the latest checkpoint, the keys, and C2SP tlog-tiles
//! (hash tiles and entry bundles). Everything here is public by design: entries are
//! commitments without personal data.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::api::ApiQuery;
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

/// `?index=&size=`
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    index: u64,
    size: u64,
}

/// `?old=&new=`
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    old: u64,
    new: u64,
}

fn b64(hashes: &[tlog_tiles::Hash]) -> Vec<String> {
    use base64::Engine;
    hashes
        .iter()
        .map(|h| base64::engine::general_purpose::STANDARD.encode(h.0))
        .collect()
}

fn proof_answer(result: Result<serde_json::Value, LogError>) -> Response {
    match result {
        Ok(body) => with_headers(axum::Json(body), "application/json", "public, max-age=60"),
        Err(LogError::OutOfRange(why)) => {
            Problem::new(StatusCode::BAD_REQUEST, "out-of-range", "Not in the log")
                .with_detail(why)
                .into_response()
        }
        Err(e) => unavailable(&e),
    }
}

/// `GET /log/proof/inclusion?index=N&size=M`: the RFC 6962 audit path of entry N in the
/// tree of M entries (base64 hashes, leaf to root). Everything here is also computable from
/// the tiles.
pub async fn inclusion(
    State(gateway): State<Gateway>,
    ApiQuery(q): ApiQuery<InclusionQuery>,
) -> Response {
    let result = async {
        let mut conn = gateway
            .store()
            .pool()
            .acquire()
            .await
            .map_err(LogError::from)?;
        let proof = gateway
            .log()
            .inclusion_proof(&mut conn, q.index, q.size)
            .await?;
        Ok(serde_json::json!({ "index": q.index, "tree_size": q.size, "inclusion": b64(&proof) }))
    }
    .await;
    proof_answer(result)
}

/// `GET /log/proof/consistency?old=N&new=M`: the RFC 6962 consistency proof from the tree of
/// N entries to the one of M (base64 hashes).
pub async fn consistency(
    State(gateway): State<Gateway>,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> Response {
    let result = async {
        let mut conn = gateway
            .store()
            .pool()
            .acquire()
            .await
            .map_err(LogError::from)?;
        let proof = gateway
            .log()
            .consistency_proof(&mut conn, q.old, q.new)
            .await?;
        Ok(serde_json::json!({ "old": q.old, "new": q.new, "consistency": b64(&proof) }))
    }
    .await;
    proof_answer(result)
}
