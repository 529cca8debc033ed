//! Nothing grows without bound (spec §2, the evidence-amplification finding): MIME
//! structure is limited, evidence records stay small whatever a message holds, and every
//! list comes in pages.

use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::api::{Api, Cast, Reply, cast, events};
use crate::on_both_backends;
use crate::support::{Gateway, record};

/// A composed letter with `n` one-byte attachments.
fn with_attachments(to: &[&str], n: usize) -> Value {
    let attachments: Vec<Value> = (0..n)
        .map(|i| json!({ "name": format!("seite-{i:05}.pdf"), "data": B64.encode([i as u8]) }))
        .collect();
    json!({ "to": to, "subject": "Akte", "text": "anbei", "attachments": attachments })
}

/// The `rel="next"` target of a reply, if any.
fn next_link(r: &Reply) -> Option<String> {
    let link = r.headers.get("link")?.to_str().ok()?;
    let target = link.strip_prefix('<')?.split_once(">; rel=\"next\"")?.0;
    Some(target.to_owned())
}

async fn many_parts_are_refused_and_records_stay_small(gw: Gateway) {
    let mut config = gw.config.clone();
    config.limits.max_mime_parts = 60;
    let Cast { api, .. } = cast(gw).await;
    let api = Api::with_config(api.gw, config);
    api.gw.setup.add_user("legal", "justiz@lemgo.example");
    let anna = api.login("anna@lemgo.example").await;
    let legal = api.login("justiz@lemgo.example").await;

    // 200 one-byte attachments: over the parts limit. Refused, with a small record.
    let r = api
        .post(
            "/api/v1/messages",
            &anna,
            with_attachments(&["bauamt@lemgo.example"], 200),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert_eq!(r.problem(), "urn:bote:problem:message-too-complex");
    assert!(r.json()["detail"].as_str().unwrap().contains("MIME parts"));
    let refused = r.json()["gateway_id"].as_str().unwrap().to_owned();
    let found = api
        .get(&format!("/api/v1/evidence?message={refused}"), &legal)
        .await;
    assert_eq!(events(&found.json()), ["SubmissionRejection"]);
    let rejection = &found.json()[0]["record"];
    assert_eq!(rejection["reason"], "RA05");
    assert_eq!(rejection["message"]["attachments"], json!([]));
    assert!(rejection.to_string().len() < 2048, "{rejection}");

    // 50 attachments fit the limit: the records list 20 and commit to all 50.
    let r = api
        .post(
            "/api/v1/messages",
            &anna,
            with_attachments(&["bauamt@lemgo.example"], 50),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert!(r.body.len() < 16 * 1024, "{} bytes", r.body.len());
    let record = &r.json()["submission_acceptance"][0]["record"];
    let listed = record["message"]["attachments"].as_array().unwrap();
    assert_eq!(listed.len(), bote::evidence::record::LISTED_ATTACHMENTS);
    assert_eq!(listed[0]["name"], "seite-00000.pdf");
    assert_eq!(record["message"]["all_attachments"]["count"], 50);
    // The digest of the whole list is what anyone holding the message can recompute.
    let all: Vec<bote::evidence::Attachment> = (0..50u8)
        .map(|i| bote::evidence::Attachment {
            name: format!("seite-{i:05}.pdf"),
            size: 1,
            sha256: bote::evidence::Sha256Digest::of(&[i]),
        })
        .collect();
    let expected = bote::evidence::Sha256Digest::of(&serde_jcs::to_vec(&all).unwrap());
    assert_eq!(
        record["message"]["all_attachments"]["sha256"],
        expected.to_string()
    );
    assert!(record.to_string().len() < 4096, "{record}");
}
on_both_backends!(
    many_parts_are_refused_and_records_stay_small,
    super::many_parts_are_refused_and_records_stay_small
);

async fn every_list_comes_in_pages(gw: Gateway) {
    let Cast { api, .. } = cast(gw).await;
    api.gw.setup.add_user("legal", "justiz@lemgo.example");
    let legal = api.login("justiz@lemgo.example").await;
    // 150 records of one message: more than a default page.
    let records = (0..150)
        .map(|i| {
            record(
                bote::evidence::Event::ContentHandoverFailure,
                "many",
                "bauamt@lemgo.example",
                1_700_000_000_000 + i,
            )
        })
        .collect();
    api.gw.commit(records).await;

    let first = api.get("/api/v1/evidence?message=many", &legal).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.json().as_array().unwrap().len(), 100, "default page");
    let next = next_link(&first).expect("a full page links to the next");
    assert!(
        next.starts_with("/api/v1/evidence?message=many&after="),
        "{next}"
    );
    let second = api.get(&next, &legal).await;
    assert_eq!(second.json().as_array().unwrap().len(), 50);
    assert_eq!(next_link(&second), None, "the last page links nowhere");
    let ids = |r: &Reply| -> Vec<String> {
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["record"]["evidence_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut all = ids(&first);
    all.extend(ids(&second));
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 150, "pages neither skip nor repeat");

    let capped = api
        .get("/api/v1/evidence?message=many&limit=5000", &legal)
        .await;
    assert_eq!(capped.json().as_array().unwrap().len(), 150);
    for bad in ["0", "-1"] {
        let r = api
            .get(
                &format!("/api/v1/evidence?message=many&limit={bad}"),
                &legal,
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "limit={bad}");
        assert_eq!(r.problem(), "urn:bote:problem:invalid-limit");
    }

    // Folders page by copy, newest first.
    let anna = api.login("anna@lemgo.example").await;
    for subject in ["eins", "zwei", "drei"] {
        crate::api::send_letter(&api, &anna, "bauamt@lemgo.example", subject, "t").await;
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/mailboxes/anna@lemgo.example/sent?limit=2".to_owned();
    loop {
        let page = api.get(&path, &anna).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        for m in page.json().as_array().unwrap() {
            seen.push(m["subject"].as_str().unwrap().to_owned());
        }
        match next_link(&page) {
            Some(next) => path = next,
            None => break,
        }
    }
    assert_eq!(seen, ["drei", "zwei", "eins"]);
}
on_both_backends!(every_list_comes_in_pages, super::every_list_comes_in_pages);
