//! igb (82576 / I350) BAR0 registers this driver and the simulator use.
//!
//! Only the registers and fields we program are defined, each next to its
//! unit. Offsets are bytes into BAR0; every register is 32 bits, little endian.
//! Facts checked against the datasheet and QEMU's igb model: see
//! `shared/igb-notes.md`.

/// Device control. `RST` resets the MAC and is self-clearing.
pub const CTRL: u32 = 0x0000;
pub const CTRL_RST: u32 = 1 << 26;
/// Set link up (forces the MAC to follow the PHY link state).
pub const CTRL_SLU: u32 = 1 << 6;

/// Device status. `LU` reflects the PHY link.
pub const STATUS: u32 = 0x0008;
pub const STATUS_LU: u32 = 1 << 1;

/// MDI control: PHY register access through the MAC.
pub const MDIC: u32 = 0x0020;
pub const MDIC_DATA_MASK: u32 = 0xFFFF;
pub const MDIC_REG_SHIFT: u32 = 16;
pub const MDIC_PHY_SHIFT: u32 = 21;
pub const MDIC_OP_WRITE: u32 = 1 << 26;
pub const MDIC_OP_READ: u32 = 2 << 26;
pub const MDIC_READY: u32 = 1 << 28;
pub const MDIC_ERROR: u32 = 1 << 30;

/// PHY address of the internal PHY on 82576 / I350.
pub const PHY_ADDR: u32 = 1;
/// PHY register 0: basic mode control (IEEE 802.3 clause 22).
pub const PHY_BMCR: u32 = 0;
pub const BMCR_FULL_DUPLEX: u16 = 1 << 8;
pub const BMCR_AN_RESTART: u16 = 1 << 9;
pub const BMCR_AN_ENABLE: u16 = 1 << 12;
pub const BMCR_SPEED_1000: u16 = 1 << 6;
/// PHY register 1: basic mode status.
pub const PHY_BMSR: u32 = 1;
pub const BMSR_AN_COMPLETE: u16 = 1 << 5;
pub const BMSR_LINK: u16 = 1 << 2;

/// Interrupt mask clear (legacy / MSI causes) and extended mask clear.
/// A polling driver writes all-ones to both.
pub const IMC: u32 = 0x00D8;
pub const EIMC: u32 = 0x1528;

/// Receive control.
pub const RCTL: u32 = 0x0100;
pub const RCTL_EN: u32 = 1 << 1;
pub const RCTL_UPE: u32 = 1 << 3;
pub const RCTL_MPE: u32 = 1 << 4;
/// MAC loopback: transmitted frames come back on receive.
pub const RCTL_LBM_MAC: u32 = 1 << 6;
pub const RCTL_BAM: u32 = 1 << 15;
/// Long packet enable: accept frames above 1522 B, up to RLPML.
pub const RCTL_LPE: u32 = 1 << 5;

/// Receive long packet maximum length in bytes.
pub const RLPML: u32 = 0x5004;
/// Strip the Ethernet CRC before DMA.
pub const RCTL_SECRC: u32 = 1 << 26;
/// Receive buffer size, used when SRRCTL.BSIZEPACKET is 0: bits 17:16 select
/// 2048 / 1024 / 512 / 256 bytes, or 16384 / 8192 / 4096 with `RCTL_BSEX`.
pub const RCTL_BSIZE_MASK: u32 = 3 << 16;
pub const RCTL_BSEX: u32 = 1 << 25;

/// Transmit control.
pub const TCTL: u32 = 0x0400;
pub const TCTL_EN: u32 = 1 << 1;
pub const TCTL_PSP: u32 = 1 << 3;

/// Receive checksum control: enable IPv4 and TCP/UDP checksum offload.
pub const RXCSUM: u32 = 0x5000;
pub const RXCSUM_IPOFLD: u32 = 1 << 8;
pub const RXCSUM_TUOFLD: u32 = 1 << 9;
/// Packet checksum disable: dword1 carries the RSS hash instead of the IP id.
pub const RXCSUM_PCSD: u32 = 1 << 13;

