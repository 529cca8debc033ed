//! The `bote` command line (spec §6): parsing, dispatch, and the one place where errors
//! become a line on stderr and an exit code.
//!
//! Output contract: what scripts read goes to stdout as `key: value` lines; everything
//! else (errors, logs) goes to stderr. Secrets are read from stdin only. A reader that
//! closes stdout early (`bote … | head -1`) ends the command quietly, with success.

/// Writes one line to stdout; a closed stdout becomes [`CliError::Stdout`] instead of the
/// panic `println!` gives.
macro_rules! out {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        writeln!(::std::io::stdout().lock(), $($arg)*).map_err($crate::cli::CliError::Stdout)?
    }};
}

mod accounts;
mod evidence;
mod queue;
mod setup;

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use zeroize::Zeroizing;

use crate::accounts::password::Password;
use crate::accounts::service::AccountError;
use crate::config::{Config, ConfigError};
use crate::pki::PkiError;
use crate::server::ServeError;
use crate::store::{OpenMode, Store, StoreError};
use crate::telemetry::{self, LogFormat};

/// bote: secure, authenticated messaging gateway with verifiable delivery evidence.
#[derive(Debug, Parser)]
#[command(name = "bote", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file (relative paths inside it are relative to its directory).
    #[arg(long, global = true, default_value = "bote.toml", value_name = "FILE")]
    config: PathBuf,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a development setup: config, CA and certificates, keys, database.
    Init {
        /// Directory to create it in.
        #[arg(long)]
        dir: PathBuf,
        /// The first mail domain served.
        #[arg(long)]
        domain: String,
    },
    /// Run the gateway until SIGTERM/SIGINT.
    Serve,
    /// Apply pending database migrations.
    Migrate,
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Create a throwaway demo setup with demo users if missing, print logins, serve.
    Demo {
        /// Where the demo lives.
        #[arg(long, default_value = "bote-demo")]
        dir: PathBuf,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: accounts::UserCommand,
    },
    /// Manage mailboxes.
    Mailbox {
        #[command(subcommand)]
        command: accounts::MailboxCommand,
    },
    /// Manage credentials for office software.
    Token {
        #[command(subcommand)]
        command: accounts::TokenCommand,
    },
    /// Manage the gateway's evidence and log keys.
    Keys {
        #[command(subcommand)]
        command: evidence::KeysCommand,
    },
    /// Export proof bundles.
    Proof {
        #[command(subcommand)]
        command: evidence::ProofCommand,
    },
    /// Verify a proof bundle offline (needs no configuration).
    Verify(evidence::VerifyArgs),
    /// Inspect the transparency log.
    Log {
        #[command(subcommand)]
        command: evidence::LogCommand,
    },
    /// Search evidence and show timelines.
    Evidence {
        #[command(subcommand)]
        command: evidence::EvidenceCommand,
    },
    /// Relays to external offices' mail servers.
    Queue {
        #[command(subcommand)]
        command: queue::QueueCommand,
    },
    /// This gateway as a witness of its peers' logs (served by `bote serve` when
    /// `witness.enabled` is on).
    Witness {
        #[command(subcommand)]
        command: evidence::WitnessCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate and print the effective configuration (secrets redacted).
    Check,
}

/// Everything a command can fail with; each prints as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Accounts.
    #[error(transparent)]
    Account(#[from] AccountError),
    /// Development PKI.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Serving.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// Gateway keys.
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyError),
    /// The transparency log.
    #[error(transparent)]
    Log(#[from] crate::log::LogError),
    /// Evidence queries.
    #[error(transparent)]
    Query(#[from] crate::evidence::query::QueryError),
    /// Proof bundle export.
    #[error(transparent)]
    Export(#[from] crate::evidence::bundle::ExportError),
    /// Sessions and second factors.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// Opening the gateway's store, keys and log for a command that records evidence.
    #[error(transparent)]
    Gateway(#[from] crate::gateway::OpenGatewayError),
    /// The relay queue.
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    /// Bad invocation or input not covered by a module error.
    #[error("{0}")]
    Usage(String),
    /// Local I/O.
    #[error("{0}")]
    Io(String),
    /// `bote verify --allow-unanchored`: the bundle holds together, but only against the
    /// certificate inside it (exit status 3).
    #[error(
        "trust not anchored: the bundle verifies only against the certificate inside it \
         ({0}); compare that fingerprint with the one the gateway publishes, then pass it \
         as --key"
    )]
    Unanchored(String),
    /// Writing to standard output failed (a closed pipe is not reported).
    #[error("cannot write to standard output: {0}")]
    Stdout(std::io::Error),
}

/// Exit status of `bote verify --allow-unanchored` for a bundle that verifies only
/// against itself.
pub const UNANCHORED: u8 = 3;

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // One line, as for every other error: clap's first paragraph names the problem.
            let rendered = e.render().to_string();
            let first: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("{}", first.join(" "));
            return ExitCode::from(2);
        }
    };
    let level = match cli.command {
        Command::Serve | Command::Demo { .. } => "info",
        // A one-shot command exits with its pool: a connection whose release check races
        // the runtime's shutdown is not the operator's concern (one line per error).
        _ => "warn,sqlx_core::pool=error",
    };
    telemetry::init_logging(cli.log_format, level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader has what it wanted (`| head -1`).
        Err(CliError::Stdout(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e @ CliError::Unanchored(_)) => {
            eprintln!("warning: {e}");
            ExitCode::from(UNANCHORED)
        }
        Err(e) => {
            eprintln!("error: {e}{}", hint(&e));
            ExitCode::FAILURE
        }
    }
}

