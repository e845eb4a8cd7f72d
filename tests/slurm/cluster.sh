#!/usr/bin/env bash
# A one-node SLURM cluster on localhost for the `slurm` tests (tests/test_slurm.py).
#
#   bash tests/slurm/cluster.sh install   apt-get install munge, slurmctld, slurmd, slurm-client (root)
#   bash tests/slurm/cluster.sh start     write a minimal slurm.conf, start munged, slurmctld and
#                                         slurmd, wait until the node is idle (idempotent)
#   bash tests/slurm/cluster.sh stop      stop slurmd, slurmctld and munged started by `start`
#   bash tests/slurm/cluster.sh status    sinfo and squeue
#
# Run as root (a CI machine or a container). The cluster has one node (this host, its CPUs and
# memory), one partition `debug`, a fake GPU GRES (gpu:1, no device behind it: jobs may ask for
# a GPU and be scheduled; nothing uses it) and no accounting database: `sacct` does not work
# here, so xaudit falls back to `squeue` for job states (see xaudit/submit.py).
#
# Environment: SLURM_CONF_DIR (default /etc/slurm), SLURM_START_TIMEOUT (seconds, default 60).
# It refuses to overwrite a slurm.conf it did not write (a real cluster's).
set -euo pipefail

CONF_DIR=${SLURM_CONF_DIR:-/etc/slurm}
CONF=$CONF_DIR/slurm.conf
MARK="# written by xaudit tests/slurm/cluster.sh"
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOGS=/var/log/slurm
RUN=/run/xaudit-slurm
TIMEOUT=${SLURM_START_TIMEOUT:-60}

log() { echo "cluster.sh: $*" >&2; }
die() { log "$*"; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (it starts munged, slurmctld and slurmd)"; }

install() {
    need_root
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        log "munge and SLURM already installed"
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq munge slurmctld slurmd slurm-client >/dev/null
}

write_conf() {
    if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script; not touching a real cluster's config"
    fi
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)  # MB, leaving room for the OS
    mkdir -p "$CONF_DIR" "$STATE" "$SPOOL" "$LOGS" "$RUN"
    cat >"$CONF" <<EOF
$MARK
ClusterName=xaudit-ci
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
ReturnToService=2
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# a requeued or cancelled job gets SIGKILL 5 s after SIGTERM (default 30)
KillWait=5
# finished jobs stay visible to squeue -t all / scontrol for 10 minutes
MinJobAge=600
DefMemPerCPU=1024
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$CONF_DIR/gres.conf" <<EOF
$MARK
# a GPU in name only: lets the tests ask for --gpus-per-node without a GPU
NodeName=$host Name=gpu File=/dev/null
EOF
    echo "$host" >"$RUN/node"
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_ok; then return; fi
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
    chown -R munge:munge /etc/munge
    chmod 700 /etc/munge
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 755 /run/munge
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 1 20); do munge_ok && return; sleep 0.5; done
    die "munged did not start (see /var/log/munge/munged.log)"
}

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

node_state() { sinfo -h -N -n "$(cat "$RUN/node")" -o %T 2>/dev/null | head -n1; }

start() {
    need_root
    command -v slurmctld >/dev/null || die "SLURM is not installed: bash $0 install"
    write_conf
    start_munge
    alive slurmctld || slurmctld
    alive slurmd || slurmd
    local state="" deadline=$((SECONDS + TIMEOUT))
    while [ $SECONDS -lt $deadline ]; do
        state=$(node_state || true)
        case "$state" in
            idle | mixed | allocated) log "node $(cat "$RUN/node") is $state"; sinfo; return ;;
            down* | drain* | *fail* | inval*) scontrol update nodename="$(cat "$RUN/node")" state=resume 2>/dev/null || true ;;
        esac
        sleep 1
    done
    log "node did not become idle within ${TIMEOUT}s (state: ${state:-none}); logs follow"
    tail -n 30 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2 || true
    exit 1
}

stop_daemon() {
    local name=$1
    if alive "$name"; then
        local pid
        pid=$(cat "$RUN/$name.pid")
        kill "$pid"
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$RUN/$name.pid"
}

stop() {
    need_root
    scancel --user=root 2>/dev/null || true
    stop_daemon slurmd
    stop_daemon slurmctld
    if [ -f /run/munge/munged.pid ]; then
        kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
    fi
    log "stopped"
}

status() { sinfo; squeue; }

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
