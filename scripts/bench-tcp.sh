#!/usr/bin/env bash
# TCP receive benchmark, MTU 1500 and 9000, one markdown table:
#   kernel   Linux TCP over a veth pair between two namespaces:
#            iperf3 -s in one (core 1), iperf3 -c in the other (core 0).
#   tap      rxsink receiving iperf3 -c from the kernel over TAP (rxsink's
#            RX thread = driver + smoltcp on core 1; simulator thread and the
#            kernel sender on core 0), with and without --vnet-hdr --gro 16.
#   pair     rxsink --wire pair: a smoltcp sender on a second simulated NIC
#            in-process (its thread on core 0, RX thread on core 1), for a byte
#            count calibrated to take about T seconds.
# Each measurement R times; min and median are printed.
# Usage: scripts/bench-tcp.sh [T_SECONDS] [REPEATS]   (or env T=, R=)
# Needs root (namespaces, TAP).
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-${T:-5}}
R=${2:-${R:-3}}

. scripts/lib.sh
need_root /dev/net/tun
install_missing ip=iproute2 iperf3=iperf3 python3=python3 taskset=util-linux
if [ "$(nproc)" -lt 2 ]; then
    echo "bench-tcp: needs at least 2 cores for the pinning used here" >&2
    exit 77
fi

build_rxsink
TMP=$(mktemp -d)
NSA=rxbench-a-$$; NSB=rxbench-b-$$; NST=rxbench-t-$$
pids=()     # background processes still running: iperf3 -s, rxsink
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -INT "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    for ns in "$NSA" "$NSB" "$NST"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
log() { echo "bench-tcp: $*" >&2; }
RESULTS=$TMP/results
: >"$RESULTS"
HZ=$(getconf CLK_TCK)

# --- Linux kernel TCP over veth ---------------------------------------------
ip netns add "$NSA"; ip netns add "$NSB"
ip link add va netns "$NSA" type veth peer name vb netns "$NSB"
ip -n "$NSA" addr add 10.92.0.1/24 dev va
ip -n "$NSB" addr add 10.92.0.2/24 dev vb
for ns in "$NSA" "$NSB"; do ip -n "$ns" link set lo up; done
ip -n "$NSA" link set va up; ip -n "$NSB" link set vb up
ip netns exec "$NSA" taskset -c 1 iperf3 -s -p 5201 >"$TMP/srv.log" 2>&1 &
srv=$!; pids+=("$srv")
for _ in $(seq 50); do
    ip netns exec "$NSA" ss -Hltn 'sport = :5201' | grep -q . && break; sleep 0.1
done

proc_cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }      # utime+stime, ticks
softirq_all() { awk '/^cpu[0-9]/ {s += $8} END {print s}' /proc/stat; }  # ticks

kernel_run() {
    local mtu=$1 i=$2 out=$TMP/k.json c0 c1 q0 q1
    c0=$(proc_cpu "$srv"); q0=$(softirq_all)
    timeout $((T + 30)) ip netns exec "$NSB" taskset -c 0 iperf3 -c 10.92.0.1 -p 5201 -t "$T" --json >"$out"
    c1=$(proc_cpu "$srv"); q1=$(softirq_all)
    python3 - "$out" "$mtu" "$i" $((c1 - c0)) $((q1 - q0)) "$HZ" >>"$RESULTS" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))["end"]
mtu, i, proc, sirq, hz = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
gb = e["sum_received"]["bytes"] / 1e9
gbps = e["sum_received"]["bits_per_second"] / 1e9
print(json.dumps({"row": "kernel", "mtu": int(mtu), "gbps": gbps, "cpu_gb": proc / hz / gb}))
print(json.dumps({"row": "kernel+softirq", "mtu": int(mtu), "gbps": gbps, "cpu_gb": (proc + sirq) / hz / gb}))
PY
}

