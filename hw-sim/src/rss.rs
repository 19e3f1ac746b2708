//! Receive side scaling as QEMU 10's igb model does it (`igb_rss_enabled`,
//! `igb_rss_get_hash_type`, `igb_rss_parse_packet`, and `net_rx_pkt.c`'s
//! hash inputs):
//!
//! - RSS is on when MRQC bits 1:0 are 10b (RSS without VMDq) and
//!   RXCSUM.PCSD is set. Otherwise every frame goes to queue 0 with no hash.
//! - The hash type follows MRQC's field bits: IPv4 TCP with `IPV4_TCP` ->
//!   4-tuple; IPv4 UDP with `IPV4_UDP` -> 4-tuple; else IPv4 with `IPV4` ->
//!   addresses. IPv6 TCP with `IPV6_TCP_EX` -> 4-tuple (QEMU ignores
//!   `IPV6_TCP`); IPv6 UDP with `IPV6_UDP` -> 4-tuple; else `IPV6_EX` or
//!   `IPV6` -> addresses. Fragments have no L4 (they hash on addresses).
//!   Anything else (non-IP, no enabled field): type 0, hash 0, queue 0.
//! - Queue = bits 3:0 of RETA entry `hash & 127`. A frame steered to a
//!   disabled queue is dropped (QEMU skips disabled queues; we count it in
//!   `SimStats::rx_disabled`).
//!
//! The Toeplitz hash here is written independently of
//! `driver::rss::toeplitz` (per set bit, the key window is read straight
//! from the key bytes), so tests can check one against the other.

use crate::frames::{Parsed, L3, L4};
use crate::nic::SimNic;
use driver::desc::*;
use driver::regs::*;

/// The key and redirection table, loaded from the registers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RssTables {
    /// The key bytes, zero padded so any 5-byte window is in bounds.
    key: [u8; RSS_KEY_LEN + 8],
    reta: [u8; RETA_ENTRIES as usize],
}

impl Default for RssTables {
    fn default() -> Self {
        RssTables {
            key: [0; RSS_KEY_LEN + 8],
            reta: [0; RETA_ENTRIES as usize],
        }
    }
}

impl RssTables {
    pub(crate) fn load(nic: &SimNic) -> RssTables {
        let mut t = RssTables::default();
        for i in 0..(RSS_KEY_LEN / 4) {
            let v = nic.load(rssrk(i as u32)).to_le_bytes();
            t.key[4 * i..4 * i + 4].copy_from_slice(&v);
        }
        for i in 0..(RETA_ENTRIES as usize / 4) {
            let v = nic.load(reta(i as u32)).to_le_bytes();
            t.reta[4 * i..4 * i + 4].copy_from_slice(&v);
        }
        t
    }

    /// Toeplitz hash of `input` (at most 36 bytes).
    fn hash(&self, input: &[u8]) -> u32 {
        let mut h = 0u32;
        for (i, &byte) in input.iter().enumerate() {
            if byte == 0 {
                continue;
            }
            // Key bits i*8 .. i*8 + 40: every window this byte needs.
            let k = &self.key[i..i + 5];
            let w = u64::from_be_bytes([k[0], k[1], k[2], k[3], k[4], 0, 0, 0]);
            for bit in 0..8 {
                if byte & (0x80 >> bit) != 0 {
                    h ^= ((w << bit) >> 32) as u32;
                }
            }
        }
        h
    }

    fn queue(&self, hash: u32) -> u32 {
        (self.reta[(hash & (RETA_ENTRIES - 1)) as usize] & RETA_QUEUE_MASK) as u32
    }
}

/// RSS result for one frame (QEMU's `E1000E_RSSInfo`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RssInfo {
    /// RSS was on for this frame (the write-back reports type and hash).
    pub enabled: bool,
    pub hash: u32,
    /// `desc::RSS_TYPE_*`.
    pub rss_type: u32,
}

/// Whether MRQC and RXCSUM turn RSS on (`igb_rss_enabled`).
#[inline]
pub(crate) fn enabled(mrqc: u32, rxcsum: u32) -> bool {
    mrqc & 3 == MRQC_ENABLE_RSS && rxcsum & RXCSUM_PCSD != 0
}

