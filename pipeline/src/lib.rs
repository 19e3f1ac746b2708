//! The data-path plumbing between the driver rings and the stack: DMA buffer
//! pools, and (as the project grows) packet batches, stages and per-queue
//! threads.
//!
//! - [`pool`]: [`PagePool`] (payload pages) and [`HeaderPool`] (packed header
//!   slots), the [`driver::BufPool`] implementations the RX rings borrow
//!   from. Modelled on Linux page_pool: an owner-only cache, a shared ring for
//!   returns from other threads, and `ethtool -S`-style counters.
//! - [`affinity`]: pinning the current thread to a core.

pub mod affinity;
pub mod pool;

pub use affinity::pin_current_thread;
pub use pool::{
    DmaPool, HeaderPool, HeaderPoolConfig, PagePool, PagePoolConfig, PoolAudit, PoolError, PoolLayout, PoolStats,
};
