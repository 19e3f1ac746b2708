//! igb family bring-up: interrupt masking, reset, PHY autonegotiation, MAC
//! address, receive/transmit control. Queue setup lives with the rings
//! ([`crate::rx`], [`crate::tx`]); this module owns the device-wide state.

use crate::desc::{DescSlot, DESC_LEN};
use crate::device::Device;
use crate::dma::{DmaError, DmaRegion, DmaSpace};
use crate::regs::*;
use crate::rss::RssConfig;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum IgbError {
    #[error("device did not finish reset (CTRL.RST still set after {0:?})")]
    ResetTimeout(Duration),
    #[error("PHY access through MDIC timed out")]
    MdicTimeout,
    #[error("PHY access through MDIC reported an error (PHY address {0})")]
    MdicError(u32),
    #[error("link did not come up within {0:?} (STATUS.LU = 0): check the cable / peer, or raise --link-timeout")]
    LinkTimeout(Duration),
    #[error("RX/TX queue {0} did not report enabled in its DCTL register")]
    QueueEnableTimeout(u32),
    #[error("queue {0} did not stop within the timeout")]
    QueueDisableTimeout(u32),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Dma(#[from] DmaError),
}

/// Device-wide settings.
#[derive(Clone, Debug)]
pub struct IgbConfig {
    /// How long to wait for STATUS.LU after restarting autonegotiation.
    pub link_timeout: Duration,
    /// Accept every unicast and multicast frame (a sink wants them all).
    pub promiscuous: bool,
    /// MAC loopback: transmitted frames come back on receive.
    pub mac_loopback: bool,
    /// Largest frame accepted, bytes without FCS (RLPML). Above 1518 this
    /// enables long-packet reception (RCTL.LPE).
    pub max_frame: u32,
}

impl Default for IgbConfig {
    fn default() -> Self {
        IgbConfig {
            link_timeout: Duration::from_secs(5),
            promiscuous: true,
            mac_loopback: false,
            max_frame: 9216,
        }
    }
}

/// Cumulative hardware statistics (the registers clear on read; we add up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HwStats {
    pub good_packets_rx: u64,
    pub good_octets_rx: u64,
    pub missed_packets: u64,
    pub good_packets_tx: u64,
    pub good_octets_tx: u64,
}

/// An initialised igb device.
pub struct Igb {
    dev: Arc<dyn Device>,
    space: Arc<DmaSpace>,
    mac: [u8; 6],
    cfg: IgbConfig,
    stats: HwStats,
}

const RESET_TIMEOUT: Duration = Duration::from_secs(1);
const MDIC_TIMEOUT: Duration = Duration::from_millis(100);

