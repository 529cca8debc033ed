//! SMTP sessions to offices' mail servers, kept open between jobs (one per job in flight,
//! per server and TLS mode). lettre speaks the protocol; this file opens the TCP connection
//! itself, with TCP_NODELAY: lettre writes a message and its final `.` in two writes, and
//! without the option the five-byte dot waited for the server's delayed ACK, 40 ms per
//! message (measured with strace against Postfix's smtp-sink), which capped a session at
//! 25 messages per second.
//!
//! [`send`] sends the content dot-stuffed here, through lettre's `command`: lettre's own
//! `send` stuffs byte by byte, 4.4 % of the CPU of a relayed 100 KiB message
//! (docs/decisions.md, "Ninth round"); lettre still speaks every command and reads every
//! reply. To a server that offers PIPELINING (RFC 2920) MAIL, RCPT and DATA go out in one
//! write and their replies are read after it: two round trips per message instead of
//! four, which on a WAN link to an office's server is most of a relay's time (lettre
//! does not pipeline, nor record whether the server offers it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;

use crate::accounts::{Relay, RelayTls};

/// The most [`send`] appends to a content to end its DATA: a line break and the
/// end-of-data line. Room left for it spares a copy of the content.
pub(super) const END_OF_DATA: &str = "\r\n.\r\n";

/// An idle session older than this is tested (NOOP) before it is used again.
const STALE: Duration = Duration::from_secs(5);

/// How long an idle session is kept for the next job to its server: long enough to carry
/// a pause in a burst over, well short of the idle limit servers set (Postfix's
/// `smtpd_timeout`, 300 s), so that it is closed by a QUIT, not found dead.
const KEEP_IDLE: Duration = Duration::from_secs(60);

/// How long a QUIT to an idle session may take before the connection is just dropped.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The slowest transfer a relay attempt waits for: 32 KiB/s (256 kbit/s). Under one
/// fixed limit, a 20 MiB message (27 MiB armoured) needed 3.7 Mbit/s to an office's
/// server, which 32 sessions sharing a 100 Mbit/s uplink do not get each: it could never
/// be delivered, only retried until it expired.
const SLOWEST_TRANSFER: usize = 32 * 1024;

/// The longest attempt of all, however large its message.
const LONGEST_ATTEMPT: Duration = Duration::from_secs(30 * 60);

/// How long an attempt to send `size` octets may take: `base` for connecting, the
/// commands and the replies, and the content's time at [`SLOWEST_TRANSFER`], at most
/// [`LONGEST_ATTEMPT`]. RFC 5321 (4.5.3.2) suggests waiting up to 10 minutes for the
/// reply to the final dot alone; a server that slow gets the message again on the next
/// attempt (same Message-ID), which keeps one stuck server from holding sessions long.
pub(super) fn attempt_limit(base: Duration, size: usize) -> Duration {
    let transfer = Duration::from_secs(u64::try_from(size / SLOWEST_TRANSFER).unwrap_or(u64::MAX));
    base.saturating_add(transfer).min(LONGEST_ATTEMPT)
}

type Key = (String, u16, RelayTls);

/// Idle sessions by server and TLS mode: at most `cap` in all (the sessions a worker may
/// use at once), none kept longer than [`KEEP_IDLE`]. Uncapped, a worker that relays to a
/// hundred offices kept a hundred times its sessions open, each until its server hung up.
pub(super) struct Sessions {
    idle: Mutex<HashMap<Key, Vec<(Session, Instant)>>>,
    cap: usize,
    keep_idle: Duration,
}

/// An open SMTP session to an office's server.
pub(super) struct Session {
    smtp: AsyncSmtpConnection,
    /// The server's EHLO reply offered PIPELINING.
    pipelining: bool,
}

impl Session {
    /// Whether the session runs over TLS.
    pub(super) fn is_encrypted(&self) -> bool {
        self.smtp.is_encrypted()
    }
}

