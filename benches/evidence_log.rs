//! Evidence and log benchmarks (issue: evidence and the transparency log).
//!
//! - `append/*`: signed evidence records per second through the group-commit writer, with
//!   256 concurrent submitters each committing one record per request (as message handlers
//!   will), on SQLite, and on PostgreSQL when `BOTE_BENCH_POSTGRES_URL` names a database.
//! - `inclusion_proof/1M`: one inclusion proof against a 1,000,000-entry log (SQLite).
//!
//! Run: `cargo bench --bench evidence_log` (the 1M log takes a minute to build).

// A benchmark harness: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bote::accounts::{AuthLevel, IdentityMethod};
use bote::address::EmailAddress;
use bote::evidence::*;
use bote::keys::{KeyRing, LogKey};
use bote::log::Log;
use bote::store::{OpenMode, Store};
mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const RECORDS_PER_ITER: usize = 4096;

struct Bench {
    _dir: tempfile::TempDir,
    store: Store,
    keys: KeyRing,
    writer: Writer,
}

async fn setup(url: Option<&str>) -> Bench {
    let p = common::parts(url).await;
    let writer = Writer::spawn(p.store.clone(), p.log);
    Bench {
        _dir: p._dir,
        store: p.store,
        keys: p.keys,
        writer,
    }
}

fn record(i: usize) -> EvidenceRecord {
    EvidenceRecord {
        version: 1,
        evidence_id: EvidenceId::random(),
        event: Event::SubmissionAcceptance,
        reason: ReasonCode::Accepted,
        time: Timestamp(1_795_000_000_000),
        issuer: "bench.example".into(),
        sender: Sender {
            address: EmailAddress::parse("anna@bench.example").unwrap(),
            identity: IdentityAssurance {
                verified: true,
                method: Some(IdentityMethod::Eid),
            },
            auth_level: AuthLevel::High,
        },
        recipient: EmailAddress::parse("amt@bench.example").unwrap(),
        message: MessageRef {
            gateway_id: format!("m-{i}"),
            message_id: Some(format!("<{i}@bench.example>")),
            sha256: Sha256Digest::of(&i.to_be_bytes()),
            size: 1024,
            attachments: Vec::new(),
            all_attachments: None,
        },
        details: Details::default(),
        policy: None,
        issuer_key: None,
        time_source: None,
        submission_time: None,
        options: None,
        recipient_identity: None,
        chain: None,
    }
}

/// Concurrent submitters (`BOTE_BENCH_SUBMITTERS`, default 256): requests in flight, as
/// from that many SMTP sessions and HTTP requests.
fn submitters() -> usize {
    std::env::var("BOTE_BENCH_SUBMITTERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

/// Records per request (`BOTE_BENCH_RECORDS_PER_REQUEST`, default 1): a message to several
/// recipients commits one record per recipient at once.
fn per_request() -> usize {
    std::env::var("BOTE_BENCH_RECORDS_PER_REQUEST")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// Commits `total` records from `submitters()` concurrent tasks; returns the elapsed time.
async fn run_round(b: &Bench, total: usize) -> Duration {
    let submitters = submitters();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(submitters);
    for t in 0..submitters {
        let writer = b.writer.clone();
        let key = b.keys.evidence.clone();
        tasks.push(tokio::spawn(async move {
            let per = per_request();
            let mine: Vec<usize> = (t..total).step_by(submitters).collect();
            for chunk in mine.chunks(per) {
                let records = chunk.iter().map(|i| record(*i)).collect();
                let sealed = sign_async(key.clone(), records).await.unwrap();
                writer.commit(sealed, None).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(RECORDS_PER_ITER as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    let mut backends = vec![("sqlite", None)];
    if let Ok(url) = std::env::var("BOTE_BENCH_POSTGRES_URL") {
        backends.push(("postgres", Some(url)));
    }
    for (name, url) in backends {
        let bench = rt.block_on(setup(url.as_deref()));
        group.bench_function(BenchmarkId::new("signed_records", name), |bencher| {
            bencher.iter_custom(|iters| {
                (0..iters)
                    .map(|_| rt.block_on(run_round(&bench, RECORDS_PER_ITER)))
                    .sum()
            });
        });
        rt.block_on(bench.store.close());
    }
    group.finish();
}

/// The two halves of an append, apart: signing (one core) and committing pre-signed records.
fn parts(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let bench = rt.block_on(setup(None));
    let mut group = c.benchmark_group("append_parts");
    group.throughput(Throughput::Elements(RECORDS_PER_ITER as u64));
    group.sample_size(10);
    group.bench_function("seal_one_core", |bencher| {
        bencher.iter(|| {
            let records: Vec<_> = (0..RECORDS_PER_ITER).map(record).collect();
            sign(&bench.keys.evidence, records).unwrap()
        });
    });
    group.bench_function("commit_presealed_sqlite", |bencher| {
        bencher.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let records: Vec<_> = (0..RECORDS_PER_ITER).map(record).collect();
                let sealed = sign(&bench.keys.evidence, records).unwrap();
                let start = Instant::now();
                rt.block_on(async {
                    let mut tasks = Vec::new();
                    for chunk in
                        sealed.chunks(RECORDS_PER_ITER / submitters().min(RECORDS_PER_ITER))
                    {
                        let writer = bench.writer.clone();
                        let chunk = chunk.to_vec();
                        tasks.push(tokio::spawn(async move {
                            writer.commit(chunk, None).await.unwrap()
                        }));
                    }
                    for t in tasks {
                        t.await.unwrap();
                    }
                });
                total += start.elapsed();
            }
            total
        });
    });
    group.finish();
}

fn inclusion_proof(c: &mut Criterion) {
    const N: u64 = 1_000_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    let store = rt
        .block_on(Store::open_url(
            &url,
            OpenMode::CreateAndMigrate,
            4,
            Duration::from_secs(10),
        ))
        .unwrap();
    let log = Log::new(
        Arc::new(LogKey::ephemeral("bench.example/log").unwrap()),
        "bench.example/log".into(),
        dir.path(),
    );
    let built = Instant::now();
    rt.block_on(async {
        let mut next = 0u64;
        while next < N {
            let entries: Vec<Vec<u8>> = (next..(next + 10_000).min(N))
                .map(|i| format!("{{\"event\":\"SubmissionAcceptance\",\"record_sha256\":\"{i:064x}\",\"version\":1}}").into_bytes())
                .collect();
            let mut tx = store.begin().await.unwrap();
            log.append(&mut tx, &entries).await.unwrap();
            tx.commit().await.unwrap();
            next += entries.len() as u64;
        }
    });
    eprintln!("built a {N}-entry log in {:?}", built.elapsed());
    let mut group = c.benchmark_group("inclusion_proof");
    let mut i: u64 = 0;
    group.bench_function("1M", |bencher| {
        bencher.iter(|| {
            i = (i + 7919) % N;
            rt.block_on(async {
                let mut conn = store.pool().acquire().await.unwrap();
                log.inclusion_proof(&mut conn, i, N).await.unwrap()
            })
        });
    });
    group.finish();
}

criterion_group!(benches, append, parts, inclusion_proof);
criterion_main!(benches);
