#!/usr/bin/env python3
"""VM <-> peer throughput, three ways in one run (as root):

- vswitch: the VM on a VM socket (`ctl attach --vm-socket`, QEMU `-netdev stream`), the
  peer a container on the same network;
- bridge: the VM on a TAP (`-netdev tap`, vhost off) in a kernel bridge, the peer a
  namespace on a veth in the same bridge;
- passt: the VM on passt (`-netdev stream` to passt's socket), the peer the namespace
  passt runs in (passt forwards its ports 8080 and 9000 to the VM).

The VM is Debian's kernel under QEMU's TCG (no KVM) with a busybox initramfs
(bench/vms/init.sh): a file served by httpd (VM -> peer) and an nc sink (peer -> VM).
The guest's emulated CPU bounds every figure: compare the columns, not the numbers.

usage: run.py [--vswitch BIN] [--mb 64] [--runs 2] [--only vswitch,bridge,passt]
"""
import argparse
import glob
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CACHE = "/var/cache/vswitch-test"
MODULES = [
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
]


def sh(cmd, check=True):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"`{cmd}` failed: {r.stdout}{r.stderr}")
    return r.stdout


def kernel():
    """vmlinuz and the modules' directory, from the package tests/vms.rs extracts."""
    trees = [t for t in glob.glob(f"{CACHE}/linux-image-*.d") if os.path.exists(f"{t}/ok")]
    if not trees:
        sys.exit(f"no extracted kernel in {CACHE}: run the VM test once (tests/vms.rs)")
    t = trees[0]
    return glob.glob(f"{t}/boot/vmlinuz-*")[0], t


