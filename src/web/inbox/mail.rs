//! Citizens' and staff's pages: folders (keyset-paginated), reading a message (attestation,
//! attachments, the evidence timeline in plain words, receipts, proof download, HTML mail
//! in a sandboxed frame), and composing (directory lookup, attachments, options). Every
//! rule (who may read, which option needs what) is the core's: these handlers call the
//! same `Gateway` operations as `web::api::messages`.

use std::collections::BTreeMap;

use askama::Template;
use axum::Form;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{Chrome, Lang, Web, failure_text, html, i18n, render, render_status, size, when};
use crate::accounts::{AuthLevel, Mailbox, MailboxKind};
use crate::address::EmailAddress;
use crate::error::Classify;
use crate::evidence::StoredEvidence;
use crate::gateway::{FOLDERS, Gateway};
use crate::message::{Content, NewAttachment, Options};
use crate::pipeline::{Channel, Submission, Summary};
use crate::web::api::messages::download;

/// Rows per folder page: every row's subject is decrypted for the reader, one OpenPGP
/// decryption each, so a page of 20 keeps the inbox page fast (benches/web_inbox.rs).
const PAGE_ROWS: i64 = 20;

/// One row of a folder listing.
pub struct Row {
    id: String,
    party: String,
    subject: String,
    when: String,
    badges: Vec<&'static str>,
    status: String,
}

#[derive(Template)]
#[template(path = "folder.html", config = "src/web/inbox/askama.toml")]
struct FolderPage {
    c: Chrome,
    mailboxes: Vec<String>,
    mailbox: String,
    folder: &'static str,
    rows: Vec<Row>,
    next: Option<String>,
    first: bool,
    /// Access requests waiting for this member's confirmation (Settings).
    grants_waiting: usize,
    /// The user made their key (else the inbox asks them to choose their own password).
    key_is_own: bool,
}

/// `?mailbox=&folder=&before=`
#[derive(Debug, Deserialize)]
pub struct FolderQuery {
    mailbox: Option<String>,
    folder: Option<String>,
    before: Option<String>,
}

fn badges(o: &Options) -> Vec<&'static str> {
    let mut b = Vec::new();
    if o.authoritative {
        b.push("opt-authoritative");
    }
    if o.personal {
        b.push("opt-personal");
    }
    if o.retrieval_confirmation {
        b.push("opt-retrieval");
    }
    b
}

fn row(lang: Lang, s: Summary) -> Row {
    let sent = s.folder == "sent";
    let status = if sent {
        s.recipients
            .iter()
            .map(|(r, st)| format!("{r}: {}", i18n::t(lang, status_key(st.as_str()))))
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        String::new()
    };
    Row {
        party: if sent {
            s.recipients
                .iter()
                .map(|(r, _)| r.clone())
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            s.from.clone()
        },
        subject: s
            .subject
            .clone()
            .unwrap_or_else(|| i18n::t(lang, "subject-hidden").to_owned()),
        when: when(s.received_at),
        badges: badges(&s.options),
        id: s.id,
        status,
    }
}

/// The delivery status (translation key) an event leaves its recipient in.
fn status_after(event: &str) -> &'static str {
    match event {
        "SubmissionAcceptance" | "ReceivedFromNonERDS" => "status-accepted",
        "ContentConsignment" => "status-consigned",
        "RelayToNonERDS" | "RelayAcceptance" => "status-relayed",
        "ContentHandover" => "status-picked-up",
        _ => "status-failed",
    }
}

fn status_key(status: &str) -> &'static str {
    match status {
        "accepted" => "status-accepted",
        "consigned" => "status-consigned",
        "relayed" => "status-relayed",
        "picked-up" => "status-picked-up",
        "failed" => "status-failed",
        _ => "status-other",
    }
}

