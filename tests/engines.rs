//! Container engines drive vswitch through its CNI plugin: podman 4 (CNI backend) runs
//! containers on a vswitch network, they resolve and reach each other by name, `-p`
//! publishes through vswitch, `podman rm -f` leaves nothing behind; the plugin's DEL is
//! idempotent, GC removes what the runtime no longer lists, and the reference `tuning`
//! plugin chained after it gets a correct `prevResult`. On a dual-stack network the
//! result carries both families and podman's containers reach each other by name over
//! IPv6; netavark drives the netavark plugin the same way for both families.

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/busybox.rs"]
mod busybox;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

fn cni_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vswitch-cni")
}

/// The reference plugins (Debian's containernetworking-plugins).
const CNI_PLUGINS: &str = "/usr/lib/cni";

/// A podman with its own storage, configuration and one vswitch CNI network.
struct Podman {
    dir: TempDir,
    net: String,
    names: Vec<String>,
}

impl Podman {
    /// A podman whose network `net` is the vswitch CNI plugin on daemon `d`, followed by
    /// `chain` (more plugin objects, JSON).
    fn new(d: &Daemon, subnet: &str, chain: &str) -> Podman {
        Podman::with(d, &format!(r#""subnet":"{subnet}""#), chain)
    }

    /// As [`Podman::new`], the plugin's network keys given as JSON (`"subnet":[...]`).
    fn with(d: &Daemon, keys: &str, chain: &str) -> Podman {
        require(&["podman", "runc", "curl"]);
        assert!(
            Path::new(&format!("{CNI_PLUGINS}/tuning")).exists(),
            "this test needs the reference CNI plugins in {CNI_PLUGINS}: run `bash scripts/test`, which installs containernetworking-plugins"
        );
        let dir = TempDir::new("podman");
        let net = unique("net");
        let p = dir.path();
        for sub in [
            "net",
            "plugins",
            "root",
            "runroot",
            "rootfs/bin",
            "rootfs/tmp",
            "rootfs/etc",
        ] {
            std::fs::create_dir_all(p.join(sub)).expect("podman dirs");
        }
        std::os::unix::fs::symlink(cni_bin(), p.join("plugins/vswitch-cni")).expect("link");
        busybox::rootfs(&p.join("rootfs"));
        let conflist = format!(
            r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[{{"type":"vswitch-cni","socket":"{}",{keys},"capabilities":{{"portMappings":true,"aliases":true,"ips":true,"mac":true}}}}{chain}]}}"#,
            d.socket().display()
        );
        std::fs::write(p.join(format!("net/{net}.conflist")), conflist).expect("conflist");
        let conf = format!(
            "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"{CNI_PLUGINS}\"]\nnetwork_config_dir = \"{}\"\n\n[engine]\nenable_port_reservation = false\n",
            p.join("plugins").display(),
            p.join("net").display()
        );
        std::fs::write(p.join("containers.conf"), conf).expect("containers.conf");
        Podman {
            dir,
            net,
            names: Vec::new(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Output {
        let p = self.dir.path();
        Command::new("podman")
            .env("CONTAINERS_CONF", p.join("containers.conf"))
            .arg("--root")
            .arg(p.join("root"))
            .arg("--runroot")
            .arg(p.join("runroot"))
            .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run podman")
    }

    /// `podman run` on the vswitch network; `extra` goes before the rootfs.
    fn run(&mut self, name: &str, extra: &[&str], script: &str) -> Output {
        self.names.push(name.to_string());
        let rootfs = self.dir.path().join("rootfs");
        let mut args = vec![
            "run",
            "--ulimit",
            "nofile=20000:20000",
            "--ulimit",
            "nproc=1000:1000",
            "--network",
            &self.net,
            "--name",
            name,
        ];
        args.extend_from_slice(extra);
        let rootfs = rootfs.to_string_lossy().to_string();
        args.extend_from_slice(&["--rootfs", &rootfs, "/bin/sh", "-c", script]);
        self.cmd(&args)
    }

    fn rm(&self, name: &str) {
        let o = self.cmd(&["rm", "-f", "-t", "0", name]);
        assert!(o.status.success(), "podman rm: {}", o.stderr_text());
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = self.cmd(&["rm", "-f", "-t", "0", n]);
        }
    }
}

fn ports(d: &Daemon) -> serde_json::Value {
    d.ctl_json(&["port", "ls"])
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn podman_containers_reach_each_other_by_name_and_publish_through_vswitch() {
    let d = Daemon::start(&[]);
    let mut pm = Podman::new(&d, "10.211.0.0/24", "");
    let srv = unique("srv");
    let o = pm.run(
        &srv,
        &["-d", "-p", "18611:80"],
        "echo hello-from-srv > /tmp/index.html; dd if=/dev/zero of=/tmp/big bs=1048576 count=20; httpd -f -p 80 -h /tmp",
    );
    assert!(o.status.success(), "podman run: {}", o.stderr_text());
    let listed = ports(&d);
    assert!(
        listed
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["container"] == srv.as_str())),
        "{listed}"
    );
    // Published by vswitch itself: curl from the host's loopback.
    let got = retry_curl("http://127.0.0.1:18611/index.html");
    assert_eq!(got.trim(), "hello-from-srv");
    // A second container finds the first by name and streams 20 MiB of TCP from it.
    let cli = unique("cli");
    let o = pm.run(
        &cli,
        &["--rm"],
        &format!(
            "ping -c 1 -W 2 {srv} && wget -qO- http://{srv}/index.html && wget -qO- http://{srv}/big | wc -c"
        ),
    );
    assert!(
        o.status.success(),
        "client: {}{}",
        o.stdout_text(),
        o.stderr_text()
    );
    assert!(
        o.stdout_text().contains("hello-from-srv"),
        "{}",
        o.stdout_text()
    );
    assert!(
        o.stdout_text().lines().any(|l| l.trim() == "20971520"),
        "the 20 MiB stream arrived short: {}",
        o.stdout_text()
    );
    // rm -f: no port, no address, no published port left.
    pm.rm(&srv);
    assert_eq!(ports(&d), serde_json::json!([]));
    let inspect = d.ctl_json(&["network", "inspect", &pm.net]);
    assert_eq!(inspect[0]["Containers"], serde_json::json!({}), "{inspect}");
    assert!(!sh("curl -s -m 2 http://127.0.0.1:18611/").status.success());
}

/// podman 4 on a dual-stack network (the conflist's subnets of both families): `--ip6`
/// is the container's IPv6 address on eth0 and in `podman inspect` (the plugin's
/// result), and a second container reaches the first by name over IPv6: ping by name
/// (the AAAA the gateway answers) and HTTP to the address of that AAAA.
#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn podman_dual_stack_containers_reach_each_other_by_name_over_ipv6() {
    let d = Daemon::start(&[]);
    let keys = r#""subnet":["10.216.0.0/24","fd00:216::/64"]"#;
    let mut pm = Podman::with(&d, keys, "");
    let srv = unique("srv6");
    let o = pm.run(
        &srv,
        &["-d", "--ip6", "fd00:216::80"],
        "echo hello-over-ipv6 > /tmp/index.html; httpd -f -p [::]:80 -h /tmp",
    );
    assert!(o.status.success(), "podman run: {}", o.stderr_text());
    let addr = pm.cmd(&["exec", &srv, "ip", "-6", "addr", "show", "dev", "eth0"]);
    assert!(
        addr.stdout_text().contains("inet6 fd00:216::80/64"),
        "{}{}",
        addr.stdout_text(),
        addr.stderr_text()
    );
    let fmt = format!(
        "{{{{.NetworkSettings.Networks.{}.GlobalIPv6Address}}}}",
        pm.net
    );
    let inspected = pm.cmd(&["inspect", "--format", &fmt, &srv]);
    assert_eq!(inspected.stdout_text().trim(), "fd00:216::80");
    let net = d.ctl_json(&["network", "inspect", &pm.net]);
    assert_eq!(net[0]["EnableIPv6"], true, "{net}");
    // The client: its own IPAM address on eth0, then the server by name over IPv6.
    let cli = unique("cli6");
    let script = format!(
        "ip -6 addr show dev eth0 scope global; ping -6 -c 1 -W 2 {srv} || exit 1; \
         nslookup -type=aaaa {srv} | while read k v; do case $v in fd00:*) echo aaaa $v;; esac; done > /tmp/aaaa; \
         while read k v; do timeout 5 wget -qO- http://[$v]/index.html; done < /tmp/aaaa"
    );
    let o = pm.run(&cli, &["--rm"], &script);
    let out = o.stdout_text();
    assert!(o.status.success(), "client: {out}{}", o.stderr_text());
    assert!(out.contains("inet6 fd00:216::"), "{out}");
    assert!(out.contains("from fd00:216::80"), "ping6 by name: {out}");
    assert!(out.contains("hello-over-ipv6"), "HTTP over the AAAA: {out}");
    pm.rm(&srv);
    assert_eq!(ports(&d), serde_json::json!([]));
}

