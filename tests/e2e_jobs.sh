#!/usr/bin/env bash
# End-to-end: the jobs of docs/JOBS.md through the real binary.
#   generate --resume after a kill -9 (and after a torn last line) gives the
#   same set of lines as an uninterrupted run; --stats; eval, perplexity and
#   loglikelihood against sums of `egmla score` log-probs computed here, with
#   lm-eval's token boundary and rolling windows written out in Python.
# The fixture model gets a 300-token byte-level BPE tokenizer trained here
# (its vocabulary is 300).
set -u
BIN=${BIN:-bin/egmla}
FX=tests/fixtures/models
T=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill -9 $pid 2>/dev/null; rm -rf "$T"' EXIT
fails=0
ok()   { echo "  ok: $*"; }
bad()  { echo "  FAIL: $*"; fails=$((fails+1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
# /usr/bin/python3 has tokenizers (README); another python3 may not
PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3
py() { OMP_WAIT_POLICY=passive $PY -c "$@"; }

# --- generate --resume: kill -9 mid-run, resume, compare with a clean run
py "
import json
with open('$T/gen.jsonl', 'w') as f:
    for i in range(1500):
        f.write(json.dumps({'id': 'r%d' % i, 'tokens': [1 + i % 7, 10 + i % 13, 20 + i % 5, 30 + i % 11]}) + '\n')
"
G="$BIN generate --model $FX/egmla_ln --input $T/gen.jsonl --seed 7 --temperature 0.9 --top-k 50 --max-new-tokens 40 --ignore-eos --max-batch 8"
$G --out $T/full.jsonl 2>$T/err
check "uninterrupted generate exits 0" test $? -eq 0
$G --out $T/part.jsonl 2>/dev/null &
pid=$!
n=0
for i in $(seq 1 3000); do   # bounded: at most ~30 s
  n=$(cat $T/part.jsonl 2>/dev/null | wc -l)
  [ "$n" -ge 5 ] && break
  sleep 0.01
done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null; pid=
n=$(wc -l < $T/part.jsonl)
check "the killed job had written some lines but not all ($n)" test "$n" -ge 5 -a "$n" -lt 1500
$G --out $T/part.jsonl --resume 2>$T/err
check "resume exits 0" test $? -eq 0
check "resume reports the skipped lines" grep -q "$n skipped" $T/err
# a torn line (a kill inside a write) must be cut, not read as an id
head -c 200 $T/full.jsonl | head -1 | head -c 30 >> $T/part.jsonl
tail -1 $T/full.jsonl > $T/last.jsonl
$G --out $T/part.jsonl --resume 2>$T/err
check "resume over a torn line exits 0 and skips all 1500" grep -q "1500 skipped" $T/err
check "killed + resumed output equals the uninterrupted run, up to line order" \
  cmp -s <(sort $T/part.jsonl) <(sort $T/full.jsonl)
# a torn line whose id is one not yet done: that request runs again
grep -v '"id":"r1499"' $T/full.jsonl > $T/part2.jsonl
grep '"id":"r1499"' $T/full.jsonl | head -c 25 >> $T/part2.jsonl
$G --out $T/part2.jsonl --resume 2>$T/err
check "a torn line's request is redone once" cmp -s <(sort $T/part2.jsonl) <(sort $T/full.jsonl)
$G --out - --resume >/dev/null 2>$T/err
check "--resume without an output file is refused" test $? -eq 1
check "... with a message" grep -q "resume needs --out" $T/err

# --- --stats: times from admission, queue time apart
head -20 $T/gen.jsonl > $T/g20.jsonl
$BIN generate --model $FX/egmla_ln --input $T/g20.jsonl --out $T/st.jsonl --max-new-tokens 5 --stats --max-batch 4 2>/dev/null
check "--stats has prompt/generated tokens, 0 <= ttft <= total, queue_ms >= 0" py "
import json
for l in open('$T/st.jsonl'):
    s = json.loads(l)['stats']
    assert s['prompt_tokens'] == 4 and s['generated_tokens'] == 5, s
    assert 0 <= s['ttft_ms'] <= s['total_ms'] and s['queue_ms'] >= 0, s
"

# --- eval / perplexity / loglikelihood on the fixture with a text tokenizer
mkdir -p $T/m
cp $FX/egmla_ln/config.json $FX/egmla_ln/model.safetensors $T/m/
# The tokenizer and the hand-encoded requests come from the Python
# `tokenizers` package, independent of the engine's tokenizer. They are
# committed under tests/fixtures/jobs/ so CI needs no PyPI package;
# REGEN_FIXTURES=1 bash tests/e2e_jobs.sh writes them anew.
JF=tests/fixtures/jobs
regen() { [ "${REGEN_FIXTURES:-0}" = 1 ]; }
JFILES="task.jsonl hand_in.jsonl hand_n.json pw_in.jsonl pw_n.json"
if ! regen; then
  cp $JF/tokenizer.json $T/m/
  for f in $JFILES; do cp $JF/$f $T/; done
fi
regen && py "
from tokenizers import ByteLevelBPETokenizer
text = ['In the beginning God created the heaven and the earth.',
        'And the earth was without form, and void; and darkness was upon the face of the deep.',
        'And God said, Let there be light: and there was light.'] * 20
t = ByteLevelBPETokenizer()
t.train_from_iterator(text, vocab_size=300, min_frequency=1, special_tokens=['<|endoftext|>'], show_progress=False)
t.save('$T/m/tokenizer.json')
import json
rows = [
  {'id': 1, 'context': 'In the beginning God created the', 'choices': [' heaven', ' light', ' darkness'], 'gold': 0},
  {'id': 'b', 'context': 'And God said, Let there be ', 'choices': ['light', 'earth'], 'gold': 0},
  {'id': 3, 'context': '', 'choices': ['And the earth', 'Void'], 'gold': 1},
  {'id': 4, 'context': 'and darkness was upon the face of the', 'choices': [' deep', ' d\u00e9\u00e9p', ' earth.'], 'gold': 0},
  {'id': 5, 'context': 'And the earth was without form, and  ', 'choices': ['void', 'light'], 'gold': 0},
]
with open('$T/task.jsonl', 'w') as f:
    for r in rows: f.write(json.dumps(r) + '\n')
"
$BIN eval --model $T/m --task $T/task.jsonl --out $T/rep.json --per-example $T/pe.jsonl >$T/table 2>$T/err
check "eval exits 0" test $? -eq 0
check "eval prints a table with acc and acc_norm" grep -q "acc_norm" $T/table
# by hand: lm-eval's boundary with the Python tokenizer, scored by egmla score
regen && py "
import json
from tokenizers import Tokenizer
tok = Tokenizer.from_file('$T/m/tokenizer.json')
enc = lambda s: tok.encode(s, add_special_tokens=False).ids
BOS = 1
reqs = []
for l in open('$T/task.jsonl'):
    d = json.loads(l)
    for c in d['choices']:
        ctx, cont = d['context'], c
        if ctx == '':
            a, b = [BOS], enc(cont)
        else:
            n = len(ctx) - len(ctx.rstrip())
            if n: cont, ctx = ctx[-n:] + cont, ctx[:-n]
            w, a = enc(ctx + cont), enc(ctx)
            b = w[len(a):]
        reqs.append((a, b))
with open('$T/hand_in.jsonl', 'w') as f:
    for i, (a, b) in enumerate(reqs): f.write(json.dumps({'id': i, 'tokens': a + b}) + '\n')
json.dump([len(b) for a, b in reqs], open('$T/hand_n.json', 'w'))
"
$BIN score --model $T/m --input $T/hand_in.jsonl --out $T/hand_out.jsonl 2>/dev/null
check "eval's report and per-example lines equal the hand computation" py "
import json, math
ncont = json.load(open('$T/hand_n.json'))
lp = {json.loads(l)['id']: json.loads(l)['logprobs'] for l in open('$T/hand_out.jsonl')}
ll = [sum(lp[i][-ncont[i]:]) for i in range(len(ncont))]
pe = [json.loads(l) for l in open('$T/pe.jsonl')]
rep = json.load(open('$T/rep.json'))
k, acc, accn = 0, [], []
for l, p in zip(open('$T/task.jsonl'), pe):
    d = json.loads(l)
    mine = ll[k:k + len(d['choices'])]; k += len(d['choices'])
    assert p['id'] == d['id'] and p['gold'] == d['gold'], p
    assert max(abs(a - b) for a, b in zip(mine, p['loglikelihoods'])) < 1e-4, (mine, p)
    norm = [x / len(c) for x, c in zip(mine, d['choices'])]
    pred, predn = mine.index(max(mine)), norm.index(max(norm))
    assert (p['pred'], p['pred_norm']) == (pred, predn), (p, pred, predn)
    assert len(p['is_greedy']) == len(d['choices'])
    acc.append(float(pred == d['gold'])); accn.append(float(predn == d['gold']))
def se(x):
    m = sum(x) / len(x)
    return math.sqrt(sum((v - m) ** 2 for v in x) / (len(x) - 1) / len(x))
assert rep['n'] == 5
for key, v in [('acc', sum(acc) / 5), ('acc_norm', sum(accn) / 5), ('acc_stderr', se(acc)), ('acc_norm_stderr', se(accn))]:
    assert abs(rep[key] - v) < 1e-9, (key, rep[key], v)
print('    acc %.2f acc_norm %.2f' % (rep['acc'], rep['acc_norm']))
"
# each context is computed once: every later choice starts from a copy of
# its first len(context) - 1 positions (the last one is fed again: its
# output predicts the choice's first token)
check "eval prefills a question's context once for all its choices" py "
import json, re
ncont = json.load(open('$T/hand_n.json'))
toks = [json.loads(l)['tokens'] for l in open('$T/hand_in.jsonl')]
# at least the contexts; at most, for each sequence, the longest prefix it
# has in common with an earlier one (another question may start alike)
want, k = 0, 0
for l in open('$T/task.jsonl'):
    n = len(json.loads(l)['choices'])
    want += (n - 1) * (len(toks[k]) - ncont[k] - 1); k += n
most = 0
for i, t in enumerate(toks):
    lcp = lambda u: next((j for j in range(min(len(u), len(t))) if u[j] != t[j]), min(len(u), len(t)))
    most += min([len(t) - ncont[i] - 1] + [max([lcp(u) for u in toks[:i]] + [0])])
m = re.search(r'egmla eval: (\\d+) of the (\\d+) prompt positions were shared', open('$T/err').read())
assert m and want <= int(m.group(1)) <= most, (m and m.group(0), want, most)
print('    %s of %s positions shared (contexts alone: %d, at most %d)' % (m.group(1), m.group(2), want, most))
"
$BIN eval --model $T/m --task $T/task.jsonl --out - >$T/rep2.json 2>$T/table2
check "eval --out -: JSON on stdout, table on stderr" py "
import json; json.load(open('$T/rep2.json')); assert 'acc_norm' in open('$T/table2').read()"

# perplexity: lm-eval's rolling windows written out here
py "
t = 'In the beginning God created the heaven and the earth. And the earth was without form, and void.\n' * 5
open('$T/text.txt', 'w').write(t)
"
$BIN perplexity --model $T/m --text $T/text.txt --window 40 --out $T/ppl.json >/dev/null 2>$T/err
check "perplexity exits 0" test $? -eq 0
$BIN perplexity --model $T/m --text - --window 40 --out $T/ppl_stdin.json < $T/text.txt >/dev/null 2>$T/err
check "perplexity --text - reads stdin: the same report" py "
import json
a, b = json.load(open('$T/ppl.json')), json.load(open('$T/ppl_stdin.json'))
assert b['text'] == '-' and abs(a['loglikelihood'] - b['loglikelihood']) < 1e-9, (a, b)
"
regen && py "
import json
from tokenizers import Tokenizer
tok = Tokenizer.from_file('$T/m/tokenizer.json')
t = tok.encode(open('$T/text.txt').read(), add_special_tokens=False).ids
L, BOS, out = 40, 1, []
first = min(L, len(t)); out.append(([BOS] + t[:first], first)); done = first
while done < len(t):
    wp = min(len(t) - done, L); end = done + wp
    out.append((t[end - L - 1:end], wp)); done = end
with open('$T/pw_in.jsonl', 'w') as f:
    for i, (s, n) in enumerate(out): f.write(json.dumps({'id': i, 'tokens': s}) + '\n')
json.dump([n for s, n in out], open('$T/pw_n.json', 'w'))
"
$BIN score --model $T/m --input $T/pw_in.jsonl --out $T/pw_out.jsonl 2>/dev/null
check "perplexity equals the sum over lm-eval's windows; word/byte/bits as wikitext" py "
import json, math, re
n = json.load(open('$T/pw_n.json'))
lp = {json.loads(l)['id']: json.loads(l)['logprobs'] for l in open('$T/pw_out.jsonl')}
ll = sum(sum(lp[i][-n[i]:]) for i in range(len(n)))
r = json.load(open('$T/ppl.json'))
text = open('$T/text.txt').read()
words, nbytes = len(re.split(r'\s+', text)), len(text.encode())
assert abs(r['loglikelihood'] - ll) < 1e-3, (r['loglikelihood'], ll)
assert r['windows'] == len(n) and r['words'] == words and r['bytes'] == nbytes, r
assert abs(r['word_perplexity'] / math.exp(-ll / words) - 1) < 1e-5
assert abs(r['bits_per_byte'] - (-ll / nbytes / math.log(2))) < 1e-6
assert abs(r['token_perplexity'] / math.exp(-ll / sum(n)) - 1) < 1e-5
"

# loglikelihood: the backend's command agrees with eval, in input order
py "
import json
rows = [json.loads(l) for l in open('$T/task.jsonl')]
with open('$T/ll_in.jsonl', 'w') as f:
    for d in rows:
        for j, c in enumerate(d['choices']):
            f.write(json.dumps({'id': '%s/%d' % (d['id'], j), 'context': d['context'], 'continuation': c}) + '\n')
    f.write(json.dumps({'id': 'rolling', 'text': open('$T/text.txt').read()}) + '\n')
    f.write(json.dumps({'id': 'bad', 'context': 'x'}) + '\n')
"
$BIN loglikelihood --model $T/m --max-length 40 --input $T/ll_in.jsonl --out $T/ll_out.jsonl 2>$T/err
check "loglikelihood exits 3 (one line refused)" test $? -eq 3
check "loglikelihood equals eval's per-example values and perplexity's sum" py "
import json
out = [json.loads(l) for l in open('$T/ll_out.jsonl')]
pe = [json.loads(l) for l in open('$T/pe.jsonl')]
want = [x for p in pe for x in p['loglikelihoods']]
got = [o['logprob'] for o in out[:len(want)]]
# not bit-equal: which rows share a batch (and a copied context) differs
assert max(abs(a - b) for a, b in zip(got, want)) < 1e-4, (got, want)
assert [o['is_greedy'] for o in out[:len(want)]] == [g for p in pe for g in p['is_greedy']]
assert abs(out[-2]['logprob'] - json.load(open('$T/ppl.json'))['loglikelihood']) < 1e-4
assert out[-1]['id'] == 'bad' and 'error' in out[-1]
"

if regen; then
  mkdir -p $JF
  cp $T/m/tokenizer.json $JF/
  for f in $JFILES; do cp $T/$f $JF/; done
  echo "fixtures written to $JF"
fi
echo "e2e_jobs: $fails failed"
[ "$fails" -eq 0 ]
