//! Crash test (spec §7): `bote serve` is killed with SIGKILL again and again while office
//! software submits over SMTP and the relay worker delivers to an office's server. After a
//! last restart, every message that got a 250 is relayed, every evidence is in the log, and
//! `bote log verify` passes. A message may reach the office twice only when the gateway
//! died between the office's 250 and its own commit; such re-sends are counted.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bote::store::Backend;

use crate::interop::Sink;
use crate::support::{Setup, free_port, run, run_with_stdin, stderr, stdout};

const CYCLES: usize = 6;

fn serve(setup: &Setup, submission: u16, metrics: Option<u16>) -> Child {
    let mut cmd = setup.cmd(&["serve"]);
    let metrics = metrics.map(|p| format!("127.0.0.1:{p}"));
    cmd.env("BOTE_HTTP_LISTEN", "")
        .env("BOTE_HTTP_METRICS_LISTEN", metrics.unwrap_or_default())
        .env(
            "BOTE_SMTP_SUBMISSION_LISTEN",
            format!("127.0.0.1:{submission}"),
        )
        .env("BOTE_SMTP_SUBMISSIONS_LISTEN", "")
        // A killed gateway cannot remove its PostgreSQL relay's socket directory: in the
        // setup's directory it goes with the test's.
        .env("TMPDIR", setup.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", submission)).is_err() {
        assert!(Instant::now() < deadline, "bote serve did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn sigkill_during_smtp_intake_and_relay_loses_no_acknowledged_message() {
    sigkill_during_intake_and_relay(Backend::Sqlite);
}

/// The same on PostgreSQL, the production backend: the relay's leases are rows claimed
/// by a conditional `UPDATE … RETURNING`, and the server outlives every kill of the
/// gateway.
#[test]
fn sigkill_during_smtp_intake_and_relay_loses_no_acknowledged_message_on_postgresql() {
    sigkill_during_intake_and_relay(Backend::Postgres);
}

fn sigkill_during_intake_and_relay(backend: Backend) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (setup, _db) = rt.block_on(Setup::new(backend));
    let config = setup.config();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[queue]\nlease_secs = 1\nretry_base_ms = 200\n");
    std::fs::write(&config, text).unwrap();
    let sink = Sink::start("accept");
    let home = tempfile::tempdir().unwrap();
    let cert = crate::interop::gpg_office_key(home.path(), "Kreis <amt@kreis.example>");
    let cert_file = setup.path().join("kreis.asc");
    std::fs::write(&cert_file, cert).unwrap();
    let ok = |out: std::process::Output| {
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    setup.add_user("staff", "bernd@lemgo.example");
    let code = ok(run(setup.cmd(&[
        "mailbox",
        "add",
        "--office",
        "bauamt@lemgo.example",
        "--name",
        "Bauamt",
    ])));
    let code = code
        .lines()
        .find_map(|l| l.strip_prefix("recovery-code: "))
        .unwrap()
        .to_owned();
    ok(run_with_stdin(
        setup.cmd(&[
            "mailbox",
            "add-member",
            "--mailbox",
            "bauamt@lemgo.example",
            "--user",
            "bernd@lemgo.example",
            "--recovery-code-stdin",
        ]),
        &format!("{code}\n"),
    ));
    ok(run(setup.cmd(&[
        "mailbox",
        "add",
        "--office",
        "amt@kreis.example",
        "--name",
        "Kreis",
        "--relay",
        &format!("127.0.0.1:{}", sink.port),
        "--relay-tls",
        "none",
        "--cert",
        cert_file.to_str().unwrap(),
    ])));
    let token = ok(run(setup.cmd(&[
        "token",
        "create",
        "--mailbox",
        "bauamt@lemgo.example",
    ])))
    .trim()
    .to_owned();
    let ca = setup.path().join("certs/ca.crt");
    let submission = free_port();
    let accepted: Arc<Mutex<BTreeSet<String>>> = Arc::default();

    let flood = || {
        let mut flood = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/tools/smtp_flood.py"
            ))
            .args(["localhost", &submission.to_string(), ca.to_str().unwrap()])
            .args([
                "bauamt@lemgo.example",
                &token,
                "bauamt@lemgo.example",
                "amt@kreis.example",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = flood.stdout.take().unwrap();
        let seen = accepted.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(id) = line.strip_prefix("accepted ") {
                    seen.lock().unwrap().insert(id.to_owned());
                }
            }
        });
        move || {
            flood.kill().unwrap();
            flood.wait().unwrap();
            reader.join().unwrap();
        }
    };

    for cycle in 0..CYCLES {
        let mut server = serve(&setup, submission, None);
        let stop_flood = flood();
        std::thread::sleep(Duration::from_millis(700 + 250 * cycle as u64));
        server.kill().unwrap(); // SIGKILL
        server.wait().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        stop_flood();
    }
    let killed = accepted.lock().unwrap().len();
    assert!(killed >= 20, "only {killed} messages were acknowledged");

    // A last start, with some more intake: everything acknowledged is relayed, the queue
    // gauges say so, and SIGTERM then stops the gateway cleanly.
    let waiting = stdout(&run(setup.cmd(&["queue", "list"]))).lines().count();
    let metrics = free_port();
    let mut server = serve(&setup, submission, Some(metrics));
    let first = gauge(metrics, "bote_queue_depth");
    assert!(first <= waiting as f64, "{first} > {waiting} jobs waiting");
    let stop_flood = flood();
    std::thread::sleep(Duration::from_millis(500));
    stop_flood();
    let accepted = accepted.lock().unwrap().clone();
    assert!(accepted.len() > killed, "the last start accepted nothing");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pending = stdout(&run(setup.cmd(&["queue", "list"])));
        if pending.trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "jobs never finished:\n{pending}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The gauges follow within about a second (the worker refreshes them between polls).
    let deadline = Instant::now() + Duration::from_secs(20);
    while gauge(metrics, "bote_queue_depth") != 0.0
        || gauge(metrics, "bote_queue_oldest_job_age_seconds") != 0.0
    {
        assert!(
            Instant::now() < deadline,
            "the queue gauges never came down to 0"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            server.kill().unwrap();
            panic!("bote serve did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "SIGTERM: {status:?}");

    let mut delivered: BTreeMap<String, usize> = BTreeMap::new();
    for entry in std::fs::read_dir(sink.dir.path().join("mail")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "eml") {
            let eml = std::fs::read_to_string(&path).unwrap();
            let id = eml
                .lines()
                .find_map(|l| l.strip_prefix("Message-ID: <"))
                .and_then(|l| l.split('@').next())
                .unwrap()
                .to_owned();
            *delivered.entry(id).or_default() += 1;
        }
    }
    let missing: Vec<&String> = accepted
        .iter()
        .filter(|id| !delivered.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never relayed: {missing:?}"
    );
    let resent = delivered.values().filter(|n| **n > 1).count();
    for id in &accepted {
        let timeline = stdout(&run(setup.cmd(&["evidence", "timeline", id])));
        assert!(
            timeline.contains("SubmissionAcceptance") && timeline.contains("RelayToNonERDS"),
            "{id}: {timeline}"
        );
    }
    let verify = run(setup.cmd(&["log", "verify"]));
    assert!(verify.status.success(), "{}", stderr(&verify));
    eprintln!(
        "crash test ({backend:?}): {CYCLES} SIGKILLs, {} acknowledged, {} relayed, {resent} re-sent",
        accepted.len(),
        delivered.len()
    );
}

/// The value of a gauge on the metrics listener at `port` (waits up to 10 s for it).
fn gauge(port: u16, name: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("curl")
            .args(["-s", &format!("http://127.0.0.1:{port}/metrics")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(value) = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        {
            return value.trim().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no {name} in:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
