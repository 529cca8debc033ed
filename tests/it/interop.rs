//! Real peers read what bote writes: GNU tar unpacks bundles, GnuPG and sqv verify the
//! evidence and manifest signatures with nothing but the published certificate.

use std::path::Path;
use std::process::Command;

use bote::evidence::Event;
use bote::store::Backend;
use sequoia_openpgp::parse::Parse;

use crate::support::{Gateway, record, run, stderr};

fn gpg(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--batch", "--no-tty", "--status-fd", "1"])
        .args(args)
        .output()
        .expect("gpg is installed (scripts/setup-deps --test)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpg_and_sqv_verify_evidence_from_an_unpacked_bundle() {
    let gw = Gateway::new(Backend::Sqlite).await;
    gw.commit(vec![
        record(
            Event::SubmissionAcceptance,
            "m-1",
            "bauamt@lemgo.example",
            1_795_000_000_000,
        ),
        record(
            Event::ContentConsignment,
            "m-1",
            "bauamt@lemgo.example",
            1_795_000_000_010,
        ),
    ])
    .await;
    let dir = gw.setup.path();
    let bundle = dir.join("bundle.tar");
    let out = run(gw
        .setup
        .cmd(&["proof", "export", "m-1", "-o", bundle.to_str().unwrap()]));
    assert!(out.status.success(), "{}", stderr(&out));

    let unpacked = dir.join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let tar = Command::new("tar")
        .arg("-xf")
        .arg(&bundle)
        .arg("-C")
        .arg(&unpacked)
        .output()
        .unwrap();
    assert!(
        tar.status.success(),
        "{}",
        String::from_utf8_lossy(&tar.stderr)
    );
    for f in [
        "README.txt",
        "manifest.json",
        "manifest.json.asc",
        "checkpoint",
        "keys/evidence.cert.asc",
        "keys/log.vkey",
        "evidence/001.json",
        "evidence/002.json.asc",
        "evidence/002.proof.json",
    ] {
        assert!(unpacked.join(f).is_file(), "{f} missing after GNU tar");
    }

    let home = tempfile::tempdir().unwrap();
    let cert = unpacked.join("keys/evidence.cert.asc");
    let import = gpg(home.path(), &["--import", cert.to_str().unwrap()]);
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    let fpr = gw.keys.evidence.fingerprint();
    for (sig, data) in [
        ("manifest.json.asc", "manifest.json"),
        ("evidence/001.json.asc", "evidence/001.json"),
        ("evidence/002.json.asc", "evidence/002.json"),
    ] {
        let v = gpg(
            home.path(),
            &[
                "--verify",
                unpacked.join(sig).to_str().unwrap(),
                unpacked.join(data).to_str().unwrap(),
            ],
        );
        let status = String::from_utf8_lossy(&v.stdout);
        assert!(
            v.status.success(),
            "gpg --verify {sig}: {}",
            String::from_utf8_lossy(&v.stderr)
        );
        assert!(
            status.contains("[GNUPG:] GOODSIG") && status.contains(&format!("VALIDSIG {fpr}")),
            "{status}"
        );

        let sqv = Command::new("sqv")
            .arg("--keyring")
            .arg(&cert)
            .arg(unpacked.join(sig))
            .arg(unpacked.join(data))
            .output()
            .expect("sqv is installed (scripts/setup-deps --test)");
        assert!(
            sqv.status.success(),
            "sqv {sig}: {}",
            String::from_utf8_lossy(&sqv.stderr)
        );
        assert!(String::from_utf8_lossy(&sqv.stdout).contains(&fpr));
    }

    // A changed record fails with both tools.
    let record_path = unpacked.join("evidence/001.json");
    let mut bytes = std::fs::read(&record_path).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&record_path, bytes).unwrap();
    let bad = gpg(
        home.path(),
        &[
            "--verify",
            unpacked.join("evidence/001.json.asc").to_str().unwrap(),
            record_path.to_str().unwrap(),
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stdout).contains("BADSIG"));
    let sqv = Command::new("sqv")
        .arg("--keyring")
        .arg(&cert)
        .arg(unpacked.join("evidence/001.json.asc"))
        .arg(&record_path)
        .output()
        .unwrap();
    assert!(!sqv.status.success());
}

