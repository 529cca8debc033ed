//! The gateway core that every front door shares: credentials parsed once, client
//! certificate binding, and one rule for every bundle that leaves the gateway.

use axum::http::StatusCode;
use bote::accounts::AuthLevel;
use bote::accounts::credential::Credential;
use bote::auth::{AuthError, ClientCert};
use bote::store::Backend;
use serde_json::Value;
use sha2::Digest;
use sqlx::Row;

use crate::api::{Cast, cast, letter, only_copy, send_letter};
use crate::on_both_backends;
use crate::support::{Gateway, run, stderr, stdout};

/// Stores a send-only credential with a token of our choosing (as a token issued by an
/// earlier bote would be), for the office `mailbox`.
async fn store_token(api: &crate::api::Api, mailbox: &str, token: &str) {
    let mut conn = api.gw.store.pool().acquire().await.unwrap();
    let address = bote::address::EmailAddress::parse(mailbox).unwrap();
    let (mb, _) = bote::store::accounts::find_mailbox(&mut conn, &address)
        .await
        .unwrap()
        .unwrap();
    let hash: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
    bote::store::accounts::insert_credential(
        &mut conn,
        &bote::store::accounts::NewCredential {
            mailbox_id: mb.id,
            scope: "send",
            token_hash: hash,
            client_cert_sha256: None,
            created_by: "operator:test",
            creator_user_id: None,
            now: 1,
        },
    )
    .await
    .unwrap();
}

