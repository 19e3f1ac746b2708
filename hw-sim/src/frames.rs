//! Ethernet frames: builders, and the parser they are checked with.
//!
//! This module owns the packet formats the simulator and its tests speak:
//!
//! - [`Builder`] emits complete frames (Ethernet + IPv4/IPv6 + UDP/TCP/ICMP,
//!   or a non-IP ethertype) with valid checksums, optional IPv4 options,
//!   TCP options and a VLAN tag. The traffic generator and the tests use it.
//! - [`parse`], [`ipv4_header_ok`] and [`l4_checksum_ok`] (from the
//!   `packet` crate's `parse`) find the L3/L4/L5 offsets the way QEMU's
//!   `eth_get_protocols` does and verify checksums; the device model uses
//!   them to place header split and to fill the packet type and checksum
//!   bits of the write-back.
//!
//! Field offsets and checksums come from the `packet` crate; the constants
//! below are its values under the names the simulator uses.
//!
//! ```
//! use hw_sim::frames::{self, Builder, L3, L4};
//! let f = Builder::default().udp_len(242, 1000, 2000);
//! assert_eq!(f.len(), 242);
//! let p = frames::parse(&f);
//! assert_eq!((p.l3, p.l4, p.l5_off), (L3::Ipv4, L4::Udp, 42));
//! assert_eq!(frames::l4_checksum_ok(&f, &p), Some(true));
//! ```

use packet::checksum::pseudo_header;
use packet::{ethernet, ip_proto, ipv4, ipv6, tcp, udp};

pub use packet::checksum::checksum;
pub use packet::parse::{ipv4_header_ok, l4_checksum_ok, parse, Parsed, L3, L4};

// The names the simulator and its tests use, for the constants the
// `packet` crate declares.

/// Ethernet header length without VLAN tags.
pub const ETH_HLEN: usize = ethernet::HEADER_LEN;
/// Minimum frame length without FCS; shorter frames are padded by the MAC.
pub const ETH_ZLEN: usize = ethernet::MIN_FRAME_LEN;
/// Largest frame the generator emits (jumbo, without FCS).
pub const MAX_JUMBO: usize = 9216;

pub const ETHERTYPE_IPV4: u16 = ethernet::ethertype::IPV4;
pub const ETHERTYPE_IPV6: u16 = ethernet::ethertype::IPV6;
pub const ETHERTYPE_VLAN: u16 = ethernet::ethertype::VLAN;
pub const ETHERTYPE_QINQ: u16 = ethernet::ethertype::QINQ;
/// IEEE local experimental ethertype: the non-IP test frame.
pub const ETHERTYPE_LOCAL_EXP: u16 = ethernet::ethertype::LOCAL_EXP;

pub const IPPROTO_ICMP: u8 = ip_proto::ICMP;
pub const IPPROTO_TCP: u8 = ip_proto::TCP;
pub const IPPROTO_UDP: u8 = ip_proto::UDP;
pub const IPPROTO_SCTP: u8 = ip_proto::SCTP;

pub const TCP_FIN: u8 = tcp::flags::FIN;
pub const TCP_SYN: u8 = tcp::flags::SYN;
pub const TCP_PSH: u8 = tcp::flags::PSH;
pub const TCP_ACK: u8 = tcp::flags::ACK;

// ---------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------

/// TCP header fields for [`Builder::tcp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tcp {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    /// `TCP_*` flag bits.
    pub flags: u8,
    pub window: u16,
    /// Raw option bytes, padded with NOPs to a multiple of 4 (at most 40).
    pub options: Vec<u8>,
}

impl Default for Tcp {
    fn default() -> Self {
        Tcp {
            src_port: 1024,
            dst_port: 80,
            seq: 1,
            ack: 0,
            flags: TCP_ACK | TCP_PSH,
            window: 65535,
            options: Vec::new(),
        }
    }
}

