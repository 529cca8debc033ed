//! One SMTP submission session as a state machine: a command line in, a reply (and what
//! the connection must do next) out. Sockets and TLS stay in `mod.rs`, so that every rule
//! here is exercised line by line.
//!
//! Commands are parsed by `smtp-proto`; policy comes from the gateway core: who the token
//! belongs to (`Auth`), whether a recipient exists (`Gateway::resolve_recipient`), the
//! submission itself (`Gateway::submit_as`, the API's path, with its evidence).

use std::borrow::Cow;
use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN, Request};

use super::reply::{Reply, for_failure};
use crate::accounts::credential::{Credential, Kind};
use crate::accounts::{AuthLevel, MailboxKind};
use crate::address::EmailAddress;
use crate::auth::ClientCert;
use crate::error::Classify;
use crate::gateway::Gateway;
use crate::message::{Content, Options};
use crate::pipeline::{Channel, Recipient, Submission, Submitter};

/// Why an AUTH did not succeed.
enum AuthRefusal {
    /// The credentials are wrong (or not this mailbox's): 535, counted as a failure.
    Invalid(&'static str),
    /// The gateway could not check them: 454, counted toward no lockout (the tenth in a
    /// session closes it, [`MAX_AUTH_UNCHECKED`]).
    Temporary,
}

impl AuthRefusal {
    /// `e` as the client sees it: invalid credentials, unless the gateway itself failed.
    fn of(e: &(impl Classify + std::fmt::Display), what: &str) -> Self {
        use crate::error::ErrorKind;
        match e.failure().kind {
            ErrorKind::Unavailable | ErrorKind::Internal => {
                tracing::warn!(error = %e, "{what}: the gateway failed");
                Self::Temporary
            }
            _ => {
                tracing::info!(error = %e, "{what}");
                Self::Invalid("invalid credentials")
            }
        }
    }
}

/// Commands one session may send without a message accepted before it is closed (loops
/// and garbage end; an office server that keeps its connection open to deliver mail does
/// not: every accepted message starts the count again).
pub const MAX_COMMANDS: u32 = 1000;
/// Failed AUTH attempts before the session is closed.
pub const MAX_AUTH_FAILURES: u32 = 3;
/// AUTHs the gateway could not check (454) before the session is closed: they count
/// toward no lockout, and each may hold a worker for a locked database's timeout.
pub const MAX_AUTH_UNCHECKED: u32 = 10;

/// Which listener the session is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Submission: AUTH with a mailbox token, send as that mailbox.
    Submission,
    /// MX: mail from registered office mail servers (the client is in
    /// `smtp.trusted_networks` when `trusted`) to this gateway's mailboxes.
    Mx {
        /// The client may deliver here.
        trusted: bool,
    },
}

/// How an MX client is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MxClient {
    /// By the certificate its office registered (the office's mailbox id).
    Certificate(i64),
    /// By its address, in `smtp.trusted_networks`.
    Network,
    /// Not at all.
    Unknown,
}

/// What the connection does after sending the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Read the next command.
    Command,
    /// Upgrade to TLS, then start over (RFC 3207).
    StartTls,
    /// Read the message after a 354 (at most this many octets).
    Data(u64),
    /// Read one AUTH continuation line.
    AuthContinue,
    /// Close the connection.
    Close,
}

#[derive(Debug)]
enum AuthStep {
    LoginUser,
    LoginPassword(String),
    Plain,
}

/// One session's state.
#[derive(Debug)]
pub struct Session {
    mode: Mode,
    hostname: String,
    tls: bool,
    client_cert: Option<ClientCert>,
    greeted: bool,
    submitter: Option<Submitter>,
    mail_from: bool,
    /// MX: a null reverse path, which only delivery status notifications use, and how
    /// its client is known.
    bounce: Option<MxClient>,
    recipients: Vec<EmailAddress>,
    /// What each accepted RCPT resolved to, handed to the pipeline with the message so
    /// that it does not look the mailboxes up a second time.
    resolved: Vec<Recipient>,
    commands: u32,
    auth_failures: u32,
    auth_unchecked: u32,
    auth_step: Option<AuthStep>,
    max_size: u64,
    max_recipients: usize,
    /// The SIZE the client declared at MAIL (0: none).
    declared_size: u64,
    /// The client's address: AUTH failures are counted per address across sessions.
    peer: IpAddr,
}

