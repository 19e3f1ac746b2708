# Sourced by the AF_XDP scripts (e2e-xdp.sh, bench-xdp.sh, bench-xdp-mtu.sh).
#
# xdp_veth_up: a veth pair with one queue each way, so every frame the peer
# sends lands on queue 0. $VA stays here (IPv6 off, up, no address: rxsink
# takes it over AF_XDP); $VB goes into the new namespace $NS with
# $PEER/24. The peer computes every checksum and segments in software, so
# what reaches the AF_XDP socket are complete wire frames (it sees no
# offload metadata), and the kernel receiver gets the same wire. Needs NS,
# VA, VB and PEER; sets MAC ($VA's address).
#
# xdp_veth_down: for the caller's EXIT trap; removes $VA (which takes $VB
# with it) and $NS, whichever exist.
nsx() { ip netns exec "$NS" "$@"; }
xdp_veth_up() {
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    nsx sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip link add "$VA" numtxqueues 1 numrxqueues 1 type veth peer name "$VB" numtxqueues 1 numrxqueues 1
    sysctl -qw "net.ipv6.conf.$VA.disable_ipv6=1"
    ip link set "$VB" netns "$NS"
    ip -n "$NS" addr add "$PEER/24" dev "$VB"
    nsx ethtool -K "$VB" tx off tso off gso off >/dev/null 2>&1 || true
    ip link set "$VA" up
    ip -n "$NS" link set "$VB" up
    MAC=$(cat "/sys/class/net/$VA/address")
}
xdp_veth_down() {
    ip link del "$VA" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
}