/// Why no session could be opened (the job is tried again later).
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    /// TCP.
    #[error("connect to {0}: {1}")]
    Tcp(String, std::io::Error),
    /// The greeting, EHLO or STARTTLS.
    #[error("{0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    /// TLS is required and the server offers no STARTTLS.
    #[error("TLS is required, but {0} does not offer STARTTLS")]
    NoStartTls(String),
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions")
    }
}

fn key(relay: &Relay) -> Key {
    (relay.host.clone(), relay.port, relay.tls)
}

impl Sessions {
    /// No idle sessions yet; at most `cap` kept.
    pub(super) fn new(cap: usize) -> Self {
        Self {
            idle: Mutex::default(),
            cap,
            keep_idle: KEEP_IDLE,
        }
    }

    /// Idle sessions now.
    pub(super) fn idle(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<(Session, Instant)>>> {
        // A poisoned lock means a panic while moving a session in or out; the map is intact.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Closes the idle sessions kept longer than [`KEEP_IDLE`] (`keep_idle`), and the longest idle ones
    /// beyond the cap (QUIT, in the background).
    pub(super) fn close_idle(&self) {
        let closing = {
            let mut idle = self.lock();
            let mut closing = Vec::new();
            for sessions in idle.values_mut() {
                // Each list is in the order the sessions came back: the oldest first.
                let expired = sessions
                    .iter()
                    .take_while(|(_, since)| since.elapsed() >= self.keep_idle)
                    .count();
                closing.extend(sessions.drain(..expired).map(|(s, _)| s));
            }
            let mut kept: usize = idle.values().map(Vec::len).sum();
            while kept > self.cap {
                let oldest = idle
                    .iter()
                    .filter_map(|(k, v)| v.first().map(|(_, since)| (k.clone(), *since)))
                    .min_by_key(|(_, since)| *since)
                    .map(|(k, _)| k);
                let Some(sessions) = oldest.and_then(|k| idle.get_mut(&k)) else {
                    break;
                };
                closing.push(sessions.remove(0).0);
                kept -= 1;
            }
            idle.retain(|_, v| !v.is_empty());
            closing
        };
        for mut session in closing {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(QUIT_TIMEOUT, session.smtp.quit()).await;
            });
        }
    }

    /// An open session to `relay`: an idle one if it still answers, else a new one.
    pub(super) async fn take(
        &self,
        relay: &Relay,
        hello: &ClientId,
        relay_ca: &[Vec<u8>],
    ) -> Result<Session, ConnectError> {
        while let Some((mut session, since)) = self.pop(relay) {
            if since.elapsed() < STALE || session.smtp.test_connected().await {
                return Ok(session);
            }
        }
        open(relay, hello, relay_ca).await
    }

    fn pop(&self, relay: &Relay) -> Option<(Session, Instant)> {
        // The most recently used: the likeliest still open.
        self.lock().get_mut(&key(relay))?.pop()
    }

    /// Gives a session back for the next job, unless it broke; the longest idle session
    /// is closed if this one is over the cap.
    pub(super) fn put_back(&self, relay: &Relay, session: Session) {
        if session.smtp.has_broken() {
            return;
        }
        let over = {
            let mut idle = self.lock();
            idle.entry(key(relay))
                .or_default()
                .push((session, Instant::now()));
            idle.values().map(Vec::len).sum::<usize>() > self.cap
        };
        if over {
            self.close_idle();
        }
    }
}

