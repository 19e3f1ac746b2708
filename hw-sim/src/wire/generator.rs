//! Traffic generator: deterministic Ethernet + IPv4 + UDP/TCP frames at
//! memory speed, the benchmark's packet source.
//!
//! Frame `n` uses size/protocol template `n % templates` and flow
//! `(n / burst) % flows` (`burst` consecutive frames per flow, 1 = round
//! robin), so the sequence repeats with period lcm(templates, burst * flows).
//! When that period is at most 256 frames, every frame of it is built
//! completely at construction and `recv` just returns the next one (TCP
//! segments still get their sequence number and checksum patched). Longer
//! periods keep one frame per template and write the flow's source address
//! and port in place, finishing the IP and L4 checksums from precomputed
//! partial sums. Either way a frame costs a few nanoseconds at 60 or 9216
//! bytes and nothing is allocated.
//!
//! Flow `f` sends from 198.18.0.0 + (f mod 65536) (inside the
//! 198.18.0.0/15 benchmark range), port 1024 + (f mod 64512), to 198.19.0.1
//! port 5201. TCP segments of a flow carry consecutive sequence numbers
//! (each segment's seq = the previous one's + its payload length, from a
//! per-flow ISN drawn from the seed), ACK and PSH set, ack 1, and right
//! checksums: the sequence number is patched per frame and the checksum
//! finished from the template's precomputed partial sum, so `recv` stays a
//! few stores. With `burst` > 1 a flow's segments come back to back, which
//! is what the NIC's GRO ([`crate::gro`]) coalesces. The same config always
//! yields the same frames: see [`Generator::expected`].

use super::Wire;
use crate::frames::{self, Builder, Tcp, MAX_JUMBO, TCP_ACK, TCP_PSH};
use packet::checksum::{fold, pseudo_header, sum};
use packet::{ethernet, ipv4, tcp, udp};

/// Most flows a generator tracks (TCP sequence state is kept per flow).
pub const MAX_FLOWS: u32 = 1 << 20;
/// Most size slots drawn for `FrameSize::Range`, and the longest period
/// that is precomputed frame by frame.
const MAX_TEMPLATES: usize = 256;
const DST_IP: [u8; 4] = [198, 19, 0, 1];
const DST_PORT: u16 = 5201;
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// Simple IMIX: 7 x 64 B, 4 x 594 B, 1 x 1518 B on the wire (with FCS).
const IMIX: [usize; 12] = [60, 60, 590, 60, 60, 590, 60, 1514, 60, 590, 60, 590];

// Field offsets in the frames we build (no VLAN, no IP options).
const L3: usize = ethernet::HEADER_LEN;
const IP_CSUM: usize = L3 + ipv4::field::CHECKSUM;
const IP_SRC: usize = L3 + ipv4::field::SRC_ADDR.start;
const IP_ADDRS: std::ops::Range<usize> = L3 + ipv4::field::ADDRS.start..L3 + ipv4::field::ADDRS.end;
const L4: usize = L3 + ipv4::MIN_HEADER_LEN;
const UDP_CSUM: usize = L4 + udp::field::CHECKSUM;
const TCP_SEQ: usize = L4 + tcp::field::SEQ;
const TCP_CSUM: usize = L4 + tcp::field::CHECKSUM;

/// Frame length distribution (bytes without FCS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameSize {
    Fixed(usize),
    /// Uniform over `min..=max` (256 sizes drawn once, then cycled).
    Range {
        min: usize,
        max: usize,
    },
    /// 7:4:1 mix of 60, 590 and 1514 byte frames.
    Imix,
}

/// Transport protocol of the generated frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
    /// Alternating blocks of UDP and TCP frames.
    Mixed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenConfig {
    pub frame_size: FrameSize,
    /// Number of distinct 5-tuples, 1..=MAX_FLOWS.
    pub flows: u32,
    pub proto: Proto,
    pub seed: u64,
    /// Stop after this many frames (`recv` returns `None` from then on).
    pub count: Option<u64>,
    pub dst_mac: [u8; 6],
    /// Consecutive frames per flow before moving to the next (>= 1; 1 =
    /// round robin over the flows).
    pub burst: u32,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            frame_size: FrameSize::Fixed(60),
            flows: 1,
            proto: Proto::Udp,
            seed: 0,
            count: None,
            dst_mac: crate::SimConfig::default().mac,
            burst: 1,
        }
    }
}

