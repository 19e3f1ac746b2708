//! Long runs on the virtual-clock pair rig: a fault soak of at least 10^6
//! segments, and link flaps during a transfer. The soak is `#[ignore]`d in
//! the default test run (a few seconds in release, minutes in debug); CI runs it with
//! `cargo test --release -p stack --test soak -- --ignored`.

mod common;

use common::{check, nic, transfer_with, Nic, NicSetup, Transfer};
use std::time::Duration;
use wires::{pair, FaultConfig, FaultWire, PairEnd};

use pipeline::os::rss_kib;

/// The sink's NIC (on `wire`, given the pair's first end) and the sender's
/// NIC on the pair's other end.
fn rig(wire: impl FnOnce(PairEnd) -> Box<dyn hw_sim::Wire>) -> (Nic, Nic) {
    let (end_a, end_b) = pair(1024);
    let a = nic(NicSetup::default(), wire(end_a));
    let b = nic(
        NicSetup {
            mac: [0x02, 0, 0, 0, 0, 0x02],
            ..NicSetup::default()
        },
        Box::new(end_b),
    );
    (a, b)
}

#[test]
#[ignore = "seconds in release, minutes in debug; run by CI with --ignored"]
fn fault_soak_of_a_million_segments() {
    // Segments of 1448 payload bytes (MTU 1500, timestamps on).
    let segments: u64 = std::env::var("SOAK_SEGMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let bytes = segments * 1448;
    let faults = FaultConfig {
        drop: 1.0,
        dup: 0.5,
        reorder: 8,
        corrupt: 0.1,
        rate_mbps: None,
        seed: 42,
    };
    let mut fstats = None;
    let (mut a, mut b) = rig(|end| {
        let fw = FaultWire::new(end, faults).expect("fault config");
        fstats = Some(fw.stats());
        Box::new(fw)
    });
    let fstats = fstats.expect("the fault wire's counters");
    // Memory once the transfer runs (everything allocated), and its peak.
    let (mut rss_warm, mut rss_max, mut rounds) = (0u64, 0u64, 0u64);
    let t = Transfer {
        limit: Duration::from_secs(900),
        ..Transfer::new(2, bytes / 2)
    };
    let out = transfer_with(
        &mut a,
        &mut b,
        t,
        || {},
        || format!("faults {:?}", fstats.total()),
        |_, _, _, progress| {
            rounds += 1;
            if rss_warm == 0 && progress > bytes / 20 {
                rss_warm = rss_kib();
            }
            if rss_warm != 0 && rounds.is_multiple_of(4096) {
                rss_max = rss_max.max(rss_kib());
            }
        },
    );
    check(&out, 2, bytes / 2);
    let f = fstats.total();
    eprintln!(
        "soak: {} bytes, {} frames presented, {} ms virtual, faults {f:?}, RSS {rss_warm} KiB -> max {rss_max} KiB",
        out.sink.bytes, out.present.frames, out.virtual_ms
    );
    assert!(out.present.frames >= segments, "{out:?}");
    assert!(
        f.dropped > 0 && f.duplicated > 0 && f.reordered > 0 && f.corrupted > 0,
        "{f:?}"
    );
    // Flat memory: nothing grows with the number of segments.
    assert!(
        rss_max <= rss_warm + 4096,
        "resident set grew from {rss_warm} KiB to {rss_max} KiB"
    );
    a.stop_and_audit();
    b.stop_and_audit();
}

#[test]
fn link_flaps_during_a_transfer_cost_retransmissions_only() {
    let (mut a, mut b) = rig(|end| Box::new(end));
    // The sink's cable is pulled three times for 300 ms (virtual) once the
    // stream runs; the driver sees the link go down and come back.
    let mut flaps = 0;
    let mut down_since: Option<u64> = None;
    let mut link_changes = 0;
    let mut last_link = true;
    let out = transfer_with(
        &mut a,
        &mut b,
        Transfer::new(1, 8 << 20),
        || {},
        || "link flaps".into(),
        |ms, a, _, progress| {
            match down_since {
                None if flaps < 3 && progress > (flaps + 1) * (2 << 20) => {
                    a.sim.set_carrier(false);
                    down_since = Some(ms);
                    flaps += 1;
                }
                Some(t) if ms >= t + 300 => {
                    a.sim.set_carrier(true);
                    down_since = None;
                }
                _ => {}
            }
            let up = a.port.ctl().with(|igb| igb.link_up());
            if up != last_link {
                link_changes += 1;
                last_link = up;
            }
        },
    );
    check(&out, 1, 8 << 20);
    assert_eq!(flaps, 3);
    // Down and up again, three times, as the driver reads STATUS.LU.
    assert_eq!(link_changes, 6, "link changes seen by the driver");
    let st = a.sim.stats();
    assert!(
        st.rx_link_down > 0,
        "frames lost while the link was down: {st:?}"
    );
    a.stop_and_audit();
    b.stop_and_audit();
}

#[test]
fn a_device_reset_during_a_transfer_is_noticed_and_survived() {
    use driver::{recovery::Cause, Health};
    let (mut a, mut b) = rig(|end| Box::new(end));
    // Twice during the stream, the sink's device resets itself (the
    // simulator's fault hook: every queue off, link down). The periodic
    // health check notices the queue gone; the driver brings the device up
    // again and restarts both rings; TCP retransmits what was lost.
    let (mut resets, mut recovered) = (0u64, 0u64);
    let mut round = 0u64;
    let out = transfer_with(
        &mut a,
        &mut b,
        Transfer::new(1, 8 << 20),
        || {},
        || "device resets".into(),
        |_, a, _, progress| {
            round += 1;
            if resets < 2 && progress > (resets + 1) * (3 << 20) {
                a.sim.inject_reset();
                resets += 1;
            }
            // The health check: one register read every 16 rounds.
            if round.is_multiple_of(16) {
                match a.dev.check(std::time::Instant::now()) {
                    Health::Ok => {}
                    Health::Recovered(c) => {
                        assert_eq!(c, Cause::DeviceReset);
                        recovered += 1;
                    }
                    Health::Failed(e) => panic!("the device did not come back: {e}"),
                }
            }
        },
    );
    check(&out, 1, 8 << 20);
    assert_eq!((resets, recovered), (2, 2));
    let rx = a.dev.rx_ring().stats();
    assert_eq!(rx.restarts, 2);
    assert!(rx.restart_reclaimed > 0, "{rx:?}");
    // Nothing leaked across the restarts, no DMA outside the mappings.
    assert_eq!(a.sim.stats().dma_faults, 0);
    a.stop_and_audit();
    b.stop_and_audit();
}
