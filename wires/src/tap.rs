//! A Linux TAP device as the wire: the host kernel is the peer.
//!
//! [`TapWire::open`] opens `/dev/net/tun` and attaches to (or creates) a
//! TAP interface (`IFF_TAP | IFF_NO_PI`), non-persistent, so the interface
//! disappears when the wire is dropped (unless it was made persistent by
//! someone else, e.g. `ip tuntap add`). The file descriptor is nonblocking:
//! [`Wire::recv`] does one `read(2)` and returns `None` on `EAGAIN`,
//! [`Wire::send`] does one `write(2)` and counts a drop when the kernel's
//! queue is full (`EAGAIN`/`ENOBUFS`); neither ever blocks.
//!
//! # Offloads (`TapConfig::vnet_hdr`)
//!
//! With `vnet_hdr` every frame carries a 10-byte `struct virtio_net_hdr`
//! (legacy layout, native byte order, the tun default) and the kernel is
//! told (`TUNSETOFFLOAD`: `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`) that the
//! "device" can complete checksums and segment TCP. The kernel then hands
//! over frames with partial checksums and TCP super-frames of up to 64 KiB.
//! `recv` turns them back into what a real wire would carry:
//!
//! - `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the ones-complement sum from
//!   `csum_start` to the end of the frame is stored at
//!   `csum_start + csum_offset` (the field already holds the pseudo-header
//!   sum, as virtio specifies).
//! - `VIRTIO_NET_HDR_GSO_TCPV4` / `TCPV6` (ECN bit ignored): the super-frame
//!   is segmented in software into frames of at most `gso_size` payload
//!   bytes, each with the Ethernet, IP and TCP headers of the super-frame
//!   and: IPv4 total length, id (incremented per segment) and header
//!   checksum, or IPv6 payload length, rewritten; the TCP sequence number
//!   advanced by the payload offset; FIN and PSH only on the last segment,
//!   CWR only on the first; the full TCP checksum recomputed. The segments
//!   are returned one per `recv` call, built lazily from the stored
//!   super-frame into one reused buffer (no allocation per frame).
//!   With [`SimConfig::gro`](hw_sim::SimConfig::gro) > 1 the simulator's
//!   [GRO](hw_sim::gro) then coalesces the segments of one super-frame again
//!   and presents them as one packet over several descriptors, as hardware
//!   GRO/RSC behind a real wire would.
//! - UDP GSO (`GSO_UDP`, `GSO_UDP_L4`) and unknown GSO types are never
//!   requested from the kernel; should one arrive it is dropped and counted
//!   in `rx_bad_vnet`, as are malformed headers (`csum_start`/`csum_offset`
//!   outside the frame, `gso_size` 0, headers that do not parse as
//!   Ethernet + IP + TCP for the GSO type). Nothing here panics on bad input.
//!
//! `send` prefixes a zeroed header (no offload requested) to every frame.
//!
//! The receive buffer holds 65536 + 256 bytes of frame: enough for a
//! default (`gso_max_size` 65536) super-frame. With BIG TCP (a raised
//! `gso_max_size`) larger super-frames fail to read and count in
//! `rx_errors`.
//!
//! # Counters
//!
//! [`TapWire::stats`] returns a [`TapStats`] handle (shared atomics), to
//! be taken before the wire is boxed and handed to the engine.
//!
//! ```no_run
//! use wires::{TapConfig, TapWire};
//! use hw_sim::{SimConfig, SimNic};
//! let tap = TapWire::open(TapConfig { vnet_hdr: true, ..TapConfig::new("rxsink0") })
//!     .unwrap_or_else(|e| panic!("{e}"));
//! let stats = tap.stats();
//! let (_nic, _engine) = SimNic::new(SimConfig { gro: 16, ..SimConfig::default() }, Box::new(tap));
//! println!("{} frames from the kernel", stats.snapshot().rx_frames);
//! ```

use std::ffi::CStr;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hw_sim::frames::{self, L3, L4};
use hw_sim::Wire;
use packet::checksum::{fold, sum};
use packet::segment::{Piece, Template};

const TUN_PATH: &CStr = c"/dev/net/tun";
/// Length of the legacy `struct virtio_net_hdr` (no `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;
/// Frame room in the receive buffer (a 64 KiB super-frame plus headers).
const RX_FRAME_ROOM: usize = 65536 + 256;

const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

// ---------------------------------------------------------------------------
// Configuration and errors
// ---------------------------------------------------------------------------

/// How [`TapWire::open`] sets up the interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapConfig {
    /// Interface name (1..=15 bytes of printable ASCII, no `/`, `:` or `%`).
    /// Created when it does not exist, attached to when it is an unused
    /// (persistent) TAP interface.
    pub name: String,
    /// Exchange `virtio_net_hdr`s with the kernel and accept checksum and
    /// TCP segmentation offload (see the module documentation).
    pub vnet_hdr: bool,
    /// Set the interface MTU (`SIOCSIFMTU`).
    pub mtu: Option<u32>,
    /// Bring the link up (`SIOCSIFFLAGS` with `IFF_UP`).
    pub up: bool,
}

impl TapConfig {
    /// `name`, no vnet header, MTU untouched, link brought up.
    pub fn new(name: impl Into<String>) -> TapConfig {
        TapConfig {
            name: name.into(),
            vnet_hdr: false,
            mtu: None,
            up: true,
        }
    }
}

