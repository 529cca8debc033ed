//! SMTP for office software (spec §2, §6): `smtp.submission_listen` (STARTTLS, port 587 in
//! production) and `smtp.submissions_listen` (implicit TLS, 465), AUTH PLAIN or LOGIN only
//! under TLS with a mailbox token (user = the mailbox address); and `smtp.mx_listen`, where
//! registered office mail servers in `smtp.trusted_networks` deliver mail from their
//! office to this gateway's mailboxes (ReceivedFromNonERDS). Every message goes through the
//! same core operation as an API submission, and its 250 names the gateway id and follows
//! the durable commit.
//!
//! This file is the I/O: sockets, TLS, bounded line reading, DATA with dot-unstuffing,
//! timeouts, per-client connection limits. The protocol is `session.rs`, the replies
//! `reply.rs`.
//!
//! Architecture invariants: nothing is read without a bound (512-octet command lines,
//! 1000-octet text lines, the message size); no plaintext is written anywhere but the
//! pipeline; a refused message changes nothing.

pub mod dsn;
pub mod reply;
pub mod session;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::ClientCert;
use crate::gateway::Gateway;
use reply::Reply;
use session::{Mode, Next, Session};
use sha2::{Digest, Sha256};

/// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;
/// Longest text line in DATA, CRLF included (RFC 5321 §4.5.3.1.6).
pub const MAX_TEXT_LINE: usize = 1000;
/// Idle time allowed between commands (RFC 5321 §4.5.3.2.7 asks for at least 5 minutes).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// Time allowed for the whole DATA phase.
pub const DATA_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest an SMTP session lasts, checked between commands (a message under way finishes
/// under [`DATA_TIMEOUT`]): a client sending a NOOP now and then cannot hold its
/// connection slot for days. An office's software sends its batch and reconnects.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(3600);

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// Submission with STARTTLS.
    Submission,
    /// Submission over implicit TLS.
    Submissions,
    /// MX: mail from registered office mail servers (STARTTLS offered).
    Mx,
}

/// Counts connections per client address; a guard gives its slot back when dropped.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max: usize,
}

/// One counted connection.
#[derive(Debug)]
pub struct Slot {
    limits: ConnectionLimits,
    ip: IpAddr,
}

impl ConnectionLimits {
    /// At most `max` connections per client (`smtp.max_connections_per_client`): an IPv4
    /// address or an IPv6 /64 ([`crate::client::network`]).
    pub fn new(max: u32) -> Self {
        Self {
            open: Arc::default(),
            max: max as usize,
        }
    }

    /// A slot for `ip`, unless it has the maximum open already.
    pub fn take(&self, ip: IpAddr) -> Option<Slot> {
        let ip = crate::client::network(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections on `listener` until `shutdown`; sessions in flight finish.
pub async fn accept_loop(
    gateway: Gateway,
    listener: TcpListener,
    tls: TlsAcceptor,
    port: Port,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let limits = ConnectionLimits::new(gateway.config().smtp.max_connections_per_client);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "SMTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        // Every reply is one write, so Nagle's algorithm only ever delays the TLS
        // handshake, whose flight rustls writes record by record: the client, waiting for
        // the whole flight, delays its ACK (40 ms per connection, measured).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        // An IPv4 client of a dual-stack listener as IPv4 (not `::ffff:a.b.c.d`): trusted
        // networks, limits and lockouts are written and counted in IPv4.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let Some(slot) = limits.take(peer.ip()) else {
            metrics::counter!("bote_smtp_refused_connections_total").increment(1);
            tracker.spawn(refuse(stream));
            continue;
        };
        let gateway = gateway.clone();
        let tls = tls.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let _slot = slot;
            metrics::gauge!("bote_smtp_sessions").increment(1.0);
            if let Err(e) = connection(&gateway, stream, peer, tls, port, stop).await {
                tracing::debug!(error = %e, client = %peer, "SMTP session ended");
            }
            metrics::gauge!("bote_smtp_sessions").decrement(1.0);
        });
    }
}

