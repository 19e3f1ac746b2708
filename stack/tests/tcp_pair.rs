//! TCP over two simulated NICs back to back: a smoltcp sender on one, the
//! sink on the other, stepped in one thread with a virtual clock.

mod common;

use common::{nic, Nic, NicSetup};
use driver::SplitMode;
use hw_sim::wire::QueueWire;
use smoltcp::time::Instant;
use stack::{PatternSender, SenderConfig, SinkConfig, SocketMemory, TcpSink, TcpStats};
use std::time::Duration;

struct Outcome {
    sink: TcpStats,
    present: stack::frame::PresentStats,
    sent: u64,
    finished: u64,
}

/// Moves frames from one test wire to the other.
fn carry(from: &QueueWire, to: &QueueWire) -> usize {
    let frames = from.take_sent();
    let n = frames.len();
    for f in frames {
        to.push(f);
    }
    n
}

fn transfer(sink_side: NicSetup, sender_side: NicSetup, conns: usize, bytes: u64) -> Outcome {
    let (wa, wb) = (QueueWire::new(), QueueWire::new());
    let (ha, hb) = (wa.clone(), wb.clone());
    let mut a: Nic = nic(sink_side, Box::new(wa));
    let mut b: Nic = nic(
        NicSetup {
            mac: [0x02, 0, 0, 0, 0, 0x02],
            ..sender_side
        },
        Box::new(wb),
    );
    let sink_cfg = SinkConfig {
        verify: true,
        max_conns: 4,
        rx_buf: 256 << 10,
        ..SinkConfig::default()
    };
    let snd_cfg = SenderConfig {
        conns,
        bytes,
        tx_buf: 256 << 10,
        ..SenderConfig::default()
    };
    let mut mem_a = SocketMemory::for_sockets(4, sink_cfg.rx_buf, sink_cfg.tx_buf).unwrap();
    let mut mem_b = SocketMemory::for_sockets(conns, snd_cfg.rx_buf, snd_cfg.tx_buf).unwrap();
    let mut now = Instant::from_millis(0);
    let mut sink = TcpSink::new(sink_cfg, &mut mem_a, &mut a.dev, now).unwrap();
    let mut sender = PatternSender::new(snd_cfg, &mut mem_b, &mut b.dev, now).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(sender.done() && sink.open_connections() == 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "transfer did not finish: sink {:?}, sender {:?}",
            sink.stats(),
            sender.stats()
        );
        now += smoltcp::time::Duration::from_micros(50);
        sender.poll(now, &mut b.dev);
        b.dev.flush();
        b.engine.step(256);
        carry(&hb, &ha);
        a.engine.step(256);
        sink.poll(now, &mut a.dev);
        a.dev.flush();
        a.engine.step(256);
        carry(&ha, &hb);
        b.engine.step(256);
    }
    let out = Outcome {
        sink: *sink.stats(),
        present: *a.dev.present_stats(),
        sent: sender.stats().queued,
        finished: sender.stats().finished,
    };
    drop(sink);
    drop(sender);
    a.stop_and_audit();
    b.stop_and_audit();
    out
}

fn check(out: &Outcome, conns: usize, bytes: u64) {
    let total = conns as u64 * bytes;
    assert_eq!(out.finished, conns as u64);
    assert_eq!(out.sent, total);
    assert_eq!(out.sink.connections, conns as u64);
    assert_eq!(out.sink.closed, conns as u64);
    assert_eq!(out.sink.aborted, 0);
    assert_eq!(out.sink.bytes, total);
    assert_eq!(out.sink.verified, total);
    assert_eq!(out.sink.mismatches, 0);
}

#[test]
fn pattern_arrives_whole_in_every_split_mode() {
    for split in [SplitMode::Off, SplitMode::On, SplitMode::Always] {
        let s = NicSetup {
            split,
            ..NicSetup::default()
        };
        let out = transfer(s, NicSetup::default(), 2, 1 << 20);
        check(&out, 2, 1 << 20);
        let p = out.present;
        assert_eq!(p.linearized, 0, "{split}: {p:?}");
        assert_eq!(p.segmented, 0, "{split}: {p:?}");
        // Data segments had their header moved into the page headroom.
        if split != SplitMode::Off {
            assert!(p.header_copies > 700, "{split}: {p:?}");
        } else {
            assert_eq!(p.header_copies, 0, "{split}: {p:?}");
        }
    }
}

#[test]
fn jumbo_frames_and_gro_give_the_same_stream() {
    let jumbo = NicSetup {
        mtu: 9000,
        ..NicSetup::default()
    };
    for (split, gro) in [
        (SplitMode::On, 1),
        (SplitMode::On, 16),
        (SplitMode::Off, 16),
        (SplitMode::Always, 16),
    ] {
        let sink = NicSetup {
            split,
            gro,
            mtu: 9000,
            ..NicSetup::default()
        };
        let out = transfer(sink, jumbo, 1, 2 << 20);
        check(&out, 1, 2 << 20);
        let p = out.present;
        eprintln!("{split} gro {gro}: {p:?}");
        assert_eq!(p.linearized, 0, "{split} gro {gro}: {p:?}");
        // 9000-byte segments over 2 KiB buffers: one frame per buffer.
        assert!(p.segmented > 40, "{split} gro {gro}: {p:?}");
        assert!(p.segments >= 4 * p.segmented, "{split} gro {gro}: {p:?}");
    }
}
