//! Two verifiers, one verdict: `bote verify` and an independent verifier written from
//! docs/proof-bundle.md alone (tests/tools/verify_bundle.py: Python, stdlib and
//! `cryptography`, no bote code) must accept the same bundles and reject the same tampered
//! set: every header and content region flipped, structural edits, malleated signatures,
//! and forgeries the gateway's own keys could sign (dropped or reordered records, removed
//! cosignatures and time-stamps, non-canonical encodings).
//!
//! Set `BOTE_BUNDLE_CORPUS=DIR` to keep the corpus (bundles, `expect.json`, trust files).

use std::path::{Path, PathBuf};
use std::process::Command;

use bote::evidence::bundle::{self, Manifest, Member};
use bote::evidence::record::{ChainLink, Fact, Head, RecordOptions};
use bote::evidence::{Details, Event, EvidenceRecord, ReasonCode, Sha256Digest, Timestamp};
use bote::log::attest::Attestor;
use bote::store::Backend;
use serde_json::json;

use crate::support::tsa::{Tsa, TsaKey};
use crate::support::{Gateway, record};
use crate::witness::{WitnessPeer, attest_with, tar_member};

type Members = Vec<(String, Vec<u8>)>;

/// One corpus entry.
struct Case {
    file: String,
    args: Vec<String>,
    accept: bool,
    why: String,
}

struct Corpus {
    dir: PathBuf,
    cases: Vec<Case>,
}

impl Corpus {
    fn add(&mut self, name: &str, bytes: &[u8], args: &[String], accept: bool, why: &str) {
        let file = format!("{name}.tar");
        std::fs::write(self.dir.join(&file), bytes).unwrap();
        self.cases.push(Case {
            file,
            args: args.to_vec(),
            accept,
            why: why.to_owned(),
        });
    }

    fn write_expectations(&self) {
        let list: Vec<_> = self
            .cases
            .iter()
            .map(|c| json!({"file": c.file, "args": c.args, "accept": c.accept, "why": c.why}))
            .collect();
        std::fs::write(
            self.dir.join("expect.json"),
            serde_json::to_vec_pretty(&list).unwrap(),
        )
        .unwrap();
    }
}

fn members(bytes: &[u8]) -> Members {
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

fn get<'a>(m: &'a Members, name: &str) -> &'a [u8] {
    &m.iter().find(|(n, _)| n == name).unwrap().1
}

fn set(m: &mut Members, name: &str, data: Vec<u8>) {
    m.iter_mut().find(|(n, _)| n == name).unwrap().1 = data;
}

/// The manifest of a bundle.
fn manifest_of(m: &Members) -> Manifest {
    serde_json::from_slice(get(m, "manifest.json")).unwrap()
}

/// Rebuilds a bundle from `m` (all members but the manifest and its signature, in the
/// order given after README.txt), with a fresh manifest signed by the gateway's evidence
/// key: what an operator could forge. `edit` may change the manifest JSON first.
fn resign(
    gw: &Gateway,
    m: &Members,
    base: &Manifest,
    edit: impl Fn(&mut serde_json::Value),
) -> Vec<u8> {
    let rest: Members = m
        .iter()
        .filter(|(n, _)| n != "manifest.json" && n != "manifest.json.asc")
        .cloned()
        .collect();
    let manifest = Manifest {
        members: rest
            .iter()
            .map(|(name, data)| Member {
                name: name.clone(),
                size: data.len() as u64,
                sha256: Sha256Digest::of(data),
            })
            .collect(),
        ..base.clone()
    };
    let mut value = serde_json::to_value(&manifest).unwrap();
    edit(&mut value);
    let manifest_bytes = serde_jcs::to_vec(&value).unwrap();
    let sig = bote::crypto::armor_signature(&gw.keys.evidence.sign(&manifest_bytes).unwrap());
    assemble(&rest, manifest_bytes, sig, base.created.0)
}

/// The archive of `rest` (README first) with the given manifest and signature.
fn assemble(rest: &Members, manifest: Vec<u8>, sig: Vec<u8>, created_ms: i64) -> Vec<u8> {
    let mut ordered = vec![rest[0].clone()];
    ordered.push(("manifest.json".into(), manifest));
    ordered.push(("manifest.json.asc".into(), sig));
    ordered.extend(rest[1..].iter().cloned());
    bundle::encode_tar(&ordered, u64::try_from(created_ms / 1000).unwrap()).unwrap()
}

