//! Ethernet frames: builders, a minimal parser and Internet checksums.
//!
//! This module owns the packet formats the simulator and its tests speak:
//!
//! - [`Builder`] emits complete frames (Ethernet + IPv4/IPv6 + UDP/TCP/ICMP,
//!   or a non-IP ethertype) with valid checksums, optional IPv4 options,
//!   TCP options and a VLAN tag. The traffic generator and the tests use it.
//! - [`parse`] finds the L3/L4/L5 offsets the way QEMU's `eth_get_protocols`
//!   does; the device model uses it to place header split and to fill the
//!   packet type and checksum bits of the write-back.
//! - [`ones_sum`], [`fold`], [`ipv4_header_ok`] and [`l4_checksum_ok`] are the
//!   checksum helpers.
//!
//! Parsing never panics, whatever the input: every read is bounds-checked and
//! a truncated header simply stops the parse.
//!
//! ```
//! use hw_sim::frames::{self, Builder, L3, L4};
//! let f = Builder::default().udp_len(242, 1000, 2000);
//! assert_eq!(f.len(), 242);
//! let p = frames::parse(&f);
//! assert_eq!((p.l3, p.l4, p.l5_off), (L3::Ipv4, L4::Udp, 42));
//! assert_eq!(frames::l4_checksum_ok(&f, &p), Some(true));
//! ```

/// Ethernet header length without VLAN tags.
pub const ETH_HLEN: usize = 14;
/// Minimum frame length without FCS; shorter frames are padded by the MAC.
pub const ETH_ZLEN: usize = 60;
/// Largest frame the generator emits (jumbo, without FCS).
pub const MAX_JUMBO: usize = 9216;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86DD;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88A8;
/// IEEE local experimental ethertype: the non-IP test frame.
pub const ETHERTYPE_LOCAL_EXP: u16 = 0x88B5;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

// ---------------------------------------------------------------------------
// Checksums
// ---------------------------------------------------------------------------

/// Adds `data` as big-endian 16-bit words to a ones-complement accumulator.
/// An odd trailing byte is padded with zero, as RFC 1071 asks.
///
/// The words are summed in native (little-endian) order and the folded sum
/// is byte-swapped once at the end (RFC 1071 2(B): the ones-complement sum
/// commutes with byte swapping); 2^32 = 1 mod 0xFFFF, so adding 32-bit
/// halves of 64-bit loads folds to the same sum. Headers (the common case)
/// take a plain scalar loop; long payloads a vectorisable one.
#[inline]
pub fn ones_sum(data: &[u8], init: u64) -> u64 {
    let mut acc = 0u64;
    let mut rest = data;
    if rest.len() >= 256 {
        let mut chunks = rest.chunks_exact(8);
        for c in &mut chunks {
            let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            acc += (v & 0xFFFF_FFFF) + (v >> 32);
        }
        rest = chunks.remainder();
    }
    while let [a, b, c, d, e, f, g, h, tail @ ..] = rest {
        let v = u64::from_le_bytes([*a, *b, *c, *d, *e, *f, *g, *h]);
        acc += (v & 0xFFFF_FFFF) + (v >> 32);
        rest = tail;
    }
    while let [a, b, tail @ ..] = rest {
        acc += u16::from_le_bytes([*a, *b]) as u64;
        rest = tail;
    }
    if let [a] = rest {
        acc += *a as u64;
    }
    init + fold(acc).swap_bytes() as u64
}

/// Folds an accumulator to 16 bits (not complemented).
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    acc as u16
}

/// The Internet checksum of `data` (complemented fold).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(ones_sum(data, 0))
}

fn pseudo_v4(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u64 {
    ones_sum(src, 0) + ones_sum(dst, 0) + proto as u64 + (len as u64 & 0xFFFF)
}

fn pseudo_v6(src: &[u8], dst: &[u8], next: u8, len: usize) -> u64 {
    ones_sum(src, 0) + ones_sum(dst, 0) + (len as u64 >> 16) + (len as u64 & 0xFFFF) + next as u64
}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

/// Network layer found by [`parse`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum L3 {
    #[default]
    None,
    Ipv4,
    Ipv6,
}

