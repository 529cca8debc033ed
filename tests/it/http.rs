//! The HTTPS service: in-process through the router, and as a real process with curl.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bote::store::{Backend, OpenMode};
use bote::web;
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::on_both_backends;
use crate::support::{Gateway, Setup, TestDb, free_port, record, stderr};

const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];

/// The router of `gw`, but reading `store` (which may differ, e.g. be unmigrated).
fn app(gw: &Gateway, store: bote::store::Store) -> axum::Router {
    web::router(bote::gateway::Gateway::from_parts(
        store,
        Arc::new(gw.config.clone()),
        gw.keys.clone(),
        gw.log.clone(),
        gw.writer.clone(),
    ))
}

async fn get(app: &axum::Router, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let (status, headers, body) = raw(app, path).await;
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn assert_security_headers(headers: &axum::http::HeaderMap) {
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(
            headers.get(*name).map(|v| v.to_str().unwrap()),
            Some(*value),
            "{name}"
        );
    }
    let csp = headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(headers.get("x-request-id").is_some(), "request id missing");
}

async fn health_readiness_and_headers_on_every_response(gw: Gateway) {
    let db = &gw.db;
    let app = app(&gw, gw.store.clone());
    let (status, headers, body) = get(&app, "/healthz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
    assert_security_headers(&headers);

    let (status, headers, body) = get(&app, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["database"], db.backend.to_string());
    assert_security_headers(&headers);

    let (status, headers, body) = get(&app, "/no/such/page?token=abc").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        headers.get("content-type").unwrap(),
        "application/problem+json"
    );
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["type"], "urn:bote:problem:not-found");
    assert_eq!(problem["status"], 404);
    assert_security_headers(&headers);
}
on_both_backends!(
    health_readiness_and_headers_on_every_response,
    super::health_readiness_and_headers_on_every_response
);

async fn readyz_fails_while_migrations_are_pending(db: TestDb) {
    let gw = Gateway::new(Backend::Sqlite).await;
    let app = app(&gw, db.open(OpenMode::Unchecked).await);
    let (status, headers, body) = get(&app, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        headers.get("content-type").unwrap(),
        "application/problem+json"
    );
    assert!(body.contains("schema not current"), "{body}");
}
on_both_backends!(
    readyz_fails_while_migrations_are_pending,
    super::readyz_fails_while_migrations_are_pending
);

async fn public_log_serves_checkpoint_key_and_tiles(gw: Gateway) {
    let records: Vec<_> = (0..300)
        .map(|i| {
            record(
                bote::evidence::Event::SubmissionAcceptance,
                &format!("m{i}"),
                "bauamt@lemgo.example",
                1_795_000_000_000 + i,
            )
        })
        .collect();
    let receipt = gw.commit(records).await;
    assert_eq!(receipt.checkpoint.size, 300);
    let app = app(&gw, gw.store.clone());

    let (status, headers, body) = get(&app, "/log/checkpoint").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get("content-type").unwrap(),
        "text/plain; charset=utf-8"
    );
    assert_eq!(body, receipt.checkpoint.note);
    assert!(body.starts_with("lemgo.example/log\n300\n"), "{body}");
    bote::log::SignedCheckpoint::parse(&body, gw.keys.log.verifier_key()).unwrap();

    let (status, _, body) = get(&app, "/log/key").await;
    assert_eq!(status, StatusCode::OK);
    let (vkey, cert) = body.split_once("\n\n").unwrap();
    assert!(!vkey.contains('\n'), "verifier key alone on the first line");
    assert!(vkey.starts_with("lemgo.example/log+"), "{vkey}");
    assert!(
        cert.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"),
        "{cert}"
    );
    assert!(!body.contains("PRIVATE"));

    // Level-0 tiles: one full (256 leaf hashes) and one partial (44), matching the tree.
    let full = raw(&app, "/log/tile/0/000").await;
    assert_eq!((full.0, full.2.len()), (StatusCode::OK, 256 * 32));
    assert!(
        full.1
            .get("cache-control")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    let mut conn = gw.store.pool().acquire().await.unwrap();
    let entry0 = gw.log.entry(&mut conn, 0).await.unwrap();
    assert_eq!(&full.2[..32], &tlog_tiles::record_hash(&entry0).0[..]);
    let partial = raw(&app, "/log/tile/0/001.p/44").await;
    assert_eq!((partial.0, partial.2.len()), (StatusCode::OK, 44 * 32));
    assert_eq!(
        raw(&app, "/log/tile/0/001.p/45").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(raw(&app, "/log/tile/0/001").await.0, StatusCode::NOT_FOUND);
    // Level 1 has one hash (the first 256 leaves); it is the root of tile 0/000's subtree.
    let level1 = raw(&app, "/log/tile/1/000.p/1").await;
    assert_eq!(level1.2, tlog_tiles::Tile::subtree_hash(&full.2).0.to_vec());

    // Entry bundles: big-endian u16 length + entry, in order.
    let bundle = raw(&app, "/log/tile/entries/001.p/44").await;
    assert_eq!(bundle.0, StatusCode::OK);
    let mut rest = bundle.2.as_slice();
    let mut count = 0;
    while !rest.is_empty() {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let entry = &rest[2..2 + len];
        assert_eq!(
            entry,
            gw.log
                .entry(&mut conn, 256 + count)
                .await
                .unwrap()
                .as_slice()
        );
        rest = &rest[2 + len..];
        count += 1;
    }
    assert_eq!(count, 44);
    for bad in [
        "/log/tile/0/000.p/0",
        "/log/tile/9/000",
        "/log/tile/entries/x000/001",
        "/log/tile/0/../../etc",
    ] {
        let (status, headers, _) = get(&app, bad).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}");
        assert_security_headers(&headers);
    }
}
on_both_backends!(
    public_log_serves_checkpoint_key_and_tiles,
    super::public_log_serves_checkpoint_key_and_tiles
);

