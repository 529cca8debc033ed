//! The group-commit writer: one task that turns many concurrent "commit this event and its
//! evidence" requests into one transaction, one log append, one checkpoint and one fsync.
//!
//! Callers do their expensive work (parsing, hashing, signing, encrypting) first, in
//! parallel, then submit a [`Work`] closure (the event's own rows) with its sealed evidence
//! and await the [`Committed`]. The writer takes whatever is queued (up to [`MAX_BATCH`]
//! records), runs each closure under a savepoint so one failing caller cannot spoil the
//! others, appends all evidence, commits, publishes the checkpoint, and answers everyone.
//! At low load a batch is one request (no added latency); under load batches grow.
//!
//! Requests nobody is waiting on in real time (the relay worker's claims and results) are
//! *deferrable*: a batch of only those lingers up to [`LINGER`] for a submission to ride
//! with. At partial load each message would otherwise cost three commits (acceptance,
//! claim, relay result), each an fsync that the next submission queues behind.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sqlx::{Acquire, AnyConnection};
use tokio::sync::{mpsc, oneshot, watch};

use super::{EvidenceError, SignedRecord, record_in_tx};
use crate::error::{Classify, Failure};
use crate::log::{Log, SignedCheckpoint};
use crate::store::queue::{JobEnd, finish_all};
use crate::store::{Store, StoreError};

/// Most evidence records one transaction takes.
pub const MAX_BATCH: usize = 4096;
/// Requests waiting for the writer before submitters are slowed down.
const QUEUE: usize = 8192;
/// Longest a batch of deferrable requests waits for company (see the module doc).
pub const LINGER: Duration = Duration::from_millis(10);

/// An event's own writes, run inside the batch transaction. It may run twice (see
/// [`run_batch`]): the first run of a batch that fails is rolled back entirely.
pub type Work = Box<
    dyn for<'c> Fn(&'c mut AnyConnection) -> BoxFuture<'c, Result<(), StoreError>> + Send + Sync,
>;

/// What a committed request gets back.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Log index of each submitted record, in order.
    pub log_indexes: Vec<u64>,
    /// The checkpoint signed for the batch (covers every index above).
    pub checkpoint: SignedCheckpoint,
}

/// What the writer task answers: a batch of work alone (the relay worker's claims) appends
/// nothing and signs no checkpoint.
#[derive(Debug)]
struct Done {
    log_indexes: Vec<u64>,
    checkpoint: Option<SignedCheckpoint>,
}

/// Why a request was not committed. Shared by every request of a failed batch, so the
/// causes sit behind `Arc`s.
#[derive(Debug, thiserror::Error, Clone)]
pub enum WriterError {
    /// The request's own work failed; nothing of it was written.
    #[error(transparent)]
    Work(Arc<StoreError>),
    /// The batch could not be committed; nothing of it was written.
    #[error("evidence commit failed: {0}")]
    Commit(Arc<EvidenceError>),
    /// A request's work panicked; its whole batch was rolled back.
    #[error("evidence commit failed: a request's work panicked")]
    Panicked,
    /// The writer has stopped (shutdown).
    #[error("the evidence writer has stopped")]
    Stopped,
    /// The writer returned fewer log indexes than records, or no checkpoint for them: a bug
    /// that must not hand anyone another message's evidence.
    #[error("the writer returned fewer log indexes than records")]
    MissingIndexes,
}

impl Classify for WriterError {
    fn failure(&self) -> Failure {
        match self {
            Self::Work(e) => e.failure(),
            Self::Commit(e) => e.failure(),
            Self::Panicked | Self::MissingIndexes => Failure::internal(self),
            Self::Stopped => Failure::unavailable(self),
        }
    }
}

type Reply = oneshot::Sender<Result<Done, WriterError>>;

struct Request {
    job: Job,
    reply: Reply,
    deferrable: bool,
}

