#!/usr/bin/env bash
# RX + refill + recycle cost per packet on the simulated NIC (rxsink drop
# mode, 64 B frames), at batch 32 and 64. Prints min and median of
# ns_per_packet over REPEATS runs of PACKETS packets each.
#   stepped: the simulator runs inside the RX loop, outside the timed part.
#   thread:  the simulator on core 1, the RX thread on core 0.
# Usage: scripts/bench-rx.sh [REPEATS] [PACKETS]
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${1:-5}
PACKETS=${2:-3000000}
cargo build --release -p rxsink --locked -q
BIN=target/release/rxsink
printf "%-8s %-6s %12s %12s %10s %8s\n" sim batch "ns/pkt min" "ns/pkt med" "Mpps med" "pkt/poll"
for sim in stepped thread; do
  for batch in 32 64; do
    extra="--core 0"
    [ "$sim" = thread ] && extra="--core 0 --sim-core 1"
    for _ in $(seq "$REPEATS"); do
      # shellcheck disable=SC2086
      timeout 120 $BIN --mode drop --frame-size 64 --batch "$batch" --sim-mode "$sim" $extra \
          --packets "$PACKETS" --json --quiet
    done | python3 -c '
import json, sys, statistics as st
dec = json.JSONDecoder(); text = sys.stdin.read(); runs = []; i = 0
while i < len(text):
    if text[i].isspace(): i += 1; continue
    obj, i = dec.raw_decode(text, i); runs.append(obj)
ns = [r["ns_per_packet"] for r in runs]
mpps = [r["pps"] / 1e6 for r in runs]
ppp = [r["packets_per_poll"] for r in runs]
assert all(r["leaked_pages"] == 0 and r["leaked_headers"] == 0 for r in runs)
print("%-8s %-6s %12.1f %12.1f %10.2f %8.1f" % (sys.argv[1], sys.argv[2], min(ns), st.median(ns), st.median(mpps), st.median(ppp)))
' "$sim" "$batch"
  done
done
