//! One AF_XDP socket on one queue, with a page pool's memory as its UMEM,
//! split into the receive half ([`XdpRx`]: fill and RX rings) and the
//! transmit half ([`XdpTx`]: TX and completion rings) so a stack can borrow
//! them separately, as it does an igb ring pair.
//!
//! UMEM layout: the pool's area, one 4 KiB chunk per pool page (chunk `i`
//! is buffer `i`). The fill ring gets chunk addresses; in aligned mode the
//! kernel places a frame at `chunk + UMEM headroom + XDP_PACKET_HEADROOM`
//! (256), so with UMEM headroom `pool headroom - 256` the frame starts at
//! the pool buffer's first byte. Every RX descriptor's address is checked
//! against the buffer posted in its chunk; a frame elsewhere is dropped
//! and counted (`misplaced`), never handed out.
//!
//! Each half keeps the [`Buf`] of every chunk it gave the kernel in a table
//! by chunk index, so the page goes back to the pool as the same `Buf`.
//! When a half stops it parks those buffers with the socket; the socket,
//! once both halves are gone, closes (after which the kernel no longer
//! touches the UMEM) and only then returns the parked buffers to the pool.
//! TX buffers are pages of the same pool, set aside at open.
//!
//! Multi-buffer (`XDP_USE_SG`, [`XskConfig::multi_buffer`]): a frame larger
//! than one UMEM frame comes as a run of RX descriptors chained with
//! `XDP_PKT_CONTD`, every one placed like a single frame (at its posted
//! buffer's first byte, up to the chunk's end); [`Chain`] assembles the run
//! into one frame of several segments. The pool's buffers must then end at
//! their chunk's end (`buf_len + headroom == CHUNK`), since the kernel
//! fills each descriptor's frame up to the chunk's end before it starts
//! the next. On TX a frame of several buffers goes out as several
//! descriptors chained the same way.

use crate::chain::{Chain, Step};
use crate::ring::Ring;
use crate::sys::{self, XdpDesc};
use crate::XdpError;
use driver::{Buf, BufPool, BufReturn, PageArea, RxBatch, RxStats, TxBuf, TxStats};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// UMEM chunk size: one page per frame.
pub const CHUNK: usize = 4096;

/// Descriptors one transmitted frame may take with multi-buffer. The
/// kernel takes at most `MAX_SKB_FRAGS` + 1 (18 with the default
/// `CONFIG_MAX_SKB_FRAGS` of 17) and counts a longer frame invalid; 17
/// stays within that, and is already 51 KiB of 3 KiB buffers.
pub const MAX_TX_DESCS: usize = 17;

/// The largest frame a multi-buffer RX run may assemble: an IP packet of
/// the largest total length (65535; generic XDP can see GRO's packets)
/// behind an Ethernet header with a VLAN tag. A longer run is dropped.
const MAX_RX_FRAME: usize = 65_535 + 18;

/// How the socket was bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindMode {
    ZeroCopy,
    Copy,
}

impl BindMode {
    pub fn name(self) -> &'static str {
        match self {
            BindMode::ZeroCopy => "zerocopy",
            BindMode::Copy => "copy",
        }
    }
}

/// What to open.
#[derive(Clone, Debug)]
pub struct XskConfig {
    pub ifname: String,
    pub ifindex: u32,
    pub queue: u32,
    /// Fill and RX ring entries (a power of two).
    pub rx_ring: u32,
    /// TX and completion ring entries (a power of two); 0: receive only.
    pub tx_ring: u32,
    /// Pages of the pool set aside for transmission.
    pub tx_bufs: usize,
    /// Busy polling: the socket's `SO_BUSY_POLL` in microseconds, with
    /// `SO_PREFER_BUSY_POLL` and a budget of the RX ring's batch; an empty
    /// poll then drives the device's NAPI from our thread (`recvfrom`).
    /// `None`: the kernel's softirq does the receive work.
    pub busy_poll_us: Option<u32>,
    /// Bind with `XDP_USE_SG`: frames larger than one buffer arrive, and
    /// may be sent, as chains of descriptors. Needs the pool's buffers to
    /// end at their chunk's end; a kernel that refuses it is
    /// [`XdpError::NoMultiBuffer`].
    pub multi_buffer: bool,
}