/// An invalid [`GenConfig`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GenError {
    /// Frame sizes must lie in 60..=9216 with min <= max.
    FrameSize { min: usize, max: usize },
    /// Flows must be 1..=MAX_FLOWS.
    Flows(u32),
    /// Burst must be at least 1.
    Burst(u32),
}

impl std::fmt::Display for GenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GenError::FrameSize { min, max } => write!(
                f,
                "frame size {min}..={max} invalid: sizes must be {}..={} bytes (without FCS) and min <= max",
                frames::ETH_ZLEN,
                MAX_JUMBO
            ),
            GenError::Flows(n) => write!(f, "{n} flows invalid: must be 1..={MAX_FLOWS}"),
            GenError::Burst(n) => write!(f, "burst {n} invalid: must be at least 1"),
        }
    }
}

impl std::error::Error for GenError {}

/// splitmix64: small, fast, good enough for sizes and ISNs.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One frame of the cycle.
struct Slot {
    frame: Vec<u8>,
    tcp: bool,
    /// Source address, port and checksums final (precomputed period).
    baked: bool,
    payload_len: u32,
    /// Ones-complement sum of the IP header with checksum zero (and source
    /// address zero unless baked).
    ip_sum: u64,
    /// Sum of pseudo header and segment with checksum and sequence number
    /// zero (and source address and port zero unless baked).
    l4_sum: u64,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The frame generator wire. Frames the NIC transmits are dropped.
pub struct Generator {
    cfg: GenConfig,
    slots: Vec<Slot>,
    /// Next TCP sequence number per flow (empty for UDP only).
    seq: Vec<u32>,
    /// Frames generated; `slot`, `flow` and `in_burst` are `n` modulo the
    /// cycle length, `(n / burst)` modulo the flow count and `n` modulo the
    /// burst, kept as counters to avoid divisions per frame.
    n: u64,
    slot: usize,
    flow: u32,
    in_burst: u32,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("cfg", &self.cfg)
            .field("generated", &self.n)
            .finish_non_exhaustive()
    }
}

fn flow_src(flow: u32) -> ([u8; 4], u16) {
    let host = flow % 65536;
    (
        [198, 18, (host >> 8) as u8, host as u8],
        1024 + (flow % 64512) as u16,
    )
}

impl Generator {
    pub fn new(cfg: GenConfig) -> Result<Generator, GenError> {
        if cfg.flows == 0 || cfg.flows > MAX_FLOWS {
            return Err(GenError::Flows(cfg.flows));
        }
        if cfg.burst == 0 {
            return Err(GenError::Burst(cfg.burst));
        }
        let mut rng = cfg.seed ^ 0x6A09_E667_F3BC_C908;
        let sizes: Vec<usize> = match cfg.frame_size {
            FrameSize::Fixed(n) => vec![n],
            FrameSize::Range { min, max } => {
                if min > max {
                    return Err(GenError::FrameSize { min, max });
                }
                let span = (max - min + 1) as u64;
                (0..MAX_TEMPLATES)
                    .map(|_| min + (splitmix(&mut rng) % span) as usize)
                    .collect()
            }
            FrameSize::Imix => IMIX.to_vec(),
        };
        let (min, max) = (
            sizes.iter().min().copied().unwrap_or(0),
            sizes.iter().max().copied().unwrap_or(0),
        );
        if min < frames::ETH_ZLEN || max > MAX_JUMBO {
            return Err(GenError::FrameSize { min, max });
        }
        let protos: &[bool] = match cfg.proto {
            Proto::Udp => &[false],
            Proto::Tcp => &[true],
            Proto::Mixed => &[false, true],
        };
        let kinds: Vec<(usize, bool)> = protos
            .iter()
            .flat_map(|&tcp| sizes.iter().map(move |&s| (s, tcp)))
            .collect();
        let t = kinds.len() as u64;
        let round = cfg.flows as u64 * cfg.burst as u64;
        let period = (t / gcd(t, round)).saturating_mul(round);
        let slots = if period <= MAX_TEMPLATES as u64 {
            (0..period as usize)
                .map(|i| {
                    let (size, tcp) = kinds[i % kinds.len()];
                    let flow = (i as u64 / cfg.burst as u64 % cfg.flows as u64) as u32;
                    Self::slot(&cfg, i % kinds.len(), size, tcp, Some(flow))
                })
                .collect()
        } else {
            kinds
                .iter()
                .enumerate()
                .map(|(i, &(size, tcp))| Self::slot(&cfg, i, size, tcp, None))
                .collect()
        };
        let seq = if cfg.proto == Proto::Udp {
            Vec::new()
        } else {
            (0..cfg.flows)
                .map(|f| splitmix(&mut (cfg.seed ^ ((f as u64) << 32))) as u32)
                .collect()
        };
        Ok(Generator {
            cfg,
            slots,
            seq,
            n: 0,
            slot: 0,
            flow: 0,
            in_burst: 0,
        })
    }

