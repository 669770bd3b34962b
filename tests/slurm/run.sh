#!/usr/bin/env bash
# `tpri sweep --engine slurm` against a real Slurm: starts a single-node cluster from
# Debian's slurm-wlm and munge (munged, slurmctld and slurmd on this host, with their
# configuration, state, logs and ports private to this run), submits the sweep
# tests/slurm/sweep.toml as a job array, waits for it, collects, resubmits after removing
# one finished run (only that one must be submitted), then runs the same sweep with the
# local engine and compares results.csv row by row (all but wall_seconds), search.csv, and
# evaluations.csv and .md.
# Stops the daemons it started by their pid files.
#
# Needs root, the packages slurm-wlm and munge (it installs nothing; .ci/run does), python3,
# and a built tpri: TPRI=path, or target/debug/tpri (cargo build --locked).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TPRI=${TPRI:-$ROOT/target/debug/tpri}
SPEC=$ROOT/tests/slurm/sweep.toml

fail() { echo "slurm test: FAILED: $*" >&2; exit 1; }
[ -x "$TPRI" ] || fail "no tpri binary at $TPRI (cargo build --locked first, or set TPRI)"
[ "$(id -u)" = 0 ] || fail "must run as root (munged runs as munge, slurmd as root)"
for cmd in munged munge unmunge slurmctld slurmd sbatch squeue sinfo python3; do
    command -v "$cmd" >/dev/null || fail "$cmd not found: apt-get install -y --no-install-recommends slurm-wlm munge"
done

# Leftovers of an earlier run of this script (killed before its cleanup): its daemons.
for pidfile in /tmp/tpri-slurm-test.*/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$pid" ] && grep -qsE '^slurm(ctld|d)$' "/proc/$pid/comm"; then
        echo "killing leftover $(cat "/proc/$pid/comm") (pid $pid) of $(dirname "$pidfile")"
        kill "$pid" 2>/dev/null || true
    fi
done
sleep 0.5
rm -rf /tmp/tpri-slurm-test.*

