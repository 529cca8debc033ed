//! The outbound relay worker (spec §3.1, DESIGN-NOTES §4): sends the PGP/MIME messages
//! queued for external offices to their own mail servers, and records what happened.
//!
//! A job is claimed by lease (a conditional update, so two workers never hold one job),
//! sent with lettre under the mailbox's TLS mode (`required`: verified against the web roots
//! and `tls.relay_ca`; `opportunistic`; `none`), and then, in one transaction with its
//! evidence: RelayToNonERDS on a 250 (remote host, TLS mode, the exact reply), or
//! RelayToNonERDSFailure on a permanent refusal (RB07) or after the expiry (RD03). Temporary
//! failures wait with exponential backoff and jitter.
//!
//! SMTP cannot give exactly-once: a crash between the remote 250 and the local commit sends
//! the message again after the lease expires (the Message-ID is stable, so the office can
//! de-duplicate); `bote_relay_resends_total` counts claims of expired leases.

mod connections;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::extension::ClientId;
use sqlx::AnyConnection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::accounts::Actor;
use crate::accounts::Relay;
use crate::clock::now_ms;
use crate::evidence::{
    self, Details, Event, EvidenceRecord, ReasonCode, StoredEvidence, Timestamp,
};
use crate::gateway::Gateway;
use crate::store::queue::{self as repo, Claimed};
use crate::store::{StoreError, audit};
use connections::END_OF_DATA;

/// How often the queue is looked at when idle.
const POLL: Duration = Duration::from_millis(200);
/// Jobs one worker holds at once per SMTP session it may hold (`queue.relay_sessions`):
/// jobs wait for a session, talk, or wait for their outcome's commit. Each claim is a
/// round of the evidence writer (~10 ms under load); when a worker claimed no more jobs
/// than it had free sessions, claims of ~16 jobs capped relaying at ~1,300 messages/s here
/// while intake accepted ~1,900. Only a job in a session holds its message in memory.
const JOBS_PER_SESSION: usize = 4;
/// How often the queue gauges are refreshed.
const GAUGES: Duration = Duration::from_secs(1);
/// One SMTP conversation's time limit, apart from the time its content takes to travel
/// ([`connections::attempt_limit`]): shutdown's drain waits this long for an attempt.
pub(crate) const SMTP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a relay outcome's commit is tried, and the first wait between tries (doubled
/// after each): the office has the message already, and an outcome left unrecorded would
/// send it again once the lease runs out.
const OUTCOME_TRIES: u32 = 5;
const OUTCOME_RETRY: Duration = Duration::from_millis(200);
/// What sending a payload holds at its peak, per stored octet: the stored payload and the
/// text made from it (its armour is 4/3 of the binary), then that text and lettre's copy
/// of it. Reserved in the memory budget the intake shares, so 32 sessions relaying 20 MiB
/// messages wait for room instead of holding 2 GB beside it.
pub const RELAY_FOOTPRINT: u64 = 3;

/// Why a job's outcome could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Evidence.
    #[error(transparent)]
    Evidence(#[from] evidence::EvidenceError),
    /// The evidence commit.
    #[error(transparent)]
    Writer(#[from] evidence::WriterError),
    /// The job's mailbox has no relay, or its message no chain.
    #[error("job {0}: {1}")]
    Job(i64, String),
}

impl QueueError {
    /// Whether trying again may succeed: not for a lost lease, a job that cannot be
    /// recorded, or a writer that has stopped.
    fn may_pass(&self) -> bool {
        use evidence::WriterError;
        match self {
            Self::Job(..) | Self::Store(StoreError::Conflict(_)) => false,
            Self::Writer(WriterError::Work(e)) => !matches!(**e, StoreError::Conflict(_)),
            // A panic in another request's work fails the whole batch, this outcome with it.
            Self::Writer(w) => matches!(w, WriterError::Commit(_) | WriterError::Panicked),
            Self::Store(_) | Self::Evidence(_) => true,
        }
    }
}

impl From<sqlx::Error> for QueueError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Query(e))
    }
}

/// A worker's places: jobs in flight, of which at most `queue.relay_sessions` in an SMTP
/// session. Only the worker's claim loop takes places.
struct Places {
    sessions: Arc<Semaphore>,
    in_flight: Arc<Semaphore>,
    size: usize,
    /// Jobs that were still waiting for a session when the worker stopped.
    unsent: Arc<Mutex<Vec<i64>>>,
}

/// One job's place.
struct Place {
    sessions: Arc<Semaphore>,
    unsent: Arc<Mutex<Vec<i64>>>,
    _in_flight: OwnedSemaphorePermit,
}

