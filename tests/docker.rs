//! Docker drives vswitch: a real dockerd (Debian 12's docker.io, 20.10) with vswitch as
//! its network and IPAM driver (`vswitch-docker`). Each test gets a world of its own: a
//! network namespace standing for the host (so published ports and the way out stay in
//! the test's namespaces) and a private mount namespace (its own /run, so the plugin
//! serves /run/docker/plugins/vswitch.sock and the driver is `vswitch` as in
//! production, and /etc/docker), holding the vswitch daemon, the plugin and dockerd with
//! its own data and exec roots. Images are a static busybox imported from a tar.

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/busybox.rs"]
mod busybox;
mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The docker.io CLI (another `docker` on PATH may speak a newer API only).
const DOCKER: &str = "/usr/bin/docker";

/// A container's command serving the image's page on port 80.
const HTTPD: [&str; 6] = ["httpd", "-f", "-p", "80", "-h", "/www"];
/// What the image's page says.
const PAGE: &str = "hello from vswitch";

/// One test's Docker host: the host namespace, the private mount namespace (a process
/// holds it), the vswitch daemon, the plugin and dockerd.
struct DockerHost {
    daemon: Daemon,
    plugin: Option<Proc>,
    /// containerd, as a service of its own (dockerd's crash leaves it running).
    containerd: Option<Proc>,
    /// dockerd (killed by its pid alone, as a crash would be).
    dockerd: Option<std::process::Child>,
    /// Holds the private mount namespace.
    holder: Proc,
    host: Netns,
    dir: TempDir,
}

impl DockerHost {
    fn start() -> DockerHost {
        require_root();
        require(&["dockerd", "containerd", "nsenter", "unshare", "curl", "tar"]);
        assert!(
            std::path::Path::new(DOCKER).exists(),
            "this test needs {DOCKER}: run `bash scripts/test`, which installs docker.io"
        );
        let dir = TempDir::new("dock");
        let host = Netns::new("dh");
        let ready = dir.path().join("ready");
        let holder = Proc::spawn(&format!(
            "exec nsenter --net={} unshare --mount --propagation private sh -c \
             'mount -t tmpfs tmpfs /run && mkdir -p /etc/docker && mount -t tmpfs tmpfs /etc/docker \
              && touch {} && exec sleep 100000'",
            host.path(),
            ready.display()
        ));
        assert!(
            eventually(Duration::from_secs(10), || ready.exists()),
            "the private mount namespace did not come up"
        );
        let daemon = Daemon {
            dir: TempDir::new("dd"),
            proc: None,
            args: Vec::new(),
            netns: None,
        };
        let mut h = DockerHost {
            daemon,
            plugin: None,
            containerd: None,
            dockerd: None,
            holder,
            host,
            dir,
        };
        h.launch_daemon();
        h.launch_plugin();
        h.launch_containerd();
        h.launch_dockerd();
        h.import_busybox();
        h
    }

    /// `CMD` inside the world (its mount and network namespaces), as a shell command.
    fn inside(&self, cmd: &str) -> String {
        format!("exec nsenter -t {} -m -n {cmd}", self.holder.pid())
    }

