#!/usr/bin/env bash
# e2e_serve.sh - egmla serve end to end on the embedded model, over loopback:
#   - completions (text and token prompts), chat, stop strings, log-probs,
#     echo: each answer equals `egmla generate` on the same request (same
#     seed, same sampling); streamed chunks concatenate to the same text;
#   - malformed JSON, wrong types, unknown model/endpoint, an oversized
#     body: 400/404/413 with OpenAI error objects, and the server lives on;
#   - a client that hangs up mid-stream: the request is cancelled, its slot
#     and KV blocks free (/metrics);
#   - the real `openai` Python client (PyPI, pinned, in a venv under build/;
#     SERVE_PY=/path/to/python uses one that has it; without PyPI those
#     checks are skipped and say so);
#   - 200 requests over 16 connections, every answer checked against
#     generate; the same (fewer) under mpirun -np 3; after each load run
#     /metrics has one busy fraction per stage (1, then 2) in [0, 1], their
#     layer ranges covering the model, and every stage busy > 0;
#   - a full queue: 503 with Retry-After; --api-key; SIGTERM drains the
#     request in flight and exits 0; under mpirun a killed stage ends the
#     server non-zero with one message naming the rank.
# The server binds port 0 and the test reads the port from its "listening
# on" line; nothing sleeps to wait.
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/egmla}
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac
export OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=passive
OPENAI_V=3.63.0
VENV=build/venv-serve
PY=${SERVE_PY:-$VENV/bin/python}
has_openai() { "$1" -c "import sys, openai; sys.exit(openai.__version__ != '$OPENAI_V')" 2>/dev/null; }
if ! has_openai "$PY" && [ -z "${SERVE_PY:-}" ]; then
  echo "== making $VENV with openai $OPENAI_V from PyPI"
  rm -rf "$VENV"
  if /usr/bin/python3 -m venv "$VENV" >/dev/null 2>&1 &&
     "$VENV/bin/pip" install -q --disable-pip-version-check "openai==$OPENAI_V" >"$VENV.log" 2>&1; then
    :
  else
    tail -3 "$VENV.log" 2>/dev/null
    echo "SKIP (openai client part only): cannot install openai $OPENAI_V from PyPI"
    rm -rf "$VENV"
  fi
fi
has_openai "$PY" || PY=/usr/bin/python3

tmp=$(mktemp -d)
SPID=""
cleanup() { [ -n "$SPID" ] && kill -9 "$SPID" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fails=0
ok()  { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails+1)); }
M=models/egmla-tiny
# --batch-invariant on both sides: a request's tokens must not depend on
# what shared its batch (the server's batches follow the clients' timing,
# generate's its input), or a loaded machine flips a sampled token now and then
ENGINE=(--model "$M" --chat-template chatml --batch-invariant)
LAYERS=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["num_hidden_layers"])' "$M/config.json")
MPIRUN=(mpirun --allow-run-as-root --oversubscribe -np 3)

# start_server LOG CMD...: runs CMD in the background (SPID), reads its
# output until the "listening on" line, sets PORT; the rest of the output
# keeps flowing into LOG.
start_server() {
  local log=$1; shift
  rm -f "$tmp/fifo"; mkfifo "$tmp/fifo"
  "$@" >"$tmp/fifo" 2>&1 &
  SPID=$!
  exec 3<"$tmp/fifo"
  PORT=""
  local line
  while IFS= read -r -t 120 line <&3; do
    echo "$line" >>"$log"
    case $line in *"listening on http://"*) PORT=${line##*:}; PORT=${PORT%% *}; break ;; esac
  done
  cat <&3 >>"$log" &
  exec 3<&-
  [ -n "$PORT" ] || { bad "no \"listening on\" line from: $*"; cat "$log"; return 1; }
}

# --- one process: the API, errors, disconnects, the openai client, load ----
if start_server "$tmp/a.log" "$BIN" serve --port 0 --max-body 65536 "${ENGINE[@]}"; then
  URL=http://127.0.0.1:$PORT
  "$PY" tests/serve_check.py api "$URL" "$BIN" "$M" --chat-template chatml --batch-invariant || fails=$((fails+1))
  "$PY" tests/serve_check.py load "$URL" "$BIN" "$M" 200 16 --chat-template chatml --batch-invariant || fails=$((fails+1))
  "$PY" tests/serve_check.py stages "$URL" "$BIN" "$M" 1 "$LAYERS" || fails=$((fails+1))
  kill -TERM "$SPID"; wait "$SPID"; rc=$?; SPID=""
  [ $rc -eq 0 ] && ok "SIGTERM on an idle server: exit 0" || { bad "SIGTERM: exit $rc"; tail -5 "$tmp/a.log"; }
fi

