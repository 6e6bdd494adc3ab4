#!/usr/bin/env bash
# Docker with vswitch against Docker's own bridge driver, side by side in one run:
#   - container start: `docker run -d` of a busybox on a `-d vswitch` network (the daemon
#     makes a TAP that Docker moves into the container) and on a `-d bridge` network (a
#     veth pair on a kernel bridge), N of each, interleaved; the median and p90 ms;
#   - TCP between two containers of each network (iperf3 run inside their namespaces),
#     and between two namespaces whose TAPs the daemon made in place (`ctl attach`).
# dockerd runs with --bridge=none --iptables=false (its bridge networks still work: a
# Linux bridge and veths, no NAT rules), vfs storage, an image imported from a static
# busybox. Everything runs in fresh mount, network and PID namespaces, so the machine is
# left as it was. Run as root from the repository root after `cargo build --release`
# (BIN=target/ci for the test profile's binaries).
set -euo pipefail
N=${N:-20}
BIN=${BIN:-target/release}
SECS=${SECS:-5}
if [ "${1:-}" != --inside ]; then
  [ "$(id -u)" = 0 ] || { echo "run as root: it starts dockerd in namespaces of its own" >&2; exit 1; }
  [ -x "$BIN/vswitch-docker" ] || { echo "build first: cargo build --release" >&2; exit 1; }
  for t in dockerd /usr/bin/docker iperf3 unshare nsenter; do
    command -v "$t" >/dev/null || { echo "needs $t (docker.io, iperf3, util-linux)" >&2; exit 1; }
  done
  BIN=$(realpath "$BIN") exec unshare --mount --net --pid --fork --mount-proc bash "$0" --inside
fi
unset VSWITCH_SOCKET XDG_RUNTIME_DIR XDG_STATE_HOME
T=$(mktemp -d /tmp/vsdock.XXXXXX)
trap 'rm -rf "$T"' EXIT
for d in /run /etc/docker /var/lib/docker; do mkdir -p "$d"; mount -t tmpfs tmpfs "$d"; done
ip link set lo up
D=/usr/bin/docker
"$BIN/vswitch" daemon --state-dir "$T/state" 2>"$T/vswitch.log" &
until [ -S /run/vswitch/ctl.sock ]; do sleep 0.05; done
"$BIN/vswitch-docker" 2>"$T/plugin.log" &
dockerd --bridge=none --iptables=false --ip6tables=false --storage-driver=vfs >"$T/dockerd.log" 2>&1 &
until $D version >/dev/null 2>&1; do sleep 0.1; done
mkdir -p "$T/bb/bin"
cp "$(command -v busybox)" "$T/bb/bin/"
ln -s busybox "$T/bb/bin/sh"; ln -s busybox "$T/bb/bin/sleep"
tar -C "$T/bb" -c . | $D import -c 'CMD ["sh"]' - busybox >/dev/null
$D network create -d vswitch --ipam-driver vswitch --subnet 10.240.0.0/24 vs >/dev/null
$D network create -d bridge --subnet 10.241.0.0/24 br >/dev/null

now_ms() { date +%s%N | awk '{printf "%.3f", $1/1e6}'; }
start() { # network index: ms for `docker run -d`
  local t0 t1
  t0=$(now_ms)
  $D run -d --network "$1" --name "s$1$2" busybox sleep 1000 >/dev/null
  t1=$(now_ms)
  awk -v a="$t1" -v b="$t0" 'BEGIN{printf "%.3f\n", a-b}'
}
: >"$T/vs"; : >"$T/br"
for i in $(seq 1 "$N"); do
  start vs "$i" >>"$T/vs"
  start br "$i" >>"$T/br"
  $D rm -f "svs$i" "sbr$i" >/dev/null
done
report() {
  sort -n "$T/$1" >"$T/$1.s"
  local m=$(( (N + 1) / 2 )) p=$(( (N * 9 + 9) / 10 ))
  printf '%-26s start median %7.1f ms  p90 %7.1f ms\n' "$2" "$(sed -n "${m}p" "$T/$1.s")" "$(sed -n "${p}p" "$T/$1.s")"
}
report vs "vswitch (-d vswitch)"
report br "bridge (-d bridge)"

pid_of() { $D inspect -f '{{.State.Pid}}' "$1"; }
tcp() { # network label
  $D run -d --network "$1" --name "srv$1" busybox sleep 1000 >/dev/null
  $D run -d --network "$1" --name "cli$1" busybox sleep 1000 >/dev/null
  local ip
  ip=$($D inspect -f "{{.NetworkSettings.Networks.$1.IPAddress}}" "srv$1")
  nsenter -t "$(pid_of "srv$1")" -n iperf3 -s -D -1 >/dev/null
  sleep 0.3
  local bps
  bps=$(nsenter -t "$(pid_of "cli$1")" -n iperf3 -c "$ip" -t "$SECS" -J |
    awk -F: '/"bits_per_second"/ {v=$2} END {gsub(/[ ,]/, "", v); print v}')
  awk -v b="$bps" -v l="$2" 'BEGIN{printf "%-26s TCP between two containers %6.2f Gbit/s\n", l, b/1e9}'
  $D rm -f "srv$1" "cli$1" >/dev/null
}
tcp vs "vswitch (-d vswitch)"
tcp br "bridge (-d bridge)"
# The same through TAPs the daemon creates inside the namespaces (the CNI plugin's way):
# what handing the TAP to Docker costs, if anything.
V="$BIN/vswitch ctl"
$V network create native --subnet 10.242.0.0/24 >/dev/null
for n in na nb; do ip netns add "$n"; $V attach native --name "$n" --netns "/run/netns/$n" >/dev/null; done
ip netns exec na iperf3 -s -D -1 >/dev/null
sleep 0.3
bps=$(ip netns exec nb iperf3 -c 10.242.0.2 -t "$SECS" -J |
  awk -F: '/"bits_per_second"/ {v=$2} END {gsub(/[ ,]/, "", v); print v}')
awk -v b="$bps" 'BEGIN{printf "%-26s TCP between two containers %6.2f Gbit/s\n", "vswitch (TAP made in place)", b/1e9}'
$D network rm vs br >/dev/null
