#!/usr/bin/env bash
# e2e_bench_mpi.sh - `egmla bench` under mpirun: rank 0 drives a pipeline of
# 2 stages (3 ranks). Checks the JSON report, not the speeds: rows for
# prefill and decode with "ranks": 3 and positive speeds and ratios; two
# stages covering the layers in order, each with busy/wait/bubble fractions
# in [0, 1] that sum to at most 1, and exactly the row's tokens and
# micro-batches in its window (the in-band statistics marks bracket the
# timed micro-batches); wire bytes per token per hop = D * (2 for bf16, 4 for
# fp32) of activations exactly, plus the micro-batch header's share;
# the same greedy first token as one rank (--config: each stage generates
# its own layers, which must be the one-rank weights; --model: real files);
# a topology's uneven split and wire dtype;
# the per-stage KV capacity at the budget; bad options exit 2 and a
# missing config exits 1, with one message each,
# and no rank is left running.
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/egmla}
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac
if ! command -v mpirun >/dev/null 2>&1; then
  echo "SKIP: mpirun not found (install Open MPI to test bench under mpirun)"
  exit 0
fi
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

export OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=passive
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,vader   # one host: shared memory only, no network probing
# ranks run without leak checks under ASan (see e2e_mpi.sh)
MPIRUN=(timeout 120 mpirun --oversubscribe -x ASAN_OPTIONS=detect_leaks=0 -np)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
ok()   { echo "ok   $*"; }
bad()  { echo "FAIL $*"; fails=$((fails+1)); }

# check REPORT RANKS D WIRE_ELEM_BYTES BATCHES CONTEXTS STEPS CHUNK MB CONFIG: the
# report's shape, and the KV capacity of a --kv-budget of 1 MiB per stage
check() {
  "$PY" - "$@" <<'P'
import json, math, sys
path, ranks, D, elem = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
batches = [int(x) for x in sys.argv[5].split(",")]
contexts = [int(x) for x in sys.argv[6].split(",")]
steps, chunk, mb_opt = int(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9])
cfg = json.load(open(sys.argv[10]))
d = json.load(open(path))
S = ranks - 1
rl = d["roofline"]
assert rl["sgemm_gflops"] > 0 and rl["mem_bw_gbs"] > 0, rl
assert rl["measured_on"].startswith("rank 0"), rl["measured_on"]
assert d["pipeline"]["ranks"] == ranks and len(d["pipeline"]["stages"]) == S
rows = d["results"]
assert len(rows) == len(contexts) * (1 + len(batches)), len(rows)
assert {r["phase"] for r in rows} == {"prefill", "decode"}
for r in rows:
    where = "%s b=%d c=%d" % (r["phase"], r["batch"], r["context"])
    assert r["ranks"] == ranks, where
    assert r["attn_dtype"] == "fp32", where
    for k in ("tokens_per_s", "ratio_to_sgemm", "ratio_to_bw"):
        assert r[k] > 0, (where, k, r[k])
    st = r["stages"]
    assert len(st) == S, (where, st)
    assert [s["rank"] for s in st] == list(range(1, ranks)), where
    # the stages cover the layers in order
    assert st[0]["layers"][0] == 0 and all(
        st[i + 1]["layers"][0] == st[i]["layers"][1] + 1 for i in range(S - 1)), where
    if r["phase"] == "prefill":
        tokens, mbs = r["context"], math.ceil(r["context"] / chunk)
        assert r["micro_batches"] == mbs, where
        assert isinstance(r["first_token"], int) and r["first_token"] >= 0, where
        assert r["ttft_ms"] > 0, where
    else:
        m = min(r["batch"], mb_opt or S)
        assert r["micro_batches"] == m, (where, r["micro_batches"])
        assert r["rows_per_micro_batch"] == math.ceil(r["batch"] / m), where
        assert r["steps"] == steps, where
        tokens, mbs = r["batch"] * steps, m * steps
    for s in st:
        for k in ("busy", "wait", "bubble"):
            assert 0 <= s[k] <= 1, (where, s)
        assert s["busy"] > 0, (where, s)
        assert s["busy"] + s["wait"] + s["bubble"] <= 1 + 1e-9, (where, s)
        assert s["tokens"] == tokens and s["micro_batches"] == mbs, (where, s, tokens, mbs)
    # activations: exactly D values per token per hop in the wire dtype;
    # the header's share: a few varints per row plus a fixed part per batch
    assert r["hops"] == S - 1, where
    pay, head = r["wire_payload_bytes_per_token_per_hop"], r["wire_header_bytes_per_token_per_hop"]
    assert pay == D * elem, (where, pay, D * elem)
    assert 0 < head < 64, (where, head)
    assert abs(r["wire_bytes_per_token_per_hop"] - (pay + head)) < 1e-9, where