async fn raw(app: &axum::Router, path: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

/// A `bote serve` child process, killed if the test fails before it stops it.
pub struct Server {
    child: Child,
    pub https: u16,
    metrics: u16,
    pub ca: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn start(setup: &Setup, extra_args: &[&str]) -> Self {
        let https = free_port();
        let metrics = free_port();
        let mut args = vec!["serve"];
        args.extend_from_slice(extra_args);
        let mut cmd = setup.cmd(&args);
        cmd.env("BOTE_HTTP_LISTEN", format!("127.0.0.1:{https}"))
            .env("BOTE_HTTP_METRICS_LISTEN", format!("127.0.0.1:{metrics}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("spawn bote serve");
        let server = Self {
            child,
            https,
            metrics,
            ca: setup.path().join("certs/ca.crt"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", https)).is_err() {
            assert!(Instant::now() < deadline, "bote serve did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn curl(&self, extra: &[&str], path: &str) -> std::process::Output {
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&self.ca)
            .args(extra)
            .arg(format!("https://localhost:{}{path}", self.https))
            .output()
            .expect("run curl")
    }

    fn stop(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                self.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return (status, err);
            }
            assert!(Instant::now() < deadline, "bote serve ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn serves_https_with_the_generated_ca((setup, db): (Setup, TestDb)) {
    let backend = db.backend;
    let server = Server::start(&setup, &[]);

    let out = server.curl(&["-i"], "/healthz");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("HTTP/2 200"), "{text}");
    assert!(
        text.contains("strict-transport-security: max-age=63072000"),
        "{text}"
    );

    let out = server.curl(&["--fail"], "/readyz");
    assert!(
        out.status.success(),
        "readyz: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ready: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ready["database"], backend.to_string());

    // TLS 1.1 and below are refused; TLS 1.2 alone still works.
    let old = server.curl(&["--tlsv1.1", "--tls-max", "1.1"], "/healthz");
    assert!(!old.status.success(), "TLS 1.1 was accepted");
    let tls12 = server.curl(&["--tlsv1.2", "--tls-max", "1.2", "--fail"], "/healthz");
    assert!(
        tls12.status.success(),
        "TLS 1.2: {}",
        String::from_utf8_lossy(&tls12.stderr)
    );
    // Plain HTTP on the HTTPS port gets nothing useful.
    let plain = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "--fail",
            &format!("http://127.0.0.1:{}/healthz", server.https),
        ])
        .output()
        .unwrap();
    assert!(!plain.status.success());

    let metrics = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            &format!("http://127.0.0.1:{}/metrics", server.metrics),
        ])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    assert!(
        metrics
            .contains("bote_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("bote_up 1"), "{metrics}");
    // Metrics are not served on the public listener.
    let public = server.curl(&["-o", "/dev/null", "-w", "%{http_code}"], "/metrics");
    assert_eq!(String::from_utf8_lossy(&public.stdout), "404");

    let (status, log) = server.stop();
    assert!(status.success(), "exit {status:?}: {log}");
    assert!(
        log.contains("SIGTERM received") && log.contains("stopped"),
        "{log}"
    );
}
on_both_backends!(
    serves_https_with_the_generated_ca,
    super::serves_https_with_the_generated_ca
);

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let (setup, _db) = Setup::new(Backend::Sqlite).await;
    let server = Server::start(&setup, &["--log-format", "json"]);
    assert!(server.curl(&["--fail"], "/healthz").status.success());
    let (status, log) = server.stop();
    assert!(status.success());
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 3, "{log}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{line}"
        );
    }
}

#[tokio::test]
async fn serve_refuses_a_port_in_use_with_a_clear_error() {
    let (setup, _db) = Setup::new(Backend::Sqlite).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut cmd = setup.cmd(&["serve"]);
    cmd.env("BOTE_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("BOTE_HTTP_METRICS_LISTEN", "");
    let out = crate::support::run(cmd);
    assert!(!out.status.success());
    let err = stderr(&out);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: cannot listen on 127.0.0.1:") && last.contains("`http.listen`"),
        "{err}"
    );
}

#[tokio::test]
async fn sighup_reloads_the_certificate_without_a_restart() {
    let (setup, _db) = Setup::new(Backend::Sqlite).await;
    let server = Server::start(&setup, &[]);
    assert!(server.curl(&["--fail"], "/healthz").status.success());

    let other = tempfile::tempdir().unwrap();
    let domain = bote::address::DomainName::parse("lemgo.example").unwrap();
    let fresh = bote::pki::write_dev_pki(other.path(), &domain).unwrap();
    let certs = setup.path().join("certs");
    std::fs::copy(&fresh.server_cert, certs.join("server.crt")).unwrap();
    std::fs::copy(&fresh.server_key, certs.join("server.key")).unwrap();
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );

    let new_ca = |s: &Server| {
        Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "5", "--cacert"])
            .arg(&fresh.ca_cert)
            .arg(format!("https://localhost:{}/healthz", s.https))
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !new_ca(&server).status.success() {
        assert!(
            Instant::now() < deadline,
            "new certificate not served after SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !server.curl(&["--fail"], "/healthz").status.success(),
        "old CA still accepted"
    );
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("TLS certificate reloaded"), "{log}");
}

