//! Where the control socket and the state live by default.

use std::path::PathBuf;

/// `$VSWITCH_SOCKET`, else `$XDG_RUNTIME_DIR/vswitch/ctl.sock`, else `/run/vswitch/ctl.sock`.
pub fn default_socket() -> PathBuf {
    if let Some(p) = std::env::var_os("VSWITCH_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        return PathBuf::from(d).join("vswitch").join("ctl.sock");
    }
    PathBuf::from("/run/vswitch/ctl.sock")
}

/// `$XDG_STATE_HOME/vswitch`, else `/var/lib/vswitch`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(d).join("vswitch");
    }
    PathBuf::from("/var/lib/vswitch")
}
