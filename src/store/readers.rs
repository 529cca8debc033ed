//! Connections for the short reads on the hot path of every message (SMTP AUTH's
//! credential, RCPT's mailbox, the policy checks, the relay's payload), kept aside from
//! the pool.
//!
//! sqlx pings a connection when it goes back to the pool, to catch one left in an unknown
//! state by a cancelled query. On SQLite that ping is a round trip to the connection's
//! worker thread (two thread wake-ups): three per message, about 5 % of the CPU of a
//! 1 KiB SMTP submission (docs/decisions.md, "Fourth round"); on PostgreSQL it is a round
//! trip to the server. A [`Reader`] whose user finished its reads calls
//! [`Reader::release`] and the connection waits here for the next read, without the ping;
//! one dropped otherwise (an error, a cancelled task, possibly in the middle of a query)
//! goes back to the pool the usual way, ping included.
//!
//! A PostgreSQL connection can die while it waits (a server restart, an idle timeout on
//! the way). One kept longer than [`RECHECK_IDLE`] is pinged before it serves again, as
//! the pool checks its own, within the store's connect timeout (a half-open connection
//! would otherwise hold the read until TCP gives up); one that died within that second
//! fails its read as a temporary error (SMTP 451, HTTP 503), as a statement in flight
//! during a restart does. A connection first taken from the pool longer ago than
//! [`KEEP_AT_MOST`] goes back to it rather than aside, so that the pool's `max_lifetime`
//! still rotates readers (to a new server after a failover).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection};

use super::{RECHECK_IDLE, StoreError};

/// Idle connections kept aside at most: two cores' worth of concurrent reads. More
/// readers than this at once take pool connections and give the extra ones back.
const KEEP: u32 = 2;

/// A reader connection is kept aside only within this time of leaving the pool: sqlx's
/// default `max_lifetime`, which the pool enforces only on connections it holds.
const KEEP_AT_MOST: Duration = Duration::from_secs(30 * 60);

/// The set of idle reader connections of one store.
#[derive(Debug, Default)]
pub(super) struct Readers {
    idle: Mutex<Idle>,
    keep: usize,
    ping_timeout: Duration,
}

/// The kept connections, and whether the store is closing: the pool's `close` waits for
/// every connection out of it, so once it has begun none may be kept back.
#[derive(Debug, Default)]
struct Idle {
    conns: Vec<Kept>,
    closed: bool,
}

/// A connection kept aside: when it left the pool, and when it was last put aside.
#[derive(Debug)]
struct Kept {
    conn: PoolConnection<Any>,
    taken: Instant,
    since: Instant,
}

impl Readers {
    /// Keeps at most a quarter of the pool's `max_connections` aside: kept connections are
    /// out of the pool, and the writer and everything else must still get one. A kept
    /// connection's check waits at most `ping_timeout`.
    pub(super) fn new(max_connections: u32, ping_timeout: Duration) -> Self {
        Self {
            idle: Mutex::default(),
            keep: usize::try_from(KEEP.min(max_connections / 4)).unwrap_or(0),
            ping_timeout,
        }
    }

    /// An idle reader connection (pinged first if it waited long), or one from `pool`.
    pub(super) async fn take(self: &Arc<Self>, pool: &AnyPool) -> Result<Reader, StoreError> {
        while let Some(mut kept) = self.pop() {
            if kept.since.elapsed() < RECHECK_IDLE || self.alive(&mut kept.conn).await {
                return Ok(self.reader(kept.conn, kept.taken));
            }
            // Lost while it waited: closed here, not offered to the pool again.
            kept.conn.close_on_drop();
        }
        Ok(self.reader(pool.acquire().await?, Instant::now()))
    }

    async fn alive(&self, conn: &mut PoolConnection<Any>) -> bool {
        matches!(
            tokio::time::timeout(self.ping_timeout, conn.ping()).await,
            Ok(Ok(()))
        )
    }

    fn pop(&self) -> Option<Kept> {
        self.idle.lock().ok().and_then(|mut idle| idle.conns.pop())
    }

    fn reader(self: &Arc<Self>, conn: PoolConnection<Any>, taken: Instant) -> Reader {
        Reader {
            conn: Some(conn),
            home: self.clone(),
            taken,
        }
    }

    fn put(&self, conn: PoolConnection<Any>, taken: Instant) {
        if taken.elapsed() < KEEP_AT_MOST
            && let Ok(mut idle) = self.idle.lock()
            && !idle.closed
            && idle.conns.len() < self.keep
        {
            idle.conns.push(Kept {
                conn,
                taken,
                since: Instant::now(),
            });
        }
        // Otherwise `conn` drops here and returns to the pool.
    }

    /// Gives every kept connection back to the pool and keeps none from now on, so that
    /// the pool's `close` can finish.
    pub(super) fn close(&self) {
        // Even from a poisoned lock: connections left in it would make `close` wait forever.
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.closed = true;
        let conns = std::mem::take(&mut idle.conns);
        drop(idle);
        drop(conns);
    }

    /// Connections waiting here (tests).
    pub(super) fn idle(&self) -> usize {
        self.idle.lock().map_or(0, |idle| idle.conns.len())
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        // A pool connection's drop spawns the task that takes it back, which panics
        // outside a runtime (a store dropped after its runtime ended). Such connections
        // leave the pool and close on their own: SQLite's need no runtime to close, a
        // PostgreSQL one closes its socket without a goodbye (the server logs an
        // unexpected EOF), and the emptied handle spawns nothing while the pool's
        // `min_connections` is 0 (the default, which `Store` keeps).
        if tokio::runtime::Handle::try_current().is_err() {
            let idle = self.idle.get_mut().unwrap_or_else(PoisonError::into_inner);
            for kept in idle.conns.drain(..) {
                drop(kept.conn.detach());
            }
        }
    }
}

/// A connection for reads outside a transaction; see the module documentation.
#[derive(Debug)]
pub struct Reader {
    conn: Option<PoolConnection<Any>>,
    home: Arc<Readers>,
    taken: Instant,
}

impl Reader {
    /// The reads are done and their results taken: keep the connection for the next.
    pub fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            self.home.put(conn, self.taken);
        }
    }
}

impl std::ops::Deref for Reader {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        // `conn` is `None` only inside `release`, which consumes the reader.
        self.conn.as_deref().unwrap_or_else(|| unreachable!())
    }
}

impl std::ops::DerefMut for Reader {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.conn.as_deref_mut().unwrap_or_else(|| unreachable!())
    }
}