# --- rxsink over TAP -----------------------------------------------------
ip netns add "$NST"
ip -n "$NST" link set lo up
ip netns exec "$NST" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
tap_run() {
    local row=$1 mtu=$2 i=$3; shift 3
    local out=$TMP/t.json ic=$TMP/ti.json rc=0 p
    ip netns exec "$NST" timeout -s INT -k 10 $((T + 60)) "$BIN" --mode tcp --wire tap:rxb0 \
        --ip 10.93.0.1/24 --mtu "$mtu" --core 1 --sim-core 0 --until-closed 2 --json --quiet "$@" \
        >"$out" 2>"$TMP/t.err" &
    p=$!; pids=("$srv" "$p")
    for _ in $(seq 100); do ip netns exec "$NST" test -e /sys/class/net/rxb0 && break; sleep 0.1; done
    ip -n "$NST" addr add 10.93.0.2/24 dev rxb0
    ip -n "$NST" link set rxb0 mtu "$mtu"
    ip -n "$NST" link set rxb0 up
    timeout $((T + 30)) ip netns exec "$NST" taskset -c 0 iperf3 -c 10.93.0.1 -t "$T" --json >"$ic" || rc=$?
    wait "$p" || rc=$?
    pids=("$srv")
    if [ $rc -ne 0 ]; then
        log "rxsink over TAP ($row, MTU $mtu) failed: exit $rc"; cat "$out" "$TMP/t.err" "$ic" >&2
        exit 1
    fi
    python3 - "$out" "$ic" "$row" "$mtu" >>"$RESULTS" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); e = json.load(open(sys.argv[2]))["end"]
assert s["leaked_pages"] == s["leaked_headers"] == s["leaked_tx_buffers"] == s["dma_faults"] == 0, s
print(json.dumps({"row": sys.argv[3], "mtu": int(sys.argv[4]), "gbps": e["sum_received"]["bits_per_second"] / 1e9,
                  "cpu_gb": s["cpu_seconds_per_gb"], "thread_gb": s["thread_cpu_seconds_per_gb"],
                  "rxsink_gbps": s["gbps"],
                  "super": s["wire_stats"]["tap"]["rx_super_frames"]}))
PY
}

# --- rxsink --wire pair --------------------------------------------------
pair_cmd() { echo taskset -c 0 "$BIN" --mode tcp --wire pair --mtu "$1" --core 1 --pair-bytes "$2" --json --quiet; }
pair_run() {
    local mtu=$1 bytes=$2 row=${3:-pair} out=$TMP/p.json
    # shellcheck disable=SC2046
    timeout $((T * 10 + 60)) $(pair_cmd "$mtu" "$bytes") >"$out"
    python3 - "$out" "$row" "$mtu" >>"$RESULTS" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
assert s["leaked_pages"] == s["leaked_headers"] == s["leaked_tx_buffers"] == s["dma_faults"] == 0, s
assert s["peer"]["finished"] == 1 and s["tcp"]["aborted"] == 0, s
print(json.dumps({"row": sys.argv[2], "mtu": int(sys.argv[3]), "gbps": s["gbps"], "cpu_gb": s["cpu_seconds_per_gb"],
                  "thread_gb": s["thread_cpu_seconds_per_gb"], "seconds": s["seconds"]}))
PY
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
PAIR_BYTES=()
for mtu in 1500 9000; do
    ip -n "$NSA" link set va mtu "$mtu"; ip -n "$NSB" link set vb mtu "$mtu"
    for i in $(seq "$R"); do
        log "MTU $mtu run $i/$R: kernel veth"; kernel_run "$mtu" "$i"
        log "MTU $mtu run $i/$R: rxsink tap"; tap_run tap "$mtu" "$i"
        log "MTU $mtu run $i/$R: rxsink tap --vnet-hdr --gro 16"; tap_run tap-vnet "$mtu" "$i" --vnet-hdr --gro 16
    done
    # Calibrate the pair's byte count to about T seconds, then measure.
    log "MTU $mtu: calibrating the pair wire"
    pair_run "$mtu" $((256 << 20)) calib
    bytes=$(python3 -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1])][-1]; print(max(1 << 20, int(r["gbps"] * 1e9 / 8 * float(sys.argv[2]))))' "$RESULTS" "$T")
    PAIR_BYTES+=("$mtu:$bytes")
    for i in $(seq "$R"); do
        log "MTU $mtu run $i/$R: rxsink pair ($bytes B)"; pair_run "$mtu" "$bytes"
    done
done

