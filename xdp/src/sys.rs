//! The kernel interfaces this crate uses, declared once: the AF_XDP socket
//! options and structures (`include/uapi/linux/if_xdp.h`), the parts of
//! `bpf(2)` we call (`include/uapi/linux/bpf.h`), the XDP attach flags
//! (`include/uapi/linux/if_link.h`), and thin wrappers over the system
//! calls that turn `-1`/`errno` into `io::Error`. Only what we use, with
//! the header each value comes from.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

// ---- include/linux/socket.h -------------------------------------------

/// `AF_XDP` address family.
pub const AF_XDP: libc::c_int = 44;
/// `SOL_XDP` socket option level.
pub const SOL_XDP: libc::c_int = 283;

// ---- include/uapi/asm-generic/socket.h --------------------------------

/// `SO_BUSY_POLL`: microseconds to busy-poll the device's NAPI in a
/// receive call.
pub const SO_BUSY_POLL: libc::c_int = 46;
/// `SO_PREFER_BUSY_POLL`: keep the NAPI to busy polling while the
/// application polls (interrupts deferred).
pub const SO_PREFER_BUSY_POLL: libc::c_int = 69;
/// `SO_BUSY_POLL_BUDGET`: packets per busy-poll round.
pub const SO_BUSY_POLL_BUDGET: libc::c_int = 70;

// ---- include/uapi/linux/if_xdp.h --------------------------------------

/// `sockaddr_xdp.sxdp_flags`: copy mode (`XDP_COPY`).
pub const XDP_COPY: u16 = 1 << 1;
/// `sockaddr_xdp.sxdp_flags`: zero-copy mode (`XDP_ZEROCOPY`).
pub const XDP_ZEROCOPY: u16 = 1 << 2;
/// `sockaddr_xdp.sxdp_flags`: the kernel sets `XDP_RING_NEED_WAKEUP` in a
/// ring's flags when it needs a system call to make progress
/// (`XDP_USE_NEED_WAKEUP`).
pub const XDP_USE_NEED_WAKEUP: u16 = 1 << 3;
/// `sockaddr_xdp.sxdp_flags`: multi-buffer (`XDP_USE_SG`, kernel 6.6):
/// a frame larger than one chunk comes in, and may be sent as, several
/// descriptors chained with [`XDP_PKT_CONTD`]. Older kernels refuse the
/// bind (EINVAL), as does a zero-copy driver without multi-buffer
/// support (EOPNOTSUPP).
pub const XDP_USE_SG: u16 = 1 << 4;
/// `xdp_desc.options`: the frame continues in the next descriptor
/// (`XDP_PKT_CONTD`); the last descriptor of a frame has it clear.
pub const XDP_PKT_CONTD: u32 = 1 << 0;
/// A ring's flags word: wake the kernel up (`XDP_RING_NEED_WAKEUP`).
pub const XDP_RING_NEED_WAKEUP: u32 = 1 << 0;

/// Socket options (`SOL_XDP`).
pub const XDP_MMAP_OFFSETS: libc::c_int = 1;
pub const XDP_RX_RING: libc::c_int = 2;
pub const XDP_TX_RING: libc::c_int = 3;
pub const XDP_UMEM_REG: libc::c_int = 4;
pub const XDP_UMEM_FILL_RING: libc::c_int = 5;
pub const XDP_UMEM_COMPLETION_RING: libc::c_int = 6;
pub const XDP_STATISTICS: libc::c_int = 7;

/// mmap offsets of the four rings (`XDP_PGOFF_RX_RING`, ...).
pub const XDP_PGOFF_RX_RING: libc::off_t = 0;
pub const XDP_PGOFF_TX_RING: libc::off_t = 0x8000_0000;
pub const XDP_UMEM_PGOFF_FILL_RING: libc::off_t = 0x1_0000_0000;
pub const XDP_UMEM_PGOFF_COMPLETION_RING: libc::off_t = 0x1_8000_0000;

/// Headroom the kernel leaves in front of every frame it places in a UMEM
/// chunk (`XDP_PACKET_HEADROOM`, include/uapi/linux/bpf.h).
pub const XDP_PACKET_HEADROOM: usize = 256;

/// `struct sockaddr_xdp`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockaddrXdp {
    pub family: u16,
    pub flags: u16,
    pub ifindex: u32,
    pub queue_id: u32,
    pub shared_umem_fd: u32,
}

