//! The zero-copy engine's send path against a real TCP stack: a smoltcp
//! client on the pair wire's far NIC sends the pattern, the engine echoes
//! every byte back with `ZcStack::send` (the control-channel path iperf3's
//! server needs), the client checks what comes back, then both sides
//! close. Stepped in one thread on a virtual clock; optionally through a
//! fault wire, so retransmission (RTO, go-back-N) has to work.

use pipeline::port::{Port, PortConfig, SimMode, SimOptions, TxQueueConfig, WireParts};
use smoltcp::iface::SocketSet;
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use stack::pattern;
use stack::peer::smol_at;
use stack::queue;
use stack::zc::{ZcConfig, ZcEvent, ZcQueue};
use stack::DeviceConfig;
use std::time::{Duration, Instant};
use wires::{pair, FaultConfig, FaultWire};

fn port(wire: Box<dyn hw_sim::Wire>, mac: [u8; 6]) -> Port {
    let cfg = PortConfig {
        tx: Some(TxQueueConfig::default()),
        sim: SimOptions {
            mode: SimMode::Stepped,
            mac: Some(mac),
            ..SimOptions::default()
        },
        ..PortConfig::default()
    };
    Port::open_sim(wire, WireParts::default(), &cfg).expect("port")
}

fn echo(wire: Box<dyn hw_sim::Wire>, far: wires::PairEnd, total: usize, mtu: usize) {
    let mut ours = port(wire, [2, 0, 0, 0, 0, 1]);
    let mut theirs = port(Box::new(far), [2, 0, 0, 0, 0, 2]);
    let mut zq = ZcQueue::new(
        ours.take_queues().pop().expect("queue"),
        ZcConfig {
            mac: ours.mac(),
            mtu,
            ..ZcConfig::default()
        },
    )
    .expect("zc queue");
    let mut dev = queue::from_port(
        theirs.take_queues().pop().expect("queue"),
        DeviceConfig {
            mtu,
            ..DeviceConfig::default()
        },
    )
    .expect("device");
    ours.start().expect("start");
    theirs.start().expect("start");

    let t0 = Instant::now();
    let mut now = t0;
    let mut config =
        smoltcp::iface::Config::new(HardwareAddress::Ethernet(EthernetAddress(theirs.mac())));
    config.random_seed = 7;
    let mut iface = smoltcp::iface::Interface::new(config, &mut dev, smol_at(t0, now));
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(Ipv4Address::new(10, 0, 0, 2).into(), 24));
    });
    let mut sockets = SocketSet::new(vec![]);
    let buf = |n| tcp::SocketBuffer::new(vec![0u8; n]);
    let mut s = tcp::Socket::new(buf(64 << 10), buf(64 << 10));
    s.set_nagle_enabled(false);
    s.connect(
        iface.context(),
        (IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 1)), 9000),
        50000,
    )
    .expect("connect");
    let h = sockets.add(s);

    let (mut sent, mut echoed) = (0usize, 0usize);
    let mut pending: Vec<u8> = Vec::new(); // received, not yet accepted by send
    let mut conn = None;
    let mut eof = false;
    let mut closed = false;
    let mut client_closed = false;
    let mut rounds = 0u64;
    while !(closed && client_closed) {
        rounds += 1;
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "stuck after {rounds} rounds: sent {sent}, echoed {echoed}, pending {}, {:#?}",
            pending.len(),
            zq.engine().stats()
        );
        now += Duration::from_micros(200);
        ours.step(64);
        theirs.step(64);
        zq.poll(now);
        while let Some(ev) = zq.next_event() {
            match ev {
                ZcEvent::Accepted { conn: c, .. } => conn = Some(c),
                ZcEvent::Data { chunk, .. } => pending.extend_from_slice(chunk.bytes()),
                ZcEvent::Eof { .. } => eof = true,
                ZcEvent::Closed { reset, .. } => {
                    assert!(!reset, "reset");
                    closed = true;
                }
            }
        }
        if let Some(c) = conn {
            let n = zq.engine_mut().send(c, &pending);
            pending.drain(..n);
            if eof && pending.is_empty() && !closed {
                zq.engine_mut().close(c);
            }
        }
        iface.poll(smol_at(t0, now), &mut dev, &mut sockets);
        let s = sockets.get_mut::<tcp::Socket>(h);
        if s.can_send() && sent < total {
            sent += s
                .send(|b| {
                    let n = b.len().min(total - sent);
                    pattern::fill(sent as u64, &mut b[..n]);
                    (n, n)
                })
                .expect("send");
            if sent == total {
                s.close();
            }
        }
        while s.can_recv() {
            let got = s
                .recv(|b| {
                    assert_eq!(pattern::check(echoed as u64, b), None, "echo at {echoed}");
                    (b.len(), b.len())
                })
                .expect("recv");
            echoed += got;
            if got == 0 {
                break;
            }
        }
        client_closed = matches!(s.state(), tcp::State::TimeWait | tcp::State::Closed);
        dev.flush();
    }
    assert_eq!(echoed, total);
    let st = *zq.engine().stats();
    eprintln!("{st:#?}");
    assert!(st.data_segments_sent > 0);
    assert!(
        st.data_segments_sent as usize >= total / (mtu - 40),
        "segments of at most an MSS"
    );
    if mtu > 4000 {
        assert!(
            (st.data_segments_sent as usize) < total / 4000,
            "jumbo segments, several TX buffers each"
        );
    }
    assert_eq!(st.conns_closed, 1);
    let report = ours.shutdown(vec![zq.into_queue()]);
    assert_eq!(report.leaked(), 0, "{report:?}");
    let report = theirs.shutdown(queue::into_port(dev).into_iter().collect());
    assert_eq!(report.leaked(), 0, "{report:?}");
}

#[test]
fn the_engine_echoes_a_stream_to_smoltcp() {
    let (a, b) = pair(1024);
    echo(Box::new(a), b, 300_000, 1500);
}

#[test]
fn the_engine_echoes_jumbo_segments() {
    let (a, b) = pair(1024);
    echo(Box::new(a), b, 300_000, 9000);
}

#[test]
fn the_engine_echoes_through_a_faulty_wire() {
    let (a, b) = pair(1024);
    let fw = FaultWire::new(
        a,
        FaultConfig {
            drop: 2.0,
            dup: 0.5,
            reorder: 4,
            corrupt: 0.1,
            rate_mbps: None,
            seed: 0xEC40,
        },
    )
    .expect("fault config");
    echo(Box::new(fw), b, 200_000, 1500);
}
