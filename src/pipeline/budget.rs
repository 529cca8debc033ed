//! The memory budget for messages in flight: a submission reserves about what it will hold
//! at its peak (the content, the signed message, one ciphertext per copy) before any work,
//! and keeps the reservation until its commit returns. Over the budget it waits a little,
//! then is refused as a temporary failure (the client retries), so parallel large messages
//! cannot exhaust memory (docs/decisions.md, "Bounded memory per request").
//!
//! Content still arriving (SMTP DATA) holds only the bytes that have arrived, and the
//! submission tops that up to its footprint once it is whole ([`MemoryBudget::top_up`]): a
//! client that announces a large message and then stalls holds no more than it sent.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a submission waits for room before it is refused.
const WAIT: Duration = Duration::from_secs(10);
/// Budget granularity.
const UNIT: u64 = 1024;

/// The process-wide budget; cheap to clone.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    units: u32,
}

/// Room reserved in the budget; dropping it gives the room back.
#[derive(Debug)]
pub struct Reservation {
    permit: OwnedSemaphorePermit,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        metrics::gauge!("bote_messages_in_flight_bytes").decrement(self.bytes as f64);
    }
}

/// The budget is used up for longer than a submission waits.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the gateway is busy with other large messages; try again in a few seconds")]
pub struct Busy;

impl MemoryBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> Self {
        let units = u32::try_from((bytes / UNIT).max(1)).unwrap_or(u32::MAX);
        Self {
            permits: Arc::new(Semaphore::new(units as usize)),
            units,
        }
    }

    /// Reserves `bytes`, waiting for room up to a few seconds. A single message larger
    /// than the whole budget is let through alone.
    pub async fn reserve(&self, bytes: u64) -> Result<Reservation, Busy> {
        self.acquire(self.units_of(bytes), bytes).await
    }

    /// Waits, as [`Self::reserve`] does, until `bytes` would fit, and keeps nothing: the
    /// early answer to a client that announces a message's size before sending it.
    pub async fn await_room(&self, bytes: u64) -> Result<(), Busy> {
        self.reserve(bytes).await.map(drop)
    }

    /// Tops the room already `held` up to `bytes` in all (clamped to the whole budget, as
    /// [`Self::reserve`] is), waiting as it does; on [`Busy`] the held room is given back.
    pub async fn top_up(
        &self,
        mut held: Vec<Reservation>,
        bytes: u64,
    ) -> Result<Vec<Reservation>, Busy> {
        let have: u32 = held.iter().map(|r| r.units()).sum();
        let want = self.units_of(bytes);
        if want > have {
            let more = want - have;
            held.push(self.acquire(more, u64::from(more) * UNIT).await?);
        }
        Ok(held)
    }

    fn units_of(&self, bytes: u64) -> u32 {
        u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.units)
    }

    async fn acquire(&self, units: u32, bytes: u64) -> Result<Reservation, Busy> {
        let acquire = self.permits.clone().acquire_many_owned(units);
        match tokio::time::timeout(WAIT, acquire).await {
            Ok(Ok(permit)) => {
                metrics::gauge!("bote_messages_in_flight_bytes").increment(bytes as f64);
                Ok(Reservation { permit, bytes })
            }
            // Timed out, or (never: the semaphore is not closed) closed.
            _ => Err(Busy),
        }
    }
}

impl Reservation {
    fn units(&self) -> u32 {
        // At most the budget's units, which fit a u32 (`MemoryBudget::new`).
        u32::try_from(self.permit.num_permits()).unwrap_or(u32::MAX)
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

    #[tokio::test(start_paused = true)]
    async fn over_the_budget_a_submission_waits_then_is_refused() {
        let budget = MemoryBudget::new(1024 * 1024);
        let first = budget.reserve(600 * 1024).await.unwrap();
        let second = budget.reserve(600 * 1024).await;
        assert!(second.is_err(), "two would exceed the budget");
        drop(first);
        let alone = budget.reserve(5 * 1024 * 1024).await;
        assert!(
            alone.is_ok(),
            "a message larger than the budget passes alone"
        );
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(1).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(alone);
        assert!(waiting.await.unwrap(), "room given back lets a waiter in");
    }

    #[tokio::test(start_paused = true)]
    async fn a_top_up_takes_only_what_is_missing_and_gives_all_back_when_busy() {
        let budget = MemoryBudget::new(1024 * 1024);
        let arrived = budget.reserve(300 * 1024).await.unwrap();
        let whole = budget.top_up(vec![arrived], 800 * 1024).await.unwrap();
        let total: u32 = whole.iter().map(Reservation::units).sum();
        assert_eq!(total, 800, "300 KiB held, 500 KiB added");
        assert!(
            budget.await_room(300 * 1024).await.is_err(),
            "only 224 KiB are free"
        );
        drop(whole);
        let arrived = budget.reserve(300 * 1024).await.unwrap();
        let other = budget.reserve(600 * 1024).await.unwrap();
        assert!(budget.top_up(vec![arrived], 800 * 1024).await.is_err());
        assert!(
            budget.await_room(400 * 1024).await.is_ok(),
            "the refused top-up gave its 300 KiB back"
        );
        drop(other);
        let huge = budget.top_up(Vec::new(), 5 * 1024 * 1024).await.unwrap();
        assert_eq!(huge.iter().map(Reservation::units).sum::<u32>(), 1024);
    }
}
