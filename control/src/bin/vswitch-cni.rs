//! `vswitch-cni`: the CNI plugin (see `control::engines::cni`).

fn main() {
    std::process::exit(control::engines::cni::main());
}
