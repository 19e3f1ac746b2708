#!/usr/bin/env bash
# Zero-copy receive benchmarks on the pair wire (a smoltcp TCP sender on a
# second simulated NIC in the same process; one flow):
#
#  (a) The copy ladder: receive-path CPU-seconds per GB (the RX thread's
#      CPU time in the rounds that did receive work: driver, stack, the
#      application's reading; the simulator steps outside that time) for
#      --copies 2/1/0 x --touch none/read at MTU 1500, 4148 (4 KiB MSS) and
#      9000. Runs are interleaved (one of each configuration per repeat) so
#      drift on a shared machine hits every rung alike; min and median of
#      REPEATS runs. The ratio column compares zero copy with copy-once at
#      the same MTU and touch (goal: <= 0.5 with --touch none at 4148).
#  (b) The return dragon: --copies 0 --cores 1,0 --mtu 4148 (RX thread on
#      core 1, the application reading and returning pages on core 0,
#      which it shares with the pair's sender: it yields when idle),
#      --tcp-buf 8 MiB (2048 pages: a batch of 512 must fit in the window,
#      or it fills only when the application gives up waiting, IDLE_FLUSH),
#      return batch 1/8/64/512, --zc-return ring vs locked: Gbit/s, locks
#      the returning threads took per returned page, and T^2/CPU (T in
#      Gbit/s; CPU = busy CPU-seconds of both threads per second of the
#      run, the evaluation's ROI metric with busy-polling threads counted
#      by their busy share).
#
# Everything but the pinned threads runs on core 0 (in (a) the RX thread
# has core 1 to itself; in (b) the application shares core 0 with the
# sender: figures of (b) are for comparing rows, not absolute).
# Usage: scripts/bench-zc.sh [REPEATS] [BYTES] [OUT_DIR]
#   OUT_DIR (default: a temporary directory) receives results.json and
#   ladder.svg (the plot README shows).
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${1:-5}
BYTES=${2:-400000000}
OUT=${3:-}
cargo build --release -p rxsink --locked -q
BIN=$PWD/target/release/rxsink
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
[ -n "$OUT" ] || OUT=$TMP/out
mkdir -p "$OUT"
log() { echo "bench-zc: $*" >&2; }

# run TAG ARGS...: one rxsink run, its JSON appended to $TMP/TAG.jsonl.
run() {
    local tag=$1; shift
    if ! timeout 300 taskset -c 0 "$BIN" --mode tcp --wire pair --pair-bytes "$BYTES" \
        --json --quiet "$@" >"$TMP/one.json" 2>"$TMP/one.err"; then
        log "run failed: $*"; cat "$TMP/one.err" >&2; exit 1
    fi
    cat "$TMP/one.json" >>"$TMP/$tag.jsonl"; echo >>"$TMP/$tag.jsonl"
}

MTUS=(1500 4148 9000)
log "(a) copy ladder: ${#MTUS[@]} MTUs x 3 copies x 2 touches x $REPEATS runs of $BYTES bytes"
for i in $(seq "$REPEATS"); do
    for mtu in "${MTUS[@]}"; do
        for copies in 2 1 0; do
            for touch in none read; do
                run "ladder-$mtu-$copies-$touch" --mtu "$mtu" --core 1 --copies "$copies" --touch "$touch"
            done
        done
    done
    log "  repeat $i done"
done

BATCHES=(1 8 64 512)
log "(b) return dragon: ${#BATCHES[@]} batches x ring/locked x $REPEATS runs"
for i in $(seq "$REPEATS"); do
    for b in "${BATCHES[@]}"; do
        for ret in ring locked; do
            run "dragon-$b-$ret" --mtu 4148 --tcp-buf 8388608 --copies 0 --cores 1,0 --zc-return "$ret" --recycle-batch "$b"
        done
    done
    log "  repeat $i done"
done

python3 - "$TMP" "$OUT" "$BYTES" "$REPEATS" "${MTUS[*]}" "${BATCHES[*]}" <<'PY'
import json, os, statistics as st, sys
tmp, out, nbytes, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
mtus = [int(m) for m in sys.argv[5].split()]
batches = [int(b) for b in sys.argv[6].split()]