/// What one request writes.
struct Job {
    sealed: Vec<SignedRecord>,
    work: Option<Work>,
    /// A relay job's end. Unlike a [`Work`] closure, the ends of a batch's requests are
    /// written together, in one statement per kind of end: under load a batch carries a
    /// dozen relay outcomes, each of which would otherwise be two statements, each a round
    /// trip to SQLite's worker thread while the writer holds the database.
    end: Option<JobEnd>,
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone, Debug)]
pub struct Writer {
    tx: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Request({} records)", self.job.sealed.len())
    }
}

impl Writer {
    /// Starts the writer task; it ends when every handle is dropped.
    pub fn spawn(store: Store, log: Arc<Log>) -> Self {
        Self::spawn_with_linger(store, log, LINGER)
    }

    /// [`Writer::spawn`] with another wait for deferrable requests (tests make it long
    /// enough to watch a deferred request ride along).
    pub fn spawn_with_linger(store: Store, log: Arc<Log>, linger: Duration) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (published, watch) = watch::channel(None);
        tokio::spawn(run(store, log.clone(), rx, published, linger));
        tokio::spawn(publish(log, watch));
        Self { tx }
    }

    /// Commits `sealed` (and `work`, if any) and waits until they are durable and logged.
    pub async fn commit(
        &self,
        sealed: Vec<SignedRecord>,
        work: Option<Work>,
    ) -> Result<Committed, WriterError> {
        let done = self.request(Job::new(sealed, work), false).await?;
        Ok(Committed {
            log_indexes: done.log_indexes,
            checkpoint: done.checkpoint.ok_or(WriterError::MissingIndexes)?,
        })
    }

    /// Like [`Writer::commit`], for records nobody awaits in real time (a relay attempt's
    /// outcome): they may wait up to [`LINGER`] to share a submission's commit.
    pub async fn commit_deferred(
        &self,
        sealed: Vec<SignedRecord>,
        work: Option<Work>,
    ) -> Result<(), WriterError> {
        self.request(Job::new(sealed, work), true).await.map(|_| ())
    }

    /// Like [`Writer::commit_deferred`], for a relay attempt's evidence and the end of its
    /// job, which is written together with the other ends in the batch. Fails with
    /// [`StoreError::Conflict`] (as [`WriterError::Work`]) if the job's lease was lost.
    pub async fn commit_relay_outcome(
        &self,
        sealed: Vec<SignedRecord>,
        end: JobEnd,
    ) -> Result<(), WriterError> {
        let job = Job {
            sealed,
            work: None,
            end: Some(end),
        };
        self.request(job, true).await.map(|_| ())
    }

    /// Runs `work` alone in a batch's transaction and waits until it is durable: a write
    /// that needs no evidence rides along with the evidence of others instead of taking
    /// the database lock and an fsync of its own. Deferrable (see [`LINGER`]).
    pub async fn run(&self, work: Work) -> Result<(), WriterError> {
        self.request(Job::new(Vec::new(), Some(work)), true)
            .await
            .map(|_| ())
    }

    async fn request(&self, job: Job, deferrable: bool) -> Result<Done, WriterError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request {
                job,
                reply,
                deferrable,
            })
            .await
            .map_err(|_| WriterError::Stopped)?;
        answer.await.map_err(|_| WriterError::Stopped)?
    }
}

/// Least time between two writes of the checkpoint file: each costs a file write, two
/// fsyncs and a rename (3 % of the gateway's CPU at 700 messages/s when written after every
/// batch). The file is the rollback anchor checked at start; lagging by this much weakens
/// nothing that the lag after a crash did not already.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// Writes the newest committed checkpoint to the data directory, off the commit path:
/// its two fsyncs would otherwise add to every batch's latency. Only the newest matters,
/// so the batches of [`PUBLISH_EVERY`] coalesce into one write.
async fn publish(log: Arc<Log>, mut newest: watch::Receiver<Option<SignedCheckpoint>>) {
    while newest.changed().await.is_ok() {
        let checkpoint = newest.borrow_and_update().clone();
        write_published(&log, checkpoint).await;
        tokio::time::sleep(PUBLISH_EVERY).await;
    }
    // The writer has stopped: the last checkpoint, if the pause above skipped it.
    let last = newest.borrow().clone();
    write_published(&log, last).await;
}