/// Multiple receive queues command: how frames are spread over the RX
/// queues. Bits 2:0 pick the mode, bits 31:16 the RSS hash inputs.
pub const MRQC: u32 = 0x5818;
/// Mode field (bits 2:0): QEMU's model checks bits 1:0 only.
pub const MRQC_MODE_MASK: u32 = 0x7;
/// Mode 010b: RSS alone, no VMDq (Linux `E1000_MRQC_ENABLE_RSS_MQ`).
pub const MRQC_ENABLE_RSS: u32 = 0x2;
/// Hash TCP/IPv4 on the 4-tuple (src ip, dst ip, src port, dst port).
pub const MRQC_RSS_FIELD_IPV4_TCP: u32 = 1 << 16;
/// Hash IPv4 on the 2-tuple (src ip, dst ip).
pub const MRQC_RSS_FIELD_IPV4: u32 = 1 << 17;
/// Hash TCP/IPv6 on the 4-tuple, extension-header addresses allowed. QEMU
/// uses this bit (not `IPV6_TCP`) to hash TCP/IPv6.
pub const MRQC_RSS_FIELD_IPV6_TCP_EX: u32 = 1 << 18;
/// Hash IPv6 on the 2-tuple, extension-header addresses allowed.
pub const MRQC_RSS_FIELD_IPV6_EX: u32 = 1 << 19;
/// Hash IPv6 on the 2-tuple.
pub const MRQC_RSS_FIELD_IPV6: u32 = 1 << 20;
/// Hash TCP/IPv6 on the 4-tuple (datasheet; QEMU's model ignores it).
pub const MRQC_RSS_FIELD_IPV6_TCP: u32 = 1 << 21;
/// Hash UDP/IPv4 on the 4-tuple.
pub const MRQC_RSS_FIELD_IPV4_UDP: u32 = 1 << 22;
/// Hash UDP/IPv6 on the 4-tuple.
pub const MRQC_RSS_FIELD_IPV6_UDP: u32 = 1 << 23;

/// RSS redirection table: 32 dwords holding 128 one-byte entries, entry
/// `i` in byte `i % 4` (little endian) of `RETA(i / 4)`. A frame goes to
/// the queue in entry `hash & 127`, bits 3:0 of the entry.
pub const fn reta(i: u32) -> u32 {
    0x5C00 + 4 * i
}
/// Entries in the redirection table.
pub const RETA_ENTRIES: u32 = 128;
/// Queue index bits of a redirection table entry.
pub const RETA_QUEUE_MASK: u8 = 0x0F;

/// RSS random key: 10 dwords holding the 40-byte Toeplitz key, key byte
/// `i` in byte `i % 4` (little endian) of `RSSRK(i / 4)`.
pub const fn rssrk(i: u32) -> u32 {
    0x5C80 + 4 * i
}
/// Bytes in the RSS key.
pub const RSS_KEY_LEN: usize = 40;

/// Receive address low/high, entry 0 (the station MAC address).
pub const RAL0: u32 = 0x5400;
pub const RAH0: u32 = 0x5404;
pub const RAH_AV: u32 = 1 << 31;

/// Packet split receive type, per queue (which headers to split).
/// QEMU's model ignores it; we program it as the datasheet asks.
pub const fn psrtype(q: u32) -> u32 {
    0x5480 + 4 * q
}
/// Split after IPv4, IPv6, TCP and UDP headers.
pub const PSRTYPE_L2_L3_L4: u32 = (1 << 4) | (1 << 8) | (1 << 9);

/// Number of RX and TX queues on the 82576.
pub const MAX_QUEUES: u32 = 16;

/// Per-queue register block base. Queues 0..4 at 0x2800 (RX) / 0x3800 (TX)
/// with a 0x100 stride, queues 4.. at 0xC000 / 0xE000 with a 0x40 stride.
pub const fn rx_queue_base(q: u32) -> u32 {
    if q < 4 {
        0x2800 + q * 0x100
    } else {
        0xC000 + q * 0x40
    }
}
pub const fn tx_queue_base(q: u32) -> u32 {
    if q < 4 {
        0x3800 + q * 0x100
    } else {
        0xE000 + q * 0x40
    }
}

/// Offsets inside a queue block (RX and TX share the layout).
pub const Q_BAL: u32 = 0x00;
pub const Q_BAH: u32 = 0x04;
/// Ring length in bytes (multiple of 128).
pub const Q_LEN: u32 = 0x08;
/// RX only: split and replication receive control.
pub const Q_SRRCTL: u32 = 0x0C;
/// Head: advanced by the device.
pub const Q_HEAD: u32 = 0x10;
/// Tail: the driver's doorbell.
pub const Q_TAIL: u32 = 0x18;
/// Queue control; bit 25 enables the queue.
pub const Q_DCTL: u32 = 0x28;
pub const DCTL_QUEUE_ENABLE: u32 = 1 << 25;

/// RQDPC: frames dropped by RX queue `q` (82576; clear on read). Only in the
/// 0xC000 block, for every queue; the watchdog reads it as evidence that
/// frames arrived for a queue that did not take them.
pub const fn rqdpc(q: u32) -> u32 {
    0xC030 + q * 0x40
}

