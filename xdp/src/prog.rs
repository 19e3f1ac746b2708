//! The XDP program that steers a queue's frames to its AF_XDP socket, its
//! XSKMAP, and the BPF link that attaches it to an interface.
//!
//! The program's source is the instruction listing in [`redirect_program`]:
//! five eBPF instructions (six 8-byte words) built here in Rust, so there
//! is no C file, no clang and no object file to ship. In C it reads:
//!
//! ```c
//! SEC("xdp") int xsk_redirect(struct xdp_md *ctx)
//! {
//!     return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
//! }
//! ```
//!
//! `bpf_redirect_map` with `XDP_PASS` in its flags' low bits returns
//! `XDP_PASS` when the map has no socket for the queue (kernel 5.3 and
//! later), so frames of queues we do not serve go to the kernel's stack.
//!
//! The program is attached with `BPF_LINK_CREATE`: the attachment lives as
//! long as the link's file descriptor, so it goes away when [`XdpLink`] is
//! dropped, and when the process exits in any way (the kernel closes the
//! descriptor), a crash or SIGKILL included.

use crate::sys;
use crate::XdpError;
use std::os::fd::{AsRawFd, OwnedFd};

/// One 8-byte `struct bpf_insn` (include/uapi/linux/bpf.h): opcode, the
/// destination register in the low nibble of byte 1 and the source in the
/// high one, a signed 16-bit offset and a signed 32-bit immediate, as the
/// words sit in memory on a little-endian host.
pub const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    (code as u64)
        | (((dst & 0xf) | ((src & 0xf) << 4)) as u64) << 8
        | ((off as u16) as u64) << 16
        | ((imm as u32) as u64) << 32
}

#[cfg(not(target_endian = "little"))]
compile_error!("the eBPF words in prog.rs are laid out for little-endian hosts");

// Opcodes (include/uapi/linux/bpf_common.h and bpf.h).
/// `BPF_LDX | BPF_MEM | BPF_W`: 32-bit load from `src + off`.
const LDX_MEM_W: u8 = 0x61;
/// `BPF_LD | BPF_IMM | BPF_DW`: 64-bit immediate over two words.
const LD_IMM64: u8 = 0x18;
/// `BPF_ALU64 | BPF_MOV | BPF_K`: `dst = imm`.
const MOV64_IMM: u8 = 0xb7;
/// `BPF_JMP | BPF_CALL`: call helper `imm`.
const CALL: u8 = 0x85;
/// `BPF_JMP | BPF_EXIT`: return `r0`.
const EXIT: u8 = 0x95;
/// `BPF_PSEUDO_MAP_FD`: the immediate of a `LD_IMM64` is a map descriptor.
const PSEUDO_MAP_FD: u8 = 1;
/// `BPF_FUNC_redirect_map`.
const FUNC_REDIRECT_MAP: i32 = 51;
/// `offsetof(struct xdp_md, rx_queue_index)`.
const XDP_MD_RX_QUEUE_INDEX: i16 = 16;
/// `XDP_PASS` (`enum xdp_action`).
pub const XDP_PASS: i32 = 2;
/// `XDP_DROP` (`enum xdp_action`).
pub const XDP_DROP: i32 = 1;

/// The redirect program for the XSKMAP `map_fd` (see the module
/// documentation for the C it stands for):
///
/// ```text
/// 0: r2 = *(u32 *)(r1 + 16)      ; ctx->rx_queue_index
/// 1: r1 = map[map_fd] ll         ; the XSKMAP (two words)
/// 3: r3 = 2                      ; flags: XDP_PASS when no socket
/// 4: call bpf_redirect_map       ; r0 = XDP_REDIRECT or XDP_PASS
/// 5: exit
/// ```
pub fn redirect_program(map_fd: i32) -> [u64; 6] {
    [
        insn(LDX_MEM_W, 2, 1, XDP_MD_RX_QUEUE_INDEX, 0),
        insn(LD_IMM64, 1, PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        insn(MOV64_IMM, 3, 0, 0, XDP_PASS),
        insn(CALL, 0, 0, 0, FUNC_REDIRECT_MAP),
        insn(EXIT, 0, 0, 0, 0),
    ]
}

/// A program that drops every frame in the driver (`return XDP_DROP;`):
/// the kernel's own floor for a receive benchmark (`scripts/bench-xdp.sh`,
/// the `xdp_drop` example).
///
/// ```text
/// 0: r0 = 1                      ; XDP_DROP
/// 1: exit
/// ```
pub fn drop_program() -> [u64; 2] {
    [insn(MOV64_IMM, 0, 0, 0, XDP_DROP), insn(EXIT, 0, 0, 0, 0)]
}

/// How the program was attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`).
    Native,
    /// In the stack, for any driver (`XDP_FLAGS_SKB_MODE`).
    Generic,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }
}

