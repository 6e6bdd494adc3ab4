//! TAP ports: a Linux TAP device (layer 2, `IFF_TAP | IFF_NO_PI`) as a [`Port`].
//!
//! Receive reads one frame per `read` (a TAP has no batched read) until the device has
//! nothing more (EAGAIN) or the batch is full. Send writes each selected frame with one
//! `writev` of [vnet header, MAC addresses, 802.1Q tag, rest of the frame], so pushing a
//! tag copies nothing.
//!
//! # Offloads
//!
//! With `vnet_hdr` every read and write carries a 10-byte `struct virtio_net_hdr` (the
//! kernel's default size, set explicitly with TUNSETVNETHDRSZ; the 12-byte variant only
//! adds `num_buffers`, which a TAP does not use). Its fields are little-endian: native on
//! x86, and TUNSETVNETLE is set (best effort) so big-endian hosts agree. With `offloads`
//! as well, the device announces checksum offload, TSO for IPv4 and IPv6 with ECN, and,
//! where the kernel has it, USO (probed by trying; older kernels refuse it and the port
//! goes on without). The kernel then hands over, and takes, super-frames of up to 64 KB
//! with a partial checksum; receiving them needs batch buffers of [`SUPER_FRAME_CAP`]
//! (a frame larger than the buffer is counted as `rx_truncated` and dropped).
//!
//! A frame with offload metadata sent to a TAP without a vnet header is segmented and
//! its checksums completed in software first ([`gso`](super::gso)), the rewritten headers
//! in a scratch buffer the port owns and the payload written from the frame in place.
//! A TAP with a vnet header takes such frames as they are, whatever its offloads (the
//! kernel segments them itself if it must).
//!
//! # Queues and workers
//!
//! A `TapPort` is one descriptor, that is one queue. A single-queue device takes one
//! descriptor at a time for receiving; [`TapPort::try_clone`] gives a second handle on
//! the same queue for a worker that only sends to it. A multi-queue device
//! (`multi_queue: N > 1`, IFF_MULTI_QUEUE) gives each worker a queue of its own:
//! [`TapPort::open_queues`] opens N, [`TapPort::attach_queue`] adds one. The kernel
//! spreads the flows it sends over the queues, so every queue must be read by some
//! worker; writes are accepted on any queue.
//!
//! # Lifetime
//!
//! A device lives as long as a descriptor of it is open, or, once persistent
//! (`persist`, [`TapPort::set_persist`]), until persistence is cleared and the last
//! descriptor closed. Re-opening a persistent TAP by name attaches to it again: that is
//! how a restarted daemon gets its ports back.

use super::coalesce;
use super::gso::Segmenter;
use super::{
    Batch, Frame, OffloadCounts, Port, PortCaps, PortError, SUPER_FRAME_CAP, TxSel, VnetHdr,
};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// IFF_PERSIST as TUNGETIFF reports it (not exported by libc).
const IFF_PERSIST: libc::c_int = 0x0800;
/// The vnet header size this port sets on devices it opens.
const VNET_HDR_LEN: usize = VnetHdr::LEN;
/// The largest vnet header size accepted on a descriptor handed over by another process.
const MAX_VNET_HDR_LEN: usize = 32;
/// Offloads always asked for with `offloads`.
const TUN_F_BASE: libc::c_uint =
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
/// UDP segmentation offload, asked for where the kernel has it (Linux 6.2+).
const TUN_F_USO: libc::c_uint = libc::TUN_F_USO4 | libc::TUN_F_USO6;
/// The largest plain frame a TAP is assumed to take: 1500 bytes of payload, the Ethernet
/// header and one tag.
const STD_MAX_FRAME: usize = 1518;
/// Reads tried per receive call, as a multiple of the batch size (truncated frames are
/// read and dropped; this bounds the time one call can spend on them).
const READ_BUDGET_FACTOR: usize = 2;

/// How to open a TAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapOptions {
    /// Prefix every frame with a virtio-net header (IFF_VNET_HDR).
    pub vnet_hdr: bool,
    /// Announce checksum, TSO and USO offloads (TUNSETOFFLOAD); needs `vnet_hdr`.
    /// Without it the offloads of the device are switched off.
    pub offloads: bool,
    /// Queues: 1 for a single-queue device, more for IFF_MULTI_QUEUE.
    pub multi_queue: usize,
    /// Make the device persistent (it stays when the descriptor closes). False leaves
    /// the persistence of an existing device as it is.
    pub persist: bool,
    /// Let this user open the device without CAP_NET_ADMIN (TUNSETOWNER).
    pub owner: Option<u32>,
    /// Open the descriptor with O_NONBLOCK (what a worker polling with epoll wants).
    pub nonblocking: bool,
}

impl Default for TapOptions {
    /// Vnet header and offloads on, one queue, not persistent, nonblocking.
    fn default() -> Self {
        TapOptions {
            vnet_hdr: true,
            offloads: true,
            multi_queue: 1,
            persist: false,
            owner: None,
            nonblocking: true,
        }
    }
}

impl TapOptions {
    /// No vnet header, no offloads: plain Ethernet frames.
    pub fn plain() -> TapOptions {
        TapOptions {
            vnet_hdr: false,
            offloads: false,
            ..TapOptions::default()
        }
    }
}

/// What a TAP port counted (besides what the worker counts per port).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TapStats {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Frames received with segmentation metadata (super-frames).
    pub rx_super: u64,
    /// Frames larger than the batch buffer, dropped.
    pub rx_truncated: u64,
    /// Reads that returned less than a vnet header.
    pub rx_errors: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Super-frames written as they are, with their segmentation metadata (merged
    /// datagrams: one per merged write).
    pub tx_super: u64,
    /// Frames the kernel refused (bad offload metadata, too short), dropped.
    pub tx_rejected: u64,
    /// Frames written on behalf of super-frames segmented in software.
    pub tx_sw_segments: u64,
    /// Frames whose offload metadata could not be carried out in software, dropped.
    pub tx_offload_errors: u64,
    /// Datagrams written merged with others of their flow (one USO super-frame).
    pub tx_udp_merged: u64,
    /// Merged writes the kernel refused (merging is then switched off on the port).
    pub tx_merge_refused: u64,
}

/// Why a TAP could not be opened or set up.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("invalid interface name {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },
    #[error("cannot open /dev/net/tun: {source}{}", open_hint(source))]
    OpenTun {
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot create or attach TAP {ifname}: {source}{}",
        setiff_hint(source)
    )]
    Attach {
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("TAP {ifname}: {op} failed: {source}")]
    Ioctl {
        ifname: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the descriptor is not a usable TAP: {0}")]
    NotTap(String),
    #[error("TAP {0} is single-queue: open it with multi_queue > 1 to give it more queues")]
    NotMultiQueue(String),
}

fn open_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => {
            " (the tun driver is missing: load it with `modprobe tun`, or create the node \
             with `mknod /dev/net/tun c 10 200`)"
        }
        Some(libc::EACCES) | Some(libc::EPERM) => {
            " (the daemon needs CAP_NET_ADMIN, or read-write access to /dev/net/tun and a \
             TAP owned by its user)"
        }
        _ => "",
    }
}

fn setiff_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " (creating a TAP needs CAP_NET_ADMIN in its network namespace; an existing \
             TAP can be opened by its owner: create it with `ip tuntap add NAME mode tap \
             user USER`)"
        }
        Some(libc::EBUSY) => " (the TAP is single-queue and another process holds it open)",
        Some(libc::EINVAL) => {
            " (a device of that name exists but is not a TAP that can be opened this way: \
             a TUN, another kind of interface, or a TAP with a different multi-queue \
             setting)"
        }
        _ => "",
    }
}

