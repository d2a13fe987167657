#!/usr/bin/env bash
# e2e_faults.sh - a pipeline that loses a rank mid-job, and KV waits.
#
#  1. kill -9 of a worker (rank 2 of 3) once the output has a few lines:
#     mpirun stops the job; exit non-zero, bounded time, the output holds
#     only whole lines, each equal to the uninterrupted run's line for that
#     id; no egmla process is left.
#  2. SIGSTOP of a worker (rank 1) with a 5 s rank timeout: rank 0 names the
#     rank and host, keeps what it wrote, exits non-zero; no process left.
#  3. After each, the same command with --resume finishes the job, and the
#     union of the outputs equals the uninterrupted run (seeded sampling).
#  4. A worker that hangs while loading its layers (it blocks opening a
#     FIFO): rank 0 gives up after 10 x --rank-timeout, names the rank,
#     exits non-zero through MPI_Abort; no process left.
#  5. A KV budget that holds 2 sequences: 10 requests all complete (they
#     wait for room), in one process and over 3 ranks; a budget below one
#     sequence refuses each request with a message instead.
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/egmla}
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac
if ! command -v mpirun >/dev/null 2>&1; then
  echo "SKIP: mpirun not found (install Open MPI to test rank faults)"
  exit 0
fi
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
export OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=passive
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,vader
MPIRUN=(timeout 60 mpirun --oversubscribe -x ASAN_OPTIONS=detect_leaks=0 -np)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
ok()   { echo "ok   $*"; }
bad()  { echo "FAIL $*"; fails=$((fails+1)); }

M=tests/fixtures/models/egmla_ln
"$PY" - "$tmp/in.jsonl" <<'P'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(400):
        f.write(json.dumps({"id": "r%03d" % i, "tokens": [1, (i * 7) % 290 + 5, (i * 13) % 290 + 5],
                            "temperature": 0.8, "seed": 1000 + i}) + "\n")
P
GEN=(generate --model "$M" --input "$tmp/in.jsonl" --max-new-tokens 60 --ignore-eos
     --max-batch 4 --micro-batches 2)
"$BIN" "${GEN[@]}" --out "$tmp/ref.jsonl" 2>"$tmp/ref.log" && [ "$(wc -l < "$tmp/ref.jsonl")" -eq 400 ] \
  || { bad "uninterrupted run"; cat "$tmp/ref.log"; }

# The rank timeout: --rank-timeout when generate has it, else the variable.
TO=()
if "$BIN" generate --help 2>&1 | grep -q -- --rank-timeout; then TO=(--rank-timeout 5); fi
export EGMLA_RANK_TIMEOUT=5
HAVE_RESUME=0
"$BIN" generate --help 2>&1 | grep -q -- --resume && HAVE_RESUME=1

# pid of rank R of the run writing OUT (not mpirun: its environment has no rank)
rank_pid() {
  local p
  for p in $(pgrep -f "egmla generate.*$2"); do
    tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1" && echo "$p"
  done
}

# Every line of OUT is whole JSON and equals the reference line of its id.
lines_match_ref() {
  "$PY" - "$tmp/ref.jsonl" "$1" <<'P'
import json, sys
ref = {json.loads(l)["id"]: l for l in open(sys.argv[1])}
raw = open(sys.argv[2], "rb").read()
if raw and not raw.endswith(b"\n"):
    sys.exit("torn last line")
for l in raw.decode().splitlines(keepends=True):
    r = json.loads(l)
    if ref[r["id"]] != l:
        sys.exit("line for %s differs" % r["id"])
P
}

# fault NAME SIGNAL RANK: start 3 ranks, signal RANK after 5 lines, check.
fault() {
  local name=$1 sig=$2 rank=$3 out="$tmp/$1.jsonl" log="$tmp/$1.log" pid victim="" t0 rc
  t0=$(date +%s)
  "${MPIRUN[@]}" 3 "$BIN" "${GEN[@]}" "${TO[@]}" --wire-dtype fp32 --out "$out" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do   # up to 30 s for the first lines
    [ -s "$out" ] && [ "$(wc -l < "$out")" -ge 5 ] && victim=$(rank_pid "$rank" "$out")
    [ -n "$victim" ] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$victim" ]; then
    bad "$name: no rank $rank found running with output"; wait $pid; cat "$log"; return
  fi
  kill "-$sig" "$victim"
  wait $pid
  rc=$?
  local took=$(( $(date +%s) - t0 )) n
  n=$(wc -l < "$out")
  if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ "$n" -lt 400 ]; then
    ok "$name: exit $rc after ${took}s with $n of 400 results"
  else
    bad "$name: exit $rc after ${took}s with $n results"; cat "$log"
  fi
  if lines_match_ref "$out" 2>"$tmp/m.err"; then ok "$name: every written line is whole and right"
  else bad "$name: output: $(cat "$tmp/m.err")"; fi
  if pgrep -f "egmla generate.*$out" >/dev/null; then
    bad "$name: processes left: $(pgrep -fa "egmla generate.*$out")"
    kill -9 $(pgrep -f "egmla generate.*$out") 2>/dev/null
  else
    ok "$name: no egmla process left"
  fi
  local msg
  msg=$(grep -E "^egmla: rank $rank \(|rank $rank with PID .* exited on signal" "$log" | head -1)
  if [ -n "$msg" ]; then ok "$name: message names rank $rank: $msg"
  else bad "$name: no message naming rank $rank"; cat "$log"; fi
  if [ $HAVE_RESUME -eq 1 ]; then
    "${MPIRUN[@]}" 3 "$BIN" "${GEN[@]}" --wire-dtype fp32 --out "$out" --resume >>"$log" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && cmp -s <(sort "$tmp/ref.jsonl") <(sort "$out"); then
      ok "$name: --resume finishes the job; union equals the uninterrupted run"
    else
      bad "$name: --resume: exit $rc, $(wc -l < "$out") lines"; tail -5 "$log"
    fi
  else
    echo "SKIP $name: --resume (generate has no --resume yet)"
  fi
}

