//! Human output of `ctl` commands (`--json` prints the data as is).

use serde_json::Value;

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(c.len());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<width$}", c, width = w.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("   ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

pub fn network_ls(v: &Value) -> String {
    let rows = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    vec![
                        s(&n["Id"]).chars().take(12).collect(),
                        s(&n["Name"]),
                        s(&n["Driver"]),
                        s(&n["Scope"]),
                        s(&n["Subnet"]),
                        s(&n["Gateway"]),
                        s(&n["VLAN"]),
                        s(&n["Containers"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        &[
            "NETWORK ID",
            "NAME",
            "DRIVER",
            "SCOPE",
            "SUBNET",
            "GATEWAY",
            "VLAN",
            "CONTAINERS",
        ],
        rows,
    )
}

pub fn endpoint(v: &Value) -> String {
    format!(
        "{} {} {}/{} {} via {}",
        s(&v["port"]),
        s(&v["network"]),
        s(&v["ip"]),
        s(&v["prefix"]),
        s(&v["mac"]),
        s(&v["gateway"])
    )
}

pub fn port_ls(v: &Value) -> String {
    let rows = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    let mut published: Vec<String> = p["published"]
                        .as_array()
                        .map(|l| {
                            l.iter()
                                .map(|x| {
                                    format!(
                                        "{}:{}->{}/{}",
                                        s(&x["host_ip"]),
                                        s(&x["host_port"]),
                                        s(&x["container_port"]),
                                        s(&x["proto"])
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    if let Some(why) = p["not_restored"].as_str() {
                        published.push(format!("NOT RESTORED: {why}"));
                    }
                    vec![
                        s(&p["name"]),
                        s(&p["network"]),
                        s(&p["kind"]),
                        s(&p["ifname"]),
                        s(&p["ip"]),
                        s(&p["mac"]),
                        published.join(", "),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        &[
            "PORT",
            "NETWORK",
            "KIND",
            "IFNAME",
            "IP",
            "MAC",
            "PUBLISHED",
        ],
        rows,
    )
}

pub fn fdb(v: &Value) -> String {
    let rows = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    vec![
                        s(&r["mac"]),
                        s(&r["vlan"]),
                        s(&r["network"]),
                        s(&r["port"]),
                        s(&r["age_secs"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["MAC", "VLAN", "NETWORK", "PORT", "AGE"], rows)
}

pub fn stats(v: &Value) -> String {
    let rows = v["ports"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    let drops = p["drops"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, n)| format!("{k}={n}"))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    vec![
                        s(&p["name"]),
                        s(&p["rx_packets"]),
                        s(&p["rx_bytes"]),
                        s(&p["tx_packets"]),
                        s(&p["tx_bytes"]),
                        if drops.is_empty() { "-".into() } else { drops },
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = table(
        &[
            "PORT", "RX PKTS", "RX BYTES", "TX PKTS", "TX BYTES", "DROPS",
        ],
        rows,
    );
    let f = &v["fdb"];
    out.push_str(&format!(
        "\nfdb: {} entries (limit {}), {} moves, {} refused",
        s(&f["entries"]),
        s(&f["limit"]),
        s(&f["moves"]),
        s(&f["learn_refused"])
    ));
    out
}

pub fn conntrack(v: &Value) -> String {
    let rows = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    vec![
                        s(&f["protocol"]),
                        s(&f["inside"]),
                        s(&f["outside"]),
                        s(&f["state"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["PROTO", "INSIDE", "OUTSIDE", "STATE"], rows)
}