    fn launch_daemon(&mut self) {
        let d = &self.daemon;
        let cmd = self.inside(&format!(
            "{} daemon --socket {} --state-dir {} >>{} 2>&1",
            bin(),
            d.socket().display(),
            d.dir.path().join("state").display(),
            d.dir.path().join("daemon.log").display()
        ));
        self.daemon.proc = Some(Proc::spawn(&cmd));
        let sock = self.daemon.socket();
        let up = eventually(Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
        assert!(up, "the daemon did not start: {}", self.daemon.log());
    }

    fn launch_plugin(&mut self) {
        let cmd = self.inside(&format!(
            "{} --socket {} >>{} 2>&1",
            env!("CARGO_BIN_EXE_vswitch-docker"),
            self.daemon.socket().display(),
            self.dir.path().join("plugin.log").display()
        ));
        self.plugin = Some(Proc::spawn(&cmd));
    }

    fn launch_containerd(&mut self) {
        let d = self.dir.path();
        let conf = format!(
            "version = 2\nroot = \"{0}/containerd\"\nstate = \"/run/containerd\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\naddress = \"{0}/containerd.sock\"\n",
            d.display()
        );
        std::fs::write(d.join("containerd.toml"), conf).expect("containerd config");
        let cmd = self.inside(&format!(
            "containerd --config {0}/containerd.toml >>{0}/containerd.log 2>&1",
            d.display()
        ));
        self.containerd = Some(Proc::spawn(&cmd));
        let sock = d.join("containerd.sock");
        let up = eventually(Duration::from_secs(20), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
        assert!(
            up,
            "containerd did not start: {}",
            self.log("containerd.log")
        );
    }

    fn launch_dockerd(&mut self) {
        let d = self.dir.path();
        let _ = std::fs::remove_file(d.join("docker.pid"));
        let cmd = self.inside(&format!(
            "dockerd --data-root {0}/data --exec-root {0}/exec --pidfile {0}/docker.pid \
             --containerd {0}/containerd.sock -H unix://{0}/docker.sock --bridge=none --iptables=false --ip6tables=false \
             --storage-driver=vfs >>{0}/dockerd.log 2>&1",
            d.display()
        ));
        let child = Command::new("sh")
            .args(["-c", &cmd])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dockerd");
        self.dockerd = Some(child);
        let up = eventually(Duration::from_secs(60), || {
            self.docker(&["version"]).status.success()
        });
        assert!(up, "dockerd did not start: {}", self.log("dockerd.log"));
    }

    /// `busybox`: the static busybox and a page for httpd, `sh` its command.
    fn import_busybox(&self) {
        let root = self.dir.path().join("rootfs");
        for d in ["bin", "www", "tmp", "etc"] {
            std::fs::create_dir_all(root.join(d)).expect("rootfs");
        }
        busybox::rootfs(&root);
        std::fs::write(root.join("www/index.html"), format!("{PAGE}\n")).expect("page");
        let tar = self.dir.path().join("busybox.tar");
        must(&format!(
            "tar -C {} -cf {} .",
            root.display(),
            tar.display()
        ));
        let t = tar.to_string_lossy().to_string();
        self.ok(&["import", "-c", "CMD [\"sh\"]", &t, "busybox"]);
    }

    /// `docker network create -d vswitch --ipam-driver vswitch ARGS... NAME`.
    fn network(&self, name: &str, args: &[&str]) {
        let mut a = vec![
            "network",
            "create",
            "-d",
            "vswitch",
            "--ipam-driver",
            "vswitch",
        ];
        a.extend_from_slice(args);
        a.push(name);
        self.ok(&a);
    }

    /// `docker run -d --name NAME --network NET ARGS... busybox CMD...`; no `CMD` is the
    /// seeds' busybox: `sh` on a terminal (`-it`).
    fn run(&self, name: &str, network: &str, args: &[&str], cmd: &[&str]) {
        let mut a = vec!["run", "-d", "--name", name, "--network", network];
        if cmd.is_empty() {
            a.push("-it");
        }
        a.extend_from_slice(args);
        a.push("busybox");
        a.extend_from_slice(cmd);
        self.ok(&a);
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .env(
                "DOCKER_HOST",
                format!("unix://{}/docker.sock", self.dir.path().display()),
            )
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    /// A docker command that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "docker {args:?} failed: {}\nplugin: {}",
            o.stderr_text(),
            self.log("plugin.log")
        );
        o.stdout_text()
    }

    /// A docker command that must fail; the error line (`Error response from daemon:
    /// ...`), which must be one line.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(!o.status.success(), "docker {args:?} succeeded");
        let e = o.stderr_text();
        let lines: Vec<&str> = e.lines().filter(|l| l.contains("Error")).collect();
        assert_eq!(lines.len(), 1, "docker {args:?}: not one error line: {e}");
        lines[0].to_string()
    }

    /// `sh -c CMD` in container `c`.
    fn exec(&self, c: &str, cmd: &str) -> Output {
        self.docker(&["exec", c, "sh", "-c", cmd])
    }

    fn exec_ok(&self, c: &str, cmd: &str) -> String {
        let o = self.exec(c, cmd);
        assert!(
            o.status.success(),
            "in {c}: `{cmd}` failed: {}{}",
            o.stdout_text(),
            o.stderr_text()
        );
        o.stdout_text()
    }

