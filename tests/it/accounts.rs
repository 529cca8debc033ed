//! Accounts through the service layer, on SQLite and PostgreSQL.

use bote::accounts::password;
use bote::accounts::service::{AccountError, Accounts, AddUser, RelaySpec};
use bote::accounts::{Actor, IdentityMethod, MailboxKind, MembershipState, RelayTls, Role};
use bote::address::{DomainName, EmailAddress};
use bote::store::{Store, accounts as repo, audit};
use sequoia_openpgp::cert::CertBuilder;
use sequoia_openpgp::serialize::SerializeInto;

use crate::on_both_backends;
use crate::support::TestDb;

fn addr(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

fn accounts(store: &Store) -> Accounts {
    Accounts::new(
        store.clone(),
        vec![DomainName::parse("lemgo.example").unwrap()],
    )
}

fn operator() -> Actor {
    Actor::Operator("tester".into())
}

fn new_user(role: Role, email: &str) -> AddUser {
    AddUser {
        role,
        name: "Test Person".into(),
        email: addr(email),
        password: zeroize::Zeroizing::new("a long enough password".into()),
        notify_email: None,
        scope: Vec::new(),
    }
}

async fn audit_count(store: &Store) -> usize {
    let mut conn = store.pool().acquire().await.unwrap();
    audit::entries(&mut conn, None).await.unwrap().len()
}

fn office_cert() -> Vec<u8> {
    let (cert, _) = CertBuilder::general_purpose(Some("Bauamt <bauamt@extern.example>"))
        .generate()
        .unwrap();
    cert.armored().to_vec().unwrap()
}

async fn citizen_gets_user_mailbox_and_audit_entry(db: TestDb) {
    let store = db.store().await;
    let acc = accounts(&store);
    let added = acc
        .add_user(&operator(), new_user(Role::Citizen, "Anna@Lemgo.Example"))
        .await
        .unwrap();
    assert_eq!(added.recovery_code.len(), 29, "five groups of five");
    let user = added.user;
    assert_eq!(user.email.to_string(), "Anna@lemgo.example");
    assert_eq!(user.role, Role::Citizen);
    assert!(user.identity.verification.is_none());

    let mailboxes = acc.list_mailboxes().await.unwrap();
    assert_eq!(mailboxes.len(), 1);
    assert_eq!(mailboxes[0].kind, MailboxKind::Citizen);
    assert_eq!(mailboxes[0].owner_user_id, Some(user.id));

    let mut conn = store.pool().acquire().await.unwrap();
    let entries = audit::entries(&mut conn, Some("Anna@lemgo.example"))
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].action, "user.add");
    assert_eq!(entries[0].actor, "operator:tester");
    assert_eq!(entries[0].details["role"], "citizen");
    assert!(!entries[0].details.to_string().contains("password"));

    let (phc, _) = repo::password_hash(&mut conn, user.id)
        .await
        .unwrap()
        .unwrap();
    assert!(phc.starts_with("$argon2id$"));
    assert!(password::verify("a long enough password", &phc));
}
on_both_backends!(
    citizen_gets_user_mailbox_and_audit_entry,
    super::citizen_gets_user_mailbox_and_audit_entry
);

async fn refusals_change_nothing(db: TestDb) {
    let store = db.store().await;
    let acc = accounts(&store);
    acc.add_user(&operator(), new_user(Role::Citizen, "anna@lemgo.example"))
        .await
        .unwrap();
    let before = (
        acc.list_users().await.unwrap(),
        acc.list_mailboxes().await.unwrap(),
        audit_count(&store).await,
    );

    let dup = acc
        .add_user(&operator(), new_user(Role::Staff, "ANNA@lemgo.example"))
        .await
        .unwrap_err();
    assert!(matches!(dup, AccountError::DuplicateUser(_)), "{dup}");
    assert_eq!(dup.to_string(), "user ANNA@lemgo.example already exists");

    let foreign = acc
        .add_user(
            &operator(),
            new_user(Role::Citizen, "bob@elsewhere.example"),
        )
        .await
        .unwrap_err();
    assert!(
        foreign
            .to_string()
            .contains("not in a domain this gateway serves (lemgo.example)"),
        "{foreign}"
    );

    let mut weak = new_user(Role::Citizen, "carl@lemgo.example");
    weak.password = zeroize::Zeroizing::new("short".into());
    let weak = acc.add_user(&operator(), weak).await.unwrap_err();
    assert!(weak.to_string().contains("too short"), "{weak}");

    let mut unnamed = new_user(Role::Legal, "dora@lemgo.example");
    unnamed.name = "  ".into();
    assert!(matches!(
        acc.add_user(&operator(), unnamed).await,
        Err(AccountError::Name(_))
    ));

    let office_clash = acc
        .add_office(&operator(), &addr("anna@lemgo.example"), "Amt", None)
        .await
        .unwrap_err();
    assert!(
        matches!(office_clash, AccountError::DuplicateMailbox(_)),
        "{office_clash}"
    );

    let after = (
        acc.list_users().await.unwrap(),
        acc.list_mailboxes().await.unwrap(),
        audit_count(&store).await,
    );
    assert_eq!(before, after);
}
on_both_backends!(refusals_change_nothing, super::refusals_change_nothing);

