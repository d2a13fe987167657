#!/usr/bin/env bash
# Runs every unit test binary given as arguments, then every tests/e2e_*.sh,
# and ends with one line "N passed, N failed". Exit status: failed > 0.
set -u
cd "$(dirname "$0")/.."
pass=0; fail=0; failed=()
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