#[test]
fn gpg_reads_what_bote_encrypts_to_a_mailbox_and_bote_reads_what_gpg_encrypts() {
    use bote::crypto::mailbox;
    use sequoia_openpgp::serialize::SerializeInto;
    let key = mailbox::generate("Bauamt Lemgo", "bauamt@lemgo.example").unwrap();
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.asc");
    std::fs::write(&secret, key.as_tsk().armored().to_vec().unwrap()).unwrap();
    let import = gpg(home.path(), &["--import", secret.to_str().unwrap()]);
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );

    // bote -> gpg
    let public = sequoia_openpgp::Cert::from_bytes(&mailbox::public_bytes(&key).unwrap()).unwrap();
    let message = mailbox::encrypt(&[&public], "Grüße vom Bürgerbüro\r\n".as_bytes()).unwrap();
    let encrypted = dir.path().join("m.pgp");
    std::fs::write(&encrypted, &message).unwrap();
    let out = gpg(home.path(), &["--decrypt", encrypted.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "gpg --decrypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains("Grüße vom Bürgerbüro"), "{status}");
    assert!(status.contains("DECRYPTION_OKAY"), "{status}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("AEAD"),
        "SEIPDv1 expected"
    );

    // gpg -> bote
    let plain = dir.path().join("p.txt");
    std::fs::write(&plain, "Antwort des Amts").unwrap();
    let sealed = dir.path().join("p.txt.gpg");
    let enc = gpg(
        home.path(),
        &[
            "--trust-model",
            "always",
            "--encrypt",
            "-r",
            "bauamt@lemgo.example",
            "-o",
            sealed.to_str().unwrap(),
            plain.to_str().unwrap(),
        ],
    );
    assert!(
        enc.status.success(),
        "gpg --encrypt: {}",
        String::from_utf8_lossy(&enc.stderr)
    );
    let decrypted = mailbox::decrypt(&key, &std::fs::read(&sealed).unwrap()).unwrap();
    assert_eq!(&decrypted[..], b"Antwort des Amts");
}

/// Generates an ed25519/cv25519 key pair in gpg (as an office would); returns its
/// armoured public certificate.
pub(crate) fn gpg_office_key(home: &Path, uid: &str) -> Vec<u8> {
    let out = gpg(
        home,
        &[
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            uid,
            "future-default",
            "default",
            "never",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--batch", "--export", "--armor", uid])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// An office's mail server (tests/tools/smtp_sink.py, aiosmtpd), killed when dropped.
pub(crate) struct Sink {
    child: std::process::Child,
    pub(crate) port: u16,
    pub(crate) dir: tempfile::TempDir,
}

impl Sink {
    pub(crate) fn start(mode: &str) -> Self {
        Self::launch(0, mode, None)
    }

    pub(crate) fn start_on(port: u16, mode: &str) -> Self {
        Self::launch(port, mode, None)
    }

    /// A sink that offers STARTTLS with `cert` (certificate, key: PEM files), and takes
    /// mail only under TLS.
    pub(crate) fn start_with_tls(mode: &str, cert: (&Path, &Path)) -> Self {
        Self::launch(0, mode, Some(cert))
    }

    /// Starts the sink on `port`, or on a port it picks itself if `port` is 0.
    fn launch(port: u16, mode: &str, tls: Option<(&Path, &Path)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let mut cmd = Command::new("python3");
        if let Some((cert, key)) = tls {
            cmd.env("SINK_TLS_CERT", cert).env("SINK_TLS_KEY", key);
        }
        let child = cmd
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/tools/smtp_sink.py"
            ))
            .arg(dir.path().join("mail"))
            .arg(port.to_string())
            .arg(mode)
            .arg(&ready)
            .spawn()
            .expect("python3 with aiosmtpd (scripts/setup-deps --test)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !ready.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the SMTP sink did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let port = std::fs::read_to_string(&ready)
            .unwrap()
            .trim()
            .parse()
            .expect("the sink names its port");
        Self { child, port, dir }
    }

    /// The first message received, waiting up to 30 s.
    pub(crate) async fn first(&self) -> (String, String) {
        let eml = self.dir.path().join("mail/1.eml");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !eml.exists() {
            assert!(std::time::Instant::now() < deadline, "nothing was relayed");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let envelope = std::fs::read_to_string(self.dir.path().join("mail/1.env")).unwrap();
        (std::fs::read_to_string(eml).unwrap(), envelope)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An external office relayed to `sink`, and the relay worker running: the message sent
/// by Anna, its gateway id, and the worker's stop switch.
pub(crate) async fn relay_to(
    c: &crate::api::Cast,
    port: u16,
    cert: Vec<u8>,
) -> (String, tokio_util::sync::CancellationToken) {
    let gateway_id = queue_relay(c, port, cert).await;
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(bote::queue::RelayWorker::new(c.api.core.clone()).run(stop.clone()));
    (gateway_id, stop)
}

/// Registers the external office amt@kreis.example (certificate `cert`), its mail server
/// at 127.0.0.1:`port`, relayed to under TLS mode `tls`.
pub(crate) fn add_kreis(c: &crate::api::Cast, port: u16, cert: Vec<u8>, tls: &str) {
    let cert_file = c.api.gw.setup.path().join("kreis.asc");
    std::fs::write(&cert_file, cert).unwrap();
    c.api.cli(
        &[
            "mailbox",
            "add",
            "--office",
            "amt@kreis.example",
            "--name",
            "Kreisverwaltung",
            "--relay",
            &format!("127.0.0.1:{port}"),
            "--relay-tls",
            tls,
            "--cert",
            cert_file.to_str().unwrap(),
        ],
        "",
    );
}

/// As [`relay_to`], without starting a relay worker: the gateway id of the queued message.
pub(crate) async fn queue_relay(c: &crate::api::Cast, port: u16, cert: Vec<u8>) -> String {
    use crate::api::letter;
    let api = &c.api;
    add_kreis(c, port, cert, "none");
    let anna = api.login_high("anna@lemgo.example", &c.anna_otp).await;
    let mut body = letter(
        "amt@kreis.example",
        "Antrag auf Akteneinsicht",
        "Ich beantrage Einsicht in die Akte 12/345.",
    );
    body["authoritative"] = serde_json::json!(true);
    let r = api.post("/api/v1/messages", &anna, body).await;
    assert_eq!(r.status, axum::http::StatusCode::CREATED, "{}", r.text());
    r.json()["gateway_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpg_decrypts_and_verifies_the_pgp_mime_relayed_to_an_external_office() {
    use crate::api::cast;
    let c = cast(Gateway::new(Backend::Sqlite).await).await;
    let api = &c.api;
    let home = tempfile::tempdir().unwrap();
    let cert = gpg_office_key(home.path(), "Kreisverwaltung <amt@kreis.example>");
    let sink = Sink::start("accept");
    let (gateway_id, stop) = relay_to(&c, sink.port, cert).await;

    // What the office's server received over SMTP, from the relay worker.
    let (wire, envelope) = sink.first().await;
    assert_eq!(envelope, "anna@lemgo.example\namt@kreis.example\n");
    assert!(wire.contains("multipart/encrypted"), "{wire}");
    assert!(
        wire.contains("protocol=\"application/pgp-encrypted\""),
        "{wire}"
    );
    assert!(wire.contains("Version: 1"), "{wire}");
    assert!(
        !wire.contains("Akteneinsicht"),
        "the subject travels encrypted only"
    );
    // The evidence names the server, the TLS mode and its exact reply; the job is done.
    let mut relayed = None;
    for _ in 0..200 {
        let timeline = crate::support::stdout(&crate::support::run(api.gw.setup.cmd(&[
            "evidence",
            "timeline",
            &gateway_id,
        ])));
        if timeline.contains("RelayToNonERDS") {
            relayed = Some(timeline);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(relayed.is_some(), "no RelayToNonERDS evidence");
    let mut conn = api.gw.store.pool().acquire().await.unwrap();
    let jobs = bote::store::messages::jobs_of(&mut conn, &gateway_id)
        .await
        .unwrap();
    assert_eq!((jobs[0].state.as_str(), jobs[0].attempts), ("done", 1));
    let chain = bote::evidence::query::chain(
        &mut conn,
        &gateway_id,
        Some(&bote::address::EmailAddress::parse("amt@kreis.example").unwrap()),
    )
    .await
    .unwrap();
    let relay = &chain.last().unwrap().record;
    assert_eq!(relay.event, bote::evidence::Event::RelayToNonERDS);
    assert_eq!(
        relay.details.remote_host.as_deref(),
        Some(format!("127.0.0.1:{}", sink.port).as_str())
    );
    assert_eq!(relay.details.tls_version.as_deref(), Some("plain; none"));
    assert!(
        relay
            .details
            .reply
            .as_deref()
            .unwrap()
            .starts_with("250 2.0.0 Ok: queued as KREIS1"),
        "{:?}",
        relay.details.reply
    );
    assert_eq!(relay.chain.unwrap().seq, 2);
    stop.cancel();

    let start = wire.find("-----BEGIN PGP MESSAGE-----").unwrap();
    let end = wire.find("-----END PGP MESSAGE-----").unwrap() + "-----END PGP MESSAGE-----".len();
    let armored = home.path().join("payload.asc");
    std::fs::write(&armored, &wire[start..end]).unwrap();

    // The office's gpg, knowing only the gateway's published provider certificate.
    let provider = api.gw.setup.path().join("keys/provider.cert.asc");
    let out = gpg(home.path(), &["--import", provider.to_str().unwrap()]);
    assert!(out.status.success());
    let plain = home.path().join("plain.eml");
    let out = gpg(
        home.path(),
        &[
            "--output",
            plain.to_str().unwrap(),
            "--decrypt",
            armored.to_str().unwrap(),
        ],
    );
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{status}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fingerprint = api.gw.keys.provider.fingerprint();
    assert!(
        status.contains(&format!("VALIDSIG {fingerprint}")),
        "{status}"
    );
    assert!(
        status.contains("NOTATION_NAME sender@lemgo.example"),
        "{status}"
    );
    assert!(
        status.contains("NOTATION_DATA anna@lemgo.example"),
        "{status}"
    );
    assert!(
        status.contains("NOTATION_NAME auth-level@lemgo.example"),
        "{status}"
    );
    let plain = std::fs::read_to_string(plain).unwrap();
    assert!(plain.contains("Akte 12/345"), "{plain}");
    // Protected headers: outside a placeholder subject, inside the real header, marked so
    // that readers (Thunderbird) show it.
    let outer = mail_parser::MessageParser::default()
        .parse(wire.as_bytes())
        .unwrap();
    assert_eq!(outer.subject(), Some("..."));
    let inner = mail_parser::MessageParser::default()
        .parse(plain.as_bytes())
        .unwrap();
    assert_eq!(inner.subject(), Some("Antrag auf Akteneinsicht"));
    assert_eq!(
        inner
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address()),
        Some("anna@lemgo.example")
    );
    assert_eq!(
        mail_parser::MimeHeaders::content_type(&inner)
            .and_then(|ct| ct.attribute("protected-headers")),
        Some("v1"),
        "{plain}"
    );
    assert_eq!(inner.message_id(), outer.message_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_gpg_encrypted_to_a_wkd_key_is_accepted_and_readable() {
    use crate::api::cast;
    let c = cast(Gateway::new(Backend::Sqlite).await).await;
    let api = &c.api;
    let home = tempfile::tempdir().unwrap();
    publish(api, "anna@lemgo.example").await;
    import_from_wkd(api, home.path(), "anna@lemgo.example").await;
    let armored = gpg_encrypt(
        home.path(),
        &["--recipient", "anna@lemgo.example"],
        "Content-Type: text/plain; charset=utf-8\r\n\r\nIhr Antrag wurde genehmigt.\r\n",
    );
    let message = pgp_mime(
        "bauamt@lemgo.example",
        &["anna@lemgo.example"],
        "<bescheid-1@lemgo.example>",
        &armored,
    );
    let token = api.send_token("bauamt@lemgo.example");
    let r = submit_raw(api, &token, &["anna@lemgo.example"], &message).await;
    assert_eq!(r.status, axum::http::StatusCode::CREATED, "{}", r.text());
    let record = &r.json()["submission_acceptance"][0]["record"];
    assert!(
        record["details"]["note"]
            .as_str()
            .unwrap()
            .contains("not scanned"),
        "{record}"
    );

    let session = api.login("anna@lemgo.example").await;
    let list = api
        .get("/api/v1/mailboxes/anna@lemgo.example/inbox", &session)
        .await
        .json();
    let id = list[0]["id"].as_str().unwrap();
    let opened = api.get(&format!("/api/v1/messages/{id}"), &session).await;
    assert_eq!(
        opened.status,
        axum::http::StatusCode::OK,
        "{}",
        opened.text()
    );
    let opened = opened.json();
    assert_eq!(opened["end_to_end"], true);
    assert_eq!(opened["subject"], "Bescheid");
    assert!(
        opened["text"]
            .as_str()
            .unwrap()
            .contains("Ihr Antrag wurde genehmigt."),
        "{opened}"
    );
}

/// Opts a citizen's mailbox into the public directory and WKD (its owner's choice).
async fn publish(api: &crate::api::Api, address: &str) {
    let session = api.login(address).await;
    let r = api
        .call(
            "PUT",
            &format!("/api/v1/mailboxes/{address}/directory"),
            Some(&session),
            Some(serde_json::json!({ "published": true })),
        )
        .await;
    assert_eq!(r.status, axum::http::StatusCode::OK, "{}", r.text());
}

/// Imports the certificate WKD serves for `address` into a GnuPG home, as `gpg
/// --locate-keys` would.
async fn import_from_wkd(api: &crate::api::Api, home: &Path, address: &str) {
    let parsed = bote::address::EmailAddress::parse(address).unwrap();
    let (local, domain) = address.split_once('@').unwrap();
    let r = api
        .call(
            "GET",
            &format!(
                "/.well-known/openpgpkey/{domain}/hu/{}?l={local}",
                parsed.wkd_hash()
            ),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, axum::http::StatusCode::OK, "WKD for {address}");
    let file = home.join(format!("{local}.pgp"));
    std::fs::write(&file, &r.body).unwrap();
    assert!(
        gpg(home, &["--import", file.to_str().unwrap()])
            .status
            .success()
    );
}

/// `entity` encrypted (and whatever else `args` asks) by gpg, ASCII-armoured.
fn gpg_encrypt(home: &Path, args: &[&str], entity: &str) -> String {
    let input = home.join("entity.txt");
    std::fs::write(&input, entity).unwrap();
    let output = home.join("entity.asc");
    let _ = std::fs::remove_file(&output);
    let mut all = vec!["--trust-model", "always", "--armor", "--output"];
    all.push(output.to_str().unwrap());
    all.extend_from_slice(args);
    all.extend(["--encrypt", input.to_str().unwrap()]);
    let out = gpg(home, &all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&output)
        .unwrap()
        .replace("\r\n", "\n")
}

/// An RFC 3156 PGP/MIME message around `armored`.
fn pgp_mime(from: &str, to: &[&str], message_id: &str, armored: &str) -> String {
    format!(
        "From: {from}\r\nTo: {}\r\nSubject: Bescheid\r\nMessage-ID: {message_id}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b1\"\r\n\
         \r\n--b1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--b1\r\n\
         Content-Type: application/octet-stream\r\n\r\n{}\r\n--b1--\r\n",
        to.join(", "),
        armored.trim_end().replace('\n', "\r\n")
    )
}

async fn submit_raw(
    api: &crate::api::Api,
    token: &str,
    to: &[&str],
    message: &str,
) -> crate::api::Reply {
    use base64::Engine;
    api.post(
        "/api/v1/messages",
        token,
        serde_json::json!({ "to": to,
            "rfc5322": base64::engine::general_purpose::STANDARD.encode(message) }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_content_nobody_can_read_is_refused_and_never_picked_up() {
    use crate::api::{cast, events, only_copy};
    use axum::http::StatusCode;
    let c = cast(Gateway::new(Backend::Sqlite).await).await;
    let api = &c.api;
    api.office("ordnungsamt@lemgo.example", "bernd@lemgo.example");
    publish(api, "anna@lemgo.example").await;
    let home = tempfile::tempdir().unwrap();
    for address in ["anna@lemgo.example", "ordnungsamt@lemgo.example"] {
        import_from_wkd(api, home.path(), address).await;
    }
    let out = gpg(
        home.path(),
        &[
            "--passphrase",
            "",
            "--quick-gen-key",
            "Fachverfahren <verfahren@elsewhere.example>",
            "default",
            "default",
            "never",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = api.send_token("bauamt@lemgo.example");
    let both = ["anna@lemgo.example", "ordnungsamt@lemgo.example"];
    let entity = "Content-Type: text/plain; charset=utf-8\r\n\r\nBescheid vom Amt.\r\n";

    // Encrypted to the citizen only, sent to both: refused, naming the office.
    let armored = gpg_encrypt(home.path(), &["--recipient", "anna@lemgo.example"], entity);
    let r = submit_raw(
        api,
        &token,
        &both,
        &pgp_mime("bauamt@lemgo.example", &both, "<e1@amt.example>", &armored),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert_eq!(r.problem(), "urn:bote:problem:not-encrypted-to-recipient");
    let detail = r.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("ordnungsamt@lemgo.example"), "{detail}");
    assert!(!detail.contains("anna@"), "{detail}");

    // Encrypted to someone else entirely (gpg -e -r someone-else): refused too.
    let armored = gpg_encrypt(
        home.path(),
        &["--recipient", "verfahren@elsewhere.example"],
        entity,
    );
    let one = ["ordnungsamt@lemgo.example"];
    let r = submit_raw(
        api,
        &token,
        &one,
        &pgp_mime("bauamt@lemgo.example", &one, "<e2@amt.example>", &armored),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());

    // Encrypted to both and signed by the office software's own key: accepted, and the
    // reader is told who signed inside (a key the gateway does not hold: unverified).
    let armored = gpg_encrypt(
        home.path(),
        &[
            "--recipient",
            "anna@lemgo.example",
            "--recipient",
            "ordnungsamt@lemgo.example",
            "--local-user",
            "verfahren@elsewhere.example",
            "--sign",
        ],
        entity,
    );
    let r = submit_raw(
        api,
        &token,
        &both,
        &pgp_mime("bauamt@lemgo.example", &both, "<e3@amt.example>", &armored),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let bernd = api.login("bernd@lemgo.example").await;
    let copy = only_copy(api, &bernd, "ordnungsamt@lemgo.example", "inbox").await;
    let id = copy["id"].as_str().unwrap();
    let opened = api.get(&format!("/api/v1/messages/{id}"), &bernd).await;
    assert_eq!(opened.status, StatusCode::OK, "{}", opened.text());
    let opened = opened.json();
    assert!(
        opened["text"]
            .as_str()
            .unwrap()
            .contains("Bescheid vom Amt.")
    );
    assert_eq!(opened["handover_recorded"], true);
    let signature = &opened["signatures"][0];
    assert_eq!(signature["status"], "unknown-key", "{opened}");
    let fpr = gpg(
        home.path(),
        &[
            "--with-colons",
            "--fingerprint",
            "verfahren@elsewhere.example",
        ],
    );
    let listing = String::from_utf8_lossy(&fpr.stdout).into_owned();
    let issuer = signature["issuer"].as_str().unwrap();
    assert!(
        !issuer.is_empty() && listing.contains(issuer),
        "{issuer} not in {listing}"
    );

    // A hidden recipient cannot be checked at submission; if it is not the office, opening
    // is an explicit error and records no handover.
    let armored = gpg_encrypt(
        home.path(),
        &["--hidden-recipient", "verfahren@elsewhere.example"],
        entity,
    );
    let r = submit_raw(
        api,
        &token,
        &one,
        &pgp_mime("bauamt@lemgo.example", &one, "<e4@amt.example>", &armored),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let list = api
        .get("/api/v1/mailboxes/ordnungsamt@lemgo.example/inbox", &bernd)
        .await
        .json();
    let hidden = list[0]["id"].as_str().unwrap();
    let r = api.get(&format!("/api/v1/messages/{hidden}"), &bernd).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert_eq!(r.problem(), "urn:bote:problem:undecryptable");
    let timeline = api
        .get(&format!("/api/v1/messages/{hidden}/timeline"), &bernd)
        .await
        .json();
    assert_eq!(
        events(&timeline),
        ["SubmissionAcceptance", "ContentConsignment"]
    );
}
