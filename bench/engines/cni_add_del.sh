#!/usr/bin/env bash
# ADD and DEL latency of a CNI attachment, side by side on one host: vswitch-cni (a TAP
# created by the daemon inside the namespace) against the reference bridge plugin (a
# veth pair on a kernel bridge, host-local IPAM, no masquerade), each on an IPv4 network
# and on a dual-stack one (an IPv4 and an IPv6 subnet). Prints the median and p90
# milliseconds of each over N namespaces. Run as root from the repository root after
# `cargo build --release`.
set -euo pipefail
N=${N:-30}
[ "$(id -u)" = 0 ] || { echo "run as root: it creates network namespaces" >&2; exit 1; }
BIN=${BIN:-target/release}
PLUGINS=${CNI_PLUGINS:-/usr/lib/cni}
[ -x "$BIN/vswitch-cni" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -x "$PLUGINS/bridge" ] || { echo "needs the reference plugins in $PLUGINS (containernetworking-plugins)" >&2; exit 1; }
T=$(mktemp -d /tmp/vsbench.XXXXXX)
P=vb$$
cleanup() {
  [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null || true
  for i in $(seq 1 "$N"); do
    for k in v b V B; do ip netns del "${P}$k$i" 2>/dev/null || true; done
  done
  ip link del "${P}br" 2>/dev/null || true
  ip link del "${P}b6" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
"$BIN/vswitch" daemon --socket "$T/s.sock" --state-dir "$T/state" 2>"$T/d.log" &
DPID=$!
for _ in $(seq 1 100); do [ -S "$T/s.sock" ] && break; sleep 0.05; done
VCONF="{\"cniVersion\":\"1.0.0\",\"name\":\"${P}net\",\"type\":\"vswitch-cni\",\"socket\":\"$T/s.sock\",\"subnet\":\"10.230.0.0/24\"}"
BCONF="{\"cniVersion\":\"1.0.0\",\"name\":\"${P}br\",\"type\":\"bridge\",\"bridge\":\"${P}br\",\"isGateway\":true,\"ipMasq\":false,\"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$T/ipam\",\"subnet\":\"10.231.0.0/24\"}}"
VCONF6="{\"cniVersion\":\"1.0.0\",\"name\":\"${P}net6\",\"type\":\"vswitch-cni\",\"socket\":\"$T/s.sock\",\"subnet\":[\"10.232.0.0/24\",\"fd00:232::/64\"]}"
BCONF6="{\"cniVersion\":\"1.0.0\",\"name\":\"${P}b6\",\"type\":\"bridge\",\"bridge\":\"${P}b6\",\"isGateway\":true,\"ipMasq\":false,\"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$T/ipam6\",\"ranges\":[[{\"subnet\":\"10.233.0.0/24\"}],[{\"subnet\":\"fd00:233::/64\"}]]}}"
now_ms() { date +%s%N | awk '{printf "%.3f", $1/1e6}'; }
run() { # plugin conf cmd id netns
  echo "$2" | CNI_COMMAND=$3 CNI_CONTAINERID=$4 CNI_NETNS=$5 CNI_IFNAME=eth0 CNI_PATH=$PLUGINS "$1" >/dev/null
}
measure() { # name plugin conf prefix
  local add=() del=()
  for i in $(seq 1 "$N"); do ip netns add "$4$i"; done
  for i in $(seq 1 "$N"); do
    local t0; t0=$(now_ms); run "$2" "$3" ADD "c$i" "/run/netns/$4$i"; add+=("$(awk -v a="$(now_ms)" -v b="$t0" 'BEGIN{printf "%.3f", a-b}')")
  done
  for i in $(seq 1 "$N"); do
    local t0; t0=$(now_ms); run "$2" "$3" DEL "c$i" "/run/netns/$4$i"; del+=("$(awk -v a="$(now_ms)" -v b="$t0" 'BEGIN{printf "%.3f", a-b}')")
  done
  printf '%s\n' "${add[@]}" | sort -n > "$T/add"; printf '%s\n' "${del[@]}" | sort -n > "$T/del"
  local m=$(( (N + 1) / 2 )) p=$(( (N * 9 + 9) / 10 ))
  printf '%-13s ADD median %6.2f ms p90 %6.2f ms   DEL median %6.2f ms p90 %6.2f ms\n' "$1" \
    "$(sed -n "${m}p" "$T/add")" "$(sed -n "${p}p" "$T/add")" "$(sed -n "${m}p" "$T/del")" "$(sed -n "${p}p" "$T/del")"
}
measure vswitch-cni "$BIN/vswitch-cni" "$VCONF" "${P}v"
measure bridge "$PLUGINS/bridge" "$BCONF" "${P}b"
measure vswitch-cni6 "$BIN/vswitch-cni" "$VCONF6" "${P}V"
measure bridge6 "$PLUGINS/bridge" "$BCONF6" "${P}B"
