//! `vswitch ctl capture PORT [-w FILE.pcap] [-c COUNT]`: a port's frames, as pcap into a
//! file, or one line per frame on stdout.

use std::io::{Read, Write};
use std::path::Path;

use crate::api::{Envelope, PROTOCOL_VERSION, Request, Response};
use crate::cli::CliError;
use crate::client::ClientError;
use crate::framing::Conn;

/// One line about a frame: time, MACs, EtherType, length (and the IPv4 addresses).
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
            if l2.ethertype == dataplane::wire::EtherType::IPV4
                && let Some(p) = data.get(l2.l3_offset..)
                && let Ok(ip) = dataplane::wire::Ipv4Packet::new_checked(p)
            {
                line.push_str(&format!(
                    " {} > {} proto {}",
                    ip.src(),
                    ip.dst(),
                    ip.protocol()
                ));
            }
        }
        Err(_) => line.push_str("malformed"),
    }
    line.push_str(&format!(" length {}", data.len()));
    line
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
