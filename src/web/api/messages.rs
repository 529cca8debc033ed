//! Submitting, listing and reading messages; their timelines, receipts and bundles.

use axum::Json;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiJson, ApiPath, ApiQuery, paged};
use crate::address::EmailAddress;
use crate::auth::Caller;
use crate::crypto::armor_signature;
use crate::crypto::endtoend::{InnerSignature, SignatureStatus};
use crate::evidence::StoredEvidence;
use crate::gateway::{FOLDERS, Gateway};
use crate::message::{Content, NewAttachment, Options};
use crate::pipeline::{Channel, OpenError, Submission, Summary};

fn bad_request(detail: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(detail)
}

/// An attachment in a submission.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentIn {
    /// File name.
    name: String,
    /// MIME type (default `application/octet-stream`).
    #[serde(default)]
    content_type: Option<String>,
    /// Content, base64.
    data: String,
}

/// `POST /api/v1/messages`: either `subject`/`text`/`attachments`, or `rfc5322`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The sending mailbox; needed only by staff of several offices.
    #[serde(default)]
    from: Option<String>,
    /// Recipient addresses.
    to: Vec<String>,
    /// Subject (composed messages).
    #[serde(default)]
    subject: Option<String>,
    /// Plain-text body (composed messages).
    #[serde(default)]
    text: Option<String>,
    /// Attachments (composed messages).
    #[serde(default)]
    attachments: Vec<AttachmentIn>,
    /// A complete RFC 5322 message, base64 (instead of subject/text/attachments).
    #[serde(default)]
    rfc5322: Option<String>,
    /// Absenderbestätigt: the gateway attests a verified sender at level `high`.
    #[serde(default)]
    authoritative: bool,
    /// Persönlich: the recipient can open it only from a `high` session.
    #[serde(default)]
    personal: bool,
    /// Abholbestätigung: the citizen's first opening at `high` is recorded (offices only).
    #[serde(default)]
    retrieval_confirmation: bool,
}

impl SubmitRequest {
    fn options(&self) -> Options {
        Options {
            authoritative: self.authoritative,
            personal: self.personal,
            retrieval_confirmation: self.retrieval_confirmation,
        }
    }
}

/// One evidence record as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvidenceOut {
    /// Event name.
    event: String,
    /// Recipient the record is about.
    recipient: String,
    /// Log index of its commitment.
    log_index: u64,
    /// The record (canonical JSON, parsed).
    #[schema(value_type = Object)]
    record: serde_json::Value,
    /// Its detached OpenPGP signature, armoured.
    signature: String,
}

impl EvidenceOut {
    pub(super) fn from_stored(e: &StoredEvidence) -> Self {
        Self {
            event: e.record.event.to_string(),
            recipient: e.record.recipient.to_string(),
            log_index: e.log_index,
            record: serde_json::from_slice(&e.canonical).unwrap_or_default(),
            signature: String::from_utf8_lossy(&armor_signature(&e.signature)).into_owned(),
        }
    }
}

/// An accepted submission.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubmitResponse {
    /// The gateway message id.
    gateway_id: String,
    /// The RFC 5322 Message-ID.
    message_id: Option<String>,
    /// SubmissionAcceptance, one per recipient.
    submission_acceptance: Vec<AcceptanceOut>,
}

/// One SubmissionAcceptance.
#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptanceOut {
    /// Recipient.
    recipient: String,
    /// Evidence id.
    evidence_id: String,
    /// Log index.
    log_index: u64,
    /// The record.
    #[schema(value_type = Object)]
    record: serde_json::Value,
}

/// Who sends: the caller's mailbox (`from` chooses among a staff member's offices).
fn content(req: SubmitRequest) -> Result<(Content, Vec<String>, Options), ApiError> {
    let options = req.options();
    let composed = req.subject.is_some() || req.text.is_some() || !req.attachments.is_empty();
    let content = match (req.rfc5322, composed) {
        (Some(_), true) => {
            return Err(bad_request(
                "give either rfc5322 or subject/text/attachments, not both",
            ));
        }
        (Some(raw), false) => Content::Rfc5322(
            B64.decode(raw.as_bytes())
                .map_err(|e| bad_request(format!("rfc5322: not base64: {e}")))?,
        ),
        (None, _) => {
            let attachments = req
                .attachments
                .into_iter()
                .map(|a| {
                    Ok(NewAttachment {
                        data: B64.decode(a.data.as_bytes()).map_err(|e| {
                            bad_request(format!("attachment `{}`: not base64: {e}", a.name))
                        })?,
                        content_type: a
                            .content_type
                            .unwrap_or_else(|| "application/octet-stream".into()),
                        name: a.name,
                    })
                })
                .collect::<Result<Vec<_>, ApiError>>()?;
            Content::Composed {
                subject: req.subject.unwrap_or_default(),
                text: req.text.unwrap_or_default(),
                attachments,
            }
        }
    };
    Ok((content, req.to, options))
}