# each stage caches its own layers: (d_c + d_r) fp32 values per layer per
# token (+ a 4-byte token id for EG-MLA), blocks of 16 tokens, 1 MiB each
elems = cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"]
ids = 4 if cfg["model_type"] == "egmla" else 0
for f in d["kv"]["fits_budget_per_stage"]:
    per_seq = math.ceil(f["context"] / 16)
    want = min((1 << 20) // (16 * ((s["layers"][1] - s["layers"][0] + 1) * elems * 4 + ids)) // per_seq
               for s in d["pipeline"]["stages"])
    assert f["sequences"] == want, (f, want)
print("%d rows; wire %.1f B/token/hop (%d activations + %.1f header) at decode batch %d" % (
    len(rows), rows[-1]["wire_bytes_per_token_per_hop"], D * elem,
    rows[-1]["wire_header_bytes_per_token_per_hop"], rows[-1]["batch"]))
P
}

# first_tokens REPORT: the greedy first token of each prefill row, by context
first_tokens() {
  "$PY" -c 'import json, sys; print(" ".join("%d:%d" % (r["context"], r["first_token"]) for r in json.load(open(sys.argv[1]))["results"] if r["phase"] == "prefill"))' "$1"
}

CFG=tests/fixtures/bench/tiny-egmla.json
FAST=(--reps 1 --bw-mib 1 --kv-budget 1MiB --roofline-once)

# --- synthetic weights from a config: each stage builds its own layers --------
"${MPIRUN[@]}" 3 "$BIN" bench --config "$CFG" --batch 1,4 --context 8,40 --steps 3 --chunk 16 \
  "${FAST[@]}" --json "$tmp/cfg.json" >"$tmp/cfg.out" 2>"$tmp/cfg.err"
rc=$?
if [ $rc -eq 0 ] && msg=$(check "$tmp/cfg.json" 3 48 2 1,4 8,40 3 16 0 "$CFG" 2>&1); then
  ok "--config, 3 ranks, bf16 wire: $msg"
else
  bad "--config, 3 ranks: exit $rc: $msg"; tail -n 20 "$tmp/cfg.err"
fi
grep -q "stage busy/wait/bubble" "$tmp/cfg.out" && grep -q "^decode .* r1 .* r2 " "$tmp/cfg.out" \
  && ok "the table shows each stage's busy/wait/bubble" || { bad "no per-stage columns in the table"; cat "$tmp/cfg.out"; }

# more micro-batches than stages, fp32 activations; the first token of each
# prefill must be the one-rank run's (fp32 on the wire changes nothing)
"${MPIRUN[@]}" 3 "$BIN" bench --config "$CFG" --batch 4 --context 8,40 --steps 2 --micro-batches 4 \
  --wire-dtype fp32 "${FAST[@]}" --json "$tmp/cfg32.json" >/dev/null 2>"$tmp/cfg32.err"
rc=$?
if [ $rc -eq 0 ] && msg=$(check "$tmp/cfg32.json" 3 48 4 4 8,40 2 512 4 "$CFG" 2>&1); then
  ok "--config, --micro-batches 4, fp32 wire: $msg"
else
  bad "--config, --micro-batches 4, fp32 wire: exit $rc: $msg"; tail -n 20 "$tmp/cfg32.err"
fi
"$BIN" bench --config "$CFG" --batch 4 --context 8,40 --steps 2 --threads 1 "${FAST[@]}" \
  --json "$tmp/one.json" >/dev/null 2>"$tmp/one.err" || bad "--config, one rank failed"
a=$(first_tokens "$tmp/one.json" 2>&1); b=$(first_tokens "$tmp/cfg32.json" 2>&1)
[ -n "$a" ] && [ "$a" = "$b" ] && ok "same greedy first tokens as one rank (context:token $a)" \
  || bad "first tokens differ: one rank '$a', pipeline '$b'"

