//! Simulated hardware GRO against the unmodified driver ring: coalesced
//! packets are valid TCP/IPv4 packets carrying the segments' payload in
//! order, every flow's byte stream is the same with GRO off or on in every
//! header-split mode, RSCCNT adds up to the segment count, unused header
//! buffers come back as dummies, flow control holds a whole coalesced
//! packet, and every page and header slot returns to its pool.

mod common;

use common::RxSetup;
use driver::{RxStats, SplitMode};
use hw_sim::frames::{self, L4};
use hw_sim::wire::{FrameSize, GenConfig, Generator, Proto, QueueWire};
use hw_sim::{SimConfig, SimNic, SimStats, Wire};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// (source address, source port): the generator's flow key.
type Flow = ([u8; 4], u16);

struct Out {
    packets: Vec<Vec<u8>>,
    /// Sum of RSCCNT over each packet's descriptors, in delivery order.
    rsc: Vec<u32>,
    ring: RxStats,
    sim: SimStats,
}

struct Setup {
    gro: u32,
    split: SplitMode,
    ring: usize,
    budget: usize,
    flow_control: bool,
    /// Steps between polls (> 1 lets the ring fill up).
    steps_per_poll: usize,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            gro: 16,
            split: SplitMode::On,
            ring: 64,
            budget: 64,
            flow_control: true,
            steps_per_poll: 1,
        }
    }
}

/// Runs `gen` until it is exhausted and everything was received.
fn run_gen(gen: &GenConfig, s: &Setup) -> Out {
    run(Box::new(Generator::new(gen.clone()).expect("generator")), s)
}

/// Steps and polls until the wire is empty and everything was received.
fn run(wire: Box<dyn Wire>, s: &Setup) -> Out {
    let cfg = SimConfig {
        gro: s.gro,
        flow_control: s.flow_control,
        ..SimConfig::default()
    };
    cfg.validate().expect("sim config");
    let (nic, mut engine) = SimNic::new(cfg, wire);
    let descs: Arc<Mutex<Vec<(bool, u32)>>> = Arc::default();
    let log = Arc::clone(&descs);
    engine.set_rx_wb_hook(Some(Box::new(move |_, wb| {
        log.lock()
            .unwrap()
            .push((wb.status.eop(), wb.info.rsc_cnt()));
    })));
    let setup = RxSetup {
        split: s.split,
        ring: s.ring,
        max_descs_per_packet: 40,
        ..RxSetup::default()
    };
    let (igb, mut ring) = common::bring_up(nic.clone(), &setup);
    let mut batch = ring.new_batch(s.ring);
    let mut packets = Vec::new();
    let mut idle = 0;
    for _ in 0..100_000 {
        let mut moved = 0;
        for _ in 0..s.steps_per_poll {
            moved += engine.step(s.budget);
        }
        let got = ring.poll(&mut batch, s.ring);
        packets.extend(batch.iter().map(|p| p.to_vec()));
        ring.recycle(&mut batch);
        idle = if moved == 0 && got == 0 && !engine.has_pending() {
            idle + 1
        } else {
            0
        };
        if idle == 3 {
            break;
        }
    }
    let ring_stats = *ring.stats();
    common::stop_and_audit(&igb, &mut ring);
    let mut rsc = Vec::new();
    let mut sum = 0;
    for &(eop, n) in descs.lock().unwrap().iter() {
        sum += n;
        if eop {
            rsc.push(sum);
            sum = 0;
        }
    }
    Out {
        packets,
        rsc,
        ring: ring_stats,
        sim: nic.stats(),
    }
}

fn be16(f: &[u8], o: usize) -> usize {
    u16::from_be_bytes([f[o], f[o + 1]]) as usize
}

fn seq_of(f: &[u8], l4: usize) -> u32 {
    u32::from_be_bytes([f[l4 + 4], f[l4 + 5], f[l4 + 6], f[l4 + 7]])
}

fn flow_of(f: &[u8]) -> Flow {
    ([f[26], f[27], f[28], f[29]], be16(f, 34) as u16)
}