impl Places {
    fn new(sessions: usize) -> Self {
        let size = sessions * JOBS_PER_SESSION;
        Self {
            sessions: Arc::new(Semaphore::new(sessions)),
            in_flight: Arc::new(Semaphore::new(size)),
            size,
            unsent: Arc::default(),
        }
    }

    /// Waits for a place (`None`: the places were closed, which nothing does).
    async fn take(&self) -> Option<Place> {
        let in_flight = self.in_flight.clone().acquire_owned().await.ok()?;
        Some(Place {
            sessions: self.sessions.clone(),
            unsent: self.unsent.clone(),
            _in_flight: in_flight,
        })
    }

    /// Places free now.
    fn free(&self) -> usize {
        self.in_flight.available_permits()
    }

    /// Waits until every job has given its place back; returns the jobs that were not
    /// sent because the worker stopped.
    async fn all_back(&self) -> Vec<i64> {
        let all = u32::try_from(self.size).unwrap_or(u32::MAX);
        let _ = self.in_flight.acquire_many(all).await;
        std::mem::take(&mut *self.unsent.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Place {
    /// This job was not sent: the worker stopped while it waited for a session.
    fn unsent(&self, id: i64) {
        self.unsent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id);
    }
}

/// What one attempt came to.
#[derive(Debug)]
enum Attempt {
    Delivered(String),
    Refused(String),
    Later(String),
    /// Not sent: nothing about it could be sent by trying again (a stored message that no
    /// longer reads, an envelope that does not parse).
    Unsendable(String),
}

/// Why a job waits while its office has no mail server to relay to: the operator may give
/// it one (`bote mailbox add --office … --relay`) before the job expires.
const NO_RELAY: &str = "not sent: the office's mailbox has no mail server to relay to";

/// The note of the failure `bote queue delete` records for a job it cancels.
const CANCELLED: &str = "cancelled by the operator (bote queue delete); not sent";

/// The relay worker of one gateway process.
#[derive(Clone)]
pub struct RelayWorker {
    gateway: Gateway,
    owner: String,
    relay_ca: Vec<Vec<u8>>,
    expiry: Duration,
    retry_base: Duration,
    lease: Duration,
    sessions: Arc<connections::Sessions>,
    /// Jobs this worker is attempting now.
    attempting: Arc<Mutex<HashSet<i64>>>,
}

/// Marks a job as being attempted by this worker until dropped.
struct Attempting {
    ids: Arc<Mutex<HashSet<i64>>>,
    id: i64,
}

impl Attempting {
    fn new(ids: &Arc<Mutex<HashSet<i64>>>, id: i64) -> Self {
        ids.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id);
        Self {
            ids: ids.clone(),
            id,
        }
    }
}

impl Drop for Attempting {
    fn drop(&mut self) {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl std::fmt::Debug for RelayWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RelayWorker({})", self.owner)
    }
}

impl RelayWorker {
    /// A worker for `gateway`, with its relay CA (`tls.relay_ca`) and queue settings.
    pub fn new(gateway: Gateway) -> Self {
        let config = gateway.config();
        let relay_ca = config
            .tls
            .relay_ca
            .get()
            .and_then(|p| std::fs::read(p).ok())
            .into_iter()
            .collect();
        Self {
            owner: format!("worker-{}", crate::pipeline::new_id()),
            relay_ca,
            expiry: Duration::from_secs(config.queue.relay_expiry_secs),
            retry_base: Duration::from_millis(config.queue.retry_base_ms),
            lease: Duration::from_secs(config.queue.lease_secs.max(1)),
            sessions: Arc::new(connections::Sessions::new(
                config.queue.relay_sessions as usize,
            )),
            attempting: Arc::default(),
            gateway,
        }
    }

