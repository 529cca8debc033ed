//! `bote queue list|retry|delete`: the operator's view of relays to external offices.

use std::path::Path;

use clap::Subcommand;

use super::{CliError, load_config};
use crate::clock::{now_ms, rfc3339_ms};
use crate::gateway::Gateway;
use crate::queue::Removed;
use crate::store::queue as repo;
use crate::store::{OpenMode, Store, StoreError};

/// `bote queue …`
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Relay jobs not yet delivered (with --all: every job), one per line: id, state,
    /// attempts, recipient, gateway id, next attempt, last error.
    List {
        /// Include delivered jobs.
        #[arg(long)]
        all: bool,
    },
    /// Send a queued or failed job again now (the worker of a running gateway takes it).
    Retry {
        /// The job id (first column of `queue list`).
        id: i64,
    },
    /// Remove a job that is not being sent (the message and its evidence stay). A job not
    /// yet sent is cancelled: its recipient's evidence records the failure (RA05, cancelled
    /// by the operator), which needs the gateway's keys.
    Delete {
        /// The job id.
        id: i64,
    },
}

/// Runs `bote queue …`.
pub async fn queue(config_path: &Path, command: QueueCommand) -> Result<(), CliError> {
    let config = load_config(config_path)?;
    let store = Store::open(&config, OpenMode::Existing).await?;
    let mut conn = store.pool().acquire().await.map_err(StoreError::from)?;
    match command {
        QueueCommand::List { all } => {
            for job in repo::list(&mut conn, all).await? {
                out!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    job.id,
                    job.state,
                    job.attempts,
                    job.recipient,
                    job.gateway_id,
                    rfc3339_ms(job.due_at),
                    job.last_error
                        .unwrap_or_default()
                        .replace(['\t', '\n'], " ")
                );
            }
        }
        QueueCommand::Retry { id } => {
            drop(conn);
            let mut tx = store.begin().await?;
            if !repo::retry_now(&mut tx, id, now_ms()).await? {
                return Err(CliError::Usage(format!(
                    "no queued or failed job {id} (see `bote queue list`)"
                )));
            }
            let actor = crate::accounts::Actor::current_operator();
            let target = format!("job {id}");
            let details = serde_json::json!({});
            crate::store::audit::record(&mut tx, &actor, "queue.retry", &target, details, now_ms())
                .await?;
            tx.commit().await.map_err(StoreError::from)?;
            out!("queued: {id}");
        }
        QueueCommand::Delete { id } => {
            let actor = crate::accounts::Actor::current_operator();
            let queued = repo::find(&mut conn, id)
                .await?
                .is_some_and(|j| j.state == "queued");
            drop(conn);
            // Only a job not yet sent needs evidence, and so the keys.
            let removed = if queued {
                let gateway = Gateway::attach(config).await?;
                crate::queue::remove(&gateway, id, &actor).await?
            } else {
                crate::queue::remove_finished(&store, id, &actor).await?
            };
            match removed {
                Some(Removed::Finished) => out!("deleted: {id}"),
                Some(Removed::Cancelled) => {
                    out!("deleted: {id} (not sent; cancellation recorded as evidence)");
                }
                None => {
                    return Err(CliError::Usage(format!(
                        "no job {id} that could be deleted (a job being sent cannot)"
                    )));
                }
            }
        }
    }
    Ok(())
}
