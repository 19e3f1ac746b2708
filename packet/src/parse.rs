//! Classifying a frame once: where its L3, L4 and L5 start and which
//! protocols they are, the way the igb hardware (and QEMU's
//! `eth_get_protocols`) sees them; then verifying its IP and TCP/UDP
//! checksums from that one result.
//!
//! The simulator takes header split, RSS and GRO decisions from one
//! [`Parsed`] per frame. Parsing never panics, whatever the input: every
//! read is bounds-checked and a truncated header stops the parse. Offsets
//! are as the headers declare them and may point past the end of a
//! truncated frame: clamp before slicing.
//!
//! ```
//! use packet::parse::{parse, L3, L4};
//! let mut f = [0u8; 60];
//! f[12] = 0x08; // IPv4
//! f[14] = 0x45;
//! f[16..18].copy_from_slice(&46u16.to_be_bytes());
//! f[23] = 17; // UDP
//! let p = parse(&f);
//! assert_eq!((p.l3, p.l4, p.l3_off, p.l4_off, p.l5_off), (L3::Ipv4, L4::Udp, 14, 34, 42));
//! assert_eq!(packet::parse::ipv4_header_ok(&f, &p), Some(false)); // no checksum filled in
//! ```

use crate::checksum;
use crate::ethernet::{self, ethertype};
use crate::ip_proto;
use crate::ipv4::{self, MORE_FRAGS};
use crate::ipv6::{self, ext};
use crate::tcp;
use crate::udp;
use std::ops::Range;

/// Network layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum L3 {
    #[default]
    None,
    Ipv4,
    Ipv6,
}

/// Transport layer. Fragments have none (as in QEMU).
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