def newc(entries):
    out = bytearray()
    for i, (name, mode, rdev, data) in enumerate(entries + [("TRAILER!!!", 0, (0, 0), b"")]):
        fields = [i + 1, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        out += b"070701" + b"".join(b"%08x" % f for f in fields) + name.encode() + b"\0"
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def initramfs(tree, path):
    rd = lambda p: open(p, "rb").read()
    e = [(d, 0o040755, (0, 0), b"") for d in ["bin", "dev", "etc", "mods", "proc", "sys", "tmp"]]
    e.append(("dev/console", 0o020600, (5, 1), b""))
    e.append(("bin/busybox", 0o100755, (0, 0), rd("/bin/busybox")))
    e.append(("init", 0o100755, (0, 0), rd(f"{HERE}/init.sh")))
    e.append(("dhcp.sh", 0o100755, (0, 0), rd(f"{ROOT}/tests/vms/dhcp.sh")))
    for m in MODULES:
        f = glob.glob(f"{tree}/lib/modules/*/kernel/{m}")[0]
        e.append((f"mods/{os.path.basename(m)}", 0o100755, (0, 0), rd(f)))
    open(path, "wb").write(newc(e))


class Vm:
    def __init__(self, tmp, tag, net, mac, extra="", enter=""):
        self.console = f"{tmp}/console-{tag}.log"
        vmlinuz, _ = kernel()
        cmd = (
            f"exec {enter}qemu-system-x86_64 -machine pc,accel=tcg -m 512 -smp 1 -nodefaults "
            f"-display none -no-reboot -kernel {vmlinuz} -initrd {tmp}/initrd.cpio "
            f"-append 'console=ttyS0 quiet panic=-1 VMX_MB={ARGS.mb} {extra}' "
            f"-serial file:{self.console} {net} -device virtio-net-pci,netdev=n0,mac={mac}"
        )
        self.p = subprocess.Popen(cmd, shell=True, start_new_session=True)

    def ready(self):
        for _ in range(240):
            try:
                m = re.search(r"VMX ready ([0-9.]+)", open(self.console).read())
            except FileNotFoundError:
                m = None
            if m:
                return m.group(1).split("/")[0]
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the VM never got ready: {open(self.console).read()[-2000:]}")

    def stop(self):
        os.killpg(self.p.pid, 9)
        self.p.wait()


def measure(peer_ns, host, get_port, push_port):
    """Medians of ARGS.runs transfers each way, Mbit/s."""
    def run(a):
        r = subprocess.run(f"ip netns exec {peer_ns} python3 {HERE}/peer.py {a}",
                           shell=True, capture_output=True, text=True)
        return float(r.stdout.split()[2]) if r.returncode == 0 else None
    down, up = [], []
    for _ in range(ARGS.runs):
        down.append(run(f"get {host} {get_port}"))
        up.append(run(f"push {host} {push_port} {ARGS.mb << 20}"))
    # A transfer that stalled (120 s without progress) is shown as such.
    med = lambda v: statistics.median(v) if None not in v else None
    return med(down), med(up)


def setup_vswitch(tmp):
    for ns in ["vmx-b1h", "vmx-b1c"]:
        sh(f"ip netns add {ns} && ip -n {ns} link set lo up")
    d = subprocess.Popen(
        f"exec ip netns exec vmx-b1h {ARGS.vswitch} daemon --socket {tmp}/ctl.sock --state-dir {tmp}/state 2>{tmp}/daemon.log",
        shell=True, start_new_session=True)
    ctl = lambda a: sh(f"{ARGS.vswitch} ctl --socket {tmp}/ctl.sock {a}")
    for _ in range(100):
        if os.path.exists(f"{tmp}/ctl.sock"):
            break
        time.sleep(0.1)
    time.sleep(0.3)
    ctl("network create vmxb --subnet 10.77.1.0/24")
    ctl("attach vmxb --name c1 --netns /run/netns/vmx-b1c")
    ctl(f"attach vmxb --name vm1 --vm-socket {tmp}/vm.sock --mac 02:00:00:77:01:03")
    vm = Vm(tmp, "vswitch", f"-netdev stream,id=n0,server=off,addr.type=unix,addr.path={tmp}/vm.sock", "02:00:00:77:01:03")
    ip = vm.ready()
    try:
        return measure("vmx-b1c", ip, 8080, 9000)
    finally:
        vm.stop()
        os.killpg(d.pid, 9)
        d.wait()


def setup_bridge(tmp):
    sh("ip netns add vmx-b2 && ip netns add vmx-b2c && ip -n vmx-b2 link set lo up && ip -n vmx-b2c link set lo up")
    sh("ip -n vmx-b2 link add br0 type bridge && ip -n vmx-b2 link set br0 up")
    sh("ip -n vmx-b2 tuntap add vmxtap0 mode tap && ip -n vmx-b2 link set vmxtap0 master br0 up")
    sh("ip -n vmx-b2 link add vmxv0 type veth peer name eth0 netns vmx-b2c")
    sh("ip -n vmx-b2 link set vmxv0 master br0 up && ip -n vmx-b2c addr add 10.77.2.2/24 dev eth0 && ip -n vmx-b2c link set eth0 up")
    net = "-netdev tap,id=n0,ifname=vmxtap0,script=no,downscript=no,vhost=off"
    vm = Vm(tmp, "bridge", net, "02:00:00:77:02:03", "VMX_IP=10.77.2.3/24", "ip netns exec vmx-b2 ")
    ip = vm.ready()
    try:
        return measure("vmx-b2c", ip, 8080, 9000)
    finally:
        vm.stop()


def setup_passt(tmp):
    sh("ip netns add vmx-b3 && ip -n vmx-b3 link set lo up")
    # passt binds its socket after becoming nobody: a directory it may write in.
    os.chmod(tmp, 0o755)
    os.makedirs(f"{tmp}/passt", exist_ok=True)
    os.chmod(f"{tmp}/passt", 0o1777)
    # The interface passt copies its addresses and routes from (a veth pair: no dummy
    # module everywhere).
    sh("ip -n vmx-b3 link add vmxd0 type veth peer name vmxd1 && ip -n vmx-b3 addr add 10.77.3.1/24 dev vmxd0")
    sh("ip -n vmx-b3 link set vmxd0 up && ip -n vmx-b3 link set vmxd1 up")
    sh("ip -n vmx-b3 route add default via 10.77.3.254")
    p = subprocess.Popen(
        # nsenter, not `ip netns exec`: under the mount namespace ip makes, the socket
        # passt reports bound never shows in the filesystem.
        f"exec nsenter --net=/run/netns/vmx-b3 passt -f -q -s {tmp}/passt/passt.sock -t 8080,9000 -u none 2>{tmp}/passt.log",
        shell=True, start_new_session=True)
    for _ in range(100):
        if os.path.exists(f"{tmp}/passt/passt.sock"):
            break
        time.sleep(0.1)
    else:
        os.killpg(p.pid, 9)
        raise RuntimeError(f"passt did not create {tmp}/passt/passt.sock: {open(f'{tmp}/passt.log').read()[-300:]}")
    vm = Vm(tmp, "passt", f"-netdev stream,id=n0,server=off,addr.type=unix,addr.path={tmp}/passt/passt.sock", "02:00:00:77:03:03")
    vm.ready()
    try:
        return measure("vmx-b3", "127.0.0.1", 8080, 9000)
    finally:
        vm.stop()
        os.killpg(p.pid, 9)
        p.wait()


def cleanup():
    for ns in ["vmx-b1h", "vmx-b1c", "vmx-b2", "vmx-b2c", "vmx-b3"]:
        sh(f"ip netns delete {ns}", check=False)


def main():
    global ARGS
    a = argparse.ArgumentParser()
    a.add_argument("--vswitch", default=f"{ROOT}/target/release/vswitch")
    a.add_argument("--mb", type=int, default=64)
    a.add_argument("--runs", type=int, default=2)
    a.add_argument("--only", default="vswitch,bridge,passt")
    ARGS = a.parse_args()
    _, tree = kernel()
    cpu = re.search(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read()).group(1)
    print(f"CPU: {cpu} ({os.cpu_count()} cores); kernel {os.uname().release}; "
          f"QEMU TCG, 1 vCPU; {ARGS.mb} MiB per transfer, median of {ARGS.runs}")
    print("| setup | VM -> peer (Mbit/s) | peer -> VM (Mbit/s) |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="vmx-bench-") as tmp:
        initramfs(tree, f"{tmp}/initrd.cpio")
        for name in ARGS.only.split(","):
            cleanup()
            try:
                down, up = {"vswitch": setup_vswitch, "bridge": setup_bridge, "passt": setup_passt}[name](tmp)
                cell = lambda v: "stalled" if v is None else f"{v:.0f}"
                print(f"| {name} | {cell(down)} | {cell(up)} |", flush=True)
            except (RuntimeError, SystemExit) as e:
                print(f"| {name} | failed: {str(e)[-300:]!r} | |", flush=True)
            finally:
                cleanup()


if __name__ == "__main__":
    main()
