//! Bandwidth limits of a container's port: the rates users type (`100mbit`), what the
//! state and the protocol keep (bits a second, bytes of burst), and the dataplane's form.

use serde::{Deserialize, Serialize};

/// The slowest rate accepted (bits a second).
pub const MIN_RATE: u64 = 8_000;
/// The fastest rate accepted (bits a second).
pub const MAX_RATE: u64 = 1_000_000_000_000;
/// The deepest bucket accepted (bytes).
pub const MAX_BURST: u64 = 1 << 30;

/// Why a limit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("bad rate {0:?}: give bits a second as N[kbit|mbit|gbit|tbit] (e.g. 100mbit)")]
    BadRate(String),
    #[error("rate {0} bit/s out of range: give 8kbit to 1tbit (or 0 to remove the limit)")]
    RateRange(u64),
    #[error("bad burst {0:?}: give bytes as N[k|m|g] (e.g. 256k)")]
    BadBytes(String),
    #[error("burst {0} bytes out of range: give at most 1g")]
    BurstRange(u64),
}

/// A port's limits as the state and the protocol keep them. A rate of 0 in a request
/// removes that direction's limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortLimits {
    /// Into the container: bits a second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_in: Option<u64>,
    /// Out of the container: bits a second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_out: Option<u64>,
    /// The buckets' depth in bytes (default: 50 ms of the rate, at least 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
}

impl PortLimits {
    pub fn is_none(&self) -> bool {
        self.rate_in.is_none() && self.rate_out.is_none()
    }

    /// Checks every value's range (0 rates allowed: "no limit").
    pub fn check(&self) -> Result<(), LimitError> {
        for r in [self.rate_in, self.rate_out].into_iter().flatten() {
            if r != 0 && !(MIN_RATE..=MAX_RATE).contains(&r) {
                return Err(LimitError::RateRange(r));
            }
        }
        match self.burst {
            Some(b) if b > MAX_BURST => Err(LimitError::BurstRange(b)),
            _ => Ok(()),
        }
    }

    /// These limits with `update`'s given values in place (a rate of 0 removes it; a
    /// burst stays unless given; nothing left limited drops the burst too).
    pub fn updated(&self, update: &PortLimits) -> PortLimits {
        let pick = |old: Option<u64>, new: Option<u64>| match new {
            Some(0) => None,
            Some(v) => Some(v),
            None => old,
        };
        let mut l = PortLimits {
            rate_in: pick(self.rate_in, update.rate_in),
            rate_out: pick(self.rate_out, update.rate_out),
            burst: update.burst.or(self.burst),
        };
        if l.is_none() {
            l.burst = None;
        }
        l
    }

    /// Without the zero rates of a request.
    pub fn normalized(&self) -> PortLimits {
        PortLimits::default().updated(self)
    }

    /// The dataplane's form.
    pub fn to_dataplane(&self) -> dataplane::shaper::Limits {
        use dataplane::shaper::Rate;
        dataplane::shaper::Limits {
            rate_in: self.rate_in.and_then(|r| Rate::from_bits(r, self.burst)),
            rate_out: self.rate_out.and_then(|r| Rate::from_bits(r, self.burst)),
        }
    }
}

/// Splits `s` into its number and its unit (lowercase).
fn split_unit(s: &str) -> Option<(f64, String)> {
    let s = s.trim().to_ascii_lowercase();
    let at = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(at);
    let n: f64 = num.parse().ok()?;
    n.is_finite().then(|| (n, unit.to_string()))
}

/// Parses a rate in bits a second: `100mbit`, `1gbit`, `500kbit`, `2.5gbit`, `1000000`
/// (bits), `0` (no limit). Units are decimal (k = 1000), as tc's.
pub fn parse_rate(s: &str) -> Result<u64, LimitError> {
    let bad = || LimitError::BadRate(s.to_string());
    let (n, unit) = split_unit(s).ok_or_else(bad)?;
    let mult: f64 = match unit.as_str() {
        "" | "bit" | "bps" => 1.0,
        "k" | "kbit" => 1e3,
        "m" | "mbit" => 1e6,
        "g" | "gbit" => 1e9,
        "t" | "tbit" => 1e12,
        _ => return Err(bad()),
    };
    let v = (n * mult).round();
    if v > MAX_RATE as f64 {
        return Err(LimitError::RateRange(u64::MAX));
    }
    let v = v as u64;
    if v != 0 && v < MIN_RATE {
        return Err(LimitError::RateRange(v));
    }
    Ok(v)
}

