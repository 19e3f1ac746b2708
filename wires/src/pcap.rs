//! pcap files: replay a classic pcap or pcapng capture towards the NIC ([`PcapReplay`]),
//! write frames to a capture ([`PcapWriter`]), and capture what crosses any
//! wire ([`CaptureWire`]).

use hw_sim::frames::{self, ETH_HLEN, L3, L4};
use hw_sim::Wire;
use pcap_file::pcap::PcapReader;
use pcap_file::DataLink;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest frame replayed (longer records are skipped and counted).
pub const MAX_REPLAY_FRAME: usize = 16 * 1024;
/// Snapshot length of written files; longer frames are cut to it.
const SNAPLEN: u32 = 65535;
/// Classic pcap magic with nanosecond timestamps.
const NSEC_MAGIC: u32 = 0xA1B2_3C4D;
const LINKTYPE_ETHERNET: u32 = 1;
/// pcapng section header block type (the same in either byte order).
const PCAPNG_MAGIC: [u8; 4] = [0x0A, 0x0D, 0x0D, 0x0A];

/// Why a pcap file could not be read or written.
#[derive(Debug)]
pub enum PcapError {
    /// Opening, reading or writing the file failed.
    Io { path: PathBuf, source: io::Error },
    /// Neither a classic pcap nor a pcapng file, or its header is damaged.
    Format { path: PathBuf, reason: String },
    /// A link type other than Ethernet (1).
    LinkType { path: PathBuf, linktype: u32 },
}