/// The same bundle with only `manifest.json.asc` replaced (no digest covers it).
fn with_manifest_sig(m: &Members, base: &Manifest, sig: Vec<u8>) -> Vec<u8> {
    let rest: Members = m
        .iter()
        .filter(|(n, _)| n != "manifest.json" && n != "manifest.json.asc")
        .cloned()
        .collect();
    assemble(&rest, get(m, "manifest.json").to_vec(), sig, base.created.0)
}

/// The binary packet inside an armoured signature.
fn dearmor(armored: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(armored).unwrap();
    let b64: String = text
        .lines()
        .skip(2)
        .take_while(|l| !l.starts_with('='))
        .collect();
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap()
}

/// Byte ranges of a new-format v4 signature packet with a one-octet length.
struct SigPacket {
    body: Vec<u8>,
}

impl SigPacket {
    fn parse(packet: &[u8]) -> Self {
        assert_eq!(packet[0], 0xC2, "new-format signature packet");
        let len = usize::from(packet[1]);
        assert!(len < 192);
        Self {
            body: packet[2..2 + len].to_vec(),
        }
    }
    fn hashed_end(&self) -> usize {
        6 + usize::from(u16::from_be_bytes([self.body[4], self.body[5]]))
    }
    /// Offset of the first MPI (after the unhashed area and the digest prefix).
    fn mpis(&self) -> usize {
        let h = self.hashed_end();
        let unhashed = usize::from(u16::from_be_bytes([self.body[h], self.body[h + 1]]));
        h + 2 + unhashed + 2
    }
    /// A new-format packet with the shortest length encoding (RFC 4880 §4.2.2).
    fn packet(body: &[u8]) -> Vec<u8> {
        let mut p = vec![0xC2];
        match body.len() {
            n if n < 192 => p.push(u8::try_from(n).unwrap()),
            n => {
                let n = n - 192;
                p.push(u8::try_from((n >> 8) + 192).unwrap());
                p.push(u8::try_from(n & 0xff).unwrap());
            }
        }
        p.extend_from_slice(body);
        p
    }
}

/// Adds the group order L to a little-endian Ed25519 scalar (the malleable twin of s).
fn add_l(s_le: &[u8; 32]) -> [u8; 32] {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(s_le[i]) + u16::from(L[i]) + carry;
        out[i] = (sum & 0xff) as u8;
        carry = sum >> 8;
    }
    out
}

/// An MPI at `at`: (bit count, value bytes, total length).
fn mpi(body: &[u8], at: usize) -> (usize, Vec<u8>, usize) {
    let bits = usize::from(u16::from_be_bytes([body[at], body[at + 1]]));
    let len = bits.div_ceil(8);
    (bits, body[at + 2..at + 2 + len].to_vec(), 2 + len)
}

fn encode_mpi(value: &[u8]) -> Vec<u8> {
    let v: Vec<u8> = value.iter().copied().skip_while(|b| *b == 0).collect();
    let bits = if v.is_empty() {
        0
    } else {
        (v.len() - 1) * 8 + (8 - v[0].leading_zeros() as usize)
    };
    let mut out = u16::try_from(bits).unwrap().to_be_bytes().to_vec();
    out.extend(v);
    out
}

