//! Test support: throwaway databases on both backends, the bote binary, free ports.

#![allow(dead_code)]

pub mod tsa;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bote::store::{Backend, OpenMode, Store};

/// Environment variable naming a PostgreSQL server URL whose user may CREATE DATABASE.
/// `scripts/test` starts a throwaway cluster and sets it.
pub const PG_ENV: &str = "BOTE_TEST_POSTGRES_URL";

/// A fresh, empty database for one test.
pub struct TestDb {
    /// Its URL.
    pub url: String,
    /// Which backend.
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique_name() -> String {
    format!(
        "bote_test_{}_{}_{:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand_u32()
    )
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}

/// The PostgreSQL admin URL; tests fail loudly rather than silently skip without it.
pub fn pg_admin_url() -> String {
    std::env::var(PG_ENV).unwrap_or_else(|_| {
        panic!(
            "{PG_ENV} is not set: PostgreSQL tests need a server. Run ./scripts/test, \
             which starts a throwaway cluster, or set {PG_ENV}=postgres://USER@HOST:PORT/postgres"
        )
    })
}

impl TestDb {
    /// Creates an empty database (a new file, or a new PostgreSQL database).
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}", dir.path().join("bote.db").display());
                Self {
                    url,
                    backend,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let admin = pg_admin_url();
                let name = unique_name();
                let store =
                    Store::open_url(&admin, OpenMode::Unchecked, 1, Duration::from_secs(10))
                        .await
                        .expect("connect to the PostgreSQL test server");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(store.pool())
                    .await
                    .expect("create test database");
                store.close().await;
                // Keep the admin URL's parameters (sslmode) for the new database.
                let (path, query) = admin
                    .split_once('?')
                    .map_or((admin.as_str(), ""), |(p, q)| (p, q));
                let base = path.rsplit_once('/').map_or(path, |(b, _)| b);
                let query = if query.is_empty() {
                    String::new()
                } else {
                    format!("?{query}")
                };
                Self {
                    url: format!("{base}/{name}{query}"),
                    backend,
                    _dir: None,
                }
            }
        }
    }

    /// Opens it with migrations applied.
    pub async fn store(&self) -> Store {
        self.open(OpenMode::CreateAndMigrate).await
    }

    /// Opens it in the given mode.
    pub async fn open(&self, mode: OpenMode) -> Store {
        self.open_with(mode, 5).await
    }

    /// Opens it, creating and migrating it, with a pool of `max_connections`.
    pub async fn store_with(&self, max_connections: u32) -> Store {
        self.open_with(OpenMode::CreateAndMigrate, max_connections)
            .await
    }

    async fn open_with(&self, mode: OpenMode, max_connections: u32) -> Store {
        Store::open_url(&self.url, mode, max_connections, Duration::from_secs(10))
            .await
            .expect("open test store")
    }
}

/// What a test runs on, made fresh for one backend.
pub trait Fixture: Sized {
    /// A fresh fixture on `backend`.
    async fn for_backend(backend: Backend) -> Self;
}

impl Fixture for TestDb {
    async fn for_backend(backend: Backend) -> Self {
        TestDb::new(backend).await
    }
}

impl Fixture for (Setup, TestDb) {
    async fn for_backend(backend: Backend) -> Self {
        Setup::new(backend).await
    }
}

impl Fixture for Gateway {
    async fn for_backend(backend: Backend) -> Self {
        Gateway::new(backend).await
    }
}

/// Makes the fixture `body` takes, on `backend`, and runs `body` with it.
pub async fn run_on<T: Fixture, F: std::future::Future<Output = ()>>(
    backend: Backend,
    body: impl FnOnce(T) -> F,
) {
    body(T::for_backend(backend).await).await;
}

/// Runs `$body(fixture)` once per backend, as two tests `sqlite` and `postgres`; the
/// fixture type ([`Fixture`]) is whatever `$body` takes.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident, $body:path) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::support::run_on(bote::store::Backend::Sqlite, $body).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::support::run_on(bote::store::Backend::Postgres, $body).await;
            }
        }
    };
}

/// The bote binary built for these tests.
pub fn bote_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bote"))
}