impl fmt::Display for PcapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PcapError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            PcapError::Format { path, reason } => {
                write!(
                    f,
                    "{}: not a usable pcap or pcapng file: {reason}",
                    path.display()
                )
            }
            PcapError::LinkType { path, linktype } => write!(
                f,
                "{}: link type {linktype} not supported (only Ethernet, link type 1)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for PcapError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PcapError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(path: &Path, source: io::Error) -> PcapError {
    PcapError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Converts an error of the pcap-file crate.
fn lib_err(path: &Path, e: pcap_file::PcapError) -> PcapError {
    match e {
        pcap_file::PcapError::IoError(source) if source.kind() != io::ErrorKind::UnexpectedEof => {
            io_err(path, source)
        }
        pcap_file::PcapError::IoError(_) | pcap_file::PcapError::IncompleteBuffer => {
            PcapError::Format {
                path: path.to_path_buf(),
                reason: "file empty or truncated".into(),
            }
        }
        e => PcapError::Format {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    }
}

/// Replays the Ethernet frames of a classic pcap or a pcapng file (link
/// type Ethernet only, others are an error) towards the NIC, in file
/// order, then returns `None` forever (or starts over, see
/// [`PcapReplay::loops`]). Frames the NIC sends are discarded and counted.
///
/// The whole capture is loaded into one buffer at [`open`](Self::open), so
/// replay runs at memory speed and never touches the file again. Records
/// shorter than 14 bytes or longer than [`MAX_REPLAY_FRAME`] are skipped
/// and counted. Records cut by the capture's snaplen are replayed as
/// captured. A file truncated inside a record ends cleanly after the last
/// complete record ([`truncated`](Self::truncated) tells); so does a record
/// claiming more than pcap-file's 8 MB read buffer (a damaged length).
#[derive(Debug)]
pub struct PcapReplay {
    path: PathBuf,
    data: Vec<u8>,
    frames: Vec<Range<usize>>,
    next: usize,
    /// Passes over the file (0 = endless).
    loops: usize,
    pass: usize,
    replayed: u64,
    skipped_short: u64,
    skipped_long: u64,
    discarded: u64,
    truncated: bool,
    checksums_fixed: u64,
}

impl PcapReplay {
    /// Reads the capture at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<PcapReplay, PcapError> {
        let path = path.as_ref();
        let mut file = BufReader::new(File::open(path).map_err(|e| io_err(path, e))?);
        let mut magic = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match file.read(&mut magic[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(path, e)),
            }
        }
        let head = magic[..got].chain(file);
        let mut replay = PcapReplay {
            path: path.to_path_buf(),
            data: Vec::new(),
            frames: Vec::new(),
            next: 0,
            loops: 1,
            pass: 0,
            replayed: 0,
            skipped_short: 0,
            skipped_long: 0,
            discarded: 0,
            truncated: false,
            checksums_fixed: 0,
        };
        if got == 4 && magic == PCAPNG_MAGIC {
            replay.load_pcapng(head)?;
        } else {
            replay.load_pcap(head)?;
        }
        Ok(replay)
    }

    /// A classic pcap file: either byte order, microsecond or nanosecond
    /// timestamps (pcap-file reads all four magics).
    fn load_pcap(&mut self, input: impl Read) -> Result<(), PcapError> {
        let path = self.path.clone();
        let path = path.as_path();
        let mut reader = PcapReader::new(input).map_err(|e| lib_err(path, e))?;
        let linktype = u32::from(reader.header().datalink);
        if reader.header().datalink != DataLink::ETHERNET {
            return Err(PcapError::LinkType {
                path: path.to_path_buf(),
                linktype,
            });
        }
        while let Some(rec) = reader.next_raw_packet() {
            match rec {
                Ok(r) => self.push(&r.data),
                Err(e) => match lib_err(path, e) {
                    PcapError::Format { .. } => {
                        self.truncated = true;
                        break;
                    }
                    e => return Err(e),
                },
            }
        }
        Ok(())
    }

    /// A pcapng file (Wireshark's and dumpcap's default): sections of
    /// either byte order, several interfaces (each must be Ethernet),
    /// enhanced, simple and obsolete packet blocks; other blocks are
    /// skipped. Timestamps are not used (replay runs at memory speed), so
    /// any `if_tsresol` reads. A damaged block ends the replay like a
    /// truncated file.
    fn load_pcapng(&mut self, input: impl Read) -> Result<(), PcapError> {
        use pcap_file::pcapng::{Block, PcapNgReader};
        let path = self.path.clone();
        let path = path.as_path();
        let mut reader = PcapNgReader::new(input).map_err(|e| match lib_err(path, e) {
            PcapError::Format { reason, .. } => PcapError::Format {
                path: path.to_path_buf(),
                reason: format!("damaged pcapng section header: {reason}"),
            },
            e => e,
        })?;
        // Link types of the current section's interfaces, by interface id
        // (kept here: a block borrows the reader).
        let mut links: Vec<DataLink> = Vec::new();
        while let Some(block) = reader.next_block() {
            let (iface, data) = match block {
                Err(e) => match lib_err(path, e) {
                    PcapError::Format { .. } => {
                        self.truncated = true;
                        break;
                    }
                    e => return Err(e),
                },
                Ok(Block::SectionHeader(_)) => {
                    links.clear();
                    continue;
                }
                Ok(Block::InterfaceDescription(idb)) => {
                    links.push(idb.linktype);
                    continue;
                }
                Ok(Block::EnhancedPacket(b)) => (b.interface_id as usize, b.data),
                Ok(Block::SimplePacket(b)) => {
                    // No captured length: the original length, cut by the
                    // block (pcap-file leaves the padding in `data`).
                    let n = (b.original_len as usize).min(b.data.len());
                    (
                        0,
                        match b.data {
                            std::borrow::Cow::Borrowed(d) => std::borrow::Cow::Borrowed(&d[..n]),
                            std::borrow::Cow::Owned(mut d) => {
                                d.truncate(n);
                                std::borrow::Cow::Owned(d)
                            }
                        },
                    )
                }
                Ok(Block::Packet(b)) => (b.interface_id as usize, b.data),
                Ok(_) => continue,
            };
            match links.get(iface) {
                Some(&DataLink::ETHERNET) => self.push(&data),
                Some(&other) => {
                    return Err(PcapError::LinkType {
                        path: path.to_path_buf(),
                        linktype: u32::from(other),
                    })
                }
                None => {
                    return Err(PcapError::Format {
                        path: path.to_path_buf(),
                        reason: format!(
                            "pcapng packet for interface {iface}, which no block describes"
                        ),
                    })
                }
            }
        }
        Ok(())
    }

    /// Keeps one record's frame, or counts it as skipped.
    fn push(&mut self, frame: &[u8]) {
        if frame.len() < ETH_HLEN {
            self.skipped_short += 1;
        } else if frame.len() > MAX_REPLAY_FRAME {
            self.skipped_long += 1;
        } else {
            let start = self.data.len();
            self.data.extend_from_slice(frame);
            self.frames.push(start..self.data.len());
        }
    }

    /// Replays the file `passes` times (0 = endlessly; the default is 1).
    pub fn loops(mut self, passes: usize) -> PcapReplay {
        self.loops = passes;
        self
    }

    /// Recomputes the IPv4 header and TCP/UDP checksums of every frame
    /// (IPv4 and IPv6, not fragments), like `tcprewrite --fixcsum`: a
    /// capture taken on the sending host holds the checksums the kernel
    /// left to the NIC, which the receiving NIC finds wrong. Done once,
    /// here, not per replayed frame. Frames cut by the capture's snaplen
    /// keep their checksums (the data they cover is not all there).
    pub fn fix_checksums(mut self) -> PcapReplay {
        for r in &self.frames {
            if fix_frame_checksums(&mut self.data[r.clone()]) {
                self.checksums_fixed += 1;
            }
        }
        self
    }

    /// Frames whose checksums [`fix_checksums`](Self::fix_checksums) changed.
    pub fn checksums_fixed(&self) -> u64 {
        self.checksums_fixed
    }

    /// Frames loaded from the file (one pass).
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frames returned by `recv` so far, over all passes.
    pub fn replayed(&self) -> u64 {
        self.replayed
    }

    /// Records skipped as shorter than an Ethernet header.
    pub fn skipped_short(&self) -> u64 {
        self.skipped_short
    }

    /// Records skipped as longer than [`MAX_REPLAY_FRAME`].
    pub fn skipped_long(&self) -> u64 {
        self.skipped_long
    }

    /// Frames the NIC sent (discarded).
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// The file ended inside a record.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Starts over from the first frame and pass.
    pub fn rewind(&mut self) {
        self.next = 0;
        self.pass = 0;
    }
}

impl Wire for PcapReplay {
    fn recv(&mut self) -> Option<&[u8]> {
        if self.next == self.frames.len() {
            if self.frames.is_empty() {
                return None;
            }
            if self.loops != 0 && self.pass + 1 >= self.loops {
                return None;
            }
            self.pass += 1;
            self.next = 0;
        }
        let r = self.frames.get(self.next)?.clone();
        self.next += 1;
        self.replayed += 1;
        self.data.get(r)
    }

    fn send(&mut self, _frame: &[u8]) {
        self.discarded += 1;
    }

    fn name(&self) -> String {
        format!("pcap {}", self.path.display())
    }