async fn refuse(mut stream: TcpStream) {
    let reply = Reply::new(421, "4.7.0", "too many connections from your address");
    let _ = stream.write_all(&reply.to_wire()).await;
}

/// A client connection, before or after TLS.
enum Conn {
    Plain(BufReader<TcpStream>),
    Tls(Box<BufReader<tokio_rustls::server::TlsStream<TcpStream>>>),
}

async fn connection(
    gateway: &Gateway,
    stream: TcpStream,
    peer: SocketAddr,
    tls: TlsAcceptor,
    port: Port,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let config = gateway.config();
    let max_size = config.limits.message_size_submission;
    let max_recipients = config.limits.max_recipients as usize;
    let hostname = config.primary_domain().to_owned();
    let mode = match port {
        Port::Submission | Port::Submissions => Mode::Submission,
        Port::Mx => Mode::Mx {
            trusted: config
                .smtp
                .trusted_networks
                .iter()
                .any(|net| net.contains(&peer.ip())),
        },
    };
    let (mut conn, tls_active) = match port {
        Port::Submission | Port::Mx => (Conn::Plain(BufReader::new(stream)), false),
        Port::Submissions => {
            let stream = tokio::time::timeout(COMMAND_TIMEOUT, tls.accept(stream)).await??;
            (Conn::Tls(Box::new(BufReader::new(stream))), true)
        }
    };
    let max_size = match mode {
        Mode::Submission => max_size,
        Mode::Mx { .. } => config.limits.message_size_gateway,
    };
    let mut session = Session::new(
        mode,
        peer.ip(),
        &hostname,
        tls_active,
        max_size,
        max_recipients,
    );
    if tls_active {
        session.tls_started(client_cert(&conn));
    }
    write(&mut conn, &session.banner()).await?;
    let ends = tokio::time::Instant::now() + SESSION_TIMEOUT;
    loop {
        let (wait, why) =
            next_command_wait(ends.saturating_duration_since(tokio::time::Instant::now()));
        let line = tokio::select! {
            read = tokio::time::timeout(wait, read_line(&mut conn, MAX_COMMAND_LINE)) => match read {
                Ok(line) => line?,
                Err(_) => {
                    write(&mut conn, &Reply::new(421, "4.4.2", why)).await?;
                    return Ok(());
                }
            },
            () = shutdown.cancelled() => {
                write(&mut conn, &Reply::new(421, "4.3.2", "shutting down, try again later")).await?;
                return Ok(());
            }
        };
        let line = match line {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                if let Some(enough) = session.count_command() {
                    record_reply(&enough);
                    write(&mut conn, &enough).await?;
                    return Ok(());
                }
                write(
                    &mut conn,
                    &Reply::new(500, "5.5.2", "line too long (at most 512 octets)"),
                )
                .await?;
                continue;
            }
            Line::Text(l) => l,
        };
        metrics::counter!("bote_smtp_commands_total").increment(1);
        let (reply, next) = session.command(gateway, strip_eol(&line)).await;
        record_reply(&reply);
        match next {
            Next::Command | Next::AuthContinue => write(&mut conn, &reply).await?,
            Next::Close => {
                write(&mut conn, &reply).await?;
                return Ok(());
            }
            Next::StartTls => {
                conn = start_tls(conn, &reply, &tls).await?;
                session.tls_started(client_cert(&conn));
            }
            Next::Data(max) => {
                // A declared size is answered before a byte is read: if the message and its
                // copies would not fit the memory budget within a few seconds, the client is
                // told to come back (20 parallel 45 MiB messages must not exhaust memory).
                // What is then held is only what has arrived, so announcing a large message
                // and stalling holds one chunk; the submission grows the room to its
                // footprint once the message is whole.
                let mut room = match reserve_for_data(gateway, &session, peer.ip(), max).await {
                    Ok(room) => room,
                    Err(busy) => {
                        let refusal = Reply::new(452, "4.3.1", busy.to_string());
                        session.message_refused();
                        record_reply(&refusal);
                        write(&mut conn, &refusal).await?;
                        continue;
                    }
                };
                write(&mut conn, &reply).await?;
                let reply = match tokio::time::timeout(
                    DATA_TIMEOUT,
                    read_data(&mut conn, max, gateway, peer.ip(), &mut room),
                )
                .await
                {
                    Err(_) => {
                        write(
                            &mut conn,
                            &Reply::new(421, "4.4.2", "DATA took too long, closing"),
                        )
                        .await?;
                        return Ok(());
                    }
                    Ok(Err(e)) => return Err(e),
                    Ok(Ok(Data::Message(message))) => {
                        metrics::histogram!("bote_smtp_message_bytes").record(message.len() as f64);
                        session
                            .message(gateway, message, std::mem::take(&mut room.held))
                            .await
                    }
                    Ok(Ok(Data::Refused(reply))) => {
                        session.message_refused();
                        reply
                    }
                    Ok(Ok(Data::Eof)) => return Ok(()),
                };
                // What a refused message held goes back before the reply is written: a
                // client that stops reading must not keep it.
                drop(room);
                record_reply(&reply);
                write(&mut conn, &reply).await?;
            }
        }
    }
}

