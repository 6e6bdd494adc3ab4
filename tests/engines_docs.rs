//! The sessions of docs/engines.md, run as written.
//!
//! The podman 4 and Docker sessions run verbatim (bash `-e`) in fresh mount, network and
//! PID namespaces whose writable directories are private (overlays or tmpfs), so the
//! machine is left as it was and every process the session starts ends with it. The nerdctl and Kubernetes
//! configurations (those engines are not on the test machines) are taken from the page as
//! written and driven through the plugin the way those runtimes call it.

// Test code: a failed step is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::*;

const DOC: &str = include_str!("../docs/engines.md");

/// The text of the first fenced block after the line holding `marker`.
fn block_after(marker: &str) -> String {
    let start = DOC
        .find(marker)
        .unwrap_or_else(|| panic!("docs/engines.md has no `{marker}`"));
    let mut lines = DOC[start..].lines().skip_while(|l| !l.starts_with("```"));
    assert!(lines.next().is_some(), "no block after {marker}");
    let body: Vec<&str> = lines.take_while(|l| !l.starts_with("```")).collect();
    body.join("\n") + "\n"
}

/// The here-document of a shell block (between `<<'EOF'` and `EOF`).
fn heredoc(block: &str) -> String {
    let body: Vec<&str> = block
        .lines()
        .skip_while(|l| !l.contains("<<'EOF'"))
        .skip(1)
        .take_while(|l| *l != "EOF")
        .collect();
    body.join("\n")
}

