//! Drops every frame an interface receives, in the driver (XDP_DROP), for
//! SECONDS: the kernel's floor in `scripts/bench-xdp.sh` (Debian's
//! xdp-bench does not load on recent kernels). The frames are counted by
//! the driver (veth: `ethtool -S IFNAME`, `rx_queue_N_xdp_drops`). The
//! program is attached through a BPF link: it goes when this process does,
//! however it ends.
//!
//! ```text
//! cargo run --release -p xdp --example xdp_drop -- IFNAME SECONDS
//! ```

use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [ifname, secs] = &args[..] else {
        return Err("usage: xdp_drop IFNAME SECONDS".into());
    };
    let secs: f64 = secs.parse()?;
    let iface = xdp::Interface::lookup(ifname)?;
    let prog = xdp::XdpProgram::load_insns(&xdp::prog::drop_program(), "xdp_drop", 0)?;
    let link = xdp::XdpLink::attach(&prog, &iface.name, iface.index)?;
    println!("xdp_drop: attached to {ifname} ({})", link.mode().name());
    std::thread::sleep(Duration::from_secs_f64(secs));
    drop(link);
    println!("xdp_drop: detached");
    Ok(())
}
