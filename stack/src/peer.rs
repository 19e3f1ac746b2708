//! The far side of the pair wire: a second simulated NIC, opened through
//! the same port API as any other, stepped on its own thread, running a
//! smoltcp [`PatternSender`] towards the near side.
//!
//! ```
//! use pipeline::port::{DeviceSpec, Port, PortConfig, TxQueueConfig, WireSpec};
//! use stack::peer::{Peer, PeerConfig};
//! use stack::SenderConfig;
//!
//! let cfg = PortConfig { tx: Some(TxQueueConfig::default()), ..PortConfig::default() };
//! let mut port = Port::open(&DeviceSpec::Sim(WireSpec::Pair), &cfg)?;
//! let end = port.take_pair_end().unwrap();
//! let peer = Peer::spawn(end, PeerConfig {
//!     sender: SenderConfig { bytes: 1 << 20, ..SenderConfig::default() },
//!     ..PeerConfig::default()
//! })?;
//! // ... run a receiver on `port`'s queues (see examples/tcp_count.rs) ...
//! peer.stop();
//! let result = peer.join()?;
//! assert_eq!(result.leaks, stack::queue::Leaks::default());
//! # drop(port);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::queue::{self, Leaks};
use crate::{DeviceConfig, PatternSender, SenderConfig, SenderStats, SocketMemory};
use pipeline::port::{Port, PortConfig, SimMode, SimOptions, TxQueueConfig, WireParts};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{Ipv4Address, Ipv4Cidr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;
use wires::PairEnd;

/// The far side's station address.
pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// An address on `ours`'s subnet for the far side: ours + 1 (or - 1 at the
/// top of the subnet).
pub fn peer_ip(ours: Ipv4Cidr) -> Ipv4Address {
    let a = u32::from(ours.address());
    let host_mask = if ours.prefix_len() >= 32 {
        0
    } else {
        u32::MAX >> ours.prefix_len()
    };
    let next = a.wrapping_add(1);
    if next & host_mask == host_mask || next & host_mask == 0 {
        Ipv4Address::from(a.wrapping_sub(1))
    } else {
        Ipv4Address::from(next)
    }
}

/// `at` as smoltcp's clock, which starts at `start`.
pub fn smol_at(start: Instant, at: Instant) -> SmolInstant {
    SmolInstant::from_micros(at.saturating_duration_since(start).as_micros() as i64)
}

/// The peer's sender and device.
#[derive(Clone, Debug, Default)]
pub struct PeerConfig {
    pub sender: SenderConfig,
    pub device: DeviceConfig,
}

/// What the peer did.
#[derive(Clone, Copy, Debug)]
pub struct PeerResult {
    pub sent: SenderStats,
    /// The peer device's transmit counters (frames built, dropped by
    /// reason, refused while the ring was full).
    pub tx: crate::device::TxSideStats,
    /// Frames the peer's simulated NIC dropped on transmit.
    pub sim_tx_dropped: u64,
    /// The peer device's segment counters (its retransmissions, timeouts).
    pub segments: crate::segstats::SegCounters,
    /// Buffers of the peer's port not back in their pools.
    pub leaks: Leaks,
}

/// The running peer.
pub struct Peer {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<PeerResult, String>>,
}

impl Peer {
    /// Starts the peer on its own thread, sending on `end`.
    pub fn spawn(end: PairEnd, cfg: PeerConfig) -> std::io::Result<Peer> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("pair-peer".into())
            .spawn(move || run(end, cfg, &flag))?;
        Ok(Peer { stop, handle })
    }

    /// Whether the sender has finished (or the peer stopped).
    pub fn is_done(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// The flag [`Peer::is_done`] reads, for loops on other threads.
    pub fn done_flag(&self) -> &AtomicBool {
        &self.stop
    }

    /// Asks the peer to stop (it stops by itself once the sender is done).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Stops the peer and waits for it.
    pub fn join(self) -> Result<PeerResult, String> {
        self.stop();
        self.handle
            .join()
            .map_err(|_| "pair peer thread panicked".to_string())?
    }
}

/// The peer's thread: until the sender is done or `stop` is set.
fn run(end: PairEnd, cfg: PeerConfig, stop: &AtomicBool) -> Result<PeerResult, String> {
    let port_cfg = PortConfig {
        tx: Some(TxQueueConfig::default()),
        sim: SimOptions {
            mode: SimMode::Stepped,
            mac: Some(cfg.sender.mac),
            ..SimOptions::default()
        },
        ..PortConfig::default()
    };
    let mut port = Port::open_sim(Box::new(end), WireParts::default(), &port_cfg)
        .map_err(|e| e.to_string())?;
    let q = port
        .take_queues()
        .pop()
        .ok_or("the peer's port has no queue")?;
    let mut qdev = queue::from_port(q, cfg.device)?;
    qdev.track_segments();
    port.start().map_err(|e| e.to_string())?;
    let mut mem = SocketMemory::for_sockets(cfg.sender.conns, cfg.sender.rx_buf, cfg.sender.tx_buf)
        .map_err(|e| format!("socket memory: {e}"))?;
    let start = Instant::now();
    let mut sender = PatternSender::new(cfg.sender, &mut mem, &mut qdev, smol_at(start, start))?;
    while !sender.done() && !stop.load(Ordering::Acquire) {
        port.step(64);
        sender.poll(smol_at(start, Instant::now()), &mut qdev);
        qdev.flush();
        port.step(64);
    }
    let sent = *sender.stats();
    stop.store(true, Ordering::Release);
    drop(sender);
    let tx = *qdev.tx_stats();
    let segments = qdev.seg_stats().map(|s| *s.total()).unwrap_or_default();
    let sim_tx_dropped = port.sim().map_or(0, |n| n.stats().tx_dropped);
    let report = port.shutdown(queue::into_port(qdev).into_iter().collect());
    for e in &report.errors {
        tracing::warn!("pair peer: {e}");
    }
    Ok(PeerResult {
        sent,
        tx,
        sim_tx_dropped,
        segments,
        leaks: Leaks {
            pages: report.leaked_pages(),
            headers: report.leaked_headers(),
            tx_buffers: report.leaked_tx_buffers(),
        },
    })
}
