#!/usr/bin/env bash
# check_transformers.sh - `make check-transformers`: tiny Llama and
# DeepseekV2 models saved by transformers' own save_pretrained load in egmla
# without any edit, and egmla's log-probabilities are within 1e-4 of
# transformers' forward pass (tests/check_transformers.py).
#
# Not part of `make test`: transformers needs torch >= 2, which PyPI ships
# only as the CUDA build (about 4 GB with its nvidia-* packages, several
# minutes to install; Debian's python3-torch 1.13 is too old for the
# transformers versions that have DeepseekV2). The venv is made once under
# build/venv-tf and reused. Without PyPI it skips and says why.
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/egmla}
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac
VENV=build/venv-tf
export OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=passive
if ! "$VENV/bin/python" -c 'import torch, transformers, safetensors' 2>/dev/null; then
  echo "check_transformers: installing torch and transformers into $VENV (once; several minutes)"
  if ! /usr/bin/python3 -m venv "$VENV" >/dev/null 2>&1; then
    echo "SKIP: cannot make a venv (apt-get install python3-venv)"
    exit 0
  fi
  if ! "$VENV/bin/pip" install -q --disable-pip-version-check torch transformers safetensors >"$VENV.log" 2>&1; then
    echo "SKIP: cannot install torch and transformers from PyPI (log: $VENV.log)"
    exit 0
  fi
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$VENV/bin/python" tests/check_transformers.py "$BIN" "$tmp"