    /// Every pass has been replayed (never with endless loops, unless the
    /// file holds no frame).
    fn exhausted(&self) -> bool {
        self.frames.is_empty()
            || (self.loops != 0 && self.next == self.frames.len() && self.pass + 1 >= self.loops)
    }
}

/// Recomputes the IPv4 header checksum and the TCP or UDP checksum of
/// `f` in place; returns whether any of them changed. Frames that are not
/// IP, IPv4 fragments, headers cut short and L4 data cut short by the
/// capture are left alone. Never panics.
pub fn fix_frame_checksums(f: &mut [u8]) -> bool {
    use packet::{checksum, ipv4, ipv6, tcp, udp};
    let be16 = |f: &[u8], at: usize| -> Option<usize> {
        Some(u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]) as usize)
    };
    let mut changed = false;
    let mut store = |f: &mut [u8], at: usize, c: u16| {
        if f[at..at + 2] != c.to_be_bytes() {
            f[at..at + 2].copy_from_slice(&c.to_be_bytes());
            changed = true;
        }
    };
    let p = frames::parse(f);
    let (l3, l4) = (p.l3_off, p.l4_off);
    if p.l3 == L3::Ipv4 && l4 <= f.len() && l4 >= l3 + ipv4::MIN_HEADER_LEN {
        let c = ipv4::header_checksum(&f[l3..l4]);
        store(f, l3 + ipv4::field::CHECKSUM, c);
    }
    if p.fragment || !matches!(p.l3, L3::Ipv4 | L3::Ipv6) {
        return changed;
    }
    // L4 length: UDP's own; TCP's from the IP header (as the checks do).
    let (proto, len, field, min) = match p.l4 {
        L4::Udp => match be16(f, l4 + udp::field::LENGTH) {
            Some(n) => (17u8, n, l4 + udp::field::CHECKSUM, udp::HEADER_LEN),
            None => return changed,
        },
        L4::Tcp => {
            let len = match p.l3 {
                L3::Ipv4 => {
                    be16(f, l3 + ipv4::field::TOTAL_LEN).and_then(|t| t.checked_sub(l4 - l3))
                }
                _ => be16(f, l3 + ipv6::field::PAYLOAD_LEN)
                    .and_then(|t| t.checked_sub(l4 - l3 - ipv6::HEADER_LEN)),
            };
            match len {
                Some(n) => (6u8, n, l4 + tcp::field::CHECKSUM, tcp::MIN_HEADER_LEN),
                None => return changed,
            }
        }
        _ => return changed,
    };
    if len < min || l4 + len > f.len() || field + 2 > l4 + len {
        return changed;
    }
    let addrs = match p.l3 {
        L3::Ipv4 => ipv4::field::ADDRS,
        _ => ipv6::field::ADDRS,
    };
    let pseudo = checksum::pseudo_header(&f[l3 + addrs.start..l3 + addrs.end], proto, len as u32);
    // The sum around the checksum field (counted as zero).
    let sum = checksum::sum(
        &f[field + 2..l4 + len],
        checksum::sum(&f[l4..field], pseudo),
    );
    let c = !checksum::fold(sum);
    // 0 means "no checksum" for UDP: the other zero is stored instead.
    let c = if c == 0 && proto == 17 { 0xFFFF } else { c };
    store(f, field, c);
    changed
}

/// Writes frames to a new classic pcap file: nanosecond timestamps from the
/// wall clock (magic `0xa1b23c4d`), Ethernet, native byte order, snaplen
/// 65535, which tcpdump, Wireshark and libpcap read. Buffered: call
/// [`flush`](Self::flush) to make the file complete on disk while writing;
/// dropping the writer flushes too (ignoring errors).
///
/// The 24-byte file header and the 16-byte record headers are written here
/// directly (pcap-file's writer offers no flush without giving up the
/// file); the tests read the files back with pcap-file's reader.
pub struct PcapWriter {
    path: PathBuf,
    out: BufWriter<File>,
    frames: u64,
}

impl fmt::Debug for PcapWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PcapWriter")
            .field("path", &self.path)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl PcapWriter {
    /// Creates (or truncates) the file at `path` and writes the pcap header.
    pub fn create(path: impl AsRef<Path>) -> Result<PcapWriter, PcapError> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|e| io_err(path, e))?;
        let mut out = BufWriter::new(file);
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&NSEC_MAGIC.to_ne_bytes());
        h[4..6].copy_from_slice(&2u16.to_ne_bytes()); // version 2.4
        h[6..8].copy_from_slice(&4u16.to_ne_bytes());
        // 8..16: thiszone and sigfigs, zero.
        h[16..20].copy_from_slice(&SNAPLEN.to_ne_bytes());
        h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
        out.write_all(&h).map_err(|e| io_err(path, e))?;
        Ok(PcapWriter {
            path: path.to_path_buf(),
            out,
            frames: 0,
        })
    }

    /// Appends `frame` stamped with the current wall-clock time. Frames
    /// longer than 65535 bytes are cut (the record keeps the real length).
    pub fn write(&mut self, frame: &[u8]) -> Result<(), PcapError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        self.write_at(frame, now)
    }

    /// Appends `frame` with the timestamp `ts` (since the Unix epoch;
    /// seconds beyond `u32::MAX` saturate).
    pub fn write_at(&mut self, frame: &[u8], ts: Duration) -> Result<(), PcapError> {
        let data = &frame[..frame.len().min(SNAPLEN as usize)];
        let mut h = [0u8; 16];
        let secs = u32::try_from(ts.as_secs()).unwrap_or(u32::MAX);
        h[0..4].copy_from_slice(&secs.to_ne_bytes());
        h[4..8].copy_from_slice(&ts.subsec_nanos().to_ne_bytes());
        h[8..12].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        let orig = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        h[12..16].copy_from_slice(&orig.to_ne_bytes());
        self.out
            .write_all(&h)
            .and_then(|()| self.out.write_all(data))
            .map_err(|e| io_err(&self.path, e))?;
        self.frames += 1;
        Ok(())
    }

    /// Pushes buffered records to the file.
    pub fn flush(&mut self) -> Result<(), PcapError> {
        self.out.flush().map_err(|e| io_err(&self.path, e))
    }

    /// Frames written.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Middleware that copies every frame going towards the NIC (and, with