    /// Builds template `index` of `size` bytes; with `flow`, that flow's
    /// addresses are final.
    fn slot(cfg: &GenConfig, index: usize, size: usize, tcp: bool, flow: Option<u32>) -> Slot {
        let (src_ip, src_port) = flow.map_or(([0; 4], 0), flow_src);
        let b = Builder {
            dst_mac: cfg.dst_mac,
            src_mac: SRC_MAC,
            src_ip,
            dst_ip: DST_IP,
            ip_id: index as u16,
            ..Builder::default()
        };
        let hdrs = L4
            + if tcp {
                tcp::MIN_HEADER_LEN
            } else {
                udp::HEADER_LEN
            };
        let payload = frames::payload_pattern(size - hdrs, (cfg.seed as u8) ^ (index as u8));
        let mut frame = if tcp {
            let t = Tcp {
                src_port,
                dst_port: DST_PORT,
                seq: 0,
                ack: 1,
                flags: TCP_ACK | TCP_PSH,
                ..Tcp::default()
            };
            b.tcp(&t, &payload)
        } else {
            b.udp(src_port, DST_PORT, &payload)
        };
        let baked = flow.is_some();
        // Keep the checksums the builder computed where nothing changes later.
        if !baked {
            frame[IP_CSUM..IP_CSUM + 2].fill(0);
        }
        let csum = if tcp { TCP_CSUM } else { UDP_CSUM };
        let saved = [
            frame[csum],
            frame[csum + 1],
            frame[IP_CSUM],
            frame[IP_CSUM + 1],
        ];
        frame[csum..csum + 2].fill(0);
        frame[IP_CSUM..IP_CSUM + 2].fill(0);
        let ip_sum = sum(&frame[L3..L4], 0);
        let proto = if tcp {
            frames::IPPROTO_TCP
        } else {
            frames::IPPROTO_UDP
        };
        let pseudo = pseudo_header(&frame[IP_ADDRS], proto, (size - L4) as u32);
        let l4_sum = sum(&frame[L4..], pseudo);
        frame[IP_CSUM..IP_CSUM + 2].copy_from_slice(&saved[2..]);
        if baked && !tcp {
            frame[csum..csum + 2].copy_from_slice(&saved[..2]);
        }
        Slot {
            frame,
            tcp,
            baked,
            payload_len: payload.len() as u32,
            ip_sum,
            l4_sum,
        }
    }

    pub fn config(&self) -> &GenConfig {
        &self.cfg
    }

    /// Frames generated so far.
    pub fn generated(&self) -> u64 {
        self.n
    }

    /// Number of frames kept in the cycle (the whole period when it is
    /// short, else one per size/protocol template).
    pub fn cycle_len(&self) -> usize {
        self.slots.len()
    }

    /// The first `n` frames a generator with this config produces (fewer if
    /// `count` stops it earlier), independent of this one's position.
    pub fn expected(&self, n: usize) -> Vec<Vec<u8>> {
        let Ok(mut g) = Generator::new(self.cfg.clone()) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match g.recv() {
                Some(f) => out.push(f.to_vec()),
                None => break,
            }
        }
        out
    }
}

