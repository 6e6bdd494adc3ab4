//! `vswitch completions SHELL` and `vswitch man DIR`: shell completions and man pages
//! generated from the same clap definitions the CLI parses with.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::cli::{Cli, CliError};

/// Writes the completion script for `shell` to standard output.
pub fn completions(shell: clap_complete::Shell) -> Result<(), CliError> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "vswitch", &mut out);
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut o = std::io::stdout().lock();
    match o.write_all(bytes).and_then(|()| o.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Usage(format!(
            "cannot write to standard output: {e}"
        ))),
        _ => Ok(()),
    }
}

/// Writes `vswitch.1` and one page per subcommand (`vswitch-ctl-network-create.1`, ...)
/// into `dir`; returns how many.
pub fn man(dir: &Path) -> Result<usize, CliError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::Usage(format!("cannot create {}: {e}", dir.display())))?;
    let cmd = Cli::command();
    let mut n = 0;
    page(dir, cmd, "vswitch", &mut n)?;
    Ok(n)
}

/// Renders `cmd` as `NAME.1` and recurses into its subcommands.
fn page(dir: &Path, cmd: clap::Command, name: &str, n: &mut usize) -> Result<(), CliError> {
    let cmd = cmd.name(name.to_string());
    let path = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut buf)
        .and_then(|()| std::fs::write(&path, &buf))
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))?;
    *n += 1;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let sub_name = format!("{name}-{}", sub.get_name());
        page(dir, sub.clone(), &sub_name, n)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_cover_every_subcommand() {
        let dir = std::env::temp_dir().join(format!("shp-man-{}", std::process::id()));
        let n = man(&dir).unwrap();
        assert!(n > 20, "{n} pages");
        let limit = std::fs::read_to_string(dir.join("vswitch-ctl-limit.1")).unwrap();
        assert!(limit.contains("rate\\-out"), "{limit}");
        assert!(dir.join("vswitch-daemon.1").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
