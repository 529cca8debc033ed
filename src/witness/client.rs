//! Submitting this gateway's checkpoints to its witnesses (the client side of C2SP
//! tlog-witness), over HTTPS with the peer CA.

use super::AddCheckpoint;
use crate::outbound::HttpClient;

/// Content type of a 409 answer: the witness's size, in decimal.
const SIZE_TYPE: &str = "text/x.tlog.size";

/// Why a witness did not cosign.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// The witness holds another size for this log (409 with a size): resubmit from it.
    #[error("the witness holds a checkpoint of size {0}")]
    Conflict(u64),
    /// The witness refused (any other status).
    #[error("the witness refused with status {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its explanation, shortened.
        body: String,
    },
    /// The witness could not be reached or answered garbage.
    #[error("cannot reach the witness: {0}")]
    Unreachable(String),
}

/// Submits one checkpoint to the witness at `prefix` (its submission URL prefix); on
/// success the cosignature lines it returned.
pub async fn add_checkpoint(
    http: &HttpClient,
    prefix: &str,
    request: &AddCheckpoint,
) -> Result<String, SubmitError> {
    let url = format!("{}/add-checkpoint", prefix.trim_end_matches('/'));
    let (status, kind, body) = http
        .post(&url, "text/plain", request.to_body().into_bytes())
        .await
        .map_err(SubmitError::Unreachable)?;
    let text = String::from_utf8_lossy(&body).into_owned();
    match status {
        200 => Ok(text),
        409 if kind.starts_with(SIZE_TYPE) => text
            .trim_end_matches('\n')
            .parse()
            .map(SubmitError::Conflict)
            .map_err(|_| SubmitError::Unreachable(format!("409 with a bad size `{text}`")))
            .and_then(Err),
        _ => Err(SubmitError::Refused {
            status,
            body: text.chars().take(200).collect(),
        }),
    }
}
