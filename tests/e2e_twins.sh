#!/usr/bin/env bash
# End-to-end golden check of the trained twins (models/*-tiny): each one's
# expected.json holds log-probs of held-out KJV text and greedy
# continuations computed in float64 by the PyTorch reference
# (reference/twins_report.py). The engine must give the log-probs within
# 1e-4 and the same greedy tokens: the default model and its siblings are
# the ones the docs' numbers come from. No torch needed here.
set -u
BIN=${BIN:-bin/egmla}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
n=0
for d in models/*-tiny; do
  [ -e "$d/expected.json" ] || { echo "  FAIL: $d has no expected.json (reference/twins_report.py --check writes it)"; fails=$((fails+1)); continue; }
  n=$((n+1))
  python3 - "$d/expected.json" "$T/score.jsonl" "$T/greedy.jsonl" <<'EOF'
import json, sys
e = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as f:
    for i, s in enumerate(e["score"]):
        f.write(json.dumps({"id": i, "tokens": s["tokens"]}) + "\n")
with open(sys.argv[3], "w") as f:
    for i, g in enumerate(e["greedy"]):
        f.write(json.dumps({"id": i, "tokens": g["prompt"], "max_new_tokens": g["max_new_tokens"]}) + "\n")
EOF
  if ! "$BIN" score --model "$d" --input "$T/score.jsonl" --out "$T/score.out" 2>"$T/err" ||
     ! "$BIN" generate --model "$d" --input "$T/greedy.jsonl" --out "$T/greedy.out" \
         --temperature 0 --ignore-eos 2>>"$T/err"; then
    echo "  FAIL: $d: the engine failed: $(tail -1 "$T/err")"; fails=$((fails+1)); continue
  fi
  if python3 - "$d" "$d/expected.json" "$T/score.out" "$T/greedy.out" <<'EOF'
import json, sys
d, e = sys.argv[1], json.load(open(sys.argv[2]))
score = {o["id"]: o["logprobs"] for o in map(json.loads, open(sys.argv[3]))}
greedy = {o["id"]: o["tokens"] for o in map(json.loads, open(sys.argv[4]))}
worst = max(abs(a - b) for i, s in enumerate(e["score"]) for a, b in zip(score[i], s["logprobs"]))
lens = all(len(score[i]) == len(s["logprobs"]) for i, s in enumerate(e["score"]))
same = all(greedy[i] == g["tokens"] for i, g in enumerate(e["greedy"]))
ok = worst <= 1e-4 and lens and same and e["score"] and e["greedy"]
print(f"  {'ok' if ok else 'FAIL'}: {d}: {len(e['score'])} held-out texts, max |dlogp| {worst:.1e} "
      f"(bound 1e-4); {len(e['greedy'])} greedy continuations {'equal' if same else 'DIFFER'}")
sys.exit(0 if ok else 1)
EOF
  then :; else fails=$((fails+1)); fi
done
[ $n -ge 4 ] || { echo "  FAIL: $n twins with expected.json, expected 4"; fails=$((fails+1)); }
echo "e2e_twins: $fails failed"
[ $fails -eq 0 ]