/// `struct xdp_ring_offset`: where a ring's producer, consumer, descriptors
/// and flags sit in its mapping.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XdpRingOffset {
    pub producer: u64,
    pub consumer: u64,
    pub desc: u64,
    pub flags: u64,
}

/// `struct xdp_mmap_offsets` (`getsockopt(XDP_MMAP_OFFSETS)`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XdpMmapOffsets {
    pub rx: XdpRingOffset,
    pub tx: XdpRingOffset,
    pub fr: XdpRingOffset,
    pub cr: XdpRingOffset,
}

/// `struct xdp_umem_reg` (`setsockopt(XDP_UMEM_REG)`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XdpUmemReg {
    pub addr: u64,
    pub len: u64,
    pub chunk_size: u32,
    pub headroom: u32,
    pub flags: u32,
    pub tx_metadata_len: u32,
}

/// `struct xdp_desc`: one RX or TX ring entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpDesc {
    pub addr: u64,
    pub len: u32,
    pub options: u32,
}

/// `struct xdp_statistics` (`getsockopt(XDP_STATISTICS)`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpStatistics {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

// ---- include/uapi/linux/bpf.h -----------------------------------------

/// `enum bpf_cmd` values.
pub const BPF_MAP_CREATE: libc::c_long = 0;
pub const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
pub const BPF_PROG_LOAD: libc::c_long = 5;
pub const BPF_LINK_CREATE: libc::c_long = 28;

/// `enum bpf_map_type`: `BPF_MAP_TYPE_XSKMAP`.
pub const BPF_MAP_TYPE_XSKMAP: u32 = 17;
/// `enum bpf_prog_type`: `BPF_PROG_TYPE_XDP`.
pub const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`: `BPF_XDP`.
pub const BPF_XDP: u32 = 37;
/// `BPF_PROG_LOAD` `prog_flags`: the program handles multi-buffer
/// frames (`BPF_F_XDP_HAS_FRAGS`, kernel 5.18; the `xdp.frags` section
/// of libbpf). Without it a driver or the generic path must linearise,
/// or refuse, frames larger than a page.
pub const BPF_F_XDP_HAS_FRAGS: u32 = 1 << 5;
/// `BPF_ANY` for map updates.
pub const BPF_ANY: u64 = 0;

/// `union bpf_attr` for `BPF_MAP_CREATE` (the leading fields we set; the
/// rest must be zero, which the kernel checks up to the size we pass).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BpfMapCreateAttr {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub inner_map_fd: u32,
    pub numa_node: u32,
    pub map_name: [u8; 16],
}

/// `union bpf_attr` for `BPF_MAP_UPDATE_ELEM`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BpfMapElemAttr {
    pub map_fd: u32,
    pub _pad: u32,
    pub key: u64,
    pub value: u64,
    pub flags: u64,
}

/// `union bpf_attr` for `BPF_PROG_LOAD` (up to `expected_attach_type`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BpfProgLoadAttr {
    pub prog_type: u32,
    pub insn_cnt: u32,
    pub insns: u64,
    pub license: u64,
    pub log_level: u32,
    pub log_size: u32,
    pub log_buf: u64,
    pub kern_version: u32,
    pub prog_flags: u32,
    pub prog_name: [u8; 16],
    pub prog_ifindex: u32,
    pub expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_LINK_CREATE` (the common part; XDP needs
/// nothing after `flags`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BpfLinkCreateAttr {
    pub prog_fd: u32,
    pub target_ifindex: u32,
    pub attach_type: u32,
    pub flags: u32,
    /// Room for the union that follows (zero for XDP).
    pub _rest: [u64; 4],
}

// ---- include/uapi/linux/if_link.h -------------------------------------

/// `XDP_FLAGS_SKB_MODE`: generic XDP (in the stack, any driver).
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: native XDP (in the driver).
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

// ---- system calls -------------------------------------------------------

fn cvt(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `bpf(cmd, attr, size)` for a command that returns a new descriptor.
///
/// # Safety
/// `attr` must be the `union bpf_attr` layout `cmd` expects, and every
/// pointer in it valid for the kernel to read (or write, for a log buffer)
/// for the duration of the call.
unsafe fn bpf_fd<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: the caller vouches for the layout and the pointers inside;
    // `attr` is valid for `size_of::<T>()` bytes.
    let r = cvt(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    })?;
    // SAFETY: the command returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// `BPF_MAP_CREATE`.