/// What the session's machine needs beyond the page: this sandbox's crun cannot set
/// rlimits and its cgroups are in hybrid mode, so podman is told runc, cgroupfs and fixed
/// rlimits in the distribution's defaults file (the session edits /etc's own file).
const PODMAN_DEFAULTS: &str = r#"[containers]
default_ulimits = ["nofile=20000:20000", "nproc=1000:1000"]
default_sysctls = ["net.ipv4.ping_group_range=0 0"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"#;

/// Private copies of every directory the session writes, then the session itself.
const HARNESS: &str = r#"set -eu
ip link set lo up
scratch=$1
for d in /etc/containers /usr/share/containers /usr/lib/cni /etc/cni/net.d; do
  n=$(echo "$d" | tr / _)
  mkdir -p "$scratch/up$n" "$scratch/work$n" "$d"
  mount -t overlay overlay -o "lowerdir=$d,upperdir=$scratch/up$n,workdir=$scratch/work$n" "$d"
done
for d in /run /srv /var/lib/containers /var/lib/cni /var/lib/vswitch /var/tmp; do
  mkdir -p "$d"
  mount -t tmpfs tmpfs "$d"
done
rm -f /etc/containers/containers.conf
cp "$scratch/podman-defaults.conf" /usr/share/containers/containers.conf
cd "$scratch/checkout"
exec bash -e -x "$scratch/session.sh"
"#;

/// Files by name: (name, path or text).
type Named<'a> = &'a [(&'a str, &'a str)];

/// Runs `session` under `harness` (given the scratch directory), in
/// fresh mount, network and PID namespaces, with `vswitch` (and `links`, name -> file)
/// first on PATH and `target/release/NAME` for each of `release`; `files` are written
/// into the scratch directory. Its stdout; the test fails with the output when it fails.
fn run_session(
    session: &str,
    harness: &str,
    files: Named,
    (release, links): (Named, Named),
) -> String {
    let dir = TempDir::new("docs");
    let p = dir.path();
    let target = p.join("checkout/target/release");
    std::fs::create_dir_all(&target).expect("checkout dir");
    std::fs::create_dir_all(p.join("bin")).expect("bin dir");
    for (name, file) in release {
        std::os::unix::fs::symlink(file, target.join(name)).expect("link a binary");
    }
    std::os::unix::fs::symlink(bin(), p.join("bin/vswitch")).expect("link vswitch");
    for (name, file) in links {
        std::os::unix::fs::symlink(file, p.join("bin").join(name)).expect("link a tool");
    }
    std::fs::write(p.join("session.sh"), session).expect("session");
    std::fs::write(p.join("harness.sh"), harness).expect("harness");
    for (name, text) in files {
        std::fs::write(p.join(name), text).expect("scratch file");
    }
    let path = format!(
        "{}:{}",
        p.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new("timeout")
        .args([
            "-k", "5", "180", "unshare", "--mount", "--net", "--pid", "--fork",
        ])
        .args(["--mount-proc", "bash"])
        .arg(p.join("harness.sh"))
        .arg(p)
        .env("PATH", path)
        .env_remove("VSWITCH_SOCKET")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_STATE_HOME")
        .env_remove("CONTAINERS_CONF")
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .output()
        .expect("run the session");
    let (out, err) = (o.stdout_text(), o.stderr_text());
    assert!(o.status.success(), "the session failed:\n{out}\n{err}");
    println!("{out}");
    out
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn podman_cni_session_runs_as_written() {
    require_root();
    require(&["podman", "runc", "curl", "unshare", "ip"]);
    // The dual-stack session continues the first one.
    let session =
        block_after("<!-- session: podman-cni ") + &block_after("<!-- session: podman-cni-dual");
    let out = run_session(
        &session,
        HARNESS,
        &[("podman-defaults.conf", PODMAN_DEFAULTS)],
        (&[("vswitch-cni", env!("CARGO_BIN_EXE_vswitch-cni"))], &[]),
    );
    // wget in the second container and curl from the host both got the page.
    assert_eq!(out.matches("hello from web").count(), 2, "{out}");
    // port ls showed web on front, then nothing once podman removed it.
    let ls: Vec<&str> = out.lines().filter(|l| l.contains("front")).collect();
    assert_eq!(ls.len(), 1, "web listed once, then gone: {out}");
    assert!(ls.iter().all(|l| l.contains("web")), "{out}");
    // Dual stack: podman shows the asked IPv6 address; web answers ping over IPv6.
    assert!(out.lines().any(|l| l.trim() == "fd00:89:11::80"), "{out}");
    assert!(out.contains("from fd00:89:11::80"), "{out}");
}

/// What a machine running Docker has before the session: a dockerd (vswitch needs
/// neither its bridge nor its iptables rules), private directories for it and vswitch.
const DOCKER_HARNESS: &str = r#"set -eu
ip link set lo up
scratch=$1
for d in /run /srv /etc/docker /var/lib/docker /var/lib/vswitch /var/tmp; do
  mkdir -p "$d"
  mount -t tmpfs tmpfs "$d"
done
cd "$scratch/checkout"
dockerd --bridge=none --iptables=false --ip6tables=false --storage-driver=vfs \
  >"$scratch/dockerd.log" 2>&1 &
until docker version >/dev/null 2>&1; do sleep 0.2; done
bash -e -x "$scratch/session.sh"
"#;

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn docker_session_runs_as_written() {
    require_root();
    require(&["dockerd", "curl", "unshare", "ip", "tar"]);
    // The docker.io CLI: another `docker` on PATH may speak a newer API only.
    // The dual-stack session continues the first one.
    let session = block_after("<!-- session: docker ") + &block_after("<!-- session: docker-dual");
    let out = run_session(
        &session,
        DOCKER_HARNESS,
        &[],
        (
            &[("vswitch-docker", env!("CARGO_BIN_EXE_vswitch-docker"))],
            &[("docker", "/usr/bin/docker")],
        ),
    );
    // wget in a second container and curl from the host both got the page.
    assert_eq!(out.matches("hello from web").count(), 2, "{out}");
    // port ls showed web's endpoint with 8080 published, then nothing.
    let ls: Vec<&str> = out.lines().filter(|l| l.contains("10.89.10.")).collect();
    assert_eq!(ls.len(), 1, "web listed once, then gone: {out}");
    assert!(
        ls[0].contains("8080->80/tcp") && ls[0].contains("handoff"),
        "{out}"
    );
    // Dual stack: Docker shows the asked IPv6 address; web answers ping over IPv6.
    assert!(out.lines().any(|l| l.trim() == "fd00:89:11::80"), "{out}");
    assert!(out.contains("from fd00:89:11::80"), "{out}");
}

/// Runs the plugin as a runtime does.
fn cni(cmd: &str, env: &[(&str, &str)], conf: &str) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vswitch-cni"))
        .env("CNI_COMMAND", cmd)
        .env("CNI_PATH", "/usr/lib/cni")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vswitch-cni");
    if let Some(mut i) = c.stdin.take() {
        let _ = i.write_all(conf.as_bytes());
    }
    c.wait_with_output().expect("plugin output")
}

/// The first plugin of `conflist` as a runtime hands it over: with the list's
/// `cniVersion` and `name`, and the capabilities' runtime values.
fn plugin_conf(conflist: &str, host_port: u16) -> String {
    let list: serde_json::Value = serde_json::from_str(conflist).expect("conflist is JSON");
    let mut conf = list["plugins"][0].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    conf["runtimeConfig"] = serde_json::json!({
        "portMappings": [{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}]
    });
    conf.to_string()
}

/// ADD, a web server reached through the published port, CHECK, DEL.
fn drive(conflist: &str, subnet_prefix: &str, host_port: u16) {
    let d = Daemon::start(&[]);
    let ns = Netns::new("doc");
    let sock = d.socket().display().to_string();
    let conf = plugin_conf(conflist, host_port);
    let id = unique("ctr");
    let env = [
        ("CNI_CONTAINERID", id.as_str()),
        ("CNI_NETNS", &ns.path()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web"),
        ("VSWITCH_SOCKET", sock.as_str()),
    ];
    let o = cni("ADD", &env, &conf);
    assert!(
        o.status.success(),
        "ADD: {}{}",
        o.stdout_text(),
        o.stderr_text()
    );
    let res: serde_json::Value = serde_json::from_slice(&o.stdout).expect("result JSON");
    let addr = res["ips"][0]["address"].as_str().unwrap_or_default();
    assert!(addr.starts_with(subnet_prefix), "{res}");
    let www = TempDir::new("www");
    std::fs::write(www.path().join("index.html"), "hello from web\n").expect("page");
    let _httpd = ns.spawn(&format!(
        "busybox httpd -f -p 80 -h {}",
        www.path().display()
    ));
    let got = retry(&format!("curl -s -m 2 http://127.0.0.1:{host_port}/"));
    assert_eq!(got.trim(), "hello from web");
    let o = cni("CHECK", &env, &add_prev(&conf, &res));
    assert!(o.status.success(), "CHECK: {}", o.stdout_text());
    let o = cni("DEL", &env, &conf);
    assert!(o.status.success(), "DEL: {}", o.stdout_text());
    assert_eq!(d.ctl_json(&["port", "ls"]), serde_json::json!([]));
}

fn add_prev(conf: &str, res: &serde_json::Value) -> String {
    let mut c: serde_json::Value = serde_json::from_str(conf).expect("conf");
    c["prevResult"] = res.clone();
    c.to_string()
}

fn retry(cmd: &str) -> String {
    let mut last = String::new();
    for _ in 0..25 {
        let o = sh(cmd);
        if o.status.success() {
            return o.stdout_text();
        }
        last = o.stderr_text();
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("`{cmd}` never succeeded: {last}");
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn nerdctl_conflist_works_as_written() {
    require(&["busybox", "curl"]);
    let conflist = heredoc(&block_after("<!-- conflist: nerdctl"));
    drive(&conflist, "10.89.8.", 18721);
}

#[test]
#[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
fn kubernetes_conflist_works_as_written() {
    require(&["busybox", "curl"]);
    let conflist = block_after("<!-- conflist: kubernetes");
    drive(&conflist, "10.244.1.", 18722);
}