/// How long to wait for the next command when the session has `left` before its
/// [`SESSION_TIMEOUT`], and what the 421 says if none comes.
fn next_command_wait(left: Duration) -> (Duration, &'static str) {
    if left < COMMAND_TIMEOUT {
        (left, "session too long, closing")
    } else {
        (COMMAND_TIMEOUT, "idle too long, closing")
    }
}

fn record_reply(reply: &Reply) {
    metrics::counter!("bote_smtp_replies_total", "code" => reply.code.to_string()).increment(1);
}

/// Sends the 220 and upgrades; refuses commands pipelined behind STARTTLS (they were sent
/// in clear and must not be taken as said under TLS: CVE-2011-0411).
async fn start_tls(conn: Conn, ready: &Reply, tls: &TlsAcceptor) -> std::io::Result<Conn> {
    let Conn::Plain(mut reader) = conn else {
        return Err(std::io::Error::other("STARTTLS under TLS"));
    };
    if !reader.buffer().is_empty() {
        let refusal = Reply::new(554, "5.5.0", "commands pipelined after STARTTLS, closing");
        write_flush(reader.get_mut(), &refusal.to_wire()).await?;
        return Err(std::io::Error::other("pipelined data after STARTTLS"));
    }
    write_flush(reader.get_mut(), &ready.to_wire()).await?;
    let stream = reader.into_inner();
    let tls_stream = tokio::time::timeout(COMMAND_TIMEOUT, tls.accept(stream)).await??;
    Ok(Conn::Tls(Box::new(BufReader::new(tls_stream))))
}

/// The fingerprint of the certificate the client proved it holds in the TLS handshake.
fn client_cert(conn: &Conn) -> Option<ClientCert> {
    let Conn::Tls(stream) = conn else {
        return None;
    };
    let (_, tls) = stream.get_ref().get_ref();
    let der = tls.peer_certificates()?.first()?;
    Some(ClientCert(Sha256::digest(der.as_ref()).into()))
}

async fn write(conn: &mut Conn, reply: &Reply) -> std::io::Result<()> {
    let bytes = reply.to_wire();
    match conn {
        Conn::Plain(r) => write_flush(r.get_mut(), &bytes).await,
        Conn::Tls(r) => write_flush(r.get_mut(), &bytes).await,
    }
}

/// Writes and flushes within [`COMMAND_TIMEOUT`]: a client that pipelines commands and
/// never reads the replies fills the socket's buffers, and without a limit the session
/// (its connection slot, its task) would wait on it for ever.
async fn write_flush<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    let written = async {
        w.write_all(bytes).await?;
        w.flush().await
    };
    tokio::time::timeout(COMMAND_TIMEOUT, written)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "client not reading"))?
}

enum Line {
    Text(Vec<u8>),
    TooLong,
    Eof,
}

