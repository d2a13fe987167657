#!/usr/bin/env bash
# validate-plan.sh - `egmla plan` against `egmla bench` under mpirun, on this
# machine: 1 rank, and 2-3 stages with 1-4 micro-batches, at batch 1, 8 and
# 32; with --netns also across three network-namespace hosts (tc tbf at
# 1 Gbit/s and 100 Mbit/s; needs root). Not part of `make test`: it takes
# several minutes and times things. Prints, per configuration, measured
# tokens/s and two predictions:
#   plan(cal)    from a calibration measured just before the run
#                (egmla bench --calibrate, 2 ranks: the link too);
#   plan(stages) from the run's own per-stage busy time per micro-batch
#                (egmla plan --stage-ms): the pipeline model alone, without
#                the calibration's error (on a shared machine a stage under
#                mpirun runs slower than the calibration measured alone);
# and the worst error of each, and at batch 32 the busiest stage's busy
# time over the mean stage's (auto split).
#
#   deploy/validate-plan.sh [--netns | --netns-only] [--quick]     (BIN, CFG, CTX, STEPS, OUT)
#   deploy/validate-plan.sh --report   the table again from OUT's runs, with this BIN's plan
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/egmla}
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac
CFG=${CFG:-deploy/examples/paper-egmla.json}
CTX=${CTX:-128}
STEPS=${STEPS:-8}
OUT=${OUT:-$PWD/build/validate-plan}
NETNS=0 QUICK=0 SHM=1 REPORT=0
for a in "$@"; do
  case "$a" in
    --netns) NETNS=1 ;;
    --netns-only) NETNS=1 SHM=0 ;;
    --quick) QUICK=1 ;;
    --report) REPORT=1 SHM=0 ;;
    *) echo "usage: $0 [--netns | --netns-only] [--quick] | --report" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
[ $REPORT -eq 1 ] || { cp "$BIN" "$OUT/egmla" && BIN="$OUT/egmla"; }  # a rebuild during the run does not touch it
export OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=passive
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPI=(mpirun --oversubscribe --bind-to none)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
if [ $REPORT -eq 1 ]; then
  [ -s "$OUT/runs.txt" ] || { echo "--report: no runs in $OUT/runs.txt (run the validation first)" >&2; exit 1; }
else
  : > "$OUT/runs.txt"
fi

calibrate() {  # calibrate FILE: this node, and the shared-memory link
  "${MPI[@]}" -np 2 "$BIN" bench --calibrate --config "$CFG" --json "$1" 2>>"$OUT/log" >/dev/null
}
bench() {  # bench JSON RANKS M
  if [ "$2" -eq 1 ]; then
    "$BIN" bench --config "$CFG" --batch 1,8,32 --context "$CTX" --steps "$STEPS" --threads 1 \
      --roofline-once --json "$1" >>"$OUT/log" 2>&1
  else
    "${MPI[@]}" -np "$2" "$BIN" bench --config "$CFG" --batch 1,8,32 --context "$CTX" \
      --steps "$STEPS" --micro-batches "$3" --roofline-once --json "$1" >>"$OUT/log" 2>&1
  fi
}

# 1 rank; 2 and 3 stages with 1-4 micro-batches (fewer with --quick).
runs=()
[ $SHM -eq 1 ] && runs=("1 1")
for r in $( [ $SHM -eq 1 ] && echo 3 4); do
  for m in $( [ $QUICK -eq 1 ] && echo "1 $((r - 1))" || echo "1 2 3 4"); do runs+=("$r $m"); done
done
for run in ${runs[@]+"${runs[@]}"}; do
  set -- $run
  tag="r$1-m$2"
  echo "== $tag: calibrate, then bench" >&2
  calibrate "$OUT/cal-$tag.json" || { echo "calibration failed: see $OUT/log" >&2; exit 1; }
  bench "$OUT/bench-$tag.json" "$1" "$2" || { echo "bench failed: see $OUT/log" >&2; exit 1; }
  echo "$tag $OUT/cal-$tag.json $OUT/bench-$tag.json shm - -" >> "$OUT/runs.txt"
done

