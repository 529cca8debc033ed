//! Storage: one repository layer over SQLite and PostgreSQL.
//!
//! The rest of the code never sees which backend is in use. Everything goes through the
//! sqlx `Any` driver with `$n` placeholders, BIGINT times (unix ms) and 0/1 flags, which
//! both backends read and write identically. Repository functions take a
//! `&mut AnyConnection` so that callers compose them inside one transaction (an event, its
//! audit entry and, later, its evidence commit or roll back together).
//!
//! Architecture invariant: commands that only read or change accounts never create or
//! migrate a database; only `init`, `migrate`, `serve` and `demo` do ([`OpenMode`]).

pub mod accounts;
pub mod audit;
mod columns;
pub mod evidence;
mod inline;
pub mod log;
pub mod messages;
mod pg_relay;
pub mod queue;
mod readers;
pub mod sessions;
pub mod vault;
pub mod witness;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, AnyPool, Executor, Row};

pub use crate::config::Backend;
use crate::config::{Config, redact_url};
pub use inline::is_transient;
pub use readers::Reader;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// Rows per multi-row INSERT. Small on purpose: SQLite looks up `$n` parameter names by a
/// linear scan, so binding costs grow with the square of the parameters per statement, and
/// few distinct chunk sizes keep sqlx's prepared-statement cache warm.
pub const INSERT_CHUNK: usize = 16;

/// `INSERT INTO {table_and_columns} VALUES ($1, …), (…)` for `rows` rows of `columns`
/// placeholders each.
pub fn multi_row_insert(table_and_columns: &str, rows: usize, columns: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let cols: Vec<String> = (1..=columns)
                .map(|c| format!("${}", r * columns + c))
                .collect();
            format!("({})", cols.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO {table_and_columns} VALUES {}",
        values.join(", ")
    )
}

/// `$first, $first+1, …`: `n` placeholders for an `IN (…)` list.
pub fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An open transaction on either backend.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// A conditional write that had to change exactly one row: `Conflict(why)` if it changed
/// none (another writer got there first; nothing was written).
pub(crate) fn one_row(
    done: &sqlx::any::AnyQueryResult,
    why: &'static str,
) -> Result<(), StoreError> {
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict(why))
    }
}

/// Storage failures, each with what to do about it where the operator can act.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or opened.
    #[error("cannot connect to database {url}: {message}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The driver's reason.
        message: String,
    },
    /// A SQLite database file that should exist does not.
    #[error("database {0} does not exist: run `bote init` (new setup) or `bote migrate`")]
    Missing(PathBuf),
    /// Migrations are pending.
    #[error("database schema is {0} migration(s) behind this bote: run `bote migrate`")]
    Behind(usize),
    /// The database was migrated by a newer bote.
    #[error(
        "database has migration {0}, which this bote does not know: it was written by a newer version"
    )]
    Ahead(i64),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    /// An inline SQLite read failed (`store::inline`).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A conditional write found the row changed by someone else first.
    #[error("{0}")]
    Conflict(&'static str),
}

impl StoreError {
    /// True when the error is a unique-constraint violation (a duplicate insert).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Query(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

/// Whether opening may create and migrate the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the database if missing (SQLite) and apply pending migrations.
    CreateAndMigrate,
    /// Open an existing, fully migrated database; change nothing otherwise.
    Existing,
    /// Create the database if missing but leave the schema alone (`bote migrate`).
    Unchecked,
}

/// Where the schema stands relative to this binary's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// Migrations this binary knows.
    pub known: usize,
    /// Of those, not yet applied.
    pub pending: usize,
    /// Applied versions this binary does not know (a newer bote migrated).
    pub unknown: Vec<i64>,
}

impl MigrationStatus {
    /// True when the schema is exactly what this binary expects.
    pub fn is_current(&self) -> bool {
        self.pending == 0 && self.unknown.is_empty()
    }
}

/// The database handle shared by the whole process.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    /// SQLite files: one connection for every transaction (`begin`), so the writer's page
    /// cache survives from one commit to the next. `None` on PostgreSQL and in memory.
    writes: Option<AnyPool>,
    backend: Backend,
    /// PostgreSQL over TCP goes through a relay that turns Nagle's algorithm off
    /// (`pg_relay`); it lives as long as the last handle.
    relay: Option<Arc<pg_relay::Relay>>,
    readers: Arc<readers::Readers>,
    /// SQLite's reads on the caller's thread; `None` on PostgreSQL and in memory.
    inline: Option<Arc<inline::Inline>>,
}

