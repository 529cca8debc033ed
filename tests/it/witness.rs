//! Witnesses and time-stamps (C2SP tlog-witness, RFC 3161): one gateway witnesses
//! another's log over HTTP; bundles carry the cosignatures and a time-stamp from a real
//! TSA and fail when either is tampered with; a restored backup refuses to start while a
//! witness holds a newer checkpoint.

use std::sync::Arc;

use axum::http::StatusCode;
use bote::evidence::Event;
use bote::evidence::bundle::{self, Anchor, ProvenAt, Trust, VerifyError};
use bote::log::attest::{AttestError, Attestor};
use bote::store::Backend;
use bote::witness::service::{FollowedLog, Witness};
use bote::witness::{AddCheckpoint, WitnessKey};

use crate::support::tsa::{Tsa, TsaKey};
use crate::support::{Gateway, record, run, stderr, stdout};

const T0: i64 = 1_795_000_000_000;

/// Gateway B acting as a witness for A's log, served over plain HTTP on a free port.
pub(crate) struct WitnessPeer {
    pub(crate) gw: Gateway,
    pub(crate) url: String,
    pub(crate) vkey: String,
    pub(crate) _server: tokio::task::JoinHandle<()>,
}

impl WitnessPeer {
    pub(crate) async fn start(of: &Gateway) -> Self {
        let gw = Gateway::new(Backend::Sqlite).await;
        let key = gw
            .keys
            .witness
            .clone()
            .expect("bote init makes a witness key");
        let witness = Witness::new(
            key.cosigner().clone(),
            vec![FollowedLog {
                origin: of.keys.origin.clone(),
                vkey: of.keys.log.verifier_key().to_owned(),
            }],
            gw.store.clone(),
        );
        let core = bote::gateway::Gateway::from_parts(
            gw.store.clone(),
            Arc::new(gw.config.clone()),
            gw.keys.clone(),
            gw.log.clone(),
            gw.writer.clone(),
        )
        .with_witness(witness);
        let app = bote::web::router(core);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            vkey: key.verifier_key(),
            url: format!("http://127.0.0.1:{port}/witness"),
            gw,
            _server: server,
        }
    }
}

/// Appends a `[log]` section naming `witness` (and `tsa`) to the setup's config file and
/// returns the loaded config.
pub(crate) fn attest_with(
    gw: &Gateway,
    witness: &WitnessPeer,
    tsa: Option<&Tsa>,
) -> bote::config::Config {
    let mut text = std::fs::read_to_string(gw.setup.config()).unwrap();
    text.push_str(
        "\n[log]\nwitness_quorum = 1\nwitness_startup_wait_secs = 0\nattest_interval_ms = 100\n",
    );
    if let Some(tsa) = tsa {
        text.push_str(&format!(
            "timestamp_url = \"{}\"\ntimestamp_certs = [\"{}\"]\n",
            tsa.url,
            tsa.cert_sha256()
        ));
    }
    text.push_str(&format!(
        "\n[[log.witnesses]]\nurl = \"{}\"\nkey = \"{}\"\n",
        witness.url, witness.vkey
    ));
    std::fs::write(gw.setup.config(), text).unwrap();
    bote::config::Config::load(&gw.setup.config(), Vec::new()).unwrap()
}

async fn commit_chain(gw: &Gateway, id: &str, t: i64) {
    gw.commit(vec![
        record(Event::SubmissionAcceptance, id, "bauamt@lemgo.example", t),
        record(Event::ContentConsignment, id, "bauamt@lemgo.example", t + 1),
    ])
    .await;
}