fault kill KILL 2
fault stop STOP 1
if grep -q "^egmla: rank 1 (.*) does not answer" "$tmp/stop.log"; then
  ok "stop: rank 0 named the hung rank and its host"
else
  bad "stop: the hung rank was not named by rank 0"; cat "$tmp/stop.log"
fi

# --- a worker hung while loading: rank 0 stops waiting for its hello ---------
# model.safetensors is a FIFO nobody writes: the workers block opening it,
# while rank 0 (config and tokenizer only) goes on. With --rank-timeout 0.2
# the startup wait is 2 s.
mkdir "$tmp/hang"
cp "$M/config.json" "$tmp/hang/"
mkfifo "$tmp/hang/model.safetensors"
start=$(date +%s)
"${MPIRUN[@]}" 3 "$BIN" score --model "$tmp/hang" --input "$tmp/in.jsonl" --out "$tmp/hang.out" \
  --rank-timeout 0.2 >"$tmp/hang.log" 2>&1
rc=$?
took=$(( $(date +%s) - start ))
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "^egmla: rank 1 has not answered its assignment" "$tmp/hang.log" \
   && [ "$(grep -c '^egmla:' "$tmp/hang.log")" -eq 1 ] && ! pgrep -f "egmla score.*$tmp/hang" >/dev/null; then
  ok "hung while loading: exit $rc after ${took}s, no rank left: $(grep '^egmla:' "$tmp/hang.log" | head -c 120)"
else
  bad "hung while loading: exit $rc after ${took}s"; cat "$tmp/hang.log"; pkill -9 -f "egmla score.*$tmp/hang"
fi

# --- KV budget: requests wait for room ---------------------------------------
head -10 "$tmp/in.jsonl" > "$tmp/ten.jsonl"
# bytes for B blocks of 16 positions on L layers (a sequence of 3 + 60
# positions takes 4 blocks): per token L * (kv_lora_rank + qk_rope_head_dim)
# fp32 values + the token id; plus a little less than one block
budget() {
  "$PY" -c "
import json; c = json.load(open('$M/config.json'))
per = $2 * (c['kv_lora_rank'] + c['qk_rope_head_dim']) * 4 + 4
print($1 * 16 * per + per)"
}
KV=(generate --model "$M" --input "$tmp/ten.jsonl" --max-new-tokens 60 --ignore-eos --max-batch 8)
"$BIN" "${KV[@]}" --kv-budget "$(budget 8 2)" --out "$tmp/kv1.jsonl" 2>"$tmp/kv1.log"
rc=$?
if [ $rc -eq 0 ] && [ "$(wc -l < "$tmp/kv1.jsonl")" -eq 10 ] && ! grep -q error "$tmp/kv1.jsonl" \
   && grep -q "10 ok" "$tmp/kv1.log"; then
  ok "KV budget of 2 sequences, 1 process: 10 requests all complete"
else
  bad "KV budget, 1 process: exit $rc"; cat "$tmp/kv1.log"
fi
"${MPIRUN[@]}" 3 "$BIN" "${KV[@]}" --kv-budget "$(budget 8 1)" --out "$tmp/kv3.jsonl" >"$tmp/kv3.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && [ "$(wc -l < "$tmp/kv3.jsonl")" -eq 10 ] && ! grep -q error "$tmp/kv3.jsonl"; then
  ok "KV budget of 2 sequences per stage, 3 ranks: 10 requests all complete"
else
  bad "KV budget, 3 ranks: exit $rc"; cat "$tmp/kv3.log"
fi
# one block short of one sequence: every request is refused, none runs
"$BIN" "${KV[@]}" --kv-budget "$(budget 3 2)" \
  --out "$tmp/kv0.jsonl" 2>"$tmp/kv0.log"
rc=$?
if [ $rc -eq 3 ] && [ "$(grep -c 'budget holds' "$tmp/kv0.jsonl")" -eq 10 ]; then
  ok "KV budget below one sequence: exit 3, each request refused: $(head -c 160 "$tmp/kv0.jsonl")"
else
  bad "KV budget below one sequence: exit $rc"; head -3 "$tmp/kv0.jsonl"; cat "$tmp/kv0.log"
fi

if [ $fails -ne 0 ]; then echo "e2e_faults: $fails failed"; exit 1; fi
echo "e2e_faults: all passed"
