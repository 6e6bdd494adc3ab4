//! The control protocol: arbitrary bytes arrive on a control connection (a real Unix
//! socket pair), are cut into lines by `Conn::recv`, decoded as requests, and the
//! requests' arguments go through the validation the daemon applies (names, subnets,
//! MACs, trunks, published ports, uplink addresses) against an in-memory state. Lines
//! that decode as responses go through every renderer `ctl` uses.
#![no_main]

use control::api::{AttachReq, Envelope, Request, Response};
use control::daemon::Daemon;
use control::framing::Conn;
use control::net::Ipv4Cidr;
use control::state::{EndpointSpec, Sandbox, State};
use control::{publish, render};
use libfuzzer_sys::fuzz_target;
use std::io::Write;
use std::os::unix::net::UnixStream;

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
    if let Ok(c) = state.check_attach(&a.name, &sandbox, &spec) {
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
        Request::Attach(a) => attach(state, &a),
        Request::Connect {
            network,
            name,
            ip,
            ip6,
            aliases,
        } => {
            let spec = EndpointSpec {
                network,
                ip,
                ip6,
                aliases,
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
});
