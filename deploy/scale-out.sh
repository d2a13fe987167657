#!/usr/bin/env bash
# scale-out.sh - docs/CLUSTER.md's scale-out tables, from `egmla plan`:
# for 4, 8, 16 and 64 nodes, the longest pipeline the layers allow (S
# stages, S dividing the nodes; copies of it side by side), with bf16 and
# int8 on 1, 10 and 100 Gbit/s links; the link speed below which the wire,
# not the slowest stage, would bound it; and, to compare, the same nodes
# each running the whole model (one-stage copies, 100 Gbit/s). Each node is what the calibration measured
# (CAL: egmla bench --calibrate on one node, THREADS threads per stage).
#
#   deploy/scale-out.sh CONFIG CAL [THREADS]      (BIN, CTX, ROWS; CAL may be "analytic")
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

def fill(S, wire, g):
    # the fewest micro-batches of ROWS rows that fill the pipeline (its
    # round no longer one micro-batch's round trip)
    for m in range(max(1, S - 1), 4 * S + 1):
        p = plan(S, ROWS * m, m, wire, g)
        if "round trip" not in p["bound"]:
            break
    return m, p

print("| nodes | pipelines x stages | layers per stage | wire | micro-batches needed (batch) | "
      "decode tok/s, all pipelines: 1 / 10 / 100 Gbit/s | TTFT ms at 1 / 100 Gbit/s | bound | "
      "the wire binds below | the nodes as 1-stage copies, tok/s |")
print("|---:|---|---|---|---:|---|---|---|---:|---:|")
for N in (4, 8, 16, 64):
    # the longest pipeline the layers allow (S divides N), copies side by side
    S = max(s for s in range(1, min(N, L) + 1) if N % s == 0)
    one = N * fill(1, "bf16", 100)[1]["decode_tokens_per_s"]
    reps = N // S
    for wire in ("bf16", "int8"):
        res = {g: fill(S, wire, g) for g in (1, 10, 100)}
        m, p = res[1]
        lay = sorted(set(s["layers"][1] - s["layers"][0] + 1 for s in p["per_stage"]))
        slowest = max(s["micro_batch_s"] for s in p["per_stage"])
        binds = p["wire_bytes_per_token_per_hop"] * p["rows_per_micro_batch"] * 8 / slowest if S > 1 else 0
        print("| %d | %d x %d | %s | %s | %d (%d) | %s | %.0f / %.0f | %s | %s | %.0f |" % (
            N, reps, S, "-".join(map(str, lay)), wire, m, ROWS * m,
            " / ".join("%.0f" % (reps * res[g][1]["decode_tokens_per_s"]) for g in (1, 10, 100)),
            1e3 * res[1][1]["ttft_s"], 1e3 * res[100][1]["ttft_s"], p["bound"],
            "%.1f Mbit/s" % (binds / 1e6) if S > 1 else "-", one))
P
