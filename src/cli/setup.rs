//! `bote init` and `bote demo`.

use std::path::{Path, PathBuf};

use rand::Rng;
use rand::distr::Alphanumeric;

use super::{CliError, load_config, serve};
use crate::accounts::service::{AccountError, Accounts, AddUser};
use crate::accounts::{Actor, IdentityMethod, Role};
use crate::address::{DomainName, EmailAddress};
use crate::config::Config;
use crate::keys::{self, Passphrase};
use crate::pki::{self, write_file};
use crate::store::{OpenMode, Store};

/// The domain of the demo setup (`.example` is reserved for documentation, RFC 2606).
const DEMO_DOMAIN: &str = "lemgo.example";

/// The config file `bote init` writes: development listeners on loopback.
fn config_template(domain: &DomainName) -> String {
    format!(
        r#"# bote configuration written by `bote init` for development.
# Every key can be overridden by BOTE_<SECTION>_<KEY> (lists comma-separated).
# Relative paths are relative to this file. See deploy/bote.production.toml for production.

[gateway]
domains = ["{domain}"]
data_dir = "data"

[database]
# Empty: SQLite at <data_dir>/bote.db. PostgreSQL: "postgres://bote@db.internal/bote".
url = ""
max_connections = 10
connect_timeout_secs = 5

[http]
listen = "127.0.0.1:8443"
metrics_listen = "127.0.0.1:9464"

[smtp]
mx_listen = "127.0.0.1:2525"
submission_listen = "127.0.0.1:2587"
submissions_listen = "127.0.0.1:2465"
trusted_networks = []
max_connections_per_client = 50

[tls]
cert = "certs/server.crt"
key = "certs/server.key"
ca_cert = "certs/ca.crt"
peer_ca = "certs/ca.crt"
relay_ca = ""

[keys]
dir = "keys"
# Development only: in production keep the passphrase off the data disk
# (systemd LoadCredential=, see deploy/README.md).
passphrase_file = "keys/passphrase"
passphrase_env = "BOTE_PASSPHRASE"

[limits]
message_size_gateway = 47185920
message_size_submission = 20971520
max_recipients = 100
citizen_daily_messages = 100
citizen_daily_recipients = 300
office_messages_per_hour = 10000
office_recipients_per_hour = 100000
http_max_body = 33554432

# Witnesses and trusted time (docs/proof-bundle.md, sections 11 and 12): uncomment to have
# every checkpoint cosigned by peer gateways and time-stamped (RFC 3161).
# [log]
# witness_quorum = 1
# timestamp_url = "https://tsa.example/tsr"
# timestamp_certs = ["<SHA-256 of the TSA certificate, hex>"]
# [[log.witnesses]]
# url = "https://detmold.example:8443/witness"
# key = "detmold.example/witness+<id>+<key>"   # `bote witness key` on that gateway
#
# This gateway as a witness of its peers' logs (their /log/key first line):
# [witness]
# enabled = true
# logs = ["detmold.example/log+<id>+<key>"]
"#
    )
}

fn io_err(path: &Path, e: std::io::Error) -> CliError {
    CliError::Io(format!("{}: {e}", path.display()))
}

/// `bote init --dir DIR --domain DOMAIN`.
pub async fn init(dir: &Path, domain: &str) -> Result<(), CliError> {
    let config_path = init_files(dir, domain).await?;
    let config = load_config(&config_path)?;
    let public = keys::PublicKeys::load(&config)?;
    out!("config: {}", config_path.display());
    out!("ca-cert: {}", dir.join("certs/ca.crt").display());
    out!("evidence-key: {}", public.evidence.fingerprint().to_hex());
    Ok(())
}