/// Days between an `openssl x509 -startdate -enddate` pair.
fn validity_days(cert: &std::path::Path) -> i64 {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-startdate", "-enddate", "-in"])
        .arg(cert)
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let date = |key: &str| {
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} in {text}"));
        let out = Command::new("date")
            .args(["-u", "+%s", "-d", value])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    (date("notAfter=") - date("notBefore=")) / 86_400
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_certificates_stay_within_what_clients_accept() {
    let (setup, _db) = Setup::new(Backend::Sqlite).await;
    for leaf in ["server.crt", "peer.crt"] {
        let days = validity_days(&setup.path().join("certs").join(leaf));
        assert!(days <= 398, "{leaf}: {days} days");
        assert!(days >= 365, "{leaf}: {days} days");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anyone_gets_inclusion_and_consistency_proofs() {
    use base64::Engine;
    let gw = Gateway::new(Backend::Sqlite).await;
    let records = (0..10)
        .map(|i| {
            record(
                bote::evidence::Event::SubmissionAcceptance,
                &format!("m-{i}"),
                "bauamt@lemgo.example",
                1_795_000_000_000 + i,
            )
        })
        .collect();
    let committed = gw.commit(records).await;
    let app = app(&gw, gw.store.clone());
    let hashes = |v: &serde_json::Value, key: &str| -> Vec<tlog_tiles::Hash> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(h.as_str().unwrap())
                    .unwrap();
                tlog_tiles::Hash(bytes.try_into().unwrap())
            })
            .collect()
    };
    let size = committed.checkpoint.size;
    let index = committed.log_indexes[3];
    let (status, _, body) = get(
        &app,
        &format!("/log/proof/inclusion?index={index}&size={size}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let proof: serde_json::Value = serde_json::from_str(&body).unwrap();
    let entry = {
        let mut conn = gw.store.pool().acquire().await.unwrap();
        gw.log.entry(&mut conn, index).await.unwrap()
    };
    tlog_tiles::check_record(
        &hashes(&proof, "inclusion"),
        size,
        committed.checkpoint.root,
        index,
        tlog_tiles::record_hash(&entry),
    )
    .unwrap();

    let old_root = {
        let mut conn = gw.store.pool().acquire().await.unwrap();
        gw.log.root_at(&mut conn, 4).await.unwrap()
    };
    let (status, _, body) = get(&app, &format!("/log/proof/consistency?old=4&new={size}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let proof: serde_json::Value = serde_json::from_str(&body).unwrap();
    tlog_tiles::check_tree(
        &hashes(&proof, "consistency"),
        size,
        committed.checkpoint.root,
        4,
        old_root,
    )
    .unwrap();

    for bad in [
        format!("/log/proof/inclusion?index={size}&size={size}"),
        format!("/log/proof/inclusion?index=0&size={}", size + 5),
        "/log/proof/consistency?old=0&new=3".to_owned(),
        "/log/proof/consistency?old=abc&new=3".to_owned(),
    ] {
        let (status, headers, body) = get(&app, &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(headers["content-type"], "application/problem+json", "{bad}");
    }
}
