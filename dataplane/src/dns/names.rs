//! The names table of one network: what the embedded DNS answers by itself.
//!
//! Built by the control plane with [`NamesBuilder`] and swapped as a whole (the caller
//! wraps it in an `Arc`); never changed after [`NamesBuilder::build`]. Keys are stored
//! lowercase without a trailing dot, so lookups are case-insensitive and accept the
//! name with or without the root label. A name holds addresses of both families (A
//! and AAAA answers come from the same entry); reverse names are `in-addr.arpa` and
//! `ip6.arpa` (nibbles).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;

/// The name of the host (the network's gateway address) on every network.
pub const HOST_NAME: &str = "host.vswitch.internal";

/// Other names of [`HOST_NAME`], as Docker Desktop and Podman call the host.
pub const HOST_ALIASES: [&str; 2] = ["host.docker.internal", "host.containers.internal"];

/// Search domains one table (or one client) holds at most (glibc reads six).
pub const MAX_SEARCH_DOMAINS: usize = 6;

/// Upstream resolvers one route (a network's, a container's) lists at most.
pub const MAX_ROUTE: usize = super::MAX_UPSTREAMS;

/// Most (name, address) pairs one table holds: a /16 worth of containers, each with a
/// name and an alias.
pub const MAX_ENTRIES: usize = 1 << 17;

/// Longest name in presentation form without the trailing dot (RFC 1035: 255 octets
/// on the wire).
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;
const REVERSE_SUFFIX: &str = ".in-addr.arpa";
const REVERSE6_SUFFIX: &str = ".ip6.arpa";

/// Why the control plane's input was not accepted into a names table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamesError {
    /// The name cannot be a DNS name.
    #[error(
        "invalid DNS name {name:?}: {why} (use letters, digits, '-' and '_', labels of 1 to 63 characters separated by dots)"
    )]
    InvalidName { name: String, why: &'static str },
    /// The table reached [`MAX_ENTRIES`].
    #[error("too many DNS names on one network (at most {limit} name/address pairs)")]
    TooManyEntries { limit: usize },
    /// More than [`MAX_SEARCH_DOMAINS`] search domains.
    #[error("too many DNS search domains (at most {limit})")]
    TooManySearchDomains { limit: usize },
}

/// What one client (a container's address) resolves for itself alone: its
/// `--add-host` names, its search domains, its own upstream resolvers.
#[derive(Debug, Clone, Default)]
struct ClientView {
    hosts: HashMap<Box<str>, Vec<IpAddr>>,
    search: Vec<String>,
    upstreams: Option<Vec<usize>>,
}

/// What a name resolves to locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local<'a> {
    /// A forward name: its canonical key (for round robin) and its addresses (both
    /// families, in the order they were added).
    Addrs { key: &'a str, addrs: &'a [IpAddr] },
    /// A reverse name (`d.c.b.a.in-addr.arpa`, or the nibbles of an IPv6 address under
    /// `ip6.arpa`) of a known address: the names it points to.
    Ptr(&'a [Name]),
}

/// One network's names, immutable once built.
#[derive(Debug, Clone)]
pub struct Names {
    names_enabled: bool,
    forward: bool,
    /// The gateway's addresses (one per family), kept as a slice for [`Local::Addrs`].
    gateway_addrs: Vec<IpAddr>,
    gateway_ptr: Vec<Name>,
    /// The first one names PTR targets.
    search_domains: Vec<String>,
    by_name: HashMap<Box<str>, Vec<IpAddr>>,
    by_addr: HashMap<IpAddr, Vec<Name>>,
    /// The network's upstream resolvers (indexes into the caller's list), when not all
    /// of them in order.
    upstreams: Option<Vec<usize>>,
    clients: HashMap<IpAddr, ClientView>,
}

impl Default for Names {
    /// A table that knows nothing and forwards everything (no gateway name either).
    fn default() -> Self {
        NamesBuilder::new().build()
    }
}

impl Names {
    /// A builder for a table with container names enabled and forwarding on.
    pub fn builder() -> NamesBuilder {
        NamesBuilder::new()
    }

    /// Whether names outside the table are forwarded upstream (false on internal
    /// networks).
    pub fn forwards(&self) -> bool {
        self.forward
    }

    /// Whether container names resolve (false on the default `bridge` network).
    pub fn names_enabled(&self) -> bool {
        self.names_enabled
    }

