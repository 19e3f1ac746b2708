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

# Lossy for certain: stepped, each step offers 8 frames to a ring of 8
# descriptors, of which at most 7 are posted (one slot always stays empty),
# so every step misses one frame: 70000 received -> 9999 missed.
out=$TMP/lossy.json
timeout 60 $BIN --lossy --sim-mode stepped --ring-size 8 --batch 8 --packets 70000 --json --quiet >"$out"
check "lossy wire: a ring that overflows every step misses frames (> 9000), counted once in drops and in MPC, nothing leaked" "$out" \
    "s['packets']==70000 and s['leaked_pages']==0 and s['leaked_headers']==0 and s['drops']['missed']>9000 and s['drops']['missed']==s['hw']['mpc']"

# The same on the threaded simulator, where whether the ring fills depends
# on timing: missed may be 0, but must equal MPC.
out=$TMP/lossy-thread.json
timeout 60 $BIN --lossy --sim-mode thread --packets 200000 --json --quiet >"$out"
check "lossy wire, threaded simulator: missed (may be 0) == MPC, nothing leaked" "$out" \
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

# RSS: four queues, one thread each; 64 flows spread over all of them.
out=$TMP/queues.json
timeout 60 $BIN --queues 4 --mode read --flows 64 --proto mixed --frame-size 60-1500 \
    --duration 2 --json --quiet >"$out"
check "--queues 4: RSS spreads 64 flows over every queue, counts add up, nothing leaked" "$out" \
    "s['queues']==4 and all(q['packets']>0 for q in s['per_queue']) and sum(q['packets'] for q in s['per_queue'])==s['packets']==s['hw']['gprc'] and s['leaked_pages']==0 and s['leaked_headers']==0 and s['drops']['total']==0"

# TCP through smoltcp over the back-to-back pair wire: a smoltcp sender on
# the far NIC, the sink verifying every byte, in every split mode and with
# simulated HW GRO over jumbo frames.
tcp_clean='s["leaked_pages"]==0 and s["leaked_headers"]==0 and s["leaked_tx_buffers"]==0 and s["dma_faults"]==0 and s["peer"]["leaks"]=={"pages":0,"headers":0,"tx_buffers":0}'
for args in "--header-split off" "--header-split on" "--header-split always" \
            "--header-split on --gro 16 --mtu 9000" "--header-split off --gro 16 --mtu 9000"; do
    out=$TMP/tcp.json
    # shellcheck disable=SC2086
    timeout 120 $BIN --mode tcp --wire pair --verify --pair-conns 2 --pair-bytes 20000000 $args \
        --json --quiet >"$out"
    check "tcp over pair, $args: 2 x 20 MB verified" "$out" \
        "s['tcp']['verified']==40000000 and s['tcp']['mismatches']==0 and s['tcp']['connections']==2 and s['tcp']['aborted']==0 and s['peer']['finished']==2 and $tcp_clean"
done

out=$TMP/tcp-faults.json
timeout 300 $BIN --mode tcp --wire pair --verify --pair-bytes 4000000 \
    --faults drop=1,dup=0.5,reorder=8,corrupt=0.5,seed=7 --json --quiet >"$out"
check "tcp over pair with drop 1%, dup 0.5%, reorder 8, corrupt 0.5%: 4 MB verified" "$out" \
    "s['tcp']['verified']==4000000 and s['tcp']['mismatches']==0 and s['peer']['finished']==1 and s['wire_stats']['faults']['to_nic']['corrupted']>0 and s['wire_stats']['faults']['to_nic']['dropped']>0 and $tcp_clean"
