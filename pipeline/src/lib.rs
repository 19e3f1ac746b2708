//! The data-path plumbing between the driver rings and the stack: DMA buffer
//! pools, and (as the project grows) packet batches, stages and per-queue
//! threads.
//!
//! - [`pool`]: [`PagePool`] (payload pages) and [`HeaderPool`] (packed header
//!   slots), the [`driver::BufPool`] implementations the RX rings borrow
//!   from. Modelled on Linux page_pool: an owner-only cache, a shared ring, a
//!   batched return path (one lock per batch) for other threads, and `ethtool -S`-style counters.
//! - [`hdrpool`]: [`StrategyHeaderPool`], a header pool whose return path
//!   is chosen at run time ([`HdrPoolStrategy`]: locked, batched, packed,
//!   ring), for measuring and removing header-pool lock contention.
//! - [`lockstats`]: [`TimedMutex`] and [`LockStats`], the lock figures
//!   (acquisitions, failed try-locks, wait / hold histograms) every pool
//!   reports.
//! - [`port`]: [`Port`], one NIC (simulator or VFIO) opened from a spec
//!   string, its queues handed out, stopped in order and audited.
//! - [`stage`]: the application handoff thread with batched returns, and
//!   one pinned thread per queue.
//! - [`affinity`]: pinning the current thread to a core; [`os`]: a clean
//!   stop on SIGINT / SIGTERM, a thread's CPU time, the resident set.
//!
//! Tests: unit and proptest tests next to each module (`cargo test -p
//! pipeline`); loom model tests of the cross-thread protocols (owner cache
//! with foreign returns, packed page last release, ring), about 15 s
//! including the build:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p pipeline --release --lib loom
//! ```

pub mod affinity;
pub mod hdrpool;
pub mod lockstats;
pub mod os;
pub mod pool;
pub mod port;
pub mod stage;
mod sync;

#[cfg(all(test, loom))]
mod loom_tests;

pub use affinity::pin_current_thread;
pub use hdrpool::{HdrPoolStrategy, StrategyHeaderPool, StrategyPoolConfig};
pub use lockstats::{LockStats, TimedMutex};
pub use pool::{
    DmaPool, ForeignReturn, HeaderPool, HeaderPoolConfig, PagePool, PagePoolConfig, PoolAudit,
    PoolError, PoolLayout, PoolStats, Returner,
};
pub use port::{DeviceSpec, Port, PortConfig, PortError, PortReport, Queue};