    /// Retries `cmd` in container `c` for a few seconds (a neighbour being resolved).
    fn exec_retry(&self, c: &str, cmd: &str) -> String {
        let mut last = String::new();
        for _ in 0..10 {
            let o = self.exec(c, cmd);
            if o.status.success() {
                return o.stdout_text();
            }
            last = format!("{}{}", o.stdout_text(), o.stderr_text());
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!("in {c}: `{cmd}` kept failing: {last}");
    }

    /// A container's address on `network`.
    fn ip_of(&self, c: &str, network: &str) -> String {
        let f = format!("{{{{.NetworkSettings.Networks.{network}.IPAddress}}}}");
        self.ok(&["inspect", "-f", &f, c]).trim().to_string()
    }

    fn ports(&self) -> Vec<Value> {
        let v = self.daemon.ctl_json(&["port", "ls"]);
        v.as_array().cloned().unwrap_or_default()
    }

    /// The host's TAPs vswitch made for Docker (`vsw...`) still in the host namespace.
    fn host_taps(&self) -> usize {
        let links = self.host.must("ip -o link");
        links.lines().filter(|l| l.contains(": vsw")).count()
    }

    /// `curl` of the host's loopback port `port`.
    fn curl(&self, port: u16) -> Output {
        self.host
            .sh(&format!("curl -s -m 3 http://127.0.0.1:{port}/"))
    }

    fn curl_retry(&self, port: u16) -> String {
        let mut last = String::new();
        for _ in 0..20 {
            let o = self.curl(port);
            if o.status.success() {
                return o.stdout_text();
            }
            last = o.stderr_text();
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("127.0.0.1:{port} never answered: {last}");
    }

    /// Kills dockerd as a crash would, leaving its containers to the next one.
    fn kill9_dockerd(&mut self) {
        if let Some(mut p) = self.dockerd.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

impl Drop for DockerHost {
    fn drop(&mut self) {
        // Containers first (their processes live outside this world's mount namespace),
        // then dockerd; then whatever else the world runs (containerd, its shims, the
        // plugin, the daemon).
        if self.dockerd.is_some() {
            let ids = self.docker(&["ps", "-aq"]).stdout_text();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.docker(&args);
            }
        }
        if let Some(mut p) = self.dockerd.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &p.id().to_string()])
                .status();
            let _ = eventually(Duration::from_secs(20), || {
                matches!(p.try_wait(), Ok(Some(_)))
            });
            let _ = p.kill();
            let _ = p.wait();
        }
        for pid in in_mount_ns(self.holder.pid()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// The processes in the mount namespace of `pid` (ours: nothing else is in it), but
/// `pid` itself.
fn in_mount_ns(pid: u32) -> Vec<u32> {
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).ok();
    let Some(ours) = ns(&pid.to_string()) else {
        return Vec::new();
    };
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Ok(p) = name.parse::<u32>()
            && p != pid
            && ns(&name).as_ref() == Some(&ours)
        {
            v.push(p);
        }
    }
    v
}

/// A web server in the host namespace, at an address of its own: where a container's
/// way out leads.
fn host_server(h: &DockerHost, addr: &str, port: u16) -> Proc {
    h.host.must(&format!("ip addr add {addr}/32 dev lo"));
    let www = h.dir.path().join("rootfs/www");
    let p = h.host.spawn(&format!(
        "exec {} httpd -f -p {addr}:{port} -h {}",
        busybox::static_busybox(),
        www.display()
    ));
    listening(&h.host, port);
    p
}

fn vswitch_network(h: &DockerHost, name: &str) -> Value {
    h.daemon.ctl_json(&["network", "inspect", name])[0].clone()
}

/// `docker network inspect` shows what vswitch shows: the same id, subnet, gateway,
/// range, and every container's endpoint with the same address and MAC.
fn inspect_agrees(h: &DockerHost, docker_name: &str, vswitch_name: &str) {
    let d: Value = serde_json::from_str(&h.ok(&["network", "inspect", docker_name])).unwrap();
    let d = &d[0];
    let v = vswitch_network(h, vswitch_name);
    assert_eq!(d["Id"], v["Id"], "{d}\n{v}");
    // Docker shows the IPAM configuration as given (a gateway only when asked for).
    let (di, vi) = (&d["IPAM"]["Config"][0], &v["IPAM"]["Config"][0]);
    for key in ["Subnet", "Gateway", "IPRange"] {
        if di[key].as_str().is_some_and(|s| !s.is_empty()) {
            assert_eq!(di[key], vi[key], "{key}: {d}\n{v}");
        }
    }
    let dc = d["Containers"].as_object().unwrap();
    let vc = v["Containers"].as_object().unwrap();
    assert_eq!(dc.len(), vc.len(), "{d}\n{v}");
    for c in dc.values() {
        let e = &vc[c["EndpointID"].as_str().unwrap()];
        assert_eq!(e["IPv4Address"], c["IPv4Address"], "{c}\n{e}");
        assert_eq!(e["MacAddress"], c["MacAddress"], "{c}\n{e}");
    }
}

#[test]
#[ignore = "needs root, dockerd and tools: `bash scripts/test` runs it"]
fn seed_commands_run_on_a_vswitch_network() {
    let h = DockerHost::start();
    let _out = host_server(&h, "198.18.31.1", 8000);
    let mtu = "com.docker.network.driver.mtu=1400";
    let ipam = [
        "--subnet",
        "10.231.0.0/24",
        "--gateway",
        "10.231.0.254",
        "--ip-range",
        "10.231.0.128/25",
    ];
    h.network(
        "greatwall",
        &[&ipam[..], &["-o", mtu, "-o", "vswitch.name=greatwall"]].concat(),
    );
    h.run("beijing", "greatwall", &["--rm"], &[]);
    h.run(
        "shenzhen",
        "greatwall",
        &["--rm", "--network-alias", "sz"],
        &[],
    );
    let mac = "02:00:0a:e7:00:60";
    h.run(
        "tea",
        "greatwall",
        &["--rm", "--ip", "10.231.0.96", "--mac-address", mac],
        &[],
    );
    // Names, aliases and the short id through Docker's resolver; addresses from
    // vswitch's IPAM, in the range asked for.
    h.exec_retry(
        "beijing",
        "ping -c 1 -W 2 shenzhen && ping -c 1 -W 2 sz && ping -c 1 -W 2 tea",
    );
    let sz = h.ip_of("shenzhen", "greatwall");
    assert!(sz.starts_with("10.231.0.1"), "{sz} is outside --ip-range");
    let ns = h.exec_ok("beijing", "nslookup sz");
    assert!(ns.contains(&sz), "{ns}");
    // That is Docker's resolver; vswitch's gateway answers none of Docker's names (one
    // authority for them), it only forwards.
    let conf = h.exec_ok("beijing", "cat /etc/resolv.conf");
    assert!(conf.contains("nameserver 127.0.0.11"), "{conf}");
    let gw = h.exec("beijing", "timeout 5 nslookup shenzhen 10.231.0.254");
    assert!(!gw.stdout_text().contains(&sz), "{}", gw.stdout_text());
    let route = h.exec_ok("tea", "ip route");
    assert!(route.contains("default via 10.231.0.254"), "{route}");
    let tea = h.exec_ok("tea", "ip addr show eth0");
    for want in ["10.231.0.96/24", mac, "mtu 1400"] {
        assert!(tea.contains(want), "{want} not in {tea}");
    }
    let ports = h.ports();
    assert_eq!(ports.len(), 3, "{ports:?}");
    let ours = |p: &Value| {
        p["ip"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.231.0."))
    };
    assert!(ports.iter().all(ours), "{ports:?}");
    assert!(
        ports
            .iter()
            .any(|p| p["ip"] == "10.231.0.96" && p["mac"] == mac)
    );
    assert!(ports.iter().all(|p| p["kind"] == "handoff"));
    // -p: published by vswitch (no docker-proxy), answered from the host's loopback.
    h.run("coffee", "greatwall", &["--rm", "-p", "8080:80"], &HTTPD);
    assert_eq!(h.curl_retry(8080).trim(), PAGE);
    // A loopback client is spliced into the container, as for `vswitch run` ones: the
    // namespace Docker names before it exists is opened with the first client.
    let nat = &h.daemon.ctl_json(&["stats"])["nat"];
    assert!(
        nat["tcp_spliced"].as_u64().unwrap_or(0) >= 1,
        "not spliced: {nat}\n{}",
        h.daemon.log()
    );
    let owner = h.host.must("ss -Htlnp sport = :8080");
    assert!(
        owner.contains("vswitch") && !owner.contains("docker-proxy"),
        "{owner}"
    );
    // -p 80: a host port vswitch picks.
    h.run("latte", "greatwall", &["--rm", "-p", "80"], &HTTPD);
    let auto = h.ports().iter().find_map(|p| {
        let e = &p["published"][0];
        (e["auto"] == true)
            .then(|| e["host_port"].as_u64())
            .flatten()
    });
    let auto = u16::try_from(auto.expect("an automatic host port")).unwrap();
    assert_eq!(h.curl_retry(auto).trim(), PAGE);
    // The way out (masquerade), then --internal with none.
    let way_out = "timeout 3 wget -q -O- http://198.18.31.1:8000/";
    assert_eq!(h.exec_retry("beijing", way_out).trim(), PAGE);
    h.network("vault", &["--internal"]);
    h.run("safe", "vault", &["--rm"], &[]);
    assert!(
        !h.exec("safe", way_out).status.success(),
        "an internal network got out"
    );
    // A second network is isolated; connect and disconnect work live.
    h.network("back", &[]);
    // Containers started at once get an address each: vswitch's IPAM holds what it
    // gives Docker until the endpoint takes it.
    let many = ["p1", "p2", "p3", "p4"];
    std::thread::scope(|t| {
        for n in many {
            let h = &h;
            t.spawn(move || h.run(n, "back", &["--rm"], &["sleep", "1000"]));
        }
    });
    let mut ips: Vec<String> = many.iter().map(|n| h.ip_of(n, "back")).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), many.len(), "{ips:?}");
    h.ok(&[&["rm", "-f"][..], &many].concat());
    h.run("api", "back", &["--rm"], &HTTPD);
    let api = format!("timeout 2 wget -q -O- http://{}/", h.ip_of("api", "back"));
    assert!(
        !h.exec("beijing", &api).status.success(),
        "another network was reached"
    );
    h.ok(&["network", "connect", "back", "beijing"]);
    assert_eq!(h.exec_retry("beijing", &api).trim(), PAGE);
    h.exec_ok("beijing", "timeout 2 wget -q -O- http://api/");
    h.ok(&["network", "disconnect", "back", "beijing"]);
    assert!(
        !h.exec("beijing", &api).status.success(),
        "disconnect left a way"
    );
    // docker network inspect shows what vswitch shows.
    inspect_agrees(&h, "greatwall", "greatwall");
    let opts = &vswitch_network(&h, "greatwall")["Options"];
    assert_eq!(opts["com.docker.network.driver.mtu"], "1400");
    // rm of a network in use: refused as Docker refuses it.
    let e = h.fails(&["network", "rm", "greatwall"]);
    assert!(e.contains("has active endpoints"), "{e}");
    // rm -f and network rm leave nothing behind.
    h.ok(&[
        "rm", "-f", "beijing", "shenzhen", "tea", "coffee", "latte", "safe", "api",
    ]);
    assert!(h.ports().is_empty(), "{:?}", h.ports());
    assert_eq!(h.host_taps(), 0);
    assert!(!h.curl(8080).status.success(), "8080 still answers");
    h.ok(&["network", "rm", "greatwall", "vault", "back"]);
    let nets = h.daemon.ctl_json(&["network", "ls"]);
    assert_eq!(nets.as_array().map(Vec::len), Some(1), "{nets}");
}