/// `GET /mail`: a page of a folder of one of the caller's mailboxes, newest first; the
/// next page starts after the last copy shown (keyset pagination: constant cost at any
/// depth).
pub async fn folder(
    State(gateway): State<Gateway>,
    web: Web,
    Query(q): Query<FolderQuery>,
) -> Response {
    let mailboxes = match gateway.mailboxes(&web.caller).await {
        Ok(m) => m,
        Err(e) => return web.fail(&e.failure()),
    };
    let folder = FOLDERS
        .iter()
        .find(|f| Some(**f) == q.folder.as_deref())
        .copied()
        .unwrap_or("inbox");
    let chosen = q
        .mailbox
        .as_deref()
        .and_then(|m| EmailAddress::parse(m).ok())
        .or_else(|| mailboxes.first().map(|m| m.address.clone()));
    let Some(mailbox) = chosen else {
        // Most often a new colleague whose access waits for a member's confirmation.
        let none = crate::error::Failure::new(
            crate::error::ErrorKind::NotFound,
            "no-mailbox-yet",
            "No mailbox yet",
        );
        return web.fail(&none);
    };
    let page = match gateway
        .folder(
            &web.caller,
            &mailbox,
            folder,
            q.before.as_deref(),
            Some(PAGE_ROWS),
        )
        .await
    {
        Ok(p) => p,
        Err(e) => return web.fail(&e.failure()),
    };
    let current = if folder == "sent" {
        "nav-sent"
    } else {
        "nav-inbox"
    };
    let title = if folder == "sent" {
        "folder-sent"
    } else {
        "folder-inbox"
    };
    // Members learn of access requests, and users that their key is still the operator's
    // making, where they look every day, not only in Settings and Security.
    let (grants_waiting, key_is_own) = if folder == "inbox" && q.before.is_none() {
        gateway
            .auth()
            .grants(&web.caller)
            .await
            .map_or((0, true), |g| (g.pending.len(), g.own_key_is_own))
    } else {
        (0, true)
    };
    render(&FolderPage {
        c: web.chrome(title, current),
        grants_waiting,
        key_is_own,
        mailboxes: mailboxes.iter().map(|m| m.address.to_string()).collect(),
        mailbox: mailbox.to_string(),
        folder,
        rows: page.items.into_iter().map(|s| row(web.lang, s)).collect(),
        next: page.next,
        first: q.before.is_none(),
    })
}

/// One evidence record in plain words.
pub struct Step {
    /// When.
    pub when: String,
    /// The ETSI event name.
    pub event: String,
    /// What it proves (translation key).
    pub meaning: &'static str,
    /// Whose chain.
    pub recipient: String,
    /// Remote reply or note, if any.
    pub detail: Option<String>,
    /// Reason code.
    pub reason: String,
}

/// The translation key saying what an event proves.
pub fn event_key(event: &str) -> &'static str {
    match event {
        "SubmissionAcceptance" => "ev-SubmissionAcceptance",
        "SubmissionRejection" => "ev-SubmissionRejection",
        "RelayAcceptance" => "ev-RelayAcceptance",
        "RelayRejection" => "ev-RelayRejection",
        "RelayFailure" => "ev-RelayFailure",
        "RelayToNonERDS" => "ev-RelayToNonERDS",
        "RelayToNonERDSFailure" => "ev-RelayToNonERDSFailure",
        "ReceivedFromNonERDS" => "ev-ReceivedFromNonERDS",
        "ContentConsignment" => "ev-ContentConsignment",
        "ContentConsignmentFailure" => "ev-ContentConsignmentFailure",
        "ContentHandover" => "ev-ContentHandover",
        "ContentHandoverFailure" => "ev-ContentHandoverFailure",
        _ => "ev-other",
    }
}

/// The steps of a timeline.
pub fn steps(records: &[StoredEvidence]) -> Vec<Step> {
    records
        .iter()
        .map(|e| {
            let r = &e.record;
            let event = r.event.to_string();
            Step {
                when: when(r.time.0),
                meaning: event_key(&event),
                event,
                recipient: r.recipient.to_string(),
                detail: r.details.reply.clone().or_else(|| r.details.note.clone()),
                reason: r.reason.to_string(),
            }
        })
        .collect()
}

/// An attachment as the message page lists it.
pub struct AttachmentRow {
    index: usize,
    name: String,
    size: String,
    sha256: String,
}

