//! RFC 5322 / MIME: parsing with mail-parser, composing with lettre's builder, and the RFC
//! 3156 PGP/MIME envelope for relays to external offices.

use lettre::message::header::{ContentDisposition, ContentTransferEncoding, ContentType};
use lettre::message::{Attachment, Body, Mailbox, MultiPart, SinglePart};
use mail_parser::{MessageParser, MimeHeaders};

use super::{NewAttachment, Parsed, Part};
use crate::address::EmailAddress;

/// Why content is not an acceptable message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MimeError {
    /// Not an RFC 5322 message.
    #[error("not an RFC 5322 message: {0}")]
    Malformed(&'static str),
    /// An attachment's MIME type does not parse.
    #[error("attachment `{name}`: `{content_type}` is not a MIME type")]
    ContentType {
        /// File name.
        name: String,
        /// The type given.
        content_type: String,
    },
    /// An attachment without a usable name.
    #[error("attachment names must be 1 to 255 characters without control characters or slashes")]
    AttachmentName,
    /// A header value lettre refuses (e.g. an address it cannot encode).
    #[error("cannot compose message: {0}")]
    Compose(String),
}

fn mailbox(address: &EmailAddress) -> Result<Mailbox, MimeError> {
    address
        .to_string()
        .parse()
        .map_err(|e: lettre::address::AddressError| MimeError::Compose(e.to_string()))
}

/// Composes a message from parts (CRLF line ends).
pub fn compose(
    from: &EmailAddress,
    to: &[EmailAddress],
    message_id: &str,
    subject: &str,
    text: &str,
    attachments: &[NewAttachment],
) -> Result<Vec<u8>, MimeError> {
    let mut builder = lettre::Message::builder()
        .from(mailbox(from)?)
        .subject(subject)
        .message_id(Some(message_id.to_owned()))
        .date_now();
    for r in to {
        builder = builder.to(mailbox(r)?);
    }
    let body = SinglePart::plain(crlf(text));
    let message = if attachments.is_empty() {
        builder.singlepart(body)
    } else {
        let mut mixed = MultiPart::mixed().singlepart(body);
        for a in attachments {
            check_attachment_name(&a.name)?;
            let content_type =
                ContentType::parse(&a.content_type).map_err(|_| MimeError::ContentType {
                    name: a.name.clone(),
                    content_type: a.content_type.clone(),
                })?;
            mixed = mixed
                .singlepart(Attachment::new(a.name.clone()).body(a.data.clone(), content_type));
        }
        builder.multipart(mixed)
    }
    .map_err(|e| MimeError::Compose(e.to_string()))?;
    Ok(message.formatted())
}

/// `text` with a carriage return before every line feed that lacks one, in one pass. lettre
/// does the same when given text with bare line feeds, but by inserting into the string,
/// which moves the rest of the text once per line: quadratic, a quarter of the CPU of
/// relaying 100 KiB messages (the armoured payload has bare LFs), and seconds for a few
/// megabytes of text typed with LF line ends.
fn crlf(text: &str) -> String {
    String::from_utf8(crlf_bytes(text.as_bytes()))
        .expect("a carriage return before a line feed keeps UTF-8 valid")
}

/// [`crlf_bytes`] for bytes the caller gives up: returned as they are when every line
/// feed already follows a carriage return (bote's own armour), saving a copy.
fn crlf_owned(bytes: Vec<u8>) -> Vec<u8> {
    if memchr::memchr_iter(b'\n', &bytes).all(|at| at > 0 && bytes[at - 1] == b'\r') {
        bytes
    } else {
        crlf_bytes(&bytes)
    }
}

/// [`crlf`] for bytes.
fn crlf_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32 + 2);
    let mut from = 0;
    // memchr: a byte-wise split was 1.6 % of the CPU of a relayed 100 KiB message.
    for at in memchr::memchr_iter(b'\n', bytes) {
        let line = &bytes[from..at];
        out.extend_from_slice(line);
        if line.last() != Some(&b'\r') {
            out.push(b'\r');
        }
        out.push(b'\n');
        from = at + 1;
    }
    out.extend_from_slice(&bytes[from..]);
    out
}

