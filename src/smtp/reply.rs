//! SMTP replies (RFC 5321 §4.2, enhanced status codes RFC 3463), and the one mapping from a
//! core [`Failure`] to a reply (DESIGN-NOTES §6).

use crate::error::{ErrorKind, Failure};

/// One reply: code, enhanced status, text (one line; CR and LF are never in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The enhanced status code (`2.0.0`), if any.
    pub status: Option<&'static str>,
    /// The text.
    pub text: String,
}

impl Reply {
    /// A reply with an enhanced status code.
    pub fn new(code: u16, status: &'static str, text: impl Into<String>) -> Self {
        Self {
            code,
            status: Some(status),
            text: one_line(&text.into()),
        }
    }

    /// A reply of several lines (EHLO), without enhanced codes.
    pub fn lines(code: u16, lines: &[String]) -> Self {
        Self {
            code,
            status: None,
            text: lines
                .iter()
                .map(|l| one_line(l))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// A bare continuation (AUTH) with `text` as it is (base64).
    pub fn continuation(text: &str) -> Self {
        Self {
            code: 334,
            status: None,
            text: one_line(text),
        }
    }

    /// The wire form: CRLF-terminated lines, `code-` before all but the last.
    pub fn to_wire(&self) -> Vec<u8> {
        let lines: Vec<&str> = self.text.split('\n').collect();
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            match self.status {
                Some(s) => out.push_str(&format!("{}{sep}{s} {line}\r\n", self.code)),
                None => out.push_str(&format!("{}{sep}{line}\r\n", self.code)),
            }
        }
        out.into_bytes()
    }

    /// Whether the reply closes the transaction for good (5xx).
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(400)
        .collect()
}

/// The reply for a failure of the core (submission, recipient resolution, auth).
pub fn for_failure(f: &Failure) -> Reply {
    let detail = f.detail.clone().unwrap_or_else(|| f.title.to_owned());
    let evidence = f
        .evidence
        .as_ref()
        .map(|id| format!(" (evidence {id})"))
        .unwrap_or_default();
    let text = format!("{detail}{evidence}");
    match (f.kind, f.code) {
        (_, "busy") => Reply::new(452, "4.3.1", text),
        (_, "too-many-recipients") => Reply::new(452, "4.5.3", text),
        (_, "quota-exceeded") => Reply::new(550, "5.7.1", text),
        (_, "malware") => Reply::new(554, "5.7.1", text),
        (_, "sender-mismatch") => Reply::new(553, "5.7.1", text),
        (_, "unknown-recipient") => Reply::new(550, "5.1.1", text),
        (ErrorKind::TooLarge, _) => Reply::new(552, "5.3.4", text),
        (ErrorKind::NotFound, _) => Reply::new(550, "5.1.1", text),
        (ErrorKind::Invalid | ErrorKind::Unprocessable, _) => Reply::new(554, "5.6.0", text),
        (ErrorKind::Forbidden | ErrorKind::Conflict, _) => Reply::new(550, "5.7.1", text),
        (ErrorKind::Unauthenticated, _) => Reply::new(535, "5.7.8", text),
        (ErrorKind::RateLimited, _) => Reply::new(450, "4.7.1", text),
        (ErrorKind::Unavailable | ErrorKind::Internal, _) => Reply::new(
            451,
            "4.3.0",
            "temporary failure of the gateway, try again later",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_one_crlf_line_and_failures_map_to_their_codes() {
        let r = Reply::new(250, "2.0.0", "ok\r\n550 injected");
        assert_eq!(r.to_wire(), b"250 2.0.0 ok  550 injected\r\n");
        let busy = Failure::new(ErrorKind::Unavailable, "busy", "Busy");
        assert_eq!(for_failure(&busy).code, 452);
        let big = Failure::new(ErrorKind::TooLarge, "too-large", "Too large").evidence("m1");
        let reply = for_failure(&big);
        assert_eq!((reply.code, reply.status), (552, Some("5.3.4")));
        assert!(reply.text.contains("evidence m1"));
        let internal = Failure::new(ErrorKind::Internal, "internal", "Internal");
        assert_eq!(for_failure(&internal).code, 451);
    }
}