/// SRRCTL fields.
/// Packet buffer size in 1 KiB units, bits 6:0.
pub const SRRCTL_BSIZEPACKET_MASK: u32 = 0x7F;
/// Header buffer size in 64 B units, bits 11:8.
pub const SRRCTL_BSIZEHEADER_SHIFT: u32 = 8;
pub const SRRCTL_BSIZEHEADER_MASK: u32 = 0xF << 8;
pub const SRRCTL_DESCTYPE_MASK: u32 = 0x7 << 25;
pub const SRRCTL_DESCTYPE_ADV_ONEBUF: u32 = 1 << 25;
pub const SRRCTL_DESCTYPE_HDR_SPLIT: u32 = 2 << 25;
pub const SRRCTL_DESCTYPE_HDR_SPLIT_ALWAYS: u32 = 5 << 25;
/// Drop frames when the queue has no free descriptor instead of stalling.
pub const SRRCTL_DROP_EN: u32 = 1 << 31;

/// Statistics (clear on read).
/// Missed packets: no free descriptor.
pub const MPC: u32 = 0x4010;
/// Receive oversize count: frames longer than allowed.
pub const ROC: u32 = 0x40F8;
/// Good packets received.
pub const GPRC: u32 = 0x4074;
/// Good octets received, low and high halves.
pub const GORCL: u32 = 0x4088;
pub const GORCH: u32 = 0x408C;
/// Good packets / octets transmitted.
pub const GPTC: u32 = 0x4080;
pub const GOTCL: u32 = 0x4090;
pub const GOTCH: u32 = 0x4094;

/// PCI device ids of the family.
pub const VENDOR_INTEL: u16 = 0x8086;
pub const DEVICE_82576: u16 = 0x10C9;
pub const DEVICE_I350: u16 = 0x1521;

/// SRRCTL value for one RX queue.
pub fn srrctl(split: crate::SplitMode, hdr_buf: usize, pkt_buf: usize) -> u32 {
    let desctype = match split {
        crate::SplitMode::Off => SRRCTL_DESCTYPE_ADV_ONEBUF,
        crate::SplitMode::On => SRRCTL_DESCTYPE_HDR_SPLIT,
        crate::SplitMode::Always => SRRCTL_DESCTYPE_HDR_SPLIT_ALWAYS,
    };
    let hdr_units = ((hdr_buf / 64) as u32) << SRRCTL_BSIZEHEADER_SHIFT & SRRCTL_BSIZEHEADER_MASK;
    let pkt_units = (pkt_buf / 1024) as u32 & SRRCTL_BSIZEPACKET_MASK;
    desctype | hdr_units | pkt_units | SRRCTL_DROP_EN
}

/// Header buffer size in bytes encoded in an SRRCTL value (0 means none).
pub fn srrctl_hdr_bytes(v: u32) -> usize {
    (((v & SRRCTL_BSIZEHEADER_MASK) >> SRRCTL_BSIZEHEADER_SHIFT) as usize) * 64
}

/// Packet buffer size in bytes encoded in an SRRCTL value (0 means RCTL.BSIZE, 2 KiB).
pub fn srrctl_pkt_bytes(v: u32) -> usize {
    match (v & SRRCTL_BSIZEPACKET_MASK) as usize {
        0 => 2048,
        n => n * 1024,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srrctl_matches_value_seen_on_qemu() {
        // igb-notes.md: header 256 B, packet 2 KiB, HDR_SPLIT = 0x04000402 (+ DROP_EN).
        let v = srrctl(crate::SplitMode::On, 256, 2048);
        assert_eq!(v & !SRRCTL_DROP_EN, 0x0400_0402);
        assert_eq!(srrctl_hdr_bytes(v), 256);
        assert_eq!(srrctl_pkt_bytes(v), 2048);
    }

    #[test]
    fn queue_blocks() {
        assert_eq!(rx_queue_base(0) + Q_TAIL, 0x2818);
        assert_eq!(rx_queue_base(1) + Q_DCTL, 0x2928);
        assert_eq!(tx_queue_base(0) + Q_TAIL, 0x3818);
        assert_eq!(rx_queue_base(4), 0xC100);
    }

    #[test]
    fn rss_registers_match_linux_e1000_regs() {
        assert_eq!(MRQC, 0x05818);
        assert_eq!(reta(0), 0x05C00);
        assert_eq!(reta(31), 0x05C7C);
        assert_eq!(rssrk(0), 0x05C80);
        assert_eq!(rssrk(9), 0x05CA4);
        assert_eq!(RXCSUM_PCSD, 0x2000);
        assert_eq!(MRQC_RSS_FIELD_IPV4_UDP, 0x0040_0000);
        assert_eq!(MRQC_RSS_FIELD_IPV6_TCP_EX, 0x0004_0000);
    }
}
