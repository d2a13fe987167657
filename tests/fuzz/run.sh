#!/usr/bin/env bash
# run.sh - builds the libFuzzer harnesses with clang (fuzzer + ASan + UBSan)
# and runs each for a bounded time on its corpus.
#
#   tests/fuzz/run.sh [SECONDS] [HARNESS...]     default 30 s each, all of them
#
# The library is rebuilt with clang into build-fuzz/ (the Makefile's build/
# is gcc and uninstrumented). New interesting inputs go to build-fuzz/corpus/
# (the committed seeds in tests/fuzz/corpus/ stay as they are); a crash is
# written to build-fuzz/crash-* and fails the run: minimise it, fix the
# parser and commit the input under tests/regress/<parser>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-30}
shift || true
OUT=build-fuzz
CC=${FUZZ_CC:-clang}
PKGS="openblas jansson libpcre2-8 yaml-0.1 libprotobuf-c ompi"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-std=c11 -D_GNU_SOURCE -O1 -g -fno-omit-frame-pointer $SAN -I. -I$OUT/proto $(pkg-config --cflags $PKGS)"
LIBS="$(pkg-config --libs $PKGS) -lm -lpthread"

command -v "$CC" >/dev/null || { echo "SKIP: $CC not found (apt-get install clang)"; exit 0; }

# the library, instrumented for coverage but without libFuzzer's main()
mkdir -p "$OUT/proto" "$OUT/obj"
for p in proto/*.proto; do
  b=$(basename "$p" .proto)
  [ "$OUT/proto/$b.pb-c.c" -nt "$p" ] || protoc-c --c_out="$OUT/proto" --proto_path=proto "$p"
done
# Only what the harnesses reach: the parsers and what they call (not the MPI
# pipeline, which needs mpirun to be of any use here).
objs=()
for src in base/*.c model/*.c kernels/*.c deploy/topology.c coordinator/request.c \
           coordinator/jsonl.c "$OUT"/proto/*.pb-c.c; do
  o="$OUT/obj/$(echo "${src%.c}" | tr / _).o"
  [ "$o" -nt "$src" ] ||
    $CC $CFLAGS -fsanitize=fuzzer-no-link -DEGM_VERSION='"fuzz"' -DEGM_GITREV='"fuzz"' -c "$src" -o "$o"
  objs+=("$o")
done
rm -f "$OUT/libegmla-fuzz.a"
ar rcs "$OUT/libegmla-fuzz.a" "${objs[@]}"

harnesses=("$@")
if [ ${#harnesses[@]} -eq 0 ]; then
  for f in tests/fuzz/fuzz_*.c; do harnesses+=("$(basename "$f" .c)"); done
fi

fails=0
for h in "${harnesses[@]}"; do
  $CC $CFLAGS -fsanitize=fuzzer "tests/fuzz/$h.c" "$OUT/libegmla-fuzz.a" $LIBS -o "$OUT/$h"
  seeds="tests/fuzz/corpus/$h"
  # the committed regression inputs are replayed first, under clang's
  # sanitizers too (gcc's UBSan in `make SAN=1 test` misses some checks)
  regress="tests/regress/${h#fuzz_}"
  work="$OUT/corpus/$h"
  mkdir -p "$work" "$OUT/crashes/$h"
  dict=(); [ -f "tests/fuzz/$h.dict" ] && dict=(-dict="tests/fuzz/$h.dict")
  echo "== $h (${SECS}s)"
  # -rss_limit/-malloc_limit: a parser that allocates gigabytes for a short
  # input is a bug too. Only the summary lines are kept.
  if ASAN_OPTIONS=detect_leaks=1 OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=passive \
     "$OUT/$h" "${dict[@]}" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
       -malloc_limit_mb=1024 -max_len=65536 -print_final_stats=1 \
       -artifact_prefix="$OUT/crashes/$h/" "$work" "$seeds" "$regress" >"$OUT/$h.log" 2>&1; then
    grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$OUT/$h.log" || true
  else
    echo "FAIL: $h crashed; input in $OUT/crashes/$h/, log in $OUT/$h.log"
    grep -E 'ERROR|SUMMARY|==[0-9]+==|#[0-9]+ 0x' "$OUT/$h.log" | head -20
    fails=$((fails+1))
  fi
done
echo "fuzz: ${#harnesses[@]} harnesses, $fails crashed"
[ "$fails" -eq 0 ]
