//! The CPU pool for signing and encryption: blocking threads, at most one job per core.
//!
//! `spawn_blocking` alone would start hundreds of threads under load (one per waiting
//! request), which then fight over two cores and starve the writer and the network tasks.
//! A semaphore sized to the machine keeps crypto at full speed and everything else
//! responsive; excess requests wait their turn asynchronously.
//!
//! Small jobs skip the pool ([`run_costed`]): the hand-off to a blocking thread and back is
//! two thread wake-ups and context switches, about as dear as signing one evidence record
//! or sealing a short message for one recipient (docs/decisions.md, "Fourth round").

use std::sync::OnceLock;

use tokio::sync::Semaphore;

fn permits() -> &'static Semaphore {
    static POOL: OnceLock<Semaphore> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Semaphore::new(cores)
    })
}

/// Runs CPU-bound `f` on a blocking thread once a core is free.
pub async fn run<F, T>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // The semaphore is never closed, so acquiring cannot fail; fall back to running anyway.
    let _permit = permits().acquire().await.ok();
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Jobs estimated below this run in place on the async worker: well within what tokio
/// allows between two awaits, and cheaper than the hand-off.
const INLINE_MICROS: u64 = 500;

/// A rough CPU estimate of a job, from what was measured on a 2-core reference machine:
/// about 50 µs per public-key operation (Ed25519 signature, X25519 agreement with its
/// ephemeral key) and 8 µs per KiB parsed, signed or encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cost(u64);

impl Cost {
    /// `key_operations` signatures or key agreements over `bytes` of content.
    pub fn of(key_operations: usize, bytes: u64) -> Self {
        let keys = u64::try_from(key_operations).unwrap_or(u64::MAX);
        Self(keys.saturating_mul(50).saturating_add(bytes / 1024 * 8))
    }

    fn is_small(self) -> bool {
        self.0 < INLINE_MICROS
    }
}

/// Runs `f` in place if `cost` says it is small, else on the pool as [`run`] does.
pub async fn run_costed<F, T>(cost: Cost, f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if cost.is_small() { f() } else { run(f).await }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_jobs_run_in_place_large_ones_on_the_pool() {
        let here = std::thread::current().id();
        let on = |cost| run_costed(cost, || std::thread::current().id());
        // One evidence record; a 1 KiB message to one recipient (signature, PKESK, record).
        assert_eq!(on(Cost::of(1, 0)).await, here);
        assert_eq!(on(Cost::of(3, 1024)).await, here);
        // A 100 KiB message, or a short one to 100 recipients, would hold the worker.
        assert_ne!(on(Cost::of(3, 100 * 1024)).await, here);
        assert_ne!(on(Cost::of(201, 1024)).await, here);
        // Overflowing estimates saturate instead of wrapping to small.
        assert_ne!(on(Cost::of(usize::MAX, u64::MAX)).await, here);
    }
}
