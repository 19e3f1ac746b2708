#!/usr/bin/env bash
# Receive rates over AF_XDP on one veth pair, one RX queue, root only:
#   - rxsink --device xdp:VETH --mode drop and --mode read (Mpps), and drop
#     with --busy-poll 50 (the veth's NAPI driven from rxsink's thread);
#   - the kernel's xdp-bench drop (xdp-tools), when it loads, and the
#     kernel's XDP_DROP by our own two-instruction program (xdp crate's
#     example xdp_drop), counted by veth's rx_queue_0_xdp_drops;
#   - DPDK testpmd rxonly on its AF_XDP PMD (--vdev net_af_xdp0,iface=VETH);
#   - TCP: the Linux kernel as receiver (iperf3 -s) against rxsink
#     --mode tcp's iperf3 server, iperf3 -c -P 4 from the peer (Gbit/s).
# Traffic for the packet rates: 60-byte frames from the peer namespace by
# pipeline's example xdp_tx (AF_XDP TX, copy mode; Debian's xdp-trafficgen
# does not load on recent kernels), started 1 s before each receiver and
# running through it. Each receiver runs SECONDS (default 4) REPEATS times
# (default 3); the table gives min and median over the repeats, and the
# generator's own rate. A tool that is missing or does not run is named in
# the output, never replaced by a number.
#
#   sudo scripts/bench-xdp.sh [SECONDS] [REPEATS]
#
# Not in CI (a benchmark, not a check). The veth pair and the namespace
# are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-4}
R=${2:-3}

. scripts/lib.sh
need_root
install_missing ip=iproute2 iperf3=iperf3 python3=python3 ethtool=ethtool
# The peers compared against: a note when they cannot be installed.
need=()
command -v xdp-bench >/dev/null || need+=(xdp-tools)
command -v dpdk-testpmd >/dev/null || need+=(dpdk-dev librte-net-af-xdp23)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || true
    apt-get install -y -q "${need[@]}" >/dev/null || echo "note: could not install ${need[*]}"
fi

build_rxsink
cargo build --release -p pipeline --example xdp_tx -q
cargo build --release -p xdp --example xdp_drop -q
GEN=$PWD/target/release/examples/xdp_tx
DROP=$PWD/target/release/examples/xdp_drop

ID=$$
NS=rxbench-$ID
VA=bxa$((ID % 100000))
VB=bxb$((ID % 100000))
OUR=10.93.0.1
PEER=10.93.0.2
TMP=$(mktemp -d)
gen_pid=
cleanup() {
    [ -n "$gen_pid" ] && kill -INT "$gen_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    xdp_veth_down
    rm -rf "$TMP"
}
. scripts/xdp-veth.sh
trap cleanup EXIT
xdp_veth_up
RES=$TMP/results
: >"$RES"
note() { echo "$*"; echo "note $*" >>"$RES"; }

# gen_start / gen_stop: the generator, SECONDS + 3 s of 60-byte frames.
gen_start() {
    nsx "$GEN" "$VB" "$MAC" $((D + 3)) 60 >"$TMP/gen.out" 2>&1 &
    gen_pid=$!
    sleep 1
}
gen_stop() {
    wait "$gen_pid" || true
    gen_pid=
    python3 -c 'import re,sys; m=re.search(r"([0-9.]+) Mpps", open(sys.argv[1]).read()); print("generator", m.group(1) if m else "nan")' "$TMP/gen.out" >>"$RES"
}

rxsink_rate() {   # MODE [NAME EXTRA_ARGS...]
    local mode=$1 name=${2:-$1}
    shift; shift || true
    gen_start
    "$BIN" --device "xdp:$VA" --mode "$mode" --duration "$D" --ring-size 4096 --batch 64 "$@" \
        --json --quiet >"$TMP/rx.json" 2>"$TMP/rx.err" || true
    gen_stop
    python3 -c '
import json, sys
try:
    s = json.load(open(sys.argv[1]))
    print("rxsink_%s %.4f" % (sys.argv[2], s["pps"] / 1e6))
except Exception as e:
    print("note rxsink %s failed: %s" % (sys.argv[2], e))' "$TMP/rx.json" "$name" >>"$RES"
}

xdpbench_rate() {
    gen_start
    timeout -s INT "$((D + 1))" xdp-bench drop "$VA" -i 1 >"$TMP/xb.out" 2>&1 || true
    gen_stop
    if grep -q "Failed\|failed\|Error" "$TMP/xb.out"; then
        echo "note xdp-bench drop did not run: $(grep -m1 -i 'fail\|error' "$TMP/xb.out")" >>"$RES"
    else
        python3 -c '
import re, sys, statistics
v = [float(x.replace(",", "")) for x in re.findall(r"^\s*(?:receive|rx)\S*\s+([0-9,]+) pkt/s", open(sys.argv[1]).read(), re.M)]
print("xdp_bench_drop %.4f" % (statistics.median(v[1:] or v) / 1e6) if v else "note xdp-bench: no rate in its output")' "$TMP/xb.out" >>"$RES"
    fi
}

