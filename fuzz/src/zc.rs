//! The `zc_engine` harness: segments decoded from the input driven into a
//! `stack::zc::ZcStack`, as several peers would send them, interleaved with
//! timer rounds, application reads, returns (ring and locked), sends,
//! closes, aborts and pool pressure.
//!
//! Most operations build a *valid* segment (right checksums, sequence
//! numbers near the connection's, options as a peer sends them) so the
//! input reaches the state machine, not only the parser; one operation
//! feeds raw bytes. Asserted: no panic; every frame is accounted for in
//! the engine's counters; after `release_all` and the returns, every page
//! is back in the pool.

use crate::{Input, Shape};
use driver::dma::{DmaSpace, NoIommu};
use driver::{BufPool, Csum, OwnedPacket, Seg};
use pipeline::{PagePool, PagePoolConfig};
use stack::zc::wire::{self, Out};
use stack::zc::{ReturnMode, ZcChunk, ZcConfig, ZcEvent, ZcStack};
use std::sync::Arc;
use std::time::{Duration, Instant};

const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const OUR_IP: [u8; 4] = [10, 0, 0, 1];
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const PEER_IP: [u8; 4] = [10, 0, 0, 2];
const PORT: u16 = 9000;
const BUFFERS: usize = 256;

/// One peer's view of its connection.
#[derive(Clone, Copy, Default)]
struct Peer {
    isn: u32,
    /// The engine's ISN (from its SYN-ACK), once seen.
    our_isn: u32,
    /// Next stream offset the peer would send.
    next: u32,
}

/// `frame` in pool buffers as the driver delivers it, or `None` when the
/// pool is short (the application holds many chunks).
fn packet(pool: &mut PagePool, frame: &[u8], hdr_len: usize, s: Shape) -> Option<OwnedPacket> {
    let mut pkt = OwnedPacket {
        hdr: None,
        hdr_len: 0,
        len: frame.len() as u32,
        segs: Vec::new(),
        pkt_type: 0,
        ip_csum: if s.ip_good { Csum::Good } else { Csum::None },
        l4_csum: if s.l4_good { Csum::Good } else { Csum::None },
        rss: 0,
        rss_type: 0,
    };
    let mut rest = frame;
    if s.hdr.is_some() {
        // The header slot holds what the device split off (the hint may
        // be wrong: that is the point).
        let n = s
            .hdr
            .map_or(hdr_len, |h| if h == 0 { hdr_len } else { h as usize })
            .min(frame.len());
        let mut h = pool.alloc()?;
        h.as_mut_slice(n).copy_from_slice(&frame[..n]);
        pkt.hdr = Some(h);
        pkt.hdr_len = n as u16;
        rest = &frame[n..];
    }
    let chunk = if s.chunk == 0 {
        4096
    } else {
        (s.chunk as usize).clamp(64, 4096)
    };
    for c in rest.chunks(chunk) {
        let Some(mut b) = pool.alloc() else {
            give_back(pool, &mut pkt);
            return None;
        };
        b.as_mut_slice(c.len()).copy_from_slice(c);
        pkt.segs.push(Seg {
            buf: b,
            len: c.len() as u16,
        });
    }
    Some(pkt)
}

fn give_back(pool: &mut PagePool, pkt: &mut OwnedPacket) {
    if let Some(h) = pkt.hdr.take() {
        pool.recycle(h);
    }
    for s in pkt.segs.drain(..) {
        pool.recycle(s.buf);
    }
}

