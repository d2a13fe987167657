#!/usr/bin/env bash
# e2e_multihost.sh - the pipeline across three "hosts" (network namespaces
# h1-h3 on a bridge, links limited to 1 Gbit/s: deploy/netns.sh), launched
# without ssh: `egmla launch --rsh-agent deploy/netns-agent.sh` run inside
# h1, over TCP on the namespaces' veth only. generate (greedy and seeded
# sampling) and score from a three-hosts topology give byte-identical
# output to the single-process run (fp32 on the wire); then the throughput
# of a batched decode is printed for the three hosts and for the same
# topology on one host (docs/CLUSTER.md).
#
# Needs root and `ip netns`; skips with a message otherwise.
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/egmla}
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac
if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1 \
   || ! command -v unshare >/dev/null 2>&1 || ! ip netns list >/dev/null 2>&1; then
  echo "SKIP: needs root and ip netns (and tc, unshare) to make three hosts"
  exit 0
fi
if ! command -v mpirun >/dev/null 2>&1; then
  echo "SKIP: mpirun not found (install Open MPI to test the pipeline)"
  exit 0
fi
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
export OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=passive
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ASAN_OPTIONS=detect_leaks=0
AGENT="$PWD/deploy/netns-agent.sh"

tmp=$(mktemp -d)
cleanup() { bash deploy/netns.sh down >/dev/null 2>&1; rm -rf "$tmp" /tmp/egm-netns; }
trap cleanup EXIT
if ! bash deploy/netns.sh up >"$tmp/netns.log" 2>&1; then
  echo "SKIP: needs root and ip netns: cannot create the namespaces:"; cat "$tmp/netns.log"
  exit 0
fi
fails=0
ok()   { echo "ok   $*"; }
bad()  { echo "FAIL $*"; fails=$((fails+1)); }