/// [`capture_sent`](Self::capture_sent), every frame the NIC sends) to a
/// [`PcapWriter`] while passing it through unchanged.
///
/// A write error does not stop the traffic: it is counted
/// ([`write_errors`](Self::write_errors)) and the first one is logged. The
/// writer is flushed whenever the inner wire has nothing to receive, so a
/// capture is complete on disk while the link is idle.
///
/// ```
/// use hw_sim::wire::QueueWire;
/// use wires::{CaptureWire, PcapReplay, PcapWriter};
/// use hw_sim::Wire;
/// let path = std::env::temp_dir().join(format!("hw-sim-doc-{}.pcap", std::process::id()));
/// let q = QueueWire::new();
/// q.push(vec![0xAA; 60]);
/// let mut cap = CaptureWire::new(q, PcapWriter::create(&path).unwrap()).capture_sent(true);
/// assert_eq!(cap.recv().map(|f| f.len()), Some(60));
/// cap.send(&[0xBB; 70]);
/// let (_q, writer) = cap.into_parts();
/// assert_eq!(writer.frames(), 2);
/// drop(writer); // flushes
/// let mut replay = PcapReplay::open(&path).unwrap();
/// assert_eq!(replay.recv(), Some(&[0xAA; 60][..]));
/// assert_eq!(replay.recv(), Some(&[0xBB; 70][..]));
/// assert!(replay.recv().is_none());
/// std::fs::remove_file(&path).unwrap();
/// ```
pub struct CaptureWire<W: Wire> {
    inner: W,
    writer: PcapWriter,
    sent: bool,
    dirty: bool,
    write_errors: u64,
}

impl<W: Wire> fmt::Debug for CaptureWire<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptureWire")
            .field("inner", &self.inner.name())
            .field("writer", &self.writer)
            .field("capture_sent", &self.sent)
            .field("write_errors", &self.write_errors)
            .finish()
    }
}

impl<W: Wire> CaptureWire<W> {
    /// Captures frames towards the NIC only.
    pub fn new(inner: W, writer: PcapWriter) -> CaptureWire<W> {
        CaptureWire {
            inner,
            writer,
            sent: false,
            dirty: false,
            write_errors: 0,
        }
    }

    /// Also capture (or not) the frames the NIC sends.
    pub fn capture_sent(mut self, yes: bool) -> CaptureWire<W> {
        self.sent = yes;
        self
    }

    pub fn writer(&self) -> &PcapWriter {
        &self.writer
    }

    pub fn inner(&self) -> &W {
        &self.inner
    }

    /// Frames that could not be written.
    pub fn write_errors(&self) -> u64 {
        self.write_errors
    }

    /// Takes the wire apart (the writer flushes when dropped).
    pub fn into_parts(self) -> (W, PcapWriter) {
        (self.inner, self.writer)
    }

    fn record(writer: &mut PcapWriter, errors: &mut u64, frame: &[u8]) {
        if let Err(e) = writer.write(frame) {
            if *errors == 0 {
                tracing::warn!("capture: {e}; further errors only counted");
            }
            *errors += 1;
        }
    }
}

impl<W: Wire> Wire for CaptureWire<W> {
    fn recv(&mut self) -> Option<&[u8]> {
        match self.inner.recv() {
            Some(f) => {
                Self::record(&mut self.writer, &mut self.write_errors, f);
                self.dirty = true;
                Some(f)
            }
            None => {
                if self.dirty {
                    self.dirty = false;
                    if self.writer.flush().is_err() {
                        self.write_errors += 1;
                    }
                }
                None
            }
        }
    }

    fn send(&mut self, frame: &[u8]) {
        if self.sent {
            Self::record(&mut self.writer, &mut self.write_errors, frame);
            self.dirty = true;
        }
        self.inner.send(frame);
    }

    fn send_vec(&mut self, frame: &mut Vec<u8>) {
        if self.sent {
            Self::record(&mut self.writer, &mut self.write_errors, frame);
            self.dirty = true;
        }
        self.inner.send_vec(frame);
    }

    fn name(&self) -> String {
        format!(
            "capture({}) over {}",
            self.writer.path.display(),
            self.inner.name()
        )
    }

