#!/usr/bin/env bash
# A neighbour's upload through the socket uplink while another container of its network
# holds connections whose host side never completes (their SYN-ACKs held back until the
# handshake timeout), builds of the daemon side by side, alternating round by round.
# Prints each run's Gbit/s and the gateway thread's CPU seconds during it, then medians.
#
#   [PENDING=200] [ROUNDS=3] [SECS=4] bench/compare/pending_neighbour.sh BINARY_A BINARY_B...
#
# Everything lives in namespaces this script makes and removes: the daemon's "host"
# (iperf3 server and a never-accepting listener on its loopback), the neighbour and the
# hostile container.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: [PENDING=200] [ROUNDS=3] [SECS=4] pending_neighbour.sh BINARY..." >&2; exit 2; }
PENDING=${PENDING:-200}; ROUNDS=${ROUNDS:-3}; SECS=${SECS:-4}
P=vpq$$; D=$(mktemp -d); PID=; BG=()
cleanup() {
  for p in "${BG[@]}" $PID; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for n in h c e; do ip netns del "$P$n" 2>/dev/null || true; done
  rm -rf "$D"
}
trap cleanup EXIT
cat >"$D/noaccept.py" <<'PY'
import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(0)
port = s.getsockname()[1]
first = socket.create_connection(("127.0.0.1", port))
print(port, flush=True)
time.sleep(3600)
PY
cat >"$D/hog.py" <<'PY'
import resource, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
held = []
for i in range(int(sys.argv[3])):
    s = socket.socket(); s.setblocking(False)
    try: s.connect((sys.argv[1], int(sys.argv[2])))
    except BlockingIOError: pass
    held.append(s)
time.sleep(3600)
PY
gw_cpu() { # PID -> centiseconds of the gateway thread
  for t in /proc/"$1"/task/*; do
    if [ "$(cat "$t/comm")" = vswitch-gateway ]; then awk '{print $14 + $15}' "$t/stat"; fi
  done
}
one() { # BINARY -> "Gbit/s cpu-seconds"
  for n in h c e; do ip netns add "$P$n"; ip -n "$P$n" link set lo up; done
  rm -rf "$D/st" "$D/s"
  ip netns exec ${P}h "$1" daemon --socket "$D/s" --state-dir "$D/st" 2>"$D/log" >/dev/null &
  PID=$!
  for _ in $(seq 100); do [ -S "$D/s" ] && break; sleep 0.05; done
  local C="$1 ctl --socket $D/s"
  $C network create n --subnet 10.252.0.0/24 --host-loopback >/dev/null
  $C attach n --name c --netns /run/netns/${P}c >/dev/null
  $C attach n --name e --netns /run/netns/${P}e >/dev/null
  ip netns exec ${P}h python3 "$D/noaccept.py" >"$D/port" & BG+=($!)
  for _ in $(seq 50); do [ -s "$D/port" ] && break; sleep 0.05; done
  ip netns exec ${P}e python3 "$D/hog.py" 10.252.0.1 "$(cat "$D/port")" "$PENDING" >/dev/null & BG+=($!)
  ip netns exec ${P}h iperf3 -s -1 -B 127.0.0.1 -p 5201 >/dev/null 2>&1 & BG+=($!)
  sleep 1
  local a; a=$(gw_cpu "$PID")
  local g
  g=$(ip netns exec ${P}c iperf3 -c 10.252.0.1 -p 5201 -t "$SECS" -J \
    | python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))')
  local b; b=$(gw_cpu "$PID")
  for p in "${BG[@]}"; do kill "$p" 2>/dev/null || true; done; BG=()
  kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=
  for n in h c e; do ip netns del "$P$n"; done
  echo "$g $(python3 -c "print('%.2f' % (($b - $a) / 100))")"
}
declare -A gbps cpu
for _ in $(seq "$ROUNDS"); do
  for b in "$@"; do
    out=$(one "$b"); read -r g c <<<"$out"
    gbps[$b]+="$g "; cpu[$b]+="$c "
  done
done
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "neighbour's upload beside $PENDING pending connects, $ROUNDS rounds of $SECS s"
for b in "$@"; do
  # shellcheck disable=SC2086
  echo "$b: Gbit/s ${gbps[$b]}(median $(med ${gbps[$b]})); gateway CPU s ${cpu[$b]}(median $(med ${cpu[$b]}))"
done
