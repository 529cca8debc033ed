//! The submission policy of spec §2, in order: size, recipient count, From = sender, every
//! recipient registered, the options, the citizen quota or the office rate. A refusal of a complete,
//! authenticated submission is recorded as SubmissionRejection before the sender hears of it.

use super::assemble::Prepared;
use super::rate::Rates;
use super::recipients::{Recipient, resolve};
use super::{Pipeline, Refusal, SubmitError, Submitter};
use crate::accounts::{AuthLevel, MailboxKind};
use crate::address::EmailAddress;
use crate::crypto::endtoend;
use crate::evidence::record::{ChainLink, Fact, Head};
use crate::evidence::{self, Details, Event, EvidenceRecord, ReasonCode};
use crate::message::Options;
use crate::store::messages as repo;

impl Pipeline {
    /// Policy checks in spec order; resolves recipients.
    pub(super) async fn check(
        &self,
        from: &Submitter,
        (recipients, known): (&[EmailAddress], &[Recipient]),
        prepared: &Prepared,
        options: Options,
        now: i64,
    ) -> Result<Vec<Recipient>, CheckError> {
        let limits = &self.config.limits;
        if let Some((refusal, detail)) = &prepared.over_limit {
            return Err(rejected(*refusal, ReasonCode::Policy, detail.clone()));
        }
        if recipients.len() > limits.max_recipients as usize {
            return Err(rejected(
                Refusal::TooManyRecipients,
                ReasonCode::Policy,
                format!(
                    "{} recipients: at most {} per message",
                    recipients.len(),
                    limits.max_recipients
                ),
            ));
        }
        if let Some(parsed_from) = &prepared.from
            && !parsed_from.eq_ignore_ascii_case(&from.mailbox.address.to_string())
        {
            return Err(rejected(
                Refusal::ForgedFrom,
                ReasonCode::Policy,
                format!(
                    "the From address {parsed_from} is not the sender's address {}",
                    from.mailbox.address
                ),
            ));
        }
        let asked_id = self.message_id_to_look_up(prepared)?;
        let office = (from.mailbox.kind != MailboxKind::Citizen).then_some(from.mailbox.id);
        let sender_key = from.mailbox.address.key();
        let reads = repo::lookup_sender_reads(&self.store, &sender_key, asked_id, office)
            .await
            .map_err(fail)?;
        if let (Some(id), Some(earlier)) = (asked_id, &reads.earlier) {
            return Err(rejected(
                Refusal::DuplicateMessageId,
                ReasonCode::Policy,
                format!(
                    "you sent a message with the Message-ID {id} already: gateway id {earlier}"
                ),
            ));
        }
        let mut resolved = Vec::with_capacity(recipients.len());
        for address in recipients {
            let key = address.key();
            let found = match known.iter().find(|r| r.mailbox.address.key() == key) {
                Some(r) => Some(r.clone()),
                None => resolve(&self.store, address)
                    .await
                    .map_err(CheckError::Failed)?,
            };
            match found {
                Some(r) => resolved.push(r),
                None => {
                    return Err(rejected(
                        Refusal::UnknownRecipient,
                        ReasonCode::UnknownRecipient,
                        format!("{address} is not a mailbox reachable through this gateway"),
                    ));
                }
            }
        }
        check_options(from, &resolved, options)?;
        check_readable(prepared, &resolved)?;
        if quota_limited(from) {
            let day_ago = now - 24 * 60 * 60 * 1000;
            let mut conn = self.store.reader().await.map_err(fail)?;
            let sent = repo::sent_since(&mut conn, &from.mailbox.address.key(), day_ago)
                .await
                .map_err(fail)?;
            conn.release();
            let wanted = i64::try_from(recipients.len()).unwrap_or(i64::MAX);
            if sent.messages >= i64::from(limits.citizen_daily_messages)
                || sent.recipients + wanted > i64::from(limits.citizen_daily_recipients)
            {
                // The window frees its oldest message first.
                let frees_at = sent.oldest.map_or(now, |t| t + 24 * 60 * 60 * 1000);
                let retry_after = u64::try_from((frees_at - now).max(1000) / 1000).ok();
                return Err(CheckError::Rejected(Rejection {
                    refusal: Refusal::QuotaExceeded,
                    reason: ReasonCode::QuotaExceeded,
                    detail: format!(
                        "daily limit reached: at most {} messages and {} recipients per 24 hours \
                         at authentication level normal (log in with a second factor to lift it)",
                        limits.citizen_daily_messages, limits.citizen_daily_recipients
                    ),
                    retry_after,
                }));
            }
        }
        if office.is_some() {
            self.check_office_rate(from, &reads, recipients.len())?;
        }
        Ok(resolved)
    }

