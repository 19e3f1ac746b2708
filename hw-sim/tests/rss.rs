//! Receive side scaling end to end: the unmodified driver brings up four RX
//! rings, enables RSS, and every frame of many UDP and TCP flows lands on
//! the queue the redirection table names for its Toeplitz hash (computed
//! here with `driver::rss`, independently of the simulator's own hash), with
//! the hash in write-back dword 1, each flow on one queue in order, every
//! queue used. Without RSS everything stays on queue 0. Coalescing keeps
//! working per queue. Every page and header slot comes home.

mod common;

use common::RxSetup;
use driver::desc::{RSS_TYPE_IPV4, RSS_TYPE_IPV4_TCP, RSS_TYPE_IPV4_UDP, RSS_TYPE_NONE};
use driver::regs::{reta, rssrk, MRQC, MRQC_ENABLE_RSS, RXCSUM, RXCSUM_PCSD};
use driver::rss::{self, RssConfig, DEFAULT_KEY, RSS_FIELDS_TCP, RSS_FIELDS_TCP_UDP};
use driver::{Igb, RegisterIo, RxRing};
use hw_sim::frames::{self, Builder, Tcp, L3, L4};
use hw_sim::wire::QueueWire;
use hw_sim::{SimConfig, SimEngine, SimNic};
use pipeline::{HeaderPool, PagePool};
use std::collections::HashMap;
use std::sync::Arc;

const QUEUES: u32 = 4;

struct Rig {
    nic: Arc<SimNic>,
    engine: SimEngine,
    igb: Igb,
    rings: Vec<RxRing<PagePool, HeaderPool>>,
    wire: QueueWire,
}

/// One received frame: its queue, bytes and RSS write-back fields.
#[derive(Clone, Debug)]
struct Got {
    queue: u32,
    frame: Vec<u8>,
    rss: u32,
    rss_type: u8,
}

fn rig(sim: SimConfig) -> Rig {
    let wire = QueueWire::new();
    let (nic, engine) = SimNic::new(sim, Box::new(wire.clone()));
    let (igb, rings) = common::bring_up_queues(nic.clone(), &RxSetup::default(), QUEUES);
    Rig {
        nic,
        engine,
        igb,
        rings,
        wire,
    }
}

impl Rig {
    /// Steps the device and polls every ring until `n` frames came out.
    fn receive(&mut self, n: usize) -> Vec<Got> {
        let mut got = Vec::new();
        let mut batches: Vec<_> = self.rings.iter().map(|r| r.new_batch(64)).collect();
        for _ in 0..10_000 {
            if got.len() >= n {
                break;
            }
            self.engine.step(32);
            for (q, (ring, batch)) in self.rings.iter_mut().zip(&mut batches).enumerate() {
                ring.poll(batch, 64);
                got.extend(batch.iter().map(|p| Got {
                    queue: q as u32,
                    frame: p.to_vec(),
                    rss: p.meta().rss(),
                    rss_type: p.meta().rss_type(),
                }));
                ring.recycle(batch);
            }
        }
        got
    }

    fn finish(mut self) {
        common::stop_and_audit_all(&self.igb, &mut self.rings);
    }
}

/// Flow `f`'s builder: its own source address.
fn builder(f: u16) -> Builder {
    Builder {
        src_ip: [10, 1, (f >> 8) as u8, f as u8],
        dst_ip: [192, 168, 7, 1],
        ..Builder::default()
    }
}

/// Frame `seq` of flow `f`: even flows UDP, odd flows TCP; the payload
/// names the flow and the sequence number.
fn flow_frame(f: u16, seq: u16) -> Vec<u8> {
    let mut payload = frames::payload_pattern(100 + (f as usize * 7) % 300, f as u8);
    payload[..2].copy_from_slice(&f.to_be_bytes());
    payload[2..4].copy_from_slice(&seq.to_be_bytes());
    let b = Builder {
        ip_id: seq,
        ..builder(f)
    };
    let sport = 20_000 + f * 13;
    if f.is_multiple_of(2) {
        b.udp(sport, 53, &payload)
    } else {
        b.tcp(
            &Tcp {
                src_port: sport,
                dst_port: 443,
                seq: 1 + seq as u32 * 1000,
                ..Tcp::default()
            },
            &payload,
        )
    }
}

/// Hash and type of a frame as the driver's Toeplitz computes them under
/// the given MRQC fields; `None` for frames RSS does not hash.
fn expected_hash(frame: &[u8], fields: u32) -> Option<(u32, u32)> {
    let p = frames::parse(frame);
    if p.l3 != L3::Ipv4 {
        return None;
    }
    let ip = |o: usize| -> [u8; 4] { frame[o..o + 4].try_into().unwrap() };
    let (src, dst) = (ip(p.l3_off + 12), ip(p.l3_off + 16));
    let port = |o: usize| u16::from_be_bytes([frame[o], frame[o + 1]]);
    let four = match p.l4 {
        L4::Tcp if fields & driver::regs::MRQC_RSS_FIELD_IPV4_TCP != 0 => Some(RSS_TYPE_IPV4_TCP),
        L4::Udp if fields & driver::regs::MRQC_RSS_FIELD_IPV4_UDP != 0 => Some(RSS_TYPE_IPV4_UDP),
        _ => None,
    };
    Some(match four {
        Some(ty) => (
            rss::toeplitz(
                &DEFAULT_KEY,
                &rss::ipv4_l4_input(src, dst, port(p.l4_off), port(p.l4_off + 2)),
            ),
            ty,
        ),
        None => (
            rss::toeplitz(&DEFAULT_KEY, &rss::ipv4_input(src, dst)),
            RSS_TYPE_IPV4,
        ),
    })
}

