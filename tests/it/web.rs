//! The web inbox over HTTP: cookies and headers, CSRF, login with lockout, second factor,
//! reading and writing, what is refused or neutralised, legal staff and their scope.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;
use tower::ServiceExt;

use crate::api::{Api, Cast, Reply, cast, send_letter};
use crate::on_both_backends;
use crate::support::Gateway;
use crate::zero_access::{Captured, capture_logs};

const PASSWORD: &str = "a long enough password";

/// A browser: a cookie jar over the router.
pub struct Browser<'a> {
    api: &'a Api,
    cookies: BTreeMap<String, String>,
    /// Every `Set-Cookie` seen, as sent.
    pub set_cookies: Vec<String>,
}

impl<'a> Browser<'a> {
    pub fn new(api: &'a Api) -> Self {
        Self {
            api,
            cookies: BTreeMap::new(),
            set_cookies: Vec::new(),
        }
    }

    async fn send(&mut self, req: axum::http::request::Builder, body: Body) -> Reply {
        let mut req = req.header(header::ACCEPT_LANGUAGE, "en");
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            req = req.header(header::COOKIE, jar.join("; "));
        }
        let response = self
            .api
            .app
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        for v in response.headers().get_all(header::SET_COOKIE) {
            let v = v.to_str().unwrap().to_owned();
            let (pair, _) = v.split_once(';').unwrap_or((&v, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || v.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
            self.set_cookies.push(v);
        }
        let status = response.status();
        let headers = response.headers().clone();
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        use http_body_util::BodyExt;
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            content_type,
            headers,
            body: body.to_vec(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.send(Request::builder().method("GET").uri(path), Body::empty())
            .await
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let body = fields
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    k,
                    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
                )
            })
            .collect::<Vec<_>>()
            .join("&");
        self.send(
            Request::builder()
                .method("POST")
                .uri(path)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded"),
            Body::from(body),
        )
        .await
    }

    /// A multipart form: text fields and files (name, file name, bytes).
    pub async fn post_multipart(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        files: &[(&str, &str, &[u8])],
    ) -> Reply {
        let boundary = "----botetestboundary7MA4YWxk";
        let mut body = Vec::new();
        for (k, v) in fields {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                )
                .as_bytes(),
            );
        }
        for (k, name, data) in files {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"; filename=\"{name}\"\r\nContent-Type: application/pdf\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        self.send(
            Request::builder().method("POST").uri(path).header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            ),
            Body::from(body),
        )
        .await
    }

    /// Logs in through the login page; panics unless it works.
    pub async fn login(&mut self, email: &str) {
        self.login_with(email, PASSWORD).await;
    }

    /// Logs in with `password`.
    pub async fn login_with(&mut self, email: &str, password: &str) {
        let page = self.get("/").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        let csrf = csrf(&page);
        let r = self
            .post(
                "/",
                &[("csrf", &csrf), ("email", email), ("password", password)],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
        assert!(self.cookies.contains_key("__Host-bote_session"));
    }

    /// The CSRF token of the page at `path`.
    pub async fn csrf_of(&mut self, path: &str) -> String {
        let page = self.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        csrf(&page)
    }

    /// Raises the session to `high` through the security page.
    pub async fn step_up(&mut self, otpauth: &str) {
        let token = self.csrf_of("/security").await;
        let code = bote::auth::totp_code_now(otpauth).unwrap();
        let r = self
            .post("/security/step-up", &[("csrf", &token), ("code", &code)])
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    }
}

/// The value of the first `name="csrf"` field of a page.
pub fn csrf(page: &Reply) -> String {
    let text = page.text();
    let at = text
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no csrf field: {text}"));
    text[at + 19..].split('"').next().unwrap().to_owned()
}

/// The copy ids linked from a folder page.
fn copy_links(page: &Reply) -> Vec<String> {
    let text = page.text();
    text.match_indices("href=\"/mail/")
        .map(|(i, _)| text[i + 12..].split('"').next().unwrap().to_owned())
        .filter(|id| !id.contains('/'))
        .collect()
}

fn cookie_flags_ok(set_cookie: &str) -> bool {
    set_cookie.contains("; Secure")
        && set_cookie.contains("; HttpOnly")
        && set_cookie.contains("; SameSite=Strict")
}

async fn login_sets_a_strict_cookie_and_pages_have_the_headers(gw: Gateway) {
    let Cast { api, .. } = cast(gw).await;
    let mut b = Browser::new(&api);
    let page = b.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(page.headers.contains_key("strict-transport-security"));
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
    assert!(!page.text().contains("<script"), "no script on pages");
    assert!(!page.text().contains("style="), "no inline style");
    // The style sheet: fingerprinted, cached for a year.
    let text = page.text();
    let css = text
        .split("href=\"")
        .find(|s| s.starts_with("/static/"))
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let sheet = b.get(&css).await;
    assert_eq!(sheet.status, StatusCode::OK);
    assert!(
        sheet.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=31536000")
    );
    assert_eq!(
        b.get("/static/bote.css").await.status,
        StatusCode::NOT_FOUND
    );

    b.login("anna@lemgo.example").await;
    let session = b
        .set_cookies
        .iter()
        .find(|c| c.starts_with("__Host-bote_session="))
        .unwrap()
        .clone();
    assert!(cookie_flags_ok(&session), "{session}");
    let pre = b
        .set_cookies
        .iter()
        .find(|c| c.starts_with("__Host-bote_pre="))
        .unwrap();
    assert!(cookie_flags_ok(pre), "{pre}");
    // The cookie carries the API's session token: the user key stays sealed under it.
    let inbox = b.get("/mail?folder=inbox").await;
    assert_eq!(inbox.status, StatusCode::OK, "{}", inbox.text());
    assert!(
        inbox.text().contains("id=\"session-level\">normal<"),
        "{}",
        inbox.text()
    );
    // German by Accept-Language and by the switch.
    let r = b.get("/lang/de?back=%2Fmail%3Ffolder%3Dinbox").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers["location"], "/mail?folder=inbox");
    let de = b.get("/mail?folder=inbox").await;
    assert!(de.text().contains("Posteingang"), "{}", de.text());
    assert!(de.text().contains("<html lang=\"de\">"));
    for elsewhere in [
        "%2F%2Fevil.example",
        "%2F%09%2Fevil.example",
        "%2F%0A%2Fevil.example",
        "%2F%5Cevil.example",
        "https%3A%2F%2Fevil.example",
    ] {
        let r = b.get(&format!("/lang/en?back={elsewhere}")).await;
        assert_eq!(r.headers["location"], "/", "back={elsewhere}");
    }
}
on_both_backends!(
    login_sets_a_strict_cookie_and_pages_have_the_headers,
    super::login_sets_a_strict_cookie_and_pages_have_the_headers
);