# Three hosts (h1: rank 0 and stage 1, h2: stage 2, h3: stage 3) over TCP,
# at each tbf rate; the link calibrated across h1 -> h2 at that rate.
if [ $NETNS -eq 1 ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "--netns needs root" >&2; exit 2; fi
  AGENT="$PWD/deploy/netns-agent.sh"
  hosts() {  # hosts FILE STAGES...
    f=$1; shift
    { echo "transport: tcp"; echo "wire_dtype: bf16"; echo "coordinator: {node: a}"
      echo "nodes:"; echo "  - {name: a, host: 10.77.0.1, slots: 2}"
      echo "  - {name: b, host: 10.77.0.2, slots: 1}"; echo "  - {name: c, host: 10.77.0.3, slots: 1}"
      echo "stages:"; for s in "$@"; do echo "  - {node: $s}"; done; } > "$f"
  }
  hosts "$OUT/link.yaml" b
  hosts "$OUT/three.yaml" a b c
  inns() {  # runs egmla launch TOPO -- ... inside h1
    OMPI_MCA_oob_tcp_if_include=egm0 OMPI_MCA_btl_tcp_if_include=egm0 \
      timeout 900 ip netns exec h1 unshare --uts /bin/sh -c 'hostname h1; exec "$@"' sh \
      "$BIN" launch "$1" --rsh-agent "$AGENT" --workdir "$OUT/launch" "${@:2}"
  }
  for rate in 1gbit 100mbit; do
    echo "== netns $rate: calibrate (link h1 -> h2), then bench on h1/h2/h3" >&2
    EGM_NETNS_RATE=$rate bash deploy/netns.sh up >>"$OUT/log" 2>&1 || { echo "netns up failed" >&2; exit 1; }
    inns "$OUT/link.yaml" -- bench --calibrate --config "$CFG" --json "$OUT/cal-ns-$rate.json" \
      >>"$OUT/log" 2>&1 || echo "netns calibration failed: see $OUT/log" >&2
    inns "$OUT/three.yaml" -- bench --config "$CFG" --batch 1,8,32 --context "$CTX" --steps "$STEPS" \
      --micro-batches 3 --roofline-once --json "$OUT/bench-ns-$rate.json" >>"$OUT/log" 2>&1 \
      || echo "netns bench failed: see $OUT/log" >&2
    bash deploy/netns.sh down >>"$OUT/log" 2>&1
    gbps=$([ $rate = 1gbit ] && echo 1 || echo 0.1)
    echo "ns-$rate $OUT/cal-ns-$rate.json $OUT/bench-ns-$rate.json tcp $gbps $OUT/three.yaml" >> "$OUT/runs.txt"
  done
fi

"$PY" - "$BIN" "$CFG" "$CTX" "$STEPS" "$OUT" <<'P'
import json, os, subprocess, sys
BIN, CFG, CTX, STEPS, OUT = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

def plan(topo, cal, b, m, extra):
    cmd = [BIN, "plan", "--config", CFG, "--topology", topo, "--calibration", cal, "--batch", str(b),
           "--context", str(CTX), "--steps", str(STEPS), "--micro-batches", str(m), "--json", "-"] + extra
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        sys.exit("plan failed: %s\n%s" % (" ".join(cmd), out.stderr))
    return json.loads(out.stdout[out.stdout.index("{"):])

def topo_of(pipe, path, transport):
    # the bench run's own split, so that plan models the same stages
    with open(path, "w") as f:
        f.write("transport: %s\nnodes: [{name: l, host: localhost, slots: 64}]\nstages:\n" % transport)
        for s in pipe["stages"] if pipe else [{"layers": [0, json.load(open(CFG))["num_hidden_layers"] - 1]}]:
            f.write("  - {node: l, layers: %d-%d}\n" % (s["layers"][0], s["layers"][1]))
    return path

rows, worst_cal, worst_st, balance = [], (0, ""), (0, ""), []
for line in open(os.path.join(OUT, "runs.txt")):
    tag, cal, bj, transport, gbps, _ = line.split()
    if not os.path.exists(bj) or not os.path.exists(cal):
        print("%s: no results (see %s/log)" % (tag, OUT)); continue
    d = json.load(open(bj))
    pipe = d.get("pipeline")
    topo = topo_of(pipe, os.path.join(OUT, "topo-%s.yaml" % tag), transport)
    link = ["--link-gbps", gbps, "--link-us", "%.1f" % (1e6 * json.load(open(cal))["link"]["latency_s"])] if gbps != "-" else []
    for r in d["results"]:
        b = r["batch"]
        m = r.get("micro_batches", 1) if r["phase"] == "decode" else 1
        p = plan(topo, cal, b, m, link)
        if r["phase"] == "prefill":
            pred, meas, st_pred = p["prefill_tokens_per_s"], r["tokens_per_s"], None
        else:
            pred, meas = p["decode_tokens_per_s"], r["tokens_per_s"]
            st_pred = None
            if r.get("stages"):
                ms = ",".join("%.4f" % (1e3 * s["busy_s"] / max(1, s["micro_batches"])) for s in r["stages"])
                st_pred = plan(topo, cal, b, m, link + ["--stage-ms", ms])["decode_tokens_per_s"]
                busy = [s["busy_s"] for s in r["stages"]]
                if b == 32 and tag.endswith("m%d" % len(busy)) or (b == 32 and tag.startswith("ns")):
                    balance.append((tag, max(busy) / (sum(busy) / len(busy))))
        e_cal = pred / meas - 1
        e_st = st_pred / meas - 1 if st_pred else None
        if abs(e_cal) > abs(worst_cal[0]): worst_cal = (e_cal, "%s %s b=%d" % (tag, r["phase"], b))
        if e_st is not None and abs(e_st) > abs(worst_st[0]): worst_st = (e_st, "%s decode b=%d" % (tag, b))
        bound = p["bound"] if r["phase"] == "decode" else "-"
        rows.append((tag, r["phase"], b, m, meas, pred, e_cal, st_pred, e_st, bound))

print("| run | phase | batch | micro-batches | measured tok/s | plan(cal) | error | plan(stages) | error | plan's bound |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
for t, ph, b, m, meas, pred, ec, sp, es in [r[:9] for r in rows]:
    bound = [r for r in rows if r[0] == t and r[1] == ph and r[2] == b][0][9]
    print("| %s | %s | %d | %d | %.1f | %.1f | %+.0f %% | %s | %s | %s |" % (
        t, ph, b, m, meas, pred, 100 * ec, "%.1f" % sp if sp else "-",
        "%+.0f %%" % (100 * es) if es is not None else "-", bound))
print()
print("worst plan(cal) error:    %+.0f %% (%s)" % (100 * worst_cal[0], worst_cal[1]))
print("worst plan(stages) error: %+.0f %% (%s)" % (100 * worst_st[0], worst_st[1]))
for t, x in balance:
    print("busiest / mean stage busy at batch 32, %s: %.2f" % (t, x))
P