/// Transport layer found by [`parse`]. Fragments have none (as in QEMU).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum L4 {
    #[default]
    None,
    Tcp,
    Udp,
    Sctp,
    /// Another IP protocol (ICMP, ESP, ...), by number.
    Other(u8),
}

/// Header offsets of a frame. Offsets are as the headers declare them and
/// may point past the end of a truncated frame: clamp before slicing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Ethertype after any VLAN tags.
    pub ethertype: u16,
    /// Number of VLAN tags (0..=2).
    pub vlans: u8,
    /// Start of the L3 header (after Ethernet and VLAN tags).
    pub l3_off: usize,
    pub l3: L3,
    /// Start of the L4 header; meaningful when `l3 != L3::None`.
    pub l4_off: usize,
    pub l4: L4,
    /// Start of the L4 payload; meaningful for TCP and UDP.
    pub l5_off: usize,
    /// IPv4 MF/offset set, or an IPv6 fragment header present.
    pub fragment: bool,
    /// IPv6 extension headers present.
    pub ipv6_ext: bool,
    /// IPv4 identification.
    pub ip_id: u16,
}

#[inline]
fn be16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(off)?, *b.get(off + 1)?]))
}

/// Parses Ethernet (with up to two VLAN tags), IPv4 or IPv6 (walking
/// extension headers) and TCP/UDP/SCTP, like QEMU's `eth_get_protocols`.
/// Never panics.
pub fn parse(f: &[u8]) -> Parsed {
    let mut p = Parsed::default();
    let Some(mut et) = be16(f, 12) else { return p };
    let mut l3 = ETH_HLEN;
    if et == ETHERTYPE_VLAN || et == ETHERTYPE_QINQ {
        let inner = be16(f, 16).unwrap_or(0);
        if et == ETHERTYPE_QINQ && inner == ETHERTYPE_VLAN {
            p.vlans = 2;
            l3 += 8;
            et = be16(f, 20).unwrap_or(0);
        } else {
            p.vlans = 1;
            l3 += 4;
            et = inner;
        }
    }
    p.ethertype = et;
    p.l3_off = l3;
    let ip_p = match et {
        ETHERTYPE_IPV4 => {
            let Some(h) = f.get(l3..l3 + 20) else {
                return p;
            };
            if h[0] >> 4 != 4 {
                return p;
            }
            p.l3 = L3::Ipv4;
            p.l4_off = l3 + ((h[0] & 0xF) as usize) * 4;
            p.ip_id = u16::from_be_bytes([h[4], h[5]]);
            p.fragment = u16::from_be_bytes([h[6], h[7]]) & 0x3FFF != 0;
            h[9]
        }
        ETHERTYPE_IPV6 => match parse_ipv6(f, l3, &mut p) {
            Some(next) => next,
            None => return p,
        },
        _ => return p,
    };
    if p.fragment {
        return p;
    }
    let l4 = p.l4_off;
    let avail = |n: usize| l4.checked_add(n).is_some_and(|end| end <= f.len());
    p.l4 = match ip_p {
        IPPROTO_TCP if avail(20) => {
            p.l5_off = l4 + ((f[l4 + 12] >> 4) as usize) * 4;
            L4::Tcp
        }
        IPPROTO_UDP if avail(8) => {
            p.l5_off = l4 + 8;
            L4::Udp
        }
        IPPROTO_SCTP if avail(12) => L4::Sctp,
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => L4::None,
        other => L4::Other(other),
    };
    p
}

/// IPv6 fixed header plus extension headers. Returns the upper-layer
/// protocol, or `None` when a header is truncated (QEMU then treats the frame
/// as non-IP).
fn parse_ipv6(f: &[u8], l3: usize, p: &mut Parsed) -> Option<u8> {
    let h = f.get(l3..l3 + 40)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let mut next = h[6];
    let mut off = l3 + 40;
    // Bounded walk: a frame cannot hold more than a few hundred headers, and
    // a loop of headers of length >= 8 always advances.
    for _ in 0..32 {
        let len = match next {
            0 | 43 | 60 | 135 => (*f.get(off + 1)? as usize + 1) * 8,
            44 => {
                p.fragment = true;
                8
            }
            51 => (*f.get(off + 1)? as usize + 2) * 4,
            _ => break,
        };
        f.get(off..off + len)?;
        p.ipv6_ext = true;
        next = f[off];
        off += len;
    }
    p.l3 = L3::Ipv6;
    p.l4_off = off;
    Some(next)
}

