#!/usr/bin/env bash
# Start (or confirm) a local SLURM cluster of N fake hosts on this machine (default N=2):
# one network namespace + UTS namespace per host, joined by a bridge, each running its own slurmd; one
# slurmctld (+ slurmdbd, MariaDB, munged) in the root namespace. See README.md, "Multi-host mode".
#
#   slurm/local-cluster/start-multi.sh [--hosts N]     (also: start.sh --hosts N)
#   eval "$(slurm/local-cluster/start-multi.sh)"       # or: . /tmp/astrom3-slurm-multi/env.sh
#
# Env: ASTROM3_SLURM_MULTI_DIR (default /tmp/astrom3-slurm-multi), ASTROM3_SLURM_MULTI_PORT_BASE (14827),
# ASTROM3_SLURM_NET_PREFIX (a3s: bridge a3sbr0, namespaces a3s-node<i>, interface a3s0 in each),
# ASTROM3_SLURM_SUBNET (10.213.7: bridge .1, hosts .11, .12, ...), ASTROM3_SLURM_CPUS, ASTROM3_SLURM_MEM_MB
# (per fake host), ASTROM3_SLURM_START_TIMEOUT. Needs root (ip netns, veth, bridge).
set -euo pipefail
HOSTS=2
while [ $# -gt 0 ]; do
    case "$1" in
        --hosts) HOSTS="$2"; shift 2 ;;
        --hosts=*) HOSTS="${1#*=}"; shift ;;
        *) echo "usage: $0 [--hosts N]" >&2; exit 2 ;;
    esac
done
case "$HOSTS" in '' | *[!0-9]*) echo "--hosts needs a number >= 1" >&2; exit 2 ;; esac
[ "$HOSTS" -ge 1 ] && [ "$HOSTS" -le 200 ] || { echo "--hosts must be in 1..200" >&2; exit 2; }

HERE="$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=lib.sh
. "$HERE/lib.sh"
# shellcheck source=lib-multi.sh
. "$HERE/lib-multi.sh"
lc_init_multi
lc_multi_nodes "$HOSTS"
NODELIST="$(IFS=,; echo "${LC_NODES[*]}")"
ADDRLIST="$(IFS=,; echo "${LC_NODE_ADDRS[*]}")"
EXTRA_ENV=("export ASTROM3_SLURM_NODES=$NODELIST" "export ASTROM3_SLURM_NODE_ADDRS=$ADDRLIST"
    "export ASTROM3_SLURM_IFNAME=$LC_IFNAME" "export ASTROM3_SLURM_CTLD_ADDR=$LC_BRIDGE_ADDR")

all_slurmd_alive() {
    local node
    for node in "${LC_NODES[@]}"; do lc_alive "slurmd-$node" slurmd || return 1; done
}

# Fast path: same number of hosts, everything recorded as running, the controller answers.
if [ "$(cat "$LC_STATE/hosts" 2>/dev/null)" = "$HOSTS" ] && lc_alive munged munged && lc_alive mariadbd mariadbd &&
    lc_alive slurmdbd slurmdbd && lc_alive slurmctld slurmctld && all_slurmd_alive && lc_ctld_ok 2>/dev/null &&
    lc_nodes_ready "${LC_NODES[@]}"; then
    lc_print_env "${EXTRA_ENV[@]}"
    exit 0
fi

[ "$(id -u)" = 0 ] || { lc_log "ERROR: multi-host mode needs root (network namespaces)"; exit 1; }
lc_install_packages
lc_lock
lc_mkdirs
if [ -f "$LC_STATE/hosts" ] && [ "$(cat "$LC_STATE/hosts")" != "$HOSTS" ]; then
    lc_log "host count changed ($(cat "$LC_STATE/hosts") -> $HOSTS): restarting the cluster"
    lc_stop_slurm_and_services
    lc_teardown_network
fi
echo "$HOSTS" >"$LC_STATE/hosts"
lc_node_resources
lc_write_common_configs
nodes_conf=""
for i in "${!LC_NODES[@]}"; do
    nodes_conf+="NodeName=${LC_NODES[$i]} NodeAddr=${LC_NODE_ADDRS[$i]} CPUs=$LC_CPUS RealMemory=$LC_MEM_MB State=UNKNOWN"$'\n'
done
lc_render "$LC_TEMPLATES/slurm.conf.in" "$LC_CONF" \
    "CTLD_HOST=$LC_HOST" "CTLD_ADDR=$LC_BRIDGE_ADDR" \
    "SLURMD_SPOOL=$LC_STATE/spool/slurmd-%n" "SLURMD_PIDFILE=$LC_STATE/run/slurmd-%n.pid" \
    "SLURMD_LOG=$LC_STATE/log/slurmd-%n.log" "DEF_MEM_PER_CPU=$LC_DEF_MEM_PER_CPU" \
    "NODES=$nodes_conf"

t0="$EPOCHREALTIME"
network() {
    lc_setup_bridge
    local i
    for i in "${!LC_NODES[@]}"; do lc_setup_host "${LC_NODE_NS[$i]}" "${LC_NODE_ADDRS[$i]}" "$((i + 1))"; done
}
slurmds() {
    local i
    for i in "${!LC_NODES[@]}"; do lc_start_slurmd "${LC_NODES[$i]}" "${LC_NODE_NS[$i]}"; done
}
lc_timed network network
lc_precheck_ports
lc_timed munged lc_start_munge
lc_timed mariadb lc_start_mariadb
lc_timed slurmdbd lc_start_slurmdbd
lc_timed slurmctld lc_start_slurmctld
lc_timed slurmd slurmds
lc_timed nodes-idle lc_wait_nodes "${LC_NODES[@]}"
lc_write_env "${EXTRA_ENV[@]}"
lc_log "cluster '$LC_CLUSTER' up in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')s ($LC_TIMINGS ):" \
    "$HOSTS fake hosts $NODELIST ($ADDRLIST, $LC_CPUS CPUs, ${LC_MEM_MB} MB each), controller $LC_HOST($LC_BRIDGE_ADDR); state $LC_STATE"
lc_print_env "${EXTRA_ENV[@]}"