/// Runs the harness on `data`; returns the engine's counters.
pub fn run_zc(data: &[u8]) -> stack::zc::ZcStats {
    let mut inp = Input(data);
    let cfg_byte = inp.u8();
    let space = DmaSpace::new(Arc::new(NoIommu));
    let mut pool = PagePool::new(
        &space,
        PagePoolConfig {
            buffers: BUFFERS,
            buf_len: 4096,
            headroom: 0,
            cache_size: 32,
            bulk: 16,
            checked: true,
            ..PagePoolConfig::default()
        },
    )
    .expect("page pool");
    let cfg = ZcConfig {
        mac: OUR_MAC,
        ip: OUR_IP,
        listen: vec![PORT],
        max_conns: 3,
        rcv_buf: if cfg_byte & 1 != 0 {
            8 << 10
        } else {
            256 << 10
        },
        snd_buf: 4 << 10,
        max_pages: 64,
        ..ZcConfig::default()
    };
    let mut zc = ZcStack::new(cfg).expect("config");
    let mut ring = zc.returner(ReturnMode::Ring, 1 + (cfg_byte as usize >> 4));
    let mut locked = zc.returner(ReturnMode::Locked, 1 + (cfg_byte as usize & 0xF));
    let mut held: Vec<ZcChunk> = Vec::new();
    let mut conns = Vec::new();
    let mut peers = [Peer::default(); 4];
    let mut now = Instant::now();
    let mut frame = Vec::new();
    let mut ops = 0;
    while !inp.is_empty() && ops < 200 {
        ops += 1;
        let op = inp.u8();
        // The low nibble picks the operation, the high one its variant.
        match op & 0x0F {
            // A segment from peer k (bits 4-5): bit 0 a split header, bit 1
            // no checksum verdict from the device (software check), all
            // three low bits set: to a port nobody listens on.
            0..=7 => {
                let k = (op >> 4) as usize % peers.len();
                let flags = inp.u8();
                let rel = inp.u16() as i16 as i32;
                let ack_rel = inp.u8() as i8 as i32;
                let len = (inp.u16() as usize) % 6000;
                let shape = Shape {
                    hdr: (op & 1 != 0).then_some(0),
                    chunk: inp.u16() % 4096,
                    ip_good: true,
                    l4_good: op & 2 == 0,
                };
                let p = &mut peers[k];
                if flags & 0x02 != 0 && p.isn == 0 {
                    p.isn = 0x1000_0000u32.wrapping_mul(k as u32 + 1) | 1;
                }
                let off = (p.next as i32).wrapping_add(rel) as u32;
                let mut payload = vec![0u8; len];
                stack::pattern::fill(off as u64, &mut payload);
                let syn = flags & 0x02 != 0;
                let o = Out {
                    dst_mac: OUR_MAC,
                    dst_ip: OUR_IP,
                    src_port: 40000 + k as u16,
                    dst_port: if op & 7 == 7 { PORT + 1 } else { PORT },
                    seq: if syn {
                        p.isn
                    } else {
                        p.isn.wrapping_add(1).wrapping_add(off)
                    },
                    ack: p.our_isn.wrapping_add(1).wrapping_add(ack_rel as u32),
                    flags,
                    window: inp.u16(),
                    syn: syn.then(|| (inp.u16(), Some(inp.u8() % 16), flags & 0x20 != 0)),
                    ts: (flags & 0x40 != 0).then(|| (inp.u32(), inp.u32())),
                    sack: &[],
                    payload: &payload,
                };
                wire::build(&mut frame, PEER_MAC, PEER_IP, 7, &o);
                if rel >= 0 && flags & 0x02 == 0 {
                    p.next = p.next.max(off.wrapping_add(len as u32));
                }
                let hl = frame.len() - len;
                if let Some(mut pkt) = packet(&mut pool, &frame, hl, shape) {
                    zc.rx(&mut pkt, now);
                    give_back(&mut pool, &mut pkt);
                }
            }
            // Raw bytes as a frame.
            8 => {
                let n = (inp.u16() as usize) % 2000;
                let raw = inp.bytes(n).to_vec();
                let shape = Shape {
                    hdr: (op & 0x10 != 0).then_some(inp.u8()),
                    chunk: inp.u16(),
                    ip_good: op & 0x20 != 0,
                    l4_good: op & 0x40 != 0,
                };
                if let Some(mut pkt) = packet(&mut pool, &raw, 54.min(raw.len()), shape) {
                    zc.rx(&mut pkt, now);
                    give_back(&mut pool, &mut pkt);
                }
            }
            // Time passes; timers run.
            9 => {
                now += Duration::from_millis(inp.u16() as u64);
                zc.poll(now);
            }
            // The application reads; keeps or returns (bit 4: through both
            // returners; bit 7: flush them).
            10 => {
                while let Some(ev) = zc.next_event() {
                    match ev {
                        ZcEvent::Accepted { conn, .. } => conns.push(conn),
                        ZcEvent::Data { chunk, .. } => {
                            assert_eq!(chunk.bytes().len(), chunk.len());
                            held.push(chunk);
                        }
                        _ => {}
                    }
                }
                let n = (inp.u8() as usize).min(held.len());
                for (i, c) in held.drain(..n).enumerate() {
                    if (op >> 4) & 1 == 0 || i % 2 == 0 {
                        ring.give_back(c);
                    } else {
                        locked.give_back(c);
                    }
                }
                if op & 0x80 != 0 {
                    ring.flush();
                    locked.flush();
                }
                zc.reclaim(|b| pool.recycle(b));
            }
            // The application sends, closes or aborts.
            11 => {
                if let Some(&c) = conns.get(inp.u8() as usize % conns.len().max(1)) {
                    match op >> 4 {
                        0..=9 => {
                            let n = inp.u8() as usize * 16;
                            zc.send(c, &vec![b'x'; n]);
                        }
                        10..=13 => zc.close(c),
                        _ => zc.abort(c),
                    }
                }
            }
            // Pool pressure (bit 4); what was sent is read by the peers
            // (bit 5: the device refuses frames).
            _ => {
                zc.set_pool_low(op & 0x10 != 0);
                let mut sent = Vec::new();
                zc.transmit(|f| {
                    sent.push(f.to_vec());
                    op & 0x20 == 0
                });
                for f in sent {
                    let h =
                        wire::parse(&f, f.len(), PEER_MAC, PEER_IP).expect("we build valid frames");
                    if h.flags & 0x12 == 0x12 {
                        let k = (h.dst_port.wrapping_sub(40000)) as usize;
                        if let Some(p) = peers.get_mut(k) {
                            p.our_isn = h.seq;
                        }
                    }
                }
            }
        }
        let s = zc.stats();
        assert_eq!(
            s.rx_frames,
            s.tcp_segments + s.arp_frames + s.icmp_echo_replies + s.drops(),
            "{s:?}"
        );
        assert!(zc.pages_out() <= 64, "page bound");
    }
    drop(held);
    drop(ring);
    drop(locked);
    zc.release_all(|b| pool.recycle(b));
    assert_eq!(zc.pages_out(), 0, "the engine holds no page");
    assert_eq!(pool.audit().lent, 0, "payload pages leaked");
    *zc.stats()
}