async fn read_line(conn: &mut Conn, max: usize) -> std::io::Result<Line> {
    match conn {
        Conn::Plain(r) => bounded_line(r, max).await,
        Conn::Tls(r) => bounded_line(r.as_mut(), max).await,
    }
}

/// One line of at most `max` octets (terminator included); a longer one is read to its
/// end and discarded, in bounded steps.
async fn bounded_line<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    max: usize,
) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let n = (&mut *r)
        .take(max as u64)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if line.ends_with(b"\n") {
        return Ok(Line::Text(line));
    }
    if line.len() < max {
        // The client closed mid-line.
        return Ok(Line::Eof);
    }
    // Too long: skip to the end of the line, at most a megabyte, then give up on them.
    let mut skipped = 0usize;
    loop {
        let mut rest = Vec::new();
        let n = (&mut *r).take(8192).read_until(b'\n', &mut rest).await?;
        skipped += n;
        if n == 0 || skipped > 1 << 20 {
            return Ok(Line::Eof);
        }
        if rest.ends_with(b"\n") {
            return Ok(Line::TooLong);
        }
    }
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

enum Data {
    Message(Vec<u8>),
    Refused(Reply),
    Eof,
}

/// Room in the memory budget for a message being read: its first [`INTAKE_CHUNK`] reserved
/// before the 354, grown by chunks as the message grows beyond it, given back when dropped.
struct Room {
    held: Vec<crate::pipeline::Reservation>,
    /// Message bytes the room covers.
    bytes: u64,
}

/// How much more room a message takes at a time while it arrives: small, since a stalled
/// client holds one chunk beyond what it sent.
const INTAKE_CHUNK: u64 = 64 * 1024;

/// Waits for the declared message (if a size was declared) to fit the budget with its
/// copies, then reserves the first chunk of what arrives.
async fn reserve_for_data(
    gateway: &Gateway,
    session: &Session,
    client: IpAddr,
    max: u64,
) -> Result<Room, crate::pipeline::Busy> {
    if session.declared_size() > 0 {
        gateway
            .await_room(session.expected_size(), session.recipient_count())
            .await?;
    }
    let first = INTAKE_CHUNK.min(max);
    Ok(Room {
        held: gateway.grow_arriving(client, Vec::new(), first).await?,
        bytes: first,
    })
}

/// A message arriving in DATA, line by line: its content so far, unstuffed, or why it is
/// refused (the first reason found; the rest is read and dropped).
struct Intake {
    message: Vec<u8>,
    problem: Option<Reply>,
    max: u64,
    /// Whether the previous line ended in CRLF: only then does `.` CRLF end the data
    /// (RFC 5321 §4.1.1.4, CRLF `.` CRLF). A `.` CRLF after a bare LF is content of a
    /// message refused for that LF; taken as the end, it would let the bytes after it be
    /// read as commands, a message smuggled inside another (SMTP smuggling).
    after_crlf: bool,
}

impl Intake {
    fn new(capacity: usize, max: u64) -> Self {
        Self {
            message: Vec::with_capacity(capacity),
            problem: None,
            max,
            after_crlf: true,
        }
    }

    /// The content of one complete line (LF included), or `None` for the end-of-data line.
    fn content<'a>(&mut self, line: &'a [u8]) -> Option<&'a [u8]> {
        if line == b".\r\n" && self.after_crlf {
            return None;
        }
        self.after_crlf = line.ends_with(b"\r\n");
        let bare = !self.after_crlf || line[..line.len() - 2].contains(&b'\r');
        if bare {
            self.refuse(Reply::new(
                550,
                "5.6.2",
                "bare LF or CR in the message: lines end in CRLF",
            ));
        }
        if line.contains(&0) {
            self.refuse(Reply::new(550, "5.6.0", "NUL octets in the message"));
        }
        let content = line.strip_prefix(b".").unwrap_or(line);
        if (self.message.len() + content.len()) as u64 > self.max {
            let max = self.max;
            self.refuse(Reply::new(
                552,
                "5.3.4",
                format!("message larger than {max} octets"),
            ));
        }
        Some(content)
    }

    /// Refuses the message for a line over the limit (which ended in CRLF or not).
    fn too_long(&mut self, crlf: bool) {
        self.after_crlf = crlf;
        self.refuse(Reply::new(
            500,
            "5.5.2",
            "a line longer than 1000 octets (RFC 5321 4.5.3.1.6)",
        ));
    }

    fn refuse(&mut self, reply: Reply) {
        self.problem.get_or_insert(reply);
        // Nothing of a refused message is kept, and its buffer goes too.
        self.message = Vec::new();
    }

    fn append(&mut self, content: &[u8]) {
        if self.problem.is_none() {
            self.message.extend_from_slice(content);
        }
    }
}

