//! The vswitch control plane: the CLI, the daemon, `ctl`, `run`.

pub mod cli;
