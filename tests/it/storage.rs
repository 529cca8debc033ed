//! The storage layer itself: migrations, schema checks, transactions, backend settings.

use std::time::Duration;

use bote::accounts::Actor;
use bote::store::{Backend, OpenMode, Store, StoreError, audit};
use sqlx::Row;

use crate::on_both_backends;
use crate::support::TestDb;

async fn migrations_apply_once_and_are_then_current(db: TestDb) {
    let store = db.open(OpenMode::Unchecked).await;
    let status = store.migration_status().await.unwrap();
    assert!(status.known >= 1);
    assert_eq!(
        status.pending, status.known,
        "fresh database has nothing applied"
    );
    assert!(!status.is_current());
    // A command that must not change anything refuses a database that is behind.
    let behind = Store::open_url(&db.url, OpenMode::Existing, 1, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(behind, StoreError::Behind(n) if n == status.known),
        "{behind}"
    );
    assert!(behind.to_string().contains("run `bote migrate`"));

    assert_eq!(store.migrate().await.unwrap(), status.known);
    assert_eq!(store.migrate().await.unwrap(), 0);
    assert!(store.migration_status().await.unwrap().is_current());
    let existing = db.open(OpenMode::Existing).await;
    existing.ping().await.unwrap();
}
on_both_backends!(
    migrations_apply_once_and_are_then_current,
    super::migrations_apply_once_and_are_then_current
);

async fn a_schema_from_a_newer_bote_is_refused(db: TestDb) {
    let store = db.store().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, $2, TRUE, $3, 0)",
    )
    .bind(99_990_001_i64)
    .bind("from the future")
    .bind(vec![0u8; 4])
    .execute(store.pool())
    .await
    .unwrap();
    let err = Store::open_url(&db.url, OpenMode::Existing, 1, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Ahead(99_990_001)), "{err}");
    assert!(matches!(store.migrate().await, Err(StoreError::Ahead(_))));
}
on_both_backends!(
    a_schema_from_a_newer_bote_is_refused,
    super::a_schema_from_a_newer_bote_is_refused
);

/// One audit entry, "test.event" at time `at`.
async fn record_event(tx: &mut bote::store::Tx, at: i64) {
    audit::record(
        tx,
        &Actor::System,
        "test.event",
        "x",
        serde_json::json!({}),
        at,
    )
    .await
    .unwrap();
}

async fn a_rolled_back_transaction_leaves_no_trace(db: TestDb) {
    let store = db.store().await;
    let mut tx = store.begin().await.unwrap();
    record_event(&mut tx, 1).await;
    tx.rollback().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    audit::record(
        &mut tx,
        &Actor::System,
        "test.kept",
        "y",
        serde_json::json!({"n": 1}),
        2,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut conn = store.pool().acquire().await.unwrap();
    let entries = audit::entries(&mut conn, None).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].action, "test.kept");
    assert_eq!(entries[0].details["n"], 1);
}
on_both_backends!(
    a_rolled_back_transaction_leaves_no_trace,
    super::a_rolled_back_transaction_leaves_no_trace
);