/// Counters of the AF_XDP path that the igb counters do not have.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpQueueStats {
    /// RX descriptors whose address was not the posted buffer's first
    /// byte: dropped (also counted as `rx_error` drops).
    pub misplaced: u64,
    /// RX descriptors naming a chunk we had not posted: ignored (a frame
    /// of several descriptors with one is dropped, as `rx_error`).
    pub unknown_addr: u64,
    /// Frames received in several descriptors (multi-buffer), delivered.
    pub rx_multi_buffer: u64,
    /// Wake-ups of the kernel for the fill ring, and busy-poll rounds
    /// (`recvfrom`).
    pub rx_wakeups: u64,
    /// Wake-ups for the TX ring (`sendto`).
    pub tx_wakeups: u64,
    /// The kernel's counters for the socket (`XDP_STATISTICS`).
    pub kernel: sys::XdpStatistics,
}

/// The socket, shared by its two halves.
struct XskSocket {
    fd: Option<OwnedFd>,
    /// Buffers of stopped halves, returned to the pool once the socket is
    /// closed.
    parked: Mutex<Vec<Buf>>,
    /// The pool's foreign return path; holding it keeps the UMEM mapped
    /// (see [`PageArea`]) until the socket is closed.
    returner: Arc<dyn BufReturn>,
}