fn retry_curl(url: &str) -> String {
    let mut last = String::new();
    for _ in 0..20 {
        let o = sh(&format!("curl -s -m 2 {url}"));
        if o.status.success() {
            return o.stdout_text();
        }
        last = o.stderr_text();
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("{url} never answered: {last}");
}

/// Runs a CNI plugin binary as a runtime would.
fn plugin(bin: &str, cmd: &str, env: &[(&str, &str)], conf: &str) -> Output {
    use std::io::Write;
    let mut c = Command::new(bin)
        .env("CNI_COMMAND", cmd)
        .env("CNI_PATH", CNI_PLUGINS)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    if let Some(mut i) = c.stdin.take() {
        let _ = i.write_all(conf.as_bytes());
    }
    c.wait_with_output().expect("plugin output")
}

fn conf(d: &Daemon, net: &str, subnet: &str) -> String {
    format!(
        r#"{{"cniVersion":"1.1.0","name":"{net}","type":"vswitch-cni","socket":"{}","subnet":"{subnet}"}}"#,
        d.socket().display()
    )
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn del_is_idempotent_and_gc_removes_stale_attachments() {
    let d = Daemon::start(&[]);
    let net = unique("n");
    let cfg = conf(&d, &net, "10.212.0.0/24");
    let mut spaces = Vec::new();
    for id in ["aaaa1111", "bbbb2222"] {
        let ns = Netns::new("cni");
        let env = [
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", &ns.path()),
            ("CNI_IFNAME", "eth0"),
        ];
        let o = plugin(cni_bin(), "ADD", &env, &cfg);
        assert!(o.status.success(), "ADD: {}", o.stdout_text());
        spaces.push(ns);
    }
    assert_eq!(ports(&d).as_array().map(Vec::len), Some(2));
    // DEL twice, and DEL after the namespace is gone: success each time.
    let gone = spaces.remove(0);
    let path = gone.path();
    drop(gone);
    let env = [
        ("CNI_CONTAINERID", "aaaa1111"),
        ("CNI_NETNS", path.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    for _ in 0..2 {
        let o = plugin(cni_bin(), "DEL", &env, &cfg);
        assert!(o.status.success(), "DEL: {}", o.stdout_text());
    }
    assert_eq!(ports(&d).as_array().map(Vec::len), Some(1));
    // GC with an empty list of valid attachments removes the other one.
    let gc = cfg.replacen(
        "\"type\"",
        "\"cni.dev/valid-attachments\":[{\"containerID\":\"zzzz\",\"ifname\":\"eth0\"}],\"type\"",
        1,
    );
    let o = plugin(cni_bin(), "GC", &[], &gc);
    assert!(o.status.success(), "GC: {}", o.stdout_text());
    assert_eq!(ports(&d), serde_json::json!([]));
    // Containers attached otherwise are never touched by DEL or GC.
    let other = Netns::new("own");
    d.ctl_ok(&["attach", &net, "--name", "mine", "--netns", &other.path()]);
    let o = plugin(cni_bin(), "GC", &[], &gc);
    assert!(o.status.success());
    assert_eq!(ports(&d).as_array().map(Vec::len), Some(1));
}

/// An IPv6-only network from the configuration (`ipv6`, `ipv4: false`), driven as
/// containerd and CRI-O drive the plugin: the `ips` capability's IPv6 address is the
/// container's, on eth0 and in the result, with the IPv6 default route and nameserver
/// and no IPv4 anywhere; the result's gateway answers ping6.
#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn an_ipv6_only_network_gets_the_asked_address_route_and_nameserver() {
    let d = Daemon::start(&[]);
    let net = unique("n6");
    let ns = Netns::new("cni6");
    let cfg = serde_json::json!({
        "cniVersion": "1.0.0", "name": net, "type": "vswitch-cni",
        "socket": d.socket().display().to_string(),
        "subnet": "fd00:217::/64", "ipv4": false,
        "runtimeConfig": {"ips": ["fd00:217::17/64"]},
    });
    let path = ns.path();
    let env = [
        ("CNI_CONTAINERID", "six00001"),
        ("CNI_NETNS", path.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let o = plugin(cni_bin(), "ADD", &env, &cfg.to_string());
    assert!(o.status.success(), "ADD: {}", o.stdout_text());
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("result");
    assert_eq!(
        r["ips"],
        serde_json::json!([{"address": "fd00:217::17/64", "gateway": "fd00:217::1", "interface": 0}]),
        "{r}"
    );
    assert_eq!(
        r["routes"],
        serde_json::json!([{"dst": "::/0", "gw": "fd00:217::1"}])
    );
    assert_eq!(r["dns"]["nameservers"], serde_json::json!(["fd00:217::1"]));
    assert!(
        ns.must("ip -6 addr show dev eth0")
            .contains("inet6 fd00:217::17/64")
    );
    assert!(!ns.must("ip -4 addr show dev eth0").contains("inet "));
    assert!(
        ns.must("ip -6 route show default")
            .contains("via fd00:217::1")
    );
    ns.must("ping -6 -c 1 -W 2 fd00:217::1");
    let o = plugin(cni_bin(), "DEL", &env, &cfg.to_string());
    assert!(o.status.success(), "DEL: {}", o.stdout_text());
    assert_eq!(ports(&d), serde_json::json!([]));
}

#[test]
fn errors_are_cni_error_objects_with_actionable_messages() {
    let dir = TempDir::new("nosock");
    let sock: PathBuf = dir.path().join("none.sock");
    let cfg = format!(
        r#"{{"cniVersion":"1.0.0","name":"x","type":"vswitch-cni","socket":"{}"}}"#,
        sock.display()
    );
    let env = [
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/proc/self/ns/net"),
        ("CNI_IFNAME", "eth0"),
    ];
    let o = plugin(cni_bin(), "ADD", &env, &cfg);
    assert!(!o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("error object");
    assert_eq!(v["code"], 11);
    assert!(
        v["msg"]
            .as_str()
            .is_some_and(|m| m.contains("start it with `vswitch daemon`")),
        "{v}"
    );
    let o = plugin(cni_bin(), "STATUS", &[], &cfg);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("error object");
    assert_eq!(v["code"], 50);
    let o = plugin(cni_bin(), "VERSION", &[], "");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("version");
    assert!(
        v["supportedVersions"]
            .as_array()
            .is_some_and(|a| a.len() >= 5)
    );
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn chained_tuning_gets_a_correct_prev_result() {
    require(&["ip"]);
    let tuning = format!("{CNI_PLUGINS}/tuning");
    assert!(
        Path::new(&tuning).exists(),
        "this test needs {tuning}: run `bash scripts/test`, which installs containernetworking-plugins"
    );
    let d = Daemon::start(&[]);
    let net = unique("n");
    let ns = Netns::new("tun");
    // Dual stack: the reference plugin reads a result with both families.
    let cfg = conf(&d, &net, "10.213.0.0/24").replace("\"subnet\"", "\"ipv6\":true,\"subnet\"");
    let path = ns.path();
    let env = [
        ("CNI_CONTAINERID", "tuned1"),
        ("CNI_NETNS", path.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let cfg = cfg.replace("1.1.0", "1.0.0");
    let o = plugin(cni_bin(), "ADD", &env, &cfg);
    assert!(o.status.success(), "ADD: {}", o.stdout_text());
    let prev: serde_json::Value = serde_json::from_slice(&o.stdout).expect("result");
    // As libcni chains: the next plugin's configuration carries the result.
    // Debian's reference plugins speak CNI up to 1.0.0: the chain is configured so.
    let cfg = cfg.replace("1.1.0", "1.0.0");
    let o = plugin(cni_bin(), "CHECK", &env, &cfg);
    assert!(o.status.success(), "CHECK: {}", o.stdout_text());
    let tcfg = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": net,
        "type": "tuning",
        "mtu": 1400,
        "sysctl": {"net.ipv4.conf.eth0.arp_ignore": "1"},
        "prevResult": prev,
    });
    let o = plugin(&tuning, "ADD", &env, &tcfg.to_string());
    assert!(
        o.status.success(),
        "tuning: {}{}",
        o.stdout_text(),
        o.stderr_text()
    );
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).expect("tuning result");
    assert_eq!(out["interfaces"][0]["mac"], prev["interfaces"][0]["mac"]);
    assert_eq!(out["ips"], prev["ips"]);
    assert_eq!(out["ips"].as_array().map(Vec::len), Some(2), "{out}");
    assert_eq!(out["routes"][1]["dst"], "::/0", "{out}");
    assert!(ns.must("ip link show eth0").contains("mtu 1400"));
    assert_eq!(
        ns.must("cat /proc/sys/net/ipv4/conf/eth0/arp_ignore")
            .trim(),
        "1"
    );
    let o = plugin(cni_bin(), "CHECK", &env, &cfg);
    assert!(o.status.success(), "CHECK: {}", o.stdout_text());
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn chained_bandwidth_passes_the_result_on_and_names_what_it_cannot_shape() {
    let bandwidth = format!("{CNI_PLUGINS}/bandwidth");
    assert!(
        Path::new(&bandwidth).exists(),
        "this test needs {bandwidth}: run `bash scripts/test`, which installs containernetworking-plugins"
    );
    let d = Daemon::start(&[]);
    let net = unique("n");
    let ns = Netns::new("bw");
    let cfg = conf(&d, &net, "10.214.0.0/24").replace("1.1.0", "1.0.0");
    let path = ns.path();
    let env = [
        ("CNI_CONTAINERID", "shaped1"),
        ("CNI_NETNS", path.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let o = plugin(cni_bin(), "ADD", &env, &cfg);
    assert!(o.status.success(), "ADD: {}", o.stdout_text());
    let prev: serde_json::Value = serde_json::from_slice(&o.stdout).expect("result");
    let mut bcfg = serde_json::json!({
        "cniVersion": "1.0.0", "name": net, "type": "bandwidth",
        "capabilities": {"bandwidth": true}, "prevResult": prev,
    });
    // No limit asked (the usual case: the capability is declared, the pod sets none):
    // the result goes on unchanged.
    let o = plugin(&bandwidth, "ADD", &env, &bcfg.to_string());
    assert!(
        o.status.success(),
        "bandwidth: {}{}",
        o.stdout_text(),
        o.stderr_text()
    );
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).expect("bandwidth result");
    assert_eq!(out, prev);
    // A limit: the reference plugin shapes the host end of a veth pair, and a TAP has
    // none; it says so (docs/engines.md).
    bcfg["runtimeConfig"] = serde_json::json!({"bandwidth": {
        "ingressRate": 10_000_000, "ingressBurst": 100_000,
        "egressRate": 10_000_000, "egressBurst": 100_000}});
    let o = plugin(&bandwidth, "ADD", &env, &bcfg.to_string());
    assert!(!o.status.success());
    assert!(o.stdout_text().contains("veth"), "{}", o.stdout_text());
    let o = plugin(&bandwidth, "DEL", &env, &bcfg.to_string());
    assert!(o.status.success(), "bandwidth DEL: {}", o.stdout_text());
}

/// netavark (2.x, from crates.io) as podman 5 calls it: `scripts/test` installs it in
/// /opt/netavark when it is not on PATH.
fn netavark() -> String {
    let found = ["/opt/netavark/bin/netavark"]
        .into_iter()
        .map(String::from)
        .find(|p| Path::new(p).exists())
        .or_else(|| {
            let o = sh("command -v netavark");
            o.status
                .success()
                .then(|| o.stdout_text().trim().to_string())
        });
    found.expect("this test needs netavark: run `bash scripts/test`, which builds it from crates.io into /opt/netavark")
}

/// Runs `netavark ARGS` with `input` on stdin, with the plugin directory holding
/// `vswitch-netavark` and no firewall driver.
fn netavark_call(plugins: &Path, config: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut c = Command::new(netavark())
        .env("NETAVARK_FW", "none")
        .arg("--config")
        .arg(config)
        .arg("--plugin-directory")
        .arg(plugins)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run netavark");
    if let Some(mut i) = c.stdin.take() {
        let _ = i.write_all(input.as_bytes());
    }
    c.wait_with_output().expect("netavark output")
}

/// A directory for netavark's configuration and its plugin directory holding
/// `vswitch-netavark`.
fn netavark_plugins() -> (TempDir, PathBuf) {
    let dir = TempDir::new("nv");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugin dir");
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_vswitch-netavark"),
        plugins.join("vswitch-netavark"),
    )
    .expect("link");
    (dir, plugins)
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn netavark_creates_sets_up_and_tears_down_through_the_plugin() {
    let d = Daemon::start(&[]);
    let (dir, plugins) = netavark_plugins();
    let net = unique("nv");
    let sock = d.socket().display().to_string();
    let network = serde_json::json!({
        "name": net, "id": "0123abcd0123abcd0123abcd0123abcd0123abcd0123abcd0123abcd0123abcd", "driver": "vswitch-netavark",
        "subnets": [{"subnet": "10.214.0.0/24", "gateway": "10.214.0.1"}],
        "ipv6_enabled": false, "internal": false, "dns_enabled": true,
        "network_dns_servers": ["127.0.0.1"],
        "options": {"socket": sock, "mtu": "1400"}
    });
    // podman network create -d vswitch-netavark: netavark hands the network to the plugin.
    let create = serde_json::json!({
        "network": network,
        "used": {"interfaces": [], "names": {}, "subnets": []},
        "options": {"subnet_pools": [], "default_interface_name": null, "check_used_subnets": false}
    });
    let o = netavark_call(&plugins, dir.path(), &["create"], &create.to_string());
    assert!(
        o.status.success(),
        "create: {}{}",
        o.stdout_text(),
        o.stderr_text()
    );
    let created: serde_json::Value = serde_json::from_slice(&o.stdout).expect("network");
    assert_eq!(created["subnets"][0]["subnet"], "10.214.0.0/24");
    let inspect = d.ctl_json(&["network", "inspect", &net]);
    assert_eq!(
        inspect[0]["Options"]["com.docker.network.driver.mtu"],
        "1400"
    );
    // podman network create --dns: the network's own resolver.
    assert_eq!(inspect[0]["Options"]["vswitch.dns_servers"], "127.0.0.1:53");
    assert_eq!(created["network_dns_servers"][0], "127.0.0.1");
    // podman run: setup with a static IP, an alias and a port mapping.
    let ns = Netns::new("nvc");
    let opts = serde_json::json!({
        "container_id": "feedface0123456789", "container_name": "nvweb",
        "networks": {&net: {"interface_name": "eth0", "static_ips": ["10.214.0.7"], "aliases": ["www"]}},
        "network_info": {&net: created},
        "port_mappings": [{"host_ip": "127.0.0.1", "container_port": 80, "host_port": 18641, "range": 1, "protocol": "tcp"}]
    });
    let o = netavark_call(
        &plugins,
        dir.path(),
        &["setup", &ns.path()],
        &opts.to_string(),
    );
    assert!(
        o.status.success(),
        "setup: {}{}",
        o.stdout_text(),
        o.stderr_text()
    );
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status");
    let block = &status[net.as_str()];
    assert_eq!(
        block["interfaces"]["eth0"]["subnets"][0]["ipnet"],
        "10.214.0.7/24"
    );
    assert_eq!(block["dns_server_ips"][0], "10.214.0.1");
    assert!(ns.must("ip addr show eth0").contains("10.214.0.7/24"));
    let listed = ports(&d);
    let port = &listed[0];
    assert_eq!(port["container"], "nvweb", "{listed}");
    assert_eq!(port["published"][0]["host_port"], 18641, "{listed}");
    // The alias resolves through vswitch's DNS inside the container.
    require(&["dig"]);
    let a = ns.must("dig @10.214.0.1 +short +tries=2 +time=1 www");
    assert_eq!(a.trim(), "10.214.0.7");
    // teardown, twice: detached, and nothing attached is success.
    for _ in 0..2 {
        let o = netavark_call(
            &plugins,
            dir.path(),
            &["teardown", &ns.path()],
            &opts.to_string(),
        );
        assert!(
            o.status.success(),
            "teardown: {}{}",
            o.stdout_text(),
            o.stderr_text()
        );
    }
    assert_eq!(ports(&d), serde_json::json!([]));
}

/// `podman network create --ipv6 -d vswitch-netavark` and two `podman run`s, as netavark
/// runs the plugin for podman 5: the network comes back with both subnets, the static
/// IPv6 address is on eth0 and in the status block, and one container reaches the other
/// by name over IPv6 (the AAAA from the gateway's IPv6 address, then ping6 to it).
#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn netavark_dual_stack_containers_reach_each_other_by_name_over_ipv6() {
    require(&["dig", "ping"]);
    let d = Daemon::start(&[]);
    let (dir, plugins) = netavark_plugins();
    let call = |args: &[&str], input: &serde_json::Value| {
        let o = netavark_call(&plugins, dir.path(), args, &input.to_string());
        assert!(
            o.status.success(),
            "{args:?}: {}{}",
            o.stdout_text(),
            o.stderr_text()
        );
        o.stdout_text()
    };
    let net = unique("nv6");
    let network = serde_json::json!({
        "name": net, "id": "4567abcd0123abcd0123abcd0123abcd0123abcd0123abcd0123abcd0123abcd",
        "driver": "vswitch-netavark", "subnets": [], "ipv6_enabled": true,
        "internal": false, "dns_enabled": true,
        "options": {"socket": d.socket().display().to_string()}
    });
    let create = serde_json::json!({
        "network": network,
        "used": {"interfaces": [], "names": {}, "subnets": []},
        "options": {"subnet_pools": [], "default_interface_name": null, "check_used_subnets": false}
    });
    let created: serde_json::Value =
        serde_json::from_str(&call(&["create"], &create)).expect("network");
    assert_eq!(created["ipv6_enabled"], true, "{created}");
    let subnet6 = created["subnets"][1]["subnet"].as_str().unwrap_or_default();
    let gw6 = created["subnets"][1]["gateway"]
        .as_str()
        .unwrap_or_default();
    assert!(subnet6.ends_with("::/64") && gw6.contains(':'), "{created}");
    assert!(
        !created["subnets"][0]["subnet"]
            .as_str()
            .unwrap_or_default()
            .contains(':')
    );
    let web6 = subnet6.replace("::/64", "::7");
    let opts = |id: &str, name: &str, ips: serde_json::Value| {
        serde_json::json!({
            "container_id": id, "container_name": name,
            "networks": {&net: {"interface_name": "eth0", "static_ips": ips}},
            "network_info": {&net: created},
        })
    };
    let (web, cli) = (Netns::new("nv6w"), Netns::new("nv6c"));
    let web_opts = opts("feed6001", "web6", serde_json::json!([web6]));
    // As podman 5 passes them: an address of each family it allocated from the subnets.
    let subnet4 = created["subnets"][0]["subnet"].as_str().unwrap_or_default();
    let net4 = subnet4.split('/').next().unwrap_or_default();
    let cli4 = format!(
        "{}.9",
        net4.rsplit_once('.').map(|(a, _)| a).unwrap_or_default()
    );
    let cli6 = subnet6.replace("::/64", "::9");
    let cli_opts = opts("feed6002", "cli6", serde_json::json!([cli4, cli6]));
    let status: serde_json::Value =
        serde_json::from_str(&call(&["setup", &web.path()], &web_opts)).expect("status");
    let block = &status[net.as_str()];
    let subnets = &block["interfaces"]["eth0"]["subnets"];
    assert_eq!(subnets[1]["ipnet"], format!("{web6}/64"), "{status}");
    assert_eq!(subnets[1]["gateway"], gw6, "{status}");
    assert_eq!(block["dns_server_ips"][1], gw6, "{status}");
    assert!(
        web.must("ip -6 addr show dev eth0")
            .contains(&format!("inet6 {web6}/64"))
    );
    call(&["setup", &cli.path()], &cli_opts);
    let own = cli.must("ip addr show dev eth0");
    assert!(own.contains(&format!("inet {cli4}/")), "{own}");
    assert!(own.contains(&format!("inet6 {cli6}/64")), "{own}");
    // By name over IPv6: the AAAA the gateway answers on its IPv6 address, then ping6.
    let aaaa = cli.must(&format!("dig AAAA @{gw6} +short +tries=2 +time=1 web6"));
    assert_eq!(aaaa.trim(), web6);
    let ping = cli.must(&format!("ping -6 -c 1 -W 2 {}", aaaa.trim()));
    assert!(ping.contains("1 received"), "{ping}");
    for (ns, o) in [(&web, &web_opts), (&cli, &cli_opts)] {
        call(&["teardown", &ns.path()], o);
    }
    assert_eq!(ports(&d), serde_json::json!([]));
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn engine_containers_survive_a_restart_and_are_cleaned_up_when_gone_meanwhile() {
    let mut d = Daemon::start(&[]);
    let net = unique("n");
    let cfg = conf(&d, &net, "10.215.0.0/24").replace("1.1.0", "1.0.0");
    let keep = Netns::new("keep");
    let lost = Netns::new("lost");
    let (kp, lp) = (keep.path(), lost.path());
    let env_keep = [
        ("CNI_CONTAINERID", "keep0001"),
        ("CNI_NETNS", kp.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=kept"),
    ];
    let env_lost = [
        ("CNI_CONTAINERID", "lost0001"),
        ("CNI_NETNS", lp.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    for env in [&env_keep[..], &env_lost[..]] {
        let o = plugin(cni_bin(), "ADD", env, &cfg);
        assert!(o.status.success(), "ADD: {}", o.stdout_text());
    }
    // The daemon dies; the engine deletes one container meanwhile.
    d.kill9();
    drop(lost);
    d.launch();
    // The kept one is back (its port, address and DNS name); CHECK says so.
    let o = plugin(cni_bin(), "CHECK", &env_keep, &cfg);
    assert!(o.status.success(), "CHECK: {}", o.stdout_text());
    let a = keep.must("dig @10.215.0.1 +short +tries=2 +time=1 kept");
    assert_eq!(a.trim(), "10.215.0.2");
    // DEL of the one that is gone frees its address: a new container gets it.
    let o = plugin(cni_bin(), "DEL", &env_lost, &cfg);
    assert!(o.status.success(), "DEL: {}", o.stdout_text());
    let all = d.ctl_json(&["network", "inspect", &net]);
    assert_eq!(
        all[0]["Containers"].as_object().map(|m| m.len()),
        Some(1),
        "{all}"
    );
    let again = Netns::new("again");
    let ap = again.path();
    let env_new = [
        ("CNI_CONTAINERID", "new00001"),
        ("CNI_NETNS", ap.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let o = plugin(cni_bin(), "ADD", &env_new, &cfg);
    assert!(o.status.success(), "ADD: {}", o.stdout_text());
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("result");
    assert_eq!(r["ips"][0]["address"], "10.215.0.3/24");
}