/// The six (and more) malleations of the manifest signature that a careless verifier
/// accepts: each still "verifies" in a lenient OpenPGP implementation.
fn malleated_signatures(armored: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let packet = dearmor(armored);
    let sig = SigPacket::parse(&packet);
    let body = &sig.body;
    let canonical = bote::crypto::armor_signature;
    let text = String::from_utf8(armored.to_vec()).unwrap();
    let mut out = Vec::new();

    // Armour variants of the same packet.
    out.push((
        "armour-header",
        text.replacen("-----\n\n", "-----\nVersion: forged\n\n", 1)
            .into_bytes(),
    ));
    out.push(("armour-crlf", text.replace('\n', "\r\n").into_bytes()));
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &packet);
    let crc_line = text.lines().find(|l| l.starts_with('=')).unwrap();
    let wrapped: Vec<String> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    out.push((
        "armour-76-columns",
        format!(
            "-----BEGIN PGP SIGNATURE-----\n\n{}\n{crc_line}\n-----END PGP SIGNATURE-----\n",
            wrapped.join("\n")
        )
        .into_bytes(),
    ));
    out.push((
        "armour-without-crc",
        text.replace(&format!("{crc_line}\n"), "").into_bytes(),
    ));
    out.push((
        "armour-trailing-space",
        text.replacen("\n-----END", " \n-----END", 1).into_bytes(),
    ));

    // Packet framing: old format, and a five-octet length.
    let mut old = vec![0x88, u8::try_from(body.len()).unwrap()];
    old.extend_from_slice(body);
    out.push(("packet-old-format", canonical(&old)));
    let mut long = vec![0xC2, 0xFF];
    long.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    long.extend_from_slice(body);
    out.push(("packet-five-octet-length", canonical(&long)));

    // An unhashed issuer subpacket: signed data unchanged, signature still valid.
    let h = sig.hashed_end();
    let mut unhashed = body[..h].to_vec();
    let keyid = &body[h - 8..h]; // the issuer fingerprint ends the hashed area
    unhashed.extend_from_slice(&[0, 10, 9, 16]);
    unhashed.extend_from_slice(keyid);
    unhashed.extend_from_slice(&body[h + 2..]);
    out.push((
        "unhashed-subpacket",
        canonical(&SigPacket::packet(&unhashed)),
    ));

    // MPIs: s + L (the other valid-looking Ed25519 s), a non-minimal r, a wrong prefix.
    let at = sig.mpis();
    let (_, r, r_len) = mpi(body, at);
    let (_, s, _) = mpi(body, at + r_len);
    let mut s_le = [0u8; 32];
    s_le[32 - s.len()..].copy_from_slice(&s);
    let s_plus_l = add_l(&s_le);
    let mut high_s = body[..at + r_len].to_vec();
    high_s.extend(encode_mpi(&s_plus_l));
    out.push(("ed25519-s-plus-l", canonical(&SigPacket::packet(&high_s))));
    let mut padded_r = body[..at].to_vec();
    let bits = u16::try_from((r.len() + 1) * 8).unwrap();
    padded_r.extend_from_slice(&bits.to_be_bytes());
    padded_r.push(0);
    padded_r.extend_from_slice(&r);
    padded_r.extend_from_slice(&body[at + r_len..]);
    out.push(("mpi-not-minimal", canonical(&SigPacket::packet(&padded_r))));
    let mut prefix = body.clone();
    prefix[at - 2] ^= 0xff;
    out.push(("digest-prefix", canonical(&SigPacket::packet(&prefix))));
    out
}

/// The linked chain of three events of one message.
fn linked_chain(gw: &Gateway, id: &str, t0: i64) -> Vec<EvidenceRecord> {
    linked_chain_with(gw, id, t0, |_, _| {})
}

/// [`linked_chain`], the head of record `i` (0-based) edited by `edit`.
fn linked_chain_with(
    gw: &Gateway,
    id: &str,
    t0: i64,
    edit: impl Fn(usize, &mut Head),
) -> Vec<EvidenceRecord> {
    let base = record(Event::SubmissionAcceptance, id, "bauamt@lemgo.example", t0);
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
        submission_time: Timestamp(t0),
    };
    let mut link = ChainLink::first();
    let mut out = Vec::new();
    for (i, event) in [
        Event::SubmissionAcceptance,
        Event::ContentConsignment,
        Event::ContentHandover,
    ]
    .into_iter()
    .enumerate()
    {
        let mut head = head.clone();
        edit(i, &mut head);
        let r = head.record(
            Fact {
                event,
                reason: ReasonCode::Accepted,
                recipient: base.recipient.clone(),
                recipient_identity: None,
                details: Details::default(),
                time: Timestamp(t0 + i as i64),
            },
            link,
        );
        link = r.link_next(i as u64 + 1).unwrap();
        out.push(r);
    }
    out
}

/// Renumbers the records of `keep` (original numbers, 1-based) as 1, 2, ….
fn with_records(m: &Members, keep: &[usize]) -> Members {
    let mut out: Members = m
        .iter()
        .filter(|(n, _)| !n.starts_with("evidence/"))
        .cloned()
        .collect();
    for (i, old) in keep.iter().enumerate() {
        for suffix in [".json", ".json.asc", ".proof.json"] {
            let data = get(m, &format!("evidence/{old:03}{suffix}")).to_vec();
            out.push((format!("evidence/{:03}{suffix}", i + 1), data));
        }
    }
    out
}

