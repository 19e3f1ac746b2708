#!/usr/bin/env bash
# End-to-end run of rxsink on QEMU's emulated igb (82576) through VFIO.
#
# Boots a small Linux guest under TCG (q35 + emulated Intel IOMMU), binds the
# igb to vfio-pci inside it, and runs `rxsink --device vfio:ADDR` once per
# header-split mode (off, on, always) while the host injects a crafted frame
# set (UDP/TCP over IPv4/IPv6, non-IP, oversized headers, 60..9000 B frames)
# into the TAP device behind the NIC. Checks every JSON summary: packets > 0,
# nothing leaked, no drops but the hardware's `missed`, packets == hw.gprc,
# hw.gorc == bytes + 4 x packets (FCS), HBO seen with split on/always and not
# with split off, read_fold != 0 in read mode; and no DMAR fault in the
# guest's kernel log. Takes ~40 s warm (~2 min cold: kernel download, static
# build) on 2 cores. Exits non-zero on any failure; removes the TAP device
# and stops QEMU on every exit path.
#
# Needs root (TAP device, apt-get). Installs what is missing: qemu-system-x86
# >= 8.2 from bookworm-backports, busybox-static, cpio, and downloads the
# guest kernel package (linux-image-6.12*-amd64) into the cache directory.
#
# Environment (all optional):
#   E2E_DIR       work/cache directory          (default target/qemu-e2e)
#   DURATION      seconds per rxsink run        (default 8)
#   PPS           frames per second injected    (default 1500)
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
DURATION=${DURATION:-8}
PPS=${PPS:-1500}
HDR_BUF=${HDR_BUF:-128}
RXSINK_LOG=${RXSINK_LOG:-info}
RXSINK_ARGS=${RXSINK_ARGS:-}
MODE=${MODE:-read}
TIMEOUT=${TIMEOUT:-600}
MODES="off on always"
TAP=e2eigb$$
T0=$(date +%s)
log() { echo "[e2e-qemu +$(( $(date +%s) - T0 ))s] $*"; }
die() { log "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (TAP device, apt-get)"
mkdir -p "$E2E_DIR"
ls -dt "$E2E_DIR"/run.* 2>/dev/null | tail -n +3 | xargs -r rm -rf
RUN=$(mktemp -d "$E2E_DIR/run.XXXXXX")
QEMU_PID=""; SEND_PID=""
cleanup() {
    local rc=$?
    [ -n "$SEND_PID" ] && kill -INT "$SEND_PID" 2>/dev/null && wait "$SEND_PID" 2>/dev/null
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
for mode in $MODES; do
    say "E2E-READY \$mode"
    NO_COLOR=1 RUST_LOG=$RXSINK_LOG rxsink --device vfio:\$ADDR --mode $MODE --header-split \$mode --hdr-buf $HDR_BUF --json --duration $DURATION $RXSINK_ARGS >/tmp/\$mode.json 2>/tmp/\$mode.err
    rc=\$?
    echo 1 >/proc/sys/kernel/printk
    say "E2E-STDERR-BEGIN \$mode"; cat /tmp/\$mode.err >/dev/console; say "E2E-STDERR-END \$mode"
    say "E2E-JSON-BEGIN \$mode"; cat /tmp/\$mode.json >/dev/console; say ""; say "E2E-JSON-END \$mode rc=\$rc"
    echo 4 >/proc/sys/kernel/printk
done
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
    -nographic -no-reboot </dev/null >"$SERIAL" 2>"$RUN/qemu.err" &
QEMU_PID=$!

# Send traffic from the first READY marker until the guest is done.
sent_for=0
while kill -0 "$QEMU_PID" 2>/dev/null; do
    if [ -z "$SEND_PID" ] && grep -q '^E2E-READY' "$SERIAL"; then
        log "guest ready ($(grep -m1 '^E2E-NIC' "$SERIAL" | tr -d '\r')); injecting frames at ~${PPS}/s"
        python3 "$ROOT/scripts/e2e-qemu/sendframes.py" "$TAP" "$TIMEOUT" "$PPS" >"$RUN/send.log" 2>&1 &
        SEND_PID=$!
    fi
    grep -q '^E2E-DONE' "$SERIAL" && break
    grep -q '^E2E-ERROR' "$SERIAL" && { tr -d '\r' <"$SERIAL" | tail -30; die "guest: $(grep -m1 '^E2E-ERROR' "$SERIAL")"; }
    sleep 0.5
done
if [ -n "$SEND_PID" ]; then kill -INT "$SEND_PID" 2>/dev/null; wait "$SEND_PID" 2>/dev/null || true; SEND_PID=""; fi
qrc=0; wait "$QEMU_PID" || qrc=$?; QEMU_PID=""
log "guest finished (qemu exit $qrc)"
[ -s "$RUN/qemu.err" ] && { echo "--- qemu stderr"; cat "$RUN/qemu.err"; }
grep -q '^E2E-DONE' "$SERIAL" || { tr -d '\r' <"$SERIAL" | tail -60; die "guest did not finish (timeout ${TIMEOUT}s or crash)"; }

# ------------------------------------------------------------------ checks
tr -d '\r' <"$SERIAL" >"$RUN/serial.txt"
fail=0; passed=0
for mode in $MODES; do
    sed -n "/^E2E-STDERR-BEGIN $mode\$/,/^E2E-STDERR-END $mode\$/p" "$RUN/serial.txt" | sed '1d;$d' >"$RUN/$mode.err"
    sed -n "/^E2E-JSON-BEGIN $mode\$/,/^E2E-JSON-END $mode /p" "$RUN/serial.txt" | sed '1d;$d' >"$RUN/$mode.json"
    echo "--- header split $mode: rxsink stderr"; cat "$RUN/$mode.err"
    echo "--- header split $mode: JSON"; cat "$RUN/$mode.json"
    if python3 - "$RUN/$mode.json" "$mode" "$MODE" "$HDR_BUF" <<'EOF'
import json, sys
path, mode, rmode, hdr_buf = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
try:
    s = json.loads(open(path).read().strip())
except Exception as e:
    print(f"FAIL {mode}: no JSON summary ({e})"); sys.exit(1)
bad = []
if not s.get("packets", 0) > 0: bad.append(f"packets = {s.get('packets')}")
for k in ("leaked_pages", "leaked_headers"):
    if s.get(k) != 0: bad.append(f"{k} = {s.get(k)}")
drops = {k: v for k, v in s.get("drops", {}).items() if v and k != "missed"}
if drops: bad.append(f"drops {drops}")
if s.get("dma_faults") not in (None, 0): bad.append(f"dma_faults = {s['dma_faults']}")
# The frame set has 134 B and 326 B headers: with a split mode and the
# header buffer below 326 B (default 128 B) some must overflow it (HBO); without split none.
hbo = s.get("hbo", 0)
if mode == "off" and (hbo or s.get("dummy_headers")): bad.append(f"split off but hbo = {hbo}, dummy_headers = {s.get('dummy_headers')}")
if mode != "off" and hdr_buf < 326 and not hbo: bad.append("no header buffer overflow (HBO) seen although the frame set has 134 B / 326 B headers")
# Every frame the device counted (GPRC) was handed out: nothing stuck in the ring.
gprc = s.get("hw", {}).get("gprc")
if gprc is not None and s.get("packets") != gprc: bad.append(f"packets {s.get('packets')} != hw.gprc {gprc}")
# GORC counts the 4-byte FCS: it must equal the frame bytes rxsink saw
# (PKT_LEN + HDR_LEN write-back) plus 4 per frame.
gorc = s.get("hw", {}).get("gorc")
if gorc is not None and gprc is not None and gorc != s.get("bytes", 0) + 4 * gprc:
    bad.append(f"hw.gorc {gorc} != bytes {s.get('bytes')} + 4 x {gprc} (FCS): write-back lengths disagree with the device")
if rmode == "read" and not s.get("read_fold"): bad.append("read mode but read_fold = 0")
summary = (f"packets={s.get('packets')} bytes={s.get('bytes')} hbo={s.get('hbo')} "
           f"dummy_headers={s.get('dummy_headers')} drops={s.get('drops')} hw={s.get('hw')}")
if bad:
    print(f"FAIL header-split={mode}: " + "; ".join(bad) + " | " + summary); sys.exit(1)
print(f"ok   header-split={mode}: " + summary)
EOF
    then passed=$((passed+1)); else fail=$((fail+1)); fi
done
echo "--- guest dmesg (IOMMU / VFIO lines)"
sed -n '/^E2E-DMESG-BEGIN/,/^E2E-DMESG-END/p' "$RUN/serial.txt" | sed '1d;$d'
if grep -qE 'DMAR: \[DMA (Read|Write)|DRHD: handling fault|DMAR:.*[Ff]ault' "$RUN/serial.txt"; then
    echo "FAIL IOMMU faults in the guest's kernel log:"; grep -E 'DMAR:.*([Ff]ault|\[DMA)' "$RUN/serial.txt" | head -20; fail=$((fail+1))
else
    echo "ok   no IOMMU (DMAR) faults in the guest's kernel log"; passed=$((passed+1))
fi
echo "--- host sender"; cat "$RUN/send.log" 2>/dev/null || true
log "done in $(( $(date +%s) - T0 ))s"
echo "$passed passed, $fail failed"
[ "$fail" = 0 ]
