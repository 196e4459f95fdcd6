# shellcheck shell=bash
# Shared functions for the local SLURM cluster scripts (sourced, not executed).
#
# Everything lives under one state directory ($LC_STATE):
#   etc/    slurm.conf, slurmdbd.conf, my.cnf, munge.key, db.pass
#   run/    munge socket, mysqld socket, daemon pid files written by the daemons
#   pids/   PIDs recorded by these scripts at launch (the source of truth for stop.sh)
#   log/    one log per daemon
#   spool/  slurmctld state, slurmd spool dirs
#   mysql/  MariaDB datadir
#   env.sh  `source` it to talk to the cluster (SLURM_CONF, ...)

LC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LC_TEMPLATES="$LC_DIR/templates"
LC_PACKAGES=(slurm-wlm slurmdbd munge mariadb-server mariadb-client)

lc_log() { echo "[local-cluster] $*" >&2; }

# lc_timed LABEL CMD...: run CMD, append "LABEL=1.23s" to LC_TIMINGS (printed in the final summary).
LC_TIMINGS=""
lc_timed() {
    local label="$1" t0="$EPOCHREALTIME"
    shift
    "$@"
    LC_TIMINGS="$LC_TIMINGS $label=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.2fs", b - a}')"
}

# lc_init STATE_DIR PORT_BASE CLUSTER_NAME
lc_init() {
    LC_STATE="$1"
    local base="$2"
    LC_CLUSTER="${ASTROM3_SLURM_CLUSTER:-$3}"
    LC_CTLD_PORT=$((base))
    LC_SLURMD_PORT=$((base + 1))
    LC_DBD_PORT=$((base + 2))
    LC_DB_PORT=$((base + 3))
    LC_TIMEOUT="${ASTROM3_SLURM_START_TIMEOUT:-60}"
    LC_CRED_EXPIRE="${ASTROM3_SLURM_CRED_EXPIRE:-10}"
    LC_HOST="$(hostname -s)"
    LC_CONF="$LC_STATE/etc/slurm.conf"
    LC_MUNGE_SOCKET="$LC_STATE/run/munge/munge.socket"
    LC_MYCNF="$LC_STATE/etc/my.cnf"
    export SLURM_CONF="$LC_CONF"
    # Daemons and clients live in /usr/sbin and /usr/bin; keep them reachable even from a minimal PATH.
    case ":$PATH:" in *":/usr/sbin:"*) ;; *) PATH="$PATH:/usr/sbin:/sbin" ;; esac
    export PATH
}

lc_mkdirs() {
    mkdir -p "$LC_STATE"/{etc,run,pids,log,spool/slurmctld}
    mkdir -p "$LC_STATE/run/munge" "$LC_STATE/spool/munge"
    chmod 0755 "$LC_STATE" "$LC_STATE/run" "$LC_STATE/run/munge"
    chmod 0700 "$LC_STATE/spool/munge"
}

# Serialise concurrent start/stop calls on the same state directory (fd 9; daemons are launched with 9>&-).
lc_lock() {
    mkdir -p "$LC_STATE"
    exec 9>"$LC_STATE/.lock"
    if ! flock -w 300 9; then
        lc_log "ERROR: could not lock $LC_STATE/.lock within 300 s"
        exit 1
    fi
}

