//! The JSON API end to end: a citizen writes to an office, staff read it, both see the same
//! evidence, the bundle verifies; and who may not read what.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bote::config::Config;
use bote::web;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::on_both_backends;
use crate::support::{Gateway, run, run_with_stdin, stderr, stdout};

/// The gateway's router plus the CLI of its setup.
pub struct Api {
    pub gw: Gateway,
    pub core: bote::gateway::Gateway,
    pub app: axum::Router,
}

/// A response: status, content type, body.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The problem `type` of an error reply.
    pub fn problem(&self) -> String {
        assert_eq!(
            self.content_type,
            "application/problem+json",
            "{}",
            self.text()
        );
        self.json()["type"].as_str().unwrap_or_default().to_owned()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn reply(response: axum::response::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        content_type,
        headers,
        body: body.to_vec(),
    }
}

impl Api {
    pub async fn new(gw: Gateway) -> Self {
        let config = gw.config.clone();
        Self::with_config(gw, config)
    }

    pub fn with_config(gw: Gateway, config: Config) -> Self {
        let core = bote::gateway::Gateway::from_parts(
            gw.store.clone(),
            Arc::new(config),
            gw.keys.clone(),
            gw.log.clone(),
            gw.writer.clone(),
        );
        let app = web::router(core.clone());
        Self { gw, core, app }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.call_from(None, method, path, token, body).await
    }

