//! The simulator's wire as `--wire` and `--faults` describe it, and the
//! counters of each piece for the summary.

use crate::cli::{Args, WireSpec};
use crate::RunError;
use hw_sim::wire::{
    self, FaultConfig, FaultStats, FaultWire, Generator, PairEnd, PairStats, PcapReplay, TapConfig,
    TapStats, TapWire,
};
use hw_sim::Wire;
use serde_json::{json, Value};

/// Frames each direction of the pair wire holds.
const PAIR_CAPACITY: usize = 4096;

/// What `open` built besides the wire itself.
#[derive(Default)]
pub struct WireExtras {
    /// The far end of `--wire pair`, for the sender's NIC.
    pub far_end: Option<PairEnd>,
    pub pair: Option<PairStats>,
    pub faults: Option<FaultStats>,
    pub tap: Option<TapStats>,
    /// `--wire pcap`: frames in the file, and how many `--fix-checksums`
    /// changed (`None` without the option).
    pub pcap: Option<(usize, Option<u64>)>,
}

impl WireExtras {
    /// The wire's counters for the JSON summary.
    pub fn json(&self) -> Value {
        let mut v = json!({});
        if let Some(p) = &self.pair {
            let (ab, ba) = (p.a_to_b(), p.b_to_a());
            v["pair"] = json!({
                "to_peer": {"frames": ab.frames, "bytes": ab.bytes, "full_drops": ab.full_drops},
                "from_peer": {"frames": ba.frames, "bytes": ba.bytes, "full_drops": ba.full_drops},
            });
        }
        if let Some(f) = &self.faults {
            let c = |c: wire::FaultCounts| {
                json!({"seen": c.seen, "dropped": c.dropped, "duplicated": c.duplicated,
                       "reordered": c.reordered, "corrupted": c.corrupted, "delayed": c.delayed})
            };
            v["faults"] = json!({"to_nic": c(f.to_nic()), "from_nic": c(f.from_nic())});
        }
        if let Some((frames, fixed)) = self.pcap {
            v["pcap"] = json!({"frames": frames, "checksums_fixed": fixed});
        }
        if let Some(t) = &self.tap {
            let s = t.snapshot();
            v["tap"] = json!({
                "rx_frames": s.rx_frames, "rx_bytes": s.rx_bytes,
                "rx_super_frames": s.rx_super_frames, "rx_segments": s.rx_segments,
                "rx_errors": s.rx_errors, "rx_bad_vnet": s.rx_bad_vnet,
                "tx_frames": s.tx_frames, "tx_bytes": s.tx_bytes,
                "tx_dropped": s.tx_dropped, "tx_errors": s.tx_errors,
            });
        }
        v
    }
}

/// Builds the wire `args` describe, wrapped in the fault injector when
/// `--faults` is given.
pub fn open(args: &Args) -> Result<(Box<dyn Wire>, WireExtras), RunError> {
    let mut extras = WireExtras::default();
    let base: Box<dyn Wire> = match &args.wire {
        WireSpec::Gen => Box::new(
            Generator::new(args.gen_config())
                .map_err(|e| RunError::Usage(format!("--wire gen: {e}")))?,
        ),
        WireSpec::Tap(name) => {
            let cfg = TapConfig {
                vnet_hdr: args.vnet_hdr,
                mtu: Some(args.mtu as u32),
                ..TapConfig::new(name.clone())
            };
            let tap = TapWire::open(cfg)
                .map_err(|e| RunError::Usage(format!("--wire tap:{name}: {e}")))?;
            extras.tap = Some(tap.stats());
            Box::new(tap)
        }
        WireSpec::Pcap(path) => {
            let mut replay = PcapReplay::open(path)
                .map_err(|e| RunError::Usage(format!("--wire pcap:{}: {e}", path.display())))?;
            if args.fix_checksums {
                replay = replay.fix_checksums();
            }
            extras.pcap = Some((
                replay.len(),
                args.fix_checksums.then(|| replay.checksums_fixed()),
            ));
            Box::new(replay)
        }
        WireSpec::Pair => {
            let (near, far) = wire::pair(PAIR_CAPACITY);
            extras.pair = Some(near.stats());
            extras.far_end = Some(far);
            Box::new(near)
        }
    };
    let Some(spec) = &args.faults else {
        return Ok((base, extras));
    };
    let cfg: FaultConfig = spec
        .parse()
        .map_err(|e| RunError::Usage(format!("--faults {spec:?}: {e}")))?;
    let fw = FaultWire::new(base, cfg).map_err(|e| RunError::Usage(format!("--faults: {e}")))?;
    extras.faults = Some(fw.stats());
    Ok((Box::new(fw), extras))
}
