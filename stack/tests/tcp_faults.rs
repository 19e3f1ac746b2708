//! TCP over two simulated NICs back to back through a lossy cable: a
//! `wires::pair` with a `FaultWire` (drop, duplicate, reorder,
//! corrupt; fixed seed) on the sink's end, which faults both directions.
//! Stepped in one thread with a virtual clock (`common::transfer`). Every
//! byte must arrive and match the pattern, and every buffer must come home.

mod common;

use common::{check, nic, transfer, Nic, NicSetup, Outcome, Transfer};
use driver::regs::{RXCSUM, RXCSUM_IPOFLD, RXCSUM_TUOFLD};
use driver::{DropReason, RegisterIo, SplitMode};
use std::time::Duration;
use wires::{pair, FaultConfig, FaultCounts, FaultStats, FaultWire};

/// Frames the pair's queues hold per direction.
const PAIR_CAPACITY: usize = 1024;

/// 1 % drop, 0.5 % duplicate, reorder window 8, 0.1 % corruption.
fn faults(seed: u64) -> FaultConfig {
    FaultConfig {
        drop: 1.0,
        dup: 0.5,
        reorder: 8,
        corrupt: 0.1,
        rate_mbps: None,
        seed,
    }
}

/// What one faulted run ended with, beyond the transfer itself.
#[derive(Debug)]
struct Faulted {
    out: Outcome,
    /// The fault wire's counters: `to_nic` towards the sink (data),
    /// `from_nic` from the sink (ACKs).
    to_sink: FaultCounts,
    from_sink: FaultCounts,
    /// Frames dropped by the drivers for a checksum the device found wrong
    /// (sink NIC, sender NIC).
    hw_csum_drops: (u64, u64),
    /// The sender NIC's presenter counters.
    sender_present: stack::frame::PresentStats,
}

impl Faulted {
    /// Frames with a bad checksum or broken headers that some layer below
    /// TCP caught, on either NIC.
    fn caught(&self) -> u64 {
        let (a, b) = self.hw_csum_drops;
        let p = &self.out.present;
        let q = &self.sender_present;
        a + b + p.bad_checksum + p.malformed + q.bad_checksum + q.malformed
    }
}

fn csum_drops(n: &Nic) -> u64 {
    let s = n.dev.rx_ring().stats();
    s.drop_count(DropReason::IpChecksum) + s.drop_count(DropReason::L4Checksum)
}

/// Sends `t` from a NIC set up as `sender_side` to a sink on a NIC set up
/// as `sink_side`, through a pair wire faulted by `cfg` at the sink's end.
/// `sink_csum_offload: false` turns the sink NIC's receive checksum offload
/// off after bring-up, so every checksum is verified in software.
fn run(
    sink_side: NicSetup,
    sender_side: NicSetup,
    t: Transfer,
    cfg: FaultConfig,
    sink_csum_offload: bool,
) -> Faulted {
    let (end_a, end_b) = pair(PAIR_CAPACITY);
    let link = end_a.stats();
    let fw = FaultWire::new(end_a, cfg).expect("fault config");
    let fstats: FaultStats = fw.stats();
    let mut a: Nic = nic(sink_side, Box::new(fw));
    let mut b: Nic = nic(
        NicSetup {
            mac: [0x02, 0, 0, 0, 0, 0x02],
            ..sender_side
        },
        Box::new(end_b),
    );
    if !sink_csum_offload {
        let v = a.sim.read32(RXCSUM);
        a.sim.write32(RXCSUM, v & !(RXCSUM_IPOFLD | RXCSUM_TUOFLD));
        assert_eq!(a.sim.read32(RXCSUM) & (RXCSUM_IPOFLD | RXCSUM_TUOFLD), 0);
    }
    let out = transfer(
        &mut a,
        &mut b,
        t,
        || {},
        || format!("faults {:?}, link {:?}", fstats.total(), link),
    );
    let r = Faulted {
        out,
        to_sink: fstats.to_nic(),
        from_sink: fstats.from_nic(),
        hw_csum_drops: (csum_drops(&a), csum_drops(&b)),
        sender_present: *b.dev.present_stats(),
    };
    eprintln!("{r:#?}\nlink {link:?}");
    a.stop_and_audit();
    b.stop_and_audit();
    r
}

