//! Reading a received frame's headers and building the frames we send,
//! through the [`packet`] crate's views: Ethernet + IPv4 + TCP, ARP, and
//! ICMP echo (ping).

use packet::{checksum, ethernet, ip_proto, ipv4, tcp};

/// TCP option kinds we read or write.
mod opt {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WSCALE: u8 = 3;
    pub const SACK_PERM: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TIMESTAMPS: u8 = 8;
}

/// The options of a received segment that matter to us.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack_perm: bool,
    /// (TSval, TSecr)
    pub ts: Option<(u32, u32)>,
    /// SACK blocks (left, right), the first `sack_len` of them.
    pub sack: [(u32, u32); 4],
    pub sack_len: usize,
}

/// Options are well formed: every kind other than END and NOP has a length
/// byte of at least 2 that stays inside the header, and the kinds we read
/// have their fixed lengths.
pub fn parse_options(mut b: &[u8]) -> Option<Options> {
    let mut o = Options::default();
    while let [kind, rest @ ..] = b {
        match *kind {
            opt::END => break,
            opt::NOP => {
                b = rest;
                continue;
            }
            _ => {}
        }
        let len = *rest.first()? as usize;
        if len < 2 || len > b.len() {
            return None;
        }
        let body = &b[2..len];
        match (*kind, body.len()) {
            (opt::MSS, 2) => o.mss = Some(u16::from_be_bytes([body[0], body[1]])),
            (opt::WSCALE, 1) => o.wscale = Some(body[0].min(14)),
            (opt::SACK_PERM, 0) => o.sack_perm = true,
            (opt::TIMESTAMPS, 8) => {
                let v = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                let e = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                o.ts = Some((v, e));
            }
            (opt::MSS | opt::WSCALE | opt::SACK_PERM | opt::TIMESTAMPS, _) => return None,
            (opt::SACK, n) if n % 8 != 0 || n > 32 => return None,
            (opt::SACK, _) => {
                for (i, b) in body.chunks_exact(8).enumerate() {
                    let l = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                    let r = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
                    o.sack[i] = (l, r);
                }
                o.sack_len = body.len() / 8;
            }
            _ => {}
        }
        b = &b[len..];
    }
    Some(o)
}

/// Where a frame's headers say things are.
#[derive(Clone, Copy, Debug)]
pub struct Headers {
    pub src_mac: [u8; 6],
    pub src_ip: [u8; 4],
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub opts: Options,
    /// Bytes of Ethernet + IP + TCP header.
    pub hdr_len: usize,
    /// TCP payload bytes (IP total length minus headers: Ethernet padding
    /// excluded).
    pub payload_len: usize,
    /// Pseudo-header sum for the TCP checksum.
    pub pseudo: u64,
}

/// Why a frame is not a TCP segment for us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    Malformed,
    BadOptions,
    NotForUs,
    NotTcp,
    Fragment,
    Arp,
    /// ICMP to our address (answered when it is an echo request).
    Icmp,
}

