//! The stored log against a naive RFC 6962 reference: tree hashes, inclusion proofs and
//! consistency proofs, for every size up to 64 exhaustively and for random sizes up to 2000.

use std::sync::Arc;

use bote::keys::LogKey;
use bote::log::Log;
use bote::store::{Backend, Store};
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use tlog_tiles::Hash;

use crate::support::TestDb;

fn sha(parts: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    Hash(h.finalize().into())
}

fn leaf(entry: &[u8]) -> Hash {
    sha(&[&[0], entry])
}

fn node(l: Hash, r: Hash) -> Hash {
    sha(&[&[1], &l.0, &r.0])
}

/// Largest power of two smaller than n (n >= 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// RFC 6962 §2.1 MTH.
fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => sha(&[]),
        1 => d[0],
        n => {
            let k = split(n);
            node(mth(&d[..k]), mth(&d[k..]))
        }
    }
}

/// RFC 6962 §2.1.1 PATH(m, D[n]).
fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
    if d.len() <= 1 {
        return Vec::new();
    }
    let k = split(d.len());
    if m < k {
        let mut p = path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

/// RFC 6962 §2.1.2 PROOF(m, D[n]).
fn proof(m: usize, d: &[Hash]) -> Vec<Hash> {
    fn sub(m: usize, d: &[Hash], complete: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if complete { Vec::new() } else { vec![mth(d)] };
        }
        let k = split(n);
        if m <= k {
            let mut p = sub(m, &d[..k], complete);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = sub(m - k, &d[k..], false);
            p.push(mth(&d[..k]));
            p
        }
    }
    sub(m, d, true)
}

struct Fixture {
    _db: TestDb,
    _dir: tempfile::TempDir,
    store: Store,
    log: Log,
    leaves: Vec<Hash>,
}

/// A log of `n` entries appended in batches of the given sizes (cycled).
async fn build(n: usize, batches: &[usize]) -> Fixture {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let log = Log::new(
        Arc::new(LogKey::ephemeral("test.example/log").unwrap()),
        "test.example/log".into(),
        dir.path(),
    );
    let entries: Vec<Vec<u8>> = (0..n).map(|i| format!("entry {i}").into_bytes()).collect();
    let mut done = 0;
    for size in batches.iter().cycle() {
        if done == n {
            break;
        }
        let end = (done + size).min(n);
        let mut tx = store.begin().await.unwrap();
        let appended = log.append(&mut tx, &entries[done..end]).await.unwrap();
        assert_eq!(appended.first_index, done as u64);
        tx.commit().await.unwrap();
        done = end;
    }
    let leaves = entries.iter().map(|e| leaf(e)).collect();
    Fixture {
        _db: db,
        _dir: dir,
        store,
        log,
        leaves,
    }
}

impl Fixture {
    async fn check(&self, t: usize, i: usize, m: usize) {
        let mut conn = self.store.pool().acquire().await.unwrap();
        let d = &self.leaves[..t];
        assert_eq!(
            self.log.root_at(&mut conn, t as u64).await.unwrap(),
            mth(d),
            "root at {t}"
        );
        let inclusion = self
            .log
            .inclusion_proof(&mut conn, i as u64, t as u64)
            .await
            .unwrap();
        assert_eq!(inclusion, path(i, d), "inclusion of {i} in {t}");
        let consistency = self
            .log
            .consistency_proof(&mut conn, m as u64, t as u64)
            .await
            .unwrap();
        assert_eq!(consistency, proof(m, d), "consistency {m} -> {t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tree_up_to_64_matches_the_reference() {
    let f = build(64, &[1, 2, 3, 5, 8]).await;
    for t in 1..=64 {
        for i in 0..t {
            f.check(t, i, i + 1).await;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    #[test]
    fn random_trees_up_to_2000_match_the_reference(
        n in 65usize..=2000,
        batches in prop::collection::vec(1usize..300, 1..8),
        picks in prop::collection::vec((any::<u32>(), any::<u32>(), any::<u32>()), 12),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let f = build(n, &batches).await;
            f.check(n, n - 1, n).await;
            for (a, b, c) in picks {
                let t = 1 + (a as usize % n);
                let i = b as usize % t;
                let m = 1 + (c as usize % t);
                f.check(t, i, m).await;
            }
        });
    }
}