/// The XSKMAP: queue index to AF_XDP socket.
pub struct XskMap {
    fd: OwnedFd,
    entries: u32,
}

impl XskMap {
    /// A map for queues `0..entries`.
    pub fn new(entries: u32) -> Result<XskMap, XdpError> {
        let mut attr = sys::BpfMapCreateAttr {
            map_type: sys::BPF_MAP_TYPE_XSKMAP,
            key_size: 4,
            value_size: 4,
            max_entries: entries,
            map_name: *b"rxsink_xsks\0\0\0\0\0",
            ..Default::default()
        };
        let fd =
            sys::map_create(&mut attr).map_err(|e| XdpError::sys("BPF_MAP_CREATE (XSKMAP)", e))?;
        Ok(XskMap { fd, entries })
    }

    /// Steers queue `queue`'s frames to socket `xsk_fd`.
    pub fn insert(&self, queue: u32, xsk_fd: i32) -> Result<(), XdpError> {
        sys::map_update_u32(self.fd.as_raw_fd(), queue, xsk_fd as u32)
            .map_err(|e| XdpError::sys("BPF_MAP_UPDATE_ELEM (XSKMAP)", e))
    }

    pub fn entries(&self) -> u32 {
        self.entries
    }

    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// The loaded redirect program.
pub struct XdpProgram {
    fd: OwnedFd,
}

impl XdpProgram {
    /// Loads [`redirect_program`] for `map`; with `frags` as a
    /// multi-buffer program (`BPF_F_XDP_HAS_FRAGS`, libbpf's `xdp.frags`:
    /// the redirect never reads the frame, so it is the same program
    /// either way). The verifier's message is in the error when it
    /// refuses; a kernel without multi-buffer XDP (before 5.18) refuses
    /// the flag with EINVAL, reported as [`XdpError::NoMultiBuffer`].
    pub fn load(map: &XskMap, frags: bool) -> Result<XdpProgram, XdpError> {
        let insns = redirect_program(map.fd());
        if !frags {
            return XdpProgram::load_insns(&insns, "rxsink_xsk", 0);
        }
        XdpProgram::load_insns(&insns, "rxsink_xsk", sys::BPF_F_XDP_HAS_FRAGS).map_err(
            |e| match e {
                XdpError::Sys { what, err } if err.raw_os_error() == Some(libc::EINVAL) => {
                    XdpError::NoMultiBuffer(format!("{what} with BPF_F_XDP_HAS_FRAGS: {err}"))
                }
                e => e,
            },
        )
    }