    /// Sends due jobs until `shutdown`; attempts in flight finish first.
    pub async fn run(self, shutdown: CancellationToken) {
        let places = Places::new(self.gateway.config().queue.relay_sessions as usize);
        let mut gauges_at: Option<std::time::Instant> = None;
        loop {
            if gauges_at.is_none_or(|at| at.elapsed() >= GAUGES) {
                gauges_at = Some(std::time::Instant::now());
                self.update_gauges().await;
                self.sessions.close_idle();
            }
            // Wait for a free place first: claiming nothing while every place is taken and
            // then sleeping for the poll interval would idle the worker.
            let first = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                place = places.take() => place,
            };
            let Some(first) = first else {
                return;
            };
            if shutdown.is_cancelled() {
                break;
            }
            let claimed = match self.claim_due(places.free() + 1).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "relay queue unreadable");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                drop(first);
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            let mut first = Some(first);
            for job in claimed {
                // This loop alone takes places, and claimed no more than were free: the
                // wait below is never long, so no claimed job waits unleased.
                let place = match first.take() {
                    Some(p) => p,
                    None => match places.take().await {
                        Some(p) => p,
                        None => return,
                    },
                };
                let (worker, shutdown) = (self.clone(), shutdown.clone());
                let attempting = Attempting::new(&self.attempting, job.id);
                tokio::spawn(async move {
                    let _attempting = attempting;
                    let id = job.id;
                    if let Err(e) = worker.attempt(job, place, shutdown).await {
                        tracing::error!(job = id, error = %e, "relay outcome not recorded");
                    }
                });
            }
            if shutdown.is_cancelled() {
                break;
            }
        }
        // Let attempts in flight finish (their leases would hand them on anyway), then put
        // the jobs that never got a session back in the queue, in one statement.
        let unsent = places.all_back().await;
        if let Err(e) = self.give_back(&unsent).await {
            tracing::warn!(error = %e, jobs = unsent.len(), "unsent relay jobs not given back; they wait for their leases");
        }
    }

    /// Queue depth and the age of its oldest job, for the metrics.
    async fn update_gauges(&self) {
        let depth = match self.gateway.store().pool().acquire().await {
            Ok(mut conn) => repo::depth(&mut conn).await,
            Err(e) => Err(e.into()),
        };
        match depth {
            Ok((jobs, oldest)) => {
                #[allow(clippy::cast_precision_loss)] // a gauge
                let age = oldest.map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0);
                #[allow(clippy::cast_precision_loss)]
                metrics::gauge!("bote_queue_depth").set(jobs as f64);
                metrics::gauge!("bote_queue_oldest_job_age_seconds").set(age);
                #[allow(clippy::cast_precision_loss)]
                metrics::gauge!("bote_relay_idle_sessions").set(self.sessions.idle() as f64);
            }
            Err(e) => tracing::warn!(error = %e, "queue depth unreadable"),
        }
    }

    /// Claims up to `room` due jobs. The claim is work in the evidence writer's next
    /// transaction: on SQLite a claim of its own would wait for the database lock (sleeping
    /// in SQLite's busy handler while the writer commits) and cost an fsync per claim;
    /// inside a batch it is one UPDATE. A read first keeps an idle queue from writing.
    async fn claim_due(&self, room: usize) -> Result<Vec<Claimed>, QueueError> {
        let now = now_ms();
        let limit = i64::try_from(room).unwrap_or(1);
        {
            let mut conn = self.gateway.store().pool().acquire().await?;
            if room == 0 || !repo::any_due(&mut conn, now).await? {
                return Ok(Vec::new());
            }
        }
        let lease_until = now + i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        let taken: Arc<Mutex<Vec<(i64, bool)>>> = Arc::default();
        let (owner, out) = (self.owner.clone(), taken.clone());
        let work: evidence::Work = Box::new(move |conn: &mut AnyConnection| {
            let (owner, out) = (owner.clone(), out.clone());
            Box::pin(async move {
                let claims = repo::claim_due(conn, &owner, now, lease_until, limit).await?;
                // A batch that is redone runs this again: the last run is what committed.
                *out.lock().unwrap_or_else(PoisonError::into_inner) = claims;
                Ok(())
            })
        });
        self.gateway.writer().run(work).await?;
        let claims = std::mem::take(&mut *taken.lock().unwrap_or_else(PoisonError::into_inner));
        let mut conn = self.gateway.store().pool().acquire().await?;
        let mut jobs = repo::claimed(&mut conn, &self.owner, &claims).await?;
        // A lease that lapsed while this worker's own attempt went on (its renewals failed:
        // the database was away) comes back as an orphan; the claim renewed it, and the
        // attempt in flight keeps it. A second attempt would send the message twice.
        jobs.retain(|job| {
            let own = self
                .attempting
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&job.id);
            if own {
                tracing::warn!(
                    job = job.id,
                    "lease lapsed during this worker's attempt; the attempt goes on"
                );
            }
            !own
        });
        attach_chains(&mut conn, &mut jobs).await?;
        for job in jobs.iter().filter(|j| j.orphan) {
            // Its worker died mid-attempt: the office may get it twice.
            metrics::counter!("bote_relay_resends_total").increment(1);
            tracing::warn!(job = job.id, "taking over a job whose worker died");
        }
        if jobs.len() < claims.len() {
            tracing::error!(
                claimed = claims.len(),
                readable = jobs.len(),
                "claimed relay jobs vanished or lost their mailbox; their leases will expire"
            );
        }
        Ok(jobs)
    }

    /// One attempt at one job, and its recorded outcome, holding the job's lease until the
    /// outcome is committed: an SMTP conversation ([`connections::attempt_limit`]) may outlast
    /// `queue.lease_secs`, and a job whose lease ran out would be claimed again (by any
    /// worker, this one included) and sent a second time while still being sent.
    async fn attempt(
        &self,
        job: Claimed,
        place: Place,
        shutdown: CancellationToken,
    ) -> Result<(), QueueError> {
        let id = job.id;
        tokio::select! {
            done = self.attempt_leased(job, place, shutdown) => done,
            never = self.keep_lease(id) => match never {},
        }
    }

    /// Renews the lease of job `id` every third of the lease, until dropped.
    async fn keep_lease(&self, id: i64) -> std::convert::Infallible {
        let every = (self.lease / 3).max(Duration::from_millis(50));
        let lease = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        loop {
            tokio::time::sleep(every).await;
            let renewed = match self.gateway.store().pool().acquire().await {
                Ok(mut conn) => {
                    repo::renew(&mut conn, id, &self.owner, now_ms().saturating_add(lease)).await
                }
                Err(e) => Err(e.into()),
            };
            match renewed {
                Ok(true) => {}
                Ok(false) => tracing::warn!(job = id, "relay job's lease lost during its attempt"),
                Err(e) => tracing::warn!(job = id, error = %e, "relay job's lease not renewed"),
            }
        }
    }

    /// Waits for a session, sends, and records the outcome. A job still waiting for a
    /// session when the gateway stops, or whose message cannot be read, is handed back
    /// unsent: left to its lease it would wait `queue.lease_secs` and then count as a
    /// resend, and no attempt was made that should count or leave evidence.
    async fn attempt_leased(
        &self,
        job: Claimed,
        place: Place,
        shutdown: CancellationToken,
    ) -> Result<(), QueueError> {
        let Some(relay) = job.relay.clone() else {
            // Handed on through backoff to its expiry, and its evidence then, instead of
            // waiting for the lease and being taken over as an orphan, again and again.
            return self
                .end(&job, None, (Attempt::Later(NO_RELAY.into()), false))
                .await;
        };
        let sent = {
            // The session and the message are held until the server has answered, not
            // through the commit of the outcome.
            let session = tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    place.unsent(job.id);
                    return Ok(());
                }
                session = place.sessions.acquire() => session,
            };
            let Ok(_session) = session else {
                return Err(QueueError::Job(job.id, "the worker stopped".into()));
            };
            let footprint = u64::try_from(job.payload_size)
                .unwrap_or(0)
                .saturating_mul(RELAY_FOOTPRINT);
            let Ok(_room) = self.gateway.reserve_memory(footprint).await else {
                tracing::warn!(job = job.id, "memory budget in use; job handed back");
                return self.give_back(&[job.id]).await;
            };
            match self.payload(&job).await {
                Ok(payload) => self.send(&relay, &job, payload).await,
                Err(QueueError::Job(_, why)) => (Attempt::Unsendable(why), false),
                Err(e) if e.may_pass() => {
                    tracing::warn!(job = job.id, error = %e, "relay payload unreadable; job handed back");
                    return self.give_back(&[job.id]).await;
                }
                Err(e) => return Err(e),
            }
        };
        self.end(&job, Some(&relay), sent).await
    }

    /// Records what an attempt at `job` (to `relay`, if it has one) came to: evidence and
    /// the job's end, or its next due time.
    async fn end(
        &self,
        job: &Claimed,
        relay: Option<&Relay>,
        (outcome, encrypted): (Attempt, bool),
    ) -> Result<(), QueueError> {
        let expired =
            now_ms() - job.created_at >= i64::try_from(self.expiry.as_millis()).unwrap_or(i64::MAX);
        let remote = relay.map_or_else(|| "none".to_owned(), |r| format!("{}:{}", r.host, r.port));
        // What happened and the mailbox's rule: `opportunistic` alone would not say whether
        // the message crossed the network encrypted. (lettre does not expose the version.)
        let tls = format!(
            "{}; {}",
            if encrypted { "TLS" } else { "plain" },
            relay.map_or("none", |r| r.tls.as_str())
        );
        match outcome {
            Attempt::Delivered(reply) => {
                metrics::counter!("bote_relay_deliveries_total", "outcome" => "delivered")
                    .increment(1);
                self.record(
                    job,
                    Event::RelayToNonERDS,
                    ReasonCode::Accepted,
                    remote,
                    tls,
                    reply,
                    "done",
                )
                .await
            }
            Attempt::Refused(reply) => {
                metrics::counter!("bote_relay_deliveries_total", "outcome" => "refused")
                    .increment(1);
                self.record(
                    job,
                    Event::RelayToNonERDSFailure,
                    ReasonCode::RefusedByRecipientSystem,
                    remote,
                    tls,
                    reply,
                    "failed",
                )
                .await
            }
            Attempt::Unsendable(why) => {
                metrics::counter!("bote_relay_deliveries_total", "outcome" => "unsendable")
                    .increment(1);
                tracing::error!(job = job.id, %why, "relay job cannot be sent; failed");
                self.record(
                    job,
                    Event::RelayToNonERDSFailure,
                    ReasonCode::InvalidFormat,
                    remote,
                    tls,
                    why,
                    "failed",
                )
                .await
            }
            Attempt::Later(reason) if expired => {
                metrics::counter!("bote_relay_deliveries_total", "outcome" => "expired")
                    .increment(1);
                self.record(
                    job,
                    Event::RelayToNonERDSFailure,
                    ReasonCode::Expired,
                    remote,
                    tls,
                    reason,
                    "failed",
                )
                .await
            }
            Attempt::Later(reason) => {
                metrics::counter!("bote_relay_deliveries_total", "outcome" => "deferred")
                    .increment(1);
                let now = now_ms();
                let due = now + self.backoff(job.attempts);
                let warn_from =
                    job.created_at + i64::try_from(self.expiry.as_millis() / 2).unwrap_or(i64::MAX);
                let mut conn = self.gateway.store().pool().acquire().await?;
                let warned = repo::retry_later(
                    &mut conn,
                    job.id,
                    &self.owner,
                    due,
                    &reason,
                    (now, warn_from),
                )
                .await?;
                if warned {
                    // The sender sees the recipient as `delayed` in their sent folder.
                    metrics::counter!("bote_relay_delay_warnings_total").increment(1);
                    tracing::warn!(job = job.id, %reason, "relay delayed: sender warned");
                } else {
                    tracing::info!(job = job.id, %reason, "relay deferred");
                }
                Ok(())
            }
        }
    }

    /// Exponential backoff from the base, at most an hour, with ±20 % jitter.
    fn backoff(&self, attempts: i64) -> i64 {
        let base = i64::try_from(self.retry_base.as_millis()).unwrap_or(60_000);
        let exp = base
            .saturating_mul(1 << attempts.clamp(0, 16))
            .min(3_600_000);
        let jitter = rand::random_range(-(exp / 5)..=(exp / 5));
        exp + jitter
    }

    /// Puts jobs this worker holds and has not sent back in the queue, due as they were.
    async fn give_back(&self, ids: &[i64]) -> Result<(), QueueError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.gateway.store().pool().acquire().await?;
        repo::give_back(&mut conn, ids, &self.owner).await?;
        Ok(())
    }

    /// The message of a job this worker holds, ready to send.
    async fn payload(&self, job: &Claimed) -> Result<Vec<u8>, QueueError> {
        let store = self.gateway.store();
        let job_size = (job.id, job.payload_size);
        let payload = repo::lookup_payload(store, job_size, &self.owner, now_ms()).await?;
        let Some(stored) = payload else {
            // No payload under this lease: the lease was lost, or (an invariant broken:
            // every job not done has its payload) the payload is gone, which no retry mends.
            let mut conn = store.pool().acquire().await?;
            return Err(
                if repo::holds_lease(&mut conn, job.id, &self.owner).await? {
                    QueueError::Job(job.id, "not sent: the stored message is missing".into())
                } else {
                    QueueError::Store(StoreError::Conflict(
                        "the job's lease was lost before it was sent",
                    ))
                },
            );
        };
        outgoing(stored)
            .map_err(|e| QueueError::Job(job.id, format!("not sent: the stored message: {e}")))
    }

    /// One SMTP attempt, and whether its session was encrypted (false if none was made).
    async fn send(&self, relay: &Relay, job: &Claimed, payload: Vec<u8>) -> (Attempt, bool) {
        let envelope = match (job.sender.parse(), job.recipient.parse()) {
            (Ok(from), Ok(to)) => match Envelope::new(Some(from), vec![to]) {
                Ok(e) => e,
                Err(e) => {
                    return (
                        Attempt::Unsendable(format!("not sent: envelope: {e}")),
                        false,
                    );
                }
            },
            _ => {
                let why = "not sent: the envelope addresses do not parse".into();
                return (Attempt::Unsendable(why), false);
            }
        };
        let hello = ClientId::Domain(self.gateway.config().primary_domain().to_owned());
        let started = std::time::Instant::now();
        let limit = connections::attempt_limit(SMTP_TIMEOUT, payload.len());
        let attempt = async {
            let mut session = match self.sessions.take(relay, &hello, &self.relay_ca).await {
                Ok(s) => s,
                Err(e) => return (Attempt::Later(e.to_string()), false),
            };
            let encrypted = session.is_encrypted();
            let sent = connections::send(&mut session, &envelope, payload).await;
            self.sessions.put_back(relay, session);
            let attempt = match sent {
                Ok(response) => Attempt::Delivered(format!(
                    "{} {}",
                    response.code(),
                    response.message().collect::<Vec<_>>().join(" ")
                )),
                Err(e) if e.is_permanent() => Attempt::Refused(e.to_string()),
                Err(e) => Attempt::Later(e.to_string()),
            };
            (attempt, encrypted)
        };
        let done = tokio::time::timeout(limit, attempt)
            .await
            .unwrap_or_else(|_| {
                let why = format!("not done within {} s", limit.as_secs());
                (Attempt::Later(why), false)
            });
        metrics::histogram!("bote_relay_attempt_seconds").record(started.elapsed().as_secs_f64());
        done
    }

    /// Records the relay evidence and ends the job, in one transaction; a commit that fails
    /// for a reason that may pass (the database busy or away) is tried again while the
    /// job's lease is kept.
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        job: &Claimed,
        event: Event,
        reason: ReasonCode,
        remote: String,
        tls: String,
        reply: String,
        state: &'static str,
    ) -> Result<(), QueueError> {
        let details = Details {
            remote_host: Some(remote),
            tls_version: Some(tls),
            reply: Some(reply.chars().take(1000).collect()),
            ..Details::default()
        };
        let end = repo::JobEnd {
            id: job.id,
            owner: self.owner.clone(),
            state,
            error: (state == "failed").then(|| reason.to_string()),
        };
        let record = successor(&self.gateway, &job.chain, (event, reason, details))
            .map_err(|_| QueueError::Job(job.id, "no evidence chain to continue".into()))?;
        let signed =
            evidence::sign_async(self.gateway.keys().evidence.clone(), vec![record]).await?;
        let (mut wait, mut tries) = (OUTCOME_RETRY, 1);
        loop {
            let writer = self.gateway.writer();
            let committed = writer
                .commit_relay_outcome(signed.clone(), end.clone())
                .await;
            match committed.map_err(QueueError::from) {
                Err(e) if tries < OUTCOME_TRIES && e.may_pass() => {
                    metrics::counter!("bote_relay_outcome_retries_total").increment(1);
                    tracing::warn!(job = job.id, error = %e, "relay outcome not committed; trying again");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    tries += 1;
                }
                done => return done,
            }
        }
    }
}