# `auto` stages run the cost-balanced split that `launch --dry-run` prints
# (4 layers on 3 stages: 1 | 2 | 1, not an even 2 | 1 | 1 or 1 | 1 | 2)
printf 'nodes: [{name: l, host: localhost, slots: 4}]\nstages:\n  - {node: l, layers: auto}\n  - {node: l, layers: auto}\n  - {node: l, layers: auto}\n' >"$tmp/auto3.yaml"
want=$("$BIN" launch "$tmp/auto3.yaml" --dry-run -- bench --config "$CFG" 2>&1 \
  | sed -n 's/^# stage [0-9]* (.*): layers \([0-9]*-[0-9]*\).*/\1/p' | tr '\n' ' ')
"${MPIRUN[@]}" 4 "$BIN" bench --config "$CFG" --batch 1 --context 8 --steps 1 "${FAST[@]}" \
  --json "$tmp/auto3.json" >/dev/null 2>"$tmp/auto3.err"
got=$("$PY" -c 'import json, sys
print(" ".join("%d-%d" % tuple(s["layers"]) for s in json.load(open(sys.argv[1]))["pipeline"]["stages"]), end=" ")' "$tmp/auto3.json" 2>&1)
[ -n "$want" ] && [ "$want" = "$got" ] \
  && ok "auto stages run the split launch --dry-run prints: $got" \
  || { bad "auto split: launch --dry-run prints '$want', bench ran '$got'"; tail -n 5 "$tmp/auto3.err"; }

# --- a real model directory: the workers map its files -----------------------
M=tests/fixtures/models/mla_qlora
"${MPIRUN[@]}" 3 "$BIN" bench --model "$M" --batch 2,3 --context 9 --steps 2 --wire-dtype fp32 \
  "${FAST[@]}" --json "$tmp/model.json" >/dev/null 2>"$tmp/model.err"
rc=$?
if [ $rc -eq 0 ] && msg=$(check "$tmp/model.json" 3 48 4 2,3 9 2 512 0 "$M/config.json" 2>&1); then
  ok "--model $M, 3 ranks, fp32 wire: $msg"
else
  bad "--model $M, 3 ranks: exit $rc: $msg"; tail -n 20 "$tmp/model.err"
fi
"$BIN" bench --model "$M" --batch 2 --context 9 --steps 2 --threads 1 "${FAST[@]}" \
  --json "$tmp/model1.json" >/dev/null 2>&1 || bad "--model, one rank failed"
a=$(first_tokens "$tmp/model1.json" 2>&1); b=$(first_tokens "$tmp/model.json" 2>&1)
[ -n "$a" ] && [ "$a" = "$b" ] && ok "--model: same greedy first token as one rank ($a)" \
  || bad "--model: first tokens differ: one rank '$a', pipeline '$b'"

# --- a topology: its uneven split and its wire dtype (fp32) -------------------
cat > "$tmp/uneven.yaml" <<'Y'
wire_dtype: fp32
nodes:
  - {name: local, host: localhost, slots: 3, threads: 1}
stages:
  - {node: local, layers: 0-0}
  - {node: local, layers: 1-3}
Y
"${MPIRUN[@]}" 3 "$BIN" bench --config "$CFG" --topology "$tmp/uneven.yaml" --batch 3 --context 8 \
  --steps 2 "${FAST[@]}" --json "$tmp/topo.json" >/dev/null 2>"$tmp/topo.err"
rc=$?
if [ $rc -eq 0 ] && msg=$(check "$tmp/topo.json" 3 48 4 3 8 2 512 0 "$CFG" 2>&1) \
   && "$PY" -c 'import json, sys; s = json.load(open(sys.argv[1]))["pipeline"]["stages"]; sys.exit([x["layers"] for x in s] != [[0, 0], [1, 3]])' "$tmp/topo.json"; then
  ok "--topology (layers 0-0 | 1-3, fp32 wire): $msg"
else
  bad "--topology: exit $rc: $msg"; tail -n 20 "$tmp/topo.err"
fi

# --- failures: one message, the right status, no hang --------------------------
"${MPIRUN[@]}" 4 "$BIN" bench --config "$CFG" --topology "$tmp/uneven.yaml" --context 8 --json "$tmp/x.json" >"$tmp/w.log" 2>&1
rc=$?
if [ $rc -eq 1 ] && [ "$(grep -c '^egmla bench:' "$tmp/w.log")" -eq 1 ] && grep -q "world size 4" "$tmp/w.log"; then
  ok "topology for 3 ranks under 4: exit 1, one message: $(grep '^egmla bench:' "$tmp/w.log" | head -c 140)"
else
  bad "topology for 3 ranks under 4: exit $rc"; cat "$tmp/w.log"
fi
# a bad topology file exits 2 under mpirun as under launch, on every rank
printf 'nodes: [{name: a, slots: 3}]\nstages:\n  - {node: a, layers: auto, thread: 2}\n' >"$tmp/key.yaml"
"${MPIRUN[@]}" 3 "$BIN" bench --config "$CFG" --topology "$tmp/key.yaml" --context 8 --json "$tmp/x.json" >"$tmp/k.log" 2>&1
rc=$?
if [ $rc -eq 2 ] && [ "$(grep -c '^egmla bench:' "$tmp/k.log")" -eq 1 ] && grep -q "unknown key 'thread'" "$tmp/k.log"; then
  ok "bad topology file under mpirun: exit 2, one message"
else
  bad "bad topology file under mpirun: exit $rc"; cat "$tmp/k.log"
fi
"${MPIRUN[@]}" 3 "$BIN" bench --config "$CFG" --batch 1,x --json "$tmp/x.json" >"$tmp/u.log" 2>&1
rc=$?
if [ $rc -eq 2 ] && [ "$(grep -c '^egmla bench:' "$tmp/u.log")" -eq 1 ] && grep -q -- "--batch" "$tmp/u.log"; then
  ok "bad option under mpirun: exit 2, one message: $(grep '^egmla bench:' "$tmp/u.log" | head -c 120)"
else
  bad "bad option under mpirun: exit $rc"; cat "$tmp/u.log"
fi
# rank 0 late (as on a loaded machine): the workers, which fail on the same
# option at once, must not end the job before rank 0 has said why
EGMLA_TEST_RANK0_DELAY_MS=1500 "${MPIRUN[@]}" 3 -x EGMLA_TEST_RANK0_DELAY_MS "$BIN" bench --config "$CFG" --batch 1,x >"$tmp/u2.log" 2>&1
rc=$?
if [ $rc -eq 2 ] && [ "$(grep -c '^egmla bench:' "$tmp/u2.log")" -eq 1 ] && grep -q -- "--batch" "$tmp/u2.log"; then
  ok "bad option under mpirun, rank 0 late: exit 2, rank 0's one message"
else
  bad "bad option under mpirun, rank 0 late: exit $rc"; cat "$tmp/u2.log"
fi
EGMLA_TEST_RANK0_DELAY_MS=1500 "${MPIRUN[@]}" 3 -x EGMLA_TEST_RANK0_DELAY_MS "$BIN" generate --no-such-option >"$tmp/u3.log" 2>&1
rc=$?
if [ $rc -eq 2 ] && [ "$(grep -c '^egmla generate:' "$tmp/u3.log")" -eq 1 ] && grep -q -- "--no-such-option" "$tmp/u3.log"; then
  ok "generate: unknown option under mpirun, rank 0 late: exit 2, rank 0's one message"
else
  bad "generate: unknown option under mpirun, rank 0 late: exit $rc"; cat "$tmp/u3.log"
fi
EGMLA_TEST_RANK0_DELAY_MS=1500 "${MPIRUN[@]}" 3 -x EGMLA_TEST_RANK0_DELAY_MS "$BIN" frobnicate >"$tmp/u4.log" 2>&1
rc=$?
if [ $rc -eq 2 ] && [ "$(grep -c 'unknown command' "$tmp/u4.log")" -eq 1 ]; then
  ok "unknown command under mpirun, rank 0 late: exit 2, rank 0's one message"
else
  bad "unknown command under mpirun, rank 0 late: exit $rc"; cat "$tmp/u4.log"
fi
"${MPIRUN[@]}" 3 "$BIN" bench --config "$tmp/no-such.json" --json "$tmp/x.json" >"$tmp/m.log" 2>&1
rc=$?
if [ $rc -eq 1 ] && [ "$(grep -c '^egmla bench:' "$tmp/m.log")" -eq 1 ] && grep -q "no-such.json" "$tmp/m.log"; then
  ok "missing config under mpirun: exit 1, one message: $(grep '^egmla bench:' "$tmp/m.log" | head -c 120)"
else
  bad "missing config under mpirun: exit $rc"; cat "$tmp/m.log"
fi

# every rank of every run above is gone (mpirun waits for its ranks)
if pgrep -f -- "$tmp" >/dev/null; then
  bad "ranks left running:"; pgrep -af -- "$tmp"
else
  ok "no rank left running"
fi

if [ $fails -ne 0 ]; then
  echo "e2e_bench_mpi: $fails failed"
  exit 1
fi
echo "e2e_bench_mpi: all passed"