    /// Loads any XDP program given as instruction words (see [`insn`]),
    /// named `name` (at most 15 bytes are kept), with `BPF_PROG_LOAD`'s
    /// `prog_flags` (0, or [`sys::BPF_F_XDP_HAS_FRAGS`]).
    pub fn load_insns(insns: &[u64], name: &str, flags: u32) -> Result<XdpProgram, XdpError> {
        let mut log = Vec::with_capacity(64 * 1024);
        let fd = sys::prog_load(
            sys::BPF_PROG_TYPE_XDP,
            flags,
            insns,
            c"Dual MIT/GPL",
            name,
            &mut log,
        )
        .map_err(|e| {
            let msg = String::from_utf8_lossy(&log).trim().to_string();
            if msg.is_empty() {
                XdpError::sys("BPF_PROG_LOAD", e)
            } else {
                XdpError::sys(&format!("BPF_PROG_LOAD (verifier: {msg})"), e)
            }
        })?;
        Ok(XdpProgram { fd })
    }

    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// The program attached to an interface; detached when dropped (the link
/// descriptor closes), or when the process ends, however it ends.
pub struct XdpLink {
    _fd: OwnedFd,
    mode: AttachMode,
}

impl XdpLink {
    /// Attaches `prog` to `ifindex` in native mode, or in generic mode if
    /// the driver has no native XDP. An interface that already has a
    /// program (ours from another process or anyone's) is
    /// [`XdpError::AlreadyAttached`].
    pub fn attach(prog: &XdpProgram, ifname: &str, ifindex: u32) -> Result<XdpLink, XdpError> {
        let busy =
            |e: &std::io::Error| matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EEXIST));
        match sys::xdp_link_create(prog.fd(), ifindex, sys::XDP_FLAGS_DRV_MODE) {
            Ok(fd) => {
                return Ok(XdpLink {
                    _fd: fd,
                    mode: AttachMode::Native,
                })
            }
            Err(e) if busy(&e) => return Err(XdpError::AlreadyAttached(ifname.into())),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                return Err(XdpError::Permission(format!("BPF_LINK_CREATE: {e}")))
            }
            Err(e) => tracing::debug!("native XDP on {ifname}: {e}; trying generic mode"),
        }
        match sys::xdp_link_create(prog.fd(), ifindex, sys::XDP_FLAGS_SKB_MODE) {
            Ok(fd) => Ok(XdpLink {
                _fd: fd,
                mode: AttachMode::Generic,
            }),
            Err(e) if busy(&e) => Err(XdpError::AlreadyAttached(ifname.into())),
            Err(e) => Err(XdpError::sys("BPF_LINK_CREATE (generic XDP)", e)),
        }
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruction_words_follow_struct_bpf_insn() {
        // code, dst | src << 4, off (LE), imm (LE).
        let w = insn(LDX_MEM_W, 2, 1, 16, 0).to_le_bytes();
        assert_eq!(w, [0x61, 0x12, 16, 0, 0, 0, 0, 0]);
        let w = insn(MOV64_IMM, 3, 0, -1, -2).to_le_bytes();
        assert_eq!(w, [0xb7, 0x03, 0xff, 0xff, 0xfe, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn drop_program_listing() {
        let p = drop_program();
        assert_eq!(p[0].to_le_bytes(), [0xb7, 0x00, 0, 0, 1, 0, 0, 0]);
        assert_eq!(p[1].to_le_bytes(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn redirect_program_listing() {
        let p = redirect_program(7);
        assert_eq!(p.len(), 6);
        assert_eq!(p[0].to_le_bytes(), [0x61, 0x12, 16, 0, 0, 0, 0, 0]);
        // ld_imm64 r1 with BPF_PSEUDO_MAP_FD and the map's descriptor; the
        // second word carries the upper 32 bits (zero).
        assert_eq!(p[1].to_le_bytes(), [0x18, 0x11, 0, 0, 7, 0, 0, 0]);
        assert_eq!(p[2], 0);
        assert_eq!(p[3].to_le_bytes(), [0xb7, 0x03, 0, 0, 2, 0, 0, 0]);
        assert_eq!(p[4].to_le_bytes(), [0x85, 0, 0, 0, 51, 0, 0, 0]);
        assert_eq!(p[5].to_le_bytes(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
    }

    /// The verifier accepts the program (root only: BPF needs
    /// CAP_BPF/CAP_SYS_ADMIN; skipped with a `SKIP:` line otherwise, failed
    /// under `CI=true`, which runs as root).
    #[test]
    fn the_verifier_accepts_the_program() {
        if !crate::sys::is_root() {
            let why = "the_verifier_accepts_the_program: needs root";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true and this test cannot run: {why}");
            }
            // Past libtest's output capture: a skip never passes unnoticed.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "SKIP: {why}");
            return;
        }
        let map = XskMap::new(4).expect("XSKMAP");
        XdpProgram::load(&map, false).expect("the verifier accepts the redirect program");
        XdpProgram::load(&map, true).expect("and its multi-buffer (xdp.frags) version");
        XdpProgram::load_insns(&drop_program(), "drop", 0).expect("and the drop program");
    }
}