/// The hash type MRQC selects for a parsed frame (`igb_rss_get_hash_type`).
pub(crate) fn hash_type(mrqc: u32, p: &Parsed) -> u32 {
    match p.l3 {
        L3::Ipv4 => {
            if p.l4 == L4::Tcp && mrqc & MRQC_RSS_FIELD_IPV4_TCP != 0 {
                RSS_TYPE_IPV4_TCP
            } else if p.l4 == L4::Udp && mrqc & MRQC_RSS_FIELD_IPV4_UDP != 0 {
                RSS_TYPE_IPV4_UDP
            } else if mrqc & MRQC_RSS_FIELD_IPV4 != 0 {
                RSS_TYPE_IPV4
            } else {
                RSS_TYPE_NONE
            }
        }
        // RFCTL's IPv6 extension-header switches are not modelled (0, as
        // after reset): the first group always applies.
        L3::Ipv6 => {
            if p.l4 == L4::Tcp && mrqc & MRQC_RSS_FIELD_IPV6_TCP_EX != 0 {
                RSS_TYPE_IPV6_TCP_EX
            } else if p.l4 == L4::Udp && mrqc & MRQC_RSS_FIELD_IPV6_UDP != 0 {
                RSS_TYPE_IPV6_UDP
            } else if mrqc & MRQC_RSS_FIELD_IPV6_EX != 0 {
                RSS_TYPE_IPV6_EX
            } else if mrqc & MRQC_RSS_FIELD_IPV6 != 0 {
                RSS_TYPE_IPV6
            } else {
                RSS_TYPE_NONE
            }
        }
        L3::None => RSS_TYPE_NONE,
    }
}

/// Builds the hash input of `ty` from the frame's headers into `buf`;
/// `None` if a header is cut short (not reachable after `parse`).
fn input<'b>(f: &[u8], p: &Parsed, ty: u32, buf: &'b mut [u8; 36]) -> Option<&'b [u8]> {
    let addrs = f.get(p.addrs()?)?;
    let addr_len = addrs.len();
    buf[..addr_len].copy_from_slice(addrs);
    let ports = matches!(
        ty,
        RSS_TYPE_IPV4_TCP | RSS_TYPE_IPV4_UDP | RSS_TYPE_IPV6_TCP_EX | RSS_TYPE_IPV6_UDP
    );
    let len = if ports {
        buf[addr_len..addr_len + 4].copy_from_slice(f.get(p.ports())?);
        addr_len + 4
    } else {
        addr_len
    };
    Some(&buf[..len])
}