async fn size(gw: &Gateway) -> u64 {
    let mut conn = gw.store.pool().acquire().await.unwrap();
    gw.log.size(&mut conn).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_refuses_to_start_while_a_witness_holds_a_newer_checkpoint() {
    let a = Gateway::new(Backend::Sqlite).await;
    let b = WitnessPeer::start(&a).await;
    let config = attest_with(&a, &b, None);
    let attestor = Attestor::new(&config, a.store.clone(), a.log.clone())
        .unwrap()
        .unwrap();
    attestor.check_witnesses().await.unwrap();
    commit_chain(&a, "m-1", T0).await;
    let old_size = size(&a).await;
    assert!(attestor.covering(old_size).await.unwrap().is_some());

    // The documented backup: a copy of the data directory (database and checkpoint file).
    a.wait_published(old_size).await;
    let a = a.restart().await;
    let backup = tempfile::tempdir().unwrap();
    let data = a.setup.path().join("data");
    copy_dir(&data, backup.path());

    commit_chain(&a, "m-2", T0 + 10).await;
    let new_size = size(&a).await;
    let attestor = Attestor::new(&config, a.store.clone(), a.log.clone())
        .unwrap()
        .unwrap();
    let attested = attestor.covering(new_size).await.unwrap().unwrap();
    assert_eq!(attested.size, new_size);
    assert_eq!(attested.cosignatures, 1);

    // Restore the backup: the local roll-back guard passes (the checkpoint file came back
    // with the database), but the witness has seen more. The publisher writes the new
    // checkpoint file on a thread of its own: done before the directory is replaced.
    a.wait_published(new_size).await;
    a.store.close().await;
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(backup.path(), &data);
    let mut serve = a.setup.cmd(&["serve"]);
    serve
        .env(
            "BOTE_HTTP_LISTEN",
            format!("127.0.0.1:{}", crate::support::free_port()),
        )
        .env("BOTE_HTTP_METRICS_LISTEN", "");
    let refused = run(serve);
    assert!(!refused.status.success());
    let last = stderr(&refused)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert!(
        last.contains(&format!("has cosigned a checkpoint of size {new_size}"))
            && last.contains(&format!("holds only {old_size} entries"))
            && last.contains("older backup"),
        "{last}"
    );

    // In-process, the same refusal is typed.
    let restored = Gateway::open(a.setup, a.db).await;
    let again = Attestor::new(&config, restored.store.clone(), restored.log.clone())
        .unwrap()
        .unwrap();
    assert!(matches!(
        again.check_witnesses().await,
        Err(AttestError::Behind { witnessed, ours, .. }) if witnessed == new_size && ours == old_size
    ));
    drop(b);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_witnesses_down_start_up_waits_then_refuses() {
    let a = Gateway::new(Backend::Sqlite).await;
    let mut b = WitnessPeer::start(&a).await;
    let config = attest_with(&a, &b, None);
    b._server.abort();
    // Aborted and dropped (with its listener): the next connection is refused.
    let _ = (&mut b._server).await;
    let attestor = Attestor::new(&config, a.store.clone(), a.log.clone())
        .unwrap()
        .unwrap();
    let e = attestor.check_witnesses().await.unwrap_err();
    assert!(
        matches!(
            &e,
            AttestError::Unconfirmed {
                confirmed: 0,
                quorum: 1,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("log.witness_quorum"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_carry_cosignatures_and_a_time_stamp_and_fail_when_either_is_tampered() {
    let a = Gateway::new(Backend::Sqlite).await;
    let b = WitnessPeer::start(&a).await;
    let tsa = Tsa::start(TsaKey::Ec);
    let config = attest_with(&a, &b, Some(&tsa));
    let attestor = Attestor::new(&config, a.store.clone(), a.log.clone())
        .unwrap()
        .unwrap();
    commit_chain(&a, "m-1", bote::clock::now_ms()).await;
    let sources = bundle::Sources {
        store: &a.store,
        log: &a.log,
        keys: &a.keys,
        attestor: Some(&attestor),
    };
    let recipient = bote::address::EmailAddress::parse("bauamt@lemgo.example").unwrap();
    let exported = bundle::export_audited(
        sources,
        &bote::accounts::Actor::current_operator(),
        "m-1",
        Some(&recipient),
        None,
    )
    .await
    .unwrap();
    let witness_key = WitnessKey::parse(&b.vkey).unwrap();
    let trust = Trust {
        witnesses: vec![witness_key.clone()],
        quorum: 1,
        tsa: vec![tsa.cert_sha256()],
        ..Trust::key(Anchor::Fingerprint(a.keys.evidence.fingerprint()))
    };
    let verified = bundle::verify(&exported.bytes, &trust).unwrap();
    assert_eq!(verified.cosignatures.len(), 1);
    assert_eq!(verified.cosignatures[0].witness, witness_key.name());
    let (stamp, anchored) = verified.timestamp.clone().unwrap();
    assert!(anchored);
    assert!(stamp.time.abs_diff(verified.cosignatures[0].time) < 120);

    // The CLI, with a trust file as an association would publish it.
    let file = a.setup.path().join("bundle.tar");
    std::fs::write(&file, &exported.bytes).unwrap();
    let trust_file = a.setup.path().join("trust.txt");
    std::fs::write(
        &trust_file,
        format!(
            "gateway lemgo.example {}\nwitness {}\nquorum 1\ntsa {} test TSA\n",
            a.keys.evidence.fingerprint(),
            b.vkey,
            tsa.cert_sha256()
        ),
    )
    .unwrap();
    let out = run(crate::support::bote(&[
        "verify",
        file.to_str().unwrap(),
        "--trust",
        trust_file.to_str().unwrap(),
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("cosigned: {}", witness_key.name())),
        "{text}"
    );
    assert!(
        text.contains("time-stamp: ") && text.contains("bote test TSA"),
        "{text}"
    );

    // Forgeries the gateway's own key could sign: only the attestations tell.
    let mut conn = a.store.pool().acquire().await.unwrap();
    let chain = bote::evidence::query::chain(&mut conn, "m-1", Some(&recipient))
        .await
        .unwrap();
    let cp = verified.checkpoint.clone();
    let mut proofs = Vec::new();
    for e in &chain {
        proofs.push(
            a.log
                .inclusion_proof(&mut conn, e.log_index, cp.size)
                .await
                .unwrap(),
        );
    }
    drop(conn);
    let token = tar_member(&exported.bytes, "checkpoint.tst");
    let forge = |note: &str, token: Option<Vec<u8>>| {
        let at = ProvenAt {
            checkpoint: bote::log::SignedCheckpoint {
                note: note.to_owned(),
                ..cp.clone()
            },
            timestamp_token: token,
        };
        bundle::build_at(&chain, &proofs, &at, &a.keys, bote::clock::now_ms()).unwrap()
    };
    // The untouched attestations verify in a re-signed bundle too.
    bundle::verify(&forge(&cp.note, Some(token.clone())), &trust).unwrap();
    // The cosignature dropped.
    let (body, sigs) = cp.note.split_once("\n\n").unwrap();
    let log_line = sigs.lines().next().unwrap();
    let bare = format!("{body}\n\n{log_line}\n");
    let e = bundle::verify(&forge(&bare, Some(token.clone())), &trust).unwrap_err();
    assert!(
        matches!(&e, VerifyError::Cosignatures(why) if why.contains("0 of the 1")),
        "{e}"
    );
    // The cosignature altered (its time moved).
    let cosig = sigs.lines().nth(1).unwrap();
    let (name, b64) = cosig
        .strip_prefix("\u{2014} ")
        .unwrap()
        .split_once(' ')
        .unwrap();
    let mut raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap();
    raw[11] ^= 1;
    let moved = format!(
        "{body}\n\n{log_line}\n\u{2014} {name} {}\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw)
    );
    let e = bundle::verify(&forge(&moved, Some(token.clone())), &trust).unwrap_err();
    assert!(
        matches!(&e, VerifyError::Cosignatures(why) if why.contains("does not verify")),
        "{e}"
    );
    // The time-stamp dropped, or altered.
    let e = bundle::verify(&forge(&cp.note, None), &trust).unwrap_err();
    assert!(
        matches!(&e, VerifyError::TimeStamp(why) if why.contains("missing")),
        "{e}"
    );
    let mut bent = token.clone();
    let last = bent.len() - 3;
    bent[last] ^= 1;
    let e = bundle::verify(&forge(&cp.note, Some(bent)), &trust).unwrap_err();
    assert!(matches!(e, VerifyError::TimeStamp(_)), "{e}");
    // A time-stamp by an authority the verifier does not trust.
    let other_tsa = Tsa::start(TsaKey::Rsa);
    let text = bote::witness::service::checkpoint_text(&cp.note);
    let http = bote::outbound::HttpClient::new(bote::tls::client_config(None).unwrap()).unwrap();
    let (foreign, _) = bote::timestamp::obtain(&http, &other_tsa.url, text.as_bytes(), &[])
        .await
        .unwrap();
    let e = bundle::verify(&forge(&cp.note, Some(foreign)), &trust).unwrap_err();
    assert!(
        matches!(&e, VerifyError::TimeStamp(why) if why.contains("not by")),
        "{e}"
    );
}

pub(crate) fn tar_member(bytes: &[u8], name: &str) -> Vec<u8> {
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some(name) {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            return data;
        }
    }
    panic!("no member {name}");
}

/// The witness endpoint speaks C2SP tlog-witness: statuses and bodies as specified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_witness_endpoint_cosigns_only_consistent_growth() {
    let a = Gateway::new(Backend::Sqlite).await;
    let b = WitnessPeer::start(&a).await;
    let http = reqwest_client();
    let post = |body: String| {
        let http = http.clone();
        let url = format!("{}/add-checkpoint", b.url);
        async move {
            let r = http.post(url).body(body).send().await.unwrap();
            let status = r.status();
            let kind = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, kind, r.text().await.unwrap())
        }
    };
    commit_chain(&a, "m-1", T0).await;
    let mut conn = a.store.pool().acquire().await.unwrap();
    let first = a.log.latest_checkpoint(&mut conn).await.unwrap().unwrap();
    let req = |old: u64, proof: Vec<tlog_tiles::Hash>, note: &str| {
        AddCheckpoint {
            old,
            proof,
            checkpoint: note.to_owned(),
        }
        .to_body()
    };

    // First contact: from 0, cosigned; the line verifies with the witness's key.
    let (status, _, body) = post(req(0, vec![], &first.note)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let key = WitnessKey::parse(&b.vkey).unwrap();
    let cosigned = bote::witness::cosignatures(&format!("{}{body}", first.note), &[key]).unwrap();
    assert_eq!(cosigned.len(), 1);

    // A stale old size: 409 with the witness's size as text/x.tlog.size.
    let (status, kind, body) = post(req(0, vec![], &first.note)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(kind, "text/x.tlog.size");
    assert_eq!(body, format!("{}\n", first.size));

    // Growth with a valid proof is cosigned; with a wrong one, 422.
    commit_chain(&a, "m-2", T0 + 5).await;
    let second = a.log.latest_checkpoint(&mut conn).await.unwrap().unwrap();
    let proof = a
        .log
        .consistency_proof(&mut conn, first.size, second.size)
        .await
        .unwrap();
    let mut wrong = proof.clone();
    wrong[0].0[0] ^= 1;
    let (status, _, _) = post(req(first.size, wrong, &second.note)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _, body) = post(req(first.size, proof, &second.note)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A fork at the same size: 409. Unknown logs: 404. Foreign signatures: 403.
    let forked = bote::log::SignedCheckpoint::sign(
        &a.keys.log,
        &a.keys.origin,
        second.size,
        tlog_tiles::Hash([7; 32]),
    )
    .unwrap();
    let (status, _, _) = post(req(second.size, vec![], &forked.note)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let stranger = bote::keys::LogKey::ephemeral("detmold.example/log").unwrap();
    let foreign = bote::log::SignedCheckpoint::sign(
        &stranger,
        "detmold.example/log",
        1,
        tlog_tiles::Hash([1; 32]),
    )
    .unwrap();
    let (status, _, _) = post(req(0, vec![], &foreign.note)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let impostor = bote::keys::LogKey::ephemeral(&a.keys.origin).unwrap();
    let faked =
        bote::log::SignedCheckpoint::sign(&impostor, &a.keys.origin, 99, tlog_tiles::Hash([1; 32]))
            .unwrap();
    let (status, _, _) = post(req(second.size, vec![], &faked.note)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Malformed: old larger than the checkpoint; garbage.
    let (status, _, _) = post(req(second.size + 1, vec![], &second.note)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = post("hello".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Nothing of that moved the witness.
    let mut wc = b.gw.store.pool().acquire().await.unwrap();
    let state = bote::store::witness::all_witnessed(&mut wc).await.unwrap();
    assert_eq!(state, vec![(a.keys.origin.clone(), second.size)]);

    // The operator's view of the witness role.
    let mut text = std::fs::read_to_string(b.gw.setup.config()).unwrap();
    text.push_str(&format!(
        "\n[witness]\nenabled = true\nlogs = [\"{}\"]\n",
        a.keys.log.verifier_key()
    ));
    std::fs::write(b.gw.setup.config(), text).unwrap();
    let key = run(b.gw.setup.cmd(&["witness", "key"]));
    assert_eq!(
        stdout(&key),
        format!("witness-key: {}\nwitness-role: on\n", b.vkey)
    );
    let status = run(b.gw.setup.cmd(&["witness", "status"]));
    assert_eq!(
        stdout(&status),
        format!("log: {} size {}\n", a.keys.origin, second.size),
        "{}",
        stderr(&status)
    );

    // A gateway without the witness role has no such endpoint.
    let plain = bote::web::router(bote::gateway::Gateway::from_parts(
        a.store.clone(),
        Arc::new(a.config.clone()),
        a.keys.clone(),
        a.log.clone(),
        a.writer.clone(),
    ));
    let response = tower::ServiceExt::oneshot(
        plain,
        axum::http::Request::post("/witness/add-checkpoint")
            .body(axum::body::Body::from(req(0, vec![], &first.note)))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

fn reqwest_client() -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(bote::tls::client_config(None).unwrap())
        .build()
        .unwrap()
}
