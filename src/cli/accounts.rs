//! `bote user …` and `bote mailbox …`.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::{CliError, load_config, read_secret_line, read_secret_lines};
use crate::accounts::service::Accounts;
use crate::accounts::service::{AddUser, RelaySpec};
use crate::accounts::{Actor, Identity, IdentityMethod, MailboxKind, RelayTls, Role};
use crate::address::EmailAddress;
use crate::clock::rfc3339_ms;
use crate::store::{OpenMode, Store};

/// `bote user …`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user (a citizen also gets a mailbox at their address).
    Add {
        /// Role.
        #[arg(long, value_enum)]
        role: Role,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Login address.
        #[arg(long, value_parser = parse_address)]
        email: EmailAddress,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Ordinary e-mail address for arrival notices.
        #[arg(long, value_parser = parse_address)]
        notify_email: Option<EmailAddress>,
        /// Legal users only: limit evidence access to this mailbox (repeatable; without it
        /// a legal user sees all evidence).
        #[arg(long, value_parser = parse_address)]
        scope: Vec<EmailAddress>,
    },
    /// List users: login, role, identity, state, whose key (`key=own` once the user
    /// chose their own password, `key=operator` before), name.
    List,
    /// Refuse further logins by a user (ends their sessions, revokes their read tokens).
    Disable {
        /// Login address.
        #[arg(value_parser = parse_address)]
        email: EmailAddress,
    },
    /// Allow a disabled user to log in again.
    Enable {
        /// Login address.
        #[arg(value_parser = parse_address)]
        email: EmailAddress,
    },
    /// Lift a user's login throttle after failed attempts.
    Unlock {
        /// Login address.
        #[arg(value_parser = parse_address)]
        email: EmailAddress,
    },
    /// Enrol a TOTP second factor for a user (in person); prints `otpauth: …` once.
    Totp {
        /// Login address.
        #[arg(value_parser = parse_address)]
        email: EmailAddress,
    },
    /// Set a user's password (read from standard input).
    SetPassword {
        /// Login address.
        #[arg(value_parser = parse_address)]
        email: EmailAddress,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Read the user's recovery code from the second line: the user keeps their key.
        #[arg(long, conflicts_with = "new_key")]
        recovery_code_stdin: bool,
        /// Without the recovery code: give the user a new key (older mail stays unreadable).
        #[arg(long)]
        new_key: bool,
    },
    /// Record that a user's identity was verified.
    VerifyIdentity {
        /// Login address.
        #[arg(value_parser = parse_address)]
        email: EmailAddress,
        /// How it was verified.
        #[arg(long, value_enum)]
        method: IdentityMethod,
    },
}

/// `bote token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a send-only credential for office software (AUTH user: the mailbox address;
    /// password: the token). Prints the token alone, once.
    Create {
        /// The office mailbox it sends for.
        #[arg(long, value_parser = parse_address)]
        mailbox: EmailAddress,
        /// A client certificate (PEM) the token must be presented with (level `high`).
        #[arg(long)]
        client_cert: Option<PathBuf>,
    },
    /// List tokens (never the tokens themselves): one `token:` line each.
    List {
        /// Only this mailbox's tokens.
        #[arg(long, value_parser = parse_address)]
        mailbox: Option<EmailAddress>,
    },
    /// Revoke a token by the id `bote token list` shows; a read token's key wrap goes too.
    Revoke {
        /// Token id.
        id: i64,
    },
}

/// The first certificate of a PEM file, DER-encoded.
fn first_cert(flag: &'static str, path: &Path) -> Result<Vec<u8>, CliError> {
    crate::tls::load_certs(flag, path)
        .map_err(|e| CliError::Usage(e.to_string()))?
        .into_iter()
        .next()
        .map(|c| c.to_vec())
        .ok_or_else(|| CliError::Usage(format!("{flag} {}: no certificate", path.display())))
}

