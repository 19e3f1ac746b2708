//! Fault injection middleware: [`FaultWire`] and its [`FaultConfig`].

use hw_sim::frames::ETH_HLEN;
use hw_sim::Wire;
use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// Largest reorder window accepted.
pub const MAX_REORDER: usize = 65536;
/// A partial reorder window is released after this many consecutive `recv`
/// calls during which its source was quiet.
pub const IDLE_FLUSH: u32 = 8;
/// Most frames taken from the inner wire in one `recv` call (bounds the
/// work of a call when everything is dropped or held).
const MAX_PULLS: usize = 64;
/// Bytes a frame occupies on the wire beyond its length: preamble and SFD
/// (8), FCS (4), inter-frame gap (12).
pub const WIRE_OVERHEAD: usize = 24;
/// The token bucket always holds at least one frame this long (plus overhead).
const MAX_FRAME: usize = 16384;

/// What [`FaultWire`] does to frames. `Default` is no fault at all.
///
/// The text form, accepted by [`FromStr`] and produced by [`Display`](fmt::Display),
/// is a comma separated list of `key=value` in any order, each key at most
/// once, any subset: `drop=PCT,dup=PCT,reorder=N,corrupt=PCT,rate=MBPS,seed=N`.
/// Percentages are 0..=100 and may carry a `%` suffix; `reorder` is a window
/// in frames (0 = off, at most [`MAX_REORDER`]); `rate` is in Mbit/s (> 0;
/// leave it out for no limit); `seed` is decimal or `0x` hex.
///
/// ```
/// use wires::FaultConfig;
/// let c: FaultConfig = "reorder=8, drop=0.5%, seed=0x10".parse().unwrap();
/// assert_eq!((c.drop, c.reorder, c.seed), (0.5, 8, 16));
/// assert_eq!(c.to_string().parse::<FaultConfig>().unwrap(), c);
/// let e = "drop=101".parse::<FaultConfig>().unwrap_err();
/// assert_eq!(e.key, "drop");
/// assert!(e.to_string().contains("0..=100"));
/// assert!("colour=red".parse::<FaultConfig>().is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultConfig {
    /// Percentage of frames lost, 0..=100.
    pub drop: f64,
    /// Percentage of frames delivered twice, 0..=100.
    pub dup: f64,
    /// Reorder window in frames; 0 or 1 = no reordering.
    pub reorder: usize,
    /// Percentage of frames with 1..=3 bits flipped after the Ethernet
    /// header, 0..=100.
    pub corrupt: f64,
    /// Rate limit on frames towards the NIC in Mbit/s (`None` = unlimited).
    pub rate_mbps: Option<f64>,
    /// Seed of the PRNG streams (one per direction).
    pub seed: u64,
}

/// An invalid [`FaultConfig`] or fault string: which key, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultConfigError {
    /// The offending key (or the whole item when it is not `key=value`).
    pub key: String,
    pub reason: String,
}

impl fmt::Display for FaultConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fault option `{}`: {}", self.key, self.reason)
    }
}

impl std::error::Error for FaultConfigError {}

fn config_err(key: &str, reason: impl Into<String>) -> FaultConfigError {
    FaultConfigError {
        key: key.to_string(),
        reason: reason.into(),
    }
}

fn check_pct(key: &str, v: f64) -> Result<f64, FaultConfigError> {
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(config_err(
            key,
            format!("{v} is not a percentage in 0..=100"),
        ))
    }
}

fn parse_pct(key: &str, val: &str) -> Result<f64, FaultConfigError> {
    let num = val.strip_suffix('%').unwrap_or(val).trim();
    let v: f64 = num.parse().map_err(|_| {
        config_err(
            key,
            format!("`{val}` is not a number (expected a percentage in 0..=100)"),
        )
    })?;
    check_pct(key, v)
}

impl FaultConfig {
    /// Checks ranges: percentages in 0..=100, `reorder` at most
    /// [`MAX_REORDER`], `rate_mbps` finite and positive.
    pub fn validate(&self) -> Result<(), FaultConfigError> {
        check_pct("drop", self.drop)?;
        check_pct("dup", self.dup)?;
        check_pct("corrupt", self.corrupt)?;
        if self.reorder > MAX_REORDER {
            return Err(config_err(
                "reorder",
                format!("window {} too large: at most {MAX_REORDER}", self.reorder),
            ));
        }
        if let Some(r) = self.rate_mbps {
            if !(r.is_finite() && r > 0.0) {
                return Err(config_err(
                    "rate",
                    format!("{r} Mbit/s invalid: must be a positive number (leave `rate` out for no limit)"),
                ));
            }
        }
        Ok(())
    }

    /// Frames towards the NIC need no copy: at most `drop` is configured.
    fn passthrough_rx(&self) -> bool {
        self.dup == 0.0 && self.corrupt == 0.0 && self.reorder < 2 && self.rate_mbps.is_none()
    }
}

impl FromStr for FaultConfig {
    type Err = FaultConfigError;