/// A receipt of a sent message.
pub struct ReceiptRow {
    event: String,
    meaning: &'static str,
    recipient: String,
    evidence_id: String,
}

#[derive(Template)]
#[template(path = "message.html", config = "src/web/inbox/askama.toml")]
struct MessagePage {
    c: Chrome,
    id: String,
    subject: String,
    from: String,
    to: String,
    date: String,
    sent: bool,
    badges: Vec<&'static str>,
    attestation: Option<Attest>,
    text: Option<String>,
    has_html: bool,
    attachments: Vec<AttachmentRow>,
    steps: Vec<Step>,
    receipts: Vec<ReceiptRow>,
    recipients: Vec<String>,
    end_to_end: bool,
    handover_recorded: bool,
}

/// The gateway's attestation in words.
pub struct Attest {
    sender: String,
    verified: bool,
    method: String,
    level: String,
    authoritative: bool,
}

/// `GET /mail/{id}`: opens a message (ContentHandover where spec §2 says so, as in the
/// API), with its timeline and, for the sender, its receipts.
pub async fn message(State(gateway): State<Gateway>, web: Web, Path(id): Path<String>) -> Response {
    let opened = match gateway.open(&web.caller, &id).await {
        Ok(o) => o,
        Err(e) => return web.fail(&e.failure()),
    };
    let timeline = match gateway.timeline(&web.caller, &id, None, None).await {
        Ok(t) => t.items,
        Err(e) => return web.fail(&e.failure()),
    };
    let sent = opened.summary.folder == "sent";
    let receipts = if sent {
        match gateway.receipts(&web.caller, &id, None, None).await {
            Ok(r) => r
                .items
                .into_iter()
                .map(|r| ReceiptRow {
                    meaning: event_key(&r.event),
                    event: r.event,
                    recipient: r.recipient,
                    evidence_id: r.evidence_id,
                })
                .collect(),
            Err(e) => return web.fail(&e.failure()),
        }
    } else {
        Vec::new()
    };
    let s = &opened.summary;
    // The sender's copy: every recipient and how far delivery got, from the evidence.
    let mut delivery: Vec<(String, &'static str)> = Vec::new();
    for e in &timeline {
        let r = e.record.recipient.to_string();
        let status = status_after(&e.record.event.to_string());
        match delivery.iter_mut().find(|(x, _)| *x == r) {
            Some(d) => d.1 = status,
            None => delivery.push((r, status)),
        }
    }
    let recipients: Vec<String> = if sent {
        delivery.iter().map(|(r, _)| r.clone()).collect()
    } else {
        vec![s.recipient.clone()]
    };
    let to = if sent {
        delivery
            .iter()
            .map(|(r, st)| format!("{r} ({})", i18n::t(web.lang, st)))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        s.recipient.clone()
    };
    let attestation = opened.attestation.as_ref().map(|a| {
        let (verified, method) = match a.identity.strip_prefix("verified:") {
            Some(m) => (true, m.to_owned()),
            None => (false, String::new()),
        };
        Attest {
            sender: a.sender.clone(),
            verified,
            method,
            level: a.auth_level.clone(),
            authoritative: a.authoritative,
        }
    });
    render(&MessagePage {
        c: web.chrome("message-title", if sent { "nav-sent" } else { "nav-inbox" }),
        id: s.id.clone(),
        subject: s.subject.clone().unwrap_or_default(),
        from: s.from.clone(),
        to,
        date: when(s.received_at),
        sent,
        badges: badges(&s.options),
        attestation,
        text: opened.text.clone(),
        has_html: opened.html.is_some(),
        attachments: opened
            .attachments
            .iter()
            .enumerate()
            .map(|(index, p)| AttachmentRow {
                index,
                name: p.name.clone(),
                size: size(p.data.len() as u64),
                sha256: crate::evidence::Sha256Digest::of(&p.data).to_string(),
            })
            .collect(),
        steps: steps(&timeline),
        receipts,
        recipients,
        end_to_end: opened.end_to_end,
        handover_recorded: opened.handover_recorded,
    })
}

/// The CSP of the HTML mail frame: nothing may load or run; only `data:` images show.
const FRAME_CSP: &str = "default-src 'none'; img-src data:; frame-ancestors 'self'; base-uri 'none'; form-action 'none'; sandbox";

/// `GET /mail/{id}/html`: the HTML body, sanitised, for the sandboxed frame of the message
/// page (`sandbox` without scripts; no remote content).
pub async fn html_body(
    State(gateway): State<Gateway>,
    web: Web,
    Path(id): Path<String>,
) -> Response {
    let opened = match gateway.open(&web.caller, &id).await {
        Ok(o) => o,
        Err(e) => return web.fail(&e.failure()),
    };
    let Some(body) = opened.html else {
        return web.fail(&crate::gateway::GatewayError::NotFound.failure());
    };
    let document = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>mail</title></head><body>{}</body></html>",
        html::sanitise(&body)
    );
    let mut r = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        document,
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(FRAME_CSP),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
    r
}

