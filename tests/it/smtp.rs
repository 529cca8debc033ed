//! SMTP submission with real clients (Python's smtplib, and a raw socket speaking the
//! protocol line by line): STARTTLS and implicit TLS, AUTH with office tokens, the 250 naming
//! the gateway id after the commit, and every refusal with its code, nothing stored.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bote::smtp::{self, Port};
use bote::store::Backend;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{Cast, cast};
use crate::support::{Gateway, run, stdout};

const PROBE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/smtp_probe.py");

/// The cast, with SMTP submission listening on both ports.
struct Smtp {
    cast: Cast,
    submission: u16,
    submissions: u16,
    ca: String,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Smtp {
    async fn start() -> Self {
        let cast = cast(Gateway::new(Backend::Sqlite).await).await;
        let config = cast.api.gw.config.clone();
        let cert = Arc::new(bote::tls::ServerCert::load(&config.tls).unwrap());
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut ports = Vec::new();
        for port in [Port::Submission, Port::Submissions] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            ports.push(listener.local_addr().unwrap().port());
            let acceptor = TlsAcceptor::from(
                bote::tls::server_config_with_client_certs(cert.clone()).unwrap(),
            );
            tracker.spawn(smtp::accept_loop(
                cast.api.core.clone(),
                listener,
                acceptor,
                port,
                stop.clone(),
                tracker.clone(),
            ));
        }
        Self {
            ca: config.tls.ca_cert.0.display().to_string(),
            cast,
            submission: ports[0],
            submissions: ports[1],
            stop,
            tracker,
        }
    }

    /// The gateway's core over the same store and keys, its configuration edited.
    fn core_with(&self, edit: impl FnOnce(&mut bote::config::Config)) -> bote::gateway::Gateway {
        let gw = &self.cast.api.gw;
        let mut config = gw.config.clone();
        edit(&mut config);
        bote::gateway::Gateway::from_parts(
            gw.store.clone(),
            Arc::new(config),
            gw.keys.clone(),
            gw.log.clone(),
            gw.writer.clone(),
        )
    }

    /// Sends a message with smtplib; the reply to the final dot.
    fn send(
        &self,
        mode: &str,
        user: &str,
        password: &str,
        from: &str,
        to: &str,
        headers: &[&str],
    ) -> String {
        let port = if mode == "tls" {
            self.submissions
        } else {
            self.submission
        };
        let mut cmd = Command::new("python3");
        cmd.arg(PROBE)
            .args(["send", "localhost", &port.to_string(), mode, &self.ca])
            .args([user, password, from, to])
            .args(headers);
        let out = run(cmd);
        format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr))
    }

    /// As [`Smtp::send`] over STARTTLS, presenting the client certificate `cert` (PEM
    /// files: certificate, key).
    fn send_with_cert(&self, cert: (&Path, &Path), user: &str, password: &str) -> String {
        let mut cmd = Command::new("python3");
        cmd.arg(PROBE)
            .env("PROBE_CLIENT_CERT", cert.0)
            .env("PROBE_CLIENT_KEY", cert.1)
            .args([
                "send",
                "localhost",
                &self.submission.to_string(),
                "starttls",
            ])
            .args([&self.ca, user, password, user, ANNA]);
        let out = run(cmd);
        format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr))
    }

    /// Speaks `script` line by line; every reply line the server sent.
    fn raw(&self, mode: &str, script: &str) -> String {
        let port = if mode == "tls" {
            self.submissions
        } else {
            self.submission
        };
        raw_on(port, mode, &self.ca, script)
    }

    async fn messages(&self) -> i64 {
        let mut conn = self.cast.api.gw.store.pool().acquire().await.unwrap();
        sqlx::query_scalar("SELECT COUNT(*) FROM messages")
            .fetch_one(&mut *conn)
            .await
            .unwrap()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

const OFFICE: &str = "bauamt@lemgo.example";
const ANNA: &str = "anna@lemgo.example";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn office_software_submits_over_starttls_and_implicit_tls() {
    let s = Smtp::start().await;
    let token = s.cast.api.send_token(OFFICE);
    for mode in ["starttls", "tls"] {
        let s2 = &s;
        let token = token.clone();
        let reply = tokio::task::spawn_blocking({
            let ca = s2.ca.clone();
            let (sub, subs) = (s2.submission, s2.submissions);
            move || {
                let port = if mode == "tls" { subs } else { sub };
                let mut cmd = Command::new("python3");
                cmd.arg(PROBE)
                    .args(["send", "localhost", &port.to_string(), mode, &ca])
                    .args([
                        OFFICE,
                        &token,
                        OFFICE,
                        ANNA,
                        "X-de-mail-confirmation-of-retrieve=yes",
                    ]);
                let out = run(cmd);
                format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr))
            }
        })
        .await
        .unwrap();
        assert!(
            reply.starts_with("250 2.0.0 accepted as "),
            "{mode}: {reply}"
        );
        let id = reply.trim().rsplit(' ').next().unwrap().to_owned();
        // The same evidence as any submission; the option header became the option.
        let timeline = stdout(&run(s
            .cast
            .api
            .gw
            .setup
            .cmd(&["evidence", "timeline", &id])));
        assert!(
            timeline.contains("SubmissionAcceptance") && timeline.contains("ContentConsignment"),
            "{timeline}"
        );
        let mut conn = s.cast.api.gw.store.pool().acquire().await.unwrap();
        let (channel, confirm): (String, i64) = sqlx::query_as(
            "SELECT channel, retrieval_confirmation FROM messages WHERE gateway_id = $1",
        )
        .bind(&id)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert_eq!((channel.as_str(), confirm), ("smtp", 1));
        // Office submissions over SMTP keep no sender copy (spec §3.2).
        let copies: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM message_copies WHERE gateway_id = $1")
                .bind(&id)
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        assert_eq!(copies, 1);
    }
}

/// AUTH failures count per client address across sessions: a guesser who reconnects after
/// each closed session does not get fresh tries. Past the allowance (5 failures of one
/// mailbox from one address) even the right token is refused for a while, unchecked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_count_per_client_address_across_sessions() {
    let s = Smtp::start().await;
    let token = s.cast.api.send_token(OFFICE);
    let b64 = |t: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, t);
    let wrong = format!(
        "AUTH PLAIN {}\n",
        b64(&format!("\0{OFFICE}\0bote_token_wrong"))
    );
    let right = format!("AUTH PLAIN {}\n", b64(&format!("\0{OFFICE}\0{token}")));
    let session = |auths: &str| format!("EHLO x\n<TLS>\nEHLO x\n{auths}QUIT\n");

    // Three failures end a session; one more in the next, and one in a third make five.
    // The right token comes in that third session: the wait after the fifth failure is one
    // second, shorter than a new client's start-up on a loaded machine.
    let first = s.raw("starttls", &session(&wrong.repeat(3)));
    assert!(replied(&first, "421"), "{first}");
    let second = s.raw("starttls", &session(&wrong));
    assert_eq!(second.matches("535 5.7.8").count(), 1, "{second}");
    let third = s.raw("starttls", &session(&(wrong.clone() + &right)));
    assert_eq!(third.matches("535 5.7.8").count(), 1, "{third}");
    assert!(
        third.contains("454 4.7.0 too many failed authentications; try again in"),
        "the right token after five failures is refused for now:\n{third}"
    );
    assert!(!replied(&third, "235"), "{third}");

    // The wait after the fifth failure is one second.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let later = s.raw("starttls", &session(&right));
    assert!(replied(&later, "235"), "{later}");
}