impl XskSocket {
    fn raw(&self) -> i32 {
        self.fd.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    fn park(&self, bufs: impl IntoIterator<Item = Buf>) {
        self.parked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(bufs);
    }
}

impl Drop for XskSocket {
    fn drop(&mut self) {
        // Close first (both halves have unmapped their rings): the kernel
        // unbinds the socket and stops using the UMEM before close returns.
        drop(self.fd.take());
        let mut parked = std::mem::take(self.parked.get_mut().unwrap_or_else(|e| e.into_inner()));
        self.returner.give_back(&mut parked);
    }
}

/// Chunk index of a pool buffer and its byte offset in the UMEM.
fn locate(base: usize, len: usize, buf: &Buf) -> Option<(usize, u64)> {
    let off = (buf.as_ptr() as usize).checked_sub(base)?;
    (off < len).then_some((off / CHUNK, off as u64))
}

/// What [`open`] gives: the receive half, the transmit half (when asked
/// for) and how the socket was bound.
pub type Opened<P, H> = (XdpRx<P, H>, Option<XdpTx>, BindMode);

/// Opens the socket on `cfg.queue` with `pages`' area as UMEM and returns
/// its halves (no TX half when `cfg.tx_ring` is 0), each ready to use.
pub fn open<P: PageArea, H: BufPool>(
    cfg: &XskConfig,
    mut pages: P,
    hdrs: H,
) -> Result<Opened<P, H>, XdpError> {
    let headroom = pages.headroom();
    if headroom < sys::XDP_PACKET_HEADROOM || pages.buf_len() + headroom > CHUNK {
        return Err(XdpError::Config(format!(
            "--headroom {headroom}: AF_XDP places frames {} bytes into a chunk, so the pool's headroom must be at least that",
            sys::XDP_PACKET_HEADROOM
        )));
    }
    if cfg.multi_buffer && pages.buf_len() + headroom != CHUNK {
        // The kernel fills a descriptor up to the chunk's end before it
        // chains the next: a shorter buffer would overflow.
        return Err(XdpError::Config(format!(
            "multi-buffer AF_XDP needs buffers that end at their page's end: {} B after {headroom} B of headroom is not {CHUNK}",
            pages.buf_len()
        )));
    }
    let (area, area_len) = pages.area();
    let base = area.as_ptr() as usize;
    let chunks = area_len / CHUNK;
    let fd = sys::xsk_socket().map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => XdpError::Permission(format!("socket(AF_XDP): {e}")),
        _ => XdpError::sys("socket(AF_XDP)", e),
    })?;
    let raw = fd.as_raw_fd();
    let reg = sys::XdpUmemReg {
        addr: base as u64,
        len: (chunks * CHUNK) as u64,
        chunk_size: CHUNK as u32,
        headroom: (headroom - sys::XDP_PACKET_HEADROOM) as u32,
        flags: 0,
        tx_metadata_len: 0,
    };
    sys::setsockopt(raw, sys::XDP_UMEM_REG, &reg).map_err(|e| XdpError::sys("XDP_UMEM_REG", e))?;
    let comp_size = cfg.tx_ring.max(1).next_power_of_two().max(8);
    sys::setsockopt(raw, sys::XDP_UMEM_FILL_RING, &cfg.rx_ring)
        .map_err(|e| XdpError::sys("XDP_UMEM_FILL_RING", e))?;
    sys::setsockopt(raw, sys::XDP_UMEM_COMPLETION_RING, &comp_size)
        .map_err(|e| XdpError::sys("XDP_UMEM_COMPLETION_RING", e))?;
    sys::setsockopt(raw, sys::XDP_RX_RING, &cfg.rx_ring)
        .map_err(|e| XdpError::sys("XDP_RX_RING", e))?;
    if cfg.tx_ring > 0 {
        sys::setsockopt(raw, sys::XDP_TX_RING, &cfg.tx_ring)
            .map_err(|e| XdpError::sys("XDP_TX_RING", e))?;
    }
    let (off, _) = sys::getsockopt::<sys::XdpMmapOffsets>(raw, sys::XDP_MMAP_OFFSETS)
        .map_err(|e| XdpError::sys("XDP_MMAP_OFFSETS", e))?;
    let map_err = |what: &'static str| move |e| XdpError::sys(what, e);
    let fill = Ring::<u64>::map(raw, &off.fr, cfg.rx_ring, sys::XDP_UMEM_PGOFF_FILL_RING)
        .map_err(map_err("mmap fill ring"))?;
    let comp = Ring::<u64>::map(raw, &off.cr, comp_size, sys::XDP_UMEM_PGOFF_COMPLETION_RING)
        .map_err(map_err("mmap completion ring"))?;
    let rx = Ring::<XdpDesc>::map(raw, &off.rx, cfg.rx_ring, sys::XDP_PGOFF_RX_RING)
        .map_err(map_err("mmap RX ring"))?;
    let tx = if cfg.tx_ring > 0 {
        Some(
            Ring::<XdpDesc>::map(raw, &off.tx, cfg.tx_ring, sys::XDP_PGOFF_TX_RING)
                .map_err(map_err("mmap TX ring"))?,
        )
    } else {
        None
    };
    let sg = if cfg.multi_buffer { sys::XDP_USE_SG } else { 0 };
    let mut addr = sys::SockaddrXdp {
        family: sys::AF_XDP as u16,
        flags: sys::XDP_ZEROCOPY | sys::XDP_USE_NEED_WAKEUP | sg,
        ifindex: cfg.ifindex,
        queue_id: cfg.queue,
        shared_umem_fd: 0,
    };
    let bind_err = |e: std::io::Error| match e.raw_os_error() {
        Some(libc::EBUSY) => XdpError::QueueBusy {
            ifname: cfg.ifname.clone(),
            queue: cfg.queue,
        },
        Some(libc::EPERM | libc::EACCES) => XdpError::Permission(format!("bind(AF_XDP): {e}")),
        // Before 6.6 the flag is unknown (EINVAL); a driver may refuse it.
        Some(libc::EINVAL | libc::EOPNOTSUPP) if cfg.multi_buffer => {
            XdpError::NoMultiBuffer(format!("bind with XDP_USE_SG: {e}"))
        }
        _ => XdpError::sys(&format!("bind to {} queue {}", cfg.ifname, cfg.queue), e),
    };
    // EBUSY: another socket holds the queue, or held it until just now
    // (the kernel frees a closed socket's hold on its queue in deferred
    // work, so a restarted rxsink may find it taken for a moment).
    let deadline = Instant::now() + BUSY_WAIT;
    let mode = loop {
        addr.flags = sys::XDP_ZEROCOPY | sys::XDP_USE_NEED_WAKEUP | sg;
        let e = match sys::xsk_bind(raw, &addr) {
            Ok(()) => break BindMode::ZeroCopy,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => e,
            Err(e) => {
                tracing::debug!("zero-copy bind on {}: {e}; trying copy mode", cfg.ifname);
                addr.flags = sys::XDP_COPY | sys::XDP_USE_NEED_WAKEUP | sg;
                match sys::xsk_bind(raw, &addr) {
                    Ok(()) => break BindMode::Copy,
                    Err(e) => e,
                }
            }
        };
        if e.raw_os_error() != Some(libc::EBUSY) || Instant::now() >= deadline {
            return Err(bind_err(e));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(us) = cfg.busy_poll_us {
        for (opt, val, what) in [
            (sys::SO_PREFER_BUSY_POLL, 1, "SO_PREFER_BUSY_POLL"),
            (sys::SO_BUSY_POLL, us as i32, "SO_BUSY_POLL"),
            (sys::SO_BUSY_POLL_BUDGET, 64, "SO_BUSY_POLL_BUDGET"),
        ] {
            sys::setsockopt_sol_socket(raw, opt, val).map_err(|e| XdpError::sys(what, e))?;
        }
    }
    // TX buffers: pages of the same pool (same UMEM), set aside now.
    let mut tx_free = Vec::with_capacity(cfg.tx_bufs);
    if tx.is_some() {
        for _ in 0..cfg.tx_bufs {
            match pages.alloc() {
                Some(b) => tx_free.push(b),
                None => break,
            }
        }
    }
    let sock = Arc::new(XskSocket {
        fd: Some(fd),
        parked: Mutex::new(Vec::new()),
        returner: pages.returner(),
    });
    let txh = tx.map(|ring| XdpTx {
        sock: Some(sock.clone()),
        returner: pages.returner(),
        tx: Some(ring),
        comp: Some(comp),
        buf_len: pages.buf_len(),
        in_flight: (0..chunks).map(|_| None).collect(),
        n_in_flight: 0,
        free: tx_free,
        scratch: Vec::new(),
        base,
        area_len: chunks * CHUNK,
        queue: cfg.queue,
        stats: TxStats::default(),
        wakeups: 0,
        multi_buffer: cfg.multi_buffer,
        stopped: false,
    });
    let rx_max_descs = if cfg.multi_buffer {
        MAX_RX_FRAME.div_ceil(pages.buf_len().max(1))
    } else {
        1
    };
    let mut rxh = XdpRx {
        sock: Some(sock),
        fill: Some(fill),
        rx: Some(rx),
        posted: (0..chunks).map(|_| None).collect(),
        n_posted: 0,
        spares: Vec::with_capacity(cfg.rx_ring as usize),
        pages,
        hdrs,
        base,
        area_len: chunks * CHUNK,
        queue: cfg.queue,
        ring_id: driver::new_ring_id(),
        stats: RxStats::default(),
        xstats: XdpQueueStats::default(),
        busy_poll: cfg.busy_poll_us.is_some(),
        chain: Chain::new(rx_max_descs),
        stopped: false,
    };
    rxh.refill();
    Ok((rxh, txh, mode))
}

/// The receive half: fill ring fed from the pool, RX ring drained into
/// [`RxBatch`]es like an igb ring's.
pub struct XdpRx<P: PageArea, H: BufPool> {
    sock: Option<Arc<XskSocket>>,
    fill: Option<Ring<u64>>,
    rx: Option<Ring<XdpDesc>>,
    /// The buffer of every chunk given to the kernel, by chunk index.
    posted: Vec<Option<Buf>>,
    n_posted: usize,
    /// Buffers of recycled batches, posted again before the pool is asked.
    spares: Vec<Buf>,
    pages: P,
    /// Unused by AF_XDP (frames are never split); kept so the queue has
    /// the same pools as an igb queue.
    hdrs: H,
    base: usize,
    area_len: usize,
    queue: u32,
    ring_id: u64,
    stats: RxStats,
    xstats: XdpQueueStats,
    /// Drive the NAPI with `recvfrom` when a poll finds nothing.
    busy_poll: bool,
    /// The multi-buffer frame being assembled (frames of one descriptor
    /// without multi-buffer: a chained one is dropped).
    chain: Chain<Buf>,
    stopped: bool,
}

impl<P: PageArea, H: BufPool> XdpRx<P, H> {
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Entries of the fill ring: the buffers the kernel may hold, as an igb
    /// ring's descriptors (0 once stopped).
    pub fn ring_size(&self) -> usize {
        self.fill.as_ref().map_or(0, |f| f.size() as usize)
    }

    /// An empty batch tied to this queue's pools.
    pub fn new_batch(&self, capacity: usize) -> RxBatch {
        RxBatch::for_ring(
            capacity,
            self.ring_id,
            self.pages.returner(),
            self.hdrs.returner(),
        )
    }

    /// Moves up to `budget` received descriptors into `batch` as frames
    /// (a multi-buffer frame's descriptors as one frame of several
    /// segments; a frame whose run continues past this poll is finished by
    /// the next), then refills the fill ring. Returns the frames delivered.
    pub fn poll(&mut self, batch: &mut RxBatch, budget: usize) -> usize {
        let Some(rx) = self.rx.as_mut() else {
            return 0;
        };
        let n = rx.ready().min(budget as u32);
        let mut delivered = 0;
        let spares = &mut self.spares;
        for i in 0..n {
            let d = rx.read(i);
            self.stats.descriptors += 1;
            let contd = d.options & sys::XDP_PKT_CONTD != 0;
            let chunk = (d.addr as usize) / CHUNK;
            let buf = self.posted.get_mut(chunk).and_then(Option::take);
            let fault = match &buf {
                None => {
                    self.xstats.unknown_addr += 1;
                    if !contd && !self.chain.is_open() {
                        // A lone descriptor naming nothing of ours: ignored.
                        continue;
                    }
                    None
                }
                Some(buf) => {
                    self.n_posted -= 1;
                    if d.addr as usize != buf.as_ptr() as usize - self.base {
                        self.xstats.misplaced += 1;
                        Some(driver::DropReason::RxError)
                    } else if d.len as usize > buf.capacity() {
                        Some(driver::DropReason::PktLenOverflow)
                    } else if d.len == 0 {
                        Some(driver::DropReason::ZeroLength)
                    } else {
                        None
                    }
                }
            };
            if !contd && !self.chain.is_open() {
                // A frame in one descriptor: the common case.
                let Some(buf) = buf else { continue };
                match fault {
                    Some(reason) => {
                        self.stats.drops[reason as usize] += 1;
                        spares.push(buf);
                    }
                    None => {
                        self.stats.packets += 1;
                        self.stats.bytes += d.len as u64;
                        batch.push_frame(buf, d.len as u16);
                        delivered += 1;
                    }
                }
                continue;
            }
            let part = buf.map(|b| (b, d.len as u16));
            match self.chain.push(part, fault, contd, &mut |b| spares.push(b)) {
                Step::More => {}
                Step::Dropped(reason) => self.stats.drops[reason as usize] += 1,
                Step::Frame => {
                    let len = batch.push_frame_segs(self.chain.drain());
                    self.stats.packets += 1;
                    self.stats.bytes += len as u64;
                    self.xstats.rx_multi_buffer += 1;
                    delivered += 1;
                }
            }
        }
        if n > 0 {
            rx.release(n);
        }
        self.refill();
        if n == 0 && self.busy_poll {
            if let Some(s) = &self.sock {
                sys::kick_rx(s.raw());
                self.xstats.rx_wakeups += 1;
            }
        }
        delivered
    }

    /// Posts spares, then pool pages, into every free fill ring entry;
    /// wakes the kernel if it asked.
    fn refill(&mut self) {
        let Some(fill) = self.fill.as_mut() else {
            return;
        };
        let room = fill.free();
        let mut n = 0u32;
        let (base, len) = (self.base, self.area_len);
        let posted = &mut self.posted;
        let mut post = |b: Buf, n: &mut u32, fill: &mut Ring<u64>| {
            let Some((chunk, _)) = locate(base, len, &b) else {
                // Not from our area: cannot happen with a PageArea pool.
                return Some(b);
            };
            fill.write(*n, (chunk * CHUNK) as u64);
            posted[chunk] = Some(b);
            *n += 1;
            None
        };
        while n < room {
            let Some(b) = self.spares.pop() else { break };
            if let Some(b) = post(b, &mut n, fill) {
                self.pages.recycle(b);
            }
        }
        if n < room {
            let want = (room - n) as usize;
            let mut stray = Vec::new();
            let got = self.pages.alloc_bulk(want, |b| {
                if let Some(b) = post(b, &mut n, fill) {
                    stray.push(b);
                }
            });
            for b in stray {
                self.pages.recycle(b);
            }
            if got < want {
                self.stats.refill_short += 1;
            }
        }
        if n > 0 {
            fill.submit(n);
            self.n_posted += n as usize;
            self.stats.doorbells += 1;
        }
        if fill.needs_wakeup() {
            if let Some(s) = &self.sock {
                sys::kick_rx(s.raw());
                self.xstats.rx_wakeups += 1;
            }
        }
    }

    /// Takes back every buffer of `batch` (owner path) and empties it.
    pub fn recycle(&mut self, batch: &mut RxBatch) {
        if batch.ring_id() != self.ring_id {
            batch.give_back();
            return;
        }
        let cap = if self.stopped {
            0
        } else {
            self.fill.as_ref().map_or(0, |f| f.size() as usize)
        };
        let (spares, pages, hdrs) = (&mut self.spares, &mut self.pages, &mut self.hdrs);
        batch.drain_bufs(
            |h| hdrs.recycle(h),
            |p| {
                if spares.len() < cap {
                    spares.push(p)
                } else {
                    pages.recycle(p)
                }
            },
        );
    }

    pub fn stats(&self) -> &RxStats {
        &self.stats
    }

    /// The AF_XDP counters, the kernel's read now (while the socket is
    /// open; the last values read after it closed).
    pub fn xdp_stats(&mut self) -> XdpQueueStats {
        if let Some(s) = &self.sock {
            if let Ok((k, _)) = sys::getsockopt::<sys::XdpStatistics>(s.raw(), sys::XDP_STATISTICS)
            {
                self.xstats.kernel = k;
            }
        }
        self.xstats
    }

    pub fn pools(&mut self) -> (&mut P, &mut H) {
        (&mut self.pages, &mut self.hdrs)
    }

    /// Buffers given to the kernel and not yet received.
    pub fn posted(&self) -> usize {
        self.n_posted
    }

    /// The socket's descriptor (for the XSKMAP), -1 once stopped.
    pub fn socket_fd(&self) -> i32 {
        self.sock.as_ref().map_or(-1, |s| s.raw())
    }

    /// Stops receiving: unmaps the rings, parks every posted buffer with
    /// the socket and lets go of it (the socket closes, and the parked
    /// buffers go home, when the TX half has let go too). Idempotent.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.xdp_stats();
        self.stopped = true;
        self.rx = None;
        self.fill = None;
        // A multi-buffer frame whose run never ended: lost, counted.
        let pages = &mut self.pages;
        if self.chain.abort(&mut |b| pages.recycle(b)) {
            self.stats.drops[driver::DropReason::NoEop as usize] += 1;
        }
        for b in self.spares.drain(..) {
            self.pages.recycle(b);
        }
        let posted: Vec<Buf> = self.posted.iter_mut().filter_map(Option::take).collect();
        self.n_posted = 0;
        if let Some(s) = self.sock.take() {
            s.park(posted);
        }
    }
}

