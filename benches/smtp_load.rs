//! SMTP load generator for benches/smtp_relay/run.py (not a criterion benchmark).
//!
//! smtp-source speaks neither TLS nor AUTH, and bote's submission port requires STARTTLS and
//! AUTH PLAIN with a mailbox token; this client speaks both, or plain SMTP like smtp-source.
//! `--sessions` concurrent sessions send `--messages` messages of `--size` bytes in all, one
//! connection per message by default (as smtp-source does without `-d`), each command
//! waiting for its reply (no PIPELINING). It times the reply to the final dot of every
//! message (client side: from the last byte of the message written to the reply read) and
//! prints one JSON line: counts, start and end (Unix seconds), p50/p99/max latency in ms.
//! `--rate N` paces the sends to N messages/s in all (for the latency at partial load).
//!
//!   cargo bench --bench smtp_load -- --port 2587 --tls --ca certs/ca.crt \
//!       --user bauamt@lemgo.example --password TOKEN \
//!       --from bauamt@lemgo.example --to amt@kreis.example --messages 5000 --size 1024

// A benchmark tool: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use clap::Parser;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long)]
    port: u16,
    /// STARTTLS after the first EHLO (verifying the server as `--server-name` against `--ca`).
    #[arg(long)]
    tls: bool,
    #[arg(long)]
    ca: Option<PathBuf>,
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// AUTH PLAIN user (after STARTTLS).
    #[arg(long)]
    user: Option<String>,
    #[arg(long, default_value = "")]
    password: String,
    #[arg(long)]
    from: String,
    #[arg(long)]
    to: String,
    #[arg(long, default_value_t = 5000)]
    messages: u64,
    #[arg(long, default_value_t = 20)]
    sessions: u64,
    /// Message size in bytes, headers included.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Messages per connection.
    #[arg(long, default_value_t = 1)]
    per_connection: u64,
    /// Messages per second in all (0: as fast as the server answers).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// `cargo bench` passes this; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Conn {
    io: BufStream<Box<dyn Io>>,
    line: String,
}

impl Conn {
    /// Reads one (possibly multi-line) reply; its code and last line.
    async fn reply(&mut self) -> Result<(u16, String), String> {
        loop {
            self.line.clear();
            let n = self
                .io
                .read_line(&mut self.line)
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
            let l = self.line.trim_end();
            if l.len() < 4 || l.as_bytes()[3] != b'-' {
                let code = l.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return Ok((code, l.to_owned()));
            }
        }
    }