pub fn map_create(attr: &mut BpfMapCreateAttr) -> io::Result<OwnedFd> {
    // SAFETY: the layout is BPF_MAP_CREATE's and it holds no pointers.
    unsafe { bpf_fd(BPF_MAP_CREATE, attr) }
}

/// `BPF_MAP_UPDATE_ELEM` of a map with 4-byte keys and values.
pub fn map_update_u32(map: RawFd, key: u32, value: u32) -> io::Result<()> {
    let mut attr = BpfMapElemAttr {
        map_fd: map as u32,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        flags: BPF_ANY,
        ..Default::default()
    };
    // SAFETY: the layout is BPF_MAP_UPDATE_ELEM's; `key` and `value` are
    // live 4-byte locals for the call, the sizes the map was created with.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_ELEM,
            &mut attr as *mut BpfMapElemAttr,
            std::mem::size_of::<BpfMapElemAttr>() as libc::c_uint,
        )
    })?;
    Ok(())
}

/// `BPF_PROG_LOAD` of `insns` (8-byte `struct bpf_insn` words) with the
/// verifier's log in `log` (left empty when the load succeeds).
pub fn prog_load(
    prog_type: u32,
    prog_flags: u32,
    insns: &[u64],
    license: &std::ffi::CStr,
    name: &str,
    log: &mut Vec<u8>,
) -> io::Result<OwnedFd> {
    let mut prog_name = [0u8; 16];
    for (d, s) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    let mut attr = BpfProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: if log.capacity() > 0 { 1 } else { 0 },
        log_size: log.capacity() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_flags,
        prog_name,
        ..Default::default()
    };
    // SAFETY: the layout is BPF_PROG_LOAD's; `insns` and `license` are
    // valid for reading and `log` for writing `log.capacity()` bytes for
    // the duration of the call.
    let r = unsafe { bpf_fd(BPF_PROG_LOAD, &mut attr) };
    if r.is_err() && log.capacity() > 0 {
        // The kernel wrote a NUL-terminated message into the buffer.
        // SAFETY: the kernel wrote at most `capacity` bytes; we expose only
        // those up to the first NUL, which it wrote.
        let n = unsafe {
            let p = log.as_ptr();
            (0..log.capacity())
                .position(|i| *p.add(i) == 0)
                .unwrap_or(0)
        };
        // SAFETY: the first `n` bytes were initialised by the kernel.
        unsafe { log.set_len(n) };
    }
    r
}

/// `BPF_LINK_CREATE` of an XDP program on interface `ifindex`.
pub fn xdp_link_create(prog: RawFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut attr = BpfLinkCreateAttr {
        prog_fd: prog as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags,
        ..Default::default()
    };
    // SAFETY: the layout is BPF_LINK_CREATE's and holds no pointers.
    unsafe { bpf_fd(BPF_LINK_CREATE, &mut attr) }
}

/// A new `AF_XDP` socket.
pub fn xsk_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setsockopt(fd, SOL_XDP, opt, &val)`.
pub fn setsockopt<T: Copy>(fd: RawFd, opt: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` is valid for reading `size_of::<T>()` bytes; the
    // callers pass the structure the option expects.
    let r = unsafe {
        libc::setsockopt(
            fd,
            SOL_XDP,
            opt,
            val as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    cvt(r as libc::c_long).map(|_| ())
}

/// `setsockopt(fd, SOL_SOCKET, opt, &val)` for an `int` option.
pub fn setsockopt_sol_socket(fd: RawFd, opt: libc::c_int, val: libc::c_int) -> io::Result<()> {
    // SAFETY: `val` is a live int of the size we pass.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            &val as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    cvt(r as libc::c_long).map(|_| ())
}

/// `getsockopt(fd, SOL_XDP, opt)` into a `T` (plain data, zero-initialised
/// first), with the length the kernel wrote.
pub fn getsockopt<T: Copy + Default>(fd: RawFd, opt: libc::c_int) -> io::Result<(T, usize)> {
    let mut val = T::default();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `val` is valid for writing `len` bytes and `len` is updated
    // by the kernel with what it wrote (at most `len`).
    let r = unsafe {
        libc::getsockopt(
            fd,
            SOL_XDP,
            opt,
            &mut val as *mut T as *mut libc::c_void,
            &mut len,
        )
    };
    cvt(r as libc::c_long)?;
    Ok((val, len as usize))
}

/// `bind(fd, sockaddr_xdp)`.
pub fn xsk_bind(fd: RawFd, addr: &SockaddrXdp) -> io::Result<()> {
    // SAFETY: `addr` is a valid sockaddr_xdp of the size we pass.
    let r = unsafe {
        libc::bind(
            fd,
            addr as *const SockaddrXdp as *const libc::sockaddr,
            std::mem::size_of::<SockaddrXdp>() as libc::socklen_t,
        )
    };
    cvt(r as libc::c_long).map(|_| ())
}

/// Kicks transmission (`sendto` with no data, as the AF_XDP documentation
/// prescribes for `XDP_RING_NEED_WAKEUP` on the TX ring). Transient
/// refusals (EAGAIN, EBUSY, ENOBUFS, ENETDOWN) are not errors: the next
/// kick retries.
pub fn kick_tx(fd: RawFd) -> io::Result<()> {
    // SAFETY: a zero-length send with null buffers and no address.
    let r = unsafe {
        libc::sendto(
            fd,
            std::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
            0,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN) => Ok(()),
            _ => Err(e),
        };
    }
    Ok(())
}