/// Reader connections: a released one waits for the next read (and then sees what was
/// committed meanwhile), one dropped unreleased goes back to the pool; a pool too small
/// to spare them keeps fewer; none keeps the store from closing.
async fn released_readers_serve_the_next_read_and_see_new_commits(db: TestDb) {
    let small = db.store_with(7).await;
    for reader in [small.reader().await.unwrap(), small.reader().await.unwrap()] {
        reader.release();
    }
    assert_eq!(small.idle_readers(), 1);
    let store = db.store_with(10).await;
    let count = |n: i64| {
        let store = store.clone();
        async move {
            let mut reader = store.reader().await.unwrap();
            let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
                .fetch_one(&mut *reader)
                .await
                .unwrap();
            assert_eq!(seen, n, "a kept reader reads the latest commit");
            reader.release();
        }
    };
    let kept = 1;
    count(0).await;
    assert_eq!(store.idle_readers(), kept);
    for n in 1..=3 {
        let mut tx = store.begin().await.unwrap();
        record_event(&mut tx, n).await;
        tx.commit().await.unwrap();
        count(n).await;
    }
    assert_eq!(store.idle_readers(), kept);
    // Three at once: at most two are kept.
    let readers = [
        store.reader().await.unwrap(),
        store.reader().await.unwrap(),
        store.reader().await.unwrap(),
    ];
    assert_eq!(store.idle_readers(), 0);
    for reader in readers {
        reader.release();
    }
    assert_eq!(store.idle_readers(), 2 * kept);
    // One that is not released (an error, a cancelled task) is not kept.
    drop(store.reader().await.unwrap());
    assert_eq!(store.idle_readers(), (2 * kept).saturating_sub(1));
    // Shutting down waits for every connection: kept ones are given back, and one
    // released while closing is not kept.
    let late = store.reader().await.unwrap();
    let closing = tokio::spawn({
        let store = store.clone();
        async move { store.close().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    late.release();
    tokio::time::timeout(Duration::from_secs(10), closing)
        .await
        .expect("the store closes with readers kept")
        .unwrap();
    assert_eq!(store.idle_readers(), 0);
}
on_both_backends!(
    released_readers_serve_the_next_read_and_see_new_commits,
    super::released_readers_serve_the_next_read_and_see_new_commits
);

/// A PostgreSQL connection that the server dropped while it waited (a restart, an idle
/// timeout on the way) is found by a ping before it serves again, whether kept as a reader
/// or idle in the pool: the next read and the next transaction succeed on a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_postgresql_connection_is_replaced_before_use() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.store_with(8).await;
    let backend_pid = async |conn: &mut sqlx::AnyConnection| -> Result<i32, StoreError> {
        Ok(sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(conn)
            .await?)
    };
    let kept = store.read(backend_pid).await.unwrap();
    assert_eq!(store.idle_readers(), 1);
    let pooled = {
        let mut tx = store.begin().await.unwrap();
        let pid = backend_pid(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        pid
    };
    let killer = db.store().await;
    for pid in [kept, pooled] {
        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(killer.pool())
            .await
            .unwrap();
        assert!(killed, "backend {pid} terminated");
    }
    // Past the gateway's recheck interval (1 s), as a quiet gateway would be.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let again = store.read(backend_pid).await.expect("read after the drop");
    assert_ne!(again, kept, "a new connection serves the read");
    let mut tx = store.begin().await.expect("transaction after the drop");
    let pid = backend_pid(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    assert!(
        pid != kept && pid != pooled,
        "a new connection serves the transaction"
    );
    store.close().await;
    killer.close().await;
}

/// Ciphertext is stored uncompressed on PostgreSQL (migration 0012): compressing it is
/// wasted work (it never shrinks), half of the server's CPU with 100 KiB messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_stores_ciphertext_uncompressed() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.store().await;
    for (table, column) in [("outbound_payloads", "payload"), ("message_copies", "body")] {
        let storage: String = sqlx::query_scalar(
            "SELECT attstorage::text FROM pg_attribute \
             WHERE attrelid = $1::regclass AND attname = $2",
        )
        .bind(table)
        .bind(column)
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(
            storage, "e",
            "{table}.{column} is EXTERNAL (out of line, uncompressed)"
        );
    }
    store.close().await;
}

/// A claim stays cheap on PostgreSQL however many jobs were delivered since the last
/// VACUUM: their earlier versions (queued, running) stay in the index until then, and a
/// query that visits each of them in the table on every claim (as an `OR` answered with
/// bitmap scans did: 1.8 ms after 7,800 messages) reads a page per ~30 finished jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_claim_skips_the_versions_of_finished_jobs() {
    use bote::store::messages::{JobRow, insert_jobs};
    use bote::store::queue::{DUE_JOBS, claim_due};
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.store_with(1).await;
    let mut conn = without_foreign_keys(&db, &store).await;
    let jobs: Vec<JobRow> = (0..3_000)
        .map(|n| JobRow {
            gateway_id: format!("m{n}"),
            mailbox_id: 1,
            recipient: "amt@kreis.example".to_owned(),
            payload: vec![1],
            due_at: n,
        })
        .collect();
    insert_jobs(&mut conn, &jobs).await.unwrap();
    // Claimed and finished in steps, as a relay worker does.
    for _ in 0..30 {
        claim_due(&mut conn, "w", 10_000, 20_000, 100)
            .await
            .unwrap();
        sqlx::query("UPDATE outbound_jobs SET state = 'done' WHERE state = 'running'")
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    // The gateway's own statements are prepared and reused: a generic plan, as after the
    // fifth execution.
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    let explain = format!("EXPLAIN (ANALYZE, BUFFERS) {DUE_JOBS}");
    let mut read = Vec::new();
    for _ in 0..2 {
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(explain.clone()))
            .bind(30_000_i64)
            .bind(32_i64)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        let plan = plan.join("\n");
        assert!(
            plan.lines().next().unwrap().contains("rows=0 "),
            "nothing is due: {plan}"
        );
        // The top node's line of buffers counts the whole query's.
        let buffers = plan
            .lines()
            .find_map(|l| l.trim().strip_prefix("Buffers: shared "))
            .unwrap_or_else(|| panic!("no buffers in {plan}"));
        let pages: i64 = buffers
            .split(' ')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| *k == "hit" || *k == "read")
            .map(|(_, v)| v.parse::<i64>().unwrap())
            .sum();
        read.push(pages);
    }
    // Each old version may be met once; after that a claim reads the index's few pages
    // (23 here), not the ~110 table pages that 3,000 finished jobs fill (139 with the `OR`).
    assert!(read[1] <= 40, "a claim read {} pages: {read:?}", read[1]);
}

/// A store outlives its runtime (a CLI's or a test's): its kept readers must not panic
/// on the way out (a pool connection's drop needs a runtime to go back to the pool).
#[test]
fn a_store_with_kept_readers_outlives_its_runtime() {
    kept_readers_outlive_the_runtime(Backend::Sqlite);
}

/// The same with PostgreSQL connections kept.
#[test]
fn a_store_with_kept_postgresql_readers_outlives_its_runtime() {
    kept_readers_outlive_the_runtime(Backend::Postgres);
}

fn kept_readers_outlive_the_runtime(backend: Backend) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (db, store) = rt.block_on(async {
        let db = TestDb::new(backend).await;
        let store = db.store_with(8).await;
        store.reader().await.unwrap().release();
        (db, store)
    });
    assert_eq!(store.idle_readers(), 1);
    drop(rt);
    drop(store);
    drop(db);
}