/// Reads Ethernet, IPv4 and TCP headers from the start of `b` (which must
/// hold all of them). `frame_len` is the frame's length, for the IP total
/// length check.
pub fn parse(b: &[u8], frame_len: usize, mac: [u8; 6], ip: [u8; 4]) -> Result<Headers, Reject> {
    let eth = ethernet::Frame::new_checked(b).map_err(|_| Reject::Malformed)?;
    let dst = eth.dst_addr();
    match eth.ethertype() {
        ethernet::ethertype::IPV4 => {}
        0x0806 => return Err(Reject::Arp),
        _ => return Err(Reject::NotTcp),
    }
    if dst != mac && dst != [0xff; 6] {
        return Err(Reject::NotForUs);
    }
    let ipp = ipv4::Packet::new_checked(eth.payload()).map_err(|_| Reject::Malformed)?;
    let ihl = ipp.header_len();
    let total = ipp.total_len();
    if total < ihl || ethernet::HEADER_LEN + total > frame_len {
        return Err(Reject::Malformed);
    }
    if ipp.protocol() == ip_proto::ICMP && ipp.dst_addr() == ip && !ipp.is_fragment() {
        return Err(Reject::Icmp);
    }
    if ipp.protocol() != ip_proto::TCP {
        return Err(Reject::NotTcp);
    }
    if ipp.dst_addr() != ip {
        return Err(Reject::NotForUs);
    }
    if ipp.is_fragment() {
        return Err(Reject::Fragment);
    }
    let tcpb = eth.payload().get(ihl..).ok_or(Reject::Malformed)?;
    let t = tcp::Packet::new_checked(tcpb).map_err(|_| Reject::Malformed)?;
    let thl = t.header_len();
    if total < ihl + thl {
        return Err(Reject::Malformed);
    }
    let opts = parse_options(&tcpb[tcp::MIN_HEADER_LEN..thl]).ok_or(Reject::BadOptions)?;
    let tcp_len = total - ihl;
    Ok(Headers {
        src_mac: eth.src_addr(),
        src_ip: ipp.src_addr(),
        src_port: t.src_port(),
        dst_port: t.dst_port(),
        seq: t.seq(),
        ack: t.ack(),
        flags: t.flags(),
        window: t.window(),
        opts,
        hdr_len: ethernet::HEADER_LEN + ihl + thl,
        payload_len: total - ihl - thl,
        pseudo: checksum::pseudo_header(ipp.addrs(), ip_proto::TCP, tcp_len as u32),
    })
}

/// The IPv4 header checksum of the frame starting at `b` is right.
pub fn ipv4_header_ok(b: &[u8]) -> bool {
    let Some(ipb) = b.get(ethernet::HEADER_LEN..) else {
        return false;
    };
    ipv4::Packet::new_checked(ipb).is_ok_and(|p| p.checksum_ok())
}

/// What a segment we send says.
#[derive(Clone, Copy, Debug, Default)]
pub struct Out<'a> {
    pub dst_mac: [u8; 6],
    pub dst_ip: [u8; 4],
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// SYN options: (MSS, our window shift if scaling, SACK-permitted).
    pub syn: Option<(u16, Option<u8>, bool)>,
    /// (TSval, TSecr)
    pub ts: Option<(u32, u32)>,
    pub sack: &'a [(u32, u32)],
    pub payload: &'a [u8],
}

