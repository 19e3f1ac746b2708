//! Turning received packets into the contiguous frames smoltcp needs,
//! without copying payload.
//!
//! smoltcp's `RxToken` hands the stack one `&[u8]` per frame. The driver
//! delivers a packet as an optional header slot plus payload pages. The
//! [`Presenter`] makes them contiguous in place:
//!
//! | packet | presented as |
//! |---|---|
//! | one payload buffer, no header slot (split off, HBO) | the buffer as it is |
//! | header slot only (split `always`, small frame) | the header slot as it is |
//! | header slot + one payload buffer | the header copied into the page's headroom, right in front of the payload |
//! | TCP/IPv4 over several payload buffers (jumbo, HW GRO) | each buffer as its own TCP segment, behind a copy of the header rewritten for it (sequence number, IP length and checksum, FIN/PSH on the last only) |
//! | anything else over several buffers, or a header larger than the headroom | copied into one buffer (counted in [`PresentStats::linearized`]) |
//!
//! Checksums: the device's verdict is trusted where it gave one (frames it
//! found bad were already dropped by the driver); where it did not check,
//! the IPv4 header and TCP/UDP checksums are verified here, over the
//! original packet before any rewrite. smoltcp is then told not to verify
//! again ([`crate::device::checksum_caps`]). The TCP checksum of a
//! rewritten segment is not recomputed (that would read the payload again):
//! the packet it came from was verified whole.
//!
//! This module holds the crate's `unsafe`: the byte views of pool buffers.

use crate::csum::{self, Sum};
use driver::{Buf, BufPool, Csum, OwnedPacket, Seg};
use std::collections::VecDeque;

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// One frame ready for smoltcp; owns its buffer until released.
#[derive(Debug)]
pub enum Frame {
    /// `len` bytes starting `front` bytes before the payload buffer's start
    /// (`front` bytes of header written into the headroom).
    Page { buf: Buf, front: u16, len: u32 },
    /// A frame held wholly in a header slot.
    Header { buf: Buf, len: u16 },
    /// A frame that had to be copied.
    Copied(Vec<u8>),
}

impl Frame {
    /// The frame's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            // SAFETY: `front` never exceeds the pool's headroom and
            // `front + len` never exceeds headroom + buffer length (checked
            // where the frame is built); the bytes belong to `buf`, which this
            // frame owns exclusively, and the device finished writing them
            // before the driver handed the packet out.
            Frame::Page { buf, front, len } => unsafe {
                std::slice::from_raw_parts(buf.ptr.as_ptr().sub(*front as usize), *len as usize)
            },
            // SAFETY: as above; `len` is the header length the driver checked
            // against the slot size.
            Frame::Header { buf, len } => unsafe {
                std::slice::from_raw_parts(buf.ptr.as_ptr(), *len as usize)
            },
            Frame::Copied(v) => v,
        }
    }
}

/// The bytes of a payload segment.
fn seg_bytes(s: &Seg) -> &[u8] {
    // SAFETY: `len` bytes at the start of the buffer, written by the device
    // and checked against the buffer size by the driver; the segment owns
    // the buffer.
    unsafe { std::slice::from_raw_parts(s.buf.ptr.as_ptr(), s.len as usize) }
}

/// The bytes of a header slot.
fn hdr_bytes(b: &Buf, len: u16) -> &[u8] {
    // SAFETY: as for `seg_bytes`; `len` was checked against the slot size.
    unsafe { std::slice::from_raw_parts(b.ptr.as_ptr(), len as usize) }
}

/// The `n` headroom bytes right in front of `buf`'s payload area.
///
/// # Safety
/// `n` must not exceed the headroom of the pool `buf` came from, and the
/// caller must own `buf` (no other view of those bytes may be alive).
unsafe fn headroom_mut(buf: &mut Buf, n: usize) -> &mut [u8] {
    // SAFETY: the caller guarantees the range lies in the buffer's headroom
    // and that the buffer is exclusively ours.
    unsafe { std::slice::from_raw_parts_mut(buf.ptr.as_ptr().sub(n), n) }
}

