//! Docker's `-p` grammar: `[HOSTIP:][HOSTPORT[-END]:]CPORT[-END][/tcp|/udp]`, an IPv6
//! HOSTIP in brackets (`[::1]:8080:80`).

use std::net::{IpAddr, Ipv4Addr};

use crate::state::Proto;

/// One published port as asked: the host port is None when the daemon should pick a
/// free one from the ephemeral range. The host address 0.0.0.0 (the default) stands
/// for every address of both families, as Docker's default does; `::` for every IPv6
/// one only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortReq {
    pub proto: Proto,
    pub host_ip: IpAddr,
    pub host_port: Option<u16>,
    pub container_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("invalid port spec {0:?}: expected [HOSTIP:][HOSTPORT[-END]:]CPORT[-END][/tcp|/udp]")]
    Syntax(String),
    #[error("invalid port spec {0:?}: port numbers are 1 to 65535")]
    Port(String),
    #[error("invalid port spec {0:?}: the host and container ranges must have the same length")]
    RangeLength(String),
    #[error("invalid port spec {0:?}: protocol must be tcp or udp")]
    Proto(String),
}

fn range(spec: &str, s: &str) -> Result<(u16, u16), PublishError> {
    let port = |p: &str| -> Result<u16, PublishError> {
        match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(PublishError::Port(spec.to_string())),
            Ok(v) => Ok(v),
        }
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if b < a {
                return Err(PublishError::Port(spec.to_string()));
            }
            Ok((a, b))
        }
        None => {
            let p = port(s)?;
            Ok((p, p))
        }
    }
}

/// Parses one `-p` value into the ports it publishes.
pub fn parse(spec: &str) -> Result<Vec<PortReq>, PublishError> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, "tcp")) => (r, Proto::Tcp),
        Some((r, "udp")) => (r, Proto::Udp),
        Some(_) => return Err(PublishError::Proto(spec.to_string())),
        None => (spec, Proto::Tcp),
    };
    // An IPv6 host address comes in brackets: [::1]:8080:80.
    let (ip6, rest) = match rest.strip_prefix('[').and_then(|r| r.split_once("]:")) {
        Some((ip, r)) => (Some(ip), r),
        None => (None, rest),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, cont) = match (ip6, parts.as_slice()) {
        (None, [c]) => (None, None, *c),
        (None, [h, c]) => (None, Some(*h), *c),
        (None, [ip, h, c]) => (Some(*ip), Some(*h).filter(|h| !h.is_empty()), *c),
        (Some(ip), [h, c]) => (Some(ip), Some(*h).filter(|h| !h.is_empty()), *c),
        _ => return Err(PublishError::Syntax(spec.to_string())),
    };
    let host_ip = match ip {
        Some(ip) => ip
            .parse::<IpAddr>()
            .ok()
            .filter(|a| a.is_ipv6() == ip6.is_some())
            .ok_or_else(|| PublishError::Syntax(spec.to_string()))?,
        None => Ipv4Addr::UNSPECIFIED.into(),
    };
    let (c0, c1) = range(spec, cont)?;
    let host = host.map(|h| range(spec, h)).transpose()?;
    if let Some((h0, h1)) = host
        && h1 - h0 != c1 - c0
    {
        return Err(PublishError::RangeLength(spec.to_string()));
    }
    Ok((c0..=c1)
        .enumerate()
        .map(|(i, cp)| PortReq {
            proto,
            host_ip,
            host_port: host.map(|(h0, _)| h0 + i as u16),
            container_port: cp,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> PortReq {
        let v = parse(s).unwrap();
        assert_eq!(v.len(), 1, "{s}");
        v[0]
    }

    #[test]
    fn docker_forms() {
        let p = one("8080:80");
        assert_eq!(
            (p.proto, p.host_ip, p.host_port, p.container_port),
            (Proto::Tcp, Ipv4Addr::UNSPECIFIED.into(), Some(8080), 80)
        );
        let p = one("127.0.0.1:5353:53/udp");
        assert_eq!(
            (p.proto, p.host_ip, p.host_port, p.container_port),
            (Proto::Udp, Ipv4Addr::LOCALHOST.into(), Some(5353), 53)
        );
        let p = one("80");
        assert_eq!((p.host_port, p.container_port), (None, 80));
        let p = one("127.0.0.1::80");
        assert_eq!((p.host_ip, p.host_port), (Ipv4Addr::LOCALHOST.into(), None));
        let p = one("[::1]:8080:80/udp");
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(
            (p.proto, p.host_ip, p.host_port),
            (Proto::Udp, v6, Some(8080))
        );
        let p = one("[::]::80");
        assert_eq!((p.host_ip, p.host_port), (IpAddr::from([0u16; 8]), None));
        let v = parse("8000-8002:80-82/tcp").unwrap();
        assert_eq!(
            v.iter()
                .map(|p| (p.host_port, p.container_port))
                .collect::<Vec<_>>(),
            vec![(Some(8000), 80), (Some(8001), 81), (Some(8002), 82)]
        );
        let v = parse("7000-7001").unwrap();
        assert_eq!(
            v.iter()
                .map(|p| (p.host_port, p.container_port))
                .collect::<Vec<_>>(),
            vec![(None, 7000), (None, 7001)]
        );
    }

    #[test]
    fn refusals() {
        for (s, msg) in [
            ("8000-8002:80-81", "same length"),
            ("0:80", "1 to 65535"),
            ("70000:80", "1 to 65535"),
            ("80-70", "1 to 65535"),
            ("8080:80/sctp", "tcp or udp"),
            ("a:b:c:d", "expected"),
            ("nothost:80:80", "expected"),
            ("::1:8080:80", "expected"),
            ("[127.0.0.1]:8080:80", "expected"),
            ("[::1]:80", "expected"),
            ("", "1 to 65535"),
        ] {
            let e = parse(s).unwrap_err().to_string();
            assert!(e.contains(msg), "{s}: {e}");
        }
    }
}
