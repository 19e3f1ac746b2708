//! `--pcap-out`: the frames received, written as they came off the wire.

use crate::error::RunError;
use driver::RxBatch;

/// `--pcap-out`: every received frame, reassembled from its buffers (a
/// copy, so capturing runs are not timing runs).
pub struct Capture {
    writer: wires::PcapWriter,
    buf: Vec<u8>,
    errors: u64,
}

impl Capture {
    pub fn create(path: &std::path::Path) -> Result<Capture, RunError> {
        let writer = wires::PcapWriter::create(path)
            .map_err(|e| RunError::Usage(format!("--pcap-out {}: {e}", path.display())))?;
        Ok(Capture {
            writer,
            buf: Vec::with_capacity(16384),
            errors: 0,
        })
    }

    pub fn frame(&mut self, frame: &[u8]) {
        if let Err(e) = self.writer.write(frame) {
            if self.errors == 0 {
                tracing::warn!("--pcap-out: {e}");
            }
            self.errors += 1;
        }
    }

    pub fn batch(&mut self, batch: &RxBatch) {
        for p in batch.iter() {
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            buf.extend_from_slice(p.header());
            for s in p.segments() {
                buf.extend_from_slice(s);
            }
            self.frame(&buf);
            self.buf = buf;
        }
    }

    /// Flushes the file; returns (frames written, write errors).
    pub fn finish(mut self) -> (u64, u64) {
        if let Err(e) = self.writer.flush() {
            tracing::warn!("--pcap-out: {e}");
            self.errors += 1;
        }
        (self.writer.frames(), self.errors)
    }
}
