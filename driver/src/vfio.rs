//! The VFIO backend: an 82576 / I350 (or QEMU's emulated igb) bound to
//! vfio-pci, driven from userspace. [`VfioNic`] implements [`Device`]: BAR0
//! registers through an [`MmioBar`], DMA mappings through the IOMMU.
//!
//! This module owns every VFIO `unsafe` in the crate: the BAR0 mmap, the
//! PCI config-space accesses and the IOMMU mappings.
//!
//! Opening checks sysfs first, so a misconfigured machine gets one line
//! that says what to do ([`VfioError`]); then it opens the container, group
//! and device through `vfio-ioctls`, enables bus mastering and maps BAR0.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let nic = driver::vfio::VfioNic::open("0000:03:00.0")?;
//! let igb = driver::Igb::init(nic, driver::IgbConfig::default())?;
//! # Ok(()) }
//! ```
//!
//! Shutdown order: stop the queues (the rings, [`crate::Igb::disable`]) ->
//! drop rings and pools (each [`crate::DmaRegion`] unmaps its IOVA before
//! its memory is freed) -> drop the last `Arc<VfioNic>`, which clears bus
//! mastering (no DMA even from a queue left running), unmaps whatever is
//! still mapped, unmaps BAR0 and closes device, group and container.

use crate::device::{Device, DmaMapper, RegisterIo};
use crate::dma::DmaError;
use crate::mmio::MmioBar;
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use vfio_ioctls::{VfioContainer, VfioDevice, VfioOps};

/// PCI vendor ID of Intel.
pub const INTEL_VENDOR: u16 = 0x8086;
/// Device IDs this driver accepts: 82576 (QEMU's `-device igb`) and I350.
pub const IGB_DEVICES: [(u16, &str); 2] = [(0x10c9, "82576"), (0x1521, "I350")];

/// VFIO region indexes of a PCI device (linux/vfio.h).
const BAR0_REGION: u32 = 0;
const CONFIG_REGION: u32 = 7;
/// VFIO_REGION_INFO_FLAG_MMAP: the region may be mmapped.
const REGION_FLAG_MMAP: u32 = 1 << 2;
/// PCI command register (config offset 4): memory space and bus master enable.
const PCI_COMMAND: u64 = 4;
const PCI_COMMAND_MEMORY: u16 = 1 << 1;
const PCI_COMMAND_MASTER: u16 = 1 << 2;
/// Every register the driver uses lies below 64 KiB (the igb BAR0 is 128 KiB).
const MIN_BAR0_LEN: u64 = 0x10000;

/// Why a NIC could not be opened: each one line that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    #[error("{0:?} is not a PCI address like 0000:03:00.0 (DDDD:BB:DD.F in hex)")]
    BadAddress(String),
    #[error("no PCI device {addr}: {} does not exist (`lspci -D` lists the devices)", path.display())]
    NoSuchDevice { addr: PciAddress, path: PathBuf },
    #[error(
        "{addr} is {vendor:04x}:{device:04x}, not an igb NIC (8086:10c9 82576 or 8086:1521 I350)"
    )]
    NotIgb {
        addr: PciAddress,
        vendor: u16,
        device: u16,
    },
    #[error("{addr} is not bound to vfio-pci: bind it with `echo 8086 {device:04x} > /sys/bus/pci/drivers/vfio-pci/new_id` (modprobe vfio-pci first)")]
    NotBound { addr: PciAddress, device: u16 },
    #[error("{addr} is bound to {driver}, not vfio-pci: rebind it with `echo {addr} > /sys/bus/pci/devices/{addr}/driver/unbind; echo 8086 {device:04x} > /sys/bus/pci/drivers/vfio-pci/new_id`")]
    OtherDriver {
        addr: PciAddress,
        driver: String,
        device: u16,
    },
    #[error("{addr} has no IOMMU group: the IOMMU is off; boot with intel_iommu=on (AMD: amd_iommu=on) and enable VT-d / AMD-Vi in the firmware")]
    NoIommuGroup { addr: PciAddress },
    #[error("IOMMU group {group} of {addr} is not viable: {others} must be bound to vfio-pci (or unbound) as well")]
    GroupNotViable {
        addr: PciAddress,
        group: u32,
        others: String,
    },
    #[error("{}: no such VFIO device file; is vfio-pci loaded (modprobe vfio-pci)?", path.display())]
    NoVfio { path: PathBuf },
    #[error("permission denied opening {}: run as root or give your user the device (chown USER {})", path.display(), path.display())]
    PermissionDenied { path: PathBuf },
    #[error("{} is busy: another process (a VM, another driver instance) holds IOMMU group {group}", path.display())]
    GroupBusy { path: PathBuf, group: u32 },
    #[error("{addr}: {what}: {detail}")]
    Vfio {
        addr: PciAddress,
        what: &'static str,
        detail: String,
    },
}