# --- a 4-layer copy of the EG-MLA fixture (layers 2-3 copy 0-1) ---------------
"$PY" - tests/fixtures/models/egmla_ln "$tmp/m4" <<'P'
import json, os, re, struct, sys
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst)
cfg = json.load(open(os.path.join(src, "config.json")))
L = cfg["num_hidden_layers"]
cfg["num_hidden_layers"] = 2 * L
json.dump(cfg, open(os.path.join(dst, "config.json"), "w"), indent=1)
raw = open(os.path.join(src, "model.safetensors"), "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head, data = json.loads(raw[8:8 + n]), raw[8 + n:]
out, blobs, off = {}, [], 0
for name, info in head.items():
    if name == "__metadata__":
        continue
    names = [name]
    m = re.match(r"model\.layers\.(\d+)\.(.*)", name)
    if m:
        names.append("model.layers.%d.%s" % (int(m.group(1)) + L, m.group(2)))
    b, e = info["data_offsets"]
    for nm in names:
        out[nm] = {"dtype": info["dtype"], "shape": info["shape"], "data_offsets": [off, off + e - b]}
        blobs.append(data[b:e])
        off += e - b
h = json.dumps(out).encode()
h += b" " * (-len(h) % 8)
with open(os.path.join(dst, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
P
M="$tmp/m4"

cat > "$tmp/gen.jsonl" <<'J'
{"id": "g1", "tokens": [1, 5, 9, 33], "temperature": 0}
{"id": "g2", "tokens": [1, 100, 200, 3, 4, 5, 6, 7, 8, 9], "temperature": 0}
{"id": "g3", "tokens": [1, 42], "temperature": 0.8, "seed": 7}
{"id": "g4", "tokens": [1, 60, 61, 62, 63, 64], "temperature": 0.8, "seed": 12345}
J
cat > "$tmp/score.jsonl" <<'J'
{"id": "s1", "tokens": [1, 5, 9, 33, 7, 120, 41]}
{"id": "s2", "tokens": [1, 100, 200, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]}
{"id": "s3", "tokens": [1, 42]}
J
"$PY" - "$tmp/bench.jsonl" <<'P'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(64):
        f.write(json.dumps({"id": "b%02d" % i, "tokens": [1, i + 5, 2 * i + 7], "temperature": 0}) + "\n")
P

# Three hosts: the coordinator and stage 1 on h1, stage 2 on h2, stage 3 on h3.
topo() {  # topo FILE HOST1 HOST2 HOST3
  cat > "$1" <<Y
transport: tcp
wire_dtype: fp32
micro_batches: 4
coordinator: {node: a, threads: 1}
nodes:
  - {name: a, host: $2, slots: 2, threads: 1}
  - {name: b, host: $3, slots: 1, threads: 1}
  - {name: c, host: $4, slots: 1, threads: 1}
stages:
  - {node: a, layers: 0-1}
  - {node: b, layers: auto}
  - {node: c, layers: auto}
Y
}
topo "$tmp/three.yaml" 10.77.0.1 10.77.0.2 10.77.0.3

# Runs `egmla launch` inside h1 (own hostname), TCP on egm0 only.
launch() {
  OMPI_MCA_oob_tcp_if_include=egm0 OMPI_MCA_btl_tcp_if_include=egm0 \
    timeout 60 ip netns exec h1 unshare --uts /bin/sh -c 'hostname h1; exec "$@"' sh \
    "$BIN" launch "$tmp/three.yaml" --rsh-agent "$AGENT" --workdir "$tmp/launch" -- "$@"
}

GEN=(--max-new-tokens 16 --ignore-eos)
"$BIN" generate --model "$M" --input "$tmp/gen.jsonl" --out "$tmp/gen.1" "${GEN[@]}" 2>>"$tmp/log" \
  || bad "1-process generate"
"$BIN" score --model "$M" --input "$tmp/score.jsonl" --out "$tmp/score.1" 2>>"$tmp/log" \
  || bad "1-process score"

launch generate --model "$M" --input "$tmp/gen.jsonl" --out "$tmp/gen.3h" "${GEN[@]}" >"$tmp/gen.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && cmp -s "$tmp/gen.1" "$tmp/gen.3h"; then
  ok "generate (greedy + seeded) on h1/h2/h3 over TCP: identical to 1 process"
else
  bad "generate on three hosts: exit $rc"; cat "$tmp/gen.log"
fi
# the stages really ran on three hosts
for h in h1 h2 h3; do
  grep -q "on $h, layers" "$tmp/gen.log" || bad "no stage reported host $h"
done
grep -q "on h3, layers" "$tmp/gen.log" && ok "stages report hosts h1, h2, h3: $(grep -o 'rank [0-9] on h[0-9], layers [0-9-]*' "$tmp/gen.log" | tr '\n' ';')"

launch score --model "$M" --input "$tmp/score.jsonl" --out "$tmp/score.3h" >"$tmp/score.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && cmp -s "$tmp/score.1" "$tmp/score.3h"; then
  ok "score on h1/h2/h3 over TCP: identical to 1 process"
else
  bad "score on three hosts: exit $rc"; cat "$tmp/score.log"
fi

# --- throughput: three hosts vs the same topology on one host ---------------
BENCH=(generate --model "$M" --input "$tmp/bench.jsonl" --max-new-tokens 64 --ignore-eos)
tps() { sed -n 's/.* in \([0-9.]*\) s .*/\1/p' "$1" | tail -1; }
launch "${BENCH[@]}" --out "$tmp/b.3h" >"$tmp/b3h.log" 2>&1 || bad "throughput run on three hosts"
topo "$tmp/one.yaml" localhost localhost localhost
OMPI_MCA_btl_tcp_if_include=lo timeout 60 "$BIN" launch "$tmp/one.yaml" --workdir "$tmp/launch1" -- \
  "${BENCH[@]}" --out "$tmp/b.1h" >"$tmp/b1h.log" 2>&1 || bad "throughput run on one host"
if cmp -s "$tmp/b.3h" "$tmp/b.1h"; then
  t3=$(tps "$tmp/b3h.log"); t1=$(tps "$tmp/b1h.log")
  ok "batched decode, 64 x 64 tokens, 4 ranks over TCP: three hosts $t3 s, one host $t1 s" \
     "($(echo "$t3 $t1" | awk '{printf "%.0f vs %.0f tok/s", 4096/$1, 4096/$2}'))"
else
  bad "throughput runs differ"; tail -3 "$tmp/b3h.log" "$tmp/b1h.log"
fi

if [ $fails -ne 0 ]; then echo "--- log"; tail -20 "$tmp/log"; echo "e2e_multihost: $fails failed"; exit 1; fi
echo "e2e_multihost: all passed"