async fn write_published(log: &Arc<Log>, checkpoint: Option<SignedCheckpoint>) {
    let Some(checkpoint) = checkpoint else {
        return;
    };
    let log = log.clone();
    let written = tokio::task::spawn_blocking(move || log.publish(&checkpoint)).await;
    match written {
        Ok(Ok(())) => {}
        // Committed and signed already; the file lags until the next publish or restart.
        Ok(Err(e)) => tracing::error!(error = %e, "cannot publish checkpoint file"),
        Err(e) => tracing::error!(error = %e, "checkpoint publisher failed"),
    }
}

async fn run(
    store: Store,
    log: Arc<Log>,
    mut rx: mpsc::Receiver<Request>,
    published: watch::Sender<Option<SignedCheckpoint>>,
    linger: Duration,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = Batch::default();
        batch.push(first);
        batch.take_queued(&mut rx);
        let deadline = tokio::time::Instant::now() + linger;
        while batch.deferrable() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(next)) => {
                    batch.push(next);
                    batch.take_queued(&mut rx);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let committed = commit_batch(&store, &log, batch.requests).await;
        metrics::histogram!("bote_evidence_commit_seconds").record(started.elapsed().as_secs_f64());
        if let Some(checkpoint) = committed {
            published.send_replace(Some(checkpoint));
        }
    }
}

/// The requests of the next transaction.
#[derive(Default)]
struct Batch {
    requests: Vec<Request>,
    records: usize,
}

impl Batch {
    fn push(&mut self, request: Request) {
        self.records += request.job.sealed.len();
        self.requests.push(request);
    }

    /// Adds whatever is queued already, up to [`MAX_BATCH`] records.
    fn take_queued(&mut self, rx: &mut mpsc::Receiver<Request>) {
        while self.records < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => self.push(next),
                Err(_) => break,
            }
        }
    }

    /// Whether the batch may wait for company: only deferrable requests, and room left.
    fn deferrable(&self) -> bool {
        self.records < MAX_BATCH && self.requests.iter().all(|r| r.deferrable)
    }
}

/// Commits one batch and answers every request in it, whatever happens; returns the new
/// checkpoint if the batch committed.
async fn commit_batch(store: &Store, log: &Log, batch: Vec<Request>) -> Option<SignedCheckpoint> {
    let mut replies: Vec<Option<Reply>> = Vec::with_capacity(batch.len());
    let mut jobs = Vec::with_capacity(batch.len());
    for request in batch {
        replies.push(Some(request.reply));
        jobs.push(request.job);
    }
    // Optimistically without savepoints (two statements less per request); only if some
    // request's work fails is the batch redone with each request isolated.
    let mut outcome = attempt(store, log, &jobs, &mut replies, false).await;
    if matches!(outcome, Err(BatchError::WorkFailed)) {
        outcome = attempt(store, log, &jobs, &mut replies, true).await;
    }
    match outcome {
        Ok((accepted, indexes, checkpoint)) => {
            metrics::counter!("bote_evidence_records_total").increment(indexes.len() as u64);
            metrics::histogram!("bote_evidence_batch_records").record(indexes.len() as f64);
            let mut rest = indexes.as_slice();
            for (position, count) in accepted {
                let (mine, tail) = rest.split_at(count);
                rest = tail;
                if let Some(reply) = replies[position].take() {
                    let _ = reply.send(Ok(Done {
                        log_indexes: mine.to_vec(),
                        checkpoint: checkpoint.clone(),
                    }));
                }
            }
            checkpoint
        }
        Err(e) => {
            tracing::error!(error = %e, "evidence batch rolled back");
            let answer = match e {
                BatchError::Evidence(e) => WriterError::Commit(Arc::new(e)),
                // An isolated retry answers failing work itself and never reports it.
                BatchError::Panicked | BatchError::WorkFailed => WriterError::Panicked,
            };
            for reply in replies.iter_mut().filter_map(Option::take) {
                let _ = reply.send(Err(answer.clone()));
            }
            None
        }
    }
}

type Outcome = Result<(Vec<(usize, usize)>, Vec<u64>, Option<SignedCheckpoint>), BatchError>;

