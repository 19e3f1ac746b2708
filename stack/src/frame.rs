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
//! Buffer bytes are read and written through [`Buf`]'s bounded accessors:
//! no `unsafe` here.

use driver::{Buf, BufPool, Csum, OwnedPacket, Seg};
use packet::checksum::{pseudo_header, Sum};
use packet::ethernet::{self, ethertype, HEADER_LEN as ETH_HLEN};
use packet::segment::{Piece, Template};
use packet::{ip_proto, ipv4, tcp, udp};
use std::collections::VecDeque;

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
        // `front <= headroom` and `front + len <= headroom + buffer length`
        // (checked where the frame is built); the device finished writing
        // the bytes before the driver handed the packet out.
        match self {
            Frame::Page { buf, front, len } => buf.with_headroom(*front as usize, *len as usize),
            Frame::Header { buf, len } => buf.as_slice(*len as usize),
            Frame::Copied(v) => v,
        }
    }
}

/// The bytes of a payload segment.
fn seg_bytes(s: &Seg) -> &[u8] {
    s.buf.as_slice(s.len as usize)
}

/// The bytes of a header slot.
fn hdr_bytes(b: &Buf, len: u16) -> &[u8] {
    b.as_slice(len as usize)
}

/// What the presenter did, in packets and frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
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

