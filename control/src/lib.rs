//! The vswitch control plane: the CLI, the daemon, `ctl`, `run`.

pub mod api;
pub mod backend;
pub mod bench;
pub mod capture;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod daemon_main;
pub mod engines;
pub mod events;
pub mod framing;
pub mod limit;
pub mod logging;
pub mod manpages;
pub mod metrics;
pub mod net;
pub mod paths;
pub mod procid;
pub mod publish;
pub mod render;
pub mod run;
pub mod state;
pub mod state_check;
pub mod tap_backend;
