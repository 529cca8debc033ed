//! Reading stored hashes from the database for the synchronous `tlog_tiles` algorithms.
//!
//! `tlog_tiles` asks a [`HashReader`] for stored hashes by index, synchronously; the
//! database is async. The indexes an algorithm asks for depend only on tree sizes and entry
//! numbers, never on hash values, so [`two_phase`] runs the algorithm once against what is
//! known (recording the misses and answering them with zeros), fetches the misses in one
//! query, and runs it again for real.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use sqlx::AnyConnection;
use tlog_tiles::{Hash, HashReader};

use super::LogError;
use crate::store;

/// Stored hashes known so far, by stored-hash index.
#[derive(Debug, Default)]
pub struct StoredHashes {
    known: HashMap<u64, Hash>,
    misses: RefCell<BTreeSet<u64>>,
}

impl StoredHashes {
    /// Starts from `known`.
    pub fn new(known: HashMap<u64, Hash>) -> Self {
        Self {
            known,
            misses: RefCell::default(),
        }
    }

    /// Adds a hash computed on the way (an append's new stored hashes).
    pub fn insert(&mut self, index: u64, hash: Hash) {
        self.known.insert(index, hash);
    }
}

impl HashReader for StoredHashes {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        Ok(indexes
            .iter()
            .map(|i| match self.known.get(i) {
                Some(h) => *h,
                None => {
                    self.misses.borrow_mut().insert(*i);
                    Hash([0; 32])
                }
            })
            .collect())
    }
}

/// Runs `f` with every stored hash it reads, fetching the unknown ones from the database.
pub async fn two_phase<T>(
    conn: &mut AnyConnection,
    f: impl Fn(&mut StoredHashes) -> Result<T, LogError>,
) -> Result<T, LogError> {
    let mut first = StoredHashes::default();
    let result = f(&mut first);
    let misses = first.misses.into_inner();
    if misses.is_empty() {
        return result;
    }
    let mut second = StoredHashes::new(fetch(conn, &misses).await?);
    let result = f(&mut second)?;
    let missing = second.misses.into_inner();
    if let Some(first_missing) = missing.first() {
        return Err(LogError::Tlog(format!(
            "stored hash {first_missing} is missing from the database"
        )));
    }
    Ok(result)
}

/// Reads stored hashes by index; absent ones are simply not in the map.
pub async fn fetch(
    conn: &mut AnyConnection,
    indexes: &BTreeSet<u64>,
) -> Result<HashMap<u64, Hash>, LogError> {
    let all: Vec<i64> = indexes
        .iter()
        .filter_map(|i| i64::try_from(*i).ok())
        .collect();
    let mut out = HashMap::with_capacity(all.len());
    for (idx, bytes) in store::log::hashes(conn, &all).await? {
        let hash = <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| LogError::Tlog(format!("stored hash {idx} is not 32 bytes")))?;
        out.insert(u64::try_from(idx).unwrap_or(u64::MAX), Hash(hash));
    }
    Ok(out)
}
