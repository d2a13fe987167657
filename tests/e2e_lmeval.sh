#!/usr/bin/env bash
# e2e_lmeval.sh - the lm-evaluation-harness backend (deploy/lm_eval) on a
# local multiple-choice task: lm-eval run with `--model egmla` reports the
# same acc, acc_norm and standard errors as `egmla eval` on the same JSONL
# (deploy/lm_eval/check.sh does the run and the comparison).
#
# lm-eval comes from PyPI, pinned, into a venv under build/ made on first
# use (~40 s, ~750 MB; it needs no torch); LMEVAL_PY=/path/to/python uses a
# Python that already has it. Without python3-venv or PyPI it skips and says
# why. Nothing is downloaded while the test runs (the datasets are offline).
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/egmla}
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac
V=0.4.13
VENV=build/venv-lmeval
PY=${LMEVAL_PY:-$VENV/bin/python}
has_lmeval() { "$1" -c "import sys, lm_eval; sys.exit(lm_eval.__version__ != '$V')" 2>/dev/null; }

if ! has_lmeval "$PY"; then
  if [ -n "${LMEVAL_PY:-}" ]; then
    echo "FAIL: LMEVAL_PY=$LMEVAL_PY has no lm-eval $V"
    exit 1
  fi
  echo "== making $VENV with lm-eval $V from PyPI"
  rm -rf "$VENV"
  if ! /usr/bin/python3 -m venv "$VENV" >/dev/null 2>&1; then
    echo "SKIP: cannot make a venv (apt-get install python3-venv) to run lm-eval"
    exit 0
  fi
  if ! "$VENV/bin/pip" install -q --disable-pip-version-check "lm-eval==$V" >"$VENV.log" 2>&1; then
    tail -5 "$VENV.log"
    echo "SKIP: cannot install lm-eval $V from PyPI (log: $VENV.log)"
    rm -rf "$VENV"
    exit 0
  fi
fi
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 OPENBLAS_NUM_THREADS=1
if PY="$PY" BIN="$BIN" bash deploy/lm_eval/check.sh; then
  echo "e2e_lmeval: lm-eval $V with the egmla backend equals egmla eval"
else
  echo "FAIL: e2e_lmeval: lm-eval with the egmla backend differs from egmla eval, or failed"
  exit 1
fi
