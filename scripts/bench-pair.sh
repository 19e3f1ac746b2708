#!/usr/bin/env bash
# One TCP flow over the pair wire (a smoltcp sender on a second simulated
# NIC) at MTU 1500, for several receive windows (--tcp-buf; the sender's
# send ring stays 1 MiB). Prints min and median Gbit/s of payload over
# REPEATS runs of BYTES each, plus the most retransmission-free evidence
# available: the peer device's dropped frames (must be 0), how often its
# TX ring was full (busy: smoltcp was told to wait, nothing was lost) and
# the segments the peer sent twice (TcpRetransSegs, summed over the runs),
# and the receive path's CPU-s per GB (cpu_seconds_per_gb, median).
# Everything runs on core 0 (taskset) except the RX thread, which pins
# itself to core 1 (--core 1), as in bench-tcp.sh.
# Usage: scripts/bench-pair.sh [REPEATS] [BYTES] [SIZES...]
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${1:-5}
BYTES=${2:-200000000}
shift $(($# < 2 ? $# : 2))
SIZES=("$@")
[ ${#SIZES[@]} -eq 0 ] && SIZES=(256K 1M 4M 16M)
cargo build --release -p rxsink --locked -q
BIN=target/release/rxsink
bytes_of() {
  case $1 in
    *K) echo $((${1%K} << 10)) ;;
    *M) echo $((${1%M} << 20)) ;;
    *) echo "$1" ;;
  esac
}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "# $BIN --mode tcp --wire pair --mtu 1500 --core 1 --pair-bytes $BYTES --tcp-buf SIZE; $REPEATS runs each, the windows interleaved"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
# Interleaved (every window once per repeat), so drift on a shared
# machine hits every window alike.
for _ in $(seq "$REPEATS"); do
  for size in "${SIZES[@]}"; do
    timeout 300 taskset -c 0 "$BIN" --mode tcp --wire pair --mtu 1500 --core 1 \
      --pair-bytes "$BYTES" --tcp-buf "$(bytes_of "$size")" --json --quiet >>"$TMP/$size.json"
  done
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-10s %10s %10s %10s %12s %10s %10s %12s\n" tcp-buf "Gbit/s min" "Gbit/s med" "Gbit/s max" "peer drops" "peer busy" "retrans" "CPU-s/GB med"
for size in "${SIZES[@]}"; do
  python3 -c '
import json, sys, statistics as st
dec = json.JSONDecoder(); text = open(sys.argv[3]).read(); runs = []; i = 0
while i < len(text):
    if text[i].isspace(): i += 1; continue
    obj, i = dec.raw_decode(text, i); runs.append(obj)
size = sys.argv[1]
bad = [r for r in runs if r["tcp"]["bytes"] != int(sys.argv[2])]
if bad:
    sys.exit(f"{size}: a run did not deliver every byte")
g = [r["gbps"] for r in runs]
tx = [r["peer"]["tx"] for r in runs]
drops = sum(t["dropped"] for t in tx)
busy = st.median(t["busy"] for t in tx)
retrans = sum(r["peer"]["segments"]["TcpRetransSegs"] for r in runs)
cpu = st.median(r["cpu_seconds_per_gb"] for r in runs)
print(f"{size:<10} {min(g):10.2f} {st.median(g):10.2f} {max(g):10.2f} {drops:12d} {busy:10.0f} {retrans:10d} {cpu:12.3f}")
' "$size" "$BYTES" "$TMP/$size.json"
done
