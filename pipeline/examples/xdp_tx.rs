//! A frame generator on an AF_XDP port's TX queue: the traffic source of
//! `scripts/bench-xdp.sh` (Debian's xdp-trafficgen does not load on recent
//! kernels). Sends LEN-byte frames (EtherType 0x88b5, local experimental)
//! to DST_MAC for SECONDS, as fast as the TX ring takes them, and prints
//! what it sent.
//!
//! ```text
//! cargo run --release -p pipeline --example xdp_tx -- IFNAME DST_MAC SECONDS [LEN]
//! ```

use driver::TxBuf;
use pipeline::port::{Port, PortConfig, TxQueueConfig};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [ifname, mac, secs, rest @ ..] = &args[..] else {
        return Err("usage: xdp_tx IFNAME DST_MAC SECONDS [LEN]".into());
    };
    let mut dst = [0u8; 6];
    for (d, p) in dst.iter_mut().zip(mac.split(':')) {
        *d = u8::from_str_radix(p, 16)?;
    }
    let secs: f64 = secs.parse()?;
    let len: usize = rest.first().map_or(Ok(60), |l| l.parse())?;
    if !(60..=1514).contains(&len) {
        return Err("LEN must be 60..=1514".into());
    }
    pipeline::os::install_stop_signals()?;
    let cfg = PortConfig {
        tx: Some(TxQueueConfig {
            ring_size: 2048,
            bufs: 4096,
        }),
        ..PortConfig::default()
    };
    let mut port = Port::open(&format!("xdp:{ifname}").parse()?, &cfg)?;
    let mut queues = port.take_queues();
    port.start()?;
    let mut frame = Vec::with_capacity(len);
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&port.mac());
    frame.extend_from_slice(&[0x88, 0xb5]);
    frame.resize(len, 0xab);
    let tx = queues[0].tx.as_mut().ok_or("no TX queue")?;
    let mut out = Vec::with_capacity(64);
    let (start, mut sent) = (Instant::now(), 0u64);
    let end = start + Duration::from_secs_f64(secs);
    let mut round = 0u64;
    loop {
        round += 1;
        if round.is_multiple_of(1024) && (Instant::now() >= end || pipeline::os::stop_requested()) {
            break;
        }
        tx.clean();
        let room = tx.free_slots().min(64);
        for _ in 0..room {
            let Some(mut buf) = tx.alloc() else { break };
            buf.as_mut_slice(len).copy_from_slice(&frame);
            out.push(TxBuf {
                buf,
                len: len as u16,
                eop: true,
            });
        }
        sent += tx.send(&mut out) as u64;
        for b in out.drain(..) {
            tx.free(b.buf);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let report = port.shutdown(queues);
    println!(
        "xdp_tx: sent {sent} frames of {len} B in {seconds:.2} s: {:.3} Mpps (leaked {})",
        sent as f64 / seconds / 1e6,
        report.leaked()
    );
    Ok(())
}
