//! Login, logout (here and everywhere), the second factor (TOTP enrolment with a QR code
//! rendered server-side as SVG, step-up to level `high`), recovery with the recovery
//! code, and the language switch. Every operation is the API's, through `Auth`.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;

use super::{
    Chrome, LANG_COOKIE, Lang, PRE_COOKIE, SESSION_COOKIE, Web, cookie, csrf_ok, csrf_refused,
    csrf_token, failure_text, render, render_status, secret_cookie, see_other, with_cookies,
};
use crate::accounts::Role;
use crate::accounts::credential::{Credential, Kind};
use crate::auth::AuthError;
use crate::error::{Classify, ErrorKind};
use crate::gateway::Gateway;
use crate::web::caller::ClientIp;

/// Seconds a session cookie lives (the session itself expires on the server at 12 h).
const SESSION_COOKIE_AGE: i64 = 12 * 60 * 60;

#[derive(Template)]
#[template(path = "login.html", config = "src/web/inbox/askama.toml")]
struct LoginPage {
    c: Chrome,
    email: String,
    error: Option<String>,
    notice: Option<&'static str>,
}

/// The pre-session secret of a request, or a new one (with its cookie to set).
fn pre_secret(headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    match cookie(headers, PRE_COOKIE).filter(|v| v.len() == 32) {
        Some(v) => (v.to_owned(), None),
        None => {
            let v = hex::encode(rand::random::<[u8; 16]>());
            let c = secret_cookie(PRE_COOKIE, &v, None);
            (v, Some(c))
        }
    }
}

fn login_page(
    lang: Lang,
    headers: &HeaderMap,
    status: StatusCode,
    email: String,
    error: Option<String>,
    notice: Option<&'static str>,
) -> Response {
    let (secret, set) = pre_secret(headers);
    let page = LoginPage {
        c: Chrome::anonymous(lang, "login-title", csrf_token(&secret)),
        email,
        error,
        notice,
    };
    with_cookies(render_status(status, &page), set)
}

/// The start page after login, by role.
fn start_page(role: Role) -> &'static str {
    match role {
        Role::Legal => "/legal",
        Role::Admin => "/security",
        Role::Citizen | Role::Staff => "/mail?folder=inbox",
    }
}

/// `?notice=`
#[derive(Debug, Deserialize)]
pub struct HomeQuery {
    notice: Option<String>,
}

/// `GET /`: the login page, or the start page for a logged-in user.
pub async fn home(
    State(gateway): State<Gateway>,
    lang: Lang,
    headers: HeaderMap,
    Query(q): Query<HomeQuery>,
) -> Response {
    if let Some(token) = cookie(&headers, SESSION_COOKIE)
        && let Some(credential) = Credential::parse(token).filter(|c| c.kind() == Kind::Session)
        && let Ok(caller) = gateway.auth().resolve(&credential, None).await
        && let Some(user) = caller.user()
    {
        return see_other(start_page(user.role));
    }
    let notice = match q.notice.as_deref() {
        Some("logged-out") => Some("notice-logged-out"),
        Some("recovered") => Some("notice-recovered"),
        _ => None,
    };
    login_page(lang, &headers, StatusCode::OK, String::new(), None, notice)
}

/// The login form.
#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// `POST /`: password login; the session starts at level `normal`, as in the API.
pub async fn login(
    State(gateway): State<Gateway>,
    lang: Lang,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let pre = cookie(&headers, PRE_COOKIE).unwrap_or_default();
    if pre.is_empty() || !csrf_ok(pre, &form.csrf) {
        return csrf_refused(lang, "/");
    }
    match gateway
        .auth()
        .login(&form.email, &form.password, client)
        .await
    {
        Ok(session) => with_cookies(
            see_other(start_page(session.user.role)),
            [
                secret_cookie(
                    SESSION_COOKIE,
                    session.credential.expose(),
                    Some(SESSION_COOKIE_AGE),
                ),
                secret_cookie(PRE_COOKIE, "", Some(0)),
            ],
        ),
        Err(e) => {
            let failure = e.failure();
            let status = crate::web::problem::status(failure.kind);
            let mut message = failure_text(lang, &failure);
            if let Some(seconds) = failure.retry_after {
                message = format!("{message} ({seconds} s)");
            }
            if failure.kind == ErrorKind::Internal {
                failure.log_cause("web");
            }
            login_page(lang, &headers, status, form.email, Some(message), None)
        }
    }
}

/// A form with only a CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

fn logged_out() -> Response {
    with_cookies(
        see_other("/?notice=logged-out"),
        [secret_cookie(SESSION_COOKIE, "", Some(0))],
    )
}

/// `POST /logout`
pub async fn logout(
    State(gateway): State<Gateway>,
    web: Web,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = web.check_csrf(&form.csrf, "/logout") {
        return r;
    }
    match gateway.auth().logout(&web.caller).await {
        Ok(()) => logged_out(),
        Err(e) => web.fail(&e.failure()),
    }
}

