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
