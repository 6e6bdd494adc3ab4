//! `vswitch-netavark`: the netavark plugin (see `control::engines::netavark`).

fn main() {
    std::process::exit(control::engines::netavark::main());
}