impl<P: PageArea, H: BufPool> Drop for XdpRx<P, H> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long [`open`] retries a bind refused with EBUSY.
const BUSY_WAIT: Duration = Duration::from_millis(1000);

/// How long [`XdpTx::stop`] waits for the kernel to complete what was
/// posted.
const TX_DRAIN: Duration = Duration::from_millis(200);

/// The transmit half: frames posted on the TX ring, buffers reclaimed from
/// the completion ring. Same method names as the igb `TxRing`.
pub struct XdpTx {
    sock: Option<Arc<XskSocket>>,
    /// The pool's foreign path, for buffers freed after [`XdpTx::stop`].
    returner: Arc<dyn BufReturn>,
    tx: Option<Ring<XdpDesc>>,
    comp: Option<Ring<u64>>,
    buf_len: usize,
    /// Buffers the kernel holds, by chunk index.
    in_flight: Vec<Option<Buf>>,
    n_in_flight: usize,
    free: Vec<Buf>,
    /// The frame being looked at in `send`.
    scratch: Vec<TxBuf>,
    base: usize,
    area_len: usize,
    queue: u32,
    stats: TxStats,
    wakeups: u64,
    /// Frames of several buffers go out as chained descriptors.
    multi_buffer: bool,
    stopped: bool,
}

