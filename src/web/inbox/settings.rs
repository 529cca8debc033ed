//! Settings a person manages from a logged-in session, as in the API: whether a citizen's
//! mailbox is listed in the directory (and WKD), and read tokens for office software
//! (created by a member of the office, shown once, listed, revoked). Each is one `Gateway`
//! or `Auth` operation.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{Chrome, Web, failure_text, render_status, see_other, when};
use crate::accounts::MailboxKind;
use crate::address::EmailAddress;
use crate::error::Classify;
use crate::gateway::Gateway;

/// A token the user created.
pub struct TokenRow {
    id: i64,
    mailbox: String,
    created: String,
    revoked: Option<String>,
}

/// An access request the user may confirm.
pub struct GrantRow {
    mailbox: String,
    user: String,
    name: String,
    /// As stored: what the form sends back.
    fingerprint: String,
    /// In groups of four, for reading aloud.
    shown: String,
    requested_by: String,
    requested: String,
}

/// A fingerprint in groups of four characters, as people read it to each other.
pub(super) fn grouped(fingerprint: &str) -> String {
    fingerprint
        .as_bytes()
        .chunks(4)
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Template)]
#[template(path = "settings.html", config = "src/web/inbox/askama.toml")]
struct SettingsPage {
    c: Chrome,
    /// The citizen's own mailbox and whether it is listed (citizens only).
    own: Option<(String, bool)>,
    /// Office mailboxes the user can create read tokens for (staff only).
    offices: Vec<String>,
    tokens: Vec<TokenRow>,
    /// The fingerprint of the user's own key, in groups of four (staff only: members of
    /// office mailboxes are who compares it).
    own_key: Option<String>,
    /// Whether the user made that key themselves.
    key_is_own: bool,
    /// Access requests the user may confirm.
    grants: Vec<GrantRow>,
    new_token: Option<(String, String)>,
    error: Option<String>,
    notice: Option<&'static str>,
}

async fn page(
    gateway: &Gateway,
    web: &Web,
    status: StatusCode,
    new_token: Option<(String, String)>,
    error: Option<String>,
    notice: Option<&'static str>,
) -> Response {
    let mailboxes = match gateway.mailboxes(&web.caller).await {
        Ok(m) => m,
        Err(e) => return web.fail(&e.failure()),
    };
    let mut own = None;
    let mut offices = Vec::new();
    for m in &mailboxes {
        match m.kind {
            MailboxKind::Citizen => {
                let listed = gateway
                    .directory_entry(Some(&web.caller), None, &m.address)
                    .await
                    .is_ok_and(|p| p.public);
                own = Some((m.address.to_string(), listed));
            }
            _ => offices.push(m.address.to_string()),
        }
    }
    let tokens = match gateway.auth().own_tokens(&web.caller).await {
        Ok(t) => t
            .into_iter()
            .map(|t| TokenRow {
                id: t.id,
                mailbox: t.mailbox,
                created: when(t.created_at),
                revoked: t.revoked_at.map(when),
            })
            .collect(),
        Err(e) => return web.fail(&e.failure()),
    };
    let grants = match gateway.auth().grants(&web.caller).await {
        Ok(g) => g,
        Err(e) => return web.fail(&e.failure()),
    };
    render_status(
        status,
        &SettingsPage {
            c: web.chrome("settings-title", "nav-settings"),
            own,
            offices,
            tokens,
            key_is_own: grants.own_key_is_own,
            own_key: web
                .caller
                .user()
                .is_some_and(|u| u.role == crate::accounts::Role::Staff)
                .then(|| grouped(&grants.own_fingerprint)),
            grants: grants
                .pending
                .into_iter()
                .map(|g| GrantRow {
                    shown: grouped(&g.fingerprint),
                    mailbox: g.mailbox,
                    user: g.user,
                    name: g.name,
                    fingerprint: g.fingerprint,
                    requested_by: g.requested_by,
                    requested: when(g.requested_at),
                })
                .collect(),
            new_token,
            error,
            notice,
        },
    )
}

/// `GET /settings`
pub async fn settings(State(gateway): State<Gateway>, web: Web) -> Response {
    page(&gateway, &web, StatusCode::OK, None, None, None).await
}

