//! SQLite reads run on the calling thread, for the lookups every SMTP message makes.
//!
//! sqlx runs each SQLite statement on its connection's own thread: the caller sends the
//! statement over a channel and waits to be woken with the rows. For the short indexed
//! reads of the SMTP path (AUTH's credential, RCPT's mailbox, the policy's reads) the two
//! thread wake-ups cost more than SQLite's own work. Here those reads go through rusqlite
//! connections of this process, opened on the same database file and used by one caller at
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

use super::StoreError;

/// How long a read waits for a locked database before it fails.
const BUSY: Duration = Duration::from_millis(500);

/// Idle connections kept: two cores' worth of concurrent reads, and a few more.
const KEEP: usize = 4;

/// The inline read connections of one SQLite store.
#[derive(Debug)]
pub(super) struct Inline {
    path: PathBuf,
    idle: Mutex<Idle>,
}

/// The kept connections, and whether the store has closed (then none is kept).
#[derive(Debug, Default)]
struct Idle {
    conns: Vec<Connection>,
    closed: bool,
}

impl Inline {
    /// Read connections to the database file at `path` (opened when first needed).
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: Mutex::default(),
        }
    }

    /// Runs `read` on an idle connection (or a new one) on this thread.
    pub(super) fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self.idle().conns.pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = read(&conn);
        let mut idle = self.idle();
        if !idle.closed && idle.conns.len() < KEEP {
            idle.conns.push(conn);
        }
        result
    }

    /// Closes the kept connections and keeps none from now on.
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

/// Whether an inline read failed for a moment only (a locked or unreachable database), so
/// that trying again later may succeed.
pub fn is_transient(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{CannotOpen, DatabaseBusy, DatabaseLocked, SystemIoFailure};
    matches!(
        e.sqlite_error_code(),
        Some(DatabaseBusy | DatabaseLocked | CannotOpen | SystemIoFailure)
    )
}

/// A path of a SQLite URL as sqlx reads it (`sqlite://PATH?…`), or `None` for an
/// in-memory database (which other connections cannot open).
pub(super) fn path_of(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = rest.split_once('?').map_or(rest, |(p, _)| p);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// The row `sql` finds with `params`, if any, read by `map`.
pub(super) fn optional_row<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnOnce(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
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
    fn a_read_after_an_error_and_after_closing_still_works() {
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
        assert_eq!(inline.read(count).unwrap(), Some(0));
        assert_eq!(inline.kept(), 0, "a closed store keeps no connection");
    }

    #[test]
    fn only_a_database_file_has_inline_reads() {
        assert_eq!(
            path_of("sqlite:///var/lib/bote/bote.db?mode=rw"),
            Some(PathBuf::from("/var/lib/bote/bote.db"))
        );
        assert_eq!(
            path_of("sqlite://data/bote.db"),
            Some(PathBuf::from("data/bote.db"))
        );
        assert_eq!(path_of("sqlite::memory:"), None);
        assert_eq!(path_of("sqlite://:memory:?cache=shared"), None);
    }
}
