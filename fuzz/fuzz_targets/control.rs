//! The control protocol: arbitrary bytes arrive on a control connection (a real Unix
//! socket pair), are cut into lines by `Conn::recv`, decoded as requests, and the
//! requests' arguments go through the validation the daemon applies (names, subnets,
//! MACs, trunks, published ports, uplink addresses) against an in-memory state. Lines
//! that decode as responses go through every renderer `ctl` uses.
//!
//! The same bytes then go to a running daemon (ports in memory, its state in a
//! directory of the target's own) through the connection loop its accept loop runs:
//! every whole line gets exactly one reply, each a well-formed response (`ok` with
//! data, or not ok with an error message), in order. Requests that reach outside the
//! process (publishing binds host ports, a packet uplink, a capture streams until the
//! client leaves) are sent as `hello` instead, keeping the line count.
#![no_main]

use control::api::{AttachReq, Envelope, Request, Response};
use control::backend::MemoryBackend;
use control::daemon::{Daemon, DaemonConfig, serve_stream};
use control::framing::Conn;
use control::net::Ipv4Cidr;
use control::state::{EndpointSpec, Sandbox, State};
use control::{publish, render};
use libfuzzer_sys::fuzz_target;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, OnceLock};

fn attach(state: &mut State, a: &AttachReq) {
    for p in &a.publish {
        let _ = publish::parse(p);
    }
    // The daemon's own conversion of the request's arguments.
    let Ok(spec) = Daemon::endpoint_spec(a) else {
        return;
    };
    let sandbox = match (&a.tap, &a.netns, a.pid) {
        (Some(t), _, _) => Sandbox::Tap { ifname: t.clone() },
        (None, Some(p), _) => Sandbox::Netns { path: p.clone() },
        (None, None, Some(pid)) => Sandbox::Pid {
            pid,
            identity: None,
        },
        (None, None, None) => Sandbox::Run {
            pid: a.run_pid.unwrap_or(1),
        },
    };
    let Ok(dns) = a.dns_opts.parse() else {
        return;
    };
    if let Ok(mut c) = state.check_attach(&a.name, &sandbox, &spec) {
        c.dns = dns;
        state.attach(c);
    }
}

fn apply(state: &mut State, req: Request) {
    match req {
        Request::NetworkCreate(spec) => {
            let _ = state.create_network(&spec);
        }
        Request::NetworkRm { name, force } => {
            let _ = state.remove_network(&name, force);
        }
        Request::NetworkUpdate(u) => {
            let _ = state.update_network(&u);
        }
        Request::Attach(a) => attach(state, &a),
        Request::Connect {
            network,
            name,
            ip,
            ip6,
            aliases,
            limits,
            ..
        } => {
            let spec = EndpointSpec {
                network,
                ip,
                ip6,
                aliases,
                limits,
                port_security: true,
                ..Default::default()
            };
            if let Ok(ep) = state.check_connect(&name, &spec) {
                state.connect(&name, ep);
            }
        }
        Request::Disconnect { network, name } => {
            let _ = state.disconnect(&name, &network);
        }
        Request::Detach { name, .. } => {
            let _ = state.detach(&name);
        }
        Request::Publish { specs, .. } | Request::Unpublish { specs, .. } => {
            for s in &specs {
                let _ = publish::parse(s);
            }
        }
        Request::UplinkSet(u) => {
            if let Some(a) = &u.address {
                let _ = a.parse::<Ipv4Cidr>();
            }
        }
        _ => {}
    }
}

fn render_all(r: &Response) {
    let v = r.data.clone().unwrap_or_default();
    for f in render::Render::ALL {
        let _ = f.text(&v);
    }
}

/// The daemon every input talks to (started once per fuzzing process).
fn daemon() -> Option<&'static Mutex<Daemon>> {
    static D: OnceLock<Option<Mutex<Daemon>>> = OnceLock::new();
    D.get_or_init(|| {
        let base = ["/dev/shm", "/tmp"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.is_dir())?;
        // Earlier fuzzing processes end without cleaning up: their directories go.
        for e in std::fs::read_dir(&base).ok()?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("vswitch-fuzz-control-")
                && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let dir = base.join(format!("vswitch-fuzz-control-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).ok()?;
        let cfg = DaemonConfig {
            offload: false,
            ..DaemonConfig::new(dir.join("ctl.sock"), dir.clone())
        };
        Daemon::start(cfg, Box::new(MemoryBackend::default()))
            .ok()
            .map(Mutex::new)
    })
    .as_ref()
}

/// A line the daemon may be handed: what would reach outside the process is a
/// `hello` instead.
fn tame(line: &[u8]) -> Vec<u8> {
    let outside = serde_json::from_slice::<Envelope>(line).is_ok_and(|e| match e.req {
        Request::Publish { .. } | Request::Unpublish { .. } => true,
        Request::UplinkSet(_) | Request::Capture { .. } => true,
        Request::Attach(a) => !a.publish.is_empty() || a.publish_all || a.fd,
        _ => false,
    });
    if outside {
        br#"{"v": 1, "cmd": "hello"}"#.to_vec()
    } else {
        line.to_vec()
    }
}

/// Every whole line of `data` to the daemon's connection loop: one well-formed reply
/// each.
fn daemon_replies(data: &[u8]) {
    let Some(d) = daemon() else {
        return;
    };
    let mut lines: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(tame).collect();
    let partial = lines.pop().unwrap_or_default();
    let mut input: Vec<u8> = lines
        .iter()
        .flat_map(|l| l.iter().chain(b"\n"))
        .copied()
        .collect();
    input.extend_from_slice(&partial);
    let Ok((mut tx, rx)) = UnixStream::pair() else {
        return;
    };
    let server = std::thread::spawn(move || serve_stream(d, rx, 1));
    // Replies are read while the input is written, so neither side fills its buffer.
    let reader = tx.try_clone().ok();
    let replies = std::thread::spawn(move || {
        reader.map_or_else(Vec::new, |r| {
            BufReader::new(r)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        })
    });
    let _ = tx.write_all(&input);
    let _ = tx.shutdown(std::net::Shutdown::Write);
    let _ = server.join();
    drop(tx);
    let replies = replies.join().unwrap_or_default();
    assert_eq!(
        replies.len(),
        lines.len(),
        "{} whole lines got {} replies: {replies:?}",
        lines.len(),
        replies.len()
    );
    for r in &replies {
        let v: Response = serde_json::from_str(r).unwrap_or_else(|e| panic!("{e}: {r}"));
        match (v.ok, &v.error, &v.data) {
            (true, None, _) => {}
            (false, Some(e), None) if !e.is_empty() => {}
            _ => panic!("not a well-formed response: {r}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok((mut tx, rx)) = UnixStream::pair() else {
        return;
    };
    let Ok(state) = State::new(None, None) else {
        return;
    };
    let mut state = state;
    // The socket buffer holds the whole input (the fuzzer's inputs are small).
    if data.len() > 64 * 1024 || tx.write_all(data).is_err() {
        return;
    }
    drop(tx);
    let mut conn = Conn::new(rx);
    let mut lines = 0;
    while let Ok((line, _fds)) = conn.recv() {
        lines += 1;
        if let Ok(env) = serde_json::from_slice::<Envelope>(&line) {
            apply(&mut state, env.req);
        } else if let Ok(resp) = serde_json::from_slice::<Response>(&line) {
            render_all(&resp);
        }
        let _ = Response::err(String::from_utf8_lossy(&line));
    }
    assert!(lines <= data.iter().filter(|&&b| b == b'\n').count());
    daemon_replies(data);
});
