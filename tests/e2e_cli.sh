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

# --- stdin/stdout, --help, --version, info
printf '{"id":"p","tokens":[1,2]}\n' | $BIN score --model $FX/llama_gqa_tied --input - --out - 2>/dev/null > $T/stdout.jsonl
check "score reads stdin and writes stdout" grep -q '"id":"p","logprobs":\[' $T/stdout.jsonl
for c in generate score info launch slurm bench serve; do
  $BIN $c --help > $T/help 2>&1
  check "$c --help" test $? -eq 0 -a -s $T/help
done
check "--version" bash -c "$BIN --version | grep -q '^egmla '"
$BIN info --model $FX/egmla_ln --kv-budget 1MiB --context 100 > $T/info
check "info prints KV bytes per token" grep -q 'bytes per token, all layers' $T/info

echo "e2e_cli: $fails failed"
[ $fails -eq 0 ]
