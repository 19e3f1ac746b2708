# Sourced by the root scripts under scripts/ once they are at the
# repository root (e2e-tap.sh, e2e-xdp.sh, bench-tcp.sh, bench-xdp.sh,
# bench-xdp-mtu.sh).

# need_root [WHAT]: unless root (and WHAT exists, e.g. /dev/net/tun),
# says why and exits 77, the skip status. .ci/run runs the scripts under
# `set -e`, so there a skip fails the run.
need_root() {
    if [ "$(id -u)" -ne 0 ] || { [ -n "${1:-}" ] && [ ! -e "$1" ]; }; then
        echo "skip: needs root${1:+ and $1}" >&2
        exit 77
    fi
}

# install_missing 'COMMAND=PACKAGE [PACKAGE...]' ...: installs from
# Debian, non-interactively, the packages of every command not on PATH; a
# failure fails the script.
install_missing() {
    local need=() pair
    for pair in "$@"; do
        command -v "${pair%%=*}" >/dev/null || need+=(${pair#*=})
    done
    [ ${#need[@]} -gt 0 ] || return 0
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q "${need[@]}" >/dev/null
}

# build_rxsink: the release rxsink from Cargo.lock as it is; sets BIN.
build_rxsink() {
    cargo build --release -p rxsink --locked -q
    BIN=$PWD/target/release/rxsink
}
