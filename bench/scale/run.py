#!/usr/bin/env python3
"""What a network of many containers costs: for each size N, a daemon with N namespaces
attached to one network, one `vswitch ctl attach` at a time as a user would.

Reports per size: the time an attach takes (mean of all, and of the last hundred), the
daemon's resident memory per port, how long `ctl port ls` and `ctl stats` take (median
of five), the worker CPU time one broadcast costs (and per member it reaches), and the
time a detach takes. Run as root:

    python3 bench/scale/run.py [--sizes 100,1000,4000] [--vswitch target/release/vswitch]

The host's neighbour tables must hold an entry or two per container
(net.ipv4.neigh.default.gc_thresh3; `bash scripts/test` raises it).
"""

import argparse
import ctypes
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def ip_batch(lines):
    with tempfile.NamedTemporaryFile("w", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    try:
        subprocess.run(["ip", "-force", "-batch", f.name], capture_output=True)
    finally:
        os.unlink(f.name)


def thread_cpu(pid, prefix):
    """CPU seconds used by the threads of `pid` whose name starts with `prefix`."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/comm") as f:
                if not f.read().startswith(prefix):
                    continue
            with open(f"/proc/{pid}/task/{t}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            total += int(rest[11]) + int(rest[12])
        except OSError:
            pass
    return total / CLK_TCK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def enter(path):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


def settle(pid, limit=180):
    """Waits until the workers are idle (what the new namespaces' kernels sent when
    their interfaces came up has been delivered): under 2% of a core for 2 s."""
    quiet = 0
    for _ in range(limit):
        before = thread_cpu(pid, "vswitch-worker")
        time.sleep(1.0)
        quiet = quiet + 1 if thread_cpu(pid, "vswitch-worker") - before < 0.02 else 0
        if quiet >= 2:
            return


def rx_of(ctl, port):
    out = run(ctl + ["--json", "stats"]).stdout
    for p in json.loads(out)["ports"]:
        if p["name"] == port:
            return p["rx_packets"]
    return 0


def broadcast_cost(daemon_pid, ctl, ns_path, bcast, count):
    """Worker CPU seconds per UDP broadcast sent from container c0 (bursts of `count`
    back to back; the median of three), counting the frames the switch received."""
    costs = []
    for _ in range(3):
        rx = rx_of(ctl, "c0")
        child = os.fork()
        if child == 0:
            enter(ns_path)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            for _ in range(count):
                s.sendto(b"x" * 18, (bcast, 9))
            os._exit(0)
        before = thread_cpu(daemon_pid, "vswitch-worker")
        os.waitpid(child, 0)
        settle(daemon_pid, 60)
        spent = thread_cpu(daemon_pid, "vswitch-worker") - before
        costs.append(spent / max(rx_of(ctl, "c0") - rx, 1))
    return statistics.median(costs)


def timed(cmd, times=5):
    spent = []
    for _ in range(times):
        t = time.perf_counter()
        run(cmd)
        spent.append(time.perf_counter() - t)
    return statistics.median(spent)


def one_size(vswitch, n, bcasts):
    tag = f"vsc{os.getpid() % 100000}x{n}"
    work = tempfile.mkdtemp(prefix=tag)
    sock = os.path.join(work, "ctl.sock")
    log = open(os.path.join(work, "daemon.log"), "w")
    daemon = subprocess.Popen(
        [vswitch, "daemon", "--socket", sock, "--state-dir", os.path.join(work, "state")],
        stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    names = [f"{tag}-{i}" for i in range(n)]
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        ctl = [vswitch, "ctl", "--socket", sock]
        run(ctl + ["network", "create", "big", "--subnet", "10.99.0.0/16"])
        rss0 = rss_kib(daemon.pid)
        ip_batch([f"netns add {x}" for x in names])
        spent = []
        for i, x in enumerate(names):
            t = time.perf_counter()
            run(ctl + ["attach", "big", "--name", f"c{i}", "--netns", f"/run/netns/{x}"])
            spent.append(time.perf_counter() - t)
        settle(daemon.pid)
        rss = rss_kib(daemon.pid)
        out = {
            "containers": n,
            "attach_ms_mean": round(1000 * statistics.mean(spent), 1),
            "attach_ms_last100": round(1000 * statistics.mean(spent[-100:]), 1),
            "rss_kib": rss,
            "rss_kib_per_port": round((rss - rss0) / n, 1),
            "port_ls_ms": round(1000 * timed(ctl + ["port", "ls"]), 1),
            "stats_ms": round(1000 * timed(ctl + ["stats"]), 1),
        }
        each = broadcast_cost(daemon.pid, ctl, f"/run/netns/{names[0]}", "10.99.255.255",
                              max(bcasts, 100_000 // n))
        out["broadcast_us"] = round(1e6 * each, 1)
        out["broadcast_ns_per_member"] = round(1e9 * each / max(n - 1, 1), 1)
        spent = []
        for i in range(min(n, 200)):
            t = time.perf_counter()
            run(ctl + ["detach", f"c{i}"])
            spent.append(time.perf_counter() - t)
        out["detach_ms_mean"] = round(1000 * statistics.mean(spent), 1)
        return out
    finally:
        daemon.kill()
        daemon.wait()
        ip_batch([f"netns delete {x}" for x in names])
        shutil.rmtree(work, ignore_errors=True)


def cpu_name():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,1000,4000")
    ap.add_argument("--vswitch", default="target/release/vswitch")
    ap.add_argument("--broadcasts", type=int, default=200)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/scale: run as root (it creates namespaces and TAPs)")
    with open("/proc/sys/net/ipv4/neigh/default/gc_thresh3") as f:
        t3 = int(f.read())
    sizes = [int(s) for s in a.sizes.split(",")]
    if t3 < 4 * max(sizes):
        sys.exit(f"bench/scale: gc_thresh3 is {t3}: raise net.ipv4.neigh.default.gc_thresh3 "
                 f"to at least {4 * max(sizes)} (bash scripts/test does)")
    print(json.dumps({"cpu": cpu_name(), "cores": os.cpu_count(), "kernel": platform.release()}))
    for n in sizes:
        print(json.dumps(one_size(a.vswitch, n, a.broadcasts)), flush=True)


if __name__ == "__main__":
    main()
