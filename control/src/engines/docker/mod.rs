//! `vswitch-docker`: Docker's network driver and IPAM driver plugin (libnetwork's remote
//! driver API), so `docker network create -d vswitch --ipam-driver vswitch` and `docker
//! run --network` put containers on vswitch networks. Docker finds the plugin by its
//! socket, `/run/docker/plugins/vswitch.sock` (the file's name is the driver's name),
//! and speaks JSON over HTTP to it ([`http`]). A thin client of the daemon's control
//! socket, as `vswitch-cni` and `vswitch-netavark` are:
//!
//! - a Docker network is a vswitch network whose id is Docker's network id
//!   (`CreateNetwork`, `DeleteNetwork`; [`options`] maps Docker's words);
//! - the IPAM calls are vswitch's own IPAM: `RequestPool` picks a free subnet the way the
//!   daemon does, `RequestAddress` reserves the address in the daemon, and the endpoint
//!   takes that reservation, so Docker and vswitch never disagree about an address;
//! - a Docker endpoint is a vswitch container (named by the endpoint id's first 12
//!   digits, `owner: docker`). At `Join` the daemon creates its TAP in Docker's own
//!   namespace with the endpoint's MAC and the network's MTU, and Docker moves it into
//!   the container, names it `ethN` and configures it (as it does a veth's end);
//! - `ProgramExternalConnectivity` publishes the container's `-p`/`-P` ports through
//!   vswitch (no docker-proxy, no iptables), `RevokeExternalConnectivity` unpublishes;
//! - `DeleteEndpoint` detaches.
//!
//! Docker's resolver (127.0.0.11) answers the containers' names and aliases: only Docker
//! knows them (the driver API carries neither names nor aliases), so the vswitch network
//! forwards DNS without answering names of its own.

mod driver;
pub mod http;
mod ipam;
pub mod options;
pub mod types;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::api::{NetworkRow, Request};
use crate::client::{Client, ClientError};
use crate::engines::{self, Listed};
use dataplane::wire::MacAddr;

/// Where Docker looks for plugin sockets; `vswitch.sock` makes the driver `vswitch`.
pub const DEFAULT_LISTEN: &str = "/run/docker/plugins/vswitch.sock";
/// The `owner` of the containers this plugin attaches.
pub const OWNER: &str = "docker";
/// Endpoints created and not yet joined, and subnets handed out and not yet made
/// networks, held at once (Docker joins or gives them back within a call or two).
pub const MAX_PENDING: usize = 1024;

/// Why a plugin call failed: one line, which Docker shows as `Error response from
/// daemon: NetworkDriver.Join: ...`.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("{} ({why})", engines::daemon_down(.socket))]
    Daemon { socket: PathBuf, why: String },
    #[error("{0}")]
    Refused(String),
    #[error("the request is not the JSON Docker sends: {0}")]
    Input(#[from] serde_json::Error),
    #[error("{0} is not a call this plugin serves")]
    Unknown(String),
}

impl From<ClientError> for DockerError {
    fn from(e: ClientError) -> DockerError {
        match e {
            ClientError::Connect(socket, why) => DockerError::Daemon {
                socket,
                why: why.to_string(),
            },
            ClientError::Refused(msg) => DockerError::Refused(msg),
            e => DockerError::Refused(e.to_string()),
        }
    }
}

impl DockerError {
    fn status(&self) -> u16 {
        match self {
            DockerError::Input(_) => 400,
            DockerError::Unknown(_) => 404,
            _ => 500,
        }
    }
}

/// An endpoint between `CreateEndpoint` and `Join`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    network: String,
    ip: Option<Ipv4Addr>,
    ip6: Option<std::net::Ipv6Addr>,
    mac: MacAddr,
}

/// What the plugin holds between calls (nothing else survives a restart of it).
#[derive(Debug, Default)]
struct Held {
    /// Subnet -> the ip range asked with it: pools `RequestPool` gave, waiting for
    /// their `CreateNetwork`.
    pools: HashMap<String, Option<String>>,
    /// Endpoint id -> its address and MAC, until `Join`.
    endpoints: HashMap<String, Pending>,
}