    /// An office mailbox's hourly send rate, its own or the configured default.
    fn check_office_rate(
        &self,
        from: &Submitter,
        own_rates: &repo::SenderReads,
        recipients: usize,
    ) -> Result<(), CheckError> {
        let limits = &self.config.limits;
        let own = |v: Option<i64>, default: u32| {
            v.map_or(default, |v| u32::try_from(v).unwrap_or(u32::MAX))
        };
        let rates = Rates {
            messages: own(own_rates.messages_per_hour, limits.office_messages_per_hour),
            recipients: own(
                own_rates.recipients_per_hour,
                limits.office_recipients_per_hour,
            ),
        };
        let count = u32::try_from(recipients).unwrap_or(u32::MAX);
        self.rates
            .check(from.mailbox.id, rates, count)
            .map_err(|over| {
                CheckError::Rejected(Rejection {
                    refusal: Refusal::RateLimited,
                    reason: ReasonCode::QuotaExceeded,
                    detail: over.detail,
                    retry_after: Some(over.retry_after.as_secs().max(1)),
                })
            })
    }

    /// A Message-ID in the gateway's own domains must be one the gateway assigned, and a
    /// sender's Message-IDs are unique: evidence found by Message-ID is then always one
    /// sender's one message (a resubmission after a lost reply is told the first id).
    /// Refuses a reserved one; returns the Message-ID whose uniqueness is to be looked up.
    fn message_id_to_look_up<'p>(
        &self,
        prepared: &'p Prepared,
    ) -> Result<Option<&'p str>, CheckError> {
        let Some(id) = &prepared.message_id else {
            return Ok(None);
        };
        if prepared.message_id_assigned {
            return Ok(None);
        }
        if is_gateway_form(id, &self.config.gateway.domains) {
            return Err(rejected(
                Refusal::ReservedMessageId,
                ReasonCode::Policy,
                format!(
                    "the Message-ID {id} has the form of the ids this gateway assigns \
                     (<32 hex digits@its domain>) but was not assigned to this message; leave \
                     the Message-ID out (the gateway assigns one) or choose another"
                ),
            ));
        }
        Ok(Some(id))
    }

    /// Records SubmissionRejection for every named recipient, then returns the refusal.
    pub(super) async fn reject(
        &self,
        mut head: Head,
        recipients: &[EmailAddress],
        rejection: Rejection,
    ) -> SubmitError {
        // A refused Message-ID is not repeated in evidence: a search by it finds only the
        // message that owns it.
        if matches!(
            rejection.refusal,
            Refusal::ReservedMessageId | Refusal::DuplicateMessageId
        ) {
            head.message.message_id = None;
        }
        let gateway_id = head.message.gateway_id.clone();
        // A submission naming thousands of recipients gets a bounded number of records.
        let cap = self.config.limits.max_recipients as usize + 1;
        let records: Vec<EvidenceRecord> = recipients
            .iter()
            .take(cap)
            .map(|r| {
                let fact = Fact {
                    event: Event::SubmissionRejection,
                    reason: rejection.reason,
                    recipient: r.clone(),
                    recipient_identity: None,
                    details: Details {
                        reply: Some(rejection.detail.clone()),
                        ..Details::default()
                    },
                    time: head.submission_time,
                };
                head.record(fact, ChainLink::first())
            })
            .collect();
        metrics::counter!("bote_messages_rejected_total").increment(1);
        let signed = match evidence::sign_async(self.keys.evidence.clone(), records).await {
            Ok(s) => s,
            Err(e) => return e.into(),
        };
        if let Err(e) = self.writer.commit(signed, None).await {
            return e.into();
        }
        SubmitError::Refused {
            refusal: rejection.refusal,
            detail: rejection.detail,
            gateway_id,
            retry_after: rejection.retry_after,
        }
    }
}

