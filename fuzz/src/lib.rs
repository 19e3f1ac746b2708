//! Harnesses shared by the fuzz targets and by `examples/gen_corpus.rs`,
//! which writes the seed corpus (so the seeds are real inputs in the
//! encoding the targets read).

use driver::dma::{DmaSpace, NoIommu};
use driver::{Buf, BufPool, Csum, OwnedPacket, Seg};
use pipeline::{HeaderPool, HeaderPoolConfig, PagePool, PagePoolConfig};
use stack::frame::Presenter;
use stack::smoltcp::phy::{self, DeviceCapabilities, Medium};
use stack::smoltcp::time::Instant;
use stack::smoltcp::wire::{Ipv4Address, Ipv4Cidr};
use stack::{SinkConfig, SocketMemory, TcpSink};
use std::collections::VecDeque;
use std::sync::Arc;

pub mod rx;
pub mod zc;

/// Reads the input as a stream of bytes; zeros once it runs out.
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Payload buffer bytes and header slot bytes of the stack harness pools.
pub const BUF: usize = 2048;
pub const SLOT: usize = 256;
const BUFFERS: usize = 128;
/// The sink's address and ports, as hw-sim's frame builder addresses them.
pub const SINK_IP: [u8; 4] = [198, 19, 0, 1];
pub const SINK_PORT: u16 = 80;
pub const IPERF3_PORT: u16 = 5201;

/// How one frame is spread over buffers, as the driver would deliver it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shape {
    /// Bytes in a header slot (split on), or none (split off, HBO).
    pub hdr: Option<u8>,
    /// Bytes per payload buffer (the last takes the rest); 0 = one buffer.
    pub chunk: u16,
    pub ip_good: bool,
    pub l4_good: bool,
}

/// Encodes one packet for the `stack_ingest` target.
pub fn encode_packet(out: &mut Vec<u8>, frame: &[u8], s: Shape) {
    let ctrl = u8::from(s.hdr.is_some()) | u8::from(s.ip_good) << 1 | u8::from(s.l4_good) << 2;
    out.push(ctrl);
    out.push(s.hdr.unwrap_or(0));
    out.extend_from_slice(&s.chunk.to_le_bytes());
    out.extend_from_slice(&(frame.len() as u16).to_le_bytes());
    out.extend_from_slice(frame);
}

/// A smoltcp device fed from a [`Presenter`]; what the stack sends is kept.
pub struct FuzzDev {
    pub presenter: Presenter,
    pub pages: PagePool,
    pub hdrs: HeaderPool,
}

pub struct Rx<'a> {
    frame: Option<stack::frame::Frame>,
    dev: &'a mut FuzzDev,
}

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(mut self, f: F) -> R {
        let frame = self.frame.take().expect("frame");
        let r = f(frame.bytes());
        let d = &mut *self.dev;
        d.presenter.release(frame, &mut d.pages, &mut d.hdrs);
        r
    }
}

impl Drop for Rx<'_> {
    fn drop(&mut self) {
        if let Some(frame) = self.frame.take() {
            let d = &mut *self.dev;
            d.presenter.release(frame, &mut d.pages, &mut d.hdrs);
        }
    }
}

pub struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut v = vec![0; len];
        let r = f(&mut v);
        if self.0.len() >= 64 {
            self.0.pop_front();
        }
        self.0.push_back(v);
        r
    }
}

/// The device smoltcp sees: the presenter side and the sent frames apart,
/// so an RX and a TX token can be lent at once.
pub struct DevHandle {
    dev: FuzzDev,
    sent: VecDeque<Vec<u8>>,
}

impl phy::Device for DevHandle {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let frame = self.dev.presenter.pop()?;
        Some((
            Rx {
                frame: Some(frame),
                dev: &mut self.dev,
            },
            Tx(&mut self.sent),
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.sent))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 9014;
        caps.checksum = stack::device::checksum_caps();
        caps
    }
}

/// Copies `bytes` into a fresh buffer of `pool`.
fn filled(pool: &mut impl BufPool, bytes: &[u8]) -> Buf {
    let mut buf = pool.alloc().expect("a free buffer");
    assert!(bytes.len() <= pool.buf_len());
    buf.as_mut_slice(bytes.len()).copy_from_slice(bytes);
    buf
}