/// `POST /logout-everywhere`: ends every session of the user.
pub async fn logout_everywhere(
    State(gateway): State<Gateway>,
    web: Web,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = web.check_csrf(&form.csrf, "/logout-everywhere") {
        return r;
    }
    match gateway.auth().logout_everywhere(&web.caller).await {
        Ok(()) => logged_out(),
        Err(e) => web.fail(&e.failure()),
    }
}

#[derive(Template)]
#[template(path = "security.html", config = "src/web/inbox/askama.toml")]
struct SecurityPage {
    c: Chrome,
    /// The user's key is their own (made when they changed their password).
    own_key: bool,
    /// When the key was made.
    key_made: Option<String>,
    enrolled: bool,
    high: bool,
    /// A new secret to confirm: its otpauth URI and QR code (SVG markup we generated).
    otpauth: Option<String>,
    qr_svg: Option<String>,
    error: Option<String>,
    error_field: &'static str,
    notice: Option<&'static str>,
}

/// The page after a password change: the new recovery code, once.
#[derive(Template)]
#[template(path = "new_key.html", config = "src/web/inbox/askama.toml")]
struct NewKeyPage {
    c: Chrome,
    recovery_code: String,
    fingerprint: String,
}

/// The password form.
#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    new_password: String,
}

/// `POST /security/password`: a new password, and a key and recovery code only the user
/// knows; every session ends, this one too (its sealed key is the old one).
pub async fn change_password(
    State(gateway): State<Gateway>,
    web: Web,
    ClientIp(client): ClientIp,
    Form(form): Form<PasswordForm>,
) -> Response {
    if let Err(r) = web.check_csrf(&form.csrf, "/security/password") {
        return r;
    }
    match gateway
        .renew_own_key(&web.caller, &form.current, &form.new_password, client)
        .await
    {
        Ok(renewed) => {
            let page = NewKeyPage {
                c: Chrome::anonymous(web.lang, "own-key-made-title", String::new()),
                recovery_code: renewed.recovery_code.to_string(),
                fingerprint: super::settings::grouped(&renewed.fingerprint),
            };
            with_cookies(
                render_status(StatusCode::OK, &page),
                [secret_cookie(SESSION_COOKIE, "", Some(0))],
            )
        }
        Err(e) => {
            let f = e.failure();
            let status = crate::web::problem::status(f.kind);
            let mut message = failure_text(web.lang, &f);
            if f.kind == ErrorKind::Invalid
                && let Some(d) = &f.detail
            {
                message = format!("{message}: {d}");
            }
            let error = Some((message, "password"));
            security_page(&gateway, &web, status, None, error, None).await
        }
    }
}

/// `?done=`
#[derive(Debug, Deserialize)]
pub struct SecurityQuery {
    done: Option<String>,
}

async fn security_page(
    gateway: &Gateway,
    web: &Web,
    status: StatusCode,
    otpauth: Option<String>,
    error: Option<(String, &'static str)>,
    notice: Option<&'static str>,
) -> Response {
    let enrolled = match gateway.auth().has_second_factor(&web.caller).await {
        Ok(e) => e,
        Err(e) => return web.fail(&e.failure()),
    };
    let (own_key, key_made) = match gateway.auth().grants(&web.caller).await {
        Ok(g) => (g.own_key_is_own, g.own_key_made_at.map(super::when)),
        Err(e) => return web.fail(&e.failure()),
    };
    let qr_svg = otpauth.as_deref().and_then(qr_svg);
    let (error, error_field) = match error {
        Some((m, f)) => (Some(m), f),
        None => (None, ""),
    };
    render_status(
        status,
        &SecurityPage {
            c: web.chrome("security-title", "nav-security"),
            own_key,
            key_made,
            enrolled,
            high: web.caller.access.level() == crate::accounts::AuthLevel::High,
            otpauth,
            qr_svg,
            error,
            error_field,
            notice,
        },
    )
}

/// The QR code of an `otpauth://` URI as SVG markup (generated here, no remote service).
fn qr_svg(uri: &str) -> Option<String> {
    let code = qrcode::QrCode::new(uri.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
    )
}

/// `GET /security`: level, second factor, logout everywhere.
pub async fn security(
    State(gateway): State<Gateway>,
    web: Web,
    Query(q): Query<SecurityQuery>,
) -> Response {
    let notice = match q.done.as_deref() {
        Some("high") => Some("notice-high"),
        _ => None,
    };
    security_page(&gateway, &web, StatusCode::OK, None, None, notice).await
}

/// The enrolment form.
#[derive(Deserialize)]
pub struct EnrolForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    recovery_code: String,
}

