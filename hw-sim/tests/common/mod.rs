//! Shared by the integration tests and the examples: bring the unmodified
//! driver up on a simulated NIC with one RX ring and its two pools.
//! (Examples include this file with `#[path]`.)

#![allow(dead_code)]

use driver::{Device, Igb, IgbConfig, RxConfig, RxRing, SplitMode};
use pipeline::{HeaderPool, HeaderPoolConfig, PagePool, PagePoolConfig};
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
    let igb = Igb::init(
        dev.clone(),
        IgbConfig {
            mac_loopback: s.mac_loopback,
            ..IgbConfig::default()
        },
    )
    .expect("igb init");
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
            buffers: s.pages,
            slot: s.hdr,
            ..Default::default()
        },
    )
    .expect("header pool");
    let cfg = RxConfig {
        queue: 0,
        ring_size: s.ring,
        split: s.split,
        max_descs_per_packet: s.max_descs_per_packet,
    };
    let ring = RxRing::new(dev, igb.dma(), cfg, pages, hdrs).expect("rx ring");
    igb.enable_rx();
    (igb, ring)
}

/// Stops receive and the ring and proves every page and header slot came home.
pub fn stop_and_audit(igb: &Igb, ring: &mut RxRing<PagePool, HeaderPool>) {
    igb.disable();
    ring.stop().expect("stop");
    let (pages, hdrs) = ring.pools();
    assert_eq!(pages.audit().lent, 0, "payload pages leaked");
    assert_eq!(hdrs.audit().lent, 0, "header slots leaked");
}
