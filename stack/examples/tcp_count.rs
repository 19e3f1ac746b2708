//! A TCP receiver that counts the bytes of every connection: smoltcp's
//! own interface and sockets on a port's queue pair (`stack::queue`), fed
//! by the pair wire's far side (`stack::peer`) sending CONNS connections.
//!
//! ```text
//! cargo run --release -p stack --example tcp_count -- [CONNS] [BYTES_EACH]
//! ```

use pipeline::port::{DeviceSpec, Port, PortConfig, TxQueueConfig, WireSpec};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, IpCidr, Ipv4Address};
use stack::peer::{smol_at, Peer, PeerConfig};
use stack::{queue, DeviceConfig, SenderConfig};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let conns: usize = args.next().map_or(Ok(3), |s| s.parse())?;
    let bytes: u64 = args.next().map_or(Ok(4 << 20), |s| s.parse())?;

    let cfg = PortConfig {
        tx: Some(TxQueueConfig::default()),
        ..PortConfig::default()
    };
    let mut port = Port::open(&DeviceSpec::Sim(WireSpec::Pair), &cfg)?;
    let end = port.take_pair_end().ok_or("the pair wire has a far end")?;
    let sender = SenderConfig {
        conns,
        bytes,
        ..SenderConfig::default()
    }; // to 10.0.0.1:9000
    let peer = Peer::spawn(
        end,
        PeerConfig {
            sender,
            ..PeerConfig::default()
        },
    )?;
    let q = port.take_queues().pop().ok_or("one queue")?;
    let mut dev = queue::from_port(q, DeviceConfig::default())?;
    port.start()?;

    let start = Instant::now();
    let mac = EthernetAddress(port.mac());
    let mut iface = Interface::new(Config::new(mac.into()), &mut dev, smol_at(start, start));
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(Ipv4Address::new(10, 0, 0, 1).into(), 24));
    });
    let mut sockets = SocketSet::new(vec![]);
    let listeners: Vec<_> = (0..conns)
        .map(|_| {
            let buf = |n| tcp::SocketBuffer::new(vec![0u8; n]);
            let mut s = tcp::Socket::new(buf(256 << 10), buf(4096));
            s.listen(9000).map(|()| sockets.add(s))
        })
        .collect::<Result<_, _>>()?;
    let mut counts = vec![(None, 0u64); conns]; // (peer endpoint, bytes) per socket
    let deadline = start + Duration::from_secs(60);
    while Instant::now() < deadline {
        port.step(64); // the stepped simulator's DMA
        iface.poll(smol_at(start, Instant::now()), &mut dev, &mut sockets);
        dev.flush();
        for (h, c) in listeners.iter().zip(&mut counts) {
            let s = sockets.get_mut::<tcp::Socket>(*h);
            if s.may_recv() {
                c.0 = c.0.or(s.remote_endpoint()); // established
            }
            while let Ok(n) = s.recv(|b| (b.len(), b.len())) {
                if n == 0 {
                    break;
                }
                c.1 += n as u64; // read in place, counted, not copied
            }
            if s.state() == tcp::State::CloseWait {
                s.close();
            }
        }
        // Done when every sender has closed its side (FIN received) and
        // everything before the FIN was read.
        let all_read = counts.iter().all(|c| c.0.is_some())
            && listeners.iter().all(|h| {
                let s = sockets.get::<tcp::Socket>(*h);
                !s.may_recv() && s.recv_queue() == 0
            });
        if all_read {
            break;
        }
    }
    for (i, (ep, n)) in counts.iter().enumerate() {
        let ep = ep.map_or("-".to_string(), |e| e.to_string());
        println!("connection {i} from {ep}: {n} bytes");
    }
    let sent = peer.join()?;
    let report = port.shutdown(queue::into_port(dev).into_iter().collect());
    let total: u64 = counts.iter().map(|c| c.1).sum();
    println!(
        "{total} bytes received, {} sent; leaked buffers: {}",
        sent.sent.queued,
        report.leaked()
    );
    if total != conns as u64 * bytes || report.leaked() != 0 {
        std::process::exit(1);
    }
    Ok(())
}
