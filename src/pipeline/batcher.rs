//! Batches accepted submissions before the evidence writer: the rows of many messages go
//! into the writer's transaction as a few multi-row INSERTs instead of a few statements per
//! message (each statement costs about 100 µs through sqlx, which capped the writer near
//! 1,100 messages/s; benches/submit.rs).
//!
//! All messages of one batch commit or fail together. Their rows have fresh random keys,
//! so a failure is a database failure, or a recipient mailbox deleted while its messages
//! were in flight (a foreign key); nothing was acknowledged, and each caller gets the error
//! and may submit again.

use std::sync::Arc;

use sqlx::AnyConnection;
use tokio::sync::{mpsc, oneshot};

use crate::evidence::{SignedRecord, Work, Writer, WriterError};
use crate::store::StoreError;
use crate::store::messages::{self as repo, CopyRow, JobRow, MessageRow};

/// Most messages one batch takes.
const MAX_MESSAGES: usize = 512;

/// The rows of one accepted submission.
#[derive(Debug)]
pub(super) struct Rows {
    pub message: MessageRow,
    pub copies: Vec<CopyRow>,
    pub jobs: Vec<JobRow>,
}

struct Pending {
    rows: Rows,
    sealed: Vec<SignedRecord>,
    reply: oneshot::Sender<Result<Vec<u64>, WriterError>>,
}

/// Handle to the batcher task; cheap to clone.
#[derive(Clone, Debug)]
pub(super) struct Batcher {
    tx: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pending({})", self.rows.message.gateway_id)
    }
}

impl Batcher {
    /// Starts the batcher in front of `writer`; it ends when every handle is dropped.
    pub fn spawn(writer: Writer) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_MESSAGES);
        tokio::spawn(run(writer, rx));
        Self { tx }
    }

    /// Commits one message's rows with its evidence; returns the records' log indexes.
    pub async fn commit(
        &self,
        rows: Rows,
        sealed: Vec<SignedRecord>,
    ) -> Result<Vec<u64>, WriterError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || WriterError::Stopped;
        self.tx
            .send(Pending {
                rows,
                sealed,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(writer: Writer, mut rx: mpsc::Receiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_MESSAGES {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        commit(&writer, batch).await;
    }
}

async fn commit(writer: &Writer, batch: Vec<Pending>) {
    let mut counts = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    let mut sealed = Vec::new();
    let mut all = Bulk::default();
    for p in batch {
        counts.push(p.sealed.len());
        replies.push(p.reply);
        sealed.extend(p.sealed);
        all.messages.push(p.rows.message);
        all.copies.extend(p.rows.copies);
        all.jobs.extend(p.rows.jobs);
    }
    match writer.commit(sealed, Some(all.into_work())).await {
        Ok(receipt) => {
            let mut rest = receipt.log_indexes.as_slice();
            for (reply, count) in replies.into_iter().zip(counts) {
                // The writer returns one index per record, in order; anything else is a bug
                // that must not hand anyone another message's evidence.
                let Some((mine, tail)) = rest.split_at_checked(count) else {
                    let _ = reply.send(Err(WriterError::MissingIndexes));
                    continue;
                };
                rest = tail;
                let _ = reply.send(Ok(mine.to_vec()));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// The rows of a whole batch.
#[derive(Default)]
struct Bulk {
    messages: Vec<MessageRow>,
    copies: Vec<CopyRow>,
    jobs: Vec<JobRow>,
}

impl Bulk {
    fn into_work(self) -> Work {
        let bulk = Arc::new(self);
        Box::new(move |conn: &mut AnyConnection| {
            let bulk = bulk.clone();
            Box::pin(async move { bulk.write(conn).await })
        })
    }

    async fn write(&self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        repo::insert_messages(conn, &self.messages).await?;
        repo::insert_copies(conn, &self.copies).await?;
        repo::insert_jobs(conn, &self.jobs).await?;
        Ok(())
    }
}
