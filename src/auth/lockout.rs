//! Failed-login throttling (spec §5; the enumeration and lockout finding). Failures are
//! counted three ways, and each count past its free allowance makes the next attempt wait
//! twice as long as the one before (1 s, 2 s, 4 s, …, up to a cap):
//!
//! | counted per | free failures | longest wait |
//! |---|---|---|
//! | account and client address | 5 | 15 min |
//! | client address, any account | 30 | 15 min |
//! | account, any client address | 20 | 60 s |
//!
//! So a guesser at one address is slowed to a crawl, a password sprayer too, and a botnet
//! gets one guess per minute per account — while the account's owner, at their own
//! address, is never locked out by someone else's failures for more than a minute. A
//! success clears the (account, client) count; counts are forgotten a day after their last
//! failure. IPv6 clients are counted by their /64.
//!
//! The tables are bounded. When one is full, stale entries go first, then those whose last
//! failure is oldest: an attacker who floods it with fresh keys evicts only cold entries,
//! never the hot one of its own current target, which every failure refreshes.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::turns::{Turn, Turns};

/// Entries per table.
const CAPACITY: usize = 100_000;
/// A count is forgotten this long after its last failure.
const FORGET_MS: i64 = 24 * 60 * 60 * 1000;

/// One way of counting failures.
#[derive(Debug, Clone, Copy)]
struct Rule {
    free: u32,
    max_wait_ms: i64,
}

const PAIR: Rule = Rule {
    free: 5,
    max_wait_ms: 15 * 60 * 1000,
};
const CLIENT: Rule = Rule {
    free: 30,
    max_wait_ms: 15 * 60 * 1000,
};
const ACCOUNT: Rule = Rule {
    free: 20,
    max_wait_ms: 60 * 1000,
};

impl Rule {
    /// How long after the last of `failures` the next attempt must wait.
    fn wait_ms(self, failures: u32) -> i64 {
        if failures < self.free {
            return 0;
        }
        let doublings = (failures - self.free).min(30);
        (1000_i64 << doublings).min(self.max_wait_ms)
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: i64,
}

#[derive(Debug)]
struct Table<K> {
    rule: Rule,
    entries: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(rule: Rule) -> Self {
        Self {
            rule,
            entries: HashMap::new(),
        }
    }

    /// Milliseconds until `key` may try again (0: now).
    fn wait(&self, key: &K, now: i64) -> i64 {
        self.entries.get(key).map_or(0, |e| {
            if now - e.last > FORGET_MS {
                0
            } else {
                (e.last + self.rule.wait_ms(e.failures) - now).max(0)
            }
        })
    }

    fn fail(&mut self, key: K, now: i64) {
        if self.entries.len() >= CAPACITY && !self.entries.contains_key(&key) {
            self.make_room(now);
        }
        let entry = self.entries.entry(key).or_insert(Entry {
            failures: 0,
            last: now,
        });
        if now - entry.last > FORGET_MS {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last = now;
    }

    /// Drops stale entries, then the coldest tenth.
    fn make_room(&mut self, now: i64) {
        self.entries.retain(|_, e| now - e.last <= FORGET_MS);
        if self.entries.len() < CAPACITY {
            return;
        }
        let mut lasts: Vec<i64> = self.entries.values().map(|e| e.last).collect();
        let cut = CAPACITY / 10;
        lasts.select_nth_unstable(cut);
        let threshold = lasts[cut];
        self.entries.retain(|_, e| e.last > threshold);
    }

    fn clear(&mut self, key: &K) {
        self.entries.remove(key);
    }
}

#[derive(Debug)]
struct Tables {
    pair: Table<(String, IpAddr)>,
    client: Table<IpAddr>,
    account: Table<String>,
}

/// The failed-login tracker of one process; cheap to clone, shared.
#[derive(Debug, Clone)]
pub struct Lockout {
    tables: Arc<Mutex<Tables>>,
    turns: Arc<Turns>,
}

impl Default for Lockout {
    fn default() -> Self {
        Self {
            tables: Arc::new(Mutex::new(Tables {
                pair: Table::new(PAIR),
                client: Table::new(CLIENT),
                account: Table::new(ACCOUNT),
            })),
            turns: Arc::default(),
        }
    }
}

/// The turn of one attempt ([`Lockout::turn`]): held from the check of the wait to the
/// count of the outcome.
#[derive(Debug)]
pub struct AttemptTurn<'a> {
    _account: Turn<'a>,
    _client: Turn<'a>,
}

/// The address failures are counted under: an unknown client (in-process callers) is one
/// address of its own.
fn client_key(client: Option<IpAddr>) -> IpAddr {
    client.map_or(IpAddr::from([0, 0, 0, 0]), crate::client::network)
}

impl Lockout {
    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until no other attempt on `account`, and none from `client`'s network, is
    /// between its check and its count. Without it, guesses sent at once would all pass
    /// [`Lockout::wait_secs`] before the first failure was counted: hundreds of guesses
    /// where five are free. Attempts wait in turn, they are not refused; each then sees
    /// the failures of those before it. Always the account first, then the client: one
    /// order, no deadlock.
    pub async fn turn(&self, account: &str, client: Option<IpAddr>) -> AttemptTurn<'_> {
        let account_turn = self.turns.turn(format!("account:{account}")).await;
        let client_turn = self
            .turns
            .turn(format!("client:{}", client_key(client)))
            .await;
        AttemptTurn {
            _account: account_turn,
            _client: client_turn,
        }
    }