/// Checks an interface name the way the kernel does (`dev_valid_name`).
pub(crate) fn check_ifname(name: &str) -> Result<(), TapError> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() >= libc::IFNAMSIZ {
        Some("it is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("it is . or ..")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        Some("it contains '/', ':', a NUL or white space")
    } else {
        None
    };
    match why {
        Some(why) => Err(TapError::InvalidName {
            name: name.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

/// An `ifreq` carrying `name` (checked by [`check_ifname`]).
pub(crate) fn ifreq_for(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    ifr
}

pub(crate) fn ifreq_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An ioctl whose argument is a value.
fn ioctl_val(fd: BorrowedFd<'_>, req: libc::Ioctl, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the request takes its argument by value; no memory is passed.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) }).map(|_| ())
}

/// An ioctl whose argument points at `arg`.
fn ioctl_ptr<T>(fd: BorrowedFd<'_>, req: libc::Ioctl, arg: &mut T) -> io::Result<()> {
    // SAFETY: `arg` is a live, exclusive reference to the type the request expects.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), req, arg as *mut T) }).map(|_| ())
}

fn open_tun(nonblocking: bool) -> Result<OwnedFd, TapError> {
    let mut flags = libc::O_RDWR | libc::O_CLOEXEC;
    if nonblocking {
        flags |= libc::O_NONBLOCK;
    }
    // SAFETY: a valid NUL-terminated path; the result is checked.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), flags) };
    if fd < 0 {
        return Err(TapError::OpenTun {
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// TUNSETIFF: creates the device or attaches to it; returns the name it got.
fn set_iff(fd: BorrowedFd<'_>, name: &str, flags: libc::c_int) -> Result<String, TapError> {
    let mut ifr = ifreq_for(name);
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    ioctl_ptr(fd, libc::TUNSETIFF, &mut ifr).map_err(|source| TapError::Attach {
        ifname: name.to_string(),
        source,
    })?;
    Ok(ifreq_name(&ifr))
}

/// The outcome of one frame on the way out.
enum Tx {
    Sent(usize),
    /// Refused or unusable: counted, dropped, go on with the next frame.
    Dropped,
    /// The device is full: drop the rest of the batch.
    Full,
    Failed(io::Error),
}

fn classify(e: io::Error) -> Tx {
    if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS) {
        return Tx::Full;
    }
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::EFAULT | libc::EMSGSIZE | libc::ENOMEM | libc::EIO) => {
            Tx::Dropped
        }
        _ if e.kind() == io::ErrorKind::InvalidInput => Tx::Dropped,
        _ => Tx::Failed(e),
    }
}

/// Writes [vnet header, head, body] as one frame, inserting `tag` after the 12 address
/// bytes of the frame (head then body) when given.
fn write_pieces(
    fd: RawFd,
    vnet: &[u8],
    head: &[u8],
    body: &[u8],
    tag: Option<[u8; 4]>,
) -> io::Result<usize> {
    let mut parts: [&[u8]; 5] = [vnet, head, body, &[], &[]];
    let tag_bytes;
    if let Some(t) = tag {
        tag_bytes = t;
        let (macs, rest_head, rest_body) = if let Some((m, r)) = head.split_at_checked(12) {
            (m, r, body)
        } else if let (true, Some((m, r))) = (head.is_empty(), body.split_at_checked(12)) {
            (m, &[][..], r)
        } else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        parts = [vnet, macs, &tag_bytes, rest_head, rest_body];
    }
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 5];
    let mut n = 0;
    for p in parts.iter().filter(|p| !p.is_empty()) {
        if let Some(v) = iov.get_mut(n) {
            *v = libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            };
            n += 1;
        }
    }
    loop {
        // SAFETY: the first `n` iovecs point into slices that outlive the call; writev
        // only reads from them.
        let r = unsafe { libc::writev(fd, iov.as_ptr(), n as libc::c_int) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reads one frame: the vnet header into `hdr` (when `hdr` is not empty), the frame into
/// `area`. A TAP read stores what fits and returns that much, so one spare byte follows
/// `area`: a returned length reaching into it means the frame did not fit.
fn read_frame(
    fd: RawFd,
    hdr: &mut [u8],
    area: &mut [u8],
    spare: &mut [u8; 1],
) -> io::Result<usize> {
    let mut iov = [
        libc::iovec {
            iov_base: hdr.as_mut_ptr().cast(),
            iov_len: hdr.len(),
        },
        libc::iovec {
            iov_base: area.as_mut_ptr().cast(),
            iov_len: area.len(),
        },
        libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: 1,
        },
    ];
    let skip = usize::from(hdr.is_empty());
    let iov = iov.get_mut(skip..).unwrap_or(&mut []);
    loop {
        // SAFETY: every iovec points into a live, writable buffer of its length.
        let r = unsafe { libc::readv(fd, iov.as_ptr(), iov.len() as libc::c_int) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Whether `fd` has something to read right now.
fn readable_now(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no timeout.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && p.revents & libc::POLLIN != 0
}

/// The 802.1Q tag for `vlan` (0: none), as it goes on the wire.
pub(super) fn tag_for(vlan: u16) -> Option<[u8; 4]> {
    if vlan == 0 {
        return None;
    }
    let tci = (vlan & 0x0fff).to_be_bytes();
    let tpid = crate::wire::EtherType::VLAN.to_be_bytes();
    Some([tpid[0], tpid[1], tci[0], tci[1]])
}

/// One queue of a TAP device.
pub struct TapPort {
    /// The port's name (the device name unless renamed with [`TapPort::with_name`]).
    name: String,
    ifname: String,
    fd: OwnedFd,
    /// The TUNSETIFF flags the device was opened with (used to attach more queues).
    iff: libc::c_int,
    /// Bytes of vnet header per frame (0: none).
    vnet_len: usize,
    /// TUN_F_* offloads set on the device.
    offload_flags: libc::c_uint,
    nonblocking: bool,
    max_frame: usize,
    rx_hdr: [u8; MAX_VNET_HDR_LEN],
    tx_hdr: [u8; MAX_VNET_HDR_LEN],
    /// Catches the first byte of a frame too large for the receive buffer.
    spare: [u8; 1],
    seg: Segmenter,
    /// Merge bursts of one UDP flow into USO super-frames ([`coalesce`]).
    merge_udp: bool,
    stats: TapStats,
}

impl std::fmt::Debug for TapPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapPort")
            .field("name", &self.name)
            .field("ifname", &self.ifname)
            .field("fd", &self.fd.as_raw_fd())
            .field("vnet_len", &self.vnet_len)
            .field("offload_flags", &self.offload_flags)
            .field("multi_queue", &self.is_multi_queue())
            .finish()
    }
}

impl TapPort {
    fn assemble(
        fd: OwnedFd,
        ifname: String,
        iff: libc::c_int,
        vnet_len: usize,
        nonblocking: bool,
    ) -> TapPort {
        TapPort {
            name: ifname.clone(),
            ifname,
            fd,
            iff,
            vnet_len,
            offload_flags: 0,
            nonblocking,
            max_frame: STD_MAX_FRAME,
            rx_hdr: [0; MAX_VNET_HDR_LEN],
            tx_hdr: [0; MAX_VNET_HDR_LEN],
            spare: [0],
            seg: Segmenter::new(),
            merge_udp: false,
            stats: TapStats::default(),
        }
    }

    /// Creates the TAP `name` in the calling thread's network namespace, or attaches to
    /// it when it exists (a persistent TAP, or another queue of a multi-queue one).
    /// `name` may be a pattern like `tap%d`; [`TapPort::ifname`] tells the name given.
    pub fn open(name: &str, opts: &TapOptions) -> Result<TapPort, TapError> {
        check_ifname(name)?;
        let fd = open_tun(opts.nonblocking)?;
        let mut iff = libc::IFF_TAP | libc::IFF_NO_PI;
        if opts.vnet_hdr {
            iff |= libc::IFF_VNET_HDR;
        }
        if opts.multi_queue > 1 {
            iff |= libc::IFF_MULTI_QUEUE;
        }
        let ifname = set_iff(fd.as_fd(), name, iff)?;
        let vnet_len = if opts.vnet_hdr { VNET_HDR_LEN } else { 0 };
        let mut port = TapPort::assemble(fd, ifname, iff, vnet_len, opts.nonblocking);
        if opts.vnet_hdr {
            let mut sz = VNET_HDR_LEN as libc::c_int;
            ioctl_ptr(port.fd.as_fd(), libc::TUNSETVNETHDRSZ, &mut sz)
                .map_err(|e| port.ioctl_err("setting the vnet header size", e))?;
            let mut le: libc::c_int = 1;
            // Little-endian vnet headers: the default on little-endian hosts, where a
            // kernel without cross-endian support may refuse the request harmlessly.
            let _ = ioctl_ptr(port.fd.as_fd(), libc::TUNSETVNETLE, &mut le);
        }
        port.set_offloads(opts.offloads)?;
        if let Some(uid) = opts.owner {
            ioctl_val(port.fd.as_fd(), libc::TUNSETOWNER, libc::c_ulong::from(uid))
                .map_err(|e| port.ioctl_err("setting the owner (TUNSETOWNER)", e))?;
        }
        if opts.persist {
            port.set_persist(true)?;
        }
        Ok(port)
    }

    /// Opens `opts.multi_queue` queues (at least one) of the device `name`, one per
    /// worker. With more than one, the device is multi-queue.
    pub fn open_queues(name: &str, opts: &TapOptions) -> Result<Vec<TapPort>, TapError> {
        let n = opts.multi_queue.max(1);
        let first = TapPort::open(name, opts)?;
        let mut queues = Vec::with_capacity(n);
        for _ in 1..n {
            queues.push(first.attach_queue()?);
        }
        queues.insert(0, first);
        Ok(queues)
    }

    /// Attaches one more queue to this multi-queue device. Must run in the device's
    /// network namespace (see [`crate::netns::in_netns`]).
    pub fn attach_queue(&self) -> Result<TapPort, TapError> {
        if !self.is_multi_queue() {
            return Err(TapError::NotMultiQueue(self.ifname.clone()));
        }
        let fd = open_tun(self.nonblocking)?;
        let ifname = set_iff(fd.as_fd(), &self.ifname, self.iff)?;
        let mut q = TapPort::assemble(fd, ifname, self.iff, self.vnet_len, self.nonblocking);
        q.name = self.name.clone();
        q.offload_flags = self.offload_flags;
        q.merge_udp = self.merge_udp;
        q.max_frame = self.max_frame;
        Ok(q)
    }

    /// A TAP descriptor received from another process (SCM_RIGHTS), already attached.
    /// Its flags are read back (TUNGETIFF) and the port follows them: vnet header or not
    /// (of whatever size the device has, 10 to 32 bytes), single or multi-queue;
    /// `opts.vnet_hdr` and `opts.multi_queue` are not used. `opts.offloads`,
    /// `opts.nonblocking` and `opts.persist` (when true) are applied.
    pub fn from_fd(fd: OwnedFd, name: &str, opts: &TapOptions) -> Result<TapPort, TapError> {
        // SAFETY: ifreq is plain old data; all zeroes is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        ioctl_ptr(fd.as_fd(), libc::TUNGETIFF, &mut ifr).map_err(|e| {
            TapError::NotTap(format!(
                "TUNGETIFF failed ({e}): it is not a /dev/net/tun descriptor attached to a device"
            ))
        })?;
        // SAFETY: TUNGETIFF filled in the flags member of the union.
        let flags = libc::c_int::from(unsafe { ifr.ifr_ifru.ifru_flags }) & 0xffff;
        let ifname = ifreq_name(&ifr);
        if flags & libc::IFF_TAP == 0 {
            return Err(TapError::NotTap(format!(
                "{ifname} is a TUN (layer 3) device; vswitch needs a TAP"
            )));
        }
        if flags & libc::IFF_NO_PI == 0 {
            return Err(TapError::NotTap(format!(
                "{ifname} was opened without IFF_NO_PI (packet information headers are not handled)"
            )));
        }
        let vnet_len = if flags & libc::IFF_VNET_HDR != 0 {
            let mut sz: libc::c_int = 0;
            ioctl_ptr(fd.as_fd(), libc::TUNGETVNETHDRSZ, &mut sz).map_err(|source| {
                TapError::Ioctl {
                    ifname: ifname.clone(),
                    op: "reading the vnet header size",
                    source,
                }
            })?;
            match usize::try_from(sz) {
                Ok(n) if (VNET_HDR_LEN..=MAX_VNET_HDR_LEN).contains(&n) => n,
                _ => {
                    return Err(TapError::NotTap(format!(
                        "{ifname} has a vnet header of {sz} bytes (10 to {MAX_VNET_HDR_LEN} are handled)"
                    )));
                }
            }
        } else {
            0
        };
        // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
        let fl = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) }).map_err(|source| {
            TapError::Ioctl {
                ifname: ifname.clone(),
                op: "reading the descriptor flags",
                source,
            }
        })?;
        let want = if opts.nonblocking {
            fl | libc::O_NONBLOCK
        } else {
            fl & !libc::O_NONBLOCK
        };
        if want != fl {
            // SAFETY: as above.
            cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, want) }).map_err(|source| {
                TapError::Ioctl {
                    ifname: ifname.clone(),
                    op: "setting O_NONBLOCK",
                    source,
                }
            })?;
        }
        let iff =
            flags & (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_MULTI_QUEUE);
        let mut port = TapPort::assemble(fd, ifname, iff, vnet_len, opts.nonblocking);
        port.name = name.to_string();
        port.set_offloads(opts.offloads)?;
        if opts.persist && flags & IFF_PERSIST == 0 {
            port.set_persist(true)?;
        }
        Ok(port)
    }

    /// Another handle on the same queue (a duplicated descriptor), for a worker that
    /// sends to this port while another receives from it.
    pub fn try_clone(&self) -> Result<TapPort, TapError> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| self.ioctl_err("duplicating the descriptor", e))?;
        let mut p = TapPort::assemble(
            fd,
            self.ifname.clone(),
            self.iff,
            self.vnet_len,
            self.nonblocking,
        );
        p.name = self.name.clone();
        p.offload_flags = self.offload_flags;
        p.merge_udp = self.merge_udp;
        p.max_frame = self.max_frame;
        Ok(p)
    }

    /// Names the port (statistics, errors) independently of its device.
    pub fn with_name(mut self, name: impl Into<String>) -> TapPort {
        self.name = name.into();
        self
    }

    /// Sets the largest plain frame reported in [`Port::caps`] (a jumbo-frame network).
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    /// Makes the device persistent, or not (TUNSETPERSIST). A device that is not
    /// persistent disappears when its last descriptor closes.
    pub fn set_persist(&self, persist: bool) -> Result<(), TapError> {
        ioctl_val(
            self.fd.as_fd(),
            libc::TUNSETPERSIST,
            libc::c_ulong::from(persist),
        )
        .map_err(|e| self.ioctl_err("setting persistence (TUNSETPERSIST)", e))
    }

    /// Sets the device's offloads: all of them (with a vnet header), or none.
    fn set_offloads(&mut self, on: bool) -> Result<(), TapError> {
        let fd = self.fd.as_fd();
        let set = |f: libc::c_uint| ioctl_val(fd, libc::TUNSETOFFLOAD, libc::c_ulong::from(f));
        let flags = if on && self.vnet_len > 0 {
            match set(TUN_F_BASE | TUN_F_USO) {
                Ok(()) => TUN_F_BASE | TUN_F_USO,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    set(TUN_F_BASE)
                        .map_err(|e| self.ioctl_err("enabling offloads (TUNSETOFFLOAD)", e))?;
                    TUN_F_BASE
                }
                Err(e) => return Err(self.ioctl_err("enabling offloads (TUNSETOFFLOAD)", e)),
            }
        } else {
            set(0).map_err(|e| self.ioctl_err("disabling offloads (TUNSETOFFLOAD)", e))?;
            0
        };
        self.offload_flags = flags;
        // A kernel that takes USO from the device takes UDP_L4 super-frames written to it.
        self.merge_udp = flags & libc::TUN_F_USO4 != 0 && self.vnet_len >= VnetHdr::LEN;
        Ok(())
    }

    fn ioctl_err(&self, op: &'static str, source: io::Error) -> TapError {
        TapError::Ioctl {
            ifname: self.ifname.clone(),
            op,
            source,
        }
    }

    /// The device name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Bytes of vnet header per frame (0: none).
    pub fn vnet_hdr_len(&self) -> usize {
        self.vnet_len
    }

    /// Whether bursts of one UDP flow are written as one USO super-frame.
    pub fn merges_udp(&self) -> bool {
        self.merge_udp
    }

    /// Turns merging of UDP bursts off (or back on where the device has USO).
    pub fn set_merge_udp(&mut self, on: bool) {
        self.merge_udp =
            on && self.offload_flags & libc::TUN_F_USO4 != 0 && self.vnet_len >= VnetHdr::LEN;
    }

    /// The TUN_F_* offloads set on the device (0: none).
    pub fn offload_flags(&self) -> u32 {
        self.offload_flags
    }

    pub fn is_multi_queue(&self) -> bool {
        self.iff & libc::IFF_MULTI_QUEUE != 0
    }

    pub fn stats(&self) -> TapStats {
        self.stats
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn port_error(&self, e: io::Error) -> PortError {
        match e.raw_os_error() {
            Some(libc::EBADFD | libc::ENODEV | libc::ENXIO) => PortError::Gone(self.name.clone()),
            _ => PortError::Io {
                port: self.name.clone(),
                source: e,
            },
        }
    }

    /// Sends a frame as it is, with its vnet header when the port has one.
    fn send_direct(&mut self, f: &Frame, vlan: u16) -> Tx {
        let tag = tag_for(vlan);
        let vnet: &[u8] = if self.vnet_len > 0 {
            let mut v = f.vnet;
            if tag.is_some() && !v.is_plain() {
                // The pushed tag moves everything after the addresses by four bytes.
                if v.flags & VnetHdr::F_NEEDS_CSUM != 0 {
                    match v.csum_start.checked_add(4) {
                        Some(s) => v.csum_start = s,
                        None => {
                            self.stats.tx_rejected += 1;
                            return Tx::Dropped;
                        }
                    }
                }
                if v.hdr_len != 0 {
                    v.hdr_len = v.hdr_len.saturating_add(4);
                }
            }
            if let Some(d) = self.tx_hdr.get_mut(..VnetHdr::LEN) {
                d.copy_from_slice(&v.to_bytes());
            }
            self.tx_hdr.get(..self.vnet_len).unwrap_or(&[])
        } else {
            &[]
        };
        match write_pieces(self.fd.as_raw_fd(), vnet, &[], f.data(), tag) {
            Ok(n) => {
                if self.vnet_len > 0 && f.vnet.is_gso() {
                    self.stats.tx_super += 1;
                }
                Tx::Sent(n.saturating_sub(self.vnet_len))
            }
            Err(e) => {
                let o = classify(e);
                if matches!(o, Tx::Dropped) {
                    self.stats.tx_rejected += 1;
                }
                o
            }
        }
    }

    /// Writes the datagrams at the head of `sel` that are of one UDP flow as one USO
    /// super-frame ([`coalesce`]): how many went, and how. None when fewer than two
    /// would merge (send the first on its own). EINVAL from the kernel (no USO) turns
    /// merging off on this port; then, as on any other drop, `Tx::Dropped` says to send
    /// them one by one.
    fn send_merged(&mut self, batch: &Batch, sel: &[TxSel]) -> Option<(usize, Tx)> {
        use coalesce::HEADER;
        let s0 = sel.first()?;
        let first = batch.get(usize::from(s0.idx))?.data();
        let run = merge_run(batch, sel)?;
        let mut head = [0u8; HEADER];
        let mut vnet = coalesce::super_header(first, run.total, run.seg, &mut head)?;
        let tag = tag_for(s0.vlan);
        let tag_len = if tag.is_some() { 4 } else { 0 };
        vnet.hdr_len += tag_len as u16;
        vnet.csum_start += tag_len as u16;
        if let Some(d) = self.tx_hdr.get_mut(..VnetHdr::LEN) {
            d.copy_from_slice(&vnet.to_bytes());
        }
        let tag_bytes = tag.unwrap_or_default();
        let (macs, rest) = head.split_at(12);
        let pieces: [&[u8]; 4] = [
            self.tx_hdr.get(..self.vnet_len).unwrap_or(&[]),
            macs,
            tag_bytes.get(..tag_len).unwrap_or(&[]),
            rest,
        ];
        let bodies = run.bodies.get(..run.n).unwrap_or(&[]);
        let r = writev_all(self.fd.as_raw_fd(), pieces.iter().chain(bodies));
        Some(self.merged_sent(r, run.n, run.wire + run.n * tag_len))
    }

    /// Counts a merged write and says what became of its frames.
    fn merged_sent(&mut self, r: io::Result<()>, n: usize, bytes: usize) -> (usize, Tx) {
        match r {
            Ok(()) => {
                self.stats.tx_udp_merged += n as u64;
                self.stats.tx_super += 1;
                self.stats.tx_frames += n as u64;
                self.stats.tx_bytes += bytes as u64;
                (n, Tx::Sent(bytes))
            }
            // A kernel that does not take USO super-frames says EINVAL: stop merging on
            // this port. Other errors are the frames' or passing: send them one by one.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.merge_udp = false;
                self.stats.tx_merge_refused += 1;
                (0, Tx::Dropped)
            }
            Err(e) => (0, classify(e)),
        }
    }

    /// Segments and checksums a frame with offload metadata in software, for a port
    /// without a vnet header.
    fn send_segmented(&mut self, f: &Frame, vlan: u16) -> Tx {
        let fd = self.fd.as_raw_fd();
        let tag = tag_for(vlan);
        let mut outcome = None;
        let mut pieces = 0u64;
        let mut bytes = 0usize;
        let r = self.seg.segment(f.data(), &f.vnet, |head, body| {
            match write_pieces(fd, &[], head, body, tag) {
                Ok(n) => {
                    pieces += 1;
                    bytes += n;
                    true
                }
                Err(e) => {
                    outcome = Some(classify(e));
                    false
                }
            }
        });
        self.stats.tx_sw_segments += pieces;
        match (r, outcome) {
            (Err(_), _) => {
                self.stats.tx_offload_errors += 1;
                Tx::Dropped
            }
            (Ok(_), Some(o)) => {
                if matches!(o, Tx::Dropped) {
                    self.stats.tx_rejected += 1;
                }
                o
            }
            (Ok(_), None) => Tx::Sent(bytes),
        }
    }
}