    /// The gateway's IPv4 address `host.vswitch.internal` resolves to.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.gateway_addrs.iter().find_map(|a| match a {
            IpAddr::V4(v) => Some(*v),
            IpAddr::V6(_) => None,
        })
    }

    /// The (first) search domain under which names also resolve.
    pub fn search_domain(&self) -> Option<&str> {
        self.search_domains.first().map(String::as_str)
    }

    /// The upstream resolvers a query from `from` goes to, in order (indexes into the
    /// caller's list), or None for all of them in order.
    pub fn route(&self, from: Option<IpAddr>) -> Option<&[usize]> {
        let own = from.and_then(|f| self.clients.get(&f)?.upstreams.as_deref());
        own.or(self.upstreams.as_deref())
    }

    /// Distinct forward names in the table (the gateway name not counted).
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether the table has no container names.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// What `name` resolves to here, or `None` when it is not a local name.
    pub fn lookup(&self, name: &Name) -> Option<Local<'_>> {
        self.lookup_from(name, None)
    }

    /// What `name` resolves to for a query from `from`: its own `--add-host` names
    /// first (also under its search domains), then the network's names (under the
    /// network's search domains and its own).
    pub fn lookup_from(&self, name: &Name, from: Option<IpAddr>) -> Option<Local<'_>> {
        let mut buf = [0u8; MAX_NAME_LEN + 2];
        let key = lower_key(name, &mut buf)?;
        let client = from.and_then(|f| self.clients.get(&f));
        if let Some(c) = client {
            let own = |k: &str| c.hosts.get_key_value(k);
            let hit = own(key).or_else(|| self.bare_names(key, &c.search).find_map(own));
            if let Some((k, addrs)) = hit {
                return Some(Local::Addrs { key: k, addrs });
            }
        }
        if let Some(l) = self.lookup_key(key) {
            return Some(l);
        }
        let search = client.map_or(&[][..], |c| &c.search[..]);
        if !self.names_enabled {
            return None;
        }
        let (k, addrs) = self
            .bare_names(key, search)
            .find_map(|b| self.by_name.get_key_value(b))?;
        Some(Local::Addrs { key: k, addrs })
    }

    /// `key` without each of `domains` it ends with (`web` of `web.corp.test`).
    fn bare_names<'k>(
        &self,
        key: &'k str,
        domains: &'k [String],
    ) -> impl Iterator<Item = &'k str> + 'k {
        domains
            .iter()
            .filter_map(move |d| key.strip_suffix(d.as_str())?.strip_suffix('.'))
    }

    fn lookup_key(&self, key: &str) -> Option<Local<'_>> {
        if key == HOST_NAME || HOST_ALIASES.contains(&key) {
            return (!self.gateway_addrs.is_empty()).then_some(Local::Addrs {
                key: HOST_NAME,
                addrs: &self.gateway_addrs,
            });
        }
        let reverse = (key.strip_suffix(REVERSE_SUFFIX))
            .map(|r| parse_reverse(r).map(IpAddr::V4))
            .or_else(|| key.strip_suffix(REVERSE6_SUFFIX).map(parse_reverse6));
        if let Some(ip) = reverse {
            let ip = ip?;
            if self.gateway_addrs.contains(&ip) {
                return Some(Local::Ptr(&self.gateway_ptr));
            }
            if !self.names_enabled {
                return None;
            }
            return self.by_addr.get(&ip).map(|n| Local::Ptr(n));
        }
        if !self.names_enabled {
            return None;
        }
        if let Some((k, addrs)) = self.by_name.get_key_value(key) {
            return Some(Local::Addrs { key: k, addrs });
        }
        self.bare_names(key, &self.search_domains)
            .find_map(|b| self.by_name.get_key_value(b))
            .map(|(k, addrs)| Local::Addrs { key: k, addrs })
    }
}

/// Builds a [`Names`] table; every method validates its input.
#[derive(Debug, Clone)]
pub struct NamesBuilder {
    names_enabled: bool,
    forward: bool,
    gateway: Vec<IpAddr>,
    search_domains: Vec<String>,
    by_name: HashMap<Box<str>, Vec<IpAddr>>,
    by_addr: HashMap<IpAddr, Vec<String>>,
    entries: usize,
    upstreams: Option<Vec<usize>>,
    clients: HashMap<IpAddr, ClientView>,
}

