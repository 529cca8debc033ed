//! Interop with a real Postfix (issue 12): a private Postfix instance (its own config, queue
//! and data directories in a temporary directory, no chroot, a loopback port of its own;
//! tests/tools/postfix_instance.sh) is an external office's mail server. Both ways:
//! - office staff submit to Postfix, which relays to bote's MX as a registered office server
//!   (`relayhost`, from `smtp.trusted_networks`): the citizen receives it, her chain starts
//!   with ReceivedFromNonERDS; a message to an unknown mailbox is refused by bote with 550 and
//!   bounced by Postfix to the office, nothing stored;
//! - bote's relay worker delivers a citizen's message to the office over SMTP into Postfix,
//!   which puts it into the office's Maildir: PGP/MIME, with RelayToNonERDS in the timeline.
//!
//! Needs root (Postfix's master runs as root) and Debian's postfix and swaks
//! (scripts/setup-deps --test). The system's Postfix, running or not, is left alone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bote::evidence::Event;
use bote::store::Backend;

use crate::api::cast;
use crate::support::{Gateway, free_port, stderr, stdout};

const INSTANCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/tools/postfix_instance.sh"
);

/// A private Postfix instance, stopped when dropped.
struct Postfix {
    dir: tempfile::TempDir,
    port: u16,
}

