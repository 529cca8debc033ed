//! Legal staff's pages: evidence search (message id, sender, recipient, time range), the
//! ordered timeline of a message, a printable receipt per message and recipient, and the
//! audited bundle export. Who may see what (the legal role, its scope of offices) is
//! decided by `Gateway::search_evidence` and `Gateway::evidence_bundle`, exactly as for
//! the API; these pages show metadata and evidence only, never bodies or subjects.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use sha2::Digest;

use super::mail::{Step, event_key, steps};
use super::{Chrome, Web, i18n, render, render_status, size, when};
use crate::address::EmailAddress;
use crate::clock::parse_instant;
use crate::error::Classify;
use crate::evidence::StoredEvidence;
use crate::evidence::query::Search;
use crate::gateway::Gateway;
use crate::web::api::messages::download;

/// One search hit.
pub struct Hit {
    when: String,
    event: String,
    meaning: &'static str,
    gateway_id: String,
    sender: String,
    recipient: String,
}

#[derive(Template)]
#[template(path = "legal.html", config = "src/web/inbox/askama.toml")]
struct SearchPage {
    c: Chrome,
    q: SearchQuery,
    searched: bool,
    hits: Vec<Hit>,
    next: Option<String>,
    error: Option<(String, &'static str)>,
    scope: Vec<String>,
}

impl SearchPage {
    fn error_for(&self, field: &str) -> Option<&String> {
        self.error
            .as_ref()
            .filter(|(_, f)| *f == field)
            .map(|(m, _)| m)
    }
}

/// The search form (GET, so results can be bookmarked and paged).
#[derive(Debug, Default, Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    message: String,
    #[serde(default)]
    sender: String,
    #[serde(default)]
    recipient: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    until: String,
    after: Option<u64>,
}

impl SearchQuery {
    fn is_empty(&self) -> bool {
        [
            &self.message,
            &self.sender,
            &self.recipient,
            &self.from,
            &self.until,
        ]
        .iter()
        .all(|v| v.trim().is_empty())
    }

    /// The query string of this search, for the next page's link.
    fn link(&self, after: &str) -> String {
        let enc = |v: &str| {
            percent_encoding::utf8_percent_encode(v.trim(), percent_encoding::NON_ALPHANUMERIC)
                .to_string()
        };
        format!(
            "/legal?message={}&sender={}&recipient={}&from={}&until={}&after={after}",
            enc(&self.message),
            enc(&self.sender),
            enc(&self.recipient),
            enc(&self.from),
            enc(&self.until)
        )
    }
}

fn opt(v: &str) -> Option<&str> {
    Some(v.trim()).filter(|v| !v.is_empty())
}

/// The search in domain terms, or the field that is malformed.
fn parse(q: &SearchQuery) -> Result<Search, &'static str> {
    let address = |field: &'static str, v: &str| {
        opt(v)
            .map(EmailAddress::parse)
            .transpose()
            .map_err(|_| field)
    };
    let instant =
        |field: &'static str, v: &str| opt(v).map(|v| parse_instant(v).ok_or(field)).transpose();
    Ok(Search {
        message: opt(&q.message).map(str::to_owned),
        sender: address("sender", &q.sender)?,
        recipient: address("recipient", &q.recipient)?,
        from: instant("from", &q.from)?,
        until: instant("until", &q.until)?,
        after: q.after,
        limit: Some(50),
        ..Search::default()
    })
}

fn hit(e: &StoredEvidence) -> Hit {
    let r = &e.record;
    let event = r.event.to_string();
    Hit {
        when: when(r.time.0),
        meaning: event_key(&event),
        event,
        gateway_id: r.message.gateway_id.clone(),
        sender: r.sender.address.to_string(),
        recipient: r.recipient.to_string(),
    }
}

