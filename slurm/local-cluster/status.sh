#!/usr/bin/env bash
# Show which daemons of the local SLURM cluster run, and sinfo. Exit 0 when all are up and the
# controller answers, 1 otherwise.
#   slurm/local-cluster/status.sh            # single-node cluster (start.sh)
#   slurm/local-cluster/status.sh --multi    # multi-host cluster (start-multi.sh)
set -uo pipefail
HERE="$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=lib.sh
. "$HERE/lib.sh"
if [ "${1:-}" = --multi ]; then
    # shellcheck source=lib-multi.sh
    . "$HERE/lib-multi.sh"
    lc_init_multi
else
    lc_init "${ASTROM3_SLURM_DIR:-/tmp/astrom3-slurm}" "${ASTROM3_SLURM_PORT_BASE:-14817}" astrom3
fi
rc=0
echo "state dir: $LC_STATE   SLURM_CONF=$LC_CONF"
for f in "$LC_STATE"/pids/*.pid; do
    [ -f "$f" ] || { echo "no daemons recorded"; exit 1; }
    name="$(basename "$f" .pid)"
    comm="${name%%-*}"
    if lc_alive "$name" "$comm"; then
        printf '  %-22s running (pid %s)\n' "$name" "$(cat "$f")"
    else
        printf '  %-22s NOT running\n' "$name"
        rc=1
    fi
done
if lc_ctld_ok; then
    timeout 10 sinfo -N -l
else
    echo "slurmctld does not answer"
    rc=1
fi
exit $rc
