//! Attestation of this gateway's checkpoints: its witnesses cosign each new checkpoint
//! (C2SP tlog-witness) and a time-stamping authority stamps it (RFC 3161). The results
//! are stored (`log_attestations`) and bundles are exported against them, so that neither
//! the time nor the uniqueness of the log rests on the gateway's word.
//!
//! At start-up [`Attestor::check_witnesses`] asks every witness for the checkpoint it last
//! cosigned: a witness that holds a newer one, or one that this log does not extend, means
//! the database was restored from an old backup or the log forked, and the gateway refuses
//! to start rather than sign a fork.
//!
//! Architecture invariant: rounds are serialised (one at a time per process); each
//! witness's last known size only grows; a cosignature line is stored only after it
//! verified with the configured witness key.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::{Log, LogError, SignedCheckpoint};
use crate::clock::now_ms;
use crate::config::Config;
use crate::outbound::HttpClient;
use crate::store::witness::{self as repo, Attestation};
use crate::store::{Store, StoreError};
use crate::timestamp;
use crate::witness::client::{self, SubmitError};
use crate::witness::service::checkpoint_text;
use crate::witness::{AddCheckpoint, WitnessKey, cosignatures};

/// Why attestation (or the start-up check) failed.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// A witness holds a newer checkpoint of this log than the database has.
    #[error(
        "witness {witness} has cosigned a checkpoint of size {witnessed} of this log, but the \
         database holds only {ours} entries: it was restored from an older backup or lost \
         commits. bote will not sign a checkpoint that forks from what witnesses have seen. \
         Restore a backup with at least {witnessed} entries (see deploy/README.md, \"Backup and \
         restore\")"
    )]
    Behind {
        /// The witness.
        witness: String,
        /// Its size.
        witnessed: u64,
        /// Ours.
        ours: u64,
    },
    /// A witness's checkpoint is not a prefix of this log.
    #[error(
        "witness {witness} has cosigned a checkpoint of size {witnessed} that this log does not \
         extend ({reason}): the log forked. Do not serve from this database; restore the one \
         the witness saw"
    )]
    Fork {
        /// The witness.
        witness: String,
        /// Its size.
        witnessed: u64,
        /// What it said.
        reason: String,
    },
    /// Too few witnesses confirmed the log at start-up.
    #[error(
        "only {confirmed} of the {quorum} witness confirmations required at start-up were \
         obtained ({failures}); bote does not start without them, as it could not tell a \
         restored backup from a current database. Check the witnesses (log.witnesses) or lower \
         log.witness_quorum"
    )]
    Unconfirmed {
        /// How many confirmed.
        confirmed: usize,
        /// How many must.
        quorum: usize,
        /// What the others said.
        failures: String,
    },
    /// The configured witnesses, TSA or client are unusable.
    #[error("log attestation: {0}")]
    Config(String),
    /// The log.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one witness said about a checkpoint.
#[derive(Debug)]
enum Outcome {
    /// Cosigned: the verified line.
    Cosigned(String),
    /// Holds a checkpoint this log does not extend, or a newer one.
    Alarm(AttestError),
    /// Could not be asked, or refused for another reason.
    Unavailable(String),
}

struct Witness {
    url: String,
    key: WitnessKey,
}

/// Obtains and stores attestations of the log's checkpoints. Cheap to clone.
#[derive(Clone)]
pub struct Attestor {
    inner: Arc<Inner>,
}

struct Inner {
    witnesses: Vec<Witness>,
    quorum: usize,
    tsa_url: Option<String>,
    tsa_pins: Vec<String>,
    interval: Duration,
    startup_wait: Duration,
    http: HttpClient,
    store: Store,
    log: Arc<Log>,
    /// Per witness, the size it last cosigned, as far as this process knows.
    known: std::sync::Mutex<HashMap<String, u64>>,
    /// Held for the length of a round.
    round: Mutex<()>,
}

impl std::fmt::Debug for Attestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Attestor({} witnesses, quorum {}, tsa {:?})",
            self.inner.witnesses.len(),
            self.inner.quorum,
            self.inner.tsa_url
        )
    }
}

