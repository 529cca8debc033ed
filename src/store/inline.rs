//! SQLite reads run on the calling thread, for the lookups every SMTP message makes.
//!
//! sqlx runs each SQLite statement on its connection's own thread: the caller sends the
//! statement over a channel and waits to be woken with the rows. For the short indexed
//! reads of the SMTP path (AUTH's credential, RCPT's mailbox, the policy's reads) the two
//! thread wake-ups cost more than SQLite's own work. Here those reads go through rusqlite
//! connections of this process, opened on the file sqlx opened and used by one caller at
//! a time, on the caller's thread.
//!
//! Architecture invariant: only short reads by index go through here (each a few tens of
//! microseconds, like the small crypto jobs `crypto::pool` runs inline); anything that
//! writes, scans or may read megabytes goes through sqlx. The connections are
//! `query_only`, so a write sent here by mistake fails instead of bypassing the writer.
//! In WAL mode a reader never waits for the writer; it may wait for a moment while
//! SQLite rebuilds its WAL index after a crash, bounded by [`BUSY`].

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use sqlx::AnyPool;

use super::StoreError;

/// How long a read waits for a locked database before it fails.
const BUSY: Duration = Duration::from_millis(500);

/// The inline read connections of one SQLite store.
#[derive(Debug)]
pub(super) struct Inline {
    path: PathBuf,
    keep: usize,
    idle: Mutex<Idle>,
}

/// The kept connections, and whether the store has closed.
#[derive(Debug, Default)]
struct Idle {
    conns: Vec<Connection>,
    closed: bool,
}

impl Inline {
    /// Inline reads of the database `pool` opened, or `None` where there are none: an
    /// in-memory database, a URL naming its own VFS or an immutable file (other rules
    /// than this module's connections would follow), or a file these connections cannot
    /// open (logged; the reads then go through sqlx).
    pub(super) async fn of(pool: &AnyPool, url: &str) -> Option<Self> {
        let query = url.split_once('?').map_or("", |(_, q)| q);
        if query
            .split('&')
            .any(|kv| kv.starts_with("vfs=") || kv.starts_with("immutable="))
        {
            return None;
        }
        // The file SQLite itself opened for sqlx (the URL's path decoded and resolved);
        // empty for an in-memory database.
        let file: String =
            match sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(pool)
                .await
            {
                Ok(file) => file,
                Err(e) => {
                    tracing::warn!(error = %e, "SQLite reads stay on sqlx's threads");
                    return None;
                }
            };
        if file.is_empty() {
            return None;
        }
        let inline = Self::new(PathBuf::from(file));
        // A read of the schema: the file opens, and its pages can be read.
        let schema = |c: &Connection| {
            optional_row(c, "SELECT COUNT(*) FROM sqlite_master", [], |r| {
                Ok(r.get::<_, i64>(0)?)
            })
        };
        match inline.read(schema) {
            Ok(_) => Some(inline),
            Err(e) => {
                tracing::warn!(error = %e, path = %inline.path.display(), "SQLite reads stay on sqlx's threads");
                None
            }
        }
    }

    /// Read connections to the database file at `path` (opened when first needed).
    fn new(path: PathBuf) -> Self {
        // One read at a time per thread that may run one: more are never needed at once.
        let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
        Self {
            path,
            keep: threads + 2,
            idle: Mutex::default(),
        }
    }

    /// Runs `read` on an idle connection (or a new one) on this thread; after
    /// [`Inline::close`] it fails as the closed pool does.
    pub(super) fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = {
            let mut idle = self.idle();
            if idle.closed {
                return Err(StoreError::Query(sqlx::Error::PoolClosed));
            }
            idle.conns.pop()
        };
        let conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = read(&conn);
        let mut idle = self.idle();
        if !idle.closed && idle.conns.len() < self.keep {
            idle.conns.push(conn);
        }
        result
    }

    /// Closes the kept connections; reads fail from now on.
    pub(super) fn close(&self) {
        let mut idle = self.idle();
        idle.closed = true;
        idle.conns.clear();
    }

    /// Connections waiting for the next read (tests).
    pub(super) fn kept(&self) -> usize {
        self.idle().conns.len()
    }

    // A poisoned lock means a panic while a connection moved in or out; the list is intact.
    fn idle(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY)?;
        conn.execute_batch("PRAGMA query_only = ON")?;
        Ok(conn)
    }
}

/// Whether an inline read failed for a moment only (a locked database), so that trying
/// again later may succeed.
pub fn is_transient(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    matches!(e.sqlite_error_code(), Some(DatabaseBusy | DatabaseLocked))
}

