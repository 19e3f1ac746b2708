#!/usr/bin/env bash
# Bounded fuzz run of every cargo-fuzz target in fuzz/ (CI-safe: no input,
# bounded time). Installs the nightly toolchain and cargo-fuzz if missing,
# builds the targets, runs each for FUZZ_SECONDS (default 60) starting from
# the committed seeds in fuzz/corpus/<target>/ (never written to: new inputs
# go to a temporary corpus), and fails if any target crashes, leaks or
# times out. Prints per target: runs executed, coverage/features, corpus size.
#
#   FUZZ_SECONDS=300 scripts/fuzz.sh            # longer
#   FUZZ_TARGETS="pcap_input" scripts/fuzz.sh   # some targets only
#   FUZZ_JOBS=1 scripts/fuzz.sh                 # one target at a time
#
# Targets run FUZZ_JOBS at a time (default: 2, this machine's cores), so the
# default wall time is about 2 x 60 s of fuzzing plus the build (about
# 4 minutes cold on 2 cores, seconds when fuzz/target is warm).
# A crash leaves its input in fuzz/artifacts/<target>/; reproduce with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_JOBS=${FUZZ_JOBS:-2}
TARGETS=${FUZZ_TARGETS:-"rx_writeback stack_ingest pcap_input zc_engine"}

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz: installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

echo "fuzz: building targets"
cargo +nightly fuzz build

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# run TARGET: fuzzes one target, its log in $WORK/TARGET.log.
run() {
    local t=$1
    mkdir -p "$WORK/$t" "fuzz/artifacts/$t"
    # -timeout: one input taking over 10 s is a hang; -rss_limit_mb: a
    # runaway allocation is a failure too. The wall-clock guard is a margin
    # over max_total_time for the last input and the final merge.
    local rc=0
    timeout $((FUZZ_SECONDS + 120)) cargo +nightly fuzz run "$t" "$WORK/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" \
        >"$WORK/$t.log" 2>&1 || rc=$?
    echo "$rc" >"$WORK/$t.rc"
}

pids=()
for t in $TARGETS; do
    run "$t" &
    pids+=($!)
    if [ "${#pids[@]}" -ge "$FUZZ_JOBS" ]; then
        wait "${pids[0]}"
        pids=("${pids[@]:1}")
    fi
done
for p in "${pids[@]}"; do wait "$p"; done

fail=0
printf '%-14s %-6s %12s %8s %8s %8s\n' target result runs cov ft corpus
for t in $TARGETS; do
    log=$WORK/$t.log
    rc=$(cat "$WORK/$t.rc")
    runs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' || true)
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    cov=$(echo "$last" | grep -oE 'cov: [0-9]+' | grep -oE '[0-9]+' || true)
    ft=$(echo "$last" | grep -oE 'ft: [0-9]+' | grep -oE '[0-9]+' || true)
    corpus=$(find "$WORK/$t" "fuzz/corpus/$t" -type f | wc -l)
    if [ "$rc" = 0 ]; then result=ok; else result=FAIL; fail=1; fi
    printf '%-14s %-6s %12s %8s %8s %8s\n' "$t" "$result" "${runs:-?}" "${cov:-?}" "${ft:-?}" "$corpus"
    if [ "$rc" != 0 ]; then
        echo "---- $t failed (exit $rc); last lines of its log:"
        tail -n 60 "$log"
        echo "---- artifacts:"; ls -l "fuzz/artifacts/$t" || true
    fi
done
if [ "$fail" != 0 ]; then
    echo "fuzz: FAILED"
    exit 1
fi
echo "fuzz: all targets ran ${FUZZ_SECONDS}s without a crash"