    fn exhausted(&self) -> bool {
        self.inner.exhausted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hw_sim::frames::{non_ip_frame, tcp_frame, udp_frame};
    use hw_sim::wire::QueueWire;
    use pcap_file::TsResolution;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh path in the temp directory, removed on drop.
    struct TmpPath(PathBuf);

    impl TmpPath {
        fn new(tag: &str) -> TmpPath {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            TmpPath(
                std::env::temp_dir().join(format!("hw-sim-{tag}-{}-{n}.pcap", std::process::id())),
            )
        }
    }

    impl Drop for TmpPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn sample_frames() -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        for i in 0..50u8 {
            v.push(udp_frame(60 + i as usize * 30, i));
            v.push(tcp_frame(100 + i as usize, i, 12));
        }
        v.push(non_ip_frame(14, 1));
        v.push(udp_frame(MAX_REPLAY_FRAME, 2));
        v
    }

    #[test]
    fn write_then_replay_is_identical() {
        let p = TmpPath::new("roundtrip");
        let frames = sample_frames();
        let mut w = PcapWriter::create(&p.0).unwrap();
        for f in &frames {
            w.write(f).unwrap();
        }
        w.flush().unwrap();
        assert_eq!(w.frames(), frames.len() as u64);
        assert_eq!(w.path(), p.0.as_path());
        assert!(format!("{w:?}").contains("frames"));
        // Flushed: readable while the writer is still open.
        let mut r = PcapReplay::open(&p.0).unwrap();
        drop(w);
        assert_eq!(r.len(), frames.len());
        assert!(!r.is_empty() && !r.truncated());
        for f in &frames {
            assert_eq!(r.recv(), Some(&f[..]));
        }
        assert!(r.recv().is_none());
        assert!(r.recv().is_none(), "None forever");
        r.send(&[0; 60]);
        assert_eq!(r.discarded(), 1);
        assert_eq!(r.replayed(), frames.len() as u64);
        assert!(r.name().starts_with("pcap "));

        // Timestamps are nanosecond wall clock, in order.
        let mut rd = PcapReader::new(File::open(&p.0).unwrap()).unwrap();
        assert_eq!(rd.header().ts_resolution, TsResolution::NanoSecond);
        let mut last = Duration::ZERO;
        while let Some(pkt) = rd.next_packet() {
            let ts = pkt.unwrap().timestamp;
            assert!(ts >= last && ts.as_secs() > 1_600_000_000);
            last = ts;
        }
    }

    #[test]
    fn loops_and_skips() {
        let p = TmpPath::new("loops");
        let mut w = PcapWriter::create(&p.0).unwrap();
        let ts = Duration::from_secs(1_700_000_000);
        w.write_at(&udp_frame(60, 1), ts).unwrap();
        w.write_at(&[1u8; 13], ts).unwrap(); // too short
        w.write_at(&vec![2u8; MAX_REPLAY_FRAME + 1], ts).unwrap(); // too long
        w.write_at(&udp_frame(61, 2), ts).unwrap();
        drop(w);
        let mut r = PcapReplay::open(&p.0).unwrap().loops(3);
        assert_eq!((r.len(), r.skipped_short(), r.skipped_long()), (2, 1, 1));
        let lens: Vec<usize> = std::iter::from_fn(|| r.recv().map(|f| f.len())).collect();
        assert_eq!(lens, [60, 61, 60, 61, 60, 61]);
        assert!(r.recv().is_none());
        r.rewind();
        assert_eq!(r.recv().map(|f| f.len()), Some(60));
        let mut endless = PcapReplay::open(&p.0).unwrap().loops(0);
        for _ in 0..1000 {
            assert!(endless.recv().is_some());
        }
        assert_eq!(endless.replayed(), 1000);

        // An empty capture, even endless, just returns None.
        let e = TmpPath::new("empty");
        drop(PcapWriter::create(&e.0).unwrap());
        let mut r = PcapReplay::open(&e.0).unwrap().loops(0);
        assert!(r.is_empty());
        assert!(r.recv().is_none());
    }