/// Every TCP packet's payload (IP total length, no padding), checked to
/// continue its flow's stream; returns the streams and each flow's ISN.
fn streams(packets: &[Vec<u8>]) -> HashMap<Flow, (u32, Vec<u8>)> {
    let mut out: HashMap<Flow, (u32, Vec<u8>)> = HashMap::new();
    for (i, f) in packets.iter().enumerate() {
        let p = frames::parse(f);
        assert_eq!(p.l4, L4::Tcp, "packet {i}");
        assert_eq!(
            frames::ipv4_header_ok(f, &p),
            Some(true),
            "packet {i}: IP checksum"
        );
        assert_eq!(
            frames::l4_checksum_ok(f, &p),
            Some(true),
            "packet {i}: TCP checksum"
        );
        let end = p.l3_off + be16(f, p.l3_off + 2);
        let seq = seq_of(f, p.l4_off);
        let (isn, stream) = out.entry(flow_of(f)).or_insert((seq, Vec::new()));
        assert_eq!(
            seq,
            isn.wrapping_add(stream.len() as u32),
            "packet {i}: sequence hole or reorder"
        );
        stream.extend_from_slice(&f[p.l5_off..end]);
    }
    out
}

fn tcp_gen(frame_size: FrameSize, flows: u32, burst: u32, count: u64) -> GenConfig {
    GenConfig {
        frame_size,
        flows,
        proto: Proto::Tcp,
        seed: 5,
        count: Some(count),
        burst,
        ..GenConfig::default()
    }
}

#[test]
fn coalesced_packets_are_valid_tcp_with_the_segments_in_order() {
    let gen = tcp_gen(FrameSize::Fixed(1502), 4, 16, 16 * 4 * 6);
    let originals = Generator::new(gen.clone())
        .unwrap()
        .expected(usize::MAX >> 40);
    let by_seq: HashMap<(Flow, u32), &Vec<u8>> = originals
        .iter()
        .map(|f| ((flow_of(f), seq_of(f, 34)), f))
        .collect();
    for split in [SplitMode::Off, SplitMode::On, SplitMode::Always] {
        let out = run_gen(
            &gen,
            &Setup {
                split,
                ..Setup::default()
            },
        );
        assert_eq!(out.ring.drops_total(), 0);
        assert_eq!(
            out.packets.len(),
            originals.len() / 16,
            "split {split}: bursts of 16 coalesce whole"
        );
        assert_eq!(out.sim.gro_packets, out.packets.len() as u64);
        assert_eq!(out.sim.gro_segments, originals.len() as u64);
        assert_eq!(out.rsc.len(), out.packets.len());
        for (i, f) in out.packets.iter().enumerate() {
            let p = frames::parse(f);
            let (l3, l4, l5) = (p.l3_off, p.l4_off, p.l5_off);
            // Header: the first segment's, with length and checksums rewritten.
            let first = by_seq[&(flow_of(f), seq_of(f, l4))];
            assert_eq!(
                f[..l3 + 2],
                first[..l3 + 2],
                "packet {i}: Ethernet / IP header"
            );
            assert_eq!(
                f[l3 + 4..l3 + 10],
                first[l3 + 4..l3 + 10],
                "packet {i}: IP header"
            );
            assert_eq!(
                f[l3 + 12..l4 + 16],
                first[l3 + 12..l4 + 16],
                "packet {i}: TCP header"
            );
            assert_eq!(f[l4 + 18..l5], first[l4 + 18..l5], "packet {i}: TCP header");
            // Payload: the segments' payloads, in sequence order.
            let mut want = Vec::new();
            let mut seq = seq_of(f, l4);
            while want.len() < f.len() - l5 {
                let seg = by_seq[&(flow_of(f), seq)];
                want.extend_from_slice(&seg[l5..]);
                seq = seq.wrapping_add((seg.len() - l5) as u32);
            }
            assert!(f[l5..] == want[..], "packet {i}: payload");
            assert_eq!(
                out.rsc[i] as usize,
                (f.len() - l5) / 1448,
                "packet {i}: RSCCNT sum"
            );
        }
        streams(&out.packets);
    }
}

