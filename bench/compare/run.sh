#!/usr/bin/env bash
# Side-by-side throughput and latency of vswitch and its peers, run as root:
#   sudo bench/compare/run.sh [--quick] [--rootless] [--runs N] [--only vswitch,bridge,vde,slirp4netns,pasta]
#                             [--out DIR] [--vswitch-args "--workers 2"] [--no-docs]
# Needs: iproute2 iperf3 iputils-ping vde2 slirp4netns passt (Debian packages), python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root: it creates network namespaces" >&2; exit 1; }
for t in ip iperf3 ping vde_switch vde_plug2tap slirp4netns pasta python3; do
  command -v $t >/dev/null || { echo "missing $t: apt-get install iproute2 iperf3 iputils-ping vde2 slirp4netns passt" >&2; exit 1; }
done
cargo build --release -q -p vswitch
exec python3 bench/compare/compare.py --vswitch "$PWD/target/release/vswitch" "$@"