/// AUTH while the gateway cannot read its credentials (here: the table is renamed away)
/// is a temporary failure of the gateway, not the client's: 454, the session goes on, and
/// nothing counts toward the lockout, so the right token works once the database does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_during_a_database_failure_is_temporary_and_not_counted() {
    let s = Smtp::start().await;
    let token = s.cast.api.send_token(OFFICE);
    let b64 = |t: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, t);
    let right = format!("AUTH PLAIN {}\n", b64(&format!("\0{OFFICE}\0{token}")));
    let rename = async |from: &str, to: &str| {
        let sql = format!("ALTER TABLE {from} RENAME TO {to}");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(s.cast.api.gw.store.pool())
            .await
            .unwrap();
    };
    rename("credentials", "credentials_away").await;
    let during = s.raw(
        "starttls",
        &format!("EHLO x\n<TLS>\nEHLO x\n{}QUIT\n", right.repeat(6)),
    );
    rename("credentials_away", "credentials").await;
    assert_eq!(
        during
            .matches("454 4.7.0 temporary authentication failure")
            .count(),
        6,
        "{during}"
    );
    assert!(
        !replied(&during, "421") && !replied(&during, "535"),
        "{during}"
    );
    // Not for ever: the tenth in a session ends it.
    rename("credentials", "credentials_away").await;
    let many = s.raw(
        "starttls",
        &format!("EHLO x\n<TLS>\nEHLO x\n{}QUIT\n", right.repeat(12)),
    );
    rename("credentials_away", "credentials").await;
    assert_eq!(many.matches("454 4.7.0").count(), 9, "{many}");
    assert!(replied(&many, "421"), "{many}");
    let after = s.raw("starttls", &format!("EHLO x\n<TLS>\nEHLO x\n{right}QUIT\n"));
    assert!(replied(&after, "235"), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_code_and_stores_nothing() {
    let s = Smtp::start().await;
    let token = s.cast.api.send_token(OFFICE);
    let before = s.messages().await;
    let b64 = |t: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, t);
    let plain = b64(&format!("\0{OFFICE}\0{token}"));
    let authed = format!("EHLO x\n<TLS>\nEHLO x\nAUTH PLAIN {plain}\n");
    // A member's web session: a credential, but not one for SMTP.
    let session = s.cast.api.login("bernd@lemgo.example").await;
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "a web session's token",
            format!(
                "EHLO x\n<TLS>\nEHLO x\nAUTH PLAIN {}\nQUIT\n",
                b64(&format!("\0{OFFICE}\0{session}"))
            ),
            "535 5.7.8",
        ),
        (
            "AUTH before STARTTLS",
            format!("EHLO x\nAUTH PLAIN {plain}\nQUIT\n"),
            "530 5.7.0",
        ),
        (
            "MAIL before STARTTLS",
            "EHLO x\nMAIL FROM:<bauamt@lemgo.example>\nQUIT\n".into(),
            "530 5.7.0",
        ),
        (
            "MAIL before AUTH",
            "EHLO x\n<TLS>\nEHLO x\nMAIL FROM:<bauamt@lemgo.example>\nQUIT\n".into(),
            "530 5.7.0 authentication required",
        ),
        (
            "a wrong token",
            format!(
                "EHLO x\n<TLS>\nEHLO x\nAUTH PLAIN {}\nQUIT\n",
                b64(&format!("\0{OFFICE}\0bote_token_wrong"))
            ),
            "535 5.7.8",
        ),
        (
            "another mailbox's address",
            format!(
                "EHLO x\n<TLS>\nEHLO x\nAUTH PLAIN {}\nQUIT\n",
                b64(&format!("\0{ANNA}\0{token}"))
            ),
            "535 5.7.8",
        ),
        (
            "a forged sender",
            format!("{authed}MAIL FROM:<anna@lemgo.example>\nQUIT\n"),
            "553 5.7.1",
        ),
        (
            "relaying to a foreign domain",
            format!("{authed}MAIL FROM:<{OFFICE}>\nRCPT TO:<victim@elsewhere.example>\nQUIT\n"),
            "550 5.7.1",
        ),
        (
            "SIZE over the limit",
            format!("{authed}MAIL FROM:<{OFFICE}> SIZE=999999999\nQUIT\n"),
            "552 5.3.4",
        ),
        ("garbage", "HELLO there\nQUIT\n".into(), "500 5.5.1"),
        (
            "an over-long command",
            format!("EHLO {}\nQUIT\n", "x".repeat(600)),
            "500 5.5.2",
        ),
        (
            "DATA without recipients",
            format!("{authed}MAIL FROM:<{OFFICE}>\nDATA\nQUIT\n"),
            "554 5.5.1",
        ),
        (
            "a bare LF in the message",
            format!(
                "{authed}MAIL FROM:<{OFFICE}>\nRCPT TO:<{ANNA}>\nDATA\n~From: {OFFICE}\\r\\nTo: {ANNA}\\r\\n\\r\\nbare\\nLF\\r\\n\n.\nQUIT\n"
            ),
            "550 5.6.2",
        ),
        (
            "a message smuggled behind LF . CRLF",
            format!(
                "{authed}MAIL FROM:<{OFFICE}>\nRCPT TO:<{ANNA}>\nDATA\n~From: {OFFICE}\\r\\nTo: {ANNA}\\r\\n\\r\\ncarrier\\n.\\r\\nMAIL FROM:<{OFFICE}>\\r\\nRCPT TO:<{ANNA}>\\r\\nDATA\\r\\nFrom: {OFFICE}\\r\\nTo: {ANNA}\\r\\n\\r\\nsmuggled\\r\\n\n.\nQUIT\n"
            ),
            "550 5.6.2",
        ),
        (
            "a NUL in the message",
            format!(
                "{authed}MAIL FROM:<{OFFICE}>\nRCPT TO:<{ANNA}>\nDATA\n~From: {OFFICE}\n~\n~nul\\0byte\n.\nQUIT\n"
            ),
            "550 5.6.0",
        ),
        (
            "an over-long text line",
            format!(
                "{authed}MAIL FROM:<{OFFICE}>\nRCPT TO:<{ANNA}>\nDATA\n~From: {OFFICE}\n~\n~{}\n.\nQUIT\n",
                "y".repeat(1200)
            ),
            "500 5.5.2",
        ),
        (
            "a From that is not the mailbox",
            format!(
                "{authed}MAIL FROM:<{OFFICE}>\nRCPT TO:<{ANNA}>\nDATA\n~From: {ANNA}\n~To: {ANNA}\n~Subject: x\n~\n~x\n.\nQUIT\n"
            ),
            "553 5.7.1",
        ),
        (
            "commands pipelined behind STARTTLS",
            "EHLO x\nSTARTTLS\\r\\nMAIL FROM:<x@y.example>\nQUIT\n".into(),
            "554 5.5.0",
        ),
    ];
    for (what, script, expected) in cases {
        let out = tokio::task::spawn_blocking({
            let s_ca = s.ca.clone();
            let port = s.submission;
            move || raw_on(port, "starttls", &s_ca, &script)
        })
        .await
        .unwrap();
        assert!(
            out.contains(expected),
            "{what}: expected {expected} in\n{out}"
        );
    }
    assert_eq!(s.messages().await, before, "a refusal stored a message");

    // Too many recipients: the 101st is deferred, the first hundred stand.
    let mut script = format!("{authed}MAIL FROM:<{OFFICE}>\n");
    for _ in 0..101 {
        script.push_str(&format!("RCPT TO:<{ANNA}>\n"));
    }
    script.push_str("QUIT\n");
    let out = s.raw("starttls", &script);
    assert_eq!(out.matches("250 2.1.5").count(), 100, "{out}");
    assert!(out.contains("452 4.5.3"), "{out}");

    // Three failed AUTHs end the session.
    let wrong = b64(&format!("\0{OFFICE}\0bote_token_nope"));
    let out = s.raw(
        "starttls",
        &format!("EHLO x\n<TLS>\nEHLO x\nAUTH PLAIN {wrong}\nAUTH PLAIN {wrong}\nAUTH PLAIN {wrong}\nNOOP\n"),
    );
    assert!(out.contains("421 4.7.0"), "{out}");
    assert!(!out.contains("250 2.0.0 ok"), "the session went on: {out}");

    // A message larger than the limit, sent without SIZE: refused after it was read.
    let big = "z".repeat(900);
    let mut script =
        format!("{authed}MAIL FROM:<{OFFICE}>\nRCPT TO:<{ANNA}>\nDATA\n~From: {OFFICE}\n~\n");
    let lines = s.cast.api.gw.config.limits.message_size_submission / 900 + 10;
    for _ in 0..lines {
        script.push_str(&format!("~{big}\n"));
    }
    script.push_str(".\nQUIT\n");
    let out = s.raw("starttls", &script);
    assert!(out.contains("552 5.3.4"), "{out}");
    assert_eq!(s.messages().await, before);

    // A client that vanishes mid-DATA leaves nothing behind, and others go on.
    let out = s.raw(
        "starttls",
        &format!("{authed}MAIL FROM:<{OFFICE}>\nRCPT TO:<{ANNA}>\nDATA\n~From: {OFFICE}\n~\n~half a message\n"),
    );
    assert!(replied(&out, "354"), "{out}");
    let reply = s.send("starttls", OFFICE, &token, OFFICE, ANNA, &[]);
    assert!(reply.starts_with("250 2.0.0 accepted as "), "{reply}");
    assert_eq!(s.messages().await, before + 1);
}

