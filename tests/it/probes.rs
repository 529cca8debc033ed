//! Regression tests for the findings of the HTTPS probe (security issue): foreign
//! Message-IDs, tokens that outlive their creator, undecryptable end-to-end mail,
//! enumeration and lockout.

use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;

use crate::api::{Cast, Reply, cast, events};
use crate::on_both_backends;
use crate::support::Gateway;

/// An RFC 5322 submission from `from` to `to` with Message-ID `id`.
fn raw(from: &str, to: &str, id: &str) -> serde_json::Value {
    let text = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: Bescheid\r\nMessage-ID: {id}\r\n\r\nText\r\n"
    );
    json!({ "to": [to], "rfc5322": B64.encode(text) })
}

fn status_and_problem(r: &Reply) -> (StatusCode, String) {
    let problem = if r.status.is_success() {
        String::new()
    } else {
        r.problem()
    };
    (r.status, problem)
}

async fn message_ids_belong_to_one_sender(gw: Gateway) {
    let Cast { api, .. } = cast(gw).await;
    api.gw.setup.add_user("legal", "justiz@lemgo.example");
    let legal = api.login("justiz@lemgo.example").await;
    let anna = api.login("anna@lemgo.example").await;
    let office = api.send_token("bauamt@lemgo.example");

    // The office's software sends with its own Message-ID.
    let id = "<akte-4711@fachverfahren.example>";
    let r = api
        .post(
            "/api/v1/messages",
            &office,
            raw("bauamt@lemgo.example", "anna@lemgo.example", id),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let first = r.json()["gateway_id"].as_str().unwrap().to_owned();

    // The same sender again (a retry after a lost reply): refused, naming the first.
    let again = api
        .post(
            "/api/v1/messages",
            &office,
            raw("bauamt@lemgo.example", "anna@lemgo.example", id),
        )
        .await;
    assert_eq!(
        status_and_problem(&again),
        (
            StatusCode::CONFLICT,
            "urn:bote:problem:duplicate-message-id".to_owned()
        )
    );
    assert!(again.text().contains(&first), "{}", again.text());

    // Several at once with a fresh id: exactly one is accepted.
    let fresh = "<akte-4712@fachverfahren.example>";
    let send = || {
        api.post(
            "/api/v1/messages",
            &office,
            raw("bauamt@lemgo.example", "anna@lemgo.example", fresh),
        )
    };
    let (a, b, c) = tokio::join!(send(), send(), send());
    let mut statuses: Vec<StatusCode> = [&a, &b, &c].iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::CREATED, StatusCode::CONFLICT, StatusCode::CONFLICT]
    );

    // A Message-ID in the gateway's own domain that the gateway did not assign: refused.
    let gateway_like = format!("<{first}@lemgo.example>");
    let r = api
        .post(
            "/api/v1/messages",
            &anna,
            raw("anna@lemgo.example", "bauamt@lemgo.example", &gateway_like),
        )
        .await;
    assert_eq!(
        status_and_problem(&r),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "urn:bote:problem:message-id-reserved".to_owned()
        )
    );
    let rejected = r.json()["gateway_id"].as_str().unwrap().to_owned();
    let record = api
        .get(&format!("/api/v1/evidence?message={rejected}"), &legal)
        .await
        .json();
    assert_eq!(events(&record), ["SubmissionRejection"]);
    assert!(
        record[0]["record"]["message"].get("message_id").is_none(),
        "the refused Message-ID is not repeated in evidence: {record}"
    );

    // Evidence found by a Message-ID is one sender's one message.
    for id in [id, fresh] {
        let found = api
            .get(
                &format!("/api/v1/evidence?message={}", urlencode(id)),
                &legal,
            )
            .await
            .json();
        assert_eq!(
            events(&found),
            ["SubmissionAcceptance", "ContentConsignment"],
            "{found}"
        );
    }
}
on_both_backends!(
    message_ids_belong_to_one_sender,
    super::message_ids_belong_to_one_sender
);

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
