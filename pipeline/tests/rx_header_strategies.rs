//! Every header pool strategy works as the RX ring's header pool: coalesced
//! (GRO-style) frames of several descriptors deliver the first header,
//! the ring recycles the dummies through the owner path, the application
//! gives packets back through the foreign path, and every slot comes home.
//!
//! The device is a register echo (enough for queue bring-up); the test
//! writes the write-backs itself, as the device would.

use driver::desc::RxWriteBack;
use driver::{
    BufPool, Device, DmaError, DmaMapper, DmaSpace, RegisterIo, RxConfig, RxRing, SplitMode,
};
use pipeline::{HdrPoolStrategy, HeaderPool, HeaderPoolConfig, PagePool, PagePoolConfig};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct EchoDev {
    regs: Mutex<HashMap<u32, u32>>,
}

impl RegisterIo for EchoDev {
    fn read32(&self, offset: u32) -> u32 {
        *self.regs.lock().unwrap().get(&offset).unwrap_or(&0)
    }
    fn write32(&self, offset: u32, value: u32) {
        self.regs.lock().unwrap().insert(offset, value);
    }
}

impl DmaMapper for EchoDev {
    unsafe fn map(&self, _: u64, _: *mut u8, _: usize) -> Result<(), DmaError> {
        Ok(())
    }
    fn unmap(&self, _: u64, _: usize) -> Result<(), DmaError> {
        Ok(())
    }
}

impl Device for EchoDev {
    fn name(&self) -> String {
        "echo".into()
    }
}

fn wb(first: bool, eop: bool, hdr_len: u32, pkt_len: u32) -> RxWriteBack {
    let mut w = RxWriteBack::zeroed();
    if first {
        w.info.set_sph(true);
        w.info.set_hdr_len(hdr_len);
    }
    w.status.set_dd(true);
    w.status.set_eop(eop);
    w.len.set_pkt_len(pkt_len);
    w
}

#[test]
fn every_strategy_serves_the_rx_ring_with_gro_frames() {
    for strategy in HdrPoolStrategy::ALL {
        let dev = Arc::new(EchoDev::default());
        let space = DmaSpace::new(dev.clone());
        let pages = PagePool::new(
            &space,
            PagePoolConfig {
                buffers: 512,
                ..Default::default()
            },
        )
        .unwrap();
        let hdrs = HeaderPool::new(
            &space,
            HeaderPoolConfig {
                strategy,
                buffers: 512,
                slot: 64,
                batch: 16,
            },
        )
        .unwrap();
        let cfg = RxConfig {
            ring_size: 64,
            split: SplitMode::On,
            ..Default::default()
        };
        let mut ring = RxRing::new(dev.clone(), &space, cfg, pages, hdrs).unwrap();
        assert_eq!(ring.posted(), 63);
        let gro = 4;
        let mut batch = ring.new_batch(16);
        let mut delivered = 0;
        for round in 0..200 {
            // The device completes three coalesced frames of `gro` descriptors.
            for f in 0..3 {
                for k in 0..gro {
                    let i = (ring.next_clean() + f * gro + k) % 64;
                    let w = wb(k == 0, k == gro - 1, 54, 1000);
                    ring.descriptor(i).unwrap().write_rx_wb(&w);
                }
            }
            delivered += ring.poll(&mut batch, 64);
            assert_eq!(batch.len(), 3, "{strategy} round {round}");
            for p in batch.iter() {
                assert_eq!(p.header().len(), 54);
                assert_eq!(p.segment_bufs().len(), gro);
            }
            // The application returns the packets from another thread.
            let mut full = std::mem::replace(&mut batch, ring.new_batch(16));
            std::thread::spawn(move || full.give_back()).join().unwrap();
        }
        let s = *ring.stats();
        assert_eq!((delivered, s.packets), (600, 600), "{strategy}");
        assert_eq!(s.dummy_headers, 600 * (gro as u64 - 1), "{strategy}");
        assert_eq!(s.refill_short, 0, "{strategy}");
        ring.stop().unwrap();
        let (pages, hdrs) = ring.pools();
        assert_eq!(pages.audit().lent, 0, "{strategy}");
        assert_eq!(
            hdrs.audit().lent,
            0,
            "{strategy}: every header slot came back"
        );
        assert_eq!(
            hdrs.stats().recycle_ring,
            600,
            "{strategy}: real headers via the foreign path"
        );
        assert_eq!(hdrs.stats().recycle_ring_full, 0);
        let _ = hdrs.buf_len();
    }
}