/// A session that only talks is closed after `MAX_COMMANDS`; one that delivers mail is
/// not (an office server keeping its connection open), because each accepted message
/// starts the count again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_only_talks_is_closed_one_that_delivers_is_not() {
    let s = Smtp::start().await;
    let token = s.cast.api.send_token(OFFICE);
    let max = bote::smtp::session::MAX_COMMANDS as usize;
    let noops = |n: usize| "NOOP\n".repeat(n);
    // EHLO is the first command; the NOOP that makes max + 1 is refused and ends it.
    let out = s.raw("starttls", &format!("EHLO x\n{}QUIT\n", noops(max)));
    assert_eq!(
        out.matches("250 2.0.0").count(),
        max - 1,
        "{}",
        &out[out.len() - 300..]
    );
    assert!(
        out.contains("421 4.7.0 too many commands in one session"),
        "{}",
        &out[out.len() - 300..]
    );
    assert!(!replied(&out, "221"), "the session went on");
    // Lines too long to be read as commands count too.
    let long = format!("{}\n", "A".repeat(600)).repeat(max);
    let out = s.raw("starttls", &format!("EHLO x\n{long}QUIT\n"));
    assert_eq!(out.matches("500 5.5.2 line too long").count(), max - 1);
    assert!(
        out.contains("421 4.7.0 too many commands in one session"),
        "{}",
        &out[out.len() - 300..]
    );
    assert!(!replied(&out, "221"), "the session went on");

    let b64 = |t: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, t);
    let plain = b64(&format!("\0{OFFICE}\0{token}"));
    let message = |subject: &str| {
        format!(
            "MAIL FROM:<{OFFICE}>\nRCPT TO:<{ANNA}>\nDATA\n~From: {OFFICE}\n~To: {ANNA}\n\
             ~Subject: {subject}\n~\n~Text\n.\n"
        )
    };
    // (4 + 100 + 3) + ((max - 110) + 3) + ((max - 10) + 1) commands: over `max` in all,
    // never `max` since the last accepted message.
    let script = format!(
        "EHLO x\n<TLS>\nEHLO x\nAUTH PLAIN {plain}\n{}{}{}{}{}QUIT\n",
        noops(100),
        message("first"),
        noops(max - 110),
        message("second"),
        noops(max - 10),
    );
    let before = s.messages().await;
    let out = s.raw("starttls", &script);
    assert_eq!(
        out.matches("250 2.0.0 accepted as ").count(),
        2,
        "{}",
        &out[out.len() - 300..]
    );
    assert!(replied(&out, "221"), "{}", &out[out.len() - 300..]);
    assert!(!replied(&out, "421"), "{}", &out[out.len() - 300..]);
    assert_eq!(s.messages().await, before + 2);
}