    /// As [`Api::call`], from the client address `client` (as the HTTPS listener records
    /// it), or from an in-process caller.
    pub async fn call_from(
        &self,
        client: Option<[u8; 4]>,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(ip) = client {
            req = req.extension(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                ip, 50000,
            ))));
        }
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let response = self.app.clone().oneshot(req).await.unwrap();
        reply(response).await
    }

    /// A request with a body of any content type.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: &str,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, content_type);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let response = self
            .app
            .clone()
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        reply(response).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call("POST", path, Some(token), Some(body)).await
    }

    /// Logs in with the test password; returns the session token.
    pub async fn login(&self, email: &str) -> String {
        self.login_with(email, "a long enough password").await
    }

    /// Logs in with `password`; returns the session token.
    pub async fn login_with(&self, email: &str, password: &str) -> String {
        self.session(email, password).await["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Logs in with `password` (which must succeed); returns the session response.
    pub async fn session(&self, email: &str, password: &str) -> Value {
        let body = json!({ "email": email, "password": password });
        let r = self.call("POST", "/api/v1/session", None, Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        r.json()
    }

    /// Logs in and gives the TOTP code of `otpauth`: a `high` session.
    pub async fn login_high(&self, email: &str, otpauth: &str) -> String {
        let token = self.login(email).await;
        let code = bote::auth::totp_code_now(otpauth).unwrap();
        let r = self
            .post("/api/v1/session/totp", &token, json!({ "code": code }))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        token
    }

    /// Runs the CLI; panics on failure; returns stdout.
    pub fn cli(&self, args: &[&str], stdin: &str) -> String {
        let out = run_with_stdin(self.gw.setup.cmd(args), stdin);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    }

    /// `bote user totp`: enrols a second factor; returns the otpauth URL.
    pub fn enrol_totp(&self, email: &str) -> String {
        let out = self.cli(&["user", "totp", email], "");
        out.trim().strip_prefix("otpauth: ").unwrap().to_owned()
    }

    /// A local office with `member` as an active member (granted with the recovery code);
    /// returns the mailbox recovery code.
    pub fn office(&self, address: &str, member: &str) -> String {
        let out = self.cli(
            &[
                "mailbox",
                "add",
                "--office",
                address,
                "--name",
                "Bauamt Lemgo",
            ],
            "",
        );
        let code = out
            .lines()
            .find_map(|l| l.strip_prefix("recovery-code: "))
            .unwrap()
            .to_owned();
        self.cli(
            &[
                "mailbox",
                "add-member",
                "--mailbox",
                address,
                "--user",
                member,
                "--recovery-code-stdin",
            ],
            &format!("{code}\n"),
        );
        code
    }

    /// A send-only token for an office (operator CLI).
    pub fn send_token(&self, mailbox: &str) -> String {
        self.cli(&["token", "create", "--mailbox", mailbox], "")
            .trim()
            .to_owned()
    }
}

/// Citizen Anna (verified, with TOTP), staff Bernd in office bauamt@: the cast of most tests.
pub struct Cast {
    pub api: Api,
    pub anna_otp: String,
}

pub async fn cast(gw: Gateway) -> Cast {
    let api = Api::new(gw).await;
    api.gw.setup.add_user("citizen", "anna@lemgo.example");
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
    api.cli(
        &[
            "mailbox",
            "verify-identity",
            "bauamt@lemgo.example",
            "--method",
            "in-person",
        ],
        "",
    );
    let anna_otp = api.enrol_totp("anna@lemgo.example");
    Cast { api, anna_otp }
}

/// Submits a composed letter with `token`; panics unless it is accepted; returns the
/// gateway id.
pub async fn send_letter(api: &Api, token: &str, to: &str, subject: &str, text: &str) -> String {
    let r = api
        .post("/api/v1/messages", token, letter(to, subject, text))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    r.json()["gateway_id"].as_str().unwrap().to_owned()
}

/// A composed submission body.
pub fn letter(to: &str, subject: &str, text: &str) -> Value {
    json!({ "to": [to], "subject": subject, "text": text })
}

pub fn events(timeline: &Value) -> Vec<String> {
    timeline
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect()
}

fn evidence_ids(timeline: &Value) -> Vec<String> {
    timeline
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["record"]["evidence_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The one copy in a folder.
pub async fn only_copy(api: &Api, token: &str, mailbox: &str, folder: &str) -> Value {
    let r = api
        .get(&format!("/api/v1/mailboxes/{mailbox}/{folder}"), token)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let list = r.json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    list[0].clone()
}

async fn citizen_writes_to_a_local_office(gw: Gateway) {
    let Cast { api, anna_otp } = cast(gw).await;
    let anna = api.login_high("anna@lemgo.example", &anna_otp).await;
    let pdf: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let mut body = letter(
        "bauamt@lemgo.example",
        "Bauantrag Gartenhaus",
        "Sehr geehrte Damen und Herren,\nanbei mein Bauantrag.",
    );
    body["attachments"] = json!([{ "name": "Bauantrag.pdf", "content_type": "application/pdf",
                                   "data": B64.encode(&pdf) }]);
    body["authoritative"] = json!(true);
    let r = api.post("/api/v1/messages", &anna, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let accepted = r.json();
    let gateway_id = accepted["gateway_id"].as_str().unwrap().to_owned();
    let acceptance = &accepted["submission_acceptance"][0];
    assert_eq!(acceptance["recipient"], "bauamt@lemgo.example");
    assert_eq!(acceptance["record"]["event"], "SubmissionAcceptance");
    assert_eq!(acceptance["record"]["sender"]["auth_level"], "high");
    assert_eq!(acceptance["record"]["sender"]["identity"]["method"], "eid");
    let attachments = &acceptance["record"]["message"]["attachments"];
    assert_eq!(attachments[0]["name"], "Bauantrag.pdf");
    assert_eq!(attachments[0]["size"], 70_000);
    assert_eq!(
        attachments[0]["sha256"],
        bote::evidence::Sha256Digest::of(&pdf).to_string()
    );

    // Staff read it in the office inbox: subject decrypted, attachment intact, attested.
    let bernd = api.login("bernd@lemgo.example").await;
    let listed = only_copy(&api, &bernd, "bauamt@lemgo.example", "inbox").await;
    assert_eq!(listed["subject"], "Bauantrag Gartenhaus");
    assert_eq!(listed["gateway_id"], gateway_id.as_str());
    assert!(listed["handed_over_at"].is_null());
    let id = listed["id"].as_str().unwrap();
    // Received messages have no receipts, and asking is no opening.
    let r = api
        .get(&format!("/api/v1/messages/{id}/receipts"), &bernd)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api.get(&format!("/api/v1/messages/{id}"), &bernd).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let message = r.json();
    assert!(
        message["text"]
            .as_str()
            .unwrap()
            .contains("anbei mein Bauantrag.")
    );
    assert_eq!(message["handover_recorded"], true);
    assert_eq!(message["attestation"]["sender"], "anna@lemgo.example");
    assert_eq!(message["attestation"]["identity"], "verified:eid");
    assert_eq!(message["attestation"]["authoritative"], true);
    assert_eq!(message["attachments"][0]["name"], "Bauantrag.pdf");
    let r = api
        .get(&format!("/api/v1/messages/{id}/attachments/0"), &bernd)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, pdf);
    // A second opening is no second handover.
    let again = api
        .get(&format!("/api/v1/messages/{id}"), &bernd)
        .await
        .json();
    assert_eq!(again["handover_recorded"], false);

    // Both sides see the same timeline, ContentHandover included.
    let office_timeline = api
        .get(&format!("/api/v1/messages/{id}/timeline"), &bernd)
        .await
        .json();
    let sent = only_copy(&api, &anna, "anna@lemgo.example", "sent").await;
    assert_eq!(sent["subject"], "Bauantrag Gartenhaus");
    let sent_id = sent["id"].as_str().unwrap();
    let anna_timeline = api
        .get(&format!("/api/v1/messages/{sent_id}/timeline"), &anna)
        .await
        .json();
    assert_eq!(
        events(&anna_timeline),
        [
            "SubmissionAcceptance",
            "ContentConsignment",
            "ContentHandover"
        ]
    );
    assert_eq!(evidence_ids(&anna_timeline), evidence_ids(&office_timeline));
    assert_eq!(
        anna_timeline[2]["record"]["details"]["recipient_auth_level"],
        "normal"
    );
    // Version 2: one linked chain, under the evidence policy, naming the signing key, the
    // submission time and options on every record, the office member pseudonymously.
    let fingerprint = api.gw.keys.evidence.fingerprint();
    for (i, entry) in anna_timeline.as_array().unwrap().iter().enumerate() {
        let record = &entry["record"];
        assert_eq!(record["version"], 2);
        assert_eq!(record["chain"]["seq"], i + 1);
        assert_eq!(record["chain"]["prev"].is_null(), i == 0);
        assert_eq!(record["issuer_key"], fingerprint.as_str());
        assert_eq!(record["policy"], "urn:bote:evidence-policy:1");
        assert_eq!(
            record["submission_time"],
            anna_timeline[0]["record"]["time"]
        );
        assert_eq!(record["options"]["personal"], false);
        assert!(
            record["recipient_identity"]["verified"].is_boolean(),
            "{record}"
        );
    }
    let member = anna_timeline[2]["record"]["details"]["member"]
        .as_str()
        .unwrap();
    assert!(member.starts_with("u-") && member.len() == 18, "{member}");

    // Receipts are the evidence, rendered for the sender.
    let receipts = api
        .get(&format!("/api/v1/messages/{sent_id}/receipts"), &anna)
        .await
        .json();
    assert_eq!(receipts.as_array().unwrap().len(), 3);
    assert_eq!(
        receipts[2]["subject"],
        "REM ContentHandover: Bauantrag Gartenhaus"
    );
    assert_eq!(
        receipts[2]["headers"]["REM-EventIdentifier"],
        "ContentHandover"
    );
    assert_eq!(receipts[0]["headers"]["REM-DigestAlgorithm"], "SHA-256");
    let rfc5322 = receipts[0]["rfc5322"].as_str().unwrap();
    assert!(rfc5322.contains("REM-Evidence-ID: "), "{rfc5322}");
    assert!(rfc5322.contains("evidence.json.asc"), "{rfc5322}");

    // The bundle verifies offline against the published evidence certificate.
    let r = api
        .get(&format!("/api/v1/messages/{sent_id}/bundle"), &anna)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.content_type, "application/x-tar");
    let file = api.gw.setup.path().join("bundle.tar");
    std::fs::write(&file, &r.body).unwrap();
    let cert = api.gw.setup.path().join("keys/evidence.cert.asc");
    let out = run(api.gw.setup.cmd(&[
        "verify",
        file.to_str().unwrap(),
        "--key",
        cert.to_str().unwrap(),
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("ContentHandover"), "{}", stdout(&out));
}

on_both_backends!(
    citizen_writes_to_a_local_office,
    super::citizen_writes_to_a_local_office
);

async fn nobody_reads_what_is_not_theirs(gw: Gateway) {
    let Cast { api, anna_otp } = cast(gw).await;
    api.gw.setup.add_user("citizen", "clara@lemgo.example");
    api.gw.setup.add_user("legal", "justiz@lemgo.example");
    api.gw.setup.add_user("admin", "admin@lemgo.example");
    let anna = api.login("anna@lemgo.example").await;
    let gateway_id = send_letter(
        &api,
        &anna,
        "bauamt@lemgo.example",
        "Widerspruch Az 4711",
        "vertraulich",
    )
    .await;
    let sent = only_copy(&api, &anna, "anna@lemgo.example", "sent").await;
    let sent_id = sent["id"].as_str().unwrap().to_owned();

    // No credential: 401 with a challenge.
    let r = api.call("GET", "/api/v1/mailboxes", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.problem(), "urn:bote:problem:unauthenticated");
    assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");

    // Another citizen: not found, exactly as for a message that does not exist.
    let clara = api.login("clara@lemgo.example").await;
    let theirs = api
        .get(&format!("/api/v1/messages/{sent_id}"), &clara)
        .await;
    let missing = api.get("/api/v1/messages/0000", &clara).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    assert_eq!(theirs.body, missing.body);
    for path in [
        "/api/v1/mailboxes/bauamt@lemgo.example/inbox".to_owned(),
        "/api/v1/mailboxes/anna@lemgo.example/sent".to_owned(),
        format!("/api/v1/messages/{sent_id}/timeline"),
        format!("/api/v1/messages/{sent_id}/bundle"),
    ] {
        let r = api.get(&path, &clara).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text());
    }

    // A send-only token sends for its office but cannot read.
    let send = api.send_token("bauamt@lemgo.example");
    let inbox = api
        .get("/api/v1/mailboxes/bauamt@lemgo.example/inbox", &send)
        .await;
    assert_eq!(inbox.status, StatusCode::FORBIDDEN, "{}", inbox.text());
    assert_eq!(inbox.problem(), "urn:bote:problem:send-only-token");
    // Nor the evidence of what the office received (its sender, attachments, digests):
    // a send-only token sees the sender's side of what its mailbox sent, no more.
    for path in [
        format!("/api/v1/messages/{gateway_id}/timeline"),
        format!("/api/v1/messages/{gateway_id}/receipts"),
        format!("/api/v1/messages/{gateway_id}/bundle"),
    ] {
        let r = api.get(&path, &send).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text());
    }
    let r = api
        .post(
            "/api/v1/messages",
            &send,
            json!({ "to": ["anna@lemgo.example"], "subject": "Bescheid", "text": "persönlich",
                    "personal": true, "retrieval_confirmation": true }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    // Personal: refused at normal, opened at high; the high opening is the handover.
    let notice = only_copy(&api, &anna, "anna@lemgo.example", "inbox").await;
    assert!(
        notice["subject"].is_null(),
        "a personal subject stays hidden below high"
    );
    let notice_id = notice["id"].as_str().unwrap();
    let r = api
        .get(&format!("/api/v1/messages/{notice_id}"), &anna)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.problem(), "urn:bote:problem:personal-needs-high");
    let anna_high = api.login_high("anna@lemgo.example", &anna_otp).await;
    let r = api
        .get(&format!("/api/v1/messages/{notice_id}"), &anna_high)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["handover_recorded"], true);

    // Legal staff: evidence yes, bodies and subjects no.
    let legal = api.login("justiz@lemgo.example").await;
    let r = api
        .get(&format!("/api/v1/messages/{sent_id}"), &legal)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api
        .get(&format!("/api/v1/evidence?message={gateway_id}"), &legal)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        events(&r.json()),
        ["SubmissionAcceptance", "ContentConsignment"]
    );
    assert!(!r.text().contains("Widerspruch"), "{}", r.text());
    let r = api
        .get(
            &format!("/api/v1/evidence/bundle?message={gateway_id}"),
            &legal,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(!String::from_utf8_lossy(&r.body).contains("Widerspruch"));
    let r = api
        .post(
            "/api/v1/messages",
            &legal,
            letter("bauamt@lemgo.example", "x", "y"),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Admins manage accounts, not mail and not evidence.
    let admin = api.login("admin@lemgo.example").await;
    assert_eq!(
        api.get(&format!("/api/v1/messages/{sent_id}"), &admin)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = api.get("/api/v1/evidence", &admin).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.problem(), "urn:bote:problem:forbidden");

    // A read token from Bernd's session reads the office inbox.
    let bernd = api.login("bernd@lemgo.example").await;
    let r = api
        .post(
            "/api/v1/tokens",
            &bernd,
            json!({ "mailbox": "bauamt@lemgo.example" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let read = r.json()["token"].as_str().unwrap().to_owned();
    let listed = only_copy(&api, &read, "bauamt@lemgo.example", "inbox").await;
    assert_eq!(listed["subject"], "Widerspruch Az 4711");
    // Clara is no member: no token for her.
    let r = api
        .post(
            "/api/v1/tokens",
            &clara,
            json!({ "mailbox": "bauamt@lemgo.example" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

on_both_backends!(
    nobody_reads_what_is_not_theirs,
    super::nobody_reads_what_is_not_theirs
);

async fn refusals_are_clear_and_leave_evidence(gw: Gateway) {
    let mut config = gw.config.clone();
    config.limits.message_size_submission = 4096;
    config.limits.max_recipients = 2;
    config.limits.citizen_daily_messages = 2;
    let Cast { api, .. } = cast(gw).await;
    let api = Api::with_config(api.gw, config);
    api.gw.setup.add_user("legal", "justiz@lemgo.example");
    let anna = api.login("anna@lemgo.example").await;

    let refused = |r: &Reply, status: StatusCode, kind: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        assert_eq!(r.problem(), format!("urn:bote:problem:{kind}"));
        r.json()["gateway_id"].as_str().map(str::to_owned)
    };
    let mut rejected = Vec::new();
    let mut authoritative = letter("bauamt@lemgo.example", "a", "b");
    authoritative["authoritative"] = json!(true);
    let r = api.post("/api/v1/messages", &anna, authoritative).await;
    rejected.push(refused(&r, StatusCode::FORBIDDEN, "option-not-allowed"));
    assert!(r.json()["detail"].as_str().unwrap().contains("level high"));
    let mut confirmation = letter("bauamt@lemgo.example", "a", "b");
    confirmation["retrieval_confirmation"] = json!(true);
    let r = api.post("/api/v1/messages", &anna, confirmation).await;
    rejected.push(refused(&r, StatusCode::FORBIDDEN, "option-not-allowed"));
    let r = api
        .post(
            "/api/v1/messages",
            &anna,
            letter("nobody@lemgo.example", "a", "b"),
        )
        .await;
    rejected.push(refused(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown-recipient",
    ));
    let r = api
        .post(
            "/api/v1/messages",
            &anna,
            letter("bauamt@lemgo.example", "gross", &"x".repeat(5000)),
        )
        .await;
    rejected.push(refused(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "message-too-large",
    ));
    let three = json!({ "to": ["a@lemgo.example", "b@lemgo.example", "c@lemgo.example"],
                        "subject": "s", "text": "t" });
    let r = api.post("/api/v1/messages", &anna, three).await;
    rejected.push(refused(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "too-many-recipients",
    ));
    let forged =
        "From: bauamt@lemgo.example\r\nTo: bauamt@lemgo.example\r\nSubject: x\r\n\r\nhi\r\n";
    let r = api
        .post(
            "/api/v1/messages",
            &anna,
            json!({ "to": ["bauamt@lemgo.example"], "rfc5322": B64.encode(forged) }),
        )
        .await;
    rejected.push(refused(&r, StatusCode::FORBIDDEN, "sender-mismatch"));

    // Garbage gets a clear error and no evidence.
    let r = api
        .post(
            "/api/v1/messages",
            &anna,
            json!({ "to": ["bauamt@lemgo.example"], "rfc5322": B64.encode("no headers") }),
        )
        .await;
    assert_eq!(
        refused(&r, StatusCode::BAD_REQUEST, "invalid-message"),
        None
    );
    let r = api
        .post(
            "/api/v1/messages",
            &anna,
            json!({ "to": "bauamt@lemgo.example" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert_eq!(r.problem(), "urn:bote:problem:invalid-body");
    let r = api
        .call(
            "POST",
            "/api/v1/messages",
            Some(&anna),
            Some(json!({ "to": ["bauamt@lemgo.example"], "subject": "x".repeat(40_000) })),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);

    // Quota: two messages a day at level normal. Three at once: exactly one is refused.
    let send = || {
        api.post(
            "/api/v1/messages",
            &anna,
            letter("bauamt@lemgo.example", "a", "b"),
        )
    };
    let (a, b, c) = tokio::join!(send(), send(), send());
    let mut statuses: Vec<StatusCode> = [&a, &b, &c].iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let over = [a, b, c]
        .into_iter()
        .find(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .unwrap();
    rejected.push(refused(
        &over,
        StatusCode::TOO_MANY_REQUESTS,
        "quota-exceeded",
    ));

    // Every refusal left SubmissionRejection evidence; nothing was stored for them.
    let legal = api.login("justiz@lemgo.example").await;
    let reasons: Vec<String> = {
        let mut out = Vec::new();
        for id in rejected {
            let id = id.expect("refusals name the gateway id of their evidence");
            let r = api
                .get(&format!("/api/v1/evidence?message={id}"), &legal)
                .await;
            let records = r.json();
            assert_eq!(events(&records)[0], "SubmissionRejection", "{records}");
            out.push(records[0]["record"]["reason"].as_str().unwrap().to_owned());
        }
        out
    };
    assert_eq!(
        reasons,
        ["RA05", "RA05", "RB09", "RA05", "RA05", "RA05", "RA04"]
    );
    let listed = api
        .get("/api/v1/mailboxes/anna@lemgo.example/sent", &anna)
        .await
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
}

on_both_backends!(
    refusals_are_clear_and_leave_evidence,
    super::refusals_are_clear_and_leave_evidence
);

on_both_backends!(
    a_pending_member_is_granted_when_a_member_confirms_their_key,
    super::confirmed_grant
);

/// An operator cannot give anyone read access alone: a pending member gets the office's
/// key only when an active member confirms it, naming the key they compared with the
/// newcomer, and only once the newcomer made that key themselves (the operator chose
/// their first password and saw their recovery code); a member's login completes
/// nothing, and a key other than the one compared is refused.
async fn confirmed_grant(gw: Gateway) {
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
    let anna = api.login("anna@lemgo.example").await;
    let r = api
        .post(
            "/api/v1/messages",
            &anna,
            letter("bauamt@lemgo.example", "Antrag", "Text"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let inbox = "/api/v1/mailboxes/bauamt@lemgo.example/inbox";
    let carl = api.login("carl@lemgo.example").await;
    assert_eq!(
        api.get(inbox, &carl).await.status,
        StatusCode::NOT_FOUND,
        "pending members cannot open yet"
    );
    // Carl's key is the operator's making: no member is asked to give it the office.
    let mine = api.get("/api/v1/grants", &carl).await.json();
    assert_eq!(mine["own_key_origin"], "operator", "{mine}");
    let bernd_login = || api.session("bernd@lemgo.example", "a long enough password");
    let first = bernd_login().await;
    assert_eq!(first["grants_waiting"], 0, "{first}");
    let bernd = first["token"].as_str().unwrap().to_owned();
    assert_eq!(
        api.get("/api/v1/grants", &bernd).await.json()["pending"],
        json!([])
    );

    // Carl chooses his own password: a new key and recovery code only he knows. A wrong
    // current password changes nothing; the session of the old key ends.
    let change =
        |current: &str| json!({ "password": current, "new_password": "carls own long password" });
    let r = api
        .post("/api/v1/password", &carl, change("not my password!"))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert!(r.problem().ends_with("wrong-password"), "{}", r.text());
    let r = api
        .post("/api/v1/password", &carl, change("a long enough password"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let carl_key = r.json()["own_key"].as_str().unwrap().to_owned();
    assert_eq!(carl_key.len(), 40, "{}", r.text());
    assert_ne!(carl_key, mine["own_key"].as_str().unwrap(), "a new key");
    assert_eq!(
        r.json()["recovery_code"].as_str().unwrap().len(),
        29,
        "{}",
        r.text()
    );
    assert_eq!(
        api.get("/api/v1/grants", &carl).await.status,
        StatusCode::UNAUTHORIZED
    );
    let carl = api
        .login_with("carl@lemgo.example", "carls own long password")
        .await;
    let mine = api.get("/api/v1/grants", &carl).await.json();
    assert_eq!(
        (mine["own_key"].as_str(), mine["own_key_origin"].as_str()),
        (Some(carl_key.as_str()), Some("user"))
    );
    assert!(
        mine["own_key_made_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{mine}"
    );
    assert_eq!(mine["pending"], json!([]));
    let confirm = |fingerprint: &str| {
        json!({ "mailbox": "bauamt@lemgo.example", "user": "carl@lemgo.example",
                "fingerprint": fingerprint })
    };
    // He cannot confirm himself.
    let r = api.post("/api/v1/grants", &carl, confirm(&carl_key)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());

    // Bernd, a member, logs in: told of the request, nothing granted by the login.
    let second = bernd_login().await;
    assert_eq!(second["grants_waiting"], 1, "{second}");
    let bernd = second["token"].as_str().unwrap().to_owned();
    assert_eq!(api.get(inbox, &carl).await.status, StatusCode::NOT_FOUND);
    let theirs = api.get("/api/v1/grants", &bernd).await.json();
    let request = &theirs["pending"][0];
    assert_eq!(request["mailbox"], "bauamt@lemgo.example", "{theirs}");
    assert_eq!(request["user"], "carl@lemgo.example");
    assert_eq!(request["fingerprint"], carl_key.as_str());
    assert_eq!(
        request["requested_by"], "operator",
        "not the operator's host account"
    );

    // A member of another office neither sees the request nor can confirm it.
    api.gw.setup.add_user("staff", "erika@lemgo.example");
    api.cli(
        &[
            "mailbox",
            "add",
            "--office",
            "ordnungsamt@lemgo.example",
            "--name",
            "Ordnungsamt",
            "--member",
            "erika@lemgo.example",
        ],
        "",
    );
    let erika = api.login("erika@lemgo.example").await;
    assert_eq!(
        api.get("/api/v1/grants", &erika).await.json()["pending"],
        json!([])
    );
    let r = api.post("/api/v1/grants", &erika, confirm(&carl_key)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());

    // Carl's key changes after Bernd compared it (he renews it again): the fingerprint
    // Bernd compared is refused, and nothing is granted.
    let r = api
        .post("/api/v1/password", &carl, json!({ "password": "carls own long password", "new_password": "carls newer long password" }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let compared = carl_key;
    let carl_key = r.json()["own_key"].as_str().unwrap().to_owned();
    let r = api.post("/api/v1/grants", &bernd, confirm(&compared)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(r.problem().ends_with("grant-key-changed"), "{}", r.text());
    assert!(
        r.text().contains(&carl_key),
        "names the key now: {}",
        r.text()
    );
    let carl = api
        .login_with("carl@lemgo.example", "carls newer long password")
        .await;
    assert_eq!(api.get(inbox, &carl).await.status, StatusCode::NOT_FOUND);
    // A token holds no member's key: it cannot confirm.
    let token = api.send_token("bauamt@lemgo.example");
    let r = api.post("/api/v1/grants", &token, confirm(&carl_key)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());

    // Confirmed with the key as people read it aloud: Carl reads the office's mail.
    let spaced: String = carl_key
        .to_lowercase()
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    let r = api.post("/api/v1/grants", &bernd, confirm(&spaced)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let listed = only_copy(&api, &carl, "bauamt@lemgo.example", "inbox").await;
    assert_eq!(listed["subject"], "Antrag");
    assert_eq!(
        api.get("/api/v1/grants", &bernd).await.json()["pending"],
        json!([])
    );
    let r = api.post("/api/v1/grants", &bernd, confirm(&carl_key)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "confirmed once");

    // Bernd makes his own key too: the office's mail stays readable for him.
    let r = api
        .post("/api/v1/password", &bernd, json!({ "password": "a long enough password", "new_password": "bernds own long password" }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let bernd = api
        .login_with("bernd@lemgo.example", "bernds own long password")
        .await;
    let listed = only_copy(&api, &bernd, "bauamt@lemgo.example", "inbox").await;
    assert_eq!(listed["subject"], "Antrag");

    // The operator replaces Carl's key: he waits again, and no member is asked until he
    // has made his own once more (the operator chose the new password).
    api.cli(
        &[
            "user",
            "set-password",
            "carl@lemgo.example",
            "--password-stdin",
            "--new-key",
        ],
        "an operators long password\n",
    );
    assert_eq!(
        api.get("/api/v1/grants", &bernd).await.json()["pending"],
        json!([])
    );
}

/// A citizen whose account an operator made chooses their own password: their mail stays
/// readable under the new key, and the secrets the operator knew (first password, printed
/// recovery code) open nothing any more; the new recovery code does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_own_key_leaves_the_operator_nothing_to_open() {
    let Cast { api, .. } = cast(Gateway::new(bote::store::Backend::Sqlite).await).await;
    let printed = api.gw.setup.add_user("citizen", "dora@lemgo.example");
    let office = api.send_token("bauamt@lemgo.example");
    let r = api
        .post(
            "/api/v1/messages",
            &office,
            letter("dora@lemgo.example", "Bescheid", "Text"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let dora_line = || {
        let users = api.cli(&["user", "list"], "");
        let line = users
            .lines()
            .find(|l| l.starts_with("dora@lemgo.example\t"));
        line.unwrap_or_else(|| panic!("{users}")).to_owned()
    };
    assert!(dora_line().contains("\tkey=operator\t"), "{}", dora_line());
    let dora = api.login("dora@lemgo.example").await;
    let change =
        json!({ "password": "a long enough password", "new_password": "doras own long password" });
    let r = api.post("/api/v1/password", &dora, change).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let own_code = r.json()["recovery_code"].as_str().unwrap().to_owned();
    assert!(
        dora_line().contains("\tkey=own\t"),
        "the operator sees who made their key: {}",
        dora_line()
    );
    let login = |password: &str| {
        let body = json!({ "email": "dora@lemgo.example", "password": password });
        api.call("POST", "/api/v1/session", None, Some(body))
    };
    assert_eq!(
        login("a long enough password").await.status,
        StatusCode::UNAUTHORIZED
    );
    let dora = api
        .login_with("dora@lemgo.example", "doras own long password")
        .await;
    let listed = only_copy(&api, &dora, "dora@lemgo.example", "inbox").await;
    let opened = api
        .get(
            &format!("/api/v1/messages/{}", listed["id"].as_str().unwrap()),
            &dora,
        )
        .await;
    assert_eq!(opened.status, StatusCode::OK, "{}", opened.text());
    assert!(opened.text().contains("Bescheid"), "{}", opened.text());
    // The recovery code the operator printed opens nothing; Dora's own does.
    let recover = |code: String| {
        let core = api.core.clone();
        async move {
            core.recover_account("dora@lemgo.example", &code, "recovered long password", None)
                .await
        }
    };
    assert!(
        recover(printed).await.is_err(),
        "the operator's recovery code still opens the key"
    );
    recover(own_code).await.expect("her own recovery code");
    assert_eq!(
        login("recovered long password").await.status,
        StatusCode::CREATED
    );

    // Two key changes at once (say an operator's reset in another process): the one that
    // read the older credentials version writes nothing.
    let id: i64 = sqlx::query_scalar("SELECT id FROM users WHERE email_key = 'dora@lemgo.example'")
        .fetch_one(api.gw.store.pool())
        .await
        .unwrap();
    let mut conn = api.gw.store.pool().acquire().await.unwrap();
    let read = bote::store::accounts::credentials_version(&mut conn, id)
        .await
        .unwrap()
        .unwrap();
    bote::store::accounts::set_password_hash(&mut conn, id, "first", 1, read)
        .await
        .unwrap();
    let stale = bote::store::accounts::set_password_hash(&mut conn, id, "second", 2, read).await;
    assert!(
        matches!(stale, Err(bote::store::StoreError::Conflict(_))),
        "{stale:?}"
    );
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(hash, "first");
}

/// With a second factor, the password alone does not replace the key (and lock its
/// owner out with a recovery code they never saw): a session at level high does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_needs_the_second_factor_where_there_is_one() {
    let Cast { api, anna_otp } = cast(Gateway::new(bote::store::Backend::Sqlite).await).await;
    let change =
        json!({ "password": "a long enough password", "new_password": "annas own long password" });
    let normal = api.login("anna@lemgo.example").await;
    let r = api.post("/api/v1/password", &normal, change.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.problem(), "urn:bote:problem:needs-high");
    let high = api.login_high("anna@lemgo.example", &anna_otp).await;
    let r = api.post("/api/v1/password", &high, change).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route() {
    let doc = serde_json::to_value(bote::web::api::openapi_document()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/session",
        "/api/v1/session/totp",
        "/api/v1/messages",
        "/api/v1/messages/{id}",
        "/api/v1/messages/{id}/bundle",
        "/api/v1/evidence",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    let api = Api::new(Gateway::new(bote::store::Backend::Sqlite).await).await;
    let r = api.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["paths"], doc["paths"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_second_factors_and_lockout() {
    let Cast { api, anna_otp } = cast(Gateway::new(bote::store::Backend::Sqlite).await).await;
    let login = |password: &str| json!({ "email": "anna@lemgo.example", "password": password });
    // A session starts at normal and says a second factor exists.
    let r = api
        .call(
            "POST",
            "/api/v1/session",
            None,
            Some(login("a long enough password")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["auth_level"], "normal");
    assert_eq!(r.json()["second_factor"], true);
    let token = r.json()["token"].as_str().unwrap().to_owned();

    // A wrong code is refused; the right one raises the session; replaying it is refused.
    let r = api
        .post("/api/v1/session/totp", &token, json!({ "code": "000000" }))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.problem(), "urn:bote:problem:bad-code");
    let code = bote::auth::totp_code_now(&anna_otp).unwrap();
    let r = api
        .post("/api/v1/session/totp", &token, json!({ "code": code }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let other = api.login("anna@lemgo.example").await;
    let r = api
        .post("/api/v1/session/totp", &other, json!({ "code": code }))
        .await;
    assert_eq!(
        r.problem(),
        "urn:bote:problem:bad-code",
        "a used code is spent"
    );
    // Replacing the factor needs the high session.
    let r = api.post("/api/v1/totp", &other, json!({})).await;
    assert_eq!(r.problem(), "urn:bote:problem:needs-high");
    let r = api.post("/api/v1/totp", &token, json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert!(
        r.json()["otpauth"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/")
    );

    // A first factor needs the recovery code: a password alone never reaches high.
    let clara_code = api.gw.setup.add_user("citizen", "clara@lemgo.example");
    let clara = api.login("clara@lemgo.example").await;
    let r = api.post("/api/v1/totp", &clara, json!({})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = api
        .post(
            "/api/v1/totp",
            &clara,
            json!({ "recovery_code": anna_otp.clone() }),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = api
        .post(
            "/api/v1/totp",
            &clara,
            json!({ "recovery_code": clara_code }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let clara_otp = r.json()["otpauth"].as_str().unwrap().to_owned();
    let code = bote::auth::totp_code_now(&clara_otp).unwrap();
    let r = api
        .post("/api/v1/session/totp", &clara, json!({ "code": code }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // Logging out ends the session.
    let r = api
        .call("DELETE", "/api/v1/session", Some(&token), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = api.get("/api/v1/mailboxes", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Wrong passwords: the same answer as an unknown user, then attempts slow down.
    let unknown = api
        .call(
            "POST",
            "/api/v1/session",
            None,
            Some(json!({ "email": "nobody@lemgo.example", "password": "whatever it is" })),
        )
        .await;
    assert_eq!(unknown.problem(), "urn:bote:problem:bad-credentials");
    // Five failures (the logins since the wrong one-time code above cleared its count).
    for _ in 0..5 {
        let r = api
            .call(
                "POST",
                "/api/v1/session",
                None,
                Some(login("wrong password!!")),
            )
            .await;
        assert_eq!(r.body, unknown.body);
    }
    let r = api
        .call(
            "POST",
            "/api/v1/session",
            None,
            Some(login("a long enough password")),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.problem(), "urn:bote:problem:locked-out");
    assert_eq!(r.headers["retry-after"], "1");
    // The same user from another address is not held up by those failures…
    let r = api
        .call_from(
            Some([198, 51, 100, 7]),
            "POST",
            "/api/v1/session",
            None,
            Some(login("a long enough password")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    // …and here only for the wait named, not for a quarter of an hour.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = api
        .call(
            "POST",
            "/api/v1/session",
            None,
            Some(login("a long enough password")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    // An operator's password change ends the sessions opened with the old password.
    api.cli(
        &[
            "user",
            "set-password",
            "anna@lemgo.example",
            "--password-stdin",
            "--new-key",
        ],
        "another long password\n",
    );
    let r = api.get("/api/v1/mailboxes", &other).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