/// Wakes the kernel for the fill ring (`recvfrom` with no data, as for
/// `XDP_RING_NEED_WAKEUP` on the fill ring). Errors are transient.
pub fn kick_rx(fd: RawFd) {
    // SAFETY: a zero-length receive with null buffers and no address.
    unsafe {
        libc::recvfrom(
            fd,
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
    }
}

/// `if_nametoindex`: `None` when there is no such interface here.
pub fn if_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string for the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Whether we run as root (tests that need it skip otherwise).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A shared read-write mapping of `len` bytes of `fd` at `offset`
/// (`MAP_POPULATE`, as the rings want).
pub fn mmap_ring(fd: RawFd, len: usize, offset: libc::off_t) -> io::Result<*mut u8> {
    // SAFETY: a fresh mapping chosen by the kernel; nothing aliases it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            offset,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p.cast())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// The layouts the kernel reads and writes, checked against the
    /// headers' sizes and offsets.
    #[test]
    fn uapi_layouts_match_the_headers() {
        assert_eq!(size_of::<SockaddrXdp>(), 16);
        assert_eq!(offset_of!(SockaddrXdp, ifindex), 4);
        assert_eq!(offset_of!(SockaddrXdp, queue_id), 8);
        assert_eq!(size_of::<XdpRingOffset>(), 32);
        assert_eq!(size_of::<XdpMmapOffsets>(), 128);
        assert_eq!(offset_of!(XdpMmapOffsets, fr), 64);
        assert_eq!(size_of::<XdpUmemReg>(), 32);
        assert_eq!(offset_of!(XdpUmemReg, chunk_size), 16);
        assert_eq!(offset_of!(XdpUmemReg, headroom), 20);
        assert_eq!(size_of::<XdpDesc>(), 16);
        assert_eq!(offset_of!(XdpDesc, len), 8);
        assert_eq!(size_of::<XdpStatistics>(), 48);
        assert_eq!(offset_of!(BpfMapCreateAttr, max_entries), 12);
        assert_eq!(offset_of!(BpfMapCreateAttr, map_name), 28);
        assert_eq!(offset_of!(BpfMapElemAttr, key), 8);
        assert_eq!(offset_of!(BpfMapElemAttr, value), 16);
        assert_eq!(offset_of!(BpfMapElemAttr, flags), 24);
        assert_eq!(offset_of!(BpfProgLoadAttr, insns), 8);
        assert_eq!(offset_of!(BpfProgLoadAttr, license), 16);
        assert_eq!(offset_of!(BpfProgLoadAttr, log_buf), 32);
        assert_eq!(offset_of!(BpfProgLoadAttr, prog_flags), 44);
        assert_eq!(offset_of!(BpfProgLoadAttr, prog_name), 48);
        assert_eq!(offset_of!(BpfProgLoadAttr, prog_ifindex), 64);
        assert_eq!(offset_of!(BpfProgLoadAttr, expected_attach_type), 68);
        assert_eq!(offset_of!(BpfLinkCreateAttr, attach_type), 8);
        assert_eq!(offset_of!(BpfLinkCreateAttr, flags), 12);
    }

    #[test]
    fn missing_interface_has_no_index() {
        assert_eq!(if_index("no-such-if-xyz"), None);
        assert!(if_index("lo").is_some());
    }
}
