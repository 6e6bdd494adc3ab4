#!/usr/bin/env bash
# A published port reached by a client in another namespace (a remote client, whose
# source address the container sees) and by one on the host's loopback (spliced), side
# by side: iperf3 into the container, Gbit/s, medians of RUNS.
#
#   bench/compare/published_remote.sh VSWITCH_BINARY [MTU] [RUNS] [SECONDS]
#
# The daemon runs in a namespace standing for the host; the remote client reaches it
# over a veth pair. Everything lives in namespaces this script makes and removes.
set -euo pipefail
BIN=${1:?usage: published_remote.sh VSWITCH_BINARY [MTU] [RUNS] [SECONDS]}
MTU=${2:-1500}; RUNS=${3:-3}; SECS=${4:-3}
P=vpr$$; D=$(mktemp -d); PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for n in h c r; do ip netns del "$P$n" 2>/dev/null || true; done
  rm -rf "$D"
}
trap cleanup EXIT
for n in h c r; do ip netns add "$P$n"; ip -n "$P$n" link set lo up; done
ip -n ${P}h link add r0 type veth peer name r1 netns ${P}r
ip -n ${P}h addr add 192.168.204.1/24 dev r0; ip -n ${P}h link set r0 up
ip -n ${P}r addr add 192.168.204.2/24 dev r1; ip -n ${P}r link set r1 up
ip netns exec ${P}h "$BIN" daemon --socket "$D/s" --state-dir "$D/st" 2>"$D/log" >/dev/null &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$D/s" ] && break; sleep 0.05; done
C="$BIN ctl --socket $D/s"
$C network create n --subnet 10.252.0.0/24 --mtu "$MTU" >/dev/null
$C attach n --name c --netns /run/netns/${P}c >/dev/null
$C publish c -p 15201:5201 >/dev/null
run() { # NS ADDRESS -> Gbit/s
  ip netns exec ${P}c iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
  local s=$!
  for _ in $(seq 50); do ip netns exec ${P}c ss -Htln sport = :5201 | grep -q LISTEN && break; sleep 0.05; done
  ip netns exec "$1" iperf3 -c "$2" -p 15201 -t "$SECS" -J \
    | python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
  wait "$s" 2>/dev/null || true
}
remote=(); local_=()
for _ in $(seq "$RUNS"); do
  remote+=("$(run ${P}r 192.168.204.1)")
  local_+=("$(run ${P}h 127.0.0.1)")
done
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "MTU $MTU, $RUNS runs of $SECS s: remote ${remote[*]} (median $(med "${remote[@]}")), loopback ${local_[*]} (median $(med "${local_[@]}")) Gbit/s"
$C --json stats | python3 -c 'import json,sys; n=json.load(sys.stdin)["nat"]; print("spliced", n["tcp_spliced"], "fallbacks", n["splice_fallbacks"])'