# --- a small server: a full queue, the API key, draining on SIGTERM --------
if start_server "$tmp/b.log" "$BIN" serve --port 0 --max-batch 1 --max-queue 1 --api-key sekrit "${ENGINE[@]}"; then
  URL=http://127.0.0.1:$PORT
  code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/v1/models")
  [ "$code" = 401 ] && ok "--api-key: no key, 401" || bad "--api-key: no key gave $code"
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer sekrit" "$URL/v1/models")
  [ "$code" = 200 ] && ok "--api-key: the key, 200" || bad "--api-key: the key gave $code"
  code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/health")
  [ "$code" = 200 ] && ok "--api-key: /health needs no key" || bad "/health gave $code"
  # 8 long requests at once: one runs, one waits in the scheduler, one queued
  for i in $(seq 8); do
    curl -s -D "$tmp/h$i" -o "$tmp/q$i" -H "Authorization: Bearer sekrit" "$URL/v1/completions" \
      -d '{"prompt": "And", "max_tokens": 300, "ignore_eos": true}' &
    echo $! >>"$tmp/curls"
  done
  for p in $(cat "$tmp/curls"); do wait "$p"; done
  n503=$(grep -l "^HTTP/1.1 503" "$tmp"/h* | wc -l); n200=$(grep -l "^HTTP/1.1 200" "$tmp"/h* | wc -l)
  retry=$(grep -il "^Retry-After: 1" "$tmp"/h* | wc -l)
  if [ "$n503" -ge 1 ] && [ "$n200" -ge 1 ] && [ $((n503 + n200)) -eq 8 ] && [ "$retry" -eq "$n503" ]; then
    ok "a full queue: $n503 of 8 got 503 with Retry-After, $n200 were served"
  else
    bad "a full queue: $n200 x 200, $n503 x 503, $retry with Retry-After"
  fi
  # SIGTERM with a request in flight: it finishes, then the server exits 0
  curl -s -o "$tmp/drain.json" -H "Authorization: Bearer sekrit" "$URL/v1/completions" \
    -d '{"prompt": "And", "max_tokens": 400, "ignore_eos": true}' &
  cpid=$!
  for _ in $(seq 100000); do
    curl -s "$URL/health" | grep -q '"running":1' && break
  done
  kill -TERM "$SPID"; wait "$SPID"; rc=$?; SPID=""
  wait $cpid
  got=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['usage']['completion_tokens'])" "$tmp/drain.json" 2>/dev/null)
  if [ $rc -eq 0 ] && [ "$got" = 400 ]; then
    ok "SIGTERM drains: the request in flight got its 400 tokens, exit 0"
  else
    bad "SIGTERM drain: exit $rc, answer: $(head -c 200 "$tmp/drain.json")"; tail -5 "$tmp/b.log"
  fi
fi

# --- mpirun -np 3: rank 0 serves, two stages; then a stage dies ------------
if command -v mpirun >/dev/null; then
  if start_server "$tmp/c.log" "${MPIRUN[@]}" "$BIN" serve --port 0 --wire-dtype fp32 "${ENGINE[@]}"; then
    URL=http://127.0.0.1:$PORT
    "$PY" tests/serve_check.py load "$URL" "$BIN" "$M" 48 8 --chat-template chatml --batch-invariant || fails=$((fails+1))
    "$PY" tests/serve_check.py stages "$URL" "$BIN" "$M" 2 "$LAYERS" || fails=$((fails+1))
    victim="" ranks=$(pgrep -P "$SPID")
    for p in $ranks; do
      tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=2" && victim=$p
    done
    if [ -n "$victim" ]; then
      kill -9 "$victim"; wait "$SPID"; rc=$?; SPID=""
      code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")
      msg=$(grep -E "^egmla: |rank 2 with PID .* exited on signal" "$tmp/c.log" | head -1)
      if [ $rc -ne 0 ] && [ "$code" != 200 ] && [ -n "$msg" ]; then
        ok "mpirun: a killed stage ends the server (exit $rc, /health $code): $msg"
      else
        bad "mpirun: killed stage: exit $rc, /health $code"; tail -5 "$tmp/c.log"
      fi
    else
      bad "mpirun: rank 2 not found"; kill -TERM "$SPID"; wait "$SPID"; SPID=""
    fi
    left=""  # mpirun may exit a moment before the ranks it stopped
    for p in $ranks; do timeout 20 tail --pid="$p" -f /dev/null; kill -0 "$p" 2>/dev/null && left="$left $p"; done
    if [ -n "$left" ]; then bad "mpirun: ranks left:$left"; kill -9 $left; fi
  fi
else
  echo "SKIP mpirun part: no mpirun"
fi

[ $fails -eq 0 ] && echo "e2e_serve: 0 failed" || echo "e2e_serve: $fails failed"
[ $fails -eq 0 ]