impl Session {
    /// A session with the client at `peer` on a connection that is (`tls`) or is not yet
    /// encrypted.
    pub fn new(
        mode: Mode,
        peer: IpAddr,
        hostname: &str,
        tls: bool,
        max_size: u64,
        max_recipients: usize,
    ) -> Self {
        Self {
            mode,
            peer,
            hostname: hostname.to_owned(),
            tls,
            client_cert: None,
            greeted: false,
            submitter: None,
            mail_from: false,
            bounce: None,
            recipients: Vec::new(),
            resolved: Vec::new(),
            commands: 0,
            auth_failures: 0,
            auth_unchecked: 0,
            auth_step: None,
            max_size,
            max_recipients,
            declared_size: 0,
        }
    }

    /// The greeting.
    pub fn banner(&self) -> Reply {
        Reply {
            code: 220,
            status: None,
            text: format!("{} ESMTP bote", self.hostname),
        }
    }

    /// The connection is now encrypted (after STARTTLS): everything said before is
    /// forgotten (RFC 3207 §4.2).
    pub fn tls_started(&mut self, client_cert: Option<ClientCert>) {
        self.tls = true;
        self.client_cert = client_cert;
        self.greeted = false;
        self.submitter = None;
        self.reset();
    }

    fn reset(&mut self) {
        self.mail_from = false;
        // A later transaction without SIZE must not wait for this one's declared size.
        self.declared_size = 0;
        self.bounce = None;
        self.recipients.clear();
        self.resolved.clear();
    }