# Receive-side discards by reason, totals and per connection: the sender
# keeps to the window and the sink reads at once, so nothing arrives with
# the window closed or beyond it; the loss, duplicates and reordering show.
# (Holes enough to overflow smoltcp's assembler take seconds of RTOs each
# here; stack/tests/tcp_faults.rs counts those on a virtual clock.)
check "tcp over pair with faults: discards counted by reason, none for the window" "$out" \
    "all(c[k]==0 for c in [s['tcp']['segments']]+s['tcp']['segments_per_conn'] for k in ('InOverWindowSegs','TcpExtTCPZeroWindowDrop')) and s['tcp']['segments']['TcpExtTCPOFODrop']==sum(c['TcpExtTCPOFODrop'] for c in s['tcp']['segments_per_conn']) and s['tcp']['segments']['InRetransSegs']>0 and s['tcp']['segments']['TcpExtTCPOFOQueue']>0"

# The device resets itself after every 200 MB received: the driver notices
# (the queue is gone), brings it up again, TCP retransmits. The schedule
# counts the bytes the device received, retransmissions included, so a
# loaded machine (more retransmissions) may see a third reset: every reset
# injected must be noticed, at least two.
out=$TMP/tcp-reset.json
timeout 120 $BIN --mode tcp --wire pair --verify --pair-bytes 500000000 --sim-reset-every 200000000 \
    --json --quiet >"$out"
check "every device reset (two or more) during a transfer noticed, recovered, 500 MB verified" "$out" \
    "s['sim_faults_injected']['resets']>=2 and s['device_resets']==s['sim_faults_injected']['resets'] and s['per_queue'][0]['rx_restarts']==s['device_resets'] and s['tcp']['verified']==500000000 and s['tcp']['mismatches']==0 and s['peer']['finished']==1 and $tcp_clean"

# The same with two queues (RSS): the first queue to notice brings the
# device up, the other restarts its rings when it sees the new generation.
out=$TMP/tcp-reset-q2.json
timeout 300 $BIN --mode tcp --wire pair --verify --queues 2 --pair-bytes 100000000 --sim-reset-every 40000000 \
    --json --quiet >"$out"
check "--queues 2: every device reset (two or more) during a transfer, every queue restarted each time, 100 MB verified" "$out" \
    "s['sim_faults_injected']['resets']>=2 and s['device_resets']==s['sim_faults_injected']['resets'] and all(q['rx_restarts']==s['device_resets'] for q in s['per_queue']) and s['tcp']['verified']==100000000 and s['tcp']['mismatches']==0 and s['peer']['finished']==1 and $tcp_clean"

# A queue's DMA engine stalls (the model stops writing descriptors on it
# and drops its frames): the watchdog sees the head stand still with frames
# dropped, counts queue_stalls and resets the device. One and two queues.
for q in 1 2; do
    out=$TMP/tcp-stall-q$q.json
    timeout 300 $BIN --mode tcp --wire pair --verify --queues $q --pair-bytes 100000000 --sim-stall-every 40000000 \
        --json --quiet >"$out"
    check "--queues $q: every stalled DMA engine (two or more) detected (queue_stalls), recovered by a reset each, 100 MB verified" "$out" \
        "s['sim_faults_injected']['stalls']>=2 and s['queue_stalls']==s['sim_faults_injected']['stalls'] and s['device_resets']==s['queue_stalls'] and s['tcp']['verified']==100000000 and s['tcp']['mismatches']==0 and s['peer']['finished']==1 and $tcp_clean"
done

# The copy ladder on the same traffic: two copies (recv into the
# application's buffer), one (smoltcp's ring read in place), zero (the
# NIC's pages read in place and returned), each byte verified and, with
# --touch read, read once more.
for copies in 2 1 0; do
  for touch in none read; do
    out=$TMP/ladder-$copies-$touch.json
    timeout 120 $BIN --mode tcp --wire pair --verify --copies $copies --touch $touch --pair-conns 2 \
        --pair-bytes 20000000 --json --quiet >"$out"
    touched=$([ $touch = read ] && echo 40000000 || echo 0)
    check "--copies $copies --touch $touch: 2 x 20 MB verified, $touched bytes touched" "$out" \
        "s['tcp']['copies']=='$copies' and s['tcp']['touch']=='$touch' and s['tcp']['verified']==40000000 and s['tcp']['touched']==$touched and s['tcp']['mismatches']==0 and s['tcp']['aborted']==0 and s['peer']['finished']==2 and $tcp_clean and (s['zc'] is not None)==($copies==0)"
  done
