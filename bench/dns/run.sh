#!/usr/bin/env bash
# DNS load: queries per second answered by vswitch's embedded DNS (local names, and
# names forwarded to an upstream resolver), against dnsmasq serving the same names and
# forwarding to the same upstream, measured with dnsperf from a client namespace (200
# queries in flight), or where dnsperf is not installed with bench/examples/dnsload.rs
# (the same: 200 in flight over one socket, a query unanswered after 1 s lost).
#
#   sudo bench/dns/run.sh [--seconds N] [--names N]
#   VSWITCH=path/to/vswitch DNSLOAD=path/to/dnsload sudo -E bench/dns/run.sh
#
# Needs: iproute2, dnsmasq-base (Debian packages), dnsperf or cargo, a release build of
# vswitch. Prints, besides the rates, the queries lost and the client port's
# `service_quota` drops (none expected: no other port is busy).
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=10
NAMES=50
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECS=$2; shift 2 ;;
    --names) NAMES=$2; shift 2 ;;
    *) echo "usage: $0 [--seconds N] [--names N]" >&2; exit 2 ;;
  esac
done
for t in ip dnsmasq; do
  command -v $t >/dev/null || { echo "missing $t: apt-get install iproute2 dnsmasq-base" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root (it creates network namespaces)" >&2; exit 1; }
V=${VSWITCH:-$PWD/target/release/vswitch}
[ -n "${VSWITCH:-}" ] || cargo build --release -q -p vswitch
LOAD=
if ! command -v dnsperf >/dev/null; then
  LOAD=${DNSLOAD:-$PWD/target/release/examples/dnsload}
  [ -n "${DNSLOAD:-}" ] || cargo build --release -q -p vswitch-bench --example dnsload
fi
P=${PREFIX:-vdns$$}
T=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  ip link del ${P}h 2>/dev/null || true
  for n in ${P}c ${P}s; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT

# The upstream: dnsmasq on host loopback answering *.example.test.
UP=${UPSTREAM_PORT:-5399}
dnsmasq --keep-in-foreground --port $UP --listen-address=127.0.0.1 --bind-interfaces \
  --no-resolv --no-hosts --address=/example.test/192.0.2.7 --pid-file= --user=root \
  --cache-size=0 2>/dev/null & PIDS+=($!)

# vswitch: one container carrying NAMES aliases, a client namespace.
$V daemon --socket $T/s --state-dir $T/st --upstream-dns 127.0.0.1:$UP 2>$T/log & PIDS+=($!)
for i in $(seq 50); do [ -S $T/s ] && break; sleep 0.1; done
$V ctl --socket $T/s network create dnsbench --subnet 10.160.0.0/24 >/dev/null
ip netns add ${P}s; ip netns add ${P}c
ALIASES=()
for i in $(seq 1 $NAMES); do ALIASES+=(--alias "n$i"); done
$V ctl --socket $T/s attach dnsbench --name srv --netns /run/netns/${P}s "${ALIASES[@]}" >/dev/null
$V ctl --socket $T/s attach dnsbench --name cli --netns /run/netns/${P}c >/dev/null

for i in $(seq 1 $NAMES); do echo "n$i A"; done > $T/local.txt
for i in $(seq 1 $NAMES); do echo "h$i.example.test A"; done > $T/fwd.txt

LOST=$T/lost
perf_run() { # ns server file -> qps (queries lost appended to $LOST)
  if [ -n "$LOAD" ]; then
    ip netns exec "$1" "$LOAD" "$2:53" "$3" "$SECS" 200 > $T/out
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["qps"]); open(sys.argv[2],"a").write("%s %s\n" % (sys.argv[3], d["lost"]))' $T/out $LOST "$2 $(basename $3)"
  else
    ip netns exec "$1" dnsperf -s "$2" -d "$3" -l "$SECS" -c 4 -q 200 2>/dev/null > $T/out
    awk '/Queries per second/ {print $4}' $T/out | head -1
    awk -v w="$2 $(basename $3)" '/Queries lost/ {print w, $3}' $T/out >> $LOST
  fi
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
if [ -n "$LOAD" ]; then CLIENT="dnsload (bench/examples/dnsload.rs), 200 in flight"; else
  CLIENT="dnsperf $(dpkg-query -W -f='${Version}' dnsperf 2>/dev/null) -c 4 -q 200"; fi
echo "client: $CLIENT, dnsmasq $(dnsmasq --version | head -1 | awk '{print $3}')"
echo
VS_LOCAL=$(perf_run ${P}c 10.160.0.1 $T/local.txt)
VS_FWD=$(perf_run ${P}c 10.160.0.1 $T/fwd.txt)
QUOTA=$($V ctl --socket $T/s --json stats | python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(p["drops"].get("service_quota",0) for p in d["ports"] if p["name"]=="cli"))')

# dnsmasq serving the same names and forwarding the rest to the same upstream, in the
# host namespace (where the upstream on loopback is), reached from the client over a veth.
ip link add ${P}h type veth peer name ${P}a netns ${P}c
ip addr add 10.161.0.1/24 dev ${P}h; ip link set ${P}h up
ip -n ${P}c addr add 10.161.0.2/24 dev ${P}a; ip -n ${P}c link set ${P}a up
for i in $(seq 1 $NAMES); do echo "10.160.0.2 n$i"; done > $T/hosts
dnsmasq --keep-in-foreground --port 53 --listen-address=10.161.0.1 --bind-interfaces \
  --no-resolv --no-hosts --addn-hosts=$T/hosts --server=127.0.0.1#$UP --pid-file= --user=root \
  --cache-size=0 2>/dev/null & PIDS+=($!)
sleep 0.5
DM_LOCAL=$(perf_run ${P}c 10.161.0.1 $T/local.txt)
DM_FWD=$(perf_run ${P}c 10.161.0.1 $T/fwd.txt)
ip link del ${P}h 2>/dev/null || true

printf "| server | local names (qps) | other names (qps) |\n|---|---|---|\n"
printf "| vswitch embedded DNS, through the switch | %.0f | %.0f |\n" "$VS_LOCAL" "$VS_FWD"
printf "| dnsmasq %s, over a veth, cache off | %.0f | %.0f |\n" "$(dnsmasq --version | head -1 | awk '{print $3}')" "$DM_LOCAL" "$DM_FWD"
echo
echo "Local names: $NAMES container names. Other names: forwarded to one upstream dnsmasq on the host's loopback."
echo "$CLIENT, $SECS s, from a client namespace; both servers single-threaded."
echo "Queries lost (server, names: lost): $(paste -sd, $LOST). The client port's service_quota drops on vswitch: $QUOTA."
