//! `--wb-log FILE`: one JSON line per completed RX descriptor write-back,
//! raw dwords and decoded fields, for the simulator-vs-QEMU differential
//! (`scripts/e2e-qemu/diffwb.py`).

use crate::error::RunError;
use driver::desc::RxWriteBack;
use driver::WbObserver;
use std::io::Write;

/// One write-back as a JSON line (no trailing newline).
pub fn line(queue: u32, desc: u32, wb: &RxWriteBack) -> String {
    let (i, st, l) = (wb.info, wb.status, wb.len);
    serde_json::json!({
        "queue": queue,
        "desc": desc,
        "raw": wb.to_raw(),
        "hdr_len": i.hdr_len(),
        "sph": i.sph(),
        "pkt_type": i.pkt_type(),
        "rss_type": i.rss_type(),
        "rsc_cnt": i.rsc_cnt(),
        "rss": wb.rss,
        "dd": st.dd(),
        "eop": st.eop(),
        "hbo": st.hbo(),
        "vp": st.vp(),
        "udpcs": st.udpcs(),
        "l4cs": st.l4cs(),
        "ipcs": st.ipcs(),
        "ipidv": st.ipidv(),
        "status": st.0 & 0x000F_FFFF,
        "errors": st.0 >> 20,
        "frame_err": st.frame_err(),
        "tcpe": st.tcpe(),
        "ipe": st.ipe(),
        "rxe": st.rxe(),
        "pkt_len": l.pkt_len(),
        "vlan": l.vlan(),
    })
    .to_string()
}

/// An observer for `RxRing::set_wb_observer` writing `line`s to `path`
/// (buffered; flushed when the observer is dropped).
pub fn observer(path: &std::path::Path, queue: u32) -> Result<WbObserver, RunError> {
    let f = std::fs::File::create(path)
        .map_err(|e| RunError::Usage(format!("--wb-log {}: {e}", path.display())))?;
    let mut w = std::io::BufWriter::new(f);
    let mut failed = false;
    Ok(Box::new(move |desc, wb| {
        if failed {
            return;
        }
        if let Err(e) = writeln!(w, "{}", line(queue, desc, wb)) {
            tracing::warn!("--wb-log: {e}");
            failed = true;
        }
    }))
}