/// Why [`TapWire::open`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum TapError {
    /// `/dev/net/tun` does not exist (or has no driver behind it).
    NoTunDevice,
    /// The kernel refused `op` for lack of privilege.
    PermissionDenied { op: &'static str },
    /// The interface name cannot be a Linux interface name.
    InvalidName { name: String, reason: &'static str },
    /// The TAP interface exists and another file descriptor holds it.
    Busy { name: String },
    /// A system call failed for another reason.
    Os {
        op: &'static str,
        name: String,
        err: io::Error,
    },
}

impl fmt::Display for TapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TapError::NoTunDevice => write!(
                f,
                "{} not found: the kernel lacks the tun driver (try `modprobe tun`)",
                TUN_PATH.to_string_lossy()
            ),
            TapError::PermissionDenied { op } => write!(
                f,
                "{op}: permission denied (a TAP device needs root or CAP_NET_ADMIN)"
            ),
            TapError::InvalidName { name, reason } => {
                write!(f, "invalid interface name {name:?}: {reason}")
            }
            TapError::Busy { name } => write!(
                f,
                "TAP interface {name} is busy: another process holds its file descriptor"
            ),
            TapError::Os { op, name, err } => {
                write!(f, "{op} on {name} failed: {err}")?;
                if *op == "TUNSETIFF" && err.raw_os_error() == Some(libc::EINVAL) {
                    write!(
                        f,
                        " (an interface of that name that is not a TAP device exists?)"
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for TapError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TapError::Os { err, .. } => Some(err),
            _ => None,
        }
    }
}

/// Checks `name` the way the kernel's `dev_valid_name` does, a bit
/// stricter: printable ASCII only, and no `%` (name templates such as
/// `tap%d` are not supported).
fn validate_name(name: &str) -> Result<(), TapError> {
    let bad = |reason| {
        Err(TapError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() >= libc::IFNAMSIZ {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("reserved");
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("only printable ASCII without spaces is allowed");
    }
    if name.contains(['/', ':', '%']) {
        return bad("must not contain '/', ':' or '%'");
    }
    Ok(())
}

fn ifreq_for(name: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is plain C data (a char array and a union of integers,
    // sockaddrs and a pointer); the all-zero bit pattern is a valid value of
    // every field (a null `ifru_data` pointer included).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    // validate_name guarantees < IFNAMSIZ bytes, so a NUL terminator remains.
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr
}

fn last_errno() -> io::Error {
    io::Error::last_os_error()
}

fn os_err(op: &'static str, name: &str, err: io::Error) -> TapError {
    match err.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => TapError::PermissionDenied { op },
        _ => TapError::Os {
            op,
            name: name.to_string(),
            err,
        },
    }
}

// ---------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Counters {
    rx_frames: AtomicU64,
    rx_bytes: AtomicU64,
    rx_super_frames: AtomicU64,
    rx_segments: AtomicU64,
    rx_errors: AtomicU64,
    rx_bad_vnet: AtomicU64,
    tx_frames: AtomicU64,
    tx_bytes: AtomicU64,
    tx_dropped: AtomicU64,
    tx_errors: AtomicU64,
}

/// A shared handle on a [`TapWire`]'s counters; clones see the same values.
#[derive(Clone, Debug, Default)]
pub struct TapStats {
    inner: Arc<Counters>,
}

/// A copy of the counters at one moment ([`TapStats::snapshot`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapCounts {
    /// Frames returned by `recv` (each segment of a super-frame counts).
    pub rx_frames: u64,
    /// Their bytes (without virtio header).
    pub rx_bytes: u64,
    /// TCP super-frames (GSO) read from the kernel.
    pub rx_super_frames: u64,
    /// Segments produced from them (also counted in `rx_frames` as they
    /// are returned).
    pub rx_segments: u64,
    /// `read(2)` failures other than `EAGAIN`.
    pub rx_errors: u64,
    /// Frames dropped for a malformed or unsupported virtio header.
    pub rx_bad_vnet: u64,
    /// Frames written to the kernel.
    pub tx_frames: u64,
    /// Their bytes (without virtio header).
    pub tx_bytes: u64,
    /// Frames not written because the kernel's queue was full
    /// (`EAGAIN`/`ENOBUFS`).
    pub tx_dropped: u64,
    /// Frames not written for another error (e.g. shorter than 14 bytes).
    pub tx_errors: u64,
}

impl TapStats {
    /// The current values.
    pub fn snapshot(&self) -> TapCounts {
        let c = &*self.inner;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TapCounts {
            rx_frames: g(&c.rx_frames),
            rx_bytes: g(&c.rx_bytes),
            rx_super_frames: g(&c.rx_super_frames),
            rx_segments: g(&c.rx_segments),
            rx_errors: g(&c.rx_errors),
            rx_bad_vnet: g(&c.rx_bad_vnet),
            tx_frames: g(&c.tx_frames),
            tx_bytes: g(&c.tx_bytes),
            tx_dropped: g(&c.tx_dropped),
            tx_errors: g(&c.tx_errors),
        }
    }
}

#[inline]
fn bump(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------
// virtio_net_hdr, checksum completion and TCP segmentation (pure functions)
// ---------------------------------------------------------------------------

/// Legacy `struct virtio_net_hdr`, fields in native byte order (what tun
/// uses unless `TUNSETVNETLE`/`TUNSETVNETBE` says otherwise).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct VnetHdr {
    flags: u8,
    gso_type: u8,
    hdr_len: u16,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
}

impl VnetHdr {
    fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b = b.get(..VNET_HDR_LEN)?;
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    #[cfg(test)]
    fn to_bytes(self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

/// Why a frame's virtio header could not be honoured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VnetError {
    /// `csum_start`/`csum_offset` point outside the frame.
    CsumRange,
    /// GSO requested with `gso_size` 0.
    GsoSizeZero,
    /// A GSO type other than TCPv4/TCPv6.
    GsoUnsupported(u8),
    /// The headers do not parse as Ethernet + IPv4/IPv6 + TCP.
    Headers,
}

/// Completes a partial checksum: the ones-complement sum of
/// `frame[csum_start..]` (whose checksum field holds the pseudo-header sum)
/// is complemented and stored at `csum_start + csum_offset`.
fn complete_checksum(
    frame: &mut [u8],
    csum_start: usize,
    csum_offset: usize,
) -> Result<(), VnetError> {
    let field = csum_start
        .checked_add(csum_offset)
        .filter(|&f| csum_start < frame.len() && f + 2 <= frame.len())
        .ok_or(VnetError::CsumRange)?;
    let c = !fold(sum(&frame[csum_start..], 0));
    // 0 and 0xFFFF are the same ones-complement value; 0 means "no
    // checksum" for UDP, so store the other one (as the kernel does).
    let c = if c == 0 { 0xFFFF } else { c };
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// How to cut one TCP super-frame into segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TcpGso {
    /// The super-frame's headers, rewritten for each segment.
    template: Template,
    mss: usize,
    /// Payload bytes of the super-frame.
    payload: usize,
    segments: usize,
}

impl TcpGso {
    /// Plans the segmentation of `frame` (a GSO super-frame of `gso_type`
    /// with the ECN bit masked off) into segments of `gso_size` payload.
    fn plan(frame: &[u8], gso_type: u8, gso_size: u16) -> Result<TcpGso, VnetError> {
        if gso_size == 0 {
            return Err(VnetError::GsoSizeZero);
        }
        let ipv6 = match gso_type {
            VIRTIO_NET_HDR_GSO_TCPV4 => false,
            VIRTIO_NET_HDR_GSO_TCPV6 => true,
            other => return Err(VnetError::GsoUnsupported(other)),
        };
        let p = frames::parse(frame);
        let l3_ok = match p.l3 {
            L3::Ipv4 => !ipv6,
            L3::Ipv6 => ipv6,
            L3::None => false,
        };
        if !l3_ok || p.fragment || p.l4 != L4::Tcp {
            return Err(VnetError::Headers);
        }
        // The template checks what parse() does not: an IPv4 header length
        // of at least 20, a TCP data offset of at least 20 bytes, all of the
        // headers in the frame.
        let template = Template::new(frame, p.l3_off, p.l4_off).map_err(|_| VnetError::Headers)?;
        let mss = gso_size as usize;
        let payload = frame.len() - template.header_len();
        Ok(TcpGso {
            template,
            mss,
            payload,
            segments: payload.div_ceil(mss).max(1),
        })
    }

    /// Writes segment `i` (< `segments`) of `frame` into `out` (cleared
    /// first; no allocation once `out` has room for headers + `mss`).
    fn write_segment(&self, frame: &[u8], i: usize, out: &mut Vec<u8>) {
        debug_assert!(i < self.segments);
        let t = &self.template;
        let hlen = t.header_len();
        let start = (hlen + i * self.mss).min(frame.len());
        let end = (start + self.mss).min(frame.len());
        out.clear();
        out.extend_from_slice(&frame[..hlen]);
        out.extend_from_slice(&frame[start..end]);
        let piece = Piece {
            offset: i * self.mss,
            len: end - start,
            first: i == 0,
            last: i + 1 == self.segments,
            ip_id: Some(t.ip_id().wrapping_add(i as u16)),
        };
        // `out` holds the headers the template was read from: neither can
        // fail.
        let rewritten = t
            .rewrite(out, &piece)
            .and_then(|()| t.fill_tcp_checksum(out));
        debug_assert!(rewritten.is_ok());
    }
}

/// What a frame read with a virtio header becomes.
#[derive(Debug, PartialEq, Eq)]
enum Rx {
    /// The frame itself (its checksum completed if it was partial).
    Frame,
    /// Segments of a TCP super-frame.
    Segments(TcpGso),
}

/// Applies `hdr` to `frame`: completes a partial checksum in place and/or
/// plans the segmentation of a super-frame.
fn apply_vnet(hdr: &VnetHdr, frame: &mut [u8]) -> Result<Rx, VnetError> {
    let gso = hdr.gso_type & !VIRTIO_NET_HDR_GSO_ECN;
    let needs_csum = hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0;
    if gso == VIRTIO_NET_HDR_GSO_NONE {
        if needs_csum {
            complete_checksum(frame, hdr.csum_start.into(), hdr.csum_offset.into())?;
        }
        return Ok(Rx::Frame);
    }
    let plan = TcpGso::plan(frame, gso, hdr.gso_size)?;
    if needs_csum {
        // Every segment's checksum is recomputed from scratch; the offsets
        // are only checked for sanity.
        let (s, o) = (hdr.csum_start as usize, hdr.csum_offset as usize);
        if s >= frame.len() || s + o + 2 > frame.len() {
            return Err(VnetError::CsumRange);
        }
    }
    Ok(Rx::Segments(plan))
}

// ---------------------------------------------------------------------------
// The wire
// ---------------------------------------------------------------------------

/// A Linux TAP interface as the [`Wire`]: frames the kernel sends out of
/// the interface reach the simulated NIC, frames the NIC transmits are
/// received by the kernel. See the module documentation.
#[derive(Debug)]
pub struct TapWire {
    fd: OwnedFd,
    name: String,
    vnet_hdr: bool,
    /// Virtio header (when enabled) followed by the frame last read.
    rx_buf: Vec<u8>,
    /// Length of the frame in `rx_buf` after the header.
    rx_len: usize,
    /// The segment last returned.
    seg_buf: Vec<u8>,
    /// The super-frame in `rx_buf` being segmented, and the next segment.
    gso: Option<(TcpGso, usize)>,
    stats: TapStats,
}

impl TapWire {
    /// Opens `/dev/net/tun` and creates or attaches to the TAP interface
    /// `cfg.name`, then applies the offload, MTU and link settings.
    pub fn open(cfg: TapConfig) -> Result<TapWire, TapError> {
        validate_name(&cfg.name)?;
        let name = cfg.name.as_str();
        // SAFETY: TUN_PATH is a NUL-terminated C string; open(2) has no
        // other preconditions.
        let raw = unsafe {
            libc::open(
                TUN_PATH.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            let err = last_errno();
            return Err(match err.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => {
                    TapError::NoTunDevice
                }
                _ => os_err("open /dev/net/tun", name, err),
            });
        }
        // SAFETY: `raw` is a file descriptor open(2) just returned; nothing
        // else owns it, so OwnedFd may close it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let mut ifr = ifreq_for(name);
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
        if cfg.vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes back one `struct ifreq`, and
        // `ifr` is a valid, exclusively borrowed ifreq for the whole call.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } < 0 {
            let err = last_errno();
            return Err(match err.raw_os_error() {
                Some(libc::EBUSY) => TapError::Busy {
                    name: name.to_string(),
                },
                _ => os_err("TUNSETIFF", name, err),
            });
        }
        // The kernel writes the interface's name back (NUL-terminated, as
        // ifr_name is zero-filled beyond it and at most 15 bytes are used).
        let actual: String = ifr
            .ifr_name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8 as char)
            .collect();

        if cfg.vnet_hdr {
            let sz: libc::c_int = VNET_HDR_LEN as libc::c_int;
            // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer,
            // which points to a live c_int.
            if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &sz) } < 0 {
                return Err(os_err("TUNSETVNETHDRSZ", &actual, last_errno()));
            }
            let offload = (libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6) as libc::c_ulong;
            // SAFETY: TUNSETOFFLOAD takes its argument by value (an
            // unsigned long of flags); no memory is accessed.
            if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, offload) } < 0 {
                return Err(os_err("TUNSETOFFLOAD", &actual, last_errno()));
            }
        }

        if cfg.mtu.is_some() || cfg.up {
            configure_link(&actual, cfg.mtu, cfg.up)?;
        }

        let hdr = if cfg.vnet_hdr { VNET_HDR_LEN } else { 0 };
        Ok(TapWire {
            fd,
            name: actual,
            vnet_hdr: cfg.vnet_hdr,
            rx_buf: vec![0; hdr + RX_FRAME_ROOM],
            rx_len: 0,
            seg_buf: Vec::with_capacity(RX_FRAME_ROOM),
            gso: None,
            stats: TapStats::default(),
        })
    }

    /// A handle on the counters; take it before boxing the wire.
    pub fn stats(&self) -> TapStats {
        self.stats.clone()
    }

    /// The interface name (as the kernel reported it).
    pub fn ifname(&self) -> &str {
        &self.name
    }

    /// Whether frames carry a virtio header (offloads on).
    pub fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// Returns the next pending segment of the current super-frame.
    fn next_segment(&mut self) -> Option<&[u8]> {
        let (plan, i) = self.gso?;
        let hdr = if self.vnet_hdr { VNET_HDR_LEN } else { 0 };
        let frame = &self.rx_buf[hdr..hdr + self.rx_len];
        plan.write_segment(frame, i, &mut self.seg_buf);
        self.gso = (i + 1 < plan.segments).then_some((plan, i + 1));
        let c = &self.stats.inner;
        bump(&c.rx_segments, 1);
        bump(&c.rx_frames, 1);
        bump(&c.rx_bytes, self.seg_buf.len() as u64);
        Some(&self.seg_buf)
    }
}