impl VfioError {
    /// True for mistakes in what the user asked for (bad or wrong address,
    /// device not bound): a command-line tool exits 2 for these, 1 for the
    /// rest (machine configuration, kernel refusals).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            VfioError::BadAddress(_)
                | VfioError::NoSuchDevice { .. }
                | VfioError::NotIgb { .. }
                | VfioError::NotBound { .. }
                | VfioError::OtherDriver { .. }
        )
    }
}

/// A PCI address `DDDD:BB:DD.F`, printed the way sysfs names devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PciAddress {
    pub domain: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl FromStr for PciAddress {
    type Err = VfioError;
    fn from_str(s: &str) -> Result<Self, VfioError> {
        let bad = || VfioError::BadAddress(s.to_string());
        let b = s.as_bytes();
        let shape = b.len() == 12
            && b[4] == b':'
            && b[7] == b':'
            && b[10] == b'.'
            && [0, 1, 2, 3, 5, 6, 8, 9, 11]
                .iter()
                .all(|&i| b[i].is_ascii_hexdigit());
        if !shape {
            return Err(bad());
        }
        let hex = |r: std::ops::Range<usize>| u16::from_str_radix(&s[r], 16).map_err(|_| bad());
        let addr = PciAddress {
            domain: hex(0..4)?,
            bus: hex(5..7)? as u8,
            device: hex(8..10)? as u8,
            function: hex(11..12)? as u8,
        };
        // Five bits of device, three of function.
        if addr.device > 0x1f || addr.function > 7 {
            return Err(bad());
        }
        Ok(addr)
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

/// Where sysfs and the VFIO device files live; tests point it at a fake
/// tree. (vfio-ioctls itself always opens /dev/vfio.)
#[derive(Clone, Debug)]
pub struct SysfsPaths {
    pub sys: PathBuf,
    pub dev_vfio: PathBuf,
}

impl Default for SysfsPaths {
    fn default() -> Self {
        SysfsPaths {
            sys: PathBuf::from("/sys"),
            dev_vfio: PathBuf::from("/dev/vfio"),
        }
    }
}

impl SysfsPaths {
    fn pci_device(&self, addr: PciAddress) -> PathBuf {
        self.sys.join("bus/pci/devices").join(addr.to_string())
    }
}

/// What sysfs says about a device that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub addr: PciAddress,
    /// `/sys/bus/pci/devices/ADDR`.
    pub sysfs: PathBuf,
    pub device_id: u16,
    pub group: u32,
}

/// Checks, in sysfs only, that `addr` is an igb bound to vfio-pci in a
/// viable IOMMU group. Needs no privileges and touches no device.
pub fn locate(paths: &SysfsPaths, addr: &str) -> Result<Located, VfioError> {
    let addr: PciAddress = addr.parse()?;
    let dir = paths.pci_device(addr);
    if !dir.exists() {
        return Err(VfioError::NoSuchDevice { addr, path: dir });
    }
    let vendor = read_hex_id(addr, &dir.join("vendor"))?;
    let device = read_hex_id(addr, &dir.join("device"))?;
    if vendor != INTEL_VENDOR || !IGB_DEVICES.iter().any(|&(d, _)| d == device) {
        return Err(VfioError::NotIgb {
            addr,
            vendor,
            device,
        });
    }
    match link_name(&dir.join("driver")) {
        None => return Err(VfioError::NotBound { addr, device }),
        Some(d) if d != "vfio-pci" => {
            return Err(VfioError::OtherDriver {
                addr,
                driver: d,
                device,
            })
        }
        Some(_) => {}
    }
    let group_link = dir.join("iommu_group");
    let group = match link_name(&group_link) {
        None => return Err(VfioError::NoIommuGroup { addr }),
        Some(n) => n.parse::<u32>().map_err(|_| VfioError::Vfio {
            addr,
            what: "reading sysfs",
            detail: format!(
                "{} points at {n:?}, not a group number",
                group_link.display()
            ),
        })?,
    };
    // The kernel refuses a group while any member is bound to a host driver.
    let blocking: Vec<String> = group_members(&group_link, addr)
        .into_iter()
        .filter(|(_, drv)| drv.as_deref().is_some_and(|d| !VIABLE_DRIVERS.contains(&d)))
        .map(|(a, drv)| format!("{a} (bound to {})", drv.unwrap_or_default()))
        .collect();
    if !blocking.is_empty() {
        return Err(VfioError::GroupNotViable {
            addr,
            group,
            others: blocking.join(", "),
        });
    }
    Ok(Located {
        addr,
        sysfs: dir,
        device_id: device,
        group,
    })
}

/// Drivers that leave a group usable for VFIO: vfio-pci itself, the
/// placeholder pci-stub, and the PCIe port driver of bridges.
const VIABLE_DRIVERS: [&str; 3] = ["vfio-pci", "pci-stub", "pcieport"];

/// The other devices in the group of `group_link`, with their drivers.
fn group_members(group_link: &Path, addr: PciAddress) -> Vec<(String, Option<String>)> {
    let Ok(entries) = std::fs::read_dir(group_link.join("devices")) else {
        return Vec::new();
    };
    let me = addr.to_string();
    let mut v: Vec<_> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy() != me)
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                link_name(&e.path().join("driver")),
            )
        })
        .collect();
    v.sort();
    v
}