    fn from_str(s: &str) -> Result<FaultConfig, FaultConfigError> {
        let mut cfg = FaultConfig::default();
        let mut seen: Vec<&str> = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, val) = item
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| config_err(item, "expected key=value"))?;
            if seen.contains(&key) {
                return Err(config_err(key, "given more than once"));
            }
            match key {
                "drop" => cfg.drop = parse_pct(key, val)?,
                "dup" => cfg.dup = parse_pct(key, val)?,
                "corrupt" => cfg.corrupt = parse_pct(key, val)?,
                "reorder" => {
                    cfg.reorder = val.parse().map_err(|_| {
                        config_err(
                            key,
                            format!("`{val}` is not a frame count (0..={MAX_REORDER})"),
                        )
                    })?
                }
                "rate" => {
                    let r: f64 = val.parse().map_err(|_| {
                        config_err(key, format!("`{val}` is not a number of Mbit/s"))
                    })?;
                    cfg.rate_mbps = Some(r);
                }
                "seed" => {
                    let v = match val.strip_prefix("0x").or_else(|| val.strip_prefix("0X")) {
                        Some(hex) => u64::from_str_radix(hex, 16),
                        None => val.parse(),
                    };
                    cfg.seed = v.map_err(|_| {
                        config_err(key, format!("`{val}` is not a 64-bit unsigned integer"))
                    })?;
                }
                _ => {
                    return Err(config_err(
                        key,
                        "unknown key (expected drop, dup, reorder, corrupt, rate or seed)",
                    ))
                }
            }
            seen.push(key);
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

impl fmt::Display for FaultConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "drop={}%,dup={}%,reorder={},corrupt={}%",
            self.drop, self.dup, self.reorder, self.corrupt
        )?;
        if let Some(r) = self.rate_mbps {
            write!(f, ",rate={r}")?;
        }
        write!(f, ",seed={}", self.seed)
    }
}

/// Counters of one direction, a snapshot of [`FaultStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Frames that entered the fault stage.
    pub seen: u64,
    pub dropped: u64,
    /// Frames delivered twice (each counts once here).
    pub duplicated: u64,
    /// Frames released from a reorder window at another place than they
    /// entered it.
    pub reordered: u64,
    pub corrupted: u64,
    /// Frames that had to wait for the rate limit (each counts once).
    pub delayed: u64,
}

#[derive(Debug, Default)]
struct DirCounters {
    seen: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    corrupted: AtomicU64,
    delayed: AtomicU64,
}

impl DirCounters {
    fn snapshot(&self) -> FaultCounts {
        FaultCounts {
            seen: self.seen.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            duplicated: self.duplicated.load(Relaxed),
            reordered: self.reordered.load(Relaxed),
            corrupted: self.corrupted.load(Relaxed),
            delayed: self.delayed.load(Relaxed),
        }
    }
}

/// Shared handle on the counters of a [`FaultWire`]; clones see the same
/// counters, so a test or a CLI keeps one after the wire is boxed and given
/// to the NIC.
///
/// ```
/// use wires::{FaultStats, FaultCounts};
/// let s = FaultStats::default();
/// assert_eq!(s.total(), FaultCounts::default());
/// assert_eq!(s.clone().from_nic().seen, 0);
/// ```
#[derive(Clone, Debug, Default)]
pub struct FaultStats {
    to_nic: Arc<DirCounters>,
    from_nic: Arc<DirCounters>,
}

impl FaultStats {
    /// Frames towards the NIC (through `recv`).
    pub fn to_nic(&self) -> FaultCounts {
        self.to_nic.snapshot()
    }

    /// Frames the NIC transmitted (through `send`).
    pub fn from_nic(&self) -> FaultCounts {
        self.from_nic.snapshot()
    }

    /// Both directions added up.
    pub fn total(&self) -> FaultCounts {
        let (a, b) = (self.to_nic(), self.from_nic());
        FaultCounts {
            seen: a.seen + b.seen,
            dropped: a.dropped + b.dropped,
            duplicated: a.duplicated + b.duplicated,
            reordered: a.reordered + b.reordered,
            corrupted: a.corrupted + b.corrupted,
            delayed: a.delayed + b.delayed,
        }
    }
}

/// One step of splitmix64.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// splitmix64 as a PRNG: one add and a few multiply/xor-shifts per draw.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    /// Stream `stream` of `seed`: the starting state is itself scrambled so
    /// that streams do not overlap in practice.
    fn new(seed: u64, stream: u64) -> Rng {
        let mut s = seed ^ stream.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        Rng(splitmix(&mut s))
    }

    fn next(&mut self) -> u64 {
        splitmix(&mut self.0)
    }

    /// Uniform in `0..n` (`n` > 0; multiply-shift, bias below 2^-32 for
    /// the small `n` used here).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }

    /// True with probability `threshold / 2^64`.
    fn chance(&mut self, threshold: u128) -> bool {
        (self.next() as u128) < threshold
    }
}

/// A percentage as a threshold for [`Rng::chance`]: 100 % is 2^64, always.
fn threshold(pct: f64) -> u128 {
    (pct / 100.0 * 18_446_744_073_709_551_616.0) as u128
}

