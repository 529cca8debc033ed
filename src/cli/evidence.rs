//! `bote keys …`, `bote proof export`, `bote verify`, `bote log verify`, `bote evidence …`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Subcommand;
use sequoia_openpgp::Cert;
use sequoia_openpgp::parse::Parse;

use super::{CliError, load_config};
use crate::accounts::Actor;
use crate::address::EmailAddress;
use crate::clock::rfc3339_ms;
use crate::evidence;
use crate::evidence::StoredEvidence;
use crate::evidence::bundle::{self, Anchor};
use crate::evidence::query::{self, Search};
use crate::keys::{self, KeyRing, Passphrase, PublicKeys};
use crate::log::Log;
use crate::log::attest::Attestor;
use crate::store::{OpenMode, Store};

/// `bote keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create the evidence, provider, log and witness keys in `keys.dir`; in a directory
    /// from an older bote, only those it lacks (never overwrites).
    Generate,
}

/// `bote proof …`
#[derive(Debug, Subcommand)]
pub enum ProofCommand {
    /// Export the proof bundle of one (message, recipient).
    Export {
        /// Gateway message id or RFC 5322 Message-ID.
        id: String,
        /// The recipient (required when the message has several).
        #[arg(long, value_parser = parse_address)]
        recipient: Option<EmailAddress>,
        /// Prove against this signed checkpoint instead of the latest.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Output file.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
}

/// `bote log …`
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Recompute the whole stored log and check it against its signed checkpoint.
    Verify,
}

/// `bote witness …`
#[derive(Debug, Subcommand)]
pub enum WitnessCommand {
    /// Print this gateway's witness key (give it to the peers you witness, for their
    /// `[[log.witnesses]]`).
    Key,
    /// The logs this gateway witnesses and the size it last cosigned of each.
    Status,
}

/// `bote evidence …`
#[derive(Debug, Subcommand)]
pub enum EvidenceCommand {
    /// Search evidence records; every given filter must match.
    Search {
        /// Gateway message id or RFC 5322 Message-ID.
        #[arg(long)]
        message: Option<String>,
        /// Sender address.
        #[arg(long, value_parser = parse_address)]
        sender: Option<EmailAddress>,
        /// Recipient address.
        #[arg(long, value_parser = parse_address)]
        recipient: Option<EmailAddress>,
        /// Events at or after this time (RFC 3339, e.g. 2026-11-24T00:00:00.000Z).
        #[arg(long, value_parser = parse_time)]
        from: Option<i64>,
        /// Events before this time.
        #[arg(long, value_parser = parse_time)]
        until: Option<i64>,
        /// Only records after the one at this log index (the last index of a previous
        /// page).
        #[arg(long)]
        after: Option<u64>,
        /// Most records shown.
        #[arg(long, default_value_t = query::DEFAULT_LIMIT)]
        limit: i64,
    },
    /// The ordered evidence timeline of one message.
    Timeline {
        /// Gateway message id or RFC 5322 Message-ID.
        id: String,
    },
}

fn parse_address(s: &str) -> Result<EmailAddress, String> {
    EmailAddress::parse(s).map_err(|e| e.to_string())
}

/// Any RFC 3339 time, or a date (midnight UTC).
fn parse_time(s: &str) -> Result<i64, String> {
    crate::clock::parse_instant(s)
        .ok_or_else(|| format!("`{s}`: expected {}", crate::clock::INSTANT_FORMS))
}

/// `bote keys generate`
pub fn keys(config_path: &Path, command: KeysCommand) -> Result<(), CliError> {
    match command {
        KeysCommand::Generate => {
            let config = load_config(config_path)?;
            let passphrase = Passphrase::load(&config)?;
            let files = keys::generate(&config, &passphrase)?;
            let public = PublicKeys::load(&config)?;
            out!("evidence-key: {}", public.evidence.fingerprint().to_hex());
            out!("provider-key: {}", public.provider.fingerprint().to_hex());
            out!("log-key: {}", public.log_vkey);
            if let Ok(vkey) = std::fs::read_to_string(&files.witness_vkey) {
                out!("witness-key: {}", vkey.trim());
            }
            out!("evidence-cert: {}", files.evidence_cert.display());
        }
    }
    Ok(())
}

/// The store and one connection from it, for commands that run a few queries.
async fn connect(
    config: &crate::config::Config,
) -> Result<(Store, sqlx::pool::PoolConnection<sqlx::Any>), CliError> {
    let store = Store::open(config, OpenMode::Existing).await?;
    let conn = store
        .pool()
        .acquire()
        .await
        .map_err(crate::store::StoreError::from)?;
    Ok((store, conn))
}

