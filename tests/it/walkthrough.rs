//! The API as a new office or citizen meets it (the walk-through issue): one id for a
//! message, office software reading its own evidence, the sent folder's delivery states,
//! problem+json for every malformed request, and an OpenAPI document that real bodies
//! validate against.

use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::api::{Api, Cast, Reply, cast, events, letter, only_copy, send_letter};
use crate::on_both_backends;
use crate::support::{Gateway, run, stderr, stdout};

async fn one_id_for_a_message(gw: Gateway) {
    let Cast { api, .. } = cast(gw).await;
    let anna = api.login("anna@lemgo.example").await;
    let gid = send_letter(&api, &anna, "bauamt@lemgo.example", "Antrag", "Text").await;

    // The sender, by the gateway id: her sent copy, the whole timeline, receipts, bundle.
    let opened = api.get(&format!("/api/v1/messages/{gid}"), &anna).await;
    assert_eq!(opened.status, StatusCode::OK, "{}", opened.text());
    assert_eq!(opened.json()["folder"], "sent");
    let timeline = api
        .get(&format!("/api/v1/messages/{gid}/timeline"), &anna)
        .await
        .json();
    assert_eq!(
        events(&timeline),
        ["SubmissionAcceptance", "ContentConsignment"]
    );
    let receipts = api
        .get(&format!("/api/v1/messages/{gid}/receipts"), &anna)
        .await;
    assert_eq!(receipts.status, StatusCode::OK, "{}", receipts.text());
    assert_eq!(
        receipts.json()[0]["subject"],
        "REM SubmissionAcceptance: Antrag"
    );
    let bundle = api
        .get(&format!("/api/v1/messages/{gid}/bundle"), &anna)
        .await;
    assert_eq!(bundle.status, StatusCode::OK, "{}", bundle.text());

    // The recipient, by the same id: the received copy (reading it is the handover).
    let bernd = api.login("bernd@lemgo.example").await;
    let opened = api.get(&format!("/api/v1/messages/{gid}"), &bernd).await;
    assert_eq!(opened.status, StatusCode::OK, "{}", opened.text());
    assert_eq!(opened.json()["folder"], "inbox");
    assert_eq!(opened.json()["handover_recorded"], true);
    assert_eq!(opened.json()["has_html"], false, "a plain-text letter");
    // Somebody else: as if there were no such message.
    api.gw.setup.add_user("citizen", "clara@lemgo.example");
    let clara = api.login("clara@lemgo.example").await;
    for path in ["", "/timeline", "/receipts", "/bundle"] {
        let r = api
            .get(&format!("/api/v1/messages/{gid}{path}"), &clara)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }

    // The sent folder names the recipients and how far each got.
    let sent = only_copy(&api, &anna, "anna@lemgo.example", "sent").await;
    assert_eq!(
        sent["recipients"],
        json!([{ "address": "bauamt@lemgo.example", "status": "picked-up" }])
    );

    // The CLI exports by copy id too.
    let copy_id = sent["id"].as_str().unwrap();
    let file = api.gw.setup.path().join("by-copy.tar");
    let out = api.cli(
        &["proof", "export", copy_id, "-o", file.to_str().unwrap()],
        "",
    );
    assert!(out.starts_with("bundle: "), "{out}");
}
on_both_backends!(one_id_for_a_message, super::one_id_for_a_message);