/// Sends `payload` to the envelope's recipients on `session`: MAIL, RCPT, DATA (in one
/// write if the server pipelines), the content. Like lettre's `send`, an error or a
/// refusal aborts the session (QUIT, and it is not given back); the first refusal is the
/// answer. Content or addresses beyond ASCII go through lettre's `send`, which negotiates
/// 8BITMIME and SMTPUTF8.
///
/// The payload is taken and becomes the DATA text in place when no line starts with a
/// dot (a relay payload has none): lettre copies it once more as it sends it, so a
/// message is held twice at most (`queue::RELAY_FOOTPRINT`).
pub(super) async fn send(
    session: &mut Session,
    envelope: &Envelope,
    payload: Vec<u8>,
) -> Result<Response, lettre::transport::smtp::Error> {
    let ascii = |a: &lettre::Address| AsRef::<str>::as_ref(a).is_ascii();
    let ascii_addresses = envelope.from().into_iter().all(ascii) && envelope.to().iter().all(ascii);
    let smtp = &mut session.smtp;
    let text = match String::from_utf8(payload) {
        Ok(text) if text.is_ascii() && ascii_addresses => text,
        Ok(text) => return smtp.send(envelope, text.as_bytes()).await,
        Err(e) => return smtp.send(envelope, e.as_bytes()).await,
    };
    let data = dot_stuffed(text);
    let mail = Mail::new(envelope.from().cloned(), Vec::new());
    let rcpts = envelope
        .to()
        .iter()
        .map(|to| Rcpt::new(to.clone(), Vec::new()));
    let transaction = async {
        if session.pipelining {
            // lettre writes the group as one command and reads MAIL's reply; the rest
            // follow in order (RFC 2920 §3.1: DATA ends the group).
            let mut group = mail.to_string();
            for rcpt in rcpts {
                group.push_str(&rcpt.to_string());
            }
            group.push_str(&Data.to_string());
            smtp.command(group).await?;
            for _ in envelope.to() {
                smtp.read_response().await?;
            }
            smtp.read_response().await?;
        } else {
            smtp.command(mail).await?;
            for rcpt in rcpts {
                smtp.command(rcpt).await?;
            }
            smtp.command(Data).await?;
        }
        smtp.command(data.as_str()).await
    };
    let sent = transaction.await;
    if sent.is_err() {
        smtp.abort().await;
    }
    sent
}

/// The content as DATA carries it (RFC 5321 §4.5.2): a `.` doubled at the start of every
/// line, then the end-of-data line (after a line break of its own if the content does
/// not end with one). Without a line to stuff, the text is extended in place.
fn dot_stuffed(mut text: String) -> String {
    if text.starts_with('.') || memchr::memmem::find(text.as_bytes(), b"\r\n.").is_some() {
        text = stuff_lines(&text);
    }
    if !(text.is_empty() || text.ends_with("\r\n")) {
        text.push_str("\r\n");
    }
    text.push_str(".\r\n");
    text
}

/// `text` with a `.` doubled at the start of every line.
fn stuff_lines(text: &str) -> String {
    // Room for a few doubled dots and the end-of-data line.
    let mut out = String::with_capacity(text.len() + 64);
    if text.starts_with('.') {
        out.push('.');
    }
    let mut from = 0;
    for at in memchr::memmem::find_iter(text.as_bytes(), b"\r\n.") {
        // `at + 2` is the `.`, after the ASCII line break: a character boundary.
        out.push_str(&text[from..at + 2]);
        out.push('.');
        from = at + 2;
    }
    out.push_str(&text[from..]);
    out
}

async fn open(
    relay: &Relay,
    hello: &ClientId,
    relay_ca: &[Vec<u8>],
) -> Result<Session, ConnectError> {
    let server = format!("{}:{}", relay.host, relay.port);
    let tcp = tokio::net::TcpStream::connect((relay.host.as_str(), relay.port))
        .await
        .map_err(|e| ConnectError::Tcp(server.clone(), e))?;
    tcp.set_nodelay(true)
        .map_err(|e| ConnectError::Tcp(server.clone(), e))?;
    let mut session = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), hello).await?;
    match relay.tls {
        RelayTls::None => {}
        RelayTls::Required if !session.can_starttls() => {
            session.abort().await;
            return Err(ConnectError::NoStartTls(server));
        }
        RelayTls::Required => {
            session
                .starttls(tls(relay, relay_ca, false)?, hello)
                .await?
        }
        RelayTls::Opportunistic if session.can_starttls() => {
            session.starttls(tls(relay, relay_ca, true)?, hello).await?;
        }
        RelayTls::Opportunistic => {}
    }
    // lettre keeps only the extensions it uses from its EHLO; ask again, once per session.
    let pipelining = offers_pipelining(&session.command(Ehlo::new(hello.clone())).await?);
    Ok(Session {
        smtp: session,
        pipelining,
    })
}