/// Shutdown (SIGTERM) lets a transaction in the middle of DATA finish with its 250 and the
/// message stored, tells a session waiting between commands 421 4.3.2, and takes no new
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_a_message_in_flight_and_closes_idle_sessions() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let s = Smtp::start().await;
    let token = s.cast.api.send_token(OFFICE);
    let before = s.messages().await;

    // Between commands: a plain session on the STARTTLS port after its EHLO.
    let idle = tokio::net::TcpStream::connect(("127.0.0.1", s.submission))
        .await
        .unwrap();
    let mut idle = tokio::io::BufReader::new(idle);
    let mut line = String::new();
    idle.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("220 "), "{line}");
    idle.get_mut().write_all(b"EHLO x\r\n").await.unwrap();
    loop {
        line.clear();
        idle.read_line(&mut line).await.unwrap();
        if line.starts_with("250 ") {
            break;
        }
    }

    // In DATA: the probe pauses after half the message, while the gateway shuts down.
    let b64 = |t: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, t);
    let plain = b64(&format!("\0{OFFICE}\0{token}"));
    let script = format!(
        "EHLO x\n<TLS>\nEHLO x\nAUTH PLAIN {plain}\nMAIL FROM:<{OFFICE}>\nRCPT TO:<{ANNA}>\n\
         DATA\n~From: {OFFICE}\n~To: {ANNA}\n~Subject: late\n~\n~first half\n<SLEEP 2>\n\
         ~second half\n.\n"
    );
    let mut probe = Command::new("python3")
        .arg(PROBE)
        .args(["raw", "localhost", &s.submission.to_string(), "starttls"])
        .arg(&s.ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = probe.stdin.take().unwrap();
        stdin.write_all(script.as_bytes()).unwrap();
    }
    let stdout_pipe = probe.stdout.take().unwrap();
    let (in_data_tx, in_data) = tokio::sync::oneshot::channel();
    let replies = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut in_data_tx = Some(in_data_tx);
        let mut all = String::new();
        for l in std::io::BufReader::new(stdout_pipe).lines() {
            let l = l.unwrap();
            if l.starts_with("354 ") {
                in_data_tx.take().map(|tx| tx.send(()));
            }
            all.push_str(&l);
            all.push('\n');
        }
        all
    });
    tokio::time::timeout(Duration::from_secs(30), in_data)
        .await
        .expect("the probe reached DATA")
        .unwrap();

    s.stop.cancel();
    line.clear();
    idle.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("421 4.3.2 "), "{line}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(("127.0.0.1", s.submission))
        .await
        .is_ok()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "still accepting connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let out = replies.await.unwrap();
    assert!(out.contains("\n250 2.0.0 accepted as "), "{out}");
    probe.wait().unwrap();
    s.tracker.close();
    tokio::time::timeout(Duration::from_secs(10), s.tracker.wait())
        .await
        .expect("every session ended");
    assert_eq!(s.messages().await, before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_submits_with_starttls_and_over_implicit_tls() {
    let s = Smtp::start().await;
    let token = s.cast.api.send_token(OFFICE);
    for (flag, port) in [("--tls", s.submission), ("--tlsc", s.submissions)] {
        let out = tokio::task::spawn_blocking({
            let (ca, token) = (s.ca.clone(), token.clone());
            move || {
                let mut cmd = Command::new("swaks");
                cmd.args(["--server", &format!("localhost:{port}"), flag])
                    .args(["--tls-verify", "--tls-ca-path", &ca])
                    .args([
                        "--auth",
                        "PLAIN",
                        "--auth-user",
                        OFFICE,
                        "--auth-password",
                        &token,
                    ])
                    .args(["--from", OFFICE, "--to", ANNA, "--h-From", OFFICE])
                    .args(["--header", "Subject: Bescheid per swaks"])
                    .args(["--body", "Ihr Antrag wurde bewilligt."]);
                run(cmd)
            }
        })
        .await
        .unwrap();
        let text = stdout(&out);
        assert!(
            out.status.success(),
            "{flag}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("<~  250 2.0.0 accepted as "),
            "{flag}: {text}"
        );
    }
}

/// An MX listener of `core`'s gateway; its port.
pub(crate) async fn mx(core: bote::gateway::Gateway, stop: &CancellationToken) -> u16 {
    listen(core, stop, Port::Mx).await
}

/// A listener of `kind` on a free port, serving `core` until `stop`.
async fn listen(core: bote::gateway::Gateway, stop: &CancellationToken, kind: Port) -> u16 {
    listen_at(core, stop, kind, "127.0.0.1:0").await
}

/// [`listen`] on a free port of `bind` (`[::]:0`: dual stack, as in production).
async fn listen_at(
    core: bote::gateway::Gateway,
    stop: &CancellationToken,
    kind: Port,
    bind: &str,
) -> u16 {
    let config = core.config().clone();
    let cert = Arc::new(bote::tls::ServerCert::load(&config.tls).unwrap());
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = TlsAcceptor::from(bote::tls::server_config_with_client_certs(cert).unwrap());
    let tracker = TaskTracker::new();
    tracker.spawn(smtp::accept_loop(
        core,
        listener,
        acceptor,
        kind,
        stop.clone(),
        tracker.clone(),
    ));
    port
}

/// On a dual-stack listener (`[::]`, as deploy/bote.production.toml binds) an IPv4 office
/// server connects as `::ffff:127.0.0.1`; it is still in the IPv4 trusted network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv4_office_server_is_trusted_on_a_dual_stack_listener() {
    let s = Smtp::start().await;
    let home = tempfile::tempdir().unwrap();
    add_external_office(&s, home.path(), "Kreisverwaltung", "amt@kreis.example");
    let core = s.core_with(|c| c.smtp.trusted_networks = vec!["127.0.0.0/8".parse().unwrap()]);
    let port = listen_at(core, &s.stop, Port::Mx, "[::]:0").await;
    let script = format!("EHLO x\nMAIL FROM:<amt@kreis.example>\nRCPT TO:<{ANNA}>\nQUIT\n");
    let ca = s.ca.clone();
    let out =
        tokio::task::spawn_blocking(move || raw_from("127.0.0.1", port, "plain", &ca, &script))
            .await
            .unwrap();
    assert!(out.contains("250 2.1.5 recipient ok"), "{out}");
    assert!(!replied(&out, "550"), "{out}");
}

/// Whether the server sent a reply with this code: a line that starts with it, so a
/// random gateway id that happens to contain the digits does not count.
pub(crate) fn replied(out: &str, code: &str) -> bool {
    out.lines().any(|line| {
        line.strip_prefix(code)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '-']))
    })
}

pub(crate) fn raw_on(port: u16, mode: &str, ca: &str, script: &str) -> String {
    raw_with_cert(port, mode, ca, script, None)
}

/// As [`raw_on`], presenting a client certificate (PEM files: certificate, key) under TLS.
fn raw_with_cert(
    port: u16,
    mode: &str,
    ca: &str,
    script: &str,
    cert: Option<(&Path, &Path)>,
) -> String {
    let env: Vec<(&str, &std::ffi::OsStr)> = cert
        .map(|(cert, key)| {
            vec![
                ("PROBE_CLIENT_CERT", cert.as_os_str()),
                ("PROBE_CLIENT_KEY", key.as_os_str()),
            ]
        })
        .unwrap_or_default();
    raw_with_env(port, mode, ca, script, &env)
}

/// As [`raw_on`], connecting from another loopback address (`127.0.0.2`: another client).
fn raw_from(source: &str, port: u16, mode: &str, ca: &str, script: &str) -> String {
    raw_with_env(
        port,
        mode,
        ca,
        script,
        &[("PROBE_SOURCE", std::ffi::OsStr::new(source))],
    )
}

fn raw_with_env(
    port: u16,
    mode: &str,
    ca: &str,
    script: &str,
    env: &[(&str, &std::ffi::OsStr)],
) -> String {
    let mut child = Command::new("python3")
        .envs(env.iter().copied())
        .arg(PROBE)
        .args(["raw", "localhost", &port.to_string(), mode, ca])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr))
}

