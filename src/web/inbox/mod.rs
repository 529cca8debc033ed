//! The web inbox (spec §1, §3, §5): server-rendered HTML pages for citizens, office staff
//! and legal staff, over the same [`Gateway`] operations as the JSON API. Handlers parse a
//! form, call one `Gateway` operation, render a template: no policy is decided here.
//!
//! Security: the session cookie carries the session token (the user key stays sealed
//! under it, as for API sessions) and is `Secure; HttpOnly; SameSite=Strict`; every
//! state-changing form carries a CSRF token derived from the session token (or, before
//! login, from a random pre-session cookie) and is refused with 403 without it; pages have
//! no inline script or style (the CSP of `web::security_headers` forbids them).
//!
//! Files: `session.rs` (login, logout, second factor, recovery, language),
//! `mail.rs` (folders, messages, compose, downloads), `legal.rs` (evidence search,
//! timelines, printable receipts, bundle export), `settings.rs` (directory listing, read
//! tokens), `i18n.rs` (the one translation table),
//! `assets.rs` (fingerprinted static files), `html.rs` (sanitising HTML mail).

// Handlers and their helpers return a finished page on either side; boxing the error
// page would only add an allocation to every refusal.
#![allow(clippy::result_large_err)]

pub mod assets;
mod html;
mod i18n;
mod legal;
mod mail;
mod session;
mod settings;

use std::net::IpAddr;

use askama::Template;
use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use sha2::Digest;

use crate::accounts::credential::Credential;
use crate::auth::Caller;
use crate::error::{ErrorKind, Failure};
use crate::gateway::Gateway;
use crate::web::caller::ClientIp;
pub use i18n::Lang;

/// The session cookie: the session token, exactly as the API's bearer token. `__Host-`:
/// browsers accept it only from this host, `Secure`, with `Path=/` and no `Domain`, so
/// a sibling site (another service under the municipality's domain) cannot plant its
/// own session or pre-session cookie here (login CSRF, session fixation).
pub const SESSION_COOKIE: &str = "__Host-bote_session";
/// A random value before login, from which login forms' CSRF tokens are derived.
pub const PRE_COOKIE: &str = "__Host-bote_pre";
/// The chosen language (a preference only).
pub const LANG_COOKIE: &str = "bote_lang";

/// The web inbox routes (mounted under the HTTPS router).
pub fn routes(max_submission: usize) -> Router<Gateway> {
    Router::new()
        .route("/", get(session::home).post(session::login))
        .route("/logout", post(session::logout))
        .route("/logout-everywhere", post(session::logout_everywhere))
        .route("/security", get(session::security))
        .route("/security/totp", post(session::enrol_totp))
        .route("/security/step-up", post(session::step_up))
        .route("/security/password", post(session::change_password))
        .route(
            "/recover",
            get(session::recover_page).post(session::recover),
        )
        .route("/lang/{code}", get(session::set_lang))
        .route("/settings", get(settings::settings))
        .route("/settings/directory", post(settings::directory))
        .route("/settings/tokens", post(settings::create_token))
        .route("/settings/grants", post(settings::confirm_grant))
        .route("/settings/tokens/{id}/revoke", post(settings::revoke_token))
        .route("/static/{name}", get(assets::serve))
        .route("/mail", get(mail::folder))
        .route("/mail/{id}", get(mail::message))
        .route("/mail/{id}/html", get(mail::html_body))
        .route("/mail/{id}/attachments/{n}", get(mail::attachment))
        .route("/mail/{id}/proof", post(mail::proof))
        .route(
            "/compose",
            get(mail::compose_page).post(mail::compose).layer(
                // Room for the multipart framing around a submission at the limit; the
                // pipeline enforces the limit itself with a clear message.
                axum::extract::DefaultBodyLimit::max(
                    max_submission.saturating_mul(4).saturating_div(3) + 1024 * 1024,
                ),
            ),
        )
        .route("/legal", get(legal::search))
        .route("/legal/message", get(legal::message))
        .route("/legal/receipt", get(legal::receipt))
        .route("/legal/bundle", post(legal::bundle))
}