/// What to type next, where an error's own words (shared with the API) cannot say it.
fn hint(e: &CliError) -> &'static str {
    use crate::evidence::bundle::ExportError;
    use crate::evidence::query::QueryError;
    match e {
        CliError::Query(QueryError::AmbiguousRecipient { .. })
        | CliError::Export(ExportError::Query(QueryError::AmbiguousRecipient { .. })) => {
            " (--recipient ADDR)"
        }
        _ => "",
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Init { dir, domain } => setup::init(&dir, &domain).await,
        Command::Demo { dir } => setup::demo(&dir).await,
        Command::Serve => {
            let config = load_config(&cli.config)?;
            serve(config).await
        }
        Command::Migrate => {
            let config = load_config(&cli.config)?;
            let store = Store::open(&config, OpenMode::Unchecked).await?;
            let applied = store.migrate().await?;
            store.close().await;
            out!("migrations-applied: {applied}");
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let config = load_config(&cli.config)?;
            out!("{}", config.redacted_toml().trim_end());
            Ok(())
        }
        Command::User { command } => accounts::user(&cli.config, command).await,
        Command::Mailbox { command } => accounts::mailbox(&cli.config, command).await,
        Command::Token { command } => accounts::token(&cli.config, command).await,
        Command::Keys { command } => evidence::keys(&cli.config, command),
        Command::Proof { command } => evidence::proof(&cli.config, command).await,
        Command::Verify(args) => evidence::verify(&args),
        Command::Log { command } => evidence::log(&cli.config, command).await,
        Command::Evidence { command } => evidence::evidence(&cli.config, command).await,
        Command::Witness { command } => evidence::witness(&cli.config, command).await,
        Command::Queue { command } => queue::queue(&cli.config, command).await,
    }
}

/// Loads the config file with the process environment's overrides.
pub fn load_config(path: &std::path::Path) -> Result<Config, CliError> {
    Ok(Config::load(path, std::env::vars())?)
}

async fn serve(config: Config) -> Result<(), CliError> {
    let token = tokio_util::sync::CancellationToken::new();
    tokio::spawn(crate::server::cancel_on_signal(token.clone()));
    crate::server::serve(config, token).await?;
    Ok(())
}

/// Reads one secret per line from stdin, in the order named (without line endings).
fn read_secret_lines(names: &[&str]) -> Result<Vec<Password>, CliError> {
    let stdin = std::io::stdin();
    let mut lock = stdin.lock();
    let mut out = Vec::with_capacity(names.len());
    for (i, what) in names.iter().enumerate() {
        let mut line = Zeroizing::new(String::new());
        lock.read_line(&mut line)
            .map_err(|e| CliError::Io(format!("cannot read {what} from standard input: {e}")))?;
        let trimmed = line.trim_end_matches(['\n', '\r']);
        if trimmed.is_empty() {
            return Err(CliError::Usage(format!(
                "no {what} on standard input: write it as line {} of standard input",
                i + 1
            )));
        }
        out.push(Zeroizing::new(trimmed.to_owned()));
    }
    Ok(out)
}

/// Reads a secret from the first line of stdin (without its line ending).
fn read_secret_line(what: &str) -> Result<Password, CliError> {
    read_secret_lines(&[what]).map(|mut v| v.remove(0))
}
