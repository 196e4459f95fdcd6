# shellcheck shell=bash
# Multi-host mode: N fake hosts on this machine, each a network namespace joined to a bridge by a veth pair,
# running its own slurmd with its own hostname (UTS namespace). Sourced after lib.sh.
#
#   root namespace:  bridge <P>br0 = <SUBNET>.1/24, slurmctld, slurmdbd, MariaDB, munged
#   namespace <P>-<node_i>: interface <P>0 = <SUBNET>.(10+i)/24, lo, slurmd -N <node_i>
#
# Only addresses private to this machine are used and only this machine's namespaces are contacted.
# Every namespace's interface has the same name (<P>0) so GLOO_SOCKET_IFNAME=<P>0 works on every fake host.
# Everything created is listed in $LC_STATE/net.list and removed by stop-multi.sh.

# lc_init_multi: state dir, ports and network names from ASTROM3_SLURM_MULTI_* (separate from the
# single-node cluster so that both can run at once).
lc_init_multi() {
    lc_init "${ASTROM3_SLURM_MULTI_DIR:-/tmp/astrom3-slurm-multi}" "${ASTROM3_SLURM_MULTI_PORT_BASE:-14827}" \
        "${ASTROM3_SLURM_MULTI_CLUSTER:-astrom3multi}"
    LC_NET_PREFIX="${ASTROM3_SLURM_NET_PREFIX:-a3s}"
    LC_SUBNET="${ASTROM3_SLURM_SUBNET:-10.213.7}"
    LC_BRIDGE="${LC_NET_PREFIX}br0"
    LC_IFNAME="${LC_NET_PREFIX}0"
    LC_BRIDGE_ADDR="$LC_SUBNET.1"
}

# lc_multi_nodes N: LC_NODES (names), LC_NODE_ADDRS, LC_NODE_NS.
lc_multi_nodes() {
    local n="$1" i
    LC_NODES=()
    LC_NODE_ADDRS=()
    LC_NODE_NS=()
    for ((i = 1; i <= n; i++)); do
        LC_NODES+=("${LC_NET_PREFIX}-node$i")
        LC_NODE_ADDRS+=("$LC_SUBNET.$((10 + i))")
        LC_NODE_NS+=("${LC_NET_PREFIX}-node$i")
    done
}

lc_net_record() { grep -qxF "$1" "$LC_STATE/net.list" 2>/dev/null || echo "$1" >>"$LC_STATE/net.list"; }
lc_net_recorded() { grep -qxF "$1" "$LC_STATE/net.list" 2>/dev/null; }
lc_netns_exists() { [ -e "/var/run/netns/$1" ]; }
lc_link_exists() { ip link show dev "$1" >/dev/null 2>&1; }

lc_setup_bridge() {
    if lc_link_exists "$LC_BRIDGE"; then
        lc_net_recorded "link $LC_BRIDGE" ||
            lc_die "network link $LC_BRIDGE exists but was not created by this cluster ($LC_STATE); set ASTROM3_SLURM_NET_PREFIX"
    else
        lc_net_record "link $LC_BRIDGE"
        ip link add "$LC_BRIDGE" type bridge
        ip addr add "$LC_BRIDGE_ADDR/24" dev "$LC_BRIDGE"
    fi
    ip link set "$LC_BRIDGE" up
}

# lc_setup_host NS ADDR INDEX: namespace + veth pair (host side <P>v<i> on the bridge, inside <P>0).
lc_setup_host() {
    local ns="$1" addr="$2" i="$3" veth="${LC_NET_PREFIX}v$3"
    if lc_netns_exists "$ns"; then
        lc_net_recorded "netns $ns" ||
            lc_die "network namespace $ns exists but was not created by this cluster ($LC_STATE); set ASTROM3_SLURM_NET_PREFIX"
    else
        lc_net_record "netns $ns"
        ip netns add "$ns"
    fi
    if ! lc_link_exists "$veth"; then
        lc_net_record "link $veth"
        ip link add "$veth" type veth peer name "$LC_IFNAME" netns "$ns"
        ip -n "$ns" addr add "$addr/24" dev "$LC_IFNAME"
    fi
    ip link set "$veth" master "$LC_BRIDGE"
    ip link set "$veth" up
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "$LC_IFNAME" up
    ip -n "$ns" route replace default via "$LC_BRIDGE_ADDR" dev "$LC_IFNAME" 2>/dev/null || true
}

lc_teardown_network() {
    [ -f "$LC_STATE/net.list" ] || return 0
    local kind name
    # Namespaces first (their veth ends go with them), then the remaining links.
    while read -r kind name; do
        [ "$kind" = netns ] || continue
        if lc_netns_exists "$name"; then ip netns del "$name" && lc_log "removed netns $name"; fi
    done <"$LC_STATE/net.list"
    while read -r kind name; do
        [ "$kind" = link ] || continue
        if lc_link_exists "$name"; then ip link del "$name" && lc_log "removed link $name"; fi
    done <"$LC_STATE/net.list"
    rm -f "$LC_STATE/net.list"
}