#[test]
#[ignore = "needs root, dockerd and tools: `bash scripts/test` runs it"]
fn restarts_and_deaths_leave_nothing_behind() {
    let mut h = DockerHost::start();
    h.network("front", &[]);
    h.run("web", "front", &["-p", "8080:80"], &HTTPD);
    h.run("cli", "front", &[], &[]);
    let fetch = "timeout 2 wget -q -O- http://web/";
    h.exec_retry("cli", fetch);
    // The vswitch daemon crashes and comes back: its TAPs are found in the containers
    // (under Docker's names for them), the published port is bound again.
    h.daemon.kill9();
    h.launch_daemon();
    assert_eq!(h.ports().len(), 2, "{:?}", h.ports());
    assert_eq!(h.exec_retry("cli", fetch).trim(), PAGE);
    assert_eq!(h.curl_retry(8080).trim(), PAGE);
    // A container that dies leaves nothing.
    h.run("short", "front", &[], &["sh", "-c", "exit 3"]);
    let gone = eventually(Duration::from_secs(15), || h.ports().len() == 2);
    assert!(gone, "the dead container's port stayed: {:?}", h.ports());
    // dockerd crashes; the next one stops what the last ran, and vswitch follows.
    h.kill9_dockerd();
    h.launch_dockerd();
    let clean = eventually(Duration::from_secs(30), || h.ports().is_empty());
    assert!(clean, "ports left after dockerd's restart: {:?}", h.ports());
    assert_eq!(h.host_taps(), 0);
    assert!(!h.curl(8080).status.success(), "8080 still answers");
    let front = vswitch_network(&h, &front_name(&h, "front"));
    assert_eq!(front["Containers"], serde_json::json!({}), "{front}");
    // And Docker goes on with vswitch.
    h.ok(&["start", "web", "cli"]);
    assert_eq!(h.exec_retry("cli", fetch).trim(), PAGE);
}

