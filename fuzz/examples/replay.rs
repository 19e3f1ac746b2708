//! Replays inputs through a harness outside libFuzzer, with a backtrace on
//! failure: `cargo +nightly run --example replay -- <target> <file>...`.
fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().expect("target name");
    for f in args {
        let data = std::fs::read(&f).expect("read input");
        eprintln!("{target}: {f} ({} bytes)", data.len());
        match target.as_str() {
            "rx_writeback" => fuzz::rx::run_rx(&data),
            "stack_ingest" => drop(fuzz::run_stack(&data)),
            "pcap_input" => drop(fuzz::run_pcap(&data)),
            t => panic!("unknown target {t}"),
        }
    }
}