async fn forms_without_the_csrf_token_are_refused(gw: Gateway) {
    let Cast { api, .. } = cast(gw).await;
    let captured = Captured::default();
    let _capturing = capture_logs(&captured);
    let mut b = Browser::new(&api);
    // Login without the pre-session cookie's token.
    b.get("/").await;
    let r = b
        .post(
            "/",
            &[
                ("csrf", "0000"),
                ("email", "anna@lemgo.example"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    b.login("anna@lemgo.example").await;
    for fields in [vec![], vec![("csrf", "wrong")]] {
        let r = b.post("/logout", &fields).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
        assert!(r.text().contains("This form was refused"));
        let r = b
            .post_multipart(
                "/compose",
                &[
                    ("to", "bauamt@lemgo.example"),
                    ("subject", "x"),
                    ("action", "send"),
                ],
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    }
    // Still logged in: nothing happened, nothing was sent.
    let sent = b.get("/mail?folder=sent").await;
    assert_eq!(sent.status, StatusCode::OK);
    assert!(copy_links(&sent).is_empty());
    let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(log.contains("CSRF token missing or wrong"), "{log}");
    // A token of one session does not work for another.
    let stolen = b.csrf_of("/security").await;
    let mut other = Browser::new(&api);
    other.login("bernd@lemgo.example").await;
    let r = other.post("/logout", &[("csrf", &stolen)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The right token logs out; the cookie is cleared and the session ends.
    let token = b.csrf_of("/security").await;
    let r = b.post("/logout", &[("csrf", &token)]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(!b.cookies.contains_key("__Host-bote_session"));
    assert_eq!(b.get("/mail").await.status, StatusCode::SEE_OTHER);
}
on_both_backends!(
    forms_without_the_csrf_token_are_refused,
    super::forms_without_the_csrf_token_are_refused
);

async fn brute_force_login_is_locked(gw: Gateway) {
    let Cast { api, .. } = cast(gw).await;
    let mut b = Browser::new(&api);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let page = b.get("/").await;
        let token = csrf(&page);
        let r = b
            .post(
                "/",
                &[
                    ("csrf", &token),
                    ("email", "anna@lemgo.example"),
                    ("password", "wrong password!!"),
                ],
            )
            .await;
        statuses.push(r.status);
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(
                r.text().contains("Too many failed attempts"),
                "{}",
                r.text()
            );
            assert!(r.text().contains("aria-invalid=\"true\""));
            break;
        }
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.text().contains("Wrong email address or password."));
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // Even the right password is refused while locked.
    let token = csrf(&b.get("/").await);
    let r = b
        .post(
            "/",
            &[
                ("csrf", &token),
                ("email", "anna@lemgo.example"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
}
on_both_backends!(
    brute_force_login_is_locked,
    super::brute_force_login_is_locked
);

/// Citizen Anna enrols TOTP on the security page (QR code and URI), steps up, writes an
/// authoritative letter with an attachment; staff Bernd opens it; Anna sees the pickup.
async fn citizen_enrols_steps_up_and_writes_to_an_office(gw: Gateway) {
    let api = Api::new(gw).await;
    let recovery = api.gw.setup.add_user("citizen", "anna@lemgo.example");
    api.gw.setup.add_user("staff", "bernd@lemgo.example");
    api.cli(
        &[
            "user",
            "verify-identity",
            "anna@lemgo.example",
            "--method",
            "eid",
        ],
        "",
    );
    api.office("bauamt@lemgo.example", "bernd@lemgo.example");
    let mut anna = Browser::new(&api);
    anna.login("anna@lemgo.example").await;

    // authoritative at level normal: refused with the reason, tied to the options.
    let token = anna.csrf_of("/compose").await;
    let r = anna
        .post_multipart(
            "/compose",
            &[
                ("csrf", &token),
                ("from", "anna@lemgo.example"),
                ("to", "bauamt@lemgo.example"),
                ("subject", "Bauantrag"),
                ("text", "Anbei."),
                ("authoritative", "yes"),
                ("action", "send"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert!(r.text().contains("id=\"options-error\""), "{}", r.text());
    assert!(r.text().contains("high"), "{}", r.text());

    // Enrol: the first factor needs the recovery code.
    let token = anna.csrf_of("/security").await;
    let r = anna
        .post(
            "/security/totp",
            &[("csrf", &token), ("recovery_code", "wrong")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    let r = anna
        .post(
            "/security/totp",
            &[("csrf", &token), ("recovery_code", &recovery)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let text = r.text();
    assert!(text.contains("<svg"), "QR code as SVG");
    let at = text.find("otpauth://").unwrap();
    let otpauth = text[at..].split('<').next().unwrap().replace("&amp;", "&");
    // A wrong code is refused, the right one raises the session.
    let r = anna
        .post("/security/step-up", &[("csrf", &token), ("code", "000000")])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    anna.step_up(&otpauth).await;
    // Audited as the API audits them: the login, the enrolment, the step-up.
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE target = 'anna@lemgo.example' ORDER BY id",
    )
    .fetch_all(api.gw.store.pool())
    .await
    .unwrap();
    for action in ["session.login", "user.totp", "session.second-factor"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} not in {actions:?}"
        );
    }
    let page = anna.get("/security?done=high").await;
    assert!(
        page.text().contains("id=\"session-level\">high<"),
        "{}",
        page.text()
    );

    // Look up the recipient in the directory.
    let token = csrf(&page);
    let r = anna
        .post_multipart(
            "/compose",
            &[
                ("csrf", &token),
                ("to", "bauamt@lemgo.example, nobody@lemgo.example"),
                ("action", "lookup"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        r.text()
            .contains("bauamt@lemgo.example: found in the directory (office)"),
        "{}",
        r.text()
    );
    assert!(
        r.text()
            .contains("nobody@lemgo.example: not in the directory")
    );

    let pdf: Vec<u8> = (0..=255u8).cycle().take(50_000).collect();
    let r = anna
        .post_multipart(
            "/compose",
            &[
                ("csrf", &token),
                ("from", "anna@lemgo.example"),
                ("to", "bauamt@lemgo.example"),
                ("subject", "Bauantrag Gartenhaus"),
                ("text", "Sehr geehrte Damen und Herren,\nanbei mein Antrag."),
                ("authoritative", "yes"),
                ("action", "send"),
            ],
            &[("attachments", "Antrag.pdf", &pdf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert!(
        r.text()
            .contains("SubmissionAcceptance – bauamt@lemgo.example"),
        "{}",
        r.text()
    );

    // Anna's sent folder and message: SubmissionAcceptance, ContentConsignment.
    let sent = anna.get("/mail?folder=sent").await;
    let ids = copy_links(&sent);
    assert_eq!(ids.len(), 1, "{}", sent.text());
    let mine = anna.get(&format!("/mail/{}", ids[0])).await;
    assert_eq!(mine.status, StatusCode::OK, "{}", mine.text());
    assert!(mine.text().contains("SubmissionAcceptance"));
    assert!(mine.text().contains("Antrag.pdf"));
    assert!(!mine.text().contains("ContentHandover"));

    // Bernd opens it: attestation, attachment, ContentHandover.
    let mut bernd = Browser::new(&api);
    bernd.login("bernd@lemgo.example").await;
    let inbox = bernd
        .get("/mail?folder=inbox&mailbox=bauamt@lemgo.example")
        .await;
    let ids_b = copy_links(&inbox);
    assert_eq!(ids_b.len(), 1, "{}", inbox.text());
    let msg = bernd.get(&format!("/mail/{}", ids_b[0])).await;
    assert_eq!(msg.status, StatusCode::OK, "{}", msg.text());
    let t = msg.text();
    assert!(t.contains("Bauantrag Gartenhaus"));
    assert!(t.contains("verified (eid)"), "{t}");
    assert!(t.contains("yes: the gateway confirms"), "{t}");
    assert!(t.contains("ContentHandover"), "{t}");
    let file = bernd
        .get(&format!("/mail/{}/attachments/0", ids_b[0]))
        .await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(file.body, pdf);
    assert!(
        file.headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );

    // Anna sees the pickup, and downloads a proof that bote verify accepts.
    let mine = anna.get(&format!("/mail/{}", ids[0])).await;
    assert!(mine.text().contains("ContentHandover"), "{}", mine.text());
    assert!(mine.text().contains("picked up"), "{}", mine.text());
    let token = csrf(&mine);
    let proof = anna
        .post(
            &format!("/mail/{}/proof", ids[0]),
            &[("csrf", &token), ("recipient", "bauamt@lemgo.example")],
        )
        .await;
    assert_eq!(proof.status, StatusCode::OK, "{}", proof.text());
    assert_eq!(proof.content_type, "application/x-tar");
    let file = api.gw.setup.path().join("web-proof.tar");
    std::fs::write(&file, &proof.body).unwrap();
    let cert = api.gw.setup.path().join("keys/evidence.cert.asc");
    let out = crate::support::run(api.gw.setup.cmd(&[
        "verify",
        file.to_str().unwrap(),
        "--key",
        cert.to_str().unwrap(),
    ]));
    assert!(out.status.success(), "{}", crate::support::stderr(&out));

    // Another user's message id: 404, as for a missing one.
    let r = bernd.get(&format!("/mail/{}", ids[0])).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    let r = bernd.get("/mail/does-not-exist").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
on_both_backends!(
    citizen_enrols_steps_up_and_writes_to_an_office,
    super::citizen_enrols_steps_up_and_writes_to_an_office
);

/// An office's HTML mail with scripts, handlers, remote images and CSS, and a subject
/// with markup: escaped on the page, sanitised in a sandboxed frame with its own CSP.
async fn hostile_html_and_subjects_are_neutralised(gw: Gateway) {
    let Cast { api, anna_otp } = cast(gw).await;
    let token = api.send_token("bauamt@lemgo.example");
    let subject = "<script>alert('s')</script><img src=x onerror=alert(1)>";
    let html = "<p onclick=\"alert(1)\">Bescheid<script>alert(2)</script></p>\
        <img src=\"https://tracker.example/p.gif\"><style>p{background:url(https://evil.example/c)}</style>\
        <a href=\"javascript:alert(3)\">x</a><div style=\"color:red\">y</div>";
    let raw = format!(
        "From: bauamt@lemgo.example\r\nTo: anna@lemgo.example\r\nSubject: {subject}\r\n\
         Message-ID: <html-1@lemgo.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"
    );
    let r = api
        .post(
            "/api/v1/messages",
            &token,
            json!({ "to": ["anna@lemgo.example"], "rfc5322": B64.encode(raw) }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let _ = anna_otp;
    let mut anna = Browser::new(&api);
    anna.login("anna@lemgo.example").await;
    let inbox = anna.get("/mail?folder=inbox").await;
    assert!(!inbox.text().contains("<script>alert"), "{}", inbox.text());
    assert!(
        inbox.text().contains("&#60;script&#62;"),
        "{}",
        inbox.text()
    );
    let id = copy_links(&inbox).remove(0);
    let page = anna.get(&format!("/mail/{id}")).await;
    let t = page.text();
    assert!(
        !t.contains("<script>alert") && !t.contains("<img src=x"),
        "{t}"
    );
    assert!(t.contains("sandbox=\"\""), "{t}");
    let frame = anna.get(&format!("/mail/{id}/html")).await;
    assert_eq!(frame.status, StatusCode::OK);
    let csp = frame.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(csp.contains("sandbox"), "{csp}");
    let f = frame.text();
    for bad in [
        "<script",
        "onclick",
        "alert",
        "tracker.example",
        "evil.example",
        "javascript:",
        "style",
    ] {
        assert!(!f.contains(bad), "{bad} in {f}");
    }
    assert!(f.contains("Bescheid"));
}
on_both_backends!(
    hostile_html_and_subjects_are_neutralised,
    super::hostile_html_and_subjects_are_neutralised
);

/// A personal message opened at level normal is refused with the reason; at high it opens.
async fn personal_message_needs_high(gw: Gateway) {
    let Cast { api, anna_otp } = cast(gw).await;
    let bernd = api.login("bernd@lemgo.example").await;
    let r = api
        .post(
            "/api/v1/messages",
            &bernd,
            json!({ "to": ["anna@lemgo.example"], "subject": "Bescheid", "text": "Persönlich.", "personal": true }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let mut anna = Browser::new(&api);
    anna.login("anna@lemgo.example").await;
    let inbox = anna.get("/mail?folder=inbox").await;
    assert!(
        inbox.text().contains("(personal: open at level high)"),
        "{}",
        inbox.text()
    );
    let id = copy_links(&inbox).remove(0);
    let r = anna.get(&format!("/mail/{id}")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert!(
        r.text().contains("This message is personal"),
        "{}",
        r.text()
    );
    assert!(!r.text().contains("Persönlich."));
    anna.step_up(&anna_otp).await;
    let r = anna.get(&format!("/mail/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.text().contains("Persönlich."));
}
on_both_backends!(
    personal_message_needs_high,
    super::personal_message_needs_high
);

/// Logging out everywhere ends the other sessions too; recovery sets a new password with
/// the recovery code and keeps the mail readable.
async fn logout_everywhere_and_recovery(gw: Gateway) {
    let api = Api::new(gw).await;
    let recovery = api.gw.setup.add_user("citizen", "anna@lemgo.example");
    api.gw.setup.add_user("staff", "bernd@lemgo.example");
    api.office("bauamt@lemgo.example", "bernd@lemgo.example");
    let bernd = api.login("bernd@lemgo.example").await;
    send_letter(&api, &bernd, "anna@lemgo.example", "Bescheid", "Text 42").await;
    let mut one = Browser::new(&api);
    let mut two = Browser::new(&api);
    one.login("anna@lemgo.example").await;
    two.login("anna@lemgo.example").await;
    let token = one.csrf_of("/security").await;
    let r = one.post("/logout-everywhere", &[("csrf", &token)]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(two.get("/mail").await.status, StatusCode::SEE_OTHER);
    assert_eq!(one.get("/mail").await.status, StatusCode::SEE_OTHER);

    let mut b = Browser::new(&api);
    let page = b.get("/recover").await;
    let token = csrf(&page);
    let r = b
        .post(
            "/recover",
            &[
                ("csrf", &token),
                ("email", "anna@lemgo.example"),
                ("recovery_code", "wrong"),
                ("password", "a new long password"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    let r = b
        .post(
            "/recover",
            &[
                ("csrf", &token),
                ("email", "anna@lemgo.example"),
                ("recovery_code", &recovery),
                ("password", "a new long password"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let page = b.get("/").await;
    let token = csrf(&page);
    let r = b
        .post(
            "/",
            &[
                ("csrf", &token),
                ("email", "anna@lemgo.example"),
                ("password", "a new long password"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let inbox = b.get("/mail?folder=inbox").await;
    let id = copy_links(&inbox).remove(0);
    assert!(
        b.get(&format!("/mail/{id}"))
            .await
            .text()
            .contains("Text 42")
    );
}
on_both_backends!(
    logout_everywhere_and_recovery,
    super::logout_everywhere_and_recovery
);

/// Adds a legal user limited to `scope` (empty: unlimited).
fn legal_user(api: &Api, email: &str, scope: &[&str]) {
    let mut args = vec![
        "user",
        "add",
        "--role",
        "legal",
        "--name",
        "Rechtsamt",
        "--email",
        email,
        "--password-stdin",
    ];
    for s in scope {
        args.extend(["--scope", s]);
    }
    api.cli(&args, &format!("{PASSWORD}\n"));
}

/// Anna writes to the Bauamt, Bernd opens it: the message legal staff look for.
async fn delivered_letter(api: &Api, anna_otp: &str) -> String {
    let anna = api.login_high("anna@lemgo.example", anna_otp).await;
    let mut body = crate::api::letter("bauamt@lemgo.example", "Bauantrag", "Anbei.");
    body["authoritative"] = json!(true);
    body["attachments"] = json!([{ "name": "Plan.pdf", "data": B64.encode(b"%PDF-1.4 plan") }]);
    let r = api.post("/api/v1/messages", &anna, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let gid = r.json()["gateway_id"].as_str().unwrap().to_owned();
    let bernd = api.login("bernd@lemgo.example").await;
    let copy = crate::api::only_copy(api, &bernd, "bauamt@lemgo.example", "inbox").await;
    let r = api
        .get(
            &format!("/api/v1/messages/{}", copy["id"].as_str().unwrap()),
            &bernd,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    gid
}

async fn legal_staff_find_print_and_export(gw: Gateway) {
    let Cast { api, anna_otp } = cast(gw).await;
    let gid = delivered_letter(&api, &anna_otp).await;
    legal_user(&api, "justiz@lemgo.example", &[]);
    let mut b = Browser::new(&api);
    b.login("justiz@lemgo.example").await;
    // Search by sender and time range, then by message id.
    let r = b
        .get("/legal?sender=anna%40lemgo.example&from=2020-01-01&until=2100-01-01")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.text().contains(&gid), "{}", r.text());
    assert!(
        !r.text().contains("Bauantrag"),
        "no subjects for legal staff"
    );
    let r = b.get("/legal?from=yesterday").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("id=\"from-error\""), "{}", r.text());
    let r = b.get(&format!("/legal/message?id={gid}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let t = r.text();
    let order: Vec<usize> = [
        "SubmissionAcceptance",
        "ContentConsignment",
        "ContentHandover",
    ]
    .iter()
    .map(|e| {
        t.find(&format!("class=\"event\">{e}"))
            .unwrap_or_else(|| panic!("{e}: {t}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "ordered: {order:?}");
    // The printable receipt.
    let r = b
        .get(&format!(
            "/legal/receipt?message={gid}&recipient=bauamt%40lemgo.example"
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let t = r.text();
    let fpr = api.core.keys().evidence.fingerprint();
    assert!(t.contains(&fpr), "evidence key fingerprint: {t}");
    assert!(t.contains("Plan.pdf") && t.contains("bote verify"), "{t}");
    assert!(
        t.contains("The recipient opened the message: proof of pickup."),
        "{t}"
    );
    // In German too.
    b.get("/lang/de").await;
    let de = b
        .get(&format!(
            "/legal/receipt?message={gid}&recipient=bauamt%40lemgo.example"
        ))
        .await;
    assert!(de.text().contains("Nachweis der Abholung"), "{}", de.text());
    // The audited export verifies.
    let token = csrf(&de);
    let r = b
        .post(
            "/legal/bundle",
            &[
                ("csrf", &token),
                ("message", &gid),
                ("recipient", "bauamt@lemgo.example"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let file = api.gw.setup.path().join("legal.tar");
    std::fs::write(&file, &r.body).unwrap();
    let out =
        crate::support::run(
            api.gw
                .setup
                .cmd(&["verify", file.to_str().unwrap(), "--key", &fpr]),
        );
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
    // The export is audited with who took it.
    let actors: Vec<String> = sqlx::query_scalar(
        "SELECT actor FROM audit_log WHERE action = 'proof.export' AND target = $1",
    )
    .bind(&gid)
    .fetch_all(api.gw.store.pool())
    .await
    .unwrap();
    assert!(
        actors.iter().any(|a| a.contains("justiz@lemgo.example")),
        "{actors:?}"
    );
    // Without the token: refused.
    let r = b
        .post(
            "/legal/bundle",
            &[("message", &gid), ("recipient", "bauamt@lemgo.example")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Citizens and staff have no evidence search.
    let mut anna = Browser::new(&api);
    anna.login("anna@lemgo.example").await;
    assert_eq!(
        anna.get("/legal?sender=anna%40lemgo.example").await.status,
        StatusCode::FORBIDDEN
    );
}
on_both_backends!(
    legal_staff_find_print_and_export,
    super::legal_staff_find_print_and_export
);

/// A legal user scoped to another office sees nothing of the Bauamt's mail, on the pages
/// and through the API; one scoped to the Bauamt sees it.
async fn legal_outside_scope_sees_nothing(gw: Gateway) {
    let Cast { api, anna_otp } = cast(gw).await;
    let gid = delivered_letter(&api, &anna_otp).await;
    api.cli(
        &[
            "mailbox",
            "add",
            "--office",
            "ordnungsamt@lemgo.example",
            "--name",
            "Ordnungsamt",
        ],
        "",
    );
    legal_user(
        &api,
        "ordnung-recht@lemgo.example",
        &["ordnungsamt@lemgo.example"],
    );
    legal_user(&api, "bau-recht@lemgo.example", &["bauamt@lemgo.example"]);
    let captured = Captured::default();
    let _capturing = capture_logs(&captured);

    let mut out = Browser::new(&api);
    out.login("ordnung-recht@lemgo.example").await;
    let r = out.get(&format!("/legal?message={gid}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("No evidence matches."), "{}", r.text());
    assert!(
        r.text().contains("ordnungsamt@lemgo.example"),
        "scope shown"
    );
    let r = out.get("/legal?sender=anna%40lemgo.example").await;
    assert!(!r.text().contains(&gid));
    assert_eq!(
        out.get(&format!("/legal/message?id={gid}")).await.status,
        StatusCode::NOT_FOUND
    );
    let r = out
        .get(&format!(
            "/legal/receipt?message={gid}&recipient=bauamt%40lemgo.example"
        ))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!r.text().contains("anna@lemgo.example"));
    let token = out.csrf_of("/legal").await;
    for recipient in ["bauamt@lemgo.example", ""] {
        let r = out
            .post(
                "/legal/bundle",
                &[
                    ("csrf", &token),
                    ("message", &gid),
                    ("recipient", recipient),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    }
    // The API's evidence endpoints, through the same service layer.
    let token = api.login("ordnung-recht@lemgo.example").await;
    let r = api
        .get(&format!("/api/v1/evidence?message={gid}"), &token)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!([]));
    let r = api
        .get(
            &format!("/api/v1/evidence/bundle?message={gid}&recipient=bauamt@lemgo.example"),
            &token,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(log.contains("outside the legal user's scope"), "{log}");

    // In scope: found, and the bundle exports without naming the recipient.
    let token = api.login("bau-recht@lemgo.example").await;
    let r = api
        .get(&format!("/api/v1/evidence?message={gid}"), &token)
        .await;
    assert_eq!(r.json().as_array().unwrap().len(), 3, "{}", r.text());
    let r = api
        .get(&format!("/api/v1/evidence/bundle?message={gid}"), &token)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // A scope is for legal users only, and names existing mailboxes.
    let bad = crate::support::run_with_stdin(
        api.gw.setup.cmd(&[
            "user",
            "add",
            "--role",
            "staff",
            "--name",
            "X",
            "--email",
            "x@lemgo.example",
            "--password-stdin",
            "--scope",
            "bauamt@lemgo.example",
        ]),
        &format!("{PASSWORD}\n"),
    );
    assert!(!bad.status.success());
    assert!(
        crate::support::stderr(&bad).contains("only legal users"),
        "{}",
        crate::support::stderr(&bad)
    );
}
on_both_backends!(
    legal_outside_scope_sees_nothing,
    super::legal_outside_scope_sees_nothing
);

/// The story in Debian's Chromium (tests/e2e/story.mjs, playwright-core and axe-core from
/// npm, installed by `scripts/setup-deps --test`): every page free of WCAG 2.1 A/AA
/// violations, screenshots under target/web-e2e/; the legal export verifies.
async fn browser_story((setup, _db): (crate::support::Setup, crate::support::TestDb)) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let e2e = root.join("tests/e2e");
    assert!(
        std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "node is not installed: run scripts/setup-deps --test (the browser tests need it)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: run scripts/setup-deps --test (Debian's chromium package)"
    );
    assert!(
        e2e.join("node_modules/playwright-core").exists()
            && e2e.join("node_modules/axe-core").exists(),
        "playwright-core / axe-core are missing: run scripts/setup-deps --test (npm ci in tests/e2e)"
    );
    let anna_recovery = setup.add_user("citizen", "anna@lemgo.example");
    setup.add_user("staff", "bernd@lemgo.example");
    setup.add_user_named("staff", "carl@lemgo.example", "Carl");
    let ok = |args: &[&str], stdin: &str| {
        let out = crate::support::run_with_stdin(setup.cmd(args), stdin);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            crate::support::stderr(&out)
        );
    };
    ok(
        &[
            "user",
            "verify-identity",
            "anna@lemgo.example",
            "--method",
            "eid",
        ],
        "",
    );
    ok(
        &[
            "mailbox",
            "add",
            "--office",
            "bauamt@lemgo.example",
            "--name",
            "Bauamt Lemgo",
            "--member",
            "bernd@lemgo.example",
        ],
        "",
    );
    // A colleague the operator adds waits for a member's confirmation (story step 4b).
    ok(
        &[
            "mailbox",
            "add-member",
            "--mailbox",
            "bauamt@lemgo.example",
            "--user",
            "carl@lemgo.example",
        ],
        "",
    );
    ok(
        &[
            "mailbox",
            "verify-identity",
            "bauamt@lemgo.example",
            "--method",
            "in-person",
        ],
        "",
    );
    ok(
        &[
            "user",
            "add",
            "--role",
            "legal",
            "--name",
            "Rechtsamt",
            "--email",
            "justiz@lemgo.example",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    let server = crate::http::Server::start(&setup, &[]);
    // Office software sends the citizen an HTML notice with a script, an event handler and a
    // remote image (through the served API): the story opens it in the sandboxed frame.
    let token = crate::support::stdout(&crate::support::run(setup.cmd(&[
        "token",
        "create",
        "--mailbox",
        "bauamt@lemgo.example",
    ])))
    .trim()
    .to_owned();
    let html = "From: bauamt@lemgo.example\r\nTo: anna@lemgo.example\r\nSubject: Ihr Bescheid\r\n\
        Message-ID: <html-notice@lemgo.example>\r\nMIME-Version: 1.0\r\n\
        Content-Type: text/html; charset=utf-8\r\n\r\n\
        <h1 onmouseover=\"alert(1)\">Bescheid 42</h1><script>document.title='pwned'</script>\
        <img src=\"https://tracker.example/pixel.gif\" alt=\"\"><p style=\"color:red\">Gez. Bauamt</p>\r\n";
    let body = json!({ "to": ["anna@lemgo.example"], "rfc5322": B64.encode(html) }).to_string();
    let sent = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&server.ca)
        .args([
            "-H",
            &format!("authorization: Bearer {token}"),
            "-H",
            "content-type: application/json",
        ])
        .args(["-d", &body, "-w", "%{http_code}", "-o", "/dev/null"])
        .arg(format!(
            "https://localhost:{}/api/v1/messages",
            server.https
        ))
        .output()
        .expect("run curl");
    assert_eq!(
        String::from_utf8_lossy(&sent.stdout),
        "201",
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let artifacts = root.join("target/web-e2e");
    let _ = std::fs::remove_dir_all(&artifacts);
    let bundle = setup.path().join("browser-bundle.tar");
    let out = std::process::Command::new("node")
        .arg(e2e.join("story.mjs"))
        .current_dir(&e2e)
        .env("BASE", format!("https://localhost:{}", server.https))
        .env("CERT", setup.path().join("certs/server.crt"))
        .env("ARTIFACTS", &artifacts)
        .env("BUNDLE", &bundle)
        .env("PASSWORD", PASSWORD)
        .env("ANNA_RECOVERY", &anna_recovery)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "browser story failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(summary.contains("\"pages\":"), "{summary}");
    let cert = setup.path().join("keys/evidence.cert.asc");
    let verify = crate::support::run(setup.cmd(&[
        "verify",
        bundle.to_str().unwrap(),
        "--key",
        cert.to_str().unwrap(),
    ]));
    assert!(
        verify.status.success(),
        "{}",
        crate::support::stderr(&verify)
    );
    assert!(crate::support::stdout(&verify).contains("ContentHandover"));
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_story_sqlite() {
    crate::support::run_on(bote::store::Backend::Sqlite, browser_story).await;
}

/// `bote demo` prints the inbox URL and logins that work on the login page (over HTTPS,
/// with the development CA, through curl's cookie jar).
#[test]
fn the_demo_prints_the_inbox_and_logins_that_work() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let port = crate::support::free_port();
    let mut child = crate::support::bote(&["demo", "--dir", demo.to_str().unwrap()])
        .env("BOTE_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("BOTE_HTTP_METRICS_LISTEN", "")
        .env("BOTE_SMTP_SUBMISSION_LISTEN", "127.0.0.1:0")
        .env("BOTE_SMTP_SUBMISSIONS_LISTEN", "127.0.0.1:0")
        .env("BOTE_SMTP_MX_LISTEN", "")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut printed = String::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("stop with") {
            break;
        }
    }
    let inbox = format!("https://127.0.0.1:{port}/");
    assert!(printed.contains(&format!("inbox:   {inbox}")), "{printed}");
    let password = printed
        .lines()
        .find(|l| l.contains("anna@lemgo.example") && l.contains("password: "))
        .and_then(|l| l.split("password: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no login for anna: {printed}"))
        .to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the demo did not serve"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let jar = dir.path().join("cookies.txt");
    let ca = demo.join("certs/ca.crt");
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&ca)
            .arg("-b")
            .arg(&jar)
            .arg("-c")
            .arg(&jar)
            .args(args)
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let login = curl(&[&inbox]);
    let at = login.find("name=\"csrf\" value=\"").unwrap();
    let csrf = login[at + 19..].split('"').next().unwrap().to_owned();
    let answer = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "--data-urlencode",
        &format!("csrf={csrf}"),
        "--data-urlencode",
        "email=anna@lemgo.example",
        "--data-urlencode",
        &format!("password={password}"),
        &inbox,
    ]);
    assert!(
        answer.starts_with("303 ") && answer.contains("/mail"),
        "{answer}"
    );
    let page = curl(&[&format!("{inbox}mail?folder=inbox")]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        page.contains("anna@lemgo.example") && page.contains("Inbox"),
        "{page}"
    );
}

/// Staff of two offices switch between them; compose sends from the chosen one.
async fn staff_switch_between_their_offices(gw: Gateway) {
    let Cast { api, .. } = cast(gw).await;
    let code = api.office("ordnungsamt@lemgo.example", "bernd@lemgo.example");
    let _ = code;
    let anna = api.login("anna@lemgo.example").await;
    send_letter(
        &api,
        &anna,
        "ordnungsamt@lemgo.example",
        "Lärmbeschwerde",
        "Nachts laut.",
    )
    .await;
    let mut b = Browser::new(&api);
    b.login("bernd@lemgo.example").await;
    let page = b.get("/mail?folder=inbox").await;
    let t = page.text();
    assert!(
        t.contains("<select id=\"mailbox\" name=\"mailbox\">"),
        "{t}"
    );
    assert!(
        t.contains("value=\"bauamt@lemgo.example\"")
            && t.contains("value=\"ordnungsamt@lemgo.example\"")
    );
    let page = b
        .get("/mail?folder=inbox&mailbox=ordnungsamt%40lemgo.example")
        .await;
    assert!(page.text().contains("Lärmbeschwerde"), "{}", page.text());
    let page = b
        .get("/mail?folder=inbox&mailbox=bauamt%40lemgo.example")
        .await;
    assert!(!page.text().contains("Lärmbeschwerde"));
    // A mailbox that is not theirs: not found.
    let r = b
        .get("/mail?folder=inbox&mailbox=anna%40lemgo.example")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    // Compose offers both offices and the retrieval confirmation; sends from the chosen one.
    let form = b.get("/compose").await;
    assert!(form.text().contains("id=\"retrieval_confirmation\""));
    let token = csrf(&form);
    let r = b
        .post_multipart(
            "/compose",
            &[
                ("csrf", &token),
                ("from", "ordnungsamt@lemgo.example"),
                ("to", "anna@lemgo.example"),
                ("subject", "Antwort"),
                ("text", "Wir prüfen."),
                ("action", "send"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let sent = b
        .get("/mail?folder=sent&mailbox=ordnungsamt%40lemgo.example")
        .await;
    assert!(sent.text().contains("Antwort"), "{}", sent.text());
}
on_both_backends!(
    staff_switch_between_their_offices,
    super::staff_switch_between_their_offices
);

/// Over the size limit: the core's refusal at the attachments field, and an upload too large
/// to read at all, each with a clear message.
async fn attachments_over_the_limit_are_refused_clearly(gw: Gateway) {
    let mut config = gw.config.clone();
    config.limits.message_size_submission = 20_000;
    let api = Api::with_config(gw, config);
    api.gw.setup.add_user("citizen", "anna@lemgo.example");
    api.gw.setup.add_user("staff", "bernd@lemgo.example");
    api.office("bauamt@lemgo.example", "bernd@lemgo.example");
    let mut b = Browser::new(&api);
    b.login("anna@lemgo.example").await;
    let form = b.get("/compose").await;
    assert!(
        form.text().contains("19.5 KiB"),
        "limit shown: {}",
        form.text()
    );
    let token = csrf(&form);
    let fields = [
        ("csrf", token.as_str()),
        ("to", "bauamt@lemgo.example"),
        ("subject", "Pläne"),
        ("action", "send"),
    ];
    let big = vec![7u8; 30_000];
    let r = b
        .post_multipart("/compose", &fields, &[("attachments", "plan.pdf", &big)])
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    assert!(
        r.text().contains("id=\"attachments-error\""),
        "{}",
        r.text()
    );
    assert!(
        r.text().contains("The message is too large."),
        "{}",
        r.text()
    );
    let huge = vec![7u8; 2 * 1024 * 1024];
    let r = b
        .post_multipart("/compose", &fields, &[("attachments", "scan.tif", &huge)])
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    assert!(
        r.text()
            .contains("too large. Please attach your files again"),
        "{}",
        r.text()
    );
}
on_both_backends!(
    attachments_over_the_limit_are_refused_clearly,
    super::attachments_over_the_limit_are_refused_clearly
);

/// Settings: a citizen lists her mailbox in the directory and unlists it; staff create a
/// read token for their office (shown once), office software reads with it, staff revoke it.
async fn settings_directory_and_read_tokens(gw: Gateway) {
    let Cast { api, .. } = cast(gw).await;
    let lookup = "/api/v1/directory?address=anna@lemgo.example";
    assert_eq!(
        api.call("GET", lookup, None, None).await.status,
        StatusCode::NOT_FOUND
    );
    let mut anna = Browser::new(&api);
    anna.login("anna@lemgo.example").await;
    let page = anna.get("/settings").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let token = csrf(&page);
    let r = anna
        .post(
            "/settings/directory",
            &[("csrf", &token), ("publish", "yes")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(
        api.call("GET", lookup, None, None).await.status,
        StatusCode::OK
    );
    assert!(
        anna.get("/settings")
            .await
            .text()
            .contains("id=\"publish\" name=\"publish\" value=\"yes\" checked")
    );
    anna.post("/settings/directory", &[("csrf", &token)]).await;
    assert_eq!(
        api.call("GET", lookup, None, None).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(
        !anna.get("/settings").await.text().contains("id=\"tokens\""),
        "no tokens for citizens"
    );

    let anna_api = api.login("anna@lemgo.example").await;
    send_letter(&api, &anna_api, "bauamt@lemgo.example", "Antrag", "Text").await;
    let mut bernd = Browser::new(&api);
    bernd.login("bernd@lemgo.example").await;
    let token = bernd.csrf_of("/settings").await;
    let r = bernd
        .post(
            "/settings/tokens",
            &[("csrf", &token), ("mailbox", "bauamt@lemgo.example")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let t = r.text();
    let at = t.find("id=\"new-token\">").unwrap();
    let read_token = t[at + 15..].split('<').next().unwrap().to_owned();
    let list = api
        .get("/api/v1/mailboxes/bauamt@lemgo.example/inbox", &read_token)
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text());
    assert_eq!(list.json().as_array().unwrap().len(), 1);
    // Listed without the token itself; revoked, it opens nothing.
    let page = bernd.get("/settings").await;
    assert!(!page.text().contains(&read_token));
    let at = page.text().find("action=\"/settings/tokens/").unwrap();
    let id = page.text()[at + 25..].split('/').next().unwrap().to_owned();
    let r = bernd
        .post(
            &format!("/settings/tokens/{id}/revoke"),
            &[("csrf", &token)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.text().contains("The token is revoked"));
    let list = api
        .get("/api/v1/mailboxes/bauamt@lemgo.example/inbox", &read_token)
        .await;
    assert_eq!(list.status, StatusCode::UNAUTHORIZED, "{}", list.text());
    // Anna cannot create one for the office, nor revoke Bernd's.
    let token = anna.csrf_of("/settings").await;
    let r = anna
        .post(
            "/settings/tokens",
            &[("csrf", &token), ("mailbox", "bauamt@lemgo.example")],
        )
        .await;
    assert!(
        r.status == StatusCode::NOT_FOUND || r.status == StatusCode::FORBIDDEN,
        "{}",
        r.text()
    );
    let r = anna
        .post(
            &format!("/settings/tokens/{id}/revoke"),
            &[("csrf", &token)],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
}
on_both_backends!(
    settings_directory_and_read_tokens,
    super::settings_directory_and_read_tokens
);

/// Form fields as `Browser::post` takes them.
fn borrowed<'a>(fields: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A member gives a colleague the office's key from the settings page, once they have
/// compared the colleague's key fingerprint (which the colleague sees on theirs); the
/// box must be ticked, and a key replaced since the page was shown is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_gives_a_colleague_access_after_comparing_their_key() {
    let gw = Gateway::new(bote::store::Backend::Sqlite).await;
    let Cast { api, .. } = cast(gw).await;
    api.gw.setup.add_user("staff", "carl@lemgo.example");
    api.cli(
        &[
            "mailbox",
            "add-member",
            "--mailbox",
            "bauamt@lemgo.example",
            "--user",
            "carl@lemgo.example",
        ],
        "",
    );
    let anna_api = api.login("anna@lemgo.example").await;
    send_letter(&api, &anna_api, "bauamt@lemgo.example", "Antrag", "Text").await;
    let inbox = "/api/v1/mailboxes/bauamt@lemgo.example/inbox";

    // Carl's key is the operator's making: his settings send him to Security first, and
    // Bernd is not asked.
    let mut carl = Browser::new(&api);
    carl.login("carl@lemgo.example").await;
    let page = carl.get("/settings").await.text();
    assert!(page.contains("id=\"own-key-not-yet\""), "{page}");
    assert!(!page.contains("id=\"own-key\""));
    let mut bernd = Browser::new(&api);
    bernd.login("bernd@lemgo.example").await;
    assert!(
        !bernd
            .get("/settings")
            .await
            .text()
            .contains("carl@lemgo.example")
    );
    // Carl chooses his own password: a new key, its recovery code shown once, logged out.
    let token = carl.csrf_of("/security").await;
    let change = |current: &'static str| {
        [
            ("csrf", token.clone()),
            ("current", current.to_owned()),
            ("new_password", "carls own long password".to_owned()),
        ]
    };
    let r = carl
        .post("/security/password", &borrowed(&change("wrong password!!")))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert!(
        r.text().contains("The current password is wrong"),
        "{}",
        r.text()
    );
    let r = carl
        .post("/security/password", &borrowed(&change(PASSWORD)))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        r.text().contains("id=\"new-recovery-code\""),
        "{}",
        r.text()
    );
    assert_eq!(
        carl.get("/settings").await.status,
        StatusCode::SEE_OTHER,
        "logged out"
    );
    let mut carl = Browser::new(&api);
    carl.login_with("carl@lemgo.example", "carls own long password")
        .await;
    // His Security page says when his key was made, so that he would notice a change he
    // did not make.
    let page = carl.get("/security").await.text();
    assert!(page.contains("id=\"key-made\""), "{page}");
    // Now his settings show his key; Bernd's show the request with the same fingerprint.
    let page = carl.get("/settings").await.text();
    let at = page.find("id=\"own-key\">").expect("Carl sees his key");
    let carl_key = page[at + 13..].split('<').next().unwrap().to_owned();
    assert_eq!(
        carl_key.len(),
        49,
        "40 hex digits in groups of four: {carl_key}"
    );
    let page = bernd.get("/settings").await.text();
    assert!(page.contains(&carl_key), "{page}");
    assert!(page.contains("carl@lemgo.example"));
    let stored: String = carl_key.split(' ').collect();
    let token = bernd.csrf_of("/settings").await;
    let form = |fingerprint: &str, compared: bool| {
        let mut f = vec![
            ("csrf", token.clone()),
            ("mailbox", "bauamt@lemgo.example".to_owned()),
            ("user", "carl@lemgo.example".to_owned()),
            ("fingerprint", fingerprint.to_owned()),
        ];
        if compared {
            f.push(("compared", "yes".to_owned()));
        }
        f
    };
    let carl_api = api
        .login_with("carl@lemgo.example", "carls own long password")
        .await;

    // Not ticked: refused, nothing granted.
    let r = bernd
        .post("/settings/grants", &borrowed(&form(&stored, false)))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert!(r.text().contains("Tick the box"), "{}", r.text());
    assert_eq!(
        api.get(inbox, &carl_api).await.status,
        StatusCode::NOT_FOUND
    );
    // A key other than the one shown: refused.
    let r = bernd
        .post("/settings/grants", &borrowed(&form(&"A".repeat(40), true)))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(
        r.text().contains("compare the new fingerprint"),
        "{}",
        r.text()
    );
    assert_eq!(
        api.get(inbox, &carl_api).await.status,
        StatusCode::NOT_FOUND
    );
    // Compared and ticked: Carl reads the office's mail; the request is gone.
    let r = bernd
        .post("/settings/grants", &borrowed(&form(&stored, true)))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.text().contains("Access given"), "{}", r.text());
    assert!(!r.text().contains(&carl_key));
    let list = api.get(inbox, &carl_api).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text());
    assert_eq!(list.json().as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_story_postgres() {
    crate::support::run_on(bote::store::Backend::Postgres, browser_story).await;
}