/// The last component of the symlink `p` points at, or None without a link.
fn link_name(p: &Path) -> Option<String> {
    let target = std::fs::read_link(p).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Reads a sysfs ID file like `0x8086\n`.
fn read_hex_id(addr: PciAddress, p: &Path) -> Result<u16, VfioError> {
    let err = |detail: String| VfioError::Vfio {
        addr,
        what: "reading sysfs",
        detail,
    };
    let s = std::fs::read_to_string(p).map_err(|e| err(format!("{}: {e}", p.display())))?;
    let t = s.trim();
    u16::from_str_radix(t.trim_start_matches("0x"), 16)
        .map_err(|_| err(format!("{}: {t:?} is not a hex ID", p.display())))
}

/// Opens `/dev/vfio/N` once read-write (and closes it) so permission and
/// busy problems get their own message before vfio-ioctls' generic one.
fn check_group_file(paths: &SysfsPaths, loc: &Located) -> Result<(), VfioError> {
    let path = paths.dev_vfio.join(loc.group.to_string());
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
    {
        Ok(_) => Ok(()),
        Err(e) => Err(open_error(loc.addr, path, loc.group, e)),
    }
}

fn open_error(addr: PciAddress, path: PathBuf, group: u32, e: io::Error) -> VfioError {
    match e.kind() {
        io::ErrorKind::PermissionDenied => VfioError::PermissionDenied { path },
        io::ErrorKind::NotFound => VfioError::NoVfio { path },
        _ if e.raw_os_error() == Some(libc::EBUSY) => VfioError::GroupBusy { path, group },
        _ => VfioError::Vfio {
            addr,
            what: "opening the IOMMU group",
            detail: format!("{}: {e}", path.display()),
        },
    }
}

/// An igb NIC opened through VFIO. Share it as `Arc<dyn Device>`.
pub struct VfioNic {
    name: String,
    addr: PciAddress,
    // Field order is drop order: BAR0 is unmapped before the device fd
    // closes, the device before its container.
    bar: MmioBar,
    /// Live IOMMU mappings, IOVA -> length.
    mappings: Mutex<BTreeMap<u64, usize>>,
    device: VfioDevice,
    container: Arc<VfioContainer>,
}

impl VfioNic {
    /// Opens the igb at `pci_addr` (`DDDD:BB:DD.F`), enables bus mastering
    /// and maps BAR0.
    pub fn open(pci_addr: &str) -> Result<Arc<VfioNic>, VfioError> {
        Self::open_with(&SysfsPaths::default(), pci_addr)
    }

    /// [`VfioNic::open`] with the checks run against `paths` (a fake tree
    /// in tests). The VFIO files themselves are always opened under
    /// /dev/vfio: vfio-ioctls fixes that path.
    pub fn open_with(paths: &SysfsPaths, pci_addr: &str) -> Result<Arc<VfioNic>, VfioError> {
        let loc = locate(paths, pci_addr)?;
        let addr = loc.addr;
        check_group_file(paths, &loc)?;
        let container = VfioContainer::new(None).map_err(|e| match e {
            vfio_ioctls::VfioError::OpenContainer(io) => {
                let path = PathBuf::from("/dev/vfio/vfio");
                match io.kind() {
                    io::ErrorKind::PermissionDenied => VfioError::PermissionDenied { path },
                    io::ErrorKind::NotFound => VfioError::NoVfio { path },
                    _ => VfioError::Vfio {
                        addr,
                        what: "opening /dev/vfio/vfio",
                        detail: io.to_string(),
                    },
                }
            }
            e => VfioError::Vfio {
                addr,
                what: "setting up the VFIO container",
                detail: e.to_string(),
            },
        })?;
        let container = Arc::new(container);
        let ops: Arc<dyn VfioOps> = container.clone();
        let device = VfioDevice::new(&loc.sysfs, ops, false).map_err(|e| match e {
            vfio_ioctls::VfioError::OpenGroup(io, _) => open_error(
                addr,
                paths.dev_vfio.join(loc.group.to_string()),
                loc.group,
                io,
            ),
            vfio_ioctls::VfioError::GroupViable => {
                let others: Vec<String> = group_members(&loc.sysfs.join("iommu_group"), addr)
                    .into_iter()
                    .map(|(a, d)| format!("{a} ({})", d.unwrap_or_else(|| "no driver".into())))
                    .collect();
                let others = if others.is_empty() {
                    "every device in it".to_string()
                } else {
                    others.join(", ")
                };
                VfioError::GroupNotViable {
                    addr,
                    group: loc.group,
                    others,
                }
            }
            e => VfioError::Vfio {
                addr,
                what: "opening the VFIO device",
                detail: e.to_string(),
            },
        })?;

        let config = ConfigSpace::of(&device).map_err(|detail| VfioError::Vfio {
            addr,
            what: "PCI config space",
            detail,
        })?;
        config
            .update_command(PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 0)
            .map_err(|detail| VfioError::Vfio {
                addr,
                what: "enabling bus mastering",
                detail,
            })?;
        let bar = map_bar0(&device).map_err(|detail| VfioError::Vfio {
            addr,
            what: "mapping BAR0",
            detail,
        })?;
        if bar.read32(crate::regs::STATUS) == u32::MAX {
            tracing::warn!(%addr, "STATUS reads all-ones: the device may not decode BAR0");
        }
        tracing::info!(%addr, group = loc.group, bar0 = bar.len(), "VFIO device open");
        Ok(Arc::new(VfioNic {
            name: format!("vfio:{addr}"),
            addr,
            bar,
            mappings: Mutex::new(BTreeMap::new()),
            device,
            container,
        }))
    }

    pub fn pci_address(&self) -> PciAddress {
        self.addr
    }

    /// Bytes of IOVA space currently mapped.
    pub fn mapped_bytes(&self) -> usize {
        self.mappings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }
}

/// Checked access to PCI config space (VFIO region 7) through the device
/// fd. vfio-ioctls' region_read/region_write only log failures, so this
/// uses pread/pwrite and checks the byte counts.
struct ConfigSpace {
    fd: RawFd,
    offset: u64,
}

impl ConfigSpace {
    fn of(device: &VfioDevice) -> Result<ConfigSpace, String> {
        let size = device.get_region_size(CONFIG_REGION);
        if size < 64 {
            return Err(format!(
                "config region is {size} bytes, expected at least 64"
            ));
        }
        Ok(ConfigSpace {
            fd: device.as_raw_fd(),
            offset: device.get_region_offset(CONFIG_REGION),
        })
    }

    fn read16(&self, reg: u64) -> Result<u16, String> {
        let mut b = [0u8; 2];
        // SAFETY: `b` is a live 2-byte buffer; `fd` is the device fd, open
        // while the VfioDevice that gave it lives (it outlives every caller).
        let n = unsafe {
            libc::pread(
                self.fd,
                b.as_mut_ptr().cast(),
                2,
                (self.offset + reg) as libc::off_t,
            )
        };
        match n {
            2 => Ok(u16::from_le_bytes(b)),
            n if n < 0 => Err(format!("read at {reg:#x}: {}", io::Error::last_os_error())),
            n => Err(format!("read at {reg:#x}: {n} of 2 bytes")),
        }
    }

    fn write16(&self, reg: u64, v: u16) -> Result<(), String> {
        let b = v.to_le_bytes();
        // SAFETY: as in read16; the kernel only reads the 2-byte buffer.
        let n = unsafe {
            libc::pwrite(
                self.fd,
                b.as_ptr().cast(),
                2,
                (self.offset + reg) as libc::off_t,
            )
        };
        match n {
            2 => Ok(()),
            n if n < 0 => Err(format!("write at {reg:#x}: {}", io::Error::last_os_error())),
            n => Err(format!("write at {reg:#x}: {n} of 2 bytes")),
        }
    }

    /// Sets `set` and clears `clear` in the command register, then reads
    /// it back to prove the change took.
    fn update_command(&self, set: u16, clear: u16) -> Result<u16, String> {
        let old = self.read16(PCI_COMMAND)?;
        let new = (old | set) & !clear;
        if new != old {
            self.write16(PCI_COMMAND, new)?;
        }
        let now = self.read16(PCI_COMMAND)?;
        if now & set != set || now & clear != 0 {
            return Err(format!(
                "command register reads {now:#06x} after writing {new:#06x}"
            ));
        }
        Ok(now)
    }
}

/// An mmap of a device region, unmapped on drop.
struct RegionMap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a plain owned mapping; MmioBar coordinates the accesses.
unsafe impl Send for RegionMap {}
// SAFETY: as above; RegionMap has no interior state.
unsafe impl Sync for RegionMap {}

impl Drop for RegionMap {
    fn drop(&mut self) {
        // SAFETY: ptr/len are the mapping made in map_bar0, unmapped only here.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Maps BAR0 through the device fd (vfio-ioctls has no helper for this).
fn map_bar0(device: &VfioDevice) -> Result<MmioBar, String> {
    let flags = device.get_region_flags(BAR0_REGION);
    let size = device.get_region_size(BAR0_REGION);
    if flags & REGION_FLAG_MMAP == 0 {
        return Err(format!("region cannot be mmapped (flags {flags:#x})"));
    }
    if size < MIN_BAR0_LEN {
        return Err(format!("BAR0 is {size} bytes, an igb has 128 KiB"));
    }
    let len = size as usize;
    let offset = device.get_region_offset(BAR0_REGION);
    // SAFETY: a new shared mapping with no address hint over the device fd
    // at the offset VFIO reported for BAR0; the result is checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            device.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!(
            "mmap of {len} bytes: {}",
            io::Error::last_os_error()
        ));
    }
    let ptr = NonNull::new(p.cast::<u8>()).ok_or("mmap returned null")?;
    let owner = RegionMap { ptr, len };
    // SAFETY: ptr..ptr+len is the page-aligned BAR0 mapping owned by
    // `owner`, which the MmioBar keeps alive (and unmaps when dropped).
    Ok(unsafe { MmioBar::new(ptr, len, Box::new(owner)) })
}

