//! VMs on vswitch: a VM's QEMU attaches through a Unix stream socket (`ctl attach
//! --vm-socket`, QEMU's `-netdev stream`). First a client speaking QEMU's framing (no VM
//! needed): a lease, a name resolved, a container pinged; a peer sending an over-long
//! length or garbage cut off and counted while the port serves the next one; a
//! reconnection keeping port and address. Then a real VM: Debian 12's QEMU (TCG)
//! booting Debian's kernel with a busybox initramfs, on a dual-stack network (IPv4 by
//! DHCP, IPv6 by SLAAC).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "common/busybox.rs"]
mod busybox;
mod common;

use common::*;
use std::time::Duration;

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/vms/stream_client.py");

/// A daemon, a network and a container on it (`c1`, pinged by name).
struct Lab {
    d: Daemon,
    c: Netns,
    dir: TempDir,
}

fn lab() -> Lab {
    require(&["python3", "ping"]);
    let d = Daemon::start(&[]);
    d.ctl_ok(&["network", "create", "vmnet", "--subnet", "10.231.7.0/24"]);
    let c = Netns::new("vmx-c1");
    d.ctl_ok(&["attach", "vmnet", "--name", "c1", "--netns", &c.path()]);
    Lab {
        d,
        c,
        dir: TempDir::new("vmx-sock"),
    }
}

/// Runs the stream client against `sock` as `mac`; returns its output lines.
fn client(sock: &str, mac: &str) -> String {
    let out = Proc::spawn(&format!("exec /usr/bin/python3 {CLIENT} {sock} {mac} c1"))
        .wait(Duration::from_secs(60));
    assert!(
        out.status.success(),
        "the stream client failed: {}{}",
        out.stdout_text(),
        out.stderr_text()
    );
    out.stdout_text()
}

/// The port's entry in `stats`.
fn port_stats(d: &Daemon, name: &str) -> serde_json::Value {
    let s = d.ctl_json(&["stats"]);
    let ports = s["ports"].as_array().cloned().unwrap_or_default();
    ports
        .into_iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no port {name} in stats: {s}"))
}

/// Writes `bytes` to the socket as a misbehaving peer would; true when the switch
/// closed the connection afterwards.
fn cut_off_after(sock: &str, bytes: &[u8]) -> bool {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(bytes).expect("write");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).is_ok()
}

#[test]
#[ignore = "needs root, namespaces, python3 with scapy: `bash scripts/test` runs it"]
fn a_stream_client_leases_resolves_pings_and_is_cut_off_for_garbage() {
    let l = lab();
    let sock = l.dir.path().join("vm1.sock").display().to_string();
    let mac = "02:00:00:0a:77:01";
    let att = l.d.ctl_json(&[
        "attach",
        "vmnet",
        "--name",
        "vm1",
        "--vm-socket",
        &sock,
        "--mac",
        mac,
    ]);
    let ip = att["ip"].as_str().expect("an address").to_string();
    let c1 =
        l.c.must("ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1");
    let out = client(&sock, mac);
    assert!(
        out.contains(&format!("lease {ip} router 10.231.7.1")),
        "{out}"
    );
    assert!(out.contains(&format!("resolved c1 {}", c1.trim())), "{out}");
    assert!(out.contains(&format!("pong {}", c1.trim())), "{out}");
    let s = port_stats(&l.d, "vm1");
    assert!(s["rx_packets"].as_u64().unwrap_or(0) >= 4, "{s}");
    assert_eq!(s["peer"]["cut_off"], 0, "{s}");

    // An over-long length, then bytes that are no frame: each peer is cut off.
    let mut long = (70_000u32).to_be_bytes().to_vec();
    long.extend_from_slice(&[0u8; 64]);
    assert!(
        cut_off_after(&sock, &long),
        "an over-long length is cut off"
    );
    assert!(
        cut_off_after(&sock, b"GET / HTTP/1.0\r\n\r\n"),
        "garbage is cut off"
    );
    let s = port_stats(&l.d, "vm1");
    assert_eq!(s["peer"]["cut_off"], 2, "{s}");
    // Nothing else disturbed: the container still reaches its gateway, and the next
    // peer (the VM reconnecting) gets the same port and address and reaches c1.
    l.c.must("ping -c 1 -W 2 10.231.7.1");
    let out = client(&sock, mac);
    assert!(out.contains(&format!("lease {ip} ")), "{out}");
    assert!(out.contains("pong "), "{out}");
    let s = port_stats(&l.d, "vm1");
    assert_eq!(s["peer"]["connects"], 4, "{s}");
    let ports = l.d.ctl_json(&["port", "ls"]);
    let row = ports
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "vm1").cloned())
        .unwrap_or_default();
    assert_eq!(row["kind"], "vm", "{ports}");
    assert_eq!(row["ip"], ip.as_str(), "{ports}");

    // Detached: the socket file goes with the port.
    l.d.ctl_ok(&["detach", "vm1"]);
    assert!(
        !std::path::Path::new(&sock).exists(),
        "the socket is removed"
    );
}