/// The first `n` bytes of a payload buffer, writable.
///
/// # Safety
/// `n` must not exceed the buffer's length, and the caller must own `buf`.
unsafe fn payload_mut(buf: &mut Buf, n: usize) -> &mut [u8] {
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts_mut(buf.ptr.as_ptr(), n) }
}

/// What the presenter did, in packets and frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PresentStats {
    /// Packets taken from the driver.
    pub packets: u64,
    /// Frames handed to the stack (a segmented packet gives several).
    pub frames: u64,
    /// Headers copied from a header slot into a page's headroom.
    pub header_copies: u64,
    /// Multi-buffer TCP packets presented as one segment per buffer.
    pub segmented: u64,
    /// Segments they gave.
    pub segments: u64,
    /// Packets copied into one buffer (non-TCP over several buffers, or a
    /// header larger than the headroom).
    pub linearized: u64,
    pub linearized_bytes: u64,
    /// Packets whose checksums were verified here (the device had not).
    pub sw_checked: u64,
    /// Dropped: a checksum verified here was wrong.
    pub bad_checksum: u64,
    /// Dropped: the IP or TCP header contradicts the packet (lengths
    /// beyond the frame, an IP total length shorter than the headers).
    pub malformed: u64,
}

/// The checksum verdict for one packet, computed over its pieces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Ok,
    BadChecksum,
    Malformed,
}

/// Verifies what the device did not: the IPv4 header checksum (when
/// `ip_csum` is `None`) and the TCP/UDP checksum (when `l4_csum` is
/// `None`). `head` is the start of the frame (it holds the whole IP header
/// or the frame is malformed); `tail` are the bytes that follow it. Non-IPv4
/// frames pass unchecked (smoltcp checks what it understands of them).
fn verify(head: &[u8], tail: &[&[u8]], ip_csum: Csum, l4_csum: Csum, sw: &mut u64) -> Verdict {
    if ip_csum == Csum::Good && l4_csum == Csum::Good {
        return Verdict::Ok;
    }
    if head.len() < ETH_HLEN + 20 || u16::from_be_bytes([head[12], head[13]]) != ETHERTYPE_IPV4 {
        return Verdict::Ok;
    }
    let ip = &head[ETH_HLEN..];
    let ihl = (ip[0] & 0x0F) as usize * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return Verdict::Malformed;
    }
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let frame_len = head.len() + tail.iter().map(|t| t.len()).sum::<usize>();
    if total < ihl || ETH_HLEN + total > frame_len {
        return Verdict::Malformed;
    }
    *sw += 1;
    if ip_csum == Csum::None {
        let mut s = Sum::new();
        s.add(&ip[..ihl]);
        if s.folded() != 0xFFFF {
            return Verdict::BadChecksum;
        }
    }
    let proto = ip[9];
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3FFF != 0;
    if l4_csum == Csum::Good || fragment || !(proto == PROTO_TCP || proto == PROTO_UDP) {
        return Verdict::Ok;
    }
    let l4_len = total - ihl;
    let l4_start = ETH_HLEN + ihl;
    if proto == PROTO_UDP {
        // A UDP checksum of zero means "none".
        let at = l4_start + 6;
        let field = if head.len() >= at + 2 {
            u16::from_be_bytes([head[at], head[at + 1]])
        } else {
            1
        };
        if field == 0 {
            return Verdict::Ok;
        }
    }
    let mut s = Sum::new();
    s.add(&ip[12..20]);
    s.add_u16(proto as u16);
    s.add_u16(l4_len as u16);
    // The L4 bytes: from l4_start across head and tail, l4_len of them.
    let mut want = l4_len;
    let mut skip = l4_start;
    for piece in std::iter::once(head).chain(tail.iter().copied()) {
        if want == 0 {
            break;
        }
        if skip >= piece.len() {
            skip -= piece.len();
            continue;
        }
        let p = &piece[skip..];
        skip = 0;
        let n = p.len().min(want);
        s.add(&p[..n]);
        want -= n;
    }
    if s.folded() == 0xFFFF {
        Verdict::Ok
    } else {
        Verdict::BadChecksum
    }
}

