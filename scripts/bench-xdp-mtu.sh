#!/usr/bin/env bash
# TCP over AF_XDP at MTU 1500 and 9000 (multi-buffer: a 9000-byte MTU's
# frames take three 3 KiB buffers, chained descriptors), one veth pair,
# one queue, root only. For each MTU: the Linux kernel as receiver
# (iperf3 -s), rxsink --mode tcp (smoltcp) and rxsink --mode tcp --copies 0
# (the zero-copy engine), each against iperf3 -c -P 1 -t SECONDS from the
# peer namespace (no offloads on the peer: AF_XDP sees complete wire
# frames). Prints Gbit/s per run, with rxsink's CPU seconds per GB and the
# share of its frames that came in several descriptors. A run that fails
# is named, never replaced by a number.
#
#   sudo scripts/bench-xdp-mtu.sh [SECONDS] [REPEATS]     (default 3 x 1)
#
# Not in CI (a measurement, not a check). The veth pair and the namespace
# are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-3}
R=${2:-1}

. scripts/lib.sh
need_root
install_missing ip=iproute2 iperf3=iperf3 python3=python3 ethtool=ethtool
build_rxsink

ID=$$
NS=rxmtu-$ID
VA=mxa$((ID % 100000))
VB=mxb$((ID % 100000))
OUR=10.94.0.1
PEER=10.94.0.2
TMP=$(mktemp -d)
cleanup() {
    xdp_veth_down
    rm -rf "$TMP"
}
. scripts/xdp-veth.sh
trap cleanup EXIT
xdp_veth_up

gbps() { python3 -c 'import json,sys; print("%.3f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e9))' "$1" 2>/dev/null || echo failed; }

echo "| MTU | receiver | Gbit/s | rxsink CPU s/GB | frames in several descriptors |"
echo "|---|---|---|---|---|"
for r in $(seq "$R"); do
    for mtu in 1500 9000; do
        ip link set "$VA" mtu $mtu
        ip -n "$NS" link set "$VB" mtu $mtu
        nsx ip neigh flush dev "$VB" 2>/dev/null || true

        ip addr add "$OUR/24" dev "$VA"
        iperf3 -s -B "$OUR" -1 >/dev/null 2>&1 &
        s=$!
        sleep 0.5
        nsx timeout $((D + 20)) iperf3 -c "$OUR" -t "$D" -P 1 --json >"$TMP/ik.json" 2>&1 || true
        wait "$s" 2>/dev/null || true
        ip addr flush dev "$VA"
        nsx ip neigh flush dev "$VB" 2>/dev/null || true
        echo "| $mtu | kernel (iperf3 -s) | $(gbps "$TMP/ik.json") | - | - |"

        for zc in "" "--copies 0"; do
            # shellcheck disable=SC2086
            timeout -s INT $((D + 30)) "$BIN" --device "xdp:$VA" --mode tcp --ip "$OUR/24" --mtu $mtu $zc \
                --until-closed 2 --json --quiet >"$TMP/rt.json" 2>"$TMP/rt.err" &
            rx=$!
            for _ in $(seq 50); do ip link show dev "$VA" | grep -q prog/xdp && break; sleep 0.1; done
            nsx timeout $((D + 20)) iperf3 -c "$OUR" -t "$D" -P 1 --json >"$TMP/ir.json" 2>&1 || true
            wait $rx || true
            nsx ip neigh flush dev "$VB" 2>/dev/null || true
            extra=$(python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
x = s["xdp"]
print("%.3f | %d of %d (multi_buffer %s)" % (s.get("cpu_seconds_per_gb") or 0, x["rx_multi_buffer"], s["packets"], s["xdp_mode"]["multi_buffer"]))' "$TMP/rt.json" 2>/dev/null || echo "failed: $(tail -1 "$TMP/rt.err") | -")
            echo "| $mtu | rxsink --mode tcp ${zc:-(smoltcp)} | $(gbps "$TMP/ir.json") | $extra |"
        done
    done
done
