#!/usr/bin/env bash
# Stop the local SLURM cluster started by start.sh: cancels its jobs, then stops every daemon by the PID
# recorded at launch (never by process name) and waits for each to exit. Data (MariaDB, munge key,
# configs, logs) stays in the state directory; pass --purge to delete the directory as well.
#   slurm/local-cluster/stop.sh [--purge]
# A multi-host cluster (start-multi.sh) is stopped with stop-multi.sh.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lc_init "${ASTROM3_SLURM_DIR:-/tmp/astrom3-slurm}" "${ASTROM3_SLURM_PORT_BASE:-14817}" astrom3
purge=0
case "${1:-}" in
    --purge) purge=1 ;;
    "") ;;
    *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
esac
if [ ! -d "$LC_STATE" ]; then
    lc_log "nothing to stop: $LC_STATE does not exist"
    exit 0
fi
lc_lock
lc_stop_slurm_and_services
if [ $purge -eq 1 ]; then
    rm -rf "$LC_STATE"
    lc_log "removed $LC_STATE"
fi
