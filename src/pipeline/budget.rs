//! The memory budget for messages in flight: a submission reserves about what it will hold
//! at its peak (the content, the signed message, one ciphertext per copy) before any work,
//! and keeps the reservation until its commit returns. Over the budget it waits a little,
//! then is refused as a temporary failure (the client retries), so parallel large messages
//! cannot exhaust memory (docs/decisions.md, "Bounded memory per request").
//!
//! Content still arriving (SMTP DATA) holds the bytes that have arrived, grown in steps
//! (and its buffer is never larger than its room), and the submission grows that to its
//! footprint once the message is whole ([`MemoryBudget::grow`]): a client that announces a
//! large message and then stalls holds little more than it sent.
//!
//! While a message arrives, one client address (an IPv6 /64) may hold at most a quarter of
//! the budget over all its sessions (a single session may hold more, alone): a client that
//! sends and then stalls before the final dot, on many connections, cannot hold it all.
//!
//! Architecture invariant: nobody waits for room while holding room, and nobody waiting
//! holds a place in a queue. A session that must wait gives back what it holds and waits
//! for its whole amount, so two sessions each holding part of the budget cannot wait for
//! each other until the timeout; and a waiter for a large amount (or the whole budget)
//! does not keep small reservations that would fit from going through. The price: a large
//! reservation can be overtaken by small ones and time out (the client retries), and while
//! a session waits, the bytes it already received are not counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

/// How long a submission waits for room before it is refused.
const WAIT: Duration = Duration::from_secs(10);

/// The process-wide budget; cheap to clone.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    total: u64,
    /// Most that one client address may hold while its messages arrive.
    share: u64,
    used: Mutex<Used>,
    freed: Notify,
}

#[derive(Debug, Default)]
struct Used {
    all: u64,
    /// Room held for arriving content, per client address.
    by_client: HashMap<IpAddr, u64>,
}

/// Room reserved in the budget; dropping it gives the room back.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Inner>,
    bytes: u64,
    /// The client whose arriving content this is, counted against its share.
    client: Option<IpAddr>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes == 0 {
            // Merged into another reservation (`MemoryBudget::grow`).
            return;
        }
        {
            let mut used = self.budget.lock();
            used.all = used.all.saturating_sub(self.bytes);
            if let Some(ip) = self.client {
                used.release_share(ip, self.bytes);
            }
        }
        self.budget.freed.notify_waiters();
        metrics::gauge!("bote_messages_in_flight_bytes").decrement(self.bytes as f64);
    }
}

impl Used {
    fn release_share(&mut self, ip: IpAddr, bytes: u64) {
        let left = self
            .by_client
            .get(&ip)
            .map_or(0, |b| b.saturating_sub(bytes));
        if left == 0 {
            self.by_client.remove(&ip);
        } else {
            self.by_client.insert(ip, left);
        }
    }
}

/// Whose room a reservation is, for a client's share: the address, and how much this
/// session holds already (its own room does not keep it from growing alone).
#[derive(Debug, Clone, Copy)]
struct Holder {
    ip: IpAddr,
    mine: u64,
}

/// The budget is used up for longer than a submission waits.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the gateway is busy with other large messages; try again in a few seconds")]
pub struct Busy;

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Used> {
        // Nothing under the lock can panic between two updates.
        self.used.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `bytes` clamped to the whole budget: a single message larger than the budget
    /// passes alone.
    fn clamp(&self, bytes: u64) -> u64 {
        bytes.min(self.total)
    }

    /// Stops counting `held` against its clients' shares (it stays in the budget).
    fn untag(&self, held: &mut [Reservation]) {
        let mut freed = false;
        {
            let mut used = self.lock();
            for r in held.iter_mut() {
                if let Some(ip) = r.client.take() {
                    used.release_share(ip, r.bytes);
                    freed = true;
                }
            }
        }
        if freed {
            self.freed.notify_waiters();
        }
    }

    /// Takes `bytes` now if they fit the budget and, for arriving content, the client's
    /// share (unless the client holds nothing else).
    fn try_take(self: &Arc<Self>, bytes: u64, holder: Option<Holder>) -> Option<Reservation> {
        let mut used = self.lock();
        if self.total - used.all < bytes {
            return None;
        }
        if let Some(Holder { ip, mine }) = holder {
            let theirs = used.by_client.get(&ip).copied().unwrap_or(0);
            if theirs > mine && theirs + bytes > self.share {
                return None;
            }
            *used.by_client.entry(ip).or_default() += bytes;
        }
        used.all += bytes;
        drop(used);
        metrics::gauge!("bote_messages_in_flight_bytes").increment(bytes as f64);
        Some(Reservation {
            budget: self.clone(),
            bytes,
            client: holder.map(|h| h.ip),
        })
    }

    /// Waits up to [`WAIT`] until `ready` (called under the lock with the bytes in use)
    /// gives an answer.
    async fn wait_until<T>(&self, mut ready: impl FnMut() -> Option<T>) -> Result<T, Busy> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            // Registered before the check, so a release between the two is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(answer) = ready() {
                return Ok(answer);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(Busy);
            }
        }
    }
}