lc_install_packages() {
    local missing=() p
    for p in "${LC_PACKAGES[@]}"; do
        [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        lc_log "ERROR: missing packages (${missing[*]}) and not root: apt-get install ${missing[*]}"
        exit 1
    fi
    lc_log "installing ${missing[*]} (apt-get) ..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Substitute @NAME@ placeholders; values come from the LC_* variables and extra NAME=VALUE args.
lc_render() {
    local template="$1" out="$2"
    shift 2
    local -a sed_args=()
    local kv key val
    for kv in "STATE=$LC_STATE" "CLUSTER=$LC_CLUSTER" "CTLD_PORT=$LC_CTLD_PORT" "SLURMD_PORT=$LC_SLURMD_PORT" \
        "DBD_PORT=$LC_DBD_PORT" "DB_PORT=$LC_DB_PORT" "MUNGE_SOCKET=$LC_MUNGE_SOCKET" \
        "CRED_EXPIRE=$LC_CRED_EXPIRE" "$@"; do
        key="${kv%%=*}"
        val="${kv#*=}"
        val="${val//\\/\\\\}"
        val="${val//|/\\|}"
        val="${val//&/\\&}"
        val="${val//$'\n'/\\n}"
        sed_args+=(-e "s|@${key}@|${val}|g")
    done
    sed "${sed_args[@]}" "$template" >"$out.tmp"
    if grep -q '@[A-Z_]*@' "$out.tmp"; then
        lc_log "ERROR: unrendered placeholder in $out: $(grep -o '@[A-Z_]*@' "$out.tmp" | sort -u | tr '\n' ' ')"
        exit 1
    fi
    mv "$out.tmp" "$out"
}

# Node resources: machine CPUs and a bit below MemTotal, overridable.
lc_node_resources() {
    LC_CPUS="${ASTROM3_SLURM_CPUS:-$(nproc)}"
    local mem_kb
    mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    LC_MEM_MB="${ASTROM3_SLURM_MEM_MB:-$((mem_kb / 1024 * 95 / 100))}"
    LC_DEF_MEM_PER_CPU=$((LC_MEM_MB / LC_CPUS))
    [ "$LC_DEF_MEM_PER_CPU" -gt 1024 ] && LC_DEF_MEM_PER_CPU=1024
    return 0
}

lc_write_common_configs() {
    if [ ! -s "$LC_STATE/etc/db.pass" ]; then
        (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$LC_STATE/etc/db.pass")
    fi
    if [ ! -s "$LC_STATE/etc/munge.key" ]; then
        (umask 077 && dd if=/dev/urandom of="$LC_STATE/etc/munge.key" bs=1024 count=1 status=none)
    fi
    chmod 0600 "$LC_STATE/etc/munge.key" "$LC_STATE/etc/db.pass"
    lc_render "$LC_TEMPLATES/slurmdbd.conf.in" "$LC_STATE/etc/slurmdbd.conf" "DB_PASS=$(cat "$LC_STATE/etc/db.pass")"
    chmod 0600 "$LC_STATE/etc/slurmdbd.conf"
    lc_render "$LC_TEMPLATES/my.cnf.in" "$LC_MYCNF"
}

# ---------------------------------------------------------------- processes
lc_pidfile() { echo "$LC_STATE/pids/$1.pid"; }

# lc_alive NAME COMM: the recorded PID exists, is not a zombie and runs the expected program.
lc_alive() {
    local f pid comm state
    f="$(lc_pidfile "$1")"
    [ -s "$f" ] || return 1
    pid="$(cat "$f")"
    [ -r "/proc/$pid/comm" ] || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
    [ "$comm" = "$2" ] || return 1
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)"
    [ "$state" != Z ] && [ "$state" != X ]
}

# lc_gone NAME COMM: the daemon recorded as NAME has exited. Right after lc_launch its PID may still be the forked
# shell or setsid on their way to exec COMM (on a loaded machine for a while): a COMM check there read a starting
# slurmctld as exited and failed the cluster's start. A PID that lives under another name counts once it has
# lived a few seconds (a reused PID), not before.
lc_gone() {
    local f pid state age
    lc_alive "$1" "$2" && return 1
    f="$(lc_pidfile "$1")"
    [ -s "$f" ] || return 0
    pid="$(cat "$f")"
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" || return 0
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ] || return 0
    age="$(ps -o etimes= -p "$pid" 2>/dev/null | tr -d ' ')"
    [ -n "$age" ] && [ "$age" -gt 10 ]
}

# lc_launch NAME LOGFILE CMD...: own session (setsid, no fork: $! is the daemon), stdio to the log,
# the lock fd closed, so pytest timeouts, process-group kills and pipes do not reach the daemon.
lc_launch() {
    local name="$1" log="$2"
    shift 2
    echo "=== $(date '+%F %T') start: $*" >>"$log"
    setsid "$@" </dev/null >>"$log" 2>&1 9>&- &
    echo $! >"$(lc_pidfile "$name")"
    LC_LAUNCHED=1
}

# lc_wait NAME COMM DESC CHECK_CMD...: poll until CHECK_CMD succeeds; die with the logs when LC_TIMEOUT
# expires or when the daemon recorded as NAME (running COMM) has exited.
lc_wait() {
    local name="$1" comm="$2" desc="$3"
    shift 3
    local deadline=$((SECONDS + LC_TIMEOUT)) delay=0.05
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            lc_die "timed out after ${LC_TIMEOUT}s waiting for $desc"
        fi
        if lc_gone "$name" "$comm"; then
            lc_die "$name exited while waiting for $desc"
        fi
        sleep "$delay"
        delay=0.2
    done
}

# (No `cmd | grep -q` anywhere: under pipefail the writer's SIGPIPE turns a match into a failure.)
lc_port_free() { [ -z "$(ss -Hltn "sport = :$1")" ]; }

lc_check_port() {
    if ! lc_port_free "$1"; then
        lc_die "port $1 (needed by $2) is already in use: $(ss -Hltnp "sport = :$1" | tr -s ' ') -- set ASTROM3_SLURM_PORT_BASE to another base"
    fi
}

# Fail early (before launching anything) when a port of a daemon that must be started is taken.
lc_precheck_ports() {
    lc_alive mariadbd mariadbd || lc_check_port "$LC_DB_PORT" mariadbd
    lc_alive slurmdbd slurmdbd || lc_check_port "$LC_DBD_PORT" slurmdbd
    lc_alive slurmctld slurmctld || lc_check_port "$LC_CTLD_PORT" slurmctld
}

lc_log_tails() {
    local f
    for f in "$LC_STATE"/log/*.log "$LC_STATE"/log/*.out; do
        [ -f "$f" ] || continue
        [ "${f##*/}" = mariadb-install.log ] && continue
        echo "----- tail of $f -----" >&2
        tail -n 25 "$f" >&2
    done
}

