//! Advanced RX and TX descriptors: 16 bytes each, field layouts declared once.
//!
//! Descriptor rings live in DMA memory shared with the device, so the ring
//! code never forms `&`/`&mut` references to them: it reads and writes whole
//! dwords through [`DescSlot`] (atomics, so the compiler can neither tear
//! nor reorder them), then decodes them with the `bitfield` views below.
//!
//! ```text
//! RX read format (driver writes)        RX write-back format (device writes)
//! dw0-1  pkt_addr (payload IOVA)        dw0  pkt_info | hdr_info (HDR_LEN, SPH)
//! dw2-3  hdr_addr (header IOVA)         dw1  RSS hash / IP id
//!                                       dw2  status_error (DD, EOP, csum, errors)
//!                                       dw3  PKT_LEN | VLAN
//! ```

use bitfield::bitfield;
use std::sync::atomic::{AtomicU32, Ordering};

/// Size of one advanced descriptor in bytes.
pub const DESC_LEN: usize = 16;

/// One descriptor in ring memory, accessed dword by dword.
#[repr(C, align(16))]
pub struct DescSlot {
    dw: [AtomicU32; 4],
}

impl DescSlot {
    /// Writes a 64-bit address into dwords `i` and `i + 1` (little endian).
    #[inline]
    fn store_u64(&self, i: usize, v: u64) {
        self.dw[i].store(v as u32, Ordering::Relaxed);
        self.dw[i + 1].store((v >> 32) as u32, Ordering::Relaxed);
    }

    #[inline]
    fn load_u64(&self, i: usize) -> u64 {
        let lo = self.dw[i].load(Ordering::Relaxed) as u64;
        let hi = self.dw[i + 1].load(Ordering::Relaxed) as u64;
        lo | hi << 32
    }

    /// Driver: post an RX buffer pair (read format). Clears DD because the
    /// header address overwrites dword 2.
    #[inline]
    pub fn write_rx_read(&self, pkt_addr: u64, hdr_addr: u64) {
        self.store_u64(0, pkt_addr);
        self.store_u64(2, hdr_addr);
    }

    /// Driver: the header buffer address of a read-format descriptor
    /// alone (refill posts the payload buffer first, with
    /// [`Self::write_rx_read`], then the header slot).
    #[inline]
    pub fn write_rx_hdr(&self, hdr_addr: u64) {
        self.store_u64(2, hdr_addr);
    }

    /// Device: fetch an RX read-format descriptor.
    #[inline]
    pub fn read_rx_read(&self) -> (u64, u64) {
        (self.load_u64(0), self.load_u64(2))
    }

    /// Driver: the status dword with acquire ordering. Once DD is seen here,
    /// every byte the device wrote before publishing DD (buffers, other
    /// dwords) is visible.
    #[inline]
    pub fn status_acquire(&self) -> u32 {
        self.dw[2].load(Ordering::Acquire)
    }

    /// Driver: the full write-back, after [`Self::status_acquire`] saw DD.
    #[inline]
    pub fn read_rx_wb(&self, status: u32) -> RxWriteBack {
        RxWriteBack {
            info: RxWbInfo(self.dw[0].load(Ordering::Relaxed)),
            rss: self.dw[1].load(Ordering::Relaxed),
            status: RxWbStatus(status),
            len: RxWbLen(self.dw[3].load(Ordering::Relaxed)),
        }
    }

    /// Device: write an RX write-back. The status dword goes last, with
    /// release ordering, so DD publishes everything written before it,
    /// exactly as a NIC orders its DMA writes.
    #[inline]
    pub fn write_rx_wb(&self, wb: &RxWriteBack) {
        self.dw[0].store(wb.info.0, Ordering::Relaxed);
        self.dw[1].store(wb.rss, Ordering::Relaxed);
        self.dw[3].store(wb.len.0, Ordering::Relaxed);
        self.dw[2].store(wb.status.0, Ordering::Release);
    }

    /// Driver: post a TX data descriptor.
    #[inline]
    pub fn write_tx(&self, addr: u64, cmd: TxCmdTypeLen, olinfo: TxOlinfo) {
        self.store_u64(0, addr);
        self.dw[2].store(cmd.0, Ordering::Relaxed);
        self.dw[3].store(olinfo.0, Ordering::Relaxed);
    }