/// Submits a message; answers only once it and its SubmissionAcceptance are durable.
#[utoipa::path(post, path = "/api/v1/messages", request_body = SubmitRequest,
    security(("bearer" = [])),
    responses((status = 201, body = SubmitResponse),
              (status = 400, body = crate::web::problem::Problem),
              (status = 403, body = crate::web::problem::Problem),
              (status = 413, body = crate::web::problem::Problem),
              (status = 422, body = crate::web::problem::Problem),
              (status = 429, body = crate::web::problem::Problem)))]
pub async fn submit(
    State(gateway): State<Gateway>,
    caller: Caller,
    ApiJson(req): ApiJson<SubmitRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let from = req
        .from
        .as_deref()
        .map(EmailAddress::parse)
        .transpose()
        .map_err(|e| bad_request(format!("from: {e}")))?;
    let (content, recipients, options) = content(req)?;
    let submission = Submission {
        recipients,
        resolved: Vec::new(),
        content,
        options,
        reserved: Vec::new(),
    };
    let accepted = gateway
        .submit(&caller, from.as_ref(), Channel::Api, submission)
        .await?;
    let acceptances = accepted
        .acceptances
        .iter()
        .map(|(record, index)| AcceptanceOut {
            recipient: record.recipient.to_string(),
            evidence_id: record.evidence_id.to_string(),
            log_index: *index,
            record: serde_json::to_value(record).unwrap_or_default(),
        })
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(SubmitResponse {
            gateway_id: accepted.gateway_id,
            message_id: accepted.message_id,
            submission_acceptance: acceptances,
        }),
    ))
}

/// A mailbox the caller can open.
#[derive(Debug, Serialize, ToSchema)]
pub struct MailboxOut {
    /// Address.
    address: String,
    /// `citizen`, `office` or `external`.
    kind: String,
    /// Display name.
    name: String,
    /// Folders.
    folders: Vec<String>,
}

/// Lists the mailboxes the caller can open.
#[utoipa::path(get, path = "/api/v1/mailboxes", security(("bearer" = [])),
    responses((status = 200, body = Vec<MailboxOut>)))]
pub async fn mailboxes(
    State(gateway): State<Gateway>,
    caller: Caller,
) -> Result<Json<Vec<MailboxOut>>, ApiError> {
    let found = gateway.mailboxes(&caller).await?;
    Ok(Json(
        found
            .into_iter()
            .map(|m| MailboxOut {
                address: m.address.to_string(),
                kind: m.kind.to_string(),
                name: m.name,
                folders: FOLDERS.iter().map(|f| (*f).to_owned()).collect(),
            })
            .collect(),
    ))
}

/// One message in a folder listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct SummaryOut {
    /// Copy id (use it to read).
    id: String,
    /// Gateway message id.
    gateway_id: String,
    /// RFC 5322 Message-ID.
    message_id: Option<String>,
    /// `inbox` or `sent`.
    folder: String,
    /// Mailbox.
    mailbox: String,
    /// Sender.
    from: String,
    /// Recipient of this copy.
    recipient: String,
    /// Subject.
    subject: Option<String>,
    /// Arrival, RFC 3339.
    received_at: String,
    /// Size.
    size: i64,
    /// Options.
    options: Options,
    /// The sender's authentication level.
    sender_auth_level: String,
    /// When handover was recorded, RFC 3339.
    handed_over_at: Option<String>,
    /// In `sent`: every recipient and how far delivery got (`accepted`, `delayed`,
    /// `consigned`, `relayed`, `picked-up`, `failed`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    recipients: Vec<RecipientStatusOut>,
}

/// One recipient of a sent message.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecipientStatusOut {
    /// Recipient address.
    address: String,
    /// Latest delivery status.
    status: String,
}

impl From<Summary> for SummaryOut {
    fn from(s: Summary) -> Self {
        Self {
            id: s.id,
            gateway_id: s.gateway_id,
            message_id: s.message_id,
            folder: s.folder,
            mailbox: s.mailbox,
            from: s.from,
            recipient: s.recipient,
            subject: s.subject,
            received_at: crate::clock::rfc3339_ms(s.received_at),
            size: s.size,
            options: s.options,
            sender_auth_level: s.sender_auth_level,
            handed_over_at: s.handed_over_at.map(crate::clock::rfc3339_ms),
            recipients: s
                .recipients
                .into_iter()
                .map(|(address, status)| RecipientStatusOut {
                    address,
                    status: status.to_string(),
                })
                .collect(),
        }
    }
}

