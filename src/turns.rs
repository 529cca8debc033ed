//! One at a time per key: a keyed async lock for checks that must see the outcome of the
//! previous attempt (a sender's quota, a login's failure count), whose entries live only
//! while someone holds or waits for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// One lock per key, held from a check to the write of its outcome.
#[derive(Debug, Default)]
pub struct Turns {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A held turn; dropping it lets the key's next caller through.
#[derive(Debug)]
pub struct Turn<'a> {
    turns: &'a Turns,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Turns {
    /// Waits for the turn of `key`.
    pub async fn turn(&self, key: String) -> Turn<'_> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .clone();
        Turn {
            turns: self,
            key,
            guard: Some(lock.lock_owned().await),
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self
            .turns
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Nobody else holds or waits for it: the map's own reference is the last one.
        if locks
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_turn_per_key_and_none_left_behind() {
        let turns = Turns::default();
        let first = turns.turn("a".into()).await;
        let other_key = turns.turn("b".into()).await;
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), turns.turn("a".into()))
                .await;
        assert!(
            waiting.is_err(),
            "a second turn of one key while the first is held"
        );
        drop((first, other_key));
        let again = turns.turn("a".into()).await;
        drop(again);
        assert!(turns.locks.lock().unwrap().is_empty());
    }
}