fn flow_and_seq(g: &Got) -> (u16, u16) {
    let p = frames::parse(&g.frame);
    let d = &g.frame[p.l5_off..];
    (
        u16::from_be_bytes([d[0], d[1]]),
        u16::from_be_bytes([d[2], d[3]]),
    )
}

#[test]
fn rss_steers_every_flow_to_its_toeplitz_queue() {
    const FLOWS: u16 = 96;
    const PER_FLOW: u16 = 5;
    let mut r = rig(SimConfig::default());
    r.igb.enable_rss(QUEUES, &DEFAULT_KEY).expect("enable rss");
    let cfg = RssConfig::new(QUEUES, &DEFAULT_KEY);

    let mut sent = Vec::new();
    for seq in 0..PER_FLOW {
        for f in 0..FLOWS {
            sent.push(flow_frame(f, seq));
        }
    }
    // Frames RSS cannot hash: queue 0, no hash, no type.
    for i in 0..4 {
        sent.push(frames::non_ip_frame(200, i));
    }
    for f in &sent {
        r.wire.push(f.clone());
    }
    let got = r.receive(sent.len());
    assert_eq!(got.len(), sent.len(), "every frame delivered");

    let mut flow_queue: HashMap<u16, u32> = HashMap::new();
    let mut next_seq: HashMap<u16, u16> = HashMap::new();
    let mut per_queue = [0usize; QUEUES as usize];
    let mut non_ip = 0;
    for g in &got {
        per_queue[g.queue as usize] += 1;
        let Some((hash, ty)) = expected_hash(&g.frame, cfg.fields) else {
            assert_eq!((g.queue, g.rss, g.rss_type), (0, 0, RSS_TYPE_NONE as u8));
            non_ip += 1;
            continue;
        };
        assert_eq!(g.rss, hash, "dword 1 carries the Toeplitz hash");
        assert_eq!(g.rss_type as u32, ty);
        assert_eq!(g.queue, cfg.queue_of(hash), "queue = RETA[hash & 127]");
        assert_eq!(g.queue, hash & 127 & (QUEUES - 1), "round-robin RETA");
        let (f, seq) = flow_and_seq(g);
        assert_eq!(g.frame, flow_frame(f, seq), "frame intact");
        let q = *flow_queue.entry(f).or_insert(g.queue);
        assert_eq!(q, g.queue, "flow {f} stays on one queue");
        let want = next_seq.entry(f).or_insert(0);
        assert_eq!(seq, *want, "flow {f} in order");
        *want += 1;
    }
    assert_eq!(non_ip, 4);
    assert_eq!(flow_queue.len(), FLOWS as usize);
    assert!(next_seq.values().all(|&n| n == PER_FLOW));
    for (q, n) in per_queue.iter().enumerate() {
        assert!(*n > 0, "queue {q} got no frame: {per_queue:?}");
    }
    // Both protocols were spread: UDP and TCP flows on more than one queue.
    for parity in [0, 1] {
        let queues: std::collections::HashSet<_> = flow_queue
            .iter()
            .filter(|(f, _)| *f % 2 == parity)
            .map(|(_, q)| *q)
            .collect();
        assert_eq!(queues.len(), QUEUES as usize, "parity {parity}");
    }
    assert_eq!(r.nic.stats().rx_frames, sent.len() as u64);
    for ring in &r.rings {
        assert_eq!(ring.stats().drops_total(), 0);
    }
    r.finish();
}

#[test]
fn rss_off_keeps_everything_on_queue_zero() {
    let mut r = rig(SimConfig::default());
    let sent: Vec<_> = (0..40).map(|f| flow_frame(f, 3)).collect();
    for f in &sent {
        r.wire.push(f.clone());
    }
    let got = r.receive(sent.len());
    assert_eq!(got.len(), sent.len());
    for (g, want) in got.iter().zip(&sent) {
        assert_eq!(g.queue, 0);
        assert_eq!(&g.frame, want, "in wire order");
        // RXCSUM.PCSD clear: dword 1 is the IP id, no RSS type.
        assert_eq!((g.rss, g.rss_type), (3, 0));
    }

    // On, then off again: back to queue 0 and the IP id.
    r.igb.enable_rss(QUEUES, &DEFAULT_KEY).unwrap();
    r.igb.disable_rss();
    assert_eq!(r.nic.read32(MRQC), 0);
    assert_eq!(r.nic.read32(RXCSUM) & RXCSUM_PCSD, 0);
    for f in &sent {
        r.wire.push(f.clone());
    }
    let got = r.receive(sent.len());
    assert_eq!(got.len(), sent.len());
    assert!(got.iter().all(|g| g.queue == 0 && g.rss == 3));
    r.finish();
}

