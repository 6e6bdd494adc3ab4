//! `vswitch ctl capture PORT [-w FILE.pcap] [-c COUNT]`: a port's frames, as pcap into a
//! file, or one line per frame on stdout.

use std::io::{Read, Write};
use std::path::Path;

use crate::api::{Envelope, PROTOCOL_VERSION, Request, Response};
use crate::cli::CliError;
use crate::client::ClientError;
use crate::framing::Conn;

/// One line about a frame: time, MACs, EtherType, length (and the IP addresses and
/// upper-layer protocol, either family).
fn describe(secs: u32, usecs: u32, data: &[u8]) -> String {
    let mac = |b: &[u8]| {
        dataplane::wire::MacAddr::from_slice(b)
            .map(|m| m.to_string())
            .unwrap_or_default()
    };
    let l2 = dataplane::wire::parse_l2(data);
    let mut line = format!("{secs}.{usecs:06} ");
    match l2 {
        Ok(l2) => {
            line.push_str(&format!("{} > {}", mac(&l2.src.0), mac(&l2.dst.0)));
            if let Some((_, vid)) = l2.outer {
                line.push_str(&format!(" vlan {vid}"));
            }
            line.push_str(&format!(" ethertype 0x{:04x}", l2.ethertype));
            let l3 = data.get(l2.l3_offset..).unwrap_or_default();
            line.push_str(&describe_ip(l2.ethertype, l3));
        }
        Err(_) => line.push_str("malformed"),
    }
    line.push_str(&format!(" length {}", data.len()));
    line
}

/// ` SRC > DST proto N` of an IPv4 or IPv6 packet (for IPv6 the protocol past its
/// extension headers: `proto 58` for ICMPv6 behind a hop-by-hop header), else nothing.
fn describe_ip(ethertype: u16, l3: &[u8]) -> String {
    use dataplane::wire::{EtherType, Ipv4Packet, Ipv6Packet, ipv6::Upper};
    match ethertype {
        EtherType::IPV4 => match Ipv4Packet::new_checked(l3) {
            Ok(ip) => format!(" {} > {} proto {}", ip.src(), ip.dst(), ip.protocol()),
            Err(_) => String::new(),
        },
        EtherType::IPV6 => match Ipv6Packet::new_checked(l3) {
            Ok(ip) => {
                let proto = match ip.upper() {
                    Ok(Upper::At { proto, .. }) => proto.to_string(),
                    Ok(Upper::LaterFragment) => "fragment".into(),
                    Ok(Upper::Opaque) | Err(_) => ip.next_header().to_string(),
                };
                format!(" {} > {} proto {proto}", ip.src(), ip.dst())
            }
            Err(_) => String::new(),
        },
        _ => String::new(),
    }
}

/// Sends the `capture` request and reads the daemon's OK; the pcap stream follows on
/// the returned connection.
fn start(socket: &Path, port: &str, count: Option<u64>) -> Result<Conn, CliError> {
    let stream = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| ClientError::Connect(socket.to_path_buf(), e))?;
    let mut conn = Conn::new(stream);
    let req = serde_json::to_vec(&Envelope {
        v: PROTOCOL_VERSION,
        req: Request::Capture {
            port: port.to_string(),
            count,
        },
    })
    .map_err(|e| ClientError::Garbled(e.to_string()))?;
    conn.send(&req, &[])
        .map_err(|e| ClientError::Lost(socket.to_path_buf(), e))?;
    let (line, _) = conn
        .recv()
        .map_err(|e| ClientError::Lost(socket.to_path_buf(), e))?;
    let r: Response =
        serde_json::from_slice(&line).map_err(|e| ClientError::Garbled(e.to_string()))?;
    if !r.ok {
        return Err(ClientError::Refused(r.error.unwrap_or_default()).into());
    }
    Ok(conn)
}

/// `ctl capture`: the port's frames to `file` as pcap, or one line each to stdout.
pub fn run(
    socket: &Path,
    port: &str,
    file: Option<&Path>,
    count: Option<u64>,
) -> Result<(), CliError> {
    let mut conn = start(socket, port, count)?;
    let mut out: Box<dyn Write> = match file {
        Some(f) => Box::new(
            std::fs::File::create(f)
                .map_err(|e| CliError::Usage(format!("cannot create {}: {e}", f.display())))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let rest = conn.take_buffered();
    let mut stream = std::io::Cursor::new(rest).chain(conn.stream);
    let mut header = [0u8; 24];
    if stream.read_exact(&mut header).is_err() {
        return Ok(());
    }
    if file.is_some() {
        out.write_all(&header)
            .map_err(|e| CliError::Usage(format!("cannot write: {e}")))?;
    }
    loop {
        let mut rec = [0u8; 16];
        if stream.read_exact(&mut rec).is_err() {
            break;
        }
        let word = |i: usize| u32::from_le_bytes([rec[i], rec[i + 1], rec[i + 2], rec[i + 3]]);
        let len = word(8) as usize;
        if len > dataplane::capture::SNAPLEN {
            break;
        }
        let mut data = vec![0u8; len];
        if stream.read_exact(&mut data).is_err() {
            break;
        }
        let w = if file.is_some() {
            out.write_all(&rec).and_then(|_| out.write_all(&data))
        } else {
            writeln!(out, "{}", describe(word(0), word(4), &data))
        };
        if w.is_err() {
            break;
        }
    }
    let _ = out.flush();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet frame of `ethertype` carrying `l3`.
    fn frame(ethertype: u16, l3: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(l3);
        f
    }

    #[test]
    fn ipv4_and_ipv6_frames_show_their_addresses_and_protocol() {
        let v4 = [
            0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
        ];
        let line = describe(1, 5, &frame(0x0800, &v4));
        assert_eq!(
            line,
            "1.000005 02:00:00:00:00:01 > 02:00:00:00:00:02 ethertype 0x0800 10.0.0.2 > 10.0.0.1 proto 6 length 34"
        );
        // IPv6: a hop-by-hop header (8 bytes) in front of ICMPv6 (an echo request).
        let mut v6 = vec![0x60, 0, 0, 0, 0, 16, 0, 64];
        v6.extend_from_slice(&"fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&"fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[58, 0, 1, 4, 0, 0, 0, 0, 128, 0, 0, 0, 0, 1, 0, 1]);
        let line = describe(2, 0, &frame(0x86dd, &v6));
        assert!(
            line.ends_with("ethertype 0x86dd fd00::2 > fd00::1 proto 58 length 70"),
            "{line}"
        );
        // Short or other frames: the Ethernet part alone.
        let line = describe(3, 0, &frame(0x86dd, &v6[..20]));
        assert!(line.ends_with("ethertype 0x86dd length 34"), "{line}");
        let line = describe(3, 0, &frame(0x0806, &[0; 28]));
        assert!(line.ends_with("ethertype 0x0806 length 42"), "{line}");
    }
}