/// Header offsets and protocols of a frame.
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
/// extension headers) and TCP/UDP/SCTP. Never panics.
#[inline]
pub fn parse(f: &[u8]) -> Parsed {
    let mut p = Parsed::default();
    let Some(mut et) = be16(f, ethernet::field::ETHERTYPE) else {
        return p;
    };
    let mut l3 = ethernet::HEADER_LEN;
    if et == ethertype::VLAN || et == ethertype::QINQ {
        // Each tag pushes the ethertype field 4 bytes further.
        let et_at = ethernet::field::ETHERTYPE;
        let inner = be16(f, et_at + ethernet::VLAN_TAG_LEN).unwrap_or(0);
        if et == ethertype::QINQ && inner == ethertype::VLAN {
            p.vlans = 2;
            l3 += 2 * ethernet::VLAN_TAG_LEN;
            et = be16(f, et_at + 2 * ethernet::VLAN_TAG_LEN).unwrap_or(0);
        } else {
            p.vlans = 1;
            l3 += ethernet::VLAN_TAG_LEN;
            et = inner;
        }
    }
    p.ethertype = et;
    p.l3_off = l3;
    let ip_p = match et {
        ethertype::IPV4 => {
            let Some(h) = f.get(l3..l3 + ipv4::MIN_HEADER_LEN) else {
                return p;
            };
            let ip = ipv4::Packet::new_unchecked(h);
            if ip.version() != 4 {
                return p;
            }
            p.l3 = L3::Ipv4;
            p.l4_off = l3 + ip.header_len();
            p.ip_id = ip.ident();
            p.fragment = ip.flags_frag() & (MORE_FRAGS | ipv4::FRAG_OFFSET) != 0;
            ip.protocol()
        }
        ethertype::IPV6 => match parse_ipv6(f, l3, &mut p) {
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
        ip_proto::TCP if avail(tcp::MIN_HEADER_LEN) => {
            p.l5_off = l4 + tcp::header_len_of(f[l4 + tcp::field::DATA_OFF]);
            L4::Tcp
        }
        ip_proto::UDP if avail(udp::HEADER_LEN) => {
            p.l5_off = l4 + udp::HEADER_LEN;
            L4::Udp
        }
        ip_proto::SCTP if avail(SCTP_COMMON_HEADER_LEN) => L4::Sctp,
        ip_proto::TCP | ip_proto::UDP | ip_proto::SCTP => L4::None,
        other => L4::Other(other),
    };
    p
}

/// SCTP common header: ports, verification tag, checksum.
const SCTP_COMMON_HEADER_LEN: usize = 12;

/// IPv6 fixed header plus extension headers. Returns the upper-layer
/// protocol, or `None` when a header is truncated (QEMU then treats the frame
/// as non-IP).
fn parse_ipv6(f: &[u8], l3: usize, p: &mut Parsed) -> Option<u8> {
    let h = ipv6::Packet::new_checked(f.get(l3..l3 + ipv6::HEADER_LEN)?).ok()?;
    let mut next = h.next_header();
    let mut off = l3 + ipv6::HEADER_LEN;
    // Bounded walk: a frame cannot hold more than a few hundred headers, and
    // a loop of headers of length >= 8 always advances. Each extension
    // header starts with the next header's number and its own length.
    for _ in 0..32 {
        let len = match next {
            ext::HOP_BY_HOP | ext::ROUTING | ext::DEST_OPTS | ext::MOBILITY => {
                (*f.get(off + 1)? as usize + 1) * 8
            }
            ext::FRAGMENT => {
                p.fragment = true;
                ext::FRAGMENT_LEN
            }
            ext::AUTH => (*f.get(off + 1)? as usize + 2) * 4,
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

impl Parsed {
    /// Where the source and destination addresses lie in the frame
    /// (adjacent in IPv4 and IPv6 alike): the input of the TCP/UDP
    /// pseudo-header and of the RSS hash. `None` for a non-IP frame.
    #[inline]
    pub fn addrs(&self) -> Option<Range<usize>> {
        let a = match self.l3 {
            L3::Ipv4 => ipv4::field::ADDRS,
            L3::Ipv6 => ipv6::field::ADDRS,
            L3::None => return None,
        };
        Some(self.l3_off + a.start..self.l3_off + a.end)
    }

    /// Where the source and destination ports lie (the L4 header's first
    /// four bytes, in TCP, UDP and SCTP alike).
    #[inline]
    pub fn ports(&self) -> Range<usize> {
        self.l4_off..self.l4_off + PORTS_LEN
    }
}

/// Source and destination port: 2 bytes each.
const PORTS_LEN: usize = 4;

/// Verifies the IPv4 header checksum of frame `f` parsed as `p`. `None` if
/// the frame is not IPv4.
#[inline]
pub fn ipv4_header_ok(f: &[u8], p: &Parsed) -> Option<bool> {
    if p.l3 != L3::Ipv4 {
        return None;
    }
    let end = p.l4_off.min(f.len());
    let start = p.l3_off.min(end);
    Some(checksum::fold(checksum::sum(&f[start..end], 0)) == 0xFFFF)
}

/// Verifies the TCP or UDP checksum of frame `f` parsed as `p` the way
/// QEMU's `net_rx_pkt` does: the length comes from the UDP header or the IP
/// payload length. `None` when there is nothing to check (not TCP/UDP, an
/// IPv4 fragment, UDP checksum 0).
#[inline]
pub fn l4_checksum_ok(f: &[u8], p: &Parsed) -> Option<bool> {
    let (l3, l4) = (p.l3_off, p.l4_off);
    let (proto, csl) = match p.l4 {
        L4::Udp => {
            if be16(f, l4 + udp::field::CHECKSUM)? == 0 {
                return None;
            }
            (ip_proto::UDP, be16(f, l4 + udp::field::LENGTH)? as usize)
        }
        L4::Tcp => {
            let csl = match p.l3 {
                L3::Ipv4 => {
                    (be16(f, l3 + ipv4::field::TOTAL_LEN)? as usize).wrapping_sub(l4 - l3) & 0xFFFF
                }
                L3::Ipv6 => {
                    (be16(f, l3 + ipv6::field::PAYLOAD_LEN)? as usize)
                        .wrapping_sub(l4 - l3 - ipv6::HEADER_LEN)
                        & 0xFFFF
                }
                L3::None => return None,
            };
            (ip_proto::TCP, csl)
        }
        _ => return None,
    };
    let addrs = match p.l3 {
        L3::Ipv4 => f.get(l3 + ipv4::field::ADDRS.start..l3 + ipv4::field::ADDRS.end)?,
        L3::Ipv6 => f.get(l3 + ipv6::field::ADDRS.start..l3 + ipv6::field::ADDRS.end)?,
        L3::None => return None,
    };
    let pseudo = checksum::pseudo_header(addrs, proto, csl as u32);
    let end = l4.saturating_add(csl).min(f.len());
    let start = l4.min(end);
    let sum = checksum::fold(checksum::sum(&f[start..end], pseudo));
    Some(sum == 0xFFFF || sum == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_and_garbage_never_panic() {
        let mut seed = 0x1234_5678_u64;
        let mut buf = [0u8; 128];
        for _ in 0..5000 {
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
    fn vlan_and_qinq_tags() {
        let mut f = [0u8; 80];
        f[12..14].copy_from_slice(&ethertype::QINQ.to_be_bytes());
        f[16..18].copy_from_slice(&ethertype::VLAN.to_be_bytes());
        f[20..22].copy_from_slice(&ethertype::IPV4.to_be_bytes());
        f[22] = 0x45;
        f[31] = ip_proto::UDP;
        let p = parse(&f);
        assert_eq!((p.vlans, p.l3_off, p.l4, p.l5_off), (2, 22, L4::Udp, 50));
        f[12..14].copy_from_slice(&ethertype::VLAN.to_be_bytes());
        f[16..18].copy_from_slice(&ethertype::IPV4.to_be_bytes());
        f[18] = 0x45;
        f[27] = ip_proto::TCP;
        f[38 + tcp::field::DATA_OFF] = 8 << 4;
        let p = parse(&f);
        assert_eq!(
            (p.vlans, p.l3_off, p.l4, p.l5_off),
            (1, 18, L4::Tcp, 38 + 32)
        );
    }

    #[test]
    fn ipv6_extension_headers_and_fragments() {
        let mut f = [0u8; 120];
        f[12..14].copy_from_slice(&ethertype::IPV6.to_be_bytes());
        f[14] = 0x60;
        f[14 + ipv6::field::NEXT_HEADER] = ext::HOP_BY_HOP;
        f[54] = ext::FRAGMENT; // hop-by-hop: next = fragment, 8 bytes
        f[62] = ip_proto::UDP; // fragment header: next = UDP
        let p = parse(&f);
        assert_eq!((p.l3, p.l4, p.l4_off), (L3::Ipv6, L4::None, 70));
        assert!(p.fragment && p.ipv6_ext);
        // Cut inside the extension headers: not IP at all.
        assert_eq!(parse(&f[..60]).l3, L3::None);
    }
}