/// `GET /mail/{id}/attachments/{n}`: always a download, never rendered.
pub async fn attachment(
    State(gateway): State<Gateway>,
    web: Web,
    Path((id, n)): Path<(String, usize)>,
) -> Response {
    match gateway.attachment(&web.caller, &id, n).await {
        Ok(part) => download(part.data, "application/octet-stream", &part.name),
        Err(e) => web.fail(&e.failure()),
    }
}

/// The proof form.
#[derive(Deserialize)]
pub struct ProofForm {
    #[serde(default)]
    csrf: String,
    recipient: Option<String>,
}

/// `POST /mail/{id}/proof`: the proof bundle of a copy (audited, as every export).
pub async fn proof(
    State(gateway): State<Gateway>,
    web: Web,
    Path(id): Path<String>,
    Form(form): Form<ProofForm>,
) -> Response {
    if let Err(r) = web.check_csrf(&form.csrf, "/mail/{id}/proof") {
        return r;
    }
    let recipient = form
        .recipient
        .as_deref()
        .filter(|r| !r.is_empty())
        .and_then(|r| EmailAddress::parse(r).ok());
    match gateway
        .copy_bundle(&web.caller, &id, recipient.as_ref())
        .await
    {
        Ok(b) => download(b.bytes, "application/x-tar", &format!("{id}.bundle.tar")),
        Err(e) => web.fail(&e.failure()),
    }
}

/// One looked-up recipient.
pub struct Lookup {
    address: String,
    found: bool,
    kind: String,
}

#[derive(Template)]
#[template(path = "compose.html", config = "src/web/inbox/askama.toml")]
struct ComposePage {
    c: Chrome,
    senders: Vec<(String, String)>,
    from: String,
    to: String,
    subject: String,
    text: String,
    authoritative: bool,
    personal: bool,
    retrieval_confirmation: bool,
    can_ask_retrieval: bool,
    high: bool,
    verified: bool,
    limit: String,
    lookups: Vec<Lookup>,
    errors: BTreeMap<&'static str, String>,
    accepted: Option<Accepted>,
}

impl ComposePage {
    fn error(&self, field: &str) -> Option<&String> {
        self.errors.get(field)
    }
}

/// What the page shows after a send.
pub struct Accepted {
    gateway_id: String,
    recipients: Vec<String>,
}

/// The compose form's fields.
#[derive(Default)]
struct Draft {
    csrf: String,
    action: String,
    from: String,
    to: String,
    subject: String,
    text: String,
    authoritative: bool,
    personal: bool,
    retrieval_confirmation: bool,
    attachments: Vec<NewAttachment>,
}

fn sender_label(m: &Mailbox) -> String {
    if m.name.is_empty() {
        m.address.to_string()
    } else {
        format!("{} <{}>", m.name, m.address)
    }
}

