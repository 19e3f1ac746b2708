#!/usr/bin/env bash
# Generates README's "--cores" table (section "Header pools and lock
# contention") from rxsink's --json summaries: one run per header pool
# strategy and recycle batch, RX thread on core 0, application on core 1.
#
#   scripts/table-cores.sh            # PACKETS=200000 per run
#
# Columns (JSON fields): kpps = pps / 1000 (coalesced packets), Gbit/s =
# gbps, header locks/packet = hdr_pool.lock_acquisitions_per_packet,
# header contended = hdr_pool.contended, header wait max ns =
# hdr_pool.wait_ns_max, page locks/packet =
# payload_return.lock_acquisitions_per_packet, page contended =
# payload_return.contended, page wait max ns = payload_return.wait_ns_max,
# leaked = leaked_pages/leaked_headers. One run per row: the figures move
# with the machine's load (printed below the table).
# Every run is bounded by timeout; a failed run fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKETS=${PACKETS:-200000}
cargo build --release -p rxsink --locked -q
BIN=target/release/rxsink
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

load0=$(cut -d' ' -f1-3 /proc/loadavg)
for hp in locked batched packed ring; do
    for rb in 1 64; do
        timeout 120 "$BIN" --cores 0,1 --gro 16 --frame-size 1514 --proto tcp --packets "$PACKETS" \
            --json --quiet --hdr-pool "$hp" --recycle-batch "$rb" >"$TMP/$hp-$rb.json"
    done
done

python3 - "$TMP" "$PACKETS" "$load0" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import json, sys
tmp, packets, load0, load1 = sys.argv[1:5]
cols = ["hdr-pool", "recycle-batch", "kpps (coalesced)", "Gbit/s", "header locks/packet",
        "header contended", "header wait max ns", "page locks/packet", "page contended",
        "page wait max ns", "leaked pages/headers"]
print("| " + " | ".join(cols) + " |")
print("|" + "---|" * len(cols))
for hp in ("locked", "batched", "packed", "ring"):
    for rb in (1, 64):
        s = json.load(open(f"{tmp}/{hp}-{rb}.json"))
        h, p = s["hdr_pool"], s["payload_return"]
        assert h["strategy"] == hp and p["recycle_batch"] == rb, (hp, rb)
        row = [hp, str(rb), f"{s['pps'] / 1e3:.1f}", f"{s['gbps']:.2f}",
               f"{h['lock_acquisitions_per_packet']:.3f}", str(h["contended"]),
               f"{h['wait_ns_max']:.0f}",
               f"{p['lock_acquisitions_per_packet']:.3f}", str(p["contended"]),
               f"{p['wait_ns_max']:.0f}",
               f"{s['leaked_pages']}/{s['leaked_headers']}"]
        assert len(row) == len(cols)
        print("| " + " | ".join(row) + " |")
print()
print(f"rxsink --cores 0,1 --gro 16 --frame-size 1514 --proto tcp --packets {packets} "
      f"--json --quiet --hdr-pool S --recycle-batch N; one run each; "
      f"load average {load0} before, {load1} after.")
PY