/// A `bote` invocation with a clean `BOTE_*` environment.
pub fn bote(args: &[&str]) -> Command {
    let mut cmd = Command::new(bote_bin());
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("BOTE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd
}

/// Runs a command, feeding `stdin`, and returns its output.
pub fn run_with_stdin(mut cmd: Command, stdin: &str) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bote");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for bote")
}

/// Runs a command with empty stdin.
pub fn run(cmd: Command) -> Output {
    run_with_stdin(cmd, "")
}

/// Stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts failure with exactly one line on stderr containing every `needle`.
pub fn assert_one_line_error(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "expected one stderr line, got: {err}"
    );
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

/// A development setup made by `bote init` in a temporary directory.
pub struct Setup {
    /// The directory.
    pub dir: tempfile::TempDir,
    /// Database URL override (PostgreSQL), if any.
    pub database_url: Option<String>,
}

impl Setup {
    /// `bote init` on the given backend.
    pub async fn new(backend: Backend) -> (Self, TestDb) {
        let db = TestDb::new(backend).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let database_url = (backend == Backend::Postgres).then(|| db.url.clone());
        let setup = Self { dir, database_url };
        let out = run(setup.cmd(&[
            "init",
            "--dir",
            setup.path().to_str().expect("utf-8 path"),
            "--domain",
            "lemgo.example",
        ]));
        assert!(out.status.success(), "init failed: {}", stderr(&out));
        (setup, db)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.path().join("bote.toml")
    }

    /// A `bote` command for this setup (`--config` appended after the verb).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = bote(args);
        if !args.contains(&"init") {
            cmd.arg("--config").arg(self.config());
        }
        if let Some(url) = &self.database_url {
            cmd.env("BOTE_DATABASE_URL", url);
        }
        if args.contains(&"serve") {
            // Tests run side by side: SMTP listeners on ports of their own (a test that
            // talks SMTP sets its own).
            cmd.env("BOTE_SMTP_SUBMISSION_LISTEN", "127.0.0.1:0")
                .env("BOTE_SMTP_SUBMISSIONS_LISTEN", "127.0.0.1:0")
                .env("BOTE_SMTP_MX_LISTEN", "");
        }
        cmd
    }

    /// Adds a user with a password on stdin; returns their recovery code; panics on failure.
    pub fn add_user(&self, role: &str, email: &str) -> String {
        self.add_user_named(role, email, "Test User")
    }

    /// [`Setup::add_user`] with a display name.
    pub fn add_user_named(&self, role: &str, email: &str, name: &str) -> String {
        let out = run_with_stdin(
            self.cmd(&[
                "user",
                "add",
                "--role",
                role,
                "--name",
                name,
                "--email",
                email,
                "--password-stdin",
            ]),
            "a long enough password\n",
        );
        assert!(out.status.success(), "user add failed: {}", stderr(&out));
        let text = stdout(&out);
        assert!(text.starts_with(&format!("user: {email}\n")), "{text}");
        text.lines()
            .find_map(|l| l.strip_prefix("recovery-code: "))
            .expect("user add prints the recovery code")
            .to_owned()
    }
}

/// A TCP port for a server that a test starts: free now, and handed out once per run.
///
/// Taken below Linux's ephemeral range (32768–60999 by default), not from `bind(…:0)`:
/// the server binds it only after its process has started, and meanwhile any other test's
/// `bind(…:0)` or outgoing connection could be given an ephemeral port that was just
/// released. Each run starts at a random place in the range, so that two runs on one
/// machine do not walk it in step.
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: std::sync::OnceLock<AtomicU32> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| AtomicU32::new(rand::random::<u32>() % COUNT));
    for _ in 0..COUNT {
        let port = FIRST + next.fetch_add(1, Ordering::Relaxed) % COUNT;
        let port = u16::try_from(port).expect("below 32768");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000–32000");
}

/// A gateway's evidence machinery opened in-process on a `bote init` setup.
pub struct Gateway {
    /// The setup (files, database URL).
    pub setup: Setup,
    /// The database handle.
    pub db: TestDb,
    /// Effective config.
    pub config: bote::config::Config,
    /// Unlocked keys.
    pub keys: bote::keys::KeyRing,
    /// Store.
    pub store: Store,
    /// Log.
    pub log: std::sync::Arc<bote::log::Log>,
    /// Writer.
    pub writer: bote::evidence::Writer,
}

