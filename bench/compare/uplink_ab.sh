#!/usr/bin/env bash
# Builds of the daemon side by side on the socket uplink: a container's upload to the
# host (or its download, -R), alternating A, B, C, A, B, C... so that all see the same
# load. Prints every run, the medians (Gbit/s) and each build's ratio to the first.
#
#   [DIR=up|down] [MTU=65520] [ROUNDS=5] [SECS=3] bench/compare/uplink_ab.sh BINARY_A BINARY_B...
#
# Each daemon runs in a namespace standing for the host, with the iperf3 server on that
# namespace's loopback (the network opts in to the host's loopback); the container is a
# namespace of its own. Everything lives in namespaces this script makes and removes.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: [DIR=up|down] [MTU=65520] [ROUNDS=5] [SECS=3] uplink_ab.sh BINARY_A BINARY_B..." >&2; exit 2; }
DIR=${DIR:-up}; MTU=${MTU:-65520}; ROUNDS=${ROUNDS:-5}; SECS=${SECS:-3}
P=vab$$; D=$(mktemp -d); PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  sleep 0.3
  for n in h c; do ip netns del "$P$n" 2>/dev/null || true; done
  rm -rf "$D"
}
trap cleanup EXIT
R=""; [ "$DIR" = down ] && R="-R"
one() { # BINARY -> Gbit/s
  for n in h c; do ip netns add "$P$n"; ip -n "$P$n" link set lo up; done
  rm -rf "$D/st" "$D/s"
  ip netns exec ${P}h "$1" daemon --socket "$D/s" --state-dir "$D/st" 2>"$D/log" >/dev/null &
  PID=$!
  for _ in $(seq 100); do [ -S "$D/s" ] && break; sleep 0.05; done
  local C="$1 ctl --socket $D/s"
  $C network create n --subnet 10.252.0.0/24 --mtu "$MTU" --host-loopback >/dev/null
  $C attach n --name c --netns /run/netns/${P}c >/dev/null
  ip netns exec ${P}h iperf3 -s -1 -B 127.0.0.1 -p 5201 >/dev/null 2>&1 &
  local s=$!
  for _ in $(seq 50); do ip netns exec ${P}h ss -Htln sport = :5201 | grep -q LISTEN && break; sleep 0.05; done
  ip netns exec ${P}c iperf3 -c 10.252.0.1 -p 5201 -t "$SECS" $R -J \
    | python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
  wait "$s" 2>/dev/null || true
  kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=
  for n in h c; do ip netns del "$P$n"; done
}
declare -A runs
for _ in $(seq "$ROUNDS"); do
  for b in "$@"; do runs[$b]+="$(one "$b") "; done
done
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "$DIR, MTU $MTU, $ROUNDS rounds of $SECS s"
first=
for b in "$@"; do
  # shellcheck disable=SC2086
  m=$(med ${runs[$b]}); first=${first:-$m}
  echo "$b: ${runs[$b]}(median $m, $(python3 -c "print('%.2f' % ($m / $first))")x the first)"
done
