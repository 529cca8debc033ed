//! The `bote` binary as an operator uses it: init, users, mailboxes, errors.

use bote::store::Backend;
use sequoia_openpgp::cert::CertBuilder;
use sequoia_openpgp::serialize::SerializeInto;

use crate::on_both_backends;
use crate::support::{
    Setup, TestDb, assert_one_line_error, bote, run, run_with_stdin, stderr, stdout,
};

async fn operator_workflow((setup, db): (Setup, TestDb)) {
    let backend = db.backend;
    let dir = setup.path();
    for f in [
        "bote.toml",
        "certs/ca.crt",
        "certs/server.crt",
        "certs/server.key",
        "certs/peer.crt",
        "certs/peer.key",
        "keys/passphrase",
    ] {
        assert!(dir.join(f).is_file(), "init did not write {f}");
    }
    assert_eq!(
        dir.join("data/bote.db").exists(),
        backend == Backend::Sqlite
    );

    setup.add_user("citizen", "anna@lemgo.example");
    setup.add_user("staff", "bernd@lemgo.example");
    let out = run(setup.cmd(&[
        "mailbox",
        "add",
        "--office",
        "bauamt@lemgo.example",
        "--name",
        "Bauamt Lemgo",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("mailbox: bauamt@lemgo.example (office)"));
    let office_code = lines
        .next()
        .and_then(|l| l.strip_prefix("recovery-code: "))
        .expect("a local office prints its recovery code once")
        .to_owned();
    assert_eq!(office_code.len(), 29);

    let cert_file = dir.join("office.asc");
    let (cert, _) = CertBuilder::general_purpose(Some("Ordnungsamt <ordnungsamt@kreis.example>"))
        .generate()
        .unwrap();
    std::fs::write(&cert_file, cert.armored().to_vec().unwrap()).unwrap();
    let out = run(setup.cmd(&[
        "mailbox",
        "add",
        "--office",
        "ordnungsamt@kreis.example",
        "--name",
        "Ordnungsamt",
        "--relay",
        "mail.kreis.example:25",
        "--cert",
        cert_file.to_str().unwrap(),
        "--relay-tls",
        "opportunistic",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));

    // `--config` before the verb works as well as after it.
    let mut cmd = bote(&[
        "--config",
        setup.config().to_str().unwrap(),
        "mailbox",
        "add-member",
        "--mailbox",
        "bauamt@lemgo.example",
        "--user",
        "bernd@lemgo.example",
    ]);
    if let Some(url) = &setup.database_url {
        cmd.env("BOTE_DATABASE_URL", url);
    }
    // A first member without the recovery code would wait forever: refused, saying how.
    assert_one_line_error(
        &run(cmd),
        &["nobody holds the key", "--recovery-code-stdin"],
    );

    // The mailbox recovery code grants the first member; a wrong one changes nothing.
    let grant = |code: &str| {
        run_with_stdin(
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
        )
    };
    assert_one_line_error(
        &grant("AAAAA-BBBBB-CCCCC-DDDDD-EEEEE"),
        &["recovery code is wrong"],
    );
    let out = grant(&office_code.to_lowercase());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("(active)"), "{}", stdout(&out));

    let out = run(setup.cmd(&[
        "user",
        "verify-identity",
        "anna@lemgo.example",
        "--method",
        "in-person",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(setup.cmd(&[
        "mailbox",
        "verify-identity",
        "bauamt@lemgo.example",
        "--method",
        "qualified-signature",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));

    let users = stdout(&run(setup.cmd(&["user", "list"])));
    assert!(
        users.contains("anna@lemgo.example\tcitizen\tverified:in-person\tactive"),
        "{users}"
    );
    assert!(
        users.contains("bernd@lemgo.example\tstaff\tunverified\tactive"),
        "{users}"
    );
    let boxes = stdout(&run(setup.cmd(&["mailbox", "list"])));
    assert!(boxes.contains("bauamt@lemgo.example\toffice\tverified:qualified-signature\tBauamt Lemgo\tmembers=bernd@lemgo.example(active)"), "{boxes}");
    assert!(boxes.contains("ordnungsamt@kreis.example\texternal\tunverified\tOrdnungsamt\trelay=mail.kreis.example:25 tls=opportunistic"), "{boxes}");
    assert!(boxes.contains("anna@lemgo.example\tcitizen"), "{boxes}");

    let out = run(setup.cmd(&["user", "disable", "bernd@lemgo.example"]));
    assert!(out.status.success());
    assert!(
        stdout(&run(setup.cmd(&["user", "list"])))
            .contains("bernd@lemgo.example\tstaff\tunverified\tdisabled")
    );
}
on_both_backends!(operator_workflow, super::operator_workflow);

async fn bad_input_gives_one_line_and_changes_nothing((setup, _db): (Setup, TestDb)) {
    setup.add_user("citizen", "anna@lemgo.example");
    let list_before = stdout(&run(setup.cmd(&["user", "list"])));

    let pw = "a long enough password\n";
    let add = |email: &str| {
        setup.cmd(&[
            "user",
            "add",
            "--role",
            "citizen",
            "--name",
            "X",
            "--email",
            email,
            "--password-stdin",
        ])
    };
    assert_one_line_error(
        &run_with_stdin(add("Anna@LEMGO.example"), pw),
        &["user Anna@lemgo.example already exists"],
    );
    assert_one_line_error(
        &run_with_stdin(add("anna@@lemgo.example"), pw),
        &["--email", "not of the form local-part@domain"],
    );
    let long = format!("{}@lemgo.example", "a".repeat(65));
    assert_one_line_error(&run_with_stdin(add(&long), pw), &["at most 64 octets"]);
    assert_one_line_error(
        &run_with_stdin(add("x@other.example"), pw),
        &["not in a domain this gateway serves"],
    );
    assert_one_line_error(
        &run_with_stdin(add("y@lemgo.example"), "short\n"),
        &["password too short"],
    );
    assert_one_line_error(
        &run_with_stdin(add("y@lemgo.example"), ""),
        &["no password on standard input"],
    );
    let no_flag = setup.cmd(&[
        "user",
        "add",
        "--role",
        "citizen",
        "--name",
        "X",
        "--email",
        "z@lemgo.example",
    ]);
    assert_one_line_error(&run_with_stdin(no_flag, pw), &["--password-stdin"]);
    let role = setup.cmd(&[
        "user",
        "add",
        "--role",
        "root",
        "--name",
        "X",
        "--email",
        "z@lemgo.example",
        "--password-stdin",
    ]);
    assert_one_line_error(
        &run_with_stdin(role, pw),
        &[
            "invalid value 'root' for '--role",
            "possible values: citizen, staff, legal, admin",
        ],
    );
    assert_one_line_error(
        &run(setup.cmd(&[
            "mailbox",
            "add-member",
            "--mailbox",
            "anna@lemgo.example",
            "--user",
            "anna@lemgo.example",
        ])),
        &["members can only be added to local office mailboxes"],
    );
    assert_one_line_error(
        &run(setup.cmd(&[
            "user",
            "verify-identity",
            "anna@lemgo.example",
            "--method",
            "selfie",
        ])),
        &[
            "invalid value 'selfie' for '--method",
            "possible values: in-person, eid",
        ],
    );
    assert_one_line_error(
        &run(setup.cmd(&[
            "mailbox",
            "add",
            "--office",
            "a@b.example",
            "--name",
            "N",
            "--relay",
            "host:25",
        ])),
        &["--cert"],
    );

    // A wrong database URL: one line, no password echoed, nothing created.
    let mut wrong_db = bote(&["user", "list", "--config", setup.config().to_str().unwrap()]);
    wrong_db.env(
        "BOTE_DATABASE_URL",
        "postgres://bote:topsecret@127.0.0.1:1/bote",
    );
    let out = run(wrong_db);
    assert_one_line_error(
        &out,
        &["cannot connect to database postgres://bote:***@127.0.0.1:1/bote"],
    );
    assert!(!stderr(&out).contains("topsecret"));
    let missing = setup.path().join("nowhere.db");
    let mut wrong_file = bote(&["user", "list", "--config", setup.config().to_str().unwrap()]);
    wrong_file.env(
        "BOTE_DATABASE_URL",
        format!("sqlite://{}", missing.display()),
    );
    assert_one_line_error(&run(wrong_file), &["does not exist", "bote migrate"]);
    assert!(!missing.exists(), "a read-only command created a database");

    assert_eq!(stdout(&run(setup.cmd(&["user", "list"]))), list_before);
}
on_both_backends!(
    bad_input_gives_one_line_and_changes_nothing,
    super::bad_input_gives_one_line_and_changes_nothing
);

#[tokio::test]
async fn bad_configuration_is_refused_with_key_file_and_expectation() {
    let (setup, _db) = Setup::new(Backend::Sqlite).await;
    let config = setup.config();
    let original = std::fs::read_to_string(&config).unwrap();

    std::fs::write(
        &config,
        original.replace("[http]\n", "[http]\nlisten_port = 8443\n"),
    )
    .unwrap();
    assert_one_line_error(
        &run(setup.cmd(&["config", "check"])),
        &["bote.toml", "listen_port", "unknown field"],
    );

    std::fs::write(
        &config,
        original.replace("listen = \"127.0.0.1:8443\"", "listen = \"localhost\""),
    )
    .unwrap();
    assert_one_line_error(
        &run(setup.cmd(&["serve"])),
        &["bote.toml", "`http.listen`", "expected IP:PORT"],
    );

    std::fs::write(
        &config,
        original.replace("max_recipients = 100", "max_recipients = \"lots\""),
    )
    .unwrap();
    assert_one_line_error(
        &run(setup.cmd(&["user", "list"])),
        &["`limits.max_recipients`", "expected u32"],
    );

    std::fs::write(
        &config,
        original.replace("certs/server.key", "certs/missing.key"),
    )
    .unwrap();
    assert_one_line_error(
        &run(setup.cmd(&["serve"])),
        &["`tls.key`", "certs/missing.key", "does not exist"],
    );

    std::fs::write(&config, &original).unwrap();
    let mut env_typo = setup.cmd(&["config", "check"]);
    env_typo.env("BOTE_SMTP_MX_LISTN", "0.0.0.0:25");
    assert_one_line_error(
        &run(env_typo),
        &[
            "environment variable BOTE_SMTP_MX_LISTN",
            "unknown key `mx_listn`",
        ],
    );

    let mut no_sessions = setup.cmd(&["config", "check"]);
    no_sessions.env("BOTE_QUEUE_RELAY_SESSIONS", "0");
    assert_one_line_error(
        &run(no_sessions),
        &["`queue.relay_sessions`", "expected 1 to 100"],
    );

    let absent = bote(&["config", "check", "--config", "/nonexistent/bote.toml"]);
    assert_one_line_error(
        &run(absent),
        &["/nonexistent/bote.toml", "cannot read config file"],
    );
}

#[tokio::test]
async fn config_check_prints_effective_config_with_secrets_redacted() {
    let (setup, _db) = Setup::new(Backend::Sqlite).await;
    let mut cmd = setup.cmd(&["config", "check"]);
    cmd.env(
        "BOTE_DATABASE_URL",
        "postgres://bote:s3cret@db.internal/bote",
    );
    cmd.env("BOTE_SMTP_TRUSTED_NETWORKS", "10.1.0.0/16,192.0.2.0/24");
    let out = run(cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("postgres://bote:***@db.internal/bote"),
        "{text}"
    );
    assert!(!text.contains("s3cret"));
    assert!(text.contains("\"10.1.0.0/16\""), "{text}");
    let abs_cert = setup.path().join("certs/server.crt");
    assert!(
        text.contains(abs_cert.to_str().unwrap()),
        "paths are shown resolved: {text}"
    );
}

#[tokio::test]
async fn init_refuses_to_overwrite_and_validates_its_domain() {
    let (setup, _db) = Setup::new(Backend::Sqlite).await;
    let before = std::fs::read(setup.path().join("certs/ca.crt")).unwrap();
    let again = bote(&[
        "init",
        "--dir",
        setup.path().to_str().unwrap(),
        "--domain",
        "lemgo.example",
    ]);
    assert_one_line_error(&run(again), &["already exists"]);
    assert_eq!(
        std::fs::read(setup.path().join("certs/ca.crt")).unwrap(),
        before
    );

    let fresh = tempfile::tempdir().unwrap();
    let target = fresh.path().join("new");
    let bad = bote(&[
        "init",
        "--dir",
        target.to_str().unwrap(),
        "--domain",
        "not a domain",
    ]);
    assert_one_line_error(&run(bad), &["--domain"]);
    assert!(!target.exists(), "failed init left files behind");
}

#[tokio::test]
async fn failed_init_on_an_unreachable_database_leaves_nothing() {
    let fresh = tempfile::tempdir().unwrap();
    let target = fresh.path().join("gw");
    let mut cmd = bote(&[
        "init",
        "--dir",
        target.to_str().unwrap(),
        "--domain",
        "lemgo.example",
    ]);
    cmd.env("BOTE_DATABASE_URL", "postgres://bote@127.0.0.1:1/bote");
    assert_one_line_error(&run(cmd), &["cannot connect to database"]);
    assert!(!target.exists(), "failed init left files behind");
}

async fn migrate_reports_what_it_applied((setup, _db): (Setup, TestDb)) {
    let out = run(setup.cmd(&["migrate"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "migrations-applied: 0\n",
        "init already migrated"
    );
}
on_both_backends!(
    migrate_reports_what_it_applied,
    super::migrate_reports_what_it_applied
);

#[tokio::test]
async fn migrate_creates_a_postgres_schema_from_scratch() {
    let db = TestDb::new(Backend::Postgres).await;
    let (setup, _sqlite) = Setup::new(Backend::Sqlite).await;
    let mut cmd = bote(&["migrate", "--config", setup.config().to_str().unwrap()]);
    cmd.env("BOTE_DATABASE_URL", &db.url);
    let out = run(cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("migrations-applied: "),
        "{}",
        stdout(&out)
    );
    assert_ne!(stdout(&out), "migrations-applied: 0\n");
}

#[tokio::test]
async fn password_reset_keeps_the_key_with_the_recovery_code_or_replaces_it_explicitly() {
    let (setup, _db) = Setup::new(Backend::Sqlite).await;
    let code = setup.add_user("citizen", "anna@lemgo.example");
    let reset = |extra: &[&str], stdin: &str| {
        let mut args = vec![
            "user",
            "set-password",
            "anna@lemgo.example",
            "--password-stdin",
        ];
        args.extend_from_slice(extra);
        run_with_stdin(setup.cmd(&args), stdin)
    };
    let refused = reset(&[], "a new long password\n");
    assert_one_line_error(
        &refused,
        &["recovery code", "--new-key", "stays unreadable"],
    );
    let missing = reset(&["--recovery-code-stdin"], "a new long password\n");
    assert_one_line_error(&missing, &["no recovery code on standard input", "line 2"]);
    let kept = reset(
        &["--recovery-code-stdin"],
        &format!("a new long password\n{code}\n"),
    );
    assert!(kept.status.success(), "{}", stderr(&kept));
    assert_eq!(stdout(&kept), "password-set: anna@lemgo.example\n");
    let replaced = reset(&["--new-key"], "yet another password\n");
    assert!(replaced.status.success(), "{}", stderr(&replaced));
    let new_code = stdout(&replaced)
        .lines()
        .find_map(|l| l.strip_prefix("recovery-code: ").map(str::to_owned))
        .expect("a new key comes with a new recovery code");
    assert_ne!(new_code, code);
    // The old recovery code no longer opens anything.
    let stale = reset(
        &["--recovery-code-stdin"],
        &format!("a fourth long password\n{code}\n"),
    );
    assert_one_line_error(&stale, &["recovery code is wrong"]);
}

#[tokio::test]
async fn send_tokens_are_printed_once_and_stored_only_as_digests() {
    use sha2::{Digest, Sha256};
    let (setup, _db) = Setup::new(Backend::Sqlite).await;
    let out = run(setup.cmd(&[
        "mailbox",
        "add",
        "--office",
        "bauamt@lemgo.example",
        "--name",
        "Bauamt",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    setup.add_user("citizen", "anna@lemgo.example");

    let out = run(setup.cmd(&["token", "create", "--mailbox", "bauamt@lemgo.example"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let token = stdout(&out);
    let token = token.trim_end();
    assert_eq!(stdout(&out).lines().count(), 1, "the token alone on stdout");
    assert!(
        token.starts_with("bote_token_") && token.len() == "bote_token_".len() + 43,
        "{token}"
    );

    let peer = setup.path().join("certs/peer.crt");
    let with_cert = run(setup.cmd(&[
        "token",
        "create",
        "--mailbox",
        "bauamt@lemgo.example",
        "--client-cert",
        peer.to_str().unwrap(),
    ]));
    assert!(with_cert.status.success(), "{}", stderr(&with_cert));
    assert_ne!(stdout(&with_cert).trim_end(), token);

    let url = format!("sqlite://{}", setup.path().join("data/bote.db").display());
    let store = bote::store::Store::open_url(
        &url,
        bote::store::OpenMode::Existing,
        1,
        std::time::Duration::from_secs(5),
    )
    .await
    .unwrap();
    let rows =
        sqlx::query("SELECT scope, token_hash, client_cert_sha256 FROM credentials ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(rows.len(), 2);
    use sqlx::Row;
    let (scope, hash, cert): (String, Vec<u8>, Option<String>) =
        (rows[0].get(0), rows[0].get(1), rows[0].get(2));
    assert_eq!(scope, "send");
    assert_eq!(hash, Sha256::digest(token.as_bytes()).to_vec());
    assert_eq!(cert, None);
    let pinned: Option<String> = rows[1].get(2);
    assert_eq!(pinned.map(|h| h.len()), Some(64));
    let mut dump = std::fs::read(setup.path().join("data/bote.db")).unwrap();
    dump.extend(std::fs::read(setup.path().join("data/bote.db-wal")).unwrap_or_default());
    assert!(
        !dump.windows(token.len()).any(|w| w == token.as_bytes()),
        "token stored in clear"
    );

    assert_one_line_error(
        &run(setup.cmd(&["token", "create", "--mailbox", "anna@lemgo.example"])),
        &["citizen mailbox", "tokens are for office mailboxes"],
    );
    assert_one_line_error(
        &run(setup.cmd(&["token", "create", "--mailbox", "nobody@lemgo.example"])),
        &["no mailbox nobody@lemgo.example"],
    );
}

#[test]
fn the_demo_shows_every_feature_from_the_first_minute() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let mut child = bote(&["demo", "--dir", demo.to_str().unwrap()])
        .env("BOTE_HTTP_LISTEN", "127.0.0.1:0")
        .env("BOTE_HTTP_METRICS_LISTEN", "")
        .env("BOTE_SMTP_SUBMISSION_LISTEN", "127.0.0.1:0")
        .env("BOTE_SMTP_SUBMISSIONS_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut printed = String::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("stop with") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    for needle in [
        "second factor (TOTP): otpauth://totp/",
        &format!("cli:     {}", crate::support::bote_bin().display()),
        &format!("--config {}", demo.join("bote.toml").display()),
        "smtp:    submission 127.0.0.1:0 (STARTTLS), 127.0.0.1:0 (TLS); AUTH user bauamt@",
    ] {
        assert!(printed.contains(needle), "{needle} not in:\n{printed}");
    }
    let config = demo.join("bote.toml");
    let users = stdout(&run(bote(&[
        "--config",
        config.to_str().unwrap(),
        "user",
        "list",
    ])));
    assert!(
        users.contains("anna@lemgo.example\tcitizen\tverified:eid"),
        "{users}"
    );
    let boxes = stdout(&run(bote(&[
        "--config",
        config.to_str().unwrap(),
        "mailbox",
        "list",
    ])));
    assert!(
        boxes.contains("bauamt@lemgo.example\toffice\tverified:in-person"),
        "{boxes}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_into_a_closed_pipe_ends_quietly() {
    use std::io::BufRead;
    let gw = crate::support::Gateway::new(bote::store::Backend::Sqlite).await;
    let records = (0..2000)
        .map(|i| {
            crate::support::record(
                bote::evidence::Event::SubmissionAcceptance,
                &format!("m-{i}"),
                "bauamt@lemgo.example",
                1_795_000_000_000 + i,
            )
        })
        .collect();
    gw.commit(records).await;
    // `bote evidence search … | head -1`: the reader leaves after one line.
    let mut child = gw
        .setup
        .cmd(&["evidence", "search", "--limit", "2000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("SubmissionAcceptance"), "{first}");
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        stderr(&out)
    );
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}