fn check_attachment_name(name: &str) -> Result<(), MimeError> {
    let ok = !name.trim().is_empty()
        && name.chars().count() <= 255
        && !name
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\');
    if ok {
        Ok(())
    } else {
        Err(MimeError::AttachmentName)
    }
}

/// One attachment as evidence records it: name, size and SHA-256 of the decoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentFacts {
    /// File name (`attachment-N` when the message gives none).
    pub name: String,
    /// Decoded size.
    pub size: u64,
    /// SHA-256 of the decoded bytes.
    pub sha256: [u8; 32],
}

/// How large a message's MIME structure is (spec §2: parts, nesting and headers are
/// bounded). Nested `message/rfc822` parts count with everything inside them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Structure {
    /// MIME parts, the root included.
    pub parts: usize,
    /// Deepest nesting: 1 for a single-part message, 2 for a multipart with leaves, …
    pub depth: usize,
    /// Header fields of every part together.
    pub header_fields: usize,
}

/// How much of an encrypted payload is kept to read its session-key packets.
pub const ENCRYPTED_HEAD: usize = 256 * 1024;

/// Longest Message-ID accepted, in octets (with the angle brackets).
pub const MAX_MESSAGE_ID: usize = 250;
/// Longest attachment name kept in evidence, in characters; longer names are cut there.
pub const MAX_ATTACHMENT_NAME: usize = 255;

/// What the gateway records about submitted content, without copying any of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The Message-ID, with angle brackets.
    pub message_id: Option<String>,
    /// The first From address.
    pub from: String,
    /// Attachments (none for end-to-end encrypted content: the gateway cannot see them).
    pub attachments: Vec<AttachmentFacts>,
    /// The content is an RFC 3156 encrypted message.
    pub end_to_end: bool,
    /// For an encrypted message, the start of its OpenPGP payload (up to
    /// [`ENCRYPTED_HEAD`] bytes): enough for the session-key packets that say whom it is for.
    pub encrypted_head: Option<Vec<u8>>,
    /// The size of its MIME structure.
    pub structure: Structure,
}

/// Measures the MIME structure without recursion (a deeply nested message cannot
/// exhaust the stack).
fn structure(message: &mail_parser::Message<'_>) -> Structure {
    let mut out = Structure::default();
    let mut stack: Vec<(&mail_parser::Message<'_>, u32, usize)> = vec![(message, 0, 1)];
    while let Some((msg, id, depth)) = stack.pop() {
        let Some(part) = msg.part(id) else { continue };
        out.parts += 1;
        out.depth = out.depth.max(depth);
        out.header_fields += part.headers.len();
        match &part.body {
            mail_parser::PartType::Multipart(children) => {
                stack.extend(children.iter().map(|c| (msg, *c, depth + 1)));
            }
            mail_parser::PartType::Message(nested) => stack.push((nested, 0, depth + 1)),
            _ => {}
        }
    }
    out
}

/// The facts of a submitted message; it must parse and name a From address.
pub fn facts(bytes: &[u8]) -> Result<Facts, MimeError> {
    // A message that is one plain-text part has no attachments and no structure beyond its
    // header; parsing all of it would only have mail-parser decode the body into a string
    // that nothing here reads (120 µs of a 100 KiB message's ~2.4 ms here).
    let head = parse_header_section(bytes)?;
    if is_one_text_part(&head) {
        facts_of(head)
    } else {
        facts_of(parse_message(bytes)?)
    }
}

/// Whether mail-parser would read the message as one inline text/plain part: no
/// Content-Type (which means text/plain) or text/plain, and not marked as an attachment.
fn is_one_text_part(head: &mail_parser::Message<'_>) -> bool {
    let root = head.root_part();
    let plain = root.content_type().is_none_or(|ct| {
        ct.ctype().eq_ignore_ascii_case("text")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("plain"))
    });
    let attachment = root
        .content_disposition()
        .is_some_and(|d| d.is_attachment());
    plain && !attachment
}