#[test]
#[ignore = "needs root: `bash scripts/test` runs it"]
fn vm_socket_attach_refusals_are_one_line() {
    let l = lab();
    let file = l.dir.path().join("not-a-socket");
    std::fs::write(&file, b"x").expect("write");
    let f = file.display().to_string();
    let e =
        l.d.ctl_err(&["attach", "vmnet", "--name", "v", "--vm-socket", &f]);
    assert!(e.contains("is not a socket"), "{e}");
    assert!(file.exists(), "a file that is not a socket is left alone");
    let e =
        l.d.ctl_err(&["attach", "vmnet", "--name", "v", "--vm-socket", "rel.sock"]);
    assert!(e.contains("absolute path"), "{e}");
    let e = l.d.ctl_err(&[
        "attach",
        "vmnet",
        "--name",
        "v",
        "--vm-socket",
        "/x.sock",
        "--tap",
        "t0",
    ]);
    assert!(e.contains("cannot be used with"), "{e}");
    l.d.ctl_ok(&["network", "create", "jumbo", "--mtu", "40000"]);
    let sock = l.dir.path().join("j.sock").display().to_string();
    let e =
        l.d.ctl_err(&["attach", "jumbo", "--name", "v", "--vm-socket", &sock]);
    assert!(e.contains("MTU 40000"), "{e}");
    // One socket, one port: a VM joins no second network.
    let sock = l.dir.path().join("v2.sock").display().to_string();
    l.d.ctl_ok(&["attach", "vmnet", "--name", "v2", "--vm-socket", &sock]);
    let e = l.d.ctl_err(&["connect", "jumbo", "v2"]);
    assert!(e.contains("VM socket"), "{e}");
}

/// Where scripts/test keeps Debian's kernel package (`apt-get download`).
const KERNEL_CACHE: &str = "/var/cache/vswitch-test";
/// The modules virtio-net needs, in load order (Debian builds them as modules).
const MODULES: [&str; 8] = [
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
];

/// Debian's kernel image package in the cache, extracted once beside it (vmlinuz and
/// the virtio modules); returns the extracted tree.
fn debian_kernel() -> std::path::PathBuf {
    let deb = std::fs::read_dir(KERNEL_CACHE)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.starts_with("linux-image-") && !n.starts_with("linux-image-amd64") && n.ends_with(".deb")
        })
        .unwrap_or_else(|| {
            panic!("no Debian kernel package in {KERNEL_CACHE}: `bash scripts/test` downloads it (apt-get download linux-image-amd64's image)")
        });
    let tree = deb.with_extension("d");
    if !tree.join("ok").exists() {
        let tmp = deb.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).expect("mkdir");
        must(&format!(
            "dpkg-deb --fsys-tarfile {} | tar -x -C {} --wildcards './boot/vmlinuz-*' {}",
            deb.display(),
            tmp.display(),
            MODULES.map(|m| format!("'*/kernel/{m}'")).join(" ")
        ));
        std::fs::write(tmp.join("ok"), b"").expect("write");
        let _ = std::fs::remove_dir_all(&tree);
        std::fs::rename(&tmp, &tree).expect("rename");
    }
    tree
}

/// One file's path inside `tree` whose name ends with `tail`.
fn find(tree: &std::path::Path, tail: &str) -> std::path::PathBuf {
    let out = must(&format!(
        "find {} -path '*{tail}*' | head -1",
        tree.display()
    ));
    let p = out.trim();
    assert!(!p.is_empty(), "{tail} not found in {}", tree.display());
    p.into()
}