/// IPv4 fragmentation fields for [`Builder::fragment`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fragment {
    /// Offset in 8-byte units.
    pub offset: u16,
    pub more: bool,
}

/// Frame builder: addresses and IP fields shared by all the frames it emits.
/// Fields are public; set what you need and keep the defaults for the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Builder {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// 802.1Q tag (TCI) inserted after the source MAC.
    pub vlan: Option<u16>,
    pub src_ip: [u8; 4],
    pub dst_ip: [u8; 4],
    pub src_ip6: [u8; 16],
    pub dst_ip6: [u8; 16],
    pub ip_id: u16,
    pub ttl: u8,
    /// Raw IPv4 option bytes, padded with zeros (EOL) to a multiple of 4 (at most 40).
    pub ip_options: Vec<u8>,
    /// Make the IPv4 packet a fragment.
    pub fragment: Option<Fragment>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            dst_mac: [0x02, 0, 0, 0, 0, 0x01],
            src_mac: [0x02, 0, 0, 0, 0, 0x02],
            vlan: None,
            src_ip: [198, 18, 0, 1],
            dst_ip: [198, 19, 0, 1],
            src_ip6: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            dst_ip6: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            ip_id: 1,
            ttl: 64,
            ip_options: Vec::new(),
            fragment: None,
        }
    }
}

fn pad4(opts: &[u8], fill: u8) -> Vec<u8> {
    let mut v = opts[..opts.len().min(40)].to_vec();
    while v.len() & 3 != 0 {
        v.push(fill);
    }
    v
}

/// Deterministic payload bytes: `len` bytes of a pattern derived from `seed`.
pub fn payload_pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

impl Builder {
    fn eth(&self, out: &mut Vec<u8>, ethertype: u16) {
        out.extend_from_slice(&self.dst_mac);
        out.extend_from_slice(&self.src_mac);
        if let Some(tci) = self.vlan {
            out.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
            out.extend_from_slice(&tci.to_be_bytes());
        }
        out.extend_from_slice(&ethertype.to_be_bytes());
    }

    /// Ethernet header length this builder emits.
    pub fn l2_len(&self) -> usize {
        ETH_HLEN
            + if self.vlan.is_some() {
                ethernet::VLAN_TAG_LEN
            } else {
                0
            }
    }

    /// IPv4 header length this builder emits.
    pub fn ipv4_hdr_len(&self) -> usize {
        ipv4::MIN_HEADER_LEN + pad4(&self.ip_options, 0).len()
    }

    /// An IPv4 packet carrying `l4` (whose checksum, if any, the caller
    /// already computed) as protocol `proto`.
    pub fn ipv4(&self, proto: u8, l4: &[u8]) -> Vec<u8> {
        let opts = pad4(&self.ip_options, 0);
        let ihl = ipv4::MIN_HEADER_LEN + opts.len();
        let mut f = Vec::with_capacity(self.l2_len() + ihl + l4.len());
        self.eth(&mut f, ETHERTYPE_IPV4);
        let ip = f.len();
        f.resize(ip + ipv4::MIN_HEADER_LEN, 0);
        f.extend_from_slice(&opts);
        let frag = match self.fragment {
            Some(fr) => {
                (fr.offset & ipv4::FRAG_OFFSET) | if fr.more { ipv4::MORE_FRAGS } else { 0 }
            }
            None => ipv4::DONT_FRAG,
        };
        let mut h = ipv4::Packet::new_unchecked(&mut f[ip..]);
        h.set_header_len(ihl);
        h.set_total_len((ihl + l4.len()) as u16);
        h.set_ident(self.ip_id);
        h.set_flags_frag(frag);
        h.set_ttl(self.ttl);
        h.set_protocol(proto);
        h.set_src_addr(self.src_ip);
        h.set_dst_addr(self.dst_ip);
        h.fill_checksum();
        f.extend_from_slice(l4);
        f
    }

