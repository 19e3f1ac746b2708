//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/`:
//! `cargo +nightly run --manifest-path fuzz/Cargo.toml --example gen_corpus`.
//! The seeds are committed; run this again only when an input encoding
//! changes.

use fuzz::{encode_packet, run_stack, Shape, IPERF3_PORT, SINK_IP, SINK_PORT};
use hw_sim::frames::{self, Builder, Tcp, TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN};
use wires::PcapWriter;
use std::path::{Path, PathBuf};

fn dir(target: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&d).expect("corpus dir");
    d
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    std::fs::write(dir(target).join(name), bytes).expect("write seed");
}

/// Ops of the `rx_writeback` program (see the target).
struct Prog(Vec<u8>);

impl Prog {
    fn new(cfg: u8) -> Prog {
        Prog(vec![cfg])
    }
    fn push(mut self, kind: u8, len: u16, seed: u8) -> Prog {
        self.0.push(0);
        self.0.push(kind);
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.push(seed);
        self
    }
    fn forge(mut self, mode: u8, wb: [u32; 4]) -> Prog {
        self.0.push(1);
        self.0.push(mode);
        for v in wb {
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        self
    }
    fn step(mut self, n: u8) -> Prog {
        self.0.extend_from_slice(&[2, n - 1]);
        self
    }
    fn poll(mut self, budget: u8) -> Prog {
        self.0.extend_from_slice(&[3, budget - 1]);
        self
    }
    fn release(mut self, which: u8) -> Prog {
        self.0.extend_from_slice(&[4, which]);
        self
    }
    fn recycle(mut self, foreign: bool) -> Prog {
        self.0.extend_from_slice(&[5, u8::from(foreign)]);
        self
    }
    fn cycle(mut self, n: u8) -> Prog {
        self.0.extend_from_slice(&[6, n - 1]);
        self
    }
}

const XOR_STATUS: u8 = 0x04 | 0x10;
const SET_INFO: u8 = 0x01;
const SET_LEN: u8 = 0x08;
const HOLD: u8 = 0x20;

fn rx_writeback() {
    let t = "rx_writeback";
    // cfg: bits 0-1 split (0 off, 1 on, 2 always), bit 2 64 B header
    // slots, bit 3 1 KiB buffers, bit 4 GRO, bits 5-6 ring size.
    let seeds = [
        (
            "clean_mix",
            Prog::new(0x01)
                .push(0, 500, 1)
                .push(1, 1514, 2)
                .push(2, 100, 3)
                .push(4, 700, 4)
                .step(8)
                .poll(16)
                .recycle(false),
        ),
        (
            "jumbo_split_always",
            Prog::new(0x02 | 0x08)
                .push(1, 9000, 5)
                .push(0, 9216, 6)
                .cycle(2)
                .cycle(2),
        ),
        (
            "rx_error",
            Prog::new(0x01)
                .forge(XOR_STATUS, [0, 0, 0x8000_0000, 0])
                .push(0, 500, 7)
                .push(0, 600, 8)
                .cycle(2),
        ),
        (
            "lost_eop",
            Prog::new(0x01 | 0x20)
                .forge(XOR_STATUS, [0, 0, 2, 0])
                .forge(XOR_STATUS, [0, 0, 2, 0])
                .push(0, 300, 9)
                .push(0, 300, 10)
                .push(0, 300, 11)
                .cycle(3),
        ),
        (
            "hdr_len_overflow",
            Prog::new(0x01)
                .forge(SET_INFO, [1 << 31 | 1000 << 21, 0, 0, 0])
                .push(0, 1442, 12)
                .cycle(1),
        ),
        (
            "zero_length",
            Prog::new(0x00)
                .forge(SET_INFO | SET_LEN, [0, 0, 0, 0])
                .push(2, 60, 13)
                .push(2, 60, 14)
                .cycle(2),
        ),
        (
            "out_of_order",
            Prog::new(0x01)
                .forge(HOLD, [0; 4])
                .push(0, 200, 15)
                .push(0, 200, 16)
                .push(0, 200, 17)
                .step(3)
                .poll(8)
                .release(0)
                .poll(8)
                .recycle(true),
        ),
        (
            "gro_tcp",
            Prog::new(0x01 | 0x10)
                .push(1, 1514, 18)
                .push(1, 1514, 18)
                .push(1, 1514, 18)
                .cycle(4),
        ),
    ];
    for (name, p) in seeds {
        write(t, name, &p.0);
    }
}

fn tcp_to(port: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let b = Builder {
        dst_ip: SINK_IP,
        ..Builder::default()
    };
    b.tcp(
        &Tcp {
            src_port: 40000,
            dst_port: port,
            seq,
            ack,
            flags,
            window: 65535,
            options: vec![2, 4, 0x05, 0xb4], // MSS 1460
        },
        payload,
    )
}

fn split(hdr: u8, chunk: u16) -> Shape {
    Shape {
        hdr: Some(hdr),
        chunk,
        ip_good: false,
        l4_good: false,
    }
}

/// An ARP request from the builder's source for the sink's address (it
/// teaches the sink the peer's MAC, so it answers without asking).
fn arp() -> Vec<u8> {
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 198, 18, 0, 1]);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&SINK_IP);
    arp
}

