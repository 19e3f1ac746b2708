//! The simulator wire's counters for the summary.

use pipeline::port::WireParts;
use serde_json::{json, Value};

/// The wire's counters for the JSON summary.
pub fn json(parts: &WireParts) -> Value {
    let mut v = json!({});
    if let Some(p) = &parts.pair {
        let (ab, ba) = (p.a_to_b(), p.b_to_a());
        v["pair"] = json!({
            "to_peer": {"frames": ab.frames, "bytes": ab.bytes, "full_drops": ab.full_drops},
            "from_peer": {"frames": ba.frames, "bytes": ba.bytes, "full_drops": ba.full_drops},
        });
    }
    if let Some(f) = &parts.faults {
        let c = |c: wires::FaultCounts| {
            json!({"seen": c.seen, "dropped": c.dropped, "duplicated": c.duplicated,
                   "reordered": c.reordered, "corrupted": c.corrupted, "delayed": c.delayed})
        };
        v["faults"] = json!({"to_nic": c(f.to_nic()), "from_nic": c(f.from_nic())});
    }
    if let Some(p) = &parts.pcap {
        v["pcap"] = json!(p);
    }
    if let Some(t) = &parts.tap {
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
