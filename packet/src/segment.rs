//! Cutting one TCP segment into smaller ones (software GSO, or presenting a
//! packet that spans several buffers as one segment per buffer): the header
//! of each piece.
//!
//! A [`Template`] is read once from the original headers. For each piece,
//! [`Template::rewrite`] turns a copy of those headers into the piece's:
//!
//! - the sequence number advanced by the piece's payload offset;
//! - the IPv4 total length (and, when asked, the IPv4 id) or the IPv6
//!   payload length, for the piece's payload;
//! - FIN and PSH kept on the last piece only, CWR on the first only;
//! - the IPv4 header checksum recomputed.
//!
//! The TCP checksum is the caller's choice: [`Template::fill_tcp_checksum`]
//! recomputes it over a contiguous piece (headers + payload); a receiver
//! that verified the original packet whole may leave it.
//!
//! ```
//! use packet::parse::{ipv4_header_ok, l4_checksum_ok, parse};
//! use packet::segment::{Piece, Template};
//! # let frame = packet::segment::example_frame(100);
//! // `frame`: Ethernet + IPv4 + TCP (20-byte header) + 100 bytes of payload.
//! let t = Template::new(&frame, 14, 34).unwrap();
//! let mut piece = frame[..t.header_len()].to_vec();
//! piece.extend_from_slice(&frame[t.header_len() + 60..]);
//! t.rewrite(&mut piece, &Piece { offset: 60, len: 40, first: false, last: true, ip_id: None })
//!     .unwrap();
//! t.fill_tcp_checksum(&mut piece).unwrap();
//! let p = parse(&piece);
//! assert_eq!((ipv4_header_ok(&piece, &p), l4_checksum_ok(&piece, &p)), (Some(true), Some(true)));
//! ```

use crate::checksum;
use crate::ip_proto;
use crate::tcp::{self, flags};
use crate::{ipv4, ipv6, Error, Result};

/// What every piece's header is made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Template {
    ipv6: bool,
    l3_off: usize,
    l4_off: usize,
    /// Ethernet + IP + TCP header bytes: where the payload starts.
    hdr_len: usize,
    seq: u32,
    ip_id: u16,
}

/// One piece of the original payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Offset of the piece's first byte in the original payload.
    pub offset: usize,
    /// Payload bytes in the piece.
    pub len: usize,
    /// The piece starts the payload (keeps CWR).
    pub first: bool,
    /// The piece ends it (keeps FIN and PSH).
    pub last: bool,
    /// IPv4 id to store (software GSO numbers its segments); `None` keeps
    /// the original's.
    pub ip_id: Option<u16>,
}

impl Template {
    /// Reads the headers of `headers` (the frame from its start through at
    /// least the TCP header), whose IP header starts at `l3_off` and TCP
    /// header at `l4_off` (after any IPv6 extension headers). IPv4 or IPv6
    /// by the version nibble.
    #[inline]
    pub fn new(headers: &[u8], l3_off: usize, l4_off: usize) -> Result<Template> {
        let ip = headers.get(l3_off..).ok_or(Error::Truncated)?;
        let (ipv6, ip_id, min_l4) = match ip.first().map(|b| b >> 4) {
            Some(4) => {
                let v4 = ipv4::Packet::new_checked(ip)?;
                (false, v4.ident(), l3_off + v4.header_len())
            }
            Some(6) => {
                ipv6::Packet::new_checked(ip)?;
                (true, 0, l3_off + ipv6::HEADER_LEN)
            }
            Some(_) => return Err(Error::Malformed),
            None => return Err(Error::Truncated),
        };
        if l4_off < min_l4 || (!ipv6 && l4_off != min_l4) {
            return Err(Error::Malformed);
        }
        let t = tcp::Packet::new_checked(headers.get(l4_off..).ok_or(Error::Truncated)?)?;
        Ok(Template {
            ipv6,
            l3_off,
            l4_off,
            hdr_len: l4_off + t.header_len(),
            seq: t.seq(),
            ip_id,
        })
    }

    /// Ethernet + IP + TCP header bytes.
    #[inline]
    pub fn header_len(&self) -> usize {
        self.hdr_len
    }

    /// The original's sequence number.
    #[inline]
    pub fn seq(&self) -> u32 {
        self.seq
    }

    /// The original's IPv4 id (0 for IPv6).
    #[inline]
    pub fn ip_id(&self) -> u16 {
        self.ip_id
    }

    /// Rewrites `h` (a copy of the original's first [`Self::header_len`]
    /// bytes, possibly followed by the piece's payload) into the headers of
    /// `piece`. `Err` if `h` is shorter than the headers.
    #[inline]
    pub fn rewrite(&self, h: &mut [u8], piece: &Piece) -> Result<()> {
        let h = h.get_mut(..self.hdr_len).ok_or(Error::Truncated)?;
        let (l3, l4) = (self.l3_off, self.l4_off);
        if self.ipv6 {
            let plen = (self.hdr_len - l3 - ipv6::HEADER_LEN + piece.len) as u16;
            ipv6::Packet::new_unchecked(&mut h[l3..]).set_payload_len(plen);
        } else {
            let mut ip = ipv4::Packet::new_unchecked(&mut h[l3..l4]);
            ip.set_total_len((self.hdr_len - l3 + piece.len) as u16);
            if let Some(id) = piece.ip_id {
                ip.set_ident(id);
            }
            ip.fill_checksum();
        }
        let mut t = tcp::Packet::new_unchecked(&mut h[l4..]);
        t.set_seq(self.seq.wrapping_add(piece.offset as u32));
        let mut f = t.flags();
        if !piece.last {
            f &= !(flags::FIN | flags::PSH);
        }
        if !piece.first {
            f &= !flags::CWR;
        }
        t.set_flags(f);
        Ok(())
    }

