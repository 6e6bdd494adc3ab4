//! Network namespaces and the interfaces inside them.
//!
//! A thread's network namespace is its own, and the daemon is multi-threaded:
//! [`in_netns`] runs a closure on a fresh, short-lived thread that has entered the
//! namespace (`setns(CLONE_NEWNET)`). Sockets and `/dev/net/tun` descriptors opened
//! there stay bound to that namespace after the thread exits, so a TAP created inside a
//! container's namespace ([`create_tap_in`]) is then read and written from any thread.
//!
//! Interfaces are configured with the classic ioctls on an `AF_INET` datagram socket made
//! inside the namespace ([`IfSocket`]): MAC, MTU, IPv4 address and netmask, up/down, a
//! default route, renaming. Nothing here runs the `ip` binary or speaks netlink.
//!
//! Rootless: a process that is root of its own user namespace, and thereby owns the
//! network namespace it unshared, can do all of this too, provided it may open
//! `/dev/net/tun` (mode 0666, the usual default). [`NetnsRef::Current`] runs in the
//! calling thread without entering anything, for a single-threaded `vswitch run` that
//! has already unshared its namespace.

use crate::port::tap::{TapError, TapOptions, TapPort, check_ifname, ifreq_for};
use crate::wire::MacAddr;
use std::ffi::CString;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Which network namespace to act in.
#[derive(Debug, Clone, Copy)]
pub enum NetnsRef<'a> {
    /// The calling thread's own: no thread, no setns.
    Current,
    /// A namespace file: `/run/netns/NAME`, `/proc/PID/ns/net`, or a bind mount of one.
    Path(&'a Path),
    /// An open descriptor of a namespace file.
    Fd(BorrowedFd<'a>),
}

impl<'a> From<&'a Path> for NetnsRef<'a> {
    fn from(p: &'a Path) -> Self {
        NetnsRef::Path(p)
    }
}

impl<'a> From<&'a PathBuf> for NetnsRef<'a> {
    fn from(p: &'a PathBuf) -> Self {
        NetnsRef::Path(p)
    }
}

impl<'a> From<&'a str> for NetnsRef<'a> {
    fn from(p: &'a str) -> Self {
        NetnsRef::Path(Path::new(p))
    }
}

impl<'a> From<BorrowedFd<'a>> for NetnsRef<'a> {
    fn from(fd: BorrowedFd<'a>) -> Self {
        NetnsRef::Fd(fd)
    }
}

impl<'a> From<&'a OwnedFd> for NetnsRef<'a> {
    fn from(fd: &'a OwnedFd) -> Self {
        NetnsRef::Fd(fd.as_fd())
    }
}

/// The namespace file of a process (`attach --pid`).
pub fn netns_path_of_pid(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

/// Why a namespace operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {path}: {source}{}", open_hint(source))]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot enter the network namespace: {source}{}", enter_hint(source))]
    Enter {
        #[source]
        source: io::Error,
    },
    #[error("cannot start a thread to enter the network namespace: {source}")]
    Thread {
        #[source]
        source: io::Error,
    },
    #[error("the task run inside the network namespace panicked")]
    Panicked,
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error("cannot create a socket to configure interfaces: {source}")]
    Socket {
        #[source]
        source: io::Error,
    },
    #[error("{ifname}: {op} failed: {source}{}", ioctl_hint(source))]
    Ioctl {
        ifname: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("invalid IPv4 prefix length /{0} (0 to 32)")]
    BadPrefix(u8),
    #[error("{ifname}: cannot set {key} (is IPv6 enabled in the kernel?): {source}")]
    Sysctl {
        ifname: String,
        key: &'static str,
        #[source]
        source: io::Error,
    },
}

fn open_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOENT) => " (no such namespace: the container may have exited)",
        Some(libc::EACCES) | Some(libc::EPERM) => {
            " (reading another process's namespace needs root or the same user)"
        }
        _ => "",
    }
}

fn enter_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) => {
            " (entering a network namespace needs CAP_SYS_ADMIN over it: run as root, or \
             inside the user namespace that owns it)"
        }
        Some(libc::EINVAL) => " (the file is not a network namespace)",
        _ => "",
    }
}

fn ioctl_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " (configuring interfaces needs CAP_NET_ADMIN in their network namespace)"
        }
        Some(libc::ENODEV) => " (no interface of that name in the network namespace)",
        Some(libc::ENETUNREACH) => " (the gateway is not on a subnet of an interface that is up)",
        _ => "",
    }
}

