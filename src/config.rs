//! Configuration: `bote.toml`, `BOTE_<SECTION>_<KEY>` overrides, validation, redaction.
//!
//! Loading is strict: an unknown key, a value of the wrong shape or a file that does not
//! exist stops the gateway before it touches anything, with one line that names the key,
//! where it came from and what was expected. After [`Config::load`] every path is absolute
//! (relative paths are relative to the config file) and every value is typed.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::address::DomainName;

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "BOTE_";

/// Everything that can be wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("{path}: cannot read config file: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{path}: not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Parser message, flattened to one line.
        message: String,
    },
    /// A key has a bad value, is unknown, or is missing.
    #[error("{path}: `{key}`: {message}")]
    Key {
        /// The file (or environment variable) the value came from.
        path: String,
        /// Dotted key.
        key: String,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A referenced file does not exist.
    #[error("{path}: `{key}` names {file}, which does not exist ({expected})")]
    MissingFile {
        /// The config file.
        path: PathBuf,
        /// Dotted key.
        key: String,
        /// The resolved file name.
        file: String,
        /// What the file should contain.
        expected: &'static str,
    },
}

/// The whole configuration, as in `bote.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Domains served and where data lives.
    pub gateway: GatewayConfig,
    /// Database connection.
    pub database: DatabaseConfig,
    /// HTTPS and metrics listeners.
    pub http: HttpConfig,
    /// SMTP listeners.
    pub smtp: SmtpConfig,
    /// Certificates.
    pub tls: TlsConfig,
    /// Signing and log keys.
    pub keys: KeysConfig,
    /// Size, count and rate limits.
    pub limits: LimitsConfig,
    /// Who attests this gateway's checkpoints: witnesses and a time-stamping authority.
    pub log: LogConfig,
    /// This gateway as a witness for its peers' logs.
    pub witness: WitnessConfig,
    /// The outbound relay queue.
    pub queue: QueueConfig,
    /// The file this was loaded from (absolute); not a config key.
    #[serde(skip)]
    pub source: PathBuf,
}

/// `[gateway]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Mail domains served; the first names the log origin.
    pub domains: Vec<DomainName>,
    /// Directory for the database (SQLite), the last checkpoint and other state.
    pub data_dir: PathBuf,
}

/// `[database]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://…`; empty means `sqlite://<data_dir>/bote.db`.
    pub url: String,
    /// Connection pool size.
    pub max_connections: u32,
    /// Seconds to wait for a connection before giving up.
    pub connect_timeout_secs: u64,
}

/// `[http]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// HTTPS listener (web inbox, API, log, WKD, health).
    pub listen: Listener,
    /// Plain-HTTP Prometheus listener, meant for an internal network.
    pub metrics_listen: Listener,
}

/// `[smtp]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// MX / peer listener (STARTTLS, mutual TLS for peers).
    pub mx_listen: Listener,
    /// Submission with STARTTLS (587).
    pub submission_listen: Listener,
    /// Submission with implicit TLS (465).
    pub submissions_listen: Listener,
    /// Networks allowed on the MX listener without TLS.
    pub trusted_networks: Vec<IpNet>,
    /// Simultaneous SMTP connections from one client address, per listener.
    pub max_connections_per_client: u32,
}

/// `[tls]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Server certificate chain (PEM).
    pub cert: OptionalPath,
    /// Server private key (PEM).
    pub key: OptionalPath,
    /// The CA that clients should trust for this gateway (PEM).
    pub ca_cert: OptionalPath,
    /// CAs for peer gateways' client certificates (PEM).
    pub peer_ca: OptionalPath,
    /// Extra CAs trusted for outbound relays (PEM).
    pub relay_ca: OptionalPath,
}

/// `[keys]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Directory holding the encrypted provider, evidence and log keys.
    pub dir: PathBuf,
    /// File holding the passphrase that protects the keys.
    pub passphrase_file: OptionalPath,
    /// Or: the environment variable holding it (used when no file is set).
    pub passphrase_env: String,
}

