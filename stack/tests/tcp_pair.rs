//! TCP over two simulated NICs back to back: a smoltcp sender on one, the
//! sink on the other, stepped in one thread with a virtual clock.

mod common;

use common::{check, nic, transfer, Nic, NicSetup, Outcome, Transfer};
use driver::SplitMode;
use hw_sim::wire::QueueWire;

/// Moves frames from one test wire to the other.
fn carry(from: &QueueWire, to: &QueueWire) -> usize {
    let frames = from.take_sent();
    let n = frames.len();
    for f in frames {
        to.push(f);
    }
    n
}

/// A sender on a NIC set up as `sender_side` sends to a sink on a NIC set
/// up as `sink_side`, through two test wires carried by hand.
fn run(sink_side: NicSetup, sender_side: NicSetup, conns: usize, bytes: u64) -> Outcome {
    run_with(sink_side, sender_side, Transfer::new(conns, bytes))
}

/// [`run`] with every setting of the transfer.
fn run_with(sink_side: NicSetup, sender_side: NicSetup, t: Transfer) -> Outcome {
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
    let out = transfer(
        &mut a,
        &mut b,
        t,
        || {
            carry(&hb, &ha);
            carry(&ha, &hb);
        },
        || {
            format!(
                "wires: {} to the sink, {} to the sender",
                ha.pending(),
                hb.pending()
            )
        },
    );
    a.stop_and_audit();
    b.stop_and_audit();
    out
}

#[test]
fn pattern_arrives_whole_in_every_split_mode() {
    for split in [SplitMode::Off, SplitMode::On, SplitMode::Always] {
        let s = NicSetup {
            split,
            ..NicSetup::default()
        };
        let out = run(s, NicSetup::default(), 2, 1 << 20);
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
        let out = run(sink, jumbo, 1, 2 << 20);
        check(&out, 1, 2 << 20);
        let p = out.present;
        eprintln!("{split} gro {gro}: {p:?}");
        assert_eq!(p.linearized, 0, "{split} gro {gro}: {p:?}");
        // 9000-byte segments over 2 KiB buffers: one frame per buffer.
        assert!(p.segmented > 40, "{split} gro {gro}: {p:?}");
        assert!(p.segments >= 4 * p.segmented, "{split} gro {gro}: {p:?}");
    }
}

/// A send window larger than the sender's TX ring (1 MiB is ~720
/// segments; the ring here has 64 descriptors, rxsink's 512): smoltcp may
/// offer more frames in one poll than the ring holds. The device must refuse them (smoltcp
/// sends them later), not take them and drop them: a dropped burst is a
/// hole the receiver cannot fill until smoltcp's 1 s minimum RTO.
#[test]
fn window_larger_than_the_tx_ring_loses_nothing() {
    let bytes = 8 << 20;
    let t = Transfer {
        sink_buf: 1 << 20,
        send_buf: 1 << 20,
        ..Transfer::new(1, bytes)
    };
    let sender = NicSetup {
        tx_ring: 64,
        ..NicSetup::default()
    };
    let out = run_with(NicSetup::default(), sender, t);
    check(&out, 1, bytes);
    let tx = out.sender_tx;
    assert_eq!(tx.dropped, 0, "the sender's device dropped frames: {out:?}");
    assert!(
        tx.busy > 0,
        "the ring never filled, the test tests nothing: {out:?}"
    );
    // No retransmission timeout: 8 MiB take a few ms of virtual time.
    assert!(out.virtual_ms < 500, "stalled: {out:?}");
    // Nothing was sent twice, so nothing arrived twice or out of order.
    assert_eq!(out.sender_segs.TcpRetransSegs, 0, "{out:?}");
    assert_eq!(out.sink_segs.InRetransSegs, 0, "{out:?}");
    assert_eq!(out.sink_segs.TcpExtTCPOFOQueue, 0, "{out:?}");
    assert_eq!(
        out.sink_segs.TcpInSegs, out.sender_segs.TcpOutSegs,
        "{out:?}"
    );
}