impl Port for TapPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn recv(&mut self, batch: &mut Batch) -> Result<usize, PortError> {
        let fd = self.fd.as_raw_fd();
        let cap = batch.capacity();
        let budget = cap * READ_BUDGET_FACTOR;
        let mut n = 0;
        let mut reads = 0;
        let mut failure = None;
        while n < cap && reads < budget {
            if !self.nonblocking && reads > 0 && !readable_now(fd) {
                break;
            }
            reads += 1;
            let Some(slot) = batch.slots_mut().get_mut(n) else {
                break;
            };
            let area = slot.recv_area();
            let room = area.len();
            let hdr = self.rx_hdr.get_mut(..self.vnet_len).unwrap_or(&mut []);
            match read_frame(fd, hdr, area, &mut self.spare) {
                Ok(0) => break,
                Ok(len) => {
                    let Some(flen) = len.checked_sub(self.vnet_len) else {
                        self.stats.rx_errors += 1;
                        continue;
                    };
                    if flen > room {
                        self.stats.rx_truncated += 1;
                        continue;
                    }
                    slot.set_received(flen);
                    if self.vnet_len > 0 {
                        slot.vnet = VnetHdr::parse(&self.rx_hdr).unwrap_or_default();
                        if slot.vnet.is_gso() {
                            self.stats.rx_super += 1;
                        }
                    }
                    self.stats.rx_frames += 1;
                    self.stats.rx_bytes += flen as u64;
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        batch.set_len(n);
        match failure {
            // Frames read before the failure are delivered; the next call reports it.
            Some(e) if n == 0 => Err(self.port_error(e)),
            _ => Ok(n),
        }
    }

    fn send(&mut self, batch: &Batch, sel: &[TxSel]) -> Result<usize, PortError> {
        let mut sent = 0;
        let mut i = 0;
        while let Some(s) = sel.get(i) {
            i += 1;
            let Some(f) = batch.get(usize::from(s.idx)) else {
                continue;
            };
            if self.merge_udp {
                match self.send_merged(batch, sel.get(i - 1..).unwrap_or(&[])) {
                    None | Some((_, Tx::Dropped)) => {}
                    Some((n, Tx::Sent(_))) => {
                        sent += n;
                        i += n.saturating_sub(1);
                        continue;
                    }
                    Some((_, Tx::Full)) => break,
                    Some((_, Tx::Failed(e))) if sent == 0 => return Err(self.port_error(e)),
                    Some((_, Tx::Failed(_))) => break,
                }
            }
            let outcome = if self.vnet_len == 0 && !f.vnet.is_plain() {
                self.send_segmented(f, s.vlan)
            } else {
                self.send_direct(f, s.vlan)
            };
            match outcome {
                Tx::Sent(bytes) => {
                    sent += 1;
                    self.stats.tx_frames += 1;
                    self.stats.tx_bytes += bytes as u64;
                }
                Tx::Dropped => {}
                Tx::Full => break,
                Tx::Failed(e) if sent == 0 => return Err(self.port_error(e)),
                Tx::Failed(_) => break,
            }
        }
        Ok(sent)
    }

    fn offload_counts(&self) -> Option<OffloadCounts> {
        let s = &self.stats;
        Some(OffloadCounts {
            rx_super: s.rx_super,
            tx_super: s.tx_super,
            tx_sw_segments: s.tx_sw_segments,
            tx_udp_merged: s.tx_udp_merged,
            tx_merge_refused: s.tx_merge_refused,
        })
    }

    fn caps(&self) -> PortCaps {
        let offloads = self.vnet_len > 0 && self.offload_flags != 0;
        PortCaps {
            offloads,
            max_frame: if offloads {
                SUPER_FRAME_CAP
            } else {
                self.max_frame
            },
        }
    }

    fn rx_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
}

/// The datagrams at the head of a send list that merge into one USO super-frame.
struct MergeRun<'a> {
    bodies: [&'a [u8]; coalesce::MAX_SEGMENTS],
    /// Datagrams in the run (at least two).
    n: usize,
    /// The datagram size (the last may be shorter).
    seg: usize,
    /// Payload bytes in all.
    total: usize,
    /// The bytes the frames would have counted sent one by one.
    wire: usize,
}

/// The run of datagrams of one UDP flow, in sequence, at the head of `sel`; None when
/// fewer than two would merge.
fn merge_run<'a>(batch: &'a Batch, sel: &[TxSel]) -> Option<MergeRun<'a>> {
    use coalesce::{HEADER, MAX_PAYLOAD, MAX_SEGMENTS};
    let (s0, s1) = (sel.first()?, sel.get(1)?);
    let f0 = batch.get(usize::from(s0.idx))?;
    let first = f0.data();
    let second = batch.get(usize::from(s1.idx))?.data();
    // The cheap test first: most frames have no flow-mate right behind them.
    if s1.vlan != s0.vlan || !coalesce::same_flow(first, second) {
        return None;
    }
    let seg = coalesce::candidate(first, &f0.vnet)?;
    let mut run = MergeRun {
        bodies: [&[]; MAX_SEGMENTS],
        n: 1,
        seg,
        total: seg,
        wire: first.len(),
    };
    if let Some(b) = run.bodies.first_mut() {
        *b = first.get(HEADER..HEADER + seg)?;
    }
    for s in sel.iter().skip(1) {
        if run.n >= MAX_SEGMENTS || s.vlan != s0.vlan {
            break;
        }
        let Some(f) = batch.get(usize::from(s.idx)) else {
            break;
        };
        let (d, n) = (f.data(), run.n);
        if !coalesce::same_flow(first, d) || !coalesce::in_sequence(first, d, n) {
            break;
        }
        let Some(p) = coalesce::candidate(d, &f.vnet) else {
            break;
        };
        let Some(body) = d.get(HEADER..HEADER + p) else {
            break;
        };
        if p > seg || run.total + p > MAX_PAYLOAD {
            break;
        }
        if let Some(b) = run.bodies.get_mut(n) {
            *b = body;
        }
        (run.n, run.total, run.wire) = (n + 1, run.total + p, run.wire + d.len());
        if p < seg {
            break;
        }
    }
    (run.n >= 2).then_some(run)
}

