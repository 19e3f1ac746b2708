//! The application-thread handoff: the RX thread polls and hands full
//! batches to an application thread on another core, which reads every
//! byte and returns the buffers through the pools' foreign path in groups
//! of RECYCLE_BATCH (one lock, or one ring operation, per group).
//!
//! ```text
//! cargo run --release -p pipeline --example handoff -- [PACKETS] [RECYCLE_BATCH]
//! ```
//! Prints the packets each side saw and the payload pool's locks per packet.

use pipeline::port::{Port, PortConfig};
use pipeline::stage;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let packets: usize = args.next().map_or(Ok(200_000), |s| s.parse())?;
    let recycle_batch: usize = args.next().map_or(Ok(64), |s| s.parse())?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let mut port = Port::open(&"sim".parse()?, &PortConfig::default())?;
    let mut queues = port.take_queues();
    port.start()?;
    let q = &mut queues[0];
    let (mut rx, app) = stage::handoff(q, 32, 8, recycle_batch)?;
    let app = std::thread::spawn(move || {
        if cores > 1 {
            let _ = pipeline::pin_current_thread(1);
        }
        let (mut seen, mut fold) = (0usize, 0u64);
        app.run(|batch| {
            for p in batch.iter() {
                seen += 1;
                let bytes = p.header().iter().chain(p.segments().flatten());
                fold = bytes.fold(fold, |a, &b| a.wrapping_add(b as u64));
            }
        });
        (seen, fold)
    });
    let _ = pipeline::pin_current_thread(0);
    let (mut sent, deadline) = (0, Instant::now() + Duration::from_secs(30));
    while sent < packets && Instant::now() < deadline {
        port.step(32); // the stepped simulator's DMA
        let n = q.poll(rx.batch(), 32.min(packets - sent));
        if n > 0 {
            sent += n;
            if !rx.send(|| Instant::now() > deadline) {
                break;
            }
        }
    }
    let waits = rx.waits;
    rx.finish();
    let (seen, fold) = app.join().map_err(|_| "application thread panicked")?;
    let report = port.shutdown(queues);
    let locks = report.queues[0].page_locks.lock_acquisitions;
    println!(
        "RX thread: {sent} packets ({waits} waits for a free batch); application: {seen} packets \
         (byte fold {fold:#x}); payload pool: {:.4} locks per packet at recycle batch {recycle_batch}; \
         leaked buffers: {}",
        locks as f64 / seen.max(1) as f64,
        report.leaked()
    );
    if seen != sent || report.leaked() != 0 {
        std::process::exit(1);
    }
    Ok(())
}
