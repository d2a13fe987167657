#!/usr/bin/env bash
# Checks the folder stack, runs every unit test binary given as arguments,
# then every tests/e2e_*.sh,
# and ends with one line "N passed, N failed". Exit status: failed > 0.
set -u
cd "$(dirname "$0")/.."
pass=0; fail=0; failed=()
# the folder stack (docs/DESIGN.md): includes and, from the objects, calls
echo "== tests/check_layers.py"
if python3 tests/check_layers.py "${BUILD:-build}"; then pass=$((pass+1)); else fail=$((fail+1)); failed+=(tests/check_layers.py); fi
for t in "$@"; do
  if "$t"; then pass=$((pass+1)); else fail=$((fail+1)); failed+=("$t"); fi
done
for t in tests/e2e_*.sh; do
  [ -e "$t" ] || continue
  echo "== $t"
  if BIN="$BIN" bash "$t"; then pass=$((pass+1)); else fail=$((fail+1)); failed+=("$t"); fi
done
[ ${#failed[@]} -eq 0 ] || printf 'FAILED: %s\n' "${failed[@]}"
echo "tests: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