python3 - "$RESULTS" "$T" "$R" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
T, R = sys.argv[2], sys.argv[3]
busy = "rxsink receive path: the polling rounds that received or sent frames (driver, presentation, smoltcp's copy into the socket ring, lengths counted, ACKs and window updates)"
names = [
    ("kernel", "Linux TCP, veth, iperf3 -s", "iperf3 -s process utime+stime"),
    ("kernel+softirq", "Linux TCP, veth, iperf3 -s", "iperf3 -s process + softirq time of all CPUs"),
    ("tap", "rxsink over TAP, iperf3 -c from the kernel", busy),
    ("tap-vnet", "rxsink over TAP --vnet-hdr --gro 16", busy),
    ("pair", "rxsink --wire pair (smoltcp sender in-process)", busy),
]
print(f"TCP receive, {T} s per run, {R} runs each: min / median\n")
print("| receiver | MTU | Gbit/s min | Gbit/s median | receiver CPU-s/GB min | receiver CPU-s/GB median | whole RX thread CPU-s/GB median | CPU counted |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for mtu in (1500, 9000):
    for key, name, what in names:
        sel = [r for r in rows if r["row"] == key and r["mtu"] == mtu]
        if not sel:
            continue
        g = [r["gbps"] for r in sel]
        c = [r["cpu_gb"] for r in sel]
        t = [r["thread_gb"] for r in sel if "thread_gb" in r]
        tmed = f"{st.median(t):.3f}" if t else "-"
        print(f"| {name} | {mtu} | {min(g):.2f} | {st.median(g):.2f} | {min(c):.3f} | {st.median(c):.3f} | {tmed} | {what} |")
sup = [r["super"] for r in rows if r["row"] == "tap-vnet"]
print(f"\nTAP with --vnet-hdr: rx_super_frames per run {sup} (TSO super-frames from the kernel).")
PY

cat <<EOF

Gbit/s: kernel and TAP rows are iperf3's end.sum_received.bits_per_second
(what the receiving server counted over the test); pair rows are rxsink's
gbps (tcp.bytes over its run time). CPU-s/GB is CPU seconds per 10^9 bytes
received:
- kernel: the iperf3 -s process's utime+stime from /proc/PID/stat; the
  "+ softirq" row adds the softirq time of all CPUs from /proc/stat during
  the test, which includes the veth receive path (run in the sender's
  softirq on core 0) but also the sender's own ACK processing: an upper
  bound of the receive cost, the first row a lower bound. /proc/stat is
  machine-wide: on a shared machine it also holds other tenants' softirq.
- rxsink: cpu_seconds_per_gb from its JSON: the RX thread's CPU time
  times the share of its loop's wall time spent in rounds that did
  receive-path work, frames received or sent (ring poll, header into
  headroom, smoltcp with its one copy into the socket ring, the sink
  consuming the ring, ACKs and window updates out), on a core of its own
  (pinned, busy-polling). Idle
  rounds are not in it, nor is the simulator (the NIC's stand-in: its own
  thread over TAP, stepped between rounds on the pair wire) nor the pair's
  in-process sender. "whole RX thread" is everything that thread burned,
  idle spinning (and the stepped simulator on the pair wire) included.
- Bytes: no receiver reads the payload. iperf3 -s copies it into user
  memory (read(2)) and does not look at it; rxsink runs without --verify:
  smoltcp copies it into the socket ring, the sink counts lengths only.
- Load average when the runs started: $LOAD0; at the end: $(cut -d' ' -f1-3 /proc/loadavg).

Commands (NSA/NSB/NST are namespaces; va/vb a veth pair; rxb0 rxsink's TAP):
  ip netns exec NSA taskset -c 1 iperf3 -s -p 5201
  ip netns exec NSB taskset -c 0 iperf3 -c 10.92.0.1 -p 5201 -t $T --json
  ip netns exec NST $BIN --mode tcp --wire tap:rxb0 --ip 10.93.0.1/24 --mtu MTU --core 1 --sim-core 0 --until-closed 2 --json --quiet [--vnet-hdr --gro 16]
  ip -n NST addr add 10.93.0.2/24 dev rxb0; ip -n NST link set rxb0 mtu MTU up
  ip netns exec NST taskset -c 0 iperf3 -c 10.93.0.1 -t $T --json
  $(pair_cmd MTU BYTES)   (BYTES per MTU: ${PAIR_BYTES[*]}, calibrated from one 256 MiB run to take ~$T s)
EOF