/// Sets the MTU and/or raises IFF_UP through an AF_INET datagram socket.
fn configure_link(name: &str, mtu: Option<u32>, up: bool) -> Result<(), TapError> {
    // SAFETY: socket(2) has no memory preconditions.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(os_err("socket(AF_INET)", name, last_errno()));
    }
    // SAFETY: `raw` was just returned by socket(2) and is owned by no one
    // else.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    if let Some(mtu) = mtu {
        let mut ifr = ifreq_for(name);
        ifr.ifr_ifru.ifru_mtu = libc::c_int::try_from(mtu).unwrap_or(libc::c_int::MAX);
        // SAFETY: SIOCSIFMTU reads one `struct ifreq` from a live, valid
        // ifreq.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFMTU as _, &mut ifr) } < 0 {
            return Err(os_err("SIOCSIFMTU", name, last_errno()));
        }
    }
    if up {
        let mut ifr = ifreq_for(name);
        // SAFETY: SIOCGIFFLAGS writes `ifru_flags` of the live ifreq.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut ifr) } < 0 {
            return Err(os_err("SIOCGIFFLAGS", name, last_errno()));
        }
        // SAFETY: reading the `ifru_flags` member of the union, which
        // SIOCGIFFLAGS just filled in (and which is initialised anyway,
        // as the whole union was zeroed).
        let flags = unsafe { ifr.ifr_ifru.ifru_flags };
        ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        // SAFETY: SIOCSIFFLAGS reads one `struct ifreq` from a live ifreq.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &mut ifr) } < 0 {
            return Err(os_err("SIOCSIFFLAGS", name, last_errno()));
        }
    }
    Ok(())
}

