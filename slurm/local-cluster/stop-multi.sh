#!/usr/bin/env bash
# Stop the multi-host local SLURM cluster (start-multi.sh): cancel its jobs, stop its daemons by recorded PID,
# then delete the network namespaces and links it created (listed in $STATE/net.list).
#   slurm/local-cluster/stop-multi.sh [--purge]
set -euo pipefail
HERE="$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=lib.sh
. "$HERE/lib.sh"
# shellcheck source=lib-multi.sh
. "$HERE/lib-multi.sh"
lc_init_multi
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
lc_teardown_network
rm -f "$LC_STATE/hosts"
if [ $purge -eq 1 ]; then
    rm -rf "$LC_STATE"
    lc_log "removed $LC_STATE"
fi
