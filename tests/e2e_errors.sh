#!/usr/bin/env bash
# End-to-end: every class of bad input and fault in docs/ERRORS.md, through
# the real binary. Each case checks the exit status and the message class
# (and prints the message, which is where docs/ERRORS.md's samples come
# from); the output-fault cases also check that the output holds only whole
# records and that --resume finishes the job. A case whose mechanism is not
# available here (no mount namespaces, ...) prints "SKIP: reason".
set -u
BIN=${BIN:-bin/egmla}
FX=tests/fixtures/models
M=$FX/llama_mha
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=passive
fails=0
ok()   { echo "  ok: $*"; }
bad()  { echo "  FAIL: $*"; fails=$((fails+1)); }
skip() { echo "  SKIP: $*"; }
py() { /usr/bin/python3 -c "$@"; }

# expect NAME STATUS REGEX -- command...: runs it (stderr to $T/err), checks
# the exit status and that stderr matches REGEX (grep -E).
expect() {
  local name=$1 want=$2 re=$3; shift 4
  "$@" >"$T/stdout" 2>"$T/err"; local rc=$?
  local msg; msg=$(grep -m1 -E "$re" "$T/err")
  if [ "$rc" -eq "$want" ] && [ -n "$msg" ]; then
    ok "$name: exit $rc"; echo "    msg: $msg"
  else
    bad "$name: exit $rc (want $want), stderr: $(head -c 400 "$T/err")"
  fi
}

# whole_lines FILE: the file is empty or ends in "\n", and every line is a
# JSON object with an id (what --resume relies on).
whole_lines() {
  py "
import json, sys
b = open('$1', 'rb').read()
assert not b or b.endswith(b'\n'), 'torn last line: %r' % b[-40:]
for l in b.splitlines(): assert 'id' in json.loads(l), l
"
}

printf '{"id":1,"tokens":[1,2,3]}\n' > $T/one.jsonl
py "
with open('$T/many.jsonl', 'w') as f:
    for i in range(400): f.write('{\"id\":%d,\"tokens\":[1,%d,3]}\n' % (i, i % 50 + 1))
"
GEN=(generate --input $T/many.jsonl --max-new-tokens 8 --ignore-eos --temperature 0)

echo "-- malformed model files: exit 1, naming the file and what is wrong"
py "
import json, os, shutil, struct
T, src = '$T', '$M'
def mk(name):
    d = T + '/' + name; shutil.copytree(src, d); return d
def hdr(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]
    return json.loads(b[8:8 + n]), b[8 + n:]
def wr(p, h, data):
    hj = json.dumps(h).encode(); open(p, 'wb').write(struct.pack('<Q', len(hj)) + hj + data)