impl Default for NamesBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl NamesBuilder {
    /// Names enabled, forwarding on, no gateway, no search domain.
    pub fn new() -> Self {
        Self {
            names_enabled: true,
            forward: true,
            gateway: Vec::new(),
            search_domains: Vec::new(),
            by_name: HashMap::new(),
            by_addr: HashMap::new(),
            entries: 0,
            upstreams: None,
            clients: HashMap::new(),
        }
    }

    /// A gateway address (call once per family): `host.vswitch.internal` resolves to
    /// it, and its reverse name to `host.vswitch.internal`, whatever the other settings.
    pub fn gateway(&mut self, ip: impl Into<IpAddr>) -> &mut Self {
        let ip = ip.into();
        if !self.gateway.contains(&ip) {
            self.gateway.push(ip);
        }
        self
    }

    /// `true` for a network that resolves no container names (the default `bridge`
    /// network, as docker0): only `host.vswitch.internal` is answered locally, and
    /// names added with [`container`](Self::container) or [`alias`](Self::alias) are
    /// ignored by lookups.
    pub fn forward_only(&mut self, yes: bool) -> &mut Self {
        self.names_enabled = !yes;
        self
    }

    /// `false` for an internal network: names not in the table are not forwarded
    /// upstream but answered SERVFAIL, as Docker's embedded DNS does there.
    pub fn forward(&mut self, yes: bool) -> &mut Self {
        self.forward = yes;
        self
    }

    /// A domain under which every name also resolves (`web` and `web.DOMAIN`); the
    /// first one given is what PTR answers carry (`web.DOMAIN.`). At most
    /// [`MAX_SEARCH_DOMAINS`].
    pub fn search_domain(&mut self, domain: &str) -> Result<&mut Self, NamesError> {
        push_domain(&mut self.search_domains, domain)?;
        Ok(self)
    }

    /// The network's upstream resolvers, in order (indexes into the caller's list; at
    /// most [`MAX_ROUTE`], the rest ignored). Without this call: all of them.
    pub fn upstreams(&mut self, route: Vec<usize>) -> &mut Self {
        self.upstreams = Some(route.into_iter().take(MAX_ROUTE).collect());
        self
    }

    /// Upstream resolvers for the queries of `client` alone (a container's `--dns`).
    pub fn client_upstreams(&mut self, client: IpAddr, route: Vec<usize>) -> &mut Self {
        let c = self.clients.entry(client).or_default();
        c.upstreams = Some(route.into_iter().take(MAX_ROUTE).collect());
        self
    }

    /// A search domain of `client` alone: its queries for `NAME.DOMAIN` are answered
    /// as `NAME`.
    pub fn client_search(&mut self, client: IpAddr, domain: &str) -> Result<&mut Self, NamesError> {
        let c = self.clients.entry(client).or_default();
        push_domain(&mut c.search, domain)?;
        Ok(self)
    }

    /// A name only `client` resolves (`--add-host NAME:IP`), before every other name.
    pub fn client_host(
        &mut self,
        client: IpAddr,
        name: &str,
        ip: impl Into<IpAddr>,
    ) -> Result<&mut Self, NamesError> {
        let (ip, key) = (ip.into(), canonical(name)?);
        if self.entries >= MAX_ENTRIES {
            return Err(NamesError::TooManyEntries { limit: MAX_ENTRIES });
        }
        let c = self.clients.entry(client).or_default();
        let addrs = c.hosts.entry(key.into()).or_default();
        if !addrs.contains(&ip) {
            addrs.push(ip);
            self.entries += 1;
        }
        Ok(self)
    }

    /// A container `name` at `ip` (call once per address): resolves forward, and `ip`
    /// resolves back to it.
    pub fn container(
        &mut self,
        name: &str,
        ip: impl Into<IpAddr>,
    ) -> Result<&mut Self, NamesError> {
        let ip = ip.into();
        let key = canonical(name)?;
        self.add_forward(&key, ip)?;
        let ptrs = self.by_addr.entry(ip).or_default();
        if !ptrs.contains(&key) {
            ptrs.push(key);
        }
        Ok(self)
    }

    /// An alias: resolves forward to `ip` (and to the addresses of every other
    /// container with the same alias), but is not a reverse name.
    pub fn alias(&mut self, alias: &str, ip: impl Into<IpAddr>) -> Result<&mut Self, NamesError> {
        let ip = ip.into();
        let key = canonical(alias)?;
        self.add_forward(&key, ip)?;
        Ok(self)
    }

