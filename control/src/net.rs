//! IPv4 and IPv6 prefixes in the state and on the control socket: the dataplane's
//! [`Ipv4Cidr`] and [`Ipv6Cidr`], written as their `A.B.C.D/N` or `X:Y::/N` strings.
//! Fields of either type take `#[serde(with = "crate::net::cidr")]` (or `cidr_opt` for
//! an `Option`).

pub use dataplane::wire::{Cidr6Error, CidrError, Ipv4Cidr, Ipv6Cidr};

/// Serde for a prefix as its string (`"172.18.0.0/16"`, `"2001:db8:1::/64"`).
pub mod cidr {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<S: Serializer, C: Display>(c: &C, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(c)
    }

    pub fn deserialize<'de, D, C>(d: D) -> Result<C, D::Error>
    where
        D: Deserializer<'de>,
        C: FromStr<Err: Display>,
    {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Serde for an optional prefix: the string, or `null`.
pub mod cidr_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<S: Serializer, C: Display>(c: &Option<C>, s: S) -> Result<S::Ok, S::Error> {
        match c {
            Some(c) => s.collect_str(c),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D, C>(d: D) -> Result<Option<C>, D::Error>
    where
        D: Deserializer<'de>,
        C: FromStr<Err: Display>,
    {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// The resolv.conf of a container whose gateway answers DNS: each gateway address the
/// network has (IPv4 first), and ndots:0.
pub fn resolv_conf(v4: Option<std::net::Ipv4Addr>, v6: Option<std::net::Ipv6Addr>) -> String {
    let gws = [v4.map(std::net::IpAddr::V4), v6.map(std::net::IpAddr::V6)];
    resolv_conf_with(&gws.into_iter().flatten().collect::<Vec<_>>(), &[], &[])
}

/// A resolv.conf: `servers`, a `search` line, and `options` (`ndots:0` when neither
/// search domains nor options are given: container names have no dots, and nothing is
/// to be searched).
pub fn resolv_conf_with(
    servers: &[std::net::IpAddr],
    search: &[String],
    options: &[String],
) -> String {
    let mut s = String::new();
    for g in servers {
        s.push_str(&format!("nameserver {g}\n"));
    }
    if !search.is_empty() {
        s.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        s.push_str(&format!("options {}\n", options.join(" ")));
    } else if search.is_empty() {
        s.push_str("options ndots:0\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct T {
        #[serde(with = "cidr")]
        a: Ipv4Cidr,
        #[serde(default, with = "cidr_opt")]
        b: Option<Ipv4Cidr>,
    }

    #[test]
    fn as_strings() {
        let t = T {
            a: "10.1.0.0/16".parse().unwrap(),
            b: None,
        };
        let s = serde_json::to_string(&t).unwrap();
        assert_eq!(s, r#"{"a":"10.1.0.0/16","b":null}"#);
        assert_eq!(serde_json::from_str::<T>(&s).unwrap(), t);
        let u: T = serde_json::from_str(r#"{"a":"10.1.0.1/24","b":"10.1.0.0/25"}"#).unwrap();
        assert_eq!(u.b.map(|b| b.prefix_len()), Some(25));
        assert!(serde_json::from_str::<T>(r#"{"a":"10.1.0.0/33"}"#).is_err());
    }
}
