#!/usr/bin/env python3
"""Injects a crafted frame set into a TAP device (AF_PACKET, needs root) so
that QEMU's igb receives it: UDP and TCP over IPv4 and IPv6, non-IP frames,
headers longer than the header buffer (IPv4 + TCP options, IPv6 extension
headers), frame sizes 60..9000 bytes, one 42-byte runt, and two frames with
a wrong checksum (UDP; IPv4 header), which the device must flag and the
driver drop. All other checksums are correct.

usage: sendframes.py IFACE SECONDS [PPS [ROUNDS [SENT_PCAP]]]
       sendframes.py --write-pcap FILE
Sends the set round-robin for SECONDS at about PPS frames per second (or
stops after ROUNDS passes over the set, if given) and prints one line with
what it sent; SENT_PCAP receives every frame sent, in order. --write-pcap writes the set once, in order, to a pcap file
(the reference the receiver's capture and the simulator replay use).
"""
import signal
import socket
import struct
import sys
import time

DST = bytes.fromhex("525400123456")   # QEMU's default NIC MAC (we run promiscuous anyway)
SRC = bytes.fromhex("02000000e2e0")


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def fill(n: int) -> bytes:
    return bytes((i * 7 + 3) & 0xFF for i in range(max(n, 0)))


def eth(ethertype: int, payload: bytes) -> bytes:
    f = DST + SRC + struct.pack("!H", ethertype) + payload
    return f + b"\0" * (60 - len(f)) if len(f) < 60 else f


def ipv4(proto: int, l4: bytes, options: bytes = b"") -> bytes:
    assert len(options) % 4 == 0
    ihl = 5 + len(options) // 4
    src, dst = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(l4), 0x1234, 0x4000, 64, proto, 0, src, dst) + options
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr, src, dst


def l4_v4(proto: int, seg: bytes, src: bytes, dst: bytes) -> bytes:
    pseudo = src + dst + struct.pack("!BBH", 0, proto, len(seg))
    return csum(pseudo + seg)


def udp_seg(payload: bytes) -> bytes:
    return struct.pack("!HHHH", 40000, 9, 8 + len(payload), 0) + payload


def tcp_seg(payload: bytes, options: bytes = b"") -> bytes:
    assert len(options) % 4 == 0
    doff = 5 + len(options) // 4
    return struct.pack("!HHIIBBHHH", 40001, 9, 1, 0, doff << 4, 0x18, 65535, 0, 0) + options + payload


def v4_frame(proto: str, total: int, ip_opts: bytes = b"", tcp_opts: bytes = b"") -> bytes:
    hl = 14 + 20 + len(ip_opts) + (8 if proto == "udp" else 20 + len(tcp_opts))
    payload = fill(total - hl)
    seg = udp_seg(payload) if proto == "udp" else tcp_seg(payload, tcp_opts)
    pnum = 17 if proto == "udp" else 6
    hdr, src, dst = ipv4(pnum, seg, ip_opts)
    c = l4_v4(pnum, seg, src, dst)
    if proto == "udp":
        c = c or 0xFFFF
        seg = seg[:6] + struct.pack("!H", c) + seg[8:]
    else:
        seg = seg[:16] + struct.pack("!H", c) + seg[18:]
    return eth(0x0800, hdr + seg)


