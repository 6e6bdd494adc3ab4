//! `vswitch-netavark`: the netavark plugin (see `control::netavark`).

fn main() {
    std::process::exit(control::netavark::main());
}
