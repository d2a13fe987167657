#!/usr/bin/env bash
# Pipeline throughput on this machine: the same batched-decode job run by
# one rank with 2 BLAS threads, and by a 2-stage pipeline (coordinator +
# 2 workers, 1 thread each), alternating A B A B so both see the same load.
# Prints tokens/s of each run, the per-stage busy/wait/bubble lines, and the ratio.
#
#   bash deploy/bench-pipeline.sh [CONFIG.json] [ROUNDS]
# Needs /usr/bin/python3 with torch (to write a random checkpoint once).
set -euo pipefail
cd "$(dirname "$0")/.."
CFG=${1:-deploy/examples/paper-egmla.json}
ROUNDS=${2:-2}
BIN=${BIN:-bin/egmla}
W=${WORK:-/tmp/egmla-bench-pipeline}
mkdir -p "$W"
M="$W/$(basename "$CFG" .json)"
if [ ! -f "$M/model.safetensors" ]; then
  echo "writing random weights for $CFG into $M" >&2
  OMP_WAIT_POLICY=passive /usr/bin/python3 reference/random_model.py "$CFG" "$M"
fi
NSEQ=${NSEQ:-32} PROMPT=${PROMPT:-16} NEW=${NEW:-48}
python3 -c "
import random
random.seed(1)
for i in range($NSEQ):
    print('{\"id\": %d, \"tokens\": [%s]}' % (i, ','.join(str(random.randrange(3, 1000)) for _ in range($PROMPT))))
" > "$W/in.jsonl"
common=(--model "$M" --input "$W/in.jsonl" --out "$W/out.jsonl" --max-new-tokens "$NEW" --ignore-eos
        --temperature 0 --max-batch "$NSEQ" --kv-budget 1GiB)
tps() { grep -o '[0-9]* generated tokens in [0-9.]* s' "$1" | awk '{print $1 / $5}'; }
mpi=(mpirun --allow-run-as-root --oversubscribe --bind-to none -np 3 -x OPENBLAS_NUM_THREADS=1)
for r in $(seq "$ROUNDS"); do
  OPENBLAS_NUM_THREADS=2 "$BIN" generate "${common[@]}" --micro-batches 1 2> "$W/one.log"
  a=$(tps "$W/one.log")
  "${mpi[@]}" "$BIN" generate "${common[@]}" --micro-batches 2 --wire-dtype bf16 2> "$W/pipe.log"
  b=$(tps "$W/pipe.log")
  echo "round $r: 1 rank x 2 threads: $a tok/s; 2 stages x 1 thread: $b tok/s; ratio $(python3 -c "print(round($b / $a, 3))")"
  grep 'stage [0-9]' "$W/pipe.log" | sed 's/^/    /'
done