impl RegisterIo for VfioNic {
    fn read32(&self, offset: u32) -> u32 {
        self.bar.read32(offset)
    }
    fn write32(&self, offset: u32, value: u32) {
        self.bar.write32(offset, value)
    }
}

impl DmaMapper for VfioNic {
    unsafe fn map(&self, iova: u64, host: *mut u8, len: usize) -> Result<(), DmaError> {
        let mut maps = self.mappings.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the caller keeps host..host+len valid until `unmap` for
        // this IOVA returns (DmaMapper::map's contract) and touches it only
        // through raw pointers while the device may.
        unsafe { self.container.vfio_dma_map(iova, len, host) }.map_err(|e| {
            DmaError::Backend(format!(
                "{}: map of {len:#x} bytes at IOVA {iova:#x}: {e}",
                self.name
            ))
        })?;
        maps.insert(iova, len);
        Ok(())
    }

    fn unmap(&self, iova: u64, len: usize) -> Result<(), DmaError> {
        let mut maps = self.mappings.lock().unwrap_or_else(|e| e.into_inner());
        if !maps.contains_key(&iova) {
            return Err(DmaError::NotMapped(iova));
        }
        self.container.vfio_dma_unmap(iova, len).map_err(|e| {
            DmaError::Backend(format!(
                "{}: unmap of {len:#x} bytes at IOVA {iova:#x}: {e}",
                self.name
            ))
        })?;
        maps.remove(&iova);
        Ok(())
    }
}

