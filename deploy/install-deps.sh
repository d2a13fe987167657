#!/usr/bin/env bash
# Installs the Debian packages egmla's build and tests need.
# Idempotent: packages already present are skipped by apt.
set -euo pipefail
PKGS=(
  build-essential pkg-config make
  libopenblas-dev
  openmpi-bin libopenmpi-dev libucx-dev ucx-utils
  libprotobuf-c-dev protobuf-c-compiler
  libyaml-dev libcmocka-dev libjansson-dev libpcre2-dev
  libmicrohttpd-dev curl                    # egmla serve; tests/e2e_serve.sh
  python3 python3-venv                      # tests/e2e_lmeval.sh: lm-eval from PyPI in a venv
  iproute2 util-linux                       # ip netns, tc, unshare: tests/e2e_multihost.sh
  slurmctld slurmd slurm-client munge       # tests/e2e_slurm.sh
  clang libclang-rt-14-dev valgrind         # make fuzz (libFuzzer), make valgrind
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
