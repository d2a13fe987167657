#!/usr/bin/env bash
# e2e_docs.sh - README.md and docs/ explain the repository from inside it:
# no path outside the repository (../shared, /work/...) and no internal
# work-item numbers ("issue 4"); every docs/X.md they name exists; the
# twins' table in docs/PAPER.md matches models/TRAINING_RESULTS.json.
set -u
cd "$(dirname "$0")/.."
fails=0
files=(README.md docs/*.md)
hits=$(grep -nE '\.\./shared|shared/spec|/work/' "${files[@]}")
if [ -n "$hits" ]; then echo "FAIL paths outside the repository:"; echo "$hits"; fails=$((fails+1))
else echo "ok   no path outside the repository in README.md and docs/"; fi
hits=$(grep -niE '\bissues? ?#?[0-9]' "${files[@]}")
if [ -n "$hits" ]; then echo "FAIL internal work-item numbers:"; echo "$hits"; fails=$((fails+1))
else echo "ok   no work-item numbers in README.md and docs/"; fi
missing=$(grep -ohE 'docs/[A-Z]+\.md' "${files[@]}" | sort -u | while read -r f; do [ -e "$f" ] || echo "$f"; done)
if [ -n "$missing" ]; then echo "FAIL named but missing: $missing"; fails=$((fails+1))
else echo "ok   every docs/X.md named exists"; fi
# The twins' table in docs/PAPER.md is the one the committed results give.
if rows=$(python3 reference/twins_report.py --table-only 2>&1); then
  bad=$(printf '%s\n' "$rows" | grep '^|' | while IFS= read -r l; do grep -qxF -- "$l" docs/PAPER.md || echo "$l"; done)
  if [ -n "$bad" ]; then echo "FAIL docs/PAPER.md lacks rows of reference/twins_report.py --table-only:"; echo "$bad"; fails=$((fails+1))
  else echo "ok   docs/PAPER.md carries the twins' table of models/TRAINING_RESULTS.json"; fi
else echo "FAIL reference/twins_report.py --table-only: $rows"; fails=$((fails+1)); fi
echo "e2e_docs: $fails failed"
[ $fails -eq 0 ]