def runs(tag):
    dec, text, res, i = json.JSONDecoder(), open(os.path.join(tmp, tag + ".jsonl")).read(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        obj, i = dec.raw_decode(text, i)
        res.append(obj)
    for r in res:
        if r["tcp"]["bytes"] != nbytes or r["leaked_pages"] or r["tcp"]["aborted"]:
            sys.exit(f"{tag}: a run did not deliver every byte cleanly")
    return res

def mm(xs):
    return {"min": min(xs), "median": st.median(xs)}

results = {"bytes": nbytes, "repeats": repeats, "ladder": [], "dragon": []}
print(f"## (a) Copy ladder: receive-path CPU-s/GB, min / median of {repeats} runs of {nbytes} B (pair wire, one flow)\n")
print("| MTU | copies | --touch none | --touch read | Gbit/s (none, median) | 0-copy / 1-copy (none) | 0-copy / 1-copy (read) |")
print("|---|---|---|---|---|---|---|")
for mtu in mtus:
    med = {}
    for copies in ["2", "1", "0"]:
        row = {"mtu": mtu, "copies": copies}
        for touch in ["none", "read"]:
            rs = runs(f"ladder-{mtu}-{copies}-{touch}")
            row[touch] = {"cpu_s_per_gb": mm([r["cpu_seconds_per_gb"] for r in rs]),
                          "gbps": mm([r["gbps"] for r in rs]),
                          "segments_sent": mm([r["tcp"]["segments"]["TcpOutSegs"] for r in rs])}
            med[(copies, touch)] = row[touch]["cpu_s_per_gb"]["median"]
            if copies == "0":
                z = [r["zc"] for r in rs]
                row[touch]["page_aligned_share"] = sum(x["page_aligned_chunks"] for x in z) / max(1, sum(x["chunks"] for x in z))
                row[touch]["copy_fallback_bytes"] = sum(x["copy_fallback_bytes"] for x in z)
        results["ladder"].append(row)
    for copies in ["2", "1", "0"]:
        row = next(r for r in results["ladder"] if r["mtu"] == mtu and r["copies"] == copies)
        cell = lambda t: f"{row[t]['cpu_s_per_gb']['min']:.4f} / {row[t]['cpu_s_per_gb']['median']:.4f}"
        ratio = lambda t: f"{med[('0', t)] / med[('1', t)]:.2f}" if copies == "0" and med[("1", t)] > 0 else ""
        print(f"| {mtu} | {copies} | {cell('none')} | {cell('read')} | {row['none']['gbps']['median']:.2f} | {ratio('none')} | {ratio('read')} |")
print("\nSegments the receiver sent per run (`tcp.segments.TcpOutSegs`: ACKs and window updates), median, --touch none: " + "; ".join(
    f"MTU {r['mtu']} copies {r['copies']}: {r['none']['segments_sent']['median']:.0f}" for r in results["ladder"]) + ".")
zc4k = next(r for r in results["ladder"] if r["mtu"] == 4148 and r["copies"] == "0") if 4148 in mtus else None
if zc4k:
    print(f"\nAt MTU 4148 with zero copy, {100 * zc4k['none']['page_aligned_share']:.1f}% of the chunks were page-aligned; copy fallback {zc4k['none']['copy_fallback_bytes']} B.")

print(f"\n## (b) Return dragon: --copies 0 --cores 1,0 --mtu 4148 --tcp-buf 8 MiB, median of {repeats} runs\n")
print("| batch | return | Gbit/s | locks per returned page | busy CPUs (RX + app) | T^2/CPU |")
print("|---|---|---|---|---|---|")
for b in batches:
    for ret in ["ring", "locked"]:
        rs = runs(f"dragon-{b}-{ret}")
        g = st.median([r["gbps"] for r in rs])
        locks = st.median([r["zc"]["locks_per_returned_page"] for r in rs])
        cpus = st.median([r["busy_cpu_seconds"] / r["seconds"] for r in rs])
        roi = st.median([r["gbps"] ** 2 / (r["busy_cpu_seconds"] / r["seconds"]) for r in rs if r["busy_cpu_seconds"] > 0])
        results["dragon"].append({"batch": b, "return": ret, "gbps": mm([r["gbps"] for r in rs]),
                                  "locks_per_page": locks, "busy_cpus": cpus, "t2_per_cpu": roi})
        print(f"| {b} | {ret} | {g:.2f} | {locks:.5f} (1/{(1 / locks) if locks else float('inf'):.0f}) | {cpus:.2f} | {roi:.1f} |")

json.dump(results, open(os.path.join(out, "results.json"), "w"), indent=1)

# The ladder as grouped bars (median CPU-s/GB), plain SVG.
W, H, L, B = 720, 340, 60, 40
groups = [(m, t) for m in mtus for t in ["none", "read"]]
vals = {(r["mtu"], r["copies"], t): r[t]["cpu_s_per_gb"]["median"] for r in results["ladder"] for t in ["none", "read"]}
top = max(vals.values()) * 1.15 or 1
gw = (W - L - 20) / len(groups)
colors = {"2": "#d62728", "1": "#1f77b4", "0": "#2ca02c"}
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2}" y="16" text-anchor="middle" font-size="13">Receive-path CPU-s per GB by copies (median of {repeats})</text>']
for k in range(5):
    v = top * k / 4
    y = H - B - (H - B - 30) * k / 4
    svg.append(f'<line x1="{L}" x2="{W-20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/><text x="{L-4}" y="{y+4:.1f}" text-anchor="end">{v:.3f}</text>')
for gi, (m, t) in enumerate(groups):
    x0 = L + gi * gw
    for ci, c in enumerate(["2", "1", "0"]):
        v = vals[(m, c, t)]
        h = (H - B - 30) * v / top
        x = x0 + 8 + ci * (gw - 16) / 3
        svg.append(f'<rect x="{x:.1f}" y="{H-B-h:.1f}" width="{(gw-16)/3-2:.1f}" height="{h:.1f}" fill="{colors[c]}"/>')
    svg.append(f'<text x="{x0+gw/2:.1f}" y="{H-B+14}" text-anchor="middle">MTU {m}</text><text x="{x0+gw/2:.1f}" y="{H-B+27}" text-anchor="middle">touch {t}</text>')
for ci, c in enumerate(["2", "1", "0"]):
    svg.append(f'<rect x="{L+10+ci*110}" y="26" width="10" height="10" fill="{colors[c]}"/><text x="{L+24+ci*110}" y="35">{c} cop{"y" if c == "1" else "ies"}</text>')
svg.append("</svg>")
open(os.path.join(out, "ladder.svg"), "w").write("\n".join(svg))
print(f"\nresults: {out}/results.json, plot: {out}/ladder.svg")
PY
