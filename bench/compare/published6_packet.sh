#!/usr/bin/env bash
# A published port on the packet uplink reached from the outside segment over IPv4
# (DNAT on --address) and over IPv6 (DNAT66 on --address6), alternating in each round:
# one iperf3 TCP stream into a dual-stack container's -p 15201:5201, Gbit/s, medians of
# RUNS.
#
#   bench/compare/published6_packet.sh VSWITCH_BINARY [RUNS] [SECONDS]
#
# The daemon runs in a namespace standing for the host; the outside namespace holds the
# uplink's segment. Everything lives in namespaces this script makes and removes.
set -euo pipefail
BIN=${1:?usage: published6_packet.sh VSWITCH_BINARY [RUNS] [SECONDS]}
RUNS=${2:-3}; SECS=${3:-3}
P=vp6$$; D=$(mktemp -d); PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for n in h c o; do ip netns del "$P$n" 2>/dev/null || true; done
  rm -rf "$D"
}
trap cleanup EXIT
for n in h c o; do ip netns add "$P$n"; ip -n "$P$n" link set lo up; done
ip netns exec ${P}h "$BIN" daemon --socket "$D/s" --state-dir "$D/st" 2>"$D/log" >/dev/null &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$D/s" ] && break; sleep 0.05; done
C="$BIN ctl --socket $D/s"
$C network create n --subnet 10.251.0.0/24 --ipv6 --subnet fd00:251::/64 >/dev/null
$C uplink set --netns /run/netns/${P}o --address 198.19.251.2/24 \
  --address6 2001:db8:251::2/64 >/dev/null
ip netns exec ${P}o sh -c 'sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.vswitch0.accept_dad=0
  ip -6 addr add 2001:db8:251::1/64 dev vswitch0 nodad
  ip addr add 198.19.251.1/24 dev vswitch0'
$C attach n --name c --netns /run/netns/${P}c >/dev/null
$C publish c -p 15201:5201 >/dev/null
run() { # FAMILY ADDRESS -> Gbit/s
  ip netns exec ${P}c iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
  local s=$!
  for _ in $(seq 50); do ip netns exec ${P}c ss -Htln sport = :5201 | grep -q LISTEN && break; sleep 0.05; done
  ip netns exec ${P}o iperf3 "$1" -c "$2" -p 15201 -t "$SECS" -J \
    | python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
  wait "$s" 2>/dev/null || true
}
# The neighbours resolved first (the first packets go while vswitch asks).
ip netns exec ${P}o ping -c 1 -W 2 198.19.251.2 >/dev/null || true
ip netns exec ${P}o ping -6 -c 1 -W 2 2001:db8:251::2 >/dev/null || true
v4=(); v6=()
for _ in $(seq "$RUNS"); do
  v4+=("$(run -4 198.19.251.2)")
  v6+=("$(run -6 2001:db8:251::2)")
done
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "$RUNS runs of $SECS s: IPv4 ${v4[*]} (median $(med "${v4[@]}")), IPv6 ${v6[*]} (median $(med "${v6[@]}")) Gbit/s"
$C --json conntrack ls | python3 -c 'import json,sys; r=json.load(sys.stdin); print("packet flows:", sum(1 for f in r if f.get("uplink") == "packet"))'
