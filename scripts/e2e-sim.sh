#!/usr/bin/env bash
# End-to-end checks of rxsink on the simulated NIC: every header-split mode,
# drop and read modes, stepped and threaded simulator, jumbo frames, a clean
# stop on SIGINT, and bad arguments. Needs no root and no network.
# Every run is bounded by `timeout`; any failed check exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p rxsink --locked -q
BIN=target/release/rxsink
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail=0; passed=0

# check NAME JSON_FILE PYTHON_EXPR: the expression sees the summary as `s`.
check() {
    local name=$1 file=$2 expr=$3
    if python3 -c "import json,sys; s=json.load(open(sys.argv[1])); sys.exit(0 if ($expr) else 1)" "$file"; then
        echo "ok   $name"; passed=$((passed+1))
    else
        echo "FAIL $name: ($expr) on:"; cat "$file"; fail=$((fail+1))
    fi
}

clean='s["leaked_pages"]==0 and s["leaked_headers"]==0 and s["dma_faults"]==0 and sum(s["drops"].values())==0'

for split in off on always; do
  for sim in thread stepped; do
    out=$TMP/$split-$sim.json
    timeout 60 $BIN --header-split $split --sim-mode $sim --mode read --frame-size 60-9216 \
        --proto mixed --packets 50000 --json --quiet >"$out"
    check "read split=$split sim=$sim jumbo mix" "$out" "s['packets']==50000 and $clean and s['read_fold']!=0"
  done
done

out=$TMP/drop64.json
timeout 60 $BIN --mode drop --frame-size 64 --batch 64 --packets 1000000 --json --quiet >"$out"
check "drop 64 B, 10^6 packets" "$out" "s['packets']==1000000 and s['bytes']==64*1000000 and $clean"

out=$TMP/tiny-ring.json
timeout 60 $BIN --ring-size 16 --batch 1 --frame-size 9216 --payload-buf 1024 --packets 20000 --json --quiet >"$out"
check "ring of 16, batch 1, 9216 B over 1 KiB buffers" "$out" "s['packets']==20000 and $clean"

out=$TMP/never-fits.json
timeout 60 $BIN --ring-size 8 --batch 8 --frame-size 9216 --payload-buf 1024 --duration 0.5 --json --quiet >"$out"
check "frames the whole ring cannot hold are missed, not a stall" "$out" \
    "s['packets']==0 and s['drops']['missed']>0 and s['leaked_pages']==0"

out=$TMP/lossy.json
timeout 60 $BIN --lossy --sim-mode thread --packets 200000 --json --quiet >"$out"
check "lossy wire: missed frames counted, nothing leaked" "$out" \
    "s['packets']==200000 and s['leaked_pages']==0 and s['drops']['missed']==s['hw']['mpc']"

# Two threads: RX on core 0, the application on core 1 returning header
# slots and pages from its own core, for every header pool strategy.
for hp in locked batched packed ring; do
    out=$TMP/cores-$hp.json
    timeout 60 $BIN --cores 0,1 --hdr-pool $hp --recycle-batch 16 --mode read --proto tcp \
        --frame-size 60-4000 --packets 100000 --json --quiet >"$out"
    check "--cores 0,1 --hdr-pool $hp: nothing leaked" "$out" \
        "s['packets']==100000 and $clean and s['hdr_pool']['strategy']=='$hp'"
done

# Runs until stopped; SIGINT must still give a summary and exit 0.
out=$TMP/sigint.json
timeout 30 $BIN --json --quiet >"$out" &
pid=$!
sleep 1.5
kill -INT $pid
wait $pid
check "SIGINT stops cleanly with a summary" "$out" "s['packets']>0 and $clean"

out=$TMP/term.json
timeout 30 $BIN --json --quiet --mode read --frame-size imix >"$out" &
pid=$!
sleep 1
kill -TERM $pid
wait $pid
check "SIGTERM stops cleanly with a summary" "$out" "s['packets']>0 and $clean"

# Bad arguments: one line on stderr, exit status 2, no panic.
for bad in "--batch 0" "--ring-size 100" "--device vfio:nonsense" "--device vfio:0000:03:00.0 --frame-size 64" \
           "--wire tap:x0" "--header-split sometimes" "--frame-size 10" "--hdr-buf 1000" \
           "--payload-buf 4096 --headroom 256" "--duration -1" "--core 4096" \
           "--cores 0,0" "--cores 1" "--recycle-batch 0" "--gro 65" "--hdr-pool spinlock" \
           "--hdr-pool packed --hdr-buf 512"; do
    set +e
    # shellcheck disable=SC2086
    timeout 20 $BIN $bad --packets 10 >/dev/null 2>"$TMP/err"
    rc=$?
    set -e
    if [ $rc -eq 2 ] && ! grep -qi "panick" "$TMP/err" && [ -s "$TMP/err" ]; then
        echo "ok   bad argument '$bad' -> exit 2: $(head -c 160 "$TMP/err" | head -1)"; passed=$((passed+1))
    else
        echo "FAIL bad argument '$bad': exit $rc"; cat "$TMP/err"; fail=$((fail+1))
    fi
done

# The VFIO backend on a machine without that device: exit 2 and exactly
# one line naming the missing device (no VFIO file is touched).
vfio_addr=0000:03:00.0
if [ -e /sys/bus/pci/devices/$vfio_addr ]; then
    echo "skip --device vfio:$vfio_addr: this machine has that PCI device"
else
    set +e
    timeout 20 $BIN --device vfio:$vfio_addr --packets 10 >/dev/null 2>"$TMP/err"
    rc=$?
    set -e
    if [ $rc -eq 2 ] && [ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -q "^rxsink: no PCI device $vfio_addr: " "$TMP/err"; then
        echo "ok   --device vfio:$vfio_addr (absent) -> exit 2: $(cat "$TMP/err")"; passed=$((passed+1))
    else
        echo "FAIL --device vfio:$vfio_addr (absent): exit $rc, expected 2 and one 'no PCI device' line:"; cat "$TMP/err"; fail=$((fail+1))
    fi
fi

echo "e2e-sim: $passed passed, $fail failed"
[ $fail -eq 0 ]
