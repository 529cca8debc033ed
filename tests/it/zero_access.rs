//! Zero access at rest (spec §5): with the database, the configuration and every key file
//! of a gateway, but no user's password, recovery code or token, no stored body or subject
//! can be read, and no plaintext appears anywhere on disk or in the logs.

use std::cell::RefCell;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, Once};

use axum::http::StatusCode;
use base64::Engine;
use bote::crypto::keywrap::{self, Key32};
use bote::crypto::mailbox;
use bote::store::Backend;
use sequoia_openpgp::Cert;
use sequoia_openpgp::crypto::Password;
use sequoia_openpgp::parse::Parse;
use serde_json::json;
use sqlx::Row;

use crate::api::{cast, letter};
use crate::support::Gateway;

const SUBJECT: &str = "Geheimsache-7Q3KX";
const BODY: &str = "Inhalt-Z9X1WV";
const ATTACHMENT: &str = "Anhang-P4W8MN";

/// Log lines of this test, at every level.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

thread_local! {
    static CAPTURE: RefCell<Option<Captured>> = const { RefCell::new(None) };
}

/// Sends this thread's log lines to `captured` until the guard drops.
///
/// A scoped `set_default` subscriber races other test threads over tracing's cached
/// per-callsite interest (a callsite first hit elsewhere can stay disabled here), so one
/// process-wide subscriber decides per event, from a thread-local, whether to record it.
pub fn capture_logs(captured: &Captured) -> impl Drop {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::{Layer, filter};
        let capturing = || CAPTURE.with(|c| c.borrow().is_some());
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(|| ThreadWriter)
            .with_filter(filter::filter_fn(move |_| capturing()));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("no other global subscriber in the test binary");
    });
    CAPTURE.with(|c| *c.borrow_mut() = Some(captured.clone()));
    struct Stop;
    impl Drop for Stop {
        fn drop(&mut self) {
            CAPTURE.with(|c| *c.borrow_mut() = None);
        }
    }
    Stop
}

struct ThreadWriter;

impl Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|c| match c.borrow_mut().as_mut() {
            Some(captured) => captured.write(buf),
            None => Ok(buf.len()),
        })
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every file under `dir` with its content, from one listing whose files all could be read.
/// The checkpoint publisher may rename its temporary file between a listing and a read
/// (it runs on a blocking thread); the listing is then taken again, so nothing is skipped.
fn read_files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    for _ in 0..20 {
        let mut files = Vec::new();
        files_under(dir, &mut files);
        let read: Result<Vec<_>, _> = files
            .into_iter()
            .map(|f| std::fs::read(&f).map(|bytes| (f, bytes)))
            .collect();
        match read {
            Ok(read) => return read,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("cannot read the data directory: {e}"),
        }
    }
    panic!("files kept vanishing under {}", dir.display());
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Every secret key the gateway has on disk, unlocked with the configured passphrase.
fn gateway_secret_keys(setup: &Path) -> Vec<Cert> {
    let passphrase = std::fs::read_to_string(setup.join("keys/passphrase")).unwrap();
    let password = Password::from(passphrase.lines().next().unwrap());
    ["evidence.key.asc", "provider.key.asc"]
        .iter()
        .map(|f| {
            let cert = Cert::from_file(setup.join("keys").join(f)).unwrap();
            let primary = cert
                .primary_key()
                .key()
                .clone()
                .parts_into_secret()
                .unwrap();
            let unlocked = primary.decrypt_secret(&password).unwrap();
            cert.insert_packets(vec![sequoia_openpgp::Packet::from(unlocked)])
                .unwrap()
                .0
        })
        .collect()
}

