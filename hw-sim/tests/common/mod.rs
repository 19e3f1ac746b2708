//! Shared by the integration tests and the examples: bring the unmodified
//! driver up on a simulated NIC with one RX ring (or several) and its pools.
//! (Examples include this file with `#[path]`.)

#![allow(dead_code)]

use driver::{Device, Igb, IgbConfig, RxConfig, RxRing, SplitMode};
use pipeline::{HdrPoolStrategy, HeaderPool, HeaderPoolConfig, PagePool, PagePoolConfig};
use std::sync::Arc;

/// The RX side of a test or benchmark rig.
#[derive(Clone, Copy, Debug)]
pub struct RxSetup {
    pub split: SplitMode,
    /// Descriptors in the ring.
    pub ring: usize,
    /// Header slot bytes.
    pub hdr: usize,
    /// Payload buffer bytes; the headroom is what is left of the page, up to 256.
    pub payload: usize,
    /// Buffers in each pool.
    pub pages: usize,
    pub max_descs_per_packet: usize,
    pub mac_loopback: bool,
}

impl Default for RxSetup {
    fn default() -> Self {
        RxSetup {
            split: SplitMode::On,
            ring: 64,
            hdr: 256,
            payload: 2048,
            pages: 256,
            max_descs_per_packet: 16,
            mac_loopback: false,
        }
    }
}

/// Resets and brings up `dev`, creates the pools and the RX ring on queue 0
/// and turns receive on.
pub fn bring_up(dev: Arc<dyn Device>, s: &RxSetup) -> (Igb, RxRing<PagePool, HeaderPool>) {
    let (igb, mut rings) = bring_up_queues(dev, s, 1);
    (igb, rings.pop().expect("one ring"))
}

/// Like [`bring_up`] with `queues` RX rings on queues `0..queues`, each with
/// its own pools, then receive on.
pub fn bring_up_queues(
    dev: Arc<dyn Device>,
    s: &RxSetup,
    queues: u32,
) -> (Igb, Vec<RxRing<PagePool, HeaderPool>>) {
    let igb = Igb::init(
        dev.clone(),
        IgbConfig {
            mac_loopback: s.mac_loopback,
            ..IgbConfig::default()
        },
    )
    .expect("igb init");
    let rings = (0..queues).map(|q| new_ring(&dev, &igb, s, q)).collect();
    igb.enable_rx();
    (igb, rings)
}

/// The pools and the RX ring of queue `queue`.
fn new_ring(
    dev: &Arc<dyn Device>,
    igb: &Igb,
    s: &RxSetup,
    queue: u32,
) -> RxRing<PagePool, HeaderPool> {
    let pages = PagePool::new(
        igb.dma(),
        PagePoolConfig {
            buffers: s.pages,
            buf_len: s.payload,
            headroom: 256.min(4096 - s.payload),
            ..Default::default()
        },
    )
    .expect("page pool");
    let hdrs = HeaderPool::new(
        igb.dma(),
        HeaderPoolConfig {
            // Slot by slot reuse: pool exhaustion tests count header slots
            // like pages (`packed` reuses a page only once it is whole).
            strategy: HdrPoolStrategy::Ring,
            buffers: s.pages,
            slot: s.hdr,
            ..Default::default()
        },
    )
    .expect("header pool");
    let cfg = RxConfig {
        queue,
        ring_size: s.ring,
        split: s.split,
        max_descs_per_packet: s.max_descs_per_packet,
    };
    RxRing::new(dev.clone(), igb.dma(), cfg, pages, hdrs).expect("rx ring")
}

/// Stops receive and the ring and proves every page and header slot came home.
pub fn stop_and_audit(igb: &Igb, ring: &mut RxRing<PagePool, HeaderPool>) {
    igb.disable();
    ring.stop().expect("stop");
    let (pages, hdrs) = ring.pools();
    assert_eq!(pages.audit().lent, 0, "payload pages leaked");
    assert_eq!(hdrs.audit().lent, 0, "header slots leaked");
}

/// [`stop_and_audit`] for several rings: receive off, every ring stopped,
/// every page and header slot of every ring home.
pub fn stop_and_audit_all(igb: &Igb, rings: &mut [RxRing<PagePool, HeaderPool>]) {
    igb.disable();
    for (q, ring) in rings.iter_mut().enumerate() {
        ring.stop().expect("stop");
        let (pages, hdrs) = ring.pools();
        assert_eq!(pages.audit().lent, 0, "queue {q}: payload pages leaked");
        assert_eq!(hdrs.audit().lent, 0, "queue {q}: header slots leaked");
    }
}
