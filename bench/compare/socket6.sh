#!/usr/bin/env bash
# IPv6 beside IPv4 through the socket uplink, run as root:
#   sudo bench/compare/socket6.sh [RUNS] [SECONDS]
# A release daemon runs in a namespace standing for the host, with a veth to an
# "outside" namespace (2001:db8:5::2 and 198.18.5.2); one container on a dual-stack
# network. For each family, iperf3 (one TCP stream, MTU 1500):
#   up     container -> a server outside (through smoltcp and a host socket)
#   down   the same, the server sending (-R)
#   pub    a client outside -> a port published to the container (frames both ways)
#   pub-lo a client on the host's loopback -> the published port (IPv4: spliced into the
#          container's namespace; IPv6 ::1 takes frames)
# Prints the median Gbit/s of RUNS runs (default 3) of SECONDS (default 5) per cell,
# alternating families run after run.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root: it creates network namespaces" >&2; exit 1; }
RUNS=${1:-3}
SECS=${2:-5}
cargo build --release -q -p vswitch
BIN=$PWD/target/release/vswitch
T=$(mktemp -d /tmp/socket6.XXXXXX)
H=s6bh$$ O=s6bo$$ C=s6bc$$
cleanup() {
  [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null || true
  for n in $H $O $C; do ip netns delete $n 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT
for n in $H $O $C; do ip netns add $n; ip -n $n link set lo up; done
ip -n $H link add s6a type veth peer name s6b netns $O
ip -n $H addr add 2001:db8:5::1/64 dev s6a nodad
ip -n $H addr add 198.18.5.1/24 dev s6a
ip -n $H link set s6a up
ip -n $O addr add 2001:db8:5::2/64 dev s6b nodad
ip -n $O addr add 198.18.5.2/24 dev s6b
ip -n $O link set s6b up
ip netns exec $H "$BIN" daemon --socket "$T/ctl.sock" --state-dir "$T/state" 2>"$T/log" &
DPID=$!
for _ in $(seq 100); do [ -S "$T/ctl.sock" ] && break; sleep 0.1; done
ctl() { "$BIN" ctl --socket "$T/ctl.sock" "$@" >/dev/null; }
ctl network create net --subnet 10.172.0.0/24 --ipv6 --subnet fd00:172::/64
ctl attach net --name c --netns /run/netns/$C
ctl publish c -p 15201:5201

# iperf3 between a client (namespace or "") and a server namespace; prints Gbit/s.
run() {
  local cns=$1 sns=$2 addr=$3 extra=$4
  local enter_s="ip netns exec $sns" enter_c=""
  [ -n "$cns" ] && enter_c="ip netns exec $cns"
  $enter_s iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
  local spid=$!
  for _ in $(seq 50); do $enter_s ss -Htln sport = :5201 | grep -q LISTEN && break; sleep 0.1; done
  local out
  out=$($enter_c iperf3 -c "$addr" $extra -t "$SECS" -J 2>/dev/null || true)
  wait $spid 2>/dev/null || true
  python3 -c 'import json,sys
try: print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))
except Exception: print("nan")' <<<"$out"
}

declare -A R
for i in $(seq "$RUNS"); do
  for fam in 4 6; do
    if [ $fam = 4 ]; then out=198.18.5.2; hostaddr=198.18.5.1; lo=127.0.0.1; else out=2001:db8:5::2; hostaddr=2001:db8:5::1; lo=::1; fi
    R[up$fam]+="$(run $C $O $out "-$fam -p 5201") "
    R[down$fam]+="$(run $C $O $out "-$fam -p 5201 -R") "
    R[pub$fam]+="$(run $O $C $hostaddr "-$fam -p 15201") "
    R[publo$fam]+="$(run $H $C $lo "-$fam -p 15201") "
  done
done
med() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "# $(nproc) cores, $(uname -r); medians of $RUNS runs of ${SECS} s (Gbit/s); runs: ${R[up4]}| ${R[up6]}"
echo "| family | up | down (-R) | published, remote client | published, host loopback |"
echo "|---|---|---|---|---|"
for fam in 4 6; do
  echo "| IPv$fam | $(med "${R[up$fam]}") | $(med "${R[down$fam]}") | $(med "${R[pub$fam]}") | $(med "${R[publo$fam]}") |"
done
for k in up down pub publo; do echo "# $k: IPv4 ${R[${k}4]}/ IPv6 ${R[${k}6]}"; done