async fn older_tokens_work_whatever_their_random_part(gw: Gateway) {
    let Cast { api, .. } = cast(gw).await;
    // Tokens of the earlier format were `bote_` + 43 characters; about one in 4,096 began
    // `bote_s_` like a session and could never authenticate.
    let unlucky = format!("bote_s_{}", "Q".repeat(41));
    let ordinary = format!("bote_{}", "x".repeat(43));
    for token in [&unlucky, &ordinary] {
        store_token(&api, "bauamt@lemgo.example", token).await;
        let r = api
            .post(
                "/api/v1/messages",
                token,
                letter("anna@lemgo.example", "Bescheid", "Text"),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{token}: {}", r.text());
    }
    // Today's tokens, and garbage of every near shape.
    let current = api.send_token("bauamt@lemgo.example");
    assert!(current.starts_with("bote_token_"), "{current}");
    let r = api
        .post(
            "/api/v1/messages",
            &current,
            letter("anna@lemgo.example", "Bescheid", "Text"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    for bad in [
        &current[..current.len() - 1],
        &format!("{current}x"),
        &format!("bote_s_{}", "Q".repeat(43)),
    ] {
        let r = api
            .post(
                "/api/v1/messages",
                bad,
                letter("anna@lemgo.example", "x", "y"),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(r.problem(), "urn:bote:problem:unauthenticated");
    }
}
on_both_backends!(
    older_tokens_work_whatever_their_random_part,
    super::older_tokens_work_whatever_their_random_part
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_bound_to_a_client_certificate_opens_only_with_it_at_level_high() {
    let Cast { api, .. } = cast(Gateway::new(Backend::Sqlite).await).await;
    let peer = api.gw.setup.path().join("certs/peer.crt");
    let token = api.cli(
        &[
            "token",
            "create",
            "--mailbox",
            "bauamt@lemgo.example",
            "--client-cert",
            peer.to_str().unwrap(),
        ],
        "",
    );
    let credential = Credential::parse(token.trim()).unwrap();
    let der = bote::tls::load_certs("peer", &peer).unwrap().remove(0);
    let digest = ClientCert(sha2::Sha256::digest(der.as_ref()).into());
    let auth = api.core.auth();

    let caller = auth.resolve(&credential, Some(digest)).await.unwrap();
    assert_eq!(caller.access.level(), AuthLevel::High);
    for presented in [None, Some(ClientCert([7; 32]))] {
        assert!(matches!(
            auth.resolve(&credential, presented).await,
            Err(AuthError::Unauthenticated)
        ));
    }
    // The HTTPS listener asks for no client certificate: the bound token does not open.
    let r = api.get("/api/v1/mailboxes", token.trim()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // An unbound token stays at level normal even over a connection with a certificate.
    let plain = Credential::parse(&api.send_token("bauamt@lemgo.example")).unwrap();
    let caller = auth.resolve(&plain, Some(digest)).await.unwrap();
    assert_eq!(caller.access.level(), AuthLevel::Normal);
}

/// The `proof.export` audit entries for `message`: (actor, bundle SHA-256).
async fn exports(api: &crate::api::Api, message: &str) -> Vec<(String, String)> {
    let rows = sqlx::query(
        "SELECT actor, details FROM audit_log WHERE action = 'proof.export' AND target = $1 \
         ORDER BY id",
    )
    .bind(message)
    .fetch_all(api.gw.store.pool())
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            let details: String = r.get("details");
            let details: Value = serde_json::from_str(&details).unwrap();
            (
                r.get::<String, _>("actor"),
                details["bundle_sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `bote verify --key` on `bytes`; returns the evidence ids it lists.
fn verify_events(api: &crate::api::Api, bytes: &[u8], name: &str) -> Vec<String> {
    let file = api.gw.setup.path().join(name);
    std::fs::write(&file, bytes).unwrap();
    let cert = api.gw.setup.path().join("keys/evidence.cert.asc");
    let out = run(api.gw.setup.cmd(&[
        "verify",
        file.to_str().unwrap(),
        "--key",
        cert.to_str().unwrap(),
    ]));
    assert!(out.status.success(), "{name}: {}", stderr(&out));
    stdout(&out)
        .lines()
        .filter(|l| l.starts_with("event: "))
        .map(|l| l.split(' ').nth(2).unwrap().to_owned())
        .collect()
}

async fn every_bundle_path_verifies_and_audits_alike(gw: Gateway) {
    let Cast { api, .. } = cast(gw).await;
    api.gw.setup.add_user("legal", "justiz@lemgo.example");
    let anna = api.login("anna@lemgo.example").await;
    let gateway_id = send_letter(&api, &anna, "bauamt@lemgo.example", "Antrag", "Text").await;
    let sent = only_copy(&api, &anna, "anna@lemgo.example", "sent").await;
    let sent_id = sent["id"].as_str().unwrap();

    // 1. The sender, through the API.
    let r = api
        .get(&format!("/api/v1/messages/{sent_id}/bundle"), &anna)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let by_sender = r.body;
    // 2. Legal staff, through the API.
    let legal = api.login("justiz@lemgo.example").await;
    let r = api
        .get(
            &format!("/api/v1/evidence/bundle?message={gateway_id}"),
            &legal,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let by_legal = r.body;
    // 3. The operator, through the CLI.
    let file = api.gw.setup.path().join("cli.tar");
    let out = api.cli(
        &["proof", "export", &gateway_id, "-o", file.to_str().unwrap()],
        "",
    );
    let by_operator = std::fs::read(&file).unwrap();
    assert!(out.contains(&format!("sha256: {}", sha256_hex(&by_operator))));

    // Each verifies, and each holds the same chain.
    let chain = verify_events(&api, &by_sender, "sender.tar");
    assert_eq!(chain, ["SubmissionAcceptance", "ContentConsignment"]);
    assert_eq!(verify_events(&api, &by_legal, "legal.tar"), chain);
    assert_eq!(verify_events(&api, &by_operator, "operator.tar"), chain);

    // Each is in the audit trail, with who took it and exactly what they took.
    let audited = exports(&api, &gateway_id).await;
    let actors: Vec<&str> = audited.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actors.len(), 3, "{audited:?}");
    assert_eq!(actors[0], "user:anna@lemgo.example");
    assert_eq!(actors[1], "user:justiz@lemgo.example");
    assert!(actors[2].starts_with("operator:"), "{audited:?}");
    let digests: Vec<&str> = audited.iter().map(|(_, d)| d.as_str()).collect();
    assert_eq!(
        digests,
        [
            sha256_hex(&by_sender),
            sha256_hex(&by_legal),
            sha256_hex(&by_operator)
        ]
    );
}
on_both_backends!(
    every_bundle_path_verifies_and_audits_alike,
    super::every_bundle_path_verifies_and_audits_alike
);
