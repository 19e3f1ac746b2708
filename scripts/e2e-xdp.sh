#!/usr/bin/env bash
# End-to-end checks of rxsink on AF_XDP (--device xdp:IFNAME) over a veth
# pair: rxsink's end (one RX queue) stays in this namespace, the peer end
# lives in a private network namespace from which the Linux kernel sends:
#   - raw frames (python3, AF_PACKET) counted exactly in drop and read
#     mode, --pcap-out holding every one;
#   - the kernel's TCP into --mode tcp, through smoltcp and through the
#     zero-copy engine (--copies 0): ping, 64 MiB of the pattern verified
#     byte for byte, iperf3 -c -P 4 with exact byte counts;
#   - multi-buffer at MTU 9000 (frames of up to three descriptors): raw
#     frames of 60..9014 bytes counted exactly (and byte for byte in the
#     --pcap-out), ping -s 8000 (echo replies sent as chained TX
#     descriptors) and 64 MiB of kernel TCP verified, through smoltcp and
#     the zero-copy engine; a bridge at MTU 9000 in generic mode;
#   - --queues 2 on a two-queue veth: raw frames counted exactly over both;
#   - generic (SKB) mode where the driver has no native XDP (a bridge);
#   - SIGTERM mid-run (clean stop, exit 0) and SIGKILL (the kernel closes
#     the BPF link): the XDP program is gone from the interface after
#     every run;
#   - the error cases, one line each, with the exit status of the matching
#     VFIO error: 2 for a missing interface or a queue that does not exist
#     (and --headroom below 256), 1 for no permission (run as nobody), a
#     second rxsink on the same queue (bind: EBUSY) and an interface that
#     already has an XDP program.
# Every rxsink run must end with exit status 0 and nothing leaked.
# Needs root (exit 77 otherwise). Every wait is bounded; the namespace and
# the veth pairs are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
need_root
install_missing ip=iproute2 ping=iputils-ping iperf3=iperf3 python3=python3 ethtool=ethtool timeout=coreutils
build_rxsink

ID=$$
NS=rxns-$ID
VA=rxa$((ID % 100000))      # rxsink's end (this namespace)
VB=rxb$((ID % 100000))      # the kernel's end (in $NS)
VQ=rxq$((ID % 100000))      # a two-queue veth for the "already attached" case
OUR=10.92.0.1
PEER=10.92.0.2
PORT=9000
IPERF_PORT=5201
TMP=$(mktemp -d)
rx_pid=
. scripts/e2e-kernel.sh
cleanup() {
    kill_rx
    xdp_veth_down
    ip link del "$VQ" 2>/dev/null || true
    ip link del "rxm$((ID % 100000))" 2>/dev/null || true
    ip link del "rxbr$((ID % 100000))" 2>/dev/null || true
    rm -rf "$TMP"
}
. scripts/xdp-veth.sh
trap cleanup EXIT
xdp_veth_up


# has_program IF: `ip link` shows an XDP program on IF.
has_program() { ip link show dev "$1" | grep -Eq ' xdp(generic|drv|offload)? |prog/xdp'; }

# no_program LABEL: the interface shows no XDP program.
no_program() {
    if has_program "$VA"; then
        bad "$1: an XDP program is still attached to $VA:"; ip link show dev "$VA"
    else
        ok "$1: no XDP program left on $VA"
    fi
}

# start_rx LABEL RXSINK_ARGS...: rxsink on $VA in the background, bounded
# by timeout (SIGINT at 90 s); waits until its program is attached.
start_rx() {
    rx_label=$1; shift
    rx_out=$TMP/rx.json
    : >"$rx_out"; : >"$TMP/rx.err"
    timeout -s INT -k 10 90 "$BIN" --device "xdp:$VA" --json --quiet "$@" >"$rx_out" 2>"$TMP/rx.err" &
    rx_pid=$!
    for _ in $(seq 100); do
        ip link show dev "$VA" | grep -q "prog/xdp" && return 0
        kill -0 "$rx_pid" 2>/dev/null || break
        sleep 0.1
    done
    bad "$rx_label: rxsink did not attach its program within 10 s"; fail_log
    kill -INT "$rx_pid" 2>/dev/null || true
    wait "$rx_pid" 2>/dev/null || true
    rx_pid=
    return 1
}