/// The sequence number of the SYN-ACK the sink answers `syn` with.
fn isn(cfg: u8, syn: &[u8]) -> Option<u32> {
    let mut inp = vec![cfg];
    encode_packet(&mut inp, &arp(), Shape::default());
    encode_packet(&mut inp, syn, Shape::default());
    let run = run_stack(&inp);
    run.sent.iter().find_map(|f| {
        let p = frames::parse(f);
        let l4 = p.l4_off;
        (f.get(l4 + 13)? & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK)
            .then(|| u32::from_be_bytes(f[l4 + 4..l4 + 8].try_into().unwrap()))
    })
}

fn stack_ingest() {
    let t = "stack_ingest";
    let b = Builder {
        dst_ip: SINK_IP,
        ..Builder::default()
    };
    // cfg: bit 0 presenter headroom from the next byte, bit 1 iperf3
    // listener, bit 2 pattern verification.
    let single = |cfg: u8, f: &[u8], s: Shape| {
        let mut v = vec![cfg];
        encode_packet(&mut v, f, s);
        v
    };
    write(
        t,
        "syn",
        &single(0, &tcp_to(SINK_PORT, 1, 0, TCP_SYN, &[]), Shape::default()),
    );
    write(
        t,
        "udp_split",
        &single(0, &b.udp(1000, 2000, &[7; 300]), split(42, 0)),
    );
    write(
        t,
        "icmp_echo",
        &single(0, &b.icmp_echo(1, 1, &[9; 56]), Shape::default()),
    );
    write(t, "arp_request", &single(0, &arp(), Shape::default()));
    write(
        t,
        "jumbo_tcp_segmented",
        &single(
            0,
            &tcp_to(
                SINK_PORT,
                1,
                0,
                TCP_ACK | TCP_PSH,
                &frames::payload_pattern(8000, 1),
            ),
            split(58, 2048),
        ),
    );

    // Whole connections: the handshake completes because the sink's
    // initial sequence number is deterministic (fixed seed and clock).
    for (cfg, port, name) in [
        (4u8, SINK_PORT, "tcp_session"),
        (2, IPERF3_PORT, "iperf3_session"),
    ] {
        let syn = tcp_to(port, 1000, 0, TCP_SYN, &[]);
        let Some(isn) = isn(cfg, &syn) else {
            eprintln!("{name}: no SYN-ACK from the sink; seed skipped");
            continue;
        };
        let mut v = vec![cfg];
        encode_packet(&mut v, &arp(), Shape::default());
        encode_packet(&mut v, &syn, Shape::default());
        let ack = isn.wrapping_add(1);
        encode_packet(
            &mut v,
            &tcp_to(port, 1001, ack, TCP_ACK, &[]),
            Shape::default(),
        );
        let data: Vec<u8> = if port == IPERF3_PORT {
            // An iperf3 cookie (37 bytes) and the start of a parameter exchange.
            let mut c = b"abcdefghijklmnopqrstuvwxyz234567abcd\0".to_vec();
            c.extend_from_slice(&[0, 0, 0, 2, b'{', b'}']);
            c
        } else {
            let mut d = vec![0; 3000];
            stack::pattern::fill(0, &mut d);
            d
        };
        let mut seq = 1001u32;
        for (i, c) in data.chunks(1400).enumerate() {
            let s = if i % 2 == 0 {
                split(66, 700)
            } else {
                Shape::default()
            };
            encode_packet(&mut v, &tcp_to(port, seq, ack, TCP_ACK | TCP_PSH, c), s);
            seq = seq.wrapping_add(c.len() as u32);
        }
        encode_packet(
            &mut v,
            &tcp_to(port, seq, ack, TCP_ACK | TCP_FIN, &[]),
            Shape::default(),
        );
        let run = run_stack(&v);
        eprintln!(
            "{name}: sink {:?} present {:?} sent {}",
            run.sink,
            run.present,
            run.sent.len()
        );
        write(t, name, &v);
    }
}

