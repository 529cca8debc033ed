//! `bote serve`: opens the store, binds every configured listener, serves until a signal,
//! then drains in-flight work before returning.
//!
//! Listeners of later issues (SMTP MX and submission, the queue worker, the log sequencer)
//! plug in here: each gets the [`CancellationToken`] and is awaited on shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::Config;
use crate::gateway::{Gateway, OpenGatewayError};
use crate::smtp;
use crate::telemetry;
use crate::tls::{self, ServerCert, TlsError};
use crate::web;

/// How long a TLS handshake may take before the connection is dropped (slow clients).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for in-flight requests: longer than a relay attempt may wait for
/// the office's server plus its outcome's commit, so that an attempt in flight is recorded
/// rather than sent again after the restart (all but the transfer of a large message,
/// whose attempt may take longer: `queue::connections::attempt_limit`).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(70);
const _: () = assert!(DRAIN_TIMEOUT.as_secs() >= crate::queue::SMTP_TIMEOUT.as_secs() + 7);
/// How long shutdown then waits for database connections to come back. With the drain,
/// under deploy/bote.service's `TimeoutStopSec=90s`, so systemd never SIGKILLs a stop.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Opening the gateway (database, keys, log).
    #[error(transparent)]
    Open(#[from] OpenGatewayError),
    /// Certificates.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} (`{key}`): {source}")]
    Bind {
        /// Config key.
        key: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics recorder.
    #[error("metrics: {0}")]
    Metrics(String),
}

/// Addresses actually bound (useful when a config asks for port 0).
#[derive(Debug, Clone, Default)]
pub struct Bound {
    /// HTTPS.
    pub https: Option<SocketAddr>,
    /// Metrics.
    pub metrics: Option<SocketAddr>,
    /// SMTP submission (STARTTLS).
    pub submission: Option<SocketAddr>,
    /// SMTP submission over implicit TLS.
    pub submissions: Option<SocketAddr>,
    /// SMTP MX.
    pub mx: Option<SocketAddr>,
}

/// Serves until `shutdown` is cancelled, then drains and returns.
pub async fn serve(config: Config, shutdown: CancellationToken) -> Result<(), ServeError> {
    let gateway = Gateway::start(config).await?;
    let tracker = TaskTracker::new();
    let bound = start(&gateway, &tracker, shutdown.clone()).await?;
    tracing::info!(
        https = ?bound.https,
        metrics = ?bound.metrics,
        submission = ?bound.submission,
        submissions = ?bound.submissions,
        "bote is serving"
    );
    metrics::gauge!("bote_up").set(1.0);
    shutdown.cancelled().await;
    tracing::info!("shutting down: draining in-flight requests");
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out after {DRAIN_TIMEOUT:?}; closing anyway");
    }
    // A task the drain gave up on may still hold a connection, and the pool's close waits
    // for every one; committed data is durable either way, so the wait is bounded.
    if tokio::time::timeout(CLOSE_TIMEOUT, gateway.store().close())
        .await
        .is_err()
    {
        tracing::warn!("database connections still in use after {CLOSE_TIMEOUT:?}; exiting");
    }
    tracing::info!("stopped");
    Ok(())
}

/// How often sessions that can no longer open are deleted.
const PURGE_SESSIONS: Duration = Duration::from_secs(600);

/// Deletes the sessions that can no longer open, at start and then every
/// [`PURGE_SESSIONS`], until `shutdown`.
async fn purge_sessions(gateway: Gateway, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(PURGE_SESSIONS);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match gateway.auth().purge_sessions().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "ended sessions deleted"),
            Err(e) => tracing::warn!(error = %e, "ended sessions not deleted"),
        }
    }
}