    fn pseudo_v4(&self, proto: u8, len: usize) -> u64 {
        let mut addrs = [0u8; 8];
        addrs[..4].copy_from_slice(&self.src_ip);
        addrs[4..].copy_from_slice(&self.dst_ip);
        pseudo_header(&addrs, proto, len as u32)
    }

    /// Ethernet + IPv4 + UDP with a valid checksum.
    pub fn udp(&self, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let len = udp::HEADER_LEN + payload.len();
        let seg = udp_segment(
            src_port,
            dst_port,
            payload,
            self.pseudo_v4(IPPROTO_UDP, len),
        );
        self.ipv4(IPPROTO_UDP, &seg)
    }

    /// A UDP frame of exactly `total_len` bytes (at least the headers), with
    /// [`payload_pattern`] payload.
    pub fn udp_len(&self, total_len: usize, src_port: u16, dst_port: u16) -> Vec<u8> {
        let hdrs = self.l2_len() + self.ipv4_hdr_len() + udp::HEADER_LEN;
        self.udp(
            src_port,
            dst_port,
            &payload_pattern(total_len.saturating_sub(hdrs), 0),
        )
    }

    /// Ethernet + IPv4 + TCP with a valid checksum.
    pub fn tcp(&self, t: &Tcp, payload: &[u8]) -> Vec<u8> {
        let mut seg = tcp_segment(t, payload);
        let pseudo = self.pseudo_v4(IPPROTO_TCP, seg.len());
        tcp::Packet::new_unchecked(&mut seg[..]).fill_checksum(pseudo);
        self.ipv4(IPPROTO_TCP, &seg)
    }

    /// An ICMP echo request (an IPv4 frame that is neither TCP nor UDP).
    pub fn icmp_echo(&self, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        // Type 8 (echo request), code 0, checksum, identifier, sequence.
        let mut m = vec![8, 0, 0, 0];
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(payload);
        let c = checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        self.ipv4(IPPROTO_ICMP, &m)
    }

    /// Ethernet + IPv6 + UDP with a valid checksum.
    pub fn udp6(&self, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let len = udp::HEADER_LEN + payload.len();
        let mut f = Vec::with_capacity(self.l2_len() + ipv6::HEADER_LEN + len);
        self.eth(&mut f, ETHERTYPE_IPV6);
        let ip = f.len();
        f.resize(ip + ipv6::HEADER_LEN, 0);
        let mut h = ipv6::Packet::new_unchecked(&mut f[ip..]);
        h.set_version();
        h.set_payload_len(len as u16);
        h.set_next_header(IPPROTO_UDP);
        h.set_hop_limit(self.ttl);
        h.set_src_addr(self.src_ip6);
        h.set_dst_addr(self.dst_ip6);
        let pseudo = pseudo_header(h.addrs(), IPPROTO_UDP, len as u32);
        f.extend_from_slice(&udp_segment(src_port, dst_port, payload, pseudo));
        f
    }

    /// A non-IP frame with the given ethertype (e.g. [`ETHERTYPE_LOCAL_EXP`]).
    pub fn non_ip(&self, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(self.l2_len() + payload.len());
        self.eth(&mut f, ethertype);
        f.extend_from_slice(payload);
        f
    }

    /// A non-IP frame of exactly `total_len` bytes, ethertype 0x88B5.
    pub fn non_ip_len(&self, total_len: usize) -> Vec<u8> {
        self.non_ip(
            ETHERTYPE_LOCAL_EXP,
            &payload_pattern(total_len.saturating_sub(self.l2_len()), 0),
        )
    }
}

/// A UDP/IPv4 frame of exactly `len` bytes (at least 42) to the simulator's
/// default MAC, payload [`payload_pattern`] of `seed`, IP id `seed`.
pub fn udp_frame(len: usize, seed: u8) -> Vec<u8> {
    let b = Builder {
        ip_id: seed as u16,
        ..Builder::default()
    };
    b.udp(
        1000 + seed as u16,
        2000,
        &payload_pattern(len.saturating_sub(42), seed),
    )
}