/// The form of the Message-IDs the gateway assigns: `<gateway id@served domain>`, the
/// gateway id being 32 lower-case hex digits. Only this form is reserved: offices may use
/// their (the gateway's) domain with any other left-hand side.
fn is_gateway_form(id: &str, domains: &[crate::address::DomainName]) -> bool {
    let Some((left, right)) = id
        .strip_prefix('<')
        .and_then(|i| i.strip_suffix('>'))
        .and_then(|i| i.split_once('@'))
    else {
        return false;
    };
    left.len() == 32
        && left.bytes().all(|b| b.is_ascii_hexdigit())
        && domains
            .iter()
            .any(|d| d.as_str().eq_ignore_ascii_case(right))
}

/// Citizens at level `normal` have a daily quota (spec §2).
pub(super) fn quota_limited(from: &Submitter) -> bool {
    from.mailbox.kind == MailboxKind::Citizen && from.auth_level != AuthLevel::High
}

pub(super) struct Rejection {
    refusal: Refusal,
    reason: ReasonCode,
    detail: String,
    retry_after: Option<u64>,
}

pub(super) enum CheckError {
    Rejected(Rejection),
    Failed(SubmitError),
}

fn rejected(refusal: Refusal, reason: ReasonCode, detail: String) -> CheckError {
    CheckError::Rejected(Rejection {
        refusal,
        reason,
        detail,
        retry_after: None,
    })
}

fn fail(e: impl Into<SubmitError>) -> CheckError {
    CheckError::Failed(e.into())
}

fn check_options(
    from: &Submitter,
    recipients: &[Recipient],
    options: Options,
) -> Result<(), CheckError> {
    let refuse = |detail: &str| {
        Err(rejected(
            Refusal::OptionNotAllowed,
            ReasonCode::Policy,
            detail.to_owned(),
        ))
    };
    if options.authoritative {
        if from.auth_level != AuthLevel::High {
            return refuse(
                "authoritative needs authentication level high (log in with a second factor)",
            );
        }
        if from.mailbox.identity.verification.is_none() {
            return refuse("authoritative needs a verified sender identity");
        }
    }
    if options.retrieval_confirmation && from.mailbox.kind == MailboxKind::Citizen {
        return refuse("retrieval_confirmation can only be requested by offices");
    }
    if options.personal
        && let Some(r) = recipients
            .iter()
            .find(|r| r.mailbox.kind == MailboxKind::External)
    {
        return Err(rejected(
            Refusal::OptionNotAllowed,
            ReasonCode::Policy,
            format!(
                "{} is relayed to an external mail server and cannot receive personal messages",
                r.mailbox.address
            ),
        ));
    }
    Ok(())
}

/// Content the sender encrypted end to end must name a key of every recipient: otherwise
/// nobody there could read it, and a "delivery" or "pickup" of it would prove nothing.
/// Anonymous session keys cannot be checked and pass.
fn check_readable(prepared: &Prepared, recipients: &[Recipient]) -> Result<(), CheckError> {
    let Some(named) = &prepared.encrypted_to else {
        return Ok(());
    };
    let unreadable: Vec<String> = recipients
        .iter()
        .filter(|r| endtoend::readable_by(named, &r.cert) == endtoend::Readable::No)
        .map(|r| {
            format!(
                "{} (key {})",
                r.mailbox.address,
                r.cert.fingerprint().to_hex()
            )
        })
        .collect();
    if unreadable.is_empty() {
        return Ok(());
    }
    Err(rejected(
        Refusal::UnreadableByRecipient,
        ReasonCode::Policy,
        format!(
            "the content is encrypted end to end, but not to a key of {}: encrypt it to the \
             recipient's published certificate (WKD or /api/v1/directory)",
            unreadable.join(", ")
        ),
    ))
}

/// Parses and de-duplicates recipients. Far more than `max` recipients is not a message
/// but an attack on the parser: refused before any work, without evidence (up to ten
/// times `max` gets the regular refusal with evidence in the checks).
pub(super) fn parse_recipients(
    raw: &[String],
    max: usize,
) -> Result<Vec<EmailAddress>, SubmitError> {
    if raw.is_empty() {
        return Err(SubmitError::NoRecipients);
    }
    if raw.len() > max.saturating_mul(10) {
        return Err(SubmitError::RecipientFlood {
            count: raw.len(),
            max,
        });
    }
    let mut seen = std::collections::HashSet::with_capacity(raw.len());
    let mut out: Vec<EmailAddress> = Vec::with_capacity(raw.len());
    for r in raw {
        let address = EmailAddress::parse(r).map_err(|reason| SubmitError::Recipient {
            given: r.clone(),
            reason,
        })?;
        if seen.insert(address.key()) {
            out.push(address);
        }
    }
    Ok(out)
}