/// `frame` as the driver would deliver it in `shape`, in real pool buffers.
fn packet(dev: &mut FuzzDev, frame: &[u8], s: Shape) -> OwnedPacket {
    let n = s.hdr.map_or(0, |n| (n as usize).min(frame.len()).min(SLOT));
    let (hdr, rest) = match s.hdr {
        Some(_) => (Some(filled(&mut dev.hdrs, &frame[..n])), &frame[n..]),
        None => (None, frame),
    };
    // At most a quarter of the pool per packet.
    let chunk = if s.chunk == 0 { BUF } else { s.chunk as usize };
    let chunk = chunk.max(rest.len().div_ceil(BUFFERS / 4)).min(BUF);
    let segs = rest
        .chunks(chunk)
        .map(|c| Seg {
            len: c.len() as u16,
            buf: filled(&mut dev.pages, c),
        })
        .collect();
    OwnedPacket {
        hdr,
        hdr_len: n as u16,
        len: frame.len() as u32,
        segs,
        pkt_type: 0,
        ip_csum: if s.ip_good { Csum::Good } else { Csum::None },
        l4_csum: if s.l4_good { Csum::Good } else { Csum::None },
        rss: 0,
        rss_type: 0,
    }
}

/// What one `stack_ingest` run saw.
#[derive(Debug, Default)]
pub struct StackRun {
    /// Frames the stack sent, in order (the last 64).
    pub sent: Vec<Vec<u8>>,
    pub sink: stack::TcpStats,
    pub present: stack::frame::PresentStats,
}

/// The `stack_ingest` harness: packets decoded from `data` (see
/// [`encode_packet`]), presented by the [`Presenter`] and fed to a
/// [`TcpSink`] one by one, the clock advancing 1 ms per packet. Asserts
/// that no buffer leaks; returns what happened.
pub fn run_stack(data: &[u8]) -> StackRun {
    let mut inp = Input(data);
    let cfg = inp.u8();
    // Headroom the presenter may use: the pool's, or less (even).
    let headroom = if cfg & 1 == 0 {
        256
    } else {
        (inp.u8() as usize) & !1
    };
    let space = DmaSpace::new(Arc::new(NoIommu));
    let pages = PagePool::new(
        &space,
        PagePoolConfig {
            buffers: BUFFERS,
            buf_len: BUF,
            headroom: 256,
            cache_size: 32,
            bulk: 16,
            checked: true,
            ..PagePoolConfig::default()
        },
    )
    .expect("page pool");
    let hdrs = HeaderPool::new(
        &space,
        HeaderPoolConfig {
            buffers: BUFFERS,
            slot: SLOT,
            ..HeaderPoolConfig::default()
        },
    )
    .expect("header pool");
    let mut dev = DevHandle {
        dev: FuzzDev {
            presenter: Presenter::new(headroom),
            pages,
            hdrs,
        },
        sent: VecDeque::new(),
    };
    let sink_cfg = SinkConfig {
        ip: Ipv4Cidr::new(Ipv4Address::from(SINK_IP), 15),
        port: SINK_PORT,
        iperf3_port: (cfg & 2 != 0).then_some(IPERF3_PORT),
        max_conns: 2,
        rx_buf: 32 << 10,
        tx_buf: 4 << 10,
        verify: cfg & 4 != 0,
        ingress_budget: 8,
        ..SinkConfig::default()
    };
    let mut mem = SocketMemory::for_sockets(4, sink_cfg.rx_buf, sink_cfg.tx_buf).expect("memory");
    let mut now = Instant::from_millis(1_000);
    let mut sink = TcpSink::new(sink_cfg, &mut mem, &mut dev, now).expect("sink");
    let mut packets = 0;
    while !inp.is_empty() && packets < 64 {
        packets += 1;
        let ctrl = inp.u8();
        let hdr = inp.u8();
        let chunk = inp.u16();
        let len = (inp.u16() as usize) % 9100;
        let frame = inp.bytes(len);
        let shape = Shape {
            hdr: (ctrl & 1 != 0).then_some(hdr),
            chunk,
            ip_good: ctrl & 2 != 0,
            l4_good: ctrl & 4 != 0,
        };
        let d = &mut dev.dev;
        let mut pkt = packet(d, frame, shape);
        d.presenter.push(&mut pkt, &mut d.pages, &mut d.hdrs);
        assert!(pkt.hdr.is_none(), "header slot left in the packet");
        assert!(pkt.segs.is_empty(), "segments left in the packet");
        now += stack::smoltcp::time::Duration::from_millis(1 + u64::from(ctrl >> 4) * 50);
        sink.poll(now, &mut dev);
        let d = &mut dev.dev;
        d.presenter.release_all(&mut d.pages, &mut d.hdrs);
    }
    for _ in 0..3 {
        now += stack::smoltcp::time::Duration::from_millis(200);
        sink.poll(now, &mut dev);
    }
    let run = StackRun {
        sent: dev.sent.iter().cloned().collect(),
        sink: *sink.stats(),
        present: *dev.dev.presenter.stats(),
    };
    drop(sink);
    let d = &mut dev.dev;
    d.presenter.release_all(&mut d.pages, &mut d.hdrs);
    assert_eq!(d.pages.audit().lent, 0, "payload buffers leaked");
    assert_eq!(d.hdrs.audit().lent, 0, "header slots leaked");
    // Every packet gave a frame (a segmented one, one or more) or was
    // counted as dropped.
    let p = run.present;
    assert!(
        p.frames + p.bad_checksum + p.malformed >= p.packets,
        "{p:?}"
    );
    run
}

