//! The port API end to end on the simulator: specs and configs refused
//! with clear errors, several queues received and audited, a device reset
//! and a stalled queue recovered through the queues' health checks.

use pipeline::port::{
    Cause, DeviceSpec, Health, Port, PortConfig, PortError, RxQueueConfig, SimMode, WireSpec,
};
use std::time::{Duration, Instant};

/// Polls every queue (stepping the simulator) until `done` or `limit`.
fn run_until(
    port: &mut Port,
    queues: &mut [pipeline::Queue],
    limit: Duration,
    mut done: impl FnMut(&[pipeline::Queue], u64) -> bool,
) -> Vec<Health> {
    let mut batches: Vec<_> = queues.iter().map(|q| q.new_batch(32)).collect();
    let mut health = Vec::new();
    let deadline = Instant::now() + limit;
    let mut round = 0u64;
    while !done(queues, round) {
        assert!(Instant::now() < deadline, "not done within {limit:?}");
        port.step(64);
        for (q, b) in queues.iter_mut().zip(&mut batches) {
            q.poll(b, 32);
            q.recycle(b);
        }
        round += 1;
        if round.is_multiple_of(16) {
            for q in queues.iter_mut() {
                match q.check(Instant::now()) {
                    Health::Ok => {}
                    Health::Failed(e) => panic!("queue {}: {e}", q.id()),
                    h => health.push(h),
                }
            }
        }
    }
    health
}

fn received(queues: &[pipeline::Queue]) -> u64 {
    queues.iter().map(|q| q.rx.stats().packets).sum()
}

#[test]
fn specs_and_configs_are_checked() {
    assert_eq!("sim".parse(), Ok(DeviceSpec::Sim(WireSpec::Gen)));
    assert_eq!("sim:pair".parse(), Ok(DeviceSpec::Sim(WireSpec::Pair)));
    assert_eq!(
        "xdp:eth0".parse(),
        Ok(DeviceSpec::Xdp {
            ifname: "eth0".into(),
            queue: 0
        })
    );
    assert_eq!(
        "xdp:veth1@2".parse(),
        Ok(DeviceSpec::Xdp {
            ifname: "veth1".into(),
            queue: 2
        })
    );
    assert_eq!(
        "sim:pcap:x.pcap".parse(),
        Ok(DeviceSpec::Sim(WireSpec::Pcap("x.pcap".into())))
    );
    for bad in [
        "",
        "simulator",
        "sim:",
        "sim:tap:",
        "sim:pcap:",
        "vfio:nonsense",
        // (xdp:eth0 is an AF_XDP device since issue #13.)
        "xdp:",
        "xdp:eth0@x",
        "xdp:a/b",
    ] {
        assert!(bad.parse::<DeviceSpec>().is_err(), "{bad:?} accepted");
    }
    let bad_configs = [
        PortConfig {
            queues: 0,
            ..PortConfig::default()
        },
        PortConfig {
            queues: 9,
            ..PortConfig::default()
        },
        PortConfig {
            rx: RxQueueConfig {
                ring_size: 100,
                ..RxQueueConfig::default()
            },
            ..PortConfig::default()
        },
        PortConfig {
            rx: RxQueueConfig {
                payload_buf: 4096,
                headroom: 256,
                ..RxQueueConfig::default()
            },
            ..PortConfig::default()
        },
        PortConfig {
            rx: RxQueueConfig {
                pages: 10,
                ..RxQueueConfig::default()
            },
            ..PortConfig::default()
        },
        // Several queues need the simulator on its own thread.
        PortConfig {
            queues: 2,
            ..PortConfig::default()
        },
    ];
    for cfg in bad_configs {
        match Port::open(&DeviceSpec::Sim(WireSpec::Gen), &cfg) {
            Err(e @ PortError::Config(_)) => assert!(e.is_usage()),
            Err(e) => panic!("{e} is not a configuration error"),
            Ok(_) => panic!("{cfg:?} accepted"),
        }
    }
    // A missing file is the user's to fix, in one line.
    let e = Port::open(
        &"sim:pcap:/nonexistent/x.pcap".parse().unwrap(),
        &PortConfig::default(),
    )
    .err()
    .expect("a missing capture is an error");
    assert!(
        e.is_usage() && e.to_string().contains("/nonexistent/x.pcap"),
        "{e}"
    );
}

