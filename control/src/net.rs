//! IPv4 prefixes in the state and on the control socket: the dataplane's
//! [`Ipv4Cidr`], written as its `A.B.C.D/N` string. Fields of that type take
//! `#[serde(with = "crate::net::cidr")]` (or `cidr_opt` for an `Option`).

pub use dataplane::wire::{CidrError, Ipv4Cidr};

/// Serde for an [`Ipv4Cidr`] as `"172.18.0.0/16"`.
pub mod cidr {
    use super::Ipv4Cidr;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &Ipv4Cidr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(c)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv4Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Serde for an `Option<Ipv4Cidr>`: the string, or `null`.
pub mod cidr_opt {
    use super::Ipv4Cidr;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &Option<Ipv4Cidr>, s: S) -> Result<S::Ok, S::Error> {
        match c {
            Some(c) => s.collect_str(c),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ipv4Cidr>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
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
