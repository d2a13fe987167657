#!/usr/bin/env bash
# End-to-end: every command that runs the engine accepts every engine option
# (one table, coordinator/engine.c), lists it in --help, and refuses a bad
# value with exit 2; the sampling options are generate's alone.
set -u
BIN=${BIN:-bin/egmla}
fails=0
ok()   { echo "  ok: $*"; }
bad()  { echo "  FAIL: $*"; fails=$((fails+1)); }

# option and a valid value ("-" for a flag)
ENGINE="model:models/egmla-tiny kv-budget:64MiB kv-dtype:bf16 attn-dtype:bf16 max-batch:8
        micro-batches:2 chunk:64 block-tokens:8 threads:1 no-gate-table:-
        rank-timeout:5 topology:deploy/examples/local-2stage.yaml wire-dtype:fp32"
SAMPLING="max-new-tokens temperature top-k top-p min-p repetition-penalty seed ignore-eos"

for cmd in generate score eval perplexity loglikelihood bench; do
  help=$($BIN $cmd --help 2>&1)
  missing="" refused=""
  for ov in $ENGINE; do
    o=${ov%%:*} v=${ov#*:}
    grep -q -- "--$o\b" <<<"$help" || missing+=" --$o"
    # the parser stops at --help: exit 0 means every option before it was taken
    if [ "$v" = - ]; then args=(--$o); else args=(--$o "$v"); fi
    $BIN $cmd "${args[@]}" --help >/dev/null 2>&1 || refused+=" --$o"
  done
  if [ -z "$missing$refused" ]; then ok "$cmd accepts and lists every engine option"
  else bad "$cmd: not listed:$missing; refused:$refused"; fi
  $BIN $cmd --kv-dtype fp16 >/dev/null 2>&1
  rc=$?; [ $rc -eq 2 ] && ok "$cmd --kv-dtype fp16 exits 2" || bad "$cmd --kv-dtype fp16 exited $rc"
  $BIN $cmd --wire-dtype fp16 >/dev/null 2>&1
  rc=$?; [ $rc -eq 2 ] && ok "$cmd --wire-dtype fp16 exits 2" || bad "$cmd --wire-dtype fp16 exited $rc"
  err=$($BIN $cmd --attn-dtype fp16 2>&1 >/dev/null)
  rc=$?
  if [ $rc -eq 2 ] && grep -q -- "--attn-dtype: expected fp32 or bf16" <<<"$err"; then
    ok "$cmd --attn-dtype fp16 exits 2, naming the option"
  else bad "$cmd --attn-dtype fp16 exited $rc: $err"; fi
done

help=$($BIN generate --help 2>&1) listed=""
for o in $SAMPLING; do grep -q -- "--$o\b" <<<"$help" || listed+=" --$o"; done
[ -z "$listed" ] && ok "generate lists the sampling options" || bad "generate lacks:$listed"
for cmd in score eval perplexity loglikelihood; do
  help=$($BIN $cmd --help 2>&1) listed=""
  for o in $SAMPLING; do grep -q -- "--$o\b" <<<"$help" && listed+=" --$o"; done
  [ -z "$listed" ] && ok "$cmd --help lists no sampling option" || bad "$cmd --help lists$listed"
done

# a model that does not load: one message, exit 1, no crash (eval freed
# its request list before it had one)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
echo '{"id": 1, "context": "a", "choices": ["b", "c"], "gold": 0}' >"$T/task.jsonl"
for args in "eval --task $T/task.jsonl" "perplexity --text $T/task.jsonl" \
            "loglikelihood --input $T/task.jsonl"; do
  $BIN $args --model "$T/missing" >/dev/null 2>"$T/err"
  rc=$?
  if [ $rc -eq 1 ] && grep -q "missing/config.json" "$T/err" && [ "$(wc -l <"$T/err")" -eq 1 ]; then
    ok "${args%% *} with a missing model: one message, exit 1"
  else bad "${args%% *} with a missing model: exit $rc: $(head -c 300 "$T/err")"; fi
done

echo "e2e_options: $fails failed"
[ $fails -eq 0 ]