    /// Seconds `account` must wait before trying again from `client` (0: try now).
    pub fn wait_secs(&self, account: &str, client: Option<IpAddr>, now: i64) -> u64 {
        let client = client_key(client);
        let t = self.tables();
        let ms = t
            .pair
            .wait(&(account.to_owned(), client), now)
            .max(t.client.wait(&client, now))
            .max(t.account.wait(&account.to_owned(), now));
        u64::try_from((ms + 999) / 1000).unwrap_or(0)
    }

    /// Counts one failure of `account` from `client`.
    pub fn note_failure(&self, account: &str, client: Option<IpAddr>, now: i64) {
        let client = client_key(client);
        let mut t = self.tables();
        t.pair.fail((account.to_owned(), client), now);
        t.client.fail(client, now);
        t.account.fail(account.to_owned(), now);
    }

    /// Forgets every failure of `account` counted at or before `unlocked_at` (an
    /// operator's `bote user unlock`).
    pub fn clear_account(&self, account: &str, unlocked_at: i64) {
        let mut t = self.tables();
        t.pair
            .entries
            .retain(|(a, _), e| a != account || e.last > unlocked_at);
        if t.account
            .entries
            .get(account)
            .is_some_and(|e| e.last <= unlocked_at)
        {
            t.account.clear(&account.to_owned());
        }
    }

    /// A success from `client` clears that pair's count.
    pub fn note_success(&self, account: &str, client: Option<IpAddr>) {
        let client = client_key(client);
        self.tables().pair.clear(&(account.to_owned(), client));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, last]))
    }

    #[test]
    fn waits_double_after_the_free_failures_and_are_capped() {
        let waits: Vec<i64> = (0..16).map(|n| PAIR.wait_ms(n)).collect();
        assert_eq!(&waits[..8], &[0, 0, 0, 0, 0, 1000, 2000, 4000]);
        assert_eq!(waits[15], 15 * 60 * 1000);
        assert_eq!(ACCOUNT.wait_ms(40), 60_000);
    }

    #[test]
    fn an_attacker_elsewhere_does_not_lock_the_owner_out_for_long() {
        let lockout = Lockout::default();
        // Hundreds of failures against Anna from one attacker address.
        for i in 0..300 {
            lockout.note_failure("anna@lemgo.example", ip(66), T0 + i);
        }
        let now = T0 + 300;
        assert!(lockout.wait_secs("anna@lemgo.example", ip(66), now) >= 15 * 60 - 1);
        // Anna, from home, waits at most the account-wide minute.
        let anna = lockout.wait_secs("anna@lemgo.example", ip(10), now);
        assert!(anna <= 60, "{anna}");
        assert_eq!(
            lockout.wait_secs("anna@lemgo.example", ip(10), now + 60_000),
            0
        );
        // The attacker's address is slowed for every account.
        assert!(lockout.wait_secs("bernd@lemgo.example", ip(66), now) > 60);
    }

    #[test]
    fn a_flood_of_fresh_keys_does_not_evict_the_hot_entry() {
        let lockout = Lockout::default();
        let mut now = T0;
        for _ in 0..10 {
            lockout.note_failure("anna@lemgo.example", ip(66), now);
        }
        // More fresh accounts than the table holds, interleaved with the attack itself.
        for i in 0..(CAPACITY + CAPACITY / 2) {
            now += 1;
            lockout.note_failure(&format!("x{i}@lemgo.example"), ip(67), now);
            if i % 1000 == 0 {
                lockout.note_failure("anna@lemgo.example", ip(66), now);
            }
        }
        assert!(lockout.wait_secs("anna@lemgo.example", ip(66), now) > 0);
        assert!(lockout.tables().pair.entries.len() <= CAPACITY);
    }

    #[test]
    fn an_operator_unlock_forgets_the_failures_before_it() {
        let lockout = Lockout::default();
        for i in 0..25 {
            lockout.note_failure("anna@lemgo.example", ip(66), T0 + i);
        }
        assert!(lockout.wait_secs("anna@lemgo.example", ip(66), T0 + 100) > 0);
        lockout.clear_account("anna@lemgo.example", T0 + 50);
        assert_eq!(lockout.wait_secs("anna@lemgo.example", ip(66), T0 + 100), 0);
        // A client address that failed for many accounts stays slowed: that is not the
        // account's to lift.
        for i in 0..40 {
            lockout.note_failure(&format!("x{i}@lemgo.example"), ip(67), T0 + i);
        }
        lockout.clear_account("x1@lemgo.example", T0 + 50);
        assert!(lockout.wait_secs("x1@lemgo.example", ip(67), T0 + 100) > 0);
    }

    #[test]
    fn success_clears_the_pair_and_counts_are_forgotten() {
        let lockout = Lockout::default();
        for i in 0..6 {
            lockout.note_failure("anna@lemgo.example", ip(10), T0 + i);
        }
        assert!(lockout.wait_secs("anna@lemgo.example", ip(10), T0 + 10) > 0);
        lockout.note_success("anna@lemgo.example", ip(10));
        assert_eq!(lockout.wait_secs("anna@lemgo.example", ip(10), T0 + 10), 0);
        for i in 0..40 {
            lockout.note_failure("x@lemgo.example", ip(11), T0 + i);
        }
        assert!(lockout.wait_secs("x@lemgo.example", ip(11), T0 + 100) > 0);
        assert_eq!(
            lockout.wait_secs("x@lemgo.example", ip(11), T0 + FORGET_MS + 100),
            0
        );
    }
}