/// The vswitch network of Docker network `name` (named by its id).
fn front_name(h: &DockerHost, name: &str) -> String {
    let id = h.ok(&["network", "inspect", "-f", "{{.Id}}", name]);
    format!("docker-{}", &id.trim()[..12])
}

/// `docker network create -d vswitch ARGS... NAME`, which must fail: its error line.
fn create_fails(h: &DockerHost, name: &str, args: &[&str]) -> String {
    let mut a = vec!["network", "create", "-d", "vswitch"];
    a.extend_from_slice(args);
    a.push(name);
    h.fails(&a)
}

#[test]
#[ignore = "needs root, dockerd and tools: `bash scripts/test` runs it"]
fn vswitch_errors_reach_the_docker_command_as_one_line() {
    require(&["socat"]);
    let mut h = DockerHost::start();
    let create = |name: &str, args: &[&str]| create_fails(&h, name, args);
    let ours = ["--ipam-driver", "vswitch", "-o"];
    let e = create("typo", &[&ours[..], &["vswitch.vlna=5"]].concat());
    assert!(e.contains("unknown option vswitch.vlna"), "{e}");
    let e = create("badvlan", &[&ours[..], &["vswitch.vlan=5000"]].concat());
    assert!(e.contains("invalid VLAN id 5000"), "{e}");
    // Docker's own IPAM picks 172.17.0.0/16 here: vswitch's default network has it.
    let e = create("docker-ipam", &[]);
    assert!(
        e.contains("overlaps") && e.contains("--ipam-driver vswitch"),
        "{e}"
    );
    // -o vswitch.icc=false: containers reach the gateway, not each other.
    h.network(
        "quiet",
        &["-o", "vswitch.icc=false", "-o", "vswitch.vlan=7"],
    );
    h.run("ann", "quiet", &["--rm"], &[]);
    h.run("bob", "quiet", &["--rm"], &[]);
    let gw = h.ok(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
        "quiet",
    ]);
    h.exec_retry("ann", &format!("ping -c 1 -W 2 {}", gw.trim()));
    let v = vswitch_network(&h, &front_name(&h, "quiet"));
    assert_eq!(v["Options"]["vswitch.vlan"], "7", "{v}");
    let b = h.ip_of("bob", "quiet");
    assert!(
        !h.exec("ann", &format!("ping -c 1 -W 2 {b}"))
            .status
            .success()
    );
    // A host port that is taken: the container does not start, nothing is left.
    let _taken = h.host.spawn("exec socat TCP-LISTEN:8081,reuseaddr,fork -");
    listening(&h.host, 8081);
    let args = [
        "--name",
        "taken",
        "-p",
        "8081:80",
        "--network",
        "quiet",
        "busybox",
    ];
    let o = h.docker(&[&["run", "-d"][..], &args, &HTTPD].concat());
    assert!(!o.status.success());
    let e = o.stderr_text();
    let line: Vec<&str> = e.lines().filter(|l| l.contains("8081")).collect();
    assert_eq!(line.len(), 1, "{e}");
    assert!(line[0].contains("in use"), "{e}");
    assert_eq!(h.ports().len(), 2, "{:?}", h.ports());
    // The daemon is down: one line saying so, and what to do.
    h.daemon.kill9();
    let e = create_fails(&h, "later", &["--ipam-driver", "vswitch"]);
    assert!(e.contains("start it with `vswitch daemon`"), "{e}");
    h.launch_daemon();
}