/// `GET /legal`: the search form and its results.
pub async fn search(
    State(gateway): State<Gateway>,
    web: Web,
    Query(q): Query<SearchQuery>,
) -> Response {
    let scope = match gateway.legal_scope(&web.caller).await {
        Ok(s) => s,
        Err(e) => return web.fail(&e.failure()),
    };
    let mut page = SearchPage {
        c: web.chrome("legal-title", "nav-evidence"),
        searched: false,
        hits: Vec::new(),
        next: None,
        error: None,
        scope,
        q: SearchQuery::default(),
    };
    if !q.is_empty() {
        match parse(&q) {
            Err(field) => {
                let key = if matches!(field, "from" | "until") {
                    "time-hint"
                } else {
                    "invalid-address"
                };
                page.error = Some((i18n::t(web.lang, key).to_owned(), field));
                page.q = q;
                return render_status(StatusCode::BAD_REQUEST, &page);
            }
            Ok(search) => match gateway.search_evidence(&web.caller, &search).await {
                Ok(found) => {
                    page.searched = true;
                    page.hits = found.items.iter().map(hit).collect();
                    page.next = found.next.map(|at| q.link(&at));
                }
                Err(e) => return web.fail(&e.failure()),
            },
        }
    }
    page.q = q;
    render(&page)
}

/// A chain's recipients and their records, for the message page.
pub struct Chain {
    recipient: String,
    steps: Vec<Step>,
}

#[derive(Template)]
#[template(path = "legal_message.html", config = "src/web/inbox/askama.toml")]
struct MessagePage {
    c: Chrome,
    gateway_id: String,
    sender: String,
    chains: Vec<Chain>,
}

/// `?id=`
#[derive(Debug, Deserialize)]
pub struct MessageQuery {
    #[serde(default)]
    id: String,
}

/// All records of one message the caller may see, oldest first.
async fn records_of(
    gateway: &Gateway,
    web: &Web,
    message: &str,
    recipient: Option<EmailAddress>,
) -> Result<Vec<StoredEvidence>, Response> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let search = Search {
            message: Some(message.to_owned()),
            recipient: recipient.clone(),
            after,
            limit: Some(1000),
            ..Search::default()
        };
        let page = gateway
            .search_evidence(&web.caller, &search)
            .await
            .map_err(|e| web.fail(&e.failure()))?;
        all.extend(page.items);
        match page.next.and_then(|n| n.parse().ok()) {
            Some(n) if all.len() < 100_000 => after = Some(n),
            _ => break,
        }
    }
    if all.is_empty() {
        return Err(web.fail(&crate::gateway::GatewayError::NotFound.failure()));
    }
    Ok(all)
}

/// `GET /legal/message?id=`: the ordered timeline of a message, per recipient.
pub async fn message(
    State(gateway): State<Gateway>,
    web: Web,
    Query(q): Query<MessageQuery>,
) -> Response {
    let records = match records_of(&gateway, &web, q.id.trim(), None).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let mut chains: Vec<Chain> = Vec::new();
    for e in &records {
        let recipient = e.record.recipient.to_string();
        let step = steps(std::slice::from_ref(e));
        match chains.iter_mut().find(|c| c.recipient == recipient) {
            Some(c) => c.steps.extend(step),
            None => chains.push(Chain {
                recipient,
                steps: step,
            }),
        }
    }
    let first = &records[0].record;
    render(&MessagePage {
        c: web.chrome("legal-message-title", "nav-evidence"),
        gateway_id: first.message.gateway_id.clone(),
        sender: first.sender.address.to_string(),
        chains,
    })
}

/// One record on the printable receipt.
pub struct ReceiptEvent {
    when: String,
    event: String,
    meaning: &'static str,
    reason: String,
    evidence_id: String,
    record_sha256: String,
    log_index: u64,
    detail: Option<String>,
}

/// An attachment on the receipt.
pub struct ReceiptAttachment {
    name: String,
    size: String,
    sha256: String,
}