impl Postfix {
    /// Listens on a free loopback port, relays everything that is not local to
    /// `[127.0.0.1]:relay_port`, and keeps mail for `amt@kreis.example` in a Maildir.
    fn start(relay_port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Postfix's delivery agents run as `nobody`: they must reach the Maildir.
        set_mode(dir.path(), 0o755);
        let maildirs = dir.path().join("mail");
        std::fs::create_dir(&maildirs).unwrap();
        let chown = Command::new("chown")
            .args(["nobody:nogroup"])
            .arg(&maildirs)
            .output()
            .unwrap();
        assert!(chown.status.success(), "{}", stderr(&chown));
        let port = free_port();
        let out = Command::new(INSTANCE)
            .arg("start")
            .arg(dir.path())
            .arg(port.to_string())
            .arg(format!("[127.0.0.1]:{relay_port}"))
            .arg("virtual_mailbox_domains=kreis.example")
            .arg(format!("virtual_mailbox_base={}", maildirs.display()))
            .arg("virtual_mailbox_maps=inline:{ amt@kreis.example=amt/ }")
            .arg("virtual_uid_maps=static:65534")
            .arg("virtual_gid_maps=static:65534")
            // Retry bote quickly if it ever defers (it should not).
            .arg("queue_run_delay=1s")
            .arg("minimal_backoff_time=1s")
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "Postfix did not start (scripts/setup-deps --test installs it; it needs root): {}",
            stderr(&out)
        );
        Self { dir, port }
    }

    fn maillog(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Waits (up to 30 s) for a line of Postfix's log containing every needle.
    async fn log_line(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.maillog();
            if let Some(line) = log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needles:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The messages in amt@kreis.example's Maildir.
    fn maildir(&self) -> Vec<String> {
        let new: PathBuf = self.dir.path().join("mail/amt/new");
        let Ok(entries) = std::fs::read_dir(new) else {
            return Vec::new();
        };
        entries
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect()
    }

    /// Waits (up to 30 s) for a message in the Maildir containing `needle`.
    async fn delivered(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(m) = self.maildir().into_iter().find(|m| m.contains(needle)) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "nothing with {needle:?} in the office's Maildir; Postfix's log:\n{}",
                self.maillog()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Office staff submit a message to their Postfix (swaks, plain SMTP from the office
    /// network); Postfix's reply.
    fn submit(&self, to: &str, subject: &str, body: &str) -> String {
        let out = Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{}", self.port)])
            .args(["--helo", "pc12.kreis.example"])
            .args(["--from", "amt@kreis.example", "--to", to])
            .args(["--header", &format!("Subject: {subject}")])
            .args(["--body", body])
            .output()
            .expect("swaks (scripts/setup-deps --test)");
        let text = stdout(&out);
        assert!(out.status.success(), "{text}{}", stderr(&out));
        text
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new(INSTANCE)
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

async fn count(store: &bote::store::Store, sql: &str) -> i64 {
    let mut conn = store.pool().acquire().await.unwrap();
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut *conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_relays_to_the_mx_as_an_office_server_and_receives_the_relay() {
    let c = cast(Gateway::new(Backend::Sqlite).await).await;
    let api = &c.api;
    // bote's MX, trusting the loopback network where the office's Postfix lives.
    let mut config = api.gw.config.clone();
    config.smtp.trusted_networks = vec!["127.0.0.0/8".parse().unwrap()];
    let mx_core = bote::gateway::Gateway::from_parts(
        api.gw.store.clone(),
        Arc::new(config),
        api.gw.keys.clone(),
        api.gw.log.clone(),
        api.gw.writer.clone(),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let mx = crate::smtp::mx(mx_core, &stop).await;
    let postfix = Postfix::start(mx);

    // bote → Postfix: the office amt@kreis.example is external, its server this Postfix;
    // Anna writes to it and the relay worker delivers.
    let home = tempfile::tempdir().unwrap();
    let cert = crate::interop::gpg_office_key(home.path(), "Kreisverwaltung <amt@kreis.example>");
    let (relayed_id, worker) = crate::interop::relay_to(&c, postfix.port, cert).await;
    let wire = postfix.delivered("multipart/encrypted").await;
    assert!(
        wire.contains("protocol=\"application/pgp-encrypted\"")
            && wire.contains("-----BEGIN PGP MESSAGE-----"),
        "{wire}"
    );
    assert!(
        !wire.contains("Akteneinsicht"),
        "the subject travels encrypted only"
    );
    assert!(wire.contains("Return-Path: <anna@lemgo.example>"), "{wire}");
    let mut timeline = String::new();
    for _ in 0..200 {
        timeline = stdout(&crate::support::run(api.gw.setup.cmd(&[
            "evidence",
            "timeline",
            &relayed_id,
        ])));
        if timeline.contains("RelayToNonERDS") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(timeline.contains("RelayToNonERDS"), "{timeline}");
    let amt = bote::address::EmailAddress::parse("amt@kreis.example").unwrap();
    {
        let mut conn = api.gw.store.pool().acquire().await.unwrap();
        let chain = bote::evidence::query::chain(&mut conn, &relayed_id, Some(&amt))
            .await
            .unwrap();
        let relay = &chain.last().unwrap().record;
        assert_eq!(relay.event, Event::RelayToNonERDS);
        // Postfix's own 250, word for word.
        let reply = relay.details.reply.clone().unwrap();
        assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    }
    worker.cancel();

    // Postfix → bote: staff of the office write to Anna through their Postfix.
    let messages = count(&api.gw.store, "SELECT COUNT(*) FROM messages").await;
    let out = postfix.submit("anna@lemgo.example", "Ihr Antrag", "Bewilligt.");
    assert!(out.contains("250 2.0.0 Ok: queued as"), "{out}");
    let sent = postfix
        .log_line(&["to=<anna@lemgo.example>", "status="])
        .await;
    assert!(
        sent.contains(&format!("relay=127.0.0.1[127.0.0.1]:{mx}"))
            && sent.contains("status=sent (250 2.0.0 accepted as "),
        "{sent}\n{}",
        postfix.maillog()
    );
    let id = sent
        .split("accepted as ")
        .nth(1)
        .and_then(|s| s.split([')', ' ']).next())
        .unwrap()
        .to_owned();
    let anna_address = bote::address::EmailAddress::parse("anna@lemgo.example").unwrap();
    {
        let mut conn = api.gw.store.pool().acquire().await.unwrap();
        let chain = bote::evidence::query::chain(&mut conn, &id, Some(&anna_address))
            .await
            .unwrap();
        let events: Vec<Event> = chain.iter().map(|e| e.record.event).collect();
        assert_eq!(
            events.first(),
            Some(&Event::ReceivedFromNonERDS),
            "{events:?}"
        );
        assert!(events.contains(&Event::ContentConsignment), "{events:?}");
        assert!(!events.contains(&Event::SubmissionAcceptance), "{events:?}");
    }
    let anna = api.login("anna@lemgo.example").await;
    let inbox = api
        .get("/api/v1/mailboxes/anna@lemgo.example/inbox", &anna)
        .await
        .json();
    let entry = inbox
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["gateway_id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not in Anna's inbox: {inbox}"));
    assert_eq!(entry["from"], "amt@kreis.example", "{entry}");
    let copy = entry["id"].as_str().unwrap();
    let opened = api
        .get(&format!("/api/v1/messages/{copy}"), &anna)
        .await
        .text();
    assert!(opened.contains("Bewilligt."), "{opened}");
    assert_eq!(
        count(&api.gw.store, "SELECT COUNT(*) FROM messages").await,
        messages + 1
    );

    // A mailbox bote does not have: bote refuses it, Postfix bounces it to the office.
    let evidence = count(&api.gw.store, "SELECT COUNT(*) FROM evidence").await;
    let out = postfix.submit("niemand@lemgo.example", "Irrläufer", "Falsch adressiert.");
    assert!(out.contains("250 2.0.0 Ok: queued as"), "{out}");
    let bounced = postfix
        .log_line(&["to=<niemand@lemgo.example>", "status="])
        .await;
    assert!(
        bounced.contains("status=bounced (host 127.0.0.1[127.0.0.1] said: 550"),
        "{bounced}"
    );
    let bounce = postfix.delivered("niemand@lemgo.example").await;
    assert!(
        bounce.contains("MAILER-DAEMON") && bounce.contains("550"),
        "{bounce}"
    );
    assert_eq!(
        count(&api.gw.store, "SELECT COUNT(*) FROM messages").await,
        messages + 1,
        "nothing stored for the unknown mailbox"
    );
    assert_eq!(
        count(&api.gw.store, "SELECT COUNT(*) FROM evidence").await,
        evidence,
        "no evidence for the unknown mailbox"
    );
    stop.cancel();
}
