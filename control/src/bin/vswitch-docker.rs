//! `vswitch-docker`: Docker's network and IPAM driver plugin (see
//! `control::engines::docker`).

fn main() -> std::process::ExitCode {
    control::engines::docker::main()
}
