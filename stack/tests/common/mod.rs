//! A simulated NIC with the driver, pools and a `QueueDevice` on it, for
//! the stack's integration tests.

#![allow(dead_code)]

use driver::{Igb, IgbConfig, RxConfig, RxRing, SplitMode, TxConfig, TxRing};
use hw_sim::{SimConfig, SimEngine, SimNic, Wire};
use pipeline::{HeaderPool, HeaderPoolConfig, PagePool, PagePoolConfig};
use stack::{DeviceConfig, QueueDevice};
use std::sync::Arc;

pub type Dev = QueueDevice<PagePool, HeaderPool, PagePool>;

#[derive(Clone, Copy, Debug)]
pub struct NicSetup {
    pub mac: [u8; 6],
    pub split: SplitMode,
    pub gro: u32,
    pub payload: usize,
    pub mtu: usize,
    pub ring: usize,
    pub pages: usize,
}

impl Default for NicSetup {
    fn default() -> Self {
        NicSetup {
            mac: [0x02, 0, 0, 0, 0, 0x01],
            split: SplitMode::On,
            gro: 1,
            payload: 2048,
            mtu: 1500,
            ring: 256,
            pages: 1024,
        }
    }
}

pub struct Nic {
    pub sim: Arc<SimNic>,
    pub engine: SimEngine,
    pub igb: Igb,
    pub dev: Dev,
}

pub fn nic(s: NicSetup, wire: Box<dyn Wire>) -> Nic {
    let (sim, engine) = SimNic::new(
        SimConfig {
            mac: s.mac,
            gro: s.gro,
            ..SimConfig::default()
        },
        wire,
    );
    let dev: Arc<dyn driver::Device> = sim.clone();
    let igb = Igb::init(dev.clone(), IgbConfig::default()).expect("igb init");
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
            slot: 256,
            ..Default::default()
        },
    )
    .expect("header pool");
    let tx_pool = PagePool::new(
        igb.dma(),
        PagePoolConfig {
            buffers: 512,
            buf_len: 4096,
            headroom: 0,
            ..Default::default()
        },
    )
    .expect("tx pool");
    let rx = RxRing::new(
        dev.clone(),
        igb.dma(),
        RxConfig {
            queue: 0,
            ring_size: s.ring,
            split: s.split,
            max_descs_per_packet: 64,
        },
        pages,
        hdrs,
    )
    .expect("rx ring");
    let tx = TxRing::new(
        dev,
        igb.dma(),
        TxConfig {
            queue: 0,
            ring_size: 512,
        },
        tx_pool,
    )
    .expect("tx ring");
    igb.enable_rx();
    igb.enable_tx();
    let dev = QueueDevice::new(
        rx,
        tx,
        DeviceConfig {
            mtu: s.mtu,
            ..DeviceConfig::default()
        },
    );
    Nic {
        sim,
        engine,
        igb,
        dev,
    }
}

impl Nic {
    /// Stops the NIC and proves every buffer came home.
    pub fn stop_and_audit(self) {
        self.igb.disable();
        let (mut rx, mut tx) = self.dev.shutdown().expect("shutdown");
        let (pages, hdrs) = rx.pools();
        assert_eq!(pages.audit().lent, 0, "payload pages leaked");
        assert_eq!(hdrs.audit().lent, 0, "header slots leaked");
        assert_eq!(tx.pool().audit().lent, 0, "TX buffers leaked");
    }
}