impl Attestor {
    /// The attestor `config` asks for, or `None` if no witness or TSA is configured.
    pub fn new(config: &Config, store: Store, log: Arc<Log>) -> Result<Option<Self>, AttestError> {
        if !config.log.attests() {
            return Ok(None);
        }
        let witnesses = config
            .log
            .witnesses
            .iter()
            .map(|w| {
                Ok(Witness {
                    url: w.url.clone(),
                    key: WitnessKey::parse(&w.key)
                        .map_err(|e| AttestError::Config(e.to_string()))?,
                })
            })
            .collect::<Result<Vec<_>, AttestError>>()?;
        let tls = crate::tls::client_config(config.tls.peer_ca.get())
            .map_err(|e| AttestError::Config(e.to_string()))?;
        let http = HttpClient::new(tls).map_err(AttestError::Config)?;
        Ok(Some(Self {
            inner: Arc::new(Inner {
                witnesses,
                quorum: config.log.quorum(),
                tsa_url: (!config.log.timestamp_url.is_empty())
                    .then(|| config.log.timestamp_url.clone()),
                tsa_pins: config.log.timestamp_certs.clone(),
                interval: Duration::from_millis(config.log.attest_interval_ms),
                startup_wait: Duration::from_secs(config.log.witness_startup_wait_secs),
                http,
                store,
                log,
                known: std::sync::Mutex::default(),
                round: Mutex::new(()),
            }),
        }))
    }

    /// The witness keys, to verify cosignatures with.
    pub fn witness_keys(&self) -> Vec<WitnessKey> {
        self.inner.witnesses.iter().map(|w| w.key.clone()).collect()
    }

    /// The cosignatures a bundle must carry.
    pub fn quorum(&self) -> usize {
        self.inner.quorum
    }

    /// The pinned TSA certificates.
    pub fn tsa_pins(&self) -> &[String] {
        &self.inner.tsa_pins
    }

    /// Whether bundles must carry a time-stamp.
    pub fn timestamps(&self) -> bool {
        self.inner.tsa_url.is_some()
    }