async fn compose_view(
    gateway: &Gateway,
    web: &Web,
    draft: &Draft,
    lookups: Vec<Lookup>,
    errors: BTreeMap<&'static str, String>,
    accepted: Option<Accepted>,
) -> Result<ComposePage, Response> {
    let mailboxes = gateway
        .mailboxes(&web.caller)
        .await
        .map_err(|e| web.fail(&e.failure()))?;
    let verified = match web.caller.user() {
        Some(u) if u.role == crate::accounts::Role::Staff => {
            mailboxes.iter().any(|m| m.identity.verification.is_some())
        }
        Some(u) => u.identity.verification.is_some(),
        None => false,
    };
    Ok(ComposePage {
        c: web.chrome("compose-title", "nav-compose"),
        can_ask_retrieval: mailboxes.iter().any(|m| m.kind != MailboxKind::Citizen),
        senders: mailboxes
            .iter()
            .map(|m| (m.address.to_string(), sender_label(m)))
            .collect(),
        from: draft.from.clone(),
        to: draft.to.clone(),
        subject: draft.subject.clone(),
        text: draft.text.clone(),
        authoritative: draft.authoritative,
        personal: draft.personal,
        retrieval_confirmation: draft.retrieval_confirmation,
        high: web.caller.access.level() == AuthLevel::High,
        verified,
        limit: size(gateway.config().limits.message_size_submission),
        lookups,
        errors,
        accepted,
    })
}

/// `GET /compose`
pub async fn compose_page(State(gateway): State<Gateway>, web: Web) -> Response {
    match compose_view(
        &gateway,
        &web,
        &Draft::default(),
        Vec::new(),
        BTreeMap::new(),
        None,
    )
    .await
    {
        Ok(p) => render(&p),
        Err(r) => r,
    }
}

/// Reads the multipart compose form; `Err` with a field error when the body is too large
/// or malformed.
async fn read_draft(mut form: Multipart) -> Result<Draft, (&'static str, &'static str)> {
    let mut d = Draft::default();
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(("attachments", "too-large-upload"));
            }
            Err(_) => return Err(("form", "form-malformed")),
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name == "attachments" {
            let file_name = field.file_name().unwrap_or_default().to_owned();
            let content_type = field
                .content_type()
                .unwrap_or("application/octet-stream")
                .to_owned();
            let data = match field.bytes().await {
                Ok(b) => b.to_vec(),
                Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    return Err(("attachments", "too-large-upload"));
                }
                Err(_) => return Err(("form", "form-malformed")),
            };
            // An empty file input submits one nameless, empty part.
            if !file_name.is_empty() || !data.is_empty() {
                d.attachments.push(NewAttachment {
                    name: file_name,
                    content_type,
                    data,
                });
            }
            continue;
        }
        let value = match field.text().await {
            Ok(v) => v,
            Err(_) => return Err(("form", "form-malformed")),
        };
        match name.as_str() {
            "csrf" => d.csrf = value,
            "action" => d.action = value,
            "from" => d.from = value,
            "to" => d.to = value,
            "subject" => d.subject = value,
            "text" => d.text = value,
            "authoritative" => d.authoritative = true,
            "personal" => d.personal = true,
            "retrieval_confirmation" => d.retrieval_confirmation = true,
            _ => {}
        }
    }
    Ok(d)
}