p = mk('truncated') + '/model.safetensors'; b = open(p, 'rb').read(); open(p, 'wb').write(b[:len(b) // 2])
p = mk('short') + '/model.safetensors'; open(p, 'wb').write(b'\x10\0\0')
p = mk('badheader') + '/model.safetensors'; b = open(p, 'rb').read(); open(p, 'wb').write(b[:8] + b'{\"x\":' + b[13:])
p = mk('dtype') + '/model.safetensors'; h, data = hdr(p); h['model.embed_tokens.weight']['dtype'] = 'I32'; wr(p, h, data)
p = mk('shape') + '/model.safetensors'; h, data = hdr(p)
k = 'model.layers.0.self_attn.q_proj.weight'; s = h[k]['shape']; h[k]['shape'] = [s[0] * s[1] // 2, 2]; wr(p, h, data)
p = mk('missing') + '/model.safetensors'; h, data = hdr(p); del h['model.layers.0.mlp.down_proj.weight']; wr(p, h, data)
def cfg(name, **kw):
    d = mk(name); c = json.load(open(d + '/config.json')); c.update(kw); json.dump(c, open(d + '/config.json', 'w'))
cfg('modeltype', model_type='mistral')
cfg('badconfig', num_attention_heads=0)
cfg('ropescaling', rope_scaling={'type': 'yarn', 'factor': 4})
cfg('hugeconfig', vocab_size=2**31 - 1)
open(mk('badjson') + '/config.json', 'w').write('{\"model_type\": \"llama\",\n \"hidden_size\": 8,,}\n')
d = mk('noconfig'); os.remove(d + '/config.json')
d = mk('dirconfig'); os.remove(d + '/config.json'); os.mkdir(d + '/config.json')
"
run1() { "$BIN" generate --model "$T/$1" --input $T/one.jsonl --out $T/o.jsonl; }
expect "truncated safetensors"      1 'truncated/model.safetensors: .*past the end' -- run1 truncated
expect "file shorter than a header" 1 'short/model.safetensors: .*expected at least 8' -- run1 short
expect "header not JSON"            1 'badheader/model.safetensors: header is not valid JSON' -- run1 badheader
expect "unknown dtype"              1 'dtype/model.safetensors: tensor .*expected dtype F32, BF16 or F16, found "I32"' -- run1 dtype
expect "wrong shape"                1 'shape/model.safetensors: tensor .*expected shape \[48, 48\], found' -- run1 shape
expect "missing tensor"             1 'missing: tensor "model.layers.0.mlp.down_proj.weight" missing' -- run1 missing
expect "unknown model_type"         1 'modeltype/config.json: key "model_type": expected' -- run1 modeltype
expect "bad config value"           1 'badconfig/config.json: key "num_attention_heads": expected a positive integer' -- run1 badconfig
expect "unsupported config option"  1 'ropescaling/config.json: .*rope_scaling' -- run1 ropescaling
expect "config sizes overflow"      1 'hugeconfig/config.json: .* expected at most' -- run1 hugeconfig
expect "config.json not JSON"       1 'badjson/config.json: line 2 column [0-9]+: invalid JSON' -- run1 badjson
expect "config.json missing"        1 'noconfig/config.json' -- run1 noconfig
expect "config.json unreadable"     1 'dirconfig/config.json' -- run1 dirconfig
expect "model directory missing"    1 'nonexistent' -- "$BIN" generate --model $T/nonexistent --input $T/one.jsonl --out $T/o.jsonl
expect "input file missing"         1 'missing.jsonl' -- "$BIN" generate --model $M --input $T/missing.jsonl --out $T/o.jsonl
expect "--dump-logits -"            1 'dump-logits needs a file' -- "$BIN" score --model $M --input $T/one.jsonl --out $T/o.jsonl --dump-logits -
expect "output is the input"        1 'is the input file' -- "$BIN" generate --model $M --input $T/one.jsonl --out $T/one.jsonl

echo "-- topology YAML (egmla launch checks it before mpirun): exit 2, naming the YAML line"
printf 'nodes: [{name: a\nstages: x\n' > $T/syntax.yaml
printf 'nodes: [{name: a, slots: 3}]\nstages:\n  - {node: a, layers: auto, thread: 2}\n' > $T/key.yaml
printf 'nodes: [{name: a, slots: 3}]\nstages:\n  - {node: a, layers: auto}\n  - {node: b, layers: auto}\n' > $T/node.yaml
printf 'nodes: [{name: a, slots: 3}]\nstages:\n  - {node: a, layers: 0-1}\n  - {node: a, layers: 1-1}\n' > $T/overlap.yaml
printf 'nodes: [{name: a}]\nstages:\n  - {node: a, layers: 0-0}\n  - {node: a, layers: 1-5}\n  - {node: a, layers: 6-99}\n' > $T/many.yaml
printf 'kv_budget: lots\nnodes: [{name: a}]\nstages: [{node: a, layers: auto}]\n' > $T/size.yaml
printf 'nodes: [{name: a, slots: 1}]\nstages: [{node: a, layers: auto}, {node: a, layers: auto}]\n' > $T/slots.yaml
launch() { "$BIN" launch --dry-run --workdir $T/wd "$T/$1" -- generate --model $M --input $T/one.jsonl --out $T/o.jsonl; }
expect "YAML syntax error"          2 'syntax.yaml line [0-9]+: YAML syntax error' -- launch syntax.yaml
expect "unknown key"                2 "key.yaml line 3: unknown key 'thread'" -- launch key.yaml
expect "undeclared node"            2 "node.yaml line 4: node 'b' is not declared" -- launch node.yaml
expect "overlapping layer ranges"   2 'overlap.yaml line 4: layers 1 overlap' -- launch overlap.yaml
expect "ranges beyond the model"    2 'many.yaml line [0-9]+: 3 stages but the model has only 2 layers' -- launch many.yaml
expect "bad size"                   2 'size.yaml line 1: .*kv_budget' -- launch size.yaml
expect "slots exceeded"             2 'slots.yaml line [0-9]+: .*slot' -- launch slots.yaml
expect "topology file missing"      2 'nothere.yaml' -- launch nothere.yaml
# the same files given to a command with --topology: the same status 2
expect "--topology file missing"    2 'nothere.yaml' -- "$BIN" generate --model $M --input $T/one.jsonl --out $T/o.jsonl --topology $T/nothere.yaml
expect "--topology YAML syntax"     2 'syntax.yaml line [0-9]+: YAML syntax error' -- "$BIN" score --model $M --input $T/one.jsonl --out $T/o.jsonl --topology $T/syntax.yaml

echo "-- bad command line: exit 2"
expect "bad sampling option"        2 'top-p' -- "$BIN" generate --model $M --input $T/one.jsonl --out $T/o.jsonl --top-p 7
expect "unknown option"             2 'colour' -- "$BIN" generate --model $M --colour red
expect "bad size option"            2 'kv-budget' -- "$BIN" generate --model $M --input $T/one.jsonl --out $T/o.jsonl --kv-budget lots
expect "KV budget below one block"  1 'KV budget of 8192 bytes does not hold one block' -- "$BIN" generate --model $M --input $T/one.jsonl --out $T/o.jsonl --kv-budget 8KiB

echo "-- an input that is not JSONL at all: one message, exit 1, the old output kept"
head -c 200000 "$BIN" > $T/binary.jsonl
echo precious > $T/keep.jsonl
expect "binary input"               1 'binary.jsonl: not JSONL: none of its first 8 lines' -- "$BIN" score --model $M --input $T/binary.jsonl --out $T/keep.jsonl
if [ "$(grep -c . $T/err)" -le 2 ] && [ "$(cat $T/keep.jsonl)" = precious ]; then ok "binary input: one message, output untouched"
else bad "binary input: $(grep -c . $T/err) stderr lines, output: $(head -c 100 $T/keep.jsonl)"; fi
seq 1 1000 | sed 's/^/plain text line /' > $T/text.jsonl
expect "plain text input"           1 'text.jsonl: not JSONL' -- "$BIN" generate --model $M --input $T/text.jsonl --out $T/o.jsonl

echo "-- a duplicate id: an error record, the first one runs, exit 3"
printf '{"id":"a","tokens":[1,2]}\n{"id":"b","tokens":[1,3]}\n{"id":"a","tokens":[1,4]}\n' > $T/dup.jsonl
expect "duplicate id"               3 'dup.jsonl:3: id "a" is already used by an earlier line' -- "$BIN" score --model $M --input $T/dup.jsonl --out $T/dup_out.jsonl
if py "
import json
r = [json.loads(l) for l in open('$T/dup_out.jsonl')]
assert sorted((x['id'], 'error' in x) for x in r) == [('a', False), ('a', True), ('b', False)], r
"; then ok "duplicate id: results for a and b, one error record for the second a"; else bad "duplicate id records"; fi

echo "-- bad input lines: an error record each, the rest run, exit 3"
{
  printf '{"id":1,"tokens":[1,2],"temperature":-1}\n{"id":2,"tokens":[1],"top_p":3}\n{"id":3}\n'
  printf '{"id":4,"prompt":"a","tokens":[1]}\n{"id":5,"tokens":[1],"colour":1}\n[1,2]\nnot json\n'
  printf '{"id":6,"tokens":[1,99999]}\n{"id":7,"tokens":[1,2],"max_new_tokens":1}\n'
  printf '{"id":8,"tokens":[%s]}\n' "$(seq -s, 1 200 | sed 's/[0-9]\+/1/g')"
  printf '{"id":9,"tokens":[%s],"max_new_tokens":8}\n' "$(seq -s, 1 40 | sed 's/[0-9]\+/1/g')"
  printf '{"id":10,"prompt":"hello"}\n'
} > $T/lines.jsonl
"$BIN" generate --model $M --input $T/lines.jsonl --out $T/lines_out.jsonl --kv-budget 30KiB 2>$T/err; rc=$?
if [ $rc -eq 3 ]; then ok "bad lines: exit 3"; else bad "bad lines: exit $rc (want 3)"; fi
sed 's/^/    msg: /' $T/err
if py "
import json
recs = {}
for l in open('$T/lines_out.jsonl'):
    r = json.loads(l); recs.setdefault(r['id'], []).append(r)
errs = {k: v[0]['error'] for k, v in recs.items() if 'error' in v[0]}
want = {1: 'temperature', 2: 'top_p', 3: 'neither', 4: 'both', 5: 'unknown key', 6: 'vocabulary',
        8: 'context', 9: 'KV cache', 10: 'tokenizer'}
for k, w in want.items(): assert w in errs.get(k, ''), (k, errs.get(k))
assert len(recs[None]) == 2, recs.get(None)   # the array and the non-JSON line
assert 'tokens' in recs[7][0], recs[7]
"; then ok "one record per line; each error names its problem"; else bad "error records"; fi

echo "-- output that cannot be written"
# A path no one can create: fails before any work.
expect "output under /proc"         1 'cannot create output file "/proc/' -- "$BIN" "${GEN[@]}" --model $M --out /proc/egmla-nope/out.jsonl
if grep -q 'requests,' $T/err; then bad "unwritable output: work was done before failing"; else ok "no work before failing"; fi

# Read-only directory (root ignores modes, so a read-only mount).
if unshare -m true 2>/dev/null; then
  mkdir -p $T/ro
  expect "read-only directory"      1 'cannot create output file ".*ro/out.jsonl": Read-only file system' -- \
    unshare -m sh -c "mount -t tmpfs tmpfs $T/ro && mount -o remount,ro $T/ro && exec \"\$0\" \"\$@\"" \
    "$BIN" "${GEN[@]}" --model $M --out $T/ro/out.jsonl
  if grep -q 'requests,' $T/err; then bad "read-only: work was done before failing"; else ok "no work before failing"; fi
else
  skip "read-only directory: mount namespaces (unshare -m) not permitted here"
fi

# Uninterrupted run, to compare resumed runs with.
"$BIN" "${GEN[@]}" --model $M --out $T/full.jsonl 2>/dev/null || bad "uninterrupted run failed"

# resumed NAME PARTIAL: --resume on a copy of PARTIAL in a roomy directory
# finishes the job, and the union equals the uninterrupted run.
resumed() {
  cp "$2" $T/resume.jsonl
  "$BIN" "${GEN[@]}" --model $M --out $T/resume.jsonl --resume 2>/dev/null; local rc=$?
  if [ $rc -eq 0 ] && py "
import json
a = sorted(open('$T/full.jsonl').read().splitlines())
b = sorted(open('$T/resume.jsonl').read().splitlines())
assert a == b, (len(a), len(b))
"; then ok "$1: --resume completes it, equal to an uninterrupted run"
  else bad "$1: --resume (exit $rc) differs from an uninterrupted run"; fi
}

# Full disk: a 16 KiB tmpfs holds about half the results.
if unshare -m true 2>/dev/null; then
  mkdir -p $T/small
  expect "disk full (small tmpfs)"  1 'cannot write to output ".*small/out.jsonl": No space left on device' -- \
    unshare -m sh -c "mount -t tmpfs -o size=16k tmpfs $T/small && \"\$0\" \"\$@\"; s=\$?; cp $T/small/out.jsonl $T/small_out.jsonl; exit \$s" \
    "$BIN" "${GEN[@]}" --model $M --out $T/small/out.jsonl
  n=$(wc -l < $T/small_out.jsonl 2>/dev/null || echo 0)
  if [ "$n" -gt 0 ] && [ "$n" -lt 400 ] && whole_lines $T/small_out.jsonl; then
    ok "disk full: $n whole records kept, no torn line"
    resumed "disk full" $T/small_out.jsonl
  else bad "disk full: output has $n lines or a torn line"; fi
else
  skip "disk full via tmpfs: mount namespaces (unshare -m) not permitted here"
fi

# File-size limit (ulimit -f, in 1 KiB blocks): EFBIG, not a SIGXFSZ death.
expect "file-size limit (ulimit -f)" 1 'cannot write to output ".*/fsize.jsonl": File too large' -- \
  bash -c "ulimit -f 16 && exec \"\$0\" \"\$@\"" "$BIN" "${GEN[@]}" --model $M --out $T/fsize.jsonl
n=$(wc -l < $T/fsize.jsonl)
if [ "$n" -gt 0 ] && [ "$n" -lt 400 ] && whole_lines $T/fsize.jsonl; then
  ok "file-size limit: $n whole records kept, no torn line"
  resumed "file-size limit" $T/fsize.jsonl
else bad "file-size limit: output has $n lines or a torn line"; fi

# A device that is always full.
expect "write to /dev/full"         1 'cannot write to output "/dev/full": No space left on device' -- \
  "$BIN" "${GEN[@]}" --model $M --out /dev/full

# stdout closed by the reader (a pipe into head): EPIPE, exit 1.
"$BIN" "${GEN[@]}" --model $M --out - 2>$T/err | head -c 10 >/dev/null; rc=${PIPESTATUS[0]}
if [ $rc -eq 1 ] && grep -q 'Broken pipe' $T/err; then ok "reader closed stdout: exit 1"; echo "    msg: $(grep -m1 'Broken pipe' $T/err)"
else bad "reader closed stdout: exit $rc, $(head -c 300 $T/err)"; fi

# A crash left a torn last line: --resume cuts it and finishes.
head -n 100 $T/full.jsonl > $T/torn.jsonl
printf '{"id":100,"tokens":[1,' >> $T/torn.jsonl
resumed "torn last line" $T/torn.jsonl

echo "e2e_errors: $fails failed"
[ $fails -eq 0 ]