/// Queue and RSS result for a frame while RSS is on
/// (`igb_rss_parse_packet`): type 0 frames go to queue 0 with hash 0.
pub(crate) fn classify(t: &RssTables, mrqc: u32, f: &[u8], p: &Parsed) -> (u32, RssInfo) {
    let ty = hash_type(mrqc, p);
    let mut buf = [0u8; 36];
    let hash = match input(f, p, ty, &mut buf) {
        Some(inp) if ty != RSS_TYPE_NONE => t.hash(inp),
        _ => {
            return (
                0,
                RssInfo {
                    enabled: true,
                    hash: 0,
                    rss_type: RSS_TYPE_NONE,
                },
            )
        }
    };
    (
        t.queue(hash),
        RssInfo {
            enabled: true,
            hash,
            rss_type: ty,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{self, Builder, Fragment, Tcp};
    use driver::rss::{self, DEFAULT_KEY, RSS_FIELDS_TCP_UDP};

    fn tables(queues: u8) -> RssTables {
        let mut t = RssTables::default();
        t.key[..RSS_KEY_LEN].copy_from_slice(&DEFAULT_KEY);
        for (i, e) in t.reta.iter_mut().enumerate() {
            *e = i as u8 % queues;
        }
        t
    }

    #[test]
    fn sim_hash_matches_driver_and_vectors() {
        let t = tables(4);
        let inp = rss::ipv4_l4_input([66, 9, 149, 187], [161, 142, 100, 80], 2794, 1766);
        assert_eq!(t.hash(&inp), 0x51cc_c178);
        for seed in 0..200u32 {
            let v: Vec<u8> = (0..36)
                .map(|i| (seed.wrapping_mul(2_654_435_761) >> (i % 24)) as u8 ^ i as u8)
                .collect();
            for len in [8, 12, 32, 36] {
                assert_eq!(t.hash(&v[..len]), rss::toeplitz(&DEFAULT_KEY, &v[..len]));
            }
        }
    }

    #[test]
    fn hash_types_follow_mrqc_like_qemu() {
        let t = tables(4);
        let all = MRQC_ENABLE_RSS | RSS_FIELDS_TCP_UDP;
        let b = Builder {
            src_ip: [66, 9, 149, 187],
            dst_ip: [161, 142, 100, 80],
            ..Builder::default()
        };
        let tcp = b.tcp(
            &Tcp {
                src_port: 2794,
                dst_port: 1766,
                ..Tcp::default()
            },
            &[1; 10],
        );
        let (q, i) = classify(&t, all, &tcp, &frames::parse(&tcp));
        assert_eq!((i.rss_type, i.hash), (RSS_TYPE_IPV4_TCP, 0x51cc_c178));
        assert_eq!(q, 0x78 % 4);
        // TCP hashing off: the addresses only.
        let (_, i) = classify(
            &t,
            all & !MRQC_RSS_FIELD_IPV4_TCP,
            &tcp,
            &frames::parse(&tcp),
        );
        assert_eq!((i.rss_type, i.hash), (RSS_TYPE_IPV4, 0x323e_8fc2));

        let udp = b.udp(2794, 1766, &[2; 20]);
        let (_, i) = classify(&t, all, &udp, &frames::parse(&udp));
        assert_eq!((i.rss_type, i.hash), (RSS_TYPE_IPV4_UDP, 0x51cc_c178));
        let (_, i) = classify(
            &t,
            all & !MRQC_RSS_FIELD_IPV4_UDP,
            &udp,
            &frames::parse(&udp),
        );
        assert_eq!((i.rss_type, i.hash), (RSS_TYPE_IPV4, 0x323e_8fc2));

        // A fragment has no L4 header: addresses only.
        let frag = Builder {
            fragment: Some(Fragment {
                offset: 0,
                more: true,
            }),
            ..b.clone()
        }
        .udp(2794, 1766, &[3; 40]);
        let (_, i) = classify(&t, all, &frag, &frames::parse(&frag));
        assert_eq!((i.rss_type, i.hash), (RSS_TYPE_IPV4, 0x323e_8fc2));

        // IPv4 hashing off entirely: no type, queue 0, hash 0.
        let (q, i) = classify(&t, MRQC_ENABLE_RSS, &udp, &frames::parse(&udp));
        assert_eq!(
            (q, i.rss_type, i.hash, i.enabled),
            (0, RSS_TYPE_NONE, 0, true)
        );

        // Non-IP: queue 0, no hash.
        let non_ip = b.non_ip_len(100);
        let (q, i) = classify(&t, all, &non_ip, &frames::parse(&non_ip));
        assert_eq!((q, i.rss_type, i.hash), (0, RSS_TYPE_NONE, 0));

        // IPv6 UDP: the 4-tuple over the 16-byte addresses.
        let b6 = Builder {
            src_ip6: [
                0x3f, 0xfe, 0x25, 0x01, 0x02, 0x00, 0x1f, 0xff, 0, 0, 0, 0, 0, 0, 0, 7,
            ],
            dst_ip6: [
                0x3f, 0xfe, 0x25, 0x01, 0x02, 0x00, 0x00, 0x03, 0, 0, 0, 0, 0, 0, 0, 1,
            ],
            ..Builder::default()
        };
        let udp6 = b6.udp6(2794, 1766, &[4; 16]);
        let (_, i) = classify(&t, all, &udp6, &frames::parse(&udp6));
        assert_eq!((i.rss_type, i.hash), (RSS_TYPE_IPV6_UDP, 0x4020_7d3d));
        let (_, i) = classify(
            &t,
            all & !MRQC_RSS_FIELD_IPV6_UDP,
            &udp6,
            &frames::parse(&udp6),
        );
        assert_eq!((i.rss_type, i.hash), (RSS_TYPE_IPV6, 0x2cc1_8cd5));
    }

    #[test]
    fn enable_needs_rss_mode_and_pcsd() {
        assert!(enabled(MRQC_ENABLE_RSS, RXCSUM_PCSD));
        assert!(!enabled(MRQC_ENABLE_RSS, 0));
        assert!(!enabled(0, RXCSUM_PCSD));
        // VMDq modes (bit 0 set) are not RSS here.
        assert!(!enabled(3, RXCSUM_PCSD));
        assert!(!enabled(5, RXCSUM_PCSD));
    }
}
