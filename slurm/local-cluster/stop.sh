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
lc_stop_main "" "$@"