fn facts_of(message: mail_parser::Message<'_>) -> Result<Facts, MimeError> {
    use sha2::Digest as _;
    let from_headers = message
        .headers()
        .iter()
        .filter(|h| h.name == mail_parser::HeaderName::From)
        .count();
    let from_addresses = message.from().map_or(0, |a| a.iter().count());
    if from_headers > 1 || from_addresses > 1 {
        return Err(MimeError::Malformed("more than one From address"));
    }
    let from = first_from(&message).ok_or(MimeError::Malformed("no From address"))?;
    let encrypted_head =
        encrypted_payload(&message).map(|p| p[..p.len().min(ENCRYPTED_HEAD)].to_vec());
    let end_to_end = encrypted_head.is_some();
    let attachments = if end_to_end {
        Vec::new()
    } else {
        message
            .attachments()
            .enumerate()
            .map(|(i, part)| AttachmentFacts {
                name: part_name(i, part)
                    .chars()
                    .take(MAX_ATTACHMENT_NAME)
                    .collect(),
                size: part.contents().len() as u64,
                sha256: sha2::Sha256::digest(part.contents()).into(),
            })
            .collect()
    };
    let message_id = message.message_id().map(|id| format!("<{id}>"));
    if message_id
        .as_ref()
        .is_some_and(|id| id.len() > MAX_MESSAGE_ID)
    {
        return Err(MimeError::Malformed(
            "the Message-ID is longer than 250 characters",
        ));
    }
    Ok(Facts {
        message_id,
        from,
        attachments,
        end_to_end,
        encrypted_head,
        structure: structure(&message),
    })
}

/// Checks the header section and parses the whole message.
fn parse_message(bytes: &[u8]) -> Result<mail_parser::Message<'_>, MimeError> {
    parse(bytes, false)
}

/// Checks the header section and parses it alone (the body is not read).
fn parse_header_section(bytes: &[u8]) -> Result<mail_parser::Message<'_>, MimeError> {
    parse(bytes, true)
}

fn parse(bytes: &[u8], header_only: bool) -> Result<mail_parser::Message<'_>, MimeError> {
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| bytes.windows(2).position(|w| w == b"\n\n"))
        .ok_or(MimeError::Malformed(
            "no blank line ends the header section",
        ))?;
    if std::str::from_utf8(&bytes[..head_end]).is_err() {
        return Err(MimeError::Malformed(
            "the header section is not valid UTF-8",
        ));
    }
    let parser = MessageParser::default();
    if header_only {
        parser.parse_headers(bytes)
    } else {
        parser.parse(bytes)
    }
    .ok_or(MimeError::Malformed("no header fields"))
}

fn first_from(message: &mail_parser::Message<'_>) -> Option<String> {
    message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(str::to_owned)
}

fn part_name(index: usize, part: &mail_parser::MessagePart<'_>) -> String {
    part.attachment_name()
        .map_or_else(|| format!("attachment-{}", index + 1), str::to_owned)
}

/// Parses a message or MIME entity for a reader: identifiers, subject, bodies, decoded
/// attachments, and whether it is an RFC 3156 encrypted message (then its armoured payload
/// is in `end_to_end`).
pub fn parse_entity(bytes: &[u8]) -> Result<Parsed, MimeError> {
    let message = parse_message(bytes)?;
    let end_to_end = encrypted_payload(&message).map(<[u8]>::to_vec);
    let attachments = if end_to_end.is_some() {
        Vec::new()
    } else {
        message
            .attachments()
            .enumerate()
            .map(|(i, part)| Part {
                name: part_name(i, part),
                content_type: part.content_type().map_or_else(
                    || "application/octet-stream".to_owned(),
                    |c| match c.subtype() {
                        Some(sub) => format!("{}/{}", c.ctype(), sub),
                        None => c.ctype().to_owned(),
                    },
                ),
                data: part.contents().to_vec(),
            })
            .collect()
    };
    Ok(Parsed {
        message_id: message.message_id().map(|id| format!("<{id}>")),
        from: first_from(&message),
        subject: message.subject().map(str::to_owned),
        text: message.body_text(0).map(|t| t.into_owned()),
        html: html_body(&message),
        attachments,
        end_to_end,
    })
}

