//! The gateway core every front door shares: one [`Gateway`] owns the store, the keys, the
//! log, the group-commit writer, the message pipeline and authentication, and offers the
//! operations the front doors need, each with its policy inside: submit as a caller,
//! resolve a recipient, read, export a bundle, search evidence.
//!
//! Architecture invariant: front doors (`web`, and later `smtp` and the web inbox) parse
//! their wire format, resolve a [`Caller`](crate::auth::Caller), call one operation here,
//! and render the outcome; no policy decision (who may send as whom, who may see what)
//! is made outside this module and the modules it calls. Built once, in `server.rs`.
//!
//! Files: `send.rs` (choosing the sending mailbox, submitting, resolving recipients),
//! `read.rs` (mailboxes, folders, messages, timelines, receipts), `proofs.rs` (bundles
//! and evidence search), `account.rs` (recovery with the recovery code).

mod account;
mod directory;
mod proofs;
mod read;
mod send;

pub use proofs::SEARCH_PAGE;
pub use read::{FOLDER_PAGE, FOLDERS, TIMELINE_PAGE};

use std::sync::Arc;

use crate::auth::{Auth, AuthError};
use crate::config::Config;
use crate::error::{Classify, ErrorKind, Failure};
use crate::evidence::Writer;
use crate::evidence::bundle::ExportError;
use crate::evidence::query::QueryError;
use crate::keys::{KeyError, KeyRing};
use crate::log::attest::{AttestError, Attestor};
use crate::log::{Log, LogError};
use crate::pipeline::{OpenError, Pipeline, SubmitError};
use crate::store::{OpenMode, Store, StoreError};
use crate::witness::service::{FollowedLog, Witness};

/// Why a gateway operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Authentication or credentials.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Submission.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// Reading.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Bundle export.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// Evidence queries.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The caller's role or credential may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The caller may send from several mailboxes and named none.
    #[error("you can send from several mailboxes: name the one to send from")]
    SenderRequired,
    /// Nothing there, or nothing this caller may see.
    #[error("not found")]
    NotFound,
    /// Too many requests from this client.
    #[error("too many lookups from your address: try again in {retry_after} s")]
    RateLimited {
        /// Seconds until the next request may succeed.
        retry_after: u64,
    },
    /// A key operation of the gateway failed.
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    /// A page size outside what a listing allows.
    #[error("limit must be a whole number from 1 to {max} (default {default})")]
    PageSize {
        /// The default.
        default: i64,
        /// The largest page.
        max: i64,
    },
}

impl From<sqlx::Error> for GatewayError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Query(e))
    }
}

impl Classify for GatewayError {
    fn failure(&self) -> Failure {
        match self {
            Self::Auth(e) => e.failure(),
            Self::Submit(e) => e.failure(),
            Self::Open(e) => e.failure(),
            Self::Export(e) => e.failure(),
            Self::Query(e) => e.failure(),
            Self::Store(e) => e.failure(),
            Self::Forbidden(_) => {
                Failure::new(ErrorKind::Forbidden, "forbidden", "Forbidden").detail(self)
            }
            Self::SenderRequired => Failure::new(
                ErrorKind::Invalid,
                "sender-required",
                "Choose a sending mailbox",
            )
            .detail(self),
            Self::NotFound => Failure::not_found(),
            Self::RateLimited { retry_after } => {
                Failure::new(ErrorKind::RateLimited, "rate-limited", "Too many requests")
                    .detail(self)
                    .retry_after(*retry_after)
            }
            Self::Crypto(_) => Failure::internal(self),
            Self::PageSize { .. } => {
                Failure::new(ErrorKind::Invalid, "invalid-limit", "Invalid page size").detail(self)
            }
        }
    }
}

/// The page sizes of a listing: every list the gateway returns is bounded (spec §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize {
    /// When the caller names none.
    pub default: i64,
    /// The most one page holds; larger requests get this many.
    pub max: i64,
}

impl PageSize {
    /// The page size for a requested `limit`: the default when absent, at most `max`;
    /// zero or negative is refused.
    pub fn of(self, limit: Option<i64>) -> Result<i64, GatewayError> {
        match limit {
            None => Ok(self.default),
            Some(n) if n < 1 => Err(GatewayError::PageSize {
                default: self.default,
                max: self.max,
            }),
            Some(n) => Ok(n.min(self.max)),
        }
    }
}

/// One page of a listing, with the cursor of the next page when this one is full.
#[derive(Debug, Clone)]
pub struct Paged<T> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts (`after`/`before` of the next request), if there may be
    /// more.
    pub next: Option<String>,
}

impl<T> Paged<T> {
    /// A page of `items` asked for with `limit`; `cursor` names an item's position.
    fn of(items: Vec<T>, limit: i64, cursor: impl Fn(&T) -> String) -> Self {
        let full = i64::try_from(items.len()).is_ok_and(|n| n >= limit);
        let next = if full { items.last().map(cursor) } else { None };
        Self { items, next }
    }
}