impl MemoryBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> Self {
        let total = bytes.max(1);
        Self {
            inner: Arc::new(Inner {
                total,
                share: (total / 4).max(1),
                used: Mutex::default(),
                freed: Notify::new(),
            }),
        }
    }

    /// Bytes reserved now (what the `bote_messages_in_flight_bytes` gauge sums over all
    /// budgets of the process).
    pub fn in_use(&self) -> u64 {
        self.inner.lock().all
    }

    /// Waits until `bytes` would fit, and keeps nothing: the early answer to a client that
    /// announces a message's size before sending it.
    pub async fn await_room(&self, bytes: u64) -> Result<(), Busy> {
        let wanted = self.inner.clamp(bytes);
        let inner = &self.inner;
        inner
            .wait_until(|| (inner.total - inner.lock().all >= wanted).then_some(()))
            .await
    }

    /// Grows the room already `held` to `bytes` in all (clamped to the whole budget). What
    /// is missing is taken at once if it fits; otherwise the held room is given back and
    /// the whole amount waited for (see the module doc). On [`Busy`] nothing is held.
    pub async fn grow(&self, held: Vec<Reservation>, bytes: u64) -> Result<Vec<Reservation>, Busy> {
        self.grow_for(None, held, bytes).await
    }

    /// [`Self::grow`] for content still arriving from `client`, within its share.
    pub async fn grow_arriving(
        &self,
        client: IpAddr,
        held: Vec<Reservation>,
        bytes: u64,
    ) -> Result<Vec<Reservation>, Busy> {
        self.grow_for(Some(crate::client::network(client)), held, bytes)
            .await
    }

    async fn grow_for(
        &self,
        client: Option<IpAddr>,
        mut held: Vec<Reservation>,
        bytes: u64,
    ) -> Result<Vec<Reservation>, Busy> {
        if client.is_none() {
            // The content has arrived whole: it no longer counts against its client.
            self.inner.untag(&mut held);
        }
        let wanted = self.inner.clamp(bytes);
        let have: u64 = held.iter().map(|r| r.bytes).sum();
        if wanted <= have {
            return Ok(held);
        }
        let mine: u64 = held
            .iter()
            .filter(|r| client.is_some() && r.client == client)
            .map(|r| r.bytes)
            .sum();
        let holder = |mine| client.map(|ip| Holder { ip, mine });
        if let Some(mut more) = self.inner.try_take(wanted - have, holder(mine)) {
            // One reservation per session and client, however often it grows: each
            // release wakes every waiter.
            match held.iter_mut().find(|r| r.client == more.client) {
                Some(same) => same.bytes += std::mem::take(&mut more.bytes),
                None => held.push(more),
            }
            return Ok(held);
        }
        drop(held);
        let inner = &self.inner;
        let whole = inner
            .wait_until(|| inner.try_take(wanted, holder(0)))
            .await?;
        Ok(vec![whole])
    }
}

