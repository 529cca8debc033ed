//! Receipts (spec §3.7): every evidence of a sender's message, rendered when the sender
//! reads it, in the style of ETSI EN 319 532-3 (subject prefix, `REM-*` headers, the
//! evidence and its signature attached). Receipts are views: they are not stored, not
//! encrypted again, and create no evidence of their own (docs/decisions.md).

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};

use crate::address::EmailAddress;
use crate::crypto::armor_signature;
use crate::evidence::StoredEvidence;

/// One rendered receipt.
#[derive(Debug, Clone)]
pub struct Receipt {
    /// The evidence's event name.
    pub event: String,
    /// The evidence id.
    pub evidence_id: String,
    /// The recipient the evidence is about.
    pub recipient: String,
    /// The log index of the evidence (the receipts' page cursor).
    pub log_index: u64,
    /// `REM <Event>: <subject>`.
    pub subject: String,
    /// The `REM-*` header fields, in order.
    pub headers: Vec<(&'static str, String)>,
    /// The evidence record, canonical JSON.
    pub evidence: String,
    /// Its detached signature, ASCII-armoured.
    pub signature: String,
    /// The whole receipt as an RFC 5322 message.
    pub rfc5322: String,
}

/// Renders the receipts of a sender's message from its stored evidence.
pub fn render_receipts(
    issuer: &str,
    sender: &EmailAddress,
    subject: &str,
    records: &[StoredEvidence],
) -> Vec<Receipt> {
    records
        .iter()
        .map(|e| render(issuer, sender, subject, e))
        .collect()
}

fn render(issuer: &str, sender: &EmailAddress, subject: &str, e: &StoredEvidence) -> Receipt {
    let r = &e.record;
    let headers: Vec<(&'static str, String)> = vec![
        ("REM-EventIdentifier", r.event.to_string()),
        ("REM-Evidence-ID", r.evidence_id.to_string()),
        ("REM-DigestAlgorithm", "SHA-256".to_owned()),
        ("REM-DigestValue", r.message.sha256.to_string()),
        (
            "REM-UAMessageIdentifier",
            r.message
                .message_id
                .clone()
                .unwrap_or_else(|| r.message.gateway_id.clone()),
        ),
    ];
    let title = format!("REM {}: {subject}", r.event);
    let evidence = String::from_utf8_lossy(&e.canonical).into_owned();
    let signature = String::from_utf8_lossy(&armor_signature(&e.signature)).into_owned();
    let text = format!(
        "{event} ({reason}) for {recipient} at {time}.\r\n\
         The signed evidence is attached; check it with\r\n\
         gpg --verify evidence.json.asc evidence.json\r\n",
        event = r.event,
        reason = r.reason,
        recipient = r.recipient,
        time = crate::clock::rfc3339_ms(r.time.0),
    );
    let rfc5322 = message(
        issuer, sender, &title, &headers, text, &evidence, &signature,
    );
    Receipt {
        event: r.event.to_string(),
        evidence_id: r.evidence_id.to_string(),
        recipient: r.recipient.to_string(),
        log_index: e.log_index,
        subject: title,
        headers,
        evidence,
        signature,
        rfc5322,
    }
}

fn message(
    issuer: &str,
    sender: &EmailAddress,
    title: &str,
    headers: &[(&'static str, String)],
    text: String,
    evidence: &str,
    signature: &str,
) -> String {
    let from: Option<Mailbox> = format!("evidence@{issuer}").parse().ok();
    let to: Option<Mailbox> = sender.to_string().parse().ok();
    let (Some(from), Some(to)) = (from, to) else {
        return String::new();
    };
    let mut builder = lettre::Message::builder()
        .from(from)
        .to(to)
        .subject(title)
        .date_now();
    for (name, value) in headers {
        builder = builder.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str(name),
            value.clone(),
        ));
    }
    let json = ContentType::parse("application/json").ok();
    let sig = ContentType::parse("application/pgp-signature").ok();
    let (Some(json), Some(sig)) = (json, sig) else {
        return String::new();
    };
    let body = MultiPart::mixed()
        .singlepart(SinglePart::plain(text))
        .singlepart(Attachment::new("evidence.json".into()).body(evidence.to_owned(), json))
        .singlepart(Attachment::new("evidence.json.asc".into()).body(signature.to_owned(), sig));
    builder
        .multipart(body)
        .map(|m| String::from_utf8_lossy(&m.formatted()).into_owned())
        .unwrap_or_default()
}
