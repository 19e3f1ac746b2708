//! TCP/IP on the driver queues: smoltcp over one RX/TX queue pair, with
//! payload copied exactly once (into the socket's receive ring).
//!
//! - [`frame`]: the [`Presenter`](frame::Presenter), which makes received
//!   packets contiguous without copying payload (headers into page
//!   headroom, multi-buffer TCP packets as one segment per buffer) and
//!   verifies the checksums the device did not.
//! - [`device`]: [`QueueDevice`], the smoltcp `phy::Device` over an
//!   `RxRing` and a `TxRing`.
//! - [`sink`]: [`TcpSink`], listeners that accept several connections and
//!   read in place, with [`pattern`] verification.
//! - [`consume`]: what the application does with the bytes (count, read,
//!   verify), the same behind every rung of the copy ladder.
//! - [`sender`]: [`PatternSender`], a smoltcp TCP source for tests and the
//!   back-to-back pair wire.
//! - [`iperf3`]: the iperf3 server protocol as a state machine, so stock
//!   `iperf3 -c` clients run against the sink.
//! - [`queue`]: bringing up a queue pair with its pools, and auditing it.
//! - [`zc`]: a zero-copy TCP receive engine (no smoltcp socket): payload
//!   stays in the receive pages and reaches the application in place.
//!
//! Dependency direction: apps -> stack -> pipeline -> driver.

pub mod consume;
pub mod device;
pub mod frame;
pub mod iperf3;
pub mod pattern;
pub mod peer;
pub mod queue;
pub mod segstats;
pub mod sender;
pub mod sink;
pub mod zc;
pub mod zcsink;

pub use consume::{Copies, Touch};
pub use device::{arp_roles, ArpRole, ArpStats, DeviceConfig, QueueDevice};
pub use driver;
pub use pipeline;
pub use sender::{PatternSender, SenderConfig, SenderStats};
pub use sink::{SinkConfig, SocketMemory, TcpSink, TcpStats};
pub use smoltcp;
