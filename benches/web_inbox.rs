//! Web inbox latency with a full mailbox (issue 13): a citizen's inbox holding
//! `BOTE_BENCH_MESSAGES` (default 100,000) messages, then the inbox page (first page, and a
//! page 50,000 messages deep by its keyset cursor) and the message page, each requested
//! `BOTE_BENCH_REQUESTS` (default 300) times through the whole router (cookie, session
//! resolution with the user key unsealed, keyset query, subject decryption, template).
//! Prints p50 / p99 / max per page, on SQLite and, when `BOTE_BENCH_POSTGRES_TCP` names a
//! server, PostgreSQL. Target: inbox page p99 < 50 ms.
//!
//! `cargo bench --bench web_inbox` (a benchmark, not a test: it takes minutes, mostly to fill
//! the mailbox through the real pipeline).

// A benchmark harness: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bote::accounts::service::{Accounts, AddUser};
use bote::accounts::{Actor, AuthLevel, Role};
use bote::address::EmailAddress;
use bote::evidence::Writer;
use bote::gateway::Gateway;
use bote::message::{Content, Options};
use bote::pipeline::{Channel, Submission, Submitter};
use http_body_util::BodyExt;
use tower::ServiceExt;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Bench {
    _parts: common::Parts,
    gateway: Gateway,
    app: axum::Router,
    cookie: String,
}

async fn setup(url: Option<&str>, messages: u64) -> Bench {
    let parts = common::parts(url).await;
    let writer = Writer::spawn(parts.store.clone(), parts.log.clone());
    // Filling the mailbox is set-up, not office traffic: no hourly office rate.
    let mut config = parts.config.clone();
    config.limits.office_messages_per_hour = 0;
    config.limits.office_recipients_per_hour = 0;
    let gateway = Gateway::from_parts(
        parts.store.clone(),
        Arc::new(config),
        parts.keys.clone(),
        parts.log.clone(),
        writer,
    );
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
    // Office software over SMTP: one encryption per message, no sender copy.
    let from = Arc::new(Submitter {
        mailbox: added.mailbox,
        auth_level: AuthLevel::Normal,
        channel: Channel::Smtp,
    });
    let started = Instant::now();
    let submitters = 16u64;
    let mut tasks = Vec::new();
    for s in 0..submitters {
        let gateway = gateway.clone();
        let from = from.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = s;
            while n < messages {
                let submission = Submission {
                    recipients: vec!["anna@bench.example".to_owned()],
                    resolved: Vec::new(),
                    content: Content::Composed {
                        subject: format!("Bescheid Nr. {n}"),
                        text: format!("Sehr geehrte Frau Muster,\nanbei Bescheid {n}.\n"),
                        attachments: Vec::new(),
                    },
                    options: Options::default(),
                    reserved: Vec::new(),
                };
                gateway.submit_as(&from, submission).await.unwrap();
                n += submitters;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "  filled the inbox with {messages} messages in {secs:.0} s ({:.0}/s)",
        messages as f64 / secs
    );
    let session = gateway
        .auth()
        .login("anna@bench.example", "a long enough password", None)
        .await
        .unwrap();
    let cookie = format!("__Host-bote_session={}", session.credential.expose());
    let app = bote::web::router(gateway.clone());
    Bench {
        _parts: parts,
        gateway,
        app,
        cookie,
    }
}

impl Bench {
    async fn get(&self, path: &str) -> (StatusCode, String) {
        let req = Request::builder()
            .uri(path)
            .header(header::COOKIE, &self.cookie)
            .body(Body::empty())
            .unwrap();
        let response = self.app.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// p50, p99 and max of `requests` sequential GETs of `path`.
    async fn measure(&self, name: &str, path: &str, requests: u64) {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let mut times: Vec<Duration> = Vec::new();
        for _ in 0..requests {
            let t = Instant::now();
            let (status, _) = self.get(path).await;
            times.push(t.elapsed());
            assert_eq!(status, StatusCode::OK);
        }
        times.sort();
        let at = |q: f64| {
            let i = ((times.len() as f64 - 1.0) * q).round() as usize;
            times[i].as_secs_f64() * 1000.0
        };
        println!(
            "  {name:<28} p50 {:>6.1} ms   p99 {:>6.1} ms   max {:>6.1} ms   ({requests} requests)",
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
}

/// The copy id at `offset` in the inbox, newest first: the keyset cursor of a deep page.
async fn cursor_at(gateway: &Gateway, offset: u64) -> String {
    let mut conn = gateway.store().pool().acquire().await.unwrap();
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM message_copies WHERE folder = 'inbox' \
         ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET {offset}"
    )))
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

async fn run(name: &str, url: Option<&str>) {
    let messages = env_or("BOTE_BENCH_MESSAGES", 100_000);
    let requests = env_or("BOTE_BENCH_REQUESTS", 300);
    println!("{name}:");
    let bench = setup(url, messages).await;
    bench
        .measure("inbox, first page", "/mail?folder=inbox", requests)
        .await;
    let deep = cursor_at(&bench.gateway, messages / 2).await;
    bench
        .measure(
            &format!("inbox, {} deep", messages / 2),
            &format!("/mail?folder=inbox&before={deep}"),
            requests,
        )
        .await;
    let (_, page) = bench.get("/mail?folder=inbox").await;
    let at = page.find("href=\"/mail/").unwrap();
    let id = page[at + 12..].split('"').next().unwrap().to_owned();
    bench
        .measure("message page", &format!("/mail/{id}"), requests)
        .await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        run("SQLite", None).await;
        if let Ok(url) = std::env::var("BOTE_BENCH_POSTGRES_TCP") {
            run("PostgreSQL (TCP)", Some(&url)).await;
        }
    });
}