impl Store {
    /// Opens the database named by the configuration.
    pub async fn open(config: &Config, mode: OpenMode) -> Result<Self, StoreError> {
        Self::open_url(
            &config.database_url(),
            mode,
            config.database.max_connections,
            Duration::from_secs(config.database.connect_timeout_secs),
        )
        .await
    }

    /// Opens a database by URL (tests and tools use this directly).
    pub async fn open_url(
        url: &str,
        mode: OpenMode,
        max_connections: u32,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        Self::open_url_via(url, mode, max_connections, timeout, true).await
    }

    /// As [`Store::open_url`]; with `relay` false, PostgreSQL over TCP uses the driver's
    /// own socket (Nagle on): only `benches/backends.rs` does that, to show what the relay
    /// saves.
    pub async fn open_url_via(
        url: &str,
        mode: OpenMode,
        max_connections: u32,
        timeout: Duration,
        relay_tcp: bool,
    ) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let connect_err = |message: String| StoreError::Connect {
            url: redact_url(url),
            message,
        };
        let backend = Backend::of_url(url)
            .ok_or_else(|| connect_err("expected sqlite://PATH or postgres://…".into()))?;
        let mut relay = None;
        let url = match backend {
            Backend::Sqlite => sqlite_url(url, mode)?,
            Backend::Postgres => match pg_relay::needs_relay(url).filter(|_| relay_tcp) {
                Some((host, port)) => {
                    // The relay would turn a refused connection into a closed socket; ask
                    // the server directly first, for the operator's error message.
                    pg_relay::probe(&host, port, timeout)
                        .await
                        .map_err(|e| connect_err(e.to_string()))?;
                    let started = pg_relay::Relay::start(host, port)
                        .map_err(|e| connect_err(format!("cannot start the TCP relay: {e}")))?;
                    let through = started.url(url);
                    relay = Some(Arc::new(started));
                    through
                }
                None => url.to_owned(),
            },
        };
        let options = AnyConnectOptions::from_str(&url).map_err(|e| connect_err(e.to_string()))?;
        let pool = pool_options(backend, max_connections, timeout)
            .connect_with(options.clone())
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let inline = match backend {
            Backend::Sqlite => inline::Inline::of(&pool, &url).await.map(Arc::new),
            Backend::Postgres => None,
        };
        // A pool hands out its idle connections in turn, and SQLite drops a connection's
        // page cache whenever another connection has committed: with the writer's batches
        // spread over the pool, each began by reading its pages again (docs/decisions.md,
        // tenth round). An in-memory database is one per pool, so it keeps one pool. A
        // transaction waits for the connection as long as it would wait for SQLite's lock.
        let writes = match inline {
            Some(_) => Some(
                pool_options(backend, 1, timeout.max(SQLITE_BUSY))
                    // Kept for good: a replaced connection starts with a cold cache.
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect_with(options)
                    .await
                    .map_err(|e| connect_err(e.to_string()))?,
            ),
            None => None,
        };
        let store = Self {
            pool,
            writes,
            backend,
            relay,
            readers: Arc::new(readers::Readers::new(max_connections, timeout)),
            inline,
        };
        match mode {
            OpenMode::CreateAndMigrate => {
                store.migrate().await?;
            }
            OpenMode::Existing => store.ensure_current().await?,
            OpenMode::Unchecked => {}
        }
        Ok(store)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// PostgreSQL connections opened over TCP with `TCP_NODELAY` (through the relay), or
    /// `None` for a backend reached otherwise.
    pub fn nodelay_connections(&self) -> Option<u64> {
        self.relay.as_ref().map(|r| r.relayed())
    }

    /// The connection pool (for modules that run their own queries).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A connection for a few reads outside a transaction (the lookups of every message);
    /// hand it back with [`Reader::release`] once they succeeded.
    pub async fn reader(&self) -> Result<Reader, StoreError> {
        self.readers.take(&self.pool).await
    }

