//! Evidence and the transparency log on both backends: commits, proofs, restarts, bundles,
//! tampering, roll-back, and the CLI around them.

use bote::evidence::bundle::{self, Anchor, Trust, VerifyError};
use bote::evidence::{Commitment, Details, Event, EvidenceRecord, ReasonCode, Timestamp};
use bote::store::Backend;
use sqlx::Row;
use tlog_tiles::{check_record, check_tree, record_hash};

use crate::on_both_backends;
use crate::support::{Gateway, assert_one_line_error, record, run, stderr, stdout};

const T0: i64 = 1_795_000_000_000;

/// Commits the usual chain for one message to two recipients, plus noise.
async fn populate(gw: &Gateway) -> bote::evidence::Committed {
    let mut records = Vec::new();
    for r in ["bauamt@lemgo.example", "ordnungsamt@lemgo.example"] {
        records.push(record(Event::SubmissionAcceptance, "msg-1", r, T0));
        records.push(record(Event::ContentConsignment, "msg-1", r, T0 + 5));
    }
    gw.commit(records).await;
    gw.commit(vec![record(
        Event::SubmissionAcceptance,
        "msg-2",
        "bauamt@lemgo.example",
        T0 + 7,
    )])
    .await;
    gw.commit(vec![record(
        Event::ContentHandover,
        "msg-1",
        "bauamt@lemgo.example",
        T0 + 60_000,
    )])
    .await
}

async fn concurrent_commits_get_distinct_indexes_and_provable_inclusion(gw: Gateway) {
    let mut tasks = Vec::new();
    for i in 0..40 {
        let writer = gw.writer.clone();
        let key = gw.keys.evidence.clone();
        tasks.push(tokio::spawn(async move {
            let records = vec![
                record(
                    Event::SubmissionAcceptance,
                    &format!("m{i}"),
                    "bauamt@lemgo.example",
                    T0 + i,
                ),
                record(
                    Event::ContentConsignment,
                    &format!("m{i}"),
                    "bauamt@lemgo.example",
                    T0 + i,
                ),
            ];
            let sealed = tokio::task::spawn_blocking(move || bote::evidence::sign(&key, records))
                .await
                .unwrap()
                .unwrap();
            writer.commit(sealed, None).await.unwrap()
        }));
    }
    let mut all = Vec::new();
    let mut largest = None::<bote::log::SignedCheckpoint>;
    for t in tasks {
        let receipt = t.await.unwrap();
        assert_eq!(receipt.log_indexes.len(), 2);
        assert!(
            receipt
                .log_indexes
                .iter()
                .all(|i| *i < receipt.checkpoint.size)
        );
        all.extend(receipt.log_indexes);
        if largest
            .as_ref()
            .is_none_or(|c| c.size < receipt.checkpoint.size)
        {
            largest = Some(receipt.checkpoint);
        }
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (0..80).collect::<Vec<u64>>(),
        "indexes are unique and gap-free"
    );
    let checkpoint = largest.unwrap();
    assert_eq!(checkpoint.size, 80);

    let mut conn = gw.store.pool().acquire().await.unwrap();
    for index in [0_u64, 1, 41, 79] {
        let entry = gw.log.entry(&mut conn, index).await.unwrap();
        let proof = gw.log.inclusion_proof(&mut conn, index, 80).await.unwrap();
        check_record(&proof, 80, checkpoint.root, index, record_hash(&entry)).unwrap();
        // A proof for one entry does not prove another.
        assert!(check_record(&proof, 80, checkpoint.root, index, record_hash(b"forged")).is_err());
    }
    // The publisher writes the newest checkpoint to the data directory, off the commit path.
    gw.wait_published(checkpoint.size).await;
    assert_eq!(
        std::fs::read_to_string(gw.log.published_file()).unwrap(),
        checkpoint.note
    );
}
on_both_backends!(
    concurrent_commits_get_distinct_indexes_and_provable_inclusion,
    super::concurrent_commits_get_distinct_indexes_and_provable_inclusion
);

async fn checkpoints_stay_consistent_across_appends_and_restarts(gw: Gateway) {
    let old = gw
        .commit(vec![record(
            Event::SubmissionAcceptance,
            "a",
            "bauamt@lemgo.example",
            T0,
        )])
        .await
        .checkpoint;
    let mid = populate(&gw).await.checkpoint;
    let gw = gw.restart().await;
    let new = gw
        .commit(vec![record(
            Event::ContentHandover,
            "a",
            "bauamt@lemgo.example",
            T0 + 9,
        )])
        .await
        .checkpoint;
    assert!(old.size < mid.size && mid.size < new.size);
    let mut conn = gw.store.pool().acquire().await.unwrap();
    for (a, b) in [(&old, &mid), (&mid, &new), (&old, &new)] {
        let proof = gw
            .log
            .consistency_proof(&mut conn, a.size, b.size)
            .await
            .unwrap();
        check_tree(&proof, b.size, b.root, a.size, a.root).unwrap();
    }
    let forged = tlog_tiles::Hash([9; 32]);
    let proof = gw
        .log
        .consistency_proof(&mut conn, old.size, new.size)
        .await
        .unwrap();
    assert!(check_tree(&proof, new.size, new.root, old.size, forged).is_err());
    assert!(
        gw.log
            .consistency_proof(&mut conn, new.size, new.size + 1)
            .await
            .is_err()
    );
}
on_both_backends!(
    checkpoints_stay_consistent_across_appends_and_restarts,
    super::checkpoints_stay_consistent_across_appends_and_restarts
);

async fn log_entries_are_commitments_without_personal_data(gw: Gateway) {
    populate(&gw).await;
    let rows = sqlx::query("SELECT entry FROM log_entries ORDER BY idx")
        .fetch_all(gw.store.pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), 6);
    for row in rows {
        let entry: Vec<u8> = row.get(0);
        let text = String::from_utf8(entry.clone()).unwrap();
        let c = Commitment::from_entry(&entry).unwrap();
        assert_eq!(
            text,
            format!(
                "{{\"event\":\"{}\",\"record_sha256\":\"{}\",\"version\":1}}",
                c.event, c.record_sha256
            )
        );
        for personal in ["@", "anna", "bauamt", "msg-1", "Bauantrag"] {
            assert!(!text.contains(personal), "{text} contains {personal}");
        }
    }
}
on_both_backends!(
    log_entries_are_commitments_without_personal_data,
    super::log_entries_are_commitments_without_personal_data
);

