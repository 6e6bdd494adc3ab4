#!/usr/bin/env bash
# Side-by-side throughput and latency of vswitch and its peers, run as root:
#   sudo bench/compare/run.sh [--quick] [--rootless] [--runs N] [--only vswitch,bridge,ovs,vde,slirp4netns,pasta]
#                             [--tests tcp,tcp6,udp64,ping,sockperf_udp,sockperf_tcp,ping_idle,ping_idle_user,idle_cpu,tcp_host,tcp_host6,down_host,down_host6,pub_host,pub_host6]
#                             [--out DIR] [--vswitch-args "--workers 2"] [--no-docs]
# Needs: iproute2 iperf3 iputils-ping vde2 slirp4netns passt sockperf openvswitch-switch
# (Debian packages; compare.py names those missing for the setups and tests asked for), python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root: it creates network namespaces" >&2; exit 1; }
command -v python3 >/dev/null || { echo "missing python3: apt-get install -y python3" >&2; exit 1; }
cargo build --release -q -p vswitch
exec python3 bench/compare/compare.py --vswitch "$PWD/target/release/vswitch" "$@"
