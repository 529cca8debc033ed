//! RFC 3161 time-stamps from a real TSA (OpenSSL `ts -reply`): obtained over HTTP, checked,
//! pinned, and refused when tampered with.

use bote::outbound::HttpClient;
use bote::timestamp::{self, TimeStampError};

use crate::support::tsa::{Tsa, TsaKey};

const CHECKPOINT: &[u8] = b"lemgo.example/log\n8\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

fn http() -> HttpClient {
    HttpClient::new(bote::tls::client_config(None).unwrap()).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_time_stamp_vouches_for_the_checkpoint_and_nothing_else() {
    for key in [TsaKey::Ec, TsaKey::Rsa] {
        let tsa = Tsa::start(key);
        let pinned = vec![tsa.cert_sha256()];
        let (token, stamp) = timestamp::obtain(&http(), &tsa.url, CHECKPOINT, &pinned)
            .await
            .unwrap();
        assert!(stamp.time.abs_diff(now()) < 120, "{stamp:?}");
        assert!(stamp.tsa.contains("bote test TSA"), "{}", stamp.tsa);
        assert_eq!(stamp.certificate_sha256, pinned[0]);
        // Offline, years later: the same token, the same data.
        assert_eq!(
            timestamp::verify(&token, CHECKPOINT, &pinned).unwrap(),
            stamp
        );

        // Other data, another pinned certificate.
        assert_eq!(
            timestamp::verify(&token, b"lemgo.example/log\n9\n", &pinned),
            Err(TimeStampError::Imprint)
        );
        let other = vec!["00".repeat(32)];
        assert!(matches!(
            timestamp::verify(&token, CHECKPOINT, &other),
            Err(TimeStampError::Untrusted { .. })
        ));
        // Any byte changed: refused (most as malformed DER, the rest by digest or signature).
        let mut accepted = Vec::new();
        for i in 0..token.len() {
            let mut bad = token.clone();
            bad[i] ^= 0x01;
            if timestamp::verify(&bad, CHECKPOINT, &pinned).is_ok() {
                accepted.push(i);
            }
        }
        assert!(
            accepted.is_empty(),
            "{key:?}: flips at {accepted:?} went unnoticed"
        );
    }
}

#[tokio::test]
async fn an_unreachable_tsa_is_reported_as_such() {
    let port = crate::support::free_port();
    let e = timestamp::obtain(
        &http(),
        &format!("http://127.0.0.1:{port}/"),
        CHECKPOINT,
        &[],
    )
    .await
    .unwrap_err();
    assert!(matches!(e, TimeStampError::Unreachable(_)), "{e}");
}
