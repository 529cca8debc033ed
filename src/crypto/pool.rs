//! The CPU pool for signing and encryption: blocking threads, at most one job per core.
//!
//! `spawn_blocking` alone would start hundreds of threads under load (one per waiting
//! request), which then fight over two cores and starve the writer and the network tasks.
//! A semaphore sized to the machine keeps crypto at full speed and everything else
//! responsive; excess requests wait their turn asynchronously.

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
