#!/usr/bin/env bash
# netns.sh - three "hosts" on this machine, for multi-host tests without ssh.
#
#   deploy/netns.sh up      creates network namespaces h1 h2 h3, each with
#                           one veth (egm0, 10.77.0.N/24) on the bridge
#                           egm-br, egress limited to 1 Gbit/s (tc tbf)
#   deploy/netns.sh down    removes them (idempotent)
#   deploy/netns.sh agent   prints the path of the rsh agent for mpirun
#
# Only the namespaced addresses 10.77.0.1-3 exist: the bridge in the root
# namespace has no address, so nothing here can reach any other network.
# mpirun runs inside h1 (`ip netns exec h1 mpirun ...`) with
# `--mca plm_rsh_agent deploy/netns-agent.sh`: the agent maps 10.77.0.N to
# hN and starts Open MPI's daemon there through `ip netns exec`. Needs root.
set -euo pipefail
BR=egm-br
N=3
RATE=${EGM_NETNS_RATE:-1gbit}

up() {
  down quiet
  # forward at once: no STP listening delay on new ports
  ip link add "$BR" type bridge forward_delay 0 stp_state 0
  ip link set "$BR" up
  for i in $(seq $N); do
    ip netns add "h$i"
    ip link add "egm-h$i" type veth peer name egm0 netns "h$i"
    ip link set "egm-h$i" master "$BR" up
    ip netns exec "h$i" ip link set lo up
    # no IPv6 link-local either: 10.77.0.N is the only address
    ip netns exec "h$i" sysctl -qw net.ipv6.conf.egm0.disable_ipv6=1 2>/dev/null || true
    ip netns exec "h$i" ip addr add "10.77.0.$i/24" dev egm0
    ip netns exec "h$i" ip link set egm0 up
    ip netns exec "h$i" tc qdisc add dev egm0 root tbf rate "$RATE" burst 256kb latency 50ms
  done
}

down() {
  for i in $(seq $N); do
    ip netns del "h$i" 2>/dev/null || true
    ip link del "egm-h$i" 2>/dev/null || true
  done
  ip link del "$BR" 2>/dev/null || true
  [ "${1:-}" = quiet ] || echo "netns: removed h1-h$N and $BR"
}

case "${1:-}" in
  up) up; echo "netns: h1-h$N up on $BR: 10.77.0.1-$N/24, egress $RATE" ;;
  down) down ;;
  agent) echo "$(cd "$(dirname "$0")" && pwd)/netns-agent.sh" ;;
  *) echo "usage: $0 up|down|agent" >&2; exit 2 ;;
esac