impl XdpTx {
    /// A buffer to build a frame in (none once stopped).
    pub fn alloc(&mut self) -> Option<Buf> {
        if self.stopped {
            return None;
        }
        self.free.pop()
    }

    /// Returns an unused buffer (once stopped, straight to the pool: the
    /// kernel never had it).
    pub fn free(&mut self, buf: Buf) {
        if self.stopped {
            self.returner.give_back(&mut vec![buf]);
        } else {
            self.free.push(buf)
        }
    }

    pub fn buf_len(&self) -> usize {
        self.buf_len
    }

    /// TX ring entries free now.
    pub fn free_slots(&mut self) -> usize {
        self.tx.as_mut().map_or(0, |t| t.free() as usize)
    }

    pub fn in_flight(&self) -> usize {
        self.n_in_flight
    }

    pub fn stats(&self) -> &TxStats {
        &self.stats
    }

    /// Wake-ups for the TX ring (`sendto`).
    pub fn wakeups(&self) -> u64 {
        self.wakeups
    }

    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Posts whole frames from the front of `bufs` while they fit, then
    /// kicks the kernel if it asked. A frame of several buffers goes out
    /// as that many descriptors chained with `XDP_PKT_CONTD` when the
    /// socket is multi-buffer (at most [`MAX_TX_DESCS`]), and is refused
    /// otherwise (counted in `invalid`, as is a frame with a buffer that
    /// is not ours, empty or overlong); posted and refused buffers are
    /// removed from `bufs`. Returns the frames posted.
    pub fn send(&mut self, bufs: &mut Vec<TxBuf>) -> usize {
        let Some(tx) = self.tx.as_mut() else {
            return 0;
        };
        let room = tx.free();
        let mut n = 0u32;
        let mut frames = 0;
        let mut it = std::mem::take(bufs).into_iter();
        let frame = &mut self.scratch;
        let max_descs = if self.multi_buffer { MAX_TX_DESCS } else { 1 };
        while let Some(b) = it.next() {
            let eop = b.eop;
            frame.push(b);
            if !eop {
                continue;
            }
            let (base, len) = (self.base, self.area_len);
            let valid = frame.len() <= max_descs
                && frame.iter().all(|b| {
                    b.len > 0
                        && b.len as usize <= b.buf.capacity()
                        && locate(base, len, &b.buf).is_some()
                });
            if !valid {
                self.stats.invalid += 1;
                self.free.extend(frame.drain(..).map(|b| b.buf));
                continue;
            }
            if n + frame.len() as u32 > room {
                bufs.append(frame);
                bufs.extend(it.by_ref());
                break;
            }
            let last = frame.len() - 1;
            for (i, b) in frame.drain(..).enumerate() {
                let Some((chunk, off)) = locate(base, len, &b.buf) else {
                    continue; // checked above
                };
                tx.write(
                    n,
                    XdpDesc {
                        addr: off,
                        len: b.len as u32,
                        options: if i < last { sys::XDP_PKT_CONTD } else { 0 },
                    },
                );
                n += 1;
                self.stats.bytes += b.len as u64;
                self.stats.descriptors += 1;
                self.in_flight[chunk] = Some(b.buf);
                self.n_in_flight += 1;
            }
            self.stats.packets += 1;
            frames += 1;
        }
        // A last frame without EOP stays with the caller.
        bufs.append(frame);
        if n > 0 {
            tx.submit(n);
        }
        self.kick();
        frames
    }

