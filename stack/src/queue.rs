//! Bringing up one RX/TX queue pair with its pools as a [`QueueDevice`]:
//! the same few steps for an application, a test and the far end of the
//! pair wire.

use crate::device::{DeviceConfig, QueueDevice};
use driver::{BufPool, Device, Igb, RxConfig, RxRing, SplitMode, TxConfig, TxRing};
use pipeline::{PagePool, PagePoolConfig, Pool};
use std::sync::Arc;

/// Ring and pool sizes of a queue pair.
#[derive(Clone, Copy, Debug)]
pub struct QueueSetup {
    pub queue: u32,
    pub split: SplitMode,
    /// RX descriptors (power of two, 8..=4096).
    pub rx_ring: usize,
    /// Payload buffer bytes and the headroom in front of each.
    pub payload_buf: usize,
    pub headroom: usize,
    /// Payload pages in the RX pool.
    pub rx_pages: usize,
    /// TX descriptors and TX buffers (4 KiB each).
    pub tx_ring: usize,
    pub tx_bufs: usize,
    pub device: DeviceConfig,
}

impl Default for QueueSetup {
    fn default() -> Self {
        QueueSetup {
            queue: 0,
            split: SplitMode::On,
            rx_ring: 512,
            payload_buf: 2048,
            headroom: 256,
            rx_pages: 2048,
            tx_ring: 512,
            tx_bufs: 1024,
            device: DeviceConfig::default(),
        }
    }
}

/// The queue pair's device type with the project's page pools.
pub type PoolDevice<H> = QueueDevice<PagePool, H, PagePool>;

/// Creates the RX payload pool, the TX pool and both rings on `igb`'s
/// queue `setup.queue`, with `hdrs` as the header pool. Receive and
/// transmit are not switched on (`Igb::enable_rx` / `enable_tx`).
pub fn build<H: BufPool>(
    dev: Arc<dyn Device>,
    igb: &Igb,
    setup: &QueueSetup,
    hdrs: H,
) -> Result<PoolDevice<H>, String> {
    let pages = PagePool::new(
        igb.dma(),
        PagePoolConfig {
            buffers: setup.rx_pages,
            buf_len: setup.payload_buf,
            headroom: setup.headroom,
            ..PagePoolConfig::default()
        },
    )
    .map_err(|e| format!("RX page pool: {e}"))?;
    let tx_pool = PagePool::new(
        igb.dma(),
        PagePoolConfig {
            buffers: setup.tx_bufs,
            buf_len: 4096,
            headroom: 0,
            ..PagePoolConfig::default()
        },
    )
    .map_err(|e| format!("TX pool: {e}"))?;
    // A coalesced packet carries up to 64 KiB: one descriptor per payload
    // buffer plus the header's.
    let max_descs = 65536 / setup.payload_buf + 2;
    let rx = RxRing::new(
        dev.clone(),
        igb.dma(),
        RxConfig {
            queue: setup.queue,
            ring_size: setup.rx_ring,
            split: setup.split,
            max_descs_per_packet: max_descs,
        },
        pages,
        hdrs,
    )
    .map_err(|e| format!("RX ring: {e}"))?;
    let tx = TxRing::new(
        dev,
        igb.dma(),
        TxConfig {
            queue: setup.queue,
            ring_size: setup.tx_ring,
        },
        tx_pool,
    )
    .map_err(|e| format!("TX ring: {e}"))?;
    Ok(QueueDevice::new(rx, tx, setup.device))
}

/// Buffers of a queue pair not back in their pools after
/// [`QueueDevice::shutdown`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Leaks {
    pub pages: usize,
    pub headers: usize,
    pub tx_buffers: usize,
}

/// Stops both rings and audits the three pools.
pub fn shutdown<H: Pool>(dev: PoolDevice<H>) -> (Leaks, Option<String>) {
    let (mut rx, mut tx, err) = dev.shutdown();
    let (pages, hdrs) = rx.pools();
    let leaks = Leaks {
        pages: pages.audit().lent,
        headers: hdrs.audit().lent,
        tx_buffers: tx.pool().audit().lent,
    };
    (leaks, err.map(|e| e.to_string()))
}