    fn header_bytes(linktype: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&0xA1B2_C3D4u32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&65535u32.to_le_bytes());
        h.extend_from_slice(&linktype.to_le_bytes());
        h
    }

    fn record(data: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&1u32.to_le_bytes());
        r.extend_from_slice(&2u32.to_le_bytes());
        r.extend_from_slice(&(data.len() as u32).to_le_bytes());
        r.extend_from_slice(&(data.len() as u32).to_le_bytes());
        r.extend_from_slice(data);
        r
    }

    #[test]
    fn microsecond_little_endian_file_reads() {
        let p = TmpPath::new("usec");
        let f = udp_frame(80, 9);
        let mut bytes = header_bytes(1);
        bytes.extend(record(&f));
        std::fs::write(&p.0, bytes).unwrap();
        let mut r = PcapReplay::open(&p.0).unwrap();
        assert_eq!(r.recv(), Some(&f[..]));
    }

    #[test]
    fn non_ethernet_linktype_is_an_error() {
        let p = TmpPath::new("linktype");
        let mut bytes = header_bytes(101); // LINKTYPE_RAW (IP)
        bytes.extend(record(&[0x45; 40]));
        std::fs::write(&p.0, bytes).unwrap();
        let e = PcapReplay::open(&p.0).unwrap_err();
        assert!(
            matches!(e, PcapError::LinkType { linktype: 101, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("link type 101"), "{e}");
    }

    #[test]
    fn bad_files_are_errors_not_panics() {
        let p = TmpPath::new("bad");
        // Missing file.
        let e = PcapReplay::open(&p.0).unwrap_err();
        assert!(matches!(e, PcapError::Io { .. }));
        assert!(std::error::Error::source(&e).is_some());
        // Empty, short header, wrong magic, pcapng.
        for bytes in [
            Vec::new(),
            header_bytes(1)[..10].to_vec(),
            b"hello world, this is not a pcap".to_vec(),
            [PCAPNG_MAGIC.to_vec(), vec![0; 60]].concat(),
        ] {
            std::fs::write(&p.0, &bytes).unwrap();
            let e = PcapReplay::open(&p.0).unwrap_err();
            assert!(matches!(e, PcapError::Format { .. }), "{e:?}");
            assert!(!e.to_string().is_empty());
        }
        std::fs::write(&p.0, [PCAPNG_MAGIC.to_vec(), vec![0; 60]].concat()).unwrap();
        assert!(PcapReplay::open(&p.0)
            .unwrap_err()
            .to_string()
            .contains("pcapng"));
        // Not creatable.
        assert!(matches!(
            PcapWriter::create("/nonexistent-dir/x.pcap").unwrap_err(),
            PcapError::Io { .. }
        ));
    }

    #[test]
    fn truncated_file_ends_cleanly() {
        let p = TmpPath::new("trunc");
        let frames = sample_frames();
        let mut w = PcapWriter::create(&p.0).unwrap();
        for f in &frames[..10] {
            w.write(f).unwrap();
        }
        drop(w);
        let full = std::fs::read(&p.0).unwrap();
        // Cut at every length: never a panic; either the header is
        // incomplete (error) or the replay yields a prefix of the frames.
        for cut in (0..full.len()).step_by(7) {
            std::fs::write(&p.0, &full[..cut]).unwrap();
            match PcapReplay::open(&p.0) {
                Err(e) => {
                    assert!(cut < 24, "cut {cut}: {e}");
                    assert!(matches!(e, PcapError::Format { .. }));
                }
                Ok(mut r) => {
                    assert!(cut >= 24);
                    let n = r.len();
                    for f in &frames[..n] {
                        assert_eq!(r.recv(), Some(&f[..]));
                    }
                    assert!(r.recv().is_none());
                    assert!(n < 10);
                }
            }
        }
        // Cut inside the 4th record's data.
        let mut off = 24;
        for f in &frames[..3] {
            off += 16 + f.len();
        }
        std::fs::write(&p.0, &full[..off + 20]).unwrap();
        let r = PcapReplay::open(&p.0).unwrap();
        assert_eq!(r.len(), 3);
        assert!(r.truncated());
    }

    /// A classic pcap file in the given byte order and resolution.
    fn classic_file(big: bool, nanos: bool, frames: &[Vec<u8>]) -> Vec<u8> {
        let u32b = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let u16b = |v: u16| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut f = Vec::new();
        f.extend_from_slice(&u32b(if nanos { NSEC_MAGIC } else { 0xA1B2_C3D4 }));
        f.extend_from_slice(&u16b(2));
        f.extend_from_slice(&u16b(4));
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&u32b(65535));
        f.extend_from_slice(&u32b(LINKTYPE_ETHERNET));
        for (i, d) in frames.iter().enumerate() {
            f.extend_from_slice(&u32b(1_700_000_000 + i as u32));
            f.extend_from_slice(&u32b(if nanos { 999_999_999 } else { 999_999 }));
            f.extend_from_slice(&u32b(d.len() as u32));
            f.extend_from_slice(&u32b(d.len() as u32));
            f.extend_from_slice(d);
        }
        f
    }

    #[test]
    fn classic_pcap_in_both_byte_orders_and_resolutions() {
        let frames = sample_frames();
        let p = TmpPath::new("classic");
        for big in [false, true] {
            for nanos in [false, true] {
                std::fs::write(&p.0, classic_file(big, nanos, &frames)).unwrap();
                let mut r = PcapReplay::open(&p.0).unwrap();
                assert_eq!(r.len(), frames.len(), "big {big} nanos {nanos}");
                for f in &frames {
                    assert_eq!(r.recv(), Some(&f[..]), "big {big} nanos {nanos}");
                }
                assert!(r.exhausted() && !r.truncated());
            }
        }
    }

    /// pcapng blocks, in one byte order.
    struct Ng {
        big: bool,
        out: Vec<u8>,
    }

    impl Ng {
        fn u32b(&self, v: u32) -> [u8; 4] {
            if self.big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        }
        fn u16b(&self, v: u16) -> [u8; 2] {
            if self.big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        }
        /// A block: type, total length, body padded to 4 bytes, length again.
        fn block(&mut self, kind: u32, body: &[u8]) {
            let pad = (4 - body.len() % 4) % 4;
            let len = (12 + body.len() + pad) as u32;
            let (k, l) = (self.u32b(kind), self.u32b(len));
            self.out.extend_from_slice(&k);
            self.out.extend_from_slice(&l);
            self.out.extend_from_slice(body);
            self.out.extend_from_slice(&[0; 3][..pad]);
            self.out.extend_from_slice(&l);
        }
        fn section(&mut self) {
            let mut b = Vec::new();
            b.extend_from_slice(&self.u32b(0x1A2B_3C4D));
            b.extend_from_slice(&self.u16b(1));
            b.extend_from_slice(&self.u16b(0));
            b.extend_from_slice(&[0xFF; 8]); // section length unknown
            self.block(0x0A0D_0D0A, &b);
        }
        /// An interface; `tsresol` 6 = microseconds, 9 = nanoseconds.
        fn interface(&mut self, linktype: u16, tsresol: u8) {
            let mut b = Vec::new();
            b.extend_from_slice(&self.u16b(linktype));
            b.extend_from_slice(&self.u16b(0));
            b.extend_from_slice(&self.u32b(65535));
            b.extend_from_slice(&self.u16b(9)); // if_tsresol
            b.extend_from_slice(&self.u16b(1));
            b.extend_from_slice(&[tsresol, 0, 0, 0]);
            b.extend_from_slice(&[0; 4]); // opt_endofopt
            self.block(1, &b);
        }
        fn enhanced(&mut self, iface: u32, ts: u64, data: &[u8]) {
            let mut b = Vec::new();
            b.extend_from_slice(&self.u32b(iface));
            b.extend_from_slice(&self.u32b((ts >> 32) as u32));
            b.extend_from_slice(&self.u32b(ts as u32));
            b.extend_from_slice(&self.u32b(data.len() as u32));
            b.extend_from_slice(&self.u32b(data.len() as u32));
            b.extend_from_slice(data);
            b.extend_from_slice(&[0; 3][..(4 - data.len() % 4) % 4]);
            self.block(6, &b);
        }
        fn simple(&mut self, data: &[u8]) {
            let mut b = Vec::new();
            b.extend_from_slice(&self.u32b(data.len() as u32));
            b.extend_from_slice(data);
            self.block(3, &b);
        }
    }

    /// A pcapng file as dumpcap writes one: a section, an Ethernet
    /// interface with the given resolution, a name resolution block,
    /// enhanced packets, a simple packet, and a second section in the same
    /// byte order with two interfaces.
    fn pcapng_file(big: bool, tsresol: u8, frames: &[Vec<u8>]) -> Vec<u8> {
        let mut ng = Ng {
            big,
            out: Vec::new(),
        };
        ng.section();
        ng.interface(1, tsresol);
        ng.block(4, &[0; 4]); // name resolution: only nrb_record_end
        let (first, rest) = frames.split_at(frames.len() / 2);
        let unit: u64 = if tsresol == 9 {
            1_000_000_000
        } else {
            1_000_000
        };
        for (i, f) in first.iter().enumerate() {
            ng.enhanced(0, 1_700_000_000 * unit + i as u64, f);
        }
        ng.section();
        ng.interface(1, tsresol);
        ng.interface(1, 9);
        let (simple, rest) = rest.split_at(1);
        ng.simple(&simple[0]);
        for (i, f) in rest.iter().enumerate() {
            ng.enhanced((i % 2) as u32, 1_700_000_000 * unit, f);
        }
        ng.block(0x0BAD_0001, &[1, 2, 3]); // a block type we do not know
        ng.out
    }

    #[test]
    fn pcapng_in_both_byte_orders_and_resolutions() {
        let frames = sample_frames();
        let p = TmpPath::new("ng");
        for big in [false, true] {
            for tsresol in [6u8, 9] {
                std::fs::write(&p.0, pcapng_file(big, tsresol, &frames)).unwrap();
                let mut r = PcapReplay::open(&p.0)
                    .unwrap_or_else(|e| panic!("big {big} tsresol {tsresol}: {e}"));
                assert_eq!(r.len(), frames.len(), "big {big} tsresol {tsresol}");
                assert!(!r.truncated());
                for f in &frames {
                    assert!(!r.exhausted());
                    assert_eq!(r.recv(), Some(&f[..]), "big {big} tsresol {tsresol}");
                }
                assert!(r.exhausted());
                assert!(r.recv().is_none());
            }
        }
    }

    #[test]
    fn bad_pcapng_files_are_errors_not_panics() {
        let frames = sample_frames();
        let p = TmpPath::new("ngbad");
        // Not Ethernet.
        let mut ng = Ng {
            big: false,
            out: Vec::new(),
        };
        ng.section();
        ng.interface(101, 6);
        ng.enhanced(0, 0, &frames[0]);
        std::fs::write(&p.0, &ng.out).unwrap();
        let e = PcapReplay::open(&p.0).unwrap_err();
        assert!(
            matches!(e, PcapError::LinkType { linktype: 101, .. }),
            "{e:?}"
        );
        // A packet for an interface nobody described.
        let mut ng = Ng {
            big: true,
            out: Vec::new(),
        };
        ng.section();
        ng.interface(1, 6);
        ng.enhanced(3, 0, &frames[0]);
        std::fs::write(&p.0, &ng.out).unwrap();
        let e = PcapReplay::open(&p.0).unwrap_err();
        assert!(e.to_string().contains("interface 3"), "{e}");
        // Cut at every length: an error or a prefix of the frames, never a panic.
        let full = pcapng_file(false, 9, &frames[..6]);
        for cut in 0..full.len() {
            std::fs::write(&p.0, &full[..cut]).unwrap();
            if let Ok(mut r) = PcapReplay::open(&p.0) {
                let n = r.len();
                assert!(n <= 6);
                for f in &frames[..n.min(3)] {
                    assert_eq!(r.recv(), Some(&f[..]));
                }
            }
        }
        // A damaged block length in the middle ends the replay there.
        let mut bad = full.clone();
        let at = bad.len() / 2;
        bad[at..at + 8].copy_from_slice(&[0xFF; 8]);
        std::fs::write(&p.0, &bad).unwrap();
        let _ = PcapReplay::open(&p.0);
    }

    #[test]
    fn replay_says_when_it_is_exhausted() {
        let p = TmpPath::new("exhausted");
        std::fs::write(&p.0, classic_file(false, false, &sample_frames()[..2])).unwrap();
        let mut r = PcapReplay::open(&p.0).unwrap().loops(2);
        for _ in 0..4 {
            assert!(!r.exhausted());
            assert!(r.recv().is_some());
        }
        assert!(r.exhausted());
        let mut endless = PcapReplay::open(&p.0).unwrap().loops(0);
        for _ in 0..10 {
            assert!(endless.recv().is_some());
            assert!(!endless.exhausted());
        }
        // Middleware passes it on.
        let out = TmpPath::new("exhausted-out");
        let cap = CaptureWire::new(r, PcapWriter::create(&out.0).unwrap());
        assert!(cap.exhausted());
    }

    #[test]
    fn fix_checksums_repairs_what_the_nic_would_drop() {
        use hw_sim::frames::{ipv4_header_ok, l4_checksum_ok, parse, udp6_frame};
        let good = vec![
            udp_frame(60, 1),
            udp_frame(1514, 2),
            tcp_frame(100, 3, 12),
            tcp_frame(1514, 4, 0),
            udp6_frame(200, 5),
            non_ip_frame(64, 6),
        ];
        let ok = |f: &[u8]| {
            let p = parse(f);
            ipv4_header_ok(f, &p) != Some(false) && l4_checksum_ok(f, &p) != Some(false)
        };
        // Good frames stay as they are.
        for f in &good {
            assert!(ok(f));
            let mut g = f.clone();
            assert!(!fix_frame_checksums(&mut g));
            assert_eq!(&g, f);
        }
        // Offloaded checksums (the pseudo-header sum only, or garbage)
        // and a damaged IP header checksum are recomputed.
        let mut bad = good.clone();
        bad[0][40..42].copy_from_slice(&[0x12, 0x34]); // UDP
        bad[1][24..26].copy_from_slice(&[0, 0]); // IPv4 header
        bad[2][50..52].copy_from_slice(&[0xAB, 0xCD]); // TCP
        bad[3][50] ^= 0xFF;
        bad[4][60] ^= 0x55; // UDP over IPv6
        let broken = bad.clone();
        for (b, g) in bad.iter_mut().zip(&good).take(5) {
            assert!(!ok(b));
            assert!(fix_frame_checksums(b));
            assert!(ok(b));
            assert_eq!(b, g);
        }
        // Short or cut frames: no panic, nothing claimed.
        for f in &good {
            for cut in 0..f.len().min(80) {
                let mut g = f[..cut].to_vec();
                let _ = fix_frame_checksums(&mut g);
            }
        }
        // Through a replay.
        let p = TmpPath::new("fixcsum");
        std::fs::write(&p.0, classic_file(false, true, &broken)).unwrap();
        let mut r = PcapReplay::open(&p.0).unwrap();
        assert!(!ok(r.recv().unwrap()));
        let mut r = PcapReplay::open(&p.0).unwrap().fix_checksums();
        assert_eq!(r.checksums_fixed(), 5);
        for g in &good {
            assert_eq!(r.recv(), Some(&g[..]));
        }
    }

    #[test]
    fn capture_wire_records_both_directions() {
        let p = TmpPath::new("capture");
        let q = QueueWire::new();
        let a = udp_frame(60, 1);
        let b = udp_frame(70, 2);
        let c = udp_frame(80, 3);
        q.push(a.clone());
        q.push(b.clone());
        let mut cap = CaptureWire::new(q.clone(), PcapWriter::create(&p.0).unwrap());
        assert_eq!(cap.recv(), Some(&a[..]));
        cap.send(&c); // not captured by default
        assert_eq!(cap.recv(), Some(&b[..]));
        assert!(cap.recv().is_none()); // idle: flushed
        assert_eq!(cap.writer().frames(), 2);
        assert_eq!(cap.write_errors(), 0);
        assert_eq!(q.take_sent(), vec![c.clone()]);
        assert!(cap.name().starts_with("capture("));
        assert!(cap.name().ends_with(" over queue"));
        assert!(format!("{cap:?}").contains("CaptureWire"));
        let mut r = PcapReplay::open(&p.0).unwrap();
        assert_eq!(r.recv(), Some(&a[..]));
        assert_eq!(r.recv(), Some(&b[..]));
        assert!(r.recv().is_none());

        let mut cap = cap.capture_sent(true);
        cap.send(&c);
        assert_eq!(cap.inner().take_sent(), vec![c.clone()]);
        let (_q, w) = cap.into_parts();
        assert_eq!(w.frames(), 3);
        drop(w);
        let r = PcapReplay::open(&p.0).unwrap();
        assert_eq!(r.len(), 3);
    }

    /// Under `CI=true` a test that cannot run fails; otherwise it says so
    /// on stderr, past libtest's output capture.
    fn skip_or_fail(why: &str) {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true and this test cannot run: {why}");
        }
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "SKIP: {why}");
    }

    #[test]
    fn tcpdump_reads_our_files() {
        let Ok(out) = std::process::Command::new("tcpdump")
            .arg("--version")
            .output()
        else {
            skip_or_fail("tcpdump is not installed (apt-get install tcpdump)");
            return;
        };
        if !out.status.success() {
            skip_or_fail("tcpdump --version failed");
            return;
        }
        let p = TmpPath::new("tcpdump");
        let mut w = PcapWriter::create(&p.0).unwrap();
        for i in 0..5 {
            w.write(&udp_frame(100, i)).unwrap();
        }
        drop(w);
        let out = std::process::Command::new("tcpdump")
            .arg("-nr")
            .arg(&p.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.contains("UDP"), "{text}");
    }
}
