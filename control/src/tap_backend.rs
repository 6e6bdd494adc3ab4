//! The real port backend: TAP devices.

use std::os::fd::OwnedFd;
use std::path::Path;

use crate::backend::{Backend, BackendError, Handles, IfConfig};

pub struct TapBackend;

pub fn backend() -> Box<dyn Backend> {
    Box::new(TapBackend)
}

fn unavailable() -> BackendError {
    BackendError::Failed("TAP ports are not available in this build".into())
}

impl Backend for TapBackend {
    fn open_tap(&mut self, _ifname: &str, _workers: usize) -> Result<Handles, BackendError> {
        Err(unavailable())
    }
    fn create_in_netns(
        &mut self,
        _ns: &Path,
        _cfg: &IfConfig,
        _workers: usize,
        _reopen: bool,
    ) -> Result<Handles, BackendError> {
        Err(unavailable())
    }
    fn delete_in_netns(&mut self, _ns: &Path, _ifname: &str) -> Result<(), BackendError> {
        Ok(())
    }
    fn adopt_fd(&mut self, _fd: OwnedFd, _workers: usize) -> Result<Handles, BackendError> {
        Err(unavailable())
    }
}

/// Brings up `lo` in the current network namespace.
pub fn loopback_up() -> std::io::Result<()> {
    Err(std::io::Error::other("not available in this build"))
}

/// Creates the TAP `ifname` in the current network namespace (for `vswitch run`).
pub fn create_local_tap(_ifname: &str, _vnet_hdr: bool) -> std::io::Result<OwnedFd> {
    Err(std::io::Error::other("not available in this build"))
}

/// Configures an interface of the current network namespace.
pub fn configure_local(_cfg: &IfConfig) -> std::io::Result<()> {
    Err(std::io::Error::other("not available in this build"))
}
