#!/usr/bin/env bash
# End-to-end: the command-line contract of generate, score and info, run
# through the real binary on committed fixtures. Checks formats, bad-input
# behaviour (error records, exit statuses, nothing lost) and that the CLI
# agrees with the reference's expected.json.
set -u
BIN=${BIN:-bin/egmla}
FX=tests/fixtures/models
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
ok()   { echo "  ok: $*"; }
bad()  { echo "  FAIL: $*"; fails=$((fails+1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
py() { python3 -c "$@"; }

# --- score matches the reference, and --dump-logits has the documented layout
py "
import json
e = json.load(open('$FX/egmla_ln/expected.json'))
with open('$T/score_in.jsonl', 'w') as f:
    for i, c in enumerate(e['score']): f.write(json.dumps({'id': 's%d' % i, 'tokens': c['tokens']}) + '\n')
    f.write(json.dumps({'id': 'L', 'tokens': e['logits']['tokens']}) + '\n')
"
$BIN score --model $FX/egmla_ln --input $T/score_in.jsonl --out $T/score_out.jsonl --dump-logits $T/logits.bin 2>$T/err
check "score exits 0" test $? -eq 0
check "score matches the reference within 1e-3 and dump-logits is [n, V] float32 in input order" py "
import json, struct, sys
e = json.load(open('$FX/egmla_ln/expected.json'))
V = json.load(open('$FX/egmla_ln/config.json'))['vocab_size']
out = {json.loads(l)['id']: json.loads(l) for l in open('$T/score_out.jsonl')}
worst = 0
for i, c in enumerate(e['score']):
    got = out['s%d' % i]['logprobs']
    assert len(got) == len(c['tokens']) - 1, (len(got), len(c['tokens']))
    worst = max([worst] + [abs(a - b) for a, b in zip(got, c['logprobs'])])
assert worst <= 1e-3, worst
data = open('$T/logits.bin', 'rb').read()
lens = [len(c['tokens']) for c in e['score']] + [len(e['logits']['tokens'])]
assert len(data) == sum(lens) * V * 4, (len(data), sum(lens) * V * 4)
off = sum(lens[:-1]) * V * 4
for p, row in enumerate(e['logits']['values']):
    vals = struct.unpack_from('<%df' % V, data, off + p * V * 4)
    assert max(abs(a - b) for a, b in zip(vals, row)) < 1e-3 * (1 + max(map(abs, row)))
print('    max |dlogprob| = %.2e' % worst)
"

# --- greedy generate matches the reference; output format
py "
import json
e = json.load(open('$FX/mla/expected.json'))
with open('$T/gen_in.jsonl', 'w') as f:
    for i, c in enumerate(e['greedy']): f.write(json.dumps({'id': i, 'tokens': c['prompt']}) + '\n')
"
$BIN generate --model $FX/mla --input $T/gen_in.jsonl --out $T/gen_out.jsonl --temperature 0 --ignore-eos --max-new-tokens 16 2>$T/err
check "generate exits 0" test $? -eq 0
check "greedy tokens equal the reference; keys and finish_reason as documented" py "
import json
e = json.load(open('$FX/mla/expected.json'))
out = {json.loads(l)['id']: json.loads(l) for l in open('$T/gen_out.jsonl')}
for i, c in enumerate(e['greedy']):
    o = out[i]
    assert o['tokens'] == c['tokens'], (o['tokens'], c['tokens'])
    assert o['finish_reason'] == 'length' and 'text' not in o and set(o) == {'id', 'tokens', 'finish_reason'}, o
"

# --- seeded sampling is reproducible and independent of what shares the batch
printf '{"id":"a","tokens":[1,5,9],"temperature":0.9,"seed":42}\n' > $T/one.jsonl
printf '{"id":"x","tokens":[1,7]}\n{"id":"a","tokens":[1,5,9],"temperature":0.9,"seed":42}\n{"id":"y","tokens":[1,3,3,3]}\n' > $T/three.jsonl
$BIN generate --model $FX/egmla_rms_noup --input $T/one.jsonl --out $T/one_out.jsonl --max-new-tokens 20 --ignore-eos 2>/dev/null
$BIN generate --model $FX/egmla_rms_noup --input $T/three.jsonl --out $T/three_out.jsonl --max-new-tokens 20 --ignore-eos 2>/dev/null
check "a seeded request draws the same tokens alone and in a batch" py "
import json
a = [json.loads(l) for l in open('$T/one_out.jsonl')][0]
b = [json.loads(l) for l in open('$T/three_out.jsonl') if json.loads(l)['id'] == 'a'][0]
assert a['tokens'] == b['tokens'] and len(a['tokens']) == 20, (a, b)
"

# --- bad lines: error record with the id, message with the line number on
# stderr, the other lines still run, exit status 3
printf '{"id":1,"tokens":[1,2,3]}\n{"id":2,"tokens":[1,"x"]}\nnot json\n{"id":4,"tokens":[1,99999]}\n{"id":5,"tokens":[%s]}\n{"id":6,"tokens":[4,5]}\n' \
  "$(seq -s, 1 200)" > $T/bad.jsonl
$BIN generate --model $FX/llama_mha --input $T/bad.jsonl --out $T/bad_out.jsonl --max-new-tokens 4 2>$T/bad_err
check "some failed lines give exit status 3" test $? -eq 3
check "every line has a record; bad ones carry error and id" py "
import json
recs = [json.loads(l) for l in open('$T/bad_out.jsonl')]
ids = sorted(str(r.get('id')) for r in recs)
assert len(recs) == 6, recs
byid = {r.get('id'): r for r in recs}
assert 'tokens' in byid[1] and 'tokens' in byid[6], recs
for i in (2, 4, 5): assert 'error' in byid[i], byid[i]
assert 'context' in byid[5]['error'], byid[5]
assert None in byid and 'error' in byid[None]
"
check "stderr names the input file and line numbers" grep -q "bad.jsonl:3" $T/bad_err

# --- missing or unusable files fail before any work, naming the path
$BIN generate --model $T/nonexistent --input $T/one.jsonl --out $T/x.jsonl 2>$T/err; rc=$?
check "missing model: exit 1 and the path in the message" test $rc -eq 1 -a -n "$(grep nonexistent $T/err)"
$BIN generate --model $FX/mla --input $T/missing.jsonl --out $T/x.jsonl 2>$T/err; rc=$?
check "missing input: exit 1 and the path in the message" test $rc -eq 1 -a -n "$(grep missing.jsonl $T/err)"
$BIN generate --model $FX/mla --input $T/one.jsonl --out $T/no/such/dir/x.jsonl 2>$T/err; rc=$?
check "unwritable output: exit 1 and the path in the message" test $rc -eq 1 -a -n "$(grep no/such/dir $T/err)"
$BIN generate --model $FX/mla --input $T/one.jsonl --out $T/x.jsonl --top-p 7 2>$T/err; rc=$?
check "bad sampling option: exit 2" test $rc -eq 2
printf '{"id":1,"prompt":"hello"}\n' > $T/text.jsonl
$BIN generate --model $FX/mla --input $T/text.jsonl --out $T/text_out.jsonl 2>$T/err; rc=$?
check "text prompt without tokenizer.json: error record naming the problem" \
  test $rc -eq 3 -a -n "$(grep tokenizer $T/text_out.jsonl)"

# --- nothing lost: an existing output survives a failure before the first
# result; report paths are checked before any work
echo precious > $T/keep.jsonl
$BIN generate --model $T/no-such-model --input $T/one.jsonl --out $T/keep.jsonl 2>$T/err; rc=$?
check "mistyped --model: exit 1, the old --out untouched" test $rc -eq 1 -a "$(cat $T/keep.jsonl)" = precious
$BIN score --model $T/no-such-model --input $T/one.jsonl --out $T/fresh.jsonl 2>$T/err
check "a failed run leaves no new empty output behind" test ! -e $T/fresh.jsonl
printf '' > $T/empty.jsonl
$BIN score --model $FX/mla --input $T/empty.jsonl --out $T/keep.jsonl 2>$T/err; rc=$?
check "a successful run with no input lines empties the old output" test $rc -eq 0 -a ! -s $T/keep.jsonl
printf '{"id":"a","context":"x","choices":["y","z"],"gold":0}\n' > $T/task.jsonl
for o in "eval --task $T/task.jsonl --out" "eval --task $T/task.jsonl --per-example" \
         "perplexity --text $T/one.jsonl --out" "bench --context 8 --batch 1 --json"; do
  set -- $o
  $BIN "$@" $T/no/such/dir/r.json --model $FX/mla >$T/out 2>$T/err; rc=$?
  check "$1 ${*: -1} into a missing directory: exit 1 at once, naming it" \
    test $rc -eq 1 -a -n "$(grep no/such/dir $T/err)" -a ! -s $T/out
done

# --- make install PREFIX=...: the installed binary finds its default model
# from anywhere (not only from the source tree)
make -s --no-print-directory install PREFIX=$T/prefix INSTALL_FROM=$BIN >$T/install.log 2>&1
check "make install: binary, model and docs in PREFIX" \
  test -x $T/prefix/bin/egmla -a -s $T/prefix/share/egmla/models/egmla-tiny/model.safetensors \
       -a -s $T/prefix/share/doc/egmla/README.md -a -s $T/prefix/share/doc/egmla/ERRORS.md
(cd / && env -u EGMLA_MODEL $T/prefix/bin/egmla info) > $T/info_installed 2>&1
check "the installed binary finds its default model" grep -q "$T/prefix/bin/../share/egmla/models/egmla-tiny" $T/info_installed

# --- stdin/stdout, --help, --version, info
printf '{"id":"p","tokens":[1,2]}\n' | $BIN score --model $FX/llama_gqa_tied --input - --out - 2>/dev/null > $T/stdout.jsonl
check "score reads stdin and writes stdout" grep -q '"id":"p","logprobs":\[' $T/stdout.jsonl
for c in generate score info launch slurm bench serve; do
  $BIN $c --help > $T/help 2>&1
  check "$c --help" test $? -eq 0 -a -s $T/help
done
$BIN score --help > $T/help
check "score --help lists no sampling flags" bash -c "! grep -qE -- '--(temperature|top-k|top-p|min-p|seed|max-new-tokens|ignore-eos)' $T/help && grep -q -- --dump-logits $T/help"
$BIN generate --help > $T/help
check "generate --help lists sampling flags, not --dump-logits" bash -c "grep -q -- --temperature $T/help && ! grep -q -- --dump-logits $T/help"
for c in generate score eval perplexity loglikelihood info launch slurm bench; do $BIN $c --help; done > $T/help 2>&1
check "every --help: at most one default per line" bash -c "! grep -E '\(default.*\(default' $T/help"
# the binary sets its own OpenMP waiting policy (idle threads that spin slow a
# busy machine 4-8x): read from the running process once it waits for input
mkfifo $T/fifo
env -u OMP_WAIT_POLICY $BIN score --model $FX/llama_gqa_tied --input $T/fifo --out $T/fifo_out.jsonl 2>/dev/null &
pid=$!
exec 3>$T/fifo   # returns once egmla has opened its input: after any re-exec
tr '\0' '\n' < /proc/$pid/environ > $T/environ
exec 3>&-
wait $pid
check "OMP_WAIT_POLICY=passive unless the user set it" grep -qx OMP_WAIT_POLICY=passive $T/environ
# launch runs mpirun and removes its hostfile/rankfile folder afterwards,
# passing mpirun's exit status on (a stand-in mpirun checks the files exist)
mkdir -p $T/launchtmp
printf 'nodes: [{name: a, host: localhost, slots: 3}]\nstages: [{node: a}, {node: a}]\n' > $T/topo.yaml
cat > $T/fake-mpirun <<'SH'
#!/bin/sh
while [ $# -gt 0 ]; do [ "$1" = --hostfile ] && test -s "$2" && echo "hostfile ok"; shift; done
exit 7
SH
chmod +x $T/fake-mpirun
TMPDIR=$T/launchtmp $BIN launch --mpirun $T/fake-mpirun $T/topo.yaml -- generate --model $FX/mla > $T/launch.out 2>&1; rc=$?
check "launch: mpirun's status, its files seen, then removed" \
  bash -c "test $rc -eq 7 && grep -q 'hostfile ok' $T/launch.out && test -z \"\$(ls -A $T/launchtmp)\""
TMPDIR=$T/launchtmp $BIN launch --dry-run $T/topo.yaml -- generate --model $FX/mla > $T/launch.out 2>&1; rc=$?
check "launch --dry-run leaves no folder behind" bash -c "test $rc -eq 0 && test -z \"\$(ls -A $T/launchtmp)\""
check "--version" bash -c "$BIN --version | grep -q '^egmla '"
$BIN info --model $FX/egmla_ln --kv-budget 1MiB --context 100 > $T/info
check "info prints KV bytes per token" grep -q 'bytes per token, all layers' $T/info

echo "e2e_cli: $fails failed"
[ $fails -eq 0 ]