/// `bote proof export`
pub async fn proof(config_path: &Path, command: ProofCommand) -> Result<(), CliError> {
    let ProofCommand::Export {
        id,
        recipient,
        checkpoint,
        output,
    } = command;
    let config = load_config(config_path)?;
    let keys = KeyRing::load(&config)?;
    let (store, mut conn) = connect(&config).await?;
    let log = Arc::new(Log::new(
        keys.log.clone(),
        keys.origin.clone(),
        &config.gateway.data_dir,
    ));
    let attestor = Attestor::new(&config, store.clone(), log.clone())
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let at = match &checkpoint {
        Some(path) => {
            let note = std::fs::read_to_string(path)
                .map_err(|e| CliError::Io(format!("{}: {e}", path.display())))?;
            Some(log.check_checkpoint(&mut conn, &note).await?)
        }
        None => None,
    };
    // A copy id names its message as well as the gateway id does.
    let id = match crate::store::messages::copy(&mut conn, &id).await? {
        Some(copy) => copy.message.gateway_id,
        None => id,
    };
    drop(conn);
    let sources = bundle::Sources {
        store: &store,
        log: &log,
        keys: &keys,
        attestor: attestor.as_ref(),
    };
    let exported = bundle::export_audited(
        sources,
        &Actor::current_operator(),
        &id,
        recipient.as_ref(),
        at,
    )
    .await?;
    crate::pki::write_file(&output, &exported.bytes, false)?;
    out!("bundle: {}", output.display());
    out!("sha256: {}", exported.sha256);
    Ok(())
}

/// `bote verify`: offline, no configuration.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The bundle (.tar).
    file: PathBuf,
    /// The expected evidence key: a certificate file (the gateway's `/log/key` file will do)
    /// or a fingerprint.
    #[arg(long, value_name = "CERT|FINGERPRINT", conflicts_with = "trust")]
    key: Option<String>,
    /// A trust file listing the gateways (and their evidence-key fingerprints) you trust,
    /// as a municipal association publishes it (format in the bundle's FORMAT.md).
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
    /// Check a bundle whose key nothing anchors, against the certificate inside it: a
    /// valid bundle then exits with status 3, not 0, and its fingerprint is printed for
    /// you to compare.
    #[arg(long, conflicts_with_all = ["key", "trust"])]
    allow_unanchored: bool,
    /// The expected log verifier key (`name+id+key`), or a file holding it on its first line
    /// (the gateway's `/log/key` file will do).
    #[arg(long, value_name = "VKEY|FILE")]
    log_key: Option<String>,
    /// A signed checkpoint you trust (a witness's, a court's, the gateway's of today): the
    /// bundle's proofs must hold against it, or against a prefix of it (then give
    /// `--consistency`).
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// The consistency proof from the bundle's checkpoint to the trusted one, as
    /// `/log/proof/consistency?old=…&new=…` serves it.
    #[arg(long, value_name = "FILE", requires = "checkpoint")]
    consistency: Option<PathBuf>,
    /// A witness whose cosignatures count (its verifier key `name+id+key`); repeatable.
    #[arg(long = "witness", value_name = "VKEY")]
    witnesses: Vec<String>,
    /// How many of the trusted witnesses must have cosigned the bundle's checkpoint
    /// (default: 1 if any witness is trusted).
    #[arg(long)]
    quorum: Option<usize>,
    /// A time-stamping authority you trust, as the SHA-256 of its certificate (hex); the
    /// bundle must then carry its time-stamp. Repeatable.
    #[arg(long = "tsa", value_name = "SHA256")]
    tsa: Vec<String>,
}

fn read(flag: &str, path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::Io(format!("{flag} {}: {e}", path.display())))
}

/// The trust file, if `--trust` names one.
fn trust_file(args: &VerifyArgs) -> Result<Option<bundle::TrustFile>, CliError> {
    let Some(path) = &args.trust else {
        return Ok(None);
    };
    bundle::TrustFile::parse(&read("--trust", path)?)
        .map(Some)
        .map_err(|e| CliError::Usage(format!("--trust {}: {e}", path.display())))
}

