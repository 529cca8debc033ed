//! Delivery status notifications (RFC 3464) that an office's mail server sends back for a
//! message bote relayed to it: which recipient failed, and for which message. Parsing only;
//! the evidence is recorded by the relay queue.

/// One failed recipient of a DSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The recipient (Final-Recipient, rfc822 type), lower-cased.
    pub recipient: String,
    /// The status code (`5.1.1`).
    pub status: String,
    /// The remote server's diagnostic, if given.
    pub diagnostic: Option<String>,
}

/// What a DSN says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    /// The server that reported (Reporting-MTA), if named.
    pub reporting_mta: Option<String>,
    /// The Message-ID of the message it is about (from the returned headers).
    pub message_id: String,
    /// The recipients whose delivery failed (Action: failed).
    pub failed: Vec<Failed>,
}

/// Octets of a DSN read at most: its report parts come first and are small; the message
/// returned after them (up to the gateway's size limit) is needed only for its headers.
const MAX_SCAN: usize = 256 * 1024;

/// Which part of the report a line is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Before the first part, or one that says nothing bote reads (the human-readable text).
    Other,
    /// `message/delivery-status`: the per-recipient fields.
    Status,
    /// `text/rfc822-headers` or `message/rfc822`: the returned message's header.
    Returned,
}

/// Parses `message` as a DSN; `None` if it is not one (or names no message). Fields count
/// only in their part: recipients in the delivery-status part, the Message-ID (the first)
/// in the returned header, so text quoted in the human-readable part changes nothing.
pub fn parse(message: &[u8]) -> Option<Dsn> {
    let text = String::from_utf8_lossy(&message[..message.len().min(MAX_SCAN)]);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let head = unfold(head);
    let content_type = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("content-type:"))?
        .to_ascii_lowercase();
    if !content_type.contains("multipart/report") || !content_type.contains("delivery-status") {
        return None;
    }
    let body = unfold(body);
    let field = |line: &str, name: &str| {
        line.split_once(':')
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let mut part = Part::Other;
    let mut reporting_mta = None;
    let mut message_id = None;
    let mut failed = Vec::new();
    let mut current: Option<Block> = None;
    for line in body.lines() {
        if line.starts_with("--") {
            flush(&mut current, &mut failed);
            part = Part::Other;
        } else if let Some(v) = field(line, "Content-Type").filter(|_| part == Part::Other) {
            let v = v.to_ascii_lowercase();
            if v.starts_with("message/delivery-status") {
                part = Part::Status;
            } else if v.starts_with("text/rfc822-headers") || v.starts_with("message/rfc822") {
                part = Part::Returned;
            }
        } else if part == Part::Returned {
            if let Some(v) = field(line, "Message-ID") {
                message_id.get_or_insert(v);
            }
        } else if part == Part::Status {
            status_field(line, &field, &mut reporting_mta, &mut current, &mut failed);
        }
    }
    flush(&mut current, &mut failed);
    Some(Dsn {
        reporting_mta,
        message_id: message_id?,
        failed,
    })
}

/// One line of the delivery-status part.
fn status_field(
    line: &str,
    field: &impl Fn(&str, &str) -> Option<String>,
    reporting_mta: &mut Option<String>,
    current: &mut Option<Block>,
    failed: &mut Vec<Failed>,
) {
    if let Some(v) = field(line, "Reporting-MTA") {
        *reporting_mta = Some(after_type(&v));
    } else if let Some(v) = field(line, "Final-Recipient") {
        flush(current, failed);
        *current = Some(Block {
            recipient: after_type(&v).to_ascii_lowercase(),
            ..Block::default()
        });
    } else if let Some(v) = field(line, "Action") {
        if let Some(c) = current.as_mut() {
            c.failed = v.eq_ignore_ascii_case("failed");
        }
    } else if let Some(v) = field(line, "Status") {
        if let Some(c) = current.as_mut() {
            c.status = Some(v);
        }
    } else if let Some(v) = field(line, "Diagnostic-Code")
        && let Some(c) = current.as_mut()
    {
        c.diagnostic = Some(after_type(&v));
    }
}

/// One per-recipient block of the delivery-status part.
#[derive(Default)]
struct Block {
    recipient: String,
    status: Option<String>,
    diagnostic: Option<String>,
    failed: bool,
}

fn flush(current: &mut Option<Block>, failed: &mut Vec<Failed>) {
    if let Some(b) = current.take().filter(|b| b.failed) {
        failed.push(Failed {
            recipient: b.recipient,
            status: b.status.unwrap_or_else(|| "5.0.0".into()),
            diagnostic: b.diagnostic,
        });
    }
}

/// `rfc822; amt@kreis.example` → `amt@kreis.example`.
fn after_type(value: &str) -> String {
    value
        .split_once(';')
        .map_or(value, |(_, v)| v)
        .trim()
        .to_owned()
}

/// Joins folded header lines (a line starting with white space continues the previous).
fn unfold(text: &str) -> String {
    text.replace("\r\n ", " ").replace("\r\n\t", " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DSN: &str = "From: MAILER-DAEMON@kreis.example\r\nTo: anna@lemgo.example\r\n\
        Message-ID: <dsn-1@kreis.example>\r\nContent-Type: multipart/report;\r\n \
        report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
        Zustellung fehlgeschlagen.\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n\
        Reporting-MTA: dns; mail.kreis.example\r\n\r\nFinal-Recipient: rfc822; Amt@kreis.example\r\n\
        Action: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 unbekannt\r\n\r\n\
        Final-Recipient: rfc822; other@kreis.example\r\nAction: delayed\r\nStatus: 4.0.0\r\n\
        \r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <orig-7@lemgo.example>\r\n\
        Subject: ...\r\n--b--\r\n";

    #[test]
    fn failed_recipients_and_the_original_message_are_found() {
        let dsn = parse(DSN.as_bytes()).unwrap();
        assert_eq!(dsn.message_id, "<orig-7@lemgo.example>");
        assert_eq!(dsn.reporting_mta.as_deref(), Some("mail.kreis.example"));
        assert_eq!(
            dsn.failed,
            vec![Failed {
                recipient: "amt@kreis.example".into(),
                status: "5.1.1".into(),
                diagnostic: Some("550 5.1.1 unbekannt".into()),
            }]
        );
        assert!(parse(b"From: x@y.example\r\nSubject: hi\r\n\r\nhello\r\n").is_none());
    }

    #[test]
    fn fields_count_only_in_their_part() {
        // The human-readable part quotes a recipient block and a Message-ID: neither counts.
        let quoting = DSN.replace(
            "Zustellung fehlgeschlagen.\r\n",
            "Zustellung fehlgeschlagen.\r\nFinal-Recipient: rfc822; x@kreis.example\r\n\
             Action: failed\r\nMessage-ID: <other@lemgo.example>\r\n",
        );
        let dsn = parse(quoting.as_bytes()).unwrap();
        assert_eq!(dsn.message_id, "<orig-7@lemgo.example>");
        assert_eq!(dsn.failed.len(), 1);
        assert_eq!(dsn.failed[0].recipient, "amt@kreis.example");
        // A returned header with two Message-IDs: the first.
        let two = DSN.replace(
            "Subject: ...",
            "Message-ID: <second@lemgo.example>\r\nSubject: ...",
        );
        assert_eq!(
            parse(two.as_bytes()).unwrap().message_id,
            "<orig-7@lemgo.example>"
        );
    }
}
