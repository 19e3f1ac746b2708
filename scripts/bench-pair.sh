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
#
# Host check: this VM's speed drifts (for seconds to minutes at a time,
# with no steal time reported), so each round (every window once) starts
# with two checks, printed next to the round's rates:
#   rtt: the round trip of a cache line between core 0 and core 1
#        (pipeline's core_rtt example), what every frame of the pair wire
#        pays to cross from the sender's core to the receiver's. Here it is
#        60-80 ns normally and 300-350 ns in the host's slow phases, when
#        every window runs at half speed.
#   core 0, core 1: rxsink's stepped drop loop on that core (64 B frames,
#        batch 32, 2 M packets, ns per packet; see bench-rx.sh), the core's
#        own speed.
# Usage: scripts/bench-pair.sh [REPEATS] [BYTES] [SIZES...]
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${1:-5}
BYTES=${2:-200000000}
shift $(($# < 2 ? $# : 2))
SIZES=("$@")
[ ${#SIZES[@]} -eq 0 ] && SIZES=(256K 1M 4M 16M)
cargo build --release -p rxsink --locked -q
cargo build --release -p pipeline --example core_rtt --locked -q
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
for round in $(seq "$REPEATS"); do
  target/release/examples/core_rtt 0 1 200000 >"$TMP/rtt.$round"
  for core in 0 1; do
    timeout 120 "$BIN" --mode drop --frame-size 64 --batch 32 --sim-mode stepped --core $core \
      --packets 2000000 --json --quiet >"$TMP/check$core.$round.json"
  done
  for size in "${SIZES[@]}"; do
    timeout 300 taskset -c 0 "$BIN" --mode tcp --wire pair --mtu 1500 --core 1 \
      --pair-bytes "$BYTES" --tcp-buf "$(bytes_of "$size")" --json --quiet >"$TMP/$size.$round.json"
  done
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$TMP" "$REPEATS" "$BYTES" "${SIZES[@]}" <<'PYEOF'
import json, sys, statistics as st
tmp, repeats, want, sizes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
load = lambda name: json.load(open(f"{tmp}/{name}.json"))
rounds = range(1, repeats + 1)
runs = {s: [load(f"{s}.{r}") for r in rounds] for s in sizes}
check = [[load(f"check{c}.{r}")["ns_per_packet"] for r in rounds] for c in (0, 1)]
rtt = [float(open(f"{tmp}/rtt.{r}").read()) for r in rounds]
print("# per round: host checks (rtt: core 0 <-> 1 cache-line round trip, ns; core 0 / core 1: ns/packet), then Gbit/s by window")
print(f"{'round':<6} {'rtt':>5} {'core 0':>7} {'core 1':>7}" + "".join(f" {s:>8}" for s in sizes))
for i in range(repeats):
    print(f"{i + 1:<6} {rtt[i]:5.0f} {check[0][i]:7.1f} {check[1][i]:7.1f}" + "".join(f" {runs[s][i]['gbps']:8.2f}" for s in sizes))
print(f"{'tcp-buf':<10} {'Gbit/s min':>10} {'Gbit/s med':>10} {'Gbit/s max':>10} {'peer drops':>12} {'peer busy':>10} {'retrans':>10} {'CPU-s/GB med':>12}")
meds = []
for size in sizes:
    rs = runs[size]
    if any(r["tcp"]["bytes"] != want for r in rs):
        sys.exit(f"{size}: a run did not deliver every byte")
    g = [r["gbps"] for r in rs]
    tx = [r["peer"]["tx"] for r in rs]
    drops = sum(t["dropped"] for t in tx)
    busy = st.median(t["busy"] for t in tx)
    retrans = sum(r["peer"]["segments"]["TcpRetransSegs"] for r in rs)
    cpu = st.median(r["cpu_seconds_per_gb"] for r in rs)
    meds.append(st.median(g))
    print(f"{size:<10} {min(g):10.2f} {st.median(g):10.2f} {max(g):10.2f} {drops:12d} {busy:10.0f} {retrans:10d} {cpu:12.3f}")
print(f"# slowest / fastest window (medians): {max(meds) / min(meds):.2f}x")
print(f"# host check, rtt: min {min(rtt):.0f}, median {st.median(rtt):.0f}, max {max(rtt):.0f} ns")
for c in (0, 1):
    print(f"# host check, core {c}: min {min(check[c]):.1f}, median {st.median(check[c]):.1f}, max {max(check[c]):.1f} ns/packet")
PYEOF
