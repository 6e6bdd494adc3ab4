"""Runs the same iperf3, ping and sockperf work through vswitch, the kernel bridge, Open
vSwitch's userspace datapath, vde_switch, slirp4netns and pasta, each set up and torn
down in namespaces of its own, runs alternating between setups; reports medians in a
table, JSON and an SVG chart. --only picks setups, --tests tests.

Tests between two containers (vswitch, bridge, ovs, vde):
  tcp          TCP container -> container, MTU 1500 (iperf3, Gbit/s)
  tcp6         the same over IPv6
  udp64        UDP with 64-byte frames at iperf3's full rate (-b 0 -l 18): loss %, pps
  ping         ping RTT average, ms (200 pings, 5 ms apart)
  sockperf_udp sockperf ping-pong over UDP, round trip p50 and p99, µs
  sockperf_tcp the same over TCP
  ping_idle    20 pings 0.5 s apart (each finds the path idle): RTT average and median, ms
  ping_idle_user the same with ping -U: timed when ping reads the reply, not when the
               kernel received it (shows a receiver waiting for its core)
  idle_cpu     the switch process's CPU over 10 s without traffic, % of a core (vswitch, ovs)
Tests to the host (vswitch, slirp4netns, pasta):
  tcp_host     TCP container -> host loopback, MTU 65520 (NAT setups; Gbit/s)
  tcp_host6    the same over IPv6 (vswitch: the gateway's IPv6 address, leading to the
               host's 127.0.0.1; pasta: its IPv6 gateway, mapped to the host's ::1)
  down_host    the same connection as tcp_host, the host sending (iperf3 -R)
  down_host6   the same over IPv6
  pub_host     a client on the host's 127.0.0.1 -> a port published to the container
               (vswitch `ctl publish`, pasta `-t`, slirp4netns `add_hostfwd`)
  pub_host6    a client on the host's ::1 -> the same port over IPv6 (the container's
               server listens on both families)

With --rootless (the rootless columns: vswitch's socket uplink, pasta, slirp4netns),
at MTU 1500 and 65520, in Gbit/s; every tool runs as an unprivileged user (nobody),
the container being a user and network namespace that user made (vswitch: the daemon
as nobody with /dev/net/tun opened to all, the container by `vswitch run`; pasta with
the command it starts; slirp4netns joining a namespace `unshare --user --net` made),
the iperf3 ends inside entered with nsenter as that user:
  up           container -> a server on the host's loopback (iperf3)
  down         the same connection, the host sending (iperf3 -R)
  pub          a client on the host's loopback -> a port published to the container
               (vswitch `ctl publish`, pasta `-t`, slirp4netns `add_hostfwd` on its API
               socket)
"""
import argparse, json, os, platform, shutil, signal, statistics, subprocess, sys, tempfile, time

PREFIX = f"vcmp{os.getpid() % 100000}"
PROCS = []
CLEANUP = []


def sh(cmd, check=True, timeout=60):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"`{cmd}` failed ({r.returncode}): {r.stdout}{r.stderr}")
    return r.stdout