impl Gateway {
    /// `bote init`, then open everything in-process.
    pub async fn new(backend: Backend) -> Self {
        let (setup, db) = Setup::new(backend).await;
        Self::open(setup, db).await
    }

    /// Opens (or re-opens, as after a restart) the machinery of an existing setup.
    pub async fn open(setup: Setup, db: TestDb) -> Self {
        let env: Vec<(String, String)> = setup
            .database_url
            .iter()
            .map(|u| ("BOTE_DATABASE_URL".to_owned(), u.clone()))
            .collect();
        let config = bote::config::Config::load(&setup.config(), env).unwrap();
        let keys = bote::keys::KeyRing::load(&config).unwrap();
        let store = Store::open(&config, OpenMode::Existing).await.unwrap();
        let log = std::sync::Arc::new(bote::log::Log::new(
            keys.log.clone(),
            keys.origin.clone(),
            &config.gateway.data_dir,
        ));
        {
            let mut conn = store.pool().acquire().await.unwrap();
            log.check_published(&mut conn).await.unwrap();
        }
        let writer = bote::evidence::Writer::spawn(store.clone(), log.clone());
        Self {
            setup,
            db,
            config,
            keys,
            store,
            log,
            writer,
        }
    }

    /// Closes the store and re-opens everything, as a restart would.
    pub async fn restart(self) -> Self {
        self.store.close().await;
        Self::open(self.setup, self.db).await
    }

    /// Waits until the checkpoint file in the data directory covers `size` entries.
    pub async fn wait_published(&self, size: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let published = std::fs::read_to_string(self.log.published_file())
                .ok()
                .and_then(|t| bote::log::SignedCheckpoint::parse(&t, self.log.verifier_key()).ok());
            if published.is_some_and(|c| c.size >= size) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "checkpoint {size} not published"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes the newest stored checkpoint to `path`.
    pub async fn save_latest_checkpoint(&self, path: &Path) {
        let mut conn = self.store.pool().acquire().await.unwrap();
        let cp = self
            .log
            .latest_checkpoint(&mut conn)
            .await
            .unwrap()
            .unwrap();
        std::fs::write(path, cp.note).unwrap();
    }

    /// Seals and commits records through the group-commit writer.
    pub async fn commit(
        &self,
        records: Vec<bote::evidence::EvidenceRecord>,
    ) -> bote::evidence::Committed {
        let sealed = bote::evidence::sign_async(self.keys.evidence.clone(), records)
            .await
            .unwrap();
        self.writer.commit(sealed, None).await.unwrap()
    }
}

/// A synthetic evidence record about `gateway_id` for `recipient`, as version 1 wrote them
/// (old records must keep verifying).
pub fn record(
    event: bote::evidence::Event,
    gateway_id: &str,
    recipient: &str,
    time_ms: i64,
) -> bote::evidence::EvidenceRecord {
    use bote::evidence::*;
    let reason = if event.is_positive() {
        ReasonCode::Accepted
    } else {
        ReasonCode::Unreachable
    };
    EvidenceRecord {
        version: 1,
        evidence_id: EvidenceId::random(),
        event,
        reason,
        time: Timestamp(time_ms),
        issuer: "lemgo.example".into(),
        sender: Sender {
            address: bote::address::EmailAddress::parse("anna.muster@lemgo.example").unwrap(),
            identity: IdentityAssurance {
                verified: true,
                method: Some(bote::accounts::IdentityMethod::Eid),
            },
            auth_level: bote::accounts::AuthLevel::High,
        },
        recipient: bote::address::EmailAddress::parse(recipient).unwrap(),
        message: MessageRef {
            gateway_id: gateway_id.into(),
            message_id: Some(format!("<{gateway_id}@lemgo.example>")),
            sha256: Sha256Digest::of(gateway_id.as_bytes()),
            size: 1234,
            attachments: vec![Attachment {
                name: "Bauantrag.pdf".into(),
                size: 99,
                sha256: Sha256Digest::of(b"pdf"),
            }],
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
