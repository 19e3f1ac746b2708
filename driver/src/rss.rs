//! Receive side scaling: the Toeplitz hash the NIC computes over a frame's
//! addresses (and ports), the hash inputs it feeds it, the well-known
//! default key, and the configuration [`crate::Igb::enable_rss`] programs.
//!
//! With RSS on, the device hashes each frame with the 40-byte key in RSSRK,
//! looks the low 7 bits of the hash up in the 128-entry redirection table
//! (RETA) and places the frame on the queue found there. The hash lands in
//! write-back dword 1 ([`crate::desc::RxWriteBack::rss`], so
//! `RxPacket::rss`) and the kind of hash in the low 4 bits of dword 0
//! (`RxWbInfo::rss_type`, one of `desc::RSS_TYPE_*`), which lets software
//! steer or verify without hashing again.
//!
//! Hash inputs, all in network byte order as they sit in the headers:
//!
//! | frame | input (bytes) |
//! |---|---|
//! | IPv4 | src ip, dst ip (8) |
//! | TCP or UDP over IPv4 | src ip, dst ip, src port, dst port (12) |
//! | IPv6 | src ip, dst ip (32) |
//! | TCP or UDP over IPv6 | src ip, dst ip, src port, dst port (36) |
//!
//! IP fragments carry no ports the NIC can see: they hash on the addresses
//! alone. With UDP 4-tuple hashing on, the fragments of a UDP datagram and
//! the unfragmented datagrams of the same flow may therefore land on
//! different queues (the reason Linux leaves UDP 4-tuple hashing off by
//! default).
//!
//! ```
//! use driver::rss::{toeplitz, ipv4_l4_input, DEFAULT_KEY};
//! // Microsoft's RSS verification suite: 66.9.149.187:2794 -> 161.142.100.80:1766.
//! let input = ipv4_l4_input([66, 9, 149, 187], [161, 142, 100, 80], 2794, 1766);
//! assert_eq!(toeplitz(&DEFAULT_KEY, &input), 0x51cc_c178);
//! ```

use crate::regs::*;

/// The Microsoft RSS verification key (the key of the published test
/// vectors, and a common default).
pub const DEFAULT_KEY: [u8; RSS_KEY_LEN] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// The Toeplitz hash of `input` under `key`: for every input bit set
/// (most significant bit of the first byte first), the 32 key bits starting
/// at that bit position are XORed into the result. Key bits past the end
/// of the key count as 0, so inputs up to 36 bytes use the key fully.
pub fn toeplitz(key: &[u8; RSS_KEY_LEN], input: &[u8]) -> u32 {
    let key_byte = |i: usize| key.get(i).copied().unwrap_or(0) as u64;
    // The 64 key bits starting at the current input bit: the top 32 are the
    // XOR term, the low 32 feed it as the window slides.
    let mut window = (0..8).fold(0u64, |w, i| w << 8 | key_byte(i));
    let mut hash = 0u32;
    for (i, &byte) in input.iter().enumerate() {
        for bit in (0..8).rev() {
            if byte >> bit & 1 != 0 {
                hash ^= (window >> 32) as u32;
            }
            window <<= 1;
        }
        window |= key_byte(i + 8);
    }
    hash
}

/// Hash input of an IPv4 frame hashed on its addresses.
pub fn ipv4_input(src: [u8; 4], dst: [u8; 4]) -> [u8; 8] {
    let mut v = [0u8; 8];
    v[..4].copy_from_slice(&src);
    v[4..].copy_from_slice(&dst);
    v
}

/// Hash input of a TCP or UDP over IPv4 frame hashed on its 4-tuple.
pub fn ipv4_l4_input(src: [u8; 4], dst: [u8; 4], src_port: u16, dst_port: u16) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..8].copy_from_slice(&ipv4_input(src, dst));
    v[8..10].copy_from_slice(&src_port.to_be_bytes());
    v[10..].copy_from_slice(&dst_port.to_be_bytes());
    v
}

/// Hash input of an IPv6 frame hashed on its addresses.
pub fn ipv6_input(src: [u8; 16], dst: [u8; 16]) -> [u8; 32] {
    let mut v = [0u8; 32];
    v[..16].copy_from_slice(&src);
    v[16..].copy_from_slice(&dst);
    v
}

