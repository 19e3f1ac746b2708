//! The unmodified driver rings against the simulated NIC: header split in
//! every mode, jumbo frames, ring wrap-around, every batch size, bad
//! write-backs, DMA faults and MAC loopback. Every test ends by proving that
//! every payload page and header slot is back in its pool.

mod common;

use common::RxSetup;
use driver::desc::RxWriteBack;
use driver::{Device, DropReason, Igb, RxBatch, RxRing, SplitMode, TxBuf, TxConfig, TxRing};
use hw_sim::frames;
use hw_sim::wire::QueueWire;
use hw_sim::{SimConfig, SimEngine, SimNic};
use pipeline::{HeaderPool, PagePool, PagePoolConfig};
use std::sync::Arc;

/// A device brought up by the driver, one RX ring, the engine stepped by
/// the test, and a handle to push frames onto the wire.
struct Rig {
    nic: Arc<SimNic>,
    engine: SimEngine,
    igb: Igb,
    ring: RxRing<PagePool, HeaderPool>,
    wire: QueueWire,
    batch: RxBatch,
}

struct RigCfg {
    split: SplitMode,
    ring: usize,
    hdr: usize,
    payload: usize,
    pages: usize,
    loopback: bool,
    /// No 802.3x pause: a full ring makes the device miss frames (MPC).
    lossy: bool,
}

impl Default for RigCfg {
    fn default() -> Self {
        RigCfg {
            split: SplitMode::On,
            ring: 64,
            hdr: 256,
            payload: 2048,
            pages: 256,
            loopback: false,
            lossy: false,
        }
    }
}

fn rig(c: RigCfg) -> Rig {
    let wire = QueueWire::new();
    rig_on(c, Box::new(wire.clone()), wire)
}

/// A rig whose frames come from `source` (`wire` is then just a handle).
fn rig_on(c: RigCfg, source: Box<dyn hw_sim::Wire>, wire: QueueWire) -> Rig {
    let (nic, engine) = SimNic::new(
        SimConfig {
            flow_control: !c.lossy,
            ..SimConfig::default()
        },
        source,
    );
    let setup = RxSetup {
        split: c.split,
        ring: c.ring,
        hdr: c.hdr,
        payload: c.payload,
        pages: c.pages,
        max_descs_per_packet: 16,
        mac_loopback: c.loopback,
    };
    let (igb, ring) = common::bring_up(nic.clone(), &setup);
    let batch = ring.new_batch(c.ring);
    Rig {
        nic,
        engine,
        igb,
        ring,
        wire,
        batch,
    }
}

impl Rig {
    /// Steps the device and polls until `n` frames came out (or a bound is hit).
    fn receive(&mut self, n: usize, budget: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        for _ in 0..100_000 {
            if got.len() >= n {
                break;
            }
            let want = budget.min(n - got.len());
            self.engine.step(want);
            self.check_ring_invariant();
            self.ring.poll(&mut self.batch, want);
            got.extend(self.batch.iter().map(|p| p.to_vec()));
            self.ring.recycle(&mut self.batch);
            self.check_ring_invariant();
        }
        got
    }

    /// The device head always lies in [next_clean, tail]: the driver never
    /// posts past the head, and one slot stays empty.
    fn check_ring_invariant(&self) {
        let n = self.ring.ring_size();
        let head = self.ring.hw_head() as usize;
        let clean = self.ring.next_clean();
        let tail = self.ring.tail();
        let posted = (tail + n - clean) % n;
        let consumed = (head + n - clean) % n;
        assert!(posted < n, "ring full: tail caught up with head");
        assert!(
            consumed <= posted,
            "device head {head} outside [next_clean {clean}, tail {tail}]"
        );
    }

    /// Stops everything and proves every page and header slot came home.
    fn finish(mut self) {
        self.ring.recycle(&mut self.batch);
        common::stop_and_audit(&self.igb, &mut self.ring);
    }
}

fn udp(len: usize, seed: u8) -> Vec<u8> {
    frames::udp_frame(len, seed)
}

