//! The data-path plumbing between the driver rings and the stack: DMA buffer
//! pools, and (as the project grows) packet batches, stages and per-queue
//! threads.
//!
//! - [`pool`]: [`PagePool`] (payload pages), modelled on Linux page_pool:
//!   an owner-only cache, a shared ring, a batched return path (one lock
//!   per batch) for other threads, and `ethtool -S`-style counters; the
//!   [`Pool`] trait (counters, lock figures, audit) every pool implements.
//! - [`hdrpool`]: [`HeaderPool`] (header slots packed in pages), whose
//!   return path is a config field ([`HdrPoolStrategy`]: `packed` in
//!   production; locked, batched, ring for measuring header-pool lock
//!   contention).
//!
//! Both are the [`driver::BufPool`]s the rings borrow from. The [`driver::Buf`]s
//! they lend carry their length and headroom and give bounded byte views, and
//! a pool's memory is never freed while one of its buffers is lent out.
//! - [`lockstats`]: [`TimedMutex`] and [`LockStats`], the lock figures
//!   (acquisitions, failed try-locks, wait / hold histograms) every pool
//!   reports.
//! - [`port`]: [`Port`], one NIC (simulator, VFIO or AF_XDP) opened from a
//!   spec string, its queues handed out, stopped in order and audited.
//! - [`rings`]: a queue's RX and TX rings, igb or AF_XDP, behind one set
//!   of methods.
//! - [`stage`]: the application handoff thread with batched returns, and
//!   one pinned thread per queue.
//! - [`affinity`]: pinning the current thread to a core; [`os`]: a clean
//!   stop on SIGINT / SIGTERM, thread and process CPU time, the resident
//!   set.
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
pub mod rings;
pub mod stage;
mod sync;

#[cfg(all(test, loom))]
mod loom_tests;

pub use affinity::pin_current_thread;
pub use hdrpool::{HdrPoolStrategy, HeaderPool, HeaderPoolConfig};
pub use lockstats::{LockStats, TimedMutex};
pub use pool::{
    ForeignReturn, PagePool, PagePoolConfig, Pool, PoolAudit, PoolError, PoolLayout, PoolStats,
    Returner,
};
pub use port::{DeviceSpec, Port, PortConfig, PortError, PortReport, Queue};
pub use rings::{RxQueue, TxQueue};
