//! A root filesystem holding a static busybox and the applets the tests run: what the
//! container engines' tests give their containers (no registry, no image pull). Debian
//! 12's busybox `wget -T` crashes: bound a wget with `timeout N wget` instead.

use std::path::Path;
use std::process::Command;

/// The applets every rootfs links.
pub const APPLETS: [&str; 15] = [
    "sh", "ping", "wget", "nc", "cat", "echo", "sleep", "ip", "httpd", "dd", "wc", "nslookup",
    "hostname", "true", "timeout",
];

/// The machine's static busybox; fails the test clearly when there is none.
pub fn static_busybox() -> &'static str {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("ldd {p} 2>&1 | grep -q 'not a dynamic'"))
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
        .expect("this test needs a static busybox: run `bash scripts/test`, which installs busybox-static")
}

/// Fills `root` (which has `bin/`) with busybox and [`APPLETS`].
pub fn rootfs(root: &Path) {
    std::fs::copy(static_busybox(), root.join("bin/busybox")).expect("copy busybox");
    for applet in APPLETS {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
}