/// A cookie's value in a request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `Set-Cookie` for a secret: `Secure; HttpOnly; SameSite=Strict`, the whole site.
fn secret_cookie(name: &str, value: &str, max_age: Option<i64>) -> HeaderValue {
    let age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict{age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// The CSRF token of forms sent under `secret` (the session token or the pre-session
/// cookie): a digest, so the page never shows the secret itself.
pub fn csrf_token(secret: &str) -> String {
    let digest = sha2::Sha256::digest(format!("bote-csrf\0{secret}").as_bytes());
    hex::encode(&digest[..16])
}

/// Whether `given` is the CSRF token for `secret`, compared in constant time.
fn csrf_ok(secret: &str, given: &str) -> bool {
    let expected = csrf_token(secret);
    expected.len() == given.len()
        && expected
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The refusal of a form without a valid CSRF token: 403, logged.
fn csrf_refused(lang: Lang, path: &str) -> Response {
    tracing::warn!(path, "form refused: CSRF token missing or wrong");
    error_page(
        lang,
        StatusCode::FORBIDDEN,
        i18n::t(lang, "csrf-refused"),
        None,
    )
}

/// The language of a request: the switch's cookie, else Accept-Language, else English.
impl<S: Send + Sync> FromRequestParts<S> for Lang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(cookie(&parts.headers, LANG_COOKIE)
            .and_then(Lang::parse)
            .or_else(|| {
                parts
                    .headers
                    .get(header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok())
                    .map(Lang::negotiate)
            })
            .unwrap_or(Lang::En))
    }
}

/// A logged-in web session: the caller resolved from the session cookie, the token (for
/// CSRF), the language and the client address. Without a valid session the request is
/// redirected to the login page.
pub struct Web {
    /// The caller, as the API resolves it.
    pub caller: Caller,
    token: String,
    /// The page language.
    pub lang: Lang,
    /// The client's address.
    pub client: Option<IpAddr>,
    /// Path and query of the request (the language switch returns there).
    here: String,
}

impl Web {
    /// The CSRF token for this session's forms.
    pub fn csrf(&self) -> String {
        csrf_token(&self.token)
    }

    /// Refuses (403, logged) a form whose CSRF token is not this session's.
    pub fn check_csrf(&self, given: &str, path: &str) -> Result<(), Response> {
        if csrf_ok(&self.token, given) {
            Ok(())
        } else {
            Err(csrf_refused(self.lang, path))
        }
    }

    /// The page chrome for this session.
    pub fn chrome(&self, title: &'static str, current: &'static str) -> Chrome {
        let user = self.caller.user().map(|u| UserBar {
            email: u.email.to_string(),
            role: u.role.to_string(),
            level: self.caller.access.level().as_str(),
        });
        Chrome {
            lang: self.lang,
            title: i18n::t(self.lang, title).to_owned(),
            css: assets::css_path(),
            csrf: self.csrf(),
            nav: nav(user.as_ref().map(|u| u.role.as_str()), current),
            user,
            back: back_param(&self.here),
        }
    }

    /// A failure of the core as an HTML page (status by kind; internal causes logged),
    /// with the session's header (its level included).
    pub fn fail(&self, failure: &Failure) -> Response {
        failure_page_in(self.chrome("error", ""), failure)
    }
}

impl FromRequestParts<Gateway> for Web {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, gateway: &Gateway) -> Result<Self, Response> {
        let lang = Lang::from_request_parts(parts, gateway)
            .await
            .unwrap_or(Lang::En);
        let client = ClientIp::from_request_parts(parts, gateway)
            .await
            .map_or(None, |c| c.0);
        let token = cookie(&parts.headers, SESSION_COOKIE)
            .map(str::to_owned)
            .ok_or_else(|| Redirect::to("/").into_response())?;
        let credential = Credential::parse(&token)
            .filter(|c| c.kind() == crate::accounts::credential::Kind::Session)
            .ok_or_else(|| Redirect::to("/").into_response())?;
        match gateway.auth().resolve(&credential, None).await {
            Ok(caller) => Ok(Self {
                caller,
                token,
                lang,
                client,
                here: parts
                    .uri
                    .path_and_query()
                    .map_or_else(|| "/".to_owned(), ToString::to_string),
            }),
            Err(crate::auth::AuthError::Unauthenticated) => {
                // Expired or logged out elsewhere: back to the login page, cookie gone.
                let mut r = Redirect::to("/").into_response();
                r.headers_mut().append(
                    header::SET_COOKIE,
                    secret_cookie(SESSION_COOKIE, "", Some(0)),
                );
                Err(r)
            }
            Err(e) => Err(failure_page(lang, &crate::error::Classify::failure(&e))),
        }
    }
}

/// The logged-in user as the page header shows them.
pub struct UserBar {
    /// Login.
    pub email: String,
    /// Role.
    pub role: String,
    /// `normal` or `high`.
    pub level: &'static str,
}

/// One link of the navigation.
pub struct Nav {
    /// Target.
    pub href: &'static str,
    /// Translation key of its text.
    pub key: &'static str,
    /// Whether it is the current page.
    pub current: bool,
}