/// Binds the listeners and spawns their accept loops on `tracker`.
pub async fn start(
    gateway: &Gateway,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<Bound, ServeError> {
    let config = gateway.config();
    let mut bound = Bound::default();
    tracker.spawn(crate::queue::RelayWorker::new(gateway.clone()).run(shutdown.clone()));
    tracker.spawn(purge_sessions(gateway.clone(), shutdown.clone()));
    if let Some(attestor) = gateway.attestor() {
        let attestor = attestor.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            tokio::select! {
                () = attestor.run() => {}
                () = stop.cancelled() => {}
            }
        });
    }
    if let Some(addr) = config.http.metrics_listen.0 {
        let handle = telemetry::install_metrics().map_err(ServeError::Metrics)?;
        telemetry::describe_metrics();
        let listener = bind("http.metrics_listen", addr).await?;
        let local = local_addr("http.metrics_listen", &listener, addr)?;
        telemetry::announce("metrics", "http", local);
        bound.metrics = Some(local);
        let app = telemetry::metrics_router(handle);
        tracker.spawn(accept_loop(
            listener,
            None,
            app,
            shutdown.clone(),
            tracker.clone(),
        ));
    }
    let https = config.http.listen.0;
    let submission = config.smtp.submission_listen.0;
    let submissions = config.smtp.submissions_listen.0;
    let mx = config.smtp.mx_listen.0;
    if https.is_none() && submission.is_none() && submissions.is_none() && mx.is_none() {
        return Ok(bound);
    }
    let cert = Arc::new(ServerCert::load(&config.tls)?);
    tracker.spawn(reload_on_sighup(cert.clone(), shutdown.clone()));
    for (addr, port, key) in [
        (submission, smtp::Port::Submission, "smtp.submission_listen"),
        (
            submissions,
            smtp::Port::Submissions,
            "smtp.submissions_listen",
        ),
    ] {
        let Some(addr) = addr else { continue };
        let listener = bind(key, addr).await?;
        let local = local_addr(key, &listener, addr)?;
        telemetry::announce(key, "smtp", local);
        match port {
            smtp::Port::Submission => bound.submission = Some(local),
            smtp::Port::Submissions => bound.submissions = Some(local),
            smtp::Port::Mx => bound.mx = Some(local),
        }
        let acceptor = TlsAcceptor::from(tls::server_config_with_client_certs(cert.clone())?);
        tracker.spawn(smtp::accept_loop(
            gateway.clone(),
            listener,
            acceptor,
            port,
            shutdown.clone(),
            tracker.clone(),
        ));
    }
    if let Some(addr) = https {
        let tls = tls::server_config(cert, &[b"h2", b"http/1.1"])?;
        let listener = bind("http.listen", addr).await?;
        let local = local_addr("http.listen", &listener, addr)?;
        telemetry::announce("https", "https", local);
        bound.https = Some(local);
        let app = web::router(gateway.clone());
        let acceptor = TlsAcceptor::from(tls);
        tracker.spawn(accept_loop(
            listener,
            Some(acceptor),
            app,
            shutdown,
            tracker.clone(),
        ));
    }
    Ok(bound)
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { key, addr, source })
}

fn local_addr(
    key: &'static str,
    listener: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, ServeError> {
    listener
        .local_addr()
        .map_err(|source| ServeError::Bind { key, addr, source })
}

/// Accepts connections until shutdown; each connection is served on its own task and
/// finishes its in-flight request (HTTP/1 keep-alive and HTTP/2 are told to close).
async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let app = app.clone();
        tracker.spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let app = app.clone();
                let mut req = req.map(Body::new);
                // Throttles and logs key on the client's address.
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                async move {
                    let response = match app.oneshot(req).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let result = match tls {
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Re-reads the TLS certificate and key on every SIGHUP until shutdown; a failed reload is
/// logged and the certificate in use stays.
async fn reload_on_sighup(cert: Arc<ServerCert>, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; certificates reload on restart only");
            return;
        }
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            received = hangup.recv() => {
                if received.is_none() {
                    return;
                }
                match cert.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: TLS certificate reload failed; keeping the old one"),
                }
            }
        }
    }
}

/// Resolves when SIGTERM or SIGINT arrives, then cancels `token`.
pub async fn cancel_on_signal(token: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
    token.cancel();
}