done

# Zero copy at a 4 KiB MSS with header split: every chunk is a whole,
# page-aligned page. Split off still works, with unaligned chunks.
out=$TMP/zc-4148.json
timeout 120 $BIN --mode tcp --wire pair --verify --copies 0 --mtu 4148 --pair-bytes 40000000 --json --quiet >"$out"
check "--copies 0 --mtu 4148: 40 MB verified, every chunk a page-aligned page, no copy fallback" "$out" \
    "s['tcp']['verified']==40000000 and s['zc']['chunks']>0 and s['zc']['page_aligned_chunks']==s['zc']['chunks'] and s['zc']['bytes']==40000000 and s['zc']['copy_fallback_bytes']==0 and s['zc']['returned_bytes']==s['zc']['bytes'] and $tcp_clean"
for args in "--header-split off --mtu 4148" "--header-split off --mtu 9000 --gro 16" "--header-split on --mtu 9000 --gro 16"; do
    out=$TMP/zc-split.json
    # shellcheck disable=SC2086
    timeout 120 $BIN --mode tcp --wire pair --verify --copies 0 $args --pair-bytes 20000000 --json --quiet >"$out"
    check "--copies 0 $args: 20 MB verified, nothing leaked" "$out" \
        "s['tcp']['verified']==20000000 and s['zc']['bytes']==20000000 and s['zc']['returned_bytes']==20000000 and $tcp_clean"
done

# Zero copy through a lossy, duplicating, reordering, corrupting wire.
out=$TMP/zc-faults.json
timeout 300 $BIN --mode tcp --wire pair --verify --copies 0 --pair-bytes 4000000 \
    --faults drop=1,dup=0.5,reorder=8,corrupt=0.5,seed=7 --json --quiet >"$out"
check "--copies 0 with drop 1%, dup 0.5%, reorder 8, corrupt 0.5%: 4 MB verified, out-of-order and duplicates seen" "$out" \
    "s['tcp']['verified']==4000000 and s['tcp']['mismatches']==0 and s['peer']['finished']==1 and s['zc']['ooo_segments']>0 and s['zc']['duplicate_segments']>0 and $tcp_clean"

# The application on its own core returns pages both ways; at batch 512 the
# locked return takes one lock per call, the ring none. Every call carries
# 512 chunks except the short ones (the application idle for 100 us, which
# a busy machine can cause at any point, or finishing), counted apart; at
# least a quarter of the chunks go back in full batches.
for ret in ring locked; do
    out=$TMP/zc-$ret.json
    timeout 120 $BIN --mode tcp --wire pair --verify --copies 0 --cores 0,1 --zc-return $ret --recycle-batch 512 \
        --pair-bytes 100000000 --json --quiet >"$out"
    check "--copies 0 --cores 0,1 --zc-return $ret --recycle-batch 512: 100 MB verified, 512 chunks per return call, one lock per call (ring: none)" "$out" \
        "s['tcp']['verified']==100000000 and s['zc']['return_mode']=='$ret' and s['zc']['returned_bytes']==s['zc']['bytes'] and s['zc']['return_locks']==(0 if '$ret'=='ring' else s['zc']['return_calls']) and (s['zc']['return_calls']-s['zc']['return_short_calls'])*512+s['zc']['return_short_chunks']==s['zc']['chunks'] and 4*512*(s['zc']['return_calls']-s['zc']['return_short_calls'])>=s['zc']['chunks'] and s['app_thread'] is not None and $tcp_clean"
done

# A return batch larger than the window (512 pages of 4 KiB, 1 MiB window):
# the batch never fills, so the application returns what it holds once no
# data came for 100 us; without that the transfer stalls for good.
out=$TMP/zc-batch-over-window.json
timeout 120 $BIN --mode tcp --wire pair --verify --copies 0 --mtu 4148 --cores 0,1 --zc-return locked --recycle-batch 512 \
    --pair-bytes 50000000 --json --quiet >"$out"