#[test]
fn two_queues_receive_and_every_buffer_comes_home() {
    let mut cfg = PortConfig {
        queues: 2,
        ..PortConfig::default()
    };
    cfg.sim.mode = SimMode::Thread;
    cfg.sim.gen.flows = 64;
    let mut port = Port::open(&"sim".parse().unwrap(), &cfg).unwrap();
    let mut queues = port.take_queues();
    assert_eq!(queues.len(), 2);
    port.start().unwrap();
    run_until(&mut port, &mut queues, Duration::from_secs(30), |q, _| {
        q.iter().all(|q| q.rx.stats().packets >= 10_000)
    });
    port.stop();
    // What the device wrote before it stopped is still there to take.
    let mut last: Vec<_> = queues.iter().map(|q| q.new_batch(32)).collect();
    for (q, b) in queues.iter_mut().zip(&mut last) {
        while q.poll(b, 32) > 0 {
            q.recycle(b);
        }
    }
    let total = received(&queues);
    let report = port.shutdown(queues);
    assert_eq!(report.queues.len(), 2);
    assert_eq!(report.leaked(), 0, "{report:?}");
    assert_eq!(
        report.hw.good_packets_rx, total,
        "every frame the device counted was received"
    );
    assert_eq!(report.dma_faults(), Some(0));
}

#[test]
fn a_device_reset_is_recovered_by_every_queue() {
    let mut cfg = PortConfig {
        queues: 2,
        ..PortConfig::default()
    };
    cfg.sim.mode = SimMode::Thread;
    cfg.sim.gen.flows = 64;
    let mut port = Port::open(&"sim".parse().unwrap(), &cfg).unwrap();
    let mut queues = port.take_queues();
    port.start().unwrap();
    run_until(&mut port, &mut queues, Duration::from_secs(30), |q, _| {
        received(q) > 1000
    });
    port.sim().unwrap().inject_reset();
    let before = received(&queues);
    // Both queues receive again after the reset.
    let mut seen = [0u64; 2];
    let health = run_until(&mut port, &mut queues, Duration::from_secs(30), |q, _| {
        for (s, q) in seen.iter_mut().zip(q) {
            *s = q.rx.stats().restarts;
        }
        seen.iter().all(|&r| r == 1) && received(q) > before + 2000
    });
    assert!(
        health.contains(&Health::Recovered(Cause::DeviceReset)),
        "{health:?}"
    );
    assert!(
        health.contains(&Health::Recovered(Cause::Peer)),
        "{health:?}"
    );
    let report = port.shutdown(queues);
    assert_eq!(report.recovery.device_resets, 1);
    assert_eq!(report.recovery.queue_stalls, 0);
    assert_eq!(report.leaked(), 0, "{report:?}");
}

#[test]
fn a_stalled_queue_is_detected_and_reset() {
    let mut port = Port::open(&"sim".parse().unwrap(), &PortConfig::default()).unwrap();
    let mut queues = port.take_queues();
    port.start().unwrap();
    run_until(&mut port, &mut queues, Duration::from_secs(30), |q, _| {
        received(q) > 1000
    });
    port.sim().unwrap().stall_queue(0);
    let stalled_at = Instant::now();
    let health = run_until(&mut port, &mut queues, Duration::from_secs(30), |q, _| {
        q[0].rx.stats().restarts == 1
    });
    let took = stalled_at.elapsed();
    assert_eq!(health, vec![Health::Recovered(Cause::Stall)]);
    // The default timeout is 200 ms; the bound leaves room for a loaded machine.
    assert!(took < Duration::from_secs(10), "detected after {took:?}");
    let before = received(&queues);
    run_until(&mut port, &mut queues, Duration::from_secs(30), |q, _| {
        received(q) > before + 1000
    });
    let report = port.shutdown(queues);
    assert_eq!(report.recovery.queue_stalls, 1);
    assert_eq!(report.recovery.device_resets, 1);
    assert!(
        report.sim.unwrap().rx_stalled > 0,
        "frames were dropped while stalled"
    );
    assert_eq!(report.leaked(), 0, "{report:?}");
}

#[test]
fn an_idle_queue_is_not_a_stalled_one() {
    // A wire with no frames: the head stands still, descriptors are posted,
    // nothing is dropped. The watchdog must not fire.
    // The pair wire with nobody on the far end.
    let mut port = Port::open(&"sim:pair".parse().unwrap(), &PortConfig::default()).unwrap();
    let mut queues = port.take_queues();
    port.start().unwrap();
    let start = Instant::now();
    let health = run_until(&mut port, &mut queues, Duration::from_secs(30), |_, _| {
        start.elapsed() > Duration::from_millis(600)
    });
    assert!(health.is_empty(), "{health:?}");
    let report = port.shutdown(queues);
    assert_eq!(report.recovery, Default::default());
}

#[test]
fn a_port_dropped_without_shutdown_stops_cleanly() {
    let mut cfg = PortConfig::default();
    cfg.sim.mode = SimMode::Thread;
    let mut port = Port::open(&"sim".parse().unwrap(), &cfg).unwrap();
    let queues = port.take_queues();
    port.start().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    // The engine thread is joined and the device disabled before the
    // queues go; the rings then return their buffers.
    drop(port);
    drop(queues);
}