# The kernel's XDP_DROP: our drop program attached for SECONDS; the rate is
# the driver's xdp_drops counter over that time.
kernel_drop_rate() {
    xdp_drops() { ethtool -S "$VA" | awk '/xdp_drops:/ {n += $2} END {print n + 0}'; }
    gen_start
    "$DROP" "$VA" "$D" >"$TMP/kd.out" 2>&1 &
    local p=$!
    sleep 0.3
    local a t0 b t1
    a=$(xdp_drops); t0=$(date +%s.%N)
    wait $p || true
    b=$(xdp_drops); t1=$(date +%s.%N)
    gen_stop
    python3 -c 'import sys; a, b, t0, t1 = map(float, sys.argv[1:]); print("kernel_xdp_drop %.4f" % ((b - a) / (t1 - t0) / 1e6))' "$a" "$b" "$t0" "$t1" >>"$RES"
}

testpmd_rate() {
    gen_start
    timeout -s INT "$((D + 2))" dpdk-testpmd -l 0-1 --no-pci --no-huge -m 512 \
        --vdev "net_af_xdp0,iface=$VA,start_queue=0,queue_count=1" -- \
        --forward-mode=rxonly --stats-period 1 -a --total-num-mbufs=16384 >"$TMP/pmd.out" 2>&1 || true
    gen_stop
    python3 -c '
import re, sys, statistics
v = [int(x) for x in re.findall(r"Rx-pps:\s+(\d+)", open(sys.argv[1]).read())]
v = [x for x in v[1:] if x > 0] or v
print("testpmd_rxonly %.4f" % (statistics.median(v) / 1e6) if v else "note testpmd: no rate in its output")' "$TMP/pmd.out" >>"$RES"
}

tcp_kernel() {
    ip addr add "$OUR/24" dev "$VA"
    iperf3 -s -B "$OUR" -1 >/dev/null 2>&1 &
    local s=$!
    sleep 0.5
    nsx timeout $((D + 20)) iperf3 -c "$OUR" -t "$D" -P 4 --json >"$TMP/ik.json" 2>&1 || true
    wait "$s" 2>/dev/null || true
    ip addr flush dev "$VA"
    python3 -c 'import json,sys; print("tcp_kernel %.3f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e9))' "$TMP/ik.json" >>"$RES" 2>/dev/null ||
        echo "note kernel iperf3 failed" >>"$RES"
}

tcp_rxsink() {
    "$BIN" --device "xdp:$VA" --mode tcp --ip "$OUR/24" --until-closed 5 --json --quiet >"$TMP/rt.json" 2>"$TMP/rt.err" &
    local r=$!
    for _ in $(seq 50); do ip link show dev "$VA" | grep -q prog/xdp && break; sleep 0.1; done
    nsx timeout $((D + 20)) iperf3 -c "$OUR" -t "$D" -P 4 --json >"$TMP/ir.json" 2>&1 || true
    for _ in $(seq 100); do kill -0 $r 2>/dev/null || break; sleep 0.1; done
    kill -INT $r 2>/dev/null || true
    wait $r || true
    nsx ip neigh flush dev "$VB" 2>/dev/null || true
    python3 -c 'import json,sys; print("tcp_rxsink %.3f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e9))' "$TMP/ir.json" >>"$RES" 2>/dev/null ||
        echo "note rxsink iperf3 failed: $(tail -2 "$TMP/rt.err")" >>"$RES"
}

have_xdpbench=1; command -v xdp-bench >/dev/null || { have_xdpbench=0; note "xdp-bench (xdp-tools) is not installed"; }
have_testpmd=1; command -v dpdk-testpmd >/dev/null || { have_testpmd=0; note "dpdk-testpmd (Debian dpdk-dev) is not installed"; }
for r in $(seq "$R"); do
    echo "== round $r of $R"
    rxsink_rate drop
    rxsink_rate read
    rxsink_rate drop drop_busy --busy-poll 50
    [ $have_xdpbench -eq 1 ] && xdpbench_rate
    kernel_drop_rate
    [ $have_testpmd -eq 1 ] && testpmd_rate
    tcp_kernel
    tcp_rxsink
done

echo
echo "AF_XDP receive on veth ($VA, 1 queue, copy mode), $D s x $R runs, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$RES" <<'EOF'
import sys, statistics
vals, notes = {}, []
for line in open(sys.argv[1]):
    k, _, v = line.strip().partition(" ")
    if k == "note":
        notes.append(v)
    else:
        try:
            vals.setdefault(k, []).append(float(v))
        except ValueError:
            pass
rows = [
    ("rxsink --mode drop", "rxsink_drop", "Mpps"),
    ("rxsink --mode read", "rxsink_read", "Mpps"),
    ("rxsink --mode drop --busy-poll 50", "rxsink_drop_busy", "Mpps"),
    ("xdp-bench drop (kernel XDP_DROP)", "xdp_bench_drop", "Mpps"),
    ("kernel XDP_DROP (xdp_drop example)", "kernel_xdp_drop", "Mpps"),
    ("DPDK testpmd rxonly, net_af_xdp", "testpmd_rxonly", "Mpps"),
    ("generator (xdp_tx, 60 B frames)", "generator", "Mpps"),
    ("TCP: kernel receiver, iperf3 -P 4", "tcp_kernel", "Gbit/s"),
    ("TCP: rxsink --mode tcp, iperf3 -P 4", "tcp_rxsink", "Gbit/s"),
]
print("| receiver | min | median | unit | runs |")
print("|---|---|---|---|---|")
for name, key, unit in rows:
    v = vals.get(key)
    if v:
        print("| %s | %.3f | %.3f | %s | %d |" % (name, min(v), statistics.median(v), unit, len(v)))
    else:
        print("| %s | - | - | %s | 0 (see notes) |" % (name, unit))
for n in dict.fromkeys(notes):
    print("note:", n)
EOF