/// A TCP/IPv4 frame of exactly `len` bytes with `opts_len` bytes of TCP
/// options (NOPs, rounded up to 4, at most 40).
pub fn tcp_frame(len: usize, seed: u8, opts_len: usize) -> Vec<u8> {
    let b = Builder {
        ip_id: seed as u16,
        ..Builder::default()
    };
    let t = Tcp {
        src_port: 1000 + seed as u16,
        seq: seed as u32 * 1000,
        options: vec![1; opts_len.min(40)],
        ..Tcp::default()
    };
    let hdrs = 54 + pad4(&t.options, 1).len();
    b.tcp(&t, &payload_pattern(len.saturating_sub(hdrs), seed))
}

/// A non-IP frame (ethertype 0x88B5) of exactly `len` bytes (at least 14).
pub fn non_ip_frame(len: usize, seed: u8) -> Vec<u8> {
    Builder::default().non_ip(
        ETHERTYPE_LOCAL_EXP,
        &payload_pattern(len.saturating_sub(ETH_HLEN), seed),
    )
}

/// An ICMP echo request frame of exactly `len` bytes (at least 42).
pub fn icmp_frame(len: usize, seed: u8) -> Vec<u8> {
    let b = Builder {
        ip_id: seed as u16,
        ..Builder::default()
    };
    b.icmp_echo(
        seed as u16,
        1,
        &payload_pattern(len.saturating_sub(42), seed),
    )
}

/// A UDP/IPv6 frame of exactly `len` bytes (at least 62).
pub fn udp6_frame(len: usize, seed: u8) -> Vec<u8> {
    Builder::default().udp6(
        1000 + seed as u16,
        2000,
        &payload_pattern(len.saturating_sub(62), seed),
    )
}

/// UDP header + payload with its checksum over `pseudo`.
fn udp_segment(src: u16, dst: u16, payload: &[u8], pseudo: u64) -> Vec<u8> {
    let len = udp::HEADER_LEN + payload.len();
    let mut s = vec![0u8; udp::HEADER_LEN];
    s.extend_from_slice(payload);
    let mut u = udp::Packet::new_unchecked(&mut s[..]);
    u.set_src_port(src);
    u.set_dst_port(dst);
    u.set_len(len as u16);
    u.fill_checksum(pseudo);
    s
}

