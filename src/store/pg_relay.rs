//! PostgreSQL over TCP without Nagle's algorithm.
//!
//! sqlx 0.9.0 no longer sets `TCP_NODELAY` on its PostgreSQL sockets (sqlx issue 4335; fixed
//! upstream, not in a release as of 0.9.0). A request larger than one segment then leaves
//! its last, partial segment waiting for the server's delayed ACK: a fixed ~40 ms stall per
//! round trip (measured: 136 submissions/s over TCP against 650 over the Unix socket, see
//! docs/decisions.md, "PostgreSQL over TCP"). sqlx offers no hook to reach its socket, and
//! bote forbids `unsafe`, so bote owns the TCP socket instead: the pool connects to a Unix
//! socket in a private directory, and this relay forwards each connection over a TCP
//! stream that it opened with `TCP_NODELAY`. Everything the client speaks, TLS included,
//! passes through unchanged: sqlx still negotiates `sslmode` with the real server and
//! verifies its certificate against the host name in the URL.
//!
//! Remove this module (and [`needs_relay`]'s caller in `store::Store::open_url`) once a
//! released sqlx sets the option itself; `tests/it/storage.rs` checks that PostgreSQL
//! connections over TCP have it.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::postgres::PgConnectOptions;
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// A running relay; stops and removes its socket when dropped.
#[derive(Debug)]
pub struct Relay {
    dir: PathBuf,
    accept: JoinHandle<()>,
    relayed: Arc<AtomicU64>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The TCP server of a PostgreSQL URL that needs the relay: `None` for Unix-socket URLs
/// (and for URLs sqlx cannot parse, which then fail with sqlx's own message).
pub fn needs_relay(url: &str) -> Option<(String, u16)> {
    let options = PgConnectOptions::from_str(url).ok()?;
    if options.get_socket().is_some() || options.get_host().starts_with('/') {
        return None;
    }
    Some((options.get_host().to_owned(), options.get_port()))
}

/// Whether the server accepts a TCP connection at all (within `timeout`).
pub async fn probe(host: &str, port: u16, timeout: std::time::Duration) -> std::io::Result<()> {
    match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(connected) => connected.map(drop),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from {host}:{port} within {timeout:?}"),
        )),
    }
}

impl Relay {
    /// Starts a relay to `host:port` in a new private directory.
    pub fn start(host: String, port: u16) -> std::io::Result<Self> {
        let dir = private_dir()?;
        // sqlx looks for `<dir>/.s.PGSQL.<port>`, as libpq does.
        let listener = UnixListener::bind(dir.join(format!(".s.PGSQL.{port}")))?;
        let relayed = Arc::new(AtomicU64::new(0));
        let accept = tokio::spawn(accept_loop(listener, host, port, relayed.clone()));
        Ok(Self {
            dir,
            accept,
            relayed,
        })
    }

    /// Connections relayed so far (all with `TCP_NODELAY`).
    pub fn relayed(&self) -> u64 {
        self.relayed.load(Ordering::Relaxed)
    }

    /// `url` pointed at this relay: the URL's own host stays (TLS verifies against it).
    pub fn url(&self, url: &str) -> String {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}host={}", self.dir.display())
    }

    #[cfg(test)]
    fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

/// A fresh directory only this user can enter.
fn private_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!(
        "bote-pg-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

async fn accept_loop(listener: UnixListener, host: String, port: u16, relayed: Arc<AtomicU64>) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                let host = host.clone();
                let relayed = relayed.clone();
                tokio::spawn(async move {
                    if let Err(e) = relay(client, &host, port, &relayed).await {
                        tracing::debug!(error = %e, "PostgreSQL relay connection ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "PostgreSQL relay cannot accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn relay(
    mut client: UnixStream,
    host: &str,
    port: u16,
    relayed: &AtomicU64,
) -> std::io::Result<()> {
    let mut server = TcpStream::connect((host, port)).await.inspect_err(|e| {
        tracing::warn!(host, port, error = %e, "cannot reach PostgreSQL");
    })?;
    server.set_nodelay(true)?;
    relayed.fetch_add(1, Ordering::Relaxed);
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tcp_urls_need_the_relay() {
        assert_eq!(
            needs_relay("postgres://bote:pw@db.example:6543/bote?sslmode=verify-full"),
            Some(("db.example".to_owned(), 6543))
        );
        assert_eq!(
            needs_relay("postgres://postgres@127.0.0.1/postgres"),
            Some(("127.0.0.1".to_owned(), 5432))
        );
        assert_eq!(
            needs_relay("postgres:///bote?host=/var/run/postgresql&user=bote"),
            None
        );
        assert_eq!(
            needs_relay("postgres://%2Fvar%2Frun%2Fpostgresql/bote"),
            None
        );
    }

    #[tokio::test]
    async fn urls_keep_their_host_and_gain_the_socket() {
        let relay = Relay::start("db.example".into(), 5432).unwrap();
        let dir = relay.dir().display().to_string();
        assert_eq!(
            relay.url("postgres://u@db.example/b"),
            format!("postgres://u@db.example/b?host={dir}")
        );
        let options =
            PgConnectOptions::from_str(&relay.url("postgres://u@db.example/b?sslmode=require"))
                .unwrap();
        assert_eq!(options.get_host(), "db.example");
        assert_eq!(
            options.get_socket().map(PathBuf::as_path),
            Some(relay.dir())
        );
        assert!(relay.dir().join(".s.PGSQL.5432").exists());
        let kept = relay.dir().to_owned();
        drop(relay);
        assert!(!kept.exists(), "the socket directory goes with the relay");
    }
}