/// What a submission of `size` bytes to `recipients` holds at its peak: the content, the
/// signed message and the parsed view, and one ciphertext per copy (recipients and the
/// sender's).
pub fn footprint(size: u64, recipients: usize) -> u64 {
    size.saturating_mul(recipients as u64 + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;

    fn held(room: &[Reservation]) -> u64 {
        room.iter().map(|r| r.bytes).sum()
    }

    #[tokio::test(start_paused = true)]
    async fn over_the_budget_a_submission_waits_then_is_refused() {
        let budget = MemoryBudget::new(1024 * KIB);
        let first = budget.grow(Vec::new(), 600 * KIB).await.unwrap();
        assert!(
            budget.grow(Vec::new(), 600 * KIB).await.is_err(),
            "two would exceed the budget"
        );
        drop(first);
        let alone = budget.grow(Vec::new(), 5 * 1024 * KIB).await.unwrap();
        assert_eq!(held(&alone), 1024 * KIB, "larger than the budget: alone");
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.grow(Vec::new(), 1).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(alone);
        assert!(waiting.await.unwrap(), "room given back lets a waiter in");
    }

    #[tokio::test(start_paused = true)]
    async fn growing_takes_only_what_is_missing() {
        let budget = MemoryBudget::new(1024 * KIB);
        let arrived = budget.grow(Vec::new(), 300 * KIB).await.unwrap();
        let whole = budget.grow(arrived, 800 * KIB).await.unwrap();
        assert_eq!(held(&whole), 800 * KIB, "300 KiB held, 500 KiB added");
        assert!(
            budget.await_room(300 * KIB).await.is_err(),
            "only 224 KiB are free"
        );
        let same = budget.grow(whole, 700 * KIB).await.unwrap();
        assert_eq!(held(&same), 800 * KIB, "nothing to add, nothing given back");
    }

    #[tokio::test(start_paused = true)]
    async fn two_holders_growing_at_once_do_not_wait_for_each_other() {
        let budget = MemoryBudget::new(1024 * KIB);
        let a = budget.grow(Vec::new(), 400 * KIB).await.unwrap();
        let b = budget.grow(Vec::new(), 400 * KIB).await.unwrap();
        // Each needs 700 KiB; together they cannot both have it, one after the other can.
        let (budget_a, budget_b) = (budget.clone(), budget.clone());
        let a = tokio::spawn(async move {
            let room = budget_a.grow(a, 700 * KIB).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(room);
            Ok::<_, Busy>(())
        });
        let b = tokio::spawn(async move {
            let room = budget_b.grow(b, 700 * KIB).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(room);
            Ok::<_, Busy>(())
        });
        let started = tokio::time::Instant::now();
        assert!(a.await.unwrap().is_ok() && b.await.unwrap().is_ok());
        assert!(
            started.elapsed() < WAIT,
            "neither waited for the other's timeout"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_for_much_does_not_hold_up_a_little_that_fits() {
        let budget = MemoryBudget::new(1024 * KIB);
        let stalled = budget.grow(Vec::new(), 64 * KIB).await.unwrap();
        let greedy = tokio::spawn({
            let budget = budget.clone();
            async move { budget.await_room(1024 * KIB).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let started = tokio::time::Instant::now();
        let small = budget.grow(Vec::new(), 100 * KIB).await.unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO, "taken at once");
        drop((small, stalled));
        assert!(
            greedy.await.unwrap().is_ok(),
            "the whole budget is free again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_whole_message_no_longer_counts_against_its_clients_share() {
        let budget = MemoryBudget::new(1024 * KIB);
        let one: IpAddr = [192, 0, 2, 1].into();
        let arrived = budget
            .grow_arriving(one, Vec::new(), 200 * KIB)
            .await
            .unwrap();
        let processing = budget.grow(arrived, 500 * KIB).await.unwrap();
        let next = budget.grow_arriving(one, Vec::new(), 100 * KIB).await;
        assert!(next.is_ok(), "the first message is no longer arriving");
        drop(processing);
    }

    #[tokio::test(start_paused = true)]
    async fn room_held_without_the_client_does_not_widen_its_share() {
        let budget = MemoryBudget::new(1024 * KIB);
        let one: IpAddr = [192, 0, 2, 1].into();
        let _other_session = budget
            .grow_arriving(one, Vec::new(), 200 * KIB)
            .await
            .unwrap();
        let untagged = budget.grow(Vec::new(), 300 * KIB).await.unwrap();
        let grown = budget.grow_arriving(one, untagged, 400 * KIB).await;
        assert!(grown.is_err(), "300 KiB over two sessions, share 256 KiB");
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_holds_one_reservation_however_often_it_grows() {
        let budget = MemoryBudget::new(1024 * 1024 * KIB);
        let one: IpAddr = [192, 0, 2, 1].into();
        let mut room = Vec::new();
        for step in 1..=720 {
            room = budget
                .grow_arriving(one, room, step * 64 * KIB)
                .await
                .unwrap();
        }
        assert_eq!(held(&room), 720 * 64 * KIB);
        assert_eq!(room.len(), 1);
        drop(room);
        assert!(
            budget.await_room(1024 * 1024 * KIB).await.is_ok(),
            "all given back"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_client_holds_at_most_a_quarter_while_its_messages_arrive() {
        let budget = MemoryBudget::new(1024 * KIB);
        let (one, other): (IpAddr, IpAddr) = ([192, 0, 2, 1].into(), [192, 0, 2, 2].into());
        let first = budget
            .grow_arriving(one, Vec::new(), 200 * KIB)
            .await
            .unwrap();
        // A second session of the same client would take it past 256 KiB.
        assert!(
            budget
                .grow_arriving(one, Vec::new(), 100 * KIB)
                .await
                .is_err()
        );
        // Another client is not affected, and a session alone may grow past the share.
        let theirs = budget
            .grow_arriving(other, Vec::new(), 100 * KIB)
            .await
            .unwrap();
        drop(theirs);
        let alone = budget.grow_arriving(one, first, 600 * KIB).await.unwrap();
        assert_eq!(held(&alone), 600 * KIB);
        drop(alone);
        let again = budget.grow_arriving(one, Vec::new(), 100 * KIB).await;
        assert!(again.is_ok(), "the client's share was given back");
    }

    #[tokio::test(start_paused = true)]
    async fn the_addresses_of_one_ipv6_64_share_one_share() {
        let budget = MemoryBudget::new(1024 * KIB);
        let a: IpAddr = "2001:db8:1:2::a".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::b".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::c".parse().unwrap();
        let _first = budget
            .grow_arriving(a, Vec::new(), 200 * KIB)
            .await
            .unwrap();
        assert!(
            budget
                .grow_arriving(b, Vec::new(), 100 * KIB)
                .await
                .is_err()
        );
        assert!(budget.grow_arriving(c, Vec::new(), 100 * KIB).await.is_ok());
    }
}