/// Parses a size in bytes: `65536`, `256k`, `1m` (k = 1024).
pub fn parse_bytes(s: &str) -> Result<u64, LimitError> {
    let bad = || LimitError::BadBytes(s.to_string());
    let (n, unit) = split_unit(s).ok_or_else(bad)?;
    let mult: f64 = match unit.trim_end_matches('b') {
        "" => 1.0,
        "k" | "ki" => 1024.0,
        "m" | "mi" => 1024.0 * 1024.0,
        "g" | "gi" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let v = (n * mult).round();
    if v > MAX_BURST as f64 {
        return Err(LimitError::BurstRange(v as u64));
    }
    Ok(v as u64)
}

/// A rate for people: `100mbit`, `1.5gbit`, `640kbit`.
pub fn format_rate(bits: u64) -> String {
    for (div, unit) in [(1e12, "tbit"), (1e9, "gbit"), (1e6, "mbit"), (1e3, "kbit")] {
        let v = bits as f64 / div;
        if v >= 1.0 {
            let s = format!("{v:.3}");
            let s = s.trim_end_matches('0').trim_end_matches('.');
            return format!("{s}{unit}");
        }
    }
    format!("{bits}bit")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_as_tc_writes_them() {
        assert_eq!(parse_rate("100mbit"), Ok(100_000_000));
        assert_eq!(parse_rate("1gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate("500kbit"), Ok(500_000));
        assert_eq!(parse_rate("2.5Gbit"), Ok(2_500_000_000));
        assert_eq!(parse_rate("1000000"), Ok(1_000_000));
        assert_eq!(parse_rate("0"), Ok(0));
        assert!(matches!(parse_rate("fast"), Err(LimitError::BadRate(_))));
        assert!(matches!(parse_rate("100mb/s"), Err(LimitError::BadRate(_))));
        assert!(matches!(
            parse_rate("10bit"),
            Err(LimitError::RateRange(10))
        ));
        assert!(matches!(parse_rate("5tbit"), Err(LimitError::RateRange(_))));
        assert!(matches!(parse_rate("-1mbit"), Err(LimitError::BadRate(_))));
    }

    #[test]
    fn bursts_parse_in_binary_units() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("256k"), Ok(262_144));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert!(parse_bytes("2g").is_err());
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn rates_format_back() {
        assert_eq!(format_rate(100_000_000), "100mbit");
        assert_eq!(format_rate(1_500_000_000), "1.5gbit");
        assert_eq!(format_rate(640_000), "640kbit");
        assert_eq!(format_rate(900), "900bit");
    }

    #[test]
    fn an_update_replaces_what_it_gives_and_zero_removes() {
        let l = PortLimits {
            rate_in: Some(1_000_000),
            rate_out: Some(2_000_000),
            burst: Some(100_000),
        };
        let u = l.updated(&PortLimits {
            rate_out: Some(0),
            ..Default::default()
        });
        assert_eq!(u.rate_in, Some(1_000_000));
        assert_eq!(u.rate_out, None);
        assert_eq!(u.burst, Some(100_000));
        let none = u.updated(&PortLimits {
            rate_in: Some(0),
            ..Default::default()
        });
        assert_eq!(none, PortLimits::default());
        assert!(
            PortLimits {
                rate_in: Some(5),
                ..Default::default()
            }
            .check()
            .is_err()
        );
    }

    #[test]
    fn the_dataplane_form_has_bytes_and_a_bucket() {
        let l = PortLimits {
            rate_out: Some(100_000_000),
            ..Default::default()
        }
        .to_dataplane();
        assert_eq!(l.rate_in, None);
        assert_eq!(l.rate_out.unwrap().bytes_per_sec, 12_500_000);
    }
}