/// The first real HTML body: mail-parser's `body_html` also renders a plain-text body as
/// HTML, which is not a message with HTML.
fn html_body(message: &mail_parser::Message<'_>) -> Option<String> {
    message
        .html_body
        .iter()
        .filter_map(|id| message.part(*id))
        .find_map(|part| match &part.body {
            mail_parser::PartType::Html(html) => Some(html.to_string()),
            _ => None,
        })
}

/// The armoured OpenPGP payload of an RFC 3156 `multipart/encrypted` message.
fn encrypted_payload<'m>(message: &'m mail_parser::Message<'_>) -> Option<&'m [u8]> {
    let root = message.root_part();
    let ct = root.content_type()?;
    let is_pgp = ct.ctype().eq_ignore_ascii_case("multipart")
        && ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("encrypted"))
        && ct
            .attribute("protocol")
            .is_some_and(|p| p.eq_ignore_ascii_case("application/pgp-encrypted"));
    if !is_pgp {
        return None;
    }
    let parts = root.sub_parts()?;
    let payload = message.part(*parts.get(1)?)?;
    Some(payload.contents())
}

/// Marks a relay payload stored in parts ([`pgp_mime_stored`]). A NUL first: no RFC 5322
/// message (a payload stored whole, as before this format) starts with one.
const STORED_PARTS: &[u8; 8] = b"\0bote-p1";

/// Stands for the encrypted part's body while the envelope is composed; the last
/// occurrence is the body (a header field before it may hold anything, the closing
/// boundary after it is random).
const BODY_MARK: &str = "BOTE-ENCRYPTED-PART-BODY\r\n";

/// The RFC 3156 message of [`pgp_mime`] as the relay queue stores it: the text before and
/// after the encrypted part's body, with `binary` (the OpenPGP message) between them
/// unarmoured. Armour is a third larger, and a payload is written, checkpointed, read back
/// and deleted by the database before it is sent; it is armoured as it leaves
/// ([`stored_pgp_mime_parts`]).
pub fn pgp_mime_stored(
    from: &EmailAddress,
    to: &EmailAddress,
    message_id: &str,
    binary: &[u8],
) -> Result<Vec<u8>, MimeError> {
    let framed = pgp_mime(from, to, message_id, BODY_MARK.as_bytes().to_vec())?;
    let at = framed
        .windows(BODY_MARK.len())
        .rposition(|w| w == BODY_MARK.as_bytes())
        .ok_or_else(|| MimeError::Compose("the encrypted part's body went missing".into()))?;
    let (head, rest) = framed.split_at(at);
    let tail = &rest[BODY_MARK.len()..];
    let length = |n: usize| {
        u32::try_from(n)
            .map(u32::to_be_bytes)
            .map_err(|_| MimeError::Compose("a relay payload of 4 GiB or more".into()))
    };
    let mut stored = Vec::with_capacity(STORED_PARTS.len() + 8 + framed.len() + binary.len());
    stored.extend_from_slice(STORED_PARTS);
    stored.extend_from_slice(&length(head.len())?);
    stored.extend_from_slice(head);
    stored.extend_from_slice(&length(binary.len())?);
    stored.extend_from_slice(binary);
    stored.extend_from_slice(tail);
    Ok(stored)
}

/// The parts of a payload that [`pgp_mime_stored`] made: the text before the encrypted
/// part's body, the OpenPGP message to armour into it, and the text after; `None` for a
/// payload stored whole (the message to send as it is).
pub fn stored_pgp_mime_parts(stored: &[u8]) -> Result<Option<[&[u8]; 3]>, MimeError> {
    let Some(rest) = stored.strip_prefix(STORED_PARTS) else {
        return Ok(None);
    };
    let (head, rest) = length_prefixed(rest)?;
    let (binary, tail) = length_prefixed(rest)?;
    Ok(Some([head, binary, tail]))
}

