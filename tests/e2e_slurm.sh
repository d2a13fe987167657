#!/usr/bin/env bash
# e2e_slurm.sh - `egmla slurm` for real: a one-node Slurm cluster
# (deploy/slurm/start-local.sh: munged, slurmctld, slurmd) runs the sbatch
# script that `egmla slurm TOPO.yaml -- generate ...` prints (srun
# --mpi=pmix, a coordinator and 2 stages), submitted with sbatch --wait;
# the output must equal the single-process run byte for byte (fp32 wire).
# The cluster lives in a private network namespace (its daemons talk over
# a veth address inside it) and is stopped on exit.
#
# Skips with a message when Slurm, munge, root or ip netns are missing.
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/egmla}
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac
for b in slurmctld slurmd munged sbatch srun sinfo; do
  if ! command -v $b >/dev/null 2>&1; then
    echo "SKIP: $b not found (deploy/install-deps.sh installs slurmctld slurmd slurm-client munge)"
    exit 0
  fi
done
if [ "$(id -u)" -ne 0 ] || ! ip netns list >/dev/null 2>&1; then
  echo "SKIP: needs root and ip netns to run a private Slurm cluster"
  exit 0
fi
export OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=passive ASAN_OPTIONS=detect_leaks=0
NS=egm-slurm
tmp=$(mktemp -d)
cleanup() {
  ip netns exec $NS bash deploy/slurm/start-local.sh stop "$tmp/slurm" >/dev/null 2>&1
  ip netns del $NS 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
ip netns del $NS 2>/dev/null
if ! { ip netns add $NS && ip netns exec $NS ip link set lo up &&
       ip netns exec $NS ip link add egm-s0 type veth peer name egm-s1 &&
       ip netns exec $NS ip addr add 10.77.1.1/24 dev egm-s0 &&
       ip netns exec $NS ip link set egm-s0 up && ip netns exec $NS ip link set egm-s1 up; } 2>"$tmp/ns.log"; then
  echo "SKIP: needs root and ip netns: cannot create namespace $NS: $(cat "$tmp/ns.log")"
  exit 0
fi
fails=0
ok()   { echo "ok   $*"; }
bad()  { echo "FAIL $*"; fails=$((fails+1)); }

# 3 ranks on a 2-core machine: the node declares 4 CPUs (config_overrides)
if ADDR=10.77.1.1 CPUS=4 timeout 60 ip netns exec $NS bash deploy/slurm/start-local.sh "$tmp/slurm" >"$tmp/start.log" 2>&1; then
  ok "one-node Slurm up: $(cat "$tmp/start.log")"
else
  bad "start-local.sh"; cat "$tmp/start.log"; echo "e2e_slurm: $fails failed"; exit 1
fi
export SLURM_CONF="$tmp/slurm/slurm.conf"

M=tests/fixtures/models/egmla_ln
cat > "$tmp/gen.jsonl" <<'J'
{"id": "g1", "tokens": [1, 5, 9, 33], "temperature": 0}
{"id": "g2", "tokens": [1, 100, 200, 3, 4, 5, 6, 7, 8, 9], "temperature": 0}
{"id": "g3", "tokens": [1, 42], "temperature": 0.8, "seed": 7}
J
cat > "$tmp/topo.yaml" <<'Y'
wire_dtype: fp32
nodes:
  - {name: local, host: localhost, slots: 3, threads: 1}
stages:
  - {node: local, layers: 0-0}
  - {node: local, layers: 1-1}
Y
GEN=(generate --model "$PWD/$M" --input "$tmp/gen.jsonl" --max-new-tokens 16 --ignore-eos)
"$BIN" "${GEN[@]}" --out "$tmp/gen.1" 2>"$tmp/1.log" || bad "1-process generate"
"$BIN" slurm "$tmp/topo.yaml" --time 00:05:00 -- "${GEN[@]}" --out "$tmp/gen.slurm" >"$tmp/job.sh" \
  || bad "egmla slurm"
grep -q "^srun --mpi=pmix" "$tmp/job.sh" && grep -q "^#SBATCH --ntasks=3" "$tmp/job.sh" \
  && ok "egmla slurm: 3 tasks, srun --mpi=pmix" || { bad "script"; cat "$tmp/job.sh"; }
(cd "$tmp" && timeout 90 ip netns exec $NS sbatch --wait --output="$tmp/job-%j.out" "$tmp/job.sh") >"$tmp/sbatch.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && cmp -s "$tmp/gen.1" "$tmp/gen.slurm"; then
  ok "sbatch --wait: the job's output equals the 1-process run ($(grep -c 'egmla: stage' "$tmp"/job-*.out) stages reported)"
else
  bad "sbatch: exit $rc"; cat "$tmp/sbatch.log" "$tmp"/job-*.out 2>/dev/null
fi
if [ $fails -ne 0 ]; then echo "e2e_slurm: $fails failed"; exit 1; fi
echo "e2e_slurm: all passed"
