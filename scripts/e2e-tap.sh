#!/usr/bin/env bash
# End-to-end checks of rxsink --mode tcp against the host kernel over a TAP
# device: rxsink runs inside a private network namespace (it creates the
# TAP device there), the kernel side of the TAP gets the peer address, and
# kernel tools talk to smoltcp on the simulated NIC:
#   - ping (ICMP echo answered by smoltcp),
#   - a plain kernel TCP sender (python3) of the pattern, verified byte for byte,
#   - iperf3 -c (1 and 4 streams) against rxsink's iperf3 server,
# at MTU 1500, MTU 9000, and with --vnet-hdr --gro 16 (TSO super-frames).
# Every rxsink run must end with exit status 0, nothing leaked, no DMA fault.
# Needs root and /dev/net/tun (exit 77 otherwise). Every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
need_root /dev/net/tun
install_missing ip=iproute2 ping=iputils-ping iperf3=iperf3 python3=python3 timeout=coreutils
build_rxsink

NS=rxtap-$$-$RANDOM
TAP=rxt0
OUR=10.91.0.1
PEER=10.91.0.2
PORT=9000
IPERF_PORT=5201
TMP=$(mktemp -d)
rx_pid=
. scripts/e2e-kernel.sh
cleanup() {
    kill_rx
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
# No IPv6 chatter (router solicitations, MLD) on the TAP.
ip netns exec "$NS" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
nsx() { ip netns exec "$NS" "$@"; }


# start_rx LABEL MTU UNTIL_CLOSED RXSINK_ARGS...: rxsink in the namespace,
# its TAP configured on the kernel side. Bounded by timeout (SIGINT at 90 s).
start_rx() {
    local label=$1 mtu=$2 until=$3; shift 3
    rx_label=$label
    rx_out=$TMP/rx.json
    : >"$rx_out"; : >"$TMP/rx.err"
    nsx timeout -s INT -k 10 90 "$BIN" --mode tcp --wire "tap:$TAP" --ip "$OUR/24" \
        --port $PORT --iperf3-port $IPERF_PORT --mtu "$mtu" --until-closed "$until" \
        --json --quiet "$@" >"$rx_out" 2>"$TMP/rx.err" &
    rx_pid=$!
    for _ in $(seq 100); do
        nsx test -e "/sys/class/net/$TAP" && break
        if ! kill -0 "$rx_pid" 2>/dev/null; then break; fi
        sleep 0.1
    done
    if ! nsx test -e "/sys/class/net/$TAP"; then
        bad "$label: rxsink did not create $TAP within 10 s"; fail_log
        kill -INT "$rx_pid" 2>/dev/null || true
        wait "$rx_pid" 2>/dev/null || true
        rx_pid=
        return 1
    fi
    ip -n "$NS" addr add "$PEER/24" dev "$TAP"
    ip -n "$NS" link set "$TAP" mtu "$mtu"
    ip -n "$NS" link set "$TAP" up
}

# stop_rx: wait (bounded) for rxsink to stop by itself (--until-closed),
# then check its exit status and that nothing leaked.
stop_rx() {
    local rc=0 waited=0 signalled=0
    while kill -0 "$rx_pid" 2>/dev/null && [ $waited -lt 300 ]; do sleep 0.1; waited=$((waited+1)); done
    if kill -0 "$rx_pid" 2>/dev/null; then
        echo "  (rxsink still running 30 s after the clients ended: sending SIGINT)"
        kill -INT "$rx_pid" 2>/dev/null || true
        signalled=1
    fi
    wait "$rx_pid" || rc=$?
    rx_pid=
    if [ $signalled -eq 1 ]; then
        # --until-closed should have ended it: a SIGINT stop is a failure
        # even with exit status 0 (the leak checks below still run).
        bad "$rx_label: rxsink did not stop by itself within 30 s (--until-closed not reached), stopped by SIGINT, exit $rc"
        fail_log
        [ -s "$rx_out" ] && check "$rx_label: no leaked pages/headers/tx buffers, no DMA fault, no abort" "$rx_out" \
            's["leaked_pages"]==0 and s["leaked_headers"]==0 and s["leaked_tx_buffers"]==0 and s["dma_faults"]==0 and s["tcp"]["aborted"]==0 and s["tcp"]["closed"]==s["tcp"]["connections"]'
    elif [ $rc -eq 0 ] && [ -s "$rx_out" ]; then
        ok "$rx_label: rxsink stopped by itself, exit 0"
        check "$rx_label: no leaked pages/headers/tx buffers, no DMA fault, no abort" "$rx_out" \
            's["leaked_pages"]==0 and s["leaked_headers"]==0 and s["leaked_tx_buffers"]==0 and s["dma_faults"]==0 and s["tcp"]["aborted"]==0 and s["tcp"]["closed"]==s["tcp"]["connections"]'
    else
        bad "$rx_label: rxsink exit status $rc (124 = killed by its timeout)"; cat "$rx_out"; fail_log
    fi
    ip -n "$NS" link del "$TAP" 2>/dev/null || true
}


# run_config LABEL MTU RXSINK_ARGS...: three rxsink runs in one configuration.
run_config() {
    local label=$1 mtu=$2; shift 2
    local args=("$@") name p

    # (a) ping and (b) the kernel TCP sender, 64 MiB verified.
    name="$label, ping + kernel TCP sender"
    if start_rx "$name" "$mtu" 1 --verify "${args[@]}"; then
        ping_and_send "$label"
        stop_rx
        check "$label: 64 MiB verified byte for byte, no mismatch" "$rx_out" \
            "s['tcp']['verified']==$MB64 and s['tcp']['bytes']==$MB64 and s['tcp']['mismatches']==0 and s['tcp']['connections']==1"
        extra_checks "$label" "$rx_out"
    fi

    # (c) iperf3 -c, 1 and 4 streams: 1 control + P data connections.
    for p in 1 4; do
        name="$label, iperf3 -P $p"
        start_rx "$name" "$mtu" $((p + 1)) "${args[@]}" || continue
        local ic=$TMP/iperf3.json rc=0
        nsx timeout 40 iperf3 -c $OUR -p $IPERF_PORT -t 3 -P $p --json >"$ic" 2>&1 || rc=$?
        if [ $rc -eq 0 ]; then
            ok "$name: iperf3 exit 0, $(python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["end"]; print("%.2f Gbit/s, sent %d B, server counted %d B" % (e["sum_received"]["bits_per_second"]/1e9, e["sum_sent"]["bytes"], e["sum_received"]["bytes"]))' "$ic")"
        else
            bad "$name: iperf3 exit $rc"; tail -5 "$ic"
        fi
        stop_rx
        [ $rc -eq 0 ] || continue
        # end.sum_received.bytes is the count our iperf3 server reported,
        # iperf3.last_test_bytes in rxsink's JSON. tcp.bytes counts every
        # byte read on every connection (data streams, also after TEST_END,
        # and the control connection's cookie, parameters and results):
        #  - every byte the client wrote reached the sink: tcp.bytes minus
        #    sum_sent.bytes is the control traffic (0 < it < 64 KiB);
        #  - the server's count is not above what was sent and not zero.
        check "$name: every byte iperf3 sent was read by the sink (tcp.bytes - sum_sent = control bytes < 64 KiB)" \
            "$rx_out" "0 < s['tcp']['bytes'] - c['end']['sum_sent']['bytes'] < 65536" "$ic"
        check "$name: server-reported sum_received in (0, sum_sent], $((p + 1)) connections" "$rx_out" \
            "0 < c['end']['sum_received']['bytes'] <= c['end']['sum_sent']['bytes'] and s['tcp']['connections']==$((p + 1))" "$ic"
        check "$name: iperf3's sum_received.bytes == the bytes our iperf3 server counted, 1 test completed" "$rx_out" \
            "s['iperf3']['last_test_bytes']==c['end']['sum_received']['bytes'] and s['iperf3']['tests_completed']==1 and s['iperf3']['last_test_streams']==$p" "$ic"
        python3 -c '
import json, sys
s = json.load(open(sys.argv[1])); c = json.load(open(sys.argv[2]))["end"]
sent, recv = c["sum_sent"]["bytes"], c["sum_received"]["bytes"]
print("     info: sum_sent %d, sum_received %d (%.2f%% arrived after TEST_END, not counted, as iperf3 servers do), tcp.bytes %d (+%d)"
      % (sent, recv, 100.0 * (sent - recv) / sent, s["tcp"]["bytes"], s["tcp"]["bytes"] - sent))
' "$rx_out" "$ic"
        extra_checks "$label" "$rx_out"
    done
}

# Checks specific to a configuration (set by the caller).
extra_checks() { :; }

run_config "MTU 1500" 1500
run_config "MTU 9000" 9000
extra_checks() {
    check "$1: the kernel handed over TSO super-frames (wire_stats.tap.rx_super_frames > 0)" "$2" \
        "s['wire_stats']['tap']['rx_super_frames'] > 0"
}
run_config "MTU 1500 --vnet-hdr --gro 16" 1500 --vnet-hdr --gro 16

# Two RX queues behind RSS, one smoltcp interface each (same address), the
# iperf3 server shared: streams of one test land on different queues.
extra_checks() {
    # Which queue a connection lands on depends on the kernel's ephemeral
    # ports: only the sum and the ARP hand-over are certain.
    check "$1: per-queue packets add up, queue 1 learned ARP from queue 0" "$2" \
        "s['queues']==2 and sum(q['packets'] for q in s['per_queue'])==s['packets'] and s['per_queue'][0]['arp']['shared']>0 and s['per_queue'][1]['arp']['received']>0"
}
run_config "MTU 1500 --queues 2" 1500 --queues 2

# The zero-copy engine (--copies 0) under the kernel's TCP: the same three
# runs (pattern verified, iperf3 -P 1 and -P 4 with exact byte counts);
# every page handed to the application came back, nothing was copied.
extra_checks() {
    check "$1: zero copy: every chunk's page returned, no copy fallback" "$2" \
        "s['zc'] is not None and s['zc']['bytes']>0 and s['zc']['returned_bytes']==s['zc']['bytes'] and s['zc']['copy_fallback_bytes']==0"
}
run_config "MTU 1500 --copies 0" 1500 --copies 0
run_config "MTU 1500 --copies 0 --queues 2" 1500 --copies 0 --queues 2
extra_checks() {
    check "$1: zero copy at a 4 KiB MSS: the chunks are page-aligned pages (>= 99%), none copied" "$2" \
        "s['zc']['chunks']>0 and s['zc']['page_aligned_chunks']>=0.99*s['zc']['chunks'] and s['zc']['returned_bytes']==s['zc']['bytes'] and s['zc']['copy_fallback_bytes']==0"
}
run_config "MTU 4148 --copies 0" 4148 --copies 0
extra_checks() { :; }

# Hostile frames from the kernel side while a verified transfer runs: each
# kind must be counted where the table in docs/reliability.md says, and the
# stream must still arrive whole.
HOSTILE='
import socket, struct, sys, time
ifname, dst_mac, src_ip, dst_ip, n = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), \
    socket.inet_aton(sys.argv[3]), socket.inet_aton(sys.argv[4]), int(sys.argv[5])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