fn open_ns(path: &Path) -> Result<OwnedFd, NetnsError> {
    std::fs::File::open(path)
        .map(OwnedFd::from)
        .map_err(|source| NetnsError::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// Runs `f` inside the network namespace `ns` and returns what it returns.
///
/// For a path or a descriptor, `f` runs on a new thread that enters the namespace and
/// ends with `f`; the caller's threads are untouched. Descriptors `f` opens (sockets,
/// `/dev/net/tun`) stay bound to the namespace. `f` may borrow from the caller.
pub fn in_netns<'a, T, F>(ns: impl Into<NetnsRef<'a>>, f: F) -> Result<T, NetnsError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let opened;
    let fd = match ns.into() {
        NetnsRef::Current => return Ok(f()),
        NetnsRef::Path(p) => {
            opened = open_ns(p)?;
            opened.as_fd()
        }
        NetnsRef::Fd(fd) => fd,
    };
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("vswitch-netns".into())
            .spawn_scoped(s, move || {
                // SAFETY: setns on a valid descriptor; it changes only this thread's
                // network namespace, and this thread ends when `f` returns.
                if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(NetnsError::Enter {
                        source: io::Error::last_os_error(),
                    });
                }
                Ok(f())
            })
            .map_err(|source| NetnsError::Thread { source })?;
        handle.join().map_err(|_| NetnsError::Panicked)?
    })
}

/// Creates the TAP `ifname` inside `ns`, or attaches to it when it exists there (a
/// persistent TAP: how a restarted daemon gets its ports back).
pub fn create_tap_in<'a>(
    ns: impl Into<NetnsRef<'a>>,
    ifname: &str,
    opts: &TapOptions,
) -> Result<TapPort, NetnsError> {
    Ok(in_netns(ns, || TapPort::open(ifname, opts))??)
}

/// Like [`create_tap_in`], opening `opts.multi_queue` queues (one per worker).
pub fn create_tap_queues_in<'a>(
    ns: impl Into<NetnsRef<'a>>,
    ifname: &str,
    opts: &TapOptions,
) -> Result<Vec<TapPort>, NetnsError> {
    Ok(in_netns(ns, || TapPort::open_queues(ifname, opts))??)
}

/// Removes the TAP `ifname` of `ns`: attaches to it, clears its persistence and closes
/// it, so it disappears once no other descriptor holds it. Ok(false) when there is no
/// such interface. A single-queue TAP still held open elsewhere is refused (busy); the
/// holder should clear persistence with [`TapPort::set_persist`] and close it instead.
pub fn delete_tap<'a>(ns: impl Into<NetnsRef<'a>>, ifname: &str) -> Result<bool, NetnsError> {
    in_netns(ns, || {
        check_ifname(ifname)?;
        if IfSocket::new()?.index(ifname)?.is_none() {
            return Ok(false);
        }
        let mut opts = TapOptions::plain();
        let port = match TapPort::open(ifname, &opts) {
            Err(TapError::Attach { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => {
                // A multi-queue TAP only takes multi-queue openers.
                opts.multi_queue = 2;
                TapPort::open(ifname, &opts)?
            }
            r => r?,
        };
        port.set_persist(false)?;
        drop(port);
        Ok(true)
    })?
}

/// Brings the loopback interface of `ns` up (`run --network none`).
pub fn loopback_up<'a>(ns: impl Into<NetnsRef<'a>>) -> Result<(), NetnsError> {
    in_netns(ns, || IfSocket::new()?.set_up("lo", true))?
}

/// What [`configure`] sets on an interface. `None` fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfConfig {
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
    /// IPv4 address and prefix length (the subnet route comes with it).
    pub addr: Option<(Ipv4Addr, u8)>,
    /// Default route via this gateway; needs `up` and an address on its subnet.
    pub gateway: Option<Ipv4Addr>,
    /// IPv6 address and prefix length. The interface's IPv6 is set for an address
    /// vswitch gives: IPv6 on, link-local from the MAC (EUI-64, what port security
    /// allows), no duplicate address detection (IPAM made the address unique, port
    /// security keeps others off it: the address works at once), router
    /// advertisements ignored (address and default route are set here).
    pub addr6: Option<(Ipv6Addr, u8)>,
    /// IPv6 default route via this gateway.
    pub gateway6: Option<Ipv6Addr>,
    /// Bring the interface up (true) or down (false).
    pub up: bool,
}

/// Configures `ifname` inside `ns`: MAC, MTU, address, up, then the default route.
/// Safe to repeat (an existing identical default route is not an error).
pub fn configure<'a>(
    ns: impl Into<NetnsRef<'a>>,
    ifname: &str,
    cfg: &IfConfig,
) -> Result<(), NetnsError> {
    in_netns(ns, || IfSocket::new()?.configure(ifname, cfg))?
}

/// Renames `old` to `new` inside `ns` (the interface must be down).
pub fn rename<'a>(ns: impl Into<NetnsRef<'a>>, old: &str, new: &str) -> Result<(), NetnsError> {
    in_netns(ns, || IfSocket::new()?.rename(old, new))?
}

/// The kernel's `struct rtentry` (libc has it only for some C libraries). The glibc
/// layout (`rt_tos`, `rt_class`, padding) has the same size and offsets.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn sockaddr_v4(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16-byte plain-old-data structures; the
    // kernel reads this one as a sockaddr_in (family AF_INET).
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ipv4_of(sa: &libc::sockaddr) -> Ipv4Addr {
    // SAFETY: as above, the other way; the kernel filled in a sockaddr_in.
    let sin = unsafe { std::mem::transmute::<libc::sockaddr, libc::sockaddr_in>(*sa) };
    Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))
}

fn netmask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
}