/// Registers the external office `name <address>` (a fresh gpg key made in `home`, its mail
/// server `mail.<domain>:25`).
fn add_external_office(s: &Smtp, home: &Path, name: &str, address: &str) {
    let cert = crate::interop::gpg_office_key(home, &format!("{name} <{address}>"));
    let cert_file = s.cast.api.gw.setup.path().join(format!("{name}.asc"));
    std::fs::write(&cert_file, cert).unwrap();
    let domain = address.rsplit('@').next().unwrap();
    s.cast.api.cli(
        &[
            "mailbox",
            "add",
            "--office",
            address,
            "--name",
            name,
            "--relay",
            &format!("mail.{domain}:25"),
            "--cert",
            cert_file.to_str().unwrap(),
        ],
        "",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_office_mail_server_delivers_to_citizens_over_mx() {
    let s = Smtp::start().await;
    let home = tempfile::tempdir().unwrap();
    add_external_office(&s, home.path(), "Kreisverwaltung", "amt@kreis.example");
    let core_with = |trusted: &str| {
        s.core_with(|config| {
            config.smtp.trusted_networks = if trusted.is_empty() {
                Vec::new()
            } else {
                vec![trusted.parse().unwrap()]
            };
        })
    };
    let trusted = mx(core_with("127.0.0.0/8"), &s.stop).await;
    let untrusted = mx(core_with(""), &s.stop).await;
    let before = s.messages().await;

    let letter = format!(
        "EHLO mail.kreis.example\nMAIL FROM:<amt@kreis.example>\nRCPT TO:<{ANNA}>\nDATA\n\
         ~From: amt@kreis.example\n~To: {ANNA}\n~Subject: Ihr Antrag\n~\n~Bewilligt.\n.\nQUIT\n"
    );
    let ca = s.ca.clone();
    let out = tokio::task::spawn_blocking(move || raw_on(trusted, "plain", &ca, &letter))
        .await
        .unwrap();
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("250 2.0.0 accepted as "))
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    let timeline = stdout(&run(s
        .cast
        .api
        .gw
        .setup
        .cmd(&["evidence", "timeline", &id])));
    assert!(
        timeline.contains("ReceivedFromNonERDS") && timeline.contains("ContentConsignment"),
        "{timeline}"
    );
    assert!(!timeline.contains("SubmissionAcceptance"), "{timeline}");
    // Anna reads it, from the office, unauthenticated by this gateway (level none).
    let anna = s.cast.api.login("anna@lemgo.example").await;
    let inbox = s
        .cast
        .api
        .get("/api/v1/mailboxes/anna@lemgo.example/inbox", &anna)
        .await
        .json();
    assert_eq!(inbox[0]["from"], "amt@kreis.example", "{inbox}");

    let ca = s.ca.clone();
    let cases: Vec<(u16, String, &str)> = vec![
        (
            untrusted,
            "EHLO x\nMAIL FROM:<amt@kreis.example>\nQUIT\n".into(),
            "550 5.7.1 this gateway accepts mail only from registered office mail servers",
        ),
        (
            trusted,
            "EHLO x\nMAIL FROM:<bauamt@lemgo.example>\nQUIT\n".into(),
            "550 5.7.1 bauamt@lemgo.example is not a registered office",
        ),
        (
            trusted,
            "EHLO x\nMAIL FROM:<amt@kreis.example>\nRCPT TO:<amt@kreis.example>\nQUIT\n".into(),
            "550 5.7.1 amt@kreis.example: relaying denied",
        ),
        (
            trusted,
            "EHLO x\nMAIL FROM:<amt@kreis.example>\nRCPT TO:<someone@elsewhere.example>\nQUIT\n"
                .into(),
            "550 5.7.1",
        ),
        (
            trusted,
            "EHLO x\nAUTH PLAIN AGZvbwBiYXI=\nQUIT\n".into(),
            "503 5.5.1 AUTH is for the submission port",
        ),
    ];
    for (port, script, expected) in cases {
        let ca = ca.clone();
        let out = tokio::task::spawn_blocking(move || raw_on(port, "plain", &ca, &script))
            .await
            .unwrap();
        assert!(out.contains(expected), "expected {expected} in\n{out}");
    }
    assert_eq!(s.messages().await, before + 1);

    // A server known by its registered certificate delivers from any network, for its
    // own office only; an unregistered certificate is worth nothing.
    let dir = tempfile::tempdir().unwrap();
    let (server, server_key) = client_cert(dir.path(), "mail.kreis.example");
    let (stranger, stranger_key) = client_cert(dir.path(), "mail.fremd.example");
    let registered = s.cast.api.cli(
        &[
            "mailbox",
            "server-cert",
            "--office",
            "amt@kreis.example",
            "--cert",
            server.to_str().unwrap(),
        ],
        "",
    );
    assert!(
        registered.starts_with("server certificate: amt@kreis.example sha256="),
        "{registered}"
    );
    add_external_office(&s, home.path(), "Stadtwerke", "post@stadtwerke.example");
    let over_tls = |from: &str| {
        format!(
            "EHLO mail.kreis.example\n<TLS>\nEHLO mail.kreis.example\nMAIL FROM:<{from}>\n\
             RCPT TO:<{ANNA}>\nDATA\n~From: {from}\n~To: {ANNA}\n~Subject: Bescheid\n~\n~Text\n.\nQUIT\n"
        )
    };
    let cases = [
        (
            Some((&server, &server_key)),
            "amt@kreis.example",
            "250 2.0.0 accepted as ",
        ),
        (
            Some((&server, &server_key)),
            "post@stadtwerke.example",
            "550 5.7.1 this server's certificate is registered for another office",
        ),
        (
            Some((&stranger, &stranger_key)),
            "amt@kreis.example",
            "550 5.7.1 this gateway accepts mail only from registered office mail servers",
        ),
        (
            None,
            "amt@kreis.example",
            "550 5.7.1 this gateway accepts mail only from registered office mail servers",
        ),
    ];
    for (cert, from, expected) in cases {
        let out = tokio::task::block_in_place(|| {
            raw_with_cert(
                untrusted,
                "plain",
                &ca,
                &over_tls(from),
                cert.map(|(c, k)| (c.as_path(), k.as_path())),
            )
        });
        assert!(
            out.contains(expected),
            "{from}: expected {expected} in\n{out}"
        );
    }
    assert_eq!(s.messages().await, before + 2);
    crate::support::assert_one_line_error(
        &run(s.cast.api.gw.setup.cmd(&[
            "mailbox",
            "server-cert",
            "--office",
            OFFICE,
            "--cert",
            server.to_str().unwrap(),
        ])),
        &["bauamt@lemgo.example is not an external office"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_office_over_its_hourly_rate_is_told_to_come_back_later() {
    let s = Smtp::start().await;
    let api = &s.cast.api;
    let token = api.send_token(OFFICE);
    let set = api.cli(
        &[
            "mailbox",
            "rate-limit",
            "--office",
            OFFICE,
            "--messages-per-hour",
            "2",
        ],
        "",
    );
    assert_eq!(
        set.trim(),
        format!("rate limit: {OFFICE} 2 messages and 100000 recipients per hour")
    );
    let send = |s: &Smtp, token: &str| s.send("starttls", OFFICE, token, OFFICE, ANNA, &[]);
    for _ in 0..2 {
        let reply = tokio::task::block_in_place(|| send(&s, &token));
        assert!(reply.starts_with("250 2.0.0 accepted as "), "{reply}");
    }
    let before = s.messages().await;
    // Over SMTP: a temporary refusal, so office software queues and retries.
    let reply = tokio::task::block_in_place(|| send(&s, &token));
    assert!(
        reply.starts_with("450 4.7.1") && reply.contains("at most 2 messages per hour"),
        "{reply}"
    );
    // Over the API the same office gets 429 with Retry-After, and evidence of the refusal.
    let body = crate::api::letter(ANNA, "Bescheid", "Text");
    let r = api.post("/api/v1/messages", &token, body).await;
    assert_eq!(
        r.status,
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        "{}",
        r.text()
    );
    assert_eq!(r.problem(), "urn:bote:problem:send-rate-exceeded");
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((60..=3600).contains(&wait), "Retry-After {wait}");
    let refused = r.json()["gateway_id"].as_str().unwrap().to_owned();
    let timeline = stdout(&run(api.gw.setup.cmd(&["evidence", "timeline", &refused])));
    assert!(timeline.contains("SubmissionRejection"), "{timeline}");
    assert_eq!(s.messages().await, before, "nothing stored for a refusal");
    // Unlimited again (0), and citizens have the daily quota instead.
    api.cli(
        &[
            "mailbox",
            "rate-limit",
            "--office",
            OFFICE,
            "--messages-per-hour",
            "0",
        ],
        "",
    );
    let reply = tokio::task::block_in_place(|| send(&s, &token));
    assert!(reply.starts_with("250 2.0.0 accepted as "), "{reply}");
    crate::support::assert_one_line_error(
        &run(api.gw.setup.cmd(&[
            "mailbox",
            "rate-limit",
            "--office",
            ANNA,
            "--messages-per-hour",
            "5",
        ])),
        &[
            "anna@lemgo.example is a citizen mailbox",
            "rate limits are for office mailboxes",
        ],
    );
}

/// A self-signed client certificate made with openssl: (certificate, key) in `dir`.
fn client_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={name}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_bound_to_a_client_certificate_submits_at_level_high_only_with_it() {
    let s = Smtp::start().await;
    let api = &s.cast.api;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = client_cert(dir.path(), "fachverfahren");
    let (other, other_key) = client_cert(dir.path(), "fremd");
    let token = api
        .cli(
            &[
                "token",
                "create",
                "--mailbox",
                OFFICE,
                "--client-cert",
                cert.to_str().unwrap(),
            ],
            "",
        )
        .trim()
        .to_owned();
    let reply = tokio::task::block_in_place(|| s.send_with_cert((&cert, &key), OFFICE, &token));
    assert!(reply.starts_with("250 2.0.0 accepted as "), "{reply}");
    let id = reply.trim().rsplit(' ').next().unwrap().to_owned();
    let mut conn = api.gw.store.pool().acquire().await.unwrap();
    let level: String = sqlx::query_scalar("SELECT auth_level FROM messages WHERE gateway_id = $1")
        .bind(&id)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(level, "high", "certificate and token are two factors");
    drop(conn);
    let mut conn = api.gw.store.pool().acquire().await.unwrap();
    let anna = bote::address::EmailAddress::parse(ANNA).unwrap();
    let chain = bote::evidence::query::chain(&mut conn, &id, Some(&anna))
        .await
        .unwrap();
    assert_eq!(
        chain[0].record.sender.auth_level,
        bote::accounts::AuthLevel::High,
        "the evidence attests it"
    );
    drop(conn);
    // Without the certificate, or with another one, the token opens nothing.
    let before = s.messages().await;
    let bare =
        tokio::task::block_in_place(|| s.send("starttls", OFFICE, &token, OFFICE, ANNA, &[]));
    assert!(bare.contains("(535, "), "{bare}");
    let wrong =
        tokio::task::block_in_place(|| s.send_with_cert((&other, &other_key), OFFICE, &token));
    assert!(wrong.contains("(535, "), "{wrong}");
    assert_eq!(s.messages().await, before);
    // An unbound token stays at level normal whatever certificate comes with it.
    let plain = api.send_token(OFFICE);
    let reply =
        tokio::task::block_in_place(|| s.send_with_cert((&other, &other_key), OFFICE, &plain));
    assert!(reply.starts_with("250 2.0.0 accepted as "), "{reply}");
    let id = reply.trim().rsplit(' ').next().unwrap().to_owned();
    let mut conn = api.gw.store.pool().acquire().await.unwrap();
    let level: String = sqlx::query_scalar("SELECT auth_level FROM messages WHERE gateway_id = $1")
        .bind(&id)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(level, "normal");
}

/// A session that announces `size` octets to Anna, sends a few lines, sleeps `pause`
/// seconds before the rest and the final dot, then quits.
fn announced(auth: &str, size: u64, pause: u32) -> String {
    format!(
        "EHLO office.example\n<TLS>\nEHLO office.example\nAUTH PLAIN {auth}\n\
         MAIL FROM:<{OFFICE}> SIZE={size}\nRCPT TO:<{ANNA}>\nDATA\n\
         ~From: {OFFICE}\n~To: {ANNA}\n~Subject: Planunterlagen\n~\n<SLEEP {pause}>\n~Anlage folgt\n.\nQUIT\n"
    )
}

/// `announced`, with `lines` lines of 990 octets sent before the pause.
fn sending(auth: &str, size: u64, lines: usize, pause: u32) -> String {
    let body = format!("~{}\n", "x".repeat(990)).repeat(lines);
    announced(auth, size, pause).replace("~\n<SLEEP", &format!("~\n{body}<SLEEP"))
}

/// [`raw_on`] in plain-then-STARTTLS mode, on a blocking thread.
fn spawn_raw(port: u16, ca: &str, script: String) -> tokio::task::JoinHandle<String> {
    let ca = ca.to_owned();
    tokio::task::spawn_blocking(move || raw_on(port, "plain", &ca, &script))
}

/// The submission listener of a gateway with an 8 MiB memory budget, AUTH PLAIN for the
/// office, and the gateway (to watch its budget).
async fn small_budget(s: &Smtp) -> (u16, String, bote::gateway::Gateway) {
    let token = s.cast.api.send_token(OFFICE);
    let core = s.core_with(|config| config.limits.memory_budget = 8 * 1024 * 1024);
    let port = listen(core.clone(), &s.stop, Port::Submission).await;
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("\0{OFFICE}\0{token}"));
    (port, auth, core)
}

/// Waits until messages in flight hold at least `bytes` of the budget: a client is then in
/// DATA with that much sent (a fixed pause would assume how fast a client starts).
async fn holding(core: &bote::gateway::Gateway, bytes: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while core.memory_in_use() < bytes {
        assert!(
            std::time::Instant::now() < deadline,
            "the budget never held {bytes} bytes (holds {})",
            core.memory_in_use()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_beyond_the_memory_budget_are_told_to_retry_before_they_are_read() {
    let s = Smtp::start().await;
    let (port, auth, core) = small_budget(&s).await;
    let ca = s.ca.clone();
    // The slow message holds the 1 MB it has sent while it pauses (longer than the 10 s a
    // message waits for room), and the 5 MB of its copies from its final dot to its commit.
    let script = sending(&auth, 1024 * 1024, 1000, 14);
    let slow = spawn_raw(port, &ca, script);
    holding(&core, 900 * 1000).await;
    let before = s.messages().await;
    // 1.5 MiB to one recipient takes 7.5 MiB with its copies: it fits an empty budget, not
    // the ~6.9 MiB left.
    let crowded_script = announced(&auth, 1536 * 1024, 0);
    let crowded = spawn_raw(port, &ca, crowded_script.clone());
    let crowded = crowded.await.unwrap();
    assert!(
        crowded.contains("452 4.3.1 the gateway is busy"),
        "the second waits for room, then is told to retry:\n{crowded}"
    );
    assert!(
        !replied(&crowded, "354"),
        "nothing of it was read:\n{crowded}"
    );
    assert_eq!(s.messages().await, before);
    let slow = slow.await.unwrap();
    assert!(slow.contains("250 2.0.0 accepted as "), "{slow}");
    // Once the room is free again, the retry goes through.
    let retry = tokio::task::spawn_blocking(move || raw_on(port, "plain", &ca, &crowded_script))
        .await
        .unwrap();
    assert!(retry.contains("250 2.0.0 accepted as "), "{retry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_announces_a_large_message_and_stalls_does_not_hold_the_budget() {
    let s = Smtp::start().await;
    let (port, auth, core) = small_budget(&s).await;
    let ca = s.ca.clone();
    // 20 MiB to one recipient is more than the whole budget: it is let in alone, and then
    // sends a few lines and stalls for longer than a message waits for room.
    let stalling = spawn_raw(port, &ca, announced(&auth, 20 * 1024 * 1024, 14));
    holding(&core, 1).await;
    let started = std::time::Instant::now();
    let other = spawn_raw(port, &ca, announced(&auth, 2048, 0))
        .await
        .unwrap();
    assert!(
        other.contains("250 2.0.0 accepted as "),
        "another message goes through meanwhile:\n{other}"
    );
    assert!(
        !stalling.is_finished(),
        "the stalling client was still in DATA ({:?})",
        started.elapsed()
    );
    let stalling = stalling.await.unwrap();
    assert!(stalling.contains("250 2.0.0 accepted as "), "{stalling}");
}

/// A session that has sent its message and needs the rest of its room at the final dot is
/// not kept waiting by a newcomer that announced a message and waits for room (with a
/// first-come queue the two waited for each other until the 10 s timeout, and the newcomer
/// got 452).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_waiting_for_room_does_not_hold_up_the_one_it_waits_for() {
    let s = Smtp::start().await;
    let (port, auth, core) = small_budget(&s).await;
    let ca = s.ca.clone();
    // 1.4 MB sent (7 MB with its copies), then 2 s before the final dot.
    let script = sending(&auth, 1536 * 1024, 1400, 2);
    let first = spawn_raw(port, &ca, script);
    holding(&core, 1300 * 1000).await;
    let started = std::time::Instant::now();
    let second = spawn_raw(port, &ca, announced(&auth, 1536 * 1024, 0));
    let first = first.await.unwrap();
    let first_done = started.elapsed();
    let second = second.await.unwrap();
    assert!(first.contains("250 2.0.0 accepted as "), "{first}");
    assert!(
        second.contains("250 2.0.0 accepted as "),
        "the newcomer waited its turn:\n{second}"
    );
    assert!(
        first_done < Duration::from_secs(8),
        "the first message waited out the newcomer's 10 s: {first_done:?}"
    );
}

/// A client waiting for the whole budget (an announced message larger than it) while
/// another session holds a little does not keep small messages waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announcement_waiting_for_the_whole_budget_does_not_hold_up_others() {
    let s = Smtp::start().await;
    let (port, auth, core) = small_budget(&s).await;
    let ca = s.ca.clone();
    let stalling = spawn_raw(port, &ca, announced(&auth, 2048, 14));
    holding(&core, 1).await;
    let greedy = spawn_raw(port, &ca, announced(&auth, 20 * 1024 * 1024, 0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let other = spawn_raw(port, &ca, announced(&auth, 2048, 0))
        .await
        .unwrap();
    assert!(other.contains("250 2.0.0 accepted as "), "{other}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "a small message waited out the greedy one's 10 s: {:?}",
        started.elapsed()
    );
    let greedy = greedy.await.unwrap();
    assert!(
        greedy.contains("452 4.3.1"),
        "the whole budget never came free:\n{greedy}"
    );
    assert!(stalling.await.unwrap().contains("250 2.0.0 accepted as "));
}

/// A message larger than the whole budget is let through alone over SMTP too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_the_whole_budget_passes_alone_over_smtp() {
    let s = Smtp::start().await;
    let token = s.cast.api.send_token(OFFICE);
    let core = s.core_with(|config| config.limits.memory_budget = 1024 * 1024);
    let port = listen(core, &s.stop, Port::Submission).await;
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("\0{OFFICE}\0{token}"));
    let body = format!("~{}\n", "x".repeat(990)).repeat(1600);
    let script = format!(
        "EHLO office.example\n<TLS>\nEHLO office.example\nAUTH PLAIN {auth}\n\
         MAIL FROM:<{OFFICE}> SIZE={}\nRCPT TO:<{ANNA}>\nDATA\n\
         ~From: {OFFICE}\n~To: {ANNA}\n~Subject: Planunterlagen\n~\n{body}.\nQUIT\n",
        1600 * 1000 + 200
    );
    let ca = s.ca.clone();
    let out = tokio::task::spawn_blocking(move || raw_on(port, "plain", &ca, &script))
        .await
        .unwrap();
    assert!(
        out.contains("250 2.0.0 accepted as "),
        "{}",
        &out[out.len().saturating_sub(600)..]
    );
}

/// While its messages arrive, one client address holds at most a quarter of the memory
/// budget (2 MiB of 8): a client that sends and stalls on several connections cannot hold
/// it all, and other clients are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_holds_at_most_a_quarter_of_the_budget_while_its_messages_arrive() {
    let s = Smtp::start().await;
    let (port, auth, core) = small_budget(&s).await;
    let ca = s.ca.clone();
    // 1.5 MB sent, then a pause longer than the 10 s a message waits for room.
    let stalling = spawn_raw(port, &ca, sending(&auth, 1600 * 1000, 1500, 14));
    holding(&core, 1400 * 1000).await;
    // 0.7 MB more from the same address is past its share; from another, it is not.
    let (same, other) = tokio::join!(
        tokio::task::spawn_blocking({
            let (ca, script) = (ca.clone(), sending(&auth, 800 * 1000, 700, 0));
            move || raw_on(port, "plain", &ca, &script)
        }),
        tokio::task::spawn_blocking({
            let (ca, script) = (ca.clone(), sending(&auth, 800 * 1000, 700, 0));
            move || raw_from("127.0.0.2", port, "plain", &ca, &script)
        }),
    );
    let (same, other) = (same.unwrap(), other.unwrap());
    assert!(
        other.contains("250 2.0.0 accepted as "),
        "another client:\n{}",
        &other[other.len().saturating_sub(400)..]
    );
    assert!(
        same.contains("452 4.3.1"),
        "the same client past its share:\n{}",
        &same[same.len().saturating_sub(400)..]
    );
    let stalling = stalling.await.unwrap();
    assert!(stalling.contains("250 2.0.0 accepted as "), "{stalling}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_client_limit_are_turned_away() {
    use tokio::io::AsyncReadExt as _;
    let s = Smtp::start().await;
    let core = s.core_with(|config| config.smtp.max_connections_per_client = 3);
    let port = listen(core, &s.stop, Port::Submission).await;
    async fn greeting(port: u16) -> (tokio::net::TcpStream, String) {
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut buf = vec![0u8; 512];
        let n = c.read(&mut buf).await.unwrap();
        (c, String::from_utf8_lossy(&buf[..n]).into_owned())
    }
    let mut open = Vec::new();
    for _ in 0..3 {
        let (c, hello) = greeting(port).await;
        assert!(hello.starts_with("220 "), "{hello}");
        open.push(c);
    }
    let (_, turned_away) = greeting(port).await;
    assert!(
        turned_away.starts_with("421 4.7.0 too many connections from your address"),
        "{turned_away}"
    );
    // A closed session gives its place back.
    drop(open.pop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut hello = String::new();
    while std::time::Instant::now() < deadline {
        hello = greeting(port).await.1;
        if hello.starts_with("220 ") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(hello.starts_with("220 "), "{hello}");
}

/// The MX listener takes mail up to `limits.message_size_gateway` (its EHLO says so), and
/// the pipeline must not then refuse it by the smaller submission limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_office_server_may_send_up_to_the_gateway_size_over_mx() {
    let s = Smtp::start().await;
    let home = tempfile::tempdir().unwrap();
    add_external_office(&s, home.path(), "Kreisverwaltung", "amt@kreis.example");
    let core = s.core_with(|config| {
        config.smtp.trusted_networks = vec!["127.0.0.0/8".parse().unwrap()];
        config.limits.message_size_submission = 4000;
        config.limits.message_size_gateway = 40_000;
    });
    let port = mx(core, &s.stop).await;
    let body: String = (0..100)
        .map(|i| format!("~Zeile {i:03} {}\n", "x".repeat(80)))
        .collect();
    let letter = format!(
        "EHLO mail.kreis.example\nMAIL FROM:<amt@kreis.example> SIZE=12000\nRCPT TO:<{ANNA}>\nDATA\n\
         ~From: amt@kreis.example\n~To: {ANNA}\n~Subject: Anlage\n~\n{body}.\nQUIT\n"
    );
    let ca = s.ca.clone();
    let out = tokio::task::spawn_blocking(move || raw_on(port, "plain", &ca, &letter))
        .await
        .unwrap();
    assert!(out.contains("SIZE 40000"), "{out}");
    assert!(out.contains("250 2.0.0 accepted as "), "{out}");
}

/// A server known by its certificate speaks for its own office: it cannot report, from the
/// null sender, that a delivery to another office failed (RelayToNonERDSFailure evidence).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_office_server_reports_failures_of_its_own_office_only() {
    let s = Smtp::start().await;
    let home = tempfile::tempdir().unwrap();
    add_external_office(&s, home.path(), "Kreisverwaltung", "amt@kreis.example");
    add_external_office(&s, home.path(), "Stadtwerke", "post@stadtwerke.example");
    let dir = tempfile::tempdir().unwrap();
    let (server, server_key) = client_cert(dir.path(), "mail.kreis.example");
    s.cast.api.cli(
        &[
            "mailbox",
            "server-cert",
            "--office",
            "amt@kreis.example",
            "--cert",
            server.to_str().unwrap(),
        ],
        "",
    );
    // The Bauamt writes to both offices; the Kreis gets the message (and its Message-ID).
    let token = s.cast.api.send_token(OFFICE);
    let sent = tokio::task::block_in_place(|| {
        s.send(
            "starttls",
            OFFICE,
            &token,
            OFFICE,
            "amt@kreis.example,post@stadtwerke.example",
            &["Message-ID=<dsn-forgery-1@lemgo.example>"],
        )
    });
    assert!(sent.starts_with("250"), "{sent}");
    let port = mx(s.core_with(|_| {}), &s.stop).await;
    let dsn = |failed: &str| {
        format!(
            "EHLO mail.kreis.example\n<TLS>\nEHLO mail.kreis.example\nMAIL FROM:<>\nRCPT TO:<{OFFICE}>\nDATA\n\
             ~From: MAILER-DAEMON@kreis.example\n~To: {OFFICE}\n~Subject: Undelivered\n\
             ~Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n~\n\
             ~--b\n~Content-Type: message/delivery-status\n~\n~Reporting-MTA: dns; mail.kreis.example\n~\n\
             ~Final-Recipient: rfc822; {failed}\n~Action: failed\n~Status: 5.1.1\n~\n~--b\n\
             ~Content-Type: text/rfc822-headers\n~\n~Message-ID: <dsn-forgery-1@lemgo.example>\n~--b--\n.\nQUIT\n"
        )
    };
    let cert = Some((server.as_path(), server_key.as_path()));
    // Not relayed yet: no server has the message, so none can report on it.
    let early = tokio::task::block_in_place(|| {
        raw_with_cert(port, "plain", &s.ca, &dsn("amt@kreis.example"), cert)
    });
    assert!(early.contains("recorded for 0 recipient(s)"), "{early}");
    // As if relayed to both offices' servers.
    let mut conn = s.cast.api.gw.store.pool().acquire().await.unwrap();
    sqlx::query("UPDATE outbound_jobs SET state = 'done'")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let other = tokio::task::block_in_place(|| {
        raw_with_cert(port, "plain", &s.ca, &dsn("post@stadtwerke.example"), cert)
    });
    assert!(
        other.contains("recorded for 0 recipient(s)"),
        "the Kreis's server reported a failure at the Stadtwerke:\n{other}"
    );
    let own = tokio::task::block_in_place(|| {
        raw_with_cert(port, "plain", &s.ca, &dsn("amt@kreis.example"), cert)
    });
    assert!(own.contains("recorded for 1 recipient(s)"), "{own}");
}

/// Reads one SMTP reply (all its lines) from `r`.
async fn reply_of(r: &mut (impl tokio::io::AsyncBufRead + Unpin)) -> String {
    use tokio::io::AsyncBufReadExt;
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        assert!(
            r.read_line(&mut line).await.unwrap() > 0,
            "closed after {reply}"
        );
        reply.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return reply;
        }
    }
}

/// A message whose lines the gateway's read buffer splits anywhere (the client writes odd
/// pieces, pausing now and then) arrives exactly as sent: dots unstuffed, a line of the
/// full 1000 octets kept, nothing lost or doubled at a split; an overlong line split the
/// same way is refused with 500 5.5.2, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_split_anywhere_by_the_network_arrive_exactly() {
    use tokio::io::{AsyncWriteExt, BufReader};
    let s = Smtp::start().await;
    let home = tempfile::tempdir().unwrap();
    add_external_office(&s, home.path(), "Kreisverwaltung", "amt@kreis.example");
    let trusted = mx(
        s.core_with(|config| config.smtp.trusted_networks = vec!["127.0.0.0/8".parse().unwrap()]),
        &s.stop,
    )
    .await;

    let mut text = String::new();
    for i in 0..1500usize {
        let line = match i % 5 {
            0 => format!(".{i} a line that starts with a dot"),
            1 => "x".repeat(998), // 1000 octets with CRLF: the longest line allowed
            2 => String::new(),
            3 => ".".to_owned(),
            _ => format!("Zeile {i} {}", "y".repeat(i % 97)),
        };
        text.push_str(&line);
        text.push('\n');
    }
    let mut wire = format!("From: amt@kreis.example\r\nTo: {ANNA}\r\nSubject: Stueckweise\r\n\r\n");
    for line in text.lines() {
        if line.starts_with('.') {
            wire.push('.');
        }
        wire.push_str(line);
        wire.push_str("\r\n");
    }
    wire.push_str(".\r\n");
    let overlong = format!("Subject: x\r\n\r\n{}\r\nok\r\n.\r\n", "z".repeat(1001));

    let stream = tokio::net::TcpStream::connect(("127.0.0.1", trusted))
        .await
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    assert!(reply_of(&mut read).await.starts_with("220"));
    let mut dribble = async |data: &str| {
        let sizes = [7usize, 333, 1, 4099, 998, 2, 1001, 64];
        let (mut at, mut n) = (0, 0);
        while at < data.len() {
            let end = (at + sizes[n % sizes.len()]).min(data.len());
            write.write_all(&data.as_bytes()[at..end]).await.unwrap();
            write.flush().await.unwrap();
            if n % 16 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (at, n) = (end, n + 1);
        }
    };
    for command in [
        "EHLO mail.kreis.example\r\n".to_owned(),
        "MAIL FROM:<amt@kreis.example>\r\n".to_owned(),
        format!("RCPT TO:<{ANNA}>\r\n"),
        "DATA\r\n".to_owned(),
    ] {
        dribble(&command).await;
        let reply = reply_of(&mut read).await;
        assert!(
            reply.starts_with('2') || reply.starts_with("354"),
            "{reply}"
        );
    }
    dribble(&wire).await;
    let accepted = reply_of(&mut read).await;
    let id = accepted
        .trim()
        .strip_prefix("250 2.0.0 accepted as ")
        .unwrap_or_else(|| panic!("{accepted}"))
        .to_owned();
    for command in [
        "MAIL FROM:<amt@kreis.example>\r\n".to_owned(),
        format!("RCPT TO:<{ANNA}>\r\n"),
        "DATA\r\n".to_owned(),
    ] {
        dribble(&command).await;
        reply_of(&mut read).await;
    }
    dribble(&overlong).await;
    let refused = reply_of(&mut read).await;
    assert!(refused.starts_with("500 5.5.2"), "{refused}");
    dribble("QUIT\r\n").await;
    assert!(reply_of(&mut read).await.starts_with("221"));

    let anna = s.cast.api.login(ANNA).await;
    let r = s
        .cast
        .api
        .get(&format!("/api/v1/messages/{id}"), &anna)
        .await;
    let shown = r.json()["text"].as_str().unwrap().replace("\r\n", "\n");
    assert_eq!(shown.trim_end(), text.trim_end());
    assert_eq!(s.messages().await, 1, "the overlong message is not stored");
}
