//! The memory budget for messages in flight: a submission reserves about what it will hold
//! at its peak (the content, the signed message, one ciphertext per copy) before any work,
//! and keeps the reservation until its commit returns. Over the budget it waits a little,
//! then is refused as a temporary failure (the client retries), so parallel large messages
//! cannot exhaust memory (docs/decisions.md, "Bounded memory per request").

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
    _permit: OwnedSemaphorePermit,
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
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.units);
        let acquire = self.permits.clone().acquire_many_owned(units);
        match tokio::time::timeout(WAIT, acquire).await {
            Ok(Ok(permit)) => {
                metrics::gauge!("bote_messages_in_flight_bytes").increment(bytes as f64);
                Ok(Reservation {
                    _permit: permit,
                    bytes,
                })
            }
            // Timed out, or (never: the semaphore is not closed) closed.
            _ => Err(Busy),
        }
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
}