/// Runs a `bote token` command.
pub async fn token(config: &Path, command: TokenCommand) -> Result<(), CliError> {
    let accounts = open(config).await?;
    match command {
        TokenCommand::Create {
            mailbox,
            client_cert,
        } => {
            let der = match &client_cert {
                Some(path) => Some(first_cert("--client-cert", path)?),
                None => None,
            };
            let token = accounts
                .create_send_token(&Actor::current_operator(), &mailbox, der.as_deref())
                .await?;
            out!("{token}");
        }
        TokenCommand::List { mailbox } => {
            for t in accounts.list_tokens(mailbox.as_ref()).await? {
                let state = t.revoked_at.map_or_else(
                    || "live".to_owned(),
                    |at| format!("revoked {}", rfc3339_ms(at)),
                );
                let cert = t
                    .client_cert_sha256
                    .map(|c| format!(" client-cert={c}"))
                    .unwrap_or_default();
                out!(
                    "token: {} mailbox={} scope={} created={} by={}{cert} state={state}",
                    t.id,
                    t.mailbox,
                    t.scope,
                    rfc3339_ms(t.created_at),
                    t.created_by,
                );
            }
        }
        TokenCommand::Revoke { id } => {
            accounts
                .revoke_token(&Actor::current_operator(), id)
                .await?;
            out!("revoked: {id}");
        }
    }
    Ok(())
}

/// `bote mailbox …`
#[derive(Debug, Subcommand)]
pub enum MailboxCommand {
    /// Add an office mailbox: local, or external with --relay and --cert.
    Add {
        /// Office address.
        #[arg(long, value_parser = parse_address)]
        office: EmailAddress,
        /// Office name.
        #[arg(long)]
        name: String,
        /// The office's own mail server, HOST:PORT (makes the mailbox external).
        #[arg(long, requires = "cert")]
        relay: Option<String>,
        /// The office's OpenPGP certificate (armoured or binary) for external offices.
        #[arg(long, requires = "relay")]
        cert: Option<PathBuf>,
        /// A staff user to make the first member at once (local offices): later members are
        /// granted by a member or with the recovery code.
        #[arg(long, value_parser = parse_address, conflicts_with = "relay")]
        member: Option<EmailAddress>,
        /// TLS towards the relay.
        #[arg(long, requires = "relay", value_enum, default_value = "required")]
        relay_tls: RelayTls,
    },
    /// List mailboxes.
    List,
    /// Make a staff user a member of a local office mailbox.
    AddMember {
        /// Office address.
        #[arg(long, value_parser = parse_address)]
        mailbox: EmailAddress,
        /// Staff login.
        #[arg(long, value_parser = parse_address)]
        user: EmailAddress,
        /// Read the mailbox recovery code from standard input and complete the grant now
        /// (otherwise it waits for a member who holds the key to confirm it).
        #[arg(long)]
        recovery_code_stdin: bool,
    },
    /// End a member's access: the membership, their wrap of the mailbox key, and the read
    /// tokens they created for it.
    RemoveMember {
        /// Office address.
        #[arg(long, value_parser = parse_address)]
        mailbox: EmailAddress,
        /// Staff login.
        #[arg(long, value_parser = parse_address)]
        user: EmailAddress,
    },
    /// Register the client certificate of an external office's mail server: over MX it may
    /// then deliver that office's mail from any network (not only smtp.trusted_networks).
    ServerCert {
        /// External office address.
        #[arg(long, value_parser = parse_address)]
        office: EmailAddress,
        /// The server's certificate (PEM) as it presents it in the TLS handshake.
        #[arg(long)]
        cert: PathBuf,
    },
    /// Set an office mailbox's own send rates (spec §2), instead of the configured defaults
    /// limits.office_messages_per_hour and limits.office_recipients_per_hour.
    RateLimit {
        /// Office address.
        #[arg(long, value_parser = parse_address)]
        office: EmailAddress,
        /// Messages per hour (0: unlimited; omitted: the configured default).
        #[arg(long)]
        messages_per_hour: Option<u32>,
        /// Recipients per hour, all messages together (0: unlimited; omitted: the default).
        #[arg(long)]
        recipients_per_hour: Option<u32>,
    },
    /// Record that an office's identity was verified.
    VerifyIdentity {
        /// Office address.
        #[arg(value_parser = parse_address)]
        address: EmailAddress,
        /// How it was verified.
        #[arg(long, value_enum)]
        method: IdentityMethod,
    },
}

fn parse_address(s: &str) -> Result<EmailAddress, String> {
    EmailAddress::parse(s).map_err(|e| e.to_string())
}
/// The closed sets of the accounts model as clap value enums, so that `--help` lists
/// their values.
macro_rules! value_enum {
    ($($t:ty),+) => {$(
        impl clap::ValueEnum for $t {
            fn value_variants<'a>() -> &'a [Self] {
                Self::ALL
            }
            fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
                Some(clap::builder::PossibleValue::new(self.as_str()))
            }
        }
    )+};
}
value_enum!(Role, IdentityMethod, RelayTls);