    /// One short read by index, of the kind every message makes (`store::inline`): on
    /// SQLite `inline` runs on this thread; otherwise `pooled` on a reader connection.
    pub(super) async fn lookup<T>(
        &self,
        inline: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
        pooled: impl AsyncFnOnce(&mut AnyConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &self.inline {
            Some(reads) => reads.read(inline),
            None => self.read(pooled).await,
        }
    }

    /// Reads on a reader connection, which is kept for the next read if they succeed.
    pub async fn read<T>(
        &self,
        reads: impl AsyncFnOnce(&mut AnyConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.reader().await?;
        let found = reads(&mut conn).await?;
        conn.release();
        Ok(found)
    }

    /// Reader connections waiting for the next read (tests).
    pub fn idle_readers(&self) -> usize {
        self.readers.idle()
    }

    /// Inline read connections waiting for the next read (tests; 0 on PostgreSQL).
    pub fn kept_inline_readers(&self) -> usize {
        self.inline.as_ref().map_or(0, |i| i.kept())
    }

    /// Starts a transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`):
    /// a deferred transaction that reads and then writes fails at once with "database is
    /// locked" when another process (the CLI beside `bote serve`) committed in between,
    /// without waiting for `busy_timeout`; an immediate one waits its turn.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => {
                let pool = self.writes.as_ref().unwrap_or(&self.pool);
                pool.begin_with("BEGIN IMMEDIATE").await?
            }
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    fn migrator(&self) -> &'static Migrator {
        match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    /// Applies pending migrations; returns how many were applied. On PostgreSQL sqlx holds
    /// an advisory lock meanwhile, so instances starting together do not race.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let before = self.migration_status().await?;
        if let Some(v) = before.unknown.first() {
            return Err(StoreError::Ahead(*v));
        }
        self.migrator().run(&self.pool).await?;
        Ok(before.pending)
    }

    /// Compares applied migrations with the ones built into this binary.
    pub async fn migration_status(&self) -> Result<MigrationStatus, StoreError> {
        let migrator = self.migrator();
        let known: Vec<i64> = migrator
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .map(|m| m.version)
            .collect();
        let applied = self.applied_versions().await?;
        Ok(MigrationStatus {
            known: known.len(),
            pending: known.iter().filter(|v| !applied.contains(v)).count(),
            unknown: applied
                .iter()
                .copied()
                .filter(|v| !known.contains(v))
                .collect(),
        })
    }

    async fn applied_versions(&self) -> Result<Vec<i64>, StoreError> {
        let exists_sql = match self.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_name = '_sqlx_migrations' AND table_schema = current_schema()"
            }
        };
        let exists: i64 = sqlx::query_scalar(exists_sql).fetch_one(&self.pool).await?;
        if exists == 0 {
            return Ok(Vec::new());
        }
        let rows =
            sqlx::query("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()?)
    }

    /// Fails unless the schema is exactly current.
    pub async fn ensure_current(&self) -> Result<(), StoreError> {
        let status = self.migration_status().await?;
        if let Some(v) = status.unknown.first() {
            return Err(StoreError::Ahead(*v));
        }
        if status.pending > 0 {
            return Err(StoreError::Behind(status.pending));
        }
        Ok(())
    }

    /// A round trip to the database.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned (kept readers first).
    pub async fn close(&self) {
        self.readers.close();
        if let Some(inline) = &self.inline {
            inline.close();
        }
        // Both at once: a transaction that outlives the caller's patience must not keep
        // the shared pool open.
        let writes = async {
            if let Some(writes) = &self.writes {
                writes.close().await;
            }
        };
        tokio::join!(writes, self.pool.close());
    }
}

/// The pool settings both pools share.
fn pool_options(backend: Backend, max_connections: u32, timeout: Duration) -> AnyPoolOptions {
    let options = AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(timeout)
        // An embedded SQLite connection cannot be dropped, and a ping cost a worker-thread
        // round trip per query (measured in benches/submit.rs). A PostgreSQL connection can
        // (a server restart, an idle timeout on the way): one idle for a while is pinged
        // before use. Not one per acquire: under load that was a round trip (over TLS and
        // the relay) per statement batch and per read (docs/decisions.md, "SMTP path on
        // PostgreSQL").
        .test_before_acquire(false)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    configure_sqlite(conn).await?;
                }
                Ok(())
            })
        });
    match backend {
        Backend::Postgres => options.before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= RECHECK_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        }),
        Backend::Sqlite => options,
    }
}