async fn bundle_export_and_offline_verification(gw: Gateway) {
    populate(&gw).await;
    let out = gw.setup.path().join("bundle.tar");
    let export = |args: &[&str]| {
        let mut all = vec!["proof", "export"];
        all.extend_from_slice(args);
        run(gw.setup.cmd(&all))
    };
    // Two recipients: the operator must choose.
    let ambiguous = export(&["msg-1", "-o", out.to_str().unwrap()]);
    assert_one_line_error(&ambiguous, &["2 recipients", "--recipient"]);
    let unknown = export(&["nope", "-o", out.to_str().unwrap()]);
    assert_one_line_error(&unknown, &["no evidence for message nope"]);
    assert!(!out.exists());

    // By RFC 5322 Message-ID, for one recipient.
    let ok = export(&[
        "<msg-1@lemgo.example>",
        "--recipient",
        "bauamt@lemgo.example",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("sha256: "));
    let fpr = gw.keys.evidence.fingerprint();

    let verify = run(crate::support::bote(&[
        "verify",
        out.to_str().unwrap(),
        "--key",
        &fpr,
    ]));
    assert!(verify.status.success(), "{}", stderr(&verify));
    let text = stdout(&verify);
    assert!(text.contains("verified: 3 evidence records"), "{text}");
    assert!(
        text.contains("SubmissionAcceptance") && text.contains("ContentHandover"),
        "{text}"
    );
    // What was not checked is said: no witness was trusted, the bundle has no time-stamp.
    assert!(text.contains("cosigned: not checked"), "{text}");
    assert!(text.contains("time-stamp: none"), "{text}");
    assert!(
        !text.contains("ordnungsamt"),
        "another recipient's evidence leaked: {text}"
    );
    assert!(
        stderr(&verify).is_empty(),
        "anchored verification warns: {}",
        stderr(&verify)
    );

    // With the certificate file as anchor; without anchor, a warning names the fingerprint.
    let cert = gw.setup.path().join("keys/evidence.cert.asc");
    let by_cert = run(crate::support::bote(&[
        "verify",
        out.to_str().unwrap(),
        "--key",
        cert.to_str().unwrap(),
    ]));
    assert!(by_cert.status.success(), "{}", stderr(&by_cert));
    // Nothing anchoring the signer: a failure, unless inspection is asked for, which has
    // an exit status of its own and prints the fingerprint to compare.
    let unanchored = run(crate::support::bote(&["verify", out.to_str().unwrap()]));
    assert_eq!(unanchored.status.code(), Some(1), "{}", stderr(&unanchored));
    assert_one_line_error(&unanchored, &["nothing anchors trust", "--key", "--trust"]);
    let inspected = run(crate::support::bote(&[
        "verify",
        out.to_str().unwrap(),
        "--allow-unanchored",
    ]));
    assert_eq!(inspected.status.code(), Some(3), "{}", stderr(&inspected));
    assert!(stdout(&inspected).contains("verified: 3 evidence records"));
    assert!(stderr(&inspected).contains("trust not anchored") && stderr(&inspected).contains(&fpr));
    // A reader that goes away (`| head`): still "verified only against itself", not 0.
    let mut piped = crate::support::bote(&["verify", out.to_str().unwrap(), "--allow-unanchored"]);
    let mut child = piped
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    assert_eq!(child.wait().unwrap().code(), Some(3));

    // Another key: fails and says so.
    let other = Gateway::new(Backend::Sqlite).await;
    let wrong = run(crate::support::bote(&[
        "verify",
        out.to_str().unwrap(),
        "--key",
        &other.keys.evidence.fingerprint(),
    ]));
    assert_one_line_error(&wrong, &["verification failed", "not by the expected key"]);

    // A trust file, as an association publishes it, anchors the gateways it lists; a bundle
    // of a gateway it does not list (here: ours, under another gateway's entry) fails.
    let trust = gw.setup.path().join("trust.txt");
    let listed = format!(
        "# Kreis Lippe\ngateway lemgo.example {fpr} {}\n",
        gw.keys.log.verifier_key()
    );
    std::fs::write(&trust, &listed).unwrap();
    let by_trust = run(crate::support::bote(&[
        "verify",
        out.to_str().unwrap(),
        "--trust",
        trust.to_str().unwrap(),
    ]));
    assert!(by_trust.status.success(), "{}", stderr(&by_trust));
    std::fs::write(
        &trust,
        format!(
            "gateway lemgo.example {}\n",
            other.keys.evidence.fingerprint()
        ),
    )
    .unwrap();
    let unlisted = run(crate::support::bote(&[
        "verify",
        out.to_str().unwrap(),
        "--trust",
        trust.to_str().unwrap(),
    ]));
    assert_one_line_error(&unlisted, &["verification failed", "trust file lists"]);
    std::fs::write(&trust, format!("gateway detmold.example {fpr}\n")).unwrap();
    let other_issuer = run(crate::support::bote(&[
        "verify",
        out.to_str().unwrap(),
        "--trust",
        trust.to_str().unwrap(),
    ]));
    assert_one_line_error(
        &other_issuer,
        &["for another gateway than the issuer lemgo.example"],
    );
    std::fs::write(&trust, "gateway lemgo.example 12\n").unwrap();
    let malformed = run(crate::support::bote(&[
        "verify",
        out.to_str().unwrap(),
        "--trust",
        trust.to_str().unwrap(),
    ]));
    assert_one_line_error(&malformed, &["--trust", "line 1", "fingerprint"]);

    // The export is in the audit trail.
    let actions: Vec<String> = sqlx::query("SELECT action FROM audit_log WHERE target = $1")
        .bind("<msg-1@lemgo.example>")
        .fetch_all(gw.store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(actions, ["proof.export"]);

    // Against the current checkpoint file (trusted), and refused against another one.
    let cp_file = gw.setup.path().join("cp");
    gw.save_latest_checkpoint(&cp_file).await;
    let pinned = run(crate::support::bote(&[
        "verify",
        out.to_str().unwrap(),
        "--key",
        &fpr,
        "--checkpoint",
        cp_file.to_str().unwrap(),
    ]));
    assert!(pinned.status.success(), "{}", stderr(&pinned));
    gw.commit(vec![record(
        Event::SubmissionAcceptance,
        "msg-3",
        "x@lemgo.example",
        T0,
    )])
    .await;
    gw.save_latest_checkpoint(&cp_file).await;
    let stale = run(crate::support::bote(&[
        "verify",
        out.to_str().unwrap(),
        "--key",
        &fpr,
        "--checkpoint",
        cp_file.to_str().unwrap(),
    ]));
    assert_one_line_error(&stale, &["--checkpoint", "consistency proof"]);
    // With the consistency proof from the bundle's tree to the newer one, it verifies; the
    // /log/key file anchors the log key too.
    let bundle_size =
        bote::evidence::bundle::verify(&std::fs::read(&out).unwrap(), &Trust::key(Anchor::None))
            .unwrap()
            .checkpoint
            .size;
    let newer_size = {
        let mut conn = gw.store.pool().acquire().await.unwrap();
        gw.log.size(&mut conn).await.unwrap()
    };
    let proof = {
        let mut conn = gw.store.pool().acquire().await.unwrap();
        gw.log
            .consistency_proof(&mut conn, bundle_size, newer_size)
            .await
            .unwrap()
    };
    let b64 = |h: &tlog_tiles::Hash| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(h.0)
    };
    let proof_file = gw.setup.path().join("consistency.json");
    let write_proof = |hashes: Vec<String>| {
        std::fs::write(
            &proof_file,
            serde_json::json!({ "old": bundle_size, "new": newer_size, "consistency": hashes })
                .to_string(),
        )
        .unwrap();
    };
    write_proof(proof.iter().map(b64).collect());
    let key_file = gw.setup.path().join("log-key.txt");
    std::fs::write(&key_file, gw.keys.published_keys()).unwrap();
    let verify_newer = || {
        run(crate::support::bote(&[
            "verify",
            out.to_str().unwrap(),
            "--key",
            key_file.to_str().unwrap(),
            "--log-key",
            key_file.to_str().unwrap(),
            "--checkpoint",
            cp_file.to_str().unwrap(),
            "--consistency",
            proof_file.to_str().unwrap(),
        ]))
    };
    let newer = verify_newer();
    assert!(newer.status.success(), "{}", stderr(&newer));
    let mut forged: Vec<String> = proof.iter().map(b64).collect();
    forged.reverse();
    forged.push(b64(&tlog_tiles::Hash([7; 32])));
    write_proof(forged);
    assert_one_line_error(&verify_newer(), &["--checkpoint", "not a prefix"]);
    // …and a bundle exported at that checkpoint verifies against it alone.
    let at = export(&[
        "msg-1",
        "--recipient",
        "bauamt@lemgo.example",
        "--checkpoint",
        cp_file.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(at.status.success(), "{}", stderr(&at));
    let pinned = run(crate::support::bote(&[
        "verify",
        out.to_str().unwrap(),
        "--key",
        &fpr,
        "--checkpoint",
        cp_file.to_str().unwrap(),
    ]));
    assert!(pinned.status.success(), "{}", stderr(&pinned));
}
on_both_backends!(
    bundle_export_and_offline_verification,
    super::bundle_export_and_offline_verification
);

async fn export_bundle_bytes(gw: &Gateway, message: &str, recipient: &str) -> Vec<u8> {
    let mut conn = gw.store.pool().acquire().await.unwrap();
    let recipient = bote::address::EmailAddress::parse(recipient).unwrap();
    bundle::export(
        &mut conn,
        &gw.log,
        &gw.keys,
        None,
        message,
        Some(&recipient),
        None,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_any_byte_of_a_bundle_is_detected() {
    let gw = Gateway::new(Backend::Sqlite).await;
    populate(&gw).await;
    let bytes = export_bundle_bytes(&gw, "msg-1", "bauamt@lemgo.example").await;
    let anchor = Anchor::Fingerprint(gw.keys.evidence.fingerprint());
    bundle::verify(&bytes, &Trust::key(anchor.clone())).unwrap();

    // Every byte position, each flipped on its own: headers, contents, padding, end blocks.
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    for pos in 0..bytes.len() {
        let mut changed = bytes.clone();
        changed[pos] ^= 0x01;
        match bundle::verify(&changed, &Trust::key(anchor.clone())) {
            Ok(_) => panic!("flipping byte {pos} of {} went unnoticed", bytes.len()),
            Err(e) => {
                let kind = format!("{:?}", std::mem::discriminant(&e));
                *failures.entry(kind).or_default() += 1;
            }
        }
    }
    // The README is covered like everything else.
    let readme_at = bytes
        .windows(12)
        .position(|w| w == b"PROOF BUNDLE")
        .unwrap();
    let mut changed = bytes.clone();
    changed[readme_at] = b'p';
    let e = bundle::verify(&changed, &Trust::key(anchor.clone())).unwrap_err();
    assert_eq!(e, VerifyError::Digest("README.txt".into()));

    // Trailing data, truncation, and an unknown member.
    let mut trailing = bytes.clone();
    trailing.extend_from_slice(&[0u8; 512]);
    assert!(matches!(
        bundle::verify(&trailing, &Trust::key(anchor.clone())).unwrap_err(),
        VerifyError::NotCanonical { .. }
    ));
    assert!(bundle::verify(&bytes[..bytes.len() - 1024], &Trust::key(anchor.clone())).is_err());
    let mut members = Vec::new();
    let mut archive = tar::Archive::new(bytes.as_slice());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_str().unwrap().to_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        members.push((name, data));
    }
    members.push(("notes.txt".into(), b"hi".to_vec()));
    let extra = bundle::encode_tar(&members, 0).unwrap();
    assert_eq!(
        bundle::verify(&extra, &Trust::key(anchor.clone())).unwrap_err(),
        VerifyError::Unknown("notes.txt".into())
    );
    assert!(
        failures.len() >= 3,
        "failures should name different things: {failures:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_proofs_and_foreign_checkpoints_are_detected() {
    let gw = Gateway::new(Backend::Sqlite).await;
    populate(&gw).await;
    let mut conn = gw.store.pool().acquire().await.unwrap();
    let recipient = bote::address::EmailAddress::parse("bauamt@lemgo.example").unwrap();
    let chain = bote::evidence::query::chain(&mut conn, "msg-1", Some(&recipient))
        .await
        .unwrap();
    let checkpoint = gw.log.latest_checkpoint(&mut conn).await.unwrap().unwrap();
    let mut proofs = Vec::new();
    for e in &chain {
        proofs.push(
            gw.log
                .inclusion_proof(&mut conn, e.log_index, checkpoint.size)
                .await
                .unwrap(),
        );
    }
    let anchor = Anchor::Fingerprint(gw.keys.evidence.fingerprint());
    let good = bundle::build(&chain, &proofs, &checkpoint, &gw.keys, T0).unwrap();
    bundle::verify(&good, &Trust::key(anchor.clone())).unwrap();

    // A record that is not in the log: its (validly signed) bundle claims another position.
    let mut moved = chain.clone();
    moved[1].log_index = chain[0].log_index;
    let mut moved_proofs = proofs.clone();
    moved_proofs[1] = proofs[0].clone();
    let forged = bundle::build(&moved, &moved_proofs, &checkpoint, &gw.keys, T0).unwrap();
    let e = bundle::verify(&forged, &Trust::key(anchor.clone())).unwrap_err();
    assert!(
        matches!(&e, VerifyError::NotIncluded { proof, .. } if proof == "evidence/002.proof.json"),
        "{e}"
    );

    // The log key can be anchored too; another one is refused.
    let with_log_key = |vkey: &str| Trust {
        log_key: Some(vkey.to_owned()),
        ..Trust::key(anchor.clone())
    };
    bundle::verify(&good, &with_log_key(gw.keys.log.verifier_key())).unwrap();
    let other_vkey = bote::keys::LogKey::ephemeral("lemgo.example/log").unwrap();
    let e = bundle::verify(&good, &with_log_key(other_vkey.verifier_key())).unwrap_err();
    assert!(matches!(e, VerifyError::WrongLogKey { .. }), "{e}");

    // A checkpoint signed by another log key.
    let other = Gateway::new(Backend::Sqlite).await;
    let foreign = bote::log::SignedCheckpoint::sign(
        &other.keys.log,
        &gw.keys.origin,
        checkpoint.size,
        checkpoint.root,
    )
    .unwrap();
    let bad = bundle::build(&chain, &proofs, &foreign, &gw.keys, T0).unwrap();
    let e = bundle::verify(&bad, &Trust::key(anchor.clone())).unwrap_err();
    assert!(
        matches!(&e, VerifyError::Checkpoint(why) if why.starts_with("not signed by log key lemgo.example/log")),
        "{e}"
    );
}

async fn tampered_or_rolled_back_logs_are_refused(gw: Gateway) {
    let early = gw
        .commit(vec![record(
            Event::SubmissionAcceptance,
            "a",
            "bauamt@lemgo.example",
            T0,
        )])
        .await
        .checkpoint;
    populate(&gw).await;
    let ok = run(gw.setup.cmd(&["log", "verify"]));
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(
        stdout(&ok).contains("log: 7 entries, consistent with checkpoint 7"),
        "{}",
        stdout(&ok)
    );
    assert!(
        stdout(&ok).contains("evidence: 7 records"),
        "{}",
        stdout(&ok)
    );

    // Reorder two entries: the log no longer matches its hashes and checkpoint.
    let pool = gw.store.pool().clone();
    let swap = |a: i64, b: i64| {
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            let ea: Vec<u8> = sqlx::query_scalar("SELECT entry FROM log_entries WHERE idx = $1")
                .bind(a)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            let eb: Vec<u8> = sqlx::query_scalar("SELECT entry FROM log_entries WHERE idx = $1")
                .bind(b)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            sqlx::query("UPDATE log_entries SET entry = $1 WHERE idx = $2")
                .bind(eb)
                .bind(a)
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("UPDATE log_entries SET entry = $1 WHERE idx = $2")
                .bind(ea)
                .bind(b)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    };
    swap(2, 5).await;
    let reordered = run(gw.setup.cmd(&["log", "verify"]));
    assert_one_line_error(
        &reordered,
        &["log verification failed", "entries changed or reordered"],
    );
    // The gateway itself refuses to serve such a log: start-up rehashes what was written
    // since it last checked.
    let last = refused_start(&gw);
    assert!(
        last.contains("log entry 2 does not match its leaf hash") && last.contains("Restore"),
        "{last}"
    );
    swap(2, 5).await;
    assert!(run(gw.setup.cmd(&["log", "verify"])).status.success());

    // A validly signed record that the log does not contain: row A now holds record B.
    let rows = sqlx::query(
        "SELECT evidence_id, record, signature FROM evidence ORDER BY log_index LIMIT 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let (id_a, rec_a, sig_a): (String, Vec<u8>, Vec<u8>) =
        (rows[0].get(0), rows[0].get(1), rows[0].get(2));
    let (rec_b, sig_b): (Vec<u8>, Vec<u8>) = (rows[1].get(1), rows[1].get(2));
    let set = |rec: Vec<u8>, sig: Vec<u8>| {
        sqlx::query("UPDATE evidence SET record = $1, signature = $2 WHERE evidence_id = $3")
            .bind(rec)
            .bind(sig)
            .bind(id_a.clone())
            .execute(&pool)
    };
    set(rec_b, sig_b).await.unwrap();
    let missing = run(gw.setup.cmd(&["log", "verify"]));
    assert_one_line_error(
        &missing,
        &["log verification failed", "is missing from the log"],
    );
    set(rec_a, sig_a).await.unwrap();
    assert!(run(gw.setup.cmd(&["log", "verify"])).status.success());

    // "Restore an older backup": roll the database back to the early checkpoint.
    gw.wait_published(7).await;
    let size = i64::try_from(early.size).unwrap();
    let hashes = i64::try_from(tlog_tiles::stored_hash_count(early.size)).unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("DELETE FROM evidence WHERE log_index >= $1")
        .bind(size)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("DELETE FROM log_entries WHERE idx >= $1")
        .bind(size)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("DELETE FROM log_hashes WHERE idx >= $1")
        .bind(hashes)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE log_head SET size = $1, root = $2, checkpoint = $3")
        .bind(size)
        .bind(early.root.0.to_vec())
        .bind(&early.note)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    gw.store.close().await;
    let last = refused_start(&gw);
    assert!(
        last.contains("has 1 entries")
            && last.contains("older backup")
            && last.contains("Restore a backup"),
        "{last}"
    );
}

/// Runs `bote serve`, which must refuse to start; returns its last line on stderr.
fn refused_start(gw: &Gateway) -> String {
    let mut serve = gw.setup.cmd(&["serve"]);
    serve.env(
        "BOTE_HTTP_LISTEN",
        format!("127.0.0.1:{}", crate::support::free_port()),
    );
    serve.env("BOTE_HTTP_METRICS_LISTEN", "");
    let refused = run(serve);
    assert!(!refused.status.success());
    stderr(&refused)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

on_both_backends!(
    tampered_or_rolled_back_logs_are_refused,
    super::tampered_or_rolled_back_logs_are_refused
);

async fn evidence_search_and_timeline(gw: Gateway) {
    populate(&gw).await;
    let timeline = stdout(&run(gw.setup.cmd(&["evidence", "timeline", "msg-1"])));
    let events: Vec<&str> = timeline
        .lines()
        .map(|l| l.split('\t').nth(1).unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "SubmissionAcceptance",
            "SubmissionAcceptance",
            "ContentConsignment",
            "ContentConsignment",
            "ContentHandover"
        ]
    );
    let by_recipient = stdout(&run(gw.setup.cmd(&[
        "evidence",
        "search",
        "--recipient",
        "ORDNUNGSAMT@lemgo.example",
    ])));
    assert_eq!(by_recipient.lines().count(), 2, "{by_recipient}");
    let later = stdout(&run(gw.setup.cmd(&[
        "evidence",
        "search",
        "--sender",
        "anna.muster@lemgo.example",
        "--from",
        "2026-11-18T11:06:40.006Z",
    ])));
    assert_eq!(later.lines().count(), 2, "{later}");
    let window = stdout(&run(gw.setup.cmd(&[
        "evidence",
        "search",
        "--from",
        "2026-11-18",
        "--until",
        "2026-11-18T11:06:40.006Z",
        "--limit",
        "3",
    ])));
    assert_eq!(window.lines().count(), 3, "{window}");
    let none = run(gw.setup.cmd(&["evidence", "timeline", "unknown"]));
    assert_one_line_error(&none, &["no evidence for message unknown"]);
    let bad_time = run(gw.setup.cmd(&["evidence", "search", "--from", "yesterday"]));
    assert_one_line_error(&bad_time, &["--from", "expected an RFC 3339 time"]);
}
on_both_backends!(
    evidence_search_and_timeline,
    super::evidence_search_and_timeline
);

async fn two_sequencers_on_one_database_never_fork(first: Gateway) {
    // A second "instance": its own pool, log and writer on the same database and data.
    let env: Vec<(String, String)> = first
        .setup
        .database_url
        .iter()
        .map(|u| ("BOTE_DATABASE_URL".to_owned(), u.clone()))
        .collect();
    let config = bote::config::Config::load(&first.setup.config(), env).unwrap();
    let store = bote::store::Store::open(&config, bote::store::OpenMode::Existing)
        .await
        .unwrap();
    let log = std::sync::Arc::new(bote::log::Log::new(
        first.keys.log.clone(),
        first.keys.origin.clone(),
        &config.gateway.data_dir,
    ));
    let second = bote::evidence::Writer::spawn(store.clone(), log);

    let mut tasks = Vec::new();
    for i in 0..60 {
        let writer = if i % 2 == 0 {
            first.writer.clone()
        } else {
            second.clone()
        };
        let key = first.keys.evidence.clone();
        tasks.push(tokio::spawn(async move {
            let records = vec![record(
                Event::SubmissionAcceptance,
                &format!("p{i}"),
                "bauamt@lemgo.example",
                T0 + i,
            )];
            let sealed = bote::evidence::sign_async(key, records).await.unwrap();
            writer.commit(sealed, None).await.unwrap().log_indexes
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (0..60).collect::<Vec<u64>>());
    let ok = run(first.setup.cmd(&["log", "verify"]));
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("log: 60 entries"), "{}", stdout(&ok));
}
on_both_backends!(
    two_sequencers_on_one_database_never_fork,
    super::two_sequencers_on_one_database_never_fork
);

/// A relay outcome waits for a submission's commit instead of costing an fsync of its own,
/// but never longer than the writer's linger; a submission never waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_records_share_the_next_commit_and_never_starve() {
    use std::time::Duration;
    let gw = Gateway::new(Backend::Sqlite).await;
    let sealed = |i: i64| {
        let key = gw.keys.evidence.clone();
        async move {
            let records = vec![record(
                Event::RelayToNonERDS,
                &format!("d{i}"),
                "bauamt@lemgo.example",
                T0 + i,
            )];
            bote::evidence::sign_async(key, records).await.unwrap()
        }
    };
    // The gateway's own writer: a lone deferred record still commits.
    let alone = gw.writer.commit_deferred(sealed(0).await, None);
    tokio::time::timeout(Duration::from_secs(5), alone)
        .await
        .expect("a lone deferred record waits no longer than the linger")
        .unwrap();

    // A writer with a long linger: the deferred record waits until a submission comes.
    let patient = bote::evidence::Writer::spawn_with_linger(
        gw.store.clone(),
        gw.log.clone(),
        Duration::from_secs(30),
    );
    let deferred = tokio::spawn({
        let (writer, records) = (patient.clone(), sealed(1).await);
        async move { writer.commit_deferred(records, None).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!deferred.is_finished(), "committed without company");
    let urgent = tokio::time::timeout(
        Duration::from_secs(10),
        patient.commit(sealed(2).await, None),
    )
    .await
    .expect("a submission does not wait for the linger")
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), deferred)
        .await
        .expect("the deferred record rode with the submission")
        .unwrap()
        .unwrap();
    // Both in the log, the deferred record first (it was queued first).
    assert_eq!(urgent.log_indexes, vec![2]);
    assert_eq!(urgent.checkpoint.size, 3);
    let ok = run(gw.setup.cmd(&["log", "verify"]));
    assert!(ok.status.success(), "{}", stderr(&ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_need_the_right_passphrase_and_are_never_overwritten() {
    let gw = Gateway::new(Backend::Sqlite).await;
    let before = std::fs::read(gw.setup.path().join("keys/evidence.key.asc")).unwrap();
    let again = run(gw.setup.cmd(&["keys", "generate"]));
    assert_one_line_error(&again, &["already exists", "refusing to overwrite"]);
    assert_eq!(
        std::fs::read(gw.setup.path().join("keys/evidence.key.asc")).unwrap(),
        before
    );
    // A key directory from before the provider key gets just that key, once.
    let keys = gw.setup.path().join("keys");
    std::fs::remove_file(keys.join("provider.key.asc")).unwrap();
    std::fs::remove_file(keys.join("provider.cert.asc")).unwrap();
    let upgraded = run(gw.setup.cmd(&["keys", "generate"]));
    assert!(upgraded.status.success(), "{}", stderr(&upgraded));
    assert!(stdout(&upgraded).contains("provider-key: "));
    assert!(keys.join("provider.key.asc").exists());
    assert_eq!(
        std::fs::read(keys.join("evidence.key.asc")).unwrap(),
        before
    );
    let again = run(gw.setup.cmd(&["keys", "generate"]));
    assert_one_line_error(&again, &["provider.key.asc", "already exists"]);
    // So does one from before the witness key.
    let witness_vkey = std::fs::read_to_string(keys.join("witness.vkey")).unwrap();
    assert!(
        witness_vkey.starts_with("lemgo.example/witness+"),
        "{witness_vkey}"
    );
    std::fs::remove_file(keys.join("witness.key.asc")).unwrap();
    std::fs::remove_file(keys.join("witness.vkey")).unwrap();
    let upgraded = run(gw.setup.cmd(&["keys", "generate"]));
    assert!(upgraded.status.success(), "{}", stderr(&upgraded));
    assert!(stdout(&upgraded).contains("witness-key: lemgo.example/witness+"));
    assert_ne!(
        std::fs::read_to_string(keys.join("witness.vkey")).unwrap(),
        witness_vkey
    );

    let armored = String::from_utf8(before).unwrap();
    assert!(armored.contains("BEGIN PGP PRIVATE KEY BLOCK"));
    let passphrase = std::fs::read_to_string(gw.setup.path().join("keys/passphrase")).unwrap();
    assert!(!armored.contains(passphrase.trim()));

    // The passphrase from an environment variable instead of the file: wrong, then right.
    let mut wrong = gw.setup.cmd(&["proof", "export", "x", "-o", "/dev/null"]);
    wrong
        .env("BOTE_KEYS_PASSPHRASE_FILE", "")
        .env("BOTE_PASSPHRASE", "not the passphrase");
    assert_one_line_error(
        &run(wrong),
        &[
            "evidence.key.asc",
            "cannot decrypt with the configured passphrase",
        ],
    );
    let mut none = gw.setup.cmd(&["proof", "export", "x", "-o", "/dev/null"]);
    none.env("BOTE_KEYS_PASSPHRASE_FILE", "");
    assert_one_line_error(&run(none), &["BOTE_PASSPHRASE is empty"]);
    let mut right = gw.setup.cmd(&["proof", "export", "x", "-o", "/dev/null"]);
    right
        .env("BOTE_KEYS_PASSPHRASE_FILE", "")
        .env("BOTE_PASSPHRASE", passphrase.trim());
    assert_one_line_error(&run(right), &["no evidence for message x"]);
}

/// Unpacks a bundle into (name, bytes) in archive order.
fn members_of(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_str().unwrap().to_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        out.push((name, data));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malleable_parts_of_the_manifest_signature_are_refused() {
    use sequoia_openpgp::parse::Parse;
    use sequoia_openpgp::serialize::SerializeInto;
    let gw = Gateway::new(Backend::Sqlite).await;
    populate(&gw).await;
    let bytes = export_bundle_bytes(&gw, "msg-1", "bauamt@lemgo.example").await;
    let anchor = Anchor::Fingerprint(gw.keys.evidence.fingerprint());
    let members = members_of(&bytes);
    let manifest: serde_json::Value = serde_json::from_slice(&members[1].1).unwrap();
    let mtime =
        bote::clock::parse_rfc3339_ms(manifest["created"].as_str().unwrap()).unwrap() / 1000;
    let sig = match sequoia_openpgp::Packet::from_bytes(&members[2].1).unwrap() {
        sequoia_openpgp::Packet::Signature(s) => s,
        other => panic!("{other:?}"),
    };
    let binary = sequoia_openpgp::Packet::from(sig).to_vec().unwrap();
    // New-format header (tag, one length byte), then v4 body: version, type, pk algo, hash
    // algo, hashed area (2-byte length), unhashed area (2-byte length), digest prefix.
    assert_eq!(binary[0], 0xC2);
    let body = 2;
    let hashed = usize::from(u16::from_be_bytes([binary[body + 4], binary[body + 5]]));
    let unhashed_at = body + 6 + hashed;
    assert_eq!(
        &binary[unhashed_at..unhashed_at + 2],
        &[0, 0],
        "bote writes no unhashed subpackets"
    );
    let prefix_at = unhashed_at + 2;
    let mut changed = binary.clone();
    changed[prefix_at] ^= 0x01;
    let mut forged = members.clone();
    forged[2].1 = bote::crypto::armor_signature(&changed);
    let tampered = bundle::encode_tar(&forged, u64::try_from(mtime).unwrap()).unwrap();
    let e = bundle::verify(&tampered, &Trust::key(anchor.clone())).unwrap_err();
    assert!(
        matches!(&e, VerifyError::Signature { member, reason }
            if member == "manifest.json.asc" && reason.starts_with("bad signature")),
        "{e}"
    );
}

async fn failing_or_panicking_work_spoils_nothing_else(gw: Gateway) {
    use bote::evidence::{Work, WriterError};
    let seal = |id: &str| {
        let key = gw.keys.evidence.clone();
        let records = vec![record(
            Event::SubmissionAcceptance,
            id,
            "bauamt@lemgo.example",
            T0,
        )];
        async move { bote::evidence::sign_async(key, records).await.unwrap() }
    };
    let failing: Work = Box::new(|conn| {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO audit_log (at, actor, action, target) VALUES (1, 'x', 'half', 'y')",
            )
            .execute(&mut *conn)
            .await?;
            Err(bote::store::StoreError::Behind(1))
        })
    });
    let good: Work = Box::new(|conn| {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO audit_log (at, actor, action, target) VALUES (1, 'x', 'kept', 'y')",
            )
            .execute(&mut *conn)
            .await?;
            Ok(())
        })
    });
    let (a, b) = (seal("fails").await, seal("works").await);
    let (ra, rb) = tokio::join!(
        gw.writer.commit(a, Some(failing)),
        gw.writer.commit(b, Some(good))
    );
    assert!(matches!(ra, Err(WriterError::Work(_))), "{ra:?}");
    rb.unwrap();
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM audit_log WHERE actor = 'x'")
        .fetch_all(gw.store.pool())
        .await
        .unwrap();
    assert_eq!(
        actions,
        ["kept"],
        "the failed request's own write must be rolled back"
    );

    let panicking: Work = Box::new(|_conn| Box::pin(async move { panic!("work panicked") }));
    let c = seal("panics").await;
    assert!(matches!(
        gw.writer.commit(c, Some(panicking)).await,
        Err(WriterError::Panicked)
    ));
    // The writer is still alive and the log still consistent.
    let d = seal("after").await;
    let receipt = gw.writer.commit(d, None).await.unwrap();
    assert_eq!(receipt.checkpoint.size, 2);
    assert!(run(gw.setup.cmd(&["log", "verify"])).status.success());
}
on_both_backends!(
    failing_or_panicking_work_spoils_nothing_else,
    super::failing_or_panicking_work_spoils_nothing_else
);

/// A linked (version 2) chain of three events for `gateway_id`.
fn linked_chain(gw: &Gateway, gateway_id: &str, recipient: &str) -> Vec<EvidenceRecord> {
    use bote::evidence::record::{ChainLink, Fact, Head, RecordOptions};
    let base = record(Event::SubmissionAcceptance, gateway_id, recipient, T0);
    let head = Head {
        issuer: base.issuer.clone(),
        issuer_key: gw.keys.evidence.fingerprint(),
        sender: base.sender.clone(),
        message: base.message.clone(),
        options: Some(RecordOptions {
            authoritative: true,
            personal: false,
            retrieval_confirmation: false,
        }),
        submission_time: Timestamp(T0),
    };
    let mut link = ChainLink::first();
    let mut records = Vec::new();
    for (i, event) in [
        Event::SubmissionAcceptance,
        Event::ContentConsignment,
        Event::ContentHandover,
    ]
    .into_iter()
    .enumerate()
    {
        let fact = Fact {
            event,
            reason: ReasonCode::Accepted,
            recipient: base.recipient.clone(),
            recipient_identity: None,
            details: Details::default(),
            time: Timestamp(T0 + i as i64),
        };
        let r = head.record(fact, link);
        link = r.link_next(i as u64 + 1).unwrap();
        records.push(r);
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_with_a_record_dropped_added_or_reordered_fails() {
    let gw = Gateway::new(Backend::Sqlite).await;
    let records = linked_chain(&gw, "msg-9", "bauamt@lemgo.example");
    for r in records {
        gw.commit(vec![r]).await;
    }
    let mut conn = gw.store.pool().acquire().await.unwrap();
    let recipient = bote::address::EmailAddress::parse("bauamt@lemgo.example").unwrap();
    let chain = bote::evidence::query::chain(&mut conn, "msg-9", Some(&recipient))
        .await
        .unwrap();
    let checkpoint = gw.log.latest_checkpoint(&mut conn).await.unwrap().unwrap();
    let mut proofs = Vec::new();
    for e in &chain {
        proofs.push(
            gw.log
                .inclusion_proof(&mut conn, e.log_index, checkpoint.size)
                .await
                .unwrap(),
        );
    }
    drop(conn);
    let trust = Trust::key(Anchor::Fingerprint(gw.keys.evidence.fingerprint()));
    // The gateway's own key re-signs each variant: only the links can tell.
    let bundle_of = |keep: &[usize]| {
        let chain: Vec<_> = keep.iter().map(|&i| chain[i].clone()).collect();
        let proofs: Vec<_> = keep.iter().map(|&i| proofs[i].clone()).collect();
        bundle::build(&chain, &proofs, &checkpoint, &gw.keys, T0).unwrap()
    };
    let whole = bundle::verify(&bundle_of(&[0, 1, 2]), &trust).unwrap();
    assert_eq!(whole.records.len(), 3);
    assert_eq!(whole.records[2].chain.unwrap().seq, 3);

    // ContentConsignment dropped: the handover names a predecessor the bundle lacks.
    let e = bundle::verify(&bundle_of(&[0, 2]), &trust).unwrap_err();
    assert!(
        matches!(&e, VerifyError::Chain { member, reason } if member == "evidence/002.json" && reason.contains("record 3 of its chain")),
        "{e}"
    );
    // The acceptance dropped: the chain does not start.
    let e = bundle::verify(&bundle_of(&[1, 2]), &trust).unwrap_err();
    assert!(
        matches!(&e, VerifyError::Chain { member, .. } if member == "evidence/001.json"),
        "{e}"
    );
    // Reordered: the log order and the links disagree.
    let e = bundle::verify(&bundle_of(&[0, 2, 1]), &trust).unwrap_err();
    assert!(matches!(&e, VerifyError::Chain { .. }), "{e}");
    // A record twice.
    let e = bundle::verify(&bundle_of(&[0, 1, 1, 2]), &trust).unwrap_err();
    assert!(matches!(&e, VerifyError::Chain { .. }), "{e}");
    // What links cannot show: a bundle that ends early is a bundle made before the last
    // event, and verifies (docs/proof-bundle.md, "What a bundle proves").
    assert_eq!(
        bundle::verify(&bundle_of(&[0, 1]), &trust)
            .unwrap()
            .records
            .len(),
        2
    );
}

/// Rebuilds a bundle with the members `edit_members` leaves and a fresh manifest listing
/// them, edited by `edit_manifest`, signed with the gateway's own evidence key: what its
/// operator could forge.
fn resigned(
    gw: &Gateway,
    bytes: &[u8],
    edit_members: impl Fn(&mut Vec<(String, Vec<u8>)>),
    edit_manifest: impl Fn(&mut serde_json::Value),
) -> Vec<u8> {
    let mut members = members_of(bytes);
    let mut manifest: serde_json::Value = serde_json::from_slice(&members[1].1).unwrap();
    members.drain(1..3);
    edit_members(&mut members);
    let listed: Vec<bundle::Member> = members
        .iter()
        .map(|(name, data)| bundle::Member {
            name: name.clone(),
            size: data.len() as u64,
            sha256: bote::evidence::Sha256Digest::of(data),
        })
        .collect();
    manifest["members"] = serde_json::to_value(listed).unwrap();
    edit_manifest(&mut manifest);
    let manifest_bytes = serde_jcs::to_vec(&manifest).unwrap();
    let sig = bote::crypto::armor_signature(&gw.keys.evidence.sign(&manifest_bytes).unwrap());
    let created = manifest["created"].as_str().unwrap();
    let mtime = bote::clock::parse_rfc3339_ms(created).unwrap() / 1000;
    members.insert(1, ("manifest.json".into(), manifest_bytes));
    members.insert(2, ("manifest.json.asc".into(), sig));
    bundle::encode_tar(&members, u64::try_from(mtime).unwrap()).unwrap()
}

/// The same bundle as a version 1 bundle: no FORMAT.md, no `issuer_key`.
fn as_version_1(gw: &Gateway, bytes: &[u8]) -> Vec<u8> {
    resigned(
        gw,
        bytes,
        |m| m.retain(|(n, _)| n != "FORMAT.md"),
        |v| {
            v["version"] = serde_json::json!(1);
            v.as_object_mut().unwrap().remove("issuer_key");
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_manifest_with_version_2_records_fails() {
    let gw = Gateway::new(Backend::Sqlite).await;
    populate(&gw).await;
    for r in linked_chain(&gw, "msg-9", "bauamt@lemgo.example") {
        gw.commit(vec![r]).await;
    }
    let trust = Trust::key(Anchor::Fingerprint(gw.keys.evidence.fingerprint()));
    // Version 1 records under a version 1 manifest: what a version 1 writer made.
    let old = export_bundle_bytes(&gw, "msg-1", "bauamt@lemgo.example").await;
    bundle::verify(&as_version_1(&gw, &old), &trust).unwrap();
    // Version 2 records are newer than any version 1 writer (docs/proof-bundle.md §5).
    let linked = export_bundle_bytes(&gw, "msg-9", "bauamt@lemgo.example").await;
    bundle::verify(&linked, &trust).unwrap();
    let e = bundle::verify(&as_version_1(&gw, &linked), &trust).unwrap_err();
    assert!(
        matches!(&e, VerifyError::RecordVersion { member, version: 2 } if member == "evidence/001.json"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_log_key_with_surrounding_whitespace_fails() {
    let gw = Gateway::new(Backend::Sqlite).await;
    populate(&gw).await;
    let bytes = export_bundle_bytes(&gw, "msg-1", "bauamt@lemgo.example").await;
    let trust = Trust::key(Anchor::Fingerprint(gw.keys.evidence.fingerprint()));
    let vkey = gw.keys.log.verifier_key().to_owned();
    let with_vkey = |text: String| {
        move |m: &mut Vec<(String, Vec<u8>)>| {
            let (_, data) = m.iter_mut().find(|(n, _)| n == "keys/log.vkey").unwrap();
            *data = text.clone().into_bytes();
        }
    };
    bundle::verify(
        &resigned(&gw, &bytes, with_vkey(format!("{vkey}\n")), |_| {}),
        &trust,
    )
    .unwrap();
    // Version 2: exactly the key and one line feed (docs/proof-bundle.md §10).
    for text in [
        format!(" {vkey}\n"),
        format!("{vkey} \n"),
        format!("\t{vkey}\n"),
    ] {
        let forged = resigned(&gw, &bytes, with_vkey(text.clone()), |_| {});
        let e = bundle::verify(&forged, &trust).unwrap_err();
        assert!(
            matches!(&e, VerifyError::Malformed { member, .. } if member == "keys/log.vkey"),
            "{text:?}: {e}"
        );
    }
    // Version 1: surrounding whitespace is ignored.
    let v1 = as_version_1(
        &gw,
        &resigned(&gw, &bytes, with_vkey(format!(" {vkey} \n")), |_| {}),
    );
    bundle::verify(&v1, &trust).unwrap();
}
