#!/usr/bin/env bash
# Runs lm-evaluation-harness with the egmla backend on a local multiple-choice
# task and checks acc and acc_norm (and their stderr) equal `egmla eval` on the
# same JSONL. Needs lm-eval (pip install lm-eval) and this package on the path.
#
#   deploy/lm_eval/check.sh [MODEL_DIR]
#
# MODEL_DIR defaults to models/egmla-tiny; without it, the EG-MLA test fixture
# with a 300-token tokenizer trained on the spot (numbers are then those of a
# random model: the check is that both paths agree). `make test` runs it
# through tests/e2e_lmeval.sh, which provides lm-eval in a venv.
set -eu
cd "$(dirname "$0")/../.."
# PY: a python with lm-eval (tests/e2e_lmeval.sh makes a venv for it)
if [ -z "${PY:-}" ]; then PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3; fi
export OMP_WAIT_POLICY=passive
BIN=${BIN:-bin/egmla}
case $BIN in /*) ;; *) BIN=$(pwd)/$BIN ;; esac
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
MODEL=${1:-models/egmla-tiny}
if [ ! -e "$MODEL/tokenizer.json" ]; then
  echo "check.sh: $MODEL has no tokenizer.json; using the egmla_ln fixture with a trained tokenizer"
  MODEL=$T/m
  mkdir -p $MODEL
  cp tests/fixtures/models/egmla_ln/config.json tests/fixtures/models/egmla_ln/model.safetensors $MODEL/
  $PY -c "
from tokenizers import ByteLevelBPETokenizer
t = ByteLevelBPETokenizer()
t.train_from_iterator(['In the beginning God created the heaven and the earth.'] * 20, vocab_size=300,
                      min_frequency=1, special_tokens=['<|endoftext|>'], show_progress=False)
t.save('$MODEL/tokenizer.json')"
fi
# the task: verse openings, the true ending among three others
$PY - "$T" <<'PYEOF'
import json, sys
T = sys.argv[1]
verses = [
 ("In the beginning God created", " the heaven and the earth."),
 ("And the earth was without form,", " and void; and darkness was upon the face of the deep."),
 ("And God said, Let there be light:", " and there was light."),
 ("And God saw the light, that it was good:", " and God divided the light from the darkness."),
 ("And God called the light Day,", " and the darkness he called Night."),
 ("And the evening and the morning", " were the first day."),
 ("And God called the firmament", " Heaven."),
 ("And God called the dry land Earth;", " and the gathering together of the waters called he Seas."),
 ("And God made two great lights;", " the greater light to rule the day, and the lesser light to rule the night."),
 ("So God created man in his own image,", " in the image of God created he him."),
 ("Thus the heavens and the earth were finished,", " and all the host of them."),
 ("And the LORD God planted a garden", " eastward in Eden."),
]
with open(T + "/task.jsonl", "w") as f:
    for i, (ctx, end) in enumerate(verses):
        others = [verses[(i + k) % len(verses)][1] for k in (3, 5, 7)]
        gold = i % 4
        choices = others[:gold] + [end] + others[gold:]
        f.write(json.dumps({"id": "v%d" % i, "context": ctx, "choices": choices, "gold": gold}) + "\n")
with open(T + "/egmla_mc.yaml", "w") as f:
    f.write("""task: egmla_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: %s/task.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: gold
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
""" % T)
PYEOF
$BIN eval --model $MODEL --task $T/task.jsonl --out $T/egmla.json
EGMLA_BIN=$BIN PYTHONPATH=deploy/lm_eval${PYTHONPATH:+:$PYTHONPATH} $PY -m lm_eval_egmla \
  --model egmla --model_args model=$MODEL --tasks egmla_mc --include_path $T \
  --output_path $T/lm_eval_out >$T/lm_eval.log 2>&1 || { cat $T/lm_eval.log; exit 1; }
$PY - "$T" <<'PYEOF'
import glob, json, sys
T = sys.argv[1]
mine = json.load(open(T + "/egmla.json"))
files = glob.glob(T + "/lm_eval_out/**/*.json", recursive=True)
res = json.load(open(sorted(files)[-1]))["results"]["egmla_mc"]
theirs = {k.split(",")[0]: v for k, v in res.items() if "," in k}
bad = []
for k in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr"):
    ok = abs(theirs[k] - mine[k]) < 1e-9
    print("%-16s lm-eval %.6f   egmla eval %.6f   %s" % (k, theirs[k], mine[k], "ok" if ok else "DIFFERENT"))
    if not ok: bad.append(k)
sys.exit(1 if bad else 0)
PYEOF
echo "check.sh: lm-eval with the egmla backend equals egmla eval (n = $($PY -c "import json; print(json.load(open('$T/egmla.json'))['n'])"))"