#[test]
#[ignore = "needs root, dockerd and tools: `bash scripts/test` runs it"]
fn published_ports_take_the_packet_uplink_too() {
    let h = DockerHost::start();
    // The outside segment: vswitch owns 198.19.41.2 there; a server at .1.
    let out = Netns::new("out");
    let hold = out.spawn("exec sleep 100000");
    let out_ns = format!("/proc/{}/ns/net", hold.pid());
    let uplink = [
        "uplink",
        "set",
        "--netns",
        &out_ns,
        "--address",
        "198.19.41.2/24",
    ];
    h.daemon.ctl_ok(&uplink);
    out.must("ip addr add 198.19.41.1/24 dev vswitch0");
    let www = h.dir.path().join("rootfs/www");
    let bb = busybox::static_busybox();
    let _srv = out.spawn(&format!(
        "exec {bb} httpd -f -p 198.19.41.1:8000 -h {}",
        www.display()
    ));
    listening(&out, 8000);
    h.network("front", &[]);
    h.run("web", "front", &["--rm", "-p", "8080:80"], &HTTPD);
    // In through the uplink's address (DNAT), out through it (masquerade).
    let into = || out.sh("curl -s -m 2 http://198.19.41.2:8080/");
    assert!(eventually(Duration::from_secs(5), || into()
        .status
        .success()));
    assert_eq!(into().stdout_text().trim(), PAGE);
    let back = h.exec_retry("web", "timeout 2 wget -q -O- http://198.19.41.1:8000/");
    assert_eq!(back.trim(), PAGE);
    h.ok(&["rm", "-f", "web"]);
    assert!(h.ports().is_empty());
}

/// A container's `{{.NetworkSettings.Networks.NET.FIELD}}`.
fn net_field(h: &DockerHost, c: &str, network: &str, field: &str) -> String {
    let f = format!("{{{{.NetworkSettings.Networks.{network}.{field}}}}}");
    h.ok(&["inspect", "-f", &f, c]).trim().to_string()
}