/// Verifies the IPv4 header checksum. `None` if the frame is not IPv4.
pub fn ipv4_header_ok(f: &[u8], p: &Parsed) -> Option<bool> {
    if p.l3 != L3::Ipv4 {
        return None;
    }
    let end = p.l4_off.min(f.len());
    let start = p.l3_off.min(end);
    Some(fold(ones_sum(&f[start..end], 0)) == 0xFFFF)
}

/// Verifies the TCP or UDP checksum the way QEMU's `net_rx_pkt` does: the
/// length comes from the UDP header or the IP payload length. `None` when
/// there is nothing to check (not TCP/UDP, IPv4 fragment, UDP checksum 0).
pub fn l4_checksum_ok(f: &[u8], p: &Parsed) -> Option<bool> {
    let l4 = p.l4_off;
    let (proto, csl) = match p.l4 {
        L4::Udp => {
            if be16(f, l4 + 6)? == 0 {
                return None;
            }
            (IPPROTO_UDP, be16(f, l4 + 4)? as usize)
        }
        L4::Tcp => {
            let csl = match p.l3 {
                L3::Ipv4 => (be16(f, p.l3_off + 2)? as usize).wrapping_sub(l4 - p.l3_off) & 0xFFFF,
                L3::Ipv6 => {
                    (be16(f, p.l3_off + 4)? as usize).wrapping_sub(l4 - p.l3_off - 40) & 0xFFFF
                }
                L3::None => return None,
            };
            (IPPROTO_TCP, csl)
        }
        _ => return None,
    };
    // Source and destination addresses are adjacent in both headers: one sum.
    let addrs = match p.l3 {
        L3::Ipv4 => f.get(p.l3_off + 12..p.l3_off + 20)?,
        L3::Ipv6 => f.get(p.l3_off + 8..p.l3_off + 40)?,
        L3::None => return None,
    };
    let pseudo = ones_sum(
        addrs,
        proto as u64 + (csl as u64 >> 16) + (csl as u64 & 0xFFFF),
    );
    let end = l4.saturating_add(csl).min(f.len());
    let start = l4.min(end);
    let sum = fold(ones_sum(&f[start..end], pseudo));
    Some(sum == 0xFFFF || sum == 0)
}

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
        ETH_HLEN + if self.vlan.is_some() { 4 } else { 0 }
    }

    /// IPv4 header length this builder emits.
    pub fn ipv4_hdr_len(&self) -> usize {
        20 + pad4(&self.ip_options, 0).len()
    }

    /// An IPv4 packet carrying `l4` (whose checksum, if any, the caller
    /// already computed) as protocol `proto`.
    pub fn ipv4(&self, proto: u8, l4: &[u8]) -> Vec<u8> {
        let opts = pad4(&self.ip_options, 0);
        let ihl = 20 + opts.len();
        let mut f = Vec::with_capacity(self.l2_len() + ihl + l4.len());
        self.eth(&mut f, ETHERTYPE_IPV4);
        let ip = f.len();
        let frag = match self.fragment {
            Some(fr) => (fr.offset & 0x1FFF) | if fr.more { 0x2000 } else { 0 },
            None => 0x4000, // DF
        };
        f.push(0x40 | (ihl / 4) as u8);
        f.push(0);
        f.extend_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
        f.extend_from_slice(&self.ip_id.to_be_bytes());
        f.extend_from_slice(&frag.to_be_bytes());
        f.push(self.ttl);
        f.push(proto);
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&self.src_ip);
        f.extend_from_slice(&self.dst_ip);
        f.extend_from_slice(&opts);
        let c = checksum(&f[ip..ip + ihl]);
        f[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(l4);
        f
    }

    fn l4_csum_v4(&self, proto: u8, seg: &[u8]) -> u16 {
        !fold(ones_sum(
            seg,
            pseudo_v4(&self.src_ip, &self.dst_ip, proto, seg.len()),
        ))
    }

    /// Ethernet + IPv4 + UDP with a valid checksum.
    pub fn udp(&self, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let seg = udp_segment(src_port, dst_port, payload, |s| {
            self.l4_csum_v4(IPPROTO_UDP, s)
        });
        self.ipv4(IPPROTO_UDP, &seg)
    }

    /// A UDP frame of exactly `total_len` bytes (at least the headers), with
    /// [`payload_pattern`] payload.
    pub fn udp_len(&self, total_len: usize, src_port: u16, dst_port: u16) -> Vec<u8> {
        let hdrs = self.l2_len() + self.ipv4_hdr_len() + 8;
        self.udp(
            src_port,
            dst_port,
            &payload_pattern(total_len.saturating_sub(hdrs), 0),
        )
    }

    /// Ethernet + IPv4 + TCP with a valid checksum.
    pub fn tcp(&self, t: &Tcp, payload: &[u8]) -> Vec<u8> {
        let seg = tcp_segment(t, payload);
        let mut seg = seg;
        let c = self.l4_csum_v4(IPPROTO_TCP, &seg);
        seg[16..18].copy_from_slice(&c.to_be_bytes());
        self.ipv4(IPPROTO_TCP, &seg)
    }

    /// An ICMP echo request (an IPv4 frame that is neither TCP nor UDP).
    pub fn icmp_echo(&self, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
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
        let seg = udp_segment(src_port, dst_port, payload, |s| {
            !fold(ones_sum(
                s,
                pseudo_v6(&self.src_ip6, &self.dst_ip6, IPPROTO_UDP, s.len()),
            ))
        });
        let mut f = Vec::with_capacity(self.l2_len() + 40 + seg.len());
        self.eth(&mut f, ETHERTYPE_IPV6);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        f.push(IPPROTO_UDP);
        f.push(self.ttl);
        f.extend_from_slice(&self.src_ip6);
        f.extend_from_slice(&self.dst_ip6);
        f.extend_from_slice(&seg);
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

fn udp_segment(src: u16, dst: u16, payload: &[u8], csum: impl Fn(&[u8]) -> u16) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut s = Vec::with_capacity(len);
    s.extend_from_slice(&src.to_be_bytes());
    s.extend_from_slice(&dst.to_be_bytes());
    s.extend_from_slice(&(len as u16).to_be_bytes());
    s.extend_from_slice(&[0, 0]);
    s.extend_from_slice(payload);
    let c = match csum(&s) {
        0 => 0xFFFF, // RFC 768: a computed zero is sent as all ones
        c => c,
    };
    s[6..8].copy_from_slice(&c.to_be_bytes());
    s
}

