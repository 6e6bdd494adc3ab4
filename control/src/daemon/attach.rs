//! `attach`, `detach`, `connect`, `disconnect`: containers and their endpoints, checked
//! against the state, saved, then their ports opened or closed.

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::Path;

use super::{Daemon, DaemonError, view};
use crate::api::{AttachReq, Detached, Disconnected, Reply};
use crate::state::{
    Container, ContainerDns, DnsOpts, EndpointSpec, Sandbox, StateError, parse_trunk,
};

impl Daemon {
    /// What an `attach` request asks of its endpoint, its arguments parsed and checked.
    pub fn endpoint_spec(a: &AttachReq) -> Result<EndpointSpec, DaemonError> {
        let mac = match &a.mac {
            Some(m) => Some(m.parse().map_err(DaemonError::BadMac)?),
            None => None,
        };
        let trunk = match &a.trunk {
            Some(t) => parse_trunk(t)?,
            None => Vec::new(),
        };
        Ok(EndpointSpec {
            network: a.network.clone(),
            ip: a.ip,
            ip6: a.ip6,
            mac,
            aliases: a.aliases.clone(),
            trunk,
            port_security: !a.no_port_security,
            ifname: a.ifname.clone(),
            claim: a.claim,
            limits: {
                a.limits.check()?;
                a.limits
            },
        })
    }

    /// The container an `attach` would add, checked against the state (nothing changed).
    pub(super) fn new_container(
        &self,
        a: &AttachReq,
        sandbox: &Sandbox,
    ) -> Result<Container, DaemonError> {
        let mut spec = Self::endpoint_spec(a)?;
        // An existing TAP keeps its own MAC unless --mac says otherwise: what it sends
        // carries that address, and port security must expect it.
        if let Sandbox::Tap { ifname } = sandbox
            && spec.mac.is_none()
        {
            spec.mac = self
                .backend
                .tap_mac(ifname)
                .filter(|m| m.is_unicast() && !m.is_zero());
        }
        if let Sandbox::Vm { .. } = sandbox {
            self.check_vm_mtu(&spec.network)?;
        }
        let mut c = self.state.check_attach(&a.name, sandbox, &spec)?;
        if let Some(id) = &a.id {
            c.id = valid_engine_id(id)?;
        }
        c.owner = a.owner.as_deref().map(valid_owner).transpose()?;
        c.dns = a.dns_opts.parse()?;
        self.state.check_resolvers(&c.dns.servers)?;
        Ok(c)
    }

    pub(super) fn attach(
        &mut self,
        a: AttachReq,
        fds: Vec<OwnedFd>,
        conn: u64,
    ) -> Result<Reply, DaemonError> {
        let sandbox = Self::sandbox_of(&a)?;
        let fd = if a.fd {
            Some(fds.into_iter().next().ok_or(DaemonError::NoDescriptor)?)
        } else {
            None
        };
        if a.reattach
            && let Some(c) = self.state.containers.get(&a.name).cloned()
            && matches!(c.sandbox, Sandbox::Run { .. })
        {
            return self.reattach(c, sandbox, fd, conn);
        }
        let c = self.new_container(&a, &sandbox)?;
        let publish = publish_specs(&a)?;
        let mut next = self.state.clone();
        next.attach(c.clone());
        self.save(&next)?;
        if let Err(e) = self.open_endpoint(&c, 0, false, fd) {
            self.save(&self.state)?;
            return Err(e);
        }
        self.state = next;
        if a.fd {
            self.owners.insert(c.name.clone(), conn);
        }
        self.apply();
        if !publish.is_empty()
            && let Err(e) = self.publish(&c.name, &publish)
        {
            let _ = self.detach(&c.name);
            return Err(e);
        }
        Ok(view::attached(&self.state, &c))
    }