/// `POST /security/totp`: a new TOTP secret (the first needs the recovery code, a
/// replacement a `high` session, as in the API), shown as QR code and URI.
pub async fn enrol_totp(
    State(gateway): State<Gateway>,
    web: Web,
    Form(form): Form<EnrolForm>,
) -> Response {
    if let Err(r) = web.check_csrf(&form.csrf, "/security/totp") {
        return r;
    }
    let code = Some(form.recovery_code.trim()).filter(|c| !c.is_empty());
    match gateway.auth().enrol_totp(&web.caller, code).await {
        Ok(otpauth) => {
            security_page(&gateway, &web, StatusCode::OK, Some(otpauth), None, None).await
        }
        Err(e) => {
            let f = e.failure();
            let status = crate::web::problem::status(f.kind);
            let message = match &e {
                AuthError::Forbidden(_) => {
                    super::i18n::t(web.lang, "recovery-code-wrong").to_owned()
                }
                _ => failure_text(web.lang, &f),
            };
            security_page(
                &gateway,
                &web,
                status,
                None,
                Some((message, "recovery_code")),
                None,
            )
            .await
        }
    }
}

/// The step-up form.
#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

/// `POST /security/step-up`: raises the session to `high` with a TOTP code (audited and
/// throttled by `Auth`, as in the API).
pub async fn step_up(
    State(gateway): State<Gateway>,
    web: Web,
    Form(form): Form<CodeForm>,
) -> Response {
    if let Err(r) = web.check_csrf(&form.csrf, "/security/step-up") {
        return r;
    }
    match gateway
        .auth()
        .second_factor(&web.caller, &form.code, web.client)
        .await
    {
        Ok(()) => see_other("/security?done=high"),
        Err(e) => {
            let f = e.failure();
            let status = crate::web::problem::status(f.kind);
            let message = failure_text(web.lang, &f);
            security_page(&gateway, &web, status, None, Some((message, "code")), None).await
        }
    }
}

#[derive(Template)]
#[template(path = "recover.html", config = "src/web/inbox/askama.toml")]
struct RecoverPage {
    c: Chrome,
    email: String,
    error: Option<String>,
}

/// `GET /recover`
pub async fn recover_page(lang: Lang, headers: HeaderMap) -> Response {
    let (secret, set) = pre_secret(&headers);
    let page = RecoverPage {
        c: Chrome::anonymous(lang, "recover-title", csrf_token(&secret)).at("/recover"),
        email: String::new(),
        error: None,
    };
    with_cookies(render(&page), set)
}

/// The recovery form.
#[derive(Deserialize)]
pub struct RecoverForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    recovery_code: String,
    #[serde(default)]
    password: String,
}

/// `POST /recover`: a new password with the recovery code; the user keeps their mail.
pub async fn recover(
    State(gateway): State<Gateway>,
    lang: Lang,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    Form(form): Form<RecoverForm>,
) -> Response {
    let pre = cookie(&headers, PRE_COOKIE).unwrap_or_default();
    if pre.is_empty() || !csrf_ok(pre, &form.csrf) {
        return csrf_refused(lang, "/recover");
    }
    match gateway
        .recover_account(&form.email, &form.recovery_code, &form.password, client)
        .await
    {
        Ok(()) => see_other("/?notice=recovered"),
        Err(e) => {
            let f = e.failure();
            let status = crate::web::problem::status(f.kind);
            let mut message = match f.code {
                "bad-credentials" => super::i18n::t(lang, "recover-failed").to_owned(),
                _ => failure_text(lang, &f),
            };
            if f.kind == ErrorKind::Invalid
                && let Some(d) = &f.detail
            {
                message = format!("{message}: {d}");
            }
            let page = RecoverPage {
                c: Chrome::anonymous(lang, "recover-title", csrf_token(pre)).at("/recover"),
                email: form.email,
                error: Some(message),
            };
            render_status(status, &page)
        }
    }
}

/// `?back=`
#[derive(Debug, Deserialize)]
pub struct BackQuery {
    back: Option<String>,
}

/// `GET /lang/{code}`: remembers the language (a preference, not account state) and
/// returns to the page the switch was on.
pub async fn set_lang(Path(code): Path<String>, Query(q): Query<BackQuery>) -> Response {
    let Some(lang) = Lang::parse(&code) else {
        return see_other("/");
    };
    let back = q
        .back
        .filter(|b| is_local_path(b))
        .unwrap_or_else(|| "/".to_owned());
    let value = HeaderValue::from_str(&format!(
        "{LANG_COOKIE}={lang}; Path=/; Secure; SameSite=Strict; Max-Age=31536000"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"));
    let mut r = see_other(&back);
    r.headers_mut().append(header::SET_COOKIE, value);
    r
}

/// Whether `back` is a path of this site, safe for `Location` (no open redirect): it
/// starts with one `/`, and holds visible ASCII only, no `\`. Browsers read `\` as `/`
/// and drop tabs and line breaks from a URL, so `/\t/evil.example` would be
/// `//evil.example`, another site; the site's own links are percent-encoded anyway.
fn is_local_path(back: &str) -> bool {
    back.starts_with('/')
        && !back.starts_with("//")
        && back.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
}