/// Hash input of a TCP or UDP over IPv6 frame hashed on its 4-tuple.
pub fn ipv6_l4_input(src: [u8; 16], dst: [u8; 16], src_port: u16, dst_port: u16) -> [u8; 36] {
    let mut v = [0u8; 36];
    v[..32].copy_from_slice(&ipv6_input(src, dst));
    v[32..34].copy_from_slice(&src_port.to_be_bytes());
    v[34..].copy_from_slice(&dst_port.to_be_bytes());
    v
}

/// Every MRQC hash-field bit [`RssConfig::fields`] may hold.
pub const RSS_FIELDS_ALL: u32 = MRQC_RSS_FIELD_IPV4
    | MRQC_RSS_FIELD_IPV4_TCP
    | MRQC_RSS_FIELD_IPV6
    | MRQC_RSS_FIELD_IPV6_EX
    | MRQC_RSS_FIELD_IPV6_TCP
    | MRQC_RSS_FIELD_IPV6_TCP_EX
    | MRQC_RSS_FIELD_IPV4_UDP
    | MRQC_RSS_FIELD_IPV6_UDP;

/// Linux igb's default hash fields (`igb_setup_mrqc`): addresses for IP,
/// 4-tuple for TCP, UDP hashed on addresses only.
pub const RSS_FIELDS_TCP: u32 = MRQC_RSS_FIELD_IPV4
    | MRQC_RSS_FIELD_IPV4_TCP
    | MRQC_RSS_FIELD_IPV6
    | MRQC_RSS_FIELD_IPV6_TCP
    | MRQC_RSS_FIELD_IPV6_TCP_EX;

/// [`RSS_FIELDS_TCP`] plus 4-tuple hashing of UDP (see the module notes on
/// fragments). The default of [`RssConfig`].
pub const RSS_FIELDS_TCP_UDP: u32 =
    RSS_FIELDS_TCP | MRQC_RSS_FIELD_IPV4_UDP | MRQC_RSS_FIELD_IPV6_UDP;

/// What [`crate::Igb::enable_rss_with`] programs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RssConfig {
    /// RX queues 0..queues receive frames: the redirection table spreads
    /// over them round robin. 1..=[`MAX_QUEUES`].
    pub queues: u32,
    /// The Toeplitz key.
    pub key: [u8; RSS_KEY_LEN],
    /// MRQC hash-field bits (`regs::MRQC_RSS_FIELD_*`), a non-empty subset
    /// of [`RSS_FIELDS_ALL`].
    pub fields: u32,
}

impl RssConfig {
    /// `queues` queues, `key`, [`RSS_FIELDS_TCP_UDP`].
    pub fn new(queues: u32, key: &[u8; RSS_KEY_LEN]) -> RssConfig {
        RssConfig {
            queues,
            key: *key,
            fields: RSS_FIELDS_TCP_UDP,
        }
    }

    /// Checks the queue count and the fields.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_QUEUES).contains(&self.queues) {
            return Err(format!(
                "RSS queue count {} must be 1..={MAX_QUEUES}",
                self.queues
            ));
        }
        if self.fields == 0 || self.fields & !RSS_FIELDS_ALL != 0 {
            return Err(format!(
                "RSS hash fields {:#010x} must be a non-empty subset of {RSS_FIELDS_ALL:#010x}",
                self.fields
            ));
        }
        Ok(())
    }

    /// The redirection table: entry `i` is queue `i % queues`.
    pub fn reta(&self) -> [u8; RETA_ENTRIES as usize] {
        let n = self.queues.max(1);
        std::array::from_fn(|i| (i as u32 % n) as u8)
    }

    /// The MRQC value: RSS mode and the hash fields.
    pub fn mrqc(&self) -> u32 {
        MRQC_ENABLE_RSS | self.fields
    }

    /// The queue a frame with hash `hash` goes to.
    pub fn queue_of(&self, hash: u32) -> u32 {
        self.reta()[(hash & (RETA_ENTRIES - 1)) as usize] as u32
    }
}