/// `?limit=&before=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Most messages (default 50, at most 200).
    limit: Option<i64>,
    /// Messages older than this copy (from the previous page's `Link`).
    before: Option<String>,
}

/// `?limit=&after=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EvidencePageQuery {
    /// Most records (default 100, at most 1000).
    limit: Option<i64>,
    /// Records after the one at this log index (from the previous page's `Link`).
    after: Option<u64>,
}

/// Lists a folder (`inbox` or `sent`), newest first, subjects decrypted for the caller.
#[utoipa::path(get, path = "/api/v1/mailboxes/{address}/{folder}", params(
        ("address" = String, Path, description = "Mailbox address"),
        ("folder" = String, Path, description = "`inbox` or `sent`"), ListQuery),
    security(("bearer" = [])),
    responses((status = 200, body = Vec<SummaryOut>), (status = 404, body = crate::web::problem::Problem)))]
pub async fn folder(
    State(gateway): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiPath((address, folder)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let address = EmailAddress::parse(&address).map_err(|_| OpenError::NotFound)?;
    let list = gateway
        .folder(&caller, &address, &folder, q.before.as_deref(), q.limit)
        .await?;
    Ok(paged(list, &uri, "before", SummaryOut::from))
}

/// An attachment's metadata.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttachmentOut {
    /// Index for `/attachments/{n}`.
    index: usize,
    /// File name.
    name: String,
    /// MIME type as sent.
    content_type: String,
    /// Size.
    size: usize,
    /// SHA-256, hex (as in the evidence).
    sha256: String,
}

/// The gateway's attestation from the verified provider signature.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttestationOut {
    /// Sender address.
    sender: String,
    /// `verified:<method>` or `unverified`.
    identity: String,
    /// Sender's level.
    auth_level: String,
    /// Absenderbestätigt.
    authoritative: bool,
}

/// A signature inside end-to-end content.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignatureOut {
    /// The signing key: fingerprint, or key id where only that is known.
    issuer: String,
    /// `good` (by a certificate the gateway holds for the sender), `unknown-key`
    /// (unverified) or `bad`.
    status: String,
    /// Why it is bad.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

impl From<InnerSignature> for SignatureOut {
    fn from(s: InnerSignature) -> Self {
        let (status, detail) = match s.status {
            SignatureStatus::Good => ("good", None),
            SignatureStatus::UnknownKey => ("unknown-key", None),
            SignatureStatus::Bad(why) => ("bad", Some(why)),
        };
        Self {
            issuer: s.issuer,
            status: status.to_owned(),
            detail,
        }
    }
}

/// A message opened for reading.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageOut {
    /// Listing fields.
    #[serde(flatten)]
    summary: SummaryOut,
    /// Plain-text body (HTML-only mail is rendered to text).
    text: Option<String>,
    /// Whether the message also has an HTML body (shown sanitised in the web inbox).
    has_html: bool,
    /// Attachments.
    attachments: Vec<AttachmentOut>,
    /// The gateway's attestation; absent if the provider signature did not verify.
    attestation: Option<AttestationOut>,
    /// Sent end-to-end encrypted to this mailbox's key.
    end_to_end: bool,
    /// Signatures the sender made inside end-to-end content.
    signatures: Vec<SignatureOut>,
    /// This request recorded ContentHandover.
    handover_recorded: bool,
}

/// Reads one message (decrypted for the caller). Records ContentHandover on the first
/// opening in an office mailbox, or a citizen's first `high` opening of a message with
/// retrieval confirmation.
#[utoipa::path(get, path = "/api/v1/messages/{id}", params(("id" = String, Path, description = "Copy id, or the gateway id a submission returned")),
    security(("bearer" = [])),
    responses((status = 200, body = MessageOut), (status = 403, body = crate::web::problem::Problem),
              (status = 404, body = crate::web::problem::Problem)))]
pub async fn read(
    State(gateway): State<Gateway>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<MessageOut>, ApiError> {
    let opened = gateway.open(&caller, &id).await?;
    Ok(Json(MessageOut {
        summary: opened.summary.into(),
        text: opened.text,
        has_html: opened.html.is_some(),
        attachments: opened
            .attachments
            .iter()
            .enumerate()
            .map(|(index, p)| AttachmentOut {
                index,
                name: p.name.clone(),
                content_type: p.content_type.clone(),
                size: p.data.len(),
                sha256: crate::evidence::Sha256Digest::of(&p.data).to_string(),
            })
            .collect(),
        attestation: opened.attestation.map(|a| AttestationOut {
            sender: a.sender,
            identity: a.identity,
            auth_level: a.auth_level,
            authoritative: a.authoritative,
        }),
        end_to_end: opened.end_to_end,
        signatures: opened.signatures.into_iter().map(Into::into).collect(),
        handover_recorded: opened.handover_recorded,
    }))
}

/// Downloads one attachment (always as a download, never rendered inline).
#[utoipa::path(get, path = "/api/v1/messages/{id}/attachments/{n}", params(
        ("id" = String, Path, description = "Copy id, or the gateway id a submission returned"), ("n" = usize, Path, description = "Index")),
    security(("bearer" = [])),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
              (status = 404, body = crate::web::problem::Problem)))]