/// `[limits]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest message accepted from a peer gateway, in bytes (TR 01201: 45 MiB).
    pub message_size_gateway: u64,
    /// Largest message a user may submit, in bytes (20 MiB).
    pub message_size_submission: u64,
    /// Recipients per message (RFC 5321 asks for at least 100).
    pub max_recipients: u32,
    /// Messages per day a citizen at level `normal` may send.
    pub citizen_daily_messages: u32,
    /// Recipients per day a citizen at level `normal` may address.
    pub citizen_daily_recipients: u32,
    /// Messages per hour an office mailbox may send, unless set for the mailbox (0: no limit).
    pub office_messages_per_hour: u32,
    /// Recipients per hour an office mailbox may address, unless set for the mailbox (0: no
    /// limit).
    pub office_recipients_per_hour: u32,
    /// Largest JSON request body of the API, in bytes.
    pub http_max_body: u64,
    /// MIME parts per message, the root included (nested messages count with their parts).
    pub max_mime_parts: u32,
    /// Deepest MIME nesting per message.
    pub max_mime_depth: u32,
    /// Header fields per message, all parts together.
    pub max_header_fields: u32,
    /// Bytes of messages in flight, counted as size × (copies + 2), that the process holds
    /// at once; a submission over the budget waits, then is refused as temporary.
    pub memory_budget: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            domains: Vec::new(),
            data_dir: PathBuf::from("data"),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            max_connections: 10,
            connect_timeout_secs: 5,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: Listener::on("127.0.0.1:8443"),
            metrics_listen: Listener::on("127.0.0.1:9464"),
        }
    }
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            mx_listen: Listener::on("127.0.0.1:2525"),
            submission_listen: Listener::on("127.0.0.1:2587"),
            submissions_listen: Listener::on("127.0.0.1:2465"),
            trusted_networks: Vec::new(),
            max_connections_per_client: 50,
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: OptionalPath::from("certs/server.crt"),
            key: OptionalPath::from("certs/server.key"),
            ca_cert: OptionalPath::from("certs/ca.crt"),
            peer_ca: OptionalPath::default(),
            relay_ca: OptionalPath::default(),
        }
    }
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("keys"),
            passphrase_file: OptionalPath::default(),
            passphrase_env: "BOTE_PASSPHRASE".to_owned(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            message_size_gateway: 45 * 1024 * 1024,
            message_size_submission: 20 * 1024 * 1024,
            max_recipients: 100,
            citizen_daily_messages: 100,
            citizen_daily_recipients: 300,
            office_messages_per_hour: 10_000,
            office_recipients_per_hour: 100_000,
            http_max_body: 32 * 1024 * 1024,
            max_mime_parts: 1000,
            max_mime_depth: 20,
            max_header_fields: 10_000,
            memory_budget: 1024 * 1024 * 1024,
        }
    }
}

/// `[log]`: witnesses (C2SP tlog-witness) and a time-stamping authority (RFC 3161).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Witnesses every new checkpoint is submitted to (`[[log.witnesses]]`).
    pub witnesses: Vec<WitnessPeer>,
    /// How many of them must cosign: bundles carry that many cosignatures, and start-up
    /// needs that many to confirm the log extends what they saw. Default: 1 if any.
    pub witness_quorum: u32,
    /// At most one attestation (cosigning and time-stamping) per this many milliseconds.
    pub attest_interval_ms: u64,
    /// How long start-up waits for the quorum of witnesses to answer (gateways that
    /// witness each other may boot together) before refusing to start.
    pub witness_startup_wait_secs: u64,
    /// URL of an RFC 3161 time-stamping authority; empty for none.
    pub timestamp_url: String,
    /// SHA-256 (hex) of the TSA certificates whose time-stamps are accepted; empty accepts
    /// any that verifies (then pin it in trust files instead).
    pub timestamp_certs: Vec<String>,
}

/// One witness of this gateway's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessPeer {
    /// Its submission URL prefix (`…/add-checkpoint` is appended).
    pub url: String,
    /// Its cosignature verifier key (`name+id+base64`, type 0x04).
    pub key: String,
}