/// What anchors the evidence key: `--key`, `--trust`, or (inspection only) nothing.
fn anchor(args: &VerifyArgs, file: Option<&bundle::TrustFile>) -> Result<Anchor, CliError> {
    if let Some(file) = file {
        return Ok(Anchor::Listed(file.clone()));
    }
    match args.key.as_deref() {
        None if args.allow_unanchored => Ok(Anchor::None),
        None => Err(CliError::Usage(
            "nothing anchors trust in the bundle's signer: give the gateway's evidence key \
             (--key FINGERPRINT or --key CERT-FILE) or a trust file (--trust FILE); \
             --allow-unanchored only inspects"
                .into(),
        )),
        Some(k) if Path::new(k).is_file() => {
            let cert = Cert::from_file(k).map_err(|e| {
                CliError::Usage(format!("--key {k}: not an OpenPGP certificate: {e}"))
            })?;
            Ok(Anchor::Cert(Box::new(cert)))
        }
        Some(k) => {
            let hex: String = k.chars().filter(|c| !c.is_whitespace()).collect();
            if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(CliError::Usage(format!(
                    "--key {k}: neither a certificate file nor a 40-digit fingerprint"
                )));
            }
            Ok(Anchor::Fingerprint(hex))
        }
    }
}

/// `--consistency FILE`: the hashes of `/log/proof/consistency`'s answer.
fn consistency_proof(path: &Path) -> Result<Vec<String>, CliError> {
    let proof: serde_json::Value = serde_json::from_str(&read("--consistency", path)?)
        .map_err(|e| CliError::Usage(format!("--consistency {}: {e}", path.display())))?;
    proof["consistency"]
        .as_array()
        .and_then(|a| a.iter().map(|h| h.as_str().map(str::to_owned)).collect())
        .ok_or_else(|| {
            CliError::Usage(format!(
                "--consistency {}: expected {{\"consistency\": [base64 hashes…]}}",
                path.display()
            ))
        })
}

/// Runs `bote verify`. Exit status: 0 verified and anchored, 1 not verified (or nothing
/// anchors it), 2 bad invocation, 3 verified only against itself (`--allow-unanchored`).
pub fn verify(args: &VerifyArgs) -> Result<(), CliError> {
    let file = trust_file(args)?;
    let anchor = anchor(args, file.as_ref())?;
    let mut witnesses = Vec::new();
    for vkey in file
        .iter()
        .flat_map(|f| f.witnesses.iter())
        .chain(&args.witnesses)
    {
        witnesses.push(
            crate::witness::WitnessKey::parse(vkey)
                .map_err(|e| CliError::Usage(format!("--witness: {e}")))?,
        );
    }
    let quorum = args
        .quorum
        .or(file.as_ref().and_then(|f| f.quorum))
        .unwrap_or(usize::from(!witnesses.is_empty()));
    if quorum > witnesses.len() {
        return Err(CliError::Usage(format!(
            "--quorum {quorum}: only {} witnesses are trusted (--witness, or `witness` lines \
             in the trust file)",
            witnesses.len()
        )));
    }
    let mut tsa: Vec<String> = file.iter().flat_map(|f| f.tsa.iter()).cloned().collect();
    for pin in &args.tsa {
        if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CliError::Usage(format!(
                "--tsa {pin}: expected the SHA-256 of the TSA certificate, 64 hex digits"
            )));
        }
        tsa.push(pin.to_ascii_lowercase());
    }
    let file = &args.file;
    let bytes =
        std::fs::read(file).map_err(|e| CliError::Io(format!("{}: {e}", file.display())))?;
    let checkpoint = args
        .checkpoint
        .as_deref()
        .map(|p| read("--checkpoint", p))
        .transpose()?;
    let consistency = args
        .consistency
        .as_deref()
        .map(consistency_proof)
        .transpose()?;
    let log_key = match args.log_key.as_deref() {
        // The first line: a bare key file, or the gateway's /log/key (key, blank, cert).
        Some(k) if Path::new(k).is_file() => Some(
            read("--log-key", Path::new(k))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        ),
        other => other.map(str::to_owned),
    };
    let trust = bundle::Trust {
        anchor,
        log_key,
        checkpoint: checkpoint.as_deref().map(|note| bundle::Trusted {
            checkpoint: note,
            consistency,
        }),
        witnesses,
        quorum,
        tsa,
    };
    let verified = bundle::verify(&bytes, &trust)
        .map_err(|e| CliError::Usage(format!("verification failed: {e}")))?;
    // The status is settled before a line is printed: a reader that stops early
    // (`| head`, a broken pipe, which is otherwise a success) must not turn "verified only
    // against itself" into "verified".
    let status = if verified.anchored {
        Ok(())
    } else {
        Err(CliError::Unanchored(verified.fingerprint.clone()))
    };
    let printed = print_verified(&verified, trust.witnesses.is_empty());
    status.and(printed)
}