/// Flips 1..=3 distinct bits after the Ethernet header; false (nothing
/// changed) when the frame has no byte there.
fn corrupt_bits(rng: &mut Rng, frame: &mut [u8]) -> bool {
    if frame.len() <= ETH_HLEN {
        return false;
    }
    let nbits = ((frame.len() - ETH_HLEN) * 8) as u64;
    let flips = (1 + rng.below(3)).min(nbits);
    let mut done = [u64::MAX; 3];
    // A bit's place in its 16-bit word (frames are summed in big-endian
    // words from even offsets). Flips in distinct places can never cancel
    // out in a ones-complement sum, so the IP, TCP and UDP checksums always
    // see them, as they would see what a link's CRC lets through by
    // accident only very rarely; flips that cancel would corrupt any real
    // TCP stream undetected.
    let place = |bit: u64| ((ETH_HLEN as u64 + bit / 8) % 2) * 8 + bit % 8;
    for i in 0..flips as usize {
        let mut bit = rng.below(nbits);
        // Step past bits in places already flipped (at most two; a frame
        // past its header has at least 8 places).
        while done[..i].iter().any(|&d| place(d) == place(bit)) {
            bit = (bit + 1) % nbits;
        }
        done[i] = bit;
        frame[ETH_HLEN + (bit / 8) as usize] ^= 1 << (bit % 8);
    }
    true
}

/// The fault pipeline of one direction.
#[derive(Debug)]
struct Dir {
    rng: Rng,
    drop: u128,
    dup: u128,
    corrupt: u128,
    reorder: usize,
    /// Frames held for reordering, with their place of arrival.
    window: Vec<(usize, Vec<u8>)>,
    /// Frames released, in delivery order.
    ready: VecDeque<Vec<u8>>,
    /// Recycled frame buffers.
    pool: Vec<Vec<u8>>,
    /// Consecutive quiet `recv` calls while `window` is not empty.
    idle: u32,
    counters: Arc<DirCounters>,
}

impl Dir {
    fn new(cfg: &FaultConfig, stream: u64, counters: Arc<DirCounters>) -> Dir {
        Dir {
            rng: Rng::new(cfg.seed, stream),
            drop: threshold(cfg.drop),
            dup: threshold(cfg.dup),
            corrupt: threshold(cfg.corrupt),
            reorder: if cfg.reorder < 2 { 0 } else { cfg.reorder },
            window: Vec::with_capacity(cfg.reorder.min(1024)),
            ready: VecDeque::new(),
            pool: Vec::new(),
            idle: 0,
            counters,
        }
    }

    /// Only drop configured: frames need no copy.
    fn passthrough(&self) -> bool {
        self.dup == 0 && self.corrupt == 0 && self.reorder == 0
    }

    /// Draws the drop decision for one frame.
    fn drops(&mut self) -> bool {
        self.drop != 0 && self.rng.chance(self.drop)
    }

    fn take_buf(&mut self, frame: &[u8]) -> Vec<u8> {
        let mut b = self.pool.pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(frame);
        b
    }

    fn put_buf(&mut self, b: Vec<u8>) {
        if self.pool.len() < self.reorder + 8 {
            self.pool.push(b);
        }
    }

    /// Runs one frame through drop, corrupt, dup and reorder; survivors end
    /// up in `ready` (at once, or when their window is released).
    fn ingest(&mut self, frame: &[u8]) {
        self.counters.seen.fetch_add(1, Relaxed);
        if self.drops() {
            self.counters.dropped.fetch_add(1, Relaxed);
            return;
        }
        let mut buf = self.take_buf(frame);
        if self.corrupt != 0
            && self.rng.chance(self.corrupt)
            && corrupt_bits(&mut self.rng, &mut buf)
        {
            self.counters.corrupted.fetch_add(1, Relaxed);
        }
        let copy = if self.dup != 0 && self.rng.chance(self.dup) {
            self.counters.duplicated.fetch_add(1, Relaxed);
            Some(self.take_buf(&buf))
        } else {
            None
        };
        self.hold(buf);
        if let Some(c) = copy {
            self.hold(c);
        }
    }

    fn hold(&mut self, buf: Vec<u8>) {
        if self.reorder == 0 {
            self.ready.push_back(buf);
            return;
        }
        self.window.push((self.window.len(), buf));
        if self.window.len() >= self.reorder {
            self.release();
        }
    }

    /// Shuffles the window (Fisher-Yates) and moves it to `ready`.
    fn release(&mut self) {
        let n = self.window.len();
        for i in (1..n).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            self.window.swap(i, j);
        }
        let mut moved = 0;
        for (pos, (arrival, buf)) in self.window.drain(..).enumerate() {
            moved += (pos != arrival) as u64;
            self.ready.push_back(buf);
        }
        self.counters.reordered.fetch_add(moved, Relaxed);
        self.idle = 0;
    }

    /// One quiet `recv` call: releases a partial window after [`IDLE_FLUSH`].
    fn tick_idle(&mut self) {
        if !self.window.is_empty() {
            self.idle += 1;
            if self.idle >= IDLE_FLUSH {
                self.release();
            }
        }
    }

    fn held(&self) -> usize {
        self.window.len() + self.ready.len()
    }
}

/// Token bucket in bytes on the monotonic clock.
#[derive(Debug)]
struct Bucket {
    bytes_per_ns: f64,
    cap: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(mbps: f64) -> Bucket {
        let bytes_per_ns = mbps * 1e6 / 8.0 / 1e9;
        let cap = (bytes_per_ns * 1e6).max((MAX_FRAME + WIRE_OVERHEAD) as f64);
        Bucket {
            bytes_per_ns,
            cap,
            tokens: cap,
            last: Instant::now(),
        }
    }

    /// Takes `cost` bytes if the bucket holds them.
    fn take(&mut self, cost: usize) -> bool {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_nanos() as f64;
        self.last = now;
        self.tokens = (self.tokens + dt * self.bytes_per_ns).min(self.cap);
        if self.tokens >= cost as f64 {
            self.tokens -= cost as f64;
            true
        } else {
            false
        }
    }
}

