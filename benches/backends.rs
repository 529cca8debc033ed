//! Submission throughput and latency on each storage backend, in one run (issue: PostgreSQL
//! over TCP). SQLite, then PostgreSQL over TCP (`BOTE_BENCH_POSTGRES_TCP`), the same
//! server over its Unix socket (`BOTE_BENCH_POSTGRES_UNIX`), and over TCP with the
//! driver's own socket (Nagle on, bote's relay bypassed), each for `BOTE_BENCH_SECONDS`
//! (default 10) with `BOTE_BENCH_SUBMITTERS` (default 16) concurrent submitters of 1 KiB
//! messages through the pipeline (checks, provider signature, two encryptions, two evidence
//! records, group commit), round-robin for `BOTE_BENCH_ROUNDS` (default 3) rounds so that a
//! noisy machine hits every backend alike. Prints messages/s, p50 and p99 per round and the
//! medians. `benches/backends.sh` starts a throwaway PostgreSQL and runs this.

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

struct Bench {
    _parts: common::Parts,
    pipeline: Pipeline,
    from: Submitter,
}

async fn setup(url: Option<&str>, relay_tcp: bool) -> Bench {
    let parts = common::parts_via(url, relay_tcp).await;
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
            mailbox: added.mailbox,
            auth_level: AuthLevel::High,
            channel: Channel::Api,
        },
    }
}

/// A 1 KiB message with a client Message-ID of 45 characters (the size that showed the
/// cliff in the issue).
fn message(n: u64) -> Vec<u8> {
    let mut m = format!(
        "From: amt@bench.example\r\nTo: anna@bench.example\r\nSubject: Bescheid {n}\r\n\
         Message-ID: <{n:016}.{:016x}@fachverfahren.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n",
        rand::random::<u64>()
    )
    .into_bytes();
    while m.len() < 1024 {
        m.extend_from_slice(b"Sehr geehrte Frau Muster, hiermit erhalten Sie den Bescheid.\r\n");
    }
    m.truncate(1024);
    m.extend_from_slice(b"\r\n");
    m
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One measurement: messages per second, p50 and p99 latency.
#[derive(Debug, Clone, Copy)]
struct Round {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

async fn round(b: &Bench, seconds: u64, submitters: u64) -> Round {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..submitters {
        let pipeline = b.pipeline.clone();
        let from = b.from.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = t << 32;
            while Instant::now() < deadline {
                n += 1;
                let submission = Submission {
                    recipients: vec!["anna@bench.example".into()],
                    resolved: Vec::new(),
                    content: Content::Rfc5322(message(n)),
                    options: Options::default(),
                    reserved: Vec::new(),
                };
                let one = Instant::now();
                pipeline.submit(&from, submission).await.unwrap();
                latencies.push(one.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Round {
        rate: all.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// Round trips of one `SELECT $1` with a parameter of each size, over one connection: the
/// direct measure of the Nagle stall (a request whose last segment waits for a delayed ACK).
async fn round_trips(url: &str, relay: bool) -> Vec<(usize, Duration)> {
    let store = bote::store::Store::open_url_via(
        url,
        bote::store::OpenMode::Unchecked,
        1,
        Duration::from_secs(5),
        relay,
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    for size in [1_000, 16_000, 60_000, 70_000, 100_000, 140_000] {
        let value = "x".repeat(size);
        let mut times = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            let _: String = sqlx::query_scalar("SELECT $1")
                .bind(&value)
                .fetch_one(store.pool())
                .await
                .unwrap();
            times.push(started.elapsed());
        }
        times.sort();
        out.push((size, times[times.len() / 2]));
    }
    store.close().await;
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Ok(url) = std::env::var("BOTE_BENCH_POSTGRES_TCP") {
        println!("one request of N bytes over TCP, median of 20 round trips:");
        let raw = rt.block_on(round_trips(&url, false));
        let relayed = rt.block_on(round_trips(&url, true));
        for ((size, r), (_, n)) in raw.iter().zip(&relayed) {
            println!(
                "  {size:7} bytes: driver's socket {:7.2} ms   through the relay {:7.2} ms",
                r.as_secs_f64() * 1e3,
                n.as_secs_f64() * 1e3
            );
        }
    }
    let seconds = env_or("BOTE_BENCH_SECONDS", 10);
    let submitters = env_or("BOTE_BENCH_SUBMITTERS", 16);
    let rounds = env_or("BOTE_BENCH_ROUNDS", 3);
    let mut backends: Vec<(&str, Option<String>, bool)> = vec![("sqlite", None, true)];
    for (name, var, relay) in [
        ("postgres-tcp", "BOTE_BENCH_POSTGRES_TCP", true),
        ("postgres-unix", "BOTE_BENCH_POSTGRES_UNIX", true),
        // The driver's own TCP socket, Nagle on: what the relay saves.
        ("postgres-tcp-raw", "BOTE_BENCH_POSTGRES_TCP", false),
    ] {
        if let Ok(url) = std::env::var(var) {
            backends.push((name, Some(url), relay));
        }
    }
    let benches: Vec<Bench> = backends
        .iter()
        .map(|(_, url, relay)| rt.block_on(setup(url.as_deref(), *relay)))
        .collect();
    println!(
        "{submitters} submitters, 1 KiB, one recipient and the sender's copy, {seconds} s per round"
    );
    let mut results: Vec<Vec<Round>> = vec![Vec::new(); benches.len()];
    for r in 1..=rounds {
        for (i, bench) in benches.iter().enumerate() {
            let m = rt.block_on(round(bench, seconds, submitters));
            println!(
                "round {r} {:14} {:7.0} msg/s  p50 {:6.1} ms  p99 {:6.1} ms",
                backends[i].0,
                m.rate,
                m.p50.as_secs_f64() * 1e3,
                m.p99.as_secs_f64() * 1e3
            );
            results[i].push(m);
        }
    }
    println!("medians:");
    for (i, rounds) in results.iter().enumerate() {
        println!(
            "  {:14} {:7.0} msg/s  p50 {:6.1} ms  p99 {:6.1} ms",
            backends[i].0,
            median(rounds.iter().map(|r| r.rate).collect()),
            median(rounds.iter().map(|r| r.p50.as_secs_f64() * 1e3).collect()),
            median(rounds.iter().map(|r| r.p99.as_secs_f64() * 1e3).collect()),
        );
    }
    for bench in &benches {
        rt.block_on(bench.pipeline.store().close());
    }
}