/// The queue `hash` selects in a redirection table (as the NIC reads it).
pub fn reta_queue(reta: &[u8; RETA_ENTRIES as usize], hash: u32) -> u32 {
    (reta[(hash & (RETA_ENTRIES - 1)) as usize] & RETA_QUEUE_MASK) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    // Microsoft's "Verifying the RSS Hash Calculation" IPv4 vectors:
    // (source, destination, src port, dst port, hash with ports, hash
    // addresses only).
    type V4 = ([u8; 4], u16, [u8; 4], u16, u32, u32);
    const V4_VECTORS: [V4; 5] = [
        (
            [66, 9, 149, 187],
            2794,
            [161, 142, 100, 80],
            1766,
            0x51cc_c178,
            0x323e_8fc2,
        ),
        (
            [199, 92, 111, 2],
            14230,
            [65, 69, 140, 83],
            4739,
            0xc626_b0ea,
            0xd718_262a,
        ),
        (
            [24, 19, 198, 95],
            12898,
            [12, 22, 207, 184],
            38024,
            0x5c2b_394a,
            0xd2d0_a5de,
        ),
        (
            [38, 27, 205, 30],
            48228,
            [209, 142, 163, 6],
            2217,
            0xafc7_327f,
            0x8298_9176,
        ),
        (
            [153, 39, 163, 191],
            44251,
            [202, 188, 127, 2],
            1303,
            0x10e8_28a2,
            0x5d18_09c5,
        ),
    ];

    #[test]
    fn microsoft_ipv4_vectors_with_ports() {
        for (src, sp, dst, dp, with_ports, _) in V4_VECTORS {
            let h = toeplitz(&DEFAULT_KEY, &ipv4_l4_input(src, dst, sp, dp));
            assert_eq!(h, with_ports, "{src:?}:{sp} -> {dst:?}:{dp}");
        }
    }

    #[test]
    fn microsoft_ipv4_vectors_addresses_only() {
        for (src, _, dst, _, _, ip_only) in V4_VECTORS {
            let h = toeplitz(&DEFAULT_KEY, &ipv4_input(src, dst));
            assert_eq!(h, ip_only, "{src:?} -> {dst:?}");
        }
    }

    #[test]
    fn microsoft_ipv6_vectors() {
        // 3ffe:2501:200:1fff::7 (2794) -> 3ffe:2501:200:3::1 (1766).
        let a: [u8; 16] = [
            0x3f, 0xfe, 0x25, 0x01, 0x02, 0x00, 0x1f, 0xff, 0, 0, 0, 0, 0, 0, 0, 7,
        ];
        let b: [u8; 16] = [
            0x3f, 0xfe, 0x25, 0x01, 0x02, 0x00, 0x00, 0x03, 0, 0, 0, 0, 0, 0, 0, 1,
        ];
        assert_eq!(
            toeplitz(&DEFAULT_KEY, &ipv6_l4_input(a, b, 2794, 1766)),
            0x4020_7d3d
        );
        assert_eq!(toeplitz(&DEFAULT_KEY, &ipv6_input(a, b)), 0x2cc1_8cd5);
    }

    #[test]
    fn hash_is_linear_in_the_input() {
        // Toeplitz is XOR-linear: h(a ^ b) = h(a) ^ h(b).
        let a = ipv4_l4_input([1, 2, 3, 4], [5, 6, 7, 8], 9, 10);
        let b = ipv4_l4_input([11, 12, 13, 14], [15, 16, 17, 18], 19, 20);
        let x: Vec<u8> = a.iter().zip(&b).map(|(p, q)| p ^ q).collect();
        assert_eq!(
            toeplitz(&DEFAULT_KEY, &x),
            toeplitz(&DEFAULT_KEY, &a) ^ toeplitz(&DEFAULT_KEY, &b)
        );
        assert_eq!(toeplitz(&DEFAULT_KEY, &[0; 12]), 0);
        // A single first bit selects the key's first 32 bits.
        assert_eq!(toeplitz(&DEFAULT_KEY, &[0x80]), 0x6d5a_56da);
    }

    #[test]
    fn config_validation_and_tables() {
        assert!(RssConfig::new(4, &DEFAULT_KEY).validate().is_ok());
        assert!(RssConfig::new(MAX_QUEUES, &DEFAULT_KEY).validate().is_ok());
        assert!(RssConfig::new(0, &DEFAULT_KEY).validate().is_err());
        assert!(RssConfig::new(MAX_QUEUES + 1, &DEFAULT_KEY)
            .validate()
            .is_err());
        let mut c = RssConfig::new(3, &DEFAULT_KEY);
        c.fields = 0;
        assert!(c.validate().is_err());
        c.fields = 1;
        assert!(c.validate().is_err());
        c.fields = RSS_FIELDS_TCP;
        assert!(c.validate().is_ok());
        let reta = c.reta();
        assert_eq!(&reta[..7], &[0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(c.queue_of(0x51cc_c178), reta_queue(&reta, 0x51cc_c178));
        assert_eq!(c.queue_of(0x78), 0x78 % 3);
        assert_eq!(c.mrqc() & MRQC_MODE_MASK, MRQC_ENABLE_RSS);
    }
}