    fn add_forward(&mut self, key: &str, ip: IpAddr) -> Result<(), NamesError> {
        if let Some(addrs) = self.by_name.get_mut(key) {
            if addrs.contains(&ip) {
                return Ok(());
            }
            if self.entries >= MAX_ENTRIES {
                return Err(NamesError::TooManyEntries { limit: MAX_ENTRIES });
            }
            addrs.push(ip);
        } else {
            if self.entries >= MAX_ENTRIES {
                return Err(NamesError::TooManyEntries { limit: MAX_ENTRIES });
            }
            self.by_name.insert(key.into(), vec![ip]);
        }
        self.entries += 1;
        Ok(())
    }

    /// The finished table. PTR targets are built here, under the search domain if any;
    /// a target that would be too long for DNS is left out.
    pub fn build(self) -> Names {
        let gateway_ptr = Name::from_ascii(format!("{HOST_NAME}."))
            .map(|n| vec![n])
            .unwrap_or_default();
        let by_addr = self
            .by_addr
            .into_iter()
            .map(|(ip, names)| {
                let targets = names
                    .iter()
                    .filter_map(|n| {
                        let fqdn = match self.search_domains.first() {
                            Some(d) => format!("{n}.{d}."),
                            None => format!("{n}."),
                        };
                        Name::from_ascii(fqdn).ok()
                    })
                    .collect();
                (ip, targets)
            })
            .collect();
        Names {
            names_enabled: self.names_enabled,
            forward: self.forward,
            gateway_addrs: self.gateway,
            gateway_ptr,
            search_domains: self.search_domains,
            by_name: self.by_name,
            by_addr,
            upstreams: self.upstreams,
            clients: self.clients,
        }
    }
}

/// Adds a search domain to `list` (canonical, once, at most [`MAX_SEARCH_DOMAINS`]).
fn push_domain(list: &mut Vec<String>, domain: &str) -> Result<(), NamesError> {
    let d = canonical(domain)?;
    if list.contains(&d) {
        return Ok(());
    }
    if list.len() >= MAX_SEARCH_DOMAINS {
        return Err(NamesError::TooManySearchDomains {
            limit: MAX_SEARCH_DOMAINS,
        });
    }
    list.push(d);
    Ok(())
}

fn name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// The stored form of a control-plane name: lowercase, no trailing dot, validated.
fn canonical(name: &str) -> Result<String, NamesError> {
    let bad = |why| NamesError::InvalidName {
        name: name.to_owned(),
        why,
    };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(bad("empty"));
    }
    if trimmed.len() > MAX_NAME_LEN {
        return Err(bad("longer than 253 characters"));
    }
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(bad("empty label"));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(bad("label longer than 63 characters"));
        }
        if !label.bytes().all(name_char) {
            return Err(bad("character not allowed"));
        }
    }
    Ok(trimmed.to_ascii_lowercase())
}

/// Writes `name` lowercase, labels joined by dots, no trailing dot, into `buf` and
/// returns it; `None` if a label has a byte no table name can contain (so the name
/// cannot be local).
fn lower_key<'b>(name: &Name, buf: &'b mut [u8]) -> Option<&'b str> {
    let mut len = 0;
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            *buf.get_mut(len)? = b'.';
            len += 1;
        }
        for &b in label {
            if !name_char(b) {
                return None;
            }
            *buf.get_mut(len)? = b.to_ascii_lowercase();
            len += 1;
        }
    }
    std::str::from_utf8(buf.get(..len)?).ok()
}

