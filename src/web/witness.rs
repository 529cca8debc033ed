//! `POST /witness/add-checkpoint`: bote as a witness for its peers (C2SP tlog-witness).
//!
//! The one exception to problem+json errors: a 409 for a size mismatch carries the
//! witness's size as `text/x.tlog.size`, because the protocol says so and clients parse it.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::problem::Problem;
use crate::gateway::Gateway;
use crate::witness::service::WitnessError;

/// Largest request: 63 proof lines and a checkpoint with its signatures fit in far less.
pub const MAX_REQUEST: usize = 64 * 1024;

/// `POST /witness/add-checkpoint`
pub async fn add_checkpoint(State(gateway): State<Gateway>, body: Bytes) -> Response {
    let Some(witness) = gateway.witness() else {
        return Problem::not_found().into_response();
    };
    let Ok(body) = std::str::from_utf8(&body) else {
        return problem(StatusCode::BAD_REQUEST, "the request body is not UTF-8");
    };
    match witness.add_checkpoint(body).await {
        Ok(lines) => {
            let mut response = lines.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
        Err(WitnessError::Conflict(size)) => {
            let mut response = (StatusCode::CONFLICT, format!("{size}\n")).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/x.tlog.size"),
            );
            response
        }
        Err(e) => {
            let status = match &e {
                WitnessError::Malformed(_) => StatusCode::BAD_REQUEST,
                WitnessError::UnknownLog(_) => StatusCode::NOT_FOUND,
                WitnessError::NotSigned(_) => StatusCode::FORBIDDEN,
                WitnessError::Fork(_) | WitnessError::Conflict(_) => StatusCode::CONFLICT,
                WitnessError::Inconsistent(_) => StatusCode::UNPROCESSABLE_ENTITY,
                WitnessError::Store(_) | WitnessError::State(_) => {
                    tracing::error!(error = %e, "witness request failed");
                    return Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "witness-unavailable",
                        "Witness unavailable",
                    )
                    .into_response();
                }
            };
            if matches!(e, WitnessError::Fork(_) | WitnessError::Inconsistent(_)) {
                // Possibly proof that a peer's log misbehaves: worth an operator's look.
                tracing::warn!(error = %e, "refused to cosign a checkpoint");
            }
            problem(status, &e.to_string())
        }
    }
}

fn problem(status: StatusCode, detail: &str) -> Response {
    Problem::new(status, "witness-refused", "Checkpoint not cosigned")
        .with_detail(detail)
        .into_response()
}