#[test]
fn split_modes_reassemble_every_kind_of_frame() {
    let kinds: Vec<(&str, Vec<u8>)> = vec![
        ("udp 242", udp(242, 1)),
        ("udp 1442", udp(1442, 2)),
        ("tcp 1514", frames::tcp_frame(1514, 3, 0)),
        ("tcp options", frames::tcp_frame(600, 4, 40)),
        ("non-ip 100", frames::non_ip_frame(100, 5)),
        ("non-ip 1500", frames::non_ip_frame(1500, 6)),
        ("icmp 300", frames::icmp_frame(300, 7)),
        ("ipv6 udp 700", frames::udp6_frame(700, 8)),
        ("udp 60", udp(60, 9)),
        ("jumbo udp 9216", udp(9216, 10)),
        ("jumbo tcp 9000", frames::tcp_frame(9000, 11, 12)),
    ];
    for split in [SplitMode::Off, SplitMode::On, SplitMode::Always] {
        // A 64 B header buffer makes TCP-with-options headers overflow (HBO).
        for hdr in [64, 256] {
            let mut r = rig(RigCfg {
                split,
                hdr,
                ..Default::default()
            });
            for (_, f) in &kinds {
                r.wire.push(f.clone());
            }
            let got = r.receive(kinds.len(), 8);
            assert_eq!(got.len(), kinds.len(), "split {split} hdr {hdr}");
            for ((name, want), got) in kinds.iter().zip(&got) {
                assert_eq!(got, want, "{name}: split {split} hdr {hdr}");
            }
            assert_eq!(r.ring.stats().drops_total(), 0);
            r.finish();
        }
    }
}