async fn office_software_reads_its_own_evidence_never_bodies(gw: Gateway) {
    let Cast { api, .. } = cast(gw).await;
    let token = api.send_token("bauamt@lemgo.example");
    let r = api
        .post(
            "/api/v1/messages",
            &token,
            letter("anna@lemgo.example", "Bescheid", "Text"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let gid = r.json()["gateway_id"].as_str().unwrap().to_owned();
    let message_id = r.json()["message_id"].as_str().unwrap().to_owned();

    let timeline = api
        .get(&format!("/api/v1/messages/{gid}/timeline"), &token)
        .await;
    assert_eq!(timeline.status, StatusCode::OK, "{}", timeline.text());
    assert_eq!(
        events(&timeline.json()),
        ["SubmissionAcceptance", "ContentConsignment"]
    );
    let receipts = api
        .get(&format!("/api/v1/messages/{gid}/receipts"), &token)
        .await;
    assert_eq!(receipts.status, StatusCode::OK, "{}", receipts.text());
    assert_eq!(
        receipts.json()[0]["subject"],
        format!("REM SubmissionAcceptance: {message_id}"),
        "no subject without a key to read it"
    );
    let bundle = api
        .get(&format!("/api/v1/messages/{gid}/bundle"), &token)
        .await;
    assert_eq!(bundle.status, StatusCode::OK, "{}", bundle.text());
    let body = api.get(&format!("/api/v1/messages/{gid}"), &token).await;
    assert_eq!(body.status, StatusCode::FORBIDDEN);
    assert_eq!(body.problem(), "urn:bote:problem:send-only-token");

    // Another office's token sees nothing of it.
    api.office("ordnungsamt@lemgo.example", "bernd@lemgo.example");
    let other = api.send_token("ordnungsamt@lemgo.example");
    let r = api
        .get(&format!("/api/v1/messages/{gid}/timeline"), &other)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
on_both_backends!(
    office_software_reads_its_own_evidence_never_bodies,
    super::office_software_reads_its_own_evidence_never_bodies
);

/// Asserts a problem+json answer of a client error other than "internal".
fn assert_problem(r: &Reply, what: &str) -> String {
    assert!(
        r.status.is_client_error(),
        "{what}: {} {}",
        r.status,
        r.text()
    );
    let kind = r.problem();
    assert_ne!(kind, "urn:bote:problem:internal", "{what}");
    kind
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_malformed_requests_with_problems() {
    let Cast { api, .. } = cast(Gateway::new(bote::store::Backend::Sqlite).await).await;
    let session = api.login("anna@lemgo.example").await;
    let doc = serde_json::to_value(bote::web::api::openapi_document()).unwrap();
    let mut walked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            if method == "DELETE" && path == "/api/v1/session" {
                continue; // logging out would end the walk
            }
            // Malformed path parameters (a number that is not one, an id of nothing).
            let bad_path = path
                .replace("{n}", "not-a-number")
                .replace("{id}", "%ZZ")
                .replace("{address}", "not-an-address");
            let r = api.call(&method, &bad_path, Some(&session), None).await;
            if bad_path != *path {
                assert_problem(&r, &format!("{method} {bad_path}"));
            }
            let path = path
                .replace("{n}", "0")
                .replace("{id}", "00000000000000000000000000000000")
                .replace("{address}", "anna@lemgo.example");
            // A query with a malformed and an unknown parameter.
            let r = api
                .call(
                    &method,
                    &format!("{path}?limit=lots&after=-1&bogus=1"),
                    Some(&session),
                    None,
                )
                .await;
            if r.status != StatusCode::OK {
                assert_problem(&r, &format!("{method} {path} with a bad query"));
            }
            if method == "POST" || method == "PUT" {
                for (ctype, body) in [("application/json", "{not json"), ("text/plain", "x")] {
                    let r = api.raw(&method, &path, Some(&session), ctype, body).await;
                    let kind = assert_problem(&r, &format!("{method} {path} {ctype}"));
                    let expected = if ctype == "text/plain" {
                        "urn:bote:problem:unsupported-media-type"
                    } else {
                        "urn:bote:problem:invalid-json"
                    };
                    assert_eq!(kind, expected, "{method} {path}");
                }
                let r = api
                    .call(&method, &path, Some(&session), Some(json!({ "x": [1] })))
                    .await;
                assert_problem(
                    &r,
                    &format!("{method} {path} with a body of the wrong shape"),
                );
            }
            walked += 1;
        }
    }
    assert!(walked >= 18, "{walked} operations");
    // A method a path does not take, and a path that does not exist.
    let r = api
        .call("PATCH", "/api/v1/messages", Some(&session), None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.problem(), "urn:bote:problem:method-not-allowed");
    assert_eq!(
        assert_problem(&api.get("/api/v1/nothing", &session).await, "unknown path"),
        "urn:bote:problem:not-found"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_what_the_api_really_says() {
    let Cast { api, .. } = cast(Gateway::new(bote::store::Backend::Sqlite).await).await;
    api.gw.setup.add_user("legal", "justiz@lemgo.example");
    let anna = api.login("anna@lemgo.example").await;
    let mut checks = Vec::new();
    let mut check = |kind: &str, method: &str, path: &str, status: u16, body: Value| {
        checks.push(
            json!({ "kind": kind, "method": method, "path": path, "status": status,
                            "content_type": "application/json", "body": body }),
        );
    };
    let composed = letter("bauamt@lemgo.example", "Antrag", "Text");
    check("request", "post", "/api/v1/messages", 0, composed.clone());
    let r = api.post("/api/v1/messages", &anna, composed).await;
    check("response", "post", "/api/v1/messages", 201, r.json());
    let gid = r.json()["gateway_id"].as_str().unwrap().to_owned();
    let raw = json!({ "to": ["bauamt@lemgo.example"], "authoritative": false,
        "rfc5322": B64.encode("From: anna@lemgo.example\r\nSubject: x\r\n\r\nhi\r\n") });
    check("request", "post", "/api/v1/messages", 0, raw.clone());
    let refused = api
        .post(
            "/api/v1/messages",
            &anna,
            json!({ "to": ["x@lemgo.example"],
        "subject": "s", "text": "t" }),
        )
        .await;
    check("response", "post", "/api/v1/messages", 422, refused.json());
    let session = json!({ "email": "anna@lemgo.example", "password": "a long enough password" });
    check("request", "post", "/api/v1/session", 0, session.clone());
    let r = api
        .call("POST", "/api/v1/session", None, Some(session))
        .await;
    check("response", "post", "/api/v1/session", 201, r.json());
    for (path, body) in [
        (
            "/api/v1/mailboxes",
            api.get("/api/v1/mailboxes", &anna).await.json(),
        ),
        (
            "/api/v1/mailboxes/{address}/{folder}",
            api.get("/api/v1/mailboxes/anna@lemgo.example/sent", &anna)
                .await
                .json(),
        ),
        (
            "/api/v1/messages/{id}",
            api.get(&format!("/api/v1/messages/{gid}"), &anna)
                .await
                .json(),
        ),
        (
            "/api/v1/messages/{id}/timeline",
            api.get(&format!("/api/v1/messages/{gid}/timeline"), &anna)
                .await
                .json(),
        ),
        (
            "/api/v1/messages/{id}/receipts",
            api.get(&format!("/api/v1/messages/{gid}/receipts"), &anna)
                .await
                .json(),
        ),
        (
            "/api/v1/directory",
            api.get("/api/v1/directory?address=bauamt@lemgo.example", &anna)
                .await
                .json(),
        ),
    ] {
        check("response", "get", path, 200, body);
    }
    let legal = api.login("justiz@lemgo.example").await;
    let found = api
        .get(&format!("/api/v1/evidence?message={gid}"), &legal)
        .await;
    check("response", "get", "/api/v1/evidence", 200, found.json());

    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("openapi.json");
    let served = api.call("GET", "/api/v1/openapi.json", None, None).await;
    std::fs::write(&doc, &served.body).unwrap();
    let checks_file = dir.path().join("checks.json");
    std::fs::write(&checks_file, serde_json::to_vec(&checks).unwrap()).unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/openapi_check.py");
    let out = run({
        let mut c = std::process::Command::new("python3");
        c.arg(script).arg(&doc).arg(&checks_file);
        c
    });
    assert!(
        out.status.success(),
        "the document and the API disagree:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
}

async fn small_things_a_walk_through_found(api: &Api, anna: &str) {
    // Times in any RFC 3339 form, or a date.
    api.gw.setup.add_user("legal", "justiz@lemgo.example");
    let legal = api.login("justiz@lemgo.example").await;
    for from in [
        "2026-01-01T00:00:00Z",
        "2026-01-01",
        "2026-01-01T01:00:00%2B01:00",
    ] {
        let r = api
            .get(&format!("/api/v1/evidence?from={from}"), &legal)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{from}: {}", r.text());
    }
    let r = api.get("/api/v1/evidence?from=yesterday", &legal).await;
    assert_eq!(r.problem(), "urn:bote:problem:bad-request");
    assert!(
        !r.text().contains("--"),
        "no CLI flag in an API error: {}",
        r.text()
    );

    // An attachment keeps its name, non-ASCII included (RFC 6266 / 8187).
    let body = json!({ "to": ["bauamt@lemgo.example"], "subject": "s", "text": "t",
        "attachments": [{ "name": "Größe & Maß.pdf", "data": B64.encode(b"%PDF") }] });
    let r = api.post("/api/v1/messages", anna, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let gid = r.json()["gateway_id"].as_str().unwrap().to_owned();
    let r = api
        .get(&format!("/api/v1/messages/{gid}/attachments/0"), anna)
        .await;
    let disposition = r.headers["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        disposition,
        "attachment; filename=\"Gr__e _ Ma_.pdf\"; filename*=UTF-8''Gr%C3%B6%C3%9Fe%20&%20Ma%C3%9F.pdf"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_names_and_quota_answers() {
    let gw = Gateway::new(bote::store::Backend::Sqlite).await;
    let mut config = gw.config.clone();
    config.limits.citizen_daily_messages = 2;
    let Cast { api, .. } = cast(gw).await;
    let api = Api::with_config(api.gw, config);
    let anna = api.login("anna@lemgo.example").await;
    small_things_a_walk_through_found(&api, &anna).await;
    // Quota: the 429 says when to come back (when the oldest message leaves the window).
    send_letter(&api, &anna, "bauamt@lemgo.example", "zwei", "t").await;
    let r = api
        .post(
            "/api/v1/messages",
            &anna,
            letter("bauamt@lemgo.example", "drei", "t"),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((86_000..=86_400).contains(&retry), "{retry}");
}