/// The directory form.
#[derive(Deserialize)]
pub struct DirectoryForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    publish: Option<String>,
}

/// `POST /settings/directory`: lists or unlists the citizen's own mailbox.
pub async fn directory(
    State(gateway): State<Gateway>,
    web: Web,
    Form(form): Form<DirectoryForm>,
) -> Response {
    if let Err(r) = web.check_csrf(&form.csrf, "/settings/directory") {
        return r;
    }
    let Some(user) = web.caller.user() else {
        return web.fail(&crate::gateway::GatewayError::NotFound.failure());
    };
    let address = user.email.clone();
    match gateway
        .set_published(&web.caller, &address, form.publish.is_some())
        .await
    {
        Ok(()) => see_other("/settings"),
        Err(e) => refused(&gateway, &web, &e.failure()).await,
    }
}

/// The token form.
#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    mailbox: String,
}

/// `POST /settings/tokens`: a read token for an office mailbox, shown once.
pub async fn create_token(
    State(gateway): State<Gateway>,
    web: Web,
    Form(form): Form<TokenForm>,
) -> Response {
    if let Err(r) = web.check_csrf(&form.csrf, "/settings/tokens") {
        return r;
    }
    let Ok(mailbox) = EmailAddress::parse(form.mailbox.trim()) else {
        return web.fail(&crate::gateway::GatewayError::NotFound.failure());
    };
    match gateway
        .auth()
        .create_read_token(&web.caller, &mailbox)
        .await
    {
        Ok(token) => {
            let shown = (mailbox.to_string(), token.expose().to_owned());
            page(&gateway, &web, StatusCode::CREATED, Some(shown), None, None).await
        }
        Err(e) => refused(&gateway, &web, &e.failure()).await,
    }
}

/// `POST /settings/tokens/{id}/revoke`
pub async fn revoke_token(
    State(gateway): State<Gateway>,
    web: Web,
    Path(id): Path<i64>,
    Form(form): Form<TokenForm>,
) -> Response {
    if let Err(r) = web.check_csrf(&form.csrf, "/settings/tokens/{id}/revoke") {
        return r;
    }
    match gateway.auth().revoke_own_token(&web.caller, id).await {
        Ok(()) => {
            page(
                &gateway,
                &web,
                StatusCode::OK,
                None,
                None,
                Some("token-revoked"),
            )
            .await
        }
        Err(e) => web.fail(&e.failure()),
    }
}

/// The access request form.
#[derive(Deserialize)]
pub struct GrantForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    mailbox: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    fingerprint: String,
    /// The box "I compared this fingerprint with …".
    #[serde(default)]
    compared: Option<String>,
}

/// `POST /settings/grants`: a member gives a colleague the key of an office mailbox,
/// having compared the colleague's key fingerprint with them.
pub async fn confirm_grant(
    State(gateway): State<Gateway>,
    web: Web,
    Form(form): Form<GrantForm>,
) -> Response {
    if let Err(r) = web.check_csrf(&form.csrf, "/settings/grants") {
        return r;
    }
    if form.compared.is_none() {
        let why = super::i18n::t(web.lang, "grant-not-compared").to_owned();
        return page(
            &gateway,
            &web,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            Some(why),
            None,
        )
        .await;
    }
    let (Ok(mailbox), Ok(user)) = (
        EmailAddress::parse(form.mailbox.trim()),
        EmailAddress::parse(form.user.trim()),
    ) else {
        return web.fail(&crate::gateway::GatewayError::NotFound.failure());
    };
    match gateway
        .auth()
        .confirm_grant(&web.caller, &mailbox, &user, &form.fingerprint)
        .await
    {
        Ok(()) => {
            page(
                &gateway,
                &web,
                StatusCode::OK,
                None,
                None,
                Some("grant-confirmed"),
            )
            .await
        }
        Err(e) => refused(&gateway, &web, &e.failure()).await,
    }
}

/// The settings page again, with why the last change was refused.
async fn refused(gateway: &Gateway, web: &Web, f: &crate::error::Failure) -> Response {
    let status = crate::web::problem::status(f.kind);
    page(
        gateway,
        web,
        status,
        None,
        Some(failure_text(web.lang, f)),
        None,
    )
    .await
}