lc_die() {
    lc_log "ERROR: $*"
    lc_log_tails
    exit 1
}

# ---------------------------------------------------------------- daemons
lc_munge_ok() { munge -n -S "$LC_MUNGE_SOCKET" | unmunge -S "$LC_MUNGE_SOCKET"; }

lc_start_munge() {
    lc_alive munged munged && return 0
    rm -f "$LC_MUNGE_SOCKET" "$LC_MUNGE_SOCKET.lock"
    lc_launch munged "$LC_STATE/log/munged.out" munged -F --force \
        --socket="$LC_MUNGE_SOCKET" --key-file="$LC_STATE/etc/munge.key" \
        --pid-file="$LC_STATE/run/munge/munged.pid" --log-file="$LC_STATE/log/munged.log" \
        --seed-file="$LC_STATE/spool/munge/munged.seed"
    lc_wait munged munged "munged ($LC_MUNGE_SOCKET)" lc_munge_ok
}

lc_db_ping() { mariadb-admin --defaults-file="$LC_MYCNF" -u root ping; }
lc_sql() { mariadb --defaults-file="$LC_MYCNF" -u root -e "$1"; }

lc_start_mariadb() {
    lc_alive mariadbd mariadbd && return 0
    if [ ! -d "$LC_STATE/mysql/mysql" ]; then
        rm -rf "$LC_STATE/mysql"
        lc_log "initialising MariaDB datadir $LC_STATE/mysql"
        mariadb-install-db --defaults-file="$LC_MYCNF" --auth-root-authentication-method=socket \
            --skip-test-db >>"$LC_STATE/log/mariadb-install.log" 2>&1 ||
            lc_die "mariadb-install-db failed (see $LC_STATE/log/mariadb-install.log)"
    fi
    lc_check_port "$LC_DB_PORT" mariadbd
    rm -f "$LC_STATE/run/mysqld.sock"
    lc_launch mariadbd "$LC_STATE/log/mariadb.out" mariadbd --defaults-file="$LC_MYCNF"
    lc_wait mariadbd mariadbd "MariaDB on 127.0.0.1:$LC_DB_PORT" lc_db_ping
    if [ ! -f "$LC_STATE/mysql/.astrom3-bootstrapped" ]; then
        local pass
        pass="$(cat "$LC_STATE/etc/db.pass")"
        lc_sql "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
            CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
            CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pass';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
            FLUSH PRIVILEGES;" || lc_die "could not create the slurm_acct_db user in MariaDB"
        touch "$LC_STATE/mysql/.astrom3-bootstrapped"
    fi
}