/// Reads DATA to its end (`.` alone on a line), unstuffing dots. The message is refused,
/// after the client has finished sending, when it is larger than `max`, has a line longer
/// than 1000 octets, a bare LF or CR, or a NUL: nothing of it is kept.
///
/// Lines are taken from the read buffer in place (memchr), not read one by one into a
/// buffer of their own: per-line reads were 5 % of the CPU of a 100 KiB submission. Only
/// a line the buffer ends in the middle of is copied, up to the line limit.
async fn read_data(
    conn: &mut Conn,
    max: u64,
    gateway: &Gateway,
    client: IpAddr,
    room: &mut Room,
) -> std::io::Result<Data> {
    // The buffer is as large as the room reserved for it, no larger (a doubling Vec could
    // hold twice what the budget counts).
    let mut intake = Intake::new(usize::try_from(room.bytes).unwrap_or(0), max);
    // The start of a line the read buffer ended in, at most a line's limit.
    let mut partial: Vec<u8> = Vec::new();
    // Octets of an overlong line read so far (0: none); beyond a megabyte, give up on them.
    let mut overlong = 0usize;
    // The last octet of the overlong line read so far.
    let mut overlong_last: Option<u8> = None;
    loop {
        let chunk = fill_buf(conn).await?;
        if chunk.is_empty() {
            return Ok(Data::Eof);
        }
        let mut used = 0;
        let mut ended = false;
        while let Some(at) = memchr::memchr(b'\n', &chunk[used..]) {
            let piece = &chunk[used..used + at + 1];
            used += at + 1;
            if overlong > 0 || partial.len() + piece.len() > MAX_TEXT_LINE {
                // The CR of the line's CRLF may have come with the previous read.
                let cr_before = partial.last().or(overlong_last.as_ref()) == Some(&b'\r');
                let crlf = piece.ends_with(b"\r\n") || (piece == b"\n" && cr_before);
                overlong = 0;
                overlong_last = None;
                partial.clear();
                intake.too_long(crlf);
                continue;
            }
            let line: &[u8] = if partial.is_empty() {
                piece
            } else {
                partial.extend_from_slice(piece);
                &partial
            };
            let Some(content) = intake.content(line) else {
                ended = true;
                break;
            };
            let needed = (intake.message.len() + content.len()) as u64;
            if intake.problem.is_none() && needed > room.bytes {
                // A quarter more at a time: few copies of the buffer, little room unused.
                let bytes = (needed + INTAKE_CHUNK)
                    .max(room.bytes + room.bytes / 4)
                    .min(max + INTAKE_CHUNK);
                let held = std::mem::take(&mut room.held);
                match gateway.grow_arriving(client, held, bytes).await {
                    Ok(held) => {
                        *room = Room { held, bytes };
                        let more = bytes.saturating_sub(intake.message.len() as u64);
                        intake
                            .message
                            .reserve_exact(usize::try_from(more).unwrap_or(0));
                    }
                    Err(busy) => intake.refuse(Reply::new(452, "4.3.1", busy.to_string())),
                }
            }
            intake.append(content);
            partial.clear();
        }
        if !ended {
            let rest = &chunk[used..];
            if overlong > 0 || partial.len() + rest.len() > MAX_TEXT_LINE {
                overlong = overlong.max(partial.len()) + rest.len();
                overlong_last = rest.last().or(partial.last()).copied().or(overlong_last);
                partial.clear();
                if overlong > 1 << 20 {
                    return Ok(Data::Eof);
                }
            } else {
                partial.extend_from_slice(rest);
            }
            used = chunk.len();
        }
        consume(conn, used);
        if ended {
            break;
        }
    }
    Ok(match intake.problem {
        Some(reply) => Data::Refused(reply),
        None => Data::Message(intake.message),
    })
}