impl Wire for Generator {
    #[inline]
    fn recv(&mut self) -> Option<&[u8]> {
        if self.cfg.count.is_some_and(|c| self.n >= c) {
            return None;
        }
        let (idx, flow) = (self.slot, self.flow);
        self.n += 1;
        self.slot = if idx + 1 == self.slots.len() {
            0
        } else {
            idx + 1
        };
        self.in_burst += 1;
        if self.in_burst == self.cfg.burst {
            self.in_burst = 0;
            self.flow = if flow + 1 == self.cfg.flows {
                0
            } else {
                flow + 1
            };
        }
        let t = &mut self.slots[idx];
        let f = &mut t.frame;
        let mut l4 = t.l4_sum;
        if !t.baked {
            let (ip, port) = flow_src(flow);
            f[IP_SRC..IP_SRC + 4].copy_from_slice(&ip);
            f[L4..L4 + 2].copy_from_slice(&port.to_be_bytes());
            let ip_words =
                ((ip[0] as u64) << 8 | ip[1] as u64) + ((ip[2] as u64) << 8 | ip[3] as u64);
            f[IP_CSUM..IP_CSUM + 2].copy_from_slice(&(!fold(t.ip_sum + ip_words)).to_be_bytes());
            l4 += ip_words + port as u64;
            if !t.tcp {
                let c = match !fold(l4) {
                    0 => 0xFFFF,
                    c => c,
                };
                f[UDP_CSUM..UDP_CSUM + 2].copy_from_slice(&c.to_be_bytes());
            }
        }
        if t.tcp {
            let seq = &mut self.seq[flow as usize];
            f[TCP_SEQ..TCP_SEQ + 4].copy_from_slice(&seq.to_be_bytes());
            l4 += (*seq >> 16) as u64 + (*seq & 0xFFFF) as u64;
            *seq = seq.wrapping_add(t.payload_len);
            f[TCP_CSUM..TCP_CSUM + 2].copy_from_slice(&(!fold(l4)).to_be_bytes());
        }
        Some(&t.frame)
    }

    fn send(&mut self, _frame: &[u8]) {}

