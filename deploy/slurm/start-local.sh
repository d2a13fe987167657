#!/usr/bin/env bash
# start-local.sh - a one-node Slurm cluster on this machine, for tests.
#
#   deploy/slurm/start-local.sh [DIR]        start munged, slurmctld, slurmd
#   deploy/slurm/start-local.sh stop [DIR]   stop them (by their pid files)
#
# Installs nothing (deploy/install-deps.sh does: slurmctld slurmd
# slurm-client munge). Writes DIR/slurm.conf (default DIR: /tmp/egm-slurm)
# for one node named after this machine with CPUS CPUs (default: nproc,
# at most 2 is what CI has), a fresh munge key, then starts the daemons as
# root (they put themselves in the background) and waits, bounded, until
# `sinfo` shows the node idle. Use the cluster with SLURM_CONF=DIR/slurm.conf.
#
# The daemons talk over ADDR (default 127.0.0.1). Run this script, and the
# sbatch that uses the cluster, inside a network namespace
# (`ip netns exec NS ...`) to keep even that traffic private, as
# tests/e2e_slurm.sh does: Slurm resolves names with AI_ADDRCONFIG, so the
# namespace needs one non-loopback IPv4 address (a veth pair inside it
# will do), and ADDR should be it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
if [ "${1:-}" = stop ]; then
  DIR=${2:-/tmp/egm-slurm}
  for p in slurmd slurmctld munged; do
    f="$DIR/$p.pid"
    [ "$p" = munged ] && f="$DIR/munge/munged.pid"
    if [ -s "$f" ]; then
      pid=$(cat "$f")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$f"
    fi
  done
  echo "slurm: stopped (state in $DIR)"
  exit 0
fi
DIR=${1:-/tmp/egm-slurm}
CPUS=${CPUS:-$(nproc)}
ADDR=${ADDR:-127.0.0.1}
HOST=$(hostname -s)
for b in munged slurmctld slurmd sinfo; do
  command -v "$b" >/dev/null 2>&1 || { echo "slurm: $b not found (run deploy/install-deps.sh)" >&2; exit 2; }
done
[ "$(id -u)" -eq 0 ] || { echo "slurm: the daemons must start as root" >&2; exit 2; }
mkdir -p "$DIR"/{state,spool,munge}
# A fresh key for this cluster only (munged wants it 0400 and owned by its user).
dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$DIR/munge/munge.key"
sed -e "s|@DIR@|$DIR|g" -e "s|@HOST@|$HOST|g" -e "s|@CPUS@|$CPUS|g" -e "s|@ADDR@|$ADDR|g" \
  "$HERE/slurm.conf.in" > "$DIR/slurm.conf"
cp "$HERE/cgroup.conf" "$DIR/cgroup.conf"
chmod 755 "$DIR" "$DIR/munge"   # munged: the socket's directory must be searchable
export SLURM_CONF="$DIR/slurm.conf"
exec 3>&1 4>&2

# The daemons' output goes to their logs, never to our caller's pipes.
exec </dev/null >"$DIR/start.log" 2>&1
munged --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
  --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
  --seed-file="$DIR/munge/munged.seed" --force
slurmctld -f "$SLURM_CONF" -i   # -i: ignore state left by an earlier run
slurmd -f "$SLURM_CONF"

# The node registers within seconds; give it 30.
for _ in $(seq 150); do
  for p in slurmctld slurmd; do
    if ! kill -0 "$(cat "$DIR/$p.pid" 2>/dev/null || echo 0)" 2>/dev/null; then
      echo "slurm: $p is not running; logs in $DIR" >&4
      grep -v MailProg "$DIR/$p.log" | tail -5 >&4 || true
      exit 1
    fi
  done
  state=$(timeout 5 sinfo -h -N -n "$HOST" -o %T 2>/dev/null || true)
  case "$state" in
    idle*) echo "slurm: node $HOST idle ($CPUS CPUs); export SLURM_CONF=$SLURM_CONF" >&3; exit 0 ;;
    down*|drain*) scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
  esac
  sleep 0.2
done
echo "slurm: node $HOST is not idle after 30 s (state: ${state:-none}); logs in $DIR" >&4
tail -5 "$DIR/start.log" "$DIR/slurmctld.log" "$DIR/slurmd.log" >&4 || true
exit 1
