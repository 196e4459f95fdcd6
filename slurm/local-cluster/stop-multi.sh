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
_teardown() {
    lc_teardown_network
    rm -f "$LC_STATE/hosts"
}
lc_stop_main _teardown "$@"