/// What every page shows around its content.
pub struct Chrome {
    /// Page language.
    pub lang: Lang,
    /// Page title (translated).
    pub title: String,
    /// The style sheet's fingerprinted path.
    pub css: String,
    /// CSRF token for forms.
    pub csrf: String,
    /// The logged-in user, if any.
    pub user: Option<UserBar>,
    /// Navigation.
    pub nav: Vec<Nav>,
    /// This page's path and query, percent-encoded for the language switch's `?back=`.
    pub back: String,
}

impl Chrome {
    /// The text of `key` in the page language.
    pub fn t(&self, key: &'static str) -> &'static str {
        i18n::t(self.lang, key)
    }

    /// The chrome of a page without a session (login, recovery, errors).
    pub fn anonymous(lang: Lang, title: &'static str, csrf: String) -> Self {
        Self {
            lang,
            title: i18n::t(lang, title).to_owned(),
            css: assets::css_path(),
            csrf,
            user: None,
            nav: Vec::new(),
            back: "%2F".to_owned(),
        }
    }

    /// The same chrome, returning to `here` after a language switch.
    pub fn at(mut self, here: &str) -> Self {
        self.back = back_param(here);
        self
    }
}

fn back_param(here: &str) -> String {
    percent_encoding::utf8_percent_encode(here, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn nav(role: Option<&str>, current: &'static str) -> Vec<Nav> {
    let items: &[(&str, &str)] = match role {
        Some("legal") => &[("/legal", "nav-evidence"), ("/security", "nav-security")],
        Some("citizen" | "staff") => &[
            ("/mail?folder=inbox", "nav-inbox"),
            ("/mail?folder=sent", "nav-sent"),
            ("/compose", "nav-compose"),
            ("/settings", "nav-settings"),
            ("/security", "nav-security"),
        ],
        _ => &[("/security", "nav-security")],
    };
    items
        .iter()
        .map(|(href, key)| Nav {
            href,
            key,
            current: *key == current,
        })
        .collect()
}

/// Renders a template as an HTML response (500 if rendering fails, which askama's compile
/// time checks make a matter of formatting values only).
pub fn render(template: &impl Template) -> Response {
    render_status(StatusCode::OK, template)
}

/// As [`render`], with a status.
pub fn render_status(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html", config = "src/web/inbox/askama.toml")]
struct ErrorPage {
    c: Chrome,
    message: String,
    detail: Option<String>,
}

/// An error page with `message` (already in the page language) and an optional detail.
pub fn error_page(
    lang: Lang,
    status: StatusCode,
    message: &str,
    detail: Option<String>,
) -> Response {
    render_status(
        status,
        &ErrorPage {
            c: Chrome::anonymous(lang, "error", String::new()),
            message: message.to_owned(),
            detail,
        },
    )
}

/// A classified failure as a page: the translated sentence for its code where the table
/// has one, and the core's instance detail (safe to show: never an internal cause).
pub fn failure_page(lang: Lang, failure: &Failure) -> Response {
    failure_page_in(Chrome::anonymous(lang, "error", String::new()), failure)
}

fn failure_page_in(c: Chrome, failure: &Failure) -> Response {
    failure.log_cause("web");
    let status = crate::web::problem::status(failure.kind);
    let message = failure_text(c.lang, failure);
    let detail = match failure.kind {
        ErrorKind::Internal | ErrorKind::Unavailable => None,
        _ => failure.detail.clone(),
    };
    let mut response = render_status(status, &ErrorPage { c, message, detail });
    if let Some(seconds) = failure.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// One sentence for a failure, in the page language.
pub fn failure_text(lang: Lang, failure: &Failure) -> String {
    match i18n::lookup(lang, failure.code) {
        Some(s) => s.to_owned(),
        None => failure.title.to_owned(),
    }
}

/// Adds `Set-Cookie` headers to a response.
fn with_cookies(
    mut response: Response,
    cookies: impl IntoIterator<Item = HeaderValue>,
) -> Response {
    for c in cookies {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

/// A `303 See Other` to `to` (after a successful form).
fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// Times as pages show them: `2026-11-30 15:04:05 UTC`.
pub fn when(ms: i64) -> String {
    let s = crate::clock::rfc3339_ms(ms);
    // 2026-11-30T15:04:05.123Z
    match (s.get(..10), s.get(11..19)) {
        (Some(d), Some(t)) => format!("{d} {t} UTC"),
        _ => s,
    }
}

/// Sizes as pages show them.
pub fn size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    match bytes {
        b if b >= MIB => format!("{:.1} MiB", b as f64 / MIB as f64),
        b if b >= KIB => format!("{:.1} KiB", b as f64 / KIB as f64),
        b => format!("{b} B"),
    }
}
