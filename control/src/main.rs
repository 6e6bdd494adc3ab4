use std::process::ExitCode;

fn main() -> ExitCode {
    control::cli::main()
}
