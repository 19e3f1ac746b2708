#!/usr/bin/env python3
"""TCP pattern sender for rxsink's `--mode tcp --verify`: connects to
HOST:PORT, sends BYTES bytes where byte i of the stream is i mod 251
(stack/src/pattern.rs), half-closes, waits for the sink to close, and prints
one JSON line {"sent": N, "seconds": S}.

usage: pattern.py HOST PORT BYTES
"""
import json
import socket
import sys
import time


def main():
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    t0 = time.monotonic()
    s = socket.create_connection((host, port), timeout=60)
    chunk = bytes(i % 251 for i in range(251 * 256))
    sent = 0
    while sent < n:
        k = min(len(chunk), n - sent)   # each chunk starts at a multiple of 251
        s.sendall(chunk[:k])
        sent += k
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):                # until the sink closes its side
        pass
    s.close()
    print(json.dumps({"sent": sent, "seconds": round(time.monotonic() - t0, 3)}), flush=True)


if __name__ == "__main__":
    main()
