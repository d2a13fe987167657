#!/usr/bin/env bash
# Startup checks across ranks: a rank running another build, or seeing
# another model at the same path, stops every rank with one message naming
# the rank, its host and the reason. Uses an MPMD mpirun line so that one
# rank runs a different binary, or sees a different file through a private
# bind mount (unshare -m). And the environment the binary re-executes
# itself with (coordinator/main.c), where the user's own settings win.
set -u
BIN=${BIN:-bin/egmla}
BUILD=${BUILD:-build}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
ok()  { echo "  ok: $*"; }
bad() { echo "  FAIL: $*"; fails=$((fails+1)); }
if ! command -v mpirun >/dev/null; then echo "SKIP: mpirun missing"; exit 0; fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=0
M=tests/fixtures/models/llama_mha
printf '{"id":1,"tokens":[1,2,3]}\n' > $T/in.jsonl
args=(generate --model "$PWD/$M" --input $T/in.jsonl --out $T/out.jsonl --max-new-tokens 2)

# --- a rank running another build: relink the binary with a different revision
san=""; [ "$BUILD" = build-san ] && san="-fsanitize=address,undefined"
PK=$(sed -n "s/^PKGS *:= *//p" Makefile)   # the build's own packages
if cc -std=c11 -D_GNU_SOURCE -fopenmp -O1 $san -I. -I$BUILD/proto $(pkg-config --cflags $PK) \
      -DEGM_VERSION='"0.0.0-other"' -DEGM_GITREV='"other"' -c worker/worker_mpi.c -o $T/worker_mpi.o &&
   cc -fopenmp $san -o $T/egmla-other $BUILD/coordinator/main.o $T/worker_mpi.o $BUILD/libegmla.a \
      $(pkg-config --libs $PK) -lm -lpthread; then
  timeout 60 mpirun -np 2 "$BIN" "${args[@]}" : -np 1 $T/egmla-other "${args[@]}" > $T/o 2> $T/err
  rc=$?
  if [ $rc -eq 1 ] && grep -q "rank 2 (.*).*runs build 0.0.0-other+other" $T/err; then
    ok "other build on rank 2: exit 1, $(grep -m1 'runs build' $T/err)"
  else bad "other build on rank 2: rc=$rc: $(head -3 $T/err)"; fi
else
  bad "could not relink a second build"
fi

# --- a rank seeing another model at the same path (private bind mount)
if unshare -m true 2>/dev/null; then
  cp -r $M $T/alt
  sed -i 's/"rms_norm_eps": [0-9.e-]*/"rms_norm_eps": 2e-05/' $T/alt/config.json
  cat > $T/other-view.sh <<EOS
#!/bin/sh
exec unshare -m sh -c 'mount --bind "$T/alt" "$PWD/$M" && exec "\$0" "\$@"' "\$@"
EOS
  chmod +x $T/other-view.sh
  timeout 60 mpirun -np 2 "$BIN" "${args[@]}" : -np 1 $T/other-view.sh "$PWD/$BIN" "${args[@]}" > $T/o 2> $T/err
  rc=$?
  if [ $rc -eq 1 ] && grep -q "rank 2 (.*) sees a different" $T/err; then
    ok "other model on rank 2: exit 1, $(grep -m1 'sees a different' $T/err)"
  else bad "other model on rank 2: rc=$rc: $(head -3 $T/err)"; fi
else
  echo "SKIP: unshare -m not permitted (other-model case)"
fi
# --- the re-executed process's environment: the input is a FIFO, so the
# process is still alive (and past its re-exec, which comes before it opens
# its input) once our end of the FIFO opens
environ_of() {  # environ_of VAR [VALUE]: VAR=VALUE given to egmla, or unset
  mkfifo $T/fifo
  if [ $# -gt 1 ]; then env "$1=$2" "$BIN" generate --model "$M" --input $T/fifo --out $T/env.jsonl \
       --max-new-tokens 1 2>/dev/null & else
    env -u "$1" "$BIN" generate --model "$M" --input $T/fifo --out $T/env.jsonl \
       --max-new-tokens 1 2>/dev/null & fi
  local pid=$!
  # bounded: if egmla died before opening its input, the open never returns
  timeout 60 bash -c 'exec 3>"$1"; tr "\0" "\n" < /proc/$2/environ > "$1.env"
                      printf "{\"id\":1,\"tokens\":[1,2]}\n" >&3' sh $T/fifo $pid
  grep "^$1=" $T/fifo.env || true
  wait $pid
  rm -f $T/fifo $T/fifo.env
}
got=$(environ_of OPENBLAS_THREAD_TIMEOUT)
[ "$got" = "OPENBLAS_THREAD_TIMEOUT=20" ] && ok "OpenBLAS's idle threads sleep within 2^20 cycles ($got)" \
  || bad "re-executed without OPENBLAS_THREAD_TIMEOUT=20: '$got'"
got=$(environ_of OPENBLAS_THREAD_TIMEOUT 7)
[ "$got" = "OPENBLAS_THREAD_TIMEOUT=7" ] && ok "the user's OPENBLAS_THREAD_TIMEOUT wins ($got)" \
  || bad "the user's OPENBLAS_THREAD_TIMEOUT=7 was replaced: '$got'"

check_leftovers=$(pgrep -f "$T/" | wc -l)
[ "$check_leftovers" -eq 0 ] && ok "no rank left running" || bad "ranks left running"
echo "e2e_startup: $fails failed"
[ $fails -eq 0 ]