src_mac = s.getsockname()[4]
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16: t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
def ip(payload, total=None, proto=6, bad=False, ihl=5):
    h = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total if total is not None else 20 + len(payload),
                    1, 0x4000, 64, proto, 0, src_ip, dst_ip)
    c = csum(h) ^ (0x5555 if bad else 0)
    return h[:10] + struct.pack("!H", c) + h[12:]
def tcp(payload, doff=5, bad=False):
    t = struct.pack("!HHIIBBHHH", 40000, 9000, 12345, 0, doff << 4, 0x18, 65535, 0, 0) + payload
    ph = src_ip + dst_ip + struct.pack("!BBH", 0, 6, len(t))
    c = csum(ph + t) ^ (0x1111 if bad else 0)
    return t[:16] + struct.pack("!H", c) + t[18:]
eth = dst_mac + src_mac + b"\x08\x00"
kinds = {
    "bad_ip_checksum": lambda: eth + ip(tcp(b"x" * 100), bad=True) + tcp(b"x" * 100),
    "bad_tcp_checksum": lambda: eth + ip(tcp(b"x" * 100)) + tcp(b"x" * 100, bad=True),
    "ip_length_beyond_frame": lambda: eth + ip(b"", total=1400) + tcp(b"y" * 100),
    "tcp_options_overrun": lambda: eth + ip(tcp(b"", doff=15)) + tcp(b"", doff=15),
    "truncated_header": lambda: eth + ip(tcp(b""))[:10],
    "header_only": lambda: eth,
    "jumbo_64k": lambda: eth + ip(b"", total=65000 - 14) + b"z" * (65000 - 34),
}
only = sys.argv[6:]
sent = {}
for i in range(n):
    for k, f in kinds.items():
        if only and k not in only:
            continue
        try:
            s.send(f()); sent[k] = sent.get(k, 0) + 1
        except OSError as e:
            print("send %s: %s" % (k, e), file=sys.stderr)
    time.sleep(0.001)