    fn name(&self) -> String {
        format!(
            "generator {:?} {:?} x{} flows burst {} seed {}",
            self.cfg.proto, self.cfg.frame_size, self.cfg.flows, self.cfg.burst, self.cfg.seed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{L3, L4 as L4P};
    use std::collections::HashMap;

    fn cfg(size: FrameSize, proto: Proto, flows: u32) -> GenConfig {
        GenConfig {
            frame_size: size,
            proto,
            flows,
            seed: 42,
            ..GenConfig::default()
        }
    }

    #[test]
    fn rejects_invalid_configs() {
        assert_eq!(
            Generator::new(cfg(FrameSize::Fixed(59), Proto::Udp, 1)).unwrap_err(),
            GenError::FrameSize { min: 59, max: 59 }
        );
        assert!(Generator::new(cfg(FrameSize::Fixed(9217), Proto::Udp, 1)).is_err());
        assert!(
            Generator::new(cfg(FrameSize::Range { min: 100, max: 99 }, Proto::Udp, 1)).is_err()
        );
        assert!(Generator::new(cfg(FrameSize::Range { min: 10, max: 99 }, Proto::Udp, 1)).is_err());
        assert_eq!(
            Generator::new(cfg(FrameSize::Fixed(60), Proto::Udp, 0)).unwrap_err(),
            GenError::Flows(0)
        );
        assert!(Generator::new(cfg(FrameSize::Fixed(60), Proto::Udp, MAX_FLOWS + 1)).is_err());
        assert_eq!(
            Generator::new(GenConfig {
                burst: 0,
                ..GenConfig::default()
            })
            .unwrap_err(),
            GenError::Burst(0)
        );
        let e = Generator::new(cfg(FrameSize::Fixed(59), Proto::Udp, 1)).unwrap_err();
        assert!(e.to_string().contains("60..=9216"));
    }

    #[test]
    fn deterministic_and_valid() {
        for c in [
            cfg(FrameSize::Fixed(60), Proto::Udp, 3),
            cfg(FrameSize::Fixed(9216), Proto::Tcp, 2),
            cfg(FrameSize::Range { min: 60, max: 9216 }, Proto::Mixed, 1000),
            cfg(FrameSize::Imix, Proto::Mixed, 7),
            GenConfig {
                burst: 16,
                ..cfg(FrameSize::Fixed(1502), Proto::Tcp, 5)
            },
            GenConfig {
                burst: 3,
                ..cfg(FrameSize::Range { min: 60, max: 1514 }, Proto::Tcp, 2000)
            },
            GenConfig {
                burst: 1000,
                ..cfg(FrameSize::Imix, Proto::Mixed, 3)
            },
        ] {
            let mut a = Generator::new(c.clone()).unwrap();
            let expected = a.expected(600);
            assert_eq!(expected.len(), 600);
            let mut next_seq: HashMap<([u8; 4], u16), u32> = HashMap::new();
            for (i, e) in expected.iter().enumerate() {
                let f = a.recv().unwrap();
                assert_eq!(f, &e[..], "frame {i} differs between runs");
                assert!((60..=9216).contains(&f.len()));
                assert_eq!(f[..6], c.dst_mac);
                let p = frames::parse(f);
                assert_eq!(p.l3, L3::Ipv4);
                assert_eq!(
                    frames::ipv4_header_ok(f, &p),
                    Some(true),
                    "frame {i} IP checksum"
                );
                assert_eq!(
                    frames::l4_checksum_ok(f, &p),
                    Some(true),
                    "frame {i} L4 checksum"
                );
                // Source in 198.18.0.0/15.
                assert_eq!(f[26], 198);
                assert!(f[27] == 18 || f[27] == 19);
                if p.l4 == L4P::Tcp {
                    let key = (
                        [f[26], f[27], f[28], f[29]],
                        u16::from_be_bytes([f[34], f[35]]),
                    );
                    let seq = u32::from_be_bytes([f[38], f[39], f[40], f[41]]);
                    if let Some(&want) = next_seq.get(&key) {
                        assert_eq!(seq, want, "frame {i}: TCP sequence out of order");
                    }
                    next_seq.insert(key, seq.wrapping_add((f.len() - p.l5_off) as u32));
                }
            }
        }
        // A different seed gives different frames.
        let x = Generator::new(cfg(FrameSize::Range { min: 60, max: 1514 }, Proto::Udp, 4))
            .unwrap()
            .expected(8);
        let y = Generator::new(GenConfig {
            seed: 7,
            ..cfg(FrameSize::Range { min: 60, max: 1514 }, Proto::Udp, 4)
        })
        .unwrap()
        .expected(8);
        assert_ne!(x, y);
    }

    #[test]
    fn count_and_flows() {
        let mut g = Generator::new(GenConfig {
            count: Some(5),
            flows: 5,
            ..GenConfig::default()
        })
        .unwrap();
        let mut srcs = std::collections::HashSet::new();
        for _ in 0..5 {
            let f = g.recv().unwrap();
            srcs.insert((f[28], f[29], f[34], f[35]));
        }
        assert!(g.recv().is_none());
        assert_eq!(srcs.len(), 5);
        assert_eq!(g.generated(), 5);
        assert_eq!(g.expected(10).len(), 5);
        let imix = Generator::new(cfg(FrameSize::Imix, Proto::Udp, 1))
            .unwrap()
            .expected(12);
        let mut sizes: Vec<usize> = imix.iter().map(|f| f.len()).collect();
        sizes.sort();
        assert_eq!(
            sizes,
            [60, 60, 60, 60, 60, 60, 60, 590, 590, 590, 590, 1514]
        );
    }

    #[test]
    fn bursts_keep_a_flow_together() {
        for flows in [1, 3, 1000] {
            let c = GenConfig {
                burst: 4,
                ..cfg(FrameSize::Fixed(200), Proto::Tcp, flows)
            };
            let frames = Generator::new(c).unwrap().expected(48);
            let src = |f: &Vec<u8>| (f[28], f[29], f[34], f[35]);
            for (i, f) in frames.iter().enumerate() {
                let first = &frames[i / 4 * 4];
                assert_eq!(
                    src(f),
                    src(first),
                    "flows {flows}: frame {i} left its burst"
                );
                if flows > 1 && i >= 4 && i % 4 == 0 {
                    assert_ne!(
                        src(f),
                        src(&frames[i - 1]),
                        "flows {flows}: next burst, next flow"
                    );
                }
            }
        }
    }

    #[test]
    fn short_periods_are_precomputed() {
        let g = |size, proto, flows| Generator::new(cfg(size, proto, flows)).unwrap().cycle_len();
        assert_eq!(g(FrameSize::Fixed(60), Proto::Udp, 64), 64);
        assert_eq!(g(FrameSize::Imix, Proto::Mixed, 8), 24);
        assert_eq!(
            g(FrameSize::Fixed(60), Proto::Udp, 1000),
            1,
            "long period: patched per frame"
        );
        assert_eq!(
            g(FrameSize::Range { min: 60, max: 100 }, Proto::Tcp, 3),
            256
        );
        let b = |burst, flows| {
            Generator::new(GenConfig {
                burst,
                ..cfg(FrameSize::Fixed(60), Proto::Tcp, flows)
            })
            .unwrap()
            .cycle_len()
        };
        assert_eq!(b(16, 4), 64);
        assert_eq!(b(16, 64), 1, "long period: patched per frame");
    }
}