/// Builds the corpus; returns it with the directory it lives in.
async fn build_corpus(dir: &Path) -> (Corpus, Vec<Box<dyn std::any::Any>>) {
    let a = Gateway::new(Backend::Sqlite).await;
    let b = WitnessPeer::start(&a).await;
    let tsa = Tsa::start(TsaKey::Ec);
    let config = attest_with(&a, &b, Some(&tsa));
    let attestor = Attestor::new(&config, a.store.clone(), a.log.clone())
        .unwrap()
        .unwrap();
    let now = bote::clock::now_ms();
    for r in linked_chain(&a, "m-linked", now) {
        a.commit(vec![r]).await;
    }
    a.commit(vec![
        record(
            Event::SubmissionAcceptance,
            "m-old",
            "bauamt@lemgo.example",
            now,
        ),
        record(
            Event::ContentConsignment,
            "m-old",
            "bauamt@lemgo.example",
            now + 1,
        ),
        record(
            Event::ContentHandover,
            "m-old",
            "bauamt@lemgo.example",
            now + 2,
        ),
    ])
    .await;
    let recipient = bote::address::EmailAddress::parse("bauamt@lemgo.example").unwrap();
    let export = |id: &'static str, with_attestor: bool| {
        let sources = bundle::Sources {
            store: &a.store,
            log: &a.log,
            keys: &a.keys,
            attestor: with_attestor.then_some(&attestor),
        };
        let recipient = recipient.clone();
        async move {
            bundle::export_audited(
                sources,
                &bote::accounts::Actor::current_operator(),
                id,
                Some(&recipient),
                None,
            )
            .await
            .unwrap()
            .bytes
        }
    };
    let linked = export("m-linked", true).await;
    let old_records = export("m-old", false).await;
    // A chain whose second record, in the log and well linked, names another message: the
    // export refuses to make its bundle, so it is assembled directly.
    for r in linked_chain_with(&a, "m-mixed", now, |i, head| {
        if i == 1 {
            head.message.sha256 = Sha256Digest::of(b"another message");
        }
    }) {
        a.commit(vec![r]).await;
    }
    let mixed = {
        let mut conn = a.store.pool().acquire().await.unwrap();
        let chain = bote::evidence::query::chain(&mut conn, "m-mixed", Some(&recipient))
            .await
            .unwrap();
        let checkpoint = a.log.latest_checkpoint(&mut conn).await.unwrap().unwrap();
        let mut proofs = Vec::new();
        for e in &chain {
            let proof = a
                .log
                .inclusion_proof(&mut conn, e.log_index, checkpoint.size);
            proofs.push(proof.await.unwrap());
        }
        bundle::build(&chain, &proofs, &checkpoint, &a.keys, now).unwrap()
    };

    let mut corpus = Corpus {
        dir: dir.to_owned(),
        cases: Vec::new(),
    };
    let fpr = a.keys.evidence.fingerprint();
    let key = vec!["--key".to_owned(), fpr.clone()];
    let full: Vec<String> = [
        "--key",
        &fpr,
        "--witness",
        &b.vkey,
        "--quorum",
        "1",
        "--tsa",
        &tsa.cert_sha256(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    std::fs::write(
        dir.join("trust.txt"),
        format!(
            "# test association\ngateway lemgo.example {fpr} {}\nwitness {}\nquorum 1\ntsa {} test TSA\n",
            a.keys.log.verifier_key(),
            b.vkey,
            tsa.cert_sha256()
        ),
    )
    .unwrap();
    let trust = vec!["--trust".to_owned(), "trust.txt".to_owned()];

    // Bundles that verify.
    corpus.add(
        "valid-attested",
        &linked,
        &full,
        true,
        "v2 chain, cosigned, time-stamped",
    );
    corpus.add(
        "valid-attested-trust-file",
        &linked,
        &trust,
        true,
        "anchored by a trust file",
    );
    corpus.add(
        "valid-attested-key-only",
        &linked,
        &key,
        true,
        "attestations present but not required",
    );
    corpus.add(
        "valid-version-1-records",
        &old_records,
        &key,
        true,
        "records of format version 1",
    );
    let m = members(&linked);
    let base = manifest_of(&m);
    corpus.add(
        "valid-resigned",
        &resign(&a, &m, &base, |_| {}),
        &full,
        true,
        "re-signed, same content",
    );
    let old_m = members(&old_records);
    let old_base = manifest_of(&old_m);
    let v1: Members = old_m
        .iter()
        .filter(|(n, _)| n != "FORMAT.md")
        .cloned()
        .collect();
    let v1_bundle = resign(&a, &v1, &old_base, |v| {
        v["version"] = json!(1);
        v.as_object_mut().unwrap().remove("issuer_key");
    });
    corpus.add(
        "valid-manifest-version-1",
        &v1_bundle,
        &key,
        true,
        "a version 1 bundle",
    );
    let checkpoint = String::from_utf8(get(&m, "checkpoint").to_vec()).unwrap();
    let (body, sigs) = checkpoint.split_once("\n\n").unwrap();
    let log_line = sigs.lines().next().unwrap();
    let mut uncosigned = m.clone();
    set(
        &mut uncosigned,
        "checkpoint",
        format!("{body}\n\n{log_line}\n").into_bytes(),
    );
    let uncosigned = resign(&a, &uncosigned, &base, |_| {});
    corpus.add(
        "valid-uncosigned-without-witness-trust",
        &uncosigned,
        &key,
        true,
        "no witness trusted, none needed",
    );

    // A later checkpoint with a consistency proof.
    a.commit(vec![record(
        Event::SubmissionAcceptance,
        "m-later",
        "x@lemgo.example",
        now,
    )])
    .await;
    let mut conn = a.store.pool().acquire().await.unwrap();
    let newer = a.log.latest_checkpoint(&mut conn).await.unwrap().unwrap();
    let proof = a
        .log
        .consistency_proof(&mut conn, base.checkpoint_size, newer.size)
        .await
        .unwrap();
    drop(conn);
    std::fs::write(dir.join("newer.checkpoint"), &newer.note).unwrap();
    let proof_b64: Vec<String> = proof
        .iter()
        .map(|h| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, h.0))
        .collect();
    std::fs::write(
        dir.join("consistency.json"),
        serde_json::to_vec(&json!({"consistency": proof_b64})).unwrap(),
    )
    .unwrap();
    let mut later = full.clone();
    later.extend(
        [
            "--checkpoint",
            "newer.checkpoint",
            "--consistency",
            "consistency.json",
        ]
        .map(String::from),
    );
    corpus.add(
        "valid-against-newer-checkpoint",
        &linked,
        &later,
        true,
        "consistency proof to a later checkpoint",
    );
    let mut wrong_proof = proof_b64.clone();
    wrong_proof.reverse();
    std::fs::write(
        dir.join("wrong-consistency.json"),
        serde_json::to_vec(&json!({"consistency": wrong_proof})).unwrap(),
    )
    .unwrap();
    let mut later_wrong = full.clone();
    later_wrong.extend(
        [
            "--checkpoint",
            "newer.checkpoint",
            "--consistency",
            "wrong-consistency.json",
        ]
        .map(String::from),
    );
    if proof_b64.len() > 1 {
        corpus.add(
            "invalid-wrong-consistency-proof",
            &linked,
            &later_wrong,
            false,
            "consistency proof reordered",
        );
    }

    // Every region flipped: headers (each field), contents, padding, end blocks.
    let mut offset = 0;
    let mut flips = Vec::new();
    for (name, data) in members(&linked)
        .iter()
        .chain(std::iter::once(&(String::new(), Vec::new())))
    {
        if name.is_empty() {
            flips.extend([offset, offset + 511, offset + 512, offset + 1023]);
            break;
        }
        for field in [0, 100, 108, 116, 124, 136, 148, 156, 257, 263, 345] {
            flips.push(offset + field);
        }
        let content = offset + 512;
        flips.extend([content, content + data.len() / 2, content + data.len() - 1]);
        let padded = data.len().div_ceil(512) * 512;
        if padded > data.len() {
            flips.push(content + padded - 1);
        }
        offset = content + padded;
    }
    for at in flips {
        let mut changed = linked.clone();
        changed[at] ^= 0x01;
        corpus.add(
            &format!("flip-{at:06}"),
            &changed,
            &full,
            false,
            "one bit flipped",
        );
    }

    // Structure.
    let mut trailing = linked.clone();
    trailing.extend_from_slice(&[0u8; 512]);
    corpus.add(
        "invalid-trailing-block",
        &trailing,
        &full,
        false,
        "data after the end blocks",
    );
    corpus.add(
        "invalid-truncated",
        &linked[..linked.len() - 1024],
        &full,
        false,
        "end blocks missing",
    );
    let mut extra = m.clone();
    extra.push(("notes.txt".into(), b"hi".to_vec()));
    corpus.add(
        "invalid-unknown-member",
        &bundle::encode_tar(&extra, 0).unwrap(),
        &full,
        false,
        "an unknown member",
    );
    let mut twice = m.clone();
    twice.push(m[3].clone());
    corpus.add(
        "invalid-duplicate-member",
        &bundle::encode_tar(&twice, 0).unwrap(),
        &full,
        false,
        "a member twice",
    );
    let mut swapped = m.clone();
    swapped.swap(4, 5);
    corpus.add(
        "invalid-member-order",
        &bundle::encode_tar(&swapped, u64::try_from(base.created.0 / 1000).unwrap()).unwrap(),
        &full,
        false,
        "members out of order",
    );

    // Another gateway's keys, however consistent the bundle.
    let other = Gateway::new(Backend::Sqlite).await;
    for r in linked_chain(&other, "m-linked", now) {
        other.commit(vec![r]).await;
    }
    let mut conn = other.store.pool().acquire().await.unwrap();
    let forged = bundle::export(
        &mut conn,
        &other.log,
        &other.keys,
        None,
        "m-linked",
        Some(&recipient),
        None,
    )
    .await
    .unwrap();
    drop(conn);
    corpus.add(
        "invalid-foreign-keys",
        &forged,
        &key,
        false,
        "signed by another gateway's keys",
    );
    corpus.add(
        "invalid-foreign-keys-trust-file",
        &forged,
        &trust,
        false,
        "a gateway the trust file does not list",
    );

    // Forgeries the gateway's own evidence key can sign.
    let forgeries: Vec<(&str, Members, &str)> = vec![
        (
            "resigned-record-dropped",
            with_records(&m, &[1, 3]),
            "ContentConsignment dropped",
        ),
        (
            "resigned-first-record-dropped",
            with_records(&m, &[2, 3]),
            "the acceptance dropped",
        ),
        (
            "resigned-records-reordered",
            with_records(&m, &[1, 3, 2]),
            "records reordered",
        ),
        (
            "resigned-record-repeated",
            with_records(&m, &[1, 2, 2, 3]),
            "a record twice",
        ),
    ];
    for (name, members, why) in forgeries {
        corpus.add(
            &format!("invalid-{name}"),
            &resign(&a, &members, &base, |_| {}),
            &full,
            false,
            why,
        );
    }
    corpus.add(
        "invalid-chain-other-message",
        &mixed,
        &key,
        false,
        "record 2, logged and linked, names another message digest than record 1",
    );
    let resigned_record = |edit: &dyn Fn(&mut serde_json::Value) -> Vec<u8>| {
        let mut mm = m.clone();
        let mut value: serde_json::Value =
            serde_json::from_slice(get(&m, "evidence/002.json")).unwrap();
        let bytes = edit(&mut value);
        let sig = bote::crypto::armor_signature(&a.keys.evidence.sign(&bytes).unwrap());
        set(&mut mm, "evidence/002.json", bytes);
        set(&mut mm, "evidence/002.json.asc", sig);
        resign(&a, &mm, &base, |_| {})
    };
    let jcs = |v: &serde_json::Value| serde_jcs::to_vec(v).unwrap();
    corpus.add(
        "invalid-record-wrong-seq",
        &resigned_record(&|v| {
            v["chain"]["seq"] = json!(5);
            jcs(v)
        }),
        &full,
        false,
        "record 2 claims seq 5",
    );
    corpus.add(
        "invalid-record-other-issuer-key",
        &resigned_record(&|v| {
            v["issuer_key"] = json!("0123456789ABCDEF0123456789ABCDEF01234567");
            jcs(v)
        }),
        &full,
        false,
        "issuer_key is not the signing key",
    );
    corpus.add(
        "invalid-record-not-canonical",
        &resigned_record(&|v| serde_json::to_vec_pretty(v).unwrap()),
        &full,
        false,
        "pretty-printed record",
    );
    corpus.add(
        "invalid-record-unknown-field",
        &resigned_record(&|v| {
            v["subject"] = json!("x");
            jcs(v)
        }),
        &full,
        false,
        "a field the format does not know",
    );
    corpus.add(
        "invalid-record-null-field",
        &resigned_record(&|v| {
            v["details"]["note"] = serde_json::Value::Null;
            jcs(v)
        }),
        &full,
        false,
        "null where a field is absent",
    );
    corpus.add(
        "invalid-record-other-recipient",
        &resigned_record(&|v| {
            v["recipient"] = json!("ordnungsamt@lemgo.example");
            jcs(v)
        }),
        &full,
        false,
        "a record about another recipient",
    );
    corpus.add(
        "invalid-record-time-format",
        &resigned_record(&|v| {
            let t = v["time"].as_str().unwrap().replace(".", ",").to_owned();
            v["time"] = json!(t);
            jcs(v)
        }),
        &full,
        false,
        "time not in the prescribed form",
    );

    let resigned_member = |name: &str, data: Vec<u8>| {
        let mut mm = m.clone();
        set(&mut mm, name, data);
        resign(&a, &mm, &base, |_| {})
    };
    let proof_value: serde_json::Value =
        serde_json::from_slice(get(&m, "evidence/001.proof.json")).unwrap();
    corpus.add(
        "invalid-proof-not-canonical",
        &resigned_member(
            "evidence/001.proof.json",
            serde_json::to_vec_pretty(&proof_value).unwrap(),
        ),
        &full,
        false,
        "pretty-printed proof",
    );
    let mut moved = proof_value.clone();
    moved["log_index"] = json!(moved["log_index"].as_u64().unwrap() + 1);
    corpus.add(
        "invalid-proof-other-index",
        &resigned_member("evidence/001.proof.json", jcs(&moved)),
        &full,
        false,
        "inclusion claimed at another index",
    );
    let mut sig_variant = String::from_utf8(get(&m, "evidence/001.json.asc").to_vec()).unwrap();
    sig_variant = sig_variant.replacen("-----\n\n", "-----\nComment: x\n\n", 1);
    corpus.add(
        "invalid-record-signature-armour",
        &resigned_member("evidence/001.json.asc", sig_variant.into_bytes()),
        &full,
        false,
        "record signature not in canonical armour",
    );
    corpus.add(
        "invalid-cosignature-removed",
        &resign(&a, &members(&uncosigned), &base, |_| {}),
        &full,
        false,
        "the witness cosignature removed",
    );
    let cosig = sigs.lines().nth(1).unwrap();
    let (wname, wb64) = cosig
        .strip_prefix("\u{2014} ")
        .unwrap()
        .split_once(' ')
        .unwrap();
    let mut raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, wb64).unwrap();
    raw[11] ^= 1;
    let bent = format!(
        "{body}\n\n{log_line}\n\u{2014} {wname} {}\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw)
    );
    corpus.add(
        "invalid-cosignature-altered",
        &resigned_member("checkpoint", bent.into_bytes()),
        &full,
        false,
        "the cosignature's time changed",
    );
    let no_tst: Members = m
        .iter()
        .filter(|(n, _)| n != "checkpoint.tst")
        .cloned()
        .collect();
    corpus.add(
        "invalid-timestamp-removed",
        &resign(&a, &no_tst, &base, |_| {}),
        &full,
        false,
        "the time-stamp removed while a TSA is trusted",
    );
    let other_tsa = Tsa::start(TsaKey::Rsa);
    let text = format!("{body}\n");
    let http = bote::outbound::HttpClient::new(bote::tls::client_config(None).unwrap()).unwrap();
    let (foreign_token, _) = bote::timestamp::obtain(&http, &other_tsa.url, text.as_bytes(), &[])
        .await
        .unwrap();
    corpus.add(
        "invalid-timestamp-untrusted-tsa",
        &resigned_member("checkpoint.tst", foreign_token),
        &full,
        false,
        "time-stamped by a TSA not trusted",
    );
    let wrong_data = bote::timestamp::obtain(&http, &tsa.url, b"something else\n", &[])
        .await
        .unwrap()
        .0;
    corpus.add(
        "invalid-timestamp-other-data",
        &resigned_member("checkpoint.tst", wrong_data),
        &full,
        false,
        "a time-stamp of other data",
    );
    let token = tar_member(&linked, "checkpoint.tst");
    let mut token_bent = token.clone();
    let at = token_bent.len() - 5;
    token_bent[at] ^= 1;
    corpus.add(
        "invalid-timestamp-signature",
        &resigned_member("checkpoint.tst", token_bent),
        &full,
        false,
        "the time-stamp signature damaged",
    );
    // A checkpoint with an extension line, validly signed by the log key.
    let mut note =
        signed_note::Note::new(format!("{body}\nextension line\n").as_bytes(), &[]).unwrap();
    note.add_sigs(&[a.keys.log.signer()]).unwrap();
    corpus.add(
        "invalid-checkpoint-extension-line",
        &resigned_member("checkpoint", note.to_bytes()),
        &key,
        false,
        "checkpoint with an extension line",
    );
    corpus.add(
        "invalid-log-vkey-crlf",
        &resigned_member(
            "keys/log.vkey",
            format!("{}\r\n", a.keys.log.verifier_key()).into_bytes(),
        ),
        &key,
        false,
        "log.vkey with CRLF",
    );
    corpus.add(
        "invalid-log-vkey-spaces",
        &resigned_member(
            "keys/log.vkey",
            format!(" {} \n", a.keys.log.verifier_key()).into_bytes(),
        ),
        &key,
        false,
        "version 2 log.vkey with surrounding spaces",
    );
    let v1_linked: Members = m
        .iter()
        .filter(|(n, _)| n != "FORMAT.md" && n != "checkpoint.tst")
        .cloned()
        .collect();
    corpus.add(
        "invalid-manifest-version-1-with-version-2-records",
        &resign(&a, &v1_linked, &base, |v| {
            v["version"] = json!(1);
            v.as_object_mut().unwrap().remove("issuer_key");
        }),
        &key,
        false,
        "a version 1 manifest listing version 2 records",
    );
    let readme = String::from_utf8(get(&m, "README.txt").to_vec()).unwrap();
    corpus.add(
        "valid-resigned-readme-changed",
        &resigned_member(
            "README.txt",
            readme.replace("PROOF BUNDLE", "Proof bundle").into_bytes(),
        ),
        &full,
        true,
        "the README is informative; re-signed it verifies",
    );
    corpus.add(
        "invalid-manifest-not-canonical",
        &{
            let rest: Members = m
                .iter()
                .filter(|(n, _)| n != "manifest.json" && n != "manifest.json.asc")
                .cloned()
                .collect();
            let pretty = serde_json::to_vec_pretty(
                &serde_json::from_slice::<serde_json::Value>(get(&m, "manifest.json")).unwrap(),
            )
            .unwrap();
            let sig = bote::crypto::armor_signature(&a.keys.evidence.sign(&pretty).unwrap());
            assemble(&rest, pretty, sig, base.created.0)
        },
        &full,
        false,
        "pretty-printed manifest",
    );
    let no_format: Members = m
        .iter()
        .filter(|(n, _)| n != "FORMAT.md")
        .cloned()
        .collect();
    corpus.add(
        "invalid-manifest-without-format",
        &resign(&a, &no_format, &base, |_| {}),
        &full,
        false,
        "version 2 without FORMAT.md",
    );
    corpus.add(
        "invalid-manifest-without-issuer-key",
        &resign(&a, &m, &base, |v| {
            v.as_object_mut().unwrap().remove("issuer_key");
        }),
        &full,
        false,
        "version 2 without issuer_key",
    );
    corpus.add(
        "invalid-manifest-milliseconds",
        &resign(&a, &m, &base, |v| {
            let t = v["created"].as_str().unwrap().replace(".000Z", ".123Z");
            v["created"] = json!(t);
        }),
        &full,
        false,
        "created with milliseconds",
    );
    corpus.add(
        "invalid-manifest-version-3",
        &resign(&a, &m, &base, |v| {
            v["version"] = json!(3);
        }),
        &full,
        false,
        "an unknown version",
    );

    // The manifest signature, malleated: no digest covers it.
    let manifest_sig = get(&m, "manifest.json.asc").to_vec();
    for (name, sig) in malleated_signatures(&manifest_sig) {
        corpus.add(
            &format!("invalid-manifest-sig-{name}"),
            &with_manifest_sig(&m, &base, sig),
            &full,
            false,
            name,
        );
    }
    corpus.write_expectations();
    (
        corpus,
        vec![
            Box::new(a),
            Box::new(b),
            Box::new(tsa),
            Box::new(other),
            Box::new(other_tsa),
        ],
    )
}