/// The plugin: the daemon's socket and what it holds between calls.
pub struct Plugin {
    socket: PathBuf,
    /// The driver's name (the socket's file name): what users type after `-d`.
    driver: String,
    /// The namespace the daemon creates TAPs in for Docker to move (Docker's own).
    host_ns: String,
    held: Mutex<Held>,
}

impl Plugin {
    pub fn new(socket: PathBuf, host_ns: String, driver: &str) -> Plugin {
        Plugin {
            socket,
            driver: driver.to_string(),
            host_ns,
            held: Mutex::new(Held::default()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn client(&self) -> Result<Client, DockerError> {
        Ok(Client::connect(&self.socket)?)
    }

    /// Answers one HTTP request.
    pub fn handle(&self, req: &http::Request) -> http::Response {
        match self.call(req.path.trim_start_matches('/'), &req.body) {
            Ok(v) => http::Response {
                status: 200,
                body: v.to_string().into_bytes(),
            },
            Err(e) => {
                eprintln!("vswitch-docker: {}: {e}", req.path);
                http::Response::err(e.status(), &e.to_string())
            }
        }
    }

    /// Runs the plugin call `method` on the JSON `body`.
    pub fn call(&self, method: &str, body: &[u8]) -> Result<Value, DockerError> {
        match method {
            "Plugin.Activate" => Ok(json!({"Implements": ["NetworkDriver", "IpamDriver"]})),
            "NetworkDriver.GetCapabilities" => {
                Ok(json!({"Scope": "local", "ConnectivityScope": "local"}))
            }
            "NetworkDriver.CreateNetwork" => self.create_network(parse(body)?),
            "NetworkDriver.DeleteNetwork" => self.delete_network(parse(body)?),
            "NetworkDriver.CreateEndpoint" => self.create_endpoint(parse(body)?),
            "NetworkDriver.DeleteEndpoint" => self.delete_endpoint(parse(body)?),
            "NetworkDriver.Join" => self.join(parse(body)?),
            "NetworkDriver.Leave" => parse::<types::EndpointRef>(body).map(|_| json!({})),
            "NetworkDriver.EndpointOperInfo" => self.oper_info(parse(body)?),
            "NetworkDriver.ProgramExternalConnectivity" => self.program_external(parse(body)?),
            "NetworkDriver.RevokeExternalConnectivity" => self.revoke_external(parse(body)?),
            "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => Ok(json!({})),
            "IpamDriver.GetCapabilities" => {
                Ok(json!({"RequiresMACAddress": false, "RequiresRequestReplay": false}))
            }
            "IpamDriver.GetDefaultAddressSpaces" => Ok(json!({
                "LocalDefaultAddressSpace": ipam::ADDRESS_SPACE,
                "GlobalDefaultAddressSpace": ipam::ADDRESS_SPACE,
            })),
            "IpamDriver.RequestPool" => self.request_pool(parse(body)?),
            "IpamDriver.ReleasePool" => self.release_pool(parse(body)?),
            "IpamDriver.RequestAddress" => self.request_address(parse(body)?),
            "IpamDriver.ReleaseAddress" => self.release_address(parse(body)?),
            other => Err(DockerError::Unknown(other.to_string())),
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, DockerError> {
    Ok(serde_json::from_slice(body)?)
}

/// The daemon's networks.
fn networks(c: &mut Client) -> Result<Vec<NetworkRow>, DockerError> {
    Ok(c.request(Request::NetworkLs)?)
}

/// The vswitch network of Docker network `id`.
fn network_of(c: &mut Client, id: &str) -> Result<Option<NetworkRow>, DockerError> {
    Ok(networks(c)?.into_iter().find(|n| n.id == id))
}

/// The vswitch container of Docker endpoint `id`.
fn container_of(c: &mut Client, id: &str) -> Result<Option<Listed>, DockerError> {
    let list = engines::containers(c).map_err(|e| DockerError::Refused(e.to_string()))?;
    Ok(list
        .into_iter()
        .find(|l| l.owner.as_deref() == Some(OWNER) && l.id == id))
}

/// The namespace Docker moves interfaces from: this process's, which is Docker's. Named
/// by init's path when it is the host's (a path that outlives this process).
pub fn host_namespace() -> String {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    match (id("/proc/self/ns/net"), id("/proc/1/ns/net")) {
        (Some(a), Some(b)) if a == b => "/proc/1/ns/net".to_string(),
        _ => format!("/proc/{}/ns/net", std::process::id()),
    }
}

/// `vswitch-docker`'s arguments.
#[derive(Debug, clap::Parser)]
#[command(
    name = "vswitch-docker",
    version,
    about = "Docker's network and IPAM driver for vswitch (docker network create -d vswitch --ipam-driver vswitch)"
)]
struct Args {
    /// The socket Docker finds the plugin at: its file name is the driver's name.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_LISTEN)]
    listen: PathBuf,
    /// The daemon's control socket (default: $VSWITCH_SOCKET, else
    /// $XDG_RUNTIME_DIR/vswitch/ctl.sock, else /run/vswitch/ctl.sock).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

/// Why the plugin could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0} is served by another process already (a running vswitch-docker?)")]
    Served(PathBuf),
    #[error("cannot listen on {0}: {1}")]
    Listen(PathBuf, std::io::Error),
}

/// Listens on `path`: its directory made, a stale socket file replaced, root only.
pub fn listen(path: &Path) -> Result<std::os::unix::net::UnixListener, StartError> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |e| StartError::Listen(path.to_path_buf(), e);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(StartError::Served(path.to_path_buf()));
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e)),
        _ => {}
    }
    let l = std::os::unix::net::UnixListener::bind(path).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    Ok(l)
}