/// Appends the frame for `o` to `out` (cleared first), from `mac` / `ip`
/// with IP id `ident`. Returns the number of SACK blocks written.
pub fn build(out: &mut Vec<u8>, mac: [u8; 6], ip: [u8; 4], ident: u16, o: &Out) -> usize {
    let mut opts = [0u8; 40];
    let mut n = 0;
    let mut put = |bytes: &[u8], n: &mut usize| {
        opts[*n..*n + bytes.len()].copy_from_slice(bytes);
        *n += bytes.len();
    };
    if let Some((mss, ws, sack)) = o.syn {
        let m = mss.to_be_bytes();
        put(&[opt::MSS, 4, m[0], m[1]], &mut n);
        if let Some(ws) = ws {
            put(&[opt::NOP, opt::WSCALE, 3, ws], &mut n);
        }
        if sack && o.ts.is_none() {
            put(&[opt::NOP, opt::NOP, opt::SACK_PERM, 2], &mut n);
        }
        if let Some((v, e)) = o.ts {
            if sack {
                put(&[opt::SACK_PERM, 2], &mut n);
            } else {
                put(&[opt::NOP, opt::NOP], &mut n);
            }
            put(&[opt::TIMESTAMPS, 10], &mut n);
            put(&v.to_be_bytes(), &mut n);
            put(&e.to_be_bytes(), &mut n);
        }
    } else if let Some((v, e)) = o.ts {
        put(&[opt::NOP, opt::NOP, opt::TIMESTAMPS, 10], &mut n);
        put(&v.to_be_bytes(), &mut n);
        put(&e.to_be_bytes(), &mut n);
    }
    let room = (40 - n).saturating_sub(2) / 8;
    let blocks = o.sack.len().min(room);
    if blocks > 0 && o.syn.is_none() {
        put(
            &[opt::NOP, opt::NOP, opt::SACK, 2 + 8 * blocks as u8],
            &mut n,
        );
        for &(l, r) in &o.sack[..blocks] {
            put(&l.to_be_bytes(), &mut n);
            put(&r.to_be_bytes(), &mut n);
        }
    }
    let blocks = if o.syn.is_none() { blocks } else { 0 };
    debug_assert!(n % 4 == 0 && n <= 40);
    let thl = tcp::MIN_HEADER_LEN + n;
    let ip_len = ipv4::MIN_HEADER_LEN + thl + o.payload.len();
    out.clear();
    out.resize(ethernet::HEADER_LEN + ip_len, 0);
    {
        let mut eth = ethernet::Frame::new_unchecked(&mut out[..]);
        eth.set_dst_addr(o.dst_mac);
        eth.set_src_addr(mac);
        eth.set_ethertype(ethernet::ethertype::IPV4);
    }
    let ip_start = ethernet::HEADER_LEN;
    let tcp_start = ip_start + ipv4::MIN_HEADER_LEN;
    {
        let mut p = ipv4::Packet::new_unchecked(&mut out[ip_start..tcp_start]);
        p.set_header_len(ipv4::MIN_HEADER_LEN);
        p.set_total_len(ip_len as u16);
        p.set_ident(ident);
        p.set_flags_frag(ipv4::DONT_FRAG);
        p.set_ttl(64);
        p.set_protocol(ip_proto::TCP);
        p.set_src_addr(ip);
        p.set_dst_addr(o.dst_ip);
        p.fill_checksum();
    }
    let mut addrs = [0u8; 8];
    addrs[..4].copy_from_slice(&ip);
    addrs[4..].copy_from_slice(&o.dst_ip);
    {
        let seg = &mut out[tcp_start..];
        seg[tcp::MIN_HEADER_LEN..thl].copy_from_slice(&opts[..n]);
        seg[thl..].copy_from_slice(o.payload);
        let mut t = tcp::Packet::new_unchecked(seg);
        t.set_src_port(o.src_port);
        t.set_dst_port(o.dst_port);
        t.set_seq(o.seq);
        t.set_ack(o.ack);
        t.set_header_len(thl);
        t.set_flags(o.flags);
        t.set_window(o.window);
        let pseudo = checksum::pseudo_header(&addrs, ip_proto::TCP, (thl + o.payload.len()) as u32);
        t.fill_checksum(pseudo);
    }
    blocks
}

/// ARP (Ethernet + IPv4) field offsets in a frame.
mod arp {
    pub const HTYPE: usize = 14;
    pub const OPER: usize = 20;
    pub const SHA: usize = 22;
    pub const SPA: usize = 28;
    pub const THA: usize = 32;
    pub const TPA: usize = 38;
    pub const END: usize = 42;
    /// htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4.
    pub const FIXED: [u8; 6] = [0, 1, 8, 0, 6, 4];
}

/// If `f` is an ARP request for `ip`, the reply from `mac` in `out`.
pub fn arp_reply(f: &[u8], mac: [u8; 6], ip: [u8; 4], out: &mut Vec<u8>) -> bool {
    if f.len() < arp::END
        || f[arp::HTYPE..arp::OPER] != arp::FIXED
        || f[arp::OPER..arp::SHA] != [0, 1]
        || f[arp::TPA..arp::END] != ip
    {
        return false;
    }
    out.clear();
    out.resize(arp::END, 0);
    out[0..6].copy_from_slice(&f[arp::SHA..arp::SPA]);
    out[6..12].copy_from_slice(&mac);
    out[12..14].copy_from_slice(&[0x08, 0x06]);
    out[arp::HTYPE..arp::OPER].copy_from_slice(&arp::FIXED);
    out[arp::OPER..arp::SHA].copy_from_slice(&[0, 2]);
    out[arp::SHA..arp::SPA].copy_from_slice(&mac);
    out[arp::SPA..arp::THA].copy_from_slice(&ip);
    out[arp::THA..arp::TPA].copy_from_slice(&f[arp::SHA..arp::SPA]);
    out[arp::TPA..arp::END].copy_from_slice(&f[arp::SPA..arp::THA]);
    true
}

