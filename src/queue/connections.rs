//! SMTP sessions to offices' mail servers, kept open between jobs (one per job in flight,
//! per server and TLS mode). lettre speaks the protocol; this file opens the TCP connection
//! itself, with TCP_NODELAY: lettre writes a message and its final `.` in two writes, and
//! without the option the five-byte dot waited for the server's delayed ACK, 40 ms per
//! message (measured with strace against Postfix's smtp-sink), which capped a session at
//! 25 messages per second.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;

use crate::accounts::{Relay, RelayTls};

/// An idle session older than this is tested (NOOP) before it is used again.
const STALE: Duration = Duration::from_secs(5);

type Key = (String, u16, RelayTls);

/// Idle sessions by server and TLS mode.
#[derive(Default)]
pub(super) struct Sessions {
    idle: Mutex<HashMap<Key, Vec<(AsyncSmtpConnection, Instant)>>>,
}

/// Why no session could be opened (the job is tried again later).
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    /// TCP.
    #[error("connect to {0}: {1}")]
    Tcp(String, std::io::Error),
    /// The greeting, EHLO or STARTTLS.
    #[error("{0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    /// TLS is required and the server offers no STARTTLS.
    #[error("TLS is required, but {0} does not offer STARTTLS")]
    NoStartTls(String),
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions")
    }
}

fn key(relay: &Relay) -> Key {
    (relay.host.clone(), relay.port, relay.tls)
}

impl Sessions {
    /// An open session to `relay`: an idle one if it still answers, else a new one.
    pub(super) async fn take(
        &self,
        relay: &Relay,
        hello: &ClientId,
        relay_ca: &[Vec<u8>],
    ) -> Result<AsyncSmtpConnection, ConnectError> {
        while let Some((mut session, since)) = self.pop(relay) {
            if since.elapsed() < STALE || session.test_connected().await {
                return Ok(session);
            }
        }
        open(relay, hello, relay_ca).await
    }

    fn pop(&self, relay: &Relay) -> Option<(AsyncSmtpConnection, Instant)> {
        // A poisoned lock means a panic while moving a session in or out; the map is intact.
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        idle.get_mut(&key(relay))?.pop()
    }

    /// Gives a session back for the next job, unless it broke.
    pub(super) fn put_back(&self, relay: &Relay, session: AsyncSmtpConnection) {
        if session.has_broken() {
            return;
        }
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        idle.entry(key(relay))
            .or_default()
            .push((session, Instant::now()));
    }
}

async fn open(
    relay: &Relay,
    hello: &ClientId,
    relay_ca: &[Vec<u8>],
) -> Result<AsyncSmtpConnection, ConnectError> {
    let server = format!("{}:{}", relay.host, relay.port);
    let tcp = tokio::net::TcpStream::connect((relay.host.as_str(), relay.port))
        .await
        .map_err(|e| ConnectError::Tcp(server.clone(), e))?;
    tcp.set_nodelay(true)
        .map_err(|e| ConnectError::Tcp(server.clone(), e))?;
    let mut session = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), hello).await?;
    match relay.tls {
        RelayTls::None => {}
        RelayTls::Required if !session.can_starttls() => {
            session.abort().await;
            return Err(ConnectError::NoStartTls(server));
        }
        RelayTls::Required => {
            session
                .starttls(tls(relay, relay_ca, false)?, hello)
                .await?
        }
        RelayTls::Opportunistic if session.can_starttls() => {
            session.starttls(tls(relay, relay_ca, true)?, hello).await?;
        }
        RelayTls::Opportunistic => {}
    }
    Ok(session)
}

/// TLS towards `relay`: the web roots and `tls.relay_ca`, or anything (`accept_invalid`,
/// for opportunistic TLS, which protects against passive listeners only).
fn tls(
    relay: &Relay,
    relay_ca: &[Vec<u8>],
    accept_invalid: bool,
) -> Result<TlsParameters, lettre::transport::smtp::Error> {
    let mut builder = TlsParameters::builder(relay.host.clone());
    for pem in relay_ca {
        if let Ok(cert) = Certificate::from_pem(pem) {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .dangerous_accept_invalid_certs(accept_invalid)
        .build_rustls()
}
