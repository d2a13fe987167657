#!/usr/bin/env bash
# End-to-end: `egmla bench --calibrate` writes a calibration (one process:
# the link is not measured; under mpirun with 2 ranks: it is), `egmla plan`
# reads it (or a topology's per-node files) and its JSON holds together:
# stages cover the layers, fractions sum to 1, the wire bytes are the wire
# dtype's, a slow enough link becomes the bound; `launch --dry-run` prints
# the calibrated split; bad input exits 1 or 2 with a message naming it.
# Nothing here is timed: only the arithmetic and the contract are checked.
set -u
BIN=${BIN:-bin/egmla}
CFG=models/egmla-tiny/config.json
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export OPENBLAS_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fails=0
ok()   { echo "  ok: $*"; }
bad()  { echo "  FAIL: $*"; fails=$((fails+1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
py() { python3 -c "$@"; }

$BIN bench --calibrate --config $CFG --chunk 64 --json $T/cal.json 2>$T/err
check "bench --calibrate exits 0" test $? -eq 0
check "one process: the link is said not measured" grep -q "link: not measured" $T/err
check "the calibration has the model's shape and increasing rows" py "
import json
d = json.load(open('$T/cal.json')); c = json.load(open('$CFG'))
assert d['egmla_calibration'] == 1 and d['model']['hidden_size'] == c['hidden_size']
r = d['decode']['rows']; assert r == sorted(r) and r[0] == 1 and len(d['decode']['layer_s']) == len(r)
assert all(a <= b for a, b in zip(d['decode']['layer_s'], d['decode']['layer_s'][1:]))
assert all(x > 0 for x in d['decode']['layer_s'] + d['decode']['head_s'] + d['prefill']['layer_s'])
assert d['link']['measured'] is False and d['prefill']['chunks'][-1] == 64
"
check "co-location measured: 2 .. cores + 2 copies at once, a slowdown per row count" py "
import json, os
c = json.load(open('$T/cal.json'))['colocated']
assert c['copies'] == list(range(2, os.cpu_count() + 3)), c
assert c['rows'] == [1, 8, 32] and all(len(s) == 3 and min(s) > 0 for s in c['slowdown'])
"
$BIN bench --calibrate --colocate 0 --config $CFG --chunk 64 --json $T/cal0.json 2>/dev/null
check "--colocate 0: no co-location measured" py "
import json; assert 'colocated' not in json.load(open('$T/cal0.json'))"
if command -v mpirun >/dev/null 2>&1; then
  mpirun --oversubscribe -np 2 $BIN bench --calibrate --config $CFG --chunk 64 --json $T/cal2.json 2>$T/err2
  check "under mpirun, 2 ranks: the link is measured" py "
import json; l = json.load(open('$T/cal2.json'))['link']
assert l['measured'] is True and l['latency_s'] > 0 and l['bytes_per_s'] > 0"
fi

# --- plan from the calibration: the JSON's arithmetic
$BIN plan --config $CFG --ranks 3 --batch 8 --context 64 --calibration $T/cal.json --json $T/p.json >$T/out 2>$T/err
check "plan exits 0 and prints the bound" sh -c "grep -q '^bound:' $T/out"
check "plan: stages cover the layers, fractions sum to 1, bf16 wire bytes, KV fits" py "
import json
p = json.load(open('$T/p.json')); c = json.load(open('$CFG'))
st = p['per_stage']; L = c['num_hidden_layers']; D = c['hidden_size']
assert p['stages'] == 2 and st[0]['layers'][0] == 0 and st[-1]['layers'][1] == L - 1
assert all(st[i + 1]['layers'][0] == st[i]['layers'][1] + 1 for i in range(len(st) - 1))
for s in st:
    assert abs(s['busy'] + s['wait'] + s['bubble'] - 1) < 1e-9 and s['kv_sequences'] > 0
r = p['rows_per_micro_batch']; assert r == 4 and p['micro_batches'] == 2
assert abs(p['wire_bytes_per_token_per_hop'] - (2 * D + (14 + 6 * r) / r)) < 1e-9
assert p['decode_tokens_per_s'] > 0 and p['ttft_s'] > 0
assert abs(p['decode_round_s'] * p['decode_tokens_per_s'] - 8) < 1e-6
"
$BIN plan --config $CFG --ranks 3 --batch 8 --micro-batches 4 --calibration $T/cal.json \
  --link-gbps 0.00001 --link-us 0 --wire-dtype fp32 --json $T/slow.json >/dev/null 2>&1
check "a link of 10 kbit/s is the bound" py "
import json; p = json.load(open('$T/slow.json'))
assert p['bound'] == 'link stage 1 -> 2', p['bound']; assert p['wire_dtype'] == 'fp32'"

# --- a topology naming each node's calibration (relative to the topology)
mkdir -p $T/t/cal $T/m && cp $T/cal.json $T/t/cal/a.json && cp $CFG $T/m/config.json
cat > $T/t/topo.yaml <<Y
nodes:
  - {name: a, host: localhost, slots: 3, calibration: cal/a.json}
stages: [{node: a}, {node: a}]
Y
$BIN plan --config $CFG --topology $T/t/topo.yaml --batch 4 >$T/out 2>$T/err
check "plan --topology with per-node calibrations: no calibration run" \
  sh -c "! grep -q 'measuring this node' $T/err && grep -q '^decode:' $T/out"
$BIN launch $T/t/topo.yaml --dry-run --workdir $T/wd -- generate --model $T/m >$T/out 2>&1
check "launch --dry-run splits by the nodes' calibrations" grep -q "stage costs: the nodes' calibrations" $T/out
check "launch --dry-run prints each stage's share" grep -q "^# stage 2 (a, 1 thread): layers .* + lm_head, predicted" $T/out

# --- bad input
$BIN plan --config $CFG --batch 4 >/dev/null 2>$T/err
check "no --ranks or --topology: exit 2" test $? -eq 2
sed 's/"hidden_size": [0-9]*/"hidden_size": 7/' $T/cal.json > $T/other.json
$BIN plan --config $CFG --ranks 3 --calibration $T/other.json >/dev/null 2>$T/err
check "another model's calibration: exit 1, named" sh -c "[ $? -eq 1 ] && grep -q 'other.json: calibrated for' $T/err"
sed -i 's/a.json/gone.json/' $T/t/topo.yaml
$BIN plan --config $CFG --topology $T/t/topo.yaml >/dev/null 2>$T/err
check "a missing node calibration: exit 1, topology line and file named" \
  sh -c "[ $? -eq 1 ] && grep -q 'topo.yaml line 2: node .a.: .*gone.json' $T/err"

[ $fails -eq 0 ] && echo "e2e_plan: all passed" || { echo "e2e_plan: $fails failed"; exit 1; }