#[test]
#[ignore = "needs root, dockerd and tools: `bash scripts/test` runs it"]
fn dual_stack_networks_through_the_plugin() {
    let mut h = DockerHost::start();
    // vswitch's IPAM: both subnets given, then the IPv6 one picked by vswitch.
    h.network(
        "dual",
        &[
            "--ipv6",
            "--subnet",
            "10.232.0.0/24",
            "--subnet",
            "fd00:232::/64",
        ],
    );
    // An IPv6 subnet that overlaps it: refused in one line, by either IPAM.
    let v6 = ["--ipv6", "--subnet", "fd00:232::/80", "--subnet"];
    let e = create_fails(
        &h,
        "clash6",
        &[&["--ipam-driver", "vswitch"][..], &v6, &["10.240.0.0/24"]].concat(),
    );
    assert!(e.contains("overlaps") && e.contains("fd00:232::/64"), "{e}");
    let e = create_fails(&h, "clash6d", &[&v6[..], &["10.241.0.0/24"]].concat());
    assert!(e.contains("overlaps") && e.contains("fd00:232::/64"), "{e}");
    h.run("alpha", "dual", &["--rm"], &[]);
    h.run("beta", "dual", &["--rm", "--ip6", "fd00:232::99"], &[]);
    // By name over IPv6 (Docker's resolver answers AAAA), both ways.
    h.exec_retry("alpha", "ping -6 -c 1 -W 2 beta");
    h.exec_retry("beta", "ping -6 -c 1 -W 2 alpha");
    h.exec_retry("alpha", "ping -4 -c 1 -W 2 beta");
    // Docker shows the addresses vswitch gave, and eth0 has them.
    let beta6 = net_field(&h, "beta", "dual", "GlobalIPv6Address");
    assert_eq!(beta6, "fd00:232::99");
    let alpha6 = net_field(&h, "alpha", "dual", "GlobalIPv6Address");
    assert!(alpha6.starts_with("fd00:232::"), "{alpha6}");
    assert_eq!(net_field(&h, "alpha", "dual", "IPv6Gateway"), "fd00:232::1");
    // The gateway's router advertisements reached the containers (a route through
    // its link-local address beside Docker's through its address)...
    let route = h.exec_retry("alpha", "ip -6 route | grep 'default via fe80::'");
    assert!(route.contains("dev eth0"), "{route}");
    let route = h.exec_ok("alpha", "ip -6 route");
    assert!(route.contains("default via fd00:232::1"), "{route}");
    let ports = h.ports();
    for (c, ip6) in [("alpha", &alpha6), ("beta", &beta6)] {
        let id = net_field(&h, c, "dual", "EndpointID");
        let p = ports
            .iter()
            .find(|p| p["container"].as_str().is_some_and(|n| id.starts_with(n)));
        assert_eq!(
            p.map(|p| &p["ip6"]),
            Some(&Value::from(ip6.as_str())),
            "{ports:?}"
        );
        // ... and that address is eth0's only one: they let no SLAAC address beside it.
        let eth0 = h.exec_ok(c, "ip -6 addr show dev eth0 scope global");
        assert!(eth0.contains(&format!("{ip6}/64")), "{eth0}");
        assert_eq!(eth0.matches("inet6 ").count(), 1, "{eth0}");
    }
    let d: Value = serde_json::from_str(&h.ok(&["network", "inspect", "dual"])).unwrap();
    assert_eq!(d[0]["EnableIPv6"], true, "{d}");
    let v = vswitch_network(&h, &front_name(&h, "dual"));
    assert_eq!(v["EnableIPv6"], true, "{v}");
    assert_eq!(v["Options"]["vswitch.slaac"], "false", "{v}");
    // -p on a dual-stack network: the host's IPv6 loopback reaches it too. (A loopback
    // client appears as the gateway; the gateway passes the container's IPv6 answers
    // on only where GATEWAY:PORT leads to the host, which needs the host's main
    // address, as a host has one.)
    h.host.must("ip addr add 198.18.33.1/32 dev lo");
    h.run("web6", "dual", &["--rm", "-p", "8086:80"], &HTTPD);
    assert_eq!(h.curl_retry(8086).trim(), PAGE);
    let curl6 = h.host.must("curl -s -m 3 -g http://[::1]:8086/");
    assert_eq!(curl6.trim(), PAGE);
    // The vswitch daemon crashes and comes back: every IPv6 address is kept.
    let before = h.ports();
    h.daemon.kill9();
    h.launch_daemon();
    h.exec_retry("alpha", "ping -6 -c 1 -W 2 beta");
    let again = h.ports();
    let ip6s = |p: &[Value]| {
        let mut v: Vec<String> = p.iter().map(|p| p["ip6"].to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(ip6s(&again), ip6s(&before), "{again:?}");
    let back6 = h
        .host
        .must("curl -s -m 3 --retry 5 --retry-all-errors -g http://[::1]:8086/");
    assert_eq!(back6.trim(), PAGE);
    // An IPv6 subnet vswitch picks (a /64 of its unique local /48).
    h.network("auto6", &["--ipv6"]);
    h.run("gamma", "auto6", &["--rm"], &[]);
    let g6 = net_field(&h, "gamma", "auto6", "GlobalIPv6Address");
    assert!(g6.starts_with("fd"), "{g6}");
    // Docker's own IPAM: vswitch takes the addresses Docker gives.
    h.ok(&[
        "network",
        "create",
        "-d",
        "vswitch",
        "--ipv6",
        "--subnet",
        "10.233.0.0/24",
        "--subnet",
        "fd00:233::/64",
        "plain6",
    ]);
    h.run("delta", "plain6", &["--rm"], &[]);
    h.run("epsilon", "plain6", &["--rm", "--ip6", "fd00:233::77"], &[]);
    h.exec_retry("delta", "ping -6 -c 1 -W 2 epsilon");
    let d6 = net_field(&h, "delta", "plain6", "GlobalIPv6Address");
    assert!(d6.starts_with("fd00:233::"), "{d6}");
    // network connect --ip6 live, and disconnect.
    h.ok(&[
        "network",
        "connect",
        "--ip6",
        "fd00:233::88",
        "plain6",
        "alpha",
    ]);
    assert_eq!(
        net_field(&h, "alpha", "plain6", "GlobalIPv6Address"),
        "fd00:233::88"
    );
    h.exec_retry("alpha", "ping -6 -c 1 -W 2 delta");
    h.exec_retry("delta", "ping -6 -c 1 -W 2 fd00:233::88");
    h.ok(&["network", "disconnect", "plain6", "alpha"]);
    let gone = h.exec("delta", "ping -6 -c 1 -W 2 fd00:233::88");
    assert!(
        !gone.status.success(),
        "disconnect left the address answering"
    );
    // Gone with the containers: no port, no address held.
    h.ok(&[
        "rm", "-f", "alpha", "beta", "web6", "gamma", "delta", "epsilon",
    ]);
    assert!(h.ports().is_empty(), "{:?}", h.ports());
    h.ok(&["network", "rm", "dual", "auto6", "plain6"]);
}

/// Docker's `docker ps`, `docker port` and `inspect` read a container's ports from the
/// driver's `EndpointOperInfo` as Go values (`[]types.PortBinding`) that a plugin's
/// JSON never decodes into (moby/libnetwork#2451): the plugin answers them as Docker's
/// bridge driver does, and Docker shows none. vswitch's `ctl port show` shows them.
#[test]
#[ignore = "needs root, dockerd and tools: `bash scripts/test` runs it"]
fn published_ports_are_shown_by_vswitch_not_by_docker_ps() {
    let h = DockerHost::start();
    h.network("front", &[]);
    h.run("web", "front", &["--rm", "-p", "8080:80"], &HTTPD);
    assert_eq!(h.curl_retry(8080).trim(), PAGE);
    // The plugin answers the port map in Docker's words...
    let ids = h.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.front.NetworkID}} {{.NetworkSettings.Networks.front.EndpointID}}",
        "web",
    ]);
    let (net, ep) = ids.trim().split_once(' ').unwrap();
    let body = format!(r#"{{"NetworkID":"{net}","EndpointID":"{ep}"}}"#);
    let o = Command::new("sh")
        .args([
            "-c",
            &h.inside(&format!(
                "curl -s --unix-socket {} -d '{body}' http://plugin/NetworkDriver.EndpointOperInfo",
                "/run/docker/plugins/vswitch.sock"
            )),
        ])
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&o.stdout).unwrap();
    let map = &info["Value"]["com.docker.network.portmap"][0];
    assert_eq!(
        (&map["Proto"], &map["Port"]),
        (&6.into(), &80.into()),
        "{info}"
    );
    assert_eq!(map["HostPort"], 8080, "{info}");
    assert_eq!(
        info["Value"]["com.docker.network.endpoint.exposedports"][0]["Port"],
        80
    );
    // ... vswitch shows it ...
    let shown = h.daemon.ctl_ok(&["port", "show", &ep[..12]]);
    assert!(shown.contains("80/tcp -> 0.0.0.0:8080"), "{shown}");
    // ... and Docker does not (if this fails, Docker reads plugins' port maps now:
    // docs/engines.md says otherwise).
    let ps = h.ok(&["ps", "--format", "{{.Names}} [{{.Ports}}]"]);
    assert_eq!(ps.trim(), "web []", "{ps}");
}