/// Whether an EHLO reply lists PIPELINING (its first line is the greeting).
fn offers_pipelining(ehlo: &Response) -> bool {
    ehlo.message()
        .skip(1)
        .any(|line| line.trim().eq_ignore_ascii_case("PIPELINING"))
}

/// TLS towards `relay`: the web roots and `tls.relay_ca`, or anything (`accept_invalid`,
/// for opportunistic TLS, which protects against passive listeners only).
fn tls(
    relay: &Relay,
    relay_ca: &[Vec<u8>],
    accept_invalid: bool,
) -> Result<TlsParameters, lettre::transport::smtp::Error> {
    let mut builder = TlsParameters::builder(relay.host.clone());
    for pem in relay_ca {
        if let Ok(cert) = Certificate::from_pem(pem) {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .dangerous_accept_invalid_certs(accept_invalid)
        .build_rustls()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// What a scripted office server saw: per MAIL, the commands that had arrived with it
    /// (the rest of a pipelined group), and the content of each message it accepted.
    #[derive(Debug, Default)]
    struct Seen {
        with_mail: Vec<String>,
        contents: Vec<String>,
        /// The client said QUIT (rather than just closing the connection).
        quit: bool,
    }

    /// A one-connection SMTP server that offers PIPELINING or not and refuses any RCPT to
    /// `nobody@…`.
    async fn office_server(pipelining: bool) -> (u16, tokio::task::JoinHandle<Seen>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            let mut seen = Seen::default();
            let mut recipients = 0;
            w.write_all(b"220 office.example ESMTP\r\n").await.unwrap();
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await.unwrap() == 0 {
                    return seen;
                }
                let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                let reply = match verb.as_str() {
                    "EHLO" if pipelining => "250-office.example\r\n250-PIPELINING\r\n250 8BITMIME",
                    "EHLO" => "250-office.example\r\n250 8BITMIME",
                    "MAIL" => {
                        // A group split by the network would arrive within moments; a
                        // client waiting for this reply sends nothing.
                        let wait = std::time::Duration::from_millis(200);
                        let _ = tokio::time::timeout(wait, r.fill_buf()).await;
                        seen.with_mail
                            .push(String::from_utf8_lossy(r.buffer()).into_owned());
                        recipients = 0;
                        "250 2.1.0 ok"
                    }
                    "RCPT" if line.contains("<nobody@") => "550 5.1.1 no such user",
                    "RCPT" => {
                        recipients += 1;
                        "250 2.1.5 ok"
                    }
                    "DATA" if recipients == 0 => "554 5.5.1 no valid recipients",
                    "DATA" => {
                        w.write_all(b"354 go ahead\r\n").await.unwrap();
                        let mut content = String::new();
                        loop {
                            line.clear();
                            if r.read_line(&mut line).await.unwrap() == 0 {
                                return seen;
                            }
                            if line == ".\r\n" {
                                break;
                            }
                            content.push_str(line.strip_prefix('.').unwrap_or(&line));
                        }
                        seen.contents.push(content);
                        "250 2.0.0 queued"
                    }
                    "QUIT" => {
                        w.write_all(b"221 bye\r\n").await.unwrap();
                        seen.quit = true;
                        return seen;
                    }
                    _ => "250 ok",
                };
                w.write_all(format!("{reply}\r\n").as_bytes())
                    .await
                    .unwrap();
            }
        });
        (port, served)
    }

    fn relay(port: u16) -> Relay {
        Relay {
            host: "127.0.0.1".into(),
            port,
            tls: RelayTls::None,
            cert: Vec::new(),
            cert_fingerprint: String::new(),
        }
    }

    fn envelope(to: &str) -> Envelope {
        Envelope::new(
            Some("bauamt@lemgo.example".parse().unwrap()),
            vec![to.parse().unwrap()],
        )
        .unwrap()
    }

    /// A transfer slower than the base limit but faster than the slowest one waited for
    /// is delivered, not cut off: the limit grows with the message. (The office's server
    /// here reads 16 KiB every 100 ms, 160 KiB/s; the base limit is 1 s.)
    #[tokio::test]
    async fn a_large_message_on_a_slow_link_gets_the_time_its_size_needs() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let content = format!("Subject: x\r\n\r\n{}", "0123456789abcde\r\n".repeat(25_000));
        let size = content.len();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut stream, _) = listener.accept().await.unwrap();
            stream
                .write_all(b"220 office.example ESMTP\r\n")
                .await
                .unwrap();
            let (mut buf, mut seen, mut in_data) = (vec![0; 16 * 1024], Vec::new(), false);
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                seen.extend_from_slice(&buf[..n]);
                let answer: &[u8] = if in_data {
                    if !seen.ends_with(b"\r\n.\r\n") {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                    in_data = false;
                    b"250 2.0.0 queued\r\n"
                } else if !seen.ends_with(b"\r\n") {
                    continue;
                } else if seen.starts_with(b"DATA") {
                    in_data = true;
                    b"354 go ahead\r\n"
                } else {
                    b"250 ok\r\n"
                };
                seen.clear();
                stream.write_all(answer).await.unwrap();
            }
        });
        let hello = ClientId::Domain("lemgo.example".into());
        let base = Duration::from_secs(1);
        let limit = attempt_limit(base, size);
        assert!(limit >= base + Duration::from_secs(12), "{limit:?}");
        let attempt = async {
            let mut session = open(&relay(port), &hello, &[]).await.unwrap();
            send(
                &mut session,
                &envelope("amt@kreis.example"),
                content.into_bytes(),
            )
            .await
        };
        let started = std::time::Instant::now();
        let sent = tokio::time::timeout(limit, attempt).await;
        assert!(
            started.elapsed() > base,
            "the transfer outlasted the base limit"
        );
        assert_eq!(
            sent.expect("within the limit").unwrap().code().to_string(),
            "250"
        );
        // And the limit has an end, for any size.
        assert_eq!(attempt_limit(base, usize::MAX), LONGEST_ATTEMPT);
    }

    /// Idle sessions are capped in all, and closed with a QUIT after their idle time: the
    /// longest idle goes first.
    #[tokio::test]
    async fn idle_sessions_are_capped_and_closed_politely() {
        let hello = ClientId::Domain("lemgo.example".into());
        let (first, first_served) = office_server(true).await;
        let (second, second_served) = office_server(true).await;
        let sessions = Sessions::new(1);
        for port in [first, second] {
            let session = open(&relay(port), &hello, &[]).await.unwrap();
            sessions.put_back(&relay(port), session);
        }
        assert_eq!(sessions.idle(), 1);
        let wait = std::time::Duration::from_secs(10);
        let seen = tokio::time::timeout(wait, first_served)
            .await
            .unwrap()
            .unwrap();
        assert!(seen.quit, "the longest idle session got a QUIT");
        // The one kept is the second server's; once its idle time is over, it goes too.
        assert!(sessions.lock().contains_key(&key(&relay(second))));
        let sessions = Sessions {
            keep_idle: Duration::ZERO,
            ..sessions
        };
        sessions.close_idle();
        assert_eq!(sessions.idle(), 0);
        let seen = tokio::time::timeout(wait, second_served)
            .await
            .unwrap()
            .unwrap();
        assert!(seen.quit);
    }

    /// To a server that offers PIPELINING, MAIL, RCPT and DATA arrive together; to one
    /// that does not, one at a time; either way the content arrives whole.
    #[tokio::test]
    async fn commands_are_pipelined_only_to_a_server_that_offers_it() {
        let hello = ClientId::Domain("lemgo.example".into());
        for pipelining in [true, false] {
            let (port, served) = office_server(pipelining).await;
            let mut session = open(&relay(port), &hello, &[]).await.unwrap();
            assert_eq!(session.pipelining, pipelining);
            let content = "Subject: x\r\n\r\n.leading dot\r\n";
            let sent = send(&mut session, &envelope("amt@kreis.example"), content.into())
                .await
                .unwrap();
            assert_eq!(sent.code().to_string(), "250");
            session.smtp.quit().await.unwrap();
            let seen = served.await.unwrap();
            assert_eq!(seen.contents, [content]);
            let expected = if pipelining {
                "RCPT TO:<amt@kreis.example>\r\nDATA\r\n"
            } else {
                ""
            };
            assert_eq!(seen.with_mail, [expected], "pipelining {pipelining}");
        }
    }

    /// A recipient refused inside a pipelined group is the answer, and the session is
    /// given up; the server received no content.
    #[tokio::test]
    async fn a_refusal_inside_a_pipelined_group_ends_the_attempt() {
        let hello = ClientId::Domain("lemgo.example".into());
        let (port, served) = office_server(true).await;
        let mut session = open(&relay(port), &hello, &[]).await.unwrap();
        let refused = send(
            &mut session,
            &envelope("nobody@kreis.example"),
            "x\r\n".into(),
        )
        .await
        .unwrap_err();
        assert!(refused.is_permanent(), "{refused}");
        assert!(refused.to_string().contains("no such user"), "{refused}");
        assert!(session.smtp.has_broken());
        let seen = served.await.unwrap();
        assert!(seen.contents.is_empty());
    }

    /// What a server makes of DATA (RFC 5321 §4.5.2), line by line: the content up to the
    /// end-of-data line, a leading `.` removed from every other line.
    fn unstuffed(data: &str) -> Option<String> {
        let mut content = String::new();
        for line in data.split_inclusive("\r\n") {
            if line == ".\r\n" {
                return Some(content);
            }
            content.push_str(line.strip_prefix('.').unwrap_or(line));
        }
        None
    }

    #[test]
    fn a_server_reads_back_exactly_what_was_stuffed() {
        let cases = [
            "",
            ".",
            "..\r\n",
            ".hidden\r\nline\r\n",
            "a\r\n.\r\nb\r\n",
            "a\r\n..\r\n\r\n.x",
            "no line break at the end",
            "bare\n.lf is not a line start\r\n",
            "Subject: x\r\n\r\nbody\r\n",
        ];
        for case in cases {
            let data = dot_stuffed(case.to_owned());
            assert!(data.ends_with("\r\n.\r\n") || data == ".\r\n", "{case:?}");
            let mut expected = case.to_owned();
            if !(case.is_empty() || case.ends_with("\r\n")) {
                expected.push_str("\r\n");
            }
            assert_eq!(
                unstuffed(&data).as_deref(),
                Some(expected.as_str()),
                "{case:?}"
            );
        }
    }

    #[test]
    fn no_line_of_the_content_ends_the_data_early() {
        let data = dot_stuffed("one\r\n.\r\ntwo\r\n".to_owned());
        assert_eq!(data, "one\r\n..\r\ntwo\r\n.\r\n");
        // A bare LF before a dot is not a line break; nothing to stuff.
        assert_eq!(dot_stuffed("a\n.b\r\n".to_owned()), "a\n.b\r\n.\r\n");
    }
}