    /// At start-up: every witness must hold a prefix of this log (else the database is an
    /// old backup, or the log forked), and at least the quorum must confirm it. Submits
    /// the latest checkpoint to each, so that they cosign it too.
    pub async fn check_witnesses(&self) -> Result<(), AttestError> {
        if self.inner.witnesses.is_empty() {
            return Ok(());
        }
        let _round = self.inner.round.lock().await;
        let checkpoint = self.latest().await?;
        let deadline = tokio::time::Instant::now() + self.inner.startup_wait;
        let (confirmed, failures) = loop {
            let outcomes = self.ask_witnesses(&checkpoint).await;
            let mut confirmed = 0;
            let mut failures = Vec::new();
            for (witness, outcome) in self.inner.witnesses.iter().zip(outcomes) {
                match outcome {
                    Outcome::Cosigned(_) => confirmed += 1,
                    Outcome::Alarm(e) => return Err(e),
                    Outcome::Unavailable(why) => {
                        failures.push(format!("{}: {why}", witness.key.name()));
                    }
                }
            }
            if confirmed >= self.inner.quorum || tokio::time::Instant::now() >= deadline {
                break (confirmed, failures);
            }
            tracing::info!(
                confirmed,
                quorum = self.inner.quorum,
                "waiting for witnesses"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        if confirmed < self.inner.quorum {
            return Err(AttestError::Unconfirmed {
                confirmed,
                quorum: self.inner.quorum,
                failures: failures.join("; "),
            });
        }
        for failure in failures {
            tracing::warn!(%failure, "witness unavailable at start-up");
        }
        tracing::info!(
            confirmed,
            size = checkpoint.size,
            "witnesses confirm the log"
        );
        Ok(())
    }

    /// Attests the latest checkpoint every `log.attest_interval_ms`, forever (the server
    /// stops it at shutdown).
    pub async fn run(self) {
        let mut attested = 0;
        loop {
            tokio::time::sleep(self.inner.interval).await;
            match self.attest_if_newer(attested).await {
                Ok(Some(size)) => attested = size,
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "checkpoint attestation failed"),
            }
        }
    }

    async fn attest_if_newer(&self, attested: u64) -> Result<Option<u64>, AttestError> {
        let _round = self.inner.round.lock().await;
        let checkpoint = self.latest().await?;
        if checkpoint.size <= attested {
            return Ok(None);
        }
        self.attest(&checkpoint).await?;
        Ok(Some(checkpoint.size))
    }

    /// The newest stored attestation of at least `min_size` entries that meets the
    /// configured requirements (quorum, time-stamp), after one round on the latest
    /// checkpoint if none does yet; `None` if the witnesses or the TSA could not provide it.
    pub async fn covering(&self, min_size: u64) -> Result<Option<Attestation>, AttestError> {
        if let Some(found) = self.stored(min_size).await? {
            return Ok(Some(found));
        }
        {
            let _round = self.inner.round.lock().await;
            if self.stored(min_size).await?.is_none() {
                let checkpoint = self.latest().await?;
                self.attest(&checkpoint).await?;
            }
        }
        self.stored(min_size).await
    }

    async fn stored(&self, min_size: u64) -> Result<Option<Attestation>, AttestError> {
        let mut conn = self
            .inner
            .store
            .pool()
            .acquire()
            .await
            .map_err(StoreError::from)?;
        Ok(repo::newest_attestation(
            &mut conn,
            min_size,
            self.inner.quorum as u64,
            self.timestamps(),
        )
        .await?)
    }

    async fn latest(&self) -> Result<SignedCheckpoint, AttestError> {
        let mut conn = self
            .inner
            .store
            .pool()
            .acquire()
            .await
            .map_err(StoreError::from)?;
        self.inner
            .log
            .latest_checkpoint(&mut conn)
            .await?
            .ok_or_else(|| AttestError::Log(LogError::Checkpoint("no checkpoint yet".into())))
    }

    /// One round on `checkpoint`: cosignatures and a time-stamp, stored if any came back.
    async fn attest(&self, checkpoint: &SignedCheckpoint) -> Result<(), AttestError> {
        let outcomes = self.ask_witnesses(checkpoint).await;
        let mut lines = String::new();
        let mut cosigned = 0u64;
        for (witness, outcome) in self.inner.witnesses.iter().zip(outcomes) {
            let name = witness.key.name().to_owned();
            match outcome {
                Outcome::Cosigned(line) => {
                    lines.push_str(&line);
                    cosigned += 1;
                }
                Outcome::Alarm(e) => {
                    metrics::counter!("bote_witness_alarms_total", "witness" => name).increment(1);
                    tracing::error!(error = %e, "a witness contradicts this log");
                }
                Outcome::Unavailable(why) => {
                    metrics::counter!("bote_witness_failures_total", "witness" => name.clone())
                        .increment(1);
                    tracing::warn!(witness = %name, reason = %why, "witness did not cosign");
                }
            }
        }
        let token = match &self.inner.tsa_url {
            Some(url) => {
                let text = checkpoint_text(&checkpoint.note);
                match timestamp::obtain(
                    &self.inner.http,
                    url,
                    text.as_bytes(),
                    &self.inner.tsa_pins,
                )
                .await
                {
                    Ok((token, _)) => Some(token),
                    Err(e) => {
                        metrics::counter!("bote_timestamp_failures_total").increment(1);
                        tracing::warn!(error = %e, "no time-stamp for the checkpoint");
                        None
                    }
                }
            }
            None => None,
        };
        if cosigned == 0 && token.is_none() {
            return Ok(());
        }
        let attestation = Attestation {
            size: checkpoint.size,
            checkpoint: format!("{}{lines}", checkpoint.note),
            cosignatures: cosigned,
            timestamp_token: token,
        };
        let mut conn = self
            .inner
            .store
            .pool()
            .acquire()
            .await
            .map_err(StoreError::from)?;
        repo::put_attestation(&mut conn, &attestation, now_ms()).await?;
        metrics::counter!("bote_log_attestations_total").increment(1);
        Ok(())
    }

    /// Submits `checkpoint` to every witness at once.
    async fn ask_witnesses(&self, checkpoint: &SignedCheckpoint) -> Vec<Outcome> {
        let asks = self.inner.witnesses.iter().map(|w| self.ask(w, checkpoint));
        futures_util::future::join_all(asks).await
    }

    /// Brings one witness to `checkpoint`: from the size it is known to hold (0 at first,
    /// which makes it say its size), with a consistency proof.
    async fn ask(&self, witness: &Witness, checkpoint: &SignedCheckpoint) -> Outcome {
        let name = witness.key.name().to_owned();
        let mut old = self.known_size(&name);
        // A conflict names the witness's size; one more try from there is all it needs.
        for _ in 0..3 {
            if old > checkpoint.size {
                return Outcome::Alarm(AttestError::Behind {
                    witness: name,
                    witnessed: old,
                    ours: checkpoint.size,
                });
            }
            let proof = match self.proof(old, checkpoint.size).await {
                Ok(p) => p,
                Err(e) => return Outcome::Unavailable(e.to_string()),
            };
            let request = AddCheckpoint {
                old,
                proof,
                checkpoint: checkpoint.note.clone(),
            };
            match client::add_checkpoint(&self.inner.http, &witness.url, &request).await {
                Ok(response) => return self.accept(witness, checkpoint, &response),
                Err(SubmitError::Conflict(size)) if size == old => {
                    // Same size, other root.
                    return Outcome::Alarm(AttestError::Fork {
                        witness: name,
                        witnessed: size,
                        reason: "same size, another root".into(),
                    });
                }
                Err(SubmitError::Conflict(size)) => {
                    self.set_known(&name, size);
                    old = size;
                }
                Err(SubmitError::Refused { status: 422, body }) => {
                    return Outcome::Alarm(AttestError::Fork {
                        witness: name,
                        witnessed: old,
                        reason: format!("it rejects the consistency proof: {body}"),
                    });
                }
                Err(e) => return Outcome::Unavailable(e.to_string()),
            }
        }
        Outcome::Unavailable("the witness's size kept changing".into())
    }

    /// A cosignature response, verified with the witness's key.
    fn accept(&self, witness: &Witness, checkpoint: &SignedCheckpoint, response: &str) -> Outcome {
        let note = format!("{}{response}", checkpoint.note);
        match cosignatures(&note, std::slice::from_ref(&witness.key)) {
            Ok(found) => match found.into_iter().next() {
                Some(c) => {
                    self.set_known(witness.key.name(), checkpoint.size);
                    Outcome::Cosigned(c.line)
                }
                None => Outcome::Unavailable("its answer holds no cosignature by its key".into()),
            },
            Err(e) => Outcome::Unavailable(format!("its cosignature does not verify: {e}")),
        }
    }

    async fn proof(&self, old: u64, new: u64) -> Result<Vec<tlog_tiles::Hash>, AttestError> {
        if old == 0 || old == new {
            return Ok(Vec::new());
        }
        let mut conn = self
            .inner
            .store
            .pool()
            .acquire()
            .await
            .map_err(StoreError::from)?;
        Ok(self
            .inner
            .log
            .consistency_proof(&mut conn, old, new)
            .await?)
    }

    fn known_size(&self, witness: &str) -> u64 {
        self.inner
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(witness)
            .copied()
            .unwrap_or(0)
    }

    fn set_known(&self, witness: &str, size: u64) {
        self.inner
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(witness.to_owned(), size);
    }
}

/// Parses a stored attestation's checkpoint with the log's key.
pub fn attested_checkpoint(
    log: &Log,
    attestation: &Attestation,
) -> Result<SignedCheckpoint, LogError> {
    SignedCheckpoint::parse(&attestation.checkpoint, log.verifier_key())
}