/// A cpio archive in the kernel's "newc" format.
#[derive(Default)]
struct Cpio(Vec<u8>);

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let ino = self.0.len() as u32 + 1;
        let fields = [
            ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
        ];
        let mut h = String::from("070701");
        for f in fields {
            h.push_str(&format!("{f:08x}"));
        }
        h.push_str(&format!("{:08x}{:08x}", name.len() + 1, 0));
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(name.as_bytes());
        self.0.push(0);
        self.pad();
        self.0.extend_from_slice(data);
        self.pad();
    }
    fn pad(&mut self) {
        while self.0.len() % 4 != 0 {
            self.0.push(0);
        }
    }
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }
    fn file(&mut self, name: &str, data: &[u8]) {
        self.entry(name, 0o100755, (0, 0), data);
    }
    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.0
    }
}

/// The test VM's initramfs: static busybox, the virtio modules, /init and its DHCP script.
fn initramfs(tree: &std::path::Path) -> Vec<u8> {
    let read =
        |p: &std::path::Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let here = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/vms");
    let mut c = Cpio::default();
    for d in ["bin", "dev", "etc", "mods", "proc", "sys", "tmp", "www"] {
        c.dir(d);
    }
    c.entry("dev/console", 0o020600, (5, 1), &[]);
    c.file(
        "bin/busybox",
        &read(std::path::Path::new(busybox::static_busybox())),
    );
    c.file("init", &read(&std::path::Path::new(here).join("init.sh")));
    c.file(
        "dhcp.sh",
        &read(&std::path::Path::new(here).join("dhcp.sh")),
    );
    for m in MODULES {
        let name = m.rsplit('/').next().unwrap_or(m);
        c.file(&format!("mods/{name}"), &read(&find(tree, m)));
    }
    c.finish()
}

/// A QEMU process running the test VM on `sock`, its serial console in `console`.
struct Vm {
    proc: Option<Proc>,
    console: std::path::PathBuf,
}

impl Vm {
    fn boot(dir: &TempDir, n: u32, sock: &str, mac: &str, peer: &str) -> Vm {
        let tree = debian_kernel();
        let initrd = dir.path().join("initrd.cpio");
        if !initrd.exists() {
            std::fs::write(&initrd, initramfs(&tree)).expect("write initrd");
        }
        let console = dir.path().join(format!("console{n}.log"));
        let cmd = format!(
            "exec qemu-system-x86_64 -machine pc,accel=tcg -m 256 -smp 1 -nodefaults \
             -display none -no-reboot -kernel {} -initrd {} \
             -append 'console=ttyS0 quiet panic=-1 VMX_PEER={peer}' \
             -serial file:{} \
             -netdev stream,id=n0,server=off,addr.type=unix,addr.path={sock} \
             -device virtio-net-pci,netdev=n0,mac={mac}",
            find(&tree, "boot/vmlinuz-").display(),
            initrd.display(),
            console.display()
        );
        Vm {
            proc: Some(Proc::spawn(&cmd)),
            console,
        }
    }

    fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// Waits for the console line starting with "VMX {what}"; returns the rest of it.
    fn wait_for(&self, what: &str, timeout: Duration) -> String {
        let want = format!("VMX {what}");
        let mut line = None;
        eventually(timeout, || {
            line = self
                .console()
                .lines()
                .find(|l| l.starts_with(&want))
                .map(|l| l.trim_start_matches(&want).trim().to_string());
            line.is_some()
        });
        line.unwrap_or_else(|| {
            panic!(
                "the VM never said {want:?}; its console:\n{}",
                self.console()
            )
        })
    }

    /// Powers the VM off (QEMU killed, as a power cut would).
    fn kill(&mut self) {
        drop(self.proc.take());
    }
}