/// One try at the batch transaction; a panicking Work closure must not take the writer
/// down with it.
async fn attempt(
    store: &Store,
    log: &Log,
    jobs: &[Job],
    replies: &mut [Option<Reply>],
    isolate: bool,
) -> Outcome {
    std::panic::AssertUnwindSafe(run_batch(store, log, jobs, replies, isolate))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(BatchError::Panicked))
}

/// Why a batch as a whole did not commit.
#[derive(Debug, thiserror::Error)]
enum BatchError {
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    #[error("a request's work panicked")]
    Panicked,
    #[error("a request's work failed; retrying the batch with each request isolated")]
    WorkFailed,
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        Self::Evidence(EvidenceError::from(e))
    }
}

impl From<StoreError> for BatchError {
    fn from(e: StoreError) -> Self {
        Self::Evidence(EvidenceError::from(e))
    }
}

/// The transaction of one batch. With `isolate`, each request's work (and job end) runs
/// under its own savepoint, and requests whose work fails are answered here and dropped
/// from the batch; without, any failing work aborts the whole attempt
/// ([`BatchError::WorkFailed`]), and the job ends of all requests are written together.
/// Returns (position, record count) of the accepted requests, their indexes and the
/// checkpoint.
async fn run_batch(
    store: &Store,
    log: &Log,
    jobs: &[Job],
    replies: &mut [Option<Reply>],
    isolate: bool,
) -> Outcome {
    let mut tx = store.begin().await?;
    // Take the sequencer lock before any work: one lock order for every writer (no
    // deadlocks on PostgreSQL), and on SQLite the first statement is a write, so a busy
    // database is waited for instead of failing the upgrade from a read snapshot.
    let locked = log.lock(&mut tx).await.map_err(EvidenceError::from)?;
    let mut accepted = Vec::with_capacity(jobs.len());
    let mut sealed: Vec<&SignedRecord> = Vec::new();
    for (position, job) in jobs.iter().enumerate() {
        if !isolate {
            if job.run_work(&mut tx).await.is_err() {
                tx.rollback().await?;
                return Err(BatchError::WorkFailed);
            }
        } else if job.work.is_some() || job.end.is_some() {
            let mut savepoint = tx.begin().await?;
            let done = match job.run_work(&mut savepoint).await {
                Ok(()) => job.run_end(&mut savepoint).await,
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                savepoint.rollback().await?;
                if let Some(reply) = replies[position].take() {
                    let _ = reply.send(Err(WriterError::Work(Arc::new(e))));
                }
                continue;
            }
            savepoint.commit().await?;
        }
        accepted.push((position, job.sealed.len()));
        sealed.extend(job.sealed.iter());
    }
    if !isolate {
        let ends: Vec<JobEnd> = jobs.iter().filter_map(|j| j.end.clone()).collect();
        // A lost lease or a failing statement: the isolated retry finds out whose.
        if !ends.is_empty() && !matches!(finish_all(&mut tx, &ends).await, Ok(true)) {
            tx.rollback().await?;
            return Err(BatchError::WorkFailed);
        }
    }
    // A batch of work alone (claims) leaves the log as it is: no empty checkpoint.
    let (indexes, checkpoint) = if sealed.is_empty() {
        (Vec::new(), None)
    } else {
        let (indexes, appended) = record_in_tx(&mut tx, log, locked, &sealed).await?;
        (indexes, Some(appended.checkpoint))
    };
    tx.commit().await?;
    Ok((accepted, indexes, checkpoint))
}

impl Job {
    fn new(sealed: Vec<SignedRecord>, work: Option<Work>) -> Self {
        Self {
            sealed,
            work,
            end: None,
        }
    }

    async fn run_work(&self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        match &self.work {
            Some(work) => work(conn).await,
            None => Ok(()),
        }
    }

    /// This request's job end alone.
    async fn run_end(&self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        match &self.end {
            Some(end) if !finish_all(conn, std::slice::from_ref(end)).await? => {
                Err(StoreError::Conflict("the job's lease was lost"))
            }
            _ => Ok(()),
        }
    }
}
