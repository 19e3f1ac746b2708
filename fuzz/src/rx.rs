//! The `rx_writeback` harness: the driver's RX ring on the simulated NIC,
//! its write-backs forged from the input.

use crate::Input;

use driver::desc::RxWriteBack;
use driver::{Igb, IgbConfig, RxBatch, RxConfig, RxRing, SplitMode};
use hw_sim::frames;
use hw_sim::wire::QueueWire;
use hw_sim::{SimConfig, SimEngine, SimNic};
use pipeline::{HeaderPool, HeaderPoolConfig, PagePool, PagePoolConfig};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// How to rewrite one write-back.
#[derive(Clone, Copy, Debug)]
struct Forge {
    /// Bit 0/1/2/3: touch info / rss / status / len; bit 4: XOR instead of
    /// replace; bit 5: hold the descriptor back (DD clear) until released.
    mode: u8,
    wb: [u32; 4],
}

#[derive(Default)]
struct HookState {
    forges: VecDeque<Forge>,
    /// Slot the device writes next (its head when the step started, plus
    /// the write-backs of this step so far).
    next_slot: usize,
    mask: usize,
    /// Write-backs written by the device.
    calls: u64,
    /// EOP write-backs made visible to the driver (DD set).
    eops: u64,
    /// Held-back descriptors: (slot, the write-back to publish, DD set).
    held: Vec<(usize, RxWriteBack)>,
}

impl HookState {
    fn apply(&mut self, wb: &mut RxWriteBack) {
        let slot = self.next_slot;
        self.next_slot = (slot + 1) & self.mask;
        self.calls += 1;
        if let Some(f) = self.forges.pop_front() {
            let mut raw = wb.to_raw();
            for (i, v) in f.wb.iter().enumerate() {
                if f.mode & (1 << i) != 0 {
                    raw[i] = if f.mode & 0x10 != 0 { raw[i] ^ v } else { *v };
                }
            }
            // DD stays set: a write-back without DD is a descriptor the
            // device still owns; that case is the hold-back below.
            raw[2] |= 1;
            *wb = RxWriteBack {
                info: driver::desc::RxWbInfo(raw[0]),
                rss: raw[1],
                status: driver::desc::RxWbStatus(raw[2]),
                len: driver::desc::RxWbLen(raw[3]),
            };
            if f.mode & 0x20 != 0 {
                self.held.push((slot, *wb));
                wb.status.set_dd(false);
                return;
            }
        }
        if wb.status.eop() {
            self.eops += 1;
        }
    }
}

struct Rig {
    _nic: Arc<SimNic>,
    engine: SimEngine,
    igb: Igb,
    ring: RxRing<PagePool, HeaderPool>,
    wire: QueueWire,
    batch: RxBatch,
    hook: Arc<Mutex<HookState>>,
    pkt_buf: usize,
    hdr_buf: usize,
}

fn rig(cfg: u8) -> Rig {
    let split = match cfg & 3 {
        0 => SplitMode::Off,
        2 => SplitMode::Always,
        _ => SplitMode::On,
    };
    let hdr = if cfg & 4 != 0 { 64 } else { 256 };
    let payload = if cfg & 8 != 0 { 1024 } else { 2048 };
    let gro = if cfg & 0x10 != 0 { 8 } else { 1 };
    let ring_size = [16, 32, 64, 16][(cfg >> 5 & 3) as usize];
    let wire = QueueWire::new();
    let (nic, mut engine) = SimNic::new(
        SimConfig {
            gro,
            ..SimConfig::default()
        },
        Box::new(wire.clone()),
    );
    let igb = Igb::init(nic.clone(), IgbConfig::default()).expect("igb init");
    let pages = PagePool::new(
        igb.dma(),
        PagePoolConfig {
            buffers: 128,
            buf_len: payload,
            headroom: 256,
            cache_size: 32,
            bulk: 16,
            checked: true,
            ..Default::default()
        },
    )
    .expect("page pool");
    let hdrs = HeaderPool::new(
        igb.dma(),
        HeaderPoolConfig {
            buffers: 128,
            slot: hdr,
            ..Default::default()
        },
    )
    .expect("header pool");
    let ring = RxRing::new(
        nic.clone(),
        igb.dma(),
        RxConfig {
            queue: 0,
            ring_size,
            split,
            max_descs_per_packet: 12,
        },
        pages,
        hdrs,
    )
    .expect("rx ring");
    igb.enable_rx();
    let hook = Arc::new(Mutex::new(HookState {
        mask: ring_size - 1,
        ..HookState::default()
    }));
    let h = hook.clone();
    engine.set_rx_wb_hook(Some(Box::new(move |_q, wb: &mut RxWriteBack| {
        h.lock().unwrap().apply(wb)
    })));
    let batch = ring.new_batch(ring_size);
    Rig {
        _nic: nic,
        engine,
        igb,
        ring,
        wire,
        batch,
        hook,
        pkt_buf: payload,
        hdr_buf: hdr,
    }
}

impl Rig {
    fn step(&mut self, n: usize) {
        let head = self.ring.hw_head() as usize;
        self.hook.lock().unwrap().next_slot = head;
        self.engine.step(n);
    }