lc_dbd_ok() { sacctmgr -n -P list cluster format=cluster; }
lc_cluster_registered() {
    local clusters
    clusters="$(sacctmgr -n -P list cluster format=cluster 2>/dev/null)" || return 1
    [[ $'\n'"$clusters"$'\n' == *$'\n'"$LC_CLUSTER"$'\n'* ]]
}

lc_start_slurmdbd() {
    if ! lc_alive slurmdbd slurmdbd; then
        lc_check_port "$LC_DBD_PORT" slurmdbd
        lc_launch slurmdbd "$LC_STATE/log/slurmdbd.out" slurmdbd -D  # reads slurmdbd.conf next to $SLURM_CONF
    fi
    lc_wait slurmdbd slurmdbd "slurmdbd on 127.0.0.1:$LC_DBD_PORT" lc_dbd_ok
    if ! lc_cluster_registered; then
        sacctmgr -i add cluster "$LC_CLUSTER" >/dev/null 2>&1 || lc_cluster_registered ||
            lc_die "sacctmgr add cluster $LC_CLUSTER failed"
    fi
}

lc_ctld_ok() {
    local out
    out="$(scontrol ping 2>/dev/null)" || return 1
    [[ "$out" == *"is UP"* ]]
}

lc_start_slurmctld() {
    if ! lc_alive slurmctld slurmctld; then
        lc_check_port "$LC_CTLD_PORT" slurmctld
        lc_launch slurmctld "$LC_STATE/log/slurmctld.out" slurmctld -D -f "$LC_CONF"
    fi
    lc_wait slurmctld slurmctld "slurmctld on port $LC_CTLD_PORT" lc_ctld_ok
}

# lc_start_slurmd NODE_NAME [NETNS]: in the root namespace or as a fake host in NETNS with its own hostname.
lc_start_slurmd() {
    local node="$1" ns="${2:-}"
    lc_alive "slurmd-$node" slurmd && return 0
    mkdir -p "$LC_STATE/spool/slurmd-$node"
    if [ -z "$ns" ]; then
        lc_check_port "$LC_SLURMD_PORT" slurmd
        lc_launch "slurmd-$node" "$LC_STATE/log/slurmd-$node.out" slurmd -D -N "$node" -f "$LC_CONF"
    else
        # nsenter --net (not `ip netns exec`, which remounts /sys and breaks slurmd's cgroup plugin init).
        lc_launch "slurmd-$node" "$LC_STATE/log/slurmd-$node.out" \
            nsenter --net="/var/run/netns/$ns" unshare --uts \
            /bin/sh -c 'hostname "$1" && exec slurmd -D -N "$1" -f "$2"' sh "$node" "$LC_CONF"
    fi
}

# Node states that mean "registered and usable" (jobs may already run on it after a restart).
lc_nodes_ready() {
    local node st
    for node in "$@"; do
        st="$(sinfo -h -N -n "$node" -o '%T' 2>/dev/null | head -n1)"
        case "$st" in
            idle | mixed | allocated | completing) ;;
            *) return 1 ;;
        esac
    done
}

lc_wait_nodes() {
    local deadline=$((SECONDS + LC_TIMEOUT)) resumed=0 node st
    until lc_nodes_ready "$@"; do
        if [ $SECONDS -ge $deadline ]; then
            sinfo -N -l >&2 || true
            lc_die "timed out after ${LC_TIMEOUT}s waiting for node(s) $* to become idle"
        fi
        # A node left DOWN/DRAIN by an earlier unclean stop: resume it once it has registered.
        if [ $resumed -eq 0 ] && [ $((deadline - SECONDS)) -lt $((LC_TIMEOUT - 3)) ]; then
            for node in "$@"; do
                st="$(sinfo -h -N -n "$node" -o '%T' 2>/dev/null | head -n1)"
                case "$st" in
                    down | drained | draining | drain*) scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
                esac
            done
            resumed=1
        fi
        sleep 0.2
    done
}