/// The host's side: a namespace standing for the host, where the daemon runs and where
/// published ports are reached.
fn vm_lab() -> (Netns, Daemon, Netns, TempDir) {
    require(&["qemu-system-x86_64", "dpkg-deb", "busybox"]);
    let host = Netns::new("vmx-host");
    let d = Daemon::start_in(&host, &[]);
    d.ctl_ok(&[
        "network",
        "create",
        "vmnet",
        "--subnet",
        "10.231.8.0/24",
        "--ipv6",
        "--subnet",
        "fd00:231:8::/64",
    ]);
    let c = Netns::new("vmx-c1");
    d.ctl_ok(&["attach", "vmnet", "--name", "c1", "--netns", &c.path()]);
    (host, d, c, TempDir::new("vmx-vm"))
}

#[test]
#[ignore = "needs root, qemu-system-x86 and Debian's kernel package: `bash scripts/test` runs it"]
fn a_qemu_vm_leases_resolves_exchanges_files_is_published_and_restarts_on_its_port() {
    let (host, d, c, dir) = vm_lab();
    let sock = dir.path().join("vm.sock").display().to_string();
    let att = d.ctl_json(&[
        "attach",
        "vmnet",
        "--name",
        "vm1",
        "--vm-socket",
        &sock,
        "-p",
        "18080:8080",
    ]);
    let (ip, mac) = (
        att["ip"].as_str().unwrap_or(""),
        att["mac"].as_str().unwrap_or(""),
    );
    // The container's file, served to the VM.
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).expect("mkdir");
    must(&format!(
        "head -c 1048576 /dev/urandom > {}/g",
        www.display()
    ));
    let g = sha256(&must(&format!("sha256sum {}/g", www.display())));
    let _httpd = c.spawn(&format!(
        "exec busybox httpd -f -p 8081 -h {}",
        www.display()
    ));
    listening(&c, 8081);

    let mut vm = Vm::boot(&dir, 1, &sock, mac, "c1");
    let boot = Duration::from_secs(240);
    let lease = vm.wait_for("lease", boot);
    assert!(
        lease.starts_with(&format!("{ip}/24 mac {mac}")),
        "{lease}\n{}",
        vm.console()
    );
    let c1 = c.must("ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1");
    assert_eq!(vm.wait_for("resolved c1", boot), c1.trim());
    vm.wait_for("ping ok c1", boot);
    // IPv6: the VM's kernel forms IPAM's address by SLAAC (port security lets it
    // send from it), resolves the container's AAAA and pings it.
    let ip6 = att["ip6"].as_str().unwrap_or("");
    let slaac = vm.wait_for("slaac", boot);
    assert_eq!(slaac, format!("{ip6}/64"), "{}", vm.console());
    let c1v6 = c.must("ip -6 -o addr show eth0 scope global | awk '{print $4}' | cut -d/ -f1");
    assert_eq!(vm.wait_for("resolved6 c1", boot), c1v6.trim());
    vm.wait_for("ping6 ok", boot);
    let f = vm.wait_for("sha", boot);
    vm.wait_for("serving", boot);
    // Container -> VM, and the host -> the VM's published port.
    let got = sha256(&c.must(&format!(
        "busybox wget -q -O - http://{ip}:8080/f | sha256sum"
    )));
    assert_eq!(got, f, "the container fetched the VM's file whole");
    let got = sha256(&host.must("busybox wget -q -O - http://127.0.0.1:18080/f | sha256sum"));
    assert_eq!(got, f, "the published port reached the VM's server");
    // VM -> container.
    assert_eq!(
        vm.wait_for("got", boot),
        g,
        "the VM fetched the container's file whole"
    );
    vm.wait_for("done", boot);

    // Power cut, and the VM starts again: its QEMU reconnects to the same port.
    vm.kill();
    let vm2 = Vm::boot(&dir, 2, &sock, mac, "c1");
    let lease = vm2.wait_for("lease", boot);
    assert!(
        lease.starts_with(&format!("{ip}/24 ")),
        "the same address: {lease}"
    );
    vm2.wait_for("ping ok c1", boot);
    let f2 = vm2.wait_for("sha", boot);
    vm2.wait_for("serving", boot);
    let got = sha256(&host.must("busybox wget -q -O - http://127.0.0.1:18080/f | sha256sum"));
    assert_eq!(
        got, f2,
        "the published port follows the VM across the restart"
    );
    let s = port_stats(&d, "vm1");
    assert_eq!(s["peer"]["connects"], 2, "{s}");
    assert_eq!(s["peer"]["cut_off"], 0, "{s}");
}