    /// Where an `attach` request says the container's interfaces are.
    fn sandbox_of(a: &AttachReq) -> Result<Sandbox, DaemonError> {
        if let Some(host) = &a.create_in {
            return Self::handoff_of(a, host);
        }
        if let Some(socket) = &a.vm_socket {
            if a.tap.is_some() || a.netns.is_some() || a.pid.is_some() || a.fd {
                return Err(DaemonError::AttachWhere);
            }
            return Self::vm_socket_of(socket);
        }
        let sandbox = match (&a.tap, &a.netns, a.pid, a.fd) {
            (Some(t), None, None, false) => Sandbox::Tap { ifname: t.clone() },
            (None, Some(p), None, false) => Sandbox::Netns { path: p.clone() },
            (None, None, Some(pid), false) => Sandbox::Pid {
                pid,
                identity: Some(crate::procid::identity(pid)?),
            },
            (None, None, None, true) => Sandbox::Run {
                pid: a.run_pid.ok_or(DaemonError::NoRunPid)?,
            },
            _ => {
                return Err(DaemonError::AttachWhere);
            }
        };
        if let Sandbox::Netns { path } = &sandbox
            && !Path::new(path).exists()
        {
            return Err(DaemonError::NoNetns(path.clone()));
        }
        Ok(sandbox)
    }

    /// A VM's socket: an absolute path that fits a Unix socket address, in a directory
    /// that exists.
    fn vm_socket_of(socket: &str) -> Result<Sandbox, DaemonError> {
        let p = Path::new(socket);
        let dir_ok = p.parent().is_some_and(|d| d.is_dir());
        if !p.is_absolute() || socket.len() > 107 || !dir_ok || p.file_name().is_none() {
            return Err(DaemonError::BadVmSocket(socket.to_string()));
        }
        Ok(Sandbox::Vm {
            socket: socket.to_string(),
        })
    }

    /// A TAP made in `host` for the engine to move into `netns`, which need not exist
    /// yet (Docker makes the container's namespace after `Join`).
    fn handoff_of(a: &AttachReq, host: &str) -> Result<Sandbox, DaemonError> {
        let Some(netns) = &a.netns else {
            return Err(DaemonError::HandoffWhere);
        };
        if a.tap.is_some() || a.pid.is_some() || a.fd || a.ifname.is_none() {
            return Err(DaemonError::HandoffWhere);
        }
        if !Path::new(host).exists() {
            return Err(DaemonError::NoNetns(host.to_string()));
        }
        Ok(Sandbox::Handoff {
            host: host.to_string(),
            netns: netns.clone(),
        })
    }

    /// The run process is back after a daemon restart: give its endpoint the fd.
    fn reattach(
        &mut self,
        c: Container,
        sandbox: Sandbox,
        fd: Option<OwnedFd>,
        conn: u64,
    ) -> Result<Reply, DaemonError> {
        self.awaiting.remove(&c.name);
        let mut c2 = c;
        c2.sandbox = sandbox;
        self.open_endpoint(&c2, 0, true, fd)?;
        let mut next = self.state.clone();
        next.containers.insert(c2.name.clone(), c2.clone());
        self.save(&next)?;
        self.state = next;
        self.owners.insert(c2.name.clone(), conn);
        self.apply();
        self.restore_published(&c2);
        Ok(view::attached(&self.state, &c2))
    }

    pub(super) fn detach(&mut self, name: &str) -> Result<Reply, DaemonError> {
        let mut next = self.state.clone();
        let c = next.detach(name)?;
        self.save(&next)?;
        self.state = next;
        self.stop_published(&c.published);
        // A pid that names another process now: its interfaces are not ours to delete.
        let ours = Self::wrong_process(&c.sandbox).is_none();
        for i in 0..c.endpoints.len() {
            self.close_port(&c.port_name(i), ours);
        }
        self.owners.remove(name);
        self.awaiting.remove(name);
        self.unrestored.remove(name);
        self.apply();
        Ok(Reply::Detached(Detached {
            detached: name.to_string(),
        }))
    }