    /// Device: fetch a TX data descriptor.
    #[inline]
    pub fn read_tx(&self) -> (u64, TxCmdTypeLen, TxOlinfo) {
        (
            self.load_u64(0),
            TxCmdTypeLen(self.dw[2].load(Ordering::Relaxed)),
            TxOlinfo(self.dw[3].load(Ordering::Relaxed)),
        )
    }

    /// Device: TX write-back, DD in dword 3, published with release.
    #[inline]
    pub fn write_tx_done(&self) {
        self.dw[3].store(TX_STATUS_DD, Ordering::Release);
    }

    /// Driver: TX write-back status (dword 3) with acquire ordering.
    #[inline]
    pub fn tx_status_acquire(&self) -> u32 {
        self.dw[3].load(Ordering::Acquire)
    }

    /// Raw dwords (tests, tracing, fuzzing).
    pub fn raw(&self) -> [u32; 4] {
        std::array::from_fn(|i| self.dw[i].load(Ordering::Acquire))
    }

    /// Writes raw dwords, status last with release (tests and fault injection).
    pub fn set_raw(&self, v: [u32; 4]) {
        self.dw[0].store(v[0], Ordering::Relaxed);
        self.dw[1].store(v[1], Ordering::Relaxed);
        self.dw[3].store(v[3], Ordering::Relaxed);
        self.dw[2].store(v[2], Ordering::Release);
    }
}

bitfield! {
    /// Write-back dword 0: packet type and header info.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub struct RxWbInfo(pub u32);
    impl Debug;
    /// RSS type (see `RSS_TYPE_*`): which hash dword 1 holds.
    pub rss_type, set_rss_type: 3, 0;
    /// Packet type (see `PKT_TYPE_*`).
    pub pkt_type, set_pkt_type: 16, 4;
    /// Receive-side coalescing count (reserved on the 82576; ixgbe's
    /// RSCCNT): segments of a coalesced packet whose payload starts in this
    /// descriptor, saturating at 15; 0 for packets that were not coalesced.
    /// Only the simulator's GRO model sets it (see `hw_sim::gro`).
    pub rsc_cnt, set_rsc_cnt: 20, 17;
    /// Header length in bytes as parsed by the device.
    pub hdr_len, set_hdr_len: 30, 21;
    /// Split header: the header went into the header buffer.
    pub sph, set_sph: 31;
}

bitfield! {
    /// Write-back dword 2: status (bits 19:0) and errors (bits 31:20).
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub struct RxWbStatus(pub u32);
    impl Debug;
    /// Descriptor done: the device is finished with this descriptor.
    pub dd, set_dd: 0;
    /// End of packet: the last descriptor of a frame.
    pub eop, set_eop: 1;
    /// VLAN tag stripped into dword 3.
    pub vp, set_vp: 3;
    /// UDP checksum was checked (with `l4cs`).
    pub udpcs, set_udpcs: 4;
    /// TCP/UDP checksum was checked; `tcpe` says whether it was wrong.
    pub l4cs, set_l4cs: 5;
    /// IPv4 header checksum was checked; `ipe` says whether it was wrong.
    pub ipcs, set_ipcs: 6;
    /// Dword 1 holds the IP identification.
    pub ipidv, set_ipidv: 9;
    /// Header buffer overflow: the header did not fit the header buffer.
    pub hbo, set_hbo: 23;
    /// CRC / symbol / sequence / carrier-extension errors (frame errors).
    pub frame_err, set_frame_err: 28, 24;
    /// TCP/UDP checksum error.
    pub tcpe, set_tcpe: 29;
    /// IPv4 header checksum error.
    pub ipe, set_ipe: 30;
    /// RX data error.
    pub rxe, set_rxe: 31;
}

bitfield! {
    /// Write-back dword 3: bytes in the packet buffer and VLAN tag.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub struct RxWbLen(pub u32);
    impl Debug;
    pub pkt_len, set_pkt_len: 15, 0;
    pub vlan, set_vlan: 31, 16;
}

/// A decoded RX write-back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxWriteBack {
    pub info: RxWbInfo,
    pub rss: u32,
    pub status: RxWbStatus,
    pub len: RxWbLen,
}

impl RxWriteBack {
    pub fn zeroed() -> Self {
        RxWriteBack {
            info: RxWbInfo(0),
            rss: 0,
            status: RxWbStatus(0),
            len: RxWbLen(0),
        }
    }

    pub fn to_raw(self) -> [u32; 4] {
        [self.info.0, self.rss, self.status.0, self.len.0]
    }
}

