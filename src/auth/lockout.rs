//! Failed-login tracking: after [`MAX_FAILURES`] failures an account's login is locked for
//! [`LOCKOUT_MS`]. Per process, in memory, bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Failed logins per address before it is locked for [`LOCKOUT_MS`].
pub const MAX_FAILURES: u32 = 5;
/// How long a locked login stays locked.
pub const LOCKOUT_MS: i64 = 15 * 60 * 1000;
/// Most addresses whose failures are tracked at once.
const MAX_TRACKED: usize = 100_000;

/// Failures by account key (lower-cased address); cheap to clone, shared.
#[derive(Debug, Clone, Default)]
pub struct Lockout {
    failures: Arc<Mutex<HashMap<String, (u32, i64)>>>,
}

impl Lockout {
    /// True while `key` is locked.
    pub fn locked(&self, key: &str, now: i64) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures
            .get(key)
            .is_some_and(|(n, since)| *n >= MAX_FAILURES && now - since < LOCKOUT_MS)
    }

    /// Counts one failure of `key`.
    pub fn note_failure(&self, key: &str, now: i64) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: forget expired entries when the map grows (one entry per real address).
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, (_, since)| now - *since < LOCKOUT_MS);
        }
        if failures.len() >= MAX_TRACKED {
            return;
        }
        let entry = failures.entry(key.to_owned()).or_insert((0, now));
        if now - entry.1 >= LOCKOUT_MS {
            *entry = (0, now);
        }
        entry.0 += 1;
    }
}