/// Why a gateway could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenGatewayError {
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The gateway keys.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The transparency log (e.g. a database older than the published checkpoint).
    #[error(transparent)]
    Log(#[from] LogError),
    /// The witnesses (e.g. one holds a newer checkpoint: a restored backup).
    #[error(transparent)]
    Attest(#[from] AttestError),
    /// The witness role is on, but its key is missing.
    #[error("witness.enabled is on, but {0} does not exist: create it with `bote keys generate`")]
    NoWitnessKey(String),
}

/// The core of a running gateway. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Gateway {
    store: Store,
    config: Arc<Config>,
    keys: KeyRing,
    log: Arc<Log>,
    writer: Writer,
    pipeline: Pipeline,
    auth: Auth,
    lookups: directory::LookupLimiter,
    attestor: Option<Attestor>,
    witness: Option<Arc<Witness>>,
}

/// The store (opened in `mode`), the unlocked keys and the log, refusing a database older
/// than the published checkpoint.
async fn open_core(
    config: &Config,
    mode: OpenMode,
) -> Result<(Store, KeyRing, Arc<Log>), OpenGatewayError> {
    let store = Store::open(config, mode).await?;
    let keys = KeyRing::load(config)?;
    let log = Arc::new(Log::new(
        keys.log.clone(),
        keys.origin.clone(),
        &config.gateway.data_dir,
    ));
    {
        let mut conn = store.pool().acquire().await.map_err(StoreError::from)?;
        log.check_published(&mut conn).await?;
    }
    Ok((store, keys, log))
}

impl Gateway {
    /// Opens everything a serving gateway needs: the store (created and migrated if
    /// needed), the unlocked keys, the log (refusing a database older than the published
    /// checkpoint), and the group-commit writer.
    pub async fn start(config: Config) -> Result<Self, OpenGatewayError> {
        let (store, keys, log) = open_core(&config, OpenMode::CreateAndMigrate).await?;
        let attestor = Attestor::new(&config, store.clone(), log.clone())?;
        if let Some(attestor) = &attestor {
            attestor.check_witnesses().await?;
        }
        let witness = witness_role(&config, &keys, &store)?;
        let writer = Writer::spawn(store.clone(), log.clone());
        let mut gateway = Self::from_parts(store, Arc::new(config), keys, log, writer);
        gateway.attestor = attestor;
        gateway.witness = witness;
        Ok(gateway)
    }

    /// The parts of the gateway an operator's command needs to record evidence beside a
    /// running gateway (or none): the existing store, the keys, the log and a writer of its
    /// own. Log appends take the sequencer lock in the database, so two writers in two
    /// processes keep one log; no witness is asked (the server's next checkpoint is).
    pub async fn attach(config: Config) -> Result<Self, OpenGatewayError> {
        let (store, keys, log) = open_core(&config, OpenMode::Existing).await?;
        let writer = Writer::spawn(store.clone(), log.clone());
        Ok(Self::from_parts(store, Arc::new(config), keys, log, writer))
    }

    /// The same gateway, attested by `attestor` (tests).
    pub fn with_attestor(mut self, attestor: Attestor) -> Self {
        self.attestor = Some(attestor);
        self
    }

    /// The same gateway, acting as `witness` (tests).
    pub fn with_witness(mut self, witness: Witness) -> Self {
        self.witness = Some(Arc::new(witness));
        self
    }

    /// A gateway over parts opened by the caller (tests and benchmarks).
    pub fn from_parts(
        store: Store,
        config: Arc<Config>,
        keys: KeyRing,
        log: Arc<Log>,
        writer: Writer,
    ) -> Self {
        let pipeline = Pipeline::new(store.clone(), config.clone(), keys.clone(), writer.clone());
        let auth = Auth::new(store.clone(), config.primary_domain().to_owned());
        Self {
            store,
            config,
            keys,
            log,
            writer,
            pipeline,
            auth,
            lookups: directory::LookupLimiter::default(),
            attestor: None,
            witness: None,
        }
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The effective configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The gateway's unlocked keys.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The transparency log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The group-commit writer.
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Bytes of the memory budget held by messages in flight now.
    pub fn memory_in_use(&self) -> u64 {
        self.pipeline.memory_in_use()
    }

    /// Reserves `bytes` of the memory budget the pipeline's messages in flight share
    /// ([`crate::pipeline::Pipeline::reserve`]); dropping the room gives it back.
    pub async fn reserve_memory(
        &self,
        bytes: u64,
    ) -> Result<Vec<crate::pipeline::Reservation>, crate::pipeline::Busy> {
        self.pipeline.reserve(bytes).await
    }

    /// Sessions, tokens and second factors.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Who attests the log's checkpoints, if anyone.
    pub fn attestor(&self) -> Option<&Attestor> {
        self.attestor.as_ref()
    }

    /// The witness role, if on.
    pub fn witness(&self) -> Option<&Witness> {
        self.witness.as_deref()
    }
}

/// The witness role `[witness]` asks for.
fn witness_role(
    config: &Config,
    keys: &KeyRing,
    store: &Store,
) -> Result<Option<Arc<Witness>>, OpenGatewayError> {
    if !config.witness.enabled {
        return Ok(None);
    }
    let key = keys.witness.as_ref().ok_or_else(|| {
        OpenGatewayError::NoWitnessKey(
            crate::keys::KeyFiles::in_dir(&config.keys.dir)
                .witness_key
                .display()
                .to_string(),
        )
    })?;
    let logs = config
        .witness
        .logs
        .iter()
        .map(|vkey| FollowedLog {
            origin: vkey.split('+').next().unwrap_or_default().to_owned(),
            vkey: vkey.clone(),
        })
        .collect();
    Ok(Some(Arc::new(Witness::new(
        key.cosigner().clone(),
        logs,
        store.clone(),
    ))))
}