async fn constraints_are_enforced_by_the_database(db: TestDb) {
    let store = db.store().await;
    // A membership pointing at no mailbox: foreign keys must be on (SQLite needs the pragma).
    let fk = sqlx::query(
        "INSERT INTO memberships (mailbox_id, user_id, state, granted_by, created_at) \
         VALUES (4242, 4242, 'pending', 'x', 0)",
    )
    .execute(store.pool())
    .await;
    assert!(fk.is_err(), "foreign key not enforced");
    let role = sqlx::query("INSERT INTO identities (verified, method) VALUES (1, 'telepathy')")
        .execute(store.pool())
        .await;
    assert!(role.is_err(), "CHECK constraint not enforced");
}
on_both_backends!(
    constraints_are_enforced_by_the_database,
    super::constraints_are_enforced_by_the_database
);

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_full_sync() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let mut conn = store.pool().acquire().await.unwrap();
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
        .get(0);
    let sync: i64 = sqlx::query("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
        .get(0);
    let fk: i64 = sqlx::query("PRAGMA foreign_keys")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode.to_lowercase(), "wal");
    assert_eq!(sync, 2, "synchronous = FULL");
    assert_eq!(fk, 1);
}

#[tokio::test]
async fn a_missing_sqlite_file_is_not_created_by_read_only_commands() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.db");
    let url = format!("sqlite://{}", path.display());
    let err = Store::open_url(&url, OpenMode::Existing, 1, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Missing(_)), "{err}");
    assert!(!path.exists());
}