async fn office_membership_rules(db: TestDb) {
    let store = db.store().await;
    let acc = accounts(&store);
    let op = operator();
    let office = addr("bauamt@lemgo.example");
    let code = acc
        .add_office(&op, &office, "Bauamt Lemgo", None)
        .await
        .unwrap()
        .recovery_code
        .unwrap();
    acc.add_user(&op, new_user(Role::Staff, "bernd@lemgo.example"))
        .await
        .unwrap();
    acc.add_user(&op, new_user(Role::Staff, "carl@lemgo.example"))
        .await
        .unwrap();
    acc.add_user(&op, new_user(Role::Legal, "lena@lemgo.example"))
        .await
        .unwrap();
    acc.add_user(&op, new_user(Role::Citizen, "anna@lemgo.example"))
        .await
        .unwrap();

    // The first member: only the recovery code can grant it (else it would wait forever).
    let first = acc
        .add_member(&op, &office, &addr("bernd@lemgo.example"), None)
        .await
        .unwrap_err();
    assert!(matches!(first, AccountError::NoGrantor(_)), "{first}");
    assert!(acc.members(&office).await.unwrap().is_empty());
    let state = acc
        .add_member(
            &op,
            &office,
            &addr("bernd@lemgo.example"),
            Some(zeroize::Zeroizing::new(code)),
        )
        .await
        .unwrap();
    assert_eq!(state, MembershipState::Active);
    let state = acc
        .add_member(&op, &office, &addr("carl@lemgo.example"), None)
        .await
        .unwrap();
    assert_eq!(
        state,
        MembershipState::Pending,
        "operator grants wait for a key holder"
    );
    let members = acc.members(&office).await.unwrap();
    assert_eq!(members.len(), 2);
    assert_eq!(members[0].user, addr("bernd@lemgo.example"));

    let again = acc
        .add_member(&op, &office, &addr("Bernd@lemgo.example"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(again, AccountError::AlreadyMember { .. }),
        "{again}"
    );

    let legal = acc
        .add_member(&op, &office, &addr("lena@lemgo.example"), None)
        .await
        .unwrap_err();
    assert_eq!(
        legal.to_string(),
        "user lena@lemgo.example has role legal; only staff users can be members of office mailboxes"
    );
    let citizen_box = acc
        .add_member(
            &op,
            &addr("anna@lemgo.example"),
            &addr("bernd@lemgo.example"),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(
        citizen_box,
        AccountError::NotLocalOffice {
            kind: MailboxKind::Citizen,
            ..
        }
    ));
    let unknown = acc
        .add_member(
            &op,
            &addr("nix@lemgo.example"),
            &addr("bernd@lemgo.example"),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.to_string(), "no mailbox nix@lemgo.example");
    assert_eq!(acc.members(&office).await.unwrap().len(), 2);
}
on_both_backends!(office_membership_rules, super::office_membership_rules);

async fn external_office_needs_valid_relay_and_certificate(db: TestDb) {
    let store = db.store().await;
    let acc = accounts(&store);
    let op = operator();
    let office = addr("poststelle@extern.example");
    let spec = |target: &str, cert: Vec<u8>| RelaySpec {
        target: target.into(),
        tls: RelayTls::Required,
        cert,
    };

    let bad_target = acc
        .add_office(
            &op,
            &office,
            "Extern",
            Some(spec("mail.extern.example", office_cert())),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(bad_target, AccountError::RelayTarget(_)),
        "{bad_target}"
    );
    let bad_cert = acc
        .add_office(
            &op,
            &office,
            "Extern",
            Some(spec("mail.extern.example:25", b"not a cert".to_vec())),
        )
        .await
        .unwrap_err();
    assert!(
        bad_cert
            .to_string()
            .starts_with("office certificate: not an OpenPGP certificate"),
        "{bad_cert}"
    );
    assert!(acc.list_mailboxes().await.unwrap().is_empty());

    let cert = office_cert();
    let m = acc
        .add_office(
            &op,
            &office,
            "Extern",
            Some(spec("Mail.Extern.Example:2525", cert)),
        )
        .await
        .unwrap()
        .mailbox;
    assert_eq!(m.kind, MailboxKind::External);
    let relay = m.relay.unwrap();
    assert_eq!(
        (relay.host.as_str(), relay.port, relay.tls),
        ("mail.extern.example", 2525, RelayTls::Required)
    );
    assert_eq!(relay.cert_fingerprint.len(), 40);
    let local = acc
        .add_office(&op, &addr("amt@elsewhere.example"), "Amt", None)
        .await
        .unwrap_err();
    assert!(
        matches!(local, AccountError::ForeignDomain { .. }),
        "{local}"
    );
}
on_both_backends!(
    external_office_needs_valid_relay_and_certificate,
    super::external_office_needs_valid_relay_and_certificate
);

async fn identity_verification_disable_and_password_change(db: TestDb) {
    let store = db.store().await;
    let acc = accounts(&store);
    let op = operator();
    let anna = addr("anna@lemgo.example");
    let code = acc
        .add_user(&op, new_user(Role::Citizen, "anna@lemgo.example"))
        .await
        .unwrap()
        .recovery_code;
    let v = acc
        .verify_user_identity(&op, &anna, IdentityMethod::Eid)
        .await
        .unwrap();
    let user = acc.user(&anna).await.unwrap();
    let stored = user.identity.verification.unwrap();
    assert_eq!(stored, v);
    assert_eq!(stored.method, IdentityMethod::Eid);
    assert_eq!(stored.verified_by, "operator:tester");
    // The citizen's mailbox shares the owner's identity record.
    let mailbox = &acc.list_mailboxes().await.unwrap()[0];
    assert_eq!(
        mailbox.identity.verification.as_ref().unwrap().method,
        IdentityMethod::Eid
    );

    let office = addr("bauamt@lemgo.example");
    acc.add_office(&op, &office, "Bauamt", None).await.unwrap();
    acc.verify_mailbox_identity(&op, &office, IdentityMethod::QualifiedSignature)
        .await
        .unwrap();

    let no_code = acc
        .set_password(
            &op,
            &anna,
            zeroize::Zeroizing::new("another long password".into()),
            None,
            false,
        )
        .await
        .unwrap_err();
    assert!(no_code.to_string().contains("--new-key"), "{no_code}");
    let wrong = acc
        .set_password(
            &op,
            &anna,
            zeroize::Zeroizing::new("another long password".into()),
            Some(zeroize::Zeroizing::new(
                bote::crypto::keywrap::recovery_code(),
            )),
            false,
        )
        .await
        .unwrap_err();
    assert!(matches!(wrong, AccountError::WrongRecoveryCode), "{wrong}");
    let kept = acc
        .set_password(
            &op,
            &anna,
            zeroize::Zeroizing::new("another long password".into()),
            Some(zeroize::Zeroizing::new(code)),
            false,
        )
        .await
        .unwrap();
    assert_eq!(kept, None, "the key was kept: no new recovery code");
    let mut conn = store.pool().acquire().await.unwrap();
    let (phc, version) = repo::password_hash(&mut conn, user.id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        version > 0,
        "a password change raises the credentials version"
    );
    assert!(password::verify("another long password", &phc));
    assert!(!password::verify("a long enough password", &phc));

    acc.disable_user(&op, &anna).await.unwrap();
    assert!(acc.user(&anna).await.unwrap().disabled);
    assert_eq!(
        repo::password_hash(&mut conn, user.id).await.unwrap(),
        None,
        "disabled users cannot log in"
    );

    let actions: Vec<String> = audit::entries(&mut conn, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions,
        [
            "user.add",
            "user.verify-identity",
            "mailbox.add",
            "mailbox.verify-identity",
            "user.set-password",
            "user.disable"
        ]
    );
    let missing = acc
        .disable_user(&op, &addr("nobody@lemgo.example"))
        .await
        .unwrap_err();
    assert_eq!(missing.to_string(), "no user nobody@lemgo.example");
}
on_both_backends!(
    identity_verification_disable_and_password_change,
    super::identity_verification_disable_and_password_change
);
