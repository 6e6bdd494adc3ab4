#!/usr/bin/env bash
# What a kernel data path between two containers would give, beside the kernel bridge:
# two namespaces joined by veth pairs whose host ends sit in a third namespace, either
# enslaved to a kernel bridge or joined by tc redirects (u32 match-all + mirred: each
# host end's ingress sent out of the other), as a switch that had installed a flow for
# a learned unicast pair would have them. TCP c->c by iperf3, alternating, run as root:
#   sudo bench/compare/kernel_path.sh [ROUNDS] [SECS]
# Needs: iproute2 (tc with u32 and mirred), iperf3, python3.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "run as root: it creates network namespaces" >&2; exit 1; }
for t in ip tc iperf3 python3; do
    command -v "$t" >/dev/null || { echo "missing $t: apt-get install -y iproute2 iperf3 python3" >&2; exit 1; }
done
ROUNDS=${1:-3}
SECS=${2:-8}
P="kp$$"

teardown() { for n in sw a b; do ip netns del "$P$n" 2>/dev/null || true; done; }
trap teardown EXIT

setup() {
    for n in sw a b; do ip netns add "$P$n"; done
    ip -n "${P}sw" link set lo up
    for c in a b; do
        ip link add "$P$c" type veth peer name "${P}h$c"
        ip link set "$P$c" netns "$P$c"
        ip link set "${P}h$c" netns "${P}sw"
        ip -n "$P$c" link set "$P$c" name eth0
        ip -n "$P$c" link set lo up
        ip -n "$P$c" link set eth0 up
        ip -n "${P}sw" link set "${P}h$c" up
    done
    ip -n "${P}a" addr add 10.9.0.1/24 dev eth0
    ip -n "${P}b" addr add 10.9.0.2/24 dev eth0
    if [ "$1" = bridge ]; then
        ip -n "${P}sw" link add br0 type bridge
        ip -n "${P}sw" link set br0 up
        ip -n "${P}sw" link set "${P}ha" master br0
        ip -n "${P}sw" link set "${P}hb" master br0
    else
        for pair in "${P}ha ${P}hb" "${P}hb ${P}ha"; do
            read -r from to <<<"$pair"
            ip netns exec "${P}sw" tc qdisc add dev "$from" clsact
            ip netns exec "${P}sw" tc filter add dev "$from" ingress protocol all \
                u32 match u32 0 0 action mirred egress redirect dev "$to"
        done
    fi
}

echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
for r in $(seq "$ROUNDS"); do
    for mode in bridge tc-redirect; do
        setup "$mode"
        ip netns exec "${P}b" iperf3 -s -1 -D -p 5301 >/dev/null
        sleep 0.3
        gbit=$(ip netns exec "${P}a" iperf3 -c 10.9.0.2 -p 5301 -t "$SECS" -J |
            python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9,2))')
        echo "round $r  $mode  $gbit Gbit/s  load $(cut -d' ' -f1 /proc/loadavg)"
        teardown
    done
done