#[tokio::test]
async fn an_unreachable_postgres_gives_a_connect_error_without_the_password() {
    let err = Store::open_url(
        "postgres://bote:hunter2@127.0.0.1:1/bote",
        OpenMode::Existing,
        1,
        Duration::from_secs(3),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("cannot connect to database postgres://bote:***@127.0.0.1:1/bote"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tcp_runs_without_nagle() {
    // sqlx 0.9.0 leaves Nagle's algorithm on (a 40 ms stall per large request); every TCP
    // connection to PostgreSQL goes through the relay that turns it off.
    let db = TestDb::new(Backend::Postgres).await;
    assert!(
        db.url.starts_with("postgres://postgres@127.0.0.1:"),
        "{}",
        db.url
    );
    let store = db.store().await;
    let big = "x".repeat(200_000);
    let echoed: String = sqlx::query_scalar("SELECT $1")
        .bind(&big)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(echoed.len(), big.len());
    assert!(store.nodelay_connections().unwrap() >= 1);
    let sqlite = TestDb::new(Backend::Sqlite).await.store().await;
    assert_eq!(sqlite.nodelay_connections(), None);
}

/// A connection whose writes skip the foreign-key checks, for tests of a few tables alone.
async fn without_foreign_keys(db: &TestDb, store: &Store) -> sqlx::pool::PoolConnection<sqlx::Any> {
    let mut conn = store.pool().acquire().await.unwrap();
    let off = match db.backend {
        Backend::Sqlite => "PRAGMA foreign_keys = OFF",
        Backend::Postgres => "SET session_replication_role = replica",
    };
    sqlx::query(off).execute(&mut *conn).await.unwrap();
    conn
}

/// Relay jobs are inserted many per statement: each payload must land with its own job
/// (a swap would send one office's ciphertext to another), across statement chunks.
async fn each_relay_payload_is_stored_with_its_own_job(db: TestDb) {
    use bote::store::messages::{JobRow, insert_jobs};
    let store = db.store_with(1).await;
    // Jobs without their message and mailbox rows: only the job tables matter here.
    let mut conn = without_foreign_keys(&db, &store).await;
    // 20 jobs: more than one statement's chunk; two recipients per message.
    let jobs: Vec<JobRow> = (0..10)
        .flat_map(|m| {
            ["amt@kreis.example", "poststelle@land.example"].map(|to| JobRow {
                gateway_id: format!("message-{m}"),
                mailbox_id: 1,
                recipient: to.to_owned(),
                payload: format!("message-{m} for {to}").into_bytes(),
                due_at: 0,
            })
        })
        .collect();
    insert_jobs(&mut conn, &jobs).await.unwrap();
    let stored: Vec<(String, String, Vec<u8>)> = sqlx::query(
        "SELECT j.gateway_id, j.recipient, p.payload FROM outbound_jobs j \
         JOIN outbound_payloads p ON p.job_id = j.id",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect();
    assert_eq!(stored.len(), jobs.len());
    for (gateway_id, recipient, payload) in stored {
        assert_eq!(
            String::from_utf8(payload).unwrap(),
            format!("{gateway_id} for {recipient}")
        );
    }
    // Two jobs for one message and recipient could not be told apart: refused, unwritten.
    let twice = [&jobs[0], &jobs[0]].map(|j| JobRow {
        gateway_id: "message-twice".into(),
        ..j.clone()
    });
    let err = insert_jobs(&mut conn, &twice).await.unwrap_err();
    assert!(err.to_string().contains("two relay jobs"), "{err}");
    let twice: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbound_jobs WHERE gateway_id = 'message-twice'")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(twice, 0);
}
on_both_backends!(
    each_relay_payload_is_stored_with_its_own_job,
    super::each_relay_payload_is_stored_with_its_own_job
);

/// The relay claims what is due, oldest first: queued jobs whose time has come and running
/// jobs whose lease ran out (their worker died), marking the latter as orphans; never a job
/// not yet due, one under a live lease, or a finished one. Also after many finished jobs,
/// whose earlier versions PostgreSQL keeps in the index until VACUUM.
async fn the_relay_claims_due_jobs_and_orphans_in_due_order(db: TestDb) {
    use bote::store::messages::{JobRow, insert_jobs};
    use bote::store::queue::claim_due;
    let store = db.store_with(1).await;
    let mut conn = without_foreign_keys(&db, &store).await;
    let job = |name: &str, due_at: i64| JobRow {
        gateway_id: name.to_owned(),
        mailbox_id: 1,
        recipient: "amt@kreis.example".to_owned(),
        payload: name.as_bytes().to_vec(),
        due_at,
    };
    // 300 jobs that went queued -> running -> done, as delivered ones do.
    let finished: Vec<JobRow> = (0..300).map(|n| job(&format!("done-{n}"), n)).collect();
    insert_jobs(&mut conn, &finished).await.unwrap();
    let all = claim_due(&mut conn, "old-worker", 1_000, 2_000, 300)
        .await
        .unwrap();
    assert_eq!(all.len(), 300);
    sqlx::query("UPDATE outbound_jobs SET state = 'done', lease_owner = NULL")
        .execute(&mut *conn)
        .await
        .unwrap();
    insert_jobs(
        &mut conn,
        &[
            job("due-late", 900),
            job("due-early", 100),
            job("not-yet", 5_000),
            job("orphan", 500),
            job("leased", 50),
        ],
    )
    .await
    .unwrap();
    let id_of = async |conn: &mut sqlx::AnyConnection, name: &str| -> i64 {
        sqlx::query_scalar("SELECT id FROM outbound_jobs WHERE gateway_id = $1")
            .bind(name)
            .fetch_one(conn)
            .await
            .unwrap()
    };
    for (name, lease_until) in [("orphan", 1_500), ("leased", 9_000)] {
        let id = id_of(&mut conn, name).await;
        sqlx::query(
            "UPDATE outbound_jobs SET state = 'running', lease_owner = 'w', \
             lease_expires_at = $1 WHERE id = $2",
        )
        .bind(lease_until)
        .bind(id)
        .execute(&mut *conn)
        .await
        .unwrap();
    }
    let claimed = claim_due(&mut conn, "new-worker", 2_000, 62_000, 10)
        .await
        .unwrap();
    let mut expected = Vec::new();
    for (name, orphan) in [("due-early", false), ("orphan", true), ("due-late", false)] {
        expected.push((id_of(&mut conn, name).await, orphan));
    }
    assert_eq!(claimed, expected);
    // A limit takes the oldest.
    let again = claim_due(&mut conn, "third", 70_000, 80_000, 1)
        .await
        .unwrap();
    assert_eq!(again, vec![(id_of(&mut conn, "leased").await, true)]);
}
on_both_backends!(
    the_relay_claims_due_jobs_and_orphans_in_due_order,
    super::the_relay_claims_due_jobs_and_orphans_in_due_order
);

/// Migration 0011 moves relay payloads into their own table: an upgrade must keep the
/// payload of every job still to be sent (a lost one is a message acknowledged and never
/// relayed) and may drop those already delivered.
async fn an_upgrade_keeps_the_payloads_of_unfinished_relay_jobs(db: TestDb) {
    let store = Store::open_url(&db.url, OpenMode::Unchecked, 1, Duration::from_secs(5))
        .await
        .unwrap();
    let all = match db.backend {
        Backend::Sqlite => sqlx::migrate!("migrations/sqlite"),
        Backend::Postgres => sqlx::migrate!("migrations/postgres"),
    };
    let before = sqlx::migrate::Migrator {
        migrations: all
            .migrations
            .iter()
            .filter(|m| m.version < 11)
            .cloned()
            .collect(),
        ..all
    };
    before.run(store.pool()).await.unwrap();
    // Jobs without their message and mailbox rows: only the jobs table matters here.
    let (off, on) = match db.backend {
        Backend::Sqlite => ("PRAGMA foreign_keys = OFF", "PRAGMA foreign_keys = ON"),
        Backend::Postgres => (
            "SET session_replication_role = replica",
            "SET session_replication_role = origin",
        ),
    };
    sqlx::query(off).execute(store.pool()).await.unwrap();
    for (id, state) in [(1_i64, "queued"), (2, "done"), (3, "failed")] {
        sqlx::query(
            "INSERT INTO outbound_jobs (id, gateway_id, mailbox_id, recipient, payload, state, \
             due_at, created_at) VALUES ($1, $2, 1, 'amt@kreis.example', $3, $4, 0, 0)",
        )
        .bind(id)
        .bind(format!("m{id}"))
        .bind(format!("payload of {state}").into_bytes())
        .bind(state)
        .execute(store.pool())
        .await
        .unwrap();
    }
    sqlx::query(on).execute(store.pool()).await.unwrap();

    assert!(store.migrate().await.unwrap() >= 1);
    let moved: Vec<(i64, Vec<u8>)> =
        sqlx::query("SELECT job_id, payload FROM outbound_payloads ORDER BY job_id")
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    assert_eq!(
        moved,
        vec![
            (1, b"payload of queued".to_vec()),
            (3, b"payload of failed".to_vec())
        ]
    );
    let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbound_jobs")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(jobs, 3, "the jobs themselves stay");
}
on_both_backends!(
    an_upgrade_keeps_the_payloads_of_unfinished_relay_jobs,
    super::an_upgrade_keeps_the_payloads_of_unfinished_relay_jobs
);

/// The row of message `gw-1` from `sender`, with `message_id`.
fn message_row(sender: &str, message_id: Option<&str>) -> bote::store::messages::MessageRow {
    bote::store::messages::MessageRow {
        gateway_id: "gw-1".into(),
        message_id: message_id.map(str::to_owned),
        sender: sender.into(),
        sender_key: sender.into(),
        channel: "smtp",
        auth_level: "normal".into(),
        authoritative: false,
        personal: false,
        retrieval_confirmation: false,
        end_to_end: false,
        size: 1,
        sha256: "00".into(),
        recipients: 1,
        created_at: 0,
    }
}

/// The policy's one read per submission: a sender's earlier Message-ID and an office's own
/// rates, each absent where there is none, and nothing of another sender or mailbox.
async fn the_policy_reads_a_senders_message_id_and_rates_at_once(db: TestDb) {
    use bote::store::accounts::set_office_rate_limits;
    use bote::store::messages::{SenderReads, insert_messages, lookup_sender_reads, sender_reads};
    // Two connections: one for the rows below, one for the reads on PostgreSQL.
    let store = db.store_with(2).await;
    // Rows without their mailbox rows: only these two tables matter here.
    let mut conn = without_foreign_keys(&db, &store).await;
    let sent = message_row("bauamt@lemgo.example", Some("<a@bauamt.example>"));
    insert_messages(&mut conn, &[sent]).await.unwrap();
    set_office_rate_limits(&mut conn, 7, (Some(10), None))
        .await
        .unwrap();
    let sender = "bauamt@lemgo.example";
    // Over sqlx, and as the policy reads it (inline on SQLite): the same.
    let reads = async |conn: &mut sqlx::AnyConnection,
                       sender: &str,
                       id: Option<&str>,
                       office: Option<i64>| {
        let pooled = sender_reads(conn, sender, id, office).await.unwrap();
        let looked_up = lookup_sender_reads(&store, sender, id, office)
            .await
            .unwrap();
        assert_eq!(looked_up, pooled);
        pooled
    };
    assert_eq!(
        reads(&mut conn, sender, Some("<a@bauamt.example>"), Some(7)).await,
        SenderReads {
            earlier: Some("gw-1".into()),
            messages_per_hour: Some(10),
            recipients_per_hour: None,
        }
    );
    assert_eq!(
        reads(&mut conn, sender, Some("<b@bauamt.example>"), Some(8)).await,
        SenderReads::default()
    );
    assert_eq!(
        reads(
            &mut conn,
            "anna@lemgo.example",
            Some("<a@bauamt.example>"),
            None
        )
        .await,
        SenderReads::default(),
        "another sender's Message-ID is not a duplicate"
    );
    assert_eq!(
        reads(&mut conn, sender, None, Some(7)).await,
        SenderReads {
            earlier: None,
            messages_per_hour: Some(10),
            recipients_per_hour: None,
        }
    );
}
on_both_backends!(
    the_policy_reads_a_senders_message_id_and_rates_at_once,
    super::the_policy_reads_a_senders_message_id_and_rates_at_once
);

/// The reads every message makes (AUTH's credential, RCPT's mailbox, the relay's
/// message) run on SQLite on the caller's thread (`store::inline`) and on PostgreSQL over
/// a reader connection: either way they give the sqlx queries' answers and see each
/// commit at once (a revoked token stops working, a lease that ran out hides the message).
async fn the_lookups_of_every_message_agree_with_the_pooled_reads(db: TestDb) {
    use bote::accounts::{IdentityMethod, MailboxKind, Relay, RelayTls, Verification};
    use bote::address::EmailAddress;
    use bote::store::accounts::{self as repo, Credentials};
    use bote::store::messages::{JobRow, insert_jobs, insert_messages};
    use bote::store::queue;
    let store = db.store_with(4).await;
    let kreis = EmailAddress::parse("amt@kreis.example").unwrap();
    let relay = Relay {
        host: "mx.kreis.example".into(),
        port: 2525,
        tls: RelayTls::Opportunistic,
        cert: vec![0x99, 0, 1],
        cert_fingerprint: "ABCD".into(),
    };
    let token = [7u8; 32];
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut conn = store.pool().acquire().await.unwrap();
    let identity = repo::insert_identity(&mut conn).await.unwrap();
    let verification = Verification {
        method: IdentityMethod::InPerson,
        verified_by: "operator:test".into(),
        verified_at: 5,
    };
    repo::verify_identity(&mut conn, identity, &verification)
        .await
        .unwrap();
    let new = repo::NewMailbox {
        address: &kreis,
        kind: MailboxKind::External,
        name: "Kreisverwaltung",
        owner_user_id: None,
        identity_id: identity,
        relay: Some(&relay),
        now: 6,
    };
    let mailbox = repo::insert_mailbox(&mut conn, &new).await.unwrap();
    let new = repo::NewCredential {
        mailbox_id: mailbox,
        scope: "send",
        token_hash: token,
        client_cert_sha256: Some("c0ffee".into()),
        created_by: "operator:test",
        creator_user_id: None,
        now: 7,
    };
    let credential = repo::insert_credential(&mut conn, &new).await.unwrap();
    let message = message_row("anna@lemgo.example", None);
    insert_messages(&mut conn, &[message]).await.unwrap();
    let job = JobRow {
        gateway_id: "gw-1".into(),
        mailbox_id: mailbox,
        recipient: kreis.to_string(),
        payload: payload.clone(),
        due_at: 0,
    };
    insert_jobs(&mut conn, &[job]).await.unwrap();
    let claims = queue::claim_due(&mut conn, "worker-1", 100, 10_000, 5)
        .await
        .unwrap();
    let claimed = queue::claimed(&mut conn, "worker-1", &claims)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].payload_size, payload.len() as i64);
    let job = claimed[0].id;

    let credential_of = async |hash: [u8; 32]| {
        let inline = repo::lookup_credential(&store, &hash).await.unwrap();
        let pooled = store
            .read(async |c| repo::credential_by_hash(c, &hash).await)
            .await
            .unwrap();
        assert_eq!(inline, pooled);
        inline
    };
    let mailbox_of = async |address: &str| {
        let address = EmailAddress::parse(address).unwrap();
        let inline = repo::lookup_recipient(&store, &address).await.unwrap();
        let pooled = store
            .read(async |c| repo::find_mailbox_with_key_cert(c, &address).await)
            .await
            .unwrap();
        assert_eq!(inline, pooled);
        inline
    };
    // The relay reads a message of up to 256 KiB inline, a larger one over sqlx.
    let payload_of = async |owner: &str, now: i64| {
        let size = i64::try_from(payload.len()).unwrap();
        let inline = queue::lookup_payload(&store, (job, 1000), owner, now)
            .await
            .unwrap();
        let large = queue::lookup_payload(&store, (job, size), owner, now)
            .await
            .unwrap();
        assert_eq!(inline, large);
        let pooled = store
            .read(async |c| queue::payload(c, job, owner, now).await)
            .await
            .unwrap();
        assert_eq!(inline, pooled);
        inline
    };

    let found = credential_of(token).await.expect("the live token is found");
    assert_eq!((found.id, found.scope.as_str()), (credential, "send"));
    assert_eq!(found.client_cert_sha256.as_deref(), Some("c0ffee"));
    assert_eq!(found.mailbox.address, kreis);
    assert_eq!(found.mailbox.relay.as_ref(), Some(&relay));
    assert_eq!(found.mailbox.identity.verification, Some(verification));
    assert_eq!(credential_of([8; 32]).await, None);
    let (found, key_cert) = mailbox_of("AMT@kreis.example").await.unwrap();
    assert_eq!((found.id, key_cert), (mailbox, None));
    assert_eq!(found.relay, Some(relay));
    assert_eq!(mailbox_of("nobody@kreis.example").await, None);
    assert_eq!(payload_of("worker-1", 200).await.as_ref(), Some(&payload));
    assert_eq!(
        payload_of("worker-2", 200).await,
        None,
        "another worker's job"
    );
    assert_eq!(
        payload_of("worker-1", 10_000).await,
        None,
        "the lease ran out"
    );

    repo::revoke_credentials(&mut conn, Credentials::Id(credential), 9)
        .await
        .unwrap();
    assert_eq!(
        credential_of(token).await,
        None,
        "revoked, and not found at once"
    );
    let inline_kept = usize::from(db.backend == Backend::Sqlite);
    assert_eq!(store.kept_inline_readers(), inline_kept);
}
on_both_backends!(
    the_lookups_of_every_message_agree_with_the_pooled_reads,
    super::the_lookups_of_every_message_agree_with_the_pooled_reads
);