/// A socket for interface ioctls, bound to the network namespace of the thread that
/// created it.
pub struct IfSocket {
    fd: OwnedFd,
}

impl IfSocket {
    /// Opens the socket in the calling thread's network namespace.
    pub fn new() -> Result<IfSocket, NetnsError> {
        // SAFETY: plain socket creation; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(NetnsError::Socket {
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(IfSocket { fd })
    }

    fn ioctl<T>(
        &self,
        ifname: &str,
        op: &'static str,
        req: libc::c_ulong,
        arg: &mut T,
    ) -> Result<(), NetnsError> {
        // SAFETY: `arg` is a live, exclusive reference to the structure the request
        // expects (an ifreq or an rtentry).
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), req as libc::Ioctl, arg as *mut T) };
        if r < 0 {
            return Err(NetnsError::Ioctl {
                ifname: ifname.to_string(),
                op,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    fn req(ifname: &str) -> Result<libc::ifreq, NetnsError> {
        check_ifname(ifname)?;
        Ok(ifreq_for(ifname))
    }

    /// The interface index, or None when there is no such interface.
    pub fn index(&self, ifname: &str) -> Result<Option<u32>, NetnsError> {
        let mut ifr = Self::req(ifname)?;
        match self.ioctl(
            ifname,
            "reading the interface index",
            libc::SIOCGIFINDEX,
            &mut ifr,
        ) {
            // SAFETY: SIOCGIFINDEX filled in the index member.
            Ok(()) => Ok(Some(unsafe { ifr.ifr_ifru.ifru_ifindex } as u32)),
            Err(NetnsError::Ioctl { source, .. })
                if source.raw_os_error() == Some(libc::ENODEV) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The interface flags (IFF_UP, IFF_RUNNING, ...).
    pub fn flags(&self, ifname: &str) -> Result<libc::c_int, NetnsError> {
        let mut ifr = Self::req(ifname)?;
        self.ioctl(ifname, "reading the flags", libc::SIOCGIFFLAGS, &mut ifr)?;
        // SAFETY: SIOCGIFFLAGS filled in the flags member.
        Ok(libc::c_int::from(unsafe { ifr.ifr_ifru.ifru_flags }) & 0xffff)
    }

    /// Brings the interface up or down.
    pub fn set_up(&self, ifname: &str, up: bool) -> Result<(), NetnsError> {
        let flags = self.flags(ifname)?;
        let want = if up {
            flags | libc::IFF_UP
        } else {
            flags & !libc::IFF_UP
        };
        if want == flags {
            return Ok(());
        }
        let mut ifr = Self::req(ifname)?;
        ifr.ifr_ifru.ifru_flags = want as libc::c_short;
        self.ioctl(
            ifname,
            if up {
                "bringing it up"
            } else {
                "bringing it down"
            },
            libc::SIOCSIFFLAGS,
            &mut ifr,
        )
    }

    pub fn set_mac(&self, ifname: &str, mac: MacAddr) -> Result<(), NetnsError> {
        let mut ifr = Self::req(ifname)?;
        // SAFETY: an all-zero sockaddr is valid.
        let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
        sa.sa_family = libc::ARPHRD_ETHER;
        for (d, s) in sa.sa_data.iter_mut().zip(mac.0) {
            *d = s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_hwaddr = sa;
        self.ioctl(
            ifname,
            "setting the MAC address",
            libc::SIOCSIFHWADDR,
            &mut ifr,
        )
    }

    pub fn mac(&self, ifname: &str) -> Result<MacAddr, NetnsError> {
        let mut ifr = Self::req(ifname)?;
        self.ioctl(
            ifname,
            "reading the MAC address",
            libc::SIOCGIFHWADDR,
            &mut ifr,
        )?;
        // SAFETY: SIOCGIFHWADDR filled in the hardware address member.
        let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
        let mut m = [0u8; 6];
        for (d, s) in m.iter_mut().zip(sa.sa_data) {
            *d = s as u8;
        }
        Ok(MacAddr(m))
    }

    pub fn set_mtu(&self, ifname: &str, mtu: u32) -> Result<(), NetnsError> {
        let mut ifr = Self::req(ifname)?;
        ifr.ifr_ifru.ifru_mtu = libc::c_int::try_from(mtu).unwrap_or(libc::c_int::MAX);
        self.ioctl(ifname, "setting the MTU", libc::SIOCSIFMTU, &mut ifr)
    }

    pub fn mtu(&self, ifname: &str) -> Result<u32, NetnsError> {
        let mut ifr = Self::req(ifname)?;
        self.ioctl(ifname, "reading the MTU", libc::SIOCGIFMTU, &mut ifr)?;
        // SAFETY: SIOCGIFMTU filled in the MTU member.
        Ok(u32::try_from(unsafe { ifr.ifr_ifru.ifru_mtu }).unwrap_or(0))
    }

    /// Sets the primary IPv4 address and its prefix (replacing the previous primary).
    pub fn set_ipv4(&self, ifname: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), NetnsError> {
        if prefix > 32 {
            return Err(NetnsError::BadPrefix(prefix));
        }
        let mut ifr = Self::req(ifname)?;
        ifr.ifr_ifru.ifru_addr = sockaddr_v4(addr);
        self.ioctl(
            ifname,
            "setting the IPv4 address",
            libc::SIOCSIFADDR,
            &mut ifr,
        )?;
        let mut ifr = Self::req(ifname)?;
        ifr.ifr_ifru.ifru_netmask = sockaddr_v4(netmask(prefix));
        self.ioctl(
            ifname,
            "setting the netmask",
            libc::SIOCSIFNETMASK,
            &mut ifr,
        )
    }

    /// The primary IPv4 address and prefix, or None when it has none.
    pub fn ipv4(&self, ifname: &str) -> Result<Option<(Ipv4Addr, u8)>, NetnsError> {
        let mut ifr = Self::req(ifname)?;
        match self.ioctl(
            ifname,
            "reading the IPv4 address",
            libc::SIOCGIFADDR,
            &mut ifr,
        ) {
            Ok(()) => {}
            Err(NetnsError::Ioctl { source, .. })
                if source.raw_os_error() == Some(libc::EADDRNOTAVAIL) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        // SAFETY: SIOCGIFADDR filled in the address member.
        let addr = ipv4_of(unsafe { &ifr.ifr_ifru.ifru_addr });
        let mut ifr = Self::req(ifname)?;
        self.ioctl(
            ifname,
            "reading the netmask",
            libc::SIOCGIFNETMASK,
            &mut ifr,
        )?;
        // SAFETY: SIOCGIFNETMASK filled in the netmask member.
        let mask = ipv4_of(unsafe { &ifr.ifr_ifru.ifru_netmask });
        Ok(Some((addr, u32::from(mask).count_ones() as u8)))
    }

    /// Adds a default route via `gateway` out of `ifname`. An identical route already
    /// there is fine.
    pub fn add_default_route(&self, ifname: &str, gateway: Ipv4Addr) -> Result<(), NetnsError> {
        check_ifname(ifname)?;
        let dev = CString::new(ifname).map_err(|_| {
            NetnsError::Tap(TapError::InvalidName {
                name: ifname.to_string(),
                why: "it contains a NUL",
            })
        })?;
        let mut rt = RtEntry {
            rt_pad1: 0,
            rt_dst: sockaddr_v4(Ipv4Addr::UNSPECIFIED),
            rt_gateway: sockaddr_v4(gateway),
            rt_genmask: sockaddr_v4(Ipv4Addr::UNSPECIFIED),
            rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
            rt_pad2: 0,
            rt_pad3: 0,
            rt_pad4: std::ptr::null_mut(),
            rt_metric: 0,
            rt_dev: dev.as_ptr() as *mut libc::c_char,
            rt_mtu: 0,
            rt_window: 0,
            rt_irtt: 0,
        };
        match self.ioctl(ifname, "adding the default route", libc::SIOCADDRT, &mut rt) {
            Err(NetnsError::Ioctl { source, .. })
                if source.raw_os_error() == Some(libc::EEXIST) =>
            {
                Ok(())
            }
            r => r,
        }
    }

    /// Renames an interface (it must be down).
    pub fn rename(&self, old: &str, new: &str) -> Result<(), NetnsError> {
        check_ifname(new)?;
        let mut ifr = Self::req(old)?;
        let new_req = ifreq_for(new);
        ifr.ifr_ifru.ifru_newname = new_req.ifr_name;
        self.ioctl(old, "renaming", libc::SIOCSIFNAME, &mut ifr)
    }

    /// Applies `cfg` to `ifname`: MAC, MTU, address, up or down, default route.
    pub fn configure(&self, ifname: &str, cfg: &IfConfig) -> Result<(), NetnsError> {
        if let Some(mac) = cfg.mac {
            if self.mac(ifname)? != mac {
                match self.set_mac(ifname, mac) {
                    // Drivers without live address change want the interface down.
                    Err(NetnsError::Ioctl { source, .. })
                        if source.raw_os_error() == Some(libc::EBUSY) =>
                    {
                        self.set_up(ifname, false)?;
                        self.set_mac(ifname, mac)?;
                    }
                    r => r?,
                }
            }
        }
        if let Some(mtu) = cfg.mtu {
            self.set_mtu(ifname, mtu)?;
        }
        if let Some((addr, prefix)) = cfg.addr {
            if self.ipv4(ifname)? != Some((addr, prefix)) {
                self.set_ipv4(ifname, addr, prefix)?;
            }
        }
        if cfg.addr6.is_some() {
            ipv6_for_vswitch(ifname)?;
        }
        self.set_up(ifname, cfg.up)?;
        if let Some(gw) = cfg.gateway {
            self.add_default_route(ifname, gw)?;
        }
        if let Some((addr, prefix)) = cfg.addr6 {
            let index = self.index(ifname)?.unwrap_or(0);
            ipv6_address(ifname, index, addr, prefix)?;
            if let Some(gw) = cfg.gateway6 {
                ipv6_default_route(ifname, index, gw)?;
            }
        }
        Ok(())
    }
}

/// The interface settings of an interface vswitch gives an IPv6 address, as
/// (sysctl, value) under /proc/sys/net/ipv6/conf/IFNAME: see [`IfConfig::addr6`].
const IPV6_SYSCTLS: [(&str, &str); 4] = [
    ("disable_ipv6", "0"),
    ("addr_gen_mode", "0"),
    ("accept_dad", "0"),
    ("accept_ra", "0"),
];

/// Sets [`IPV6_SYSCTLS`] on `ifname` in the calling thread's network namespace.
fn ipv6_for_vswitch(ifname: &str) -> Result<(), NetnsError> {
    check_ifname(ifname)?;
    for (key, value) in IPV6_SYSCTLS {
        let path = format!("/proc/sys/net/ipv6/conf/{ifname}/{key}");
        std::fs::write(&path, value).map_err(|source| NetnsError::Sysctl {
            ifname: ifname.to_string(),
            key,
            source,
        })?;
    }
    Ok(())
}

/// An AF_INET6 datagram socket for IPv6 interface ioctls.
fn inet6_socket() -> Result<OwnedFd, NetnsError> {
    // SAFETY: plain socket creation; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(NetnsError::Socket {
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs an IPv6 ioctl; EEXIST (already there) is fine.
fn ioctl6<T>(
    ifname: &str,
    op: &'static str,
    req: libc::c_ulong,
    arg: &mut T,
) -> Result<(), NetnsError> {
    let fd = inet6_socket()?;
    // SAFETY: `arg` is a live, exclusive reference to the structure the request
    // expects (an in6_ifreq or an in6_rtmsg).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as libc::Ioctl, arg as *mut T) };
    if r < 0 {
        let source = io::Error::last_os_error();
        if source.raw_os_error() == Some(libc::EEXIST) {
            return Ok(());
        }
        return Err(NetnsError::Ioctl {
            ifname: ifname.to_string(),
            op,
            source,
        });
    }
    Ok(())
}

fn in6(a: Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr {
        s6_addr: a.octets(),
    }
}

/// Adds `addr`/`prefix` to interface `index` (its prefix route comes with it), usable
/// at once: no duplicate address detection, never tentative.
fn ipv6_address(ifname: &str, index: u32, addr: Ipv6Addr, prefix: u8) -> Result<(), NetnsError> {
    crate::rtnl::add_address6(index, addr, prefix).map_err(|source| NetnsError::Ioctl {
        ifname: ifname.to_string(),
        op: "adding the IPv6 address",
        source,
    })
}

/// The kernel's `struct in6_rtmsg` (libc's keeps its fields private).
#[repr(C)]
struct In6RtMsg {
    dst: libc::in6_addr,
    src: libc::in6_addr,
    gateway: libc::in6_addr,
    kind: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: libc::c_ulong,
    flags: u32,
    ifindex: libc::c_int,
}

/// Adds the IPv6 default route via `gateway` out of interface `index`.
fn ipv6_default_route(ifname: &str, index: u32, gateway: Ipv6Addr) -> Result<(), NetnsError> {
    let mut rt = In6RtMsg {
        dst: in6(Ipv6Addr::UNSPECIFIED),
        src: in6(Ipv6Addr::UNSPECIFIED),
        gateway: in6(gateway),
        kind: 0,
        dst_len: 0,
        src_len: 0,
        metric: 1024,
        info: 0,
        flags: u32::from(libc::RTF_UP | libc::RTF_GATEWAY),
        ifindex: index as libc::c_int,
    };
    ioctl6(
        ifname,
        "adding the IPv6 default route",
        libc::SIOCADDRT,
        &mut rt,
    )
}

/// Namespaces for tests: created with `ip netns add` under a name unique to the test
/// process, deleted on drop (also when the test fails).
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::PathBuf;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static NEXT: AtomicUsize = AtomicUsize::new(0);

    pub fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    pub struct TestNs {
        pub name: String,
        pub path: PathBuf,
    }

    impl TestNs {
        /// A fresh namespace. Fails the test with a clear message when not root.
        pub fn new() -> TestNs {
            assert!(
                is_root(),
                "this test creates network namespaces and TAP devices: run it as root (CI does)"
            );
            let name = format!(
                "vst-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let st = Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .expect("run ip netns add");
            assert!(st.success(), "ip netns add {name}");
            TestNs {
                path: PathBuf::from(format!("/run/netns/{name}")),
                name,
            }
        }

        /// A command run inside the namespace.
        pub fn cmd(&self, prog: &str) -> Command {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.name, prog]);
            c
        }
    }

    impl Drop for TestNs {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::TestNs;
    use super::*;
    use crate::port::{Batch, Port, STD_FRAME_CAP};
    use crate::wire::{ArpPacket, EtherType, EthernetFrame};
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, Instant};

    fn ns_inode(path: &str) -> u64 {
        std::fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn netmask_from_prefix() {
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(32), Ipv4Addr::BROADCAST);
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
    }

    #[test]
    fn current_runs_in_place() {
        let me = std::thread::current().id();
        let v = in_netns(NetnsRef::Current, || std::thread::current().id()).unwrap();
        assert_eq!(v, me);
    }

    #[test]
    fn bad_namespaces_are_reported() {
        let e = in_netns("/nonexistent/vst-netns", || ()).unwrap_err();
        assert!(matches!(e, NetnsError::Open { .. }));
        assert!(e.to_string().contains("no such namespace"), "{e}");
        if super::test_support::is_root() {
            let e = in_netns("/dev/null", || ()).unwrap_err();
            assert!(e.to_string().contains("not a network namespace"), "{e}");
        }
    }

    #[test]
    #[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
    fn thread_enters_and_descriptors_stay_bound() {
        let ns = TestNs::new();
        let outside = ns_inode("/proc/thread-self/ns/net");
        let (inside, sock) = in_netns(&ns.path, || {
            (
                ns_inode("/proc/thread-self/ns/net"),
                IfSocket::new().unwrap(),
            )
        })
        .unwrap();
        assert_eq!(inside, std::fs::metadata(&ns.path).unwrap().ino());
        assert_ne!(inside, outside);
        assert_eq!(ns_inode("/proc/thread-self/ns/net"), outside);
        // The socket made inside still talks to that namespace: its loopback is down
        // until brought up there.
        assert_eq!(sock.flags("lo").unwrap() & libc::IFF_UP, 0);
        loopback_up(&ns.path).unwrap();
        assert_ne!(sock.flags("lo").unwrap() & libc::IFF_UP, 0);
        // By descriptor as well as by path; a panic inside is an error, not a panic.
        let f = std::fs::File::open(&ns.path).unwrap();
        let fd = OwnedFd::from(f);
        let ino = in_netns(&fd, || ns_inode("/proc/thread-self/ns/net")).unwrap();
        assert_eq!(ino, inside);
        let r: Result<(), _> = in_netns(&fd, || panic!("inside"));
        assert!(matches!(r, Err(NetnsError::Panicked)));
    }

    fn read_route_table(ns: &TestNs) -> String {
        in_netns(&ns.path, || {
            std::fs::read_to_string("/proc/thread-self/net/route").unwrap()
        })
        .unwrap()
    }

    #[test]
    #[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
    fn configure_sets_mac_mtu_address_route() {
        let ns = TestNs::new();
        let port = create_tap_in(&ns.path, "vst0", &TapOptions::plain()).unwrap();
        assert_eq!(port.ifname(), "vst0");
        let mac = MacAddr([0x02, 0x42, 10, 55, 0, 2]);
        let cfg = IfConfig {
            mac: Some(mac),
            mtu: Some(1400),
            addr: Some((Ipv4Addr::new(10, 55, 0, 2), 24)),
            gateway: Some(Ipv4Addr::new(10, 55, 0, 1)),
            addr6: Some(("fd00:55::2".parse().unwrap(), 64)),
            gateway6: Some("fd00:55::1".parse().unwrap()),
            up: true,
        };
        configure(&ns.path, "vst0", &cfg).unwrap();
        // Again: nothing changes, nothing fails.
        configure(&ns.path, "vst0", &cfg).unwrap();
        let s = in_netns(&ns.path, || IfSocket::new().unwrap()).unwrap();
        assert_eq!(s.mac("vst0").unwrap(), mac);
        assert_eq!(s.mtu("vst0").unwrap(), 1400);
        assert_eq!(
            s.ipv4("vst0").unwrap(),
            Some((Ipv4Addr::new(10, 55, 0, 2), 24))
        );
        assert_ne!(s.flags("vst0").unwrap() & libc::IFF_UP, 0);
        // /proc/net/route: Iface Destination Gateway (little-endian hex) ...
        let routes = read_route_table(&ns);
        let gw_hex = format!("{:08X}", u32::from_le_bytes([10, 55, 0, 1]));
        assert!(
            routes
                .lines()
                .any(|l| l.starts_with("vst0\t00000000\t") && l.contains(&gw_hex)),
            "{routes}"
        );
        assert!(
            routes
                .lines()
                .any(|l| l.starts_with("vst0\t0000370A\t00000000")),
            "{routes}"
        );
        // IPv6: the address at once (no duplicate address detection, so not
        // tentative), the default route via the gateway, the EUI-64 link-local.
        let read = |f: &str| in_netns(&ns.path, || std::fs::read_to_string(f).unwrap()).unwrap();
        let addrs = read("/proc/thread-self/net/if_inet6");
        assert!(
            addrs.contains("fd000055000000000000000000000002"),
            "{addrs}"
        );
        assert!(
            addrs.contains("fe800000000000000042"),
            "EUI-64 link-local: {addrs}"
        );
        // if_inet6: address, index, prefix length, scope, flags (0x40: tentative).
        let flags = |l: &str| u8::from_str_radix(l.split_whitespace().nth(4).unwrap(), 16).unwrap();
        let tentative = addrs
            .lines()
            .any(|l| l.starts_with("fd0000550") && flags(l) & 0x40 != 0);
        assert!(!tentative, "{addrs}");
        let routes6 = read("/proc/thread-self/net/ipv6_route");
        assert!(
            routes6
                .lines()
                .any(|l| l.starts_with("00000000000000000000000000000000 00")
                    && l.contains("fd000055000000000000000000000001")),
            "{routes6}"
        );
        assert_eq!(read("/proc/sys/net/ipv6/conf/vst0/accept_ra").trim(), "0");

        // A new address replaces the old; MAC changes while up.
        let mac2 = MacAddr([0x02, 0x42, 10, 55, 0, 3]);
        let cfg2 = IfConfig {
            mac: Some(mac2),
            addr: Some((Ipv4Addr::new(10, 56, 0, 3), 16)),
            up: true,
            ..IfConfig::default()
        };
        configure(&ns.path, "vst0", &cfg2).unwrap();
        assert_eq!(s.mac("vst0").unwrap(), mac2);
        assert_eq!(
            s.ipv4("vst0").unwrap(),
            Some((Ipv4Addr::new(10, 56, 0, 3), 16))
        );

        // Down, renamed, still the same device.
        let idx = s.index("vst0").unwrap();
        configure(&ns.path, "vst0", &IfConfig::default()).unwrap();
        assert_eq!(s.flags("vst0").unwrap() & libc::IFF_UP, 0);
        rename(&ns.path, "vst0", "eth0").unwrap();
        assert_eq!(s.index("vst0").unwrap(), None);
        assert_eq!(s.index("eth0").unwrap(), idx);
        drop(port);
        // The TAP was not persistent: gone with its descriptor.
        assert_eq!(s.index("eth0").unwrap(), None);
    }

    #[test]
    #[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
    fn configure_errors_are_actionable() {
        let ns = TestNs::new();
        let e = configure(
            &ns.path,
            "nothere0",
            &IfConfig {
                mtu: Some(1500),
                ..IfConfig::default()
            },
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("nothere0") && msg.contains("no interface"),
            "{msg}"
        );
        let _port = create_tap_in(&ns.path, "vst0", &TapOptions::plain()).unwrap();
        // A gateway on no subnet of an up interface.
        let e = configure(
            &ns.path,
            "vst0",
            &IfConfig {
                addr: Some((Ipv4Addr::new(10, 57, 0, 2), 24)),
                gateway: Some(Ipv4Addr::new(192, 0, 2, 1)),
                up: true,
                ..IfConfig::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("default route"), "{e}");
        let e = configure(
            &ns.path,
            "vst0",
            &IfConfig {
                addr: Some((Ipv4Addr::new(10, 57, 0, 2), 33)),
                ..IfConfig::default()
            },
        )
        .unwrap_err();
        assert!(matches!(e, NetnsError::BadPrefix(33)));
        let e = create_tap_in(&ns.path, "a-name-far-too-long", &TapOptions::plain()).unwrap_err();
        assert!(e.to_string().contains("longer than 15"), "{e}");
    }

    /// Waits up to two seconds for `port` to receive an ARP request for `target`.
    fn expect_arp(port: &mut TapPort, target: Ipv4Addr) {
        let mut batch = Batch::new(8, STD_FRAME_CAP);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            port.recv(&mut batch).unwrap();
            for f in batch.frames() {
                let eth = EthernetFrame::new_checked(f.data()).unwrap();
                if eth.ethertype() == EtherType::ARP {
                    let arp = ArpPacket::new_checked(eth.payload()).unwrap();
                    if arp.target_ip() == target {
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no ARP request for {target} on {}", port.ifname());
    }

    /// Makes the kernel of `ns` resolve `to`: a UDP datagram from a socket inside.
    fn poke(ns: &TestNs, to: Ipv4Addr) {
        in_netns(&ns.path, || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            let _ = s.send_to(b"x", (to, 9));
        })
        .unwrap();
    }

    #[test]
    #[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
    fn persistent_tap_survives_reopen_and_delete_removes_it() {
        let ns = TestNs::new();
        let opts = TapOptions {
            persist: true,
            ..TapOptions::default()
        };
        let port = create_tap_in(&ns.path, "vst0", &opts).unwrap();
        configure(
            &ns.path,
            "vst0",
            &IfConfig {
                addr: Some((Ipv4Addr::new(10, 58, 0, 2), 24)),
                up: true,
                ..IfConfig::default()
            },
        )
        .unwrap();
        drop(port);
        let s = in_netns(&ns.path, || IfSocket::new().unwrap()).unwrap();
        let idx = s.index("vst0").unwrap();
        assert!(idx.is_some(), "a persistent TAP outlives its descriptor");
        // Re-opened by name (what a restarted daemon does): same device, working.
        let mut port = create_tap_in(&ns.path, "vst0", &TapOptions::default()).unwrap();
        assert_eq!(s.index("vst0").unwrap(), idx);
        assert_eq!(port.vnet_hdr_len(), 10);
        poke(&ns, Ipv4Addr::new(10, 58, 0, 1));
        expect_arp(&mut port, Ipv4Addr::new(10, 58, 0, 1));
        drop(port);
        assert!(delete_tap(&ns.path, "vst0").unwrap());
        assert_eq!(s.index("vst0").unwrap(), None);
        assert!(!delete_tap(&ns.path, "vst0").unwrap());

        // Multi-queue persistent TAPs are deleted as well.
        let mq = TapOptions {
            persist: true,
            multi_queue: 2,
            ..TapOptions::default()
        };
        let queues = create_tap_queues_in(&ns.path, "vst1", &mq).unwrap();
        assert_eq!(queues.len(), 2);
        drop(queues);
        assert!(s.index("vst1").unwrap().is_some());
        assert!(delete_tap(&ns.path, "vst1").unwrap());
        assert_eq!(s.index("vst1").unwrap(), None);

        // Not a TAP: refused, left alone.
        assert!(delete_tap(&ns.path, "lo").is_err());
        assert!(s.index("lo").unwrap().is_some());
    }

    /// Restores a file's mode on drop.
    struct RestoreMode(&'static str, u32);
    impl Drop for RestoreMode {
        fn drop(&mut self) {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(self.0, std::fs::Permissions::from_mode(self.1));
        }
    }

    /// Removes a file on drop.
    struct RemoveFile(PathBuf);
    impl Drop for RemoveFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    // A rootless `vswitch run`: user `nobody`, root only of its own user namespace, with
    // a network namespace of its own and /dev/net/tun at mode 0666. This test runs
    // `rootless_child` (this test binary) that way and checks it passed.
    #[test]
    #[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
    fn rootless_user_namespace() {
        use std::os::unix::fs::PermissionsExt;
        if std::env::var_os("VST_ROOTLESS_CHILD").is_some() {
            // The copy of this test running as nobody inside a user namespace.
            rootless_child();
            return;
        }
        assert!(
            super::test_support::is_root(),
            "this test changes /dev/net/tun and becomes nobody: run it as root (CI does)"
        );
        let mode = std::fs::metadata("/dev/net/tun")
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        let _restore = RestoreMode("/dev/net/tun", mode);
        std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(0o666)).unwrap();
        // A copy of this test binary that `nobody` can run.
        let exe = PathBuf::from(format!("/tmp/vst-{}-rootless", std::process::id()));
        let _rm = RemoveFile(exe.clone());
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["unshare", "--user", "--map-root-user", "--net"])
            .arg(&exe)
            .args([
                "--exact",
                "netns::tests::rootless_user_namespace",
                "--include-ignored",
                "--nocapture",
            ])
            .env("VST_ROOTLESS_CHILD", "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "{text}");
        assert!(text.contains("rootless child done"), "{text}");
    }

    /// What `rootless_user_namespace` checks as nobody, in its own user namespace.
    fn rootless_child() {
        // Root of a user namespace mapped onto nobody.
        let map = std::fs::read_to_string("/proc/self/uid_map").unwrap();
        assert!(map.split_whitespace().nth(1) == Some("65534"), "{map}");
        // In place (single-threaded `run`), then through a thread entering the
        // namespace file of this process.
        let mut port = create_tap_in(NetnsRef::Current, "eth0", &TapOptions::default()).unwrap();
        assert_eq!(port.vnet_hdr_len(), 10);
        assert!(port.offload_flags() != 0);
        loopback_up(NetnsRef::Current).unwrap();
        let mac = MacAddr([0x02, 0x42, 10, 9, 0, 2]);
        configure(
            NetnsRef::Current,
            "eth0",
            &IfConfig {
                mac: Some(mac),
                mtu: Some(1500),
                addr: Some((Ipv4Addr::new(10, 9, 0, 2), 24)),
                gateway: Some(Ipv4Addr::new(10, 9, 0, 1)),
                up: true,
                ..IfConfig::default()
            },
        )
        .unwrap();
        let path = netns_path_of_pid(std::process::id());
        let _eth1 = create_tap_in(&path, "eth1", &TapOptions::plain()).unwrap();
        configure(
            &path,
            "eth1",
            &IfConfig {
                addr: Some((Ipv4Addr::new(10, 10, 0, 2), 24)),
                up: true,
                ..IfConfig::default()
            },
        )
        .unwrap();
        let s = IfSocket::new().unwrap();
        assert_eq!(s.mac("eth0").unwrap(), mac);
        assert_eq!(
            s.ipv4("eth1").unwrap(),
            Some((Ipv4Addr::new(10, 10, 0, 2), 24))
        );
        assert_ne!(s.flags("lo").unwrap() & libc::IFF_UP, 0);
        // Traffic: a datagram to the gateway makes the kernel ask for it on the TAP.
        let u = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let _ = u.send_to(b"x", ("10.9.0.1", 9));
        expect_arp(&mut port, Ipv4Addr::new(10, 9, 0, 1));
        // Persistence works there too, and delete removes it.
        let p = create_tap_in(
            NetnsRef::Current,
            "eth2",
            &TapOptions {
                persist: true,
                ..TapOptions::plain()
            },
        )
        .unwrap();
        drop(p);
        assert!(s.index("eth2").unwrap().is_some());
        assert!(delete_tap(NetnsRef::Current, "eth2").unwrap());
        assert_eq!(s.index("eth2").unwrap(), None);
        println!("rootless child done");
    }
}