/// `[queue]`: relaying to external offices' mail servers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// After this long, a message that could not be relayed fails for good (evidence
    /// RelayToNonERDSFailure, RD03).
    pub relay_expiry_secs: u64,
    /// The first retry's delay; each further one doubles it (at most an hour).
    pub retry_base_ms: u64,
    /// How long a worker holds a job it claimed; after a crash, the job waits this long.
    pub lease_secs: u64,
    /// SMTP sessions one relay worker (one process) holds at once, to all offices'
    /// servers together (Postfix allows 50 per client by default). Each may hold its
    /// message twice (its dot-stuffed copy and the copy lettre writes from).
    pub relay_sessions: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            relay_expiry_secs: 24 * 3600,
            retry_base_ms: 60_000,
            lease_secs: 300,
            relay_sessions: 32,
        }
    }
}

/// `[witness]`: this gateway as a witness (`POST /witness/add-checkpoint`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WitnessConfig {
    /// Serve the witness endpoint.
    pub enabled: bool,
    /// Signed-note verifier keys of the logs it follows (`<domain>/log+id+key`).
    pub logs: Vec<String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            witnesses: Vec::new(),
            witness_quorum: 0,
            attest_interval_ms: 1000,
            witness_startup_wait_secs: 30,
            timestamp_url: String::new(),
            timestamp_certs: Vec::new(),
        }
    }
}

impl LogConfig {
    /// The cosignatures required: the configured quorum, or 1 when witnesses are
    /// configured without one.
    pub fn quorum(&self) -> usize {
        match (self.witness_quorum, self.witnesses.len()) {
            (0, 0) => 0,
            (0, _) => 1,
            (q, _) => q as usize,
        }
    }

    /// Whether anything attests checkpoints.
    pub fn attests(&self) -> bool {
        !self.witnesses.is_empty() || !self.timestamp_url.is_empty()
    }
}

/// A listen address, or off (the empty string in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Listener(pub Option<SocketAddr>);

impl Listener {
    fn on(addr: &str) -> Self {
        Self(SocketAddr::from_str(addr).ok())
    }
}

impl Serialize for Listener {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(a) => s.collect_str(&a),
            None => s.serialize_str(""),
        }
    }
}

