//! The zero-copy engine on a simulated NIC, fed by the pair wire's far side
//! (a smoltcp pattern sender on its own NIC and thread): every byte of every
//! connection checked against the pattern on an application thread that
//! reads the chunks in place and returns them through a `ZcReturner`, then
//! every page audited home. Once clean, once through a fault wire (drop,
//! duplicate, reorder, corrupt) on the receiver's end.

use driver::SplitMode;
use pipeline::port::{
    Port, PortConfig, RxQueueConfig, SimMode, SimOptions, TxQueueConfig, WireParts,
};
use stack::pattern;
use stack::peer::{Peer, PeerConfig};
use stack::zc::{ConnId, ReturnMode, ReturnStats, ZcChunk, ZcConfig, ZcEvent, ZcQueue, ZcStats};
use stack::SenderConfig;
use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use wires::{pair, FaultConfig, FaultWire, PairEnd};

/// What the application thread saw.
struct AppResult {
    /// Bytes per connection, all checked.
    bytes: HashMap<ConnId, u64>,
    returns: ReturnStats,
    chunks: u64,
}

/// The application: checks each chunk in place at its connection's
/// offset, then gives it back, at once or (`hold` > 0) only once it holds
/// more than `hold` chunks or nothing new came for a millisecond: a slow
/// application that keeps pages for a while.
fn app(rx: mpsc::Receiver<ZcChunk>, mut ret: stack::zc::ZcReturner, hold: usize) -> AppResult {
    let mut bytes: HashMap<ConnId, u64> = HashMap::new();
    let mut chunks = 0;
    let mut held = std::collections::VecDeque::new();
    loop {
        let chunk = match rx.recv_timeout(Duration::from_millis(1)) {
            Ok(c) => c,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                held.drain(..).for_each(|c| ret.give_back(c));
                ret.flush();
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let off = bytes.entry(chunk.conn()).or_default();
        if let Some(i) = pattern::check(*off, chunk.bytes()) {
            panic!(
                "connection {}: wrong byte at {}",
                chunk.conn(),
                *off + i as u64
            );
        }
        *off += chunk.len() as u64;
        chunks += 1;
        held.push_back(chunk);
        while held.len() > hold {
            ret.give_back(held.pop_front().expect("held"));
        }
    }
    held.drain(..).for_each(|c| ret.give_back(c));
    ret.flush();
    AppResult {
        bytes,
        returns: ret.stats(),
        chunks,
    }
}

/// How the receiving side is set up.
#[derive(Clone, Copy)]
struct Setup {
    mode: ReturnMode,
    /// Chunks the application keeps before returning (0: return at once).
    hold: usize,
    rcv_buf: usize,
    /// Payload pages of the RX pool (the ring has 256 descriptors).
    pages: usize,
    split: SplitMode,
}

const SETUP: Setup = Setup {
    mode: ReturnMode::Ring,
    hold: 0,
    rcv_buf: 256 << 10,
    pages: 2048,
    split: SplitMode::On,
};

/// Runs the transfer; returns the engine's counters.
fn run(wire: Box<dyn hw_sim::Wire>, far: PairEnd, conns: usize, bytes: u64, su: Setup) -> ZcStats {
    let mode = su.mode;
    let cfg = PortConfig {
        rx: RxQueueConfig {
            ring_size: 256,
            pages: su.pages,
            split: su.split,
            ..RxQueueConfig::default()
        },
        tx: Some(TxQueueConfig::default()),
        sim: SimOptions {
            mode: SimMode::Stepped,
            ..SimOptions::default()
        },
        ..PortConfig::default()
    };
    let mut port = Port::open_sim(wire, WireParts::default(), &cfg).expect("port");
    let sender = SenderConfig {
        conns,
        bytes,
        ..SenderConfig::default()
    };
    let peer = Peer::spawn(
        far,
        PeerConfig {
            sender,
            ..PeerConfig::default()
        },
    )
    .expect("peer");
    let q = port.take_queues().pop().expect("one queue");
    let zcfg = ZcConfig {
        mac: port.mac(),
        rcv_buf: su.rcv_buf,
        ..ZcConfig::default()
    };
    let mut zq = ZcQueue::new(q, zcfg).expect("zc queue");
    port.start().expect("start");

    let (tx, rx) = mpsc::channel();
    let returner = zq.engine().returner(mode, 64);
    let hold = su.hold;
    let app = std::thread::spawn(move || app(rx, returner, hold));

    let start = Instant::now();
    // Done when every stream ended (Eof) and the peer saw its FINs
    // acknowledged. Our own FINs may come too late for a peer that has
    // stopped: a connection may stay in LAST-ACK, released at the end.
    let (mut eofs, mut closed) = (0, 0);
    while eofs < conns || !peer.is_done() {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "stuck: {eofs} ended, {closed} closed, engine {:#?}, queue {:#?}",
            zq.engine().stats(),
            zq.stats()
        );
        port.step(64);
        zq.poll(Instant::now());
        while let Some(ev) = zq.next_event() {
            match ev {
                ZcEvent::Data { chunk, .. } => tx.send(chunk).expect("app alive"),
                ZcEvent::Eof { conn } => {
                    eofs += 1;
                    zq.engine_mut().close(conn);
                }
                ZcEvent::Closed { reset, .. } => {
                    assert!(!reset, "a connection was reset");
                    closed += 1;
                }
                ZcEvent::Accepted { .. } => {}
            }
        }
        port.step(64);
    }
    drop(tx);
    let got = app.join().expect("app thread");
    let sent = peer.join().expect("peer");
    let stats = *zq.engine().stats();
    assert!(closed <= conns);
    eprintln!("{stats:#?}\n{:#?}\nreturns {:?}", zq.stats(), got.returns);
    // The returns reach the engine at its next rounds.
    zq.poll(Instant::now());
    assert_eq!(zq.engine().pages_out(), 0, "every page reclaimed");
    assert_eq!(sent.sent.finished, conns as u64);
    assert_eq!(got.bytes.len(), conns);
    for (c, n) in &got.bytes {
        assert_eq!(*n, bytes, "connection {c}");
    }
    assert_eq!(stats.bytes, conns as u64 * bytes);
    assert_eq!(got.returns.bytes, stats.bytes);
    assert_eq!(got.chunks, stats.chunks);
    if mode == ReturnMode::Ring {
        assert_eq!(got.returns.locks, 0);
    } else {
        assert!(got.returns.locks <= got.returns.calls);
    }
    assert!(stats.held_bytes_max <= su.rcv_buf as u64);
    assert_eq!(
        stats.rx_frames,
        stats.tcp_segments + stats.arp_frames + stats.icmp_echo_replies + stats.drops()
    );
    let q = zq.into_queue();
    let report = port.shutdown(vec![q]);
    assert_eq!(report.leaked(), 0, "buffers leaked: {report:?}");
    assert_eq!(sent.leaks, stack::queue::Leaks::default());
    stats
}