/// The `pcap_input` harness: `data` written to a temporary file, opened
/// with [`PcapReplay::open`](wires::PcapReplay::open) and replayed
/// twice. Returns the frames of one pass (`None` when the file was
/// refused).
pub fn run_pcap(data: &[u8]) -> Option<Vec<Vec<u8>>> {
    use wires::{PcapReplay, MAX_REPLAY_FRAME};
    use hw_sim::Wire;
    use std::cell::RefCell;
    thread_local! {
        static PATH: RefCell<Option<std::path::PathBuf>> = const { RefCell::new(None) };
    }
    let path = PATH.with(|p| {
        p.borrow_mut()
            .get_or_insert_with(|| {
                let dir = if std::path::Path::new("/dev/shm").is_dir() {
                    std::path::PathBuf::from("/dev/shm")
                } else {
                    std::env::temp_dir()
                };
                dir.join(format!("fuzz-pcap-{}.pcap", std::process::id()))
            })
            .clone()
    });
    std::fs::write(&path, data).expect("write the temporary pcap");
    let replay = PcapReplay::open(&path);
    let _ = std::fs::remove_file(&path);
    let mut replay = match replay {
        Ok(r) => r.loops(2),
        Err(e) => {
            // Errors describe themselves without panicking.
            let _ = e.to_string();
            return None;
        }
    };
    let mut frames = Vec::new();
    let mut count = 0;
    let per_pass = replay.len();
    while let Some(f) = replay.recv() {
        assert!(
            (14..=MAX_REPLAY_FRAME).contains(&f.len()),
            "frame of {} bytes replayed",
            f.len()
        );
        if count < per_pass {
            frames.push(f.to_vec());
        } else {
            assert_eq!(f, &frames[count % per_pass][..], "second pass differs");
        }
        count += 1;
        assert!(count <= 2 * per_pass, "more frames than two passes");
    }
    assert_eq!(count, 2 * per_pass, "two passes");
    assert!(replay.exhausted(), "two passes done: exhausted");
    assert_eq!(replay.replayed(), count as u64);
    // Recomputing checksums never panics, and a second time changes nothing.
    for f in &frames {
        let mut g = f.clone();
        wires::fix_frame_checksums(&mut g);
        assert!(!wires::fix_frame_checksums(&mut g), "fix is idempotent");
    }
    replay.rewind();
    if let Some(f) = replay.recv() {
        assert_eq!(f, &frames[0][..], "rewind starts over");
    }
    replay.send(&[0; 60]);
    assert_eq!(replay.discarded(), 1);
    Some(frames)
}