/// The row `sql` finds with `params`, if any, read by `map`. `params` bind by position:
/// SQLite numbers `$n` parameters in their order of first appearance, sqlx by `n`, so the
/// SQL shared with sqlx must name `$1`, `$2`, … in that order. Checked at every read (a
/// few parameters, a cached statement): a mistake fails the read rather than swapping its
/// arguments, and the storage tests run every shared statement.
pub(super) fn optional_row<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnOnce(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    for i in 1..=statement.parameter_count() {
        let name = statement.parameter_name(i).unwrap_or("?");
        if name.strip_prefix('$').and_then(|n| n.parse().ok()) != Some(i) {
            return Err(rusqlite::Error::InvalidParameterName(name.to_owned()).into());
        }
    }
    let mut rows = statement.query(params)?;
    rows.next()?.map(map).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bote.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);",
        )
        .unwrap();
        (dir, path)
    }

    fn count(c: &Connection) -> Result<Option<i64>, StoreError> {
        optional_row(c, "SELECT COUNT(*) FROM t", [], |r| Ok(r.get(0)?))
    }

    #[test]
    fn a_kept_connection_reads_what_was_committed_after_its_last_read() {
        let (_dir, path) = database();
        let inline = Inline::new(path.clone());
        assert_eq!(inline.read(count).unwrap(), Some(0));
        assert_eq!(inline.kept(), 1);
        let writer = Connection::open(&path).unwrap();
        for n in 1..=3 {
            writer
                .execute("INSERT INTO t (v) VALUES ('x')", [])
                .unwrap();
            assert_eq!(inline.read(count).unwrap(), Some(n));
        }
        assert_eq!(inline.kept(), 1, "one connection served every read");
    }

    #[test]
    fn nothing_is_written_through_an_inline_connection() {
        let (_dir, path) = database();
        let inline = Inline::new(path);
        let write = inline.read(|c| Ok(c.execute("INSERT INTO t (v) VALUES ('x')", [])?));
        assert!(
            matches!(&write, Err(StoreError::Sqlite(e)) if e.to_string().contains("readonly")),
            "{write:?}"
        );
        assert_eq!(inline.read(count).unwrap(), Some(0));
    }

    #[test]
    fn a_read_after_an_error_works_and_none_after_closing() {
        let (_dir, path) = database();
        let inline = Inline::new(path);
        assert!(
            inline
                .read(|c| optional_row(c, "SELECT nope FROM t", [], |_| Ok(())))
                .is_err()
        );
        assert_eq!(inline.read(count).unwrap(), Some(0));
        inline.close();
        assert_eq!(inline.kept(), 0);
        assert!(matches!(
            inline.read(count),
            Err(StoreError::Query(sqlx::Error::PoolClosed))
        ));
    }

    #[test]
    fn parameters_out_of_order_are_refused() {
        let (_dir, path) = database();
        let inline = Inline::new(path);
        let read = |sql: &'static str| {
            inline.read(move |c| optional_row(c, sql, ["x", "y"], |r| Ok(r.get::<_, i64>(0)?)))
        };
        assert!(read("SELECT COUNT(*) FROM t WHERE v = $1 OR v = $2").is_ok());
        let swapped = read("SELECT COUNT(*) FROM t WHERE v = $2 OR v = $1");
        assert!(
            matches!(&swapped, Err(StoreError::Sqlite(e)) if e.to_string().contains("$2")),
            "{swapped:?}"
        );
    }

    /// A database another connection holds exclusively fails the read after [`BUSY`],
    /// as a transient error (SMTP 451, HTTP 503), not a hang.
    #[test]
    fn a_locked_database_is_a_transient_failure() {
        let (_dir, path) = database();
        let inline = Inline::new(path.clone());
        let holder = Connection::open(&path).unwrap();
        holder
            .execute_batch(
                "PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; INSERT INTO t (v) VALUES ('x');",
            )
            .unwrap();
        let started = std::time::Instant::now();
        let locked = inline.read(count);
        assert!(started.elapsed() >= BUSY, "{:?}", started.elapsed());
        match &locked {
            Err(StoreError::Sqlite(e)) => assert!(is_transient(e), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(
            crate::error::Classify::failure(&locked.unwrap_err()).kind
                == crate::error::ErrorKind::Unavailable
        );
        holder.execute_batch("COMMIT").unwrap();
        drop(holder);
        assert_eq!(inline.read(count).unwrap(), Some(1));
    }

    /// Up to a read per thread at once: the connections are all kept.
    #[test]
    fn a_connection_per_thread_is_kept() {
        let (_dir, path) = database();
        let inline = Inline::new(path);
        let barrier = std::sync::Barrier::new(inline.keep);
        std::thread::scope(|s| {
            for _ in 0..inline.keep {
                s.spawn(|| {
                    inline
                        .read(|c| {
                            barrier.wait();
                            count(c)
                        })
                        .unwrap()
                });
            }
        });
        assert_eq!(inline.kept(), inline.keep);
    }

    /// The file is the one SQLite opened for sqlx (a percent-encoded path decoded), and
    /// there are no inline reads of an in-memory database or under another VFS.
    #[tokio::test]
    async fn inline_reads_open_the_file_sqlx_opened() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("my data")).unwrap();
        let at = |url: &str| {
            let url = url.to_owned();
            async move {
                let pool = AnyPool::connect(&url).await.unwrap();
                Inline::of(&pool, &url).await.map(|i| i.path)
            }
        };
        let url = format!(
            "sqlite://{}/my%20data/bote.db?mode=rwc",
            dir.path().display()
        );
        assert_eq!(at(&url).await, Some(dir.path().join("my data/bote.db")));
        assert_eq!(at("sqlite::memory:").await, None);
        let vfs = format!(
            "sqlite://{}/other.db?mode=rwc&vfs=unix-none",
            dir.path().display()
        );
        assert_eq!(at(&vfs).await, None);
    }
}
