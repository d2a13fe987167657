#!/usr/bin/env bash
# netns-agent.sh - mpirun's "ssh" for the namespaces of deploy/netns.sh.
#
# Open MPI runs `AGENT HOST CMD...` where CMD is a line for a remote shell
# (it may carry quoted words), so like ssh this hands it to sh -c. HOST is
# 10.77.0.N (or hN): the command runs in namespace hN, with its own
# hostname (a new UTS namespace) and its own Open MPI session directory,
# as a separate machine would have.
set -u
host=$1
shift
case "$host" in
  10.77.0.[1-9]) ns=h${host##*.} ;;
  h[1-9]) ns=$host ;;
  *) echo "netns-agent: unknown host '$host' (expected 10.77.0.N or hN)" >&2; exit 255 ;;
esac
mkdir -p "/tmp/egm-netns/$ns"
exec ip netns exec "$ns" unshare --uts /bin/sh -c \
  "hostname $ns; export TMPDIR=/tmp/egm-netns/$ns; $*"