print(" ".join("%s=%d" % kv for kv in sent.items()))
'
MB1=$((1 << 20))
# hostile_run LABEL RXSINK_ARGS...: rxsink with two connections: the 64 MiB
# stream the hostile frames interleave with, then 1 MiB after the injector
# is done, so rxsink (--until-closed 2) outlives it. Leaves the counts of
# the frames sent in $TMP/sent.json; returns 1 if rxsink did not start.
hostile_run() {
    local label=$1; shift
    start_rx "$label" 1500 2 --verify "$@" || return 1
    # Jumbo frames need a TAP MTU that lets the kernel send them.
    ip -n "$NS" link set "$TAP" mtu 65000
    nsx timeout 20 ping -n -q -c 1 -W 2 $OUR >/dev/null 2>&1 || true
    local mac send_pid hostile_out
    mac=$(nsx ip neigh show $OUR dev "$TAP" | awk '{print $3; exit}')
    nsx timeout 120 python3 -c "$SENDER" $OUR $PORT $MB64 2>"$TMP/send.err" &
    send_pid=$!
    sleep 0.2
    hostile_out=$(nsx timeout 60 python3 -c "$HOSTILE" "$TAP" "$mac" "$PEER" "$OUR" 20 2>"$TMP/hostile.err") || true
    wait $send_pid || bad "$label: kernel sender failed: $(cat "$TMP/send.err")"
    nsx timeout 60 python3 -c "$SENDER" $OUR $PORT $MB1 2>>"$TMP/send.err" ||
        bad "$label: second sender failed: $(cat "$TMP/send.err")"
    echo "     info: hostile frames sent: $hostile_out $(head -3 "$TMP/hostile.err" | tr '\n' ' ')"
    stop_rx
    echo "$hostile_out" | tr ' ' '\n' |
        python3 -c 'import sys, json; print(json.dumps(dict(l.strip().split("=") for l in sys.stdin if "=" in l)))' >"$TMP/sent.json"
    check "$label: 64 MiB + 1 MiB still verified byte for byte" "$rx_out" \
        "s['tcp']['verified']==$MB64+$MB1 and s['tcp']['mismatches']==0"
}

