//! A zero-copy TCP receiver that counts the bytes of every connection:
//! `stack::zc` on a port's queue pair, fed by the pair wire's far side
//! (`stack::peer`) sending CONNS connections. The payload is read where the
//! NIC wrote it and each chunk handed back through a `ZcReturner`.
//!
//! ```text
//! cargo run --release -p stack --example zc_count -- [CONNS] [BYTES_EACH]
//! ```

use pipeline::port::{DeviceSpec, Port, PortConfig, TxQueueConfig, WireSpec};
use stack::peer::{Peer, PeerConfig};
use stack::zc::{ReturnMode, ZcConfig, ZcEvent, ZcQueue};
use stack::SenderConfig;
use std::collections::HashMap;
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
    let zcfg = ZcConfig {
        mac: port.mac(),
        ..ZcConfig::default() // 10.0.0.1, port 9000
    };
    let mut zq = ZcQueue::new(q, zcfg)?;
    port.start()?;

    let mut ret = zq.engine().returner(ReturnMode::Ring, 64);
    let mut counts = HashMap::new(); // connection -> (peer, bytes)
    let mut ended = 0; // Eof seen (our FIN may reach a peer that has already stopped)
    let deadline = Instant::now() + Duration::from_secs(60);
    while (ended < conns || !peer.is_done()) && Instant::now() < deadline {
        port.step(64); // the stepped simulator's DMA
        zq.poll(Instant::now());
        while let Some(ev) = zq.next_event() {
            match ev {
                ZcEvent::Accepted { conn, remote, .. } => {
                    counts.insert(conn, (remote, 0u64));
                }
                ZcEvent::Data { conn, chunk } => {
                    if let Some(c) = counts.get_mut(&conn) {
                        c.1 += chunk.bytes().len() as u64; // read in place
                    }
                    ret.give_back(chunk);
                }
                ZcEvent::Eof { conn } => {
                    ended += 1;
                    zq.engine_mut().close(conn);
                }
                ZcEvent::Closed { .. } => {}
            }
        }
        ret.flush(); // a round's returns, before the ring refills
    }
    let mut sorted: Vec<_> = counts.into_iter().collect();
    sorted.sort();
    for (conn, ((ip, port), n)) in &sorted {
        let [a, b, c, d] = ip;
        println!("connection {conn} from {a}.{b}.{c}.{d}:{port}: {n} bytes");
    }
    let st = *zq.engine().stats();
    println!(
        "{} chunks, {} page-aligned, {} bytes copied (pool pressure), {} ACKs ({} delayed); returns {:?}",
        st.chunks,
        st.page_aligned_chunks,
        st.copy_fallback_bytes,
        st.acks_sent,
        st.delayed_acks,
        ret.stats()
    );
    drop(ret);
    zq.poll(Instant::now()); // reclaim the last returns
    let sent = peer.join()?;
    let report = port.shutdown(vec![zq.into_queue()]);
    let total: u64 = sorted.iter().map(|(_, (_, n))| n).sum();
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