/// The faults really happened, in both directions.
fn check_faults(r: &Faulted) {
    let (to, from) = (&r.to_sink, &r.from_sink);
    assert!(to.dropped > 0 && from.dropped > 0, "{r:#?}");
    assert!(to.duplicated > 0, "{r:#?}");
    assert!(to.reordered > 0 && from.reordered > 0, "{r:#?}");
    let corrupted = to.corrupted + from.corrupted;
    assert!(corrupted > 0, "no frame was corrupted: {r:#?}");
    // Each corrupted frame was caught below TCP (a flip can land in bytes
    // no checksum covers, like Ethernet padding, so not necessarily all).
    assert!(r.caught() > 0, "corrupted frames not caught: {r:#?}");
}

fn transfer_of(conns: usize, bytes: u64) -> Transfer {
    Transfer {
        limit: Duration::from_secs(30),
        ..Transfer::new(conns, bytes)
    }
}

#[test]
fn lossy_link_delivers_every_byte() {
    let t = transfer_of(2, 2 << 20);
    let r = run(
        NicSetup::default(),
        NicSetup::default(),
        t,
        faults(0x5EED),
        true,
    );
    check(&r.out, t.conns, t.bytes);
    check_faults(&r);
    // The device verified every checksum; the presenter had nothing to do.
    assert_eq!(r.out.present.sw_checked, 0, "{r:#?}");
    // Loss, duplicates and reordering show in the segment counters.
    let (rx, tx) = (r.out.sink_segs, r.out.sender_segs);
    assert!(tx.TcpRetransSegs > 0, "{r:#?}");
    assert!(
        rx.InRetransSegs > 0 && rx.TcpExtTCPDSACKOldSent > 0,
        "{r:#?}"
    );
    assert!(rx.TcpExtTCPOFOQueue > 0, "{r:#?}");
    assert!(rx.TcpExtTCPDSACKOldSent <= rx.InRetransSegs, "{r:#?}");
}

#[test]
fn lossy_link_with_jumbo_frames_and_gro() {
    let sink = NicSetup {
        split: SplitMode::Off,
        gro: 16,
        mtu: 9000,
        ..NicSetup::default()
    };
    let sender = NicSetup {
        mtu: 9000,
        ..NicSetup::default()
    };
    let t = transfer_of(2, 3 << 20);
    let r = run(sink, sender, t, faults(0xC0FFEF), true);
    check(&r.out, t.conns, t.bytes);
    check_faults(&r);
    let p = &r.out.present;
    // 9000-byte frames (and coalesced runs of them) over 2 KiB buffers.
    assert!(p.segmented > 0 && p.segments > p.segmented, "{r:#?}");
    assert_eq!(p.linearized, 0, "{r:#?}");
}

#[test]
fn lossy_link_without_receive_checksum_offload() {
    let t = transfer_of(2, 2 << 20);
    let r = run(
        NicSetup::default(),
        NicSetup::default(),
        t,
        faults(0xBAD5EED),
        false,
    );
    check(&r.out, t.conns, t.bytes);
    check_faults(&r);
    let p = &r.out.present;
    // Every IPv4 frame the sink took was verified in software ...
    assert!(p.sw_checked >= p.packets - p.malformed - 8, "{r:#?}");
    // ... the sink's device verified nothing ...
    assert_eq!(r.hw_csum_drops.0, 0, "{r:#?}");
    // ... and the frames corrupted on the way to the sink were caught here.
    assert!(r.to_sink.corrupted > 0, "{r:#?}");
    assert!(p.bad_checksum + p.malformed > 0, "{r:#?}");
}

/// Heavy loss opens more holes in a window than smoltcp's assembler holds
/// ranges for: the sink counts the segments it had to discard
/// (`TcpExtTCPOFODrop`), and the sender's retransmissions still deliver
/// every byte. The sender respects the window, so nothing arrives beyond it.
#[test]
fn heavy_loss_overflows_the_assembler_and_is_counted() {
    let t = Transfer {
        sink_buf: 4 << 20,
        send_buf: 4 << 20,
        ..transfer_of(1, 8 << 20)
    };
    let cfg = FaultConfig {
        drop: 5.0,
        dup: 0.0,
        reorder: 0,
        corrupt: 0.0,
        rate_mbps: None,
        seed: 0x0F0D,
    };
    let r = run(NicSetup::default(), NicSetup::default(), t, cfg, true);
    check(&r.out, t.conns, t.bytes);
    let rx = r.out.sink_segs;
    assert!(rx.TcpExtTCPOFODrop > 0, "{r:#?}");
    assert_eq!(
        (rx.InOverWindowSegs, rx.TcpExtTCPZeroWindowDrop),
        (0, 0),
        "{r:#?}"
    );
}