/// TCP header + payload with the checksum field zero.
fn tcp_segment(t: &Tcp, payload: &[u8]) -> Vec<u8> {
    let opts = pad4(&t.options, 1);
    let hlen = tcp::MIN_HEADER_LEN + opts.len();
    let mut s = vec![0u8; tcp::MIN_HEADER_LEN];
    s.extend_from_slice(&opts);
    s.extend_from_slice(payload);
    let mut h = tcp::Packet::new_unchecked(&mut s[..]);
    h.set_src_port(t.src_port);
    h.set_dst_port(t.dst_port);
    h.set_seq(t.seq);
    h.set_ack(t.ack);
    h.set_header_len(hlen);
    h.set_flags(t.flags);
    h.set_window(t.window);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_offsets_and_checksums() {
        let f = Builder::default().udp_len(242, 1, 2);
        assert_eq!(f.len(), 242);
        let p = parse(&f);
        assert_eq!(p.l3, L3::Ipv4);
        assert_eq!((p.l3_off, p.l4_off, p.l5_off), (14, 34, 42));
        assert_eq!(ipv4_header_ok(&f, &p), Some(true));
        assert_eq!(l4_checksum_ok(&f, &p), Some(true));
    }

    #[test]
    fn tcp_with_options_and_ip_options() {
        let b = Builder {
            ip_options: vec![0x94, 0x04, 0, 0],
            ..Builder::default()
        };
        let t = Tcp {
            options: vec![1; 40],
            ..Tcp::default()
        };
        let f = b.tcp(&t, b"hello");
        let p = parse(&f);
        assert_eq!(p.l4, L4::Tcp);
        assert_eq!((p.l4_off, p.l5_off), (38, 38 + 60));
        assert_eq!(ipv4_header_ok(&f, &p), Some(true));
        assert_eq!(l4_checksum_ok(&f, &p), Some(true));
        let mut bad = f.clone();
        *bad.last_mut().unwrap() ^= 0xFF;
        assert_eq!(l4_checksum_ok(&bad, &parse(&bad)), Some(false));
        bad[p.l3_off + 8] ^= 1; // TTL
        assert_eq!(ipv4_header_ok(&bad, &parse(&bad)), Some(false));
    }

    #[test]
    fn icmp_fragment_ipv6_non_ip_vlan() {
        let b = Builder::default();
        let p = parse(&b.icmp_echo(1, 1, &[0; 32]));
        assert_eq!(
            (p.l3, p.l4, p.l4_off),
            (L3::Ipv4, L4::Other(IPPROTO_ICMP), 34)
        );

        let fr = Builder {
            fragment: Some(Fragment {
                offset: 0,
                more: true,
            }),
            ..Builder::default()
        };
        let p = parse(&fr.udp(1, 2, &[0; 100]));
        assert!(p.fragment);
        assert_eq!((p.l3, p.l4), (L3::Ipv4, L4::None));

        let f6 = b.udp6(7, 9, &[1, 2, 3]);
        let p = parse(&f6);
        assert_eq!(
            (p.l3, p.l4, p.l4_off, p.l5_off),
            (L3::Ipv6, L4::Udp, 54, 62)
        );
        assert_eq!(l4_checksum_ok(&f6, &p), Some(true));
        assert_eq!(ipv4_header_ok(&f6, &p), None);

        let p = parse(&b.non_ip_len(100));
        assert_eq!((p.ethertype, p.l3), (ETHERTYPE_LOCAL_EXP, L3::None));

        let v = Builder {
            vlan: Some(5),
            ..Builder::default()
        };
        let f = v.udp(1, 2, &[0; 10]);
        let p = parse(&f);
        assert_eq!((p.vlans, p.l3_off, p.l5_off), (1, 18, 46));
        assert_eq!(l4_checksum_ok(&f, &p), Some(true));
    }

    #[test]
    fn truncated_builder_frames_never_panic() {
        // Random bytes: `packet::parse`'s own tests.
        let f = Builder::default().tcp(&Tcp::default(), &[0; 20]);
        for n in 0..f.len() {
            let p = parse(&f[..n]);
            let _ = ipv4_header_ok(&f[..n], &p);
            let _ = l4_checksum_ok(&f[..n], &p);
        }
    }

    #[test]
    fn sized_helpers() {
        for len in [64, 242, 1514, 9216] {
            for f in [
                udp_frame(len, 3),
                tcp_frame(len, 3, if len < 70 { 0 } else { 12 }),
                non_ip_frame(len, 3),
                icmp_frame(len, 3),
                udp6_frame(len, 3),
            ] {
                assert_eq!(f.len(), len);
                let p = parse(&f);
                assert_ne!(l4_checksum_ok(&f, &p), Some(false));
                assert_ne!(ipv4_header_ok(&f, &p), Some(false));
            }
        }
        assert_eq!(parse(&tcp_frame(400, 1, 40)).l5_off, 94);
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        use packet::checksum::{fold, sum as ones_sum};
        // RFC 1071 section 3 example: words 0001 f203 f4f5 f6f7 sum to ddf2.
        assert_eq!(
            fold(ones_sum(
                &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7],
                0
            )),
            0xddf2
        );
        // Odd length pads with zero.
        assert_eq!(fold(ones_sum(&[0x01], 0)), 0x0100);
    }
}
