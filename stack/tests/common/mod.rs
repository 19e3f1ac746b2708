//! A simulated NIC with the driver, pools and a `QueueDevice` on it, for
//! the stack's integration tests.

#![allow(dead_code)]

use driver::SplitMode;
use hw_sim::{SimNic, Wire};
use pipeline::port::{
    Port, PortConfig, RxQueueConfig, SimMode, SimOptions, TxQueueConfig, WireParts,
};
use pipeline::HdrPoolStrategy;
use smoltcp::time::Instant;
use stack::device::TxSideStats;
use stack::frame::PresentStats;
use stack::queue::{self, PortDevice};
use stack::segstats::SegCounters;
use stack::{
    DeviceConfig, PatternSender, SenderConfig, SinkConfig, SocketMemory, TcpSink, TcpStats,
};
use std::sync::Arc;
use std::time::Duration;

pub type Dev = PortDevice;

#[derive(Clone, Copy, Debug)]
pub struct NicSetup {
    pub mac: [u8; 6],
    pub split: SplitMode,
    pub gro: u32,
    pub payload: usize,
    pub mtu: usize,
    pub ring: usize,
    pub pages: usize,
    /// TX descriptors.
    pub tx_ring: usize,
}

impl Default for NicSetup {
    fn default() -> Self {
        NicSetup {
            mac: [0x02, 0, 0, 0, 0, 0x01],
            split: SplitMode::On,
            gro: 1,
            payload: 2048,
            mtu: 1500,
            ring: 256,
            pages: 1024,
            tx_ring: TxQueueConfig::default().ring_size,
        }
    }
}

pub struct Nic {
    /// The simulated NIC (its counters, carrier, fault hooks).
    pub sim: Arc<SimNic>,
    /// The port: device, stepped engine, stop order and audit.
    pub port: Port,
    pub dev: Dev,
}

/// A stepped simulated NIC on `wire`, opened through the port API, its
/// queue pair as a smoltcp device.
pub fn nic(s: NicSetup, wire: Box<dyn Wire>) -> Nic {
    let cfg = PortConfig {
        rx: RxQueueConfig {
            ring_size: s.ring,
            split: s.split,
            payload_buf: s.payload,
            headroom: 256.min(4096 - s.payload),
            pages: s.pages,
            hdr_buf: 256,
            hdr_pool: HdrPoolStrategy::Packed,
            hdr_slots: s.pages,
        },
        tx: Some(TxQueueConfig {
            ring_size: s.tx_ring,
            ..TxQueueConfig::default()
        }),
        sim: SimOptions {
            mode: SimMode::Stepped,
            mac: Some(s.mac),
            gro: s.gro,
            ..SimOptions::default()
        },
        ..PortConfig::default()
    };
    let mut port = Port::open_sim(wire, WireParts::default(), &cfg).expect("port");
    let q = port.take_queues().pop().expect("one queue");
    let dev = queue::from_port(
        q,
        DeviceConfig {
            mtu: s.mtu,
            ..DeviceConfig::default()
        },
    )
    .expect("queue pair");
    port.start().expect("start");
    let sim = port.sim().expect("simulated").clone();
    Nic { sim, port, dev }
}

impl Nic {
    /// Stops the NIC and proves every buffer came home.
    pub fn stop_and_audit(self) {
        let report = self
            .port
            .shutdown(queue::into_port(self.dev).into_iter().collect());
        assert_eq!(report.errors, Vec::<String>::new());
        assert_eq!(report.queues.len(), 1, "the queue came back");
        assert_eq!(report.leaked(), 0, "buffers leaked: {report:?}");
    }
}

/// What a [`transfer`] ended with.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// The sink's counters.
    pub sink: TcpStats,
    /// The presenter's counters on the sink's NIC.
    pub present: PresentStats,
    /// Bytes the sender queued, connections it finished and lost.
    pub sent: u64,
    pub finished: u64,
    pub failed: u64,
    /// Loop rounds and virtual time they took.
    pub rounds: u64,
    pub virtual_ms: u64,
    /// The sender's device: frames built, dropped (by reason), refused.
    pub sender_tx: TxSideStats,
    /// Segment counters of the sink's and the sender's devices.
    pub sink_segs: SegCounters,
    pub sender_segs: SegCounters,
}

/// A pattern transfer between two NICs: `conns` connections of `bytes`
/// each from a sender on `b` to a verifying sink on `a`.
#[derive(Clone, Copy, Debug)]
pub struct Transfer {
    pub conns: usize,
    pub bytes: u64,
    /// Wall-clock bound of the whole transfer.
    pub limit: Duration,
    /// The sink's receive window and the sender's send ring, per
    /// connection (256 KiB each by default).
    pub sink_buf: usize,
    pub send_buf: usize,
}

impl Transfer {
    pub fn new(conns: usize, bytes: u64) -> Transfer {
        Transfer {
            conns,
            bytes,
            limit: Duration::from_secs(60),
            sink_buf: 256 << 10,
            send_buf: 256 << 10,
        }
    }
}

