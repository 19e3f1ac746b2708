#!/usr/bin/env bash
# How long smoltcp takes to move BYTES over the pair wire with DROP % of the
# frames dropped in each direction (README, "TCP receive: rxsink against
# the Linux kernel": loss recovery is bound by smoltcp's 1 s minimum RTO).
# One rxsink run per seed, real time:
#   rxsink --mode tcp --wire pair --pair-bytes BYTES --faults drop=DROP,seed=S --verify --json
# Prints each run's seconds (rxsink's own `seconds`), the frames dropped
# each way, and min / median. Every byte must arrive verified.
#   scripts/tcp-loss-time.sh            # BYTES=4000000 DROP=1 SEEDS="1 2 3"
set -euo pipefail
cd "$(dirname "$0")/.."
BYTES=${BYTES:-4000000}
DROP=${DROP:-1}
SEEDS=${SEEDS:-1 2 3}
cargo build --release -p rxsink --locked -q
BIN=target/release/rxsink
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for seed in $SEEDS; do
    timeout 300 "$BIN" --mode tcp --wire pair --pair-bytes "$BYTES" --faults "drop=$DROP,seed=$seed" \
        --verify --json --quiet >"$TMP/$seed.json"
done
python3 - "$TMP" "$BYTES" "$DROP" $SEEDS <<'PY'
import json, statistics as st, sys
tmp, nbytes, drop, seeds = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
secs = []
for seed in seeds:
    s = json.load(open(f"{tmp}/{seed}.json"))
    t, f = s["tcp"], s["wire_stats"]["faults"]
    assert t["verified"] == nbytes and t["mismatches"] == 0 and t["closed"] == 1, t
    secs.append(s["seconds"])
    print(f"seed {seed}: {s['seconds']:.1f} s, dropped {f['to_nic']['dropped']} of "
          f"{f['to_nic']['seen']} frames to the receiver, {f['from_nic']['dropped']} of "
          f"{f['from_nic']['seen']} back")
print(f"{nbytes} B at {drop}% drop over the pair wire: min {min(secs):.1f} s, "
      f"median {st.median(secs):.1f} s ({len(secs)} runs)")
PY