# wait_rx LABEL: waits (bounded, 30 s) for rxsink to end by itself, checks
# exit 0, no leak, multi-buffer as $MB says (off below one buffer's MTU),
# and that the program is gone.
MB=False
wait_rx() {
    local rc=0 waited=0
    while kill -0 "$rx_pid" 2>/dev/null && [ $waited -lt 300 ]; do sleep 0.1; waited=$((waited+1)); done
    if kill -0 "$rx_pid" 2>/dev/null; then
        bad "$1: rxsink still running after 30 s: SIGINT"
        kill -INT "$rx_pid" 2>/dev/null || true
    fi
    wait "$rx_pid" || rc=$?
    rx_pid=
    if [ $rc -eq 0 ] && [ -s "$rx_out" ]; then
        ok "$1: rxsink exit 0"
        check "$1: no leaked pages/headers/tx buffers, xdp_mode reported" "$rx_out" \
            "s['leaked_pages']==0 and s['leaked_headers']==0 and s.get('leaked_tx_buffers',0)==0 and s['xdp_mode']['attach'] in ('native','generic') and s['xdp_mode']['bind'] in ('zerocopy','copy') and s['xdp_mode']['multi_buffer']==$MB"
    else
        bad "$1: rxsink exit status $rc"; cat "$rx_out"; fail_log
    fi
    no_program "$1"
}