pub async fn attachment(
    State(gateway): State<Gateway>,
    caller: Caller,
    ApiPath((id, n)): ApiPath<(String, usize)>,
) -> Result<Response, ApiError> {
    let part = gateway.attachment(&caller, &id, n).await?;
    Ok(download(part.data, "application/octet-stream", &part.name))
}

/// RFC 8187 `attr-char`s stay as they are; everything else is percent-encoded.
const ATTR_CHAR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `Content-Disposition: attachment` for `file_name` (RFC 6266): an ASCII `filename` for
/// old clients and the exact name as `filename*=UTF-8''…` (RFC 8187).
pub fn content_disposition(file_name: &str) -> String {
    let ascii: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_ ()".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let exact = percent_encoding::utf8_percent_encode(file_name, ATTR_CHAR);
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{exact}")
}

pub(crate) fn download(data: Vec<u8>, content_type: &'static str, file_name: &str) -> Response {
    let mut response = data.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&content_disposition(file_name)) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

/// The evidence timeline of a message: the caller's own chain for a received copy, every
/// recipient's for the sender's copy.
#[utoipa::path(get, path = "/api/v1/messages/{id}/timeline", params(("id" = String, Path, description = "Copy id, or the gateway id a submission returned"), EvidencePageQuery),
    security(("bearer" = [])),
    responses((status = 200, body = Vec<EvidenceOut>), (status = 404, body = crate::web::problem::Problem)))]
pub async fn timeline(
    State(gateway): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<EvidencePageQuery>,
) -> Result<Response, ApiError> {
    let records = gateway.timeline(&caller, &id, q.after, q.limit).await?;
    Ok(paged(records, &uri, "after", |e| {
        EvidenceOut::from_stored(&e)
    }))
}

/// A receipt, rendered from stored evidence.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptOut {
    /// Event.
    event: String,
    /// Evidence id.
    evidence_id: String,
    /// Recipient.
    recipient: String,
    /// `REM <Event>: <subject>`.
    subject: String,
    /// `REM-*` header fields.
    headers: std::collections::BTreeMap<String, String>,
    /// The receipt as an RFC 5322 message with the evidence and signature attached.
    rfc5322: String,
}

/// The receipts of a sent message (spec §3.7), rendered from its evidence.
#[utoipa::path(get, path = "/api/v1/messages/{id}/receipts", params(("id" = String, Path, description = "Gateway id, or the copy id in `sent`"), EvidencePageQuery),
    security(("bearer" = [])),
    responses((status = 200, body = Vec<ReceiptOut>), (status = 404, body = crate::web::problem::Problem)))]
pub async fn receipts(
    State(gateway): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<EvidencePageQuery>,
) -> Result<Response, ApiError> {
    let receipts = gateway.receipts(&caller, &id, q.after, q.limit).await?;
    Ok(paged(receipts, &uri, "after", |r| ReceiptOut {
        event: r.event,
        evidence_id: r.evidence_id,
        recipient: r.recipient,
        subject: r.subject,
        headers: r
            .headers
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        rfc5322: r.rfc5322,
    }))
}

/// `?recipient=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BundleQuery {
    /// For the sender's copy of a message with several recipients: whose chain.
    recipient: Option<String>,
}

/// Downloads the proof bundle (spec §4) of a message for one recipient.
#[utoipa::path(get, path = "/api/v1/messages/{id}/bundle", params(("id" = String, Path, description = "Copy id, or the gateway id a submission returned"), BundleQuery),
    security(("bearer" = [])),
    responses((status = 200, content_type = "application/x-tar", body = Vec<u8>),
              (status = 404, body = crate::web::problem::Problem)))]
pub async fn bundle(
    State(gateway): State<Gateway>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<BundleQuery>,
) -> Result<Response, ApiError> {
    let recipient = q
        .recipient
        .as_deref()
        .map(EmailAddress::parse)
        .transpose()
        .map_err(|e| bad_request(format!("recipient: {e}")))?;
    let exported = gateway
        .copy_bundle(&caller, &id, recipient.as_ref())
        .await?;
    Ok(download(
        exported.bytes,
        "application/x-tar",
        &format!("{id}.bundle.tar"),
    ))
}