/// Writes the non-empty pieces with one `writev` (retried on EINTR).
fn writev_all<'a>(fd: RawFd, pieces: impl Iterator<Item = &'a &'a [u8]>) -> io::Result<()> {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 4 + coalesce::MAX_SEGMENTS];
    let mut k = 0;
    for p in pieces.filter(|p| !p.is_empty()) {
        if let Some(v) = iov.get_mut(k) {
            *v = libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            };
            k += 1;
        }
    }
    loop {
        // SAFETY: the first `k` iovecs point into slices that outlive the call;
        // writev only reads from them.
        let r = unsafe { libc::writev(fd, iov.as_ptr(), k as libc::c_int) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::test_support::TestNs;
    use crate::netns::{IfConfig, configure, create_tap_in, create_tap_queues_in, in_netns};
    use crate::port::STD_FRAME_CAP;
    use crate::wire::arp::ArpOp;
    use crate::wire::icmp::IcmpType;
    use crate::wire::{
        ArpPacket, EtherType, Icmpv4Packet, IpProtocol, Ipv4Packet, MacAddr, parse_l2,
    };
    use std::net::Ipv4Addr;
    use std::process::{Child, Command};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    const GW_MAC: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);

    /// Sets the flag when dropped, so helper threads stop even when an assertion fails.
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    /// Kills and reaps a child process (by its pid) on drop.
    struct Reap(Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn wait_readable(fds: &[RawFd], ms: i32) {
        let mut p: Vec<libc::pollfd> = fds
            .iter()
            .map(|&fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: a valid array of pollfds.
        unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    }

    /// The answer a gateway would give: ARP replies for any address, ICMP echo replies
    /// for any destination. Returns (untagged reply, VLAN of the request, is echo).
    fn answer(frame: &[u8]) -> Option<(Vec<u8>, u16, bool)> {
        let l2 = parse_l2(frame).ok()?;
        let vlan = l2.outer.map_or(0, |t| t.1);
        let l3 = frame.get(l2.l3_offset..)?;
        let mut out = Vec::new();
        out.extend_from_slice(&l2.src.0);
        out.extend_from_slice(&GW_MAC.0);
        match l2.ethertype {
            EtherType::ARP => {
                let req = ArpPacket::new_checked(l3).ok()?;
                if req.operation() != ArpOp::REQUEST {
                    return None;
                }
                out.extend_from_slice(&EtherType::ARP.to_be_bytes());
                let mut b = [0u8; 28];
                let mut rep = ArpPacket::new_unchecked(&mut b[..]);
                rep.init();
                rep.set_operation(ArpOp::REPLY);
                rep.set_sender_mac(GW_MAC);
                rep.set_sender_ip(req.target_ip());
                rep.set_target_mac(req.sender_mac());
                rep.set_target_ip(req.sender_ip());
                out.extend_from_slice(&b);
                Some((out, vlan, false))
            }
            EtherType::IPV4 => {
                let ip = Ipv4Packet::new_checked(l3).ok()?;
                assert!(ip.verify_checksum());
                if ip.protocol() != IpProtocol::Icmp {
                    return None;
                }
                let icmp = Icmpv4Packet::new_checked(ip.payload()).ok()?;
                if icmp.msg_type() != IcmpType::ECHO_REQUEST {
                    return None;
                }
                assert!(icmp.verify_checksum(), "echo request checksum");
                out.extend_from_slice(&EtherType::IPV4.to_be_bytes());
                let start = out.len();
                out.extend_from_slice(&l3[..ip.total_len()]);
                let mut rip = Ipv4Packet::new_checked(&mut out[start..]).unwrap();
                rip.set_src(ip.dst());
                rip.set_dst(ip.src());
                rip.fill_checksum();
                let mut ricmp = Icmpv4Packet::new_checked(rip.payload_mut()).unwrap();
                ricmp.set_msg_type(IcmpType::ECHO_REPLY);
                ricmp.fill_checksum();
                Some((out, vlan, true))
            }
            _ => None,
        }
    }

    /// Answers ARP and ping on every queue until `stop`; counts echo requests.
    fn responder(ports: &mut [TapPort], stop: &AtomicBool, echoes: &AtomicUsize) {
        let mut rx = Batch::new(64, STD_FRAME_CAP);
        let mut tx = Batch::new(64, STD_FRAME_CAP);
        let fds: Vec<RawFd> = ports.iter().filter_map(|p| p.rx_fd()).collect();
        while !stop.load(Ordering::Relaxed) {
            wait_readable(&fds, 50);
            for p in ports.iter_mut() {
                p.recv(&mut rx).unwrap();
                tx.clear();
                let mut sel = Vec::new();
                for f in rx.frames() {
                    if let Some((reply, vlan, echo)) = answer(f.data()) {
                        if echo {
                            echoes.fetch_add(1, Ordering::Relaxed);
                        }
                        sel.push(TxSel {
                            idx: tx.len() as u8,
                            vlan,
                        });
                        assert!(tx.push(&reply, 0));
                    }
                }
                assert_eq!(p.send(&tx, &sel).unwrap(), sel.len());
            }
        }
    }

    fn ip_in(ns: &TestNs, args: &[&str]) {
        let st = ns.cmd("ip").args(args).status().unwrap();
        assert!(st.success(), "ip {args:?}");
    }

    fn ping_through(opts: TapOptions) {
        let ns = TestNs::new();
        let mut ports = create_tap_queues_in(&ns.path, "vst0", &opts).unwrap();
        assert_eq!(ports.len(), opts.multi_queue);
        assert_eq!(ports[0].vnet_hdr_len(), if opts.vnet_hdr { 10 } else { 0 });
        configure(
            &ns.path,
            "vst0",
            &IfConfig {
                mac: Some(MacAddr([0x02, 0x42, 10, 200, 0, 2])),
                mtu: Some(1500),
                addr: Some((Ipv4Addr::new(10, 200, 0, 2), 24)),
                gateway: Some(Ipv4Addr::new(10, 200, 0, 1)),
                up: true,
                ..IfConfig::default()
            },
        )
        .unwrap();
        let stop = AtomicBool::new(false);
        let echoes = AtomicUsize::new(0);
        std::thread::scope(|s| {
            let _stop = StopOnDrop(&stop);
            s.spawn(|| responder(&mut ports, &stop, &echoes));
            // The gateway itself, and a host beyond it (through the default route).
            for target in ["10.200.0.1", "198.51.100.7"] {
                let out = ns
                    .cmd("ping")
                    .args(["-c", "2", "-i", "0.2", "-W", "2", target])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "ping {target}: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        });
        assert!(echoes.load(Ordering::Relaxed) >= 4);
        let rx: u64 = ports.iter().map(|p| p.stats().rx_frames).sum();
        let tx: u64 = ports.iter().map(|p| p.stats().tx_frames).sum();
        assert!(rx >= 4 && tx >= 4, "rx {rx} tx {tx}");
    }

    #[test]
    #[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
    fn ping_plain() {
        ping_through(TapOptions::plain());
    }

    #[test]
    #[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
    fn ping_with_vnet_header_and_offloads() {
        ping_through(TapOptions::default());
    }

    #[test]
    #[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
    fn ping_multi_queue() {
        ping_through(TapOptions {
            multi_queue: 2,
            ..TapOptions::default()
        });
    }

    #[derive(Debug, Default)]
    struct BridgeCount {
        frames: usize,
        /// Frames over 1514 bytes marked for TCPv4 segmentation.
        super_frames: usize,
    }

    /// Forwards every frame between `a` and `b` until `stop`.
    fn bridge(a: &mut TapPort, b: &mut TapPort, stop: &AtomicBool) -> BridgeCount {
        let mut batch = Batch::new(64, SUPER_FRAME_CAP);
        let mut count = BridgeCount::default();
        let fds = [a.rx_fd().unwrap(), b.rx_fd().unwrap()];
        let mut sel = Vec::with_capacity(64);
        while !stop.load(Ordering::Relaxed) {
            wait_readable(&fds, 50);
            for dir in 0..2 {
                let (src, dst) = if dir == 0 {
                    (&mut *a, &mut *b)
                } else {
                    (&mut *b, &mut *a)
                };
                let n = src.recv(&mut batch).unwrap();
                if n == 0 {
                    continue;
                }
                sel.clear();
                for (i, f) in batch.frames().iter().enumerate() {
                    count.frames += 1;
                    if f.len() > 1514 && f.vnet.gso_type & !VnetHdr::GSO_ECN == VnetHdr::GSO_TCPV4 {
                        count.super_frames += 1;
                    }
                    sel.push(TxSel {
                        idx: i as u8,
                        vlan: 0,
                    });
                }
                dst.send(&batch, &sel).unwrap();
            }
        }
        count
    }

    /// Waits until something listens on TCP `port` in `ns`.
    fn wait_listening(ns: &TestNs, port: u16) {
        let needle = format!(":{port:04X} 00000000:0000 0A");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let tables = in_netns(&ns.path, || {
                std::fs::read_to_string("/proc/thread-self/net/tcp").unwrap_or_default()
            })
            .unwrap();
            if tables.contains(&needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("nothing listens on {port}");
    }

    struct BridgeRun {
        gbits: f64,
        count: BridgeCount,
        b_stats: TapStats,
    }

    /// Two namespaces, a TAP in each, the test forwarding between them; an iperf3 TCP
    /// stream from A to B for `secs` seconds.
    fn iperf_through_bridge(
        a_opts: &TapOptions,
        b_opts: &TapOptions,
        secs: u32,
    ) -> Option<BridgeRun> {
        let Some(iperf) = which("iperf3") else {
            panic!("this test drives iperf3: run `bash scripts/test`, which installs it");
        };
        let (na, nb) = (TestNs::new(), TestNs::new());
        let mut a = create_tap_in(&na.path, "vst0", a_opts).unwrap();
        let mut b = create_tap_in(&nb.path, "vst0", b_opts).unwrap();
        for (ns, host) in [(&na, 1u8), (&nb, 2u8)] {
            configure(
                &ns.path,
                "vst0",
                &IfConfig {
                    mac: Some(MacAddr([0x02, 0x42, 10, 77, 0, host])),
                    mtu: Some(1500),
                    addr: Some((Ipv4Addr::new(10, 77, 0, host), 24)),
                    gateway: None,
                    up: true,
                    ..IfConfig::default()
                },
            )
            .unwrap();
        }
        let stop = AtomicBool::new(false);
        let (gbits, count) = std::thread::scope(|s| {
            let stopper = StopOnDrop(&stop);
            let fwd = s.spawn(|| bridge(&mut a, &mut b, &stop));
            let _server = Reap(
                nb.cmd(&iperf)
                    .args(["-s", "-1", "-B", "10.77.0.2", "-p", "5201"])
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            wait_listening(&nb, 5201);
            let out = na
                .cmd(&iperf)
                .args([
                    "-c",
                    "10.77.0.2",
                    "-p",
                    "5201",
                    "-t",
                    &secs.to_string(),
                    "-f",
                    "g",
                ])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "iperf3 client: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            drop(stopper);
            let count = fwd.join().unwrap();
            (receiver_gbits(&text), count)
        });
        Some(BridgeRun {
            gbits,
            count,
            b_stats: b.stats(),
        })
    }

    fn which(prog: &str) -> Option<String> {
        let out = Command::new("sh")
            .args(["-c", &format!("command -v {prog}")])
            .output()
            .ok()?;
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !p.is_empty()).then_some(p)
    }

    /// The receiver's rate from iperf3's text output (`-f g`).
    fn receiver_gbits(text: &str) -> f64 {
        let line = text
            .lines()
            .find(|l| l.contains("receiver"))
            .unwrap_or_else(|| panic!("no receiver line in {text}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words.iter().position(|w| *w == "Gbits/sec").unwrap();
        words[at - 1].parse().unwrap()
    }

    #[test]
    #[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
    fn tcp_through_mini_bridge_offloads_on_off_mixed() {
        let on = TapOptions::default();
        let off = TapOptions::plain();
        let Some(r) = iperf_through_bridge(&on, &on, 2) else {
            return;
        };
        eprintln!("offloads on/on: {:.2} Gbit/s, {:?}", r.gbits, r.count);
        assert!(
            r.count.super_frames > 0,
            "no super-frames seen: {:?}",
            r.count
        );
        assert!(r.gbits > 0.0);

        let r = iperf_through_bridge(&off, &off, 2).unwrap();
        eprintln!("offloads off/off: {:.2} Gbit/s, {:?}", r.gbits, r.count);
        assert_eq!(r.count.super_frames, 0);
        assert!(r.gbits > 0.0);

        // Super-frames from A into a TAP without a vnet header: segmented in software.
        let r = iperf_through_bridge(&on, &off, 2).unwrap();
        eprintln!(
            "offloads on -> off (software segmentation): {:.2} Gbit/s, {:?}, {:?}",
            r.gbits, r.count, r.b_stats
        );
        assert!(r.count.super_frames > 0);
        assert!(r.b_stats.tx_sw_segments > r.b_stats.tx_frames);
        assert_eq!(r.b_stats.tx_offload_errors, 0);
        assert!(r.gbits > 0.0);
    }

    /// Reads from `port` until frames from `src` carried `want` bytes of transport
    /// payload (or two seconds pass); returns them as plain frames (offloads carried out
    /// in software where the metadata asks), each checked to carry `vlan` and valid IP
    /// and transport checksums, and the payload they carry.
    fn tagged_payload_from(
        port: &mut TapPort,
        src: MacAddr,
        vlan: u16,
        want: usize,
    ) -> (usize, Vec<u8>) {
        let mut batch = Batch::new(64, SUPER_FRAME_CAP);
        let mut seg = Segmenter::new();
        let mut payload = Vec::new();
        let mut frames = 0;
        let deadline = Instant::now() + Duration::from_secs(2);
        while payload.len() < want && Instant::now() < deadline {
            wait_readable(&[port.rx_fd().unwrap()], 50);
            port.recv(&mut batch).unwrap();
            for f in batch.frames() {
                if MacAddr::from_slice(&f.data()[6..]) != Some(src) {
                    continue;
                }
                seg.segment(f.data(), &f.vnet, |h, b| {
                    let mut plain = h.to_vec();
                    plain.extend_from_slice(b);
                    frames += 1;
                    payload.extend_from_slice(&check_tagged(&plain, vlan));
                    true
                })
                .unwrap();
            }
        }
        (frames, payload)
    }

    /// Checks a frame tagged `vlan` with etherparse (IP header and TCP or UDP checksum);
    /// returns its transport payload.
    fn check_tagged(frame: &[u8], vlan: u16) -> Vec<u8> {
        use etherparse::{NetSlice, SlicedPacket, TransportSlice};
        assert_eq!(&frame[12..14], &[0x81, 0x00]);
        assert_eq!(u16::from_be_bytes([frame[14], frame[15]]) & 0x0fff, vlan);
        let mut untagged = frame[..12].to_vec();
        untagged.extend_from_slice(&frame[16..]);
        let p = SlicedPacket::from_ethernet(&untagged).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not ipv4")
        };
        let h = ip.header();
        assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
        match &p.transport {
            Some(TransportSlice::Tcp(t)) => {
                assert_eq!(
                    t.calc_checksum_ipv4(h.source(), h.destination()).unwrap(),
                    t.checksum()
                );
                t.payload().to_vec()
            }
            Some(TransportSlice::Udp(u)) => {
                let c = u
                    .to_header()
                    .calc_checksum_ipv4_raw(h.source(), h.destination(), u.payload())
                    .unwrap();
                assert_eq!(c, u.checksum());
                u.payload().to_vec()
            }
            _ => panic!("not tcp or udp"),
        }
    }

    // Tagged super-frames written by a port, with the vnet header (checksum offset moved
    // by the pushed tag) and without (segmented in software, then tagged), go through a
    // kernel bridge to a TAP with offloads and one without; what arrives verifies.
    #[test]
    #[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
    fn tagged_super_frames_through_a_kernel_bridge() {
        use crate::port::gso::fixtures::{pattern, tcp4_super, udp4_super};
        let ns = TestNs::new();
        let (on, off) = (TapOptions::default(), TapOptions::plain());
        let mut x_on = create_tap_in(&ns.path, "vstx", &on).unwrap();
        let mut x_off = create_tap_in(&ns.path, "vstw", &off).unwrap();
        let mut y_on = create_tap_in(&ns.path, "vsty", &on).unwrap();
        let mut z_off = create_tap_in(&ns.path, "vstz", &off).unwrap();
        ip_in(&ns, &["link", "add", "vstbr", "type", "bridge"]);
        for dev in ["vstx", "vstw", "vsty", "vstz"] {
            ip_in(&ns, &["link", "set", dev, "master", "vstbr"]);
            ip_in(&ns, &["link", "set", dev, "up"]);
        }
        ip_in(&ns, &["link", "set", "vstbr", "up"]);
        let src = MacAddr([0x02, 0, 0, 0, 0, 1]);
        let tcp_payload = pattern(4000);
        let udp_payload = pattern(2500);
        let (tcp, tcp_vnet) = tcp4_super(&tcp_payload, 0x18, 1448);
        let (udp, udp_vnet) = udp4_super(&udp_payload, VnetHdr::GSO_UDP_L4, 1000);
        let cases = [
            (&tcp, tcp_vnet, &tcp_payload, true),
            (&tcp, tcp_vnet, &tcp_payload, false),
            (&udp, udp_vnet, &udp_payload, true),
            (&udp, udp_vnet, &udp_payload, false),
        ];
        let mut batch = Batch::new(1, SUPER_FRAME_CAP);
        for (frame, vnet, payload, with_vnet) in cases {
            assert!(batch.push(frame, 0));
            batch.frames_mut()[0].vnet = vnet;
            let sender = if with_vnet { &mut x_on } else { &mut x_off };
            assert_eq!(
                sender.send(&batch, &[TxSel { idx: 0, vlan: 5 }]).unwrap(),
                1
            );
            batch.clear();
            for rx in [&mut y_on, &mut z_off] {
                let (frames, got) = tagged_payload_from(rx, src, 5, payload.len());
                assert_eq!(&got, payload, "through {} (vnet {with_vnet})", rx.ifname());
                assert!(frames >= 3);
            }
        }
        assert!(x_off.stats().tx_sw_segments >= 6);
        assert_eq!(x_on.stats().tx_sw_segments, 0);
    }

    #[test]
    #[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
    fn from_fd_adapts_to_the_device() {
        let ns = TestNs::new();
        let port = create_tap_in(&ns.path, "vst0", &TapOptions::default()).unwrap();
        // The descriptor as another process would hand it over.
        let fd = port.as_fd().try_clone_to_owned().unwrap();
        let got = TapPort::from_fd(fd, "web", &TapOptions::plain()).unwrap();
        assert_eq!(got.name(), "web");
        assert_eq!(got.ifname(), "vst0");
        assert_eq!(
            got.vnet_hdr_len(),
            10,
            "follows the device, not the options"
        );
        assert!(!got.is_multi_queue());
        assert_eq!(got.offload_flags(), 0);
        assert!(!got.caps().offloads);
        drop(got);

        // A TUN is refused with a reason.
        let tun = in_netns(&ns.path, || {
            let fd = open_tun(true).unwrap();
            set_iff(fd.as_fd(), "vsttun0", libc::IFF_TUN | libc::IFF_NO_PI).unwrap();
            fd
        })
        .unwrap();
        let e = TapPort::from_fd(tun, "x", &TapOptions::default()).unwrap_err();
        assert!(e.to_string().contains("TUN (layer 3)"), "{e}");
        // Not a tun descriptor at all.
        let null = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let e = TapPort::from_fd(null, "x", &TapOptions::default()).unwrap_err();
        assert!(matches!(e, TapError::NotTap(_)));
    }

    #[test]
    #[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
    fn open_errors_say_what_to_do() {
        let e = TapPort::open("", &TapOptions::default()).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let e = TapPort::open("a/b", &TapOptions::default()).unwrap_err();
        assert!(matches!(e, TapError::InvalidName { .. }));
        let e = TapError::OpenTun {
            source: io::Error::from_raw_os_error(libc::EACCES),
        };
        assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
        let e = TapError::OpenTun {
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert!(e.to_string().contains("modprobe tun"), "{e}");

        let ns = TestNs::new();
        let port = create_tap_in(&ns.path, "vst0", &TapOptions::default()).unwrap();
        // A single-queue TAP takes one descriptor.
        let e = create_tap_in(&ns.path, "vst0", &TapOptions::default()).unwrap_err();
        assert!(
            e.to_string().contains("another process holds it open"),
            "{e}"
        );
        assert!(matches!(
            port.attach_queue(),
            Err(TapError::NotMultiQueue(_))
        ));
        // Another kind of device of that name.
        let e = create_tap_in(&ns.path, "lo", &TapOptions::default()).unwrap_err();
        assert!(e.to_string().contains("not a TAP"), "{e}");
    }

    #[test]
    #[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
    fn udp_bursts_go_down_as_one_super_frame_and_arrive_whole() {
        let ns = TestNs::new();
        let mut port = create_tap_in(&ns.path, "vst0", &TapOptions::default()).unwrap();
        assert!(
            port.merges_udp(),
            "this kernel takes no USO on TAPs (Linux 6.2 or later needed)"
        );
        let mac = MacAddr([0x02, 0x42, 10, 200, 0, 2]);
        configure(
            &ns.path,
            "vst0",
            &IfConfig {
                mac: Some(mac),
                addr: Some((Ipv4Addr::new(10, 200, 0, 2), 24)),
                up: true,
                ..IfConfig::default()
            },
        )
        .unwrap();
        let sock = in_netns(&ns.path, || std::net::UdpSocket::bind("10.200.0.2:5001"))
            .unwrap()
            .unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let datagram = |payload: &[u8], id: u16| {
            let mut f = mac.0.to_vec();
            f.extend_from_slice(&GW_MAC.0);
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 0]);
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(&[0x40, 0, 64, 17, 0, 0, 10, 200, 0, 1, 10, 200, 0, 2]);
            f.extend_from_slice(&[0x0f, 0xa0, 0x13, 0x89, 0, 0, 0, 0]);
            f.extend_from_slice(payload);
            let total = (f.len() - 14) as u16;
            f[16..18].copy_from_slice(&total.to_be_bytes());
            let c = crate::wire::checksum::checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
            let ul = total - 20;
            f[38..40].copy_from_slice(&ul.to_be_bytes());
            let p = crate::wire::checksum::pseudo_header_v4(
                Ipv4Addr::new(10, 200, 0, 1),
                Ipv4Addr::new(10, 200, 0, 2),
                17,
                u32::from(ul),
            );
            let c = !crate::wire::checksum::fold(crate::wire::checksum::add(
                p,
                crate::wire::checksum::sum(&f[34..]),
            ));
            f[40..42].copy_from_slice(&c.to_be_bytes());
            f
        };
        // 40 datagrams of one flow, 18 bytes each but the last; number 20 corrupt.
        let payloads: Vec<Vec<u8>> = (0..40u8)
            .map(|i| (0..if i == 39 { 7 } else { 18 }).map(|j| i ^ j).collect())
            .collect();
        let mut batch = Batch::new(64, STD_FRAME_CAP);
        for (i, p) in payloads.iter().enumerate() {
            let mut f = datagram(p, i as u16);
            if i == 20 {
                f[45] ^= 0xff;
            }
            assert!(batch.push(&f, 0));
        }
        let sel: Vec<TxSel> = (0..40).map(|idx| TxSel { idx, vlan: 0 }).collect();
        assert_eq!(port.send(&batch, &sel).unwrap(), 40);
        let st = port.stats();
        assert_eq!(st.tx_frames, 40);
        assert_eq!(st.tx_udp_merged, 39, "all but the corrupt one");
        assert_eq!(st.tx_merge_refused, 0);
        assert_eq!(st.tx_bytes, 39 * 60 + 49, "counted as the frames would be");
        let mut buf = [0u8; 2048];
        for (i, want) in payloads.iter().enumerate() {
            if i == 20 {
                continue;
            }
            let (n, from) = sock.recv_from(&mut buf).expect("a datagram");
            assert_eq!(from, "10.200.0.1:4000".parse().unwrap());
            assert_eq!(&buf[..n], &want[..], "datagram {i}");
        }
        sock.set_nonblocking(true).unwrap();
        assert!(
            sock.recv_from(&mut buf).is_err(),
            "the corrupt one is dropped"
        );
    }

    /// TAP `vst0` in `ns`, up, with `addr`/24 when given.
    fn tap_up(ns: &TestNs, opts: &TapOptions, addr: Option<Ipv4Addr>) -> TapPort {
        let port = create_tap_in(&ns.path, "vst0", opts).unwrap();
        configure(
            &ns.path,
            "vst0",
            &IfConfig {
                addr: addr.map(|a| (a, 24)),
                up: true,
                ..IfConfig::default()
            },
        )
        .unwrap();
        port
    }

    /// The datagrams a Linux socket sends come out of an offloading TAP with a partial
    /// checksum holding the kernel's seed, and are merge candidates of one flow: merging
    /// applies to real traffic, not only to crafted frames.
    #[test]
    #[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
    fn datagrams_linux_sends_are_merge_candidates() {
        let ns = TestNs::new();
        let mut port = tap_up(
            &ns,
            &TapOptions::default(),
            Some(Ipv4Addr::new(10, 200, 0, 2)),
        );
        // To the broadcast address: no neighbour to resolve first.
        in_netns(&ns.path, || -> io::Result<()> {
            let s = std::net::UdpSocket::bind("10.200.0.2:4000")?;
            s.set_broadcast(true)?;
            for i in 0..8u8 {
                s.send_to(&[i; 100], "10.200.0.255:5001")?;
            }
            Ok(())
        })
        .unwrap()
        .unwrap();
        let mut batch = Batch::new(64, SUPER_FRAME_CAP);
        let mut got: Vec<(Vec<u8>, VnetHdr)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while got.len() < 8 && Instant::now() < deadline {
            wait_readable(&[port.rx_fd().unwrap()], 50);
            port.recv(&mut batch).unwrap();
            for f in batch.frames() {
                if f.data().get(12..14) == Some(&[0x08, 0x00]) && f.data().get(23) == Some(&17) {
                    got.push((f.data().to_vec(), f.vnet));
                }
            }
        }
        assert_eq!(got.len(), 8, "the datagrams did not come out of the TAP");
        let first = &got[0].0;
        for (k, (f, vnet)) in got.iter().enumerate() {
            assert_ne!(
                vnet.flags & VnetHdr::F_NEEDS_CSUM,
                0,
                "datagram {k}: no partial checksum (offloads off?)"
            );
            assert_eq!(coalesce::candidate(f, vnet), Some(100), "datagram {k}");
            assert!(coalesce::same_flow(first, f), "datagram {k}");
            assert!(coalesce::in_sequence(first, f, k), "datagram {k}");
        }
    }

    #[test]
    #[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
    fn send_drops_what_cannot_go_and_keeps_going() {
        let ns = TestNs::new();
        let mut port = tap_up(&ns, &TapOptions::plain(), None);
        let mut batch = Batch::new(4, STD_FRAME_CAP);
        // 0: a frame claiming TCP segmentation that is ARP (cannot be segmented);
        // 1: too short to take a tag; 2: a fine broadcast frame.
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&GW_MAC.0);
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.extend_from_slice(&[0u8; 28]);
        assert!(batch.push(&arp, 0));
        assert!(batch.push(&[1, 2, 3], 0));
        assert!(batch.push(&arp, 0));
        batch.frames_mut()[0].vnet = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            gso_size: 1000,
            csum_start: 34,
            csum_offset: 16,
            hdr_len: 0,
        };
        let sel = [
            TxSel { idx: 0, vlan: 0 },
            TxSel { idx: 1, vlan: 3 },
            TxSel { idx: 9, vlan: 0 },
            TxSel { idx: 2, vlan: 3 },
        ];
        assert_eq!(port.send(&batch, &sel).unwrap(), 1);
        let st = port.stats();
        assert_eq!(st.tx_offload_errors, 1);
        assert_eq!(st.tx_rejected, 1);
        assert_eq!(st.tx_frames, 1);
        assert_eq!(st.tx_bytes, arp.len() as u64 + 4);
        assert_eq!(
            port.caps(),
            PortCaps {
                offloads: false,
                max_frame: 1518
            }
        );
    }

    #[test]
    #[ignore = "needs root, namespaces and tools: `bash scripts/test` runs it"]
    fn oversize_frames_are_counted_and_dropped() {
        let ns = TestNs::new();
        let mut port = tap_up(&ns, &TapOptions::plain(), Some(Ipv4Addr::new(10, 90, 0, 2)));
        // Buffers of 41 bytes: the 42-byte ARP requests the kernel sends do not fit.
        let mut small = Batch::new(4, 41);
        in_netns(&ns.path, || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            let _ = s.send_to(b"x", ("10.90.0.1", 9));
        })
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while port.stats().rx_truncated == 0 && Instant::now() < deadline {
            wait_readable(&[port.rx_fd().unwrap()], 50);
            port.recv(&mut small).unwrap();
        }
        assert!(port.stats().rx_truncated > 0);
        // A frame that exactly fills the buffer is not mistaken for a truncated one:
        // the next ARP probe (a second later) arrives whole in 42-byte buffers.
        let mut exact = Batch::new(4, 42);
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut got = None;
        while got.is_none() && Instant::now() < deadline {
            wait_readable(&[port.rx_fd().unwrap()], 50);
            port.recv(&mut exact).unwrap();
            got = exact.frames().iter().map(|f| f.len()).find(|&l| l == 42);
        }
        assert_eq!(got, Some(42));
    }

    // writev pieces keep message boundaries on a datagram socket, like a TAP write.
    #[test]
    fn write_pieces_inserts_the_tag_after_the_addresses() {
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let frame: Vec<u8> = (0u8..40).collect();
        let tag = tag_for(5);
        let mut want = frame[..12].to_vec();
        want.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        want.extend_from_slice(&frame[12..]);
        let mut buf = [0u8; 128];
        let fd = a.as_raw_fd();
        let mut recv = || {
            let n = b.recv(&mut buf).unwrap();
            buf[..n].to_vec()
        };
        // Whole frame in the body; frame split into head and body; with a vnet header.
        assert_eq!(write_pieces(fd, &[], &[], &frame, tag).unwrap(), 44);
        assert_eq!(recv(), want);
        assert_eq!(
            write_pieces(fd, &[], &frame[..20], &frame[20..], tag).unwrap(),
            44
        );
        assert_eq!(recv(), want);
        assert_eq!(
            write_pieces(fd, &[9; 10], &frame[..14], &frame[14..], tag).unwrap(),
            54
        );
        let got = recv();
        assert_eq!(&got[..10], &[9; 10]);
        assert_eq!(&got[10..], &want[..]);
        // Untagged: the pieces as they are.
        assert_eq!(
            write_pieces(fd, &[], &frame[..3], &frame[3..], None).unwrap(),
            40
        );
        assert_eq!(recv(), frame);
        // Too short to carry a tag, or a head cut inside the addresses.
        let e = write_pieces(fd, &[], &[], &frame[..11], tag).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = write_pieces(fd, &[], &frame[..6], &frame[6..], tag).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn tag_bytes_and_pieces() {
        assert_eq!(tag_for(0), None);
        assert_eq!(tag_for(5), Some([0x81, 0x00, 0x00, 0x05]));
        assert_eq!(tag_for(0x1005), Some([0x81, 0x00, 0x00, 0x05]));
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("tap%d").is_ok());
        assert!(check_ifname("0123456789abcdef").is_err());
        assert!(check_ifname("a b").is_err());
        assert!(check_ifname("..").is_err());
    }
}