/// `d.c.b.a` (the part before `.in-addr.arpa`) as the address a.b.c.d; decimal
/// octets without leading zeros.
fn parse_reverse(rest: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = rest.split('.');
    for slot in octets.iter_mut().rev() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || (p.len() > 1 && p.starts_with('0')) {
            return None;
        }
        if !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = p.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// The nibbles before `.ip6.arpa` (least significant first, 32 of them, one hex
/// digit each) as the IPv6 address they name.
fn parse_reverse6(rest: &str) -> Option<IpAddr> {
    let mut v: u128 = 0;
    let mut n = 0;
    for (i, p) in rest.split('.').enumerate() {
        if i >= 32 || p.len() != 1 {
            return None;
        }
        let d = u128::from(char::from(*p.as_bytes().first()?).to_digit(16)?);
        v |= d << (4 * i);
        n += 1;
    }
    (n == 32).then_some(IpAddr::V6(Ipv6Addr::from(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
    const WEB2: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 3);
    const GW: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 1);

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn table() -> Names {
        let mut b = Names::builder();
        b.gateway(GW).search_domain("MyNet").unwrap();
        b.container("web", WEB).unwrap();
        b.container("Web2", WEB2).unwrap();
        b.alias("api", WEB).unwrap();
        b.alias("api", WEB2).unwrap();
        b.alias("api", WEB2).unwrap(); // duplicate: ignored
        b.build()
    }

    /// The IPv4 addresses of a name.
    fn addrs(t: &Names, n: &str) -> Option<Vec<Ipv4Addr>> {
        match t.lookup(&name(n))? {
            Local::Addrs { addrs, .. } => Some(
                addrs
                    .iter()
                    .filter_map(|a| match a {
                        IpAddr::V4(v) => Some(*v),
                        IpAddr::V6(_) => None,
                    })
                    .collect(),
            ),
            Local::Ptr(_) => None,
        }
    }

    fn all_addrs(t: &Names, n: &str) -> Option<Vec<IpAddr>> {
        match t.lookup(&name(n))? {
            Local::Addrs { addrs, .. } => Some(addrs.to_vec()),
            Local::Ptr(_) => None,
        }
    }

    #[test]
    fn host_aliases_and_search_domains_of_the_network() {
        let mut b = Names::builder();
        b.gateway(GW).search_domain("mynet").unwrap();
        b.search_domain("Corp.Test.").unwrap();
        b.container("web", WEB).unwrap();
        let t = b.build();
        for n in ["host.docker.internal", "HOST.containers.internal."] {
            assert_eq!(addrs(&t, n), Some(vec![GW]), "{n}");
        }
        assert_eq!(addrs(&t, "web.corp.test"), Some(vec![WEB]));
        assert_eq!(addrs(&t, "web.mynet"), Some(vec![WEB]));
        assert_eq!(addrs(&t, "web.other.test"), None);
        // PTR targets keep the first search domain.
        assert_eq!(t.search_domain(), Some("mynet"));
        let mut b = Names::builder();
        for i in 0..MAX_SEARCH_DOMAINS {
            b.search_domain(&format!("d{i}.test")).unwrap();
        }
        assert!(b.search_domain("one-more.test").is_err());
    }

    #[test]
    fn dual_stack_names_and_ip6_arpa() {
        let web6: Ipv6Addr = "2001:db8:1::42:acff:fe12:2".parse().unwrap();
        let gw6: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
        let mut b = Names::builder();
        b.gateway(GW).gateway(gw6).search_domain("mynet").unwrap();
        b.container("web", WEB).unwrap();
        b.container("web", web6).unwrap();
        b.alias("api", web6).unwrap();
        let t = b.build();
        let w: Vec<IpAddr> = vec![WEB.into(), web6.into()];
        assert_eq!(all_addrs(&t, "web"), Some(w));
        assert_eq!(all_addrs(&t, "api"), Some(vec![web6.into()]));
        assert_eq!(all_addrs(&t, HOST_NAME), Some(vec![GW.into(), gw6.into()]));
        assert_eq!(t.gateway(), Some(GW));
        // 2001:db8:1::42:acff:fe12:2, nibbles reversed (as `dig -x` asks).
        let rev = "2.0.0.0.2.1.e.f.f.f.c.a.2.4.0.0.0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.";
        assert_eq!(ptrs(&t, rev), Some(vec!["web.mynet.".to_owned()]));
        assert_eq!(
            ptrs(&t, &rev.to_uppercase()),
            Some(vec!["web.mynet.".to_owned()])
        );
        let gw_rev = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa";
        assert_eq!(
            ptrs(&t, gw_rev),
            Some(vec!["host.vswitch.internal.".to_owned()])
        );
        // Too few nibbles, two-digit labels, not hex: not local.
        assert_eq!(ptrs(&t, &rev[2..]), None);
        assert_eq!(ptrs(&t, &format!("0.{rev}")), None);
        assert_eq!(
            ptrs(
                &t,
                "20.0.0.0.2.1.e.f.f.f.c.a.2.4.0.0.0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.ip6.arpa"
            ),
            None
        );
        assert_eq!(ptrs(&t, &rev.replace("e.f", "g.f")), None);
    }

    fn ptrs(t: &Names, n: &str) -> Option<Vec<String>> {
        match t.lookup(&name(n))? {
            Local::Ptr(p) => Some(p.iter().map(|n| n.to_ascii()).collect()),
            Local::Addrs { .. } => None,
        }
    }

    #[test]
    fn forward_names_any_case_with_or_without_root() {
        let t = table();
        assert_eq!(addrs(&t, "web"), Some(vec![WEB]));
        assert_eq!(addrs(&t, "WEB."), Some(vec![WEB]));
        assert_eq!(addrs(&t, "wEb2"), Some(vec![WEB2]));
        assert_eq!(addrs(&t, "api"), Some(vec![WEB, WEB2]));
        assert_eq!(addrs(&t, "web.mynet."), Some(vec![WEB]));
        assert_eq!(addrs(&t, "Web.MYNET"), Some(vec![WEB]));
        assert_eq!(addrs(&t, "web.othernet"), None);
        assert_eq!(addrs(&t, "mynet"), None);
        assert_eq!(addrs(&t, "xweb"), None);
        assert_eq!(addrs(&t, "example.com"), None);
        assert_eq!(t.lookup(&Name::root()), None);
    }

    #[test]
    fn key_is_canonical() {
        let t = table();
        match t.lookup(&name("WEB2.MyNet.")) {
            Some(Local::Addrs { key, .. }) => assert_eq!(key, "web2"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn host_name_and_reverse() {
        let t = table();
        assert_eq!(addrs(&t, "Host.VSwitch.Internal."), Some(vec![GW]));
        assert_eq!(
            ptrs(&t, "1.0.18.172.in-addr.arpa."),
            Some(vec!["host.vswitch.internal.".to_owned()])
        );
        assert_eq!(
            ptrs(&t, "2.0.18.172.IN-ADDR.ARPA"),
            Some(vec!["web.mynet.".to_owned()])
        );
        // Aliases are not reverse names.
        assert_eq!(
            ptrs(&t, "3.0.18.172.in-addr.arpa"),
            Some(vec!["web2.mynet.".to_owned()])
        );
        assert_eq!(ptrs(&t, "9.0.18.172.in-addr.arpa"), None);
        assert_eq!(ptrs(&t, "02.0.18.172.in-addr.arpa"), None);
        assert_eq!(ptrs(&t, "0.18.172.in-addr.arpa"), None);
        assert_eq!(ptrs(&t, "1.2.0.18.172.in-addr.arpa"), None);
        assert_eq!(ptrs(&t, "256.0.18.172.in-addr.arpa"), None);
    }

    #[test]
    fn ptr_without_search_domain_is_bare_fqdn() {
        let mut b = Names::builder();
        b.container("web", WEB).unwrap();
        let t = b.build();
        assert_eq!(
            ptrs(&t, "2.0.18.172.in-addr.arpa"),
            Some(vec!["web.".to_owned()])
        );
        // No gateway set: the host name is not local.
        assert_eq!(addrs(&t, HOST_NAME), None);
    }

    #[test]
    fn forward_only_knows_only_the_host() {
        let mut b = Names::builder();
        b.gateway(GW).forward_only(true);
        b.container("web", WEB).unwrap();
        let t = b.build();
        assert!(!t.names_enabled());
        assert_eq!(addrs(&t, "web"), None);
        assert_eq!(ptrs(&t, "2.0.18.172.in-addr.arpa"), None);
        assert_eq!(addrs(&t, HOST_NAME), Some(vec![GW]));
        assert!(ptrs(&t, "1.0.18.172.in-addr.arpa").is_some());
    }

    #[test]
    fn invalid_names_are_refused() {
        let mut b = Names::builder();
        for bad in [
            "",
            ".",
            "a..b",
            "we b",
            "wé",
            &"a".repeat(64),
            &"a.".repeat(130),
        ] {
            assert!(
                matches!(b.container(bad, WEB), Err(NamesError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(b.container("my_app.v-1", WEB).is_ok());
        assert!(b.search_domain("a b").is_err());
        let e = b.container("a b", WEB).unwrap_err().to_string();
        assert!(e.contains("\"a b\""), "{e}");
    }

    #[test]
    fn query_names_with_odd_bytes_are_not_local() {
        let t = table();
        let odd = Name::from_labels(vec![&b"we\x00b"[..]]).unwrap();
        assert_eq!(t.lookup(&odd), None);
        let dotted = Name::from_labels(vec![&b"web.mynet"[..]]).unwrap();
        assert_eq!(t.lookup(&dotted), None);
    }

    #[test]
    fn entry_limit() {
        let mut b = Names::builder();
        b.entries = MAX_ENTRIES;
        assert_eq!(
            b.container("web", WEB).unwrap_err(),
            NamesError::TooManyEntries { limit: MAX_ENTRIES }
        );
    }
}