/// Writes the files and creates the database; on any failure removes what it created, so a
/// failed init leaves nothing behind. Returns the config path.
async fn init_files(dir: &Path, domain: &str) -> Result<PathBuf, CliError> {
    let domain =
        DomainName::parse(domain).map_err(|e| CliError::Usage(format!("--domain: {e}")))?;
    let config_path = dir.join("bote.toml");
    for existing in [
        &config_path,
        &dir.join("certs"),
        &dir.join("keys"),
        &dir.join("data"),
    ] {
        if existing.exists() {
            return Err(CliError::Usage(format!(
                "{} already exists: refusing to overwrite an existing setup",
                existing.display()
            )));
        }
    }
    let created_dir = !dir.exists();
    let result = write_setup(dir, &domain, &config_path).await;
    if result.is_err() {
        for sub in ["certs", "keys", "data"] {
            let _ = std::fs::remove_dir_all(dir.join(sub));
        }
        let _ = std::fs::remove_file(&config_path);
        if created_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
    result.map(|()| config_path)
}

async fn write_setup(dir: &Path, domain: &DomainName, config_path: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    pki::write_dev_pki(&dir.join("certs"), domain)?;
    let keys = dir.join("keys");
    create_private_dir(&keys)?;
    write_file(&keys.join("passphrase"), random_secret(32), true)?;
    create_private_dir(&dir.join("data"))?;
    write_file(config_path, config_template(domain), false)?;
    // Loading validates what was just written (overrides from the environment apply, so
    // `BOTE_DATABASE_URL=postgres://…` initialises a PostgreSQL database).
    let config = load_config(config_path)?;
    let passphrase = Passphrase::load(&config)?;
    keys::generate(&config, &passphrase)?;
    let store = Store::open(&config, OpenMode::CreateAndMigrate).await?;
    store.close().await;
    Ok(())
}

fn create_private_dir(path: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(path).map_err(|e| io_err(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io_err(path, e))?;
    }
    Ok(())
}

fn random_secret(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// One demo login.
struct DemoUser {
    role: Role,
    name: &'static str,
    local: &'static str,
}

const DEMO_USERS: &[DemoUser] = &[
    DemoUser {
        role: Role::Citizen,
        name: "Anna Muster",
        local: "anna",
    },
    DemoUser {
        role: Role::Staff,
        name: "Bernd Amtmann",
        local: "bernd",
    },
    DemoUser {
        role: Role::Legal,
        name: "Lena Recht",
        local: "lena",
    },
    DemoUser {
        role: Role::Admin,
        name: "Ada Admin",
        local: "admin",
    },
];
const DEMO_OFFICE: (&str, &str) = ("bauamt", "Bauamt Lemgo");

/// `bote demo`: init if missing, create demo users if missing, print logins, serve.
pub async fn demo(dir: &Path) -> Result<(), CliError> {
    let config_path = dir.join("bote.toml");
    if !config_path.exists() {
        init_files(dir, DEMO_DOMAIN).await?;
    }
    let config = load_config(&config_path)?;
    let logins = dir.join("demo-logins.txt");
    if !logins.exists() {
        let text = create_demo_accounts(&config).await?;
        write_file(&logins, &text, true)?;
    }
    let text = std::fs::read_to_string(&logins).map_err(|e| io_err(&logins, e))?;
    out!("{text}");
    if let Some(addr) = config.http.listen.0 {
        let ca = dir.join("certs/ca.crt");
        out!(
            "inbox:   https://{addr}/ (web inbox: log in with a demo login above; browsers warn \
             unless they trust the development CA {})",
            ca.display()
        );
        out!(
            "health:  curl --cacert {} https://{addr}/healthz",
            ca.display()
        );
        out!(
            "log:     curl --cacert {} https://{addr}/log/checkpoint",
            ca.display()
        );
        out!("api:     https://{addr}/api/v1/openapi.json (log in: POST /api/v1/session)");
    }
    if let Some(addr) = config.http.metrics_listen.0 {
        out!("metrics: http://{addr}/metrics");
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| "bote".into());
    out!(
        "cli:     {} --config {} user list",
        exe.display(),
        config_path.display()
    );
    let office = format!("{}@{}", DEMO_OFFICE.0, config.primary_domain());
    match (
        config.smtp.submission_listen.0,
        config.smtp.submissions_listen.0,
    ) {
        (None, None) => out!("smtp:    submission is off (smtp.submission_listen)"),
        (starttls, tls) => {
            let show = |a: Option<std::net::SocketAddr>| {
                a.map_or_else(|| "off".to_owned(), |a| a.to_string())
            };
            out!(
                "smtp:    submission {} (STARTTLS), {} (TLS); AUTH user {office}, password: {} \
                 --config {} token create --mailbox {office}",
                show(starttls),
                show(tls),
                exe.display(),
                config_path.display()
            );
        }
    }
    if let Some(addr) = config.smtp.mx_listen.0 {
        out!("smtp:    MX {addr} (office mail servers in smtp.trusted_networks)");
    }
    out!("stop with Ctrl-C");
    serve(config).await
}

async fn create_demo_accounts(config: &Config) -> Result<String, CliError> {
    let store = Store::open(config, OpenMode::CreateAndMigrate).await?;
    let domain = config.primary_domain();
    let accounts = Accounts::new(store, config.gateway.domains.clone());
    let actor = Actor::Operator("demo".into());
    let address = |local: &str| {
        EmailAddress::parse(&format!("{local}@{domain}"))
            .map_err(|e| CliError::Usage(e.to_string()))
    };
    let office = address(DEMO_OFFICE.0)?;
    let office_code = match accounts
        .add_office(&actor, &office, DEMO_OFFICE.1, None)
        .await
    {
        Ok(added) => added.recovery_code,
        Err(AccountError::DuplicateMailbox(_)) => None,
        Err(e) => return Err(e.into()),
    };
    // Verified, so that `authoritative` messages work from the first minute.
    accounts
        .verify_mailbox_identity(&actor, &office, IdentityMethod::InPerson)
        .await?;
    let mut text = String::from("demo logins (development only):\n");
    for u in DEMO_USERS {
        let email = address(u.local)?;
        let password = random_secret(16);
        let new = AddUser {
            role: u.role,
            name: u.name.to_owned(),
            email: email.clone(),
            password: zeroize::Zeroizing::new(password.clone()),
            notify_email: None,
            scope: Vec::new(),
        };
        let recovery = match accounts.add_user(&actor, new).await {
            Ok(added) => added.recovery_code,
            // A half-finished earlier demo: a throwaway setup may replace the key.
            Err(AccountError::DuplicateUser(_)) => accounts
                .set_password(
                    &actor,
                    &email,
                    zeroize::Zeroizing::new(password.clone()),
                    None,
                    true,
                )
                .await?
                .unwrap_or_default(),
            Err(e) => return Err(e.into()),
        };
        if u.role == Role::Staff {
            let code = office_code.clone().map(zeroize::Zeroizing::new);
            match accounts.add_member(&actor, &office, &email, code).await {
                Ok(_) | Err(AccountError::AlreadyMember { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        text.push_str(&format!(
            "  {:<8} {:<24} password: {password}  recovery-code: {recovery}\n",
            u.role, email
        ));
        // The citizen is verified by eID and has a second factor: level `high` and
        // authoritative messages out of the box.
        if u.role == Role::Citizen {
            accounts
                .verify_user_identity(&actor, &email, IdentityMethod::Eid)
                .await?;
            let user = accounts.user(&email).await?;
            let otpauth = crate::auth::Auth::new(accounts.store().clone(), domain.to_owned())
                .set_totp(&user, true)
                .await?;
            text.push_str(&format!("           second factor (TOTP): {otpauth}\n"));
        }
    }
    text.push_str(&format!("  office   {office} (member: bernd@{domain})"));
    if let Some(code) = office_code {
        text.push_str(&format!("  recovery-code: {code}"));
    }
    text.push('\n');
    Ok(text)
}
