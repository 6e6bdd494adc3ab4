//! The daemon's log: levels (`--log-level`, else `RUST_LOG`, else `info`), one line per
//! control action (changes at `info`, reads at `debug`) and notable event, never a line
//! per packet above `debug`. Lines go to stderr as `vswitch: LEVEL message`, the form
//! the daemon's other messages have.

use std::io::Write;

use crate::api::Request;

/// Starts the logger: `level` when given (`error`, `warn`, `info`, `debug`, `trace`,
/// or a `RUST_LOG` filter such as `vswitch=debug`), else `$RUST_LOG`, else `info`.
pub fn init(level: Option<&str>) {
    let filter = level
        .map(str::to_string)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let _ = env_logger::Builder::new()
        .parse_filters(&filter)
        .format(|f, r| {
            writeln!(
                f,
                "vswitch: {} {}",
                r.level().as_str().to_lowercase(),
                r.args()
            )
        })
        .target(env_logger::Target::Stderr)
        .try_init();
}

/// A request in a few words: its command and what it names (never a secret: requests
/// carry none).
pub fn describe(req: &Request) -> String {
    let v = serde_json::to_value(req).unwrap_or_default();
    let mut words = vec![v["cmd"].as_str().unwrap_or("request").to_string()];
    for key in ["name", "network", "port", "mode"] {
        if let Some(s) = v.get(key).and_then(|x| x.as_str()) {
            words.push(format!("{key}={s}"));
        }
    }
    for key in ["rate_in", "rate_out"] {
        if let Some(r) = v.get(key).and_then(|x| x.as_u64()) {
            words.push(format!("{key}={}", crate::limit::format_rate(r)));
        }
    }
    words.join(" ")
}

/// Changes are logged at `info`, reads (`stats`, `ls`, `show`, ...) at `debug`: a
/// scraper or a monitoring loop does not fill the log.
pub fn level_of(req: &Request) -> log::Level {
    use Request as R;
    match req {
        R::Hello
        | R::NetworkLs
        | R::NetworkInspect { .. }
        | R::PortLs
        | R::ContainerLs
        | R::FdbShow { .. }
        | R::ConntrackLs
        | R::Stats
        | R::UplinkShow
        | R::Sandbox { .. } => log::Level::Debug,
        R::Limit { limits, clear, .. } if limits.is_none() && limits.burst.is_none() && !clear => {
            log::Level::Debug
        }
        _ => log::Level::Info,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_described_in_a_few_words_at_its_level() {
        let r = Request::Limit {
            port: "web".into(),
            limits: crate::limit::PortLimits {
                rate_out: Some(100_000_000),
                ..Default::default()
            },
            clear: false,
        };
        assert_eq!(describe(&r), "limit port=web rate_out=100mbit");
        assert_eq!(level_of(&r), log::Level::Info);
        assert_eq!(level_of(&Request::Stats), log::Level::Debug);
        assert_eq!(describe(&Request::Stats), "stats");
    }
}