#[test]
fn pattern_streams_arrive_whole_zero_copy() {
    let (a, b) = pair(1024);
    run(Box::new(a), b, 3, 4 << 20, SETUP);
}

#[test]
fn pattern_streams_arrive_whole_with_locked_returns() {
    let (a, b) = pair(1024);
    let su = Setup {
        mode: ReturnMode::Locked,
        ..SETUP
    };
    run(Box::new(a), b, 2, 2 << 20, su);
}

#[test]
fn pattern_streams_survive_a_faulty_wire() {
    let (a, b) = pair(1024);
    let fw = FaultWire::new(
        a,
        FaultConfig {
            drop: 1.0,
            dup: 0.5,
            reorder: 8,
            corrupt: 0.1,
            rate_mbps: None,
            seed: 0x5EED,
        },
    )
    .expect("fault config");
    run(Box::new(fw), b, 2, 1 << 20, SETUP);
}

#[test]
fn every_header_split_mode_delivers_the_stream() {
    for split in [SplitMode::Off, SplitMode::Always] {
        let (a, b) = pair(1024);
        let su = Setup { split, ..SETUP };
        let st = run(Box::new(a), b, 2, 1 << 20, su);
        if split == SplitMode::Off {
            assert_eq!(st.copy_fallback_bytes, 0, "payload read in place");
        }
    }
}

#[test]
fn a_slow_application_closes_the_window_and_loses_nothing() {
    let (a, b) = pair(1024);
    // 64 KiB of window, an application that keeps 60 chunks (~87 KB):
    // the window closes until it returns some.
    let su = Setup {
        hold: 60,
        rcv_buf: 64 << 10,
        ..SETUP
    };
    let st = run(Box::new(a), b, 1, 2 << 20, su);
    assert!(st.window_closed > 0, "{st:#?}");
    assert!(st.window_updates > 0, "reopened by returns");
}

#[test]
fn pool_pressure_falls_back_to_copies_without_a_deadlock() {
    let (a, b) = pair(1024);
    // 512 pages for a 256-descriptor ring, an application holding up to
    // 400 chunks: the pool runs low, the engine copies.
    let su = Setup {
        hold: 400,
        rcv_buf: 1 << 20,
        pages: 512,
        ..SETUP
    };
    let st = run(Box::new(a), b, 2, 2 << 20, su);
    assert!(st.copy_fallback_bytes > 0, "{st:#?}");
}