/// TCP header + payload with the checksum field zero.
fn tcp_segment(t: &Tcp, payload: &[u8]) -> Vec<u8> {
    let opts = pad4(&t.options, 1);
    let hlen = 20 + opts.len();
    let mut s = Vec::with_capacity(hlen + payload.len());
    s.extend_from_slice(&t.src_port.to_be_bytes());
    s.extend_from_slice(&t.dst_port.to_be_bytes());
    s.extend_from_slice(&t.seq.to_be_bytes());
    s.extend_from_slice(&t.ack.to_be_bytes());
    s.push(((hlen / 4) as u8) << 4);
    s.push(t.flags);
    s.extend_from_slice(&t.window.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 0]);
    s.extend_from_slice(&opts);
    s.extend_from_slice(payload);
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
    fn truncated_and_garbage_never_panic() {
        let f = Builder::default().tcp(&Tcp::default(), &[0; 20]);
        for n in 0..f.len() {
            let p = parse(&f[..n]);
            let _ = ipv4_header_ok(&f[..n], &p);
            let _ = l4_checksum_ok(&f[..n], &p);
        }
        let mut seed = 0x1234_5678_u64;
        let mut buf = [0u8; 128];
        for _ in 0..2000 {
            for b in buf.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            buf[12] = [0x08, 0x86, 0x81, 0x88][(seed >> 8) as usize % 4];
            buf[13] = [0x00, 0xDD, 0x00, 0xA8][(seed >> 8) as usize % 4];
            buf[14] = 0x45 | ((seed >> 16) as u8 & 0x0F);
            let n = (seed >> 24) as usize % buf.len();
            let p = parse(&buf[..n]);
            let _ = ipv4_header_ok(&buf[..n], &p);
            let _ = l4_checksum_ok(&buf[..n], &p);
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
