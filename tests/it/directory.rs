//! Key discovery: the JSON directory and WKD, checked against GnuPG's own WKD hashing.

use std::process::Command;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bote::accounts::service::{AddUser, RelaySpec};
use bote::accounts::{Actor, RelayTls, Role};
use bote::address::EmailAddress;
use bote::web;
use http_body_util::BodyExt;
use sequoia_openpgp::cert::CertBuilder;
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::serialize::SerializeInto;
use tower::ServiceExt;

use crate::on_both_backends;
use crate::support::Gateway;

async fn fetch(app: &axum::Router, path: &str, host: &str) -> (StatusCode, String, Vec<u8>) {
    let request = Request::get(path)
        .header("host", host)
        .body(Body::empty())
        .unwrap();
    send(app, request).await
}

async fn send(app: &axum::Router, request: Request<Body>) -> (StatusCode, String, Vec<u8>) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let ctype = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        status,
        ctype,
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

fn wkd_hash_by_gnupg(address: &str) -> String {
    let out = Command::new("/usr/lib/gnupg/gpg-wks-client")
        .args(["--print-wkd-hash", address])
        .output()
        .expect("gpg-wks-client (gnupg) is installed");
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

async fn directory_and_wkd_serve_every_mailbox_certificate(gw: Gateway) {
    let accounts =
        bote::accounts::service::Accounts::new(gw.store.clone(), gw.config.gateway.domains.clone());
    let op = Actor::Operator("t".into());
    let anna = EmailAddress::parse("Anna.Muster@lemgo.example").unwrap();
    accounts
        .add_user(
            &op,
            AddUser {
                role: Role::Citizen,
                name: "Anna Muster".into(),
                email: anna.clone(),
                password: zeroize::Zeroizing::new("a long enough password".into()),
                notify_email: None,
                scope: Vec::new(),
            },
        )
        .await
        .unwrap();
    let office = EmailAddress::parse("bauamt@lemgo.example").unwrap();
    accounts
        .add_office(&op, &office, "Bauamt", None)
        .await
        .unwrap();
    let (ext_cert, _) = CertBuilder::general_purpose(Some("Kreis <amt@kreis.example>"))
        .generate()
        .unwrap();
    let ext = EmailAddress::parse("amt@kreis.example").unwrap();
    let spec = RelaySpec {
        target: "mail.kreis.example:25".into(),
        tls: RelayTls::Required,
        cert: ext_cert.armored().to_vec().unwrap(),
    };
    accounts
        .add_office(&op, &ext, "Kreis", Some(spec))
        .await
        .unwrap();
    let core = bote::gateway::Gateway::from_parts(
        gw.store.clone(),
        std::sync::Arc::new(gw.config.clone()),
        gw.keys.clone(),
        gw.log.clone(),
        gw.writer.clone(),
    );
    let app = web::router(core.clone());
    let host = "lemgo.example";

    // A citizen's key is not public until they say so; a logged-in caller sees it anyway.
    let anna_hash = wkd_hash_by_gnupg("anna.muster@lemgo.example");
    let anna_wkd = format!("/.well-known/openpgpkey/lemgo.example/hu/{anna_hash}?l=Anna.Muster");
    let anna_entry = "/api/v1/directory?address=ANNA.MUSTER@Lemgo.Example";
    assert_eq!(fetch(&app, anna_entry, host).await.0, StatusCode::NOT_FOUND);
    assert_eq!(fetch(&app, &anna_wkd, host).await.0, StatusCode::NOT_FOUND);
    let session = core
        .auth()
        .login("anna.muster@lemgo.example", "a long enough password", None)
        .await
        .unwrap();
    let request = Request::get(anna_entry)
        .header(
            "authorization",
            format!("Bearer {}", session.credential.expose()),
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, request).await.0, StatusCode::OK);
    let caller = core
        .auth()
        .resolve(&session.credential, None)
        .await
        .unwrap();
    core.set_published(&caller, &anna, true).await.unwrap();

    // Directory.
    let (status, ctype, body) = fetch(
        &app,
        "/api/v1/directory?address=ANNA.MUSTER@Lemgo.Example",
        host,
    )
    .await;
    assert_eq!(
        (status, ctype.as_str()),
        (StatusCode::OK, "application/json")
    );
    let entry: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(entry["kind"], "citizen");
    assert_eq!(entry["personal"], true);
    let cert = sequoia_openpgp::Cert::from_bytes(entry["certificate"].as_str().unwrap().as_bytes())
        .unwrap();
    assert!(!cert.is_tsk(), "the directory must never serve secret keys");
    assert_eq!(entry["fingerprint"], cert.fingerprint().to_hex());
    let (_, _, body) = fetch(&app, "/api/v1/directory?address=amt@kreis.example", host).await;
    let external: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (external["kind"].as_str(), external["personal"].as_bool()),
        (Some("external"), Some(false))
    );
    assert_eq!(external["fingerprint"], ext_cert.fingerprint().to_hex());
    for (path, status) in [
        (
            "/api/v1/directory?address=nobody@lemgo.example",
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v1/directory?address=not-an-address",
            StatusCode::BAD_REQUEST,
        ),
        ("/api/v1/directory", StatusCode::BAD_REQUEST),
    ] {
        let (got, ctype, _) = fetch(&app, path, host).await;
        assert_eq!(
            (got, ctype.as_str()),
            (status, "application/problem+json"),
            "{path}"
        );
    }

    // WKD, with the hash GnuPG computes; advanced and direct layouts.
    let hash = wkd_hash_by_gnupg("anna.muster@lemgo.example");
    let (status, ctype, advanced) = fetch(
        &app,
        &format!("/.well-known/openpgpkey/lemgo.example/hu/{hash}?l=Anna.Muster"),
        "openpgpkey.lemgo.example",
    )
    .await;
    assert_eq!(
        (status, ctype.as_str()),
        (StatusCode::OK, "application/octet-stream")
    );
    let served = sequoia_openpgp::Cert::from_bytes(&advanced).unwrap();
    assert_eq!(served.fingerprint(), cert.fingerprint());
    assert!(!served.is_tsk());
    let (status, _, direct) = fetch(
        &app,
        &format!("/.well-known/openpgpkey/hu/{hash}"),
        "lemgo.example:8443",
    )
    .await;
    assert_eq!((status, direct), (StatusCode::OK, advanced.clone()));
    // HTTP/2 names the host in the request's authority and sends no Host header.
    let h2 = Request::get(format!(
        "https://lemgo.example:8443/.well-known/openpgpkey/hu/{hash}"
    ))
    .version(axum::http::Version::HTTP_2)
    .body(Body::empty())
    .unwrap();
    assert_eq!(send(&app, h2).await.0, StatusCode::OK);
    let (status, _, office_key) = fetch(
        &app,
        &format!(
            "/.well-known/openpgpkey/lemgo.example/hu/{}",
            wkd_hash_by_gnupg("bauamt@lemgo.example")
        ),
        host,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(sequoia_openpgp::Cert::from_bytes(&office_key).is_ok());
    // The gateway's own certificates: the evidence key's, and the provider key's, which an
    // office's gpg needs to check the signature of every message bote relays
    // (`gpg --locate-keys provider@lemgo.example`).
    for (address, key) in [
        ("evidence@lemgo.example", &gw.keys.evidence),
        ("provider@lemgo.example", &gw.keys.provider),
    ] {
        let (status, _, cert) = fetch(
            &app,
            &format!(
                "/.well-known/openpgpkey/lemgo.example/hu/{}",
                wkd_hash_by_gnupg(address)
            ),
            host,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{address}");
        assert_eq!(
            sequoia_openpgp::Cert::from_bytes(&cert)
                .unwrap()
                .fingerprint(),
            key.cert().fingerprint(),
            "{address}"
        );
    }
    let (status, _, _) = fetch(&app, "/.well-known/openpgpkey/lemgo.example/policy", host).await;
    assert_eq!(status, StatusCode::OK);

    // Another domain, a wrong `l`, or an unknown hash: nothing.
    for path in [
        format!(
            "/.well-known/openpgpkey/kreis.example/hu/{}",
            wkd_hash_by_gnupg("amt@kreis.example")
        ),
        format!("/.well-known/openpgpkey/lemgo.example/hu/{hash}?l=bauamt"),
        "/.well-known/openpgpkey/lemgo.example/hu/ybndrfg8ejkmcpqxot1uwisza345h769".to_owned(),
    ] {
        assert_eq!(
            fetch(&app, &path, host).await.0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }

    // GnuPG imports what WKD serves.
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("wkd.bin");
    std::fs::write(&file, &advanced).unwrap();
    let import = Command::new("gpg")
        .arg("--homedir")
        .arg(home.path())
        .args(["--batch", "--import"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    assert!(
        String::from_utf8_lossy(&import.stderr).contains("Anna Muster <Anna.Muster@lemgo.example>")
    );
}
on_both_backends!(
    directory_and_wkd_serve_every_mailbox_certificate,
    super::directory_and_wkd_serve_every_mailbox_certificate
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_rate_limited_per_client() {
    let gw = Gateway::new(bote::store::Backend::Sqlite).await;
    let app = web::router(bote::gateway::Gateway::from_parts(
        gw.store.clone(),
        std::sync::Arc::new(gw.config.clone()),
        gw.keys.clone(),
        gw.log.clone(),
        gw.writer.clone(),
    ));
    let from = |ip: [u8; 4], n: u32| {
        Request::get(format!("/api/v1/directory?address=nobody{n}@lemgo.example"))
            .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                ip, 40000,
            ))))
            .body(Body::empty())
            .unwrap()
    };
    let mut limited = None;
    // The bucket refills one lookup a second while the sweep runs.
    let sweep = std::time::Instant::now();
    for n in 0..200 {
        let response = app.clone().oneshot(from([192, 0, 2, 7], n)).await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((n, response));
            break;
        }
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
    let (n, response) = limited.expect("a sweep from one address is stopped");
    let refilled = u32::try_from(sweep.elapsed().as_secs()).unwrap();
    assert!(
        (60..=61 + refilled).contains(&n),
        "stopped after {n} lookups"
    );
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Another client is not affected.
    let other = app.clone().oneshot(from([192, 0, 2, 8], 0)).await.unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
}
