//! A simulated NIC with the driver, pools and a `QueueDevice` on it, for
//! the stack's integration tests.

#![allow(dead_code)]

use driver::{Igb, IgbConfig, SplitMode};
use hw_sim::{SimConfig, SimEngine, SimNic, Wire};
use pipeline::{HeaderPool, HeaderPoolConfig};
use stack::queue::{self, PoolDevice, QueueSetup};
use stack::DeviceConfig;
use std::sync::Arc;

pub type Dev = PoolDevice<HeaderPool>;

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
    let hdrs = HeaderPool::new(
        igb.dma(),
        HeaderPoolConfig {
            buffers: s.pages,
            slot: 256,
            ..Default::default()
        },
    )
    .expect("header pool");
    let setup = QueueSetup {
        split: s.split,
        rx_ring: s.ring,
        payload_buf: s.payload,
        headroom: 256.min(4096 - s.payload),
        rx_pages: s.pages,
        device: DeviceConfig {
            mtu: s.mtu,
            ..DeviceConfig::default()
        },
        ..QueueSetup::default()
    };
    let dev = queue::build(dev, &igb, &setup, hdrs).expect("queue pair");
    igb.enable_rx();
    igb.enable_tx();
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
        let (leaks, err) = queue::shutdown(self.dev);
        assert_eq!(err, None);
        assert_eq!(leaks, queue::Leaks::default(), "buffers leaked");
    }
}