impl Device for VfioNic {
    fn name(&self) -> String {
        self.name.clone()
    }
}

impl Drop for VfioNic {
    fn drop(&mut self) {
        // Every ring and pool holding this device is gone by now (they hold
        // the Arc). Stop DMA at the source first, then revoke what is left.
        match ConfigSpace::of(&self.device).and_then(|c| c.update_command(0, PCI_COMMAND_MASTER)) {
            Ok(_) => {}
            Err(e) => tracing::error!(device = %self.name, "cannot clear bus mastering: {e}"),
        }
        let maps = std::mem::take(self.mappings.get_mut().unwrap_or_else(|e| e.into_inner()));
        for (iova, len) in maps {
            tracing::warn!(device = %self.name, "IOVA {iova:#x}+{len:#x} still mapped at close; unmapping");
            if let Err(e) = self.container.vfio_dma_unmap(iova, len) {
                tracing::error!(device = %self.name, "unmap of IOVA {iova:#x}: {e}");
            }
        }
        // Then BAR0, the device fd and the container close in field order.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake sysfs tree under a fresh temp directory, removed on drop.
    struct FakeSys {
        root: PathBuf,
    }

    const ADDR: &str = "0000:03:00.0";

    impl FakeSys {
        fn new(name: &str) -> FakeSys {
            let root =
                std::env::temp_dir().join(format!("igb-vfio-test-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
            std::fs::create_dir_all(root.join("dev/vfio")).unwrap();
            FakeSys { root }
        }
        fn paths(&self) -> SysfsPaths {
            SysfsPaths {
                sys: self.root.join("sys"),
                dev_vfio: self.root.join("dev/vfio"),
            }
        }
        fn dev_dir(&self, addr: &str) -> PathBuf {
            self.root.join("sys/bus/pci/devices").join(addr)
        }
        fn device(&self, addr: &str, vendor: &str, device: &str) -> &Self {
            let d = self.dev_dir(addr);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("vendor"), format!("{vendor}\n")).unwrap();
            std::fs::write(d.join("device"), format!("{device}\n")).unwrap();
            self
        }
        fn bind(&self, addr: &str, driver: &str) -> &Self {
            let drv = self.root.join("sys/bus/pci/drivers").join(driver);
            std::fs::create_dir_all(&drv).unwrap();
            symlink(&drv, self.dev_dir(addr).join("driver")).unwrap();
            self
        }
        fn group(&self, n: u32, members: &[&str]) -> &Self {
            let g = self
                .root
                .join("sys/kernel/iommu_groups")
                .join(n.to_string());
            std::fs::create_dir_all(g.join("devices")).unwrap();
            for m in members {
                symlink(self.dev_dir(m), g.join("devices").join(m)).unwrap();
                symlink(&g, self.dev_dir(m).join("iommu_group")).unwrap();
            }
            self
        }
        /// An 82576 bound to vfio-pci alone in group 7.
        fn good(name: &str) -> FakeSys {
            let f = FakeSys::new(name);
            f.device(ADDR, "0x8086", "0x10c9")
                .bind(ADDR, "vfio-pci")
                .group(7, &[ADDR]);
            f
        }
    }

    impl Drop for FakeSys {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    #[test]
    fn pci_address_format() {
        let a: PciAddress = "0000:03:00.0".parse().unwrap();
        assert_eq!(
            a,
            PciAddress {
                domain: 0,
                bus: 3,
                device: 0,
                function: 0
            }
        );
        assert_eq!(
            "0001:AF:1f.7".parse::<PciAddress>().unwrap().to_string(),
            "0001:af:1f.7"
        );
        for bad in [
            "03:00.0",
            "0000:03:00.8",
            "0000:03:20.0",
            "0000:03:00:0",
            "0000:0g:00.0",
            "",
            "0000:03:00.00",
        ] {
            let e = bad.parse::<PciAddress>().unwrap_err();
            assert!(matches!(e, VfioError::BadAddress(_)), "{bad}: {e}");
            assert!(e.is_usage());
        }
    }

    #[test]
    fn bad_address_is_reported_before_touching_sysfs() {
        let e = locate(
            &SysfsPaths {
                sys: "/nonexistent".into(),
                dev_vfio: "/nonexistent".into(),
            },
            "nonsense",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"nonsense\" is not a PCI address like 0000:03:00.0 (DDDD:BB:DD.F in hex)"
        );
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "builds a fake sysfs on disk: file system access, not allowed under Miri isolation"
    )]
    fn missing_device() {
        let f = FakeSys::new("missing");
        let e = locate(&f.paths(), ADDR).unwrap_err();
        assert!(matches!(e, VfioError::NoSuchDevice { .. }), "{e}");
        assert!(e.is_usage());
        assert!(
            e.to_string().starts_with("no PCI device 0000:03:00.0: "),
            "{e}"
        );
        // Also what VfioNic::open says, before it needs any VFIO file.
        let e = VfioNic::open_with(&f.paths(), ADDR).err().unwrap();
        assert!(matches!(e, VfioError::NoSuchDevice { .. }), "{e}");
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "builds a fake sysfs on disk: file system access, not allowed under Miri isolation"
    )]
    fn wrong_vendor_or_device() {
        for (name, v, d) in [
            ("vendor", "0x10ec", "0x10c9"),
            ("device", "0x8086", "0x100e"),
        ] {
            let f = FakeSys::new(name);
            f.device(ADDR, v, d)
                .bind(ADDR, "vfio-pci")
                .group(7, &[ADDR]);
            let e = locate(&f.paths(), ADDR).unwrap_err();
            assert!(matches!(e, VfioError::NotIgb { .. }), "{e}");
            assert!(e.is_usage());
            let want = format!("{ADDR} is {}:{}, not an igb NIC", &v[2..], &d[2..]);
            assert!(e.to_string().starts_with(&want), "{e}");
        }
        // Both IDs the driver knows pass.
        for d in ["0x10c9", "0x1521"] {
            let f = FakeSys::new(&format!("ok{d}"));
            f.device(ADDR, "0x8086", d)
                .bind(ADDR, "vfio-pci")
                .group(3, &[ADDR]);
            assert_eq!(locate(&f.paths(), ADDR).unwrap().group, 3);
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "builds a fake sysfs on disk: file system access, not allowed under Miri isolation"
    )]
    fn unbound_device() {
        let f = FakeSys::new("unbound");
        f.device(ADDR, "0x8086", "0x1521").group(7, &[ADDR]);
        let e = locate(&f.paths(), ADDR).unwrap_err();
        assert!(matches!(e, VfioError::NotBound { .. }), "{e}");
        assert!(e.is_usage());
        assert!(
            e.to_string()
                .contains("echo 8086 1521 > /sys/bus/pci/drivers/vfio-pci/new_id"),
            "{e}"
        );
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "builds a fake sysfs on disk: file system access, not allowed under Miri isolation"
    )]
    fn bound_to_another_driver() {
        let f = FakeSys::new("igb");
        f.device(ADDR, "0x8086", "0x10c9")
            .bind(ADDR, "igb")
            .group(7, &[ADDR]);
        let e = locate(&f.paths(), ADDR).unwrap_err();
        assert!(
            matches!(&e, VfioError::OtherDriver { driver, .. } if driver == "igb"),
            "{e}"
        );
        assert!(e.is_usage());
        let s = e.to_string();
        assert!(
            s.starts_with("0000:03:00.0 is bound to igb, not vfio-pci"),
            "{s}"
        );
        assert!(
            s.contains("echo 0000:03:00.0 > /sys/bus/pci/devices/0000:03:00.0/driver/unbind; echo 8086 10c9 > /sys/bus/pci/drivers/vfio-pci/new_id"),
            "{s}"
        );
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "builds a fake sysfs on disk: file system access, not allowed under Miri isolation"
    )]
    fn no_iommu_group() {
        let f = FakeSys::new("noiommu");
        f.device(ADDR, "0x8086", "0x10c9").bind(ADDR, "vfio-pci");
        let e = locate(&f.paths(), ADDR).unwrap_err();
        assert!(matches!(e, VfioError::NoIommuGroup { .. }), "{e}");
        assert!(!e.is_usage());
        assert!(e.to_string().contains("intel_iommu=on"), "{e}");
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "builds a fake sysfs on disk: file system access, not allowed under Miri isolation"
    )]
    fn group_shared_with_a_host_driver() {
        let f = FakeSys::new("shared");
        let other = "0000:03:00.1";
        let stub = "0000:03:00.2";
        f.device(ADDR, "0x8086", "0x10c9").bind(ADDR, "vfio-pci");
        f.device(other, "0x8086", "0x10c9").bind(other, "igb");
        f.device(stub, "0x8086", "0x10c9").bind(stub, "pci-stub");
        f.group(9, &[ADDR, other, stub]);
        let e = locate(&f.paths(), ADDR).unwrap_err();
        assert!(!e.is_usage());
        assert_eq!(
            e.to_string(),
            "IOMMU group 9 of 0000:03:00.0 is not viable: 0000:03:00.1 (bound to igb) must be bound to vfio-pci (or unbound) as well"
        );
        // Once the sibling is on vfio-pci the group is fine.
        std::fs::remove_file(f.dev_dir(other).join("driver")).unwrap();
        f.bind(other, "vfio-pci");
        let loc = locate(&f.paths(), ADDR).unwrap();
        assert_eq!(
            (loc.group, loc.device_id, loc.sysfs),
            (9, 0x10c9, f.dev_dir(ADDR))
        );
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "builds a fake sysfs on disk: file system access, not allowed under Miri isolation"
    )]
    fn group_file_missing() {
        let f = FakeSys::good("nodev");
        let e = VfioNic::open_with(&f.paths(), ADDR).err().unwrap();
        assert!(matches!(e, VfioError::NoVfio { .. }), "{e}");
        assert!(
            e.to_string().ends_with(
                "dev/vfio/7: no such VFIO device file; is vfio-pci loaded (modprobe vfio-pci)?"
            ),
            "{e}"
        );
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "builds a fake sysfs on disk: file system access, not allowed under Miri isolation"
    )]
    fn group_file_permission() {
        // Root opens anything: the check only means something as a user
        // (`.ci/run` runs it again as nobody).
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIP: group_file_permission runs only as non-root"
            );
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let f = FakeSys::good("perm");
        let g = f.root.join("dev/vfio/7");
        std::fs::write(&g, b"").unwrap();
        std::fs::set_permissions(&g, std::fs::Permissions::from_mode(0o000)).unwrap();
        let e = VfioNic::open_with(&f.paths(), ADDR).err().unwrap();
        assert!(matches!(e, VfioError::PermissionDenied { .. }), "{e}");
    }

    #[test]
    fn open_errors_map_to_messages() {
        let p = PathBuf::from("/dev/vfio/5");
        let a: PciAddress = ADDR.parse().unwrap();
        let denied = open_error(a, p.clone(), 5, io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(
            denied.to_string(),
            "permission denied opening /dev/vfio/5: run as root or give your user the device (chown USER /dev/vfio/5)"
        );
        let busy = open_error(a, p, 5, io::Error::from_raw_os_error(libc::EBUSY));
        assert!(
            matches!(busy, VfioError::GroupBusy { group: 5, .. }),
            "{busy}"
        );
    }
}