/// The binary's entry: serves until killed; the exit status when it cannot.
pub fn main() -> std::process::ExitCode {
    use clap::Parser;
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("vswitch-docker: {}", crate::cli::usage_line(&e));
            return std::process::ExitCode::from(2);
        }
    };
    let socket = args.socket.unwrap_or_else(crate::paths::default_socket);
    let listener = match listen(&args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vswitch-docker: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let driver = args
        .listen
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy();
    eprintln!(
        "vswitch-docker: driver {driver:?} on {} (vswitch daemon at {})",
        args.listen.display(),
        socket.display()
    );
    let plugin = Arc::new(Plugin::new(socket, host_namespace(), &driver));
    let served = http::serve(listener, Arc::new(move |r| plugin.handle(r)));
    if let Err(e) = served {
        eprintln!("vswitch-docker: {e}");
    }
    std::process::ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin() -> Plugin {
        Plugin::new(
            "/nonexistent/vswitch.sock".into(),
            "/proc/1/ns/net".into(),
            "vswitch",
        )
    }

    #[test]
    fn activation_and_capabilities_need_no_daemon() {
        let p = plugin();
        let v = p.call("Plugin.Activate", b"").unwrap();
        assert_eq!(v["Implements"], json!(["NetworkDriver", "IpamDriver"]));
        let v = p.call("NetworkDriver.GetCapabilities", b"").unwrap();
        assert_eq!(v["Scope"], "local");
        let v = p.call("IpamDriver.GetDefaultAddressSpaces", b"").unwrap();
        assert_eq!(v["LocalDefaultAddressSpace"], ipam::ADDRESS_SPACE);
    }

    #[test]
    fn failures_are_one_json_err_with_a_status() {
        let p = plugin();
        let r = p.handle(&http::Request {
            method: "POST".into(),
            path: "/NetworkDriver.DeleteNetwork".into(),
            body: br#"{"NetworkID":"abc"}"#.to_vec(),
        });
        assert_eq!(r.status, 500);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        let msg = v["Err"].as_str().unwrap();
        assert!(msg.contains("start it with `vswitch daemon`"), "{msg}");
        let r = p.handle(&http::Request {
            method: "POST".into(),
            path: "/NetworkDriver.Join".into(),
            body: b"{not json".to_vec(),
        });
        assert_eq!(r.status, 400);
        let r = p.handle(&http::Request {
            method: "POST".into(),
            path: "/NetworkDriver.AllocateNetwork".into(),
            body: b"{}".to_vec(),
        });
        assert_eq!(r.status, 404);
    }

    #[test]
    fn the_host_namespace_is_a_path_that_exists() {
        assert!(Path::new(&host_namespace()).exists());
    }
}
