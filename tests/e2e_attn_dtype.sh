#!/usr/bin/env bash
# e2e_attn_dtype.sh - --attn-dtype end to end: fp32 is the default (its
# output is byte-identical to giving no option); bf16 (score products and
# EG-MLA's rebuild from bf16 operands) stays within LP_BOUND of fp32 in
# log-prob on the default model, and differs from it (the option takes
# effect); on an MLA and a llama fixture (random weights, log-probs down
# to -16) within 1e-2 of the log-prob scale, as e2e_mpi.sh asks of a bf16
# wire; under mpirun the workers get it too: a 2-stage pipeline with fp32
# on the wire gives the same bytes as one process. LP_BOUND was 10x the
# largest |delta| measured on these prompts (docs/BENCHMARKS.md, "bf16
# attention"); the retrained default model measures 0.061 here (sharper
# than the first one, and the long repetitive prompt is far from the KJV
# text it was trained on), so the bound is about 3x that.
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/egmla}
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac
FX=tests/fixtures/models
LP_BOUND=0.2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
ok()   { echo "  ok: $*"; }
bad()  { echo "  FAIL: $*"; fails=$((fails+1)); }
export OPENBLAS_NUM_THREADS=1

# a long prompt crosses blocks of 128 cached positions
long=$(printf 'Once upon a time there was a little girl who lived in a village near the forest. %.0s' {1..12})
cat > "$T/in.jsonl" <<J
{"id": "a", "prompt": "The quick brown fox jumps over the lazy dog."}
{"id": "b", "prompt": "$long"}
{"id": "c", "tokens": [1, 5, 9, 33, 7, 120, 41, 100, 200, 3, 4, 5, 6, 7, 8, 9]}
J
grep -v '"prompt"' "$T/in.jsonl" >"$T/tok.jsonl"

# maxdiff A B: "max|delta logprob| mean|delta| max|logprob|" over matching ids
maxdiff() {
  python3 - "$1" "$2" <<'P'
import json, sys
a = {r["id"]: r for r in map(json.loads, open(sys.argv[1]))}
b = {r["id"]: r for r in map(json.loads, open(sys.argv[2]))}
d = [abs(x - y) for k in a for x, y in zip(a[k]["logprobs"], b[k]["logprobs"])]
assert len(d) > 0 and len(a) == len(b)
scale = max(abs(x) for k in a for x in a[k]["logprobs"])
print("%.3g %.3g %.3g" % (max(d), sum(d) / len(d), scale))
P
}

within() { python3 -c "import sys; sys.exit(not (0 < $1 <= $2))"; }

for m in "" "$FX/mla" "$FX/llama_gqa_tied"; do
  name=${m:-default model}
  args=() in=$T/in.jsonl
  [ -n "$m" ] && args=(--model "$m") in=$T/tok.jsonl  # fixtures: no tokenizer text needed
  "$BIN" score "${args[@]}" --input "$in" --out "$T/none.jsonl" 2>>"$T/log" &&
  "$BIN" score "${args[@]}" --input "$in" --out "$T/fp32.jsonl" --attn-dtype fp32 2>>"$T/log" &&
  "$BIN" score "${args[@]}" --input "$in" --out "$T/bf16.jsonl" --attn-dtype bf16 2>>"$T/log"
  rc=$?
  if [ $rc -ne 0 ]; then bad "$name: score failed ($rc): $(tail -n 2 "$T/log")"; continue; fi
  cmp -s "$T/none.jsonl" "$T/fp32.jsonl" && ok "$name: --attn-dtype fp32 is byte-identical to the default" \
    || bad "$name: --attn-dtype fp32 differs from the default"
  read -r d mean scale < <(maxdiff "$T/fp32.jsonl" "$T/bf16.jsonl")
  bound=$LP_BOUND
  [ -n "$m" ] && bound=$(python3 -c "print('%.3g' % (1e-2 * max(1.0, $scale)))")
  within "$d" "$bound" && ok "$name: bf16 max |delta logprob| $d (mean $mean), within $bound and not 0" \
    || bad "$name: bf16 max |delta logprob| $d (mean $mean), want 0 < d <= $bound"
  [ -z "$m" ] && cp "$T/bf16.jsonl" "$T/bf16.local"
done

# portable and AVX2 bf16 kernels sum in the same order: the same bytes
# (a CPU with AVX512-BF16 uses vdpbf16ps instead, in its own order)
if ! grep -q avx512_bf16 /proc/cpuinfo 2>/dev/null; then
  EGMLA_KERNELS=portable "$BIN" score --input "$T/in.jsonl" --out "$T/bf16.portable" \
    --attn-dtype bf16 2>>"$T/log" && cmp -s "$T/bf16.local" "$T/bf16.portable" \
    && ok "bf16, EGMLA_KERNELS=portable: byte-identical to the run-time choice" \
    || bad "bf16, EGMLA_KERNELS=portable differs or failed"
fi

# the option reaches MPI workers: 3 ranks = 2 stages, fp32 on the wire
if command -v mpirun >/dev/null 2>&1; then
  export OMP_WAIT_POLICY=passive OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_ALLOW_RUN_AS_ROOT=1
  export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
  timeout 60 mpirun --oversubscribe -x ASAN_OPTIONS=detect_leaks=0 -np 3 "$BIN" score \
    --input "$T/in.jsonl" --out "$T/bf16.mpi" --attn-dtype bf16 --wire-dtype fp32 >>"$T/log" 2>&1 &&
    cmp -s "$T/bf16.local" "$T/bf16.mpi" && ok "bf16 over 2 MPI stages: byte-identical to one process" \
    || bad "bf16 over 2 MPI stages differs or failed: $(tail -n 2 "$T/log")"
else
  echo "  skip: mpirun not found (the MPI part)"
fi

echo "e2e_attn_dtype: $fails failed"
[ $fails -eq 0 ]
