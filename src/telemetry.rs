//! Logs (tracing: human or JSON) and metrics (Prometheus exposition on its own listener).
//!
//! Invariant: nothing logged here or elsewhere carries a body, a subject, a password or a
//! token; request spans record the path without its query string.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Installs the global tracing subscriber, writing to stderr. `RUST_LOG` overrides the
/// default level. Calling it twice is harmless (tests).
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},sqlx=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install_metrics() -> Result<PrometheusHandle, String> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| e.to_string())?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// The metrics application: `GET /metrics` in the Prometheus text format.
pub fn metrics_router(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    )
}

/// Describes the metrics bote exports, so `/metrics` documents itself.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "bote_http_requests_total",
        "HTTPS requests by route and status"
    );
    metrics::describe_histogram!(
        "bote_http_request_duration_seconds",
        "HTTPS request latency by route"
    );
    metrics::describe_gauge!("bote_up", "1 while the gateway serves");
    metrics::describe_histogram!(
        "bote_evidence_commit_seconds",
        "Duration of one group commit of the evidence writer, fsync included"
    );
    metrics::describe_counter!(
        "bote_log_attestations_total",
        "Checkpoints stored with witness cosignatures and/or a time-stamp"
    );
    metrics::describe_counter!(
        "bote_witness_failures_total",
        "Submissions a witness did not cosign (unreachable, refused), by witness"
    );
    metrics::describe_counter!(
        "bote_witness_alarms_total",
        "A witness holds a checkpoint this log does not extend (fork or restored backup)"
    );
    metrics::describe_counter!(
        "bote_relay_deliveries_total",
        "Relay attempts to external offices by outcome (delivered, refused, deferred, expired)"
    );
    metrics::describe_histogram!(
        "bote_relay_attempt_seconds",
        "Duration of one relay attempt's SMTP conversation, connecting included"
    );
    metrics::describe_counter!(
        "bote_relay_resends_total",
        "Relay jobs taken over after their worker died (the office may receive them twice)"
    );
    metrics::describe_gauge!("bote_smtp_sessions", "SMTP sessions open");
    metrics::describe_counter!("bote_smtp_replies_total", "SMTP replies by code");
    metrics::describe_counter!(
        "bote_smtp_refused_connections_total",
        "SMTP connections refused for too many from one address"
    );
    metrics::describe_counter!(
        "bote_timestamp_failures_total",
        "Checkpoints the time-stamping authority did not stamp"
    );
}

/// Logs where a listener is, in the form operators grep for.
pub fn announce(what: &str, scheme: &str, addr: SocketAddr) {
    tracing::info!(listener = what, address = %addr, "listening on {scheme}://{addr}");
}