/// Adds `mode=` to a SQLite URL: `rwc` may create the file, `rw` refuses a missing one.
fn sqlite_url(url: &str, mode: OpenMode) -> Result<String, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (path, query) = rest.split_once('?').map_or((rest, ""), |(p, q)| (p, q));
    if path == ":memory:" {
        return Ok(url.to_owned());
    }
    let file = PathBuf::from(path);
    let mode_param = match mode {
        OpenMode::CreateAndMigrate | OpenMode::Unchecked => {
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Connect {
                    url: url.to_owned(),
                    message: format!("cannot create directory {}: {e}", dir.display()),
                })?;
            }
            "rwc"
        }
        OpenMode::Existing => {
            if !file.exists() {
                return Err(StoreError::Missing(file));
            }
            "rw"
        }
    };
    let mut params: Vec<String> = query
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("mode="))
        .map(str::to_owned)
        .collect();
    params.push(format!("mode={mode_param}"));
    let query = params.join("&");
    Ok(format!("sqlite://{path}?{query}"))
}

/// How long a SQLite write waits for the database's write lock (`busy_timeout`).
const SQLITE_BUSY: Duration = Duration::from_secs(10);

/// A PostgreSQL connection idle this long is pinged before its next use: long enough that
/// a busy gateway never pings, short enough that after a quiet second a dropped connection
/// is found before a request meets it.
const RECHECK_IDLE: Duration = Duration::from_secs(1);

/// Per-connection SQLite settings: WAL, fsync on every commit, foreign keys enforced.
async fn configure_sqlite(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    for pragma in [
        // 16 KiB pages for a new database (an existing one keeps its size): a relayed
        // message's armoured payload (137 KiB at 100 KiB) is 9 pages instead of 34, each a
        // WAL frame written, checkpointed and read back: 11 % less CPU per 100 KiB message,
        // no difference at 1 KiB (docs/decisions.md). Must precede the switch to WAL.
        "PRAGMA page_size = 16384",
        "PRAGMA journal_mode = WAL",
        "PRAGMA synchronous = FULL",
        "PRAGMA foreign_keys = ON",
        // `SQLITE_BUSY`, in milliseconds.
        "PRAGMA busy_timeout = 10000",
        // 32 MiB page cache (the default is 2 MiB): the evidence indexes outgrow 2 MiB
        // within minutes of steady traffic, and every miss is a read system call.
        "PRAGMA cache_size = -32768",
        // No mmap_size: the database file grows at every WAL checkpoint, and SQLite then
        // unmaps and maps it again in every connection (TLB shootdowns): 10 % more CPU per
        // SMTP message than the pread calls it saves (docs/decisions.md).
    ] {
        conn.execute(pragma).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_url_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sub/bote.db");
        let url = format!("sqlite://{}", db.display());
        assert!(matches!(
            sqlite_url(&url, OpenMode::Existing),
            Err(StoreError::Missing(_))
        ));
        let created = sqlite_url(&format!("{url}?mode=ro"), OpenMode::CreateAndMigrate).unwrap();
        assert!(created.ends_with("?mode=rwc"), "{created}");
        assert!(db.parent().unwrap().is_dir());
    }

    /// Every transaction on a SQLite file runs on the same connection, so its page cache
    /// lives on from one commit to the next (a temporary table is that connection's own);
    /// a second transaction waits for the first.
    #[tokio::test]
    async fn transactions_on_a_sqlite_file_share_one_connection() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/bote.db", dir.path().display());
        let timeout = Duration::from_secs(5);
        let store = Store::open_url(&url, OpenMode::CreateAndMigrate, 10, timeout)
            .await
            .unwrap();
        // Several idle connections, which the pool would hand out in turn.
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(store.pool().acquire().await.unwrap());
        }
        drop(held);
        let mut tx = store.begin().await.unwrap();
        tx.execute("CREATE TEMP TABLE mine (v INTEGER)")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        for _ in 0..8 {
            let mut tx = store.begin().await.unwrap();
            tx.execute("INSERT INTO mine VALUES (1)").await.unwrap();
            tx.commit().await.unwrap();
        }

        let first = store.begin().await.unwrap();
        let second = tokio::spawn({
            let store = store.clone();
            async move {
                let mut tx = store.begin().await?;
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mine")
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok::<_, StoreError>(n)
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished());
        first.rollback().await.unwrap();
        assert_eq!(second.await.unwrap().unwrap(), 8);
        store.close().await;
    }
}