/// Fault injection middleware: loss, duplication, reordering, bit errors
/// and a rate limit on any [`Wire`].
///
/// It wraps an inner wire and applies the faults of a
/// [`FaultConfig`] to both directions: to frames towards the NIC (taken from
/// the inner wire by [`Wire::recv`]) and to frames the NIC transmits (passed
/// on to the inner wire by [`Wire::send`]). Each direction draws from its
/// own deterministic PRNG stream derived from [`FaultConfig::seed`], so the
/// same seed and the same input give the same output, whatever the other
/// direction carries (only the moment a partial reorder window is released
/// depends on how often `recv` is called, see below).
///
/// Per frame, in this order:
///
/// 1. **drop** (percent): the frame disappears.
/// 2. **corrupt** (percent): 1..=3 bits are flipped at random positions
///    after the 14-byte Ethernet header, so the frame still passes the NIC's
///    address filter and only the checksums can catch it. The flipped bits
///    sit in distinct places of their 16-bit words, so the Internet checksum
///    always catches them when they fall in what it covers (flips that
///    cancel in a ones-complement sum would slip through any TCP stack).
///    Frames of 14 bytes or less are never corrupted.
/// 3. **dup** (percent): the (possibly corrupted) frame is delivered twice.
/// 4. **reorder** (window N, 0 or 1 = off): frames are held until N are
///    waiting, then released in a uniformly random permutation, so a frame
///    moves at most N - 1 places. A partial window is released once the
///    source has been quiet for [`IDLE_FLUSH`] consecutive `recv` calls (for
///    frames towards the NIC: the inner wire returned `None`; for frames from
///    the NIC: `recv` was called without an intervening `send`), by
///    [`FaultWire::flush`], and (frames from the NIC) when the wire is
///    dropped. Nothing is held forever.
/// 5. **rate** (Mbit/s, towards the NIC only): a token bucket on the
///    monotonic clock, charging each frame its length plus 24 bytes of wire
///    overhead (preamble, FCS, inter-frame gap), with a burst of at least one
///    16 KiB frame or 1 ms of traffic. A frame over the rate waits (`recv`
///    returns `None` and frames stay on the inner wire); it is never dropped.
///
/// With only `drop` configured (or nothing), frames towards the NIC are
/// passed through without a copy; otherwise they are copied into recycled
/// buffers, so the steady state does not allocate.
///
/// ```
/// use hw_sim::wire::QueueWire;
/// use wires::{FaultConfig, FaultWire};
/// use hw_sim::Wire;
/// let cfg: FaultConfig = "drop=100,seed=7".parse().unwrap();
/// let q = QueueWire::new();
/// let mut w = FaultWire::new(q.clone(), cfg).unwrap();
/// let stats = w.stats(); // keep a handle before boxing the wire
/// q.push(vec![0u8; 60]);
/// assert!(w.recv().is_none());
/// assert_eq!(stats.to_nic().dropped, 1);
/// assert_eq!(w.name(), "faults(drop=100%,dup=0%,reorder=0,corrupt=0%,seed=7) over queue");
/// ```
pub struct FaultWire<W: Wire> {
    inner: W,
    cfg: FaultConfig,
    stats: FaultStats,
    /// Frames towards the NIC.
    rx: Dir,
    /// Frames from the NIC.
    tx: Dir,
    bucket: Option<Bucket>,
    /// Passthrough: the drop decision drawn for the next frame, kept while
    /// the inner wire is empty.
    next_drop: Option<bool>,
    /// The head of `rx.ready` has already been counted as delayed.
    head_delayed: bool,
    /// The frame last returned by `recv` (copying path).
    current: Vec<u8>,
}

impl<W: Wire> fmt::Debug for FaultWire<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultWire")
            .field("inner", &self.inner.name())
            .field("cfg", &self.cfg)
            .field("stats", &self.stats.total())
            .finish_non_exhaustive()
    }
}

impl<W: Wire> FaultWire<W> {
    /// Wraps `inner`; fails when `cfg` does not [validate](FaultConfig::validate).
    pub fn new(inner: W, cfg: FaultConfig) -> Result<FaultWire<W>, FaultConfigError> {
        cfg.validate()?;
        let stats = FaultStats::default();
        Ok(FaultWire {
            rx: Dir::new(&cfg, 1, Arc::clone(&stats.to_nic)),
            tx: Dir::new(&cfg, 2, Arc::clone(&stats.from_nic)),
            bucket: cfg.rate_mbps.map(Bucket::new),
            inner,
            cfg,
            stats,
            next_drop: None,
            head_delayed: false,
            current: Vec::new(),
        })
    }

    /// A handle on the counters (shared with the wire).
    pub fn stats(&self) -> FaultStats {
        self.stats.clone()
    }

    pub fn config(&self) -> &FaultConfig {
        &self.cfg
    }