impl<'de> Deserialize<'de> for Listener {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(Self(None));
        }
        SocketAddr::from_str(&s).map(|a| Self(Some(a))).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{s}` is not a listen address: expected IP:PORT (e.g. 127.0.0.1:8443, [::]:443) or \"\" for off"
            ))
        })
    }
}

/// A file path that may be unset (the empty string).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OptionalPath(pub PathBuf);

impl OptionalPath {
    /// The path, if set.
    pub fn get(&self) -> Option<&Path> {
        (!self.0.as_os_str().is_empty()).then_some(self.0.as_path())
    }
}

impl From<&str> for OptionalPath {
    fn from(s: &str) -> Self {
        Self(PathBuf::from(s))
    }
}

/// A database backend, chosen by the URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// The backend a URL names, if any.
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        })
    }
}

impl Config {
    /// Reads `path`, applies `BOTE_*` overrides from `env`, resolves paths and validates.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let source = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        Self::from_toml(&text, &source, env)
    }

    /// As [`Config::load`], from text already read.
    pub fn from_toml(
        text: &str,
        source: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let display = source.display().to_string();
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: source.to_owned(),
                    message: one_line(&e.to_string()),
                })?;
        let mut origins = std::collections::HashMap::new();
        for (var, value) in env {
            if let Some(key) = apply_env_override(&mut table, &var, &value)? {
                origins.insert(key, var);
            }
        }
        let mut config: Config = serde_path_to_error::deserialize(table).map_err(
            |e: serde_path_to_error::Error<toml::de::Error>| {
                let key = e.path().to_string();
                // `gateway.domains[0]` came from the variable that set `gateway.domains`.
                let origin = origins
                    .iter()
                    .find(|(set, _)| {
                        key.strip_prefix(set.as_str())
                            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['[', '.']))
                    })
                    .map(|(_, var)| format!("environment variable {var}"))
                    .unwrap_or_else(|| display.clone());
                ConfigError::Key {
                    path: origin,
                    key,
                    message: one_line(e.inner().message()),
                }
            },
        )?;
        config.source = source.to_owned();
        config.resolve_paths();
        config.validate()?;
        Ok(config)
    }

    /// The first served domain: it names the log origin, the TOTP issuer, the key User IDs
    /// and gateway-made Message-IDs. [`Config::load`] refuses an empty `gateway.domains`, so
    /// the fallback only ever serves a `Config::default()` built by hand.
    pub fn primary_domain(&self) -> &str {
        self.gateway
            .domains
            .first()
            .map_or("localhost", DomainName::as_str)
    }

    /// Directory of the config file; relative paths are taken from here.
    pub fn base_dir(&self) -> &Path {
        self.source.parent().unwrap_or(Path::new("."))
    }

    /// The database URL after defaults: SQLite in the data directory unless set.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!(
                "sqlite://{}",
                self.gateway.data_dir.join("bote.db").display()
            )
        } else {
            self.database.url.clone()
        }
    }

    /// The effective configuration as TOML, with secrets replaced by `***`.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database.url = redact_url(&self.database_url());
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    fn resolve_paths(&mut self) {
        let base = self.base_dir().to_owned();
        let abs = |p: &mut PathBuf| {
            if !p.as_os_str().is_empty() && p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.gateway.data_dir);
        abs(&mut self.keys.dir);
        for p in [
            &mut self.tls.cert.0,
            &mut self.tls.key.0,
            &mut self.tls.ca_cert.0,
            &mut self.tls.peer_ca.0,
            &mut self.tls.relay_ca.0,
            &mut self.keys.passphrase_file.0,
        ] {
            abs(p);
        }
        if let Some(rest) = self.database.url.strip_prefix("sqlite://") {
            let (path, query) = rest
                .split_once('?')
                .map_or((rest, None), |(p, q)| (p, Some(q)));
            let path = Path::new(path);
            if path.is_relative() && !path.as_os_str().is_empty() && path != Path::new(":memory:") {
                let joined = base.join(path);
                self.database.url = match query {
                    Some(q) => format!("sqlite://{}?{q}", joined.display()),
                    None => format!("sqlite://{}", joined.display()),
                };
            }
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let key_err = |key: &str, message: String| ConfigError::Key {
            path: self.source.display().to_string(),
            key: key.to_owned(),
            message,
        };
        if self.gateway.domains.is_empty() {
            return Err(key_err(
                "gateway.domains",
                "expected at least one mail domain, e.g. domains = [\"lemgo.example\"]".into(),
            ));
        }
        let url = self.database_url();
        if Backend::of_url(&url).is_none() {
            return Err(key_err(
                "database.url",
                format!(
                    "`{}` is not a database URL: expected sqlite://PATH or postgres://USER@HOST/DB",
                    redact_url(&url)
                ),
            ));
        }
        if self.database.max_connections == 0 {
            return Err(key_err(
                "database.max_connections",
                "expected at least 1".into(),
            ));
        }
        if self.limits.max_recipients < 100 {
            return Err(key_err(
                "limits.max_recipients",
                "expected at least 100 (RFC 5321 §4.5.3.1.8)".into(),
            ));
        }
        if !(1..=100).contains(&self.queue.relay_sessions) {
            return Err(key_err(
                "queue.relay_sessions",
                "expected 1 to 100 SMTP sessions".into(),
            ));
        }
        self.validate_log(&key_err)?;
        let tls_needed = self.http.listen.0.is_some()
            || self.smtp.mx_listen.0.is_some()
            || self.smtp.submission_listen.0.is_some()
            || self.smtp.submissions_listen.0.is_some();
        if tls_needed {
            for (key, p) in [("tls.cert", &self.tls.cert), ("tls.key", &self.tls.key)] {
                if p.get().is_none() {
                    return Err(key_err(
                        key,
                        "expected a PEM file: TLS listeners are on and need it".into(),
                    ));
                }
            }
        }
        let files = [
            ("tls.cert", &self.tls.cert, "PEM certificate chain"),
            ("tls.key", &self.tls.key, "PEM private key"),
            ("tls.ca_cert", &self.tls.ca_cert, "PEM CA certificate"),
            (
                "tls.peer_ca",
                &self.tls.peer_ca,
                "PEM CA certificates for peers",
            ),
            (
                "tls.relay_ca",
                &self.tls.relay_ca,
                "PEM CA certificates for relays",
            ),
            (
                "keys.passphrase_file",
                &self.keys.passphrase_file,
                "the key passphrase",
            ),
        ];
        for (key, p, expected) in files {
            if let Some(file) = p.get()
                && !file.is_file()
            {
                return Err(ConfigError::MissingFile {
                    path: self.source.clone(),
                    key: key.to_owned(),
                    file: file.display().to_string(),
                    expected,
                });
            }
        }
        Ok(())
    }
}

impl Config {
    fn validate_log(
        &self,
        key_err: &impl Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        for (i, w) in self.log.witnesses.iter().enumerate() {
            if let Err(e) = crate::witness::WitnessKey::parse(&w.key) {
                return Err(key_err(&format!("log.witnesses[{i}].key"), e.to_string()));
            }
            if !(w.url.starts_with("https://") || w.url.starts_with("http://")) {
                return Err(key_err(
                    &format!("log.witnesses[{i}].url"),
                    format!("`{}` is not an http(s) URL", w.url),
                ));
            }
        }
        let quorum = self.log.witness_quorum as usize;
        if quorum > self.log.witnesses.len() {
            return Err(key_err(
                "log.witness_quorum",
                format!(
                    "{quorum} cosignatures required, but only {} witnesses configured",
                    self.log.witnesses.len()
                ),
            ));
        }
        for (i, c) in self.log.timestamp_certs.iter().enumerate() {
            if c.len() != 64 || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(key_err(
                    &format!("log.timestamp_certs[{i}]"),
                    "expected the SHA-256 of a certificate, 64 hex digits".into(),
                ));
            }
        }
        if self.log.attest_interval_ms == 0 {
            return Err(key_err(
                "log.attest_interval_ms",
                "expected at least 1".into(),
            ));
        }
        for (i, vkey) in self.witness.logs.iter().enumerate() {
            if signed_note::StandardVerifier::new(vkey).is_err() {
                return Err(key_err(
                    &format!("witness.logs[{i}]"),
                    format!("`{vkey}` is not a signed-note verifier key (name+id+base64)"),
                ));
            }
        }
        Ok(())
    }
}

/// Applies one environment variable to the table if it names a config key.
///
/// Returns the dotted key it set. Variables whose section is not a config section are
/// ignored (other tools use the prefix too); an unknown key in a known section is an error,
/// because a typo there would otherwise silently do nothing.
fn apply_env_override(
    table: &mut toml::Table,
    var: &str,
    value: &str,
) -> Result<Option<String>, ConfigError> {
    let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
        return Ok(None);
    };
    let schema = schema();
    let Some((section, keys, key)) = schema.iter().find_map(|(section, keys)| {
        let prefix = format!("{}_", section.to_ascii_uppercase());
        let key = rest.strip_prefix(&prefix)?.to_ascii_lowercase();
        Some((section.clone(), keys, key))
    }) else {
        return Ok(None);
    };
    let env_err = |message: String| ConfigError::Key {
        path: format!("environment variable {var}"),
        key: format!("{section}.{key}"),
        message,
    };
    let Some(template) = keys.get(&key) else {
        let known: Vec<&str> = keys.keys().map(String::as_str).collect();
        return Err(env_err(format!(
            "unknown key `{key}` in section [{section}]; known keys: {}",
            known.join(", ")
        )));
    };
    let parsed = match template {
        toml::Value::Array(_) => toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        toml::Value::Integer(_) => toml::Value::Integer(
            value
                .trim()
                .parse()
                .map_err(|_| env_err(format!("`{value}` is not a whole number")))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(
            value
                .trim()
                .parse()
                .map_err(|_| env_err(format!("`{value}` is not true or false")))?,
        ),
        _ => toml::Value::String(value.to_owned()),
    };
    let entry = table
        .entry(section.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(section_table) = entry else {
        return Err(env_err(format!("[{section}] in the file is not a table")));
    };
    section_table.insert(key.clone(), parsed);
    Ok(Some(format!("{section}.{key}")))
}

/// Section → key → a value of the key's type, from the defaults (every key is present).
fn schema() -> Vec<(String, toml::Table)> {
    let table = toml::Table::try_from(Config::default()).unwrap_or_default();
    table
        .into_iter()
        .filter_map(|(section, v)| match v {
            toml::Value::Table(keys) => Some((section, keys)),
            _ => None,
        })
        .collect()
}

/// Replaces the password in a URL by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_once('/').map_or((rest, ""), |(a, t)| (a, t));
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    let slash = if rest.contains('/') { "/" } else { "" };
    if userinfo.contains(':') {
        format!("{scheme}://{user}:***@{host}{slash}{tail}")
    } else {
        url.to_owned()
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        for f in ["certs/server.crt", "certs/server.key", "certs/ca.crt"] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_toml(text, &dir.path().join("bote.toml"), env)
    }

    const MINIMAL: &str = "[gateway]\ndomains = [\"lemgo.example\"]\n";

    #[test]
    fn minimal_file_gets_development_defaults() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.http.listen.0.unwrap().port(), 8443);
        assert_eq!(c.http.metrics_listen.0.unwrap().port(), 9464);
        assert_eq!(c.smtp.mx_listen.0.unwrap().port(), 2525);
        assert!(c.database_url().starts_with("sqlite:///"));
        assert!(c.database_url().ends_with("/data/bote.db"));
        assert!(c.tls.cert.get().unwrap().is_absolute());
    }

    #[test]
    fn env_overrides_every_kind_of_key() {
        let c = load(
            MINIMAL,
            &[
                ("BOTE_GATEWAY_DOMAINS", "a.example, b.example"),
                ("BOTE_HTTP_METRICS_LISTEN", ""),
                ("BOTE_LIMITS_MAX_RECIPIENTS", "250"),
                ("BOTE_SMTP_TRUSTED_NETWORKS", "10.0.0.0/8"),
                ("BOTE_DATABASE_URL", "postgres://u:secret@db/bote"),
                ("BOTE_TEST_SOMETHING", "ignored"),
            ],
        )
        .unwrap();
        let domains: Vec<_> = c.gateway.domains.iter().map(|d| d.as_str()).collect();
        assert_eq!(domains, ["a.example", "b.example"]);
        assert_eq!(c.http.metrics_listen, Listener(None));
        assert_eq!(c.limits.max_recipients, 250);
        assert_eq!(c.smtp.trusted_networks.len(), 1);
        assert!(c.redacted_toml().contains("postgres://u:***@db/bote"));
        assert!(!c.redacted_toml().contains("secret"));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let e = load(&format!("{MINIMAL}[http]\nlisten_port = 1\n"), &[]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("listen_port"), "{msg}");
        assert!(msg.contains("bote.toml"), "{msg}");

        let e = load(MINIMAL, &[("BOTE_HTTP_LISTN", "1")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("BOTE_HTTP_LISTN") && e.contains("known keys: listen"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_key_origin_and_expectation() {
        let e = load(&format!("{MINIMAL}[http]\nlisten = \"nope\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`http.listen`") && e.contains("expected IP:PORT"),
            "{e}"
        );

        let e = load(MINIMAL, &[("BOTE_LIMITS_MAX_RECIPIENTS", "many")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("BOTE_LIMITS_MAX_RECIPIENTS") && e.contains("whole number"),
            "{e}"
        );

        let e = load(MINIMAL, &[("BOTE_GATEWAY_DOMAINS", "not a domain")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("BOTE_GATEWAY_DOMAINS") && e.contains("gateway.domains"),
            "{e}"
        );

        let e = load("[gateway]\n", &[]).unwrap_err().to_string();
        assert!(
            e.contains("gateway.domains") && e.contains("at least one"),
            "{e}"
        );

        let e = load(MINIMAL, &[("BOTE_DATABASE_URL", "mysql://x")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("database.url") && e.contains("postgres://"),
            "{e}"
        );

        let e = load("[gateway\n", &[]).unwrap_err().to_string();
        assert!(e.contains("not valid TOML") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn missing_files_are_named() {
        let e = load(
            &format!("{MINIMAL}[tls]\npeer_ca = \"certs/peers.pem\"\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("tls.peer_ca") && e.contains("certs/peers.pem"),
            "{e}"
        );
    }

    #[test]
    fn redacts_only_passwords() {
        assert_eq!(
            redact_url("postgres://bote:pw@db:5432/bote?sslmode=require"),
            "postgres://bote:***@db:5432/bote?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://bote@db/bote"),
            "postgres://bote@db/bote"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/bote/bote.db"),
            "sqlite:///var/lib/bote/bote.db"
        );
    }
}
