//! The evidence query layer for legal staff and operators: search, one message's timeline,
//! and the chains that proof bundles are made of. The CLI uses it now; the `legal` role's
//! HTTP API will call the same functions.

use sqlx::AnyConnection;

use super::record::StoredEvidence;
use crate::address::EmailAddress;
use crate::error::{Classify, ErrorKind, Failure};
use crate::store::StoreError;
use crate::store::evidence::{self as repo, Filter};

/// Most rows one search returns unless asked otherwise.
pub const DEFAULT_LIMIT: i64 = 1000;

/// A search request in domain terms.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// Gateway message id or RFC 5322 Message-ID.
    pub message: Option<String>,
    /// Sender.
    pub sender: Option<EmailAddress>,
    /// Recipient.
    pub recipient: Option<EmailAddress>,
    /// Event time at or after (unix ms).
    pub from: Option<i64>,
    /// Event time before (unix ms).
    pub until: Option<i64>,
    /// Only records after the one at this log index (the cursor of the previous page).
    pub after: Option<u64>,
    /// Most rows (default [`DEFAULT_LIMIT`]).
    pub limit: Option<i64>,
    /// Only evidence about the offices of this legal user's scope (set by the gateway from
    /// the caller, never by a front door).
    pub scope_user: Option<i64>,
}

/// Why a query cannot be answered as asked.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No evidence for that message.
    #[error("no evidence for message {0}")]
    UnknownMessage(String),
    /// No evidence for that recipient of the message.
    #[error("message {message} has no evidence for recipient {recipient}")]
    UnknownRecipient {
        /// The message.
        message: String,
        /// The recipient asked for.
        recipient: EmailAddress,
    },
    /// Several recipients and none chosen.
    #[error(
        "message {message} has {count} recipients ({list}): name the one whose evidence you want"
    )]
    AmbiguousRecipient {
        /// The message.
        message: String,
        /// How many.
        count: usize,
        /// Their addresses.
        list: String,
    },
    /// A Message-ID that several messages carry (it is unique per sender only).
    #[error("{message} names {count} messages: give the gateway id of the one you want")]
    AmbiguousMessage {
        /// The Message-ID.
        message: String,
        /// How many messages carry it.
        count: usize,
    },
}

impl Classify for QueryError {
    fn failure(&self) -> Failure {
        match self {
            Self::Store(e) => e.failure(),
            Self::UnknownMessage(_) => Failure::not_found(),
            Self::UnknownRecipient { .. } => {
                Failure::new(ErrorKind::NotFound, "not-a-recipient", "Not a recipient").detail(self)
            }
            Self::AmbiguousRecipient { .. } => Failure::new(
                ErrorKind::Invalid,
                "recipient-required",
                "Choose a recipient",
            )
            .detail(self),
            Self::AmbiguousMessage { .. } => Failure::new(
                ErrorKind::Invalid,
                "gateway-id-required",
                "Choose a message",
            )
            .detail(self),
        }
    }
}

/// Records matching the search, oldest first.
pub async fn search(
    conn: &mut AnyConnection,
    search: &Search,
) -> Result<Vec<StoredEvidence>, QueryError> {
    let filter = Filter {
        message: search.message.clone(),
        sender: search.sender.as_ref().map(EmailAddress::key),
        recipient: search.recipient.as_ref().map(EmailAddress::key),
        from: search.from,
        until: search.until,
        after: search.after.map(|a| i64::try_from(a).unwrap_or(i64::MAX)),
        limit: search.limit.unwrap_or(DEFAULT_LIMIT),
        scope_user: search.scope_user,
    };
    Ok(repo::search(conn, &filter).await?)
}

/// The ordered evidence timeline of one message (all recipients), by gateway or RFC 5322 id.
pub async fn timeline(
    conn: &mut AnyConnection,
    message: &str,
) -> Result<Vec<StoredEvidence>, QueryError> {
    let found = search(
        conn,
        &Search {
            message: Some(message.to_owned()),
            limit: Some(i64::MAX),
            ..Search::default()
        },
    )
    .await?;
    if found.is_empty() {
        return Err(QueryError::UnknownMessage(message.to_owned()));
    }
    Ok(found)
}

/// The chain of one (message, recipient): what a proof bundle holds. Without a recipient,
/// the message must have exactly one.
pub async fn chain(
    conn: &mut AnyConnection,
    message: &str,
    recipient: Option<&EmailAddress>,
) -> Result<Vec<StoredEvidence>, QueryError> {
    // A named recipient's chain is read alone: the relay worker continues one chain per
    // job, and reading every recipient's records of a large message each time would not
    // scale. Only when nothing is found is the whole timeline read, to say why.
    if let Some(r) = recipient {
        let found = search(
            conn,
            &Search {
                message: Some(message.to_owned()),
                recipient: Some(r.clone()),
                limit: Some(i64::MAX),
                ..Search::default()
            },
        )
        .await?;
        if !found.is_empty() {
            return Ok(found);
        }
    }
    let all = timeline(conn, message).await?;
    let mut recipients: Vec<EmailAddress> = Vec::new();
    for e in &all {
        if !recipients
            .iter()
            .any(|r| r.key() == e.record.recipient.key())
        {
            recipients.push(e.record.recipient.clone());
        }
    }
    let chosen = match recipient {
        Some(r) => {
            if !recipients.iter().any(|x| x.key() == r.key()) {
                return Err(QueryError::UnknownRecipient {
                    message: message.to_owned(),
                    recipient: r.clone(),
                });
            }
            r.key()
        }
        None if recipients.len() == 1 => recipients[0].key(),
        None => {
            return Err(QueryError::AmbiguousRecipient {
                message: message.to_owned(),
                count: recipients.len(),
                list: recipients
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    };
    Ok(all
        .into_iter()
        .filter(|e| e.record.recipient.key() == chosen)
        .collect())
}