fn exit_code(mut cmd: Command, dir: &Path) -> i32 {
    let out = cmd.current_dir(dir).output().unwrap();
    out.status.code().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bote_and_an_independent_verifier_agree_on_every_bundle() {
    let keep = std::env::var_os("BOTE_BUNDLE_CORPUS").map(PathBuf::from);
    let temp = tempfile::tempdir().unwrap();
    let dir = keep.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir).unwrap();
    let (corpus, _alive) = build_corpus(&dir).await;
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/verify_bundle.py");
    let mut disagreements = Vec::new();
    for case in &corpus.cases {
        let mut bote = Command::new(crate::support::bote_bin());
        bote.arg("verify").arg(&case.file).args(&case.args);
        let mut py = Command::new("python3");
        py.arg(python).arg(&case.file).args(&case.args);
        let expected = if case.accept { 0 } else { 1 };
        let (b, p) = (exit_code(bote, &dir), exit_code(py, &dir));
        if b != expected || p != expected {
            disagreements.push(format!(
                "{} ({}): expected {expected}, bote {b}, python {p}",
                case.file, case.why
            ));
        }
    }
    let accepted = corpus.cases.iter().filter(|c| c.accept).count();
    assert!(
        accepted >= 8 && corpus.cases.len() - accepted >= 150,
        "{accepted} of {}",
        corpus.cases.len()
    );
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}