async fn fill_buf(conn: &mut Conn) -> std::io::Result<&[u8]> {
    match conn {
        Conn::Plain(r) => r.fill_buf().await,
        Conn::Tls(r) => r.fill_buf().await,
    }
}

fn consume(conn: &mut Conn, used: usize) {
    match conn {
        Conn::Plain(r) => r.consume(used),
        Conn::Tls(r) => r.consume(used),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What DATA yields line by line: `Some(content)` or `None` for the end of the data.
    fn lines(intake: &mut Intake, data: &[&[u8]]) -> Vec<Option<Vec<u8>>> {
        data.iter()
            .map(|line| intake.content(line).map(<[u8]>::to_vec))
            .collect()
    }

    #[test]
    fn only_crlf_dot_crlf_ends_the_data() {
        let mut intake = Intake::new(0, 1 << 20);
        let smuggled: &[&[u8]] = &[
            b"carrier\n",
            b".\r\n",
            b"MAIL FROM:<other@kreis.example>\r\n",
            b".\r\n",
        ];
        let seen = lines(&mut intake, smuggled);
        assert!(seen[1].is_some(), "a dot after a bare LF ended the data");
        assert_eq!(seen[3], None, "CRLF . CRLF did not end the data");
        assert_eq!(
            intake.problem.map(|r| r.to_wire()),
            Some(
                Reply::new(
                    550,
                    "5.6.2",
                    "bare LF or CR in the message: lines end in CRLF"
                )
                .to_wire()
            )
        );

        let mut intake = Intake::new(0, 1 << 20);
        let seen = lines(&mut intake, &[b".\r\n"]);
        assert_eq!(seen, vec![None], "an empty message ends at its first line");
        let mut intake = Intake::new(0, 1 << 20);
        intake.too_long(false);
        assert!(lines(&mut intake, &[b".\r\n"])[0].is_some());
        intake.too_long(true);
        assert_eq!(lines(&mut intake, &[b".\r\n"]), vec![None]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_read_its_replies_is_given_up() {
        let (mut server, _client) = tokio::io::duplex(64);
        let written = write_flush(&mut server, &[b'x'; 1024]).await;
        assert_eq!(
            written.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::TimedOut)
        );
    }

    #[test]
    fn a_session_ends_after_its_time_even_if_never_idle() {
        let hour = SESSION_TIMEOUT;
        assert_eq!(
            next_command_wait(hour),
            (COMMAND_TIMEOUT, "idle too long, closing")
        );
        let (wait, why) = next_command_wait(Duration::from_secs(7));
        assert_eq!(
            (wait, why),
            (Duration::from_secs(7), "session too long, closing")
        );
        assert_eq!(next_command_wait(Duration::ZERO).0, Duration::ZERO);
    }

    #[test]
    fn connections_are_counted_per_client_network() {
        let limits = ConnectionLimits::new(2);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let _a = limits.take(ip("2001:db8:1:2::1")).unwrap();
        let _b = limits.take(ip("2001:db8:1:2::2")).unwrap();
        assert!(
            limits.take(ip("2001:db8:1:2::3")).is_none(),
            "one /64, one client"
        );
        assert!(limits.take(ip("2001:db8:1:3::1")).is_some());
        let v4 = limits.take(ip("::ffff:192.0.2.1")).unwrap();
        let _c = limits.take(ip("192.0.2.1")).unwrap();
        assert!(
            limits.take(ip("192.0.2.1")).is_none(),
            "mapped and plain IPv4 are one"
        );
        drop(v4);
        assert!(
            limits.take(ip("192.0.2.1")).is_some(),
            "a closed connection frees its slot"
        );
    }
}