    async fn command(&mut self, cmd: &str, want: u16) -> Result<String, String> {
        self.io
            .write_all(cmd.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        self.io.flush().await.map_err(|e| e.to_string())?;
        let (code, line) = self.reply().await?;
        if code != want {
            return Err(format!("{} -> {line}", cmd.trim_end()));
        }
        Ok(line)
    }
}

struct Shared {
    args: Args,
    tls: Option<TlsConnector>,
    run: String,
    body: Vec<u8>,
    next: AtomicU64,
    start: Instant,
}

/// Opens a session, ready for MAIL. A greeting of 421 (bote allows 20 connections per
/// client address, and a session's slot is freed a moment after its 221) is retried after
/// a millisecond, as an MTA would retry later; such refusals are counted.
async fn open(s: &Shared, t: &mut Tally) -> Result<Conn, String> {
    for _ in 0..1000 {
        match open_once(s, &mut t.resumed).await {
            Err(e) if e.starts_with("greeting 421") => {
                t.refused += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            other => return other,
        }
    }
    Err("refused 1000 times".into())
}

async fn open_once(s: &Shared, resumed: &mut u64) -> Result<Conn, String> {
    let a = &s.args;
    let tcp = TcpStream::connect((a.host.as_str(), a.port))
        .await
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut c = Conn {
        io: BufStream::new(Box::new(tcp) as Box<dyn Io>),
        line: String::new(),
    };
    let (code, line) = c.reply().await?;
    if code != 220 {
        return Err(format!("greeting {line}"));
    }
    c.command("EHLO loadgen.example\r\n", 250).await?;
    if let Some(tls) = &s.tls {
        c.command("STARTTLS\r\n", 220).await?;
        // Nothing else was sent, so the buffer is empty: the socket is all there is.
        let inner = c.io.into_inner();
        let name = ServerName::try_from(a.server_name.clone()).map_err(|e| e.to_string())?;
        let stream = tls
            .connect(name, inner)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        if stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            *resumed += 1;
        }
        c = Conn {
            io: BufStream::new(Box::new(stream) as Box<dyn Io>),
            line: String::new(),
        };
        c.command("EHLO loadgen.example\r\n", 250).await?;
    }
    if let Some(user) = &a.user {
        let plain =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{}", a.password));
        c.command(&format!("AUTH PLAIN {plain}\r\n"), 235).await?;
    }
    Ok(c)
}

/// Sends one message; the latency of the reply to the final dot.
async fn send(s: &Shared, c: &mut Conn, i: u64) -> Result<Duration, String> {
    let a = &s.args;
    let head = message(&a.from, &a.to, &s.run, i, a.size, &mut Vec::new());
    c.command(&format!("MAIL FROM:<{}>\r\n", a.from), 250)
        .await?;
    c.command(&format!("RCPT TO:<{}>\r\n", a.to), 250).await?;
    c.command("DATA\r\n", 354).await?;
    c.io.write_all(&head).await.map_err(|e| e.to_string())?;
    c.io.write_all(&s.body).await.map_err(|e| e.to_string())?;
    c.io.write_all(b".\r\n").await.map_err(|e| e.to_string())?;
    c.io.flush().await.map_err(|e| e.to_string())?;
    let sent = Instant::now();
    let (code, line) = c.reply().await?;
    if code != 250 {
        return Err(format!("final dot -> {line}"));
    }
    Ok(sent.elapsed())
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    failed: u64,
    refused: u64,
    resumed: u64,
    first_error: Option<String>,
}

async fn session(s: Arc<Shared>) -> Tally {
    let mut t = Tally::default();
    let mut conn: Option<(Conn, u64)> = None;
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= s.args.messages {
            break;
        }
        if s.args.rate > 0.0 {
            let due = s.start + Duration::from_secs_f64(i as f64 / s.args.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let result = async {
            let (mut c, n) = match conn.take() {
                Some(open) => open,
                None => (open(&s, &mut t).await?, 0),
            };
            let latency = send(&s, &mut c, i).await?;
            if n + 1 >= s.args.per_connection {
                let _ = c.command("QUIT\r\n", 221).await;
            } else {
                conn = Some((c, n + 1));
            }
            Ok::<_, String>(latency)
        }
        .await;
        match result {
            Ok(l) => t.latencies.push(l),
            Err(e) => {
                t.failed += 1;
                t.first_error.get_or_insert(e);
            }
        }
    }
    if let Some((mut c, _)) = conn {
        let _ = c.command("QUIT\r\n", 221).await;
    }
    t
}

/// The message's headers (a Message-ID of its own: bote refuses a repeated one) and body:
/// lines of 76 letters up to `size` bytes in all.
fn message(from: &str, to: &str, run: &str, i: u64, size: usize, body: &mut Vec<u8>) -> Vec<u8> {
    let head = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: Lastprobe {i}\r\nMessage-ID: <{run}.{i}@loadgen.example>\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    .into_bytes();
    if body.is_empty() {
        let line =
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmn\r\n";
        while head.len() + body.len() + line.len() <= size || body.is_empty() {
            body.extend_from_slice(line);
        }
    }
    head
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let args = Args::parse();
    let tls = args.tls.then(|| {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = &args.ca {
            for cert in bote::tls::load_certs("--ca", ca).unwrap() {
                roots.add(cert).unwrap();
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(bote::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    });
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut body = Vec::new();
    let head = message(&args.from, &args.to, &run, 0, args.size, &mut body);
    let size = head.len() + body.len();
    // One thread: the client should take as little of the machine as it can.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sessions = args.sessions;
    let wall = SystemTime::now();
    let shared = Arc::new(Shared {
        args,
        tls,
        run,
        body,
        next: AtomicU64::new(0),
        start: Instant::now(),
    });
    let tallies = rt.block_on(async {
        let tasks: Vec<_> = (0..sessions)
            .map(|_| tokio::spawn(session(shared.clone())))
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.unwrap());
        }
        all
    });
    let end = SystemTime::now();
    let mut latencies: Vec<Duration> = Vec::new();
    let mut failed = 0;
    let mut refused = 0;
    let mut resumed = 0;
    let mut first_error = None;
    for t in tallies {
        refused += t.refused;
        resumed += t.resumed;
        latencies.extend(t.latencies);
        failed += t.failed;
        if first_error.is_none() {
            first_error = t.first_error;
        }
    }
    latencies.sort();
    let out = serde_json::json!({
        "ok": latencies.len(),
        "failed": failed,
        "refused_connections": refused,
        "resumed_tls_sessions": resumed,
        "first_error": first_error,
        "start_unix": unix(wall),
        "end_unix": unix(end),
        "size": size,
        "p50_ms": percentile(&latencies, 0.50),
        "p99_ms": percentile(&latencies, 0.99),
        "max_ms": percentile(&latencies, 1.0),
    });
    println!("{out}");
}