/// One plugin call as Docker makes it (POST of JSON to the plugin's socket); the answer.
fn plugin_call(h: &DockerHost, method: &str, body: &Value) -> Value {
    let cmd = h.inside(&format!(
        "curl -s --unix-socket /run/docker/plugins/vswitch.sock -d '{body}' http://plugin/{method}"
    ));
    let o = Command::new("sh").args(["-c", &cmd]).output().unwrap();
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{method}: {e}: {}", o.stdout_text()));
    assert!(v.get("Err").is_none(), "{method}: {v}");
    v
}

/// Docker 28's `network create --ipv6 --ipv4=false` and a container on it, as the
/// calls Docker makes (dockerd 20.10 has no `--ipv4=false`), and what Docker does with
/// the TAP (moves, names, addresses it).
#[test]
#[ignore = "needs root, dockerd and tools: `bash scripts/test` runs it"]
fn an_ipv6_only_network_as_docker_28_asks_for_it() {
    use serde_json::json;
    let h = DockerHost::start();
    let (net, ep) = ("6a".repeat(32), "e6".repeat(32));
    let pool = plugin_call(
        &h,
        "IpamDriver.RequestPool",
        &json!({"AddressSpace": "vswitch", "Pool": "fd00:234::/64", "V6": true}),
    );
    let pool_id = pool["PoolID"].as_str().unwrap();
    let gw = json!({"RequestAddressType": "com.docker.network.gateway"});
    let g = plugin_call(
        &h,
        "IpamDriver.RequestAddress",
        &json!({"PoolID": pool_id, "Address": "", "Options": gw}),
    );
    assert_eq!(g["Address"], "fd00:234::1/64");
    plugin_call(
        &h,
        "NetworkDriver.CreateNetwork",
        &json!({"NetworkID": net, "Options": {"com.docker.network.enable_ipv6": true},
                "IPv4Data": [], "IPv6Data": [{"AddressSpace": "vswitch",
                "Pool": "fd00:234::/64", "Gateway": "fd00:234::1/64"}]}),
    );
    let a = plugin_call(
        &h,
        "IpamDriver.RequestAddress",
        &json!({"PoolID": pool_id, "Address": "", "Options": null}),
    );
    let addr = a["Address"].as_str().unwrap().to_string();
    assert_eq!(addr, "fd00:234::2/64");
    let e = plugin_call(
        &h,
        "NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": net, "EndpointID": ep,
                "Interface": {"Address": "", "AddressIPv6": addr, "MacAddress": ""}}),
    );
    assert_eq!(e["Interface"]["MacAddress"], "02:42:00:00:00:02");
    let ctr = Netns::new("v6o");
    let hold = ctr.spawn("exec sleep 100000");
    let j = plugin_call(
        &h,
        "NetworkDriver.Join",
        &json!({"NetworkID": net, "EndpointID": ep,
                "SandboxKey": format!("/proc/{}/ns/net", hold.pid())}),
    );
    assert_eq!(j["GatewayIPv6"], "fd00:234::1", "{j}");
    assert!(j.get("Gateway").is_none(), "{j}");
    let tap = j["InterfaceName"]["SrcName"].as_str().unwrap();
    // What Docker does with it.
    h.host
        .must(&format!("ip link set {tap} netns {}", hold.pid()));
    ctr.must(&format!(
        "ip link set {tap} name eth0 && ip -6 addr add {addr} dev eth0 nodad \
         && ip link set eth0 up && ip -6 route add default via fd00:234::1"
    ));
    let ping = || ctr.sh("ping -6 -c 1 -W 1 fd00:234::1").status.success();
    assert!(
        eventually(Duration::from_secs(10), ping),
        "no answer over IPv6"
    );
    let v = vswitch_network(&h, &format!("docker-{}", &net[..12]));
    assert_eq!(v["EnableIPv4"], false, "{v}");
    assert_eq!(v["EnableIPv6"], true, "{v}");
    let ports = h.ports();
    assert_eq!(ports[0]["ip6"], "fd00:234::2", "{ports:?}");
    assert!(ports[0]["ip"].is_null(), "{ports:?}");
    // Docker's way out: Leave, DeleteEndpoint, DeleteNetwork.
    let r = json!({"NetworkID": net, "EndpointID": ep});
    plugin_call(&h, "NetworkDriver.Leave", &r);
    plugin_call(&h, "NetworkDriver.DeleteEndpoint", &r);
    plugin_call(
        &h,
        "NetworkDriver.DeleteNetwork",
        &json!({"NetworkID": net}),
    );
    assert!(h.ports().is_empty(), "{:?}", h.ports());
}
