#!/usr/bin/env bash
# Start (or confirm) a single-node local SLURM cluster with accounting, all state under one directory.
#
#   slurm/local-cluster/start.sh            # state in ${ASTROM3_SLURM_DIR:-/tmp/astrom3-slurm}
#   eval "$(slurm/local-cluster/start.sh)"  # or: . /tmp/astrom3-slurm/env.sh
#   slurm/local-cluster/start.sh --hosts 2  # multi-host mode (delegates to start-multi.sh)
#
# Idempotent: daemons already running (recorded PID alive + scontrol ping) are left alone; dead ones are
# restarted. Prints `export ...` lines on stdout; progress and errors go to stderr.
# Env: ASTROM3_SLURM_DIR, ASTROM3_SLURM_PORT_BASE (default 14817: slurmctld, +1 slurmd, +2 slurmdbd,
# +3 MariaDB), ASTROM3_SLURM_CPUS, ASTROM3_SLURM_MEM_MB, ASTROM3_SLURM_START_TIMEOUT (s, default 60),
# ASTROM3_SLURM_CLUSTER (default astrom3).
set -euo pipefail

if [ "${1:-}" = "--hosts" ]; then
    shift
    exec "$(dirname "${BASH_SOURCE[0]}")/start-multi.sh" --hosts "$@"
fi
if [ $# -gt 0 ]; then
    echo "usage: $0 [--hosts N]" >&2
    exit 2
fi

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lc_init "${ASTROM3_SLURM_DIR:-/tmp/astrom3-slurm}" "${ASTROM3_SLURM_PORT_BASE:-14817}" astrom3
NODE="$LC_HOST"

# Fast path: everything recorded as running and the controller answers.
if lc_alive munged munged && lc_alive mariadbd mariadbd && lc_alive slurmdbd slurmdbd &&
    lc_alive slurmctld slurmctld && lc_alive "slurmd-$NODE" slurmd && lc_ctld_ok 2>/dev/null &&
    lc_nodes_ready "$NODE"; then
    lc_print_env "export ASTROM3_SLURM_NODES=$NODE"
    exit 0
fi

lc_install_packages
lc_lock
lc_mkdirs
lc_node_resources
lc_write_common_configs
lc_render "$LC_TEMPLATES/slurm.conf.in" "$LC_CONF" \
    "CTLD_HOST=$LC_HOST" "CTLD_ADDR=127.0.0.1" \
    "SLURMD_SPOOL=$LC_STATE/spool/slurmd-%n" "SLURMD_PIDFILE=$LC_STATE/run/slurmd-%n.pid" \
    "SLURMD_LOG=$LC_STATE/log/slurmd-%n.log" "DEF_MEM_PER_CPU=$LC_DEF_MEM_PER_CPU" \
    "NODES=NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$LC_CPUS RealMemory=$LC_MEM_MB State=UNKNOWN"

t0="$EPOCHREALTIME"
lc_precheck_ports
if ! lc_alive "slurmd-$NODE" slurmd; then lc_check_port "$LC_SLURMD_PORT" slurmd; fi
lc_timed munged lc_start_munge
lc_timed mariadb lc_start_mariadb
lc_timed slurmdbd lc_start_slurmdbd
lc_timed slurmctld lc_start_slurmctld
lc_timed slurmd lc_start_slurmd "$NODE"
lc_timed node-idle lc_wait_nodes "$NODE"
lc_write_env "export ASTROM3_SLURM_NODES=$NODE"
lc_log "cluster '$LC_CLUSTER' up in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')s ($LC_TIMINGS ):" \
    "node $NODE ($LC_CPUS CPUs, ${LC_MEM_MB} MB), partition debug; state $LC_STATE"
lc_print_env "export ASTROM3_SLURM_NODES=$NODE"
