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
use crate::store::{OpenMode, Store};

/// `bote keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create the evidence and log keys in `keys.dir` (never overwrites).
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
    let log = Log::new(
        keys.log.clone(),
        keys.origin.clone(),
        &config.gateway.data_dir,
    );
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
    let exported = bundle::export_audited(
        &store,
        &log,
        &keys,
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
}

fn read(flag: &str, path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::Io(format!("{flag} {}: {e}", path.display())))
}

/// What anchors the evidence key: `--key`, `--trust`, or (inspection only) nothing.
fn anchor(args: &VerifyArgs) -> Result<Anchor, CliError> {
    if let Some(path) = &args.trust {
        let file = bundle::TrustFile::parse(&read("--trust", path)?)
            .map_err(|e| CliError::Usage(format!("--trust {}: {e}", path.display())))?;
        return Ok(Anchor::Listed(file));
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
    let anchor = anchor(args)?;
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
    };
    let verified = bundle::verify(&bytes, &trust)
        .map_err(|e| CliError::Usage(format!("verification failed: {e}")))?;
    out!("verified: {} evidence records", verified.records.len());
    out!("evidence-key: {}", verified.fingerprint);
    out!(
        "checkpoint: {} size {}",
        verified.checkpoint.origin,
        verified.checkpoint.size
    );
    for r in &verified.records {
        out!(
            "event: {} {} {} {}",
            rfc3339_ms(r.time.0),
            r.event,
            r.reason,
            r.recipient
        );
    }
    if !verified.anchored {
        return Err(CliError::Unanchored(verified.fingerprint));
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