STATE=$(mktemp -d /tmp/tpri-slurm-test.XXXXXX)
chmod 755 "$STATE"
STARTED_MUNGE=
cleanup() {
    status=$?
    stopped=
    for daemon in slurmd slurmctld; do
        pid=$(cat "$STATE/$daemon.pid" 2>/dev/null || true)
        if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then stopped="$stopped $pid"; fi
    done
    if [ -n "$STARTED_MUNGE" ]; then
        pid=$(cat /var/run/munge/munged.pid 2>/dev/null || true)
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    fi
    # slurmctld writes its state into $STATE as it shuts down: removing the folder before
    # it has exited can fail ("Directory not empty"), which once failed a passing run.
    for _ in $(seq 50); do
        alive=
        for pid in $stopped; do if [ -d "/proc/$pid" ]; then alive=1; fi; done
        if [ -z "$alive" ]; then break; fi
        sleep 0.2
    done
    if [ "$status" = 0 ]; then
        rm -rf "$STATE" || { sleep 1; rm -rf "$STATE"; } || echo "slurm test: could not remove $STATE" >&2
    else
        echo "slurm test: state kept in $STATE (slurmctld.log, slurmd.log, sweeps)" >&2
        tail -n 20 "$STATE"/*.log >&2 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP PIPE

# munge, as the recipe sets it up; an already running munged is used as it is.
mkdir -p /etc/munge /var/run/munge /var/log/munge /var/lib/munge
[ -f /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
chown -R munge:munge /etc/munge /var/run/munge /var/log/munge /var/lib/munge
chmod 400 /etc/munge/munge.key
chmod 700 /etc/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged || runuser -u munge -- /usr/sbin/munged --force
    STARTED_MUNGE=1
fi
munge -n | unmunge >/dev/null || fail "munge does not work"

# Two free TCP ports for slurmctld and slurmd.
free_port() {
    local p
    for p in $(seq "$1" "$(($1 + 200))"); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
    fail "no free port from $1"
}
CTLD_PORT=$(free_port $((17000 + $$ % 1000)))
SLURMD_PORT=$(free_port $((CTLD_PORT + 1)))

# The recipe's slurm.conf, with this run's paths and ports, and the loopback address
# given for the host (so that a container whose name does not resolve works too).
H=$(hostname -s)
CPUS=$(nproc)
MEM=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2))
mkdir -p "$STATE/ctld" "$STATE/slurmd"
export SLURM_CONF=$STATE/slurm.conf
cat > "$SLURM_CONF" <<CONF
ClusterName=local
SlurmctldHost=$H(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmdSpoolDir=$STATE/slurmd
StateSaveLocation=$STATE/ctld
SlurmUser=root
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
NodeName=$H NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
CONF

slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 120); do
    [ "$(sinfo -h -o %t 2>/dev/null)" = idle ] && break
    sleep 0.5
done
[ "$(sinfo -h -o %t)" = idle ] || fail "the node is not idle: $(sinfo 2>&1)"
echo "slurm test: single-node cluster up ($H, $CPUS CPUs, ports $CTLD_PORT/$SLURMD_PORT)"

# Waits until squeue lists none of the jobs $@ (accounting is off: no sacct).
wait_jobs() {
    local ids
    ids=$(IFS=,; echo "$*")
    for _ in $(seq 600); do
        [ -z "$(squeue -h -j "$ids" 2>/dev/null)" ] && return
        sleep 0.2
    done
    fail "jobs $ids still queued after 120 s: $(squeue 2>&1)"
}
job_ids() { sed -n 's/^submitted job \([0-9]*\)$/\1/p' "$1"; }

SLURM_DIR=$STATE/slurm-sweep
LOCAL_DIR=$STATE/local-sweep

"$TPRI" sweep "$SPEC" --out "$SLURM_DIR" --engine slurm | tee "$STATE/submit.txt"
ids=$(job_ids "$STATE/submit.txt")
[ -n "$ids" ] || fail "no job id printed"
wait_jobs $ids
rc=0; "$TPRI" sweep --collect "$SLURM_DIR" || rc=$?
echo "slurm test: collect exited with $rc (the number of failed runs)"

# Resubmission: a finished run removed must be the only one submitted again.
gone=$(python3 -c 'import csv,sys; print(next(r["name"] for r in csv.DictReader(open(sys.argv[1])) if r["status"] == "finished"))' "$SLURM_DIR/results.csv")
rm -rf "$SLURM_DIR/runs/$gone" "$SLURM_DIR/status/$gone.exit"
"$TPRI" sweep "$SPEC" --out "$SLURM_DIR" --engine slurm --resume | tee "$STATE/resubmit.txt"
grep -q '^1 runs submitted' "$STATE/resubmit.txt" || fail "resubmission did not submit exactly the removed run"
wait_jobs $(job_ids "$STATE/resubmit.txt")
rc_slurm=0; "$TPRI" sweep --collect "$SLURM_DIR" || rc_slurm=$?
"$TPRI" sweep "$SPEC" --out "$SLURM_DIR" --engine slurm --resume | tee "$STATE/resubmit2.txt"
grep -q '^nothing to submit' "$STATE/resubmit2.txt" || fail "a third submission found unfinished runs"

rc_local=0; "$TPRI" sweep "$SPEC" --out "$LOCAL_DIR" --jobs 2 || rc_local=$?
[ "$rc_slurm" = "$rc_local" ] || fail "slurm collect exited with $rc_slurm, the local sweep with $rc_local"

python3 - "$SLURM_DIR" "$LOCAL_DIR" <<'PY'
import csv, sys
def rows(d, name, drop=()):
    with open(f"{d}/{name}") as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]
slurm, local = sys.argv[1], sys.argv[2]
a, b = rows(slurm, "results.csv", ["wall_seconds"]), rows(local, "results.csv", ["wall_seconds"])
assert len(a) == len(b) == 8, (len(a), len(b))
for x, y in zip(a, b):
    assert x == y, f"results differ:\n slurm {x}\n local {y}"
assert rows(slurm, "search.csv") == rows(local, "search.csv"), "search.csv differs"
assert rows(slurm, "evaluations.csv") == rows(local, "evaluations.csv"), "evaluations.csv differs"
assert len(rows(local, "evaluations.csv")) > len(a), "evaluations.csv holds fewer rows than runs"
with open(f"{slurm}/evaluations.md") as f, open(f"{local}/evaluations.md") as g:
    assert f.read() == g.read(), "evaluations.md differs"
print(f"{'run':32} {'status':9} {'final train loss':>20} {'eval acc':>8}")
for x in a:
    print(f"{x['name']:32} {x['status']:9} {x['final_train_loss']:>20} {x['final_eval_accuracy']:>8}")
print("slurm test: results.csv, search.csv and evaluations.csv and .md of the slurm and local engines are equal")
PY
ls "$SLURM_DIR/figures" | grep -q '\.png$' || fail "collect drew no figures"
echo "slurm test: passed"