lc_write_env() {
    {
        echo "# Source this file to use the local SLURM cluster in $LC_STATE"
        echo "export SLURM_CONF=$LC_CONF"
        echo "export ASTROM3_SLURM_DIR=$LC_STATE"
        local line
        for line in "$@"; do echo "$line"; done
    } >"$LC_STATE/env.sh.tmp"
    mv "$LC_STATE/env.sh.tmp" "$LC_STATE/env.sh"
}

# lc_print_env [EXTRA_EXPORT_LINES...]: stdout for `eval`; the comment line tells callers (the pytest
# fixture) whether this call launched any daemon ("started") or found everything up ("already running").
lc_print_env() {
    echo "export SLURM_CONF=$LC_CONF"
    echo "export ASTROM3_SLURM_DIR=$LC_STATE"
    local line
    for line in "$@"; do echo "$line"; done
    if [ "${LC_LAUNCHED:-0}" = 1 ]; then
        echo "# astrom3-local-cluster: started"
    else
        echo "# astrom3-local-cluster: already running"
    fi
}

# ---------------------------------------------------------------- stop
# lc_stop_pid NAME COMM: SIGTERM the recorded PID (only if it still runs COMM), wait, SIGKILL after a grace time.
lc_stop_pid() {
    local name="$1" comm="$2" f pid i
    f="$(lc_pidfile "$name")"
    [ -f "$f" ] || return 0
    if lc_alive "$name" "$comm"; then
        pid="$(cat "$f")"
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 150); do
            lc_alive "$name" "$comm" || break
            sleep 0.1
        done
        if lc_alive "$name" "$comm"; then
            lc_log "$name ($pid) did not exit after SIGTERM, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for i in $(seq 1 50); do
                lc_alive "$name" "$comm" || break
                sleep 0.1
            done
        fi
        lc_log "stopped $name ($pid)"
    fi
    rm -f "$f"
}

# Cancel this cluster's jobs so their slurmstepd/job processes do not outlive the daemons.
lc_cancel_all_jobs() {
    lc_alive slurmctld slurmctld || return 0
    local jobs _
    jobs="$(timeout 10 squeue -h -o '%A' 2>/dev/null)" || return 0
    [ -n "$jobs" ] || return 0
    # shellcheck disable=SC2086
    timeout 10 scancel $jobs 2>/dev/null || true
    for _ in $(seq 1 100); do
        [ -z "$(timeout 5 squeue -h -o '%A' 2>/dev/null)" ] && break
        sleep 0.1
    done
}

lc_stop_slurm_and_services() {
    local f name
    lc_cancel_all_jobs
    for f in "$LC_STATE"/pids/slurmd-*.pid; do
        [ -f "$f" ] || continue
        name="$(basename "$f" .pid)"
        lc_stop_pid "$name" slurmd
    done
    lc_stop_pid slurmctld slurmctld
    lc_stop_pid slurmdbd slurmdbd
    lc_stop_pid mariadbd mariadbd
    lc_stop_pid munged munged
}

# lc_stop_main TEARDOWN_FN [--purge]: what stop.sh and stop-multi.sh share; TEARDOWN_FN ("" for none) runs
# after the daemons are down and before a purge.
lc_stop_main() {
    local teardown="$1" purge=0
    shift
    case "${1:-}" in
        --purge) purge=1 ;;
        "") ;;
        *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
    esac
    if [ ! -d "$LC_STATE" ]; then
        lc_log "nothing to stop: $LC_STATE does not exist"
        return 0
    fi
    lc_lock
    lc_stop_slurm_and_services
    [ -z "$teardown" ] || "$teardown"
    if [ $purge -eq 1 ]; then
        rm -rf "$LC_STATE"
        lc_log "removed $LC_STATE"
    fi
}