async fn open(config_path: &Path) -> Result<Accounts, CliError> {
    let config = load_config(config_path)?;
    let store = Store::open(&config, OpenMode::Existing).await?;
    Ok(Accounts::new(store, config.gateway.domains.clone()))
}

fn require_stdin_flag(given: bool) -> Result<(), CliError> {
    if given {
        Ok(())
    } else {
        Err(CliError::Usage(
            "a password is required: pass --password-stdin and write it to standard input \
             (passwords are never taken from arguments)"
                .into(),
        ))
    }
}

fn describe_identity(identity: &Identity) -> String {
    match &identity.verification {
        Some(v) => format!("verified:{}", v.method),
        None => "unverified".to_owned(),
    }
}

/// Runs a `bote user` command.
pub async fn user(config: &Path, command: UserCommand) -> Result<(), CliError> {
    let actor = Actor::current_operator();
    match command {
        UserCommand::Add {
            role,
            name,
            email,
            password_stdin,
            notify_email,
            scope,
        } => {
            require_stdin_flag(password_stdin)?;
            let password = read_secret_line("password")?;
            let accounts = open(config).await?;
            let new = AddUser {
                role,
                name,
                email,
                password,
                notify_email,
                scope,
            };
            let added = accounts.add_user(&actor, new).await?;
            out!("user: {}", added.user.email);
            out!("recovery-code: {}", added.recovery_code);
        }
        UserCommand::List => {
            let accounts = open(config).await?;
            for u in accounts.list_users().await? {
                out!(
                    "{}\t{}\t{}\t{}\tkey={}\t{}",
                    u.email,
                    u.role,
                    describe_identity(&u.identity),
                    if u.disabled { "disabled" } else { "active" },
                    // `operator`: still the key `user add` made; ask the user to choose
                    // their own password.
                    if u.own_key { "own" } else { "operator" },
                    u.name
                );
            }
        }
        UserCommand::Disable { email } => {
            let accounts = open(config).await?;
            accounts.disable_user(&actor, &email).await?;
            out!("disabled: {email}");
        }
        UserCommand::Enable { email } => {
            let accounts = open(config).await?;
            accounts.enable_user(&actor, &email).await?;
            out!("enabled: {email}");
        }
        UserCommand::Unlock { email } => {
            let accounts = open(config).await?;
            accounts.unlock_user(&actor, &email).await?;
            out!("unlocked: {email}");
        }
        UserCommand::Totp { email } => {
            let accounts = open(config).await?;
            let user = accounts.user(&email).await?;
            let loaded = load_config(config)?;
            let issuer = loaded.primary_domain().to_owned();
            let auth = crate::auth::Auth::new(accounts.store().clone(), issuer);
            let url = auth.set_totp(&user, true).await?;
            out!("otpauth: {url}");
        }
        UserCommand::SetPassword {
            email,
            password_stdin,
            recovery_code_stdin,
            new_key,
        } => {
            require_stdin_flag(password_stdin)?;
            let (password, code) = if recovery_code_stdin {
                let mut lines = read_secret_lines(&["password", "recovery code"])?;
                let code = lines.pop();
                (lines.remove(0), code)
            } else {
                (read_secret_line("password")?, None)
            };
            let accounts = open(config).await?;
            let new_code = accounts
                .set_password(&actor, &email, password, code, new_key)
                .await?;
            out!("password-set: {email}");
            if let Some(code) = new_code {
                out!("recovery-code: {code}");
            }
        }
        UserCommand::VerifyIdentity { email, method } => {
            let accounts = open(config).await?;
            let v = accounts
                .verify_user_identity(&actor, &email, method)
                .await?;
            out!(
                "verified: {email} {} {}",
                v.method,
                rfc3339_ms(v.verified_at)
            );
        }
    }
    Ok(())
}