    /// Recomputes the TCP checksum of a contiguous piece: `seg` is the
    /// rewritten headers followed by exactly the piece's payload.
    #[inline]
    pub fn fill_tcp_checksum(&self, seg: &mut [u8]) -> Result<()> {
        if seg.len() < self.hdr_len {
            return Err(Error::Truncated);
        }
        let l3 = self.l3_off;
        let addrs = if self.ipv6 {
            ipv6::field::ADDRS
        } else {
            ipv4::field::ADDRS
        };
        let (head, tcp) = seg.split_at_mut(self.l4_off);
        let pseudo = checksum::pseudo_header(
            &head[l3 + addrs.start..l3 + addrs.end],
            ip_proto::TCP,
            tcp.len() as u32,
        );
        tcp::Packet::new_unchecked(tcp).fill_checksum(pseudo);
        Ok(())
    }
}

/// An Ethernet + IPv4 + TCP frame with `payload` bytes of payload and valid
/// checksums (for the examples and tests).
#[doc(hidden)]
pub fn example_frame(payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; 54 + payload];
    f[12..14].copy_from_slice(&crate::ethernet::ethertype::IPV4.to_be_bytes());
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
    f[18..20].copy_from_slice(&7u16.to_be_bytes());
    f[22] = 64;
    f[23] = ip_proto::TCP;
    f[26..34].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    f[38..42].copy_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
    f[46] = 5 << 4;
    f[47] = flags::ACK | flags::PSH | flags::FIN | flags::CWR;
    for (i, b) in f[54..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    ipv4::Packet::new_unchecked(&mut f[14..34]).fill_checksum();
    let t = Template::new(&f, 14, 34).expect("valid headers");
    t.fill_tcp_checksum(&mut f).expect("whole frame");
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{ipv4_header_ok, l4_checksum_ok, parse, L3, L4};
    use proptest::prelude::*;

    /// Cuts `f` into pieces of `mss` payload bytes, each a whole frame.
    fn cut(f: &[u8], l4: usize, mss: usize) -> Vec<Vec<u8>> {
        let t = Template::new(f, 14, l4).unwrap();
        let payload = &f[t.header_len()..];
        let n = payload.len().div_ceil(mss).max(1);
        (0..n)
            .map(|i| {
                let start = (i * mss).min(payload.len());
                let end = (start + mss).min(payload.len());
                let mut s = f[..t.header_len()].to_vec();
                s.extend_from_slice(&payload[start..end]);
                let piece = Piece {
                    offset: start,
                    len: end - start,
                    first: i == 0,
                    last: i + 1 == n,
                    ip_id: Some(t.ip_id().wrapping_add(i as u16)),
                };
                t.rewrite(&mut s, &piece).unwrap();
                t.fill_tcp_checksum(&mut s).unwrap();
                s
            })
            .collect()
    }

    #[test]
    fn ipv6_pieces_validate() {
        let v4 = example_frame(50);
        let mut f = vec![0u8; 74];
        f[12..14].copy_from_slice(&crate::ethernet::ethertype::IPV6.to_be_bytes());
        f[14] = 0x60;
        f[18..20].copy_from_slice(&70u16.to_be_bytes());
        f[20] = ip_proto::TCP;
        f[22..54].copy_from_slice(&[3; 32]);
        f[54..74].copy_from_slice(&v4[34..54]);
        f.extend_from_slice(&v4[54..]);
        for s in cut(&f, 54, 16) {
            let p = parse(&s);
            assert_eq!((p.l3, p.l4), (L3::Ipv6, L4::Tcp));
            assert_eq!(l4_checksum_ok(&s, &p), Some(true));
        }
    }

    #[test]
    fn short_buffers_are_errors() {
        let f = example_frame(10);
        assert_eq!(Template::new(&f[..40], 14, 34), Err(Error::Truncated));
        assert_eq!(Template::new(&f, 14, 38), Err(Error::Malformed));
        let t = Template::new(&f, 14, 34).unwrap();
        let p = Piece {
            offset: 0,
            len: 1,
            first: true,
            last: true,
            ip_id: None,
        };
        assert_eq!(t.rewrite(&mut f[..53].to_vec(), &p), Err(Error::Truncated));
    }

    proptest! {
        /// Every piece validates, carries the right sequence number and
        /// flags, and the pieces' payloads make the original's.
        #[test]
        fn rewritten_pieces_validate(payload in 0usize..3000, mss in 1usize..1500) {
            let f = example_frame(payload);
            let pieces = cut(&f, 34, mss);
            let mut joined = Vec::new();
            for (i, s) in pieces.iter().enumerate() {
                let p = parse(s);
                prop_assert_eq!(ipv4_header_ok(s, &p), Some(true));
                prop_assert_eq!(l4_checksum_ok(s, &p), Some(true));
                let ip = ipv4::Packet::new_checked(&s[14..]).unwrap();
                prop_assert_eq!(ip.total_len(), s.len() - 14);
                prop_assert_eq!(ip.ident(), 7 + i as u16);
                let t = tcp::Packet::new_checked(&s[34..]).unwrap();
                prop_assert_eq!(t.seq(), 0xFFFF_FFF0u32.wrapping_add((i * mss) as u32));
                let last = i + 1 == pieces.len();
                prop_assert_eq!(t.flags() & (flags::FIN | flags::PSH) != 0, last);
                prop_assert_eq!(t.flags() & flags::CWR != 0, i == 0);
                joined.extend_from_slice(t.payload());
            }
            prop_assert_eq!(&joined[..], &f[54..]);
        }
    }
}