/// ICMP message types we read or write.
mod icmp {
    pub const ECHO_REPLY: u8 = 0;
    pub const ECHO_REQUEST: u8 = 8;
    /// Type, code, checksum, identifier, sequence number.
    pub const HEADER_LEN: usize = 8;
}

/// If `f` (a whole frame, header checks done by [`parse`]) is an ICMP echo
/// request with a right checksum, the echo reply from `mac` / `ip` in
/// `out`: same identifier, sequence number and data; IP options are not
/// echoed.
pub fn icmp_echo_reply(f: &[u8], mac: [u8; 6], ip: [u8; 4], out: &mut Vec<u8>) -> bool {
    let Ok(eth) = ethernet::Frame::new_checked(f) else {
        return false;
    };
    let Ok(req) = ipv4::Packet::new_checked(eth.payload()) else {
        return false;
    };
    let (ihl, total) = (req.header_len(), req.total_len());
    let Some(msg) = eth.payload().get(ihl..total) else {
        return false;
    };
    if msg.len() < icmp::HEADER_LEN
        || msg[0] != icmp::ECHO_REQUEST
        || msg[1] != 0
        || checksum::checksum(msg) != 0
    {
        return false;
    }
    let ip_len = ipv4::MIN_HEADER_LEN + msg.len();
    out.clear();
    out.resize(ethernet::HEADER_LEN + ip_len, 0);
    let mut e = ethernet::Frame::new_unchecked(&mut out[..]);
    e.set_dst_addr(eth.src_addr());
    e.set_src_addr(mac);
    e.set_ethertype(ethernet::ethertype::IPV4);
    let reply = &mut out[ethernet::HEADER_LEN..];
    reply[0] = 0x45;
    let mut p = ipv4::Packet::new_unchecked(&mut reply[..]);
    p.set_total_len(ip_len as u16);
    p.set_ident(req.ident());
    p.set_ttl(64);
    p.set_protocol(ip_proto::ICMP);
    p.set_src_addr(ip);
    p.set_dst_addr(req.src_addr());
    p.fill_checksum();
    let m = &mut reply[ipv4::MIN_HEADER_LEN..];
    m.copy_from_slice(msg);
    m[0] = icmp::ECHO_REPLY;
    m[2..4].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_requests_are_answered_and_nothing_else() {
        // 10.0.0.2 (MAC 4) pings 10.0.0.1 (MAC 2), with an IP option.
        let data = b"abcdefghijklmnopqrstuvwxyz";
        let mut msg = vec![icmp::ECHO_REQUEST, 0, 0, 0, 0x12, 0x34, 0, 7];
        msg.extend_from_slice(data);
        let c = checksum::checksum(&msg);
        msg[2..4].copy_from_slice(&c.to_be_bytes());
        let ihl = 24;
        let mut f = vec![0u8; 14 + ihl + msg.len()];
        f[0..6].copy_from_slice(&[2; 6]);
        f[6..12].copy_from_slice(&[4; 6]);
        f[12..14].copy_from_slice(&[8, 0]);
        {
            let mut p = ipv4::Packet::new_unchecked(&mut f[14..]);
            p.set_header_len(ihl);
            p.set_total_len((ihl + msg.len()) as u16);
            p.set_ttl(9);
            p.set_protocol(ip_proto::ICMP);
            p.set_src_addr([10, 0, 0, 2]);
            p.set_dst_addr([10, 0, 0, 1]);
            p.fill_checksum();
        }
        f[14 + ihl..].copy_from_slice(&msg);
        assert_eq!(
            parse(&f, f.len(), [2; 6], [10, 0, 0, 1]).unwrap_err(),
            Reject::Icmp
        );
        let mut out = Vec::new();
        assert!(icmp_echo_reply(&f, [2; 6], [10, 0, 0, 1], &mut out));
        assert_eq!(&out[0..6], &[4; 6]);
        assert!(ipv4_header_ok(&out));
        let p = ipv4::Packet::new_checked(&out[14..]).unwrap();
        assert_eq!(
            (p.src_addr(), p.dst_addr(), p.header_len()),
            ([10, 0, 0, 1], [10, 0, 0, 2], 20)
        );
        let m = &out[34..];
        assert_eq!(
            (m[0], &m[4..8], &m[8..]),
            (icmp::ECHO_REPLY, &[0x12, 0x34, 0, 7][..], &data[..])
        );
        assert_eq!(checksum::checksum(m), 0);
        // A wrong checksum, or another type, gets no reply.
        let mut bad = f.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(!icmp_echo_reply(&bad, [2; 6], [10, 0, 0, 1], &mut out));
        let mut reply = f.clone();
        reply[14 + ihl] = icmp::ECHO_REPLY;
        assert!(!icmp_echo_reply(&reply, [2; 6], [10, 0, 0, 1], &mut out));
        // ICMP to another address is not ours.
        assert_eq!(
            parse(&f, f.len(), [2; 6], [10, 0, 0, 9]).unwrap_err(),
            Reject::NotTcp
        );
    }

    #[test]
    fn options_round_trip_and_bad_lengths() {
        let mut f = Vec::new();
        let o = Out {
            dst_mac: [4; 6],
            dst_ip: [10, 0, 0, 2],
            syn: Some((1460, Some(7), true)),
            ts: Some((5, 6)),
            ..Out::default()
        };
        build(&mut f, [2; 6], [10, 0, 0, 1], 1, &o);
        let h = parse(&f, f.len(), [0; 6], [10, 0, 0, 2]);
        assert_eq!(h.unwrap_err(), Reject::NotForUs, "another MAC");
        let h = parse(&f, f.len(), [4; 6], [10, 0, 0, 2]).unwrap();
        assert!(ipv4_header_ok(&f));
        assert_eq!((h.hdr_len, h.payload_len), (f.len(), 0));
        let sack = [(1, 2), (3, 4), (5, 6)];
        let o = Out {
            ts: Some((5, 6)),
            sack: &sack,
            ..o
        };
        let o = Out { syn: None, ..o };
        assert_eq!(
            build(&mut f, [2; 6], [10, 0, 0, 1], 1, &o),
            3,
            "3 blocks fit with timestamps"
        );
        let h = parse(&f, f.len(), [4; 6], [10, 0, 0, 2]).unwrap();
        assert_eq!(&h.opts.sack[..h.opts.sack_len], &sack);
        assert_eq!(h.opts.ts, Some((5, 6)));
        build(
            &mut f,
            [2; 6],
            [10, 0, 0, 1],
            1,
            &Out {
                syn: Some((1460, Some(7), true)),
                ..o
            },
        );
        let opts = &f[54..f.len()];
        let p = parse_options(opts).unwrap();
        assert_eq!(p.mss, Some(1460));
        assert_eq!(p.wscale, Some(7));
        assert!(p.sack_perm);
        assert_eq!(p.ts, Some((5, 6)));
        assert_eq!(parse_options(&[2, 0]), None, "length 0");
        assert_eq!(parse_options(&[2, 1]), None, "length 1");
        assert_eq!(parse_options(&[2, 5, 0, 0]), None, "past the end");
        assert_eq!(parse_options(&[2, 3, 0]), None, "MSS of 3 bytes");
        assert_eq!(parse_options(&[5, 6, 0, 0, 0, 0]), None, "SACK of 4 bytes");
        assert_eq!(parse_options(&[2]), None, "kind without length");
        assert_eq!(parse_options(&[1, 1, 0, 2, 1]), Some(Options::default()));
    }
}
