# Sourced by the end-to-end scripts that run rxsink against the Linux
# kernel (e2e-tap.sh, e2e-xdp.sh): the pass/fail counters and checks, the
# clean-up of a still running rxsink, and the kernel's TCP sender.
# At call time they use TMP (scratch), rx_pid (the background rxsink),
# and for ping_and_send nsx, OUR and PORT.

fail=0; passed=0
ok() { echo "ok   $1"; passed=$((passed+1)); }
bad() { echo "FAIL $1"; fail=$((fail+1)); }

# check NAME JSON_FILE PYTHON_EXPR [OTHER_JSON]: the expression sees the
# summary as `s` (and, when given, the other JSON file as `c`).
check() {
    local name=$1 file=$2 expr=$3 other=${4:-}
    if python3 -c "
import json, sys
s = json.load(open(sys.argv[1]))
c = json.load(open(sys.argv[2])) if sys.argv[2] else None
sys.exit(0 if ($expr) else 1)" "$file" "$other" 2>"$TMP/check.err"; then
        ok "$name"
    else
        bad "$name: ($expr) on:"; cat "$file" "$TMP/check.err"; fail_log
    fi
}
fail_log() { [ -s "$TMP/rx.err" ] && { echo "--- rxsink stderr:"; tail -20 "$TMP/rx.err"; }; true; }

# kill_rx: for the EXIT trap. An rxsink still running gets SIGINT, 5 s to
# stop, then SIGKILL.
kill_rx() {
    if [ -n "${rx_pid:-}" ] && kill -0 "$rx_pid" 2>/dev/null; then
        kill -INT "$rx_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$rx_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$rx_pid" 2>/dev/null || true
    fi
}

# The kernel TCP sender: BYTES of the pattern (byte i = i mod 251), then
# shutdown(SHUT_WR) and wait for the sink's FIN.
SENDER='
import socket, sys
host, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
chunk = bytes(range(251)) * 4096          # a multiple of 251: stays aligned
s = socket.create_connection((host, port), timeout=20)
s.settimeout(20)
left = total
while left:
    n = min(left, len(chunk))
    s.sendall(chunk[:n])
    left -= n
s.shutdown(socket.SHUT_WR)
while s.recv(65536):
    pass                                   # b"" = the FIN of the sink
s.close()
'
MB64=$((64 << 20))

# ping_and_send LABEL [PING OPTIONS]: three pings of our address from the
# peer, then the kernel's sender writes 64 MiB to the sink, shuts down and
# waits for our FIN.
ping_and_send() {
    local label=$1; shift
    if nsx timeout 20 ping -n -q -c 3 "$@" -W 2 $OUR >"$TMP/ping.out" 2>&1; then
        ok "$label: ping -c 3 ${*:+$* }$OUR: $(grep -o '[0-9]* received' "$TMP/ping.out")"
    else
        bad "$label: ping -c 3 ${*:+$* }$OUR"; cat "$TMP/ping.out"
    fi
    if nsx timeout 60 python3 -c "$SENDER" $OUR $PORT $MB64 2>"$TMP/send.err"; then
        ok "$label: kernel sender wrote 64 MiB, shut down, got our FIN"
    else
        bad "$label: kernel sender"; cat "$TMP/send.err"
    fi
}
