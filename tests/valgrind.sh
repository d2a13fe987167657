#!/usr/bin/env bash
# valgrind.sh - the single-rank path under valgrind memcheck: every cmocka
# unit test, then bin/egmla generate and score on the fixtures (each
# architecture), a run with bad input lines and a run with a broken model
# (the error paths must free what they took too). Any memcheck error or
# definite/possible leak fails it.
#
#   tests/valgrind.sh            (make valgrind)
#
# valgrind does not know AVX-512, so this builds its own tree, build-vg/,
# for x86-64-v3 (AVX2), and pins OpenBLAS to its Haswell kernels on one
# thread (its thread pool confuses memcheck otherwise). EGMLA_NO_REEXEC
# stops bin/egmla from re-executing itself to pick BLAS kernels.
set -u
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "SKIP: valgrind not installed"; exit 0; }
B=build-vg
# test_roofline and test_bench stream hundreds of MiB to measure bandwidth,
# and test_sampling draws 10^5 tokens from 50k-word vocabularies: under
# valgrind each takes many minutes and checks no more than ASan does (make
# SAN=1 test runs them), so memcheck skips those three.
TESTS=$(ls tests/test_*.c | grep -v -e test_roofline -e test_bench -e test_sampling | sed "s|tests/\(.*\)\.c|$B/tests/\1|")
make -s -j2 BUILD=$B BIN=$B/egmla ARCH=x86-64-v3 $B/egmla $TESTS >/dev/null || exit 1
export EGMLA_NO_JIT=1 EGMLA_NO_REEXEC=1 OPENBLAS_CORETYPE=Haswell OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=passive
VG=(valgrind -q --error-exitcode=99 --leak-check=full --suppressions=tests/valgrind.supp --errors-for-leak-kinds=definite,possible
    --show-leak-kinds=definite,possible --track-origins=yes)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0; fail=0; failed=()
# run NAME WANT_STATUS command...: valgrind's own failure is status 99
run() {
  local name=$1 want=$2; shift 2
  "${VG[@]}" "$@" >"$T/out" 2>"$T/err"; local rc=$?
  if [ $rc -eq "$want" ] && ! grep -q '^==[0-9]*==' "$T/err"; then
    pass=$((pass+1)); echo "  ok: $name"
  else
    fail=$((fail+1)); failed+=("$name"); echo "  FAIL: $name (exit $rc, want $want)"
    grep -E '^==[0-9]+==' "$T/err" | head -40
  fi
}

echo "-- unit tests"
for t in $TESTS; do run "$(basename "$t")" 0 "$t"; done

echo "-- bin/egmla"
FX=tests/fixtures/models
printf '{"id":1,"tokens":[1,2,3]}\n{"id":"b","tokens":[4,5,6,7],"temperature":0.8,"top_p":0.9,"seed":3}\n' > $T/in.jsonl
for m in llama_mha llama_gqa_tied mla mla_qlora egmla_ln egmla_bf16 egmla_rms_noup; do
  run "generate $m" 0 $B/egmla generate --model $FX/$m --input $T/in.jsonl --out $T/gen.jsonl --max-new-tokens 6 --ignore-eos
  run "score $m" 0 $B/egmla score --model $FX/$m --input $T/in.jsonl --out $T/score.jsonl
done
run "generate --kv-dtype bf16 --stats" 0 $B/egmla generate --model $FX/mla --input $T/in.jsonl --out $T/gen.jsonl --kv-dtype bf16 --stats --max-new-tokens 4
printf '{"id":1,"tokens":[1,"x"]}\nnot json\n{"id":2,"tokens":[1,99999]}\n{"id":3,"tokens":[1,2],"max_new_tokens":2}\n{"id":4,"prompt":"hi"}\n' > $T/bad.jsonl
run "bad input lines (exit 3)" 3 $B/egmla generate --model $FX/llama_mha --input $T/bad.jsonl --out $T/bad_out.jsonl
cp -r $FX/llama_mha $T/broken && head -c 5000 $FX/llama_mha/model.safetensors > $T/broken/model.safetensors
run "truncated model (exit 1)" 1 $B/egmla generate --model $T/broken --input $T/in.jsonl --out $T/x.jsonl
run "--resume" 0 $B/egmla generate --model $FX/llama_mha --input $T/in.jsonl --out $T/gen.jsonl --resume --max-new-tokens 4
run "info" 0 $B/egmla info --model $FX/egmla_ln --kv-budget 1MiB --context 100

[ ${#failed[@]} -eq 0 ] || printf 'FAILED: %s\n' "${failed[@]}"
echo "valgrind: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
