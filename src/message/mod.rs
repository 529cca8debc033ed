//! Messages as the gateway understands them: submission options, content, the parsed view
//! a reader sees, and the wire forms (RFC 5322 composition, RFC 3156 PGP/MIME). Pure: no I/O.

pub mod mime;

use serde::{Deserialize, Serialize};

/// The De-Mail options of spec §2 (SMTP: the `X-de-mail-*` headers; API: these fields).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    /// Absenderbestätigt: the gateway attests a verified sender at level `high`.
    pub authoritative: bool,
    /// Persönlich: the recipient can open it only from a `high` session.
    pub personal: bool,
    /// Abholbestätigung: the citizen's first opening at `high` is recorded (offices only).
    pub retrieval_confirmation: bool,
}

/// A file attached to a composed message.
#[derive(Debug, Clone)]
pub struct NewAttachment {
    /// File name as the sender gave it.
    pub name: String,
    /// MIME type, e.g. `application/pdf`.
    pub content_type: String,
    /// The bytes.
    pub data: Vec<u8>,
}

/// What a sender submits.
#[derive(Debug, Clone)]
pub enum Content {
    /// A complete RFC 5322 message (CRLF line ends), as from SMTP or an API client.
    Rfc5322(Vec<u8>),
    /// Parts that the gateway composes into an RFC 5322 message.
    Composed {
        /// Subject line.
        subject: String,
        /// Plain-text body.
        text: String,
        /// Attachments.
        attachments: Vec<NewAttachment>,
    },
}

impl Content {
    /// About how many bytes the RFC 5322 form takes (composed parts grow by base64).
    pub fn approx_size(&self) -> u64 {
        match self {
            Self::Rfc5322(bytes) => bytes.len() as u64,
            Self::Composed {
                subject,
                text,
                attachments,
            } => {
                let attached: u64 = attachments.iter().map(|a| a.data.len() as u64).sum();
                (subject.len() + text.len()) as u64 + attached / 3 * 4 + 1024
            }
        }
    }
}

/// One attachment of a parsed message, decoded.
#[derive(Debug, Clone)]
pub struct Part {
    /// File name (`attachment-N` when the message gives none).
    pub name: String,
    /// MIME type.
    pub content_type: String,
    /// Decoded bytes.
    pub data: Vec<u8>,
}

/// The view of an RFC 5322 message that evidence and readers need.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    /// The Message-ID, with angle brackets.
    pub message_id: Option<String>,
    /// The first From address.
    pub from: Option<String>,
    /// Subject.
    pub subject: Option<String>,
    /// First plain-text body (or the HTML body rendered as text).
    pub text: Option<String>,
    /// First HTML body, unsanitised (render it sanitised).
    pub html: Option<String>,
    /// Attachments in order.
    pub attachments: Vec<Part>,
    /// The whole content is an RFC 3156 encrypted message (already end-to-end encrypted).
    pub end_to_end: Option<Vec<u8>>,
}
