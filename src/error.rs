//! One classification of failures for every front door.
//!
//! Each module keeps its own `thiserror` enum with typed causes. At the boundary, each of
//! those enums says what kind of failure it is ([`Classify`]), and the front doors render
//! the resulting [`Failure`]: the JSON API as an RFC 9457 problem, SMTP as a reply with an
//! enhanced status code, the web inbox as a page with a sentence. So a quota refusal is a
//! 429 with `Retry-After`, a `450 4.7.1`, and a friendly page, decided in one place.
//!
//! Architecture invariant: a [`Failure`]'s `detail` is safe to show to the caller; the
//! cause of an internal failure is logged by the renderer ([`Failure::log_cause`]) and never
//! shown.

use std::fmt;

/// What kind of failure, independent of the wire that reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed input (syntax, encoding, shape): the caller must change the request.
    Invalid,
    /// Well-formed, but refused for what it asks (unknown recipient, too many recipients).
    Unprocessable,
    /// No or unknown credentials.
    Unauthenticated,
    /// Authenticated, but not allowed (role, token scope, level, option).
    Forbidden,
    /// Does not exist, or is not the caller's (the two look the same on purpose).
    NotFound,
    /// Conflicts with the current state (exists already, done already).
    Conflict,
    /// Too large.
    TooLarge,
    /// Too many attempts or a quota used up; may carry a retry time.
    RateLimited,
    /// A temporary failure of the gateway (database busy, shutting down): retry later.
    Unavailable,
    /// A failure of the gateway that retrying will not fix; the cause is in the log.
    Internal,
}

/// A failure as front doors render it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The kind.
    pub kind: ErrorKind,
    /// Stable machine-readable name (`quota-exceeded`): problem type suffix, HTML message
    /// key, SMTP reply selector. Never changes once published.
    pub code: &'static str,
    /// Short human summary of the code.
    pub title: &'static str,
    /// What happened in this instance, safe to show to the caller.
    pub detail: Option<String>,
    /// The gateway message id under which refusal evidence was recorded, if any.
    pub evidence: Option<String>,
    /// Seconds after which a retry may succeed.
    pub retry_after: Option<u64>,
    /// The cause, for the operator's log only (internal and temporary failures).
    cause: Option<String>,
}

impl Failure {
    /// A failure of `kind` named `code`.
    pub fn new(kind: ErrorKind, code: &'static str, title: &'static str) -> Self {
        Self {
            kind,
            code,
            title,
            detail: None,
            evidence: None,
            retry_after: None,
            cause: None,
        }
    }

    /// With a detail safe to show.
    pub fn detail(mut self, detail: impl fmt::Display) -> Self {
        self.detail = Some(detail.to_string());
        self
    }

    /// With the id of the refusal's evidence.
    pub fn evidence(mut self, gateway_id: impl Into<String>) -> Self {
        self.evidence = Some(gateway_id.into());
        self
    }

    /// With a retry time.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The gateway failed: `cause` goes to the log, the caller learns nothing of it.
    pub fn internal(cause: &dyn fmt::Display) -> Self {
        Self {
            cause: Some(cause.to_string()),
            ..Self::new(ErrorKind::Internal, "internal", "Internal error")
                .detail("the request failed; nothing was changed. The operator's log has the cause")
        }
    }

    /// A temporary failure: `cause` goes to the log.
    pub fn unavailable(cause: &dyn fmt::Display) -> Self {
        Self {
            cause: Some(cause.to_string()),
            ..Self::new(
                ErrorKind::Unavailable,
                "unavailable",
                "Temporarily unavailable",
            )
            .detail("the gateway cannot answer right now; nothing was changed. Try again later")
        }
    }

    /// The cause of an internal or temporary failure, if any.
    pub fn cause(&self) -> Option<&str> {
        self.cause.as_deref()
    }

    /// Logs the cause, once, where a front door renders the failure.
    pub fn log_cause(&self, front_door: &'static str) {
        if let Some(cause) = &self.cause {
            tracing::error!(front_door, code = self.code, error = %cause, "request failed");
        }
    }

    /// The not-found failure every lookup of something not the caller's gives.
    pub fn not_found() -> Self {
        Self::new(ErrorKind::NotFound, "not-found", "Not found")
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.detail {
            Some(d) => write!(f, "{}: {d}", self.title),
            None => f.write_str(self.title),
        }
    }
}

/// A domain error that knows what kind of failure it is.
pub trait Classify {
    /// The failure to report.
    fn failure(&self) -> Failure;
}

impl Classify for Failure {
    fn failure(&self) -> Failure {
        self.clone()
    }
}

impl Classify for crate::store::StoreError {
    fn failure(&self) -> Failure {
        use crate::store::StoreError;
        match self {
            Self::Conflict(what) => {
                Failure::new(ErrorKind::Conflict, "conflict", "Conflict").detail(what)
            }
            // A pool that cannot hand out a connection, or a database that went away: the
            // next attempt may well succeed.
            StoreError::Query(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_))
            | StoreError::Connect { .. } => Failure::unavailable(self),
            StoreError::Sqlite(e) if crate::store::is_transient(e) => Failure::unavailable(self),
            _ => Failure::internal(self),
        }
    }
}