/// What `bote queue delete` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// A job waiting to be sent: cancelled, and its recipient's chain ends in
    /// RelayToNonERDSFailure (RA05, "cancelled by the operator"), which the sender sees.
    Cancelled,
    /// A finished job: its row and payload are gone; its chain ends in its outcome.
    Finished,
}

/// Removes job `id` for the operator (`bote queue delete`); `None` if there is no such job
/// or it is being sent. A job not yet sent ends with evidence, in the transaction that
/// removes it: a message must not stay "being relayed" in its sender's view and its
/// proof, with no record of why it never went.
/// Audited as `queue.delete` by `actor`.
pub async fn remove(
    gateway: &Gateway,
    id: i64,
    actor: &Actor,
) -> Result<Option<Removed>, QueueError> {
    let mut conn = gateway.store().pool().acquire().await?;
    let Some(job) = repo::find(&mut conn, id).await? else {
        return Ok(None);
    };
    drop(conn);
    match job.state.as_str() {
        "done" | "failed" => remove_finished(gateway.store(), id, actor).await,
        "queued" => {
            let details = Details {
                note: Some(CANCELLED.into()),
                ..Details::default()
            };
            let logged = (actor.clone(), deletion(id, &job, true));
            let work: evidence::Work = Box::new(move |conn: &mut AnyConnection| {
                let (actor, (target, details)) = logged.clone();
                Box::pin(async move {
                    repo::delete_queued(conn, id).await?;
                    audit::record(conn, &actor, "queue.delete", &target, details, now_ms()).await
                })
            });
            let fact = (Event::RelayToNonERDSFailure, ReasonCode::Policy, details);
            match record_event(gateway, &job.gateway_id, &job.recipient, fact, Some(work)).await {
                Ok(()) => Ok(Some(Removed::Cancelled)),
                // A worker claimed it meanwhile: nothing was written.
                Err(QueueError::Writer(evidence::WriterError::Work(e)))
                    if matches!(*e, StoreError::Conflict(_)) =>
                {
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        }
        _ => Ok(None),
    }
}

/// Removes job `id` if it is finished (its chain ends in its outcome: no evidence to
/// write, so no keys needed), audited as `queue.delete` by `actor`; `None` if there is no
/// such job.
pub async fn remove_finished(
    store: &crate::store::Store,
    id: i64,
    actor: &Actor,
) -> Result<Option<Removed>, QueueError> {
    let mut tx = store.begin().await?;
    let Some(job) = repo::find(&mut tx, id).await? else {
        return Ok(None);
    };
    if !repo::delete_finished(&mut tx, id).await? {
        return Ok(None);
    }
    let (target, details) = deletion(id, &job, false);
    audit::record(&mut tx, actor, "queue.delete", &target, details, now_ms()).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(Some(Removed::Finished))
}

/// The audit target and details of deleting job `id`.
fn deletion(id: i64, job: &repo::Found, cancelled: bool) -> (String, serde_json::Value) {
    let details = serde_json::json!({
        "gateway_id": job.gateway_id,
        "recipient": job.recipient,
        "state": job.state,
        "cancelled": cancelled,
    });
    (format!("job {id}"), details)
}

/// Reads the evidence chains of claimed jobs, in one query for all of them.
async fn attach_chains(conn: &mut AnyConnection, jobs: &mut [Claimed]) -> Result<(), StoreError> {
    let key = |job: &Claimed| {
        crate::address::EmailAddress::parse(&job.recipient)
            .map_or_else(|_| job.recipient.clone(), |a| a.key())
    };
    let pairs: Vec<(String, String)> = jobs
        .iter()
        .map(|j| (j.gateway_id.clone(), key(j)))
        .collect();
    let records = crate::store::evidence::of_pairs(conn, &pairs).await?;
    for (job, (gateway_id, recipient)) in jobs.iter_mut().zip(&pairs) {
        job.chain = records
            .iter()
            .filter(|e| {
                e.record.message.gateway_id == *gateway_id && e.record.recipient.key() == *recipient
            })
            .cloned()
            .collect();
    }
    Ok(())
}

/// Continues the chain of (`gateway_id`, `recipient`) with one relay event, committed with
/// `work` (if any) in one transaction.
pub async fn record_event(
    gateway: &Gateway,
    gateway_id: &str,
    recipient: &str,
    fact: (Event, ReasonCode, Details),
    work: Option<evidence::Work>,
) -> Result<(), QueueError> {
    let mut conn = gateway.store().pool().acquire().await?;
    let address = crate::address::EmailAddress::parse(recipient)
        .map_err(|e| QueueError::Job(0, e.to_string()))?;
    let chain = evidence::query::chain(&mut conn, gateway_id, Some(&address))
        .await
        .map_err(|e| QueueError::Job(0, e.to_string()))?;
    drop(conn);
    record_after(gateway, &chain, fact, work).await
}

/// Continues `chain` (one recipient's records of one message, oldest first) with one relay
/// event, committed with `work` (if any) in one transaction, if the chain has not grown
/// meanwhile: two records continuing one head would fork the chain, and a bundle of it
/// would not verify (two DSNs for one message arriving at once did that). A chain that
/// grew is a [`StoreError::Conflict`] (as [`evidence::WriterError::Work`]), nothing written.
async fn record_after(
    gateway: &Gateway,
    chain: &[StoredEvidence],
    (event, reason, details): (Event, ReasonCode, Details),
    work: Option<evidence::Work>,
) -> Result<(), QueueError> {
    let record = successor(gateway, chain, (event, reason, details))?;
    let (gateway_id, recipient) = (record.message.gateway_id.clone(), record.recipient.key());
    let head = chain
        .iter()
        .map(|e| i64::try_from(e.log_index).unwrap_or(i64::MAX))
        .max();
    let signed = evidence::sign_async(gateway.keys().evidence.clone(), vec![record]).await?;
    let work = work.map(Arc::new);
    let guarded: evidence::Work = Box::new(move |conn: &mut AnyConnection| {
        let (gateway_id, recipient, work) = (gateway_id.clone(), recipient.clone(), work.clone());
        Box::pin(async move {
            let now = crate::store::evidence::chain_head(conn, &gateway_id, &recipient).await?;
            if now != head {
                return Err(StoreError::Conflict("the evidence chain grew meanwhile"));
            }
            match work {
                Some(work) => work(conn).await,
                None => Ok(()),
            }
        })
    });
    gateway
        .writer()
        .commit_deferred(signed, Some(guarded))
        .await?;
    Ok(())
}

/// The record that continues `chain` with one relay event, now.
fn successor(
    gateway: &Gateway,
    chain: &[StoredEvidence],
    (event, reason, details): (Event, ReasonCode, Details),
) -> Result<EvidenceRecord, QueueError> {
    EvidenceRecord::successor(
        chain,
        &gateway.keys().evidence.fingerprint(),
        event,
        reason,
        details,
        Timestamp(now_ms()),
    )
    .ok_or_else(|| QueueError::Job(0, "no evidence chain to continue".into()))
}

/// A delivery status notification (RFC 3464) from an office's server, for mail that
/// `sender` (a mailbox of this gateway) sent: each failed recipient of a message relayed to
/// it gets RelayToNonERDSFailure (RB07) with the reported status. Returns how many.
/// A server known as one office's (`reporter`, its mailbox id) speaks for that office
/// only: failures it reports for others are ignored. `None`: a server the operator trusts
/// by network, for any office.
pub async fn record_dsn(
    gateway: &Gateway,
    sender: &crate::address::EmailAddress,
    dsn: &crate::smtp::dsn::Dsn,
    reporter: Option<i64>,
) -> Result<usize, QueueError> {
    let mut conn = gateway.store().pool().acquire().await?;
    let Some(gateway_id) =
        crate::store::messages::message_with_id(&mut conn, &sender.key(), &dsn.message_id).await?
    else {
        return Ok(0);
    };
    let jobs = crate::store::messages::jobs_of(&mut conn, &gateway_id).await?;
    let mut recorded = 0;
    // One failure per relayed job at most, however often the DSN names its recipient:
    // jobs the office's server took (`done`) and that this reporter speaks for, whose
    // chain does not end in a failure already (a DSN sent twice records once).
    for job in jobs
        .iter()
        .filter(|j| j.state == "done" && reporter.is_none_or(|office| office == j.mailbox_id))
    {
        let Some(failed) = dsn
            .failed
            .iter()
            .find(|f| job.recipient.eq_ignore_ascii_case(&f.recipient))
        else {
            continue;
        };
        if failure_recorded(&mut conn, (job.id, &gateway_id, &job.recipient)).await? {
            continue;
        }
        let reply = format!(
            "DSN {}{}",
            failed.status,
            failed
                .diagnostic
                .as_ref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        );
        let reply: String = reply.chars().take(1000).collect();
        let details = Details {
            remote_host: dsn.reporting_mta.clone(),
            reply: Some(reply.clone()),
            note: Some("reported later by the recipient's mail server (RFC 3464)".into()),
            ..Details::default()
        };
        let id = job.id;
        let noted: evidence::Work = Box::new(move |conn: &mut AnyConnection| {
            let reply = reply.clone();
            Box::pin(async move { repo::note_reported_failure(conn, id, &reply).await })
        });
        let fact = (
            Event::RelayToNonERDSFailure,
            ReasonCode::RefusedByRecipientSystem,
            details,
        );
        match record_event(gateway, &gateway_id, &job.recipient, fact, Some(noted)).await {
            Ok(()) => recorded += 1,
            // The same report, arriving at the same time, was recorded by the other copy.
            Err(QueueError::Writer(evidence::WriterError::Work(e)))
                if matches!(*e, StoreError::Conflict(_)) =>
            {
                tracing::info!(job = id, "failure reported again at once; recorded once");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(recorded)
}

/// Whether the chain of job `id`'s `recipient` of message `gateway_id` ends in a relay
/// failure.
async fn failure_recorded(
    conn: &mut AnyConnection,
    (id, gateway_id, recipient): (i64, &str, &str),
) -> Result<bool, QueueError> {
    let fail = |e: String| QueueError::Job(id, e);
    let recipient =
        crate::address::EmailAddress::parse(recipient).map_err(|e| fail(e.to_string()))?;
    let chain = evidence::query::chain(conn, gateway_id, Some(&recipient))
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok(chain
        .last()
        .is_some_and(|e| e.record.event == Event::RelayToNonERDSFailure))
}

/// A stored payload as it goes out: one stored in parts gets its encrypted body armoured
/// in (`mime::pgp_mime_stored`); one stored whole (before that format) is sent as it is.
/// The text is made in one buffer with room for the end-of-data line, which
/// `connections::send` appends in place.
fn outgoing(stored: Vec<u8>) -> Result<Vec<u8>, String> {
    let Some([head, binary, tail]) =
        crate::message::mime::stored_pgp_mime_parts(&stored).map_err(|e| e.to_string())?
    else {
        return Ok(stored);
    };
    let armored = crate::crypto::message::armored_len(binary.len());
    let mut text = Vec::with_capacity(head.len() + armored + tail.len() + END_OF_DATA.len());
    text.extend_from_slice(head);
    crate::crypto::message::armor_into(binary, &mut text).map_err(|e| e.to_string())?;
    text.extend_from_slice(tail);
    Ok(text)
}