/// The octets a 4-octet big-endian length names at the start of `bytes`, and the rest.
fn length_prefixed(bytes: &[u8]) -> Result<(&[u8], &[u8]), MimeError> {
    let malformed = || MimeError::Malformed("a stored relay payload whose parts do not add up");
    let (length, rest) = bytes.split_first_chunk::<4>().ok_or_else(malformed)?;
    let length = usize::try_from(u32::from_be_bytes(*length)).map_err(|_| malformed())?;
    rest.split_at_checked(length).ok_or_else(malformed)
}

/// The RFC 3156 §4 envelope around an armoured OpenPGP message: what an external office's
/// mail server receives. The outer header keeps From, To, Date and Message-ID (so receivers
/// can de-duplicate a re-sent relay); the subject travels only inside, encrypted.
pub fn pgp_mime(
    from: &EmailAddress,
    to: &EmailAddress,
    message_id: &str,
    armored: Vec<u8>,
) -> Result<Vec<u8>, MimeError> {
    if !armored.is_ascii() {
        return Err(MimeError::Compose("ASCII armour expected".into()));
    }
    let parse = |ct: &str| ContentType::parse(ct).map_err(|e| MimeError::Compose(e.to_string()));
    let version = SinglePart::builder()
        .header(parse("application/pgp-encrypted")?)
        .header(ContentDisposition::attachment("version.asc"))
        .body(String::from("Version: 1\r\n"));
    let payload = SinglePart::builder()
        .header(parse("application/octet-stream")?)
        .header(ContentDisposition::inline_with_name("encrypted.asc"))
        // ASCII in lines of 76 characters: 7bit as it is, without lettre's scans for the
        // best encoding and bare line feeds (4 % of the CPU of a 100 KiB relay).
        .body(Body::dangerous_pre_encoded(
            crlf_owned(armored),
            ContentTransferEncoding::SevenBit,
        ));
    let message = lettre::Message::builder()
        .from(mailbox(from)?)
        .to(mailbox(to)?)
        .subject("...")
        .message_id(Some(message_id.to_owned()))
        .date_now()
        .multipart(
            MultiPart::encrypted("application/pgp-encrypted".to_owned())
                .singlepart(version)
                .singlepart(payload),
        )
        .map_err(|e| MimeError::Compose(e.to_string()))?;
    Ok(message.formatted())
}

/// The Content-Type parameter that marks a message's header as protected: inside the
/// encryption, readers (Thunderbird, draft-autocrypt-lamps-protected-headers) take Subject,
/// From, To and Date from the inner part instead of the outer placeholder.
const PROTECTED_HEADERS: &str = "protected-headers=\"v1\"";