#[test]
fn enable_rss_programs_the_registers_and_validates() {
    let r = rig(SimConfig::default());
    for bad in [0, 17, 100] {
        assert!(r.igb.enable_rss(bad, &DEFAULT_KEY).is_err(), "{bad} queues");
    }
    let mut c = RssConfig::new(2, &DEFAULT_KEY);
    c.fields = 0;
    assert!(r.igb.enable_rss_with(&c).is_err());
    assert_eq!(r.nic.read32(MRQC), 0, "nothing written on error");
    assert_eq!(r.nic.read32(rssrk(0)), 0);

    r.igb.enable_rss(QUEUES, &DEFAULT_KEY).unwrap();
    // Key byte i in byte i % 4 of RSSRK(i / 4).
    assert_eq!(r.nic.read32(rssrk(0)), 0xda56_5a6d);
    assert_eq!(r.nic.read32(rssrk(9)), 0xfa01_acbe);
    assert_eq!(r.nic.read32(reta(0)), 0x0302_0100);
    assert_eq!(r.nic.read32(reta(31)), 0x0302_0100);
    assert_eq!(r.nic.read32(MRQC), MRQC_ENABLE_RSS | RSS_FIELDS_TCP_UDP);
    assert_ne!(r.nic.read32(RXCSUM) & RXCSUM_PCSD, 0);

    let mut c = RssConfig::new(3, &DEFAULT_KEY);
    c.fields = RSS_FIELDS_TCP;
    r.igb.enable_rss_with(&c).unwrap();
    assert_eq!(r.nic.read32(reta(0)), 0x0002_0100);
    assert_eq!(r.nic.read32(reta(1)), 0x0100_0201);
    assert_eq!(r.nic.read32(MRQC), MRQC_ENABLE_RSS | RSS_FIELDS_TCP);
    r.finish();
}

#[test]
fn udp_without_udp_hashing_uses_the_addresses() {
    let mut r = rig(SimConfig::default());
    let mut c = RssConfig::new(QUEUES, &DEFAULT_KEY);
    c.fields = RSS_FIELDS_TCP;
    r.igb.enable_rss_with(&c).unwrap();
    // 32 UDP flows from one address: one 2-tuple hash, one queue.
    let b = builder(7);
    let sent: Vec<_> = (0..32)
        .map(|p| b.udp(1000 + p, 53, &[p as u8; 64]))
        .collect();
    for f in &sent {
        r.wire.push(f.clone());
    }
    let got = r.receive(sent.len());
    assert_eq!(got.len(), sent.len());
    let (hash, ty) = expected_hash(&sent[0], c.fields).unwrap();
    assert_eq!(ty, RSS_TYPE_IPV4);
    for (g, want) in got.iter().zip(&sent) {
        assert_eq!(&g.frame, want);
        assert_eq!(
            (g.queue, g.rss, g.rss_type as u32),
            (c.queue_of(hash), hash, ty)
        );
    }
    r.finish();
}

#[test]
fn coalescing_still_happens_per_queue() {
    let mut r = rig(SimConfig {
        gro: 16,
        ..SimConfig::default()
    });
    r.igb.enable_rss(QUEUES, &DEFAULT_KEY).unwrap();
    // 16 TCP flows, 8 in-order segments each, sent flow after flow.
    const FLOWS: u16 = 16;
    const SEGS: u32 = 8;
    let seg = |f: u16, i: u32| {
        builder(f).tcp(
            &Tcp {
                src_port: 30_000 + f,
                dst_port: 443,
                seq: 1 + i * 500,
                ..Tcp::default()
            },
            &frames::payload_pattern(500, (f as u32 * 31 + i) as u8),
        )
    };
    for f in 0..FLOWS {
        for i in 0..SEGS {
            r.wire.push(seg(f, i));
        }
    }
    let got = r.receive(FLOWS as usize);
    assert_eq!(got.len(), FLOWS as usize, "one coalesced packet per flow");
    let stats = r.nic.stats();
    assert_eq!(stats.gro_packets, FLOWS as u64);
    assert_eq!(stats.gro_segments, (FLOWS as u64) * SEGS as u64);
    let mut queues = std::collections::HashSet::new();
    for g in &got {
        let (hash, ty) = expected_hash(&g.frame, RSS_FIELDS_TCP_UDP).unwrap();
        assert_eq!((g.rss, g.rss_type as u32), (hash, ty));
        assert_eq!(g.queue, hash & (QUEUES - 1));
        let p = frames::parse(&g.frame);
        assert_eq!(g.frame.len() - p.l5_off, 500 * SEGS as usize);
        queues.insert(g.queue);
    }
    assert!(queues.len() > 1, "flows spread over queues: {queues:?}");
    r.finish();
}