#[test]
fn byte_streams_match_with_gro_off_and_on_in_every_split_mode() {
    for (gen, gro) in [
        (tcp_gen(FrameSize::Fixed(1502), 4, 16, 16 * 4 * 6), 16),
        // Odd, tiny and full-size segments; runs cut by size and by flow.
        (
            tcp_gen(FrameSize::Range { min: 60, max: 1514 }, 3, 7, 700),
            5,
        ),
    ] {
        let originals = Generator::new(gen.clone()).unwrap().expected(1 << 20);
        let want = streams(&originals);
        for split in [SplitMode::Off, SplitMode::On, SplitMode::Always] {
            for g in [1, gro] {
                let out = run_gen(
                    &gen,
                    &Setup {
                        gro: g,
                        split,
                        ..Setup::default()
                    },
                );
                let what = format!("gro {g} split {split} {:?}", gen.frame_size);
                assert_eq!(out.ring.drops_total(), 0, "{what}");
                assert!(streams(&out.packets) == want, "{what}: byte streams differ");
                assert_eq!(out.sim.rx_frames, out.packets.len() as u64, "{what}");
                assert_eq!(
                    out.rsc.iter().sum::<u32>() as u64,
                    out.sim.gro_segments,
                    "{what}: RSCCNT sum"
                );
                if g == 1 {
                    assert_eq!(out.packets, originals, "{what}");
                    assert_eq!(out.sim.gro_packets, 0);
                    assert!(out.rsc.iter().all(|&n| n == 0));
                } else {
                    assert!(
                        out.packets.len() < originals.len() / 2,
                        "{what}: too little coalescing"
                    );
                }
                if split == SplitMode::Off {
                    assert_eq!(out.ring.dummy_headers, 0, "{what}");
                } else {
                    assert_eq!(
                        out.ring.dummy_headers,
                        out.ring.descriptors - out.ring.packets,
                        "{what}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_coalesced_packet_waits_for_room_or_counts_every_segment_missed() {
    // 16 x 1448 B = 12 descriptors of 2 KiB; a 16-slot ring has room for one.
    let gen = tcp_gen(FrameSize::Fixed(1502), 2, 16, 16 * 2 * 4);
    let originals = Generator::new(gen.clone()).unwrap().expected(1 << 20);
    let want = streams(&originals);
    let tight = Setup {
        ring: 16,
        steps_per_poll: 3,
        ..Setup::default()
    };
    let out = run_gen(&gen, &tight);
    assert!(streams(&out.packets) == want, "flow control: nothing lost");
    assert_eq!(
        (out.sim.rx_missed, out.sim.gro_segments),
        (0, originals.len() as u64)
    );

    let out = run_gen(
        &gen,
        &Setup {
            flow_control: false,
            ..tight
        },
    );
    assert!(out.sim.rx_missed > 0);
    assert_eq!(
        out.sim.rx_missed % 16,
        0,
        "a whole packet is missed, counted per segment"
    );
    assert_eq!(
        out.sim.rx_missed + out.sim.gro_segments,
        originals.len() as u64
    );
    let got: usize = streams(&out.packets).values().map(|(_, s)| s.len()).sum();
    assert_eq!(got as u64, out.sim.gro_segments * 1448);
}

#[test]
fn other_traffic_holes_and_step_ends_close_runs() {
    let wire = QueueWire::new();
    let b = frames::Builder::default();
    let seg = |seq: u32| {
        b.tcp(
            &frames::Tcp {
                seq,
                ..frames::Tcp::default()
            },
            &frames::payload_pattern(500, seq as u8),
        )
    };
    let udp = frames::udp_frame(300, 1);
    // The hole at 2500 and the step end after 7 frames both close runs.
    for f in [
        seg(0),
        seg(500),
        udp.clone(),
        seg(1000),
        seg(1500),
        seg(2000),
        seg(3000),
        seg(3500),
    ] {
        wire.push(f);
    }
    let out = run(
        Box::new(wire),
        &Setup {
            gro: 64,
            budget: 7,
            ..Setup::default()
        },
    );
    let lens: Vec<usize> = out.packets.iter().map(|p| p.len()).collect();
    assert_eq!(lens, [54 + 1000, 300, 54 + 1500, 554, 554]);
    assert_eq!(out.rsc, [2, 0, 3, 0, 0]);
    assert_eq!(out.packets[1], udp);
    assert_eq!(
        out.packets[3],
        seg(3000),
        "a run of one is the segment unchanged"
    );
    assert_eq!(out.packets[4], seg(3500));
    let coalesced = [&out.packets[0], &out.packets[2]];
    let s = streams(&coalesced.map(|p| p.clone()));
    let (isn, bytes) = &s[&flow_of(&seg(0))];
    assert_eq!(*isn, 0);
    let want: Vec<u8> = [0, 500, 1000, 1500, 2000]
        .iter()
        .flat_map(|&q| seg(q)[54..].to_vec())
        .collect();
    assert!(bytes[..] == want[..], "coalesced payload differs");
    assert_eq!(
        (out.sim.gro_packets, out.sim.gro_segments, out.sim.rx_frames),
        (2, 5, 5)
    );
}

#[test]
fn rsccnt_saturates_at_15_per_descriptor() {
    let wire = QueueWire::new();
    let b = frames::Builder::default();
    for seq in 0..20u32 {
        wire.push(b.tcp(
            &frames::Tcp {
                seq,
                ..frames::Tcp::default()
            },
            &[seq as u8],
        ));
    }
    let out = run(
        Box::new(wire),
        &Setup {
            gro: 64,
            ..Setup::default()
        },
    );
    assert_eq!(out.packets.len(), 1);
    assert_eq!(out.packets[0].len(), 54 + 20);
    assert_eq!(out.packets[0][54..], (0..20).collect::<Vec<u8>>()[..]);
    assert_eq!(
        out.rsc,
        [15],
        "20 segments start in one descriptor: 4 bits saturate"
    );
    assert_eq!(out.sim.gro_segments, 20);
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    /// One frame on the wire: a TCP segment of flow 0 or 1 that continues
    /// its flow or jumps ahead, with given flags, or a UDP frame.
    #[derive(Clone, Debug)]
    enum Ev {
        Tcp {
            flow: u8,
            payload: u16,
            jump: bool,
            flags: u8,
        },
        Udp(u16),
    }

    fn ev() -> impl Strategy<Value = Ev> {
        let flags = prop_oneof![
            8 => Just(frames::TCP_ACK | frames::TCP_PSH),
            4 => Just(frames::TCP_ACK),
            1 => Just(frames::TCP_ACK | frames::TCP_FIN),
        ];
        prop_oneof![
            10 => (0u8..2, 0u16..=1446, proptest::bool::weighted(0.1), flags)
                .prop_map(|(flow, payload, jump, flags)| Ev::Tcp { flow, payload, jump, flags }),
            1 => (60u16..1514).prop_map(Ev::Udp),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Whatever the mix, GRO only merges: per flow the TCP byte stream,
        /// and the UDP frames, come out exactly as they went in.
        #[test]
        fn gro_preserves_streams(
            evs in proptest::collection::vec(ev(), 1..200),
            gro in 1u32..=64,
            split in 0usize..3,
            budget in 1usize..100,
        ) {
            let split = [SplitMode::Off, SplitMode::On, SplitMode::Always][split];
            let wire = QueueWire::new();
            let mut seq = [1000u32, 7_000_000];
            let mut want: HashMap<Flow, Vec<u8>> = HashMap::new();
            let mut udp_in = Vec::new();
            for (i, e) in evs.iter().enumerate() {
                match *e {
                    Ev::Tcp { flow, payload, jump, flags } => {
                        let f = flow as usize;
                        if jump {
                            seq[f] = seq[f].wrapping_add(5000);
                        }
                        let b = frames::Builder { src_ip: [198, 18, 0, flow], ip_id: i as u16, ..frames::Builder::default() };
                        let data = frames::payload_pattern(payload as usize, i as u8);
                        let t = frames::Tcp { seq: seq[f], flags, ack: i as u32, ..frames::Tcp::default() };
                        let frame = b.tcp(&t, &data);
                        seq[f] = seq[f].wrapping_add(payload as u32);
                        want.entry(flow_of(&frame)).or_default().extend_from_slice(&data);
                        wire.push(frame);
                    }
                    Ev::Udp(len) => {
                        let f = frames::udp_frame(len as usize, i as u8);
                        udp_in.push(f.clone());
                        wire.push(f);
                    }
                }
            }
            let out = run(Box::new(wire), &Setup { gro, split, budget, ..Setup::default() });
            prop_assert_eq!(out.ring.drops_total(), 0);
            let mut got: HashMap<Flow, Vec<u8>> = HashMap::new();
            let mut udp_out = Vec::new();
            for f in &out.packets {
                let p = frames::parse(f);
                prop_assert_eq!(frames::ipv4_header_ok(f, &p), Some(true));
                prop_assert_eq!(frames::l4_checksum_ok(f, &p), Some(true));
                if p.l4 == L4::Tcp {
                    let end = p.l3_off + be16(f, p.l3_off + 2);
                    got.entry(flow_of(f)).or_default().extend_from_slice(&f[p.l5_off..end]);
                } else {
                    udp_out.push(f.clone());
                }
            }
            prop_assert!(got == want, "TCP byte streams differ");
            prop_assert!(udp_out == udp_in, "UDP frames differ");
            let tcp_in = evs.iter().filter(|e| matches!(e, Ev::Tcp { .. })).count() as u64;
            let tcp_out = out.packets.len() as u64 - udp_out.len() as u64;
            prop_assert_eq!(tcp_out - out.sim.gro_packets + out.sim.gro_segments, tcp_in);
            if gro == 1 {
                prop_assert_eq!(out.sim.gro_packets, 0);
            }
        }
    }
}