if hostile_run "hostile frames during a transfer"; then
    # 20 of each of 7 kinds, every one counted once (docs/reliability.md):
    # the NIC flags the bad IP checksums and the truncated header (padded
    # to 60 bytes, its checksum is wrong) -> ip_checksum; the bad TCP
    # checksums and the IP length beyond the frame (the TCP sum over what
    # is there fails) -> l4_checksum; the header-only frame (version 0
    # after padding) and the TCP options overrunning the IP payload ->
    # the presenter's malformed; 64 KiB frames -> the NIC's oversize (ROC).
    check "hostile frames: all 140 sent and each counted once: ip_checksum 40, l4_checksum 40, malformed 40, oversize 20" "$rx_out" \
        "all(int(v)==20 for v in c.values()) and len(c)==7 and s['drops']['ip_checksum']==40 and s['drops']['l4_checksum']==40 and s['present']['malformed']==40 and s['sim']['rx_oversize']==20 and s['present']['bad_checksum']==0" \
        "$TMP/sent.json"
    python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print("     info: drops", s["drops"], "present.malformed", s["present"]["malformed"], "sim", s["sim"])' "$rx_out"
fi

# The same hostile frames against the zero-copy engine: the NIC drops the
# bad checksums and the oversized frames as before; the two malformed kinds
# reach the engine, which counts each as a drop (malformed or bad_options)
# and still delivers the stream whole.
if hostile_run "hostile frames, --copies 0" --copies 0; then
    check "hostile frames, --copies 0: all 140 sent; NIC: ip_checksum 40, l4_checksum 40, oversize 20; engine: malformed + bad_options 40" "$rx_out" \
        "all(int(v)==20 for v in c.values()) and len(c)==7 and s['drops']['ip_checksum']==40 and s['drops']['l4_checksum']==40 and s['sim']['rx_oversize']==20 and sum(q['malformed']+q['bad_options'] for q in s['zc']['per_queue'])==40" \
        "$TMP/sent.json"
    python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); q=s["zc"]["per_queue"][0]; print("     info: drops", s["drops"], "engine", {k: q[k] for k in ("malformed","bad_options","not_tcp","bad_checksum","out_of_window","not_for_us")})' "$rx_out"
fi

# More connections than --max-conns: the engine leaves the extra SYNs
# unanswered (counted as syn_refused; the kernel retries, then gives up);
# the connections it accepted carry their streams whole.
rx_label="--copies 0 --max-conns 2 with 4 connections"
CONNS='
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = []
for i in range(n):
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect((host, port)); ok.append(s)
    except OSError:
        s.close()
data = bytes(range(251)) * 400
for s in ok:
    s.sendall(data); s.shutdown(socket.SHUT_WR)
for s in ok:
    s.settimeout(10)
    while s.recv(65536):
        pass
    s.close()
print(len(ok))
'
if start_rx "$rx_label" 1500 2 --verify --copies 0 --max-conns 2; then
    accepted=$(nsx timeout 60 python3 -c "$CONNS" $OUR $PORT 4 2>"$TMP/conns.err") || true
    stop_rx
    check "$rx_label: 2 accepted and verified, the others' SYNs counted as syn_refused" "$rx_out" \
        "'$accepted'=='2' and s['tcp']['connections']==2 and s['tcp']['verified']==2*251*400 and sum(q['syn_refused'] for q in s['zc']['per_queue'])>=2"
fi

echo "e2e-tap: $passed passed, $fail failed"
[ $fail -eq 0 ]