def spawn(cmd):
    p = subprocess.Popen(cmd, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    PROCS.append(p)
    return p


def kill(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        p.wait(timeout=3)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def cleanup():
    for p in reversed(PROCS):
        kill(p)
    PROCS.clear()
    for c in reversed(CLEANUP):
        subprocess.run(c, shell=True, capture_output=True)
    CLEANUP.clear()


def netns(name):
    n = f"{PREFIX}{name}"
    sh(f"ip netns add {n}")
    CLEANUP.append(f"ip netns del {n}")
    sh(f"ip -n {n} link set lo up")
    return n


def wait_listen(ns, port, tries=50):
    # Look for the listening socket (connecting would use up a one-off iperf3 server).
    for _ in range(tries):
        out = subprocess.run(in_ns(ns, f"ss -Hltn sport = :{port}"), shell=True, capture_output=True, text=True).stdout
        if out.strip():
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def in_ns(ns, cmd):
    return f"ip netns exec {ns} {cmd}" if ns else cmd


# ---- setups: each returns {"a": ns, "b": ns, "b_ip": ip} for switch tests, or
# ---- {"c": ns, "host_ip": ip} for the host test.

def setup_bridge(mtu=1500):
    br = netns("br")
    a, b = netns("a"), netns("b")
    sh(f"ip -n {br} link add br0 type bridge && ip -n {br} link set br0 up")
    for i, n in ((1, a), (2, b)):
        sh(f"ip link add {PREFIX}v{i} netns {n} type veth peer name p{i} netns {br}")
        sh(f"ip -n {n} link set {PREFIX}v{i} name eth0 mtu {mtu} up")
        sh(f"ip -n {n} addr add 10.250.0.{i}/24 dev eth0")
        sh(f"ip -n {n} addr add fd00:250::{i}/64 dev eth0 nodad")
        sh(f"ip -n {br} link set p{i} master br0 mtu {mtu} up")
    return {"a": a, "b": b, "b_ip": "10.250.0.2", "b_ip6": "fd00:250::2"}


def ovs_env(d):
    """OVS_* variables that keep the database, sockets, pid and log files in `d`."""
    return (f"env OVS_RUNDIR={d} OVS_DBDIR={d} OVS_LOGDIR={d} OVS_SYSCONFDIR={d} "
            f"OVS_PKGDATADIR=/usr/share/openvswitch")


def setup_ovs(mtu=1500):
    """Open vSwitch's userspace datapath: ovsdb-server and ovs-vswitchd started here (not
    the system service) in a namespace of their own, with their database and sockets in a
    temporary directory; a `datapath_type=netdev` bridge with userspace TSO on and one
    `type=tap` port per container, each tap moved into its container's namespace."""
    sw = netns("ovs")
    d = tempfile.mkdtemp(prefix=PREFIX)
    CLEANUP.append(f"rm -rf {d}")
    env = ovs_env(d)
    sh(f"ovsdb-tool create {d}/conf.db /usr/share/openvswitch/vswitch.ovsschema")
    spawn(f"exec {env} ip netns exec {sw} ovsdb-server {d}/conf.db --remote=punix:{d}/db.sock "
          f"--pidfile={d}/ovsdb.pid --unixctl={d}/ovsdb.ctl --log-file={d}/ovsdb.log")
    for _ in range(100):
        if os.path.exists(f"{d}/db.sock"):
            break
        time.sleep(0.05)
    vsctl = f"ovs-vsctl --db=unix:{d}/db.sock --timeout=20"
    sh(f"{vsctl} --no-wait init")
    sh(f"{vsctl} --no-wait set Open_vSwitch . other_config:userspace-tso-enable=true")
    vs = spawn(f"exec {env} ip netns exec {sw} ovs-vswitchd unix:{d}/db.sock --pidfile={d}/vs.pid "
               f"--unixctl={d}/vs.ctl --log-file={d}/vs.log")
    # Without --no-wait, ovs-vsctl waits until ovs-vswitchd has applied the change.
    sh(f"{vsctl} add-br br0 -- set bridge br0 datapath_type=netdev")
    a, b = netns("a"), netns("b")
    for i, n in ((1, a), (2, b)):
        tap = f"{PREFIX}o{i}"
        sh(f"{vsctl} add-port br0 {tap} -- set Interface {tap} type=tap")
        sh(f"ip -n {sw} link set {tap} netns {n}")
        sh(f"ip -n {n} link set {tap} name eth0 mtu {mtu} up")
        sh(f"ip -n {n} addr add 10.253.0.{i}/24 dev eth0")
        sh(f"ip -n {n} addr add fd00:253::{i}/64 dev eth0 nodad")
    return {"a": a, "b": b, "b_ip": "10.253.0.2", "b_ip6": "fd00:253::2", "pid": vs.pid}


def setup_vde(mtu=1500):
    d = tempfile.mkdtemp(prefix=PREFIX)
    CLEANUP.append(f"rm -rf {d}")
    # Both daemonize (vde_switch quits on end of input otherwise); killed by pid file.
    sh(f"vde_switch -d -s {d}/sw -p {d}/sw.pid")
    CLEANUP.append(f"kill $(cat {d}/sw.pid)")
    a, b = netns("a"), netns("b")
    for i, n in ((1, a), (2, b)):
        sh(f"ip netns exec {n} vde_plug2tap -d -P {d}/p{i}.pid -s {d}/sw tap0")
        CLEANUP.append(f"kill $(cat {d}/p{i}.pid)")
        for _ in range(50):
            if subprocess.run(f"ip -n {n} link show tap0", shell=True, capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        sh(f"ip -n {n} link set tap0 mtu {mtu} up && ip -n {n} addr add 10.252.0.{i}/24 dev tap0")
        sh(f"ip -n {n} addr add fd00:252::{i}/64 dev tap0 nodad")
    return {"a": a, "b": b, "b_ip": "10.252.0.2", "b_ip6": "fd00:252::2"}


PUB_PORT = 15201 + (os.getpid() % 500)
SRV_PORT = 5201 + (os.getpid() % 500)


def setup_vswitch(binary, extra, mtu=1500, host=False, publish=False):
    d = tempfile.mkdtemp(prefix=PREFIX)
    CLEANUP.append(f"rm -rf {d}")
    daemon = spawn(f"exec {binary} daemon --socket {d}/ctl.sock --state-dir {d}/state {extra}")
    for _ in range(100):
        if os.path.exists(f"{d}/ctl.sock"):
            break
        time.sleep(0.05)
    ctl = f"{binary} ctl --socket {d}/ctl.sock"
    # The host test reaches an iperf3 server on the host's loopback: opt in.
    sh(f"{ctl} network create bench --subnet 10.251.0.0/24 --ipv6 --subnet fd00:251::/64 "
       f"--mtu {mtu} --host-loopback")
    a = netns("a")
    sh(f"{ctl} attach bench --name a --netns /run/netns/{a}")
    if publish:
        sh(f"{ctl} publish a -p 127.0.0.1:{PUB_PORT}:{SRV_PORT} -p [::1]:{PUB_PORT}:{SRV_PORT}")
    if host:
        # Over IPv6 the gateway's TCP ports lead to the host's 127.0.0.1 as well.
        return {"c": a, "host_ip": "10.251.0.1", "host_ip6": "fd00:251::1", "host_bind6": "127.0.0.1"}
    b = netns("b")
    got = json.loads(sh(f"{ctl} --json attach bench --name b --netns /run/netns/{b}"))
    return {"a": a, "b": b, "b_ip": "10.251.0.3", "b_ip6": got["ip6"], "pid": daemon.pid}


def setup_slirp(mtu=65520, publish=False):
    c = netns("c")
    holder = spawn(f"ip netns exec {c} sleep 100000")
    time.sleep(0.2)
    pid = sh(f"ip netns pids {c}").split()[0]
    d = tempfile.mkdtemp(prefix=PREFIX)
    CLEANUP.append(f"rm -rf {d}")
    api = f"{d}/api.sock"
    spawn(f"slirp4netns --configure --enable-ipv6 --mtu={mtu} --api-socket {api} {pid} tap0")
    for _ in range(50):
        if "10.0.2.100" in sh(f"ip -n {c} -4 addr show", check=False) and os.path.exists(api):
            break
        time.sleep(0.1)
    del holder
    if publish:
        slirp_api(api, {"execute": "add_hostfwd", "arguments": {
            "proto": "tcp", "host_addr": "127.0.0.1", "host_port": PUB_PORT, "guest_port": SRV_PORT}})
    # libslirp maps its IPv6 gateway fd00::2 to the host's ::1 as 10.0.2.2 to 127.0.0.1.
    # Its API takes no IPv6 host address for a forward (1.2.0: "bad arguments.host_addr").
    return {"c": c, "host_ip": "10.0.2.2", "host_ip6": "fd00::2", "host_bind6": "::1", "no_pub6": True}


def slirp_api(path, request):
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as so:
        so.connect(path)
        so.sendall(json.dumps(request).encode())
        so.shutdown(socket.SHUT_WR)
        answer = json.loads(so.recv(65536).decode() or "{}")
    if "error" in answer:
        raise RuntimeError(f"slirp4netns API: {answer}")
    return answer


def setup_pasta(mtu=65520, publish=False):
    c = netns("c")
    # One port of both families (pasta refuses 127.0.0.1 and ::1 as overlapping
    # specifiers): it listens on the wildcard; only loopback clients reach it here.
    tcp = f"-t {PUB_PORT}:{SRV_PORT}" if publish else "-t none"
    # As root pasta would switch to nobody and lose the namespace: keep root.
    spawn(f"pasta --runas 0 --config-net -f -m {mtu} {tcp} -u none -T none -U none --netns /run/netns/{c}")
    gw = ""
    for _ in range(50):
        out = sh(f"ip -n {c} -4 route show default", check=False)
        if "via" in out:
            gw = out.split("via")[1].split()[0]
            break
        time.sleep(0.1)
    if not gw:
        raise RuntimeError("pasta did not configure the namespace (does the host have a default route?)")
    s = {"c": c, "host_ip": gw}
    # IPv6: pasta copies the host's default route; its gateway is mapped to the host's ::1.
    for _ in range(30):
        out = sh(f"ip -n {c} -6 route show default", check=False)
        if "via" in out:
            s["host_ip6"], s["host_bind6"] = out.split("via")[1].split()[0], "::1"
            break
        time.sleep(0.1)
    return s


# ---- tests ----

def iperf(client_ns, server_ns, server_ip, args, bind=None):
    port = 5201 + (os.getpid() % 500)
    bindarg = f"-B {bind}" if bind else ""
    srv = spawn(in_ns(server_ns, f"iperf3 -s -1 -p {port} {bindarg}"))
    wait_listen(server_ns, port)
    out = sh(in_ns(client_ns, f"iperf3 -c {server_ip} -p {port} -J {args}"), timeout=60)
    kill(srv)
    return json.loads(out)


def t_tcp(s, secs):
    j = iperf(s["a"], s["b"], s["b_ip"], f"-t {secs}")
    return j["end"]["sum_received"]["bits_per_second"] / 1e9


def t_tcp6(s, secs):
    j = iperf(s["a"], s["b"], s["b_ip6"], f"-t {secs}")
    return j["end"]["sum_received"]["bits_per_second"] / 1e9


def t_udp64(s, secs):
    j = iperf(s["a"], s["b"], s["b_ip"], f"-u -b 0 -l 18 -t {secs}")
    e = j["end"]["sum"]
    sent = e.get("packets", 0)
    lost = e.get("lost_packets", 0)
    secs_ = e.get("seconds", secs) or secs
    return {"loss_pct": 100.0 * lost / max(sent, 1), "sent_pps": sent / secs_, "recv_pps": (sent - lost) / secs_}


def t_ping(s, _secs):
    out = sh(in_ns(s["a"], f"ping -c 200 -i 0.005 -q {s['b_ip']}"), timeout=60)
    line = [l for l in out.splitlines() if "min/avg" in l][0]
    return float(line.split("=")[1].split("/")[1])


def rtts(out):
    """The per-packet round trips of ping's output, in ms."""
    return [float(w.split("=")[1]) for l in out.splitlines() for w in l.split() if w.startswith("time=")]


def t_ping_idle(s, _secs, user=""):
    """20 pings 0.5 s apart: every one finds the path idle (after one ping that resolves
    the neighbour, not counted). Average and median RTT, ms. ping times a reply by the
    kernel's receive timestamp; with -U, when ping itself reads it (user to user)."""
    sh(in_ns(s["a"], f"ping -c 1 -W 2 -q {s['b_ip']}"), check=False)
    time.sleep(0.5)
    got = rtts(sh(in_ns(s["a"], f"ping {user} -c 20 -i 0.5 {s['b_ip']}"), timeout=60))
    return {"avg": statistics.mean(got), "p50": statistics.median(got), "max": max(got)}


def t_ping_idle_user(s, secs):
    return t_ping_idle(s, secs, user="-U")


def sockperf(s, secs, tcp):
    """sockperf ping-pong (one message in flight, 14 bytes), a server in b: round trip
    (`--full-rtt`) median and 99th percentile, µs."""
    port = 11111 + (os.getpid() % 500)
    proto = "--tcp" if tcp else ""
    srv = spawn(in_ns(s["b"], f"sockperf server -i {s['b_ip']} -p {port} {proto}"))
    for _ in range(50):
        if sh(in_ns(s["b"], f"ss -Hl{'t' if tcp else 'u'}n sport = :{port}"), check=False).strip():
            break
        time.sleep(0.1)
    out = sh(in_ns(s["a"], f"sockperf ping-pong -i {s['b_ip']} -p {port} {proto} -t {secs} --full-rtt"),
             timeout=secs + 30)
    kill(srv)
    pct = {}
    for l in out.splitlines():
        if "percentile" in l and "=" in l:
            k = l.split("percentile")[1].split("=")[0].strip()
            pct[k] = float(l.split("=")[1])
    return {"p50": pct["50.000"], "p99": pct["99.000"]}


def t_sockperf_udp(s, secs):
    return sockperf(s, min(secs, 5), tcp=False)


def t_sockperf_tcp(s, secs):
    return sockperf(s, min(secs, 5), tcp=True)


def cpu_ticks(pid):
    """utime + stime of a process (all its threads), in clock ticks."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def t_idle_cpu(s, _secs, window=10.0):
    """The switch process's CPU over `window` seconds without traffic, % of one core."""
    if "pid" not in s:
        raise KeyError("no switch process")
    time.sleep(1)
    t0, c0 = time.monotonic(), cpu_ticks(s["pid"])
    time.sleep(window)
    t1, c1 = time.monotonic(), cpu_ticks(s["pid"])
    return 100.0 * (c1 - c0) / os.sysconf("SC_CLK_TCK") / (t1 - t0)


# What runs between two containers, in this order (ping_idle and idle_cpu last: the
# path is quiet by then).
SWITCH_TESTS = {"tcp": t_tcp, "tcp6": t_tcp6, "udp64": t_udp64, "ping": t_ping,
                "sockperf_udp": t_sockperf_udp, "sockperf_tcp": t_sockperf_tcp,
                "ping_idle": t_ping_idle, "ping_idle_user": t_ping_idle_user, "idle_cpu": t_idle_cpu}


def t_tcp_host6(s, secs):
    if "host_ip6" not in s:
        raise KeyError("no IPv6 path to the host's loopback")
    j = iperf(s["c"], None, s["host_ip6"], f"-t {secs}", bind=s["host_bind6"])
    return j["end"]["sum_received"]["bits_per_second"] / 1e9


def t_tcp_host(s, secs):
    j = iperf(s["c"], None, s["host_ip"], f"-t {secs}", bind="127.0.0.1")
    return j["end"]["sum_received"]["bits_per_second"] / 1e9


def t_down(s, secs):
    j = iperf(s["c"], None, s["host_ip"], f"-t {secs} -R", bind="127.0.0.1")
    return j["end"]["sum_received"]["bits_per_second"] / 1e9


def t_down6(s, secs):
    if "host_ip6" not in s:
        raise KeyError("no IPv6 path to the host's loopback")
    j = iperf(s["c"], None, s["host_ip6"], f"-t {secs} -R", bind=s["host_bind6"])
    return j["end"]["sum_received"]["bits_per_second"] / 1e9


def t_pub(s, secs, client="127.0.0.1"):
    """A client on the host's loopback to the published port; the server in the container."""
    srv = spawn(in_ns(s["c"], f"iperf3 -s -1 -p {SRV_PORT}"))
    wait_listen(s["c"], SRV_PORT)
    out = sh(f"iperf3 -c {client} -p {PUB_PORT} -J -t {secs}", timeout=60)
    kill(srv)
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def t_pub6(s, secs):
    if s.get("no_pub6"):
        raise KeyError("no IPv6 published port")
    return t_pub(s, secs, client="::1")


HOST_TESTS = {"tcp_host": t_tcp_host, "tcp_host6": t_tcp_host6, "down_host": t_down, "down_host6": t_down6,
              "pub_host": t_pub, "pub_host6": t_pub6}


ROOTLESS_TESTS = [("up", t_tcp_host), ("down", t_down), ("pub", t_pub)]


# ---- rootless setups: everything as nobody; each returns {"enter": prefix that runs a
# ---- command inside the container, "host_ip": the host as the container reaches it}.

NOBODY = "setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all"


def nobody_dir():
    d = tempfile.mkdtemp(prefix=PREFIX)
    CLEANUP.append(f"rm -rf {d}")
    sh(f"chown 65534:65534 {d} && chmod 0755 {d}")
    return d


# What each rootless container runs: a sleep found by its unique length.
HOLD = f"sleep {900000 + os.getpid() % 100000}"


def holder(tries=100):
    """The pid of the container's holding process (HOLD, as nobody), once it runs."""
    for _ in range(tries):
        out = sh(f"pgrep -u 65534 -f '^{HOLD}$'", check=False).split()
        if out:
            # It may be the init of a PID namespace (pasta), deaf to SIGTERM.
            CLEANUP.append(f"kill -9 {out[0]}")
            return int(out[0])
        time.sleep(0.05)
    raise RuntimeError(f"the container's `{HOLD}` did not start")


def enter(pid):
    return f"{NOBODY} nsenter -t {pid} -U -n --preserve-credentials"


def tun_open():
    """/dev/net/tun usable by every user (as most distributions ship it) while the run
    lasts (vswitch, pasta and slirp4netns all open it); gives the mode to restore."""
    mode = oct(os.stat("/dev/net/tun").st_mode & 0o7777)[2:]
    sh("chmod 0666 /dev/net/tun")
    return mode


def setup_vswitch_rootless(binary, extra, mtu):
    d = nobody_dir()
    spawn(f"{NOBODY} {binary} daemon --socket {d}/ctl.sock --state-dir {d}/state {extra}")
    for _ in range(100):
        if os.path.exists(f"{d}/ctl.sock"):
            break
        time.sleep(0.05)
    ctl = f"{NOBODY} {binary} ctl --socket {d}/ctl.sock"
    sh(f"{ctl} network create bench --subnet 10.251.0.0/24 --ipv6 --subnet fd00:251::/64 "
       f"--mtu {mtu} --host-loopback")
    spawn(f"{NOBODY} {binary} run --socket {d}/ctl.sock --network bench --name a "
                f"-p 127.0.0.1:{PUB_PORT}:{SRV_PORT} -- {HOLD}")
    return {"enter": enter(holder()), "host_ip": "10.251.0.1", "ctl": ctl}


def setup_pasta_rootless(mtu):
    spawn(f"{NOBODY} pasta --config-net -f -m {mtu} -t 127.0.0.1/{PUB_PORT}:{SRV_PORT} -u none -T none -U none "
          f"-- {HOLD}")
    s = {"enter": enter(holder())}
    for _ in range(50):
        out = sh(f"{s['enter']} ip -4 route show default", check=False)
        if "via" in out:
            s["host_ip"] = out.split("via")[1].split()[0]
            return s
        time.sleep(0.1)
    raise RuntimeError("pasta did not configure the namespace (does the host have a default route?)")


def setup_slirp_rootless(mtu):
    spawn(f"{NOBODY} unshare --user --map-root-user --net {HOLD}")
    pid = holder()
    d = nobody_dir()
    api = f"{d}/api.sock"
    spawn(f"{NOBODY} slirp4netns --configure --mtu={mtu} --api-socket {api} "
          f"--userns-path=/proc/{pid}/ns/user {pid} tap0")
    s = {"enter": enter(pid), "host_ip": "10.0.2.2"}
    for _ in range(50):
        if "10.0.2.100" in sh(f"{s['enter']} ip -4 addr show", check=False) and os.path.exists(api):
            break
        time.sleep(0.1)
    slirp_api(api, {"execute": "add_hostfwd", "arguments": {
        "proto": "tcp", "host_addr": "127.0.0.1", "host_port": PUB_PORT, "guest_port": SRV_PORT}})
    return s


def rl_iperf(s, args, reverse=False):
    """iperf3 from inside the container to a server on the host's loopback."""
    srv = spawn(f"iperf3 -s -1 -p {SRV_PORT} -B 127.0.0.1")
    wait_listen(None, SRV_PORT)
    rev = "-R" if reverse else ""
    out = sh(f"{s['enter']} iperf3 -c {s['host_ip']} -p {SRV_PORT} -J {args} {rev}", timeout=60)
    kill(srv)
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def t_up_rl(s, secs):
    return rl_iperf(s, f"-t {secs}")


def t_down_rl(s, secs):
    return rl_iperf(s, f"-t {secs}", reverse=True)


def t_pub_rl(s, secs):
    """A client on the host's loopback to the published port; the server in the container."""
    srv = spawn(f"{s['enter']} iperf3 -s -1 -p {SRV_PORT}")
    for _ in range(50):
        if sh(f"{s['enter']} ss -Hltn sport = :{SRV_PORT}", check=False).strip():
            break
        time.sleep(0.1)
    out = sh(f"iperf3 -c 127.0.0.1 -p {PUB_PORT} -J -t {secs}", timeout=60)
    kill(srv)
    if "ctl" in s:
        nat = json.loads(sh(f"{s['ctl']} --json stats"))["nat"]
        print(f"# vswitch published port: tcp_spliced {nat['tcp_spliced']}, "
              f"splice_fallbacks {nat['splice_fallbacks']}", file=sys.stderr)
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


ROOTLESS_RUNS = [("up", t_up_rl), ("down", t_down_rl), ("pub", t_pub_rl)]


def rootless_runs(a, only, secs, record):
    """One round of the rootless columns: every setup at both MTUs, alternating."""
    setups = {
        "vswitch": lambda mtu: setup_vswitch_rootless(a.vswitch, a.vswitch_args, mtu),
        "slirp4netns": setup_slirp_rootless,
        "pasta": setup_pasta_rootless,
    }
    for mtu in (1500, 65520):
        for name, setup in setups.items():
            if name not in only:
                continue
            try:
                s = setup(mtu)
                time.sleep(0.3)
                for test, fn in ROOTLESS_RUNS:
                    record(name, f"{test}_{mtu}", fn(s, secs))
            except Exception as e:  # noqa: BLE001 - report and go on with the others
                print(f"! {name} rootless MTU {mtu}: {e}", file=sys.stderr)
            finally:
                cleanup()


def rootless_table(med, order):
    cols = [f"{t}_{m}" for m in (1500, 65520) for t, _ in ROOTLESS_TESTS]
    names = {"up": "up", "down": "down (-R)", "pub": "published"}
    head = " | ".join(f"{names[c.split('_')[0]]}, MTU {c.split('_')[1]}" for c in cols)
    lines = [f"| setup | {head} |", "|---" * (len(cols) + 1) + "|"]
    for n in order:
        r = med.get(n, {})
        if not any(c in r for c in cols):
            continue
        cells = [f"{r[c]:.2f}" if c in r else "—" for c in cols]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    ratios = []
    for c in cols:
        v, p = med.get("vswitch", {}).get(c), med.get("pasta", {}).get(c)
        if v and p:
            ratios.append(f"{c}: vswitch/pasta {v / p:.2f}×")
    return "\n".join(lines), ratios


def machine():
    cpu = ""
    for l in open("/proc/cpuinfo"):
        if l.startswith("model name"):
            cpu = l.split(":", 1)[1].strip()
            break
    ver = lambda c: subprocess.run(c, shell=True, capture_output=True, text=True).stdout.splitlines()[:1]
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "iperf3": (ver("iperf3 --version") or [""])[0],
        "slirp4netns": (ver("slirp4netns --version") or [""])[0],
        "vde2": (ver("dpkg-query -W -f='${Version}' vde2") or [""])[0],
        "passt": (ver("dpkg-query -W -f='${Version}' passt") or [""])[0],
        "ovs": (ver("ovs-vswitchd --version") or [""])[0],
        "sockperf": (ver("sockperf --version 2>&1") or [""])[0],
    }


def svg_chart(results, order, path):
    tests = [("tcp", "TCP container→container, Gbit/s"), ("tcp6", "TCP container→container over IPv6, Gbit/s"),
             ("tcp_host", "TCP → host loopback, MTU 65520, Gbit/s"),
             ("tcp_host6", "TCP → host loopback over IPv6, MTU 65520, Gbit/s"),
             ("down_host", "TCP ← host loopback (-R), MTU 65520, Gbit/s"),
             ("down_host6", "TCP ← host loopback over IPv6 (-R), MTU 65520, Gbit/s"),
             ("pub_host", "published port from 127.0.0.1, MTU 65520, Gbit/s"),
             ("pub_host6", "published port from ::1, MTU 65520, Gbit/s"),
             ("udp64_recv", "UDP 64 B delivered, kpps"), ("ping", "ping RTT avg, µs (lower is better)"),
             ("ping_idle", "ping 0.5 s apart, median RTT, µs (lower is better)"),
             ("sockperf_udp", "sockperf UDP ping-pong, median RTT, µs (lower is better)"),
             ("sockperf_tcp", "sockperf TCP ping-pong, median RTT, µs (lower is better)")]
    colors = {"vswitch": "#2b6cb0", "vswitch-tap": "#63b3ed", "bridge": "#718096", "ovs": "#b7791f", "vde": "#c05621",
              "slirp4netns": "#2f855a", "pasta": "#805ad5"}
    W, H, gh = 900, 70 + 170 * len(tests), 170
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="20" y="30" font-size="16" font-weight="bold">vswitch and peers (medians)</text>']
    y0 = 60
    for key, title in tests:
        vals = []
        for name in order:
            r = results.get(name, {})
            if key == "udp64_recv" and "udp64" in r:
                vals.append((name, r["udp64"]["recv_pps"] / 1000))
            elif key == "ping" and "ping" in r:
                vals.append((name, r["ping"] * 1000))
            elif key == "ping_idle" and key in r:
                vals.append((name, r[key]["p50"] * 1000))
            elif key.startswith("sockperf") and key in r:
                vals.append((name, r[key]["p50"]))
            elif key in r:
                vals.append((name, r[key]))
        out.append(f'<text x="20" y="{y0}" font-weight="bold">{title}</text>')
        if vals:
            vmax = max(v for _, v in vals) or 1
            for i, (name, v) in enumerate(vals):
                y = y0 + 12 + i * 26
                w = 600 * v / vmax
                out.append(f'<text x="20" y="{y + 15}">{name}</text>')
                out.append(f'<rect x="130" y="{y}" width="{w:.1f}" height="20" fill="{colors.get(name, "#444")}"/>')
                out.append(f'<text x="{136 + w:.1f}" y="{y + 15}">{v:.2f}</text>')
        y0 += gh
    out.append("</svg>")
    open(path, "w").write("\n".join(out))


# Which Debian package gives each tool, and which setups or tests need it.
TOOLS = {"ip": "iproute2", "iperf3": "iperf3", "ping": "iputils-ping", "vde_switch": "vde2",
         "vde_plug2tap": "vde2", "slirp4netns": "slirp4netns", "pasta": "passt", "sockperf": "sockperf",
         "ovsdb-server": "openvswitch-switch", "ovs-vswitchd": "openvswitch-switch",
         "ovs-vsctl": "openvswitch-switch"}
NEEDS = {"vde": ["vde_switch", "vde_plug2tap"], "slirp4netns": ["slirp4netns"], "pasta": ["pasta"],
         "ovs": ["ovsdb-server", "ovs-vswitchd", "ovs-vsctl"],
         "sockperf_udp": ["sockperf"], "sockperf_tcp": ["sockperf"]}
SETUPS = ["vswitch", "vswitch-tap", "bridge", "ovs", "vde", "slirp4netns", "pasta"]


def check_tools(selected):
    """Exits naming the missing tools of the selected setups and tests, and their packages."""
    need = ["ip", "iperf3", "ping"] + [t for x in selected for t in NEEDS.get(x, [])]
    missing = sorted({t for t in need if not shutil.which(t)})
    if missing:
        pkgs = " ".join(sorted({TOOLS[t] for t in missing}))
        sys.exit(f"missing {', '.join(missing)}: apt-get install -y {pkgs} "
                 f"(or leave them out with --only / --tests)")


def med_of(vs):
    if isinstance(vs[0], dict):
        return {k: statistics.median(v[k] for v in vs) for k in vs[0]}
    return statistics.median(vs)


def one_setup(name, setup, tests, secs, record, what):
    try:
        s = setup()
        time.sleep(0.3)
        for t, fn in tests.items():
            try:
                record(name, t, fn(s, secs))
            except KeyError:
                continue  # not measured for this setup (no such path)
    except Exception as e:  # noqa: BLE001 - report and go on with the others
        print(f"! {name} {what}: {e}", file=sys.stderr)
    finally:
        cleanup()


def uptime():
    return sh("uptime", check=False).strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vswitch", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=",".join(SETUPS), help="setups, comma-separated: " + ",".join(SETUPS))
    ap.add_argument("--tests", default=",".join(list(SWITCH_TESTS) + list(HOST_TESTS)),
                    help="tests, comma-separated: " + ",".join(list(SWITCH_TESTS) + list(HOST_TESTS)))
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--vswitch-args", default="")
    ap.add_argument("--no-docs", action="store_true", help="do not write docs/compare-results.md and docs/compare.svg")
    ap.add_argument("--rootless", action="store_true",
                    help="only the rootless columns: up, down and published at MTU 1500 and 65520 (vswitch, slirp4netns, pasta)")
    a = ap.parse_args()
    runs = 2 if a.quick else a.runs
    secs = 3 if a.quick else 8
    only, tests = a.only.split(","), a.tests.split(",")
    check_tools([x for x in only if x in ("slirp4netns", "pasta")] if a.rootless else only + tests)
    os.makedirs(a.out, exist_ok=True)
    m = machine()
    print(f"# {m['cores']} cores, {m['cpu']}, kernel {m['kernel']}; {m['iperf3']}; {m['slirp4netns']}; vde2 {m['vde2']}; passt {m['passt']}; {m['ovs']}; {m['sockperf']}")
    print(f"# {runs} runs per test, {secs} s each, alternating setups; vswitch args: '{a.vswitch_args}'")
    if a.rootless:
        return rootless_main(a, m, runs, secs, only)
    load = [uptime()]
    print(f"# before: {load[0]}")
    raw = run_rounds(a, only, tests, runs, secs)
    load.append(uptime())
    print(f"# after: {load[1]}")
    med = {name: {t: med_of(vs) for t, vs in r.items()} for name, r in raw.items()}
    order = [n for n in SETUPS if n in med]
    table, lat = tables(med, order)
    print(table + "\n\n" + lat)
    header = (f"Machine: {m['cores']} cores, {m['cpu']}, Linux {m['kernel']}. {m['iperf3']}; {m['slirp4netns']}; "
              f"vde2 {m['vde2']}; passt {m['passt']}; {m['ovs']}; {m['sockperf']}. Medians of {runs} runs "
              f"({secs} s each; sockperf {min(secs, 5)} s), setups alternating. "
              f"vswitch daemon options: `{a.vswitch_args or '(defaults)'}`. Load: before `{load[0]}`; after `{load[1]}`."
              + shared_note(load))
    json.dump({"machine": m, "runs": runs, "seconds": secs, "vswitch_args": a.vswitch_args, "uptime": load,
               "raw": raw, "median": med}, open(os.path.join(a.out, "results.json"), "w"), indent=2)
    open(os.path.join(a.out, "results.md"), "w").write(header + "\n\n" + table + "\n\n" + lat + "\n")
    svg_chart(med, order, os.path.join(a.out, "chart.svg"))
    if not a.no_docs:
        open("docs/compare-results.md", "w").write(
            "# Comparison run (generated by bench/compare/run.sh)\n\n" + header + "\n\n" + table + "\n\n"
            + LAT_NOTE + "\n\n" + lat + "\n\n![chart](compare.svg)\n")
        shutil.copy(os.path.join(a.out, "chart.svg"), "docs/compare.svg")


def shared_note(load):
    """A warning for the header when the host was busy with other work during the run."""
    try:
        busiest = max(float(u.split("load average:")[1].split(",")[0]) for u in load)
    except (IndexError, ValueError):
        return ""
    if busiest <= 1.5:
        return ""
    return (f" The host was shared with other builds (load average up to {busiest:.2f} on {os.cpu_count()} cores): "
            "absolute figures are low and noisy; compare setups within this run only.")


def run_rounds(a, only, tests, runs, secs):
    """`runs` rounds of every selected setup and test, alternating setups; raw figures."""
    switch_setups = {
        "vswitch": lambda: setup_vswitch(a.vswitch, a.vswitch_args),
        # Every frame through the daemon: TAPs, the kernel path off.
        "vswitch-tap": lambda: setup_vswitch(a.vswitch, a.vswitch_args + " --no-kernel-path"),
        "bridge": setup_bridge,
        "ovs": setup_ovs,
        "vde": setup_vde,
    }
    host_setups = {
        "vswitch": lambda: setup_vswitch(a.vswitch, a.vswitch_args, mtu=65520, host=True, publish=True),
        "vswitch-tap": lambda: setup_vswitch(a.vswitch, a.vswitch_args + " --no-kernel-path", mtu=65520,
                                             host=True, publish=True),
        "slirp4netns": lambda: setup_slirp(publish=True),
        "pasta": lambda: setup_pasta(publish=True),
    }
    sw = {t: f for t, f in SWITCH_TESTS.items() if t in tests}
    ho = {t: f for t, f in HOST_TESTS.items() if t in tests}
    raw = {}
    def record(name, test, v):
        raw.setdefault(name, {}).setdefault(test, []).append(v)
    try:
        for r in range(runs):
            for group, setups in ((sw, switch_setups), (ho, host_setups)):
                for name, setup in setups.items():
                    if name in only and group:
                        one_setup(name, setup, group, secs, record, f"run {r}")
            print(f"# run {r + 1}/{runs} done", file=sys.stderr)
    finally:
        cleanup()
    return raw


LAT_NOTE = ("Latency: `ping` 200 pings 5 ms apart (average); `ping -i 0.5` 20 pings half a second apart, "
            "each finding the path idle (average and median), timed by the kernel's receive timestamp and, "
            "with `-U`, when ping reads the reply; sockperf ping-pong, one 14-byte message in "
            "flight for 5 s, round trips (`--full-rtt`) median and 99th percentile; idle CPU: the switch "
            "process's utime + stime over 10 s without traffic, % of one core.")


def tables(med, order):
    def cell(name, t, fmt):
        v = med.get(name, {}).get(t)
        return fmt(v) if v is not None else "—"
    lines = [] if not any(t in med.get(n, {}) for n in order for t in ("tcp", "tcp6", "udp64")) else [
        "| setup | TCP c→c, MTU 1500 (Gbit/s) | TCP c→c over IPv6 (Gbit/s) | UDP 64 B at full rate: loss, delivered |",
        "|---|---|---|---|",
    ]
    for n in order:
        if not any(t in med.get(n, {}) for t in ("tcp", "tcp6", "udp64")):
            continue
        lines.append("| {} | {} | {} | {} |".format(
            n,
            cell(n, "tcp", lambda v: f"{v:.2f}"),
            cell(n, "tcp6", lambda v: f"{v:.2f}"),
            cell(n, "udp64", lambda v: f"{v['loss_pct']:.1f}% lost, {v['recv_pps'] / 1000:.0f} kpps of {v['sent_pps'] / 1000:.0f}"),
        ))
    host = [t for t in HOST_TESTS if any(t in med.get(n, {}) for n in order)]
    if host:
        names = {"tcp_host": "up", "tcp_host6": "up, IPv6", "down_host": "down (-R)", "down_host6": "down, IPv6",
                 "pub_host": "published", "pub_host6": "published, IPv6"}
        lines += ["", "To the host's loopback, MTU 65520 (Gbit/s):", "",
                  "| setup | " + " | ".join(names[t] for t in host) + " |", "|---" * (len(host) + 1) + "|"]
        for n in order:
            if any(t in med.get(n, {}) for t in host):
                lines.append(f"| {n} | " + " | ".join(cell(n, t, lambda v: f"{v:.2f}") for t in host) + " |")
    lat = [] if not any(t in med.get(n, {}) for n in order for t in ("ping", "ping_idle", "ping_idle_user",
                                                                     "sockperf_udp", "sockperf_tcp", "idle_cpu")) else [
        "| setup | ping avg, 5 ms apart (ms) | ping 0.5 s apart: avg / median (ms) | the same, user to user (`-U`): avg / median (ms) | sockperf UDP RTT p50 / p99 (µs) | sockperf TCP RTT p50 / p99 (µs) | idle CPU (% of a core) |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in order:
        if not any(t in med.get(n, {}) for t in ("ping", "ping_idle", "ping_idle_user", "sockperf_udp",
                                                  "sockperf_tcp", "idle_cpu")):
            continue
        lat.append("| {} | {} | {} | {} | {} | {} | {} |".format(
            n,
            cell(n, "ping", lambda v: f"{v:.3f}"),
            cell(n, "ping_idle", lambda v: f"{v['avg']:.3f} / {v['p50']:.3f}"),
            cell(n, "ping_idle_user", lambda v: f"{v['avg']:.3f} / {v['p50']:.3f}"),
            cell(n, "sockperf_udp", lambda v: f"{v['p50']:.1f} / {v['p99']:.1f}"),
            cell(n, "sockperf_tcp", lambda v: f"{v['p50']:.1f} / {v['p99']:.1f}"),
            cell(n, "idle_cpu", lambda v: f"{v:.2f}"),
        ))
    return "\n".join(lines), "\n".join(lat)


def rootless_main(a, m, runs, secs, only):
    raw = {}
    def record(name, test, v):
        raw.setdefault(name, {}).setdefault(test, []).append(v)
    mode = tun_open()
    try:
        for r in range(runs):
            rootless_runs(a, only, secs, record)
            print(f"# run {r + 1}/{runs} done", file=sys.stderr)
    finally:
        cleanup()
        sh(f"chmod {mode} /dev/net/tun", check=False)
    med = {n: {t: statistics.median(vs) for t, vs in tests.items()} for n, tests in raw.items()}
    order = [n for n in ["vswitch", "slirp4netns", "pasta"] if n in med]
    table, ratios = rootless_table(med, order)
    print(table)
    for line in ratios:
        print(f"# {line}")
    header = (f"Machine: {m['cores']} cores, {m['cpu']}, Linux {m['kernel']}. {m['iperf3']}; {m['slirp4netns']}; "
              f"passt {m['passt']}. Medians of {runs} runs ({secs} s each), setups alternating; Gbit/s. "
              f"Every tool and container as an unprivileged user (nobody) in user namespaces of its own. "
              f"vswitch daemon options: `{a.vswitch_args or '(defaults)'}`.")
    json.dump({"machine": m, "runs": runs, "seconds": secs, "vswitch_args": a.vswitch_args, "raw": raw, "median": med},
              open(os.path.join(a.out, "rootless.json"), "w"), indent=2)
    open(os.path.join(a.out, "rootless.md"), "w").write(header + "\n\n" + table + "\n\n" + "\n".join(ratios) + "\n")
    rootless_chart(med, order, os.path.join(a.out, "rootless.svg"))
    if not a.no_docs:
        open("docs/compare-rootless.md", "w").write(
            "# Rootless comparison run (generated by bench/compare/run.sh --rootless)\n\n" + header + "\n\n" + table
            + "\n\n" + "\n".join(f"- {r}" for r in ratios) + "\n\n![chart](compare-rootless.svg)\n")
        shutil.copy(os.path.join(a.out, "rootless.svg"), "docs/compare-rootless.svg")


def rootless_chart(med, order, path):
    cols = [f"{t}_{m}" for m in (1500, 65520) for t, _ in ROOTLESS_TESTS]
    colors = {"vswitch": "#2b6cb0", "slirp4netns": "#2f855a", "pasta": "#805ad5"}
    W, gh = 900, 40 + 26 * len(order)
    H = 60 + gh * len(cols)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           '<text x="20" y="30" font-size="16" font-weight="bold">Rootless paths, Gbit/s (medians)</text>']
    y0 = 60
    for c in cols:
        t, mtu = c.split("_")
        out.append(f'<text x="20" y="{y0}" font-weight="bold">{t}, MTU {mtu}</text>')
        vals = [(n, med[n][c]) for n in order if c in med.get(n, {})]
        vmax = max((v for _, v in vals), default=1) or 1
        for i, (n, v) in enumerate(vals):
            y = y0 + 8 + i * 26
            w = 600 * v / vmax
            out.append(f'<text x="20" y="{y + 15}">{n}</text>')
            out.append(f'<rect x="130" y="{y}" width="{w:.1f}" height="20" fill="{colors.get(n, "#444")}"/>')
            out.append(f'<text x="{136 + w:.1f}" y="{y + 15}">{v:.2f}</text>')
        y0 += gh
    out.append("</svg>")
    open(path, "w").write("\n".join(out))


if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()