    pub fn inner(&self) -> &W {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Frames held right now (reorder windows and frames waiting for the
    /// rate limit), both directions.
    pub fn held(&self) -> usize {
        self.rx.held() + self.tx.held()
    }

    /// Releases the reorder windows now: frames from the NIC go to the
    /// inner wire, frames towards the NIC become ready for `recv` (still
    /// subject to the rate limit).
    pub fn flush(&mut self) {
        if !self.rx.window.is_empty() {
            self.rx.release();
        }
        if !self.tx.window.is_empty() {
            self.tx.release();
        }
        self.send_ready();
    }

    fn send_ready(&mut self) {
        while let Some(b) = self.tx.ready.pop_front() {
            self.inner.send(&b);
            self.tx.put_buf(b);
        }
    }

    /// `recv` when only drop is configured: no copy.
    fn recv_passthrough(&mut self) -> Option<&[u8]> {
        for _ in 0..MAX_PULLS {
            if self.rx.drop == 0 {
                let f = self.inner.recv();
                if f.is_some() {
                    self.rx.counters.seen.fetch_add(1, Relaxed);
                }
                return f;
            }
            let drop = *self.next_drop.get_or_insert_with(|| self.rx.drops());
            if drop {
                self.inner.recv()?;
                self.next_drop = None;
                self.rx.counters.seen.fetch_add(1, Relaxed);
                self.rx.counters.dropped.fetch_add(1, Relaxed);
            } else {
                let f = self.inner.recv();
                if f.is_some() {
                    self.next_drop = None;
                    self.rx.counters.seen.fetch_add(1, Relaxed);
                }
                return f;
            }
        }
        None
    }
}

impl<W: Wire> FaultWire<W> {
    /// A frame from the NIC when no TX fault needs to hold frames: dropped
    /// (and counted) or handed to the inner wire by `send`. Returns whether
    /// it was dealt with this way.
    fn send_passthrough(&mut self, send: impl FnOnce(&mut W)) -> bool {
        self.tx.idle = 0;
        if !self.tx.passthrough() {
            return false;
        }
        self.tx.counters.seen.fetch_add(1, Relaxed);
        if self.tx.drops() {
            self.tx.counters.dropped.fetch_add(1, Relaxed);
        } else {
            send(&mut self.inner);
        }
        true
    }
}

impl<W: Wire> Wire for FaultWire<W> {
    fn recv(&mut self) -> Option<&[u8]> {
        // Frames from the NIC held in a partial window while it is quiet.
        if !self.tx.window.is_empty() {
            self.tx.tick_idle();
            self.send_ready();
        }
        if self.cfg.passthrough_rx() {
            return self.recv_passthrough();
        }
        let mut pulls = 0;
        while self.rx.ready.is_empty() && pulls < MAX_PULLS {
            match self.inner.recv() {
                Some(f) => {
                    self.rx.idle = 0;
                    self.rx.ingest(f);
                    pulls += 1;
                }
                None => {
                    self.rx.tick_idle();
                    break;
                }
            }
        }
        let len = self.rx.ready.front()?.len();
        if let Some(b) = &mut self.bucket {
            if !b.take(len + WIRE_OVERHEAD) {
                if !self.head_delayed {
                    self.head_delayed = true;
                    self.rx.counters.delayed.fetch_add(1, Relaxed);
                }
                return None;
            }
        }
        self.head_delayed = false;
        let next = self.rx.ready.pop_front()?;
        let old = std::mem::replace(&mut self.current, next);
        self.rx.put_buf(old);
        Some(&self.current)
    }

    fn send(&mut self, frame: &[u8]) {
        if !self.send_passthrough(|inner| inner.send(frame)) {
            self.tx.ingest(frame);
            self.send_ready();
        }
    }

    fn send_vec(&mut self, frame: &mut Vec<u8>) {
        if !self.send_passthrough(|inner| inner.send_vec(frame)) {
            self.tx.ingest(frame);
            self.send_ready();
        }
    }

    fn name(&self) -> String {
        format!("faults({}) over {}", self.cfg, self.inner.name())
    }

    /// The inner wire is exhausted and no frame towards the NIC is held.
    fn exhausted(&self) -> bool {
        self.rx.held() == 0 && self.inner.exhausted()
    }
}

impl<W: Wire> Drop for FaultWire<W> {
    /// Frames from the NIC still held for reordering go out.
    fn drop(&mut self) {
        if !self.tx.window.is_empty() {
            self.tx.release();
        }
        self.send_ready();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hw_sim::frames::{self, udp_frame};
    use hw_sim::wire::{GenConfig, Generator, QueueWire};
    use std::collections::HashMap;

    /// Frame `i`: a 64-byte UDP frame whose first payload bytes are `i`,
    /// checksums right.
    fn numbered(i: u32) -> Vec<u8> {
        let mut payload = frames::payload_pattern(22, 0);
        payload[..4].copy_from_slice(&i.to_be_bytes());
        frames::Builder::default().udp(1000, 2000, &payload)
    }

    fn number(f: &[u8]) -> u32 {
        u32::from_be_bytes([f[42], f[43], f[44], f[45]])
    }

    /// Pushes `n` numbered frames and collects everything `recv` yields
    /// until it stayed empty for a while.
    fn run_rx(cfg: FaultConfig, n: u32) -> (Vec<Vec<u8>>, FaultStats) {
        let q = QueueWire::new();
        for i in 0..n {
            q.push(numbered(i));
        }
        let mut w = FaultWire::new(q.clone(), cfg).unwrap();
        let stats = w.stats();
        let mut out = Vec::new();
        let mut empty = 0;
        while empty < 4 * IDLE_FLUSH {
            match w.recv() {
                Some(f) => {
                    out.push(f.to_vec());
                    empty = 0;
                }
                None => empty += 1,
            }
        }
        assert_eq!(q.pending(), 0);
        (out, stats)
    }

    fn cfg(s: &str) -> FaultConfig {
        s.parse().unwrap()
    }

    #[test]
    fn zero_config_passes_everything_in_order() {
        let (out, stats) = run_rx(FaultConfig::default(), 1000);
        let want: Vec<Vec<u8>> = (0..1000).map(numbered).collect();
        assert_eq!(out, want);
        assert_eq!(
            stats.to_nic(),
            FaultCounts {
                seen: 1000,
                ..FaultCounts::default()
            }
        );
        // Also through the copying path (reorder 1 is off, rate huge).
        let (out, _) = run_rx(cfg("reorder=1,rate=1000000"), 1000);
        assert_eq!(out, want);
        // And from the NIC.
        let q = QueueWire::new();
        let mut w = FaultWire::new(q.clone(), FaultConfig::default()).unwrap();
        for f in &want {
            w.send(f);
        }
        assert_eq!(q.take_sent(), want);
        assert_eq!(w.stats().from_nic().seen, 1000);
    }

    #[test]
    fn send_vec_passes_through_drops_and_holds() {
        // No TX fault: the frame reaches the inner wire in its own buffer.
        let (a, mut b) = crate::pair(8);
        let mut w = FaultWire::new(a, FaultConfig::default()).unwrap();
        let mut v = numbered(1);
        let at = v.as_ptr();
        w.send_vec(&mut v);
        let got = b.recv().unwrap();
        assert_eq!((got, got.as_ptr()), (&numbered(1)[..], at));
        // Dropped on the way out: counted, nothing arrives.
        let (a, mut b) = crate::pair(8);
        let mut w = FaultWire::new(a, cfg("drop=100")).unwrap();
        w.send_vec(&mut numbered(2));
        assert!(b.recv().is_none());
        assert_eq!(w.stats().from_nic().dropped, 1);
        // A fault that holds frames (reordering) copies them; all arrive.
        let q = QueueWire::new();
        let mut w = FaultWire::new(q.clone(), cfg("reorder=4,seed=5")).unwrap();
        let mut want: Vec<Vec<u8>> = (0..8).map(numbered).collect();
        for f in &want {
            w.send_vec(&mut f.clone());
        }
        drop(w);
        let mut sent = q.take_sent();
        sent.sort();
        want.sort();
        assert_eq!(sent, want);
    }

    #[test]
    fn deterministic_per_seed() {
        let c = cfg("drop=5,dup=5,corrupt=5,reorder=7,seed=99");
        let (a, sa) = run_rx(c.clone(), 5000);
        let (b, sb) = run_rx(c.clone(), 5000);
        assert_eq!(a, b);
        assert_eq!(sa.to_nic(), sb.to_nic());
        let (d, _) = run_rx(
            FaultConfig {
                seed: 100,
                ..c.clone()
            },
            5000,
        );
        assert_ne!(a, d, "another seed, another sequence");

        // The send direction too, independent of recv traffic.
        let sent = |recv_too: bool| {
            let q = QueueWire::new();
            let mut w = FaultWire::new(q.clone(), c.clone()).unwrap();
            for i in 0..3000 {
                if recv_too {
                    q.push(numbered(i));
                    let _ = w.recv();
                }
                w.send(&numbered(i));
            }
            drop(w);
            q.take_sent()
        };
        let s1 = sent(false);
        assert_eq!(s1, sent(false));
        assert_eq!(s1, sent(true), "directions have separate streams");
    }

    fn within(got: u64, want: f64, tol: f64) -> bool {
        (got as f64 - want).abs() <= want * tol
    }

    #[test]
    fn rates_within_tolerance() {
        const N: u32 = 100_000;
        let (out, s) = run_rx(cfg("drop=10,seed=1"), N);
        let c = s.to_nic();
        assert_eq!(c.seen, N as u64);
        assert!(within(c.dropped, 10_000.0, 0.05), "dropped {}", c.dropped);
        assert_eq!(out.len() as u64, N as u64 - c.dropped);
        // Survivors keep their order.
        assert!(out.windows(2).all(|w| number(&w[0]) < number(&w[1])));

        let (out, s) = run_rx(cfg("dup=3,seed=2"), N);
        let c = s.to_nic();
        assert!(within(c.duplicated, 3_000.0, 0.08), "dup {}", c.duplicated);
        assert_eq!(out.len() as u64, N as u64 + c.duplicated);

        let (out, s) = run_rx(cfg("corrupt=20,seed=3"), N);
        let c = s.to_nic();
        assert!(
            within(c.corrupted, 20_000.0, 0.05),
            "corrupt {}",
            c.corrupted
        );
        assert_eq!(out.len(), N as usize);
        let orig = numbered(0);
        let mut caught = 0;
        for f in &out {
            // Header untouched so the frame still reaches the NIC's filter.
            assert_eq!(f[..ETH_HLEN], orig[..ETH_HLEN]);
            let p = frames::parse(f);
            let ok = frames::ipv4_header_ok(f, &p) == Some(true)
                && frames::l4_checksum_ok(f, &p) == Some(true);
            caught += !ok as u64;
        }
        // Ones-complement sums miss some 2- and 3-bit errors (the same bit
        // set in one word and cleared in another), so most, not all, of the
        // corrupted frames fail a checksum; intact ones never do.
        assert!(
            caught as f64 >= c.corrupted as f64 * 0.9,
            "caught {caught} of {}",
            c.corrupted
        );
        assert!(caught <= c.corrupted);

        // The send direction uses the same machinery.
        let q = QueueWire::new();
        let mut w = FaultWire::new(q.clone(), cfg("drop=10,dup=10,seed=4")).unwrap();
        let f = numbered(1);
        for _ in 0..N {
            w.send(&f);
        }
        let c = w.stats().from_nic();
        assert!(within(c.dropped, 10_000.0, 0.05));
        assert!(within(c.duplicated, 9_000.0, 0.08));
        assert_eq!(
            q.take_sent().len() as u64,
            N as u64 - c.dropped + c.duplicated
        );
    }

    #[test]
    fn corruption_flips_one_to_three_bits_after_the_header() {
        let mut rng = Rng::new(5, 0);
        let orig = udp_frame(100, 3);
        let mut hist = [0u32; 4];
        for _ in 0..3000 {
            let mut f = orig.clone();
            assert!(corrupt_bits(&mut rng, &mut f));
            let flipped: u32 = f.iter().zip(&orig).map(|(a, b)| (a ^ b).count_ones()).sum();
            assert!((1..=3).contains(&flipped), "{flipped} bits");
            // Distinct places in their 16-bit words: no two flips cancel.
            let mut places = 0u16;
            for (i, (a, b)) in f.iter().zip(&orig).enumerate() {
                for bit in 0..8 {
                    if (a ^ b) & (1 << bit) != 0 {
                        let place = (i % 2) * 8 + bit;
                        assert_eq!(places & (1 << place), 0, "two flips in place {place}");
                        places |= 1 << place;
                    }
                }
            }
            hist[flipped as usize] += 1;
            assert_eq!(f[..ETH_HLEN], orig[..ETH_HLEN]);
        }
        assert!(hist[1] > 500 && hist[2] > 500 && hist[3] > 500, "{hist:?}");
        // A frame with one byte after the header: distinct bits, still changed.
        let mut tiny = vec![0u8; 15];
        for _ in 0..100 {
            tiny[14] = 0;
            assert!(corrupt_bits(&mut rng, &mut tiny));
            assert!((1..=3).contains(&tiny[14].count_ones()));
        }
        // Nothing after the header: untouched.
        let mut hdr = vec![7u8; 14];
        assert!(!corrupt_bits(&mut rng, &mut hdr));
        assert_eq!(hdr, vec![7u8; 14]);
        // Through the wire, short frames pass unharmed and uncounted.
        let q = QueueWire::new();
        q.push(vec![1u8; 10]);
        let mut w = FaultWire::new(q.clone(), cfg("corrupt=100")).unwrap();
        assert_eq!(w.recv(), Some(&[1u8; 10][..]));
        assert_eq!(w.stats().to_nic().corrupted, 0);
    }

    #[test]
    fn reorder_permutes_but_keeps_every_frame() {
        for window in [2, 3, 16, 100] {
            let c = FaultConfig {
                reorder: window,
                seed: window as u64,
                ..FaultConfig::default()
            };
            // 1003: the last window is partial and drains when idle.
            let (out, s) = run_rx(c, 1003);
            let mut nums: Vec<u32> = out.iter().map(|f| number(f)).collect();
            assert_ne!(
                nums,
                (0..1003).collect::<Vec<_>>(),
                "window {window}: not permuted"
            );
            let moved = s.to_nic().reordered;
            assert!(moved > 100, "window {window}: {moved} moved");
            for (pos, &n) in nums.iter().enumerate() {
                assert!(
                    (n as usize).abs_diff(pos) < window,
                    "window {window}: frame {n} at {pos}"
                );
            }
            nums.sort();
            assert_eq!(nums, (0..1003).collect::<Vec<_>>());
            // Byte-identical frames, as a multiset.
            let mut counts: HashMap<Vec<u8>, i32> = HashMap::new();
            for f in out {
                *counts.entry(f).or_default() += 1;
            }
            assert!(counts.values().all(|&c| c == 1));
        }
    }

    #[test]
    fn held_frames_drain_in_bounded_calls() {
        // Towards the NIC: 3 frames in a window of 50.
        let q = QueueWire::new();
        let mut w = FaultWire::new(q.clone(), cfg("reorder=50,seed=1")).unwrap();
        for i in 0..3 {
            q.push(numbered(i));
        }
        let mut got = Vec::new();
        for _ in 0..IDLE_FLUSH + 4 {
            if let Some(f) = w.recv() {
                got.push(number(f));
            }
        }
        got.sort();
        assert_eq!(got, [0, 1, 2]);
        assert_eq!(w.held(), 0);

        // From the NIC: released by quiet recv calls, flush() or drop.
        let mut w = FaultWire::new(q.clone(), cfg("reorder=50,seed=1")).unwrap();
        for i in 0..5 {
            w.send(&numbered(i));
        }
        assert!(q.sent().is_empty());
        assert_eq!(w.held(), 5);
        for _ in 0..IDLE_FLUSH {
            assert!(w.recv().is_none());
        }
        assert_eq!(q.take_sent().len(), 5);
        w.send(&numbered(9));
        w.flush();
        assert_eq!(q.take_sent().len(), 1);
        w.send(&numbered(10));
        drop(w);
        assert_eq!(q.take_sent(), vec![numbered(10)]);

        // Towards the NIC, flush() releases a partial window at once.
        let mut w = FaultWire::new(q.clone(), cfg("reorder=50")).unwrap();
        q.push(numbered(1));
        assert!(w.recv().is_none());
        w.flush();
        assert_eq!(w.recv().map(number), Some(1));
    }

    #[test]
    fn drop_all_and_passthrough_of_a_generator() {
        let g = Generator::new(GenConfig::default()).unwrap();
        let mut w = FaultWire::new(g, cfg("drop=100")).unwrap();
        // An endless source: each call gives up after a bounded number of frames.
        for _ in 0..10 {
            assert!(w.recv().is_none());
        }
        let s = w.stats().to_nic();
        assert_eq!(s.seen, s.dropped);
        assert_eq!(s.seen, 10 * MAX_PULLS as u64);
        assert!(w.inner().generated() >= s.seen);
        assert!(format!("{w:?}").contains("FaultWire"));
        let _ = w.inner_mut();

        // Partial drop keeps the generator's sequence minus the losses.
        let g = Generator::new(GenConfig::default()).unwrap();
        let want = g.expected(1000);
        let mut w = FaultWire::new(g, cfg("drop=50,seed=3")).unwrap();
        let mut got = Vec::new();
        while w.stats().to_nic().seen < 1000 {
            if let Some(f) = w.recv() {
                got.push(f.to_vec());
            }
        }
        let s = w.stats().to_nic();
        assert_eq!(got.len() as u64, s.seen - s.dropped);
        let mut it = want.iter();
        for f in &got {
            assert!(it.any(|w| w == f), "order kept");
        }
    }

    #[test]
    fn rate_limit_delays_but_never_drops() {
        // 8 Mbit/s = 1 byte/us; 100 frames of 1000 + 24 bytes need at least
        // (102400 - burst 16408) us, about 86 ms.
        let q = QueueWire::new();
        let f = udp_frame(1000, 1);
        for _ in 0..100 {
            q.push(f.clone());
        }
        let mut w = FaultWire::new(q.clone(), cfg("rate=8")).unwrap();
        let start = Instant::now();
        let mut n = 0;
        while n < 100 {
            if w.recv().is_some() {
                n += 1;
            } else {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            assert!(start.elapsed().as_secs() < 20, "rate limit stuck");
        }
        let el = start.elapsed();
        assert!(el.as_millis() >= 80, "too fast: {el:?}");
        let s = w.stats().to_nic();
        assert_eq!((s.seen, s.dropped), (100, 0));
        assert!(s.delayed > 0 && s.delayed <= 100);
        assert!(w.recv().is_none());
        assert_eq!(w.config().rate_mbps, Some(8.0));
    }

    #[test]
    fn parse_errors_name_the_key() {
        let err = |s: &str| s.parse::<FaultConfig>().unwrap_err();
        assert_eq!(err("drop=101").key, "drop");
        assert_eq!(err("dup=-1").key, "dup");
        assert_eq!(err("corrupt=abc").key, "corrupt");
        assert_eq!(err("corrupt=NaN").key, "corrupt");
        assert_eq!(err("reorder=-3").key, "reorder");
        assert_eq!(err("reorder=1000000").key, "reorder");
        assert_eq!(err("rate=0").key, "rate");
        assert_eq!(err("rate=fast").key, "rate");
        assert_eq!(err("rate=inf").key, "rate");
        assert_eq!(err("seed=1.5").key, "seed");
        assert_eq!(err("seed=-1").key, "seed");
        assert_eq!(err("jitter=3").key, "jitter");
        assert_eq!(err("drop").key, "drop");
        assert_eq!(err("drop=1,drop=2").key, "drop");
        for e in [err("drop=101"), err("jitter=3"), err("rate=0")] {
            let msg = e.to_string();
            assert!(msg.contains(&format!("`{}`", e.key)), "{msg}");
        }
        assert!(err("jitter=3").to_string().contains("unknown key"));

        // Valid: any subset, any order, spaces, % suffix.
        assert_eq!(cfg(""), FaultConfig::default());
        let c = cfg("seed=42, rate=100.5 ,corrupt=0.1%,reorder=4,dup=2,drop=1");
        assert_eq!(
            c,
            FaultConfig {
                drop: 1.0,
                dup: 2.0,
                reorder: 4,
                corrupt: 0.1,
                rate_mbps: Some(100.5),
                seed: 42,
            }
        );
        assert_eq!(
            c.to_string(),
            "drop=1%,dup=2%,reorder=4,corrupt=0.1%,rate=100.5,seed=42"
        );
        assert_eq!(cfg(&c.to_string()), c);
        assert_eq!(cfg("drop=100").drop, 100.0);
        // Struct literals are checked by new().
        let bad = FaultConfig {
            dup: 200.0,
            ..FaultConfig::default()
        };
        assert_eq!(
            FaultWire::new(QueueWire::new(), bad).unwrap_err().key,
            "dup"
        );
        assert!(FaultConfig {
            rate_mbps: Some(-1.0),
            ..FaultConfig::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn prng_streams_differ_and_below_is_in_range() {
        let mut a = Rng::new(1, 1);
        let mut b = Rng::new(1, 2);
        let xa: Vec<u64> = (0..8).map(|_| a.next()).collect();
        let xb: Vec<u64> = (0..8).map(|_| b.next()).collect();
        assert_ne!(xa, xb);
        assert!((0..1000).all(|_| a.below(7) < 7));
        assert!(a.chance(threshold(100.0)));
        assert!(!a.chance(threshold(0.0)));
    }
}