    /// Polls once and checks every packet handed out; returns copies.
    fn poll(&mut self, budget: usize) -> Vec<Vec<u8>> {
        self.ring.poll(&mut self.batch, budget);
        let mut out = Vec::new();
        for p in self.batch.iter() {
            let segs: usize = p.segments().map(|s| s.len()).sum();
            assert_eq!(p.len(), p.header().len() + segs, "packet length");
            assert!(p.header().len() <= self.hdr_buf, "header beyond its slot");
            for s in p.segments() {
                assert!(s.len() <= self.pkt_buf, "segment beyond its buffer");
            }
            out.push(p.to_vec());
        }
        out
    }

    fn release(&mut self, which: usize) {
        let mut h = self.hook.lock().unwrap();
        if h.held.is_empty() {
            return;
        }
        let i = which % h.held.len();
        let (slot, wb) = h.held.remove(i);
        if wb.status.eop() {
            h.eops += 1;
        }
        drop(h);
        self.ring
            .descriptor(slot)
            .expect("slot in ring")
            .set_raw(wb.to_raw());
    }
}

fn frame(kind: u8, len: u16, seed: u8) -> Vec<u8> {
    let len = len as usize;
    match kind % 6 {
        0 => frames::udp_frame(len.clamp(60, 9216), seed),
        1 => frames::tcp_frame(len.clamp(60, 9216), seed, (seed % 11) as usize * 4),
        2 => frames::non_ip_frame(len.clamp(14, 9216), seed),
        3 => frames::icmp_frame(len.clamp(60, 9216), seed),
        4 => frames::udp6_frame(len.clamp(70, 9216), seed),
        _ => frames::udp_frame(60 + len % 200, seed),
    }
}

/// The `rx_writeback` harness (see the target for what it asserts).
pub fn run_rx(data: &[u8]) {
    let mut inp = Input(data);
    let mut r = rig(inp.u8());
    let mut ops = 0;
    while !inp.is_empty() && ops < 256 {
        ops += 1;
        match inp.u8() % 7 {
            0 => {
                let (k, len, seed) = (inp.u8(), inp.u16(), inp.u8());
                r.wire.push(frame(k, len, seed));
            }
            1 => {
                let mode = inp.u8();
                let wb = [inp.u32(), inp.u32(), inp.u32(), inp.u32()];
                r.hook.lock().unwrap().forges.push_back(Forge { mode, wb });
            }
            2 => {
                let n = inp.u8() as usize % 8 + 1;
                r.step(n);
            }
            3 => {
                let budget = inp.u8() as usize % 16 + 1;
                r.poll(budget);
            }
            4 => {
                let which = inp.u8() as usize;
                r.release(which);
            }
            5 => {
                if inp.u8() & 1 == 0 {
                    r.ring.recycle(&mut r.batch);
                } else {
                    // The foreign return path: the batch dropped elsewhere.
                    let b = std::mem::replace(&mut r.batch, r.ring.new_batch(8));
                    drop(b);
                }
            }
            _ => {
                let n = inp.u8() as usize % 4 + 1;
                r.step(n);
                r.poll(64);
                r.ring.recycle(&mut r.batch);
            }
        }
    }

    // The forgeries end: every held descriptor completes, the wire drains.
    r.hook.lock().unwrap().forges.clear();
    while !r.hook.lock().unwrap().held.is_empty() {
        r.release(0);
    }
    r.step(64);
    r.poll(64);
    r.ring.recycle(&mut r.batch);
    // The ring keeps working: the first sentinel ends whatever frame was
    // left open, the second must arrive as it was sent (the device may
    // hold a frame for a step, so this looks for it over several rounds).
    let a = frames::udp_frame(300, 0xA1);
    let b = frames::udp_frame(700, 0xB2);
    r.wire.push(a);
    r.wire.push(b.clone());
    let mut last = None;
    let mut idle = 0;
    for _ in 0..1_000 {
        r.step(16);
        let got = r.poll(64);
        r.ring.recycle(&mut r.batch);
        if got.is_empty() && r.ring.hw_head() as usize == r.ring.next_clean() {
            idle += 1;
        } else {
            idle = 0;
        }
        if let Some(f) = got.into_iter().last() {
            last = Some(f);
        }
        // Done once B came and nothing moved for a few rounds.
        if idle >= 4 && last.as_deref() == Some(&b[..]) {
            break;
        }
    }
    if std::env::var_os("RX_DEBUG").is_some() {
        eprintln!(
            "stats {:?} head {} clean {} tail {} pending {} nic {:?}",
            r.ring.stats(),
            r.ring.hw_head(),
            r.ring.next_clean(),
            r.ring.tail(),
            r.wire.pending(),
            r._nic.stats()
        );
    }
    assert_eq!(last.as_deref(), Some(&b[..]), "ring stopped working");

    // Every EOP the driver consumed closed one frame: delivered or counted.
    let st = *r.ring.stats();
    let h = r.hook.lock().unwrap();
    assert_eq!(st.descriptors, h.calls, "descriptors consumed");
    assert_eq!(
        st.frames_handled(),
        h.eops,
        "frames delivered + dropped vs EOP write-backs: {st:?}"
    );
    drop(h);

    r.ring.recycle(&mut r.batch);
    r.igb.disable();
    r.ring.stop().expect("stop");
    let (pages, hdrs) = r.ring.pools();
    assert_eq!(pages.audit().lent, 0, "payload pages leaked");
    assert_eq!(hdrs.audit().lent, 0, "header slots leaked");
}