/// Packet type bits (write-back `pkt_type`).
pub const PKT_TYPE_IPV4: u32 = 1 << 0;
pub const PKT_TYPE_IPV6: u32 = 1 << 2;
pub const PKT_TYPE_TCP: u32 = 1 << 4;
pub const PKT_TYPE_UDP: u32 = 1 << 5;

/// RSS types (write-back `rss_type`, low 4 bits of dword 0): which hash
/// dword 1 holds. 0 when RSS is off or the frame was not hashed (then it
/// went to queue 0 and dword 1 is 0). Values as QEMU's igb model writes them.
pub const RSS_TYPE_NONE: u32 = 0;
pub const RSS_TYPE_IPV4_TCP: u32 = 1;
pub const RSS_TYPE_IPV4: u32 = 2;
/// TCP/IPv6 (QEMU's `IPV6TCPEX`: the type it reports for all TCP/IPv6).
pub const RSS_TYPE_IPV6_TCP_EX: u32 = 3;
pub const RSS_TYPE_IPV6_EX: u32 = 4;
pub const RSS_TYPE_IPV6: u32 = 5;
pub const RSS_TYPE_IPV6_TCP: u32 = 6;
pub const RSS_TYPE_IPV4_UDP: u32 = 7;
pub const RSS_TYPE_IPV6_UDP: u32 = 8;
pub const RSS_TYPE_IPV6_UDP_EX: u32 = 9;

bitfield! {
    /// Advanced TX data descriptor, dword 2.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub struct TxCmdTypeLen(pub u32);
    impl Debug;
    /// Buffer length in bytes.
    pub length, set_length: 15, 0;
    /// Descriptor type: 3 = advanced data.
    pub dtyp, set_dtyp: 23, 20;
    /// End of packet.
    pub eop, set_eop: 24;
    /// Insert the Ethernet FCS.
    pub ifcs, set_ifcs: 25;
    /// Report status: write back DD when done.
    pub rs, set_rs: 27;
    /// Descriptor extension: advanced format.
    pub dext, set_dext: 29;
}

impl TxCmdTypeLen {
    /// A data descriptor for `len` bytes; `eop` on the frame's last buffer.
    pub fn data(len: u16, eop: bool) -> Self {
        let mut c = TxCmdTypeLen(0);
        c.set_length(len as u32);
        c.set_dtyp(TX_DTYP_DATA);
        c.set_dext(true);
        c.set_ifcs(true);
        c.set_rs(true);
        c.set_eop(eop);
        c
    }
}

pub const TX_DTYP_DATA: u32 = 3;

bitfield! {
    /// Advanced TX data descriptor, dword 3 (read format).
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub struct TxOlinfo(pub u32);
    impl Debug;
    /// Total payload length of the frame in bytes.
    pub paylen, set_paylen: 31, 14;
}

impl TxOlinfo {
    pub fn with_paylen(paylen: u32) -> Self {
        let mut o = TxOlinfo(0);
        o.set_paylen(paylen);
        o
    }
}

/// TX write-back: DD in dword 3.
pub const TX_STATUS_DD: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hdr_info_layout_matches_igb_notes() {
        // HDR_LEN = (hdr_info & 0x7FE0) >> 5 and SPH = bit 15 of the upper 16 bits.
        let mut i = RxWbInfo(0);
        i.set_hdr_len(42);
        i.set_sph(true);
        let hdr_info = i.0 >> 16;
        assert_eq!((hdr_info & 0x7FE0) >> 5, 42);
        assert_eq!(hdr_info & 0x8000, 0x8000);
    }

    #[test]
    fn status_bits() {
        let mut s = RxWbStatus(0);
        s.set_dd(true);
        s.set_eop(true);
        s.set_hbo(true);
        assert_eq!(s.0, 0x0080_0003);
        let mut c = TxCmdTypeLen::data(60, true);
        assert_eq!(c.0 & 0xFFFF, 60);
        assert_eq!(c.0 & 0x00F0_0000, 0x0030_0000);
        c.set_rs(false);
        assert_eq!(c.0 & 0x2B00_0000, 0x2300_0000);
    }

    #[test]
    fn slot_round_trip() {
        let s = DescSlot {
            dw: Default::default(),
        };
        s.write_rx_read(0x1234_5678_9abc, 0xdead_beef_0000);
        assert_eq!(s.read_rx_read(), (0x1234_5678_9abc, 0xdead_beef_0000));
        assert_eq!(std::mem::size_of::<DescSlot>(), DESC_LEN);
    }
}