// Current-thread runtime: the request path runs on this thread, whose lines are captured.
#[tokio::test]
async fn a_copy_of_the_disk_reads_no_message() {
    let captured = Captured::default();
    let _capturing = capture_logs(&captured);

    let c = cast(Gateway::new(Backend::Sqlite).await).await;
    let api = &c.api;
    let anna = api.login_high("anna@lemgo.example", &c.anna_otp).await;
    let mut body = letter("bauamt@lemgo.example", SUBJECT, BODY);
    body["attachments"] = json!([{ "name": "antrag.txt", "content_type": "text/plain",
        "data": base64::engine::general_purpose::STANDARD.encode(ATTACHMENT) }]);
    let r = api.post("/api/v1/messages", &anna, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let bernd = api.login("bernd@lemgo.example").await;
    let inbox = api
        .get("/api/v1/mailboxes/bauamt@lemgo.example/inbox", &bernd)
        .await
        .json();
    let id = inbox[0]["id"].as_str().unwrap();
    let read = api.get(&format!("/api/v1/messages/{id}"), &bernd).await;
    assert!(read.text().contains(BODY), "the member can read it");
    let token = api
        .post(
            "/api/v1/tokens",
            &bernd,
            json!({ "mailbox": "bauamt@lemgo.example" }),
        )
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        api.get(&format!("/api/v1/messages/{id}"), &token)
            .await
            .status,
        StatusCode::OK
    );

    // What a thief gets: every stored body and wrapped secret, and every key file.
    let mut conn = api.gw.store.pool().acquire().await.unwrap();
    let bodies: Vec<Vec<u8>> = sqlx::query("SELECT body FROM message_copies")
        .fetch_all(&mut *conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(bodies.len(), 2, "office copy and Anna's sent copy");
    let sessions: Vec<(Vec<u8>, Vec<u8>, i64)> =
        sqlx::query("SELECT token_hash, sealed_user_key, user_id FROM sessions")
            .fetch_all(&mut *conn)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
    let wraps: Vec<(String, i64, Vec<u8>)> =
        sqlx::query("SELECT holder_kind, holder_id, wrapped FROM key_wraps")
            .fetch_all(&mut *conn)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
    drop(conn);

    // The gateway's own secret keys decrypt no body.
    for key in gateway_secret_keys(api.gw.setup.path()) {
        for body in &bodies {
            assert!(mailbox::decrypt(&key, body).is_err());
        }
    }
    // The stored session hashes do not open the sealed user keys, and no stored value
    // opens a read-token wrap (the keys come from secrets only clients hold).
    for (hash, sealed, user_id) in &sessions {
        let guess = Key32::from_secret(hash, "session");
        let context = format!("session-user-key:{user_id}");
        assert!(keywrap::open(&guess, sealed, &context).is_err());
    }
    for (kind, holder, wrapped) in &wraps {
        if kind == "token" {
            for (hash, _, _) in &sessions {
                let guess = Key32::from_secret(hash, "read-token");
                let context = format!("read-token-data-key:{holder}");
                assert!(keywrap::open(&guess, wrapped, &context).is_err());
            }
        }
    }

    // No plaintext marker anywhere: database (with WAL), data dir, config, keys, logs.
    api.gw.store.close().await;
    let files = read_files_under(api.gw.setup.path());
    let names: Vec<_> = files.iter().map(|(f, _)| f).collect();
    assert!(names.iter().any(|f| f.ends_with("bote.db")), "{names:?}");
    // The scan sees stored cleartext: attachment names are evidence metadata by design.
    assert!(
        files.iter().any(|(_, bytes)| contains(bytes, "antrag.txt")),
        "the scan must see what the database holds in clear"
    );
    for (file, bytes) in &files {
        for marker in [SUBJECT, BODY, ATTACHMENT] {
            assert!(!contains(bytes, marker), "{marker} in {}", file.display());
        }
    }
    let logs = captured.0.lock().unwrap().clone();
    assert!(!logs.is_empty(), "the request path logged something");
    for marker in [SUBJECT, BODY, ATTACHMENT, token.as_str(), anna.as_str()] {
        assert!(!contains(&logs, marker), "{marker} in the logs");
    }
}