/// The recipients of the `to` field: separated by commas, semicolons or white space.
fn recipients(to: &str) -> Vec<String> {
    to.split([',', ';', ' ', '\n', '\r', '\t'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Which form field a refusal of the core belongs to.
fn field_of(code: &str) -> &'static str {
    match code {
        "unknown-recipient" | "too-many-recipients" | "recipient" => "to",
        "option-not-allowed" => "options",
        "message-too-large" | "message-too-complex" => "attachments",
        "sender-required" | "sender-mismatch" | "forbidden" => "from",
        _ => "form",
    }
}

/// `POST /compose`: "look up" checks the recipients in the directory; "send" submits
/// through `Gateway::submit` (the API's path, evidence and refusals).
pub async fn compose(State(gateway): State<Gateway>, web: Web, form: Multipart) -> Response {
    let draft = match read_draft(form).await {
        Ok(d) => d,
        Err((field, key)) => {
            // The form could not be read whole: the CSRF token may be unread, so nothing
            // is done; the page says why.
            let mut errors = BTreeMap::new();
            let text = if key == "too-large-upload" {
                format!(
                    "{} {}",
                    i18n::t(web.lang, key),
                    size(gateway.config().limits.message_size_submission)
                )
            } else {
                i18n::t(web.lang, key).to_owned()
            };
            errors.insert(field, text);
            return match compose_view(&gateway, &web, &Draft::default(), Vec::new(), errors, None)
                .await
            {
                Ok(p) => render_status(StatusCode::PAYLOAD_TOO_LARGE, &p),
                Err(r) => r,
            };
        }
    };
    if let Err(r) = web.check_csrf(&draft.csrf, "/compose") {
        return r;
    }
    let to = recipients(&draft.to);
    let mut errors = BTreeMap::new();
    let mut lookups = Vec::new();
    if draft.action == "lookup" {
        for address in &to {
            let Ok(parsed) = EmailAddress::parse(address) else {
                lookups.push(Lookup {
                    address: address.clone(),
                    found: false,
                    kind: String::new(),
                });
                continue;
            };
            match gateway
                .directory_entry(Some(&web.caller), web.client, &parsed)
                .await
            {
                Ok(p) => lookups.push(Lookup {
                    address: p.address,
                    found: true,
                    kind: p.kind,
                }),
                Err(crate::gateway::GatewayError::NotFound) => lookups.push(Lookup {
                    address: address.clone(),
                    found: false,
                    kind: String::new(),
                }),
                Err(e) => {
                    errors.insert("to", failure_text(web.lang, &e.failure()));
                }
            }
        }
        if to.is_empty() {
            errors.insert("to", i18n::t(web.lang, "to-empty").to_owned());
        }
        return match compose_view(&gateway, &web, &draft, lookups, errors, None).await {
            Ok(p) => render(&p),
            Err(r) => r,
        };
    }
    if to.is_empty() {
        errors.insert("to", i18n::t(web.lang, "to-empty").to_owned());
        return match compose_view(&gateway, &web, &draft, lookups, errors, None).await {
            Ok(p) => render_status(StatusCode::BAD_REQUEST, &p),
            Err(r) => r,
        };
    }
    let from = Some(draft.from.trim())
        .filter(|f| !f.is_empty())
        .and_then(|f| EmailAddress::parse(f).ok());
    let submission = Submission {
        recipients: to.clone(),
        resolved: Vec::new(),
        content: Content::Composed {
            subject: draft.subject.clone(),
            text: draft.text.clone(),
            attachments: draft.attachments.clone(),
        },
        options: Options {
            authoritative: draft.authoritative,
            personal: draft.personal,
            retrieval_confirmation: draft.retrieval_confirmation,
        },
        reserved: Vec::new(),
    };
    match gateway
        .submit(&web.caller, from.as_ref(), Channel::Web, submission)
        .await
    {
        Ok(accepted) => {
            let recipients = accepted
                .acceptances
                .iter()
                .map(|(r, _)| r.recipient.to_string())
                .collect();
            let done = Accepted {
                gateway_id: accepted.gateway_id.clone(),
                recipients,
            };
            match compose_view(
                &gateway,
                &web,
                &Draft {
                    from: draft.from.clone(),
                    ..Draft::default()
                },
                Vec::new(),
                BTreeMap::new(),
                Some(done),
            )
            .await
            {
                Ok(p) => render_status(StatusCode::CREATED, &p),
                Err(r) => r,
            }
        }
        Err(e) => {
            let f = e.failure();
            f.log_cause("web");
            let mut text = failure_text(web.lang, &f);
            if let Some(d) = &f.detail {
                text = format!("{text}: {d}");
            }
            if let Some(id) = &f.evidence {
                text = format!("{text} ({} {id})", i18n::t(web.lang, "refusal-recorded"));
            }
            errors.insert(field_of(f.code), text);
            let status = crate::web::problem::status(f.kind);
            match compose_view(&gateway, &web, &draft, lookups, errors, None).await {
                Ok(p) => render_status(status, &p),
                Err(r) => r,
            }
        }
    }
}
