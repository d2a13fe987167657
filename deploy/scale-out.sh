#!/usr/bin/env bash
# scale-out.sh - docs/CLUSTER.md's scale-out tables, from `egmla plan`:
# for 4, 8, 16 and 64 nodes, a model's pipeline (at most one stage per
# layer: beyond that, whole pipelines side by side), with bf16 and int8 on
# 1, 10 and 100 Gbit/s links. Each node is what the calibration measured
# (CAL: egmla bench --calibrate on one node, THREADS threads per stage).
#
#   deploy/scale-out.sh CONFIG CAL [THREADS]      (BIN, CTX, ROWS)
set -eu
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/egmla}
CFG=$1 CAL=$2 THREADS=${3:-1}
CTX=${CTX:-512} ROWS=${ROWS:-8}
/usr/bin/python3 - "$BIN" "$CFG" "$CAL" "$THREADS" "$CTX" "$ROWS" <<'P'
import json, os, subprocess, sys, tempfile
BIN, CFG, CAL, THREADS, CTX, ROWS = sys.argv[1:7]
THREADS, CTX, ROWS = int(THREADS), int(CTX), int(ROWS)
L = json.load(open(CFG))["num_hidden_layers"]
d = tempfile.mkdtemp()
LAT = {1: 50, 10: 20, 100: 5}   # one-way microseconds assumed per link speed

def plan(S, b, m, wire, gbps):
    topo = os.path.join(d, "t%d.yaml" % S)
    with open(topo, "w") as f:
        f.write("transport: tcp\nnodes:\n")
        for i in range(S):
            f.write("  - {name: n%d, slots: 2, threads: %d}\n" % (i, THREADS))
        f.write("stages:\n" + "".join("  - {node: n%d}\n" % i for i in range(S)))
    out = subprocess.run([BIN, "plan", "--config", CFG, "--topology", topo, "--calibration", CAL,
                          "--batch", str(b), "--micro-batches", str(m), "--context", str(CTX),
                          "--wire-dtype", wire, "--link-gbps", str(gbps), "--link-us", str(LAT[gbps]),
                          "--json", "-"], capture_output=True, text=True, check=True).stdout
    return json.loads(out[out.index("{"):])

print("| nodes | pipelines x stages | layers per stage | wire | link Gbit/s | micro-batches needed | batch | decode tok/s (all pipelines) | TTFT ms (prompt of CTX) | bound |")
print("|---:|---|---|---|---:|---:|---:|---:|---:|---|")
for N in (4, 8, 16, 64):
    S = max(s for s in range(1, min(N, L) + 1) if N % s == 0)
    reps = N // S
    for wire in ("bf16", "int8"):
        for g in (1, 10, 100):
            # the fewest micro-batches of ROWS rows that fill the pipeline
            # (its round no longer one micro-batch's round trip)
            for m in range(max(1, S - 1), 4 * S + 1):
                p = plan(S, ROWS * m, m, wire, g)
                if "round trip" not in p["bound"]:
                    break
            lay = sorted(set(s["layers"][1] - s["layers"][0] + 1 for s in p["per_stage"]))
            print("| %d | %d x %d | %s | %s | %d | %d | %d | %.0f | %.0f | %s |" % (
                N, reps, S, "-".join(map(str, lay)), wire, g, m, ROWS * m,
                reps * p["decode_tokens_per_s"], 1e3 * p["ttft_s"], p["bound"]))
P
