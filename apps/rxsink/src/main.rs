//! rxsink: the receive sink. Opens a port (the simulated igb by default, or
//! a real / QEMU-emulated one through VFIO with `--device vfio:ADDR`),
//! drains its RX queues as fast as it can and reports where the time goes.
//!
//! Modes: `drop` never touches packet data (like XDP_DROP); `read` reads
//! every byte of every frame; `tcp` runs the smoltcp stack. One stats line
//! per second on stderr, a final summary on stdout (`--json` for one JSON
//! object). Everything but the command line and the printing lives in the
//! libraries (`pipeline::port`, `pipeline::stage`, `stack`).

mod capture;
mod cli;
mod error;
mod raw;
mod summary;
mod tcp;
mod wblog;
mod wire_json;

use cli::{Args, Mode, WireSpec};
use error::RunError;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match Args::parse_checked_from(std::env::args_os()) {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = args.validate() {
        eprintln!("rxsink: {e}");
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(mut summary) => {
            checksum_hint(&args, &mut summary);
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).unwrap_or_default()
                );
            } else {
                print_human(&summary);
            }
            let leaked = |k: &str| summary[k].as_u64().is_some_and(|n| n != 0);
            let peer_leaked = summary["peer"]["leaks"]
                .as_object()
                .is_some_and(|l| l.values().any(|v| v.as_u64().is_some_and(|n| n != 0)));
            if leaked("leaked_pages")
                || leaked("leaked_headers")
                || leaked("leaked_tx_buffers")
                || peer_leaked
            {
                eprintln!("rxsink: buffers leaked (see leaked_pages / leaked_headers / leaked_tx_buffers / peer.leaks)");
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rxsink: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(args: &Args) -> Result<serde_json::Value, RunError> {
    pipeline::os::install_stop_signals().map_err(RunError::Other)?;
    let cores = args.cores.map(|c| [c.rx, c.app]);
    for c in [args.core, args.sim_core]
        .into_iter()
        .chain(cores.into_iter().flatten().map(Some))
        .flatten()
    {
        // Fail early and clearly rather than inside a thread.
        pipeline::affinity::check_core(c).map_err(RunError::Usage)?;
    }
    match args.mode {
        Mode::Tcp => tcp::run(args),
        Mode::Drop | Mode::Read => raw::run(args),
    }
}

/// A pcap replay without `--fix-checksums` whose frames the NIC dropped
/// for a wrong checksum: say how many, and name the option (stderr line,
/// `pcap_checksum_drops` and `pcap_checksum_hint` in the summary).
fn checksum_hint(args: &Args, summary: &mut serde_json::Value) {
    if !matches!(args.wire, WireSpec::Pcap(_)) {
        return;
    }
    let drops = &summary["drops"];
    // (--queues N in drop/read mode reports drops by total only.)
    let (Some(l4), Some(ip)) = (drops["l4_checksum"].as_u64(), drops["ip_checksum"].as_u64())
    else {
        return;
    };
    let n = l4 + ip;
    summary["pcap_checksum_drops"] = n.into();
    if n > 0 && !args.fix_checksums {
        let hint = format!(
            "{n} replayed frames were dropped for a wrong IPv4/TCP/UDP checksum \
             (a capture taken on the sending host holds checksums left to the NIC); \
             --fix-checksums recomputes them"
        );
        eprintln!("rxsink: {hint}");
        summary["pcap_checksum_hint"] = hint.into();
    }
}

fn print_human(s: &serde_json::Value) {
    println!(
        "rxsink: {} packets, {} bytes in {:.3} s: {:.3} Mpps, {:.3} Gbit/s, {:.1} ns/packet (RX thread, batch {})",
        s["packets"],
        s["bytes"],
        s["seconds"].as_f64().unwrap_or(0.0),
        s["pps"].as_f64().unwrap_or(0.0) / 1e6,
        s["gbps"].as_f64().unwrap_or(0.0),
        s["ns_per_packet"].as_f64().unwrap_or(0.0),
        s["batch"],
    );
    println!("drops: {}", s["drops"]);
    println!("pool: {}", s["pool"]);
    println!("header pool: {}", s["header_pool"]);
    println!(
        "dma_faults {}  leaked_pages {}  leaked_headers {}",
        s["dma_faults"], s["leaked_pages"], s["leaked_headers"]
    );
}