/// `bytes` with `protected-headers="v1"` added to the top-level Content-Type (a
/// `text/plain; charset=utf-8` one is added if the message has none). Only that header field
/// changes; a message that already has the parameter, or is `multipart/encrypted`, is
/// returned unchanged.
pub fn with_protected_headers(bytes: Vec<u8>) -> Result<Vec<u8>, MimeError> {
    // The header section alone: decoding the body here cost 2 % of a 100 KiB relay.
    let message = parse_header_section(&bytes)?;
    let content_type = message.content_type();
    let encrypted = content_type.is_some_and(|ct| {
        ct.c_type.eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("encrypted"))
    });
    // End-to-end encrypted content keeps its sender's header as it is.
    if encrypted
        || content_type
            .and_then(|ct| ct.attribute("protected-headers"))
            .is_some()
    {
        return Ok(bytes);
    }
    let field = message
        .headers()
        .iter()
        .find(|h| h.name == mail_parser::HeaderName::ContentType)
        .map(|h| (h.offset_end as usize, h.offset_field as usize));
    let (at, insert) = match field {
        Some((end, _)) => {
            let value = bytes.get(..end).unwrap_or_default();
            let eol = if value.ends_with(b"\r\n") {
                2
            } else {
                usize::from(value.ends_with(b"\n"))
            };
            (end - eol, format!("; {PROTECTED_HEADERS}"))
        }
        // Before the first header field: the message had no MIME type, i.e. plain text.
        None => (
            0,
            format!("Content-Type: text/plain; charset=utf-8; {PROTECTED_HEADERS}\r\n"),
        ),
    };
    drop(message);
    let mut out = Vec::with_capacity(bytes.len() + insert.len());
    out.extend_from_slice(bytes.get(..at).unwrap_or_default());
    out.extend_from_slice(insert.as_bytes());
    out.extend_from_slice(bytes.get(at..).unwrap_or_default());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> EmailAddress {
        EmailAddress::parse(s).unwrap()
    }

    #[test]
    fn crlf_adds_carriage_returns_only_where_missing() {
        for (given, wanted) in [
            ("", ""),
            ("a", "a"),
            ("\n", "\r\n"),
            ("a\nb", "a\r\nb"),
            ("a\r\nb\n", "a\r\nb\r\n"),
            ("\n\n\r\n", "\r\n\r\n\r\n"),
            ("lone\rcr\n", "lone\rcr\r\n"),
            ("ümlaut\nß", "ümlaut\r\nß"),
        ] {
            assert_eq!(crlf(given), wanted, "{given:?}");
        }
    }

    #[test]
    fn a_long_text_with_bare_line_feeds_is_composed_with_crlf() {
        let text = "eine Zeile Text\n".repeat(200_000);
        let bytes = compose(
            &addr("anna@lemgo.example"),
            &[addr("bauamt@lemgo.example")],
            "<x@lemgo.example>",
            "lang",
            &text,
            &[],
        )
        .unwrap();
        let parsed = parse_message(&bytes).unwrap();
        let body = parsed.body_text(0).unwrap();
        assert_eq!(
            body.lines().filter(|l| *l == "eine Zeile Text").count(),
            200_000
        );
        assert!(
            !bytes.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
            "a bare LF"
        );
    }

    #[test]
    fn composed_messages_parse_back_with_their_attachments() {
        let pdf = NewAttachment {
            name: "Bauantrag.pdf".into(),
            content_type: "application/pdf".into(),
            data: vec![0, 1, 2, 255, 13, 10],
        };
        let bytes = compose(
            &addr("anna@lemgo.example"),
            &[addr("bauamt@lemgo.example")],
            "<m1@lemgo.example>",
            "Bauantrag Gartenhaus",
            "Sehr geehrte Damen und Herren,\nanbei mein Antrag.",
            &[pdf],
        )
        .unwrap();
        assert!(!bytes.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
        let facts = facts(&bytes).unwrap();
        assert_eq!(facts.attachments[0].size, 6);
        assert_eq!(facts.from, "anna@lemgo.example");
        let parsed = parse_entity(&bytes).unwrap();
        assert_eq!(parsed.message_id.as_deref(), Some("<m1@lemgo.example>"));
        assert_eq!(parsed.from.as_deref(), Some("anna@lemgo.example"));
        assert_eq!(parsed.subject.as_deref(), Some("Bauantrag Gartenhaus"));
        assert!(parsed.text.unwrap().contains("anbei mein Antrag."));
        assert_eq!(parsed.html, None, "a plain-text message has no HTML body");
        assert_eq!(parsed.attachments.len(), 1);
        assert_eq!(parsed.attachments[0].name, "Bauantrag.pdf");
        assert_eq!(parsed.attachments[0].content_type, "application/pdf");
        assert_eq!(parsed.attachments[0].data, vec![0, 1, 2, 255, 13, 10]);
        assert!(parsed.end_to_end.is_none());
    }

    /// The facts of a one-part plain-text message come from its header alone: for every
    /// mix of Content-Type, Content-Disposition, transfer encoding and body they equal the
    /// facts of the whole parse (an attachment must never go missing from evidence).
    #[test]
    fn facts_from_the_header_alone_are_those_of_the_whole_message() {
        let types = [
            None,
            Some("text/plain"),
            Some("TEXT/Plain; charset=iso-8859-1"),
            Some("text/plain; name=\"brief.txt\""),
            Some("text/html"),
            Some("application/pdf; name=\"a.pdf\""),
            Some("multipart/mixed; boundary=\"b\""),
            Some("multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\""),
            Some("not a type"),
        ];
        let dispositions = [
            None,
            Some("inline"),
            Some("attachment"),
            Some("ATTACHMENT; filename=\"x.txt\""),
        ];
        let encodings = [None, Some("base64"), Some("quoted-printable"), Some("8bit")];
        let bodies: [&[u8]; 4] = [
            b"Hallo\r\n",
            b"SGFsbG8=\r\n",
            b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\n\r\n%PDF\r\n--b--\r\n",
            b"==not base64 at all \xff\r\n",
        ];
        let mut fast = 0;
        for ct in types {
            for cd in dispositions {
                for cte in encodings {
                    for body in bodies {
                        let mut m = b"From: anna@lemgo.example\r\nMessage-ID: <1@x>\r\n".to_vec();
                        for (name, value) in [
                            ("Content-Type", ct),
                            ("Content-Disposition", cd),
                            ("Content-Transfer-Encoding", cte),
                        ] {
                            if let Some(v) = value {
                                m.extend_from_slice(format!("{name}: {v}\r\n").as_bytes());
                            }
                        }
                        m.extend_from_slice(b"\r\n");
                        m.extend_from_slice(body);
                        let whole = facts_of(parse_message(&m).unwrap()).unwrap();
                        assert_eq!(facts(&m).unwrap(), whole, "{}", String::from_utf8_lossy(&m));
                        fast += usize::from(is_one_text_part(&parse_header_section(&m).unwrap()));
                    }
                }
            }
        }
        // The shortcut is taken where it may be, and not everywhere.
        assert!(fast > 100 && fast < 576, "{fast}");
    }

    #[test]
    fn html_is_only_what_the_sender_wrote_as_html() {
        let alternative = b"From: a@lemgo.example\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=\"b\"\r\n\r\n--b\r\n\
Content-Type: text/plain\r\n\r\nHallo\r\n--b\r\nContent-Type: text/html\r\n\r\n\
<p>Hallo</p>\r\n--b--\r\n";
        let parsed = parse_entity(alternative).unwrap();
        assert!(parsed.html.unwrap().contains("<p>Hallo</p>"));
        assert_eq!(parsed.text.as_deref().map(str::trim), Some("Hallo"));
    }

    #[test]
    fn bad_input_is_named() {
        assert_eq!(
            facts(b"no header here").unwrap_err(),
            MimeError::Malformed("no blank line ends the header section")
        );
        assert_eq!(
            facts(b"Subject: hi\r\n\r\nbody").unwrap_err(),
            MimeError::Malformed("no From address")
        );
        for two in [
            &b"From: a@b.example, c@d.example\r\n\r\nx"[..],
            &b"From: a@b.example\r\nFrom: c@d.example\r\n\r\nx"[..],
        ] {
            assert_eq!(
                facts(two).unwrap_err(),
                MimeError::Malformed("more than one From address")
            );
        }
        assert_eq!(
            facts(b"From: a@b.example\r\nSubject: \xff\r\n\r\nx").unwrap_err(),
            MimeError::Malformed("the header section is not valid UTF-8")
        );
        let bad = NewAttachment {
            name: "../etc/passwd".into(),
            content_type: "text/plain".into(),
            data: vec![],
        };
        let from = addr("a@lemgo.example");
        assert_eq!(
            compose(
                &from,
                std::slice::from_ref(&from),
                "<x@y>",
                "s",
                "t",
                &[bad]
            )
            .unwrap_err(),
            MimeError::AttachmentName
        );
    }

    /// A payload stored in parts is the same message once its body is armoured in: a
    /// Message-ID holding the body's mark does not move the cut, and parts that do not add
    /// up are refused; a payload stored whole passes as it is.
    #[test]
    fn a_payload_stored_in_parts_gives_back_the_whole_message() {
        let binary: Vec<u8> = (0..300u32).map(|i| (i % 256) as u8).collect();
        let armored = "-----BEGIN PGP MESSAGE-----\r\n\r\nAAEC\r\n-----END PGP MESSAGE-----\r\n";
        for id in ["<m3@lemgo.example>", "<BOTE-ENCRYPTED-PART-BODY@x.example>"] {
            let stored = pgp_mime_stored(
                &addr("anna@lemgo.example"),
                &addr("amt@kreis.example"),
                id,
                &binary,
            )
            .unwrap();
            let [head, inner, tail] = stored_pgp_mime_parts(&stored).unwrap().unwrap();
            assert_eq!(inner, &binary[..]);
            let whole = [head, armored.as_bytes(), tail].concat();
            let parsed = parse_entity(&whole).unwrap();
            assert_eq!(parsed.message_id.as_deref(), Some(id));
            assert_eq!(parsed.end_to_end.as_deref(), Some(armored.as_bytes()));
            // Cut short anywhere inside the parts: refused, never read past.
            for cut in [9, 12, 12 + head.len(), stored.len() - tail.len() - 1] {
                assert!(
                    stored_pgp_mime_parts(&stored[..cut]).is_err(),
                    "cut at {cut}"
                );
            }
        }
        let whole = b"From: a@b.example\r\n\r\nbody\r\n";
        assert_eq!(stored_pgp_mime_parts(whole).unwrap(), None);
    }

    #[test]
    fn pgp_mime_envelope_is_recognised_as_end_to_end() {
        let armored = "-----BEGIN PGP MESSAGE-----\r\n\r\nwcBMA+x\r\n-----END PGP MESSAGE-----\r\n";
        let bytes = pgp_mime(
            &addr("anna@lemgo.example"),
            &addr("amt@kreis.example"),
            "<m2@lemgo.example>",
            armored.as_bytes().to_vec(),
        )
        .unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("multipart/encrypted"), "{text}");
        assert!(
            text.contains("protocol=\"application/pgp-encrypted\""),
            "{text}"
        );
        assert!(facts(&bytes).unwrap().end_to_end);
        let parsed = parse_entity(&bytes).unwrap();
        let payload = String::from_utf8(parsed.end_to_end.unwrap()).unwrap();
        assert!(
            payload.starts_with("-----BEGIN PGP MESSAGE-----"),
            "{payload}"
        );
        assert_eq!(parsed.message_id.as_deref(), Some("<m2@lemgo.example>"));
    }

    #[test]
    fn protected_headers_mark_the_top_level_type_and_nothing_else() {
        let folded = b"From: amt@lemgo.example\r\nContent-Type: multipart/mixed;\r\n boundary=\"b\"\r\nSubject: Bescheid\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n";
        let out = with_protected_headers(folded.to_vec()).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("From: amt@lemgo.example\r\nContent-Type: multipart/mixed;\r\n boundary=\"b\"; protected-headers=\"v1\"\r\nSubject: Bescheid\r\n"), "{text}");
        // The inner part keeps its type; a second pass changes nothing.
        assert!(text.contains("--b\r\nContent-Type: text/plain\r\n"));
        assert_eq!(with_protected_headers(out.clone()).unwrap(), out);
        let parsed = MessageParser::default().parse(&out).unwrap();
        assert_eq!(
            parsed.content_type().unwrap().attribute("boundary"),
            Some("b")
        );

        let plain = b"From: amt@lemgo.example\r\nSubject: Gr\xc3\xbc\xc3\x9fe\r\n\r\nHallo\r\n";
        let out = with_protected_headers(plain.to_vec()).unwrap();
        assert!(out.starts_with(
            b"Content-Type: text/plain; charset=utf-8; protected-headers=\"v1\"\r\nFrom: "
        ));
        assert!(out.ends_with(b"\r\n\r\nHallo\r\n"));
    }
}