impl AsFd for TapWire {
    /// The TAP file descriptor, e.g. to `poll(2)` for readability.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for TapWire {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Wire for TapWire {
    fn recv(&mut self) -> Option<&[u8]> {
        if self.gso.is_some() {
            return self.next_segment();
        }
        // SAFETY: the destination is `rx_buf`, valid for writes of its full
        // length and not otherwise borrowed during the call.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                self.rx_buf.as_mut_ptr().cast(),
                self.rx_buf.len(),
            )
        };
        let c = &self.stats.inner;
        if n < 0 {
            let e = last_errno().raw_os_error();
            if e != Some(libc::EAGAIN) && e != Some(libc::EWOULDBLOCK) && e != Some(libc::EINTR) {
                bump(&c.rx_errors, 1);
            }
            return None;
        }
        let n = n as usize;
        if !self.vnet_hdr {
            if n == 0 {
                return None;
            }
            bump(&c.rx_frames, 1);
            bump(&c.rx_bytes, n as u64);
            return Some(&self.rx_buf[..n]);
        }
        let hdr = match VnetHdr::parse(&self.rx_buf[..n]) {
            Some(hdr) if n > VNET_HDR_LEN => hdr,
            _ => {
                bump(&c.rx_bad_vnet, 1);
                return None;
            }
        };
        let frame = &mut self.rx_buf[VNET_HDR_LEN..n];
        self.rx_len = frame.len();
        match apply_vnet(&hdr, frame) {
            Ok(Rx::Frame) => {
                bump(&c.rx_frames, 1);
                bump(&c.rx_bytes, self.rx_len as u64);
                Some(&self.rx_buf[VNET_HDR_LEN..n])
            }
            Ok(Rx::Segments(plan)) => {
                bump(&c.rx_super_frames, 1);
                self.gso = Some((plan, 0));
                self.next_segment()
            }
            Err(_) => {
                bump(&c.rx_bad_vnet, 1);
                None
            }
        }
    }

    fn send(&mut self, frame: &[u8]) {
        let hdr = [0u8; VNET_HDR_LEN];
        let (n, expected) = if self.vnet_hdr {
            let iov = [
                libc::iovec {
                    iov_base: hdr.as_ptr() as *mut libc::c_void,
                    iov_len: hdr.len(),
                },
                libc::iovec {
                    iov_base: frame.as_ptr() as *mut libc::c_void,
                    iov_len: frame.len(),
                },
            ];
            // SAFETY: both iovecs describe live, readable buffers (`hdr`
            // and `frame` outlive the call); writev only reads them.
            let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
            (n, VNET_HDR_LEN + frame.len())
        } else {
            // SAFETY: `frame` is a live buffer of `frame.len()` readable
            // bytes; write only reads it.
            let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
            (n, frame.len())
        };
        let c = &self.stats.inner;
        if n < 0 {
            match last_errno().raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => bump(&c.tx_dropped, 1),
                Some(e) if e == libc::EWOULDBLOCK => bump(&c.tx_dropped, 1),
                _ => bump(&c.tx_errors, 1),
            }
        } else if n as usize != expected {
            bump(&c.tx_errors, 1);
        } else {
            bump(&c.tx_frames, 1);
            bump(&c.tx_bytes, frame.len() as u64);
        }
    }

    fn name(&self) -> String {
        format!("tap:{}", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hw_sim::frames::{
        payload_pattern, Builder, Parsed, Tcp, TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN,
    };
    use packet::tcp::flags::CWR as TCP_CWR;
    use std::process::{Child, Command, Output, Stdio};
    use std::time::{Duration, Instant};

    // -----------------------------------------------------------------
    // Pure tests: checksum completion and software GSO, no device.
    // -----------------------------------------------------------------

    /// The value the kernel leaves in a partial checksum field: the folded,
    /// not complemented, pseudo-header sum.
    fn pseudo_sum(f: &[u8], p: &Parsed, proto: u8) -> u16 {
        let (addrs, l4_len) = match p.l3 {
            L3::Ipv4 => (&f[p.l3_off + 12..p.l3_off + 20], f.len() - p.l4_off),
            _ => (&f[p.l3_off + 8..p.l3_off + 40], f.len() - p.l4_off),
        };
        fold(sum(
            addrs,
            proto as u64 + (l4_len as u64 >> 16) + (l4_len as u64 & 0xFFFF),
        ))
    }

    /// Turns a complete frame into what the kernel hands over with
    /// CHECKSUM_PARTIAL: checksum field = pseudo-header sum.
    fn make_partial(f: &mut [u8], field: usize, proto: u8) {
        let p = frames::parse(f);
        let s = pseudo_sum(f, &p, proto);
        f[field..field + 2].copy_from_slice(&s.to_be_bytes());
    }

    /// Ethernet + IPv6 + TCP with a valid checksum.
    fn tcp6(t: &Tcp, payload: &[u8]) -> Vec<u8> {
        let b = Builder::default();
        let v4 = b.tcp(t, payload); // reuse the TCP header layout
        let tcp = &v4[34..];
        let mut f = Vec::new();
        f.extend_from_slice(&b.dst_mac);
        f.extend_from_slice(&b.src_mac);
        f.extend_from_slice(&frames::ETHERTYPE_IPV6.to_be_bytes());
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        f.extend_from_slice(&[frames::IPPROTO_TCP, 64]);
        f.extend_from_slice(&b.src_ip6);
        f.extend_from_slice(&b.dst_ip6);
        f.extend_from_slice(tcp);
        let l4 = 54;
        f[l4 + 16..l4 + 18].fill(0);
        let p = frames::parse(&f);
        let c = !fold(sum(
            &f[l4..],
            pseudo_sum(&f, &p, frames::IPPROTO_TCP) as u64,
        ));
        f[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
        assert_eq!(frames::l4_checksum_ok(&f, &frames::parse(&f)), Some(true));
        f
    }

    #[test]
    fn checksum_completion_udp_and_tcp() {
        let b = Builder::default();
        // UDP: field at 34 + 6.
        let good = b.udp(1000, 2000, &payload_pattern(333, 5));
        let mut f = good.clone();
        make_partial(&mut f, 40, frames::IPPROTO_UDP);
        assert_ne!(f, good);
        let hdr = VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        let hdr = VnetHdr::parse(&hdr.to_bytes()).unwrap();
        assert_eq!(apply_vnet(&hdr, &mut f), Ok(Rx::Frame));
        assert_eq!(f, good);
        assert_eq!(frames::l4_checksum_ok(&f, &frames::parse(&f)), Some(true));

        // TCP over IPv4 and IPv6: field at l4 + 16.
        for (good, l4) in [
            (b.tcp(&Tcp::default(), &payload_pattern(1001, 9)), 34usize),
            (tcp6(&Tcp::default(), &payload_pattern(999, 3)), 54),
        ] {
            let mut f = good.clone();
            make_partial(&mut f, l4 + 16, frames::IPPROTO_TCP);
            complete_checksum(&mut f, l4, 16).unwrap();
            assert_eq!(frames::l4_checksum_ok(&f, &frames::parse(&f)), Some(true));
            assert_eq!(f, good);
        }

        // A frame without NEEDS_CSUM is left alone, even with a bad checksum.
        let mut bad = good.clone();
        bad[40] ^= 0xFF;
        let copy = bad.clone();
        assert_eq!(apply_vnet(&VnetHdr::default(), &mut bad), Ok(Rx::Frame));
        assert_eq!(bad, copy);
    }

    /// Segments `f` with `hdr` the way `recv` does and checks every
    /// segment: sizes, sequence numbers, ids, flags, checksums, payload.
    fn check_segmentation(f: &[u8], hdr: VnetHdr, expect_segments: usize) -> Vec<Vec<u8>> {
        let mut f = f.to_vec();
        let orig = frames::parse(&f);
        let hdr_len = orig.l5_off;
        let payload = f[hdr_len..].to_vec();
        let l4 = orig.l4_off;
        let base_seq = u32::from_be_bytes(f[l4 + 4..l4 + 8].try_into().unwrap());
        let base_flags = f[l4 + 13];
        let Ok(Rx::Segments(plan)) = apply_vnet(&hdr, &mut f) else {
            panic!("not segmented");
        };
        assert_eq!(plan.segments, expect_segments);
        let mss = hdr.gso_size as usize;
        let mut out = Vec::with_capacity(RX_FRAME_ROOM);
        let cap = out.capacity();
        let mut segs = Vec::new();
        let mut got = Vec::new();
        for i in 0..plan.segments {
            plan.write_segment(&f, i, &mut out);
            assert_eq!(out.capacity(), cap, "buffer reused, not reallocated");
            let p = frames::parse(&out);
            assert_eq!((p.l3, p.l4, p.l5_off), (orig.l3, L4::Tcp, hdr_len));
            let chunk = mss.min(payload.len() - i * mss);
            assert_eq!(out.len(), hdr_len + chunk, "segment {i} length");
            assert_ne!(
                frames::ipv4_header_ok(&out, &p),
                Some(false),
                "segment {i} IP csum"
            );
            assert_eq!(
                frames::l4_checksum_ok(&out, &p),
                Some(true),
                "segment {i} TCP csum"
            );
            if p.l3 == L3::Ipv4 {
                assert_eq!(frames::ipv4_header_ok(&out, &p), Some(true));
                assert_eq!(p.ip_id, orig.ip_id.wrapping_add(i as u16));
                let tot = u16::from_be_bytes([out[p.l3_off + 2], out[p.l3_off + 3]]) as usize;
                assert_eq!(tot, out.len() - p.l3_off);
            } else {
                let plen = u16::from_be_bytes([out[p.l3_off + 4], out[p.l3_off + 5]]) as usize;
                assert_eq!(plen, out.len() - p.l3_off - 40);
            }
            let seq = u32::from_be_bytes(out[l4 + 4..l4 + 8].try_into().unwrap());
            assert_eq!(seq, base_seq.wrapping_add((i * mss) as u32));
            let flags = out[l4 + 13];
            let last = i + 1 == plan.segments;
            assert_eq!(
                flags & (TCP_FIN | TCP_PSH),
                if last {
                    base_flags & (TCP_FIN | TCP_PSH)
                } else {
                    0
                }
            );
            assert_eq!(
                flags & TCP_CWR,
                if i == 0 { base_flags & TCP_CWR } else { 0 }
            );
            assert_eq!(flags & TCP_ACK, base_flags & TCP_ACK);
            // Everything but the rewritten fields is the super-frame's header.
            assert_eq!(out[..p.l3_off], f[..p.l3_off]);
            assert_eq!(out[l4 + 8..l4 + 13], f[l4 + 8..l4 + 13]);
            assert_eq!(out[l4 + 18..hdr_len], f[l4 + 18..hdr_len]);
            got.extend_from_slice(&out[hdr_len..]);
            segs.push(out.clone());
        }
        assert_eq!(got, payload, "payload reassembles");
        segs
    }

    #[test]
    fn gso_tcpv4_20k_super_frame() {
        let b = Builder {
            ip_id: 0xFFFE, // wraps during the run
            ..Builder::default()
        };
        let t = Tcp {
            seq: 0xFFFF_F000, // wraps during the run
            flags: TCP_ACK | TCP_PSH | TCP_FIN | TCP_CWR,
            options: vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], // NOP NOP TS
            ..Tcp::default()
        };
        let mut f = b.tcp(&t, &payload_pattern(20 * 1024, 7));
        assert_eq!(f.len(), 14 + 20 + 32 + 20480);
        make_partial(&mut f, 34 + 16, frames::IPPROTO_TCP);
        let hdr = VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let hdr = VnetHdr::parse(&hdr.to_bytes()).unwrap();
        // 14 full segments of 1448 and one of 208.
        let segs = check_segmentation(&f, hdr, 15);
        assert_eq!(segs[0].len(), 66 + 1448);
        assert_eq!(segs[14].len(), 66 + 208);
        assert!(segs.iter().all(|s| s.len() <= 1514));

        // A payload that divides evenly, and one that fits one segment.
        let even = b.tcp(&t, &payload_pattern(1448 * 4, 1));
        check_segmentation(&even, hdr, 4);
        let small = b.tcp(&t, &payload_pattern(100, 1));
        check_segmentation(&small, hdr, 1);
    }

    #[test]
    fn gso_tcpv6_super_frame() {
        let t = Tcp {
            seq: 77,
            flags: TCP_ACK | TCP_PSH,
            ..Tcp::default()
        };
        let f = tcp6(&t, &payload_pattern(10_000, 2));
        let hdr = VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV6,
            gso_size: 1440,
            csum_start: 54,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        let segs = check_segmentation(&f, hdr, 7);
        assert_eq!(segs[6].len(), 74 + 10_000 - 6 * 1440);
    }

    #[test]
    fn malformed_vnet_headers_are_errors() {
        let b = Builder::default();
        let tcp = b.tcp(&Tcp::default(), &payload_pattern(5000, 1));
        let udp = b.udp(1, 2, &payload_pattern(100, 1));
        let csum = |start, offset| VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            csum_start: start,
            csum_offset: offset,
            ..VnetHdr::default()
        };
        let gso = |ty, size| VnetHdr {
            gso_type: ty,
            gso_size: size,
            ..VnetHdr::default()
        };
        let n = udp.len() as u16;
        for (h, f, want) in [
            (csum(n, 0), &udp, VnetError::CsumRange),
            (csum(n - 1, 0), &udp, VnetError::CsumRange),
            (csum(34, n), &udp, VnetError::CsumRange),
            (csum(0xFFFF, 0xFFFF), &udp, VnetError::CsumRange),
            (
                gso(VIRTIO_NET_HDR_GSO_TCPV4, 0),
                &tcp,
                VnetError::GsoSizeZero,
            ),
            (gso(3, 1400), &udp, VnetError::GsoUnsupported(3)),
            (gso(5, 1400), &udp, VnetError::GsoUnsupported(5)),
            (
                gso(VIRTIO_NET_HDR_GSO_TCPV4, 1400),
                &udp,
                VnetError::Headers,
            ),
            (
                gso(VIRTIO_NET_HDR_GSO_TCPV6, 1400),
                &tcp,
                VnetError::Headers,
            ),
            (
                VnetHdr {
                    csum_start: 0xFFF0,
                    csum_offset: 16,
                    flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                    ..gso(VIRTIO_NET_HDR_GSO_TCPV4, 1400)
                },
                &tcp,
                VnetError::CsumRange,
            ),
        ] {
            let mut f = f.clone();
            assert_eq!(apply_vnet(&h, &mut f), Err(want), "{h:?}");
        }
        assert_eq!(VnetHdr::parse(&[0; 9]), None);

        // Non-IP and truncated frames under GSO, and random headers on
        // random prefixes: errors or valid plans, never a panic.
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let t6 = tcp6(&Tcp::default(), &payload_pattern(3000, 4));
        let mut out = Vec::new();
        for base in [&tcp, &udp, &t6] {
            for n in 0..base.len().min(200) {
                for ty in [VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6] {
                    let mut f = base[..n].to_vec();
                    if let Ok(Rx::Segments(p)) = apply_vnet(&gso(ty, 536), &mut f) {
                        for i in 0..p.segments {
                            p.write_segment(&f, i, &mut out);
                        }
                    }
                }
            }
            for _ in 0..3000 {
                let r = rnd();
                let mut raw = r.to_le_bytes().to_vec();
                raw.extend_from_slice(&(rnd() as u16).to_le_bytes());
                raw[1] &= 0x87; // mostly plausible gso types
                let h = VnetHdr::parse(&raw).unwrap();
                let n = (rnd() as usize) % (base.len() + 1);
                let mut f = base[..n].to_vec();
                if rnd() & 1 == 0 && n > 40 {
                    let k = (rnd() as usize) % n;
                    f[k] = rnd() as u8;
                }
                if let Ok(Rx::Segments(p)) = apply_vnet(&h, &mut f) {
                    assert!(p.segments >= 1);
                    for i in [0, p.segments / 2, p.segments - 1] {
                        p.write_segment(&f, i, &mut out);
                        assert!(out.len() <= f.len().max(p.template.header_len()));
                    }
                }
            }
        }
    }

    #[test]
    fn invalid_names_are_rejected_before_any_syscall() {
        for (name, reason) in [
            ("", "empty"),
            ("abcdefghijklmnop", "longer than 15 bytes"),
            ("tap 0", "only printable ASCII without spaces is allowed"),
            ("täp0", "only printable ASCII without spaces is allowed"),
            ("tap/0", "must not contain '/', ':' or '%'"),
            ("tap:0", "must not contain '/', ':' or '%'"),
            ("tap%d", "must not contain '/', ':' or '%'"),
            ("..", "reserved"),
        ] {
            match TapWire::open(TapConfig::new(name)) {
                Err(TapError::InvalidName { name: n, reason: r }) => {
                    assert_eq!((n.as_str(), r), (name, reason));
                }
                other => panic!("{name:?}: {other:?}"),
            }
        }
        assert!(validate_name("abcdefghijklmno").is_ok()); // 15 bytes
        let e = TapWire::open(TapConfig::new("")).unwrap_err();
        assert_eq!(e.to_string(), "invalid interface name \"\": empty");
        let e = TapError::PermissionDenied { op: "TUNSETIFF" };
        assert!(e.to_string().contains("root or CAP_NET_ADMIN"));
        let e = TapError::Os {
            op: "TUNSETIFF",
            name: "lo".into(),
            err: io::Error::from_raw_os_error(libc::EINVAL),
        };
        assert!(
            e.to_string()
                .starts_with("TUNSETIFF on lo failed: Invalid argument"),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    // -----------------------------------------------------------------
    // Device tests: need root and /dev/net/tun. The kernel side lives in
    // a network namespace created (and always deleted) by the test.
    // -----------------------------------------------------------------

    fn skip() -> bool {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        let why = if euid != 0 {
            "not root"
        } else if !std::path::Path::new("/dev/net/tun").exists() {
            "no /dev/net/tun"
        } else if Command::new("ip").arg("-V").output().is_err() {
            "no ip(8)"
        } else {
            return false;
        };
        skip_or_fail(&format!("TAP device test: {why}"));
        true
    }

    /// A test that cannot run here: under `CI=true` it fails (CI must run
    /// every test it names), otherwise it says so on stderr, past libtest's
    /// output capture, so a skipped test never passes unnoticed.
    fn skip_or_fail(why: &str) {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true and this test cannot run: {why}");
        }
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "SKIP: {why}");
    }

    fn run(cmd: &mut Command) -> Output {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// A network namespace deleted on drop (also when the test panics).
    struct Netns {
        name: String,
    }

    impl Netns {
        fn create(tag: &str) -> Netns {
            let name = format!("rxsink-taptest-{}-{tag}", std::process::id());
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
            run(Command::new("ip").args(["netns", "add", &name]));
            Netns { name }
        }

        /// `ip -n NS args...`
        fn ip(&self, args: &[&str]) -> Output {
            run(Command::new("ip").arg("-n").arg(&self.name).args(args))
        }

        /// `ip netns exec NS args...`
        fn exec(&self, args: &[&str]) -> String {
            let out = run(Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(args));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }

        fn spawn(&self, args: &[&str]) -> KillOnDrop {
            let child = Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn ip netns exec");
            KillOnDrop(child)
        }

        /// Moves the interface in, gives it `addr` and brings it up.
        fn adopt(&self, ifname: &str, addr: &str) {
            run(Command::new("ip").args(["link", "set", ifname, "netns", &self.name]));
            self.ip(&["addr", "add", addr, "dev", ifname]);
            self.ip(&["link", "set", ifname, "up"]);
        }

        fn mac(&self, ifname: &str) -> [u8; 6] {
            let s = self.exec(&["cat", &format!("/sys/class/net/{ifname}/address")]);
            let mut mac = [0u8; 6];
            for (m, h) in mac.iter_mut().zip(s.split(':')) {
                *m = u8::from_str_radix(h, 16).expect("mac");
            }
            mac
        }

        fn rx_packets(&self, ifname: &str) -> u64 {
            self.exec(&[
                "cat",
                &format!("/sys/class/net/{ifname}/statistics/rx_packets"),
            ])
            .parse()
            .expect("rx_packets")
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .output();
        }
    }

    /// A child process killed (and reaped) on drop.
    struct KillOnDrop(Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn ifname(tag: &str) -> String {
        format!("rxt{}{tag}", std::process::id() % 100_000)
    }

    /// Polls `recv` for at most `limit`, until `pred` accepts a frame.
    fn recv_until(tap: &mut TapWire, limit: Duration, mut pred: impl FnMut(&[u8]) -> bool) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            match tap.recv() {
                Some(f) => {
                    if pred(f) {
                        return true;
                    }
                }
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        false
    }

    const ETHERTYPE_ARP: u16 = 0x0806;

    fn arp(op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0, 1, 8, 0, 6, 4];
        p.extend_from_slice(&op.to_be_bytes());
        p.extend_from_slice(&sha);
        p.extend_from_slice(&spa);
        p.extend_from_slice(&tha);
        p.extend_from_slice(&tpa);
        let dst = if op == 1 { [0xFF; 6] } else { tha };
        Builder {
            dst_mac: dst,
            src_mac: sha,
            ..Builder::default()
        }
        .non_ip(ETHERTYPE_ARP, &p)
    }

    /// (op, sender IP, target IP) of an ARP frame.
    fn parse_arp(f: &[u8]) -> Option<(u16, [u8; 4], [u8; 4])> {
        if f.len() < 42 || f[12..14] != ETHERTYPE_ARP.to_be_bytes() {
            return None;
        }
        Some((
            u16::from_be_bytes([f[20], f[21]]),
            f[28..32].try_into().ok()?,
            f[38..42].try_into().ok()?,
        ))
    }

    fn open_tap(tag: &str, vnet_hdr: bool) -> TapWire {
        let cfg = TapConfig {
            name: ifname(tag),
            vnet_hdr,
            mtu: Some(1500),
            up: true,
        };
        TapWire::open(cfg).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn open_errors_busy_not_a_tap_and_drop_removes_the_interface() {
        if skip() {
            return;
        }
        let name = ifname("b");
        let sys = format!("/sys/class/net/{name}");
        let cfg = TapConfig {
            up: false,
            ..TapConfig::new(name.as_str())
        };
        let mut tap = TapWire::open(cfg.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert!(std::path::Path::new(&sys).exists());
        assert!(tap.recv().is_none(), "nonblocking, nothing queued");
        match TapWire::open(cfg.clone()) {
            Err(e @ TapError::Busy { .. }) => {
                assert!(e.to_string().contains("is busy"), "{e}");
            }
            other => panic!("second open: {other:?}"),
        }
        drop(tap);
        // Another test thread forking a child between fork and exec holds
        // a transient copy of the (close-on-exec) fd: allow it to exec.
        let t0 = Instant::now();
        while std::path::Path::new(&sys).exists() && t0.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            !std::path::Path::new(&sys).exists(),
            "interface outlived its fd"
        );
        // Attaching to an existing interface that is not a TAP device.
        match TapWire::open(TapConfig {
            up: false,
            ..TapConfig::new("lo")
        }) {
            Err(
                e @ TapError::Os {
                    op: "TUNSETIFF", ..
                },
            ) => {
                assert!(e.to_string().contains("not a TAP device"), "{e}");
            }
            other => panic!("open lo: {other:?}"),
        }
    }

    /// Runs only without root: `.ci/run` runs the test binary again under
    /// `setpriv --reuid=65534` for it. Opening a TAP device is refused with a
    /// clear error.
    #[test]
    fn permission_denied_without_root() {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            // Not a failure under CI=true: CI runs it again as nobody.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIP: permission_denied_without_root runs only as non-root"
            );
            return;
        }
        if !std::path::Path::new("/dev/net/tun").exists() {
            skip_or_fail("permission_denied_without_root: no /dev/net/tun");
            return;
        }
        match TapWire::open(TapConfig::new(ifname("p"))) {
            Err(e @ TapError::PermissionDenied { .. }) => {
                assert!(e.to_string().contains("root or CAP_NET_ADMIN"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn kernel_arp_request_reaches_recv() {
        if skip() {
            return;
        }
        let ns = Netns::create("arp");
        let mut tap = open_tap("a", false);
        let stats = tap.stats();
        let name = tap.ifname().to_string();
        assert_eq!(tap.name(), format!("tap:{name}"));
        ns.adopt(&name, "10.213.1.1/24");
        // A datagram to a neighbour makes the kernel ask for its address.
        let _sender = ns.spawn(&["bash", "-c", "echo x > /dev/udp/10.213.1.2/9"]);
        let found = recv_until(&mut tap, Duration::from_secs(5), |f| {
            parse_arp(f) == Some((1, [10, 213, 1, 1], [10, 213, 1, 2]))
        });
        assert!(found, "no ARP request seen; {:?}", stats.snapshot());
        let s = stats.snapshot();
        assert!(s.rx_frames >= 1 && s.rx_bytes >= 42, "{s:?}");
        assert_eq!((s.rx_errors, s.rx_bad_vnet), (0, 0));
    }

    #[test]
    fn sent_frames_reach_the_kernel() {
        if skip() {
            return;
        }
        let ns = Netns::create("send");
        let mut tap = open_tap("s", false);
        let stats = tap.stats();
        let name = tap.ifname().to_string();
        ns.adopt(&name, "10.213.2.1/24");
        let their_mac = ns.mac(&name);
        let our_mac = [0x02, 0, 0, 0, 0x02, 0x02];
        let before = ns.rx_packets(&name);

        // An ARP request the kernel must answer, then an ICMP echo request.
        tap.send(&arp(1, our_mac, [10, 213, 2, 2], [0; 6], [10, 213, 2, 1]));
        let ping = Builder {
            dst_mac: their_mac,
            src_mac: our_mac,
            src_ip: [10, 213, 2, 2],
            dst_ip: [10, 213, 2, 1],
            ..Builder::default()
        }
        .icmp_echo(7, 1, &payload_pattern(56, 1));
        tap.send(&ping);
        tap.send(&[0u8; 5]); // too short for Ethernet: an error, not a panic

        let t0 = Instant::now();
        while ns.rx_packets(&name) < before + 2 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            ns.rx_packets(&name) >= before + 2,
            "kernel rx_packets did not grow"
        );
        let s = stats.snapshot();
        assert_eq!(
            (s.tx_frames, s.tx_bytes),
            (2, 42 + ping.len() as u64),
            "{s:?}"
        );
        assert_eq!((s.tx_dropped, s.tx_errors), (0, 1), "{s:?}");

        let replied = recv_until(&mut tap, Duration::from_secs(5), |f| {
            parse_arp(f) == Some((2, [10, 213, 2, 1], [10, 213, 2, 2])) && f[..6] == our_mac
        });
        assert!(replied, "no ARP reply from the kernel");
    }

    #[test]
    fn vnet_hdr_checksum_and_tso_from_the_kernel() {
        if skip() {
            return;
        }
        let ns = Netns::create("tso");
        let mut tap = open_tap("t", true);
        assert!(tap.vnet_hdr());
        let stats = tap.stats();
        let name = tap.ifname().to_string();
        ns.adopt(&name, "10.213.3.1/24");
        let their_mac = ns.mac(&name);
        let our_mac = [0x02, 0, 0, 0, 0x03, 0x02];
        let mac = our_mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        ns.ip(&[
            "neigh",
            "add",
            "10.213.3.2",
            "lladdr",
            &mac,
            "dev",
            &name,
            "nud",
            "permanent",
        ]);
        let ours = |f: &[u8]| f.len() > 34 && f[12..14] == [8, 0] && f[30..34] == [10, 213, 3, 2];

        // UDP: the kernel leaves the checksum to the "device".
        let _udp = ns.spawn(&["bash", "-c", "echo hello > /dev/udp/10.213.3.2/7777"]);
        let mut udp_ok = None;
        recv_until(&mut tap, Duration::from_secs(5), |f| {
            let p = frames::parse(f);
            if ours(f) && p.l4 == L4::Udp {
                udp_ok = Some(frames::l4_checksum_ok(f, &p));
                return true;
            }
            false
        });
        assert_eq!(udp_ok, Some(Some(true)), "UDP frame with a valid checksum");

        // TCP: answer the SYN, then the kernel sends TSO super-frames.
        let _tcp = ns.spawn(&[
            "bash",
            "-c",
            "exec 3<>/dev/tcp/10.213.3.2/5001 && printf '%20000s' x >&3",
        ]);
        let mut syn = None;
        recv_until(&mut tap, Duration::from_secs(5), |f| {
            let p = frames::parse(f);
            if ours(f) && p.l4 == L4::Tcp && f[p.l4_off + 13] & (TCP_SYN | TCP_ACK) == TCP_SYN {
                assert_eq!(frames::l4_checksum_ok(f, &p), Some(true), "SYN checksum");
                let l4 = p.l4_off;
                let sport = u16::from_be_bytes([f[l4], f[l4 + 1]]);
                let seq = u32::from_be_bytes(f[l4 + 4..l4 + 8].try_into().unwrap());
                syn = Some((sport, seq));
                return true;
            }
            false
        });
        let (sport, isn) = syn.expect("no SYN from the kernel");
        const MSS: usize = 1400;
        let synack = Builder {
            dst_mac: their_mac,
            src_mac: our_mac,
            src_ip: [10, 213, 3, 2],
            dst_ip: [10, 213, 3, 1],
            ..Builder::default()
        }
        .tcp(
            &Tcp {
                src_port: 5001,
                dst_port: sport,
                seq: 5000,
                ack: isn.wrapping_add(1),
                flags: TCP_SYN | TCP_ACK,
                window: 65535,
                options: vec![2, 4, (MSS >> 8) as u8, MSS as u8],
            },
            &[],
        );
        tap.send(&synack);

        // Without our ACKs the kernel sends its initial window (10
        // segments) and then waits; collect the data until it goes quiet.
        let mut next = isn.wrapping_add(1);
        let mut data = 0usize;
        let mut bad = Vec::new();
        let t0 = Instant::now();
        let mut last_data = t0;
        while t0.elapsed() < Duration::from_secs(5)
            && !(data > 0 && last_data.elapsed() > Duration::from_millis(150))
        {
            let Some(f) = tap.recv() else {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            };
            let p = frames::parse(f);
            if !(ours(f) && p.l4 == L4::Tcp) || f.len() <= p.l5_off {
                continue;
            }
            let l4 = p.l4_off;
            let seq = u32::from_be_bytes(f[l4 + 4..l4 + 8].try_into().unwrap());
            let len = f.len() - p.l5_off;
            if frames::l4_checksum_ok(f, &p) != Some(true)
                || frames::ipv4_header_ok(f, &p) != Some(true)
                || len > MSS
            {
                bad.push((seq, len));
            }
            if seq == next {
                next = next.wrapping_add(len as u32);
                data += len;
                last_data = Instant::now();
            }
        }
        let s = stats.snapshot();
        eprintln!("tap stats after TSO test: {s:?}, {data} bytes in order");
        assert!(bad.is_empty(), "bad segments (seq, len): {bad:?}");
        assert!(data >= 2 * MSS, "too little data: {data}");
        assert!(s.rx_super_frames >= 1, "no super-frame seen: {s:?}");
        assert!(s.rx_segments >= 2 * s.rx_super_frames, "{s:?}");
        assert_eq!((s.rx_errors, s.rx_bad_vnet), (0, 0), "{s:?}");
    }
}