#[derive(Template)]
#[template(path = "receipt.html", config = "src/web/inbox/askama.toml")]
struct ReceiptPage {
    c: Chrome,
    gateway_id: String,
    message_id: String,
    sender: String,
    sender_identity: String,
    sender_level: String,
    recipient: String,
    submitted: String,
    size: String,
    digest: String,
    attachments: Vec<ReceiptAttachment>,
    events: Vec<ReceiptEvent>,
    issuer: String,
    evidence_key: String,
}

/// `?message=&recipient=`
#[derive(Debug, Deserialize)]
pub struct ReceiptQuery {
    #[serde(default)]
    message: String,
    #[serde(default)]
    recipient: String,
}

/// `GET /legal/receipt`: a printable receipt of one message for one recipient: parties,
/// times, digests, events in plain words, the evidence key, how to verify.
pub async fn receipt(
    State(gateway): State<Gateway>,
    web: Web,
    Query(q): Query<ReceiptQuery>,
) -> Response {
    let Ok(recipient) = EmailAddress::parse(q.recipient.trim()) else {
        return web.fail(&crate::gateway::GatewayError::NotFound.failure());
    };
    let records = match records_of(&gateway, &web, q.message.trim(), Some(recipient)).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let first = &records[0].record;
    let m = &first.message;
    let s = &first.sender;
    let identity = if s.identity.verified {
        format!(
            "{} ({})",
            i18n::t(web.lang, "identity-verified"),
            s.identity.method.map(|m| m.to_string()).unwrap_or_default()
        )
    } else {
        i18n::t(web.lang, "identity-unverified").to_owned()
    };
    let evidence_key = first
        .issuer_key
        .clone()
        .unwrap_or_else(|| gateway.keys().evidence.fingerprint());
    render(&ReceiptPage {
        c: web.chrome("receipt-title", "nav-evidence"),
        gateway_id: m.gateway_id.clone(),
        message_id: m.message_id.clone().unwrap_or_default(),
        sender: s.address.to_string(),
        sender_identity: identity,
        sender_level: s.auth_level.to_string(),
        recipient: first.recipient.to_string(),
        submitted: when(first.submission_time.map_or(first.time.0, |t| t.0)),
        size: size(m.size),
        digest: m.sha256.to_string(),
        attachments: m
            .attachments
            .iter()
            .map(|a| ReceiptAttachment {
                name: a.name.clone(),
                size: size(a.size),
                sha256: a.sha256.to_string(),
            })
            .collect(),
        events: records
            .iter()
            .map(|e| {
                let r = &e.record;
                let event = r.event.to_string();
                ReceiptEvent {
                    when: when(r.time.0),
                    meaning: event_key(&event),
                    event,
                    reason: r.reason.to_string(),
                    evidence_id: r.evidence_id.to_string(),
                    record_sha256: hex::encode(sha2::Sha256::digest(&e.canonical)),
                    log_index: e.log_index,
                    detail: r.details.reply.clone().or_else(|| r.details.note.clone()),
                }
            })
            .collect(),
        issuer: first.issuer.clone(),
        evidence_key,
    })
}

/// The export form.
#[derive(Deserialize)]
pub struct BundleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    recipient: String,
}

/// `POST /legal/bundle`: exports a proof bundle (audited by the one export path).
pub async fn bundle(
    State(gateway): State<Gateway>,
    web: Web,
    Form(form): Form<BundleForm>,
) -> Response {
    if let Err(r) = web.check_csrf(&form.csrf, "/legal/bundle") {
        return r;
    }
    let recipient = opt(&form.recipient).and_then(|r| EmailAddress::parse(r).ok());
    match gateway
        .evidence_bundle(&web.caller, form.message.trim(), recipient.as_ref())
        .await
    {
        Ok(b) => download(
            b.bytes,
            "application/x-tar",
            &format!("{}.bundle.tar", form.message.trim()),
        ),
        Err(e) => {
            let f = e.failure();
            tracing::info!(code = f.code, "legal bundle export refused");
            web.fail(&f)
        }
    }
}