/// Polls `cond` until it holds or `timeout` passes. Sleeps briefly between
/// polls: bring-up is not a hot path.
pub(crate) fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= timeout {
            return cond();
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// How long a queue may take to report enabled / disabled.
pub(crate) const QUEUE_TIMEOUT: Duration = Duration::from_millis(200);

/// The descriptor memory of one RX or TX queue: `mask + 1` slots in DMA
/// memory shared with the device.
pub(crate) struct DescRing {
    mem: DmaRegion,
    pub mask: usize,
}

impl DescRing {
    /// Allocates `n` descriptors for queue `queue`; `what` ("RX", "TX")
    /// names the ring in errors.
    pub fn new(space: &Arc<DmaSpace>, what: &str, n: usize, queue: u32) -> Result<Self, IgbError> {
        if !(8..=4096).contains(&n) || !n.is_power_of_two() {
            return Err(IgbError::Config(format!(
                "{what} ring size {n} must be a power of two in 8..=4096"
            )));
        }
        if queue >= MAX_QUEUES {
            return Err(IgbError::Config(format!(
                "{what} queue {queue} out of range (0..{MAX_QUEUES})"
            )));
        }
        Ok(DescRing {
            mem: space.alloc(n * DESC_LEN)?,
            mask: n - 1,
        })
    }

    /// Descriptors in the ring.
    pub fn len(&self) -> usize {
        self.mask + 1
    }

    #[inline]
    pub fn slot(&self, i: usize) -> &DescSlot {
        debug_assert!(i <= self.mask);
        // SAFETY: the region holds mask+1 16-byte descriptors, is
        // page-aligned (so each slot is 16-byte aligned), lives as long as
        // `self`, and DescSlot is made of atomics, so shared access with the
        // device is sound.
        unsafe { &*(self.mem.as_ptr().add(i * DESC_LEN) as *const DescSlot) }
    }
}

/// The register block of one RX or TX queue (both share a layout).
#[derive(Clone, Copy, Debug)]
pub(crate) struct QueueRegs {
    pub base: u32,
    pub queue: u32,
}

impl QueueRegs {
    pub fn reg(self, off: u32) -> u32 {
        self.base + off
    }

    /// Disables the queue, points it at `ring`, zeroes head
    /// and tail, runs `extra` (queue-type specific registers), then enables
    /// it and waits for the enable bit to read back set.
    pub fn program(
        self,
        dev: &dyn Device,
        ring: &DescRing,
        extra: impl FnOnce(&dyn Device),
    ) -> Result<(), IgbError> {
        if !self.disable(dev) {
            return Err(IgbError::QueueDisableTimeout(self.queue));
        }
        let iova = ring.mem.iova();
        dev.write32(self.reg(Q_BAL), iova as u32);
        dev.write32(self.reg(Q_BAH), (iova >> 32) as u32);
        dev.write32(self.reg(Q_LEN), (ring.len() * DESC_LEN) as u32);
        extra(dev);
        dev.write32(self.reg(Q_HEAD), 0);
        dev.write32(self.reg(Q_TAIL), 0);
        dev.write32(self.reg(Q_DCTL), DCTL_QUEUE_ENABLE);
        if !wait_for(QUEUE_TIMEOUT, || {
            dev.read32(self.reg(Q_DCTL)) & DCTL_QUEUE_ENABLE != 0
        }) {
            return Err(IgbError::QueueEnableTimeout(self.queue));
        }
        Ok(())
    }

    /// Clears the enable bit and waits until the device reports the queue
    /// stopped (no more DMA to it). False on timeout.
    pub fn disable(self, dev: &dyn Device) -> bool {
        dev.write32(self.reg(Q_DCTL), 0);
        wait_for(QUEUE_TIMEOUT, || {
            dev.read32(self.reg(Q_DCTL)) & DCTL_QUEUE_ENABLE == 0
        })
    }
}

impl Igb {
    /// Resets the device and brings the link up. Receive and transmit stay
    /// disabled until [`Igb::enable_rx`] / [`Igb::enable_tx`], after the
    /// rings are set up.
    pub fn init(dev: Arc<dyn Device>, cfg: IgbConfig) -> Result<Igb, IgbError> {
        if !(1518..=16383).contains(&cfg.max_frame) {
            return Err(IgbError::Config(format!(
                "max frame {} must be 1518..=16383",
                cfg.max_frame
            )));
        }
        let space = DmaSpace::new(dev.clone() as Arc<dyn crate::device::DmaMapper>);
        let mut igb = Igb {
            dev,
            space,
            mac: [0; 6],
            cfg,
            stats: HwStats::default(),
        };
        igb.bring_up()?;
        // Clear the clear-on-read statistics left from before.
        igb.stats = HwStats::default();
        igb.read_stats();
        igb.stats = HwStats::default();
        tracing::info!(device = %igb.dev.name(), mac = %fmt_mac(&igb.mac), "igb up");
        Ok(igb)
    }

    /// Reset, link, MAC address and receive settings: what `init` does to
    /// the device.
    fn bring_up(&mut self) -> Result<(), IgbError> {
        self.mask_interrupts();
        self.reset()?;
        self.mask_interrupts();
        self.restart_autoneg()?;
        self.wait_link()?;
        self.mac = self.read_mac();
        self.write(RXCSUM, RXCSUM_IPOFLD | RXCSUM_TUOFLD);
        // RLPML counts the 4-byte FCS (datasheet; QEMU checks size + 4 > RLPML).
        self.write(RLPML, self.cfg.max_frame + 4);
        Ok(())
    }

    /// Brings the device up again after it reset itself (or was reset
    /// behind our back): the same steps as [`Igb::init`], keeping the DMA
    /// space and the statistics gathered so far. The rings must then be
    /// restarted ([`crate::RxRing::restart`], [`crate::TxRing::restart`]) and
    /// receive and transmit enabled again. RSS settings are not restored.
    pub fn reinit(&mut self) -> Result<(), IgbError> {
        self.bring_up()?;
        tracing::warn!(device = %self.dev.name(), "igb brought up again after a reset");
        Ok(())
    }

    fn write(&self, reg: u32, v: u32) {
        self.dev.write32(reg, v)
    }
    fn read(&self, reg: u32) -> u32 {
        self.dev.read32(reg)
    }

    /// A polling driver: no interrupt causes at all.
    fn mask_interrupts(&self) {
        self.write(IMC, u32::MAX);
        self.write(EIMC, u32::MAX);
    }

    fn reset(&self) -> Result<(), IgbError> {
        self.write(CTRL, self.read(CTRL) | CTRL_RST);
        if !wait_for(RESET_TIMEOUT, || self.read(CTRL) & CTRL_RST == 0) {
            return Err(IgbError::ResetTimeout(RESET_TIMEOUT));
        }
        Ok(())
    }

    /// Writes a PHY register through MDIC and waits for completion.
    fn phy_write(&self, reg: u32, value: u16) -> Result<(), IgbError> {
        let cmd = value as u32 | reg << MDIC_REG_SHIFT | PHY_ADDR << MDIC_PHY_SHIFT | MDIC_OP_WRITE;
        self.write(MDIC, cmd);
        let mut last = 0;
        if !wait_for(MDIC_TIMEOUT, || {
            last = self.read(MDIC);
            last & MDIC_READY != 0
        }) {
            return Err(IgbError::MdicTimeout);
        }
        if last & MDIC_ERROR != 0 {
            return Err(IgbError::MdicError(PHY_ADDR));
        }
        Ok(())
    }

    /// After reset the link stays down (and QEMU's model drops every frame)
    /// until autonegotiation is restarted.
    fn restart_autoneg(&self) -> Result<(), IgbError> {
        let bmcr = BMCR_AN_ENABLE | BMCR_AN_RESTART | BMCR_FULL_DUPLEX | BMCR_SPEED_1000;
        self.phy_write(PHY_BMCR, bmcr)?;
        self.write(CTRL, self.read(CTRL) | CTRL_SLU);
        Ok(())
    }

    fn wait_link(&self) -> Result<(), IgbError> {
        if !wait_for(self.cfg.link_timeout, || self.link_up()) {
            return Err(IgbError::LinkTimeout(self.cfg.link_timeout));
        }
        Ok(())
    }

    pub fn link_up(&self) -> bool {
        self.read(STATUS) & STATUS_LU != 0
    }

    fn read_mac(&self) -> [u8; 6] {
        let lo = self.read(RAL0).to_le_bytes();
        let hi = self.read(RAH0).to_le_bytes();
        [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]]
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The DMA space rings and pools allocate from.
    pub fn dma(&self) -> &Arc<DmaSpace> {
        &self.space
    }

    pub fn device(&self) -> &Arc<dyn Device> {
        &self.dev
    }

    /// Turns receive on; call after the RX rings are enabled.
    pub fn enable_rx(&self) {
        let mut rctl = RCTL_EN | RCTL_BAM | RCTL_SECRC;
        if self.cfg.promiscuous {
            rctl |= RCTL_UPE | RCTL_MPE;
        }
        if self.cfg.max_frame > 1518 {
            rctl |= RCTL_LPE;
        }
        if self.cfg.mac_loopback {
            rctl |= RCTL_LBM_MAC;
        }
        self.write(RCTL, rctl);
    }

    pub fn enable_tx(&self) {
        self.write(TCTL, TCTL_EN | TCTL_PSP);
    }

    /// Turns RSS on over RX queues `0..queues` with `key` and the default
    /// hash fields ([`crate::rss::RSS_FIELDS_TCP_UDP`]); see
    /// [`Igb::enable_rss_with`].
    pub fn enable_rss(&self, queues: u32, key: &[u8; RSS_KEY_LEN]) -> Result<(), IgbError> {
        self.enable_rss_with(&RssConfig::new(queues, key))
    }

    /// Programs RSS: the key (RSSRK), the redirection table (RETA, round
    /// robin over `cfg.queues`), RXCSUM.PCSD (dword 1 of the write-back then
    /// carries the hash instead of the IP id; the NIC hashes only with PCSD
    /// set) and last MRQC (RSS mode plus `cfg.fields`). The rings of queues
    /// `0..cfg.queues` should be enabled first: a frame steered to a
    /// disabled queue is dropped. Nothing is written if `cfg` is invalid.
    pub fn enable_rss_with(&self, cfg: &RssConfig) -> Result<(), IgbError> {
        cfg.validate().map_err(IgbError::Config)?;
        for (i, k) in cfg.key.chunks_exact(4).enumerate() {
            self.write(
                rssrk(i as u32),
                u32::from_le_bytes([k[0], k[1], k[2], k[3]]),
            );
        }
        for (i, e) in cfg.reta().chunks_exact(4).enumerate() {
            self.write(reta(i as u32), u32::from_le_bytes([e[0], e[1], e[2], e[3]]));
        }
        self.write(RXCSUM, self.read(RXCSUM) | RXCSUM_PCSD);
        self.write(MRQC, cfg.mrqc());
        tracing::info!(
            queues = cfg.queues,
            fields = format_args!("{:#x}", cfg.fields),
            "RSS on"
        );
        Ok(())
    }

    /// Turns RSS off: every frame to queue 0 again, dword 1 back to the IP id.
    pub fn disable_rss(&self) {
        self.write(MRQC, 0);
        self.write(RXCSUM, self.read(RXCSUM) & !RXCSUM_PCSD);
    }

    /// Stops receive and transmit (queues are stopped by their rings).
    pub fn disable(&self) {
        self.write(RCTL, 0);
        self.write(TCTL, 0);
    }

    /// Reads the clear-on-read statistics registers and adds them up.
    pub fn read_stats(&mut self) -> HwStats {
        let s = &mut self.stats;
        s.good_packets_rx += self.dev.read32(GPRC) as u64;
        let lo = self.dev.read32(GORCL) as u64;
        s.good_octets_rx += lo | (self.dev.read32(GORCH) as u64) << 32;
        s.missed_packets += self.dev.read32(MPC) as u64;
        s.good_packets_tx += self.dev.read32(GPTC) as u64;
        let lo = self.dev.read32(GOTCL) as u64;
        s.good_octets_tx += lo | (self.dev.read32(GOTCH) as u64) << 32;
        *s
    }
}

impl Drop for Igb {
    fn drop(&mut self) {
        self.disable();
    }
}

pub fn fmt_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}
