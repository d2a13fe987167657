#!/usr/bin/env bash
# e2e_mpi.sh - the MPI pipeline end to end: with 2, 3 and 4 ranks, score and
# generate (greedy and seeded sampling) with fp32 activations on the wire give
# byte-identical output files to the single-process run, for one model of
# each architecture; an explicit uneven topology too; bf16 on the wire stays
# close to fp32 in log-prob (the measured max |delta| is printed); a world
# size that disagrees with the topology, a missing model directory and a
# stage that cannot load its layers fail cleanly on every rank (non-zero
# exit, one message naming the rank, no hang).
#
# The fixtures have 2 layers; 3 pipeline stages need more, so each is grown
# to 4 layers (layers 2-3 copy 0-1) in a temporary directory.
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/egmla}
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac
if ! command -v mpirun >/dev/null 2>&1; then
  echo "SKIP: mpirun not found (install Open MPI to test the pipeline)"
  exit 0
fi
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

export OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=passive
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,vader   # one host: shared memory only, no network probing
# Under ASan (make SAN=1 test) LeakSanitizer reports Open MPI's own
# allocations at exit, from plugins it has unloaded (no names to suppress):
# ranks run without leak checks; the 1-process runs keep them.
MPIRUN=(timeout 60 mpirun --oversubscribe -x ASAN_OPTIONS=detect_leaks=0 -np)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
ok()   { echo "ok   $*"; }
bad()  { echo "FAIL $*"; fails=$((fails+1)); }

# --- inputs -----------------------------------------------------------------
cat > "$tmp/score.jsonl" <<'J'
{"id": "s1", "tokens": [1, 5, 9, 33, 7, 120, 41]}
{"id": "s2", "tokens": [1, 100, 200, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]}
{"id": "s3", "tokens": [1, 42]}
{"id": "s4", "tokens": [7, 7, 7, 7, 250, 251, 252, 253, 254]}
J
cat > "$tmp/gen.jsonl" <<'J'
{"id": "g1", "tokens": [1, 5, 9, 33], "temperature": 0}
{"id": "g2", "tokens": [1, 100, 200, 3, 4, 5, 6, 7, 8, 9], "temperature": 0}
{"id": "g3", "tokens": [1, 42], "temperature": 0.8, "seed": 7}
{"id": "g4", "tokens": [1, 60, 61, 62, 63, 64], "temperature": 0.8, "seed": 12345}
{"id": "g5", "tokens": [2, 9], "temperature": 0.8, "seed": 99}
J