/// Virtual time per loop round while frames move.
const ROUND: smoltcp::time::Duration = smoltcp::time::Duration::from_micros(50);
/// Virtual time per loop round when nothing happened (waiting for a
/// retransmission or delayed-ACK timer).
const IDLE_ROUND: smoltcp::time::Duration = smoltcp::time::Duration::from_millis(1);

/// Runs `t` in one thread on a virtual clock: the sender on `b`, the sink
/// on `a`, each NIC's engine stepped after its stack. `exchange` moves
/// frames between the NICs' wires (after every engine step; a no-op for
/// wires that carry frames themselves); `context` describes the wires for
/// the timeout message. Panics (with the counters) when the transfer does
/// not end within `t.limit` of wall-clock time.
pub fn transfer(
    a: &mut Nic,
    b: &mut Nic,
    t: Transfer,
    exchange: impl FnMut(),
    context: impl Fn() -> String,
) -> Outcome {
    transfer_with(a, b, t, exchange, context, |_, _, _, _| {})
}

/// [`transfer`] with `each_round(virtual_ms, a, b, progress)` called before
/// every round (to flap a link, reset a device and recover, sample memory,
/// ...); `progress` is the bytes the sink has read so far.
pub fn transfer_with(
    a: &mut Nic,
    b: &mut Nic,
    t: Transfer,
    mut exchange: impl FnMut(),
    context: impl Fn() -> String,
    mut each_round: impl FnMut(u64, &mut Nic, &mut Nic, u64),
) -> Outcome {
    let sink_cfg = SinkConfig {
        verify: true,
        max_conns: 4,
        rx_buf: t.sink_buf,
        ..SinkConfig::default()
    };
    let snd_cfg = SenderConfig {
        conns: t.conns,
        bytes: t.bytes,
        tx_buf: t.send_buf,
        ..SenderConfig::default()
    };
    let mut mem_a = SocketMemory::for_sockets(4, sink_cfg.rx_buf, sink_cfg.tx_buf).unwrap();
    let mut mem_b = SocketMemory::for_sockets(t.conns, snd_cfg.rx_buf, snd_cfg.tx_buf).unwrap();
    let start = Instant::from_millis(0);
    let mut now = start;
    a.dev.track_segments();
    b.dev.track_segments();
    let mut sink = TcpSink::new(sink_cfg, &mut mem_a, &mut a.dev, now).unwrap();
    let mut sender = PatternSender::new(snd_cfg, &mut mem_b, &mut b.dev, now).unwrap();
    let deadline = std::time::Instant::now() + t.limit;
    let mut rounds = 0u64;
    while !(sender.done() && sink.open_connections() == 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "transfer of {} x {} bytes did not finish within {:?} \
             ({rounds} rounds, {} ms virtual):\n  sink {:?}\n  sender {:?}\n  \
             sink NIC present {:?}\n  {}",
            t.conns,
            t.bytes,
            t.limit,
            (now - start).total_millis(),
            sink.stats(),
            sender.stats(),
            a.dev.present_stats(),
            context()
        );
        rounds += 1;
        each_round((now - start).total_millis(), a, b, sink.stats().bytes);
        let mut busy = sender.poll(now, &mut b.dev);
        b.dev.flush();
        busy |= b.port.step(256) > 0;
        exchange();
        busy |= a.port.step(256) > 0;
        busy |= sink.poll(now, &mut a.dev);
        a.dev.flush();
        busy |= a.port.step(256) > 0;
        exchange();
        busy |= b.port.step(256) > 0;
        now += if busy { ROUND } else { IDLE_ROUND };
    }
    let out = Outcome {
        sink: *sink.stats(),
        present: *a.dev.present_stats(),
        sent: sender.stats().queued,
        finished: sender.stats().finished,
        failed: sender.stats().failed,
        rounds,
        virtual_ms: (now - start).total_millis(),
        sender_tx: *b.dev.tx_stats(),
        sink_segs: a.dev.seg_stats().map(|s| *s.total()).unwrap_or_default(),
        sender_segs: b.dev.seg_stats().map(|s| *s.total()).unwrap_or_default(),
    };
    drop(sink);
    drop(sender);
    out
}

/// Every connection finished and every byte arrived and matched the pattern.
pub fn check(out: &Outcome, conns: usize, bytes: u64) {
    let total = conns as u64 * bytes;
    assert_eq!(out.finished, conns as u64, "{out:?}");
    assert_eq!(out.failed, 0, "{out:?}");
    assert_eq!(out.sent, total, "{out:?}");
    assert_eq!(out.sink.connections, conns as u64, "{out:?}");
    assert_eq!(out.sink.closed, conns as u64, "{out:?}");
    assert_eq!(out.sink.aborted, 0, "{out:?}");
    assert_eq!(out.sink.bytes, total, "{out:?}");
    assert_eq!(out.sink.verified, total, "{out:?}");
    assert_eq!(out.sink.mismatches, 0, "{out:?}");
}