#[test]
fn header_lands_in_header_buffer_as_qemu_does() {
    let mut r = rig(RigCfg {
        split: SplitMode::On,
        ..Default::default()
    });
    r.wire.push(udp(1442, 1));
    r.wire.push(frames::non_ip_frame(100, 2));
    r.engine.step(8);
    r.ring.poll(&mut r.batch, 8);
    let p: Vec<_> = r
        .batch
        .iter()
        .map(|p| {
            (
                p.header().len(),
                p.segments().map(|s| s.len()).collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(p, vec![(42, vec![1400]), (0, vec![100])]);
    r.finish();

    let mut r = rig(RigCfg {
        split: SplitMode::Always,
        ..Default::default()
    });
    r.wire.push(udp(242, 1));
    r.engine.step(8);
    r.ring.poll(&mut r.batch, 8);
    let p = r.batch.get(0).expect("one frame");
    assert_eq!((p.header().len(), p.segments().len()), (242, 0));
    r.finish();
}

#[test]
fn hbo_frames_are_counted_and_delivered_whole() {
    let mut r = rig(RigCfg {
        split: SplitMode::On,
        hdr: 64,
        ..Default::default()
    });
    let f = frames::tcp_frame(400, 1, 40); // 14 + 20 + 60 = 94 B of headers
    r.wire.push(f.clone());
    let got = r.receive(1, 8);
    assert_eq!(got, vec![f]);
    assert_eq!(r.ring.stats().hbo, 1);
    r.finish();
}

#[test]
fn ring_wraps_over_many_laps() {
    let mut r = rig(RigCfg {
        ring: 8,
        pages: 32,
        ..Default::default()
    });
    let frames: Vec<Vec<u8>> = (0..1000)
        .map(|i| udp(60 + (i * 37) % 1400, i as u8))
        .collect();
    let mut got = Vec::new();
    for chunk in frames.chunks(50) {
        for f in chunk {
            r.wire.push(f.clone());
        }
        got.extend(r.receive(chunk.len(), 3));
    }
    assert_eq!(got, frames);
    r.finish();
}

#[test]
fn every_batch_size_delivers_everything_in_order() {
    let ring = 32;
    for budget in 1..=ring {
        let mut r = rig(RigCfg {
            ring,
            pages: 128,
            ..Default::default()
        });
        let frames: Vec<Vec<u8>> = (0..3 * ring).map(|i| udp(64 + i, i as u8)).collect();
        for f in &frames {
            r.wire.push(f.clone());
        }
        let got = r.receive(frames.len(), budget);
        assert_eq!(got, frames, "budget {budget}");
        r.finish();
    }
}

#[test]
fn pool_exhaustion_runs_the_ring_short_then_recovers() {
    // Just enough pages for the ring. The application holds every page it
    // received: refill comes up short (alloc_empty), the device runs out of
    // descriptors and misses frames (MPC); RX never blocks, and everything
    // flows again once the pages come back.
    let mut r = rig(RigCfg {
        ring: 16,
        pages: 16,
        lossy: true,
        ..Default::default()
    });
    for i in 0..40 {
        r.wire.push(udp(100, i));
    }
    r.engine.step(40);
    let mut held = r.ring.new_batch(16);
    assert_eq!(r.ring.poll(&mut held, 16), 15);
    assert!(r.ring.stats().refill_short > 0);
    assert!(r.ring.pools().0.stats().alloc_empty > 0);
    let missed = r.nic.stats().rx_missed;
    assert_eq!(missed, 25, "the 25 frames that found no descriptor");
    // More traffic while the pages are held: the one page left in the pool
    // takes one frame, the rest are missed, and polling never blocks.
    for i in 0..10 {
        r.wire.push(udp(100, i));
    }
    r.engine.step(10);
    assert_eq!(r.ring.poll(&mut r.batch, 16), 1);
    r.ring.recycle(&mut r.batch);
    assert_eq!(r.nic.stats().rx_missed, missed + 9);
    // Pages come back: the ring refills and new frames arrive.
    r.ring.recycle(&mut held);
    r.engine.step(0);
    r.ring.poll(&mut r.batch, 16);
    for i in 0..30 {
        r.wire.push(udp(100 + i, i as u8));
    }
    let got = r.receive(30, 8);
    assert_eq!(got.len(), 30);
    assert_eq!(
        r.nic.stats().rx_missed,
        missed + 9,
        "nothing missed once pages are back"
    );
    r.finish();
}

fn forge(r: &mut Rig, hook: impl FnMut(u32, &mut RxWriteBack) + Send + 'static) {
    r.engine.set_rx_wb_hook(Some(Box::new(hook)));
}

#[test]
fn bad_write_backs_are_dropped_counted_and_recycled() {
    type Forge = fn(&mut RxWriteBack);
    let cases: Vec<(DropReason, Forge)> = vec![
        (DropReason::RxError, |wb| wb.status.set_rxe(true)),
        (DropReason::IpChecksum, |wb| {
            wb.status.set_ipcs(true);
            wb.status.set_ipe(true)
        }),
        (DropReason::L4Checksum, |wb| {
            wb.status.set_l4cs(true);
            wb.status.set_tcpe(true)
        }),
        (DropReason::PktLenOverflow, |wb| wb.len.set_pkt_len(0xFFFF)),
        (DropReason::HdrLenOverflow, |wb| {
            wb.info.set_sph(true);
            wb.info.set_hdr_len(1000)
        }),
        (DropReason::ZeroLength, |wb| {
            wb.info.set_hdr_len(0);
            wb.len.set_pkt_len(0)
        }),
    ];
    for (reason, f) in cases {
        let mut r = rig(RigCfg::default());
        let mut forged = false;
        forge(&mut r, move |_, wb| {
            if !forged && wb.status.eop() {
                forged = true;
                f(wb);
            }
        });
        let good = udp(500, 2);
        r.wire.push(udp(500, 1));
        r.wire.push(good.clone());
        let got = r.receive(1, 8);
        assert_eq!(
            got,
            vec![good],
            "{reason:?}: the next frame must still arrive intact"
        );
        assert_eq!(r.ring.stats().drop_count(reason), 1, "{reason:?}");
        assert_eq!(r.ring.stats().drops_total(), 1, "{reason:?}");
        r.finish();
    }
}

#[test]
fn a_frame_that_never_ends_is_dropped_as_no_eop() {
    let mut r = rig(RigCfg::default());
    // The next 40 descriptors lose EOP: the driver gives up after
    // max_descs_per_packet (16), discards the rest of the runaway frame up to
    // the next EOP (the first good frame's), and resynchronises after it.
    let mut left = 40;
    forge(&mut r, move |_, wb| {
        if left > 0 {
            left -= 1;
            wb.status.set_eop(false);
        }
    });
    for i in 0..40 {
        r.wire.push(udp(300, i));
    }
    r.wire.push(udp(800, 98));
    let good = udp(800, 99);
    r.wire.push(good.clone());
    let got = r.receive(1, 8);
    assert_eq!(got, vec![good]);
    assert_eq!(r.ring.stats().drop_count(DropReason::NoEop), 1);
    r.finish();
}

#[test]
fn dma_to_an_unmapped_iova_is_refused() {
    let mut r = rig(RigCfg::default());
    // Point the next descriptor's payload buffer at an IOVA nobody mapped.
    let i = r.ring.next_clean();
    r.ring
        .descriptor(i)
        .expect("slot")
        .write_rx_read(0xdead_0000, 0);
    r.wire.push(udp(500, 1));
    r.engine.step(1);
    assert_eq!(r.nic.stats().dma_faults, 1);
    assert_eq!(r.ring.poll(&mut r.batch, 8), 0);
    r.finish();
}

#[test]
fn mac_loopback_round_trip() {
    let mut r = rig(RigCfg {
        loopback: true,
        ..Default::default()
    });
    let dev: Arc<dyn Device> = r.nic.clone();
    let tx_pool = PagePool::new(
        r.igb.dma(),
        PagePoolConfig {
            buffers: 64,
            buf_len: 2048,
            headroom: 0,
            ..Default::default()
        },
    )
    .expect("tx pool");
    let mut tx = TxRing::new(
        dev,
        r.igb.dma(),
        TxConfig {
            queue: 0,
            ring_size: 64,
        },
        tx_pool,
    )
    .expect("tx ring");
    r.igb.enable_tx();
    let frames: Vec<Vec<u8>> = (0..40).map(|i| udp(60 + i * 30, i as u8)).collect();
    let mut bufs = Vec::new();
    for f in &frames {
        let mut b = tx.alloc().expect("tx buffer");
        b.as_mut_slice(f.len()).copy_from_slice(f);
        bufs.push(TxBuf {
            buf: b,
            len: f.len() as u16,
            eop: true,
        });
    }
    assert_eq!(tx.send(&mut bufs), 40);
    let got = r.receive(40, 16);
    assert_eq!(got, frames);
    for _ in 0..10 {
        r.engine.step(0);
        tx.clean();
    }
    tx.stop().expect("tx stop");
    assert_eq!(tx.pool().audit().lent, 0);
    assert_eq!(r.nic.stats().loopback_frames, 40);
    r.finish();
}

fn jumbo_mix(seed: u64, count: Option<u64>) -> hw_sim::wire::GenConfig {
    use hw_sim::wire::{FrameSize, GenConfig, Proto};
    GenConfig {
        frame_size: FrameSize::Range { min: 60, max: 9216 },
        flows: 8,
        proto: Proto::Mixed,
        seed,
        count,
        ..GenConfig::default()
    }
}

#[test]
fn generator_frames_arrive_byte_for_byte_in_every_mode() {
    use hw_sim::wire::Generator;
    let cfg = jumbo_mix(7, None);
    let expected = Generator::new(cfg.clone()).expect("gen").expected(300);
    for split in [SplitMode::Off, SplitMode::On, SplitMode::Always] {
        for payload in [1024, 3072] {
            let gen = Generator::new(cfg.clone()).expect("gen");
            let c = RigCfg {
                split,
                payload,
                hdr: 128,
                ring: 128,
                pages: 512,
                ..Default::default()
            };
            let mut r = rig_on(c, Box::new(gen), QueueWire::new());
            let got = r.receive(expected.len(), 32);
            assert_eq!(got.len(), expected.len(), "split {split} payload {payload}");
            assert!(
                got == expected,
                "split {split} payload {payload}: frames differ"
            );
            r.finish();
        }
    }
}

#[test]
fn big_batches_and_recycles_after_stop_lose_no_buffer() {
    // The ring keeps a recycled batch's buffers as spares for its next
    // refill, up to a ring's worth, and gives the rest to the pools. A
    // batch kept over several polls holds more than that; a batch recycled
    // after the ring stopped must go to the pools, since nothing will post
    // it again.
    let mut r = rig(RigCfg {
        ring: 8,
        pages: 64,
        ..Default::default()
    });
    let frames: Vec<Vec<u8>> = (0..40).map(|i| udp(100 + i, i as u8)).collect();
    for f in &frames {
        r.wire.push(f.clone());
    }
    let mut big = r.ring.new_batch(8);
    for _ in 0..1000 {
        if big.len() >= 20 {
            break;
        }
        r.engine.step(4);
        r.ring.poll(&mut big, 4);
        r.check_ring_invariant();
    }
    let mut got: Vec<Vec<u8>> = big.iter().map(|p| p.to_vec()).collect();
    assert!(got.len() >= 20, "{} frames in one batch", got.len());
    r.ring.recycle(&mut big);
    let rest = r.receive(frames.len() - got.len(), 4);
    got.extend(rest);
    assert_eq!(got, frames);
    for i in 0..5 {
        r.wire.push(udp(300, i));
    }
    r.engine.step(5);
    let mut held = r.ring.new_batch(8);
    assert_eq!(r.ring.poll(&mut held, 8), 5);
    r.igb.disable();
    r.ring.stop().expect("stop");
    r.ring.recycle(&mut held);
    r.finish();
}

#[test]
fn dropping_a_batch_elsewhere_returns_its_buffers() {
    let mut r = rig(RigCfg::default());
    for i in 0..10 {
        r.wire.push(udp(200, i));
    }
    r.engine.step(10);
    let mut b = r.ring.new_batch(16);
    assert_eq!(r.ring.poll(&mut b, 16), 10);
    std::thread::spawn(move || drop(b)).join().expect("thread");
    r.finish();
}

#[test]
fn threaded_device_publishes_write_backs_with_release_ordering() {
    // The device on its own thread, the driver polling on this one: every
    // frame must arrive intact, which only holds if DD is published after
    // the data (release) and read before it (acquire).
    use hw_sim::wire::Generator;
    let gen = Generator::new(jumbo_mix(11, Some(20_000))).expect("gen");
    let expected = gen.expected(20_000);
    let mut r = rig_on(RigCfg::default(), Box::new(gen), QueueWire::new());
    let Rig {
        nic,
        engine,
        igb,
        mut ring,
        wire,
        mut batch,
    } = r;
    let sim = engine.spawn().expect("spawn");
    let mut got = 0usize;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while got < expected.len() && std::time::Instant::now() < deadline {
        ring.poll(&mut batch, 16);
        for p in batch.iter() {
            assert!(p.to_vec() == expected[got], "frame {got} differs");
            got += 1;
        }
        ring.recycle(&mut batch);
    }
    r = Rig {
        nic,
        engine: sim.stop(),
        igb,
        ring,
        wire,
        batch,
    };
    assert_eq!(got, expected.len());
    r.finish();
}

#[test]
fn wb_observer_sees_every_write_back_the_device_stored() {
    use std::sync::Mutex;
    let mut r = rig(RigCfg {
        payload: 1024,
        ..RigCfg::default()
    });
    let stored = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = stored.clone();
    forge(&mut r, move |_, wb| s.lock().unwrap().push(wb.to_raw()));
    let o = seen.clone();
    assert!(r
        .ring
        .set_wb_observer(Some(Box::new(move |i, wb| {
            o.lock().unwrap().push((i, wb.to_raw()))
        })))
        .is_none());
    // Single- and multi-descriptor frames (2500 B over 1 KiB buffers).
    let frames: Vec<Vec<u8>> = [60, 2500, 300, 1514, 2500]
        .iter()
        .enumerate()
        .map(|(i, &n)| udp(n, i as u8))
        .collect();
    for f in &frames {
        r.wire.push(f.clone());
    }
    let got = r.receive(frames.len(), 4);
    assert_eq!(got, frames);
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let stored = std::mem::take(&mut *stored.lock().unwrap());
    assert_eq!(seen.len(), 1 + 3 + 1 + 2 + 3);
    assert_eq!(seen.iter().map(|s| s.1).collect::<Vec<_>>(), stored);
    // Descriptor indices in ring order; DD set on every one, EOP on frame ends.
    for (k, (i, raw)) in seen.iter().enumerate() {
        assert_eq!(*i as usize, k % r.ring.ring_size());
        assert_eq!(raw[2] & 1, 1);
    }
    assert_eq!(
        seen.iter().filter(|s| s.1[2] & 2 != 0).count(),
        frames.len()
    );
    // Removing it hands it back; nothing is observed afterwards.
    assert!(r.ring.set_wb_observer(None).is_some());
    r.finish();
}