# --- 4-layer copies of the fixtures -----------------------------------------
grow() {  # grow SRC DST: layers L..2L-1 copy layers 0..L-1
  "$PY" - "$1" "$2" <<'P'
import json, os, re, struct, sys
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst)
cfg = json.load(open(os.path.join(src, "config.json")))
L = cfg["num_hidden_layers"]
cfg["num_hidden_layers"] = 2 * L
json.dump(cfg, open(os.path.join(dst, "config.json"), "w"), indent=1)
raw = open(os.path.join(src, "model.safetensors"), "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
data = raw[8 + n:]
out, blobs, off = {}, [], 0
def put(name, info):
    global off
    b, e = info["data_offsets"]
    blob = data[b:e]
    out[name] = {"dtype": info["dtype"], "shape": info["shape"], "data_offsets": [off, off + len(blob)]}
    blobs.append(blob)
    off += len(blob)
for name, info in head.items():
    if name == "__metadata__":
        continue
    put(name, info)
    m = re.match(r"model\.layers\.(\d+)\.(.*)", name)
    if m:
        put("model.layers.%d.%s" % (int(m.group(1)) + L, m.group(2)), info)
h = json.dumps(out).encode()
h += b" " * (-len(h) % 8)
with open(os.path.join(dst, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
P
}

maxdiff() {  # maxdiff A B: "max|delta logprob| max|logprob|" over matching lines
  "$PY" - "$1" "$2" <<'P'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = {r["id"]: r for r in map(json.loads, open(sys.argv[2]))}
d = max(abs(x - y) for r in a for x, y in zip(r["logprobs"], b[r["id"]]["logprobs"]))
print("%.3g %.3g" % (d, max(abs(x) for r in a for x in r["logprobs"])))
P
}

run1() { "$BIN" "$@" 2>>"$tmp/log"; }
runN() { local np=$1; shift; "${MPIRUN[@]}" "$np" "$BIN" "$@" 2>>"$tmp/log" >>"$tmp/log"; }

GEN=(--max-new-tokens 8 --ignore-eos)
for fx in llama_gqa_tied mla_qlora egmla_ln; do
  m="$tmp/$fx-L4"
  grow "tests/fixtures/models/$fx" "$m" || { bad "$fx: cannot build the 4-layer copy"; continue; }
  run1 score --model "$m" --input "$tmp/score.jsonl" --out "$tmp/$fx.score.1" || bad "$fx: 1-process score"
  run1 generate --model "$m" --input "$tmp/gen.jsonl" --out "$tmp/$fx.gen.1" "${GEN[@]}" || bad "$fx: 1-process generate"
  [ -s "$tmp/$fx.score.1" ] && [ -s "$tmp/$fx.gen.1" ] || bad "$fx: 1-process output empty"
  for np in 2 3 4; do
    runN "$np" score --model "$m" --input "$tmp/score.jsonl" --out "$tmp/$fx.score.$np" --wire-dtype fp32 \
      && cmp -s "$tmp/$fx.score.1" "$tmp/$fx.score.$np" \
      && ok "$fx: score, $np ranks, fp32 wire: identical" || bad "$fx: score, $np ranks differs or failed"
    runN "$np" generate --model "$m" --input "$tmp/gen.jsonl" --out "$tmp/$fx.gen.$np" --wire-dtype fp32 "${GEN[@]}" \
      && cmp -s "$tmp/$fx.gen.1" "$tmp/$fx.gen.$np" \
      && ok "$fx: generate (greedy + seeded T=0.8), $np ranks, fp32 wire: identical" || bad "$fx: generate, $np ranks differs or failed"
  done
  runN 3 score --model "$m" --input "$tmp/score.jsonl" --out "$tmp/$fx.score.bf16" --wire-dtype bf16 \
    || bad "$fx: bf16 wire run failed"
  # bf16 keeps 8 significant bits of each activation (relative error <=
  # 2^-9), so the log-prob error scales with the logits: these random
  # fixtures have log-probs down to -16, where 1e-2 absolute is out of
  # reach. Require it within 1e-2 of the log-prob scale, and not zero.
  if [ -s "$tmp/$fx.score.bf16" ]; then
    read -r d scale < <(maxdiff "$tmp/$fx.score.1" "$tmp/$fx.score.bf16")
    if "$PY" -c "import sys; sys.exit(not (0 < $d < 1e-2 * max(1.0, $scale)))"; then
      ok "$fx: bf16 wire, max |delta logprob| vs fp32 = $d (log-probs down to -$scale)"
    else
      bad "$fx: bf16 wire, max |delta logprob| vs fp32 = $d (log-probs down to -$scale)"
    fi
  fi
done

# --- logits travel when asked for; int8 activations run ----------------------
m="$tmp/mla_qlora-L4"
run1 score --model "$m" --input "$tmp/score.jsonl" --out "$tmp/dl.1" --dump-logits "$tmp/dl.1.bin" \
  || bad "1-process --dump-logits failed"
runN 3 score --model "$m" --input "$tmp/score.jsonl" --out "$tmp/dl.3" --dump-logits "$tmp/dl.3.bin" --wire-dtype fp32 \
  && cmp -s "$tmp/dl.1.bin" "$tmp/dl.3.bin" && [ -s "$tmp/dl.3.bin" ] \
  && ok "score --dump-logits, 3 ranks, fp32 wire: identical logits" || bad "--dump-logits over MPI differs or failed"
runN 3 score --model "$m" --input "$tmp/score.jsonl" --out "$tmp/i8.3" --wire-dtype int8 \
  && [ "$(wc -l < "$tmp/i8.3")" -eq 4 ] && ! grep -q error "$tmp/i8.3" \
  && ok "int8 wire: runs, max |delta logprob| vs fp32 = $(maxdiff "$tmp/mla_qlora.score.1" "$tmp/i8.3" | cut -d' ' -f1)" \
  || bad "int8 wire failed"

# --- eval: contexts shared across choices (KV copied on every stage) ----------
cat > "$tmp/task.jsonl" <<'J'
{"id": "q1", "context_tokens": [1, 5, 9, 33, 7, 120, 41, 8, 8], "choices_tokens": [[3, 4], [250], [17, 18, 19]], "gold": 0}
{"id": "q2", "context_tokens": [1, 5, 9, 2], "choices_tokens": [[60, 61], [62]], "gold": 1}
{"id": "q3", "context_tokens": [7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7], "choices_tokens": [[1], [2], [3], [4]], "gold": 3}
J
m="$tmp/egmla_ln-L4"
run1 eval --model "$m" --task "$tmp/task.jsonl" --per-example "$tmp/ev.1" >/dev/null \
  && grep -q "prompt positions were shared" "$tmp/log" || bad "1-process eval failed or shared nothing"
runN 3 eval --model "$m" --task "$tmp/task.jsonl" --per-example "$tmp/ev.3" --wire-dtype fp32 \
  && cmp -s "$tmp/ev.1" "$tmp/ev.3" && [ -s "$tmp/ev.3" ] \
  && ok "eval with shared contexts, 3 ranks, fp32 wire: identical per-example lines" \
  || bad "eval with shared contexts over MPI differs or failed"

# --- an explicit uneven split, wire dtype from the topology -------------------
m="$tmp/egmla_ln-L4"
cat > "$tmp/uneven.yaml" <<'Y'
wire_dtype: fp32
nodes:
  - {name: local, host: localhost, slots: 3, threads: 1}
stages:
  - {node: local, layers: 0-0}
  - {node: local, layers: 1-3}
Y
runN 3 generate --model "$m" --input "$tmp/gen.jsonl" --out "$tmp/uneven.gen" --topology "$tmp/uneven.yaml" "${GEN[@]}" \
  && cmp -s "$tmp/egmla_ln.gen.1" "$tmp/uneven.gen" && grep -q "layers 1-3" "$tmp/log" \
  && ok "uneven topology (layers 0-0 | 1-3): identical" || bad "uneven topology differs or failed"

# --- failures: clean, on every rank, no hang ----------------------------------
cat > "$tmp/two.yaml" <<'Y'
nodes:
  - {name: local, host: localhost}
stages:
  - {node: local, layers: auto}
  - {node: local, layers: auto}
Y
"${MPIRUN[@]}" 4 "$BIN" score --model "$m" --input "$tmp/score.jsonl" --out "$tmp/ws.out" \
  --topology "$tmp/two.yaml" >"$tmp/ws.log" 2>&1
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "world size 4" "$tmp/ws.log" \
   && [ "$(grep -c '^egmla:' "$tmp/ws.log")" -eq 1 ]; then
  ok "world size mismatch: exit $rc, one message: $(grep '^egmla:' "$tmp/ws.log" | head -c 160)"
else
  bad "world size mismatch: exit $rc"; cat "$tmp/ws.log"
fi

"${MPIRUN[@]}" 3 "$BIN" score --model "$tmp/no-such-model" --input "$tmp/score.jsonl" --out "$tmp/nm.out" \
  >"$tmp/nm.log" 2>&1
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "$tmp/no-such-model" "$tmp/nm.log" \
   && [ "$(grep -c '^egmla:' "$tmp/nm.log")" -eq 1 ]; then
  ok "missing model: exit $rc, one message: $(grep '^egmla:' "$tmp/nm.log" | head -c 160)"
else
  bad "missing model: exit $rc"; cat "$tmp/nm.log"
fi

# a stage that cannot load its layers: config says 4, the weights hold 2
mkdir "$tmp/short"
cp tests/fixtures/models/egmla_ln/model.safetensors "$tmp/short/"
cp "$tmp/egmla_ln-L4/config.json" "$tmp/short/"
"${MPIRUN[@]}" 3 "$BIN" score --model "$tmp/short" --input "$tmp/score.jsonl" --out "$tmp/sh.out" \
  >"$tmp/sh.log" 2>&1
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "^egmla: rank 2 (.*model.layers.2" "$tmp/sh.log" \
   && [ "$(grep -c '^egmla:' "$tmp/sh.log")" -eq 1 ]; then
  ok "stage cannot load its layers: exit $rc, one message: $(grep '^egmla:' "$tmp/sh.log" | head -c 160)"
else
  bad "stage cannot load its layers: exit $rc"; cat "$tmp/sh.log"
fi

if [ $fails -ne 0 ]; then
  echo "--- log"; tail -n 40 "$tmp/log"
  echo "e2e_mpi: $fails failed"
  exit 1
fi
echo "e2e_mpi: all passed"
