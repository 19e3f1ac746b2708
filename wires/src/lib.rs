//! The wires of the simulated NIC that reach outside the model, each a
//! [`hw_sim::Wire`] (or middleware around one), so they compose like
//! smoltcp's `phy` middleware:
//!
//! - [`pair`]: two simulated NICs back to back ([`PairEnd`]), one thread each.
//! - [`PcapReplay`]: the frames of a pcap or pcapng file, replayed once;
//!   [`CaptureWire`] and [`PcapWriter`] write what crosses a wire.
//! - [`TapWire`]: a Linux TAP device, the host kernel as the peer (the only
//!   `unsafe` here: its system calls).
//! - [`FaultWire`]: drop, duplicate, reorder, corrupt, rate limit
//!   ([`FaultConfig`]), around any wire.
//!
//! The model itself (`hw_sim`) keeps the [`hw_sim::Wire`] trait, the
//! built-in generator and the test wires; it performs no I/O of its own.
//!
//! ```
//! use hw_sim::wire::QueueWire;
//! use hw_sim::Wire;
//! use wires::{FaultConfig, FaultWire};
//! let inner = QueueWire::new();
//! let feed = inner.clone();
//! let cfg: FaultConfig = "drop=100,seed=1".parse().unwrap();
//! let mut w = FaultWire::new(Box::new(inner), cfg).unwrap();
//! feed.push(vec![0u8; 60]);
//! assert!(w.recv().is_none(), "every frame dropped");
//! assert_eq!(w.stats().to_nic().dropped, 1);
//! ```

mod faults;
mod pair;
mod pcap;
mod tap;

pub use faults::{
    FaultConfig, FaultConfigError, FaultCounts, FaultStats, FaultWire, IDLE_FLUSH, MAX_REORDER,
    WIRE_OVERHEAD,
};
pub use pair::{pair, LinkCounts, PairEnd, PairStats};
pub use pcap::{
    fix_frame_checksums, CaptureWire, PcapError, PcapReplay, PcapWriter, MAX_REPLAY_FRAME,
};
pub use tap::{TapConfig, TapCounts, TapError, TapStats, TapWire, VNET_HDR_LEN};