check "--copies 0 --recycle-batch 512 over a 1 MiB window: 50 MB verified, the window closed and reopened" "$out" \
    "s['tcp']['verified']==50000000 and s['zc']['window_closed']>0 and s['zc']['returned_bytes']==s['zc']['bytes'] and $tcp_clean"

# Several queues, each with its own engine; and a device reset under zero copy.
out=$TMP/zc-q2.json
timeout 300 $BIN --mode tcp --wire pair --verify --copies 0 --queues 2 --pair-conns 4 --pair-bytes 20000000 --json --quiet >"$out"
check "--copies 0 --queues 2: 4 x 20 MB verified over two engines" "$out" \
    "s['tcp']['verified']==80000000 and len(s['zc']['per_queue'])==2 and all(q['bytes']>0 for q in s['zc']['per_queue']) and $tcp_clean"
out=$TMP/zc-reset.json
timeout 120 $BIN --mode tcp --wire pair --verify --copies 0 --pair-bytes 250000000 --sim-reset-every 100000000 --json --quiet >"$out"
check "--copies 0: every device reset (two or more) noticed during a transfer, 250 MB verified" "$out" \
    "s['sim_faults_injected']['resets']>=2 and s['device_resets']==s['sim_faults_injected']['resets'] and s['tcp']['verified']==250000000 and s['peer']['finished']==1 and $tcp_clean"

# pcap round trip: replaying a capture written by --pcap-out gives the
# same frames, byte for byte.
timeout 60 $BIN --mode read --packets 3000 --frame-size 60-9216 --proto mixed \
    --pcap-out "$TMP/a.pcap" --json --quiet >"$TMP/a.json"
timeout 60 $BIN --mode read --packets 3000 --wire "pcap:$TMP/a.pcap" \
    --pcap-out "$TMP/b.pcap" --json --quiet >"$TMP/b.json"
if python3 - "$TMP/a.pcap" "$TMP/b.pcap" <<'PY'
import struct, sys
def frames(path):
    d = open(path, 'rb').read()
    magic = struct.unpack('<I', d[:4])[0]
    assert magic in (0xa1b2c3d4, 0xa1b23c4d), hex(magic)
    out, o = [], 24
    while o + 16 <= len(d):
        incl = struct.unpack('<I', d[o + 8:o + 12])[0]
        out.append(d[o + 16:o + 16 + incl]); o += 16 + incl
    return out
a, b = frames(sys.argv[1]), frames(sys.argv[2])
sys.exit(0 if len(a) == 3000 and a == b else 1)
PY
then echo "ok   pcap round trip: 3000 frames (60-9216 B) replayed byte for byte"; passed=$((passed+1))
else echo "FAIL pcap round trip"; fail=$((fail+1)); fi

# pcap replay ends by itself once the file is replayed and received (no
# --packets): as classic pcap, as pcapng (big-endian, microsecond
# if_tsresol, written here), and with checksums broken, which are
# dropped without --fix-checksums (the summary names it) and received
# with it.
python3 - "$TMP/a.pcap" "$TMP/a.pcapng" "$TMP/bad.pcap" >"$TMP/bad.count" <<'PY'
import struct, sys
d = open(sys.argv[1], 'rb').read()
frames, o = [], 24
while o + 16 <= len(d):
    incl = struct.unpack('<I', d[o + 8:o + 12])[0]
    frames.append(d[o + 16:o + 16 + incl]); o += 16 + incl
def block(kind, body):
    body += b'\0' * (-len(body) % 4)
    n = struct.pack('>I', 12 + len(body))
    return struct.pack('>I', kind) + n + body + n
