//! AF_XDP for the pipeline: any Linux NIC's queues as receive/transmit
//! rings that produce the same [`driver::RxBatch`] as the igb rings, with
//! a payload page pool's memory as the UMEM. Pure Rust over `libc` system
//! calls; no libbpf, no libxdp, no C.
//!
//! - [`sys`]: the uAPI structures and constants (from `linux/if_xdp.h`,
//!   `linux/bpf.h`, `linux/if_link.h`) and thin system-call wrappers.
//! - [`prog`]: the redirect program (its instruction listing is its
//!   source), the XSKMAP, the BPF link that attaches it.
//! - [`ring`]: the mapped producer/consumer rings.
//! - [`chain`]: multi-buffer frames: RX descriptors chained with
//!   `XDP_PKT_CONTD` assembled into one frame of several segments.
//! - [`socket`]: one socket per queue: UMEM registration, rings, bind
//!   (zero-copy, else copy; need_wakeup), the receive and transmit halves.
//!
//! `unsafe` lives in `sys` (system calls), `ring` (the shared mappings) and
//! nowhere else.
//!
//! ```no_run
//! # fn main() -> Result<(), xdp::XdpError> {
//! let target: xdp::XdpTarget = "veth0@0".parse().map_err(xdp::XdpError::Config)?;
//! let iface = xdp::Interface::lookup(&target.ifname)?;
//! iface.check_queues(target.queue, 1)?;
//! # Ok(()) }
//! ```

pub mod chain;
pub mod prog;
pub mod ring;
pub mod socket;
pub mod sys;

pub use chain::{Chain, Step};
pub use prog::{AttachMode, XdpLink, XdpProgram, XskMap};
pub use socket::{open, BindMode, XdpQueueStats, XdpRx, XdpTx, XskConfig, CHUNK, MAX_TX_DESCS};

use std::path::PathBuf;

/// Why AF_XDP could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("{0}")]
    Config(String),
    #[error("no network interface {0:?} (see `ip link`)")]
    NoInterface(String),
    #[error("{ifname} has no RX queue {queue} (it has {count}: queues 0..={last})", last = count.saturating_sub(1))]
    NoQueue {
        ifname: String,
        queue: u32,
        count: u32,
    },
    #[error("AF_XDP needs root (CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF): {0}")]
    Permission(String),
    #[error("{0} already has an XDP program attached (`ip link show dev {0}`; detach it with `ip link set dev {0} xdp off`)")]
    AlreadyAttached(String),
    #[error("{ifname} queue {queue} is already in use by another AF_XDP socket (another rxsink?)")]
    QueueBusy { ifname: String, queue: u32 },
    /// The kernel (or the driver, for a zero-copy bind) refused
    /// multi-buffer AF_XDP: the program's `BPF_F_XDP_HAS_FRAGS` (kernel
    /// 5.18) or the bind's `XDP_USE_SG` (kernel 6.6).
    #[error("the kernel refused multi-buffer AF_XDP: {0}")]
    NoMultiBuffer(String),
    #[error("{what}: {err}")]
    Sys {
        what: String,
        #[source]
        err: std::io::Error,
    },
}

impl XdpError {
    pub fn sys(what: &str, err: std::io::Error) -> XdpError {
        if matches!(err.raw_os_error(), Some(libc::EPERM)) {
            return XdpError::Permission(format!("{what}: {err}"));
        }
        XdpError::Sys {
            what: what.into(),
            err,
        }
    }

    /// Whether it is a wrong argument (an interface or queue that does not
    /// exist, a bad setting): exit status 2 in rxsink, as for a VFIO
    /// address that names no device. A machine that is not ready (no
    /// permission, the interface or queue taken by someone else) is not,
    /// as for VFIO's permission denied or busy group: exit status 1.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            XdpError::Config(_)
                | XdpError::NoInterface(_)
                | XdpError::NoQueue { .. }
                | XdpError::NoMultiBuffer(_)
        )
    }
}

/// `IFNAME[@QUEUE]` of `--device xdp:IFNAME[@QUEUE]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpTarget {
    pub ifname: String,
    /// First queue (default 0).
    pub queue: u32,
}

impl std::str::FromStr for XdpTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, queue) = match s.split_once('@') {
            Some((n, q)) => (
                n,
                q.parse::<u32>()
                    .map_err(|_| format!("xdp:{s}: queue {q:?} is not a number"))?,
            ),
            None => (s, 0),
        };
        let bad = name.is_empty()
            || name.len() > 15
            || name.contains(['/', ':', '@'])
            || name.chars().any(|c| c.is_whitespace());
        if bad {
            return Err(format!(
                "xdp:{s}: {name:?} is not an interface name (1..=15 bytes, no '/', ':', '@' or space)"
            ));
        }
        Ok(XdpTarget {
            ifname: name.into(),
            queue,
        })
    }
}

