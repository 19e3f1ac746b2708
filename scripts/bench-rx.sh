#!/usr/bin/env bash
# RX + refill + recycle cost per packet on the simulated NIC (rxsink drop
# mode, 64 B frames), at batch 32 and 64. Prints min and median of
# ns_per_packet over REPEATS runs of PACKETS packets each.
#   stepped: the simulator runs inside the RX loop, outside the timed part.
#   thread:  the simulator on core 1, the RX thread on core 0.
# Usage: scripts/bench-rx.sh [REPEATS] [PACKETS]
#
#        scripts/bench-rx.sh --callgrind [PACKETS]   (default 200000)
# counts instructions instead (valgrind's callgrind, installed with apt-get
# when missing; not noisy): rxsink --sim-mode stepped --batch 32, one run
# per function with --toggle-collect, so each figure is the function's
# inclusive count (everything it calls) divided by the packets received:
# RxRing::poll (which calls refill), RxRing::refill, RxRing::recycle, and the
# header pool's release where it is a call of its own (HeaderPool::recycle,
# or since the packed fast path is inlined into the ring only its out-of-line
# HeaderPool::recycle_slow: a page change, the other strategies), plus the
# whole run (simulator and start-up included). "driver side" = poll +
# recycle. refill includes the ring's first fill at start (about 0.4 per
# packet at 200000 packets). RXSINK=PATH counts another build of rxsink
# (e.g. an older commit's, for a before/after comparison).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --callgrind ]; then
    PACKETS=${2:-200000}
    if ! command -v valgrind >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        apt-get install -y -q valgrind >/dev/null
    fi
    BIN=${RXSINK:-target/release/rxsink}
    [ -n "${RXSINK:-}" ] || cargo build --release -p rxsink --locked -q
    TMP=$(mktemp -d)
    trap 'rm -rf "$TMP"' EXIT
    count() {   # FUNCTION_PATTERN -> instructions collected inside it
        valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" ${1:+--toggle-collect="$1"} \
            "$BIN" --mode drop --frame-size 64 --sim-mode stepped --batch 32 \
            --packets "$PACKETS" --json --quiet >"$TMP/run.json" 2>"$TMP/vg.err"
        python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); assert s["packets"]==int(sys.argv[2]) and s["leaked_pages"]==0, s' \
            "$TMP/run.json" "$PACKETS"
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$TMP/vg.err"
    }
    poll=$(count 'driver::rx::RxRing<*>::poll')
    refill=$(count 'driver::rx::RxRing<*>::refill')
    recycle=$(count 'driver::rx::RxRing<*>::recycle')
    # The timed unit, poll + recycle (rxsink's harvest): recycle is derived
    # from it for builds where recycle is inlined into it (no symbol of its
    # own; since RxRing::recycle is never inlined, only older builds).
    harvest=$(count 'rxsink::raw::harvest')
    # HeaderPool (StrategyHeaderPool before the two header pools became one);
    # only recycle_slow since the packed fast path is inlined.
    hdr=$(count '*pipeline::hdrpool::*HeaderPool*::recycle*')
    whole=$(count '')
    python3 - "$PACKETS" "$poll" "$refill" "$recycle" "$hdr" "$whole" "${harvest:-0}" <<'PY'
import sys
n, poll, refill, recycle, hdr, whole, harvest = (int(a or 0) for a in sys.argv[1:8])
if harvest and not recycle:
    # recycle is inlined into harvest: what harvest spends outside poll.
    recycle = harvest - poll
print(f"callgrind, rxsink --mode drop --frame-size 64 --sim-mode stepped --batch 32 --packets {n}")
print(f"instructions per packet (inclusive):")
print(f"  driver side (poll + recycle)      {(poll + recycle) / n:8.1f}")
print(f"  RxRing::poll without refill       {(poll - refill) / n:8.1f}")
print(f"  RxRing::refill                    {refill / n:8.1f}")
print(f"  RxRing::recycle                   {recycle / n:8.1f}")
print(f"  header pool release, out of line  {hdr / n:8.1f}")
print(f"  whole run (simulator, start-up)   {whole / n:8.1f}")
PY
    exit 0
fi
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