    fn ehlo(&mut self, host: &str) -> Reply {
        self.greeted = true;
        self.reset();
        let mut lines = vec![format!("{} greets {host}", self.hostname)];
        lines.push("PIPELINING".into());
        lines.push(format!("SIZE {}", self.max_size));
        lines.push("8BITMIME".into());
        lines.push("ENHANCEDSTATUSCODES".into());
        if !self.tls {
            lines.push("STARTTLS".into());
        } else if self.mode == Mode::Submission {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        Reply::lines(250, &lines)
    }

    /// Counts a command line, also one refused unread (too long): past [`MAX_COMMANDS`]
    /// since the last accepted message, the reply that ends the session.
    pub fn count_command(&mut self) -> Option<Reply> {
        self.commands += 1;
        (self.commands > MAX_COMMANDS)
            .then(|| Reply::new(421, "4.7.0", "too many commands in one session"))
    }

    /// Handles one command line (without its CRLF).
    pub async fn command(&mut self, gateway: &Gateway, line: &[u8]) -> (Reply, Next) {
        if let Some(enough) = self.count_command() {
            return (enough, Next::Close);
        }
        if let Some(step) = self.auth_step.take() {
            return self.auth_continue(gateway, step, line).await;
        }
        let mut with_lf = line.to_vec();
        with_lf.extend_from_slice(b"\r\n");
        let request = match Request::parse(&mut with_lf.iter()) {
            Ok(r) => r,
            Err(smtp_proto::Error::UnknownCommand) => {
                return (
                    Reply::new(500, "5.5.1", "command not recognised"),
                    Next::Command,
                );
            }
            Err(e) => {
                return (
                    Reply::new(501, "5.5.4", format!("syntax error: {e:?}")),
                    Next::Command,
                );
            }
        };
        self.request(gateway, request).await
    }

    async fn request(
        &mut self,
        gateway: &Gateway,
        request: Request<Cow<'_, str>>,
    ) -> (Reply, Next) {
        let ok = |text: &str| (Reply::new(250, "2.0.0", text), Next::Command);
        match request {
            Request::Ehlo { host } | Request::Helo { host } => (self.ehlo(&host), Next::Command),
            Request::Lhlo { .. } => (
                Reply::new(500, "5.5.1", "this is not an LMTP server"),
                Next::Command,
            ),
            Request::StartTls if self.tls => (
                Reply::new(503, "5.5.1", "TLS is already active"),
                Next::Command,
            ),
            Request::StartTls => (
                Reply::new(220, "2.0.0", "ready to start TLS"),
                Next::StartTls,
            ),
            Request::Noop { .. } => ok("ok"),
            Request::Rset => {
                self.reset();
                ok("reset")
            }
            Request::Quit => (Reply::new(221, "2.0.0", "bye"), Next::Close),
            Request::Vrfy { .. } | Request::Expn { .. } => (
                Reply::new(252, "2.1.5", "cannot verify, send and see"),
                Next::Command,
            ),
            Request::Help { .. } => ok("see RFC 5321"),
            _ if !self.greeted => (Reply::new(503, "5.5.1", "say EHLO first"), Next::Command),
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(gateway, mechanism, &initial_response).await,
            Request::Mail { from } => match self.mode {
                Mode::Submission => self.mail(&from.address, from.size as u64),
                Mode::Mx { trusted } => {
                    let by = match self.server_office(gateway, trusted).await {
                        Ok(by) => by,
                        Err(reply) => return (reply, Next::Command),
                    };
                    self.mx_mail(gateway, by, &from.address, from.size as u64)
                        .await
                }
            },
            Request::Rcpt { to } => self.rcpt(gateway, &to.address).await,
            Request::Data => self.data(),
            Request::Bdat { .. }
            | Request::Burl { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. } => (
                Reply::new(502, "5.5.1", "command not implemented"),
                Next::Command,
            ),
        }
    }

    async fn auth(&mut self, gateway: &Gateway, mechanism: u64, initial: &str) -> (Reply, Next) {
        if self.mode != Mode::Submission {
            return (
                Reply::new(503, "5.5.1", "AUTH is for the submission port"),
                Next::Command,
            );
        }
        if !self.tls {
            return (
                Reply::new(530, "5.7.0", "must issue a STARTTLS command first"),
                Next::Command,
            );
        }
        if self.submitter.is_some() {
            return (
                Reply::new(503, "5.5.1", "already authenticated"),
                Next::Command,
            );
        }
        match mechanism {
            AUTH_PLAIN if initial.is_empty() => {
                self.auth_step = Some(AuthStep::Plain);
                (Reply::continuation(""), Next::AuthContinue)
            }
            AUTH_PLAIN => self.auth_plain(gateway, initial.as_bytes()).await,
            AUTH_LOGIN if initial.is_empty() => {
                self.auth_step = Some(AuthStep::LoginUser);
                (challenge("Username:"), Next::AuthContinue)
            }
            AUTH_LOGIN => match decode(initial.as_bytes()) {
                Some(user) => {
                    self.auth_step = Some(AuthStep::LoginPassword(user));
                    (challenge("Password:"), Next::AuthContinue)
                }
                None => self.auth_failed("the username is not base64"),
            },
            _ => (
                Reply::new(504, "5.5.4", "unsupported mechanism: use PLAIN or LOGIN"),
                Next::Command,
            ),
        }
    }

    async fn auth_continue(
        &mut self,
        gateway: &Gateway,
        step: AuthStep,
        line: &[u8],
    ) -> (Reply, Next) {
        if line == b"*" {
            return (
                Reply::new(501, "5.0.0", "authentication cancelled"),
                Next::Command,
            );
        }
        match step {
            AuthStep::Plain => self.auth_plain(gateway, line).await,
            AuthStep::LoginUser => match decode(line) {
                Some(user) => {
                    self.auth_step = Some(AuthStep::LoginPassword(user));
                    (challenge("Password:"), Next::AuthContinue)
                }
                None => self.auth_failed("the username is not base64"),
            },
            AuthStep::LoginPassword(user) => match decode(line) {
                Some(password) => self.login(gateway, &user, &password).await,
                None => self.auth_failed("the password is not base64"),
            },
        }
    }

    async fn auth_plain(&mut self, gateway: &Gateway, b64: &[u8]) -> (Reply, Next) {
        let Some(decoded) = decode(b64) else {
            return self.auth_failed("the response is not base64");
        };
        let mut parts = decoded.split('\0');
        let (Some(_authzid), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return self.auth_failed("expected authzid NUL user NUL password");
        };
        self.login(gateway, user, password).await
    }

    /// The user is the mailbox address, the password a token of that mailbox. Failures
    /// count in the gateway's failed-login tracker too (per mailbox, per client address,
    /// and both), so that reconnecting does not give a guesser fresh tries; past its
    /// allowance AUTH is refused for a while without the credential being looked at.
    async fn login(&mut self, gateway: &Gateway, user: &str, password: &str) -> (Reply, Next) {
        let address = EmailAddress::parse(user);
        // Apart from web logins of the same address: an office's SMTP guesser must not
        // lock a citizen out of the web inbox.
        let account = format!(
            "smtp:{}",
            address
                .as_ref()
                .map_or_else(|_| user.to_lowercase(), EmailAddress::key)
        );
        let lockout = gateway.auth().lockout();
        let _turn = lockout.turn(&account, Some(self.peer)).await;
        let now = crate::clock::now_ms();
        let wait = lockout.wait_secs(&account, Some(self.peer), now);
        if wait > 0 {
            return self.auth_refused(Reply::new(
                454,
                "4.7.0",
                format!("too many failed authentications; try again in {wait} s"),
            ));
        }
        let outcome = self.check_credentials(gateway, address, password).await;
        match outcome {
            Ok(submitter) => {
                lockout.note_success(&account, Some(self.peer));
                self.submitter = Some(submitter);
                (
                    Reply::new(235, "2.7.0", "authentication successful"),
                    Next::Command,
                )
            }
            Err(AuthRefusal::Invalid(why)) => {
                // From the refusal, as for web logins (`auth::session`).
                lockout.note_failure(&account, Some(self.peer), crate::clock::now_ms());
                self.auth_failed(why)
            }
            // The gateway could not check the token (its database failed): the client
            // did nothing wrong, so neither the lockout nor the session's count moves.
            Err(AuthRefusal::Temporary) => {
                self.auth_unchecked += 1;
                if self.auth_unchecked >= MAX_AUTH_UNCHECKED {
                    return (
                        Reply::new(
                            421,
                            "4.3.0",
                            "temporary failure of the gateway, try again later",
                        ),
                        Next::Close,
                    );
                }
                (
                    Reply::new(
                        454,
                        "4.7.0",
                        "temporary authentication failure, try again later",
                    ),
                    Next::Command,
                )
            }
        }
    }

    /// The submitter a mailbox address and token stand for, or why not.
    async fn check_credentials(
        &self,
        gateway: &Gateway,
        address: Result<EmailAddress, crate::address::AddressError>,
        password: &str,
    ) -> Result<Submitter, AuthRefusal> {
        let address =
            address.map_err(|_| AuthRefusal::Invalid("the user name is the mailbox address"))?;
        // Mailbox tokens only (`bote token create`, spec §3): a web session's token is
        // not a password for SMTP, whatever level its login reached.
        let credential = Credential::parse(password.trim())
            .filter(|c| c.kind() == Kind::MailboxToken)
            .ok_or(AuthRefusal::Invalid("invalid credentials"))?;
        let caller = gateway
            .auth()
            .resolve(&credential, self.client_cert)
            .await
            .map_err(|e| AuthRefusal::of(&e, "SMTP AUTH refused"))?;
        gateway
            .submitter(&caller, Some(&address), Channel::Smtp)
            .await
            .map_err(|e| AuthRefusal::of(&e, "SMTP AUTH for another mailbox refused"))
    }

    fn auth_failed(&mut self, why: &str) -> (Reply, Next) {
        self.auth_refused(Reply::new(535, "5.7.8", why))
    }

    /// Counts a failed AUTH: `reply`, or at [`MAX_AUTH_FAILURES`] the end of the session.
    fn auth_refused(&mut self, reply: Reply) -> (Reply, Next) {
        self.auth_failures += 1;
        if self.auth_failures >= MAX_AUTH_FAILURES {
            return (
                Reply::new(421, "4.7.0", "too many failed authentications"),
                Next::Close,
            );
        }
        (reply, Next::Command)
    }

    fn mail(&mut self, from: &str, size: u64) -> (Reply, Next) {
        let Some(submitter) = &self.submitter else {
            let reply = if self.tls {
                Reply::new(530, "5.7.0", "authentication required")
            } else {
                Reply::new(530, "5.7.0", "must issue a STARTTLS command first")
            };
            return (reply, Next::Command);
        };
        if self.mail_from {
            return (
                Reply::new(503, "5.5.1", "nested MAIL command"),
                Next::Command,
            );
        }
        if size > self.max_size {
            return (
                Reply::new(
                    552,
                    "5.3.4",
                    format!("message size exceeds the limit of {} octets", self.max_size),
                ),
                Next::Command,
            );
        }
        let own =
            EmailAddress::parse(from).is_ok_and(|a| a.key() == submitter.mailbox.address.key());
        if !own {
            return (
                Reply::new(
                    553,
                    "5.7.1",
                    format!(
                        "sender must be the authenticated mailbox {}",
                        submitter.mailbox.address
                    ),
                ),
                Next::Command,
            );
        }
        self.mail_from = true;
        self.declared_size = size;
        (Reply::new(250, "2.1.0", "sender ok"), Next::Command)
    }

    /// The most the coming DATA may hold: the declared SIZE, else the limit (DATA is read
    /// against the limit, not the declaration).
    pub fn expected_size(&self) -> u64 {
        match self.declared_size {
            0 => self.max_size,
            declared => declared.min(self.max_size),
        }
    }

    /// Recipients accepted so far in this transaction.
    pub fn recipient_count(&self) -> usize {
        self.recipients.len()
    }

    /// The SIZE the client declared at MAIL, 0 if none.
    pub fn declared_size(&self) -> u64 {
        self.declared_size
    }

    /// Whether this MX client is a registered office mail server, and how it is known.
    async fn server_office(&self, gateway: &Gateway, trusted: bool) -> Result<MxClient, Reply> {
        if let Some(cert) = &self.client_cert {
            match gateway.office_server(cert).await {
                Ok(Some(office)) => return Ok(MxClient::Certificate(office)),
                Ok(None) => {}
                Err(e) => return Err(for_failure(&e.failure())),
            }
        }
        Ok(if trusted {
            MxClient::Network
        } else {
            MxClient::Unknown
        })
    }

    /// MX: the sender must be a registered external office, from its registered server.
    async fn mx_mail(
        &mut self,
        gateway: &Gateway,
        client: MxClient,
        from: &str,
        size: u64,
    ) -> (Reply, Next) {
        if client == MxClient::Unknown {
            return (unregistered(), Next::Command);
        }
        // Before the sender is looked up and taken: a refused MAIL must not change the
        // sender of the transaction already open.
        if self.mail_from {
            return (
                Reply::new(503, "5.5.1", "nested MAIL command"),
                Next::Command,
            );
        }
        if from.is_empty() {
            self.bounce = Some(client);
            self.mail_from = true;
            return (Reply::new(250, "2.1.0", "null sender ok"), Next::Command);
        }
        let office = match EmailAddress::parse(from) {
            Ok(a) => gateway.resolve_recipient(&a).await,
            Err(e) => return (Reply::new(553, "5.1.7", e.to_string()), Next::Command),
        };
        match office {
            // A server known by its certificate speaks for its own office only.
            Ok(Some(r)) if matches!(client, MxClient::Certificate(id) if id != r.mailbox.id) => (
                Reply::new(
                    550,
                    "5.7.1",
                    format!(
                        "this server's certificate is registered for another office, not {from}"
                    ),
                ),
                Next::Command,
            ),
            Ok(Some(r)) if r.mailbox.kind == MailboxKind::External => {
                self.submitter = Some(Submitter {
                    mailbox: r.mailbox,
                    auth_level: AuthLevel::None,
                    channel: Channel::Mx,
                });
                self.mail(from, size)
            }
            Ok(_) => (
                Reply::new(
                    550,
                    "5.7.1",
                    format!("{from} is not a registered office of this gateway"),
                ),
                Next::Command,
            ),
            Err(e) => (for_failure(&e.failure()), Next::Command),
        }
    }

    async fn rcpt(&mut self, gateway: &Gateway, to: &str) -> (Reply, Next) {
        if !self.mail_from {
            return (Reply::new(503, "5.5.1", "need MAIL first"), Next::Command);
        }
        if self.recipients.len() >= self.max_recipients {
            return (
                Reply::new(
                    452,
                    "4.5.3",
                    "too many recipients: send the rest in another message",
                ),
                Next::Command,
            );
        }
        let address = match EmailAddress::parse(to) {
            Ok(a) => a,
            Err(e) => return (Reply::new(553, "5.1.3", e.to_string()), Next::Command),
        };
        let from_outside = matches!(self.mode, Mode::Mx { .. });
        match gateway.resolve_recipient(&address).await {
            // Mail from an office's server is for this gateway's own mailboxes only.
            Ok(Some(r)) if from_outside && r.mailbox.kind == MailboxKind::External => (
                Reply::new(550, "5.7.1", format!("{address}: relaying denied")),
                Next::Command,
            ),
            Ok(Some(recipient)) => {
                self.recipients.push(address);
                self.resolved.push(recipient);
                (Reply::new(250, "2.1.5", "recipient ok"), Next::Command)
            }
            Ok(None) => (
                Reply::new(
                    550,
                    "5.7.1",
                    format!("{address} is not a mailbox of this gateway: relaying denied"),
                ),
                Next::Command,
            ),
            Err(e) => (for_failure(&e.failure()), Next::Command),
        }
    }

    fn data(&mut self) -> (Reply, Next) {
        if !self.mail_from {
            return (Reply::new(503, "5.5.1", "need MAIL first"), Next::Command);
        }
        if self.recipients.is_empty() {
            return (
                Reply::new(554, "5.5.1", "no valid recipients"),
                Next::Command,
            );
        }
        (
            Reply {
                code: 354,
                status: None,
                text: "end data with <CR><LF>.<CR><LF>".into(),
            },
            Next::Data(self.max_size),
        )
    }

    /// The message arrived whole (dot-unstuffed, CRLF line ends): submit it, reply only
    /// once it is durable.
    pub async fn message(
        &mut self,
        gateway: &Gateway,
        message: Vec<u8>,
        reserved: Vec<crate::pipeline::Reservation>,
    ) -> Reply {
        let recipients = std::mem::take(&mut self.recipients);
        let resolved = std::mem::take(&mut self.resolved);
        self.mail_from = false;
        if let Some(client) = self.bounce.take() {
            return bounce(gateway, client, &recipients, &message).await;
        }
        let Some(submitter) = &self.submitter else {
            return Reply::new(503, "5.5.1", "need MAIL first");
        };
        let submission = Submission {
            recipients: recipients.iter().map(ToString::to_string).collect(),
            resolved,
            options: options_of(&message),
            content: Content::Rfc5322(message),
            reserved,
        };
        match gateway.submit_as(submitter, submission).await {
            Ok(accepted) => {
                self.commands = 0;
                Reply::new(250, "2.0.0", format!("accepted as {}", accepted.gateway_id))
            }
            Err(e) => for_failure(&e.failure()),
        }
    }

    /// The message could not be taken (too large, bad lines): the transaction ends.
    pub fn message_refused(&mut self) {
        self.reset();
    }
}

/// The refusal of an MX client that is neither a registered office server nor trusted.
fn unregistered() -> Reply {
    Reply::new(
        550,
        "5.7.1",
        "this gateway accepts mail only from registered office mail servers",
    )
}

/// Mail from the null sender: a delivery status notification for mail a recipient here
/// sent (and bote relayed), recorded as evidence; anything else is refused.
async fn bounce(
    gateway: &Gateway,
    client: MxClient,
    recipients: &[EmailAddress],
    message: &[u8],
) -> Reply {
    let Some(dsn) = super::dsn::parse(message) else {
        return Reply::new(
            550,
            "5.7.1",
            "only delivery status notifications (RFC 3464) come from the null sender",
        );
    };
    // A server known by its certificate speaks for its own office only.
    let reporter = match client {
        MxClient::Certificate(office) => Some(office),
        MxClient::Network => None,
        // Refused at MAIL already; never taken for a server that speaks for any office.
        MxClient::Unknown => return unregistered(),
    };
    let mut recorded = 0;
    for sender in recipients {
        match crate::queue::record_dsn(gateway, sender, &dsn, reporter).await {
            Ok(n) => recorded += n,
            Err(e) => {
                tracing::error!(error = %e, "DSN not recorded");
                return Reply::new(
                    451,
                    "4.3.0",
                    "temporary failure of the gateway, try again later",
                );
            }
        }
    }
    tracing::info!(recorded, message_id = %dsn.message_id, "delivery status notification");
    Reply::new(
        250,
        "2.0.0",
        format!("delivery status notification recorded for {recorded} recipient(s)"),
    )
}

fn challenge(text: &str) -> Reply {
    Reply::continuation(&B64.encode(text))
}

fn decode(b64: &[u8]) -> Option<String> {
    B64.decode(b64.trim_ascii())
        .ok()
        .and_then(|v| String::from_utf8(v).ok())
}

/// The TR 01201 option headers (value `yes`) of the message's header section.
pub fn options_of(message: &[u8]) -> Options {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(message.len());
    let head = String::from_utf8_lossy(&message[..end]);
    let set = |name: &str| {
        head.lines().any(|l| {
            l.split_once(':').is_some_and(|(n, v)| {
                n.trim().eq_ignore_ascii_case(name) && v.trim().eq_ignore_ascii_case("yes")
            })
        })
    };
    Options {
        authoritative: set("X-de-mail-authoritative"),
        personal: set("X-de-mail-private"),
        retrieval_confirmation: set("X-de-mail-confirmation-of-retrieve"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_headers_map_to_options() {
        let m = b"From: a@x.example\r\nX-DE-Mail-Authoritative: yes\r\nX-de-mail-private: no\r\n\r\nX-de-mail-confirmation-of-retrieve: yes\r\n";
        let o = options_of(m);
        assert!(o.authoritative);
        assert!(!o.personal);
        assert!(!o.retrieval_confirmation, "a body line is not a header");
    }
}
