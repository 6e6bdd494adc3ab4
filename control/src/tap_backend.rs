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