/// Runs a `bote mailbox` command.
pub async fn mailbox(config: &Path, command: MailboxCommand) -> Result<(), CliError> {
    let actor = Actor::current_operator();
    match command {
        MailboxCommand::Add {
            office,
            name,
            relay,
            cert,
            relay_tls,
            member,
        } => {
            let relay = match (relay, cert) {
                (Some(target), Some(cert_path)) => {
                    let cert = std::fs::read(&cert_path).map_err(|e| {
                        CliError::Io(format!("cannot read {}: {e}", cert_path.display()))
                    })?;
                    Some(RelaySpec {
                        target,
                        tls: relay_tls,
                        cert,
                    })
                }
                _ => None,
            };
            let accounts = open(config).await?;
            // The first member is checked before anything is made, then granted with the
            // new mailbox's recovery code while the command still holds it.
            if let Some(user) = &member {
                accounts.check_member(user).await?;
            }
            let added = accounts.add_office(&actor, &office, &name, relay).await?;
            out!(
                "mailbox: {} ({})",
                added.mailbox.address,
                added.mailbox.kind
            );
            if let (Some(user), Some(code)) = (&member, &added.recovery_code) {
                let code = zeroize::Zeroizing::new(code.clone());
                let state = accounts
                    .add_member(&actor, &office, user, Some(code))
                    .await?;
                out!("member: {user} of {office} ({state})");
            }
            if let Some(code) = added.recovery_code {
                out!("recovery-code: {code}");
            }
        }
        MailboxCommand::List => {
            let accounts = open(config).await?;
            for m in accounts.list_mailboxes().await? {
                let extra = match (&m.kind, &m.relay) {
                    (MailboxKind::External, Some(r)) => {
                        format!(
                            "relay={}:{} tls={} cert={}",
                            r.host, r.port, r.tls, r.cert_fingerprint
                        )
                    }
                    (MailboxKind::Office, _) => {
                        let members = accounts.members(&m.address).await?;
                        let names: Vec<String> = members
                            .iter()
                            .map(|ms| format!("{}({})", ms.user, ms.state))
                            .collect();
                        format!("members={}", names.join(","))
                    }
                    _ => String::new(),
                };
                out!(
                    "{}\t{}\t{}\t{}\t{}",
                    m.address,
                    m.kind,
                    describe_identity(&m.identity),
                    m.name,
                    extra
                );
            }
        }
        MailboxCommand::AddMember {
            mailbox,
            user,
            recovery_code_stdin,
        } => {
            let code = if recovery_code_stdin {
                Some(read_secret_line("recovery code")?)
            } else {
                None
            };
            let accounts = open(config).await?;
            let state = accounts.add_member(&actor, &mailbox, &user, code).await?;
            out!("member: {user} of {mailbox} ({state})");
            if state == crate::accounts::MembershipState::Pending {
                out!(
                    "waiting for a member of {mailbox} to confirm it in the web inbox \
                     (Settings), after comparing {user}'s key fingerprint with them"
                );
            }
        }
        MailboxCommand::RemoveMember { mailbox, user } => {
            let accounts = open(config).await?;
            accounts.remove_member(&actor, &mailbox, &user).await?;
            out!("removed: {user} from {mailbox}");
        }
        MailboxCommand::ServerCert { office, cert } => {
            let der = first_cert("--cert", &cert)?;
            let accounts = open(config).await?;
            let fingerprint = accounts
                .add_office_server_cert(&actor, &office, &der)
                .await?;
            out!("server certificate: {office} sha256={fingerprint}");
        }
        MailboxCommand::RateLimit {
            office,
            messages_per_hour,
            recipients_per_hour,
        } => {
            let accounts = open(config).await?;
            accounts
                .set_office_rate_limits(&actor, &office, messages_per_hour, recipients_per_hour)
                .await?;
            let show = |own: Option<u32>, default: u32| match own.unwrap_or(default) {
                0 => "unlimited".to_owned(),
                n => n.to_string(),
            };
            let limits = load_config(config)?.limits;
            out!(
                "rate limit: {office} {} messages and {} recipients per hour",
                show(messages_per_hour, limits.office_messages_per_hour),
                show(recipients_per_hour, limits.office_recipients_per_hour)
            );
        }
        MailboxCommand::VerifyIdentity { address, method } => {
            let accounts = open(config).await?;
            let v = accounts
                .verify_mailbox_identity(&actor, &address, method)
                .await?;
            out!(
                "verified: {address} {} {}",
                v.method,
                rfc3339_ms(v.verified_at)
            );
        }
    }
    Ok(())
}
