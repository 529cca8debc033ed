//! Message-core benchmarks (issue: the message core).
//!
//! - `submit/{sqlite,postgres}/{1KiB,100KiB}`: accepted submissions per second through
//!   `pipeline::submit` (checks, provider signature, encryption of the recipient's copy and
//!   the sender's copy, two evidence records, one group commit), one recipient each, from
//!   `BOTE_BENCH_SUBMITTERS` (default 64) concurrent submitters. PostgreSQL runs when
//!   `BOTE_BENCH_POSTGRES_URL` names a database.
//! - Peak memory of one 45 MiB submission (printed, not a criterion measurement): the growth
//!   of the resident set's high-water mark (`VmHWM`, reset through `/proc/self/clear_refs`).
//!
//! Run: `cargo bench --bench submit`.

// A benchmark harness: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bote::accounts::service::{Accounts, AddUser};
use bote::accounts::{Actor, AuthLevel, IdentityMethod, Role};
use bote::address::EmailAddress;
use bote::evidence::Writer;
use bote::message::{Content, Options};
use bote::pipeline::{Channel, Pipeline, Submission, Submitter};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const KIB: usize = 1024;

struct Bench {
    _parts: common::Parts,
    pipeline: Pipeline,
    from: Submitter,
}

async fn setup(url: Option<&str>) -> Bench {
    let parts = common::parts(url).await;
    let writer = Writer::spawn(parts.store.clone(), parts.log.clone());
    let accounts = Accounts::new(parts.store.clone(), parts.config.gateway.domains.clone());
    let op = Actor::Operator("bench".into());
    accounts
        .add_user(
            &op,
            AddUser {
                role: Role::Citizen,
                name: "Anna".into(),
                email: EmailAddress::parse("anna@bench.example").unwrap(),
                password: "a long enough password".to_owned().into(),
                notify_email: None,
                scope: Vec::new(),
            },
        )
        .await
        .unwrap();
    let office = EmailAddress::parse("amt@bench.example").unwrap();
    let added = accounts
        .add_office(&op, &office, "Amt", None)
        .await
        .unwrap();
    accounts
        .verify_mailbox_identity(&op, &office, IdentityMethod::InPerson)
        .await
        .unwrap();
    let mut mailbox = added.mailbox;
    mailbox.identity = accounts
        .list_mailboxes()
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.id == mailbox.id)
        .unwrap()
        .identity;
    let pipeline = Pipeline::new(
        parts.store.clone(),
        Arc::new(parts.config.clone()),
        parts.keys.clone(),
        writer,
    );
    Bench {
        _parts: parts,
        pipeline,
        from: Submitter {
            mailbox,
            auth_level: AuthLevel::High,
            channel: Channel::Api,
        },
    }
}

/// An RFC 5322 message of about `size` bytes from the office to Anna.
fn message(size: usize, n: usize) -> Vec<u8> {
    let mut m = format!(
        "From: amt@bench.example\r\nTo: anna@bench.example\r\nSubject: Bescheid {n}\r\n\
         Message-ID: <{n}.{}@bench.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n",
        rand::random::<u64>()
    )
    .into_bytes();
    let line = b"Sehr geehrte Frau Muster, hiermit erhalten Sie den Bescheid vom 24.11.\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m.truncate(size);
    m.extend_from_slice(b"\r\n");
    m
}

fn submission(bytes: Vec<u8>, authoritative: bool) -> Submission {
    Submission {
        recipients: vec!["anna@bench.example".into()],
        resolved: Vec::new(),
        content: Content::Rfc5322(bytes),
        options: Options {
            authoritative,
            ..Options::default()
        },
        reserved: Vec::new(),
    }
}

fn submitters() -> usize {
    std::env::var("BOTE_BENCH_SUBMITTERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

async fn run_round(b: &Bench, total: usize, size: usize) -> Duration {
    let submitters = submitters().min(total);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(submitters);
    for t in 0..submitters {
        let pipeline = b.pipeline.clone();
        let from = b.from.clone();
        tasks.push(tokio::spawn(async move {
            for n in (t..total).step_by(submitters) {
                pipeline
                    .submit(&from, submission(message(size, n), true))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

fn submit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut backends = vec![("sqlite", None)];
    if let Ok(url) = std::env::var("BOTE_BENCH_POSTGRES_URL") {
        backends.push(("postgres", Some(url)));
    }
    let mut group = c.benchmark_group("submit");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for (name, url) in backends {
        let bench = rt.block_on(setup(url.as_deref()));
        for (label, size, per_iter) in [("1KiB", KIB, 2000), ("100KiB", 100 * KIB, 200)] {
            group.throughput(Throughput::Elements(per_iter as u64));
            group.bench_function(BenchmarkId::new(name, label), |bencher| {
                bencher.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| rt.block_on(run_round(&bench, per_iter, size)))
                        .sum()
                });
            });
        }
        rt.block_on(bench.pipeline.store().close());
    }
    group.finish();
}

fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Peak memory of one 45 MiB submission, printed as growth over the resident set before.
fn peak_memory(_c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let bench = rt.block_on(setup(None));
    // Warm up allocator, pools and statement caches with a small message first.
    rt.block_on(
        bench
            .pipeline
            .submit(&bench.from, submission(message(KIB, 0), true)),
    )
    .unwrap();
    let size = 45 * 1024 * KIB;
    let bytes = message(size, 1);
    // Reset the high-water mark to the current resident set (Linux ≥ 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = proc_status_kib("VmRSS:");
    let started = Instant::now();
    rt.block_on(bench.pipeline.submit(&bench.from, submission(bytes, true)))
        .unwrap();
    let elapsed = started.elapsed();
    let peak = proc_status_kib("VmHWM:");
    let growth_mib = peak.saturating_sub(before) as f64 / 1024.0;
    println!(
        "submit/45MiB: {elapsed:.2?}; resident set before {:.0} MiB, peak {:.0} MiB, growth \
         {growth_mib:.0} MiB = {:.1}x the message (the message itself is held by the caller)",
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        growth_mib / 45.0
    );
    rt.block_on(bench.pipeline.store().close());
}

criterion_group!(benches, peak_memory, submit);
criterion_main!(benches);