/// Where the headers of a TCP/IPv4 frame end.
#[derive(Clone, Copy, Debug)]
struct TcpLayout {
    ihl: usize,
    /// Ethernet + IP + TCP header bytes.
    hlen: usize,
    /// TCP payload bytes according to the IP header.
    payload: usize,
    seq: u32,
}

impl TcpLayout {
    /// Parses `h` (the frame's first bytes, holding at least the headers)
    /// as an unfragmented TCP/IPv4 frame.
    fn parse(h: &[u8]) -> Option<TcpLayout> {
        if h.len() < ETH_HLEN + 20 || u16::from_be_bytes([h[12], h[13]]) != ETHERTYPE_IPV4 {
            return None;
        }
        let ip = &h[ETH_HLEN..];
        let ihl = (ip[0] & 0x0F) as usize * 4;
        if ip[0] >> 4 != 4 || ihl < 20 || ip[9] != PROTO_TCP {
            return None;
        }
        if u16::from_be_bytes([ip[6], ip[7]]) & 0x3FFF != 0 {
            return None;
        }
        let tcp = ip.get(ihl..ihl + 20)?;
        let doff = (tcp[12] >> 4) as usize * 4;
        let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
        let hlen = ETH_HLEN + ihl + doff;
        if doff < 20 || h.len() < hlen || total < ihl + doff {
            return None;
        }
        Some(TcpLayout {
            ihl,
            hlen,
            payload: total - ihl - doff,
            seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        })
    }

