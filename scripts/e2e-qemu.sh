#!/usr/bin/env bash
# End-to-end run of rxsink on QEMU's emulated igb (82576) through VFIO.
#
# Boots a small Linux guest under TCG (q35 + emulated Intel IOMMU), binds the
# igb to vfio-pci inside it, and runs `rxsink --device vfio:ADDR` once per
# header-split mode (off, on, always). For each, once the guest's RX loop
# runs, the host sends ROUNDS passes over a crafted frame set (UDP/TCP over
# IPv4/IPv6, non-IP, oversized headers, 60..9000 B frames) into the TAP
# device behind the NIC and records them; rxsink stops after that many
# frames, writing every frame (--pcap-out, header + payload reassembled) and
# every descriptor write-back (--wb-log), which come back to the host as a
# base64 tar.gz on the guest's second serial port. Checks per mode:
# - summary: every frame counted, nothing leaked, no drops at all (no
#   missed frames either), packets == hw.gprc, hw.gorc == bytes + 4 x
#   packets (FCS), HBO seen with split on/always and not with split off;
# - bytes: every frame sent arrived exactly once, in order, byte for byte
#   (scripts/e2e-qemu/diffwb.py frames);
# - differential: the frame set replayed through the simulator with the same
#   options gives the same write-back fields frame by frame, except the
#   documented QEMU divergences (diffwb.py wb; prints a table).
# Then TCP, twice (smoltcp, then the zero-copy engine with --copies 0):
# rxsink --mode tcp --verify in the guest; from the host (HOST_IP
# on the TAP) a TCP_BYTES pattern stream (scripts/e2e-qemu/pattern.py) and
# `iperf3 -c`; checks verified == bytes sent, 0 mismatches, iperf3 exit 0,
# no leaked pages / headers / TX buffers. And no DMAR fault in the guest's
# kernel log. Exits non-zero on any failure; removes the TAP device and
# stops QEMU on every exit path. Timings are in README.
#
# Needs root (TAP device, apt-get). Installs what is missing: qemu-system-x86
# >= 8.2 from bookworm-backports, busybox-static, cpio, iperf3, and downloads the
# guest kernel package (linux-image-6.12*-amd64) into the cache directory.
#
# Environment (all optional):
#   E2E_DIR       work/cache directory          (default target/qemu-e2e)
#   ROUNDS        passes over the frame set per split mode (default 8)
#   PPS           frames per second injected    (default 1000)
#   FRAME_TIMEOUT bound on one split mode's rxsink run, s (default 60)
#   TCP           1: run the TCP part, 0: skip it (default 1)
#   TCP_BYTES     pattern stream length          (default 16 MiB)
#   TCP_SPLIT     header split of the TCP run     (default on)
#   IPERF_SECONDS iperf3 -t                      (default 3)
#   GUEST_IP, HOST_IP  addresses on the TAP's /24 (192.168.77.2 / .1)
#   HDR_BUF       rxsink --hdr-buf              (default 128: frame set has
#                 134 B and 326 B headers, so some overflow the header buffer)
#   RXSINK_LOG    RUST_LOG in the guest         (default info)
#   RXSINK_ARGS   extra rxsink arguments
#   MODE          rxsink --mode drop|read       (default read: every byte is touched)
#   TIMEOUT       bound on the whole guest run  (default 600 s)
# Each run leaves its files (serial log, JSON, initramfs) in E2E_DIR/run.*;
# the three newest are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
E2E_DIR=${E2E_DIR:-$ROOT/target/qemu-e2e}
PPS=${PPS:-1000}
HDR_BUF=${HDR_BUF:-128}
RXSINK_LOG=${RXSINK_LOG:-info}
RXSINK_ARGS=${RXSINK_ARGS:-}
MODE=${MODE:-read}
TIMEOUT=${TIMEOUT:-600}
TCP=${TCP:-1}
ROUNDS=${ROUNDS:-8}
FRAME_TIMEOUT=${FRAME_TIMEOUT:-60}
TCP_BYTES=${TCP_BYTES:-16777216}
TCP_SPLIT=${TCP_SPLIT:-on}
TCP_TIMEOUT=${TCP_TIMEOUT:-300}
IPERF_SECONDS=${IPERF_SECONDS:-3}
GUEST_IP=${GUEST_IP:-192.168.77.2}
HOST_IP=${HOST_IP:-192.168.77.1}
MODES="off on always"
TAP=e2eigb$$
T0=$(date +%s)
log() { echo "[e2e-qemu +$(( $(date +%s) - T0 ))s] $*"; }
die() { log "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (TAP device, apt-get)"
mkdir -p "$E2E_DIR"
{ ls -dt "$E2E_DIR"/run.* 2>/dev/null || true; } | tail -n +3 | xargs -r rm -rf
RUN=$(mktemp -d "$E2E_DIR/run.XXXXXX")
QEMU_PID=""
cleanup() {
    local rc=$?
    if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill "$QEMU_PID" 2>/dev/null; sleep 1; kill -9 "$QEMU_PID" 2>/dev/null || true
        wait "$QEMU_PID" 2>/dev/null || true
    fi
    ip link del "$TAP" 2>/dev/null || true
    log "cleaned up (TAP $TAP, QEMU ${QEMU_PID:-none}); serial log: $RUN/serial.log"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- packages
qemu_ok() {
    command -v qemu-system-x86_64 >/dev/null || return 1
    local v; v=$(qemu-system-x86_64 --version | sed -n 's/.*version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
    set -- $v
    [ "${1:-0}" -gt 8 ] || { [ "${1:-0}" -eq 8 ] && [ "${2:-0}" -ge 2 ]; }
}
need_update=1
apt_update() { if [ $need_update = 1 ]; then apt-get update -q >"$RUN/apt-update.log" 2>&1 || { cat "$RUN/apt-update.log"; die "apt-get update"; }; need_update=0; fi; }
if ! grep -rqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding bookworm-backports to apt sources"
    echo 'deb http://deb.debian.org/debian bookworm-backports main' >/etc/apt/sources.list.d/bookworm-backports.list
fi
if ! qemu_ok; then
    log "installing qemu-system-x86 from bookworm-backports (needs >= 8.2 for -device igb)"
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q -t bookworm-backports qemu-system-x86 >"$RUN/apt-qemu.log" 2>&1 \
        || { tail -20 "$RUN/apt-qemu.log"; die "installing qemu-system-x86"; }
    qemu_ok || die "qemu-system-x86_64 is still older than 8.2: $(qemu-system-x86_64 --version | head -1)"
fi
if ! dpkg -s busybox-static >/dev/null 2>&1; then
    log "installing busybox-static"; apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >"$RUN/apt-bb.log" 2>&1 || { tail "$RUN/apt-bb.log"; die "installing busybox-static"; }
fi
if ! command -v cpio >/dev/null; then
    log "installing cpio"; apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q cpio >"$RUN/apt-cpio.log" 2>&1 || die "installing cpio"
fi
if [ "$TCP" = 1 ] && ! command -v iperf3 >/dev/null; then
    log "installing iperf3"; apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q iperf3 >"$RUN/apt-iperf3.log" 2>&1 || { tail "$RUN/apt-iperf3.log"; die "installing iperf3"; }
fi
log "$(qemu-system-x86_64 --version | head -1)"

# ------------------------------------------------------------ guest kernel
KDIR=$E2E_DIR/kernel
if [ ! -f "$KDIR/vmlinuz" ] || [ ! -f "$KDIR/modules.list" ]; then
    rm -rf "$KDIR"; mkdir -p "$KDIR/deb" "$KDIR/x"
    apt_update
    # The newest linux-image-6.12.*-amd64 (unsigned) in bookworm-backports.
    # (not the -rt or -cloud flavours, not -dbg, not the -unsigned twin)
    PKG=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9.+~a-z-]*-amd64$' | awk '{print $1}' \
        | grep -vE -- '-(rt|cloud)-amd64$|-dbg$|-unsigned$' | sort -V | tail -1)
    [ -n "$PKG" ] || die "no linux-image-6.12*-amd64 package found (is bookworm-backports in apt's sources?)"
    log "downloading guest kernel $PKG"
    (cd "$KDIR/deb" && apt-get download -q "$PKG" >"$RUN/apt-kernel.log" 2>&1) || { cat "$RUN/apt-kernel.log"; die "apt-get download $PKG"; }
    dpkg -x "$KDIR"/deb/*.deb "$KDIR/x"
    cp "$(ls "$KDIR"/x/boot/vmlinuz-* | head -1)" "$KDIR/vmlinuz"
    MODDIR=$(ls -d "$KDIR"/x/lib/modules/* 2>/dev/null || ls -d "$KDIR"/x/usr/lib/modules/*)
    # vfio-pci and everything it depends on, in load order, plus the type1
    # IOMMU backend (vfio only request_module()s it). The package has
    # no modules.dep (depmod makes it at install), so read each module's
    # own "depends=" field from its .modinfo strings.
    mkdir -p "$KDIR/modules"
    python3 - "$MODDIR" "$KDIR/modules" vfio_iommu_type1 vfio-pci >"$KDIR/modules.list" <<'EOF'
import lzma, os, sys
moddir, outdir, wants = sys.argv[1], sys.argv[2], sys.argv[3:]
paths = {}
for dirpath, _, files in os.walk(moddir):
    for f in files:
        if ".ko" in f:
            paths[f.split(".ko")[0].replace("-", "_")] = os.path.join(dirpath, f)
def load(name):
    p = paths[name.replace("-", "_")]
    data = open(p, "rb").read()
    if p.endswith(".xz"):
        data = lzma.decompress(data)
    elif p.endswith(".zst"):
        import subprocess
        data = subprocess.run(["zstd", "-dc", p], capture_output=True, check=True).stdout
    return data
order, seen = [], set()
def visit(name):
    name = name.replace("-", "_")
    if name in seen:
        return
    seen.add(name)
    data = load(name)
    deps = []
    for tok in data.split(b"\0"):
        if tok.startswith(b"depends="):
            deps = [d for d in tok[8:].decode().split(",") if d]
    for d in deps:
        visit(d)
    out = os.path.basename(paths[name]).split(".ko")[0] + ".ko"
    open(os.path.join(outdir, out), "wb").write(data)
    order.append(out)
for w in wants:
    visit(w)
print("\n".join(order))
EOF
    rm -rf "$KDIR/x"
fi
log "guest kernel $(ls "$KDIR"/deb/*.deb | xargs -n1 basename); modules: $(tr '\n' ' ' <"$KDIR/modules.list")"

# ------------------------------------------------------------------ rxsink
log "building static rxsink"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -q --locked -p rxsink \
    --target x86_64-unknown-linux-gnu --target-dir "$E2E_DIR/cargo"
RXSINK=$E2E_DIR/cargo/x86_64-unknown-linux-gnu/release/rxsink
HOST_RXSINK=$RXSINK   # static: the simulator side of the differential runs the same binary
DIFFWB=$ROOT/scripts/e2e-qemu/diffwb.py
python3 "$ROOT/scripts/e2e-qemu/sendframes.py" --write-pcap "$RUN/set.pcap"
SET_EXPECT=$(python3 "$DIFFWB" expect "$RUN/set.pcap")
NFRAMES=$(( ROUNDS * $(echo "$SET_EXPECT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sent"])') ))
NDELIVER=$(( ROUNDS * $(echo "$SET_EXPECT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["delivered"])') ))
ldd "$RXSINK" 2>&1 | grep -qE 'not a dynamic|statically linked' || die "$RXSINK is not statically linked"

# -------------------------------------------------------------- initramfs
IR=$RUN/initramfs
mkdir -p "$IR"/{bin,sbin,proc,sys,dev,tmp,lib/modules,etc}
cp /bin/busybox "$IR/bin/busybox"
cp "$RXSINK" "$IR/bin/rxsink"
cp "$KDIR"/modules/* "$IR/lib/modules/"
cp "$KDIR/modules.list" "$IR/lib/modules/order"
cat >"$IR/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
say() { echo "\$@" >/dev/console; }
say "E2E-BOOTED \$(cut -d' ' -f1 /proc/uptime)"
for m in \$(cat /lib/modules/order); do insmod /lib/modules/\$m || say "E2E-ERROR insmod \$m"; done
ADDR=""
for d in /sys/bus/pci/devices/*; do
    if [ "\$(cat \$d/vendor)" = 0x8086 ] && [ "\$(cat \$d/device)" = 0x10c9 ]; then ADDR=\$(basename \$d); fi
done
[ -n "\$ADDR" ] || { say "E2E-ERROR no 8086:10c9 device"; lspci 2>/dev/null; poweroff -f; }
say "E2E-NIC \$ADDR group \$(basename \$(readlink /sys/bus/pci/devices/\$ADDR/iommu_group) 2>/dev/null)"
[ -e /sys/bus/pci/devices/\$ADDR/driver ] && echo \$ADDR > /sys/bus/pci/devices/\$ADDR/driver/unbind
echo 8086 10c9 > /sys/bus/pci/drivers/vfio-pci/new_id
sleep 1
say "E2E-BOUND \$(basename \$(readlink /sys/bus/pci/devices/\$ADDR/driver) 2>/dev/null) \$(ls /dev/vfio | tr '\n' ' ')"
# Files back to the host: tar.gz in base64 on the second serial port (no
# console noise there), between markers.
ship() { tag=\$1; shift; echo "E2E-FILES-BEGIN \$tag" >/dev/ttyS1; tar czf - -C /tmp "\$@" | base64 >/dev/ttyS1; echo "E2E-FILES-END \$tag" >/dev/ttyS1; }
# Starts rxsink in the background; READY once its RX loop runs (first
# per-second stats line), so the host sends nothing before the ring is up.
start_rxsink() { tag=\$1; shift
    NO_COLOR=1 RUST_LOG=$RXSINK_LOG rxsink --device vfio:\$ADDR "\$@" >/tmp/\$tag.json 2>/tmp/\$tag.err &
    pid=\$!
    while kill -0 \$pid 2>/dev/null && ! grep -q '^rxsink: *[0-9.]*s' /tmp/\$tag.err; do sleep 0.2; done
    say "E2E-READY \$tag"
}
report() { tag=\$1; rc=\$2
    echo 1 >/proc/sys/kernel/printk
    say "E2E-STDERR-BEGIN \$tag"; cat /tmp/\$tag.err >/dev/console; say "E2E-STDERR-END \$tag"
    say "E2E-JSON-BEGIN \$tag"; cat /tmp/\$tag.json >/dev/console; say ""; say "E2E-JSON-END \$tag rc=\$rc"
    echo 4 >/proc/sys/kernel/printk
}
for mode in $MODES; do
    start_rxsink \$mode --mode $MODE --header-split \$mode --hdr-buf $HDR_BUF --json --packets $NDELIVER --duration $FRAME_TIMEOUT \
        --pcap-out /tmp/\$mode.pcap --wb-log /tmp/\$mode.wb.jsonl $RXSINK_ARGS
    wait \$pid; rc=\$?
    report \$mode \$rc
    ship \$mode \$mode.pcap \$mode.wb.jsonl
done
if [ "$TCP" = 1 ]; then
    start_rxsink tcp --mode tcp --ip $GUEST_IP/24 --verify --until-closed 3 --header-split $TCP_SPLIT --hdr-buf 256 --json --duration $TCP_TIMEOUT
    wait \$pid; rc=\$?
    report tcp \$rc
    start_rxsink tcpzc --mode tcp --copies 0 --ip $GUEST_IP/24 --verify --until-closed 3 --header-split $TCP_SPLIT --hdr-buf 256 --json --duration $TCP_TIMEOUT
    wait \$pid; rc=\$?
    report tcpzc \$rc
fi
echo 1 >/proc/sys/kernel/printk
say "E2E-DMESG-BEGIN"; dmesg | grep -iE 'dmar|vfio|iommu|fault' | tail -40 >/dev/console; say "E2E-DMESG-END"
say "E2E-DONE"
poweroff -f
EOF
chmod +x "$IR/init"
(cd "$IR" && find . | cpio -o -H newc --quiet | gzip -1) >"$RUN/initrd.gz"
log "initramfs $(du -h "$RUN/initrd.gz" | cut -f1)"

# --------------------------------------------------------------------- TAP
ip tuntap add dev "$TAP" mode tap
sysctl -qw "net.ipv6.conf.$TAP.disable_ipv6=1" 2>/dev/null || true   # keep the host's own traffic off the wire
ip link set "$TAP" mtu 9100 up

# -------------------------------------------------------------------- boot
SERIAL=$RUN/serial.log
log "booting the guest (TCG; timeout ${TIMEOUT}s)"
timeout "$TIMEOUT" qemu-system-x86_64 -accel tcg -smp 2 -m 1G \
    -machine q35,kernel-irqchip=split -device intel-iommu,intremap=on,caching-mode=on \
    -device igb,netdev=n0 -netdev tap,id=n0,ifname="$TAP",script=no,downscript=no \
    -kernel "$KDIR/vmlinuz" -initrd "$RUN/initrd.gz" \
    -append "console=ttyS0 intel_iommu=on loglevel=4 panic=-1" \
    -serial mon:stdio -serial file:"$RUN/ttyS1.log" \
    -nographic -no-reboot </dev/null >"$SERIAL" 2>"$RUN/qemu.err" &
QEMU_PID=$!

# Each READY marker: the guest's rxsink is receiving. Frame-set modes get
# ROUNDS passes over the frame set (every frame sent is recorded); the tcp
# run gets the pattern stream and an iperf3 client.
tcp_client() {
    local tag=$1
    ip addr replace "$HOST_IP/24" dev "$TAP"
    log "TCP ($tag): pattern stream of $TCP_BYTES bytes to $GUEST_IP:9000, then iperf3 -c $GUEST_IP -t $IPERF_SECONDS"
    timeout 300 python3 "$ROOT/scripts/e2e-qemu/pattern.py" "$GUEST_IP" 9000 "$TCP_BYTES" >"$RUN/$tag.pattern.json" 2>"$RUN/$tag.pattern.err"
    echo "pattern sender rc=$?" >>"$RUN/$tag.pattern.err"
    timeout $((IPERF_SECONDS + 120)) iperf3 -c "$GUEST_IP" -p 5201 -t "$IPERF_SECONDS" -J --connect-timeout 30000 >"$RUN/$tag.iperf3.json" 2>"$RUN/$tag.iperf3.err"
    echo $? >"$RUN/$tag.iperf3.rc"
    log "TCP clients done ($tag: iperf3 exit $(cat "$RUN/$tag.iperf3.rc"))"
}
handled=" "
while kill -0 "$QEMU_PID" 2>/dev/null; do
    for tag in $(sed -n 's/^E2E-READY \([a-z]*\).*/\1/p' "$SERIAL"); do
        case "$handled" in *" $tag "*) continue;; esac
        handled="$handled$tag "
        if [ "$tag" = tcp ] || [ "$tag" = tcpzc ]; then
            tcp_client "$tag"
        else
            log "guest ready for header split $tag; sending $NFRAMES frames ($ROUNDS x the set; $NDELIVER to deliver)"
            python3 "$ROOT/scripts/e2e-qemu/sendframes.py" "$TAP" 60 "$PPS" "$ROUNDS" "$RUN/$tag.sent.pcap" >>"$RUN/send.log" 2>&1 \
                || log "sendframes failed: $(tail -1 "$RUN/send.log")"
        fi
    done
    grep -q '^E2E-DONE' "$SERIAL" && break
    grep -q '^E2E-ERROR' "$SERIAL" && { tr -d '\r' <"$SERIAL" | tail -30; die "guest: $(grep -m1 '^E2E-ERROR' "$SERIAL")"; }
    sleep 0.3
done
qrc=0; wait "$QEMU_PID" || qrc=$?; QEMU_PID=""
log "guest finished (qemu exit $qrc)"
[ -s "$RUN/qemu.err" ] && { echo "--- qemu stderr"; cat "$RUN/qemu.err"; }
grep -q '^E2E-DONE' "$SERIAL" || { tr -d '\r' <"$SERIAL" | tail -60; die "guest did not finish (timeout ${TIMEOUT}s or crash)"; }

# ------------------------------------------------------------------ checks
tr -d '\r' <"$SERIAL" >"$RUN/serial.txt"
tr -d '\r' <"$RUN/ttyS1.log" >"$RUN/ttyS1.txt" 2>/dev/null || true
fail=0; passed=0
check() { if "$@"; then passed=$((passed+1)); else fail=$((fail+1)); fi; }
TCP_TAGS=$( [ "$TCP" = 1 ] && echo tcp tcpzc )
for tag in $MODES $TCP_TAGS; do
    sed -n "/^E2E-STDERR-BEGIN $tag\$/,/^E2E-STDERR-END $tag\$/p" "$RUN/serial.txt" | sed '1d;$d' >"$RUN/$tag.err"
    sed -n "/^E2E-JSON-BEGIN $tag\$/,/^E2E-JSON-END $tag /p" "$RUN/serial.txt" | sed '1d;$d' >"$RUN/$tag.json"
    echo "--- $tag: rxsink stderr (last lines)"; tail -5 "$RUN/$tag.err"
    echo "--- $tag: JSON"; cat "$RUN/$tag.json"
    mkdir -p "$RUN/guest"
    sed -n "/^E2E-FILES-BEGIN $tag\$/,/^E2E-FILES-END $tag\$/p" "$RUN/ttyS1.txt" | sed '1d;$d' | base64 -d 2>/dev/null | tar xzf - -C "$RUN/guest" 2>/dev/null || true
done
for mode in $MODES; do
    python3 "$DIFFWB" expect "$RUN/$mode.sent.pcap" >"$RUN/$mode.expect.json" 2>&1 || echo '{}' >"$RUN/$mode.expect.json"
    check python3 - "$RUN/$mode.json" "$mode" "$MODE" "$HDR_BUF" "$RUN/$mode.expect.json" "$RUN/serial.txt" <<'EOF'
import json, re, sys
path, mode, rmode, hdr_buf = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
try:
    s = json.loads(open(path).read().strip())
    x = json.load(open(sys.argv[5]))
except Exception as e:
    print(f"FAIL {mode}: no JSON summary or no record of the frames sent ({e})"); sys.exit(1)
bad = []
# rxsink's exit status in the guest (0: stopped after the frames it must
# deliver, nothing leaked).
m = re.search(rf"^E2E-JSON-END {mode} rc=(\d+)", open(sys.argv[6]).read(), re.M)
if not m or m.group(1) != "0": bad.append(f"rxsink exit status {m and m.group(1)}")
if not x.get("sent"): bad.append("the host sent nothing")
if s.get("packets") != x.get("delivered"): bad.append(f"packets = {s.get('packets')}, want {x.get('delivered')} ({x.get('sent')} sent)")
if s.get("bytes") != x.get("delivered_bytes"): bad.append(f"bytes = {s.get('bytes')}, want {x.get('delivered_bytes')}")
for k in ("leaked_pages", "leaked_headers"):
    if s.get(k) != 0: bad.append(f"{k} = {s.get(k)}")
# Exactly the frames sent with a wrong checksum are dropped, for that
# reason; nothing else (no missed frames either).
drops = {k: v for k, v in s.get("drops", {}).items() if v}
want = {k: v for k, v in x.get("drops", {}).items() if v}
if drops != want: bad.append(f"drops {drops}, want {want}")
if s.get("dma_faults") not in (None, 0): bad.append(f"dma_faults = {s['dma_faults']}")
# The frame set has 134 B and 326 B headers: with a split mode and the
# header buffer below 326 B (default 128 B) some must overflow it (HBO); without split none.
hbo = s.get("hbo", 0)
if mode == "off" and (hbo or s.get("dummy_headers")): bad.append(f"split off but hbo = {hbo}, dummy_headers = {s.get('dummy_headers')}")
if mode != "off" and hdr_buf < 326 and not hbo: bad.append("no header buffer overflow (HBO) seen although the frame set has 134 B / 326 B headers")
# The device counted (GPRC) every frame sent, checksum errors included, and
# GORC their octets with runts padded to 60 B plus the 4-byte FCS each.
hw = s.get("hw", {})
if hw.get("gprc") != x.get("sent"): bad.append(f"hw.gprc {hw.get('gprc')} != {x.get('sent')} frames sent")
if hw.get("gorc") != x.get("gorc"): bad.append(f"hw.gorc {hw.get('gorc')} != {x.get('gorc')} (frames sent, padded, + FCS)")
if rmode == "read" and not s.get("read_fold"): bad.append("read mode but read_fold = 0")
po = s.get("pcap_out") or {}
if po.get("frames") != s.get("packets") or po.get("errors"): bad.append(f"pcap_out {po}")
summary = (f"packets={s.get('packets')} bytes={s.get('bytes')} hbo={s.get('hbo')} "
           f"dummy_headers={s.get('dummy_headers')} hw={s.get('hw')}")
if bad:
    print(f"FAIL header-split={mode}: " + "; ".join(bad) + " | " + summary); sys.exit(1)
print(f"ok   header-split={mode}: " + summary)
EOF
    if [ -s "$RUN/guest/$mode.pcap" ] && [ -s "$RUN/$mode.sent.pcap" ]; then
        check python3 "$DIFFWB" frames "$RUN/$mode.sent.pcap" "$RUN/guest/$mode.pcap" --label "bytes header-split=$mode"
    else
        echo "FAIL bytes header-split=$mode: no sent ($RUN/$mode.sent.pcap) or received ($RUN/guest/$mode.pcap) capture"; fail=$((fail+1))
    fi
    if [ -s "$RUN/guest/$mode.wb.jsonl" ] && [ -s "$RUN/$mode.sent.pcap" ]; then
        check python3 "$DIFFWB" wb --rxsink "$HOST_RXSINK" --set "$RUN/set.pcap" --qemu-wb "$RUN/guest/$mode.wb.jsonl" \
            --qemu-sent "$RUN/$mode.sent.pcap" --mode "$mode" --hdr-buf "$HDR_BUF" --out "$RUN/sim"
    else
        echo "FAIL differential header-split=$mode: no write-back log from the guest"; fail=$((fail+1))
    fi
done
# tcp: smoltcp (copies once); tcpzc: the zero-copy engine (--copies 0).
for tag in $TCP_TAGS; do
    echo "--- TCP clients ($tag)"; cat "$RUN/$tag.pattern.json" "$RUN/$tag.pattern.err" 2>/dev/null
    python3 -c 'import json,sys; e=json.load(open(sys.argv[1])).get("end",{}); print("iperf3: sent %s B, received %s B, %.1f Mbit/s" % (e.get("sum_sent",{}).get("bytes"), e.get("sum_received",{}).get("bytes"), e.get("sum_received",{}).get("bits_per_second",0)/1e6))' "$RUN/$tag.iperf3.json" 2>/dev/null || cat "$RUN/$tag.iperf3.err" 2>/dev/null
    check python3 - "$RUN/$tag.json" "$RUN/$tag.pattern.json" "$(cat "$RUN/$tag.iperf3.rc" 2>/dev/null || echo none)" "$RUN/serial.txt" "$tag" <<'EOF'
import json, re, sys
path, pat, iperf_rc, serial, tag = sys.argv[1:6]
bad = []
try:
    s = json.loads(open(path).read().strip())
except Exception as e:
    print(f"FAIL {tag}: no JSON summary ({e})"); sys.exit(1)
m = re.search(rf"^E2E-JSON-END {tag} rc=(\d+)", open(serial).read(), re.M)
if not m or m.group(1) != "0": bad.append(f"rxsink exit status {m and m.group(1)}")
try:
    sent = json.loads(open(pat).read())["sent"]
except Exception as e:
    sent = None; bad.append(f"pattern sender failed ({e})")
t = s.get("tcp", {})
if sent is not None and t.get("verified") != sent: bad.append(f"verified {t.get('verified')} != {sent} bytes sent")
if t.get("mismatches") != 0: bad.append(f"mismatches = {t.get('mismatches')}")
if t.get("closed", 0) < 3: bad.append(f"closed = {t.get('closed')} (pattern + iperf3 control + data)")
if iperf_rc != "0": bad.append(f"iperf3 exit status {iperf_rc}")
for k in ("leaked_pages", "leaked_headers", "leaked_tx_buffers"):
    if s.get(k) != 0: bad.append(f"{k} = {s.get(k)}")
drops = {k: v for k, v in s.get("drops", {}).items() if v}
if drops: bad.append(f"drops {drops}")
p = s.get("present", {})
if p.get("bad_checksum") or p.get("malformed"): bad.append(f"present {p}")
z = s.get("zc")
if tag == "tcpzc":
    if not z: bad.append("--copies 0 but no zc object")
    elif z["bytes"] == 0 or z["returned_bytes"] != z["bytes"] or z["copy_fallback_bytes"]:
        bad.append(f"zc bytes {z['bytes']}, returned {z['returned_bytes']}, copy fallback {z['copy_fallback_bytes']}")
elif z is not None: bad.append("zc object without --copies 0")
zs = {k: v for k, v in (z or {}).items() if k != "per_queue"}
summary = f"tcp={t} zc={zs} packets={s.get('packets')} hw={s.get('hw')}"
if bad:
    print(f"FAIL {tag}: " + "; ".join(bad) + " | " + summary); sys.exit(1)
print(f"ok   {tag}: " + summary)
EOF
done
echo "--- guest dmesg (IOMMU / VFIO lines)"
sed -n '/^E2E-DMESG-BEGIN/,/^E2E-DMESG-END/p' "$RUN/serial.txt" | sed '1d;$d'
if grep -qE 'DMAR: \[DMA (Read|Write)|DRHD: handling fault|DMAR:.*[Ff]ault' "$RUN/serial.txt"; then
    echo "FAIL IOMMU faults in the guest's kernel log:"; grep -E 'DMAR:.*([Ff]ault|\[DMA)' "$RUN/serial.txt" | head -20; fail=$((fail+1))
else
    echo "ok   no IOMMU (DMAR) faults in the guest's kernel log"; passed=$((passed+1))
fi
echo "--- host sender"; cat "$RUN/send.log" 2>/dev/null || true
log "done in $(( $(date +%s) - T0 ))s (the run time README cites)"
echo "$passed passed, $fail failed"
[ "$fail" = 0 ]