impl std::fmt::Display for XdpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.ifname, self.queue)
    }
}

/// A network interface as sysfs and `if_nametoindex` see it.
#[derive(Clone, Debug)]
pub struct Interface {
    pub name: String,
    pub index: u32,
}

impl Interface {
    pub fn lookup(name: &str) -> Result<Interface, XdpError> {
        let index = sys::if_index(name).ok_or_else(|| XdpError::NoInterface(name.into()))?;
        Ok(Interface {
            name: name.into(),
            index,
        })
    }

    fn sysfs(&self) -> PathBuf {
        PathBuf::from("/sys/class/net").join(&self.name)
    }

    /// RX queues the interface has (`/sys/class/net/IF/queues/rx-*`).
    pub fn rx_queues(&self) -> u32 {
        std::fs::read_dir(self.sysfs().join("queues"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                    .count() as u32
            })
            .unwrap_or(1)
    }

    /// Checks that queues `first..first + n` exist.
    pub fn check_queues(&self, first: u32, n: u32) -> Result<(), XdpError> {
        let count = self.rx_queues();
        match (first..first + n).find(|q| *q >= count) {
            Some(queue) => Err(XdpError::NoQueue {
                ifname: self.name.clone(),
                queue,
                count,
            }),
            None => Ok(()),
        }
    }

    /// The interface's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        let text = std::fs::read_to_string(self.sysfs().join("address")).unwrap_or_default();
        let mut mac = [0u8; 6];
        for (m, part) in mac.iter_mut().zip(text.trim().split(':')) {
            *m = u8::from_str_radix(part, 16).unwrap_or(0);
        }
        mac
    }

    /// The interface's MTU.
    pub fn mtu(&self) -> Option<u32> {
        std::fs::read_to_string(self.sysfs().join("mtu"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// The port-wide part: the XSKMAP, the program and its link.
pub struct XdpAttach {
    map: XskMap,
    _prog: XdpProgram,
    link: Option<XdpLink>,
    mode: AttachMode,
    frags: bool,
}

impl XdpAttach {
    /// Creates the map for queues `0..queues_end`, loads the program (a
    /// multi-buffer one with `frags`) and attaches it to `iface` (native,
    /// else generic).
    pub fn attach(iface: &Interface, queues_end: u32, frags: bool) -> Result<XdpAttach, XdpError> {
        let map = XskMap::new(queues_end.max(1))?;
        let prog = XdpProgram::load(&map, frags)?;
        let link = XdpLink::attach(&prog, &iface.name, iface.index)?;
        Ok(XdpAttach {
            mode: link.mode(),
            map,
            _prog: prog,
            link: Some(link),
            frags,
        })
    }

    /// Whether the program was loaded for multi-buffer frames.
    pub fn frags(&self) -> bool {
        self.frags
    }

    /// Steers `queue` to the socket `fd`.
    pub fn insert(&self, queue: u32, fd: i32) -> Result<(), XdpError> {
        self.map.insert(queue, fd)
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Detaches the program (closes the link). Idempotent.
    pub fn detach(&mut self) {
        self.link = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            "veth0".parse::<XdpTarget>(),
            Ok(XdpTarget {
                ifname: "veth0".into(),
                queue: 0
            })
        );
        assert_eq!(
            "eth1@3".parse::<XdpTarget>(),
            Ok(XdpTarget {
                ifname: "eth1".into(),
                queue: 3
            })
        );
        for bad in [
            "",
            "@1",
            "eth0@",
            "eth0@x",
            "eth0@-1",
            "a/b",
            "sixteen-bytes-xx",
        ] {
            assert!(bad.parse::<XdpTarget>().is_err(), "{bad:?}");
        }
        assert_eq!("eth1@3".parse::<XdpTarget>().unwrap().to_string(), "eth1@3");
    }

    #[test]
    fn lookups_of_missing_things_are_usage_errors() {
        assert!(!XdpError::AlreadyAttached("x".into()).is_usage());
        assert!(!XdpError::Permission("x".into()).is_usage());
        let e = XdpError::NoMultiBuffer("bind with XDP_USE_SG: Invalid argument".into());
        assert!(e.is_usage(), "exit 2, as for an MTU that does not fit");
        assert!(e.to_string().contains("refused multi-buffer AF_XDP"), "{e}");
        let e = Interface::lookup("no-such-if0").unwrap_err();
        assert!(e.is_usage());
        assert!(e.to_string().contains("no network interface"), "{e}");
        let lo = Interface::lookup("lo").unwrap();
        let e = lo.check_queues(lo.rx_queues(), 1).unwrap_err();
        assert!(
            e.is_usage() && e.to_string().contains("has no RX queue"),
            "{e}"
        );
        assert!(lo.check_queues(0, 1).is_ok());
    }
}