/// What `bote verify` found, line by line; says so where a check was not made, so that
/// the output never reads as more than was checked.
fn print_verified(verified: &bundle::Verified, no_witnesses: bool) -> Result<(), CliError> {
    out!("verified: {} evidence records", verified.records.len());
    out!("evidence-key: {}", verified.fingerprint);
    out!(
        "checkpoint: {} size {}",
        verified.checkpoint.origin,
        verified.checkpoint.size
    );
    if no_witnesses {
        out!("cosigned: not checked (no witness trusted: pass --witness or a trust file)");
    }
    for c in &verified.cosignatures {
        out!(
            "cosigned: {} at {}",
            c.witness,
            rfc3339_ms(
                i64::try_from(c.time)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1000)
            )
        );
    }
    match &verified.timestamp {
        Some((stamp, anchored)) => out!(
            "time-stamp: {} by {} (certificate sha256 {}{})",
            rfc3339_ms(
                i64::try_from(stamp.time)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1000)
            ),
            stamp.tsa,
            stamp.certificate_sha256,
            if *anchored {
                ""
            } else {
                ", not anchored: pass --tsa to trust it"
            }
        ),
        None => out!("time-stamp: none"),
    }
    for r in &verified.records {
        out!(
            "event: {} {} {} {}",
            rfc3339_ms(r.time.0),
            r.event,
            r.reason,
            r.recipient
        );
    }
    Ok(())
}

/// `bote log verify`
pub async fn log(config_path: &Path, command: LogCommand) -> Result<(), CliError> {
    let LogCommand::Verify = command;
    let config = load_config(config_path)?;
    let public = PublicKeys::load(&config)?;
    let (_store, mut conn) = connect(&config).await?;
    let log = Arc::new(Log::read_only(
        public.log_vkey.clone(),
        public.origin.clone(),
        &config.gateway.data_dir,
    ));
    let report = log
        .verify_stored(&mut conn)
        .await
        .map_err(|e| CliError::Usage(format!("log verification failed: {e}")))?;
    let records = evidence::audit_records(&mut conn, &public.evidence)
        .await
        .map_err(|e| CliError::Usage(format!("log verification failed: {e}")))?;
    out!(
        "log: {} entries, consistent with checkpoint {}",
        report.entries,
        report.checkpoint.size
    );
    out!("evidence: {records} records, signatures and log entries valid");
    match report.published {
        Some(size) => out!("published-checkpoint: {size} (a prefix of the stored log)"),
        None => out!("published-checkpoint: none"),
    }
    Ok(())
}

fn print_record(e: &StoredEvidence) -> Result<(), CliError> {
    let r = &e.record;
    out!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\tlog:{}",
        rfc3339_ms(r.time.0),
        r.event,
        r.reason,
        r.sender.address,
        r.recipient,
        r.message.gateway_id,
        r.evidence_id,
        e.log_index
    );
    Ok(())
}

/// `bote evidence …`
pub async fn evidence(config_path: &Path, command: EvidenceCommand) -> Result<(), CliError> {
    let config = load_config(config_path)?;
    let (_store, mut conn) = connect(&config).await?;
    let found = match command {
        EvidenceCommand::Search {
            message,
            sender,
            recipient,
            from,
            until,
            after,
            limit,
        } => {
            let search = Search {
                message,
                sender,
                recipient,
                from,
                until,
                after,
                limit: Some(limit),
                scope_user: None,
            };
            query::search(&mut conn, &search).await?
        }
        EvidenceCommand::Timeline { id } => query::timeline(&mut conn, &id).await?,
    };
    for e in &found {
        print_record(e)?;
    }
    Ok(())
}

/// `bote witness …`
pub async fn witness(config_path: &Path, command: WitnessCommand) -> Result<(), CliError> {
    let config = load_config(config_path)?;
    match command {
        WitnessCommand::Key => {
            let file = keys::KeyFiles::in_dir(&config.keys.dir).witness_vkey;
            let vkey = std::fs::read_to_string(&file).map_err(|e| {
                CliError::Io(format!(
                    "{}: {e} (create the witness key with `bote keys generate`)",
                    file.display()
                ))
            })?;
            out!("witness-key: {}", vkey.trim());
            out!(
                "witness-role: {}",
                if config.witness.enabled {
                    "on"
                } else {
                    "off (witness.enabled)"
                }
            );
        }
        WitnessCommand::Status => {
            let (_store, mut conn) = connect(&config).await?;
            let witnessed = crate::store::witness::all_witnessed(&mut conn).await?;
            for vkey in &config.witness.logs {
                let origin = vkey.split('+').next().unwrap_or_default();
                let size = witnessed
                    .iter()
                    .find(|(o, _)| o == origin)
                    .map_or_else(|| "never cosigned".to_owned(), |(_, s)| format!("size {s}"));
                out!("log: {origin} {size}");
            }
        }
    }
    Ok(())
}