    /// Rewrites a copy of the headers (`h`, `hlen` bytes) for a segment of
    /// `n` payload bytes at payload offset `off`.
    fn rewrite(&self, h: &mut [u8], off: usize, n: usize, first: bool, last: bool) {
        let ip = ETH_HLEN;
        let tcp = ip + self.ihl;
        let total = (self.hlen - ETH_HLEN + n) as u16;
        h[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
        h[ip + 10..ip + 12].fill(0);
        let c = csum::ipv4_header(&h[ip..tcp]);
        h[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
        let seq = self.seq.wrapping_add(off as u32);
        h[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
        if !last {
            h[tcp + 13] &= !(TCP_FIN | TCP_PSH);
        }
        if !first {
            h[tcp + 13] &= !TCP_CWR;
        }
    }
}

/// Builds frames from driver packets and gives their buffers back after
/// the stack consumed them. One per queue, used by the queue's thread.
#[derive(Debug)]
pub struct Presenter {
    ready: VecDeque<Frame>,
    /// Headroom of the payload pool (bytes writable in front of a buffer).
    headroom: usize,
    stats: PresentStats,
    /// Spare buffers for copied frames.
    spare: Vec<Vec<u8>>,
    /// The header of the packet being segmented.
    hdr: Vec<u8>,
}

impl Presenter {
    /// A presenter for packets whose payload buffers have `headroom` bytes
    /// in front of them.
    pub fn new(headroom: usize) -> Presenter {
        Presenter {
            ready: VecDeque::with_capacity(256),
            headroom,
            stats: PresentStats::default(),
            spare: Vec::new(),
            hdr: Vec::with_capacity(256),
        }
    }

    pub fn stats(&self) -> &PresentStats {
        &self.stats
    }

    /// Frames waiting for the stack.
    pub fn ready(&self) -> usize {
        self.ready.len()
    }

    /// The next frame for the stack.
    pub fn pop(&mut self) -> Option<Frame> {
        self.ready.pop_front()
    }

    /// Gives a consumed frame's buffer back to its pool (owner path).
    pub fn release<P: BufPool + ?Sized, H: BufPool + ?Sized>(
        &mut self,
        f: Frame,
        pages: &mut P,
        hdrs: &mut H,
    ) {
        match f {
            Frame::Page { buf, .. } => pages.recycle(buf),
            Frame::Header { buf, .. } => hdrs.recycle(buf),
            Frame::Copied(mut v) => {
                v.clear();
                self.spare.push(v);
            }
        }
    }

    /// Releases every frame still waiting (shutdown).
    pub fn release_all<P: BufPool + ?Sized, H: BufPool + ?Sized>(
        &mut self,
        pages: &mut P,
        hdrs: &mut H,
    ) {
        while let Some(f) = self.ready.pop_front() {
            self.release(f, pages, hdrs);
        }
    }

    /// Takes one packet from the driver (its buffers move into frames or
    /// back to the pools) and queues the frames it gives.
    pub fn push<P: BufPool + ?Sized, H: BufPool + ?Sized>(
        &mut self,
        pkt: &mut OwnedPacket,
        pages: &mut P,
        hdrs: &mut H,
    ) {
        self.stats.packets += 1;
        if pkt.segs.len() > 1 {
            self.push_multi(pkt, pages, hdrs);
            return;
        }
        let verdict = {
            let seg = pkt.segs.first().map(seg_bytes);
            let (head, tail) = match (&pkt.hdr, seg) {
                (Some(h), s) => (hdr_bytes(h, pkt.hdr_len), s),
                (None, Some(s)) => (s, None),
                (None, None) => (&[][..], None),
            };
            if head.is_empty() {
                Verdict::Malformed
            } else {
                let tail = tail.as_slice();
                verify(
                    head,
                    tail,
                    pkt.ip_csum,
                    pkt.l4_csum,
                    &mut self.stats.sw_checked,
                )
            }
        };
        if verdict != Verdict::Ok {
            self.drop_packet(pkt, verdict, pages, hdrs);
            return;
        }
        match (pkt.hdr.take(), pkt.segs.len()) {
            (Some(h), 0) => self.emit(Frame::Header {
                len: pkt.hdr_len,
                buf: h,
            }),
            (None, 1) => {
                let s = pkt.segs.pop().expect("one segment");
                self.emit(Frame::Page {
                    len: s.len as u32,
                    front: 0,
                    buf: s.buf,
                });
            }
            (Some(h), 1) if (pkt.hdr_len as usize) <= self.headroom => {
                let mut s = pkt.segs.pop().expect("one segment");
                let n = pkt.hdr_len as usize;
                // SAFETY: n <= headroom (checked in the match guard) and the
                // segment's buffer is ours.
                let room = unsafe { headroom_mut(&mut s.buf, n) };
                room.copy_from_slice(hdr_bytes(&h, pkt.hdr_len));
                hdrs.recycle(h);
                self.stats.header_copies += 1;
                self.emit(Frame::Page {
                    len: (n + s.len as usize) as u32,
                    front: n as u16,
                    buf: s.buf,
                });
            }
            (h, _) => {
                // A header larger than the headroom (or nothing at all).
                pkt.hdr = h;
                self.linearize(pkt, pages, hdrs, true);
            }
        }
    }

    fn emit(&mut self, f: Frame) {
        self.stats.frames += 1;
        self.ready.push_back(f);
    }

    fn drop_packet<P: BufPool + ?Sized, H: BufPool + ?Sized>(
        &mut self,
        pkt: &mut OwnedPacket,
        why: Verdict,
        pages: &mut P,
        hdrs: &mut H,
    ) {
        match why {
            Verdict::BadChecksum => self.stats.bad_checksum += 1,
            _ => self.stats.malformed += 1,
        }
        if let Some(h) = pkt.hdr.take() {
            hdrs.recycle(h);
        }
        for s in pkt.segs.drain(..) {
            pages.recycle(s.buf);
        }
    }

    /// A packet over several payload buffers (or a header that does not
    /// fit the headroom).
    fn push_multi<P: BufPool + ?Sized, H: BufPool + ?Sized>(
        &mut self,
        pkt: &mut OwnedPacket,
        pages: &mut P,
        hdrs: &mut H,
    ) {
        // The frame's first bytes: the header slot, or the first buffer.
        let head: &[u8] = match (&pkt.hdr, pkt.segs.first()) {
            (Some(h), _) => hdr_bytes(h, pkt.hdr_len),
            (None, Some(s)) => seg_bytes(s),
            (None, None) => &[],
        };
        let layout = TcpLayout::parse(head).filter(|l| {
            l.hlen <= self.headroom
                && match &pkt.hdr {
                    // The slot must hold exactly the headers.
                    Some(_) => l.hlen == pkt.hdr_len as usize,
                    None => true,
                }
        });
        let Some(l) = layout else {
            self.linearize(pkt, pages, hdrs, false);
            return;
        };
        // Payload pieces: (segment index, offset in it, length).
        let first_off = if pkt.hdr.is_some() { 0 } else { l.hlen };
        let avail: usize = pkt.segs.iter().map(|s| s.len as usize).sum::<usize>() - first_off;
        if avail < l.payload {
            self.drop_packet(pkt, Verdict::Malformed, pages, hdrs);
            return;
        }
        // Verify over the original packet, before any rewrite.
        let verdict = {
            let mut tail: Vec<&[u8]> = Vec::with_capacity(pkt.segs.len());
            let head = match &pkt.hdr {
                Some(h) => {
                    tail.extend(pkt.segs.iter().map(seg_bytes));
                    hdr_bytes(h, pkt.hdr_len)
                }
                None => {
                    tail.extend(pkt.segs[1..].iter().map(seg_bytes));
                    seg_bytes(&pkt.segs[0])
                }
            };
            verify(
                head,
                &tail,
                pkt.ip_csum,
                pkt.l4_csum,
                &mut self.stats.sw_checked,
            )
        };
        if verdict != Verdict::Ok {
            self.drop_packet(pkt, verdict, pages, hdrs);
            return;
        }
        self.hdr.clear();
        self.hdr.extend_from_slice(&head[..l.hlen]);
        if let Some(h) = pkt.hdr.take() {
            hdrs.recycle(h);
        }
        self.stats.segmented += 1;
        let count = pkt.segs.len();
        let mut off = 0usize;
        for (i, mut s) in pkt.segs.drain(..).enumerate() {
            let skip = if i == 0 { first_off } else { 0 };
            let n = (s.len as usize - skip).min(l.payload - off);
            let last = off + n == l.payload || i + 1 == count;
            if n == 0 && !(i == 0 && last) {
                // Trailing bytes past the IP length (padding): nothing to say.
                pages.recycle(s.buf);
                continue;
            }
            let (front, len) = if skip > 0 {
                // Split off: the headers are already in front of the payload.
                // SAFETY: skip = hlen <= s.len, and the buffer is ours.
                let h = unsafe { payload_mut(&mut s.buf, skip) };
                l.rewrite(h, off, n, i == 0, last);
                (0, skip + n)
            } else {
                // SAFETY: hlen <= headroom (checked when the layout was
                // accepted) and the buffer is ours.
                let room = unsafe { headroom_mut(&mut s.buf, l.hlen) };
                room.copy_from_slice(&self.hdr);
                l.rewrite(room, off, n, i == 0, last);
                (l.hlen, l.hlen + n)
            };
            self.stats.segments += 1;
            self.emit(Frame::Page {
                buf: s.buf,
                front: front as u16,
                len: len as u32,
            });
            off += n;
        }
    }

    /// Copies the packet into one buffer (the slow path).
    fn linearize<P: BufPool + ?Sized, H: BufPool + ?Sized>(
        &mut self,
        pkt: &mut OwnedPacket,
        pages: &mut P,
        hdrs: &mut H,
        verified: bool,
    ) {
        let mut v = self.spare.pop().unwrap_or_default();
        v.reserve(pkt.len as usize);
        if let Some(h) = pkt.hdr.take() {
            v.extend_from_slice(hdr_bytes(&h, pkt.hdr_len));
            hdrs.recycle(h);
        }
        for s in pkt.segs.drain(..) {
            v.extend_from_slice(seg_bytes(&s));
            pages.recycle(s.buf);
        }
        let verdict = if v.is_empty() {
            Verdict::Malformed
        } else if verified {
            Verdict::Ok
        } else {
            verify(
                &v,
                &[],
                pkt.ip_csum,
                pkt.l4_csum,
                &mut self.stats.sw_checked,
            )
        };
        if verdict != Verdict::Ok {
            match verdict {
                Verdict::BadChecksum => self.stats.bad_checksum += 1,
                _ => self.stats.malformed += 1,
            }
            v.clear();
            self.spare.push(v);
            return;
        }
        self.stats.linearized += 1;
        self.stats.linearized_bytes += v.len() as u64;
        self.emit(Frame::Copied(v));
    }
}