    /// Asks the kernel to transmit when it wants to be asked.
    fn kick(&mut self) {
        let (Some(tx), Some(s)) = (self.tx.as_mut(), &self.sock) else {
            return;
        };
        if tx.outstanding() > 0 && tx.needs_wakeup() {
            self.wakeups += 1;
            self.stats.doorbells += 1;
            if let Err(e) = sys::kick_tx(s.raw()) {
                tracing::debug!(queue = self.queue, "AF_XDP TX kick: {e}");
            }
        }
    }

    /// Reclaims completed buffers. Returns how many.
    pub fn clean(&mut self) -> usize {
        let Some(comp) = self.comp.as_mut() else {
            return 0;
        };
        let n = comp.ready();
        for i in 0..n {
            let addr = comp.read(i) as usize;
            if let Some(b) = self.in_flight.get_mut(addr / CHUNK).and_then(Option::take) {
                self.n_in_flight -= 1;
                self.free.push(b);
            }
        }
        if n > 0 {
            comp.release(n);
        }
        self.stats.cleaned += n as u64;
        if self.n_in_flight > 0 {
            self.kick();
        }
        n as usize
    }

    /// Stops transmitting: waits briefly for completions, unmaps the rings,
    /// parks every buffer with the socket and lets go of it. Idempotent.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let deadline = Instant::now() + TX_DRAIN;
        while self.n_in_flight > 0 && Instant::now() < deadline {
            if self.clean() == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.tx = None;
        self.comp = None;
        let mut all: Vec<Buf> = self.free.drain(..).collect();
        all.extend(self.in_flight.iter_mut().filter_map(Option::take));
        self.n_in_flight = 0;
        if let Some(s) = self.sock.take() {
            s.park(all);
        }
    }
}

impl Drop for XdpTx {
    fn drop(&mut self) {
        self.stop();
    }
}