impl std::ops::AddAssign for PresentStats {
    fn add_assign(&mut self, o: PresentStats) {
        self.packets += o.packets;
        self.frames += o.frames;
        self.header_copies += o.header_copies;
        self.segmented += o.segmented;
        self.segments += o.segments;
        self.linearized += o.linearized;
        self.linearized_bytes += o.linearized_bytes;
        self.sw_checked += o.sw_checked;
        self.bad_checksum += o.bad_checksum;
        self.malformed += o.malformed;
    }
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
    if !is_ipv4(head) {
        return Verdict::Ok;
    }
    let ip_bytes = &head[ETH_HLEN..];
    if ip_bytes.len() < ipv4::MIN_HEADER_LEN {
        // Too short for IPv4 (a runt the NIC padded holds at least 46
        // bytes of it): for smoltcp to judge when more follows.
        return if tail.is_empty() {
            Verdict::Malformed
        } else {
            Verdict::Ok
        };
    }
    // The header lengths must fit the frame, whatever the device said about
    // the checksums (a few loads of bytes already in cache): an IP total
    // length beyond the frame or shorter than the headers, a TCP data
    // offset beyond the IP payload.
    let Ok(ip) = ipv4::Packet::new_checked(ip_bytes) else {
        return Verdict::Malformed;
    };
    let ihl = ip.header_len();
    let total = ip.total_len();
    let frame_len = head.len() + tail.iter().map(|t| t.len()).sum::<usize>();
    if total < ihl || ETH_HLEN + total > frame_len {
        return Verdict::Malformed;
    }
    let proto = ip.protocol();
    let fragment = ip.is_fragment();
    if proto == ip_proto::TCP && !fragment {
        match ip_bytes.get(ihl + tcp::field::DATA_OFF) {
            Some(&b)
                if tcp::header_len_of(b) >= tcp::MIN_HEADER_LEN
                    && ihl + tcp::header_len_of(b) <= total => {}
            _ => return Verdict::Malformed,
        }
    }
    if ip_csum == Csum::Good && l4_csum == Csum::Good {
        return Verdict::Ok;
    }
    *sw += 1;
    if ip_csum == Csum::None && !ip.checksum_ok() {
        return Verdict::BadChecksum;
    }
    if l4_csum == Csum::Good || fragment || !(proto == ip_proto::TCP || proto == ip_proto::UDP) {
        return Verdict::Ok;
    }
    let l4_len = total - ihl;
    let l4_start = ETH_HLEN + ihl;
    if proto == ip_proto::UDP {
        // A UDP checksum of zero means "none".
        let at = l4_start + udp::field::CHECKSUM;
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
    s.add_acc(pseudo_header(ip.addrs(), proto, l4_len as u32));
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

/// The frame starts with an Ethernet header carrying IPv4.
fn is_ipv4(head: &[u8]) -> bool {
    ethernet::Frame::new_checked(head).is_ok_and(|e| e.ethertype() == ethertype::IPV4)
}

/// Where the headers of a TCP/IPv4 frame end, and how to rewrite them for
/// each buffer's segment.
#[derive(Clone, Copy, Debug)]
struct TcpLayout {
    template: Template,
    /// Ethernet + IP + TCP header bytes.
    hlen: usize,
    /// TCP payload bytes according to the IP header.
    payload: usize,
}

impl TcpLayout {
    /// Parses `h` (the frame's first bytes, holding at least the headers)
    /// as an unfragmented TCP/IPv4 frame.
    fn parse(h: &[u8]) -> Option<TcpLayout> {
        if !is_ipv4(h) {
            return None;
        }
        let ip = ipv4::Packet::new_checked(&h[ETH_HLEN..]).ok()?;
        if ip.protocol() != ip_proto::TCP || ip.is_fragment() {
            return None;
        }
        let template = Template::new(h, ETH_HLEN, ETH_HLEN + ip.header_len()).ok()?;
        let hlen = template.header_len();
        let total = ip.total_len();
        if total < hlen - ETH_HLEN {
            return None;
        }
        Some(TcpLayout {
            template,
            hlen,
            payload: total - (hlen - ETH_HLEN),
        })
    }

    /// Rewrites a copy of the headers (`h`, `hlen` bytes) for a segment of
    /// `n` payload bytes at payload offset `off`. The TCP checksum stays
    /// the original's (see the module docs).
    fn rewrite(&self, h: &mut [u8], off: usize, n: usize, first: bool, last: bool) {
        let piece = Piece {
            offset: off,
            len: n,
            first,
            last,
            ip_id: None,
        };
        // `h` holds `hlen` bytes: the rewrite cannot fail.
        let rewritten = self.template.rewrite(h, &piece);
        debug_assert!(rewritten.is_ok());
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
                self.check(head, tail.as_slice(), pkt)
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
                // n <= headroom: checked in the match guard.
                let room = s.buf.headroom_mut(n);
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

    /// [`verify`] with this presenter's counter of software checks.
    fn check(&mut self, head: &[u8], tail: &[&[u8]], pkt: &OwnedPacket) -> Verdict {
        verify(
            head,
            tail,
            pkt.ip_csum,
            pkt.l4_csum,
            &mut self.stats.sw_checked,
        )
    }

    /// Counts a dropped packet under its reason.
    fn count_drop(&mut self, why: Verdict) {
        match why {
            Verdict::BadChecksum => self.stats.bad_checksum += 1,
            _ => self.stats.malformed += 1,
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
        self.count_drop(why);
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
            self.check(head, &tail, pkt)
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
                // skip = hlen <= s.len.
                let h = s.buf.as_mut_slice(skip);
                l.rewrite(h, off, n, off == 0, last);
                (0, skip + n)
            } else {
                // hlen <= headroom: checked when the layout was accepted.
                let room = s.buf.headroom_mut(l.hlen);
                room.copy_from_slice(&self.hdr);
                // The first segment presented (payload offset 0) keeps CWR,
                // even when the first buffer held only the headers.
                l.rewrite(room, off, n, off == 0, last);
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

#[cfg(test)]
mod tests {
    //! The presenter on packets built by hand from real pool buffers, shaped
    //! like the driver delivers them.

    use super::*;
    use driver::dma::{DmaSpace, NoIommu};
    use hw_sim::frames::{self as hf, Builder, Tcp};
    use pipeline::{HeaderPool, HeaderPoolConfig, PagePool, PagePoolConfig};
    use proptest::prelude::*;
    use std::sync::Arc;

    const BUF: usize = 2048;
    const HEADROOM: usize = 256;
    const SLOT: usize = 256;
    const BUFFERS: usize = 128;

    /// The pools and a presenter on them.
    struct Rig {
        pages: PagePool,
        hdrs: HeaderPool,
        p: Presenter,
    }

    /// How the frame is spread over buffers.
    #[derive(Clone, Copy, Debug)]
    struct Shape {
        /// Bytes in a header slot (`None`: no slot, split off or HBO).
        hdr: Option<usize>,
        /// Bytes per payload buffer (the last one takes the rest).
        chunk: usize,
        ip_csum: Csum,
        l4_csum: Csum,
    }

    impl Shape {
        fn off(chunk: usize) -> Shape {
            Shape {
                hdr: None,
                chunk,
                ip_csum: Csum::Good,
                l4_csum: Csum::Good,
            }
        }
        fn split(hdr: usize, chunk: usize) -> Shape {
            Shape {
                hdr: Some(hdr),
                ..Shape::off(chunk)
            }
        }
        fn sw(self) -> Shape {
            Shape {
                ip_csum: Csum::None,
                l4_csum: Csum::None,
                ..self
            }
        }
    }

    impl Rig {
        fn new() -> Rig {
            Rig::with_presenter_headroom(HEADROOM)
        }

        /// Pools with `HEADROOM` bytes of headroom, and a presenter told it
        /// has `headroom` (at most `HEADROOM`).
        fn with_presenter_headroom(headroom: usize) -> Rig {
            assert!(headroom <= HEADROOM);
            let space = DmaSpace::new(Arc::new(NoIommu));
            let pages = PagePool::new(
                &space,
                PagePoolConfig {
                    buffers: BUFFERS,
                    buf_len: BUF,
                    headroom: HEADROOM,
                    ..PagePoolConfig::default()
                },
            )
            .expect("page pool");
            let hdrs = HeaderPool::new(
                &space,
                HeaderPoolConfig {
                    buffers: BUFFERS,
                    slot: SLOT,
                    ..HeaderPoolConfig::default()
                },
            )
            .expect("header pool");
            assert_eq!(pages.headroom(), HEADROOM);
            Rig {
                pages,
                hdrs,
                p: Presenter::new(headroom),
            }
        }

        /// A payload buffer holding `bytes`.
        fn page(&mut self, bytes: &[u8]) -> Seg {
            assert!(bytes.len() <= BUF);
            let mut buf = self.pages.alloc().expect("a free page");
            buf.as_mut_slice(bytes.len()).copy_from_slice(bytes);
            Seg {
                buf,
                len: bytes.len() as u16,
            }
        }

        /// A header slot holding `bytes`.
        fn slot(&mut self, bytes: &[u8]) -> Buf {
            assert!(bytes.len() <= SLOT);
            let mut buf = self.hdrs.alloc().expect("a free slot");
            buf.as_mut_slice(bytes.len()).copy_from_slice(bytes);
            buf
        }

        /// `frame` as the driver would deliver it in `shape`.
        fn packet(&mut self, frame: &[u8], shape: Shape) -> OwnedPacket {
            let (hdr, rest) = match shape.hdr {
                Some(n) => {
                    let n = n.min(frame.len());
                    (Some(self.slot(&frame[..n])), &frame[n..])
                }
                None => (None, frame),
            };
            // At most half the pool per packet.
            let chunk = shape.chunk.max(rest.len().div_ceil(BUFFERS / 2)).min(BUF);
            let segs = rest.chunks(chunk.max(1)).map(|c| self.page(c)).collect();
            OwnedPacket {
                hdr_len: shape.hdr.map_or(0, |n| n.min(frame.len())) as u16,
                hdr,
                len: frame.len() as u32,
                segs,
                pkt_type: 0,
                ip_csum: shape.ip_csum,
                l4_csum: shape.l4_csum,
                rss: 0,
                rss_type: 0,
            }
        }

        /// Presents `frame` in `shape`; returns copies of the frames given
        /// to the stack (released at once) and the stats' change.
        fn present(&mut self, frame: &[u8], shape: Shape) -> (Vec<Vec<u8>>, PresentStats) {
            let mut pkt = self.packet(frame, shape);
            self.present_packet(&mut pkt)
        }

        fn present_packet(&mut self, pkt: &mut OwnedPacket) -> (Vec<Vec<u8>>, PresentStats) {
            let before = self.p.stats;
            self.p.push(pkt, &mut self.pages, &mut self.hdrs);
            // Every buffer moved into a frame or back to its pool.
            assert!(pkt.hdr.is_none(), "header slot left in the packet");
            assert!(pkt.segs.is_empty(), "segments left in the packet");
            let mut out = Vec::new();
            while let Some(f) = self.p.pop() {
                out.push(f.bytes().to_vec());
                self.p.release(f, &mut self.pages, &mut self.hdrs);
            }
            assert_eq!(self.p.ready(), 0);
            self.assert_no_leak();
            (out, delta(before, self.p.stats))
        }

        fn assert_no_leak(&mut self) {
            assert_eq!(self.pages.audit().lent, 0, "payload buffers leaked");
            assert_eq!(self.hdrs.audit().lent, 0, "header slots leaked");
        }
    }

    fn delta(a: PresentStats, b: PresentStats) -> PresentStats {
        PresentStats {
            packets: b.packets - a.packets,
            frames: b.frames - a.frames,
            header_copies: b.header_copies - a.header_copies,
            segmented: b.segmented - a.segmented,
            segments: b.segments - a.segments,
            linearized: b.linearized - a.linearized,
            linearized_bytes: b.linearized_bytes - a.linearized_bytes,
            sw_checked: b.sw_checked - a.sw_checked,
            bad_checksum: b.bad_checksum - a.bad_checksum,
            malformed: b.malformed - a.malformed,
        }
    }

    /// One packet in, one frame out, nothing else counted.
    fn one(packets: u64, frames: u64) -> PresentStats {
        PresentStats {
            packets,
            frames,
            ..PresentStats::default()
        }
    }

    const CWR: u8 = 0x80;

    /// A TCP/IPv4 frame with `payload` bytes, `opts` bytes of TCP options
    /// and the given flags.
    fn tcp(payload: usize, opts: usize, flags: u8) -> Vec<u8> {
        let t = Tcp {
            seq: 0xFFFF_F000, // wraps within a jumbo frame
            ack: 77,
            flags,
            options: vec![1; opts],
            ..Tcp::default()
        };
        let f = Builder::default().tcp(&t, &hf::payload_pattern(payload, 3));
        assert_eq!(f.len(), 54 + opts.div_ceil(4) * 4 + payload);
        f
    }

    fn udp(payload: usize) -> Vec<u8> {
        hf::udp_frame(42 + payload, 9)
    }

    fn ip_total(f: &[u8]) -> usize {
        u16::from_be_bytes([f[16], f[17]]) as usize
    }

    fn ihl(f: &[u8]) -> usize {
        (f[14] & 0x0F) as usize * 4
    }

    /// Ethernet + IP + TCP header length.
    fn tcp_hlen(f: &[u8]) -> usize {
        14 + ihl(f) + (f[14 + ihl(f) + 12] >> 4) as usize * 4
    }

    fn seq(f: &[u8]) -> u32 {
        let t = 14 + ihl(f);
        u32::from_be_bytes([f[t + 4], f[t + 5], f[t + 6], f[t + 7]])
    }

    fn flags(f: &[u8]) -> u8 {
        f[14 + ihl(f) + 13]
    }

    /// Sets the IP total length (and a right IP header checksum).
    fn set_ip_total(f: &mut [u8], total: u16) {
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[24..26].fill(0);
        let c = hf::checksum(&f[14..14 + ihl(f)]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    }

    fn ip_header_ok(f: &[u8]) -> bool {
        hf::checksum(&f[14..14 + ihl(f)]) == 0
    }

    /// Checks `segs` are the TCP segments of `orig`, one per buffer: valid
    /// IP headers, the payload in order, sequence numbers advancing, the
    /// rest of the headers unchanged, FIN/PSH on the last only, CWR on the
    /// first only.
    fn assert_segments_of(orig: &[u8], segs: &[Vec<u8>]) {
        let h = tcp_hlen(orig);
        let t = 14 + ihl(orig);
        let mut payload = Vec::new();
        let mut next = seq(orig);
        for (i, s) in segs.iter().enumerate() {
            assert_eq!(tcp_hlen(s), h, "segment {i}: header length");
            assert_eq!(ip_total(s), s.len() - 14, "segment {i}: IP total length");
            assert!(ip_header_ok(s), "segment {i}: IP header checksum");
            assert_eq!(seq(s), next, "segment {i}: sequence number");
            assert!(s.len() > h || segs.len() == 1, "segment {i}: empty");
            // Unchanged: Ethernet, IP but length/checksum, ports, ack,
            // data offset, window, urgent pointer, options.
            assert_eq!(s[..16], orig[..16], "segment {i}");
            assert_eq!(s[18..24], orig[18..24], "segment {i}");
            assert_eq!(s[26..t + 4], orig[26..t + 4], "segment {i}");
            assert_eq!(s[t + 8..t + 13], orig[t + 8..t + 13], "segment {i}");
            assert_eq!(s[t + 14..t + 16], orig[t + 14..t + 16], "segment {i}");
            assert_eq!(s[t + 18..h], orig[t + 18..h], "segment {i}");
            let last = i + 1 == segs.len();
            let want = match (i == 0, last) {
                (true, true) => flags(orig),
                (true, false) => flags(orig) & !(hf::TCP_FIN | hf::TCP_PSH),
                (false, true) => flags(orig) & !CWR,
                (false, false) => flags(orig) & !(hf::TCP_FIN | hf::TCP_PSH | CWR),
            };
            assert_eq!(flags(s), want, "segment {i}: flags");
            payload.extend_from_slice(&s[h..]);
            next = next.wrapping_add((s.len() - h) as u32);
        }
        assert_eq!(payload, orig[h..], "payload");
    }

    // (a) split off, one segment: the buffer as it is.
    #[test]
    fn one_buffer_is_presented_as_it_is() {
        let mut r = Rig::new();
        for f in [
            tcp(1000, 0, hf::TCP_ACK),
            udp(1400),
            hf::non_ip_frame(60, 1),
        ] {
            let (out, s) = r.present(&f, Shape::off(BUF));
            assert_eq!(out, std::slice::from_ref(&f));
            assert_eq!(s, one(1, 1));
        }
    }

    // (b) header slot + one segment: the header lands in the headroom.
    #[test]
    fn header_slot_goes_into_the_headroom() {
        let mut r = Rig::new();
        let f = tcp(1448, 12, hf::TCP_ACK | hf::TCP_PSH);
        let (out, s) = r.present(&f, Shape::split(66, BUF));
        assert_eq!(out, std::slice::from_ref(&f));
        assert_eq!(
            s,
            PresentStats {
                header_copies: 1,
                ..one(1, 1)
            }
        );
        // A header exactly as large as the headroom still fits.
        let mut r = Rig::with_presenter_headroom(66);
        let (out, s) = r.present(&f, Shape::split(66, BUF));
        assert_eq!((out, s.header_copies), (vec![f], 1));
    }

    // (c) header-only (split `always`): the header slot as it is.
    #[test]
    fn header_only_packet_is_the_slot() {
        let mut r = Rig::new();
        for f in [tcp(0, 0, hf::TCP_ACK), udp(100), hf::non_ip_frame(60, 2)] {
            let (out, s) = r.present(&f, Shape::split(f.len(), BUF));
            assert_eq!(out, std::slice::from_ref(&f));
            assert_eq!(s, one(1, 1));
        }
    }

    // (d) a 9000-byte TCP/IPv4 frame over 2048-byte buffers.
    #[test]
    fn jumbo_tcp_is_presented_one_segment_per_buffer() {
        let mut r = Rig::new();
        let flags = hf::TCP_ACK | hf::TCP_PSH | hf::TCP_FIN | CWR;
        let f = tcp(9000 - 66, 12, flags);
        assert_eq!(f.len(), 9000);
        // Split off: the first buffer holds the headers and payload.
        let (out, s) = r.present(&f, Shape::off(BUF));
        assert_eq!(out.len(), 5);
        assert_segments_of(&f, &out);
        assert_eq!(s.segmented, 1);
        assert_eq!((s.segments, s.frames), (5, 5));
        assert_eq!((s.linearized, s.header_copies), (0, 0));
        // Split on: a header slot of exactly the headers.
        let (out, s) = r.present(&f, Shape::split(66, BUF));
        assert_eq!(out.len(), (9000 - 66_usize).div_ceil(BUF));
        assert_segments_of(&f, &out);
        assert_eq!((s.segmented, s.segments, s.linearized), (1, 5, 0));
        // Checked in software: verified once, over the original.
        for shape in [Shape::off(BUF).sw(), Shape::split(66, BUF).sw()] {
            let (out, s) = r.present(&f, shape);
            assert_segments_of(&f, &out);
            assert_eq!((s.sw_checked, s.bad_checksum), (1, 0));
        }
    }

    // GRO-like shapes: small buffers, padding past the IP length, a first
    // buffer holding only the headers.
    #[test]
    fn odd_segmentations_keep_the_stream() {
        let mut r = Rig::new();
        let f = tcp(3000, 0, hf::TCP_ACK | hf::TCP_PSH | CWR);
        for chunk in [1024, 1000, 777, 54 + 1] {
            let (out, s) = r.present(&f, Shape::off(chunk));
            assert_segments_of(&f, &out);
            assert_eq!((s.segmented, s.linearized), (1, 0), "chunk {chunk}");
        }
        // Ethernet padding after the IP datagram, in a buffer of its own.
        let mut padded = f.clone();
        padded.extend_from_slice(&[0xEE; 40]);
        let (out, _) = r.present(&padded, Shape::off(1512));
        assert_segments_of(&f, &out);
        let (out, _) = r.present(&padded, Shape::split(54, 1500));
        assert_segments_of(&f, &out);
    }

    /// The first payload buffer holds only the headers (split off): the
    /// first segment presented must keep CWR.
    #[test]
    fn headers_alone_in_the_first_buffer() {
        let mut r = Rig::new();
        let f = tcp(3000, 0, hf::TCP_ACK | CWR);
        let mut pkt = r.packet(&f, Shape::off(BUF));
        // Re-cut: headers | 2048 | rest.
        for s in pkt.segs.drain(..) {
            r.pages.recycle(s.buf);
        }
        pkt.segs = vec![
            r.page(&f[..54]),
            r.page(&f[54..54 + BUF]),
            r.page(&f[54 + BUF..]),
        ];
        let (out, s) = r.present_packet(&mut pkt);
        assert_eq!((s.segmented, s.segments), (1, 2));
        assert_segments_of(&f, &out);
    }

    // (e) other multi-buffer packets are copied into one.
    #[test]
    fn multi_buffer_non_tcp_is_linearized() {
        let mut r = Rig::new();
        let f = udp(8000);
        for shape in [Shape::off(BUF), Shape::split(42, BUF), Shape::off(BUF).sw()] {
            let (out, s) = r.present(&f, shape);
            assert_eq!(out, std::slice::from_ref(&f), "{shape:?}");
            assert_eq!((s.linearized, s.linearized_bytes), (1, f.len() as u64));
            assert_eq!((s.frames, s.segmented), (1, 0));
        }
        let f = hf::non_ip_frame(5000, 4);
        let (out, s) = r.present(&f, Shape::off(BUF));
        assert_eq!((out, s.linearized), (vec![f], 1));
    }

    // (f) software checksum verification.
    #[test]
    fn software_checksums_pass_good_frames() {
        let mut r = Rig::new();
        let cases = [
            (tcp(1000, 0, hf::TCP_ACK), Shape::off(BUF).sw()),
            (tcp(1000, 4, hf::TCP_ACK), Shape::split(58, BUF).sw()),
            (udp(1001), Shape::off(BUF).sw()),
            (udp(1001), Shape::split(42, BUF).sw()),
            (tcp(20, 0, hf::TCP_ACK), Shape::split(74, BUF).sw()),
            (udp(8000), Shape::off(BUF).sw()),
        ];
        for (f, shape) in cases {
            let (out, s) = r.present(&f, shape);
            if s.segmented == 1 {
                assert_segments_of(&f, &out);
            } else {
                assert_eq!(out, std::slice::from_ref(&f), "{shape:?}");
            }
            assert_eq!((s.sw_checked, s.bad_checksum, s.malformed), (1, 0, 0));
        }
        // Only the IP header left to check.
        let f = tcp(500, 0, hf::TCP_ACK);
        let shape = Shape {
            ip_csum: Csum::None,
            ..Shape::off(BUF)
        };
        let (out, s) = r.present(&f, shape);
        assert_eq!((out, s.sw_checked), (vec![f], 1));
    }

    /// `f` with bit `bit` of byte `at` flipped.
    fn flipped(f: &[u8], at: usize, bit: u8) -> Vec<u8> {
        let mut g = f.to_vec();
        g[at] ^= 1 << bit;
        g
    }

    #[test]
    fn software_checksums_drop_flipped_bits() {
        let mut r = Rig::new();
        let t = tcp(1000, 0, hf::TCP_ACK);
        let j = tcp(9000 - 54, 0, hf::TCP_ACK);
        let u = udp(6000);
        let cases = [
            // Single buffer, payload and header bits.
            (flipped(&t, 500, 3), Shape::off(BUF).sw()),
            (flipped(&t, 500, 3), Shape::split(54, BUF).sw()),
            (flipped(&t, 36, 0), Shape::off(BUF).sw()), // TCP source port
            (flipped(&t, 22, 7), Shape::off(BUF).sw()), // TTL
            // Several buffers, a bit in the last one.
            (flipped(&j, 8500, 1), Shape::off(BUF).sw()),
            (flipped(&j, 8500, 1), Shape::split(54, BUF).sw()),
            (flipped(&j, 100, 6), Shape::off(1000).sw()),
            (flipped(&u, 5000, 5), Shape::off(BUF).sw()),
        ];
        for (i, (f, shape)) in cases.into_iter().enumerate() {
            let (out, s) = r.present(&f, shape);
            assert!(out.is_empty(), "case {i}: presented");
            assert_eq!(
                s,
                PresentStats {
                    packets: 1,
                    sw_checked: 1,
                    bad_checksum: 1,
                    ..PresentStats::default()
                },
                "case {i}"
            );
        }
        // The device's verdict is trusted where it gave one.
        let (out, s) = r.present(&flipped(&t, 500, 3), Shape::off(BUF));
        assert_eq!((out.len(), s.sw_checked, s.bad_checksum), (1, 0, 0));
    }

    #[test]
    fn udp_checksum_zero_means_none() {
        let mut r = Rig::new();
        let mut f = udp(700);
        f[40..42].fill(0);
        for shape in [Shape::off(BUF).sw(), Shape::split(42, BUF).sw()] {
            let (out, s) = r.present(&f, shape);
            assert_eq!(out, std::slice::from_ref(&f));
            assert_eq!((s.sw_checked, s.bad_checksum), (1, 0));
            // Not checked, so a flipped payload bit passes too.
            let g = flipped(&f, 300, 2);
            let (out, s) = r.present(&g, shape);
            assert_eq!((out, s.bad_checksum), (vec![g], 0));
        }
    }

    // (g) hostile inputs: a counted drop or a copy, never a panic.
    #[test]
    fn ip_total_length_beyond_the_frame() {
        let mut r = Rig::new();
        let mut f = tcp(1000, 0, hf::TCP_ACK);
        set_ip_total(&mut f, 2000);
        for shape in [Shape::off(BUF).sw(), Shape::split(54, BUF).sw()] {
            let (out, s) = r.present(&f, shape);
            assert!(out.is_empty());
            assert_eq!((s.malformed, s.frames), (1, 0));
        }
        // Several buffers: less payload than the IP header claims.
        let mut j = tcp(5000, 0, hf::TCP_ACK);
        set_ip_total(&mut j, 9000);
        for shape in [Shape::off(BUF), Shape::split(54, BUF), Shape::off(BUF).sw()] {
            let (out, s) = r.present(&j, shape);
            assert!(out.is_empty(), "{shape:?}");
            assert_eq!((s.malformed, s.frames), (1, 0), "{shape:?}");
        }
        // The IP length shorter than the headers.
        let mut k = tcp(5000, 0, hf::TCP_ACK);
        set_ip_total(&mut k, 30);
        let (out, s) = r.present(&k, Shape::off(BUF).sw());
        assert_eq!((out.len(), s.malformed + s.bad_checksum), (0, 1));
        // Even where the device vouched for the checksums: the lengths are
        // checked on every frame.
        let (out, s) = r.present(&k, Shape::off(BUF));
        assert_eq!((out.len(), s.malformed), (0, 1));
    }

    #[test]
    fn ip_header_length_below_five() {
        let mut r = Rig::new();
        for ihl in [0u8, 1, 4] {
            let mut f = tcp(3000, 0, hf::TCP_ACK);
            f[14] = 0x40 | ihl;
            // Checked here: malformed; one buffer or several.
            for shape in [Shape::off(BUF).sw(), Shape::off(1500).sw()] {
                let (out, s) = r.present(&f, shape);
                assert_eq!((out.len(), s.malformed), (0, 1), "ihl {ihl}");
            }
            // Even where the device vouched for the checksums.
            let (out, s) = r.present(&f, Shape::off(1500));
            assert_eq!((out.len(), s.malformed), (0, 1), "ihl {ihl}");
        }
        // Not IPv4 at all (version 6 in an IPv4 ethertype).
        let mut f = tcp(100, 0, hf::TCP_ACK);
        f[14] = 0x65;
        let (out, s) = r.present(&f, Shape::off(BUF).sw());
        assert_eq!((out.len(), s.malformed), (0, 1));
    }

    #[test]
    fn tcp_data_offset_beyond_the_header_slot() {
        let mut r = Rig::new();
        let mut f = tcp(5000, 0, hf::TCP_ACK);
        f[14 + 20 + 12] = 0xF0; // 60 bytes of TCP header, the slot has 20
        let (out, s) = r.present(&f, Shape::split(54, BUF));
        assert_eq!((out, s.linearized), (vec![f.clone()], 1));
        // Checked in software: the checksum no longer matches.
        let (out, s) = r.present(&f, Shape::split(54, BUF).sw());
        assert_eq!((out.len(), s.bad_checksum), (0, 1));
        // Beyond the frame's first buffer (split off).
        let (out, s) = r.present(&f, Shape::off(60));
        assert_eq!((out, s.linearized), (vec![f.clone()], 1));
        // A data offset below 5: malformed, whatever the device said.
        f[14 + 20 + 12] = 0x30;
        let (out, s) = r.present(&f, Shape::off(BUF));
        assert_eq!((out.len(), s.malformed), (0, 1));
        // Options that overrun the IP payload.
        let mut g = tcp(10, 0, hf::TCP_ACK);
        g[14 + 20 + 12] = 0xF0;
        let (out, s) = r.present(&g, Shape::off(BUF));
        assert_eq!((out.len(), s.malformed), (0, 1));
    }

    #[test]
    fn header_slot_with_more_than_the_headers() {
        let mut r = Rig::new();
        let f = tcp(5000, 0, hf::TCP_ACK);
        let (out, s) = r.present(&f, Shape::split(54 + 100, BUF));
        assert_eq!((out, s.linearized, s.segmented), (vec![f.clone()], 1, 0));
        let (out, s) = r.present(&f, Shape::split(54 + 100, BUF).sw());
        assert_eq!((out, s.sw_checked), (vec![f], 1));
    }

    #[test]
    fn nothing_at_all() {
        let mut r = Rig::new();
        for shape in [Shape::off(BUF), Shape::off(BUF).sw(), Shape::split(0, BUF)] {
            let (out, s) = r.present(&[], shape);
            assert!(out.is_empty());
            assert_eq!(
                s,
                PresentStats {
                    packets: 1,
                    malformed: 1,
                    ..PresentStats::default()
                }
            );
        }
        // Empty buffers.
        let mut pkt = r.packet(&[], Shape::off(BUF));
        pkt.segs = vec![r.page(&[]), r.page(&[])];
        let (out, s) = r.present_packet(&mut pkt);
        assert_eq!((out.len(), s.malformed), (0, 1));
    }

    #[test]
    fn header_larger_than_the_headroom() {
        let mut r = Rig::with_presenter_headroom(32);
        let f = tcp(1000, 0, hf::TCP_ACK);
        let (out, s) = r.present(&f, Shape::split(54, BUF));
        assert_eq!(
            (out, s.linearized, s.header_copies),
            (vec![f.clone()], 1, 0)
        );
        let (out, s) = r.present(&f, Shape::split(54, BUF).sw());
        assert_eq!((out, s.linearized, s.sw_checked), (vec![f], 1, 1));
        // Several buffers: copied whole rather than segmented.
        let j = tcp(9000 - 54, 0, hf::TCP_ACK);
        for shape in [Shape::off(BUF), Shape::split(54, BUF)] {
            let (out, s) = r.present(&j, shape);
            assert_eq!((out, s.linearized, s.segmented), (vec![j.clone()], 1, 0));
        }
    }

    /// Frames held by the stack go back on release; what is still waiting
    /// goes back on `release_all`.
    #[test]
    fn frames_waiting_at_shutdown_are_released() {
        let mut r = Rig::new();
        let shapes = [Shape::off(BUF), Shape::split(54, BUF), Shape::split(54, 64)];
        for (i, shape) in shapes.into_iter().enumerate() {
            let f = tcp(100 + 3000 * i, 0, hf::TCP_ACK);
            let mut pkt = r.packet(&f, shape);
            r.p.push(&mut pkt, &mut r.pages, &mut r.hdrs);
        }
        let mut pkt = r.packet(&udp(5000), Shape::off(BUF));
        r.p.push(&mut pkt, &mut r.pages, &mut r.hdrs);
        assert!(r.p.ready() > 4);
        assert!(r.pages.audit().lent > 0);
        r.p.release_all(&mut r.pages, &mut r.hdrs);
        assert_eq!(r.p.ready(), 0);
        r.assert_no_leak();
    }

    fn csum() -> impl Strategy<Value = Csum> {
        prop_oneof![Just(Csum::None), Just(Csum::Good)]
    }

    /// A frame to mangle: a real TCP, UDP or other frame, or random bytes.
    fn base_frame() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (0usize..9000, 0usize..=40, any::<u8>()).prop_map(|(n, o, fl)| tcp(n, o, fl)),
            (0usize..9000).prop_map(udp),
            (14usize..3000, any::<u8>()).prop_map(|(n, s)| hf::non_ip_frame(n, s)),
            proptest::collection::vec(any::<u8>(), 0..200),
        ]
    }

    /// A base frame, cut short or padded, with a few bytes overwritten
    /// (mostly in the headers).
    fn frame() -> impl Strategy<Value = Vec<u8>> {
        (
            base_frame(),
            proptest::option::of(0usize..9100),
            proptest::collection::vec((0usize..80, any::<u8>()), 0..4),
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..2),
        )
            .prop_map(|(mut f, len, header_pokes, pokes)| {
                if let Some(len) = len {
                    f.resize(len.min(9000), 0);
                }
                for (at, v) in header_pokes {
                    if at < f.len() {
                        f[at] = v;
                    }
                }
                for (at, v) in pokes {
                    if !f.is_empty() {
                        let i = at.index(f.len());
                        f[i] = v;
                    }
                }
                f
            })
    }

    fn shape() -> impl Strategy<Value = Shape> {
        (
            proptest::option::of(prop_oneof![
                Just(54usize),
                Just(42),
                Just(66),
                0usize..=SLOT
            ]),
            prop_oneof![Just(BUF), Just(1024), 1usize..=BUF],
            csum(),
            csum(),
        )
            .prop_map(|(hdr, chunk, ip_csum, l4_csum)| Shape {
                hdr,
                chunk,
                ip_csum,
                l4_csum,
            })
    }

    proptest! {
        // Under Miri: a few cases (each is interpreted, ~1000x slower) and
        // no regressions file (file access is not allowed in isolation).
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 4 } else { 512 },
            failure_persistence: if cfg!(miri) {
                None
            } else {
                ProptestConfig::default().failure_persistence
            },
            ..ProptestConfig::default()
        })]

        /// Whatever the bytes and their spread over buffers: no panic, no
        /// leak, every packet accounted for, and a frame that was not
        /// segmented is presented byte for byte.
        #[test]
        fn presenter_never_panics_nor_leaks(
            f in frame(),
            shape in shape(),
            headroom in prop_oneof![Just(HEADROOM), 0usize..=HEADROOM],
        ) {
            let mut r = Rig::with_presenter_headroom(headroom);
            let (out, s) = r.present(&f, shape);
            prop_assert_eq!(s.packets, 1);
            prop_assert_eq!(s.frames, out.len() as u64);
            let dropped = s.bad_checksum + s.malformed;
            prop_assert!(dropped <= 1);
            if dropped == 1 {
                prop_assert!(out.is_empty());
            } else if s.segmented == 0 {
                prop_assert_eq!(out, vec![f]);
            } else {
                // Segments of a TCP/IPv4 frame: each with a right IP length
                // and header checksum.
                prop_assert_eq!(s.segments, out.len() as u64);
                for o in &out {
                    prop_assert!(o.len() <= f.len());
                    prop_assert_eq!(ip_total(o), o.len() - 14);
                    prop_assert!(ip_header_ok(o));
                }
            }
        }

        /// A valid TCP/IPv4 frame over any buffers: never dropped, and the
        /// stream it carries comes out whole.
        #[test]
        fn valid_tcp_keeps_its_stream(
            payload in 0usize..9000,
            opts in 0usize..=40,
            fl in any::<u8>(),
            split in any::<bool>(),
            chunk in prop_oneof![Just(BUF), 64usize..=BUF],
            ip_csum in csum(),
            l4_csum in csum(),
        ) {
            let f = tcp(payload, opts, fl);
            let h = tcp_hlen(&f);
            let shape = Shape {
                hdr: split.then_some(h),
                chunk,
                ip_csum,
                l4_csum,
            };
            let mut r = Rig::new();
            let (out, s) = r.present(&f, shape);
            prop_assert_eq!(s.bad_checksum + s.malformed, 0);
            if s.segmented == 1 {
                assert_segments_of(&f, &out);
            } else {
                prop_assert_eq!(out, vec![f]);
            }
        }
    }
}