# The raw sender: N frames of LEN bytes to DST_MAC, EtherType 0x88b5 (local
# experimental), frame i carrying i, paced (at most 16 frames a
# millisecond) so that rxsink, with a 4096-entry fill ring, keeps up even
# when the machine's other work deschedules it for a while: AF_XDP drops
# what finds the fill ring empty (counted: xdp.kernel_rx_fill_ring_empty_descs).
RAW='
import socket, sys, time
ifname, dst, n, length = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
src = s.getsockname()[4]
sent = 0
for i in range(n):
    body = i.to_bytes(4, "big") * ((length - 14) // 4 + 1)
    s.send(dst + src + b"\x88\xb5" + body[: length - 14])
    sent += 1
    if sent % 16 == 0:
        time.sleep(0.001)
print(sent)
'
N=20000
LEN=128

for mode in drop read busy; do
    label="$mode mode, $N raw frames"
    extra=()
    [ "$mode" = read ] && extra=(--pcap-out "$TMP/out.pcap")
    if [ "$mode" = busy ]; then
        # Busy polling: the veth's NAPI driven from rxsink's thread.
        mode=drop; label="drop mode --busy-poll 50, $N raw frames"; extra=(--busy-poll 50)
    fi
    start_rx "$label" --mode "$mode" --ring-size 4096 --duration 8 "${extra[@]}" || continue
    sent=$(nsx timeout 60 python3 -c "$RAW" "$VB" "$MAC" $N $LEN 2>"$TMP/send.err") || sent=0
    [ "$sent" = "$N" ] && ok "$label: the peer sent $N frames" || { bad "$label: sender: $sent $(cat "$TMP/send.err")"; }
    wait_rx "$label"
    check "$label: counted exactly: packets == $N, bytes == $N x $LEN, no drop" "$rx_out" \
        "s['packets']==$N and s['bytes']==$N*$LEN and sum(s['drops'].values())==0 and s['xdp']['misplaced']==0"
    python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print("     info: xdp_mode", s["xdp_mode"], "xdp", s["xdp"])' "$rx_out"
    if [ "$mode" = read ]; then
        check "$label: --pcap-out holds every frame" "$rx_out" "s['pcap_out']['frames']==$N and s['pcap_out']['errors']==0"
        python3 - "$TMP/out.pcap" $N $LEN <<'EOF' && ok "$label: the pcap's frames are the sent bytes" || bad "$label: pcap content"
import struct, sys
data = open(sys.argv[1], "rb").read()
n, length = int(sys.argv[2]), int(sys.argv[3])
off, i = 24, 0
while off < len(data):
    _, _, incl, _ = struct.unpack_from("<IIII", data, off)
    frame = data[off + 16: off + 16 + incl]
    assert len(frame) == length and frame[12:14] == b"\x88\xb5", (i, len(frame))
    assert frame[14:18] == i.to_bytes(4, "big"), i
    off += 16 + incl
    i += 1
assert i == n, i
EOF
    fi
done

# SIGTERM mid-run: a clean stop (exit 0, nothing leaked), program detached.
label="SIGTERM mid-run"
if start_rx "$label" --mode drop --ring-size 4096 --duration 60; then
    nsx timeout 60 python3 -c "$RAW" "$VB" "$MAC" 2000 $LEN >/dev/null 2>&1 || true
    kill -TERM "$rx_pid"
    wait_rx "$label"
    check "$label: the frames before the signal were counted" "$rx_out" "s['packets']==2000"
fi

# SIGKILL: no clean-up of ours runs; the kernel closes the BPF link. (The
# signal goes to rxsink itself, not to the timeout wrapping it.)
label="SIGKILL mid-run"
if start_rx "$label" --mode drop --duration 60; then
    kill -KILL "$(pgrep -P "$rx_pid")"
    wait "$rx_pid" 2>/dev/null || true
    rx_pid=
    for _ in $(seq 20); do has_program "$VA" || break; sleep 0.1; done
    no_program "$label"
fi

# The kernel's TCP: ping, then 64 MiB of the pattern verified
# (ping_and_send, scripts/e2e-kernel.sh).
TCP_ARGS=(--mode tcp --ip "$OUR/24" --port $PORT --iperf3-port $IPERF_PORT)
# Both TCP stacks on AF_XDP queues: smoltcp (copies once) and the
# zero-copy engine (--copies 0: the chunks are the UMEM's pages).
for zc in "" " --copies 0"; do
    read -r -a ZC <<<"$zc"
    label="tcp mode$zc, ping + kernel TCP sender"
    if start_rx "$label" "${TCP_ARGS[@]}" "${ZC[@]}" --verify --until-closed 1; then
        ping_and_send "$label"
        wait_rx "$label"
        check "$label: 64 MiB verified byte for byte, no mismatch, no abort" "$rx_out" \
            "s['tcp']['verified']==$MB64 and s['tcp']['bytes']==$MB64 and s['tcp']['mismatches']==0 and s['tcp']['connections']==1 and s['tcp']['aborted']==0"
    fi

    label="tcp mode$zc, iperf3 -c -P 4"
    if start_rx "$label" "${TCP_ARGS[@]}" "${ZC[@]}" --until-closed 5; then
        ic=$TMP/iperf3.json; rc=0
        nsx timeout 40 iperf3 -c $OUR -p $IPERF_PORT -t 3 -P 4 --json >"$ic" 2>&1 || rc=$?
        if [ $rc -eq 0 ]; then
            ok "$label: iperf3 exit 0, $(python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["end"]; print("%.2f Gbit/s, sent %d B, server counted %d B" % (e["sum_received"]["bits_per_second"]/1e9, e["sum_sent"]["bytes"], e["sum_received"]["bytes"]))' "$ic")"
        else
            bad "$label: iperf3 exit $rc"; tail -5 "$ic"
        fi
        wait_rx "$label"
        if [ $rc -eq 0 ]; then
            check "$label: every byte iperf3 sent was read by the sink (tcp.bytes - sum_sent = control bytes < 64 KiB)" \
                "$rx_out" "0 < s['tcp']['bytes'] - c['end']['sum_sent']['bytes'] < 65536" "$ic"
            check "$label: iperf3's sum_received.bytes == the bytes our server counted, 5 connections, 1 test" "$rx_out" \
                "s['iperf3']['last_test_bytes']==c['end']['sum_received']['bytes'] and s['iperf3']['tests_completed']==1 and s['iperf3']['last_test_streams']==4 and s['tcp']['connections']==5" "$ic"
        fi
    fi
    if [ -n "$zc" ]; then
        check "tcp mode$zc: the engine handed out UMEM pages and got every one back, none copied" "$rx_out" \
            "s['zc'] is not None and s['zc']['bytes']>0 and s['zc']['returned_bytes']==s['zc']['bytes'] and s['zc']['copy_fallback_bytes']==0"
    fi
done

# Multi-buffer: both ends at MTU 9000, so frames take up to three 3 KiB
# buffers (the kernel chains their descriptors with XDP_PKT_CONTD; the
# program is loaded as xdp.frags, the sockets bound with XDP_USE_SG).
ip link set "$VA" mtu 9000
ip -n "$NS" link set "$VB" mtu 9000
MB=True
# Raw frames of LENS bytes in turn (one, two and three buffers, and each
# boundary), frame i carrying i; paced at 4 a millisecond.
RAWJ='
import socket, sys, time
ifname, dst, n = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), int(sys.argv[3])
lens = [int(x) for x in sys.argv[4].split(",")]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
src = s.getsockname()[4]
for i in range(n):
    length = lens[i % len(lens)]
    body = i.to_bytes(4, "big") * ((length - 14) // 4 + 1)
    s.send(dst + src + b"\x88\xb5" + body[: length - 14])
    if i % 4 == 3:
        time.sleep(0.001)
print(n)
'
NJ=3000
LENS=60,1514,3072,3073,6144,6145,9014
read -r JBYTES JMULTI < <(python3 -c '
import sys
n, lens = int(sys.argv[1]), [int(x) for x in sys.argv[2].split(",")]
ls = [lens[i % len(lens)] for i in range(n)]
print(sum(ls), sum(1 for l in ls if l > 3072))' $NJ $LENS)
for mode in drop read; do
    label="MTU 9000, $mode mode, $NJ raw frames of $LENS bytes"
    extra=()
    [ "$mode" = read ] && extra=(--pcap-out "$TMP/jumbo.pcap")
    start_rx "$label" --mode "$mode" --ring-size 4096 --duration 6 "${extra[@]}" || continue
    sent=$(nsx timeout 60 python3 -c "$RAWJ" "$VB" "$MAC" $NJ $LENS 2>"$TMP/send.err") || sent=0
    [ "$sent" = "$NJ" ] && ok "$label: the peer sent $NJ frames" || bad "$label: sender: $sent $(cat "$TMP/send.err")"
    wait_rx "$label"
    check "$label: counted exactly: packets == $NJ, bytes == $JBYTES, $JMULTI of them in several descriptors, no drop" "$rx_out" \
        "s['packets']==$NJ and s['bytes']==$JBYTES and s['xdp']['rx_multi_buffer']==$JMULTI and sum(s['drops'].values())==0 and s['xdp']['misplaced']==0 and s['xdp']['kernel_rx_dropped']==0"
    python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print("     info: xdp_mode", s["xdp_mode"], "xdp", s["xdp"])' "$rx_out"
    if [ "$mode" = read ]; then
        python3 - "$TMP/jumbo.pcap" $NJ $LENS <<'EOF2' && ok "$label: the pcap's frames are the sent bytes" || bad "$label: pcap content"
import struct, sys
data = open(sys.argv[1], "rb").read()
n, lens = int(sys.argv[2]), [int(x) for x in sys.argv[3].split(",")]
off, i = 24, 0
while off < len(data):
    _, _, incl, _ = struct.unpack_from("<IIII", data, off)
    frame = data[off + 16: off + 16 + incl]
    length = lens[i % len(lens)]
    body = i.to_bytes(4, "big") * ((length - 14) // 4 + 1)
    assert len(frame) == length and frame[12:14] == b"\x88\xb5", (i, len(frame))
    assert frame[14:] == body[: length - 14], i
    off += 16 + incl
    i += 1
assert i == n, i
EOF2
    fi
done

# The kernel's TCP at MTU 9000 (MSS 8960: three descriptors a segment),
# both stacks; ping -s 8000: the echo replies are frames of three TX
# buffers, sent as chained descriptors.
for zc in "" " --copies 0"; do
    read -r -a ZC <<<"$zc"
    label="MTU 9000, tcp mode$zc, ping -s 8000 + kernel TCP sender"
    if start_rx "$label" "${TCP_ARGS[@]}" --mtu 9000 "${ZC[@]}" --verify --until-closed 1; then
        ping_and_send "$label" -s 8000 -M do
        wait_rx "$label"
        check "$label: 64 MiB verified byte for byte, no mismatch, no abort; jumbo frames in and out" "$rx_out" \
            "s['tcp']['verified']==$MB64 and s['tcp']['bytes']==$MB64 and s['tcp']['mismatches']==0 and s['tcp']['connections']==1 and s['tcp']['aborted']==0 and s['xdp']['rx_multi_buffer']>=$MB64//8960 and s['xdp']['kernel_tx_invalid_descs']==0"
        python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print("     info: xdp", s["xdp"])' "$rx_out"
        if [ -n "$zc" ]; then
            # A jumbo segment's payload spans its buffers: a chunk each,
            # none copied.
            check "$label: the engine handed out every buffer of each jumbo frame as a chunk, none copied, got every one back; echo replies sent" "$rx_out" \
                "s['zc'] is not None and s['zc']['bytes']>0 and s['zc']['returned_bytes']==s['zc']['bytes'] and s['zc']['copy_fallback_bytes']==0 and s['zc']['chunks']>=2*s['xdp']['rx_multi_buffer'] and sum(q['icmp_echo_replies'] for q in s['zc']['per_queue'])>=1"
        else
            # (smoltcp drops a reply whose peer it has not resolved yet:
            # the peer's ARP entry outlives the earlier runs, ours not.)
            check "$label: the echo replies went out as frames of several TX buffers" "$rx_out" \
                "sum(q['tx']['multi_buffer'] for q in s['per_queue'])>=1"
        fi
    fi
done
ip link set "$VA" mtu 1500
ip -n "$NS" link set "$VB" mtu 1500
MB=False

# Two queues: a two-queue veth pair, one socket and one thread per queue,
# the raw frames counted exactly over both (which queue they reach is the
# peer kernel's choice: here usually all one). (Not TCP: on veth a frame's RX
# queue is the TX queue the peer's kernel picked, which it may change in
# the middle of a connection, e.g. after a retransmission timeout; a NIC's
# RSS hash does not.)
VM=rxm$((ID % 100000))
ip link add "$VM" numtxqueues 2 numrxqueues 2 type veth peer name "${VM}p" numtxqueues 2 numrxqueues 2
sysctl -qw "net.ipv6.conf.$VM.disable_ipv6=1"
ip link set "${VM}p" netns "$NS"
ip link set "$VM" up
ip -n "$NS" link set "${VM}p" up
label="drop mode, --queues 2, $N raw frames"
rc=0
timeout -s INT -k 10 60 "$BIN" --device "xdp:$VM" --queues 2 --mode drop --ring-size 4096 --duration 8 \
    --json --quiet >"$TMP/mq.json" 2>"$TMP/mq.err" &
mq=$!
for _ in $(seq 100); do has_program "$VM" && break; sleep 0.1; done
sent=$(nsx timeout 60 python3 -c "$RAW" "${VM}p" "$(cat "/sys/class/net/$VM/address")" $N $LEN 2>"$TMP/send.err") || sent=0
[ "$sent" = "$N" ] && ok "$label: the peer sent $N frames" || bad "$label: sender: $sent $(cat "$TMP/send.err")"
wait $mq || rc=$?
if [ $rc -eq 0 ]; then
    ok "$label: rxsink exit 0"
    check "$label: counted exactly over the two queues, nothing leaked" "$TMP/mq.json" \
        "s['packets']==$N and len(s['per_queue'])==2 and sum(q['packets'] for q in s['per_queue'])==$N and s['leaked_pages']==0 and s['leaked_headers']==0"
    python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print("     info: packets per queue", [q["packets"] for q in s["per_queue"]], "xdp", s["xdp"])' "$TMP/mq.json"
else
    bad "$label: rxsink exit $rc: $(tail -3 "$TMP/mq.err")"
fi
has_program "$VM" && bad "$label: program left on $VM" || ok "$label: no XDP program left on $VM"
ip link del "$VM"

# Generic mode: a bridge has no native XDP, so the program is attached in
# the stack (SKB mode); a clean run reports it.
VBR=rxbr$((ID % 100000))
if ip link add "$VBR" type bridge 2>/dev/null; then
    ip link set "$VBR" up
    label="an interface without native XDP (bridge)"
    rc=0
    timeout -s INT 30 "$BIN" --device "xdp:$VBR" --duration 1 --json --quiet >"$TMP/br.json" 2>"$TMP/br.err" || rc=$?
    if [ $rc -eq 0 ]; then
        check "$label: attached in generic mode, copy bind, nothing leaked" "$TMP/br.json" \
            "s['xdp_mode']=={'attach': 'generic', 'bind': 'copy', 'multi_buffer': False} and s['leaked_pages']==0"
    else
        bad "$label: rxsink exit $rc: $(cat "$TMP/br.err")"
    fi
    has_program "$VBR" && bad "$label: program left on $VBR" || ok "$label: no XDP program left on $VBR"
    label="a bridge at MTU 9000: multi-buffer in generic mode"
    rc=0
    ip link set "$VBR" mtu 9000
    timeout -s INT 30 "$BIN" --device "xdp:$VBR" --duration 1 --json --quiet >"$TMP/br.json" 2>"$TMP/br.err" || rc=$?
    if [ $rc -eq 0 ]; then
        check "$label: generic, copy, multi-buffer, nothing leaked" "$TMP/br.json" \
            "s['xdp_mode']=={'attach': 'generic', 'bind': 'copy', 'multi_buffer': True} and s['leaked_pages']==0"
    else
        bad "$label: rxsink exit $rc: $(cat "$TMP/br.err")"
    fi
    has_program "$VBR" && bad "$label: program left on $VBR" || ok "$label: no XDP program left on $VBR"
    ip link del "$VBR"
fi

# Bad input: one line on stderr, nothing left attached, the exit status of
# the matching VFIO error: 2 for a wrong argument (no such device, bad
# option), 1 for a machine not ready (permission denied, busy).
# expect_error LABEL STATUS PATTERN RXSINK_ARGS...
expect_error() {
    local label=$1 want=$2 pattern=$3 rc=0; shift 3
    timeout -s INT 20 "$BIN" --duration 1 --quiet "$@" >"$TMP/err.out" 2>"$TMP/err.err" || rc=$?
    if [ $rc -eq "$want" ] && [ "$(wc -l <"$TMP/err.err")" -eq 1 ] && grep -q "$pattern" "$TMP/err.err"; then
        ok "$label: exit $want: $(cat "$TMP/err.err")"
    else
        bad "$label: exit $rc, expected $want and one line matching '$pattern':"; cat "$TMP/err.err"
    fi
}
expect_error "missing interface" 2 "no network interface" --device xdp:rxnosuch0
expect_error "queue that does not exist" 2 "has no RX queue 3" --device "xdp:$VA@3"
expect_error "--queues past the last queue" 2 "has no RX queue 1" --device "xdp:$VA" --queues 2
expect_error "headroom below XDP_PACKET_HEADROOM" 2 "must be at least 256" --device "xdp:$VA" --headroom 128
if command -v setpriv >/dev/null; then
    cp "$BIN" "$TMP/rxsink-unpriv"; chmod 755 "$TMP" "$TMP/rxsink-unpriv"
    rc=0
    setpriv --reuid=65534 --regid=65534 --clear-groups "$TMP/rxsink-unpriv" --device "xdp:$VA" --duration 1 --quiet \
        >/dev/null 2>"$TMP/err.err" || rc=$?
    if [ $rc -eq 1 ] && [ "$(wc -l <"$TMP/err.err")" -eq 1 ] && grep -q "needs root" "$TMP/err.err"; then
        ok "no permission (as nobody): exit 1: $(cat "$TMP/err.err")"
    else
        bad "no permission (as nobody): exit $rc:"; cat "$TMP/err.err"
    fi
fi
label="second rxsink on the same queue"
if start_rx "$label (first)" --mode drop --duration 20; then
    expect_error "$label" 1 "already in use by another AF_XDP socket" --device "xdp:$VA"
    kill -INT "$rx_pid"
    wait_rx "$label (first)"
fi
# A two-queue veth: an rxsink on queue 0 attaches the program; an rxsink on
# queue 1 binds its socket, then finds the interface taken.
ip link add "$VQ" numtxqueues 2 numrxqueues 2 type veth peer name "${VQ}p" numtxqueues 2 numrxqueues 2
ip link set "$VQ" up
label="interface with an XDP program already attached"
rc=0
timeout -s INT 30 "$BIN" --device "xdp:$VQ@0" --duration 20 --quiet --json >"$TMP/q0.json" 2>"$TMP/q0.err" &
q0=$!
for _ in $(seq 100); do ip link show dev "$VQ" | grep -q "prog/xdp" && break; sleep 0.1; done
expect_error "$label" 1 "already has an XDP program attached" --device "xdp:$VQ@1"
kill -INT $q0
wait $q0 || rc=$?
[ $rc -eq 0 ] && ok "$label: the first rxsink (queue 0) still ends cleanly" || bad "$label: first rxsink exit $rc: $(cat "$TMP/q0.err")"
has_program "$VQ" && bad "$label: program left on $VQ" || ok "$label: no XDP program left on $VQ"
no_program "after every run"

echo "e2e-xdp: $passed passed, $fail failed"
[ $fail -eq 0 ]