    pub(super) fn connect(
        &mut self,
        network: &str,
        name: &str,
        (ip, ip6): (Option<Ipv4Addr>, Option<std::net::Ipv6Addr>),
        aliases: Vec<String>,
        dns_opts: &DnsOpts,
    ) -> Result<Reply, DaemonError> {
        let spec = EndpointSpec {
            network: network.to_string(),
            ip,
            ip6,
            aliases,
            port_security: true,
            ..Default::default()
        };
        let e = self.state.check_connect(name, &spec)?;
        if let Some(c) = self.state.containers.get(name)
            && let Some(why) = Self::wrong_process(&c.sandbox)
        {
            return Err(DaemonError::WrongProcess {
                name: name.to_string(),
                why,
            });
        }
        let mut next = self.state.clone();
        next.connect(name, e.clone());
        if !dns_opts.is_empty()
            && let Some(c) = next.containers.get_mut(name)
        {
            merge_dns(&mut c.dns, dns_opts.parse()?);
            let servers = c.dns.servers.clone();
            self.state.check_resolvers(&servers)?;
        }
        let c = next.container(name)?.clone();
        self.save(&next)?;
        let i = c.endpoints.len() - 1;
        let old = std::mem::replace(&mut self.state, next);
        if let Err(err) = self.open_endpoint(&c, i, false, None) {
            self.state = old;
            self.save(&self.state)?;
            return Err(err);
        }
        self.apply();
        Ok(Reply::Endpoint(Box::new(view::endpoint_info(
            &self.state,
            &c,
            &e,
            i,
        ))))
    }

    pub(super) fn disconnect(&mut self, name: &str, network: &str) -> Result<Reply, DaemonError> {
        let c = self.state.container(name)?.clone();
        let i = c
            .endpoints
            .iter()
            .position(|e| e.network == network)
            .ok_or_else(|| StateError::NotConnected(name.to_string(), network.to_string()))?;
        let mut next = self.state.clone();
        next.disconnect(name, network)?;
        self.save(&next)?;
        self.state = next;
        let ours = Self::wrong_process(&c.sandbox).is_none();
        self.close_port(&c.port_name(i), ours);
        self.apply();
        Ok(Reply::Disconnected(Disconnected {
            disconnected: name.to_string(),
            network: network.to_string(),
        }))
    }
}

/// What `connect` gave replaces what the container had, option by option.
fn merge_dns(have: &mut ContainerDns, given: ContainerDns) {
    if !given.servers.is_empty() {
        have.servers = given.servers;
    }
    if !given.search.is_empty() {
        have.search = given.search;
    }
    if !given.options.is_empty() {
        have.options = given.options;
    }
    if given.hostname.is_some() {
        have.hostname = given.hostname;
    }
    for h in given.hosts {
        if !have.hosts.contains(&h) {
            have.hosts.push(h);
        }
    }
}

impl Daemon {
    /// A VM socket carries frames up to `stream::MAX_FRAME` bytes: the network's MTU
    /// must fit.
    fn check_vm_mtu(&self, network: &str) -> Result<(), DaemonError> {
        let max = dataplane::port::stream::MAX_FRAME;
        match self.state.networks.get(network) {
            Some(n) if usize::from(n.mtu) + 18 > max => Err(DaemonError::VmMtu {
                network: network.to_string(),
                mtu: n.mtu,
                max,
            }),
            _ => Ok(()),
        }
    }
}

/// The `-p` specs of an attach, with every `--expose` port on a free host port when
/// `publish_all` (Docker's `-P`).
fn publish_specs(a: &AttachReq) -> Result<Vec<String>, DaemonError> {
    let mut specs = a.publish.clone();
    if !a.publish_all {
        return Ok(specs);
    }
    if a.expose.is_empty() {
        return Err(DaemonError::PublishAllNothing);
    }
    for e in &a.expose {
        // PORT[-END][/PROTO]: no host part; the grammar of `-p` checks the rest.
        if e.contains(':') {
            return Err(DaemonError::BadExpose(e.clone()));
        }
        crate::publish::parse(e).map_err(|_| DaemonError::BadExpose(e.clone()))?;
        specs.push(e.clone());
    }
    Ok(specs)
}

/// An engine's container id: 1 to 128 letters, digits, `_`, `.` or `-`.
fn valid_engine_id(id: &str) -> Result<String, DaemonError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c));
    if ok {
        Ok(id.to_string())
    } else {
        Err(DaemonError::BadEngineId(id.to_string()))
    }
}

/// Who manages a container: one of the engines vswitch knows.
fn valid_owner(owner: &str) -> Result<String, DaemonError> {
    match owner {
        "cni" | "netavark" | "docker" => Ok(owner.to_string()),
        o => Err(DaemonError::UnknownOwner(o.to_string())),
    }
}