fn pcap_input() {
    let t = "pcap_input";
    let tmp = std::env::temp_dir().join(format!("gen-corpus-{}.pcap", std::process::id()));
    let mut w = PcapWriter::create(&tmp).expect("pcap");
    w.write(&frames::udp_frame(60, 1)).unwrap();
    w.write(&frames::tcp_frame(1514, 2, 12)).unwrap();
    w.write(&frames::non_ip_frame(14, 3)).unwrap();
    w.write(&frames::udp_frame(9216, 4)).unwrap();
    w.flush().unwrap();
    drop(w);
    let good = std::fs::read(&tmp).expect("read pcap");
    let _ = std::fs::remove_file(&tmp);
    write(t, "four_frames", &good);
    write(t, "header_only", &good[..24]);
    write(t, "truncated_record", &good[..24 + 16 + 30]);
    // The same capture in microsecond, big-endian form.
    let mut be = Vec::new();
    be.extend_from_slice(&0xA1B2_C3D4u32.to_be_bytes());
    be.extend_from_slice(&2u16.to_be_bytes());
    be.extend_from_slice(&4u16.to_be_bytes());
    be.extend_from_slice(&[0; 8]);
    be.extend_from_slice(&65535u32.to_be_bytes());
    be.extend_from_slice(&1u32.to_be_bytes());
    let f = frames::icmp_frame(98, 5);
    be.extend_from_slice(&[0; 8]);
    be.extend_from_slice(&(f.len() as u32).to_be_bytes());
    be.extend_from_slice(&(f.len() as u32).to_be_bytes());
    be.extend_from_slice(&f);
    // A record shorter than an Ethernet header.
    be.extend_from_slice(&[0; 8]);
    be.extend_from_slice(&5u32.to_be_bytes());
    be.extend_from_slice(&5u32.to_be_bytes());
    be.extend_from_slice(&[1; 5]);
    write(t, "big_endian_usec", &be);
    write(t, "pcapng_magic", &[0x0A, 0x0D, 0x0D, 0x0A, 0, 0, 0, 0]);
}

/// Ops of the `zc_engine` program (see `fuzz::zc::run_zc`).
struct ZcProg(Vec<u8>);

impl ZcProg {
    fn new(cfg: u8) -> ZcProg {
        ZcProg(vec![cfg])
    }
    /// A segment from peer `k` at stream offset `rel` (relative to the
    /// peer's next byte), split header or not, device checksum verdict good.
    fn seg(mut self, k: u8, split: bool, flags: u8, rel: i16, len: u16, chunk: u16) -> ZcProg {
        self.0.push(k << 4 | u8::from(split));
        self.0.push(flags);
        self.0.extend_from_slice(&rel.to_le_bytes());
        self.0.push(0); // ack relative to the engine's ISN + 1
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(&chunk.to_le_bytes());
        self.0.extend_from_slice(&0xFFFFu16.to_le_bytes()); // window
        if flags & TCP_SYN != 0 {
            self.0.extend_from_slice(&1460u16.to_le_bytes());
            self.0.push(7);
        }
        if flags & 0x40 != 0 {
            self.0.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        }
        self
    }
    /// Sends what the engine queued to the peers (they learn its ISN).
    fn transmit(mut self) -> ZcProg {
        self.0.push(12);
        self
    }
    /// Reads events and returns up to `n` chunks, flushing the returners.
    fn read(mut self, n: u8) -> ZcProg {
        self.0.extend_from_slice(&[0x8A, n]);
        self
    }
    fn poll(mut self, ms: u16) -> ZcProg {
        self.0.push(9);
        self.0.extend_from_slice(&ms.to_le_bytes());
        self
    }
    /// Send (`what` 0), close (10) or abort (14) on connection 0.
    fn app(mut self, what: u8, arg: u8) -> ZcProg {
        self.0.extend_from_slice(&[what << 4 | 11, 0, arg]);
        self
    }
}

fn zc_engine() {
    let t = "zc_engine";
    let open = |p: ZcProg| {
        p.seg(0, false, TCP_SYN | 0x20 | 0x40, 0, 0, 0)
            .transmit()
            .seg(0, false, TCP_ACK | 0x40, 0, 0, 0)
    };
    let session = open(ZcProg::new(0))
        .seg(0, true, TCP_ACK, 0, 1000, 600)
        .seg(0, true, TCP_ACK, 500, 500, 0) // beyond a hole
        .seg(0, false, TCP_ACK, -1000, 1000, 0) // fills it
        .read(255)
        .poll(5)
        .app(0, 4)
        .transmit()
        .seg(0, true, TCP_ACK | TCP_FIN, 0, 0, 0)
        .app(10, 0)
        .transmit()
        .poll(300)
        .read(255);
    let check = |name: &str, p: &ZcProg| {
        let s = fuzz::zc::run_zc(&p.0);
        eprintln!("{name}: {s:?}");
        assert!(s.conns_accepted > 0 && s.bytes > 0, "{name} reaches the state machine");
    };
    check("session", &session);
    write(t, "session", &session.0);
    let two = open(open(ZcProg::new(1)).seg(1, false, TCP_SYN, 0, 0, 0).transmit())
        .seg(1, false, TCP_ACK, 0, 0, 0)
        .seg(0, true, TCP_ACK, 0, 3000, 1000)
        .seg(1, true, TCP_ACK | TCP_PSH, 0, 9000, 4000)
        .read(1)
        .poll(1000)
        .app(14, 0)
        .transmit();
    check("two_peers_small_window", &two);
    write(t, "two_peers_small_window", &two.0);
}

fn main() {
    rx_writeback();
    stack_ingest();
    pcap_input();
    zc_engine();
    eprintln!("corpus written to {}", dir("").display());
}
