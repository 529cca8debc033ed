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

/// Sends [`raw`] with `credential`; the accepted message's gateway id.
async fn sent_raw(
    api: &crate::api::Api,
    credential: &str,
    from: &str,
    to: &str,
    id: &str,
) -> String {
    let r = api
        .post("/api/v1/messages", credential, raw(from, to, id))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    r.json()["gateway_id"].as_str().unwrap().to_owned()
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
    let first = sent_raw(
        &api,
        &office,
        "bauamt@lemgo.example",
        "anna@lemgo.example",
        id,
    )
    .await;

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
        [
            StatusCode::CREATED,
            StatusCode::CONFLICT,
            StatusCode::CONFLICT
        ]
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

/// A Message-ID is unique per sender only: a legal user scoped to the Bauamt who asks for
/// a bundle by the Message-ID its software gave gets that message's chain, not the chain
/// of another sender's message to the same recipient under the same Message-ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_bundle_by_message_id_is_one_message() {
    let Cast { api, .. } = cast(Gateway::new(bote::store::Backend::Sqlite).await).await;
    api.cli(
        &[
            "user",
            "add",
            "--role",
            "legal",
            "--name",
            "Bau-Recht",
            "--email",
            "bau-recht@lemgo.example",
            "--password-stdin",
            "--scope",
            "bauamt@lemgo.example",
        ],
        "a long enough password\n",
    );
    let office = api.send_token("bauamt@lemgo.example");
    let anna = api.login("anna@lemgo.example").await;
    let id = "<akte-9@fachverfahren.example>";
    let theirs = sent_raw(
        &api,
        &office,
        "bauamt@lemgo.example",
        "anna@lemgo.example",
        id,
    )
    .await;
    let hers = sent_raw(&api, &anna, "anna@lemgo.example", "anna@lemgo.example", id).await;
    let legal = api.login("bau-recht@lemgo.example").await;
    let r = api
        .get(
            &format!("/api/v1/evidence/bundle?message={}", urlencode(id)),
            &legal,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let bundle = String::from_utf8_lossy(&r.body).into_owned();
    assert!(
        bundle.contains(&theirs),
        "the Bauamt's message is in its bundle"
    );
    assert!(
        !bundle.contains(&hers),
        "another sender's message is in the bundle"
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether `token` can still list the office inbox.
async fn reads(api: &crate::api::Api, token: &str) -> StatusCode {
    api.get("/api/v1/mailboxes/amt@lemgo.example/inbox", token)
        .await
        .status
}

async fn read_token(api: &crate::api::Api, session: &str) -> (String, i64) {
    let r = api
        .post(
            "/api/v1/tokens",
            session,
            json!({ "mailbox": "amt@lemgo.example" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let listed = api.get("/api/v1/tokens", session).await.json();
    let id = listed.as_array().unwrap().last().unwrap()["id"]
        .as_i64()
        .unwrap();
    (token, id)
}

async fn read_tokens_die_with_their_creators_access(gw: Gateway) {
    let Cast { api, .. } = cast(gw).await;
    let carl_code = api.gw.setup.add_user("staff", "carl@lemgo.example");
    let office_code = api.office("amt@lemgo.example", "carl@lemgo.example");
    let carl = api.login("carl@lemgo.example").await;

    // A password change revokes the read tokens Carl made.
    let (t1, t1_id) = read_token(&api, &carl).await;
    assert_eq!(reads(&api, &t1).await, StatusCode::OK);
    api.cli(
        &[
            "user",
            "set-password",
            "carl@lemgo.example",
            "--password-stdin",
            "--recovery-code-stdin",
        ],
        &format!("a long enough password\n{carl_code}\n"),
    );
    assert_eq!(reads(&api, &t1).await, StatusCode::UNAUTHORIZED);

    // Carl lists and revokes his own tokens; nobody else's.
    let carl = api.login("carl@lemgo.example").await;
    let (t2, t2_id) = read_token(&api, &carl).await;
    let listed = api.get("/api/v1/tokens", &carl).await.json();
    let states: Vec<(i64, bool)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_i64().unwrap(), t["revoked_at"].is_string()))
        .collect();
    assert_eq!(states, [(t1_id, true), (t2_id, false)]);
    let bernd = api.login("bernd@lemgo.example").await;
    let r = api
        .call(
            "DELETE",
            &format!("/api/v1/tokens/{t2_id}"),
            Some(&bernd),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "not Bernd's token");
    assert_eq!(reads(&api, &t2).await, StatusCode::OK);
    // A token opens only while its creator is an active member, checked as it is used:
    // a token created by a request that raced a removal (so the removal's revocation did
    // not see it) still ends with the membership. Simulated by the membership alone.
    let carl_membership = |state: &'static str| {
        sqlx::query(
            "UPDATE memberships SET state = $1 WHERE user_id = \
             (SELECT id FROM users WHERE email = 'carl@lemgo.example')",
        )
        .bind(state)
        .execute(api.gw.store.pool())
    };
    carl_membership("pending").await.unwrap();
    assert_eq!(reads(&api, &t2).await, StatusCode::UNAUTHORIZED);
    carl_membership("active").await.unwrap();
    assert_eq!(reads(&api, &t2).await, StatusCode::OK);
    let r = api
        .call(
            "DELETE",
            &format!("/api/v1/tokens/{t2_id}"),
            Some(&carl),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(reads(&api, &t2).await, StatusCode::UNAUTHORIZED);

    // Removing Carl from the office revokes his tokens and drops his key wrap.
    let (t3, _) = read_token(&api, &carl).await;
    let out = api.cli(
        &[
            "mailbox",
            "remove-member",
            "--mailbox",
            "amt@lemgo.example",
            "--user",
            "carl@lemgo.example",
        ],
        "",
    );
    assert_eq!(
        out.trim(),
        "removed: carl@lemgo.example from amt@lemgo.example"
    );
    assert_eq!(reads(&api, &t3).await, StatusCode::UNAUTHORIZED);
    assert_eq!(reads(&api, &carl).await, StatusCode::NOT_FOUND);
    let wraps: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM key_wraps w JOIN users u ON u.id = w.holder_id \
         WHERE w.holder_kind = 'user' AND u.email = 'carl@lemgo.example'",
    )
    .fetch_one(api.gw.store.pool())
    .await
    .unwrap();
    assert_eq!(
        wraps, 0,
        "a removed member keeps no wrap of the mailbox key"
    );
    let token_wraps: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM key_wraps WHERE holder_kind = 'token'")
            .fetch_one(api.gw.store.pool())
            .await
            .unwrap();
    assert_eq!(token_wraps, 0, "revoked tokens keep no wrap");

    // Back in, a new token; disabling Carl revokes it.
    api.cli(
        &[
            "mailbox",
            "add-member",
            "--mailbox",
            "amt@lemgo.example",
            "--user",
            "carl@lemgo.example",
            "--recovery-code-stdin",
        ],
        &format!("{office_code}\n"),
    );
    let carl = api.login("carl@lemgo.example").await;
    let (t4, _) = read_token(&api, &carl).await;
    assert_eq!(reads(&api, &t4).await, StatusCode::OK);
    api.cli(&["user", "disable", "carl@lemgo.example"], "");
    assert_eq!(reads(&api, &t4).await, StatusCode::UNAUTHORIZED);

    // Operators list and revoke tokens, send-only ones included.
    let send = api.send_token("amt@lemgo.example");
    let listed = api.cli(&["token", "list", "--mailbox", "amt@lemgo.example"], "");
    let live: Vec<&str> = listed
        .lines()
        .filter(|l| l.ends_with("state=live"))
        .collect();
    assert_eq!(live.len(), 1, "{listed}");
    assert!(live[0].contains("scope=send"), "{listed}");
    let id = live[0]
        .strip_prefix("token: ")
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let letter = crate::api::letter("anna@lemgo.example", "x", "y");
    assert_eq!(
        api.post("/api/v1/messages", &send, letter.clone())
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        api.cli(&["token", "revoke", id], "").trim(),
        format!("revoked: {id}")
    );
    assert_eq!(
        api.post("/api/v1/messages", &send, letter).await.status,
        StatusCode::UNAUTHORIZED
    );
}
on_both_backends!(
    read_tokens_die_with_their_creators_access,
    super::read_tokens_die_with_their_creators_access
);

/// Guesses sent at once are counted like guesses sent one after the other: five are free,
/// the rest wait, however many arrive before the first refusal is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_do_not_outrun_the_throttle() {
    let Cast { api, .. } = cast(Gateway::new(bote::store::Backend::Sqlite).await).await;
    let guess = json!({ "email": "anna@lemgo.example", "password": "wrong password!!" });
    let guesses = (0..20).map(|_| api.call("POST", "/api/v1/session", None, Some(guess.clone())));
    let statuses: Vec<StatusCode> = futures_util::future::join_all(guesses)
        .await
        .iter()
        .map(|r| r.status)
        .collect();
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((checked, throttled), (5, 15), "{statuses:?}");
}

/// The login answers anyone: it reads no large body and hashes no long password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_reads_no_megabytes() {
    let Cast { api, .. } = cast(Gateway::new(bote::store::Backend::Sqlite).await).await;
    let login = |password: String| json!({ "email": "anna@lemgo.example", "password": password });
    let r = api
        .call(
            "POST",
            "/api/v1/session",
            None,
            Some(login("x".repeat(64 * 1024))),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    let r = api
        .call(
            "POST",
            "/api/v1/session",
            None,
            Some(login("y".repeat(2000))),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    let r = api
        .call(
            "POST",
            "/api/v1/session",
            None,
            Some(login("a long enough password".into())),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

/// A session is valid under the password it was opened with only: a password change
/// raises the user's credentials version, and a session of an older version is refused,
/// also one whose login was still under way when the change deleted the user's sessions
/// (simulated: the version raised, the session row left in place).
async fn sessions_end_with_the_password_they_were_opened_under(gw: Gateway) {
    let Cast { api, .. } = cast(gw).await;
    let anna = api.login("anna@lemgo.example").await;
    let r = api.get("/api/v1/mailboxes", &anna).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let mut conn = api.gw.store.pool().acquire().await.unwrap();
    sqlx::query(
        "UPDATE users SET credentials_version = credentials_version + 1 \
         WHERE email_key = 'anna@lemgo.example'",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    drop(conn);
    let r = api.get("/api/v1/mailboxes", &anna).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    // A new login opens a session under the new version.
    let again = api.login("anna@lemgo.example").await;
    assert_eq!(
        api.get("/api/v1/mailboxes", &again).await.status,
        StatusCode::OK
    );

    // Sessions that can no longer open are deleted, sealed keys and all: anna's old one
    // and bernd's expired one; anna's new one stays and works.
    let bernd = api.login("bernd@lemgo.example").await;
    let mut conn = api.gw.store.pool().acquire().await.unwrap();
    sqlx::query(
        "UPDATE sessions SET expires_at = 1 WHERE user_id = \
         (SELECT id FROM users WHERE email_key = 'bernd@lemgo.example')",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    let count = "SELECT COUNT(*) FROM sessions";
    let before: i64 = sqlx::query_scalar(count)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(before, 3);
    drop(conn);
    assert_eq!(api.core.auth().purge_sessions().await.unwrap(), 2);
    let mut conn = api.gw.store.pool().acquire().await.unwrap();
    let after: i64 = sqlx::query_scalar(count)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(after, 1);
    drop(conn);
    assert_eq!(
        api.get("/api/v1/mailboxes", &again).await.status,
        StatusCode::OK
    );
    let r = api.get("/api/v1/mailboxes", &bernd).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
}
on_both_backends!(
    sessions_end_with_the_password_they_were_opened_under,
    super::sessions_end_with_the_password_they_were_opened_under
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_enable_users_and_lift_the_throttle() {
    let Cast { api, .. } = cast(Gateway::new(bote::store::Backend::Sqlite).await).await;
    let login = |password: &str| json!({ "email": "anna@lemgo.example", "password": password });
    for _ in 0..5 {
        let r = api
            .call(
                "POST",
                "/api/v1/session",
                None,
                Some(login("wrong password!!")),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
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
    assert_eq!(
        api.cli(&["user", "unlock", "anna@lemgo.example"], "")
            .trim(),
        "unlocked: anna@lemgo.example"
    );
    let r = api
        .call(
            "POST",
            "/api/v1/session",
            None,
            Some(login("a long enough password")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    api.cli(&["user", "disable", "anna@lemgo.example"], "");
    let r = api
        .call(
            "POST",
            "/api/v1/session",
            None,
            Some(login("a long enough password")),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.cli(&["user", "enable", "anna@lemgo.example"], "")
            .trim(),
        "enabled: anna@lemgo.example"
    );
    let r = api
        .call(
            "POST",
            "/api/v1/session",
            None,
            Some(login("a long enough password")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}