def v6_udp_frame(total: int, ext_len: int) -> bytes:
    """IPv6 / Destination Options header of ext_len bytes (multiple of 8) / UDP."""
    src = bytes.fromhex("20010db8000000000000000000000001")
    dst = bytes.fromhex("20010db8000000000000000000000002")
    hl = 14 + 40 + ext_len + 8
    payload = fill(total - hl)
    seg = udp_seg(payload)
    pseudo = src + dst + struct.pack("!IxxxB", len(seg), 17)
    c = csum(pseudo + seg) or 0xFFFF
    seg = seg[:6] + struct.pack("!H", c) + seg[8:]
    nh = 17
    ext = b""
    if ext_len:
        # Destination options: next header, length in 8-octet units minus 1, PadN filling the rest.
        ext = struct.pack("!BB", 17, ext_len // 8 - 1)
        left = ext_len - 2
        while left:
            n = min(left, 200) if left - min(left, 200) != 1 else left - 2
            ext += struct.pack("!BB", 1, n - 2) + b"\0" * (n - 2)
            left -= n
        nh = 60
    ip = struct.pack("!IHBB", 0x60000000, len(ext) + len(seg), nh, 64) + src + dst
    return eth(0x86DD, ip + ext + seg)


def frame_set():
    ip_opts = bytes([1] * 39 + [0])                  # 40 B of IPv4 options: NOPs, EOL
    tcp_opts = bytes([1] * 40)                       # 40 B of TCP options: NOPs
    out = []
    # First in the set, so the receiver, which stops after the frames it
    # must deliver, has seen their write-backs by then.
    # A runt: 42 B, not padded (the NIC pads it to 60 B with zeros).
    out.append(("runt", DST + SRC + struct.pack("!H", 0x88B5) + fill(28)))
    # Wrong checksums: the NIC must flag them (TCPE / IPE); the driver drops them.
    f = bytearray(v4_frame("udp", 242))
    f[40] ^= 0x5A                                    # UDP checksum
    out.append(("badl4", bytes(f)))
    f = bytearray(v4_frame("tcp", 242))
    f[24] ^= 0x5A                                    # IPv4 header checksum
    out.append(("badip4", bytes(f)))
    for size in (60, 64, 128, 242, 512, 1442, 1514, 2048, 4000, 9000):
        out.append(("udp4", v4_frame("udp", size)))
        out.append(("tcp4", v4_frame("tcp", size)))
    for size in (60, 100, 1514, 9000):
        out.append(("nonip", eth(0x88B5, fill(size - 14))))   # local experimental ethertype
    for size in (200, 1514, 9000):
        out.append(("bighdr4", v4_frame("tcp", size, ip_opts, tcp_opts)))   # 134 B of headers
        out.append(("bighdr6", v6_udp_frame(size, 264)))                    # 326 B of headers
        out.append(("udp6", v6_udp_frame(size, 0)))
    return out


def write_pcap(path, frames):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for _, fr in frames:
            f.write(struct.pack("<IIII", 0, 0, len(fr), len(fr)) + fr)


def main():
    if sys.argv[1] == "--write-pcap":
        write_pcap(sys.argv[2], frame_set())
        return
    iface, seconds = sys.argv[1], float(sys.argv[2])
    pps = float(sys.argv[3]) if len(sys.argv) > 3 else 2000.0
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    sent_frames = [] if len(sys.argv) > 5 else None
    frames = frame_set()
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(1))
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    sent = errors = nbytes = 0
    kinds = {}
    start = time.monotonic()
    i = 0
    while not stop and time.monotonic() - start < seconds and not (rounds and i >= rounds * len(frames)):
        burst_start = time.monotonic()
        for _ in range(max(1, int(pps / 100))):
            if rounds and i >= rounds * len(frames):
                break
            kind, f = frames[i % len(frames)]
            i += 1
            try:
                if s.send(f) != len(f):
                    raise OSError("short send")
                if sent_frames is not None:
                    sent_frames.append((kind, f))
                sent += 1
                nbytes += len(f)
                kinds[kind] = kinds.get(kind, 0) + 1
            except OSError:
                errors += 1
        rest = 0.01 - (time.monotonic() - burst_start)
        if rest > 0:
            try:
                time.sleep(rest)
            except InterruptedError:
                pass
    if sent_frames is not None:
        write_pcap(sys.argv[5], sent_frames)
    print("sendframes: %s sent %d frames (%d bytes, %d send errors) in %.1f s: %s"
          % (iface, sent, nbytes, errors, time.monotonic() - start,
             " ".join("%s=%d" % kv for kv in sorted(kinds.items()))), flush=True)


if __name__ == "__main__":
    main()