ng = block(0x0A0D0D0A, struct.pack('>IHHq', 0x1A2B3C4D, 1, 0, -1))
ng += block(1, struct.pack('>HHI', 1, 0, 65535) + struct.pack('>HHB3x', 9, 1, 6) + b'\0' * 4)
for i, f in enumerate(frames):
    ts = 1_700_000_000_000_000 + i
    ng += block(6, struct.pack('>IIIII', 0, ts >> 32, ts & 0xFFFFFFFF, len(f), len(f)) + f)
open(sys.argv[2], 'wb').write(ng)
bad, n = bytearray(d[:24]), 0
for i, f in enumerate(frames):
    f = bytearray(f)
    if i % 3 != 2 and len(f) >= 54 and f[12:14] == b'\x08\x00' and f[23] in (6, 17):
        at = 14 + (f[14] & 15) * 4 + (16 if f[23] == 6 else 6)
        if f[at:at + 2] != b'\0\0':
            f[at] ^= 0x5A; n += 1
    bad += struct.pack('<IIII', 0, 0, len(f), len(f)) + f
open(sys.argv[3], 'wb').write(bad)
print(n)
PY
nbad=$(cat "$TMP/bad.count")
for f in a.pcap a.pcapng; do
  for mode in drop tcp; do
    out=$TMP/replay-$f-$mode.json
    timeout 60 $BIN --mode $mode --wire "pcap:$TMP/$f" --json --quiet >"$out"
    check "replay of $f ($mode mode) ends by itself with all 3000 frames" "$out" \
        "s['hw']['gprc']==3000 and (s['packets']==3000 or '$mode'=='tcp') and s['dma_faults']==0 and s['leaked_pages']==0"
  done
done
out=$TMP/replay-bad.json
timeout 60 $BIN --wire "pcap:$TMP/bad.pcap" --json --quiet >"$out" 2>"$TMP/replay-bad.err"
check "bad checksums dropped without --fix-checksums ($nbad frames), summary names the option" "$out" \
    "1000<$nbad<3000 and s['drops']['l4_checksum']==$nbad and s['pcap_checksum_drops']==$nbad and s['packets']==3000-$nbad and '--fix-checksums' in s['pcap_checksum_hint'] and '--fix-checksums' in open('$TMP/replay-bad.err').read()"
out=$TMP/replay-fixed.json
timeout 60 $BIN --wire "pcap:$TMP/bad.pcap" --fix-checksums --json --quiet >"$out"
check "bad checksums fixed with --fix-checksums: all 3000 frames received" "$out" \
    "s['packets']==3000 and $clean and s['wire_stats']['pcap']['checksums_fixed']==$nbad and 'pcap_checksum_hint' not in s"

# Bad arguments: one line on stderr, exit status 2, no panic.
for bad in "--batch 0" "--ring-size 100" "--device vfio:nonsense" "--device vfio:0000:03:00.0 --frame-size 64" \
           "--wire tap:" "--wire pair" "--wire pcap:/nonexistent/x.pcap" "--verify" \
           "--mode tcp --ip 10.0.0.1" "--mode tcp --ip 10.0.0.1/40" "--mode tcp --port 5201" \
           "--faults drop=150" "--faults colour=red" "--vnet-hdr" "--queues 9" "--queues 2 --sim-mode stepped" "--sim-reset-every 1000" "--sim-stall-every 1000" "--mode tcp --sim-stall-every 0" \
           "--mode tcp --wire tap:lo --duration 1" "--header-split sometimes" "--frame-size 10" "--hdr-buf 1000" \
           "--payload-buf 4096 --headroom 256" "--duration -1" "--core 4096" \
           "--cores 0,0" "--cores 1" "--recycle-batch 0" "--gro 65" "--hdr-pool spinlock" \
           "--hdr-pool packed --hdr-buf 512" "--copies 0" "--touch read" "--mode tcp --copies 3" \
           "--mode tcp --touch all" "--mode tcp --zc-return ring" "--mode tcp --copies 0 --zc-return heap" \
           "--mode tcp --cores 0,1"; do
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
